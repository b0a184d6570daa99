/* Tokens, their hashes, the Bearer header, and the helpers they rest on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "auth.h"
#include "util.h"
#include "uuid.h"

static void test_token_shape_and_hash(void **state)
{
    char token[AUTH_TOKEN_STR_LEN], other[AUTH_TOKEN_STR_LEN];
    uint8_t hash[AUTH_HASH_LEN], again[AUTH_HASH_LEN], other_hash[AUTH_HASH_LEN];

    assert_int_equal(auth_token_generate(token, hash), 0);
    assert_int_equal(strlen(token), 4 + 64); /* 256 bits in hex after "lgb_" */
    assert_memory_equal(token, "lgb_", 4);
    assert_int_equal(auth_token_hash(token, strlen(token), again), 0);
    assert_memory_equal(hash, again, AUTH_HASH_LEN);

    assert_int_equal(auth_token_generate(other, other_hash), 0);
    assert_string_not_equal(token, other);
    assert_memory_not_equal(hash, other_hash, AUTH_HASH_LEN);
}

static void test_sha256_known_answer(void **state)
{
    /* FIPS 180-2 example: SHA-256("abc"). */
    uint8_t hash[AUTH_HASH_LEN];
    char hex[2 * AUTH_HASH_LEN + 1];
    assert_int_equal(auth_token_hash("abc", 3, hash), 0);
    util_hex_encode(hash, sizeof(hash), hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_bearer_parse(void **state)
{
    char token[AUTH_TOKEN_STR_LEN], header[200];
    uint8_t hash[AUTH_HASH_LEN];
    const char *got;
    size_t len;
    assert_int_equal(auth_token_generate(token, hash), 0);

    snprintf(header, sizeof(header), "Bearer %s", token);
    assert_int_equal(auth_bearer_parse(header, &got, &len), 0);
    assert_int_equal(len, strlen(token));
    assert_memory_equal(got, token, len);

    snprintf(header, sizeof(header), "bearer   %s  ", token);
    assert_int_equal(auth_bearer_parse(header, &got, &len), 0);
    assert_memory_equal(got, token, len);

    assert_int_equal(auth_bearer_parse(NULL, &got, &len), -22);
    assert_int_equal(auth_bearer_parse("", &got, &len), -22);
    assert_int_equal(auth_bearer_parse("Bearer", &got, &len), -22);
    assert_int_equal(auth_bearer_parse("Bearer ", &got, &len), -22);
    snprintf(header, sizeof(header), "Basic %s", token);
    assert_int_equal(auth_bearer_parse(header, &got, &len), -22);
    snprintf(header, sizeof(header), "Bearer %sa", token);
    assert_int_equal(auth_bearer_parse(header, &got, &len), -22);
    snprintf(header, sizeof(header), "Bearer %.*s", (int)strlen(token) - 1, token);
    assert_int_equal(auth_bearer_parse(header, &got, &len), -22);
    snprintf(header, sizeof(header), "Bearer xyz_%s", token + 4);
    assert_int_equal(auth_bearer_parse(header, &got, &len), -22);
    /* Uppercase hex is not a token we issued. */
    snprintf(header, sizeof(header), "Bearer %s", token);
    header[strlen("Bearer lgb_")] = 'A';
    assert_int_equal(auth_bearer_parse(header, &got, &len), -22);

    char huge[AUTH_HEADER_MAX + 100];
    memset(huge, 'a', sizeof(huge) - 1);
    memcpy(huge, "Bearer ", 7);
    huge[sizeof(huge) - 1] = '\0';
    assert_int_equal(auth_bearer_parse(huge, &got, &len), -22);
}

static void test_hash_equal(void **state)
{
    uint8_t a[AUTH_HASH_LEN] = {0}, b[AUTH_HASH_LEN] = {0};
    assert_true(auth_hash_equal(a, b));
    b[AUTH_HASH_LEN - 1] = 1;
    assert_false(auth_hash_equal(a, b));
    b[AUTH_HASH_LEN - 1] = 0;
    b[0] = 0x80;
    assert_false(auth_hash_equal(a, b));
}

static void test_uuid(void **state)
{
    char u[UUID_STR_LEN], v[UUID_STR_LEN], n[UUID_STR_LEN];
    assert_int_equal(uuid_generate(u), 0);
    assert_int_equal(uuid_generate(v), 0);
    assert_string_not_equal(u, v);
    assert_int_equal(strlen(u), 36);
    assert_int_equal(u[14], '4');
    assert_true(strchr("89ab", u[19]) != NULL);
    assert_true(uuid_is_valid(u));

    assert_int_equal(uuid_normalize("ABCDEF01-2345-6789-ABCD-EF0123456789", n), 0);
    assert_string_equal(n, "abcdef01-2345-6789-abcd-ef0123456789");
    assert_false(uuid_is_valid(""));
    assert_false(uuid_is_valid("abcdef01-2345-6789-abcd-ef012345678"));
    assert_false(uuid_is_valid("abcdef01-2345-6789-abcd-ef01234567890"));
    assert_false(uuid_is_valid("abcdef0102345-6789-abcd-ef0123456789"));
    assert_false(uuid_is_valid("abcdef01-2345-6789-abcd-ef012345678g"));
    assert_false(uuid_is_valid("../../../../../../../../etc/passwd...."));
}

static void test_hex_and_time(void **state)
{
    uint8_t bytes[3] = {0x00, 0xab, 0xff}, back[3];
    char hex[7];
    util_hex_encode(bytes, 3, hex);
    assert_string_equal(hex, "00abff");
    assert_int_equal(util_hex_decode("00ABff", back, 3), 0);
    assert_memory_equal(bytes, back, 3);
    assert_int_equal(util_hex_decode("00abf", back, 3), -22);
    assert_int_equal(util_hex_decode("00abfg", back, 3), -22);

    char iso[UTIL_ISO8601_LEN];
    util_format_iso8601(1736510400, iso);
    assert_string_equal(iso, "2025-01-10T12:00:00Z");
    int64_t t;
    assert_int_equal(util_parse_iso8601("2025-01-10T12:00:00Z", &t), 0);
    assert_int_equal(t, 1736510400);
    assert_int_equal(util_parse_iso8601("2025-01-10 12:00:00", &t), -22);
}

/* Untrusted text for a log line: printable ASCII only, cut at max bytes with "...". */
static void test_quote_untrusted(void **state)
{
    char out[8 + 4];
    util_quote_untrusted("", 8, out);
    assert_string_equal(out, "");
    util_quote_untrusted("12345678", 8, out);
    assert_string_equal(out, "12345678");
    util_quote_untrusted("123456789", 8, out);
    assert_string_equal(out, "12345678...");
    util_quote_untrusted("a\nb\r\x1b[1m\x7f\xc3\xa9", 8, out);
    assert_string_equal(out, "a?b??[1m...");
    util_quote_untrusted("\"x\"\t", 8, out);
    assert_string_equal(out, "\"x\"?");
}

static void test_spawn_no_shell(void **state)
{
    char *out = NULL;
    /* A shell would expand this; a plain exec passes it through untouched. */
    char *argv[] = {"echo", "$(id) ; rm -rf /nonexistent", NULL};
    assert_int_equal(util_spawn(argv, &out), 0);
    assert_string_equal(out, "$(id) ; rm -rf /nonexistent\n");
    free(out);
    char *fail[] = {"false", NULL};
    assert_int_equal(util_spawn(fail, NULL), 1);
    char *missing[] = {"/nonexistent/program", NULL};
    assert_true(util_spawn(missing, NULL) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_shape_and_hash),
        cmocka_unit_test(test_sha256_known_answer),
        cmocka_unit_test(test_bearer_parse),
        cmocka_unit_test(test_hash_equal),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_hex_and_time),
        cmocka_unit_test(test_quote_untrusted),
        cmocka_unit_test(test_spawn_no_shell),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
