/*
 * The console relay, with the test on both ends: a socketpair stands for
 * the viewer's upgraded WebSocket (the test is the browser: it masks what it
 * sends and decodes the server's frames) and another for the VM's VNC
 * stream (the test is the VM). Every wait is bounded by a poll timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "console.h"
#include "log.h"
#include "ws.h"

#define INSTANCE_A "0b6c3f0e-7d2a-4c1b-9e5f-1a2b3c4d5e01"
#define INSTANCE_B "0b6c3f0e-7d2a-4c1b-9e5f-1a2b3c4d5e02"
#define INSTANCE_C "0b6c3f0e-7d2a-4c1b-9e5f-1a2b3c4d5e03"

#define MAX_VIEWERS 2
#define MAX_CONSOLES 4
/* What the relay promises "within a second". */
#define PROMPT_MS 1000
/* Moving a MiB or two through the relay; generous for valgrind. */
#define TRANSFER_MS 20000
/* A writer that made no progress for this long is blocked by the relay, not slow. */
#define STALL_QUIET_MS 300
#define STALL_WAIT_MS 10000
/* Mirrors CONSOLE_BUFFER_CAP in console.c: the most one direction's buffer may hold. */
#define RELAY_BUFFER_CAP (CONSOLE_BUFFER_HIGH + CONSOLE_MESSAGE_MAX + CONSOLE_FRAME_PAYLOAD_MAX)

/* A browser picks a fresh mask per frame; one fixed key does as well for the relay. */
static const uint8_t client_mask[4] = {0xa5, 0x3c, 0x0f, 0x96};

/* ---- bytes and time ---- */

typedef struct {
    uint8_t *data;
    size_t len, cap;
} Buf;

static void buf_free(Buf *b)
{
    free(b->data);
    *b = (Buf){0};
}

static uint8_t *buf_grow(Buf *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->data = realloc(b->data, cap);
        assert_non_null(b->data);
        b->cap = cap;
    }
    uint8_t *at = b->data + b->len;
    b->len += n;
    return at;
}

static void buf_add(Buf *b, const void *data, size_t n)
{
    if (n > 0)
        memcpy(buf_grow(b, n), data, n);
}

static void buf_consume(Buf *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

/* Bytes no write or frame size lines up with, so a lost or doubled piece shows. */
static uint8_t *pattern_new(size_t len, uint32_t seed)
{
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ms_left(int64_t deadline)
{
    int64_t left = deadline - now_ms();
    return left > 0 ? (int)left : 0;
}

/* CPU this process used (every thread): user plus system, in ms. */
static int64_t cpu_ms(void)
{
    struct rusage u;
    assert_int_equal(getrusage(RUSAGE_SELF, &u), 0);
    return ((int64_t)u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000 +
           ((int64_t)u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1000;
}

static void sleep_ms(int ms)
{
    poll(NULL, 0, ms);
}

/* ---- frames as a browser writes them (masked) ---- */

static void client_header(Buf *b, uint8_t b0, bool masked, uint64_t len)
{
    uint8_t mask_bit = masked ? 0x80 : 0;
    buf_add(b, &b0, 1);
    if (len < 126) {
        uint8_t b1 = mask_bit | (uint8_t)len;
        buf_add(b, &b1, 1);
    } else if (len <= 0xffff) {
        uint8_t h[3] = {mask_bit | 126, (uint8_t)(len >> 8), (uint8_t)len};
        buf_add(b, h, sizeof(h));
    } else {
        uint8_t h[9] = {mask_bit | 127};
        for (int i = 0; i < 8; i++)
            h[1 + i] = (uint8_t)(len >> (56 - 8 * i));
        buf_add(b, h, sizeof(h));
    }
    if (masked)
        buf_add(b, client_mask, sizeof(client_mask));
}

static void client_frame_raw(Buf *b, uint8_t b0, bool masked, const void *payload, size_t len)
{
    client_header(b, b0, masked, len);
    uint8_t *at = buf_grow(b, len);
    for (size_t i = 0; i < len; i++)
        at[i] = ((const uint8_t *)payload)[i] ^ (masked ? client_mask[i & 3] : 0);
}

static void client_frame(Buf *b, WsOpcode opcode, bool fin, const void *payload, size_t len)
{
    client_frame_raw(b, (uint8_t)((fin ? 0x80 : 0) | opcode), true, payload, len);
}

static void client_str(Buf *b, WsOpcode opcode, bool fin, const char *s)
{
    client_frame(b, opcode, fin, s, strlen(s));
}

static void client_close(Buf *b, uint16_t code, const char *reason)
{
    uint8_t payload[WS_CONTROL_PAYLOAD_MAX];
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    size_t n = strlen(reason);
    memcpy(payload + 2, reason, n);
    client_frame(b, WS_OPCODE_CLOSE, true, payload, 2 + n);
}

/* ---- the done callback: how the relay hands the viewer's socket back ---- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int calls;
} Done;

static void done_init(Done *d)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&d->lock, NULL);
    d->calls = 0;
}

static void done_destroy(Done *d)
{
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->lock);
}

static void done_cb(void *data)
{
    Done *d = data;
    pthread_mutex_lock(&d->lock);
    d->calls++;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

/* How many times done has been called, after waiting up to timeout_ms for the first. */
static int done_wait(Done *d, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->lock);
    while (d->calls == 0)
        if (pthread_cond_timedwait(&d->cond, &d->lock, &until) == ETIMEDOUT)
            break;
    int calls = d->calls;
    pthread_mutex_unlock(&d->lock);
    return calls;
}

static int done_calls(Done *d)
{
    return done_wait(d, 0);
}

/* ---- one console: the browser's end, the relay's WebSocket end, the VM's end ---- */

typedef struct {
    int viewer; /* the test plays the browser here */
    int ws;     /* handed to the relay; the test closes it after done */
    int vm;     /* the test plays the VM here; its peer is the relay's vnc_fd */
    bool attached;
    Done done;
    Buf rx; /* viewer bytes not yet decoded into frames */
} Console;

typedef struct {
    ConsoleRelay *relay;
    Console consoles[MAX_CONSOLES];
    size_t n_consoles;
} Fixture;

typedef struct {
    uint8_t opcode;
    bool fin;
    uint8_t *payload; /* NUL-terminated for convenience */
    size_t len;
} Frame;

static void frame_free(Frame *f)
{
    free(f->payload);
    *f = (Frame){0};
}

static void set_nonblocking(int fd)
{
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    if (console_relay_start(&(ConsoleOptions){.max_viewers = MAX_VIEWERS}, &f->relay) < 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

/* Stops the relay (which hands back what is still open), then checks done came once each. */
static int teardown(void **state)
{
    Fixture *f = *state;
    console_relay_stop(f->relay);
    int failed = 0;
    for (size_t i = 0; i < f->n_consoles; i++) {
        Console *c = &f->consoles[i];
        int calls = done_calls(&c->done);
        if (calls != 1) {
            fprintf(stderr, "console %zu: done called %d times\n", i, calls);
            failed = -1;
        }
        if (c->ws >= 0)
            close(c->ws);
        if (c->viewer >= 0)
            close(c->viewer);
        if (c->vm >= 0)
            close(c->vm);
        buf_free(&c->rx);
        done_destroy(&c->done);
    }
    free(f);
    return failed;
}

/* New console sockets; *ret_vnc is the relay's end of the VM's stream. */
static Console *console_new(Fixture *f, int *ret_vnc)
{
    assert_true(f->n_consoles < MAX_CONSOLES);
    Console *c = &f->consoles[f->n_consoles++];
    *c = (Console){.viewer = -1, .ws = -1, .vm = -1};
    done_init(&c->done);
    int ws_pair[2], vnc_pair[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ws_pair), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, vnc_pair), 0);
    c->viewer = ws_pair[0];
    c->ws = ws_pair[1];
    c->vm = vnc_pair[0];
    *ret_vnc = vnc_pair[1];
    set_nonblocking(c->viewer);
    set_nonblocking(c->vm);
    return c;
}

static Console *console_open_with(Fixture *f, const char *uuid, const void *pending,
                                  size_t pending_len, ConsoleClipboard clipboard)
{
    int vnc;
    Console *c = console_new(f, &vnc);
    assert_int_equal(console_relay_reserve(f->relay, uuid), 0);
    assert_int_equal(console_relay_attach(f->relay, uuid, c->ws, pending, pending_len, vnc,
                                          clipboard, done_cb, &c->done),
                     0);
    c->attached = true;
    return c;
}

/* The relay as a byte pipe: clipboard both, so RFB passes unread and any bytes do. */
static Console *console_open_pending(Fixture *f, const char *uuid, const void *pending,
                                     size_t pending_len)
{
    return console_open_with(f, uuid, pending, pending_len, CONSOLE_CLIPBOARD_BOTH);
}

static Console *console_open(Fixture *f, const char *uuid)
{
    return console_open_pending(f, uuid, NULL, 0);
}

/* What the HTTP layer does in its done callback's stead: close the socket it got back. */
static void console_hand_back(Console *c)
{
    assert_int_equal(done_calls(&c->done), 1);
    close(c->ws);
    c->ws = -1;
}

/* Sends everything within the deadline (the relay must be reading). */
static void send_all(int fd, const void *data, size_t len, int64_t deadline)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            assert_int_equal(poll(&pfd, 1, ms_left(deadline)), 1);
            continue;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void viewer_send(Console *c, const Buf *stream)
{
    send_all(c->viewer, stream->data, stream->len, now_ms() + TRANSFER_MS);
}

/* Takes one whole server frame off c->rx: 1, or 0 while it is incomplete. */
static int rx_take_frame(Console *c, Frame *ret)
{
    const uint8_t *p = c->rx.data;
    size_t n = c->rx.len;
    if (n < 2)
        return 0;
    assert_int_equal(p[0] & 0x70, 0); /* no extension: no RSV bit */
    assert_int_equal(p[1] & 0x80, 0); /* a server never masks */
    uint64_t len = p[1] & 0x7f;
    size_t header = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        header = 4;
        assert_true(len >= 126); /* the shortest form */
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        header = 10;
        assert_true(len > 0xffff);
    }
    assert_true(len <= CONSOLE_FRAME_PAYLOAD_MAX);
    if (n < header + len)
        return 0;
    ret->fin = p[0] & 0x80;
    ret->opcode = p[0] & 0x0f;
    ret->len = (size_t)len;
    ret->payload = malloc(ret->len + 1);
    assert_non_null(ret->payload);
    memcpy(ret->payload, p + header, ret->len);
    ret->payload[ret->len] = '\0';
    buf_consume(&c->rx, header + ret->len);
    return 1;
}

/*
 * Reads what the viewer's socket holds: bytes read, 0 at EOF, -EAGAIN, or
 * -ECONNRESET when the relay's end was closed with bytes of ours unread (over
 * TCP, a reset that can destroy the close frame before the browser sees it).
 */
static ssize_t viewer_recv(Console *c)
{
    uint8_t *at = buf_grow(&c->rx, 64 * 1024);
    c->rx.len -= 64 * 1024;
    ssize_t n = recv(c->viewer, at, 64 * 1024, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == ECONNRESET)
            return -ECONNRESET;
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        return -EAGAIN;
    }
    c->rx.len += (size_t)n;
    return n;
}

/*
 * The next server frame: 0, -EPIPE at EOF (nothing left but a partial
 * frame), -ECONNRESET, -ETIMEDOUT.
 */
static int viewer_frame(Console *c, int timeout_ms, Frame *ret)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        if (rx_take_frame(c, ret))
            return 0;
        ssize_t n = viewer_recv(c);
        if (n == 0)
            return -EPIPE;
        if (n == -ECONNRESET)
            return -ECONNRESET;
        if (n > 0)
            continue;
        struct pollfd pfd = {.fd = c->viewer, .events = POLLIN};
        if (poll(&pfd, 1, ms_left(deadline)) == 0)
            return -ETIMEDOUT;
    }
}

/* Data frames until the close frame: its code, or -ETIMEDOUT / -EPIPE when none comes. */
static int viewer_close_code(Console *c, int timeout_ms, char *ret_reason, size_t reason_size)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        Frame fr;
        int r = viewer_frame(c, ms_left(deadline), &fr);
        if (r < 0)
            return r;
        assert_true(fr.fin);
        if (fr.opcode == WS_OPCODE_CLOSE) {
            assert_true(fr.len >= 2);
            int code = fr.payload[0] << 8 | fr.payload[1];
            if (ret_reason)
                snprintf(ret_reason, reason_size, "%s", (char *)fr.payload + 2);
            frame_free(&fr);
            return code;
        }
        assert_true(fr.opcode == WS_OPCODE_BINARY || fr.opcode == WS_OPCODE_PING);
        frame_free(&fr);
    }
}

/* The next frame is a binary one carrying exactly this (VNC bytes small enough for one frame). */
static void viewer_expect_binary(Console *c, const void *data, size_t len)
{
    Buf got = {0};
    int64_t deadline = now_ms() + PROMPT_MS;
    while (got.len < len) {
        Frame fr;
        assert_int_equal(viewer_frame(c, ms_left(deadline), &fr), 0);
        assert_int_equal(fr.opcode, WS_OPCODE_BINARY);
        assert_true(fr.fin);
        buf_add(&got, fr.payload, fr.len);
        frame_free(&fr);
    }
    assert_int_equal(got.len, len);
    assert_memory_equal(got.data, data, len);
    buf_free(&got);
}

/* Reads the VM's end until it holds want bytes: 0, -EPIPE at EOF, -ETIMEDOUT. */
static int vm_read(Console *c, Buf *out, size_t want, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (out->len < want) {
        size_t room = want - out->len;
        uint8_t *at = buf_grow(out, room);
        out->len -= room;
        ssize_t n = recv(c->vm, at, room, MSG_DONTWAIT);
        if (n == 0)
            return -EPIPE;
        if (n > 0) {
            out->len += (size_t)n;
            continue;
        }
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        struct pollfd pfd = {.fd = c->vm, .events = POLLIN};
        if (poll(&pfd, 1, ms_left(deadline)) == 0)
            return -ETIMEDOUT;
    }
    return 0;
}

static void vm_expect(Console *c, const void *data, size_t len)
{
    Buf got = {0};
    assert_int_equal(vm_read(c, &got, len, PROMPT_MS), 0);
    assert_memory_equal(got.data, data, len);
    buf_free(&got);
}

/* Waits for EOF on the VM's end (the relay closed vnc_fd): 0 or -ETIMEDOUT; *ret_bytes read before
 * it. */
static int vm_eof(Console *c, int timeout_ms, size_t *ret_bytes)
{
    int64_t deadline = now_ms() + timeout_ms;
    size_t total = 0;
    uint8_t sink[16384];
    for (;;) {
        ssize_t n = recv(c->vm, sink, sizeof(sink), MSG_DONTWAIT);
        if (n == 0) {
            if (ret_bytes)
                *ret_bytes = total;
            return 0;
        }
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        if (errno == ECONNRESET) {
            if (ret_bytes)
                *ret_bytes = total;
            return 0;
        }
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        struct pollfd pfd = {.fd = c->vm, .events = POLLIN};
        if (poll(&pfd, 1, ms_left(deadline)) == 0)
            return -ETIMEDOUT;
    }
}

/* True when nothing arrives on fd within ms. */
static bool fd_quiet(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, ms) == 0;
}

/*
 * The VM writes data while the viewer reads: every frame is a whole binary
 * frame of at most CONSOLE_FRAME_PAYLOAD_MAX and the payloads concatenate
 * to exactly data.
 */
static void vm_to_viewer(Console *c, const uint8_t *data, size_t len)
{
    Buf got = {0};
    size_t sent = 0;
    size_t frames = 0;
    int64_t deadline = now_ms() + TRANSFER_MS;
    while (got.len < len) {
        struct pollfd pfd[2] = {
            {.fd = c->vm, .events = sent < len ? POLLOUT : 0},
            {.fd = c->viewer, .events = POLLIN},
        };
        assert_true(poll(pfd, 2, ms_left(deadline)) > 0);
        if (pfd[0].revents & POLLOUT) {
            ssize_t n = send(c->vm, data + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0)
                sent += (size_t)n;
            else
                assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        }
        if (pfd[1].revents) {
            ssize_t n = viewer_recv(c);
            assert_true(n > 0 || n == -EAGAIN);
            Frame fr;
            while (rx_take_frame(c, &fr)) {
                assert_int_equal(fr.opcode, WS_OPCODE_BINARY);
                assert_true(fr.fin);
                assert_true(fr.len > 0);
                buf_add(&got, fr.payload, fr.len);
                frame_free(&fr);
                frames++;
            }
        }
    }
    assert_int_equal(got.len, len);
    assert_memory_equal(got.data, data, len);
    assert_true(frames >= (len + CONSOLE_FRAME_PAYLOAD_MAX - 1) / CONSOLE_FRAME_PAYLOAD_MAX);
    buf_free(&got);
}

/* The viewer sends stream while the VM reads: the VM gets exactly expect. */
static void viewer_to_vm(Console *c, const Buf *stream, const uint8_t *expect, size_t expect_len)
{
    Buf got = {0};
    size_t sent = 0;
    int64_t deadline = now_ms() + TRANSFER_MS;
    while (got.len < expect_len) {
        struct pollfd pfd[2] = {
            {.fd = c->viewer, .events = sent < stream->len ? POLLOUT : 0},
            {.fd = c->vm, .events = POLLIN},
        };
        assert_true(poll(pfd, 2, ms_left(deadline)) > 0);
        if (pfd[0].revents & POLLOUT) {
            ssize_t n = send(c->viewer, stream->data + sent, stream->len - sent,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0)
                sent += (size_t)n;
            else
                assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        }
        if (pfd[1].revents) {
            uint8_t *at = buf_grow(&got, 64 * 1024);
            got.len -= 64 * 1024;
            ssize_t n = recv(c->vm, at, 64 * 1024, MSG_DONTWAIT);
            assert_true(n != 0);
            if (n > 0)
                got.len += (size_t)n;
        }
    }
    assert_int_equal(sent, stream->len);
    assert_int_equal(got.len, expect_len);
    assert_memory_equal(got.data, expect, expect_len);
    buf_free(&got);
}

/* One round trip each way within PROMPT_MS: the session is alive and not stalled. */
static void echo(Console *c, int round)
{
    char up[32], down[32];
    snprintf(up, sizeof(up), "key event %d", round);
    snprintf(down, sizeof(down), "framebuffer update %d", round);
    int64_t start = now_ms();
    Buf stream = {0};
    client_str(&stream, WS_OPCODE_BINARY, true, up);
    viewer_send(c, &stream);
    vm_expect(c, up, strlen(up));
    send_all(c->vm, down, strlen(down), now_ms() + PROMPT_MS);
    viewer_expect_binary(c, down, strlen(down));
    assert_true(now_ms() - start <= PROMPT_MS);
    buf_free(&stream);
}

/* What a browser does with the server's close frame: send its own with the same code. */
static void viewer_answer_close(Console *c, int code)
{
    Buf stream = {0};
    client_close(&stream, (uint16_t)code, "");
    viewer_send(c, &stream);
    buf_free(&stream);
}

/* After the relay's close frame, the viewer answers it (the closing handshake) or goes silent. */
typedef enum {
    VIEWER_ANSWERS,
    VIEWER_SILENT,
} CloseAnswer;

/*
 * The relay ended the session after a close frame with code: the viewer
 * reads the code (after any data frames) and nothing after it, done is
 * called (at the viewer's answer, or after a grace when it has none), and
 * the VM's end sees EOF. Returns the bytes the VM got first.
 */
static size_t expect_closed(Console *c, int code, CloseAnswer answer)
{
    assert_int_equal(viewer_close_code(c, PROMPT_MS, NULL, 0), code);
    if (answer == VIEWER_ANSWERS)
        viewer_answer_close(c, code);
    assert_int_equal(done_wait(&c->done, PROMPT_MS), 1);
    size_t vm_bytes;
    assert_int_equal(vm_eof(c, PROMPT_MS, &vm_bytes), 0);
    console_hand_back(c);
    Frame fr;
    assert_int_equal(viewer_frame(c, PROMPT_MS, &fr), -EPIPE);
    assert_int_equal(c->rx.len, 0);
    return vm_bytes;
}

/* ---- a writer that never stops, for back-pressure ---- */

typedef struct {
    int fd;
    const uint8_t *data; /* written over and over, resuming where the socket stopped */
    size_t len;
    atomic_bool stop;
    atomic_size_t total;
    atomic_llong last_progress;
    pthread_t thread;
} Writer;

static void *writer_main(void *data)
{
    Writer *w = data;
    size_t at = 0;
    while (!atomic_load(&w->stop)) {
        ssize_t n = send(w->fd, w->data + at, w->len - at, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            at = (at + (size_t)n) % w->len;
            atomic_fetch_add(&w->total, (size_t)n);
            atomic_store(&w->last_progress, now_ms());
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            struct pollfd pfd = {.fd = w->fd, .events = POLLOUT};
            poll(&pfd, 1, 20);
        } else {
            break;
        }
    }
    return NULL;
}

static void writer_start(Writer *w, int fd, const uint8_t *data, size_t len)
{
    w->fd = fd;
    w->data = data;
    w->len = len;
    atomic_init(&w->stop, false);
    atomic_init(&w->total, 0);
    atomic_init(&w->last_progress, now_ms());
    assert_int_equal(pthread_create(&w->thread, NULL, writer_main, w), 0);
}

static void writer_stop(Writer *w)
{
    atomic_store(&w->stop, true);
    pthread_join(w->thread, NULL);
}

/* Waits until the writer is blocked for good (the relay stopped reading); its total then. */
static size_t writer_wait_stalled(Writer *w)
{
    int64_t deadline = now_ms() + STALL_WAIT_MS;
    while (now_ms() - atomic_load(&w->last_progress) < STALL_QUIET_MS ||
           atomic_load(&w->total) == 0) {
        assert_true(now_ms() < deadline);
        sleep_ms(10);
    }
    return atomic_load(&w->total);
}

/*
 * What a stalled direction may hold beyond its buffer: the kernel's socket
 * buffers on both sides of the relay (a Unix socket charges queued bytes to
 * the sender, and one send may overshoot SO_SNDBUF by about half of it).
 */
static size_t stall_bound(int fd_in, int fd_out)
{
    int in = 0, out = 0;
    socklen_t sl = sizeof(int);
    assert_int_equal(getsockopt(fd_in, SOL_SOCKET, SO_SNDBUF, &in, &sl), 0);
    sl = sizeof(int);
    assert_int_equal(getsockopt(fd_out, SOL_SOCKET, SO_SNDBUF, &out, &sl), 0);
    return RELAY_BUFFER_CAP + 2 * ((size_t)in + (size_t)out);
}

/* Writes on fd until it blocks for STALL_QUIET_MS; the total. */
static size_t fill_until_stalled(int fd, size_t limit)
{
    static const uint8_t chunk[64 * 1024] = {0x52, 0x46, 0x42};
    size_t total = 0;
    int64_t deadline = now_ms() + STALL_WAIT_MS;
    for (;;) {
        ssize_t n = send(fd, chunk, sizeof(chunk), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            total += (size_t)n;
            assert_true(total <= limit);
            continue;
        }
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, STALL_QUIET_MS) == 0)
            return total;
        assert_true(now_ms() < deadline);
    }
}

/* ---- VNC to viewer ---- */

static void test_vnc_to_viewer_small(void **state)
{
    Fixture *f = *state;
    Console *c = console_open(f, INSTANCE_A);

    static const char version[] = "RFB 003.008\n";
    vm_to_viewer(c, (const uint8_t *)version, strlen(version));
    /* One byte, then a few writes in a row. */
    vm_to_viewer(c, (const uint8_t *)"\x01", 1);
    uint8_t *p = pattern_new(3000, 1);
    vm_to_viewer(c, p, 3000);
    free(p);
}

static void test_vnc_to_viewer_large(void **state)
{
    Fixture *f = *state;
    Console *c = console_open(f, INSTANCE_A);

    /* Past one frame's payload, and a MiB that lines up with no frame size. */
    size_t sizes[] = {CONSOLE_FRAME_PAYLOAD_MAX + 1, 3 * CONSOLE_FRAME_PAYLOAD_MAX,
                      1024 * 1024 + 7};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *p = pattern_new(sizes[i], (uint32_t)i + 10);
        vm_to_viewer(c, p, sizes[i]);
        free(p);
    }
}

/* ---- viewer to VNC ---- */

static void test_viewer_to_vnc(void **state)
{
    Fixture *f = *state;
    Console *c = console_open(f, INSTANCE_A);

    /* Every length form: 7 bits, 16 bits, 64 bits. */
    size_t sizes[] = {1, 125, 126, 65535, 65536, 70001};
    Buf stream = {0}, expect = {0};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *p = pattern_new(sizes[i], (uint32_t)i + 20);
        client_frame(&stream, WS_OPCODE_BINARY, true, p, sizes[i]);
        buf_add(&expect, p, sizes[i]);
        free(p);
    }
    viewer_to_vm(c, &stream, expect.data, expect.len);
    buf_free(&stream);
    buf_free(&expect);
}

static void test_viewer_fragments_with_ping(void **state)
{
    Fixture *f = *state;
    Console *c = console_open(f, INSTANCE_A);

    /* The first fragment and a ping: the ping is answered, the message waits for its end. */
    Buf stream = {0};
    client_str(&stream, WS_OPCODE_BINARY, false, "frag");
    client_str(&stream, WS_OPCODE_PING, true, "are you there?");
    /* Byte by byte: the relay's reads split frames anywhere. */
    for (size_t i = 0; i < stream.len; i++)
        send_all(c->viewer, stream.data + i, 1, now_ms() + PROMPT_MS);
    Frame fr;
    assert_int_equal(viewer_frame(c, PROMPT_MS, &fr), 0);
    assert_int_equal(fr.opcode, WS_OPCODE_PONG);
    assert_true(fr.fin);
    assert_int_equal(fr.len, strlen("are you there?"));
    assert_memory_equal(fr.payload, "are you there?", fr.len);
    frame_free(&fr);
    assert_true(fd_quiet(c->vm, 50));

    stream.len = 0;
    client_str(&stream, WS_OPCODE_CONTINUATION, false, "mented ");
    client_str(&stream, WS_OPCODE_CONTINUATION, true, "message");
    viewer_send(c, &stream);
    vm_expect(c, "fragmented message", strlen("fragmented message"));
    assert_true(fd_quiet(c->vm, 50));
    buf_free(&stream);
}

static void test_pending_bytes_relayed(void **state)
{
    Fixture *f = *state;

    /* What came with the handshake: a whole frame, a ping, and half a frame. */
    Buf pending = {0}, tail = {0};
    client_str(&pending, WS_OPCODE_BINARY, true, "RFB 003.008\n");
    client_str(&pending, WS_OPCODE_PING, true, "hi");
    client_str(&tail, WS_OPCODE_BINARY, true, "\x01");
    buf_add(&pending, tail.data, 3);
    Console *c = console_open_pending(f, INSTANCE_A, pending.data, pending.len);
    /* Copied: the HTTP layer may reuse its buffer at once. */
    memset(pending.data, 0, pending.len);
    buf_free(&pending);

    vm_expect(c, "RFB 003.008\n", 12);
    Frame fr;
    assert_int_equal(viewer_frame(c, PROMPT_MS, &fr), 0);
    assert_int_equal(fr.opcode, WS_OPCODE_PONG);
    assert_int_equal(fr.len, 2);
    assert_memory_equal(fr.payload, "hi", 2);
    frame_free(&fr);

    /* The rest of the split frame completes it. */
    send_all(c->viewer, tail.data + 3, tail.len - 3, now_ms() + PROMPT_MS);
    vm_expect(c, "\x01", 1);
    buf_free(&tail);
    echo(c, 1);
}

/* ---- protocol errors and closing ---- */

static void test_text_frame_closes_1003(void **state)
{
    Fixture *f = *state;
    Console *c = console_open(f, INSTANCE_A);

    /* Nothing after the text frame is read: the binary frame never reaches the VM. */
    Buf stream = {0};
    client_str(&stream, WS_OPCODE_TEXT, true, "hello");
    client_str(&stream, WS_OPCODE_BINARY, true, "must not reach the VM");
    viewer_send(c, &stream);
    assert_int_equal(expect_closed(c, WS_CLOSE_UNSUPPORTED_DATA, VIEWER_ANSWERS), 0);

    /* The same when the text frame came with the handshake. */
    stream.len = 0;
    client_str(&stream, WS_OPCODE_TEXT, true, "hello");
    Console *early = console_open_pending(f, INSTANCE_B, stream.data, stream.len);
    buf_free(&stream);
    assert_int_equal(expect_closed(early, WS_CLOSE_UNSUPPORTED_DATA, VIEWER_SILENT), 0);
}

static void test_unmasked_frame_closes_1002(void **state)
{
    Fixture *f = *state;
    Console *c = console_open(f, INSTANCE_A);

    Buf stream = {0};
    client_frame_raw(&stream, 0x80 | WS_OPCODE_BINARY, false, "x", 1);
    viewer_send(c, &stream);
    buf_free(&stream);
    assert_int_equal(expect_closed(c, WS_CLOSE_PROTOCOL_ERROR, VIEWER_SILENT), 0);
}

static void test_message_limits(void **state)
{
    Fixture *f = *state;

    /* Exactly CONSOLE_MESSAGE_MAX in one frame goes through. */
    Console *fits = console_open(f, INSTANCE_A);
    uint8_t *p = pattern_new(CONSOLE_MESSAGE_MAX, 30);
    Buf stream = {0};
    client_frame(&stream, WS_OPCODE_BINARY, true, p, CONSOLE_MESSAGE_MAX);
    viewer_to_vm(fits, &stream, p, CONSOLE_MESSAGE_MAX);

    /* One byte more, declared in the header alone, is refused before any payload. */
    Console *big = console_open(f, INSTANCE_B);
    stream.len = 0;
    client_header(&stream, 0x80 | WS_OPCODE_BINARY, true, (uint64_t)CONSOLE_MESSAGE_MAX + 1);
    viewer_send(big, &stream);
    assert_int_equal(expect_closed(big, WS_CLOSE_MESSAGE_TOO_BIG, VIEWER_ANSWERS), 0);

    /* So is a message whose fragments add up to more: nothing of it reaches the VM. */
    Console *sum = console_open(f, INSTANCE_C);
    stream.len = 0;
    client_frame(&stream, WS_OPCODE_BINARY, false, p, CONSOLE_MESSAGE_MAX - 10);
    client_header(&stream, WS_OPCODE_CONTINUATION, true, 11);
    viewer_send(sum, &stream);
    assert_int_equal(expect_closed(sum, WS_CLOSE_MESSAGE_TOO_BIG, VIEWER_SILENT), 0);

    buf_free(&stream);
    free(p);
}

static void test_ping_flood_ends_session(void **state)
{
    Fixture *f = *state;
    Console *c = console_open(f, INSTANCE_A);
    Console *other = console_open(f, INSTANCE_B);

    /* Pongs for a viewer that never reads pile up to the buffer's cap, not past it. */
    uint8_t payload[WS_CONTROL_PAYLOAD_MAX];
    memset(payload, 'p', sizeof(payload));
    Buf stream = {0};
    client_frame(&stream, WS_OPCODE_PING, true, payload, sizeof(payload));
    Writer w;
    writer_start(&w, c->viewer, stream.data, stream.len);
    int calls = done_wait(&c->done, TRANSFER_MS);
    writer_stop(&w);
    assert_int_equal(calls, 1);
    assert_int_equal(vm_eof(c, PROMPT_MS, NULL), 0);
    console_hand_back(c);
    buf_free(&stream);
    echo(other, 1);
}

static void test_client_close_echoed(void **state)
{
    Fixture *f = *state;

    Console *c = console_open(f, INSTANCE_A);
    Buf stream = {0};
    client_close(&stream, WS_CLOSE_NORMAL, "bye");
    viewer_send(c, &stream);
    assert_int_equal(expect_closed(c, WS_CLOSE_NORMAL, VIEWER_SILENT), 0);

    /* A close frame without a code is answered with 1000 too. */
    Console *empty = console_open(f, INSTANCE_B);
    stream.len = 0;
    client_frame(&stream, WS_OPCODE_CLOSE, true, "", 0);
    viewer_send(empty, &stream);
    assert_int_equal(expect_closed(empty, WS_CLOSE_NORMAL, VIEWER_SILENT), 0);
    buf_free(&stream);
}

static void test_vm_closes(void **state)
{
    Fixture *f = *state;
    Console *c = console_open(f, INSTANCE_A);

    /* What the VM sent before closing still reaches the viewer, then "going away". */
    send_all(c->vm, "last words", 10, now_ms() + PROMPT_MS);
    close(c->vm);
    c->vm = -1;
    viewer_expect_binary(c, "last words", 10);
    assert_int_equal(viewer_close_code(c, PROMPT_MS, NULL, 0), WS_CLOSE_GOING_AWAY);
    assert_int_equal(done_wait(&c->done, PROMPT_MS), 1);
    console_hand_back(c);
    Frame fr;
    assert_int_equal(viewer_frame(c, PROMPT_MS, &fr), -EPIPE);
}

static void test_vm_closes_under_stalled_viewer(void **state)
{
    Fixture *f = *state;
    Console *stuck = console_open(f, INSTANCE_A);
    Console *other = console_open(f, INSTANCE_B);
    assert_true(fill_until_stalled(stuck->vm, stall_bound(stuck->vm, stuck->ws)) >=
                CONSOLE_BUFFER_HIGH);

    /* The close frame cannot go out; the session is cut after its grace, without busy-waiting. */
    int64_t cpu_start = cpu_ms(), start = now_ms();
    close(stuck->vm);
    stuck->vm = -1;
    assert_int_equal(done_wait(&stuck->done, PROMPT_MS), 1);
    int64_t wall = now_ms() - start, cpu = cpu_ms() - cpu_start;
    print_message("VM hung up under a stalled viewer: done after %lld ms, %lld ms of CPU\n",
                  (long long)wall, (long long)cpu);
    assert_true(cpu <= wall / 4 + 50);
    console_hand_back(stuck);
    echo(other, 1);
}

static void test_viewer_closes(void **state)
{
    Fixture *f = *state;
    Console *c = console_open(f, INSTANCE_A);
    echo(c, 1);

    close(c->viewer);
    c->viewer = -1;
    size_t vm_bytes;
    assert_int_equal(vm_eof(c, PROMPT_MS, &vm_bytes), 0);
    assert_int_equal(vm_bytes, 0);
    assert_int_equal(done_wait(&c->done, PROMPT_MS), 1);
    console_hand_back(c);
}

/* ---- revocation ---- */

static void test_revoke_idle_viewer(void **state)
{
    Fixture *f = *state;
    Console *a = console_open(f, INSTANCE_A);
    Console *b = console_open(f, INSTANCE_B);
    echo(a, 1);
    echo(b, 1);

    int64_t start = now_ms();
    console_relay_revoke(f->relay, INSTANCE_A);
    char reason[WS_CONTROL_PAYLOAD_MAX];
    assert_int_equal(viewer_close_code(a, PROMPT_MS, reason, sizeof(reason)),
                     CONSOLE_CLOSE_REVOKED);
    assert_string_equal(reason, "instance deleted");
    viewer_answer_close(a, CONSOLE_CLOSE_REVOKED);
    assert_int_equal(done_wait(&a->done, PROMPT_MS), 1);
    assert_true(now_ms() - start <= PROMPT_MS);
    assert_int_equal(vm_eof(a, PROMPT_MS, NULL), 0);
    console_hand_back(a);

    /* The other instance's console is untouched. */
    echo(b, 2);
    assert_int_equal(done_calls(&b->done), 0);
    assert_int_equal(console_relay_viewers(f->relay, INSTANCE_B), 1);
}

static void test_revoke_stalled_viewer(void **state)
{
    Fixture *f = *state;
    /* One viewer never reads, one catches up after the revocation. */
    Console *stuck = console_open(f, INSTANCE_A);
    Console *slow = console_open(f, INSTANCE_A);
    Console *other = console_open(f, INSTANCE_B);
    size_t bound = stall_bound(stuck->vm, stuck->ws);
    assert_true(fill_until_stalled(stuck->vm, bound) >= CONSOLE_BUFFER_HIGH);
    assert_true(fill_until_stalled(slow->vm, bound) >= CONSOLE_BUFFER_HIGH);

    int64_t start = now_ms();
    console_relay_revoke(f->relay, INSTANCE_A);

    assert_int_equal(viewer_close_code(slow, PROMPT_MS, NULL, 0), CONSOLE_CLOSE_REVOKED);
    assert_int_equal(done_wait(&stuck->done, PROMPT_MS), 1);
    assert_int_equal(done_wait(&slow->done, PROMPT_MS), 1);
    assert_true(now_ms() - start <= PROMPT_MS);
    assert_int_equal(vm_eof(stuck, PROMPT_MS, NULL), 0);
    assert_int_equal(vm_eof(slow, PROMPT_MS, NULL), 0);
    console_hand_back(slow);
    console_hand_back(stuck);

    /* What the stuck viewer finds later is a clean prefix of binary frames. */
    Frame fr;
    int r;
    while ((r = viewer_frame(stuck, PROMPT_MS, &fr)) == 0) {
        assert_true(fr.opcode == WS_OPCODE_BINARY || fr.opcode == WS_OPCODE_CLOSE);
        frame_free(&fr);
    }
    assert_int_equal(r, -EPIPE);

    echo(other, 1);
    assert_int_equal(done_calls(&other->done), 0);
    assert_int_equal(console_relay_viewers(f->relay, INSTANCE_A), 0);
}

/* ---- viewer slots ---- */

static void test_start_options(void **state)
{
    (void)state;
    ConsoleRelay *relay = (ConsoleRelay *)&relay;
    assert_int_equal(console_relay_start(NULL, &relay), -EINVAL);
    assert_int_equal(console_relay_start(&(ConsoleOptions){.max_viewers = 0}, &relay), -EINVAL);
    assert_ptr_equal(relay, (ConsoleRelay *)&relay);
    console_relay_stop(NULL);
}

static void test_slots_reserve_release(void **state)
{
    Fixture *f = *state;
    ConsoleRelay *r = f->relay;

    assert_int_equal(console_relay_viewers(r, INSTANCE_A), 0);
    assert_int_equal(console_relay_reserve(r, INSTANCE_A), 0);
    assert_int_equal(console_relay_reserve(r, INSTANCE_A), 0);
    assert_int_equal(console_relay_reserve(r, INSTANCE_A), -EUSERS);
    assert_int_equal(console_relay_viewers(r, INSTANCE_A), 2);
    /* Counted per instance. */
    assert_int_equal(console_relay_reserve(r, INSTANCE_B), 0);
    assert_int_equal(console_relay_viewers(r, INSTANCE_B), 1);

    console_relay_release(r, INSTANCE_A);
    assert_int_equal(console_relay_viewers(r, INSTANCE_A), 1);
    assert_int_equal(console_relay_reserve(r, INSTANCE_A), 0);
    assert_int_equal(console_relay_reserve(r, INSTANCE_A), -EUSERS);

    console_relay_release(r, INSTANCE_A);
    console_relay_release(r, INSTANCE_A);
    console_relay_release(r, INSTANCE_B);
    assert_int_equal(console_relay_viewers(r, INSTANCE_A), 0);
    assert_int_equal(console_relay_viewers(r, INSTANCE_B), 0);
    /* A release too many does not make room for a third viewer. */
    console_relay_release(r, INSTANCE_A);
    assert_int_equal(console_relay_reserve(r, INSTANCE_A), 0);
    assert_int_equal(console_relay_reserve(r, INSTANCE_A), 0);
    assert_int_equal(console_relay_reserve(r, INSTANCE_A), -EUSERS);
    console_relay_release(r, INSTANCE_A);
    console_relay_release(r, INSTANCE_A);
}

static void test_slot_freed_when_session_ends(void **state)
{
    Fixture *f = *state;
    ConsoleRelay *r = f->relay;

    Console *first = console_open(f, INSTANCE_A);
    Console *second = console_open(f, INSTANCE_A);
    assert_int_equal(console_relay_viewers(r, INSTANCE_A), 2);
    assert_int_equal(console_relay_reserve(r, INSTANCE_A), -EUSERS);

    close(first->viewer);
    first->viewer = -1;
    assert_int_equal(done_wait(&first->done, PROMPT_MS), 1);
    console_hand_back(first);
    int64_t deadline = now_ms() + 2000;
    while (console_relay_viewers(r, INSTANCE_A) != 1) {
        assert_true(now_ms() < deadline);
        sleep_ms(10);
    }
    Console *third = console_open(f, INSTANCE_A);
    echo(third, 1);
    echo(second, 1);
}

static void test_attach_after_revoke(void **state)
{
    Fixture *f = *state;

    assert_int_equal(console_relay_reserve(f->relay, INSTANCE_A), 0);
    console_relay_revoke(f->relay, INSTANCE_A);
    int vnc;
    Console *c = console_new(f, &vnc);
    c->attached = true; /* done is due all the same */
    assert_int_equal(console_relay_attach(f->relay, INSTANCE_A, c->ws, NULL, 0, vnc,
                                          CONSOLE_CLIPBOARD_BOTH, done_cb, &c->done),
                     -ENOENT);
    assert_int_equal(done_calls(&c->done), 1);
    /* vnc_fd is closed already: the VM sees EOF at once. */
    assert_int_equal(vm_eof(c, 0, NULL), 0);
    assert_int_equal(console_relay_viewers(f->relay, INSTANCE_A), 0);
    console_hand_back(c);
}

/* ---- back-pressure ---- */

static void test_stalled_viewer_stalls_only_itself(void **state)
{
    Fixture *f = *state;
    Console *stuck = console_open(f, INSTANCE_A);
    Console *other = console_open(f, INSTANCE_B);

    /* The VM keeps writing; the viewer never reads. */
    uint8_t *p = pattern_new(100003, 40);
    Writer w;
    writer_start(&w, stuck->vm, p, 100003);
    size_t total = writer_wait_stalled(&w);
    size_t bound = stall_bound(stuck->vm, stuck->ws);
    print_message("stalled viewer: the VM wrote %zu bytes before blocking (bound %zu)\n", total,
                  bound);
    assert_true(total >= CONSOLE_BUFFER_HIGH);
    assert_true(total <= bound);

    /* The writer keeps trying while the other console runs. */
    for (int i = 0; i < 5; i++)
        echo(other, i);
    uint8_t *big = pattern_new(300000, 41);
    vm_to_viewer(other, big, 300000);
    free(big);
    assert_true(atomic_load(&w.total) <= bound);
    writer_stop(&w);
    free(p);
    assert_int_equal(done_calls(&stuck->done), 0);
}

static void test_stalled_vm_stalls_only_itself(void **state)
{
    Fixture *f = *state;
    Console *stuck = console_open(f, INSTANCE_A);
    Console *other = console_open(f, INSTANCE_B);

    /* The viewer keeps sending whole frames; the VM never reads. */
    uint8_t *p = pattern_new(CONSOLE_FRAME_PAYLOAD_MAX, 50);
    Buf stream = {0};
    client_frame(&stream, WS_OPCODE_BINARY, true, p, CONSOLE_FRAME_PAYLOAD_MAX);
    Writer w;
    writer_start(&w, stuck->viewer, stream.data, stream.len);
    size_t total = writer_wait_stalled(&w);
    size_t bound = stall_bound(stuck->viewer, stuck->vm);
    print_message("stalled VM: the viewer wrote %zu bytes before blocking (bound %zu)\n", total,
                  bound);
    assert_true(total >= CONSOLE_BUFFER_HIGH);
    assert_true(total <= bound);

    for (int i = 0; i < 5; i++)
        echo(other, i);
    assert_true(atomic_load(&w.total) <= bound);
    writer_stop(&w);
    buf_free(&stream);
    free(p);
    assert_int_equal(done_calls(&stuck->done), 0);
}

/* An empty binary message is valid and carries no VNC byte, even as the session's first. */
static void test_empty_binary_message(void **state)
{
    Fixture *f = *state;
    Console *c = console_open(f, INSTANCE_A);

    Buf stream = {0};
    client_frame(&stream, WS_OPCODE_BINARY, true, "", 0);
    client_str(&stream, WS_OPCODE_BINARY, false, "");
    client_str(&stream, WS_OPCODE_CONTINUATION, true, "");
    client_str(&stream, WS_OPCODE_BINARY, true, "x");
    viewer_to_vm(c, &stream, (const uint8_t *)"x", 1);
    buf_free(&stream);
    assert_true(fd_quiet(c->vm, 50));
    echo(c, 1);
}

/* ---- the clipboard setting, on real RFB ---- */

static void rfb_u8(Buf *b, unsigned v)
{
    uint8_t x = (uint8_t)v;
    buf_add(b, &x, 1);
}

static void rfb_u16(Buf *b, unsigned v)
{
    rfb_u8(b, v >> 8);
    rfb_u8(b, v);
}

static void rfb_u32(Buf *b, uint32_t v)
{
    rfb_u16(b, v >> 16);
    rfb_u16(b, v & 0xffff);
}

static void rfb_key_event(Buf *b, bool down, uint32_t keysym)
{
    rfb_u8(b, 4), rfb_u8(b, down), rfb_u16(b, 0), rfb_u32(b, keysym);
}

/* ClientCutText (type 6) or ServerCutText (3); the extended form's length is negative. */
static void rfb_cut_text(Buf *b, unsigned type, const char *text, bool extended)
{
    uint32_t len = (uint32_t)strlen(text);
    rfb_u8(b, type), rfb_u8(b, 0), rfb_u16(b, 0);
    rfb_u32(b, extended ? (uint32_t) - (int32_t)len : len);
    buf_add(b, text, len);
}

/* The viewer sends these RFB bytes as one binary message. */
static void viewer_rfb(Console *c, const void *rfb, size_t len)
{
    Buf stream = {0};
    client_frame(&stream, WS_OPCODE_BINARY, true, rfb, len);
    viewer_send(c, &stream);
    buf_free(&stream);
}

/*
 * RFB 3.8, security None, a 32-bpp ServerInit, each turn whole on the
 * other side before the next: the filter follows the two in turn.
 */
static void rfb_handshake(Console *c)
{
    static const char version[] = "RFB 003.008\n";
    send_all(c->vm, version, 12, now_ms() + PROMPT_MS);
    viewer_expect_binary(c, version, 12);
    viewer_rfb(c, version, 12);
    vm_expect(c, version, 12);

    static const uint8_t offered[] = {1, 1}, chosen[] = {1, 1}; /* None; ClientInit, shared */
    send_all(c->vm, offered, sizeof(offered), now_ms() + PROMPT_MS);
    viewer_expect_binary(c, offered, sizeof(offered));
    viewer_rfb(c, chosen, sizeof(chosen));
    vm_expect(c, chosen, sizeof(chosen));

    Buf b = {0};
    rfb_u32(&b, 0); /* SecurityResult: OK */
    rfb_u16(&b, 800), rfb_u16(&b, 600);
    rfb_u8(&b, 32), rfb_u8(&b, 24), rfb_u8(&b, 0), rfb_u8(&b, 1);
    rfb_u16(&b, 255), rfb_u16(&b, 255), rfb_u16(&b, 255);
    rfb_u8(&b, 16), rfb_u8(&b, 8), rfb_u8(&b, 0), rfb_u8(&b, 0), rfb_u16(&b, 0);
    rfb_u32(&b, 4);
    buf_add(&b, "QEMU", 4);
    send_all(c->vm, b.data, b.len, now_ms() + PROMPT_MS);
    viewer_expect_binary(c, b.data, b.len);
    buf_free(&b);
}

/*
 * A ClientCutText between two KeyEvents: as three messages, in one, and
 * split byte by byte across messages. The VM gets the text only to_vm.
 */
static void viewer_paste(Console *c, bool arrives)
{
    Buf down = {0}, text = {0}, up = {0}, expect = {0};
    rfb_key_event(&down, true, 0xffe3);
    rfb_cut_text(&text, 6, "pasted \x06 secret", false);
    rfb_key_event(&up, false, 0xffe3);
    buf_add(&expect, down.data, down.len);
    if (arrives)
        buf_add(&expect, text.data, text.len);
    buf_add(&expect, up.data, up.len);

    viewer_rfb(c, down.data, down.len);
    viewer_rfb(c, text.data, text.len);
    viewer_rfb(c, up.data, up.len);
    vm_expect(c, expect.data, expect.len);

    Buf all = {0};
    buf_add(&all, down.data, down.len);
    buf_add(&all, text.data, text.len);
    buf_add(&all, up.data, up.len);
    viewer_rfb(c, all.data, all.len);
    vm_expect(c, expect.data, expect.len);

    for (size_t i = 0; i < all.len; i++)
        viewer_rfb(c, all.data + i, 1);
    vm_expect(c, expect.data, expect.len);
    assert_true(fd_quiet(c->vm, 50));

    buf_free(&down);
    buf_free(&text);
    buf_free(&up);
    buf_free(&expect);
    buf_free(&all);
}

static void test_clipboard_none_keeps_viewer_text_out(void **state)
{
    Fixture *f = *state;
    Console *c = console_open_with(f, INSTANCE_A, NULL, 0, CONSOLE_CLIPBOARD_NONE);
    rfb_handshake(c);
    viewer_paste(c, false);
}

static void test_clipboard_to_vm_lets_viewer_text_in(void **state)
{
    Fixture *f = *state;
    Console *c = console_open_with(f, INSTANCE_A, NULL, 0, CONSOLE_CLIPBOARD_TO_VM);
    rfb_handshake(c);
    viewer_paste(c, true);
    /* The extended form stays out: its negotiation is stripped, and QEMU drops a viewer using it.
     */
    Buf b = {0}, expect = {0};
    rfb_cut_text(&b, 6, "\x10\x01\x02\x03", true);
    rfb_key_event(&b, true, 0x61);
    rfb_key_event(&expect, true, 0x61);
    viewer_rfb(c, b.data, b.len);
    vm_expect(c, expect.data, expect.len);
    assert_true(fd_quiet(c->vm, 50));
    buf_free(&b);
    buf_free(&expect);
}

/* A ServerCutText between two messages reaches the viewer only with both. */
static void test_clipboard_vm_text_only_with_both(void **state)
{
    Fixture *f = *state;
    static const struct {
        const char *uuid;
        ConsoleClipboard clipboard;
    } modes[] = {
        {INSTANCE_A, CONSOLE_CLIPBOARD_NONE},
        {INSTANCE_B, CONSOLE_CLIPBOARD_TO_VM},
        {INSTANCE_C, CONSOLE_CLIPBOARD_BOTH},
    };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        Console *c = console_open_with(f, modes[i].uuid, NULL, 0, modes[i].clipboard);
        rfb_handshake(c);
        Buf update = {0}, text = {0}, all = {0}, expect = {0};
        /* A FramebufferUpdate: a 2x1 Raw rectangle whose pixels look like ServerCutText. */
        rfb_u8(&update, 0), rfb_u8(&update, 0), rfb_u16(&update, 1);
        rfb_u16(&update, 0), rfb_u16(&update, 0), rfb_u16(&update, 2), rfb_u16(&update, 1);
        rfb_u32(&update, 0);
        rfb_u32(&update, 0x03000000), rfb_u32(&update, 0x00000003);
        /* As QEMU's vnc-clipboard.c sends it: extended, a Provide of text. */
        rfb_cut_text(&text, 3, "\x10\x01\x01\x01guest clipboard", true);
        buf_add(&all, update.data, update.len);
        buf_add(&all, text.data, text.len);
        rfb_u8(&all, 2); /* Bell */
        buf_add(&expect, update.data, update.len);
        if (modes[i].clipboard == CONSOLE_CLIPBOARD_BOTH)
            buf_add(&expect, text.data, text.len);
        rfb_u8(&expect, 2);
        send_all(c->vm, all.data, all.len, now_ms() + PROMPT_MS);
        viewer_expect_binary(c, expect.data, expect.len);
        Frame fr;
        assert_int_equal(viewer_frame(c, 50, &fr), -ETIMEDOUT);
        buf_free(&update);
        buf_free(&text);
        buf_free(&all);
        buf_free(&expect);
    }
}

/* What the VM may send back is only what the relay can frame: SetEncodings is rewritten. */
static void test_clipboard_encodings_rewritten(void **state)
{
    Fixture *f = *state;
    Console *c = console_open_with(f, INSTANCE_A, NULL, 0, CONSOLE_CLIPBOARD_NONE);
    rfb_handshake(c);
    static const int32_t asked[] = {7, 6, 0, -239, (int32_t)0xc0a1e5ce, -313, 16};
    static const int32_t sent[] = {7, 0, 0, -239, 0, 0, 16};
    Buf b = {0}, expect = {0};
    rfb_u8(&b, 2), rfb_u8(&b, 0), rfb_u16(&b, 7);
    rfb_u8(&expect, 2), rfb_u8(&expect, 0), rfb_u16(&expect, 7);
    for (size_t i = 0; i < 7; i++) {
        rfb_u32(&b, (uint32_t)asked[i]);
        rfb_u32(&expect, (uint32_t)sent[i]);
    }
    viewer_rfb(c, b.data, b.len);
    vm_expect(c, expect.data, expect.len);
    buf_free(&b);
    buf_free(&expect);
}

/* RFB the relay cannot frame closes the console (1008), from either side. */
static void test_clipboard_refuses_unframable(void **state)
{
    Fixture *f = *state;
    Console *viewer_side = console_open_with(f, INSTANCE_A, NULL, 0, CONSOLE_CLIPBOARD_NONE);
    rfb_handshake(viewer_side);
    static const uint8_t unknown[] = {7, 0, 0, 0, 0, 0, 0, 0};
    viewer_rfb(viewer_side, unknown, sizeof(unknown));
    assert_int_equal(expect_closed(viewer_side, CONSOLE_CLOSE_RFB_REFUSED, VIEWER_ANSWERS), 0);

    Console *vm_side = console_open_with(f, INSTANCE_B, NULL, 0, CONSOLE_CLIPBOARD_TO_VM);
    rfb_handshake(vm_side);
    Buf b = {0};
    /* Zlib: the relay never lets a viewer ask for it, and cannot frame it. */
    rfb_u8(&b, 0), rfb_u8(&b, 0), rfb_u16(&b, 1);
    rfb_u16(&b, 0), rfb_u16(&b, 0), rfb_u16(&b, 16), rfb_u16(&b, 16), rfb_u32(&b, 6);
    rfb_u32(&b, 1), rfb_u8(&b, 0);
    send_all(vm_side->vm, b.data, b.len, now_ms() + PROMPT_MS);
    buf_free(&b);
    assert_int_equal(viewer_close_code(vm_side, PROMPT_MS, NULL, 0), CONSOLE_CLOSE_RFB_REFUSED);
    viewer_answer_close(vm_side, CONSOLE_CLOSE_RFB_REFUSED);
    assert_int_equal(done_wait(&vm_side->done, PROMPT_MS), 1);
    assert_int_equal(vm_eof(vm_side, PROMPT_MS, NULL), 0);
    console_hand_back(vm_side);
}

/* ---- stopping ---- */

static void test_stop_with_open_sessions(void **state)
{
    Fixture *f = *state;
    Console *c[3] = {
        console_open(f, INSTANCE_A),
        console_open(f, INSTANCE_A),
        console_open(f, INSTANCE_B),
    };
    for (int i = 0; i < 3; i++)
        echo(c[i], i);

    int64_t start = now_ms();
    console_relay_stop(f->relay);
    f->relay = NULL;
    print_message("console_relay_stop took %lld ms\n", (long long)(now_ms() - start));
    for (int i = 0; i < 3; i++) {
        /* Stopping joins the thread: every done has been called by now. */
        assert_int_equal(done_calls(&c[i]->done), 1);
        assert_int_equal(vm_eof(c[i], 0, NULL), 0);
    }
    for (int i = 0; i < 3; i++) {
        console_hand_back(c[i]);
        assert_int_equal(viewer_close_code(c[i], PROMPT_MS, NULL, 0), WS_CLOSE_GOING_AWAY);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_LEVEL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_options),
        cmocka_unit_test_setup_teardown(test_vnc_to_viewer_small, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vnc_to_viewer_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_viewer_to_vnc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_viewer_fragments_with_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_bytes_relayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_frame_closes_1003, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmasked_frame_closes_1002, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping_flood_ends_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_close_echoed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_closes_under_stalled_viewer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_viewer_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_idle_viewer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_stalled_viewer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slots_reserve_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slot_freed_when_session_ends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attach_after_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_viewer_stalls_only_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_vm_stalls_only_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clipboard_none_keeps_viewer_text_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clipboard_to_vm_lets_viewer_text_in, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clipboard_vm_text_only_with_both, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clipboard_encodings_rewritten, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clipboard_refuses_unframable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_open_sessions, setup, teardown),
        /* Last: in a sanitizer build, a relay that trips UBSan aborts the run here. */
        cmocka_unit_test_setup_teardown(test_empty_binary_message, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
