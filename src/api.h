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
} Api;

/* HttpHandler for the whole API; userdata is an Api. */
void api_handle(void *userdata, const HttpRequest *request, HttpResponse *response);

/* Lifecycle events from libvirt: keeps a record's running/stopped in step. */
void api_on_lifecycle(void *userdata, const char *instance_uuid, VirtDomainState state);
