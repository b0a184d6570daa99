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

/* Longest start_url accepted. */
#define API_URL_MAX 2048

/* Largest timeout_seconds the parser lets through (a year); the config's maximum is lower. */
#define API_TIMEOUT_MAX (365LL * 24 * 3600)

typedef struct {
    char *image;
    char *size;
    char *start_url;           /* NULL when not given */
    long long timeout_seconds; /* 0 when not given, else 1..API_TIMEOUT_MAX */
    const char *clipboard;     /* "none" (also when not given), "to_vm" or "both"; static */
} ApiCreateRequest;

/* True for "application/json", any case, optionally followed by parameters. */
bool api_content_type_is_json(const char *content_type);

/*
 * Whether url may be handed to a guest's browser: http or https, a host
 * (name, IPv4 or [IPv6]) without user info, an optional port, then only
 * printable ASCII that needs no quoting. *ret_why says what is wrong.
 */
bool api_url_is_valid(const char *url, const char **ret_why);

/* 0, or -EINVAL with *ret_error filled. ret_request is untouched on failure. */
int api_create_request_parse(const char *body, size_t len, ApiCreateRequest *ret_request,
                             ApiError *ret_error);
void api_create_request_done(ApiCreateRequest *request);

/* The body of …/extend: exactly {"timeout_seconds": N}. 0 or -EINVAL with *ret_error. */
int api_extend_request_parse(const char *body, size_t len, long long *ret_timeout_seconds,
                             ApiError *ret_error);
