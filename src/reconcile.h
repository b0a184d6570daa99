/*
 * Start-up reconcile: LMDB says what should exist, libvirt what does.
 * Interrupted creates are undone, interrupted deletes finished, records
 * whose domain is gone marked stopped, and our domains with no record
 * (orphans) destroyed with their disk. Every change is logged.
 */
#pragma once

#include "store.h"
#include "virt.h"

typedef struct {
    unsigned creates_undone;
    unsigned deletes_finished;
    unsigned marked_stopped;
    unsigned marked_running;
    unsigned orphans_removed;
    unsigned foreign_skipped;
    unsigned failures;
} ReconcileStats;

/* Domains whose metadata names another installation than install_id are left alone. */
int reconcile_run(Store *store, Virt *virt, const char *data_dir, const char *install_id,
                  ReconcileStats *ret_stats);
