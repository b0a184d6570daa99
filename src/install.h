/*
 * The installation id: a random UUID kept in DATA_DIR/installation-id and
 * written into every domain's metadata. Several legbads (or a test run
 * beside a live service) may share one libvirt; reconcile touches only
 * domains that carry its own id.
 */
#pragma once

#include "uuid.h"

/* Reads the id, creating it on first use. 0 or -errno (-EBADMSG for a damaged file). */
int install_id_load(const char *data_dir, char ret_id[UUID_STR_LEN]);
