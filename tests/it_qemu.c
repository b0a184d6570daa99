/*
 * Tier 3: real QEMU under qemu:///system (TCG where the host has no usable
 * KVM), driven through legbad's API with the tiny image. Proves that a
 * QEMU process runs the instance, that its console answers RFB through
 * libvirt, that DELETE removes process, domain, overlay and record, and
 * that start-up reconcile repairs stale records and orphan domains.
 *
 * Needs root and a running libvirtd (tools/setup provides both).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
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
#include "store.h"
#include "util.h"

#define QEMU_URI "qemu:///system"

static struct {
    char *dir, *data_dir, *images_dir;
    HarnessOrg org;
    HarnessLegbad *legbad;
    virConnectPtr conn;
} q;

static void silence(void *userdata, virErrorPtr error)
{
}

static int start_legbad(void)
{
    HarnessLegbadOptions options = {
        .dir = q.dir,
        .data_dir = q.data_dir,
        .images_dir = q.images_dir,
        .libvirt_uri = QEMU_URI,
        .log_name = "legbad.log",
    };
    return harness_legbad_start(&options, &q.legbad);
}

static int group_setup(void **state)
{
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

/* The QEMU process libvirt started for the domain, from its pid file. */
static pid_t qemu_pid(const char *uuid)
{
    char path[128], buf[32] = {0};
    snprintf(path, sizeof(path), "/run/libvirt/qemu/legba-%s.pid", uuid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = '\0';
    fclose(f);
    return (pid_t)atoi(buf);
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
    pid_t pid = qemu_pid(uuid);
    assert_true(pid > 0);
    assert_true(qemu_runs(pid, uuid));
    _cleanup_free_ char *overlay = overlay_of(uuid);
    assert_true(harness_file_exists(overlay));
    assert_true(record_listed_by_legbactl(uuid));

    /* The console is reachable only through libvirt, and speaks RFB 3.8. */
    assert_console_speaks_rfb(dom);
    virDomainFree(dom);

    /* DELETE takes process, domain, overlay and record with it. */
    HarnessResponse resp = {0};
    assert_int_equal(request("DELETE", uuid, &resp), 0);
    assert_http_status(&resp, 204);
    harness_response_done(&resp);
    assert_true(wait_process_gone(pid, 10));
    assert_false(domain_exists(uuid));
    assert_false(harness_file_exists(overlay));
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
    pid_t pid = qemu_pid(uuid);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_console_delete),
        cmocka_unit_test(test_uefi_sata_image),
        cmocka_unit_test(test_restart_reconciles),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
