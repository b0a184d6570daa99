#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "rfb.h"
#include "util.h"
#include "ws.h"

/* How long a closing console may take to finish the closing handshake before it is cut. */
#define CONSOLE_CLOSE_GRACE_MS 500
/* How often the loop wakes without traffic, to run the timers above. */
#define CONSOLE_TICK_MS 250
#define CONSOLE_EPOLL_BATCH 64
/*
 * A buffer holds at most the high-water mark plus what one step may add past
 * it: a whole message completed by one read, or one frame.
 */
#define CONSOLE_BUFFER_CAP (CONSOLE_BUFFER_HIGH + CONSOLE_MESSAGE_MAX + CONSOLE_FRAME_PAYLOAD_MAX)

/*
 * Bytes waiting to be written to one side; grows on demand up to
 * CONSOLE_BUFFER_CAP. The last `held` bytes are not to be written yet: the
 * start of an RFB unit the filter must see whole before it lets it go.
 */
typedef struct {
    uint8_t *data;
    size_t start, end, cap;
    size_t held;
} Buffer;

typedef struct Session Session;

/* One of a session's two sockets, as epoll sees it. */
typedef struct {
    Session *session;
    int fd;
    uint32_t events; /* what epoll watches now */
} Side;

struct Session {
    Session *prev, *next;
    char instance_uuid[UUID_STR_LEN];
    Side ws, vnc;
    WsParser *parser;
    Buffer to_ws, to_vnc;
    /*
     * The clipboard setting's filter; NULL when everything passes. What it
     * holds of the VNC stream waits here (to_ws has no room for it: frames
     * are built in place), and goes in front of the next read.
     */
    ConsoleClipboard clipboard;
    RfbFilter *rfb;
    uint8_t vnc_held[RFB_HOLD_MAX];
    size_t vnc_held_len;
    bool logged_viewer_drop, logged_vm_drop;
    /*
     * The closing handshake: once our close frame is queued nothing more is
     * relayed; the session ends when the viewer's close arrives (or it
     * hangs up, or the grace passes) and our frame is out. Closing the
     * socket before the viewer's answer could reset the connection and
     * lose the close frame on its way.
     */
    bool closing;
    bool peer_closed; /* the viewer's close frame arrived */
    struct timespec close_deadline;
    time_t last_heard, last_ping;
    bool ended; /* unlinked and handed back; freed after the current batch of events */
    ConsoleDoneFn done;
    void *done_data;
};

/* Viewers of one instance: reserved slots and attached sessions alike. */
typedef struct {
    char instance_uuid[UUID_STR_LEN];
    unsigned viewers;
    bool revoked;
} Slots;

struct ConsoleRelay {
    ConsoleOptions options;
    int epoll_fd;
    int wake_fd;
    pthread_t thread;
    bool thread_started;

    /* Shared with other threads, under lock. */
    pthread_mutex_t lock;
    bool stopping;
    Slots *slots;
    size_t n_slots, cap_slots;
    Session *incoming; /* attached, not yet adopted by the loop */
    char (*revoked)[UUID_STR_LEN];
    size_t n_revoked, cap_revoked;

    /* The loop's own. */
    Session *sessions;
    Session *ended; /* sessions ended during this batch of events */
    uint8_t scratch[CONSOLE_FRAME_PAYLOAD_MAX];
};

static size_t buffer_len(const Buffer *b)
{
    return b->end - b->start;
}

/* What may be written now. */
static size_t buffer_ready(const Buffer *b)
{
    return b->end - b->start - b->held;
}

/* Room for len more bytes at the end (*ret_at); -ENOBUFS past the cap, -ENOMEM. */
static int buffer_reserve(Buffer *b, size_t len, uint8_t **ret_at)
{
    if (b->start > 0 && b->end + len > b->cap) {
        memmove(b->data, b->data + b->start, buffer_len(b));
        b->end -= b->start;
        b->start = 0;
    }
    if (b->end + len > b->cap) {
        size_t want = b->cap ? b->cap : 16 * 1024;
        while (want < b->end + len)
            want *= 2;
        if (want > CONSOLE_BUFFER_CAP)
            want = CONSOLE_BUFFER_CAP;
        if (want < b->end + len)
            return -ENOBUFS;
        uint8_t *grown = realloc(b->data, want);
        if (!grown)
            return -ENOMEM;
        b->data = grown;
        b->cap = want;
    }
    *ret_at = b->data + b->end;
    return 0;
}

/* Appends; -ENOBUFS past the cap (the peer broke the bounds), -ENOMEM. */
static int buffer_append(Buffer *b, const void *data, size_t len)
{
    if (len == 0)
        return 0; /* an empty message: nothing to copy, maybe into no buffer at all */
    uint8_t *at;
    int r = buffer_reserve(b, len, &at);
    if (r < 0)
        return r;
    memcpy(at, data, len);
    b->end += len;
    return 0;
}

/* Writes what the socket takes. 0 (maybe partly written), or -errno when the peer is gone. */
static int buffer_flush(Buffer *b, int fd)
{
    while (buffer_ready(b) > 0) {
        ssize_t n = send(fd, b->data + b->start, buffer_ready(b), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        b->start += (size_t)n;
    }
    if (b->held == 0)
        b->start = b->end = 0;
    return 0;
}

static void timespec_after_ms(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static bool timespec_passed(const struct timespec *ts)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > ts->tv_sec || (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

static time_t monotonic_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec;
}

static void wake(ConsoleRelay *relay)
{
    uint64_t one = 1;
    ssize_t n = write(relay->wake_fd, &one, sizeof(one));
    (void)n; /* a full counter already means "wake up" */
}

/* ---- viewer slots (under relay->lock) ---- */

static Slots *slots_find(ConsoleRelay *relay, const char *instance_uuid)
{
    for (size_t i = 0; i < relay->n_slots; i++)
        if (strcmp(relay->slots[i].instance_uuid, instance_uuid) == 0)
            return &relay->slots[i];
    return NULL;
}

static void slots_put(ConsoleRelay *relay, const char *instance_uuid)
{
    Slots *s = slots_find(relay, instance_uuid);
    if (!s || s->viewers == 0)
        return;
    if (--s->viewers == 0)
        *s = relay->slots[--relay->n_slots];
}

int console_relay_reserve(ConsoleRelay *relay, const char *instance_uuid)
{
    int r = 0;
    pthread_mutex_lock(&relay->lock);
    Slots *s = slots_find(relay, instance_uuid);
    if (relay->stopping) {
        r = -ESHUTDOWN;
    } else if (s) {
        if (s->viewers >= relay->options.max_viewers)
            r = -EUSERS;
        else
            s->viewers++;
    } else {
        if (relay->n_slots == relay->cap_slots) {
            size_t cap = relay->cap_slots ? 2 * relay->cap_slots : 16;
            Slots *grown = realloc(relay->slots, cap * sizeof(*grown));
            if (!grown) {
                r = -ENOMEM;
                goto out;
            }
            relay->slots = grown;
            relay->cap_slots = cap;
        }
        s = &relay->slots[relay->n_slots++];
        *s = (Slots){.viewers = 1};
        snprintf(s->instance_uuid, sizeof(s->instance_uuid), "%s", instance_uuid);
    }
out:
    pthread_mutex_unlock(&relay->lock);
    return r;
}

void console_relay_release(ConsoleRelay *relay, const char *instance_uuid)
{
    pthread_mutex_lock(&relay->lock);
    slots_put(relay, instance_uuid);
    pthread_mutex_unlock(&relay->lock);
}

unsigned console_relay_viewers(ConsoleRelay *relay, const char *instance_uuid)
{
    pthread_mutex_lock(&relay->lock);
    Slots *s = slots_find(relay, instance_uuid);
    unsigned n = s ? s->viewers : 0;
    pthread_mutex_unlock(&relay->lock);
    return n;
}

/* ---- sessions (the loop's thread) ---- */

static void session_free(Session *s)
{
    if (!s)
        return;
    ws_parser_free(s->parser);
    rfb_filter_free(s->rfb);
    free(s->to_ws.data);
    free(s->to_vnc.data);
    free(s);
}

/* Ends a session: both sockets leave epoll, VNC is closed, the viewer's socket is handed back. */
static void session_end(ConsoleRelay *relay, Session *s, const char *why)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        relay->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    epoll_ctl(relay->epoll_fd, EPOLL_CTL_DEL, s->ws.fd, NULL);
    if (s->vnc.fd >= 0) {
        /* What the viewer sent just before it left still reaches the guest, if it fits now. */
        buffer_flush(&s->to_vnc, s->vnc.fd);
        epoll_ctl(relay->epoll_fd, EPOLL_CTL_DEL, s->vnc.fd, NULL);
        close(s->vnc.fd);
    }
    log_info("instance %s: console closed (%s)", s->instance_uuid, why);
    s->done(s->done_data);
    pthread_mutex_lock(&relay->lock);
    slots_put(relay, s->instance_uuid);
    pthread_mutex_unlock(&relay->lock);
    /* Later events of this batch may still point at it. */
    s->ended = true;
    s->next = relay->ended;
    relay->ended = s;
}

static void sessions_bury(ConsoleRelay *relay)
{
    while (relay->ended) {
        Session *s = relay->ended;
        relay->ended = s->next;
        session_free(s);
    }
}

/* The VNC side is gone: it leaves epoll at once, so a hung-up fd cannot wake the loop again. */
static void session_drop_vnc(ConsoleRelay *relay, Session *s)
{
    if (s->vnc.fd < 0)
        return;
    epoll_ctl(relay->epoll_fd, EPOLL_CTL_DEL, s->vnc.fd, NULL);
    close(s->vnc.fd);
    s->vnc.fd = -1;
}

/* Queues a close frame and stops reading; the session ends once it is flushed or the grace passes.
 */
static void session_close(Session *s, uint16_t code, const char *reason)
{
    if (s->closing)
        return;
    uint8_t frame[WS_CONTROL_FRAME_MAX];
    size_t len;
    if (ws_frame_close(code, reason, frame, &len) == 0)
        buffer_append(&s->to_ws, frame, len);
    s->closing = true;
    timespec_after_ms(&s->close_deadline, CONSOLE_CLOSE_GRACE_MS);
}

/* What epoll should watch: reads only while the other side's buffer has room. */
static int session_update_events(ConsoleRelay *relay, Session *s)
{
    uint32_t ws = 0, vnc = 0;
    if (s->closing ? !s->peer_closed : buffer_len(&s->to_vnc) < CONSOLE_BUFFER_HIGH)
        ws |= EPOLLIN;
    if (buffer_ready(&s->to_ws) > 0)
        ws |= EPOLLOUT;
    if (!s->closing && buffer_len(&s->to_ws) < CONSOLE_BUFFER_HIGH)
        vnc |= EPOLLIN;
    if (!s->closing && buffer_ready(&s->to_vnc) > 0)
        vnc |= EPOLLOUT;

    Side *sides[] = {&s->ws, &s->vnc};
    uint32_t want[] = {ws, vnc};
    for (size_t i = 0; i < 2; i++) {
        if (sides[i]->fd < 0 || sides[i]->events == want[i])
            continue;
        struct epoll_event ev = {.events = want[i], .data.ptr = sides[i]};
        if (epoll_ctl(relay->epoll_fd, EPOLL_CTL_MOD, sides[i]->fd, &ev) < 0)
            return -errno;
        sides[i]->events = want[i];
    }
    return 0;
}

static const char *clipboard_name(ConsoleClipboard clipboard)
{
    switch (clipboard) {
    case CONSOLE_CLIPBOARD_TO_VM:
        return "to_vm";
    case CONSOLE_CLIPBOARD_BOTH:
        return "both";
    default:
        return "none";
    }
}

/* The first cut text the filter dropped each way is worth a line; the text never is. */
static void session_note_drops(Session *s)
{
    if (!s->logged_viewer_drop && rfb_filter_cut_texts_dropped(s->rfb, RFB_CLIENT) > 0) {
        s->logged_viewer_drop = true;
        log_info("instance %s: clipboard text from the viewer dropped (clipboard %s)",
                 s->instance_uuid, clipboard_name(s->clipboard));
    }
    if (!s->logged_vm_drop && rfb_filter_cut_texts_dropped(s->rfb, RFB_SERVER) > 0) {
        s->logged_vm_drop = true;
        log_info("instance %s: clipboard text from the virtual machine dropped (clipboard %s)",
                 s->instance_uuid, clipboard_name(s->clipboard));
    }
}

/*
 * Frames what VNC sent. The payload is read straight into the viewer's
 * buffer behind room for the header: at most 0xffff bytes, so the header
 * takes 4 bytes, or 2 for a payload under 126 (moved up by 2, a few bytes).
 * A filter runs over it in place: what it drops is squeezed out, and the
 * start of a unit it needs whole waits in vnc_held for the next read.
 * -errno, -EBADMSG when the filter refuses the stream, or 1 when VNC closed.
 */
static int session_read_vnc(Session *s)
{
    enum { HEADER = 4 };
    uint8_t *at;
    int r = buffer_reserve(&s->to_ws, HEADER + CONSOLE_FRAME_PAYLOAD_MAX, &at);
    if (r < 0)
        return r;
    uint8_t *payload = at + HEADER;
    size_t carried = s->vnc_held_len;
    memcpy(payload, s->vnc_held, carried);
    ssize_t n =
        recv(s->vnc.fd, payload + carried, CONSOLE_FRAME_PAYLOAD_MAX - carried, MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
    if (n == 0)
        return 1;
    size_t len = carried + (size_t)n;
    if (s->rfb) {
        size_t held;
        r = rfb_filter_feed(s->rfb, RFB_SERVER, payload, len, &len, &held);
        if (r < 0)
            return r;
        memcpy(s->vnc_held, payload + len, held);
        s->vnc_held_len = held;
        session_note_drops(s);
        if (len == 0)
            return 0;
    }
    uint8_t header[WS_FRAME_HEADER_MAX];
    int hl = ws_frame_header(WS_OPCODE_BINARY, true, (uint64_t)len, header);
    if (hl < 0)
        return hl;
    if (hl < HEADER)
        memmove(at + hl, payload, len);
    memcpy(at, header, (size_t)hl);
    s->to_ws.end += (size_t)hl + len;
    return 0;
}

/*
 * Runs the filter over the viewer's bytes just appended to to_vnc, behind
 * what it held from before: dropped spans are squeezed out in place, and
 * the start of an unfinished unit stays held. A refused stream closes the
 * console; nothing of the message that broke it reaches VNC.
 */
static int session_filter_viewer(Session *s, size_t appended)
{
    Buffer *b = &s->to_vnc;
    size_t len = b->held + appended;
    if (len == 0)
        return 0;
    uint8_t *at = b->data + b->end - len;
    size_t kept, held;
    int r = rfb_filter_feed(s->rfb, RFB_CLIENT, at, len, &kept, &held);
    if (r < 0) {
        log_warn("instance %s: console closed: the viewer sent RFB the relay refuses: %s",
                 s->instance_uuid, rfb_filter_error(s->rfb));
        b->end -= len;
        b->held = 0;
        session_close(s, CONSOLE_CLOSE_RFB_REFUSED,
                      "the console refused a message from the viewer");
        return 0;
    }
    b->end = (size_t)(at - b->data) + kept + held;
    b->held = held;
    session_note_drops(s);
    return 0;
}

/* Acts on one whole message from the viewer. */
static int session_message(Session *s, const WsEvent *event)
{
    uint8_t frame[WS_CONTROL_FRAME_MAX];
    size_t len;
    if (s->closing) {
        /* Only the answer to our close frame matters now. */
        s->peer_closed = event->opcode == WS_OPCODE_CLOSE;
        return 0;
    }
    switch (event->opcode) {
    case WS_OPCODE_BINARY: {
        int r = buffer_append(&s->to_vnc, event->data, event->len);
        if (r < 0 || !s->rfb)
            return r;
        return session_filter_viewer(s, event->len);
    }
    case WS_OPCODE_PING:
        if (ws_frame_control(WS_OPCODE_PONG, event->data, event->len, frame, &len) < 0)
            return -EINVAL;
        return buffer_append(&s->to_ws, frame, len);
    case WS_OPCODE_PONG:
        return 0;
    case WS_OPCODE_CLOSE:
        /* Echo the code (RFC 6455 5.5.1). */
        session_close(
            s, event->close_code == WS_CLOSE_NO_STATUS ? WS_CLOSE_NORMAL : event->close_code, NULL);
        s->peer_closed = true;
        return 0;
    default:
        session_close(s, WS_CLOSE_UNSUPPORTED_DATA, "the console speaks binary frames only");
        return 0;
    }
}

/* Runs the viewer's bytes through the parser; a protocol error closes with its code. */
static int session_feed(Session *s, const uint8_t *data, size_t len)
{
    while (len > 0 && !s->peer_closed) {
        size_t used = 0;
        WsEvent event;
        int r = ws_parser_feed(s->parser, data, len, &used, &event);
        if (r < 0) {
            const char *reason;
            uint16_t code = ws_parser_error(s->parser, &reason);
            if (s->closing || code == 0) {
                /* Nothing more can be understood from this viewer. */
                s->peer_closed = true;
                return code == 0 && !s->closing ? r : 0;
            }
            session_close(s, code, reason);
            return 0;
        }
        data += used;
        len -= used;
        if (r == 0)
            break;
        r = session_message(s, &event);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Parses what the viewer sent. -errno or 1 when the viewer hung up. */
static int session_read_ws(ConsoleRelay *relay, Session *s)
{
    ssize_t n = recv(s->ws.fd, relay->scratch, sizeof(relay->scratch), MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
    if (n == 0)
        return 1;
    s->last_heard = monotonic_seconds();
    return session_feed(s, relay->scratch, (size_t)n);
}

/* One epoll event on one side. The session may have ended when this returns. */
static void session_on_event(ConsoleRelay *relay, Side *side, uint32_t events)
{
    Session *s = side->session;
    int r = 0;
    const char *why = NULL;
    if (side->fd < 0)
        return; /* the VNC side, dropped earlier in this batch */

    if (side == &s->ws) {
        if (events & EPOLLIN) {
            r = session_read_ws(relay, s);
            if (r == 1 || r == -ECONNRESET)
                r = 1, why = "viewer left";
            /* The viewer's input reaches the guest now, not on the next wakeup. */
            if (r == 0 && s->vnc.fd >= 0 && buffer_flush(&s->to_vnc, s->vnc.fd) < 0) {
                session_drop_vnc(relay, s);
                session_close(s, WS_CLOSE_GOING_AWAY, "the virtual machine's console closed");
            }
        }
        if (r == 0) {
            r = buffer_flush(&s->to_ws, s->ws.fd);
            if (r < 0)
                why = "viewer left";
        }
        if (r == 0 && (events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN))
            r = 1, why = "viewer left";
    } else {
        bool gone = false;
        /* Once our close frame is queued nothing may follow it (RFC 6455 5.5.1). */
        if ((events & EPOLLIN) && !s->closing) {
            r = session_read_vnc(s);
            gone = r == 1 || r == -ECONNRESET;
            if (gone)
                r = 0;
            if (r == -EBADMSG) {
                log_warn("instance %s: console closed: the virtual machine's console sent RFB the "
                         "relay refuses: %s",
                         s->instance_uuid, rfb_filter_error(s->rfb));
                session_drop_vnc(relay, s);
                session_close(s, CONSOLE_CLOSE_RFB_REFUSED,
                              "the console refused what the virtual machine sent");
                r = 0;
            }
        }
        if (r == 0 && !gone && s->vnc.fd >= 0 && (events & EPOLLOUT) &&
            buffer_flush(&s->to_vnc, s->vnc.fd) < 0)
            gone = true;
        if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN))
            gone = true;
        if (gone) {
            session_drop_vnc(relay, s);
            session_close(s, WS_CLOSE_GOING_AWAY, "the virtual machine's console closed");
        }
        /* VNC bytes waiting for the viewer: try at once rather than on the next wakeup. */
        if (r == 0 && buffer_len(&s->to_ws) > 0 && buffer_flush(&s->to_ws, s->ws.fd) < 0)
            r = -EPIPE, why = "viewer left";
    }

    if (r < 0 && !why)
        why = r == -ENOBUFS ? "viewer overran its buffer" : "relay error";
    if (r == 0 && s->closing && s->peer_closed && buffer_len(&s->to_ws) == 0)
        r = 1, why = "closed";
    if (r == 0 && session_update_events(relay, s) < 0)
        r = -EIO, why = "relay error";
    if (r != 0)
        session_end(relay, s, why);
}

/* Timers: close frames that did not flush in time, pings, silent viewers. */
static void sessions_tick(ConsoleRelay *relay)
{
    time_t now = monotonic_seconds();
    Session *next;
    for (Session *s = relay->sessions; s; s = next) {
        next = s->next;
        if (s->closing) {
            /* Revocations and shutdown queue their close frame here, outside any socket event. */
            if (buffer_flush(&s->to_ws, s->ws.fd) < 0 ||
                (s->peer_closed && buffer_len(&s->to_ws) == 0) ||
                timespec_passed(&s->close_deadline))
                session_end(relay, s, "closed");
            else if (session_update_events(relay, s) < 0)
                session_end(relay, s, "relay error");
            continue;
        }
        if (now - s->last_heard >= CONSOLE_IDLE_TIMEOUT_S) {
            session_close(s, WS_CLOSE_GOING_AWAY, "no answer from the viewer");
        } else if (now - s->last_ping >= CONSOLE_PING_INTERVAL_S) {
            uint8_t frame[WS_CONTROL_FRAME_MAX];
            size_t len;
            if (ws_frame_control(WS_OPCODE_PING, "legba", 5, frame, &len) == 0)
                buffer_append(&s->to_ws, frame, len);
            s->last_ping = now;
        }
        if (buffer_flush(&s->to_ws, s->ws.fd) < 0)
            session_end(relay, s, "viewer unreachable");
        else if (session_update_events(relay, s) < 0)
            session_end(relay, s, "relay error");
    }
}

/* Adopts attached sessions and applies revocations, both handed over under the lock. */
static void relay_take_commands(ConsoleRelay *relay)
{
    pthread_mutex_lock(&relay->lock);
    Session *incoming = relay->incoming;
    relay->incoming = NULL;
    char(*revoked)[UUID_STR_LEN] = relay->revoked;
    size_t n_revoked = relay->n_revoked;
    relay->revoked = NULL;
    relay->n_revoked = relay->cap_revoked = 0;
    bool stopping = relay->stopping;
    pthread_mutex_unlock(&relay->lock);

    while (incoming) {
        Session *s = incoming;
        incoming = s->next;
        s->prev = NULL;
        s->next = relay->sessions;
        if (relay->sessions)
            relay->sessions->prev = s;
        relay->sessions = s;
        s->ws.events = s->vnc.events = 0;
        struct epoll_event ev = {.events = 0, .data.ptr = &s->ws};
        struct epoll_event ev2 = {.events = 0, .data.ptr = &s->vnc};
        if (epoll_ctl(relay->epoll_fd, EPOLL_CTL_ADD, s->ws.fd, &ev) < 0 ||
            epoll_ctl(relay->epoll_fd, EPOLL_CTL_ADD, s->vnc.fd, &ev2) < 0) {
            log_error("instance %s: console: epoll: %s", s->instance_uuid, strerror(errno));
            session_end(relay, s, "relay error");
            continue;
        }
        log_info("instance %s: console opened", s->instance_uuid);
        /* Bytes that came with the handshake may hold whole frames already. */
        if (session_update_events(relay, s) < 0)
            session_end(relay, s, "relay error");
    }

    for (size_t i = 0; i < n_revoked; i++) {
        for (Session *s = relay->sessions; s; s = s->next)
            if (strcmp(s->instance_uuid, revoked[i]) == 0)
                session_close(s, CONSOLE_CLOSE_REVOKED, "instance deleted");
    }
    free(revoked);

    if (stopping) {
        for (Session *s = relay->sessions; s; s = s->next)
            session_close(s, WS_CLOSE_GOING_AWAY, "legbad is shutting down");
    }
}

static void *relay_main(void *data)
{
    ConsoleRelay *relay = data;
    struct epoll_event events[CONSOLE_EPOLL_BATCH];
    for (;;) {
        int n = epoll_wait(relay->epoll_fd, events, CONSOLE_EPOLL_BATCH, CONSOLE_TICK_MS);
        if (n < 0 && errno != EINTR) {
            log_error("console relay: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == relay) {
                uint64_t count;
                ssize_t got = read(relay->wake_fd, &count, sizeof(count));
                (void)got;
                relay_take_commands(relay);
                continue;
            }
        }
        for (int i = 0; i < n; i++) {
            Side *side = events[i].data.ptr;
            if (events[i].data.ptr != relay && !side->session->ended)
                session_on_event(relay, side, events[i].events);
        }
        sessions_tick(relay);
        sessions_bury(relay);

        pthread_mutex_lock(&relay->lock);
        bool stopping = relay->stopping;
        pthread_mutex_unlock(&relay->lock);
        if (stopping && !relay->sessions)
            break;
    }
    while (relay->sessions)
        session_end(relay, relay->sessions, "legbad is shutting down");
    sessions_bury(relay);
    return NULL;
}

/* ---- the public side ---- */

int console_relay_attach(ConsoleRelay *relay, const char *instance_uuid, int ws_fd,
                         const void *pending, size_t pending_len, int vnc_fd,
                         ConsoleClipboard clipboard, ConsoleDoneFn done, void *done_data)
{
    int r;
    Session *s = calloc(1, sizeof(*s));
    if (!s) {
        r = -ENOMEM;
        goto fail;
    }
    snprintf(s->instance_uuid, sizeof(s->instance_uuid), "%s", instance_uuid);
    s->ws = (Side){.session = s, .fd = ws_fd};
    s->vnc = (Side){.session = s, .fd = vnc_fd};
    s->last_heard = s->last_ping = monotonic_seconds();
    s->done = done;
    s->done_data = done_data;
    r = ws_parser_new(CONSOLE_MESSAGE_MAX, CONSOLE_MESSAGE_MAX, &s->parser);
    if (r < 0)
        goto fail;
    s->clipboard = clipboard;
    switch (clipboard) {
    case CONSOLE_CLIPBOARD_NONE:
        r = rfb_filter_new(RFB_CLIPBOARD_NONE, CONSOLE_MESSAGE_MAX, &s->rfb);
        break;
    case CONSOLE_CLIPBOARD_TO_VM:
        r = rfb_filter_new(RFB_CLIPBOARD_TO_VM, CONSOLE_MESSAGE_MAX, &s->rfb);
        break;
    case CONSOLE_CLIPBOARD_BOTH:
        break; /* nothing to take out: RFB passes unread, as fast as it comes */
    default:
        r = -EINVAL;
        break;
    }
    if (r < 0)
        goto fail;
    if (fcntl(ws_fd, F_SETFL, fcntl(ws_fd, F_GETFL) | O_NONBLOCK) < 0 ||
        fcntl(vnc_fd, F_SETFL, fcntl(vnc_fd, F_GETFL) | O_NONBLOCK) < 0) {
        r = -errno;
        goto fail;
    }
    /* Not yet shared with the loop, so this thread may parse what came with the handshake. */
    r = session_feed(s, pending, pending_len);
    if (r < 0)
        goto fail;

    pthread_mutex_lock(&relay->lock);
    Slots *slots = slots_find(relay, instance_uuid);
    if (relay->stopping)
        r = -ESHUTDOWN;
    else if (!slots || slots->revoked)
        r = -ENOENT;
    if (r == 0) {
        s->next = relay->incoming;
        relay->incoming = s;
    }
    pthread_mutex_unlock(&relay->lock);
    if (r < 0)
        goto fail;
    wake(relay);
    return 0;

fail:
    session_free(s);
    close(vnc_fd);
    done(done_data);
    console_relay_release(relay, instance_uuid);
    return r;
}

void console_relay_revoke(ConsoleRelay *relay, const char *instance_uuid)
{
    pthread_mutex_lock(&relay->lock);
    Slots *slots = slots_find(relay, instance_uuid);
    if (slots) {
        slots->revoked = true;
        if (relay->n_revoked == relay->cap_revoked) {
            size_t cap = relay->cap_revoked ? 2 * relay->cap_revoked : 4;
            char(*grown)[UUID_STR_LEN] = realloc(relay->revoked, cap * sizeof(*grown));
            if (grown) {
                relay->revoked = grown;
                relay->cap_revoked = cap;
            }
        }
        /* Out of memory: the domain's destruction still ends its consoles (VNC closes). */
        if (relay->n_revoked < relay->cap_revoked)
            snprintf(relay->revoked[relay->n_revoked++], UUID_STR_LEN, "%s", instance_uuid);
    }
    pthread_mutex_unlock(&relay->lock);
    if (slots)
        wake(relay);
}

int console_relay_start(const ConsoleOptions *options, ConsoleRelay **ret_relay)
{
    if (!options || options->max_viewers == 0)
        return -EINVAL;
    ConsoleRelay *relay = calloc(1, sizeof(*relay));
    if (!relay)
        return -ENOMEM;
    relay->options = *options;
    relay->wake_fd = -1;
    pthread_mutex_init(&relay->lock, NULL);
    int r;
    relay->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    relay->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (relay->epoll_fd < 0 || relay->wake_fd < 0) {
        r = -errno;
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = relay};
    if (epoll_ctl(relay->epoll_fd, EPOLL_CTL_ADD, relay->wake_fd, &ev) < 0) {
        r = -errno;
        goto fail;
    }
    r = -pthread_create(&relay->thread, NULL, relay_main, relay);
    if (r < 0)
        goto fail;
    relay->thread_started = true;
    *ret_relay = relay;
    return 0;

fail:
    console_relay_stop(relay);
    return r;
}

void console_relay_stop(ConsoleRelay *relay)
{
    if (!relay)
        return;
    if (relay->thread_started) {
        pthread_mutex_lock(&relay->lock);
        relay->stopping = true;
        pthread_mutex_unlock(&relay->lock);
        wake(relay);
        pthread_join(relay->thread, NULL);
    }
    /* Attached after the loop's last look: never adopted, handed back here. */
    while (relay->incoming) {
        Session *s = relay->incoming;
        relay->incoming = s->next;
        close(s->vnc.fd);
        s->done(s->done_data);
        session_free(s);
    }
    if (relay->epoll_fd >= 0)
        close(relay->epoll_fd);
    if (relay->wake_fd >= 0)
        close(relay->wake_fd);
    pthread_mutex_destroy(&relay->lock);
    free(relay->slots);
    free(relay->revoked);
    free(relay);
}
