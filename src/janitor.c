#include "janitor.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pool.h"
#include "reconcile.h"
#include "util.h"

#define JANITOR_INTERVAL_S 1
/* How long an Idempotency-Key binds its request, and how often old ones are dropped. */
#define JANITOR_IDEMPOTENCY_TTL_S (24 * 3600)
#define JANITOR_IDEMPOTENCY_EVERY 60
#define JANITOR_FINISH_EVERY 10
/*
 * How often (in sweeps) domains of this installation with no record are
 * looked for: libvirtd may carry out a define that a killed legbad sent
 * after the start-up reconcile looked.
 */
#define JANITOR_ORPHANS_EVERY 10

/* When a running instance last had a viewer (or started being watched), for idle expiry. */
typedef struct {
    char uuid[UUID_STR_LEN];
    int64_t since;
} Watched;

struct Janitor {
    Api *api;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
    Watched *watched;
    size_t n_watched;
    unsigned sweeps;
};

/*
 * The last moment the instance had a viewer, as far as this process saw:
 * legbad's own start counts as one, so a restart never ends an instance
 * that was being watched a moment before.
 */
static int64_t last_viewed(Janitor *j, const StoreInstance *instance, int64_t now, Watched *next,
                           size_t *n_next)
{
    int64_t since = now;
    for (size_t i = 0; i < j->n_watched; i++)
        if (strcmp(j->watched[i].uuid, instance->uuid) == 0)
            since = j->watched[i].since;
    if (console_relay_viewers(j->api->viewer->relay, instance->uuid) > 0)
        since = now;
    Watched *w = &next[(*n_next)++];
    memcpy(w->uuid, instance->uuid, UUID_STR_LEN);
    w->since = since;
    return since;
}

static void end(Janitor *j, const StoreInstance *instance, const char *why)
{
    int r = api_instance_destroy(j->api, instance->uuid, true, why);
    if (r < 0 && r != -ENOENT)
        log_warn("instance %s: could not end it (%s); the janitor tries again", instance->uuid,
                 strerror(-r));
}

static void sweep(Janitor *j)
{
    const Config *config = j->api->config;
    _cleanup_free_ StoreInstance *instances = NULL;
    size_t count = 0;
    if (store_instance_list(j->api->store, NULL, &instances, &count) < 0)
        return;
    Watched *next = calloc(count + 1, sizeof(*next));
    size_t n_next = 0;
    int64_t now = time(NULL);
    for (size_t i = 0; i < count; i++) {
        const StoreInstance *in = &instances[i];
        bool live = in->state == INSTANCE_RUNNING || in->state == INSTANCE_STOPPED;
        if (live && in->expires_at && in->expires_at <= now) {
            end(j, in, "expired");
        } else if (in->state == INSTANCE_RUNNING && !in->pool[0] && config->idle_timeout > 0 &&
                   next && now - last_viewed(j, in, now, next, &n_next) >= config->idle_timeout) {
            end(j, in, "ended: no viewer for idle_timeout");
        } else if (in->state == INSTANCE_TERMINATED) {
            /*
             * Forgotten only once nothing of it is left on the host. A failed
             * teardown is retried every JANITOR_FINISH_EVERY sweeps, so an
             * unreachable libvirt is not reported every second.
             */
            bool left = api_instance_unfinished(j->api, in->uuid);
            if (left && j->sweeps % JANITOR_FINISH_EVERY == 0)
                left = api_instance_finish(j->api, in->uuid) < 0;
            if (!left && in->updated_at + (int64_t)config->terminated_retention <= now &&
                store_instance_delete(j->api->store, in->uuid) == 0)
                log_info("instance %s: forgotten, %u s after it ended", in->uuid,
                         config->terminated_retention);
        }
    }
    pool_sweep(j->api->pool, instances, count);
    if (j->sweeps++ % JANITOR_IDEMPOTENCY_EVERY == 0) {
        int removed = store_idempotency_expire(j->api->store, now - JANITOR_IDEMPOTENCY_TTL_S);
        if (removed > 0)
            log_info("forgot %d idempotency keys older than a day", removed);
    }
    if (j->sweeps % JANITOR_ORPHANS_EVERY == 0)
        reconcile_orphans(j->api->store, j->api->virt, config->data_dir, j->api->install_id, NULL);
    if (next) {
        free(j->watched);
        j->watched = next;
        j->n_watched = n_next;
    }
}

static void *janitor_main(void *data)
{
    Janitor *j = data;
    pthread_mutex_lock(&j->lock);
    while (!j->stopping) {
        pthread_mutex_unlock(&j->lock);
        sweep(j);
        pthread_mutex_lock(&j->lock);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += JANITOR_INTERVAL_S;
        while (!j->stopping && pthread_cond_timedwait(&j->wake, &j->lock, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

int janitor_start(Api *api, Janitor **ret_janitor)
{
    Janitor *j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->api = api;
    pthread_mutex_init(&j->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&j->wake, &attr);
    pthread_condattr_destroy(&attr);
    int r = -pthread_create(&j->thread, NULL, janitor_main, j);
    if (r < 0) {
        pthread_cond_destroy(&j->wake);
        pthread_mutex_destroy(&j->lock);
        free(j);
        return r;
    }
    *ret_janitor = j;
    return 0;
}

void janitor_stop(Janitor *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->lock);
    j->stopping = true;
    pthread_cond_signal(&j->wake);
    pthread_mutex_unlock(&j->lock);
    pthread_join(j->thread, NULL);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->lock);
    free(j->watched);
    free(j);
}
