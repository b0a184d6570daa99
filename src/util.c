#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

void closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}

void util_format_iso8601(int64_t epoch, char ret[UTIL_ISO8601_LEN])
{
    time_t t = (time_t)epoch;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ret, UTIL_ISO8601_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int util_parse_iso8601(const char *text, int64_t *ret_epoch)
{
    struct tm tm = {0};
    if (strlen(text) != UTIL_ISO8601_LEN - 1)
        return -EINVAL;
    const char *end = strptime(text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end != '\0')
        return -EINVAL;
    *ret_epoch = (int64_t)timegm(&tm);
    return 0;
}

int util_random_bytes(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void util_hex_encode(const uint8_t *data, size_t len, char *ret)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        ret[2 * i] = digits[data[i] >> 4];
        ret[2 * i + 1] = digits[data[i] & 0xf];
    }
    ret[2 * len] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int util_hex_decode(const char *hex, uint8_t *ret, size_t len)
{
    if (strlen(hex) != 2 * len)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        ret[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

bool util_timingsafe_equal(const void *a, const void *b, size_t len)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t diff = 0;
    for (size_t i = 0; i < len; i++)
        diff |= x[i] ^ y[i];
    return diff == 0;
}

/* Output of a helper program is kept only up to this size; the rest is drained. */
#define SPAWN_OUTPUT_MAX (64 * 1024)

int util_spawn(char *const argv[], char **ret_output)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -errno;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);

    pid_t pid;
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (r != 0) {
        close(pipefd[0]);
        return -r;
    }

    char *out = malloc(SPAWN_OUTPUT_MAX + 1);
    size_t used = 0;
    for (;;) {
        char chunk[4096];
        ssize_t n = read(pipefd[0], chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t keep = out ? SPAWN_OUTPUT_MAX - used : 0;
        if ((size_t)n < keep)
            keep = (size_t)n;
        if (keep > 0) {
            memcpy(out + used, chunk, keep);
            used += keep;
        }
    }
    close(pipefd[0]);
    if (out)
        out[used] = '\0';

    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            free(out);
            return -errno;
        }
    }
    if (ret_output)
        *ret_output = out;
    else
        free(out);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int util_mkdir_p(const char *dir, unsigned mode)
{
    _cleanup_free_ char *copy = strdup(dir);
    if (!copy)
        return -ENOMEM;
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, mode) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(copy, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int util_read_file(const char *path, size_t max, char **ret_data, size_t *ret_len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    if ((size_t)st.st_size > max)
        return -EFBIG;
    _cleanup_free_ char *data = malloc((size_t)st.st_size + 1);
    if (!data)
        return -ENOMEM;
    size_t len = 0;
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, data + len, (size_t)st.st_size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    data[len] = '\0';
    *ret_data = TAKE_PTR(data);
    if (ret_len)
        *ret_len = len;
    return 0;
}

int util_set_error(char **ret_error, int r, const char *fmt, ...)
{
    if (!ret_error)
        return r;
    char *msg;
    va_list ap;
    va_start(ap, fmt);
    *ret_error = vasprintf(&msg, fmt, ap) < 0 ? NULL : msg;
    va_end(ap);
    return r;
}

int util_strdup(const char *s, char **ret)
{
    char *copy = strdup(s);
    if (!copy)
        return -ENOMEM;
    *ret = copy;
    return 0;
}

void util_quote_untrusted(const char *text, size_t max, char *out)
{
    size_t i;
    for (i = 0; text[i] && i < max; i++) {
        unsigned char ch = (unsigned char)text[i];
        out[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (text[i]) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
}
