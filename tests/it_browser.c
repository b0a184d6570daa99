/*
 * Tier 4: the real browser images, end to end. legbad on qemu:///system
 * creates an instance of each browser image with a start_url that points at
 * a page this test serves on loopback; the guest reaches it only through
 * QEMU user-mode networking with restrict=on and one forward
 * (guest_forward), so nothing else is reachable from the guest. The test
 * waits until the guest reports the page drawn (ready), takes the VM's
 * screenshot through libvirt and looks for the page's colours where the
 * page puts them, at the size's screen resolution.
 *
 * The access URL is checked the way a user meets it: headless Chromium
 * (driven over WebDriver, webdriver.h) opens it, the viewer page must show
 * the VM's screen, and a key typed into the viewer must reach the guest:
 * the page turns its colours on any key press, which shows both on the
 * VM's own screen and in the viewer.
 *
 * Network egress is checked last, with legbad restarted in egress mode and
 * a warm pool of Chromium VMs: the config lets guests reach only this
 * test's page server (egress_destinations = allowed), which a guest loads
 * through its gateway 10.0.2.2, while its probes of another loopback
 * service and of legbad are refused by the host's rules, and a guest given
 * that other service as its start_url shows the browser's error page;
 * nothing leaves loopback.
 *
 * IT_BROWSER_ONLY=name[,name…] runs only the named tests.
 *
 * The images are built once per machine into LEGBA_TEST_IMAGES_DIR
 * (default /var/cache/legba/test-images) and reused while their recipes
 * are unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "disk.h"
#include "harness.h"
#include "hotplug.h"
#include "util.h"
#include "webdriver.h"

#define QEMU_URI "qemu:///system"
/*
 * Under TCG a cold boot to a drawn page takes one to two minutes (Firefox:
 * three to four, its WebDriver session waits for the end of its startup);
 * allow for a loaded host.
 */
#define READY_TIMEOUT_S 600

/*
 * The page: magenta everywhere, a green square in the middle. Any key
 * press turns it blue with a yellow square (colours far from the first
 * two on every channel that matters) and tells the page server which key
 * it was (GET /key?k=…); a mouse button pressed on it is reported as the
 * key "mouse". Text pasted into it is reported (GET /pasted?t=…), and the
 * key "c" copies COPIED_IN_VM to the guest's clipboard.
 */
/* What the page copies on "c", and what the viewer sends to be pasted into it. */
#define COPIED_IN_VM "legba-copied-in-the-vm"
#define SENT_TO_VM "legba-sent-to-the-vm"

static const char page[] =
    "<!DOCTYPE html><html><head><title>legba test page</title><style>"
    "html,body{margin:0;width:100%;height:100%;background:#ff00ff;overflow:hidden}"
    "#mark{position:fixed;left:50%;top:50%;width:400px;height:300px;margin:-150px 0 0 -200px;"
    "background:#00c000}</style></head><body><div id=\"mark\"></div><script>"
    "document.addEventListener('keydown',function(e){"
    "document.documentElement.style.background=document.body.style.background='#0000ff';"
    "document.getElementById('mark').style.background='#ffff00';"
    "fetch('/key?k='+encodeURIComponent(e.key)).catch(function(){});"
    "if(e.key==='c'&&!e.ctrlKey){var t=document.createElement('textarea');"
    "t.value='" COPIED_IN_VM "';document.body.appendChild(t);t.select();"
    "document.execCommand('copy');t.remove();}});"
    "document.addEventListener('paste',function(e){e.preventDefault();"
    "fetch('/pasted?t='+encodeURIComponent(e.clipboardData.getData('text/plain')))"
    ".catch(function(){});});"
    "document.addEventListener('mousedown',function(){"
    "fetch('/key?k=mouse').catch(function(){});});"
    "</script></body></html>";

/* The page's colours before and after a key press. */
#define SQUARE_BEFORE 0x00, 0xc0, 0x00
#define BACKGROUND_BEFORE 0xff, 0x00, 0xff
#define SQUARE_AFTER 0xff, 0xff, 0x00
#define BACKGROUND_AFTER 0x00, 0x00, 0xff

static struct {
    char *dir, *data_dir, *images_dir, *config;
    HarnessOrg org;
    HarnessLegbad *legbad;
    virConnectPtr conn;
    int listen_fd;
    uint16_t web_port;
    pthread_t web_thread;
    unsigned page_requests;
    char last_key[32]; /* what the page last reported with /key?k=, as sent */
    char pasted[64];   /* what the page last reported with /pasted?t=, as sent */
    pthread_mutex_t lock;
    WebDriver *driver; /* a test's headless Chromium, so teardown ends it after a failure */
    /* A loopback service guests must not reach, and how many connections it saw. */
    int closed_fd;
    uint16_t closed_port;
    pthread_t closed_thread;
    unsigned closed_accepts;
    char probe_report[64]; /* what the egress page reported with /probed?, as sent */
} b = {.listen_fd = -1, .closed_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

/*
 * The egress page, loaded from the page server through the gateway: the
 * same colours, with the square grey until it has probed the forbidden
 * service and legbad (both on the host's loopback, seen from the guest at
 * 10.0.2.2), then green when both were refused, red when either answered.
 * It reports what happened and how long each probe took to /probed.
 */
static const char egress_page[] =
    "<!DOCTYPE html><html><head><title>legba egress test</title><style>"
    "html,body{margin:0;width:100%%;height:100%%;background:#ff00ff;overflow:hidden}"
    "#mark{position:fixed;left:50%%;top:50%%;width:400px;height:300px;margin:-150px 0 0 -200px;"
    "background:#808080}</style></head><body><div id=\"mark\"></div><script>"
    "function probe(port){var c=new AbortController(),t0=Date.now();"
    "setTimeout(function(){c.abort()},10000);"
    "return fetch('http://10.0.2.2:'+port+'/',{mode:'no-cors',cache:'no-store',signal:c.signal})"
    ".then(function(){return 'open'+(Date.now()-t0)},function(){return 'shut'+(Date.now()-t0)});}"
    "Promise.all([probe(%u),probe(%u)]).then(function(r){"
    "var shut=r[0].startsWith('shut')&&r[1].startsWith('shut');"
    "document.getElementById('mark').style.background=shut?'#00c000':'#ff0000';"
    "fetch('/probed?'+r.join('-')).catch(function(){});});"
    "</script></body></html>";

/* ---- the page server: every VM's forward is one long-lived stream of requests ---- */

static void *serve_stream(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *end;
        while ((end = strstr(buf, "\r\n\r\n"))) {
            bool root = strncmp(buf, "GET / ", 6) == 0;
            char head[256];
            int hlen;
            char egress[sizeof(egress_page) + 32];
            const char *body = page;
            if (strncmp(buf, "GET /egress ", 12) == 0) {
                root = true;
                snprintf(egress, sizeof(egress), egress_page, b.closed_port, b.legbad->port);
                body = egress;
            }
            /* The page's reports: what follows the prefix, up to the space before HTTP/1.1. */
            static const struct {
                const char *prefix;
                size_t offset, size;
            } reports[] = {
                {"GET /probed?", offsetof(typeof(b), probe_report), sizeof(b.probe_report)},
                {"GET /pasted?t=", offsetof(typeof(b), pasted), sizeof(b.pasted)},
                {"GET /key?k=", offsetof(typeof(b), last_key), sizeof(b.last_key)},
            };
            size_t r = 0;
            while (r < ARRAY_SIZE(reports) &&
                   strncmp(buf, reports[r].prefix, strlen(reports[r].prefix)) != 0)
                r++;
            if (r < ARRAY_SIZE(reports)) {
                const char *value = buf + strlen(reports[r].prefix);
                pthread_mutex_lock(&b.lock);
                snprintf((char *)&b + reports[r].offset, reports[r].size, "%.*s",
                         (int)strcspn(value, " \r\n"), value);
                pthread_mutex_unlock(&b.lock);
                hlen = snprintf(head, sizeof(head),
                                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                                "Cache-Control: no-store\r\n\r\n");
            } else if (root) {
                hlen = snprintf(head, sizeof(head),
                                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                                "Content-Length: %zu\r\nCache-Control: no-store\r\n\r\n",
                                strlen(body));
                pthread_mutex_lock(&b.lock);
                b.page_requests++;
                pthread_mutex_unlock(&b.lock);
            } else {
                hlen = snprintf(head, sizeof(head),
                                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            }
            if (write(fd, head, (size_t)hlen) != hlen ||
                (root && write(fd, body, strlen(body)) != (ssize_t)strlen(body)))
                goto out;
            size_t used = (size_t)(end + 4 - buf);
            memmove(buf, end + 4, len - used + 1);
            len -= used;
        }
        if (len == sizeof(buf) - 1)
            break;
    }
out:
    close(fd);
    return NULL;
}

static void *web_loop(void *arg)
{
    for (;;) {
        int fd = accept(b.listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, serve_stream, (void *)(intptr_t)fd) == 0)
            pthread_detach(t);
        else
            close(fd);
    }
}

/*
 * The forbidden service: counts every connection that reaches it and
 * answers the test page (magenta, green square), which a guest that got
 * through would show.
 */
static void *closed_loop(void *arg)
{
    for (;;) {
        int fd = accept(b.closed_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        pthread_mutex_lock(&b.lock);
        b.closed_accepts++;
        pthread_mutex_unlock(&b.lock);
        char request[4096], head[160];
        struct timeval wait = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
        if (recv(fd, request, sizeof(request), 0) > 0) {
            int n = snprintf(head, sizeof(head),
                             "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                             "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                             sizeof(page) - 1);
            if (send(fd, head, (size_t)n, MSG_NOSIGNAL) == n)
                send(fd, page, sizeof(page) - 1, MSG_NOSIGNAL);
        }
        close(fd);
    }
}

static int listen_loopback(int *ret_fd, uint16_t *ret_port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(addr);
    *ret_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*ret_fd < 0 || bind(*ret_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(*ret_fd, 16) < 0 || getsockname(*ret_fd, (struct sockaddr *)&addr, &alen) < 0)
        return -1;
    *ret_port = ntohs(addr.sin_port);
    return 0;
}

static int web_start(void)
{
    if (listen_loopback(&b.closed_fd, &b.closed_port) < 0 ||
        pthread_create(&b.closed_thread, NULL, closed_loop, NULL) != 0)
        return -1;
    if (listen_loopback(&b.listen_fd, &b.web_port) < 0)
        return -1;
    return pthread_create(&b.web_thread, NULL, web_loop, NULL) == 0 ? 0 : -1;
}

/* ---- setup ---- */

static void silence(void *userdata, virErrorPtr error)
{
}

/* legbad on qemu:///system with the config file, logging to log_name in the test's directory. */
static int start_legbad(const char *config, const char *log_name)
{
    HarnessLegbadOptions options = {
        .dir = b.dir,
        .data_dir = b.data_dir,
        .images_dir = b.images_dir,
        .libvirt_uri = QEMU_URI,
        .log_name = log_name,
        .extra_args = HARNESS_LIST("--config", config),
    };
    return harness_legbad_start(&options, &b.legbad);
}

static int group_setup(void **state)
{
    virSetErrorFunc(NULL, silence);
    b.conn = virConnectOpen(QEMU_URI);
    if (!b.conn) {
        fprintf(stderr, "it_browser: cannot connect to %s (run tools/setup as root)\n", QEMU_URI);
        return -1;
    }
    const char *images = getenv("LEGBA_TEST_IMAGES_DIR");
    b.images_dir = strdup(images && images[0] ? images : "/var/cache/legba/test-images");
    if (!b.images_dir || harness_tempdir("legba-it-browser-", &b.dir) < 0 ||
        asprintf(&b.data_dir, "%s/data", b.dir) < 0 ||
        asprintf(&b.config, "%s/legbad.conf", b.dir) < 0)
        return -1;
    static const char *const wanted[] = {"debian-12-chromium", "debian-12-firefox"};
    for (size_t i = 0; i < 2; i++) {
        if (harness_build_image(b.images_dir, wanted[i]) != 0) {
            fprintf(stderr, "it_browser: building %s failed\n", wanted[i]);
            return -1;
        }
    }
    if (web_start() < 0)
        return -1;

    FILE *f = fopen(b.config, "we");
    if (!f)
        return -1;
    fprintf(f,
            "# the guests' only way out: http://10.0.2.100/ -> this test's page server\n"
            "guest_forward = 127.0.0.1:%u\n"
            "# guests of an org set to egress reach that server only (as 10.0.2.2)\n"
            "egress_destinations = allowed\n"
            "egress_allow = 127.0.0.1:%u\n",
            b.web_port, b.web_port);
    fclose(f);

    if (harness_org_create(b.data_dir, "browser-test", &b.org) < 0)
        return -1;

    return start_legbad(b.config, "legbad.log");
}

static int group_teardown(void **state)
{
    webdriver_free(b.driver);
    b.driver = NULL;
    harness_legbad_stop_free(&b.legbad);
    if (b.conn) {
        /* Whatever a failed test left running on this test's disks goes. */
        virDomainPtr *doms = NULL;
        int n = virConnectListAllDomains(b.conn, &doms, 0);
        for (int i = 0; i < n; i++) {
            char *xml = virDomainGetXMLDesc(doms[i], 0);
            if (xml && b.dir && strstr(xml, b.dir)) {
                virDomainDestroy(doms[i]);
                virDomainUndefine(doms[i]);
            }
            free(xml);
            virDomainFree(doms[i]);
        }
        free(doms);
        virConnectClose(b.conn);
    }
    if (b.listen_fd >= 0) {
        shutdown(b.listen_fd, SHUT_RDWR);
        close(b.listen_fd);
        pthread_join(b.web_thread, NULL);
    }
    if (b.closed_fd >= 0) {
        shutdown(b.closed_fd, SHUT_RDWR);
        close(b.closed_fd);
        pthread_join(b.closed_thread, NULL);
    }
    harness_tempdir_remove(b.dir);
    free(b.dir);
    free(b.data_dir);
    free(b.images_dir);
    free(b.config);
    return 0;
}

/* ---- helpers ---- */

static void fail_with_log(const char *what, const HarnessResponse *resp)
{
    harness_dump_file(b.legbad->log_path);
    fail_msg("%s: HTTP %d %s", what, resp ? resp->status : 0, resp && resp->body ? resp->body : "");
}

/*
 * Creates an instance with the start_url and clipboard, which must start as
 * want_start says (Legba-Start: cold, warm or standby); *ret_access_url
 * (when not NULL) gets its access URL, key included.
 */
static void create(const char *image, const char *size, const char *start_url,
                   const char *clipboard, const char *want_start, char ret_uuid[40],
                   char **ret_access_url)
{
    char path[128], body[512];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances", b.org.uuid);
    snprintf(body, sizeof(body),
             "{\"image\":\"%s\",\"size\":\"%s\",\"start_url\":\"%s\",\"clipboard\":\"%s\"}", image,
             size, start_url, clipboard);
    assert_int_equal(harness_http(b.legbad->port, "POST", path,
                                  HARNESS_LIST(b.org.auth, "Content-Type: application/json"), body,
                                  strlen(body), &resp),
                     0);
    if (resp.status != 201)
        fail_with_log("create", &resp);
    const char *start = harness_header(&resp, "Legba-Start");
    if (!start || strcmp(start, want_start) != 0)
        fail_msg("%s %s started %s, %s expected", image, size, start ? start : "(none)",
                 want_start);
    /* Creating does not wait for the guest. */
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(resp.json, "ready")));
    snprintf(ret_uuid, 40, "%s",
             cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "instance_uuid")));
    if (ret_access_url) {
        const char *url = cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "access_url"));
        if (!url)
            fail_with_log("create answered no access_url", &resp);
        *ret_access_url = strdup(url);
        assert_non_null(*ret_access_url);
    }
    harness_response_done(&resp);
}

static void describe_screen(const char *uuid);

/* Polls the instance until ready; returns the seconds it took. */
static int wait_ready(const char *uuid)
{
    char path[160];
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", b.org.uuid, uuid);
    time_t start = time(NULL);
    for (;;) {
        HarnessResponse resp = {0};
        assert_int_equal(
            harness_http(b.legbad->port, "GET", path, HARNESS_LIST(b.org.auth), NULL, 0, &resp), 0);
        assert_int_equal(resp.status, 200);
        bool ready = cJSON_IsTrue(cJSON_GetObjectItem(resp.json, "ready"));
        if (ready) {
            const char *at = cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "ready_at"));
            assert_non_null(at);
            int64_t t;
            assert_int_equal(util_parse_iso8601(at, &t), 0);
            harness_response_done(&resp);
            return (int)(time(NULL) - start);
        }
        harness_response_done(&resp);
        if (time(NULL) - start > READY_TIMEOUT_S) {
            describe_screen(uuid);
            fail_with_log("instance never reported ready", NULL);
        }
        sleep(2);
    }
}

typedef struct {
    unsigned width, height;
    uint8_t *rgb;
} Picture;

typedef struct {
    char *data;
    size_t len;
} Buffer;

/* A screenshot is a few MB; more than 64 MiB is not one. */
static int stream_sink(virStreamPtr st, const char *data, size_t nbytes, void *opaque)
{
    Buffer *buf = opaque;
    if (buf->len + nbytes > 64u << 20)
        return -1;
    char *grown = realloc(buf->data, buf->len + nbytes + 1);
    if (!grown)
        return -1;
    memcpy(grown + buf->len, data, nbytes);
    buf->data = grown;
    buf->len += nbytes;
    buf->data[buf->len] = '\0';
    return (int)nbytes;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int paeth(int left, int up, int corner)
{
    int p = left + up - corner, pa = abs(p - left), pb = abs(p - up), pc = abs(p - corner);
    return pa <= pb && pa <= pc ? left : pb <= pc ? up : corner;
}

/*
 * QEMU hands libvirt a PNG when it can (8-bit RGB, not interlaced): the
 * IDAT chunks, inflated, are one filter byte and a row of pixels per line.
 */
static void decode_png(const uint8_t *data, size_t len, Picture *ret)
{
    assert_true(len > 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0);
    unsigned w = 0, h = 0, channels = 0;
    uint8_t *idat = NULL;
    size_t idat_len = 0;
    for (size_t at = 8; at + 12 <= len;) {
        uint32_t clen = be32(data + at);
        const uint8_t *type = data + at + 4, *body = data + at + 8;
        assert_true(at + 12 + clen <= len);
        if (memcmp(type, "IHDR", 4) == 0) {
            w = be32(body);
            h = be32(body + 4);
            assert_int_equal(body[8], 8);              /* bit depth */
            assert_true(body[9] == 2 || body[9] == 6); /* RGB or RGBA */
            assert_int_equal(body[12], 0);             /* not interlaced */
            channels = body[9] == 2 ? 3 : 4;
        } else if (memcmp(type, "IDAT", 4) == 0) {
            idat = realloc(idat, idat_len + clen);
            assert_non_null(idat);
            memcpy(idat + idat_len, body, clen);
            idat_len += clen;
        }
        at += 12 + clen;
    }
    assert_true(w > 0 && h > 0 && w <= 16384 && h <= 16384);
    size_t stride = (size_t)w * channels;
    uLongf raw_len = (uLongf)((stride + 1) * h);
    uint8_t *raw = malloc(raw_len);
    assert_non_null(raw);
    assert_int_equal(uncompress(raw, &raw_len, idat, idat_len), Z_OK);
    assert_int_equal(raw_len, (stride + 1) * h);
    free(idat);

    ret->width = w;
    ret->height = h;
    ret->rgb = malloc((size_t)w * h * 3);
    assert_non_null(ret->rgb);
    uint8_t *prev = calloc(stride, 1), *cur = malloc(stride);
    assert_non_null(prev);
    assert_non_null(cur);
    for (unsigned y = 0; y < h; y++) {
        const uint8_t *line = raw + (size_t)y * (stride + 1);
        for (size_t i = 0; i < stride; i++) {
            int a = i >= channels ? cur[i - channels] : 0, up = prev[i];
            int c = i >= channels ? prev[i - channels] : 0, x = line[1 + i];
            switch (line[0]) {
            case 0:
                cur[i] = (uint8_t)x;
                break;
            case 1:
                cur[i] = (uint8_t)(x + a);
                break;
            case 2:
                cur[i] = (uint8_t)(x + up);
                break;
            case 3:
                cur[i] = (uint8_t)(x + (a + up) / 2);
                break;
            case 4:
                cur[i] = (uint8_t)(x + paeth(a, up, c));
                break;
            default:
                fail_msg("PNG filter %d", line[0]);
            }
        }
        for (unsigned x = 0; x < w; x++)
            memcpy(ret->rgb + ((size_t)y * w + x) * 3, cur + (size_t)x * channels, 3);
        uint8_t *t = prev;
        prev = cur;
        cur = t;
    }
    free(prev);
    free(cur);
    free(raw);
}

static void decode_ppm(const char *data, size_t len, Picture *ret)
{
    unsigned w, h, maxval;
    int header = 0;
    assert_int_equal(sscanf(data, "P6 %u %u %u%n", &w, &h, &maxval, &header), 3);
    assert_int_equal(maxval, 255);
    header++; /* one whitespace byte ends the header */
    assert_true(len >= (size_t)header + (size_t)w * h * 3);
    ret->width = w;
    ret->height = h;
    ret->rgb = malloc((size_t)w * h * 3);
    assert_non_null(ret->rgb);
    memcpy(ret->rgb, data + header, (size_t)w * h * 3);
}

/* The instance's domain, or NULL when there is none. */
static virDomainPtr lookup_domain(const char *uuid)
{
    char name[64];
    snprintf(name, sizeof(name), "legba-%s", uuid);
    return virDomainLookupByName(b.conn, name);
}

/* The VM's screen, through libvirt, as RGB (QEMU's PNG, or PPM from older ones). */
static void screenshot(const char *uuid, Picture *ret)
{
    virDomainPtr dom = lookup_domain(uuid);
    assert_non_null(dom);
    virStreamPtr st = virStreamNew(b.conn, 0);
    assert_non_null(st);
    char *mime = virDomainScreenshot(dom, st, 0, 0);
    assert_non_null(mime);
    Buffer buf = {0};
    assert_int_equal(virStreamRecvAll(st, stream_sink, &buf), 0);
    char *data = buf.data;
    size_t len = buf.len;
    assert_int_equal(virStreamFinish(st), 0);
    virStreamFree(st);
    virDomainFree(dom);
    assert_true(len > 16);
    if (strstr(mime, "png"))
        decode_png((const uint8_t *)data, len, ret);
    else if (strstr(mime, "ppm"))
        decode_ppm(data, len, ret);
    else
        fail_msg("screenshot of type %s", mime);
    free(mime);
    free(data);
}

/*
 * Where a screen of the page lies in a picture: picture pixel = offset +
 * screen pixel * scale. The VM's own screenshot is the identity; the
 * viewer shows the screen scaled into its canvas.
 */
typedef struct {
    double left, top, scale_x, scale_y;
} Placement;

static const Placement unscaled = {0, 0, 1, 1};

/*
 * Share of pixels within 40 of the colour on each channel, in the
 * rectangle given in screen pixels (2 picture pixels trimmed off each edge,
 * where scaling blends the colours of both sides).
 */
static double share_of(const Picture *p, const Placement *at, double x, double y, double w,
                       double h, int r, int g, int bl)
{
    long x0 = (long)(at->left + x * at->scale_x + 0.5) + 2;
    long y0 = (long)(at->top + y * at->scale_y + 0.5) + 2;
    long x1 = (long)(at->left + (x + w) * at->scale_x + 0.5) - 2;
    long y1 = (long)(at->top + (y + h) * at->scale_y + 0.5) - 2;
    size_t hits = 0, total = 0;
    for (long py = y0 < 0 ? 0 : y0; py < y1 && py < (long)p->height; py++) {
        for (long px = x0 < 0 ? 0 : x0; px < x1 && px < (long)p->width; px++) {
            const uint8_t *c = p->rgb + ((size_t)py * p->width + (size_t)px) * 3;
            total++;
            hits += abs(c[0] - r) < 40 && abs(c[1] - g) < 40 && abs(c[2] - bl) < 40;
        }
    }
    return total ? (double)hits / (double)total : 0;
}

typedef struct {
    double square, background;
} PageShares;

/*
 * The page on a width x height screen: the share of the square's colour in
 * a box around the centre, and of the background in a band near the top
 * left, away from any UI; the colours before or after a key press.
 */
static PageShares page_shares(const Picture *p, const Placement *at, unsigned width,
                              unsigned height, bool pressed)
{
    PageShares s;
    if (pressed) {
        s.square = share_of(p, at, width / 2.0 - 150, height / 2.0 - 100, 300, 200, SQUARE_AFTER);
        s.background =
            share_of(p, at, 40, height / 4.0, width / 4.0, height / 4.0, BACKGROUND_AFTER);
    } else {
        s.square = share_of(p, at, width / 2.0 - 150, height / 2.0 - 100, 300, 200, SQUARE_BEFORE);
        s.background =
            share_of(p, at, 40, height / 4.0, width / 4.0, height / 4.0, BACKGROUND_BEFORE);
    }
    return s;
}

/*
 * For a failure: what the VM's screen shows, as the shares of the images'
 * start page (#1d2330), of the test page's colours and of white (a browser
 * error page), and where its screenshot is kept.
 */
static void describe_screen(const char *uuid)
{
    Picture pic = {0};
    screenshot(uuid, &pic);
    double start = share_of(&pic, &unscaled, 0, 0, pic.width, pic.height, 0x1d, 0x23, 0x30);
    double magenta = share_of(&pic, &unscaled, 0, 0, pic.width, pic.height, BACKGROUND_BEFORE);
    double white = share_of(&pic, &unscaled, 0, 0, pic.width, pic.height, 0xff, 0xff, 0xff);
    fprintf(stderr,
            "it_browser: instance %s's screen (%ux%u): %.0f%% the start page's colour, %.0f%% "
            "magenta, %.0f%% white\n",
            uuid, pic.width, pic.height, start * 100, magenta * 100, white * 100);
    free(pic.rgb);
}

static void delete_instance(const char *uuid)
{
    char path[160];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", b.org.uuid, uuid);
    assert_int_equal(
        harness_http(b.legbad->port, "DELETE", path, HARNESS_LIST(b.org.auth), NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 204);
    harness_response_done(&resp);
}

/*
 * Boots the image with the test's page as start_url and the clipboard
 * setting, waits for ready, and checks the screen's resolution is the
 * size's and the page is on it. The instance is left running for the
 * caller, who gets its uuid and access URL and deletes it.
 */
static void browse(const char *image, const char *size, const char *clipboard, unsigned width,
                   unsigned height, char ret_uuid[40], char **ret_access_url)
{
    pthread_mutex_lock(&b.lock);
    unsigned requests_before = b.page_requests;
    pthread_mutex_unlock(&b.lock);

    time_t t0 = time(NULL);
    create(image, size, "http://10.0.2.100/", clipboard, "cold", ret_uuid, ret_access_url);
    int waited = wait_ready(ret_uuid);
    fprintf(stderr, "it_browser: %s (%s): ready %d s after create (%lld s incl. request)\n", image,
            size, waited, (long long)(time(NULL) - t0));

    pthread_mutex_lock(&b.lock);
    unsigned requests = b.page_requests - requests_before;
    pthread_mutex_unlock(&b.lock);
    Picture pic = {0};
    screenshot(ret_uuid, &pic);
    assert_int_equal(pic.width, width);
    assert_int_equal(pic.height, height);
    assert_true(requests >= 1);
    PageShares s = page_shares(&pic, &unscaled, width, height, false);
    fprintf(stderr, "it_browser: %s: centre %.0f%% green, left %.0f%% magenta\n", image,
            s.square * 100, s.background * 100);
    free(pic.rgb);
    if (s.square < 0.95 || s.background < 0.95)
        fail_with_log("the page is not on the screen", NULL);
}

/* ---- the access URL in headless Chromium on this host ---- */

/*
 * The window of the host's headless Chromium (its viewport comes out
 * smaller, about 1700x857): the viewer scales the VM's screen (1600x900
 * or 1280x720) to fit, so the checks find the page through the canvas's
 * placement.
 */
#define VIEWER_WIDTH 1700
#define VIEWER_HEIGHT 1000
/* How long the viewer may take to connect, and each later change to show. */
#define VIEWER_CONNECT_TIMEOUT_S 60
#define CHANGE_TIMEOUT_S 20

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void driver_start(void)
{
    assert_null(b.driver);
    int r = webdriver_start(b.dir, VIEWER_WIDTH, VIEWER_HEIGHT, &b.driver);
    if (r < 0)
        fail_msg("cannot start chromedriver and headless Chromium: %s (run tools/setup)",
                 strerror(-r));
}

/* Ends the browser and checks that chromedriver and everything it started are gone. */
static void driver_stop(void)
{
    pid_t pid = webdriver_pid(b.driver);
    int left = webdriver_quit(b.driver);
    webdriver_free(b.driver);
    b.driver = NULL;
    assert_int_equal(left, 0);
    assert_true(kill(pid, 0) < 0 && errno == ESRCH);
}

/* The browser's page as a picture. */
static void page_screenshot(Picture *ret)
{
    uint8_t *png = NULL;
    size_t len = 0;
    assert_int_equal(webdriver_screenshot(b.driver, &png, &len), 0);
    decode_png(png, len, ret);
    free(png);
}

/* Runs a script that returns a string (or null: NULL); the caller frees. */
static char *page_string(const char *script)
{
    cJSON *value = NULL;
    if (webdriver_execute(b.driver, script, &value) < 0)
        return NULL;
    char *s = cJSON_IsString(value) ? strdup(value->valuestring) : NULL;
    cJSON_Delete(value);
    return s;
}

/*
 * A failure in the viewer: what the page says about itself (its state,
 * its text, its console) and legbad's log, then the test fails.
 */
static void viewer_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void viewer_fail(const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    char *state = page_string("return document.body ? document.body.dataset.state || '' : null;");
    char *url = page_string("return location.href.split('#')[0];");
    char *text = page_string("return document.body ? document.body.innerText.slice(0, 600) : '';");
    char *console = NULL;
    webdriver_browser_log(b.driver, &console);
    fprintf(stderr, "it_browser: viewer at %s\n  data-state: %s\n  text: %s\n  console:\n%s",
            url ? url : "?", state ? state : "(none)", text ? text : "?",
            console ? console : "(unavailable)\n");
    free(state);
    free(url);
    free(text);
    free(console);
    harness_dump_file(b.legbad->log_path);
    fail_msg("%s", what);
}

/* Waits until the viewer's body says data-state="connected"; returns the seconds it took. */
static double wait_connected(void)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *last = NULL;
    for (;;) {
        char *state = page_string("return document.body ? document.body.dataset.state || '' : "
                                  "null;");
        if (state && strcmp(state, "connected") == 0) {
            free(state);
            free(last);
            return seconds_since(&t0);
        }
        if (state && (!last || strcmp(state, last) != 0))
            fprintf(stderr, "it_browser: viewer state \"%s\" at %.1f s\n", state,
                    seconds_since(&t0));
        free(last);
        last = state;
        if (seconds_since(&t0) > VIEWER_CONNECT_TIMEOUT_S) {
            free(last);
            viewer_fail("the viewer did not connect within %d s", VIEWER_CONNECT_TIMEOUT_S);
        }
        sleep_ms(500);
    }
}

/*
 * While the guest boots the viewer shows its "starting" message, and the
 * key has left the address bar (exchanged for the cookie).
 */
static void wait_booting(void)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        char *state = page_string("return document.body ? document.body.dataset.state || '' : "
                                  "null;");
        bool booting = state && strcmp(state, "booting") == 0;
        if (!booting && state && strcmp(state, "connected") == 0)
            viewer_fail("the viewer connected before the guest was ready");
        free(state);
        if (booting)
            break;
        if (seconds_since(&t0) > VIEWER_CONNECT_TIMEOUT_S)
            viewer_fail("the viewer did not say the browser is starting within %d s",
                        VIEWER_CONNECT_TIMEOUT_S);
        sleep_ms(250);
    }
    char *text = page_string("return document.getElementById('message').textContent;");
    char *href = page_string("return location.href;");
    fprintf(stderr, "it_browser: viewer says \"%s\" %.1f s after navigation\n", text ? text : "?",
            seconds_since(&t0));
    assert_non_null(text);
    assert_non_null(strstr(text, "Starting the browser"));
    assert_non_null(href);
    assert_null(strstr(href, "key="));
    free(text);
    free(href);
}

/*
 * Where the viewer draws the screen: the canvas noVNC draws into holds
 * the whole framebuffer (width x height) and is scaled by CSS to fit.
 * Returns the placement in screenshot pixels; *ret_x, *ret_y get the
 * canvas centre in viewport CSS pixels, for a click.
 */
static Placement viewer_canvas(unsigned width, unsigned height, int *ret_x, int *ret_y)
{
    cJSON *v = NULL;
    assert_int_equal(webdriver_execute(b.driver,
                                       "var c = document.querySelector('#screen canvas');"
                                       "if (!c) return null;"
                                       "var r = c.getBoundingClientRect();"
                                       "return {x: r.left, y: r.top, w: r.width, h: r.height,"
                                       " cw: c.width, ch: c.height,"
                                       " dpr: window.devicePixelRatio};",
                                       &v),
                     0);
    if (!cJSON_IsObject(v)) {
        cJSON_Delete(v);
        viewer_fail("no canvas under #screen");
    }
    double x = cJSON_GetNumberValue(cJSON_GetObjectItem(v, "x"));
    double y = cJSON_GetNumberValue(cJSON_GetObjectItem(v, "y"));
    double w = cJSON_GetNumberValue(cJSON_GetObjectItem(v, "w"));
    double h = cJSON_GetNumberValue(cJSON_GetObjectItem(v, "h"));
    double cw = cJSON_GetNumberValue(cJSON_GetObjectItem(v, "cw"));
    double ch = cJSON_GetNumberValue(cJSON_GetObjectItem(v, "ch"));
    double dpr = cJSON_GetNumberValue(cJSON_GetObjectItem(v, "dpr"));
    cJSON_Delete(v);
    fprintf(stderr,
            "it_browser: canvas %.0fx%.0f drawn at (%.1f, %.1f) as %.1fx%.1f CSS px, "
            "device pixel ratio %.2f\n",
            cw, ch, x, y, w, h, dpr);
    if (cw != width || ch != height || w < 100 || h < 100)
        viewer_fail("the canvas is not the %ux%u screen", width, height);
    *ret_x = (int)(x + w / 2);
    *ret_y = (int)(y + h / 2);
    return (Placement){x * dpr, y * dpr, w / cw * dpr, h / ch * dpr};
}

/*
 * Polls the picture source until the page shows in the colours wanted
 * (square and background both at least min); returns the seconds it took,
 * or fails with what was last seen.
 */
typedef void (*PictureFn)(const char *uuid, Picture *ret);

static void vm_picture(const char *uuid, Picture *ret)
{
    screenshot(uuid, ret);
}

static void viewer_picture(const char *uuid, Picture *ret)
{
    page_screenshot(ret);
}

static double wait_for_page(const char *where, PictureFn take, const char *uuid,
                            const Placement *at, unsigned width, unsigned height, bool pressed,
                            double min)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        Picture pic = {0};
        take(uuid, &pic);
        PageShares s = page_shares(&pic, at, width, height, pressed);
        free(pic.rgb);
        double took = seconds_since(&t0);
        bool ok = s.square >= min && s.background >= min;
        if (ok || took > CHANGE_TIMEOUT_S) {
            fprintf(stderr, "it_browser: %s: centre %.1f%% %s, band %.1f%% %s after %.1f s\n",
                    where, s.square * 100, pressed ? "yellow" : "green", s.background * 100,
                    pressed ? "blue" : "magenta", took);
            if (ok)
                return took;
            if (b.driver)
                viewer_fail("%s: the page %s not shown within %d s", where,
                            pressed ? "after the key press is" : "is", CHANGE_TIMEOUT_S);
            fail_with_log("the page is not on the screen", NULL);
        }
        sleep_ms(500);
    }
}

static void last_key(char ret[32])
{
    pthread_mutex_lock(&b.lock);
    memcpy(ret, b.last_key, 32);
    pthread_mutex_unlock(&b.lock);
}

/* Waits up to CHANGE_TIMEOUT_S for the guest's page to report `want`; how long it took. */
static double wait_key(const char *want)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char key[32];
    for (;;) {
        last_key(key);
        if (strcmp(key, want) == 0)
            return seconds_since(&t0);
        if (seconds_since(&t0) > CHANGE_TIMEOUT_S)
            viewer_fail("the guest's page reported \"%s\", not \"%s\", within %d s", key, want,
                        CHANGE_TIMEOUT_S);
        sleep_ms(100);
    }
}

/* POST …/{uuid}/{action}, which must answer 200. */
static void instance_action(const char *uuid, const char *action)
{
    char path[200];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s/%s", b.org.uuid, uuid, action);
    assert_int_equal(
        harness_http(b.legbad->port, "POST", path, HARNESS_LIST(b.org.auth), NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 200);
    harness_response_done(&resp);
}

/* Waits up to 15 s for the viewer's state; how long it took. */
static double wait_state(const char *want)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        char *state = page_string("return document.body.dataset.state || '';");
        bool ok = state && strcmp(state, want) == 0;
        free(state);
        if (ok)
            return seconds_since(&t0);
        if (seconds_since(&t0) > 15)
            viewer_fail("the viewer does not say \"%s\" within 15 s", want);
        sleep_ms(200);
    }
}

/* Forgets what the page reported into field (b.last_key, b.pasted). */
static void clear_report(char *field)
{
    pthread_mutex_lock(&b.lock);
    field[0] = '\0';
    pthread_mutex_unlock(&b.lock);
}

/*
 * The WebDriver client and the page on their own, without a VM: headless
 * Chromium opens the page server directly, shows the page, and a key
 * typed after a click turns it, as the guest's browser will.
 */
static void test_webdriver_local_page(void **state)
{
    char url[64], key[32];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", b.web_port);
    clear_report(b.last_key);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    driver_start();
    fprintf(stderr, "it_browser: chromedriver and a session in %.1f s\n", seconds_since(&t0));
    assert_int_equal(webdriver_navigate(b.driver, url), 0);
    cJSON *size = NULL;
    assert_int_equal(webdriver_execute(b.driver,
                                       "return [window.innerWidth, window.innerHeight,"
                                       " window.devicePixelRatio];",
                                       &size),
                     0);
    unsigned w = (unsigned)cJSON_GetNumberValue(cJSON_GetArrayItem(size, 0));
    unsigned h = (unsigned)cJSON_GetNumberValue(cJSON_GetArrayItem(size, 1));
    double dpr = cJSON_GetNumberValue(cJSON_GetArrayItem(size, 2));
    cJSON_Delete(size);
    fprintf(stderr, "it_browser: viewport %ux%u, device pixel ratio %.2f\n", w, h, dpr);
    Placement at = {0, 0, dpr, dpr};
    wait_for_page("local page", viewer_picture, NULL, &at, w, h, false, 0.95);

    assert_int_equal(webdriver_click(b.driver, (int)w / 2, (int)h / 2), 0);
    wait_key("mouse");
    assert_int_equal(webdriver_type(b.driver, "a"), 0);
    wait_for_page("local page, key pressed", viewer_picture, NULL, &at, w, h, true, 0.95);
    last_key(key);
    assert_string_equal(key, "a");
    driver_stop();
}

/* The command line of a running instance's QEMU, its arguments joined by spaces. */
static char *qemu_cmdline(const char *uuid)
{
    size_t len;
    pid_t pid = harness_qemu_pid(uuid);
    char *cmdline = pid > 0 ? harness_process_cmdline(pid, &len) : NULL;
    if (!cmdline)
        fail_msg("no QEMU command line for instance %s (pid %d)", uuid, (int)pid);
    for (size_t i = 0; i < len; i++)
        if (cmdline[i] == '\0')
            cmdline[i] = ' ';
    return cmdline;
}

/* What the viewer's clipboard panel holds, or NULL; malloc'd. */
static char *panel_text(void)
{
    return page_string("return document.getElementById('clipboard-text').value;");
}

/*
 * Once the guest is ready the viewer connects and shows the page in its
 * canvas. A click there gives noVNC the keyboard focus (and the guest's
 * page, if it had not), and reaches the guest's page as a mouse button:
 * the mouse works. Returns where the viewer draws the screen.
 */
static Placement viewer_click_page(const char *uuid, unsigned width, unsigned height)
{
    double connected = wait_connected();
    fprintf(stderr, "it_browser: viewer connected %.1f s after the guest was ready\n", connected);
    int cx, cy;
    Placement at = viewer_canvas(width, height, &cx, &cy);
    wait_for_page("viewer", viewer_picture, uuid, &at, width, height, false, 0.9);
    clear_report(b.last_key);
    assert_int_equal(webdriver_click(b.driver, cx, cy), 0);
    fprintf(stderr, "it_browser: the guest's page saw the click %.1f s later\n", wait_key("mouse"));
    return at;
}

/*
 * Text sent from the viewer's panel, for an instance created with
 * clipboard `mode` ("to_vm" or "both"), on real QEMU: its domain has the
 * qemu-vdagent channel; the viewer shows its clipboard panel, with the
 * "Copy to my clipboard" button only for "both" (viewer.js, showClipboard);
 * and what was sent is what Ctrl+V pastes into the guest's page. The text
 * goes VNC (through the relay), QEMU's agent, the guest's spice-vdagent
 * and X's clipboard.
 */
static void clipboard_paste_sent(const char *uuid, const char *mode)
{
    /* A paste an earlier test's page reported must not count. */
    clear_report(b.pasted);
    char *cmdline = qemu_cmdline(uuid);
    if (!strstr(cmdline, "-chardev qemu-vdagent,") || !strstr(cmdline, ",clipboard=on,mouse=off") ||
        !strstr(cmdline, "\"name\":\"com.redhat.spice.0\""))
        fail_msg("no clipboard channel on the QEMU command line: %s", cmdline);
    free(cmdline);

    cJSON *hidden = NULL;
    assert_int_equal(
        webdriver_execute(b.driver,
                          "const p = document.getElementById('clipboard'); p.open = true;"
                          "document.getElementById('clipboard-text').value = '" SENT_TO_VM "';"
                          "document.getElementById('clipboard-send').click();"
                          "return [p.hidden, document.getElementById('clipboard-copy').hidden];",
                          &hidden),
        0);
    bool both = strcmp(mode, "both") == 0;
    bool panel_hidden = cJSON_IsTrue(cJSON_GetArrayItem(hidden, 0));
    cJSON *copy = cJSON_GetArrayItem(hidden, 1);
    bool copy_as_promised = cJSON_IsBool(copy) && cJSON_IsTrue(copy) == !both;
    cJSON_Delete(hidden);
    if (panel_hidden)
        viewer_fail("the viewer hides its clipboard panel from an instance with clipboard %s",
                    mode);
    if (!copy_as_promised)
        viewer_fail("the viewer %s its \"Copy to my clipboard\" button for clipboard %s",
                    both ? "hides" : "shows", mode);

    /* Ctrl+V into the viewer (the send gave it the focus back), until the page reports a paste. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char pasted[64] = "";
    for (int attempt = 0; !pasted[0] && attempt < 6; attempt++) {
        sleep_ms(1000);
        assert_int_equal(webdriver_chord(b.driver, WEBDRIVER_KEY_CONTROL, "v"), 0);
        for (int i = 0; i < 40 && !pasted[0]; i++) {
            sleep_ms(100);
            pthread_mutex_lock(&b.lock);
            snprintf(pasted, sizeof(pasted), "%s", b.pasted);
            pthread_mutex_unlock(&b.lock);
        }
    }
    fprintf(stderr,
            "it_browser: clipboard to the VM (%s): the page pasted \"%s\" %.1f s after the send\n",
            mode, pasted, seconds_since(&t0));
    if (strcmp(pasted, SENT_TO_VM) != 0)
        viewer_fail("the guest's page pasted \"%s\", not the viewer's \"" SENT_TO_VM "\"", pasted);
}

/*
 * The clipboard of an instance created with "both": text sent from the
 * viewer's panel is pasted in the guest (clipboard_paste_sent), and text
 * the page copies comes back the same way and shows up in the panel.
 */
static void clipboard_both_ways(const char *uuid)
{
    clipboard_paste_sent(uuid, "both");

    /* "c" makes the page copy; the text comes back to the viewer's panel. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(webdriver_type(b.driver, "c"), 0);
    char *text = NULL;
    for (;;) {
        free(text);
        text = panel_text();
        if (text && strcmp(text, COPIED_IN_VM) == 0)
            break;
        if (seconds_since(&t0) > CHANGE_TIMEOUT_S)
            viewer_fail("the viewer's clipboard panel holds \"%s\", not the guest's \"" COPIED_IN_VM
                        "\", %d s after the copy",
                        text ? text : "?", CHANGE_TIMEOUT_S);
        sleep_ms(200);
    }
    free(text);
    fprintf(stderr,
            "it_browser: clipboard from the VM: in the viewer's panel %.1f s after the copy\n",
            seconds_since(&t0));
}

/* How long the viewer's panel is watched for text the guest copied, which "to_vm" must keep out. */
#define KEPT_OUT_S 10

/*
 * The clipboard of an instance created with "to_vm": text sent from the
 * viewer's panel is pasted in the guest (clipboard_paste_sent), but text
 * the page copies never reaches the panel, which keeps what was sent.
 * Either the relay (its filter drops every cut text from the VM) or the
 * viewer (it takes text from the VM only for "both") would keep it out;
 * this proves the pair does.
 */
static void clipboard_to_vm_only(const char *uuid)
{
    clipboard_paste_sent(uuid, "to_vm");

    /* "c" makes the page copy; the watch starts once the page has reported the key. */
    assert_int_equal(webdriver_type(b.driver, "c"), 0);
    double key = wait_key("c");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned looks = 0;
    while (seconds_since(&t0) < KEPT_OUT_S) {
        char *text = panel_text();
        looks++;
        if (text && strcmp(text, COPIED_IN_VM) == 0)
            viewer_fail("with clipboard to_vm the guest's \"" COPIED_IN_VM
                        "\" reached the viewer's panel %.1f s after the copy",
                        seconds_since(&t0));
        if (!text || strcmp(text, SENT_TO_VM) != 0)
            viewer_fail(
                "with clipboard to_vm the viewer's panel holds \"%s\", not the \"" SENT_TO_VM
                "\" sent from it, %.1f s after the guest's copy",
                text ? text : "?", seconds_since(&t0));
        free(text);
        sleep_ms(200);
    }
    fprintf(stderr,
            "it_browser: clipboard to_vm: the page reported \"c\" %.1f s after it was typed; "
            "in %d s (%u looks) the viewer's panel never held the copy and kept \"" SENT_TO_VM
            "\"\n",
            key, KEPT_OUT_S, looks);
}

/*
 * Firefox, at the small size: the same page, opened over WebDriver BiDi,
 * in an instance created with clipboard "to_vm". Its access URL, opened
 * in the host's headless Chromium (the viewer is the same whatever the
 * guest's browser), shows the page, and the clipboard works one way only:
 * text sent from the viewer's panel is pasted into Firefox's page, while
 * text the page copies never comes back to the panel.
 */
static void test_firefox_shows_start_url(void **state)
{
    const unsigned width = 1280, height = 720;
    char uuid[40];
    char *access_url = NULL;
    browse("debian-12-firefox", "small", "to_vm", width, height, uuid, &access_url);

    driver_start();
    assert_int_equal(webdriver_navigate(b.driver, access_url), 0);
    free(access_url);
    viewer_click_page(uuid, width, height);
    clipboard_to_vm_only(uuid);
    driver_stop();
    delete_instance(uuid);
}

/*
 * The access URL end to end: a chromium instance shows the test page; the
 * URL from the create answer, opened in the host's headless Chromium,
 * connects, shows the VM's screen (the same colours where the page has
 * them), and a key typed into the viewer reaches the guest's page, which
 * changes both on the VM's own screen and in the viewer. Created with
 * clipboard "both", it carries text both ways (clipboard_both_ways).
 */
static void test_chromium_through_access_url(void **state)
{
    const unsigned width = 1600, height = 900;
    char uuid[40], key[32];
    char *access_url = NULL;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    create("debian-12-chromium", "medium", "http://10.0.2.100/", "both", "cold", uuid, &access_url);
    assert_non_null(strstr(access_url, "#key="));

    /* Opened at once, the viewer says the browser is still starting, and has the key put away. */
    driver_start();
    assert_int_equal(webdriver_navigate(b.driver, access_url), 0);
    free(access_url);
    wait_booting();

    int waited = wait_ready(uuid);
    fprintf(stderr, "it_browser: debian-12-chromium (medium): ready %d s after create\n", waited);
    /* The image's own check first: the screen has the size's resolution and shows the page. */
    Picture first = {0};
    screenshot(uuid, &first);
    assert_int_equal(first.width, width);
    assert_int_equal(first.height, height);
    free(first.rgb);
    wait_for_page("VM screen", vm_picture, uuid, &unscaled, width, height, false, 0.95);

    Placement at = viewer_click_page(uuid, width, height);
    assert_int_equal(webdriver_type(b.driver, "a"), 0);
    wait_for_page("VM screen, key typed in the viewer", vm_picture, uuid, &unscaled, width, height,
                  true, 0.95);
    wait_for_page("viewer, key typed", viewer_picture, uuid, &at, width, height, true, 0.9);
    last_key(key);
    fprintf(stderr, "it_browser: the guest's page reported key \"%s\"\n", key);
    assert_string_equal(key, "a");
    clipboard_both_ways(uuid);

    /* A stopped VM: the viewer loses its console and says so. */
    instance_action(uuid, "stop");
    fprintf(stderr, "it_browser: the viewer said \"stopped\" %.1f s after the stop\n",
            wait_state("stopped"));

    /*
     * Deleting the instance closes its console within a second, so the
     * viewer leaves "connected"; then its status check finds it "gone".
     */
    delete_instance(uuid);
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double left_connected = -1;
    char *state_after = NULL;
    for (;;) {
        free(state_after);
        state_after = page_string("return document.body.dataset.state || '';");
        if (left_connected < 0 && state_after && strcmp(state_after, "connected") != 0)
            left_connected = seconds_since(&t1);
        if (left_connected < 0 && seconds_since(&t1) > 5)
            viewer_fail("the viewer still says connected 5 s after the instance was deleted");
        if (state_after && strcmp(state_after, "gone") == 0)
            break;
        if (seconds_since(&t1) > 15)
            viewer_fail("the viewer says \"%s\", not \"gone\", 15 s after the instance was "
                        "deleted",
                        state_after ? state_after : "?");
        sleep_ms(200);
    }
    fprintf(stderr,
            "it_browser: after DELETE the viewer left \"connected\" in %.1f s and said "
            "\"gone\" in %.1f s\n",
            left_connected, seconds_since(&t1));
    free(state_after);
    driver_stop();
    fprintf(stderr, "it_browser: access URL test took %.0f s\n", seconds_since(&t0));
}

/* A probe's result as the page reported it: "shut" or "open", then milliseconds. */
static long probe_ms(const char *report, const char *want)
{
    if (strncmp(report, want, 4) != 0)
        return -1;
    return strtol(report + 4, NULL, 10);
}

/*
 * Network egress, under a config that allows only this test's page server,
 * for VMs taken from a warm pool (the agent opens each start_url at that
 * moment). One guest loads the allowed page through its
 * gateway, and the page's fetches of a second loopback service and of
 * legbad fail (slirp may turn the refusal into a timeout). Another gets
 * that second service as its start_url and shows the browser's error page,
 * not the service's page. Neither service ever sees a connection. The
 * rules are read back from the kernel, the QEMU command line from /proc,
 * and after DELETE nothing of either instance is left: no domain, disk or
 * QEMU log.
 */
/* The most legbad's log says a standby VM's guest gave back before its save, in MiB (0: never
 * said). */
static unsigned hotplug_given_back_mib(const char *log_path)
{
    FILE *f = fopen(log_path, "re");
    assert_non_null(f);
    char line[1024];
    unsigned most = 0;
    while (fgets(line, sizeof(line), f)) {
        const char *at = strstr(line, "its guest gave back ");
        unsigned given;
        if (at && sscanf(at, "its guest gave back %u of", &given) == 1 && given > most)
            most = given;
    }
    fclose(f);
    return most;
}

/* Waits until the domain's guest has plugged all of its virtio-mem memory; the seconds it took. */
static double wait_full_memory(const char *uuid)
{
    virDomainPtr dom = lookup_domain(uuid);
    assert_non_null(dom);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    Hotplug h = {0};
    for (;;) {
        char *xml = virDomainGetXMLDesc(dom, 0);
        assert_non_null(xml);
        assert_int_equal(hotplug_read(xml, &h), 0);
        free(xml);
        if (h.plugged_kib == h.size_kib || seconds_since(&t0) >= CHANGE_TIMEOUT_S * 3)
            break;
        sleep_ms(500);
    }
    virDomainFree(dom);
    if (h.plugged_kib < h.size_kib)
        fail_with_log("the restored VM did not plug its memory again", NULL);
    return seconds_since(&t0);
}

static void test_egress_confined(void **state)
{
    char path[256];
    struct passwd *qemu = getpwnam("libvirt-qemu");
    assert_non_null(qemu);

    /* The installed rules, as the kernel holds them. */
    char *rules = NULL;
    assert_int_equal(harness_run(HARNESS_LIST("nft", "list", "table", "inet", "legba"), &rules), 0);
    char want[160];
    snprintf(want, sizeof(want), "meta skuid %u jump guests", (unsigned)qemu->pw_uid);
    const char *skuid = strstr(rules, want);
    snprintf(want, sizeof(want), "ip daddr 127.0.0.1 tcp dport %u accept", b.web_port);
    const char *allow = strstr(rules, want);
    const char *fib = strstr(rules, "fib daddr type { local, broadcast, anycast, multicast }");
    const char *v4 = strstr(rules, "ip daddr { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, "
                                   "127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, ");
    const char *v6 = strstr(rules, "ip6 daddr { ::/127, ::ffff:0.0.0.0/96, ");
    if (!skuid || !allow || !fib || !v4 || !v6 || !(skuid < allow && allow < fib && fib < v4) ||
        !strstr(v4, "192.168.0.0/16") || !strstr(v6, "fc00::/7") || !strstr(v6, "fe80::/10") ||
        !strstr(v6, "ff00::/8") || !strstr(v6, "\t\tcounter packets"))
        fail_msg("the egress rules are not as configured:\n%s", rules);
    fprintf(stderr, "it_browser: egress rules read back:\n%s", rules);
    free(rules);

    /*
     * legbad again, with egress for every org and two Chromium VMs in the
     * pool, a small one warm and a medium one on standby: the creates below
     * take one each, and the agent opens their start_url at that moment.
     */
    char conf[512];
    snprintf(conf, sizeof(conf), "%s/egress.conf", b.dir);
    FILE *f = fopen(conf, "we");
    assert_non_null(f);
    fprintf(f,
            "guest_forward = 127.0.0.1:%u\negress_destinations = allowed\n"
            "egress_allow = 127.0.0.1:%u\nnetwork = egress\n"
            "pool = debian-12-chromium:small:1 debian-12-chromium:medium:1:standby\n"
            "pool_boots = 2\n",
            b.web_port, b.web_port);
    fclose(f);
    assert_int_equal(harness_legbad_stop_free(&b.legbad), 0);
    assert_int_equal(start_legbad(conf, "legbad-egress.log"), 0);
    long long t0 = harness_now_ms();
    if (harness_pool_wait(b.data_dir, "debian-12-chromium", "small", "warm", 1, READY_TIMEOUT_S) !=
            0 ||
        harness_pool_wait(b.data_dir, "debian-12-chromium", "medium", "standby", 1,
                          READY_TIMEOUT_S) != 0)
        fail_with_log("the pool did not fill", NULL);
    /*
     * Before the save the guest gave back most of its virtio-mem memory (1536
     * of its 2048 MiB): the saved state and the restore cover the rest only.
     */
    unsigned given = hotplug_given_back_mib(b.legbad->log_path);
    fprintf(stderr,
            "it_browser: egress: a warm and a standby Chromium VM in the pool %.0f s after start; "
            "its guest gave back %u of 1536 MiB of hotplugged memory before the save\n",
            (harness_now_ms() - t0) / 1000.0, given);
    if (given < 768)
        fail_with_log("the standby VM kept most of its hotplugged memory through its save", NULL);

    /* The allowed page, through the allow rule: it probes the forbidden services. */
    char uuid[40], refused[40];
    snprintf(path, sizeof(path), "http://10.0.2.2:%u/egress", b.web_port);
    t0 = harness_now_ms();
    create("debian-12-chromium", "small", path, "none", "warm", uuid, NULL);
    char *cmdline = qemu_cmdline(uuid);
    if (!strstr(cmdline, "-netdev user,id=legbanet0,restrict=off,ipv6=off,guestfwd="))
        fail_msg("no egress netdev on the QEMU command line: %s", cmdline);
    /* Clipboard "none" (and every pool VM): no clipboard channel at all. */
    if (strstr(cmdline, "qemu-vdagent") || strstr(cmdline, "com.redhat.spice.0"))
        fail_msg("a clipboard channel on the QEMU command line: %s", cmdline);
    free(cmdline);
    int waited = wait_ready(uuid);
    fprintf(stderr, "it_browser: egress: warm VM ready on its start_url %.1f s after create\n",
            (harness_now_ms() - t0) / 1000.0);

    char report[64] = "";
    for (int i = 0; i < 60 && !report[0]; i++) {
        pthread_mutex_lock(&b.lock);
        snprintf(report, sizeof(report), "%s", b.probe_report);
        pthread_mutex_unlock(&b.lock);
        if (!report[0])
            sleep(1);
    }
    pthread_mutex_lock(&b.lock);
    unsigned accepts = b.closed_accepts;
    pthread_mutex_unlock(&b.lock);
    fprintf(stderr,
            "it_browser: egress: page from 10.0.2.2:%u ready %d s after create; probes of "
            "loopback services (closed one :%u, legbad :%u): %s; the closed one saw %u "
            "connections\n",
            b.web_port, waited, b.closed_port, b.legbad->port, report[0] ? report : "(none)",
            accepts);
    if (!report[0])
        fail_with_log("the egress page never reported its probes", NULL);
    /* Green once both probes failed (red if either got through), on the allowed page. */
    wait_for_page("egress", vm_picture, uuid, &unscaled, 1280, 720, false, 0.95);
    const char *second = strchr(report, '-');
    long closed_ms = probe_ms(report, "shut"),
         legbad_ms = second ? probe_ms(second + 1, "shut") : -1;
    if (closed_ms < 0 || legbad_ms < 0)
        fail_with_log("a loopback service answered the guest", NULL);

    /*
     * The forbidden service as the start_url, through the gateway: the
     * browser shows its error page, not the service's magenta and green.
     */
    snprintf(path, sizeof(path), "http://10.0.2.2:%u/", b.closed_port);
    t0 = harness_now_ms();
    create("debian-12-chromium", "medium", path, "none", "standby", refused, NULL);
    waited = wait_ready(refused);
    Picture pic = {0};
    screenshot(refused, &pic);
    PageShares shares = page_shares(&pic, &unscaled, 1600, 900, false);
    double white = share_of(&pic, &unscaled, 0, 0, 1600, 900, 0xff, 0xff, 0xff);
    free(pic.rgb);
    pthread_mutex_lock(&b.lock);
    accepts = b.closed_accepts;
    pthread_mutex_unlock(&b.lock);
    fprintf(stderr,
            "it_browser: egress: start_url %s ready %.1f s after create (standby); screen %.0f%% "
            "white, centre %.0f%% green, band %.0f%% magenta; the service saw %u connections\n",
            path, (harness_now_ms() - t0) / 1000.0, white * 100, shares.square * 100,
            shares.background * 100, accepts);
    if (shares.square > 0.05 || shares.background > 0.05)
        fail_with_log("the forbidden service's page is on the screen", NULL);
    /* Chromium's error page is white with grey text: most of the screen. */
    if (white < 0.8)
        fail_with_log("no browser error page on the screen", NULL);
    /* Neither service saw the guests at all (the probes ask for "/", which no test asks legbad). */
    assert_int_equal(accepts, 0);
    if (harness_log_contains(b.legbad->log_path, " GET / "))
        fail_with_log("legbad was reached from the guest", NULL);

    /* The standby one has all of its RAM again: its guest plugged the memory it gave back. */
    double plugged = wait_full_memory(refused);
    fprintf(stderr, "it_browser: egress: the restored VM had all of its RAM back %.1f s later\n",
            plugged);

    const char *gone[] = {uuid, refused};
    for (size_t i = 0; i < ARRAY_SIZE(gone); i++) {
        delete_instance(gone[i]);
        snprintf(path, sizeof(path), "/var/log/libvirt/qemu/legba-%s.log", gone[i]);
        if (access(path, F_OK) == 0)
            fail_msg("%s survived DELETE", path);
        virDomainPtr dom = lookup_domain(gone[i]);
        if (dom) {
            virDomainFree(dom);
            fail_msg("domain legba-%s survived DELETE", gone[i]);
        }
        char *overlay = disk_overlay_path(b.data_dir, gone[i]);
        assert_non_null(overlay);
        if (access(overlay, F_OK) == 0)
            fail_msg("%s survived DELETE", overlay);
        free(overlay);
    }

    /* The first config again: no pool, so legbad removes the VMs that refilled it. */
    assert_int_equal(harness_legbad_stop_free(&b.legbad), 0);
    assert_int_equal(start_legbad(b.config, "legbad-after-egress.log"), 0);
    if (harness_pool_wait(b.data_dir, "debian-12-chromium", "small", "warm", 0, 60) != 0 ||
        harness_pool_wait(b.data_dir, "debian-12-chromium", "medium", "standby", 0, 60) != 0)
        fail_with_log("the pool was not emptied", NULL);
}

int main(void)
{
    const struct CMUnitTest all[] = {
        cmocka_unit_test(test_webdriver_local_page),
        cmocka_unit_test(test_firefox_shows_start_url),
        cmocka_unit_test(test_chromium_through_access_url),
        cmocka_unit_test(test_egress_confined),
    };
    struct CMUnitTest tests[ARRAY_SIZE(all)];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(all); i++)
        if (harness_test_wanted("IT_BROWSER_ONLY", all[i].name))
            tests[n++] = all[i];
    if (n == 0) {
        fprintf(stderr, "it_browser: IT_BROWSER_ONLY matches no test\n");
        return 1;
    }
    return _cmocka_run_group_tests("it_browser", tests, n, group_setup, group_teardown);
}
