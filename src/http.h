/*
 * The HTTP front: libmicrohttpd with one thread per connection, so a
 * request that waits on libvirt never stalls another. It gathers a
 * request (bounded body), hands it to one handler, and sends back what
 * the handler filled in. It knows nothing of routes or JSON schemas.
 */
#pragma once

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest request body accepted; past it the answer is 413. */
#define HTTP_BODY_MAX (64 * 1024)

typedef struct HttpServer HttpServer;

/* A connection after "101 Switching Protocols": its socket belongs to the application. */
typedef struct HttpUpgrade HttpUpgrade;
/*
 * The upgrade happened: fd is the client's socket (or, under TLS, one end of
 * a socketpair that libmicrohttpd encrypts), pending the bytes already read
 * past the request. The callee owns the connection until http_upgrade_close().
 */
typedef void (*HttpUpgradedFn)(void *data, int fd, const void *pending, size_t pending_len,
                               HttpUpgrade *upgrade);
/* The answer was a 101 but the connection ended before the upgrade: undo what data holds. */
typedef void (*HttpUpgradeAbandonedFn)(void *data);

typedef struct {
    const char *method;
    const char *path;          /* as sent, never percent-decoded; without the query */
    const char *content_type;  /* NULL when absent */
    const char *authorization; /* NULL when absent */
    const char *body;          /* NUL-terminated; "" when none */
    size_t body_len;
    const char *remote; /* client address as text, for logs */
    void *connection;   /* for http_request_header() and http_request_cookie() */
} HttpRequest;

typedef struct {
    unsigned status;
    char *body;               /* malloc'd, or NULL for no body */
    size_t body_len;          /* 0: strlen(body) */
    const char *content_type; /* static; NULL: application/json */
    char *location;
    const char *allow; /* static string for 405 */
    bool www_authenticate;
    unsigned retry_after;      /* seconds; 0 = no Retry-After header */
    const char *legba_start;   /* static Legba-Start header (how a create started), or NULL */
    const char *cache_control; /* static; NULL: no-store */
    const char *csp;           /* static Content-Security-Policy for a page, or NULL */
    char *set_cookie;          /* malloc'd Set-Cookie value, or NULL */
    /*
     * A WebSocket upgrade: with websocket_accept set (malloc'd
     * Sec-WebSocket-Accept), the answer is 101 and upgraded(upgrade_data, …)
     * runs once the client has it, or abandoned(upgrade_data) if it never does.
     */
    char *websocket_accept;
    const char *websocket_version; /* static Sec-WebSocket-Version for a 426, or NULL */
    HttpUpgradedFn upgraded;
    HttpUpgradeAbandonedFn abandoned;
    void *upgrade_data;
} HttpResponse;

typedef void (*HttpHandler)(void *userdata, const HttpRequest *request, HttpResponse *response);

typedef struct {
    const char *address; /* numeric IPv4 or IPv6 */
    uint16_t port;       /* 0 picks a free one */
    unsigned max_connections;
    unsigned max_connections_per_ip;
    unsigned connection_timeout; /* seconds */
    const char *tls_cert_pem;    /* both set: HTTPS; both NULL: plain HTTP */
    const char *tls_key_pem;
} HttpServerOptions;

/* On failure *ret_error (if not NULL) gets a malloc'd reason. */
int http_server_start(const HttpServerOptions *options, HttpHandler handler, void *userdata,
                      HttpServer **ret_server, char **ret_error);
void http_server_stop(HttpServer *server);
uint16_t http_server_port(const HttpServer *server);

/* A request header's value, or NULL when absent. */
const char *http_request_header(const HttpRequest *request, const char *name);
/* A cookie's value, or NULL when absent. */
const char *http_request_cookie(const HttpRequest *request, const char *name);
/* Hands an upgraded connection back to libmicrohttpd, which closes it. Once per upgrade. */
void http_upgrade_close(HttpUpgrade *upgrade);

/* Sets status and body from json (consumed). -ENOMEM leaves a bare 500. */
int http_response_json(HttpResponse *response, unsigned status, cJSON *json);
/* {"error":{"code":code,"message":…}} with status. */
void http_response_error(HttpResponse *response, unsigned status, const char *code, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));
