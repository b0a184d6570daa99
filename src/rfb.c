/*
 * The filter is a pair of state machines, one per direction, that consume
 * the stream in units: a header or a small message the filter must see
 * whole (at most RFB_HOLD_MAX bytes, held by the caller until complete), or
 * a body it only counts down (pixels, text), forwarded or dropped as it
 * streams. A unit is looked at again from its first byte until it is
 * whole, so a state only changes once a unit is complete.
 *
 * The two directions share what each learns from the other: the protocol
 * version and security type the viewer chose, the types the server offered,
 * and the pixel format in effect. Each fact is learnt before the other side
 * may act on it (the server answers what the viewer sent, and the viewer
 * what the server sent), and a side that speaks out of turn is malformed.
 *
 * What is framed, and where it was checked (QEMU's ui/vnc.c, vnc-enc-*.c
 * and vnc-jobs.c; noVNC's core/rfb.js and decoders):
 *
 *   viewer: ProtocolVersion, security type (None or VNC auth and its
 *     16-byte response), ClientInit; then SetPixelFormat (20),
 *     SetEncodings (4 + 4n), FramebufferUpdateRequest (10), KeyEvent (8),
 *     PointerEvent (6), ClientCutText (8 + n), EnableContinuousUpdates (10),
 *     ClientFence (9 + n, n <= 64), xvp (4), SetDesktopSize (8 + 16n),
 *     QEMU 255: extended key event (12), audio enable/disable (4), audio
 *     format (10).
 *   server: ProtocolVersion, security (3.3: a u32 type; 3.7+: a list),
 *     VNC auth challenge, SecurityResult (+ reason from 3.8), ServerInit;
 *     then FramebufferUpdate, SetColourMapEntries (6 + 6n), Bell (1),
 *     ServerCutText (8 + n), EndOfContinuousUpdates (1), ServerFence
 *     (9 + n), xvp (4), QEMU 255 audio: begin/end (4), data (8 + n).
 *   rectangles: Raw (w*h*bpp), CopyRect (4), Hextile (tile by tile),
 *     ZRLE (u32 length + data), Tight and TightPNG (compression control,
 *     fill, JPEG, PNG, basic with copy, palette and gradient filters),
 *     DesktopSize (0), LastRect (0,
 *     ends the update), Cursor (w*h*4 + ceil(w/8)*h), ExtendedDesktopSize
 *     (4 + 16n), PointerTypeChange (0), QEMU extended key event (0), QEMU
 *     audio (0), QEMU LED state (1).
 *
 * The pixel format must be set before the first SetEncodings,
 * FramebufferUpdateRequest or EnableContinuousUpdates (noVNC sends it
 * first): QEMU writes updates already encoded, and cursors, in the format
 * in effect when they were produced, so a later change could not be placed
 * in the server stream. Hextile, Tight and Cursor are kept at 32 bits per
 * pixel only (what noVNC asks for): at fewer, QEMU's Hextile can wrap a
 * tile's count of 256 subrectangles to 0, its Tight palettes are broken at
 * 8 bits, and its cursor writes w*h*bpp*bpp/4 pixel bytes, which is w*h*bpp
 * at 4 only.
 */
#include "rfb.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Client message types (RFC 6143 7.5 and the community registry). */
enum {
    C_SET_PIXEL_FORMAT = 0,
    C_SET_ENCODINGS = 2,
    C_FRAMEBUFFER_UPDATE_REQUEST = 3,
    C_KEY_EVENT = 4,
    C_POINTER_EVENT = 5,
    C_CUT_TEXT = 6,
    C_ENABLE_CONTINUOUS_UPDATES = 150,
    C_FENCE = 248,
    C_XVP = 250,
    C_SET_DESKTOP_SIZE = 251,
    C_QEMU = 255,
};

/* Server message types. */
enum {
    S_FRAMEBUFFER_UPDATE = 0,
    S_SET_COLOUR_MAP_ENTRIES = 1,
    S_BELL = 2,
    S_CUT_TEXT = 3,
    S_END_OF_CONTINUOUS_UPDATES = 150,
    S_FENCE = 248,
    S_XVP = 250,
    S_QEMU = 255,
};

/* QEMU's 255 messages: subtypes, and the operations of its audio subtype. */
enum {
    QEMU_EXT_KEY_EVENT = 0,
    QEMU_AUDIO = 1,
    QEMU_AUDIO_ENABLE = 0, /* viewer; 4 bytes */
    QEMU_AUDIO_DISABLE = 1,
    QEMU_AUDIO_SET_FORMAT = 2, /* viewer; 10 bytes */
    QEMU_AUDIO_END = 0,        /* server; 4 bytes */
    QEMU_AUDIO_BEGIN = 1,
    QEMU_AUDIO_DATA = 2, /* server; 8 bytes + a u32 length of samples */
};

/* Encodings, as the signed 32-bit values on the wire. */
enum {
    ENC_RAW = 0,
    ENC_COPY_RECT = 1,
    ENC_HEXTILE = 5,
    ENC_TIGHT = 7,
    ENC_ZRLE = 16,
    ENC_QUALITY_0 = -32, /* to -23: JPEG quality, no rectangle of its own */
    ENC_DESKTOP_SIZE = -223,
    ENC_LAST_RECT = -224,
    ENC_CURSOR = -239,
    ENC_COMPRESS_0 = -256, /* to -247: zlib level, no rectangle of its own */
    ENC_POINTER_TYPE_CHANGE = -257,
    ENC_QEMU_EXT_KEY_EVENT = -258,
    ENC_QEMU_AUDIO = -259,
    ENC_TIGHT_PNG = -260,
    ENC_QEMU_LED_STATE = -261,
    ENC_EXTENDED_DESKTOP_SIZE = -308,
    ENC_XVP = -309,
};

/* A fence's payload: at most 64 bytes (the community registry, and noVNC). */
#define FENCE_PAYLOAD_MAX 64
/* Tight: data shorter than this is sent as is, without a length or zlib. */
#define TIGHT_MIN_TO_COMPRESS 12
/* Hextile: tiles of 16x16; subencoding bits (noVNC refuses anything above 30). */
#define HEXTILE_TILE 16
#define HEXTILE_RAW 0x01
#define HEXTILE_BACKGROUND 0x02
#define HEXTILE_FOREGROUND 0x04
#define HEXTILE_ANY_SUBRECTS 0x08
#define HEXTILE_SUBRECTS_COLOURED 0x10
#define HEXTILE_MAX 30

typedef enum {
    /* the viewer */
    CS_VERSION,
    CS_SECURITY,       /* 3.7+: the type the viewer picks */
    CS_AWAIT_SECURITY, /* 3.3: the server picks; nothing may come before it has */
    CS_VNC_AUTH,       /* the 16-byte response */
    CS_CLIENT_INIT,
    CS_MESSAGE,
    CS_ENCODINGS, /* count left */
    /* the server */
    SS_VERSION,
    SS_SECURITY,
    SS_SECURITY_TYPES, /* count left */
    SS_AWAIT_CHOICE,   /* until the viewer picks one */
    SS_VNC_CHALLENGE,
    SS_SECURITY_RESULT,
    SS_REASON, /* a u32 length, then the text, then nothing more */
    SS_END,
    SS_SERVER_INIT,
    SS_MESSAGE,
    SS_RECT, /* count left */
    SS_ZRLE,
    SS_EXTENDED_DESKTOP,
    SS_HEXTILE, /* tile of tiles */
    SS_TIGHT,
    SS_TIGHT_FILTER,
    SS_TIGHT_PALETTE,
    SS_TIGHT_DATA, /* tight_data bytes, raw or behind a compact length */
    SS_TIGHT_LENGTH,
} State;

typedef struct {
    State state;
    uint64_t body; /* bytes of the current body still to pass */
    RfbAction body_action;
    uint32_t count;
    /* The rectangle being read (server side). */
    uint16_t rect_w, rect_h;
    bool rect_png;
    uint64_t tight_data;
    uint32_t tile, tiles;
} Stream;

/* What the pixel format in effect means for lengths. */
typedef struct {
    uint8_t bytes;  /* per pixel: 1, 2 or 4; 0 while unknown */
    uint8_t tpixel; /* Tight's pixel: 3 when 32 bpp with 8-bit channels */
} Format;

struct RfbFilter {
    RfbClipboard clipboard;
    uint32_t cut_text_max;
    Stream streams[2]; /* by RfbDirection */
    uint64_t dropped[2];

    /* Learnt from one side, used by the other. */
    unsigned minor;   /* the protocol's: 3, 7 or 8; 0 until the viewer said */
    uint8_t security; /* the type in use: 1 None, 2 VNC auth; 0 until chosen */
    bool offered_known;
    uint8_t offered[256 / 8];
    Format format;
    bool format_from_viewer;
    bool updates_requested; /* a SetPixelFormat now would race updates on their way */

    bool failed;
    char error[96];
};

static uint16_t u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int32_t s32(const uint8_t *p)
{
    return (int32_t)u32(p);
}

static int fail(RfbFilter *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(RfbFilter *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->error, sizeof(f->error), fmt, ap);
    va_end(ap);
    f->failed = true;
    return -EBADMSG;
}

/* A unit of n bytes, complete when len >= n; its action is forward. */
static int unit(RfbSpan *span, size_t n)
{
    *span = (RfbSpan){.action = RFB_FORWARD, .len = n};
    return 0;
}

static int need_more(RfbSpan *span)
{
    *span = (RfbSpan){.action = RFB_FORWARD, .len = 0};
    return 0;
}

static void body(Stream *st, uint64_t len, RfbAction action)
{
    st->body = len;
    st->body_action = action;
}

/* "RFB xxx.yyy\n": 0 with the two numbers, or -1. */
static int parse_version(const uint8_t *p, unsigned *ret_major, unsigned *ret_minor)
{
    if (memcmp(p, "RFB ", 4) != 0 || p[7] != '.' || p[11] != '\n')
        return -1;
    unsigned major = 0, minor = 0;
    for (int i = 4; i < 11; i++) {
        if (i == 7)
            continue;
        if (p[i] < '0' || p[i] > '9')
            return -1;
        if (i < 7)
            major = major * 10 + (unsigned)(p[i] - '0');
        else
            minor = minor * 10 + (unsigned)(p[i] - '0');
    }
    *ret_major = major;
    *ret_minor = minor;
    return 0;
}

static Format format_of(unsigned bits, unsigned red_max, unsigned green_max, unsigned blue_max)
{
    Format fmt = {.bytes = (uint8_t)(bits / 8)};
    /* QEMU's tight_send_framebuffer_update: pixel24 for 4-byte pixels with 8-bit channels. */
    fmt.tpixel =
        fmt.bytes == 4 && red_max == 0xff && green_max == 0xff && blue_max == 0xff ? 3 : fmt.bytes;
    return fmt;
}

/* ServerInit's format: in effect until the viewer sets its own. */
static int server_format(RfbFilter *f, const uint8_t *p)
{
    unsigned bits = p[0];
    if (bits != 8 && bits != 16 && bits != 32)
        return fail(f, "server pixel format of %u bits per pixel", bits);
    if (!f->format_from_viewer)
        f->format = format_of(bits, u16(p + 4), u16(p + 6), u16(p + 8));
    return 0;
}

/* SetPixelFormat as QEMU's set_pixel_format applies it. */
static int viewer_format(RfbFilter *f, const uint8_t *p)
{
    unsigned bits = p[0];
    unsigned red_max = u16(p + 4), green_max = u16(p + 6), blue_max = u16(p + 8);
    if (!p[3]) {
        /* No true colour: QEMU picks an 8-bit colour map of its own. */
        bits = 8;
        red_max = 7, green_max = 7, blue_max = 3;
    }
    if (bits != 8 && bits != 16 && bits != 32)
        return fail(f, "SetPixelFormat with %u bits per pixel", bits);
    f->format = format_of(bits, red_max ? red_max : 0xff, green_max ? green_max : 0xff,
                          blue_max ? blue_max : 0xff);
    f->format_from_viewer = true;
    return 0;
}

/* Whether the server side can frame this encoding's rectangles (and nothing leaks by it). */
static bool encoding_framable(const RfbFilter *f, int32_t encoding)
{
    switch (encoding) {
    case ENC_RAW:
    case ENC_COPY_RECT:
    case ENC_ZRLE:
    case ENC_DESKTOP_SIZE:
    case ENC_LAST_RECT:
    case ENC_POINTER_TYPE_CHANGE:
    case ENC_QEMU_EXT_KEY_EVENT:
    case ENC_QEMU_AUDIO:
    case ENC_QEMU_LED_STATE:
    case ENC_EXTENDED_DESKTOP_SIZE:
    case ENC_XVP:
        return true;
    case ENC_HEXTILE:
    case ENC_TIGHT:
    case ENC_TIGHT_PNG:
    case ENC_CURSOR:
        return f->format.bytes == 4;
    default:
        return (encoding >= ENC_QUALITY_0 && encoding <= ENC_QUALITY_0 + 9) ||
               (encoding >= ENC_COMPRESS_0 && encoding <= ENC_COMPRESS_0 + 9);
    }
}

/* ---- the viewer's side ---- */

static int client_cut_text(RfbFilter *f, Stream *st, const uint8_t *p, RfbSpan *span)
{
    uint32_t raw = u32(p + 4);
    /* The extended form's length is negative: -(int32). */
    bool extended = raw & 0x80000000u;
    uint64_t len = extended ? 0x100000000ull - raw : raw;
    bool keep = f->clipboard == RFB_CLIPBOARD_TO_VM && !extended && len <= f->cut_text_max;
    RfbAction action = keep ? RFB_FORWARD : RFB_DROP;
    if (!keep)
        f->dropped[RFB_CLIENT]++;
    body(st, len, action);
    *span = (RfbSpan){.action = action, .len = 8};
    return 0;
}

static int client_qemu(RfbFilter *f, const uint8_t *p, size_t len, RfbSpan *span)
{
    if (len < 2)
        return need_more(span);
    if (p[1] == QEMU_EXT_KEY_EVENT)
        return len < 12 ? need_more(span) : unit(span, 12);
    if (p[1] != QEMU_AUDIO)
        return fail(f, "QEMU message of unknown subtype %u from the viewer", p[1]);
    if (len < 4)
        return need_more(span);
    switch (u16(p + 2)) {
    case QEMU_AUDIO_ENABLE:
    case QEMU_AUDIO_DISABLE:
        return unit(span, 4);
    case QEMU_AUDIO_SET_FORMAT:
        return len < 10 ? need_more(span) : unit(span, 10);
    default:
        return fail(f, "QEMU audio message of unknown operation %u from the viewer", u16(p + 2));
    }
}

static int client_message(RfbFilter *f, Stream *st, uint8_t *p, size_t len, RfbSpan *span)
{
    switch (p[0]) {
    case C_SET_PIXEL_FORMAT:
        if (len < 20)
            return need_more(span);
        if (f->updates_requested)
            return fail(f, "SetPixelFormat after updates were requested");
        if (viewer_format(f, p + 4) < 0)
            return -EBADMSG;
        return unit(span, 20);
    case C_SET_ENCODINGS:
        if (len < 4)
            return need_more(span);
        f->updates_requested = true;
        st->count = u16(p + 2);
        if (st->count > 0)
            st->state = CS_ENCODINGS;
        return unit(span, 4);
    case C_FRAMEBUFFER_UPDATE_REQUEST:
    case C_ENABLE_CONTINUOUS_UPDATES:
        if (len < 10)
            return need_more(span);
        f->updates_requested = true;
        return unit(span, 10);
    case C_KEY_EVENT:
        return len < 8 ? need_more(span) : unit(span, 8);
    case C_POINTER_EVENT:
        return len < 6 ? need_more(span) : unit(span, 6);
    case C_CUT_TEXT:
        return len < 8 ? need_more(span) : client_cut_text(f, st, p, span);
    case C_FENCE:
        if (len < 9)
            return need_more(span);
        if (p[8] > FENCE_PAYLOAD_MAX)
            return fail(f, "ClientFence of %u bytes", p[8]);
        body(st, p[8], RFB_FORWARD);
        return unit(span, 9);
    case C_XVP:
        return len < 4 ? need_more(span) : unit(span, 4);
    case C_SET_DESKTOP_SIZE:
        if (len < 8)
            return need_more(span);
        body(st, 16 * (uint64_t)p[6], RFB_FORWARD);
        return unit(span, 8);
    case C_QEMU:
        return client_qemu(f, p, len, span);
    default:
        return fail(f, "unknown message type %u from the viewer", p[0]);
    }
}

static int client_next(RfbFilter *f, Stream *st, uint8_t *p, size_t len, RfbSpan *span)
{
    unsigned major, minor;
    for (;;) {
        switch (st->state) {
        case CS_VERSION:
            if (len < 12)
                return need_more(span);
            if (parse_version(p, &major, &minor) < 0)
                return fail(f, "malformed ProtocolVersion from the viewer");
            /* QEMU's protocol_version: 3.3, 3.7, 3.8, and 3.4/3.5 taken as 3.3. */
            if (major != 3 || (minor != 3 && minor != 4 && minor != 5 && minor != 7 && minor != 8))
                return fail(f, "the viewer asked for RFB %u.%u", major, minor);
            f->minor = minor == 4 || minor == 5 ? 3 : minor;
            st->state = f->minor >= 7 ? CS_SECURITY : CS_AWAIT_SECURITY;
            return unit(span, 12);
        case CS_SECURITY:
            if (!f->offered_known)
                return fail(f, "the viewer chose a security type before any was offered");
            if (!(f->offered[p[0] / 8] & (1u << (p[0] % 8))))
                return fail(f, "the viewer chose security type %u, which was not offered", p[0]);
            if (p[0] != 1 && p[0] != 2)
                return fail(f, "security type %u cannot be followed", p[0]);
            f->security = p[0];
            st->state = p[0] == 2 ? CS_VNC_AUTH : CS_CLIENT_INIT;
            return unit(span, 1);
        case CS_AWAIT_SECURITY:
            if (f->security == 0)
                return fail(f, "the viewer spoke before the server chose a security type");
            st->state = f->security == 2 ? CS_VNC_AUTH : CS_CLIENT_INIT;
            continue;
        case CS_VNC_AUTH:
            if (len < 16)
                return need_more(span);
            st->state = CS_CLIENT_INIT;
            return unit(span, 16);
        case CS_CLIENT_INIT:
            st->state = CS_MESSAGE;
            return unit(span, 1);
        case CS_MESSAGE:
            return client_message(f, st, p, len, span);
        case CS_ENCODINGS:
            if (len < 4)
                return need_more(span);
            /* In place, so no length changes: Raw is harmless and always there. */
            if (!encoding_framable(f, s32(p)))
                memset(p, 0, 4);
            if (--st->count == 0)
                st->state = CS_MESSAGE;
            return unit(span, 4);
        default:
            return fail(f, "viewer stream in a server state");
        }
    }
}

/* ---- the server's side ---- */

/* After a rectangle: the next one, or the next message. */
static void rect_done(Stream *st)
{
    st->state = st->count > 0 ? SS_RECT : SS_MESSAGE;
}

static int server_rect(RfbFilter *f, Stream *st, const uint8_t *p, RfbSpan *span)
{
    uint64_t w = u16(p + 4), h = u16(p + 6);
    int32_t encoding = s32(p + 8);
    st->count--;
    rect_done(st);
    if (f->format.bytes == 0)
        return fail(f, "framebuffer update before the pixel format is known");
    switch (encoding) {
    case ENC_RAW:
        body(st, w * h * f->format.bytes, RFB_FORWARD);
        break;
    case ENC_COPY_RECT:
        body(st, 4, RFB_FORWARD);
        break;
    case ENC_ZRLE:
        st->state = SS_ZRLE;
        break;
    case ENC_HEXTILE:
        if (f->format.bytes != 4)
            return fail(f, "Hextile rectangle at %u bytes per pixel", f->format.bytes);
        st->rect_w = (uint16_t)w;
        st->rect_h = (uint16_t)h;
        st->tile = 0;
        st->tiles = (uint32_t)((w + HEXTILE_TILE - 1) / HEXTILE_TILE *
                               ((h + HEXTILE_TILE - 1) / HEXTILE_TILE));
        if (st->tiles > 0)
            st->state = SS_HEXTILE;
        break;
    case ENC_TIGHT:
    case ENC_TIGHT_PNG:
        if (f->format.bytes != 4)
            return fail(f, "Tight rectangle at %u bytes per pixel", f->format.bytes);
        st->rect_w = (uint16_t)w;
        st->rect_h = (uint16_t)h;
        st->rect_png = encoding == ENC_TIGHT_PNG;
        st->state = SS_TIGHT;
        break;
    case ENC_CURSOR:
        if (f->format.bytes != 4)
            return fail(f, "cursor at %u bytes per pixel", f->format.bytes);
        body(st, w * h * 4 + (w + 7) / 8 * h, RFB_FORWARD);
        break;
    case ENC_EXTENDED_DESKTOP_SIZE:
        st->state = SS_EXTENDED_DESKTOP;
        break;
    case ENC_QEMU_LED_STATE:
        body(st, 1, RFB_FORWARD);
        break;
    case ENC_LAST_RECT:
        st->count = 0;
        st->state = SS_MESSAGE;
        break;
    case ENC_DESKTOP_SIZE:
    case ENC_POINTER_TYPE_CHANGE:
    case ENC_QEMU_EXT_KEY_EVENT:
    case ENC_QEMU_AUDIO:
        break;
    default:
        return fail(f, "rectangle of encoding %d, which cannot be framed", encoding);
    }
    return unit(span, 12);
}

/*
 * One Hextile tile, as RFC 6143 7.7.4 (and noVNC) read it: a subencoding
 * byte, then raw pixels, or a background, a foreground and subrectangles
 * (with a colour each when coloured), as its bits say.
 */
static int server_hextile(RfbFilter *f, Stream *st, const uint8_t *p, size_t len, RfbSpan *span)
{
    unsigned sub = p[0];
    if (sub > HEXTILE_MAX)
        return fail(f, "Hextile subencoding %u", sub);
    uint32_t tiles_x = (st->rect_w + HEXTILE_TILE - 1u) / HEXTILE_TILE;
    uint64_t tx = st->tile % tiles_x * HEXTILE_TILE, ty = st->tile / tiles_x * HEXTILE_TILE;
    uint64_t tw = st->rect_w - tx < HEXTILE_TILE ? st->rect_w - tx : HEXTILE_TILE;
    uint64_t th = st->rect_h - ty < HEXTILE_TILE ? st->rect_h - ty : HEXTILE_TILE;
    uint8_t bpp = f->format.bytes;
    size_t n = 1;
    uint64_t data = 0;
    if (sub & HEXTILE_RAW) {
        data = tw * th * bpp;
    } else {
        n += (sub & HEXTILE_BACKGROUND ? bpp : 0) + (sub & HEXTILE_FOREGROUND ? bpp : 0);
        if (sub & HEXTILE_ANY_SUBRECTS) {
            if (len < n + 1)
                return need_more(span);
            data = p[n] * (uint64_t)(sub & HEXTILE_SUBRECTS_COLOURED ? bpp + 2 : 2);
            n++;
        }
    }
    if (len < n)
        return need_more(span);
    if (++st->tile == st->tiles)
        rect_done(st);
    body(st, data, RFB_FORWARD);
    return unit(span, n);
}

/* Tight's data: as is when short, else behind a compact length (zlib). */
static void tight_data(Stream *st, uint64_t len)
{
    st->tight_data = len;
    st->state = SS_TIGHT_DATA;
}

static int server_tight(RfbFilter *f, Stream *st, const uint8_t *p, size_t len, RfbSpan *span)
{
    uint64_t pixels = (uint64_t)st->rect_w * st->rect_h;
    uint8_t tpixel = f->format.tpixel;
    switch (st->state) {
    case SS_TIGHT: {
        unsigned type = p[0] >> 4; /* the low bits reset zlib streams */
        if (type == 8) {           /* fill */
            body(st, tpixel, RFB_FORWARD);
            rect_done(st);
        } else if (type == 9 || (type == 10 && st->rect_png)) { /* JPEG, PNG */
            st->state = SS_TIGHT_LENGTH;
        } else if (type <= 7 && (type & 4)) { /* basic, with a filter byte */
            st->state = SS_TIGHT_FILTER;
        } else if (type <= 7) { /* basic, copy filter */
            tight_data(st, pixels * tpixel);
        } else {
            return fail(f, "Tight compression control 0x%02x", p[0]);
        }
        return unit(span, 1);
    }
    case SS_TIGHT_FILTER:
        if (p[0] == 1) {
            st->state = SS_TIGHT_PALETTE;
        } else if (p[0] == 0 || p[0] == 2) { /* copy, gradient */
            tight_data(st, pixels * tpixel);
        } else {
            return fail(f, "Tight filter %u", p[0]);
        }
        return unit(span, 1);
    case SS_TIGHT_PALETTE: {
        unsigned colors = p[0] + 1u;
        body(st, (uint64_t)colors * tpixel, RFB_FORWARD);
        /* One bit a pixel for two colours (noVNC reads one colour the same way). */
        tight_data(st, colors <= 2 ? (st->rect_w + 7u) / 8 * (uint64_t)st->rect_h : pixels);
        return unit(span, 1);
    }
    case SS_TIGHT_LENGTH: {
        size_t n = 1;
        if (p[0] & 0x80) {
            if (len < 2)
                return need_more(span);
            n = 2;
            if (p[1] & 0x80) {
                if (len < 3)
                    return need_more(span);
                n = 3;
            }
        }
        uint64_t data = p[0] & 0x7f;
        if (n >= 2)
            data |= (uint64_t)(p[1] & 0x7f) << 7;
        if (n == 3)
            data |= (uint64_t)p[2] << 14;
        body(st, data, RFB_FORWARD);
        rect_done(st);
        return unit(span, n);
    }
    default:
        return fail(f, "server stream in a viewer state");
    }
}

static int server_message(RfbFilter *f, Stream *st, const uint8_t *p, size_t len, RfbSpan *span)
{
    switch (p[0]) {
    case S_FRAMEBUFFER_UPDATE:
        if (len < 4)
            return need_more(span);
        st->count = u16(p + 2);
        if (st->count > 0)
            st->state = SS_RECT;
        return unit(span, 4);
    case S_SET_COLOUR_MAP_ENTRIES:
        if (len < 6)
            return need_more(span);
        body(st, 6 * (uint64_t)u16(p + 4), RFB_FORWARD);
        return unit(span, 6);
    case S_BELL:
    case S_END_OF_CONTINUOUS_UPDATES:
        return unit(span, 1);
    case S_CUT_TEXT: {
        if (len < 8)
            return need_more(span);
        uint32_t raw = u32(p + 4);
        uint64_t text = raw & 0x80000000u ? 0x100000000ull - raw : raw;
        f->dropped[RFB_SERVER]++;
        body(st, text, RFB_DROP);
        *span = (RfbSpan){.action = RFB_DROP, .len = 8};
        return 0;
    }
    case S_FENCE:
        if (len < 9)
            return need_more(span);
        if (p[8] > FENCE_PAYLOAD_MAX)
            return fail(f, "ServerFence of %u bytes", p[8]);
        body(st, p[8], RFB_FORWARD);
        return unit(span, 9);
    case S_XVP:
        return len < 4 ? need_more(span) : unit(span, 4);
    case S_QEMU:
        if (len < 2)
            return need_more(span);
        if (p[1] != QEMU_AUDIO)
            return fail(f, "QEMU message of unknown subtype %u from the server", p[1]);
        if (len < 4)
            return need_more(span);
        switch (u16(p + 2)) {
        case QEMU_AUDIO_END:
        case QEMU_AUDIO_BEGIN:
            return unit(span, 4);
        case QEMU_AUDIO_DATA:
            if (len < 8)
                return need_more(span);
            body(st, u32(p + 4), RFB_FORWARD);
            return unit(span, 8);
        default:
            return fail(f, "QEMU audio message of unknown operation %u from the server",
                        u16(p + 2));
        }
    default:
        return fail(f, "unknown message type %u from the server", p[0]);
    }
}

static int server_next(RfbFilter *f, Stream *st, uint8_t *p, size_t len, RfbSpan *span)
{
    unsigned major, minor;
    for (;;) {
        switch (st->state) {
        case SS_VERSION:
            if (len < 12)
                return need_more(span);
            if (parse_version(p, &major, &minor) < 0)
                return fail(f, "malformed ProtocolVersion from the server");
            st->state = SS_SECURITY;
            return unit(span, 12);
        case SS_SECURITY:
            if (f->minor == 0)
                return fail(f, "the server spoke before the viewer chose a version");
            if (f->minor == 3) {
                if (len < 4)
                    return need_more(span);
                uint32_t type = u32(p);
                if (type == 0) {
                    st->state = SS_REASON;
                } else if (type == 1 || type == 2) {
                    f->security = (uint8_t)type;
                    st->state = type == 2 ? SS_VNC_CHALLENGE : SS_SERVER_INIT;
                } else {
                    return fail(f, "security type %u cannot be followed", type);
                }
                return unit(span, 4);
            }
            st->count = p[0];
            st->state = st->count > 0 ? SS_SECURITY_TYPES : SS_REASON;
            return unit(span, 1);
        case SS_SECURITY_TYPES:
            f->offered[p[0] / 8] |= (uint8_t)(1u << (p[0] % 8));
            if (--st->count == 0) {
                f->offered_known = true;
                st->state = SS_AWAIT_CHOICE;
            }
            return unit(span, 1);
        case SS_AWAIT_CHOICE:
            if (f->security == 0)
                return fail(f, "the server spoke before the viewer chose a security type");
            /* RFB 3.7 has no SecurityResult after None. */
            st->state = f->security == 2 ? SS_VNC_CHALLENGE
                        : f->minor >= 8  ? SS_SECURITY_RESULT
                                         : SS_SERVER_INIT;
            continue;
        case SS_VNC_CHALLENGE:
            if (len < 16)
                return need_more(span);
            st->state = SS_SECURITY_RESULT;
            return unit(span, 16);
        case SS_SECURITY_RESULT:
            if (len < 4)
                return need_more(span);
            st->state = u32(p) == 0 ? SS_SERVER_INIT : f->minor >= 8 ? SS_REASON : SS_END;
            return unit(span, 4);
        case SS_REASON:
            if (len < 4)
                return need_more(span);
            body(st, u32(p), RFB_FORWARD);
            st->state = SS_END;
            return unit(span, 4);
        case SS_END:
            return fail(f, "the server went on after refusing the connection");
        case SS_SERVER_INIT:
            if (len < 24)
                return need_more(span);
            if (server_format(f, p + 4) < 0)
                return -EBADMSG;
            body(st, u32(p + 20), RFB_FORWARD);
            st->state = SS_MESSAGE;
            return unit(span, 24);
        case SS_MESSAGE:
            return server_message(f, st, p, len, span);
        case SS_RECT:
            return len < 12 ? need_more(span) : server_rect(f, st, p, span);
        case SS_ZRLE:
            if (len < 4)
                return need_more(span);
            body(st, u32(p), RFB_FORWARD);
            rect_done(st);
            return unit(span, 4);
        case SS_EXTENDED_DESKTOP:
            if (len < 4)
                return need_more(span);
            body(st, 16 * (uint64_t)p[0], RFB_FORWARD);
            rect_done(st);
            return unit(span, 4);
        case SS_HEXTILE:
            return server_hextile(f, st, p, len, span);
        case SS_TIGHT_DATA:
            if (st->tight_data < TIGHT_MIN_TO_COMPRESS) {
                body(st, st->tight_data, RFB_FORWARD);
                rect_done(st);
            } else {
                st->state = SS_TIGHT_LENGTH;
            }
            if (st->body > 0)
                return need_more(span); /* rfb_filter_next() takes the body first */
            continue;
        case SS_TIGHT:
        case SS_TIGHT_FILTER:
        case SS_TIGHT_PALETTE:
        case SS_TIGHT_LENGTH:
            return server_tight(f, st, p, len, span);
        default:
            return fail(f, "server stream in a viewer state");
        }
    }
}

/* ---- the public side ---- */

int rfb_filter_new(RfbClipboard clipboard, uint32_t cut_text_max, RfbFilter **ret_filter)
{
    if (clipboard != RFB_CLIPBOARD_NONE && clipboard != RFB_CLIPBOARD_TO_VM &&
        clipboard != RFB_CLIPBOARD_BOTH)
        return -EINVAL;
    RfbFilter *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->clipboard = clipboard;
    f->cut_text_max = cut_text_max;
    f->streams[RFB_CLIENT].state = CS_VERSION;
    f->streams[RFB_SERVER].state = SS_VERSION;
    *ret_filter = f;
    return 0;
}

void rfb_filter_free(RfbFilter *filter)
{
    free(filter);
}

int rfb_filter_next(RfbFilter *f, RfbDirection dir, uint8_t *data, size_t len, RfbSpan *ret_span)
{
    if (f->failed)
        return -EBADMSG;
    Stream *st = &f->streams[dir];
    /* Both ways: nothing to take out, so nothing is read. */
    if (f->clipboard == RFB_CLIPBOARD_BOTH)
        return unit(ret_span, len);
    for (;;) {
        if (st->body > 0) {
            if (len == 0)
                return need_more(ret_span);
            size_t n = st->body < len ? (size_t)st->body : len;
            st->body -= n;
            *ret_span = (RfbSpan){.action = st->body_action, .len = n};
            return 0;
        }
        if (len == 0)
            return need_more(ret_span);
        RfbSpan span;
        int r = dir == RFB_CLIENT ? client_next(f, st, data, len, &span)
                                  : server_next(f, st, data, len, &span);
        if (r < 0)
            return r;
        if (span.len == 0 && st->body > 0)
            continue; /* a transition that opened a body */
        *ret_span = span;
        return 0;
    }
}

int rfb_filter_feed(RfbFilter *f, RfbDirection dir, uint8_t *data, size_t len, size_t *ret_kept,
                    size_t *ret_held)
{
    size_t in = 0, out = 0;
    while (in < len) {
        RfbSpan span;
        int r = rfb_filter_next(f, dir, data + in, len - in, &span);
        if (r < 0)
            return r;
        if (span.len == 0)
            break;
        if (span.action == RFB_FORWARD) {
            if (out != in)
                memmove(data + out, data + in, span.len);
            out += span.len;
        }
        in += span.len;
    }
    size_t held = len - in;
    if (held > 0 && out != in)
        memmove(data + out, data + in, held);
    *ret_kept = out;
    *ret_held = held;
    return 0;
}

const char *rfb_filter_error(const RfbFilter *filter)
{
    return filter->error;
}

uint64_t rfb_filter_cut_texts_dropped(const RfbFilter *filter, RfbDirection dir)
{
    return filter->dropped[dir];
}
