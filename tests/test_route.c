/* Routing: which paths are routes, what they capture, which methods they allow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "route.h"

#define ORG "0b6f8c1e-3a5d-4e2f-9a7b-1c2d3e4f5a6b"
#define INST "7e57a1b2-c3d4-4e5f-8a9b-0c1d2e3f4a5b"

static void test_instances_collection(void **state)
{
    Route route;
    assert_int_equal(route_match("/orgs/" ORG "/api/instances", &route), ROUTE_OK);
    assert_int_equal(route.id, ROUTE_INSTANCES);
    assert_string_equal(route.org_uuid, ORG);
}

static void test_single_instance(void **state)
{
    Route route;
    assert_int_equal(route_match("/orgs/" ORG "/api/instances/" INST, &route), ROUTE_OK);
    assert_int_equal(route.id, ROUTE_INSTANCE);
    assert_string_equal(route.org_uuid, ORG);
    assert_string_equal(route.instance_uuid, INST);
}

static void test_catalog_routes(void **state)
{
    Route route;
    assert_int_equal(route_match("/orgs/" ORG "/api/images", &route), ROUTE_OK);
    assert_int_equal(route.id, ROUTE_IMAGES);
    assert_string_equal(route.org_uuid, ORG);
    assert_int_equal(route_match("/orgs/" ORG "/api/sizes", &route), ROUTE_OK);
    assert_int_equal(route.id, ROUTE_SIZES);
    assert_int_equal(route_match("/orgs/" ORG "/api/sizes/small", &route), ROUTE_NOT_FOUND);
    assert_int_equal(route_match("/orgs/x/api/images", &route), ROUTE_BAD_ORG_UUID);
    assert_true(route_allows(ROUTE_IMAGES, ROUTE_METHOD_GET));
    assert_false(route_allows(ROUTE_IMAGES, ROUTE_METHOD_POST));
    assert_false(route_allows(ROUTE_SIZES, ROUTE_METHOD_DELETE));
    assert_string_equal(route_allow_header(ROUTE_SIZES), "GET");
}

static void test_uppercase_uuid_is_normalised(void **state)
{
    Route route;
    assert_int_equal(
        route_match("/orgs/0B6F8C1E-3A5D-4E2F-9A7B-1C2D3E4F5A6B/api/instances", &route), ROUTE_OK);
    assert_string_equal(route.org_uuid, ORG);
}

static void test_bad_uuids(void **state)
{
    Route route;
    assert_int_equal(route_match("/orgs/not-a-uuid/api/instances", &route), ROUTE_BAD_ORG_UUID);
    assert_int_equal(route_match("/orgs/" ORG "/api/instances/123", &route),
                     ROUTE_BAD_INSTANCE_UUID);
    assert_int_equal(route_match("/orgs/" ORG "x/api/instances", &route), ROUTE_BAD_ORG_UUID);
    assert_int_equal(
        route_match("/orgs/0b6f8c1e3a5d4e2f9a7b1c2d3e4f5a6b0000/api/instances", &route),
        ROUTE_BAD_ORG_UUID);
}

static void test_not_routes(void **state)
{
    static const char *const paths[] = {
        "",
        "/",
        "/orgs",
        "/orgs/" ORG,
        "/orgs/" ORG "/api",
        "/orgs/" ORG "/api/instances/",
        "/orgs/" ORG "/api/instances//",
        "//orgs/" ORG "/api/instances",
        "/orgs//" ORG "/api/instances",
        "/orgs/" ORG "/api/../api/instances",
        "/orgs/" ORG "/./api/instances",
        "/orgs/" ORG "/api/instances/" INST "/extra",
        "/orgs/" ORG "/api/instances/" INST "/a/b/c/d",
        "/ORGS/" ORG "/api/instances",
        "orgs/" ORG "/api/instances",
        "/orgs/" ORG "/api/instance",
        "/orgs/" ORG "/api/instances\n",
    };
    Route route;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        assert_int_equal(route_match(paths[i], &route), ROUTE_NOT_FOUND);
    assert_int_equal(route_match(NULL, &route), ROUTE_NOT_FOUND);
}

static void test_overlong_path(void **state)
{
    char path[ROUTE_PATH_MAX + 64];
    memset(path, 'a', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    Route route;
    assert_int_equal(route_match(path, &route), ROUTE_NOT_FOUND);
}

static void test_methods(void **state)
{
    assert_int_equal(route_method_parse("GET"), ROUTE_METHOD_GET);
    assert_int_equal(route_method_parse("POST"), ROUTE_METHOD_POST);
    assert_int_equal(route_method_parse("DELETE"), ROUTE_METHOD_DELETE);
    assert_int_equal(route_method_parse("get"), 0);
    assert_int_equal(route_method_parse("PUT"), 0);

    assert_true(route_allows(ROUTE_INSTANCES, ROUTE_METHOD_GET));
    assert_true(route_allows(ROUTE_INSTANCES, ROUTE_METHOD_POST));
    assert_false(route_allows(ROUTE_INSTANCES, ROUTE_METHOD_DELETE));
    assert_false(route_allows(ROUTE_INSTANCES, 0));
    assert_true(route_allows(ROUTE_INSTANCE, ROUTE_METHOD_GET));
    assert_true(route_allows(ROUTE_INSTANCE, ROUTE_METHOD_DELETE));
    assert_false(route_allows(ROUTE_INSTANCE, ROUTE_METHOD_POST));

    assert_string_equal(route_allow_header(ROUTE_INSTANCES), "GET, POST");
    assert_string_equal(route_allow_header(ROUTE_INSTANCE), "GET, DELETE");
}

static void test_instance_access(void **state)
{
    Route route;
    assert_int_equal(route_match("/orgs/" ORG "/api/instances/" INST "/access", &route), ROUTE_OK);
    assert_int_equal(route.id, ROUTE_INSTANCE_ACCESS);
    assert_string_equal(route.org_uuid, ORG);
    assert_string_equal(route.instance_uuid, INST);
    assert_false(route_is_console(route.id));

    assert_true(route_allows(ROUTE_INSTANCE_ACCESS, ROUTE_METHOD_POST));
    assert_false(route_allows(ROUTE_INSTANCE_ACCESS, ROUTE_METHOD_GET));
    assert_false(route_allows(ROUTE_INSTANCE_ACCESS, ROUTE_METHOD_DELETE));
    assert_string_equal(route_allow_header(ROUTE_INSTANCE_ACCESS), "POST");

    assert_int_equal(route_match("/orgs/" ORG "/api/instances/" INST "/access/", &route),
                     ROUTE_NOT_FOUND);
    assert_int_equal(route_match("/orgs/" ORG "/api/instances/" INST "/acces", &route),
                     ROUTE_NOT_FOUND);
    assert_int_equal(route_match("/orgs/" ORG "/api/instances/" INST "/access/x", &route),
                     ROUTE_NOT_FOUND);
    assert_int_equal(route_match("/orgs/" ORG "/api/instances/nope/access", &route),
                     ROUTE_BAD_INSTANCE_UUID);
    assert_int_equal(route_match("/orgs/nope/api/instances/" INST "/access", &route),
                     ROUTE_BAD_ORG_UUID);
}

/* POST …/extend, …/stop and …/start: one instance each, POST only, not console routes. */
static void test_instance_lifecycle_routes(void **state)
{
    static const struct {
        const char *action;
        RouteId id;
    } cases[] = {
        {"extend", ROUTE_INSTANCE_EXTEND},
        {"stop", ROUTE_INSTANCE_STOP},
        {"start", ROUTE_INSTANCE_START},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[256];
        Route route;
        memset(&route, 0xab, sizeof(route));
        snprintf(path, sizeof(path), "/orgs/" ORG "/api/instances/" INST "/%s", cases[i].action);
        if (route_match(path, &route) != ROUTE_OK || route.id != cases[i].id)
            fail_msg("%s: not route %d", path, (int)cases[i].id);
        assert_string_equal(route.org_uuid, ORG);
        assert_string_equal(route.instance_uuid, INST);
        assert_false(route_is_console(route.id));

        assert_true(route_allows(cases[i].id, ROUTE_METHOD_POST));
        assert_false(route_allows(cases[i].id, ROUTE_METHOD_GET));
        assert_false(route_allows(cases[i].id, ROUTE_METHOD_DELETE));
        assert_false(route_allows(cases[i].id, 0));
        assert_string_equal(route_allow_header(cases[i].id), "POST");

        /* Upper-case uuids are the same instance. */
        snprintf(path, sizeof(path),
                 "/orgs/0B6F8C1E-3A5D-4E2F-9A7B-1C2D3E4F5A6B/api/instances/"
                 "7E57A1B2-C3D4-4E5F-8A9B-0C1D2E3F4A5B/%s",
                 cases[i].action);
        assert_int_equal(route_match(path, &route), ROUTE_OK);
        assert_int_equal(route.id, cases[i].id);
        assert_string_equal(route.org_uuid, ORG);
        assert_string_equal(route.instance_uuid, INST);

        /* Exactly this segment where it belongs, nothing after it. */
        static const struct {
            const char *before, *after;
            RouteResult want;
        } wrong[] = {
            {"/orgs/" ORG "/api/instances/" INST "/", "/", ROUTE_NOT_FOUND},
            {"/orgs/" ORG "/api/instances/" INST "/", "/x", ROUTE_NOT_FOUND},
            {"/orgs/" ORG "/api/instances/" INST "/", "%20", ROUTE_NOT_FOUND},
            {"/orgs/" ORG "/api/instances/" INST "//", "", ROUTE_NOT_FOUND},
            {"/orgs/" ORG "/api/", "", ROUTE_NOT_FOUND},
            /* Where the instance uuid goes, the action is a bad uuid. */
            {"/orgs/" ORG "/api/instances/", "", ROUTE_BAD_INSTANCE_UUID},
        };
        for (size_t w = 0; w < sizeof(wrong) / sizeof(wrong[0]); w++) {
            snprintf(path, sizeof(path), "%s%s%s", wrong[w].before, cases[i].action,
                     wrong[w].after);
            RouteResult r = route_match(path, &route);
            if (r != wrong[w].want)
                fail_msg("'%s': %d, expected %d", path, (int)r, (int)wrong[w].want);
        }
        snprintf(path, sizeof(path), "/orgs/" ORG "/api/instances/nope/%s", cases[i].action);
        assert_int_equal(route_match(path, &route), ROUTE_BAD_INSTANCE_UUID);
        snprintf(path, sizeof(path), "/orgs/nope/api/instances/" INST "/%s", cases[i].action);
        assert_int_equal(route_match(path, &route), ROUTE_BAD_ORG_UUID);
    }
    /* Near misses are no routes at all. */
    static const char *const near[] = {
        "/orgs/" ORG "/api/instances/" INST "/Stop",
        "/orgs/" ORG "/api/instances/" INST "/STOP",
        "/orgs/" ORG "/api/instances/" INST "/restart",
        "/orgs/" ORG "/api/instances/" INST "/extends",
        "/orgs/" ORG "/api/instances/" INST "/star",
    };
    for (size_t i = 0; i < sizeof(near) / sizeof(near[0]); i++) {
        Route route;
        if (route_match(near[i], &route) != ROUTE_NOT_FOUND)
            fail_msg("'%s' is a route", near[i]);
    }
}

/* The console's fixed routes, each with the instance it names and the one method it answers. */
static void test_console_routes(void **state)
{
    static const struct {
        const char *path;
        RouteId id;
        RouteMethod method;
    } cases[] = {
        {"/console/" INST, ROUTE_CONSOLE_BARE, ROUTE_METHOD_GET},
        {"/console/" INST "/", ROUTE_CONSOLE_PAGE, ROUTE_METHOD_GET},
        {"/console/" INST "/session", ROUTE_CONSOLE_SESSION, ROUTE_METHOD_POST},
        {"/console/" INST "/status", ROUTE_CONSOLE_STATUS, ROUTE_METHOD_GET},
        {"/console/" INST "/websocket", ROUTE_CONSOLE_SOCKET, ROUTE_METHOD_GET},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Route route;
        memset(&route, 0xab, sizeof(route));
        if (route_match(cases[i].path, &route) != ROUTE_OK || route.id != cases[i].id)
            fail_msg("%s: not route %d", cases[i].path, (int)cases[i].id);
        assert_string_equal(route.instance_uuid, INST);
        assert_string_equal(route.org_uuid, "");
        assert_string_equal(route.asset, "");
        assert_true(route_is_console(route.id));

        assert_true(route_allows(cases[i].id, cases[i].method));
        for (RouteMethod m = ROUTE_METHOD_GET; m <= ROUTE_METHOD_DELETE; m <<= 1)
            if (m != cases[i].method)
                assert_false(route_allows(cases[i].id, m));
        assert_string_equal(route_allow_header(cases[i].id),
                            cases[i].method == ROUTE_METHOD_GET ? "GET" : "POST");
    }

    /* The instance segment in upper case is the same instance. */
    Route route;
    assert_int_equal(route_match("/console/7E57A1B2-C3D4-4E5F-8A9B-0C1D2E3F4A5B/status", &route),
                     ROUTE_OK);
    assert_int_equal(route.id, ROUTE_CONSOLE_STATUS);
    assert_string_equal(route.instance_uuid, INST);

    /* The fixed routes take no trailing slash and nothing after them. */
    assert_int_equal(route_match("/console/" INST "/session/", &route), ROUTE_NOT_FOUND);
    assert_int_equal(route_match("/console/" INST "/websocket/", &route), ROUTE_NOT_FOUND);
    assert_int_equal(route_match("/console/" INST "//", &route), ROUTE_NOT_FOUND);
    assert_int_equal(route_match("/console", &route), ROUTE_NOT_FOUND);
    assert_int_equal(route_match("/console/", &route), ROUTE_NOT_FOUND);
    assert_int_equal(route_match("/Console/" INST "/", &route), ROUTE_NOT_FOUND);
}

static void test_console_assets(void **state)
{
    static const struct {
        const char *path, *asset;
    } cases[] = {
        {"/console/" INST "/viewer.js", "viewer.js"},
        {"/console/" INST "/viewer.css", "viewer.css"},
        {"/console/" INST "/novnc/core/rfb.js", "novnc/core/rfb.js"},
        {"/console/" INST "/novnc/vendor/pako/lib/zlib/inflate.js",
         "novnc/vendor/pako/lib/zlib/inflate.js"},
        {"/console/" INST "/a_b-C.9", "a_b-C.9"},
        {"/console/" INST "/x..js", "x..js"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Route route;
        if (route_match(cases[i].path, &route) != ROUTE_OK)
            fail_msg("%s: refused", cases[i].path);
        assert_int_equal(route.id, ROUTE_CONSOLE_ASSET);
        assert_string_equal(route.instance_uuid, INST);
        assert_string_equal(route.asset, cases[i].asset);
    }
    assert_true(route_is_console(ROUTE_CONSOLE_ASSET));
    assert_true(route_allows(ROUTE_CONSOLE_ASSET, ROUTE_METHOD_GET));
    assert_false(route_allows(ROUTE_CONSOLE_ASSET, ROUTE_METHOD_POST));
    assert_false(route_allows(ROUTE_CONSOLE_ASSET, ROUTE_METHOD_DELETE));
    assert_string_equal(route_allow_header(ROUTE_CONSOLE_ASSET), "GET");
}

/* Nothing that could climb out of, or hide in, the asset directories is an asset. */
static void test_console_assets_refused(void **state)
{
    static const char *const paths[] = {
        "/console/" INST "/..",
        "/console/" INST "/.",
        "/console/" INST "/.hidden",
        "/console/" INST "/novnc/.hidden.js",
        "/console/" INST "/novnc/../x",
        "/console/" INST "/novnc/./x",
        "/console/" INST "/novnc/..",
        "/console/" INST "/novnc//x",
        "/console/" INST "//viewer.js",
        "/console/" INST "/a%2e%2e",
        "/console/" INST "/%2e%2e/x",
        "/console/" INST "/novnc%2fcore%2frfb.js",
        "/console/" INST "/novnc/",
        "/console/" INST "/viewer.js/",
        "/console/" INST "/viewer js",
        "/console/" INST "/viewer.js?x=1",
        "/console/" INST "/viewer.js#x",
        "/console/" INST "/a\\b",
        "/console/" INST "/a:b",
        "/console/" INST "/a~",
        "/console/" INST "/a\n",
        "/console/" INST "/\xc3\xa9.js",
        "/console/" INST "/a/b/c/d/e/f/g/h/i/j/k", /* more segments than a route may have */
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        Route route;
        RouteResult r = route_match(paths[i], &route);
        if (r != ROUTE_NOT_FOUND)
            fail_msg("'%s': %d, expected not found", paths[i], (int)r);
    }
}

static void test_console_bad_uuid(void **state)
{
    static const char *const paths[] = {
        "/console/not-a-uuid",
        "/console/not-a-uuid/",
        "/console/123/session",
        "/console/" INST "0/status",
        "/console/7e57a1b2c3d44e5f8a9b0c1d2e3f4a5bxxxx/websocket",
        "/console/zzzzzzzz-c3d4-4e5f-8a9b-0c1d2e3f4a5b/viewer.js",
        "/console/x/novnc/core/rfb.js",
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        Route route;
        RouteResult r = route_match(paths[i], &route);
        if (r != ROUTE_BAD_INSTANCE_UUID)
            fail_msg("'%s': %d, expected a bad instance uuid", paths[i], (int)r);
    }
}

/* Only the console's routes skip the Bearer token. */
static void test_route_is_console(void **state)
{
    static const RouteId api[] = {ROUTE_INSTANCES,     ROUTE_INSTANCE,        ROUTE_IMAGES,
                                  ROUTE_SIZES,         ROUTE_INSTANCE_ACCESS, ROUTE_INSTANCE_EXTEND,
                                  ROUTE_INSTANCE_STOP, ROUTE_INSTANCE_START};
    static const RouteId console[] = {ROUTE_CONSOLE_BARE,    ROUTE_CONSOLE_PAGE,
                                      ROUTE_CONSOLE_SESSION, ROUTE_CONSOLE_STATUS,
                                      ROUTE_CONSOLE_SOCKET,  ROUTE_CONSOLE_ASSET};
    for (size_t i = 0; i < sizeof(api) / sizeof(api[0]); i++)
        assert_false(route_is_console(api[i]));
    for (size_t i = 0; i < sizeof(console) / sizeof(console[0]); i++)
        assert_true(route_is_console(console[i]));
    assert_false(route_is_console(_ROUTE_MAX));
    /* Every route id is one or the other, and has an Allow header. */
    assert_int_equal(sizeof(api) / sizeof(api[0]) + sizeof(console) / sizeof(console[0]),
                     _ROUTE_MAX);
    for (int id = 0; id < _ROUTE_MAX; id++)
        assert_string_not_equal(route_allow_header((RouteId)id), "");
}

/* The API's routes still refuse a trailing slash now that the console's page has one. */
static void test_api_trailing_slash(void **state)
{
    static const char *const paths[] = {
        "/orgs/" ORG "/api/instances/",
        "/orgs/" ORG "/api/instances/" INST "/",
        "/orgs/" ORG "/api/instances/" INST "/access/",
        "/orgs/" ORG "/api/instances/" INST "/extend/",
        "/orgs/" ORG "/api/instances/" INST "/stop/",
        "/orgs/" ORG "/api/instances/" INST "/start/",
        "/orgs/" ORG "/api/images/",
        "/orgs/" ORG "/api/sizes/",
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        Route route;
        RouteResult r = route_match(paths[i], &route);
        if (r != ROUTE_NOT_FOUND)
            fail_msg("'%s': %d, expected not found", paths[i], (int)r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instances_collection),
        cmocka_unit_test(test_single_instance),
        cmocka_unit_test(test_catalog_routes),
        cmocka_unit_test(test_uppercase_uuid_is_normalised),
        cmocka_unit_test(test_bad_uuids),
        cmocka_unit_test(test_not_routes),
        cmocka_unit_test(test_overlong_path),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_instance_access),
        cmocka_unit_test(test_instance_lifecycle_routes),
        cmocka_unit_test(test_console_routes),
        cmocka_unit_test(test_console_assets),
        cmocka_unit_test(test_console_assets_refused),
        cmocka_unit_test(test_console_bad_uuid),
        cmocka_unit_test(test_route_is_console),
        cmocka_unit_test(test_api_trailing_slash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
