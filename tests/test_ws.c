/* The WebSocket protocol: handshake, frame parser and writer, against RFC 6455. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "util.h"
#include "ws.h"

#define FIN 0x80
#define RSV1 0x40
#define RSV2 0x20
#define RSV3 0x10

/* RFC 6455 section 5.7 masks its examples with this key. */
static const uint8_t test_mask[4] = {0x37, 0xfa, 0x21, 0x3d};

/* A growing byte string to build client streams in. */
typedef struct {
    uint8_t *data;
    size_t len;
} Buf;

static void buf_free(Buf *b)
{
    free(b->data);
    *b = (Buf){0};
}

static uint8_t *buf_grow(Buf *b, size_t n)
{
    b->data = realloc(b->data, b->len + n);
    assert_non_null(b->data);
    uint8_t *at = b->data + b->len;
    b->len += n;
    return at;
}

static void buf_add(Buf *b, const void *data, size_t n)
{
    if (n > 0)
        memcpy(buf_grow(b, n), data, n);
}

/* Length forms: the shortest, or a forced one to build non-minimal encodings. */
enum { LEN_MIN = 0, LEN_7 = 7, LEN_16 = 16, LEN_64 = 64 };

/*
 * Appends a frame as a client would build it, written here byte by byte
 * from the RFC's figure rather than with ws_frame_header(), so the writer
 * and the parser are each checked against something independent.
 */
static void client_frame(Buf *b, uint8_t b0, bool masked, int form, const void *payload, size_t len)
{
    uint8_t mask_bit = masked ? 0x80 : 0;
    if (form == LEN_MIN)
        form = len < 126 ? LEN_7 : len <= 0xffff ? LEN_16 : LEN_64;
    buf_add(b, &b0, 1);
    if (form == LEN_7) {
        uint8_t b1 = mask_bit | (uint8_t)len;
        buf_add(b, &b1, 1);
    } else if (form == LEN_16) {
        uint8_t h[3] = {mask_bit | 126, (uint8_t)(len >> 8), (uint8_t)len};
        buf_add(b, h, sizeof(h));
    } else {
        uint8_t h[9] = {mask_bit | 127};
        for (int i = 0; i < 8; i++)
            h[1 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        buf_add(b, h, sizeof(h));
    }
    if (masked)
        buf_add(b, test_mask, sizeof(test_mask));
    uint8_t *at = buf_grow(b, len);
    for (size_t i = 0; i < len; i++)
        at[i] = ((const uint8_t *)payload)[i] ^ (masked ? test_mask[i & 3] : 0);
}

/* A masked frame with the shortest length form, the common case. */
static void frame(Buf *b, uint8_t b0, const void *payload, size_t len)
{
    client_frame(b, b0, true, LEN_MIN, payload, len);
}

static void frame_str(Buf *b, uint8_t b0, const char *payload)
{
    frame(b, b0, payload, strlen(payload));
}

/* What a parse produced: the events (copied out), then how it ended. */
typedef struct {
    WsOpcode opcode;
    uint8_t *data;
    size_t len;
    uint16_t close_code;
} Got;

typedef struct {
    Got events[64];
    size_t n;
    int r;         /* 0, or the error the parser returned */
    uint16_t code; /* ws_parser_error() at the end */
    const char *reason;
} Run;

static void run_free(Run *run)
{
    for (size_t i = 0; i < run->n; i++)
        free(run->events[i].data);
    run->n = 0;
}

/* Feeds stream to p in chunks of step bytes, as the socket might hand them over. */
static void feed_all(WsParser *p, const uint8_t *stream, size_t len, size_t step, Run *ret)
{
    *ret = (Run){0};
    for (size_t off = 0; off < len;) {
        size_t chunk = step < len - off ? step : len - off;
        size_t pos = 0;
        while (pos < chunk) {
            size_t used = SIZE_MAX;
            WsEvent ev;
            int r = ws_parser_feed(p, stream + off + pos, chunk - pos, &used, &ev);
            if (r < 0) {
                assert_int_equal(used, SIZE_MAX); /* untouched on failure */
                ret->r = r;
                ret->code = ws_parser_error(p, &ret->reason);
                return;
            }
            if (r == 0) {
                assert_int_equal(used, chunk - pos);
            } else {
                assert_int_equal(r, 1);
                assert_true(used > 0 && used <= chunk - pos);
                assert_non_null(ev.data);
                assert_true(ret->n < ARRAY_SIZE(ret->events));
                Got *g = &ret->events[ret->n++];
                *g = (Got){.opcode = ev.opcode, .len = ev.len, .close_code = ev.close_code};
                g->data = malloc(ev.len + 1);
                assert_non_null(g->data);
                memcpy(g->data, ev.data, ev.len);
            }
            pos += used;
        }
        off += chunk;
    }
    ret->code = ws_parser_error(p, &ret->reason);
}

/* A fresh parser for one stream. */
static void parse(const Buf *b, size_t step, size_t max_frame, size_t max_message, Run *ret)
{
    WsParser *p = NULL;
    assert_int_equal(ws_parser_new(max_frame, max_message, &p), 0);
    feed_all(p, b->data, b->len, step, ret);
    ws_parser_free(p);
}

#define BIG (4u << 20)

static void assert_event(const Run *run, size_t i, WsOpcode opcode, const void *data, size_t len)
{
    assert_true(i < run->n);
    assert_int_equal(run->events[i].opcode, opcode);
    assert_int_equal(run->events[i].len, len);
    if (len > 0)
        assert_memory_equal(run->events[i].data, data, len);
}

static void assert_event_str(const Run *run, size_t i, WsOpcode opcode, const char *data)
{
    assert_event(run, i, opcode, data, strlen(data));
}

static void assert_runs_equal(const Run *a, const Run *b)
{
    assert_int_equal(a->r, b->r);
    assert_int_equal(a->code, b->code);
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_int_equal(a->events[i].opcode, b->events[i].opcode);
        assert_int_equal(a->events[i].close_code, b->events[i].close_code);
        assert_int_equal(a->events[i].len, b->events[i].len);
        assert_memory_equal(a->events[i].data, b->events[i].data, a->events[i].len);
    }
}

/* Parses at once and in steps of 1, expects the same error, returns with run from at once. */
static void expect_error(const Buf *b, size_t max_frame, size_t max_message, int r, uint16_t code,
                         Run *ret)
{
    Run bytewise;
    parse(b, SIZE_MAX, max_frame, max_message, ret);
    parse(b, 1, max_frame, max_message, &bytewise);
    assert_int_equal(ret->r, r);
    assert_int_equal(ret->code, code);
    assert_non_null(ret->reason);
    assert_runs_equal(ret, &bytewise);
    run_free(&bytewise);
}

/* ---- handshake ---- */

static void test_accept_key_rfc_example(void **state)
{
    char accept[WS_ACCEPT_KEY_LEN];
    /* RFC 6455 section 1.3. */
    assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", accept), 0);
    assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /* The spaces around a header value are not part of the key. */
    memset(accept, 0, sizeof(accept));
    assert_int_equal(ws_accept_key(" \tdGhlIHNhbXBsZSBub25jZQ== ", accept), 0);
    assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /* Another key (answer computed with Python's hashlib and base64). */
    assert_int_equal(ws_accept_key("AAAAAAAAAAAAAAAAAAAAAA==", accept), 0);
    assert_string_equal(accept, "ICX+Yqv66kxgM0FcWaLWlFLwTAI=");
}

static void test_accept_key_bad_keys(void **state)
{
    static const char *bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",   /* 23 characters */
        "dGhlIHNhbXBsZSBub25jZQ===", /* 25 */
        "dGhlIHNhbXBsZSBub25jZQAA",  /* no padding: 18 bytes */
        "AAAAAAAAAAAAAAAAAAAAAAA=",  /* 17 bytes */
        "AAAAAAAAAAAAAAAAAAAA",      /* 15 bytes */
        "dGhlIHNhbXBsZSBub25jZ!==",  /* not base64 */
        "dGhlIHNhbXBsZSBub25j ZQ==", /* space inside */
        "dGhlIHNhbXBsZSBub25jZR==",  /* stray bits after the 16 bytes */
        "=GhlIHNhbXBsZSBub25jZQ==",
        "the sample nonce",
    };
    char accept[WS_ACCEPT_KEY_LEN];
    memset(accept, 'x', sizeof(accept));
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        assert_int_equal(ws_accept_key(bad[i], accept), -EINVAL);
    assert_int_equal(ws_accept_key(NULL, accept), -EINVAL);

    char huge[WS_HEADER_MAX + 2];
    memset(huge, ' ', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    memcpy(huge + 100, "dGhlIHNhbXBsZSBub25jZQ==", 24); /* fine once trimmed, but too long */
    assert_int_equal(ws_accept_key(huge, accept), -EINVAL);
    for (size_t i = 0; i < sizeof(accept); i++)
        assert_int_equal(accept[i], 'x'); /* untouched on failure */

    /* The 22nd character holds 2 key bits and 4 zero bits: only A, Q, g and w fit. */
    char key[] = "AAAAAAAAAAAAAAAAAAAAAA==";
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int accepted = 0;
    for (size_t i = 0; i < 64; i++) {
        key[21] = alphabet[i];
        int r = ws_accept_key(key, accept);
        if (r == 0) {
            accepted++;
            assert_true(strchr("AQgw", alphabet[i]) != NULL);
        } else {
            assert_int_equal(r, -EINVAL);
        }
    }
    assert_int_equal(accepted, 4);
}

static void test_handshake_check(void **state)
{
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    const char *reason = NULL;

    assert_int_equal(ws_handshake_check("websocket", "Upgrade", "13", key, &reason), 0);
    assert_null(reason); /* untouched on success */
    assert_int_equal(ws_handshake_check("WebSocket", "keep-alive, Upgrade", "13", key, NULL), 0);
    assert_int_equal(ws_handshake_check("websocket", "upgrade,keep-alive", " 13 ", key, NULL), 0);
    assert_int_equal(ws_handshake_check("h2c, websocket", "\tUPGRADE\t", "13", key, NULL), 0);

    /* Upgrade */
    assert_int_equal(ws_handshake_check(NULL, "Upgrade", "13", key, &reason), -EINVAL);
    assert_non_null(reason);
    assert_int_equal(ws_handshake_check("", "Upgrade", "13", key, NULL), -EINVAL);
    assert_int_equal(ws_handshake_check("h2c", "Upgrade", "13", key, NULL), -EINVAL);
    assert_int_equal(ws_handshake_check("websockets", "Upgrade", "13", key, NULL), -EINVAL);
    assert_int_equal(ws_handshake_check("web socket", "Upgrade", "13", key, NULL), -EINVAL);

    /* Connection: a token, not a substring. */
    reason = NULL;
    assert_int_equal(ws_handshake_check("websocket", NULL, "13", key, &reason), -EINVAL);
    assert_non_null(reason);
    assert_int_equal(ws_handshake_check("websocket", "keep-alive", "13", key, NULL), -EINVAL);
    assert_int_equal(ws_handshake_check("websocket", "upgraded", "13", key, NULL), -EINVAL);
    assert_int_equal(ws_handshake_check("websocket", "keep-alive upgrade", "13", key, NULL),
                     -EINVAL);
    assert_int_equal(ws_handshake_check("websocket", ",,", "13", key, NULL), -EINVAL);

    /* Version: missing is a bad request, another version asks for 13 (426). */
    reason = NULL;
    assert_int_equal(ws_handshake_check("websocket", "Upgrade", NULL, key, &reason), -EINVAL);
    assert_non_null(reason);
    reason = NULL;
    assert_int_equal(ws_handshake_check("websocket", "Upgrade", "8", key, &reason),
                     -EPROTONOSUPPORT);
    assert_non_null(reason);
    assert_int_equal(ws_handshake_check("websocket", "Upgrade", "", key, NULL), -EPROTONOSUPPORT);
    assert_int_equal(ws_handshake_check("websocket", "Upgrade", "13, 8", key, NULL),
                     -EPROTONOSUPPORT);
    assert_int_equal(ws_handshake_check("websocket", "Upgrade", "130", key, NULL),
                     -EPROTONOSUPPORT);

    /* Key */
    reason = NULL;
    assert_int_equal(ws_handshake_check("websocket", "Upgrade", "13", NULL, &reason), -EINVAL);
    assert_non_null(reason);
    assert_int_equal(ws_handshake_check("websocket", "Upgrade", "13", "c2hvcnQ=", NULL), -EINVAL);

    /* Every value is bounded before it is read. */
    char huge[WS_HEADER_MAX + 2];
    memset(huge, ' ', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    memcpy(huge, "websocket", 9);
    assert_int_equal(ws_handshake_check(huge, "Upgrade", "13", key, NULL), -EINVAL);
    memcpy(huge, "Upgrade  ", 9);
    assert_int_equal(ws_handshake_check("websocket", huge, "13", key, NULL), -EINVAL);
    memcpy(huge, "13       ", 9);
    assert_int_equal(ws_handshake_check("websocket", "Upgrade", huge, key, NULL), -EINVAL);
    huge[WS_HEADER_MAX] = '\0'; /* exactly at the limit is still read */
    assert_int_equal(ws_handshake_check("websocket", "Upgrade", huge, key, NULL), 0);
}

/* ---- writer ---- */

static void test_frame_header_lengths(void **state)
{
    static const struct {
        uint64_t len;
        int n;
        uint8_t bytes[WS_FRAME_HEADER_MAX];
    } cases[] = {
        {0, 2, {0x82, 0x00}},
        {125, 2, {0x82, 0x7d}},
        {126, 4, {0x82, 0x7e, 0x00, 0x7e}},
        {65535, 4, {0x82, 0x7e, 0xff, 0xff}},
        {65536, 10, {0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}},
        {0x123456789aULL, 10, {0x82, 0x7f, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a}},
        {INT64_MAX, 10, {0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
    };
    uint8_t h[WS_FRAME_HEADER_MAX];
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        memset(h, 0xee, sizeof(h));
        assert_int_equal(ws_frame_header(WS_OPCODE_BINARY, true, cases[i].len, h), cases[i].n);
        assert_memory_equal(h, cases[i].bytes, (size_t)cases[i].n);
    }

    /* RFC 6455 section 5.7: an unmasked "Hello", and the same in two fragments. */
    assert_int_equal(ws_frame_header(WS_OPCODE_TEXT, true, 5, h), 2);
    assert_memory_equal(h, "\x81\x05", 2);
    assert_int_equal(ws_frame_header(WS_OPCODE_TEXT, false, 3, h), 2);
    assert_memory_equal(h, "\x01\x03", 2);
    assert_int_equal(ws_frame_header(WS_OPCODE_CONTINUATION, true, 2, h), 2);
    assert_memory_equal(h, "\x80\x02", 2);

    memset(h, 0xee, sizeof(h));
    assert_int_equal(ws_frame_header(WS_OPCODE_BINARY, true, 1ULL << 63, h), -EINVAL);
    assert_int_equal(ws_frame_header(WS_OPCODE_BINARY, true, UINT64_MAX, h), -EINVAL);
    assert_int_equal(ws_frame_header((WsOpcode)3, true, 0, h), -EINVAL);
    assert_int_equal(ws_frame_header((WsOpcode)0xb, true, 0, h), -EINVAL);
    assert_int_equal(ws_frame_header((WsOpcode)0x10, true, 0, h), -EINVAL);
    assert_int_equal(ws_frame_header(WS_OPCODE_PING, false, 0, h), -EINVAL);
    assert_int_equal(ws_frame_header(WS_OPCODE_CLOSE, true, 126, h), -EINVAL);
    assert_int_equal(h[0], 0xee); /* untouched on failure */
    assert_int_equal(ws_frame_header(WS_OPCODE_CLOSE, true, 125, h), 2);
    assert_memory_equal(h, "\x88\x7d", 2);
}

static void test_frame_control_and_close(void **state)
{
    uint8_t f[WS_CONTROL_FRAME_MAX];
    uint8_t payload[WS_CONTROL_PAYLOAD_MAX + 1];
    size_t len = 0;
    memset(payload, 'p', sizeof(payload));

    /* RFC 6455 section 5.7: a ping and its pong, both "Hello". */
    assert_int_equal(ws_frame_control(WS_OPCODE_PING, "Hello", 5, f, &len), 0);
    assert_int_equal(len, 7);
    assert_memory_equal(f, "\x89\x05Hello", 7);
    assert_int_equal(ws_frame_control(WS_OPCODE_PONG, "Hello", 5, f, &len), 0);
    assert_int_equal(len, 7);
    assert_memory_equal(f, "\x8a\x05Hello", 7);
    assert_int_equal(ws_frame_control(WS_OPCODE_PONG, NULL, 0, f, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(f, "\x8a\x00", 2);
    assert_int_equal(ws_frame_control(WS_OPCODE_PONG, payload, 125, f, &len), 0);
    assert_int_equal(len, WS_CONTROL_FRAME_MAX);
    assert_memory_equal(f, "\x8a\x7d", 2);
    assert_memory_equal(f + 2, payload, 125);

    len = 99;
    assert_int_equal(ws_frame_control(WS_OPCODE_PONG, payload, 126, f, &len), -EINVAL);
    assert_int_equal(ws_frame_control(WS_OPCODE_CLOSE, NULL, 0, f, &len), -EINVAL);
    assert_int_equal(ws_frame_control(WS_OPCODE_TEXT, "x", 1, f, &len), -EINVAL);
    assert_int_equal(len, 99);

    /* Close: empty, code only, code and reason. */
    assert_int_equal(ws_frame_close(0, NULL, f, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(f, "\x88\x00", 2);
    assert_int_equal(ws_frame_close(WS_CLOSE_NORMAL, NULL, f, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(f, "\x88\x02\x03\xe8", 4);
    assert_int_equal(ws_frame_close(WS_CLOSE_GOING_AWAY, "", f, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(f, "\x88\x02\x03\xe9", 4);
    assert_int_equal(ws_frame_close(WS_CLOSE_MESSAGE_TOO_BIG, "too big", f, &len), 0);
    assert_int_equal(len, 11);
    assert_memory_equal(f, "\x88\x09\x03\xf1too big", 11);
    assert_int_equal(ws_frame_close(4999, "caf\xc3\xa9", f, &len), 0);
    assert_memory_equal(f,
                        "\x88\x07\x13\x87"
                        "caf\xc3\xa9",
                        9);

    char reason[WS_CLOSE_REASON_MAX + 2];
    memset(reason, 'r', sizeof(reason));
    reason[WS_CLOSE_REASON_MAX] = '\0';
    assert_int_equal(ws_frame_close(3000, reason, f, &len), 0);
    assert_int_equal(len, WS_CONTROL_FRAME_MAX);
    assert_memory_equal(f, "\x88\x7d\x0b\xb8", 4);
    assert_memory_equal(f + 4, reason, WS_CLOSE_REASON_MAX);

    len = 99;
    reason[WS_CLOSE_REASON_MAX] = 'r';
    reason[WS_CLOSE_REASON_MAX + 1] = '\0';
    assert_int_equal(ws_frame_close(3000, reason, f, &len), -EINVAL); /* 124 bytes */
    assert_int_equal(ws_frame_close(0, "no code", f, &len), -EINVAL);
    assert_int_equal(ws_frame_close(WS_CLOSE_NORMAL, "\xff", f, &len), -EINVAL);
    assert_int_equal(ws_frame_close(WS_CLOSE_NORMAL, "\xc3", f, &len), -EINVAL);
    static const uint16_t unsendable[] = {1, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000};
    for (size_t i = 0; i < ARRAY_SIZE(unsendable); i++)
        assert_int_equal(ws_frame_close(unsendable[i], NULL, f, &len), -EINVAL);
    assert_int_equal(len, 99);
}

/* ---- parser ---- */

static void test_parser_new(void **state)
{
    WsParser *p = (WsParser *)0x1;
    assert_int_equal(ws_parser_new(0, 10, &p), -EINVAL);
    assert_int_equal(ws_parser_new(10, 0, &p), -EINVAL);
    assert_ptr_equal(p, (WsParser *)0x1);
    ws_parser_free(NULL);
    {
        _cleanup_ws_parser_ WsParser *q = NULL;
        assert_int_equal(ws_parser_new(10, 10, &q), 0);
        assert_int_equal(ws_parser_error(q, NULL), 0);
        size_t used = 7;
        WsEvent ev;
        assert_int_equal(ws_parser_feed(q, "", 0, &used, &ev), 0);
        assert_int_equal(used, 0);
    }
}

static void test_parse_rfc_examples(void **state)
{
    /* RFC 6455 section 5.7: a masked "Hello" from a client. */
    static const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                     0x7f, 0x9f, 0x4d, 0x51, 0x58};
    Buf b = {0};
    Run run;
    buf_add(&b, masked, sizeof(masked));
    for (size_t step = 1; step <= sizeof(masked); step++) {
        parse(&b, step, 100, 100, &run);
        assert_int_equal(run.r, 0);
        assert_int_equal(run.n, 1);
        assert_event_str(&run, 0, WS_OPCODE_TEXT, "Hello");
        run_free(&run);
    }
    buf_free(&b);

    /* The same as a server would send it: unmasked, so not from a client. */
    buf_add(&b, "\x81\x05Hello", 7);
    expect_error(&b, 100, 100, -EPROTO, WS_CLOSE_PROTOCOL_ERROR, &run);
    assert_int_equal(run.n, 0);
    run_free(&run);
    buf_free(&b);
}

static void test_parse_length_classes(void **state)
{
    static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, BIG - 1, BIG};
    static const size_t header_len[] = {6, 6, 6, 8, 8, 8, 14, 14, 14};
    uint8_t *payload = malloc(BIG);
    assert_non_null(payload);
    for (size_t i = 0; i < BIG; i++)
        payload[i] = (uint8_t)(i * 7 + (i >> 8));

    for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
        Buf b = {0};
        Run at_once, bytewise;
        frame(&b, FIN | WS_OPCODE_BINARY, payload, lens[i]);
        assert_int_equal(b.len, header_len[i] + lens[i]);

        parse(&b, SIZE_MAX, BIG, BIG, &at_once);
        assert_int_equal(at_once.r, 0);
        assert_int_equal(at_once.n, 1);
        assert_event(&at_once, 0, WS_OPCODE_BINARY, payload, lens[i]);

        parse(&b, 1, BIG, BIG, &bytewise);
        assert_runs_equal(&at_once, &bytewise);
        run_free(&at_once);
        run_free(&bytewise);
        buf_free(&b);

        /* The writer's header for the same length is the client's minus the mask bit and key. */
        uint8_t h[WS_FRAME_HEADER_MAX];
        client_frame(&b, FIN | WS_OPCODE_BINARY, false, LEN_MIN, payload, lens[i]);
        int n = ws_frame_header(WS_OPCODE_BINARY, true, lens[i], h);
        assert_int_equal((size_t)n, header_len[i] - 4);
        assert_memory_equal(h, b.data, (size_t)n);
        buf_free(&b);
    }

    /* Text in each length class too (ASCII, so valid UTF-8). */
    memset(payload, 'a', 70000);
    for (size_t i = 0; i < 7; i++) {
        Buf b = {0};
        Run run;
        frame(&b, FIN | WS_OPCODE_TEXT, payload, lens[i]);
        parse(&b, 3, BIG, BIG, &run);
        assert_int_equal(run.r, 0);
        assert_event(&run, 0, WS_OPCODE_TEXT, payload, lens[i]);
        run_free(&run);
        buf_free(&b);
    }
    free(payload);
}

/* Two messages in fragments with control frames between them, then one whole message. */
static void build_fragmented(Buf *b)
{
    frame_str(b, WS_OPCODE_TEXT, "Hel");
    frame_str(b, FIN | WS_OPCODE_PING, "p1");
    frame_str(b, WS_OPCODE_CONTINUATION, "");
    frame_str(b, FIN | WS_OPCODE_PONG, "");
    frame_str(b, FIN | WS_OPCODE_CONTINUATION, "lo");
    frame(b, WS_OPCODE_BINARY, "\x00\x01", 2);
    frame(b, FIN | WS_OPCODE_PING, NULL, 0);
    frame(b, WS_OPCODE_CONTINUATION, "\x02", 1);
    frame(b, FIN | WS_OPCODE_CONTINUATION, "\x03\x04", 2);
    frame_str(b, FIN | WS_OPCODE_TEXT, "after");
}

static void check_fragmented(const Run *run)
{
    assert_int_equal(run->r, 0);
    assert_int_equal(run->code, 0);
    assert_int_equal(run->n, 6);
    assert_event_str(run, 0, WS_OPCODE_PING, "p1");
    assert_event_str(run, 1, WS_OPCODE_PONG, "");
    assert_event_str(run, 2, WS_OPCODE_TEXT, "Hello");
    assert_event_str(run, 3, WS_OPCODE_PING, "");
    assert_event(run, 4, WS_OPCODE_BINARY, "\x00\x01\x02\x03\x04", 5);
    assert_event_str(run, 5, WS_OPCODE_TEXT, "after");
}

static void test_parse_fragmented_with_ping(void **state)
{
    Buf b = {0};
    Run run;
    build_fragmented(&b);
    for (size_t step = 1; step <= 9; step++) {
        parse(&b, step, 16, 16, &run);
        check_fragmented(&run);
        run_free(&run);
    }
    parse(&b, SIZE_MAX, 16, 16, &run);
    check_fragmented(&run);

    /* The answer to the ping is a pong with its payload. */
    uint8_t pong[WS_CONTROL_FRAME_MAX];
    size_t len;
    assert_int_equal(
        ws_frame_control(WS_OPCODE_PONG, run.events[0].data, run.events[0].len, pong, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(pong, "\x8a\x02p1", 4);
    run_free(&run);
    buf_free(&b);
}

static void test_parse_chunking_is_invisible(void **state)
{
    /* Every length class, fragments, control frames and a close in one stream. */
    static const size_t lens[] = {0, 125, 126, 65535, 65536, 200000};
    uint8_t *payload = malloc(200000);
    assert_non_null(payload);
    for (size_t i = 0; i < 200000; i++)
        payload[i] = (uint8_t)(i ^ (i >> 9));
    Buf b = {0};
    for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
        frame(&b, FIN | WS_OPCODE_BINARY, payload, lens[i]);
        frame(&b, FIN | WS_OPCODE_PING, payload, i * 20);
    }
    build_fragmented(&b);
    frame(&b, WS_OPCODE_BINARY, payload, 70000);
    frame(&b, FIN | WS_OPCODE_PONG, payload, 125);
    frame(&b, FIN | WS_OPCODE_CONTINUATION, payload + 70000, 130000);
    frame(&b, FIN | WS_OPCODE_CLOSE,
          "\x03\xe8"
          "done",
          6);

    Run at_once;
    parse(&b, SIZE_MAX, 1 << 20, 1 << 20, &at_once);
    assert_int_equal(at_once.r, 0);
    assert_int_equal(at_once.n, 2 * ARRAY_SIZE(lens) + 6 + 3);
    assert_event(&at_once, 10, WS_OPCODE_BINARY, payload, 200000);
    assert_event(&at_once, 11, WS_OPCODE_PING, payload, 100);
    assert_event(&at_once, 18, WS_OPCODE_PONG, payload, 125);
    assert_event(&at_once, 19, WS_OPCODE_BINARY, payload, 200000);
    assert_event_str(&at_once, 20, WS_OPCODE_CLOSE, "done");
    assert_int_equal(at_once.events[20].close_code, WS_CLOSE_NORMAL);

    static const size_t steps[] = {1, 2, 3, 5, 13, 125, 4096, 65537};
    for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
        Run chunked;
        parse(&b, steps[i], 1 << 20, 1 << 20, &chunked);
        assert_runs_equal(&at_once, &chunked);
        run_free(&chunked);
    }
    run_free(&at_once);
    buf_free(&b);
    free(payload);
}

static void test_parse_too_big(void **state)
{
    uint8_t payload[300];
    memset(payload, 'z', sizeof(payload));
    Buf b = {0};
    Run run;

    /* At the limits exactly: fine. */
    frame(&b, FIN | WS_OPCODE_TEXT, payload, 100);
    frame(&b, WS_OPCODE_BINARY, payload, 100);
    frame(&b, WS_OPCODE_CONTINUATION, payload, 100);
    frame(&b, FIN | WS_OPCODE_CONTINUATION, payload, 50);
    parse(&b, 1, 100, 250, &run);
    assert_int_equal(run.r, 0);
    assert_int_equal(run.n, 2);
    assert_event(&run, 0, WS_OPCODE_TEXT, payload, 100);
    assert_event(&run, 1, WS_OPCODE_BINARY, payload, 250);
    run_free(&run);
    buf_free(&b);

    /* One frame over max_frame, refused from its header alone: no payload follows. */
    frame_str(&b, FIN | WS_OPCODE_TEXT, "ok");
    frame(&b, FIN | WS_OPCODE_BINARY, payload, 101);
    b.len -= 101;
    expect_error(&b, 100, 250, -EMSGSIZE, WS_CLOSE_MESSAGE_TOO_BIG, &run);
    assert_int_equal(run.n, 1);
    assert_string_equal(run.reason, "frame too big");
    run_free(&run);
    buf_free(&b);

    /* Fragments each within max_frame that add up past max_message. */
    frame(&b, WS_OPCODE_BINARY, payload, 100);
    frame(&b, WS_OPCODE_CONTINUATION, payload, 100);
    frame(&b, FIN | WS_OPCODE_CONTINUATION, payload, 51);
    b.len -= 51;
    expect_error(&b, 100, 250, -EMSGSIZE, WS_CLOSE_MESSAGE_TOO_BIG, &run);
    assert_int_equal(run.n, 0);
    assert_string_equal(run.reason, "message too big");
    run_free(&run);
    buf_free(&b);

    /* A single frame over max_message when max_frame allows more. */
    frame(&b, FIN | WS_OPCODE_TEXT, payload, 251);
    expect_error(&b, 1000, 250, -EMSGSIZE, WS_CLOSE_MESSAGE_TOO_BIG, &run);
    assert_string_equal(run.reason, "message too big");
    run_free(&run);
    buf_free(&b);

    /* A length of 2^62 is refused without an attempt to hold it. */
    static const uint8_t huge[] = {0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    buf_add(&b, huge, sizeof(huge));
    expect_error(&b, 1 << 20, 1 << 20, -EMSGSIZE, WS_CLOSE_MESSAGE_TOO_BIG, &run);
    run_free(&run);
    buf_free(&b);

    /* Control frames are bounded by the protocol, not by max_frame. */
    frame(&b, FIN | WS_OPCODE_PING, payload, 125);
    parse(&b, SIZE_MAX, 10, 10, &run);
    assert_int_equal(run.r, 0);
    assert_event(&run, 0, WS_OPCODE_PING, payload, 125);
    run_free(&run);
    buf_free(&b);
}

static void test_parse_protocol_errors(void **state)
{
    uint8_t payload[200];
    memset(payload, 'q', sizeof(payload));

    for (int opcode = 0; opcode < 16; opcode++) {
        switch (opcode) {
        case 0x0:
        case 0x1:
        case 0x2:
        case 0x8:
        case 0x9:
        case 0xa:
            continue;
        }
        Buf b = {0};
        Run run;
        frame_str(&b, FIN | WS_OPCODE_TEXT, "first");
        frame(&b, (uint8_t)(FIN | opcode), NULL, 0);
        frame_str(&b, FIN | WS_OPCODE_TEXT, "never");
        expect_error(&b, 1000, 1000, -EPROTO, WS_CLOSE_PROTOCOL_ERROR, &run);
        assert_int_equal(run.n, 1); /* what came before the bad frame was delivered */
        assert_event_str(&run, 0, WS_OPCODE_TEXT, "first");
        assert_string_equal(run.reason, "unknown opcode");
        run_free(&run);
        buf_free(&b);
    }

    static const struct {
        const char *name;
        uint8_t b0;
        bool masked;
        int form;
        size_t len;
        bool mid_message; /* sent after the first fragment of a text message */
    } cases[] = {
        {"RSV1", FIN | RSV1 | WS_OPCODE_TEXT, true, LEN_MIN, 1, false},
        {"RSV2", FIN | RSV2 | WS_OPCODE_BINARY, true, LEN_MIN, 1, false},
        {"RSV3", FIN | RSV3 | WS_OPCODE_PING, true, LEN_MIN, 1, false},
        {"RSV1 on a continuation", FIN | RSV1 | WS_OPCODE_CONTINUATION, true, LEN_MIN, 1, true},
        {"unmasked text", FIN | WS_OPCODE_TEXT, false, LEN_MIN, 3, false},
        {"unmasked ping", FIN | WS_OPCODE_PING, false, LEN_MIN, 0, false},
        {"unmasked continuation", FIN | WS_OPCODE_CONTINUATION, false, LEN_MIN, 2, true},
        {"fragmented ping", WS_OPCODE_PING, true, LEN_MIN, 1, false},
        {"fragmented close", WS_OPCODE_CLOSE, true, LEN_MIN, 2, false},
        {"fragmented pong mid-message", WS_OPCODE_PONG, true, LEN_MIN, 0, true},
        {"ping of 126", FIN | WS_OPCODE_PING, true, LEN_MIN, 126, false},
        {"pong of 200", FIN | WS_OPCODE_PONG, true, LEN_MIN, 200, false},
        {"close of 126", FIN | WS_OPCODE_CLOSE, true, LEN_MIN, 126, false},
        {"ping of 5 in 16 bits", FIN | WS_OPCODE_PING, true, LEN_16, 5, false},
        {"continuation without a message", FIN | WS_OPCODE_CONTINUATION, true, LEN_MIN, 1, false},
        {"unfinished continuation without a message", WS_OPCODE_CONTINUATION, true, LEN_MIN, 1,
         false},
        {"text mid-message", FIN | WS_OPCODE_TEXT, true, LEN_MIN, 1, true},
        {"binary mid-message", WS_OPCODE_BINARY, true, LEN_MIN, 1, true},
        {"0 in 16 bits", FIN | WS_OPCODE_BINARY, true, LEN_16, 0, false},
        {"125 in 16 bits", FIN | WS_OPCODE_BINARY, true, LEN_16, 125, false},
        {"0 in 64 bits", FIN | WS_OPCODE_BINARY, true, LEN_64, 0, false},
        {"5 in 64 bits", FIN | WS_OPCODE_BINARY, true, LEN_64, 5, false},
        {"65535 in 64 bits", FIN | WS_OPCODE_BINARY, true, LEN_64, 65535, false},
    };
    uint8_t *big = calloc(1, 65536);
    assert_non_null(big);
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        Buf b = {0};
        Run run;
        print_message("  %s\n", cases[i].name);
        if (cases[i].mid_message)
            frame_str(&b, WS_OPCODE_TEXT, "part");
        client_frame(&b, cases[i].b0, cases[i].masked, cases[i].form, big, cases[i].len);
        expect_error(&b, 100000, 100000, -EPROTO, WS_CLOSE_PROTOCOL_ERROR, &run);
        assert_int_equal(run.n, 0);
        run_free(&run);
        buf_free(&b);
    }
    free(big);

    /* A 64-bit length with its top bit set: the RFC says that bit is 0. */
    static const uint8_t top[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0x05, 1, 2, 3, 4};
    Buf b = {0};
    Run run;
    buf_add(&b, top, sizeof(top));
    expect_error(&b, 100, 100, -EPROTO, WS_CLOSE_PROTOCOL_ERROR, &run);
    assert_string_equal(run.reason, "64-bit length with the top bit set");
    run_free(&run);
    buf_free(&b);
}

static void test_parse_invalid_utf8(void **state)
{
    static const char *bad[] = {
        "\x80",             /* lone continuation */
        "\xc0\xaf",         /* overlong '/' */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong, 3 bytes */
        "\xf0\x80\x80\xaf", /* overlong, 4 bytes */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xed\xbf\xbf",     /* surrogate U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80",
        "\xff",
        "ok\xe2\x82",   /* ends inside a character */
        "\xe2\x82(",    /* continuation missing */
        "\xce\xba\xe1", /* ends inside a character after a good one */
    };
    static const char *good[] = {
        "\xe2\x82\xac",     /* U+20AC */
        "\xf0\x9d\x84\x9e", /* U+1D11E */
        "\xed\x9f\xbf",     /* U+D7FF, just below the surrogates */
        "\xee\x80\x80",     /* U+E000, just above */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF */
        "\xc2\x80\xdf\xbf", "\x7f",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        Buf b = {0};
        Run run;
        frame_str(&b, FIN | WS_OPCODE_TEXT, bad[i]);
        expect_error(&b, 100, 100, -EILSEQ, WS_CLOSE_INVALID_DATA, &run);
        assert_int_equal(run.n, 0);
        run_free(&run);
        buf_free(&b);

        /* The same bytes in a binary message are nobody's business. */
        frame_str(&b, FIN | WS_OPCODE_BINARY, bad[i]);
        parse(&b, 1, 100, 100, &run);
        assert_int_equal(run.r, 0);
        assert_event_str(&run, 0, WS_OPCODE_BINARY, bad[i]);
        run_free(&run);
        buf_free(&b);
    }
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        Buf b = {0};
        Run run;
        frame_str(&b, FIN | WS_OPCODE_TEXT, good[i]);
        parse(&b, 1, 100, 100, &run);
        assert_int_equal(run.r, 0);
        assert_event_str(&run, 0, WS_OPCODE_TEXT, good[i]);
        run_free(&run);
        buf_free(&b);
    }

    /* A character split across fragments is fine. */
    Buf b = {0};
    Run run;
    frame_str(&b, WS_OPCODE_TEXT, "\xe2");
    frame_str(&b, FIN | WS_OPCODE_PING, "");
    frame_str(&b, WS_OPCODE_CONTINUATION, "\x82");
    frame_str(&b, FIN | WS_OPCODE_CONTINUATION, "\xac!");
    parse(&b, 1, 100, 100, &run);
    assert_int_equal(run.r, 0);
    assert_int_equal(run.n, 2);
    assert_event_str(&run, 1, WS_OPCODE_TEXT, "\xe2\x82\xac!");
    run_free(&run);
    buf_free(&b);

    /* A bad continuation byte in the next fragment. */
    frame_str(&b, WS_OPCODE_TEXT, "a\xe2\x82");
    frame_str(&b, FIN | WS_OPCODE_CONTINUATION, "(");
    expect_error(&b, 100, 100, -EILSEQ, WS_CLOSE_INVALID_DATA, &run);
    run_free(&run);
    buf_free(&b);

    /* Fragments that end the message inside a character. */
    frame_str(&b, WS_OPCODE_TEXT, "\xf0\x9d");
    frame_str(&b, WS_OPCODE_CONTINUATION, "\x84");
    frame_str(&b, FIN | WS_OPCODE_CONTINUATION, "");
    expect_error(&b, 100, 100, -EILSEQ, WS_CLOSE_INVALID_DATA, &run);
    assert_string_equal(run.reason, "text message ends inside a character");
    run_free(&run);
    buf_free(&b);

    /* Found as soon as the bad byte arrives, before the message ends. */
    frame_str(&b, WS_OPCODE_TEXT, "fine so far \xff");
    expect_error(&b, 100, 100, -EILSEQ, WS_CLOSE_INVALID_DATA, &run);
    assert_string_equal(run.reason, "text message is not UTF-8");
    run_free(&run);
    buf_free(&b);
}

static void test_parse_close_frames(void **state)
{
    Buf b = {0};
    Run run;

    /* Empty: no code, reported as 1005. */
    frame(&b, FIN | WS_OPCODE_CLOSE, NULL, 0);
    parse(&b, 1, 10, 10, &run);
    assert_int_equal(run.r, 0);
    assert_int_equal(run.n, 1);
    assert_event_str(&run, 0, WS_OPCODE_CLOSE, "");
    assert_int_equal(run.events[0].close_code, WS_CLOSE_NO_STATUS);
    run_free(&run);
    buf_free(&b);

    /* Code only. */
    frame(&b, FIN | WS_OPCODE_CLOSE, "\x03\xe8", 2);
    parse(&b, 1, 10, 10, &run);
    assert_int_equal(run.r, 0);
    assert_event_str(&run, 0, WS_OPCODE_CLOSE, "");
    assert_int_equal(run.events[0].close_code, 1000);
    run_free(&run);
    buf_free(&b);

    /* Code and reason, the longest reason there can be. */
    uint8_t payload[WS_CONTROL_PAYLOAD_MAX];
    payload[0] = 0x0f; /* 4000 */
    payload[1] = 0xa0;
    memset(payload + 2, 'w', WS_CLOSE_REASON_MAX);
    frame(&b, FIN | WS_OPCODE_CLOSE, payload, sizeof(payload));
    parse(&b, SIZE_MAX, 10, 10, &run);
    assert_int_equal(run.r, 0);
    assert_event(&run, 0, WS_OPCODE_CLOSE, payload + 2, WS_CLOSE_REASON_MAX);
    assert_int_equal(run.events[0].close_code, 4000);
    run_free(&run);
    buf_free(&b);

    /* The stream is over after a close; what follows it in the same read is refused. */
    {
        _cleanup_ws_parser_ WsParser *p = NULL;
        assert_int_equal(ws_parser_new(10, 10, &p), 0);
        frame(&b, FIN | WS_OPCODE_CLOSE,
              "\x03\xe9"
              "bye",
              5);
        size_t close_len = b.len;
        frame_str(&b, FIN | WS_OPCODE_TEXT, "late");
        size_t used = 0;
        WsEvent ev;
        assert_int_equal(ws_parser_feed(p, b.data, b.len, &used, &ev), 1);
        assert_int_equal(used, close_len);
        assert_int_equal(ev.opcode, WS_OPCODE_CLOSE);
        assert_int_equal(ev.close_code, WS_CLOSE_GOING_AWAY);
        assert_int_equal(ev.len, 3);
        assert_memory_equal(ev.data, "bye", 3);
        used = 42;
        assert_int_equal(ws_parser_feed(p, b.data + close_len, b.len - close_len, &used, &ev),
                         -ESHUTDOWN);
        assert_int_equal(used, 42);
        assert_int_equal(ws_parser_error(p, NULL), 0); /* nothing of ours to send */
        buf_free(&b);
    }

    /* A close between the fragments of a message ends it all the same. */
    frame_str(&b, WS_OPCODE_TEXT, "half");
    frame(&b, FIN | WS_OPCODE_CLOSE, "\x03\xe8", 2);
    parse(&b, 1, 10, 10, &run);
    assert_int_equal(run.r, 0);
    assert_int_equal(run.n, 1);
    assert_int_equal(run.events[0].opcode, WS_OPCODE_CLOSE);
    run_free(&run);
    buf_free(&b);

    /* A 1-byte payload cannot hold a code. */
    frame(&b, FIN | WS_OPCODE_CLOSE, "\x03", 1);
    expect_error(&b, 10, 10, -EPROTO, WS_CLOSE_PROTOCOL_ERROR, &run);
    run_free(&run);
    buf_free(&b);

    static const uint16_t valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                     1010, 1011, 3000, 3999, 4000, 4999};
    for (size_t i = 0; i < ARRAY_SIZE(valid); i++) {
        uint8_t code[2] = {(uint8_t)(valid[i] >> 8), (uint8_t)valid[i]};
        frame(&b, FIN | WS_OPCODE_CLOSE, code, 2);
        parse(&b, SIZE_MAX, 10, 10, &run);
        assert_int_equal(run.r, 0);
        assert_int_equal(run.events[0].close_code, valid[i]);
        run_free(&run);
        buf_free(&b);
    }
    static const uint16_t invalid[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                                       1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < ARRAY_SIZE(invalid); i++) {
        uint8_t code[4] = {(uint8_t)(invalid[i] >> 8), (uint8_t)invalid[i], 'o', 'k'};
        frame(&b, FIN | WS_OPCODE_CLOSE, code, 4);
        expect_error(&b, 10, 10, -EPROTO, WS_CLOSE_PROTOCOL_ERROR, &run);
        assert_string_equal(run.reason, "invalid close code");
        run_free(&run);
        buf_free(&b);
    }

    /* The reason must be UTF-8. */
    frame(&b, FIN | WS_OPCODE_CLOSE,
          "\x03\xe8"
          "caf\xc3",
          6);
    expect_error(&b, 10, 10, -EILSEQ, WS_CLOSE_INVALID_DATA, &run);
    assert_string_equal(run.reason, "close reason is not UTF-8");
    run_free(&run);
    buf_free(&b);
    frame(&b, FIN | WS_OPCODE_CLOSE,
          "\x03\xe8"
          "caf\xc3\xa9",
          7);
    parse(&b, 1, 10, 10, &run);
    assert_int_equal(run.r, 0);
    assert_event_str(&run, 0, WS_OPCODE_CLOSE, "caf\xc3\xa9");
    run_free(&run);
    buf_free(&b);
}

static void test_parse_error_is_sticky(void **state)
{
    _cleanup_ws_parser_ WsParser *p = NULL;
    Buf good = {0}, bad = {0};
    const char *reason = NULL;
    size_t used;
    WsEvent ev;

    assert_int_equal(ws_parser_new(100, 100, &p), 0);
    frame_str(&good, FIN | WS_OPCODE_TEXT, "fine");
    client_frame(&bad, FIN | WS_OPCODE_TEXT, false, LEN_MIN, "x", 1);

    assert_int_equal(ws_parser_feed(p, good.data, good.len, &used, &ev), 1);
    assert_int_equal(ws_parser_error(p, &reason), 0);
    assert_null(reason); /* untouched while there is no error */

    assert_int_equal(ws_parser_feed(p, bad.data, bad.len, &used, &ev), -EPROTO);
    assert_int_equal(ws_parser_error(p, &reason), WS_CLOSE_PROTOCOL_ERROR);
    assert_string_equal(reason, "client frame not masked");

    /* Good frames after the error change nothing. */
    for (int i = 0; i < 3; i++) {
        used = 77;
        assert_int_equal(ws_parser_feed(p, good.data, good.len, &used, &ev), -EPROTO);
        assert_int_equal(used, 77);
        assert_int_equal(ws_parser_error(p, NULL), WS_CLOSE_PROTOCOL_ERROR);
    }
    assert_int_equal(ws_parser_feed(p, good.data, 0, &used, &ev), -EPROTO);

    /* The close frame to send says why. */
    uint8_t f[WS_CONTROL_FRAME_MAX];
    size_t len;
    assert_int_equal(ws_frame_close(ws_parser_error(p, NULL), reason, f, &len), 0);
    assert_memory_equal(f,
                        "\x88\x19\x03\xea"
                        "client frame not masked",
                        len);
    buf_free(&good);
    buf_free(&bad);

    /* The same for the other kinds of error. */
    ws_parser_free(TAKE_PTR(p));
    assert_int_equal(ws_parser_new(4, 4, &p), 0);
    frame_str(&bad, FIN | WS_OPCODE_BINARY, "12345");
    assert_int_equal(ws_parser_feed(p, bad.data, bad.len, &used, &ev), -EMSGSIZE);
    frame_str(&good, FIN | WS_OPCODE_BINARY, "1234");
    assert_int_equal(ws_parser_feed(p, good.data, good.len, &used, &ev), -EMSGSIZE);
    assert_int_equal(ws_parser_error(p, NULL), WS_CLOSE_MESSAGE_TOO_BIG);
    buf_free(&good);
    buf_free(&bad);

    ws_parser_free(TAKE_PTR(p));
    assert_int_equal(ws_parser_new(4, 4, &p), 0);
    frame_str(&bad, FIN | WS_OPCODE_TEXT, "\xff");
    assert_int_equal(ws_parser_feed(p, bad.data, bad.len, &used, &ev), -EILSEQ);
    frame_str(&good, FIN | WS_OPCODE_TEXT, "ok");
    assert_int_equal(ws_parser_feed(p, good.data, good.len, &used, &ev), -EILSEQ);
    assert_int_equal(ws_parser_error(p, NULL), WS_CLOSE_INVALID_DATA);
    buf_free(&good);
    buf_free(&bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key_rfc_example),
        cmocka_unit_test(test_accept_key_bad_keys),
        cmocka_unit_test(test_handshake_check),
        cmocka_unit_test(test_frame_header_lengths),
        cmocka_unit_test(test_frame_control_and_close),
        cmocka_unit_test(test_parser_new),
        cmocka_unit_test(test_parse_rfc_examples),
        cmocka_unit_test(test_parse_length_classes),
        cmocka_unit_test(test_parse_fragmented_with_ping),
        cmocka_unit_test(test_parse_chunking_is_invisible),
        cmocka_unit_test(test_parse_too_big),
        cmocka_unit_test(test_parse_protocol_errors),
        cmocka_unit_test(test_parse_invalid_utf8),
        cmocka_unit_test(test_parse_close_frames),
        cmocka_unit_test(test_parse_error_is_sticky),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
