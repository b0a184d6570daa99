#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "util.h"

struct HttpServer {
    struct MHD_Daemon *daemon;
    HttpHandler handler;
    void *userdata;
    uint16_t port;
};

/* Per-request state, from the first callback to the completion notice. */
typedef struct {
    char *body;
    size_t body_len;
    bool too_large;
    struct timespec started;
    /* An answered upgrade, until libmicrohttpd either hands over the socket or gives up. */
    HttpUpgradedFn upgraded;
    HttpUpgradeAbandonedFn abandoned;
    void *upgrade_data;
    bool upgrade_taken;
} RequestState;

int http_response_json(HttpResponse *response, unsigned status, cJSON *json)
{
    char *text = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!text) {
        response->status = 500;
        response->body = NULL;
        return -ENOMEM;
    }
    free(response->body);
    response->status = status;
    response->body = text;
    response->body_len = 0;
    response->content_type = NULL;
    return 0;
}

void http_response_error(HttpResponse *response, unsigned status, const char *code, const char *fmt,
                         ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);

    cJSON *json = cJSON_CreateObject();
    cJSON *error = cJSON_AddObjectToObject(json, "error");
    if (!error || !cJSON_AddStringToObject(error, "code", code) ||
        !cJSON_AddStringToObject(error, "message", message)) {
        cJSON_Delete(json);
        json = NULL;
    }
    http_response_json(response, status, json);
}

static void remote_address(struct MHD_Connection *connection, char *buf, size_t size)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(buf, size, "?");
    if (!info || !info->client_addr)
        return;
    const struct sockaddr *sa = info->client_addr;
    socklen_t len =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    getnameinfo(sa, len, buf, (socklen_t)size, NULL, 0, NI_NUMERICHOST);
}

const char *http_request_header(const HttpRequest *request, const char *name)
{
    return MHD_lookup_connection_value(request->connection, MHD_HEADER_KIND, name);
}

const char *http_request_cookie(const HttpRequest *request, const char *name)
{
    return MHD_lookup_connection_value(request->connection, MHD_COOKIE_KIND, name);
}

void http_upgrade_close(HttpUpgrade *upgrade)
{
    MHD_upgrade_action((struct MHD_UpgradeResponseHandle *)upgrade, MHD_UPGRADE_ACTION_CLOSE);
}

/* libmicrohttpd has sent the 101: the socket is the application's now. */
static void on_upgraded(void *cls, struct MHD_Connection *connection, void *con_cls,
                        const char *extra_in, size_t extra_in_size, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh)
{
    RequestState *state = cls;
    state->upgrade_taken = true;
    state->upgraded(state->upgrade_data, sock, extra_in, extra_in_size, (HttpUpgrade *)urh);
}

static struct MHD_Response *create_response(HttpResponse *out, RequestState *state)
{
    if (out->websocket_accept) {
        struct MHD_Response *response = MHD_create_response_for_upgrade(on_upgraded, state);
        if (!response)
            return NULL;
        state->upgraded = out->upgraded;
        state->abandoned = out->abandoned;
        state->upgrade_data = out->upgrade_data;
        MHD_add_response_header(response, MHD_HTTP_HEADER_UPGRADE, "websocket");
        MHD_add_response_header(response, "Sec-WebSocket-Accept", out->websocket_accept);
        return response;
    }
    if (!out->body)
        return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    size_t len = out->body_len ? out->body_len : strlen(out->body);
    struct MHD_Response *response =
        MHD_create_response_from_buffer(len, out->body, MHD_RESPMEM_MUST_FREE);
    if (response)
        out->body = NULL; /* owned by the response now */
    return response;
}

static enum MHD_Result send_response(struct MHD_Connection *connection, HttpResponse *out,
                                     RequestState *state)
{
    struct MHD_Response *response = create_response(out, state);
    if (!response) {
        free(out->body);
        out->body = NULL;
        return MHD_NO;
    }

    if (out->status != 204 && out->status != 101)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                out->content_type ? out->content_type : "application/json");
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL,
                            out->cache_control ? out->cache_control : "no-store");
    MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
    /* No page of ours links anywhere, and an address may carry an instance's id. */
    MHD_add_response_header(response, "Referrer-Policy", "no-referrer");
    if (out->csp) {
        MHD_add_response_header(response, "Content-Security-Policy", out->csp);
        MHD_add_response_header(response, "X-Frame-Options", "DENY");
    }
    if (out->websocket_version)
        MHD_add_response_header(response, "Sec-WebSocket-Version", out->websocket_version);
    if (out->set_cookie)
        MHD_add_response_header(response, MHD_HTTP_HEADER_SET_COOKIE, out->set_cookie);
    if (out->location)
        MHD_add_response_header(response, MHD_HTTP_HEADER_LOCATION, out->location);
    if (out->allow)
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, out->allow);
    if (out->www_authenticate)
        MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"legba\"");
    if (out->legba_start)
        MHD_add_response_header(response, "Legba-Start", out->legba_start);
    if (out->retry_after > 0) {
        char seconds[16];
        snprintf(seconds, sizeof(seconds), "%u", out->retry_after);
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
    }
    enum MHD_Result r = MHD_queue_response(connection, out->status, response);
    MHD_destroy_response(response);
    return r;
}

/* A client's path (or method) in the log: control bytes escaped, length capped, so no line can be
 * forged. */
#define LOG_PATH_MAX 160
static void printable_path(const char *path, char ret[4 * LOG_PATH_MAX + 4])
{
    size_t o = 0;
    for (size_t i = 0; path[i] && i < LOG_PATH_MAX; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c < 0x20 || c >= 0x7f || c == '\\')
            o += (size_t)sprintf(ret + o, "\\x%02x", c);
        else
            ret[o++] = (char)c;
    }
    if (strlen(path) > LOG_PATH_MAX)
        ret[o++] = '.', ret[o++] = '.', ret[o++] = '.';
    ret[o] = '\0';
}

static double elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) * 1e3 +
           (double)(now.tv_nsec - since->tv_nsec) / 1e6;
}

static enum MHD_Result finish(HttpServer *server, struct MHD_Connection *connection,
                              const char *url, const char *method, RequestState *state)
{
    char remote[INET6_ADDRSTRLEN + 1];
    HttpResponse out = {.status = 500};
    remote_address(connection, remote, sizeof(remote));

    if (state->too_large) {
        http_response_error(&out, 413, "body_too_large", "request body exceeds %d bytes",
                            HTTP_BODY_MAX);
    } else {
        HttpRequest request = {
            .method = method,
            .path = url,
            .content_type =
                MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Type"),
            .authorization =
                MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization"),
            .body = state->body ? state->body : "",
            .body_len = state->body_len,
            .remote = remote,
            .connection = connection,
        };
        server->handler(server->userdata, &request, &out);
    }

    unsigned status = out.status;
    enum MHD_Result r = send_response(connection, &out, state);
    /* Not queued after all: what the upgrade would have taken over is undone now. */
    if (out.websocket_accept && r != MHD_YES && out.abandoned) {
        state->upgraded = NULL;
        out.abandoned(out.upgrade_data);
    }
    free(out.location);
    free(out.set_cookie);
    free(out.websocket_accept);
    char shown[4 * LOG_PATH_MAX + 4], shown_method[4 * LOG_PATH_MAX + 4];
    printable_path(url, shown);
    printable_path(method, shown_method);
    log_info("%s %s %s -> %u (%.1f ms)", remote, shown_method, shown, status,
             elapsed_ms(&state->started));
    return r;
}

/*
 * libmicrohttpd calls this first with no data (create the state), then for
 * each piece of the body, then once more with nothing left: the moment to
 * answer. A body past the limit is drained, not stored, and answered 413.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    HttpServer *server = cls;
    RequestState *state = *con_cls;

    if (!state) {
        state = calloc(1, sizeof(*state));
        if (!state)
            return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &state->started);
        *con_cls = state;

        /* A declared length over the limit is refused before reading any of it. */
        const char *length =
            MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Length");
        if (length) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(length, &end, 10);
            if (errno != 0 || *end != '\0' || n > HTTP_BODY_MAX) {
                state->too_large = true;
                return finish(server, connection, url, method, state);
            }
        }
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (state->too_large)
            return MHD_YES;
        if (state->body_len + n > HTTP_BODY_MAX) {
            state->too_large = true;
            free(state->body);
            state->body = NULL;
            state->body_len = 0;
            return MHD_YES;
        }
        char *grown = realloc(state->body, state->body_len + n + 1);
        if (!grown)
            return MHD_NO;
        memcpy(grown + state->body_len, upload_data, n);
        state->body = grown;
        state->body_len += n;
        state->body[state->body_len] = '\0';
        return MHD_YES;
    }

    return finish(server, connection, url, method, state);
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    RequestState *state = *con_cls;
    if (!state)
        return;
    if (state->upgraded && !state->upgrade_taken && state->abandoned)
        state->abandoned(state->upgrade_data);
    free(state->body);
    free(state);
    *con_cls = NULL;
}

/*
 * Paths are matched as sent: no route ever needs percent-encoding, and
 * decoding first would let "%2F" forge a separator or "%00" cut a path
 * short. An encoded path simply matches no route.
 */
static size_t keep_escaped(void *cls, struct MHD_Connection *connection, char *s)
{
    return strlen(s);
}

static __attribute__((format(printf, 2, 0))) void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t len = strlen(line);
    while (len > 0 && line[len - 1] == '\n')
        line[--len] = '\0';
    log_warn("http: %s", line);
}

int http_server_start(const HttpServerOptions *options, HttpHandler handler, void *userdata,
                      HttpServer **ret_server, char **ret_error)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", options->port);
    int r = getaddrinfo(options->address, port, &hints, &ai);
    if (r != 0) {
        return util_set_error(ret_error, -EINVAL, "listen address '%s': %s", options->address,
                              gai_strerror(r));
    }

    _cleanup_free_ HttpServer *server = calloc(1, sizeof(*server));
    if (!server) {
        freeaddrinfo(ai);
        return -ENOMEM;
    }
    server->handler = handler;
    server->userdata = userdata;

    bool tls = options->tls_cert_pem && options->tls_key_pem;
    if (tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        freeaddrinfo(ai);
        return util_set_error(ret_error, -ENOTSUP, "this libmicrohttpd was built without TLS");
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_POLL | MHD_ALLOW_UPGRADE;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (tls)
        flags |= MHD_USE_TLS;
    /* The TLS options come last: without TLS they end the list early instead. */
    errno = 0;
    server->daemon = MHD_start_daemon(
        flags, options->port, NULL, NULL, on_request, server, MHD_OPTION_EXTERNAL_LOGGER,
        on_mhd_log, NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_UNESCAPE_CALLBACK,
        keep_escaped, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_CONNECTION_LIMIT, options->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        options->max_connections_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, options->connection_timeout,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32 * 1024,
        tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, options->tls_cert_pem,
        MHD_OPTION_HTTPS_MEM_KEY, options->tls_key_pem, MHD_OPTION_END);
    int saved_errno = errno;
    freeaddrinfo(ai);
    if (!server->daemon) {
        /* errno tells only of a failed socket call; other reasons are in libmicrohttpd's log. */
        return util_set_error(ret_error, -EADDRNOTAVAIL, "cannot serve HTTP%s on %s:%u: %s",
                              tls ? "S" : "", options->address, options->port,
                              saved_errno ? strerror(saved_errno)
                                          : "libmicrohttpd refused to start (see above)");
    }

    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);
    server->port = info ? info->port : options->port;
    *ret_server = TAKE_PTR(server);
    return 0;
}

void http_server_stop(HttpServer *server)
{
    if (!server)
        return;
    if (server->daemon)
        MHD_stop_daemon(server->daemon);
    free(server);
}

uint16_t http_server_port(const HttpServer *server)
{
    return server->port;
}
