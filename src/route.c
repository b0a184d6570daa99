#include "route.h"

#include <string.h>

#include "util.h"

/*
 * Every route: a pattern of literal segments and "{org}"/"{instance}"
 * placeholders, and the methods it answers. The path must match segment
 * for segment: no empty segments, no trailing slash, no dot segments.
 */
static const struct {
    RouteId id;
    const char *const segments[6];
    unsigned methods;
    const char *allow;
} routes[] = {
    {ROUTE_INSTANCES,
     {"orgs", "{org}", "api", "instances", NULL},
     ROUTE_METHOD_GET | ROUTE_METHOD_POST,
     "GET, POST"},
    {ROUTE_INSTANCE,
     {"orgs", "{org}", "api", "instances", "{instance}", NULL},
     ROUTE_METHOD_GET | ROUTE_METHOD_DELETE,
     "GET, DELETE"},
    {ROUTE_IMAGES, {"orgs", "{org}", "api", "images", NULL}, ROUTE_METHOD_GET, "GET"},
    {ROUTE_SIZES, {"orgs", "{org}", "api", "sizes", NULL}, ROUTE_METHOD_GET, "GET"},
};

#define ROUTE_SEGMENTS_MAX 8

/* Splits "/a/b/c" into its segments; fails on "//", a trailing "/" or too many. */
static int split_path(char *path, char *ret_segments[ROUTE_SEGMENTS_MAX], size_t *ret_count)
{
    size_t n = 0;
    if (path[0] != '/')
        return -1;
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

RouteResult route_match(const char *path, Route *ret_route)
{
    char buf[ROUTE_PATH_MAX + 1];
    char *segments[ROUTE_SEGMENTS_MAX];
    size_t count;

    if (!path || strnlen(path, ROUTE_PATH_MAX + 1) > ROUTE_PATH_MAX)
        return ROUTE_NOT_FOUND;
    strcpy(buf, path);
    if (split_path(buf, segments, &count) < 0)
        return ROUTE_NOT_FOUND;

    for (size_t r = 0; r < ARRAY_SIZE(routes); r++) {
        Route route = {.id = routes[r].id};
        RouteResult bad = ROUTE_OK;
        size_t i;
        for (i = 0; routes[r].segments[i] && i < count; i++) {
            const char *want = routes[r].segments[i];
            if (strcmp(want, "{org}") == 0) {
                if (uuid_normalize(segments[i], route.org_uuid) < 0 && bad == ROUTE_OK)
                    bad = ROUTE_BAD_ORG_UUID;
            } else if (strcmp(want, "{instance}") == 0) {
                if (uuid_normalize(segments[i], route.instance_uuid) < 0 && bad == ROUTE_OK)
                    bad = ROUTE_BAD_INSTANCE_UUID;
            } else if (strcmp(want, segments[i]) != 0) {
                break;
            }
        }
        if (routes[r].segments[i] || i != count)
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

const char *route_allow_header(RouteId id)
{
    for (size_t r = 0; r < ARRAY_SIZE(routes); r++)
        if (routes[r].id == id)
            return routes[r].allow;
    return "";
}
