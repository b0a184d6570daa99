/*
 * libFuzzer target for the domain template filler (template.c).
 *
 * Input: NUL-separated parts. The first is the template; each other one is
 * a variable, "key=value", or "key" alone for an unset (NULL) value. Up to
 * 8 variables; later parts are ignored.
 *
 * template.h promises that values are always XML-escaped and that the
 * template's own markup is the only markup. The output is compared with a
 * small renderer written here from template.h's description: both must
 * agree on success, and then on every byte. On top of that, the output can
 * hold no more '<', '>', '"' or '\'' than the template (a value brings
 * none), and xml_escape() must agree with the escaping done here. The
 * template is also loaded as every size from a scratch directory (in
 * /dev/shm, else /tmp; removed at exit, so left behind only by a crash):
 * accepted only when its syntax is.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "template.h"

#define FUZZ_NAME "fuzz_template"
#include "fuzz_check.h"

#define VARS_MAX 8
#define KEY_MAX 64

/* ---- a reference renderer ---- */

typedef struct {
    char *data;
    size_t len, cap;
} Str;

static void str_add(Str *s, const char *text, size_t len)
{
    if (s->len + len + 1 > s->cap) {
        s->cap = (s->len + len + 1) * 2;
        s->data = realloc(s->data, s->cap);
        CHECK(s->data);
    }
    memcpy(s->data + s->len, text, len);
    s->len += len;
    s->data[s->len] = '\0';
}

/*
 * Whether XML 1.0 can carry text as template.h describes it: UTF-8, no
 * surrogates, nothing past U+10FFFF, no U+FFFE/U+FFFF, and of the control
 * characters (C0, DEL, C1) only tab and newline.
 */
static bool xml_text_ok(const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    while (*s) {
        uint32_t cp;
        size_t n;
        if (*s < 0x80)
            cp = *s, n = 1;
        else if (*s >= 0xc2 && *s <= 0xdf)
            cp = *s & 0x1fu, n = 2;
        else if (*s >= 0xe0 && *s <= 0xef)
            cp = *s & 0x0fu, n = 3;
        else if (*s >= 0xf0 && *s <= 0xf4)
            cp = *s & 0x07u, n = 4;
        else
            return false;
        for (size_t i = 1; i < n; i++) {
            if (s[i] < 0x80 || s[i] > 0xbf)
                return false;
            cp = cp << 6 | (s[i] & 0x3fu);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff)
            return false;
        if (cp >= 0xd800 && cp <= 0xdfff)
            return false;
        if (cp == 0xfffe || cp == 0xffff)
            return false;
        if ((cp < 0x20 && cp != '\t' && cp != '\n') || (cp >= 0x7f && cp <= 0x9f))
            return false;
        s += n;
    }
    return true;
}

static void escape_into(Str *out, const char *text)
{
    for (const char *p = text; *p; p++) {
        switch (*p) {
        case '&':
            str_add(out, "&amp;", 5);
            break;
        case '<':
            str_add(out, "&lt;", 4);
            break;
        case '>':
            str_add(out, "&gt;", 4);
            break;
        case '"':
            str_add(out, "&quot;", 6);
            break;
        case '\'':
            str_add(out, "&apos;", 6);
            break;
        default:
            str_add(out, p, 1);
        }
    }
}

static const TemplateVar *lookup(const TemplateVar *vars, size_t n, const char *key, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(vars[i].key) == len && memcmp(vars[i].key, key, len) == 0)
            return &vars[i];
    return NULL;
}

/*
 * True with *out filled, or false for any error template.h names. With
 * check_only (vars NULL), only the syntax: what domain_templates_load() vets.
 */
static bool reference_render(const char *tmpl, const TemplateVar *vars, size_t n_vars,
                             bool check_only, Str *out)
{
    const char *p = tmpl;
    const char *section_key = NULL; /* into tmpl */
    size_t section_len = 0;
    bool keep = true;

    str_add(out, "", 0);
    for (;;) {
        const char *open = strstr(p, "{{");
        if (keep)
            str_add(out, p, open ? (size_t)(open - p) : strlen(p));
        if (!open)
            break;
        const char *key = open + 2;
        char sigil = 0;
        if (*key == '#' || *key == '^' || *key == '/')
            sigil = *key++;
        size_t len = 0;
        while ((key[len] >= 'a' && key[len] <= 'z') || (key[len] >= '0' && key[len] <= '9') ||
               key[len] == '_')
            len++;
        if (len == 0 || len > KEY_MAX || key[len] != '}' || key[len + 1] != '}')
            return false;
        p = key + len + 2;

        const TemplateVar *var = NULL;
        if (sigil != '/' && !check_only) {
            var = lookup(vars, n_vars, key, len);
            if (!var)
                return false; /* unknown key, even in a dropped section */
        }
        bool set = var && var->value && var->value[0];
        if (sigil == '#' || sigil == '^') {
            if (section_key)
                return false; /* sections do not nest */
            section_key = key;
            section_len = len;
            keep = sigil == '#' ? set : !set;
        } else if (sigil == '/') {
            if (!section_key || section_len != len || memcmp(section_key, key, len) != 0)
                return false;
            section_key = NULL;
            keep = true;
        } else if (keep && !check_only) {
            if (!var->value || !xml_text_ok(var->value))
                return false;
            escape_into(out, var->value);
        }
    }
    return !section_key && (check_only || out->len <= TEMPLATE_MAX);
}

/* ---- loading templates from a directory ---- */

static char domains_dir[64];

static void domains_dir_remove(void)
{
    char path[128];
    for (size_t i = 0; template_size_names[i]; i++) {
        snprintf(path, sizeof(path), "%s/%s.xml", domains_dir, template_size_names[i]);
        unlink(path);
    }
    rmdir(domains_dir);
}

/* Every size gets the same text; loading it must agree with the syntax check here. */
static void check_load(const char *tmpl)
{
    if (!domains_dir[0]) {
        const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(domains_dir, sizeof(domains_dir), "%s/fuzz_template.XXXXXX", tmp);
        CHECK(mkdtemp(domains_dir));
        atexit(domains_dir_remove);
        /* One file to write per input: the other sizes link to the first. */
        for (size_t i = 1; template_size_names[i]; i++) {
            char path[128];
            snprintf(path, sizeof(path), "%s/%s.xml", domains_dir, template_size_names[i]);
            CHECK(symlink("small.xml", path) == 0);
        }
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/small.xml", domains_dir);
    size_t len = strlen(tmpl);
    FILE *f = fopen(path, "w");
    CHECK(f);
    CHECK(fwrite(tmpl, 1, len, f) == len);
    CHECK(fclose(f) == 0);

    DomainTemplates *templates = NULL;
    char *error = NULL;
    int r = domain_templates_load(domains_dir, &templates, &error);
    Str ignored = {0};
    bool syntax_ok = reference_render(tmpl, NULL, 0, true, &ignored);
    free(ignored.data);
    if (r < 0) {
        CHECK(r == -EINVAL || r == -ENOMEM);
        CHECK(!templates);
        CHECK(r == -ENOMEM || (error && strstr(error, "small.xml")));
        free(error);
        return;
    }
    CHECK(syntax_ok && !error);
    for (size_t i = 0; template_size_names[i]; i++) {
        const char *text = domain_templates_get(templates, template_size_names[i]);
        CHECK(text && strcmp(text, tmpl) == 0);
        SizeInfo info;
        CHECK(domain_templates_describe(templates, template_size_names[i], &info) == 0);
        CHECK(info.vcpus >= 1 && info.vcpus <= 1024);
        CHECK(info.memory_mib >= 1 && info.memory_mib <= 16 * 1024 * 1024);
        CHECK(info.screen_width >= 1 && info.screen_width <= 16384);
        CHECK(info.screen_height >= 1 && info.screen_height <= 16384);
    }
    CHECK(!domain_templates_get(templates, "huge"));
    SizeInfo info;
    CHECK(domain_templates_describe(templates, "huge", &info) == -ENOENT);
    domain_templates_free(templates);
}

static size_t count(const char *s, char c)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

static void check_escape(const char *value)
{
    char *escaped = NULL;
    int r = xml_escape(value, &escaped);
    CHECK((r == 0) == xml_text_ok(value));
    if (r == 0) {
        Str want = {0};
        str_add(&want, "", 0);
        escape_into(&want, value);
        CHECK(strcmp(escaped, want.data) == 0);
        CHECK(!strpbrk(escaped, "<>\"'"));
        free(want.data);
    } else {
        CHECK(r == -EINVAL && escaped == NULL);
    }
    free(escaped);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy with a NUL after every part, the last one included. */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    const char *tmpl = text;
    TemplateVar vars[VARS_MAX];
    size_t n_vars = 0;
    for (char *p = text + strlen(text); p < text + size && n_vars < VARS_MAX;) {
        char *part = p + 1;
        char *eq = strchr(part, '=');
        if (eq)
            *eq = '\0';
        vars[n_vars++] = (TemplateVar){.key = part, .value = eq ? eq + 1 : NULL};
        p = eq ? eq + 1 + strlen(eq + 1) : part + strlen(part);
    }

    char *xml = NULL, *error = NULL;
    int r = template_render(tmpl, n_vars ? vars : NULL, n_vars, &xml, &error);
    Str want = {0};
    bool ok = reference_render(tmpl, vars, n_vars, false, &want);
    if (r == 0) {
        CHECK(xml != NULL && error == NULL);
        CHECK(ok);
        CHECK(strcmp(xml, want.data) == 0);
        CHECK(strlen(xml) <= TEMPLATE_MAX);
        static const char markup[] = "<>\"'";
        for (const char *c = markup; *c; c++)
            CHECK(count(xml, *c) <= count(tmpl, *c));
        free(xml);
    } else {
        CHECK(xml == NULL);
        CHECK(r == -EINVAL || r == -EFBIG || r == -ENOMEM);
        CHECK(!ok);
        CHECK(r == -ENOMEM || (error && error[0] != '\0'));
    }
    free(error);
    free(want.data);

    for (size_t i = 0; i < n_vars; i++)
        if (vars[i].value)
            check_escape(vars[i].value);
    check_load(tmpl);
    free(text);
    return 0;
}
