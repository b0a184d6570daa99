/*
 * The access URL's credential, without I/O: a random secret shown once (in
 * the URL's fragment, so no server or proxy ever logs it), kept only as a
 * SHA-256 hash, and exchanged by the viewer page for an HttpOnly,
 * SameSite=Strict cookie scoped to the one instance's path. Also the
 * origins a console may be opened from (a cross-site page must not reach it
 * through the user's cookie: CVE-2015-0259).
 */
#pragma once

#include <stdbool.h>

#include "store.h"

#define ACCESS_SECRET_BYTES 32
/* 64 lowercase hex characters. */
#define ACCESS_SECRET_LEN (2 * ACCESS_SECRET_BYTES)
#define ACCESS_COOKIE_NAME "legba_console"
/* The placeholder of public_url replaced by an instance's uuid. */
#define ACCESS_INSTANCE_PLACEHOLDER "{instance}"

/* A fresh secret and the hash to store. 0 or -errno. */
int access_secret_generate(char ret_secret[ACCESS_SECRET_LEN + 1],
                           char ret_hash[STORE_CONSOLE_HASH_LEN]);
/*
 * Whether a presented secret (NULL allowed) is the one whose hash is stored
 * (stored "" matches nothing). The comparison takes the same time wherever
 * the two differ.
 */
bool access_secret_matches(const char *secret, const char *stored_hash);

/* The base URL of one instance: base_template with {instance} replaced. malloc'd. */
int access_base(const char *base_template, const char *instance_uuid, char **ret_base);
/* "<base>/console/<uuid>/", then "#key=<secret>" when secret is not NULL. malloc'd. */
int access_url(const char *base, const char *instance_uuid, const char *secret, char **ret_url);
/* The path part of the console's URL, "<base's path>/console/<uuid>/". malloc'd. */
int access_path(const char *base, const char *instance_uuid, char **ret_path);
/*
 * The origin of an http(s) URL as browsers send it: lowercase scheme and
 * host, the port only when it is not the scheme's default. -EINVAL.
 */
int access_origin(const char *url, char **ret_origin);
/* Whether an Origin header (NULL: absent, refused) is own_origin or in the space-separated list. */
bool access_origin_allowed(const char *origin, const char *own_origin, const char *allow_list);
/* The Set-Cookie value that holds the secret for this instance's console. malloc'd. */
int access_cookie(const char *base, const char *instance_uuid, const char *secret,
                  char **ret_cookie);
