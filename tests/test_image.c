/* Tier 1 tests of the image catalog: manifest rules, catalog loading and the build tool. */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "image.h"
#include "log.h"
#include "util.h"

typedef struct {
    char root[64];            /* a fresh temp dir, removed after the test */
    char image_dir[PATH_MAX]; /* root/tiny with a disk, a kernel, an initrd */
} Fixture;

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(content, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* An image dir under root with the files a manifest may name. */
static void make_image_dir(const char *root, const char *name, char *ret_dir, size_t size)
{
    snprintf(ret_dir, size, "%s/%s", root, name);
    assert_true(mkdir(ret_dir, 0755) == 0 || errno == EEXIST);
    write_file(ret_dir, "disk.qcow2", "not really a disk");
    write_file(ret_dir, "vmlinuz", "not really a kernel");
    write_file(ret_dir, "initrd.img", "not really an initrd");
}

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/legba-test-image-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    make_image_dir(f->root, "tiny", f->image_dir, sizeof(f->image_dir));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    rm_rf(f->root);
    free(f);
    return 0;
}

static int parse(const Fixture *f, const char *json, Image **ret_image, char **ret_error)
{
    return image_manifest_parse(json, strlen(json), f->image_dir, ret_image, ret_error);
}

#define NAME_64 "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01"

static void test_name_is_valid(void **state)
{
    static const char *const good[] = {"tiny", "a",  "0",  "chromium-12.0_x",
                                       "a.b",  "a-", "a_", NAME_64};
    static const char *const bad[] = {"",   "Tiny", ".hidden", "-x",   "_x",          "a..b",
                                      "..", "a/b",  "a b",     "a\nb", "caf\xc3\xa9", NAME_64 "2"};
    for (size_t i = 0; i < ARRAY_SIZE(good); i++)
        assert_true(image_name_is_valid(good[i]));
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        assert_false(image_name_is_valid(bad[i]));
    assert_false(image_name_is_valid(NULL));
}

static void test_parse_firmware(void **state)
{
    Fixture *f = *state;
    Image *image = NULL;
    char *error = NULL;
    const char *json = "{\"schema\":1,\"name\":\"tiny\",\"description\":\"A blank disk\","
                       "\"boot\":\"firmware\",\"disk\":\"disk.qcow2\",\"disk_format\":\"qcow2\","
                       "\"recipe_sha256\":\"e285c4f21a5361bca8f1e77094f0eeaa6d34ce42d48f088a93346"
                       "4ad0662e592\",\"built_at\":\"2025-01-10T12:00:00Z\"}";
    assert_int_equal(parse(f, json, &image, &error), 0);
    assert_null(error);
    assert_non_null(image);

    char disk[PATH_MAX * 2];
    snprintf(disk, sizeof(disk), "%s/disk.qcow2", f->image_dir);
    assert_string_equal(image->name, "tiny");
    assert_string_equal(image->description, "A blank disk");
    assert_int_equal(image->boot, IMAGE_BOOT_FIRMWARE);
    assert_string_equal(image->disk_path, disk);
    assert_true(image->disk_path[0] == '/');
    assert_string_equal(image->disk_format, "qcow2");
    assert_null(image->kernel_path);
    assert_null(image->initrd_path);
    assert_null(image->cmdline);
    assert_false(image->disk_sata);
    assert_false(image->uefi);
    image_free(image);
}

/* What an operator's own disk (Windows, say) needs: SATA instead of virtio, UEFI firmware. */
static void test_parse_disk_bus_and_firmware(void **state)
{
    Fixture *f = *state;
    Image *image = NULL;
    char *error = NULL;
    assert_int_equal(parse(f,
                           "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":"
                           "\"disk.qcow2\",\"disk_bus\":\"sata\",\"firmware\":\"uefi\"}",
                           &image, &error),
                     0);
    assert_true(image->disk_sata);
    assert_true(image->uefi);
    image_free(image);
    image = NULL;

    static const struct {
        const char *json;
        const char *message;
    } bad[] = {
        {"{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\","
         "\"disk_bus\":\"ide\"}",
         "'disk_bus' must be"},
        {"{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\","
         "\"firmware\":\"coreboot\"}",
         "'firmware' must be"},
        {"{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\","
         "\"disk_bus\":\"sata\",\"disk_bus\":\"virtio\"}",
         "more than once"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse(f, bad[i].json, &image, &error), -EINVAL);
        assert_null(image);
        if (!error || !strstr(error, bad[i].message))
            fail_msg("case %zu: '%s' not in '%s'", i, bad[i].message, error ? error : "(null)");
        free(error);
        error = NULL;
    }
}

static void test_parse_kernel(void **state)
{
    Fixture *f = *state;
    Image *image = NULL;
    const char *json =
        "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"kernel\",\"disk\":\"disk.qcow2\","
        "\"disk_format\":\"raw\",\"kernel\":\"vmlinuz\",\"initrd\":\"initrd.img\","
        "\"cmdline\":\"root=/dev/vda ro quiet\"}";
    assert_int_equal(parse(f, json, &image, NULL), 0);

    char path[PATH_MAX * 2];
    assert_int_equal(image->boot, IMAGE_BOOT_KERNEL);
    assert_string_equal(image->disk_format, "raw");
    snprintf(path, sizeof(path), "%s/vmlinuz", f->image_dir);
    assert_string_equal(image->kernel_path, path);
    snprintf(path, sizeof(path), "%s/initrd.img", f->image_dir);
    assert_string_equal(image->initrd_path, path);
    assert_string_equal(image->cmdline, "root=/dev/vda ro quiet");
    assert_string_equal(image->description, "");
    /* A clipboard and memory hotplug only when the manifest says so, kernel boot or not. */
    assert_false(image->clipboard);
    assert_false(image->memory_hotplug);
    image_free(image);

    json = "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"kernel\",\"disk\":\"disk.qcow2\","
           "\"kernel\":\"vmlinuz\",\"clipboard\":true,\"memory_hotplug\":true}";
    assert_int_equal(parse(f, json, &image, NULL), 0);
    assert_true(image->clipboard);
    assert_true(image->memory_hotplug);
    image_free(image);
}

static void test_parse_kernel_minimal(void **state)
{
    Fixture *f = *state;
    Image *image = NULL;
    const char *json =
        "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"kernel\",\"disk\":\"disk.qcow2\","
        "\"kernel\":\"vmlinuz\",\"initrd\":null}";
    assert_int_equal(parse(f, json, &image, NULL), 0);
    assert_non_null(image->kernel_path);
    assert_null(image->initrd_path);
    assert_null(image->cmdline);
    /* Unsaid format means qcow2, never a probe. */
    assert_string_equal(image->disk_format, "qcow2");
    image_free(image);
}

/* Forward compatible: a newer manifest's extra keys do not make the image unusable. */
static void test_parse_ignores_unknown_keys(void **state)
{
    Fixture *f = *state;
    Image *image = NULL;
    const char *json =
        "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\","
        "\"future\":{\"nested\":[1,2,3]},\"Boot\":\"bogus\"}";
    assert_int_equal(parse(f, json, &image, NULL), 0);
    assert_int_equal(image->boot, IMAGE_BOOT_FIRMWARE);
    image_free(image);
}

static void test_parse_trailing_slash_dir(void **state)
{
    Fixture *f = *state;
    char dir[PATH_MAX + 2], disk[PATH_MAX * 2];
    snprintf(dir, sizeof(dir), "%s//", f->image_dir);
    snprintf(disk, sizeof(disk), "%s/disk.qcow2", f->image_dir);
    const char *json =
        "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}";
    Image *image = NULL;
    assert_int_equal(image_manifest_parse(json, strlen(json), dir, &image, NULL), 0);
    assert_string_equal(image->disk_path, disk);
    image_free(image);
}

/* Limits sit exactly at the boundary: 256 bytes of description and 1024 of cmdline pass. */
static void test_parse_limits(void **state)
{
    Fixture *f = *state;
    char description[257], cmdline[1026], json[2048];
    memset(description, 'd', 256);
    description[256] = '\0';
    memset(cmdline, 'c', 1024);
    cmdline[1024] = '\0';

    Image *image = NULL;
    snprintf(json, sizeof(json),
             "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"kernel\",\"disk\":\"disk.qcow2\","
             "\"kernel\":\"vmlinuz\",\"description\":\"%s\",\"cmdline\":\"%s\"}",
             description, cmdline);
    assert_int_equal(parse(f, json, &image, NULL), 0);
    assert_int_equal(strlen(image->description), 256);
    assert_int_equal(strlen(image->cmdline), 1024);
    image_free(image);

    char *error = NULL;
    image = NULL;
    snprintf(json, sizeof(json),
             "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"kernel\",\"disk\":\"disk.qcow2\","
             "\"kernel\":\"vmlinuz\",\"description\":\"%sd\"}",
             description);
    assert_int_equal(parse(f, json, &image, &error), -EINVAL);
    assert_null(image);
    assert_non_null(strstr(error, "field 'description' is longer than 256 bytes"));
    free(error);

    error = NULL;
    cmdline[1024] = 'c';
    cmdline[1025] = '\0';
    snprintf(json, sizeof(json),
             "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"kernel\",\"disk\":\"disk.qcow2\","
             "\"kernel\":\"vmlinuz\",\"cmdline\":\"%s\"}",
             cmdline);
    assert_int_equal(parse(f, json, &image, &error), -EINVAL);
    assert_non_null(strstr(error, "field 'cmdline' is longer than 1024 bytes"));
    free(error);
}

typedef struct {
    const char *json;
    const char *message; /* must appear in the error */
} BadManifest;

#define FW "\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\""
#define KERNEL "\"schema\":1,\"name\":\"tiny\",\"boot\":\"kernel\",\"disk\":\"disk.qcow2\""

static const BadManifest bad_manifests[] = {
    {"{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\","
     "\"clipboard\":\"yes\"}",
     "field 'clipboard' must be true or false"},
    {"{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\","
     "\"clipboard\":true,\"clipboard\":false}",
     "field 'clipboard' appears more than once"},
    {"{\"schema\":1,\"name\":\"tiny\",\"boot\":\"kernel\",\"disk\":\"disk.qcow2\","
     "\"kernel\":\"vmlinuz\",\"memory_hotplug\":1}",
     "field 'memory_hotplug' must be true or false"},
    {"{\"schema\":2,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}",
     "field 'schema' must be 1"},
    {"{\"schema\":\"1\",\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}",
     "field 'schema' must be 1"},
    {"{\"schema\":1.5,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}",
     "field 'schema' must be 1"},
    {"{\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}",
     "field 'schema' is required"},
    {"{\"schema\":1,\"name\":\"other\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}",
     "field 'name' is \"other\" but the image directory is \"tiny\""},
    {"{\"schema\":1,\"name\":\"Tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}",
     "field 'name' must match"},
    {"{\"schema\":1,\"name\":\"../tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}",
     "field 'name' must match"},
    {"{\"schema\":1,\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}", "field 'name' is required"},
    {"{\"schema\":1,\"name\":7,\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}",
     "field 'name' must be a string"},
    {"{\"schema\":1,\"name\":\"tiny\",\"disk\":\"disk.qcow2\"}", "field 'boot' is required"},
    {"{\"schema\":1,\"name\":\"tiny\",\"boot\":\"uefi\",\"disk\":\"disk.qcow2\"}",
     "manifest.json: field 'boot' must be \"firmware\" or \"kernel\""},
    {"{" FW "}", "field 'disk' is required"},
    {"{" FW ",\"disk\":\"nope.qcow2\"}", "field 'disk': cannot use 'nope.qcow2'"},
    {"{" FW ",\"disk\":\"sub/disk.qcow2\"}", "field 'disk' must be a plain file name"},
    {"{" FW ",\"disk\":\"/etc/passwd\"}", "field 'disk' must be a plain file name"},
    {"{" FW ",\"disk\":\"..\"}", "field 'disk' must be a plain file name"},
    {"{" FW ",\"disk\":\".\"}", "field 'disk' must be a plain file name"},
    {"{" FW ",\"disk\":\"\"}", "field 'disk' must be a plain file name"},
    {"{" FW ",\"disk\":\"a\\nb\"}", "field 'disk' must be a plain file name"},
    {"{" FW ",\"disk\":\"sub\"}", "field 'disk': 'sub' is not a regular file"},
    {"{" FW ",\"disk\":\"link.qcow2\"}", "field 'disk': 'link.qcow2' is not a regular file"},
    {"{" FW ",\"disk\":[\"disk.qcow2\"]}", "field 'disk' must be a string"},
    {"{" FW ",\"disk\":\"disk.qcow2\",\"disk_format\":\"vmdk\"}",
     "field 'disk_format' must be \"qcow2\" or \"raw\""},
    {"{" FW ",\"disk\":\"disk.qcow2\",\"disk_format\":\"QCOW2\"}",
     "field 'disk_format' must be \"qcow2\" or \"raw\""},
    {"{" KERNEL "}", "field 'kernel' is required"},
    {"{" KERNEL ",\"kernel\":\"../vmlinuz\"}", "field 'kernel' must be a plain file name"},
    {"{" KERNEL ",\"kernel\":\"vmlinuz\",\"initrd\":\"missing.img\"}",
     "field 'initrd': cannot use 'missing.img'"},
    {"{" KERNEL ",\"kernel\":\"vmlinuz\",\"cmdline\":\"console=ttyS0\\nroot=/dev/vda\"}",
     "field 'cmdline' must be printable ASCII"},
    {"{" KERNEL ",\"kernel\":\"vmlinuz\",\"cmdline\":\"quiet \xc3\xa9\"}",
     "field 'cmdline' must be printable ASCII"},
    {"{" KERNEL ",\"kernel\":\"vmlinuz\",\"cmdline\":3}", "field 'cmdline' must be a string"},
    {"{" FW ",\"disk\":\"disk.qcow2\",\"kernel\":\"vmlinuz\"}",
     "field 'kernel' is only allowed with boot \"kernel\""},
    {"{" FW ",\"disk\":\"disk.qcow2\",\"cmdline\":\"quiet\"}",
     "field 'cmdline' is only allowed with boot \"kernel\""},
    {"{" FW ",\"disk\":\"disk.qcow2\",\"description\":42}", "field 'description' must be a string"},
    {"{" FW ",\"disk\":\"disk.qcow2\",\"description\":\"line\\u001b[31m\"}",
     "field 'description' contains control characters"},
    {"{" FW ",\"disk\":\"disk.qcow2\",\"recipe_sha256\":\"abc\"}",
     "field 'recipe_sha256' must be 64 hex digits"},
    {"{" FW ",\"disk\":\"disk.qcow2\",\"built_at\":\"yesterday\"}",
     "field 'built_at' must be ISO 8601"},
    {"{" FW ",\"disk\":\"disk.qcow2\",\"boot\":\"kernel\"}", "field 'boot' appears more than once"},
    {"{" FW ",\"disk\":\"disk.qcow2\"", "not valid JSON"},
    {"{\"schema\":1,,}", "not valid JSON"},
    {"", "not valid JSON"},
    {"{" FW ",\"disk\":\"disk.qcow2\"} {}", "text after the JSON value"},
    {"[" FW "]", "not valid JSON"},
    {"[1,2]", "must hold a JSON object"},
    {"\"tiny\"", "must hold a JSON object"},
    {"null", "must hold a JSON object"},
};

static void test_parse_errors(void **state)
{
    Fixture *f = *state;
    char sub[PATH_MAX + 8], link[PATH_MAX + 16];
    snprintf(sub, sizeof(sub), "%s/sub", f->image_dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    write_file(sub, "disk.qcow2", "inside a subdirectory");
    snprintf(link, sizeof(link), "%s/link.qcow2", f->image_dir);
    assert_int_equal(symlink("disk.qcow2", link), 0);

    for (size_t i = 0; i < ARRAY_SIZE(bad_manifests); i++) {
        Image *image = NULL;
        char *error = NULL;
        int r = parse(f, bad_manifests[i].json, &image, &error);
        if (r != -EINVAL || !error || !strstr(error, bad_manifests[i].message))
            fail_msg("case %zu (%s): r=%d error=%s, expected '%s'", i, bad_manifests[i].json, r,
                     error ? error : "(none)", bad_manifests[i].message);
        assert_null(image);
        assert_true(strncmp(error, "manifest.json: ", 15) == 0);
        free(error);

        /* Without an error pointer the verdict is the same. */
        assert_int_equal(parse(f, bad_manifests[i].json, &image, NULL), -EINVAL);
        assert_null(image);
    }
}

/* The length given counts, not a NUL terminator: an embedded NUL or a short length are both seen.
 */
static void test_parse_length(void **state)
{
    Fixture *f = *state;
    static const char json[] = "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\","
                               "\"disk\":\"disk.qcow2\"}";
    Image *image = NULL;
    char *error = NULL;

    assert_int_equal(image_manifest_parse(json, sizeof(json) - 2, f->image_dir, &image, &error),
                     -EINVAL);
    assert_non_null(strstr(error, "not valid JSON"));
    free(error);

    error = NULL;
    assert_int_equal(image_manifest_parse(json, sizeof(json), f->image_dir, &image, &error),
                     -EINVAL);
    assert_non_null(strstr(error, "NUL byte"));
    free(error);

    assert_int_equal(image_manifest_parse(json, sizeof(json) - 1, f->image_dir, &image, NULL), 0);
    image_free(image);
}

static void test_parse_oversized(void **state)
{
    Fixture *f = *state;
    /* A valid manifest padded with whitespace just past the limit. */
    static const char head[] = "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\","
                               "\"disk\":\"disk.qcow2\"}";
    size_t len = IMAGE_MANIFEST_MAX + 1;
    char *json = malloc(len + 1);
    assert_non_null(json);
    memset(json, ' ', len);
    memcpy(json, head, sizeof(head) - 1);
    json[len] = '\0';

    Image *image = NULL;
    char *error = NULL;
    assert_int_equal(image_manifest_parse(json, len, f->image_dir, &image, &error), -EINVAL);
    assert_null(image);
    assert_non_null(strstr(error, "more than the limit of 65536"));
    free(error);

    /* At the limit it is fine. */
    assert_int_equal(image_manifest_parse(json, len - 1, f->image_dir, &image, NULL), 0);
    image_free(image);

    /* In a catalog, an oversized manifest file skips that image. */
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/manifest.json", f->image_dir);
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    assert_int_equal(fwrite(json, 1, len, file), len);
    assert_int_equal(fclose(file), 0);
    free(json);

    ImageCatalog *catalog = NULL;
    assert_int_equal(image_catalog_load(f->root, &catalog), 0);
    assert_int_equal(image_catalog_count(catalog), 0);
    image_catalog_free(catalog);
}

static void test_parse_relative_dir(void **state)
{
    const char *json =
        "{\"schema\":1,\"name\":\"tiny\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}";
    Image *image = NULL;
    char *error = NULL;
    assert_int_equal(image_manifest_parse(json, strlen(json), "images/tiny", &image, &error),
                     -EINVAL);
    assert_non_null(strstr(error, "not an absolute path"));
    free(error);
    assert_int_equal(image_manifest_parse(json, strlen(json), "/", &image, NULL), -EINVAL);
    assert_null(image);
}

static void write_manifest(const char *root, const char *name, const char *description)
{
    char dir[PATH_MAX], json[512];
    make_image_dir(root, name, dir, sizeof(dir));
    snprintf(json, sizeof(json),
             "{\"schema\":1,\"name\":\"%s\",\"description\":\"%s\",\"boot\":\"firmware\","
             "\"disk\":\"disk.qcow2\"}",
             name, description);
    write_file(dir, "manifest.json", json);
}

static void test_catalog_good_and_bad(void **state)
{
    Fixture *f = *state;
    write_manifest(f->root, "tiny", "good");
    char dir[PATH_MAX];
    make_image_dir(f->root, "broken", dir, sizeof(dir));
    write_file(dir, "manifest.json", "{\"schema\":1,\"name\":\"broken\",\"boot\":\"bios\"}");
    make_image_dir(f->root, "nomanifest", dir, sizeof(dir));

    ImageCatalog *catalog = NULL;
    assert_int_equal(image_catalog_load(f->root, &catalog), 0);
    assert_int_equal(image_catalog_count(catalog), 1);
    const Image *image = image_catalog_get(catalog, 0);
    assert_string_equal(image->name, "tiny");
    assert_string_equal(image->description, "good");
    assert_ptr_equal(image_catalog_find(catalog, "tiny"), image);
    assert_null(image_catalog_find(catalog, "broken"));
    assert_null(image_catalog_find(catalog, "nomanifest"));
    assert_null(image_catalog_get(catalog, 1));
    image_catalog_free(catalog);
}

static void test_catalog_sorted(void **state)
{
    Fixture *f = *state;
    static const char *const names[] = {"zeta", "alpha", "mid-1.0", "beta_2", "0early"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        write_manifest(f->root, names[i], names[i]);
    write_manifest(f->root, ".hidden", "dot entries are skipped");
    write_file(f->root, "stray-file", "not a directory");
    char dir[PATH_MAX];
    make_image_dir(f->root, "Upper", dir, sizeof(dir)); /* invalid image name */
    write_file(dir, "manifest.json",
               "{\"schema\":1,\"name\":\"Upper\",\"boot\":\"firmware\",\"disk\":\"disk.qcow2\"}");

    ImageCatalog *catalog = NULL;
    assert_int_equal(image_catalog_load(f->root, &catalog), 0);
    /* tiny (from the fixture) has no manifest, so it is skipped too. */
    static const char *const sorted[] = {"0early", "alpha", "beta_2", "mid-1.0", "zeta"};
    assert_int_equal(image_catalog_count(catalog), ARRAY_SIZE(sorted));
    for (size_t i = 0; i < ARRAY_SIZE(sorted); i++) {
        const Image *image = image_catalog_get(catalog, i);
        assert_string_equal(image->name, sorted[i]);
        assert_string_equal(image->description, sorted[i]);
        assert_ptr_equal(image_catalog_find(catalog, sorted[i]), image);
        /* The disk path is absolute and inside the image's own directory. */
        char disk[PATH_MAX * 2];
        snprintf(disk, sizeof(disk), "%s/%s/disk.qcow2", f->root, sorted[i]);
        assert_string_equal(image->disk_path, disk);
    }
    assert_null(image_catalog_find(catalog, ".hidden"));
    assert_null(image_catalog_find(catalog, "Upper"));
    assert_null(image_catalog_find(catalog, "nope"));
    assert_null(image_catalog_find(catalog, NULL));
    image_catalog_free(catalog);
}

/* Paths in the catalog are absolute even when the images dir was given relative to the cwd. */
static void test_catalog_relative_dir(void **state)
{
    Fixture *f = *state;
    write_manifest(f->root, "alpha", "x");
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(f->root), 0);

    ImageCatalog *catalog = NULL;
    int r = image_catalog_load(".", &catalog);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(r, 0);
    assert_int_equal(image_catalog_count(catalog), 1);
    assert_true(image_catalog_get(catalog, 0)->disk_path[0] == '/');
    image_catalog_free(catalog);
}

static void test_catalog_missing_dir(void **state)
{
    Fixture *f = *state;
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof(missing), "%s/does-not-exist", f->root);
    ImageCatalog *catalog = NULL;
    assert_int_equal(image_catalog_load(missing, &catalog), 0);
    assert_non_null(catalog);
    assert_int_equal(image_catalog_count(catalog), 0);
    assert_null(image_catalog_get(catalog, 0));
    assert_null(image_catalog_find(catalog, "tiny"));
    image_catalog_free(catalog);

    /* A file where the dir should be is a real error, not an empty catalog. */
    char file[PATH_MAX + 16];
    snprintf(file, sizeof(file), "%s/tiny/disk.qcow2", f->root);
    catalog = NULL;
    assert_int_equal(image_catalog_load(file, &catalog), -ENOTDIR);
    assert_null(catalog);
}

static void test_free_null(void **state)
{
    image_free(NULL);
    image_catalog_free(NULL);
    assert_int_equal(image_catalog_count(NULL), 0);
    assert_null(image_catalog_get(NULL, 0));
    assert_null(image_catalog_find(NULL, "tiny"));
}

/* The real tool on the real recipe: builds tiny, which then loads; a second run does nothing. */
static void test_build_image_tiny(void **state)
{
    Fixture *f = *state;
    char images_dir[PATH_MAX + 16];
    snprintf(images_dir, sizeof(images_dir), "%s/store", f->root);
    /* QEMU's user must be able to reach the store; the tool warns otherwise. */
    assert_int_equal(chmod(f->root, 0755), 0);

    char *argv[] = {LEGBA_SOURCE_DIR "/tools/build-image", "tiny", "--images-dir", images_dir,
                    NULL};
    char *output = NULL;
    int status = util_spawn(argv, &output);
    if (status != 0)
        fail_msg("build-image exited with %d:\n%s", status, output ? output : "");
    assert_non_null(strstr(output, "build-image: "));
    assert_null(strstr(output, "up to date"));
    free(output);

    ImageCatalog *catalog = NULL;
    assert_int_equal(image_catalog_load(images_dir, &catalog), 0);
    assert_int_equal(image_catalog_count(catalog), 1);
    const Image *tiny = image_catalog_find(catalog, "tiny");
    assert_non_null(tiny);
    assert_int_equal(tiny->boot, IMAGE_BOOT_FIRMWARE);
    assert_string_equal(tiny->disk_format, "qcow2");

    /* A real qcow2 that the QEMU user can read. */
    struct stat st;
    assert_int_equal(stat(tiny->disk_path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0644);
    char *disk = NULL;
    size_t len = 0;
    assert_int_equal(util_read_file(tiny->disk_path, 16 * 1024 * 1024, &disk, &len), 0);
    assert_true(len >= 4);
    assert_memory_equal(disk, "QFI\xfb", 4);
    free(disk);
    image_catalog_free(catalog);

    /* No temp or set-aside dirs remain beside it. */
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/tiny", images_dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);

    output = NULL;
    status = util_spawn(argv, &output);
    assert_int_equal(status, 0);
    assert_non_null(output);
    assert_non_null(strstr(output, "image tiny is up to date (recipe "));
    free(output);

    char *bad_argv[] = {LEGBA_SOURCE_DIR "/tools/build-image", "../tiny", "--images-dir",
                        images_dir, NULL};
    output = NULL;
    assert_int_not_equal(util_spawn(bad_argv, &output), 0);
    assert_non_null(strstr(output, "not a valid image name"));
    free(output);

    char *unknown_argv[] = {LEGBA_SOURCE_DIR "/tools/build-image", "no-such-recipe", "--images-dir",
                            images_dir, NULL};
    output = NULL;
    assert_int_not_equal(util_spawn(unknown_argv, &output), 0);
    assert_non_null(strstr(output, "available recipes"));
    assert_non_null(strstr(output, "  tiny"));
    free(output);
}

int main(void)
{
    /* The catalog warns about every image it skips; the tests cause many on purpose. */
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_is_valid),
        cmocka_unit_test_setup_teardown(test_parse_firmware, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_disk_bus_and_firmware, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_kernel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_kernel_minimal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_ignores_unknown_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_trailing_slash_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_oversized, setup, teardown),
        cmocka_unit_test(test_parse_relative_dir),
        cmocka_unit_test_setup_teardown(test_catalog_good_and_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_catalog_sorted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_catalog_relative_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_catalog_missing_dir, setup, teardown),
        cmocka_unit_test(test_free_null),
        cmocka_unit_test_setup_teardown(test_build_image_tiny, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
