#include "api_request.h"

#include <cjson/cJSON.h>
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

/* The fields a create request may carry; anything else is refused, not ignored. */
static const char *const create_fields[] = {"image", "size"};

int api_create_request_parse(const char *body, size_t len, ApiCreateRequest *ret_request,
                             ApiError *ret_error)
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
        goto cleanup;
    }
    if (!cJSON_IsObject(root)) {
        r = fail(ret_error, "invalid_json", "request body must be a JSON object");
        goto cleanup;
    }

    cJSON *item;
    unsigned seen[ARRAY_SIZE(create_fields)] = {0};
    cJSON_ArrayForEach(item, root)
    {
        bool known = false;
        for (size_t i = 0; i < ARRAY_SIZE(create_fields); i++) {
            if (strcmp(item->string, create_fields[i]) != 0)
                continue;
            known = true;
            if (seen[i]++ > 0) {
                r = fail(ret_error, "invalid_json", "field '%s' appears more than once",
                         create_fields[i]);
                goto cleanup;
            }
        }
        if (!known) {
            r = printable_ascii(item->string, 64)
                    ? fail(ret_error, "unknown_field", "unknown field '%s'; allowed: image, size",
                           item->string)
                    : fail(ret_error, "unknown_field", "unknown field; allowed: image, size");
            goto cleanup;
        }
    }

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

    char *image_copy = strdup(image->valuestring);
    char *size_copy = strdup(size->valuestring);
    if (!image_copy || !size_copy) {
        free(image_copy);
        free(size_copy);
        ret_error->status = 500;
        ret_error->code = "internal";
        snprintf(ret_error->message, sizeof(ret_error->message), "out of memory");
        r = -ENOMEM;
        goto cleanup;
    }
    ret_request->image = image_copy;
    ret_request->size = size_copy;

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
    request->image = request->size = NULL;
}
