/*
 * An RFB (RFC 6143) stream filter: the console relay's way to enforce an
 * instance's clipboard setting on the wire, whatever the page does.
 *
 * One RfbFilter follows both directions of one console. It is fed bytes as
 * they arrive, split anywhere, and says which spans to forward and which to
 * drop; it rewrites in place what must change (encodings in SetEncodings)
 * without ever changing a length. It frames every message it lets through,
 * so anything it cannot frame (an unknown message type, an encoding whose
 * length cannot be computed, a handshake out of order) makes the stream
 * malformed: the filter refuses it from then on and the relay closes the
 * console. What the viewer may do per setting:
 *
 *   none   ClientCutText is dropped; ServerCutText is dropped.
 *   to_vm  plain ClientCutText up to cut_text_max bytes reaches the VM;
 *          the extended form is dropped (its negotiation is stripped, and
 *          QEMU drops a viewer that sends it anyway); ServerCutText is dropped.
 *   both   everything passes, unread.
 *
 * Unless the setting is both, SetEncodings keeps only the encodings whose
 * rectangles the server side can frame (and never the extended clipboard);
 * the others are overwritten with Raw. Dropped text is skipped as it
 * streams: the filter never holds more than RFB_HOLD_MAX bytes.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef enum {
    RFB_CLIPBOARD_NONE,
    RFB_CLIPBOARD_TO_VM,
    RFB_CLIPBOARD_BOTH,
} RfbClipboard;

typedef enum {
    RFB_CLIENT, /* the viewer to the VNC server */
    RFB_SERVER, /* the VNC server to the viewer */
} RfbDirection;

typedef enum {
    RFB_FORWARD,
    RFB_DROP,
} RfbAction;

typedef struct {
    RfbAction action;
    size_t len; /* 0: the bytes given are the start of a unit the filter needs whole */
} RfbSpan;

/*
 * The most bytes the filter may leave unconsumed (a header it must see
 * whole); the caller keeps them and presents them again, followed by more.
 */
#define RFB_HOLD_MAX 32

typedef struct RfbFilter RfbFilter;

/*
 * A filter for one console. cut_text_max bounds the text of a
 * ClientCutText that may pass to_vm (longer ones are dropped). -EINVAL, -ENOMEM.
 */
int rfb_filter_new(RfbClipboard clipboard, uint32_t cut_text_max, RfbFilter **ret_filter);
void rfb_filter_free(RfbFilter *filter);

/*
 * The next span at the start of data: forward or drop its first
 * ret_span->len bytes (which may have been rewritten in place), then call
 * again with the rest. A len of 0 means data is shorter than the unit the
 * filter needs whole (at most RFB_HOLD_MAX bytes): call again with the same
 * bytes followed by more. -EBADMSG when the stream is malformed; the filter
 * then refuses both directions for good (rfb_filter_error() says why).
 */
int rfb_filter_next(RfbFilter *filter, RfbDirection dir, uint8_t *data, size_t len,
                    RfbSpan *ret_span);

/*
 * The same over a whole buffer, in place: the bytes to forward end up at
 * the front (*ret_kept of them), followed by *ret_held bytes (< RFB_HOLD_MAX)
 * that must be kept and fed again at the start of the next call. -EBADMSG,
 * with data unspecified and the outputs untouched.
 */
int rfb_filter_feed(RfbFilter *filter, RfbDirection dir, uint8_t *data, size_t len,
                    size_t *ret_kept, size_t *ret_held);

/* Why the stream was refused, for a log line ("" while it was not). Never holds clipboard text. */
const char *rfb_filter_error(const RfbFilter *filter);

/* Cut text messages dropped so far in one direction. */
uint64_t rfb_filter_cut_texts_dropped(const RfbFilter *filter, RfbDirection dir);
