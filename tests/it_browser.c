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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "harness.h"
#include "util.h"

#define QEMU_URI "qemu:///system"
/* Under TCG a cold boot to a drawn page takes about a minute; allow for a loaded host. */
#define READY_TIMEOUT_S 420

/* The page: magenta everywhere, a green square in the middle. */
static const char page[] =
    "<!DOCTYPE html><html><head><title>legba test page</title><style>"
    "html,body{margin:0;width:100%;height:100%;background:#ff00ff;overflow:hidden}"
    "#mark{position:fixed;left:50%;top:50%;width:400px;height:300px;margin:-150px 0 0 -200px;"
    "background:#00c000}</style></head><body><div id=\"mark\"></div></body></html>";

static struct {
    char *dir, *data_dir, *images_dir, *config;
    char org[40];
    char auth[160];
    HarnessLegbad *legbad;
    virConnectPtr conn;
    int listen_fd;
    uint16_t web_port;
    pthread_t web_thread;
    unsigned page_requests;
    pthread_mutex_t lock;
} b = {.listen_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

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
            if (root) {
                hlen = snprintf(head, sizeof(head),
                                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                                "Content-Length: %zu\r\nCache-Control: no-store\r\n\r\n",
                                strlen(page));
                pthread_mutex_lock(&b.lock);
                b.page_requests++;
                pthread_mutex_unlock(&b.lock);
            } else {
                hlen = snprintf(head, sizeof(head),
                                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            }
            if (write(fd, head, (size_t)hlen) != hlen ||
                (root && write(fd, page, strlen(page)) != (ssize_t)strlen(page)))
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

static int web_start(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(addr);
    b.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (b.listen_fd < 0 || bind(b.listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(b.listen_fd, 16) < 0 ||
        getsockname(b.listen_fd, (struct sockaddr *)&addr, &alen) < 0)
        return -1;
    b.web_port = ntohs(addr.sin_port);
    return pthread_create(&b.web_thread, NULL, web_loop, NULL) == 0 ? 0 : -1;
}

/* ---- setup ---- */

static void silence(void *userdata, virErrorPtr error)
{
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
            "guest_forward = 127.0.0.1:%u\n",
            b.web_port);
    fclose(f);

    cJSON *json = NULL;
    if (harness_legbactl(b.data_dir, HARNESS_LIST("org", "create", "browser-test"), &json) != 0 ||
        !json)
        return -1;
    snprintf(b.org, sizeof(b.org), "%s",
             cJSON_GetStringValue(cJSON_GetObjectItem(json, "org_uuid")));
    snprintf(b.auth, sizeof(b.auth), "Authorization: Bearer %s",
             cJSON_GetStringValue(cJSON_GetObjectItem(json, "token")));
    cJSON_Delete(json);

    HarnessLegbadOptions options = {
        .dir = b.dir,
        .data_dir = b.data_dir,
        .images_dir = b.images_dir,
        .libvirt_uri = QEMU_URI,
        .extra_args = HARNESS_LIST("--config", b.config),
    };
    return harness_legbad_start(&options, &b.legbad);
}

static int group_teardown(void **state)
{
    if (b.legbad) {
        harness_legbad_stop(b.legbad);
        harness_legbad_free(b.legbad);
    }
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
    if (b.dir && !getenv("LEGBA_IT_KEEP"))
        harness_rmtree(b.dir);
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

static void create(const char *image, const char *size, const char *start_url, char ret_uuid[40])
{
    char path[128], body[512];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances", b.org);
    if (start_url)
        snprintf(body, sizeof(body), "{\"image\":\"%s\",\"size\":\"%s\",\"start_url\":\"%s\"}",
                 image, size, start_url);
    else
        snprintf(body, sizeof(body), "{\"image\":\"%s\",\"size\":\"%s\"}", image, size);
    assert_int_equal(harness_http(b.legbad->port, "POST", path,
                                  HARNESS_LIST(b.auth, "Content-Type: application/json"), body,
                                  strlen(body), &resp),
                     0);
    if (resp.status != 201)
        fail_with_log("create", &resp);
    /* Creating does not wait for the guest. */
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(resp.json, "ready")));
    snprintf(ret_uuid, 40, "%s",
             cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "instance_uuid")));
    harness_response_done(&resp);
}

/* Polls the instance until ready; returns the seconds it took. */
static int wait_ready(const char *uuid)
{
    char path[160];
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", b.org, uuid);
    time_t start = time(NULL);
    for (;;) {
        HarnessResponse resp = {0};
        assert_int_equal(
            harness_http(b.legbad->port, "GET", path, HARNESS_LIST(b.auth), NULL, 0, &resp), 0);
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
        if (time(NULL) - start > READY_TIMEOUT_S)
            fail_with_log("instance never reported ready", NULL);
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

/* The VM's screen, through libvirt, as RGB (QEMU's PNG, or PPM from older ones). */
static void screenshot(const char *uuid, Picture *ret)
{
    char name[64];
    snprintf(name, sizeof(name), "legba-%s", uuid);
    virDomainPtr dom = virDomainLookupByName(b.conn, name);
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

/* Share of pixels in the rectangle within 40 of the colour on each channel. */
static double share_of(const Picture *p, unsigned x0, unsigned y0, unsigned w, unsigned h, int r,
                       int g, int bl)
{
    size_t hits = 0, total = 0;
    for (unsigned y = y0; y < y0 + h && y < p->height; y++) {
        for (unsigned x = x0; x < x0 + w && x < p->width; x++) {
            const uint8_t *px = p->rgb + ((size_t)y * p->width + x) * 3;
            total++;
            hits += abs(px[0] - r) < 40 && abs(px[1] - g) < 40 && abs(px[2] - bl) < 40;
        }
    }
    return total ? (double)hits / (double)total : 0;
}

static void delete_instance(const char *uuid)
{
    char path[160];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", b.org, uuid);
    assert_int_equal(
        harness_http(b.legbad->port, "DELETE", path, HARNESS_LIST(b.auth), NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 204);
    harness_response_done(&resp);
}

/*
 * Boots the image, waits for ready, checks the screen's resolution is the
 * size's and, with the test's start_url, that its page is on the screen.
 */
static void browse(const char *image, const char *size, unsigned width, unsigned height,
                   bool with_start_url)
{
    char uuid[40];
    pthread_mutex_lock(&b.lock);
    unsigned requests_before = b.page_requests;
    pthread_mutex_unlock(&b.lock);

    time_t t0 = time(NULL);
    create(image, size, with_start_url ? "http://10.0.2.100/" : NULL, uuid);
    int waited = wait_ready(uuid);
    fprintf(stderr, "it_browser: %s (%s): ready %d s after create (%lld s incl. request)\n", image,
            size, waited, (long long)(time(NULL) - t0));

    pthread_mutex_lock(&b.lock);
    unsigned requests = b.page_requests - requests_before;
    pthread_mutex_unlock(&b.lock);
    Picture pic = {0};
    screenshot(uuid, &pic);
    assert_int_equal(pic.width, width);
    assert_int_equal(pic.height, height);
    if (!with_start_url) {
        free(pic.rgb);
        delete_instance(uuid);
        return;
    }
    assert_true(requests >= 1);
    /* The green square, centred; magenta in a band near the top left, away from any UI. */
    double green = share_of(&pic, width / 2 - 150, height / 2 - 100, 300, 200, 0x00, 0xc0, 0x00);
    double magenta = share_of(&pic, 40, height / 4, width / 4, height / 4, 0xff, 0x00, 0xff);
    fprintf(stderr, "it_browser: %s: centre %.0f%% green, left %.0f%% magenta\n", image,
            green * 100, magenta * 100);
    free(pic.rgb);
    if (green < 0.95 || magenta < 0.95)
        fail_with_log("the page is not on the screen", NULL);

    delete_instance(uuid);
}

static void test_chromium_shows_start_url(void **state)
{
    browse("debian-12-chromium", "medium", 1600, 900, true);
}

/* Firefox: boot to its built-in page drawn, at the small size's resolution. */
static void test_firefox_boots_to_ready(void **state)
{
    browse("debian-12-firefox", "small", 1280, 720, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chromium_shows_start_url),
        cmocka_unit_test(test_firefox_boots_to_ready),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
