/* The egress rule set as nft reads it, and the QEMU netdev per network mode. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "egress.h"

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected '%s' in:\n%s", needle, haystack);
}

static void assert_lacks(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle))
        fail_msg("did not expect '%s' in:\n%s", needle, haystack);
}

/* needles[i] appears, each after the one before it. */
static void assert_in_order(const char *haystack, const char *const needles[], size_t n)
{
    const char *at = haystack;
    for (size_t i = 0; i < n; i++) {
        const char *next = strstr(at, needles[i]);
        if (!next)
            fail_msg("expected '%s' after '%s' in:\n%s", needles[i], i ? needles[i - 1] : "(start)",
                     haystack);
        at = next + strlen(needles[i]);
    }
}

static size_t occurrences(const char *haystack, const char *needle)
{
    size_t n = 0, len = strlen(needle);
    for (size_t i = 0; haystack[i]; i++)
        n += strncmp(haystack + i, needle, len) == 0;
    return n;
}

static char *render(const EgressPolicy *policy)
{
    char *script = NULL;
    if (egress_rules_render(policy, &script) < 0 || !script)
        fail_msg("the rules did not render");
    return script;
}

/* Only the QEMU user's packets are judged: allowed endpoints first, then the deny list. */
static void test_render_public(void **state)
{
    EgressPolicy p = {.qemu_uid = 64055, .public = true, .allow = "", .forward = ""};
    char *s = render(&p);
    static const char *const order[] = {
        "table inet legba\ndelete table inet legba\ntable inet legba {",
        "type filter hook output priority filter; policy accept;",
        "meta skuid 64055 jump guests",
        "chain guests {",
        "fib daddr type { local, broadcast, multicast, anycast } counter reject",
        "ip daddr { ",
        " } counter reject",
        "ip6 daddr { ",
        " } counter reject\n\t}\n}\n",
    };
    assert_in_order(s, order, sizeof(order) / sizeof(order[0]));
    static const char *const denied[] = {
        "10.0.0.0/8",     "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.168.0.0/16", "224.0.0.0/4",   "240.0.0.0/4", "0.0.0.0/8",      "::/127",
        "::ffff:0:0/96",  "fc00::/7",      "fe80::/10",   "ff00::/8",
    };
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++)
        assert_contains(s, denied[i]);
    /* Public addresses pass: nothing rejects what the lists do not name. */
    assert_lacks(s, "\t\tcounter reject\n");
    assert_lacks(s, "accept\n\t\tfib");
    free(s);
}

/* "allowed": the listed endpoints (and the forward) only, before everything is refused. */
static void test_render_allowed_only(void **state)
{
    EgressPolicy p = {.qemu_uid = 1234,
                      .public = false,
                      .allow = "127.0.0.1:8080  10.1.2.3:53",
                      .forward = "127.0.0.2:9000"};
    char *s = render(&p);
    static const char *const order[] = {
        "meta skuid 1234 jump guests",
        "ip daddr 127.0.0.1 tcp dport 8080 accept",
        "ip daddr 127.0.0.1 udp dport 8080 accept",
        "ip daddr 10.1.2.3 tcp dport 53 accept",
        "ip daddr 10.1.2.3 udp dport 53 accept",
        "ip daddr 127.0.0.2 tcp dport 9000 accept",
        "fib daddr type",
        "ip6 daddr",
        "\t\tcounter reject\n\t}\n}\n",
    };
    assert_in_order(s, order, sizeof(order) / sizeof(order[0]));
    free(s);

    /* A forward that is already allowed is not listed twice. */
    p.forward = "127.0.0.1:8080";
    s = render(&p);
    assert_int_equal(occurrences(s, "tcp dport 8080 accept"), 1);
    free(s);
}

/* What the config accepted always renders; anything else is refused, not half-written. */
static void test_render_bad_endpoint(void **state)
{
    static const char *const bad[] = {"127.0.0.1", "127.0.0.1:0",       "1.2.3:80",
                                      "::1:80",    "127.0.0.1:80;drop", "host:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        EgressPolicy p = {.qemu_uid = 1, .allow = bad[i], .forward = ""};
        char *s = NULL;
        assert_int_equal(egress_rules_render(&p, &s), -EINVAL);
        assert_null(s);
    }
}

/* The policy follows the config's keys. */
static void test_policy_from_config(void **state)
{
    Config c;
    assert_int_equal(config_init(&c), 0);
    EgressPolicy p = egress_policy(&c, 42);
    assert_int_equal(p.qemu_uid, 42);
    assert_true(p.public);
    assert_string_equal(p.allow, "");
    assert_int_equal(config_set(&c, "egress_destinations", "allowed", NULL), 0);
    assert_int_equal(config_set(&c, "egress_allow", "127.0.0.1:1 127.0.0.1:2", NULL), 0);
    p = egress_policy(&c, 42);
    assert_false(p.public);
    assert_string_equal(p.allow, "127.0.0.1:1 127.0.0.1:2");
    config_free(&c);
}

/* none: no NIC unless there is a forward, then restricted; egress: unrestricted, IPv4 only. */
static void test_netdev(void **state)
{
    char *n = (char *)"unset";
    assert_int_equal(egress_netdev("none", "", &n), 0);
    assert_null(n);
    assert_int_equal(egress_netdev("none", NULL, &n), 0);
    assert_null(n);
    assert_int_equal(egress_netdev("none", "127.0.0.1:8000", &n), 0);
    assert_string_equal(n, "user,id=legbanet0,restrict=on,ipv6=off,"
                           "guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8000");
    free(n);
    assert_int_equal(egress_netdev("egress", "", &n), 0);
    assert_string_equal(n, "user,id=legbanet0,restrict=off,ipv6=off");
    free(n);
    assert_int_equal(egress_netdev("egress", "127.0.0.1:8000", &n), 0);
    assert_string_equal(n, "user,id=legbanet0,restrict=off,ipv6=off,"
                           "guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8000");
    free(n);
    n = NULL;
    assert_int_equal(egress_netdev("bridge", "", &n), -EINVAL);
    assert_null(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_public),
        cmocka_unit_test(test_render_allowed_only),
        cmocka_unit_test(test_render_bad_endpoint),
        cmocka_unit_test(test_policy_from_config),
        cmocka_unit_test(test_netdev),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
