/*
 * legbad's end of the guest agent channel: a virtio-serial port named
 * AGENT_PORT_NAME in every domain, carrying newline-delimited JSON (at most
 * AGENT_LINE_MAX bytes a line). One thread watches every instance that has
 * not reported its page drawn yet: it connects when the port appears,
 * sends {"type":"hello"} and, with a start_url, {"type":"open","url":…,"id":N},
 * and calls back once the guest answers {"type":"ready","id":N} (or
 * {"type":"status","ready":true,"id":N}); id null stands for the image's
 * built-in page. Everything the guest sends is untrusted: bounded, parsed
 * strictly, never acted on beyond that.
 */
#pragma once

#include "virt.h"

#define AGENT_PORT_NAME "org.legba.agent.0"
#define AGENT_LINE_MAX 4096

typedef struct AgentHub AgentHub;

/* Called on the hub's thread, once per watched instance; it must not call back into the hub. */
typedef void (*AgentReadyFn)(void *userdata, const char *instance_uuid);

int agent_hub_new(Virt *virt, AgentReadyFn on_ready, void *userdata, AgentHub **ret_hub);
void agent_hub_free(AgentHub *hub);

/*
 * Watches an instance until its guest reports the page drawn: start_url
 * (NULL or "" for the built-in page) is what must be on screen.
 * Watching an instance again replaces the earlier watch.
 */
int agent_hub_watch(AgentHub *hub, const char *instance_uuid, const char *start_url);
/* Stops watching (the instance is being deleted); unknown uuids are fine. */
void agent_hub_forget(AgentHub *hub, const char *instance_uuid);
