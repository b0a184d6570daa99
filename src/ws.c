#include "ws.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 6455 section 1.3: what the server appends to the client's key before hashing. */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* Base64 of 16 bytes: 22 characters and "==". */
#define WS_CLIENT_KEY_LEN 24
#define SHA1_LEN 20
/* First growth step of the message buffer, so small messages cost one small allocation. */
#define WS_MESSAGE_INITIAL 4096

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/*
 * UTF-8 checked one byte at a time, so a text message can be checked while
 * its fragments arrive and a bad byte is refused at once. The range of the
 * first continuation byte is what rules out overlong forms (E0, F0),
 * surrogates (ED) and code points past U+10FFFF (F4).
 */
typedef struct {
    uint8_t need; /* continuation bytes still expected */
    uint8_t lo, hi;
} Utf8State;

static bool utf8_step(Utf8State *s, uint8_t c)
{
    if (s->need > 0) {
        if (c < s->lo || c > s->hi)
            return false;
        s->need--;
        s->lo = 0x80;
        s->hi = 0xbf;
        return true;
    }
    if (c < 0x80)
        return true;
    s->lo = 0x80;
    s->hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        s->need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        s->need = 2;
        if (c == 0xe0)
            s->lo = 0xa0;
        else if (c == 0xed)
            s->hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        s->need = 3;
        if (c == 0xf0)
            s->lo = 0x90;
        else if (c == 0xf4)
            s->hi = 0x8f;
    } else {
        return false; /* 80-C1 cannot start a character, F5-FF never occur */
    }
    return true;
}

static bool utf8_valid(const uint8_t *data, size_t len)
{
    Utf8State s = {0};
    for (size_t i = 0; i < len; i++)
        if (!utf8_step(&s, data[i]))
            return false;
    return s.need == 0;
}

static bool opcode_known(unsigned opcode)
{
    switch (opcode) {
    case WS_OPCODE_CONTINUATION:
    case WS_OPCODE_TEXT:
    case WS_OPCODE_BINARY:
    case WS_OPCODE_CLOSE:
    case WS_OPCODE_PING:
    case WS_OPCODE_PONG:
        return true;
    default:
        return false;
    }
}

static bool opcode_is_control(unsigned opcode)
{
    return (opcode & 0x8) != 0;
}

/*
 * The codes an endpoint may put in a close frame (RFC 6455 section 7.4):
 * 1004 is reserved, 1005, 1006 and 1015 only stand for conditions and
 * never travel, the rest of 1000-2999 is unassigned, 3000-4999 belong to
 * libraries and applications.
 */
static bool close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

/* ---- handshake ---- */

static bool header_too_long(const char *value)
{
    return strnlen(value, WS_HEADER_MAX + 1) > WS_HEADER_MAX;
}

/* HTTP's optional whitespace around a value or a list element. */
static void trim(const char *start, const char *end, const char **ret_start, size_t *ret_len)
{
    while (start < end && (*start == ' ' || *start == '\t'))
        start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *ret_start = start;
    *ret_len = (size_t)(end - start);
}

/* Whether a comma-separated header value holds token, compared case-insensitively. */
static bool token_list_has(const char *list, const char *token)
{
    size_t token_len = strlen(token);
    const char *p = list;
    for (;;) {
        const char *end = p + strcspn(p, ",");
        const char *element;
        size_t len;
        trim(p, end, &element, &len);
        if (len == token_len && strncasecmp(element, token, len) == 0)
            return true;
        if (*end == '\0')
            return false;
        p = end + 1;
    }
}

static int base64_value(char c)
{
    const char *hit = c ? strchr(base64_alphabet, c) : NULL;
    return hit ? (int)(hit - base64_alphabet) : -1;
}

/* The key without its surrounding whitespace, if it is the base64 of exactly 16 bytes. */
static int client_key_parse(const char *key, const char **ret_key)
{
    const char *start;
    size_t len;
    if (!key || header_too_long(key))
        return -EINVAL;
    trim(key, key + strlen(key), &start, &len);
    if (len != WS_CLIENT_KEY_LEN || start[22] != '=' || start[23] != '=')
        return -EINVAL;
    for (size_t i = 0; i < 22; i++)
        if (base64_value(start[i]) < 0)
            return -EINVAL;
    /* 22 characters carry 132 bits; only 128 are the key, the last 4 must be 0. */
    if (base64_value(start[21]) & 0xf)
        return -EINVAL;
    *ret_key = start;
    return 0;
}

static void base64_encode(const uint8_t *data, size_t len, char *ret)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len)
            v |= data[i + 2];
        ret[o++] = base64_alphabet[(v >> 18) & 0x3f];
        ret[o++] = base64_alphabet[(v >> 12) & 0x3f];
        ret[o++] = i + 1 < len ? base64_alphabet[(v >> 6) & 0x3f] : '=';
        ret[o++] = i + 2 < len ? base64_alphabet[v & 0x3f] : '=';
    }
    ret[o] = '\0';
}

static int fail_handshake(const char **ret_reason, int r, const char *reason)
{
    if (ret_reason)
        *ret_reason = reason;
    return r;
}

int ws_handshake_check(const char *upgrade, const char *connection, const char *version,
                       const char *key, const char **ret_reason)
{
    const char *start, *key_start;
    size_t len;

    if (!upgrade || header_too_long(upgrade) || !token_list_has(upgrade, "websocket"))
        return fail_handshake(ret_reason, -EINVAL, "Upgrade must be websocket");
    if (!connection || header_too_long(connection) || !token_list_has(connection, "upgrade"))
        return fail_handshake(ret_reason, -EINVAL, "Connection must include Upgrade");
    if (!version || header_too_long(version))
        return fail_handshake(ret_reason, -EINVAL, "Sec-WebSocket-Version is missing");
    trim(version, version + strlen(version), &start, &len);
    if (len != 2 || memcmp(start, "13", 2) != 0)
        return fail_handshake(ret_reason, -EPROTONOSUPPORT, "only WebSocket version 13 is spoken");
    if (client_key_parse(key, &key_start) < 0)
        return fail_handshake(ret_reason, -EINVAL,
                              "Sec-WebSocket-Key must be the base64 of 16 bytes");
    return 0;
}

int ws_accept_key(const char *client_key, char ret[WS_ACCEPT_KEY_LEN])
{
    char text[WS_CLIENT_KEY_LEN + sizeof(WS_GUID) - 1];
    uint8_t digest[SHA1_LEN];
    const char *key;
    int r = client_key_parse(client_key, &key);
    if (r < 0)
        return r;
    memcpy(text, key, WS_CLIENT_KEY_LEN);
    memcpy(text + WS_CLIENT_KEY_LEN, WS_GUID, sizeof(WS_GUID) - 1);
    if (gnutls_hash_fast(GNUTLS_DIG_SHA1, text, sizeof(text), digest) < 0)
        return -EIO;
    base64_encode(digest, sizeof(digest), ret);
    return 0;
}

/* ---- parser ---- */

typedef enum {
    PARSE_HEADER,  /* collecting the header bytes of the next frame */
    PARSE_PAYLOAD, /* unmasking the current frame's payload */
    PARSE_FAILED,  /* an error was found; error/error_code say which */
    PARSE_CLOSED,  /* the peer's close frame was delivered */
} ParseState;

/* 2 bytes, 8 of extended length, 4 of mask. */
#define WS_CLIENT_HEADER_MAX 14

struct WsParser {
    size_t max_frame;
    size_t max_message;
    ParseState state;

    uint8_t header[WS_CLIENT_HEADER_MAX];
    size_t header_len;  /* bytes collected so far */
    size_t header_need; /* the header's full length, known once 2 bytes are in */

    /* The frame being read. */
    unsigned opcode;
    bool fin;
    uint8_t mask[4];
    uint64_t frame_len;
    uint64_t frame_pos;

    /* The data message being reassembled, from its first frame to the one with FIN. */
    bool in_message;
    WsOpcode message_opcode;
    uint8_t *message;
    size_t message_len;
    size_t message_cap;
    Utf8State utf8;

    uint8_t control[WS_CONTROL_PAYLOAD_MAX];

    int error;
    uint16_t error_code;
    const char *error_reason;
};

/* Stands in for a buffer that was never needed, so an event's data is never NULL. */
static const uint8_t empty_payload[1];

int ws_parser_new(size_t max_frame, size_t max_message, WsParser **ret_parser)
{
    if (max_frame == 0 || max_message == 0)
        return -EINVAL;
    WsParser *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->max_frame = max_frame;
    p->max_message = max_message;
    p->state = PARSE_HEADER;
    *ret_parser = p;
    return 0;
}

void ws_parser_free(WsParser *parser)
{
    if (!parser)
        return;
    free(parser->message);
    free(parser);
}

uint16_t ws_parser_error(const WsParser *parser, const char **ret_reason)
{
    if (parser->state != PARSE_FAILED)
        return 0;
    if (ret_reason)
        *ret_reason = parser->error_reason;
    return parser->error_code;
}

static int parser_fail(WsParser *p, int r, uint16_t code, const char *reason)
{
    p->state = PARSE_FAILED;
    p->error = r;
    p->error_code = code;
    p->error_reason = reason;
    return r;
}

static int protocol_error(WsParser *p, const char *reason)
{
    return parser_fail(p, -EPROTO, WS_CLOSE_PROTOCOL_ERROR, reason);
}

/*
 * Makes room for a message of need bytes, doubling so a message in many
 * fragments costs few copies. The caller has checked need against
 * max_message; the check here keeps the loop finite whatever happens.
 */
static int message_reserve(WsParser *p, size_t need)
{
    if (need <= p->message_cap)
        return 0;
    if (need > p->max_message)
        return parser_fail(p, -EMSGSIZE, WS_CLOSE_MESSAGE_TOO_BIG, "message too big");
    size_t cap = p->message_cap ? p->message_cap : WS_MESSAGE_INITIAL;
    while (cap < need)
        cap = cap > p->max_message / 2 ? p->max_message : cap * 2;
    if (cap > p->max_message)
        cap = p->max_message;
    uint8_t *message = realloc(p->message, cap);
    if (!message)
        return parser_fail(p, -ENOMEM, WS_CLOSE_INTERNAL_ERROR, "out of memory");
    p->message = message;
    p->message_cap = cap;
    return 0;
}

/*
 * The first two bytes decide everything but the length and the mask, so a
 * bad frame is refused before the rest of its header is even read.
 */
static int header_start(WsParser *p)
{
    uint8_t b0 = p->header[0], b1 = p->header[1];
    unsigned len7 = b1 & 0x7f;

    p->opcode = b0 & 0x0f;
    p->fin = (b0 & 0x80) != 0;
    if (b0 & 0x70)
        return protocol_error(p, "reserved bits set without an extension");
    if (!opcode_known(p->opcode))
        return protocol_error(p, "unknown opcode");
    if (!(b1 & 0x80))
        return protocol_error(p, "client frame not masked");
    if (opcode_is_control(p->opcode)) {
        if (!p->fin)
            return protocol_error(p, "fragmented control frame");
        if (len7 > WS_CONTROL_PAYLOAD_MAX)
            return protocol_error(p, "control frame longer than 125 bytes");
    } else if (p->opcode == WS_OPCODE_CONTINUATION) {
        if (!p->in_message)
            return protocol_error(p, "continuation frame without a message");
    } else if (p->in_message) {
        return protocol_error(p, "new message before the last one ended");
    }
    p->header_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + sizeof(p->mask);
    return 0;
}

/* Delivers what a finished frame completes, if anything: 1 with an event, 0 without. */
static int frame_done(WsParser *p, WsEvent *ret_event)
{
    p->state = PARSE_HEADER;
    p->header_len = 0;

    if (p->opcode == WS_OPCODE_PING || p->opcode == WS_OPCODE_PONG) {
        *ret_event = (WsEvent){.opcode = p->opcode, .data = p->control, .len = p->frame_len};
        return 1;
    }
    if (p->opcode == WS_OPCODE_CLOSE) {
        uint16_t code = WS_CLOSE_NO_STATUS;
        size_t reason_len = 0;
        if (p->frame_len == 1)
            return protocol_error(p, "close frame with a 1-byte payload");
        if (p->frame_len >= 2) {
            code = (uint16_t)(p->control[0] << 8 | p->control[1]);
            reason_len = p->frame_len - 2;
            if (!close_code_valid(code))
                return protocol_error(p, "invalid close code");
            if (!utf8_valid(p->control + 2, reason_len))
                return parser_fail(p, -EILSEQ, WS_CLOSE_INVALID_DATA, "close reason is not UTF-8");
        }
        p->state = PARSE_CLOSED;
        *ret_event = (WsEvent){.opcode = WS_OPCODE_CLOSE,
                               .data = p->control + (p->frame_len >= 2 ? 2 : 0),
                               .len = reason_len,
                               .close_code = code};
        return 1;
    }

    if (!p->fin)
        return 0;
    if (p->message_opcode == WS_OPCODE_TEXT && p->utf8.need > 0)
        return parser_fail(p, -EILSEQ, WS_CLOSE_INVALID_DATA,
                           "text message ends inside a character");
    p->in_message = false;
    *ret_event = (WsEvent){.opcode = p->message_opcode,
                           .data = p->message ? p->message : empty_payload,
                           .len = p->message_len};
    return 1;
}

/* With the whole header in: the length, its limits, the mask. */
static int header_done(WsParser *p, WsEvent *ret_event)
{
    const uint8_t *h = p->header + 2;
    unsigned len7 = p->header[1] & 0x7f;
    uint64_t len = len7;

    if (len7 == 126) {
        len = (uint64_t)h[0] << 8 | h[1];
        h += 2;
        if (len < 126)
            return protocol_error(p, "length not in its shortest form");
    } else if (len7 == 127) {
        len = 0;
        for (size_t i = 0; i < 8; i++)
            len = len << 8 | h[i];
        h += 8;
        if (len >> 63)
            return protocol_error(p, "64-bit length with the top bit set");
        if (len <= 0xffff)
            return protocol_error(p, "length not in its shortest form");
    }
    memcpy(p->mask, h, sizeof(p->mask));
    p->frame_len = len;
    p->frame_pos = 0;

    if (!opcode_is_control(p->opcode)) {
        size_t base = p->opcode == WS_OPCODE_CONTINUATION ? p->message_len : 0;
        if (len > p->max_frame)
            return parser_fail(p, -EMSGSIZE, WS_CLOSE_MESSAGE_TOO_BIG, "frame too big");
        /* base <= max_message always holds, so this cannot wrap. */
        if (len > p->max_message - base)
            return parser_fail(p, -EMSGSIZE, WS_CLOSE_MESSAGE_TOO_BIG, "message too big");
        if (p->opcode != WS_OPCODE_CONTINUATION) {
            p->in_message = true;
            p->message_opcode = p->opcode;
            p->message_len = 0;
            p->utf8 = (Utf8State){0};
        }
        int r = message_reserve(p, base + (size_t)len);
        if (r < 0)
            return r;
    }

    p->state = PARSE_PAYLOAD;
    if (len == 0)
        return frame_done(p, ret_event);
    return 0;
}

/* Unmasks what there is of the payload into its buffer; returns the bytes used. */
/*
 * XORs with the mask eight bytes at a time: a viewer's every keystroke and
 * pointer move goes through here. The mask repeats every four bytes, so
 * the same eight-byte pattern holds from any position.
 */
static void unmask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4], uint64_t pos)
{
    uint8_t pattern[8];
    for (size_t k = 0; k < 8; k++)
        pattern[k] = mask[(pos + k) & 3];
    uint64_t m;
    memcpy(&m, pattern, sizeof(m));
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, sizeof(v));
        v ^= m;
        memcpy(dst + i, &v, sizeof(v));
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ mask[(pos + i) & 3];
}

static int payload_take(WsParser *p, const uint8_t *data, size_t len, size_t *ret_used)
{
    uint64_t left = p->frame_len - p->frame_pos;
    size_t n = left < len ? (size_t)left : len;
    bool control = opcode_is_control(p->opcode);
    bool text = !control && p->message_opcode == WS_OPCODE_TEXT;
    uint8_t *dst = control ? p->control + p->frame_pos : p->message + p->message_len;

    unmask(dst, data, n, p->mask, p->frame_pos);
    for (size_t i = 0; text && i < n; i++) {
        if (!utf8_step(&p->utf8, dst[i]))
            return parser_fail(p, -EILSEQ, WS_CLOSE_INVALID_DATA, "text message is not UTF-8");
    }
    p->frame_pos += n;
    if (!control)
        p->message_len += n;
    *ret_used = n;
    return 0;
}

int ws_parser_feed(WsParser *parser, const void *data, size_t len, size_t *ret_consumed,
                   WsEvent *ret_event)
{
    WsParser *p = parser;
    const uint8_t *bytes = data;
    size_t i = 0;
    int r = 0;

    if (p->state == PARSE_FAILED)
        return p->error;
    if (p->state == PARSE_CLOSED)
        return -ESHUTDOWN;

    while (i < len) {
        r = 0;
        if (p->state == PARSE_HEADER) {
            p->header[p->header_len++] = bytes[i++];
            if (p->header_len == 2) {
                r = header_start(p);
                if (r < 0)
                    return r;
            }
            if (p->header_len >= 2 && p->header_len == p->header_need)
                r = header_done(p, ret_event);
        } else {
            size_t used;
            r = payload_take(p, bytes + i, len - i, &used);
            if (r < 0)
                return r;
            i += used;
            if (p->frame_pos == p->frame_len)
                r = frame_done(p, ret_event);
        }
        if (r < 0)
            return r;
        if (r > 0) {
            *ret_consumed = i;
            return 1;
        }
    }
    *ret_consumed = len;
    return 0;
}

/* ---- writer ---- */

int ws_frame_header(WsOpcode opcode, bool fin, uint64_t payload_len,
                    uint8_t ret[WS_FRAME_HEADER_MAX])
{
    if (!opcode_known(opcode) || payload_len >> 63)
        return -EINVAL;
    if (opcode_is_control(opcode) && (!fin || payload_len > WS_CONTROL_PAYLOAD_MAX))
        return -EINVAL;
    ret[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (payload_len < 126) {
        ret[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xffff) {
        ret[1] = 126;
        ret[2] = (uint8_t)(payload_len >> 8);
        ret[3] = (uint8_t)payload_len;
        return 4;
    }
    ret[1] = 127;
    for (size_t i = 0; i < 8; i++)
        ret[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}

int ws_frame_control(WsOpcode opcode, const void *payload, size_t len,
                     uint8_t ret[WS_CONTROL_FRAME_MAX], size_t *ret_len)
{
    if (opcode != WS_OPCODE_PING && opcode != WS_OPCODE_PONG)
        return -EINVAL;
    if (len > WS_CONTROL_PAYLOAD_MAX)
        return -EINVAL;
    int n = ws_frame_header(opcode, true, len, ret);
    if (n < 0)
        return n;
    if (len > 0)
        memcpy(ret + n, payload, len);
    *ret_len = (size_t)n + len;
    return 0;
}

int ws_frame_close(uint16_t code, const char *reason, uint8_t ret[WS_CONTROL_FRAME_MAX],
                   size_t *ret_len)
{
    size_t reason_len = reason ? strnlen(reason, WS_CLOSE_REASON_MAX + 1) : 0;
    if (reason_len > WS_CLOSE_REASON_MAX)
        return -EINVAL;
    if (code == 0) {
        if (reason_len > 0)
            return -EINVAL;
        *ret_len = (size_t)ws_frame_header(WS_OPCODE_CLOSE, true, 0, ret);
        return 0;
    }
    if (!close_code_valid(code) || !utf8_valid((const uint8_t *)reason, reason_len))
        return -EINVAL;
    int n = ws_frame_header(WS_OPCODE_CLOSE, true, 2 + reason_len, ret);
    if (n < 0)
        return n;
    ret[n] = (uint8_t)(code >> 8);
    ret[n + 1] = (uint8_t)code;
    if (reason_len > 0)
        memcpy(ret + n + 2, reason, reason_len);
    *ret_len = (size_t)n + 2 + reason_len;
    return 0;
}
