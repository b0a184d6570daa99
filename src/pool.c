#include "pool.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "uuid.h"

/* After a failed boot, the entry waits this long before the next one. */
#define POOL_RETRY_S 30
/* How long pool_free waits for the work under way. */
#define POOL_STOP_WAIT_S 60
/*
 * Before a standby save the guest gives its virtio-mem memory back (see
 * prepare_save). What it still has plugged is read every UNPLUG_STEP_MS
 * until it is none, stops shrinking for UNPLUG_STEADY readings, or
 * UNPLUG_MAX_MS have passed. A Chromium guest under TCG gives it back a
 * Linux memory block (128 MiB) at a time, 2.5 to 5 s apart; when a block
 * is busy, Linux's virtio-mem driver tries again 50 s later.
 */
#define UNPLUG_STEP_MS 500
#define UNPLUG_STEADY 120
#define UNPLUG_MAX_MS 120000

typedef enum {
    JOB_BOOT,
    JOB_SAVE,
    JOB_REMOVE,
} JobKind;

typedef struct Job {
    struct Pool *pool;
    JobKind kind;
    size_t entry; /* JOB_BOOT */
    char uuid[UUID_STR_LEN];
    struct Job *next;
} Job;

struct Pool {
    Api *api;
    ConfigPoolEntry entries[CONFIG_POOL_MAX];
    size_t n_entries;
    int64_t retry_at[CONFIG_POOL_MAX]; /* no boot of the entry before this time */
    pthread_mutex_t lock;
    pthread_cond_t idle;
    Job *jobs; /* under way, each on its own thread */
    unsigned running;
    unsigned restoring; /* takes restoring a standby VM: no new jobs meanwhile */
    bool stopping;
};

int pool_new(Api *api, Pool **ret_pool)
{
    Pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return -ENOMEM;
    pool->api = api;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->idle, NULL);
    int r;
    ConfigPoolEntry e;
    for (const char *cursor = api->config->pool;
         (r = config_pool_next(&cursor, &e)) > 0 && pool->n_entries < CONFIG_POOL_MAX;) {
        const Image *image = image_catalog_find(api->images, e.image);
        if (!image || !domain_templates_get(api->templates, e.size)) {
            log_error("pool %s:%s: no such %s on this host", e.image, e.size,
                      image ? "size" : "image");
            pool_free(pool);
            return -EINVAL;
        }
        pool->entries[pool->n_entries++] = e;
        log_info("pool: %u %s VM%s of %s, size %s", e.count, e.standby ? "standby" : "warm",
                 e.count == 1 ? "" : "s", e.image, e.size);
    }
    *ret_pool = pool;
    return 0;
}

void pool_free(Pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += POOL_STOP_WAIT_S;
    while (pool->running > 0 &&
           pthread_cond_timedwait(&pool->idle, &pool->lock, &until) != ETIMEDOUT)
        ;
    bool busy = pool->running > 0;
    pthread_mutex_unlock(&pool->lock);
    if (busy) {
        /* Their threads still use it; the next start adopts or undoes what they leave. */
        log_warn("pool: %u boot(s) or save(s) still under way at exit", pool->running);
        return;
    }
    pthread_cond_destroy(&pool->idle);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

static Job *job_find(Pool *pool, const char *uuid)
{
    for (Job *j = pool->jobs; j; j = j->next)
        if (strcmp(j->uuid, uuid) == 0)
            return j;
    return NULL;
}

/*
 * Before a standby save: the never-used guest gives back the memory of its
 * virtio-mem device (domains/<size>.xml, images with "memory_hotplug"). QEMU
 * neither saves nor, at the restore, touches memory that is not plugged,
 * and a restore's time goes mostly into faulting in the guest's memory on
 * the host (docs/PERFORMANCE.md): the saved state and the restore then
 * cover only the fixed part of the RAM. The take asks for all of it again
 * (api.c). Best effort: what the guest cannot move out stays plugged and
 * is saved; a domain without the device is saved as it is.
 */
static void prepare_save(Api *api, const char *uuid)
{
    Hotplug h;
    if (virt_domain_hotplug_read(api->virt, uuid, &h) < 0)
        return;
    if (virt_domain_hotplug_request(api->virt, uuid, 0) < 0) {
        log_warn("pool instance %s: cannot ask its guest to unplug memory; saving all of its RAM",
                 uuid);
        return;
    }
    uint64_t last_kib = h.plugged_kib;
    unsigned steady = 0, waited_ms = 0;
    while (h.plugged_kib > 0 && steady < UNPLUG_STEADY && waited_ms < UNPLUG_MAX_MS) {
        usleep(UNPLUG_STEP_MS * 1000);
        waited_ms += UNPLUG_STEP_MS;
        if (virt_domain_hotplug_read(api->virt, uuid, &h) < 0)
            break;
        steady = h.plugged_kib < last_kib ? 0 : steady + 1;
        last_kib = h.plugged_kib;
    }
    log_info("pool instance %s: its guest gave back %" PRIu64 " of %" PRIu64
             " MiB of hotplugged memory after %.1f s; saving the rest",
             uuid, (h.size_kib - h.plugged_kib) / 1024, h.size_kib / 1024, waited_ms / 1000.0);
}

static void job_run(Job *job)
{
    Pool *pool = job->pool;
    Api *api = pool->api;
    const ConfigPoolEntry *e = &pool->entries[job->entry];
    _cleanup_free_ char *why = NULL;
    int r = 0;
    switch (job->kind) {
    case JOB_BOOT:
        r = api_pool_boot(api, job->uuid, e->image, e->size, e->standby);
        if (r < 0) {
            log_warn("pool %s:%s: boot failed (%s); next try in %d s", e->image, e->size,
                     r == -EDQUOT ? "the host's limits leave no room" : strerror(-r), POOL_RETRY_S);
            pthread_mutex_lock(&pool->lock);
            pool->retry_at[job->entry] = time(NULL) + POOL_RETRY_S;
            pthread_mutex_unlock(&pool->lock);
        }
        break;
    case JOB_SAVE:
        prepare_save(api, job->uuid);
        r = virt_domain_save(api->virt, job->uuid, &why);
        if (r == 0)
            r = store_instance_transition(api->store, job->uuid, INSTANCE_RUNNING, INSTANCE_STOPPED,
                                          NULL);
        if (r == 0 || r == -ESTALE)
            log_info("pool instance %s: saved to disk, on standby", job->uuid);
        else
            log_warn("pool instance %s: cannot save it: %s", job->uuid, why ? why : strerror(-r));
        break;
    case JOB_REMOVE:
        r = api_instance_destroy(api, job->uuid, false, "removed from the pool");
        if (r < 0 && r != -ENOENT)
            log_warn("pool instance %s: cannot remove it: %s", job->uuid, strerror(-r));
        break;
    }
}

static void *job_main(void *data)
{
    Job *job = data;
    Pool *pool = job->pool;
    job_run(job);
    pthread_mutex_lock(&pool->lock);
    for (Job **p = &pool->jobs; *p; p = &(*p)->next) {
        if (*p == job) {
            *p = job->next;
            break;
        }
    }
    pool->running--;
    pthread_cond_broadcast(&pool->idle);
    pthread_mutex_unlock(&pool->lock);
    free(job);
    return NULL;
}

/* Starts a job on its own thread; the lock is held. */
static int job_start(Pool *pool, JobKind kind, size_t entry, const char *uuid)
{
    Job *job = calloc(1, sizeof(*job));
    if (!job)
        return -ENOMEM;
    *job = (Job){.pool = pool, .kind = kind, .entry = entry};
    int r = uuid ? 0 : uuid_generate(job->uuid);
    if (uuid)
        memcpy(job->uuid, uuid, UUID_STR_LEN);
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (r == 0 && pthread_create(&thread, &attr, job_main, job) != 0)
        r = -EAGAIN;
    pthread_attr_destroy(&attr);
    if (r < 0) {
        free(job);
        return r;
    }
    job->next = pool->jobs;
    pool->jobs = job;
    pool->running++;
    return 0;
}

/* The entry a pool record belongs to, or -1 when the config no longer asks for it. */
static ssize_t entry_of(const Pool *pool, const StoreInstance *in)
{
    for (size_t i = 0; i < pool->n_entries; i++) {
        const ConfigPoolEntry *e = &pool->entries[i];
        if (strcmp(e->image, in->image) == 0 && strcmp(e->size, in->size) == 0 &&
            strcmp(e->standby ? "standby" : "warm", in->pool) == 0 &&
            strcmp(in->network, pool->api->config->network) == 0)
            return (ssize_t)i;
    }
    return -1;
}

void pool_sweep(Pool *pool, const StoreInstance *instances, size_t count)
{
    if (!pool)
        return;
    Api *api = pool->api;
    unsigned have[CONFIG_POOL_MAX] = {0}, booting[CONFIG_POOL_MAX] = {0};
    pthread_mutex_lock(&pool->lock);
    if (pool->stopping || pool->restoring > 0) {
        pthread_mutex_unlock(&pool->lock);
        return;
    }
    for (const Job *j = pool->jobs; j; j = j->next)
        if (j->kind == JOB_BOOT)
            booting[j->entry]++;
    for (size_t i = 0; i < count; i++) {
        const StoreInstance *in = &instances[i];
        if (!in->pool[0] || in->state == INSTANCE_TERMINATED || in->state == INSTANCE_DELETING)
            continue; /* not in the pool, or on its way out */
        ssize_t e = entry_of(pool, in);
        const Job *job = job_find(pool, in->uuid);
        if (job) {
            /* Being booted (counted above), saved (it stays), or removed (it goes). */
            if (job->kind == JOB_SAVE && e >= 0)
                have[e]++;
            continue;
        }
        bool warm = strcmp(in->pool, "warm") == 0;
        if (e < 0 || (warm && in->state == INSTANCE_STOPPED)) {
            /* Not asked for any more, or a warm VM that stopped: no use to anyone. */
            if (in->state != INSTANCE_CREATING)
                job_start(pool, JOB_REMOVE, 0, in->uuid);
            continue;
        }
        have[e]++;
        if (!warm && in->state == INSTANCE_RUNNING && in->ready_at &&
            pool->running < api->config->pool_boots)
            job_start(pool, JOB_SAVE, (size_t)e, in->uuid);
    }
    int64_t now = time(NULL);
    for (size_t e = 0; e < pool->n_entries; e++) {
        unsigned want = pool->entries[e].count;
        while (have[e] + booting[e] < want && pool->running < api->config->pool_boots &&
               pool->retry_at[e] <= now && job_start(pool, JOB_BOOT, e, NULL) == 0)
            booting[e]++;
    }
    pthread_mutex_unlock(&pool->lock);
}

void pool_restore_begin(Pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->restoring++;
    pthread_mutex_unlock(&pool->lock);
}

void pool_restore_end(Pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->restoring--;
    pthread_mutex_unlock(&pool->lock);
}
