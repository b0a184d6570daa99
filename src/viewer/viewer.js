// The console viewer: trades the access link's key for a session cookie,
// waits until the instance's browser is ready, then shows its screen with
// noVNC. Every URL is relative to the page (/console/{uuid}/), so legbad
// may sit behind a reverse proxy under any path prefix.
//
// <body data-state> always names what the page is doing, for tests:
// starting, booting, connected, gone, stopped, denied or reconnecting.
import RFB from './novnc/core/rfb.js';

const POLL_MS = 2000;
// A console message may be 256 KiB; a ClientCutText spends 8 bytes on its header.
const CLIPBOARD_MAX = 256 * 1024 - 8;
const KEY_PATTERN = /^[0-9a-f]{64}$/i;
const GONE = 'This browser is gone: the instance was deleted.';

const screen = document.getElementById('screen');
const message = document.getElementById('message');
const clipboard = {
    panel: document.getElementById('clipboard'),
    text: document.getElementById('clipboard-text'),
    send: document.getElementById('clipboard-send'),
    copy: document.getElementById('clipboard-copy'),
    note: document.getElementById('clipboard-note'),
    mode: 'none', // the instance's setting; the relay enforces it, this only shows it
    rfb: null,
};

function show(state, text) {
    document.body.dataset.state = state;
    message.textContent = text ?? '';
    message.hidden = !text;
}

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

// The HTTP status of POST session, 0 when legbad could not be reached.
async function postKey(key) {
    // A mangled link is as useless as a replaced one; no need to ask.
    if (!KEY_PATTERN.test(key))
        return 403;
    try {
        const response = await fetch('session', {
            method: 'POST',
            credentials: 'same-origin',
            cache: 'no-store',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ key: key.toLowerCase() }),
        });
        return response.status;
    } catch {
        return 0;
    }
}

// False when the page has nothing more to try.
async function signIn() {
    const key = new URLSearchParams(location.hash.slice(1)).get('key');
    if (key === null)
        return true; // a cookie from an earlier visit may still do
    let status;
    try {
        status = await postKey(key);
    } finally {
        // The key is a password: keep it out of the address bar, history
        // and bookmarks whatever became of it.
        history.replaceState(null, '', location.pathname + location.search);
    }
    if (status === 403) {
        show('denied', 'This access link is not valid (it may have been replaced by a newer one).');
        return false;
    }
    if (status === 404) {
        show('gone', GONE);
        return false;
    }
    // Any other failure: the status below says whether an older cookie works.
    return true;
}

// One GET status; body is null unless it was a 200 with JSON.
async function fetchStatus() {
    try {
        const response = await fetch('status', { credentials: 'same-origin', cache: 'no-store' });
        return { code: response.status, body: response.ok ? await response.json() : null };
    } catch {
        return { code: 0, body: null };
    }
}

// Asks until there is a screen to show or nothing left to wait for. An
// unreachable legbad or an odd answer leaves the message as it was and asks again.
async function watch() {
    for (;;) {
        const { code, body } = await fetchStatus();
        if (code === 404)
            return show('gone', GONE);
        if (code === 403)
            return show('denied', 'Open this browser with its access link.');
        if (code === 200 && body) {
            showClipboard(body.clipboard);
            if (body.status === 'stopped')
                show('stopped', 'The virtual machine is stopped.');
            else if (!body.ready)
                show('booting', 'Starting the browser…');
            else
                return connect();
        }
        await sleep(POLL_MS);
    }
}

// The clipboard panel, for an instance whose clipboard is "to_vm" or "both".
function showClipboard(mode) {
    clipboard.mode = mode === 'to_vm' || mode === 'both' ? mode : 'none';
    clipboard.panel.hidden = clipboard.mode === 'none';
    clipboard.copy.hidden = clipboard.mode !== 'both';
}

// The text goes as one plain ClientCutText of UTF-8, which QEMU gives the
// VM as it is (noVNC 1.3, Debian 12's: RFB.messages and its socket). (noVNC's own clipboardPasteFrom uses the extended clipboard
// once negotiated, whose text ends in a NUL and CRLF line ends that QEMU
// passes on into the VM's clipboard.)
function sendClipboard(rfb, text) {
    const bytes = new TextEncoder().encode(text);
    if (bytes.length === 0)
        return 'Nothing to send.';
    if (bytes.length > CLIPBOARD_MAX)
        return 'Too long: at most 256 KiB.';
    // noVNC queues a message whole only on an open socket (it would loop
    // forever on a closing one): while disconnecting, send nothing.
    if (rfb._rfbConnectionState !== 'connected' || rfb._sock?.readyState !== 'open')
        return 'Not connected.';
    RFB.messages.clientCutText(rfb._sock, bytes);
    return 'Sent: paste it in the browser.';
}

clipboard.send.addEventListener('click', () => {
    if (!clipboard.rfb) {
        clipboard.note.textContent = 'Not connected.';
        return;
    }
    clipboard.note.textContent = sendClipboard(clipboard.rfb, clipboard.text.value);
    clipboard.rfb.focus();
});

// Text copied in the VM reaches the user's own clipboard only when they ask.
clipboard.copy.addEventListener('click', () => {
    if (!navigator.clipboard) {
        clipboard.note.textContent = 'Select the text and copy it.';
        return;
    }
    navigator.clipboard.writeText(clipboard.text.value).then(
        () => { clipboard.note.textContent = 'Copied to your clipboard.'; },
        () => { clipboard.note.textContent = 'Select the text and copy it.'; });
});

// The message stays up until noVNC says how the connection went.
function connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // location.pathname is /…/console/{uuid}/: the page is only ever served there.
    const url = scheme + '//' + location.host + location.pathname + 'websocket';
    const rfb = new RFB(screen, url, { shared: true });
    rfb.scaleViewport = true; // the VM keeps its resolution; the window scales it
    rfb.resizeSession = false;
    rfb.focusOnClick = true;
    rfb.background = '#000';
    rfb.addEventListener('connect', () => {
        show('connected', null);
        clipboard.rfb = rfb;
        rfb.focus(); // typing works without a click first
    });
    // Text copied in the VM (only "both" lets it through the relay).
    rfb.addEventListener('clipboard', (e) => {
        if (clipboard.mode !== 'both')
            return;
        clipboard.text.value = e.detail.text;
        clipboard.note.textContent = 'Copied in the browser.';
    });
    // Lost for any reason (network, legbad restart, VM stopped, instance
    // deleted): the status tells which, so ask it again.
    rfb.addEventListener('disconnect', () => {
        clipboard.rfb = null;
        show('reconnecting', 'Connection lost, reconnecting…');
        setTimeout(watch, POLL_MS);
    });
}

show('starting', 'Connecting…');
signIn().then((signedIn) => signedIn && watch());
