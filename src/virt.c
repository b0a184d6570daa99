#include "virt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* How often a lost connection to libvirtd is tried again. */
#define VIRT_RECONNECT_MS 2000

struct Virt {
    char *uri;
    /*
     * The connection, NULL while libvirtd is away. Callers take a reference
     * under the lock (conn_get), so a reconnect never pulls a connection
     * from under a call in flight.
     */
    pthread_mutex_t lock;
    virConnectPtr conn;
    int lifecycle_id;
    /* The event loop's own: a connection that closed, released by the reconnect timer. */
    virConnectPtr dead;
    int reconnect_timer;
    unsigned reconnect_attempts;
    pthread_t event_thread;
    bool event_thread_started;
    atomic_bool quit;
    VirtLifecycleFn lifecycle;
    VirtReconnectFn reconnected;
    void *userdata;
};

/* libvirt keeps the last error per thread; hand it to the caller as text. */
static void set_error(char **ret_error, const char *what)
{
    if (!ret_error)
        return;
    /* No libvirt error at all: the call never reached libvirt, whose connection is down. */
    const char *msg = virGetLastError() ? virGetLastErrorMessage() : "libvirt is not connected";
    if (asprintf(ret_error, "%s: %s", what, msg ? msg : "unknown libvirt error") < 0)
        *ret_error = NULL;
}

static bool cpu_has_virt_flag(void)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/cpuinfo", "re");
    char line[8192];
    if (!f)
        return false;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "flags", 5) != 0)
            continue;
        return strstr(line, " vmx") || strstr(line, " svm");
    }
    return false;
}

int virt_accel_choose(AccelMode requested, bool *ret_kvm, char **ret_reason)
{
    const char *reason;
    bool kvm;

    if (requested == ACCEL_KVM) {
        kvm = true;
        reason = "kvm: requested by configuration";
    } else if (requested == ACCEL_TCG) {
        kvm = false;
        reason = "tcg: requested by configuration";
    } else if (access("/dev/kvm", F_OK) < 0) {
        kvm = false;
        reason = "tcg: /dev/kvm does not exist (software emulation, slow)";
    } else if (!cpu_has_virt_flag()) {
        kvm = false;
        reason = "tcg: /dev/kvm exists but the CPU has no vmx/svm flag (paravirtual KVM "
                 "such as PVM), where guests run faster under software emulation";
    } else {
        kvm = true;
        reason = "kvm: /dev/kvm present and the CPU has hardware virtualization";
    }
    char *copy = strdup(reason);
    if (!copy)
        return -ENOMEM;
    *ret_kvm = kvm;
    *ret_reason = copy;
    return 0;
}

void virt_domain_name(const char *instance_uuid, char ret[VIRT_DOMAIN_NAME_LEN])
{
    snprintf(ret, VIRT_DOMAIN_NAME_LEN, "%s%s", VIRT_DOMAIN_PREFIX, instance_uuid);
}

/* The instance uuid inside a domain name, or -EINVAL when the domain is not ours. */
static int instance_uuid_from_name(const char *name, char ret[UUID_STR_LEN])
{
    size_t plen = sizeof(VIRT_DOMAIN_PREFIX) - 1;
    if (strncmp(name, VIRT_DOMAIN_PREFIX, plen) != 0)
        return -EINVAL;
    return uuid_normalize(name + plen, ret);
}

static VirtDomainState state_of(virDomainPtr dom)
{
    int state, reason;
    if (virDomainGetState(dom, &state, &reason, 0) < 0)
        return VIRT_DOMAIN_STOPPED;
    return state == VIR_DOMAIN_RUNNING || state == VIR_DOMAIN_BLOCKED ? VIRT_DOMAIN_RUNNING
                                                                      : VIRT_DOMAIN_STOPPED;
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
    Virt *virt = opaque;
    char uuid[UUID_STR_LEN];
    if (!virt->lifecycle || instance_uuid_from_name(virDomainGetName(dom), uuid) < 0)
        return 0;
    if (event == VIR_DOMAIN_EVENT_STOPPED || event == VIR_DOMAIN_EVENT_CRASHED)
        virt->lifecycle(virt->userdata, uuid, VIRT_DOMAIN_STOPPED);
    else if (event == VIR_DOMAIN_EVENT_STARTED || event == VIR_DOMAIN_EVENT_RESUMED)
        virt->lifecycle(virt->userdata, uuid, VIRT_DOMAIN_RUNNING);
    return 0;
}

static void on_close(virConnectPtr conn, int reason, void *opaque);

/* Keepalive, close callback and lifecycle events on a fresh connection. */
static void conn_setup(Virt *virt, virConnectPtr conn)
{
    /* Keepalive notices a dead daemon; the fake test driver has none to offer. */
    if (strncmp(virt->uri, "test:", 5) != 0 && virConnectSetKeepAlive(conn, 5, 3) < 0)
        log_warn("libvirt: keepalive not enabled: %s", virGetLastErrorMessage());
    virConnectRegisterCloseCallback(conn, on_close, virt, NULL);
    virt->lifecycle_id =
        virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                         VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), virt, NULL);
    if (virt->lifecycle_id < 0)
        log_warn("libvirt: no lifecycle events: %s", virGetLastErrorMessage());
}

/*
 * The reconnect timer, on the event loop's thread: releases the dead
 * connection, then tries a new one until libvirtd answers again. The domains
 * kept running without us; the reconnected callback catches up with what
 * they did meanwhile.
 */
static void reconnect(int timer, void *opaque)
{
    Virt *virt = opaque;
    if (virt->dead) {
        virConnectUnregisterCloseCallback(virt->dead, on_close);
        virConnectClose(virt->dead);
        virt->dead = NULL;
    }
    virConnectPtr conn = virConnectOpen(virt->uri);
    virt->reconnect_attempts++;
    if (!conn) {
        /* Once at first, then about once a minute, so a long outage does not flood the log. */
        if (virt->reconnect_attempts == 1 || virt->reconnect_attempts % 30 == 0)
            log_warn("libvirt: %s still unreachable after %u attempts: %s", virt->uri,
                     virt->reconnect_attempts, virGetLastErrorMessage());
        return;
    }
    conn_setup(virt, conn);
    pthread_mutex_lock(&virt->lock);
    virt->conn = conn;
    pthread_mutex_unlock(&virt->lock);
    virEventUpdateTimeout(virt->reconnect_timer, -1);
    log_info("libvirt: reconnected to %s after %u attempts", virt->uri, virt->reconnect_attempts);
    virt->reconnect_attempts = 0;
    if (virt->reconnected)
        virt->reconnected(virt->userdata);
}

/*
 * libvirtd went away (restart, crash, keepalive timeout). Requests fail
 * with "not connected" until the reconnect timer has a new connection.
 */
static void on_close(virConnectPtr conn, int reason, void *opaque)
{
    Virt *virt = opaque;
    pthread_mutex_lock(&virt->lock);
    bool ours = virt->conn == conn;
    if (ours)
        virt->conn = NULL;
    pthread_mutex_unlock(&virt->lock);
    if (!ours)
        return;
    log_error("libvirt: connection to %s lost (reason %d); reconnecting every %d s", virt->uri,
              reason, VIRT_RECONNECT_MS / 1000);
    /* Released on the timer, outside the callback that is still using it. */
    virt->dead = conn;
    virt->lifecycle_id = -1;
    virEventUpdateTimeout(virt->reconnect_timer, VIRT_RECONNECT_MS);
}

static void *event_loop(void *arg)
{
    Virt *virt = arg;
    while (!atomic_load(&virt->quit)) {
        if (virEventRunDefaultImpl() < 0)
            log_warn("libvirt: event loop: %s", virGetLastErrorMessage());
    }
    return NULL;
}

static void wake_noop(int timer, void *opaque)
{
}

static void ignore_libvirt_error(void *userdata, virErrorPtr error)
{
    /* Errors are reported once, by whoever called; libvirt must not print them too. */
}

/* The default event loop must exist before the first connection opens, and only once. */
static pthread_once_t event_impl_once = PTHREAD_ONCE_INIT;
static int event_impl_result;

static void register_event_impl(void)
{
    event_impl_result = virEventRegisterDefaultImpl();
    virSetErrorFunc(NULL, ignore_libvirt_error);
}

int virt_open(const char *uri, VirtLifecycleFn lifecycle, VirtReconnectFn reconnected,
              void *userdata, Virt **ret_virt, char **ret_error)
{
    pthread_once(&event_impl_once, register_event_impl);
    if (event_impl_result < 0) {
        set_error(ret_error, "libvirt event loop");
        return -EIO;
    }

    Virt *virt = calloc(1, sizeof(*virt));
    if (!virt || !(virt->uri = strdup(uri))) {
        free(virt);
        return -ENOMEM;
    }
    pthread_mutex_init(&virt->lock, NULL);
    virt->lifecycle = lifecycle;
    virt->reconnected = reconnected;
    virt->userdata = userdata;
    virt->lifecycle_id = -1;

    virt->conn = virConnectOpen(uri);
    if (!virt->conn) {
        char what[256];
        snprintf(what, sizeof(what), "cannot connect to %s", uri);
        set_error(ret_error, what);
        virt_close(virt);
        return -ECONNREFUSED;
    }
    /* Disabled (-1) until a connection is lost. */
    virt->reconnect_timer = virEventAddTimeout(-1, reconnect, virt, NULL);
    if (virt->reconnect_timer < 0 ||
        pthread_create(&virt->event_thread, NULL, event_loop, virt) != 0) {
        virt_close(virt);
        return -EAGAIN;
    }
    virt->event_thread_started = true;
    conn_setup(virt, virt->conn);

    *ret_virt = virt;
    return 0;
}

void virt_close(Virt *virt)
{
    if (!virt)
        return;
    if (virt->conn) {
        if (virt->lifecycle_id >= 0)
            virConnectDomainEventDeregisterAny(virt->conn, virt->lifecycle_id);
        virConnectUnregisterCloseCallback(virt->conn, on_close);
    }
    if (virt->event_thread_started) {
        atomic_store(&virt->quit, true);
        int timer = virEventAddTimeout(0, wake_noop, NULL, NULL);
        pthread_join(virt->event_thread, NULL);
        if (timer >= 0)
            virEventRemoveTimeout(timer);
    }
    if (virt->reconnect_timer > 0)
        virEventRemoveTimeout(virt->reconnect_timer);
    if (virt->dead) {
        virConnectUnregisterCloseCallback(virt->dead, on_close);
        virConnectClose(virt->dead);
    }
    if (virt->conn)
        virConnectClose(virt->conn);
    pthread_mutex_destroy(&virt->lock);
    free(virt->uri);
    free(virt);
}

/*
 * Undefine, dropping any firmware variables too. Drivers without NVRAM
 * support (the test driver) refuse the flag, so fall back to the plain call.
 */
/* With its UEFI variables and its saved state (a standby pool VM's RAM), where it has them. */
static int undefine(virDomainPtr dom)
{
    static const unsigned flags[] = {
        VIR_DOMAIN_UNDEFINE_NVRAM | VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
        VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
    };
    for (size_t i = 0; i < ARRAY_SIZE(flags); i++) {
        if (virDomainUndefineFlags(dom, flags[i]) == 0)
            return 0;
        virErrorPtr err = virGetLastError();
        if (!err || (err->code != VIR_ERR_INVALID_ARG && err->code != VIR_ERR_NO_SUPPORT))
            return -1;
    }
    return virDomainUndefine(dom);
}

/* A reference to the live connection (release with virConnectClose), or NULL while it is down. */
static virConnectPtr conn_get(Virt *virt)
{
    pthread_mutex_lock(&virt->lock);
    virConnectPtr conn = virt->conn;
    if (conn)
        virConnectRef(conn);
    pthread_mutex_unlock(&virt->lock);
    return conn;
}

static int not_connected(char **ret_error)
{
    return util_set_error(ret_error, -ENOTCONN,
                          "libvirt is not connected (legbad reconnects "
                          "every %d s)",
                          VIRT_RECONNECT_MS / 1000);
}

int virt_capabilities(Virt *virt, char **ret_xml)
{
    virConnectPtr conn = conn_get(virt);
    if (!conn)
        return -ENOTCONN;
    char *caps = virConnectGetCapabilities(conn);
    virConnectClose(conn);
    if (!caps)
        return -EIO;
    *ret_xml = caps;
    return 0;
}

int virt_domain_start(Virt *virt, const char *xml, char **ret_error)
{
    virConnectPtr conn = conn_get(virt);
    if (!conn)
        return not_connected(ret_error);
    virDomainPtr dom = virDomainDefineXMLFlags(conn, xml, VIR_DOMAIN_DEFINE_VALIDATE);
    if (!dom)
        set_error(ret_error, "define domain");
    /* Releasing the reference resets libvirt's last error: only after it was read. */
    virConnectClose(conn);
    if (!dom)
        return -EIO;
    if (virDomainCreate(dom) < 0) {
        set_error(ret_error, "start domain");
        undefine(dom);
        virDomainFree(dom);
        return -EIO;
    }
    virDomainFree(dom);
    return 0;
}

/*
 * The domain of an instance, or NULL with *ret_r set: -ENOENT when there is
 * no such domain, -ENOTCONN while libvirt is away, -EIO otherwise (with
 * *ret_error, when ret_error is not NULL).
 */
static virDomainPtr lookup(Virt *virt, const char *instance_uuid, int *ret_r, char **ret_error)
{
    char name[VIRT_DOMAIN_NAME_LEN];
    virt_domain_name(instance_uuid, name);
    virConnectPtr conn = conn_get(virt);
    if (!conn) {
        *ret_r = not_connected(ret_error);
        return NULL;
    }
    /* The domain holds its own reference to the connection. */
    virDomainPtr dom = virDomainLookupByName(conn, name);
    if (!dom) {
        virErrorPtr err = virGetLastError();
        *ret_r = err && err->code == VIR_ERR_NO_DOMAIN ? -ENOENT : -EIO;
        if (*ret_r == -EIO)
            set_error(ret_error, "look up domain");
    }
    virConnectClose(conn);
    return dom;
}

static bool last_error_is_no_domain(void)
{
    virErrorPtr err = virGetLastError();
    return err && err->code == VIR_ERR_NO_DOMAIN;
}

int virt_domain_remove(Virt *virt, const char *instance_uuid, char **ret_error)
{
    int r = 0;
    virDomainPtr dom = lookup(virt, instance_uuid, &r, ret_error);
    if (!dom)
        return r;
    int active = virDomainIsActive(dom);
    if (active < 0 && !last_error_is_no_domain()) {
        /* Undefining a domain of unknown state could leave it running, transient. */
        set_error(ret_error, "query domain state");
        r = -EIO;
    } else if (active == 1 && virDomainDestroy(dom) < 0 && !last_error_is_no_domain() &&
               virDomainIsActive(dom) != 0) {
        set_error(ret_error, "destroy domain");
        r = -EIO;
    }
    if (r == 0 && undefine(dom) < 0 && !last_error_is_no_domain()) {
        set_error(ret_error, "undefine domain");
        r = -EIO;
    }
    virDomainFree(dom);
    return r;
}

int virt_domain_log_remove(Virt *virt, const char *instance_uuid)
{
    if (strcmp(virt->uri, "qemu:///system") != 0)
        return 0;
    char name[VIRT_DOMAIN_NAME_LEN], log[VIRT_DOMAIN_NAME_LEN + 8];
    virt_domain_name(instance_uuid, name);
    snprintf(log, sizeof(log), "%s.log", name);
    DIR *dir = opendir(VIRT_QEMU_LOG_DIR);
    if (!dir)
        return errno == ENOENT ? 0 : -errno;
    int r = 0;
    size_t len = strlen(log);
    /* "<name>.log" and virtlogd's rotations "<name>.log.N"; the name is ours, a uuid's. */
    for (struct dirent *e; (e = readdir(dir));) {
        if (strncmp(e->d_name, log, len) != 0 || (e->d_name[len] && e->d_name[len] != '.'))
            continue;
        if (unlinkat(dirfd(dir), e->d_name, 0) < 0 && errno != ENOENT && r == 0)
            r = -errno;
    }
    closedir(dir);
    return r;
}

/* Destroys (pulls the plug) or creates (boots) a defined domain, unless it is already so. */
static int set_power(Virt *virt, const char *instance_uuid, bool on, char **ret_error)
{
    int r;
    virDomainPtr dom = lookup(virt, instance_uuid, &r, ret_error);
    if (!dom)
        return r;
    r = 0;
    bool active = virDomainIsActive(dom) == 1;
    if (active != on && (on ? virDomainCreate(dom) : virDomainDestroy(dom)) < 0) {
        set_error(ret_error, on ? "power on" : "power off");
        r = -EIO;
    }
    virDomainFree(dom);
    return r;
}

int virt_domain_save(Virt *virt, const char *instance_uuid, char **ret_error)
{
    int r;
    virDomainPtr dom = lookup(virt, instance_uuid, &r, ret_error);
    if (!dom)
        return r;
    r = 0;
    if (virDomainManagedSave(dom, 0) < 0) {
        set_error(ret_error, "save domain");
        r = -EIO;
    }
    virDomainFree(dom);
    return r;
}

int virt_domain_hotplug_read(Virt *virt, const char *instance_uuid, Hotplug *ret)
{
    int r;
    virDomainPtr dom = lookup(virt, instance_uuid, &r, NULL);
    if (!dom)
        return r;
    _cleanup_free_ char *xml = virDomainGetXMLDesc(dom, 0);
    virDomainFree(dom);
    return xml ? hotplug_read(xml, ret) : -EIO;
}

int virt_domain_hotplug_request(Virt *virt, const char *instance_uuid, uint64_t requested_kib)
{
    int r;
    virDomainPtr dom = lookup(virt, instance_uuid, &r, NULL);
    if (!dom)
        return r;
    _cleanup_free_ char *xml = virDomainGetXMLDesc(dom, 0), *device = NULL;
    r = xml ? hotplug_request_xml(xml, requested_kib, &device) : -EIO;
    if (r == 0 && virDomainUpdateDeviceFlags(dom, device, VIR_DOMAIN_AFFECT_LIVE) < 0)
        r = -EIO;
    virDomainFree(dom);
    return r;
}

int virt_domain_power_off(Virt *virt, const char *instance_uuid, char **ret_error)
{
    return set_power(virt, instance_uuid, false, ret_error);
}

int virt_domain_power_on(Virt *virt, const char *instance_uuid, char **ret_error)
{
    return set_power(virt, instance_uuid, true, ret_error);
}

int virt_domain_state(Virt *virt, const char *instance_uuid, VirtDomainState *ret_state,
                      char **ret_error)
{
    int r;
    virDomainPtr dom = lookup(virt, instance_uuid, &r, ret_error);
    if (!dom && r != -ENOENT)
        return r;
    if (!dom) {
        *ret_state = VIRT_DOMAIN_ABSENT;
        return 0;
    }
    *ret_state = state_of(dom);
    virDomainFree(dom);
    return 0;
}

/* The value of attr='…' (or "…") inside the element text [start, end), malloc'd; NULL if absent. */
static char *xml_attr(const char *start, const char *end, const char *attr)
{
    char needle[32];
    snprintf(needle, sizeof(needle), " %s=", attr);
    size_t nlen = strlen(needle);
    for (const char *p = start; p && p + nlen < end; p++) {
        p = memmem(p, (size_t)(end - p), needle, nlen);
        if (!p)
            return NULL;
        char quote = p[nlen];
        if (quote != '\'' && quote != '"')
            continue;
        const char *value = p + nlen + 1;
        const char *close = memchr(value, quote, (size_t)(end - value));
        if (!close)
            return NULL;
        return strndup(value, (size_t)(close - value));
    }
    return NULL;
}

/* Reads NAME='<uuid>' out of our metadata element; ret is left empty when absent or malformed. */
static void metadata_uuid(const char *meta, const char *name, char ret[UUID_STR_LEN])
{
    ret[0] = '\0';
    _cleanup_free_ char *value = meta ? xml_attr(meta, meta + strlen(meta), name) : NULL;
    if (value && uuid_normalize(value, ret) < 0)
        ret[0] = '\0';
}

int virt_domain_list(Virt *virt, VirtDomain **ret_domains, size_t *ret_count, char **ret_error)
{
    virDomainPtr *doms = NULL;
    virConnectPtr conn = conn_get(virt);
    if (!conn)
        return not_connected(ret_error);
    int n = virConnectListAllDomains(conn, &doms, 0);
    if (n < 0)
        set_error(ret_error, "list domains");
    virConnectClose(conn);
    if (n < 0)
        return -EIO;
    VirtDomain *out = calloc((size_t)n + 1, sizeof(*out));
    size_t count = 0;
    for (int i = 0; i < n; i++) {
        if (out &&
            instance_uuid_from_name(virDomainGetName(doms[i]), out[count].instance_uuid) == 0) {
            _cleanup_free_ char *meta =
                virDomainGetMetadata(doms[i], VIR_DOMAIN_METADATA_ELEMENT, VIRT_METADATA_NS, 0);
            metadata_uuid(meta, "org", out[count].org_uuid);
            metadata_uuid(meta, "install", out[count].install_id);
            out[count].state = state_of(doms[i]);
            count++;
        }
        virDomainFree(doms[i]);
    }
    free(doms);
    if (!out)
        return -ENOMEM;
    *ret_domains = out;
    *ret_count = count;
    return 0;
}

int virt_domain_agent_socket(Virt *virt, const char *instance_uuid, const char *name,
                             char **ret_path)
{
    int r;
    virDomainPtr dom = lookup(virt, instance_uuid, &r, NULL);
    if (!dom)
        return -ENOENT;
    _cleanup_free_ char *xml = virDomainIsActive(dom) == 1 ? virDomainGetXMLDesc(dom, 0) : NULL;
    virDomainFree(dom);
    if (!xml)
        return -ENOENT;
    /* libvirt writes each channel as <channel type='unix'> <source … path='…'/> <target …
     * name='…'/>. */
    for (const char *p = strstr(xml, "<channel type='unix'>"); p;
         p = strstr(p + 1, "<channel type='unix'>")) {
        const char *end = strstr(p, "</channel>");
        if (!end)
            break;
        const char *target = memmem(p, (size_t)(end - p), "<target ", 8);
        const char *source = memmem(p, (size_t)(end - p), "<source ", 8);
        if (!target || !source)
            continue;
        _cleanup_free_ char *target_name = xml_attr(target, end, "name");
        if (!target_name || strcmp(target_name, name) != 0)
            continue;
        char *path = xml_attr(source, target > source ? target : end, "path");
        if (!path)
            return -ENOENT;
        if (path[0] != '/') {
            free(path);
            return -ENOENT;
        }
        *ret_path = path;
        return 0;
    }
    return -ENOENT;
}

int virt_domain_open_console(Virt *virt, const char *instance_uuid, int *ret_fd, char **ret_error)
{
    int r;
    virDomainPtr dom = lookup(virt, instance_uuid, &r, ret_error);
    if (!dom)
        return r;
    int fd = virDomainOpenGraphicsFD(dom, 0, VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH);
    virDomainFree(dom);
    if (fd < 0) {
        set_error(ret_error, "open console");
        return -EIO;
    }
    *ret_fd = fd;
    return 0;
}
