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

/*
 * The orphan pass alone, safe while legbad serves (a record is written
 * before its domain is defined and removed only after the domain is gone):
 * libvirtd may still carry out a define that a killed legbad sent after the
 * start-up reconcile looked, so the janitor runs this now and then.
 */
int reconcile_orphans(Store *store, Virt *virt, const char *data_dir, const char *install_id,
                      unsigned *ret_removed);
