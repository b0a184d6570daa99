/*
 * Test support for integration tests (tests/it_*.c): temporary directories,
 * running legbactl and build-image, a legbad child process with its log,
 * and a deliberately small raw-socket HTTP/1.1 and WebSocket client over
 * loopback, so a test can send exactly the bytes it means (malformed
 * requests included), with the console's requests on top. The cmocka
 * assertions over these types are in harness_assert.h.
 *
 * Conventions: functions return 0 (or an exit status, where said) and a
 * negative errno on failure; outputs go through ret_ pointers and are left
 * untouched on failure; every free function accepts NULL. Nothing here
 * calls cmocka, so the helpers may be used from any thread; failures are
 * described on stderr before the error is returned.
 *
 * Every client call has a _tls twin that takes ca_file, the PEM file of
 * the one CA to trust: it speaks TLS (GnuTLS) over the same socket,
 * verifies the server's certificate against that CA and the IP address
 * 127.0.0.1 (-EKEYREJECTED when it does not verify; never skipped), and
 * with ca_file NULL is the plain twin, so a test can pick the transport
 * with one variable.
 *
 * Paths come from compile definitions LEGBA_SOURCE_DIR and LEGBA_BINARY_DIR
 * (tests/CMakeLists.txt). The environment variables LEGBA_LEGBAD and
 * LEGBA_LEGBACTL, when set, name other binaries to run instead of the
 * build's own (for example an installed legbad).
 */
#pragma once

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "uuid.h"

/* How long an HTTP exchange or a helper process may take before it is abandoned. */
#define HARNESS_IO_TIMEOUT_S 60
/* How long an image build may take (a browser image: minutes). */
#define HARNESS_BUILD_TIMEOUT_S 1800
/* How long legbad may take to accept connections after it is started. */
#define HARNESS_START_TIMEOUT_S 20

/* A NULL-terminated argument or header list literal: HARNESS_LIST("org", "create", "a"). */
#define HARNESS_LIST(...) ((const char *const[]){__VA_ARGS__, NULL})

/* The source tree (LEGBA_SOURCE_DIR) and the build tree (LEGBA_BINARY_DIR). */
const char *harness_source_dir(void);
const char *harness_binary_dir(void);

/* Milliseconds on the monotonic clock, for deadlines. */
long long harness_now_ms(void);

/* ---- files and directories ---- */

/*
 * Creates a fresh directory /tmp/<prefix>XXXXXX with mode 0711, so the
 * libvirt-qemu user can reach disks below it without listing it.
 * *ret_path is malloc'd.
 */
int harness_tempdir(const char *prefix, char **ret_path);
/* Removes path and everything below it (no symlink is followed). Missing is fine. */
int harness_rmtree(const char *path);
/*
 * At the end of a run: removes a test's temp dir as harness_rmtree() does,
 * unless LEGBA_IT_KEEP is set to anything but "" or "0", in which case it
 * says on stderr where the dir (data, images, legbad logs) was kept.
 * Accepts NULL.
 */
void harness_tempdir_remove(const char *path);
/* Whether path exists (any file type; a dangling symlink counts). */
bool harness_file_exists(const char *path);
/* Number of entries in dir whose name ends with suffix ("" counts all but . and ..); -errno. */
int harness_count_files(const char *dir, const char *suffix);
/* Whether the file at path contains needle (read whole, at most 64 MiB). */
bool harness_log_contains(const char *path, const char *needle);
/* harness_log_contains() asked every 10 ms until it is true or timeout_ms has passed. */
bool harness_log_wait(const char *path, const char *needle, int timeout_ms);
/* Copies the file at path to stderr between marker lines, for failure reports. */
void harness_dump_file(const char *path);

/* ---- child processes ---- */

/*
 * Runs argv[0] (a path, or a name looked up in PATH) with argv, no shell,
 * stdin from /dev/null, stderr inherited. stdout is captured into
 * *ret_stdout (malloc'd, NUL-terminated; pass NULL to discard). A child
 * still running after HARNESS_IO_TIMEOUT_S is killed.
 * Returns the exit status (0..255; 128 + signal number when killed by a
 * signal), or -errno when it could not be run.
 */
int harness_run(const char *const argv[], char **ret_stdout);
/* The same with another deadline, for long jobs such as an image build. */
int harness_run_timeout(const char *const argv[], char **ret_stdout, int timeout_s);
/* harness_run() with the child's stderr captured too, interleaved with its stdout. */
int harness_run_merged(const char *const argv[], char **ret_output);

/*
 * Runs `legbactl --data-dir data_dir args...` (args NULL-terminated, see
 * HARNESS_LIST). When ret_json is not NULL it gets stdout parsed as JSON,
 * or NULL when stdout is not JSON. Returns the exit status as
 * harness_run() does.
 */
int harness_legbactl(const char *data_dir, const char *const args[], cJSON **ret_json);

/* An org made with legbactl, and the header line that acts as it. */
typedef struct {
    char uuid[UUID_STR_LEN];
    char token_id[UUID_STR_LEN];
    char auth[160]; /* "Authorization: Bearer lgb_…", for a request's headers */
} HarnessOrg;

/*
 * `legbactl --data-dir data_dir org create name`. 0 with *ret filled, or
 * -EPROTO (described on stderr) when legbactl failed or did not print
 * org_uuid, token and token_id.
 */
int harness_org_create(const char *data_dir, const char *name, HarnessOrg *ret);

/*
 * `legbactl --data-dir data_dir org network --org org_uuid mode` (none,
 * egress or default). 0 when legbactl succeeded and printed the org with
 * that network (null for default), else -EPROTO, described on stderr.
 */
int harness_org_network(const char *data_dir, const char *org_uuid, const char *mode);

/*
 * Waits up to seconds for `legbactl pool list` to show exactly want ready
 * VMs of image, size and mode (warm or standby) and none of them booting.
 * 0 then; -ETIMEDOUT (what it saw described on stderr), or legbactl's
 * failure.
 */
int harness_pool_wait(const char *data_dir, const char *image, const char *size, const char *mode,
                      int want, int seconds);

/* ---- QEMU processes ---- */

/* The pid of the QEMU libvirt runs for instance uuid (its pid file), or 0 when none. */
pid_t harness_qemu_pid(const char *uuid);

/*
 * The NUL-separated arguments of process pid, whole (at most 1 MiB) and
 * NUL-terminated, *ret_len bytes without the terminator; NULL when it
 * cannot be read.
 */
char *harness_process_cmdline(pid_t pid, size_t *ret_len);

/*
 * Whether the test called name may run: the environment variable env_name
 * unset or empty, or a comma-separated list of test names holding it.
 */
bool harness_test_wanted(const char *env_name, const char *name);

/*
 * Builds image `name` from its recipe into images_dir with
 * tools/build-image (for the "tiny" image: images_dir/tiny/{disk.qcow2,
 * manifest.json}). Returns the exit status; the tool's output is printed
 * to stderr when it fails.
 */
int harness_build_image(const char *images_dir, const char *name);

/*
 * A self-signed certificate for IP 127.0.0.1 (CN and subjectAltName),
 * valid two days, and its unencrypted RSA key: dir/cert.pem and
 * dir/key.pem, made by `openssl req` (the Debian package openssl). The
 * certificate is also the CA file the _tls functions trust. Paths are
 * malloc'd; openssl's output is printed only when it fails.
 */
int harness_tls_cert(const char *dir, char **ret_cert, char **ret_key);

/* ---- legbad ---- */

typedef struct {
    const char *dir;         /* required: where the log file goes (the test's temp dir) */
    const char *data_dir;    /* required */
    const char *images_dir;  /* required */
    const char *domains_dir; /* NULL: LEGBA_SOURCE_DIR/domains */
    const char *libvirt_uri; /* NULL: test:///default */
    uint16_t port;           /* 0: a free loopback port */
    const char *log_name;    /* file name inside dir; NULL: "legbad.log" (truncated at start) */
    const char *const *extra_args; /* NULL-terminated, appended to the command line; may be NULL */
} HarnessLegbadOptions;

typedef struct {
    pid_t pid;       /* 0 once reaped */
    int exit_status; /* once reaped: as harness_run() reports it */
    uint16_t port;
    char *log_path;
} HarnessLegbad;

/*
 * Starts legbad with --listen 127.0.0.1:PORT and the directories above,
 * stderr (its log) and stdout to the log file, and waits until the port
 * accepts connections (then 0) or the child exits or HARNESS_START_TIMEOUT_S
 * passes (then the log is printed to stderr, the child is killed and reaped,
 * and -ECHILD or -ETIMEDOUT is returned).
 */
int harness_legbad_start(const HarnessLegbadOptions *options, HarnessLegbad **ret_legbad);
/*
 * Whether legbad has exited (a crash, say); reaps it and records
 * exit_status. Lets a test tell "the daemon died" from "the request failed".
 */
bool harness_legbad_exited(HarnessLegbad *legbad);
/*
 * Sends SIGTERM (harness_legbad_stop) or SIGKILL (harness_legbad_kill) and
 * reaps the child; a child that ignores SIGTERM for HARNESS_IO_TIMEOUT_S is
 * killed. Returns its exit status as harness_run() does (so a clean
 * shutdown is 0, SIGKILL is 137); if it had already exited, the status it
 * exited with.
 */
int harness_legbad_stop(HarnessLegbad *legbad);
int harness_legbad_kill(HarnessLegbad *legbad);
/* Kills the child if it is still running, then frees. */
void harness_legbad_free(HarnessLegbad *legbad);
/*
 * Stops *legbad (harness_legbad_stop), prints its log to stderr when it
 * did not exit with status 0, frees it and sets *legbad to NULL. Returns
 * the exit status; 0 when legbad or *legbad is NULL.
 */
int harness_legbad_stop_free(HarnessLegbad **legbad);

/* ---- HTTP ---- */

/* A free TCP port on 127.0.0.1 (bound to port 0 and released again). */
int harness_free_port(uint16_t *ret_port);
/* Whether something listens on the loopback port (a connect, nothing sent). */
bool harness_port_accepts(uint16_t port);

typedef struct {
    int status; /* from the status line */
    size_t n_headers;
    char **header_names;  /* as received */
    char **header_values; /* leading and trailing blanks removed */
    char *body;           /* NUL-terminated (the NUL is not counted in body_len) */
    size_t body_len;
    cJSON *json; /* body parsed as JSON, NULL when it is not JSON */
} HarnessResponse;

/* Special values for harness_http_ex's content_length. */
#define HARNESS_CL_AUTO (-1LL)    /* Content-Length: body_len when there is a body */
#define HARNESS_CL_NONE (-2LL)    /* no Content-Length header at all */
#define HARNESS_CL_CHUNKED (-3LL) /* Transfer-Encoding: chunked, body sent in 4 KiB chunks */

/*
 * One request on a fresh connection to 127.0.0.1:port: "METHOD PATH
 * HTTP/1.1", Host, Connection: close, then headers (NULL-terminated
 * "Name: value" strings, or NULL), the length header chosen by
 * content_length (any value >= 0 is declared as is, whatever body_len is),
 * and body_len bytes of body. The response is read while the request is
 * still being sent (so an early answer such as a 413 is not lost) until
 * the server closes or the declared Content-Length has arrived, bounded by
 * HARNESS_IO_TIMEOUT_S. 0 with *ret filled, or -errno (-EPROTO for a
 * response that does not parse).
 */
int harness_http_ex(uint16_t port, const char *method, const char *path,
                    const char *const headers[], const void *body, size_t body_len,
                    long long content_length, HarnessResponse *ret);
/* harness_http_ex with HARNESS_CL_AUTO. */
int harness_http(uint16_t port, const char *method, const char *path, const char *const headers[],
                 const void *body, size_t body_len, HarnessResponse *ret);
/* harness_http() over TLS trusting ca_file (see the top of this file); NULL: plain. */
int harness_http_tls(uint16_t port, const char *ca_file, const char *method, const char *path,
                     const char *const headers[], const void *body, size_t body_len,
                     HarnessResponse *ret);
/* Sends exactly len bytes (a whole request, malformed or not) and reads the answer. */
int harness_http_raw(uint16_t port, const void *data, size_t len, HarnessResponse *ret);

/* The value of the first header called name (case-insensitive), or NULL. */
const char *harness_header(const HarnessResponse *response, const char *name);
/* error.code of a JSON error body, or NULL. */
const char *harness_error_code(const HarnessResponse *response);
/* error.message of a JSON error body, or NULL. */
const char *harness_error_message(const HarnessResponse *response);
/* A string member of a JSON object, or NULL when absent or not a string. */
const char *harness_json_string(const cJSON *object, const char *name);
/* Frees what the response holds and zeroes it; accepts NULL. */
void harness_response_done(HarnessResponse *response);

/* ---- WebSocket ---- */

/*
 * A WebSocket client (RFC 6455) over loopback, for the console: the opening
 * handshake with its answer checked, masked frames out, whole messages in.
 * Deliberately lax in what it builds (harness_ws_send_frame can lie about
 * a length or set any bit) and strict in what it reads: a server frame
 * that is masked, has an RSV bit set, or breaks fragmentation is -EPROTO.
 */
typedef struct HarnessWs HarnessWs;

#define HARNESS_WS_CONTINUATION 0x0
#define HARNESS_WS_TEXT 0x1
#define HARNESS_WS_BINARY 0x2
#define HARNESS_WS_CLOSE 0x8
#define HARNESS_WS_PING 0x9
#define HARNESS_WS_PONG 0xa
/* close_code of a close frame that carried no code. */
#define HARNESS_WS_NO_STATUS 1005

typedef struct {
    int opcode;     /* TEXT or BINARY (a whole message), CLOSE, PING or PONG */
    uint8_t *data;  /* message, ping/pong payload or close reason; NUL-terminated, malloc'd */
    size_t len;     /* without the NUL */
    int close_code; /* CLOSE only: the code, or HARNESS_WS_NO_STATUS */
} HarnessWsMessage;

/*
 * GET path on 127.0.0.1:port as an upgrade: Host, then headers
 * (NULL-terminated "Name: value", e.g. a Cookie and an Origin), then
 * Upgrade, Connection, Sec-WebSocket-Key (16 random bytes) and
 * Sec-WebSocket-Version: 13, each left out when headers already has one of
 * that name (so a test can send a bad one). Bounded by HARNESS_IO_TIMEOUT_S.
 *
 * 0 with *ret_ws when the server answered 101 with Upgrade: websocket,
 * Connection: Upgrade and the right Sec-WebSocket-Accept; bytes that came
 * after the 101 are kept for harness_ws_recv.
 * -ECONNREFUSED with *ret_refusal filled (status, headers, JSON body) when
 * it answered anything else; ret_refusal may be NULL.
 * -EPROTO for a 101 that is wrong (described on stderr), other -errno
 * (-ETIMEDOUT, -ECONNRESET) when there was no usable answer.
 */
int harness_ws_connect(uint16_t port, const char *path, const char *const headers[],
                       HarnessWs **ret_ws, HarnessResponse *ret_refusal);

/* One whole (FIN) masked frame of opcode with len bytes; 0 or -errno (-EPIPE once closed). */
int harness_ws_send(HarnessWs *ws, int opcode, const void *data, size_t len);
/*
 * One masked frame whose first byte is byte0 (FIN, RSV and opcode as given)
 * and whose header declares declared_len bytes, followed by len bytes of
 * data (len may be less than declared_len: the rest is never sent).
 */
int harness_ws_send_frame(HarnessWs *ws, uint8_t byte0, uint64_t declared_len, const void *data,
                          size_t len);
/* Exactly these bytes, unframed (for frames that break the protocol). */
int harness_ws_send_raw(HarnessWs *ws, const void *data, size_t len);

/*
 * The next message: data messages are reassembled from their fragments,
 * control frames (which may come between fragments) are returned one by
 * one. Nothing is answered on the caller's behalf (a PING is returned, not
 * ponged). 0 with *ret filled; -ETIMEDOUT when no whole message arrived
 * within timeout_ms; -ECONNRESET when the server closed the connection
 * (EOF or reset) first; -EPROTO for a frame a server must not send; -EFBIG
 * past 16 MiB.
 */
int harness_ws_recv(HarnessWs *ws, int timeout_ms, HarnessWsMessage *ret);
/* Frees what the message holds and zeroes it; accepts NULL. */
void harness_ws_message_done(HarnessWsMessage *message);
/* Closes the TCP connection at once (no close frame) and frees; accepts NULL. */
void harness_ws_free(HarnessWs *ws);

/* ---- the console, as a viewer's browser reaches it ---- */

/*
 * POST /console/<uuid>/session with the JSON body {"key": key} and the
 * Origin line origin_line ("Origin: …", or NULL for none): the exchange of
 * an access URL's key for a cookie. As harness_http(); -EINVAL for a key
 * too long to send.
 */
int harness_console_session(uint16_t port, const char *uuid, const char *key,
                            const char *origin_line, HarnessResponse *ret);
int harness_console_session_tls(uint16_t port, const char *ca_file, const char *uuid,
                                const char *key, const char *origin_line, HarnessResponse *ret);

/*
 * Opens the console WebSocket of instance uuid (/console/<uuid>/websocket)
 * as harness_ws_connect() does, sending the Cookie line cookie ("Cookie: …")
 * and the Origin line origin_line, each unless it is NULL.
 */
int harness_console_ws_connect(uint16_t port, const char *uuid, const char *cookie,
                               const char *origin_line, HarnessWs **ret_ws,
                               HarnessResponse *ret_refusal);
int harness_console_ws_connect_tls(uint16_t port, const char *ca_file, const char *uuid,
                                   const char *cookie, const char *origin_line, HarnessWs **ret_ws,
                                   HarnessResponse *ret_refusal);
