/* Tier 1 tests of per-instance disks: real qemu-img, real files, and the delete guard. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
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

#include "disk.h"
#include "log.h"
#include "util.h"

#define UUID "0f8fad5b-d9cb-469f-a165-70867728950e"

typedef struct {
    char root[64];          /* a fresh temp dir, removed after the test */
    char base[PATH_MAX];    /* root/base.qcow2, a real 16 MiB qcow2 */
    char overlay[PATH_MAX]; /* root/overlay.qcow2, not created */
} Fixture;

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/legba-test-disk-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->base, sizeof(f->base), "%s/base.qcow2", f->root);
    snprintf(f->overlay, sizeof(f->overlay), "%s/overlay.qcow2", f->root);
    char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", f->base, "16M", NULL};
    if (util_spawn(argv, NULL) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads the backing file name straight from the qcow2 header, independent of qemu-img. */
static void assert_qcow2_backing(const char *path, const char *backing)
{
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(util_read_file(path, 16 * 1024 * 1024, &data, &len), 0);
    const uint8_t *h = (const uint8_t *)data;
    assert_true(len >= 72);
    assert_memory_equal(h, "QFI\xfb", 4);
    uint64_t offset = be64(h + 8);
    uint32_t size = be32(h + 16);
    assert_int_equal(size, strlen(backing));
    assert_true(offset + size <= len);
    assert_memory_equal(data + offset, backing, size);
    free(data);
}

/* What qemu-img itself reports about the overlay's backing chain. */
static void assert_info_backing(const char *path, const char *backing, const char *format)
{
    char *argv[] = {"qemu-img", "info", "--output=json", "-U", (char *)path, NULL};
    char *output = NULL;
    assert_int_equal(util_spawn(argv, &output), 0);
    cJSON *info = cJSON_Parse(output);
    if (!info)
        fail_msg("qemu-img info said: %s", output);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(info, "backing-filename");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(info, "backing-filename-format");
    const cJSON *own = cJSON_GetObjectItemCaseSensitive(info, "format");
    assert_true(cJSON_IsString(name) && cJSON_IsString(fmt) && cJSON_IsString(own));
    assert_string_equal(name->valuestring, backing);
    assert_string_equal(fmt->valuestring, format);
    assert_string_equal(own->valuestring, "qcow2");
    cJSON_Delete(info);
    free(output);
}

static void test_overlay_path(void **state)
{
    char *path = disk_overlay_path("/var/lib/legba", UUID);
    assert_string_equal(path, "/var/lib/legba/instances/" UUID ".qcow2");
    assert_true(disk_path_is_ours("/var/lib/legba", path));
    free(path);

    /* A trailing slash names the same dir and must give the same path the guard accepts. */
    path = disk_overlay_path("/var/lib/legba//", UUID);
    assert_string_equal(path, "/var/lib/legba/instances/" UUID ".qcow2");
    assert_true(disk_path_is_ours("/var/lib/legba/", path));
    free(path);
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    return st.st_mode & 07777;
}

static void test_prepare_dir(void **state)
{
    Fixture *f = *state;
    char data[PATH_MAX + 16], instances[PATH_MAX + 32];
    snprintf(data, sizeof(data), "%s/a/b/data", f->root);
    snprintf(instances, sizeof(instances), "%s/instances", data);

    /* Even under a strict umask both dirs end up searchable by the QEMU user. */
    mode_t old_umask = umask(077);
    int r = disk_prepare_dir(data);
    umask(old_umask);
    assert_int_equal(r, 0);
    assert_int_equal(mode_of(data) & 0711, 0711);
    assert_int_equal(mode_of(instances) & 0711, 0711);
    /* Others may search, not list: no instance ids leak through a directory listing. */
    assert_int_equal(mode_of(instances) & 0044, 0);

    /* Existing dirs too narrow are widened; wider ones are left alone. Idempotent. */
    assert_int_equal(chmod(instances, 0700), 0);
    assert_int_equal(chmod(data, 0755), 0);
    assert_int_equal(disk_prepare_dir(data), 0);
    assert_int_equal(mode_of(instances), 0711);
    assert_int_equal(mode_of(data), 0755);
    assert_int_equal(disk_prepare_dir(data), 0);
}

static void test_prepare_dir_not_a_dir(void **state)
{
    Fixture *f = *state;
    char data[PATH_MAX + 16], instances[PATH_MAX + 32];
    snprintf(data, sizeof(data), "%s/data", f->root);
    snprintf(instances, sizeof(instances), "%s/instances", data);
    assert_int_equal(mkdir(data, 0711), 0);

    int fd = open(instances, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(disk_prepare_dir(data), -ENOTDIR);

    /* A symlink there could send overlays anywhere; it is refused as well. */
    assert_int_equal(unlink(instances), 0);
    assert_int_equal(symlink(f->root, instances), 0);
    assert_int_equal(disk_prepare_dir(data), -ENOTDIR);

    assert_int_equal(disk_prepare_dir(f->base), -ENOTDIR);
    assert_int_equal(disk_prepare_dir(""), -EINVAL);
    assert_int_equal(disk_prepare_dir(NULL), -EINVAL);
}

static void test_overlay_create_qcow2(void **state)
{
    Fixture *f = *state;
    char *error = NULL;
    assert_int_equal(disk_overlay_create(f->base, "qcow2", f->overlay, &error), 0);
    assert_null(error);

    struct stat st;
    assert_int_equal(lstat(f->overlay, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_qcow2_backing(f->overlay, f->base);
    assert_info_backing(f->overlay, f->base, "qcow2");

    /* A second create never overwrites: the instance's data in it would be lost. */
    assert_int_equal(disk_overlay_create(f->base, "qcow2", f->overlay, &error), -EEXIST);
    assert_non_null(error);
    assert_non_null(strstr(error, f->overlay));
    free(error);
    struct stat again;
    assert_int_equal(lstat(f->overlay, &again), 0);
    assert_int_equal(again.st_ino, st.st_ino);
    assert_int_equal(again.st_size, st.st_size);
    assert_qcow2_backing(f->overlay, f->base);
}

static void test_overlay_create_raw(void **state)
{
    Fixture *f = *state;
    char raw[PATH_MAX + 16];
    snprintf(raw, sizeof(raw), "%s/base.raw", f->root);
    int fd = open(raw, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1024 * 1024), 0);
    close(fd);

    assert_int_equal(disk_overlay_create(raw, "raw", f->overlay, NULL), 0);
    assert_qcow2_backing(f->overlay, raw);
    assert_info_backing(f->overlay, raw, "raw");
}

static void test_overlay_bad_format(void **state)
{
    Fixture *f = *state;
    static const char *const formats[] = {"vmdk", "", "QCOW2", "qcow2 ", "raw,file.x=1"};
    for (size_t i = 0; i < ARRAY_SIZE(formats); i++) {
        char *error = NULL;
        assert_int_equal(disk_overlay_create(f->base, formats[i], f->overlay, &error), -EINVAL);
        assert_non_null(error);
        free(error);
        assert_false(exists(f->overlay));
    }
    assert_int_equal(disk_overlay_create(f->base, NULL, f->overlay, NULL), -EINVAL);
    assert_int_equal(disk_overlay_create(NULL, "qcow2", f->overlay, NULL), -EINVAL);
    assert_int_equal(disk_overlay_create(f->base, "qcow2", NULL, NULL), -EINVAL);
    assert_false(exists(f->overlay));
}

static void test_overlay_relative_paths(void **state)
{
    Fixture *f = *state;
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(f->root), 0);
    int r1 = disk_overlay_create("base.qcow2", "qcow2", f->overlay, NULL);
    int r2 = disk_overlay_create(f->base, "qcow2", "overlay.qcow2", NULL);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(r1, -EINVAL);
    assert_int_equal(r2, -EINVAL);
    assert_false(exists(f->overlay));
}

static void test_overlay_missing_base(void **state)
{
    Fixture *f = *state;
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof(missing), "%s/missing.qcow2", f->root);

    char *error = NULL;
    int r = disk_overlay_create(missing, "qcow2", f->overlay, &error);
    assert_true(r < 0);
    /* qemu-img's own words, naming the base it could not open, on one line. */
    assert_non_null(error);
    assert_non_null(strstr(error, missing));
    assert_true(error[strlen(error) - 1] != '\n');
    free(error);
    assert_false(exists(f->overlay));

    /* Without an error pointer nothing is left either. */
    assert_true(disk_overlay_create(missing, "qcow2", f->overlay, NULL) < 0);
    assert_false(exists(f->overlay));
}

/* Anything already at the overlay path, even a dangling symlink, is refused and left alone. */
static void test_overlay_existing_symlink(void **state)
{
    Fixture *f = *state;
    char target[PATH_MAX + 16];
    snprintf(target, sizeof(target), "%s/elsewhere", f->root);
    assert_int_equal(symlink(target, f->overlay), 0);

    assert_int_equal(disk_overlay_create(f->base, "qcow2", f->overlay, NULL), -EEXIST);
    assert_false(exists(target));
    struct stat st;
    assert_int_equal(lstat(f->overlay, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
}

static void test_overlay_remove(void **state)
{
    Fixture *f = *state;
    assert_int_equal(disk_overlay_create(f->base, "qcow2", f->overlay, NULL), 0);
    assert_true(exists(f->overlay));
    assert_int_equal(disk_overlay_remove(f->overlay), 0);
    assert_false(exists(f->overlay));
    assert_int_equal(disk_overlay_remove(f->overlay), 0);
    /* The base is untouched. */
    assert_true(exists(f->base));

    assert_int_equal(disk_overlay_remove(NULL), -EINVAL);
    assert_int_equal(disk_overlay_remove(f->root), -EISDIR);
    assert_true(exists(f->root));
}

static void test_path_is_ours(void **state)
{
    static const char *const ours[] = {
        "/data/instances/" UUID ".qcow2",
        "/data/instances/00000000-0000-0000-0000-000000000000.qcow2",
    };
    static const char *const not_ours[] = {
        "",
        "/data/instances/",
        "/data/instances/.qcow2",
        "/data/" UUID ".qcow2",
        "/data/instances/../" UUID ".qcow2",
        "/data/instances/../x.qcow2",
        "/data/instances/../../etc/passwd",
        "/data/instances/./" UUID ".qcow2",
        "/data/instances//" UUID ".qcow2",
        "/data//instances/" UUID ".qcow2",
        "/data/instancesX/" UUID ".qcow2",
        "/data/instances/sub/" UUID ".qcow2",
        "/dataX/instances/" UUID ".qcow2",
        "/dat/instances/" UUID ".qcow2",
        "/other/instances/" UUID ".qcow2",
        "data/instances/" UUID ".qcow2",
        "/data/instances/" UUID ".qcow2.bak",
        "/data/instances/" UUID ".qcow",
        "/data/instances/" UUID ".raw",
        "/data/instances/" UUID,
        "/data/instances/" UUID "/.qcow2",
        "/data/instances/x" UUID ".qcow2",
        "/data/instances/0F8FAD5B-D9CB-469F-A165-70867728950E.qcow2",
        "/data/instances/0f8fad5bd9cb469fa16570867728950e.qcow2",
        "/data/instances/0f8fad5b-d9cb-469f-a165-70867728950g.qcow2",
        "/data/instances/0f8fad5b_d9cb_469f_a165_70867728950e.qcow2",
        "/data/instances/base.qcow2",
        "/data/images/tiny/disk.qcow2",
        "/data/instances/" UUID ".qcow2/",
        "/data/instances/" UUID ".qcow2\n",
    };
    for (size_t i = 0; i < ARRAY_SIZE(ours); i++)
        assert_int_equal(disk_path_is_ours("/data", ours[i]), 1);
    for (size_t i = 0; i < ARRAY_SIZE(not_ours); i++)
        if (disk_path_is_ours("/data", not_ours[i]) != 0)
            fail_msg("accepted '%s'", not_ours[i]);

    /* The data dir is matched as a whole component, with or without a trailing slash. */
    assert_int_equal(disk_path_is_ours("/data/", "/data/instances/" UUID ".qcow2"), 1);
    assert_int_equal(disk_path_is_ours("/data/instances", "/data/instances/" UUID ".qcow2"), 0);
    assert_int_equal(disk_path_is_ours("/", "/instances/" UUID ".qcow2"), 1);
    assert_int_equal(disk_path_is_ours("data", "data/instances/" UUID ".qcow2"), 0);
    assert_int_equal(disk_path_is_ours("", "/instances/" UUID ".qcow2"), 0);
    assert_int_equal(disk_path_is_ours(NULL, "/data/instances/" UUID ".qcow2"), 0);
    assert_int_equal(disk_path_is_ours("/data", NULL), 0);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overlay_path),
        cmocka_unit_test_setup_teardown(test_prepare_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_dir_not_a_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_create_qcow2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_create_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_bad_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_relative_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_missing_base, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_existing_symlink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_remove, setup, teardown),
        cmocka_unit_test(test_path_is_ours),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
