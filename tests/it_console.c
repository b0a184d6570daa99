/*
 * Tier 3: the console end to end on real QEMU under qemu:///system (TCG
 * where the host has no KVM), with the tiny image: the access URL's key
 * is exchanged for a cookie, the cookie and the page's origin open a
 * WebSocket, and RFB 3.8 is spoken through it to the instance's VNC
 * server. Also the refusals (wrong cookie, cross-site origin, too many
 * viewers), the frames a viewer may not send, DELETE closing an open
 * console within a second, and the whole way over legbad's own HTTPS.
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "harness_assert.h"
#include "uuid.h"

#define QEMU_URI "qemu:///system"
#define MAX_CREATED 8
/* What the server must answer an RFB message within, under TCG on a busy host. */
#define RFB_TIMEOUT_MS 20000
#define FRAMEBUFFER_UPDATE_TIMEOUT_MS 30000
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static struct {
    char *dir, *data_dir, *images_dir, *overlays_dir;
    HarnessOrg org;
    char origin[64];      /* http(s)://127.0.0.1:PORT, the origin of the default public URL */
    char origin_line[80]; /* "Origin: " and that */
    HarnessLegbad *legbad;
    bool legbad_configured;   /* started with a test's own config file or TLS */
    char *tls_cert, *tls_key; /* self-signed for 127.0.0.1, made at setup */
    const char *ca_file;      /* tls_cert while legbad serves HTTPS, else NULL (plain HTTP) */
    unsigned n_started;
    virConnectPtr conn;
    /* Instances the current test created and has not deleted yet. */
    char created[MAX_CREATED][UUID_STR_LEN];
} c;

/* A failed assertion names this daemon's log. */
static const HarnessLegbad *harness_assert_legbad(void)
{
    return c.legbad;
}

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

/* ---- legbad, before and after each test ---- */

/* legbad with a config file (or none), serving HTTPS with the test certificate when tls. */
static int start_legbad(const char *config_path, bool tls)
{
    char log_name[64];
    const char *args[7] = {0};
    size_t n = 0;
    snprintf(log_name, sizeof(log_name), "legbad-%u.log", ++c.n_started);
    if (config_path) {
        args[n++] = "--config";
        args[n++] = config_path;
    }
    if (tls) {
        args[n++] = "--tls-cert";
        args[n++] = c.tls_cert;
        args[n++] = "--tls-key";
        args[n++] = c.tls_key;
    }
    HarnessLegbadOptions options = {
        .dir = c.dir,
        .data_dir = c.data_dir,
        .images_dir = c.images_dir,
        .libvirt_uri = QEMU_URI,
        .log_name = log_name,
        .extra_args = args,
    };
    int r = harness_legbad_start(&options, &c.legbad);
    if (r == 0) {
        c.legbad_configured = config_path || tls;
        c.ca_file = tls ? c.tls_cert : NULL;
        snprintf(c.origin, sizeof(c.origin), "%s://127.0.0.1:%u", tls ? "https" : "http",
                 c.legbad->port);
        snprintf(c.origin_line, sizeof(c.origin_line), "Origin: %s", c.origin);
    }
    return r;
}

/* One request to the current legbad, over HTTPS when it serves that. */
static int legbad_http(const char *method, const char *path, const char *const headers[],
                       const char *body, HarnessResponse *resp)
{
    return harness_http_tls(c.legbad->port, c.ca_file, method, path, headers, body,
                            body ? strlen(body) : 0, resp);
}

static int group_setup(void **state)
{
    /*
     * A libvirtd that goes away mid-run (restarted, say) must fail a libvirt
     * call, not kill the test with SIGPIPE and leave legbad and domains behind.
     */
    signal(SIGPIPE, SIG_IGN);
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
    if (harness_org_create(c.data_dir, "console-test", &c.org) < 0)
        return -1;
    if (harness_tls_cert(c.dir, &c.tls_cert, &c.tls_key) < 0)
        return -1;
    return start_legbad(NULL, false);
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
    harness_legbad_stop_free(&c.legbad);
    if (c.conn) {
        destroy_our_domains();
        virConnectClose(c.conn);
    }
    harness_tempdir_remove(c.dir);
    free(c.dir);
    free(c.data_dir);
    free(c.images_dir);
    free(c.overlays_dir);
    free(c.tls_cert);
    free(c.tls_key);
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
        harness_legbad_stop_free(&c.legbad);
    }
    memset(c.created, 0, sizeof(c.created));
    return c.legbad ? 0 : start_legbad(NULL, false);
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
    if (!c.legbad && start_legbad(NULL, false) < 0)
        leftovers++;
    for (size_t i = 0; i < MAX_CREATED; i++) {
        if (!c.created[i][0])
            continue;
        fprintf(stderr, "it_console: instance %s was not deleted by the test\n", c.created[i]);
        char path[160];
        HarnessResponse resp = {0};
        snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", c.org.uuid, c.created[i]);
        if (c.legbad && legbad_http("DELETE", path, HARNESS_LIST(c.org.auth), NULL, &resp) == 0)
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

static void console_create(HarnessConsole *ret)
{
    char path[160];
    static const char body[] = "{\"image\":\"tiny\",\"size\":\"small\"}";
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances", c.org.uuid);
    assert_int_equal(legbad_http("POST", path,
                                 HARNESS_LIST(c.org.auth, "Content-Type: application/json"), body,
                                 &resp),
                     0);
    assert_status(&resp, 201);
    const char *uuid = harness_json_string(resp.json, "instance_uuid");
    assert_non_null(uuid);
    for (size_t i = 0; i < MAX_CREATED; i++) {
        if (!c.created[i][0]) {
            snprintf(c.created[i], UUID_STR_LEN, "%s", uuid);
            break;
        }
    }
    if (strcmp(harness_json_string(resp.json, "status") ? harness_json_string(resp.json, "status")
                                                        : "",
               "running") != 0)
        fail_response(__FILE__, __LINE__, &resp, "status running expected");

    *ret = (HarnessConsole){0};
    assert_access_url(&resp, c.origin, uuid, ret->key);
    snprintf(ret->uuid, sizeof(ret->uuid), "%s", uuid);
    snprintf(ret->prefix, sizeof(ret->prefix), "/console/%s/", uuid);
    harness_response_done(&resp);
}

static void console_delete(const char *uuid)
{
    char path[160];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", c.org.uuid, uuid);
    assert_int_equal(legbad_http("DELETE", path, HARNESS_LIST(c.org.auth), NULL, &resp), 0);
    assert_status(&resp, 204);
    harness_response_done(&resp);
    forget_created(uuid);
}

/* The key for a cookie, as the viewer page does it: same origin, JSON body. */
static void console_login(HarnessConsole *console)
{
    HarnessResponse resp = {0};
    assert_int_equal(harness_console_session_tls(c.legbad->port, c.ca_file, console->uuid,
                                                 console->key, c.origin_line, &resp),
                     0);
    assert_console_login(&resp, console);
    /* Under HTTPS the cookie never travels in clear. */
    const char *set = harness_header(&resp, "Set-Cookie");
    if ((strstr(set, "; Secure") != NULL) != (c.ca_file != NULL))
        fail_response(__FILE__, __LINE__, &resp, "Set-Cookie '%s': %s expected", set,
                      c.ca_file ? "; Secure" : "no Secure");
    harness_response_done(&resp);
}

/* The console opens: 101 and a WebSocket, or the test fails with the refusal. */
static Stream *ws_open_ok(const HarnessConsole *console)
{
    HarnessWs *ws = NULL;
    HarnessResponse refusal = {0};
    int r = harness_console_ws_connect_tls(c.legbad->port, c.ca_file, console->uuid,
                                           console->cookie, c.origin_line, &ws, &refusal);
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
    long long deadline = harness_now_ms() + timeout_ms;
    while (s->len - s->off < n) {
        int r = stream_recv(s, deadline - harness_now_ms());
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
    long long deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        int r = stream_recv(s, deadline - harness_now_ms());
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
    int r = legbad_http("GET", path, headers, NULL, resp);
    if (r < 0)
        fail_msg("GET %s: no HTTP answer: %s", path, strerror(-r));
}

/* ---- the tests ---- */

/* Key, cookie, WebSocket, RFB 3.8, a whole frame of the screen, a ping. */
static void console_happy_path(void **state)
{
    HarnessConsole con;
    char path[160];
    HarnessResponse resp = {0};
    console_create(&con);

    /* GET shows the URL without its key. */
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", c.org.uuid, con.uuid);
    http_get(path, HARNESS_LIST(c.org.auth), &resp);
    assert_status(&resp, 200);
    char want[160];
    snprintf(want, sizeof(want), "%s%s", c.origin, con.prefix);
    assert_string_equal(harness_json_string(resp.json, "access_url"), want);
    harness_response_done(&resp);

    console_login(&con);
    snprintf(path, sizeof(path), "%sstatus", con.prefix);
    http_get(path, HARNESS_LIST(con.cookie), &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "status"), "running");
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
    long long deadline = harness_now_ms() + 10000;
    for (;;) {
        int r = stream_recv(s, deadline - harness_now_ms());
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
    harness_legbad_stop_free(&c.legbad);
    assert_int_equal(start_legbad(conf, false), 0);

    HarnessConsole con;
    console_create(&con);
    console_login(&con);
    Stream *first = ws_open_ok(&con);
    /* The first viewer is really attached: the VNC server's banner comes through. */
    char version[13] = {0};
    stream_read(first, version, 12, RFB_TIMEOUT_MS);
    assert_string_equal(version, "RFB 003.008\n");

    assert_ws_refused(c.legbad->port, con.uuid, con.cookie, c.origin_line, 429, "too_many_viewers");

    /* The first one leaves as a browser does; within 2 s a new viewer gets in. */
    assert_int_equal(harness_ws_send(first->ws, HARNESS_WS_CLOSE, (uint8_t[]){0x03, 0xe8}, 2), 0);
    expect_close(first, 5000, 0);
    stream_close(first);
    long long start = harness_now_ms();
    HarnessWs *ws = NULL;
    HarnessResponse refusal = {0};
    int r;
    for (;;) {
        r = harness_console_ws_connect_tls(c.legbad->port, c.ca_file, con.uuid, con.cookie,
                                           c.origin_line, &ws, &refusal);
        if (r == 0 || harness_now_ms() - start > 2000)
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
                  harness_now_ms() - start);
    /* And it is a working console. */
    Stream *second = stream_new(ws);
    memset(version, 0, sizeof(version));
    stream_read(second, version, 12, RFB_TIMEOUT_MS);
    assert_string_equal(version, "RFB 003.008\n");
    stream_close(second);

    console_delete(con.uuid);
    harness_legbad_stop_free(&c.legbad);
}

/* The instance's status as GET answers it (malloc'd), or NULL when it is not found. */
static char *instance_status(const char *uuid)
{
    char path[160];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", c.org.uuid, uuid);
    assert_int_equal(legbad_http("GET", path, HARNESS_LIST(c.org.auth), NULL, &resp), 0);
    const char *status = resp.status == 200 ? harness_json_string(resp.json, "status") : NULL;
    char *copy = status ? strdup(status) : NULL;
    harness_response_done(&resp);
    return copy;
}

/*
 * idle_timeout: an open console keeps a running instance alive past it;
 * once the last viewer leaves, the instance ends after idle_timeout.
 */
static void console_idle_timeout(void **state)
{
    enum { IDLE_S = 3, WATCHED_MS = 6000, END_BUDGET_MS = 10000 };
    char conf[512];
    snprintf(conf, sizeof(conf), "%s/idle.conf", c.dir);
    FILE *f = fopen(conf, "we");
    assert_non_null(f);
    fprintf(f, "idle_timeout = %d\n", IDLE_S);
    fclose(f);
    harness_legbad_stop_free(&c.legbad);
    assert_int_equal(start_legbad(conf, false), 0);

    HarnessConsole con;
    console_create(&con);
    console_login(&con);
    Stream *s = ws_open_ok(&con);
    char version[13] = {0};
    stream_read(s, version, 12, RFB_TIMEOUT_MS);
    assert_string_equal(version, "RFB 003.008\n");

    /* Watched for twice idle_timeout: still running. */
    long long start = harness_now_ms();
    while (harness_now_ms() - start < WATCHED_MS) {
        char *status = instance_status(con.uuid);
        if (!status || strcmp(status, "running") != 0)
            fail_msg("instance %s is %s after %lld ms with a viewer attached (idle_timeout %d s)",
                     con.uuid, status ? status : "gone", harness_now_ms() - start, IDLE_S);
        free(status);
        usleep(500 * 1000);
    }

    /* The viewer leaves as a browser does; then the instance ends. */
    assert_int_equal(harness_ws_send(s->ws, HARNESS_WS_CLOSE, (uint8_t[]){0x03, 0xe8}, 2), 0);
    expect_close(s, 5000, 0);
    stream_close(s);
    long long left = harness_now_ms();
    char *status = NULL;
    for (;;) {
        free(status);
        status = instance_status(con.uuid);
        if (status && strcmp(status, "terminated") == 0)
            break;
        if (harness_now_ms() - left > END_BUDGET_MS)
            fail_msg("instance %s is %s %lld ms after its last viewer left (idle_timeout %d s)",
                     con.uuid, status ? status : "gone", harness_now_ms() - left, IDLE_S);
        usleep(250 * 1000);
    }
    free(status);
    long long ended = harness_now_ms() - left;
    print_message("idle_timeout %d s: running through %d ms with a viewer, terminated %lld ms "
                  "after it left\n",
                  IDLE_S, WATCHED_MS, ended);
    assert_true(ended >= (IDLE_S - 1) * 1000);

    console_delete(con.uuid);
    harness_legbad_stop_free(&c.legbad);
}

/* On a running instance: only its own cookie, from its own origin, opens it. */
static void console_refusals(void **state)
{
    HarnessConsole a, b;
    char path[160];
    HarnessResponse resp = {0};
    console_create(&a);
    console_create(&b);
    console_login(&a);
    console_login(&b);

    /* A's cookie on B's console. */
    assert_ws_refused(c.legbad->port, b.uuid, a.cookie, c.origin_line, 403, "forbidden");
    snprintf(path, sizeof(path), "%sstatus", b.prefix);
    http_get(path, HARNESS_LIST(a.cookie), &resp);
    assert_error(&resp, 403, "forbidden");
    harness_response_done(&resp);
    /* A cross-site page with the right cookie, and no Origin at all. */
    assert_ws_refused(c.legbad->port, a.uuid, a.cookie, "Origin: http://evil.example", 403,
                      "origin_refused");
    assert_ws_refused(c.legbad->port, a.uuid, a.cookie, NULL, 403, "origin_refused");
    /* No cookie. */
    assert_ws_refused(c.legbad->port, a.uuid, NULL, c.origin_line, 403, "forbidden");

    /*
     * None of that took a viewer slot: all four of the default
     * console_max_viewers still open at once, and a fifth is refused.
     */
    Stream *viewers[4];
    for (size_t i = 0; i < 4; i++)
        viewers[i] = ws_open_ok(&a);
    assert_ws_refused(c.legbad->port, a.uuid, a.cookie, c.origin_line, 429, "too_many_viewers");
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
    job->r = legbad_http("DELETE", job->path, HARNESS_LIST(c.org.auth), NULL, &job->resp);
    return NULL;
}

/*
 * Sends DELETE of the console's instance from a thread (a TCG domain takes
 * seconds to die) and reads the console until a close frame or its end, at
 * most budget_ms. Returns what the last read returned (0: a close frame);
 * fails the test when neither came. *job holds the DELETE's answer.
 */
static int delete_until_closed(Stream *s, const HarnessConsole *con, int budget_ms,
                               const char *what, DeleteJob *job, long long *ret_elapsed)
{
    *job = (DeleteJob){0};
    snprintf(job->path, sizeof(job->path), "/orgs/%s/api/instances/%s", c.org.uuid, con->uuid);
    pthread_t thread;
    long long start = harness_now_ms();
    assert_int_equal(pthread_create(&thread, NULL, delete_run, job), 0);
    int r;
    do
        r = stream_recv(s, start + budget_ms - harness_now_ms());
    while (r == 0 && s->last.opcode != HARNESS_WS_CLOSE);
    long long elapsed = harness_now_ms() - start;
    pthread_join(thread, NULL);
    forget_created(con->uuid);
    if (r < 0 && r != -ECONNRESET)
        fail_msg("the console%s was neither closed nor ended %lld ms after DELETE was sent (%s); "
                 "DELETE answered %d",
                 what, elapsed, strerror(-r), job->resp.status);
    *ret_elapsed = elapsed;
    return r;
}

/* DELETE closes an open console within a second, and its URL is gone. */
static void console_delete_closes(void **state)
{
    HarnessConsole con;
    console_create(&con);
    console_login(&con);
    Stream *s = ws_open_ok(&con);
    uint16_t width, height;
    rfb_handshake(s, &width, &height);

    /* A close frame 4000 "instance deleted", or the connection's end, within 1 s. */
    DeleteJob job;
    long long elapsed;
    int r = delete_until_closed(s, &con, 1000, "", &job, &elapsed);
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
    HarnessConsole con;
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

/*
 * The console over legbad's own HTTPS: an https:// access URL, a Secure
 * cookie, the WebSocket over TLS, RFB 3.8 and one small FramebufferUpdate
 * (Debian's libmicrohttpd relays an upgraded TLS connection through a tiny
 * buffer, so nothing big: README, "Known limit"); then DELETE over HTTPS
 * ends the console within 2 s and the page is gone.
 */
static void console_tls(void **state)
{
    harness_legbad_stop_free(&c.legbad);
    assert_int_equal(start_legbad(NULL, true), 0);

    HarnessConsole con;
    long long t0 = harness_now_ms();
    console_create(&con); /* access_url https://127.0.0.1:PORT/console/<uuid>/#key=… */
    long long t_created = harness_now_ms();
    console_login(&con); /* with Secure */
    long long t_login = harness_now_ms();
    Stream *s = ws_open_ok(&con);
    long long t_open = harness_now_ms();
    uint16_t width, height;
    rfb_handshake(s, &width, &height);
    long long t_rfb = harness_now_ms();

    /*
     * QEMU answers a new viewer's first request, whatever its region, with
     * the whole screen (720x400 raw: 1.1 MB, seconds through the TLS relay,
     * and the close frame of the DELETE below would queue behind it).
     * SetEncodings [hextile] keeps that small; then FramebufferUpdateRequest,
     * not incremental, the 16x16 top left corner.
     */
    static const uint8_t hextile[8] = {2, 0, 0, 1, 0, 0, 0, 5};
    static const uint8_t request[10] = {3, 0, 0, 0, 0, 0, 0, 16, 0, 16};
    stream_write(s, hextile, sizeof(hextile));
    stream_write(s, request, sizeof(request));
    uint8_t update[4];
    stream_read(s, update, sizeof(update), FRAMEBUFFER_UPDATE_TIMEOUT_MS);
    assert_int_equal(update[0], 0); /* FramebufferUpdate */
    assert_true(be16(update + 2) >= 1);
    long long t_update = harness_now_ms();

    /* DELETE over HTTPS: the console gets its close frame, or its end, within 2 s. */
    DeleteJob job;
    long long elapsed;
    int r = delete_until_closed(s, &con, 2000, " over TLS", &job, &elapsed);
    print_message("over TLS (%ux%u screen): create %lld ms, session %lld ms, WebSocket open %lld "
                  "ms, RFB handshake %lld ms, 16x16 update %lld ms; console %s %lld ms after "
                  "DELETE (close code %d '%s')\n",
                  width, height, t_created - t0, t_login - t_created, t_open - t_login,
                  t_rfb - t_open, t_update - t_rfb, r == 0 ? "closed" : "ended", elapsed,
                  s->last.close_code, s->last.data ? (char *)s->last.data : "");
    assert_true(elapsed <= 2000);
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
    harness_legbad_stop_free(&c.legbad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(console_happy_path, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(console_refusals, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(console_bad_frames, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(console_delete_closes, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(console_viewer_limit, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(console_idle_timeout, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(console_tls, test_setup, test_teardown),
    };
    return cmocka_run_group_tests_name("it_console", tests, group_setup, group_teardown);
}
