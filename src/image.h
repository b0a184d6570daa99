/*
 * The image catalog: every directory under the images dir with a valid
 * manifest.json. Loaded once at start; read-only afterwards, so lookups
 * need no lock.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define IMAGE_NAME_MAX 64
#define IMAGE_MANIFEST_MAX (64 * 1024)

typedef enum {
    IMAGE_BOOT_FIRMWARE = 0, /* BIOS boots the disk */
    IMAGE_BOOT_KERNEL,       /* direct kernel boot: kernel + initrd + cmdline */
} ImageBoot;

typedef struct {
    char name[IMAGE_NAME_MAX + 1];
    char *description;
    ImageBoot boot;
    char *disk_path;   /* absolute */
    char *disk_format; /* "qcow2" or "raw" */
    char *kernel_path; /* absolute, IMAGE_BOOT_KERNEL only */
    char *initrd_path; /* absolute or NULL */
    char *cmdline;     /* or NULL */
    bool disk_sata;    /* "disk_bus": "sata" for guests without virtio drivers (Windows) */
    bool uefi;         /* "firmware": "uefi" (OVMF) instead of "bios"; firmware boot only */
    /*
     * "agent": whether the guest runs legba's agent (readiness, start_url).
     * Default: true for kernel boot (legba's images), false for firmware boot.
     */
    bool agent;
    /*
     * "clipboard": whether the guest takes a clipboard over the SPICE agent
     * port com.redhat.spice.0 (legba's images run spice-vdagent). Default
     * false: such an image only takes instances with clipboard "none".
     */
    bool clipboard;
    /*
     * "memory_hotplug": whether the guest onlines memory that a virtio-mem
     * device plugs in, as movable memory it can give back (legba's images
     * load virtio_mem and boot with memhp_default_state=online_movable).
     * Default false: the domain then has all of its RAM as plain memory.
     */
    bool memory_hotplug;
} Image;

typedef struct ImageCatalog ImageCatalog;

/* [a-z0-9][a-z0-9._-]{0,63}, no "..": safe as a path component. */
bool image_name_is_valid(const char *name);

/*
 * Parses a manifest for the image in image_dir (whose last component is
 * the name). Paths in the manifest are plain file names inside image_dir.
 * On -EINVAL, *ret_error (if not NULL) gets a malloc'd reason.
 */
int image_manifest_parse(const char *json, size_t len, const char *image_dir, Image **ret_image,
                         char **ret_error);
void image_free(Image *image);

/*
 * Loads every valid image; an invalid one is skipped with a warning in the
 * log. A missing images dir is an empty catalog, not an error.
 */
int image_catalog_load(const char *images_dir, ImageCatalog **ret_catalog);
void image_catalog_free(ImageCatalog *catalog);
const Image *image_catalog_find(const ImageCatalog *catalog, const char *name);
size_t image_catalog_count(const ImageCatalog *catalog);
const Image *image_catalog_get(const ImageCatalog *catalog, size_t index); /* sorted by name */
