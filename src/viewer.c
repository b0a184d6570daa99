#include "viewer.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "access.h"
#include "log.h"
#include "util.h"
#include "viewer_assets.h"
#include "ws.h"

/* noVNC's modules are a few dozen files of at most ~150 KiB; nothing else is served from there. */
#define VIEWER_NOVNC_FILE_MAX (1024 * 1024)

/*
 * The page runs only its own script and noVNC's, talks only to its own
 * origin (the WebSocket included), and may not be framed.
 */
static const char viewer_csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

static void not_found(HttpResponse *response)
{
    http_response_error(response, 404, "not_found", "no such browser; it may have been deleted");
}

static void forbidden(HttpResponse *response)
{
    http_response_error(response, 403, "forbidden",
                        "open this browser with its access URL (the link with #key=)");
}

static void internal_error(HttpResponse *response)
{
    http_response_error(response, 500, "internal", "internal error; see the server log");
}

/* The instance behind the route, if a client may see it; a 404 (or 500) otherwise. */
static int find_instance(Viewer *viewer, const Route *route, StoreInstance *ret_instance,
                         HttpResponse *response)
{
    StoreInstance instance;
    int r = store_instance_get(viewer->store, route->instance_uuid, &instance);
    if (r == -ENOENT ||
        (r == 0 && instance.state != INSTANCE_RUNNING && instance.state != INSTANCE_STOPPED)) {
        not_found(response);
        return -ENOENT;
    }
    if (r < 0) {
        internal_error(response);
        return r;
    }
    *ret_instance = instance;
    return 0;
}

static bool cookie_ok(const HttpRequest *request, const StoreInstance *instance)
{
    return access_secret_matches(http_request_cookie(request, ACCESS_COOKIE_NAME),
                                 instance->console_hash);
}

/* Whether the request's Origin may act on this instance's console; a 403 otherwise. */
static bool origin_ok(Viewer *viewer, const HttpRequest *request, const char *instance_uuid,
                      HttpResponse *response)
{
    _cleanup_free_ char *base = NULL, *own = NULL;
    if (access_base(viewer->base_template, instance_uuid, &base) < 0 ||
        access_origin(base, &own) < 0) {
        internal_error(response);
        return false;
    }
    if (access_origin_allowed(http_request_header(request, "Origin"), own,
                              viewer->config->console_origins))
        return true;
    log_warn("instance %s: console refused to %s: Origin is not %s or in console_origins",
             instance_uuid, request->remote, own);
    http_response_error(response, 403, "origin_refused",
                        "this console may only be opened from its own page");
    return false;
}

static void serve_static(HttpResponse *response, const ViewerAsset *asset)
{
    char *body = malloc(asset->len + 1);
    if (!body) {
        internal_error(response);
        return;
    }
    memcpy(body, asset->data, asset->len + 1);
    response->status = 200;
    response->body = body;
    response->body_len = asset->len;
    response->content_type = asset->content_type;
    response->cache_control = "no-cache";
}

/* One of noVNC's ES modules: "novnc/core/…" or "novnc/vendor/…", ".js" only. */
static void serve_novnc(Viewer *viewer, const char *asset, HttpResponse *response)
{
    const char *rest = asset + strlen("novnc/");
    size_t len = strlen(rest);
    if ((strncmp(rest, "core/", 5) != 0 && strncmp(rest, "vendor/", 7) != 0) || len < 4 ||
        strcmp(rest + len - 3, ".js") != 0) {
        not_found(response);
        return;
    }
    _cleanup_free_ char *path = NULL, *data = NULL;
    size_t size;
    if (asprintf(&path, "%s/%s", viewer->config->novnc_dir, rest) < 0) {
        internal_error(response);
        return;
    }
    int r = util_read_file(path, VIEWER_NOVNC_FILE_MAX, &data, &size);
    if (r == -ENOENT || r == -ENOTDIR || r == -EINVAL) {
        not_found(response);
        return;
    }
    if (r < 0) {
        log_error("console: cannot read %s: %s", path, strerror(-r));
        internal_error(response);
        return;
    }
    response->status = 200;
    response->body = TAKE_PTR(data);
    response->body_len = size;
    response->content_type = "text/javascript; charset=utf-8";
    response->cache_control = "public, max-age=3600";
}

static void serve_asset(Viewer *viewer, const Route *route, HttpResponse *response)
{
    if (strncmp(route->asset, "novnc/", 6) == 0) {
        serve_novnc(viewer, route->asset, response);
        return;
    }
    /* The page itself lives at the directory's own URL, not under a name. */
    const ViewerAsset *asset =
        strcmp(route->asset, "index.html") == 0 ? NULL : viewer_asset_find(route->asset);
    if (!asset) {
        not_found(response);
        return;
    }
    serve_static(response, asset);
}

/* POST session {"key": …}: the URL's secret becomes the console cookie. */
static void exchange_secret(Viewer *viewer, const StoreInstance *instance,
                            const HttpRequest *request, HttpResponse *response)
{
    if (!origin_ok(viewer, request, instance->uuid, response))
        return;
    cJSON *json = cJSON_ParseWithLength(request->body, request->body_len);
    const char *key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(json, "key"));
    bool ok = key && access_secret_matches(key, instance->console_hash);
    _cleanup_free_ char *base = NULL, *cookie = NULL;
    int r = ok ? access_base(viewer->base_template, instance->uuid, &base) : 0;
    if (r == 0 && ok)
        r = access_cookie(base, instance->uuid, key, &cookie);
    cJSON_Delete(json);
    if (r < 0) {
        internal_error(response);
        return;
    }
    if (!ok) {
        log_warn("instance %s: console key refused (from %s)", instance->uuid, request->remote);
        http_response_error(response, 403, "forbidden",
                            "this access URL is not valid (a newer one may have replaced it)");
        return;
    }
    log_info("instance %s: console key exchanged for a cookie (from %s)", instance->uuid,
             request->remote);
    response->status = 204;
    response->set_cookie = TAKE_PTR(cookie);
}

static void report_status(const StoreInstance *instance, const HttpRequest *request,
                          HttpResponse *response)
{
    if (!cookie_ok(request, instance)) {
        forbidden(response);
        return;
    }
    cJSON *json = cJSON_CreateObject();
    if (!json ||
        !cJSON_AddStringToObject(json, "status",
                                 instance->state == INSTANCE_RUNNING ? "running" : "stopped") ||
        !cJSON_AddBoolToObject(json, "ready", instance->ready_at != 0) ||
        !cJSON_AddStringToObject(json, "clipboard",
                                 instance->clipboard[0] ? instance->clipboard : "none")) {
        cJSON_Delete(json);
        internal_error(response);
        return;
    }
    http_response_json(response, 200, json);
}

/* What an accepted upgrade carries from the answer to the moment the socket is ours. */
typedef struct {
    ConsoleRelay *relay;
    char instance_uuid[UUID_STR_LEN];
    int vnc_fd;
    ConsoleClipboard clipboard;
} Upgrade;

static void upgrade_close(void *upgrade)
{
    http_upgrade_close(upgrade);
}

static void on_upgraded(void *data, int fd, const void *pending, size_t pending_len,
                        HttpUpgrade *upgrade)
{
    Upgrade *u = data;
    int r = console_relay_attach(u->relay, u->instance_uuid, fd, pending, pending_len, u->vnc_fd,
                                 u->clipboard, upgrade_close, upgrade);
    if (r < 0)
        log_warn("instance %s: console not opened: %s", u->instance_uuid, strerror(-r));
    free(u);
}

static void on_abandoned(void *data)
{
    Upgrade *u = data;
    close(u->vnc_fd);
    console_relay_release(u->relay, u->instance_uuid);
    free(u);
}

/*
 * The instance's clipboard setting as the relay enforces it. Anything but
 * "to_vm" or "both" ("" in records older than the setting) lets nothing through.
 */
static ConsoleClipboard clipboard_setting(const StoreInstance *instance)
{
    if (strcmp(instance->clipboard, "to_vm") == 0)
        return CONSOLE_CLIPBOARD_TO_VM;
    if (strcmp(instance->clipboard, "both") == 0)
        return CONSOLE_CLIPBOARD_BOTH;
    return CONSOLE_CLIPBOARD_NONE;
}

/*
 * GET websocket: every check that can refuse comes before the 101, so a
 * refusal is a plain HTTP answer; a viewer slot is taken before the
 * instance is looked at again, so a DELETE racing this either hides the
 * instance (404) or finds the slot to revoke.
 */
static void open_console(Viewer *viewer, const Route *route, const StoreInstance *instance,
                         const HttpRequest *request, HttpResponse *response)
{
    if (!cookie_ok(request, instance)) {
        forbidden(response);
        return;
    }
    if (!origin_ok(viewer, request, instance->uuid, response))
        return;
    const char *reason;
    const char *key = http_request_header(request, "Sec-WebSocket-Key");
    int r = ws_handshake_check(http_request_header(request, "Upgrade"),
                               http_request_header(request, "Connection"),
                               http_request_header(request, "Sec-WebSocket-Version"), key, &reason);
    if (r == -EPROTONOSUPPORT) {
        response->websocket_version = "13";
        http_response_error(response, 426, "upgrade_required", "%s", reason);
        return;
    }
    if (r < 0) {
        http_response_error(response, 400, "bad_handshake", "%s", reason);
        return;
    }
    if (instance->state != INSTANCE_RUNNING) {
        http_response_error(response, 409, "not_running", "the virtual machine is not running");
        return;
    }
    r = console_relay_reserve(viewer->relay, instance->uuid);
    if (r == -EUSERS) {
        response->retry_after = 5;
        http_response_error(response, 429, "too_many_viewers",
                            "this browser already has its maximum of %u viewers",
                            viewer->config->console_max_viewers);
        return;
    }
    if (r < 0) {
        response->retry_after = 5;
        http_response_error(response, 503, "unavailable", "the console is not available");
        return;
    }

    StoreInstance now;
    _cleanup_free_ char *why = NULL;
    _cleanup_free_ Upgrade *u = calloc(1, sizeof(*u));
    char accept[WS_ACCEPT_KEY_LEN];
    if (find_instance(viewer, route, &now, response) < 0) {
        console_relay_release(viewer->relay, instance->uuid);
        return;
    }
    if (!u || ws_accept_key(key, accept) < 0 || !(response->websocket_accept = strdup(accept))) {
        console_relay_release(viewer->relay, instance->uuid);
        internal_error(response);
        return;
    }
    r = virt_domain_open_console(viewer->virt, instance->uuid, &u->vnc_fd, &why);
    if (r < 0) {
        log_error("instance %s: cannot open its console: %s", instance->uuid,
                  why ? why : strerror(-r));
        console_relay_release(viewer->relay, instance->uuid);
        free(response->websocket_accept);
        response->websocket_accept = NULL;
        response->retry_after = 5;
        http_response_error(response, 503, "console_unavailable",
                            "the virtual machine's console cannot be opened; try again");
        return;
    }
    u->relay = viewer->relay;
    snprintf(u->instance_uuid, sizeof(u->instance_uuid), "%s", instance->uuid);
    u->clipboard = clipboard_setting(&now);
    log_info("instance %s: console requested from %s", instance->uuid, request->remote);
    response->status = 101;
    response->upgraded = on_upgraded;
    response->abandoned = on_abandoned;
    response->upgrade_data = TAKE_PTR(u);
}

void viewer_handle(Viewer *viewer, const Route *route, const HttpRequest *request,
                   HttpResponse *response)
{
    StoreInstance instance;
    if (find_instance(viewer, route, &instance, response) < 0)
        return;
    switch (route->id) {
    case ROUTE_CONSOLE_BARE:
        /* Relative, so a path prefix added by a reverse proxy survives; the #key= fragment does
         * too, since browsers carry it across a redirect that has none. */
        if (asprintf(&response->location, "%s/", route->instance_uuid) < 0)
            response->location = NULL;
        http_response_error(response, 308, "moved", "the console is at %s/", route->instance_uuid);
        break;
    case ROUTE_CONSOLE_PAGE:
        serve_static(response, viewer_asset_find("index.html"));
        response->csp = viewer_csp;
        break;
    case ROUTE_CONSOLE_ASSET:
        serve_asset(viewer, route, response);
        break;
    case ROUTE_CONSOLE_SESSION:
        exchange_secret(viewer, &instance, request, response);
        break;
    case ROUTE_CONSOLE_STATUS:
        report_status(&instance, request, response);
        break;
    case ROUTE_CONSOLE_SOCKET:
        open_console(viewer, route, &instance, request, response);
        break;
    default:
        not_found(response);
        break;
    }
}
