#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "template.h"
#include "util.h"

#define DOMAINS_DIR LEGBA_SOURCE_DIR "/domains"
#define LEGBA_XMLNS "https://legba.dev/xmlns/instance/1"

/* Renders and expects success; returns the malloc'd output. */
static char *render_ok(const char *tmpl, const TemplateVar *vars, size_t n_vars)
{
    char *out = NULL, *err = NULL;
    int r = template_render(tmpl, vars, n_vars, &out, &err);
    if (r != 0)
        fail_msg("render failed (%d): %s", r, err ? err : "(no message)");
    assert_null(err);
    assert_non_null(out);
    return out;
}

/* Renders and expects `code`, a message containing every given fragment, and no output. */
static void render_bad(const char *tmpl, const TemplateVar *vars, size_t n_vars, int code,
                       const char *fragment1, const char *fragment2)
{
    char *out = NULL, *err = NULL;
    assert_int_equal(template_render(tmpl, vars, n_vars, &out, &err), code);
    assert_null(out);
    assert_non_null(err);
    if (!strstr(err, fragment1) || (fragment2 && !strstr(err, fragment2)))
        fail_msg("message lacks '%s'%s%s: %s", fragment1, fragment2 ? " or " : "",
                 fragment2 ? fragment2 : "", err);
    free(err);
}

static void test_substitution(void **state)
{
    const TemplateVar vars[] = {{"name", "legba-1"}, {"n2", "two"}, {"empty", ""}};
    char *out = render_ok("<name>{{name}}</name>{{n2}}{{empty}}|{{name}}", vars, 3);
    assert_string_equal(out, "<name>legba-1</name>two|legba-1");
    free(out);

    /* text without tags, single braces and a lone "}}" pass through unchanged */
    out = render_ok("a { b } c }} d", vars, 3);
    assert_string_equal(out, "a { b } c }} d");
    free(out);

    out = render_ok("", NULL, 0);
    assert_string_equal(out, "");
    free(out);
}

static void test_xml_escape_each_char(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"&", "&amp;"},
        {"<", "&lt;"},
        {">", "&gt;"},
        {"\"", "&quot;"},
        {"'", "&apos;"},
        {"a&b<c>d\"e'f", "a&amp;b&lt;c&gt;d&quot;e&apos;f"},
        {"plain text", "plain text"},
        {"", ""},
        {"tab\tand\nnewline", "tab\tand\nnewline"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbd", /* é € 😀 U+FFFD */
         "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbd"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char *out = NULL;
        assert_int_equal(xml_escape(cases[i].in, &out), 0);
        assert_string_equal(out, cases[i].out);
        free(out);
    }
}

static void test_xml_escape_rejects(void **state)
{
    static const char *const bad[] = {
        "\xff",             /* never valid */
        "a\x80",            /* lone continuation byte */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong '/', 3 bytes */
        "\xe2\x82",         /* truncated */
        "\xed\xa0\x80",     /* UTF-16 surrogate */
        "\xf4\x90\x80\x80", /* beyond U+10FFFF */
        "\xef\xbf\xbe",     /* U+FFFE */
        "\xef\xbf\xbf",     /* U+FFFF */
        "a\x01",            /* C0 control */
        "line\r",           /* carriage return */
        "\x1b[31m",         /* escape */
        "\x7f",             /* DEL */
        "\xc2\x85",         /* C1 control NEL */
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        char *out = (char *)"untouched";
        if (xml_escape(bad[i], &out) != -EINVAL)
            fail_msg("case %zu accepted", i);
        assert_string_equal(out, "untouched");
    }
}

/*
 * Each special character in element content and in both attribute quote
 * styles, and the classic break-outs: none may produce markup.
 */
static void test_escape_in_context(void **state)
{
    static const char tmpl[] = "<a x='{{v}}' y=\"{{v}}\">{{v}}</a>";
    static const struct {
        const char *value, *escaped;
    } cases[] = {
        {"&", "&amp;"},
        {"<", "&lt;"},
        {">", "&gt;"},
        {"\"", "&quot;"},
        {"'", "&apos;"},
        {"'/><evil/>", "&apos;/&gt;&lt;evil/&gt;"},
        {"\"/><evil/>", "&quot;/&gt;&lt;evil/&gt;"},
        {"</a><evil/><a>", "&lt;/a&gt;&lt;evil/&gt;&lt;a&gt;"},
        {"&lt;evil/&gt;", "&amp;lt;evil/&amp;gt;"}, /* entities are not passed through */
        {"]]><evil/>", "]]&gt;&lt;evil/&gt;"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const TemplateVar vars[] = {{"v", cases[i].value}};
        char *out = render_ok(tmpl, vars, 1);
        char expect[256];
        snprintf(expect, sizeof(expect), "<a x='%s' y=\"%s\">%s</a>", cases[i].escaped,
                 cases[i].escaped, cases[i].escaped);
        assert_string_equal(out, expect);
        assert_null(strstr(out, "<evil"));
        free(out);
    }
}

static void test_render_rejects_bad_value(void **state)
{
    static const char *const bad[] = {"a\x01", "\xff", "x\xc0\xaf", "\xc2\x85", "\x7f"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        const TemplateVar vars[] = {{"name", "ok"}, {"image", bad[i]}};
        render_bad("<name>{{name}}</name>\n<image>{{image}}</image>", vars, 2, -EINVAL, "'image'",
                   "line 2");
    }
    /* a bad value in a dropped section is never written, so it does no harm */
    const TemplateVar vars[] = {{"flag", ""}, {"image", "\x01"}};
    char *out = render_ok("{{#flag}}{{image}}{{/flag}}ok", vars, 2);
    assert_string_equal(out, "ok");
    free(out);
}

static void test_sections(void **state)
{
    static const char tmpl[] = "A{{#f}}[{{v}}]{{/f}}B{{^f}}(no f){{/f}}C";
    const struct {
        const char *f, *expect;
    } cases[] = {
        {"1", "A[x]BC"},
        {"yes", "A[x]BC"},
        {"", "AB(no f)C"},
        {NULL, "AB(no f)C"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const TemplateVar vars[] = {{"f", cases[i].f}, {"v", "x"}};
        char *out = render_ok(tmpl, vars, 2);
        assert_string_equal(out, cases[i].expect);
        free(out);
    }

    /* sections may follow one another, reuse a key, and span lines */
    const TemplateVar vars[] = {{"a", "1"}, {"b", NULL}};
    char *out =
        render_ok("{{#a}}a1\n{{/a}}{{#b}}b1\n{{/b}}{{^b}}nb\n{{/b}}{{#a}}a2{{/a}}", vars, 2);
    assert_string_equal(out, "a1\nnb\na2");
    free(out);
}

static void test_unknown_key(void **state)
{
    const TemplateVar vars[] = {{"name", "x"}, {"flag", "1"}};
    render_bad("<name>{{name}}</name>\n  <uuid>{{uuid}}</uuid>", vars, 2, -EINVAL,
               "unknown key 'uuid'", "line 2, column 9");
    render_bad("{{#flg}}x{{/flg}}", vars, 2, -EINVAL, "unknown key 'flg'", "byte 0");
    render_bad("{{^flg}}x{{/flg}}", vars, 2, -EINVAL, "unknown key 'flg'", NULL);
    /* a typo inside a dropped section is still caught */
    const TemplateVar unset[] = {{"name", "x"}, {"flag", NULL}};
    render_bad("{{#flag}}{{nmae}}{{/flag}}", unset, 2, -EINVAL, "unknown key 'nmae'", NULL);
    /* no variables at all */
    render_bad("{{name}}", NULL, 0, -EINVAL, "unknown key 'name'", NULL);
}

static void test_unset_value(void **state)
{
    const TemplateVar vars[] = {{"cmdline", NULL}};
    render_bad("<cmdline>{{cmdline}}</cmdline>", vars, 1, -EINVAL, "'{{cmdline}}' has no value",
               "byte 9");
}

static void test_unterminated_and_malformed(void **state)
{
    const TemplateVar vars[] = {{"name", "x"}};
    render_bad("abc {{name", vars, 1, -EINVAL, "unterminated", "byte 4");
    render_bad("abc {{name}", vars, 1, -EINVAL, "unterminated", "byte 4");
    render_bad("{{name}}\n{{", vars, 1, -EINVAL, "unterminated", "line 2, column 1");
    render_bad("{{#name}}x", vars, 1, -EINVAL, "never closed", "'{{#name}}'");

    static const char *const malformed[] = {
        "{{ name }}", "{{Name}}",  "{{}}",       "{{#}}",      "{{na-me}}",
        "{{{name}}}", "{{&name}}", "{{#name }}", "{{name}x}}", "{{!comment}}",
    };
    for (size_t i = 0; i < ARRAY_SIZE(malformed); i++)
        render_bad(malformed[i], vars, 1, -EINVAL, "malformed tag", "[a-z0-9_]");

    /* an overlong key is refused, not truncated */
    char tmpl[128] = "{{";
    memset(tmpl + 2, 'k', 65);
    strcpy(tmpl + 67, "}}");
    render_bad(tmpl, vars, 1, -EINVAL, "malformed tag", NULL);
}

static void test_unbalanced_and_nested(void **state)
{
    const TemplateVar vars[] = {{"a", "1"}, {"b", "1"}};
    render_bad("x{{/a}}", vars, 2, -EINVAL, "closes no open section", "byte 1");
    render_bad("{{#a}}x{{/b}}", vars, 2, -EINVAL, "does not close '{{#a}}'", "line 1");
    render_bad("{{#a}}\nx\n", vars, 2, -EINVAL, "never closed", "line 1");
    render_bad("{{#a}}x{{/a}}{{/a}}", vars, 2, -EINVAL, "closes no open section", NULL);
    render_bad("{{#a}}\n{{#b}}x{{/b}}{{/a}}", vars, 2, -EINVAL, "do not nest", "line 2");
    render_bad("{{#a}}{{^a}}x{{/a}}{{/a}}", vars, 2, -EINVAL, "do not nest", NULL);
    render_bad("{{^a}}{{#b}}x{{/b}}{{/a}}", vars, 2, -EINVAL, "do not nest", NULL);
}

static void test_size_limits(void **state)
{
    const TemplateVar vars[] = {{"v", "x"}};

    char *big = malloc(TEMPLATE_MAX + 2);
    assert_non_null(big);
    memset(big, 'a', TEMPLATE_MAX + 1);
    big[TEMPLATE_MAX + 1] = '\0';
    render_bad(big, vars, 1, -EFBIG, "larger than", NULL);

    /* exactly TEMPLATE_MAX renders */
    big[TEMPLATE_MAX] = '\0';
    char *out = render_ok(big, vars, 1);
    assert_int_equal(strlen(out), TEMPLATE_MAX);
    free(out);
    free(big);

    /* a small template whose escaped output would pass the bound */
    char *value = malloc(TEMPLATE_MAX / 4);
    assert_non_null(value);
    memset(value, '&', TEMPLATE_MAX / 4 - 1); /* 5 bytes each once escaped */
    value[TEMPLATE_MAX / 4 - 1] = '\0';
    const TemplateVar amp[] = {{"v", value}};
    render_bad("{{v}}", amp, 1, -EFBIG, "rendered template is larger than", NULL);
    free(value);
}

static void test_load_real_templates(void **state)
{
    DomainTemplates *t = NULL;
    char *err = NULL;
    int r = domain_templates_load(DOMAINS_DIR, &t, &err);
    if (r != 0)
        fail_msg("load failed (%d): %s", r, err);
    assert_non_null(t);
    for (size_t i = 0; template_size_names[i]; i++) {
        const char *text = domain_templates_get(t, template_size_names[i]);
        assert_non_null(text);
        assert_non_null(strstr(text, "<domain type='{{domain_type}}' "));
    }
    assert_string_equal(template_size_names[0], "small");
    assert_string_equal(template_size_names[1], "medium");
    assert_string_equal(template_size_names[2], "large");
    assert_null(template_size_names[3]);
    assert_null(domain_templates_get(t, "huge"));
    assert_null(domain_templates_get(t, ""));
    assert_null(domain_templates_get(t, "Small"));
    assert_null(domain_templates_get(t, NULL));
    domain_templates_free(t);
    domain_templates_free(NULL);
}

/* A scratch directory with the given files, each holding the given text. */
static char *make_dir(const char *const *names, const char *const *texts, size_t n)
{
    char *dir = strdup("/tmp/legba-test-domains-XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    for (size_t i = 0; i < n; i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(texts[i], f);
        fclose(f);
    }
    return dir;
}

static void remove_dir(char *dir)
{
    for (size_t i = 0; template_size_names[i]; i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/%s.xml", dir, template_size_names[i]);
        unlink(path);
    }
    assert_int_equal(rmdir(dir), 0);
    free(dir);
}

/* The least a size template must declare: vCPUs, memory and screen. */
#define MINI_DOMAIN                                                                                \
    "<domain><vcpu placement='static'>2</vcpu><memory unit='MiB'>64</memory>"                      \
    "<resolution x='640' y='480'/></domain>"

static void load_bad(const char *dir, int code, const char *fragment1, const char *fragment2)
{
    DomainTemplates *t = NULL;
    char *err = NULL;
    assert_int_equal(domain_templates_load(dir, &t, &err), code);
    assert_null(t);
    assert_non_null(err);
    if (!strstr(err, fragment1) || (fragment2 && !strstr(err, fragment2)))
        fail_msg("message lacks '%s': %s", fragment1, err);
    free(err);
}

static void test_load_errors(void **state)
{
    load_bad("/nonexistent/domains", -ENOENT, "/nonexistent/domains/small.xml", NULL);
    load_bad("", -EINVAL, "directory", NULL);

    static const char *const two[] = {"small.xml", "medium.xml"};
    static const char *const ok_texts[] = {MINI_DOMAIN, MINI_DOMAIN, MINI_DOMAIN};
    char *dir = make_dir(two, ok_texts, 2);
    load_bad(dir, -ENOENT, "large.xml", "No such file");
    remove_dir(dir);

    /* a syntax error is caught at load time, naming the file and the line */
    static const char *const three[] = {"small.xml", "medium.xml", "large.xml"};
    static const char *const broken[] = {MINI_DOMAIN, "<domain>\n{{#a}}{{#b}}{{/b}}{{/a}}",
                                         MINI_DOMAIN};
    dir = make_dir(three, broken, 3);
    load_bad(dir, -EINVAL, "medium.xml", "line 2");
    remove_dir(dir);

    static const char *const unterminated[] = {MINI_DOMAIN, MINI_DOMAIN, "{{name"};
    dir = make_dir(three, unterminated, 3);
    load_bad(dir, -EINVAL, "large.xml", "unterminated");
    remove_dir(dir);

    /* a template that does not say what its size offers is refused */
    static const char *const no_screen[] = {MINI_DOMAIN,
                                            "<domain><vcpu placement='static'>2</vcpu>"
                                            "<memory unit='MiB'>64</memory></domain>",
                                            MINI_DOMAIN};
    dir = make_dir(three, no_screen, 3);
    load_bad(dir, -EINVAL, "medium.xml", "resolution");
    remove_dir(dir);

    /* loaded text is handed back as it was on disk, and what it offers is read from it */
    dir = make_dir(three, ok_texts, 3);
    DomainTemplates *t = NULL;
    assert_int_equal(domain_templates_load(dir, &t, NULL), 0);
    assert_string_equal(domain_templates_get(t, "medium"), MINI_DOMAIN);
    SizeInfo info;
    assert_int_equal(domain_templates_describe(t, "medium", &info), 0);
    assert_int_equal(info.vcpus, 2);
    assert_int_equal(info.memory_mib, 64);
    assert_int_equal(info.screen_width, 640);
    assert_int_equal(info.screen_height, 480);
    assert_int_equal(domain_templates_describe(t, "huge", &info), -ENOENT);
    domain_templates_free(t);
    remove_dir(dir);
}

static void test_load_too_big(void **state)
{
    static const char *const three[] = {"small.xml", "medium.xml", "large.xml"};
    char *huge = malloc(TEMPLATE_MAX + 2);
    assert_non_null(huge);
    memset(huge, ' ', TEMPLATE_MAX + 1);
    huge[TEMPLATE_MAX + 1] = '\0';
    const char *texts[] = {MINI_DOMAIN, huge, MINI_DOMAIN};
    char *dir = make_dir(three, texts, 3);
    load_bad(dir, -EFBIG, "medium.xml", "larger than");
    remove_dir(dir);
    free(huge);
}

/* What each size promises, and what libvirt must see. */
static const struct {
    const char *size;
    unsigned vcpus;
    unsigned long mib;
    const char *resolution;
    unsigned long fixed_mib; /* with memory hotplug: the RAM not on the virtio-mem device */
    const char *cpus;
} sizes[] = {{"small", 1, 1024, "<resolution x='1280' y='720'/>", 512, "0"},
             {"medium", 2, 2048, "<resolution x='1600' y='900'/>", 512, "0-1"},
             {"large", 4, 4096, "<resolution x='1920' y='1080'/>", 1024, "0-3"}};

#define INSTANCE_UUID "6f1c2a4e-8b0d-4f3a-9c5e-1d2b3a4c5d6e"
#define ORG_UUID "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
#define INSTALL_ID "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
/* The image name is chosen to exercise every escape. */
#define IMAGE "chromium's <\"kiosk\"> & co"
#define IMAGE_ESCAPED "chromium&apos;s &lt;&quot;kiosk&quot;&gt; &amp; co"
#define CMDLINE "root=/dev/vda quiet legba.note='a<b&c'"
#define CMDLINE_ESCAPED "root=/dev/vda quiet legba.note=&apos;a&lt;b&amp;c&apos;"

static char *render_domain(const char *tmpl, const char *size, const char *domain_type, bool kvm,
                           bool kernel)
{
    const TemplateVar vars[] = {
        {"name", "legba-" INSTANCE_UUID},
        {"install_id", INSTALL_ID},
        {"uuid", INSTANCE_UUID},
        {"org_uuid", ORG_UUID},
        {"image", IMAGE},
        {"size", size},
        {"created_at", "2025-01-10T12:00:00Z"},
        {"domain_type", domain_type},
        {"disk_path", "/var/lib/legba/instances/" INSTANCE_UUID "&.qcow2"},
        {"disk_format", "qcow2"},
        {"kernel", kernel ? "/var/lib/legba/images/chromium/vmlinuz" : NULL},
        {"initrd", kernel ? "/var/lib/legba/images/chromium/initrd.img" : NULL},
        {"cmdline", kernel ? CMDLINE : NULL},
        {"kvm", kvm ? "1" : ""},
        {"netdev", kernel ? "user,id=legbanet0,restrict=on,ipv6=off,guestfwd=tcp:10.0.2.100:80-"
                            "tcp:127.0.0.1:8000"
                          : NULL},
        {"disk_sata", NULL},
        {"uefi", NULL},
        {"clipboard", kernel ? "1" : NULL},
        {"hotplug", kernel ? "1" : NULL},
    };
    return render_ok(tmpl, vars, ARRAY_SIZE(vars));
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected '%s' in:\n%s", needle, haystack);
}

static void assert_lacks(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle))
        fail_msg("did not expect '%s' in:\n%s", needle, haystack);
}

/* Direct kernel boot with neither initrd nor cmdline: both elements are left out. */
static void test_kernel_without_initrd_or_cmdline(void **state)
{
    DomainTemplates *t = NULL;
    assert_int_equal(domain_templates_load(DOMAINS_DIR, &t, NULL), 0);
    const TemplateVar vars[] = {
        {"name", "legba-" INSTANCE_UUID},
        {"install_id", INSTALL_ID},
        {"uuid", INSTANCE_UUID},
        {"org_uuid", ORG_UUID},
        {"image", "plain"},
        {"size", "small"},
        {"created_at", "2025-01-10T12:00:00Z"},
        {"domain_type", "qemu"},
        {"disk_path", "/var/lib/legba/instances/" INSTANCE_UUID ".qcow2"},
        {"disk_format", "qcow2"},
        {"kernel", "/var/lib/legba/images/plain/vmlinuz"},
        {"initrd", NULL},
        {"cmdline", NULL},
        {"kvm", NULL},
        {"netdev", NULL},
        {"disk_sata", "1"},
        {"uefi", NULL},
        {"clipboard", NULL},
        {"hotplug", NULL},
    };
    char *xml = render_ok(domain_templates_get(t, "small"), vars, ARRAY_SIZE(vars));
    assert_contains(xml, "<kernel>/var/lib/legba/images/plain/vmlinuz</kernel>");
    assert_lacks(xml, "<initrd");
    assert_lacks(xml, "<cmdline");
    assert_lacks(xml, "<boot dev=");
    assert_contains(xml, "<target dev='sda' bus='sata'/>");
    assert_lacks(xml, "bus='virtio'/>\n    </disk>");
    free(xml);
    domain_templates_free(t);
}

static void test_render_real_templates(void **state)
{
    DomainTemplates *t = NULL;
    assert_int_equal(domain_templates_load(DOMAINS_DIR, &t, NULL), 0);

    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        for (int combo = 0; combo < 4; combo++) {
            bool kvm = combo & 1, kernel = combo & 2;
            char *xml = render_domain(domain_templates_get(t, sizes[i].size), sizes[i].size,
                                      kvm ? "kvm" : "qemu", kvm, kernel);
            char expect[512];

            assert_lacks(xml, "{{");
            assert_lacks(xml, "}}");
            assert_contains(xml, kvm ? "<domain type='kvm' " : "<domain type='qemu' ");
            assert_contains(xml, "<name>legba-" INSTANCE_UUID "</name>");
            assert_contains(xml, "<uuid>" INSTANCE_UUID "</uuid>");
            assert_contains(xml, "xmlns:legba='" LEGBA_XMLNS "'");
            assert_contains(xml, "uuid='" INSTANCE_UUID "'");
            assert_contains(xml, "org='" ORG_UUID "'");
            assert_contains(xml, "install='" INSTALL_ID "'");
            assert_contains(xml, "image='" IMAGE_ESCAPED "'");
            snprintf(expect, sizeof(expect), "size='%s'", sizes[i].size);
            assert_contains(xml, expect);
            assert_contains(xml, "created='2025-01-10T12:00:00Z'");
            assert_lacks(xml, "kiosk\">"); /* the raw value never appears */
            assert_contains(xml, "/var/lib/legba/instances/" INSTANCE_UUID "&amp;.qcow2");
            assert_contains(xml, "type='qcow2'");
            assert_contains(xml, "discard='unmap'");
            assert_contains(xml, "<target dev='vda' bus='virtio'/>");
            snprintf(expect, sizeof(expect), "<memory unit='MiB'>%lu</memory>", sizes[i].mib);
            assert_contains(xml, expect);
            snprintf(expect, sizeof(expect), ">%u</vcpu>", sizes[i].vcpus);
            assert_contains(xml, expect);
            assert_contains(xml, "machine='q35'");
            assert_contains(xml, sizes[i].resolution);
            assert_contains(xml, "<target type='virtio' name='org.legba.agent.0'/>");
            /* A NIC only when legbad builds a netdev for it. */
            if (kernel) {
                assert_contains(xml, "<qemu:arg value='user,id=legbanet0,restrict=on,ipv6=off,"
                                     "guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8000'/>");
                assert_contains(xml, "virtio-net-pci,netdev=legbanet0");
            } else {
                assert_lacks(xml, "-netdev");
                assert_lacks(xml, "legbanet0");
            }
            /* A clipboard channel only for an instance that allows one; never the agent's mouse. */
            if (kernel) {
                assert_contains(xml, "<channel type='qemu-vdagent'>\n      <source>\n"
                                     "        <clipboard copypaste='yes'/>\n"
                                     "        <mouse mode='server'/>\n      </source>\n"
                                     "      <target type='virtio' name='com.redhat.spice.0'/>");
            } else {
                assert_lacks(xml, "<channel type='qemu-vdagent'>");
                assert_lacks(xml, "name='com.redhat.spice.0'");
            }
            /* The limits: CPU by vCPUs, throttled disk, no shared memory, no balloon. */
            snprintf(expect, sizeof(expect), "<shares>%u</shares>", 1024 * sizes[i].vcpus);
            assert_contains(xml, expect);
            snprintf(expect, sizeof(expect), "<global_quota>%u</global_quota>",
                     100000 * sizes[i].vcpus);
            assert_contains(xml, expect);
            assert_contains(xml, "<global_period>100000</global_period>");
            assert_contains(xml, "<total_bytes_sec>");
            assert_contains(xml, "<total_iops_sec>");
            assert_contains(xml, "<nosharepages/>");
            assert_contains(xml, "<memballoon model='none'/>");
            /*
             * With memory hotplug (here: the kernel-boot image), the same RAM in
             * all: a fixed part on NUMA node 0 and the rest on a virtio-mem
             * device, all of it asked for from the start.
             */
            if (kernel) {
                snprintf(expect, sizeof(expect), "<maxMemory slots='1' unit='MiB'>%lu</maxMemory>",
                         sizes[i].mib);
                assert_contains(xml, expect);
                snprintf(expect, sizeof(expect),
                         "    <numa>\n      <cell id='0' cpus='%s' memory='%lu' unit='MiB'/>\n"
                         "    </numa>",
                         sizes[i].cpus, sizes[i].fixed_mib);
                assert_contains(xml, expect);
                unsigned long plug = sizes[i].mib - sizes[i].fixed_mib;
                snprintf(expect, sizeof(expect),
                         "<memory model='virtio-mem'>\n      <target>\n"
                         "        <size unit='MiB'>%lu</size>\n        <node>0</node>\n"
                         "        <block unit='MiB'>2</block>\n"
                         "        <requested unit='MiB'>%lu</requested>",
                         plug, plug);
                assert_contains(xml, expect);
            } else {
                assert_lacks(xml, "<maxMemory");
                assert_lacks(xml, "<numa>");
                assert_lacks(xml, "model='virtio-mem'");
            }
            assert_lacks(xml, "<filesystem");
            assert_lacks(xml, "<interface");
            assert_contains(xml, "arch='x86_64'");
            if (kvm) {
                assert_contains(xml, "<cpu mode='host-passthrough'>");
                assert_lacks(xml, "mode='maximum'");
                assert_lacks(xml, "<tcg>");
            } else {
                assert_contains(xml, "<cpu mode='maximum'>");
                assert_lacks(xml, "host-passthrough");
                /* TCG's translation cache, a quarter of QEMU's default. */
                assert_contains(xml,
                                "<tcg>\n      <tb-cache unit='MiB'>256</tb-cache>\n    </tcg>");
            }
            if (kernel) {
                assert_contains(xml, "<kernel>/var/lib/legba/images/chromium/vmlinuz</kernel>");
                assert_contains(xml, "<initrd>/var/lib/legba/images/chromium/initrd.img</initrd>");
                assert_contains(xml, "<cmdline>" CMDLINE_ESCAPED "</cmdline>");
                assert_lacks(xml, "<boot");
            } else {
                assert_contains(xml, "<boot dev='hd'/>");
                assert_lacks(xml, "<kernel");
                assert_lacks(xml, "<initrd");
                assert_lacks(xml, "<cmdline");
            }
            assert_contains(xml, "<on_poweroff>destroy</on_poweroff>");
            assert_contains(xml, "<on_reboot>restart</on_reboot>");
            assert_contains(xml, "<on_crash>destroy</on_crash>");
            assert_contains(xml, "<listen type='none'/>");
            assert_contains(xml, "<model type='virtio' heads='1' primary='yes'>");
            assert_contains(xml, "<input type='tablet' bus='usb'/>");
            assert_contains(xml, "<input type='keyboard' bus='usb'/>");
            assert_contains(xml, "<controller type='usb' model='qemu-xhci'/>");
            /* no network, no host-reachable console, no sound */
            assert_lacks(xml, "<interface");
            assert_lacks(xml, "port=");
            assert_lacks(xml, "socket=");
            assert_lacks(xml, "<sound");
            free(xml);
        }
    }
    domain_templates_free(t);
}

/* libvirt's default error handler prints to stderr; the tests report errors themselves. */
static void quiet_errors(void *opaque, virErrorPtr error)
{
}

/*
 * Each rendered template must be a domain libvirt accepts: define it in the
 * in-process test driver, read back what libvirt understood, undefine it.
 */
static void test_real_templates_define_in_libvirt(void **state)
{
    virSetErrorFunc(NULL, quiet_errors);
    virConnectPtr conn = virConnectOpen("test:///default");
    if (!conn)
        fail_msg("test:///default: %s", virGetLastErrorMessage());

    DomainTemplates *t = NULL;
    assert_int_equal(domain_templates_load(DOMAINS_DIR, &t, NULL), 0);

    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        for (int combo = 0; combo < 4; combo++) {
            bool kvm = combo & 1, kernel = combo & 2;
            char *xml = render_domain(domain_templates_get(t, sizes[i].size), sizes[i].size, "test",
                                      kvm, kernel);
            virDomainPtr dom = virDomainDefineXMLFlags(conn, xml, VIR_DOMAIN_DEFINE_VALIDATE);
            if (!dom)
                fail_msg("%s (kvm=%d kernel=%d) refused: %s", sizes[i].size, kvm, kernel,
                         virGetLastErrorMessage());

            assert_string_equal(virDomainGetName(dom), "legba-" INSTANCE_UUID);
            char uuid[VIR_UUID_STRING_BUFLEN];
            assert_int_equal(virDomainGetUUIDString(dom, uuid), 0);
            assert_string_equal(uuid, INSTANCE_UUID);

            virDomainInfo info;
            assert_int_equal(virDomainGetInfo(dom, &info), 0);
            assert_int_equal(info.maxMem, sizes[i].mib * 1024);
            assert_int_equal(info.nrVirtCpu, sizes[i].vcpus);

            /* the metadata legbad finds its domains by survives libvirt's parser */
            char *meta = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, LEGBA_XMLNS, 0);
            if (!meta)
                fail_msg("no legba metadata: %s", virGetLastErrorMessage());
            assert_contains(meta, "uuid=\"" INSTANCE_UUID "\"");
            assert_contains(meta, "org=\"" ORG_UUID "\"");
            assert_contains(meta, "image=\"chromium's &lt;&quot;kiosk&quot;&gt; &amp; co\"");
            free(meta);

            char *desc = virDomainGetXMLDesc(dom, 0);
            assert_non_null(desc);
            assert_contains(desc, INSTANCE_UUID "&amp;.qcow2");
            assert_contains(desc, "<target dev='vda' bus='virtio'/>");
            assert_lacks(desc, "<interface");
            if (kernel) {
                assert_contains(desc, "<cmdline>" CMDLINE_ESCAPED "</cmdline>");
                assert_contains(desc, "<channel type='qemu-vdagent'>");
                assert_contains(desc, "<clipboard copypaste='yes'/>");
                assert_contains(desc, "<mouse mode='server'/>");
                assert_contains(desc, "<memory model='virtio-mem'>");
            } else {
                assert_lacks(desc, "model='virtio-mem'");
            }
            free(desc);

            assert_int_equal(virDomainUndefine(dom), 0);
            virDomainFree(dom);
            assert_null(virDomainLookupByUUIDString(conn, INSTANCE_UUID));
            free(xml);
        }
    }

    domain_templates_free(t);
    virConnectClose(conn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_substitution),
        cmocka_unit_test(test_xml_escape_each_char),
        cmocka_unit_test(test_xml_escape_rejects),
        cmocka_unit_test(test_escape_in_context),
        cmocka_unit_test(test_render_rejects_bad_value),
        cmocka_unit_test(test_sections),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_unset_value),
        cmocka_unit_test(test_unterminated_and_malformed),
        cmocka_unit_test(test_unbalanced_and_nested),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_load_real_templates),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_too_big),
        cmocka_unit_test(test_render_real_templates),
        cmocka_unit_test(test_kernel_without_initrd_or_cmdline),
        cmocka_unit_test(test_real_templates_define_in_libvirt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
