/*
 * A minimal W3C WebDriver client for integration tests: it runs Debian's
 * chromedriver as a child (its own process group, so everything it starts
 * can be found and ended), opens one headless Chromium session, and speaks
 * the few commands a test needs over the harness's raw HTTP client on
 * loopback: navigate, run a script, take a screenshot, click at a point
 * and type keys (W3C actions).
 *
 * Conventions as in harness.h: 0 or a negative errno, ret_ outputs
 * untouched on failure, free functions accept NULL, no cmocka. A WebDriver
 * error answer is described on stderr (HTTP status, error, message) and
 * returned as -EPROTO.
 */
#pragma once

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* How long chromedriver may take to answer /status after it is started. */
#define WEBDRIVER_START_TIMEOUT_S 30

typedef struct WebDriver WebDriver;

/*
 * Starts `chromedriver --port=N` on a free loopback port (its log goes to
 * dir/chromedriver.log, Chromium's profile to dir/chromium-profile) and
 * opens a session of /usr/bin/chromium, headless, with a window of
 * width x height CSS pixels and the browser console log kept (see
 * webdriver_browser_log). Environment: WEBDRIVER_CHROMEDRIVER and
 * WEBDRIVER_CHROMIUM name other binaries.
 */
int webdriver_start(const char *dir, unsigned width, unsigned height, WebDriver **ret_driver);

/* Navigates the session's window to url and waits for the load as WebDriver does. */
int webdriver_navigate(WebDriver *driver, const char *url);

/*
 * Runs script as the body of a function (so it says `return …`) in the
 * page; *ret_value gets what it returned as JSON (caller deletes it; a JSON
 * null when it returned nothing).
 */
int webdriver_execute(WebDriver *driver, const char *script, cJSON **ret_value);

/* The viewport as a PNG: *ret_png (malloc'd) of *ret_len bytes. */
int webdriver_screenshot(WebDriver *driver, uint8_t **ret_png, size_t *ret_len);

/* Moves the mouse to (x, y) in viewport CSS pixels and clicks the left button there. */
int webdriver_click(WebDriver *driver, int x, int y);

/*
 * Presses and releases a key for each character of text (printable ASCII,
 * or WebDriver's own code points such as "\xee\x80\x87" for Enter), as a
 * user at the keyboard would, into whatever element has the focus.
 */
int webdriver_type(WebDriver *driver, const char *text);

/* WebDriver's code point for the left Control key, as UTF-8. */
#define WEBDRIVER_KEY_CONTROL "\xee\x80\x89"

/*
 * A chord: modifier (such as WEBDRIVER_KEY_CONTROL) held while key (one
 * character) is pressed and released, then released itself.
 */
int webdriver_chord(WebDriver *driver, const char *modifier, const char *key);

/* The browser console messages logged since the last call, one a line; *ret_text malloc'd. */
int webdriver_browser_log(WebDriver *driver, char **ret_text);

/* chromedriver's pid. */
pid_t webdriver_pid(const WebDriver *driver);

/*
 * Deletes the session (Chromium quits), stops chromedriver and reaps it,
 * then ends whatever it started that is still running. Returns how many
 * such processes had to be killed after the session was deleted and
 * chromedriver stopped (0 when it all went away by itself), or -errno.
 * The driver stays allocated (free it with webdriver_free); quitting twice
 * is harmless.
 */
int webdriver_quit(WebDriver *driver);

/* Quits if still running, removes the profile directory, frees. */
void webdriver_free(WebDriver *driver);
