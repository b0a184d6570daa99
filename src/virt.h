/*
 * legbad's side of libvirt: one shared connection (libvirt connections are
 * thread-safe), its event loop thread, and the few domain operations the
 * API needs. Domains are ours when named VIRT_DOMAIN_PREFIX<uuid>.
 */
#pragma once

#include <sys/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "hotplug.h"
#include "uuid.h"

#define VIRT_DOMAIN_PREFIX "legba-"
#define VIRT_DOMAIN_NAME_LEN (sizeof(VIRT_DOMAIN_PREFIX) - 1 + UUID_STR_LEN)
#define VIRT_METADATA_NS "https://legba.dev/xmlns/instance/1"

typedef struct Virt Virt;

typedef enum {
    VIRT_DOMAIN_ABSENT = 0,
    VIRT_DOMAIN_RUNNING,
    VIRT_DOMAIN_STOPPED, /* defined but not running (shut off, crashed, paused…) */
} VirtDomainState;

typedef struct {
    char instance_uuid[UUID_STR_LEN]; /* from the name */
    char org_uuid[UUID_STR_LEN];      /* from the metadata, "" when missing */
    char install_id[UUID_STR_LEN];    /* from the metadata, "" when missing */
    VirtDomainState state;
} VirtDomain;

/* Called from the event thread when one of our domains stops or starts. */
typedef void (*VirtLifecycleFn)(void *userdata, const char *instance_uuid, VirtDomainState state);

/*
 * Decides KVM or TCG. auto picks KVM only when /dev/kvm is usable and the
 * CPU advertises vmx or svm: a paravirtual KVM (PVM) exposes /dev/kvm
 * without them and runs stock kernels far too slowly. *ret_reason is a
 * malloc'd sentence for the log.
 */
int virt_accel_choose(AccelMode requested, bool *ret_kvm, char **ret_reason);

/*
 * Called from the event thread once a lost connection to libvirtd is back:
 * events were missed meanwhile, so the caller compares what it knows with
 * what the domains are doing now.
 */
typedef void (*VirtReconnectFn)(void *userdata);

/*
 * Opens uri with the event loop running; lifecycle and reconnected may be
 * NULL. A connection that libvirtd closes later (restart, keepalive
 * timeout) is reopened every 2 s; meanwhile calls fail with -ENOTCONN.
 */
int virt_open(const char *uri, VirtLifecycleFn lifecycle, VirtReconnectFn reconnected,
              void *userdata, Virt **ret_virt, char **ret_error);
void virt_close(Virt *virt);

/* libvirt's capabilities XML (malloc'd). -ENOTCONN, -EIO. */
int virt_capabilities(Virt *virt, char **ret_xml);

#define VIRT_QEMU_LOG_DIR "/var/log/libvirt/qemu"

void virt_domain_name(const char *instance_uuid, char ret[VIRT_DOMAIN_NAME_LEN]);

/* Defines and starts a persistent domain; if starting fails it is undefined again. */
int virt_domain_start(Virt *virt, const char *xml, char **ret_error);
/* Hard-stops and undefines; -ENOENT when there was no such domain. */
int virt_domain_remove(Virt *virt, const char *instance_uuid, char **ret_error);
/*
 * Deletes what libvirt logged about a removed domain on this host
 * (VIRT_QEMU_LOG_DIR/<name>.log and its rotations: QEMU's command line and
 * whatever the guest made QEMU print). Only for qemu:///system, whose logs
 * are local; 0 when there was nothing, else -errno of the first failure.
 */
int virt_domain_log_remove(Virt *virt, const char *instance_uuid);
/*
 * Saves a running domain's RAM to disk and stops it (libvirt's managed
 * save): the next power on restores it as it was. Removing the domain
 * removes the saved state too.
 */
int virt_domain_save(Virt *virt, const char *instance_uuid, char **ret_error);
/*
 * The running domain's virtio-mem device (src/hotplug.h): its size, what is
 * asked of the guest and what the guest has plugged. -ENODATA when the
 * domain has none, -ENOENT, -EIO.
 */
int virt_domain_hotplug_read(Virt *virt, const char *instance_uuid, Hotplug *ret);
/*
 * Asks the running domain's guest to have requested_kib of its virtio-mem
 * device plugged; the guest plugs or gives back on its own time.
 * -ENODATA, -EINVAL (more than the device holds), -ENOENT, -EIO.
 */
int virt_domain_hotplug_request(Virt *virt, const char *instance_uuid, uint64_t requested_kib);
/* Pulls the plug (the domain stays defined, its disk stays) or starts it again. -ENOENT. */
int virt_domain_power_off(Virt *virt, const char *instance_uuid, char **ret_error);
int virt_domain_power_on(Virt *virt, const char *instance_uuid, char **ret_error);
int virt_domain_state(Virt *virt, const char *instance_uuid, VirtDomainState *ret_state,
                      char **ret_error);
/* Every domain named like ours; *ret_domains malloc'd. */
int virt_domain_list(Virt *virt, VirtDomain **ret_domains, size_t *ret_count, char **ret_error);
/*
 * The host end of a running domain's virtio-serial port `name`: the unix
 * socket libvirt made for it (from the live XML). -ENOENT when the domain
 * or the port is not there (not running, or a driver without channels).
 */
int virt_domain_agent_socket(Virt *virt, const char *instance_uuid, const char *name,
                             char **ret_path);
/* A connected fd to the domain's VNC server, through libvirt (no listener on the host). */
int virt_domain_open_console(Virt *virt, const char *instance_uuid, int *ret_fd, char **ret_error);
