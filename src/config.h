/*
 * legbad's settings: defaults, then a config file of `key = value` lines,
 * then command-line flags, all through one table of keys (config.c).
 */
#pragma once

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "log.h"

typedef enum {
    ACCEL_AUTO = 0,
    ACCEL_KVM,
    ACCEL_TCG,
} AccelMode;

typedef struct {
    char *listen_address; /* "127.0.0.1" */
    uint16_t listen_port; /* 8080 */
    char *libvirt_uri;    /* "qemu:///system" */
    char *data_dir;       /* "/var/lib/legba": LMDB + instance disks */
    char *images_dir;     /* "/var/lib/legba/images" */
    char *domains_dir;    /* LEGBA_DOMAINS_DIR */
    /*
     * Base of access_url, "" = http(s)://<listen>. "{instance}" in it is
     * replaced by the instance's uuid (a wildcard DNS name per instance).
     */
    char *public_url;
    char *novnc_dir; /* noVNC's files: "/usr/share/novnc" (Debian's novnc) */
    char *tls_cert;  /* PEM certificate chain; "" with tls_key "" = plain HTTP */
    char *tls_key;
    /* Origins besides the access URL's own allowed to open a console: "" or space-separated. */
    char *console_origins;
    unsigned console_max_viewers; /* concurrent viewers per instance, 4 */
    /*
     * "" (default): guests have no network interface. "127.X.Y.Z:PORT":
     * each guest gets QEMU user-mode networking with restrict=on, whose only
     * way out is http://10.0.2.100:80/ forwarded to this loopback endpoint.
     */
    char *guest_forward;
    /*
     * The guests' network, unless an org sets its own (legbactl org network):
     * "none" (no interface) or "egress" (user-mode networking whose traffic
     * the host's firewall confines: src/egress.h). In egress mode
     * egress_destinations "public" lets guests reach public addresses, and
     * "allowed" only egress_allow: space-separated IPV4:PORT, reachable even
     * where the deny list would refuse them (127.0.0.1:P is the host's
     * loopback, which guests see as 10.0.2.2:P).
     */
    char *network;
    char *egress_destinations;
    char *egress_allow;
    /*
     * Booted, never-used VMs kept ready per image and size: "" or
     * space-separated IMAGE:SIZE:COUNT[:standby] (config_pool_next);
     * standby ones are saved to disk and restored when taken.
     */
    char *pool;
    unsigned pool_boots; /* pool VMs booting at once, 1 */
    AccelMode accel;
    LogLevel log_level;
    unsigned max_connections;        /* 256 */
    unsigned max_connections_per_ip; /* 64 */
    unsigned connection_timeout;     /* seconds, 30 */
    unsigned max_instances;          /* host-wide cap on live instances, 64 */
    /* Guest memory of live instances may reach this percentage of the host's RAM, 100. */
    unsigned memory_overcommit_percent;
    /* Lifetimes, in seconds: a create's default and its maximum (timeout_seconds). */
    unsigned instance_timeout;     /* 3600 */
    unsigned instance_timeout_max; /* 86400 */
    unsigned idle_timeout;         /* no viewer for this long ends a running instance; 0 = never */
    unsigned terminated_retention; /* how long an expired instance still shows; 3600 */
    /* Start even when a host check finds QEMU unsafe (as root, no seccomp); false. */
    bool allow_unsafe_host;
} Config;

#define CONFIG_ENDPOINTS_MAX 16

#define CONFIG_POOL_MAX 16
#define CONFIG_POOL_IMAGE_MAX 64
#define CONFIG_POOL_SIZE_MAX 15

typedef struct {
    char image[CONFIG_POOL_IMAGE_MAX + 1];
    char size[CONFIG_POOL_SIZE_MAX + 1];
    unsigned count; /* 1..64 */
    bool standby;
} ConfigPoolEntry;

/* The next entry of a pool setting at *cursor (advanced): 1, 0 at the end, -EINVAL. */
int config_pool_next(const char **cursor, ConfigPoolEntry *ret);

/*
 * The next "IPV4:PORT" (numeric) of a space-separated list at *cursor
 * (advanced): 1 with the address in host order, 0 at the end, -EINVAL.
 */
int config_endpoint_next(const char **cursor, uint32_t *ret_address, uint16_t *ret_port);

/* Fills defaults. 0 or -ENOMEM. */
int config_init(Config *config);
void config_free(Config *config);

/*
 * Sets one key from its text form. On -EINVAL (unknown key, bad value)
 * *ret_error, if not NULL, gets a malloc'd message naming the key.
 */
int config_set(Config *config, const char *key, const char *value, char **ret_error);
/*
 * Checks what no single key can: settings that only make sense together.
 * -EINVAL with *ret_error (malloc'd) naming the keys.
 */
int config_check(const Config *config, char **ret_error);
/* Reads a file of `key = value` lines ('#' comments, blank lines). Errors name file:line. */
int config_load_file(Config *config, const char *path, char **ret_error);

const char *accel_mode_to_string(AccelMode mode);
