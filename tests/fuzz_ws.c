/*
 * libFuzzer target for the WebSocket code (ws.c): the frame parser on any
 * byte stream, the frame writer on any values, the handshake checks on the
 * same stream read as four header lines.
 *
 * Input: a 16-byte prefix of parameters, then the client's byte stream.
 *   [0]     max_frame - 1          [1]   (max_message - 1) / 2
 *   [2..3]  seed of the chunk sizes the stream is fed in
 *   [4]     writer: opcode (low nibble), FIN (0x80), length shift (0x70)
 *   [5..12] writer: payload length, big-endian, shifted right by 8 * shift
 *   [13..14] close code for ws_frame_close()
 *   [15]    bytes of the stream taken as the close reason and as the
 *           ws_frame_control() payload (0xff: a NULL reason)
 *
 * The stream is parsed twice, in one piece and in chunks of 0 to 16 bytes,
 * and both must give the same events at the same stream offsets and end in
 * the same error. Every event must keep the parser's promises (limits,
 * UTF-8, close codes) and survive a round trip: written again with
 * ws_frame_header()/ws_frame_control()/ws_frame_close(), masked here, and
 * parsed by a fresh parser, it comes out the same.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#define FUZZ_NAME "fuzz_ws"
#include "fuzz_check.h"

#define PREFIX_LEN 16
#define CHUNK_MAX 16

/* Decodes code points, unlike ws.c's byte-at-a-time state machine. */
static bool utf8_ok(const uint8_t *s, size_t n)
{
    static const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
    size_t i = 0;
    while (i < n) {
        uint32_t cp = s[i];
        size_t more;
        if (cp < 0x80) {
            i++;
            continue;
        } else if ((cp & 0xe0) == 0xc0) {
            more = 1, cp &= 0x1f;
        } else if ((cp & 0xf0) == 0xe0) {
            more = 2, cp &= 0x0f;
        } else if ((cp & 0xf8) == 0xf0) {
            more = 3, cp &= 0x07;
        } else {
            return false;
        }
        if (n - i <= more)
            return false;
        for (size_t j = 1; j <= more; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min_cp[more] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += more + 1;
    }
    return true;
}

static bool close_code_sendable(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

static bool opcode_known(unsigned opcode)
{
    return opcode <= 2 || (opcode >= 8 && opcode <= 10);
}

/* ---- what a parse produced ---- */

typedef struct {
    int what;   /* an opcode for an event, or the negative error */
    size_t pos; /* stream offset just past the event, or where the error came */
    size_t len;
    uint16_t close_code;
    uint64_t hash;
} Record;

typedef struct {
    Record *records;
    size_t n, cap;
} Trace;

static uint64_t fnv1a(const uint8_t *data, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ data[i]) * 0x100000001b3u;
    return h;
}

static void trace_add(Trace *t, Record r)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->records = realloc(t->records, t->cap * sizeof(*t->records));
        CHECK(t->records);
    }
    t->records[t->n++] = r;
}

/* ---- round trips through the writer ---- */

/* A server frame made into a client frame: mask bit set, mask inserted, payload masked. */
static size_t mask_frame(const uint8_t *frame, size_t header_len, size_t payload_len,
                         const uint8_t mask[4], uint8_t *ret)
{
    memcpy(ret, frame, header_len);
    ret[1] |= 0x80;
    memcpy(ret + header_len, mask, 4);
    for (size_t i = 0; i < payload_len; i++)
        ret[header_len + 4 + i] = frame[header_len + i] ^ mask[i % 4];
    return header_len + 4 + payload_len;
}

static size_t header_len_for(uint64_t len)
{
    return len < 126 ? 2 : len <= 0xffff ? 4 : 10;
}

/* Parses a whole client stream that must give exactly one event, which must equal want. */
static void expect_one_event(const uint8_t *stream, size_t len, size_t limit, const WsEvent *want)
{
    WsParser *p = NULL;
    CHECK(ws_parser_new(limit ? limit : 1, limit ? limit : 1, &p) == 0);
    size_t consumed = 0;
    WsEvent ev;
    int r = ws_parser_feed(p, stream, len, &consumed, &ev);
    CHECK(r == 1);
    CHECK(consumed == len);
    CHECK(ev.opcode == want->opcode && ev.len == want->len);
    CHECK(ev.len == 0 || memcmp(ev.data, want->data, ev.len) == 0);
    if (ev.opcode == WS_OPCODE_CLOSE)
        CHECK(ev.close_code == want->close_code);
    ws_parser_free(p);
}

static void round_trip(const WsEvent *ev, const uint8_t mask[4])
{
    /* The largest: a whole message split in two frames, each with a 4-byte header and a mask. */
    size_t cap = 2 * (4 + 4) + ev->len + 64;
    uint8_t *frame = malloc(cap), *client = malloc(cap);
    CHECK(frame && client);

    if (ev->opcode == WS_OPCODE_TEXT || ev->opcode == WS_OPCODE_BINARY) {
        /* In one frame. */
        int n = ws_frame_header(ev->opcode, true, ev->len, frame);
        CHECK(n >= 0 && (size_t)n == header_len_for(ev->len));
        memcpy(frame + n, ev->data, ev->len);
        size_t len = mask_frame(frame, (size_t)n, ev->len, mask, client);
        expect_one_event(client, len, ev->len, ev);

        /* In two: the opcode without FIN, then a continuation with it. */
        size_t half = ev->len / 2, total = 0;
        n = ws_frame_header(ev->opcode, false, half, frame);
        CHECK(n >= 0 && (frame[0] & 0x80) == 0);
        memcpy(frame + n, ev->data, half);
        total += mask_frame(frame, (size_t)n, half, mask, client);
        n = ws_frame_header(WS_OPCODE_CONTINUATION, true, ev->len - half, frame);
        CHECK(n >= 0 && frame[0] == 0x80);
        memcpy(frame + n, ev->data + half, ev->len - half);
        total += mask_frame(frame, (size_t)n, ev->len - half, mask, client + total);
        expect_one_event(client, total, ev->len, ev);
    } else if (ev->opcode == WS_OPCODE_PING || ev->opcode == WS_OPCODE_PONG) {
        size_t len;
        CHECK(ws_frame_control(ev->opcode, ev->data, ev->len, frame, &len) == 0);
        CHECK(len == 2 + ev->len);
        len = mask_frame(frame, 2, ev->len, mask, client);
        expect_one_event(client, len, 1, ev);
    } else if (ev->opcode == WS_OPCODE_CLOSE) {
        char reason[WS_CLOSE_REASON_MAX + 1];
        size_t len;
        memcpy(reason, ev->data, ev->len);
        reason[ev->len] = '\0';
        /* A reason holding U+0000 cannot be passed as a C string. */
        if (strlen(reason) == ev->len) {
            uint16_t code = ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code;
            CHECK(ws_frame_close(code, ev->len ? reason : NULL, frame, &len) == 0);
            CHECK(len == 2 + (code ? 2 : 0) + ev->len);
            len = mask_frame(frame, 2, len - 2, mask, client);
            expect_one_event(client, len, 1, ev);
        }
    }
    free(frame);
    free(client);
}

/* ---- the parser ---- */

typedef struct {
    size_t max_frame, max_message;
    uint8_t mask[4];
} Limits;

static void check_event(const WsEvent *ev, const Limits *limits)
{
    CHECK(ev->data != NULL);
    switch (ev->opcode) {
    case WS_OPCODE_TEXT:
        CHECK(utf8_ok(ev->data, ev->len));
        /* fall through */
    case WS_OPCODE_BINARY:
        CHECK(ev->len <= limits->max_message);
        break;
    case WS_OPCODE_PING:
    case WS_OPCODE_PONG:
        CHECK(ev->len <= WS_CONTROL_PAYLOAD_MAX);
        break;
    case WS_OPCODE_CLOSE:
        CHECK(ev->len <= WS_CLOSE_REASON_MAX);
        if (ev->close_code == WS_CLOSE_NO_STATUS)
            CHECK(ev->len == 0);
        else
            CHECK(close_code_sendable(ev->close_code));
        CHECK(utf8_ok(ev->data, ev->len));
        break;
    default:
        CHECK(!"event with an opcode that is not a message or a control frame");
    }
}

static void check_error(WsParser *p, int r, bool closed)
{
    const char *reason = NULL;
    uint16_t code = ws_parser_error(p, &reason);
    switch (r) {
    case -ESHUTDOWN:
        CHECK(closed && code == 0);
        break;
    case -EPROTO:
        CHECK(!closed && code == WS_CLOSE_PROTOCOL_ERROR);
        break;
    case -EILSEQ:
        CHECK(!closed && code == WS_CLOSE_INVALID_DATA);
        break;
    case -EMSGSIZE:
        CHECK(!closed && code == WS_CLOSE_MESSAGE_TOO_BIG);
        break;
    case -ENOMEM:
        CHECK(!closed && code == WS_CLOSE_INTERNAL_ERROR);
        break;
    default:
        CHECK(!"unexpected return value");
    }
    CHECK(code == 0 || (reason && reason[0] != '\0'));

    /* The same answer from now on, whatever comes. */
    static const uint8_t more[] = {0x81, 0x80, 0, 0, 0, 0};
    size_t consumed;
    WsEvent ev;
    CHECK(ws_parser_feed(p, more, sizeof(more), &consumed, &ev) == r);
    CHECK(ws_parser_feed(p, more, 0, &consumed, &ev) == r);
    CHECK(ws_parser_error(p, NULL) == code);
}

static uint32_t xorshift(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* Parses the stream, in one piece when seed is 0, recording what comes out. */
static void parse(const uint8_t *stream, size_t n, const Limits *limits, uint32_t seed,
                  Trace *trace)
{
    WsParser *p = NULL;
    CHECK(ws_parser_new(limits->max_frame, limits->max_message, &p) == 0);
    CHECK(ws_parser_error(p, NULL) == 0);

    bool closed = false;
    size_t off = 0;
    while (off < n) {
        size_t chunk = n - off;
        if (seed) {
            chunk = xorshift(&seed) % (CHUNK_MAX + 1);
            if (chunk > n - off)
                chunk = n - off;
        }
        const uint8_t *at = stream + off;
        size_t left = chunk;
        int r;
        do {
            size_t consumed = SIZE_MAX;
            WsEvent ev;
            r = ws_parser_feed(p, at, left, &consumed, &ev);
            if (r == 0) {
                CHECK(consumed == left);
                left = 0;
            } else if (r == 1) {
                CHECK(consumed >= 1 && consumed <= left);
                at += consumed;
                left -= consumed;
                check_event(&ev, limits);
                CHECK(ws_parser_error(p, NULL) == 0);
                trace_add(trace, (Record){.what = (int)ev.opcode,
                                          .pos = off + chunk - left,
                                          .len = ev.len,
                                          .close_code = ev.close_code,
                                          .hash = fnv1a(ev.data, ev.len)});
                if (!seed)
                    round_trip(&ev, limits->mask);
                closed = ev.opcode == WS_OPCODE_CLOSE;
            } else {
                check_error(p, r, closed);
                trace_add(trace, (Record){.what = r});
                goto done;
            }
        } while (left > 0);
        off += chunk;
    }
done:
    ws_parser_free(p);
}

/* ---- the writer ---- */

static void check_frame_header(const uint8_t *prefix)
{
    unsigned opcode = prefix[4] & 0x0f;
    bool fin = (prefix[4] & 0x80) != 0;
    unsigned shift = (prefix[4] >> 4) & 7;
    uint64_t len = 0;
    for (size_t i = 0; i < 8; i++)
        len = len << 8 | prefix[5 + i];
    len >>= 8 * shift;

    uint8_t out[WS_FRAME_HEADER_MAX];
    int n = ws_frame_header((WsOpcode)opcode, fin, len, out);
    bool control = opcode >= 8;
    bool valid =
        opcode_known(opcode) && len < (UINT64_C(1) << 63) && !(control && (!fin || len > 125));
    CHECK((n >= 0) == valid);
    if (!valid) {
        CHECK(n == -EINVAL);
        return;
    }
    CHECK((size_t)n == header_len_for(len));
    CHECK(out[0] == ((fin ? 0x80 : 0) | opcode));
    CHECK(out[1] == (n == 2 ? len : n == 4 ? 126 : 127));
    uint64_t got = out[1];
    if (n == 4)
        got = (uint64_t)out[2] << 8 | out[3];
    if (n == 10) {
        got = 0;
        for (size_t i = 0; i < 8; i++)
            got = got << 8 | out[2 + i];
    }
    CHECK(got == len);
}

static void check_frame_control(const uint8_t *prefix, const uint8_t *stream, size_t n)
{
    unsigned opcode = prefix[4] & 0x0f;
    size_t len = prefix[15] < n ? prefix[15] : n;
    uint8_t out[WS_CONTROL_FRAME_MAX];
    size_t out_len = SIZE_MAX;
    int r = ws_frame_control((WsOpcode)opcode, stream, len, out, &out_len);
    bool valid = (opcode == WS_OPCODE_PING || opcode == WS_OPCODE_PONG) && len <= 125;
    CHECK((r == 0) == valid);
    if (!valid) {
        CHECK(r == -EINVAL && out_len == SIZE_MAX);
        return;
    }
    CHECK(out_len == 2 + len && out[0] == (0x80 | opcode) && out[1] == len);
    CHECK(len == 0 || memcmp(out + 2, stream, len) == 0);
}

static void check_frame_close(const uint8_t *prefix, const uint8_t *stream, size_t n)
{
    uint16_t code = (uint16_t)(prefix[13] << 8 | prefix[14]);
    char reason[256];
    size_t want = prefix[15] < n ? prefix[15] : n;
    memcpy(reason, stream, want);
    reason[want] = '\0';
    size_t reason_len = strlen(reason);

    uint8_t out[WS_CONTROL_FRAME_MAX];
    size_t out_len = SIZE_MAX;
    const char *arg = prefix[15] == 0xff ? NULL : reason;
    int r = ws_frame_close(code, arg, out, &out_len);
    if (!arg)
        reason_len = 0;
    bool valid =
        reason_len <= WS_CLOSE_REASON_MAX &&
        (code == 0 ? reason_len == 0
                   : close_code_sendable(code) && utf8_ok((const uint8_t *)reason, reason_len));
    CHECK((r == 0) == valid);
    if (!valid) {
        CHECK(r == -EINVAL && out_len == SIZE_MAX);
        return;
    }
    CHECK(out[0] == 0x88);
    if (code == 0) {
        CHECK(out_len == 2 && out[1] == 0);
        return;
    }
    CHECK(out_len == 4 + reason_len && out[1] == 2 + reason_len);
    CHECK(out[2] == code >> 8 && out[3] == (code & 0xff));
    CHECK(memcmp(out + 4, reason, reason_len) == 0);
}

/* ---- the handshake ---- */

/*
 * The stream as header values: Upgrade, Connection, Sec-WebSocket-Version
 * and Sec-WebSocket-Key, one a line (a missing line is an absent header).
 */
static void check_handshake(const uint8_t *stream, size_t n)
{
    char *text = malloc(n + 1);
    CHECK(text);
    memcpy(text, stream, n);
    text[n] = '\0';
    const char *header[4] = {NULL};
    char *p = text;
    for (size_t i = 0; i < 4 && p; i++) {
        header[i] = p;
        p = strchr(p, '\n');
        if (p)
            *p++ = '\0';
    }

    const char *reason = NULL;
    int r = ws_handshake_check(header[0], header[1], header[2], header[3], &reason);
    CHECK(r == 0 || r == -EINVAL || r == -EPROTONOSUPPORT);
    CHECK(r == 0 ? reason == NULL : reason != NULL && reason[0] != '\0');

    /* The key alone decides whether an answer can be computed. */
    char accept[WS_ACCEPT_KEY_LEN];
    int key_ok = ws_handshake_check("websocket", "Upgrade", "13", header[3], NULL);
    int a = ws_accept_key(header[3], accept);
    CHECK(a == 0 || a == -EINVAL);
    CHECK((a == 0) == (key_ok == 0));
    if (r == 0)
        CHECK(a == 0);
    if (a == 0)
        CHECK(strlen(accept) == WS_ACCEPT_KEY_LEN - 1 && accept[WS_ACCEPT_KEY_LEN - 2] == '=');
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX_LEN)
        return 0;
    const uint8_t *stream = data + PREFIX_LEN;
    size_t n = size - PREFIX_LEN;
    Limits limits = {
        .max_frame = 1 + (size_t)data[0],
        .max_message = 1 + 2 * (size_t)data[1],
        .mask = {data[2], data[3], data[5], data[6]},
    };
    uint32_t seed = (uint32_t)(data[2] | data[3] << 8) | 0x10000;

    Trace whole = {0}, chunked = {0};
    parse(stream, n, &limits, 0, &whole);
    parse(stream, n, &limits, seed, &chunked);
    CHECK(whole.n == chunked.n);
    for (size_t i = 0; i < whole.n; i++) {
        const Record *a = &whole.records[i], *b = &chunked.records[i];
        CHECK(a->what == b->what && a->pos == b->pos && a->len == b->len &&
              a->close_code == b->close_code && a->hash == b->hash);
    }
    free(whole.records);
    free(chunked.records);

    CHECK(ws_parser_new(0, 1, &(WsParser *){NULL}) == -EINVAL);
    CHECK(ws_parser_new(1, 0, &(WsParser *){NULL}) == -EINVAL);
    check_frame_header(data);
    check_frame_control(data, stream, n);
    check_frame_close(data, stream, n);
    check_handshake(stream, n);
    return 0;
}
