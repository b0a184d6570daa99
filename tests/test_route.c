/* Routing: which paths are routes, what they capture, which methods they allow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
