/*
 * The Instances API: authentication, routing and the three operations on
 * instances. The order of the steps of a create and a delete (the domain
 * lifecycle) is described once, in api.c.
 */
#pragma once

#include <stdbool.h>

#include "config.h"
#include "http.h"
#include "image.h"
#include "store.h"
#include "template.h"
#include "virt.h"

typedef struct {
    const Config *config;
    Store *store;
    Virt *virt;
    const ImageCatalog *images;
    const DomainTemplates *templates;
    bool kvm;
    const char *install_id; /* written into every domain's metadata */
} Api;

/*
 * Renders every image in every size once, so an image whose manifest does
 * not fit the templates is reported at start, not at its first create.
 * Returns how many combinations failed (each logged).
 */
unsigned api_check_catalog(const Api *api);

/* HttpHandler for the whole API; userdata is an Api. */
void api_handle(void *userdata, const HttpRequest *request, HttpResponse *response);

/* Lifecycle events from libvirt: keeps a record's running/stopped in step. */
void api_on_lifecycle(void *userdata, const char *instance_uuid, VirtDomainState state);
