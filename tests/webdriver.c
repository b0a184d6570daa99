#include "webdriver.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* A screenshot answer is base64 of a few MB at most; more is not one. */
#define WEBDRIVER_PNG_MAX (32u * 1024 * 1024)
/* How long chromedriver and what it started get to go away on their own. */
#define WEBDRIVER_STOP_GRACE_MS 10000

struct WebDriver {
    pid_t pid; /* chromedriver, leader of its own process group; 0 once reaped */
    pid_t pgid;
    uint16_t port;
    char *session; /* NULL until a session is open, and again once deleted */
    char *log_path;
    char *profile;
};

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/*
 * One command: method on path (relative to the session when session_path),
 * body a JSON object or NULL. On a 200 answer *ret_value (when not NULL)
 * gets the answer's "value" (detached, caller deletes). Anything else is
 * an error, described once here.
 */
static int command(WebDriver *driver, const char *method, const char *path, bool session_path,
                   const cJSON *body, cJSON **ret_value)
{
    char full[512];
    if (session_path) {
        if (!driver->session) {
            fprintf(stderr, "webdriver: %s %s: no session\n", method, path);
            return -ENOTCONN;
        }
        snprintf(full, sizeof(full), "/session/%s%s", driver->session, path);
    } else {
        snprintf(full, sizeof(full), "%s", path);
    }
    char *text = body ? cJSON_PrintUnformatted(body) : NULL;
    if (body && !text)
        return -ENOMEM;
    HarnessResponse resp = {0};
    int r =
        harness_http(driver->port, method, full,
                     text ? HARNESS_LIST("Content-Type: application/json; charset=utf-8") : NULL,
                     text, text ? strlen(text) : 0, &resp);
    free(text);
    if (r < 0) {
        fprintf(stderr, "webdriver: %s %s: %s\n", method, full, strerror(-r));
        return r;
    }
    cJSON *value = resp.json ? cJSON_DetachItemFromObject(resp.json, "value") : NULL;
    if (resp.status != 200 || !value) {
        cJSON *error = cJSON_GetObjectItem(value, "error");
        cJSON *message = cJSON_GetObjectItem(value, "message");
        fprintf(stderr, "webdriver: %s %s: HTTP %d %s: %.2000s\n", method, full, resp.status,
                cJSON_IsString(error) ? error->valuestring : "(no WebDriver error)",
                cJSON_IsString(message) ? message->valuestring
                : resp.body             ? resp.body
                                        : "");
        cJSON_Delete(value);
        harness_response_done(&resp);
        return -EPROTO;
    }
    harness_response_done(&resp);
    if (ret_value)
        *ret_value = value;
    else
        cJSON_Delete(value);
    return 0;
}

/* chromedriver is up once /status says ready; it may take a while on a loaded host. */
static int wait_for_status(WebDriver *driver)
{
    long long deadline = harness_now_ms() + WEBDRIVER_START_TIMEOUT_S * 1000LL;
    while (harness_now_ms() < deadline) {
        int status;
        if (waitpid(driver->pid, &status, WNOHANG) == driver->pid) {
            driver->pid = 0;
            fprintf(stderr, "webdriver: chromedriver exited (status 0x%x) before it answered\n",
                    status);
            return -ECHILD;
        }
        /* Connection refused is normal while it starts, and not worth a message. */
        if (!harness_port_accepts(driver->port)) {
            sleep_ms(100);
            continue;
        }
        HarnessResponse resp = {0};
        int r = harness_http(driver->port, "GET", "/status", NULL, NULL, 0, &resp);
        bool ready =
            r == 0 && resp.status == 200 &&
            cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(resp.json, "value"), "ready"));
        harness_response_done(&resp);
        if (ready)
            return 0;
        sleep_ms(200);
    }
    fprintf(stderr, "webdriver: chromedriver did not answer /status within %d s\n",
            WEBDRIVER_START_TIMEOUT_S);
    return -ETIMEDOUT;
}

static pid_t spawn_chromedriver(const char *binary, uint16_t port, const char *log_path)
{
    char port_arg[32];
    snprintf(port_arg, sizeof(port_arg), "--port=%u", port);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Its own group: at the end the whole group (Chromium included) can be found. */
    setpgid(0, 0);
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
        _exit(126);
    execlp(binary, binary, port_arg, "--allowed-ips=127.0.0.1", (char *)NULL);
    _exit(127);
}

static cJSON *session_capabilities(const char *chromium, const char *profile, unsigned width,
                                   unsigned height)
{
    char window[64], profile_arg[4200];
    snprintf(window, sizeof(window), "--window-size=%u,%u", width, height);
    snprintf(profile_arg, sizeof(profile_arg), "--user-data-dir=%s", profile);
    const char *args[] = {"--headless=new",
                          "--no-sandbox",
                          "--disable-gpu",
                          "--disable-dev-shm-usage",
                          "--no-first-run",
                          "--no-default-browser-check",
                          "--disable-background-networking",
                          "--disable-extensions",
                          "--hide-scrollbars",
                          "--force-device-scale-factor=1",
                          window,
                          profile_arg};
    cJSON *body = cJSON_CreateObject();
    cJSON *caps = cJSON_AddObjectToObject(body, "capabilities");
    cJSON *match = cJSON_AddObjectToObject(caps, "alwaysMatch");
    cJSON_AddStringToObject(match, "browserName", "chrome");
    cJSON *options = cJSON_AddObjectToObject(match, "goog:chromeOptions");
    cJSON_AddStringToObject(options, "binary", chromium);
    cJSON *list = cJSON_AddArrayToObject(options, "args");
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
        cJSON_AddItemToArray(list, cJSON_CreateString(args[i]));
    /* Keeps the page's console for webdriver_browser_log (a failure report). */
    cJSON *logging = cJSON_AddObjectToObject(match, "goog:loggingPrefs");
    if (!cJSON_AddStringToObject(logging, "browser", "ALL") || !list ||
        !cJSON_GetObjectItem(options, "binary")) {
        cJSON_Delete(body);
        return NULL;
    }
    return body;
}

int webdriver_start(const char *dir, unsigned width, unsigned height, WebDriver **ret_driver)
{
    const char *binary = getenv("WEBDRIVER_CHROMEDRIVER");
    const char *chromium = getenv("WEBDRIVER_CHROMIUM");
    if (!binary || !binary[0])
        binary = "chromedriver";
    if (!chromium || !chromium[0])
        chromium = "/usr/bin/chromium";
    WebDriver *driver = calloc(1, sizeof(*driver));
    if (!driver)
        return -ENOMEM;
    int r = -ENOMEM;
    if (asprintf(&driver->log_path, "%s/chromedriver.log", dir) < 0) {
        driver->log_path = NULL;
        goto fail;
    }
    if (asprintf(&driver->profile, "%s/chromium-profile", dir) < 0) {
        driver->profile = NULL;
        goto fail;
    }
    r = harness_free_port(&driver->port);
    if (r < 0)
        goto fail;
    driver->pid = spawn_chromedriver(binary, driver->port, driver->log_path);
    if (driver->pid < 0) {
        r = -errno;
        driver->pid = 0;
        fprintf(stderr, "webdriver: fork: %s\n", strerror(-r));
        goto fail;
    }
    setpgid(driver->pid, driver->pid); /* the child does the same; whichever runs first */
    driver->pgid = driver->pid;
    r = wait_for_status(driver);
    if (r < 0)
        goto fail;

    cJSON *caps = session_capabilities(chromium, driver->profile, width, height);
    if (!caps) {
        r = -ENOMEM;
        goto fail;
    }
    cJSON *value = NULL;
    r = command(driver, "POST", "/session", false, caps, &value);
    cJSON_Delete(caps);
    if (r < 0)
        goto fail;
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(value, "sessionId"));
    driver->session = id ? strdup(id) : NULL;
    cJSON_Delete(value);
    if (!driver->session) {
        fprintf(stderr, "webdriver: new session answered no sessionId\n");
        r = -EPROTO;
        goto fail;
    }
    *ret_driver = driver;
    return 0;
fail:
    if (driver->log_path && driver->pid)
        harness_dump_file(driver->log_path);
    webdriver_free(driver);
    return r;
}

int webdriver_navigate(WebDriver *driver, const char *url)
{
    cJSON *body = cJSON_CreateObject();
    if (!body || !cJSON_AddStringToObject(body, "url", url)) {
        cJSON_Delete(body);
        return -ENOMEM;
    }
    int r = command(driver, "POST", "/url", true, body, NULL);
    cJSON_Delete(body);
    return r;
}

int webdriver_execute(WebDriver *driver, const char *script, cJSON **ret_value)
{
    cJSON *body = cJSON_CreateObject();
    if (!body || !cJSON_AddStringToObject(body, "script", script) ||
        !cJSON_AddArrayToObject(body, "args")) {
        cJSON_Delete(body);
        return -ENOMEM;
    }
    int r = command(driver, "POST", "/execute/sync", true, body, ret_value);
    cJSON_Delete(body);
    return r;
}

static int base64_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 (padding optional, whitespace skipped) into a malloc'd buffer. */
static int base64_decode(const char *text, uint8_t **ret_data, size_t *ret_len)
{
    size_t n = strlen(text);
    if (n / 4 * 3 > WEBDRIVER_PNG_MAX)
        return -EFBIG;
    uint8_t *data = malloc(n / 4 * 3 + 3);
    if (!data)
        return -ENOMEM;
    size_t len = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (const char *p = text; *p && *p != '='; p++) {
        if (isspace((unsigned char)*p))
            continue;
        int v = base64_value((unsigned char)*p);
        if (v < 0) {
            free(data);
            return -EBADMSG;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            data[len++] = (uint8_t)(acc >> bits);
        }
    }
    *ret_data = data;
    *ret_len = len;
    return 0;
}

int webdriver_screenshot(WebDriver *driver, uint8_t **ret_png, size_t *ret_len)
{
    cJSON *value = NULL;
    int r = command(driver, "GET", "/screenshot", true, NULL, &value);
    if (r < 0)
        return r;
    if (!cJSON_IsString(value)) {
        cJSON_Delete(value);
        fprintf(stderr, "webdriver: screenshot answer is not a string\n");
        return -EPROTO;
    }
    r = base64_decode(value->valuestring, ret_png, ret_len);
    if (r < 0)
        fprintf(stderr, "webdriver: screenshot: bad base64 (%s)\n", strerror(-r));
    cJSON_Delete(value);
    return r;
}

/* POST /actions with one input source, then release everything it pressed. */
static int perform(WebDriver *driver, cJSON *source)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(body, "actions");
    if (!list) {
        cJSON_Delete(body);
        cJSON_Delete(source);
        return -ENOMEM;
    }
    cJSON_AddItemToArray(list, source);
    int r = command(driver, "POST", "/actions", true, body, NULL);
    cJSON_Delete(body);
    if (r == 0)
        r = command(driver, "DELETE", "/actions", true, NULL, NULL);
    return r;
}

static cJSON *action(cJSON *list, const char *type)
{
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "type", type);
    cJSON_AddItemToArray(list, a);
    return a;
}

int webdriver_click(WebDriver *driver, int x, int y)
{
    cJSON *source = cJSON_CreateObject();
    cJSON_AddStringToObject(source, "type", "pointer");
    cJSON_AddStringToObject(source, "id", "mouse");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(source, "parameters"), "pointerType", "mouse");
    cJSON *list = cJSON_AddArrayToObject(source, "actions");
    if (!list) {
        cJSON_Delete(source);
        return -ENOMEM;
    }
    cJSON *move = action(list, "pointerMove");
    cJSON_AddNumberToObject(move, "duration", 0);
    cJSON_AddStringToObject(move, "origin", "viewport");
    cJSON_AddNumberToObject(move, "x", x);
    cJSON_AddNumberToObject(move, "y", y);
    cJSON_AddNumberToObject(action(list, "pointerDown"), "button", 0);
    /* A press as long as a person's, so a page that polls sees it. */
    cJSON_AddNumberToObject(action(list, "pause"), "duration", 50);
    cJSON_AddNumberToObject(action(list, "pointerUp"), "button", 0);
    return perform(driver, source);
}

/* Length of the UTF-8 sequence that starts with byte c (1 for anything malformed). */
static size_t utf8_length(unsigned char c)
{
    return c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/* A keyboard input source; *ret_list gets its (empty) list of actions, or NULL on ENOMEM. */
static cJSON *keyboard(cJSON **ret_list)
{
    cJSON *source = cJSON_CreateObject();
    cJSON_AddStringToObject(source, "type", "key");
    cJSON_AddStringToObject(source, "id", "keyboard");
    *ret_list = cJSON_AddArrayToObject(source, "actions");
    if (!*ret_list) {
        cJSON_Delete(source);
        return NULL;
    }
    return source;
}

int webdriver_type(WebDriver *driver, const char *text)
{
    cJSON *list, *source = keyboard(&list);
    if (!source)
        return -ENOMEM;
    for (const char *p = text; *p;) {
        size_t n = utf8_length((unsigned char)*p);
        if (strnlen(p, n) < n)
            n = 1;
        char key[5] = {0};
        memcpy(key, p, n);
        cJSON_AddStringToObject(action(list, "keyDown"), "value", key);
        cJSON_AddStringToObject(action(list, "keyUp"), "value", key);
        p += n;
    }
    return perform(driver, source);
}

int webdriver_chord(WebDriver *driver, const char *modifier, const char *key)
{
    cJSON *list, *source = keyboard(&list);
    if (!source)
        return -ENOMEM;
    cJSON_AddStringToObject(action(list, "keyDown"), "value", modifier);
    cJSON_AddStringToObject(action(list, "keyDown"), "value", key);
    cJSON_AddStringToObject(action(list, "keyUp"), "value", key);
    cJSON_AddStringToObject(action(list, "keyUp"), "value", modifier);
    return perform(driver, source);
}

int webdriver_browser_log(WebDriver *driver, char **ret_text)
{
    cJSON *body = cJSON_CreateObject();
    if (!body || !cJSON_AddStringToObject(body, "type", "browser")) {
        cJSON_Delete(body);
        return -ENOMEM;
    }
    cJSON *value = NULL;
    int r = command(driver, "POST", "/se/log", true, body, &value);
    cJSON_Delete(body);
    if (r < 0)
        return r;
    size_t cap = 1, len = 0;
    cJSON *entry;
    cJSON_ArrayForEach(entry, value)
    {
        const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(entry, "message"));
        cap += (m ? strlen(m) : 0) + 32;
    }
    char *text = malloc(cap);
    if (!text) {
        cJSON_Delete(value);
        return -ENOMEM;
    }
    text[0] = '\0';
    cJSON_ArrayForEach(entry, value)
    {
        const char *level = cJSON_GetStringValue(cJSON_GetObjectItem(entry, "level"));
        const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(entry, "message"));
        len += (size_t)snprintf(text + len, cap - len, "%s %s\n", level ? level : "?", m ? m : "");
    }
    cJSON_Delete(value);
    *ret_text = text;
    return 0;
}

pid_t webdriver_pid(const WebDriver *driver)
{
    return driver->pid;
}

/*
 * Whether pid is a live (not zombie) process that this driver started:
 * in chromedriver's process group, or a Chromium that names our profile
 * (in case one moved to a group of its own).
 */
static bool ours(const WebDriver *driver, pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* pid (comm) state ppid pgrp …; comm may hold blanks and parentheses. */
    const char *close = strrchr(buf, ')');
    char state;
    int ppid, pgrp;
    if (!close || sscanf(close + 1, " %c %d %d", &state, &ppid, &pgrp) != 3 || state == 'Z')
        return false;
    if (driver->pgid > 0 && pgrp == driver->pgid)
        return true;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    buf[n] = '\0';
    return driver->profile && strstr(buf, driver->profile);
}

/* Our processes still alive; each is sent sig when sig is not 0. */
static int survivors(const WebDriver *driver, int sig)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -errno;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == getpid() || !ours(driver, (pid_t)pid))
            continue;
        count++;
        if (sig)
            kill((pid_t)pid, sig);
    }
    closedir(d);
    return count;
}

int webdriver_quit(WebDriver *driver)
{
    if (!driver)
        return 0;
    if (driver->session) {
        command(driver, "DELETE", "", true, NULL, NULL);
        free(driver->session);
        driver->session = NULL;
    }
    if (driver->pid > 0) {
        kill(driver->pid, SIGTERM);
        long long deadline = harness_now_ms() + WEBDRIVER_STOP_GRACE_MS;
        while (waitpid(driver->pid, NULL, WNOHANG) == 0) {
            if (harness_now_ms() >= deadline) {
                fprintf(stderr, "webdriver: chromedriver ignored SIGTERM; killing it\n");
                kill(driver->pid, SIGKILL);
                waitpid(driver->pid, NULL, 0);
                break;
            }
            sleep_ms(50);
        }
        driver->pid = 0;
    }
    if (driver->pgid <= 0)
        return 0;
    /* Chromium's helpers may need a moment after the browser process went away. */
    long long deadline = harness_now_ms() + WEBDRIVER_STOP_GRACE_MS;
    int left;
    while ((left = survivors(driver, 0)) > 0 && harness_now_ms() < deadline)
        sleep_ms(100);
    if (left > 0) {
        fprintf(stderr, "webdriver: %d processes of chromedriver's left running; killing them\n",
                left);
        survivors(driver, SIGKILL);
    }
    driver->pgid = 0;
    return left;
}

void webdriver_free(WebDriver *driver)
{
    if (!driver)
        return;
    webdriver_quit(driver);
    if (driver->profile)
        harness_rmtree(driver->profile);
    free(driver->session);
    free(driver->log_path);
    free(driver->profile);
    free(driver);
}
