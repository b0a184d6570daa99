/*
 * A domain's virtio-mem device, read from and written as libvirt's live
 * domain XML. legba's templates give an image with "memory_hotplug" one
 * such device (domains/<size>.xml): a standby pool VM gives its memory back
 * before the save (pool.c) and is asked to plug it again at the take
 * (api.c). Plain string work on XML that libvirt itself wrote; the guest
 * never writes any of it.
 */
#pragma once

#include <stdint.h>

typedef struct {
    uint64_t size_kib;      /* all the memory the device can plug */
    uint64_t requested_kib; /* what the host asks the guest to have plugged */
    uint64_t plugged_kib;   /* what the guest has plugged now */
} Hotplug;

/* -ENODATA when the domain has no virtio-mem device; -EINVAL when it lacks a size. */
int hotplug_read(const char *domain_xml, Hotplug *ret);

/*
 * The device's own element, as libvirt's virDomainUpdateDeviceFlags takes
 * it (alias and address included), asking for requested_kib. -ENODATA,
 * -EINVAL (no <requested>, or more than the device's size), -ENOMEM.
 */
int hotplug_request_xml(const char *domain_xml, uint64_t requested_kib, char **ret_xml);
