#include "access.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "util.h"

int access_secret_generate(char ret_secret[ACCESS_SECRET_LEN + 1],
                           char ret_hash[STORE_CONSOLE_HASH_LEN])
{
    uint8_t bytes[ACCESS_SECRET_BYTES], hash[AUTH_HASH_LEN];
    char secret[ACCESS_SECRET_LEN + 1];
    int r = util_random_bytes(bytes, sizeof(bytes));
    if (r < 0)
        return r;
    util_hex_encode(bytes, sizeof(bytes), secret);
    r = auth_token_hash(secret, ACCESS_SECRET_LEN, hash);
    if (r < 0)
        return r;
    memcpy(ret_secret, secret, sizeof(secret));
    util_hex_encode(hash, sizeof(hash), ret_hash);
    return 0;
}

/* Exactly 64 lowercase hex characters: the only shape a secret of ours has. */
static bool secret_shape_ok(const char *secret)
{
    if (!secret || strnlen(secret, ACCESS_SECRET_LEN + 1) != ACCESS_SECRET_LEN)
        return false;
    return strspn(secret, "0123456789abcdef") == ACCESS_SECRET_LEN;
}

bool access_secret_matches(const char *secret, const char *stored_hash)
{
    uint8_t hash[AUTH_HASH_LEN];
    char hex[STORE_CONSOLE_HASH_LEN];
    if (!secret_shape_ok(secret) || strlen(stored_hash) != STORE_CONSOLE_HASH_LEN - 1 ||
        auth_token_hash(secret, ACCESS_SECRET_LEN, hash) < 0)
        return false;
    util_hex_encode(hash, sizeof(hash), hex);
    return util_timingsafe_equal(hex, stored_hash, STORE_CONSOLE_HASH_LEN - 1);
}

int access_base(const char *base_template, const char *instance_uuid, char **ret_base)
{
    const char *at = strstr(base_template, ACCESS_INSTANCE_PLACEHOLDER);
    char *base;
    int r;
    if (at)
        r = asprintf(&base, "%.*s%s%s", (int)(at - base_template), base_template, instance_uuid,
                     at + strlen(ACCESS_INSTANCE_PLACEHOLDER));
    else
        r = asprintf(&base, "%s", base_template);
    if (r < 0)
        return -ENOMEM;
    *ret_base = base;
    return 0;
}

int access_url(const char *base, const char *instance_uuid, const char *secret, char **ret_url)
{
    char *url;
    if (asprintf(&url, "%s/console/%s/%s%s", base, instance_uuid, secret ? "#key=" : "",
                 secret ? secret : "") < 0)
        return -ENOMEM;
    *ret_url = url;
    return 0;
}

/* Where the authority of an http(s) URL starts and ends; -EINVAL for another scheme. */
static int split_url(const char *url, size_t *ret_scheme_len, const char **ret_host,
                     size_t *ret_host_len)
{
    size_t scheme_len;
    if (strncmp(url, "http://", 7) == 0)
        scheme_len = 4;
    else if (strncmp(url, "https://", 8) == 0)
        scheme_len = 5;
    else
        return -EINVAL;
    const char *host = url + scheme_len + 3;
    size_t host_len = strcspn(host, "/?#");
    if (host_len == 0)
        return -EINVAL;
    *ret_scheme_len = scheme_len;
    *ret_host = host;
    *ret_host_len = host_len;
    return 0;
}

int access_path(const char *base, const char *instance_uuid, char **ret_path)
{
    size_t scheme_len, host_len;
    const char *host;
    if (split_url(base, &scheme_len, &host, &host_len) < 0)
        return -EINVAL;
    char *path;
    if (asprintf(&path, "%s/console/%s/", host + host_len, instance_uuid) < 0)
        return -ENOMEM;
    *ret_path = path;
    return 0;
}

int access_origin(const char *url, char **ret_origin)
{
    size_t scheme_len, host_len;
    const char *host;
    if (split_url(url, &scheme_len, &host, &host_len) < 0)
        return -EINVAL;
    const char *default_port = scheme_len == 4 ? ":80" : ":443";
    size_t dp = strlen(default_port);
    /* "[::1]:80" ends in ":80" too, but a bracketed address ends in ']' before its port. */
    if (host_len > dp && strncmp(host + host_len - dp, default_port, dp) == 0)
        host_len -= dp;
    char *origin;
    if (asprintf(&origin, "%.*s://%.*s", (int)scheme_len, url, (int)host_len, host) < 0)
        return -ENOMEM;
    for (char *p = origin; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    *ret_origin = origin;
    return 0;
}

bool access_origin_allowed(const char *origin, const char *own_origin, const char *allow_list)
{
    if (!origin || !*origin)
        return false;
    if (strcasecmp(origin, own_origin) == 0)
        return true;
    size_t len = strlen(origin);
    for (const char *p = allow_list; *p;) {
        size_t n = strcspn(p, " ");
        if (n == len && strncasecmp(p, origin, n) == 0)
            return true;
        p += n;
        p += strspn(p, " ");
    }
    return false;
}

int access_cookie(const char *base, const char *instance_uuid, const char *secret,
                  char **ret_cookie)
{
    _cleanup_free_ char *path = NULL;
    int r = access_path(base, instance_uuid, &path);
    if (r < 0)
        return r;
    /* Under https the cookie never travels in clear; behind a TLS proxy public_url says https. */
    bool secure = strncmp(base, "https://", 8) == 0;
    char *cookie;
    if (asprintf(&cookie, "%s=%s; Path=%s; HttpOnly; SameSite=Strict%s", ACCESS_COOKIE_NAME, secret,
                 path, secure ? "; Secure" : "") < 0)
        return -ENOMEM;
    *ret_cookie = cookie;
    return 0;
}
