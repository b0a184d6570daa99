#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ws.h"

#ifndef LEGBA_SOURCE_DIR
#error "LEGBA_SOURCE_DIR must be defined (tests/CMakeLists.txt)"
#endif
#ifndef LEGBA_BINARY_DIR
#error "LEGBA_BINARY_DIR must be defined (tests/CMakeLists.txt)"
#endif

/* Largest response or child output kept; a test never needs more. */
#define HARNESS_OUTPUT_MAX (16u * 1024 * 1024)
#define HARNESS_LOG_MAX (64u * 1024 * 1024)

const char *harness_source_dir(void)
{
    return LEGBA_SOURCE_DIR;
}

const char *harness_binary_dir(void)
{
    return LEGBA_BINARY_DIR;
}

long long harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining_ms(long long deadline)
{
    long long left = deadline - harness_now_ms();
    return left <= 0 ? 0 : left > 1000 ? 1000 : (int)left;
}

/* A growable byte buffer, always NUL-terminated once anything was appended. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} Buffer;

static int buffer_append(Buffer *buf, const void *data, size_t len)
{
    if (buf->len + len + 1 > HARNESS_OUTPUT_MAX)
        return -EFBIG;
    if (buf->len + len + 1 > buf->cap) {
        size_t cap = buf->cap ? buf->cap : 4096;
        while (cap < buf->len + len + 1)
            cap *= 2;
        char *grown = realloc(buf->data, cap);
        if (!grown)
            return -ENOMEM;
        buf->data = grown;
        buf->cap = cap;
    }
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
    return 0;
}

static int buffer_printf(Buffer *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buffer_printf(Buffer *buf, const char *fmt, ...)
{
    char *text;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -ENOMEM;
    int r = buffer_append(buf, text, (size_t)n);
    free(text);
    return r;
}

/* ---- files and directories ---- */

int harness_tempdir(const char *prefix, char **ret_path)
{
    char *path;
    if (asprintf(&path, "/tmp/%sXXXXXX", prefix ? prefix : "legba-") < 0)
        return -ENOMEM;
    if (!mkdtemp(path)) {
        int r = -errno;
        fprintf(stderr, "harness: mkdtemp %s: %s\n", path, strerror(-r));
        free(path);
        return r;
    }
    if (chmod(path, 0711) < 0) {
        int r = -errno;
        fprintf(stderr, "harness: chmod %s: %s\n", path, strerror(-r));
        rmdir(path);
        free(path);
        return r;
    }
    *ret_path = path;
    return 0;
}

static int rmtree_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    int r = type == FTW_DP ? rmdir(path) : unlink(path);
    if (r < 0 && errno != ENOENT)
        fprintf(stderr, "harness: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

int harness_rmtree(const char *path)
{
    if (!path)
        return 0;
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (nftw(path, rmtree_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
        return -errno;
    return lstat(path, &st) < 0 && errno == ENOENT ? 0 : -ENOTEMPTY;
}

void harness_tempdir_remove(const char *path)
{
    const char *keep = getenv("LEGBA_IT_KEEP");
    if (!path)
        return;
    if (keep && keep[0] && strcmp(keep, "0") != 0)
        fprintf(stderr, "harness: kept %s (LEGBA_IT_KEEP)\n", path);
    else
        harness_rmtree(path);
}

bool harness_file_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int harness_count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    size_t slen = suffix ? strlen(suffix) : 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t len = strlen(e->d_name);
        if (len >= slen && strcmp(e->d_name + len - slen, suffix ? suffix : "") == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Reads a whole file (bounded) into a NUL-terminated buffer. */
static int read_file(const char *path, size_t max, Buffer *ret)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    Buffer buf = {0};
    char chunk[8192];
    int r = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            break;
        }
        if (n == 0)
            break;
        if (buf.len + (size_t)n > max) {
            r = -EFBIG;
            break;
        }
        r = buffer_append(&buf, chunk, (size_t)n);
        if (r < 0)
            break;
    }
    close(fd);
    if (r < 0) {
        free(buf.data);
        return r;
    }
    if (!buf.data && buffer_append(&buf, "", 0) < 0)
        return -ENOMEM;
    *ret = buf;
    return 0;
}

bool harness_log_contains(const char *path, const char *needle)
{
    Buffer buf;
    if (read_file(path, HARNESS_LOG_MAX, &buf) < 0)
        return false;
    bool found = memmem(buf.data, buf.len, needle, strlen(needle)) != NULL;
    free(buf.data);
    return found;
}

bool harness_log_wait(const char *path, const char *needle, int timeout_ms)
{
    for (int waited = 0;; waited += 10) {
        if (harness_log_contains(path, needle))
            return true;
        if (waited >= timeout_ms)
            return false;
        usleep(10 * 1000);
    }
}

void harness_dump_file(const char *path)
{
    Buffer buf;
    int r = read_file(path, HARNESS_LOG_MAX, &buf);
    if (r < 0) {
        fprintf(stderr, "harness: cannot read %s: %s\n", path, strerror(-r));
        return;
    }
    fprintf(stderr, "----- %s -----\n%s%s----- end of %s -----\n", path, buf.data,
            buf.len && buf.data[buf.len - 1] != '\n' ? "\n" : "", path);
    free(buf.data);
}

/* ---- child processes ---- */

/* 0..255 for an exit, 128 + n for a signal, as a shell reports it. */
static int exit_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

/*
 * In the child between fork and exec only async-signal-safe calls are
 * allowed (the test may have threads); on failure it exits 127.
 */
static void child_exec(const char *const argv[], int in_fd, int out_fd, int err_fd)
{
    if (dup2(in_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
        (err_fd >= 0 && dup2(err_fd, STDERR_FILENO) < 0))
        _exit(127);
    /* The test may block signals for its threads; the child starts clean. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
}

/* Waits for pid until deadline, then kills it; returns exit_status(). */
static int wait_until(pid_t pid, long long deadline)
{
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return exit_status(status);
        if (r < 0 && errno != EINTR)
            return -errno;
        if (harness_now_ms() >= deadline) {
            fprintf(stderr, "harness: pid %d still running after its deadline; killing it\n",
                    (int)pid);
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            return exit_status(status);
        }
        usleep(10 * 1000);
    }
}

/* harness_run_timeout(), and with merge_stderr the child's stderr captured with its stdout. */
static int run_child(const char *const argv[], char **ret_stdout, int timeout_s, bool merge_stderr)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -errno;
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) {
        int r = -errno;
        close(pipefd[0]);
        close(pipefd[1]);
        return r;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close(pipefd[0]);
        close(pipefd[1]);
        close(null_fd);
        return r;
    }
    if (pid == 0)
        child_exec(argv, null_fd, pipefd[1], merge_stderr ? pipefd[1] : -1);
    close(pipefd[1]);
    close(null_fd);

    long long deadline = harness_now_ms() + timeout_s * 1000LL;
    Buffer out = {0};
    int r = 0;
    for (;;) {
        struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
        int n = poll(&p, 1, remaining_ms(deadline));
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 && harness_now_ms() >= deadline) {
            fprintf(stderr, "harness: %s: no end of output after %d s\n", argv[0], timeout_s);
            break;
        }
        if (n <= 0)
            continue;
        char chunk[8192];
        ssize_t got = read(pipefd[0], chunk, sizeof(chunk));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        if (r == 0)
            r = buffer_append(&out, chunk, (size_t)got);
    }
    close(pipefd[0]);
    int status = wait_until(pid, deadline);
    if (status == 127)
        fprintf(stderr, "harness: %s: could not be run (exit status 127)\n", argv[0]);
    if (r < 0 || status < 0) {
        free(out.data);
        return r < 0 ? r : status;
    }
    if (ret_stdout) {
        if (!out.data && buffer_append(&out, "", 0) < 0)
            return -ENOMEM;
        *ret_stdout = out.data;
    } else {
        free(out.data);
    }
    return status;
}

int harness_run(const char *const argv[], char **ret_stdout)
{
    return run_child(argv, ret_stdout, HARNESS_IO_TIMEOUT_S, false);
}

int harness_run_timeout(const char *const argv[], char **ret_stdout, int timeout_s)
{
    return run_child(argv, ret_stdout, timeout_s, false);
}

int harness_run_merged(const char *const argv[], char **ret_output)
{
    return run_child(argv, ret_output, HARNESS_IO_TIMEOUT_S, true);
}

/* The binary to run: $env_name when set, else the build tree's own. */
static char *binary_path(const char *env_name, const char *name)
{
    const char *env = getenv(env_name);
    char *path;
    if (env && env[0])
        return strdup(env);
    if (asprintf(&path, "%s/%s", LEGBA_BINARY_DIR, name) < 0)
        return NULL;
    return path;
}

int harness_legbactl(const char *data_dir, const char *const args[], cJSON **ret_json)
{
    size_t n = 0;
    while (args && args[n])
        n++;
    const char **argv = calloc(n + 4, sizeof(*argv));
    char *ctl = binary_path("LEGBA_LEGBACTL", "legbactl");
    if (!argv || !ctl) {
        free(argv);
        free(ctl);
        return -ENOMEM;
    }
    argv[0] = ctl;
    argv[1] = "--data-dir";
    argv[2] = data_dir;
    for (size_t i = 0; i < n; i++)
        argv[3 + i] = args[i];

    char *out = NULL;
    int status = harness_run(argv, &out);
    if (status >= 0 && ret_json) {
        *ret_json = cJSON_Parse(out);
        if (!*ret_json && status == 0)
            fprintf(stderr, "harness: legbactl %s: stdout is not JSON: %s\n", n ? args[0] : "",
                    out);
    }
    free(out);
    free(argv);
    free(ctl);
    return status;
}

int harness_org_create(const char *data_dir, const char *name, HarnessOrg *ret)
{
    cJSON *json = NULL;
    int status = harness_legbactl(data_dir, HARNESS_LIST("org", "create", name), &json);
    const char *uuid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(json, "org_uuid"));
    const char *token = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(json, "token"));
    const char *token_id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(json, "token_id"));
    if (status != 0 || !uuid || !token || !token_id) {
        fprintf(stderr,
                "harness: legbactl org create %s: exit status %d, no org_uuid/token/token_id\n",
                name, status);
        cJSON_Delete(json);
        return -EPROTO;
    }
    snprintf(ret->uuid, sizeof(ret->uuid), "%s", uuid);
    snprintf(ret->token_id, sizeof(ret->token_id), "%s", token_id);
    snprintf(ret->auth, sizeof(ret->auth), "Authorization: Bearer %s", token);
    cJSON_Delete(json);
    return 0;
}

int harness_org_network(const char *data_dir, const char *org_uuid, const char *mode)
{
    cJSON *json = NULL;
    int status =
        harness_legbactl(data_dir, HARNESS_LIST("org", "network", "--org", org_uuid, mode), &json);
    const cJSON *network = cJSON_GetObjectItemCaseSensitive(json, "network");
    bool is_default = strcmp(mode, "default") == 0;
    bool ok = status == 0 &&
              (is_default ? cJSON_IsNull(network)
                          : cJSON_IsString(network) && strcmp(network->valuestring, mode) == 0);
    cJSON_Delete(json);
    if (!ok) {
        fprintf(stderr, "harness: legbactl org network %s: exit status %d, network not %s\n", mode,
                status, is_default ? "null" : mode);
        return -EPROTO;
    }
    return 0;
}

int harness_pool_wait(const char *data_dir, const char *image, const char *size, const char *mode,
                      int want, int seconds)
{
    long long deadline = harness_now_ms() + seconds * 1000LL;
    for (;;) {
        cJSON *json = NULL;
        int status = harness_legbactl(data_dir, HARNESS_LIST("pool", "list"), &json);
        if (status != 0) {
            cJSON_Delete(json);
            fprintf(stderr, "harness: legbactl pool list: exit status %d\n", status);
            return status < 0 ? status : -EPROTO;
        }
        int ready = 0, booting = 0;
        const cJSON *group;
        cJSON_ArrayForEach(group, cJSON_GetObjectItem(json, "pool"))
        {
            const char *g_image = harness_json_string(group, "image"),
                       *g_size = harness_json_string(group, "size"),
                       *g_mode = harness_json_string(group, "mode");
            if (g_image && g_size && g_mode && strcmp(g_image, image) == 0 &&
                strcmp(g_size, size) == 0 && strcmp(g_mode, mode) == 0) {
                ready = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(group, "ready"));
                booting = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(group, "booting"));
            }
        }
        cJSON_Delete(json);
        if (ready == want && booting == 0)
            return 0;
        if (harness_now_ms() > deadline) {
            fprintf(stderr, "harness: pool %s %s %s: %d ready, %d booting after %d s (%d wanted)\n",
                    image, size, mode, ready, booting, seconds, want);
            return -ETIMEDOUT;
        }
        usleep(200 * 1000);
    }
}

pid_t harness_qemu_pid(const char *uuid)
{
    char path[128], buf[32] = {0};
    snprintf(path, sizeof(path), "/run/libvirt/qemu/legba-%s.pid", uuid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = '\0';
    fclose(f);
    return (pid_t)strtol(buf, NULL, 10);
}

char *harness_process_cmdline(pid_t pid, size_t *ret_len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    size_t cap = 1 << 20;
    char *args = malloc(cap + 1);
    size_t n = args ? fread(args, 1, cap, f) : 0;
    fclose(f);
    if (n == 0 || n >= cap) {
        free(args);
        return NULL;
    }
    args[n] = '\0';
    *ret_len = n;
    return args;
}

bool harness_test_wanted(const char *env_name, const char *name)
{
    const char *only = getenv(env_name);
    if (!only || !only[0])
        return true;
    size_t n = strlen(name);
    for (const char *p = only; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, name, n) == 0)
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

int harness_build_image(const char *images_dir, const char *name)
{
    char *tool;
    if (asprintf(&tool, "%s/tools/build-image", LEGBA_SOURCE_DIR) < 0)
        return -ENOMEM;
    char *out = NULL;
    int status = harness_run_timeout(HARNESS_LIST(tool, name, "--images-dir", images_dir), &out,
                                     HARNESS_BUILD_TIMEOUT_S);
    if (status != 0)
        fprintf(stderr, "harness: build-image %s failed (%d):\n%s\n", name, status, out ? out : "");
    free(out);
    free(tool);
    return status;
}

int harness_tls_cert(const char *dir, char **ret_cert, char **ret_key)
{
    char *cert = NULL, *key = NULL, *out = NULL;
    if (asprintf(&cert, "%s/cert.pem", dir) < 0)
        return -ENOMEM;
    if (asprintf(&key, "%s/key.pem", dir) < 0) {
        free(cert);
        return -ENOMEM;
    }
    /* openssl's progress dots go to the captured output, shown only when it fails. */
    int status =
        harness_run_merged(HARNESS_LIST("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                                        "-keyout", key, "-out", cert, "-days", "2", "-subj",
                                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
                           &out);
    if (status != 0) {
        fprintf(stderr, "harness: openssl req failed (%d)%s\n%s\n", status,
                status == 127 ? "; tools/setup installs the openssl package" : ":", out ? out : "");
        free(out);
        free(cert);
        free(key);
        return status < 0 ? status : -EIO;
    }
    free(out);
    *ret_cert = cert;
    *ret_key = key;
    return 0;
}

/* ---- legbad ---- */

void harness_legbad_free(HarnessLegbad *legbad)
{
    if (!legbad)
        return;
    if (legbad->pid > 0)
        harness_legbad_kill(legbad);
    free(legbad->log_path);
    free(legbad);
}

int harness_legbad_start(const HarnessLegbadOptions *options, HarnessLegbad **ret_legbad)
{
    if (!options || !options->dir || !options->data_dir || !options->images_dir)
        return -EINVAL;
    HarnessLegbad *legbad = calloc(1, sizeof(*legbad));
    if (!legbad)
        return -ENOMEM;
    char *legbad_bin = binary_path("LEGBA_LEGBAD", "legbad");
    char *listen = NULL, *domains = NULL;
    const char **argv = NULL;
    int log_fd = -1, null_fd = -1, r;

    legbad->port = options->port;
    if (!legbad->port && (r = harness_free_port(&legbad->port)) < 0)
        goto fail;
    r = -ENOMEM;
    if (!legbad_bin ||
        asprintf(&legbad->log_path, "%s/%s", options->dir,
                 options->log_name ? options->log_name : "legbad.log") < 0 ||
        asprintf(&listen, "127.0.0.1:%u", legbad->port) < 0 ||
        (!options->domains_dir && asprintf(&domains, "%s/domains", LEGBA_SOURCE_DIR) < 0))
        goto fail;

    size_t n_extra = 0;
    while (options->extra_args && options->extra_args[n_extra])
        n_extra++;
    argv = calloc(12 + n_extra, sizeof(*argv));
    if (!argv)
        goto fail;
    size_t n = 0;
    argv[n++] = legbad_bin;
    argv[n++] = "--listen";
    argv[n++] = listen;
    argv[n++] = "--data-dir";
    argv[n++] = options->data_dir;
    argv[n++] = "--images-dir";
    argv[n++] = options->images_dir;
    argv[n++] = "--domains-dir";
    argv[n++] = options->domains_dir ? options->domains_dir : domains;
    argv[n++] = "--libvirt-uri";
    argv[n++] = options->libvirt_uri ? options->libvirt_uri : "test:///default";
    for (size_t i = 0; i < n_extra; i++)
        argv[n++] = options->extra_args[i];

    log_fd = open(legbad->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log_fd < 0 || null_fd < 0) {
        r = -errno;
        fprintf(stderr, "harness: cannot open %s: %s\n", legbad->log_path, strerror(-r));
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        r = -errno;
        goto fail;
    }
    if (pid == 0)
        child_exec(argv, null_fd, log_fd, log_fd);
    legbad->pid = pid;
    close(log_fd);
    close(null_fd);
    log_fd = null_fd = -1;

    long long deadline = harness_now_ms() + HARNESS_START_TIMEOUT_S * 1000LL;
    for (;;) {
        int status;
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            legbad->pid = 0;
            legbad->exit_status = exit_status(status);
            fprintf(stderr, "harness: legbad exited during start-up with status %d\n",
                    exit_status(status));
            r = -ECHILD;
            break;
        }
        if (harness_port_accepts(legbad->port)) {
            r = 0;
            break;
        }
        if (harness_now_ms() >= deadline) {
            fprintf(stderr, "harness: legbad did not accept connections on port %u within %d s\n",
                    legbad->port, HARNESS_START_TIMEOUT_S);
            r = -ETIMEDOUT;
            break;
        }
        usleep(20 * 1000);
    }
    if (r < 0) {
        harness_dump_file(legbad->log_path);
        goto fail;
    }
    free(listen);
    free(domains);
    free(argv);
    free(legbad_bin);
    *ret_legbad = legbad;
    return 0;

fail:
    if (log_fd >= 0)
        close(log_fd);
    if (null_fd >= 0)
        close(null_fd);
    harness_legbad_free(legbad);
    free(listen);
    free(domains);
    free(argv);
    free(legbad_bin);
    return r;
}

bool harness_legbad_exited(HarnessLegbad *legbad)
{
    if (!legbad)
        return true;
    if (legbad->pid <= 0)
        return true;
    int status;
    if (waitpid(legbad->pid, &status, WNOHANG) != legbad->pid)
        return false;
    legbad->pid = 0;
    legbad->exit_status = exit_status(status);
    return true;
}

static int legbad_signal(HarnessLegbad *legbad, int sig)
{
    if (!legbad)
        return -ECHILD;
    if (legbad->pid <= 0)
        return legbad->exit_status;
    if (kill(legbad->pid, sig) < 0 && errno != ESRCH)
        return -errno;
    int status = wait_until(legbad->pid, harness_now_ms() + HARNESS_IO_TIMEOUT_S * 1000LL);
    legbad->pid = 0;
    legbad->exit_status = status;
    return status;
}

int harness_legbad_stop(HarnessLegbad *legbad)
{
    return legbad_signal(legbad, SIGTERM);
}

int harness_legbad_kill(HarnessLegbad *legbad)
{
    return legbad_signal(legbad, SIGKILL);
}

int harness_legbad_stop_free(HarnessLegbad **legbad)
{
    if (!legbad || !*legbad)
        return 0;
    int status = harness_legbad_stop(*legbad);
    if (status != 0) {
        fprintf(stderr, "harness: legbad exited with status %d; its log:\n", status);
        harness_dump_file((*legbad)->log_path);
    }
    harness_legbad_free(*legbad);
    *legbad = NULL;
    return status;
}

/* ---- HTTP ---- */

bool harness_port_accepts(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

int harness_free_port(uint16_t *ret_port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    int r = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        r = -errno;
    close(fd);
    if (r < 0)
        return r;
    *ret_port = ntohs(sa.sin_port);
    return 0;
}

void harness_response_done(HarnessResponse *response)
{
    if (!response)
        return;
    for (size_t i = 0; i < response->n_headers; i++) {
        free(response->header_names[i]);
        free(response->header_values[i]);
    }
    free(response->header_names);
    free(response->header_values);
    free(response->body);
    cJSON_Delete(response->json);
    *response = (HarnessResponse){0};
}

const char *harness_json_string(const cJSON *object, const char *name)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(object, name));
}

const char *harness_header(const HarnessResponse *response, const char *name)
{
    for (size_t i = 0; response && i < response->n_headers; i++)
        if (strcasecmp(response->header_names[i], name) == 0)
            return response->header_values[i];
    return NULL;
}

static const char *error_field(const HarnessResponse *response, const char *field)
{
    if (!response || !response->json)
        return NULL;
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(response->json, "error");
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(error, field);
    return cJSON_IsString(value) ? value->valuestring : NULL;
}

const char *harness_error_code(const HarnessResponse *response)
{
    return error_field(response, "code");
}

const char *harness_error_message(const HarnessResponse *response)
{
    return error_field(response, "message");
}

/* Where the header block ends (just past the blank line), or NULL while incomplete. */
static const char *header_end(const Buffer *in)
{
    const char *end = in->data ? memmem(in->data, in->len, "\r\n\r\n", 4) : NULL;
    return end ? end + 4 : NULL;
}

/* True once in holds a whole response according to its Content-Length. */
static bool response_complete(const Buffer *in)
{
    const char *end = header_end(in);
    if (!end)
        return false;
    /* Case-insensitive search for the length within the header block only. */
    const char *p = in->data;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
            unsigned long long n = strtoull(p + 15, NULL, 10);
            return (size_t)(in->data + in->len - end) >= n;
        }
        p = eol + 2;
    }
    return false;
}

static char *strip_dup(const char *start, const char *end)
{
    while (start < end && (*start == ' ' || *start == '\t'))
        start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return strndup(start, (size_t)(end - start));
}

static int parse_response(const Buffer *in, HarnessResponse *ret)
{
    const char *end = header_end(in);
    if (!end) {
        fprintf(stderr, "harness: response has no complete header (%zu bytes received)\n", in->len);
        return -EPROTO;
    }
    HarnessResponse resp = {0};
    int status;
    if (sscanf(in->data, "HTTP/1.%*1[01] %3d", &status) != 1) {
        fprintf(stderr, "harness: bad status line: %.80s\n", in->data);
        return -EPROTO;
    }
    resp.status = status;

    const char *p = memmem(in->data, (size_t)(end - in->data), "\r\n", 2) + 2;
    size_t cap = 0;
    while (p < end - 2) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon) {
            harness_response_done(&resp);
            fprintf(stderr, "harness: bad header line: %.*s\n", (int)(eol - p), p);
            return -EPROTO;
        }
        if (resp.n_headers == cap) {
            cap = cap ? 2 * cap : 16;
            char **names = realloc(resp.header_names, cap * sizeof(char *));
            if (names)
                resp.header_names = names;
            char **values = realloc(resp.header_values, cap * sizeof(char *));
            if (values)
                resp.header_values = values;
            if (!names || !values) {
                harness_response_done(&resp);
                return -ENOMEM;
            }
        }
        resp.header_names[resp.n_headers] = strip_dup(p, colon);
        resp.header_values[resp.n_headers] = strip_dup(colon + 1, eol);
        resp.n_headers++;
        p = eol + 2;
    }

    size_t body_len = (size_t)(in->data + in->len - end);
    const char *length = harness_header(&resp, "Content-Length");
    if (length && strtoull(length, NULL, 10) < body_len)
        body_len = strtoull(length, NULL, 10);
    resp.body = malloc(body_len + 1);
    if (!resp.body) {
        harness_response_done(&resp);
        return -ENOMEM;
    }
    memcpy(resp.body, end, body_len);
    resp.body[body_len] = '\0';
    resp.body_len = body_len;
    resp.json = body_len ? cJSON_ParseWithLength(resp.body, body_len) : NULL;
    *ret = resp;
    return 0;
}

/* ---- connections: plain TCP, or TLS over it ---- */

/*
 * A client connection to 127.0.0.1. Under TLS every byte goes through the
 * GnuTLS session, which may hold received bytes the socket no longer shows
 * as readable (conn_pending).
 */
typedef struct {
    int fd;
    gnutls_session_t tls;                   /* NULL: plain TCP */
    gnutls_certificate_credentials_t creds; /* the one CA the server's certificate must chain to */
} Conn;

#define CONN_NONE ((Conn){.fd = -1})

static void conn_close(Conn *conn)
{
    if (conn->tls)
        gnutls_deinit(conn->tls);
    if (conn->creds)
        gnutls_certificate_free_credentials(conn->creds);
    if (conn->fd >= 0)
        close(conn->fd);
    *conn = CONN_NONE;
}

/* Until fd is ready for events: 0, -ETIMEDOUT at the deadline, or -errno. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, remaining_ms(deadline));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
        if (harness_now_ms() >= deadline)
            return -ETIMEDOUT;
    }
}

static int tcp_connect(uint16_t port, long long deadline, int *ret_fd)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno != EINPROGRESS) {
            r = -errno;
        } else {
            int err = 0;
            socklen_t len = sizeof(err);
            r = wait_fd(fd, POLLOUT, deadline);
            if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                r = -errno;
            else if (r == 0 && err)
                r = -err;
        }
    }
    if (r < 0) {
        fprintf(stderr, "harness: connect to port %u: %s\n", port, strerror(-r));
        close(fd);
        return r;
    }
    *ret_fd = fd;
    return 0;
}

/*
 * The client side of a TLS handshake on conn->fd that trusts only the
 * certificates in ca_file and wants one valid for IP 127.0.0.1, as a
 * browser would check it: -EKEYREJECTED (the reason on stderr) otherwise.
 */
static int tls_start(Conn *conn, const char *ca_file, long long deadline)
{
    int r = gnutls_certificate_allocate_credentials(&conn->creds);
    if (r < 0) {
        conn->creds = NULL;
        return -ENOMEM;
    }
    r = gnutls_certificate_set_x509_trust_file(conn->creds, ca_file, GNUTLS_X509_FMT_PEM);
    if (r <= 0) {
        fprintf(stderr, "harness: %s: no CA certificate there (%s)\n", ca_file,
                r < 0 ? gnutls_strerror(r) : "none found");
        return -EINVAL;
    }
    if (gnutls_init(&conn->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL) < 0) {
        conn->tls = NULL;
        return -ENOMEM;
    }
    if (gnutls_set_default_priority(conn->tls) < 0 ||
        gnutls_credentials_set(conn->tls, GNUTLS_CRD_CERTIFICATE, conn->creds) < 0)
        return -ENOMEM;
    /* Checked against the certificate's IP addresses; no SNI, which may not carry one. */
    gnutls_session_set_verify_cert(conn->tls, "127.0.0.1", 0);
    gnutls_transport_set_int(conn->tls, conn->fd);
    gnutls_handshake_set_timeout(conn->tls, GNUTLS_INDEFINITE_TIMEOUT); /* ours is the deadline */
    for (;;) {
        r = gnutls_handshake(conn->tls);
        if (r == GNUTLS_E_SUCCESS)
            return 0;
        if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
            gnutls_datum_t why = {0};
            gnutls_certificate_verification_status_print(
                gnutls_session_get_verify_cert_status(conn->tls), GNUTLS_CRT_X509, &why, 0);
            fprintf(stderr, "harness: TLS: the server's certificate is not trusted by %s: %s\n",
                    ca_file, why.data ? (const char *)why.data : "");
            gnutls_free(why.data);
            return -EKEYREJECTED;
        }
        if (gnutls_error_is_fatal(r)) {
            fprintf(stderr, "harness: TLS handshake: %s\n", gnutls_strerror(r));
            return r == GNUTLS_E_PREMATURE_TERMINATION || r == GNUTLS_E_PULL_ERROR ||
                           r == GNUTLS_E_PUSH_ERROR
                       ? -ECONNRESET
                       : -EPROTO;
        }
        r = wait_fd(conn->fd, gnutls_record_get_direction(conn->tls) ? POLLOUT : POLLIN, deadline);
        if (r < 0) {
            fprintf(stderr, "harness: TLS handshake: %s\n", strerror(-r));
            return r;
        }
    }
}

/* Connects to 127.0.0.1:port; with a ca_file, then TLS as tls_start() checks it. */
static int conn_open(uint16_t port, const char *ca_file, long long deadline, Conn *ret)
{
    Conn conn = CONN_NONE;
    int r = tcp_connect(port, deadline, &conn.fd);
    if (r == 0 && ca_file)
        r = tls_start(&conn, ca_file, deadline);
    if (r < 0) {
        conn_close(&conn);
        return r;
    }
    *ret = conn;
    return 0;
}

/*
 * One send: the bytes taken, -EAGAIN when none could be (under TLS the
 * same data must then be offered again), or -errno.
 */
static ssize_t conn_send(Conn *conn, const void *data, size_t len)
{
    if (conn->tls) {
        ssize_t n = gnutls_record_send(conn->tls, data, len);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            return -EAGAIN;
        return n < 0 ? -EPIPE : n;
    }
    ssize_t n = send(conn->fd, data, len, MSG_NOSIGNAL);
    return n >= 0 ? n : errno == EINTR ? -EAGAIN : -errno;
}

/*
 * One receive: the bytes read, 0 at EOF (a reset, or a TLS peer that
 * closed without close_notify, counts as one), -EAGAIN when nothing is
 * there yet, or -errno.
 */
static ssize_t conn_recv(Conn *conn, void *buf, size_t len)
{
    if (conn->tls) {
        ssize_t n = gnutls_record_recv(conn->tls, buf, len);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_PREMATURE_TERMINATION || n == GNUTLS_E_PULL_ERROR)
            return 0;
        if (!gnutls_error_is_fatal((int)n))
            return -EAGAIN;
        fprintf(stderr, "harness: TLS receive: %s\n", gnutls_strerror((int)n));
        return -EPROTO;
    }
    ssize_t n = recv(conn->fd, buf, len, 0);
    if (n < 0 && errno == ECONNRESET)
        return 0;
    return n >= 0 ? n : errno == EINTR ? -EAGAIN : -errno;
}

/* Whether conn_recv has bytes to give without the socket being readable. */
static bool conn_pending(Conn *conn)
{
    return conn->tls && gnutls_record_check_pending(conn->tls) > 0;
}

static int send_all(Conn *conn, const void *data, size_t len, long long deadline)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = conn_send(conn, p, len);
        if (w == -EAGAIN) {
            int r = wait_fd(conn->fd, POLLOUT, deadline);
            if (r < 0)
                return r;
            continue;
        }
        if (w < 0)
            return (int)w;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads what is there into in (waiting at most until deadline): 1 read, 0 EOF, -errno. */
static int recv_some(Conn *conn, Buffer *in, long long deadline)
{
    for (;;) {
        char chunk[16384];
        ssize_t got = conn_recv(conn, chunk, sizeof(chunk));
        if (got == -EAGAIN) {
            int r = wait_fd(conn->fd, POLLIN, deadline);
            if (r < 0)
                return r;
            continue;
        }
        if (got <= 0)
            return (int)got;
        int r = buffer_append(in, chunk, (size_t)got);
        return r < 0 ? r : 1;
    }
}

/*
 * Sends out and reads the answer at the same time: a server may answer
 * and close before it has read everything (an early 413), and what it
 * said must still be read. Stops at EOF, at a complete response, or at
 * the deadline. With a ca_file, all of it over TLS.
 */
static int exchange(uint16_t port, const char *ca_file, const Buffer *out, HarnessResponse *ret)
{
    long long deadline = harness_now_ms() + HARNESS_IO_TIMEOUT_S * 1000LL;
    Buffer in = {0};
    size_t sent = 0;
    bool sending = true;
    Conn conn = CONN_NONE;
    int r = conn_open(port, ca_file, deadline, &conn);
    if (r < 0)
        goto out;
    for (;;) {
        if (harness_now_ms() >= deadline) {
            fprintf(stderr, "harness: no complete response on port %u within %d s\n", port,
                    HARNESS_IO_TIMEOUT_S);
            r = -ETIMEDOUT;
            goto out;
        }
        struct pollfd p = {.fd = conn.fd, .events = POLLIN | (sending ? POLLOUT : 0)};
        int n = conn_pending(&conn) ? 1 : poll(&p, 1, remaining_ms(deadline));
        if (n < 0 && errno != EINTR) {
            r = -errno;
            goto out;
        }
        if (n <= 0)
            continue;
        if (conn_pending(&conn))
            p.revents |= POLLIN;
        if (sending && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = conn_send(&conn, out->data + sent, out->len - sent);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && w != -EAGAIN)
                sending = false; /* the server stopped reading; its answer may be waiting */
            if (sent == out->len)
                sending = false;
        }
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            char chunk[16384];
            ssize_t got = conn_recv(&conn, chunk, sizeof(chunk));
            if (got == -EAGAIN)
                continue;
            if (got < 0 && in.len == 0) {
                r = (int)got;
                fprintf(stderr, "harness: recv on port %u: %s\n", port, strerror(-r));
                goto out;
            }
            if (got <= 0)
                break;
            r = buffer_append(&in, chunk, (size_t)got);
            if (r < 0)
                goto out;
            if (response_complete(&in))
                break;
        }
    }
    if (in.len == 0) {
        fprintf(stderr, "harness: connection on port %u closed without a response\n", port);
        r = -ECONNRESET;
        goto out;
    }
    r = parse_response(&in, ret);
out:
    conn_close(&conn);
    free(in.data);
    return r;
}

int harness_http_raw(uint16_t port, const void *data, size_t len, HarnessResponse *ret)
{
    Buffer out = {0};
    int r = buffer_append(&out, data, len);
    if (r == 0)
        r = exchange(port, NULL, &out, ret);
    free(out.data);
    return r;
}

/* harness_http_ex(), over TLS when there is a ca_file. */
static int http_request(uint16_t port, const char *ca_file, const char *method, const char *path,
                        const char *const headers[], const void *body, size_t body_len,
                        long long content_length, HarnessResponse *ret)
{
    Buffer out = {0};
    int r = buffer_printf(&out, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n",
                          method, path, port);
    for (size_t i = 0; r == 0 && headers && headers[i]; i++)
        r = buffer_printf(&out, "%s\r\n", headers[i]);
    if (r == 0 && content_length == HARNESS_CL_AUTO && (body_len > 0 || body))
        r = buffer_printf(&out, "Content-Length: %zu\r\n", body_len);
    else if (r == 0 && content_length >= 0)
        r = buffer_printf(&out, "Content-Length: %lld\r\n", content_length);
    else if (r == 0 && content_length == HARNESS_CL_CHUNKED)
        r = buffer_printf(&out, "Transfer-Encoding: chunked\r\n");
    if (r == 0)
        r = buffer_append(&out, "\r\n", 2);

    if (content_length == HARNESS_CL_CHUNKED) {
        const char *p = body;
        for (size_t done = 0; r == 0 && done < body_len;) {
            size_t n = body_len - done < 4096 ? body_len - done : 4096;
            r = buffer_printf(&out, "%zx\r\n", n);
            if (r == 0)
                r = buffer_append(&out, p + done, n);
            if (r == 0)
                r = buffer_append(&out, "\r\n", 2);
            done += n;
        }
        if (r == 0)
            r = buffer_append(&out, "0\r\n\r\n", 5);
    } else if (r == 0 && body_len > 0) {
        r = buffer_append(&out, body, body_len);
    }
    if (r == 0)
        r = exchange(port, ca_file, &out, ret);
    free(out.data);
    return r;
}

int harness_http_ex(uint16_t port, const char *method, const char *path,
                    const char *const headers[], const void *body, size_t body_len,
                    long long content_length, HarnessResponse *ret)
{
    return http_request(port, NULL, method, path, headers, body, body_len, content_length, ret);
}

int harness_http_tls(uint16_t port, const char *ca_file, const char *method, const char *path,
                     const char *const headers[], const void *body, size_t body_len,
                     HarnessResponse *ret)
{
    return http_request(port, ca_file, method, path, headers, body, body_len, HARNESS_CL_AUTO, ret);
}

int harness_http(uint16_t port, const char *method, const char *path, const char *const headers[],
                 const void *body, size_t body_len, HarnessResponse *ret)
{
    return harness_http_ex(port, method, path, headers, body, body_len, HARNESS_CL_AUTO, ret);
}

/* ---- WebSocket ---- */

struct HarnessWs {
    Conn conn;
    Buffer in;          /* received, not yet parsed */
    Buffer message;     /* fragments of the data message being reassembled */
    int message_opcode; /* 0 when none is under way */
    bool eof;
};

/* The value of header `name` in a "Name: value" list, or NULL. */
static const char *list_header(const char *const headers[], const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; headers && headers[i]; i++)
        if (strncasecmp(headers[i], name, len) == 0 && headers[i][len] == ':')
            return headers[i] + len + 1 + strspn(headers[i] + len + 1, " \t");
    return NULL;
}

/* Whether the comma-separated list value holds token (case-insensitive). */
static bool has_token(const char *value, const char *token)
{
    size_t len = strlen(token);
    while (value && *value) {
        value += strspn(value, " \t,");
        size_t n = strcspn(value, ",");
        size_t t = n;
        while (t > 0 && (value[t - 1] == ' ' || value[t - 1] == '\t'))
            t--;
        if (t == len && strncasecmp(value, token, len) == 0)
            return true;
        value += n;
    }
    return false;
}

void harness_ws_free(HarnessWs *ws)
{
    if (!ws)
        return;
    conn_close(&ws->conn);
    free(ws->in.data);
    free(ws->message.data);
    free(ws);
}

/* Checks a 101 answer; the reason goes to stderr. */
static int check_switching(const HarnessResponse *resp, const char *key)
{
    char want[WS_ACCEPT_KEY_LEN];
    int r = ws_accept_key(key, want);
    if (r == -EINVAL) {
        fprintf(stderr, "harness: 101 to Sec-WebSocket-Key '%s', which is not 16 bytes of base64\n",
                key);
        return -EPROTO;
    }
    if (r < 0)
        return r;
    const char *upgrade = harness_header(resp, "Upgrade");
    const char *connection = harness_header(resp, "Connection");
    const char *accept = harness_header(resp, "Sec-WebSocket-Accept");
    if (!upgrade || strcasecmp(upgrade, "websocket") != 0) {
        fprintf(stderr, "harness: 101 with Upgrade '%s' (websocket expected)\n",
                upgrade ? upgrade : "(none)");
        return -EPROTO;
    }
    if (!has_token(connection, "upgrade")) {
        fprintf(stderr, "harness: 101 with Connection '%s' (Upgrade expected)\n",
                connection ? connection : "(none)");
        return -EPROTO;
    }
    if (!accept || strcmp(accept, want) != 0) {
        fprintf(stderr, "harness: 101 with Sec-WebSocket-Accept '%s' ('%s' expected)\n",
                accept ? accept : "(none)", want);
        return -EPROTO;
    }
    return 0;
}

/* harness_ws_connect(), over TLS when there is a ca_file. */
static int ws_connect(uint16_t port, const char *ca_file, const char *path,
                      const char *const headers[], HarnessWs **ret_ws, HarnessResponse *ret_refusal)
{
    long long deadline = harness_now_ms() + HARNESS_IO_TIMEOUT_S * 1000LL;
    uint8_t nonce[16];
    char key_buf[32];
    gnutls_datum_t raw = {nonce, sizeof(nonce)}, encoded = {0};
    if (getrandom(nonce, sizeof(nonce), 0) != sizeof(nonce))
        return -EIO;
    if (gnutls_base64_encode2(&raw, &encoded) < 0)
        return -ENOMEM;
    snprintf(key_buf, sizeof(key_buf), "%.*s", (int)encoded.size, encoded.data);
    gnutls_free(encoded.data);
    const char *key = list_header(headers, "Sec-WebSocket-Key");
    if (!key)
        key = key_buf;

    Buffer out = {0}, in = {0};
    HarnessWs *ws = NULL;
    HarnessResponse resp = {0};
    Conn conn = CONN_NONE;
    int r = buffer_printf(&out, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n", path, port);
    for (size_t i = 0; r == 0 && headers && headers[i]; i++)
        r = buffer_printf(&out, "%s\r\n", headers[i]);
    if (r == 0 && !list_header(headers, "Upgrade"))
        r = buffer_printf(&out, "Upgrade: websocket\r\n");
    if (r == 0 && !list_header(headers, "Connection"))
        r = buffer_printf(&out, "Connection: Upgrade\r\n");
    if (r == 0 && !list_header(headers, "Sec-WebSocket-Key"))
        r = buffer_printf(&out, "Sec-WebSocket-Key: %s\r\n", key);
    if (r == 0 && !list_header(headers, "Sec-WebSocket-Version"))
        r = buffer_printf(&out, "Sec-WebSocket-Version: 13\r\n");
    if (r == 0)
        r = buffer_append(&out, "\r\n", 2);
    if (r == 0)
        r = conn_open(port, ca_file, deadline, &conn);
    if (r == 0)
        r = send_all(&conn, out.data, out.len, deadline);
    if (r < 0)
        goto out;

    /* The header block; a refusal then runs to its Content-Length or EOF. */
    bool eof = false;
    while (!header_end(&in) && !eof) {
        r = recv_some(&conn, &in, deadline);
        if (r < 0)
            goto out;
        eof = r == 0;
    }
    if (!header_end(&in)) {
        fprintf(stderr, "harness: upgrade on port %u: closed after %zu bytes without an answer\n",
                port, in.len);
        r = -ECONNRESET;
        goto out;
    }
    bool switching = strncmp(in.data, "HTTP/1.1 101", 12) == 0;
    while (!switching && !eof && !response_complete(&in)) {
        r = recv_some(&conn, &in, deadline);
        if (r < 0)
            goto out;
        eof = r == 0;
    }
    r = parse_response(&in, &resp);
    if (r < 0)
        goto out;
    if (resp.status != 101) {
        if (ret_refusal)
            *ret_refusal = resp;
        else
            harness_response_done(&resp);
        resp = (HarnessResponse){0};
        r = -ECONNREFUSED;
        goto out;
    }
    r = check_switching(&resp, key);
    if (r < 0)
        goto out;
    r = -ENOMEM;
    ws = calloc(1, sizeof(*ws));
    if (!ws)
        goto out;
    ws->conn = conn;
    ws->eof = eof;
    conn = CONN_NONE;
    /* What followed the 101 is already WebSocket frames. */
    const char *end = header_end(&in);
    r = buffer_append(&ws->in, end, (size_t)(in.data + in.len - end));
    if (r < 0)
        goto out;
    *ret_ws = ws;
    ws = NULL;
out:
    conn_close(&conn);
    harness_ws_free(ws);
    harness_response_done(&resp);
    free(out.data);
    free(in.data);
    return r;
}

int harness_ws_connect(uint16_t port, const char *path, const char *const headers[],
                       HarnessWs **ret_ws, HarnessResponse *ret_refusal)
{
    return ws_connect(port, NULL, path, headers, ret_ws, ret_refusal);
}

int harness_ws_send_raw(HarnessWs *ws, const void *data, size_t len)
{
    if (!ws)
        return -EINVAL;
    return send_all(&ws->conn, data, len, harness_now_ms() + HARNESS_IO_TIMEOUT_S * 1000LL);
}

int harness_ws_send_frame(HarnessWs *ws, uint8_t byte0, uint64_t declared_len, const void *data,
                          size_t len)
{
    if (!ws || len > declared_len)
        return -EINVAL;
    uint8_t mask[4];
    if (getrandom(mask, sizeof(mask), 0) != sizeof(mask))
        return -EIO;
    size_t header_len = 2;
    uint8_t *frame = malloc(14 + len);
    if (!frame)
        return -ENOMEM;
    frame[0] = byte0;
    if (declared_len < 126) {
        frame[1] = 0x80 | (uint8_t)declared_len;
    } else if (declared_len <= 0xffff) {
        frame[1] = 0x80 | 126;
        frame[2] = (uint8_t)(declared_len >> 8);
        frame[3] = (uint8_t)declared_len;
        header_len = 4;
    } else {
        frame[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            frame[2 + i] = (uint8_t)(declared_len >> (56 - 8 * i));
        header_len = 10;
    }
    memcpy(frame + header_len, mask, 4);
    header_len += 4;
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        frame[header_len + i] = p[i] ^ mask[i % 4];
    int r = harness_ws_send_raw(ws, frame, header_len + len);
    free(frame);
    return r;
}

int harness_ws_send(HarnessWs *ws, int opcode, const void *data, size_t len)
{
    return harness_ws_send_frame(ws, (uint8_t)(0x80 | (opcode & 0x0f)), len, data, len);
}

void harness_ws_message_done(HarnessWsMessage *message)
{
    if (!message)
        return;
    free(message->data);
    *message = (HarnessWsMessage){0};
}

/*
 * Takes one whole frame off the front of ws->in: 1 with its parts copied
 * out, 0 when it is not all there yet, -EPROTO or -EFBIG.
 */
static int ws_next_frame(HarnessWs *ws, bool *ret_fin, int *ret_opcode, Buffer *ret_payload)
{
    const uint8_t *p = (const uint8_t *)ws->in.data;
    size_t have = ws->in.len;
    if (have < 2)
        return 0;
    if (p[1] & 0x80) {
        fprintf(stderr, "harness: the server sent a masked frame\n");
        return -EPROTO;
    }
    if (p[0] & 0x70) {
        fprintf(stderr, "harness: the server set an RSV bit (first byte 0x%02x)\n", p[0]);
        return -EPROTO;
    }
    size_t header = 2;
    uint64_t len = p[1] & 0x7f;
    if (len == 126) {
        if (have < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        header = 4;
    } else if (len == 127) {
        if (have < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        header = 10;
    }
    if (len > HARNESS_OUTPUT_MAX)
        return -EFBIG;
    if (have < header + len)
        return 0;
    Buffer payload = {0};
    if (buffer_append(&payload, p + header, (size_t)len) < 0)
        return -ENOMEM;
    *ret_fin = p[0] & 0x80;
    *ret_opcode = p[0] & 0x0f;
    *ret_payload = payload;
    memmove(ws->in.data, ws->in.data + header + len, have - header - (size_t)len);
    ws->in.len -= header + (size_t)len;
    if (ws->in.data)
        ws->in.data[ws->in.len] = '\0';
    return 1;
}

/* Turns a frame into a returned message or a fragment kept for later: 1 returned, 0 kept. */
static int ws_take_frame(HarnessWs *ws, bool fin, int opcode, Buffer *payload,
                         HarnessWsMessage *ret)
{
    if (opcode >= 0x8) {
        if (!fin || payload->len > 125 ||
            (opcode != HARNESS_WS_CLOSE && opcode != HARNESS_WS_PING &&
             opcode != HARNESS_WS_PONG)) {
            fprintf(stderr, "harness: bad control frame (opcode 0x%x, %zu bytes)\n", opcode,
                    payload->len);
            return -EPROTO;
        }
        HarnessWsMessage m = {.opcode = opcode, .close_code = 0};
        size_t skip = 0;
        if (opcode == HARNESS_WS_CLOSE) {
            if (payload->len == 1) {
                fprintf(stderr, "harness: close frame of 1 byte\n");
                return -EPROTO;
            }
            const uint8_t *b = (const uint8_t *)payload->data;
            m.close_code = payload->len ? (b[0] << 8 | b[1]) : HARNESS_WS_NO_STATUS;
            skip = payload->len ? 2 : 0;
        }
        m.len = payload->len - skip;
        m.data = malloc(m.len + 1);
        if (!m.data)
            return -ENOMEM;
        if (m.len)
            memcpy(m.data, payload->data + skip, m.len);
        m.data[m.len] = '\0';
        *ret = m;
        return 1;
    }
    if (opcode != HARNESS_WS_CONTINUATION && opcode != HARNESS_WS_TEXT &&
        opcode != HARNESS_WS_BINARY) {
        fprintf(stderr, "harness: reserved opcode 0x%x\n", opcode);
        return -EPROTO;
    }
    if ((opcode == HARNESS_WS_CONTINUATION) != (ws->message_opcode != 0)) {
        fprintf(stderr, "harness: %s\n",
                opcode == HARNESS_WS_CONTINUATION ? "continuation frame without a message"
                                                  : "new message before the last one ended");
        return -EPROTO;
    }
    if (opcode != HARNESS_WS_CONTINUATION)
        ws->message_opcode = opcode;
    int r = buffer_append(&ws->message, payload->data ? payload->data : "", payload->len);
    if (r < 0)
        return r;
    if (!fin)
        return 0;
    if (!ws->message.data && (r = buffer_append(&ws->message, "", 0)) < 0)
        return r;
    *ret = (HarnessWsMessage){
        .opcode = ws->message_opcode, .data = (uint8_t *)ws->message.data, .len = ws->message.len};
    ws->message = (Buffer){0};
    ws->message_opcode = 0;
    return 1;
}

int harness_ws_recv(HarnessWs *ws, int timeout_ms, HarnessWsMessage *ret)
{
    if (!ws)
        return -EINVAL;
    long long deadline = harness_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        bool fin;
        int opcode;
        Buffer payload;
        int r = ws_next_frame(ws, &fin, &opcode, &payload);
        if (r < 0)
            return r;
        if (r > 0) {
            r = ws_take_frame(ws, fin, opcode, &payload, ret);
            free(payload.data);
            if (r < 0)
                return r;
            if (r > 0)
                return 0;
            continue;
        }
        if (ws->eof)
            return -ECONNRESET;
        if (harness_now_ms() >= deadline)
            return -ETIMEDOUT;
        r = recv_some(&ws->conn, &ws->in, deadline);
        if (r == -ETIMEDOUT)
            return r;
        if (r < 0)
            return r;
        if (r == 0)
            ws->eof = true;
    }
}

/* ---- the console ---- */

int harness_console_session_tls(uint16_t port, const char *ca_file, const char *uuid,
                                const char *key, const char *origin_line, HarnessResponse *ret)
{
    char path[128], body[256];
    int n = snprintf(body, sizeof(body), "{\"key\":\"%s\"}", key);
    if (n < 0 || (size_t)n >= sizeof(body))
        return -EINVAL;
    snprintf(path, sizeof(path), "/console/%s/session", uuid);
    /* Without an Origin line the list simply ends early. */
    const char *headers[] = {"Content-Type: application/json", origin_line, NULL};
    return http_request(port, ca_file, "POST", path, headers, body, (size_t)n, HARNESS_CL_AUTO,
                        ret);
}

int harness_console_session(uint16_t port, const char *uuid, const char *key,
                            const char *origin_line, HarnessResponse *ret)
{
    return harness_console_session_tls(port, NULL, uuid, key, origin_line, ret);
}

int harness_console_ws_connect_tls(uint16_t port, const char *ca_file, const char *uuid,
                                   const char *cookie, const char *origin_line, HarnessWs **ret_ws,
                                   HarnessResponse *ret_refusal)
{
    char path[128];
    const char *headers[3] = {0};
    size_t n = 0;
    snprintf(path, sizeof(path), "/console/%s/websocket", uuid);
    if (cookie)
        headers[n++] = cookie;
    if (origin_line)
        headers[n++] = origin_line;
    return ws_connect(port, ca_file, path, headers, ret_ws, ret_refusal);
}

int harness_console_ws_connect(uint16_t port, const char *uuid, const char *cookie,
                               const char *origin_line, HarnessWs **ret_ws,
                               HarnessResponse *ret_refusal)
{
    return harness_console_ws_connect_tls(port, NULL, uuid, cookie, origin_line, ret_ws,
                                          ret_refusal);
}
