/*
 * The access URL's HTTP side, everything under /console/{instance_uuid}/:
 * the viewer page and noVNC's modules, the exchange of the URL's secret for
 * the console cookie, the page's status poll, and the WebSocket upgrade
 * that hands a viewer to the console relay. A Bearer token plays no part
 * here; the cookie and the Origin header do.
 */
#pragma once

#include "config.h"
#include "console.h"
#include "http.h"
#include "route.h"
#include "store.h"
#include "virt.h"

typedef struct {
    const Config *config;
    Store *store;
    Virt *virt;
    ConsoleRelay *relay;
    /* public_url, or http(s)://<listen address>:<port>; may hold {instance}. */
    const char *base_template;
} Viewer;

/* Answers one console route (route_is_console(route->id)). */
void viewer_handle(Viewer *viewer, const Route *route, const HttpRequest *request,
                   HttpResponse *response);
