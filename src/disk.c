#include "disk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define DISK_INSTANCES_DIR "instances"
#define DISK_OVERLAY_SUFFIX ".qcow2"
/*
 * QEMU runs as libvirt-qemu and must search both directories to open an
 * overlay; it need not list them, so other users cannot see instance ids.
 */
#define DISK_DIR_MODE 0711

/* "/data/" and "/data" name the same directory and must give the same overlay path. */
static size_t data_dir_len(const char *data_dir)
{
    size_t len = strlen(data_dir);
    while (len > 0 && data_dir[len - 1] == '/')
        len--;
    return len;
}

static const char *errno_text(int e)
{
    const char *text = strerrordesc_np(e);
    return text ? text : "unknown error";
}

char *disk_overlay_path(const char *data_dir, const char *instance_uuid)
{
    char *path;
    if (asprintf(&path, "%.*s/" DISK_INSTANCES_DIR "/%s" DISK_OVERLAY_SUFFIX,
                 (int)data_dir_len(data_dir), data_dir, instance_uuid) < 0)
        return NULL;
    return path;
}

/* Widens a directory's mode to at least DISK_DIR_MODE; never narrows what the operator set. */
static int dir_make_searchable(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if ((st.st_mode & DISK_DIR_MODE) == DISK_DIR_MODE)
        return 0;
    if (fchmod(fd, (st.st_mode & 07777) | DISK_DIR_MODE) < 0)
        return -errno;
    return 0;
}

/*
 * A directory above data_dir that others cannot search hides the disks
 * from QEMU however open the data dir is (the classic case: a data dir
 * under /root). We may not change those, so we say so once at start.
 */
static void warn_unsearchable_parents(const char *data_dir)
{
    _cleanup_free_ char *dir = realpath(data_dir, NULL);
    if (!dir)
        return;
    for (char *slash = strrchr(dir, '/'); slash; slash = strrchr(dir, '/')) {
        if (slash == dir)
            slash[1] = '\0';
        else
            *slash = '\0';
        struct stat st;
        if (stat(dir, &st) == 0 && !(st.st_mode & S_IXOTH))
            log_warn("disk: %s is not searchable by other users (mode %04o); QEMU, running as "
                     "another user, may be unable to open the disks under %s",
                     dir, (unsigned)(st.st_mode & 07777), data_dir);
        if (slash == dir)
            break;
    }
}

int disk_prepare_dir(const char *data_dir)
{
    if (!data_dir || !data_dir[0])
        return -EINVAL;

    int r = util_mkdir_p(data_dir, DISK_DIR_MODE);
    if (r < 0)
        return r;
    /* The data dir may be a symlink the operator placed; what is inside is ours, so no links. */
    _cleanup_close_ int data_fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (data_fd < 0)
        return -errno;
    r = dir_make_searchable(data_fd);
    if (r < 0)
        return r;

    if (mkdirat(data_fd, DISK_INSTANCES_DIR, DISK_DIR_MODE) < 0 && errno != EEXIST)
        return -errno;
    _cleanup_close_ int instances_fd =
        openat(data_fd, DISK_INSTANCES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (instances_fd < 0)
        return errno == ELOOP ? -ENOTDIR : -errno;
    r = dir_make_searchable(instances_fd);
    if (r < 0)
        return r;

    warn_unsearchable_parents(data_dir);
    return 0;
}

/* Drops trailing newlines so the message fits into one log line or JSON string. */
static void trim_trailing_space(char *text)
{
    size_t len = strlen(text);
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
}

int disk_overlay_create(const char *base, const char *base_format, const char *overlay,
                        char **ret_error)
{
    if (!base || !base_format || !overlay)
        return -EINVAL;
    /* The overlay records -F, so qemu never probes the base; only formats we mean are allowed. */
    if (strcmp(base_format, "qcow2") != 0 && strcmp(base_format, "raw") != 0)
        return util_set_error(ret_error, -EINVAL, "base disk format must be qcow2 or raw");
    /*
     * Absolute paths only: qemu-img reads a relative backing path against
     * the overlay's directory, and a name with ':' before any '/' as a
     * protocol ("nbd:…").
     */
    if (base[0] != '/' || overlay[0] != '/')
        return util_set_error(ret_error, -EINVAL, "disk paths must be absolute");

    /*
     * qemu-img create silently replaces an existing file, so the name is
     * claimed first with O_EXCL (which also refuses any symlink there);
     * qemu-img then fills in the file we own.
     */
    int fd = open(overlay, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        int r = -errno;
        return util_set_error(ret_error, r, "cannot create %s: %s", overlay, errno_text(-r));
    }
    close(fd);

    char *argv[] = {
        "qemu-img",   "create",        "-q", "-f", "qcow2", "-F", (char *)base_format, "-b",
        (char *)base, (char *)overlay, NULL};
    _cleanup_free_ char *output = NULL;
    int status = util_spawn(argv, &output);
    if (status == 0)
        return 0;

    unlink(overlay);
    if (status < 0)
        return util_set_error(ret_error, status, "cannot run qemu-img: %s", errno_text(-status));
    if (output)
        trim_trailing_space(output);
    if (output && output[0])
        return util_set_error(ret_error, -EIO, "%s", output);
    return util_set_error(ret_error, -EIO, "qemu-img create failed with exit status %d", status);
}

int disk_overlay_remove(const char *overlay)
{
    if (!overlay)
        return -EINVAL;
    if (unlink(overlay) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

/*
 * Guards every delete of a disk named in a domain's XML, which a crash,
 * an operator or another tool may have changed: only the exact form
 * disk_overlay_path() produces passes, with the uuid in canonical form,
 * so no "..", other directory or other file name can get through.
 */
int disk_path_is_ours(const char *data_dir, const char *path)
{
    static const char instances[] = "/" DISK_INSTANCES_DIR "/";
    static const char suffix[] = DISK_OVERLAY_SUFFIX;

    if (!data_dir || !path || data_dir[0] != '/' || path[0] != '/')
        return 0;
    size_t len = data_dir_len(data_dir);
    if (strncmp(path, data_dir, len) != 0)
        return 0;
    const char *rest = path + len;
    if (strncmp(rest, instances, sizeof(instances) - 1) != 0)
        return 0;
    rest += sizeof(instances) - 1;
    if (strlen(rest) != UUID_STR_LEN - 1 + sizeof(suffix) - 1 ||
        strcmp(rest + UUID_STR_LEN - 1, suffix) != 0)
        return 0;

    char uuid[UUID_STR_LEN], canonical[UUID_STR_LEN];
    memcpy(uuid, rest, UUID_STR_LEN - 1);
    uuid[UUID_STR_LEN - 1] = '\0';
    if (uuid_normalize(uuid, canonical) < 0 || strcmp(uuid, canonical) != 0)
        return 0;
    return 1;
}
