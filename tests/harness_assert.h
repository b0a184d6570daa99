/*
 * The cmocka side of harness.h, for the integration tests (tests/it_*.c):
 * assertions about what legbad answered that, when they fail, print the
 * answer (status and body) and where legbad's log is, then fail the test.
 * Kept apart from harness.c, which calls nothing of cmocka and may be used
 * from any thread; these may be used only from the test's own thread.
 *
 * Every file that includes this header defines harness_assert_legbad().
 * The assert_* names are macros, so a failure is reported at the line of
 * the test that made the assertion.
 */
#pragma once

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "uuid.h"

/* The legbad whose log a failed assertion points to, or NULL: defined by the including file. */
static const HarnessLegbad *harness_assert_legbad(void);

/* Reports what was expected (fmt), the answer resp, legbad's log path, and fails the test. */
static inline void fail_response(const char *file, int line, const HarnessResponse *resp,
                                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static inline void fail_response(const char *file, int line, const HarnessResponse *resp,
                                 const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    print_error("%s:%d: %s\n  response: HTTP %d, body (%zu bytes): %.2000s\n", file, line, what,
                resp->status, resp->body_len, resp->body ? resp->body : "");
    const HarnessLegbad *legbad = harness_assert_legbad();
    if (legbad)
        print_error("  legbad log: %s\n", legbad->log_path);
    _fail(file, line);
}

static inline void harness_check_status(const char *file, int line, const HarnessResponse *resp,
                                        int want)
{
    if (resp->status != want)
        fail_response(file, line, resp, "status %d expected", want);
}

#define assert_status(resp, want) harness_check_status(__FILE__, __LINE__, (resp), (want))

static inline void harness_check_error(const char *file, int line, const HarnessResponse *resp,
                                       int want_status, const char *want_code)
{
    harness_check_status(file, line, resp, want_status);
    const char *code = harness_error_code(resp);
    const char *message = harness_error_message(resp);
    const char *type = harness_header(resp, "Content-Type");
    if (!code || strcmp(code, want_code) != 0 || !message || !message[0])
        fail_response(file, line, resp, "error code '%s' expected", want_code);
    if (!type || strncmp(type, "application/json", 16) != 0)
        fail_response(file, line, resp, "Content-Type application/json expected");
}

/* Status, a JSON error body with this code, a non-empty message, a JSON Content-Type. */
#define assert_error(resp, want_status, want_code)                                                 \
    harness_check_error(__FILE__, __LINE__, (resp), (want_status), (want_code))

/* ---- the console ---- */

/* An access key and a console cookie's value: 32 bytes as lowercase hex. */
#define HARNESS_CONSOLE_KEY_LEN 64

/* One instance's console as a viewer holds it. */
typedef struct {
    char uuid[UUID_STR_LEN];
    char key[HARNESS_CONSOLE_KEY_LEN + 1]; /* from access_url's #key= */
    char prefix[80];                       /* "/console/<uuid>/" */
    char cookie[128];                      /* "Cookie: legba_console=…" once logged in */
} HarnessConsole;

static inline bool harness_is_lower_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static inline void harness_check_access_url(const char *file, int line, const HarnessResponse *resp,
                                            const char *origin, const char *uuid,
                                            char ret_key[HARNESS_CONSOLE_KEY_LEN + 1])
{
    char want[384];
    snprintf(want, sizeof(want), "%s/console/%s/#key=", origin, uuid);
    const char *url =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(resp->json, "access_url"));
    size_t n = strlen(want);
    if (!url || strncmp(url, want, n) != 0 || strlen(url) != n + HARNESS_CONSOLE_KEY_LEN ||
        !harness_is_lower_hex(url + n, HARNESS_CONSOLE_KEY_LEN)) {
        fail_response(file, line, resp, "access_url %s<64 lowercase hex> expected", want);
        return;
    }
    snprintf(ret_key, HARNESS_CONSOLE_KEY_LEN + 1, "%s", url + n);
}

/*
 * access_url in resp's JSON is exactly ORIGIN/console/<uuid>/#key=<64
 * lowercase hex>, nothing more; ret_key gets the key.
 */
#define assert_access_url(resp, origin, uuid, ret_key)                                             \
    harness_check_access_url(__FILE__, __LINE__, (resp), (origin), (uuid), (ret_key))

static inline void harness_check_console_login(const char *file, int line,
                                               const HarnessResponse *resp, HarnessConsole *console)
{
    static const char name[] = "legba_console=";
    const size_t name_len = sizeof(name) - 1;
    harness_check_status(file, line, resp, 204);
    const char *cookie = harness_header(resp, "Set-Cookie");
    if (!cookie || strncmp(cookie, name, name_len) != 0 ||
        strcspn(cookie + name_len, ";") != HARNESS_CONSOLE_KEY_LEN ||
        !harness_is_lower_hex(cookie + name_len, HARNESS_CONSOLE_KEY_LEN)) {
        fail_response(file, line, resp, "Set-Cookie: legba_console=<64 hex>; … expected");
        return;
    }
    snprintf(console->cookie, sizeof(console->cookie), "Cookie: %.*s",
             (int)(name_len + HARNESS_CONSOLE_KEY_LEN), cookie);
}

/*
 * resp, the answer to harness_console_session(), is a 204 whose Set-Cookie
 * starts with legba_console=<64 lowercase hex>; console->cookie gets the
 * Cookie line that sends it back.
 */
#define assert_console_login(resp, console)                                                        \
    harness_check_console_login(__FILE__, __LINE__, (resp), (console))

/* What an upgrade that had to be refused gave: r is -ECONNREFUSED, or the test fails. */
static inline void harness_check_not_upgraded(const char *file, int line, int r, HarnessWs *ws,
                                              const char *what)
{
    if (r == 0) {
        harness_ws_free(ws);
        print_error("%s:%d: %s was upgraded to a WebSocket; a refusal expected\n", file, line,
                    what);
        _fail(file, line);
    } else if (r != -ECONNREFUSED) {
        print_error("%s:%d: %s: no HTTP answer: %s\n", file, line, what, strerror(-r));
        _fail(file, line);
    }
}

static inline void harness_check_ws_refusal(const char *file, int line, uint16_t port,
                                            const char *path, const char *const headers[],
                                            HarnessResponse *ret)
{
    HarnessWs *ws = NULL;
    int r = harness_ws_connect(port, path, headers, &ws, ret);
    harness_check_not_upgraded(file, line, r, ws, path);
}

/* The WebSocket upgrade of path with headers is refused; *ret gets the answer. */
#define assert_ws_refusal(port, path, headers, ret)                                                \
    harness_check_ws_refusal(__FILE__, __LINE__, (port), (path), (headers), (ret))

static inline void harness_check_ws_refused(const char *file, int line, uint16_t port,
                                            const char *uuid, const char *cookie,
                                            const char *origin_line, int want_status,
                                            const char *want_code)
{
    char what[256];
    HarnessWs *ws = NULL;
    HarnessResponse refusal = {0};
    snprintf(what, sizeof(what), "the console of %s (cookie %s, %s)", uuid,
             cookie ? "given" : "none", origin_line ? origin_line : "no Origin");
    int r = harness_console_ws_connect(port, uuid, cookie, origin_line, &ws, &refusal);
    harness_check_not_upgraded(file, line, r, ws, what);
    harness_check_error(file, line, &refusal, want_status, want_code);
    harness_response_done(&refusal);
}

/*
 * The console WebSocket of uuid, asked for with the Cookie line cookie and
 * the Origin line origin_line (either may be NULL), is refused with this
 * status and error code.
 */
#define assert_ws_refused(port, uuid, cookie, origin_line, want_status, want_code)                 \
    harness_check_ws_refused(__FILE__, __LINE__, (port), (uuid), (cookie), (origin_line),          \
                             (want_status), (want_code))
