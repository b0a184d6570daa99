/*
 * Request bodies of the Instances API: strict JSON parsing (an object,
 * known fields only, right types), so api.c sees only well-formed input.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    unsigned status;  /* HTTP status to answer with */
    const char *code; /* machine-readable error code */
    char message[256];
} ApiError;

typedef struct {
    char *image;
    char *size;
} ApiCreateRequest;

/* True for "application/json", any case, optionally followed by parameters. */
bool api_content_type_is_json(const char *content_type);

/* 0, or -EINVAL with *ret_error filled. ret_request is untouched on failure. */
int api_create_request_parse(const char *body, size_t len, ApiCreateRequest *ret_request,
                             ApiError *ret_error);
void api_create_request_done(ApiCreateRequest *request);
