/*
 * The console's viewer page (src/viewer/), built into legbad so the page a
 * user gets always speaks the routes this legbad answers. The HTTP layer
 * serves index.html at /console/{uuid}/ and the others at
 * /console/{uuid}/{name}; the page fetches everything by relative URL.
 */
#pragma once

#include <stddef.h>

typedef struct {
    const char *name;
    /* Followed by a NUL that len does not count. */
    const unsigned char *data;
    size_t len;
    const char *content_type;
} ViewerAsset;

/* "index.html", "viewer.js" or "viewer.css"; NULL for any other name (or NULL). */
const ViewerAsset *viewer_asset_find(const char *name);
