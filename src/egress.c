#include "egress.h"

#include <errno.h>
#include <nftables/libnftables.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Never reachable from a guest, whatever the config allows besides its listed endpoints. */
static const char *const denied_ipv4[] = {
    "0.0.0.0/8",       /* "this network" */
    "10.0.0.0/8",      /* RFC 1918 */
    "100.64.0.0/10",   /* carrier-grade NAT */
    "127.0.0.0/8",     /* loopback: legbad, libvirtd, everything local */
    "169.254.0.0/16",  /* link-local, cloud metadata at 169.254.169.254 */
    "172.16.0.0/12",   /* RFC 1918 */
    "192.0.0.0/24",    /* IETF protocol assignments */
    "192.0.2.0/24",    /* documentation */
    "192.168.0.0/16",  /* RFC 1918 */
    "198.18.0.0/15",   /* benchmarking */
    "198.51.100.0/24", /* documentation */
    "203.0.113.0/24",  /* documentation */
    "224.0.0.0/4",     /* multicast */
    "240.0.0.0/4",     /* reserved, and the broadcast address */
};

static const char *const denied_ipv6[] = {
    "::/127",        /* unspecified and loopback */
    "::ffff:0:0/96", /* IPv4-mapped: would bypass the IPv4 list */
    "64:ff9b::/96",  /* NAT64 */
    "2001:db8::/32", /* documentation */
    "fc00::/7",      /* unique local */
    "fe80::/10",     /* link-local */
    "ff00::/8",      /* multicast */
};

EgressPolicy egress_policy(const Config *config, uid_t qemu_uid)
{
    return (EgressPolicy){
        .qemu_uid = qemu_uid,
        .public = strcmp(config->egress_destinations, "public") == 0,
        .allow = config->egress_allow,
        .forward = config->guest_forward,
    };
}

/* Appends to a growing script; the first failure sticks. */
typedef struct {
    char *text;
    size_t len, size;
    int error;
} Script;

static void __attribute__((format(printf, 2, 3))) emit(Script *s, const char *format, ...)
{
    if (s->error)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, format);
        int n = vsnprintf(s->text ? s->text + s->len : NULL, s->text ? s->size - s->len : 0, format,
                          ap);
        va_end(ap);
        if (n < 0) {
            s->error = -EINVAL;
            return;
        }
        if (s->text && (size_t)n < s->size - s->len) {
            s->len += (size_t)n;
            return;
        }
        size_t size = s->size ? s->size * 2 : 4096;
        while (size < s->len + (size_t)n + 1)
            size *= 2;
        char *text = realloc(s->text, size);
        if (!text) {
            s->error = -ENOMEM;
            return;
        }
        s->text = text;
        s->size = size;
    }
}

static void emit_list(Script *s, const char *const *items, size_t count)
{
    for (size_t i = 0; i < count; i++)
        emit(s, "%s%s", i ? ", " : "", items[i]);
}

/* One accept rule per protocol for each endpoint of a space-separated list. */
static void emit_allowed(Script *s, const char *endpoints)
{
    uint32_t address;
    uint16_t port;
    int r;
    for (const char *cursor = endpoints; (r = config_endpoint_next(&cursor, &address, &port)) > 0;)
        for (unsigned i = 0; i < 2; i++)
            emit(s, "\t\tip daddr %u.%u.%u.%u %s dport %u accept\n", address >> 24,
                 (address >> 16) & 0xff, (address >> 8) & 0xff, address & 0xff, i ? "udp" : "tcp",
                 port);
    if (r < 0)
        s->error = -EINVAL;
}

int egress_rules_render(const EgressPolicy *policy, char **ret_script)
{
    Script s = {0};
    /* Create-then-delete makes the replacement one transaction whether or not it existed. */
    emit(&s, "table inet " EGRESS_TABLE "\ndelete table inet " EGRESS_TABLE "\n");
    /*
     * Only packets of the QEMU user's own sockets are judged. Packets without
     * a full socket (a SYN-ACK from a listener, kernel replies) match no
     * skuid, so a test of "!= uid" would not pass them either: hence a jump
     * on a positive match.
     */
    emit(&s, "table inet " EGRESS_TABLE " {\n\tchain output {\n");
    emit(&s, "\t\ttype filter hook output priority filter; policy accept;\n");
    emit(&s, "\t\tmeta skuid %u jump guests\n\t}\n", (unsigned)policy->qemu_uid);
    emit(&s, "\tchain guests {\n");
    emit_allowed(&s, policy->allow ? policy->allow : "");
    if (policy->forward && *policy->forward &&
        !(policy->allow && strstr(policy->allow, policy->forward)))
        emit_allowed(&s, policy->forward);
    emit(&s, "\t\tfib daddr type { local, broadcast, multicast, anycast } counter reject\n");
    emit(&s, "\t\tip daddr { ");
    emit_list(&s, denied_ipv4, ARRAY_SIZE(denied_ipv4));
    emit(&s, " } counter reject\n\t\tip6 daddr { ");
    emit_list(&s, denied_ipv6, ARRAY_SIZE(denied_ipv6));
    emit(&s, " } counter reject\n");
    if (!policy->public)
        emit(&s, "\t\tcounter reject\n");
    emit(&s, "\t}\n}\n");
    if (s.error) {
        free(s.text);
        return s.error;
    }
    *ret_script = s.text;
    return 0;
}

/* Runs one nft command string; its output (when ret_output) and errors are captured. */
static int nft_run(const char *command, char **ret_output, char **ret_error)
{
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!nft)
        return -ENOMEM;
    int r = 0;
    if (nft_ctx_buffer_output(nft) < 0 || nft_ctx_buffer_error(nft) < 0) {
        r = -ENOMEM;
    } else if (nft_run_cmd_from_buffer(nft, command) != 0) {
        const char *error = nft_ctx_get_error_buffer(nft);
        if (ret_error)
            *ret_error = strdup(error && *error ? error : "nft failed");
        r = error && strstr(error, "No such file or directory") ? -ENOENT : -EIO;
        if (error && strstr(error, "Operation not permitted"))
            r = -EPERM;
    } else if (ret_output) {
        const char *output = nft_ctx_get_output_buffer(nft);
        *ret_output = strdup(output ? output : "");
        if (!*ret_output)
            r = -ENOMEM;
    }
    nft_ctx_free(nft);
    return r;
}

int egress_rules_install(const EgressPolicy *policy, char **ret_error)
{
    _cleanup_free_ char *script = NULL;
    int r = egress_rules_render(policy, &script);
    if (r < 0) {
        if (ret_error)
            *ret_error =
                strdup(r == -EINVAL ? "an egress endpoint does not parse" : "out of memory");
        return r;
    }
    return nft_run(script, NULL, ret_error);
}

int egress_rules_list(char **ret_text, char **ret_error)
{
    return nft_run("list table inet " EGRESS_TABLE, ret_text, ret_error);
}

int egress_netdev(const char *mode, const char *guest_forward, char **ret_netdev)
{
    bool egress = strcmp(mode, "egress") == 0;
    if (!egress && strcmp(mode, "none") != 0)
        return -EINVAL;
    bool forward = guest_forward && *guest_forward;
    if (!egress && !forward) {
        *ret_netdev = NULL;
        return 0;
    }
    /* No IPv6: the guest's only way out is IPv4, which the rules judge. */
    char *netdev;
    if (asprintf(&netdev, "user,id=legbanet0,restrict=%s,ipv6=off%s%s", egress ? "off" : "on",
                 forward ? ",guestfwd=tcp:10.0.2.100:80-tcp:" : "",
                 forward ? guest_forward : "") < 0)
        return -ENOMEM;
    *ret_netdev = netdev;
    return 0;
}
