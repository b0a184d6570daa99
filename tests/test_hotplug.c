/* hotplug: the virtio-mem device read from, and asked for in, libvirt's live XML. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hotplug.h"

/* As libvirt 9.0 writes a running domain with a small size's device. */
static const char live_xml[] =
    "<domain type='qemu' id='7'>\n"
    "  <maxMemory slots='1' unit='KiB'>1048576</maxMemory>\n"
    "  <memory unit='KiB'>1048576</memory>\n"
    "  <devices>\n"
    "    <memballoon model='none'/>\n"
    "    <memory model='virtio-mem'>\n"
    "      <target>\n"
    "        <size unit='KiB'>524288</size>\n"
    "        <node>0</node>\n"
    "        <block unit='KiB'>2048</block>\n"
    "        <requested unit='KiB'>524288</requested>\n"
    "        <current unit='KiB'>393216</current>\n"
    "      </target>\n"
    "      <alias name='virtiomem0'/>\n"
    "      <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>\n"
    "    </memory>\n"
    "  </devices>\n"
    "</domain>\n";

static void test_read(void **state)
{
    (void)state;
    Hotplug h;
    assert_int_equal(hotplug_read(live_xml, &h), 0);
    assert_int_equal(h.size_kib, 524288);
    assert_int_equal(h.requested_kib, 524288);
    assert_int_equal(h.plugged_kib, 393216);
}

static void test_read_before_the_driver(void **state)
{
    (void)state;
    /* Until the guest's driver answers there is no <current>: nothing plugged. */
    const char xml[] = "<memory model='virtio-mem'><target><size unit='KiB'>1024</size>"
                       "<requested unit='KiB'>1024</requested></target></memory>";
    Hotplug h = {.plugged_kib = 99};
    assert_int_equal(hotplug_read(xml, &h), 0);
    assert_int_equal(h.size_kib, 1024);
    assert_int_equal(h.plugged_kib, 0);
}

static void test_no_device(void **state)
{
    (void)state;
    Hotplug h = {.size_kib = 7};
    char *xml = (char *)1;
    const char plain[] = "<domain><memory unit='KiB'>1048576</memory><devices>"
                         "<memballoon model='none'/></devices></domain>";
    assert_int_equal(hotplug_read(plain, &h), -ENODATA);
    assert_int_equal(hotplug_request_xml(plain, 0, &xml), -ENODATA);
    /* Outputs stay untouched on failure. */
    assert_int_equal(h.size_kib, 7);
    assert_ptr_equal(xml, (char *)1);
    /* A size found only after the device's end is not the device's. */
    const char elsewhere[] = "<memory model='virtio-mem'><target></target></memory>"
                             "<size unit='KiB'>5</size>";
    assert_int_equal(hotplug_read(elsewhere, &h), -EINVAL);
    const char negative[] = "<memory model='virtio-mem'><size unit='KiB'>-5</size></memory>";
    assert_int_equal(hotplug_read(negative, &h), -EINVAL);
}

static void test_request_xml(void **state)
{
    (void)state;
    char *xml = NULL;
    assert_int_equal(hotplug_request_xml(live_xml, 0, &xml), 0);
    /* The whole element, alias and address kept, with only <requested> changed. */
    const char *start = strstr(live_xml, "<memory model='virtio-mem'>");
    assert_non_null(start);
    assert_true(strncmp(xml, start, strlen("<memory model='virtio-mem'>")) == 0);
    assert_non_null(strstr(xml, "<requested unit='KiB'>0</requested>"));
    assert_non_null(strstr(xml, "<size unit='KiB'>524288</size>"));
    assert_non_null(strstr(xml, "<alias name='virtiomem0'/>"));
    assert_non_null(strstr(xml, "bus='0x05'"));
    assert_null(strstr(xml, "<domain"));
    assert_null(strstr(xml, "memballoon"));
    size_t len = strlen(xml);
    assert_true(len > strlen("</memory>"));
    assert_string_equal(xml + len - strlen("</memory>"), "</memory>");
    Hotplug h;
    assert_int_equal(hotplug_read(xml, &h), 0);
    assert_int_equal(h.requested_kib, 0);
    assert_int_equal(h.plugged_kib, 393216);
    free(xml);

    assert_int_equal(hotplug_request_xml(live_xml, 524288, &xml), 0);
    assert_int_equal(hotplug_read(xml, &h), 0);
    assert_int_equal(h.requested_kib, 524288);
    free(xml);
}

static void test_request_beyond_the_device(void **state)
{
    (void)state;
    char *xml = NULL;
    assert_int_equal(hotplug_request_xml(live_xml, 524288 + 2048, &xml), -EINVAL);
    assert_null(xml);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read),
        cmocka_unit_test(test_read_before_the_driver),
        cmocka_unit_test(test_no_device),
        cmocka_unit_test(test_request_xml),
        cmocka_unit_test(test_request_beyond_the_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
