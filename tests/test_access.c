/*
 * access: the console's secret, its hash, the URLs and cookie built from
 * the base, and which Origin headers may open a console. Pure string work;
 * the hash is checked against gnutls directly, not through auth.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <gnutls/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "util.h"

#define INST "7e57a1b2-c3d4-4e5f-8a9b-0c1d2e3f4a5b"
#define SECRET "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

/* The lowercase hex SHA-256 of text, computed without legba's own helpers. */
static void sha256_hex(const char *text, char ret[STORE_CONSOLE_HASH_LEN])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t digest[32];
    assert_int_equal(gnutls_hash_fast(GNUTLS_DIG_SHA256, text, strlen(text), digest), 0);
    for (size_t i = 0; i < sizeof(digest); i++) {
        ret[2 * i] = digits[digest[i] >> 4];
        ret[2 * i + 1] = digits[digest[i] & 0xf];
    }
    ret[2 * sizeof(digest)] = '\0';
}

static bool is_lower_hex(const char *s, size_t len)
{
    return strlen(s) == len && strspn(s, "0123456789abcdef") == len;
}

/* --- the secret ----------------------------------------------------------------------------- */

static void test_secret_generate(void **state)
{
    char secret[ACCESS_SECRET_LEN + 1], hash[STORE_CONSOLE_HASH_LEN];
    char expected[STORE_CONSOLE_HASH_LEN];
    assert_int_equal(ACCESS_SECRET_LEN, 64);
    assert_int_equal(STORE_CONSOLE_HASH_LEN, 65);

    assert_int_equal(access_secret_generate(secret, hash), 0);
    assert_true(is_lower_hex(secret, 64));
    assert_true(is_lower_hex(hash, 64));
    /* What is stored is the SHA-256 of the secret's text, never the secret. */
    sha256_hex(secret, expected);
    assert_string_equal(hash, expected);
    assert_string_not_equal(hash, secret);

    char secret2[ACCESS_SECRET_LEN + 1], hash2[STORE_CONSOLE_HASH_LEN];
    assert_int_equal(access_secret_generate(secret2, hash2), 0);
    assert_string_not_equal(secret, secret2);
    assert_string_not_equal(hash, hash2);
}

static void test_secret_matches(void **state)
{
    char secret[ACCESS_SECRET_LEN + 1], hash[STORE_CONSOLE_HASH_LEN];
    assert_int_equal(access_secret_generate(secret, hash), 0);
    assert_true(access_secret_matches(secret, hash));

    /* One character off, at either end and in the middle. */
    static const size_t positions[] = {0, 31, 63};
    for (size_t i = 0; i < ARRAY_SIZE(positions); i++) {
        char wrong[ACCESS_SECRET_LEN + 1];
        memcpy(wrong, secret, sizeof(wrong));
        wrong[positions[i]] = wrong[positions[i]] == 'a' ? 'b' : 'a';
        assert_false(access_secret_matches(wrong, hash));
    }

    /* The same value in uppercase is not a secret of ours. */
    char upper[ACCESS_SECRET_LEN + 1];
    memcpy(upper, secret, sizeof(upper));
    bool changed = false;
    for (char *p = upper; *p; p++) {
        if (*p >= 'a' && *p <= 'f') {
            *p = (char)(*p - 'a' + 'A');
            changed = true;
        }
    }
    if (!changed) /* all digits: vanishingly unlikely, but keep the case meaningful */
        upper[0] = 'A';
    assert_false(access_secret_matches(upper, hash));

    /* Lengths either side of 64, whatever their hash. */
    char shorter[ACCESS_SECRET_LEN], longer[ACCESS_SECRET_LEN + 2];
    char short_hash[STORE_CONSOLE_HASH_LEN], long_hash[STORE_CONSOLE_HASH_LEN];
    memcpy(shorter, secret, ACCESS_SECRET_LEN - 1);
    shorter[ACCESS_SECRET_LEN - 1] = '\0';
    memcpy(longer, secret, ACCESS_SECRET_LEN);
    longer[ACCESS_SECRET_LEN] = '0';
    longer[ACCESS_SECRET_LEN + 1] = '\0';
    sha256_hex(shorter, short_hash);
    sha256_hex(longer, long_hash);
    assert_false(access_secret_matches(shorter, hash));
    assert_false(access_secret_matches(longer, hash));
    assert_false(access_secret_matches(shorter, short_hash));
    assert_false(access_secret_matches(longer, long_hash));

    /* Non-hex of the right length, even with its own hash stored. */
    char nonhex[ACCESS_SECRET_LEN + 1], nonhex_hash[STORE_CONSOLE_HASH_LEN];
    memset(nonhex, 'g', ACCESS_SECRET_LEN);
    nonhex[ACCESS_SECRET_LEN] = '\0';
    sha256_hex(nonhex, nonhex_hash);
    assert_false(access_secret_matches(nonhex, nonhex_hash));

    assert_false(access_secret_matches(NULL, hash));
    assert_false(access_secret_matches("", hash));
    /* No secret issued: nothing opens the console, not even an empty key. */
    assert_false(access_secret_matches(secret, ""));
    assert_false(access_secret_matches("", ""));
    /* A stored hash of the wrong length matches nothing. */
    char cut[STORE_CONSOLE_HASH_LEN];
    memcpy(cut, hash, sizeof(cut));
    cut[STORE_CONSOLE_HASH_LEN - 2] = '\0';
    assert_false(access_secret_matches(secret, cut));
}

/* --- URLs ----------------------------------------------------------------------------------- */

static void test_base(void **state)
{
    char *base = NULL;
    assert_int_equal(access_base("https://{instance}.vm.example", INST, &base), 0);
    assert_string_equal(base, "https://" INST ".vm.example");
    free(base);

    assert_int_equal(access_base("http://127.0.0.1:8080", INST, &base), 0);
    assert_string_equal(base, "http://127.0.0.1:8080");
    free(base);

    assert_int_equal(access_base("https://h.example/{instance}/x", INST, &base), 0);
    assert_string_equal(base, "https://h.example/" INST "/x");
    free(base);

    /* A near miss of the placeholder is left alone. */
    assert_int_equal(access_base("https://{instanc}.example", INST, &base), 0);
    assert_string_equal(base, "https://{instanc}.example");
    free(base);
}

static void test_url(void **state)
{
    char *url = NULL;
    assert_int_equal(access_url("https://h.example", INST, SECRET, &url), 0);
    assert_string_equal(url, "https://h.example/console/" INST "/#key=" SECRET);
    free(url);

    /* Without the secret (a GET of the instance): no fragment at all. */
    assert_int_equal(access_url("https://h.example", INST, NULL, &url), 0);
    assert_string_equal(url, "https://h.example/console/" INST "/");
    free(url);

    assert_int_equal(access_url("http://10.0.0.1:8080/prefix", INST, NULL, &url), 0);
    assert_string_equal(url, "http://10.0.0.1:8080/prefix/console/" INST "/");
    free(url);
}

static void test_path(void **state)
{
    char *path = NULL;
    assert_int_equal(access_path("https://h.example", INST, &path), 0);
    assert_string_equal(path, "/console/" INST "/");
    free(path);

    assert_int_equal(access_path("https://h.example/prefix", INST, &path), 0);
    assert_string_equal(path, "/prefix/console/" INST "/");
    free(path);

    assert_int_equal(access_path("http://127.0.0.1:8080/a/b", INST, &path), 0);
    assert_string_equal(path, "/a/b/console/" INST "/");
    free(path);

    assert_int_equal(access_path("http://[::1]:8080", INST, &path), 0);
    assert_string_equal(path, "/console/" INST "/");
    free(path);

    /* Not an http(s) base: refused, output untouched. */
    path = (char *)0x1;
    assert_int_equal(access_path("ftp://h.example", INST, &path), -EINVAL);
    assert_int_equal(access_path("http://", INST, &path), -EINVAL);
    assert_ptr_equal(path, (char *)0x1);
}

/* --- origins -------------------------------------------------------------------------------- */

static void test_origin(void **state)
{
    static const struct {
        const char *url, *origin;
    } cases[] = {
        {"http://h.example", "http://h.example"},
        {"http://h.example:80", "http://h.example"},
        {"https://h.example:443", "https://h.example"},
        {"http://h.example:443", "http://h.example:443"},
        {"https://h.example:80", "https://h.example:80"},
        {"http://h.example:8080", "http://h.example:8080"},
        {"https://h.example:8443/prefix/x?q#f", "https://h.example:8443"},
        {"https://H.Example.COM/Path", "https://h.example.com"},
        {"http://h.example/", "http://h.example"},
        {"http://h.example?x", "http://h.example"},
        {"http://10.0.0.1:8080/console", "http://10.0.0.1:8080"},
        {"http://[::1]:8080", "http://[::1]:8080"},
        {"http://[::1]:80/", "http://[::1]"},
        {"https://[::1]", "https://[::1]"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char *origin = NULL;
        int r = access_origin(cases[i].url, &origin);
        if (r != 0 || strcmp(origin, cases[i].origin) != 0)
            fail_msg("access_origin(%s) = %d '%s', expected '%s'", cases[i].url, r,
                     origin ? origin : "(null)", cases[i].origin);
        free(origin);
    }

    static const char *const bad[] = {
        "ftp://x",          "http://",   "https://", "http:///path",
        "https:/h.example", "h.example", "",         "ws://h.example",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        char *origin = (char *)0x1;
        if (access_origin(bad[i], &origin) != -EINVAL)
            fail_msg("access_origin(%s) accepted", bad[i]);
        assert_ptr_equal(origin, (char *)0x1);
    }
}

static void test_origin_allowed(void **state)
{
    const char *own = "https://h.example";

    assert_true(access_origin_allowed("https://h.example", own, ""));
    assert_true(access_origin_allowed("HTTPS://H.EXAMPLE", own, ""));
    /* Another scheme or port is another origin. */
    assert_false(access_origin_allowed("http://h.example", own, ""));
    assert_false(access_origin_allowed("https://h.example:8443", own, ""));
    assert_false(access_origin_allowed("https://h.example/", own, ""));

    const char *list = "https://a.example http://b.example:8080 https://c.example";
    assert_true(access_origin_allowed("https://a.example", own, list));
    assert_true(access_origin_allowed("http://b.example:8080", own, list));
    assert_true(access_origin_allowed("https://c.example", own, list));
    assert_true(access_origin_allowed("https://C.Example", own, list));
    assert_true(access_origin_allowed("https://h.example", own, list));
    assert_false(access_origin_allowed("http://b.example", own, list));
    assert_false(access_origin_allowed("https://d.example", own, list));

    /* Never a prefix or an extension of an allowed origin. */
    assert_false(access_origin_allowed("https://a.example.evil.com", own, "https://a.example"));
    assert_false(access_origin_allowed("https://a.exampl", own, "https://a.example"));
    assert_false(access_origin_allowed("https://a.example:1", own, "https://a.example"));
    assert_false(access_origin_allowed("https://h.example.evil.com", own, ""));
    assert_false(access_origin_allowed("https://h.exampl", own, ""));
    assert_false(access_origin_allowed("https://a.example https://x", own, "https://a.example"));
    /* The last entry of a list is matched whole too. */
    assert_false(access_origin_allowed("https://c.exam", own, list));
    assert_false(access_origin_allowed("https://c.example.evil.com", own, list));

    /* Absent, empty, and the opaque origin of sandboxed frames and file: pages. */
    assert_false(access_origin_allowed(NULL, own, list));
    assert_false(access_origin_allowed("", own, list));
    assert_false(access_origin_allowed("", own, ""));
    assert_false(access_origin_allowed("null", own, list));
    assert_false(access_origin_allowed(" ", own, list));
}

/* --- the cookie ----------------------------------------------------------------------------- */

/* Whether the Set-Cookie value has this attribute, as a whole "; "-separated item. */
static bool has_attribute(const char *cookie, const char *attribute)
{
    size_t n = strlen(attribute);
    for (const char *p = strstr(cookie, "; "); p; p = strstr(p + 2, "; "))
        if (strncmp(p + 2, attribute, n) == 0 && (p[2 + n] == ';' || p[2 + n] == '\0'))
            return true;
    return false;
}

static void test_cookie(void **state)
{
    const char *secret = SECRET;
    char *cookie = NULL;

    assert_int_equal(access_cookie("http://127.0.0.1:8080", INST, secret, &cookie), 0);
    assert_true(strncmp(cookie, "legba_console=", 14) == 0);
    assert_true(strncmp(cookie + 14, secret, 64) == 0);
    assert_int_equal(cookie[14 + 64], ';');
    assert_true(has_attribute(cookie, "HttpOnly"));
    assert_true(has_attribute(cookie, "SameSite=Strict"));
    assert_true(has_attribute(cookie, "Path=/console/" INST "/"));
    assert_false(has_attribute(cookie, "Secure"));
    assert_null(strstr(cookie, "Secure"));
    /* A session cookie: it never outlives the browser, and no Domain widens it. */
    assert_null(strstr(cookie, "Expires"));
    assert_null(strstr(cookie, "Max-Age"));
    assert_null(strstr(cookie, "Domain"));
    free(cookie);

    assert_int_equal(access_cookie("https://h.example/prefix", INST, secret, &cookie), 0);
    assert_true(has_attribute(cookie, "HttpOnly"));
    assert_true(has_attribute(cookie, "SameSite=Strict"));
    assert_true(has_attribute(cookie, "Path=/prefix/console/" INST "/"));
    assert_true(has_attribute(cookie, "Secure"));
    free(cookie);

    cookie = (char *)0x1;
    assert_int_equal(access_cookie("ftp://h.example", INST, secret, &cookie), -EINVAL);
    assert_ptr_equal(cookie, (char *)0x1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_generate),
        cmocka_unit_test(test_secret_matches),
        cmocka_unit_test(test_base),
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_origin),
        cmocka_unit_test(test_origin_allowed),
        cmocka_unit_test(test_cookie),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
