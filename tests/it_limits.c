/*
 * Tier 2: the limits a client meets, end to end against libvirt's fake
 * driver (test:///default): Idempotency-Key on create, per-org quotas set
 * with legbactl, host memory admission, and hostile input (slow clients,
 * connection floods, oversized or malformed requests, path tricks), after
 * each of which legbad must still be serving.
 *
 * The tests share one daemon (memory admission off: the fake driver's
 * guests take no RAM) and run in order; each deletes what it created. A
 * test that needs other settings starts its own legbad from a config file
 * and the next test's setup puts the plain one back.
 *
 * Set LEGBA_IT_KEEP=1 to keep the temp dir (data, images, legbad logs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "harness_assert.h"

#define UUID_LEN 36
/* legbad's request body limit (http.c) and libmicrohttpd's per-connection memory (32 KiB). */
#define BODY_LIMIT (64 * 1024)
#define HEADER_MEMORY (32 * 1024)
/* A small instance's memory, as domains/small.xml defines it. */
#define SMALL_MIB 1024

static struct {
    char *dir;
    char *data_dir;
    char *images_dir;
    char *instances_dir;
    HarnessOrg a, b;
    HarnessLegbad *legbad;
    bool legbad_special; /* started by a test with its own config: replaced after it */
    unsigned n_started;  /* numbers each legbad's log */
} lim;

/* A failed assertion names this daemon's log. */
static const HarnessLegbad *harness_assert_legbad(void)
{
    return lim.legbad;
}

/* The error message mentions word. */
#define assert_message_has(resp, word)                                                             \
    do {                                                                                           \
        const char *m_ = harness_error_message(resp);                                              \
        if (!m_ || !strstr(m_, (word)))                                                            \
            fail_response(__FILE__, __LINE__, (resp), "error message should name '%s'", (word));   \
    } while (0)

/* ---- requests ---- */

static void path_instances(char *buf, size_t size, const char *org)
{
    snprintf(buf, size, "/orgs/%s/api/instances", org);
}

static void path_instance(char *buf, size_t size, const char *org, const char *instance)
{
    snprintf(buf, size, "/orgs/%s/api/instances/%s", org, instance);
}

/*
 * One request with the Authorization line auth, a JSON body when body is
 * not NULL, and one more header line extra (NULL for none). Usable from
 * any thread: returns what harness_http() returns.
 */
static int send_request(const char *auth, const char *method, const char *path, const char *body,
                        const char *extra, HarnessResponse *resp)
{
    const char *headers[4] = {0};
    size_t n = 0;
    if (auth)
        headers[n++] = auth;
    if (body)
        headers[n++] = "Content-Type: application/json";
    if (extra)
        headers[n++] = extra;
    return harness_http(lim.legbad->port, method, path, headers, body, body ? strlen(body) : 0,
                        resp);
}

static void request(const char *auth, const char *method, const char *path, const char *body,
                    const char *extra, HarnessResponse *resp)
{
    int r = send_request(auth, method, path, body, extra, resp);
    if (r < 0 && harness_legbad_exited(lim.legbad))
        fail_msg("%s %s: legbad died (exit status %d); its log is %s", method, path,
                 lim.legbad->exit_status, lim.legbad->log_path);
    if (r < 0)
        fail_msg("%s %s: no HTTP response: %s", method, path, strerror(-r));
}

static void create_body(char *buf, size_t size, const char *instance_size)
{
    snprintf(buf, size, "{\"image\":\"tiny\",\"size\":\"%s\"}", instance_size);
}

/* POST a create of the tiny image in this size, with an Idempotency-Key line (or NULL). */
static void post_create(const HarnessOrg *org, const char *instance_size, const char *key_line,
                        HarnessResponse *resp)
{
    char path[128], body[96];
    path_instances(path, sizeof(path), org->uuid);
    create_body(body, sizeof(body), instance_size);
    request(org->auth, "POST", path, body, key_line, resp);
}

/* A create that must succeed: its uuid in ret_uuid. */
static void create_ok(const HarnessOrg *org, const char *instance_size, char ret_uuid[UUID_LEN + 1])
{
    HarnessResponse resp = {0};
    post_create(org, instance_size, NULL, &resp);
    assert_status(&resp, 201);
    const char *uuid = harness_json_string(resp.json, "instance_uuid");
    assert_non_null(uuid);
    snprintf(ret_uuid, UUID_LEN + 1, "%s", uuid);
    harness_response_done(&resp);
}

static void delete_ok(const HarnessOrg *org, const char *uuid)
{
    char path[160];
    HarnessResponse resp = {0};
    path_instance(path, sizeof(path), org->uuid, uuid);
    request(org->auth, "DELETE", path, NULL, NULL, &resp);
    assert_status(&resp, 204);
    harness_response_done(&resp);
}

/* GET the org's list; caller frees. */
static cJSON *list_instances(const HarnessOrg *org)
{
    char path[128];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), org->uuid);
    request(org->auth, "GET", path, NULL, NULL, &resp);
    assert_status(&resp, 200);
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(resp.json, "instances")))
        fail_response(__FILE__, __LINE__, &resp, "{\"instances\":[…]} expected");
    cJSON *json = resp.json;
    resp.json = NULL;
    harness_response_done(&resp);
    return json;
}

static int list_count(const HarnessOrg *org)
{
    cJSON *list = list_instances(org);
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(list, "instances"));
    cJSON_Delete(list);
    return n;
}

/* How many of the org's listed instances have this uuid. */
static int list_has(const HarnessOrg *org, const char *uuid)
{
    cJSON *list = list_instances(org);
    int n = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(list, "instances"))
    {
        const char *u = harness_json_string(item, "instance_uuid");
        n += u && strcmp(u, uuid) == 0;
    }
    cJSON_Delete(list);
    return n;
}

/* Deletes every instance of the org, so the next test starts from none. */
static void delete_all(const HarnessOrg *org)
{
    cJSON *list = list_instances(org);
    const cJSON *item;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(list, "instances"))
    {
        delete_ok(org, harness_json_string(item, "instance_uuid"));
    }
    cJSON_Delete(list);
    assert_int_equal(list_count(org), 0);
}

/* The key in the access_url of a create's answer. */
static void access_key(const HarnessResponse *resp, const char *uuid,
                       char ret_key[HARNESS_CONSOLE_KEY_LEN + 1])
{
    char origin[64];
    snprintf(origin, sizeof(origin), "http://127.0.0.1:%u", lim.legbad->port);
    assert_access_url(resp, origin, uuid, ret_key);
}

/* POST /console/<uuid>/session with key from legbad's own origin; the status. */
static int console_login_status(const char *uuid, const char *key)
{
    char origin_line[96];
    HarnessResponse resp = {0};
    snprintf(origin_line, sizeof(origin_line), "Origin: http://127.0.0.1:%u", lim.legbad->port);
    int r = harness_console_session(lim.legbad->port, uuid, key, origin_line, &resp);
    if (r < 0)
        fail_msg("POST /console/%s/session: no HTTP response: %s", uuid, strerror(-r));
    int status = resp.status;
    if (status != 204 && status != 403)
        fail_response(__FILE__, __LINE__, &resp, "204 or 403 expected");
    harness_response_done(&resp);
    return status;
}

/* ---- legbad ---- */

static void write_conf(char *buf, size_t size, const char *name, const char *text)
{
    snprintf(buf, size, "%s/%s", lim.dir, name);
    FILE *f = fopen(buf, "we");
    if (!f)
        fail_msg("%s: %s", buf, strerror(errno));
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* A legbad on the fake driver reading the config file conf; its log is legbad-N-<what>.log. */
static int start_legbad(const char *conf, const char *what)
{
    char log_name[96];
    snprintf(log_name, sizeof(log_name), "legbad-%u-%s.log", ++lim.n_started, what);
    HarnessLegbadOptions options = {
        .dir = lim.dir,
        .data_dir = lim.data_dir,
        .images_dir = lim.images_dir,
        .libvirt_uri = "test:///default",
        .log_name = log_name,
        .extra_args = HARNESS_LIST("--config", conf, "--accel", "tcg"),
    };
    return harness_legbad_start(&options, &lim.legbad);
}

static int start_plain_legbad(void)
{
    char conf[512];
    snprintf(conf, sizeof(conf), "%s/plain.conf", lim.dir);
    return start_legbad(conf, "plain");
}

/* Replaces the running legbad by one with this config text, for the rest of one test. */
static void start_special_legbad(const char *what, const char *config_text)
{
    char conf[512], name[96];
    snprintf(name, sizeof(name), "%s.conf", what);
    write_conf(conf, sizeof(conf), name, config_text);
    assert_int_equal(harness_legbad_stop_free(&lim.legbad), 0);
    lim.legbad_special = true;
    assert_int_equal(start_legbad(conf, what), 0);
}

/*
 * Before each test: the plain legbad, running. A legbad that died, or that
 * did not exit cleanly when the previous test's special one was stopped
 * (a sanitizer report, a crash on shutdown), fails this setup after its log
 * is printed; a fresh plain one is started either way.
 */
static int setup_legbad(void **state)
{
    if (lim.legbad && !harness_legbad_exited(lim.legbad) && !lim.legbad_special)
        return 0;
    int status = 0;
    if (lim.legbad && harness_legbad_exited(lim.legbad)) {
        fprintf(stderr, "it_limits: legbad died (exit status %d) in the previous test; its log:\n",
                lim.legbad->exit_status);
        harness_dump_file(lim.legbad->log_path);
        status = lim.legbad->exit_status ? lim.legbad->exit_status : -1;
        harness_legbad_free(lim.legbad);
        lim.legbad = NULL;
    } else {
        status = harness_legbad_stop_free(&lim.legbad);
    }
    lim.legbad_special = false;
    int r = start_plain_legbad();
    return status != 0 || r < 0 ? -1 : 0;
}

static int group_setup(void **state)
{
    if (harness_tempdir("legba-it-limits-", &lim.dir) < 0)
        return -1;
    if (asprintf(&lim.data_dir, "%s/data", lim.dir) < 0 ||
        asprintf(&lim.images_dir, "%s/images", lim.dir) < 0 ||
        asprintf(&lim.instances_dir, "%s/instances", lim.data_dir) < 0)
        return -1;
    if (mkdir(lim.data_dir, 0711) < 0)
        return -1;
    /* The fake driver's guests take no memory: no admission by this host's RAM. */
    char conf[512];
    snprintf(conf, sizeof(conf), "%s/plain.conf", lim.dir);
    FILE *f = fopen(conf, "we");
    if (!f)
        return -1;
    fputs("memory_overcommit_percent = 0\n", f);
    fclose(f);
    if (harness_build_image(lim.images_dir, "tiny") != 0)
        return -1;
    if (harness_org_create(lim.data_dir, "org-a", &lim.a) < 0 ||
        harness_org_create(lim.data_dir, "org-b", &lim.b) < 0)
        return -1;
    return start_plain_legbad();
}

static int group_teardown(void **state)
{
    int status = harness_legbad_stop_free(&lim.legbad);
    harness_tempdir_remove(lim.dir);
    free(lim.dir);
    free(lim.data_dir);
    free(lim.images_dir);
    free(lim.instances_dir);
    return status == 0 ? 0 : -1;
}

/* ---- Idempotency-Key ---- */

/*
 * A retried create gets the instance of the first, never a second VM; its
 * answer carries a new console key (the store keeps only a hash), which
 * replaces the first one. The key is bound to the body and to the org.
 */
static void idempotency_replay(void **state)
{
    static const char key_line[] = "Idempotency-Key: replay-1";
    HarnessResponse first = {0}, again = {0}, resp = {0};
    char uuid[UUID_LEN + 1], key1[HARNESS_CONSOLE_KEY_LEN + 1], key2[HARNESS_CONSOLE_KEY_LEN + 1];

    int before = list_count(&lim.a);
    post_create(&lim.a, "small", key_line, &first);
    assert_status(&first, 201);
    snprintf(uuid, sizeof(uuid), "%s", harness_json_string(first.json, "instance_uuid"));
    access_key(&first, uuid, key1);

    post_create(&lim.a, "small", key_line, &again);
    assert_status(&again, 201);
    const char *again_uuid = harness_json_string(again.json, "instance_uuid");
    if (!again_uuid || strcmp(again_uuid, uuid) != 0)
        fail_response(__FILE__, __LINE__, &again, "the retry must answer instance %s", uuid);
    char location[160];
    path_instance(location, sizeof(location), lim.a.uuid, uuid);
    const char *loc = harness_header(&again, "Location");
    if (!loc || strcmp(loc, location) != 0)
        fail_response(__FILE__, __LINE__, &again, "Location %s expected", location);
    access_key(&again, uuid, key2);
    assert_string_not_equal(key1, key2);
    assert_int_equal(list_count(&lim.a), before + 1);
    assert_int_equal(list_has(&lim.a, uuid), 1);
    harness_response_done(&first);
    harness_response_done(&again);

    /* The retry's key opens the console; the first answer's no longer does. */
    assert_int_equal(console_login_status(uuid, key1), 403);
    assert_int_equal(console_login_status(uuid, key2), 204);

    /* The same key with another body is a client bug, not a retry. */
    post_create(&lim.a, "medium", key_line, &resp);
    assert_error(&resp, 409, "idempotency_key_reused");
    harness_response_done(&resp);
    /* Bytes, not meaning: the same JSON with a space more is another body too. */
    char path[128];
    path_instances(path, sizeof(path), lim.a.uuid);
    request(lim.a.auth, "POST", path, "{\"image\":\"tiny\", \"size\":\"small\"}", key_line, &resp);
    assert_error(&resp, 409, "idempotency_key_reused");
    harness_response_done(&resp);
    assert_int_equal(list_count(&lim.a), before + 1);

    /* Keys are per org: B's request with A's key is B's own first create. */
    int before_b = list_count(&lim.b);
    post_create(&lim.b, "small", key_line, &resp);
    assert_status(&resp, 201);
    const char *b_uuid = harness_json_string(resp.json, "instance_uuid");
    assert_non_null(b_uuid);
    assert_string_not_equal(b_uuid, uuid);
    assert_int_equal(list_count(&lim.b), before_b + 1);
    assert_int_equal(list_has(&lim.a, b_uuid), 0);
    harness_response_done(&resp);
    /* ...and A's instance is still A's, unchanged by B. */
    assert_int_equal(list_has(&lim.a, uuid), 1);
    assert_int_equal(console_login_status(uuid, key2), 204);

    /* Without a key, the same body makes a new instance each time. */
    char u1[UUID_LEN + 1], u2[UUID_LEN + 1];
    create_ok(&lim.a, "small", u1);
    create_ok(&lim.a, "small", u2);
    assert_string_not_equal(u1, u2);
    assert_string_not_equal(u1, uuid);

    delete_all(&lim.a);
    delete_all(&lim.b);
}

#define RACERS 8

typedef struct {
    pthread_barrier_t *start;
    int r;
    int status;
    char uuid[UUID_LEN + 1];
    char code[64];
    char retry_after[16];
} Racer;

/* No cmocka in here (its failures longjmp): the outcome is recorded for the main thread. */
static void *racer_run(void *arg)
{
    Racer *racer = arg;
    char path[128], body[96];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), lim.a.uuid);
    create_body(body, sizeof(body), "small");
    pthread_barrier_wait(racer->start);
    racer->r = send_request(lim.a.auth, "POST", path, body, "Idempotency-Key: race-1", &resp);
    racer->status = resp.status;
    const char *uuid = harness_json_string(resp.json, "instance_uuid");
    const char *code = harness_error_code(&resp);
    const char *retry = harness_header(&resp, "Retry-After");
    snprintf(racer->uuid, sizeof(racer->uuid), "%s", uuid ? uuid : "");
    snprintf(racer->code, sizeof(racer->code), "%s", code ? code : "");
    snprintf(racer->retry_after, sizeof(racer->retry_after), "%s", retry ? retry : "");
    harness_response_done(&resp);
    return NULL;
}

/* Eight clients retrying one create at the same moment: one instance, whatever the interleaving. */
static void idempotency_concurrent(void **state)
{
    pthread_t threads[RACERS];
    Racer racers[RACERS];
    pthread_barrier_t start;
    int before = list_count(&lim.a);
    assert_int_equal(pthread_barrier_init(&start, NULL, RACERS), 0);
    for (int i = 0; i < RACERS; i++) {
        racers[i] = (Racer){.start = &start};
        assert_int_equal(pthread_create(&threads[i], NULL, racer_run, &racers[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);

    const char *winner = NULL;
    int created = 0, in_progress = 0;
    for (int i = 0; i < RACERS; i++) {
        const Racer *r = &racers[i];
        print_message("racer %d: HTTP %d %s%s\n", i, r->status, r->uuid, r->code);
        if (r->r < 0)
            fail_msg("racer %d: no HTTP response: %s", i, strerror(-r->r));
        if (r->status == 201) {
            if (strlen(r->uuid) != UUID_LEN)
                fail_msg("racer %d: 201 without an instance_uuid", i);
            if (winner && strcmp(winner, r->uuid) != 0)
                fail_msg("racer %d: 201 with instance %s, another racer got %s", i, r->uuid,
                         winner);
            winner = r->uuid;
            created++;
        } else if (r->status == 409 && strcmp(r->code, "request_in_progress") == 0) {
            if (!r->retry_after[0])
                fail_msg("racer %d: 409 request_in_progress without Retry-After", i);
            in_progress++;
        } else {
            fail_msg("racer %d: HTTP %d %s (201 or 409 request_in_progress expected)", i, r->status,
                     r->code);
        }
    }
    print_message("%d answers 201 (one instance), %d answers 409 request_in_progress\n", created,
                  in_progress);
    assert_non_null(winner);
    assert_int_equal(list_count(&lim.a), before + 1);
    assert_int_equal(list_has(&lim.a, winner), 1);
    assert_int_equal(harness_count_files(lim.instances_dir, ".qcow2"), before + 1);

    /* Once settled, a retry is a plain replay. */
    HarnessResponse resp = {0};
    post_create(&lim.a, "small", "Idempotency-Key: race-1", &resp);
    assert_status(&resp, 201);
    assert_string_equal(harness_json_string(resp.json, "instance_uuid"), winner);
    harness_response_done(&resp);
    delete_all(&lim.a);
}

/* A key legbad cannot store as given is refused before anything is created. */
static void idempotency_invalid_keys(void **state)
{
    char *long_key = malloc(17 + 256 + 1);
    assert_non_null(long_key);
    memcpy(long_key, "Idempotency-Key: ", 17);
    memset(long_key + 17, 'k', 256);
    long_key[17 + 256] = '\0';
    const char *const refused[] = {
        "Idempotency-Key:", /* empty */
        "Idempotency-Key: ab\x01"
        "cd",                      /* a control character */
        "Idempotency-Key: ab\tcd", /* a tab inside */
        "Idempotency-Key: ab\x7f"
        "cd",                           /* DEL */
        "Idempotency-Key: caf\xc3\xa9", /* not ASCII */
        long_key,                       /* 256 characters */
    };
    int before = list_count(&lim.a);
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        HarnessResponse resp = {0};
        post_create(&lim.a, "small", refused[i], &resp);
        if (resp.status != 400 || !harness_error_code(&resp) ||
            strcmp(harness_error_code(&resp), "invalid_idempotency_key") != 0)
            fail_response(__FILE__, __LINE__, &resp,
                          "key %zu: 400 invalid_idempotency_key expected", i);
        assert_error(&resp, 400, "invalid_idempotency_key");
        harness_response_done(&resp);
    }
    assert_int_equal(list_count(&lim.a), before);

    /* 255 characters is the longest accepted. */
    long_key[17 + 255] = '\0';
    HarnessResponse resp = {0};
    post_create(&lim.a, "small", long_key, &resp);
    assert_status(&resp, 201);
    harness_response_done(&resp);
    free(long_key);
    assert_int_equal(list_count(&lim.a), before + 1);
    delete_all(&lim.a);
}

/* A key whose instance was deleted binds nothing: it creates anew. */
static void idempotency_after_delete(void **state)
{
    static const char key_line[] = "Idempotency-Key: after-delete";
    HarnessResponse resp = {0};
    char first[UUID_LEN + 1];
    post_create(&lim.a, "small", key_line, &resp);
    assert_status(&resp, 201);
    snprintf(first, sizeof(first), "%s", harness_json_string(resp.json, "instance_uuid"));
    harness_response_done(&resp);
    delete_ok(&lim.a, first);

    post_create(&lim.a, "small", key_line, &resp);
    assert_status(&resp, 201);
    const char *second = harness_json_string(resp.json, "instance_uuid");
    assert_non_null(second);
    assert_string_not_equal(second, first);
    assert_int_equal(list_has(&lim.a, second), 1);
    assert_int_equal(list_count(&lim.a), 1);
    harness_response_done(&resp);

    /* Even with another body now: the old binding is gone, the new one holds. */
    post_create(&lim.a, "medium", key_line, &resp);
    assert_error(&resp, 409, "idempotency_key_reused");
    harness_response_done(&resp);
    delete_all(&lim.a);
}

/* ---- quotas ---- */

/* `legbactl org quota --org ORG args…`: the exit status; *ret_json gets the output (may be NULL).
 */
static int legbactl_quota(const char *org, const char *const args[], cJSON **ret_json)
{
    const char *argv[16] = {"org", "quota", "--org", org};
    size_t n = 4;
    for (size_t i = 0; args && args[i]; i++) {
        assert_true(n + 1 < sizeof(argv) / sizeof(argv[0]));
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    return harness_legbactl(lim.data_dir, argv, ret_json);
}

/* One quota field of an org object: its value, or -1 for null. */
static long long quota_field(const cJSON *org, const char *name)
{
    const cJSON *quota = cJSON_GetObjectItemCaseSensitive(org, "quota");
    if (!cJSON_IsObject(quota))
        fail_msg("org object without a \"quota\" object");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(quota, name);
    if (cJSON_IsNull(v))
        return -1;
    if (!cJSON_IsNumber(v))
        fail_msg("quota.%s is neither a number nor null", name);
    return (long long)v->valuedouble;
}

static void assert_quota(const cJSON *org, long long instances, long long vcpus, long long memory)
{
    assert_int_equal(quota_field(org, "instances"), instances);
    assert_int_equal(quota_field(org, "vcpus"), vcpus);
    assert_int_equal(quota_field(org, "memory_mib"), memory);
}

/* The org as `legbactl org list` shows it; caller frees. */
static cJSON *listed_org(const char *uuid)
{
    cJSON *json = NULL;
    assert_int_equal(harness_legbactl(lim.data_dir, HARNESS_LIST("org", "list"), &json), 0);
    const cJSON *item;
    cJSON *found = NULL;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(json, "orgs"))
    {
        const char *u = harness_json_string(item, "org_uuid");
        if (u && strcmp(u, uuid) == 0)
            found = cJSON_Duplicate(item, true);
    }
    cJSON_Delete(json);
    if (!found)
        fail_msg("org %s not in legbactl org list", uuid);
    return found;
}

static void set_quota(const char *org, const char *const args[])
{
    cJSON *json = NULL;
    int status = legbactl_quota(org, args, &json);
    if (status != 0)
        fail_msg("legbactl org quota %s: exit status %d", args[0], status);
    cJSON_Delete(json);
}

static void quota_legbactl(void **state)
{
    /* A new org has no limits: null, not 0. */
    cJSON *org = listed_org(lim.a.uuid);
    assert_quota(org, -1, -1, -1);
    cJSON_Delete(org);

    /* Setting prints the org; options not given keep their value. */
    cJSON *json = NULL;
    assert_int_equal(legbactl_quota(lim.a.uuid, HARNESS_LIST("--instances", "3"), &json), 0);
    assert_non_null(json);
    assert_string_equal(harness_json_string(json, "org_uuid"), lim.a.uuid);
    assert_quota(json, 3, -1, -1);
    cJSON_Delete(json);
    assert_int_equal(
        legbactl_quota(lim.a.uuid, HARNESS_LIST("--vcpus", "8", "--memory-mib", "8192"), &json), 0);
    assert_quota(json, 3, 8, 8192);
    cJSON_Delete(json);
    org = listed_org(lim.a.uuid);
    assert_quota(org, 3, 8, 8192);
    cJSON_Delete(org);
    /* B is untouched. */
    org = listed_org(lim.b.uuid);
    assert_quota(org, -1, -1, -1);
    cJSON_Delete(org);
    /* 0 lifts a limit. */
    assert_int_equal(
        legbactl_quota(lim.a.uuid,
                       HARNESS_LIST("--instances", "0", "--vcpus", "0", "--memory-mib", "0"),
                       &json),
        0);
    assert_quota(json, -1, -1, -1);
    cJSON_Delete(json);

    /* Command lines that make no sense: exit 2, nothing changed. */
    const char *const *const bad[] = {
        HARNESS_LIST("org", "quota", "--org", "@ORG", "--instances", "-1"),
        HARNESS_LIST("org", "quota", "--org", "@ORG", "--vcpus", "abc"),
        HARNESS_LIST("org", "quota", "--org", "@ORG", "--memory-mib", "12x"),
        HARNESS_LIST("org", "quota", "--org", "@ORG", "--instances", ""),
        HARNESS_LIST("org", "quota", "--org", "@ORG", "--instances", "99999999999999999999"),
        HARNESS_LIST("org", "quota", "--org", "@ORG"),    /* no limit given */
        HARNESS_LIST("org", "quota", "--instances", "1"), /* no org */
        HARNESS_LIST("org", "quota", "--org", "not-a-uuid", "--instances", "1"),
        HARNESS_LIST("org", "list", "--instances", "1"), /* not a quota command */
        HARNESS_LIST("org", "create", "x", "--vcpus", "1"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *argv[12];
        size_t n = 0;
        for (; bad[i][n]; n++)
            argv[n] = strcmp(bad[i][n], "@ORG") == 0 ? lim.a.uuid : bad[i][n];
        argv[n] = NULL;
        int status = harness_legbactl(lim.data_dir, argv, NULL);
        if (status != 2)
            fail_msg("legbactl command line %zu (%s %s … %s): exit status %d, 2 expected", i,
                     argv[0], argv[1], argv[n - 1], status);
    }
    org = listed_org(lim.a.uuid);
    assert_quota(org, -1, -1, -1);
    cJSON_Delete(org);

    /* A well-formed command for an org that does not exist is a failure at run time: exit 1. */
    assert_int_equal(legbactl_quota("00000000-0000-4000-8000-000000000000",
                                    HARNESS_LIST("--instances", "1"), NULL),
                     1);
}

static void quota_instances(void **state)
{
    char first[UUID_LEN + 1], second[UUID_LEN + 1], b1[UUID_LEN + 1], b2[UUID_LEN + 1];
    HarnessResponse resp = {0};
    set_quota(lim.a.uuid, HARNESS_LIST("--instances", "1"));

    create_ok(&lim.a, "small", first);
    post_create(&lim.a, "small", NULL, &resp);
    assert_error(&resp, 429, "quota_exceeded");
    assert_message_has(&resp, "quota allows 1 instances");
    harness_response_done(&resp);
    assert_int_equal(list_count(&lim.a), 1);
    /* A refused create leaves no disk. */
    assert_int_equal(harness_count_files(lim.instances_dir, ".qcow2"), 1);

    /* Another org is not limited by A's quota. */
    create_ok(&lim.b, "small", b1);
    create_ok(&lim.b, "large", b2);

    /* A retry of a refused create is refused the same way (the key bound nothing). */
    post_create(&lim.a, "small", "Idempotency-Key: over-quota", &resp);
    assert_error(&resp, 429, "quota_exceeded");
    harness_response_done(&resp);

    /* Deleting frees the slot. */
    delete_ok(&lim.a, first);
    create_ok(&lim.a, "small", second);
    post_create(&lim.a, "small", NULL, &resp);
    assert_error(&resp, 429, "quota_exceeded");
    harness_response_done(&resp);

    /* The quota is read at each create: raised while legbad runs, it applies at once. */
    set_quota(lim.a.uuid, HARNESS_LIST("--instances", "2"));
    char third[UUID_LEN + 1];
    create_ok(&lim.a, "small", third);
    post_create(&lim.a, "small", NULL, &resp);
    assert_error(&resp, 429, "quota_exceeded");
    assert_message_has(&resp, "quota allows 2 instances");
    harness_response_done(&resp);

    set_quota(lim.a.uuid, HARNESS_LIST("--instances", "0"));
    delete_all(&lim.a);
    delete_all(&lim.b);
}

static void quota_vcpus_memory(void **state)
{
    char u[4][UUID_LEN + 1];
    HarnessResponse resp = {0};

    /* vCPUs (small 1, medium 2, large 4): 3 allowed. */
    set_quota(lim.a.uuid, HARNESS_LIST("--vcpus", "3"));
    post_create(&lim.a, "large", NULL, &resp);
    assert_error(&resp, 429, "quota_exceeded");
    assert_message_has(&resp, "3 vCPUs");
    harness_response_done(&resp);
    create_ok(&lim.a, "medium", u[0]);
    create_ok(&lim.a, "small", u[1]);
    post_create(&lim.a, "small", NULL, &resp);
    assert_error(&resp, 429, "quota_exceeded");
    assert_message_has(&resp, "3 vCPUs");
    assert_message_has(&resp, "use 3");
    harness_response_done(&resp);
    /* B may take a large one. */
    create_ok(&lim.b, "large", u[2]);
    delete_ok(&lim.a, u[1]);
    create_ok(&lim.a, "small", u[1]);
    set_quota(lim.a.uuid, HARNESS_LIST("--vcpus", "0"));
    delete_all(&lim.a);

    /* Memory (1024, 2048, 4096 MiB): 3072 allowed. */
    set_quota(lim.a.uuid, HARNESS_LIST("--memory-mib", "3072"));
    post_create(&lim.a, "large", NULL, &resp);
    assert_error(&resp, 429, "quota_exceeded");
    assert_message_has(&resp, "3072 MiB");
    harness_response_done(&resp);
    create_ok(&lim.a, "medium", u[0]);
    create_ok(&lim.a, "small", u[1]);
    post_create(&lim.a, "small", NULL, &resp);
    assert_error(&resp, 429, "quota_exceeded");
    assert_message_has(&resp, "3072 MiB");
    harness_response_done(&resp);
    assert_int_equal(list_count(&lim.a), 2);

    /* With several limits, any one of them refuses. */
    set_quota(lim.a.uuid, HARNESS_LIST("--memory-mib", "0", "--instances", "5", "--vcpus", "4"));
    post_create(&lim.a, "medium", NULL, &resp);
    assert_error(&resp, 429, "quota_exceeded");
    assert_message_has(&resp, "4 vCPUs");
    harness_response_done(&resp);
    create_ok(&lim.a, "small", u[3]);

    set_quota(lim.a.uuid, HARNESS_LIST("--instances", "0", "--vcpus", "0"));
    delete_all(&lim.a);
    delete_all(&lim.b);
}

/* ---- host memory ---- */

static long long host_memory_mib(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    char line[256];
    long long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "MemTotal: %lld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib < 0 ? -1 : kib / 1024;
}

/* 1% of this host's RAM is less than one small instance on any host under 100 GiB. */
static void host_memory(void **state)
{
    long long total = host_memory_mib();
    assert_true(total > 0);
    long long admitted = total / 100;
    if (admitted >= SMALL_MIB) {
        print_message("skipped: 1%% of this host's %lld MiB is %lld MiB, not less than a small "
                      "instance's %d MiB\n",
                      total, admitted, SMALL_MIB);
        skip();
    }
    start_special_legbad("host-memory", "memory_overcommit_percent = 1\n");
    int before = harness_count_files(lim.instances_dir, ".qcow2");
    HarnessResponse resp = {0};
    post_create(&lim.a, "small", NULL, &resp);
    assert_error(&resp, 503, "host_memory");
    const char *retry = harness_header(&resp, "Retry-After");
    if (!retry || atoi(retry) <= 0)
        fail_response(__FILE__, __LINE__, &resp, "Retry-After with a number of seconds expected");
    char figure[32];
    snprintf(figure, sizeof(figure), "%lld MiB", admitted);
    assert_message_has(&resp, figure);
    harness_response_done(&resp);
    /* Host memory is not the org's fault: no quota, and an Idempotency-Key binds nothing. */
    post_create(&lim.a, "small", "Idempotency-Key: host-full", &resp);
    assert_error(&resp, 503, "host_memory");
    harness_response_done(&resp);
    assert_int_equal(list_count(&lim.a), 0);
    assert_int_equal(harness_count_files(lim.instances_dir, ".qcow2"), before);
    assert_true(harness_log_contains(lim.legbad->log_path, "guest memory admitted up to"));
}

/* ---- hostile input ---- */

/* A TCP connection to legbad, nothing sent yet. */
static int tcp_open(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    return fd;
}

static int send_text(int fd, const char *text)
{
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = send(fd, text, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        text += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Reads until the server closes (1), or until timeout_ms passes (0); what
 * arrived goes to buf (NUL-terminated, the rest dropped). A reset counts as
 * a close.
 */
static int read_until_closed(int fd, int timeout_ms, char *buf, size_t size)
{
    long long deadline = harness_now_ms() + timeout_ms;
    size_t got = 0;
    buf[0] = '\0';
    for (;;) {
        long long left = deadline - harness_now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        char chunk[4096];
        ssize_t r = recv(fd, chunk, sizeof(chunk), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 1;
        size_t keep = (size_t)r < size - 1 - got ? (size_t)r : size - 1 - got;
        memcpy(buf + got, chunk, keep);
        got += keep;
        buf[got] = '\0';
    }
}

/* legbad answers a normal request and has not exited. */
static void assert_still_serving(void)
{
    char path[128];
    HarnessResponse resp = {0};
    assert_false(harness_legbad_exited(lim.legbad));
    snprintf(path, sizeof(path), "/orgs/%s/api/sizes", lim.a.uuid);
    request(lim.a.auth, "GET", path, NULL, NULL, &resp);
    assert_status(&resp, 200);
    harness_response_done(&resp);
}

/* A client that sends half a request line and then nothing is dropped after connection_timeout. */
static void hostile_slow_client(void **state)
{
    start_special_legbad("slow", "memory_overcommit_percent = 0\nconnection_timeout = 2\n");
    int fd = tcp_open(lim.legbad->port);
    assert_true(fd >= 0);
    assert_int_equal(send_text(fd, "GET /orgs/"), 0);
    long long t0 = harness_now_ms();
    char buf[1024];
    int closed = read_until_closed(fd, 10 * 1000, buf, sizeof(buf));
    long long took = harness_now_ms() - t0;
    close(fd);
    print_message("half a request line: closed after %lld ms (connection_timeout = 2 s)%s%s\n",
                  took, buf[0] ? ", having sent: " : "", buf);
    if (!closed)
        fail_msg("legbad kept a silent half-request open for 10 s (connection_timeout = 2)");
    if (took > 4000)
        fail_msg("legbad closed the silent connection only after %lld ms (timeout 2 s)", took);
    /* While it held that connection, others were served (one thread each). */
    fd = tcp_open(lim.legbad->port);
    assert_true(fd >= 0);
    assert_int_equal(send_text(fd, "GET /orgs/"), 0);
    assert_still_serving();
    close(fd);

    /* The same for a header block that stops halfway, and a body that never comes. */
    static const char *const partial[] = {
        "GET /orgs/x/api/instances HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ",
        "POST /orgs/x/api/instances HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        "application/json\r\nContent-Length: 100\r\n\r\n{\"image\":",
    };
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        fd = tcp_open(lim.legbad->port);
        assert_true(fd >= 0);
        assert_int_equal(send_text(fd, partial[i]), 0);
        t0 = harness_now_ms();
        closed = read_until_closed(fd, 10 * 1000, buf, sizeof(buf));
        took = harness_now_ms() - t0;
        close(fd);
        print_message("partial request %zu: closed after %lld ms\n", i, took);
        if (!closed || took > 4000)
            fail_msg("partial request %zu: still open after %lld ms (timeout 2 s)", i, took);
    }
    assert_still_serving();
}

#define PER_IP 4

/* With max_connections_per_ip = 4, a fifth connection from 127.0.0.1 is turned away. */
static void hostile_connections_per_ip(void **state)
{
    start_special_legbad("per-ip", "memory_overcommit_percent = 0\nmax_connections_per_ip = 4\n");
    int fds[PER_IP];
    char buf[4096];
    for (int i = 0; i < PER_IP; i++)
        fds[i] = -1;
    /*
     * Four held connections, each with half a request. A connection that
     * ended just before (the harness's start-up probe) may still be counted
     * for a moment, and one of the four refused in its place: reopen any
     * that legbad closed until all four stay open.
     */
    bool all_held = false;
    for (int attempt = 0; attempt < 20 && !all_held; attempt++) {
        for (int i = 0; i < PER_IP; i++) {
            if (fds[i] >= 0)
                continue;
            fds[i] = tcp_open(lim.legbad->port);
            assert_true(fds[i] >= 0);
            send_text(fds[i], "GET /orgs/");
        }
        usleep(300 * 1000);
        all_held = true;
        for (int i = 0; i < PER_IP; i++) {
            struct pollfd p = {.fd = fds[i], .events = POLLIN};
            if (poll(&p, 1, 0) != 0) {
                close(fds[i]);
                fds[i] = -1;
                all_held = false;
            }
        }
    }
    if (!all_held)
        fail_msg("four connections from one address were not all held (max_connections_per_ip = "
                 "4)");

    /* The kernel completes the handshake; legbad closes it without an answer. */
    int extra = tcp_open(lim.legbad->port);
    if (extra >= 0) {
        char request_text[512];
        snprintf(request_text, sizeof(request_text),
                 "GET /orgs/%s/api/sizes HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\nConnection: "
                 "close\r\n\r\n",
                 lim.a.uuid, lim.a.auth);
        send_text(extra, request_text); /* may fail: already closed */
        int closed = read_until_closed(extra, 5000, buf, sizeof(buf));
        close(extra);
        if (!closed)
            fail_msg("the fifth connection was kept open for 5 s");
        if (strncmp(buf, "HTTP/1.1 200", 12) == 0)
            fail_msg("the fifth connection was served: %.200s", buf);
        print_message("fifth connection: closed%s%.40s\n", buf[0] ? " after: " : " at once", buf);
    } else {
        print_message("fifth connection: refused (%s)\n", strerror(-extra));
    }

    /* The four held ones still work: finish one of their requests. */
    char rest[512];
    snprintf(rest, sizeof(rest),
             "%s/api/sizes HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\nConnection: close\r\n\r\n",
             lim.a.uuid, lim.a.auth);
    assert_int_equal(send_text(fds[0], rest), 0);
    read_until_closed(fds[0], 5000, buf, sizeof(buf));
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0)
        fail_msg("a held connection was not served after the fifth was refused: '%.200s'", buf);
    for (int i = 0; i < PER_IP; i++)
        close(fds[i]);

    /* Once they are gone, the address is served again (the count drops as threads end). */
    HarnessResponse resp = {0};
    char path[128];
    snprintf(path, sizeof(path), "/orgs/%s/api/sizes", lim.a.uuid);
    int r = -1;
    for (int i = 0; i < 50 && r != 0; i++) {
        r = harness_http(lim.legbad->port, "GET", path, HARNESS_LIST(lim.a.auth), NULL, 0, &resp);
        if (r != 0)
            usleep(100 * 1000);
    }
    assert_int_equal(r, 0);
    assert_status(&resp, 200);
    harness_response_done(&resp);
    assert_still_serving();
}

/* A status in the 4xx range, or the connection closed without an answer. */
static void assert_4xx_or_closed(int r, const HarnessResponse *resp, const char *what)
{
    if (r < 0) {
        print_message("%s: closed without an answer (%s)\n", what, strerror(-r));
        return;
    }
    print_message("%s: HTTP %d\n", what, resp->status);
    if (resp->status < 400 || resp->status > 499)
        fail_response(__FILE__, __LINE__, resp, "%s: a 4xx expected", what);
}

/* Whether len bytes are well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
static bool is_utf8(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n = c < 0x80             ? 0
                   : (c & 0xe0) == 0xc0 ? 1
                   : (c & 0xf0) == 0xe0 ? 2
                   : (c & 0xf8) == 0xf0 ? 3
                                        : 9;
        if (n == 9 || i + n >= len)
            return false;
        unsigned cp = n == 0 ? c : c & (0x3f >> n);
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const unsigned min[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

static void hostile_requests(void **state)
{
    char path[128];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), lim.a.uuid);
    int overlays = harness_count_files(lim.instances_dir, ".qcow2");

    /* A header block over libmicrohttpd's 32 KiB per connection. */
    size_t filler_len = HEADER_MEMORY + 4096;
    char *filler = malloc(filler_len + 1);
    assert_non_null(filler);
    int n = snprintf(filler, 32, "X-Filler: ");
    memset(filler + n, 'a', filler_len - (size_t)n);
    filler[filler_len] = '\0';
    int r = harness_http(lim.legbad->port, "GET", path, HARNESS_LIST(lim.a.auth, filler), NULL, 0,
                         &resp);
    assert_4xx_or_closed(r, &resp, "one 36 KiB header");
    harness_response_done(&resp);
    /* Many small headers adding up to the same. */
    char *many = malloc(HEADER_MEMORY + 8192);
    assert_non_null(many);
    size_t o = 0;
    for (int i = 0; o < HEADER_MEMORY + 4096; i++)
        o += (size_t)sprintf(many + o, "X-H%d: %064d\r\n", i, i);
    char *raw = NULL;
    assert_true(asprintf(&raw,
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n%s\r\n",
                         path, lim.a.auth, many) > 0);
    r = harness_http_raw(lim.legbad->port, raw, strlen(raw), &resp);
    assert_4xx_or_closed(r, &resp, "many headers, 36 KiB in all");
    harness_response_done(&resp);
    free(raw);
    free(many);
    /* A request line (a path) over 32 KiB. */
    char *long_path = malloc(HEADER_MEMORY + 4096);
    assert_non_null(long_path);
    n = snprintf(long_path, 128, "%s/", path);
    memset(long_path + n, 'p', HEADER_MEMORY + 4096 - (size_t)n - 1);
    long_path[HEADER_MEMORY + 4095] = '\0';
    r = harness_http(lim.legbad->port, "GET", long_path, HARNESS_LIST(lim.a.auth), NULL, 0, &resp);
    assert_4xx_or_closed(r, &resp, "a 36 KiB path");
    harness_response_done(&resp);
    free(long_path);
    free(filler);
    assert_still_serving();

    /* Deep JSON: 60000 '[' fit the body limit and must not exhaust the parser's stack. */
    size_t depth = 60000;
    char *deep = malloc(depth + 1);
    assert_non_null(deep);
    memset(deep, '[', depth);
    deep[depth] = '\0';
    request(lim.a.auth, "POST", path, deep, NULL, &resp);
    assert_error(&resp, 400, "invalid_json");
    harness_response_done(&resp);
    /* The same inside the object, as the value of a field. */
    memcpy(deep, "{\"image\":", 9);
    request(lim.a.auth, "POST", path, deep, NULL, &resp);
    assert_error(&resp, 400, "invalid_json");
    harness_response_done(&resp);
    free(deep);
    /* 100000 of them are past the body limit before they are JSON at all. */
    deep = malloc(100000 + 1);
    assert_non_null(deep);
    memset(deep, '[', 100000);
    deep[100000] = '\0';
    request(lim.a.auth, "POST", path, deep, NULL, &resp);
    assert_error(&resp, 413, "body_too_large");
    harness_response_done(&resp);
    free(deep);
    assert_still_serving();

    /* A JSON body over 64 KiB, declared, and chunked (no length known in advance). */
    size_t big_len = BODY_LIMIT + 1024;
    char *big = malloc(big_len + 1);
    assert_non_null(big);
    n = snprintf(big, 128, "{\"image\":\"tiny\",\"size\":\"small\",\"start_url\":\"http://x/");
    memset(big + n, 'a', big_len - (size_t)n);
    memcpy(big + big_len - 2, "\"}", 2);
    big[big_len] = '\0';
    request(lim.a.auth, "POST", path, big, NULL, &resp);
    assert_error(&resp, 413, "body_too_large");
    harness_response_done(&resp);
    r = harness_http_ex(lim.legbad->port, "POST", path,
                        HARNESS_LIST(lim.a.auth, "Content-Type: application/json"), big, big_len,
                        HARNESS_CL_CHUNKED, &resp);
    assert_int_equal(r, 0);
    assert_error(&resp, 413, "body_too_large");
    harness_response_done(&resp);
    /* A declared length far past the limit, with no body behind it: answered at once. */
    r = harness_http_ex(lim.legbad->port, "POST", path,
                        HARNESS_LIST(lim.a.auth, "Content-Type: application/json"), NULL, 0,
                        1LL << 40, &resp);
    assert_int_equal(r, 0);
    assert_error(&resp, 413, "body_too_large");
    harness_response_done(&resp);
    free(big);
    assert_still_serving();

    /* Invalid UTF-8 in a string, and in a field name: 400, and the answer is valid UTF-8. */
    static const char *const bad_utf8[] = {
        "{\"image\":\"\xff\xfe\",\"size\":\"small\"}",
        "{\"image\":\"tiny\",\"size\":\"sm\xc0\xafll\"}",
        "{\"image\":\"tiny\",\"size\":\"small\",\"start_url\":\"http://\xed\xa0\x80/\"}",
        "{\"\xff\":1,\"image\":\"tiny\",\"size\":\"small\"}",
    };
    for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
        request(lim.a.auth, "POST", path, bad_utf8[i], NULL, &resp);
        print_message("invalid UTF-8 %zu: HTTP %d %s\n", i, resp.status,
                      harness_error_code(&resp) ? harness_error_code(&resp) : "");
        if (resp.status != 400 || !harness_error_code(&resp))
            fail_response(__FILE__, __LINE__, &resp, "invalid UTF-8 %zu: a 400 JSON error expected",
                          i);
        if (!is_utf8((const unsigned char *)resp.body, resp.body_len))
            fail_response(__FILE__, __LINE__, &resp, "invalid UTF-8 %zu: the answer echoes it", i);
        harness_response_done(&resp);
    }
    assert_int_equal(list_count(&lim.a), 0);
    assert_int_equal(harness_count_files(lim.instances_dir, ".qcow2"), overlays);
    assert_still_serving();
}

/* Paths that try to reach a route by another spelling: never served, never a 500. */
static void hostile_paths(void **state)
{
    char uuid[UUID_LEN + 1];
    create_ok(&lim.a, "small", uuid);
    const char *o = lim.a.uuid;
    char paths[16][256];
    size_t n = 0;
    snprintf(paths[n++], 256, "/orgs/%s/api/../api/instances", o);
    snprintf(paths[n++], 256, "//orgs/%s/api/instances", o);
    snprintf(paths[n++], 256, "/orgs//%s/api/instances", o);
    snprintf(paths[n++], 256, "/orgs/%s/api/./instances", o);
    snprintf(paths[n++], 256, "/orgs/%s%%2Fapi/instances", o);
    snprintf(paths[n++], 256, "/orgs/%s/api%%2Finstances", o);
    snprintf(paths[n++], 256, "/orgs/%s/api/%%69nstances", o);
    snprintf(paths[n++], 256, "/orgs/%s/api/instances/%s/..", o, uuid);
    snprintf(paths[n++], 256, "/orgs/%s/api/instances%%00", o);
    snprintf(paths[n++], 256, "/console/%s/..%%2f..%%2f..%%2fetc%%2fpasswd", uuid);
    snprintf(paths[n++], 256, "/console/%s/../../../etc/passwd", uuid);
    for (size_t i = 0; i < n; i++) {
        HarnessResponse resp = {0};
        request(lim.a.auth, "GET", paths[i], NULL, NULL, &resp);
        print_message("GET %s -> %d\n", paths[i], resp.status);
        if (resp.status != 404)
            fail_response(__FILE__, __LINE__, &resp, "GET %s: 404 expected", paths[i]);
        assert_error(&resp, 404, "not_found");
        harness_response_done(&resp);
    }

    /*
     * A dot segment where the instance's uuid goes is matched by the route
     * and then refused as what it is: not a UUID (README: 400
     * invalid_instance_uuid). Not served, not a 500.
     */
    static const char *const not_uuids[] = {"%2e%2e", "..", "%2E%2e%2F%2e%2e"};
    for (size_t i = 0; i < sizeof(not_uuids) / sizeof(not_uuids[0]); i++) {
        char path[256];
        HarnessResponse resp = {0};
        snprintf(path, sizeof(path), "/orgs/%s/api/instances/%s", o, not_uuids[i]);
        request(lim.a.auth, "GET", path, NULL, NULL, &resp);
        print_message("GET %s -> %d\n", path, resp.status);
        assert_error(&resp, 400, "invalid_instance_uuid");
        harness_response_done(&resp);
        request(lim.a.auth, "DELETE", path, NULL, NULL, &resp);
        assert_error(&resp, 400, "invalid_instance_uuid");
        harness_response_done(&resp);
    }
    /* Nothing of that touched the instance. */
    assert_int_equal(list_has(&lim.a, uuid), 1);
    delete_ok(&lim.a, uuid);
    assert_still_serving();
}

/* After all of the above: a create and a delete still work, and nothing was left behind. */
static void still_serving(void **state)
{
    char uuid[UUID_LEN + 1];
    assert_still_serving();
    create_ok(&lim.a, "small", uuid);
    delete_ok(&lim.a, uuid);
    assert_int_equal(harness_count_files(lim.instances_dir, ".qcow2"), 0);
    cJSON *json = NULL;
    assert_int_equal(harness_legbactl(lim.data_dir, HARNESS_LIST("instance", "list"), &json), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(json, "instances")), 0);
    cJSON_Delete(json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(idempotency_replay, setup_legbad),
        cmocka_unit_test_setup(idempotency_concurrent, setup_legbad),
        cmocka_unit_test_setup(idempotency_invalid_keys, setup_legbad),
        cmocka_unit_test_setup(idempotency_after_delete, setup_legbad),
        cmocka_unit_test_setup(quota_legbactl, setup_legbad),
        cmocka_unit_test_setup(quota_instances, setup_legbad),
        cmocka_unit_test_setup(quota_vcpus_memory, setup_legbad),
        cmocka_unit_test_setup(host_memory, setup_legbad),
        cmocka_unit_test_setup(hostile_slow_client, setup_legbad),
        cmocka_unit_test_setup(hostile_connections_per_ip, setup_legbad),
        cmocka_unit_test_setup(hostile_requests, setup_legbad),
        cmocka_unit_test_setup(hostile_paths, setup_legbad),
        cmocka_unit_test_setup(still_serving, setup_legbad),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
