/*
 * The RFB filter on its own: streams built here byte by byte as noVNC and
 * QEMU write them, fed whole, one byte at a time and in random pieces (the
 * way the relay feeds it: what the filter holds goes in front of the next
 * piece), and compared with what must come out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rfb.h"

#define CUT_TEXT_MAX 1000
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* ---- bytes ---- */

typedef struct {
    uint8_t *data;
    size_t len, cap;
} Bytes;

static void bytes_free(Bytes *b)
{
    free(b->data);
    *b = (Bytes){0};
}

static void put(Bytes *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->data = realloc(b->data, cap);
        assert_non_null(b->data);
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void put8(Bytes *b, unsigned v)
{
    uint8_t x = (uint8_t)v;
    put(b, &x, 1);
}

static void put16(Bytes *b, unsigned v)
{
    put8(b, v >> 8);
    put8(b, v);
}

static void put32(Bytes *b, uint32_t v)
{
    put16(b, v >> 16);
    put16(b, v & 0xffff);
}

static void put_bytes(Bytes *dst, const Bytes *src)
{
    put(dst, src->data, src->len);
}

/* Bytes that often look like message types (0, 3, 6...), so a misframed body shows. */
static void filler(Bytes *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        put8(b, (unsigned)(i * 3 + seed) % 11);
}

/* ---- feeding, as the relay does ---- */

/*
 * Feeds data in pieces of `piece` bytes (0: whole; SIZE_MAX-ish seeds pick
 * random sizes), appending what the filter forwards to out. The bytes it
 * still holds at the end, or -errno.
 */
static long feed(RfbFilter *f, RfbDirection dir, const uint8_t *data, size_t len, size_t piece,
                 Bytes *out)
{
    uint8_t *buf = malloc(RFB_HOLD_MAX + len + 1);
    assert_non_null(buf);
    size_t held = 0, at = 0;
    uint32_t rng = (uint32_t)piece * 2654435761u + 1;
    while (at < len) {
        size_t n = len - at;
        if (piece > 0 && piece < 1000)
            n = MIN(piece, n);
        else if (piece >= 1000) {
            rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
            n = MIN(1 + rng % 37, n);
        }
        memcpy(buf + held, data + at, n);
        size_t kept, h;
        int r = rfb_filter_feed(f, dir, buf, held + n, &kept, &h);
        if (r < 0) {
            free(buf);
            return r;
        }
        assert_true(h < RFB_HOLD_MAX);
        put(out, buf, kept);
        memmove(buf, buf + kept, h);
        held = h;
        at += n;
    }
    free(buf);
    return (long)held;
}

/* The ways every stream is fed: whole, byte by byte, two odd sizes, random pieces. */
static const size_t pieces[] = {0, 1, 2, 7, 1001, 4242};
#define N_PIECES (sizeof(pieces) / sizeof(pieces[0]))

/* Feeds src and checks that exactly expect comes out. */
static void expect_out(RfbFilter *f, RfbDirection dir, const Bytes *src, const Bytes *expect,
                       size_t piece)
{
    Bytes out = {0};
    long held = feed(f, dir, src->data, src->len, piece, &out);
    if (held < 0)
        print_error("refused: %s\n", rfb_filter_error(f));
    assert_int_equal(held, 0);
    assert_int_equal(out.len, expect->len);
    if (out.len > 0)
        assert_memory_equal(out.data, expect->data, out.len);
    bytes_free(&out);
}

static void expect_same(RfbFilter *f, RfbDirection dir, const Bytes *src, size_t piece)
{
    expect_out(f, dir, src, src, piece);
}

static void expect_refused(RfbFilter *f, RfbDirection dir, const Bytes *src, size_t piece)
{
    Bytes out = {0};
    assert_int_equal(feed(f, dir, src->data, src->len, piece, &out), -EBADMSG);
    assert_true(rfb_filter_error(f)[0] != '\0');
    bytes_free(&out);
    /* For good, both ways. */
    uint8_t byte = 4, kept_byte = 0;
    size_t kept = 99, held = 99;
    assert_int_equal(rfb_filter_feed(f, RFB_CLIENT, &byte, 1, &kept, &held), -EBADMSG);
    assert_int_equal(rfb_filter_feed(f, RFB_SERVER, &kept_byte, 1, &kept, &held), -EBADMSG);
    assert_int_equal(kept, 99);
    assert_int_equal(held, 99);
}

/* ---- what the viewer sends (noVNC 1.3's layouts) ---- */

static void pixel_format(Bytes *b, unsigned bits, unsigned depth, bool true_colour, unsigned max)
{
    put8(b, bits);
    put8(b, depth);
    put8(b, 0); /* little-endian */
    put8(b, true_colour);
    put16(b, max);
    put16(b, max);
    put16(b, max);
    put8(b, 16);
    put8(b, 8);
    put8(b, 0);
    put8(b, 0), put8(b, 0), put8(b, 0);
}

static void set_pixel_format(Bytes *b, unsigned bits, unsigned depth, bool true_colour,
                             unsigned max)
{
    put8(b, 0);
    put8(b, 0), put8(b, 0), put8(b, 0);
    pixel_format(b, bits, depth, true_colour, max);
}

static void set_encodings(Bytes *b, const int32_t *encodings, size_t n)
{
    put8(b, 2);
    put8(b, 0);
    put16(b, (unsigned)n);
    for (size_t i = 0; i < n; i++)
        put32(b, (uint32_t)encodings[i]);
}

static void key_event(Bytes *b, bool down, uint32_t keysym)
{
    put8(b, 4);
    put8(b, down);
    put16(b, 0);
    put32(b, keysym);
}

static void cut_text(Bytes *b, unsigned type, const char *text, bool extended)
{
    uint32_t len = (uint32_t)strlen(text);
    put8(b, type);
    put8(b, 0), put8(b, 0), put8(b, 0);
    put32(b, extended ? (uint32_t) - (int32_t)len : len);
    put(b, text, len);
}

static void client_cut_text(Bytes *b, const char *text, bool extended)
{
    cut_text(b, 6, text, extended);
}

static void server_cut_text(Bytes *b, const char *text, bool extended)
{
    cut_text(b, 3, text, extended);
}

/* One of each message noVNC (and QEMU's own protocol) may send, in its own Bytes. */
enum { N_CLIENT_MESSAGES = 15 };

static void client_message(Bytes *b, int which)
{
    switch (which) {
    case 0: /* FramebufferUpdateRequest */
        put8(b, 3), put8(b, 1), put16(b, 0), put16(b, 0), put16(b, 1024), put16(b, 768);
        break;
    case 1: /* KeyEvent */
        key_event(b, true, 0x61);
        break;
    case 2: /* PointerEvent */
        put8(b, 5), put8(b, 1), put16(b, 300), put16(b, 6);
        break;
    case 3: /* EnableContinuousUpdates */
        put8(b, 150), put8(b, 1), put16(b, 0), put16(b, 0), put16(b, 640), put16(b, 480);
        break;
    case 4: /* ClientFence with a payload */
        put8(b, 248), put8(b, 0), put8(b, 0), put8(b, 0), put32(b, 0x80000003u), put8(b, 5);
        put(b, "\x06\x06\x06\x06\x06", 5);
        break;
    case 5: /* ClientFence, empty */
        put8(b, 248), put8(b, 0), put8(b, 0), put8(b, 0), put32(b, 0), put8(b, 0);
        break;
    case 6: /* xvp */
        put8(b, 250), put8(b, 0), put8(b, 1), put8(b, 2);
        break;
    case 7: /* SetDesktopSize, one screen (as noVNC) */
        put8(b, 251), put8(b, 0), put16(b, 1280), put16(b, 800), put8(b, 1), put8(b, 0);
        put32(b, 0), put16(b, 0), put16(b, 0), put16(b, 1280), put16(b, 800), put32(b, 0);
        break;
    case 8: /* SetDesktopSize, two screens */
        put8(b, 251), put8(b, 0), put16(b, 1280), put16(b, 800), put8(b, 2), put8(b, 0);
        filler(b, 32, 6);
        break;
    case 9: /* QEMU extended key event */
        put8(b, 255), put8(b, 0), put16(b, 1), put32(b, 0x61), put32(b, 0x1e);
        break;
    case 10: /* QEMU audio enable */
        put8(b, 255), put8(b, 1), put16(b, 0);
        break;
    case 11: /* QEMU audio disable */
        put8(b, 255), put8(b, 1), put16(b, 1);
        break;
    case 12: /* QEMU audio format */
        put8(b, 255), put8(b, 1), put16(b, 2), put8(b, 3), put8(b, 2), put32(b, 44100);
        break;
    case 13: { /* SetEncodings of what passes every filter */
        static const int32_t encs[] = {0, 1, 16, -223, -224, -308, -258};
        set_encodings(b, encs, sizeof(encs) / sizeof(encs[0]));
        break;
    }
    case 14: /* SetEncodings, empty */
        set_encodings(b, NULL, 0);
        break;
    default:
        fail();
    }
}

/* ---- what the server sends (QEMU's layouts) ---- */

static void fbu(Bytes *b, unsigned rects)
{
    put8(b, 0), put8(b, 0), put16(b, rects);
}

static void rect(Bytes *b, unsigned w, unsigned h, int32_t encoding)
{
    put16(b, 1), put16(b, 2), put16(b, w), put16(b, h), put32(b, (uint32_t)encoding);
}

static void server_init(Bytes *b, unsigned bits)
{
    put16(b, 1024), put16(b, 768);
    pixel_format(b, bits, bits == 32 ? 24 : bits, true, bits == 32 ? 255 : 31);
    put32(b, 4);
    put(b, "QEMU", 4);
}

/* ---- the handshake, in the order the two sides take turns ---- */

static RfbFilter *filter_new(RfbClipboard clipboard)
{
    RfbFilter *f = NULL;
    assert_int_equal(rfb_filter_new(clipboard, CUT_TEXT_MAX, &f), 0);
    return f;
}

/* RFB 3.8, security None, a server at `bits` per pixel: everything passes both ways. */
static RfbFilter *connected(RfbClipboard clipboard, unsigned bits, size_t piece)
{
    RfbFilter *f = filter_new(clipboard);
    Bytes b = {0};
    put(&b, "RFB 003.008\n", 12);
    expect_same(f, RFB_SERVER, &b, piece);
    expect_same(f, RFB_CLIENT, &b, piece);
    b.len = 0;
    put8(&b, 2), put8(&b, 1), put8(&b, 2); /* None and VNC auth offered */
    expect_same(f, RFB_SERVER, &b, piece);
    b.len = 0;
    put8(&b, 1), put8(&b, 1); /* None; ClientInit, shared */
    expect_same(f, RFB_CLIENT, &b, piece);
    b.len = 0;
    put32(&b, 0);
    server_init(&b, bits);
    expect_same(f, RFB_SERVER, &b, piece);
    bytes_free(&b);
    return f;
}

/* ---- the viewer's side ---- */

static void test_new_refuses_unknown_mode(void **state)
{
    (void)state;
    RfbFilter *f = (RfbFilter *)&f;
    assert_int_equal(rfb_filter_new((RfbClipboard)7, 10, &f), -EINVAL);
    assert_ptr_equal(f, (RfbFilter *)&f);
    rfb_filter_free(NULL);
}

/*
 * Every message type framed right: each one followed by a ClientCutText
 * and a KeyEvent, clipboard none. A message framed a byte too short or
 * long would misplace the cut text: it would pass, or the stream break.
 */
static void test_client_messages_framed(void **state)
{
    (void)state;
    for (size_t p = 0; p < N_PIECES; p++) {
        RfbFilter *f = connected(RFB_CLIPBOARD_NONE, 32, pieces[p]);
        Bytes src = {0}, expect = {0}, m = {0};
        set_pixel_format(&src, 32, 24, true, 255);
        put_bytes(&expect, &src);
        for (int i = 0; i < N_CLIENT_MESSAGES; i++) {
            m.len = 0;
            client_message(&m, i);
            put_bytes(&src, &m);
            put_bytes(&expect, &m);
            client_cut_text(&src, "\x04secret\x06", i % 2);
            key_event(&src, false, 0x61);
            key_event(&expect, false, 0x61);
        }
        expect_out(f, RFB_CLIENT, &src, &expect, pieces[p]);
        assert_int_equal(rfb_filter_cut_texts_dropped(f, RFB_CLIENT), N_CLIENT_MESSAGES);
        assert_int_equal(rfb_filter_cut_texts_dropped(f, RFB_SERVER), 0);
        assert_string_equal(rfb_filter_error(f), "");
        bytes_free(&src);
        bytes_free(&expect);
        bytes_free(&m);
        rfb_filter_free(f);
    }
}

/* The spans themselves: one per message, the cut text's header and text dropped. */
static void test_client_spans(void **state)
{
    (void)state;
    RfbFilter *f = connected(RFB_CLIPBOARD_NONE, 32, 0);
    Bytes src = {0};
    key_event(&src, true, 0x62);
    client_cut_text(&src, "hello", false);
    put8(&src, 5), put8(&src, 0), put16(&src, 1); /* the start of a PointerEvent */

    RfbSpan span;
    assert_int_equal(rfb_filter_next(f, RFB_CLIENT, src.data, src.len, &span), 0);
    assert_int_equal(span.action, RFB_FORWARD);
    assert_int_equal(span.len, 8);
    assert_int_equal(rfb_filter_next(f, RFB_CLIENT, src.data + 8, src.len - 8, &span), 0);
    assert_int_equal(span.action, RFB_DROP);
    assert_int_equal(span.len, 8);
    /* The text, in two pieces as it comes. */
    assert_int_equal(rfb_filter_next(f, RFB_CLIENT, src.data + 16, 2, &span), 0);
    assert_int_equal(span.action, RFB_DROP);
    assert_int_equal(span.len, 2);
    assert_int_equal(rfb_filter_next(f, RFB_CLIENT, src.data + 18, src.len - 18, &span), 0);
    assert_int_equal(span.action, RFB_DROP);
    assert_int_equal(span.len, 3);
    /* Four bytes of a six-byte event: not yet. */
    assert_int_equal(rfb_filter_next(f, RFB_CLIENT, src.data + 21, src.len - 21, &span), 0);
    assert_int_equal(span.len, 0);
    bytes_free(&src);
    rfb_filter_free(f);
}

static void test_client_cut_text_modes(void **state)
{
    (void)state;
    static const struct {
        RfbClipboard clipboard;
        bool plain, extended; /* kept */
    } modes[] = {
        {RFB_CLIPBOARD_NONE, false, false},
        {RFB_CLIPBOARD_TO_VM, true, false},
        {RFB_CLIPBOARD_BOTH, true, true},
    };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        for (size_t p = 0; p < N_PIECES; p++) {
            RfbFilter *f = connected(modes[i].clipboard, 32, pieces[p]);
            Bytes src = {0}, expect = {0}, m = {0};
            key_event(&src, true, 0x41);
            key_event(&expect, true, 0x41);
            client_cut_text(&m, "plain text", false);
            put_bytes(&src, &m);
            if (modes[i].plain)
                put_bytes(&expect, &m);
            m.len = 0;
            /* An extended Provide: flags, then zlib data. */
            client_cut_text(&m, "\x10\x01\x01\x01zlib\x06\x03", true);
            put_bytes(&src, &m);
            if (modes[i].extended)
                put_bytes(&expect, &m);
            key_event(&src, false, 0x41);
            key_event(&expect, false, 0x41);
            expect_out(f, RFB_CLIENT, &src, &expect, pieces[p]);
            assert_int_equal(rfb_filter_cut_texts_dropped(f, RFB_CLIENT),
                             !modes[i].plain + !modes[i].extended);
            bytes_free(&src);
            bytes_free(&expect);
            bytes_free(&m);
            rfb_filter_free(f);
        }
    }
}

/* Text longer than the cap is dropped even where text may pass; the cap itself passes. */
static void test_client_cut_text_cap(void **state)
{
    (void)state;
    char *text = malloc(CUT_TEXT_MAX + 2);
    assert_non_null(text);
    memset(text, 'x', CUT_TEXT_MAX + 1);
    text[CUT_TEXT_MAX + 1] = '\0';
    for (size_t p = 0; p < N_PIECES; p++) {
        RfbFilter *f = connected(RFB_CLIPBOARD_TO_VM, 32, pieces[p]);
        Bytes src = {0}, expect = {0};
        client_cut_text(&src, text, false); /* one byte over */
        text[CUT_TEXT_MAX] = '\0';
        client_cut_text(&expect, text, false); /* exactly the cap */
        put_bytes(&src, &expect);
        text[CUT_TEXT_MAX] = 'x';
        expect_out(f, RFB_CLIENT, &src, &expect, pieces[p]);
        assert_int_equal(rfb_filter_cut_texts_dropped(f, RFB_CLIENT), 1);
        bytes_free(&src);
        bytes_free(&expect);
        rfb_filter_free(f);
    }
    free(text);
}

/*
 * The longest lengths either form can declare (2 GiB - 1 plain, 2 GiB
 * extended) are skipped as they stream: every piece is one dropped span,
 * nothing is held, and the message after it passes.
 */
static void test_client_cut_text_huge_skipped(void **state)
{
    (void)state;
    enum { PIECE = 1024 * 1024 };
    static const struct {
        RfbClipboard clipboard;
        uint32_t raw;
        uint64_t text;
    } cases[] = {
        {RFB_CLIPBOARD_NONE, 0x7fffffffu, 0x7fffffffu},
        {RFB_CLIPBOARD_NONE, 0x80000000u, 0x80000000u},
        {RFB_CLIPBOARD_TO_VM, 0x7fffffffu, 0x7fffffffu},
        {RFB_CLIPBOARD_TO_VM, 0x80000000u, 0x80000000u},
    };
    uint8_t *piece = calloc(1, PIECE);
    assert_non_null(piece);
    memset(piece, 6, PIECE);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        RfbFilter *f = connected(cases[i].clipboard, 32, 0);
        Bytes head = {0};
        put8(&head, 6), put8(&head, 0), put8(&head, 0), put8(&head, 0);
        put32(&head, cases[i].raw);
        size_t kept = 1, held = 1;
        assert_int_equal(rfb_filter_feed(f, RFB_CLIENT, head.data, head.len, &kept, &held), 0);
        assert_int_equal(kept, 0);
        assert_int_equal(held, 0);
        uint64_t left = cases[i].text;
        while (left > 0) {
            size_t n = left < PIECE ? (size_t)left : PIECE;
            assert_int_equal(rfb_filter_feed(f, RFB_CLIENT, piece, n, &kept, &held), 0);
            assert_int_equal(kept, 0);
            assert_int_equal(held, 0);
            left -= n;
        }
        head.len = 0;
        key_event(&head, true, 0x20);
        expect_same(f, RFB_CLIENT, &head, 0);
        assert_int_equal(rfb_filter_cut_texts_dropped(f, RFB_CLIENT), 1);
        bytes_free(&head);
        rfb_filter_free(f);
    }
    free(piece);
}

/* noVNC 1.3's list, plus ZRLE and a few QEMU knows. */
static const int32_t novnc_encodings[] = {
    1,
    7,
    -260,
    5,
    2,
    0,
    -32 + 6,
    -256 + 2,
    -223,
    -224,
    -258,
    -308,
    -309,
    -312,
    -313,
    -307,
    (int32_t)0xc0a1e5ce,
    0x574d5664,
    -239,
    16,
    -261,
    -257,
    -259,
    6,
    17,
    -314,
    (int32_t)0x574d5669,
};
#define N_NOVNC (sizeof(novnc_encodings) / sizeof(novnc_encodings[0]))

/* What the filter leaves of that list: at 32 bpp, and at 16. */
static const int32_t kept_32[N_NOVNC] = {
    1, 7, -260, 5, 0,    0,  -32 + 6, -256 + 2, -223, -224, -258, -308, -309, 0,
    0, 0, 0,    0, -239, 16, -261,    -257,     -259, 0,    0,    0,    0,
};
static const int32_t kept_16[N_NOVNC] = {
    1, 0, 0, 0, 0, 0,  -32 + 6, -256 + 2, -223, -224, -258, -308, -309, 0,
    0, 0, 0, 0, 0, 16, -261,    -257,     -259, 0,    0,    0,    0,
};

static void test_set_encodings_rewritten(void **state)
{
    (void)state;
    for (size_t p = 0; p < N_PIECES; p++) {
        for (RfbClipboard c = RFB_CLIPBOARD_NONE; c <= RFB_CLIPBOARD_BOTH; c++) {
            /* The server's 32 bpp, then the viewer's 16 bpp, set before the encodings. */
            for (int bits = 32; bits >= 16; bits -= 16) {
                RfbFilter *f = connected(c, 32, pieces[p]);
                Bytes src = {0}, expect = {0};
                if (bits == 16) {
                    set_pixel_format(&src, 16, 16, true, 31);
                    put_bytes(&expect, &src);
                }
                set_encodings(&src, novnc_encodings, N_NOVNC);
                set_encodings(&expect,
                              c == RFB_CLIPBOARD_BOTH ? novnc_encodings
                              : bits == 32            ? kept_32
                                                      : kept_16,
                              N_NOVNC);
                key_event(&src, true, 1);
                key_event(&expect, true, 1);
                expect_out(f, RFB_CLIENT, &src, &expect, pieces[p]);
                bytes_free(&src);
                bytes_free(&expect);
                rfb_filter_free(f);
            }
        }
    }
}

/* Updates already on their way are in the old format: a later change cannot be followed. */
static void test_set_pixel_format_after_updates_refused(void **state)
{
    (void)state;
    for (int which = 0; which < 3; which++) {
        RfbFilter *f = connected(RFB_CLIPBOARD_NONE, 32, 0);
        Bytes src = {0};
        set_pixel_format(&src, 32, 24, true, 255); /* before: fine */
        static const int32_t raw[] = {0};
        if (which == 0)
            set_encodings(&src, raw, 1);
        else
            client_message(&src, which == 1 ? 0 : 3); /* FramebufferUpdateRequest, ECU */
        expect_same(f, RFB_CLIENT, &src, 0);
        src.len = 0;
        set_pixel_format(&src, 16, 16, true, 31);
        expect_refused(f, RFB_CLIENT, &src, 1);
        bytes_free(&src);
        rfb_filter_free(f);
    }
}

static void test_client_unknown_refused(void **state)
{
    (void)state;
    static const uint8_t bad[][4] = {
        {7, 0, 0, 0},   /* no such type */
        {1, 0, 0, 0},   /* nor this */
        {127, 0, 0, 0}, /* VMware's */
        {255, 2, 0, 0}, /* a QEMU subtype QEMU does not know */
        {255, 1, 0, 3}, /* an audio operation QEMU does not know */
        {248, 0, 0, 0}, /* a fence, then 65 bytes (below) */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (int whole = 0; whole < 2; whole++) {
            RfbFilter *f = connected(RFB_CLIPBOARD_NONE, 32, 0);
            Bytes src = {0};
            key_event(&src, true, 0x61);
            expect_same(f, RFB_CLIENT, &src, 0);
            src.len = 0;
            put(&src, bad[i], 4);
            if (bad[i][0] == 248)
                put32(&src, 0), put8(&src, 65), filler(&src, 65, 1);
            else
                put32(&src, 0), put32(&src, 0), put32(&src, 0);
            expect_refused(f, RFB_CLIENT, &src, whole ? 0 : 1);
            bytes_free(&src);
            rfb_filter_free(f);
        }
    }
}

/* ---- the handshake's variants ---- */

typedef struct {
    RfbDirection dir;
    const char *bytes; /* as a C string: hex pairs */
} Turn;

static unsigned hex_digit(char c)
{
    assert_non_null(strchr("0123456789abcdef", c));
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)(c - 'a' + 10);
}

/* Hex pairs; spaces between pairs are for the reader. */
static void put_hex(Bytes *b, const char *hex)
{
    for (const char *p = hex; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        assert_true(p[1] != '\0' && p[1] != ' ');
        put8(b, hex_digit(p[0]) << 4 | hex_digit(p[1]));
        p += 2;
    }
}

/* Plays the turns; the last one is refused when refused, all pass otherwise. */
static void play(const Turn *turns, size_t n, bool refused)
{
    for (size_t p = 0; p < N_PIECES; p++) {
        RfbFilter *f = filter_new(RFB_CLIPBOARD_NONE);
        Bytes b = {0};
        for (size_t i = 0; i < n; i++) {
            b.len = 0;
            put_hex(&b, turns[i].bytes);
            if (refused && i == n - 1)
                expect_refused(f, turns[i].dir, &b, pieces[p]);
            else
                expect_same(f, turns[i].dir, &b, pieces[p]);
        }
        bytes_free(&b);
        rfb_filter_free(f);
    }
}

#define V38 "524642203030332e3030380a" /* "RFB 003.008\n" */
#define V37 "524642203030332e3030370a"
#define V33 "524642203030332e3030330a"
#define V35 "524642203030332e3030350a"
#define CHALLENGE "000102030405060708090a0b0c0d0e0f"
/* ServerInit: 640x480, 32 bpp depth 24 true colour, name "Q". */
#define SERVER_INIT "0280 01e0 20 18 00 01 00ff 00ff 00ff 10 08 00 000000 00000001 51"
/* A FramebufferUpdate with one 2x1 Raw rectangle at 32 bpp, then a Bell. */
#define RAW_2X1 "00000001 0000000000020001 00000000 0303030303030303 02"

static void test_handshake_variants(void **state)
{
    (void)state;
    /* 3.8, None: SecurityResult, ServerInit, then messages. */
    const Turn none38[] = {
        {RFB_SERVER, V38},
        {RFB_CLIENT, V38},
        {RFB_SERVER, "0101"},
        {RFB_CLIENT, "01 01"},
        {RFB_SERVER, "00000000" SERVER_INIT RAW_2X1},
    };
    play(none38, sizeof(none38) / sizeof(none38[0]), false);
    /* 3.7, None: no SecurityResult. */
    const Turn none37[] = {
        {RFB_SERVER, V38},
        {RFB_CLIENT, V37},
        {RFB_SERVER, "0101"},
        {RFB_CLIENT, "01 01"},
        {RFB_SERVER, SERVER_INIT RAW_2X1},
    };
    play(none37, sizeof(none37) / sizeof(none37[0]), false);
    /* 3.8, VNC auth: challenge, response, result. */
    const Turn vnc38[] = {
        {RFB_SERVER, V38},
        {RFB_CLIENT, V38},
        {RFB_SERVER, "0102"},
        {RFB_CLIENT, "02"},
        {RFB_SERVER, CHALLENGE},
        {RFB_CLIENT, CHALLENGE "01"},
        {RFB_SERVER, "00000000" SERVER_INIT RAW_2X1},
    };
    play(vnc38, sizeof(vnc38) / sizeof(vnc38[0]), false);
    /* 3.3 (and 3.5, taken as 3.3): the server picks, as a u32. */
    const Turn none33[] = {
        {RFB_SERVER, V38},
        {RFB_CLIENT, V33},
        {RFB_SERVER, "00000001"},
        {RFB_CLIENT, "01"},
        {RFB_SERVER, SERVER_INIT RAW_2X1},
    };
    play(none33, sizeof(none33) / sizeof(none33[0]), false);
    const Turn vnc35[] = {
        {RFB_SERVER, V38},       {RFB_CLIENT, V35},  {RFB_SERVER, "00000002" CHALLENGE},
        {RFB_CLIENT, CHALLENGE}, {RFB_CLIENT, "01"}, {RFB_SERVER, "00000000" SERVER_INIT},
    };
    play(vnc35, sizeof(vnc35) / sizeof(vnc35[0]), false);
    /* A refusal with its reason; nothing may follow. */
    const Turn refused[] = {
        {RFB_SERVER, V38},
        {RFB_CLIENT, V38},
        {RFB_SERVER, "00 00000002 6e6f"},
        {RFB_SERVER, "00"},
    };
    play(refused, sizeof(refused) / sizeof(refused[0]), true);
    const Turn failed[] = {
        {RFB_SERVER, V38},
        {RFB_CLIENT, V38},
        {RFB_SERVER, "0102"},
        {RFB_CLIENT, "02"},
        {RFB_SERVER, CHALLENGE},
        {RFB_CLIENT, CHALLENGE},
        {RFB_SERVER, "00000001 00000003 626164"},
        {RFB_SERVER, "00"},
    };
    play(failed, sizeof(failed) / sizeof(failed[0]), true);
    /* Before 3.8 a failure has no reason: the next byte is already too many. */
    const Turn failed33[] = {
        {RFB_SERVER, V38},       {RFB_CLIENT, V33},        {RFB_SERVER, "00000002" CHALLENGE},
        {RFB_CLIENT, CHALLENGE}, {RFB_SERVER, "00000001"}, {RFB_SERVER, "00"},
    };
    play(failed33, sizeof(failed33) / sizeof(failed33[0]), true);
}

static void test_handshake_refused(void **state)
{
    (void)state;
    /* Versions QEMU does not speak, or no version at all. */
    const Turn v4[] = {{RFB_CLIENT, "524642203030342e3030300a"}};
    play(v4, 1, true);
    const Turn v36[] = {{RFB_CLIENT, "524642203030332e3030360a"}};
    play(v36, 1, true);
    const Turn junk[] = {{RFB_CLIENT, "474554202f20485454502f31"}};
    play(junk, 1, true);
    /* A type the server did not offer, or one the filter cannot follow (VeNCrypt). */
    const Turn unoffered[] = {
        {RFB_SERVER, V38}, {RFB_CLIENT, V38}, {RFB_SERVER, "0101"}, {RFB_CLIENT, "02"}};
    play(unoffered, 4, true);
    const Turn vencrypt[] = {
        {RFB_SERVER, V38}, {RFB_CLIENT, V38}, {RFB_SERVER, "0113"}, {RFB_CLIENT, "13"}};
    play(vencrypt, 4, true);
    /* Out of turn: the viewer before the server's choice, the server before the viewer's. */
    const Turn early_viewer[] = {{RFB_SERVER, V38}, {RFB_CLIENT, V33 "01"}};
    play(early_viewer, 2, true);
    const Turn early_choice[] = {{RFB_CLIENT, V38 "01"}};
    play(early_choice, 1, true);
    const Turn early_server[] = {
        {RFB_SERVER, V38}, {RFB_CLIENT, V38}, {RFB_SERVER, "0101 00000000"}};
    play(early_server, 3, true);
    const Turn server_first[] = {{RFB_SERVER, V38 "0101"}};
    play(server_first, 1, true);
}

/* ---- the server's side ---- */

/* Tight rectangles as QEMU's vnc-enc-tight.c writes them at 32 bpp (3-byte pixels). */
static void tight_rects(Bytes *b, int32_t encoding)
{
    rect(b, 9, 9, encoding); /* fill */
    put8(b, 0x80), put8(b, 0x03), put8(b, 0x06), put8(b, 0x00);
    rect(b, 2, 1, encoding); /* full colour, under 12 bytes: as is */
    put8(b, 0x00), filler(b, 6, 1);
    rect(b, 10, 10, encoding); /* full colour, zlib behind a 2-byte length (200) */
    put8(b, 0x01), put8(b, 0xc8), put8(b, 0x01), filler(b, 200, 2);
    rect(b, 16, 2, encoding); /* mono: 2 colours, one bit a pixel, 4 bytes as is */
    put8(b, 0x50), put8(b, 1), put8(b, 1), filler(b, 6, 3), filler(b, 4, 4);
    rect(b, 4, 4, encoding); /* palette of 5, 16 bytes of indices behind a length (5) */
    put8(b, 0x60), put8(b, 1), put8(b, 4), filler(b, 15, 5), put8(b, 5), filler(b, 5, 6);
    rect(b, 2, 1, encoding); /* gradient, 6 bytes as is */
    put8(b, 0x70), put8(b, 2), filler(b, 6, 7);
    rect(b, 100, 100, encoding); /* JPEG behind a 3-byte length (20000) */
    put8(b, 0x90), put8(b, 0xa0), put8(b, 0x9c), put8(b, 0x01), filler(b, 20000, 8);
    rect(b, 0, 0, encoding); /* empty: no data at all */
    put8(b, 0x00);
    rect(b, 4, 1, encoding); /* exactly 12 bytes: compressed, behind a 1-byte length */
    put8(b, 0x00), put8(b, 3), filler(b, 3, 9);
}

/*
 * Updates of every framable encoding with cut text between them: what
 * must come out is the same stream without the cut text (none, to_vm), or
 * all of it (both).
 */
static void server_stream(Bytes *src, Bytes *expect, bool keep_text)
{
    Bytes m = {0};
    /* Raw 3x2 at 32 bpp, CopyRect, ZRLE, Cursor 9x2, ExtendedDesktopSize, pseudo-rects. */
    fbu(&m, 10);
    rect(&m, 3, 2, 0), filler(&m, 24, 1);
    rect(&m, 5, 5, 1), put16(&m, 3), put16(&m, 6);
    rect(&m, 64, 64, 16), put32(&m, 10), filler(&m, 10, 2);
    rect(&m, 9, 2, -239), filler(&m, 9 * 2 * 4 + 2 * 2, 3);
    rect(&m, 1024, 768, -308), put8(&m, 2), put8(&m, 0), put16(&m, 0), filler(&m, 32, 4);
    rect(&m, 1024, 768, -223);
    rect(&m, 1, 1, -261), put8(&m, 3);
    rect(&m, 1024, 768, -258);
    rect(&m, 1024, 768, -257);
    rect(&m, 1024, 768, -259);
    put_bytes(src, &m), put_bytes(expect, &m), m.len = 0;

    server_cut_text(&m, "\x03\x01guest secret", false);
    put_bytes(src, &m);
    if (keep_text)
        put_bytes(expect, &m);
    m.len = 0;

    /* LastRect ends an update that announced more. */
    fbu(&m, 0xffff), rect(&m, 2, 2, 1), put32(&m, 0), rect(&m, 0, 0, -224);
    put8(&m, 2);                                                             /* Bell */
    put8(&m, 1), put8(&m, 0), put16(&m, 0), put16(&m, 2), filler(&m, 12, 5); /* colour map */
    fbu(&m, 0);
    put_bytes(src, &m), put_bytes(expect, &m), m.len = 0;

    /* The extended form, as QEMU's vnc-clipboard.c sends it: a Notify. */
    put8(&m, 3), put8(&m, 0), put8(&m, 0), put8(&m, 0), put32(&m, (uint32_t)-4);
    put32(&m, 0x08000001);
    put_bytes(src, &m);
    if (keep_text)
        put_bytes(expect, &m);
    m.len = 0;

    /* Hextile 20x18 (4 tiles: 16x16, 4x16, 16x2, 4x2) as QEMU writes each kind of tile. */
    fbu(&m, 2);
    rect(&m, 20, 18, 5);
    put8(&m, 0x01), filler(&m, 16 * 16 * 4, 12);                        /* raw */
    put8(&m, 0x0e), filler(&m, 8, 13), put8(&m, 2), filler(&m, 4, 14);  /* bg, fg, 2 subrects */
    put8(&m, 0x1a), filler(&m, 4, 15), put8(&m, 3), filler(&m, 18, 16); /* bg, 3 coloured */
    put8(&m, 0x00);    /* the same background: nothing more */
    rect(&m, 0, 5, 5); /* no tiles at all */
    put_bytes(src, &m), put_bytes(expect, &m), m.len = 0;

    fbu(&m, 9);
    tight_rects(&m, 7);
    fbu(&m, 2);
    rect(&m, 30, 30, -260), put8(&m, 0xa0), put8(&m, 0x05), filler(&m, 5, 9); /* PNG */
    rect(&m, 3, 3, -260), put8(&m, 0x80), filler(&m, 3, 10);
    put8(&m, 250), put8(&m, 0), put8(&m, 1), put8(&m, 0);                      /* xvp init */
    put8(&m, 255), put8(&m, 1), put16(&m, 1);                                  /* audio begin */
    put8(&m, 255), put8(&m, 1), put16(&m, 2), put32(&m, 7), filler(&m, 7, 11); /* data */
    put8(&m, 255), put8(&m, 1), put16(&m, 0);                                  /* audio end */
    put8(&m, 150);                                                             /* ECU end */
    put8(&m, 248), put8(&m, 0), put8(&m, 0), put8(&m, 0), put32(&m, 0), put8(&m, 2);
    put8(&m, 3), put8(&m, 3); /* ServerFence and its payload */
    put_bytes(src, &m), put_bytes(expect, &m), m.len = 0;

    server_cut_text(&m, "", false); /* empty, last */
    put_bytes(src, &m);
    if (keep_text)
        put_bytes(expect, &m);
    bytes_free(&m);
}

static void test_server_stream_filtered(void **state)
{
    (void)state;
    for (RfbClipboard c = RFB_CLIPBOARD_NONE; c <= RFB_CLIPBOARD_BOTH; c++) {
        for (size_t p = 0; p < N_PIECES; p++) {
            RfbFilter *f = connected(c, 32, pieces[p]);
            Bytes src = {0}, expect = {0};
            server_stream(&src, &expect, c == RFB_CLIPBOARD_BOTH);
            expect_out(f, RFB_SERVER, &src, &expect, pieces[p]);
            assert_int_equal(rfb_filter_cut_texts_dropped(f, RFB_SERVER),
                             c == RFB_CLIPBOARD_BOTH ? 0 : 3);
            bytes_free(&src);
            bytes_free(&expect);
            rfb_filter_free(f);
        }
    }
}

/* Tight's compact length uses all 8 bits of its third byte: 2 MiB + 1 here. */
static void test_tight_long_length(void **state)
{
    (void)state;
    RfbFilter *f = connected(RFB_CLIPBOARD_NONE, 32, 0);
    Bytes src = {0}, expect = {0};
    fbu(&src, 1), rect(&src, 1024, 768, 7);
    put8(&src, 0x90), put8(&src, 0x81), put8(&src, 0x80), put8(&src, 0x80);
    filler(&src, (1u << 21) + 1, 1);
    put_bytes(&expect, &src);
    server_cut_text(&src, "after the JPEG", false);
    put8(&src, 2), put8(&expect, 2);
    expect_out(f, RFB_SERVER, &src, &expect, 0);
    bytes_free(&src);
    bytes_free(&expect);
    rfb_filter_free(f);
}

/* Raw in the server's format, then in the viewer's: 32, then 16, then 8 bpp (colour map). */
static void test_server_raw_follows_pixel_format(void **state)
{
    (void)state;
    for (size_t p = 0; p < N_PIECES; p++) {
        for (int which = 0; which < 3; which++) {
            RfbFilter *f = connected(RFB_CLIPBOARD_NONE, 32, pieces[p]);
            Bytes src = {0}, expect = {0};
            unsigned bytes = 4;
            if (which > 0) {
                Bytes c = {0};
                if (which == 1)
                    set_pixel_format(&c, 16, 16, true, 31), bytes = 2;
                else
                    set_pixel_format(&c, 32, 24, false, 255), bytes = 1; /* QEMU: 8 bpp */
                expect_same(f, RFB_CLIENT, &c, pieces[p]);
                bytes_free(&c);
            }
            if (which == 2) { /* QEMU's colour map for it */
                put8(&src, 1), put8(&src, 0), put16(&src, 0), put16(&src, 256);
                filler(&src, 256 * 6, 1);
            }
            fbu(&src, 2);
            rect(&src, 7, 3, 0), filler(&src, 7 * 3 * bytes, 2);
            rect(&src, 1, 1, 0), filler(&src, bytes, 3);
            put_bytes(&expect, &src);
            server_cut_text(&src, "hidden", false);
            put8(&src, 2), put8(&expect, 2);
            expect_out(f, RFB_SERVER, &src, &expect, pieces[p]);
            bytes_free(&src);
            bytes_free(&expect);
            rfb_filter_free(f);
        }
    }
}

/* A viewer's pixel format sent before ServerInit arrives still wins, as in QEMU. */
static void test_viewer_format_wins_over_server_init(void **state)
{
    (void)state;
    RfbFilter *f = filter_new(RFB_CLIPBOARD_NONE);
    Bytes b = {0}, expect = {0};
    put_hex(&b, V38);
    expect_same(f, RFB_SERVER, &b, 0);
    expect_same(f, RFB_CLIENT, &b, 0);
    b.len = 0;
    put_hex(&b, "0101");
    expect_same(f, RFB_SERVER, &b, 0);
    b.len = 0;
    put_hex(&b, "01 01");
    set_pixel_format(&b, 16, 16, true, 31);
    expect_same(f, RFB_CLIENT, &b, 0);
    b.len = 0;
    put32(&b, 0), server_init(&b, 32);
    fbu(&b, 1), rect(&b, 2, 2, 0), filler(&b, 8, 1);
    put_bytes(&expect, &b);
    server_cut_text(&b, "x", true);
    expect_out(f, RFB_SERVER, &b, &expect, 1);
    bytes_free(&b);
    bytes_free(&expect);
    rfb_filter_free(f);
}

static void test_server_unframable_refused(void **state)
{
    (void)state;
    for (int which = 0; which < 10; which++) {
        bool at_16 = which == 3 || which == 4 || which == 9;
        RfbFilter *f = connected(RFB_CLIPBOARD_NONE, at_16 ? 16 : 32, 0);
        Bytes src = {0};
        switch (which) {
        case 0: /* Zlib: one stream for every rectangle, never asked for */
            fbu(&src, 1), rect(&src, 16, 16, 6), put32(&src, 4), filler(&src, 4, 1);
            break;
        case 1: /* an unknown pseudo-encoding */
            fbu(&src, 1), rect(&src, 1, 1, -1000);
            break;
        case 2: /* an unknown message type */
            put8(&src, 4), filler(&src, 10, 1);
            break;
        case 3: /* Tight at 16 bpp */
            fbu(&src, 1), rect(&src, 2, 2, 7), put8(&src, 0x80), put16(&src, 0);
            break;
        case 4: /* a cursor at 16 bpp */
            fbu(&src, 1), rect(&src, 2, 2, -239), filler(&src, 10, 1);
            break;
        case 5: /* PNG in a plain Tight rectangle */
            fbu(&src, 1), rect(&src, 2, 2, 7), put8(&src, 0xa0), put8(&src, 1), put8(&src, 0);
            break;
        case 6: /* a Tight compression control that does not exist */
            fbu(&src, 1), rect(&src, 2, 2, 7), put8(&src, 0xb0), filler(&src, 10, 1);
            break;
        case 7: /* QEMU's 255 with a subtype other than audio */
            put8(&src, 255), put8(&src, 0), put16(&src, 0);
            break;
        case 8: /* a Hextile subencoding noVNC refuses */
            fbu(&src, 1), rect(&src, 4, 4, 5), put8(&src, 31), filler(&src, 64, 1);
            break;
        case 9: /* Hextile at 16 bpp */
            fbu(&src, 1), rect(&src, 4, 4, 5), put8(&src, 1), filler(&src, 32, 1);
            break;
        }
        expect_refused(f, RFB_SERVER, &src, which % 2 ? 1 : 0);
        bytes_free(&src);
        rfb_filter_free(f);
    }
}

/* Both ways allowed: the server's bytes pass unread, whatever they are. */
static void test_server_unread_for_both(void **state)
{
    (void)state;
    RfbFilter *f = filter_new(RFB_CLIPBOARD_BOTH);
    Bytes src = {0};
    filler(&src, 5000, 3);
    for (size_t p = 0; p < N_PIECES; p++)
        expect_same(f, RFB_SERVER, &src, pieces[p]);
    bytes_free(&src);
    rfb_filter_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_refuses_unknown_mode),
        cmocka_unit_test(test_client_messages_framed),
        cmocka_unit_test(test_client_spans),
        cmocka_unit_test(test_client_cut_text_modes),
        cmocka_unit_test(test_client_cut_text_cap),
        cmocka_unit_test(test_client_cut_text_huge_skipped),
        cmocka_unit_test(test_set_encodings_rewritten),
        cmocka_unit_test(test_set_pixel_format_after_updates_refused),
        cmocka_unit_test(test_client_unknown_refused),
        cmocka_unit_test(test_handshake_variants),
        cmocka_unit_test(test_handshake_refused),
        cmocka_unit_test(test_server_stream_filtered),
        cmocka_unit_test(test_tight_long_length),
        cmocka_unit_test(test_server_raw_follows_pixel_format),
        cmocka_unit_test(test_viewer_format_wins_over_server_init),
        cmocka_unit_test(test_server_unframable_refused),
        cmocka_unit_test(test_server_unread_for_both),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
