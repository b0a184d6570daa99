#include "auth.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <string.h>
#include <strings.h>

#include "util.h"

int auth_token_generate(char ret_token[AUTH_TOKEN_STR_LEN], uint8_t ret_hash[AUTH_HASH_LEN])
{
    uint8_t secret[AUTH_TOKEN_BYTES];
    char token[AUTH_TOKEN_STR_LEN];
    int r = util_random_bytes(secret, sizeof(secret));
    if (r < 0)
        return r;
    memcpy(token, AUTH_TOKEN_PREFIX, sizeof(AUTH_TOKEN_PREFIX) - 1);
    util_hex_encode(secret, sizeof(secret), token + sizeof(AUTH_TOKEN_PREFIX) - 1);
    r = auth_token_hash(token, strlen(token), ret_hash);
    if (r < 0)
        return r;
    memcpy(ret_token, token, sizeof(token));
    return 0;
}

int auth_token_hash(const char *token, size_t len, uint8_t ret_hash[AUTH_HASH_LEN])
{
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, token, len, ret_hash) < 0)
        return -EIO;
    return 0;
}

int auth_bearer_parse(const char *header, const char **ret_token, size_t *ret_len)
{
    static const char scheme[] = "Bearer ";
    if (!header || strnlen(header, AUTH_HEADER_MAX + 1) > AUTH_HEADER_MAX)
        return -EINVAL;
    if (strncasecmp(header, scheme, sizeof(scheme) - 1) != 0)
        return -EINVAL;
    const char *token = header + sizeof(scheme) - 1;
    while (*token == ' ')
        token++;
    size_t len = strlen(token);
    while (len > 0 && token[len - 1] == ' ')
        len--;
    if (len != AUTH_TOKEN_STR_LEN - 1 ||
        strncmp(token, AUTH_TOKEN_PREFIX, sizeof(AUTH_TOKEN_PREFIX) - 1) != 0)
        return -EINVAL;
    for (size_t i = sizeof(AUTH_TOKEN_PREFIX) - 1; i < len; i++) {
        char c = token[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return -EINVAL;
    }
    *ret_token = token;
    *ret_len = len;
    return 0;
}

bool auth_hash_equal(const uint8_t a[AUTH_HASH_LEN], const uint8_t b[AUTH_HASH_LEN])
{
    return util_timingsafe_equal(a, b, AUTH_HASH_LEN);
}
