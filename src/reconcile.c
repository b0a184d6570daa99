#include "reconcile.h"

#include <errno.h>
#include <string.h>

#include "disk.h"
#include "log.h"
#include "util.h"

/* Removes the domain (if any), the overlay and the record of one instance. */
static int remove_everything(Store *store, Virt *virt, const char *data_dir, const char *uuid)
{
    _cleanup_free_ char *why = NULL;
    int r = virt_domain_remove(virt, uuid, &why);
    if (r < 0 && r != -ENOENT) {
        log_error("reconcile: instance %s: %s", uuid, why ? why : strerror(-r));
        return r;
    }
    _cleanup_free_ char *overlay = disk_overlay_path(data_dir, uuid);
    if (!overlay)
        return -ENOMEM;
    r = disk_overlay_remove(overlay);
    if (r < 0) {
        log_error("reconcile: instance %s: cannot remove %s: %s", uuid, overlay, strerror(-r));
        return r;
    }
    r = store_instance_delete(store, uuid);
    if (r < 0 && r != -ENOENT) {
        log_error("reconcile: instance %s: cannot delete record: %s", uuid, strerror(-r));
        return r;
    }
    return 0;
}

static const VirtDomain *find_domain(const VirtDomain *domains, size_t n, const char *uuid)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(domains[i].instance_uuid, uuid) == 0)
            return &domains[i];
    return NULL;
}

static bool has_record(const StoreInstance *records, size_t n, const char *uuid)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(records[i].uuid, uuid) == 0)
            return true;
    return false;
}

static void settle(Store *store, const StoreInstance *instance, InstanceState to, const char *why,
                   unsigned *counter, ReconcileStats *stats)
{
    int r = store_instance_transition(store, instance->uuid, instance->state, to, NULL);
    if (r < 0) {
        log_error("reconcile: instance %s: cannot update record: %s", instance->uuid, strerror(-r));
        stats->failures++;
        return;
    }
    log_warn("reconcile: instance %s (org %s): %s, now %s", instance->uuid, instance->org_uuid, why,
             instance_state_to_string(to));
    (*counter)++;
}

int reconcile_run(Store *store, Virt *virt, const char *data_dir, const char *install_id,
                  ReconcileStats *ret_stats)
{
    ReconcileStats stats = {0};
    _cleanup_free_ StoreInstance *records = NULL;
    _cleanup_free_ VirtDomain *domains = NULL;
    _cleanup_free_ char *why = NULL;
    size_t n_records = 0, n_domains = 0;

    int r = store_instance_list(store, NULL, &records, &n_records);
    if (r < 0) {
        log_error("reconcile: cannot read records: %s", strerror(-r));
        return r;
    }
    r = virt_domain_list(virt, &domains, &n_domains, &why);
    if (r < 0) {
        log_error("reconcile: %s", why ? why : strerror(-r));
        return r;
    }

    for (size_t i = 0; i < n_records; i++) {
        const StoreInstance *rec = &records[i];
        const VirtDomain *dom = find_domain(domains, n_domains, rec->uuid);
        VirtDomainState state = dom ? dom->state : VIRT_DOMAIN_ABSENT;

        switch (rec->state) {
        case INSTANCE_CREATING:
        case INSTANCE_DELETING: {
            /* No client was told of a CREATING instance; a DELETING one was asked to go. */
            bool creating = rec->state == INSTANCE_CREATING;
            if (remove_everything(store, virt, data_dir, rec->uuid) < 0) {
                stats.failures++;
                break;
            }
            log_warn("reconcile: instance %s (org %s): %s", rec->uuid, rec->org_uuid,
                     creating ? "interrupted create undone" : "interrupted delete finished");
            if (creating)
                stats.creates_undone++;
            else
                stats.deletes_finished++;
            break;
        }
        case INSTANCE_RUNNING:
            if (state == VIRT_DOMAIN_ABSENT)
                settle(store, rec, INSTANCE_STOPPED, "its domain is gone", &stats.marked_stopped,
                       &stats);
            else if (state == VIRT_DOMAIN_STOPPED)
                settle(store, rec, INSTANCE_STOPPED, "its domain is not running",
                       &stats.marked_stopped, &stats);
            break;
        case INSTANCE_STOPPED:
            if (state == VIRT_DOMAIN_RUNNING)
                settle(store, rec, INSTANCE_RUNNING, "its domain is running", &stats.marked_running,
                       &stats);
            break;
        default:
            break;
        }
    }

    for (size_t i = 0; i < n_domains; i++) {
        const VirtDomain *dom = &domains[i];
        /* Its record was handled above (an interrupted create or delete went with its domain). */
        if (has_record(records, n_records, dom->instance_uuid))
            continue;
        StoreInstance rec;
        r = store_instance_get(store, dom->instance_uuid, &rec);
        if (r == 0)
            continue;
        if (r != -ENOENT) {
            stats.failures++;
            continue;
        }
        if (strcmp(dom->install_id, install_id) != 0) {
            /* Another legbad's (or a test run's) domain on the same libvirt: not ours to judge. */
            log_info("reconcile: domain %s%s belongs to installation %s, not this one: left alone",
                     VIRT_DOMAIN_PREFIX, dom->instance_uuid,
                     dom->install_id[0] ? dom->install_id : "(none recorded)");
            stats.foreign_skipped++;
            continue;
        }
        if (remove_everything(store, virt, data_dir, dom->instance_uuid) < 0) {
            stats.failures++;
            continue;
        }
        log_warn("reconcile: orphan domain %s%s (org %s) had no record: destroyed, disk removed",
                 VIRT_DOMAIN_PREFIX, dom->instance_uuid, dom->org_uuid[0] ? dom->org_uuid : "?");
        stats.orphans_removed++;
    }

    log_info("reconcile: %zu records, %zu domains; %u creates undone, %u deletes finished, "
             "%u marked stopped, %u marked running, %u orphans removed, %u foreign left alone, "
             "%u failures",
             n_records, n_domains, stats.creates_undone, stats.deletes_finished,
             stats.marked_stopped, stats.marked_running, stats.orphans_removed,
             stats.foreign_skipped, stats.failures);
    if (ret_stats)
        *ret_stats = stats;
    return stats.failures ? -EIO : 0;
}

int reconcile_orphans(Store *store, Virt *virt, const char *data_dir, const char *install_id,
                      unsigned *ret_removed)
{
    _cleanup_free_ VirtDomain *domains = NULL;
    _cleanup_free_ char *why = NULL;
    size_t n_domains = 0;
    unsigned removed = 0;
    int r = virt_domain_list(virt, &domains, &n_domains, &why);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n_domains; i++) {
        const VirtDomain *dom = &domains[i];
        StoreInstance rec;
        /* A record is written before its domain is defined and removed after it is gone. */
        if (strcmp(dom->install_id, install_id) != 0 ||
            store_instance_get(store, dom->instance_uuid, &rec) != -ENOENT)
            continue;
        if (remove_everything(store, virt, data_dir, dom->instance_uuid) < 0)
            continue;
        log_warn("reconcile: orphan domain %s%s (org %s) appeared with no record: destroyed, "
                 "disk removed",
                 VIRT_DOMAIN_PREFIX, dom->instance_uuid, dom->org_uuid[0] ? dom->org_uuid : "?");
        removed++;
    }
    if (ret_removed)
        *ret_removed = removed;
    return 0;
}
