/*
 * Tier 2: the Instances API end to end, legbad as a child process against
 * libvirt's fake driver (test:///default), orgs and tokens made with
 * legbactl, every request over a real loopback socket.
 *
 * The tests share one daemon and run in order; each leaves no instance
 * behind except where a later one says it relies on it (the restart test
 * takes over whatever is live).
 *
 * Set LEGBA_IT_KEEP=1 to keep the temp dir (data, images, legbad logs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "util.h"
#include "harness_assert.h"

#define UUID_LEN 36
#define BODY_LIMIT (64 * 1024)

static struct {
    char *dir;
    char *data_dir;
    char *images_dir;
    char *instances_dir;
    HarnessOrg a, b;
    HarnessLegbad *legbad;
    bool legbad_special;      /* started by a test with its own flags: replaced after it */
    char *tls_cert, *tls_key; /* self-signed for 127.0.0.1, made at setup */
    const char *ca_file;      /* tls_cert while the legbad serves HTTPS, else NULL */
} it;

/* A failed assertion names this daemon's log. */
static const HarnessLegbad *harness_assert_legbad(void)
{
    return it.legbad;
}

/* ---- more assertions about an answer (the common ones are in harness_assert.h) ---- */

#define assert_header(resp, name, want)                                                            \
    do {                                                                                           \
        const char *value_ = harness_header((resp), (name));                                       \
        if (!value_ || strcmp(value_, (want)) != 0)                                                \
            fail_response(__FILE__, __LINE__, (resp), "header %s: '%s' expected, got '%s'",        \
                          (name), (want), value_ ? value_ : "(none)");                             \
    } while (0)

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
 * One request with the given Authorization line (NULL for none); a body
 * goes with Content-Type: application/json. Usable from any thread.
 */
static int send_request(const char *auth, const char *method, const char *path, const char *body,
                        HarnessResponse *resp)
{
    const char *headers[3] = {0};
    size_t n = 0;
    if (auth)
        headers[n++] = auth;
    if (body)
        headers[n++] = "Content-Type: application/json";
    return harness_http_tls(it.legbad->port, it.ca_file, method, path, headers, body,
                            body ? strlen(body) : 0, resp);
}

static void request(const char *auth, const char *method, const char *path, const char *body,
                    HarnessResponse *resp)
{
    int r = send_request(auth, method, path, body, resp);
    if (r < 0 && harness_legbad_exited(it.legbad))
        fail_msg("%s %s: legbad died (exit status %d); its log is %s", method, path,
                 it.legbad->exit_status, it.legbad->log_path);
    if (r < 0)
        fail_msg("%s %s: no HTTP response: %s", method, path, strerror(-r));
}

static void overlay_path(char *buf, size_t size, const char *instance)
{
    snprintf(buf, size, "%s/%s.qcow2", it.instances_dir, instance);
}

/* "2025-01-10T12:00:00Z" exactly, within two minutes of now. */
static void assert_created_at_recent(const char *text)
{
    struct tm tm = {0};
    assert_non_null(text);
    assert_int_equal(strlen(text), 20);
    const char *end = strptime(text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end)
        fail_msg("created_at '%s' is not ISO 8601 UTC (YYYY-MM-DDTHH:MM:SSZ)", text);
    time_t t = timegm(&tm);
    time_t now = time(NULL);
    if (t < now - 120 || t > now + 120)
        fail_msg("created_at '%s' is not near now (%lld)", text, (long long)now);
}

/*
 * An instance object with exactly the contract's fields, and the readiness
 * fields; expires_at is lifetime seconds after created_at (lifetime < 0:
 * any time at all).
 */
static void check_instance_object(const cJSON *json, const char *image, const char *size,
                                  const char *status, int64_t lifetime)
{
    static const char *const fields[] = {"instance_uuid", "status",     "image",     "size",
                                         "created_at",    "access_url", "start_url", "ready",
                                         "ready_at",      "expires_at", "network",   "clipboard"};
    const size_t n_fields = sizeof(fields) / sizeof(fields[0]);
    assert_true(cJSON_IsObject(json));
    assert_int_equal(cJSON_GetArraySize(json), n_fields);
    for (size_t i = 0; i < n_fields; i++)
        if (!cJSON_HasObjectItem(json, fields[i]))
            fail_msg("instance object lacks '%s'", fields[i]);
    const char *uuid = harness_json_string(json, "instance_uuid");
    assert_non_null(uuid);
    assert_int_equal(strlen(uuid), UUID_LEN);
    assert_string_equal(harness_json_string(json, "status"), status);
    assert_string_equal(harness_json_string(json, "image"), image);
    assert_string_equal(harness_json_string(json, "size"), size);
    assert_created_at_recent(harness_json_string(json, "created_at"));
    int64_t created, expires;
    assert_int_equal(util_parse_iso8601(harness_json_string(json, "created_at"), &created), 0);
    assert_non_null(harness_json_string(json, "expires_at"));
    assert_int_equal(util_parse_iso8601(harness_json_string(json, "expires_at"), &expires), 0);
    if (lifetime >= 0)
        assert_int_equal(expires - created, lifetime);
    /* The viewer's address on this legbad; the console tests check its exact form and key. */
    const char *access = harness_json_string(json, "access_url");
    char console_path[64];
    snprintf(console_path, sizeof(console_path), "/console/%s/", uuid);
    assert_non_null(access);
    assert_true(strncmp(access, "http://127.0.0.1:", 17) == 0);
    assert_non_null(strstr(access, console_path));
    /* The fake driver has no guest to report a drawn page: never ready here. */
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(json, "ready")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(json, "ready_at")));
}

/* check_instance_object() of a create without timeout_seconds: the default lifetime, an hour. */
static void assert_instance_object(const cJSON *json, const char *image, const char *size,
                                   const char *status)
{
    check_instance_object(json, image, size, status, 3600);
}

/* POST a create that must succeed; checks the answer and returns the new uuid. */
static void create_instance(const HarnessOrg *org, const char *size, char ret_uuid[UUID_LEN + 1])
{
    char path[256], body[128], location[256], overlay[512];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), org->uuid);
    snprintf(body, sizeof(body), "{\"image\":\"tiny\",\"size\":\"%s\"}", size);
    request(org->auth, "POST", path, body, &resp);
    assert_status(&resp, 201);
    assert_instance_object(resp.json, "tiny", size, "running");
    const char *uuid = harness_json_string(resp.json, "instance_uuid");
    path_instance(location, sizeof(location), org->uuid, uuid);
    assert_header(&resp, "Location", location);
    overlay_path(overlay, sizeof(overlay), uuid);
    if (!harness_file_exists(overlay))
        fail_msg("overlay %s missing after create", overlay);
    snprintf(ret_uuid, UUID_LEN + 1, "%s", uuid);
    harness_response_done(&resp);
}

static void delete_instance(const HarnessOrg *org, const char *uuid)
{
    char path[256], overlay[512];
    HarnessResponse resp = {0};
    path_instance(path, sizeof(path), org->uuid, uuid);
    request(org->auth, "DELETE", path, NULL, &resp);
    assert_status(&resp, 204);
    assert_int_equal(resp.body_len, 0);
    harness_response_done(&resp);
    overlay_path(overlay, sizeof(overlay), uuid);
    if (harness_file_exists(overlay))
        fail_msg("overlay %s still there after delete", overlay);
}

/* GET the org's list (must be 200 with a consistent total); caller frees. */
static cJSON *list_instances(const HarnessOrg *org)
{
    char path[256];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), org->uuid);
    request(org->auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    const cJSON *array = cJSON_GetObjectItemCaseSensitive(resp.json, "instances");
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(resp.json, "total");
    if (!cJSON_IsArray(array) || !cJSON_IsNumber(total) ||
        (int)total->valuedouble != cJSON_GetArraySize(array))
        fail_response(__FILE__, __LINE__, &resp, "list must be {\"instances\":[…],\"total\":N}");
    cJSON *json = resp.json;
    resp.json = NULL;
    harness_response_done(&resp);
    return json;
}

/* The instance with this uuid in a list answer, or NULL. */
static const cJSON *list_find(const cJSON *list, const char *uuid)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(list, "instances"))
    {
        const char *u = harness_json_string(item, "instance_uuid");
        if (u && strcmp(u, uuid) == 0)
            return item;
    }
    return NULL;
}

static int list_total(const HarnessOrg *org)
{
    cJSON *list = list_instances(org);
    int total = (int)cJSON_GetObjectItemCaseSensitive(list, "total")->valuedouble;
    cJSON_Delete(list);
    return total;
}

/* Whether `legbactl instance list` (every org) still has this uuid. */
static bool legbactl_has_instance(const char *uuid)
{
    cJSON *json = NULL;
    int status = harness_legbactl(it.data_dir, HARNESS_LIST("instance", "list"), &json);
    if (status != 0 || !json)
        fail_msg("legbactl instance list: exit status %d", status);
    const cJSON *item;
    bool found = false;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(json, "instances"))
    {
        const char *u = harness_json_string(item, "instance_uuid");
        if (u && strcmp(u, uuid) == 0)
            found = true;
    }
    cJSON_Delete(json);
    return found;
}

static int overlay_count(void)
{
    int n = harness_count_files(it.instances_dir, ".qcow2");
    assert_true(n >= 0);
    return n;
}

/* ---- setup ---- */

static int start_legbad(const char *log_name)
{
    /*
     * The fake driver's guests take no memory, and the concurrency test
     * holds more of them than this host has RAM for: no memory admission.
     */
    char conf[512];
    snprintf(conf, sizeof(conf), "%s/base.conf", it.dir);
    FILE *f = fopen(conf, "we");
    if (!f)
        return -errno;
    fprintf(f, "memory_overcommit_percent = 0\n");
    fclose(f);
    HarnessLegbadOptions options = {
        .dir = it.dir,
        .data_dir = it.data_dir,
        .images_dir = it.images_dir,
        .libvirt_uri = "test:///default",
        .log_name = log_name,
        /* Pinned so the template and the log do not depend on the host's /dev/kvm. */
        .extra_args = HARNESS_LIST("--config", conf, "--accel", "tcg"),
    };
    return harness_legbad_start(&options, &it.legbad);
}

/*
 * The image "tiny-clipboard": tiny's disk (a hard link) under a manifest
 * that declares a clipboard, which tiny has not. The fake driver boots
 * nothing, so only what legbad makes of the declaration matters.
 */
static int tiny_with_clipboard(void)
{
    char dir[512], from[600], to[600];
    snprintf(dir, sizeof(dir), "%s/tiny-clipboard", it.images_dir);
    snprintf(from, sizeof(from), "%s/tiny/disk.qcow2", it.images_dir);
    snprintf(to, sizeof(to), "%s/disk.qcow2", dir);
    if (mkdir(dir, 0755) < 0 || link(from, to) < 0)
        return -1;
    snprintf(to, sizeof(to), "%s/manifest.json", dir);
    FILE *f = fopen(to, "we");
    if (!f)
        return -1;
    fprintf(f, "{\"schema\": 1, \"name\": \"tiny-clipboard\", \"boot\": \"firmware\",\n"
               " \"disk\": \"disk.qcow2\", \"disk_format\": \"qcow2\", \"clipboard\": true}\n");
    return fclose(f) == 0 ? 0 : -1;
}

static int group_setup(void **state)
{
    if (harness_tempdir("legba-it-api-", &it.dir) < 0)
        return -1;
    if (asprintf(&it.data_dir, "%s/data", it.dir) < 0 ||
        asprintf(&it.images_dir, "%s/images", it.dir) < 0 ||
        asprintf(&it.instances_dir, "%s/instances", it.data_dir) < 0)
        return -1;
    if (mkdir(it.data_dir, 0711) < 0)
        return -1;
    if (harness_build_image(it.images_dir, "tiny") != 0 || tiny_with_clipboard() < 0)
        return -1;
    if (harness_org_create(it.data_dir, "org-a", &it.a) < 0 ||
        harness_org_create(it.data_dir, "org-b", &it.b) < 0)
        return -1;
    if (harness_tls_cert(it.dir, &it.tls_cert, &it.tls_key) < 0)
        return -1;
    if (start_legbad("legbad.log") < 0)
        return -1;
    return 0;
}

/*
 * Before each test: a legbad that died during the previous one is
 * reported (with its log) and replaced, so one crash fails one test and
 * the others still say something.
 */
static int revive_legbad(void **state)
{
    static unsigned revived;
    char log_name[64];
    if (it.legbad && !harness_legbad_exited(it.legbad))
        return 0;
    if (it.legbad) {
        fprintf(stderr, "it_api: legbad died (exit status %d) in the previous test; its log:\n",
                it.legbad->exit_status);
        harness_dump_file(it.legbad->log_path);
        harness_legbad_free(it.legbad);
        it.legbad = NULL;
    }
    snprintf(log_name, sizeof(log_name), "legbad-revived-%u.log", ++revived);
    return start_legbad(log_name);
}

static int group_teardown(void **state)
{
    harness_legbad_stop_free(&it.legbad);
    harness_tempdir_remove(it.dir);
    free(it.dir);
    free(it.data_dir);
    free(it.images_dir);
    free(it.instances_dir);
    free(it.tls_cert);
    free(it.tls_key);
    return 0;
}

/* ---- the tests ---- */

static void api_create_get_delete(void **state)
{
    char uuid[UUID_LEN + 1], path[256], overlay[512];
    HarnessResponse resp = {0};

    int before = list_total(&it.a);
    create_instance(&it.a, "small", uuid);
    assert_true(legbactl_has_instance(uuid));

    cJSON *list = list_instances(&it.a);
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(list, "total")->valuedouble, before + 1);
    const cJSON *listed = list_find(list, uuid);
    assert_non_null(listed);
    assert_instance_object(listed, "tiny", "small", "running");

    path_instance(path, sizeof(path), it.a.uuid, uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    assert_instance_object(resp.json, "tiny", "small", "running");
    /* The same object as in the list. */
    assert_true(cJSON_Compare(resp.json, listed, true));
    cJSON_Delete(list);
    harness_response_done(&resp);

    /* The uuid in the path is case-insensitive: one instance, one key. */
    char upper[UUID_LEN + 1], upper_path[256];
    for (size_t i = 0; i <= UUID_LEN; i++)
        upper[i] = (char)(uuid[i] >= 'a' && uuid[i] <= 'f' ? uuid[i] - 'a' + 'A' : uuid[i]);
    path_instance(upper_path, sizeof(upper_path), it.a.uuid, upper);
    request(it.a.auth, "GET", upper_path, NULL, &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "instance_uuid"), uuid);
    harness_response_done(&resp);

    delete_instance(&it.a, uuid);

    request(it.a.auth, "GET", path, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);

    list = list_instances(&it.a);
    assert_null(list_find(list, uuid));
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(list, "total")->valuedouble, before);
    cJSON_Delete(list);
    overlay_path(overlay, sizeof(overlay), uuid);
    assert_false(harness_file_exists(overlay));
    assert_false(legbactl_has_instance(uuid));

    request(it.a.auth, "DELETE", path, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
}

static void api_sizes_and_images(void **state)
{
    static const char *const sizes[] = {"small", "medium", "large"};
    char uuids[3][UUID_LEN + 1], path[256];
    HarnessResponse resp = {0};

    for (size_t i = 0; i < 3; i++)
        create_instance(&it.b, sizes[i], uuids[i]);
    cJSON *list = list_instances(&it.b);
    for (size_t i = 0; i < 3; i++) {
        const cJSON *item = list_find(list, uuids[i]);
        assert_non_null(item);
        assert_string_equal(harness_json_string(item, "size"), sizes[i]);
    }
    cJSON_Delete(list);
    for (size_t i = 0; i < 3; i++)
        delete_instance(&it.b, uuids[i]);

    int overlays = overlay_count();
    path_instances(path, sizeof(path), it.b.uuid);
    request(it.b.auth, "POST", path, "{\"image\":\"tiny\",\"size\":\"huge\"}", &resp);
    assert_error(&resp, 400, "invalid_size");
    assert_message_has(&resp, "small");
    assert_message_has(&resp, "medium");
    assert_message_has(&resp, "large");
    harness_response_done(&resp);

    /* Sizes are names, not case-folded or trimmed. */
    request(it.b.auth, "POST", path, "{\"image\":\"tiny\",\"size\":\"Small\"}", &resp);
    assert_error(&resp, 400, "invalid_size");
    harness_response_done(&resp);

    request(it.b.auth, "POST", path, "{\"image\":\"nosuch\",\"size\":\"small\"}", &resp);
    assert_error(&resp, 400, "invalid_image");
    assert_message_has(&resp, "tiny");
    harness_response_done(&resp);

    /* A name that looks like a path is just an unknown image. */
    request(it.b.auth, "POST", path, "{\"image\":\"../images/tiny\",\"size\":\"small\"}", &resp);
    assert_error(&resp, 400, "invalid_image");
    harness_response_done(&resp);

    assert_int_equal(overlay_count(), overlays);
    assert_int_equal(list_total(&it.b), 0);
}

static void assert_unauthorized(const char *auth_line, const char *what)
{
    char path[256];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), it.a.uuid);
    request(auth_line, "GET", path, NULL, &resp);
    if (resp.status != 401)
        print_error("auth case: %s\n", what);
    assert_error(&resp, 401, "unauthorized");
    const char *challenge = harness_header(&resp, "WWW-Authenticate");
    if (!challenge || strncmp(challenge, "Bearer", 6) != 0)
        fail_response(__FILE__, __LINE__, &resp, "%s: WWW-Authenticate: Bearer… expected", what);
    harness_response_done(&resp);

    /* A create is refused the same way, and creates nothing. */
    request(auth_line, "POST", path, "{\"image\":\"tiny\",\"size\":\"small\"}", &resp);
    assert_error(&resp, 401, "unauthorized");
    harness_response_done(&resp);
}

static void api_auth(void **state)
{
    char path[256], line[600];
    HarnessResponse resp = {0};
    int overlays = overlay_count();

    assert_unauthorized(NULL, "no Authorization header");
    snprintf(line, sizeof(line), "Authorization: Basic %s", "YWxhZGRpbjpvcGVuc2VzYW1l");
    assert_unauthorized(line, "Basic scheme");
    const char *token_a = it.a.auth + strlen("Authorization: Bearer ");
    snprintf(line, sizeof(line), "Authorization: Token %s", token_a);
    assert_unauthorized(line, "Token scheme with a good token");
    snprintf(line, sizeof(line), "Authorization: Bearer");
    assert_unauthorized(line, "Bearer without a token");
    assert_unauthorized("Authorization: Bearer not-a-token", "malformed token");
    /* Right shape, wrong length or alphabet. */
    snprintf(line, sizeof(line), "Authorization: Bearer %.*s", (int)strlen(token_a) - 1, token_a);
    assert_unauthorized(line, "token one character short");
    snprintf(line, sizeof(line), "Authorization: Bearer %sa", token_a);
    assert_unauthorized(line, "token one character long");
    snprintf(line, sizeof(line), "Authorization: Bearer %s", token_a);
    for (char *p = line + strlen(line) - 64; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_unauthorized(line, "token in upper case");
    assert_unauthorized("Authorization: Bearer "
                        "lgb_0000000000000000000000000000000000000000000000000000000000000000",
                        "well-formed unknown token");
    /* Past the header limit: refused unread. */
    char longline[1200];
    int n = snprintf(longline, sizeof(longline), "Authorization: Bearer %s", token_a);
    memset(longline + n, ' ', sizeof(longline) - (size_t)n - 1);
    longline[sizeof(longline) - 1] = '\0';
    assert_unauthorized(longline, "token padded past the header limit");

    /* The scheme is case-insensitive (RFC 7235). */
    path_instances(path, sizeof(path), it.a.uuid);
    snprintf(line, sizeof(line), "Authorization: bearer %s", token_a);
    request(line, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    harness_response_done(&resp);

    /* A second token for org A works alongside the first. */
    cJSON *json = NULL;
    assert_int_equal(
        harness_legbactl(it.data_dir, HARNESS_LIST("token", "create", "--org", it.a.uuid), &json),
        0);
    const char *token2 = harness_json_string(json, "token");
    const char *token2_id = harness_json_string(json, "token_id");
    assert_non_null(token2);
    assert_non_null(token2_id);
    assert_string_equal(harness_json_string(json, "org_uuid"), it.a.uuid);
    char auth2[160], token2_id_copy[UUID_LEN + 1];
    snprintf(auth2, sizeof(auth2), "Authorization: Bearer %s", token2);
    snprintf(token2_id_copy, sizeof(token2_id_copy), "%s", token2_id);
    cJSON_Delete(json);

    request(auth2, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    harness_response_done(&resp);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    harness_response_done(&resp);
    /* Org A's second token sees nothing of org B. */
    char path_b[256];
    path_instances(path_b, sizeof(path_b), it.b.uuid);
    request(auth2, "GET", path_b, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);

    /* Revoked by legbactl while legbad runs: refused at the next request. */
    assert_int_equal(
        harness_legbactl(it.data_dir, HARNESS_LIST("token", "revoke", token2_id_copy), NULL), 0);
    assert_unauthorized(auth2, "revoked token");
    /* The first token is untouched. */
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    harness_response_done(&resp);

    assert_int_equal(overlay_count(), overlays);
}

static void api_isolation(void **state)
{
    char uuid[UUID_LEN + 1], path[256];
    HarnessResponse resp = {0};

    create_instance(&it.a, "small", uuid);

    /* B's token on A's paths: as if nothing were there. */
    path_instances(path, sizeof(path), it.a.uuid);
    request(it.b.auth, "GET", path, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
    request(it.b.auth, "POST", path, "{\"image\":\"tiny\",\"size\":\"small\"}", &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
    path_instance(path, sizeof(path), it.a.uuid, uuid);
    request(it.b.auth, "GET", path, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
    request(it.b.auth, "DELETE", path, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);

    /* A's instance through B's own path: indistinguishable from a missing one. */
    path_instance(path, sizeof(path), it.b.uuid, uuid);
    request(it.b.auth, "GET", path, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    char *found_body = strdup(resp.body);
    harness_response_done(&resp);
    request(it.b.auth, "DELETE", path, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
    path_instance(path, sizeof(path), it.b.uuid, "00000000-0000-4000-8000-000000000000");
    request(it.b.auth, "GET", path, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    assert_string_equal(resp.body, found_body);
    free(found_body);
    harness_response_done(&resp);

    /* A's instance is untouched. */
    path_instance(path, sizeof(path), it.a.uuid, uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "status"), "running");
    harness_response_done(&resp);
    char overlay[512];
    overlay_path(overlay, sizeof(overlay), uuid);
    assert_true(harness_file_exists(overlay));

    cJSON *list = list_instances(&it.b);
    assert_null(list_find(list, uuid));
    cJSON_Delete(list);
    list = list_instances(&it.a);
    assert_non_null(list_find(list, uuid));
    cJSON_Delete(list);

    /* Only legbactl's per-org view shows it, under A. */
    cJSON *json = NULL;
    assert_int_equal(
        harness_legbactl(it.data_dir, HARNESS_LIST("instance", "list", "--org", it.b.uuid), &json),
        0);
    const cJSON *item;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(json, "instances"))
        assert_string_not_equal(harness_json_string(item, "instance_uuid"), uuid);
    cJSON_Delete(json);

    delete_instance(&it.a, uuid);
}

/* A request with a JSON body that must fail with status and code. */
static void assert_create_fails(const char *body, const char *content_type, int status,
                                const char *code)
{
    char path[256], type[128];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), it.a.uuid);
    snprintf(type, sizeof(type), "Content-Type: %s", content_type ? content_type : "");
    const char *headers[] = {it.a.auth, content_type ? type : NULL, NULL};
    int r = harness_http(it.legbad->port, "POST", path, headers, body, strlen(body), &resp);
    assert_int_equal(r, 0);
    if (resp.status != status)
        print_error("request body was: %.200s\n", body);
    assert_error(&resp, status, code);
    harness_response_done(&resp);
}

static void assert_path_status(const char *method, const char *path, int status, const char *code)
{
    HarnessResponse resp = {0};
    request(it.a.auth, method, path, NULL, &resp);
    if (resp.status != status)
        print_error("%s %s\n", method, path);
    assert_error(&resp, status, code);
    harness_response_done(&resp);
}

static void assert_method_not_allowed(const char *method, const char *path, const char *allow)
{
    HarnessResponse resp = {0};
    request(it.a.auth, method, path, "{\"image\":\"tiny\",\"size\":\"small\"}", &resp);
    if (resp.status != 405)
        print_error("%s %s\n", method, path);
    assert_error(&resp, 405, "method_not_allowed");
    assert_header(&resp, "Allow", allow);
    harness_response_done(&resp);
}

/* A body of exactly len bytes: a create of size "nope" padded with spaces. */
static char *padded_body(size_t len)
{
    static const char json[] = "{\"image\":\"tiny\",\"size\":\"nope\"}";
    char *body = malloc(len + 1);
    assert_non_null(body);
    memset(body, ' ', len);
    memcpy(body, json, sizeof(json) - 1);
    body[len] = '\0';
    return body;
}

/* Overlay files when the bad-input tests began: none of them may add one. */
static int overlays_before_bad_input = -1;

static void api_bad_bodies(void **state)
{
    char path[256];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), it.a.uuid);
    overlays_before_bad_input = overlay_count();

    /* Bodies. */
    assert_create_fails("{", "application/json", 400, "invalid_json");
    assert_create_fails("", "application/json", 400, "invalid_json");
    assert_create_fails("[\"tiny\",\"small\"]", "application/json", 400, "invalid_json");
    assert_create_fails("{\"image\":\"tiny\",\"size\":\"small\"} {}", "application/json", 400,
                        "invalid_json");
    assert_create_fails("{\"image\":\"tiny\",\"image\":\"tiny\",\"size\":\"small\"}",
                        "application/json", 400, "invalid_json");
    assert_create_fails("{\"image\":1,\"size\":\"small\"}", "application/json", 400,
                        "invalid_type");
    assert_create_fails("{\"image\":\"tiny\",\"size\":null}", "application/json", 400,
                        "invalid_type");
    assert_create_fails("{\"image\":\"tiny\",\"size\":[\"small\"]}", "application/json", 400,
                        "invalid_type");
    assert_create_fails("{\"image\":\"tiny\",\"size\":\"small\",\"gpu\":true}", "application/json",
                        400, "unknown_field");
    assert_create_fails("{\"image\":\"tiny\"}", "application/json", 400, "missing_field");
    assert_create_fails("{\"size\":\"small\"}", "application/json", 400, "missing_field");
    assert_create_fails("{}", "application/json", 400, "missing_field");

    /* Media types. */
    assert_create_fails("{\"image\":\"tiny\",\"size\":\"small\"}", "text/plain", 415,
                        "unsupported_media_type");
    assert_create_fails("{\"image\":\"tiny\",\"size\":\"small\"}", NULL, 415,
                        "unsupported_media_type");
    assert_create_fails("{\"image\":\"tiny\",\"size\":\"small\"}", "application/jsonx", 415,
                        "unsupported_media_type");

    /* Body size: the limit itself is fine, one byte past it is not, however it is sent. */
    const char *json_type[] = {it.a.auth, "Content-Type: application/json", NULL};
    char *body = padded_body(BODY_LIMIT);
    assert_int_equal(
        harness_http(it.legbad->port, "POST", path, json_type, body, BODY_LIMIT, &resp), 0);
    assert_error(&resp, 400, "invalid_size");
    harness_response_done(&resp);
    free(body);

    body = padded_body(BODY_LIMIT + 1);
    assert_int_equal(
        harness_http(it.legbad->port, "POST", path, json_type, body, BODY_LIMIT + 1, &resp), 0);
    assert_error(&resp, 413, "body_too_large");
    harness_response_done(&resp);
    free(body);

    /* No length up front: the limit has to hold while the body streams in. */
    body = padded_body(BODY_LIMIT + 4096);
    assert_int_equal(harness_http_ex(it.legbad->port, "POST", path, json_type, body,
                                     BODY_LIMIT + 4096, HARNESS_CL_CHUNKED, &resp),
                     0);
    assert_error(&resp, 413, "body_too_large");
    harness_response_done(&resp);
    free(body);

    /* Chunked under the limit is an ordinary body. */
    static const char small_json[] = "{\"image\":\"tiny\",\"size\":\"nope\"}";
    assert_int_equal(harness_http_ex(it.legbad->port, "POST", path, json_type, small_json,
                                     strlen(small_json), HARNESS_CL_CHUNKED, &resp),
                     0);
    assert_error(&resp, 400, "invalid_size");
    harness_response_done(&resp);

    /* A declared length over the limit is refused before the body is read. */
    assert_int_equal(harness_http_ex(it.legbad->port, "POST", path, json_type, small_json,
                                     strlen(small_json), 10 * 1024 * 1024, &resp),
                     0);
    assert_error(&resp, 413, "body_too_large");
    harness_response_done(&resp);
    assert_int_equal(harness_http_ex(it.legbad->port, "POST", path, json_type, small_json,
                                     strlen(small_json), 99999999999999999LL, &resp),
                     0);
    assert_error(&resp, 413, "body_too_large");
    harness_response_done(&resp);
}

static void api_bad_paths_and_methods(void **state)
{
    char path[256], one[256], other[300];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), it.a.uuid);

    snprintf(other, sizeof(other), "/orgs/%s/api/instances", "not-a-uuid");
    assert_path_status("GET", other, 400, "invalid_org_uuid");
    snprintf(other, sizeof(other), "/orgs/%.35s/api/instances", it.a.uuid);
    assert_path_status("GET", other, 400, "invalid_org_uuid");
    snprintf(other, sizeof(other), "/orgs/%s/api/instances/%s", it.a.uuid, "not-a-uuid");
    assert_path_status("GET", other, 400, "invalid_instance_uuid");
    assert_path_status("DELETE", other, 400, "invalid_instance_uuid");
    snprintf(other, sizeof(other), "/orgs/%s/api/instances/%s", it.a.uuid,
             "00000000-0000-4000-8000-00000000000g");
    assert_path_status("GET", other, 400, "invalid_instance_uuid");
    /* Never decoded: an encoded NUL is part of the segment, which is then no UUID. */
    snprintf(other, sizeof(other), "/orgs/%s%%00/api/instances", it.a.uuid);
    assert_path_status("GET", other, 400, "invalid_org_uuid");

    /* Each one is prefix + org A's uuid + suffix. */
    static const char *const not_found[][2] = {
        {"/", NULL},
        {"/orgs", NULL},
        {"/orgs/", NULL},
        {"/api/instances", NULL},
        {"/orgs/", ""},
        {"/orgs/", "/api"},
        {"/orgs/", "/api/instances/"},
        {"/orgs/", "/api/instancesX"},
        {"/orgs/", "/api/Instances"},
        {"/orgs/", "/api/../api/instances"},
        {"/orgs/", "/./api/instances"},
        {"/orgs//", "/api/instances"},
        {"//orgs/", "/api/instances"},
        {"/orgs/", "/api//instances"},
        {"/orgs/", "/api%2Finstances"},
        {"/orgs/", "/api%2finstances"},
        {"/orgs/", "/api/instances%00"},
        {"/orgs/", "/api/instances%00/x"},
        {"/orgs/", "/api/instances/00000000-0000-4000-8000-000000000000/console"},
        {"/orgs/", "/api/instances/00000000-0000-4000-8000-000000000000/"},
    };
    /* All of them are tried, and every one that is not a 404 is reported. */
    size_t wrong = 0;
    for (size_t i = 0; i < sizeof(not_found) / sizeof(not_found[0]); i++) {
        if (not_found[i][1])
            snprintf(other, sizeof(other), "%s%s%s", not_found[i][0], it.a.uuid, not_found[i][1]);
        else
            snprintf(other, sizeof(other), "%s", not_found[i][0]);
        request(it.a.auth, "GET", other, NULL, &resp);
        const char *code = harness_error_code(&resp);
        if (resp.status != 404 || !code || strcmp(code, "not_found") != 0) {
            print_error("GET %s: HTTP %d %.300s (404 not_found expected)\n", other, resp.status,
                        resp.body);
            wrong++;
        }
        harness_response_done(&resp);
    }
    if (wrong)
        fail_msg("%zu paths that are no route were answered as if they were", wrong);
    /* A path longer than any route. */
    char long_path[2100];
    int n = snprintf(long_path, sizeof(long_path), "%s/", path);
    memset(long_path + n, 'x', sizeof(long_path) - (size_t)n - 1);
    long_path[sizeof(long_path) - 1] = '\0';
    assert_path_status("GET", long_path, 404, "not_found");

    /* Methods. */
    path_instance(one, sizeof(one), it.a.uuid, "00000000-0000-4000-8000-000000000000");
    assert_method_not_allowed("PUT", path, "GET, POST");
    assert_method_not_allowed("PATCH", path, "GET, POST");
    assert_method_not_allowed("DELETE", path, "GET, POST");
    assert_method_not_allowed("POST", one, "GET, DELETE");
    assert_method_not_allowed("PUT", one, "GET, DELETE");
    assert_method_not_allowed("PATCH", one, "GET, DELETE");
}

static void api_bad_http(void **state)
{
    char path[256];
    HarnessResponse resp = {0};
    int n;
    path_instances(path, sizeof(path), it.a.uuid);

    /* Malformed HTTP: refused by the server, which keeps serving. */
    static const char *const raw[] = {
        "GARBAGE\r\n\r\n",
        "GET /orgs HTTP/1.1\r\nConnection: close\r\n\r\n", /* no Host */
        "GET / HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
        int r = harness_http_raw(it.legbad->port, raw[i], strlen(raw[i]), &resp);
        /* An immediate close is an acceptable answer to garbage too. */
        if (r < 0)
            print_message("raw request %zu: closed without an answer (accepted)\n", i);
        if (r == 0 && (resp.status < 400 || resp.status > 505))
            fail_response(__FILE__, __LINE__, &resp, "raw request %zu: a 4xx/5xx expected", i);
        harness_response_done(&resp);
    }
    /* A header block past the server's memory limit. */
    char *huge = malloc(48 * 1024);
    assert_non_null(huge);
    n = snprintf(huge, 64, "X-Filler: ");
    memset(huge + n, 'a', 48 * 1024 - (size_t)n - 1);
    huge[48 * 1024 - 1] = '\0';
    const char *huge_headers[] = {it.a.auth, huge, NULL};
    int r = harness_http(it.legbad->port, "GET", path, huge_headers, NULL, 0, &resp);
    if (r == 0 && (resp.status < 400 || resp.status > 499))
        fail_response(__FILE__, __LINE__, &resp, "oversized header block: a 4xx expected");
    harness_response_done(&resp);
    free(huge);
}

/* After all of that: still serving, and no failed request left a disk or a record behind. */
static void api_survives_bad_input(void **state)
{
    char uuid[UUID_LEN + 1];
    int before = overlay_count();
    create_instance(&it.a, "medium", uuid);
    assert_int_equal(overlay_count(), before + 1);
    delete_instance(&it.a, uuid);

    int live = list_total(&it.a) + list_total(&it.b);
    assert_int_equal(overlay_count(), live);
    if (overlays_before_bad_input >= 0)
        assert_int_equal(overlay_count(), overlays_before_bad_input);
    /* Not even a record in a state clients cannot see. */
    cJSON *json = NULL;
    assert_int_equal(harness_legbactl(it.data_dir, HARNESS_LIST("instance", "list"), &json), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(json, "instances")), live);
    cJSON_Delete(json);
}

/*
 * What a client puts in a URL must not become lines of its own in the
 * log, or anyone who can reach the port (no token needed) can forge
 * entries for whoever reads it.
 */
static void api_log_lines(void **state)
{
    static const char marker[] = "legba-forged-entry";
    HarnessResponse resp = {0};
    request(NULL, "GET", "/orgs/%0Alegba-forged-entry%0D%0Alegba-forged-entry", NULL, &resp);
    assert_error(&resp, 401, "unauthorized");
    harness_response_done(&resp);

    /* The access line is written after the answer is sent: give it a moment. */
    assert_true(harness_log_wait(it.legbad->log_path, marker, 2000));
    if (harness_log_contains(it.legbad->log_path, "\nlegba-forged-entry") ||
        harness_log_contains(it.legbad->log_path, "\rlegba-forged-entry"))
        fail_msg("a percent-encoded CR/LF in the URL started a new line in %s",
                 it.legbad->log_path);
}

static void api_restart_reconcile(void **state)
{
    char a1[UUID_LEN + 1], a2[UUID_LEN + 1], b1[UUID_LEN + 1];
    char path[256], needle[128];
    HarnessResponse resp = {0};

    create_instance(&it.a, "small", a1);
    create_instance(&it.a, "large", a2);
    create_instance(&it.b, "medium", b1);
    cJSON *lists[2] = {list_instances(&it.a), list_instances(&it.b)};
    const HarnessOrg *orgs[2] = {&it.a, &it.b};
    assert_string_equal(harness_json_string(list_find(lists[0], a1), "status"), "running");
    assert_string_equal(harness_json_string(list_find(lists[0], a2), "status"), "running");
    assert_string_equal(harness_json_string(list_find(lists[1], b1), "status"), "running");

    int status = harness_legbad_stop(it.legbad);
    if (status != 0)
        harness_dump_file(it.legbad->log_path);
    assert_int_equal(status, 0);
    harness_legbad_free(it.legbad);
    it.legbad = NULL;
    /* Stopping legbad leaves the records and the disks alone. */
    assert_true(legbactl_has_instance(a1));
    assert_int_equal(overlay_count(),
                     cJSON_GetArraySize(cJSON_GetObjectItem(lists[0], "instances")) +
                         cJSON_GetArraySize(cJSON_GetObjectItem(lists[1], "instances")));

    assert_int_equal(start_legbad("legbad-restart.log"), 0);
    const char *log = it.legbad->log_path;
    if (!harness_log_contains(log, "reconcile"))
        harness_dump_file(log);
    assert_true(harness_log_contains(log, "reconcile"));

    /* The fake driver forgot every domain: whatever ran is stopped now, and says so. */
    for (size_t o = 0; o < 2; o++) {
        cJSON *after = list_instances(orgs[o]);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(after, "instances")),
                         cJSON_GetArraySize(cJSON_GetObjectItem(lists[o], "instances")));
        const cJSON *item;
        cJSON_ArrayForEach(item, cJSON_GetObjectItem(lists[o], "instances"))
        {
            const char *uuid = harness_json_string(item, "instance_uuid");
            const cJSON *now = list_find(after, uuid);
            assert_non_null(now);
            assert_string_equal(harness_json_string(now, "status"), "stopped");
            /* Everything else about it is as it was. */
            assert_string_equal(harness_json_string(now, "created_at"),
                                harness_json_string(item, "created_at"));
            assert_string_equal(harness_json_string(now, "size"),
                                harness_json_string(item, "size"));
            /* Each one that was running is named in the log; a stopped one had nothing to fix. */
            snprintf(needle, sizeof(needle), "reconcile: instance %s", uuid);
            bool was_running = strcmp(harness_json_string(item, "status"), "running") == 0;
            if (was_running && !harness_log_contains(log, needle)) {
                harness_dump_file(log);
                fail_msg("the log does not mention %s", needle);
            }

            path_instance(path, sizeof(path), orgs[o]->uuid, uuid);
            request(orgs[o]->auth, "GET", path, NULL, &resp);
            assert_status(&resp, 200);
            assert_string_equal(harness_json_string(resp.json, "status"), "stopped");
            harness_response_done(&resp);
        }
        cJSON_Delete(after);
    }
    assert_true(harness_log_contains(log, "now stopped"));

    /* A stopped instance can be deleted, disk and all. */
    for (size_t o = 0; o < 2; o++) {
        const cJSON *item;
        cJSON_ArrayForEach(item, cJSON_GetObjectItem(lists[o], "instances"))
        {
            const char *uuid = harness_json_string(item, "instance_uuid");
            delete_instance(orgs[o], uuid);
            path_instance(path, sizeof(path), orgs[o]->uuid, uuid);
            request(orgs[o]->auth, "GET", path, NULL, &resp);
            assert_error(&resp, 404, "not_found");
            harness_response_done(&resp);
            assert_false(legbactl_has_instance(uuid));
        }
        cJSON_Delete(lists[o]);
    }
    assert_int_equal(list_total(&it.a), 0);
    assert_int_equal(list_total(&it.b), 0);
    assert_int_equal(overlay_count(), 0);
}

/* ---- concurrency ---- */

#define WORKERS 8
#define PER_WORKER 3

typedef struct {
    int index;
    int created;
    int deleted;
    char error[512]; /* first failure, "" when none */
} Worker;

static void worker_fail(Worker *w, const char *what, const HarnessResponse *resp, int r)
{
    if (w->error[0])
        return;
    if (resp && r == 0)
        snprintf(w->error, sizeof(w->error), "worker %d: %s: HTTP %d %.300s", w->index, what,
                 resp->status, resp->body ? resp->body : "");
    else
        snprintf(w->error, sizeof(w->error), "worker %d: %s: %s", w->index, what, strerror(-r));
}

/* No cmocka in here (its failures longjmp): problems are written to w->error. */
static void *worker_run(void *arg)
{
    Worker *w = arg;
    char uuids[PER_WORKER][UUID_LEN + 1] = {{0}};
    const HarnessOrg *orgs[PER_WORKER];
    char path[256];

    for (int i = 0; i < PER_WORKER; i++) {
        const HarnessOrg *org = (w->index + i) % 2 ? &it.b : &it.a;
        orgs[i] = org;
        HarnessResponse resp = {0};
        path_instances(path, sizeof(path), org->uuid);
        int r =
            send_request(org->auth, "POST", path, "{\"image\":\"tiny\",\"size\":\"small\"}", &resp);
        const char *uuid = harness_json_string(resp.json, "instance_uuid");
        if (r < 0 || resp.status != 201 || !uuid || strlen(uuid) != UUID_LEN) {
            worker_fail(w, "create", &resp, r);
        } else {
            snprintf(uuids[i], sizeof(uuids[i]), "%s", uuid);
            w->created++;
        }
        harness_response_done(&resp);
    }
    for (int i = 0; i < PER_WORKER; i++) {
        if (!uuids[i][0])
            continue;
        HarnessResponse resp = {0};
        path_instance(path, sizeof(path), orgs[i]->uuid, uuids[i]);
        int r = send_request(orgs[i]->auth, "GET", path, NULL, &resp);
        if (r < 0 || resp.status != 200)
            worker_fail(w, "get", &resp, r);
        harness_response_done(&resp);
        r = send_request(orgs[i]->auth, "DELETE", path, NULL, &resp);
        if (r < 0 || resp.status != 204)
            worker_fail(w, "delete", &resp, r);
        else
            w->deleted++;
        harness_response_done(&resp);
    }
    return NULL;
}

static void api_concurrent(void **state)
{
    pthread_t threads[WORKERS];
    Worker workers[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        workers[i] = (Worker){.index = i};
        assert_int_equal(pthread_create(&threads[i], NULL, worker_run, &workers[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(threads[i], NULL);
    bool failed = false;
    for (int i = 0; i < WORKERS; i++) {
        if (workers[i].error[0]) {
            print_error("%s\n", workers[i].error);
            failed = true;
        }
    }
    if (failed)
        harness_dump_file(it.legbad->log_path);
    assert_false(failed);
    for (int i = 0; i < WORKERS; i++) {
        assert_int_equal(workers[i].created, PER_WORKER);
        assert_int_equal(workers[i].deleted, PER_WORKER);
    }

    assert_int_equal(list_total(&it.a), 0);
    assert_int_equal(list_total(&it.b), 0);
    assert_int_equal(overlay_count(), 0);
    cJSON *json = NULL;
    assert_int_equal(harness_legbactl(it.data_dir, HARNESS_LIST("instance", "list"), &json), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(json, "instances")), 0);
    cJSON_Delete(json);
}

/*
 * A config file sets legbad up; flags given beside it win. Here the file
 * caps the host at two instances and asks for KVM, and --accel tcg
 * overrides it. A broken file stops legbad before it serves anything.
 */
static void api_config_file(void **state)
{
    char conf[512], bad[512], path[256], uuids[2][UUID_LEN + 1];
    HarnessResponse resp = {0};

    assert_int_equal(harness_legbad_stop(it.legbad), 0);
    harness_legbad_free(it.legbad);
    it.legbad = NULL;

    snprintf(conf, sizeof(conf), "%s/legbad.conf", it.dir);
    FILE *f = fopen(conf, "we");
    assert_non_null(f);
    fprintf(f, "# capacity test\nmax_instances = 2\naccel = kvm\nlog_level = debug\n"
               "libvirt_uri = test:///default\n");
    fclose(f);
    HarnessLegbadOptions options = {
        .dir = it.dir,
        .data_dir = it.data_dir,
        .images_dir = it.images_dir,
        .libvirt_uri = "test:///default",
        .log_name = "legbad-config.log",
        .extra_args = HARNESS_LIST("--config", conf, "--accel", "tcg"),
    };
    assert_int_equal(harness_legbad_start(&options, &it.legbad), 0);
    assert_true(harness_log_contains(it.legbad->log_path, "accel tcg: requested by configuration"));

    create_instance(&it.a, "small", uuids[0]);
    create_instance(&it.b, "medium", uuids[1]);
    path_instances(path, sizeof(path), it.a.uuid);
    request(it.a.auth, "POST", path, "{\"image\":\"tiny\",\"size\":\"small\"}", &resp);
    assert_error(&resp, 503, "capacity");
    assert_non_null(harness_header(&resp, "Retry-After"));
    harness_response_done(&resp);
    assert_int_equal(overlay_count(), 2);
    delete_instance(&it.a, uuids[0]);
    delete_instance(&it.b, uuids[1]);
    assert_int_equal(harness_legbad_stop(it.legbad), 0);
    harness_legbad_free(it.legbad);
    it.legbad = NULL;

    /* An unknown key is refused with its file and line, and legbad never starts. */
    snprintf(bad, sizeof(bad), "%s/bad.conf", it.dir);
    f = fopen(bad, "we");
    assert_non_null(f);
    fprintf(f, "listen = 127.0.0.1:1\nmax_instanses = 3\n");
    fclose(f);
    char legbad[512];
    snprintf(legbad, sizeof(legbad), "%s/legbad", harness_binary_dir());
    assert_int_equal(harness_run(HARNESS_LIST(legbad, "--config", bad), NULL), 2);
}

/* What POST accepts, listed by the catalog routes; start_url checked and echoed back. */
static void api_catalog_and_start_url(void **state)
{
    char path[256], uuid[UUID_LEN + 1];
    HarnessResponse resp = {0};

    snprintf(path, sizeof(path), "/orgs/%s/api/images", it.a.uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    cJSON *images = cJSON_GetObjectItemCaseSensitive(resp.json, "images");
    assert_int_equal(cJSON_GetArraySize(images), 2);
    /* Sorted by name; only the one whose manifest says so takes a clipboard. */
    static const char *const names[] = {"tiny", "tiny-clipboard"};
    for (int i = 0; i < 2; i++) {
        const cJSON *image = cJSON_GetArrayItem(images, i);
        assert_string_equal(harness_json_string(image, "name"), names[i]);
        assert_string_equal(harness_json_string(image, "boot"), "firmware");
        assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(image, "clipboard")));
        assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(image, "clipboard")),
                         i == 1);
    }
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(resp.json, "total")->valuedouble, 2);
    harness_response_done(&resp);

    snprintf(path, sizeof(path), "/orgs/%s/api/sizes", it.a.uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    static const struct {
        const char *name;
        int vcpus, memory_mib, width, height;
    } want[] = {{"small", 1, 1024, 1280, 720},
                {"medium", 2, 2048, 1600, 900},
                {"large", 4, 4096, 1920, 1080}};
    cJSON *sizes = cJSON_GetObjectItemCaseSensitive(resp.json, "sizes");
    assert_int_equal(cJSON_GetArraySize(sizes), 3);
    for (int i = 0; i < 3; i++) {
        const cJSON *s = cJSON_GetArrayItem(sizes, i);
        const cJSON *screen = cJSON_GetObjectItemCaseSensitive(s, "screen");
        assert_string_equal(harness_json_string(s, "name"), want[i].name);
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(s, "vcpus")->valuedouble,
                         want[i].vcpus);
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(s, "memory_mib")->valuedouble,
                         want[i].memory_mib);
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(screen, "width")->valuedouble,
                         want[i].width);
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(screen, "height")->valuedouble,
                         want[i].height);
    }
    harness_response_done(&resp);

    /* Another org's catalog path is as unknown as any other of its paths; POST is not allowed. */
    snprintf(path, sizeof(path), "/orgs/%s/api/images", it.b.uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
    snprintf(path, sizeof(path), "/orgs/%s/api/sizes", it.a.uuid);
    request(it.a.auth, "POST", path, "{}", &resp);
    assert_error(&resp, 405, "method_not_allowed");
    assert_header(&resp, "Allow", "GET");
    harness_response_done(&resp);

    /* start_url: only http(s), checked before anything is created, and echoed back. */
    path_instances(path, sizeof(path), it.a.uuid);
    int overlays = overlay_count();
    static const char *const bad_urls[] = {"file:///etc/passwd", "javascript:alert(1)",
                                           "http://user@example.org/", "http://a b/", ""};
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"image\":\"tiny\",\"size\":\"small\",\"start_url\":\"%s\"}",
                 bad_urls[i]);
        request(it.a.auth, "POST", path, body, &resp);
        assert_error(&resp, 400, "invalid_start_url");
        harness_response_done(&resp);
    }
    assert_int_equal(overlay_count(), overlays);

    request(it.a.auth, "POST", path,
            "{\"image\":\"tiny\",\"size\":\"small\",\"start_url\":\"https://example.org/x\"}",
            &resp);
    assert_status(&resp, 201);
    assert_string_equal(harness_json_string(resp.json, "start_url"), "https://example.org/x");
    snprintf(uuid, sizeof(uuid), "%s", harness_json_string(resp.json, "instance_uuid"));
    harness_response_done(&resp);
    path_instance(path, sizeof(path), it.a.uuid, uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "start_url"), "https://example.org/x");
    harness_response_done(&resp);
    delete_instance(&it.a, uuid);
}

/* POSTs body to org a's instances: 201 with the given network and clipboard; deletes it again. */
static void create_with_modes(const char *body, const char *network, const char *clipboard)
{
    const char *image = strstr(body, "\"tiny-clipboard\"") ? "tiny-clipboard" : "tiny";
    char path[160], uuid[UUID_LEN + 1];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), it.a.uuid);
    request(it.a.auth, "POST", path, body, &resp);
    assert_status(&resp, 201);
    check_instance_object(resp.json, image, "small", "running", -1);
    assert_string_equal(harness_json_string(resp.json, "network"), network);
    assert_string_equal(harness_json_string(resp.json, "clipboard"), clipboard);
    snprintf(uuid, sizeof(uuid), "%s", harness_json_string(resp.json, "instance_uuid"));
    harness_response_done(&resp);
    /* What the record keeps, not just what the create answered. */
    path_instance(path, sizeof(path), it.a.uuid, uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "network"), network);
    assert_string_equal(harness_json_string(resp.json, "clipboard"), clipboard);
    harness_response_done(&resp);
    delete_instance(&it.a, uuid);
}

/*
 * clipboard is "none" unless asked for, and only none, to_vm or both, on an
 * image that declares one; network follows the org (legbactl org network),
 * else the config.
 */
static void api_network_and_clipboard(void **state)
{
    create_with_modes("{\"image\":\"tiny\",\"size\":\"small\"}", "none", "none");
    create_with_modes("{\"image\":\"tiny\",\"size\":\"small\",\"clipboard\":\"none\"}", "none",
                      "none");
    create_with_modes("{\"image\":\"tiny-clipboard\",\"size\":\"small\",\"clipboard\":\"to_vm\"}",
                      "none", "to_vm");
    create_with_modes("{\"image\":\"tiny-clipboard\",\"size\":\"small\",\"clipboard\":\"both\"}",
                      "none", "both");

    char path[160];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), it.a.uuid);
    int overlays = overlay_count();
    /* tiny has no clipboard channel: asking for one is an error, not a silent no-op. */
    static const char *const unsupported[] = {"to_vm", "both"};
    for (size_t i = 0; i < 2; i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"image\":\"tiny\",\"size\":\"small\",\"clipboard\":\"%s\"}",
                 unsupported[i]);
        request(it.a.auth, "POST", path, body, &resp);
        assert_error(&resp, 400, "invalid_clipboard");
        assert_non_null(strstr(harness_error_message(&resp), "has no clipboard"));
        harness_response_done(&resp);
    }
    static const char *const bad[] = {"\"all\"", "\"None\"", "\"\"", "1", "true", "[\"both\"]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"image\":\"tiny\",\"size\":\"small\",\"clipboard\":%s}",
                 bad[i]);
        request(it.a.auth, "POST", path, body, &resp);
        assert_error(&resp, 400, "invalid_clipboard");
        harness_response_done(&resp);
    }
    assert_int_equal(overlay_count(), overlays);

    assert_int_equal(harness_org_network(it.data_dir, it.a.uuid, "egress"), 0);
    create_with_modes("{\"image\":\"tiny\",\"size\":\"small\"}", "egress", "none");
    assert_int_equal(harness_org_network(it.data_dir, it.a.uuid, "none"), 0);
    create_with_modes("{\"image\":\"tiny\",\"size\":\"small\"}", "none", "none");
    assert_int_equal(harness_org_network(it.data_dir, it.a.uuid, "default"), 0);
    create_with_modes("{\"image\":\"tiny\",\"size\":\"small\"}", "none", "none");
    /* Only the three modes; the org is left as it was. */
    assert_int_not_equal(
        harness_legbactl(it.data_dir, HARNESS_LIST("org", "network", "--org", it.a.uuid, "open"),
                         NULL),
        0);
    create_with_modes("{\"image\":\"tiny\",\"size\":\"small\"}", "none", "none");
}

/* ---- the console's HTTP side (the fake driver has no VNC: no WebSocket gets through) ---- */

/* The origin of the default public URL: http://127.0.0.1:PORT, https:// under TLS. */
static void console_origin(char *buf, size_t size)
{
    snprintf(buf, size, "%s://127.0.0.1:%u", it.ca_file ? "https" : "http", it.legbad->port);
}

/* text with every "{instance}" replaced by uuid. */
static void expand_instance(char *buf, size_t size, const char *text, const char *uuid)
{
    static const char mark[] = "{instance}";
    size_t o = 0;
    while (*text && o + 1 < size) {
        if (strncmp(text, mark, sizeof(mark) - 1) == 0) {
            o += (size_t)snprintf(buf + o, size - o, "%s", uuid);
            text += sizeof(mark) - 1;
        } else {
            buf[o++] = *text++;
        }
    }
    buf[o < size ? o : size - 1] = '\0';
}

/* Creates an instance whose access_url must be BASE/console/<uuid>/#key=…, {instance} expanded. */
static void console_create_at(const HarnessOrg *org, const char *base, HarnessConsole *ret)
{
    char path[256], origin[256];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), org->uuid);
    request(org->auth, "POST", path, "{\"image\":\"tiny\",\"size\":\"small\"}", &resp);
    assert_status(&resp, 201);
    const char *uuid = harness_json_string(resp.json, "instance_uuid");
    assert_non_null(uuid);
    *ret = (HarnessConsole){0};
    snprintf(ret->uuid, sizeof(ret->uuid), "%s", uuid);
    snprintf(ret->prefix, sizeof(ret->prefix), "/console/%s/", uuid);
    expand_instance(origin, sizeof(origin), base, uuid);
    assert_access_url(&resp, origin, uuid, ret->key);
    harness_response_done(&resp);
}

static void console_create(const HarnessOrg *org, HarnessConsole *ret)
{
    char origin[64];
    console_origin(origin, sizeof(origin));
    console_create_at(org, origin, ret);
}

/* POST session with key and an Origin line (NULL for none). */
static void console_session(const HarnessConsole *console, const char *key, const char *origin_line,
                            HarnessResponse *resp)
{
    int r = harness_console_session_tls(it.legbad->port, it.ca_file, console->uuid, key,
                                        origin_line, resp);
    if (r < 0)
        fail_msg("POST %ssession: no HTTP response: %s", console->prefix, strerror(-r));
}

/*
 * The attributes of resp's Set-Cookie, each in any order, names
 * case-insensitive (RFC 6265): Path=want_path, HttpOnly, SameSite=Strict,
 * and Secure exactly when want_secure.
 */
static void check_cookie_attributes(const char *file, int line, const HarnessResponse *resp,
                                    const char *want_path, bool want_secure)
{
    const char *set = harness_header(resp, "Set-Cookie");
    bool path = false, http_only = false, same_site = false, secure = false;
    const char *p = set ? set + strcspn(set, ";") : "";
    while (*p == ';') {
        p++;
        p += strspn(p, " ");
        size_t n = strcspn(p, ";");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if (n == 5 + strlen(want_path) && strncasecmp(p, "Path=", 5) == 0 &&
            strncmp(p + 5, want_path, n - 5) == 0)
            path = true;
        else if (n == 8 && strncasecmp(p, "HttpOnly", 8) == 0)
            http_only = true;
        else if (n == 15 && strncasecmp(p, "SameSite=Strict", 15) == 0)
            same_site = true;
        else if (n == 6 && strncasecmp(p, "Secure", 6) == 0)
            secure = true;
        p += strcspn(p, ";");
    }
    if (!path || !http_only || !same_site || secure != want_secure)
        fail_response(file, line, resp,
                      "Set-Cookie '%s': Path=%s, HttpOnly, SameSite=Strict and %s expected",
                      set ? set : "(none)", want_path, want_secure ? "Secure" : "no Secure");
}

#define assert_cookie_attributes(resp, want_path, want_secure)                                     \
    check_cookie_attributes(__FILE__, __LINE__, (resp), (want_path), (want_secure))

/*
 * The right key from the right origin: 204 and a cookie that is
 * legba_console=<64 hex>; Path=/console/<uuid>/; HttpOnly; SameSite=Strict,
 * with Secure exactly under HTTPS. Fills console->cookie.
 */
static void console_login(HarnessConsole *console)
{
    char origin[64], origin_line[96];
    HarnessResponse resp = {0};
    console_origin(origin, sizeof(origin));
    snprintf(origin_line, sizeof(origin_line), "Origin: %s", origin);
    console_session(console, console->key, origin_line, &resp);
    assert_console_login(&resp, console);
    assert_cookie_attributes(&resp, console->prefix, it.ca_file != NULL);
    harness_response_done(&resp);
}

/* GET path with an optional extra header line. */
static void console_get(const char *path, const char *header, HarnessResponse *resp)
{
    const char *headers[] = {header, NULL};
    int r = harness_http_tls(it.legbad->port, it.ca_file, "GET", path, headers, NULL, 0, resp);
    if (r < 0)
        fail_msg("GET %s: no HTTP response: %s", path, strerror(-r));
}

static void check_get_error(const char *file, int line, const char *path, const char *header,
                            int want_status, const char *want_code)
{
    HarnessResponse resp = {0};
    console_get(path, header, &resp);
    harness_check_error(file, line, &resp, want_status, want_code);
    harness_response_done(&resp);
}

/* GET path, with an optional extra header line, is answered with this error. */
#define assert_get_error(path, header, want_status, want_code)                                     \
    check_get_error(__FILE__, __LINE__, (path), (header), (want_status), (want_code))

/* The access line of a request is written after its answer: wait until the log names path. */
static void wait_logged(const char *path)
{
    harness_log_wait(it.legbad->log_path, path, 2000);
}

/* access_url: with its key once, without it afterwards; /access issues a new one. */
static void api_console_access_url(void **state)
{
    HarnessConsole con;
    char path[256], want[160], origin[64], origin_line[96];
    HarnessResponse resp = {0};
    console_create(&it.a, &con);
    console_origin(origin, sizeof(origin));
    snprintf(origin_line, sizeof(origin_line), "Origin: %s", origin);
    snprintf(want, sizeof(want), "%s%s", origin, con.prefix);

    path_instance(path, sizeof(path), it.a.uuid, con.uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "access_url"), want);
    harness_response_done(&resp);
    cJSON *list = list_instances(&it.a);
    assert_string_equal(harness_json_string(list_find(list, con.uuid), "access_url"), want);
    cJSON_Delete(list);

    /* A new key: the old one stops working for new logins, the new one works. */
    char access[300];
    snprintf(access, sizeof(access), "%s/access", path);
    request(it.a.auth, "POST", access, NULL, &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "instance_uuid"), con.uuid);
    char old_key[HARNESS_CONSOLE_KEY_LEN + 1];
    snprintf(old_key, sizeof(old_key), "%s", con.key);
    assert_access_url(&resp, origin, con.uuid, con.key);
    assert_string_not_equal(con.key, old_key);
    harness_response_done(&resp);
    console_session(&con, old_key, origin_line, &resp);
    assert_error(&resp, 403, "forbidden");
    assert_null(harness_header(&resp, "Set-Cookie"));
    harness_response_done(&resp);
    console_login(&con);
    /* GET still shows no key. */
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_string_equal(harness_json_string(resp.json, "access_url"), want);
    harness_response_done(&resp);

    /* Another org's token: as if the instance were not there. */
    request(it.b.auth, "POST", access, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
    char other[300];
    snprintf(other, sizeof(other), "/orgs/%s/api/instances/%s/access", it.b.uuid, con.uuid);
    request(it.b.auth, "POST", other, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
    /* No token at all. */
    request(NULL, "POST", access, NULL, &resp);
    assert_error(&resp, 401, "unauthorized");
    harness_response_done(&resp);
    /* The key B could not rotate still logs in. */
    console_login(&con);

    /* Neither key was ever written to the log. */
    wait_logged(access);
    if (harness_log_contains(it.legbad->log_path, old_key) ||
        harness_log_contains(it.legbad->log_path, con.key))
        fail_msg("a console key is in legbad's log %s", it.legbad->log_path);
    delete_instance(&it.a, con.uuid);
}

/* The viewer page, its files, and what of noVNC is (not) served. */
static void api_console_files(void **state)
{
    HarnessConsole con;
    char path[512];
    HarnessResponse resp = {0};
    console_create(&it.a, &con);

    console_get(con.prefix, NULL, &resp);
    assert_status(&resp, 200);
    const char *type = harness_header(&resp, "Content-Type");
    if (!type || strncmp(type, "text/html", 9) != 0)
        fail_response(__FILE__, __LINE__, &resp, "Content-Type text/html expected");
    const char *csp = harness_header(&resp, "Content-Security-Policy");
    if (!csp || !csp[0])
        fail_response(__FILE__, __LINE__, &resp, "a Content-Security-Policy header expected");
    assert_true(resp.body_len > 0);
    harness_response_done(&resp);

    static const char *const ours[] = {"viewer.js", "viewer.css"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s%s", con.prefix, ours[i]);
        console_get(path, NULL, &resp);
        if (resp.status != 200)
            print_error("GET %s\n", path);
        assert_status(&resp, 200);
        assert_true(resp.body_len > 0);
        harness_response_done(&resp);
    }

    if (harness_file_exists("/usr/share/novnc/core/rfb.js")) {
        snprintf(path, sizeof(path), "%snovnc/core/rfb.js", con.prefix);
        console_get(path, NULL, &resp);
        assert_status(&resp, 200);
        assert_true(resp.body_len > 0);
        harness_response_done(&resp);
    } else {
        print_message("no /usr/share/novnc/core/rfb.js here: noVNC's 200 not checked\n");
    }

    /* Only core/ and vendor/ .js files, and never a way out of novnc_dir. */
    static const char *const refused[] = {
        "novnc/../..",
        "novnc/../../../../../../etc/passwd",
        "novnc/core/../../../../../../etc/passwd",
        "novnc/core/../vnc.html",
        "novnc/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "novnc/core/%2e%2e/vnc.html",
        "novnc/core%2f..%2fvnc.html",
        "novnc/vnc.html",
        "novnc/app/ui.js",
        "novnc/",
        "novnc/core/",
        "novnc/core/nosuch.js",
        "novnc/core/rfb.js%00.js",
        "nosuch.html",
    };
    size_t wrong = 0;
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        snprintf(path, sizeof(path), "%s%s", con.prefix, refused[i]);
        console_get(path, NULL, &resp);
        if (resp.status != 404) {
            print_error("GET %s: HTTP %d (%zu bytes) %.200s; 404 expected\n", path, resp.status,
                        resp.body_len, resp.body);
            wrong++;
        }
        harness_response_done(&resp);
    }
    if (wrong)
        fail_msg("%zu paths under the console served something", wrong);

    /* An instance that never was. */
    assert_get_error("/console/00000000-0000-4000-8000-000000000000/", NULL, 404, "not_found");
    delete_instance(&it.a, con.uuid);
}

/* Key for cookie, and what the cookie and the Origin open and do not open. */
static void api_console_session(void **state)
{
    HarnessConsole a, b;
    char path[256], origin[64], origin_line[96];
    HarnessResponse resp = {0};
    console_create(&it.a, &a);
    console_create(&it.b, &b);
    console_origin(origin, sizeof(origin));
    snprintf(origin_line, sizeof(origin_line), "Origin: %s", origin);

    /* Refused logins set no cookie: a wrong key, B's key, a cross-site page, no Origin. */
    char wrong_key[HARNESS_CONSOLE_KEY_LEN + 1];
    snprintf(wrong_key, sizeof(wrong_key), "%s", a.key);
    wrong_key[0] = wrong_key[0] == '0' ? '1' : '0';
    const struct {
        const char *key, *origin_line, *what;
    } refused[] = {
        {wrong_key, origin_line, "a wrong key"},
        {b.key, origin_line, "another instance's key"},
        {a.key, "Origin: http://evil.example", "a cross-site Origin"},
        {a.key, NULL, "no Origin"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        console_session(&a, refused[i].key, refused[i].origin_line, &resp);
        if (resp.status != 403 || harness_header(&resp, "Set-Cookie"))
            fail_response(__FILE__, __LINE__, &resp, "%s: 403 without Set-Cookie expected",
                          refused[i].what);
        assert_status(&resp, 403);
        if (!harness_error_code(&resp))
            fail_response(__FILE__, __LINE__, &resp, "%s: a JSON error expected", refused[i].what);
        harness_response_done(&resp);
    }
    console_session(&a, wrong_key, origin_line, &resp);
    assert_error(&resp, 403, "forbidden");
    harness_response_done(&resp);

    /* Status: the cookie is required. */
    snprintf(path, sizeof(path), "%sstatus", a.prefix);
    assert_get_error(path, NULL, 403, "forbidden");

    console_login(&a);
    console_login(&b);
    char session_path[128];
    snprintf(session_path, sizeof(session_path), "%ssession", a.prefix);
    wait_logged(session_path);
    if (harness_log_contains(it.legbad->log_path, a.key) ||
        harness_log_contains(it.legbad->log_path, b.key))
        fail_msg("a console key is in legbad's log %s", it.legbad->log_path);

    console_get(path, a.cookie, &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "status"), "running");
    assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(resp.json, "ready")));
    /* The viewer shows its clipboard panel by this; the relay enforces it. */
    assert_string_equal(harness_json_string(resp.json, "clipboard"), "none");
    harness_response_done(&resp);
    /* A cookie of the right shape that legbad never issued. */
    assert_get_error(path,
                     "Cookie: legba_console="
                     "0000000000000000000000000000000000000000000000000000000000000000",
                     403, "forbidden");

    /* A's cookie on B's routes. */
    snprintf(path, sizeof(path), "%sstatus", b.prefix);
    assert_get_error(path, a.cookie, 403, "forbidden");
    assert_ws_refused(it.legbad->port, b.uuid, a.cookie, origin_line, 403, "forbidden");

    /* The WebSocket: the cookie first, then the Origin. */
    assert_ws_refused(it.legbad->port, a.uuid, NULL, origin_line, 403, "forbidden");
    assert_ws_refused(it.legbad->port, a.uuid, a.cookie, "Origin: http://evil.example", 403,
                      "origin_refused");
    assert_ws_refused(it.legbad->port, a.uuid, a.cookie, NULL, 403, "origin_refused");
    /*
     * Past cookie and Origin, the handshake itself: a version other than 13
     * is 426 naming 13, a key that is not 16 bytes of base64 is 400.
     */
    char ws_path[128];
    snprintf(ws_path, sizeof(ws_path), "/console/%s/websocket", a.uuid);
    assert_ws_refusal(it.legbad->port, ws_path,
                      HARNESS_LIST(a.cookie, origin_line, "Sec-WebSocket-Version: 8"), &resp);
    assert_status(&resp, 426);
    assert_header(&resp, "Sec-WebSocket-Version", "13");
    assert_non_null(harness_error_code(&resp));
    harness_response_done(&resp);
    assert_ws_refusal(it.legbad->port, ws_path,
                      HARNESS_LIST(a.cookie, origin_line, "Sec-WebSocket-Key: c2hvcnQ="), &resp);
    assert_status(&resp, 400);
    assert_non_null(harness_error_code(&resp));
    harness_response_done(&resp);

    /* The same host on another port is another origin. */
    char other_port[96];
    snprintf(other_port, sizeof(other_port), "Origin: http://127.0.0.1:%u",
             it.legbad->port == 65535 ? 1 : it.legbad->port + 1);
    assert_ws_refused(it.legbad->port, a.uuid, a.cookie, other_port, 403, "origin_refused");

    delete_instance(&it.a, a.uuid);
    delete_instance(&it.b, b.uuid);
}

/* After DELETE every console route of the instance is 404, cookie or not. */
static void api_console_after_delete(void **state)
{
    HarnessConsole con;
    char path[256], origin[64], origin_line[96];
    HarnessResponse resp = {0};
    console_create(&it.a, &con);
    console_login(&con);
    console_origin(origin, sizeof(origin));
    snprintf(origin_line, sizeof(origin_line), "Origin: %s", origin);
    delete_instance(&it.a, con.uuid);

    assert_get_error(con.prefix, NULL, 404, "not_found");
    snprintf(path, sizeof(path), "%sviewer.js", con.prefix);
    assert_get_error(path, NULL, 404, "not_found");
    console_session(&con, con.key, origin_line, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
    snprintf(path, sizeof(path), "%sstatus", con.prefix);
    assert_get_error(path, con.cookie, 404, "not_found");
    assert_ws_refused(it.legbad->port, con.uuid, con.cookie, origin_line, 404, "not_found");
    path_instance(path, sizeof(path), it.a.uuid, con.uuid);
    strcat(path, "/access");
    request(it.a.auth, "POST", path, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
}

/* ---- HTTPS and public_url: each test runs its own legbad ---- */

/*
 * Replaces the group's legbad with one started with args (after --accel
 * tcg), logging to log_name; put_back_legbad() retires it after the test.
 */
static void start_special_legbad(const char *log_name, const char *const args[])
{
    const char *argv[16] = {"--accel", "tcg"};
    size_t n = 2;
    for (size_t i = 0; args[i]; i++) {
        assert_true(n + 1 < sizeof(argv) / sizeof(argv[0]));
        argv[n++] = args[i];
    }
    assert_int_equal(harness_legbad_stop_free(&it.legbad), 0);
    HarnessLegbadOptions options = {
        .dir = it.dir,
        .data_dir = it.data_dir,
        .images_dir = it.images_dir,
        .libvirt_uri = "test:///default",
        .log_name = log_name,
        .extra_args = argv,
    };
    assert_int_equal(harness_legbad_start(&options, &it.legbad), 0);
    it.legbad_special = true;
}

/* After a test that replaced legbad: stops its one, so the next test's setup starts the plain one.
 */
static int put_back_legbad(void **state)
{
    it.ca_file = NULL;
    if (!it.legbad_special)
        return 0;
    it.legbad_special = false;
    return harness_legbad_stop_free(&it.legbad) == 0 ? 0 : -1;
}

/* legbactl pool list: the ready and booting counts of one group (-1 when it has none). */
static void pool_counts(const char *size, const char *mode, int *ret_ready, int *ret_booting)
{
    cJSON *json = NULL;
    assert_int_equal(harness_legbactl(it.data_dir, HARNESS_LIST("pool", "list"), &json), 0);
    *ret_ready = *ret_booting = -1;
    const cJSON *group;
    cJSON_ArrayForEach(group, cJSON_GetObjectItemCaseSensitive(json, "pool"))
    {
        if (strcmp(harness_json_string(group, "size"), size) == 0 &&
            strcmp(harness_json_string(group, "mode"), mode) == 0) {
            *ret_ready = (int)cJSON_GetObjectItemCaseSensitive(group, "ready")->valuedouble;
            *ret_booting = (int)cJSON_GetObjectItemCaseSensitive(group, "booting")->valuedouble;
        }
    }
    cJSON_Delete(json);
}

/* Waits (5 s at most) until the pool group has want VMs ready and none on the way. */
static void wait_pool(const char *size, const char *mode, int want)
{
    int ready = -1, booting = -1;
    for (int i = 0; i < 100; i++) {
        pool_counts(size, mode, &ready, &booting);
        if (ready == want && booting <= 0)
            return;
        usleep(50 * 1000);
    }
    fail_msg("pool %s %s: %d ready, %d booting; %d ready expected", size, mode, ready, booting,
             want);
}

/* POSTs a tiny instance of the size for org a: 201, and how it started (Legba-Start). */
static void create_started(const char *size, const char *want_start, char ret_uuid[UUID_LEN + 1])
{
    char path[160], body[96];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), it.a.uuid);
    snprintf(body, sizeof(body), "{\"image\":\"tiny\",\"size\":\"%s\"}", size);
    request(it.a.auth, "POST", path, body, &resp);
    assert_status(&resp, 201);
    check_instance_object(resp.json, "tiny", size, "running", 3600);
    const char *start = harness_header(&resp, "Legba-Start");
    if (!start || strcmp(start, want_start) != 0)
        fail_msg("%s create started %s, %s expected", size, start ? start : "(no header)",
                 want_start);
    snprintf(ret_uuid, UUID_LEN + 1, "%s", harness_json_string(resp.json, "instance_uuid"));
    harness_response_done(&resp);
}

/*
 * The pool on the fake driver: warm and standby VMs wait out of every
 * org's sight, a create takes one (its quota checked at that moment) and
 * the pool refills; a size without a pool boots cold; a pool the config
 * no longer asks for is emptied.
 */
static void api_pool(void **state)
{
    char conf[512], path[160], warm[UUID_LEN + 1], standby[UUID_LEN + 1], cold[UUID_LEN + 1];
    HarnessResponse resp = {0};
    snprintf(conf, sizeof(conf), "%s/pool.conf", it.dir);
    FILE *f = fopen(conf, "we");
    assert_non_null(f);
    fprintf(f, "pool = tiny:small:2 tiny:medium:1:standby\npool_boots = 2\n");
    fclose(f);
    start_special_legbad("legbad-pool.log", HARNESS_LIST("--config", conf));
    wait_pool("small", "warm", 2);
    wait_pool("medium", "standby", 1);

    /* Nobody's: no org lists them, and each is a live instance of the pool org. */
    path_instances(path, sizeof(path), it.a.uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(resp.json, "instances")), 0);
    harness_response_done(&resp);

    create_started("small", "warm", warm);
    create_started("medium", "standby", standby);
    create_started("large", "cold", cold);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(resp.json, "instances")), 3);
    harness_response_done(&resp);
    assert_true(harness_log_contains(it.legbad->log_path, "(image tiny, size small, warm)"));
    /* Taken ones are the org's now; the pool boots replacements. */
    wait_pool("small", "warm", 2);
    wait_pool("medium", "standby", 1);

    /* The org's quota is checked when it takes one: a refusal leaves the pool as it was. */
    assert_int_equal(
        harness_legbactl(it.data_dir,
                         HARNESS_LIST("org", "quota", "--org", it.a.uuid, "--instances", "3"),
                         NULL),
        0);
    request(it.a.auth, "POST", path, "{\"image\":\"tiny\",\"size\":\"small\"}", &resp);
    assert_error(&resp, 429, "quota_exceeded");
    harness_response_done(&resp);
    wait_pool("small", "warm", 2);
    assert_int_equal(
        harness_legbactl(it.data_dir,
                         HARNESS_LIST("org", "quota", "--org", it.a.uuid, "--instances", "0"),
                         NULL),
        0);
    delete_instance(&it.a, warm);
    delete_instance(&it.a, standby);
    delete_instance(&it.a, cold);

    /* Without a pool in the config, what waits in it goes. */
    start_special_legbad("legbad-no-pool.log", HARNESS_LIST("--accel", "tcg"));
    for (int i = 0; i < 100; i++) {
        int ready, booting;
        pool_counts("small", "warm", &ready, &booting);
        if (ready < 0)
            break;
        usleep(50 * 1000);
    }
    cJSON *json = NULL;
    assert_int_equal(harness_legbactl(it.data_dir, HARNESS_LIST("pool", "list"), &json), 0);
    assert_int_equal((int)cJSON_GetObjectItem(json, "total")->valuedouble, 0);
    cJSON_Delete(json);
    assert_int_equal(overlay_count(), 0);
}

/* POST session with this Origin line is refused as origin_refused, and sets no cookie. */
static void check_origin_refused(const char *file, int line, const HarnessConsole *console,
                                 const char *origin_line)
{
    HarnessResponse resp = {0};
    console_session(console, console->key, origin_line, &resp);
    harness_check_error(file, line, &resp, 403, "origin_refused");
    if (harness_header(&resp, "Set-Cookie"))
        fail_response(file, line, &resp, "%s: no Set-Cookie expected", origin_line);
    harness_response_done(&resp);
}

#define assert_origin_refused(console, origin_line)                                                \
    check_origin_refused(__FILE__, __LINE__, (console), (origin_line))

/* POST session with this Origin line logs in: 204, the cookie with Path=path (Secure or not). */
static void check_origin_accepted(const char *file, int line, HarnessConsole *console,
                                  const char *origin_line, const char *path, bool secure)
{
    HarnessResponse resp = {0};
    console_session(console, console->key, origin_line, &resp);
    harness_check_console_login(file, line, &resp, console);
    check_cookie_attributes(file, line, &resp, path, secure);
    harness_response_done(&resp);
}

#define assert_origin_accepted(console, origin_line, path, secure)                                 \
    check_origin_accepted(__FILE__, __LINE__, (console), (origin_line), (path), (secure))

/*
 * --tls-cert and --tls-key: HTTPS on the same port, https:// access URLs,
 * Secure cookies; plain HTTP gets no answer there, and a client that does
 * not trust the certificate gets no connection.
 */
static void api_tls(void **state)
{
    HarnessConsole con;
    char origin[64], origin_line[96], path[256], want[160];
    HarnessResponse resp = {0};
    start_special_legbad("legbad-tls.log",
                         HARNESS_LIST("--tls-cert", it.tls_cert, "--tls-key", it.tls_key));
    it.ca_file = it.tls_cert;
    console_origin(origin, sizeof(origin));
    snprintf(origin_line, sizeof(origin_line), "Origin: %s", origin);
    snprintf(want, sizeof(want), "access URLs: %s/console/", origin);
    if (!harness_log_contains(it.legbad->log_path, want))
        fail_msg("legbad's log %s does not say '%s…'", it.legbad->log_path, want);

    /* Create, key for cookie, status, GET: all over HTTPS, the URL https://127.0.0.1:PORT/… */
    long long start = harness_now_ms();
    console_create(&it.a, &con);
    long long created = harness_now_ms();
    console_login(&con);
    long long logged_in = harness_now_ms();
    print_message("over HTTPS: create %lld ms, session %lld ms\n", created - start,
                  logged_in - created);
    snprintf(path, sizeof(path), "%sstatus", con.prefix);
    console_get(path, con.cookie, &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "status"), "running");
    harness_response_done(&resp);
    path_instance(path, sizeof(path), it.a.uuid, con.uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    snprintf(want, sizeof(want), "%s%s", origin, con.prefix);
    assert_string_equal(harness_json_string(resp.json, "access_url"), want);
    harness_response_done(&resp);

    /* The http:// origin of the same host and port is another origin. */
    char plain_origin[96];
    snprintf(plain_origin, sizeof(plain_origin), "Origin: http://127.0.0.1:%u", it.legbad->port);
    assert_origin_refused(&con, plain_origin);
    /* The WebSocket's checks run over TLS too (the fake driver has no VNC: refusals only). */
    HarnessWs *ws = NULL;
    HarnessResponse refusal = {0};
    int r = harness_console_ws_connect_tls(it.legbad->port, it.ca_file, con.uuid, con.cookie,
                                           plain_origin, &ws, &refusal);
    harness_check_not_upgraded(__FILE__, __LINE__, r, ws, "the console over TLS");
    assert_error(&refusal, 403, "origin_refused");
    harness_response_done(&refusal);
    r = harness_console_ws_connect_tls(it.legbad->port, it.ca_file, con.uuid, NULL, origin_line,
                                       &ws, &refusal);
    harness_check_not_upgraded(__FILE__, __LINE__, r, ws, "the console over TLS");
    assert_error(&refusal, 403, "forbidden");
    harness_response_done(&refusal);

    /* Plain HTTP on the HTTPS port: no HTTP answer of any kind. */
    start = harness_now_ms();
    r = harness_http(it.legbad->port, "GET", con.prefix, NULL, NULL, 0, &resp);
    if (r == 0)
        fail_response(__FILE__, __LINE__, &resp, "plain HTTP on the HTTPS port was answered");
    print_message("plain HTTP on the HTTPS port: %s after %lld ms\n", strerror(-r),
                  harness_now_ms() - start);

    /* A client trusting another CA: the handshake fails (verification is really on). */
    char other_dir[512], *other_cert = NULL, *other_key = NULL;
    snprintf(other_dir, sizeof(other_dir), "%s/other-ca", it.dir);
    assert_int_equal(mkdir(other_dir, 0700), 0);
    assert_int_equal(harness_tls_cert(other_dir, &other_cert, &other_key), 0);
    r = harness_http_tls(it.legbad->port, other_cert, "GET", con.prefix, NULL, NULL, 0, &resp);
    free(other_cert);
    free(other_key);
    if (r == 0)
        fail_response(__FILE__, __LINE__, &resp, "a certificate of another CA was accepted");
    assert_int_equal(r, -EKEYREJECTED);

    /* Still serving after both; the key never reached the log. */
    console_get(con.prefix, NULL, &resp);
    assert_status(&resp, 200);
    harness_response_done(&resp);
    snprintf(path, sizeof(path), "%ssession", con.prefix);
    wait_logged(path);
    if (harness_log_contains(it.legbad->log_path, con.key))
        fail_msg("the console key is in legbad's log %s", it.legbad->log_path);

    delete_instance(&it.a, con.uuid);
    assert_get_error(con.prefix, NULL, 404, "not_found");
}

/*
 * Runs legbad (own data dir, a free port, the fake driver) with args, which
 * must make it exit by itself with a non-zero status; returns what it wrote.
 */
static char *legbad_refuses(const char *const args[])
{
    char legbad[512], data_dir[512], domains[512], listen[32];
    uint16_t port;
    snprintf(legbad, sizeof(legbad), "%s/legbad", harness_binary_dir());
    snprintf(domains, sizeof(domains), "%s/domains", harness_source_dir());
    snprintf(data_dir, sizeof(data_dir), "%s/refused-data", it.dir);
    if (mkdir(data_dir, 0711) < 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", data_dir, strerror(errno));
    assert_int_equal(harness_free_port(&port), 0);
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
    const char *argv[24] = {
        legbad,        "--listen",      listen,  "--data-dir",    data_dir,          "--images-dir",
        it.images_dir, "--domains-dir", domains, "--libvirt-uri", "test:///default", "--accel",
        "tcg"};
    size_t n = 13;
    for (size_t i = 0; args[i]; i++) {
        assert_true(n + 1 < sizeof(argv) / sizeof(argv[0]));
        argv[n++] = args[i];
    }
    char *out = NULL;
    int status = harness_run_merged(argv, &out);
    if (status < 1 || status > 127)
        fail_msg("legbad %s %s: exit status %d; an exit with an error expected; it wrote:\n%s",
                 args[0], args[1] ? args[1] : "", status, out ? out : "");
    /* Its last line is the error that stopped it. */
    size_t len = strlen(out);
    while (len > 0 && out[len - 1] == '\n')
        len--;
    const char *last = out + len;
    while (last > out && last[-1] != '\n')
        last--;
    print_message("legbad %s …: exit status %d: %.*s\n", args[0], status, (int)(out + len - last),
                  last);
    return out;
}

/* Whether text names a setting as its config key (tls_cert) or its flag (--tls-cert). */
static bool names_setting(const char *text, const char *key)
{
    char flag[64];
    snprintf(flag, sizeof(flag), "%s", key);
    for (char *p = flag; *p; p++)
        if (*p == '_')
            *p = '-';
    return strstr(text, key) || strstr(text, flag);
}

/* TLS settings that cannot work stop legbad at start, saying why. */
static void api_tls_config_errors(void **state)
{
    char garbage[512], missing[512];
    const char *halves[][3] = {{"--tls-cert", it.tls_cert, NULL}, {"--tls-key", it.tls_key, NULL}};
    for (size_t i = 0; i < 2; i++) {
        char *out = legbad_refuses(halves[i]);
        if (!names_setting(out, "tls_cert") || !names_setting(out, "tls_key"))
            fail_msg("%s alone: the message should name tls_cert and tls_key: %s", halves[i][0],
                     out);
        free(out);
    }

    snprintf(missing, sizeof(missing), "%s/no-such-cert.pem", it.dir);
    char *out = legbad_refuses(HARNESS_LIST("--tls-cert", missing, "--tls-key", it.tls_key));
    if (!strstr(out, missing))
        fail_msg("an unreadable --tls-cert: the message should name %s: %s", missing, out);
    free(out);

    snprintf(garbage, sizeof(garbage), "%s/garbage.pem", it.dir);
    FILE *f = fopen(garbage, "we");
    assert_non_null(f);
    fprintf(f,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n");
    fclose(f);
    /* Files that are not a certificate and its key: the reason names them. */
    const char *bad_pairs[][5] = {
        {"--tls-cert", garbage, "--tls-key", it.tls_key, NULL},
        {"--tls-cert", it.tls_cert, "--tls-key", garbage, NULL},
    };
    for (size_t i = 0; i < 2; i++) {
        out = legbad_refuses(bad_pairs[i]);
        if (!strcasestr(out, "certificate") && !names_setting(out, "tls_cert"))
            fail_msg("a bad certificate or key: the messages should say so: %s", out);
        free(out);
    }

    /* A certificate with a key that is not its own. */
    char other_dir[512], *other_cert = NULL, *other_key = NULL;
    snprintf(other_dir, sizeof(other_dir), "%s/mismatch", it.dir);
    assert_int_equal(mkdir(other_dir, 0700), 0);
    assert_int_equal(harness_tls_cert(other_dir, &other_cert, &other_key), 0);
    out = legbad_refuses(HARNESS_LIST("--tls-cert", it.tls_cert, "--tls-key", other_key));
    if (!strcasestr(out, "key"))
        fail_msg("a key of another certificate: the messages should say so: %s", out);
    free(out);
    free(other_cert);
    free(other_key);
}

/*
 * --public-url with {instance}: every instance has its own origin, which
 * alone opens its console; legbad's own address is not one of them.
 */
static void api_public_url_instance(void **state)
{
    static const char base[] = "http://{instance}.legba.test:8443";
    HarnessConsole a, b;
    char own_a[128], own_b[128], listener[96], path[256], want[256];
    HarnessResponse resp = {0};
    start_special_legbad("legbad-public-url.log", HARNESS_LIST("--public-url", base));
    console_create_at(&it.a, base, &a);
    console_create_at(&it.b, base, &b);
    expand_instance(own_a, sizeof(own_a), "Origin: http://{instance}.legba.test:8443", a.uuid);
    expand_instance(own_b, sizeof(own_b), "Origin: http://{instance}.legba.test:8443", b.uuid);
    snprintf(listener, sizeof(listener), "Origin: http://127.0.0.1:%u", it.legbad->port);

    path_instance(path, sizeof(path), it.a.uuid, a.uuid);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_status(&resp, 200);
    snprintf(want, sizeof(want), "%s%s", own_a + strlen("Origin: "), a.prefix);
    assert_string_equal(harness_json_string(resp.json, "access_url"), want);
    harness_response_done(&resp);

    assert_origin_refused(&a, listener);
    assert_origin_refused(&a, own_b);
    assert_origin_refused(&a, "Origin: http://legba.test:8443");
    assert_origin_accepted(&a, own_a, a.prefix, false);
    assert_origin_accepted(&b, own_b, b.prefix, false);

    /* The WebSocket: with a valid cookie, the Origin decides. */
    assert_ws_refused(it.legbad->port, a.uuid, a.cookie, listener, 403, "origin_refused");
    assert_ws_refused(it.legbad->port, a.uuid, a.cookie, own_b, 403, "origin_refused");
    assert_ws_refused(it.legbad->port, b.uuid, b.cookie, own_a, 403, "origin_refused");

    delete_instance(&it.a, a.uuid);
    delete_instance(&it.b, b.uuid);
}

/*
 * public_url with a path, behind a TLS proxy, and console_origins, from a
 * config file: the cookie is scoped to the prefix and Secure; the listed
 * origins are accepted beside the URL's own, nothing else is.
 */
static void api_public_url_prefix_origins(void **state)
{
    char conf[512], listener[96], cookie_path[128];
    HarnessConsole con;
    snprintf(conf, sizeof(conf), "%s/public-url.conf", it.dir);
    FILE *f = fopen(conf, "we");
    assert_non_null(f);
    fprintf(f, "public_url = https://legba.example/prefix\n"
               "console_origins = https://portal.example http://portal.example:8080\n");
    fclose(f);
    start_special_legbad("legbad-prefix.log", HARNESS_LIST("--config", conf));
    snprintf(listener, sizeof(listener), "Origin: http://127.0.0.1:%u", it.legbad->port);

    console_create_at(&it.a, "https://legba.example/prefix", &con);
    snprintf(cookie_path, sizeof(cookie_path), "/prefix%s", con.prefix);
    assert_origin_accepted(&con, "Origin: https://legba.example", cookie_path, true);
    assert_origin_accepted(&con, "Origin: https://portal.example", cookie_path, true);
    assert_origin_accepted(&con, "Origin: http://portal.example:8080", cookie_path, true);
    assert_origin_refused(&con, "Origin: http://portal.example");
    assert_origin_refused(&con, "Origin: https://evil.example");
    assert_origin_refused(&con, "Origin: http://legba.example");
    assert_origin_refused(&con, listener);
    assert_ws_refused(it.legbad->port, con.uuid, con.cookie, "Origin: https://evil.example", 403,
                      "origin_refused");
    delete_instance(&it.a, con.uuid);
}

/* ---- the lifecycle: expiry, extend, stop and start ---- */

/* How often a test that waits for the janitor looks again. */
#define POLL_MS 100

/* Writes text to it.dir/name; buf gets the path. */
static void write_conf(char *buf, size_t size, const char *name, const char *text)
{
    snprintf(buf, size, "%s/%s", it.dir, name);
    FILE *f = fopen(buf, "we");
    if (!f)
        fail_msg("%s: %s", buf, strerror(errno));
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* A time field of an instance object as seconds since the epoch. */
static int64_t json_time(const cJSON *json, const char *name)
{
    int64_t t = 0;
    const char *text = harness_json_string(json, name);
    if (!text || util_parse_iso8601(text, &t) < 0)
        fail_msg("'%s' is not an ISO 8601 time: %s", name, text ? text : "(absent)");
    return t;
}

/* POST …/instances/{uuid}/{action} as org, with body (NULL: none, and no Content-Type). */
static void instance_action(const HarnessOrg *org, const char *uuid, const char *action,
                            const char *body, HarnessResponse *resp)
{
    char path[256];
    path_instance(path, sizeof(path), org->uuid, uuid);
    snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s", action);
    request(org->auth, "POST", path, body, resp);
}

/* GET one instance as org into resp; returns the HTTP status. */
static int get_instance(const HarnessOrg *org, const char *uuid, HarnessResponse *resp)
{
    char path[256];
    path_instance(path, sizeof(path), org->uuid, uuid);
    request(org->auth, "GET", path, NULL, resp);
    return resp->status;
}

/*
 * GETs the instance every POLL_MS until its status is want (want NULL:
 * until it answers 404), at most until deadline_ms (harness_now_ms()).
 * Returns the harness_now_ms() at which it was seen, or fails the test with
 * what it last answered.
 */
static long long check_wait_status(const char *file, int line, const HarnessOrg *org,
                                   const char *uuid, const char *want, long long deadline_ms)
{
    HarnessResponse resp = {0};
    for (;;) {
        int status = get_instance(org, uuid, &resp);
        long long now = harness_now_ms();
        const char *got = status == 200 ? harness_json_string(resp.json, "status") : NULL;
        if (want ? got && strcmp(got, want) == 0 : status == 404) {
            harness_response_done(&resp);
            return now;
        }
        if ((status != 200 && status != 404) || now >= deadline_ms)
            fail_response(file, line, &resp, "instance %s: %s expected by now", uuid,
                          want ? want : "404");
        harness_response_done(&resp);
        usleep(POLL_MS * 1000);
    }
}

#define wait_status(org, uuid, want, deadline_ms)                                                  \
    check_wait_status(__FILE__, __LINE__, (org), (uuid), (want), (deadline_ms))

/* The status and expires_at of an instance as GET answers them (200 required). */
static void get_status_expiry(const HarnessOrg *org, const char *uuid, char *status,
                              size_t status_size, int64_t *ret_expires)
{
    HarnessResponse resp = {0};
    get_instance(org, uuid, &resp);
    assert_status(&resp, 200);
    snprintf(status, status_size, "%s", harness_json_string(resp.json, "status"));
    *ret_expires = json_time(resp.json, "expires_at");
    harness_response_done(&resp);
}

/*
 * POST a create of tiny/small with "timeout_seconds": timeout (JSON text);
 * it must be 201 with expires_at exactly want seconds after created_at.
 */
static void create_with_timeout(const HarnessOrg *org, const char *timeout, int64_t want,
                                char ret_uuid[UUID_LEN + 1])
{
    char path[256], body[160];
    HarnessResponse resp = {0};
    path_instances(path, sizeof(path), org->uuid);
    snprintf(body, sizeof(body), "{\"image\":\"tiny\",\"size\":\"small\",\"timeout_seconds\":%s}",
             timeout);
    request(org->auth, "POST", path, body, &resp);
    assert_status(&resp, 201);
    check_instance_object(resp.json, "tiny", "small", "running", want);
    snprintf(ret_uuid, UUID_LEN + 1, "%s", harness_json_string(resp.json, "instance_uuid"));
    harness_response_done(&resp);
}

/* Whether the org's list has uuid, and with which status (status_size 0: not wanted). */
static bool listed_with_status(const HarnessOrg *org, const char *uuid, char *status,
                               size_t status_size)
{
    cJSON *list = list_instances(org);
    const cJSON *item = list_find(list, uuid);
    if (item && status_size)
        snprintf(status, status_size, "%s", harness_json_string(item, "status"));
    cJSON_Delete(list);
    return item != NULL;
}

static void assert_log_has(const char *needle)
{
    /* Log lines follow the answer by a moment. */
    if (!harness_log_wait(it.legbad->log_path, needle, 1000))
        fail_msg("legbad's log %s does not say '%s'", it.legbad->log_path, needle);
}

/*
 * timeout_seconds: past expires_at the janitor destroys domain and disk and
 * keeps the record as "terminated" for terminated_retention (3 s here),
 * then forgets it. Instances without a timeout, and stopped ones with one,
 * are treated alike by the clock: the first lives on, the second ends too.
 */
static void api_expiry(void **state)
{
    char conf[512], a[UUID_LEN + 1], b[UUID_LEN + 1], s[UUID_LEN + 1], overlay[512];
    char needle[128], status[32];
    HarnessResponse resp = {0};
    write_conf(conf, sizeof(conf), "expiry.conf",
               "memory_overcommit_percent = 0\nterminated_retention = 3\n");
    start_special_legbad("legbad-expiry.log", HARNESS_LIST("--config", conf));
    assert_log_has("ended ones show for 3 s");
    int listed = list_total(&it.a), overlays = overlay_count();

    long long t0 = harness_now_ms();
    create_with_timeout(&it.a, "2", 2, a);
    create_instance(&it.a, "small", b);
    create_with_timeout(&it.a, "2", 2, s);
    instance_action(&it.a, s, "stop", NULL, &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "status"), "stopped");
    harness_response_done(&resp);
    int64_t a_expires;
    get_status_expiry(&it.a, a, status, sizeof(status), &a_expires);

    long long ended = wait_status(&it.a, a, "terminated", t0 + 5000);
    /* Not before its time: the clock it was given is the one it ran out of. */
    if ((int64_t)time(NULL) < a_expires)
        fail_msg("%s terminated before its expires_at", a);
    print_message("timeout_seconds 2: terminated %lld ms after the create\n", ended - t0);

    /* Its answer is the same instance, ended: same times, no disk, no domain. */
    get_instance(&it.a, a, &resp);
    assert_status(&resp, 200);
    check_instance_object(resp.json, "tiny", "small", "terminated", 2);
    assert_int_equal(json_time(resp.json, "expires_at"), a_expires);
    harness_response_done(&resp);
    overlay_path(overlay, sizeof(overlay), a);
    if (harness_file_exists(overlay))
        fail_msg("overlay %s still there after the expiry", overlay);
    /* The fake driver's domains live inside legbad: its log says the domain went. */
    snprintf(needle, sizeof(needle), "instance %s: expired", a);
    assert_log_has(needle);
    assert_true(listed_with_status(&it.a, a, status, sizeof(status)));
    assert_string_equal(status, "terminated");
    assert_true(legbactl_has_instance(a));

    /* The stopped one ran out of time as well; the one without a timeout runs on. */
    wait_status(&it.a, s, "terminated", t0 + 5000);
    overlay_path(overlay, sizeof(overlay), s);
    assert_false(harness_file_exists(overlay));
    assert_true(listed_with_status(&it.a, b, status, sizeof(status)));
    assert_string_equal(status, "running");
    overlay_path(overlay, sizeof(overlay), b);
    assert_true(harness_file_exists(overlay));

    /* terminated_retention later the record is gone, from the API and from the store. */
    long long gone = wait_status(&it.a, a, NULL, ended + 3000 + 2500);
    print_message("terminated_retention 3: gone %lld ms after terminated was seen\n", gone - ended);
    if (gone - ended < 1500)
        fail_msg("%s was forgotten %lld ms after it ended; retention is 3 s", a, gone - ended);
    assert_false(listed_with_status(&it.a, a, NULL, 0));
    assert_false(legbactl_has_instance(a));
    snprintf(needle, sizeof(needle), "instance %s: forgotten", a);
    assert_log_has(needle);
    wait_status(&it.a, s, NULL, harness_now_ms() + 5000);

    get_status_expiry(&it.a, b, status, sizeof(status), &a_expires);
    assert_string_equal(status, "running");
    delete_instance(&it.a, b);
    assert_int_equal(list_total(&it.a), listed);
    assert_int_equal(overlay_count(), overlays);
}

/* Expects POST …/extend with body (and a JSON Content-Type) to be refused so. */
static void check_extend_refused(const char *file, int line, const char *uuid, const char *body,
                                 int status, const char *code, const char *message_word)
{
    HarnessResponse resp = {0};
    instance_action(&it.a, uuid, "extend", body, &resp);
    harness_check_error(file, line, &resp, status, code);
    const char *message = harness_error_message(&resp);
    if (message_word && (!message || !strstr(message, message_word)))
        fail_response(file, line, &resp, "error message should name '%s'", message_word);
    harness_response_done(&resp);
}

#define assert_extend_refused(uuid, body, status, code, message_word)                              \
    check_extend_refused(__FILE__, __LINE__, (uuid), (body), (status), (code), (message_word))

/*
 * POST …/extend {"timeout_seconds": N}: expires_at becomes now + N (longer
 * or shorter), within the host's maximum; only the owner may; an instance
 * that has ended stays ended (409), and can still be deleted.
 */
static void api_extend(void **state)
{
    char uuid[UUID_LEN + 1], ended[UUID_LEN + 1], path[256], status[32];
    HarnessResponse resp = {0};
    create_instance(&it.a, "small", uuid);

    int64_t before = time(NULL);
    instance_action(&it.a, uuid, "extend", "{\"timeout_seconds\":7200}", &resp);
    int64_t after = time(NULL);
    assert_status(&resp, 200);
    check_instance_object(resp.json, "tiny", "small", "running", -1);
    int64_t expires = json_time(resp.json, "expires_at");
    if (expires < before + 7200 || expires > after + 7200)
        fail_response(__FILE__, __LINE__, &resp, "expires_at now + 7200 expected");
    /* The key of the access URL is not handed out again. */
    assert_null(strstr(harness_json_string(resp.json, "access_url"), "#key="));
    harness_response_done(&resp);
    int64_t stored;
    get_status_expiry(&it.a, uuid, status, sizeof(status), &stored);
    assert_int_equal(stored, expires);
    assert_string_equal(status, "running");

    /* Shorter is an extend too: from now, not from the old expiry. */
    before = time(NULL);
    instance_action(&it.a, uuid, "extend", "{\"timeout_seconds\":60}", &resp);
    after = time(NULL);
    assert_status(&resp, 200);
    expires = json_time(resp.json, "expires_at");
    if (expires < before + 60 || expires > after + 60)
        fail_response(__FILE__, __LINE__, &resp, "expires_at now + 60 expected");
    harness_response_done(&resp);

    /* Bodies that are not exactly {"timeout_seconds": 1..86400}. */
    assert_extend_refused(uuid, "{}", 400, "missing_field", "timeout_seconds");
    assert_extend_refused(uuid, "", 400, "invalid_json", NULL);
    assert_extend_refused(uuid, "not json", 400, "invalid_json", NULL);
    assert_extend_refused(uuid, "{\"timeout_seconds\":60,\"size\":\"large\"}", 400, "unknown_field",
                          "size");
    assert_extend_refused(uuid, "{\"timeout_seconds\":\"600\"}", 400, "invalid_type", NULL);
    assert_extend_refused(uuid, "{\"timeout_seconds\":null}", 400, "invalid_type", NULL);
    assert_extend_refused(uuid, "{\"timeout_seconds\":0}", 400, "invalid_timeout", NULL);
    assert_extend_refused(uuid, "{\"timeout_seconds\":-60}", 400, "invalid_timeout", NULL);
    assert_extend_refused(uuid, "{\"timeout_seconds\":1.5}", 400, "invalid_timeout", NULL);
    assert_extend_refused(uuid, "{\"timeout_seconds\":86401}", 400, "invalid_timeout", "86400");
    assert_extend_refused(uuid, "{\"timeout_seconds\":1e12}", 400, "invalid_timeout", NULL);
    path_instance(path, sizeof(path), it.a.uuid, uuid);
    strcat(path, "/extend");
    static const char body[] = "{\"timeout_seconds\":600}";
    assert_int_equal(harness_http(it.legbad->port, "POST", path, HARNESS_LIST(it.a.auth), body,
                                  strlen(body), &resp),
                     0);
    assert_error(&resp, 415, "unsupported_media_type");
    harness_response_done(&resp);
    request(NULL, "POST", path, body, &resp);
    assert_error(&resp, 401, "unauthorized");
    harness_response_done(&resp);
    request(it.a.auth, "GET", path, NULL, &resp);
    assert_error(&resp, 405, "method_not_allowed");
    assert_header(&resp, "Allow", "POST");
    harness_response_done(&resp);

    /* Another org's instance does not exist for it, whatever the action. */
    static const char *const actions[] = {"extend", "stop", "start"};
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        instance_action(&it.b, uuid, actions[i], body, &resp);
        assert_error(&resp, 404, "not_found");
        harness_response_done(&resp);
    }
    char missing[UUID_LEN + 1];
    assert_int_equal(uuid_generate(missing), 0);
    instance_action(&it.a, missing, "extend", body, &resp);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
    /* None of that changed it. */
    get_status_expiry(&it.a, uuid, status, sizeof(status), &stored);
    assert_int_equal(stored, expires);
    assert_string_equal(status, "running");

    /* An ended instance is not brought back by any of them: 409, and it stays as it was. */
    long long t0 = harness_now_ms();
    create_with_timeout(&it.a, "1", 1, ended);
    wait_status(&it.a, ended, "terminated", t0 + 4500);
    int64_t ended_expires;
    get_status_expiry(&it.a, ended, status, sizeof(status), &ended_expires);
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        instance_action(&it.a, ended, actions[i], body, &resp);
        assert_error(&resp, 409, "terminated");
        harness_response_done(&resp);
    }
    get_status_expiry(&it.a, ended, status, sizeof(status), &stored);
    assert_string_equal(status, "terminated");
    assert_int_equal(stored, ended_expires);

    /* DELETE of an ended instance forgets it at once. */
    delete_instance(&it.a, ended);
    assert_int_equal(get_instance(&it.a, ended, &resp), 404);
    assert_error(&resp, 404, "not_found");
    harness_response_done(&resp);
    assert_false(listed_with_status(&it.a, ended, NULL, 0));
    assert_false(legbactl_has_instance(ended));
    delete_instance(&it.a, uuid);
}

/*
 * POST …/stop powers the domain off and keeps it, disk and all; …/start
 * powers it on, not ready until the guest says so again. Both answer the
 * instance as it is, and asking twice is no error.
 */
static void api_stop_start(void **state)
{
    char uuid[UUID_LEN + 1], overlay[512], needle[128];
    HarnessResponse resp = {0};
    create_instance(&it.a, "medium", uuid);
    overlay_path(overlay, sizeof(overlay), uuid);

    for (int round = 0; round < 2; round++) {
        instance_action(&it.a, uuid, "stop", NULL, &resp);
        assert_status(&resp, 200);
        assert_instance_object(resp.json, "tiny", "medium", "stopped");
        harness_response_done(&resp);
        get_instance(&it.a, uuid, &resp);
        assert_status(&resp, 200);
        assert_instance_object(resp.json, "tiny", "medium", "stopped");
        harness_response_done(&resp);
        if (!harness_file_exists(overlay))
            fail_msg("stop %d: overlay %s is gone", round + 1, overlay);
    }
    snprintf(needle, sizeof(needle), "instance %s: powered off", uuid);
    assert_log_has(needle);

    for (int round = 0; round < 2; round++) {
        instance_action(&it.a, uuid, "start", NULL, &resp);
        assert_status(&resp, 200);
        /* Running again, and not ready: nothing has drawn a page since the power came back. */
        assert_instance_object(resp.json, "tiny", "medium", "running");
        harness_response_done(&resp);
        get_instance(&it.a, uuid, &resp);
        assert_status(&resp, 200);
        assert_instance_object(resp.json, "tiny", "medium", "running");
        harness_response_done(&resp);
    }
    snprintf(needle, sizeof(needle), "instance %s: powered on", uuid);
    assert_log_has(needle);
    assert_true(harness_file_exists(overlay));

    /* A body is neither needed nor looked at; other methods are not allowed. */
    instance_action(&it.a, uuid, "stop", "{\"force\":true}", &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "status"), "stopped");
    harness_response_done(&resp);
    char path[256];
    path_instance(path, sizeof(path), it.a.uuid, uuid);
    strcat(path, "/start");
    request(it.a.auth, "DELETE", path, NULL, &resp);
    assert_error(&resp, 405, "method_not_allowed");
    assert_header(&resp, "Allow", "POST");
    harness_response_done(&resp);

    /* A stopped instance deletes like a running one. */
    delete_instance(&it.a, uuid);
    assert_false(legbactl_has_instance(uuid));
}

/*
 * timeout_seconds is bounded by instance_timeout_max (the message says
 * what it is); without one, instance_timeout applies. A config where the
 * default is past the maximum does not start.
 */
static void api_timeout_limits(void **state)
{
    char uuid[UUID_LEN + 1], path[256], conf[512];
    HarnessResponse resp = {0};
    int before = list_total(&it.a), overlays = overlay_count();
    path_instances(path, sizeof(path), it.a.uuid);

    static const struct {
        const char *value, *code, *word;
    } refused[] = {
        {"86401", "invalid_timeout", "86400"}, {"0", "invalid_timeout", NULL},
        {"-1", "invalid_timeout", NULL},       {"1.5", "invalid_timeout", NULL},
        {"1e12", "invalid_timeout", NULL},     {"\"60\"", "invalid_type", "timeout_seconds"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char body[160];
        snprintf(body, sizeof(body),
                 "{\"image\":\"tiny\",\"size\":\"small\",\"timeout_seconds\":%s}",
                 refused[i].value);
        request(it.a.auth, "POST", path, body, &resp);
        assert_error(&resp, 400, refused[i].code);
        if (refused[i].word)
            assert_message_has(&resp, refused[i].word);
        harness_response_done(&resp);
    }
    /* Nothing was made of any of them. */
    assert_int_equal(list_total(&it.a), before);
    assert_int_equal(overlay_count(), overlays);

    /* The maximum itself is fine; null is the default. */
    create_with_timeout(&it.a, "86400", 86400, uuid);
    delete_instance(&it.a, uuid);
    create_with_timeout(&it.a, "null", 3600, uuid);
    delete_instance(&it.a, uuid);

    /* Another host's limits: default 30 s, at most 60 s. */
    write_conf(conf, sizeof(conf), "limits.conf",
               "memory_overcommit_percent = 0\ninstance_timeout = 30\ninstance_timeout_max = 60\n");
    start_special_legbad("legbad-limits.log", HARNESS_LIST("--config", conf));
    assert_log_has("instances live 30 s unless asked otherwise (at most 60 s)");
    request(it.a.auth, "POST", path, "{\"image\":\"tiny\",\"size\":\"small\"}", &resp);
    assert_status(&resp, 201);
    check_instance_object(resp.json, "tiny", "small", "running", 30);
    snprintf(uuid, sizeof(uuid), "%s", harness_json_string(resp.json, "instance_uuid"));
    harness_response_done(&resp);
    delete_instance(&it.a, uuid);
    create_with_timeout(&it.a, "60", 60, uuid);
    assert_extend_refused(uuid, "{\"timeout_seconds\":61}", 400, "invalid_timeout", "60");
    delete_instance(&it.a, uuid);
    request(it.a.auth, "POST", path,
            "{\"image\":\"tiny\",\"size\":\"small\",\"timeout_seconds\":61}", &resp);
    assert_error(&resp, 400, "invalid_timeout");
    assert_message_has(&resp, "60");
    harness_response_done(&resp);
    assert_int_equal(list_total(&it.a), before);

    write_conf(conf, sizeof(conf), "contradiction.conf",
               "instance_timeout = 100\ninstance_timeout_max = 50\n");
    char *out = legbad_refuses(HARNESS_LIST("--config", conf));
    if (!strstr(out, "instance_timeout_max"))
        fail_msg("instance_timeout over instance_timeout_max: the message should say so: %s", out);
    free(out);
}

/*
 * idle_timeout: a running instance nobody has watched for that long ends
 * like an expired one. A stopped one has nothing to watch and is left
 * alone; started again, its idle clock starts again.
 */
static void api_idle(void **state)
{
    char conf[512], a[UUID_LEN + 1], s[UUID_LEN + 1], overlay[512], needle[160], status[32];
    HarnessResponse resp = {0};
    write_conf(conf, sizeof(conf), "idle.conf",
               "memory_overcommit_percent = 0\nidle_timeout = 2\n");
    start_special_legbad("legbad-idle.log", HARNESS_LIST("--config", conf));
    assert_log_has("or until nobody watched them for idle_timeout");

    long long t0 = harness_now_ms();
    create_instance(&it.a, "small", a);
    create_instance(&it.a, "small", s);
    instance_action(&it.a, s, "stop", NULL, &resp);
    assert_status(&resp, 200);
    harness_response_done(&resp);

    long long ended = wait_status(&it.a, a, "terminated", t0 + 5000);
    print_message("idle_timeout 2: terminated %lld ms after the create\n", ended - t0);
    /* Not at first sight: it was given its two seconds. */
    if (ended - t0 < 1000)
        fail_msg("%s ended %lld ms after it was created; idle_timeout is 2 s", a, ended - t0);
    snprintf(needle, sizeof(needle), "instance %s: ended: no viewer for idle_timeout", a);
    assert_log_has(needle);
    overlay_path(overlay, sizeof(overlay), a);
    assert_false(harness_file_exists(overlay));

    /* Well past two seconds, the stopped one is still stopped. */
    usleep(2000 * 1000);
    int64_t expires;
    get_status_expiry(&it.a, s, status, sizeof(status), &expires);
    assert_string_equal(status, "stopped");
    overlay_path(overlay, sizeof(overlay), s);
    assert_true(harness_file_exists(overlay));

    long long started = harness_now_ms();
    instance_action(&it.a, s, "start", NULL, &resp);
    assert_status(&resp, 200);
    assert_string_equal(harness_json_string(resp.json, "status"), "running");
    harness_response_done(&resp);
    ended = wait_status(&it.a, s, "terminated", started + 5000);
    if (ended - started < 1000)
        fail_msg("%s ended %lld ms after it was started; idle_timeout is 2 s", s, ended - started);

    delete_instance(&it.a, a);
    delete_instance(&it.a, s);
    assert_false(listed_with_status(&it.a, a, NULL, 0));
    assert_false(listed_with_status(&it.a, s, NULL, 0));
}

/* An ended instance holds nothing: with max_instances = 1, its record does not block a create. */
static void api_terminated_frees_capacity(void **state)
{
    char conf[512], ended[UUID_LEN + 1], next[UUID_LEN + 1], path[256];
    HarnessResponse resp = {0};
    write_conf(conf, sizeof(conf), "capacity.conf",
               "memory_overcommit_percent = 0\nmax_instances = 1\n");
    start_special_legbad("legbad-capacity.log", HARNESS_LIST("--config", conf));

    long long t0 = harness_now_ms();
    create_with_timeout(&it.a, "1", 1, ended);
    path_instances(path, sizeof(path), it.b.uuid);
    request(it.b.auth, "POST", path, "{\"image\":\"tiny\",\"size\":\"small\"}", &resp);
    assert_error(&resp, 503, "capacity");
    harness_response_done(&resp);

    wait_status(&it.a, ended, "terminated", t0 + 4500);
    create_instance(&it.b, "small", next);
    delete_instance(&it.b, next);
    delete_instance(&it.a, ended);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(api_create_get_delete, revive_legbad),
        cmocka_unit_test_setup(api_sizes_and_images, revive_legbad),
        cmocka_unit_test_setup(api_catalog_and_start_url, revive_legbad),
        cmocka_unit_test_setup(api_network_and_clipboard, revive_legbad),
        cmocka_unit_test_setup_teardown(api_pool, revive_legbad, put_back_legbad),
        cmocka_unit_test_setup(api_console_access_url, revive_legbad),
        cmocka_unit_test_setup(api_console_files, revive_legbad),
        cmocka_unit_test_setup(api_console_session, revive_legbad),
        cmocka_unit_test_setup(api_console_after_delete, revive_legbad),
        cmocka_unit_test_setup(api_auth, revive_legbad),
        cmocka_unit_test_setup(api_isolation, revive_legbad),
        cmocka_unit_test_setup(api_bad_bodies, revive_legbad),
        cmocka_unit_test_setup(api_bad_paths_and_methods, revive_legbad),
        cmocka_unit_test_setup(api_bad_http, revive_legbad),
        cmocka_unit_test_setup(api_log_lines, revive_legbad),
        cmocka_unit_test_setup(api_survives_bad_input, revive_legbad),
        cmocka_unit_test_setup(api_restart_reconcile, revive_legbad),
        cmocka_unit_test_setup(api_concurrent, revive_legbad),
        cmocka_unit_test_setup(api_config_file, revive_legbad),
        cmocka_unit_test_setup_teardown(api_tls, revive_legbad, put_back_legbad),
        cmocka_unit_test_setup(api_tls_config_errors, revive_legbad),
        cmocka_unit_test_setup_teardown(api_public_url_instance, revive_legbad, put_back_legbad),
        cmocka_unit_test_setup_teardown(api_public_url_prefix_origins, revive_legbad,
                                        put_back_legbad),
        cmocka_unit_test_setup(api_extend, revive_legbad),
        cmocka_unit_test_setup(api_stop_start, revive_legbad),
        cmocka_unit_test_setup_teardown(api_expiry, revive_legbad, put_back_legbad),
        cmocka_unit_test_setup_teardown(api_timeout_limits, revive_legbad, put_back_legbad),
        cmocka_unit_test_setup_teardown(api_idle, revive_legbad, put_back_legbad),
        cmocka_unit_test_setup_teardown(api_terminated_frees_capacity, revive_legbad,
                                        put_back_legbad),
    };
    return cmocka_run_group_tests_name("it_api", tests, group_setup, group_teardown);
}
