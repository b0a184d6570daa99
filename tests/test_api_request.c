/* JSON request bodies of the Instances API: every way a body can be wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_request.h"
#include "http.h"

static int parse(const char *body, ApiCreateRequest *req, ApiError *err)
{
    return api_create_request_parse(body, strlen(body), req, err);
}

static void test_valid(void **state)
{
    ApiCreateRequest req = {0};
    ApiError err;
    assert_int_equal(parse("{\"image\":\"tiny\",\"size\":\"small\"}", &req, &err), 0);
    assert_string_equal(req.image, "tiny");
    assert_string_equal(req.size, "small");
    api_create_request_done(&req);
    assert_null(req.image);

    assert_int_equal(parse("  \n{ \"size\" : \"large\" , \"image\" : \"x\" }\r\n", &req, &err), 0);
    assert_string_equal(req.size, "large");
    api_create_request_done(&req);
}

static void expect_error(const char *body, size_t len, const char *code)
{
    ApiCreateRequest req = {0};
    ApiError err = {0};
    assert_int_equal(api_create_request_parse(body, len, &req, &err), -22);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.code, code);
    assert_true(strlen(err.message) > 0);
    assert_null(req.image);
    assert_null(req.size);
}

#define EXPECT_ERROR(body, code) expect_error(body, strlen(body), code)

static void test_malformed(void **state)
{
    EXPECT_ERROR("", "invalid_json");
    EXPECT_ERROR("{", "invalid_json");
    EXPECT_ERROR("{\"image\":\"tiny\",\"size\":\"small\"", "invalid_json");
    EXPECT_ERROR("{\"image\":\"tiny\",\"size\":\"small\"} {}", "invalid_json");
    EXPECT_ERROR("{\"image\":\"tiny\",\"size\":\"small\"}x", "invalid_json");
    EXPECT_ERROR("nonsense", "invalid_json");
    EXPECT_ERROR("[]", "invalid_json");
    EXPECT_ERROR("\"image\"", "invalid_json");
    EXPECT_ERROR("42", "invalid_json");
    EXPECT_ERROR("null", "invalid_json");
    expect_error("{\"image\":\"ti\0ny\",\"size\":\"small\"}", 31, "invalid_json");
    /* An escaped NUL would cut the string short: "image\u0000x" read as the known "image". */
    EXPECT_ERROR("{\"image\\u0000x\":\"tiny\",\"size\":\"small\"}", "invalid_json");
    EXPECT_ERROR("{\"image\":\"tiny\",\"size\":\"small\\u0000-and-more\"}", "invalid_json");
    EXPECT_ERROR("{\"image\":\"tiny\",\"size\":\"small\",\"start_url\":\"https://a.example/"
                 "\\u0000x\"}",
                 "invalid_json");
    /* An escaped backslash before "u0000" is not an escaped NUL. */
    ApiCreateRequest req = {0};
    ApiError err;
    assert_int_equal(parse("{\"image\":\"a\\\\u0000\",\"size\":\"small\"}", &req, &err), 0);
    assert_string_equal(req.image, "a\\u0000");
    api_create_request_done(&req);
}

static void test_duplicate_field(void **state)
{
    EXPECT_ERROR("{\"image\":\"a\",\"image\":\"b\",\"size\":\"small\"}", "invalid_json");
}

static void test_unknown_field(void **state)
{
    EXPECT_ERROR("{\"image\":\"tiny\",\"size\":\"small\",\"cpus\":64}", "unknown_field");
    EXPECT_ERROR("{\"Image\":\"tiny\",\"size\":\"small\"}", "unknown_field");
}

static void test_missing_field(void **state)
{
    EXPECT_ERROR("{}", "missing_field");
    EXPECT_ERROR("{\"image\":\"tiny\"}", "missing_field");
    EXPECT_ERROR("{\"size\":\"small\"}", "missing_field");
}

static void test_wrong_types(void **state)
{
    EXPECT_ERROR("{\"image\":1,\"size\":\"small\"}", "invalid_type");
    EXPECT_ERROR("{\"image\":\"tiny\",\"size\":[\"small\"]}", "invalid_type");
    EXPECT_ERROR("{\"image\":null,\"size\":\"small\"}", "invalid_type");
    EXPECT_ERROR("{\"image\":{\"name\":\"tiny\"},\"size\":\"small\"}", "invalid_type");
    EXPECT_ERROR("{\"image\":\"tiny\",\"size\":true}", "invalid_type");
}

static void test_deep_nesting_is_refused(void **state)
{
    /* Far deeper than any valid body; must be an error, not a stack overflow. */
    size_t depth = 50000;
    char *body = malloc(2 * depth + 1);
    assert_non_null(body);
    memset(body, '[', depth);
    memset(body + depth, ']', depth);
    body[2 * depth] = '\0';
    expect_error(body, 2 * depth, "invalid_json");
    free(body);
}

static void test_start_url(void **state)
{
    ApiCreateRequest req = {0};
    ApiError err;
    assert_int_equal(
        parse("{\"image\":\"x\",\"size\":\"small\",\"start_url\":\"https://example.org/a?b=c#d\"}",
              &req, &err),
        0);
    assert_string_equal(req.start_url, "https://example.org/a?b=c#d");
    api_create_request_done(&req);
    assert_null(req.start_url);

    /* Absent and null both mean the image's own page. */
    assert_int_equal(parse("{\"image\":\"x\",\"size\":\"small\"}", &req, &err), 0);
    assert_null(req.start_url);
    api_create_request_done(&req);
    assert_int_equal(parse("{\"image\":\"x\",\"size\":\"small\",\"start_url\":null}", &req, &err),
                     0);
    assert_null(req.start_url);
    api_create_request_done(&req);

    EXPECT_ERROR("{\"image\":\"x\",\"size\":\"small\",\"start_url\":42}", "invalid_type");
    EXPECT_ERROR("{\"image\":\"x\",\"size\":\"small\",\"start_url\":\"file:///etc/passwd\"}",
                 "invalid_start_url");
}

/* A create body of image x, size small and this timeout_seconds value (JSON text). */
static void timeout_body(char *buf, size_t size, const char *value)
{
    snprintf(buf, size, "{\"image\":\"x\",\"size\":\"small\",\"timeout_seconds\":%s}", value);
}

static void test_timeout_seconds_accepted(void **state)
{
    static const struct {
        const char *value;
        long long want;
    } cases[] = {
        {"1", 1},
        {"3600", 3600},
        {"31536000", API_TIMEOUT_MAX},
        /* null means "not given", like an absent field: the host's default applies. */
        {"null", 0},
    };
    char body[128];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ApiCreateRequest req = {0};
        ApiError err = {0};
        timeout_body(body, sizeof(body), cases[i].value);
        if (parse(body, &req, &err) != 0)
            fail_msg("timeout_seconds %s refused: %s %s", cases[i].value, err.code, err.message);
        assert_int_equal(req.timeout_seconds, cases[i].want);
        assert_string_equal(req.image, "x");
        api_create_request_done(&req);
    }
    /* Absent: 0, which api.c reads as "the configured default". */
    ApiCreateRequest req = {0};
    ApiError err;
    assert_int_equal(parse("{\"image\":\"x\",\"size\":\"small\"}", &req, &err), 0);
    assert_int_equal(req.timeout_seconds, 0);
    api_create_request_done(&req);
    assert_int_equal(API_TIMEOUT_MAX, 365LL * 24 * 3600);
}

static void test_timeout_seconds_refused(void **state)
{
    static const struct {
        const char *value, *code;
    } cases[] = {
        {"0", "invalid_timeout"},
        {"-0", "invalid_timeout"},
        {"-1", "invalid_timeout"},
        {"1.5", "invalid_timeout"},
        {"0.999", "invalid_timeout"},
        {"31536001", "invalid_timeout"},
        {"9223372036854775807", "invalid_timeout"},
        {"18446744073709551617", "invalid_timeout"},
        {"1e300", "invalid_timeout"},
        {"-1e300", "invalid_timeout"},
        {"\"10\"", "invalid_type"},
        {"true", "invalid_type"},
        {"[10]", "invalid_type"},
        {"{\"s\":10}", "invalid_type"},
    };
    char body[128];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ApiCreateRequest req = {0};
        ApiError err = {0};
        timeout_body(body, sizeof(body), cases[i].value);
        int r = api_create_request_parse(body, strlen(body), &req, &err);
        if (r != -EINVAL || err.status != 400 || !err.code || strcmp(err.code, cases[i].code) != 0)
            fail_msg("timeout_seconds %s: %d %s, expected 400 %s", cases[i].value, r,
                     err.code ? err.code : "(none)", cases[i].code);
        assert_null(req.image);
        assert_int_equal(req.timeout_seconds, 0);
        /* The message says what would have been right. */
        const char *want = strcmp(cases[i].code, "invalid_timeout") == 0 ? "from 1 to 31536000"
                                                                         : "timeout_seconds";
        if (!strstr(err.message, want))
            fail_msg("timeout_seconds %s: message lacks '%s': %s", cases[i].value, want,
                     err.message);
    }
    EXPECT_ERROR("{\"image\":\"x\",\"size\":\"small\",\"timeout_seconds\":1,"
                 "\"timeout_seconds\":2}",
                 "invalid_json");
    EXPECT_ERROR("{\"image\":\"x\",\"size\":\"small\",\"timeout\":10}", "unknown_field");
}

/* Expects the extend body to be refused with code, leaving the output alone. */
static void extend_refused(const char *body, const char *code)
{
    long long seconds = -42;
    ApiError err = {0};
    int r = api_extend_request_parse(body, strlen(body), &seconds, &err);
    if (r != -EINVAL || err.status != 400 || !err.code || strcmp(err.code, code) != 0)
        fail_msg("extend body '%s': %d %s, expected 400 %s", body, r,
                 err.code ? err.code : "(none)", code);
    assert_true(strlen(err.message) > 0);
    assert_int_equal(seconds, -42);
}

/* The body of …/extend is exactly {"timeout_seconds": N}, nothing more, nothing less. */
static void test_extend_request(void **state)
{
    long long seconds = 0;
    ApiError err = {0};
    static const char one[] = "{\"timeout_seconds\":60}";
    assert_int_equal(api_extend_request_parse(one, strlen(one), &seconds, &err), 0);
    assert_int_equal(seconds, 60);
    static const char spaced[] = " \n{ \"timeout_seconds\" : 31536000 }\r\n";
    assert_int_equal(api_extend_request_parse(spaced, strlen(spaced), &seconds, &err), 0);
    assert_int_equal(seconds, API_TIMEOUT_MAX);
    static const char low[] = "{\"timeout_seconds\":1}";
    assert_int_equal(api_extend_request_parse(low, strlen(low), &seconds, &err), 0);
    assert_int_equal(seconds, 1);

    extend_refused("", "invalid_json");
    extend_refused("{", "invalid_json");
    extend_refused("[]", "invalid_json");
    extend_refused("60", "invalid_json");
    extend_refused("{\"timeout_seconds\":60} {}", "invalid_json");
    extend_refused("{\"timeout_seconds\":60,\"timeout_seconds\":70}", "invalid_json");
    extend_refused("{}", "missing_field");
    extend_refused("{\"timeout_seconds\":60,\"image\":\"tiny\"}", "unknown_field");
    extend_refused("{\"seconds\":60}", "unknown_field");
    /* Here null is no default: an extend without a number means nothing. */
    extend_refused("{\"timeout_seconds\":null}", "invalid_type");
    extend_refused("{\"timeout_seconds\":\"60\"}", "invalid_type");
    extend_refused("{\"timeout_seconds\":0}", "invalid_timeout");
    extend_refused("{\"timeout_seconds\":-5}", "invalid_timeout");
    extend_refused("{\"timeout_seconds\":2.5}", "invalid_timeout");
    extend_refused("{\"timeout_seconds\":31536001}", "invalid_timeout");
    extend_refused("{\"timeout_seconds\":1e300}", "invalid_timeout");

    /* A NUL inside the body ends the JSON early: data after it is refused, not ignored. */
    static const char nul[] = "{\"timeout_seconds\":60}\0{}";
    seconds = -42;
    assert_int_equal(api_extend_request_parse(nul, sizeof(nul) - 1, &seconds, &err), -EINVAL);
    assert_string_equal(err.code, "invalid_json");
    assert_int_equal(seconds, -42);
}

static void test_url_validation(void **state)
{
    static const char *const good[] = {
        "http://example.org",
        "https://example.org/",
        "HTTPS://Example.ORG/Path",
        "http://10.0.2.100/",
        "http://10.0.2.100:8080/x",
        "http://[::1]:8080/",
        "https://xn--bcher-kva.example/%E2%82%AC?q=1&r=2#frag",
        "https://a-b.c-d.example:65535/",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const char *why = NULL;
        if (!api_url_is_valid(good[i], &why))
            fail_msg("'%s' refused: %s", good[i], why);
    }

    char long_url[API_URL_MAX + 2];
    memcpy(long_url, "http://a.example/", 17);
    memset(long_url + 17, 'a', sizeof(long_url) - 18);
    long_url[sizeof(long_url) - 1] = '\0';
    char max_url[API_URL_MAX + 1];
    memcpy(max_url, long_url, API_URL_MAX);
    max_url[API_URL_MAX] = '\0';
    assert_true(api_url_is_valid(max_url, NULL));

    static const char *const bad[] = {
        "",
        "example.org",
        "ftp://example.org/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/html,<h1>x</h1>",
        "chrome://settings",
        "http://",
        "http:///path",
        "http://user:pass@example.org/",
        "http://example.org@evil.example/",
        "http://exa mple.org/",
        "http://example.org/a b",
        "http://example.org/\"onload",
        "http://example.org/<script>",
        "http://example.org/\\path",
        "http://example.org/\x01",
        "http://example.org/\n",
        "http://ex\xc3\xa4mple.org/",
        "http://example.org:0/",
        "http://example.org:65536/",
        "http://example.org:80x/",
        "http://example.org:/",
        "http://-example.org/",
        "http://example..org/",
        "http://[::1/",
        "http://exa_mple.org/",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = NULL;
        if (api_url_is_valid(bad[i], &why))
            fail_msg("'%s' accepted", bad[i]);
        assert_non_null(why);
    }
    const char *why = NULL;
    assert_false(api_url_is_valid(long_url, &why));
    assert_non_null(strstr(why, "2048"));
}

static void test_content_type(void **state)
{
    assert_true(api_content_type_is_json("application/json"));
    assert_true(api_content_type_is_json("Application/JSON"));
    assert_true(api_content_type_is_json("application/json; charset=utf-8"));
    assert_true(api_content_type_is_json("application/json;charset=UTF-8"));
    assert_false(api_content_type_is_json(NULL));
    assert_false(api_content_type_is_json(""));
    assert_false(api_content_type_is_json("text/plain"));
    assert_false(api_content_type_is_json("application/jsonx"));
    assert_false(api_content_type_is_json("application/x-www-form-urlencoded"));
    assert_false(api_content_type_is_json("multipart/form-data; boundary=x"));
}

static void test_error_json_shape(void **state)
{
    HttpResponse response = {0};
    http_response_error(&response, 400, "invalid_size", "size must be one of %s", "small");
    assert_int_equal(response.status, 400);
    assert_string_equal(response.body,
                        "{\"error\":{\"code\":\"invalid_size\",\"message\":\"size must be one of "
                        "small\"}}");
    free(response.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_duplicate_field),
        cmocka_unit_test(test_unknown_field),
        cmocka_unit_test(test_missing_field),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_deep_nesting_is_refused),
        cmocka_unit_test(test_start_url),
        cmocka_unit_test(test_timeout_seconds_accepted),
        cmocka_unit_test(test_timeout_seconds_refused),
        cmocka_unit_test(test_extend_request),
        cmocka_unit_test(test_url_validation),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_error_json_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
