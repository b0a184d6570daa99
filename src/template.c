#include "template.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* Long enough for any real key; bounds the names error messages quote. */
#define TEMPLATE_KEY_MAX 64

const char *const template_size_names[] = {"small", "medium", "large", NULL};
#define N_SIZES (ARRAY_SIZE(template_size_names) - 1)

struct DomainTemplates {
    char *text[N_SIZES];
    SizeInfo info[N_SIZES];
};

/*
 * Length of the UTF-8 sequence at s, or 0 when it is not one that XML 1.0
 * can carry: malformed, overlong, a surrogate, beyond U+10FFFF, U+FFFE/U+FFFF,
 * or a control character other than tab and newline (C0, DEL and C1).
 */
static size_t xml_char_len(const unsigned char *s)
{
    uint32_t cp;
    size_t len;

    if (s[0] < 0x80) {
        if ((s[0] < 0x20 && s[0] != '\t' && s[0] != '\n') || s[0] == 0x7f)
            return 0;
        return 1;
    } else if ((s[0] & 0xe0) == 0xc0) {
        cp = s[0] & 0x1f;
        len = 2;
    } else if ((s[0] & 0xf0) == 0xe0) {
        cp = s[0] & 0x0f;
        len = 3;
    } else if ((s[0] & 0xf8) == 0xf0) {
        cp = s[0] & 0x07;
        len = 4;
    } else {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) /* also stops at the NUL */
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }

    static const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    if (cp <= 0x9f || cp == 0xfffe || cp == 0xffff)
        return 0;
    return len;
}

static const char *xml_entity(char c)
{
    switch (c) {
    case '&':
        return "&amp;";
    case '<':
        return "&lt;";
    case '>':
        return "&gt;";
    case '"':
        return "&quot;";
    case '\'':
        return "&apos;";
    default:
        return NULL;
    }
}

/* Size of the escaped form plus NUL, or 0 when text cannot go into XML. */
static size_t xml_escaped_size(const char *text)
{
    size_t n = 1;
    for (const unsigned char *p = (const unsigned char *)text; *p;) {
        size_t len = xml_char_len(p);
        if (len == 0)
            return 0;
        const char *entity = xml_entity((char)*p);
        n += entity ? strlen(entity) : len;
        p += len;
    }
    return n;
}

/* dst has room for xml_escaped_size(text) bytes. */
static void xml_escape_into(const char *text, char *dst)
{
    for (const char *p = text; *p; p++) {
        const char *entity = xml_entity(*p);
        if (entity)
            dst = stpcpy(dst, entity);
        else
            *dst++ = *p;
    }
    *dst = '\0';
}

int xml_escape(const char *text, char **ret_escaped)
{
    size_t size = xml_escaped_size(text);
    if (size == 0)
        return -EINVAL;
    char *out = malloc(size);
    if (!out)
        return -ENOMEM;
    xml_escape_into(text, out);
    *ret_escaped = out;
    return 0;
}

/* Output that refuses to grow past TEMPLATE_MAX. */
typedef struct {
    char *data;
    size_t len, cap;
} Buffer;

static int buffer_reserve(Buffer *b, size_t extra)
{
    if (extra > TEMPLATE_MAX - b->len)
        return -EFBIG;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data)
        return -ENOMEM;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buffer_append(Buffer *b, const char *s, size_t len)
{
    int r = buffer_reserve(b, len);
    if (r < 0)
        return r;
    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

/* Where a byte offset falls, for error messages a template author can follow. */
static void locate(const char *tmpl, size_t offset, unsigned *ret_line, unsigned *ret_column)
{
    unsigned line = 1, column = 1;
    for (size_t i = 0; i < offset; i++) {
        if (tmpl[i] == '\n') {
            line++;
            column = 1;
        } else {
            column++;
        }
    }
    *ret_line = line;
    *ret_column = column;
}

static __attribute__((format(printf, 4, 5))) int syntax_error(char **ret_error, const char *tmpl,
                                                              size_t offset, const char *fmt, ...)
{
    unsigned line, column;
    locate(tmpl, offset, &line, &column);
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    util_set_error(ret_error, 0, "line %u, column %u (byte %zu): %s", line, column, offset, what);
    return -EINVAL;
}

typedef struct {
    char sigil; /* '\0' for a value, or '#', '^', '/' */
    char key[TEMPLATE_KEY_MAX + 1];
    size_t start, end; /* byte offsets of "{{" and just past "}}" */
} Tag;

/* Parses the tag that starts at tmpl[offset] ("{{"). */
static int tag_parse(const char *tmpl, size_t offset, Tag *ret_tag, char **ret_error)
{
    const char *p = tmpl + offset + 2;
    Tag tag = {.start = offset};

    if (*p == '#' || *p == '^' || *p == '/')
        tag.sigil = *p++;
    size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_");
    if (n > 0 && n <= TEMPLATE_KEY_MAX && p[n] == '}' && p[n + 1] == '}') {
        memcpy(tag.key, p, n);
        tag.key[n] = '\0';
        tag.end = (size_t)(p + n + 2 - tmpl);
        *ret_tag = tag;
        return 0;
    }
    if (!strstr(p, "}}"))
        return syntax_error(ret_error, tmpl, offset, "unterminated tag: '{{' without '}}'");
    return syntax_error(ret_error, tmpl, offset,
                        "malformed tag: expected {{key}}, {{#key}}, {{^key}} or {{/key}} with a "
                        "key of 1 to %d characters from [a-z0-9_]",
                        TEMPLATE_KEY_MAX);
}

/* The variable named key: 0 and *ret_var, or -ENOENT when the caller did not pass it. */
static int var_find(const TemplateVar *vars, size_t n_vars, const char *key,
                    const TemplateVar **ret_var)
{
    for (size_t i = 0; i < n_vars; i++) {
        if (vars[i].key && strcmp(vars[i].key, key) == 0) {
            *ret_var = &vars[i];
            return 0;
        }
    }
    return -ENOENT;
}

/*
 * One pass over the template. With check_only, tags are checked for syntax
 * and balance but no key is looked up and nothing is written: that is how
 * templates are vetted at load time, before any variables exist.
 *
 * Every key a template names must be among vars, even inside a section that
 * is dropped, so a misspelt key fails on every render rather than only for
 * the instances that happen to keep that section. A NULL value is "unset":
 * fine for a section, an error where the value would be written.
 */
static int render(const char *tmpl, const TemplateVar *vars, size_t n_vars, bool check_only,
                  Buffer *out, char **ret_error)
{
    size_t len = strnlen(tmpl, TEMPLATE_MAX + 1);
    if (len > TEMPLATE_MAX) {
        util_set_error(ret_error, 0, "template is larger than %d bytes", TEMPLATE_MAX);
        return -EFBIG;
    }

    Tag section = {0}; /* the open section; sigil '\0' when none */
    bool keep = true;
    size_t pos = 0;
    int r;

    for (;;) {
        const char *open = strstr(tmpl + pos, "{{");
        size_t text_end = open ? (size_t)(open - tmpl) : len;
        if (keep && !check_only) {
            r = buffer_append(out, tmpl + pos, text_end - pos);
            if (r < 0)
                goto fail;
        }
        if (!open)
            break;

        Tag tag;
        r = tag_parse(tmpl, text_end, &tag, ret_error);
        if (r < 0)
            return r;
        pos = tag.end;

        /* A closing tag's key was looked up with its opener. */
        const TemplateVar *var = NULL;
        if (!check_only && tag.sigil != '/' && var_find(vars, n_vars, tag.key, &var) < 0)
            return syntax_error(ret_error, tmpl, tag.start, "unknown key '%s'", tag.key);
        bool set = var && var->value && var->value[0] != '\0';

        switch (tag.sigil) {
        case '#':
        case '^': {
            if (section.sigil) {
                unsigned line, column;
                locate(tmpl, section.start, &line, &column);
                return syntax_error(ret_error, tmpl, tag.start,
                                    "section '{{%c%s}}' inside section '{{%c%s}}' opened at line "
                                    "%u; sections do not nest",
                                    tag.sigil, tag.key, section.sigil, section.key, line);
            }
            section = tag;
            keep = tag.sigil == '#' ? set : !set;
            break;
        }
        case '/':
            if (!section.sigil)
                return syntax_error(ret_error, tmpl, tag.start, "'{{/%s}}' closes no open section",
                                    tag.key);
            if (strcmp(section.key, tag.key) != 0) {
                unsigned line, column;
                locate(tmpl, section.start, &line, &column);
                return syntax_error(ret_error, tmpl, tag.start,
                                    "'{{/%s}}' does not close '{{%c%s}}' opened at line %u",
                                    tag.key, section.sigil, section.key, line);
            }
            section.sigil = '\0';
            keep = true;
            break;
        default:
            if (!keep || check_only)
                break;
            if (!var->value)
                return syntax_error(ret_error, tmpl, tag.start, "'{{%s}}' has no value", tag.key);
            size_t size = xml_escaped_size(var->value);
            if (size == 0)
                return syntax_error(ret_error, tmpl, tag.start,
                                    "value of '%s' is not valid UTF-8 or holds a control "
                                    "character, which XML cannot carry",
                                    tag.key);
            r = buffer_reserve(out, size - 1);
            if (r < 0)
                goto fail;
            xml_escape_into(var->value, out->data + out->len);
            out->len += size - 1;
        }
    }

    if (section.sigil)
        return syntax_error(ret_error, tmpl, section.start,
                            "section '{{%c%s}}' is never closed with '{{/%s}}'", section.sigil,
                            section.key, section.key);
    return 0;

fail:
    if (r == -EFBIG)
        util_set_error(ret_error, 0, "rendered template is larger than %d bytes", TEMPLATE_MAX);
    return r;
}

int template_render(const char *tmpl, const TemplateVar *vars, size_t n_vars, char **ret_xml,
                    char **ret_error)
{
    Buffer out = {0};
    int r = buffer_reserve(&out, 0);
    if (r < 0)
        return r;
    out.data[0] = '\0';

    r = render(tmpl, vars, n_vars, false, &out, ret_error);
    if (r < 0) {
        free(out.data);
        return r;
    }
    *ret_xml = out.data;
    return 0;
}

void domain_templates_free(DomainTemplates *templates)
{
    if (!templates)
        return;
    for (size_t i = 0; i < N_SIZES; i++)
        free(templates->text[i]);
    free(templates);
}

static void domain_templates_freep(DomainTemplates **templates)
{
    domain_templates_free(*templates);
}

/*
 * Reads and syntax-checks every size up front, so a broken or missing
 * template stops legbad at start-up instead of failing the first create.
 */
/* The number after `after` up to `until`, within [1, max]; false when not there. */
static bool number_after(const char *text, const char *after, char until, unsigned max,
                         unsigned *ret)
{
    const char *p = strstr(text, after);
    if (!p)
        return false;
    p += strlen(after);
    char *end;
    errno = 0;
    unsigned long v = strtoul(p, &end, 10);
    if (errno || end == p || *end != until || v < 1 || v > max)
        return false;
    *ret = (unsigned)v;
    return true;
}

/*
 * What a size offers, read from its template so the template stays the one
 * place it is written: "<vcpu placement='static'>N</vcpu>",
 * "<memory unit='MiB'>N</memory>" and "<resolution x='W' y='H'/>".
 * Returns what is missing, or NULL.
 */
static const char *size_info_read(const char *text, SizeInfo *ret)
{
    SizeInfo info;
    if (!number_after(text, "<vcpu placement='static'>", '<', 1024, &info.vcpus))
        return "no \"<vcpu placement='static'>N</vcpu>\"";
    if (!number_after(text, "<memory unit='MiB'>", '<', 16 * 1024 * 1024, &info.memory_mib))
        return "no \"<memory unit='MiB'>N</memory>\"";
    const char *resolution = strstr(text, "<resolution x='");
    if (!resolution ||
        !number_after(resolution, "<resolution x='", '\'', 16384, &info.screen_width) ||
        !number_after(resolution, "' y='", '\'', 16384, &info.screen_height))
        return "no \"<resolution x='W' y='H'/>\"";
    *ret = info;
    return NULL;
}

int domain_templates_load(const char *domains_dir, DomainTemplates **ret_templates,
                          char **ret_error)
{
    if (!domains_dir || domains_dir[0] == '\0') {
        util_set_error(ret_error, 0, "no domain template directory given");
        return -EINVAL;
    }

    _cleanup_(domain_templates_freep) DomainTemplates *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;

    for (size_t i = 0; i < N_SIZES; i++) {
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s.xml", domains_dir, template_size_names[i]) < 0) {
            path = NULL;
            return -ENOMEM;
        }

        size_t len;
        int r = util_read_file(path, TEMPLATE_MAX, &t->text[i], &len);
        if (r == -ENOMEM)
            return r;
        if (r == -EFBIG) {
            util_set_error(ret_error, 0, "domain template %s is larger than %d bytes", path,
                           TEMPLATE_MAX);
            return r;
        }
        if (r < 0) {
            util_set_error(ret_error, 0, "cannot read domain template %s: %s", path,
                           r == -EINVAL ? "not a regular file" : strerror(-r));
            return r;
        }
        if (strlen(t->text[i]) != len) {
            util_set_error(ret_error, 0, "domain template %s contains a NUL byte", path);
            return -EINVAL;
        }

        _cleanup_free_ char *msg = NULL;
        r = render(t->text[i], NULL, 0, true, NULL, &msg);
        if (r == -ENOMEM)
            return r;
        if (r < 0) {
            util_set_error(ret_error, 0, "domain template %s: %s", path, msg ? msg : "invalid");
            return r;
        }
        const char *missing = size_info_read(t->text[i], &t->info[i]);
        if (missing) {
            util_set_error(ret_error, 0, "domain template %s: %s", path, missing);
            return -EINVAL;
        }
    }

    *ret_templates = TAKE_PTR(t);
    return 0;
}

const char *domain_templates_get(const DomainTemplates *templates, const char *size)
{
    if (!templates || !size)
        return NULL;
    for (size_t i = 0; i < N_SIZES; i++)
        if (strcmp(template_size_names[i], size) == 0)
            return templates->text[i];
    return NULL;
}

int domain_templates_describe(const DomainTemplates *templates, const char *size,
                              SizeInfo *ret_info)
{
    if (!templates || !size)
        return -EINVAL;
    for (size_t i = 0; i < N_SIZES; i++) {
        if (strcmp(template_size_names[i], size) == 0) {
            *ret_info = templates->info[i];
            return 0;
        }
    }
    return -ENOENT;
}
