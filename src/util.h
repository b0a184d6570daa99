/* Small helpers shared by every module: cleanup attributes, time, randomness. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline void freep(void *p)
{
    free(*(void **)p);
}
static inline void fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}
void closep(int *fd);

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_close_ _cleanup_(closep)

/* Hands ownership out of a cleanup variable: ret = TAKE_PTR(p). */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _p = (p);                                                                    \
        (p) = NULL;                                                                                \
        _p;                                                                                        \
    })

/* ISO 8601 UTC, "2025-01-10T12:00:00Z": 20 characters plus NUL. */
#define UTIL_ISO8601_LEN 21
void util_format_iso8601(int64_t epoch, char ret[UTIL_ISO8601_LEN]);
/* 0, or -EINVAL when the text is not exactly that form. */
int util_parse_iso8601(const char *text, int64_t *ret_epoch);

/* Fills buf from the kernel CSPRNG; 0 or -errno. */
int util_random_bytes(void *buf, size_t len);

/* Lowercase hex of len bytes into ret (2 * len + 1 bytes). */
void util_hex_encode(const uint8_t *data, size_t len, char *ret);
/* Exactly 2 * len hex characters into len bytes; 0 or -EINVAL. */
int util_hex_decode(const char *hex, uint8_t *ret, size_t len);

/* Compares without an early exit, so the time taken says nothing about where they differ. */
bool util_timingsafe_equal(const void *a, const void *b, size_t len);

/*
 * Runs argv[0] (looked up in PATH) with argv, no shell, stdin from /dev/null,
 * stdout/stderr captured into *ret_output (may be NULL to discard).
 * Returns the exit status (>= 0), or -errno when it could not run.
 */
int util_spawn(char *const argv[], char **ret_output);

/* Creates dir and its parents with mode; existing directories are fine. */
int util_mkdir_p(const char *dir, unsigned mode);

/* Reads a whole regular file of at most max bytes; NUL-terminated. 0 or -errno (-EFBIG). */
int util_read_file(const char *path, size_t max, char **ret_data, size_t *ret_len);

/*
 * When ret_error is not NULL, sets it to the formatted message (malloc'd;
 * left NULL if even that fails). Returns r, so a caller can write
 * `return util_set_error(ret_error, -EINVAL, "…", …);`.
 */
int util_set_error(char **ret_error, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* strdup that reports failure as -ENOMEM through the return value. */
int util_strdup(const char *s, char **ret);

/* A short quote of untrusted text (a name), for util_quote_untrusted(). */
#define UTIL_QUOTE_MAX 64

/*
 * Copies untrusted text (from a file, a directory listing or a guest) into
 * out so it can be quoted in a log line: anything but printable ASCII
 * becomes '?', and text longer than max bytes is cut and ends in "...", so
 * it cannot forge log lines. out holds max + 4 bytes.
 */
void util_quote_untrusted(const char *text, size_t max, char *out);
