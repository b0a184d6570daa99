/*
 * The warm pool and the standby tier: per (image, size) of the config's
 * `pool`, a number of booted, never-used VMs wait for a create. Warm ones
 * run with their page drawn; standby ones were booted the same way, then
 * saved to disk (libvirt's managed save: no RAM while they wait; an image
 * with memory hotplug gives its virtio-mem memory back first, so only the
 * fixed part of the RAM is saved and restored) and are restored when
 * taken. A create takes one (api.c, take_pooled) and the janitor's sweep
 * calls pool_sweep() every second, which refills, saves the standby ones
 * once ready, and removes what the config no longer asks for, at most
 * pool_boots boots at a time. Pool VMs are ordinary records of the pool
 * org (STORE_POOL_ORG), so a restart adopts them as it adopts any instance.
 */
#pragma once

#include "api.h"
#include "store.h"

typedef struct Pool Pool;

/* -EINVAL for a pool entry naming an image or size this host does not have (logged). */
int pool_new(Api *api, Pool **ret_pool);
/* Waits (up to a minute) for boots and saves under way. Accepts NULL. */
void pool_free(Pool *pool);
/* One step, on every instance record (as the janitor read them). */
void pool_sweep(Pool *pool, const StoreInstance *instances, size_t count);
/*
 * Around the restore of a taken standby VM: while one is under way the
 * sweep starts no boot or save, which would compete with it for the CPUs
 * and the disk; the refill starts at the first sweep after it. Accept NULL.
 */
void pool_restore_begin(Pool *pool);
void pool_restore_end(Pool *pool);
