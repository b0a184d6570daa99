#include "route.h"

#include <string.h>

#include "util.h"

/*
 * Every route: a pattern of literal segments and "{org}"/"{instance}"
 * placeholders, and the methods it answers. The path must match segment
 * for segment: no empty segments, no dot segments, and no trailing slash
 * unless the route has one. "{asset}" ends a pattern and takes the rest of
 * the path, one or more safe segments.
 */
static const struct {
    RouteId id;
    const char *const segments[7];
    bool trailing_slash;
    unsigned methods;
    const char *allow;
} routes[] = {
    {ROUTE_INSTANCES,
     {"orgs", "{org}", "api", "instances", NULL},
     false,
     ROUTE_METHOD_GET | ROUTE_METHOD_POST,
     "GET, POST"},
    {ROUTE_INSTANCE,
     {"orgs", "{org}", "api", "instances", "{instance}", NULL},
     false,
     ROUTE_METHOD_GET | ROUTE_METHOD_DELETE,
     "GET, DELETE"},
    {ROUTE_INSTANCE_ACCESS,
     {"orgs", "{org}", "api", "instances", "{instance}", "access", NULL},
     false,
     ROUTE_METHOD_POST,
     "POST"},
    {ROUTE_INSTANCE_EXTEND,
     {"orgs", "{org}", "api", "instances", "{instance}", "extend", NULL},
     false,
     ROUTE_METHOD_POST,
     "POST"},
    {ROUTE_INSTANCE_STOP,
     {"orgs", "{org}", "api", "instances", "{instance}", "stop", NULL},
     false,
     ROUTE_METHOD_POST,
     "POST"},
    {ROUTE_INSTANCE_START,
     {"orgs", "{org}", "api", "instances", "{instance}", "start", NULL},
     false,
     ROUTE_METHOD_POST,
     "POST"},
    {ROUTE_IMAGES, {"orgs", "{org}", "api", "images", NULL}, false, ROUTE_METHOD_GET, "GET"},
    {ROUTE_SIZES, {"orgs", "{org}", "api", "sizes", NULL}, false, ROUTE_METHOD_GET, "GET"},
    {ROUTE_CONSOLE_BARE, {"console", "{instance}", NULL}, false, ROUTE_METHOD_GET, "GET"},
    {ROUTE_CONSOLE_PAGE, {"console", "{instance}", NULL}, true, ROUTE_METHOD_GET, "GET"},
    {ROUTE_CONSOLE_SESSION,
     {"console", "{instance}", "session", NULL},
     false,
     ROUTE_METHOD_POST,
     "POST"},
    {ROUTE_CONSOLE_STATUS,
     {"console", "{instance}", "status", NULL},
     false,
     ROUTE_METHOD_GET,
     "GET"},
    {ROUTE_CONSOLE_SOCKET,
     {"console", "{instance}", "websocket", NULL},
     false,
     ROUTE_METHOD_GET,
     "GET"},
    {ROUTE_CONSOLE_ASSET,
     {"console", "{instance}", "{asset}", NULL},
     false,
     ROUTE_METHOD_GET,
     "GET"},
};

#define ROUTE_SEGMENTS_MAX 12

/*
 * Splits "/a/b/c" into its segments; fails on "//", too many segments, or
 * a trailing "/" (reported through ret_trailing instead, when it is the
 * only empty segment).
 */
static int split_path(char *path, char *ret_segments[ROUTE_SEGMENTS_MAX], size_t *ret_count,
                      bool *ret_trailing)
{
    size_t n = 0, len = strlen(path);
    if (path[0] != '/')
        return -1;
    *ret_trailing = len > 1 && path[len - 1] == '/';
    if (*ret_trailing)
        path[len - 1] = '\0';
    char *p = path + 1;
    for (;;) {
        char *slash = strchr(p, '/');
        if (slash)
            *slash = '\0';
        if (*p == '\0' || n == ROUTE_SEGMENTS_MAX)
            return -1;
        ret_segments[n++] = p;
        if (!slash)
            break;
        p = slash + 1;
    }
    *ret_count = n;
    return 0;
}

/* An asset segment: a file or directory name that cannot be "." or ".." or hidden. */
static bool asset_segment_ok(const char *segment)
{
    if (segment[0] == '.')
        return false;
    for (const char *p = segment; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* The rest of the path from segment i, joined again with '/'; false if a segment is unsafe. */
static bool take_asset(char *const segments[], size_t i, size_t count, char *ret, size_t size)
{
    size_t o = 0;
    for (; i < count; i++) {
        if (!asset_segment_ok(segments[i]))
            return false;
        int n = snprintf(ret + o, size - o, "%s%s", o ? "/" : "", segments[i]);
        if (n < 0 || (size_t)n >= size - o)
            return false;
        o += (size_t)n;
    }
    return o > 0;
}

RouteResult route_match(const char *path, Route *ret_route)
{
    char buf[ROUTE_PATH_MAX + 1];
    char *segments[ROUTE_SEGMENTS_MAX];
    size_t count;
    bool trailing;

    if (!path || strnlen(path, ROUTE_PATH_MAX + 1) > ROUTE_PATH_MAX)
        return ROUTE_NOT_FOUND;
    strcpy(buf, path);
    if (split_path(buf, segments, &count, &trailing) < 0)
        return ROUTE_NOT_FOUND;

    for (size_t r = 0; r < ARRAY_SIZE(routes); r++) {
        Route route = {.id = routes[r].id};
        RouteResult bad = ROUTE_OK;
        bool matched = true, took_asset = false;
        size_t i;
        for (i = 0; routes[r].segments[i] && i < count; i++) {
            const char *want = routes[r].segments[i];
            if (strcmp(want, "{org}") == 0) {
                if (uuid_normalize(segments[i], route.org_uuid) < 0 && bad == ROUTE_OK)
                    bad = ROUTE_BAD_ORG_UUID;
            } else if (strcmp(want, "{instance}") == 0) {
                if (uuid_normalize(segments[i], route.instance_uuid) < 0 && bad == ROUTE_OK)
                    bad = ROUTE_BAD_INSTANCE_UUID;
            } else if (strcmp(want, "{asset}") == 0) {
                took_asset = take_asset(segments, i, count, route.asset, sizeof(route.asset));
                matched = took_asset;
                break;
            } else if (strcmp(want, segments[i]) != 0) {
                matched = false;
                break;
            }
        }
        if (!matched || trailing != routes[r].trailing_slash)
            continue;
        if (!took_asset && (routes[r].segments[i] || i != count))
            continue;
        if (bad != ROUTE_OK)
            return bad;
        *ret_route = route;
        return ROUTE_OK;
    }
    return ROUTE_NOT_FOUND;
}

RouteMethod route_method_parse(const char *method)
{
    if (strcmp(method, "GET") == 0)
        return ROUTE_METHOD_GET;
    if (strcmp(method, "POST") == 0)
        return ROUTE_METHOD_POST;
    if (strcmp(method, "DELETE") == 0)
        return ROUTE_METHOD_DELETE;
    return 0;
}

bool route_allows(RouteId id, RouteMethod method)
{
    for (size_t r = 0; r < ARRAY_SIZE(routes); r++)
        if (routes[r].id == id)
            return (routes[r].methods & method) != 0;
    return false;
}

bool route_is_console(RouteId id)
{
    return id >= ROUTE_CONSOLE_BARE && id <= ROUTE_CONSOLE_ASSET;
}

/* Every console route's first segment (the table above). */
bool route_path_is_console(const char *path)
{
    return path && strncmp(path, "/console/", 9) == 0;
}

const char *route_allow_header(RouteId id)
{
    for (size_t r = 0; r < ARRAY_SIZE(routes); r++)
        if (routes[r].id == id)
            return routes[r].allow;
    return "";
}
