#include "viewer_assets.h"

#include <string.h>

#include "util.h"

/* Generated at build time from src/viewer/ by cmake/viewer_assets.cmake. */
#include "viewer_assets_data.inc"

/* sizeof - 1: the generator ends each file with a NUL of its own. */
#define ASSET(file, id, type)                                                                      \
    {                                                                                              \
        file, viewer_asset_##id, sizeof(viewer_asset_##id) - 1, type                               \
    }

static const ViewerAsset viewer_assets[] = {
    ASSET("index.html", index_html, "text/html; charset=utf-8"),
    ASSET("viewer.js", viewer_js, "text/javascript; charset=utf-8"),
    ASSET("viewer.css", viewer_css, "text/css; charset=utf-8"),
};

/* Exact names only: the URL's last segment is passed as is, so "../x" must miss. */
const ViewerAsset *viewer_asset_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < ARRAY_SIZE(viewer_assets); i++)
        if (strcmp(viewer_assets[i].name, name) == 0)
            return &viewer_assets[i];
    return NULL;
}
