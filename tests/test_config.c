#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "util.h"

static int setup(void **state)
{
    Config *c = calloc(1, sizeof(*c));
    if (!c || config_init(c) < 0)
        return -1;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    config_free(*state);
    free(*state);
    return 0;
}

/* Sets key and expects success. */
static void set_ok(Config *c, const char *key, const char *value)
{
    char *err = NULL;
    int r = config_set(c, key, value, &err);
    if (r != 0)
        fail_msg("%s = '%s' refused (%d): %s", key, value, r, err ? err : "(no message)");
    assert_null(err);
}

/*
 * Sets key and expects -EINVAL, a message that names the key and contains
 * `expect` (the accepted values), and the config left as it was.
 */
static void set_bad(Config *c, const char *key, const char *value, const char *expect)
{
    Config before = *c;
    char *err = NULL;
    assert_int_equal(config_set(c, key, value, &err), -EINVAL);
    assert_non_null(err);
    if (!strstr(err, key) || !strstr(err, expect))
        fail_msg("message for %s = '%s' lacks '%s': %s", key, value, expect, err);
    free(err);
    assert_memory_equal(&before, c, sizeof(before));
}

static void test_defaults(void **state)
{
    Config *c = *state;
    assert_string_equal(c->listen_address, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_string_equal(c->libvirt_uri, "qemu:///system");
    assert_string_equal(c->data_dir, "/var/lib/legba");
    assert_string_equal(c->images_dir, "/var/lib/legba/images");
    /* LEGBA_DOMAINS_DIR: <source>/domains by default, a share/ path when packaged */
    assert_int_equal(c->domains_dir[0], '/');
    size_t len = strlen(c->domains_dir);
    assert_true(len >= 8);
    assert_string_equal(c->domains_dir + len - 8, "/domains");
    assert_string_equal(c->public_url, "");
    assert_int_equal(c->accel, ACCEL_AUTO);
    assert_int_equal(c->log_level, LOG_LEVEL_INFO);
    assert_int_equal(c->max_connections, 256);
    assert_int_equal(c->max_connections_per_ip, 64);
    assert_int_equal(c->connection_timeout, 30);
    assert_int_equal(c->max_instances, 64);
}

static void test_free_accepts_null_and_twice(void **state)
{
    Config *c = *state;
    config_free(NULL);
    config_free(c);
    assert_null(c->listen_address);
    config_free(c);
    assert_int_equal(config_init(c), 0);
}

static void test_unknown_key(void **state)
{
    Config *c = *state;
    char *err = NULL;
    assert_int_equal(config_set(c, "max_instance", "5", &err), -EINVAL);
    assert_non_null(strstr(err, "unknown key 'max_instance'"));
    /* and it lists what is accepted */
    assert_non_null(strstr(err, "max_instances"));
    assert_non_null(strstr(err, "listen"));
    free(err);
    /* a NULL ret_error is allowed */
    assert_int_equal(config_set(c, "nope", "1", NULL), -EINVAL);
}

static void test_listen(void **state)
{
    Config *c = *state;
    set_ok(c, "listen", "0.0.0.0:9000");
    assert_string_equal(c->listen_address, "0.0.0.0");
    assert_int_equal(c->listen_port, 9000);
    set_ok(c, "listen", "[::1]:8443");
    assert_string_equal(c->listen_address, "::1");
    assert_int_equal(c->listen_port, 8443);
    set_ok(c, "listen", "[fe80::1:2]:1");
    assert_string_equal(c->listen_address, "fe80::1:2");
    assert_int_equal(c->listen_port, 1);
    set_ok(c, "listen", "10.1.2.3:65535");
    assert_string_equal(c->listen_address, "10.1.2.3");
    assert_int_equal(c->listen_port, 65535);

    const char *accepted = "ADDR:PORT";
    set_bad(c, "listen", "10.1.2.3:0", accepted);
    set_bad(c, "listen", "10.1.2.3:65536", accepted);
    set_bad(c, "listen", "10.1.2.3:99999999999999999999", accepted);
    set_bad(c, "listen", "10.1.2.3:-1", accepted);
    set_bad(c, "listen", "10.1.2.3:+80", accepted);
    set_bad(c, "listen", "10.1.2.3:80x", accepted);
    set_bad(c, "listen", "10.1.2.3:", accepted);
    set_bad(c, "listen", "10.1.2.3", accepted);
    set_bad(c, "listen", ":8080", accepted);
    set_bad(c, "listen", "", accepted);
    set_bad(c, "listen", "::1:8080", accepted);  /* IPv6 needs brackets */
    set_bad(c, "listen", "[::1]8080", accepted); /* no colon after ] */
    set_bad(c, "listen", "[::1:8080", accepted);
    set_bad(c, "listen", "[]:8080", accepted);
    set_bad(c, "listen", "[1.2.3.4]:8080", accepted);
    set_bad(c, "listen", "256.1.1.1:8080", accepted);
    set_bad(c, "listen", "localhost:8080", accepted);
    set_bad(c, "listen", "[::1]:0", accepted);
    set_bad(c, "listen", "[::1]:65536", accepted);
    /* the last good value survives every refusal */
    assert_string_equal(c->listen_address, "10.1.2.3");
    assert_int_equal(c->listen_port, 65535);
}

static void test_libvirt_uri(void **state)
{
    Config *c = *state;
    set_ok(c, "libvirt_uri", "qemu+ssh://host/system");
    assert_string_equal(c->libvirt_uri, "qemu+ssh://host/system");
    set_bad(c, "libvirt_uri", "", "libvirt connection URI");
    set_bad(c, "libvirt_uri", "qemu:///sys\ntem", "libvirt connection URI");
}

static void test_paths(void **state)
{
    Config *c = *state;
    static const char *const keys[] = {"data_dir", "images_dir", "domains_dir"};
    char **fields[] = {&c->data_dir, &c->images_dir, &c->domains_dir};
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        set_ok(c, keys[i], "/srv/legba");
        assert_string_equal(*fields[i], "/srv/legba");
        set_ok(c, keys[i], "/srv/legba//");
        assert_string_equal(*fields[i], "/srv/legba");
        set_ok(c, keys[i], "/");
        assert_string_equal(*fields[i], "/");
        set_bad(c, keys[i], "srv/legba", "absolute path");
        set_bad(c, keys[i], "./legba", "absolute path");
        set_bad(c, keys[i], "", "absolute path");
        set_bad(c, keys[i], "~/legba", "absolute path");
    }
}

static void test_public_url(void **state)
{
    Config *c = *state;
    set_ok(c, "public_url", "https://legba.example.com/");
    assert_string_equal(c->public_url, "https://legba.example.com");
    set_ok(c, "public_url", "http://10.0.0.1:8080/legba");
    assert_string_equal(c->public_url, "http://10.0.0.1:8080/legba");
    set_ok(c, "public_url", "");
    assert_string_equal(c->public_url, "");

    const char *accepted = "http:// or https://";
    set_bad(c, "public_url", "ftp://legba.example.com", accepted);
    set_bad(c, "public_url", "legba.example.com", accepted);
    set_bad(c, "public_url", "https://", accepted);
    set_bad(c, "public_url", "https:///path", accepted);
    set_bad(c, "public_url", "https://example.com/?q=1", accepted);
    set_bad(c, "public_url", "https://example.com/#top", accepted);
    set_bad(c, "public_url", "https://exa mple.com", accepted);
    set_bad(c, "public_url", "https://user:pw@example.com", accepted);
    set_bad(c, "public_url", "https://example.com//", accepted);
    set_bad(c, "public_url", "https://example.com//legba", accepted);
}

static void test_accel(void **state)
{
    Config *c = *state;
    set_ok(c, "accel", "kvm");
    assert_int_equal(c->accel, ACCEL_KVM);
    set_ok(c, "accel", "tcg");
    assert_int_equal(c->accel, ACCEL_TCG);
    set_ok(c, "accel", "auto");
    assert_int_equal(c->accel, ACCEL_AUTO);
    set_bad(c, "accel", "KVM", "auto, kvm or tcg");
    set_bad(c, "accel", "hvf", "auto, kvm or tcg");
    set_bad(c, "accel", "", "auto, kvm or tcg");

    assert_string_equal(accel_mode_to_string(ACCEL_AUTO), "auto");
    assert_string_equal(accel_mode_to_string(ACCEL_KVM), "kvm");
    assert_string_equal(accel_mode_to_string(ACCEL_TCG), "tcg");
    assert_string_equal(accel_mode_to_string((AccelMode)42), "unknown");
}

static void test_log_level(void **state)
{
    Config *c = *state;
    static const struct {
        const char *name;
        LogLevel level;
    } levels[] = {{"error", LOG_LEVEL_ERROR},
                  {"warn", LOG_LEVEL_WARN},
                  {"debug", LOG_LEVEL_DEBUG},
                  {"info", LOG_LEVEL_INFO}};
    for (size_t i = 0; i < ARRAY_SIZE(levels); i++) {
        set_ok(c, "log_level", levels[i].name);
        assert_int_equal(c->log_level, levels[i].level);
    }
    set_bad(c, "log_level", "warning", "error, warn, info or debug");
    set_bad(c, "log_level", "", "error, warn, info or debug");
}

static void test_unsigned_bounds(void **state)
{
    Config *c = *state;
    static const struct {
        const char *key;
        size_t offset;
        unsigned max;
        const char *max_text, *over_text;
    } keys[] = {
        {"max_connections", offsetof(Config, max_connections), 4000, "4000", "4001"},
        {"max_connections_per_ip", offsetof(Config, max_connections_per_ip), 100000, "100000",
         "100001"},
        {"connection_timeout", offsetof(Config, connection_timeout), 3600, "3600", "3601"},
        {"max_instances", offsetof(Config, max_instances), 100000, "100000", "100001"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        unsigned *field = (unsigned *)((char *)c + keys[i].offset);
        char accepted[32];
        snprintf(accepted, sizeof(accepted), "from 1 to %u", keys[i].max);

        set_ok(c, keys[i].key, "1");
        assert_int_equal(*field, 1);
        set_ok(c, keys[i].key, keys[i].max_text);
        assert_int_equal(*field, keys[i].max);
        set_ok(c, keys[i].key, "17");
        assert_int_equal(*field, 17);

        set_bad(c, keys[i].key, "0", accepted);
        set_bad(c, keys[i].key, keys[i].over_text, accepted);
        set_bad(c, keys[i].key, "4294967297", accepted); /* wraps to 1 in 32 bits */
        set_bad(c, keys[i].key, "18446744073709551617", accepted);
        set_bad(c, keys[i].key, "-1", accepted);
        set_bad(c, keys[i].key, "+5", accepted);
        set_bad(c, keys[i].key, "0x10", accepted);
        set_bad(c, keys[i].key, "5 ", accepted);
        set_bad(c, keys[i].key, "", accepted);
        set_bad(c, keys[i].key, "ten", accepted);
        assert_int_equal(*field, 17);
    }
}

static void test_value_too_long(void **state)
{
    Config *c = *state;
    char *big = malloc(5000);
    assert_non_null(big);
    big[0] = '/';
    memset(big + 1, 'a', 4998);
    big[4999] = '\0';
    set_bad(c, "data_dir", big, "absolute path");
    free(big);
}

/* Writes text to a fresh temporary file; returns its malloc'd path. */
static char *write_temp(const char *text, size_t len)
{
    char *path = strdup("/tmp/legba-test-config-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

/* Loads text as a config file; returns the result and, via ret_error, the message. */
static int load_text(Config *c, const char *text, size_t len, char **ret_path, char **ret_error)
{
    char *path = write_temp(text, len);
    int r = config_load_file(c, path, ret_error);
    unlink(path);
    if (ret_path)
        *ret_path = path;
    else
        free(path);
    return r;
}

static void test_load_file(void **state)
{
    Config *c = *state;
    static const char text[] = "# legbad settings\n"
                               "\n"
                               "listen = [::]:8443\n"
                               "   # an indented comment\n"
                               "\tmax_instances=12  \n"
                               "public_url =   https://legba.example.com/\r\n"
                               "accel = tcg\n"
                               "log_level = debug\n"
                               "data_dir = /srv/legba/\n"
                               "   \t  \n"
                               "connection_timeout = 3600"; /* no final newline */
    char *err = NULL;
    assert_int_equal(load_text(c, text, sizeof(text) - 1, NULL, &err), 0);
    assert_null(err);
    assert_string_equal(c->listen_address, "::");
    assert_int_equal(c->listen_port, 8443);
    assert_int_equal(c->max_instances, 12);
    assert_string_equal(c->public_url, "https://legba.example.com");
    assert_int_equal(c->accel, ACCEL_TCG);
    assert_int_equal(c->log_level, LOG_LEVEL_DEBUG);
    assert_string_equal(c->data_dir, "/srv/legba");
    assert_int_equal(c->connection_timeout, 3600);
    /* untouched keys keep their defaults */
    assert_string_equal(c->libvirt_uri, "qemu:///system");
    assert_int_equal(c->max_connections, 256);
}

static void test_load_empty_file(void **state)
{
    Config *c = *state;
    char *err = NULL;
    assert_int_equal(load_text(c, "", 0, NULL, &err), 0);
    assert_int_equal(c->listen_port, 8080);
}

/* Expects the load to fail with a message "<path>:<line>: …" containing expect. */
static void load_bad(Config *c, const char *text, unsigned line, const char *expect)
{
    char *path = NULL, *err = NULL;
    assert_int_equal(load_text(c, text, strlen(text), &path, &err), -EINVAL);
    assert_non_null(err);
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s:%u: ", path, line);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, expect))
        fail_msg("expected '%s…%s', got: %s", prefix, expect, err);
    free(err);
    free(path);
}

static void test_load_errors(void **state)
{
    Config *c = *state;
    load_bad(c, "# ok\nmax_instances = 3\nmax_instancez = 4\n", 3, "unknown key 'max_instancez'");
    load_bad(c, "\n\n\n\nlisten = 127.0.0.1:0\n", 5, "PORT 1..65535");
    load_bad(c, "data_dir = var/lib/legba\n", 1, "data_dir");
    load_bad(c, "data_dir = var/lib/legba\n", 1, "absolute path");
    load_bad(c, "accel\n", 1, "expected 'key = value'");
    load_bad(c, "accel = fast\n", 1, "auto, kvm or tcg");
    load_bad(c, "max_connections = 0\n", 1, "from 1 to 4000");
    load_bad(c, "connection_timeout = 3601 # an hour\n", 1, "connection_timeout");
    /* a failed file changes nothing, even the lines before the bad one */
    assert_int_equal(c->max_instances, 64);
}

static void test_load_line_too_long(void **state)
{
    Config *c = *state;
    size_t n = 5000;
    char *text = malloc(n + 64);
    assert_non_null(text);
    strcpy(text, "max_instances = 5\n# ");
    size_t used = strlen(text);
    memset(text + used, 'x', n);
    strcpy(text + used + n, "\n");
    load_bad(c, text, 2, "longer than 4096");
    free(text);

    /* exactly 4096 bytes is still fine */
    char *line = malloc(4096 + 2);
    assert_non_null(line);
    memset(line, ' ', 4096);
    memcpy(line, "accel = kvm", 11);
    line[4096] = '\n';
    line[4097] = '\0';
    char *err = NULL;
    assert_int_equal(load_text(c, line, 4097, NULL, &err), 0);
    assert_int_equal(c->accel, ACCEL_KVM);
    free(line);
}

static void test_load_nul_byte(void **state)
{
    Config *c = *state;
    static const char text[] = "accel = kvm\naccel = t\0cg\n";
    char *err = NULL;
    assert_int_equal(load_text(c, text, sizeof(text) - 1, NULL, &err), -EINVAL);
    assert_non_null(strstr(err, ":2: "));
    free(err);
}

static void test_load_file_too_big(void **state)
{
    Config *c = *state;
    /* 64 KiB + 1 of valid comment lines: only the size is wrong */
    size_t n = 64 * 1024 + 1;
    char *text = malloc(n);
    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
        text[i] = i % 64 == 63 ? '\n' : '#';
    char *err = NULL;
    assert_int_equal(load_text(c, text, n, NULL, &err), -EFBIG);
    assert_non_null(strstr(err, "larger than 65536 bytes"));
    free(err);

    /* exactly 64 KiB loads */
    assert_int_equal(load_text(c, text, n - 1, NULL, &err), 0);
    free(text);
}

static void test_load_missing_file(void **state)
{
    Config *c = *state;
    char *err = NULL;
    assert_int_equal(config_load_file(c, "/nonexistent/legbad.conf", &err), -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/legbad.conf"));
    free(err);
    assert_int_equal(config_load_file(c, "/tmp", &err), -EINVAL);
    assert_non_null(strstr(err, "not a regular file"));
    free(err);
}

static void test_console_defaults(void **state)
{
    Config *c = *state;
    assert_string_equal(c->novnc_dir, "/usr/share/novnc");
    assert_string_equal(c->tls_cert, "");
    assert_string_equal(c->tls_key, "");
    assert_string_equal(c->console_origins, "");
    assert_int_equal(c->console_max_viewers, 4);
    char *err = NULL;
    assert_int_equal(config_check(c, &err), 0);
    assert_null(err);
}

static void test_novnc_dir(void **state)
{
    Config *c = *state;
    set_ok(c, "novnc_dir", "/opt/novnc/");
    assert_string_equal(c->novnc_dir, "/opt/novnc");
    set_bad(c, "novnc_dir", "", "absolute path");
    set_bad(c, "novnc_dir", "novnc", "absolute path");
    set_bad(c, "novnc_dir", "./novnc", "absolute path");
    assert_string_equal(c->novnc_dir, "/opt/novnc");
}

static void test_tls_paths(void **state)
{
    Config *c = *state;
    static const char *const keys[] = {"tls_cert", "tls_key"};
    char **fields[] = {&c->tls_cert, &c->tls_key};
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        set_ok(c, keys[i], "/etc/legba/tls.pem");
        assert_string_equal(*fields[i], "/etc/legba/tls.pem");
        set_bad(c, keys[i], "tls.pem", "absolute path");
        set_bad(c, keys[i], "etc/legba/tls.pem", "absolute path");
        set_bad(c, keys[i], "~/tls.pem", "absolute path");
        assert_string_equal(*fields[i], "/etc/legba/tls.pem");
        set_ok(c, keys[i], "");
        assert_string_equal(*fields[i], "");
    }
}

static void test_console_origins(void **state)
{
    Config *c = *state;
    set_ok(c, "console_origins", "https://portal.example.com");
    assert_string_equal(c->console_origins, "https://portal.example.com");
    /* Lowercased and joined by single spaces, as the check compares them. */
    set_ok(c, "console_origins",
           "  HTTPS://Portal.Example.COM   http://10.0.0.1:8080 http://[::1]:3000 ");
    assert_string_equal(c->console_origins,
                        "https://portal.example.com http://10.0.0.1:8080 http://[::1]:3000");
    set_ok(c, "console_origins", "");
    assert_string_equal(c->console_origins, "");
    set_ok(c, "console_origins", "   ");
    assert_string_equal(c->console_origins, "");

    set_ok(c, "console_origins", "https://a.example");
    const char *accepted = "space-separated origins";
    static const char *const bad[] = {
        "https://a.example/",
        "https://a.example/path",
        "https://a.example?x=1",
        "https://a.example#top",
        "ftp://a.example",
        "ws://a.example",
        "a.example",
        "https://",
        "http://",
        "null",
        "*",
        "https://user@a.example",
        "https://a.example https://b.example/path",
        "https://ok.example ftp://b.example",
        /* Origins no browser sends: an empty host, a bad port, leading zeros. */
        "http://:8080",
        "http://a::b",
        "https://a.example:0",
        "https://a.example:99999",
        "https://a.example:08443",
        "http://[]",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        set_bad(c, "console_origins", bad[i], accepted);
    assert_string_equal(c->console_origins, "https://a.example");

    /* A browser leaves the scheme's default port out, so the list does too. */
    set_ok(c, "console_origins", "https://A.example:443 http://b.example:80 http://c.example:443");
    assert_string_equal(c->console_origins,
                        "https://a.example http://b.example http://c.example:443");
}

static void test_console_max_viewers(void **state)
{
    Config *c = *state;
    set_ok(c, "console_max_viewers", "1");
    assert_int_equal(c->console_max_viewers, 1);
    set_ok(c, "console_max_viewers", "64");
    assert_int_equal(c->console_max_viewers, 64);
    const char *accepted = "from 1 to 64";
    set_bad(c, "console_max_viewers", "0", accepted);
    set_bad(c, "console_max_viewers", "65", accepted);
    set_bad(c, "console_max_viewers", "-1", accepted);
    set_bad(c, "console_max_viewers", "", accepted);
    set_bad(c, "console_max_viewers", "4294967297", accepted);
    assert_int_equal(c->console_max_viewers, 64);
}

static void test_public_url_instance(void **state)
{
    Config *c = *state;
    set_ok(c, "public_url", "https://{instance}.vm.example.com/");
    assert_string_equal(c->public_url, "https://{instance}.vm.example.com");
    set_ok(c, "public_url", "http://{instance}.vm.example.com:8080/legba");
    assert_string_equal(c->public_url, "http://{instance}.vm.example.com:8080/legba");
}

/* Expects config_check to refuse with a message containing each of the words. */
static void check_bad(const Config *c, const char *word1, const char *word2)
{
    char *err = NULL;
    assert_int_equal(config_check(c, &err), -EINVAL);
    assert_non_null(err);
    if (!strstr(err, word1) || (word2 && !strstr(err, word2)))
        fail_msg("message lacks '%s'/'%s': %s", word1, word2 ? word2 : "", err);
    free(err);
}

static void test_check_tls_pair(void **state)
{
    Config *c = *state;
    set_ok(c, "tls_cert", "/etc/legba/cert.pem");
    check_bad(c, "tls_cert", "tls_key");
    assert_int_equal(config_check(c, NULL), -EINVAL);
    set_ok(c, "tls_key", "/etc/legba/key.pem");
    assert_int_equal(config_check(c, NULL), 0);
    set_ok(c, "tls_cert", "");
    check_bad(c, "tls_cert", "tls_key");
    set_ok(c, "tls_key", "");
    assert_int_equal(config_check(c, NULL), 0);
}

/* An access URL built on 0.0.0.0 would send the browser nowhere. */
static void test_check_wildcard_listen(void **state)
{
    Config *c = *state;
    set_ok(c, "listen", "0.0.0.0:8080");
    check_bad(c, "public_url", "0.0.0.0");
    set_ok(c, "public_url", "https://legba.example.com");
    char *err = NULL;
    assert_int_equal(config_check(c, &err), 0);
    assert_null(err);

    set_ok(c, "public_url", "");
    set_ok(c, "listen", "[::]:8080");
    check_bad(c, "public_url", NULL);
    set_ok(c, "listen", "10.0.0.1:8080");
    assert_int_equal(config_check(c, NULL), 0);
}

static void test_load_console_keys(void **state)
{
    Config *c = *state;
    static const char text[] = "novnc_dir = /srv/novnc\n"
                               "tls_cert = /etc/legba/cert.pem\n"
                               "tls_key = /etc/legba/key.pem\n"
                               "console_origins = https://A.example  https://b.example:8443\n"
                               "console_max_viewers = 2\n"
                               "public_url = https://{instance}.legba.example\n";
    char *err = NULL;
    assert_int_equal(load_text(c, text, sizeof(text) - 1, NULL, &err), 0);
    assert_null(err);
    assert_string_equal(c->novnc_dir, "/srv/novnc");
    assert_string_equal(c->tls_cert, "/etc/legba/cert.pem");
    assert_string_equal(c->tls_key, "/etc/legba/key.pem");
    assert_string_equal(c->console_origins, "https://a.example https://b.example:8443");
    assert_int_equal(c->console_max_viewers, 2);
    assert_string_equal(c->public_url, "https://{instance}.legba.example");
    assert_int_equal(config_check(c, NULL), 0);

    load_bad(c, "console_max_viewers = 3\nconsole_max_viewers = 65\n", 2, "console_max_viewers");
    load_bad(c, "tls_key = key.pem\n", 1, "tls_key");
    /* The failed files changed nothing. */
    assert_int_equal(c->console_max_viewers, 2);
    assert_string_equal(c->tls_key, "/etc/legba/key.pem");
}

/* Lifetimes: a create's default and maximum, the idle limit, how long an ended one shows. */
static void test_lifetime_defaults(void **state)
{
    Config *c = *state;
    assert_int_equal(c->instance_timeout, 3600);
    assert_int_equal(c->instance_timeout_max, 86400);
    assert_int_equal(c->idle_timeout, 0);
    assert_int_equal(c->terminated_retention, 3600);
    assert_int_equal(config_check(c, NULL), 0);
}

static void test_lifetime_bounds(void **state)
{
    Config *c = *state;
    static const struct {
        const char *key;
        size_t offset;
        unsigned min, max;
        const char *min_text, *max_text, *over_text, *accepted;
    } keys[] = {
        {"instance_timeout", offsetof(Config, instance_timeout), 1, 31536000, "1", "31536000",
         "31536001", "from 1 to 31536000"},
        {"instance_timeout_max", offsetof(Config, instance_timeout_max), 1, 31536000, "1",
         "31536000", "31536001", "from 1 to 31536000"},
        {"idle_timeout", offsetof(Config, idle_timeout), 0, 31536000, "0", "31536000", "31536001",
         "from 0 (never) to 31536000"},
        {"terminated_retention", offsetof(Config, terminated_retention), 0, 2592000, "0", "2592000",
         "2592001", "from 0 to 2592000"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        unsigned *field = (unsigned *)((char *)c + keys[i].offset);
        set_ok(c, keys[i].key, keys[i].min_text);
        assert_int_equal(*field, keys[i].min);
        set_ok(c, keys[i].key, keys[i].max_text);
        assert_int_equal(*field, keys[i].max);
        set_ok(c, keys[i].key, "17");
        assert_int_equal(*field, 17);

        if (keys[i].min == 1)
            set_bad(c, keys[i].key, "0", keys[i].accepted);
        set_bad(c, keys[i].key, keys[i].over_text, keys[i].accepted);
        set_bad(c, keys[i].key, "4294967297", keys[i].accepted); /* wraps to 1 in 32 bits */
        set_bad(c, keys[i].key, "18446744073709551617", keys[i].accepted);
        set_bad(c, keys[i].key, "-1", keys[i].accepted);
        set_bad(c, keys[i].key, "+5", keys[i].accepted);
        set_bad(c, keys[i].key, "1.5", keys[i].accepted);
        set_bad(c, keys[i].key, "1h", keys[i].accepted);
        set_bad(c, keys[i].key, "", keys[i].accepted);
        set_bad(c, keys[i].key, "ten", keys[i].accepted);
        assert_int_equal(*field, 17);
    }
}

/* A default lifetime longer than the longest one allowed is a contradiction: refused. */
static void test_check_instance_timeout_max(void **state)
{
    Config *c = *state;
    set_ok(c, "instance_timeout_max", "600");
    set_ok(c, "instance_timeout", "600");
    assert_int_equal(config_check(c, NULL), 0);
    set_ok(c, "instance_timeout", "601");
    check_bad(c, "instance_timeout (601)", "instance_timeout_max (600)");
    set_ok(c, "instance_timeout", "1");
    assert_int_equal(config_check(c, NULL), 0);
    /* Lowering only the maximum below the default (3600) is the same contradiction. */
    set_ok(c, "instance_timeout", "3600");
    set_ok(c, "instance_timeout_max", "60");
    check_bad(c, "instance_timeout", "instance_timeout_max");
    /* The others have no such tie: zero idle and zero retention are fine. */
    set_ok(c, "instance_timeout_max", "31536000");
    set_ok(c, "idle_timeout", "0");
    set_ok(c, "terminated_retention", "0");
    assert_int_equal(config_check(c, NULL), 0);
}

static void test_load_lifetime_keys(void **state)
{
    Config *c = *state;
    static const char text[] = "instance_timeout = 120\n"
                               "instance_timeout_max = 7200\n"
                               "idle_timeout = 300\n"
                               "terminated_retention = 3\n";
    char *err = NULL;
    assert_int_equal(load_text(c, text, sizeof(text) - 1, NULL, &err), 0);
    assert_null(err);
    assert_int_equal(c->instance_timeout, 120);
    assert_int_equal(c->instance_timeout_max, 7200);
    assert_int_equal(c->idle_timeout, 300);
    assert_int_equal(c->terminated_retention, 3);
    assert_int_equal(config_check(c, NULL), 0);

    load_bad(c, "idle_timeout = 5\nterminated_retention = 2592001\n", 2, "terminated_retention");
    load_bad(c, "instance_timeout = 0\n", 1, "from 1 to 31536000");
    /* The failed files changed nothing. */
    assert_int_equal(c->idle_timeout, 300);
    assert_int_equal(c->instance_timeout, 120);
}

/* allow_unsafe_host: off unless a file or flag says yes; nothing but yes and no. */
static void test_allow_unsafe_host(void **state)
{
    Config *c = *state;
    assert_false(c->allow_unsafe_host);
    set_ok(c, "allow_unsafe_host", "yes");
    assert_true(c->allow_unsafe_host);
    set_ok(c, "allow_unsafe_host", "no");
    assert_false(c->allow_unsafe_host);
    set_bad(c, "allow_unsafe_host", "true", "yes or no");
    set_bad(c, "allow_unsafe_host", "YES", "yes or no");
    set_bad(c, "allow_unsafe_host", "1", "yes or no");
    set_bad(c, "allow_unsafe_host", "", "yes or no");

    char *err = NULL;
    static const char text[] = "allow_unsafe_host = yes\n";
    assert_int_equal(load_text(c, text, sizeof(text) - 1, NULL, &err), 0);
    assert_null(err);
    assert_true(c->allow_unsafe_host);
    load_bad(c, "allow_unsafe_host = no\nallow_unsafe_host = maybe\n", 2, "yes or no");
    /* The failed file changed nothing. */
    assert_true(c->allow_unsafe_host);
}

/* network, egress_destinations and egress_allow: a closed set of words, and numeric endpoints. */
static void test_network_keys(void **state)
{
    Config *c = *state;
    assert_string_equal(c->network, "none");
    assert_string_equal(c->egress_destinations, "public");
    assert_string_equal(c->egress_allow, "");
    set_ok(c, "network", "egress");
    assert_string_equal(c->network, "egress");
    set_bad(c, "network", "bridge", "none or egress");
    set_bad(c, "network", "", "none or egress");
    set_bad(c, "network", "Egress", "none or egress");
    set_ok(c, "egress_destinations", "allowed");
    assert_string_equal(c->egress_destinations, "allowed");
    set_bad(c, "egress_destinations", "all", "public or allowed");

    set_ok(c, "egress_allow", "  127.0.0.1:8080   192.168.1.53:53 ");
    assert_string_equal(c->egress_allow, "127.0.0.1:8080 192.168.1.53:53");
    set_ok(c, "egress_allow", "");
    assert_string_equal(c->egress_allow, "");
    static const char *const bad[] = {"127.0.0.1",  "127.0.0.1:0",   "localhost:80",
                                      "[::1]:80",   "1.2.3.4:65536", "1.2.3.4:80,5.6.7.8:80",
                                      "1.2.3.4:+80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        set_bad(c, "egress_allow", bad[i], "IPV4:PORT");
    char many[512] = "";
    for (int i = 0; i <= CONFIG_ENDPOINTS_MAX; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "10.0.0.%d:80 ", i + 1);
    set_bad(c, "egress_allow", many, "up to 16");
}

/* pool: IMAGE:SIZE:COUNT[:standby] entries, each image and size once; pool_boots 1..16. */
static void test_pool_keys(void **state)
{
    Config *c = *state;
    assert_string_equal(c->pool, "");
    assert_int_equal(c->pool_boots, 1);
    set_ok(c, "pool", "debian-12-chromium:small:2  tiny:medium:1:standby");
    const char *cursor = c->pool;
    ConfigPoolEntry e;
    assert_int_equal(config_pool_next(&cursor, &e), 1);
    assert_string_equal(e.image, "debian-12-chromium");
    assert_string_equal(e.size, "small");
    assert_int_equal(e.count, 2);
    assert_false(e.standby);
    assert_int_equal(config_pool_next(&cursor, &e), 1);
    assert_string_equal(e.image, "tiny");
    assert_string_equal(e.size, "medium");
    assert_int_equal(e.count, 1);
    assert_true(e.standby);
    assert_int_equal(config_pool_next(&cursor, &e), 0);
    set_ok(c, "pool", "");
    static const char *const bad[] = {
        "tiny:small",
        "tiny:small:0",
        "tiny:small:65",
        "tiny:small:2:warm",
        "tiny:small:2:standby:x",
        "Tiny:small:1",
        "tiny:sm/all:1",
        ":small:1",
        "tiny::1",
        "tiny:small:1 tiny:small:2:standby",
        "tiny:small:-1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        set_bad(c, "pool", bad[i], "IMAGE:SIZE:COUNT");
    set_ok(c, "pool_boots", "16");
    set_bad(c, "pool_boots", "0", "1 to 16");
    set_bad(c, "pool_boots", "17", "1 to 16");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_accepts_null_and_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_libvirt_uri, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_public_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsigned_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_value_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_line_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_nul_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_file_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_console_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_novnc_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_console_origins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_console_max_viewers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_public_url_instance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_tls_pair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_wildcard_listen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_console_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifetime_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifetime_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_instance_timeout_max, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_lifetime_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allow_unsafe_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_network_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
