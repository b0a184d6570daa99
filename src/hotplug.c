#include "hotplug.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEVICE_OPEN "<memory model='virtio-mem'"
#define DEVICE_CLOSE "</memory>"

/* The device element's span in the domain's XML; false when there is none. */
static bool device_span(const char *xml, const char **ret_start, size_t *ret_len)
{
    const char *start = strstr(xml, DEVICE_OPEN);
    const char *end = start ? strstr(start, DEVICE_CLOSE) : NULL;
    if (!end)
        return false;
    *ret_start = start;
    *ret_len = (size_t)(end - start) + strlen(DEVICE_CLOSE);
    return true;
}

/*
 * The KiB value of "<tag unit='KiB'>N</tag>" inside the device's span (libvirt
 * writes every size of a live domain in KiB). Where it starts in *ret_at.
 */
static bool kib_value(const char *span, size_t len, const char *tag, uint64_t *ret_kib,
                      const char **ret_at)
{
    char open[64];
    snprintf(open, sizeof(open), "<%s unit='KiB'>", tag);
    const char *at = strstr(span, open);
    if (!at || at >= span + len)
        return false;
    const char *digits = at + strlen(open);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(digits, &end, 10);
    if (errno || end == digits || *end != '<' || digits[0] == '-')
        return false;
    *ret_kib = v;
    if (ret_at)
        *ret_at = digits;
    return true;
}

int hotplug_read(const char *domain_xml, Hotplug *ret)
{
    const char *span;
    size_t len;
    if (!device_span(domain_xml, &span, &len))
        return -ENODATA;
    Hotplug h = {0};
    if (!kib_value(span, len, "size", &h.size_kib, NULL))
        return -EINVAL;
    /* Before the guest's driver answers, libvirt shows no <current>: nothing is plugged. */
    kib_value(span, len, "requested", &h.requested_kib, NULL);
    kib_value(span, len, "current", &h.plugged_kib, NULL);
    *ret = h;
    return 0;
}

int hotplug_request_xml(const char *domain_xml, uint64_t requested_kib, char **ret_xml)
{
    const char *span, *digits;
    size_t len;
    if (!device_span(domain_xml, &span, &len))
        return -ENODATA;
    uint64_t size_kib, old_kib;
    if (!kib_value(span, len, "size", &size_kib, NULL) ||
        !kib_value(span, len, "requested", &old_kib, &digits) || requested_kib > size_kib)
        return -EINVAL;
    const char *after = strchr(digits, '<');
    char *xml;
    if (asprintf(&xml, "%.*s%" PRIu64 "%.*s", (int)(digits - span), span, requested_kib,
                 (int)(span + len - after), after) < 0)
        return -ENOMEM;
    *ret_xml = xml;
    return 0;
}
