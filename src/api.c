#include "api.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "access.h"
#include "api_request.h"
#include "auth.h"
#include "disk.h"
#include "egress.h"
#include "log.h"
#include "pool.h"
#include "prefault.h"
#include "route.h"
#include "util.h"

/*
 * The domain lifecycle, as the API drives it. LMDB records the intent
 * before libvirt or the disk is touched, so reconcile (reconcile.c) can
 * finish or undo whatever a crash interrupted:
 *
 *   create:  record CREATING → overlay → define+start domain → RUNNING → 201
 *            (any failure undoes the steps already done, newest first)
 *   delete:  RUNNING|STOPPED → DELETING → destroy+undefine → overlay removed
 *            → record removed → 204
 *   expiry:  like delete, but the record ends TERMINATED (shown for
 *            terminated_retention, then removed by the janitor)
 *   stop/start: power off/on; the domain and its disk stay
 *   events:  libvirt says a domain stopped/started → STOPPED/RUNNING
 *
 * CREATING and DELETING records are invisible to clients.
 */

static const char *status_name(InstanceState state)
{
    switch (state) {
    case INSTANCE_RUNNING:
        return "running";
    case INSTANCE_STOPPED:
        return "stopped";
    case INSTANCE_TERMINATED:
        return "terminated";
    default:
        return NULL;
    }
}

static bool visible(const StoreInstance *instance)
{
    return status_name(instance->state) != NULL;
}

/*
 * The instance as clients see it. access_url carries the console secret
 * only when one was just issued (secret not NULL): it is stored hashed, so
 * every other answer gives the viewer's address alone.
 */
static cJSON *instance_to_json(const Api *api, const StoreInstance *instance, const char *secret)
{
    char created[UTIL_ISO8601_LEN], ready[UTIL_ISO8601_LEN], expires[UTIL_ISO8601_LEN];
    util_format_iso8601(instance->created_at, created);
    if (instance->ready_at)
        util_format_iso8601(instance->ready_at, ready);
    if (instance->expires_at)
        util_format_iso8601(instance->expires_at, expires);
    _cleanup_free_ char *base = NULL, *access = NULL;
    if (access_base(api->viewer->base_template, instance->uuid, &base) < 0 ||
        access_url(base, instance->uuid, secret, &access) < 0)
        return NULL;
    cJSON *json = cJSON_CreateObject();
    if (!json || !cJSON_AddStringToObject(json, "instance_uuid", instance->uuid) ||
        !cJSON_AddStringToObject(json, "status", status_name(instance->state)) ||
        !cJSON_AddStringToObject(json, "image", instance->image) ||
        !cJSON_AddStringToObject(json, "size", instance->size) ||
        !cJSON_AddStringToObject(json, "created_at", created) ||
        !cJSON_AddStringToObject(json, "access_url", access) ||
        !(instance->start_url[0] ? cJSON_AddStringToObject(json, "start_url", instance->start_url)
                                 : cJSON_AddNullToObject(json, "start_url")) ||
        !cJSON_AddBoolToObject(json, "ready", instance->ready_at != 0) ||
        !(instance->ready_at ? cJSON_AddStringToObject(json, "ready_at", ready)
                             : cJSON_AddNullToObject(json, "ready_at")) ||
        !(instance->expires_at ? cJSON_AddStringToObject(json, "expires_at", expires)
                               : cJSON_AddNullToObject(json, "expires_at")) ||
        !cJSON_AddStringToObject(json, "network",
                                 instance->network[0] ? instance->network : "none") ||
        !cJSON_AddStringToObject(json, "clipboard",
                                 instance->clipboard[0] ? instance->clipboard : "none")) {
        cJSON_Delete(json);
        return NULL;
    }
    return json;
}

static void internal_error(HttpResponse *response)
{
    http_response_error(response, 500, "internal", "internal error; see the server log");
}

static void not_found(HttpResponse *response)
{
    http_response_error(response, 404, "not_found", "no such resource");
}

/* Comma-separated names for error messages that list what is accepted. */
/* Appends ", name" (or the first name) to a comma-separated list in buf. */
static void append_name(char *buf, size_t size, const char *name)
{
    size_t used = strlen(buf);
    if (used < size)
        snprintf(buf + used, size - used, "%s%s", used ? ", " : "", name);
}

static void image_names(const ImageCatalog *images, char *buf, size_t size)
{
    buf[0] = '\0';
    for (size_t i = 0; i < image_catalog_count(images); i++)
        append_name(buf, size, image_catalog_get(images, i)->name);
    if (!buf[0])
        snprintf(buf, size, "(none installed)");
}

static void size_names(char *buf, size_t size)
{
    buf[0] = '\0';
    for (size_t i = 0; template_size_names[i]; i++)
        append_name(buf, size, template_size_names[i]);
}

/*
 * Whether the instance's guest gets a clipboard channel: only when the
 * user may hand it text, so an instance with "none" has no channel at all,
 * whatever the relay does.
 */
static bool clipboard_on(const StoreInstance *instance)
{
    return instance->clipboard[0] && strcmp(instance->clipboard, "none") != 0;
}

/* Renders the size's template for this instance; -errno, with *ret_error for the log. */
static int render_domain(const Api *api, const StoreInstance *instance, const Image *image,
                         const char *overlay, char **ret_xml, char **ret_error)
{
    char name[VIRT_DOMAIN_NAME_LEN], created[UTIL_ISO8601_LEN];
    virt_domain_name(instance->uuid, name);
    util_format_iso8601(instance->created_at, created);
    bool kernel = image->boot == IMAGE_BOOT_KERNEL;
    _cleanup_free_ char *netdev = NULL;
    int r = egress_netdev(instance->network[0] ? instance->network : "none",
                          api->config->guest_forward, &netdev);
    if (r < 0)
        return r;
    const TemplateVar vars[] = {
        {"name", name},
        {"install_id", api->install_id},
        {"uuid", instance->uuid},
        {"org_uuid", instance->org_uuid},
        {"image", instance->image},
        {"size", instance->size},
        {"created_at", created},
        {"domain_type", api->kvm ? "kvm" : "qemu"},
        {"kvm", api->kvm ? "1" : NULL},
        {"disk_path", overlay},
        {"disk_format", "qcow2"},
        {"kernel", kernel ? image->kernel_path : NULL},
        {"initrd", kernel ? image->initrd_path : NULL},
        {"cmdline", kernel ? image->cmdline : NULL},
        {"netdev", netdev},
        {"disk_sata", image->disk_sata ? "1" : NULL},
        {"uefi", image->uefi ? "1" : NULL},
        {"clipboard", clipboard_on(instance) ? "1" : NULL},
        {"hotplug", image->memory_hotplug ? "1" : NULL},
    };
    const char *tmpl = domain_templates_get(api->templates, instance->size);
    if (!tmpl)
        return -EINVAL;
    return template_render(tmpl, vars, ARRAY_SIZE(vars), ret_xml, ret_error);
}

unsigned api_check_catalog(const Api *api)
{
    unsigned failures = 0;
    StoreInstance probe = {.created_at = time(NULL)};
    snprintf(probe.uuid, sizeof(probe.uuid), "00000000-0000-4000-8000-000000000000");
    snprintf(probe.org_uuid, sizeof(probe.org_uuid), "%s", probe.uuid);
    for (size_t i = 0; i < image_catalog_count(api->images); i++) {
        const Image *image = image_catalog_get(api->images, i);
        for (size_t s = 0; template_size_names[s]; s++) {
            _cleanup_free_ char *xml = NULL, *why = NULL;
            snprintf(probe.image, sizeof(probe.image), "%s", image->name);
            snprintf(probe.size, sizeof(probe.size), "%s", template_size_names[s]);
            int r = render_domain(api, &probe, image, "/probe.qcow2", &xml, &why);
            if (r < 0) {
                log_error("image %s does not fit size %s: %s", image->name, template_size_names[s],
                          why ? why : strerror(-r));
                failures++;
            }
        }
    }
    return failures;
}

/*
 * The network an org's new instance gets: the org's own mode, else the
 * config's. Egress without its rules in place is refused, never granted
 * open: 503 until an operator fixes the host.
 */
static int network_mode(const Api *api, const char *org_uuid, char ret_mode[STORE_MODE_MAX + 1],
                        HttpResponse *response)
{
    StoreOrg org;
    int r = store_org_get(api->store, org_uuid, &org);
    if (r < 0) {
        log_error("org %s: cannot read its record: %s", org_uuid, strerror(-r));
        internal_error(response);
        return r;
    }
    snprintf(ret_mode, STORE_MODE_MAX + 1, "%s",
             org.network[0] ? org.network : api->config->network);
    if (strcmp(ret_mode, "egress") == 0 && !api->egress_ready) {
        log_error("org %s: refusing a create in network mode egress: the egress rules are not "
                  "installed (see the log at start)",
                  org_uuid);
        response->retry_after = 60;
        http_response_error(response, 503, "network_unavailable",
                            "this host cannot confine guest network traffic right now; see the "
                            "server log");
        return -EHOSTUNREACH;
    }
    return 0;
}

/* Undo of a create that got as far as the record (and maybe the disk). */
static void create_rollback(Api *api, const StoreInstance *instance, const char *overlay)
{
    int r = disk_overlay_remove(overlay);
    if (r < 0)
        log_error("instance %s: rollback: cannot remove %s: %s", instance->uuid, overlay,
                  strerror(-r));
    r = store_instance_delete(api->store, instance->uuid);
    if (r < 0)
        log_error("instance %s: rollback: cannot delete record: %s", instance->uuid, strerror(-r));
}

/*
 * A create that does not fit: the org's own quota is the client's to
 * change (429); the host being full passes with time (503, Retry-After).
 */
static void refuse_create(const Api *api, const StoreRefusal *refusal, HttpResponse *response)
{
    long long limit = (long long)refusal->limit, used = (long long)refusal->used;
    switch (refusal->by) {
    case STORE_REFUSED_ORG_INSTANCES:
        http_response_error(response, 429, "quota_exceeded",
                            "the org's quota allows %lld instances and %lld exist", limit, used);
        return;
    case STORE_REFUSED_ORG_VCPUS:
        http_response_error(response, 429, "quota_exceeded",
                            "the org's quota allows %lld vCPUs and its instances use %lld", limit,
                            used);
        return;
    case STORE_REFUSED_ORG_MEMORY:
        http_response_error(response, 429, "quota_exceeded",
                            "the org's quota allows %lld MiB of memory and its instances use %lld",
                            limit, used);
        return;
    case STORE_REFUSED_HOST_MEMORY:
        response->retry_after = 30;
        http_response_error(response, 503, "host_memory",
                            "the host's memory is committed (%lld of %lld MiB); try again later",
                            used, limit);
        return;
    default:
        response->retry_after = 30;
        http_response_error(response, 503, "capacity",
                            "the host holds its maximum of %u instances; try again later",
                            api->config->max_instances);
        return;
    }
}

/* Longest Idempotency-Key accepted. */
#define API_IDEMPOTENCY_KEY_MAX 255

static bool idempotency_key_is_valid(const char *key)
{
    size_t len = strnlen(key, API_IDEMPOTENCY_KEY_MAX + 1);
    if (len == 0 || len > API_IDEMPOTENCY_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (key[i] < 0x20 || key[i] > 0x7e)
            return false;
    return true;
}

static void hash_hex(const void *data, size_t len, char ret[STORE_HASH_HEX_LEN + 1])
{
    uint8_t hash[AUTH_HASH_LEN] = {0};
    auth_token_hash(data, len, hash);
    util_hex_encode(hash, sizeof(hash), ret);
}

/*
 * A create retried with its Idempotency-Key: the same body gets the same
 * instance, never a second VM. Its console secret is stored hashed only, so
 * the replay issues a new one: the access URL in this answer works, the
 * first answer's stops working.
 */
static void replay_create(Api *api, const char *org_uuid, const StoreInsertResult *result,
                          HttpResponse *response)
{
    if (!result->same_body) {
        http_response_error(response, 409, "idempotency_key_reused",
                            "this Idempotency-Key was used with another request body");
        return;
    }
    StoreInstance instance;
    int r = store_instance_get(api->store, result->existing_uuid, &instance);
    if (r == 0 && (instance.state == INSTANCE_CREATING || instance.state == INSTANCE_DELETING)) {
        response->retry_after = 1;
        http_response_error(response, 409, "request_in_progress",
                            "a request with this Idempotency-Key is still being carried out");
        return;
    }
    char secret[ACCESS_SECRET_LEN + 1], hash[STORE_CONSOLE_HASH_LEN];
    bool live = r == 0 && instance.state != INSTANCE_TERMINATED;
    if (live && (r = access_secret_generate(secret, hash)) == 0)
        r = store_instance_set_console_hash(api->store, instance.uuid, hash, &instance);
    if (r < 0) {
        internal_error(response);
        return;
    }
    log_info("instance %s: create replayed (Idempotency-Key)", instance.uuid);
    if (asprintf(&response->location, "/orgs/%s/api/instances/%s", org_uuid, instance.uuid) < 0)
        response->location = NULL;
    http_response_json(response, 201, instance_to_json(api, &instance, live ? secret : NULL));
}

/*
 * The steps of a cold boot once the record exists (CREATING): disk, domain,
 * then RUNNING. On failure the create is undone and *ret_failed names the
 * step ("disk", "domain", "record"); -ENOTCONN while libvirt is down.
 */
static int boot(Api *api, StoreInstance *instance, const Image *image, const char **ret_failed)
{
    _cleanup_free_ char *xml = NULL, *why = NULL;
    _cleanup_free_ char *overlay = disk_overlay_path(api->config->data_dir, instance->uuid);
    *ret_failed = "disk";
    int r = overlay ? disk_overlay_create(image->disk_path, image->disk_format, overlay, &why)
                    : -ENOMEM;
    if (r < 0) {
        log_error("instance %s: cannot create disk: %s", instance->uuid, why ? why : strerror(-r));
        create_rollback(api, instance, overlay ? overlay : "");
        return r == -ENOTCONN ? -EIO : r;
    }
    *ret_failed = "domain";
    r = render_domain(api, instance, image, overlay, &xml, &why);
    if (r >= 0)
        r = virt_domain_start(api->virt, xml, &why);
    if (r < 0) {
        log_error("instance %s: cannot start domain: %s", instance->uuid, why ? why : strerror(-r));
        create_rollback(api, instance, overlay);
        return r;
    }
    *ret_failed = "record";
    r = store_instance_transition(api->store, instance->uuid, INSTANCE_CREATING, INSTANCE_RUNNING,
                                  instance);
    if (r == 0) {
        /* Events for a CREATING record are not applied; a guest that died meanwhile shows here. */
        VirtDomainState now;
        if (virt_domain_state(api->virt, instance->uuid, &now, NULL) == 0 &&
            now != VIRT_DOMAIN_RUNNING &&
            store_instance_transition(api->store, instance->uuid, INSTANCE_RUNNING,
                                      INSTANCE_STOPPED, instance) == 0)
            log_warn("instance %s: stopped right after it started", instance->uuid);
    }
    if (r < 0) {
        log_error("instance %s: cannot record the running domain", instance->uuid);
        virt_domain_remove(api->virt, instance->uuid, NULL);
        create_rollback(api, instance, overlay);
        return -EIO;
    }
    return 0;
}

/*
 * Hands a waiting pool VM of the image, size and network to the request's
 * instance (filled in, but for its uuid): in one write transaction with
 * the org's quota and the Idempotency-Key, so two requests never get the
 * same VM. A standby VM is restored before the answer. -ENOENT when none
 * is waiting, when the request wants a clipboard (pool VMs have no
 * clipboard channel), or when the one taken could not be restored (it is
 * gone, and the caller boots a new one); else as
 * store_instance_insert_admitted().
 */
static int take_pooled(Api *api, const Image *image, StoreInstance *instance,
                       StoreInsertOptions *insert, StoreInsertResult *result,
                       const char **ret_start)
{
    _cleanup_free_ StoreInstance *pooled = NULL;
    size_t count = 0;
    if (!api->config->pool[0] || clipboard_on(instance) ||
        store_instance_list(api->store, STORE_POOL_ORG, &pooled, &count) < 0)
        return -ENOENT;
    for (size_t i = 0; i < count; i++) {
        const StoreInstance *p = &pooled[i];
        if (strcmp(p->image, instance->image) != 0 || strcmp(p->size, instance->size) != 0 ||
            strcmp(p->network, instance->network) != 0 || !store_instance_pool_ready(p))
            continue;
        bool standby = strcmp(p->pool, "standby") == 0;
        StoreInstance taken = *instance;
        memcpy(taken.uuid, p->uuid, UUID_STR_LEN);
        taken.state = p->state;
        taken.vcpus = p->vcpus;
        taken.memory_mib = p->memory_mib;
        /* Its page is on the screen already, unless this request asks for another one. */
        taken.ready_at = instance->start_url[0] || !image->agent ? 0 : instance->created_at;
        insert->take_pooled = true;
        insert->pool_state = p->state;
        int r = store_instance_insert_admitted(api->store, &taken, insert, result);
        insert->take_pooled = false;
        if (r == -ESTALE)
            continue; /* another request took it first */
        if (r < 0)
            return r;
        if (standby) {
            _cleanup_free_ char *why = NULL;
            /* What the restore faults in: the RAM less what the guest gave back (pool.c). */
            uint64_t covered_mib = taken.memory_mib;
            Hotplug h;
            bool hotplug = virt_domain_hotplug_read(api->virt, taken.uuid, &h) == 0;
            if (hotplug && h.size_kib / 1024 < covered_mib)
                covered_mib -= h.size_kib / 1024;
            _cleanup_(prefault_finishp) Prefault *prefault = NULL;
            if (prefault_start(covered_mib, &prefault) < 0)
                log_debug("instance %s: no memory faulted in ahead of its restore", taken.uuid);
            pool_restore_begin(api->pool);
            r = virt_domain_power_on(api->virt, taken.uuid, &why);
            pool_restore_end(api->pool);
            if (r == 0)
                r = store_instance_transition(api->store, taken.uuid, INSTANCE_STOPPED,
                                              INSTANCE_RUNNING, &taken);
            if (r == -ESTALE)
                r = store_instance_get(api->store, taken.uuid, &taken); /* the event came first */
            if (r < 0) {
                log_error("instance %s: cannot restore it from standby: %s; booting another",
                          taken.uuid, why ? why : strerror(-r));
                api_instance_destroy(api, taken.uuid, false, "deleted: restore failed");
                return -ENOENT;
            }
            /* The memory it gave back before the save (pool.c), plugged again as the guest runs. */
            if (hotplug && virt_domain_hotplug_request(api->virt, taken.uuid, h.size_kib) < 0)
                log_warn("instance %s: cannot ask its guest to plug its memory again", taken.uuid);
        }
        *instance = taken;
        *ret_start = standby ? "standby" : "warm";
        return 0;
    }
    return -ENOENT;
}

int api_pool_boot(Api *api, const char *uuid, const char *image_name, const char *size,
                  bool standby)
{
    const Image *image = image_catalog_find(api->images, image_name);
    SizeInfo size_info;
    if (!image || domain_templates_describe(api->templates, size, &size_info) < 0)
        return -EINVAL;
    StoreInstance instance = {.state = INSTANCE_CREATING, .created_at = time(NULL)};
    instance.updated_at = instance.created_at;
    snprintf(instance.org_uuid, sizeof(instance.org_uuid), "%s", STORE_POOL_ORG);
    snprintf(instance.image, sizeof(instance.image), "%s", image->name);
    snprintf(instance.size, sizeof(instance.size), "%s", size);
    snprintf(instance.network, sizeof(instance.network), "%s", api->config->network);
    snprintf(instance.clipboard, sizeof(instance.clipboard), "none");
    snprintf(instance.pool, sizeof(instance.pool), "%s", standby ? "standby" : "warm");
    instance.vcpus = size_info.vcpus;
    instance.memory_mib = size_info.memory_mib;
    if (strcmp(instance.network, "egress") == 0 && !api->egress_ready)
        return -EHOSTUNREACH;
    /* Pool VMs count against the host (never against an org): the same limits as a create. */
    StoreAdmission admission = {.max_instances = api->config->max_instances};
    if (api->host_memory_mib > 0 && api->config->memory_overcommit_percent > 0)
        admission.max_memory_mib =
            api->host_memory_mib * api->config->memory_overcommit_percent / 100;
    StoreInsertOptions insert = {.admission = &admission, .pool = true};
    StoreInsertResult result = {0};
    memcpy(instance.uuid, uuid, UUID_STR_LEN);
    int r = store_instance_insert_admitted(api->store, &instance, &insert, &result);
    if (r < 0)
        return r;
    const char *failed;
    r = boot(api, &instance, image, &failed);
    if (r < 0)
        return r;
    /* Nothing will report an image without the agent: booted is as ready as it gets. */
    if (!image->agent)
        store_instance_set_ready(api->store, instance.uuid, time(NULL), NULL);
    else if (api->agents && agent_hub_watch(api->agents, instance.uuid, "") < 0)
        log_warn("pool instance %s: cannot watch its guest agent", instance.uuid);
    log_info("pool instance %s: booting (image %s, size %s, %s)", instance.uuid, instance.image,
             instance.size, instance.pool);
    return 0;
}

static void instances_create(Api *api, const char *org_uuid, const HttpRequest *request,
                             HttpResponse *response)
{
    if (!api_content_type_is_json(request->content_type)) {
        http_response_error(response, 415, "unsupported_media_type",
                            "Content-Type must be application/json");
        return;
    }
    const char *idempotency_key = http_request_header(request, "Idempotency-Key");
    if (idempotency_key && !idempotency_key_is_valid(idempotency_key)) {
        http_response_error(response, 400, "invalid_idempotency_key",
                            "Idempotency-Key must be 1 to %d printable ASCII characters",
                            API_IDEMPOTENCY_KEY_MAX);
        return;
    }
    ApiCreateRequest body = {0};
    ApiError error;
    if (api_create_request_parse(request->body, request->body_len, &body, &error) < 0) {
        http_response_error(response, error.status, error.code, "%s", error.message);
        return;
    }

    char names[512];
    const Image *image = image_catalog_find(api->images, body.image);
    if (!image) {
        image_names(api->images, names, sizeof(names));
        http_response_error(response, 400, "invalid_image", "image must be one of: %s", names);
        goto cleanup;
    }
    if (!domain_templates_get(api->templates, body.size)) {
        size_names(names, sizeof(names));
        http_response_error(response, 400, "invalid_size", "size must be one of %s", names);
        goto cleanup;
    }

    StoreInstance instance = {.state = INSTANCE_CREATING, .created_at = time(NULL)};
    instance.updated_at = instance.created_at;
    snprintf(instance.org_uuid, sizeof(instance.org_uuid), "%s", org_uuid);
    snprintf(instance.image, sizeof(instance.image), "%s", image->name);
    snprintf(instance.size, sizeof(instance.size), "%s", body.size);
    if (body.start_url)
        snprintf(instance.start_url, sizeof(instance.start_url), "%s", body.start_url);
    snprintf(instance.clipboard, sizeof(instance.clipboard), "%s", body.clipboard);
    if (clipboard_on(&instance) && !image->clipboard) {
        http_response_error(response, 400, "invalid_clipboard",
                            "image %s has no clipboard; clipboard must be \"none\"", image->name);
        goto cleanup;
    }
    if (network_mode(api, org_uuid, instance.network, response) < 0)
        goto cleanup;
    unsigned max = api->config->instance_timeout_max;
    if (body.timeout_seconds > (long long)max) {
        http_response_error(response, 400, "invalid_timeout",
                            "timeout_seconds may be at most %u on this host", max);
        goto cleanup;
    }
    instance.expires_at =
        instance.created_at +
        (body.timeout_seconds ? body.timeout_seconds : (long long)api->config->instance_timeout);
    SizeInfo size_info;
    if (domain_templates_describe(api->templates, body.size, &size_info) == 0) {
        instance.vcpus = size_info.vcpus;
        instance.memory_mib = size_info.memory_mib;
    }
    /* Host limits and the org's quota, checked in the insert's own transaction. */
    StoreAdmission admission = {.max_instances = api->config->max_instances};
    if (api->host_memory_mib > 0 && api->config->memory_overcommit_percent > 0)
        admission.max_memory_mib =
            api->host_memory_mib * api->config->memory_overcommit_percent / 100;
    StoreInsertOptions insert = {.admission = &admission};
    StoreInsertResult result = {0};
    char key_hash[STORE_HASH_HEX_LEN + 1], body_hash[STORE_HASH_HEX_LEN + 1];
    if (idempotency_key) {
        insert.idempotency_key = key_hash;
        insert.body_hash = body_hash;
        hash_hex(idempotency_key, strlen(idempotency_key), key_hash);
        hash_hex(request->body, request->body_len, body_hash);
    }
    char secret[ACCESS_SECRET_LEN + 1];
    int r = access_secret_generate(secret, instance.console_hash);
    if (r < 0) {
        internal_error(response);
        goto cleanup;
    }

    /* A VM from the pool when one is waiting; it keeps its uuid, the rest is this request's. */
    const char *start = "cold";
    r = take_pooled(api, image, &instance, &insert, &result, &start);
    if (r == -ENOENT) {
        r = uuid_generate(instance.uuid);
        if (r >= 0)
            r = store_instance_insert_admitted(api->store, &instance, &insert, &result);
    }
    if (r == -EDQUOT) {
        refuse_create(api, &result.refusal, response);
        goto cleanup;
    }
    if (r == -EEXIST && result.existing_uuid[0]) {
        replay_create(api, org_uuid, &result, response);
        goto cleanup;
    }
    if (r < 0) {
        log_error("instance create: cannot write the record: %s", strerror(-r));
        internal_error(response);
        goto cleanup;
    }

    if (strcmp(start, "cold") == 0) {
        const char *failed;
        r = boot(api, &instance, image, &failed);
        if (r == -ENOTCONN) {
            response->retry_after = 5;
            http_response_error(response, 503, "hypervisor_unavailable",
                                "libvirt is not reachable right now; try again");
            goto cleanup;
        }
        if (r < 0 && strcmp(failed, "domain") == 0) {
            http_response_error(response, 500, "start_failed",
                                "the virtual machine could not be started; see the server log");
            goto cleanup;
        }
        if (r < 0) {
            internal_error(response);
            goto cleanup;
        }
    }
    if (api->agents && image->agent && instance.ready_at == 0 &&
        agent_hub_watch(api->agents, instance.uuid, instance.start_url) < 0)
        log_warn("instance %s: cannot watch its guest agent; ready stays false", instance.uuid);
    log_info("instance %s: created for org %s (image %s, size %s, %s)", instance.uuid, org_uuid,
             instance.image, instance.size, strcmp(start, "cold") == 0 ? "cold boot" : start);
    response->legba_start = start;
    if (asprintf(&response->location, "/orgs/%s/api/instances/%s", org_uuid, instance.uuid) < 0)
        response->location = NULL;
    http_response_json(response, 201, instance_to_json(api, &instance, secret));

cleanup:
    api_create_request_done(&body);
}

/*
 * The last list answered per org, with the store generation it was read
 * at: a list is all LMDB and nothing else, so while the generation stands
 * the same bytes are the answer (a poller's list of a thousand instances
 * then costs a copy, not a thousand JSON records). The generation is taken
 * before the list is read, so a write in between only makes the entry
 * older than the store, never newer.
 */
#define LIST_CACHE_SLOTS 32
#define LIST_CACHE_BODY_MAX (8 * 1024 * 1024)

typedef struct {
    const Api *api;
    char org_uuid[UUID_STR_LEN];
    uint64_t generation;
    uint64_t used; /* for least-recently-used replacement */
    char *body;
    size_t len;
} ListCacheSlot;

static struct {
    pthread_mutex_t lock;
    ListCacheSlot slots[LIST_CACHE_SLOTS];
    uint64_t tick;
} list_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* A copy of the cached answer for the org at this generation into response; false on a miss. */
static bool list_cache_get(const Api *api, const char *org_uuid, uint64_t generation,
                           HttpResponse *response)
{
    bool hit = false;
    pthread_mutex_lock(&list_cache.lock);
    for (size_t i = 0; i < LIST_CACHE_SLOTS && !hit; i++) {
        ListCacheSlot *slot = &list_cache.slots[i];
        if (slot->body && slot->api == api && slot->generation == generation &&
            strcmp(slot->org_uuid, org_uuid) == 0) {
            char *copy = malloc(slot->len + 1);
            if (copy) {
                memcpy(copy, slot->body, slot->len + 1);
                free(response->body);
                response->status = 200;
                response->body = copy;
                response->body_len = slot->len;
                response->content_type = NULL;
                slot->used = ++list_cache.tick;
                hit = true;
            }
        }
    }
    pthread_mutex_unlock(&list_cache.lock);
    return hit;
}

static void list_cache_put(const Api *api, const char *org_uuid, uint64_t generation,
                           const char *body)
{
    size_t len = strlen(body);
    char *copy = len <= LIST_CACHE_BODY_MAX ? strdup(body) : NULL;
    if (!copy)
        return;
    pthread_mutex_lock(&list_cache.lock);
    ListCacheSlot *victim = &list_cache.slots[0];
    for (size_t i = 0; i < LIST_CACHE_SLOTS; i++) {
        ListCacheSlot *slot = &list_cache.slots[i];
        if (slot->api == api && strcmp(slot->org_uuid, org_uuid) == 0) {
            victim = slot; /* the org's older answer */
            break;
        }
        if (slot->used < victim->used)
            victim = slot;
    }
    free(victim->body);
    *victim = (ListCacheSlot){
        .api = api, .generation = generation, .used = ++list_cache.tick, .body = copy, .len = len};
    memcpy(victim->org_uuid, org_uuid, UUID_STR_LEN);
    pthread_mutex_unlock(&list_cache.lock);
}

static void instances_list(Api *api, const char *org_uuid, HttpResponse *response)
{
    uint64_t generation = 0;
    bool cacheable = store_generation(api->store, &generation) == 0;
    if (cacheable && list_cache_get(api, org_uuid, generation, response))
        return;
    _cleanup_free_ StoreInstance *instances = NULL;
    size_t count = 0;
    if (store_instance_list(api->store, org_uuid, &instances, &count) < 0) {
        internal_error(response);
        return;
    }
    cJSON *json = cJSON_CreateObject();
    cJSON *array = cJSON_AddArrayToObject(json, "instances");
    size_t total = 0;
    for (size_t i = 0; array && i < count; i++) {
        if (!visible(&instances[i]))
            continue;
        cJSON *item = instance_to_json(api, &instances[i], NULL);
        if (!item) {
            cJSON_Delete(json);
            internal_error(response);
            return;
        }
        cJSON_AddItemToArray(array, item);
        total++;
    }
    if (!array || !cJSON_AddNumberToObject(json, "total", (double)total)) {
        cJSON_Delete(json);
        internal_error(response);
        return;
    }
    if (http_response_json(response, 200, json) == 0 && cacheable)
        list_cache_put(api, org_uuid, generation, response->body);
}

/* The instance, if it exists, belongs to org_uuid and is visible; else a 404 is set. */
static int find_instance(Api *api, const Route *route, StoreInstance *ret_instance,
                         HttpResponse *response)
{
    StoreInstance instance;
    int r = store_instance_get(api->store, route->instance_uuid, &instance);
    if (r == -ENOENT ||
        (r == 0 && (strcmp(instance.org_uuid, route->org_uuid) != 0 || !visible(&instance)))) {
        not_found(response);
        return -ENOENT;
    }
    if (r < 0) {
        internal_error(response);
        return r;
    }
    *ret_instance = instance;
    return 0;
}

static void instance_get(Api *api, const Route *route, HttpResponse *response)
{
    StoreInstance instance;
    if (find_instance(api, route, &instance, response) < 0)
        return;
    http_response_json(response, 200, instance_to_json(api, &instance, NULL));
}

/* find_instance(), and a 409 for one that has ended: nothing more can be done to it. */
static int find_live_instance(Api *api, const Route *route, StoreInstance *ret_instance,
                              HttpResponse *response)
{
    StoreInstance instance;
    int r = find_instance(api, route, &instance, response);
    if (r < 0)
        return r;
    if (instance.state == INSTANCE_TERMINATED) {
        http_response_error(response, 409, "terminated", "the instance has already ended");
        return -ESTALE;
    }
    *ret_instance = instance;
    return 0;
}

/* POST …/access: a new console secret; the old URL and its cookies open nothing new. */
static void instance_new_access(Api *api, const Route *route, HttpResponse *response)
{
    StoreInstance instance;
    if (find_live_instance(api, route, &instance, response) < 0)
        return;
    char secret[ACCESS_SECRET_LEN + 1], hash[STORE_CONSOLE_HASH_LEN];
    int r = access_secret_generate(secret, hash);
    if (r >= 0)
        r = store_instance_set_console_hash(api->store, instance.uuid, hash, &instance);
    if (r == -ENOENT || r == -ESTALE) {
        not_found(response);
        return;
    }
    if (r < 0) {
        log_error("instance %s: cannot store a new console secret: %s", instance.uuid,
                  strerror(-r));
        internal_error(response);
        return;
    }
    log_info("instance %s: new access URL issued", instance.uuid);
    http_response_json(response, 200, instance_to_json(api, &instance, secret));
}

/*
 * Teardowns of one instance take turns: an expiry (janitor) and a DELETE of
 * the same instance may overlap, and libvirt fails the second destroy of a
 * domain that the first is still destroying. The waiter then finds the
 * domain and disk gone, which is success. Each claim lives on its owner's
 * stack, so the list holds at most one entry per running teardown.
 */
typedef struct TeardownClaim {
    const char *instance_uuid;
    struct TeardownClaim *next;
} TeardownClaim;

static pthread_mutex_t teardown_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t teardown_done = PTHREAD_COND_INITIALIZER;
static TeardownClaim *teardown_claims;

static bool teardown_claimed(const char *instance_uuid)
{
    for (const TeardownClaim *c = teardown_claims; c; c = c->next)
        if (strcmp(c->instance_uuid, instance_uuid) == 0)
            return true;
    return false;
}

static void teardown_claim(TeardownClaim *claim)
{
    pthread_mutex_lock(&teardown_lock);
    while (teardown_claimed(claim->instance_uuid))
        pthread_cond_wait(&teardown_done, &teardown_lock);
    claim->next = teardown_claims;
    teardown_claims = claim;
    pthread_mutex_unlock(&teardown_lock);
}

static void teardown_release(TeardownClaim *claim)
{
    pthread_mutex_lock(&teardown_lock);
    for (TeardownClaim **p = &teardown_claims; *p; p = &(*p)->next) {
        if (*p == claim) {
            *p = claim->next;
            break;
        }
    }
    pthread_cond_broadcast(&teardown_done);
    pthread_mutex_unlock(&teardown_lock);
}

/* Domain, then disk: an overlay left behind means the teardown did not finish. */
static int teardown_steps(Api *api, const char *instance_uuid)
{
    /* Nobody watches a browser that is going away; its URL already answers 404. */
    console_relay_revoke(api->viewer->relay, instance_uuid);
    agent_hub_forget(api->agents, instance_uuid);
    _cleanup_free_ char *error = NULL;
    int r = virt_domain_remove(api->virt, instance_uuid, &error);
    if (r < 0 && r != -ENOENT) {
        log_error("instance %s: cannot remove domain: %s", instance_uuid,
                  error ? error : strerror(-r));
        return -EAGAIN;
    }
    /* The QEMU log holds what the guest made QEMU print: it goes with the guest. */
    r = virt_domain_log_remove(api->virt, instance_uuid);
    if (r < 0) {
        log_error("instance %s: cannot remove its QEMU log: %s", instance_uuid, strerror(-r));
        return -EIO; /* the disk stays, so the janitor finishes this later */
    }
    _cleanup_free_ char *overlay = disk_overlay_path(api->config->data_dir, instance_uuid);
    r = overlay ? disk_overlay_remove(overlay) : -ENOMEM;
    if (r < 0) {
        log_error("instance %s: cannot remove disk: %s", instance_uuid, strerror(-r));
        return -EIO;
    }
    return 0;
}

static int teardown(Api *api, const char *instance_uuid)
{
    TeardownClaim claim = {.instance_uuid = instance_uuid};
    teardown_claim(&claim);
    int r = teardown_steps(api, instance_uuid);
    teardown_release(&claim);
    return r;
}

int api_instance_destroy(Api *api, const char *instance_uuid, bool keep_record, const char *why)
{
    StoreInstance instance;
    int r = store_instance_get(api->store, instance_uuid, &instance);
    if (r < 0)
        return r;
    /*
     * A delete hides the instance (DELETING) until it is gone; an expiry
     * shows it TERMINATED at once, so clients never see it vanish for the
     * seconds a teardown takes. A lifecycle event may flip running/stopped
     * under us; only a vanished record is -ENOENT.
     */
    InstanceState claim = keep_record ? INSTANCE_TERMINATED : INSTANCE_DELETING;
    for (unsigned attempt = 0;; attempt++) {
        if (!visible(&instance) || (keep_record && instance.state == INSTANCE_TERMINATED))
            return -ENOENT;
        StoreInstance current;
        r = store_instance_transition(api->store, instance.uuid, instance.state, claim, &current);
        if (r != -ESTALE || attempt == 8)
            break;
        instance = current;
    }
    if (r == -ESTALE)
        return -ENOENT; /* another request got there first (most likely a concurrent delete) */
    if (r < 0)
        return r;

    r = teardown(api, instance.uuid);
    if (r == -EAGAIN && !keep_record) {
        /* The domain is still there: give the instance back so a retry can succeed. */
        store_instance_transition(api->store, instance.uuid, INSTANCE_DELETING, instance.state,
                                  NULL);
        return r;
    }
    /* An ended instance whose teardown failed is finished by the janitor (api_instance_finish). */
    if (r < 0)
        return r;
    r = keep_record ? 0 : store_instance_delete(api->store, instance.uuid);
    if (r < 0 && r != -ENOENT) {
        log_error("instance %s: cannot delete its record: %s", instance.uuid, strerror(-r));
        return -EIO;
    }
    log_info("instance %s: %s (org %s)", instance.uuid, why, instance.org_uuid);
    return 0;
}

bool api_instance_unfinished(const Api *api, const char *instance_uuid)
{
    _cleanup_free_ char *overlay = disk_overlay_path(api->config->data_dir, instance_uuid);
    return overlay && access(overlay, F_OK) == 0;
}

int api_instance_finish(Api *api, const char *instance_uuid)
{
    if (!api_instance_unfinished(api, instance_uuid))
        return 0;
    int r = teardown(api, instance_uuid);
    if (r == 0)
        log_info("instance %s: teardown finished", instance_uuid);
    return r;
}

static void instance_delete(Api *api, const Route *route, HttpResponse *response)
{
    StoreInstance instance;
    if (find_instance(api, route, &instance, response) < 0)
        return;
    int r = api_instance_destroy(api, instance.uuid, false, "deleted");
    if (r == -ENOENT) {
        not_found(response);
    } else if (r == -EAGAIN) {
        response->retry_after = 5;
        http_response_error(response, 503, "delete_failed",
                            "the virtual machine could not be destroyed; try again");
    } else if (r < 0) {
        internal_error(response);
    } else {
        response->status = 204;
    }
}

/* POST …/extend {"timeout_seconds": N}: the instance now ends N seconds from now. */
static void instance_extend(Api *api, const Route *route, const HttpRequest *request,
                            HttpResponse *response)
{
    StoreInstance instance;
    if (find_instance(api, route, &instance, response) < 0)
        return;
    if (!api_content_type_is_json(request->content_type)) {
        http_response_error(response, 415, "unsupported_media_type",
                            "Content-Type must be application/json");
        return;
    }
    long long seconds;
    ApiError error;
    if (api_extend_request_parse(request->body, request->body_len, &seconds, &error) < 0) {
        http_response_error(response, error.status, error.code, "%s", error.message);
        return;
    }
    if (seconds > (long long)api->config->instance_timeout_max) {
        http_response_error(response, 400, "invalid_timeout",
                            "timeout_seconds may be at most %u on this host",
                            api->config->instance_timeout_max);
        return;
    }
    int r = store_instance_set_expiry(api->store, instance.uuid, time(NULL) + seconds, &instance);
    if (r == -ESTALE && instance.state == INSTANCE_TERMINATED) {
        http_response_error(response, 409, "terminated", "the instance has already ended");
        return;
    }
    if (r == -ENOENT || r == -ESTALE) {
        not_found(response);
        return;
    }
    if (r < 0) {
        internal_error(response);
        return;
    }
    log_info("instance %s: now expires in %lld s", instance.uuid, seconds);
    http_response_json(response, 200, instance_to_json(api, &instance, NULL));
}

/* POST …/stop and …/start: power, not existence; answers the instance as it is now. */
static void instance_power(Api *api, const Route *route, bool on, HttpResponse *response)
{
    StoreInstance instance;
    if (find_live_instance(api, route, &instance, response) < 0)
        return;
    InstanceState from = on ? INSTANCE_STOPPED : INSTANCE_RUNNING;
    InstanceState to = on ? INSTANCE_RUNNING : INSTANCE_STOPPED;
    if (instance.state == from) {
        _cleanup_free_ char *why = NULL;
        if (on) {
            store_instance_clear_ready(api->store, instance.uuid);
        } else {
            console_relay_revoke(api->viewer->relay, instance.uuid);
            agent_hub_forget(api->agents, instance.uuid);
        }
        int r = on ? virt_domain_power_on(api->virt, instance.uuid, &why)
                   : virt_domain_power_off(api->virt, instance.uuid, &why);
        if (r == -ENOENT) {
            http_response_error(response, 409, "domain_gone",
                                "the virtual machine no longer exists; delete the instance");
            return;
        }
        if (r < 0) {
            log_error("instance %s: cannot power %s: %s", instance.uuid, on ? "on" : "off",
                      why ? why : strerror(-r));
            response->retry_after = 5;
            http_response_error(response, 503, "power_failed",
                                "the virtual machine could not be powered %s; try again",
                                on ? "on" : "off");
            return;
        }
        /*
         * The lifecycle event may have been first; either way the record says
         * `to` now, and the transition hands it back (refused or not).
         */
        r = store_instance_transition(api->store, instance.uuid, from, to, &instance);
        if (r == -ENOENT) {
            not_found(response);
            return;
        }
        if (on && api->agents)
            agent_hub_watch(api->agents, instance.uuid, instance.start_url);
        log_info("instance %s: powered %s", instance.uuid, on ? "on" : "off");
    }
    http_response_json(response, 200, instance_to_json(api, &instance, NULL));
}

/*
 * Who is asking: the org of a valid bearer token. -EACCES sets the 401.
 * The hash is the lookup key; the stored hash is compared again in
 * constant time so the answer never depends on how much of it matched.
 */
static int authenticate(Api *api, const HttpRequest *request, char ret_org[UUID_STR_LEN],
                        HttpResponse *response)
{
    const char *token;
    size_t len;
    uint8_t hash[AUTH_HASH_LEN];
    StoreToken stored;

    if (auth_bearer_parse(request->authorization, &token, &len) < 0 ||
        auth_token_hash(token, len, hash) < 0 ||
        store_token_lookup(api->store, hash, &stored) < 0 || !auth_hash_equal(hash, stored.hash)) {
        response->www_authenticate = true;
        http_response_error(response, 401, "unauthorized",
                            "a valid 'Authorization: Bearer <token>' header is required");
        return -EACCES;
    }
    memcpy(ret_org, stored.org_uuid, UUID_STR_LEN);
    return 0;
}

/* Fills entry `index` of a list; false when out of memory. */
typedef bool (*ListFill)(const Api *api, size_t index, cJSON *item);

/* {"<name>":[n entries],"total":n}, or a 500 when memory runs out. */
static void respond_list(const Api *api, HttpResponse *response, const char *name, size_t n,
                         ListFill fill)
{
    cJSON *json = cJSON_CreateObject();
    cJSON *array = cJSON_AddArrayToObject(json, name);
    for (size_t i = 0; array && i < n; i++) {
        cJSON *item = cJSON_CreateObject();
        if (!item || !cJSON_AddItemToArray(array, item) || !fill(api, i, item))
            array = NULL;
    }
    if (!array || !cJSON_AddNumberToObject(json, "total", (double)n)) {
        cJSON_Delete(json);
        internal_error(response);
        return;
    }
    http_response_json(response, 200, json);
}

static bool fill_image(const Api *api, size_t index, cJSON *item)
{
    const Image *image = image_catalog_get(api->images, index);
    return cJSON_AddStringToObject(item, "name", image->name) &&
           cJSON_AddStringToObject(item, "description",
                                   image->description ? image->description : "") &&
           cJSON_AddStringToObject(item, "boot",
                                   image->boot == IMAGE_BOOT_KERNEL ? "kernel" : "firmware") &&
           cJSON_AddBoolToObject(item, "clipboard", image->clipboard);
}

static bool fill_size(const Api *api, size_t index, cJSON *item)
{
    SizeInfo info;
    cJSON *screen;
    return domain_templates_describe(api->templates, template_size_names[index], &info) == 0 &&
           cJSON_AddStringToObject(item, "name", template_size_names[index]) &&
           cJSON_AddNumberToObject(item, "vcpus", info.vcpus) &&
           cJSON_AddNumberToObject(item, "memory_mib", info.memory_mib) &&
           (screen = cJSON_AddObjectToObject(item, "screen")) &&
           cJSON_AddNumberToObject(screen, "width", info.screen_width) &&
           cJSON_AddNumberToObject(screen, "height", info.screen_height);
}

static size_t size_count(void)
{
    size_t n = 0;
    while (template_size_names[n])
        n++;
    return n;
}

/* Whether the route answers the method; a 405 with Allow otherwise. */
static bool method_allowed(RouteId id, const char *method, HttpResponse *response)
{
    if (route_allows(id, route_method_parse(method)))
        return true;
    response->allow = route_allow_header(id);
    http_response_error(response, 405, "method_not_allowed", "allowed methods: %s",
                        response->allow);
    return false;
}

void api_handle(void *userdata, const HttpRequest *request, HttpResponse *response)
{
    Api *api = userdata;
    char org[UUID_STR_LEN];
    Route route;

    RouteResult matched = route_match(request->path, &route);
    /* The console answers to its cookie, not to a token; whatever did not match there is not there.
     */
    if (route_path_is_console(request->path)) {
        if (matched != ROUTE_OK)
            not_found(response);
        else if (method_allowed(route.id, request->method, response))
            viewer_handle(api->viewer, &route, request, response);
        return;
    }

    if (authenticate(api, request, org, response) < 0)
        return;

    switch (matched) {
    case ROUTE_OK:
        break;
    case ROUTE_BAD_ORG_UUID:
        http_response_error(response, 400, "invalid_org_uuid", "the org in the path is not a UUID");
        return;
    case ROUTE_BAD_INSTANCE_UUID:
        http_response_error(response, 400, "invalid_instance_uuid",
                            "the instance in the path is not a UUID");
        return;
    default:
        not_found(response);
        return;
    }

    RouteMethod method = route_method_parse(request->method);
    if (!method_allowed(route.id, request->method, response))
        return;
    /* Another org's path looks exactly like one that does not exist. */
    if (strcmp(route.org_uuid, org) != 0) {
        not_found(response);
        return;
    }

    if (route.id == ROUTE_INSTANCES && method == ROUTE_METHOD_GET)
        instances_list(api, org, response);
    else if (route.id == ROUTE_INSTANCES && method == ROUTE_METHOD_POST)
        instances_create(api, org, request, response);
    else if (route.id == ROUTE_INSTANCE && method == ROUTE_METHOD_GET)
        instance_get(api, &route, response);
    else if (route.id == ROUTE_INSTANCE_ACCESS)
        instance_new_access(api, &route, response);
    else if (route.id == ROUTE_INSTANCE_EXTEND)
        instance_extend(api, &route, request, response);
    else if (route.id == ROUTE_INSTANCE_STOP || route.id == ROUTE_INSTANCE_START)
        instance_power(api, &route, route.id == ROUTE_INSTANCE_START, response);
    else if (route.id == ROUTE_IMAGES)
        respond_list(api, response, "images", image_catalog_count(api->images), fill_image);
    else if (route.id == ROUTE_SIZES)
        respond_list(api, response, "sizes", size_count(), fill_size);
    else
        instance_delete(api, &route, response);
}

void api_on_lifecycle(void *userdata, const char *instance_uuid, VirtDomainState state)
{
    Api *api = userdata;
    InstanceState from = state == VIRT_DOMAIN_RUNNING ? INSTANCE_STOPPED : INSTANCE_RUNNING;
    InstanceState to = state == VIRT_DOMAIN_RUNNING ? INSTANCE_RUNNING : INSTANCE_STOPPED;
    /* Only a settled record follows events; CREATING/DELETING belong to their request. */
    if (store_instance_transition(api->store, instance_uuid, from, to, NULL) == 0)
        log_info("instance %s: domain %s", instance_uuid,
                 to == INSTANCE_RUNNING ? "started" : "stopped");
}

/*
 * After libvirtd came back: lifecycle events of the outage are lost, so each
 * settled record is compared with its domain once. Runs on a thread of its
 * own, away from the event loop that reported the reconnect.
 */
static void *resync(void *userdata)
{
    Api *api = userdata;
    _cleanup_free_ StoreInstance *instances = NULL;
    size_t count = 0;
    if (store_instance_list(api->store, NULL, &instances, &count) < 0)
        return NULL;
    unsigned changed = 0;
    for (size_t i = 0; i < count; i++) {
        const StoreInstance *in = &instances[i];
        VirtDomainState now;
        if ((in->state != INSTANCE_RUNNING && in->state != INSTANCE_STOPPED) ||
            virt_domain_state(api->virt, in->uuid, &now, NULL) < 0)
            continue;
        InstanceState want = now == VIRT_DOMAIN_RUNNING ? INSTANCE_RUNNING : INSTANCE_STOPPED;
        if (want != in->state &&
            store_instance_transition(api->store, in->uuid, in->state, want, NULL) == 0) {
            log_info("instance %s: %s while libvirt was away", in->uuid,
                     want == INSTANCE_RUNNING ? "started" : "stopped");
            changed++;
        }
    }
    log_info("libvirt: %zu instances checked after the reconnect, %u changed", count, changed);
    api_watch_unready(api);
    return NULL;
}

void api_on_reconnect(void *userdata)
{
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attr, resync, userdata) != 0)
        log_error("libvirt: cannot check instances after the reconnect");
    pthread_attr_destroy(&attr);
}

void api_on_ready(void *userdata, const char *instance_uuid)
{
    Api *api = userdata;
    StoreInstance instance;
    int64_t now = time(NULL);
    int r = store_instance_set_ready(api->store, instance_uuid, now, &instance);
    if (r == 0)
        log_info("instance %s: guest reports its page drawn, %lld s after create", instance_uuid,
                 (long long)(now - instance.created_at));
    else if (r != -EALREADY && r != -ENOENT)
        log_error("instance %s: cannot record ready: %s", instance_uuid, strerror(-r));
}

void api_watch_unready(Api *api)
{
    _cleanup_free_ StoreInstance *instances = NULL;
    size_t count = 0;
    if (!api->agents || store_instance_list(api->store, NULL, &instances, &count) < 0)
        return;
    for (size_t i = 0; i < count; i++)
        if (instances[i].state == INSTANCE_RUNNING && instances[i].ready_at == 0)
            agent_hub_watch(api->agents, instances[i].uuid, instances[i].start_url);
}
