/*
 * The WebSocket protocol (RFC 6455), server side, without I/O: the opening
 * handshake checks and Sec-WebSocket-Accept, an incremental frame parser for
 * what a client sends, and a writer for what the server sends. libmicrohttpd
 * does the HTTP upgrade; the console relay moves the bytes.
 *
 * No extensions and no subprotocols are negotiated, so every RSV bit must
 * be 0. Close codes: ws_parser_error() and the WS_CLOSE_* names below.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Base64 of a SHA-1 digest: 28 characters plus NUL. */
#define WS_ACCEPT_KEY_LEN 29
/* Longest handshake header value looked at; anything longer is refused unread. */
#define WS_HEADER_MAX 1024
/* 2 bytes, then 8 for the longest length form (a server frame has no mask). */
#define WS_FRAME_HEADER_MAX 10
#define WS_CONTROL_PAYLOAD_MAX 125
/* A whole server control frame: header and payload. */
#define WS_CONTROL_FRAME_MAX (2 + WS_CONTROL_PAYLOAD_MAX)
/* A close payload is a 2-byte code, then the reason. */
#define WS_CLOSE_REASON_MAX (WS_CONTROL_PAYLOAD_MAX - 2)

typedef enum {
    WS_OPCODE_CONTINUATION = 0x0,
    WS_OPCODE_TEXT = 0x1,
    WS_OPCODE_BINARY = 0x2,
    WS_OPCODE_CLOSE = 0x8,
    WS_OPCODE_PING = 0x9,
    WS_OPCODE_PONG = 0xa,
} WsOpcode;

#define WS_CLOSE_NORMAL 1000
#define WS_CLOSE_GOING_AWAY 1001
#define WS_CLOSE_PROTOCOL_ERROR 1002
#define WS_CLOSE_UNSUPPORTED_DATA 1003
#define WS_CLOSE_NO_STATUS 1005 /* never sent: stands for "the close frame had no code" */
#define WS_CLOSE_INVALID_DATA 1007
#define WS_CLOSE_POLICY_VIOLATION 1008
#define WS_CLOSE_MESSAGE_TOO_BIG 1009
#define WS_CLOSE_INTERNAL_ERROR 1011

/*
 * Checks the header values of an upgrade request (any may be NULL when the
 * header is absent): Upgrade must list "websocket" and Connection "upgrade"
 * (comma-separated tokens, case-insensitive), Sec-WebSocket-Version must be
 * "13", and Sec-WebSocket-Key must be the base64 of 16 bytes.
 * 0, -EINVAL (answer 400) or -EPROTONOSUPPORT for a version other than 13
 * (answer 426 with "Sec-WebSocket-Version: 13"). On failure *ret_reason, if
 * ret_reason is not NULL, is a static sentence fit for the answer's body.
 * The method (GET) and HTTP version are the caller's to check.
 */
int ws_handshake_check(const char *upgrade, const char *connection, const char *version,
                       const char *key, const char **ret_reason);

/*
 * Sec-WebSocket-Accept for a Sec-WebSocket-Key (surrounding spaces and tabs
 * ignored). -EINVAL when the key is not the base64 of exactly 16 bytes, -EIO
 * when hashing fails.
 */
int ws_accept_key(const char *client_key, char ret[WS_ACCEPT_KEY_LEN]);

/*
 * Parses the frames a client sends. Messages are reassembled in a buffer
 * the parser owns and grows on demand, never past max_message: a frame's
 * length is checked against both limits from its header, before any of its
 * payload is stored, so a client cannot make the server hold more than
 * max_message bytes. Control frames use a fixed buffer of their own, so a
 * ping between the fragments of a message leaves the message alone. The
 * buffer is kept (not shrunk) between messages.
 */
typedef struct WsParser WsParser;

typedef struct {
    /* TEXT or BINARY (a whole message), CLOSE, PING or PONG. */
    WsOpcode opcode;
    /* The message, ping/pong payload or close reason (unmasked, not NUL-terminated).
     * Owned by the parser, valid until the next ws_parser_feed(). Never NULL. */
    const uint8_t *data;
    size_t len;
    /* CLOSE only: the peer's code, or WS_CLOSE_NO_STATUS for an empty close frame. */
    uint16_t close_code;
} WsEvent;

/*
 * max_frame bounds one data frame, max_message the sum of a message's
 * fragments; control frames are bounded by the protocol (125 bytes).
 * -EINVAL when either is 0, -ENOMEM.
 */
int ws_parser_new(size_t max_frame, size_t max_message, WsParser **ret_parser);
void ws_parser_free(WsParser *parser);
static inline void ws_parser_freep(WsParser **parser)
{
    ws_parser_free(*parser);
}
#define _cleanup_ws_parser_ __attribute__((cleanup(ws_parser_freep)))

/*
 * Consumes bytes of the stream, any number at a time, until an event is
 * complete or the bytes run out. Returns 1 with *ret_event filled and
 * *ret_consumed bytes used (call again with the rest), or 0 with all len
 * bytes used and no event yet. Answering a PING with a PONG of the same
 * payload, and a CLOSE with a close frame, is the caller's job.
 *
 * Errors, after which the parser refuses all input with the same value and
 * ws_parser_error() says which close code to send:
 *   -EPROTO (1002) a frame breaks the protocol,
 *   -EILSEQ (1007) a text message or close reason is not UTF-8 (found as soon
 *                  as the bad byte arrives, across fragments),
 *   -EMSGSIZE (1009) a frame or message over the limits,
 *   -ENOMEM (1011).
 * After a CLOSE event the stream is over: -ESHUTDOWN, with no close code of
 * its own to send.
 */
int ws_parser_feed(WsParser *parser, const void *data, size_t len, size_t *ret_consumed,
                   WsEvent *ret_event);

/*
 * The close code to send after an error (0 while there has been none), and
 * a static reason for logs or the close frame when ret_reason is not NULL.
 */
uint16_t ws_parser_error(const WsParser *parser, const char **ret_reason);

/*
 * Writes the header of an unmasked (server) frame carrying payload_len
 * bytes. Returns its length: 2, 4 or 10. -EINVAL for an unknown opcode, a
 * length of 2^63 or more, or a control frame that is fragmented or longer
 * than 125 bytes.
 */
int ws_frame_header(WsOpcode opcode, bool fin, uint64_t payload_len,
                    uint8_t ret[WS_FRAME_HEADER_MAX]);

/*
 * A whole PING or PONG frame (a PONG answers a PING with the same payload).
 * -EINVAL for another opcode or more than 125 bytes.
 */
int ws_frame_control(WsOpcode opcode, const void *payload, size_t len,
                     uint8_t ret[WS_CONTROL_FRAME_MAX], size_t *ret_len);

/*
 * A whole CLOSE frame: code 0 for an empty one, otherwise a code one may
 * send (1000-1003, 1007-1011, 3000-4999) and a reason (NULL for none) of at
 * most WS_CLOSE_REASON_MAX bytes of UTF-8. -EINVAL otherwise.
 */
int ws_frame_close(uint16_t code, const char *reason, uint8_t ret[WS_CONTROL_FRAME_MAX],
                   size_t *ret_len);
