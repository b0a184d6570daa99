/*
 * legba's performance table: what a client and a viewer wait for, and what
 * legbad costs next to the tools underneath it, all measured in one run.
 *
 *   bench_legba [--quick] [--samples N] [--image NAME] [--size SIZE]
 *               [--images-dir DIR] [--list N] [--no-vm]
 *
 * Run it through tools/bench, which builds it and installs wrk and nginx.
 * docs/PERFORMANCE.md says what each row means and what limits it. In
 * short, for each of three paths, cold (no pool), warm (a booted VM taken
 * from the pool) and standby (a VM saved to disk, restored on take):
 *
 *   POST -> 201          sending the create to having read its whole 201;
 *   POST -> first frame  sending the create to having read the whole first
 *                        FramebufferUpdate through the access URL: the key
 *                        exchanged at .../session for the cookie, the
 *                        WebSocket opened with the access URL's Origin, RFB
 *                        3.8 with security None, SetEncodings (Raw),
 *                        FramebufferUpdateRequest for the whole screen. For
 *                        an image with the guest agent the WebSocket is
 *                        opened only once GET .../instances/ID says ready
 *                        (the browser has drawn its page), so the frame
 *                        counted shows the page;
 *
 * then legbad's cold create against a bare virDomainCreateXML of the same
 * domain, GET .../instances with many instances (libvirt's fake driver)
 * against nginx serving the same JSON as a file (both under wrk), the QEMU
 * process's RSS over the guest's RAM, and build/tests/bench_relay's rows.
 *
 * --quick (the ctest mode, under a minute): the agentless "tiny" image
 * built into a temp dir, 2 samples per path, 100 instances for the list,
 * short wrk runs, bench_relay --quick. The default: debian-12-chromium from
 * $LEGBA_TEST_IMAGES_DIR (built there when missing), 3 samples, 1000
 * instances. A path that cannot be measured prints "n/a" and why.
 *
 * Exit status: 0, also when a target is missed (machines are shared and
 * noisy); 1 when something that should work failed: an HTTP error, a
 * protocol error, legbad or a tool crashing, a pool that serves a create
 * cold; 2 for bad arguments. VMs boot one at a time (a pool refill may
 * overlap a sample's instance), on qemu:///system, without a network.
 */
#include <errno.h>
#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "image.h"
#include "util.h"

#define QEMU_URI "qemu:///system"
#define FULL_IMAGE "debian-12-chromium"
#define QUICK_IMAGE "tiny"
#define SAMPLES_DEFAULT 3
/* --quick: 2, so that it stays under a minute with the standby pool's boot and save. */
#define SAMPLES_QUICK 2
#define SAMPLES_MAX 100
#define LIST_FULL 1000
#define LIST_QUICK 100
#define LIST_MAX 20000
/* Parallel creates while filling the fake driver: a few, as a busy client would. */
#define LIST_FILL_THREADS 4
/* wrk: one thread (the machine has few cores, wrk competes for them), a few connections. */
#define WRK_CONNECTIONS "4"
#define WRK_SECONDS_QUICK 2
#define WRK_SECONDS_FULL 5
#define WRK_RUNS_FULL 3
/* Under TCG a browser boots in 60-120 s, and a standby pool VM is also saved. */
#define READY_TIMEOUT_QUICK_S 60
#define READY_TIMEOUT_FULL_S 900
#define FRAME_TIMEOUT_MS 30000
#define POLL_MS 50
#define RELAY_TIMEOUT_S 900
/*
 * A standby VM is taken this long after the pool says it is saved, as one
 * that waited would be: on hosts that are themselves VMs the memory its
 * QEMU freed at the save goes back to the outer hypervisor within seconds,
 * and a restore into memory freed a moment before would be faster than a
 * real take (docs/PERFORMANCE.md).
 */
#define STANDBY_IDLE_S 10

/* The targets, printed next to the figures; a missed one never fails the run. */
#define TARGET_WARM_CREATED_MS 50.0
#define TARGET_WARM_FRAME_MS 500.0
#define TARGET_STANDBY_FRAME_MS 3000.0
#define TARGET_COLD_RATIO 1.15
#define TARGET_LIST_RATIO 0.5

typedef enum { PATH_COLD, PATH_WARM, PATH_STANDBY, PATH_COUNT } Path;
static const char *const path_names[PATH_COUNT] = {"cold", "warm", "standby"};

typedef struct {
    double v[SAMPLES_MAX];
    unsigned n;
} Samples;

/* One figure's outcome: samples, or why there are none. */
typedef struct {
    Samples s;
    char na[320]; /* "" when measured */
} Figure;

typedef struct {
    /* options */
    bool quick;
    unsigned samples, list_n;
    const char *image, *size;
    char *images_dir; /* where the image for the VM rows is */

    /* the run */
    char *dir;             /* our temp dir: data dirs, configs, logs, bare overlays, nginx */
    char *tiny_images_dir; /* tiny, built here: the list's image (and --quick's) */
    Image *image_info;     /* the image's manifest; its agent: wait for ready before the frame */
    virConnectPtr conn;
    char qemu_na[256]; /* why no row on qemu:///system can be measured, or "" */
    char accel[256];   /* from legbad's log line "accel ...", on qemu:///system */
    unsigned legbads;
    int failures;

    Figure created[PATH_COUNT], frame[PATH_COUNT];
    Figure bare, bare_overlay, rss;
    Figure saved;       /* MiB of a standby VM's saved state, before each standby take */
    Figure standby_rss; /* MiB of QEMU RSS of a taken standby VM, after its first frame */
    double guest_mib;
    char *bare_xml; /* a cold instance's domain, its uuid, and its overlay's path */
    char bare_from_uuid[UUID_STR_LEN];
    char *bare_from_disk;
    char list_na[320];
    double list_legbad, list_nginx;
    double list_first_ms; /* the first GET after the last create: nothing cached from before */
    size_t list_bytes;
    char relay_na[320];
    char *relay_out;
} Bench;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = 1;
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void set_na(char *na, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_na(char *na, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(na, size, fmt, ap);
    va_end(ap);
}

#define NA(buf, ...) set_na((buf), sizeof(buf), __VA_ARGS__)

/* A failure of something that should work: counted (exit status 1) and said at once. */
#define FAIL(buf, ...)                                                                             \
    do {                                                                                           \
        NA(buf, __VA_ARGS__);                                                                      \
        b->failures++;                                                                             \
        progress("FAILED: %s", buf);                                                               \
    } while (0)

static void silence(void *userdata, virErrorPtr error)
{
}

static const char *virt_error(void)
{
    const char *m = virGetLastErrorMessage();
    return m ? m : "unknown libvirt error";
}

/* Microseconds on the monotonic clock, the start of a timing. */
static long long clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Milliseconds since start_us (from clock_us). */
static double ms_since(long long start_us)
{
    return (double)(clock_us() - start_us) / 1000.0;
}

static void samples_add(Samples *s, double v)
{
    if (s->n < SAMPLES_MAX)
        s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least q of them at or below it. */
static double percentile(const Samples *s, double q)
{
    double sorted[SAMPLES_MAX];
    memcpy(sorted, s->v, s->n * sizeof(double));
    qsort(sorted, s->n, sizeof(double), cmp_double);
    size_t rank = (size_t)ceil(q * (double)s->n);
    return sorted[rank > 0 ? rank - 1 : 0];
}

static int write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int r = -errno;
            close(fd);
            return r;
        }
        off += (size_t)n;
    }
    return close(fd) < 0 ? -errno : 0;
}

/* The whole file, NUL-terminated, or NULL. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char buf[4096];
    size_t n;
    while (mem && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, n, mem);
    fclose(f);
    if (mem)
        fclose(mem);
    return text;
}

/* The rest of the line after the first occurrence of needle in text, into out. */
static bool line_after(const char *text, const char *needle, char *out, size_t size)
{
    const char *p = text ? strstr(text, needle) : NULL;
    if (!p)
        return false;
    p += strlen(needle);
    size_t n = strcspn(p, "\n");
    snprintf(out, size, "%.*s", (int)n, p);
    return true;
}

/* ---- legbad ---- */

typedef struct {
    HarnessLegbad *legbad;
    HarnessOrg org;
    char *data_dir;
    char origin_line[80];
    char instances_path[128];
} Daemon;

/* A config file for a phase: the lines given, after a comment saying whose it is. */
static int write_config(Bench *b, const char *name, const char *lines, char **ret_path)
{
    char *path, *text;
    if (asprintf(&path, "%s/%s.conf", b->dir, name) < 0)
        return -ENOMEM;
    if (asprintf(&text, "# tools/bench, phase %s\n%s", name, lines) < 0) {
        free(path);
        return -ENOMEM;
    }
    int r = write_file(path, text, strlen(text));
    free(text);
    if (r < 0) {
        free(path);
        return r;
    }
    *ret_path = path;
    return 0;
}

/*
 * Whether legbad takes this config at all (the pool keys are new): its
 * --check-host exits 2 for a config that does not parse. On test:///default,
 * so that the probe boots nothing. 0, or -EINVAL with legbad's message in why.
 */
static int config_accepted(Bench *b, const char *config, const char *images_dir, char *why,
                           size_t why_size)
{
    char *legbad_bin = NULL, *data = NULL, *domains = NULL, *out = NULL;
    int r = -ENOMEM;
    const char *env = getenv("LEGBA_LEGBAD");
    if ((env && *env ? asprintf(&legbad_bin, "%s", env)
                     : asprintf(&legbad_bin, "%s/legbad", harness_binary_dir())) < 0 ||
        asprintf(&data, "%s/probe-data", b->dir) < 0 ||
        asprintf(&domains, "%s/domains", harness_source_dir()) < 0)
        goto out;
    int status =
        harness_run_merged(HARNESS_LIST(legbad_bin, "--check-host", "--config", config,
                                        "--libvirt-uri", "test:///default", "--data-dir", data,
                                        "--images-dir", images_dir, "--domains-dir", domains),
                           &out);
    if (status == 2) {
        char line[256] = "";
        const char *p = out ? out : "";
        const char *colon = strstr(p, ".conf:");
        /* "legbad: FILE:LINE: message": keep the message. */
        if (colon && (colon = strchr(colon + 6, ':')))
            p = colon + 1;
        while (*p == ' ')
            p++;
        snprintf(line, sizeof(line), "%.*s", (int)strcspn(p, ";\n"), p);
        snprintf(why, why_size, "%s", line);
        r = -EINVAL;
    } else {
        r = 0;
    }
out:
    free(legbad_bin);
    free(data);
    free(domains);
    free(out);
    return r;
}

static void daemon_stop(Bench *b, Daemon *d)
{
    if (d->legbad) {
        int status = harness_legbad_stop_free(&d->legbad);
        if (status != 0) {
            b->failures++;
            progress("FAILED: legbad exited with status %d at its stop", status);
        }
    }
    free(d->data_dir);
    d->data_dir = NULL;
}

/* A fresh data dir, an org in it, and legbad on uri with the config. */
static int daemon_start(Bench *b, Daemon *d, const char *phase, const char *uri,
                        const char *images_dir, const char *config, char *why, size_t why_size)
{
    char log_name[64];
    *d = (Daemon){0};
    if (asprintf(&d->data_dir, "%s/data-%s", b->dir, phase) < 0)
        return -ENOMEM;
    int r = harness_org_create(d->data_dir, "bench", &d->org);
    if (r < 0) {
        snprintf(why, why_size, "legbactl org create failed");
        return r;
    }
    snprintf(log_name, sizeof(log_name), "legbad-%s.log", phase);
    const char *args[] = {"--config", config, NULL};
    HarnessLegbadOptions options = {
        .dir = b->dir,
        .data_dir = d->data_dir,
        .images_dir = images_dir,
        .libvirt_uri = uri,
        .log_name = log_name,
        .extra_args = args,
    };
    r = harness_legbad_start(&options, &d->legbad);
    if (r < 0) {
        snprintf(why, why_size, "legbad did not start (%s; its log is above)", strerror(-r));
        return r;
    }
    b->legbads++;
    snprintf(d->origin_line, sizeof(d->origin_line), "Origin: http://127.0.0.1:%u",
             d->legbad->port);
    snprintf(d->instances_path, sizeof(d->instances_path), "/orgs/%s/api/instances", d->org.uuid);
    /* The machine line names the accel the VMs ran under: legbad on QEMU says it at start. */
    if (!b->accel[0] && strcmp(uri, QEMU_URI) == 0) {
        for (int i = 0; i < 100 && !harness_log_contains(d->legbad->log_path, " accel "); i++)
            usleep(10 * 1000);
        _cleanup_free_ char *log = read_text(d->legbad->log_path);
        line_after(log, " info: accel ", b->accel, sizeof(b->accel));
    }
    return 0;
}

/* What went wrong with an answer, in a few words, for a row's n/a. */
static void describe_answer(const HarnessResponse *resp, char *out, size_t size)
{
    const char *code = harness_error_code(resp);
    const char *message = harness_error_message(resp);
    snprintf(out, size, "HTTP %d%s%s%s%s", resp->status, code ? " " : "", code ? code : "",
             message ? ": " : "", message ? message : "");
}

/* DELETE the instance: 0 when legbad answered 204. */
static int instance_delete(Daemon *d, const char *uuid, char *why, size_t why_size)
{
    char path[192];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "%s/%s", d->instances_path, uuid);
    int r =
        harness_http(d->legbad->port, "DELETE", path, HARNESS_LIST(d->org.auth), NULL, 0, &resp);
    if (r < 0) {
        snprintf(why, why_size, "DELETE %s: no answer: %s", uuid, strerror(-r));
    } else if (resp.status != 204) {
        char what[256];
        describe_answer(&resp, what, sizeof(what));
        snprintf(why, why_size, "DELETE %s: %s", uuid, what);
        r = -EPROTO;
    }
    harness_response_done(&resp);
    return r;
}

/*
 * The connection to qemu:///system, opened again when it was lost: without
 * an event loop of ours a connection does not survive a libvirtd restart
 * (another test may restart it), and a lost one fails every call after.
 */
static virConnectPtr conn_get(Bench *b)
{
    if (b->conn && virConnectIsAlive(b->conn) == 1)
        return b->conn;
    if (b->conn) {
        progress("the connection to %s was lost; connecting again", QEMU_URI);
        virConnectClose(b->conn);
    }
    b->conn = virConnectOpen(QEMU_URI);
    return b->conn;
}

/* ---- the console, as the viewer page reaches it ---- */

typedef struct {
    HarnessWs *ws;
    uint8_t *data; /* VNC bytes received and not consumed */
    size_t len, off;
} Stream;

static void stream_done(Stream *s)
{
    harness_ws_free(s->ws);
    free(s->data);
    *s = (Stream){0};
}

/* Exactly n VNC bytes (out may be NULL to skip them) before deadline_ms; pings answered. */
static int stream_read(Stream *s, void *out, size_t n, long long deadline_ms, char *why,
                       size_t why_size)
{
    while (s->len - s->off < n) {
        long long left = deadline_ms - harness_now_ms();
        HarnessWsMessage m = {0};
        int r = left > 0 ? harness_ws_recv(s->ws, (int)left, &m) : -ETIMEDOUT;
        if (r < 0) {
            snprintf(why, why_size, "console: waiting for %zu VNC bytes: %s", n, strerror(-r));
            return r;
        }
        if (m.opcode == HARNESS_WS_CLOSE) {
            snprintf(why, why_size, "console closed by legbad (%d %s)", m.close_code,
                     (char *)m.data);
            harness_ws_message_done(&m);
            return -ECONNRESET;
        }
        if (m.opcode == HARNESS_WS_PING)
            harness_ws_send(s->ws, HARNESS_WS_PONG, m.data, m.len);
        if (m.opcode == HARNESS_WS_BINARY) {
            if (s->off) {
                memmove(s->data, s->data + s->off, s->len - s->off);
                s->len -= s->off;
                s->off = 0;
            }
            uint8_t *grown = realloc(s->data, s->len + m.len + 1);
            if (!grown) {
                harness_ws_message_done(&m);
                return -ENOMEM;
            }
            s->data = grown;
            memcpy(s->data + s->len, m.data, m.len);
            s->len += m.len;
        } else if (m.opcode == HARNESS_WS_TEXT) {
            snprintf(why, why_size, "console: a text message; VNC comes in binary ones");
            harness_ws_message_done(&m);
            return -EPROTO;
        }
        harness_ws_message_done(&m);
    }
    if (out)
        memcpy(out, s->data + s->off, n);
    s->off += n;
    return 0;
}

static int stream_write(Stream *s, const void *data, size_t len, char *why, size_t why_size)
{
    int r = harness_ws_send(s->ws, HARNESS_WS_BINARY, data, len);
    if (r < 0)
        snprintf(why, why_size, "console: send: %s", strerror(-r));
    return r;
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int r_ = (expr);                                                                           \
        if (r_ < 0)                                                                                \
            return r_;                                                                             \
    } while (0)

/*
 * RFB 3.8 from the banner to the end of the first FramebufferUpdate: security
 * None, shared, SetEncodings Raw only (so every rectangle's length is known
 * from its size), a FramebufferUpdateRequest for the whole screen, not
 * incremental. Other server messages before the update are skipped.
 */
static int rfb_first_frame(Stream *s, long long deadline, char *why, size_t why_size)
{
    char version[13] = {0};
    TRY(stream_read(s, version, 12, deadline, why, why_size));
    if (strcmp(version, "RFB 003.008\n") != 0) {
        snprintf(why, why_size, "console: banner '%.11s', RFB 003.008 expected", version);
        return -EPROTO;
    }
    TRY(stream_write(s, "RFB 003.008\n", 12, why, why_size));
    uint8_t n_types, types[255];
    TRY(stream_read(s, &n_types, 1, deadline, why, why_size));
    if (n_types == 0) {
        snprintf(why, why_size, "console: the VNC server offered no security type");
        return -EPROTO;
    }
    TRY(stream_read(s, types, n_types, deadline, why, why_size));
    if (!memchr(types, 1, n_types)) {
        snprintf(why, why_size, "console: security type None not offered");
        return -EPROTO;
    }
    TRY(stream_write(s, (uint8_t[]){1}, 1, why, why_size));
    uint8_t result[4];
    TRY(stream_read(s, result, 4, deadline, why, why_size));
    if (be32(result) != 0) {
        snprintf(why, why_size, "console: SecurityResult %u", be32(result));
        return -EPROTO;
    }
    TRY(stream_write(s, (uint8_t[]){1}, 1, why, why_size)); /* ClientInit: shared */
    uint8_t init[24];
    TRY(stream_read(s, init, sizeof(init), deadline, why, why_size));
    uint16_t width = be16(init), height = be16(init + 2);
    unsigned bytes_pp = init[4] / 8;
    uint32_t name_len = be32(init + 20);
    if (width == 0 || height == 0 || bytes_pp == 0 || name_len > 4096) {
        snprintf(why, why_size, "console: ServerInit %ux%u, %u bpp, name of %u bytes", width,
                 height, init[4], name_len);
        return -EPROTO;
    }
    TRY(stream_read(s, NULL, name_len, deadline, why, why_size));

    static const uint8_t encodings[] = {2, 0, 0, 1, 0, 0, 0, 0}; /* SetEncodings: Raw */
    /* FramebufferUpdateRequest: not incremental, the whole screen. */
    uint8_t request[10] = {3, 0, 0, 0, 0, 0};
    request[6] = (uint8_t)(width >> 8);
    request[7] = (uint8_t)width;
    request[8] = (uint8_t)(height >> 8);
    request[9] = (uint8_t)height;
    TRY(stream_write(s, encodings, sizeof(encodings), why, why_size));
    TRY(stream_write(s, request, sizeof(request), why, why_size));

    for (;;) {
        uint8_t type;
        TRY(stream_read(s, &type, 1, deadline, why, why_size));
        if (type == 0)
            break;
        if (type == 2) /* Bell */
            continue;
        if (type == 3) { /* ServerCutText */
            uint8_t h[7];
            TRY(stream_read(s, h, 7, deadline, why, why_size));
            TRY(stream_read(s, NULL, be32(h + 3), deadline, why, why_size));
            continue;
        }
        if (type == 1) { /* SetColourMapEntries */
            uint8_t h[5];
            TRY(stream_read(s, h, 5, deadline, why, why_size));
            TRY(stream_read(s, NULL, (size_t)be16(h + 3) * 6, deadline, why, why_size));
            continue;
        }
        snprintf(why, why_size, "console: server message type %u before the first update", type);
        return -EPROTO;
    }
    uint8_t h[3];
    TRY(stream_read(s, h, 3, deadline, why, why_size));
    unsigned rects = be16(h + 1);
    for (unsigned i = 0; i < rects; i++) {
        uint8_t rect[12];
        TRY(stream_read(s, rect, 12, deadline, why, why_size));
        int32_t encoding = (int32_t)be32(rect + 8);
        if (encoding != 0) {
            snprintf(why, why_size, "console: rectangle with encoding %d, only Raw was asked for",
                     encoding);
            return -EPROTO;
        }
        TRY(stream_read(s, NULL, (size_t)be16(rect + 4) * be16(rect + 6) * bytes_pp, deadline, why,
                        why_size));
    }
    return 0;
}

/* GET the instance until ready is true (the guest agent reported its page drawn). */
static int wait_ready(Bench *b, Daemon *d, const char *uuid, char *why, size_t why_size)
{
    char path[192];
    int timeout_s = b->quick ? READY_TIMEOUT_QUICK_S : READY_TIMEOUT_FULL_S;
    long long deadline = harness_now_ms() + timeout_s * 1000LL;
    snprintf(path, sizeof(path), "%s/%s", d->instances_path, uuid);
    for (;;) {
        HarnessResponse resp = {0};
        int r =
            harness_http(d->legbad->port, "GET", path, HARNESS_LIST(d->org.auth), NULL, 0, &resp);
        if (r < 0 || resp.status != 200) {
            char what[256] = "";
            if (r >= 0)
                describe_answer(&resp, what, sizeof(what));
            snprintf(why, why_size, "GET instance while waiting for ready: %s",
                     r < 0 ? strerror(-r) : what);
            harness_response_done(&resp);
            return r < 0 ? r : -EPROTO;
        }
        bool ready = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(resp.json, "ready"));
        harness_response_done(&resp);
        if (ready)
            return 0;
        if (interrupted || harness_now_ms() > deadline) {
            snprintf(why, why_size, interrupted ? "interrupted" : "instance not ready within %d s",
                     timeout_s);
            return -ETIMEDOUT;
        }
        usleep(POLL_MS * 1000);
    }
}

/* ---- one sample of a path: create, console, first frame ---- */

typedef struct {
    double created_ms, frame_ms;
    char uuid[UUID_STR_LEN];
    char start[16]; /* the Legba-Start header, "" when absent */
} Sample;

static int sample_run(Bench *b, Daemon *d, Sample *ret, char *why, size_t why_size)
{
    char body[256];
    HarnessResponse resp = {0};
    Stream s = {0};
    int r;
    *ret = (Sample){0};
    snprintf(body, sizeof(body), "{\"image\":\"%s\",\"size\":\"%s\"}", b->image, b->size);

    long long t0 = clock_us();
    r = harness_http(d->legbad->port, "POST", d->instances_path,
                     HARNESS_LIST(d->org.auth, "Content-Type: application/json"), body,
                     strlen(body), &resp);
    ret->created_ms = ms_since(t0);
    if (r < 0) {
        snprintf(why, why_size, "POST: no answer: %s", strerror(-r));
        return r;
    }
    const char *uuid = harness_json_string(resp.json, "instance_uuid");
    const char *url = harness_json_string(resp.json, "access_url");
    const char *key = url ? strstr(url, "#key=") : NULL;
    if (resp.status != 201 || !uuid || strlen(uuid) != UUID_STR_LEN - 1 || !key) {
        char what[256];
        describe_answer(&resp, what, sizeof(what));
        snprintf(why, why_size, "POST: %s (201 with instance_uuid and access_url expected)", what);
        harness_response_done(&resp);
        return -EPROTO;
    }
    snprintf(ret->uuid, sizeof(ret->uuid), "%s", uuid);
    const char *start = harness_header(&resp, "Legba-Start");
    snprintf(ret->start, sizeof(ret->start), "%s", start ? start : "");
    char key_copy[128];
    snprintf(key_copy, sizeof(key_copy), "%s", key + 5);
    harness_response_done(&resp);

    /* The key for the cookie, as the viewer page does first. */
    r = harness_console_session(d->legbad->port, ret->uuid, key_copy, d->origin_line, &resp);
    const char *set = r == 0 ? harness_header(&resp, "Set-Cookie") : NULL;
    if (r < 0 || resp.status != 204 || !set || strncmp(set, "legba_console=", 14) != 0) {
        char what[256] = "";
        if (r == 0)
            describe_answer(&resp, what, sizeof(what));
        snprintf(why, why_size, "POST session: %s (204 with the cookie expected)",
                 r < 0 ? strerror(-r) : what);
        harness_response_done(&resp);
        return r < 0 ? r : -EPROTO;
    }
    char cookie[160];
    snprintf(cookie, sizeof(cookie), "Cookie: %.*s", (int)strcspn(set, ";"), set);
    harness_response_done(&resp);

    if (b->image_info->agent && (r = wait_ready(b, d, ret->uuid, why, why_size)) < 0)
        return r;

    r = harness_console_ws_connect(d->legbad->port, ret->uuid, cookie, d->origin_line, &s.ws,
                                   &resp);
    if (r < 0) {
        char what[256] = "";
        if (r == -ECONNREFUSED)
            describe_answer(&resp, what, sizeof(what));
        snprintf(why, why_size, "console WebSocket refused: %s",
                 r == -ECONNREFUSED ? what : strerror(-r));
        harness_response_done(&resp);
        return r;
    }
    r = rfb_first_frame(&s, harness_now_ms() + FRAME_TIMEOUT_MS, why, why_size);
    ret->frame_ms = ms_since(t0);
    stream_done(&s);
    return r;
}

/* ---- what QEMU holds: RSS over guest RAM ---- */

/* The instance's QEMU VmRSS, in MiB, into the figure; sets the guest's RAM. */
static int measure_rss(Bench *b, const char *uuid, Figure *into, char *why, size_t why_size)
{
    char path[160], line[256];
    snprintf(path, sizeof(path), "/run/libvirt/qemu/legba-%s.pid", uuid);
    _cleanup_free_ char *pid_text = read_text(path);
    long pid = pid_text ? strtol(pid_text, NULL, 10) : 0;
    if (pid <= 0) {
        snprintf(why, why_size, "no QEMU pid in %s", path);
        return -ENOENT;
    }
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    _cleanup_free_ char *status = read_text(path);
    if (!line_after(status, "\nVmRSS:", line, sizeof(line))) {
        snprintf(why, why_size, "no VmRSS in %s", path);
        return -ENOENT;
    }
    double rss_kib = strtod(line, NULL);

    char name[64];
    snprintf(name, sizeof(name), "legba-%s", uuid);
    virConnectPtr conn = conn_get(b);
    virDomainPtr dom = conn ? virDomainLookupByName(conn, name) : NULL;
    unsigned long max_kib = dom ? virDomainGetMaxMemory(dom) : 0;
    if (dom)
        virDomainFree(dom);
    if (max_kib == 0) {
        snprintf(why, why_size, "guest memory of %s: %s", name, virt_error());
        return -ENOENT;
    }
    b->guest_mib = (double)max_kib / 1024;
    samples_add(&into->s, rss_kib / 1024);
    return 0;
}

/* ---- the bare virDomainCreateXML next to legbad's cold create ---- */

/* Replaces every occurrence of from in *text by to. */
static int replace_all(char **text, const char *from, const char *to)
{
    size_t from_len = strlen(from), to_len = strlen(to), n = 0;
    for (const char *p = *text; (p = strstr(p, from)); p += from_len)
        n++;
    if (n == 0)
        return 0;
    size_t len = strlen(*text);
    char *out = malloc(len + n * to_len + 1), *o = out;
    if (!out)
        return -ENOMEM;
    const char *p = *text, *q;
    while ((q = strstr(p, from))) {
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, to_len);
        o += to_len;
        p = q + from_len;
    }
    strcpy(o, p);
    free(*text);
    *text = out;
    return (int)n;
}

/* The cold instance's own domain definition, kept for the bare creates. */
static int keep_domain_xml(Bench *b, Daemon *d, const char *uuid, char *why, size_t why_size)
{
    char name[64];
    snprintf(name, sizeof(name), "legba-%s", uuid);
    virConnectPtr conn = conn_get(b);
    virDomainPtr dom = conn ? virDomainLookupByName(conn, name) : NULL;
    char *xml = dom ? virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE) : NULL;
    if (dom)
        virDomainFree(dom);
    if (!xml) {
        snprintf(why, why_size, "the XML of %s: %s", name, virt_error());
        return -ENOENT;
    }
    free(b->bare_xml);
    b->bare_xml = xml;
    snprintf(b->bare_from_uuid, sizeof(b->bare_from_uuid), "%s", uuid);
    free(b->bare_from_disk);
    if (asprintf(&b->bare_from_disk, "%s/instances/%s.qcow2", d->data_dir, uuid) < 0)
        return -ENOMEM;
    if (!strstr(xml, b->bare_from_disk)) {
        snprintf(why, why_size, "the XML of %s does not name its overlay %s", name,
                 b->bare_from_disk);
        return -EPROTO;
    }
    return 0;
}

/*
 * One bare create: a fresh overlay by qemu-img on the image's disk, the kept
 * XML with a new name, uuid and that overlay and without legba's metadata
 * (no legbad takes it for its own), and virDomainCreateXML timed alone.
 * Destroyed (it is transient: gone with it) and its overlay removed at once.
 */
static int bare_sample(Bench *b, char *why, size_t why_size)
{
    char uuid[UUID_STR_LEN], name[64], *overlay = NULL, *xml = NULL;
    int r = uuid_generate(uuid);
    if (r < 0)
        return r;
    r = -ENOMEM;
    if (asprintf(&overlay, "%s/bare/%s.qcow2", b->dir, uuid) < 0 || !(xml = strdup(b->bare_xml)))
        goto out;
    long long t0 = clock_us();
    int status = harness_run(HARNESS_LIST("qemu-img", "create", "-q", "-f", "qcow2", "-F",
                                          b->image_info->disk_format, "-b",
                                          b->image_info->disk_path, overlay),
                             NULL);
    double qemu_img_ms = ms_since(t0);
    if (status != 0) {
        snprintf(why, why_size, "bare create: qemu-img create exited with %d", status);
        r = -EIO;
        goto out;
    }
    snprintf(name, sizeof(name), "legbabench-%s", uuid);
    if ((r = replace_all(&xml, b->bare_from_disk, overlay)) < 0 ||
        (r = replace_all(&xml, b->bare_from_uuid, uuid)) < 0 ||
        (r = replace_all(&xml, "<name>legba-", "<name>legbabench-")) < 0)
        goto out;
    char *meta = strstr(xml, "<metadata>"), *meta_end = strstr(xml, "</metadata>");
    if (meta && meta_end && meta_end > meta)
        memmove(meta, meta_end + 11, strlen(meta_end + 11) + 1);

    virConnectPtr conn = conn_get(b);
    if (!conn) {
        snprintf(why, why_size, "bare create: cannot connect to %s: %s", QEMU_URI, virt_error());
        r = -EIO;
        goto out;
    }
    t0 = clock_us();
    virDomainPtr dom = virDomainCreateXML(conn, xml, 0);
    double create_ms = ms_since(t0);
    if (!dom) {
        snprintf(why, why_size, "bare virDomainCreateXML: %s", virt_error());
        r = -EIO;
        goto out;
    }
    if (virDomainDestroy(dom) < 0)
        progress("warning: destroying bare domain %s: %s", name, virt_error());
    virDomainFree(dom);
    samples_add(&b->bare.s, create_ms);
    samples_add(&b->bare_overlay.s, qemu_img_ms);
    r = 0;
out:
    if (overlay)
        unlink(overlay);
    free(overlay);
    free(xml);
    return r;
}

/* ---- the pool ---- */

/* ready of the pool entry image:size:mode in `legbactl pool list`, or -errno. */
static int pool_ready(Bench *b, Daemon *d, const char *mode, char *why, size_t why_size)
{
    cJSON *json = NULL;
    int status = harness_legbactl(d->data_dir, HARNESS_LIST("pool", "list"), &json);
    if (status != 0 || !json) {
        snprintf(why, why_size, "legbactl pool list exited with %d%s", status,
                 json ? "" : " or printed no JSON");
        cJSON_Delete(json);
        return -EPROTO;
    }
    int ready = -ENOENT;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(json, "pool"))
    {
        const char *image = harness_json_string(e, "image"), *size = harness_json_string(e, "size"),
                   *m = harness_json_string(e, "mode");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "ready");
        if (image && size && m && strcmp(image, b->image) == 0 && strcmp(size, b->size) == 0 &&
            strcmp(m, mode) == 0 && cJSON_IsNumber(n))
            ready = n->valueint;
    }
    if (ready < 0)
        snprintf(why, why_size, "legbactl pool list shows no %s:%s entry in mode %s", b->image,
                 b->size, mode);
    cJSON_Delete(json);
    return ready;
}

/* Until the pool holds count ready VMs of our image and size, or the timeout. */
static int pool_wait(Bench *b, Daemon *d, const char *mode, int count, char *why, size_t why_size)
{
    int timeout_s = b->quick ? READY_TIMEOUT_QUICK_S : READY_TIMEOUT_FULL_S;
    long long start = harness_now_ms(), deadline = start + timeout_s * 1000LL;
    for (;;) {
        int ready = pool_ready(b, d, mode, why, why_size);
        if (ready < 0)
            return ready;
        if (ready >= count) {
            progress("%s pool ready (%d) after %.1f s", mode, ready,
                     (double)(harness_now_ms() - start) / 1000);
            return 0;
        }
        if (harness_legbad_exited(d->legbad)) {
            snprintf(why, why_size, "legbad exited (status %d) while the pool filled",
                     d->legbad->exit_status);
            return -ECHILD;
        }
        if (interrupted || harness_now_ms() > deadline) {
            snprintf(why, why_size, "%s pool not ready within %d s (%d of %d)", mode, timeout_s,
                     ready, count);
            return -ETIMEDOUT;
        }
        usleep(200 * 1000);
    }
}

/* ---- what a restore is up against ---- */

/*
 * The size of the saved state of the standby VM waiting in the pool (its
 * managed save file, which a restore reads back), in MiB; -errno.
 */
static int saved_state_mib(Daemon *d, double *ret_mib, char *why, size_t why_size)
{
    cJSON *json = NULL;
    int status = harness_legbactl(d->data_dir, HARNESS_LIST("instance", "list"), &json);
    int r = -ENOENT;
    const cJSON *in;
    cJSON_ArrayForEach(in, cJSON_GetObjectItemCaseSensitive(json, "instances"))
    {
        const char *uuid = harness_json_string(in, "instance_uuid");
        char path[160];
        struct stat st;
        if (!uuid || strcmp(harness_json_string(in, "state") ?: "", "stopped") != 0)
            continue;
        snprintf(path, sizeof(path), "/var/lib/libvirt/qemu/save/legba-%s.save", uuid);
        if (stat(path, &st) == 0) {
            *ret_mib = (double)st.st_size / (1024 * 1024);
            r = 0;
        }
    }
    cJSON_Delete(json);
    if (r < 0)
        snprintf(why, why_size, "no saved state found (legbactl instance list exited with %d)",
                 status);
    return r;
}

/* ---- cleanup on libvirt ---- */

/* Every domain whose definition names our temp dir: destroyed and undefined. */
static void destroy_our_domains(Bench *b)
{
    virDomainPtr *doms = NULL;
    virConnectPtr conn = b->conn ? conn_get(b) : NULL;
    int n = conn ? virConnectListAllDomains(conn, &doms, 0) : 0;
    for (int i = 0; i < n; i++) {
        char *xml = virDomainGetXMLDesc(doms[i], 0);
        if (xml && strstr(xml, b->dir)) {
            progress("removing domain %s, left running when its legbad stopped",
                     virDomainGetName(doms[i]));
            if (virDomainIsActive(doms[i]) == 1)
                virDomainDestroy(doms[i]);
            if (virDomainIsPersistent(doms[i]) == 1)
                virDomainUndefineFlags(doms[i], VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                                    VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                                    VIR_DOMAIN_UNDEFINE_NVRAM);
        }
        free(xml);
        virDomainFree(doms[i]);
    }
    free(doms);
}

/* ---- the three paths on qemu:///system ---- */

static void phase_qemu(Bench *b, Path path)
{
    const char *name = path_names[path];
    Figure *created = &b->created[path], *frame = &b->frame[path];
    char why[320] = "", lines[256], *config = NULL;
    Daemon d = {0};

    if (b->qemu_na[0]) {
        NA(created->na, "%s", b->qemu_na);
        NA(frame->na, "%s", b->qemu_na);
        if (path == PATH_COLD) {
            NA(b->bare.na, "%s", b->qemu_na);
            NA(b->rss.na, "%s", b->qemu_na);
        }
        return;
    }
    if (path == PATH_COLD)
        snprintf(lines, sizeof(lines), "log_level = info\n");
    else
        snprintf(lines, sizeof(lines), "log_level = info\npool = %s:%s:1%s\npool_boots = 1\n",
                 b->image, b->size, path == PATH_STANDBY ? ":standby" : "");
    if (write_config(b, name, lines, &config) < 0) {
        FAIL(created->na, "cannot write the config");
        goto out;
    }
    if (path != PATH_COLD && config_accepted(b, config, b->images_dir, why, sizeof(why)) < 0) {
        NA(created->na, "pool not configured: legbad refuses `pool = %s:%s:1%s` (%s)", b->image,
           b->size, path == PATH_STANDBY ? ":standby" : "", why);
        goto out;
    }
    progress("%s: starting legbad on %s", name, QEMU_URI);
    if (daemon_start(b, &d, name, QEMU_URI, b->images_dir, config, why, sizeof(why)) < 0) {
        FAIL(created->na, "%s", why);
        goto out;
    }
    for (unsigned i = 0; i < b->samples && !interrupted; i++) {
        Sample s;
        if (path != PATH_COLD && pool_wait(b, &d, name, 1, why, sizeof(why)) < 0) {
            FAIL(created->na, "%s", why);
            break;
        }
        if (path == PATH_STANDBY) {
            double mib = 0;
            char why2[320];
            if (saved_state_mib(&d, &mib, why2, sizeof(why2)) == 0)
                samples_add(&b->saved.s, mib);
            else if (!b->saved.na[0])
                FAIL(b->saved.na, "%s", why2);
            progress("standby: saved state %.0f MiB; taken in %d s", mib, STANDBY_IDLE_S);
            sleep(STANDBY_IDLE_S);
        }
        int r = sample_run(b, &d, &s, why, sizeof(why));
        if (r == 0 && s.start[0] && strcmp(s.start, name) != 0) {
            snprintf(why, sizeof(why), "Legba-Start: %s where %s was expected", s.start, name);
            r = -EPROTO;
        } else if (r == 0 && path != PATH_COLD && !s.start[0]) {
            snprintf(why, sizeof(why), "no Legba-Start header on a create from the %s pool", name);
            r = -EPROTO;
        }
        if (r == 0) {
            progress("%s sample %u/%u: 201 in %.1f ms, first frame in %.1f ms%s%s", name, i + 1,
                     b->samples, s.created_ms, s.frame_ms, s.start[0] ? ", Legba-Start: " : "",
                     s.start);
            samples_add(&created->s, s.created_ms);
            samples_add(&frame->s, s.frame_ms);
        }
        if (r == 0 && path == PATH_COLD) {
            char why2[320];
            if (measure_rss(b, s.uuid, &b->rss, why2, sizeof(why2)) < 0 && !b->rss.na[0])
                FAIL(b->rss.na, "%s", why2);
            if (!b->bare_xml && keep_domain_xml(b, &d, s.uuid, why2, sizeof(why2)) < 0 &&
                !b->bare.na[0])
                FAIL(b->bare.na, "%s", why2);
        }
        if (r == 0 && path == PATH_STANDBY) {
            char why2[320];
            if (measure_rss(b, s.uuid, &b->standby_rss, why2, sizeof(why2)) < 0 &&
                !b->standby_rss.na[0])
                FAIL(b->standby_rss.na, "%s", why2);
        }
        if (s.uuid[0]) {
            char why2[320];
            if (instance_delete(&d, s.uuid, why2, sizeof(why2)) < 0 && r == 0) {
                snprintf(why, sizeof(why), "%s", why2);
                r = -EPROTO;
            }
        }
        if (r < 0) {
            FAIL(created->na, "%s sample %u: %s", name, i + 1, why);
            break;
        }
        /* Alternating with legbad's, so both see the same moment of a noisy machine. */
        if (path == PATH_COLD && b->bare_xml && !b->bare.na[0] &&
            bare_sample(b, why, sizeof(why)) < 0)
            FAIL(b->bare.na, "%s", why);
        else if (path == PATH_COLD && b->bare.s.n > 0)
            progress("bare sample %u: virDomainCreateXML %.1f ms (qemu-img create %.1f ms)",
                     b->bare.s.n, b->bare.s.v[b->bare.s.n - 1],
                     b->bare_overlay.s.v[b->bare_overlay.s.n - 1]);
    }
    if (interrupted && !created->na[0])
        FAIL(created->na, "interrupted");
    if (d.legbad && harness_legbad_exited(d.legbad))
        FAIL(created->na, "legbad exited with status %d during the %s phase (log: %s)",
             d.legbad->exit_status, name, d.legbad->log_path);
out:
    daemon_stop(b, &d);
    destroy_our_domains(b);
    if (created->na[0]) {
        created->s.n = 0;
        NA(frame->na, "%s", created->na);
    }
    if (path == PATH_COLD && !b->bare.na[0] && b->bare.s.n == 0)
        NA(b->bare.na, "no cold sample to take the domain from");
    if (path == PATH_COLD && !b->rss.na[0] && b->rss.s.n == 0)
        NA(b->rss.na, "no cold instance measured");
    free(config);
}

/* ---- GET list: legbad against nginx, under wrk ---- */

typedef struct {
    Daemon *d;
    const char *body;
    unsigned n, next, created;
    int error;
    char why[320];
    pthread_mutex_t lock;
} Fill;

static void *fill_main(void *data)
{
    Fill *f = data;
    for (;;) {
        pthread_mutex_lock(&f->lock);
        bool more = f->next < f->n && f->error == 0 && !interrupted;
        if (more)
            f->next++;
        pthread_mutex_unlock(&f->lock);
        if (!more)
            return NULL;
        HarnessResponse resp = {0};
        int r = harness_http(f->d->legbad->port, "POST", f->d->instances_path,
                             HARNESS_LIST(f->d->org.auth, "Content-Type: application/json"),
                             f->body, strlen(f->body), &resp);
        pthread_mutex_lock(&f->lock);
        if (r == 0 && resp.status == 201) {
            f->created++;
        } else if (f->error == 0) {
            char what[256] = "";
            if (r == 0)
                describe_answer(&resp, what, sizeof(what));
            snprintf(f->why, sizeof(f->why), "POST %u of %u: %s", f->next, f->n,
                     r < 0 ? strerror(-r) : what);
            f->error = r < 0 ? r : -EPROTO;
        }
        pthread_mutex_unlock(&f->lock);
        harness_response_done(&resp);
    }
}

/* A child with stdout and stderr to log (appended), no shell; its pid. */
static pid_t spawn(const char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
        _exit(127);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
}

static void reap(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(10 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Requests/s of one wrk run, or -errno with why (a non-2xx answer or a socket error is one). */
static int wrk_run(Bench *b, uint16_t port, const char *path, const char *auth, double *ret_rps,
                   char *why, size_t why_size)
{
    char url[256], duration[16], *out = NULL, line[128];
    int seconds = b->quick ? WRK_SECONDS_QUICK : WRK_SECONDS_FULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
    snprintf(duration, sizeof(duration), "%ds", seconds);
    int status = harness_run(HARNESS_LIST("wrk", "-t1", "-c" WRK_CONNECTIONS, "-d", duration,
                                          "--timeout", "10s", "-H", auth, url),
                             &out);
    int r = 0;
    if (status != 0) {
        snprintf(why, why_size, "wrk exited with %d%s", status,
                 status == 127 ? " (not installed: tools/bench installs it)" : "");
        r = -EIO;
    } else if (line_after(out, "Non-2xx or 3xx responses:", line, sizeof(line))) {
        snprintf(why, why_size, "wrk against %.80s: non-2xx answers:%.80s", url, line);
        r = -EPROTO;
    } else if (line_after(out, "Socket errors:", line, sizeof(line))) {
        snprintf(why, why_size, "wrk against %.80s: socket errors:%.80s", url, line);
        r = -EPROTO;
    } else if (!line_after(out, "Requests/sec:", line, sizeof(line)) || strtod(line, NULL) <= 0) {
        snprintf(why, why_size, "wrk printed no Requests/sec");
        r = -EPROTO;
    } else {
        *ret_rps = strtod(line, NULL);
    }
    free(out);
    return r;
}

/* nginx in the foreground, one process, serving www/ on port: the static-file ceiling. */
static pid_t nginx_start(Bench *b, uint16_t port, char *why, size_t why_size)
{
    char *conf_path = NULL, *conf = NULL, *prefix = NULL, *log = NULL, *error_log = NULL;
    pid_t pid = -1;
    if (asprintf(&prefix, "%s/nginx", b->dir) < 0 ||
        asprintf(&conf_path, "%s/nginx.conf", prefix) < 0 ||
        asprintf(&log, "%s/nginx.out", prefix) < 0 ||
        asprintf(&error_log, "%s/error.log", prefix) < 0 ||
        asprintf(&conf,
                 "# tools/bench: the same JSON as a static file\n"
                 "daemon off;\nmaster_process off;\nworker_processes 1;\n"
                 "pid %1$s/nginx.pid;\nerror_log %1$s/error.log warn;\n"
                 "events { worker_connections 256; }\n"
                 "http {\n"
                 "    access_log off;\n"
                 "    client_body_temp_path %1$s/tmp; proxy_temp_path %1$s/tmp;\n"
                 "    fastcgi_temp_path %1$s/tmp; uwsgi_temp_path %1$s/tmp; scgi_temp_path "
                 "%1$s/tmp;\n"
                 "    server {\n"
                 "        listen 127.0.0.1:%2$u;\n"
                 "        root %1$s/www;\n"
                 "        default_type application/json;\n"
                 "    }\n"
                 "}\n",
                 prefix, port) < 0)
        goto out;
    if (write_file(conf_path, conf, strlen(conf)) < 0) {
        snprintf(why, why_size, "cannot write %s", conf_path);
        goto out;
    }
    pid = spawn(HARNESS_LIST("nginx", "-p", prefix, "-e", error_log, "-c", conf_path), log);
    for (int i = 0; pid > 0 && i < 500 && !harness_port_accepts(port); i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            _cleanup_free_ char *text = read_text(log);
            snprintf(why, why_size, "nginx exited at start%s%.200s",
                     text && *text ? ": " : " (is it installed? tools/bench installs it)",
                     text ? text : "");
            pid = -1;
            goto out;
        }
        usleep(10 * 1000);
    }
    if (pid > 0 && !harness_port_accepts(port)) {
        snprintf(why, why_size, "nginx did not listen on port %u within 5 s", port);
        reap(pid);
        pid = -1;
    }
out:
    free(conf_path);
    free(conf);
    free(prefix);
    free(log);
    free(error_log);
    return pid;
}

static void phase_list(Bench *b)
{
    char why[320] = "", lines[256], *config = NULL, *file = NULL, *www_dir = NULL;
    char body[128];
    Daemon d = {0};
    pid_t nginx = -1;

    snprintf(lines, sizeof(lines),
             "log_level = warn\nmax_instances = %u\nmemory_overcommit_percent = 0\n",
             b->list_n + 16);
    if (write_config(b, "list", lines, &config) < 0) {
        FAIL(b->list_na, "cannot write the config");
        goto out;
    }
    progress("list: starting legbad on test:///default, creating %u instances", b->list_n);
    if (daemon_start(b, &d, "list", "test:///default", b->tiny_images_dir, config, why,
                     sizeof(why)) < 0) {
        FAIL(b->list_na, "%s", why);
        goto out;
    }

    /* The fake driver boots at once: a few creates in parallel fill it in seconds. */
    snprintf(body, sizeof(body), "{\"image\":\"%s\",\"size\":\"small\"}", QUICK_IMAGE);
    Fill fill = {.d = &d, .body = body, .n = b->list_n};
    pthread_mutex_init(&fill.lock, NULL);
    pthread_t threads[LIST_FILL_THREADS];
    unsigned started = 0;
    long long t0 = harness_now_ms();
    for (; started < LIST_FILL_THREADS; started++)
        if (pthread_create(&threads[started], NULL, fill_main, &fill) != 0)
            break;
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&fill.lock);
    if (fill.error < 0 || fill.created != b->list_n) {
        FAIL(b->list_na, "filling the store: %s", fill.error < 0 ? fill.why : "interrupted");
        goto out;
    }
    progress("list: %u instances created in %.1f s", fill.created,
             (double)(harness_now_ms() - t0) / 1000);

    /* What legbad answers is what nginx will serve, byte for byte. */
    HarnessResponse resp = {0};
    long long t_get = clock_us();
    int r = harness_http(d.legbad->port, "GET", d.instances_path, HARNESS_LIST(d.org.auth), NULL, 0,
                         &resp);
    b->list_first_ms = ms_since(t_get);
    const cJSON *total = r == 0 ? cJSON_GetObjectItemCaseSensitive(resp.json, "total") : NULL;
    if (r < 0 || resp.status != 200 || !cJSON_IsNumber(total) ||
        (unsigned)total->valueint != b->list_n) {
        char what[256] = "";
        if (r == 0)
            describe_answer(&resp, what, sizeof(what));
        FAIL(b->list_na, "GET list: %s (200 with total %u expected)", r < 0 ? strerror(-r) : what,
             b->list_n);
        harness_response_done(&resp);
        goto out;
    }
    b->list_bytes = resp.body_len;
    if (asprintf(&www_dir, "%s/nginx/www/orgs/%s/api", b->dir, d.org.uuid) < 0 ||
        asprintf(&file, "%s/instances", www_dir) < 0 || util_mkdir_p(www_dir, 0755) < 0 ||
        write_file(file, resp.body, resp.body_len) < 0) {
        harness_response_done(&resp);
        FAIL(b->list_na, "cannot write the JSON for nginx");
        goto out;
    }
    harness_response_done(&resp);
    char tmp_dir[512];
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/nginx/tmp", b->dir);
    util_mkdir_p(tmp_dir, 0755);

    uint16_t nginx_port = 0;
    if (harness_free_port(&nginx_port) < 0 ||
        (nginx = nginx_start(b, nginx_port, why, sizeof(why))) <= 0) {
        NA(b->list_na, "nginx: %s", why[0] ? why : "no free port");
        goto out;
    }
    r = harness_http(nginx_port, "GET", d.instances_path, NULL, NULL, 0, &resp);
    bool same = r == 0 && resp.status == 200 && resp.body_len == b->list_bytes;
    harness_response_done(&resp);
    if (!same) {
        FAIL(b->list_na, "nginx does not serve the same %zu bytes", b->list_bytes);
        goto out;
    }

    /* Alternating runs, best of each: both meet the same moments of a noisy machine. */
    char auth[200];
    snprintf(auth, sizeof(auth), "%s", d.org.auth);
    unsigned runs = b->quick ? 1 : WRK_RUNS_FULL;
    for (unsigned i = 0; i < runs && !interrupted; i++) {
        double legbad_rps = 0, nginx_rps = 0;
        if (wrk_run(b, d.legbad->port, d.instances_path, auth, &legbad_rps, why, sizeof(why)) < 0 ||
            wrk_run(b, nginx_port, d.instances_path, auth, &nginx_rps, why, sizeof(why)) < 0) {
            if (strstr(why, "not installed"))
                NA(b->list_na, "%s", why);
            else
                FAIL(b->list_na, "%s", why);
            goto out;
        }
        progress("list run %u/%u: legbad %.0f req/s, nginx %.0f req/s", i + 1, runs, legbad_rps,
                 nginx_rps);
        if (legbad_rps > b->list_legbad)
            b->list_legbad = legbad_rps;
        if (nginx_rps > b->list_nginx)
            b->list_nginx = nginx_rps;
    }
    if (interrupted)
        FAIL(b->list_na, "interrupted");
    if (d.legbad && harness_legbad_exited(d.legbad))
        FAIL(b->list_na, "legbad exited with status %d under wrk (log: %s)", d.legbad->exit_status,
             d.legbad->log_path);
out:
    reap(nginx);
    daemon_stop(b, &d);
    free(config);
    free(file);
    free(www_dir);
}

/* ---- the relay: build/tests/bench_relay's own rows ---- */

static void phase_relay(Bench *b)
{
    char *bin = NULL;
    if (asprintf(&bin, "%s/tests/bench_relay", harness_binary_dir()) < 0)
        return;
    progress("relay: running %s%s", bin, b->quick ? " --quick" : "");
    const char *quick_argv[] = {bin, "--quick", NULL}, *full_argv[] = {bin, NULL};
    int status =
        harness_run_timeout(b->quick ? quick_argv : full_argv, &b->relay_out, RELAY_TIMEOUT_S);
    if (status != 0)
        FAIL(b->relay_na, "bench_relay exited with %d", status);
    else if (!b->relay_out || !strstr(b->relay_out, "direct unix socket copy"))
        FAIL(b->relay_na, "bench_relay printed no rows");
    free(bin);
}

/* ---- the table ---- */

typedef struct {
    char figure[48], measured[400], target[40], verdict[8];
} Row;

static Row rows[40];
static size_t n_rows;

static Row *row_add(const char *figure)
{
    Row *r = &rows[n_rows < ARRAY_SIZE(rows) - 1 ? n_rows++ : n_rows];
    *r = (Row){0};
    snprintf(r->figure, sizeof(r->figure), "%s", figure);
    return r;
}

static void fmt_ms(char *out, size_t size, double ms)
{
    if (ms >= 10000)
        snprintf(out, size, "%.1f s", ms / 1000);
    else if (ms >= 100)
        snprintf(out, size, "%.0f ms", ms);
    else
        snprintf(out, size, "%.1f ms", ms);
}

/* p50/p99 of a figure with a target on its p50 (0: none). */
static void row_latency(const char *figure, const Figure *f, double target_ms, const char *target)
{
    Row *r = row_add(figure);
    snprintf(r->target, sizeof(r->target), "%s", target ? target : "");
    if (f->na[0] || f->s.n == 0) {
        snprintf(r->measured, sizeof(r->measured), "n/a: %s", f->na[0] ? f->na : "not measured");
        return;
    }
    char p50[32], p99[32];
    double median = percentile(&f->s, 0.5);
    fmt_ms(p50, sizeof(p50), median);
    fmt_ms(p99, sizeof(p99), percentile(&f->s, 0.99));
    snprintf(r->measured, sizeof(r->measured), "p50 %s  p99 %s  (n=%u)", p50, p99, f->s.n);
    if (target_ms > 0)
        snprintf(r->verdict, sizeof(r->verdict), "%s", median <= target_ms ? "met" : "MISSED");
}

/* A figure in MiB (p50) over the guest's RAM. */
static void row_per_guest_ram(const char *figure, const Figure *f, const char *what,
                              double guest_mib)
{
    Row *r = row_add(figure);
    if (f->na[0] || f->s.n == 0 || guest_mib <= 0) {
        snprintf(r->measured, sizeof(r->measured), "n/a: %s", f->na[0] ? f->na : "not measured");
        return;
    }
    double mib = percentile(&f->s, 0.5);
    snprintf(r->measured, sizeof(r->measured), "%.2f  (p50 %s%.0f MiB / %.0f MiB; n=%u)",
             mib / guest_mib, what, mib, guest_mib, f->s.n);
}

static void print_table(Bench *b, double seconds)
{
    char figure[64], text[64];
    static const char *const targets_created[PATH_COUNT] = {NULL, "p50 <= 50 ms", NULL};
    static const char *const targets_frame[PATH_COUNT] = {NULL, "p50 <= 500 ms",
                                                          "p50 <= 3 s (TCG)"};
    static const double created_ms[PATH_COUNT] = {0, TARGET_WARM_CREATED_MS, 0};
    static const double frame_ms[PATH_COUNT] = {0, TARGET_WARM_FRAME_MS, TARGET_STANDBY_FRAME_MS};
    n_rows = 0;
    for (int p = 0; p < PATH_COUNT; p++) {
        snprintf(figure, sizeof(figure), "POST -> 201, %s", path_names[p]);
        row_latency(figure, &b->created[p], created_ms[p], targets_created[p]);
    }
    for (int p = 0; p < PATH_COUNT; p++) {
        snprintf(figure, sizeof(figure), "POST -> first frame, %s", path_names[p]);
        row_latency(figure, &b->frame[p], frame_ms[p], targets_frame[p]);
    }

    Row *r = row_add("cold create: legbad / bare");
    snprintf(r->target, sizeof(r->target), "<= %.2f", TARGET_COLD_RATIO);
    const Figure *cold = &b->created[PATH_COLD];
    if (b->bare.na[0] || b->bare.s.n == 0 || cold->s.n == 0) {
        snprintf(r->measured, sizeof(r->measured), "n/a: %s",
                 b->bare.na[0] ? b->bare.na
                 : cold->na[0] ? cold->na
                               : "not measured");
    } else {
        double legbad = percentile(&cold->s, 0.5), bare = percentile(&b->bare.s, 0.5);
        char l[32], m[32], q[32];
        fmt_ms(l, sizeof(l), legbad);
        fmt_ms(m, sizeof(m), bare);
        fmt_ms(q, sizeof(q), percentile(&b->bare_overlay.s, 0.5));
        snprintf(r->measured, sizeof(r->measured), "%.2f  (p50 %s / %s, n=%u; qemu-img %s)",
                 legbad / bare, l, m, b->bare.s.n, q);
        snprintf(r->verdict, sizeof(r->verdict), "%s",
                 legbad / bare <= TARGET_COLD_RATIO ? "met" : "MISSED");
    }

    snprintf(figure, sizeof(figure), "GET list (%u): legbad / nginx", b->list_n);
    r = row_add(figure);
    snprintf(r->target, sizeof(r->target), ">= %.1f", TARGET_LIST_RATIO);
    if (b->list_na[0] || b->list_nginx <= 0) {
        snprintf(r->measured, sizeof(r->measured), "n/a: %s",
                 b->list_na[0] ? b->list_na : "not measured");
    } else {
        double ratio = b->list_legbad / b->list_nginx;
        char first[32];
        fmt_ms(first, sizeof(first), b->list_first_ms);
        snprintf(r->measured, sizeof(r->measured),
                 "%.2f  (%.0f req/s / %.0f req/s; %zu KiB; first GET %s)", ratio, b->list_legbad,
                 b->list_nginx, (b->list_bytes + 1023) / 1024, first);
        snprintf(r->verdict, sizeof(r->verdict), "%s",
                 ratio >= TARGET_LIST_RATIO ? "met" : "MISSED");
    }

    row_per_guest_ram("QEMU RSS / guest RAM", &b->rss, "VmRSS ", b->guest_mib);
    row_per_guest_ram("standby saved state / guest RAM", &b->saved, "", b->guest_mib);
    row_per_guest_ram("standby QEMU RSS / guest RAM", &b->standby_rss, "VmRSS ", b->guest_mib);

    /* bench_relay's rows: "NAME  MB/s  vs-direct", the name in the first 30 columns. */
    if (b->relay_na[0]) {
        r = row_add("relay MB/s");
        snprintf(r->measured, sizeof(r->measured), "n/a: %s", b->relay_na);
    } else {
        char *save = NULL, *copy = strdup(b->relay_out ? b->relay_out : "");
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            if (strncmp(line, "direct ", 7) != 0 && strncmp(line, "relay ", 6) != 0)
                continue;
            if (strlen(line) < 31)
                continue;
            char name[32];
            double mbs = 0, ratio = 0;
            snprintf(name, sizeof(name), "%.30s", line);
            for (char *e = name + strlen(name); e > name && e[-1] == ' ';)
                *--e = '\0';
            if (sscanf(line + 30, "%lf %lf", &mbs, &ratio) != 2)
                continue;
            snprintf(text, sizeof(text), "%s", name);
            r = row_add(text);
            if (strncmp(line, "direct ", 7) == 0)
                snprintf(r->measured, sizeof(r->measured), "%.0f MB/s  (the ceiling)", mbs);
            else
                snprintf(r->measured, sizeof(r->measured), "%.2f of direct  (%.0f MB/s)", ratio,
                         mbs);
        }
        free(copy);
    }

    /* The machine, then the rows. */
    struct utsname u;
    uname(&u);
    char model[128] = "unknown CPU", mem[64] = "";
    _cleanup_free_ char *cpuinfo = read_text("/proc/cpuinfo");
    _cleanup_free_ char *meminfo = read_text("/proc/meminfo");
    if (line_after(cpuinfo, "model name\t: ", text, sizeof(text)))
        snprintf(model, sizeof(model), "%s", text);
    if (line_after(meminfo, "MemTotal:", text, sizeof(text)))
        snprintf(mem, sizeof(mem), "%.1f GiB RAM", strtod(text, NULL) / 1024 / 1024);
    time_t now = time(NULL);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));

    printf("legba performance: tools/bench%s, %s, %.0f s\n", b->quick ? " --quick" : "", stamp,
           seconds);
    printf("machine: %ld CPUs (%s), %s, kernel %s\n", sysconf(_SC_NPROCESSORS_ONLN), model, mem,
           u.release);
    printf("accel: %s%s\n", b->accel[0] ? b->accel : "n/a: no legbad ran on " QEMU_URI,
           b->accel[0]     ? ""
           : b->qemu_na[0] ? " (see the rows)"
                           : "");
    printf("image %s, size %s, %u samples a path; list of %u instances on test:///default\n\n",
           b->image, b->size, b->samples, b->list_n);
    size_t w_fig = 6, w_meas = 8, w_target = 6;
    for (size_t i = 0; i < n_rows; i++) {
        if (strlen(rows[i].figure) > w_fig)
            w_fig = strlen(rows[i].figure);
        if (strlen(rows[i].measured) > w_meas && strncmp(rows[i].measured, "n/a", 3) != 0)
            w_meas = strlen(rows[i].measured);
        if (strlen(rows[i].target) > w_target)
            w_target = strlen(rows[i].target);
    }
    printf("%-*s  %-*s  %-*s  %s\n", (int)w_fig, "figure", (int)w_meas, "measured", (int)w_target,
           "target", "");
    for (size_t i = 0; i < n_rows; i++) {
        const Row *row = &rows[i];
        /* A long n/a runs past the columns; its target follows it. */
        if (strncmp(row->measured, "n/a", 3) == 0 && strlen(row->measured) > w_meas)
            printf("%-*s  %s%s%s%s\n", (int)w_fig, row->figure, row->measured,
                   row->target[0] ? "  (target " : "", row->target, row->target[0] ? ")" : "");
        else
            printf("%-*s  %-*s  %-*s  %s\n", (int)w_fig, row->figure, (int)w_meas, row->measured,
                   (int)w_target, row->target, row->verdict);
    }
    fflush(stdout);
}

/* ---- main ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: bench_legba [--quick] [--samples N] [--image NAME] [--size SIZE]\n"
            "                   [--images-dir DIR] [--list N] [--no-vm]\n"
            "  --quick           the tiny image, %d samples, %d instances listed, short runs\n"
            "  --samples N       samples per path (1..%d; default %d)\n"
            "  --image NAME      image of the VM rows (default %s; --quick: %s)\n"
            "  --size SIZE       small, medium or large (default small)\n"
            "  --images-dir DIR  where the image is (default $LEGBA_TEST_IMAGES_DIR or\n"
            "                    /var/cache/legba/test-images; built there when missing)\n"
            "  --list N          instances in the store for GET list (default %d; --quick: %d)\n"
            "  --no-vm           boot no VM: the rows on qemu:///system say n/a\n",
            SAMPLES_QUICK, LIST_QUICK, SAMPLES_MAX, SAMPLES_DEFAULT, FULL_IMAGE, QUICK_IMAGE,
            LIST_FULL, LIST_QUICK);
}

static bool parse_count(const char *text, unsigned min, unsigned max, unsigned *ret)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || v < (long)min || v > (long)max)
        return false;
    *ret = (unsigned)v;
    return true;
}

/* The image's manifest, parsed as legbad parses it (its disk, format and agent). */
static int load_image(Bench *b)
{
    char *dir, *path;
    if (asprintf(&dir, "%s/%s", b->images_dir, b->image) < 0)
        return -ENOMEM;
    if (asprintf(&path, "%s/manifest.json", dir) < 0) {
        free(dir);
        return -ENOMEM;
    }
    _cleanup_free_ char *text = read_text(path);
    free(path);
    int r = text ? image_manifest_parse(text, strlen(text), dir, &b->image_info, NULL) : -ENOENT;
    free(dir);
    return r;
}

int main(int argc, char **argv)
{
    Bench bench = {.samples = 0, .size = "small"}, *b = &bench;
    const char *images_dir = NULL, *image = NULL;
    unsigned samples = 0, list_n = 0;
    bool no_vm = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) {
            b->quick = true;
        } else if (strcmp(a, "--samples") == 0 && v && parse_count(v, 1, SAMPLES_MAX, &samples)) {
            i++;
        } else if (strcmp(a, "--list") == 0 && v && parse_count(v, 1, LIST_MAX, &list_n)) {
            i++;
        } else if (strcmp(a, "--image") == 0 && v && v[0] && !strpbrk(v, "/\"\\")) {
            image = v;
            i++;
        } else if (strcmp(a, "--size") == 0 && v &&
                   (!strcmp(v, "small") || !strcmp(v, "medium") || !strcmp(v, "large"))) {
            b->size = v;
            i++;
        } else if (strcmp(a, "--images-dir") == 0 && v && v[0] == '/') {
            images_dir = v;
            i++;
        } else if (strcmp(a, "--no-vm") == 0) {
            no_vm = true;
        } else if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    b->samples = samples ? samples : b->quick ? SAMPLES_QUICK : SAMPLES_DEFAULT;
    b->list_n = list_n ? list_n : b->quick ? LIST_QUICK : LIST_FULL;
    b->image = image ? image : b->quick ? QUICK_IMAGE : FULL_IMAGE;

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    virSetErrorFunc(NULL, silence);
    long long t_start = harness_now_ms();

    if (harness_tempdir("legba-bench-", &b->dir) < 0 ||
        asprintf(&b->tiny_images_dir, "%s/images", b->dir) < 0) {
        fprintf(stderr, "bench: cannot make a temp dir\n");
        return 1;
    }
    char *bare_dir = NULL;
    if (asprintf(&bare_dir, "%s/bare", b->dir) < 0 || mkdir(bare_dir, 0711) < 0 ||
        chmod(bare_dir, 0711) < 0) {
        fprintf(stderr, "bench: cannot make %s\n", bare_dir ? bare_dir : "the bare dir");
        return 1;
    }
    free(bare_dir);
    progress("building the tiny image into %s", b->tiny_images_dir);
    if (harness_build_image(b->tiny_images_dir, QUICK_IMAGE) != 0) {
        fprintf(stderr, "bench: cannot build the tiny image\n");
        harness_tempdir_remove(b->dir);
        return 1;
    }

    /* The VM rows' image: tiny from our dir, or the browser image from the test image cache. */
    if (strcmp(b->image, QUICK_IMAGE) == 0 && !images_dir) {
        b->images_dir = strdup(b->tiny_images_dir);
    } else {
        const char *env = getenv("LEGBA_TEST_IMAGES_DIR");
        b->images_dir = strdup(images_dir    ? images_dir
                               : env && *env ? env
                                             : "/var/cache/legba/test-images");
    }
    if (no_vm) {
        NA(b->qemu_na, "not run (--no-vm)");
    } else if (geteuid() != 0) {
        NA(b->qemu_na, "needs root for %s (run tools/bench as root)", QEMU_URI);
    } else if (!(b->conn = virConnectOpen(QEMU_URI))) {
        FAIL(b->qemu_na, "cannot connect to %s: %s (run tools/setup)", QEMU_URI, virt_error());
    } else if (strcmp(b->images_dir, b->tiny_images_dir) != 0) {
        progress("building %s into %s when its recipe changed (minutes when it did)", b->image,
                 b->images_dir);
        if (harness_build_image(b->images_dir, b->image) != 0)
            FAIL(b->qemu_na, "cannot build image %s into %s", b->image, b->images_dir);
    }
    if (!b->qemu_na[0] && load_image(b) < 0)
        FAIL(b->qemu_na, "no manifest for image %s in %s", b->image, b->images_dir);
    if (!b->qemu_na[0])
        progress("VM rows: image %s (%s), size %s, %u samples a path", b->image,
                 b->image_info->agent ? "guest agent: the frame counted follows ready"
                                      : "no agent: the first frame QEMU draws",
                 b->size, b->samples);

    /* The list and the relay first: no VM is running yet to disturb them. */
    long long t_phase = harness_now_ms();
    phase_list(b);
    progress("list: %.1f s", (double)(harness_now_ms() - t_phase) / 1000);
    if (!interrupted) {
        t_phase = harness_now_ms();
        phase_relay(b);
        progress("relay: %.1f s", (double)(harness_now_ms() - t_phase) / 1000);
    }
    for (int p = 0; p < PATH_COUNT && !interrupted; p++) {
        t_phase = harness_now_ms();
        phase_qemu(b, (Path)p);
        progress("%s: %.1f s", path_names[p], (double)(harness_now_ms() - t_phase) / 1000);
    }
    if (interrupted) {
        b->failures++;
        progress("interrupted");
    }

    print_table(b, (double)(harness_now_ms() - t_start) / 1000);

    destroy_our_domains(b);
    if (b->conn)
        virConnectClose(b->conn);
    harness_tempdir_remove(b->dir);
    free(b->dir);
    free(b->tiny_images_dir);
    free(b->images_dir);
    image_free(b->image_info);
    free(b->bare_xml);
    free(b->bare_from_disk);
    free(b->relay_out);
    if (b->failures > 0) {
        fprintf(stderr, "bench: %d failure(s), see above\n", b->failures);
        return 1;
    }
    return 0;
}
