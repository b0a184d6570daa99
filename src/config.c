#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

#ifndef LEGBA_DOMAINS_DIR
#define LEGBA_DOMAINS_DIR "/usr/share/legba/domains"
#endif

/* Limits on what an operator can hand us, from a file or the command line. */
#define CONFIG_FILE_MAX (64 * 1024)
#define CONFIG_LINE_MAX 4096
#define CONFIG_VALUE_MAX CONFIG_LINE_MAX
/* How much of an offending value an error message quotes. */
#define CONFIG_QUOTE_MAX 128

typedef enum {
    CONFIG_STRING,   /* non-empty text */
    CONFIG_PATH,     /* absolute path */
    CONFIG_URL,      /* "" or an http(s) base URL */
    CONFIG_UNSIGNED, /* decimal, within [min, max] */
    CONFIG_ACCEL,
    CONFIG_LOG_LEVEL,
    CONFIG_LISTEN,        /* "ADDR:PORT" into listen_address + listen_port */
    CONFIG_LOOPBACK,      /* "" or "127.x.y.z:PORT": an endpoint on this host's loopback only */
    CONFIG_OPTIONAL_PATH, /* "" or an absolute path */
    CONFIG_ORIGINS,       /* "" or space-separated http(s)://host[:port] */
    CONFIG_CHOICE,        /* one of the key's choices, kept as text */
    CONFIG_ENDPOINTS,     /* "" or space-separated IPV4:PORT, at most CONFIG_ENDPOINTS_MAX */
    CONFIG_POOL,          /* "" or space-separated IMAGE:SIZE:COUNT[:standby] */
    CONFIG_BOOL,          /* yes or no */
} ConfigType;

typedef struct {
    const char *key;
    ConfigType type;
    size_t offset;
    unsigned min, max; /* CONFIG_UNSIGNED only */
    const char *doc;   /* the accepted values, as error messages quote them */
} ConfigKey;

/* The values of each CONFIG_CHOICE key, NULL-terminated. */
static const struct {
    const char *key;
    const char *choices[3];
} config_choices[] = {
    {"network", {"none", "egress", NULL}},
    {"egress_destinations", {"public", "allowed", NULL}},
};

#define FIELD(f) offsetof(Config, f)

/* Every key legbad knows: one row each, so parsing, errors and docs cannot drift apart. */
static const ConfigKey config_keys[] = {
    {"listen", CONFIG_LISTEN, 0, 0, 0,
     "ADDR:PORT with a numeric IPv4 address, or [ADDR]:PORT for IPv6, and PORT 1..65535"},
    {"libvirt_uri", CONFIG_STRING, FIELD(libvirt_uri), 0, 0, "a libvirt connection URI"},
    {"data_dir", CONFIG_PATH, FIELD(data_dir), 0, 0, "an absolute path"},
    {"images_dir", CONFIG_PATH, FIELD(images_dir), 0, 0, "an absolute path"},
    {"domains_dir", CONFIG_PATH, FIELD(domains_dir), 0, 0, "an absolute path"},
    {"public_url", CONFIG_URL, FIELD(public_url), 0, 0,
     "empty, or an http:// or https:// URL without query or fragment ({instance} in it stands "
     "for the instance's uuid)"},
    {"novnc_dir", CONFIG_PATH, FIELD(novnc_dir), 0, 0, "an absolute path"},
    {"tls_cert", CONFIG_OPTIONAL_PATH, FIELD(tls_cert), 0, 0,
     "empty, or the absolute path of a PEM certificate"},
    {"tls_key", CONFIG_OPTIONAL_PATH, FIELD(tls_key), 0, 0,
     "empty, or the absolute path of a PEM private key"},
    {"console_origins", CONFIG_ORIGINS, FIELD(console_origins), 0, 0,
     "empty, or space-separated origins such as https://portal.example.com"},
    {"console_max_viewers", CONFIG_UNSIGNED, FIELD(console_max_viewers), 1, 64,
     "a whole number from 1 to 64"},
    {"accel", CONFIG_ACCEL, FIELD(accel), 0, 0, "auto, kvm or tcg"},
    {"log_level", CONFIG_LOG_LEVEL, FIELD(log_level), 0, 0, "error, warn, info or debug"},
    {"max_connections", CONFIG_UNSIGNED, FIELD(max_connections), 1, 4000,
     "a whole number from 1 to 4000"},
    {"max_connections_per_ip", CONFIG_UNSIGNED, FIELD(max_connections_per_ip), 1, 100000,
     "a whole number from 1 to 100000"},
    {"connection_timeout", CONFIG_UNSIGNED, FIELD(connection_timeout), 1, 3600,
     "a number of seconds from 1 to 3600"},
    {"max_instances", CONFIG_UNSIGNED, FIELD(max_instances), 1, 100000,
     "a whole number from 1 to 100000"},
    {"memory_overcommit_percent", CONFIG_UNSIGNED, FIELD(memory_overcommit_percent), 0, 1000,
     "a percentage from 0 (no check) to 1000"},
    {"instance_timeout", CONFIG_UNSIGNED, FIELD(instance_timeout), 1, 31536000,
     "a number of seconds from 1 to 31536000"},
    {"instance_timeout_max", CONFIG_UNSIGNED, FIELD(instance_timeout_max), 1, 31536000,
     "a number of seconds from 1 to 31536000"},
    {"idle_timeout", CONFIG_UNSIGNED, FIELD(idle_timeout), 0, 31536000,
     "a number of seconds from 0 (never) to 31536000"},
    {"terminated_retention", CONFIG_UNSIGNED, FIELD(terminated_retention), 0, 2592000,
     "a number of seconds from 0 to 2592000"},
    {"guest_forward", CONFIG_LOOPBACK, FIELD(guest_forward), 0, 0,
     "empty, or 127.X.Y.Z:PORT (a loopback address and a port 1..65535)"},
    {"network", CONFIG_CHOICE, FIELD(network), 0, 0, "none or egress"},
    {"egress_destinations", CONFIG_CHOICE, FIELD(egress_destinations), 0, 0, "public or allowed"},
    {"pool", CONFIG_POOL, FIELD(pool), 0, 0,
     "empty, or up to 16 space-separated IMAGE:SIZE:COUNT or IMAGE:SIZE:COUNT:standby "
     "(COUNT 1..64), each IMAGE:SIZE at most once"},
    {"pool_boots", CONFIG_UNSIGNED, FIELD(pool_boots), 1, 16, "a whole number from 1 to 16"},
    {"egress_allow", CONFIG_ENDPOINTS, FIELD(egress_allow), 0, 0,
     "empty, or up to 16 space-separated IPV4:PORT (numeric address, port 1..65535)"},
    {"allow_unsafe_host", CONFIG_BOOL, FIELD(allow_unsafe_host), 0, 0, "yes or no"},
};

/* Every heap string in a Config, so free and copy cannot miss one. */
static const size_t config_strings[] = {
    FIELD(listen_address),
    FIELD(libvirt_uri),
    FIELD(data_dir),
    FIELD(images_dir),
    FIELD(domains_dir),
    FIELD(public_url),
    FIELD(guest_forward),
    FIELD(novnc_dir),
    FIELD(tls_cert),
    FIELD(tls_key),
    FIELD(console_origins),
    FIELD(network),
    FIELD(egress_destinations),
    FIELD(egress_allow),
    FIELD(pool),
};

static const char *const accel_names[] = {
    [ACCEL_AUTO] = "auto",
    [ACCEL_KVM] = "kvm",
    [ACCEL_TCG] = "tcg",
};

static char **string_field(Config *config, size_t offset)
{
    return (char **)((char *)config + offset);
}

static const char *string_value(const Config *config, size_t offset)
{
    return *(char *const *)((const char *)config + offset);
}

const char *accel_mode_to_string(AccelMode mode)
{
    if ((size_t)mode >= ARRAY_SIZE(accel_names))
        return "unknown";
    return accel_names[mode];
}

void config_free(Config *config)
{
    if (!config)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(config_strings); i++) {
        char **field = string_field(config, config_strings[i]);
        free(*field);
        *field = NULL;
    }
}

int config_init(Config *config)
{
    static const struct {
        size_t offset;
        const char *value;
    } defaults[] = {
        {FIELD(listen_address), "127.0.0.1"},
        {FIELD(libvirt_uri), "qemu:///system"},
        {FIELD(data_dir), "/var/lib/legba"},
        {FIELD(images_dir), "/var/lib/legba/images"},
        {FIELD(domains_dir), LEGBA_DOMAINS_DIR},
        {FIELD(public_url), ""},
        {FIELD(guest_forward), ""},
        {FIELD(novnc_dir), "/usr/share/novnc"},
        {FIELD(tls_cert), ""},
        {FIELD(tls_key), ""},
        {FIELD(console_origins), ""},
        {FIELD(network), "none"},
        {FIELD(egress_destinations), "public"},
        {FIELD(egress_allow), ""},
        {FIELD(pool), ""},
    };

    Config c = {
        .listen_port = 8080,
        .accel = ACCEL_AUTO,
        .log_level = LOG_LEVEL_INFO,
        .max_connections = 256,
        .max_connections_per_ip = 64,
        .connection_timeout = 30,
        .max_instances = 64,
        .console_max_viewers = 4,
        .memory_overcommit_percent = 100,
        .instance_timeout = 3600,
        .instance_timeout_max = 86400,
        .idle_timeout = 0,
        .terminated_retention = 3600,
        .pool_boots = 1,
    };
    for (size_t i = 0; i < ARRAY_SIZE(defaults); i++) {
        if (util_strdup(defaults[i].value, string_field(&c, defaults[i].offset)) < 0) {
            config_free(&c);
            return -ENOMEM;
        }
    }
    *config = c;
    return 0;
}

/* A deep copy, so a file can be applied all-or-nothing. */
static int config_copy(const Config *src, Config *ret_copy)
{
    Config c = *src;
    for (size_t i = 0; i < ARRAY_SIZE(config_strings); i++)
        *string_field(&c, config_strings[i]) = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(config_strings); i++) {
        const char *s = string_value(src, config_strings[i]);
        if (s && util_strdup(s, string_field(&c, config_strings[i])) < 0) {
            config_free(&c);
            return -ENOMEM;
        }
    }
    *ret_copy = c;
    return 0;
}

static const ConfigKey *config_key_find(const char *key)
{
    for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++)
        if (strcmp(config_keys[i].key, key) == 0)
            return &config_keys[i];
    return NULL;
}

/*
 * Control characters have no business in any setting and would garble the
 * log lines and error messages that quote a value.
 */
static bool has_control_chars(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* Strict decimal: no sign, no spaces, no hex, no overflow. */
static int parse_unsigned(const char *text, unsigned min, unsigned max, unsigned *ret)
{
    if (*text == '\0')
        return -EINVAL;
    unsigned long v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > max)
            return -ERANGE;
    }
    if (v < min)
        return -ERANGE;
    *ret = (unsigned)v;
    return 0;
}

/*
 * "127.0.0.1:8080" or "[::1]:8080". Addresses are numeric so what legbad
 * binds to never depends on name resolution; IPv6 is stored unbracketed.
 */
static int parse_listen(const char *text, char **ret_address, uint16_t *ret_port)
{
    const char *colon, *addr_start;
    size_t addr_len;
    int family;

    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        addr_start = text + 1;
        addr_len = (size_t)(close - addr_start);
        colon = close + 1;
        family = AF_INET6;
    } else {
        colon = strrchr(text, ':');
        if (!colon || memchr(text, ':', (size_t)(colon - text)))
            return -EINVAL; /* a bare IPv6 address is ambiguous */
        addr_start = text;
        addr_len = (size_t)(colon - text);
        family = AF_INET;
    }
    if (addr_len == 0 || addr_len >= INET6_ADDRSTRLEN)
        return -EINVAL;

    char addr[INET6_ADDRSTRLEN];
    memcpy(addr, addr_start, addr_len);
    addr[addr_len] = '\0';
    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(family, addr, buf) != 1)
        return -EINVAL;

    unsigned port;
    int r = parse_unsigned(colon + 1, 1, 65535, &port);
    if (r < 0)
        return r;

    char *copy;
    if (util_strdup(addr, &copy) < 0)
        return -ENOMEM;
    *ret_address = copy;
    *ret_port = (uint16_t)port;
    return 0;
}

/* Trailing slashes dropped so every module can join "<dir>/<name>" the same way. */
static int parse_path(const char *text, char **ret)
{
    size_t len = strlen(text);
    if (text[0] != '/' || len >= PATH_MAX)
        return -EINVAL;
    while (len > 1 && text[len - 1] == '/')
        len--;
    char *copy = strndup(text, len);
    if (!copy)
        return -ENOMEM;
    *ret = copy;
    return 0;
}

/*
 * The base that access URLs are built on by appending "/…", so one trailing
 * slash is dropped and a query or fragment (which would swallow the
 * appended path) is refused.
 */
static int parse_url(const char *text, char **ret)
{
    size_t len = strlen(text);
    if (len > 0) {
        const char *rest;
        if (strncmp(text, "http://", 7) == 0)
            rest = text + 7;
        else if (strncmp(text, "https://", 8) == 0)
            rest = text + 8;
        else
            return -EINVAL;
        /* Userinfo would become part of the console's origin, which no browser sends. */
        size_t authority = strcspn(rest, "/");
        if (*rest == '\0' || *rest == '/' || strpbrk(text, "?# ") || memchr(rest, '@', authority) ||
            strstr(rest, "//"))
            return -EINVAL;
        if (text[len - 1] == '/')
            len--;
    }
    char *copy = strndup(text, len);
    if (!copy)
        return -ENOMEM;
    *ret = copy;
    return 0;
}

/*
 * "127.X.Y.Z:PORT" in its plain numeric form (it goes into a QEMU option
 * string, so nothing but digits, dots and one colon), or "".
 */
static int parse_loopback(const char *text, char **ret)
{
    if (*text != '\0') {
        struct in_addr addr;
        char host[INET_ADDRSTRLEN + 1];
        const char *colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) > INET_ADDRSTRLEN ||
            strspn(text, "0123456789.:") != strlen(text))
            return -EINVAL;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        unsigned port;
        if (inet_pton(AF_INET, host, &addr) != 1 || (ntohl(addr.s_addr) >> 24) != 127 ||
            parse_unsigned(colon + 1, 1, 65535, &port) < 0)
            return -EINVAL;
    }
    char *copy = strdup(text);
    if (!copy)
        return -ENOMEM;
    *ret = copy;
    return 0;
}

/*
 * One origin as a browser sends it: scheme, a non-empty host (a name, an
 * IPv4 address or a bracketed IPv6 one), then ":PORT" (1..65535) only when
 * it is not the scheme's default, since a browser never sends that one.
 * *ret_len is the length once a default port is dropped.
 */
static bool origin_is_valid(const char *origin, size_t len, size_t *ret_len)
{
    size_t skip;
    if (len > 7 && strncmp(origin, "http://", 7) == 0)
        skip = 7;
    else if (len > 8 && strncmp(origin, "https://", 8) == 0)
        skip = 8;
    else
        return false;
    const char *host = origin + skip, *end = origin + len;
    const char *host_end;
    if (*host == '[') {
        host_end = memchr(host, ']', (size_t)(end - host));
        if (!host_end || host_end == host + 1)
            return false;
        host_end++;
        for (const char *p = host + 1; p < host_end - 1; p++)
            if (!((*p >= 'a' && *p <= 'f') || (*p >= '0' && *p <= '9') || *p == ':' || *p == '.'))
                return false;
    } else {
        host_end = host;
        while (host_end < end &&
               ((*host_end >= 'a' && *host_end <= 'z') || (*host_end >= '0' && *host_end <= '9') ||
                *host_end == '-' || *host_end == '.'))
            host_end++;
        if (host_end == host)
            return false;
    }
    *ret_len = len;
    if (host_end == end)
        return true;
    /* "08443" is never what a browser sends: it writes the port without leading zeros. */
    if (*host_end != ':' || host_end + 1 == end || host_end[1] == '0' ||
        (size_t)(end - host_end - 1) > 5)
        return false;
    char port_text[6];
    memcpy(port_text, host_end + 1, (size_t)(end - host_end - 1));
    port_text[end - host_end - 1] = '\0';
    unsigned port;
    if (parse_unsigned(port_text, 1, 65535, &port) < 0)
        return false;
    if (port == (skip == 7 ? 80u : 443u))
        *ret_len = (size_t)(host_end - origin);
    return true;
}

/* Space-separated origins, kept lowercase, without default ports, joined by single spaces. */
static int parse_origins(const char *text, char **ret)
{
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    size_t o = 0;
    for (const char *p = text; *p;) {
        p += strspn(p, " ");
        size_t n = strcspn(p, " "), kept;
        if (n == 0)
            break;
        if (o > 0)
            copy[o++] = ' ';
        for (size_t i = 0; i < n; i++)
            copy[o + i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] - 'A' + 'a' : p[i]);
        if (!origin_is_valid(copy + o, n, &kept)) {
            free(copy);
            return -EINVAL;
        }
        o += kept;
        p += n;
    }
    copy[o] = '\0';
    *ret = copy;
    return 0;
}

static int endpoint_parse(const char *text, size_t len, uint32_t *ret_address, uint16_t *ret_port)
{
    char buf[INET_ADDRSTRLEN + 6 + 1];
    if (len >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *colon = strchr(buf, ':');
    if (!colon || strspn(buf, "0123456789.:") != len)
        return -EINVAL;
    *colon = '\0';
    struct in_addr addr;
    unsigned port;
    if (inet_pton(AF_INET, buf, &addr) != 1 || parse_unsigned(colon + 1, 1, 65535, &port) < 0)
        return -EINVAL;
    *ret_address = ntohl(addr.s_addr);
    *ret_port = (uint16_t)port;
    return 0;
}

int config_endpoint_next(const char **cursor, uint32_t *ret_address, uint16_t *ret_port)
{
    const char *p = *cursor + strspn(*cursor, " ");
    size_t n = strcspn(p, " ");
    *cursor = p;
    if (n == 0)
        return 0;
    if (endpoint_parse(p, n, ret_address, ret_port) < 0)
        return -EINVAL;
    *cursor = p + n;
    return 1;
}

/* Space-separated endpoints, each checked, joined by single spaces. */
static int parse_endpoints(const char *text, char **ret)
{
    char *copy = malloc(strlen(text) + 1);
    if (!copy)
        return -ENOMEM;
    size_t o = 0, count = 0;
    uint32_t address;
    uint16_t port;
    for (const char *cursor = text;;) {
        const char *start = cursor + strspn(cursor, " ");
        int r = config_endpoint_next(&cursor, &address, &port);
        if (r == 0)
            break;
        if (r < 0 || ++count > CONFIG_ENDPOINTS_MAX) {
            free(copy);
            return -EINVAL;
        }
        if (o > 0)
            copy[o++] = ' ';
        memcpy(copy + o, start, (size_t)(cursor - start));
        o += (size_t)(cursor - start);
    }
    copy[o] = '\0';
    *ret = copy;
    return 0;
}

int config_pool_next(const char **cursor, ConfigPoolEntry *ret)
{
    const char *p = *cursor + strspn(*cursor, " ");
    size_t n = strcspn(p, " ");
    if (n == 0) {
        *cursor = p;
        return 0;
    }
    char entry[CONFIG_POOL_IMAGE_MAX + CONFIG_POOL_SIZE_MAX + 32];
    if (n >= sizeof(entry))
        return -EINVAL;
    memcpy(entry, p, n);
    entry[n] = '\0';
    /* IMAGE:SIZE:COUNT[:standby]: names of [a-z0-9._-], as image names and sizes are. */
    char *fields[5] = {entry};
    size_t count = 1;
    for (char *c = entry; *c && count < 5; c++) {
        if (*c == ':') {
            *c = '\0';
            fields[count++] = c + 1;
        }
    }
    static const char name_chars[] = "abcdefghijklmnopqrstuvwxyz0123456789._-";
    ConfigPoolEntry e = {0};
    unsigned how_many;
    if ((count != 3 && count != 4) || !*fields[0] || !*fields[1] ||
        strlen(fields[0]) > CONFIG_POOL_IMAGE_MAX || strlen(fields[1]) > CONFIG_POOL_SIZE_MAX ||
        strspn(fields[0], name_chars) != strlen(fields[0]) ||
        strspn(fields[1], name_chars) != strlen(fields[1]) ||
        parse_unsigned(fields[2], 1, 64, &how_many) < 0 ||
        (count == 4 && strcmp(fields[3], "standby") != 0))
        return -EINVAL;
    snprintf(e.image, sizeof(e.image), "%s", fields[0]);
    snprintf(e.size, sizeof(e.size), "%s", fields[1]);
    e.count = how_many;
    e.standby = count == 4;
    *ret = e;
    *cursor = p + n;
    return 1;
}

/* Every entry well-formed, at most CONFIG_POOL_MAX, no (image, size) twice; kept as given. */
static int parse_pool(const char *text, char **ret)
{
    ConfigPoolEntry seen[CONFIG_POOL_MAX], e;
    size_t n = 0;
    int r;
    for (const char *cursor = text; (r = config_pool_next(&cursor, &e)) != 0;) {
        if (r < 0 || n == CONFIG_POOL_MAX)
            return -EINVAL;
        for (size_t i = 0; i < n; i++)
            if (strcmp(seen[i].image, e.image) == 0 && strcmp(seen[i].size, e.size) == 0)
                return -EINVAL;
        seen[n++] = e;
    }
    return util_strdup(text, ret);
}

/* Parses into locals and stores only on success: a rejected value leaves the config as it was. */
static int config_apply(Config *config, const ConfigKey *k, const char *value)
{
    char *text = NULL;
    int r;

    switch (k->type) {
    case CONFIG_STRING:
        r = value[0] == '\0' ? -EINVAL : util_strdup(value, &text);
        break;
    case CONFIG_PATH:
        r = parse_path(value, &text);
        break;
    case CONFIG_URL:
        r = parse_url(value, &text);
        break;
    case CONFIG_LOOPBACK:
        r = parse_loopback(value, &text);
        break;
    case CONFIG_OPTIONAL_PATH:
        r = value[0] == '\0' ? util_strdup("", &text) : parse_path(value, &text);
        break;
    case CONFIG_ORIGINS:
        r = parse_origins(value, &text);
        break;
    case CONFIG_ENDPOINTS:
        r = parse_endpoints(value, &text);
        break;
    case CONFIG_POOL:
        r = parse_pool(value, &text);
        break;
    case CONFIG_CHOICE:
        r = -EINVAL;
        for (size_t c = 0; c < ARRAY_SIZE(config_choices); c++)
            for (size_t i = 0; strcmp(config_choices[c].key, k->key) == 0 &&
                               config_choices[c].choices[i] && r == -EINVAL;
                 i++)
                if (strcmp(value, config_choices[c].choices[i]) == 0)
                    r = util_strdup(value, &text);
        break;
    case CONFIG_UNSIGNED: {
        unsigned v;
        r = parse_unsigned(value, k->min, k->max, &v);
        if (r == 0)
            *(unsigned *)((char *)config + k->offset) = v;
        return r;
    }
    case CONFIG_ACCEL:
        for (size_t i = 0; i < ARRAY_SIZE(accel_names); i++) {
            if (strcmp(value, accel_names[i]) == 0) {
                config->accel = (AccelMode)i;
                return 0;
            }
        }
        return -EINVAL;
    case CONFIG_BOOL:
        if (strcmp(value, "yes") != 0 && strcmp(value, "no") != 0)
            return -EINVAL;
        *(bool *)((char *)config + k->offset) = strcmp(value, "yes") == 0;
        return 0;
    case CONFIG_LOG_LEVEL: {
        LogLevel level;
        r = log_level_parse(value, &level);
        if (r == 0)
            config->log_level = level;
        return r;
    }
    case CONFIG_LISTEN: {
        uint16_t port;
        r = parse_listen(value, &text, &port);
        if (r == 0) {
            free(config->listen_address);
            config->listen_address = text;
            config->listen_port = port;
        }
        return r;
    }
    default:
        return -EINVAL;
    }

    if (r == 0) {
        char **field = string_field(config, k->offset);
        free(*field);
        *field = text;
    }
    return r;
}

int config_set(Config *config, const char *key, const char *value, char **ret_error)
{
    const ConfigKey *k = config_key_find(key);
    if (!k) {
        char known[1024] = "";
        size_t used = 0;
        for (size_t i = 0; i < ARRAY_SIZE(config_keys) && used < sizeof(known); i++)
            used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s", i ? ", " : "",
                                     config_keys[i].key);
        util_set_error(ret_error, 0, "unknown key '%.*s'; known keys: %s", CONFIG_QUOTE_MAX, key,
                       known);
        return -EINVAL;
    }

    if (strlen(value) > CONFIG_VALUE_MAX) {
        util_set_error(ret_error, 0, "%s: value longer than %d bytes; expected %s", k->key,
                       CONFIG_VALUE_MAX, k->doc);
        return -EINVAL;
    }
    if (has_control_chars(value)) {
        util_set_error(ret_error, 0, "%s: value contains control characters; expected %s", k->key,
                       k->doc);
        return -EINVAL;
    }

    int r = config_apply(config, k, value);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        util_set_error(ret_error, 0, "%s: invalid value '%.*s%s'; expected %s", k->key,
                       CONFIG_QUOTE_MAX, value, strlen(value) > CONFIG_QUOTE_MAX ? "..." : "",
                       k->doc);
        return -EINVAL;
    }
    return 0;
}

int config_check(const Config *config, char **ret_error)
{
    if (!config->tls_cert[0] != !config->tls_key[0])
        return util_set_error(ret_error, -EINVAL,
                              "tls_cert and tls_key go together: set both for HTTPS, or neither");
    if (config->instance_timeout > config->instance_timeout_max)
        return util_set_error(ret_error, -EINVAL,
                              "instance_timeout (%u) is longer than instance_timeout_max (%u)",
                              config->instance_timeout, config->instance_timeout_max);
    /* An access URL must name a host a browser can reach; 0.0.0.0 is not one. */
    if (!config->public_url[0] && (strcmp(config->listen_address, "0.0.0.0") == 0 ||
                                   strcmp(config->listen_address, "::") == 0))
        return util_set_error(ret_error, -EINVAL,
                              "listen %s: set public_url too, the base of the access URLs that "
                              "browsers open",
                              config->listen_address);
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r')
        s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        end--;
    *end = '\0';
    return s;
}

/*
 * Applies the whole file or nothing: lines go into a copy that replaces
 * *config only when every line was accepted.
 */
int config_load_file(Config *config, const char *path, char **ret_error)
{
    _cleanup_free_ char *data = NULL;
    size_t len;
    int r = util_read_file(path, CONFIG_FILE_MAX, &data, &len);
    if (r == -ENOMEM)
        return r;
    if (r == -EFBIG) {
        util_set_error(ret_error, 0, "%s: file is larger than %d bytes", path, CONFIG_FILE_MAX);
        return r;
    }
    if (r == -EINVAL) {
        util_set_error(ret_error, 0, "%s: not a regular file", path);
        return r;
    }
    if (r < 0) {
        util_set_error(ret_error, 0, "%s: cannot read: %s", path, strerror(-r));
        return r;
    }

    Config c;
    r = config_copy(config, &c);
    if (r < 0)
        return r;

    char *line = data;
    for (unsigned lineno = 1; line < data + len; lineno++) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        char *next = nl ? nl + 1 : data + len;
        size_t line_len = (size_t)((nl ? nl : data + len) - line);
        if (nl)
            *nl = '\0';

        if (line_len > CONFIG_LINE_MAX) {
            util_set_error(ret_error, 0, "%s:%u: line longer than %d bytes", path, lineno,
                           CONFIG_LINE_MAX);
            r = -EINVAL;
            goto cleanup;
        }
        if (strlen(line) != line_len) {
            util_set_error(ret_error, 0, "%s:%u: NUL byte in line", path, lineno);
            r = -EINVAL;
            goto cleanup;
        }

        char *s = trim(line);
        line = next;
        if (*s == '\0' || *s == '#')
            continue;

        char *eq = strchr(s, '=');
        if (!eq) {
            util_set_error(ret_error, 0, "%s:%u: expected 'key = value'", path, lineno);
            r = -EINVAL;
            goto cleanup;
        }
        *eq = '\0';
        _cleanup_free_ char *msg = NULL;
        r = config_set(&c, trim(s), trim(eq + 1), &msg);
        if (r < 0) {
            if (r == -EINVAL)
                util_set_error(ret_error, 0, "%s:%u: %s", path, lineno, msg ? msg : "invalid line");
            goto cleanup;
        }
    }

    config_free(config);
    *config = c;
    return 0;

cleanup:
    config_free(&c);
    return r;
}
