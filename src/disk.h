/* Per-instance disks: a qcow2 overlay on the image's base disk. */
#pragma once

#include "uuid.h"

/* DATA_DIR/instances/<uuid>.qcow2, malloc'd; NULL on out of memory. */
char *disk_overlay_path(const char *data_dir, const char *instance_uuid);
/* Creates the instances dir (reachable by the QEMU user) if needed. */
int disk_prepare_dir(const char *data_dir);
/*
 * Runs qemu-img (no shell) to create overlay backed by base. On failure
 * *ret_error (if not NULL) gets qemu-img's message and no file is left.
 */
int disk_overlay_create(const char *base, const char *base_format, const char *overlay,
                        char **ret_error);
/* Removes an overlay; a missing file is success. */
int disk_overlay_remove(const char *overlay);
/* True when path is DATA_DIR/instances/<something>.qcow2: the only files legbad may delete. */
int disk_path_is_ours(const char *data_dir, const char *path);
