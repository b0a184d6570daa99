/*
 * libFuzzer target for the Instances API's request bodies (api_request.c):
 * any bytes as a create body and as an extend body (right before an
 * unmapped page, so even cJSON cannot read past it unnoticed), as a
 * start_url on its own, and as the start_url of an otherwise valid body
 * built with cJSON.
 *
 * What it holds the parser to: a failure leaves the request untouched and
 * gives a 400 (or 500) with a code and a printable ASCII message; a success
 * returns exactly the body's strings (none cut short at an escaped NUL),
 * a start_url that the validator accepts and a timeout in range; a body
 * differing only in start_url is accepted exactly when the validator
 * accepts that URL.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "api_request.h"

#define FUZZ_NAME "fuzz_api_request"
#include "fuzz_check.h"

static bool printable_ascii(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

/* What every accepted start_url must look like, checked without the validator's code. */
static void check_valid_url(const char *url)
{
    size_t len = strlen(url);
    CHECK(len >= 1 && len <= API_URL_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        CHECK(c > 0x20 && c < 0x7f && !strchr("\"<>\\^`{|}", c));
    }
    const char *rest;
    if (strncasecmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    else
        CHECK(!"scheme is neither http nor https");
    size_t authority = strcspn(rest, "/?#");
    CHECK(authority > 0);
    CHECK(!memchr(rest, '@', authority));
    CHECK(rest[0] != ':');
}

static void check_url(const char *url)
{
    const char *why = "untouched";
    bool valid = api_url_is_valid(url, &why);
    if (valid) {
        CHECK(strcmp(why, "untouched") == 0);
        check_valid_url(url);
    } else {
        CHECK(why && why[0] != '\0' && printable_ascii(why));
    }
    CHECK(api_url_is_valid(url, NULL) == valid);
}

static const char *const error_codes[] = {
    "invalid_json",      "unknown_field",   "missing_field",     "invalid_type",
    "invalid_start_url", "invalid_timeout", "invalid_clipboard", "internal"};

static void check_error(int r, const ApiError *error)
{
    CHECK(r == -EINVAL || r == -ENOMEM);
    CHECK(error->status == (r == -EINVAL ? 400u : 500u));
    CHECK(error->code != NULL);
    bool known = false;
    for (size_t i = 0; i < sizeof(error_codes) / sizeof(error_codes[0]); i++)
        known = known || strcmp(error->code, error_codes[i]) == 0;
    CHECK(known);
    CHECK(memchr(error->message, '\0', sizeof(error->message)) != NULL);
    CHECK(error->message[0] != '\0' && printable_ascii(error->message));
}

/*
 * Whether a string in a valid JSON text escapes U+0000. cJSON keeps such a
 * string as a C string cut at that point, so what the parser returns would
 * not be what the client sent ("image\u0000x" read as the key "image").
 */
static bool json_escapes_nul(const char *body, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        if (body[i] == '"') {
            in_string = !in_string;
        } else if (in_string && body[i] == '\\') {
            if (len - i > 5 && memcmp(body + i + 1, "u0000", 5) == 0)
                return true;
            i++; /* the escaped character, which may be a quote */
        }
    }
    return false;
}

/* A parsed timeout_seconds is the body's number, whole and in range (0 if optional and absent). */
static void check_timeout(const cJSON *root, long long timeout, bool optional)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "timeout_seconds");
    if (optional && (!t || cJSON_IsNull(t))) {
        CHECK(timeout == 0);
        return;
    }
    CHECK(cJSON_IsNumber(t));
    CHECK(timeout >= 1 && timeout <= API_TIMEOUT_MAX);
    CHECK((double)timeout == t->valuedouble);
}

/* The extend body: exactly {"timeout_seconds": N}. */
static void check_extend(const char *body, size_t len)
{
    long long timeout = -1;
    ApiError error;
    memset(&error, 0, sizeof(error));
    int r = api_extend_request_parse(body, len, &timeout, &error);
    if (r < 0) {
        check_error(r, &error);
        CHECK(timeout == -1);
        return;
    }
    CHECK(r == 0);
    CHECK(!json_escapes_nul(body, len));
    cJSON *root = cJSON_ParseWithLength(body, len);
    CHECK(cJSON_IsObject(root) && cJSON_GetArraySize(root) == 1);
    check_timeout(root, timeout, false);
    cJSON_Delete(root);
}

/* Parses body; on success checks the result against cJSON's own reading of it. */
static int parse_and_check(const char *body, size_t len, char **ret_start_url)
{
    static const ApiCreateRequest untouched = {.image = (char *)"sentinel",
                                               .size = (char *)"sentinel",
                                               .start_url = (char *)"sentinel",
                                               .timeout_seconds = -1};
    ApiCreateRequest request = untouched;
    ApiError error;
    memset(&error, 0, sizeof(error));

    int r = api_create_request_parse(body, len, &request, &error);
    if (r < 0) {
        check_error(r, &error);
        CHECK(memcmp(&request, &untouched, sizeof(request)) == 0);
        return r;
    }
    CHECK(r == 0);
    CHECK(request.image && request.size);
    /* Every key and value is taken whole: nothing after a NUL is dropped unseen. */
    CHECK(!json_escapes_nul(body, len));
    cJSON *root = cJSON_ParseWithLength(body, len);
    CHECK(cJSON_IsObject(root));
    const cJSON *image = cJSON_GetObjectItemCaseSensitive(root, "image");
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(root, "size");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(root, "start_url");
    CHECK(cJSON_IsString(image) && strcmp(image->valuestring, request.image) == 0);
    CHECK(cJSON_IsString(size) && strcmp(size->valuestring, request.size) == 0);
    if (request.start_url) {
        CHECK(cJSON_IsString(url) && strcmp(url->valuestring, request.start_url) == 0);
        CHECK(api_url_is_valid(request.start_url, NULL));
        check_valid_url(request.start_url);
    } else {
        CHECK(!url || cJSON_IsNull(url));
    }
    check_timeout(root, request.timeout_seconds, true);
    /* clipboard: one of the three modes, the body's own or "none" when it gave none. */
    const cJSON *clipboard = cJSON_GetObjectItemCaseSensitive(root, "clipboard");
    CHECK(request.clipboard &&
          (strcmp(request.clipboard, "none") == 0 || strcmp(request.clipboard, "to_vm") == 0 ||
           strcmp(request.clipboard, "both") == 0));
    if (clipboard && !cJSON_IsNull(clipboard))
        CHECK(cJSON_IsString(clipboard) && strcmp(clipboard->valuestring, request.clipboard) == 0);
    else
        CHECK(strcmp(request.clipboard, "none") == 0);
    cJSON_Delete(root);

    if (ret_start_url) {
        *ret_start_url = request.start_url;
        request.start_url = NULL;
    }
    api_create_request_done(&request);
    CHECK(!request.image && !request.size && !request.start_url);
    return 0;
}

/* A body that can only fail on its start_url: accepted exactly when the URL is valid. */
static void check_url_in_body(const char *url)
{
    cJSON *root = cJSON_CreateObject();
    if (!root || !cJSON_AddStringToObject(root, "image", "debian-12-chromium") ||
        !cJSON_AddStringToObject(root, "size", "small") ||
        !cJSON_AddStringToObject(root, "start_url", url)) {
        cJSON_Delete(root);
        return;
    }
    char *body = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!body)
        return;

    char *start_url = NULL;
    int r = parse_and_check(body, strlen(body), &start_url);
    if (r != -ENOMEM) {
        CHECK((r == 0) == api_url_is_valid(url, NULL));
        if (r == 0)
            CHECK(start_url && strcmp(start_url, url) == 0);
    }
    free(start_url);
    cJSON_free(body);
}

/*
 * The body as libmicrohttpd leaves it, not NUL-terminated, placed so that
 * its last byte is the last before an inaccessible page: cJSON is a shared
 * library without ASan, and a read past the body there still faults.
 */
static const char *guarded_copy(const uint8_t *data, size_t size)
{
    static uint8_t *region;
    static size_t region_size;
    if (!region) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        region_size = 1024 * 1024;
        region = mmap(NULL, region_size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
        CHECK(region != MAP_FAILED);
        CHECK(mprotect(region + region_size, page, PROT_NONE) == 0);
    }
    if (size > region_size)
        return NULL;
    uint8_t *body = region + region_size - size;
    memcpy(body, data, size);
    return (const char *)body;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = guarded_copy(data, size);
    if (body) {
        (void)parse_and_check(body, size, NULL);
        check_extend(body, size);
    }

    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    check_url(text);
    check_url_in_body(text);
    (void)api_content_type_is_json(text);
    free(text);
    return 0;
}
