/*
 * The URL table: every route legbad answers, in one place (route.c).
 * Pure string work on the path as sent (never percent-decoded: an encoded
 * path matches no route), so it is unit-tested without HTTP.
 */
#pragma once

#include <stdbool.h>

#include "uuid.h"

/* Paths longer than this are not routes. */
#define ROUTE_PATH_MAX 512

typedef enum {
    ROUTE_INSTANCES = 0,   /* /orgs/{org_uuid}/api/instances */
    ROUTE_INSTANCE,        /* /orgs/{org_uuid}/api/instances/{instance_uuid} */
    ROUTE_IMAGES,          /* /orgs/{org_uuid}/api/images */
    ROUTE_SIZES,           /* /orgs/{org_uuid}/api/sizes */
    ROUTE_INSTANCE_ACCESS, /* /orgs/{org_uuid}/api/instances/{instance_uuid}/access */
    ROUTE_INSTANCE_EXTEND, /* /orgs/{org_uuid}/api/instances/{instance_uuid}/extend */
    ROUTE_INSTANCE_STOP,   /* /orgs/{org_uuid}/api/instances/{instance_uuid}/stop */
    ROUTE_INSTANCE_START,  /* /orgs/{org_uuid}/api/instances/{instance_uuid}/start */
    /* The access URL's side: no Bearer token, the console cookie instead. */
    ROUTE_CONSOLE_BARE,    /* /console/{instance_uuid} (redirects to the page) */
    ROUTE_CONSOLE_PAGE,    /* /console/{instance_uuid}/ */
    ROUTE_CONSOLE_SESSION, /* /console/{instance_uuid}/session */
    ROUTE_CONSOLE_STATUS,  /* /console/{instance_uuid}/status */
    ROUTE_CONSOLE_SOCKET,  /* /console/{instance_uuid}/websocket */
    ROUTE_CONSOLE_ASSET,   /* /console/{instance_uuid}/{asset...} */
    _ROUTE_MAX,
} RouteId;

typedef enum {
    ROUTE_METHOD_GET = 1 << 0,
    ROUTE_METHOD_POST = 1 << 1,
    ROUTE_METHOD_DELETE = 1 << 2,
} RouteMethod;

typedef struct {
    RouteId id;
    char org_uuid[UUID_STR_LEN];      /* normalised */
    char instance_uuid[UUID_STR_LEN]; /* normalised, for routes with an instance */
    /*
     * ROUTE_CONSOLE_ASSET: the rest of the path, "viewer.js" or
     * "novnc/core/rfb.js": segments of letters, digits, '-', '_' and '.',
     * none starting with '.', so it never climbs out of its directory.
     */
    char asset[ROUTE_PATH_MAX + 1];
} Route;

typedef enum {
    ROUTE_OK = 0,
    ROUTE_NOT_FOUND,        /* no such route */
    ROUTE_BAD_ORG_UUID,     /* shape matches, org segment is not a UUID */
    ROUTE_BAD_INSTANCE_UUID /* shape matches, instance segment is not a UUID */
} RouteResult;

RouteResult route_match(const char *path, Route *ret_route);
/* 0 for an unknown method name. */
RouteMethod route_method_parse(const char *method);
bool route_allows(RouteId id, RouteMethod method);
/* Whether the route belongs to the console (cookie, not Bearer token). */
bool route_is_console(RouteId id);
/* Whether a path lies under the console's part of the URL space, matched or not. */
bool route_path_is_console(const char *path);
/* The Allow header value for a route, e.g. "GET, POST". */
const char *route_allow_header(RouteId id);
