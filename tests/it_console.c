/*
 * Tier 3: the console end to end on real QEMU under qemu:///system (TCG
 * where the host has no KVM), with the tiny image: the access URL's key
 * is exchanged for a cookie, the cookie and the page's origin open a
 * WebSocket, and RFB 3.8 is spoken through it to the instance's VNC
 * server. Also the refusals (wrong cookie, cross-site origin, too many
 * viewers), the frames a viewer may not send, and DELETE closing an
 * open console within a second.
 *
 * After every test no domain of this run and no overlay is left.
 * Needs root and a running libvirtd (tools/setup provides both).
 * Set LEGBA_IT_KEEP=1 to keep the temp dir (data, images, legbad logs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "uuid.h"

#define QEMU_URI "qemu:///system"
#define KEY_HEX_LEN 64
#define MAX_CREATED 8
/* What the server must answer an RFB message within, under TCG on a busy host. */
#define RFB_TIMEOUT_MS 20000
#define FRAMEBUFFER_UPDATE_TIMEOUT_MS 30000
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static struct {
    char *dir, *data_dir, *images_dir, *overlays_dir;
    char org[UUID_STR_LEN];
    char auth[160];
    char origin[64]; /* http://127.0.0.1:PORT, the origin of the default public URL */
    HarnessLegbad *legbad;
    bool legbad_configured; /* started with a test's own config file */
    unsigned n_started;
    virConnectPtr conn;
    /* Instances the current test created and has not deleted yet. */
    char created[MAX_CREATED][UUID_STR_LEN];
} c;

/* One instance as a viewer sees it. */
typedef struct {
    char uuid[UUID_STR_LEN];
    char key[KEY_HEX_LEN + 1];
    char cookie[128]; /* "Cookie: legba_console=…" once logged in */
    char prefix[80];  /* "/console/<uuid>/" */
} Console;

/* ---- an open console: the WebSocket, and the VNC byte stream inside it ---- */

typedef struct {
    HarnessWs *ws;
    HarnessWsMessage last; /* the message received last, kept until the next one */
    uint8_t *data;         /* VNC bytes received and not read yet */
    size_t len, off;
} Stream;

/*
 * Every open Stream, so that what a failed test (cmocka's failures
 * longjmp) leaves open is closed after it, not leaked.
 */
static Stream *open_streams[16];

static Stream *stream_new(HarnessWs *ws)
{
    Stream *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->ws = ws;
    for (size_t i = 0; i < ARRAY_LEN(open_streams); i++) {
        if (!open_streams[i]) {
            open_streams[i] = s;
            return s;
        }
    }
    fail_msg("more than %zu consoles open at once", ARRAY_LEN(open_streams));
    return NULL;
}

/* Closes the TCP connection (no close frame) and frees; accepts NULL. */
static void stream_close(Stream *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < ARRAY_LEN(open_streams); i++)
        if (open_streams[i] == s)
            open_streams[i] = NULL;
    harness_ws_free(s->ws);
    harness_ws_message_done(&s->last);
    free(s->data);
    free(s);
}

/* The next message into s->last: 0 or -errno as harness_ws_recv() says. */
static int stream_recv(Stream *s, long long timeout_ms)
{
    harness_ws_message_done(&s->last);
    return harness_ws_recv(s->ws, timeout_ms > 0 ? (int)timeout_ms : 0, &s->last);
}

static void silence(void *userdata, virErrorPtr error)
{
}

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool is_lower_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static const char *json_string(const cJSON *object, const char *name)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(object, name));
}

/* ---- assertions that say what the server answered ---- */

static void fail_response(const char *file, int line, const HarnessResponse *resp, const char *fmt,
                          ...) __attribute__((format(printf, 4, 5)));
static void fail_response(const char *file, int line, const HarnessResponse *resp, const char *fmt,
                          ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    print_error("%s:%d: %s\n  response: HTTP %d, body (%zu bytes): %.2000s\n", file, line, what,
                resp->status, resp->body_len, resp->body ? resp->body : "");
    if (c.legbad)
        print_error("  legbad log: %s\n", c.legbad->log_path);
    _fail(file, line);
}

#define assert_status(resp, want)                                                                  \
    do {                                                                                           \
        if ((resp)->status != (want))                                                              \
            fail_response(__FILE__, __LINE__, (resp), "status %d expected", (want));               \
    } while (0)

/* Status, a JSON error body with this code, a JSON Content-Type. */
#define assert_error(resp, want_status, want_code)                                                 \
    do {                                                                                           \
        assert_status((resp), (want_status));                                                      \
        const char *code_ = harness_error_code(resp);                                              \
        const char *type_ = harness_header((resp), "Content-Type");                                \
        if (!code_ || strcmp(code_, (want_code)) != 0)                                             \
            fail_response(__FILE__, __LINE__, (resp), "error code '%s' expected", (want_code));    \
        if (!type_ || strncmp(type_, "application/json", 16) != 0)                                 \
            fail_response(__FILE__, __LINE__, (resp), "Content-Type application/json expected");   \
    } while (0)

/* ---- legbad, before and after each test ---- */

static int start_legbad(const char *config_path)
{
    char log_name[64];
    snprintf(log_name, sizeof(log_name), "legbad-%u.log", ++c.n_started);
    HarnessLegbadOptions options = {
        .dir = c.dir,
        .data_dir = c.data_dir,
        .images_dir = c.images_dir,
        .libvirt_uri = QEMU_URI,
        .log_name = log_name,
        .extra_args = config_path ? HARNESS_LIST("--config", config_path) : NULL,
    };
    int r = harness_legbad_start(&options, &c.legbad);
    if (r == 0) {
        c.legbad_configured = config_path != NULL;
        snprintf(c.origin, sizeof(c.origin), "http://127.0.0.1:%u", c.legbad->port);
    }
    return r;
}

static void stop_legbad(void)
{
    if (!c.legbad)
        return;
    int status = harness_legbad_stop(c.legbad);
    if (status != 0) {
        fprintf(stderr, "it_console: legbad exited with status %d\n", status);
        harness_dump_file(c.legbad->log_path);
    }
    harness_legbad_free(c.legbad);
    c.legbad = NULL;
}

static int group_setup(void **state)
{
    virSetErrorFunc(NULL, silence);
    c.conn = virConnectOpen(QEMU_URI);
    if (!c.conn) {
        fprintf(stderr, "it_console: cannot connect to %s (run tools/setup as root first)\n",
                QEMU_URI);
        return -1;
    }
    if (harness_tempdir("legba-it-console-", &c.dir) < 0 ||
        asprintf(&c.data_dir, "%s/data", c.dir) < 0 ||
        asprintf(&c.images_dir, "%s/images", c.dir) < 0 ||
        asprintf(&c.overlays_dir, "%s/instances", c.data_dir) < 0)
        return -1;
    if (harness_build_image(c.images_dir, "tiny") != 0)
        return -1;
    cJSON *json = NULL;
    if (harness_legbactl(c.data_dir, HARNESS_LIST("org", "create", "console-test"), &json) != 0 ||
        !json_string(json, "org_uuid") || !json_string(json, "token")) {
        cJSON_Delete(json);
        return -1;
    }
    snprintf(c.org, sizeof(c.org), "%s", json_string(json, "org_uuid"));
    snprintf(c.auth, sizeof(c.auth), "Authorization: Bearer %s", json_string(json, "token"));
    cJSON_Delete(json);
    return start_legbad(NULL);
}

/* Destroys every domain of this run (its disks are in our temp dir); returns how many. */
static int destroy_our_domains(void)
{
    virDomainPtr *doms = NULL;
    int n = virConnectListAllDomains(c.conn, &doms, 0), found = 0;
    for (int i = 0; i < n; i++) {
        const char *name = virDomainGetName(doms[i]);
        char *xml = virDomainGetXMLDesc(doms[i], 0);
        if (name && strncmp(name, "legba-", 6) == 0 && xml && strstr(xml, c.dir)) {
            fprintf(stderr, "it_console: domain %s of this run is still defined\n", name);
            virDomainDestroy(doms[i]);
            virDomainUndefineFlags(doms[i], VIR_DOMAIN_UNDEFINE_NVRAM);
            found++;
        }
        free(xml);
        virDomainFree(doms[i]);
    }
    free(doms);
    return found;
}

static int group_teardown(void **state)
{
    stop_legbad();
    if (c.conn) {
        destroy_our_domains();
        virConnectClose(c.conn);
    }
    if (c.dir) {
        const char *keep = getenv("LEGBA_IT_KEEP");
        if (keep && keep[0] && strcmp(keep, "0") != 0)
            fprintf(stderr, "it_console: kept %s\n", c.dir);
        else
            harness_rmtree(c.dir);
    }
    free(c.dir);
    free(c.data_dir);
    free(c.images_dir);
    free(c.overlays_dir);
    return 0;
}

/* Before each test: the plain legbad (no config file), alive. */
static int test_setup(void **state)
{
    if (c.legbad && (harness_legbad_exited(c.legbad) || c.legbad_configured)) {
        if (harness_legbad_exited(c.legbad)) {
            fprintf(stderr, "it_console: legbad died (exit status %d); its log:\n",
                    c.legbad->exit_status);
            harness_dump_file(c.legbad->log_path);
        }
        stop_legbad();
    }
    memset(c.created, 0, sizeof(c.created));
    return c.legbad ? 0 : start_legbad(NULL);
}

static void forget_created(const char *uuid)
{
    for (size_t i = 0; i < MAX_CREATED; i++)
        if (strcmp(c.created[i], uuid) == 0)
            c.created[i][0] = '\0';
}

/* Empties dir (its files only: legbad keeps using the directory). */
static void remove_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            unlinkat(dirfd(d), e->d_name, 0);
    if (d)
        closedir(d);
}

/*
 * After each test: an instance the test did not delete (it failed first,
 * or leaked one) is deleted here, by a fresh legbad if the test's one
 * died; then no domain of this run and no overlay may be left. Anything
 * found makes the test fail, and is removed so the next test starts clean.
 */
static int test_teardown(void **state)
{
    int leftovers = 0;
    for (size_t i = 0; i < ARRAY_LEN(open_streams); i++)
        stream_close(open_streams[i]);
    if (c.legbad && harness_legbad_exited(c.legbad)) {
        fprintf(stderr, "it_console: legbad died (exit status %d) during the test; its log:\n",
                c.legbad->exit_status);
        harness_dump_file(c.legbad->log_path);
        harness_legbad_free(c.legbad);
        c.legbad = NULL;
        leftovers++;
    }
    if (!c.legbad && start_legbad(NULL) < 0)
        leftovers++;
    for (size_t i = 0; i < MAX_CREATED; i++) {
        if (!c.created[i][0])
            continue;
        fprintf(stderr, "it_console: instance %s was not deleted by the test\n", c.created[i]);
        char path[160];
        HarnessResponse resp = {0};
        snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", c.org, c.created[i]);
        if (c.legbad &&
            harness_http(c.legbad->port, "DELETE", path, HARNESS_LIST(c.auth), NULL, 0, &resp) == 0)
            harness_response_done(&resp);
        c.created[i][0] = '\0';
        leftovers++;
    }
    leftovers += destroy_our_domains();
    int overlays = harness_count_files(c.overlays_dir, "");
    if (overlays > 0) {
        fprintf(stderr, "it_console: %d file(s) left in %s\n", overlays, c.overlays_dir);
        remove_files(c.overlays_dir);
        leftovers++;
    }
    return leftovers ? -1 : 0;
}

/* ---- instances and console sessions ---- */

static void console_create(Console *ret)
{
    char path[160], want[160];
    static const char body[] = "{\"image\":\"tiny\",\"size\":\"small\"}";
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances", c.org);
    assert_int_equal(harness_http(c.legbad->port, "POST", path,
                                  HARNESS_LIST(c.auth, "Content-Type: application/json"), body,
                                  strlen(body), &resp),
                     0);
    assert_status(&resp, 201);
    const char *uuid = json_string(resp.json, "instance_uuid");
    const char *url = json_string(resp.json, "access_url");
    assert_non_null(uuid);
    for (size_t i = 0; i < MAX_CREATED; i++) {
        if (!c.created[i][0]) {
            snprintf(c.created[i], UUID_STR_LEN, "%s", uuid);
            break;
        }
    }
    if (strcmp(json_string(resp.json, "status") ? json_string(resp.json, "status") : "",
               "running") != 0)
        fail_response(__FILE__, __LINE__, &resp, "status running expected");

    /* http://127.0.0.1:PORT/console/<uuid>/#key=<64 lowercase hex>, nothing more. */
    snprintf(want, sizeof(want), "%s/console/%s/#key=", c.origin, uuid);
    if (!url || strncmp(url, want, strlen(want)) != 0 ||
        strlen(url) != strlen(want) + KEY_HEX_LEN || !is_lower_hex(url + strlen(want), KEY_HEX_LEN))
        fail_response(__FILE__, __LINE__, &resp, "access_url %s<64 lowercase hex> expected", want);
    *ret = (Console){0};
    snprintf(ret->uuid, sizeof(ret->uuid), "%s", uuid);
    snprintf(ret->key, sizeof(ret->key), "%s", url + strlen(want));
    snprintf(ret->prefix, sizeof(ret->prefix), "/console/%s/", uuid);
    harness_response_done(&resp);
}

static void console_delete(const char *uuid)
{
    char path[160];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", c.org, uuid);
    assert_int_equal(
        harness_http(c.legbad->port, "DELETE", path, HARNESS_LIST(c.auth), NULL, 0, &resp), 0);
    assert_status(&resp, 204);
    harness_response_done(&resp);
    forget_created(uuid);
}

/* The key for a cookie, as the viewer page does it: same origin, JSON body. */
static void console_login(Console *console)
{
    char path[160], body[128], origin[96];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "%ssession", console->prefix);
    snprintf(body, sizeof(body), "{\"key\":\"%s\"}", console->key);
    snprintf(origin, sizeof(origin), "Origin: %s", c.origin);
    assert_int_equal(harness_http(c.legbad->port, "POST", path,
                                  HARNESS_LIST("Content-Type: application/json", origin), body,
                                  strlen(body), &resp),
                     0);
    assert_status(&resp, 204);
    const char *cookie = harness_header(&resp, "Set-Cookie");
    static const char name[] = "legba_console=";
    if (!cookie || strncmp(cookie, name, strlen(name)) != 0 ||
        strcspn(cookie + strlen(name), ";") != KEY_HEX_LEN ||
        !is_lower_hex(cookie + strlen(name), KEY_HEX_LEN))
        fail_response(__FILE__, __LINE__, &resp, "Set-Cookie legba_console=<64 hex>; … expected");
    snprintf(console->cookie, sizeof(console->cookie), "Cookie: %.*s",
             (int)strlen(name) + KEY_HEX_LEN, cookie);
    harness_response_done(&resp);
}

/* Opens uuid's console WebSocket with an optional cookie line and origin. */
static int ws_open(const char *uuid, const char *cookie, const char *origin, HarnessWs **ret,
                   HarnessResponse *refusal)
{
    char path[160], origin_line[160];
    const char *headers[3] = {0};
    size_t n = 0;
    snprintf(path, sizeof(path), "/console/%s/websocket", uuid);
    if (cookie)
        headers[n++] = cookie;
    if (origin) {
        snprintf(origin_line, sizeof(origin_line), "Origin: %s", origin);
        headers[n++] = origin_line;
    }
    return harness_ws_connect(c.legbad->port, path, headers, ret, refusal);
}

/* The console is refused with this status and error code. */
static void assert_ws_refused(const char *uuid, const char *cookie, const char *origin,
                              int want_status, const char *want_code)
{
    HarnessWs *ws = NULL;
    HarnessResponse refusal = {0};
    int r = ws_open(uuid, cookie, origin, &ws, &refusal);
    if (r == 0) {
        harness_ws_free(ws);
        fail_msg("WebSocket to %s (cookie %s, origin %s) was opened; %d %s expected", uuid,
                 cookie ? "given" : "none", origin ? origin : "none", want_status, want_code);
    }
    if (r != -ECONNREFUSED)
        fail_msg("WebSocket to %s: no HTTP answer: %s", uuid, strerror(-r));
    assert_error(&refusal, want_status, want_code);
    harness_response_done(&refusal);
}

/* The console opens: 101 and a WebSocket, or the test fails with the refusal. */
static Stream *ws_open_ok(const Console *console)
{
    HarnessWs *ws = NULL;
    HarnessResponse refusal = {0};
    int r = ws_open(console->uuid, console->cookie, c.origin, &ws, &refusal);
    if (r == -ECONNREFUSED)
        fail_response(__FILE__, __LINE__, &refusal, "101 Switching Protocols expected");
    if (r < 0)
        fail_msg("WebSocket to %s: %s", console->uuid, strerror(-r));
    return stream_new(ws);
}

/*
 * Exactly n VNC bytes within timeout_ms: binary messages are joined into
 * one stream, pings are answered. A text message, a close or EOF fail.
 */
static void stream_read(Stream *s, void *out, size_t n, int timeout_ms)
{
    long long deadline = monotonic_ms() + timeout_ms;
    while (s->len - s->off < n) {
        int r = stream_recv(s, deadline - monotonic_ms());
        const HarnessWsMessage *m = &s->last;
        if (r < 0)
            fail_msg("waiting for %zu VNC bytes (%zu there): %s", n, s->len - s->off, strerror(-r));
        if (m->opcode == HARNESS_WS_CLOSE)
            fail_msg("the server closed the console (%d '%s') while %zu VNC bytes were awaited",
                     m->close_code, (char *)m->data, n);
        if (m->opcode == HARNESS_WS_TEXT)
            fail_msg("the server sent a text message; VNC goes in binary messages");
        if (m->opcode == HARNESS_WS_PING)
            assert_int_equal(harness_ws_send(s->ws, HARNESS_WS_PONG, m->data, m->len), 0);
        if (m->opcode == HARNESS_WS_BINARY) {
            if (s->off) {
                memmove(s->data, s->data + s->off, s->len - s->off);
                s->len -= s->off;
                s->off = 0;
            }
            uint8_t *grown = realloc(s->data, s->len + m->len + 1);
            assert_non_null(grown);
            s->data = grown;
            memcpy(s->data + s->len, m->data, m->len);
            s->len += m->len;
        }
    }
    memcpy(out, s->data + s->off, n);
    s->off += n;
}

static void stream_write(Stream *s, const void *data, size_t len)
{
    assert_int_equal(harness_ws_send(s->ws, HARNESS_WS_BINARY, data, len), 0);
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* RFB 3.8 up to ServerInit, security None, shared; the framebuffer's size. */
static void rfb_handshake(Stream *s, uint16_t *ret_width, uint16_t *ret_height)
{
    char version[13] = {0};
    stream_read(s, version, 12, RFB_TIMEOUT_MS);
    assert_string_equal(version, "RFB 003.008\n");
    stream_write(s, "RFB 003.008\n", 12);

    uint8_t n_types, types[255];
    stream_read(s, &n_types, 1, RFB_TIMEOUT_MS);
    if (n_types == 0) {
        uint8_t len[4];
        char reason[256] = {0};
        stream_read(s, len, 4, RFB_TIMEOUT_MS);
        uint32_t l = be32(len) < sizeof(reason) - 1 ? be32(len) : sizeof(reason) - 1;
        stream_read(s, reason, l, RFB_TIMEOUT_MS);
        fail_msg("the VNC server offered no security type: %s", reason);
    }
    stream_read(s, types, n_types, RFB_TIMEOUT_MS);
    assert_non_null(memchr(types, 1, n_types));
    stream_write(s, (uint8_t[]){1}, 1);

    uint8_t result[4];
    stream_read(s, result, 4, RFB_TIMEOUT_MS);
    assert_int_equal(be32(result), 0);
    stream_write(s, (uint8_t[]){1}, 1); /* ClientInit: shared */

    uint8_t init[24];
    stream_read(s, init, sizeof(init), RFB_TIMEOUT_MS);
    uint32_t name_len = be32(init + 20);
    assert_true(name_len < 4096);
    char name[4096];
    stream_read(s, name, name_len, RFB_TIMEOUT_MS);
    *ret_width = be16(init);
    *ret_height = be16(init + 2);
    assert_true(*ret_width > 0);
    assert_true(*ret_height > 0);
}

/*
 * The next close frame within timeout_ms (data, pings and pongs before it
 * are skipped); asserts its code unless want_code is 0. Its reason stays in
 * s->last.data until the next receive.
 */
static void expect_close(Stream *s, int timeout_ms, int want_code)
{
    long long deadline = monotonic_ms() + timeout_ms;
    for (;;) {
        int r = stream_recv(s, deadline - monotonic_ms());
        if (r < 0)
            fail_msg("a close frame %d expected within %d ms: %s", want_code, timeout_ms,
                     strerror(-r));
        if (s->last.opcode != HARNESS_WS_CLOSE)
            continue;
        if (want_code && s->last.close_code != want_code)
            fail_msg("close code %d expected, got %d ('%s')", want_code, s->last.close_code,
                     (char *)s->last.data);
        return;
    }
}

/* After the server's close frame: ours goes back, then the server closes the connection. */
static void finish_close(Stream *s, int code)
{
    uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    /* The server may have closed already: a failed send is not the point here. */
    harness_ws_send(s->ws, HARNESS_WS_CLOSE, payload, sizeof(payload));
    int r = stream_recv(s, 5000);
    if (r == 0) {
        const HarnessWsMessage *m = &s->last;
        char shown[64] = "";
        for (size_t i = 0, o = 0; i < m->len && o + 5 < sizeof(shown); i++)
            o += (size_t)snprintf(shown + o, sizeof(shown) - o,
                                  m->data[i] >= 0x20 && m->data[i] < 0x7f ? "%c" : "\\x%02x",
                                  m->data[i]);
        fail_msg("after its close frame (%d) the server sent opcode 0x%x (%zu bytes: %s); "
                 "RFC 6455 5.5.1: no data after a close, EOF expected",
                 code, m->opcode, m->len, shown);
    }
    assert_int_equal(r, -ECONNRESET);
}

static void http_get(const char *path, const char *const headers[], HarnessResponse *resp)
{
    int r = harness_http(c.legbad->port, "GET", path, headers, NULL, 0, resp);
    if (r < 0)
        fail_msg("GET %s: no HTTP answer: %s", path, strerror(-r));
}

/* ---- the tests ---- */

/* Key, cookie, WebSocket, RFB 3.8, a whole frame of the screen, a ping. */
static void console_happy_path(void **state)
{
    Console con;
    char path[160];
    HarnessResponse resp = {0};
    console_create(&con);

    /* GET shows the URL without its key. */
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", c.org, con.uuid);
    http_get(path, HARNESS_LIST(c.auth), &resp);
    assert_status(&resp, 200);
    char want[160];
    snprintf(want, sizeof(want), "%s%s", c.origin, con.prefix);
    assert_string_equal(json_string(resp.json, "access_url"), want);
    harness_response_done(&resp);

    console_login(&con);
    snprintf(path, sizeof(path), "%sstatus", con.prefix);
    http_get(path, HARNESS_LIST(con.cookie), &resp);
    assert_status(&resp, 200);
    assert_string_equal(json_string(resp.json, "status"), "running");
    assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(resp.json, "ready")));
    harness_response_done(&resp);

    Stream *s = ws_open_ok(&con);
    uint16_t width, height;
    rfb_handshake(s, &width, &height);

    /* FramebufferUpdateRequest, not incremental, the whole screen. */
    uint8_t request[10] = {3, 0, 0, 0, 0, 0};
    request[6] = (uint8_t)(width >> 8);
    request[7] = (uint8_t)width;
    request[8] = (uint8_t)(height >> 8);
    request[9] = (uint8_t)height;
    stream_write(s, request, sizeof(request));
    uint8_t update[4];
    stream_read(s, update, sizeof(update), FRAMEBUFFER_UPDATE_TIMEOUT_MS);
    assert_int_equal(update[0], 0); /* FramebufferUpdate */
    assert_true(be16(update + 2) >= 1);

    /* A ping is answered with a pong of the same payload (VNC data may come first). */
    static const char ping[] = "legba-console-ping-0123456789";
    assert_int_equal(harness_ws_send(s->ws, HARNESS_WS_PING, ping, strlen(ping)), 0);
    long long deadline = monotonic_ms() + 10000;
    for (;;) {
        int r = stream_recv(s, deadline - monotonic_ms());
        if (r < 0)
            fail_msg("no pong within 10 s: %s", strerror(-r));
        if (s->last.opcode == HARNESS_WS_CLOSE)
            fail_msg("close %d '%s' instead of a pong", s->last.close_code, (char *)s->last.data);
        if (s->last.opcode == HARNESS_WS_PONG)
            break;
    }
    assert_int_equal(s->last.len, strlen(ping));
    assert_memory_equal(s->last.data, ping, s->last.len);

    /* A normal close is answered with a close frame (RFC 6455 5.5.1), then the connection ends. */
    assert_int_equal(harness_ws_send(s->ws, HARNESS_WS_CLOSE, (uint8_t[]){0x03, 0xe8}, 2), 0);
    expect_close(s, 5000, 0);
    assert_int_equal(stream_recv(s, 5000), -ECONNRESET);
    stream_close(s);

    console_delete(con.uuid);
}

/* console_max_viewers = 1: a second viewer is refused until the first has gone. */
static void console_viewer_limit(void **state)
{
    char conf[512];
    snprintf(conf, sizeof(conf), "%s/viewers.conf", c.dir);
    FILE *f = fopen(conf, "we");
    assert_non_null(f);
    fprintf(f, "# one viewer per instance\nconsole_max_viewers = 1\n");
    fclose(f);
    stop_legbad();
    assert_int_equal(start_legbad(conf), 0);

    Console con;
    console_create(&con);
    console_login(&con);
    Stream *first = ws_open_ok(&con);
    /* The first viewer is really attached: the VNC server's banner comes through. */
    char version[13] = {0};
    stream_read(first, version, 12, RFB_TIMEOUT_MS);
    assert_string_equal(version, "RFB 003.008\n");

    assert_ws_refused(con.uuid, con.cookie, c.origin, 429, "too_many_viewers");

    /* The first one leaves as a browser does; within 2 s a new viewer gets in. */
    assert_int_equal(harness_ws_send(first->ws, HARNESS_WS_CLOSE, (uint8_t[]){0x03, 0xe8}, 2), 0);
    expect_close(first, 5000, 0);
    stream_close(first);
    long long start = monotonic_ms();
    HarnessWs *ws = NULL;
    HarnessResponse refusal = {0};
    int r;
    for (;;) {
        r = ws_open(con.uuid, con.cookie, c.origin, &ws, &refusal);
        if (r == 0 || monotonic_ms() - start > 2000)
            break;
        if (r == -ECONNREFUSED && refusal.status != 429)
            break;
        harness_response_done(&refusal);
        usleep(100 * 1000);
    }
    if (r == -ECONNREFUSED)
        fail_response(__FILE__, __LINE__, &refusal,
                      "a new viewer should get in within 2 s of the first one closing");
    assert_int_equal(r, 0);
    print_message("the second viewer got in %lld ms after the first closed\n",
                  monotonic_ms() - start);
    /* And it is a working console. */
    Stream *second = stream_new(ws);
    memset(version, 0, sizeof(version));
    stream_read(second, version, 12, RFB_TIMEOUT_MS);
    assert_string_equal(version, "RFB 003.008\n");
    stream_close(second);

    console_delete(con.uuid);
    stop_legbad();
}

/* On a running instance: only its own cookie, from its own origin, opens it. */
static void console_refusals(void **state)
{
    Console a, b;
    char path[160];
    HarnessResponse resp = {0};
    console_create(&a);
    console_create(&b);
    console_login(&a);
    console_login(&b);

    /* A's cookie on B's console. */
    assert_ws_refused(b.uuid, a.cookie, c.origin, 403, "forbidden");
    snprintf(path, sizeof(path), "%sstatus", b.prefix);
    http_get(path, HARNESS_LIST(a.cookie), &resp);
    assert_error(&resp, 403, "forbidden");
    harness_response_done(&resp);
    /* A cross-site page with the right cookie, and no Origin at all. */
    assert_ws_refused(a.uuid, a.cookie, "http://evil.example", 403, "origin_refused");
    assert_ws_refused(a.uuid, a.cookie, NULL, 403, "origin_refused");
    /* No cookie. */
    assert_ws_refused(a.uuid, NULL, c.origin, 403, "forbidden");

    /*
     * None of that took a viewer slot: all four of the default
     * console_max_viewers still open at once, and a fifth is refused.
     */
    Stream *viewers[4];
    for (size_t i = 0; i < 4; i++)
        viewers[i] = ws_open_ok(&a);
    assert_ws_refused(a.uuid, a.cookie, c.origin, 429, "too_many_viewers");
    for (size_t i = 0; i < 4; i++)
        stream_close(viewers[i]);
    stream_close(ws_open_ok(&b));

    console_delete(a.uuid);
    console_delete(b.uuid);
}

typedef struct {
    char path[160];
    HarnessResponse resp;
    int r;
} DeleteJob;

static void *delete_run(void *arg)
{
    DeleteJob *job = arg;
    job->r = harness_http(c.legbad->port, "DELETE", job->path, HARNESS_LIST(c.auth), NULL, 0,
                          &job->resp);
    return NULL;
}

/* DELETE closes an open console within a second, and its URL is gone. */
static void console_delete_closes(void **state)
{
    Console con;
    console_create(&con);
    console_login(&con);
    Stream *s = ws_open_ok(&con);
    uint16_t width, height;
    rfb_handshake(s, &width, &height);

    DeleteJob job = {0};
    snprintf(job.path, sizeof(job.path), "/orgs/%s/api/instances/%s", c.org, con.uuid);
    pthread_t thread;
    long long start = monotonic_ms();
    assert_int_equal(pthread_create(&thread, NULL, delete_run, &job), 0);

    /* A close frame 4000 "instance deleted", or the connection's end, within 1 s. */
    int r;
    do
        r = stream_recv(s, start + 1000 - monotonic_ms());
    while (r == 0 && s->last.opcode != HARNESS_WS_CLOSE);
    long long elapsed = monotonic_ms() - start;
    pthread_join(thread, NULL);
    forget_created(con.uuid);
    if (r < 0 && r != -ECONNRESET)
        fail_msg("the console was neither closed nor ended %lld ms after DELETE was sent (%s); "
                 "DELETE answered %d",
                 elapsed, strerror(-r), job.resp.status);
    print_message("console %s after %lld ms (close code %d '%s')\n", r == 0 ? "closed" : "ended",
                  elapsed, s->last.close_code, s->last.data ? (char *)s->last.data : "");
    assert_true(elapsed <= 1000);
    if (r == 0) {
        assert_int_equal(s->last.close_code, 4000);
        assert_string_equal((char *)s->last.data, "instance deleted");
        finish_close(s, 4000);
    }
    stream_close(s);

    assert_int_equal(job.r, 0);
    assert_status(&job.resp, 204);
    harness_response_done(&job.resp);

    HarnessResponse resp = {0};
    http_get(con.prefix, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
}

/* What a viewer may not send: text (1003), a frame past the message limit (1009). */
static void console_bad_frames(void **state)
{
    Console con;
    console_create(&con);
    console_login(&con);

    Stream *s = ws_open_ok(&con);
    assert_int_equal(harness_ws_send(s->ws, HARNESS_WS_TEXT, "hello", 5), 0);
    expect_close(s, 5000, 1003);
    finish_close(s, 1003);
    stream_close(s);

    /* A binary frame that declares 300 KiB: refused from its header, payload unread. */
    s = ws_open_ok(&con);
    static uint8_t some[4096];
    assert_int_equal(
        harness_ws_send_frame(s->ws, 0x80 | HARNESS_WS_BINARY, 300 * 1024, some, sizeof(some)), 0);
    expect_close(s, 5000, 1009);
    finish_close(s, 1009);
    stream_close(s);

    console_delete(con.uuid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(console_happy_path, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(console_refusals, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(console_bad_frames, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(console_delete_closes, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(console_viewer_limit, test_setup, test_teardown),
    };
    return cmocka_run_group_tests_name("it_console", tests, group_setup, group_teardown);
}
