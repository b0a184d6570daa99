/*
 * Tier 3: real QEMU under qemu:///system (TCG where the host has no usable
 * KVM), driven through legbad's API with the tiny image. Proves that a
 * QEMU process runs the instance, that its console answers RFB through
 * libvirt, that DELETE removes process, domain, overlay and record, that
 * start-up reconcile repairs stale records and orphan domains, that stop,
 * start and expiry do to QEMU what the API says, and that legbad outlives
 * a libvirtd restart.
 *
 * Needs root and a running libvirtd (tools/setup provides both). The
 * restart test stops that libvirtd (SIGTERM to the pid in
 * /run/libvirtd.pid) and starts a new one with `libvirtd -d`, as
 * tools/setup does; whatever happens, a libvirtd runs when it ends.
 *
 * It also runs `legbad --check-host` on this host, and reads a running
 * instance's QEMU back from /proc: its user, its seccomp sandbox, no shared
 * folders and no network device.
 *
 * IT_QEMU_ONLY=name[,name…] runs only the named tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "disk.h"
#include "harness.h"
#include "hostcheck.h"
#include "store.h"
#include "util.h"

#define QEMU_URI "qemu:///system"

static struct {
    char *dir, *data_dir, *images_dir;
    HarnessOrg org;
    HarnessLegbad *legbad;
    virConnectPtr conn;
    bool restarted_libvirtd; /* q.conn is to a libvirtd that was stopped */
} q;

static void silence(void *userdata, virErrorPtr error)
{
}

/* legbad on qemu:///system, with a config file when config is not NULL. */
static int start_legbad_with(const char *config, const char *log_name)
{
    HarnessLegbadOptions options = {
        .dir = q.dir,
        .data_dir = q.data_dir,
        .images_dir = q.images_dir,
        .libvirt_uri = QEMU_URI,
        .log_name = log_name,
        .extra_args = config ? HARNESS_LIST("--config", config) : NULL,
    };
    return harness_legbad_start(&options, &q.legbad);
}

static int start_legbad(void)
{
    return start_legbad_with(NULL, "legbad.log");
}

static int group_setup(void **state)
{
    /*
     * libvirt's client writes to its socket without MSG_NOSIGNAL and asks
     * its users to ignore SIGPIPE; a call on the connection to a libvirtd
     * the restart test stopped would otherwise end this process silently.
     */
    signal(SIGPIPE, SIG_IGN);
    virSetErrorFunc(NULL, silence);
    q.conn = virConnectOpen(QEMU_URI);
    if (!q.conn) {
        fprintf(stderr, "it_qemu: cannot connect to %s (run tools/setup as root first)\n",
                QEMU_URI);
        return -1;
    }
    if (harness_tempdir("legba-it-qemu-", &q.dir) < 0 ||
        asprintf(&q.data_dir, "%s/data", q.dir) < 0 ||
        asprintf(&q.images_dir, "%s/images", q.dir) < 0)
        return -1;
    if (harness_build_image(q.images_dir, "tiny") != 0)
        return -1;
    /*
     * An operator's own firmware-booted disk, the way a Windows image is added:
     * UEFI firmware and a SATA disk, described by its manifest alone.
     */
    char *uefi_dir = NULL, *cmd_src = NULL, *cmd_dst = NULL, *manifest = NULL;
    if (asprintf(&uefi_dir, "%s/tiny-uefi", q.images_dir) < 0 ||
        asprintf(&cmd_src, "%s/tiny/disk.qcow2", q.images_dir) < 0 ||
        asprintf(&cmd_dst, "%s/disk.qcow2", uefi_dir) < 0 ||
        asprintf(&manifest, "%s/manifest.json", uefi_dir) < 0 || mkdir(uefi_dir, 0755) < 0 ||
        harness_run(HARNESS_LIST("cp", cmd_src, cmd_dst), NULL) != 0)
        return -1;
    FILE *f = fopen(manifest, "we");
    if (!f)
        return -1;
    fputs("{\"schema\":1,\"name\":\"tiny-uefi\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\","
          "\"disk_bus\":\"sata\",\"firmware\":\"uefi\"}\n",
          f);
    fclose(f);
    free(uefi_dir);
    free(cmd_src);
    free(cmd_dst);
    free(manifest);

    if (harness_org_create(q.data_dir, "qemu-test", &q.org) < 0)
        return -1;
    return start_legbad();
}

/* Whatever a failed test left behind is destroyed here, so the host stays clean. */
static int group_teardown(void **state)
{
    harness_legbad_free(q.legbad);
    q.legbad = NULL;
    if (q.conn) {
        virDomainPtr *doms = NULL;
        int n = virConnectListAllDomains(q.conn, &doms, 0);
        for (int i = 0; i < n; i++) {
            char *xml = virDomainGetXMLDesc(doms[i], 0);
            if (xml && q.dir && strstr(xml, q.dir)) {
                virDomainDestroy(doms[i]);
                virDomainUndefine(doms[i]);
            }
            free(xml);
            virDomainFree(doms[i]);
        }
        free(doms);
        virConnectClose(q.conn);
    }
    harness_tempdir_remove(q.dir);
    free(q.dir);
    free(q.data_dir);
    free(q.images_dir);
    return 0;
}

static void assert_http_status(const HarnessResponse *resp, int want)
{
    if (resp->status != want)
        fail_msg("HTTP %d expected, got %d: %s", want, resp->status, resp->body ? resp->body : "");
}

/* POST a small instance of image; returns its uuid in ret. */
static void create_image_instance(const char *image, char ret[UUID_STR_LEN])
{
    char path[128], body[128];
    snprintf(body, sizeof(body), "{\"image\":\"%s\",\"size\":\"small\"}", image);
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances", q.org.uuid);
    assert_int_equal(harness_http(q.legbad->port, "POST", path,
                                  HARNESS_LIST(q.org.auth, "Content-Type: application/json"), body,
                                  strlen(body), &resp),
                     0);
    assert_http_status(&resp, 201);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "status")), "running");
    snprintf(ret, UUID_STR_LEN, "%s",
             cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "instance_uuid")));
    harness_response_done(&resp);
}

static void create_instance(char ret[UUID_STR_LEN])
{
    create_image_instance("tiny", ret);
}

static int request(const char *method, const char *uuid, HarnessResponse *resp)
{
    char path[160];
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", q.org.uuid, uuid);
    return harness_http(q.legbad->port, method, path, HARNESS_LIST(q.org.auth), NULL, 0, resp);
}

static char *instance_status(const char *uuid)
{
    HarnessResponse resp = {0};
    assert_int_equal(request("GET", uuid, &resp), 0);
    char *status = resp.status == 200
                       ? strdup(cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "status")))
                       : NULL;
    harness_response_done(&resp);
    return status;
}

static virDomainPtr lookup(const char *uuid)
{
    char name[64];
    snprintf(name, sizeof(name), "legba-%s", uuid);
    return virDomainLookupByName(q.conn, name);
}

static bool domain_exists(const char *uuid)
{
    virDomainPtr dom = lookup(uuid);
    if (!dom)
        return false;
    virDomainFree(dom);
    return true;
}

/* Whether pid is alive and is a QEMU whose command line names the domain. */
static bool qemu_runs(pid_t pid, const char *uuid)
{
    char path[64], cmdline[8192], needle[80];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    size_t n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (cmdline[i] == '\0')
            cmdline[i] = ' ';
    cmdline[n] = '\0';
    snprintf(needle, sizeof(needle), "guest=legba-%s", uuid);
    return strstr(cmdline, "qemu-system") && strstr(cmdline, needle);
}

static bool wait_process_gone(pid_t pid, int seconds)
{
    for (int i = 0; i < seconds * 10; i++) {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return true;
        usleep(100 * 1000);
    }
    return false;
}

static char *overlay_of(const char *uuid)
{
    char *path = disk_overlay_path(q.data_dir, uuid);
    assert_non_null(path);
    return path;
}

static bool record_listed_by_legbactl(const char *uuid)
{
    cJSON *json = NULL;
    assert_int_equal(harness_legbactl(q.data_dir, HARNESS_LIST("instance", "list"), &json), 0);
    bool found = false;
    cJSON *item;
    cJSON_ArrayForEach(item, cJSON_GetObjectItem(json, "instances"))
    {
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(item, "instance_uuid"));
        found = found || (id && strcmp(id, uuid) == 0);
    }
    cJSON_Delete(json);
    return found;
}

/* The console of a running instance answers as an RFB 3.8 server. */
static void assert_console_speaks_rfb(virDomainPtr dom)
{
    int fd = virDomainOpenGraphicsFD(dom, 0, VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char banner[13] = {0};
    size_t got = 0;
    while (got < 12) {
        ssize_t n = read(fd, banner + got, 12 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    assert_string_equal(banner, "RFB 003.008\n");
}

/* The NUL-separated arguments of a process (harness_process_cmdline), which must be readable. */
static char *process_cmdline(pid_t pid, size_t *ret_len)
{
    char *args = harness_process_cmdline(pid, ret_len);
    if (!args)
        fail_msg("cannot read the command line of process %d", (int)pid);
    return args;
}

/* The argument after `option`, or NULL when the command line has no such option. */
static const char *arg_after(const char *args, size_t len, const char *option)
{
    for (const char *a = args; a < args + len; a += strlen(a) + 1)
        if (strcmp(a, option) == 0 && a + strlen(a) + 1 < args + len)
            return a + strlen(a) + 1;
    return NULL;
}

/* Whether any argument contains needle. */
static bool any_arg_contains(const char *args, size_t len, const char *needle)
{
    for (const char *a = args; a < args + len; a += strlen(a) + 1)
        if (strstr(a, needle))
            return true;
    return false;
}

/*
 * The instance's QEMU, as /proc shows it, runs hardened: as libvirt-qemu
 * (never root), in QEMU's seccomp sandbox with spawning and privilege
 * changes denied, with no shared folder of the host and no network device.
 */
static void assert_qemu_hardened(pid_t pid)
{
    struct passwd *qemu_user = getpwnam("libvirt-qemu");
    assert_non_null(qemu_user);
    assert_int_not_equal(qemu_user->pw_uid, 0);
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    unsigned real = 1, effective = 1, saved = 1, fs = 1;
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = sscanf(line, "Uid: %u %u %u %u", &real, &effective, &saved, &fs) == 4;
    fclose(f);
    assert_true(found);
    if (real != qemu_user->pw_uid || effective != real || saved != real || fs != real)
        fail_msg("QEMU %d runs as uids %u %u %u %u, not libvirt-qemu (%u)", (int)pid, real,
                 effective, saved, fs, (unsigned)qemu_user->pw_uid);

    size_t len;
    char *args = process_cmdline(pid, &len);
    const char *sandbox = arg_after(args, len, "-sandbox");
    if (!sandbox || strncmp(sandbox, "on", 2) != 0 || (sandbox[2] && sandbox[2] != ',') ||
        !strstr(sandbox, "spawn=deny") || !strstr(sandbox, "elevateprivileges=deny"))
        fail_msg("QEMU %d: -sandbox on,…spawn=deny,…elevateprivileges=deny expected, got %s",
                 (int)pid, sandbox ? sandbox : "no -sandbox");
    /* No host directory shared into the guest, and no NIC (an instance has none by default). */
    assert_null(arg_after(args, len, "-fsdev"));
    assert_null(arg_after(args, len, "-virtfs"));
    assert_false(any_arg_contains(args, len, "vhost-user-fs"));
    assert_false(any_arg_contains(args, len, "-netdev"));
    /* Its RAM is never merged with another guest's (KSM). */
    const char *machine = arg_after(args, len, "-machine");
    if (!machine || !strstr(machine, "mem-merge=off"))
        fail_msg("QEMU %d: -machine …mem-merge=off expected, got %s", (int)pid,
                 machine ? machine : "no -machine");
    /* Under TCG, a translation cache of 256 MiB instead of QEMU's 1 GiB. */
    const char *accel = arg_after(args, len, "-accel");
    if (!accel || (strncmp(accel, "tcg", 3) == 0 && strcmp(accel, "tcg,tb-size=256") != 0))
        fail_msg("QEMU %d: -accel kvm or tcg,tb-size=256 expected, got %s", (int)pid,
                 accel ? accel : "no -accel");
    free(args);
}

/* The value of "name : value" in virsh's output, or -1. */
static long long virsh_value(const char *out, const char *name)
{
    for (const char *line = out; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        size_t n = strlen(name);
        if (strncmp(line, name, n) == 0 && (line[n] == ' ' || line[n] == ':')) {
            const char *colon = strchr(line, ':');
            return colon ? strtoll(colon + 1, NULL, 10) : -1;
        }
    }
    return -1;
}

/*
 * The small size's limits, as libvirt applied them to the running domain:
 * CPU shares, the whole domain capped at one CPU, the disk throttled.
 */
static void assert_domain_limits(const char *uuid)
{
    char name[64];
    snprintf(name, sizeof(name), "legba-%s", uuid);
    _cleanup_free_ char *sched = NULL, *iotune = NULL;
    assert_int_equal(harness_run(HARNESS_LIST("virsh", "-c", QEMU_URI, "schedinfo", name), &sched),
                     0);
    assert_int_equal(
        harness_run(HARNESS_LIST("virsh", "-c", QEMU_URI, "blkdeviotune", name, "vda"), &iotune),
        0);
    long long shares = virsh_value(sched, "cpu_shares");
    long long period = virsh_value(sched, "global_period");
    long long quota = virsh_value(sched, "global_quota");
    long long bytes = virsh_value(iotune, "total_bytes_sec");
    long long iops = virsh_value(iotune, "total_iops_sec");
    print_message("limits read back: cpu_shares %lld, global quota %lld/%lld us, disk %lld B/s, "
                  "%lld IOPS\n",
                  shares, quota, period, bytes, iops);
    if (shares != 1024 || period != 100000 || quota != 100000 || bytes != 100LL * 1024 * 1024 ||
        iops != 1000)
        fail_msg("limits not applied:\n%s\n%s", sched, iotune);
}

static void test_create_console_delete(void **state)
{
    char uuid[UUID_STR_LEN];
    create_instance(uuid);

    /* libvirt runs it, as a real QEMU process, with our metadata and no NIC. */
    virDomainPtr dom = lookup(uuid);
    assert_non_null(dom);
    assert_int_equal(virDomainIsActive(dom), 1);
    char *xml = virDomainGetXMLDesc(dom, 0);
    assert_non_null(xml);
    assert_non_null(strstr(xml, q.org.uuid));
    assert_non_null(strstr(xml, "legba:instance"));
    assert_null(strstr(xml, "<interface"));
    assert_non_null(strstr(xml, "<listen type='none'/>"));
    free(xml);
    pid_t pid = harness_qemu_pid(uuid);
    assert_true(pid > 0);
    assert_true(qemu_runs(pid, uuid));
    assert_qemu_hardened(pid);
    assert_domain_limits(uuid);
    _cleanup_free_ char *overlay = overlay_of(uuid);
    assert_true(harness_file_exists(overlay));
    assert_true(record_listed_by_legbactl(uuid));
    /* libvirt's log of this QEMU: its command line, and whatever the guest made QEMU print. */
    char qemu_log[128];
    snprintf(qemu_log, sizeof(qemu_log), "/var/log/libvirt/qemu/legba-%s.log", uuid);
    assert_true(harness_file_exists(qemu_log));

    /* The console is reachable only through libvirt, and speaks RFB 3.8. */
    assert_console_speaks_rfb(dom);
    virDomainFree(dom);

    /* DELETE takes process, domain, overlay, QEMU log and record with it. */
    HarnessResponse resp = {0};
    assert_int_equal(request("DELETE", uuid, &resp), 0);
    assert_http_status(&resp, 204);
    harness_response_done(&resp);
    assert_true(wait_process_gone(pid, 10));
    assert_false(domain_exists(uuid));
    assert_false(harness_file_exists(overlay));
    assert_false(harness_file_exists(qemu_log));
    assert_false(record_listed_by_legbactl(uuid));
    assert_int_equal(request("GET", uuid, &resp), 0);
    assert_http_status(&resp, 404);
    harness_response_done(&resp);
}

static void test_uefi_sata_image(void **state)
{
    char uuid[UUID_STR_LEN];
    create_image_instance("tiny-uefi", uuid);
    virDomainPtr dom = lookup(uuid);
    assert_non_null(dom);
    assert_int_equal(virDomainIsActive(dom), 1);
    char *xml = virDomainGetXMLDesc(dom, 0);
    assert_non_null(xml);
    if (!strstr(xml, "<loader") || !strstr(xml, "bus='sata'") || strstr(xml, "bus='virtio'/>"))
        fail_msg("expected OVMF and a SATA disk in:\n%s", xml);
    /* The firmware's variable store is the instance's too: DELETE must take it. */
    char *nvram = strstr(xml, "<nvram");
    char nvram_path[512] = "";
    if (nvram && (nvram = strchr(nvram, '>')))
        snprintf(nvram_path, sizeof(nvram_path), "%.*s", (int)strcspn(nvram + 1, "<"), nvram + 1);
    free(xml);
    assert_true(nvram_path[0] == '/');
    assert_true(harness_file_exists(nvram_path));
    pid_t pid = harness_qemu_pid(uuid);
    assert_true(qemu_runs(pid, uuid));
    assert_console_speaks_rfb(dom);
    virDomainFree(dom);

    HarnessResponse resp = {0};
    assert_int_equal(request("DELETE", uuid, &resp), 0);
    assert_http_status(&resp, 204);
    harness_response_done(&resp);
    assert_true(wait_process_gone(pid, 10));
    assert_false(domain_exists(uuid));
    assert_false(harness_file_exists(nvram_path));
}

static void edit_store(void (*edit)(Store *store, void *arg), void *arg)
{
    Store *store = NULL;
    assert_int_equal(store_open(q.data_dir, 0, &store), 0);
    edit(store, arg);
    store_close(store);
}

static void forget_record(Store *store, void *uuid)
{
    assert_int_equal(store_instance_delete(store, uuid), 0);
}

static void mark_deleting(Store *store, void *uuid)
{
    assert_int_equal(
        store_instance_transition(store, uuid, INSTANCE_RUNNING, INSTANCE_DELETING, NULL), 0);
}

static void mark_creating(Store *store, void *uuid)
{
    /* A create cut short after the overlay, before libvirt: a record and a disk, no domain. */
    StoreInstance instance = {.state = INSTANCE_CREATING, .created_at = time(NULL)};
    snprintf(instance.uuid, sizeof(instance.uuid), "%s", (char *)uuid);
    snprintf(instance.org_uuid, sizeof(instance.org_uuid), "%s", q.org.uuid);
    snprintf(instance.image, sizeof(instance.image), "tiny");
    snprintf(instance.size, sizeof(instance.size), "small");
    assert_int_equal(store_instance_insert(store, &instance), 0);
}

static void test_restart_reconciles(void **state)
{
    char kept[UUID_STR_LEN], stale[UUID_STR_LEN], orphan[UUID_STR_LEN], deleting[UUID_STR_LEN],
        creating[UUID_STR_LEN];
    create_instance(kept);
    create_instance(stale);
    create_instance(orphan);
    create_instance(deleting);

    /* SIGTERM stops legbad, not its VMs. */
    assert_int_equal(harness_legbad_stop(q.legbad), 0);
    harness_legbad_free(q.legbad);
    q.legbad = NULL;
    assert_true(domain_exists(kept));
    virDomainPtr dom = lookup(kept);
    assert_int_equal(virDomainIsActive(dom), 1);
    virDomainFree(dom);

    /* While it is down: a domain vanishes, a record vanishes, two intents are left half done. */
    dom = lookup(stale);
    assert_int_equal(virDomainDestroy(dom), 0);
    assert_int_equal(virDomainUndefine(dom), 0);
    virDomainFree(dom);
    edit_store(forget_record, orphan);
    edit_store(mark_deleting, deleting);
    assert_int_equal(uuid_generate(creating), 0);
    _cleanup_free_ char *creating_disk = overlay_of(creating);
    _cleanup_free_ char *tiny_disk = NULL;
    assert_true(asprintf(&tiny_disk, "%s/tiny/disk.qcow2", q.images_dir) > 0);
    assert_int_equal(disk_overlay_create(tiny_disk, "qcow2", creating_disk, NULL), 0);
    edit_store(mark_creating, creating);

    /* A domain of another installation on the same libvirt (a live service beside this test). */
    char foreign[UUID_STR_LEN], other_install[UUID_STR_LEN], foreign_xml[1024];
    assert_int_equal(uuid_generate(foreign), 0);
    assert_int_equal(uuid_generate(other_install), 0);
    snprintf(foreign_xml, sizeof(foreign_xml),
             "<domain type='qemu'><name>legba-%s</name><memory unit='MiB'>64</memory>"
             "<metadata><legba:instance xmlns:legba='https://legba.dev/xmlns/instance/1' "
             "install='%s' uuid='%s' org='%s'/></metadata>"
             "<os><type arch='x86_64'>hvm</type></os></domain>",
             foreign, other_install, foreign, q.org.uuid);
    dom = virDomainDefineXML(q.conn, foreign_xml);
    assert_non_null(dom);
    virDomainFree(dom);

    assert_int_equal(start_legbad(), 0);

    /* Another installation's domain is not an orphan of this one. */
    bool foreign_kept = domain_exists(foreign);
    dom = lookup(foreign);
    if (dom) {
        virDomainUndefine(dom);
        virDomainFree(dom);
    }
    assert_true(foreign_kept);
    assert_true(harness_log_contains(q.legbad->log_path, "left alone"));

    /* The untouched one is adopted as it was. */
    _cleanup_free_ char *status = instance_status(kept);
    assert_non_null(status);
    assert_string_equal(status, "running");
    assert_true(domain_exists(kept));

    /* The record whose domain is gone is kept, as stopped. */
    free(status);
    status = instance_status(stale);
    assert_non_null(status);
    assert_string_equal(status, "stopped");
    assert_true(harness_log_contains(q.legbad->log_path, "its domain is gone"));

    /* The orphan domain and its disk are gone. */
    _cleanup_free_ char *orphan_disk = overlay_of(orphan);
    assert_false(domain_exists(orphan));
    assert_false(harness_file_exists(orphan_disk));
    char needle[96];
    snprintf(needle, sizeof(needle), "orphan domain legba-%s", orphan);
    assert_true(harness_log_contains(q.legbad->log_path, needle));

    /* The interrupted delete is finished, the interrupted create undone. */
    _cleanup_free_ char *deleting_disk = overlay_of(deleting);
    assert_false(domain_exists(deleting));
    assert_false(harness_file_exists(deleting_disk));
    assert_false(record_listed_by_legbactl(deleting));
    assert_false(harness_file_exists(creating_disk));
    assert_false(record_listed_by_legbactl(creating));
    assert_true(harness_log_contains(q.legbad->log_path, "interrupted delete finished"));
    assert_true(harness_log_contains(q.legbad->log_path, "interrupted create undone"));

    /* Both survivors can still be deleted, leaving nothing of this test on the host. */
    HarnessResponse resp = {0};
    const char *const left[] = {kept, stale};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(request("DELETE", left[i], &resp), 0);
        assert_http_status(&resp, 204);
        harness_response_done(&resp);
        assert_false(domain_exists(left[i]));
    }
    char instances_dir[512];
    snprintf(instances_dir, sizeof(instances_dir), "%s/instances", q.data_dir);
    assert_int_equal(harness_count_files(instances_dir, ".qcow2"), 0);
}

/* ---- the lifecycle on real QEMU: stop and start, expiry, a libvirtd restart ---- */

/* POST …/instances/{uuid}/{action}, no body. */
static int post_action(const char *uuid, const char *action, HarnessResponse *resp)
{
    char path[192];
    snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s/%s", q.org.uuid, uuid, action);
    return harness_http(q.legbad->port, "POST", path, HARNESS_LIST(q.org.auth), NULL, 0, resp);
}

/* POST action (no body); it must answer 200 with this status, not ready. */
static void assert_action_status(const char *uuid, const char *action, const char *want)
{
    HarnessResponse resp = {0};
    assert_int_equal(post_action(uuid, action, &resp), 0);
    assert_http_status(&resp, 200);
    const char *status = cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "status"));
    if (!status || strcmp(status, want) != 0)
        fail_msg("%s: status %s expected: %s", action, want, resp.body);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(resp.json, "ready")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(resp.json, "ready_at")));
    harness_response_done(&resp);
}

/* The domain's libvirt state (VIR_DOMAIN_RUNNING, _SHUTOFF…), or -1 when there is no domain. */
static int domain_state(const char *uuid)
{
    virDomainPtr dom = lookup(uuid);
    if (!dom)
        return -1;
    int state = -1, reason;
    if (virDomainGetState(dom, &state, &reason, 0) < 0)
        state = -1;
    virDomainFree(dom);
    return state;
}

/*
 * Polls GET until the instance's status is want, at most until deadline_ms
 * (harness_now_ms()); returns when it was seen, or fails with the last one.
 */
static long long wait_instance_status(const char *uuid, const char *want, long long deadline_ms)
{
    for (;;) {
        char *status = instance_status(uuid);
        long long now = harness_now_ms();
        bool done = status && strcmp(status, want) == 0;
        if (done || now >= deadline_ms) {
            if (!done)
                fail_msg("instance %s: status %s expected by now, it is %s", uuid, want,
                         status ? status : "(404)");
            free(status);
            return now;
        }
        free(status);
        usleep(100 * 1000);
    }
}

static bool log_says(const char *needle, int seconds)
{
    return harness_log_wait(q.legbad->log_path, needle, seconds * 1000);
}

/* Whether the domain's disk is this overlay: a restarted domain boots from the same disk. */
static bool domain_uses_disk(const char *uuid, const char *overlay)
{
    virDomainPtr dom = lookup(uuid);
    if (!dom)
        return false;
    char *xml = virDomainGetXMLDesc(dom, 0);
    char want[600];
    snprintf(want, sizeof(want), "<source file='%s'", overlay);
    bool found = xml && strstr(xml, want);
    free(xml);
    virDomainFree(dom);
    return found;
}

/*
 * POST …/stop ends the QEMU process and keeps the domain (shut off) and its
 * disk; …/start boots it again from the same disk, console and all; DELETE
 * then takes everything.
 */
static void test_stop_start_real(void **state)
{
    char uuid[UUID_STR_LEN];
    create_instance(uuid);
    pid_t pid = harness_qemu_pid(uuid);
    assert_true(pid > 0);
    assert_true(qemu_runs(pid, uuid));
    _cleanup_free_ char *overlay = overlay_of(uuid);

    long long t0 = harness_now_ms();
    assert_action_status(uuid, "stop", "stopped");
    long long stopped = harness_now_ms();
    assert_true(wait_process_gone(pid, 10));
    assert_int_equal(domain_state(uuid), VIR_DOMAIN_SHUTOFF);
    assert_true(harness_file_exists(overlay));
    assert_true(domain_uses_disk(uuid, overlay));
    _cleanup_free_ char *status = instance_status(uuid);
    assert_non_null(status);
    assert_string_equal(status, "stopped");
    assert_true(record_listed_by_legbactl(uuid));
    /* Stopping what is stopped changes nothing. */
    assert_action_status(uuid, "stop", "stopped");
    assert_int_equal(domain_state(uuid), VIR_DOMAIN_SHUTOFF);

    long long t1 = harness_now_ms();
    assert_action_status(uuid, "start", "running");
    long long started = harness_now_ms();
    pid_t again = harness_qemu_pid(uuid);
    assert_true(again > 0);
    assert_true(qemu_runs(again, uuid));
    assert_int_equal(domain_state(uuid), VIR_DOMAIN_RUNNING);
    assert_true(domain_uses_disk(uuid, overlay));
    free(status);
    status = instance_status(uuid);
    assert_non_null(status);
    assert_string_equal(status, "running");
    assert_action_status(uuid, "start", "running");
    assert_int_equal(harness_qemu_pid(uuid), again);
    virDomainPtr dom = lookup(uuid);
    assert_non_null(dom);
    assert_console_speaks_rfb(dom);
    virDomainFree(dom);
    print_message("stop %lld ms, start %lld ms\n", stopped - t0, started - t1);

    HarnessResponse resp = {0};
    assert_int_equal(request("DELETE", uuid, &resp), 0);
    assert_http_status(&resp, 204);
    harness_response_done(&resp);
    assert_true(wait_process_gone(again, 10));
    assert_false(domain_exists(uuid));
    assert_false(harness_file_exists(overlay));
    assert_false(record_listed_by_legbactl(uuid));
}

/* timeout_seconds 3: the janitor destroys process, domain and disk; the record says terminated. */
/* The pool's instances on record (legbactl instance list), as "uuid state" lines, sorted. */
static char *pool_records(void)
{
    cJSON *json = NULL;
    assert_int_equal(harness_legbactl(q.data_dir, HARNESS_LIST("instance", "list"), &json), 0);
    char *text = calloc(1, 4096);
    assert_non_null(text);
    const cJSON *in;
    cJSON_ArrayForEach(in, cJSON_GetObjectItem(json, "instances"))
    {
        if (strcmp(harness_json_string(in, "org_uuid"), STORE_POOL_ORG) != 0)
            continue;
        size_t used = strlen(text);
        snprintf(text + used, 4096 - used, "%s %s %s\n", harness_json_string(in, "instance_uuid"),
                 harness_json_string(in, "size"), harness_json_string(in, "state"));
    }
    cJSON_Delete(json);
    return text;
}

/* Waits until legbactl pool list shows want ready tiny VMs of the size and mode, none on the way.
 */
static void wait_pool_ready(const char *size, const char *mode, int want, int seconds)
{
    assert_int_equal(harness_pool_wait(q.data_dir, "tiny", size, mode, want, seconds), 0);
}

/* POST tiny of the size: 201 started as want_start; the ms it took. */
static long long create_pooled(const char *size, const char *want_start, char ret[UUID_STR_LEN])
{
    char path[128], body[96];
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances", q.org.uuid);
    snprintf(body, sizeof(body), "{\"image\":\"tiny\",\"size\":\"%s\"}", size);
    long long t0 = harness_now_ms();
    assert_int_equal(harness_http(q.legbad->port, "POST", path,
                                  HARNESS_LIST(q.org.auth, "Content-Type: application/json"), body,
                                  strlen(body), &resp),
                     0);
    long long took = harness_now_ms() - t0;
    assert_http_status(&resp, 201);
    const char *start = harness_header(&resp, "Legba-Start");
    if (!start || strcmp(start, want_start) != 0)
        fail_msg("%s create started %s, %s expected", size, start ? start : "(none)", want_start);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "status")), "running");
    snprintf(ret, UUID_STR_LEN, "%s",
             cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "instance_uuid")));
    harness_response_done(&resp);
    return took;
}

/*
 * The pool on real QEMU: a warm VM runs and a standby one is saved to disk
 * (no QEMU process) while they wait; a restart of legbad adopts both as
 * they are; a create takes each (the standby one is restored and runs),
 * the pool refills, and once the config drops the pool its VMs go.
 */
static void test_pool_real(void **state)
{
    char conf[512], warm[UUID_STR_LEN], standby[UUID_STR_LEN];
    snprintf(conf, sizeof(conf), "%s/pool.conf", q.dir);
    FILE *f = fopen(conf, "we");
    assert_non_null(f);
    fprintf(f, "pool = tiny:small:1 tiny:medium:1:standby\npool_boots = 2\n");
    fclose(f);
    assert_int_equal(harness_legbad_stop_free(&q.legbad), 0);
    assert_int_equal(start_legbad_with(conf, "legbad-pool.log"), 0);
    wait_pool_ready("small", "warm", 1, 120);
    wait_pool_ready("medium", "standby", 1, 120);
    /*
     * The tiny image has no memory hotplug, so its standby VM was saved with
     * all of its RAM and nothing asked of it (it_browser's egress test proves
     * the unplug before the save and the plug at the take on the browser image).
     */
    assert_false(harness_log_contains(q.legbad->log_path, "hotplugged memory"));

    /* Adopted as they are by the next legbad: the same VMs, nothing booted again. */
    char *before = pool_records();
    assert_int_equal(harness_legbad_stop_free(&q.legbad), 0);
    assert_int_equal(start_legbad_with(conf, "legbad-pool-2.log"), 0);
    wait_pool_ready("small", "warm", 1, 30);
    wait_pool_ready("medium", "standby", 1, 30);
    char *after = pool_records();
    assert_string_equal(before, after);
    print_message("pool after a restart:\n%s", after);
    free(before);
    free(after);

    long long warm_ms = create_pooled("small", "warm", warm);
    long long standby_ms = create_pooled("medium", "standby", standby);
    print_message("POST -> 201: warm %lld ms, standby (restored) %lld ms\n", warm_ms, standby_ms);
    const char *const taken[] = {warm, standby};
    for (size_t i = 0; i < 2; i++) {
        pid_t pid = harness_qemu_pid(taken[i]);
        assert_true(pid > 0);
        assert_true(qemu_runs(pid, taken[i]));
        virDomainPtr dom = lookup(taken[i]);
        assert_non_null(dom);
        assert_int_equal(virDomainHasManagedSaveImage(dom, 0), 0);
        virDomainFree(dom);
        assert_true(record_listed_by_legbactl(taken[i]));
    }
    wait_pool_ready("small", "warm", 1, 120);
    wait_pool_ready("medium", "standby", 1, 120);

    /* DELETE of a taken one is a DELETE; a config without the pool empties it. */
    for (size_t i = 0; i < 2; i++) {
        HarnessResponse resp = {0};
        assert_int_equal(request("DELETE", taken[i], &resp), 0);
        assert_http_status(&resp, 204);
        harness_response_done(&resp);
        assert_false(domain_exists(taken[i]));
    }
    assert_int_equal(harness_legbad_stop_free(&q.legbad), 0);
    assert_int_equal(start_legbad(), 0);
    long long deadline = harness_now_ms() + 60000;
    char *left = pool_records();
    while (left[0] && harness_now_ms() < deadline) {
        free(left);
        usleep(200 * 1000);
        left = pool_records();
    }
    if (left[0])
        fail_msg("the pool was not emptied:\n%s", left);
    free(left);
    _cleanup_free_ char *instances_dir = NULL;
    assert_true(asprintf(&instances_dir, "%s/instances", q.data_dir) > 0);
    assert_int_equal(harness_count_files(instances_dir, ".qcow2"), 0);
}

static void test_expiry_real(void **state)
{
    char uuid[UUID_STR_LEN], path[128], needle[96];
    static const char body[] = "{\"image\":\"tiny\",\"size\":\"small\",\"timeout_seconds\":3}";
    HarnessResponse resp = {0};
    snprintf(path, sizeof(path), "/orgs/%s/api/instances", q.org.uuid);
    long long t0 = harness_now_ms();
    assert_int_equal(harness_http(q.legbad->port, "POST", path,
                                  HARNESS_LIST(q.org.auth, "Content-Type: application/json"), body,
                                  strlen(body), &resp),
                     0);
    assert_http_status(&resp, 201);
    int64_t created, expires;
    assert_int_equal(
        util_parse_iso8601(cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "created_at")),
                           &created),
        0);
    assert_int_equal(
        util_parse_iso8601(cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "expires_at")),
                           &expires),
        0);
    assert_int_equal(expires - created, 3);
    snprintf(uuid, sizeof(uuid), "%s",
             cJSON_GetStringValue(cJSON_GetObjectItem(resp.json, "instance_uuid")));
    harness_response_done(&resp);
    long long answered = harness_now_ms();
    pid_t pid = harness_qemu_pid(uuid);
    assert_true(pid > 0);
    assert_true(qemu_runs(pid, uuid));
    _cleanup_free_ char *overlay = overlay_of(uuid);

    /*
     * From the 201: the seconds the create itself took (booting QEMU) are
     * not the test's. Every answer on the way is running or terminated: an
     * instance that is ending is not "no such instance" (404) meanwhile.
     */
    long long ended = 0, first_404 = 0;
    unsigned n_404 = 0;
    while (!ended) {
        char *status = instance_status(uuid);
        long long now = harness_now_ms();
        if (!status) {
            n_404++;
            if (!first_404)
                first_404 = now;
        } else if (strcmp(status, "terminated") == 0) {
            ended = now;
        } else if (strcmp(status, "running") != 0) {
            fail_msg("instance %s: status %s while it expires", uuid, status);
        }
        free(status);
        if (!ended && now >= answered + 6000)
            fail_msg("instance %s: not terminated 6 s after the create", uuid);
        usleep(100 * 1000);
    }
    print_message("timeout_seconds 3: terminated %lld ms after the create was sent, %lld ms "
                  "after its answer\n",
                  ended - t0, ended - answered);
    assert_true(time(NULL) >= expires);
    /*
     * "terminated" shows as the teardown starts; legbad logs "expired" once
     * domain and disk are gone, which takes a TCG QEMU a couple of seconds.
     */
    snprintf(needle, sizeof(needle), "instance %s: expired", uuid);
    assert_true(log_says(needle, 10));
    assert_true(wait_process_gone(pid, 1));
    assert_false(domain_exists(uuid));
    assert_false(harness_file_exists(overlay));
    assert_true(record_listed_by_legbactl(uuid));

    assert_int_equal(request("DELETE", uuid, &resp), 0);
    assert_http_status(&resp, 204);
    harness_response_done(&resp);
    assert_false(record_listed_by_legbactl(uuid));
    if (n_404)
        fail_msg("GET did not answer 200 (404: no such instance) %u times, from %lld ms before "
                 "it answered terminated: the record is invisible while the janitor ends it",
                 n_404, ended - first_404);
}

/* ---- legbad --check-host on this host ---- */

/* Writes a config for the check: this test's dirs on qemu:///system. */
static char *write_check_config(const char *name, const char *data_dir)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", q.dir, name) > 0);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    fprintf(f, "libvirt_uri = %s\ndata_dir = %s\nimages_dir = %s\n", QEMU_URI, data_dir,
            q.images_dir);
    fclose(f);
    return path;
}

/* Runs `legbad --check-host -c config`; its report into *ret_report. Returns the exit status. */
static int check_host(const char *config, char **ret_report)
{
    char legbad[512];
    const char *env = getenv("LEGBA_LEGBAD");
    snprintf(legbad, sizeof(legbad), "%s", env && env[0] ? env : "");
    if (!legbad[0])
        snprintf(legbad, sizeof(legbad), "%s/legbad", harness_binary_dir());
    int status = harness_run(HARNESS_LIST(legbad, "--check-host", "-c", config), ret_report);
    assert_true(status >= 0);
    assert_non_null(*ret_report);
    return status;
}

/* The report's line for check name ("LEVEL  NAME  VALUE…"), or NULL; malloc'd. */
static char *report_line(const char *report, const char *name)
{
    for (const char *line = report; *line;) {
        size_t len = strcspn(line, "\n");
        const char *word = line + strcspn(line, " ");
        word += strspn(word, " ");
        size_t n = strlen(name);
        if (word < line + len && strncmp(word, name, n) == 0 && word[n] == ' ')
            return strndup(line, len);
        line += len + (line[len] == '\n');
    }
    return NULL;
}

/*
 * The report on this host: one line per check, exit 0 (nothing fails),
 * QEMU runs as libvirt-qemu with its seccomp sandbox. A data dir that
 * anyone may write is a FAIL and exit status 1.
 */
static void test_check_host(void **state)
{
    static const char *const checks[] = {
        "accel",  "qemu_user",     "seccomp_sandbox", "security_driver", "ksm",
        "memory", "data_dir_free", "images_dir_free", "data_dir_mode",   "images_dir_mode",
    };
    _cleanup_free_ char *config = write_check_config("check.conf", q.data_dir);
    _cleanup_free_ char *report = NULL;
    int status = check_host(config, &report);
    fprintf(stderr, "legbad --check-host:\n%s", report);
    if (status != 0)
        fail_msg("legbad --check-host: exit status %d, 0 expected", status);
    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        _cleanup_free_ char *line = report_line(report, checks[i]);
        if (!line)
            fail_msg("no %s line in the report", checks[i]);
        if (strncmp(line, "FAIL", 4) == 0)
            fail_msg("%s", line);
    }
    _cleanup_free_ char *user = report_line(report, "qemu_user");
    assert_true(strncmp(user, "ok ", 3) == 0);
    assert_non_null(strstr(user, "libvirt-qemu"));
    _cleanup_free_ char *seccomp = report_line(report, "seccomp_sandbox");
    assert_true(strncmp(seccomp, "ok ", 3) == 0);

    /* A data dir open to everyone. */
    _cleanup_free_ char *open_dir = NULL;
    assert_true(asprintf(&open_dir, "%s/open-data", q.dir) > 0);
    assert_int_equal(mkdir(open_dir, 0700), 0);
    assert_int_equal(chmod(open_dir, 0777), 0);
    _cleanup_free_ char *open_config = write_check_config("open.conf", open_dir);
    _cleanup_free_ char *open_report = NULL;
    assert_int_equal(check_host(open_config, &open_report), 1);
    _cleanup_free_ char *mode = report_line(open_report, "data_dir_mode");
    assert_non_null(mode);
    if (strncmp(mode, "FAIL ", 5) != 0 || !strstr(mode, "0777") || !strstr(mode, "chmod go-w"))
        fail_msg("data_dir_mode FAIL with 0777 and chmod go-w expected: %s", mode);
}

/*
 * seccomp_sandbox = 0 in qemu.conf, as legbad sees it: the file is replaced
 * by a bind mount in a private mount namespace (unshare -m), so neither
 * libvirtd nor the host sees the change. --check-host fails, a start is
 * refused, and allow_unsafe_host = yes starts legbad anyway (stopped by
 * timeout once it listens).
 */
/*
 * One legbad per host: the egress rules it installs confine every QEMU of
 * the host's QEMU user, so a second one (another data dir) refuses to start
 * rather than replace them.
 */
static void test_second_legbad_refused(void **state)
{
    char legbad[512];
    snprintf(legbad, sizeof(legbad), "%s/legbad", harness_binary_dir());
    uint16_t port;
    assert_int_equal(harness_free_port(&port), 0);
    _cleanup_free_ char *dir = NULL, *port_text = NULL, *out = NULL;
    assert_true(asprintf(&dir, "%s/second-data", q.dir) > 0);
    assert_true(asprintf(&port_text, "127.0.0.1:%u", port) > 0);
    int status = harness_run_merged(HARNESS_LIST("timeout", "20", legbad, "--libvirt-uri", QEMU_URI,
                                                 "--data-dir", dir, "--images-dir", q.images_dir,
                                                 "--listen", port_text),
                                    &out);
    if (status != 1 || !out || !strstr(out, "another legbad on this host holds"))
        fail_msg("exit status %d (1 expected) and the reason in:\n%s", status, out ? out : "");
    /* The first one still serves. */
    assert_false(harness_legbad_exited(q.legbad));
    assert_true(harness_port_accepts(q.legbad->port));
}

static void test_unsafe_host_refused(void **state)
{
    char legbad[512], script[4096];
    const char *env = getenv("LEGBA_LEGBAD");
    snprintf(legbad, sizeof(legbad), "%s", env && env[0] ? env : "");
    if (!legbad[0])
        snprintf(legbad, sizeof(legbad), "%s/legbad", harness_binary_dir());
    uint16_t port;
    assert_int_equal(harness_free_port(&port), 0);
    _cleanup_free_ char *unsafe_dir = NULL, *conf = NULL, *allow = NULL, *qemu_conf = NULL;
    assert_true(asprintf(&unsafe_dir, "%s/unsafe-data", q.dir) > 0);
    conf = write_check_config("unsafe.conf", unsafe_dir);
    assert_true(asprintf(&allow, "%s/allow.conf", q.dir) > 0);
    assert_true(asprintf(&qemu_conf, "%s/qemu.conf", q.dir) > 0);
    FILE *f = fopen(qemu_conf, "we");
    assert_non_null(f);
    fputs("# as an operator might leave it\nseccomp_sandbox = 0\n", f);
    fclose(f);
    f = fopen(allow, "we");
    assert_non_null(f);
    fprintf(f, "libvirt_uri = %s\ndata_dir = %s\nimages_dir = %s\nallow_unsafe_host = yes\n",
            QEMU_URI, unsafe_dir, q.images_dir);
    fclose(f);
    snprintf(script, sizeof(script),
             "mount --bind '%s' /etc/libvirt/qemu.conf || exit 99\n"
             "'%s' --check-host -c '%s'; echo \"check=$?\"\n"
             "'%s' -c '%s' --listen 127.0.0.1:%u; echo \"start=$?\"\n"
             "timeout 10 '%s' -c '%s' --listen 127.0.0.1:%u; echo \"override=$?\"\n",
             qemu_conf, legbad, conf, legbad, conf, port, legbad, allow, port);
    _cleanup_free_ char *out = NULL;
    /* One legbad per host: the group's steps aside while these run. */
    assert_int_equal(harness_legbad_stop_free(&q.legbad), 0);
    int status = harness_run_merged(HARNESS_LIST("unshare", "-m", "sh", "-c", script), &out);
    assert_int_equal(start_legbad(), 0);
    if (status != 0 || !out || !strstr(out, "check=1\n") || !strstr(out, "start=1\n") ||
        !strstr(out, "override=124\n"))
        fail_msg("exit status %d; check=1, start=1 and override=124 (timeout) expected in:\n%s",
                 status, out ? out : "");
    assert_non_null(strstr(out, "FAIL  seccomp_sandbox"));
    assert_non_null(strstr(out, "not starting"));
    assert_non_null(strstr(out, "starting anyway, as allow_unsafe_host = yes says"));
    assert_non_null(strstr(out, "listening on"));
    /* The host's own file is as it was. */
    bool set = false;
    long value = 1;
    int r = hostcheck_read_seccomp_sandbox("/etc/libvirt/qemu.conf", &set, &value);
    assert_true(r == 0 || r == -ENOENT);
    assert_int_not_equal(value, 0);
}

/* ---- libvirtd restarted under a running legbad ---- */

/* The running libvirtd's pid, from its pid file, checked against /proc; 0 when there is none. */
static pid_t libvirtd_pid(void)
{
    char buf[32] = "", path[64], comm[32] = "";
    FILE *f = fopen("/run/libvirtd.pid", "re");
    if (!f)
        return 0;
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = '\0';
    fclose(f);
    pid_t pid = (pid_t)atoi(buf);
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return 0;
    if (!fgets(comm, sizeof(comm), f))
        comm[0] = '\0';
    fclose(f);
    return strcmp(comm, "libvirtd\n") == 0 ? pid : 0;
}

/* Whether libvirtd answers on qemu:///system (virsh's complaints while it does not are dropped). */
static bool libvirt_answers(void)
{
    return harness_run_merged(HARNESS_LIST("virsh", "-c", QEMU_URI, "version"), NULL) == 0;
}

/* Starts libvirtd the way tools/setup does and waits until it answers on qemu:///system. */
static int libvirtd_start(void)
{
    int status = harness_run(HARNESS_LIST("libvirtd", "-d"), NULL);
    if (status != 0) {
        fprintf(stderr, "it_qemu: libvirtd -d: exit status %d\n", status);
        return -EIO;
    }
    for (int i = 0; i < 150; i++) {
        if (libvirt_answers())
            return 0;
        usleep(200 * 1000);
    }
    fprintf(stderr, "it_qemu: libvirtd started but does not answer on %s\n", QEMU_URI);
    return -ETIMEDOUT;
}

/*
 * The test's own connection, new after libvirtd came back. This process
 * runs no libvirt event loop, so the old one cannot tell it is dead.
 */
static void reopen_conn(void)
{
    if (q.conn)
        virConnectClose(q.conn);
    q.conn = virConnectOpen(QEMU_URI);
}

/*
 * After the libvirtd test, pass or fail: the other tests and everything
 * else on this host need libvirtd, so one is running when it returns.
 */
static int libvirtd_restore(void **state)
{
    int r = 0;
    if (!libvirt_answers()) {
        /* One that is still starting up gets its time before another is started. */
        for (int i = 0; i < 50 && libvirtd_pid() > 0 && !libvirt_answers(); i++)
            usleep(200 * 1000);
        if (!libvirt_answers() && libvirtd_pid() == 0) {
            fprintf(stderr, "it_qemu: libvirtd is not running after the test; starting it\n");
            r = libvirtd_start();
        }
    }
    if (q.restarted_libvirtd)
        reopen_conn();
    return r < 0 || !q.conn ? -1 : 0;
}

/*
 * libvirtd stops (SIGTERM, as a package upgrade or an operator does) and
 * starts again under a running legbad: meanwhile the instance's QEMU runs
 * on and a create answers 503 hypervisor_unavailable; afterwards legbad is
 * connected again by itself, creates work and lifecycle events arrive.
 */
static void test_libvirtd_restart(void **state)
{
    char uuid[UUID_STR_LEN], after[UUID_STR_LEN], name[64], path[128];
    char instances_dir[512];
    snprintf(instances_dir, sizeof(instances_dir), "%s/instances", q.data_dir);
    create_instance(uuid);
    pid_t qemu = harness_qemu_pid(uuid);
    assert_true(qemu > 0);
    assert_true(qemu_runs(qemu, uuid));
    assert_false(harness_log_contains(q.legbad->log_path, "reconnected"));

    pid_t daemon = libvirtd_pid();
    if (daemon == 0)
        fail_msg("no libvirtd found through /run/libvirtd.pid: started some other way?");
    long long t0 = harness_now_ms();
    assert_int_equal(kill(daemon, SIGTERM), 0);
    q.restarted_libvirtd = true;
    if (!wait_process_gone(daemon, 30))
        fail_msg("libvirtd %d still runs 30 s after SIGTERM", (int)daemon);
    print_message("libvirtd %d stopped after %lld ms\n", (int)daemon, harness_now_ms() - t0);

    /* legbad notices, keeps answering from its records, and refuses creates for now. */
    snprintf(name, sizeof(name), "connection to %s lost", QEMU_URI);
    assert_true(log_says(name, 20));
    _cleanup_free_ char *status = instance_status(uuid);
    assert_non_null(status);
    assert_string_equal(status, "running");
    int overlays = harness_count_files(instances_dir, ".qcow2");
    cJSON *list = NULL;
    assert_int_equal(harness_legbactl(q.data_dir, HARNESS_LIST("instance", "list"), &list), 0);
    int records = cJSON_GetArraySize(cJSON_GetObjectItem(list, "instances"));
    cJSON_Delete(list);
    HarnessResponse resp = {0};
    static const char body[] = "{\"image\":\"tiny\",\"size\":\"small\"}";
    snprintf(path, sizeof(path), "/orgs/%s/api/instances", q.org.uuid);
    assert_int_equal(harness_http(q.legbad->port, "POST", path,
                                  HARNESS_LIST(q.org.auth, "Content-Type: application/json"), body,
                                  strlen(body), &resp),
                     0);
    assert_http_status(&resp, 503);
    const char *code =
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(resp.json, "error"), "code"));
    assert_non_null(code);
    assert_string_equal(code, "hypervisor_unavailable");
    assert_non_null(harness_header(&resp, "Retry-After"));
    harness_response_done(&resp);
    /* The refused create left nothing behind. */
    assert_int_equal(harness_count_files(instances_dir, ".qcow2"), overlays);
    assert_int_equal(harness_legbactl(q.data_dir, HARNESS_LIST("instance", "list"), &list), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(list, "instances")), records);
    cJSON_Delete(list);

    long long t1 = harness_now_ms();
    assert_int_equal(libvirtd_start(), 0);
    long long answering = harness_now_ms();
    reopen_conn();
    assert_non_null(q.conn);
    q.restarted_libvirtd = false;
    if (!log_says("reconnected", 15))
        fail_msg("legbad did not reconnect within 15 s of libvirtd answering; log %s",
                 q.legbad->log_path);
    print_message("libvirtd answered %lld ms after it was started; legbad reconnected within "
                  "%lld ms of that\n",
                  answering - t1, harness_now_ms() - answering);

    /* The guest never noticed: the same QEMU process, and the record still says running. */
    assert_true(qemu_runs(qemu, uuid));
    assert_int_equal(harness_qemu_pid(uuid), qemu);
    assert_int_equal(domain_state(uuid), VIR_DOMAIN_RUNNING);
    free(status);
    status = instance_status(uuid);
    assert_non_null(status);
    assert_string_equal(status, "running");

    /* Creates work again. */
    create_instance(after);
    assert_true(qemu_runs(harness_qemu_pid(after), after));

    /* Lifecycle events come over the new connection: a domain killed outside legbad shows. */
    snprintf(name, sizeof(name), "legba-%s", uuid);
    assert_int_equal(harness_run(HARNESS_LIST("virsh", "-c", QEMU_URI, "destroy", name), NULL), 0);
    long long destroyed = harness_now_ms();
    long long seen = wait_instance_status(uuid, "stopped", destroyed + 5000);
    print_message("virsh destroy seen as stopped after %lld ms\n", seen - destroyed);
    assert_true(wait_process_gone(qemu, 5));

    const char *const all[] = {uuid, after};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(request("DELETE", all[i], &resp), 0);
        assert_http_status(&resp, 204);
        harness_response_done(&resp);
        assert_false(domain_exists(all[i]));
    }
    assert_int_equal(harness_count_files(instances_dir, ".qcow2"), 0);
}

int main(void)
{
    const struct CMUnitTest all[] = {
        cmocka_unit_test(test_check_host),
        cmocka_unit_test(test_unsafe_host_refused),
        cmocka_unit_test(test_second_legbad_refused),
        cmocka_unit_test(test_create_console_delete),
        cmocka_unit_test(test_pool_real),
        cmocka_unit_test(test_uefi_sata_image),
        cmocka_unit_test(test_restart_reconciles),
        cmocka_unit_test(test_stop_start_real),
        cmocka_unit_test(test_expiry_real),
        cmocka_unit_test_teardown(test_libvirtd_restart, libvirtd_restore),
    };
    struct CMUnitTest tests[ARRAY_SIZE(all)];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(all); i++)
        if (harness_test_wanted("IT_QEMU_ONLY", all[i].name))
            tests[n++] = all[i];
    if (n == 0) {
        fprintf(stderr, "it_qemu: IT_QEMU_ONLY matches no test\n");
        return 1;
    }
    return _cmocka_run_group_tests("it_qemu", tests, n, group_setup, group_teardown);
}
