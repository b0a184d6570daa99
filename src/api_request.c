#include "api_request.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util.h"

static int fail(ApiError *error, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(ApiError *error, const char *code, const char *fmt, ...)
{
    va_list ap;
    error->status = 400;
    error->code = code;
    va_start(ap, fmt);
    vsnprintf(error->message, sizeof(error->message), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Only short printable ASCII is echoed back in a message: always valid UTF-8, never a surprise. */
static bool printable_ascii(const char *s, size_t max)
{
    size_t i;
    for (i = 0; s[i]; i++)
        if (i == max || s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

bool api_content_type_is_json(const char *content_type)
{
    static const char json[] = "application/json";
    if (!content_type)
        return false;
    while (*content_type == ' ')
        content_type++;
    if (strncasecmp(content_type, json, sizeof(json) - 1) != 0)
        return false;
    const char *rest = content_type + sizeof(json) - 1;
    while (*rest == ' ')
        rest++;
    return *rest == '\0' || *rest == ';';
}

/* A host: a DNS name of letters, digits, '-' and '.', an IPv4 address, or [IPv6]. */
static bool host_is_valid(const char *host, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    if (host[0] == '[') {
        if (len < 3 || host[len - 1] != ']')
            return false;
        for (size_t i = 1; i < len - 1; i++)
            if (!isxdigit((unsigned char)host[i]) && host[i] != ':' && host[i] != '.')
                return false;
        return true;
    }
    if (host[0] == '.' || host[0] == '-' || host[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = host[i];
        if (!isalnum((unsigned char)c) && c != '-' && c != '.')
            return false;
        if (c == '.' && i + 1 < len && host[i + 1] == '.')
            return false;
    }
    return true;
}

bool api_url_is_valid(const char *url, const char **ret_why)
{
    const char *why = NULL;
    size_t len = strnlen(url, API_URL_MAX + 1);
    const char *rest;
    if (len == 0 || len > API_URL_MAX) {
        why = "must be 1 to 2048 characters";
        goto out;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f || strchr("\"<>\\^`{|}", c)) {
            why = "may contain only printable ASCII without spaces or quotes "
                  "(percent-encode the rest)";
            goto out;
        }
    }
    if (strncasecmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    else {
        why = "must start with http:// or https://";
        goto out;
    }
    size_t authority = strcspn(rest, "/?#");
    if (memchr(rest, '@', authority)) {
        why = "may not carry a user name or password";
        goto out;
    }
    /* The port is after the last ':' outside an IPv6 literal. */
    const char *close = memchr(rest, ']', authority);
    const char *colon = NULL;
    for (const char *p = close ? close : rest; p < rest + authority; p++)
        if (*p == ':')
            colon = p;
    size_t host_len = colon ? (size_t)(colon - rest) : authority;
    if (!host_is_valid(rest, host_len)) {
        why = "must name a host";
        goto out;
    }
    if (colon) {
        size_t digits = (size_t)(rest + authority - colon - 1);
        unsigned long port = 0;
        for (size_t i = 1; i <= digits; i++) {
            if (!isdigit((unsigned char)colon[i])) {
                digits = 0;
                break;
            }
            port = port * 10 + (unsigned long)(colon[i] - '0');
            if (port > 65535)
                break;
        }
        if (digits == 0 || digits > 5 || port == 0 || port > 65535) {
            why = "has an invalid port";
            goto out;
        }
    }
out:
    if (why && ret_why)
        *ret_why = why;
    return why == NULL;
}

/* The fields a create request may carry; anything else is refused, not ignored. */
static const char *const create_fields[] = {"image", "size", "start_url", "timeout_seconds",
                                            "clipboard"};
/* What may cross between the user and the VM's clipboard; the first is the default. */
static const char *const clipboard_modes[] = {"none", "to_vm", "both"};

/* A whole number of seconds from 1 to API_TIMEOUT_MAX; a JSON number holds it exactly. */
static int timeout_value(const cJSON *item, long long *ret, ApiError *ret_error)
{
    if (!cJSON_IsNumber(item))
        return fail(ret_error, "invalid_type", "field 'timeout_seconds' must be a number");
    double v = item->valuedouble;
    if (!(v >= 1 && v <= (double)API_TIMEOUT_MAX) || v != (double)(long long)v)
        return fail(ret_error, "invalid_timeout",
                    "timeout_seconds must be a whole number of seconds from 1 to %lld",
                    API_TIMEOUT_MAX);
    *ret = (long long)v;
    return 0;
}

/*
 * Whether a string in a valid JSON text escapes U+0000. cJSON keeps every
 * string as a C string, cut at that point: "image\u0000x" would be read as
 * the known key "image", and only the start_url's part before the NUL
 * would be validated and kept.
 */
static bool json_escapes_nul(const char *json, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        if (json[i] == '"') {
            in_string = !in_string;
        } else if (in_string && json[i] == '\\') {
            if (len - i > 5 && memcmp(json + i + 1, "u0000", 5) == 0)
                return true;
            i++; /* the escaped character, which may be a quote */
        }
    }
    return false;
}

/*
 * One JSON object and nothing after it, whose every field is one of
 * `fields` (allowed, a comma-separated list for messages) at most once.
 */
static int parse_object(const char *body, size_t len, const char *const *fields, size_t n_fields,
                        const char *allowed, cJSON **ret_root, ApiError *ret_error)
{
    if (len == 0)
        return fail(ret_error, "invalid_json", "request body is empty; expected a JSON object");
    if (memchr(body, '\0', len))
        return fail(ret_error, "invalid_json", "request body contains a NUL byte");

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!root) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        return fail(ret_error, "invalid_json", "request body is not valid JSON (near byte %zu)",
                    at);
    }
    while (end && (size_t)(end - body) < len && strchr(" \t\r\n", *end))
        end++;
    int r = 0;
    if (end && (size_t)(end - body) < len) {
        r = fail(ret_error, "invalid_json", "request body has data after the JSON value");
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        r = fail(ret_error, "invalid_json", "request body must be a JSON object");
        goto fail;
    }
    if (json_escapes_nul(body, len)) {
        r = fail(ret_error, "invalid_json", "request body has a string holding \\u0000");
        goto fail;
    }

    cJSON *item;
    unsigned seen[8] = {0};
    cJSON_ArrayForEach(item, root)
    {
        bool known = false;
        for (size_t i = 0; i < n_fields && i < ARRAY_SIZE(seen); i++) {
            if (strcmp(item->string, fields[i]) != 0)
                continue;
            known = true;
            if (seen[i]++ > 0) {
                r = fail(ret_error, "invalid_json", "field '%s' appears more than once", fields[i]);
                goto fail;
            }
        }
        if (!known) {
            r = printable_ascii(item->string, 64)
                    ? fail(ret_error, "unknown_field", "unknown field '%s'; allowed: %s",
                           item->string, allowed)
                    : fail(ret_error, "unknown_field", "unknown field; allowed: %s", allowed);
            goto fail;
        }
    }
    *ret_root = root;
    return 0;

fail:
    cJSON_Delete(root);
    return r;
}

int api_create_request_parse(const char *body, size_t len, ApiCreateRequest *ret_request,
                             ApiError *ret_error)
{
    cJSON *root = NULL;
    int r = parse_object(body, len, create_fields, ARRAY_SIZE(create_fields),
                         "image, size, start_url, timeout_seconds, clipboard", &root, ret_error);
    if (r < 0)
        return r;

    const cJSON *image = cJSON_GetObjectItemCaseSensitive(root, "image");
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(root, "size");
    if (!image) {
        r = fail(ret_error, "missing_field", "field 'image' is required");
        goto cleanup;
    }
    if (!size) {
        r = fail(ret_error, "missing_field", "field 'size' is required");
        goto cleanup;
    }
    if (!cJSON_IsString(image)) {
        r = fail(ret_error, "invalid_type", "field 'image' must be a string");
        goto cleanup;
    }
    if (!cJSON_IsString(size)) {
        r = fail(ret_error, "invalid_type", "field 'size' must be a string");
        goto cleanup;
    }

    const cJSON *url = cJSON_GetObjectItemCaseSensitive(root, "start_url");
    const char *why;
    if (url && !cJSON_IsNull(url) && !cJSON_IsString(url)) {
        r = fail(ret_error, "invalid_type", "field 'start_url' must be a string");
        goto cleanup;
    }
    if (cJSON_IsString(url) && !api_url_is_valid(url->valuestring, &why)) {
        r = fail(ret_error, "invalid_start_url", "start_url: %s", why);
        goto cleanup;
    }

    long long timeout = 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "timeout_seconds");
    if (t && !cJSON_IsNull(t)) {
        r = timeout_value(t, &timeout, ret_error);
        if (r < 0)
            goto cleanup;
    }

    const char *clipboard = clipboard_modes[0];
    const cJSON *cb = cJSON_GetObjectItemCaseSensitive(root, "clipboard");
    if (cb && !cJSON_IsNull(cb)) {
        clipboard = NULL;
        for (size_t i = 0; cJSON_IsString(cb) && i < ARRAY_SIZE(clipboard_modes); i++)
            if (strcmp(cb->valuestring, clipboard_modes[i]) == 0)
                clipboard = clipboard_modes[i];
        if (!clipboard) {
            r = fail(ret_error, "invalid_clipboard",
                     "field 'clipboard' must be \"none\", \"to_vm\" or \"both\"");
            goto cleanup;
        }
    }

    char *image_copy = strdup(image->valuestring);
    char *size_copy = strdup(size->valuestring);
    char *url_copy = cJSON_IsString(url) ? strdup(url->valuestring) : NULL;
    if (!image_copy || !size_copy || (cJSON_IsString(url) && !url_copy)) {
        free(image_copy);
        free(size_copy);
        free(url_copy);
        ret_error->status = 500;
        ret_error->code = "internal";
        snprintf(ret_error->message, sizeof(ret_error->message), "out of memory");
        r = -ENOMEM;
        goto cleanup;
    }
    ret_request->image = image_copy;
    ret_request->size = size_copy;
    ret_request->start_url = url_copy;
    ret_request->timeout_seconds = timeout;
    ret_request->clipboard = clipboard;

cleanup:
    cJSON_Delete(root);
    return r;
}

void api_create_request_done(ApiCreateRequest *request)
{
    if (!request)
        return;
    free(request->image);
    free(request->size);
    free(request->start_url);
    request->image = request->size = request->start_url = NULL;
}

int api_extend_request_parse(const char *body, size_t len, long long *ret_timeout_seconds,
                             ApiError *ret_error)
{
    static const char *const fields[] = {"timeout_seconds"};
    cJSON *root = NULL;
    int r =
        parse_object(body, len, fields, ARRAY_SIZE(fields), "timeout_seconds", &root, ret_error);
    if (r < 0)
        return r;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "timeout_seconds");
    long long timeout;
    if (!t)
        r = fail(ret_error, "missing_field", "field 'timeout_seconds' is required");
    else
        r = timeout_value(t, &timeout, ret_error);
    cJSON_Delete(root);
    if (r == 0)
        *ret_timeout_seconds = timeout;
    return r;
}
