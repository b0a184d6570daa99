/*
 * What a guest's network can reach, in one place.
 *
 * A guest has no network interface (mode "none") unless the config or its
 * org says "egress". Then QEMU gives it user-mode networking (slirp): the
 * guest's connections become ordinary sockets of the QEMU process, which
 * runs as the QEMU user (libvirt-qemu). legbad installs one nftables table,
 * `inet legba`, whose output chain sends every packet of that user's
 * sockets to the chain `guests`, which judges it:
 *
 *   1. endpoints in egress_allow (and guest_forward) are accepted;
 *   2. the host's own addresses (fib: local, broadcast, multicast,
 *      anycast), loopback, RFC 1918, carrier-grade NAT 100.64/10,
 *      link-local 169.254/16 (cloud metadata included), multicast,
 *      reserved ranges, and IPv6 loopback/ULA/link-local/multicast/mapped
 *      are rejected;
 *   3. with egress_destinations "allowed", everything else is rejected too;
 *      with "public", the rest (public addresses) is accepted.
 *
 * The guest sees the host's loopback at its gateway 10.0.2.2 (slirp maps
 * it to 127.0.0.1), so rule 2 is what keeps a guest away from legbad,
 * libvirtd and every other local service. Each guest has its own slirp
 * stack with no listening port, so guests cannot reach one another.
 * Guest DNS (10.0.2.3) is forwarded by QEMU to the host's resolvers and
 * goes through the same rules: a resolver on loopback or a private address
 * must be listed in egress_allow, or guests resolve nothing.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "config.h"

#define EGRESS_TABLE "legba"
/* Held by the legbad that owns the table: one per host. */
#define EGRESS_LOCK_PATH "/run/legba-egress.lock"

typedef struct {
    uid_t qemu_uid;      /* whose sockets the rules judge */
    bool public;         /* egress_destinations = public */
    const char *allow;   /* egress_allow: "" or space-separated IPV4:PORT */
    const char *forward; /* guest_forward: "" or 127.X.Y.Z:PORT, also accepted */
} EgressPolicy;

/* The policy the config asks for, for the QEMU user qemu_uid. */
EgressPolicy egress_policy(const Config *config, uid_t qemu_uid);

/*
 * The nft script that replaces table inet legba in one transaction.
 * -EINVAL for an endpoint that does not parse, -ENOMEM.
 */
int egress_rules_render(const EgressPolicy *policy, char **ret_script);

/*
 * Renders and installs the rule set (libnftables; needs CAP_NET_ADMIN).
 * The table stays after legbad exits: guests keep running, so the rules
 * must too. -errno with *ret_error (malloc'd) on failure.
 */
int egress_rules_install(const EgressPolicy *policy, char **ret_error);

/* The installed table as `nft list table inet legba` prints it; -ENOENT when absent. */
int egress_rules_list(char **ret_text, char **ret_error);

/*
 * QEMU's -netdev option for a guest in network mode ("none" or "egress"):
 * egress gets user-mode networking without restrict; none gets nothing
 * (*ret_netdev NULL) unless guest_forward is set, then restrict=on with
 * that one forward. -EINVAL for an unknown mode, -ENOMEM.
 */
int egress_netdev(const char *mode, const char *guest_forward, char **ret_netdev);
