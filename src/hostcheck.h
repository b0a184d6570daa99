/*
 * Host checks: does this host run QEMU hardened? Each check reads one real
 * value (libvirt's capabilities, qemu.conf, /proc, /sys, /dev/kvm, the
 * data and images dirs) and adds one line to a HostReport: ok, warn or
 * FAIL, what was measured and, unless ok, what to do about it.
 * `legbad --check-host` prints the report; legbad logs it at every start
 * and refuses to start on an unsafe FAIL unless allow_unsafe_host = yes.
 *
 * A check is one function in the table at the end of hostcheck.c; adding
 * one is adding a function and its row.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "config.h"

typedef enum {
    HOST_LEVEL_OK = 0,
    HOST_LEVEL_WARN,
    HOST_LEVEL_FAIL,
} HostLevel;

typedef struct {
    char *name; /* one stable word: "seccomp_sandbox" */
    HostLevel level;
    char *value;  /* what was measured, as a sentence */
    char *advice; /* what to do; NULL when ok */
    /* A FAIL that stops legbad at start (unless allow_unsafe_host = yes). */
    bool unsafe;
} HostResult;

typedef struct HostReport HostReport;

int host_report_new(HostReport **ret_report);
void host_report_free(HostReport *report);
/* Copies the strings; advice may be NULL and is dropped from ok lines. 0 or -ENOMEM. */
int host_report_add(HostReport *report, const char *name, HostLevel level, const char *value,
                    const char *advice);
/* A FAIL that must stop legbad at start unless the config allows an unsafe host. */
int host_report_add_unsafe(HostReport *report, const char *name, const char *value,
                           const char *advice);
size_t host_report_count(const HostReport *report);
const HostResult *host_report_get(const HostReport *report, size_t index);
/* The first result called name, or NULL. */
const HostResult *host_report_find(const HostReport *report, const char *name);
/* HOST_LEVEL_OK for an empty report. */
HostLevel host_report_worst(const HostReport *report);
/* Whether any result is an unsafe FAIL. */
bool host_report_unsafe(const HostReport *report);
/* One line per result: "LEVEL NAME VALUE[; fix: ADVICE]". */
void host_report_print(const HostReport *report, FILE *out);
/* The same lines into the log: ok as info, warn as warning, FAIL as error. */
void host_report_log(const HostReport *report);
const char *host_level_to_string(HostLevel level); /* "ok", "warn", "FAIL" */

/* Everything the checks read besides the files under root. */
typedef struct {
    const Config *config;
    /*
     * Prefix of every host file read (/etc/libvirt/qemu.conf, /proc,
     * /sys, /dev/kvm): "" on the host itself, a fixture tree in tests.
     * The data and images dirs come from config, as they are.
     */
    const char *root;
    const char *capabilities;  /* libvirt's capabilities XML; NULL when it could not be read */
    const char *libvirt_error; /* why capabilities is NULL */
    bool kvm;                  /* legbad's accel verdict (virt_accel_choose) */
    const char *accel_reason;  /* and its reason */
    const char *largest_size;  /* the size with the most memory; NULL when unknown */
    unsigned largest_memory_mib;
    const char *templates_error; /* why largest_size is NULL */
    /*
     * The egress table as installed (egress_rules_list): egress_status 0
     * with its text, -ENOENT when there is none yet, another -errno (with
     * egress_error) when nftables cannot be used.
     */
    int egress_status;
    const char *egress_rules;
    const char *egress_error;
} HostCheckEnv;

/* Runs every check against env. 0 or -ENOMEM. */
int hostcheck_run(const HostCheckEnv *env, HostReport **ret_report);
/*
 * Gathers env for this host as config would run legbad (accel verdict,
 * libvirt's capabilities over a read-only connection to libvirt_uri, the
 * domain templates' largest size), then runs every check.
 */
int hostcheck_host(const Config *config, HostReport **ret_report);

/* ---- the parsers behind the checks, for tests ---- */

/* Free space below which a dir's check warns. */
#define HOSTCHECK_MIN_FREE_BYTES (5ULL << 30)

/*
 * seccomp_sandbox from a qemu.conf at path: *ret_set false when the key is
 * absent or commented out (libvirt then uses 1). -ENOENT when there is no
 * file, -EBADMSG (with *ret_set true) when its value is not an integer.
 */
int hostcheck_read_seccomp_sandbox(const char *path, bool *ret_set, long *ret_value);
/* MemAvailable from a /proc/meminfo at path, in MiB. -ENOENT, -EBADMSG when absent. */
int hostcheck_read_mem_available(const char *path, uint64_t *ret_mib);
/*
 * The DAC user and group QEMU domains of this type ("kvm" or "qemu") run
 * as, from the capabilities' <baselabel type='TYPE'>+UID:+GID</baselabel>;
 * falls back to the other type's label. -ENOENT when there is none.
 */
int hostcheck_qemu_identity(const char *capabilities, bool kvm, uid_t *ret_uid, gid_t *ret_gid);
/* Whether the capabilities' host lists a <secmodel> with this <model>. */
bool hostcheck_has_secmodel(const char *capabilities, const char *model);
