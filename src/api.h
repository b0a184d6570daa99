/*
 * The Instances API: authentication, routing and the three operations on
 * instances. The order of the steps of a create and a delete (the domain
 * lifecycle) is described once, in api.c.
 */
#pragma once

#include <stdbool.h>

#include "agent.h"
#include "config.h"
#include "http.h"
#include "image.h"
#include "store.h"
#include "template.h"
#include "viewer.h"
#include "virt.h"

typedef struct Pool Pool;

typedef struct {
    const Config *config;
    Store *store;
    Virt *virt;
    const ImageCatalog *images;
    const DomainTemplates *templates;
    bool kvm;
    const char *install_id;  /* written into every domain's metadata */
    AgentHub *agents;        /* NULL: nobody waits for guests to report ready */
    Viewer *viewer;          /* the console routes, and the base of access URLs */
    int64_t host_memory_mib; /* the host's RAM, for memory_overcommit_percent; 0 = unknown */
    bool egress_ready;       /* the egress rules are in place: network "egress" may be used */
    Pool *pool;              /* NULL: no pool configured */
} Api;

/*
 * Boots one VM for the pool (org STORE_POOL_ORG, pool "warm" or "standby")
 * as a create would, and watches its guest until it is ready. -EDQUOT when
 * the host's limits leave no room, -EHOSTUNREACH for egress without its
 * rules, else -errno of the failed step (the boot is undone).
 */
int api_pool_boot(Api *api, const char *uuid, const char *image, const char *size, bool standby);

/*
 * Renders every image in every size once, so an image whose manifest does
 * not fit the templates is reported at start, not at its first create.
 * Returns how many combinations failed (each logged).
 */
unsigned api_check_catalog(const Api *api);

/*
 * Destroys an instance's domain and disk (the steps of a DELETE). The record
 * is removed, or with keep_record it ends TERMINATED (an expiry). why goes
 * into the log. -ENOENT (gone, or ending already), -EAGAIN (libvirt
 * refused: the instance is as it was), -EIO (see the log).
 */
int api_instance_destroy(Api *api, const char *instance_uuid, bool keep_record, const char *why);
/*
 * For a TERMINATED instance whose teardown failed (libvirt refused, legbad
 * died half-way): removes what is left of its domain and disk. 0 when
 * nothing is left.
 */
int api_instance_finish(Api *api, const char *instance_uuid);
/* Whether an ended instance still has its disk on the host (its teardown did not finish). */
bool api_instance_unfinished(const Api *api, const char *instance_uuid);

/* HttpHandler for the whole API; userdata is an Api. */
void api_handle(void *userdata, const HttpRequest *request, HttpResponse *response);

/* AgentReadyFn: the guest drew its page; records ready_at. */
void api_on_ready(void *userdata, const char *instance_uuid);

/* Watches the agent of every running instance whose guest has not reported ready yet. */
void api_watch_unready(Api *api);

/* VirtReconnectFn: libvirtd is back; records catch up with the domains in the background. */
void api_on_reconnect(void *userdata);

/* Lifecycle events from libvirt: keeps a record's running/stopped in step. */
void api_on_lifecycle(void *userdata, const char *instance_uuid, VirtDomainState state);
