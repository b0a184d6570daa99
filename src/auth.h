/*
 * API tokens: 256 random bits shown to the operator once, kept only as a
 * SHA-256 hash. Lookup is by hash; the final comparison is constant time.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_TOKEN_PREFIX "lgb_"
#define AUTH_TOKEN_BYTES 32
/* "lgb_" + 64 hex characters + NUL. */
#define AUTH_TOKEN_STR_LEN (sizeof(AUTH_TOKEN_PREFIX) - 1 + 2 * AUTH_TOKEN_BYTES + 1)
#define AUTH_HASH_LEN 32
/* Longest Authorization value looked at; anything longer is refused unread. */
#define AUTH_HEADER_MAX 512

/* A fresh token and its hash. 0 or -errno. */
int auth_token_generate(char ret_token[AUTH_TOKEN_STR_LEN], uint8_t ret_hash[AUTH_HASH_LEN]);
int auth_token_hash(const char *token, size_t len, uint8_t ret_hash[AUTH_HASH_LEN]);
/*
 * Finds the token in an "Authorization: Bearer <token>" value: the scheme is
 * case-insensitive, the token must have the shape of one of ours.
 * -EINVAL for a missing, malformed or oversized header.
 */
int auth_bearer_parse(const char *header, const char **ret_token, size_t *ret_len);
bool auth_hash_equal(const uint8_t a[AUTH_HASH_LEN], const uint8_t b[AUTH_HASH_LEN]);
