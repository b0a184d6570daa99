/*
 * libFuzzer target for the URL table (route.c): any bytes, as the
 * NUL-terminated path libmicrohttpd would hand over, and as a method name.
 *
 * Beyond not crashing, a match must be exact: the route rebuilt from what
 * route_match() returns is the path itself (UUIDs lowercased), its UUIDs
 * are canonical, an asset cannot leave its directory, and matching the
 * rebuilt path again gives the same route.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"

#define FUZZ_NAME "fuzz_route"
#include "fuzz_check.h"

/* The 8-4-4-4-12 form in lowercase hex, exactly. */
static bool uuid_canonical(const char *s)
{
    for (size_t i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return s[36] == '\0';
}

/* Segments of [A-Za-z0-9._-], none empty and none starting with '.'. */
static bool asset_safe(const char *asset)
{
    const char *segment = asset;
    if (asset[0] == '\0')
        return false;
    for (const char *p = asset;; p++) {
        if (*p == '/' || *p == '\0') {
            if (p == segment || segment[0] == '.')
                return false;
            if (*p == '\0')
                return true;
            segment = p + 1;
            continue;
        }
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
}

/* The path a route stands for; in_uuid marks the bytes that came from a UUID. */
typedef struct {
    char text[2 * ROUTE_PATH_MAX];
    bool in_uuid[2 * ROUTE_PATH_MAX];
    size_t len;
} Rebuilt;

static void add(Rebuilt *b, const char *s, bool uuid)
{
    size_t n = strlen(s);
    CHECK(b->len + n < sizeof(b->text));
    memcpy(b->text + b->len, s, n);
    memset(b->in_uuid + b->len, uuid, n);
    b->len += n;
    b->text[b->len] = '\0';
}

static void rebuild(const Route *route, Rebuilt *b)
{
    b->len = 0;
    b->text[0] = '\0';
    if (route_is_console(route->id)) {
        add(b, "/console/", false);
        add(b, route->instance_uuid, true);
    } else {
        add(b, "/orgs/", false);
        add(b, route->org_uuid, true);
        add(b, "/api/", false);
    }
    switch (route->id) {
    case ROUTE_INSTANCES:
        add(b, "instances", false);
        break;
    case ROUTE_INSTANCE:
        add(b, "instances/", false);
        add(b, route->instance_uuid, true);
        break;
    case ROUTE_INSTANCE_ACCESS:
    case ROUTE_INSTANCE_EXTEND:
    case ROUTE_INSTANCE_STOP:
    case ROUTE_INSTANCE_START:
        add(b, "instances/", false);
        add(b, route->instance_uuid, true);
        add(b,
            route->id == ROUTE_INSTANCE_ACCESS   ? "/access"
            : route->id == ROUTE_INSTANCE_EXTEND ? "/extend"
            : route->id == ROUTE_INSTANCE_STOP   ? "/stop"
                                                 : "/start",
            false);
        break;
    case ROUTE_IMAGES:
        add(b, "images", false);
        break;
    case ROUTE_SIZES:
        add(b, "sizes", false);
        break;
    case ROUTE_CONSOLE_BARE:
        break;
    case ROUTE_CONSOLE_PAGE:
        add(b, "/", false);
        break;
    case ROUTE_CONSOLE_SESSION:
        add(b, "/session", false);
        break;
    case ROUTE_CONSOLE_STATUS:
        add(b, "/status", false);
        break;
    case ROUTE_CONSOLE_SOCKET:
        add(b, "/websocket", false);
        break;
    case ROUTE_CONSOLE_ASSET:
        add(b, "/", false);
        add(b, route->asset, false);
        break;
    default:
        CHECK(!"a route id rebuild() does not know: add the new route here");
    }
}

static bool lower_equal(char a, char b)
{
    if (a >= 'A' && a <= 'Z')
        a = (char)(a - 'A' + 'a');
    return a == b;
}

static void check_match(const char *path, const Route *route)
{
    CHECK(route->id >= 0 && route->id < _ROUTE_MAX);
    CHECK(route->asset[0] == '\0' || route->id == ROUTE_CONSOLE_ASSET);

    bool has_org = !route_is_console(route->id);
    bool has_instance =
        route->id != ROUTE_INSTANCES && route->id != ROUTE_IMAGES && route->id != ROUTE_SIZES;
    CHECK(has_org ? uuid_canonical(route->org_uuid) : route->org_uuid[0] == '\0');
    CHECK(has_instance ? uuid_canonical(route->instance_uuid) : route->instance_uuid[0] == '\0');
    if (route->id == ROUTE_CONSOLE_ASSET) {
        CHECK(asset_safe(route->asset));
        /* Those three have routes of their own, which come first. */
        CHECK(strcmp(route->asset, "session") != 0);
        CHECK(strcmp(route->asset, "status") != 0);
        CHECK(strcmp(route->asset, "websocket") != 0);
    }

    /* The match is the whole path, byte for byte but for the UUIDs' case. */
    static Rebuilt b;
    rebuild(route, &b);
    CHECK(strlen(path) == b.len);
    for (size_t i = 0; i < b.len; i++)
        CHECK(path[i] == b.text[i] || (b.in_uuid[i] && lower_equal(path[i], b.text[i])));

    Route again;
    CHECK(route_match(b.text, &again) == ROUTE_OK);
    CHECK(memcmp(&again, route, sizeof(again)) == 0);
}

static void check_methods(const char *name)
{
    RouteMethod method = route_method_parse(name);
    if (strcmp(name, "GET") == 0)
        CHECK(method == ROUTE_METHOD_GET);
    else if (strcmp(name, "POST") == 0)
        CHECK(method == ROUTE_METHOD_POST);
    else if (strcmp(name, "DELETE") == 0)
        CHECK(method == ROUTE_METHOD_DELETE);
    else
        CHECK(method == 0);

    static const struct {
        RouteMethod method;
        const char *name;
    } all[] = {
        {ROUTE_METHOD_GET, "GET"}, {ROUTE_METHOD_POST, "POST"}, {ROUTE_METHOD_DELETE, "DELETE"}};
    for (int id = 0; id < _ROUTE_MAX; id++) {
        const char *allow = route_allow_header((RouteId)id);
        CHECK(allow[0] != '\0');
        CHECK(!route_allows((RouteId)id, 0));
        for (size_t m = 0; m < sizeof(all) / sizeof(all[0]); m++)
            CHECK(route_allows((RouteId)id, all[m].method) == (strstr(allow, all[m].name) != NULL));
        if (method != 0)
            (void)route_allows((RouteId)id, method);
    }
    CHECK(!route_allows(_ROUTE_MAX, ROUTE_METHOD_GET));
    CHECK(route_allow_header(_ROUTE_MAX)[0] == '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = malloc(size + 1);
    if (!path)
        return 0;
    memcpy(path, data, size);
    path[size] = '\0';

    Route route;
    memset(&route, 0xa5, sizeof(route));
    Route untouched = route;
    RouteResult r = route_match(path, &route);
    switch (r) {
    case ROUTE_OK:
        check_match(path, &route);
        break;
    case ROUTE_NOT_FOUND:
    case ROUTE_BAD_ORG_UUID:
    case ROUTE_BAD_INSTANCE_UUID:
        CHECK(memcmp(&route, &untouched, sizeof(route)) == 0);
        break;
    default:
        CHECK(!"unknown RouteResult");
    }
    if (r != ROUTE_NOT_FOUND)
        CHECK(strlen(path) <= ROUTE_PATH_MAX && path[0] == '/');

    check_methods(path);
    free(path);
    return 0;
}
