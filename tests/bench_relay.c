/*
 * Console relay throughput, next to a plain copy over a Unix socket.
 *
 *   bench_relay [--quick] [--mib N]
 *
 * Each row moves N MiB (default 256; --quick: 16 and one run instead of the
 * best of three) of a known pseudo-random pattern and verifies every byte:
 *
 *   direct unix socket copy       a writer thread and a reader over a
 *                                 socketpair, 64 KiB writes: the ceiling
 *   relay VNC -> viewer           "VNC" bytes in, the viewer parses the
 *                                 server's binary frames (screen updates);
 *                                 clipboard both, so the relay reads no RFB
 *   relay VNC -> viewer (parsed)  the same with clipboard none: after an RFB
 *                                 handshake, FramebufferUpdates of Raw
 *                                 pixels (a 256x63 rectangle each) that the
 *                                 relay frames on their way
 *   relay viewer -> VNC (4 KiB)   the viewer sends masked binary frames of
 *   relay viewer -> VNC (64 KiB)  that payload, one send per frame, as a
 *                                 browser does; bytes read on the VNC side
 *
 * What bounds the relay rows: one relay thread serves every console, so a
 * row can use one core at most (and competes for it with the writer and
 * reader threads here); every byte is copied at least once more than in
 * the direct row (memcpy into the frame buffer behind a header; upstream,
 * unmasking into the parser's message, then into the VNC buffer); and each 64 KiB
 * (CONSOLE_FRAME_PAYLOAD_MAX) costs at least a recv, a send and an epoll_wait round in the relay on
 * top of the two syscalls of the direct copy. Small client frames add a header parse and a message
 * event per frame.
 *
 * MB/s is 10^6 bytes a second over CLOCK_MONOTONIC, from the writer's start
 * to the reader's last byte. Speed never fails the run (machines are shared
 * and noisy). The exit status is 1 when bytes arrive corrupted, lost, out of
 * order or late (STALL_TIMEOUT_S without progress), or when the relay breaks
 * its contract with the HTTP layer: done not called within DONE_TIMEOUT_S of
 * both ends closing, called twice, or the viewer slot not given back.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "console.h"
#include "log.h"
#include "util.h"
#include "ws.h"

#define MIB (1024 * 1024)
#define MIB_DEFAULT 256
#define MIB_QUICK 16
#define MIB_LIMIT (64 * 1024)
#define RUNS 3
#define WARM_UP_MIB 16
/* What the direct writer sends per call, and the largest client frame payload. */
#define CHUNK (64 * 1024)
#define READ_BUFFER (256 * 1024)
/* A prime: no write, frame or read size lines up with it, so a dropped,
 * doubled or reordered piece of the stream shows as a mismatch. */
#define PATTERN_PERIOD 1048573
/* 2 bytes, 8 for the longest length form, 4 of mask. */
#define CLIENT_HEADER_MAX 14
#define STALL_TIMEOUT_S 10
#define DONE_TIMEOUT_S 2
#define MAX_VIEWERS 4
#define INSTANCE "6f0e7a52-0c1d-4b8e-9a57-3c2d1e0f4b6a"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* One period plus a chunk, so every write or frame is one contiguous slice. */
static uint8_t pattern[PATTERN_PERIOD + CHUNK];

/* What a writer sends and a reader expects: data repeats every period bytes. */
typedef struct {
    const uint8_t *data; /* period + CHUNK bytes, the first CHUNK repeated at the end */
    size_t period;
} Source;

static const Source plain = {pattern, PATTERN_PERIOD};

/* The parsed row's FramebufferUpdates: one Raw rectangle each, pixels from the pattern. */
#define UPDATE_W 256
#define UPDATE_H 63
#define UPDATE_PIXELS (UPDATE_W * UPDATE_H * 4)
#define UPDATE_LEN (4 + 12 + UPDATE_PIXELS)
#define UPDATES_PER_PERIOD 16
static uint8_t updates_data[UPDATES_PER_PERIOD * UPDATE_LEN + CHUNK];
static const Source updates = {updates_data, UPDATES_PER_PERIOD *UPDATE_LEN};

static void updates_fill(void)
{
    for (size_t k = 0; k < UPDATES_PER_PERIOD; k++) {
        uint8_t *m = updates_data + k * UPDATE_LEN;
        static const uint8_t header[16] = {
            0, 0, 0, 1, /* FramebufferUpdate, one rectangle */
            0, 0, 0, 0, UPDATE_W >> 8, UPDATE_W & 0xff, 0, UPDATE_H, 0, 0, 0, 0, /* Raw */
        };
        memcpy(m, header, sizeof(header));
        memcpy(m + sizeof(header), pattern + k * UPDATE_PIXELS, UPDATE_PIXELS);
    }
    memcpy(updates_data + updates.period, updates_data, CHUNK);
}

static void pattern_fill(void)
{
    uint64_t state = 0x6c65676261; /* fixed: the same bytes every run */
    for (size_t i = 0; i < PATTERN_PERIOD; i += 8) {
        /* splitmix64 */
        uint64_t z = (state += 0x9e3779b97f4a7c15);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
        z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
        z ^= z >> 31;
        memcpy(pattern + i, &z, MIN(sizeof(z), PATTERN_PERIOD - i));
    }
    memcpy(pattern + PATTERN_PERIOD, pattern, CHUNK);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Our ends of every socket give up after STALL_TIMEOUT_S, so a stuck relay fails the run. */
static int set_timeouts(int fd)
{
    struct timeval tv = {.tv_sec = STALL_TIMEOUT_S};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
        return -errno;
    return 0;
}

/* ---- the receiving side: every byte checked against the pattern ---- */

typedef struct {
    const char *what; /* the row, for messages */
    Source source;
    uint64_t total;  /* bytes the writer sends */
    uint64_t offset; /* bytes verified so far */
} Checker;

/* Where bytes that did not match belong in the pattern, to tell a shift from garbage. */
static void report_mismatch(const Checker *c, const uint8_t *data, size_t len, size_t i)
{
    const uint8_t *ref = c->source.data;
    size_t at = (c->offset + i) % c->source.period;
    log_error("%s: byte %" PRIu64 " of %" PRIu64 " is 0x%02x, expected 0x%02x", c->what,
              c->offset + i, c->total, data[i], ref[at]);
    size_t probe = MIN(len - i, 16);
    const uint8_t *found =
        probe >= 8 ? memmem(ref, c->source.period + CHUNK, data + i, probe) : NULL;
    if (found)
        log_error("%s: the %zu bytes from there belong at pattern offset %td (expected %zu): "
                  "bytes lost, doubled or reordered",
                  c->what, probe, found - ref, at);
    else
        log_error("%s: the bytes from there are not in the pattern: corrupted", c->what);
}

static int check_bytes(Checker *c, const uint8_t *data, size_t len)
{
    if (len > c->total - c->offset) {
        log_error("%s: %zu bytes more than the %" PRIu64 " written", c->what,
                  len - (size_t)(c->total - c->offset), c->total);
        return -EBADMSG;
    }
    const uint8_t *ref = c->source.data;
    while (len > 0) {
        size_t at = c->offset % c->source.period;
        size_t n = MIN(len, c->source.period - at);
        if (memcmp(data, ref + at, n) != 0) {
            size_t i = 0;
            while (data[i] == ref[at + i])
                i++;
            report_mismatch(c, data, len, i);
            return -EBADMSG;
        }
        c->offset += n;
        data += n;
        len -= n;
    }
    return 0;
}

/* Server frames as a viewer sees them, parsed in place from what recv() gave. */
typedef struct {
    uint8_t header[WS_FRAME_HEADER_MAX];
    size_t header_len;
    uint64_t payload_left;
    bool control; /* the payload being skipped is a ping's or pong's, not VNC bytes */
    uint64_t frames;
} FrameReader;

static size_t frame_header_len(const uint8_t *header)
{
    uint8_t len7 = header[1] & 0x7f;
    return len7 == 127 ? 10 : len7 == 126 ? 4 : 2;
}

static int frame_header_done(FrameReader *fr, const Checker *c)
{
    const uint8_t *h = fr->header;
    uint64_t len = h[1] & 0x7f;
    if (len == 126)
        len = (uint64_t)h[2] << 8 | h[3];
    else if (len == 127)
        len = (uint64_t)h[2] << 56 | (uint64_t)h[3] << 48 | (uint64_t)h[4] << 40 |
              (uint64_t)h[5] << 32 | (uint64_t)h[6] << 24 | (uint64_t)h[7] << 16 |
              (uint64_t)h[8] << 8 | h[9];
    fr->header_len = 0;
    fr->payload_left = len;

    if (h[1] & 0x80) {
        log_error("%s: masked server frame after %" PRIu64 " bytes", c->what, c->offset);
        return -EPROTO;
    }
    if (h[0] == (0x80 | WS_OPCODE_BINARY)) {
        fr->control = false;
        fr->frames++;
        return 0;
    }
    /* The relay pings every CONSOLE_PING_INTERVAL_S: not VNC bytes, not an error. */
    if ((h[0] == (0x80 | WS_OPCODE_PING) || h[0] == (0x80 | WS_OPCODE_PONG)) &&
        len <= WS_CONTROL_PAYLOAD_MAX) {
        fr->control = true;
        return 0;
    }
    if (h[0] == (0x80 | WS_OPCODE_CLOSE))
        log_error("%s: close frame after %" PRIu64 " of %" PRIu64 " bytes", c->what, c->offset,
                  c->total);
    else
        log_error("%s: unexpected frame 0x%02x 0x%02x (length %" PRIu64 ") after %" PRIu64 " bytes",
                  c->what, h[0], h[1], len, c->offset);
    return -EPROTO;
}

static int frames_feed(FrameReader *fr, Checker *c, const uint8_t *data, size_t len)
{
    while (len > 0) {
        if (fr->payload_left > 0) {
            size_t n = (size_t)MIN((uint64_t)len, fr->payload_left);
            if (!fr->control) {
                int r = check_bytes(c, data, n);
                if (r < 0)
                    return r;
            }
            fr->payload_left -= n;
            data += n;
            len -= n;
            continue;
        }
        fr->header[fr->header_len++] = *data++;
        len--;
        if (fr->header_len >= 2 && fr->header_len == frame_header_len(fr->header)) {
            int r = frame_header_done(fr, c);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* Reads until all c->total bytes are verified: raw bytes, or server frames when fr is set. */
static int read_all(int fd, Checker *c, FrameReader *fr)
{
    _cleanup_free_ uint8_t *buf = malloc(READ_BUFFER);
    if (!buf)
        return -ENOMEM;
    while (c->offset < c->total) {
        ssize_t n = recv(fd, buf, READ_BUFFER, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            log_error("%s: stalled: nothing for %d s after %" PRIu64 " of %" PRIu64 " bytes",
                      c->what, STALL_TIMEOUT_S, c->offset, c->total);
            return -ETIMEDOUT;
        }
        if (n < 0) {
            int r = -errno;
            log_error("%s: recv: %s", c->what, strerror(-r));
            return r;
        }
        if (n == 0) {
            log_error("%s: end of stream after %" PRIu64 " of %" PRIu64 " bytes: lost", c->what,
                      c->offset, c->total);
            return -EPIPE;
        }
        int r = fr ? frames_feed(fr, c, buf, (size_t)n) : check_bytes(c, buf, (size_t)n);
        if (r < 0)
            return r;
    }
    if (fr && fr->payload_left > 0 && !fr->control) {
        log_error("%s: the last frame claims %" PRIu64 " bytes past the end", c->what,
                  fr->payload_left);
        return -EBADMSG;
    }
    return 0;
}

/* ---- the sending side, on a thread of its own ---- */

typedef struct {
    int fd;
    Source source;
    uint64_t total;
    size_t frame_payload; /* 0: raw bytes in CHUNK writes; else masked frames of this payload */
    uint32_t rng;         /* xorshift32 state for the mask keys */
    uint64_t sent;
    int error;
} Writer;

static int send_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A client frame as RFC 6455 section 5.2 lays it out: FIN, binary, masked. */
static size_t frame_masked(uint8_t *frame, const uint8_t *payload, size_t len, uint32_t key)
{
    size_t h = 0;
    frame[h++] = 0x80 | WS_OPCODE_BINARY;
    if (len < 126) {
        frame[h++] = 0x80 | (uint8_t)len;
    } else if (len <= 0xffff) {
        frame[h++] = 0x80 | 126;
        frame[h++] = (uint8_t)(len >> 8);
        frame[h++] = (uint8_t)len;
    } else {
        frame[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            frame[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint8_t mask[8];
    memcpy(mask, &key, 4);
    memcpy(mask + 4, &key, 4);
    memcpy(frame + h, mask, 4);
    h += 4;

    /* Eight bytes at a time, so the client's masking costs little next to the relay's. */
    uint64_t mask64;
    memcpy(&mask64, mask, sizeof(mask64));
    uint8_t *out = frame + h;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word;
        memcpy(&word, payload + i, sizeof(word));
        word ^= mask64;
        memcpy(out + i, &word, sizeof(word));
    }
    for (; i < len; i++)
        out[i] = payload[i] ^ mask[i & 3];
    return h + len;
}

static uint32_t next_key(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

static void *writer_main(void *data)
{
    Writer *w = data;
    _cleanup_free_ uint8_t *frame = NULL;
    if (w->frame_payload > 0) {
        frame = malloc(CLIENT_HEADER_MAX + w->frame_payload);
        if (!frame) {
            w->error = -ENOMEM;
            return NULL;
        }
    }
    size_t chunk = w->frame_payload > 0 ? w->frame_payload : CHUNK;
    while (w->sent < w->total) {
        const uint8_t *slice = w->source.data + w->sent % w->source.period;
        size_t n = (size_t)MIN((uint64_t)chunk, w->total - w->sent);
        int r;
        if (frame)
            r = send_all(w->fd, frame, frame_masked(frame, slice, n, next_key(&w->rng)));
        else
            r = send_all(w->fd, slice, n);
        if (r < 0) {
            w->error = r;
            return NULL;
        }
        w->sent += n;
    }
    return NULL;
}

/*
 * Times one transfer: the writer sends on write_fd while this thread reads
 * and verifies on read_fd. A failed read unblocks the writer by shutting its
 * socket down before the join.
 */
static int transfer(const char *what, Source source, uint64_t total, int write_fd,
                    size_t frame_payload, int read_fd, FrameReader *fr, double *ret_seconds)
{
    Writer w = {.fd = write_fd, .source = source, .total = total, .frame_payload = frame_payload};
    if (util_random_bytes(&w.rng, sizeof(w.rng)) < 0 || w.rng == 0)
        w.rng = 0x2545f491;
    Checker c = {.what = what, .source = source, .total = total};

    pthread_t thread;
    double start = now_s();
    int r = -pthread_create(&thread, NULL, writer_main, &w);
    if (r < 0) {
        log_error("%s: pthread_create: %s", what, strerror(-r));
        return r;
    }
    r = read_all(read_fd, &c, fr);
    double end = now_s();
    if (r < 0)
        shutdown(write_fd, SHUT_RDWR);
    pthread_join(thread, NULL);
    /* After a failed read the writer's EPIPE is only our shutdown. */
    if (w.error < 0 && !(r < 0 && w.error == -EPIPE))
        log_error("%s: writer: send failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what,
                  w.sent, total, strerror(-w.error));
    if (r < 0)
        return r;
    if (w.error < 0)
        return w.error;
    *ret_seconds = end - start;
    return 0;
}

/* ---- relay sessions ---- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned calls;
} DoneFlag;

static void on_done(void *data)
{
    DoneFlag *d = data;
    pthread_mutex_lock(&d->lock);
    d->calls++;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

static void done_init(DoneFlag *d)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&d->lock, NULL);
}

static void done_reset(DoneFlag *d)
{
    pthread_mutex_lock(&d->lock);
    d->calls = 0;
    pthread_mutex_unlock(&d->lock);
}

/* The number of calls so far, after waiting up to seconds for the first. */
static unsigned done_wait(DoneFlag *d, int seconds)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += seconds;
    pthread_mutex_lock(&d->lock);
    while (d->calls == 0 && pthread_cond_timedwait(&d->cond, &d->lock, &deadline) != ETIMEDOUT)
        ;
    unsigned calls = d->calls;
    pthread_mutex_unlock(&d->lock);
    return calls;
}

/* One viewer on one console, as the HTTP layer would hand it to the relay. */
typedef struct {
    int viewer_fd;   /* ours: the browser's end */
    int vnc_fd;      /* ours: the VM's end */
    int relay_ws_fd; /* lent to the relay until it calls done */
    bool lent;
    DoneFlag done;
} Session;

typedef struct {
    ConsoleRelay *relay;
    uint64_t total;
    uint64_t moved; /* by the last run: total, or less to end on a whole message */
    unsigned runs;
    /* The one session at a time; kept here, not on a stack, as a late done may still come. */
    Session session;
    uint64_t frames; /* server frames in the last VNC -> viewer run */
} Bench;

static int session_close(Bench *b);

/*
 * Both sockets go over as they come (blocking), as virDomainOpenGraphicsFD's
 * fd and the upgraded socket would: making them non-blocking is the relay's job.
 */
static int session_open(Bench *b, ConsoleClipboard clipboard)
{
    Session *s = &b->session;
    int vnc[2] = {-1, -1}, viewer[2] = {-1, -1};
    int r;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, vnc) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, viewer) < 0) {
        r = -errno;
        log_error("socketpair: %s", strerror(-r));
        goto fail;
    }
    r = set_timeouts(vnc[0]);
    if (r == 0)
        r = set_timeouts(viewer[0]);
    if (r < 0) {
        log_error("setsockopt: %s", strerror(-r));
        goto fail;
    }
    r = console_relay_reserve(b->relay, INSTANCE);
    if (r < 0) {
        log_error("console_relay_reserve: %s (%u viewers counted)", strerror(-r),
                  console_relay_viewers(b->relay, INSTANCE));
        goto fail;
    }

    done_reset(&s->done);
    s->viewer_fd = viewer[0];
    s->vnc_fd = vnc[0];
    s->relay_ws_fd = viewer[1];
    s->lent = true;
    r = console_relay_attach(b->relay, INSTANCE, viewer[1], NULL, 0, vnc[1], clipboard, on_done,
                             &s->done);
    if (r < 0) {
        /* The relay has closed vnc[1] and called done already. */
        log_error("console_relay_attach: %s", strerror(-r));
        session_close(b);
        return r;
    }
    return 0;

fail:
    closep(&vnc[0]);
    closep(&vnc[1]);
    closep(&viewer[0]);
    closep(&viewer[1]);
    return r;
}

/*
 * Closes our ends and takes the viewer's socket back. The relay must call
 * done once and give the slot back; when done is late the socket stays lent
 * (the relay may still use it) and the session stays in b for the stop.
 */
static int session_close(Bench *b)
{
    Session *s = &b->session;
    closep(&s->viewer_fd);
    closep(&s->vnc_fd);
    s->viewer_fd = s->vnc_fd = -1;

    unsigned calls = done_wait(&s->done, DONE_TIMEOUT_S);
    if (calls == 0) {
        log_error("done not called within %d s of both ends closing", DONE_TIMEOUT_S);
        return -ETIMEDOUT;
    }
    s->lent = false;
    closep(&s->relay_ws_fd);
    s->relay_ws_fd = -1;
    if (calls > 1) {
        log_error("done called %u times for one session", calls);
        return -EPROTO;
    }

    /* The slot may be given back just after done, on the relay's thread. */
    unsigned viewers;
    double deadline = now_s() + DONE_TIMEOUT_S;
    while ((viewers = console_relay_viewers(b->relay, INSTANCE)) > 0 && now_s() < deadline)
        usleep(1000);
    if (viewers > 0) {
        log_error("%u viewer slots still taken %d s after done", viewers, DONE_TIMEOUT_S);
        return -EUSERS;
    }
    return 0;
}

/* ---- the rows ---- */

static int run_direct(Bench *b, size_t frame_payload, double *ret_seconds)
{
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
        int r = -errno;
        log_error("socketpair: %s", strerror(-r));
        return r;
    }
    int r = set_timeouts(fds[0]);
    if (r == 0)
        r = set_timeouts(fds[1]);
    if (r < 0)
        log_error("setsockopt: %s", strerror(-r));
    else
        r = transfer("direct", plain, b->total, fds[0], 0, fds[1], NULL, ret_seconds);
    b->moved = b->total;
    close(fds[0]);
    close(fds[1]);
    return r;
}

static int run_to_viewer(Bench *b, size_t frame_payload, double *ret_seconds)
{
    int r = session_open(b, CONSOLE_CLIPBOARD_BOTH);
    if (r < 0)
        return r;
    FrameReader fr = {0};
    b->moved = b->total;
    r = transfer("VNC -> viewer", plain, b->moved, b->session.vnc_fd, 0, b->session.viewer_fd, &fr,
                 ret_seconds);
    b->frames = fr.frames;
    int k = session_close(b);
    return r < 0 ? r : k;
}

/* Bytes one side sends as they are, and the other verifies (server frames on the viewer's side). */
static int turn(const char *what, int from, const void *data, size_t len, size_t frame_payload,
                int to, bool framed)
{
    Source once = {data, len};
    uint8_t *copy = malloc(len + CHUNK);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, data, len);
    memset(copy + len, 0, CHUNK);
    once.data = copy;
    FrameReader fr = {0};
    double seconds;
    int r = transfer(what, once, len, from, frame_payload, to, framed ? &fr : NULL, &seconds);
    free(copy);
    return r;
}

/*
 * The RFB handshake a filtered console must see before any update: 3.8,
 * security None, a 32-bpp ServerInit, in turns.
 */
static int rfb_handshake(Session *s)
{
    static const char version[] = "RFB 003.008\n";
    static const uint8_t offered[] = {1, 1}, chosen[] = {1, 1};
    static const uint8_t init[] = {
        0,  0,  0, 0,                                       /* SecurityResult: OK */
        3,  0,  2, 88,                                      /* 768x600 */
        32, 24, 0, 1,  0, 255, 0, 255, 0,   255, 16,  8, 0, /* 32 bpp, depth 24, true colour */
        0,  0,  0, 0,  0, 0,   4, 'Q', 'E', 'M', 'U',       /* padding, name */
    };
    int r = turn("handshake", s->vnc_fd, version, 12, 0, s->viewer_fd, true);
    if (r == 0)
        r = turn("handshake", s->viewer_fd, version, 12, 12, s->vnc_fd, false);
    if (r == 0)
        r = turn("handshake", s->vnc_fd, offered, 2, 0, s->viewer_fd, true);
    if (r == 0)
        r = turn("handshake", s->viewer_fd, chosen, 2, 2, s->vnc_fd, false);
    if (r == 0)
        r = turn("handshake", s->vnc_fd, init, sizeof(init), 0, s->viewer_fd, true);
    return r;
}

static int run_to_viewer_parsed(Bench *b, size_t frame_payload, double *ret_seconds)
{
    int r = session_open(b, CONSOLE_CLIPBOARD_NONE);
    if (r < 0)
        return r;
    r = rfb_handshake(&b->session);
    FrameReader fr = {0};
    b->moved = b->total / UPDATE_LEN * UPDATE_LEN;
    if (r == 0)
        r = transfer("VNC -> viewer (parsed)", updates, b->moved, b->session.vnc_fd, 0,
                     b->session.viewer_fd, &fr, ret_seconds);
    int k = session_close(b);
    return r < 0 ? r : k;
}

static int run_to_vnc(Bench *b, size_t frame_payload, double *ret_seconds)
{
    int r = session_open(b, CONSOLE_CLIPBOARD_BOTH);
    if (r < 0)
        return r;
    b->moved = b->total;
    r = transfer("viewer -> VNC", plain, b->moved, b->session.viewer_fd, frame_payload,
                 b->session.vnc_fd, NULL, ret_seconds);
    int k = session_close(b);
    return r < 0 ? r : k;
}

typedef struct {
    const char *name;
    int (*run)(Bench *b, size_t frame_payload, double *ret_seconds);
    size_t frame_payload;
} Row;

static const Row rows[] = {
    {"direct unix socket copy", run_direct, 0},
    {"relay VNC -> viewer", run_to_viewer, 0},
    {"relay VNC -> viewer (parsed)", run_to_viewer_parsed, 0},
    {"relay viewer -> VNC (4 KiB)", run_to_vnc, 4 * 1024},
    {"relay viewer -> VNC (64 KiB)", run_to_vnc, 64 * 1024},
};

/* Stops the relay; a session whose done was late must get it now. */
static int relay_stop(Bench *b)
{
    console_relay_stop(b->relay);
    b->relay = NULL;
    Session *s = &b->session;
    if (!s->lent)
        return 0;
    unsigned calls = done_wait(&s->done, 0);
    if (calls == 0) {
        log_error("done never called, not even by console_relay_stop; the socket is not closed");
        return -ETIMEDOUT;
    }
    log_error("done called only by console_relay_stop (%u calls)", calls);
    closep(&s->relay_ws_fd);
    return -ETIMEDOUT;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: bench_relay [--quick] [--mib N]\n"
            "  --quick   %d MiB, one run per row (the ctest mode)\n"
            "  --mib N   MiB per run (default %d), best of %d runs per row\n",
            MIB_QUICK, MIB_DEFAULT, RUNS);
}

int main(int argc, char **argv)
{
    unsigned mib = MIB_DEFAULT, runs = RUNS;
    bool quick = false;
    long mib_arg = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc) {
            char *end;
            mib_arg = strtol(argv[++i], &end, 10);
            if (*end != '\0' || mib_arg < 1 || mib_arg > MIB_LIMIT) {
                fprintf(stderr, "bench_relay: --mib wants 1..%d\n", MIB_LIMIT);
                return 2;
            }
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (quick) {
        mib = MIB_QUICK;
        runs = 1;
    }
    if (mib_arg > 0)
        mib = (unsigned)mib_arg;

    /* As legbad does: a viewer that goes away is an error return, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    log_set_ident("bench_relay");
    log_set_level(LOG_LEVEL_WARN);
    pattern_fill();
    updates_fill();

    Bench b = {
        .total = (uint64_t)mib * MIB,
        .runs = runs,
        .session = {.viewer_fd = -1, .vnc_fd = -1, .relay_ws_fd = -1},
    };
    done_init(&b.session.done);
    int r = console_relay_start(&(ConsoleOptions){.max_viewers = MAX_VIEWERS}, &b.relay);
    if (r < 0) {
        log_error("console_relay_start: %s", strerror(-r));
        return 1;
    }

    /* Untimed: the first transfer pays for faulting in pages and starting threads. */
    double warm_up;
    r = run_direct(&(Bench){.total = WARM_UP_MIB * MIB}, 0, &warm_up);
    if (r < 0) {
        relay_stop(&b);
        return 1;
    }

    printf("relay benchmark (%u MiB, best of %u run%s)\n", mib, runs, runs == 1 ? "" : "s");
    printf("%-30s %10s %10s\n", "path", "MB/s", "vs direct");
    fflush(stdout);
    double direct = 0;
    for (size_t i = 0; i < ARRAY_SIZE(rows) && r == 0; i++) {
        double best = 0;
        for (unsigned run = 0; run < runs && r == 0; run++) {
            double seconds = 0;
            r = rows[i].run(&b, rows[i].frame_payload, &seconds);
            if (r == 0 && (double)b.moved / seconds / 1e6 > best)
                best = (double)b.moved / seconds / 1e6;
        }
        if (r < 0)
            break;
        if (i == 0)
            direct = best;
        printf("%-30s %10.1f %10.2f\n", rows[i].name, best, best / direct);
        fflush(stdout);
    }
    if (r == 0 && b.frames > 0)
        printf("(VNC -> viewer: %" PRIu64 " frames, %.1f KiB of payload each on average)\n",
               b.frames, (double)b.total / (double)b.frames / 1024);

    int k = relay_stop(&b);
    if (r < 0 || k < 0) {
        fprintf(stderr, "bench_relay: FAILED (see above)\n");
        return 1;
    }
    return 0;
}
