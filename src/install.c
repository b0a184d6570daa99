#include "install.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define INSTALL_ID_FILE "installation-id"

static int read_id(const char *path, char ret_id[UUID_STR_LEN])
{
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = util_read_file(path, 128, &text, &len);
    if (r < 0)
        return r;
    if (len > 0 && text[len - 1] == '\n')
        text[len - 1] = '\0';
    return uuid_normalize(text, ret_id) < 0 ? -EBADMSG : 0;
}

int install_id_load(const char *data_dir, char ret_id[UUID_STR_LEN])
{
    _cleanup_free_ char *path = NULL, *tmp = NULL;
    if (asprintf(&path, "%s/" INSTALL_ID_FILE, data_dir) < 0)
        return -ENOMEM;
    int r = read_id(path, ret_id);
    if (r != -ENOENT)
        return r;

    /* First start: write it whole under a temporary name, then link it in place. */
    char id[UUID_STR_LEN];
    r = uuid_generate(id);
    if (r < 0)
        return r;
    if (asprintf(&tmp, "%s.%d", path, (int)getpid()) < 0)
        return -ENOMEM;
    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if (dprintf(fd, "%s\n", id) < 0 || fsync(fd) < 0) {
        r = -errno;
        unlink(tmp);
        return r;
    }
    /* link() fails if another process won the race; its id is then the one. */
    r = link(tmp, path) < 0 ? -errno : 0;
    unlink(tmp);
    if (r < 0 && r != -EEXIST)
        return r;
    return read_id(path, ret_id);
}
