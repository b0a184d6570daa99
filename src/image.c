#include "image.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "util.h"

#define IMAGE_DESCRIPTION_MAX 256
#define IMAGE_CMDLINE_MAX 1024
#define IMAGE_FILE_NAME_MAX 255
#define IMAGE_SHA256_HEX_LEN 64

struct ImageCatalog {
    Image **images; /* sorted by name */
    size_t n_images;
    size_t allocated;
};

static void cJSON_Deletep(cJSON **json)
{
    cJSON_Delete(*json);
}

static void image_freep(Image **image)
{
    image_free(*image);
}

static void image_catalog_freep(ImageCatalog **catalog)
{
    image_catalog_free(*catalog);
}

static void closedirp(DIR **dir)
{
    if (*dir)
        closedir(*dir);
}

static const char *errno_text(int e)
{
    const char *text = strerrordesc_np(e);
    return text ? text : "unknown error";
}

bool image_name_is_valid(const char *name)
{
    if (!name || !name[0])
        return false;
    size_t len = strnlen(name, IMAGE_NAME_MAX + 1);
    if (len > IMAGE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return strstr(name, "..") == NULL;
}

void image_free(Image *image)
{
    if (!image)
        return;
    free(image->description);
    free(image->disk_path);
    free(image->disk_format);
    free(image->kernel_path);
    free(image->initrd_path);
    free(image->cmdline);
    free(image);
}

/* Every manifest error reads "manifest.json: <reason>" and is -EINVAL. */
#define manifest_error(ret_error, fmt, ...)                                                        \
    util_set_error(ret_error, -EINVAL, "manifest.json: " fmt, ##__VA_ARGS__)

/* A JSON null counts as absent, so a writer may spell "no initrd" either way. */
static const cJSON *manifest_field(const cJSON *root, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsNull(item) ? NULL : item;
}

static int manifest_string(const cJSON *root, const char *key, bool required, const char **ret,
                           char **ret_error)
{
    const cJSON *item = manifest_field(root, key);
    if (!item) {
        if (required)
            return manifest_error(ret_error, "field '%s' is required", key);
        *ret = NULL;
        return 0;
    }
    if (!cJSON_IsString(item) || !item->valuestring)
        return manifest_error(ret_error, "field '%s' must be a string", key);
    *ret = item->valuestring;
    return 0;
}

/*
 * Only a bare name can be resolved inside the image directory without
 * escaping it; printable ASCII also keeps the name safe to quote.
 */
static bool file_name_is_plain(const char *file)
{
    size_t len = strnlen(file, IMAGE_FILE_NAME_MAX + 1);
    if (len == 0 || len > IMAGE_FILE_NAME_MAX || strcmp(file, ".") == 0 || strcmp(file, "..") == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)file[i];
        if (c == '/' || c < 0x20 || c >= 0x7f)
            return false;
    }
    return true;
}

/*
 * A file named by the manifest: a plain name of a regular file in the
 * image dir. lstat, because libvirt chowns the disks it is given and a
 * symlink could point it at any file on the host.
 */
static int manifest_file(const cJSON *root, const char *key, bool required, const char *image_dir,
                         size_t image_dir_len, char **ret_path, char **ret_error)
{
    const char *file;
    int r = manifest_string(root, key, required, &file, ret_error);
    if (r < 0)
        return r;
    if (!file) {
        *ret_path = NULL;
        return 0;
    }
    if (!file_name_is_plain(file))
        return manifest_error(ret_error,
                              "field '%s' must be a plain file name in the image directory "
                              "(no '/', not \".\" or \"..\", printable ASCII, at most %d bytes)",
                              key, IMAGE_FILE_NAME_MAX);

    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%.*s/%s", (int)image_dir_len, image_dir, file) < 0) {
        path = NULL;
        return -ENOMEM;
    }
    struct stat st;
    if (lstat(path, &st) < 0)
        return manifest_error(ret_error, "field '%s': cannot use '%s': %s", key, file,
                              errno_text(errno));
    if (!S_ISREG(st.st_mode))
        return manifest_error(ret_error,
                              "field '%s': '%s' is not a regular file (symlinks are not followed)",
                              key, file);
    *ret_path = TAKE_PTR(path);
    return 0;
}

static bool text_is_printable_ascii(const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p >= 0x7f)
            return false;
    return true;
}

/* UTF-8 is welcome in a description; control characters are not. */
static bool text_has_control(const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return true;
    return false;
}

/* cJSON keeps the first of two equal keys; a manifest that says two things is refused instead. */
static int manifest_check_duplicates(const cJSON *root, char **ret_error)
{
    static const char *const known[] = {
        "schema",   "name",     "description", "boot",           "disk",          "disk_format",
        "kernel",   "agent",    "initrd",      "cmdline",        "recipe_sha256", "built_at",
        "disk_bus", "firmware", "clipboard",   "memory_hotplug",
    };
    for (size_t k = 0; k < ARRAY_SIZE(known); k++) {
        unsigned seen = 0;
        for (const cJSON *item = root->child; item; item = item->next)
            if (item->string && strcmp(item->string, known[k]) == 0)
                seen++;
        if (seen > 1)
            return manifest_error(ret_error, "field '%s' appears more than once", known[k]);
    }
    return 0;
}

static int manifest_parse_json(const char *json, size_t len, cJSON **ret_root, char **ret_error)
{
    if (len > IMAGE_MANIFEST_MAX)
        return manifest_error(ret_error, "is %zu bytes, more than the limit of %d", len,
                              IMAGE_MANIFEST_MAX);
    if (memchr(json, '\0', len))
        return manifest_error(ret_error, "contains a NUL byte");

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root) {
        size_t at = (end && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
        return manifest_error(ret_error, "not valid JSON (near byte %zu)", at);
    }
    for (const char *p = end; p && p < json + len; p++) {
        if (!isspace((unsigned char)*p)) {
            cJSON_Delete(root);
            return manifest_error(ret_error, "text after the JSON value (at byte %zu)",
                                  (size_t)(p - json));
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return manifest_error(ret_error, "must hold a JSON object");
    }
    *ret_root = root;
    return 0;
}

/* The fields only direct kernel boot uses; with firmware boot they would silently do nothing. */
static int manifest_parse_kernel(const cJSON *root, const char *image_dir, size_t image_dir_len,
                                 Image *image, char **ret_error)
{
    static const char *const kernel_only[] = {"kernel", "initrd", "cmdline"};
    int r;

    if (image->boot == IMAGE_BOOT_FIRMWARE) {
        for (size_t i = 0; i < ARRAY_SIZE(kernel_only); i++)
            if (manifest_field(root, kernel_only[i]))
                return manifest_error(ret_error, "field '%s' is only allowed with boot \"kernel\"",
                                      kernel_only[i]);
        return 0;
    }

    r = manifest_file(root, "kernel", true, image_dir, image_dir_len, &image->kernel_path,
                      ret_error);
    if (r < 0)
        return r;
    r = manifest_file(root, "initrd", false, image_dir, image_dir_len, &image->initrd_path,
                      ret_error);
    if (r < 0)
        return r;

    const char *cmdline;
    r = manifest_string(root, "cmdline", false, &cmdline, ret_error);
    if (r < 0)
        return r;
    if (cmdline) {
        if (strlen(cmdline) > IMAGE_CMDLINE_MAX)
            return manifest_error(ret_error, "field 'cmdline' is longer than %d bytes",
                                  IMAGE_CMDLINE_MAX);
        if (!text_is_printable_ascii(cmdline))
            return manifest_error(ret_error, "field 'cmdline' must be printable ASCII");
        r = util_strdup(cmdline, &image->cmdline);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Informational fields, but a wrong shape means a broken recipe, so they are checked too. */
static int manifest_parse_provenance(const cJSON *root, char **ret_error)
{
    const char *sha, *built_at;
    int r = manifest_string(root, "recipe_sha256", false, &sha, ret_error);
    if (r < 0)
        return r;
    if (sha) {
        bool ok = strlen(sha) == IMAGE_SHA256_HEX_LEN;
        for (const char *p = sha; ok && *p; p++)
            ok = isxdigit((unsigned char)*p);
        if (!ok)
            return manifest_error(ret_error, "field 'recipe_sha256' must be %d hex digits",
                                  IMAGE_SHA256_HEX_LEN);
    }
    r = manifest_string(root, "built_at", false, &built_at, ret_error);
    if (r < 0)
        return r;
    int64_t epoch;
    if (built_at && util_parse_iso8601(built_at, &epoch) < 0)
        return manifest_error(ret_error,
                              "field 'built_at' must be ISO 8601 UTC like 2025-01-10T12:00:00Z");
    return 0;
}

int image_manifest_parse(const char *json, size_t len, const char *image_dir, Image **ret_image,
                         char **ret_error)
{
    if (!json || !image_dir || !ret_image)
        return -EINVAL;

    /* The image's name is the directory's last component; trailing slashes do not count. */
    size_t dir_len = strlen(image_dir);
    while (dir_len > 1 && image_dir[dir_len - 1] == '/')
        dir_len--;
    if (image_dir[0] != '/' || dir_len < 2) {
        char quoted[UTIL_QUOTE_MAX + 4];
        util_quote_untrusted(image_dir, UTIL_QUOTE_MAX, quoted);
        return manifest_error(ret_error, "image directory '%s' is not an absolute path", quoted);
    }
    const char *dir_name = image_dir + dir_len;
    while (dir_name[-1] != '/')
        dir_name--;
    size_t dir_name_len = (size_t)(image_dir + dir_len - dir_name);

    _cleanup_(cJSON_Deletep) cJSON *root = NULL;
    int r = manifest_parse_json(json, len, &root, ret_error);
    if (r < 0)
        return r;
    r = manifest_check_duplicates(root, ret_error);
    if (r < 0)
        return r;

    const cJSON *schema = manifest_field(root, "schema");
    if (!schema)
        return manifest_error(ret_error, "field 'schema' is required");
    if (!cJSON_IsNumber(schema) || schema->valuedouble != 1.0)
        return manifest_error(ret_error, "field 'schema' must be 1 (the only schema this "
                                         "legbad reads)");

    _cleanup_(image_freep) Image *image = calloc(1, sizeof(*image));
    if (!image)
        return -ENOMEM;

    const char *name;
    r = manifest_string(root, "name", true, &name, ret_error);
    if (r < 0)
        return r;
    if (!image_name_is_valid(name))
        return manifest_error(ret_error,
                              "field 'name' must match [a-z0-9][a-z0-9._-]* with at most %d "
                              "characters and no \"..\"",
                              IMAGE_NAME_MAX);
    if (strlen(name) != dir_name_len || strncmp(name, dir_name, dir_name_len) != 0) {
        char quoted[UTIL_QUOTE_MAX + 4];
        _cleanup_free_ char *dir_name_copy = strndup(dir_name, dir_name_len);
        if (!dir_name_copy)
            return -ENOMEM;
        util_quote_untrusted(dir_name_copy, UTIL_QUOTE_MAX, quoted);
        return manifest_error(ret_error, "field 'name' is \"%s\" but the image directory is \"%s\"",
                              name, quoted);
    }
    memcpy(image->name, name, strlen(name) + 1);

    const char *description;
    r = manifest_string(root, "description", false, &description, ret_error);
    if (r < 0)
        return r;
    if (description && strlen(description) > IMAGE_DESCRIPTION_MAX)
        return manifest_error(ret_error, "field 'description' is longer than %d bytes",
                              IMAGE_DESCRIPTION_MAX);
    if (description && text_has_control(description))
        return manifest_error(ret_error, "field 'description' contains control characters");
    r = util_strdup(description ? description : "", &image->description);
    if (r < 0)
        return r;

    const char *boot;
    r = manifest_string(root, "boot", true, &boot, ret_error);
    if (r < 0)
        return r;
    if (strcmp(boot, "firmware") == 0)
        image->boot = IMAGE_BOOT_FIRMWARE;
    else if (strcmp(boot, "kernel") == 0)
        image->boot = IMAGE_BOOT_KERNEL;
    else
        return manifest_error(ret_error, "field 'boot' must be \"firmware\" or \"kernel\"");

    r = manifest_file(root, "disk", true, image_dir, dir_len, &image->disk_path, ret_error);
    if (r < 0)
        return r;

    /* qcow2 when unsaid: that is what every recipe builds, and qemu must never guess. */
    const char *format;
    r = manifest_string(root, "disk_format", false, &format, ret_error);
    if (r < 0)
        return r;
    if (!format)
        format = "qcow2";
    if (strcmp(format, "qcow2") != 0 && strcmp(format, "raw") != 0)
        return manifest_error(ret_error, "field 'disk_format' must be \"qcow2\" or \"raw\"");
    r = util_strdup(format, &image->disk_format);
    if (r < 0)
        return r;

    /* virtio unless said: a guest without virtio drivers (Windows) needs "sata". */
    const char *bus;
    r = manifest_string(root, "disk_bus", false, &bus, ret_error);
    if (r < 0)
        return r;
    if (bus && strcmp(bus, "virtio") != 0 && strcmp(bus, "sata") != 0)
        return manifest_error(ret_error, "field 'disk_bus' must be \"virtio\" or \"sata\"");
    image->disk_sata = bus && strcmp(bus, "sata") == 0;

    const char *firmware;
    r = manifest_string(root, "firmware", false, &firmware, ret_error);
    if (r < 0)
        return r;
    if (firmware && strcmp(firmware, "bios") != 0 && strcmp(firmware, "uefi") != 0)
        return manifest_error(ret_error, "field 'firmware' must be \"bios\" or \"uefi\"");
    image->uefi = firmware && strcmp(firmware, "uefi") == 0;
    if (image->uefi && image->boot != IMAGE_BOOT_FIRMWARE)
        return manifest_error(ret_error, "field 'firmware' applies to \"boot\": \"firmware\" only");

    const cJSON *agent = cJSON_GetObjectItemCaseSensitive(root, "agent");
    if (agent && !cJSON_IsBool(agent))
        return manifest_error(ret_error, "field 'agent' must be true or false");
    image->agent = agent ? cJSON_IsTrue(agent) : image->boot == IMAGE_BOOT_KERNEL;
    const cJSON *clipboard = cJSON_GetObjectItemCaseSensitive(root, "clipboard");
    if (clipboard && !cJSON_IsBool(clipboard))
        return manifest_error(ret_error, "field 'clipboard' must be true or false");
    image->clipboard = cJSON_IsTrue(clipboard);
    const cJSON *hotplug = cJSON_GetObjectItemCaseSensitive(root, "memory_hotplug");
    if (hotplug && !cJSON_IsBool(hotplug))
        return manifest_error(ret_error, "field 'memory_hotplug' must be true or false");
    image->memory_hotplug = cJSON_IsTrue(hotplug);

    r = manifest_parse_kernel(root, image_dir, dir_len, image, ret_error);
    if (r < 0)
        return r;
    r = manifest_parse_provenance(root, ret_error);
    if (r < 0)
        return r;

    *ret_image = TAKE_PTR(image);
    return 0;
}

void image_catalog_free(ImageCatalog *catalog)
{
    if (!catalog)
        return;
    for (size_t i = 0; i < catalog->n_images; i++)
        image_free(catalog->images[i]);
    free(catalog->images);
    free(catalog);
}

static int catalog_append(ImageCatalog *catalog, Image *image)
{
    if (catalog->n_images == catalog->allocated) {
        size_t allocated = catalog->allocated ? 2 * catalog->allocated : 8;
        Image **images = reallocarray(catalog->images, allocated, sizeof(*images));
        if (!images)
            return -ENOMEM;
        catalog->images = images;
        catalog->allocated = allocated;
    }
    catalog->images[catalog->n_images++] = image;
    return 0;
}

/*
 * Loads one entry of the images dir. Only out of memory is an error: an
 * image that cannot be used is skipped with the reason in the log, so one
 * broken image never hides the others.
 */
static int catalog_load_entry(ImageCatalog *catalog, const char *images_dir, const char *entry)
{
    char quoted[UTIL_QUOTE_MAX + 4];
    util_quote_untrusted(entry, UTIL_QUOTE_MAX, quoted);

    _cleanup_free_ char *image_dir = NULL;
    if (asprintf(&image_dir, "%s/%s", images_dir, entry) < 0) {
        image_dir = NULL;
        return -ENOMEM;
    }
    struct stat st;
    if (stat(image_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        log_debug("images: ignoring %s/%s: not a directory", images_dir, quoted);
        return 0;
    }
    if (!image_name_is_valid(entry)) {
        log_warn("images: skipping %s: not a valid image name", quoted);
        return 0;
    }

    _cleanup_free_ char *manifest_path = NULL;
    if (asprintf(&manifest_path, "%s/manifest.json", image_dir) < 0) {
        manifest_path = NULL;
        return -ENOMEM;
    }
    _cleanup_free_ char *json = NULL;
    size_t len;
    int r = util_read_file(manifest_path, IMAGE_MANIFEST_MAX, &json, &len);
    if (r == -ENOMEM)
        return r;
    if (r == -EFBIG) {
        log_warn("images: skipping %s: manifest.json is larger than %d bytes", entry,
                 IMAGE_MANIFEST_MAX);
        return 0;
    }
    if (r == -EINVAL) {
        log_warn("images: skipping %s: manifest.json is not a regular file", entry);
        return 0;
    }
    if (r < 0) {
        log_warn("images: skipping %s: cannot read manifest.json: %s", entry, errno_text(-r));
        return 0;
    }

    Image *image = NULL;
    _cleanup_free_ char *error = NULL;
    r = image_manifest_parse(json, len, image_dir, &image, &error);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        log_warn("images: skipping %s: %s", entry, error ? error : "invalid manifest.json");
        return 0;
    }
    r = catalog_append(catalog, image);
    if (r < 0)
        image_free(image);
    return r;
}

static int image_compare(const void *a, const void *b)
{
    const Image *x = *(Image *const *)a, *y = *(Image *const *)b;
    return strcmp(x->name, y->name);
}

int image_catalog_load(const char *images_dir, ImageCatalog **ret_catalog)
{
    if (!images_dir || !ret_catalog)
        return -EINVAL;

    _cleanup_(image_catalog_freep) ImageCatalog *catalog = calloc(1, sizeof(*catalog));
    if (!catalog)
        return -ENOMEM;

    /* Absolute, because the disk paths go into domain XML that libvirt resolves elsewhere. */
    _cleanup_free_ char *root = realpath(images_dir, NULL);
    if (!root) {
        if (errno != ENOENT)
            return -errno;
        log_warn("images: %s does not exist, so no images are available", images_dir);
        *ret_catalog = TAKE_PTR(catalog);
        return 0;
    }

    _cleanup_(closedirp) DIR *dir = opendir(root);
    if (!dir)
        return -errno;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (!de) {
            if (errno != 0)
                return -errno;
            break;
        }
        /* Dot entries include the build tool's temporary and set-aside directories. */
        if (de->d_name[0] == '.')
            continue;
        int r = catalog_load_entry(catalog, root, de->d_name);
        if (r < 0)
            return r;
    }

    if (catalog->n_images > 1)
        qsort(catalog->images, catalog->n_images, sizeof(*catalog->images), image_compare);
    *ret_catalog = TAKE_PTR(catalog);
    return 0;
}

static int image_name_compare(const void *key, const void *member)
{
    const Image *image = *(Image *const *)member;
    return strcmp(key, image->name);
}

const Image *image_catalog_find(const ImageCatalog *catalog, const char *name)
{
    if (!catalog || !name || catalog->n_images == 0)
        return NULL;
    Image *const *found = bsearch(name, catalog->images, catalog->n_images,
                                  sizeof(*catalog->images), image_name_compare);
    return found ? *found : NULL;
}

size_t image_catalog_count(const ImageCatalog *catalog)
{
    return catalog ? catalog->n_images : 0;
}

const Image *image_catalog_get(const ImageCatalog *catalog, size_t index)
{
    if (!catalog || index >= catalog->n_images)
        return NULL;
    return catalog->images[index];
}
