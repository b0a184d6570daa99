/* legbad: the daemon. Settings, start-up order, and the wait for a signal. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "api.h"
#include "config.h"
#include "console.h"
#include "disk.h"
#include "egress.h"
#include "hostcheck.h"
#include "http.h"
#include "image.h"
#include "install.h"
#include "janitor.h"
#include "log.h"
#include "pool.h"
#include "reconcile.h"
#include "store.h"
#include "template.h"
#include "util.h"
#include "virt.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: legbad [OPTION]...\n"
            "Serve the legba Instances API: browser VMs on libvirt, state in LMDB.\n"
            "\n"
            "  -c, --config FILE        read settings (key = value lines) from FILE\n"
            "      --check-host         check how hardened QEMU runs on this host with these\n"
            "                           settings, print one line per check and exit (1 on FAIL)\n"
            "      --listen ADDR:PORT   HTTP listen address (default 127.0.0.1:8080)\n"
            "      --libvirt-uri URI    libvirt connection (default qemu:///system)\n"
            "      --data-dir DIR       LMDB state and instance disks (default /var/lib/legba)\n"
            "      --images-dir DIR     image catalog (default /var/lib/legba/images)\n"
            "      --domains-dir DIR    domain templates (default %s)\n"
            "      --accel MODE         auto, kvm or tcg (default auto)\n"
            "      --public-url URL     base of access URLs ({instance}: the instance's uuid)\n"
            "      --tls-cert FILE      PEM certificate: serve HTTPS (with --tls-key)\n"
            "      --tls-key FILE       PEM private key of --tls-cert\n"
            "      --novnc-dir DIR      noVNC's files (default /usr/share/novnc)\n"
            "      --log-level LEVEL    error, warn, info or debug (default info)\n"
            "  -h, --help               show this help\n"
            "      --version            show the version\n"
            "\n"
            "Flags override the config file. Every config key is listed in README.md.\n",
            LEGBA_DOMAINS_DIR);
}

/* Flags that map one-to-one onto config keys. */
static const struct {
    const char *flag;
    const char *key;
} flag_keys[] = {
    {"listen", "listen"},         {"libvirt-uri", "libvirt_uri"}, {"data-dir", "data_dir"},
    {"images-dir", "images_dir"}, {"domains-dir", "domains_dir"}, {"accel", "accel"},
    {"public-url", "public_url"}, {"log-level", "log_level"},     {"tls-cert", "tls_cert"},
    {"tls-key", "tls_key"},       {"novnc-dir", "novnc_dir"},
};

enum { OPT_VERSION = 256, OPT_CHECK_HOST, OPT_KEY_BASE = 512 };

static int parse_args(int argc, char **argv, Config *config, bool *ret_check_host)
{
    struct option options[ARRAY_SIZE(flag_keys) + 5];
    size_t n = 0;
    options[n++] = (struct option){"config", required_argument, NULL, 'c'};
    options[n++] = (struct option){"help", no_argument, NULL, 'h'};
    options[n++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    options[n++] = (struct option){"check-host", no_argument, NULL, OPT_CHECK_HOST};
    for (size_t i = 0; i < ARRAY_SIZE(flag_keys); i++)
        options[n++] =
            (struct option){flag_keys[i].flag, required_argument, NULL, OPT_KEY_BASE + (int)i};
    options[n] = (struct option){0};

    /* First the config file, wherever it appears, so every flag can override it. */
    int c;
    while ((c = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        if (c == OPT_VERSION) {
            printf("legbad %s\n", LEGBA_VERSION);
            exit(0);
        }
        if (c == OPT_CHECK_HOST)
            *ret_check_host = true;
        if (c == '?') {
            fprintf(stderr, "Try 'legbad --help'.\n");
            return -EINVAL;
        }
        if (c == 'c') {
            _cleanup_free_ char *error = NULL;
            if (config_load_file(config, optarg, &error) < 0) {
                fprintf(stderr, "legbad: %s\n", error ? error : "cannot read config file");
                return -EINVAL;
            }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "legbad: unexpected argument '%s'\nTry 'legbad --help'.\n", argv[optind]);
        return -EINVAL;
    }
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        if (c < OPT_KEY_BASE)
            continue;
        _cleanup_free_ char *error = NULL;
        if (config_set(config, flag_keys[c - OPT_KEY_BASE].key, optarg, &error) < 0) {
            fprintf(stderr, "legbad: --%s: %s\n", flag_keys[c - OPT_KEY_BASE].flag,
                    error ? error : "invalid value");
            return -EINVAL;
        }
    }
    return 0;
}

/* An exclusive lock held for legbad's life on path: -EBUSY when another process holds it. */
static int lock_file(const char *path, int *ret_fd)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int r = -errno;
        close(fd);
        return r == -EWOULDBLOCK ? -EBUSY : r;
    }
    *ret_fd = fd;
    return 0;
}

/* One legbad per data dir: two would both reconcile and fight over domains. */
static int lock_data_dir(const char *data_dir, int *ret_fd)
{
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/legbad.lock", data_dir) < 0)
        return -ENOMEM;
    return lock_file(path, ret_fd);
}

/*
 * TLS certificate and key, read whole and checked to be a PEM certificate
 * and its own key, so that a bad pair stops legbad with its reason before
 * libvirt or the data dir is touched; both NULL for plain HTTP.
 */
static int load_tls(const Config *config, char **ret_cert, char **ret_key)
{
    if (!config->tls_cert[0])
        return 0;
    static const size_t max = 256 * 1024;
    _cleanup_free_ char *cert = NULL, *key = NULL;
    size_t cert_len, key_len;
    int r = util_read_file(config->tls_cert, max, &cert, &cert_len);
    if (r < 0) {
        log_error("tls_cert %s: cannot read: %s", config->tls_cert, strerror(-r));
        return r;
    }
    r = util_read_file(config->tls_key, max, &key, &key_len);
    if (r < 0) {
        log_error("tls_key %s: cannot read: %s", config->tls_key, strerror(-r));
        return r;
    }
    gnutls_certificate_credentials_t creds;
    if (gnutls_certificate_allocate_credentials(&creds) < 0)
        return -ENOMEM;
    gnutls_datum_t cert_pem = {(unsigned char *)cert, (unsigned)cert_len};
    gnutls_datum_t key_pem = {(unsigned char *)key, (unsigned)key_len};
    r = gnutls_certificate_set_x509_key_mem(creds, &cert_pem, &key_pem, GNUTLS_X509_FMT_PEM);
    gnutls_certificate_free_credentials(creds);
    if (r < 0) {
        log_error("tls_cert %s, tls_key %s: not a PEM certificate and its own key: %s",
                  config->tls_cert, config->tls_key, gnutls_strerror(r));
        return -EINVAL;
    }
    *ret_cert = TAKE_PTR(cert);
    *ret_key = TAKE_PTR(key);
    return 0;
}

/* The base of access URLs: public_url, or this listener's own address. */
static int base_url(const Config *config, bool tls, char **ret)
{
    int r;
    if (config->public_url[0])
        r = asprintf(ret, "%s", config->public_url);
    else if (strchr(config->listen_address, ':'))
        r = asprintf(ret, "%s://[%s]:%u", tls ? "https" : "http", config->listen_address,
                     config->listen_port);
    else
        r = asprintf(ret, "%s://%s:%u", tls ? "https" : "http", config->listen_address,
                     config->listen_port);
    return r < 0 ? -ENOMEM : 0;
}

/* MemTotal from /proc/meminfo in MiB, 0 when it cannot be read. */
/*
 * Installs the rules that confine guests' network traffic (src/egress.h),
 * every start, so they follow the config. Without them no guest gets
 * network mode egress: a config that asks for it by default stops legbad;
 * otherwise only orgs set to egress are refused (503).
 */
static int egress_setup(const Config *config, Virt *virt, bool kvm, bool *ret_ready)
{
    *ret_ready = false;
    uid_t uid;
    gid_t gid;
    _cleanup_free_ char *caps = NULL;
    int r = virt_capabilities(virt, &caps);
    if (r >= 0)
        r = hostcheck_qemu_identity(caps, kvm, &uid, &gid);
    if (r == -ENOENT && strncmp(config->libvirt_uri, "test:", 5) == 0) {
        /* The test driver runs no guest, so there is no traffic to confine. */
        *ret_ready = true;
        return 0;
    }
    _cleanup_free_ char *error = NULL;
    if (r < 0) {
        util_set_error(&error, r, "cannot learn QEMU's user from libvirt: %s", strerror(-r));
    } else if (uid == 0) {
        r = util_set_error(&error, -EPERM,
                           "QEMU runs as root, so its traffic cannot be told "
                           "apart from the host's");
    } else {
        /*
         * One legbad per host: the rules are the host's, for every QEMU of
         * that user, and a second legbad would replace them with its own.
         */
        static int host_lock = -1;
        r = host_lock >= 0 ? 0 : lock_file(EGRESS_LOCK_PATH, &host_lock);
        if (r == -EBUSY) {
            log_error("another legbad on this host holds %s: it owns the egress rules, which "
                      "confine every guest here; run one legbad per host",
                      EGRESS_LOCK_PATH);
            return r;
        }
        EgressPolicy policy = egress_policy(config, uid);
        if (r < 0)
            util_set_error(&error, r, "cannot lock %s: %s", EGRESS_LOCK_PATH, strerror(-r));
        else
            r = egress_rules_install(&policy, &error);
    }
    if (r < 0) {
        bool needed = strcmp(config->network, "egress") == 0;
        if (needed)
            log_error("egress rules (nftables table inet %s): %s; network = egress needs them",
                      EGRESS_TABLE, error ? error : strerror(-r));
        else
            log_warn("egress rules (nftables table inet %s) not installed: %s; orgs set to "
                     "network egress are refused until they are",
                     EGRESS_TABLE, error ? error : strerror(-r));
        return needed ? r : 0;
    }
    *ret_ready = true;
    log_info("egress rules installed (nftables table inet %s, QEMU uid %u): default network %s, "
             "egress to %s%s%s",
             EGRESS_TABLE, (unsigned)uid, config->network,
             strcmp(config->egress_destinations, "public") == 0 ? "public addresses"
                                                                : "listed endpoints only",
             config->egress_allow[0] ? ", allowed: " : "", config->egress_allow);
    return 0;
}

static int64_t host_memory_mib(void)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
    char line[256];
    long long kib;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "MemTotal: %lld kB", &kib) == 1)
            return kib / 1024;
    return 0;
}

/* legbad --check-host: the report on stdout; exit status 0 without a FAIL, 1 with one. */
static int run_check_host(const Config *config)
{
    HostReport *report = NULL;
    int r = hostcheck_host(config, &report);
    if (r < 0) {
        fprintf(stderr, "legbad: host check: %s\n", strerror(-r));
        return 1;
    }
    host_report_print(report, stdout);
    int status = host_report_worst(report) == HOST_LEVEL_FAIL ? 1 : 0;
    host_report_free(report);
    return status;
}

/*
 * The same checks at every start, logged line by line. A FAIL that makes
 * QEMU unsafe (running as root, seccomp off) stops legbad unless the
 * operator set allow_unsafe_host = yes; every other finding is only logged.
 */
static int check_host_at_start(const Config *config)
{
    HostReport *report = NULL;
    int r = hostcheck_host(config, &report);
    if (r < 0) {
        log_error("host check: %s", strerror(-r));
        return r;
    }
    host_report_log(report);
    bool unsafe = host_report_unsafe(report);
    host_report_free(report);
    if (!unsafe)
        return 0;
    if (config->allow_unsafe_host) {
        log_warn("host check: QEMU would run unsafely (see above); starting anyway, as "
                 "allow_unsafe_host = yes says");
        return 0;
    }
    log_error("host check: QEMU would run unsafely (see above); not starting. Fix the host, or "
              "set allow_unsafe_host = yes to start anyway");
    return -EPERM;
}

/* A console page without noVNC shows nothing: say so at start, not at the first viewer. */
static void check_novnc(const Config *config)
{
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/core/rfb.js", config->novnc_dir) < 0)
        return;
    if (access(path, R_OK) < 0)
        log_warn("novnc_dir %s: no core/rfb.js there (apt-get install novnc); access URLs will "
                 "show an empty page",
                 config->novnc_dir);
}

int main(int argc, char **argv)
{
    Config config;
    Store *store = NULL;
    Virt *virt = NULL;
    ImageCatalog *images = NULL;
    DomainTemplates *templates = NULL;
    HttpServer *server = NULL;
    AgentHub *agents = NULL;
    ConsoleRelay *consoles = NULL;
    Janitor *janitor = NULL;
    Pool *pool = NULL;
    _cleanup_free_ char *error = NULL;
    _cleanup_free_ char *base_template = NULL, *tls_cert = NULL, *tls_key = NULL;
    _cleanup_free_ char *accel_reason = NULL;
    _cleanup_close_ int lock_fd = -1;
    int ret = 1, r;

    log_set_ident("legbad");
    if (config_init(&config) < 0) {
        fprintf(stderr, "legbad: out of memory\n");
        return 1;
    }
    bool check_host = false;
    if (parse_args(argc, argv, &config, &check_host) < 0) {
        config_free(&config);
        return 2;
    }
    log_set_level(config.log_level);
    if (config_check(&config, &error) < 0) {
        fprintf(stderr, "legbad: %s\n", error);
        config_free(&config);
        return 2;
    }
    if (check_host) {
        ret = run_check_host(&config);
        config_free(&config);
        return ret;
    }
    if (load_tls(&config, &tls_cert, &tls_key) < 0) {
        config_free(&config);
        return 2;
    }

    /* Signals are taken by sigwait below; every thread started later inherits the mask. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    log_info("legbad %s starting: libvirt %s, data %s, images %s, domains %s", LEGBA_VERSION,
             config.libvirt_uri, config.data_dir, config.images_dir, config.domains_dir);

    bool kvm;
    r = virt_accel_choose(config.accel, &kvm, &accel_reason);
    if (r < 0)
        goto out;
    log_info("accel %s", accel_reason);
    r = check_host_at_start(&config);
    if (r < 0)
        goto out;

    r = disk_prepare_dir(config.data_dir);
    if (r < 0) {
        log_error("cannot prepare data dir %s: %s", config.data_dir, strerror(-r));
        goto out;
    }
    r = lock_data_dir(config.data_dir, &lock_fd);
    if (r < 0) {
        log_error("cannot lock data dir %s: %s", config.data_dir,
                  r == -EBUSY ? "another legbad is running on it" : strerror(-r));
        goto out;
    }
    char install_id[UUID_STR_LEN];
    r = install_id_load(config.data_dir, install_id);
    if (r < 0) {
        log_error("cannot read %s/installation-id: %s", config.data_dir, strerror(-r));
        goto out;
    }
    log_info("installation %s", install_id);
    r = store_open(config.data_dir, 0, &store);
    if (r < 0) {
        log_error("cannot open state in %s: %s", config.data_dir, strerror(-r));
        goto out;
    }
    r = domain_templates_load(config.domains_dir, &templates, &error);
    if (r < 0) {
        log_error("domain templates: %s", error ? error : strerror(-r));
        goto out;
    }
    r = image_catalog_load(config.images_dir, &images);
    if (r < 0) {
        log_error("image catalog %s: %s", config.images_dir, strerror(-r));
        goto out;
    }
    for (size_t i = 0; i < image_catalog_count(images); i++)
        log_info("image %s: %s", image_catalog_get(images, i)->name,
                 image_catalog_get(images, i)->disk_path);
    if (image_catalog_count(images) == 0)
        log_warn("no images in %s: every create will fail until one is built "
                 "(tools/build-image NAME)",
                 config.images_dir);

    static Api api;
    api = (Api){.config = &config,
                .store = store,
                .images = images,
                .templates = templates,
                .kvm = kvm,
                .install_id = install_id};
    api_check_catalog(&api);
    api.host_memory_mib = host_memory_mib();
    if (config.memory_overcommit_percent > 0 && api.host_memory_mib > 0)
        log_info("guest memory admitted up to %lld MiB (%u%% of %lld MiB)",
                 (long long)(api.host_memory_mib * config.memory_overcommit_percent / 100),
                 config.memory_overcommit_percent, (long long)api.host_memory_mib);
    r = virt_open(config.libvirt_uri, api_on_lifecycle, api_on_reconnect, &api, &virt, &error);
    if (r < 0) {
        log_error("%s", error ? error : strerror(-r));
        goto out;
    }
    api.virt = virt;
    r = egress_setup(&config, virt, kvm, &api.egress_ready);
    if (r < 0)
        goto out;
    r = agent_hub_new(virt, api_on_ready, &api, &agents);
    if (r < 0) {
        log_error("cannot start the guest agent thread: %s", strerror(-r));
        goto out;
    }
    api.agents = agents;

    r = reconcile_run(store, virt, config.data_dir, install_id, NULL);
    if (r < 0)
        log_warn("reconcile left work undone; it is retried at the next start");
    api_watch_unready(&api);

    ConsoleOptions console_options = {.max_viewers = config.console_max_viewers};
    r = console_relay_start(&console_options, &consoles);
    if (r < 0) {
        log_error("cannot start the console relay: %s", strerror(-r));
        goto out;
    }
    r = base_url(&config, tls_cert != NULL, &base_template);
    if (r < 0)
        goto out;
    static Viewer viewer;
    viewer = (Viewer){.config = &config,
                      .store = store,
                      .virt = virt,
                      .relay = consoles,
                      .base_template = base_template};
    api.viewer = &viewer;
    check_novnc(&config);
    log_info("access URLs: %s/console/<instance>/ (%s)", base_template,
             tls_cert ? "HTTPS" : "plain HTTP");

    HttpServerOptions http = {
        .address = config.listen_address,
        .port = config.listen_port,
        .max_connections = config.max_connections,
        .max_connections_per_ip = config.max_connections_per_ip,
        .connection_timeout = config.connection_timeout,
        .tls_cert_pem = tls_cert,
        .tls_key_pem = tls_key,
    };
    free(error);
    error = NULL;
    r = http_server_start(&http, api_handle, &api, &server, &error);
    if (r < 0) {
        log_error("%s", error ? error : strerror(-r));
        goto out;
    }
    /* Even with no pool configured: it removes what an earlier config left in it. */
    r = pool_new(&api, &pool);
    if (r < 0)
        goto out;
    api.pool = pool;
    r = janitor_start(&api, &janitor);
    if (r < 0) {
        log_error("cannot start the janitor thread: %s", strerror(-r));
        goto out;
    }
    log_info("instances live %u s unless asked otherwise (at most %u s)%s; ended ones show for "
             "%u s",
             config.instance_timeout, config.instance_timeout_max,
             config.idle_timeout ? ", or until nobody watched them for idle_timeout" : "",
             config.terminated_retention);
    log_info("listening on %s%s%s:%u", strchr(config.listen_address, ':') ? "[" : "",
             config.listen_address, strchr(config.listen_address, ':') ? "]" : "",
             http_server_port(server));

    int sig;
    sigwait(&signals, &sig);
    log_info("signal %s: shutting down; running instances are left running", strsignal(sig));
    ret = 0;

out:
    janitor_stop(janitor);
    pool_free(pool);
    /* Consoles first: libmicrohttpd must get every upgraded socket back before it stops. */
    console_relay_stop(consoles);
    http_server_stop(server);
    agent_hub_free(agents);
    virt_close(virt);
    image_catalog_free(images);
    domain_templates_free(templates);
    store_close(store);
    config_free(&config);
    return ret;
}
