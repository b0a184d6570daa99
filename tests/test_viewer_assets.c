/* The viewer page built into legbad: what is found, as what, and what is not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "viewer_assets.h"

static const ViewerAsset *find_nonempty(const char *name, const char *content_type)
{
    const ViewerAsset *asset = viewer_asset_find(name);
    assert_non_null(asset);
    assert_string_equal(asset->name, name);
    assert_string_equal(asset->content_type, content_type);
    assert_non_null(asset->data);
    assert_true(asset->len > 0);
    /* The promised NUL after the bytes, and none before it: the files are text. */
    assert_int_equal(asset->data[asset->len], '\0');
    assert_int_equal(strlen((const char *)asset->data), asset->len);
    return asset;
}

static void test_assets_found(void **state)
{
    find_nonempty("index.html", "text/html; charset=utf-8");
    find_nonempty("viewer.js", "text/javascript; charset=utf-8");
    find_nonempty("viewer.css", "text/css; charset=utf-8");
}

/* Same bytes as the source tree: the build regenerates them, not a stale copy. */
static void test_assets_match_sources(void **state)
{
    static const char *const names[] = {"index.html", "viewer.js", "viewer.css"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/src/viewer/%s", LEGBA_SOURCE_DIR, names[i]);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof(buf), f);
        assert_true(feof(f));
        fclose(f);

        const ViewerAsset *asset = viewer_asset_find(names[i]);
        assert_non_null(asset);
        assert_int_equal(asset->len, n);
        assert_memory_equal(asset->data, buf, n);
    }
}

/*
 * The page may be mounted under any path prefix, so it names its script
 * and style relative to itself; "/viewer.js" would miss behind a proxy.
 */
static void test_index_uses_relative_urls(void **state)
{
    const char *html = (const char *)viewer_asset_find("index.html")->data;
    assert_non_null(strstr(html, "<script type=\"module\" src=\"viewer.js\"></script>"));
    assert_non_null(strstr(html, "href=\"viewer.css\""));
    assert_null(strstr(html, "src=\"/"));
    assert_null(strstr(html, "href=\"/"));
    assert_null(strstr(html, "http:"));
    assert_null(strstr(html, "https:"));
}

/* An event handler attribute: " on", letters, "=". */
static bool has_handler_attribute(const char *html)
{
    for (const char *p = strstr(html, " on"); p; p = strstr(p + 1, " on")) {
        const char *q = p + 3;
        while (isalpha((unsigned char)*q))
            q++;
        if (q > p + 3 && *q == '=')
            return true;
    }
    return false;
}

/* The CSP has no 'unsafe-inline': the page must not need it. */
static void test_index_has_nothing_inline(void **state)
{
    const char *html = (const char *)viewer_asset_find("index.html")->data;
    assert_null(strstr(html, "style="));
    assert_null(strstr(html, "<style"));
    assert_null(strstr(html, "javascript:"));
    assert_false(has_handler_attribute(html));
    const char *script = strstr(html, "<script");
    assert_non_null(script);
    assert_null(strstr(script + 1, "<script"));
    assert_ptr_equal(strstr(html, "></script>"), strchr(script, '>'));
}

/*
 * The clipboard panel is hidden until the instance's status says to_vm or
 * both, so an instance with none never shows it, even before viewer.js runs.
 */
static void test_clipboard_panel_hidden_by_default(void **state)
{
    const char *html = (const char *)viewer_asset_find("index.html")->data;
    assert_non_null(strstr(html, "<details id=\"clipboard\" hidden>"));
    assert_non_null(strstr(html, "<button id=\"clipboard-copy\" type=\"button\" hidden>"));
    const char *js = (const char *)viewer_asset_find("viewer.js")->data;
    assert_non_null(strstr(js, "clipboard.panel.hidden = clipboard.mode === 'none';"));
    assert_non_null(strstr(js, "clipboard.copy.hidden = clipboard.mode !== 'both';"));
    /* Nothing writes the user's clipboard but the Copy button's click. */
    const char *write = strstr(js, "navigator.clipboard.writeText");
    assert_non_null(write);
    assert_null(strstr(write + strlen("navigator.clipboard.writeText"), "writeText"));
    assert_true(strstr(js, "clipboard.copy.addEventListener('click'") < write);
}

static void test_unknown_names(void **state)
{
    assert_null(viewer_asset_find(""));
    assert_null(viewer_asset_find("../index.html"));
    assert_null(viewer_asset_find("index.htm"));
    assert_null(viewer_asset_find("index.html/"));
    assert_null(viewer_asset_find("Index.html"));
    assert_null(viewer_asset_find("./viewer.js"));
    assert_null(viewer_asset_find(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assets_found),
        cmocka_unit_test(test_assets_match_sources),
        cmocka_unit_test(test_index_uses_relative_urls),
        cmocka_unit_test(test_index_has_nothing_inline),
        cmocka_unit_test(test_clipboard_panel_hidden_by_default),
        cmocka_unit_test(test_unknown_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
