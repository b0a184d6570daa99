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

typedef struct {
    const char *method;
    const char *path;          /* as sent, never percent-decoded; without the query */
    const char *content_type;  /* NULL when absent */
    const char *authorization; /* NULL when absent */
    const char *body;          /* NUL-terminated; "" when none */
    size_t body_len;
    const char *remote; /* client address as text, for logs */
} HttpRequest;

typedef struct {
    unsigned status;
    char *body; /* JSON text (malloc'd) or NULL for no body */
    char *location;
    const char *allow; /* static string for 405 */
    bool www_authenticate;
    unsigned retry_after; /* seconds; 0 = no Retry-After header */
} HttpResponse;

typedef void (*HttpHandler)(void *userdata, const HttpRequest *request, HttpResponse *response);

typedef struct {
    const char *address; /* numeric IPv4 or IPv6 */
    uint16_t port;       /* 0 picks a free one */
    unsigned max_connections;
    unsigned max_connections_per_ip;
    unsigned connection_timeout; /* seconds */
} HttpServerOptions;

/* On failure *ret_error (if not NULL) gets a malloc'd reason. */
int http_server_start(const HttpServerOptions *options, HttpHandler handler, void *userdata,
                      HttpServer **ret_server, char **ret_error);
void http_server_stop(HttpServer *server);
uint16_t http_server_port(const HttpServer *server);

/* Sets status and body from json (consumed). -ENOMEM leaves a bare 500. */
int http_response_json(HttpResponse *response, unsigned status, cJSON *json);
/* {"error":{"code":code,"message":…}} with status. */
void http_response_error(HttpResponse *response, unsigned status, const char *code, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));
