/*
 * The console relay: one thread, one epoll loop, every open console. A
 * console is a viewer's WebSocket (already upgraded by the HTTP layer) and
 * the domain's VNC stream (an fd from virDomainOpenGraphicsFD); the relay
 * moves VNC bytes out as binary frames and the viewer's frames in as VNC
 * bytes. Both sockets are non-blocking and each direction has a bounded
 * buffer: when one is full the relay stops reading the other side, so a
 * slow or dead viewer only ever stalls itself.
 *
 * Viewers are counted per instance: a slot is reserved before the HTTP
 * answer (so a refusal can still be a 429) and handed to the session that
 * attaches with it. Revoking an instance closes its consoles within a second.
 */
#pragma once

#include <stddef.h>

#include "uuid.h"

/* Largest message a viewer may send (noVNC's biggest is a clipboard text). */
#define CONSOLE_MESSAGE_MAX (256 * 1024)
/* VNC bytes carried by one server frame: the most whose frame header takes 4 bytes. */
#define CONSOLE_FRAME_PAYLOAD_MAX 0xffff
/* Pending bytes per direction past which the relay stops reading the other side. */
#define CONSOLE_BUFFER_HIGH (512 * 1024)
/* The relay pings a viewer this often, and drops one it has not heard from for the second. */
#define CONSOLE_PING_INTERVAL_S 20
#define CONSOLE_IDLE_TIMEOUT_S 60
/* Close code and reason sent when an instance's consoles are revoked. */
#define CONSOLE_CLOSE_REVOKED 4000

typedef struct ConsoleRelay ConsoleRelay;

/*
 * What the console lets cross between the viewer's clipboard and the VM's,
 * enforced on the RFB stream itself (src/rfb.h), not by the page.
 */
typedef enum {
    CONSOLE_CLIPBOARD_NONE,  /* nothing either way */
    CONSOLE_CLIPBOARD_TO_VM, /* text pasted in the viewer reaches the VM; nothing comes out */
    CONSOLE_CLIPBOARD_BOTH,  /* both ways: the relay passes RFB through unread */
} ConsoleClipboard;

/*
 * Close code when the viewer or the VM sends RFB the relay refuses to pass
 * (malformed, or nothing it can frame): 1008, policy violation.
 */
#define CONSOLE_CLOSE_RFB_REFUSED 1008

/*
 * Called on the relay's thread when it no longer needs a viewer's socket
 * (the session ended for any reason): the HTTP layer closes it. Never
 * called twice for one session.
 */
typedef void (*ConsoleDoneFn)(void *data);

typedef struct {
    unsigned max_viewers; /* per instance, >= 1 */
} ConsoleOptions;

/* Starts the relay thread. -EINVAL, -ENOMEM or -errno from epoll/eventfd/pthread. */
int console_relay_start(const ConsoleOptions *options, ConsoleRelay **ret_relay);
/*
 * Closes every console (each viewer gets a close frame "going away" if its
 * socket takes it, and its done callback), then joins the thread. Accepts NULL.
 */
void console_relay_stop(ConsoleRelay *relay);

/*
 * Takes one viewer slot of the instance: -EUSERS when max_viewers are taken
 * (reserved or attached), -ESHUTDOWN once the relay is stopping.
 */
int console_relay_reserve(ConsoleRelay *relay, const char *instance_uuid);
/* Gives back a slot that will not be attached (the upgrade did not happen). */
void console_relay_release(ConsoleRelay *relay, const char *instance_uuid);

/*
 * Hands a reserved slot's sockets to the relay: ws_fd (the viewer's
 * upgraded socket; the relay never closes it, done(done_data) gives it
 * back), pending (bytes the HTTP layer read past the handshake; copied),
 * and vnc_fd (owned by the relay from here, closed when the session ends).
 * clipboard is the instance's setting: unless BOTH, the relay parses RFB
 * both ways, drops the cut text the setting forbids (logged once per
 * console, never the text) and closes the console with
 * CONSOLE_CLOSE_RFB_REFUSED when either side sends what it cannot frame.
 * Always consumes the slot; on failure (-EINVAL, -ENOMEM, -ESHUTDOWN,
 * -errno) the relay has already closed vnc_fd and called done.
 */
int console_relay_attach(ConsoleRelay *relay, const char *instance_uuid, int ws_fd,
                         const void *pending, size_t pending_len, int vnc_fd,
                         ConsoleClipboard clipboard, ConsoleDoneFn done, void *done_data);

/*
 * Closes the instance's consoles: each viewer gets a close frame
 * (CONSOLE_CLOSE_REVOKED, "instance deleted") and its socket is handed back
 * within a second, whether or not the viewer reads. Slots still reserved
 * fail to attach. Returns at once; safe from any thread.
 */
void console_relay_revoke(ConsoleRelay *relay, const char *instance_uuid);

/* Reserved plus attached viewers of the instance. */
unsigned console_relay_viewers(ConsoleRelay *relay, const char *instance_uuid);
