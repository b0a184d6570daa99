/*
 * legbactl: the operator's handle on a legba host's store — orgs, their API
 * tokens, and a read-only view of the instances on record. It opens the same
 * LMDB environment as legbad, which may be running.
 *
 * Every command prints exactly one JSON object on stdout. Errors go to stderr:
 * exit 1 for a failure at run time, 2 for a command line that makes no sense.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "store.h"
#include "util.h"
#include "uuid.h"

#define DEFAULT_DATA_DIR "/var/lib/legba"
#define EXIT_USAGE 2

typedef enum {
    ORG_NONE,     /* the command takes no --org */
    ORG_OPTIONAL, /* --org narrows the command to one org, which must exist */
    ORG_REQUIRED,
} OrgOption;

/* What the command line handed a command, checked against its table entry. */
/* The quota options, in the order of the StoreQuota fields. */
static const char *const quota_options[] = {"instances", "vcpus", "memory-mib"};

typedef struct {
    const char *operand;        /* the one positional argument, when the command has one */
    const char *org;            /* --org in canonical form, or NULL */
    char org_buf[UUID_STR_LEN]; /* holds what org points to */
    /* --instances, --vcpus, --memory-mib: a limit, 0 for none, -1 when not given. */
    int64_t quota[3];
} Args;

typedef struct {
    const char *group;
    const char *verb;
    const char *operand; /* name of the positional argument in usage, or NULL for none */
    OrgOption org;
    /* Checks the operand before the store is opened: NULL when fine, else why not. */
    const char *(*check)(const char *operand);
    /* 0 with *ret_output set, or an exit status after reporting the error. */
    int (*run)(Store *store, const Args *args, cJSON **ret_output);
    const char *summary;
    const char *help;
    bool takes_quota; /* accepts --instances, --vcpus, --memory-mib */
} Command;

static void json_deletep(cJSON **json)
{
    cJSON_Delete(*json);
}
#define _cleanup_json_ _cleanup_(json_deletep)

/* The error reported for a failure at run time: "legbactl: <message>", exit 1. */
__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
    va_list ap;
    fputs("legbactl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAILURE;
}

/* Messages for the errors the store returns that strerror() words poorly. */
static const char *store_strerror(int r)
{
    switch (r) {
    case -EBADMSG:
        return "a record in the store is damaged";
    case -ENOSPC:
        return "the store is full (its map size is reached)";
    case -ENOMEM:
        return "out of memory";
    default:
        return strerror(-r);
    }
}

/* --- checks on what the operator typed -------------------------------------------------- */

/* Length of the UTF-8 sequence at s with its code point, or 0 if it is not one (overlong,
 * surrogate, beyond U+10FFFF, truncated). Never reads past a NUL. */
static size_t utf8_decode(const unsigned char *s, uint32_t *ret_cp)
{
    size_t len;
    uint32_t cp, min;
    if (s[0] < 0x80) {
        *ret_cp = s[0];
        return 1;
    } else if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2, cp = s[0] & 0x1f, min = 0x80;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3, cp = s[0] & 0x0f, min = 0x800;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4, cp = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *ret_cp = cp;
    return len;
}

/* Names end up in JSON and on terminals: UTF-8 only, and nothing that moves a cursor. */
static const char *check_org_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > STORE_ORG_NAME_MAX)
        return "must be 1 to 64 bytes long";
    for (const unsigned char *p = (const unsigned char *)name; *p;) {
        uint32_t cp;
        size_t n = utf8_decode(p, &cp);
        if (n == 0)
            return "must be valid UTF-8";
        if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f))
            return "must not contain control characters";
        p += n;
    }
    return NULL;
}

static const char *check_uuid(const char *text)
{
    return uuid_is_valid(text) ? NULL : "must be a UUID";
}

/* --- JSON output -------------------------------------------------------------------------- */

static bool add_time(cJSON *json, const char *name, int64_t epoch)
{
    char text[UTIL_ISO8601_LEN];
    util_format_iso8601(epoch, text);
    return cJSON_AddStringToObject(json, name, text) != NULL;
}

static bool add_item(cJSON *items, cJSON *item)
{
    if (!item)
        return false;
    if (!cJSON_AddItemToArray(items, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

/*
 * What every list command prints: {"<name>":[...],"total":N}, one to_json(item) for each of
 * the count items of the given size that the store returned (r, reported here if it failed).
 */
static int list_output(const char *name, int r, const void *items, size_t count, size_t size,
                       cJSON *(*to_json)(const void *item), cJSON **ret_output)
{
    if (r < 0)
        return fail("cannot list %s: %s", name, store_strerror(r));
    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    cJSON *array = json ? cJSON_AddArrayToObject(json, name) : NULL;
    if (!array || !cJSON_AddNumberToObject(json, "total", (double)count))
        return fail("out of memory");
    for (size_t i = 0; i < count; i++)
        if (!add_item(array, to_json((const char *)items + i * size)))
            return fail("out of memory");
    *ret_output = TAKE_PTR(json);
    return 0;
}

/* A limit, or null for none. */
static bool add_limit(cJSON *json, const char *name, int64_t limit)
{
    return limit > 0 ? cJSON_AddNumberToObject(json, name, (double)limit) != NULL
                     : cJSON_AddNullToObject(json, name) != NULL;
}

static cJSON *org_to_json(const void *item)
{
    const StoreOrg *org = item;
    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    cJSON *quota;
    if (!json || !cJSON_AddStringToObject(json, "org_uuid", org->uuid) ||
        !cJSON_AddStringToObject(json, "name", org->name) ||
        !add_time(json, "created_at", org->created_at) ||
        !(quota = cJSON_AddObjectToObject(json, "quota")) ||
        !add_limit(quota, "instances", org->quota.instances) ||
        !add_limit(quota, "vcpus", org->quota.vcpus) ||
        !add_limit(quota, "memory_mib", org->quota.memory_mib) ||
        !(org->network[0] ? cJSON_AddStringToObject(json, "network", org->network)
                          : cJSON_AddNullToObject(json, "network")))
        return NULL;
    return TAKE_PTR(json);
}

/* A token as listed: its public id, never its hash. */
static cJSON *token_to_json(const void *item)
{
    const StoreToken *token = item;
    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    if (!json || !cJSON_AddStringToObject(json, "token_id", token->id) ||
        !cJSON_AddStringToObject(json, "org_uuid", token->org_uuid) ||
        !add_time(json, "created_at", token->created_at))
        return NULL;
    return TAKE_PTR(json);
}

static cJSON *instance_to_json(const void *item)
{
    const StoreInstance *instance = item;
    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    if (!json || !cJSON_AddStringToObject(json, "instance_uuid", instance->uuid) ||
        !cJSON_AddStringToObject(json, "org_uuid", instance->org_uuid) ||
        !cJSON_AddStringToObject(json, "image", instance->image) ||
        !cJSON_AddStringToObject(json, "size", instance->size) ||
        !cJSON_AddStringToObject(json, "state", instance_state_to_string(instance->state)) ||
        !add_time(json, "created_at", instance->created_at))
        return NULL;
    return TAKE_PTR(json);
}

/* --- commands ----------------------------------------------------------------------------- */

/* A fresh token for org_uuid: the secret goes to ret_secret, only its hash to the store. */
static int token_new(const char *org_uuid, int64_t now, StoreToken *ret_token,
                     char ret_secret[AUTH_TOKEN_STR_LEN])
{
    StoreToken token = {.created_at = now};
    int r = uuid_generate(token.id);
    if (r < 0)
        return r;
    memcpy(token.org_uuid, org_uuid, UUID_STR_LEN);
    r = auth_token_generate(ret_secret, token.hash);
    if (r < 0)
        return r;
    *ret_token = token;
    return 0;
}

static int run_org_create(Store *store, const Args *args, cJSON **ret_output)
{
    StoreOrg org = {.created_at = (int64_t)time(NULL)};
    StoreToken token;
    char secret[AUTH_TOKEN_STR_LEN];

    int r = uuid_generate(org.uuid);
    if (r < 0)
        return fail("cannot generate an org uuid: %s", strerror(-r));
    memcpy(org.name, args->operand, strlen(args->operand));
    r = token_new(org.uuid, org.created_at, &token, secret);
    if (r < 0)
        return fail("cannot generate a token: %s", strerror(-r));
    r = store_org_create(store, &org, &token);
    if (r < 0)
        return fail("cannot create the org: %s", store_strerror(r));

    /* The only time the secret is shown: the store keeps its hash alone. */
    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    if (!json || !cJSON_AddStringToObject(json, "org_uuid", org.uuid) ||
        !cJSON_AddStringToObject(json, "name", org.name) ||
        !cJSON_AddStringToObject(json, "token", secret) ||
        !cJSON_AddStringToObject(json, "token_id", token.id) ||
        !add_time(json, "created_at", org.created_at))
        return fail("out of memory; the org %s exists, its token is lost: revoke %s", org.uuid,
                    token.id);
    *ret_output = TAKE_PTR(json);
    return 0;
}

static int run_org_list(Store *store, const Args *args, cJSON **ret_output)
{
    _cleanup_free_ StoreOrg *orgs = NULL;
    size_t count = 0;
    int r = store_org_list(store, &orgs, &count);
    return list_output("orgs", r, orgs, count, sizeof(*orgs), org_to_json, ret_output);
}

/* Sets the limits given on the command line and keeps the others. */
static int run_org_quota(Store *store, const Args *args, cJSON **ret_output)
{
    StoreOrg org;
    int r = store_org_get(store, args->org, &org);
    if (r == -ENOENT)
        return fail("no org with uuid %s", args->org);
    if (r < 0)
        return fail("cannot read org %s: %s", args->org, store_strerror(r));
    StoreQuota quota = org.quota;
    int64_t *fields[] = {&quota.instances, &quota.vcpus, &quota.memory_mib};
    for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
        if (args->quota[i] >= 0)
            *fields[i] = args->quota[i];
    r = store_org_set_quota(store, args->org, &quota, &org);
    if (r < 0)
        return fail("cannot set the quota of org %s: %s", args->org, store_strerror(r));
    cJSON *json = org_to_json(&org);
    if (!json)
        return fail("out of memory");
    *ret_output = json;
    return 0;
}

static const char *check_network(const char *mode)
{
    if (strcmp(mode, "none") == 0 || strcmp(mode, "egress") == 0 || strcmp(mode, "default") == 0)
        return NULL;
    return "must be none, egress or default";
}

static int run_org_network(Store *store, const Args *args, cJSON **ret_output)
{
    StoreOrg org;
    const char *mode = strcmp(args->operand, "default") == 0 ? "" : args->operand;
    int r = store_org_set_network(store, args->org, mode, &org);
    if (r == -ENOENT)
        return fail("no org with uuid %s", args->org);
    if (r < 0)
        return fail("cannot set the network of org %s: %s", args->org, store_strerror(r));
    cJSON *json = org_to_json(&org);
    if (!json)
        return fail("out of memory");
    *ret_output = json;
    return 0;
}

/* A list narrowed to an org that does not exist is a mistake, not an empty list. */
static int require_org(Store *store, const char *org_uuid)
{
    StoreOrg org;
    int r = store_org_get(store, org_uuid, &org);
    if (r == -ENOENT)
        return fail("no org with uuid %s", org_uuid);
    if (r < 0)
        return fail("cannot read org %s: %s", org_uuid, store_strerror(r));
    return 0;
}

static int run_token_create(Store *store, const Args *args, cJSON **ret_output)
{
    StoreToken token;
    char secret[AUTH_TOKEN_STR_LEN];

    int r = token_new(args->org, (int64_t)time(NULL), &token, secret);
    if (r < 0)
        return fail("cannot generate a token: %s", strerror(-r));
    r = store_token_add(store, &token);
    if (r == -ENOENT)
        return fail("no org with uuid %s", args->org);
    if (r < 0)
        return fail("cannot add the token: %s", store_strerror(r));

    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    if (!json || !cJSON_AddStringToObject(json, "token_id", token.id) ||
        !cJSON_AddStringToObject(json, "org_uuid", token.org_uuid) ||
        !cJSON_AddStringToObject(json, "token", secret) ||
        !add_time(json, "created_at", token.created_at))
        return fail("out of memory; the token is lost: revoke %s", token.id);
    *ret_output = TAKE_PTR(json);
    return 0;
}

static int run_token_revoke(Store *store, const Args *args, cJSON **ret_output)
{
    char id[UUID_STR_LEN];
    if (uuid_normalize(args->operand, id) < 0)
        return fail("'%s' is not a token id", args->operand); /* checked already */

    int r = store_token_revoke(store, id);
    if (r == -ENOENT)
        return fail("no token with id %s", id);
    if (r < 0)
        return fail("cannot revoke token %s: %s", id, store_strerror(r));

    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    if (!json || !cJSON_AddStringToObject(json, "token_id", id) ||
        !cJSON_AddTrueToObject(json, "revoked"))
        return fail("out of memory; token %s is revoked", id);
    *ret_output = TAKE_PTR(json);
    return 0;
}

static int run_token_list(Store *store, const Args *args, cJSON **ret_output)
{
    _cleanup_free_ StoreToken *tokens = NULL;
    size_t count = 0;
    int r = store_token_list(store, args->org, &tokens, &count);
    return list_output("tokens", r, tokens, count, sizeof(*tokens), token_to_json, ret_output);
}

static int run_instance_list(Store *store, const Args *args, cJSON **ret_output)
{
    _cleanup_free_ StoreInstance *instances = NULL;
    size_t count = 0;
    int r = store_instance_list(store, args->org, &instances, &count);
    return list_output("instances", r, instances, count, sizeof(*instances), instance_to_json,
                       ret_output);
}

/* Pool instances counted by image, size and mode: ready to be taken, or on their way. */
static int run_pool_list(Store *store, const Args *args, cJSON **ret_output)
{
    _cleanup_free_ StoreInstance *instances = NULL;
    size_t count = 0;
    int r = store_instance_list(store, STORE_POOL_ORG, &instances, &count);
    if (r < 0)
        return fail("cannot list the pool: %s", store_strerror(r));
    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    cJSON *array = json ? cJSON_AddArrayToObject(json, "pool") : NULL;
    if (!array)
        return fail("out of memory");
    size_t groups = 0;
    for (size_t i = 0; i < count; i++) {
        const StoreInstance *in = &instances[i];
        if (in->state == INSTANCE_TERMINATED || in->state == INSTANCE_DELETING)
            continue;
        cJSON *group = NULL, *item;
        cJSON_ArrayForEach(item, array)
        {
            if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(item, "image")), in->image) == 0 &&
                strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(item, "size")), in->size) == 0 &&
                strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(item, "mode")), in->pool) == 0)
                group = item;
        }
        if (!group) {
            if (!(group = cJSON_CreateObject()) || !cJSON_AddItemToArray(array, group) ||
                !cJSON_AddStringToObject(group, "image", in->image) ||
                !cJSON_AddStringToObject(group, "size", in->size) ||
                !cJSON_AddStringToObject(group, "mode", in->pool) ||
                !cJSON_AddNumberToObject(group, "ready", 0) ||
                !cJSON_AddNumberToObject(group, "booting", 0))
                return fail("out of memory");
            groups++;
        }
        cJSON *n = cJSON_GetObjectItem(group, store_instance_pool_ready(in) ? "ready" : "booting");
        cJSON_SetNumberValue(n, n->valuedouble + 1);
    }
    if (!cJSON_AddNumberToObject(json, "total", (double)groups))
        return fail("out of memory");
    *ret_output = TAKE_PTR(json);
    return 0;
}

static const Command commands[] = {
    {"org", "create", "NAME", ORG_NONE, check_org_name, run_org_create,
     "create an org and its first API token",
     "Creates an org and its first API token. The token is printed this once;\n"
     "the store keeps only its hash. NAME is 1 to 64 bytes of UTF-8 without\n"
     "control characters.\n\n"
     "Prints {\"org_uuid\",\"name\",\"token\",\"token_id\",\"created_at\"}.\n",
     false},
    {"org", "list", NULL, ORG_NONE, NULL, run_org_list, "list orgs",
     "Lists every org, ordered by uuid.\n\n"
     "Prints {\"orgs\":[{\"org_uuid\",\"name\",\"created_at\",\"quota\"}],\"total\":N}.\n",
     false},
    {"org", "quota", NULL, ORG_REQUIRED, NULL, run_org_quota,
     "set an org's limits on instances, vCPUs and memory",
     "Sets the most an org may hold at once, counted over its instances that\n"
     "have not ended: --instances N, --vcpus N, --memory-mib N (0 removes a\n"
     "limit; a limit not given stays as it was). A create past one answers 429.\n\n"
     "Prints the org: {\"org_uuid\",\"name\",\"created_at\",\"quota\":{\"instances\",\n"
     "\"vcpus\",\"memory_mib\"},\"network\"} (null: no limit; the config's network).\n",
     true},
    {"org", "network", "MODE", ORG_REQUIRED, check_network, run_org_network,
     "set the network mode of an org's new instances",
     "Sets the network of the org's instances created from now on: none (no\n"
     "network interface), egress (the public internet only, as the egress\n"
     "settings of legbad's config confine it), or default (the config's\n"
     "network setting).\n\n"
     "Prints the org, as 'org quota' does, with \"network\" (null: default).\n",
     false},
    {"token", "create", NULL, ORG_REQUIRED, NULL, run_token_create,
     "create another API token for an org",
     "Creates another API token for an org. The token is printed this once;\n"
     "the store keeps only its hash.\n\n"
     "Prints {\"token_id\",\"org_uuid\",\"token\",\"created_at\"}.\n",
     false},
    {"token", "revoke", "TOKEN_ID", ORG_NONE, check_uuid, run_token_revoke, "revoke a token",
     "Revokes a token by its id (from 'token create' or 'token list'); requests\n"
     "carrying it are refused from then on.\n\n"
     "Prints {\"token_id\",\"revoked\":true}.\n",
     false},
    {"token", "list", NULL, ORG_OPTIONAL, NULL, run_token_list, "list tokens (never the secrets)",
     "Lists tokens, every org's or one org's, oldest first. Neither the token\n"
     "nor its hash is shown.\n\n"
     "Prints {\"tokens\":[{\"token_id\",\"org_uuid\",\"created_at\"}],\"total\":N}.\n",
     false},
    {"pool", "list", NULL, ORG_NONE, NULL, run_pool_list, "count the pool's VMs",
     "Counts the VMs waiting in the pool (legbad's `pool` setting) by image,\n"
     "size and mode (warm or standby): ready to be taken, or still booting or\n"
     "being saved.\n\n"
     "Prints {\"pool\":[{\"image\",\"size\",\"mode\",\"ready\",\"booting\"}],\"total\":N}.\n",
     false},
    {"instance", "list", NULL, ORG_OPTIONAL, NULL, run_instance_list, "list instances on record",
     "Lists the instances the store holds, every org's or one org's, oldest\n"
     "first. The state is the recorded one (creating, running, stopped,\n"
     "deleting, terminated).\n\n"
     "Prints {\"instances\":[{\"instance_uuid\",\"org_uuid\",\"image\",\"size\",\"state\",\n"
     "\"created_at\"}],\"total\":N}.\n",
     false},
};

/* --- usage -------------------------------------------------------------------------------- */

/* A command as it is typed, "GROUP VERB [--org UUID] OPERAND"; the number of bytes printed. */
static int print_command_line(const Command *c)
{
    int n = printf("%s %s", c->group, c->verb);
    if (c->org == ORG_REQUIRED)
        n += printf(" --org UUID");
    else if (c->org == ORG_OPTIONAL)
        n += printf(" [--org UUID]");
    if (c->operand)
        n += printf(" %s", c->operand);
    return n;
}

/* One line for each command, or for each of one group's when group is not NULL. */
static void print_synopses(const char *group)
{
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
        const Command *c = &commands[i];
        if (group && strcmp(c->group, group) != 0)
            continue;
        printf("  ");
        int n = print_command_line(c);
        printf("%*s%s\n", n < 28 ? 28 - n : 1, "", c->summary);
    }
}

static void print_usage(void)
{
    printf("Usage: legbactl [--data-dir DIR] COMMAND ...\n\n"
           "Administers a legba host: orgs, their API tokens, the instances on record.\n\n"
           "Commands:\n");
    print_synopses(NULL);
    printf("\nOptions:\n"
           "  --data-dir DIR   where legbad keeps its state (default: $LEGBA_DATA_DIR,\n"
           "                   else " DEFAULT_DATA_DIR ")\n"
           "  -h, --help       show help; 'legbactl org --help' for one group,\n"
           "                   'legbactl org create --help' for one command\n\n"
           "Every command prints one JSON object on stdout.\n"
           "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

static void print_group_usage(const char *group)
{
    printf("Usage: legbactl [--data-dir DIR] %s COMMAND ...\n\nCommands:\n", group);
    print_synopses(group);
    printf("\nRun 'legbactl %s COMMAND --help' for one command.\n", group);
}

static void print_command_usage(const Command *c)
{
    printf("Usage: legbactl [--data-dir DIR] ");
    print_command_line(c);
    printf("\n\n%s", c->help);
    if (c->org != ORG_NONE)
        printf("\nOptions:\n  --org UUID   %s\n",
               c->org == ORG_OPTIONAL ? "only this org's" : "the org it is for");
}

/*
 * A command line that makes no sense: the reason and where to find help, exit 2.
 * help_topic is what goes between "legbactl" and "--help" in the hint.
 */
__attribute__((format(printf, 2, 3))) static int usage_error(const char *help_topic,
                                                             const char *fmt, ...)
{
    va_list ap;
    fputs("legbactl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'legbactl %s%s--help'.\n", help_topic, *help_topic ? " " : "");
    return EXIT_USAGE;
}

/* The command group verb, or with verb NULL the group's first one; NULL when there is none. */
static const Command *command_find(const char *group, const char *verb)
{
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        if (strcmp(commands[i].group, group) == 0 && (!verb || strcmp(commands[i].verb, verb) == 0))
            return &commands[i];
    return NULL;
}

/* --- main --------------------------------------------------------------------------------- */

static int print_output(const cJSON *json)
{
    _cleanup_free_ char *text = cJSON_PrintUnformatted(json);
    if (!text)
        return fail("out of memory");
    if (puts(text) == EOF || fflush(stdout) == EOF)
        return fail("cannot write the output: %s", strerror(errno));
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"data-dir", required_argument, NULL, 'd'},
        {"org", required_argument, NULL, 'o'},
        {"instances", required_argument, NULL, 'Q'},
        {"vcpus", required_argument, NULL, 'Q'},
        {"memory-mib", required_argument, NULL, 'Q'},
        {0},
    };
    const char *data_dir = NULL;
    const char *org = NULL;
    int64_t quota[3] = {-1, -1, -1};
    bool quota_given = false;
    int option_index = 0;
    bool help = false;
    int c;

    /* Options may come anywhere (getopt permutes), so 'org create --help' works. */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", options, &option_index)) != -1) {
        switch (c) {
        case 'Q': {
            size_t q = 0;
            while (q < ARRAY_SIZE(quota_options) &&
                   strcmp(quota_options[q], options[option_index].name) != 0)
                q++;
            char *end;
            errno = 0;
            long long v = strtoll(optarg, &end, 10);
            if (q == ARRAY_SIZE(quota_options) || errno || end == optarg || *end || v < 0 ||
                v > 1000000000LL || optarg[0] == '+' || optarg[0] == ' ')
                return usage_error("", "--%s needs a whole number from 0 (no limit) to 1000000000",
                                   options[option_index].name);
            quota[q] = v;
            quota_given = true;
            break;
        }
        case 'h':
            help = true;
            break;
        case 'd':
            data_dir = optarg;
            break;
        case 'o':
            org = optarg;
            break;
        case ':':
            return usage_error("", "%s needs a value", argv[optind - 1]);
        default:
            if (optopt)
                return usage_error("", "unknown option '-%c'", optopt);
            return usage_error("", "unknown option '%s'", argv[optind - 1]);
        }
    }
    char **words = argv + optind;
    int nwords = argc - optind;

    if (nwords == 0) {
        if (help) {
            print_usage();
            return EXIT_SUCCESS;
        }
        return usage_error("", "missing command");
    }
    if (!command_find(words[0], NULL))
        return usage_error("", "unknown command '%s'", words[0]);
    if (nwords == 1) {
        if (help) {
            print_group_usage(words[0]);
            return EXIT_SUCCESS;
        }
        return usage_error(words[0], "missing %s command", words[0]);
    }
    const Command *cmd = command_find(words[0], words[1]);
    if (!cmd)
        return usage_error(words[0], "unknown command '%s %s'", words[0], words[1]);
    if (help) {
        print_command_usage(cmd);
        return EXIT_SUCCESS;
    }

    char topic[64];
    snprintf(topic, sizeof(topic), "%s %s", cmd->group, cmd->verb);
    Args args = {0};
    int noperands = nwords - 2;
    if (cmd->operand && noperands == 0)
        return usage_error(topic, "%s: missing %s", topic, cmd->operand);
    if (noperands > (cmd->operand ? 1 : 0))
        return usage_error(topic, "%s: unexpected argument '%s'", topic,
                           words[cmd->operand ? 3 : 2]);
    if (cmd->operand) {
        args.operand = words[2];
        const char *why = cmd->check ? cmd->check(args.operand) : NULL;
        if (why)
            return usage_error(topic, "%s: %s %s", topic, cmd->operand, why);
    }
    if (quota_given && !cmd->takes_quota)
        return usage_error(topic, "%s: takes no --instances, --vcpus or --memory-mib", topic);
    if (cmd->takes_quota && !quota_given)
        return usage_error(topic, "%s: give at least one of --instances, --vcpus, --memory-mib",
                           topic);
    memcpy(args.quota, quota, sizeof(quota));
    if (org && cmd->org == ORG_NONE)
        return usage_error(topic, "%s: takes no --org", topic);
    if (!org && cmd->org == ORG_REQUIRED)
        return usage_error(topic, "%s: missing --org UUID", topic);
    if (org) {
        if (uuid_normalize(org, args.org_buf) < 0)
            return usage_error(topic, "%s: --org must be a UUID", topic);
        args.org = args.org_buf;
    }

    if (!data_dir) {
        data_dir = getenv("LEGBA_DATA_DIR");
        if (!data_dir || !*data_dir)
            data_dir = DEFAULT_DATA_DIR;
    }
    if (!*data_dir)
        return usage_error("", "--data-dir needs a directory");

    Store *store = NULL;
    int r = store_open(data_dir, 0, &store);
    if (r < 0)
        return fail("cannot open the store in %s/state: %s", data_dir, store_strerror(r));
    _cleanup_json_ cJSON *output = NULL;
    r = cmd->org == ORG_OPTIONAL && args.org ? require_org(store, args.org) : 0;
    if (r == 0)
        r = cmd->run(store, &args, &output);
    store_close(store);
    if (r != 0)
        return r;
    return print_output(output) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
