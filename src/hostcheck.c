#include "hostcheck.h"

#include <errno.h>
#include <grp.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "egress.h"
#include "log.h"
#include "template.h"
#include "util.h"
#include "virt.h"

/*
 * Host files are read a line at a time through a fixed buffer: a line
 * longer than this is skipped whole (a /proc/cpuinfo flags line is ~1.5 KB),
 * and no file is read past HOSTCHECK_FILE_MAX bytes.
 */
#define HOSTCHECK_LINE_MAX 8192
#define HOSTCHECK_FILE_MAX (1024 * 1024)

#define QEMU_CONF "/etc/libvirt/qemu.conf"

struct HostReport {
    HostResult *results;
    size_t count, allocated;
};

/* ---- the report ---- */

int host_report_new(HostReport **ret_report)
{
    HostReport *report = calloc(1, sizeof(*report));
    if (!report)
        return -ENOMEM;
    *ret_report = report;
    return 0;
}

void host_report_free(HostReport *report)
{
    if (!report)
        return;
    for (size_t i = 0; i < report->count; i++) {
        free(report->results[i].name);
        free(report->results[i].value);
        free(report->results[i].advice);
    }
    free(report->results);
    free(report);
}

static int report_add(HostReport *report, const char *name, HostLevel level, bool unsafe,
                      const char *value, const char *advice)
{
    if (report->count == report->allocated) {
        size_t n = report->allocated ? 2 * report->allocated : 16;
        HostResult *grown = realloc(report->results, n * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        report->results = grown;
        report->allocated = n;
    }
    HostResult result = {.level = level, .unsafe = unsafe};
    if (!(result.name = strdup(name)) || !(result.value = strdup(value ? value : "")) ||
        (advice && level != HOST_LEVEL_OK && !(result.advice = strdup(advice)))) {
        free(result.name);
        free(result.value);
        return -ENOMEM;
    }
    report->results[report->count++] = result;
    return 0;
}

int host_report_add(HostReport *report, const char *name, HostLevel level, const char *value,
                    const char *advice)
{
    return report_add(report, name, level, false, value, advice);
}

int host_report_add_unsafe(HostReport *report, const char *name, const char *value,
                           const char *advice)
{
    return report_add(report, name, HOST_LEVEL_FAIL, true, value, advice);
}

size_t host_report_count(const HostReport *report)
{
    return report ? report->count : 0;
}

const HostResult *host_report_get(const HostReport *report, size_t index)
{
    return report && index < report->count ? &report->results[index] : NULL;
}

const HostResult *host_report_find(const HostReport *report, const char *name)
{
    for (size_t i = 0; i < host_report_count(report); i++)
        if (strcmp(report->results[i].name, name) == 0)
            return &report->results[i];
    return NULL;
}

HostLevel host_report_worst(const HostReport *report)
{
    HostLevel worst = HOST_LEVEL_OK;
    for (size_t i = 0; i < host_report_count(report); i++)
        if (report->results[i].level > worst)
            worst = report->results[i].level;
    return worst;
}

bool host_report_unsafe(const HostReport *report)
{
    for (size_t i = 0; i < host_report_count(report); i++)
        if (report->results[i].unsafe)
            return true;
    return false;
}

const char *host_level_to_string(HostLevel level)
{
    switch (level) {
    case HOST_LEVEL_OK:
        return "ok";
    case HOST_LEVEL_WARN:
        return "warn";
    case HOST_LEVEL_FAIL:
        return "FAIL";
    }
    return "?";
}

void host_report_print(const HostReport *report, FILE *out)
{
    for (size_t i = 0; i < host_report_count(report); i++) {
        const HostResult *r = &report->results[i];
        fprintf(out, "%-4s  %-16s %s%s%s\n", host_level_to_string(r->level), r->name, r->value,
                r->advice ? "; fix: " : "", r->advice ? r->advice : "");
    }
}

void host_report_log(const HostReport *report)
{
    static const LogLevel levels[] = {
        [HOST_LEVEL_OK] = LOG_LEVEL_INFO,
        [HOST_LEVEL_WARN] = LOG_LEVEL_WARN,
        [HOST_LEVEL_FAIL] = LOG_LEVEL_ERROR,
    };
    for (size_t i = 0; i < host_report_count(report); i++) {
        const HostResult *r = &report->results[i];
        log_msg(levels[r->level], "host check %s: %s %s%s%s", r->name,
                host_level_to_string(r->level), r->value, r->advice ? "; fix: " : "",
                r->advice ? r->advice : "");
    }
}

/* A result whose value is formatted; advice may be NULL. */
static int addf(HostReport *report, const char *name, HostLevel level, bool unsafe,
                const char *advice, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int addf(HostReport *report, const char *name, HostLevel level, bool unsafe,
                const char *advice, const char *fmt, ...)
{
    _cleanup_free_ char *value = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&value, fmt, ap);
    va_end(ap);
    if (n < 0) {
        value = NULL;
        return -ENOMEM;
    }
    return report_add(report, name, level, unsafe, value, advice);
}

/* ---- reading host files ---- */

/* env->root + path; -ENAMETOOLONG past PATH_MAX. */
static int host_path(const HostCheckEnv *env, const char *path, char ret[PATH_MAX])
{
    int n = snprintf(ret, PATH_MAX, "%s%s", env->root ? env->root : "", path);
    return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

/* Called for each line; returns 0 to go on, 1 to stop reading, or -errno. */
typedef int (*LineFn)(const char *line, void *userdata);

/*
 * Feeds the lines of path to fn, without their newline. A line longer than
 * HOSTCHECK_LINE_MAX is skipped whole (never split into pieces that could
 * read as lines of their own), NUL bytes read as spaces, and reading stops
 * with -EFBIG past HOSTCHECK_FILE_MAX. -errno when path cannot be opened.
 */
static int read_lines(const char *path, LineFn fn, void *userdata)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    _cleanup_free_ char *line = malloc(HOSTCHECK_LINE_MAX + 1);
    if (!line)
        return -ENOMEM;
    size_t len = 0, total = 0;
    bool too_long = false;
    int c, r;
    while ((c = getc(f)) != EOF) {
        if (++total > HOSTCHECK_FILE_MAX)
            return -EFBIG;
        if (c == '\n') {
            line[len] = '\0';
            if (!too_long && (r = fn(line, userdata)) != 0)
                return r < 0 ? r : 0;
            len = 0;
            too_long = false;
        } else if (len == HOSTCHECK_LINE_MAX) {
            too_long = true;
        } else if (!too_long) {
            line[len++] = c == '\0' ? ' ' : (char)c;
        }
    }
    if (ferror(f))
        return -EIO;
    line[len] = '\0';
    if (len > 0 && !too_long && (r = fn(line, userdata)) < 0)
        return r;
    return 0;
}

static int first_line(const char *line, void *userdata)
{
    snprintf(userdata, 64, "%s", line);
    return 1;
}

/* The first line of a small file (a /sys knob) into ret[64]. */
static int read_knob(const char *path, char ret[64])
{
    ret[0] = '\0';
    return read_lines(path, first_line, ret);
}

typedef struct {
    bool set;
    bool bad;
    long value;
} SeccompSetting;

/*
 * "seccomp_sandbox = N" in libvirt's conf syntax, with an optional trailing
 * comment. libvirt takes the first assignment of a key, and so do we.
 */
static int seccomp_line(const char *line, void *userdata)
{
    SeccompSetting *s = userdata;
    static const char key[] = "seccomp_sandbox";
    const char *p = line + strspn(line, " \t");
    if (strncmp(p, key, sizeof(key) - 1) != 0)
        return 0;
    p += sizeof(key) - 1;
    p += strspn(p, " \t");
    if (*p != '=')
        return 0;
    p++;
    p += strspn(p, " \t");
    s->set = true;
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno != 0) {
        s->bad = true;
        return 1;
    }
    end += strspn(end, " \t\r");
    if (*end != '\0' && *end != '#') {
        s->bad = true;
        return 1;
    }
    s->value = v;
    return 1;
}

int hostcheck_read_seccomp_sandbox(const char *path, bool *ret_set, long *ret_value)
{
    SeccompSetting s = {0};
    int r = read_lines(path, seccomp_line, &s);
    if (r < 0)
        return r;
    *ret_set = s.set;
    if (s.bad)
        return -EBADMSG;
    *ret_value = s.set ? s.value : 1;
    return 0;
}

static int mem_available_line(const char *line, void *userdata)
{
    static const char key[] = "MemAvailable:";
    if (strncmp(line, key, sizeof(key) - 1) != 0)
        return 0;
    const char *p = line + sizeof(key) - 1;
    p += strspn(p, " \t");
    char *end;
    errno = 0;
    unsigned long long kib = strtoull(p, &end, 10);
    if (end == p || errno != 0 || *p == '-' || strcmp(end + strspn(end, " "), "kB") != 0)
        return -EBADMSG;
    *(uint64_t *)userdata = kib / 1024;
    return 1;
}

int hostcheck_read_mem_available(const char *path, uint64_t *ret_mib)
{
    uint64_t mib = UINT64_MAX;
    int r = read_lines(path, mem_available_line, &mib);
    if (r < 0)
        return r;
    if (mib == UINT64_MAX)
        return -EBADMSG;
    *ret_mib = mib;
    return 0;
}

static int cpu_flags_line(const char *line, void *userdata)
{
    if (strncmp(line, "flags", 5) != 0 || !strchr(line, ':'))
        return 0;
    bool *has = userdata;
    const char *p = strchr(line, ':') + 1;
    while (*p) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, " \t");
        if ((n == 3 && strncmp(p, "vmx", 3) == 0) || (n == 3 && strncmp(p, "svm", 3) == 0))
            *has = true;
        p += n;
    }
    return 1; /* every CPU lists the same flags */
}

/* ---- libvirt's capabilities ---- */

/*
 * Each <secmodel> block of the capabilities in turn: *cursor moves past the
 * block returned in [*ret_start, *ret_end). The XML is libvirt's own and
 * regular; this reads it as text, never trusting a length it implies.
 */
static bool next_secmodel(const char **cursor, const char **ret_start, const char **ret_end)
{
    const char *start = strstr(*cursor, "<secmodel>");
    if (!start)
        return false;
    const char *end = strstr(start, "</secmodel>");
    if (!end)
        return false;
    *ret_start = start;
    *ret_end = end;
    *cursor = end + strlen("</secmodel>");
    return true;
}

/* Text of the first <tag>…</tag> (open is "<tag>" or "<tag attr='…'>") within [start, end). */
static bool element_text(const char *start, const char *end, const char *open, char *ret,
                         size_t size)
{
    const char *p = memmem(start, (size_t)(end - start), open, strlen(open));
    if (!p)
        return false;
    p += strlen(open);
    const char *close = memchr(p, '<', (size_t)(end - p));
    if (!close || (size_t)(close - p) >= size)
        return false;
    memcpy(ret, p, (size_t)(close - p));
    ret[close - p] = '\0';
    return true;
}

bool hostcheck_has_secmodel(const char *capabilities, const char *model)
{
    const char *cursor = capabilities, *start, *end;
    char text[64];
    while (capabilities && next_secmodel(&cursor, &start, &end))
        if (element_text(start, end, "<model>", text, sizeof(text)) && strcmp(text, model) == 0)
            return true;
    return false;
}

/* "+N" (libvirt's numeric form), or a name. */
static bool parse_id(const char *text, bool user, unsigned *ret)
{
    if (text[0] == '+') {
        char *end;
        errno = 0;
        unsigned long v = strtoul(text + 1, &end, 10);
        if (end == text + 1 || *end || errno || v > UINT_MAX - 1)
            return false;
        *ret = (unsigned)v;
        return true;
    }
    char buf[4096];
    if (user) {
        struct passwd pw, *found = NULL;
        if (getpwnam_r(text, &pw, buf, sizeof(buf), &found) != 0 || !found)
            return false;
        *ret = found->pw_uid;
    } else {
        struct group gr, *found = NULL;
        if (getgrnam_r(text, &gr, buf, sizeof(buf), &found) != 0 || !found)
            return false;
        *ret = found->gr_gid;
    }
    return true;
}

static int dac_label(const char *capabilities, const char *type, uid_t *ret_uid, gid_t *ret_gid)
{
    const char *cursor = capabilities, *start, *end;
    char model[64], label[128], open[64];
    while (next_secmodel(&cursor, &start, &end)) {
        if (!element_text(start, end, "<model>", model, sizeof(model)) || strcmp(model, "dac") != 0)
            continue;
        snprintf(open, sizeof(open), "<baselabel type='%s'>", type);
        if (!element_text(start, end, open, label, sizeof(label))) {
            snprintf(open, sizeof(open), "<baselabel type=\"%s\">", type);
            if (!element_text(start, end, open, label, sizeof(label)))
                continue;
        }
        char *colon = strchr(label, ':');
        unsigned uid, gid;
        if (!colon)
            return -EBADMSG;
        *colon = '\0';
        if (!parse_id(label, true, &uid) || !parse_id(colon + 1, false, &gid))
            return -EBADMSG;
        *ret_uid = (uid_t)uid;
        *ret_gid = (gid_t)gid;
        return 0;
    }
    return -ENOENT;
}

int hostcheck_qemu_identity(const char *capabilities, bool kvm, uid_t *ret_uid, gid_t *ret_gid)
{
    if (!capabilities)
        return -ENOENT;
    int r = dac_label(capabilities, kvm ? "kvm" : "qemu", ret_uid, ret_gid);
    if (r == -ENOENT)
        r = dac_label(capabilities, kvm ? "qemu" : "kvm", ret_uid, ret_gid);
    return r;
}

/* ---- names of users and groups ---- */

static void user_name(uid_t uid, char ret[64])
{
    char buf[4096];
    struct passwd pw, *found = NULL;
    if (getpwuid_r(uid, &pw, buf, sizeof(buf), &found) == 0 && found)
        snprintf(ret, 64, "%s", found->pw_name);
    else
        snprintf(ret, 64, "uid %u", (unsigned)uid);
}

static void group_name(gid_t gid, char ret[64])
{
    char buf[4096];
    struct group gr, *found = NULL;
    if (getgrgid_r(gid, &gr, buf, sizeof(buf), &found) == 0 && found)
        snprintf(ret, 64, "%s", found->gr_name);
    else
        snprintf(ret, 64, "gid %u", (unsigned)gid);
}

/*
 * Whether the QEMU user is in group gid: its primary group, or one of the
 * user's supplementary groups, which libvirt gives the QEMU process too.
 */
static bool qemu_in_group(uid_t uid, gid_t primary, gid_t gid)
{
    if (primary == gid)
        return true;
    char buf[4096];
    struct passwd pw, *found = NULL;
    if (getpwuid_r(uid, &pw, buf, sizeof(buf), &found) != 0 || !found)
        return false;
    gid_t groups[256];
    int n = (int)ARRAY_SIZE(groups);
    if (getgrouplist(found->pw_name, primary, groups, &n) < 0)
        return false;
    for (int i = 0; i < n; i++)
        if (groups[i] == gid)
            return true;
    return false;
}

/* Whether a process of uid/gid may open a file of st for reading and writing. */
static bool may_read_write(const struct stat *st, uid_t uid, gid_t gid)
{
    if (uid == 0)
        return true;
    if (st->st_uid == uid)
        return (st->st_mode & 0600) == 0600;
    if (qemu_in_group(uid, gid, st->st_gid))
        return (st->st_mode & 0060) == 0060;
    return (st->st_mode & 0006) == 0006;
}

/* ---- the checks ---- */

/*
 * What legbad would run guests on (virt_accel_choose's verdict) and what
 * that rests on: /dev/kvm, whether QEMU's own user can open it, and the
 * CPU's vmx/svm flag. TCG is fine when it is the configured or automatic
 * choice; KVM that QEMU cannot use makes every create fail.
 */
static int check_accel(const HostCheckEnv *env, HostReport *report)
{
    char kvm_path[PATH_MAX], cpuinfo[PATH_MAX];
    if (host_path(env, "/dev/kvm", kvm_path) < 0 || host_path(env, "/proc/cpuinfo", cpuinfo) < 0)
        return addf(report, "accel", HOST_LEVEL_WARN, false, NULL, "cannot build host paths");
    const char *mode = accel_mode_to_string(env->config->accel);
    const char *verdict = env->kvm ? "kvm" : "tcg";
    /* virt_accel_choose says "tcg: why"; the verdict is printed apart. */
    const char *why = env->accel_reason ? env->accel_reason : "";
    if (strncmp(why, verdict, 3) == 0 && strncmp(why + 3, ": ", 2) == 0)
        why += 5;

    bool cpu_flag = false;
    int cpu_r = read_lines(cpuinfo, cpu_flags_line, &cpu_flag);
    struct stat st;
    bool exists = stat(kvm_path, &st) == 0;
    uid_t quid;
    gid_t qgid;
    bool known = hostcheck_qemu_identity(env->capabilities, env->kvm, &quid, &qgid) == 0;
    int usable = exists && known ? may_read_write(&st, quid, qgid) : -1;

    char dev[256], quser[64] = "", owner[64], group[64];
    if (known)
        user_name(quid, quser);
    if (!exists) {
        snprintf(dev, sizeof(dev), "/dev/kvm absent");
    } else {
        user_name(st.st_uid, owner);
        group_name(st.st_gid, group);
        snprintf(dev, sizeof(dev), "/dev/kvm %s:%s %04o, %s", owner, group,
                 (unsigned)(st.st_mode & 07777),
                 usable < 0   ? "QEMU's user unknown"
                 : usable > 0 ? "QEMU's user can open it"
                              : "QEMU's user cannot open it");
    }
    const char *cpu = cpu_r < 0  ? "CPU flags unreadable"
                      : cpu_flag ? "CPU has vmx/svm"
                                 : "CPU has no vmx/svm";

    if (!env->kvm) {
        bool kvm_would_work = exists && cpu_flag && usable > 0;
        return addf(report, "accel", HOST_LEVEL_OK, false, NULL,
                    "%s (accel = %s): %s; measured: %s, %s%s", verdict, mode, why, dev, cpu,
                    env->config->accel == ACCEL_TCG && kvm_would_work
                        ? "; KVM is usable here: accel = auto would pick it"
                        : "");
    }
    if (!exists)
        return addf(report, "accel", HOST_LEVEL_FAIL, false,
                    "load the kvm_intel or kvm_amd module (virtualization enabled in the "
                    "firmware), or set accel = auto or tcg",
                    "kvm (accel = %s) but /dev/kvm does not exist: every create would fail", mode);
    if (usable == 0) {
        char advice[256];
        snprintf(advice, sizeof(advice),
                 "chgrp kvm /dev/kvm && chmod 660 /dev/kvm (tools/setup does this), with %s in "
                 "group kvm; or set accel = tcg",
                 quser);
        return addf(report, "accel", HOST_LEVEL_FAIL, false, advice,
                    "kvm (accel = %s) but QEMU's user %s cannot open it: %s; %s", mode, quser, dev,
                    cpu);
    }
    if (!cpu_flag)
        return addf(report, "accel", HOST_LEVEL_WARN, false,
                    "set accel = auto, which runs such hosts under TCG",
                    "kvm (accel = %s) on a CPU without vmx/svm (a paravirtual KVM such as PVM), "
                    "where stock guest kernels run very slowly; %s",
                    mode, dev);
    if (usable < 0)
        return addf(report, "accel", HOST_LEVEL_WARN, false,
                    "start libvirtd so its QEMU user can be read (tools/setup)",
                    "%s (accel = %s): %s; measured: %s, %s", verdict, mode, why, dev, cpu);
    return addf(report, "accel", HOST_LEVEL_OK, false, NULL,
                "%s (accel = %s): %s; measured: %s, %s", verdict, mode, why, dev, cpu);
}

/* The user and group libvirt runs QEMU as, from its DAC security model. Root must not. */
static int check_qemu_user(const HostCheckEnv *env, HostReport *report)
{
    static const char fix_root[] =
        "set user = \"libvirt-qemu\" and group = \"libvirt-qemu\" in " QEMU_CONF
        " and restart libvirtd (or, knowingly, allow_unsafe_host = yes)";
    const char *uri = env->config->libvirt_uri;
    if (!env->capabilities)
        return addf(report, "qemu_user", HOST_LEVEL_FAIL, false,
                    "start libvirtd (tools/setup) or correct libvirt_uri",
                    "unknown: cannot read libvirt's capabilities from %s: %s", uri,
                    env->libvirt_error ? env->libvirt_error : "unknown error");
    uid_t uid;
    gid_t gid;
    int r = hostcheck_qemu_identity(env->capabilities, env->kvm, &uid, &gid);
    if (r == -ENOENT)
        return addf(report, "qemu_user", HOST_LEVEL_WARN, false,
                    "check against the QEMU driver, libvirt_uri = qemu:///system",
                    "unknown: %s reports no DAC label for QEMU domains (not a QEMU driver?)", uri);
    if (r < 0)
        return addf(report, "qemu_user", HOST_LEVEL_WARN, false,
                    "read `virsh capabilities` (secmodel dac) by hand",
                    "unknown: %s reports a DAC label this check cannot read", uri);
    char user[64], group[64];
    user_name(uid, user);
    group_name(gid, group);
    if (uid == 0)
        return addf(report, "qemu_user", HOST_LEVEL_FAIL, true, fix_root,
                    "%s:%s (uid %u, gid %u): QEMU runs as root, so a guest that escapes QEMU "
                    "owns the host",
                    user, group, (unsigned)uid, (unsigned)gid);
    if (gid == 0)
        return addf(report, "qemu_user", HOST_LEVEL_FAIL, false, fix_root,
                    "%s:%s (uid %u, gid %u): QEMU runs in group root", user, group, (unsigned)uid,
                    (unsigned)gid);
    return addf(report, "qemu_user", HOST_LEVEL_OK, false, NULL, "%s:%s (uid %u, gid %u)", user,
                group, (unsigned)uid, (unsigned)gid);
}

/*
 * qemu.conf's seccomp_sandbox: libvirt starts QEMU with -sandbox on (no
 * spawning, no privilege changes, no obsolete syscalls) unless it is 0.
 */
static int check_seccomp_sandbox(const HostCheckEnv *env, HostReport *report)
{
    char path[PATH_MAX];
    if (host_path(env, QEMU_CONF, path) < 0)
        return addf(report, "seccomp_sandbox", HOST_LEVEL_WARN, false, NULL,
                    "cannot build host paths");
    bool set = false;
    long value = 1;
    int r = hostcheck_read_seccomp_sandbox(path, &set, &value);
    if (r == -ENOENT)
        return addf(report, "seccomp_sandbox", HOST_LEVEL_OK, false, NULL,
                    "1 (libvirt's default: no %s)", QEMU_CONF);
    if (r == -EBADMSG)
        return addf(report, "seccomp_sandbox", HOST_LEVEL_WARN, false,
                    "write seccomp_sandbox = 1 there and restart libvirtd",
                    "%s sets seccomp_sandbox to something other than a number", QEMU_CONF);
    if (r < 0)
        return addf(report, "seccomp_sandbox", HOST_LEVEL_WARN, false,
                    "make it readable by legbad's user", "cannot read %s: %s", QEMU_CONF,
                    strerror(-r));
    if (value == 0)
        return addf(report, "seccomp_sandbox", HOST_LEVEL_FAIL, true,
                    "set seccomp_sandbox = 1 (or remove the line) in " QEMU_CONF
                    " and restart libvirtd (or, knowingly, allow_unsafe_host = yes)",
                    "0 in %s: QEMU runs without its seccomp filter and may spawn processes and "
                    "change privileges",
                    QEMU_CONF);
    if (!set)
        return addf(report, "seccomp_sandbox", HOST_LEVEL_OK, false, NULL,
                    "1 (libvirt's default: not set in %s)", QEMU_CONF);
    return addf(report, "seccomp_sandbox", HOST_LEVEL_OK, false, NULL, "%ld (set in %s)", value,
                QEMU_CONF);
}

/*
 * sVirt: a mandatory access control driver (AppArmor or SELinux) that
 * confines each QEMU to its own domain's files. Without one, QEMU's user
 * (DAC) and seccomp are what isolate it; that is a warning, not a failure.
 */
static int check_security_driver(const HostCheckEnv *env, HostReport *report)
{
    if (!env->capabilities)
        return addf(report, "security_driver", HOST_LEVEL_WARN, false,
                    "start libvirtd (tools/setup) or correct libvirt_uri",
                    "unknown: libvirt's capabilities could not be read");
    bool apparmor = hostcheck_has_secmodel(env->capabilities, "apparmor");
    bool selinux = hostcheck_has_secmodel(env->capabilities, "selinux");
    if (apparmor || selinux)
        return addf(report, "security_driver", HOST_LEVEL_OK, false, NULL,
                    "%s%s%s: libvirt confines each QEMU to its own domain's files",
                    apparmor ? "apparmor" : "", apparmor && selinux ? " and " : "",
                    selinux ? "selinux" : "");

    char path[PATH_MAX], knob[64] = "";
    bool kernel_apparmor = host_path(env, "/sys/module/apparmor/parameters/enabled", path) == 0 &&
                           read_knob(path, knob) == 0 && knob[0] == 'Y';
    struct stat st;
    bool kernel_selinux =
        host_path(env, "/sys/fs/selinux", path) == 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    if (kernel_apparmor || kernel_selinux)
        return addf(report, "security_driver", HOST_LEVEL_WARN, false,
                    "set security_driver to it in " QEMU_CONF
                    " (not \"none\"), install its libvirt support (Debian: apparmor) and restart "
                    "libvirtd",
                    "none in libvirt, though %s is enabled in the kernel: sVirt does not confine "
                    "QEMU; DAC (QEMU's own user) and seccomp are what isolate it",
                    kernel_apparmor ? "AppArmor" : "SELinux");
    return addf(report, "security_driver", HOST_LEVEL_WARN, false,
                "boot a kernel with AppArmor enabled (Debian's default; apt-get install apparmor) "
                "and restart libvirtd, so each QEMU gets its own profile",
                "none: neither AppArmor nor SELinux is enabled in this kernel, so sVirt "
                "confinement is not available; DAC (QEMU's own user) and seccomp are what "
                "isolate QEMU");
}

/*
 * Kernel same-page merging shares identical pages between guests; the
 * timing of a write to a merged page tells one guest what another holds.
 */
static int check_ksm(const HostCheckEnv *env, HostReport *report)
{
    char path[PATH_MAX], knob[64];
    if (host_path(env, "/sys/kernel/mm/ksm/run", path) < 0)
        return addf(report, "ksm", HOST_LEVEL_WARN, false, NULL, "cannot build host paths");
    int r = read_knob(path, knob);
    if (r == -ENOENT)
        return addf(report, "ksm", HOST_LEVEL_OK, false, NULL,
                    "off (this kernel has no /sys/kernel/mm/ksm)");
    if (r < 0)
        return addf(report, "ksm", HOST_LEVEL_WARN, false, "check /sys/kernel/mm/ksm/run by hand",
                    "unknown: cannot read /sys/kernel/mm/ksm/run: %s", strerror(-r));
    if (strcmp(knob, "0") == 0)
        return addf(report, "ksm", HOST_LEVEL_OK, false, NULL, "off (/sys/kernel/mm/ksm/run = 0)");
    if (strcmp(knob, "2") == 0)
        return addf(report, "ksm", HOST_LEVEL_OK, false, NULL,
                    "off, unmerging (/sys/kernel/mm/ksm/run = 2)");
    if (strcmp(knob, "1") == 0)
        return addf(report, "ksm", HOST_LEVEL_WARN, false,
                    "echo 2 > /sys/kernel/mm/ksm/run (unmerge, then off) and keep it off "
                    "(disable ksmtuned)",
                    "on (/sys/kernel/mm/ksm/run = 1): the kernel merges identical pages across "
                    "VMs, a timing side channel between instances");
    return addf(report, "ksm", HOST_LEVEL_WARN, false, "check /sys/kernel/mm/ksm/run by hand",
                "unknown: /sys/kernel/mm/ksm/run reads '%.16s'", knob);
}

/* Whether one instance of the largest size still fits in the memory the kernel calls available. */
static int check_memory(const HostCheckEnv *env, HostReport *report)
{
    char path[PATH_MAX];
    uint64_t available;
    if (host_path(env, "/proc/meminfo", path) < 0)
        return addf(report, "memory", HOST_LEVEL_WARN, false, NULL, "cannot build host paths");
    int r = hostcheck_read_mem_available(path, &available);
    if (r < 0)
        return addf(report, "memory", HOST_LEVEL_WARN, false, "check /proc/meminfo by hand",
                    "unknown: no MemAvailable in /proc/meminfo (%s)", strerror(-r));
    if (!env->largest_size)
        return addf(
            report, "memory", HOST_LEVEL_WARN, false, "fix the domain templates (domains_dir)",
            "MemAvailable %llu MiB; the sizes are unknown: %s", (unsigned long long)available,
            env->templates_error ? env->templates_error : "no domain templates");
    if (available < env->largest_memory_mib)
        return addf(report, "memory", HOST_LEVEL_WARN, false,
                    "free memory on the host (or give it more) before creating instances",
                    "MemAvailable %llu MiB: less than one %s instance (%u MiB) needs",
                    (unsigned long long)available, env->largest_size, env->largest_memory_mib);
    return addf(
        report, "memory", HOST_LEVEL_OK, false, NULL,
        "MemAvailable %llu MiB: %llu %s instances (%u MiB each) fit", (unsigned long long)available,
        (unsigned long long)(available / (env->largest_memory_mib ? env->largest_memory_mib : 1)),
        env->largest_size, env->largest_memory_mib);
}

/* dir itself, or the nearest directory above it that exists (into ret). */
static int nearest_existing(const char *dir, char ret[PATH_MAX])
{
    if (snprintf(ret, PATH_MAX, "%s", dir) >= PATH_MAX)
        return -ENAMETOOLONG;
    struct stat st;
    while (stat(ret, &st) < 0) {
        if (errno != ENOENT)
            return -errno;
        char *slash = strrchr(ret, '/');
        if (!slash)
            return -ENOENT;
        if (slash == ret)
            slash[1] = '\0';
        else
            *slash = '\0';
    }
    return 0;
}

/*
 * Free space where instance overlays (data_dir) or image builds
 * (images_dir) land: under HOSTCHECK_MIN_FREE_BYTES, a guest writing to its
 * disk or the next image build may run out.
 */
static int check_free_space(HostReport *report, const char *name, const char *key, const char *dir,
                            const char *what)
{
    char where[PATH_MAX];
    struct statvfs sv;
    int r = nearest_existing(dir, where);
    if (r == 0 && statvfs(where, &sv) < 0)
        r = -errno;
    if (r < 0)
        return addf(report, name, HOST_LEVEL_WARN, false, "check the path and its file system",
                    "%s %s: cannot measure free space: %s", key, dir, strerror(-r));
    unsigned long long free_bytes = (unsigned long long)sv.f_bavail * sv.f_frsize;
    bool absent = strcmp(where, dir) != 0;
    char advice[PATH_MAX + 128];
    snprintf(advice, sizeof(advice), "free space on the file system of %s (%s)", where, what);
    return addf(report, name,
                free_bytes < HOSTCHECK_MIN_FREE_BYTES ? HOST_LEVEL_WARN : HOST_LEVEL_OK, false,
                advice, "%s %s: %.1f GiB free%s%s%s (warns under %llu GiB)", key, dir,
                (double)free_bytes / (1 << 30), absent ? " on " : "", absent ? where : "",
                absent ? ", where it will be created" : "", HOSTCHECK_MIN_FREE_BYTES >> 30);
}

static int check_data_dir_free(const HostCheckEnv *env, HostReport *report)
{
    return check_free_space(report, "data_dir_free", "data_dir", env->config->data_dir,
                            "each instance's overlay grows as its guest writes");
}

static int check_images_dir_free(const HostCheckEnv *env, HostReport *report)
{
    return check_free_space(report, "images_dir_free", "images_dir", env->config->images_dir,
                            "a browser image build writes about 1.5 GB");
}

/*
 * A dir that its group or everyone may write lets another local user swap
 * a disk that a VM boots, or legbad's state, under legbad.
 */
static int check_dir_mode(HostReport *report, const char *name, const char *key, const char *dir,
                          HostLevel if_absent, const char *absent_note)
{
    struct stat st;
    char advice[PATH_MAX + 64];
    if (stat(dir, &st) < 0) {
        int r = errno;
        if (r == ENOENT)
            return addf(report, name, if_absent, false,
                        if_absent == HOST_LEVEL_OK ? NULL : absent_note, "%s %s: absent%s%s", key,
                        dir, if_absent == HOST_LEVEL_OK ? "; " : "",
                        if_absent == HOST_LEVEL_OK ? absent_note : "");
        return addf(report, name, HOST_LEVEL_WARN, false, "check the path", "%s %s: %s", key, dir,
                    strerror(r));
    }
    if (!S_ISDIR(st.st_mode))
        return addf(report, name, HOST_LEVEL_FAIL, false, "point it at a directory",
                    "%s %s: not a directory", key, dir);
    unsigned mode = (unsigned)(st.st_mode & 07777);
    char owner[64], group[64];
    user_name(st.st_uid, owner);
    group_name(st.st_gid, group);
    if (mode & (S_IWGRP | S_IWOTH)) {
        snprintf(advice, sizeof(advice), "chmod go-w %s", dir);
        return addf(report, name, HOST_LEVEL_FAIL, false, advice,
                    "%s %s: %s:%s %04o, writable by %s", key, dir, owner, group, mode,
                    (mode & S_IWGRP) && (mode & S_IWOTH) ? "group and others"
                    : (mode & S_IWGRP)                   ? "its group"
                                                         : "others");
    }
    return addf(report, name, HOST_LEVEL_OK, false, NULL, "%s %s: %s:%s %04o", key, dir, owner,
                group, mode);
}

static int check_data_dir_mode(const HostCheckEnv *env, HostReport *report)
{
    return check_dir_mode(report, "data_dir_mode", "data_dir", env->config->data_dir, HOST_LEVEL_OK,
                          "legbad creates it, mode 0711");
}

static int check_images_dir_mode(const HostCheckEnv *env, HostReport *report)
{
    return check_dir_mode(report, "images_dir_mode", "images_dir", env->config->images_dir,
                          HOST_LEVEL_WARN, "build an image into it: tools/build-image NAME");
}

/*
 * The rules that keep guests' traffic off the host and its networks
 * (egress.h). legbad installs them at every start; what matters here is
 * whether it can, and whether network = egress depends on it.
 */
static int check_egress_firewall(const HostCheckEnv *env, HostReport *report)
{
    bool needed = strcmp(env->config->network, "egress") == 0;
    const char *table = "nftables table inet " EGRESS_TABLE;
    if (env->egress_status == 0 && env->egress_rules && strstr(env->egress_rules, "jump guests"))
        return addf(report, "egress_firewall", HOST_LEVEL_OK, false, NULL,
                    "%s installed (network = %s, egress to %s)", table, env->config->network,
                    env->config->egress_destinations);
    if (env->egress_status == 0)
        return addf(report, "egress_firewall", HOST_LEVEL_WARN, false,
                    "start legbad, which replaces it with its own",
                    "%s is there but is not legbad's (no jump to chain guests)", table);
    if (env->egress_status == -ENOENT)
        return addf(report, "egress_firewall", HOST_LEVEL_OK, false, NULL,
                    "%s not installed yet: legbad installs it at start (network = %s)", table,
                    env->config->network);
    return addf(report, "egress_firewall", needed ? HOST_LEVEL_FAIL : HOST_LEVEL_WARN, false,
                "run legbad as root on a kernel with nftables (apt-get install nftables)",
                "nftables cannot be used: %s; %s",
                env->egress_error ? env->egress_error : strerror(-env->egress_status),
                needed ? "network = egress cannot start" : "orgs set to egress are refused");
}

/* Every check, in the order the report lists them: one function each, independent. */
static int (*const checks[])(const HostCheckEnv *env, HostReport *report) = {
    check_accel,         check_qemu_user,       check_seccomp_sandbox, check_security_driver,
    check_ksm,           check_memory,          check_data_dir_free,   check_images_dir_free,
    check_data_dir_mode, check_images_dir_mode, check_egress_firewall,
};

int hostcheck_run(const HostCheckEnv *env, HostReport **ret_report)
{
    HostReport *report;
    int r = host_report_new(&report);
    if (r < 0)
        return r;
    for (size_t i = 0; i < ARRAY_SIZE(checks); i++) {
        r = checks[i](env, report);
        if (r < 0) {
            host_report_free(report);
            return r;
        }
    }
    *ret_report = report;
    return 0;
}

static void quiet_libvirt(void *userdata, virErrorPtr error)
{
    /* The error is reported once, in the report line that needed it. */
}

/* libvirt's capabilities XML over a read-only connection (nothing is changed). */
static int read_capabilities(const char *uri, char **ret_caps, char **ret_error)
{
    virSetErrorFunc(NULL, quiet_libvirt);
    virConnectPtr conn = virConnectOpenReadOnly(uri);
    if (!conn)
        return util_set_error(ret_error, -ECONNREFUSED, "%s",
                              virGetLastErrorMessage() ? virGetLastErrorMessage()
                                                       : "cannot connect");
    char *caps = virConnectGetCapabilities(conn);
    if (!caps)
        util_set_error(ret_error, 0, "%s",
                       virGetLastErrorMessage() ? virGetLastErrorMessage() : "no capabilities");
    virConnectClose(conn);
    if (!caps)
        return -EIO;
    *ret_caps = caps;
    return 0;
}

int hostcheck_host(const Config *config, HostReport **ret_report)
{
    _cleanup_free_ char *reason = NULL, *caps = NULL, *libvirt_error = NULL;
    _cleanup_free_ char *templates_error = NULL;
    HostCheckEnv env = {.config = config, .root = ""};

    int r = virt_accel_choose(config->accel, &env.kvm, &reason);
    if (r < 0)
        return r;
    env.accel_reason = reason;

    if (read_capabilities(config->libvirt_uri, &caps, &libvirt_error) < 0 && !libvirt_error &&
        util_strdup("unknown error", &libvirt_error) < 0)
        return -ENOMEM;
    env.capabilities = caps;
    env.libvirt_error = libvirt_error;

    DomainTemplates *templates = NULL;
    r = domain_templates_load(config->domains_dir, &templates, &templates_error);
    if (r == -ENOMEM)
        return r;
    for (size_t i = 0; templates && template_size_names[i]; i++) {
        SizeInfo info;
        if (domain_templates_describe(templates, template_size_names[i], &info) == 0 &&
            info.memory_mib > env.largest_memory_mib) {
            env.largest_memory_mib = info.memory_mib;
            env.largest_size = template_size_names[i];
        }
    }
    env.templates_error = templates_error;

    _cleanup_free_ char *egress_rules = NULL, *egress_error = NULL;
    env.egress_status = egress_rules_list(&egress_rules, &egress_error);
    if (env.egress_status == -ENOMEM)
        return -ENOMEM;
    env.egress_rules = egress_rules;
    env.egress_error = egress_error;

    r = hostcheck_run(&env, ret_report);
    domain_templates_free(templates);
    return r;
}
