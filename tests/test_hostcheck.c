/*
 * The host checks on fixture trees: every host file a check reads lives
 * under a temporary root (etc/libvirt/qemu.conf, proc/meminfo, sys/…,
 * dev/kvm), libvirt's capabilities are sample XML, and the data and images
 * dirs are temporary directories with the modes under test.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "hostcheck.h"
#include "util.h"

/* A QEMU identity no file in the fixture belongs to (the tests may run as root). */
#define QEMU_UID 54321
#define QEMU_GID 54322

typedef struct {
    char *root;
    Config config;
    HostCheckEnv env;
    HostReport *report;
} Fixture;

static char *caps_with(const char *secmodels)
{
    char *xml;
    assert_true(asprintf(&xml,
                         "<capabilities>\n  <host>\n    <uuid>x</uuid>\n%s  </host>\n"
                         "  <guest><os_type>hvm</os_type></guest>\n</capabilities>\n",
                         secmodels) > 0);
    return xml;
}

static const char dac_qemu[] = "    <secmodel>\n      <model>none</model>\n      <doi>0</doi>\n"
                               "    </secmodel>\n    <secmodel>\n      <model>dac</model>\n"
                               "      <doi>0</doi>\n"
                               "      <baselabel type='kvm'>+54321:+54322</baselabel>\n"
                               "      <baselabel type='qemu'>+54321:+54322</baselabel>\n"
                               "    </secmodel>\n";

static const char dac_root[] = "    <secmodel>\n      <model>dac</model>\n      <doi>0</doi>\n"
                               "      <baselabel type='kvm'>+0:+0</baselabel>\n"
                               "      <baselabel type='qemu'>+0:+0</baselabel>\n"
                               "    </secmodel>\n";

static const char apparmor_dac[] =
    "    <secmodel>\n      <model>apparmor</model>\n      <doi>0</doi>\n    </secmodel>\n"
    "    <secmodel>\n      <model>dac</model>\n      <doi>0</doi>\n"
    "      <baselabel type='kvm'>+54321:+54322</baselabel>\n"
    "      <baselabel type='qemu'>+54321:+54322</baselabel>\n    </secmodel>\n";

/* Writes root/rel (parents made) with text; mode as given. */
static void put(Fixture *f, const char *rel, const char *text, mode_t mode)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", f->root, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    assert_int_equal(util_mkdir_p(path, 0755), 0);
    *slash = '/';
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static char *path_in(Fixture *f, const char *rel)
{
    char *path;
    assert_true(asprintf(&path, "%s/%s", f->root, rel) > 0);
    return path;
}

static void set_key(Fixture *f, const char *key, const char *value)
{
    char *err = NULL;
    if (config_set(&f->config, key, value, &err) < 0)
        fail_msg("%s = %s: %s", key, value, err ? err : "?");
}

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    if (!f || !(f->root = strdup("/tmp/legba-test-hostcheck-XXXXXX")) || !mkdtemp(f->root) ||
        config_init(&f->config) < 0)
        return -1;
    *state = f;
    /* A quiet, sane host by default; each test changes what it is about. */
    put(f, "proc/meminfo",
        "MemTotal:       16384000 kB\nMemFree:         1000000 kB\n"
        "MemAvailable:   12288000 kB\nBuffers:          100000 kB\n",
        0644);
    put(f, "proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr\n\n", 0644);
    put(f, "sys/kernel/mm/ksm/run", "0\n", 0644);
    put(f, "etc/libvirt/qemu.conf", "# nothing set\n", 0644);
    put(f, "data/.keep", "", 0644);
    put(f, "images/.keep", "", 0644);
    char *data = path_in(f, "data"), *images = path_in(f, "images");
    assert_int_equal(chmod(data, 0711), 0);
    assert_int_equal(chmod(images, 0755), 0);
    set_key(f, "data_dir", data);
    set_key(f, "images_dir", images);
    free(data);
    free(images);
    f->env = (HostCheckEnv){
        .config = &f->config,
        .root = f->root,
        .kvm = false,
        .accel_reason = "tcg: /dev/kvm does not exist (software emulation, slow)",
        .largest_size = "large",
        .largest_memory_mib = 4096,
        .egress_status = -ENOENT,
    };
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    host_report_free(f->report);
    char *argv[] = {"rm", "-rf", f->root, NULL};
    util_spawn(argv, NULL);
    free(f->root);
    free((char *)f->env.capabilities);
    config_free(&f->config);
    free(f);
    return 0;
}

/* Runs every check and returns the line called name (failing when there is none). */
static const HostResult *run(Fixture *f, const char *name)
{
    host_report_free(f->report);
    f->report = NULL;
    assert_int_equal(hostcheck_run(&f->env, &f->report), 0);
    const HostResult *r = host_report_find(f->report, name);
    if (!r)
        fail_msg("no %s line in the report", name);
    return r;
}

static void set_caps(Fixture *f, const char *secmodels)
{
    free((char *)f->env.capabilities);
    f->env.capabilities = caps_with(secmodels);
}

static void assert_contains(const char *text, const char *needle)
{
    if (!text || !strstr(text, needle))
        fail_msg("'%s' expected in: %s", needle, text ? text : "(null)");
}

/* ---- the report ---- */

static void test_report_api(void **state)
{
    HostReport *report = NULL;
    assert_int_equal(host_report_new(&report), 0);
    assert_int_equal(host_report_worst(report), HOST_LEVEL_OK);
    assert_false(host_report_unsafe(report));
    assert_int_equal(host_report_add(report, "one", HOST_LEVEL_OK, "fine", "ignored"), 0);
    assert_int_equal(host_report_add(report, "two", HOST_LEVEL_WARN, "meh", "do this"), 0);
    assert_int_equal(host_report_worst(report), HOST_LEVEL_WARN);
    assert_false(host_report_unsafe(report));
    for (int i = 0; i < 40; i++) /* past the first allocation */
        assert_int_equal(host_report_add(report, "more", HOST_LEVEL_OK, "x", NULL), 0);
    assert_int_equal(host_report_add_unsafe(report, "three", "bad", "fix that"), 0);
    assert_int_equal(host_report_worst(report), HOST_LEVEL_FAIL);
    assert_true(host_report_unsafe(report));
    assert_int_equal(host_report_count(report), 43);
    assert_null(host_report_get(report, 43));
    assert_null(host_report_find(report, "four"));
    /* ok lines carry no advice */
    assert_null(host_report_find(report, "one")->advice);
    assert_string_equal(host_report_find(report, "three")->advice, "fix that");

    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    host_report_print(report, out);
    fclose(out);
    assert_contains(text, "ok    one              fine\n");
    assert_contains(text, "warn  two              meh; fix: do this\n");
    assert_contains(text, "FAIL  three            bad; fix: fix that\n");
    size_t lines = 0;
    for (char *p = text; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 43);
    free(text);

    assert_string_equal(host_level_to_string(HOST_LEVEL_OK), "ok");
    assert_string_equal(host_level_to_string(HOST_LEVEL_WARN), "warn");
    assert_string_equal(host_level_to_string(HOST_LEVEL_FAIL), "FAIL");
    host_report_free(report);
    host_report_free(NULL);
}

/* Every check has its line, in a fixed order, on a sane host. */
static void test_every_line(void **state)
{
    Fixture *f = *state;
    set_caps(f, dac_qemu);
    run(f, "accel");
    static const char *const names[] = {
        "accel",         "qemu_user",       "seccomp_sandbox", "security_driver",
        "ksm",           "memory",          "data_dir_free",   "images_dir_free",
        "data_dir_mode", "images_dir_mode", "egress_firewall",
    };
    assert_int_equal(host_report_count(f->report), ARRAY_SIZE(names));
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        assert_string_equal(host_report_get(f->report, i)->name, names[i]);
    /* Only the missing sVirt is worth a warning here; nothing fails. */
    assert_false(host_report_unsafe(f->report));
    for (size_t i = 0; i < host_report_count(f->report); i++) {
        const HostResult *r = host_report_get(f->report, i);
        if (strcmp(r->name, "security_driver") != 0 && strcmp(r->name, "data_dir_free") != 0 &&
            strcmp(r->name, "images_dir_free") != 0 && r->level != HOST_LEVEL_OK)
            fail_msg("%s: %s %s", r->name, host_level_to_string(r->level), r->value);
    }
}

/* ---- seccomp_sandbox in qemu.conf ---- */

static void test_seccomp_parse(void **state)
{
    Fixture *f = *state;
    char *conf = path_in(f, "etc/libvirt/qemu.conf");
    static const struct {
        const char *text;
        int r;
        bool set;
        long value;
    } cases[] = {
        {"seccomp_sandbox = 0\n", 0, true, 0},
        {"seccomp_sandbox=1", 0, true, 1},
        {"  seccomp_sandbox =\t0   # no filter\n", 0, true, 0},
        {"#seccomp_sandbox = 0\n", 0, false, 1},
        {"# seccomp_sandbox = 0\n", 0, false, 1},
        {"user = \"libvirt-qemu\"\n", 0, false, 1},
        {"", 0, false, 1},
        {"seccomp_sandbox_x = 0\n", 0, false, 1},
        {"seccomp_sandbox = -1\n", 0, true, -1},
        /* libvirt takes the first assignment */
        {"seccomp_sandbox = 1\nseccomp_sandbox = 0\n", 0, true, 1},
        {"seccomp_sandbox = off\n", -EBADMSG, true, 0},
        {"seccomp_sandbox = 0 1\n", -EBADMSG, true, 0},
        {"seccomp_sandbox = 99999999999999999999999\n", -EBADMSG, true, 0},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        put(f, "etc/libvirt/qemu.conf", cases[i].text, 0644);
        bool set = !cases[i].set;
        long value = 42;
        int r = hostcheck_read_seccomp_sandbox(conf, &set, &value);
        if (r != cases[i].r)
            fail_msg("'%s': %d, expected %d", cases[i].text, r, cases[i].r);
        assert_int_equal(set, cases[i].set);
        if (r == 0)
            assert_int_equal(value, cases[i].value);
    }

    /* A line past the bound is skipped whole, never read in pieces. */
    size_t n = 20000;
    char *big = malloc(n + 64);
    assert_non_null(big);
    strcpy(big, "seccomp_sandbox = 0");
    memset(big + strlen(big), ' ', n);
    strcpy(big + 19 + n, "\nseccomp_sandbox = 1\n");
    put(f, "etc/libvirt/qemu.conf", big, 0644);
    bool set = false;
    long value = 42;
    assert_int_equal(hostcheck_read_seccomp_sandbox(conf, &set, &value), 0);
    assert_true(set);
    assert_int_equal(value, 1);
    free(big);

    /* NUL bytes neither end the file nor hide a line. */
    put(f, "etc/libvirt/qemu.conf", "", 0644);
    FILE *out = fopen(conf, "we");
    assert_non_null(out);
    fwrite("# a\0b\nseccomp_sandbox = 0\n", 1, 26, out);
    fclose(out);
    assert_int_equal(hostcheck_read_seccomp_sandbox(conf, &set, &value), 0);
    assert_int_equal(value, 0);

    unlink(conf);
    assert_int_equal(hostcheck_read_seccomp_sandbox(conf, &set, &value), -ENOENT);
    free(conf);
}

static void test_seccomp_check(void **state)
{
    Fixture *f = *state;
    put(f, "etc/libvirt/qemu.conf", "seccomp_sandbox = 0\n", 0644);
    const HostResult *r = run(f, "seccomp_sandbox");
    assert_int_equal(r->level, HOST_LEVEL_FAIL);
    assert_true(r->unsafe);
    assert_contains(r->value, "0 in /etc/libvirt/qemu.conf");
    assert_contains(r->advice, "seccomp_sandbox = 1");
    assert_contains(r->advice, "allow_unsafe_host = yes");
    assert_true(host_report_unsafe(f->report));

    put(f, "etc/libvirt/qemu.conf", "seccomp_sandbox = 1\n", 0644);
    r = run(f, "seccomp_sandbox");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "1 (set in");

    put(f, "etc/libvirt/qemu.conf", "#seccomp_sandbox = 0\n", 0644);
    r = run(f, "seccomp_sandbox");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "libvirt's default: not set");

    char *conf = path_in(f, "etc/libvirt/qemu.conf");
    unlink(conf);
    free(conf);
    r = run(f, "seccomp_sandbox");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "libvirt's default: no /etc/libvirt/qemu.conf");

    put(f, "etc/libvirt/qemu.conf", "seccomp_sandbox = yes please\n", 0644);
    r = run(f, "seccomp_sandbox");
    assert_int_equal(r->level, HOST_LEVEL_WARN);
    assert_false(r->unsafe);
}

/* ---- memory ---- */

static void test_meminfo(void **state)
{
    Fixture *f = *state;
    char *meminfo = path_in(f, "proc/meminfo");
    uint64_t mib = 0;
    assert_int_equal(hostcheck_read_mem_available(meminfo, &mib), 0);
    assert_int_equal(mib, 12000);

    put(f, "proc/meminfo", "MemTotal:  1000 kB\nMemFree:  500 kB\n", 0644);
    assert_int_equal(hostcheck_read_mem_available(meminfo, &mib), -EBADMSG);
    put(f, "proc/meminfo", "MemAvailable:  lots kB\n", 0644);
    assert_int_equal(hostcheck_read_mem_available(meminfo, &mib), -EBADMSG);
    put(f, "proc/meminfo", "MemAvailable:  -5 kB\n", 0644);
    assert_int_equal(hostcheck_read_mem_available(meminfo, &mib), -EBADMSG);
    put(f, "proc/meminfo", "MemAvailable:  2048 MB\n", 0644);
    assert_int_equal(hostcheck_read_mem_available(meminfo, &mib), -EBADMSG);

    /* Less than one large instance: warn. */
    put(f, "proc/meminfo", "MemTotal:  8192000 kB\nMemAvailable:    3072000 kB\n", 0644);
    assert_int_equal(hostcheck_read_mem_available(meminfo, &mib), 0);
    assert_int_equal(mib, 3000);
    const HostResult *r = run(f, "memory");
    assert_int_equal(r->level, HOST_LEVEL_WARN);
    assert_contains(r->value, "MemAvailable 3000 MiB");
    assert_contains(r->value, "large");
    assert_non_null(r->advice);

    put(f, "proc/meminfo", "MemAvailable:    8192000 kB\n", 0644);
    r = run(f, "memory");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "MemAvailable 8000 MiB: 1 large instances (4096 MiB each) fit");

    /* Sizes unknown (templates unreadable): said, as a warning. */
    f->env.largest_size = NULL;
    f->env.templates_error = "cannot read domain template /x/large.xml";
    r = run(f, "memory");
    assert_int_equal(r->level, HOST_LEVEL_WARN);
    assert_contains(r->value, "/x/large.xml");

    unlink(meminfo);
    r = run(f, "memory");
    assert_int_equal(r->level, HOST_LEVEL_WARN);
    free(meminfo);
}

/* ---- KSM ---- */

static void test_ksm(void **state)
{
    Fixture *f = *state;
    const HostResult *r = run(f, "ksm");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "off");

    put(f, "sys/kernel/mm/ksm/run", "1\n", 0644);
    r = run(f, "ksm");
    assert_int_equal(r->level, HOST_LEVEL_WARN);
    assert_false(r->unsafe);
    assert_contains(r->value, "on (/sys/kernel/mm/ksm/run = 1)");
    assert_contains(r->advice, "/sys/kernel/mm/ksm/run");

    put(f, "sys/kernel/mm/ksm/run", "2\n", 0644);
    assert_int_equal(run(f, "ksm")->level, HOST_LEVEL_OK);

    put(f, "sys/kernel/mm/ksm/run", "banana\n", 0644);
    assert_int_equal(run(f, "ksm")->level, HOST_LEVEL_WARN);

    char *knob = path_in(f, "sys/kernel/mm/ksm/run");
    unlink(knob);
    free(knob);
    r = run(f, "ksm");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "no /sys/kernel/mm/ksm");
}

/* ---- libvirt's capabilities: QEMU's user, sVirt ---- */

static void test_caps_parse(void **state)
{
    uid_t uid = 1;
    gid_t gid = 1;
    char *caps = caps_with(dac_qemu);
    assert_int_equal(hostcheck_qemu_identity(caps, false, &uid, &gid), 0);
    assert_int_equal(uid, QEMU_UID);
    assert_int_equal(gid, QEMU_GID);
    assert_true(hostcheck_has_secmodel(caps, "dac"));
    assert_true(hostcheck_has_secmodel(caps, "none"));
    assert_false(hostcheck_has_secmodel(caps, "apparmor"));
    free(caps);

    /* Only the label of the domain type legbad uses counts; the other is the fallback. */
    caps = caps_with("<secmodel><model>dac</model><baselabel type='kvm'>+0:+0</baselabel>"
                     "<baselabel type='qemu'>+7:+8</baselabel></secmodel>");
    assert_int_equal(hostcheck_qemu_identity(caps, true, &uid, &gid), 0);
    assert_int_equal(uid, 0);
    assert_int_equal(hostcheck_qemu_identity(caps, false, &uid, &gid), 0);
    assert_int_equal(uid, 7);
    assert_int_equal(gid, 8);
    free(caps);
    caps = caps_with("<secmodel><model>dac</model><baselabel type=\"qemu\">+7:+8</baselabel>"
                     "</secmodel>");
    assert_int_equal(hostcheck_qemu_identity(caps, true, &uid, &gid), 0);
    assert_int_equal(uid, 7);
    free(caps);

    /* A label outside its secmodel, or a model without a label, is not one. */
    caps = caps_with("<secmodel><model>dac</model></secmodel>"
                     "<baselabel type='qemu'>+0:+0</baselabel>");
    assert_int_equal(hostcheck_qemu_identity(caps, false, &uid, &gid), -ENOENT);
    free(caps);
    caps = caps_with("<secmodel><model>selinux</model>"
                     "<baselabel type='qemu'>system_u:system_r:svirt_t:s0</baselabel>"
                     "</secmodel>");
    assert_int_equal(hostcheck_qemu_identity(caps, false, &uid, &gid), -ENOENT);
    assert_true(hostcheck_has_secmodel(caps, "selinux"));
    free(caps);
    caps = caps_with("<secmodel><model>dac</model><baselabel type='qemu'>+x:+8</baselabel>"
                     "</secmodel>");
    assert_int_equal(hostcheck_qemu_identity(caps, false, &uid, &gid), -EBADMSG);
    free(caps);
    caps = caps_with("<secmodel><model>dac</model><baselabel type='qemu'>+5</baselabel>"
                     "</secmodel>");
    assert_int_equal(hostcheck_qemu_identity(caps, false, &uid, &gid), -EBADMSG);
    free(caps);
    /* Truncated XML: no closing tag, no block. */
    assert_int_equal(hostcheck_qemu_identity("<secmodel><model>dac</model><baselabel "
                                             "type='qemu'>+5:+5</baselabel>",
                                             false, &uid, &gid),
                     -ENOENT);
    assert_int_equal(hostcheck_qemu_identity(NULL, false, &uid, &gid), -ENOENT);
    assert_false(hostcheck_has_secmodel(NULL, "dac"));
}

static void test_qemu_user(void **state)
{
    Fixture *f = *state;
    set_caps(f, dac_root);
    const HostResult *r = run(f, "qemu_user");
    assert_int_equal(r->level, HOST_LEVEL_FAIL);
    assert_true(r->unsafe);
    assert_contains(r->value, "uid 0");
    assert_contains(r->value, "root");
    assert_contains(r->advice, "user = \"libvirt-qemu\"");
    assert_true(host_report_unsafe(f->report));

    set_caps(f, dac_qemu);
    r = run(f, "qemu_user");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "uid 54321, gid 54322");
    assert_false(host_report_unsafe(f->report));

    /* Group root alone fails, but does not stop legbad. */
    set_caps(f, "<secmodel><model>dac</model><baselabel type='qemu'>+54321:+0</baselabel>"
                "</secmodel>");
    r = run(f, "qemu_user");
    assert_int_equal(r->level, HOST_LEVEL_FAIL);
    assert_false(r->unsafe);

    /* A driver without DAC labels (the test driver): unknown, a warning. */
    set_caps(f, "<secmodel><model>testSecurity</model><doi></doi></secmodel>");
    r = run(f, "qemu_user");
    assert_int_equal(r->level, HOST_LEVEL_WARN);

    /* libvirt unreachable: a failure that says why. */
    free((char *)f->env.capabilities);
    f->env.capabilities = NULL;
    f->env.libvirt_error = "Failed to connect socket";
    r = run(f, "qemu_user");
    assert_int_equal(r->level, HOST_LEVEL_FAIL);
    assert_false(r->unsafe);
    assert_contains(r->value, "Failed to connect socket");
}

/* libvirt-qemu itself, by name, where this host has that user (Debian's libvirt). */
static void test_qemu_user_named(void **state)
{
    Fixture *f = *state;
    set_caps(f, "<secmodel><model>dac</model><baselabel type='qemu'>libvirt-qemu:libvirt-qemu"
                "</baselabel></secmodel>");
    const HostResult *r = run(f, "qemu_user");
    if (r->level == HOST_LEVEL_WARN)
        skip(); /* no such user here */
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "libvirt-qemu:");
}

static void test_security_driver(void **state)
{
    Fixture *f = *state;
    set_caps(f, apparmor_dac);
    const HostResult *r = run(f, "security_driver");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "apparmor");

    set_caps(f, "<secmodel><model>selinux</model><doi>0</doi></secmodel>");
    r = run(f, "security_driver");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "selinux");

    /* Neither in libvirt nor in the kernel: a warning, never a failure. */
    set_caps(f, dac_qemu);
    r = run(f, "security_driver");
    assert_int_equal(r->level, HOST_LEVEL_WARN);
    assert_false(r->unsafe);
    assert_contains(r->value, "sVirt confinement is not available");
    assert_contains(r->value, "DAC");
    assert_contains(r->value, "seccomp");

    /* The kernel has AppArmor, libvirt does not use it. */
    put(f, "sys/module/apparmor/parameters/enabled", "Y\n", 0644);
    r = run(f, "security_driver");
    assert_int_equal(r->level, HOST_LEVEL_WARN);
    assert_contains(r->value, "AppArmor is enabled in the kernel");
    put(f, "sys/module/apparmor/parameters/enabled", "N\n", 0644);
    r = run(f, "security_driver");
    assert_contains(r->value, "neither AppArmor nor SELinux");
    put(f, "sys/fs/selinux/enforce", "1\n", 0644);
    r = run(f, "security_driver");
    assert_contains(r->value, "SELinux is enabled in the kernel");
}

/* ---- accel ---- */

static void test_accel(void **state)
{
    Fixture *f = *state;
    set_caps(f, dac_qemu);
    /* TCG as the automatic choice: ok, with the reason. */
    const HostResult *r = run(f, "accel");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "tcg (accel = auto): /dev/kvm does not exist");
    assert_contains(r->value, "CPU has no vmx/svm");

    /* accel = kvm without /dev/kvm: every create would fail. */
    set_key(f, "accel", "kvm");
    f->env.kvm = true;
    f->env.accel_reason = "kvm: requested by configuration";
    r = run(f, "accel");
    assert_int_equal(r->level, HOST_LEVEL_FAIL);
    assert_false(r->unsafe);
    assert_contains(r->value, "/dev/kvm does not exist");

    /* /dev/kvm that QEMU's user cannot open (root's, 0600). */
    put(f, "proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme vmx tsc\n", 0644);
    put(f, "dev/kvm", "", 0600);
    r = run(f, "accel");
    assert_int_equal(r->level, HOST_LEVEL_FAIL);
    assert_contains(r->value, "cannot open it");
    assert_contains(r->advice, "chmod 660 /dev/kvm");

    /* Open to it: ok. */
    char *kvm = path_in(f, "dev/kvm");
    assert_int_equal(chmod(kvm, 0666), 0);
    r = run(f, "accel");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "kvm (accel = kvm): requested by configuration");
    assert_contains(r->value, "QEMU's user can open it");
    assert_contains(r->value, "CPU has vmx/svm");

    /* Paravirtual KVM (no vmx/svm) forced: a warning that names the way out. */
    put(f, "proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme vmxnope tsc\n", 0644);
    r = run(f, "accel");
    assert_int_equal(r->level, HOST_LEVEL_WARN);
    assert_contains(r->advice, "accel = auto");

    /* accel = tcg where KVM would work: ok, with the hint. */
    put(f, "proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu svm\n", 0644);
    set_key(f, "accel", "tcg");
    f->env.kvm = false;
    f->env.accel_reason = "tcg: requested by configuration";
    r = run(f, "accel");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "accel = auto would pick it");
    free(kvm);
}

/* ---- the data and images dirs ---- */

static void test_dir_modes(void **state)
{
    Fixture *f = *state;
    const HostResult *r = run(f, "data_dir_mode");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "0711");
    assert_int_equal(run(f, "images_dir_mode")->level, HOST_LEVEL_OK);

    assert_int_equal(chmod(f->config.data_dir, 0777), 0);
    r = run(f, "data_dir_mode");
    assert_int_equal(r->level, HOST_LEVEL_FAIL);
    assert_contains(r->value, "0777, writable by group and others");
    assert_contains(r->advice, "chmod go-w");
    assert_contains(r->advice, f->config.data_dir);
    assert_int_equal(host_report_worst(f->report), HOST_LEVEL_FAIL);
    /* Bad, but not the kind that stops legbad. */
    assert_false(r->unsafe);

    assert_int_equal(chmod(f->config.data_dir, 0775), 0);
    assert_contains(run(f, "data_dir_mode")->value, "writable by its group");
    assert_int_equal(chmod(f->config.data_dir, 01757), 0);
    assert_contains(run(f, "data_dir_mode")->value, "writable by others");
    assert_int_equal(chmod(f->config.images_dir, 0757), 0);
    assert_int_equal(run(f, "images_dir_mode")->level, HOST_LEVEL_FAIL);

    /* Not there yet: legbad makes the data dir; without an images dir no create works. */
    char *absent = path_in(f, "nothing/here");
    set_key(f, "data_dir", absent);
    set_key(f, "images_dir", absent);
    r = run(f, "data_dir_mode");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "absent");
    r = run(f, "images_dir_mode");
    assert_int_equal(r->level, HOST_LEVEL_WARN);
    assert_contains(r->advice, "tools/build-image");
    /* Free space is measured where the dir will be. */
    r = run(f, "data_dir_free");
    assert_contains(r->value, "GiB free on ");
    assert_contains(r->value, f->root);
    free(absent);

    /* A file where a dir should be. */
    char *file = path_in(f, "proc/meminfo");
    set_key(f, "data_dir", file);
    assert_int_equal(run(f, "data_dir_mode")->level, HOST_LEVEL_FAIL);
    free(file);
}

static void test_free_space(void **state)
{
    Fixture *f = *state;
    const HostResult *r = run(f, "data_dir_free");
    assert_int_not_equal(r->level, HOST_LEVEL_FAIL);
    assert_contains(r->value, "GiB free");
    assert_contains(r->value, "warns under 5 GiB");
    r = run(f, "images_dir_free");
    assert_int_not_equal(r->level, HOST_LEVEL_FAIL);
    assert_contains(r->value, f->config.images_dir);
}

/* The egress table: legbad's, absent (installed at start), foreign, or nftables unusable. */
static void test_egress_firewall(void **state)
{
    Fixture *f = *state;
    const HostResult *r = run(f, "egress_firewall");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "not installed yet");

    f->env.egress_status = 0;
    f->env.egress_rules = "table inet legba {\n\tchain output {\n\t\tmeta skuid 64055 jump "
                          "guests\n\t}\n}\n";
    r = run(f, "egress_firewall");
    assert_int_equal(r->level, HOST_LEVEL_OK);
    assert_contains(r->value, "installed (network = none");

    f->env.egress_rules = "table inet legba {\n}\n";
    r = run(f, "egress_firewall");
    assert_int_equal(r->level, HOST_LEVEL_WARN);

    f->env.egress_status = -EPERM;
    f->env.egress_rules = NULL;
    f->env.egress_error = "Operation not permitted";
    r = run(f, "egress_firewall");
    assert_int_equal(r->level, HOST_LEVEL_WARN);
    assert_contains(r->value, "Operation not permitted");
    assert_contains(r->value, "orgs set to egress are refused");
    set_key(f, "network", "egress");
    r = run(f, "egress_firewall");
    assert_int_equal(r->level, HOST_LEVEL_FAIL);
    assert_contains(r->value, "network = egress cannot start");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_api),
        cmocka_unit_test_setup_teardown(test_every_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seccomp_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seccomp_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_meminfo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ksm, setup, teardown),
        cmocka_unit_test(test_caps_parse),
        cmocka_unit_test_setup_teardown(test_qemu_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qemu_user_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_security_driver, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_space, setup, teardown),
        cmocka_unit_test_setup_teardown(test_egress_firewall, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
