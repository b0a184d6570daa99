/*
 * LMDB key layout: the one place it is written down.
 *
 * One environment at DATA_DIR/state (data.mdb + lock.mdb), opened by legbad
 * and by legbactl, possibly at the same time. Five named databases:
 *
 *   database       key                                   value
 *   orgs           org_uuid                              {"name","created_at"}
 *   tokens         SHA-256 of the token (32 raw bytes)   {"id","org_uuid","created_at"}
 *   token_ids      token id                              SHA-256 of the token (32 raw bytes)
 *   instances      instance_uuid                         {"org_uuid","image","size","state",
 *                                                         "created_at","updated_at"}
 *   org_instances  org_uuid ‖ instance_uuid (72 bytes)   empty
 *
 * - Every uuid in a key or a value is the canonical lowercase 8-4-4-4-12 text,
 *   36 bytes with no NUL, so one record has exactly one key whatever case a
 *   caller used.
 * - Values are JSON objects so a field can be added without a migration:
 *   readers ignore fields they do not know, and a transition rewrites only the
 *   fields it owns. Times are integer seconds since the epoch, UTC; "state" is
 *   the name from instance_state_to_string(). A value that does not decode is
 *   reported as -EBADMSG.
 * - token_ids exists so a token can be revoked by its public id, without the
 *   secret; org_instances lets one org's instances be listed with a range scan
 *   that never reads another org's records. An index entry is written and
 *   deleted in the same transaction as its record.
 * - Nothing read from the store outlives its transaction: another process may
 *   write between two calls.
 * - Every process should open with the same map size. A process whose map is
 *   smaller than the data another one wrote gets MDB_MAP_RESIZED (-EIO here)
 *   until it reopens.
 */
#include "store.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

#define STORE_DEFAULT_MAP_SIZE ((size_t)1 << 30)
#define STORE_MAX_DBS 8
#define UUID_KEY_LEN (UUID_STR_LEN - 1)
#define ORG_INSTANCE_KEY_LEN (2 * UUID_KEY_LEN)
/* Beyond 2^53 a JSON number (a double) no longer holds every integer. */
#define JSON_INT_LIMIT 9007199254740992.0

struct Store {
    MDB_env *env;
    MDB_dbi orgs;
    MDB_dbi tokens;
    MDB_dbi token_ids;
    MDB_dbi instances;
    MDB_dbi org_instances;
};

static const char *const instance_state_names[_INSTANCE_STATE_MAX] = {
    [INSTANCE_CREATING] = "creating",     [INSTANCE_RUNNING] = "running",
    [INSTANCE_STOPPED] = "stopped",       [INSTANCE_DELETING] = "deleting",
    [INSTANCE_TERMINATED] = "terminated",
};

const char *instance_state_to_string(InstanceState state)
{
    if ((unsigned)state >= _INSTANCE_STATE_MAX)
        return NULL;
    return instance_state_names[state];
}

int instance_state_from_string(const char *name, InstanceState *ret_state)
{
    if (!name)
        return -EINVAL;
    for (size_t i = 0; i < ARRAY_SIZE(instance_state_names); i++) {
        if (strcmp(name, instance_state_names[i]) == 0) {
            *ret_state = (InstanceState)i;
            return 0;
        }
    }
    return -EINVAL;
}

/*
 * LMDB's own codes are negative; the few callers care about are mapped, the
 * rest are -EIO. Positive codes are errno values (EACCES, ENOMEM, ...) and
 * say more as themselves than as -EIO.
 */
static int store_error(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return -ENOENT;
    case MDB_KEYEXIST:
        return -EEXIST;
    case MDB_MAP_FULL:
        return -ENOSPC;
    default:
        return rc > 0 ? -rc : -EIO;
    }
}

static void txn_abortp(MDB_txn **txn)
{
    if (*txn)
        mdb_txn_abort(*txn);
}

static void cursor_closep(MDB_cursor **cursor)
{
    if (*cursor)
        mdb_cursor_close(*cursor);
}

static void json_deletep(cJSON **json)
{
    cJSON_Delete(*json);
}

static void json_freep(char **text)
{
    cJSON_free(*text);
}

#define _cleanup_txn_ _cleanup_(txn_abortp)
#define _cleanup_cursor_ _cleanup_(cursor_closep)
#define _cleanup_json_ _cleanup_(json_deletep)

static int txn_begin(Store *store, bool write, MDB_txn **ret_txn)
{
    return store_error(mdb_txn_begin(store->env, NULL, write ? 0 : MDB_RDONLY, ret_txn));
}

/* Commits and forgets the transaction: LMDB frees it whether or not the commit worked. */
static int txn_commit(MDB_txn **txn)
{
    return store_error(mdb_txn_commit(TAKE_PTR(*txn)));
}

/* Room for one more element in a list being built. */
static int array_grow(void **array, size_t *allocated, size_t count, size_t size)
{
    if (count < *allocated)
        return 0;
    size_t n = *allocated ? 2 * *allocated : 16;
    void *p = reallocarray(*array, n, size);
    if (!p)
        return -ENOMEM;
    *array = p;
    *allocated = n;
    return 0;
}

/* 1..max bytes before the NUL; reads at most max + 1 bytes, the size of the struct field. */
static bool text_valid(const char *text, size_t max)
{
    size_t len = strnlen(text, max + 1);
    return len >= 1 && len <= max;
}

/* The canonical form of an incoming uuid, and the key that holds it. */
static int uuid_key(const char *uuid, char buf[UUID_STR_LEN], MDB_val *ret_key)
{
    if (!uuid || uuid_normalize(uuid, buf) < 0)
        return -EINVAL;
    *ret_key = (MDB_val){.mv_size = UUID_KEY_LEN, .mv_data = buf};
    return 0;
}

static int key_to_uuid(const MDB_val *key, char ret[UUID_STR_LEN])
{
    char uuid[UUID_STR_LEN];
    if (key->mv_size != UUID_KEY_LEN)
        return -EBADMSG;
    memcpy(uuid, key->mv_data, UUID_KEY_LEN);
    uuid[UUID_KEY_LEN] = '\0';
    if (!uuid_is_valid(uuid))
        return -EBADMSG;
    memcpy(ret, uuid, UUID_STR_LEN);
    return 0;
}

/* A JSON object filling the whole value; anything else is a corrupt record. */
static int json_parse(const MDB_val *data, cJSON **ret_json)
{
    const char *text = data->mv_data;
    const char *end = NULL;
    _cleanup_json_ cJSON *json = cJSON_ParseWithLengthOpts(text, data->mv_size, &end, false);
    if (!cJSON_IsObject(json))
        return -EBADMSG;
    if (end != text + data->mv_size)
        return -EBADMSG;
    *ret_json = TAKE_PTR(json);
    return 0;
}

static int json_get_string(const cJSON *json, const char *name, char *ret, size_t size)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(json, name);
    if (!cJSON_IsString(item) || !item->valuestring)
        return -EBADMSG;
    size_t len = strlen(item->valuestring);
    if (len == 0 || len >= size)
        return -EBADMSG;
    memcpy(ret, item->valuestring, len + 1);
    return 0;
}

static int json_get_uuid(const cJSON *json, const char *name, char ret[UUID_STR_LEN])
{
    char uuid[UUID_STR_LEN];
    if (json_get_string(json, name, uuid, sizeof(uuid)) < 0 || !uuid_is_valid(uuid))
        return -EBADMSG;
    memcpy(ret, uuid, sizeof(uuid));
    return 0;
}

static int json_get_time(const cJSON *json, const char *name, int64_t *ret)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(json, name);
    if (!cJSON_IsNumber(item))
        return -EBADMSG;
    double value = item->valuedouble;
    if (!(value >= -JSON_INT_LIMIT && value <= JSON_INT_LIMIT))
        return -EBADMSG;
    if ((double)(int64_t)value != value)
        return -EBADMSG;
    *ret = (int64_t)value;
    return 0;
}

/* Replaces a field in place, so fields this version does not know survive a rewrite. */
static int json_set(cJSON *json, const char *name, cJSON *item)
{
    if (!item)
        return -ENOMEM;
    if (!cJSON_ReplaceItemInObjectCaseSensitive(json, name, item)) {
        cJSON_Delete(item);
        return -ENOMEM;
    }
    return 0;
}

static int put_json(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, const cJSON *json, unsigned flags)
{
    _cleanup_(json_freep) char *text = cJSON_PrintUnformatted(json);
    if (!text)
        return -ENOMEM;
    MDB_val data = {.mv_size = strlen(text), .mv_data = text};
    return store_error(mdb_put(txn, dbi, key, &data, flags));
}

/* --- orgs ---------------------------------------------------------------------------------- */

/* A validated copy with the uuid in canonical form; -EINVAL for what may not be stored. */
static int org_check(const StoreOrg *org, StoreOrg *ret)
{
    StoreOrg copy = {0};
    if (!org || uuid_normalize(org->uuid, copy.uuid) < 0 ||
        !text_valid(org->name, STORE_ORG_NAME_MAX))
        return -EINVAL;
    memcpy(copy.name, org->name, strnlen(org->name, STORE_ORG_NAME_MAX));
    copy.created_at = org->created_at;
    *ret = copy;
    return 0;
}

static int org_decode(const MDB_val *key, const MDB_val *data, StoreOrg *ret)
{
    StoreOrg org = {0};
    _cleanup_json_ cJSON *json = NULL;
    int r = key_to_uuid(key, org.uuid);
    if (r < 0)
        return r;
    r = json_parse(data, &json);
    if (r < 0)
        return r;
    if (json_get_string(json, "name", org.name, sizeof(org.name)) < 0 ||
        json_get_time(json, "created_at", &org.created_at) < 0)
        return -EBADMSG;
    *ret = org;
    return 0;
}

static int org_put(Store *store, MDB_txn *txn, const StoreOrg *org)
{
    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    if (!json || !cJSON_AddStringToObject(json, "name", org->name) ||
        !cJSON_AddNumberToObject(json, "created_at", (double)org->created_at))
        return -ENOMEM;
    MDB_val key = {.mv_size = UUID_KEY_LEN, .mv_data = (void *)org->uuid};
    return put_json(txn, store->orgs, &key, json, MDB_NOOVERWRITE);
}

/* -ENOENT unless the org is there, as seen by this transaction. */
static int org_exists(Store *store, MDB_txn *txn, const char org_uuid[UUID_STR_LEN])
{
    MDB_val key = {.mv_size = UUID_KEY_LEN, .mv_data = (void *)org_uuid};
    MDB_val data;
    return store_error(mdb_get(txn, store->orgs, &key, &data));
}

/* --- tokens -------------------------------------------------------------------------------- */

static int token_check(const StoreToken *token, StoreToken *ret)
{
    StoreToken copy = {0};
    if (!token || uuid_normalize(token->id, copy.id) < 0 ||
        uuid_normalize(token->org_uuid, copy.org_uuid) < 0)
        return -EINVAL;
    memcpy(copy.hash, token->hash, AUTH_HASH_LEN);
    copy.created_at = token->created_at;
    *ret = copy;
    return 0;
}

static int token_decode(const MDB_val *key, const MDB_val *data, StoreToken *ret)
{
    StoreToken token = {0};
    _cleanup_json_ cJSON *json = NULL;
    if (key->mv_size != AUTH_HASH_LEN)
        return -EBADMSG;
    memcpy(token.hash, key->mv_data, AUTH_HASH_LEN);
    int r = json_parse(data, &json);
    if (r < 0)
        return r;
    if (json_get_uuid(json, "id", token.id) < 0 ||
        json_get_uuid(json, "org_uuid", token.org_uuid) < 0 ||
        json_get_time(json, "created_at", &token.created_at) < 0)
        return -EBADMSG;
    *ret = token;
    return 0;
}

/* Writes both the token and its id entry; the token must be checked and its org must exist. */
static int token_put(Store *store, MDB_txn *txn, const StoreToken *token)
{
    int r = org_exists(store, txn, token->org_uuid);
    if (r < 0)
        return r;

    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    if (!json || !cJSON_AddStringToObject(json, "id", token->id) ||
        !cJSON_AddStringToObject(json, "org_uuid", token->org_uuid) ||
        !cJSON_AddNumberToObject(json, "created_at", (double)token->created_at))
        return -ENOMEM;
    MDB_val hash = {.mv_size = AUTH_HASH_LEN, .mv_data = (void *)token->hash};
    r = put_json(txn, store->tokens, &hash, json, MDB_NOOVERWRITE);
    if (r < 0)
        return r;
    MDB_val id = {.mv_size = UUID_KEY_LEN, .mv_data = (void *)token->id};
    return store_error(mdb_put(txn, store->token_ids, &id, &hash, MDB_NOOVERWRITE));
}

static int token_compare(const void *a, const void *b)
{
    const StoreToken *x = a, *y = b;
    if (x->created_at != y->created_at)
        return x->created_at < y->created_at ? -1 : 1;
    return strcmp(x->id, y->id);
}

/* --- instances ----------------------------------------------------------------------------- */

static int instance_check(const StoreInstance *instance, StoreInstance *ret)
{
    StoreInstance copy = {0};
    if (!instance || uuid_normalize(instance->uuid, copy.uuid) < 0 ||
        uuid_normalize(instance->org_uuid, copy.org_uuid) < 0 ||
        !text_valid(instance->image, STORE_IMAGE_NAME_MAX) ||
        !text_valid(instance->size, STORE_SIZE_NAME_MAX) ||
        !instance_state_to_string(instance->state))
        return -EINVAL;
    memcpy(copy.image, instance->image, strnlen(instance->image, STORE_IMAGE_NAME_MAX));
    memcpy(copy.size, instance->size, strnlen(instance->size, STORE_SIZE_NAME_MAX));
    copy.state = instance->state;
    copy.created_at = instance->created_at;
    copy.updated_at = instance->updated_at;
    *ret = copy;
    return 0;
}

static int instance_from_json(const MDB_val *key, const cJSON *json, StoreInstance *ret)
{
    StoreInstance instance = {0};
    char state[16];
    int r = key_to_uuid(key, instance.uuid);
    if (r < 0)
        return r;
    if (json_get_uuid(json, "org_uuid", instance.org_uuid) < 0 ||
        json_get_string(json, "image", instance.image, sizeof(instance.image)) < 0 ||
        json_get_string(json, "size", instance.size, sizeof(instance.size)) < 0 ||
        json_get_string(json, "state", state, sizeof(state)) < 0 ||
        instance_state_from_string(state, &instance.state) < 0 ||
        json_get_time(json, "created_at", &instance.created_at) < 0 ||
        json_get_time(json, "updated_at", &instance.updated_at) < 0)
        return -EBADMSG;
    *ret = instance;
    return 0;
}

static int instance_decode(const MDB_val *key, const MDB_val *data, StoreInstance *ret)
{
    _cleanup_json_ cJSON *json = NULL;
    int r = json_parse(data, &json);
    if (r < 0)
        return r;
    return instance_from_json(key, json, ret);
}

/* The org_instances key for an instance: org_uuid ‖ instance_uuid. */
static MDB_val org_instance_key(const StoreInstance *instance, char buf[ORG_INSTANCE_KEY_LEN])
{
    memcpy(buf, instance->org_uuid, UUID_KEY_LEN);
    memcpy(buf + UUID_KEY_LEN, instance->uuid, UUID_KEY_LEN);
    return (MDB_val){.mv_size = ORG_INSTANCE_KEY_LEN, .mv_data = buf};
}

static int instance_compare(const void *a, const void *b)
{
    const StoreInstance *x = a, *y = b;
    if (x->created_at != y->created_at)
        return x->created_at < y->created_at ? -1 : 1;
    return strcmp(x->uuid, y->uuid);
}

/* --- the environment ----------------------------------------------------------------------- */

void store_close(Store *store)
{
    if (!store)
        return;
    if (store->env)
        mdb_env_close(store->env);
    free(store);
}

static void store_closep(Store **store)
{
    store_close(*store);
}

int store_open(const char *data_dir, size_t map_size, Store **ret_store)
{
    if (!data_dir || !*data_dir)
        return -EINVAL;
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/state", data_dir) < 0)
        return -ENOMEM;
    int r = util_mkdir_p(path, 0700);
    if (r < 0)
        return r;

    _cleanup_(store_closep) Store *store = calloc(1, sizeof(*store));
    if (!store)
        return -ENOMEM;
    r = store_error(mdb_env_create(&store->env));
    if (r < 0)
        return r;
    r = store_error(mdb_env_set_maxdbs(store->env, STORE_MAX_DBS));
    if (r < 0)
        return r;
    r = store_error(mdb_env_set_mapsize(store->env, map_size ? map_size : STORE_DEFAULT_MAP_SIZE));
    if (r < 0)
        return r;
    /* Read transactions are not tied to a thread: a libmicrohttpd worker may start and end one. */
    r = store_error(mdb_env_open(store->env, path, MDB_NOTLS, 0600));
    if (r < 0)
        return r;
    /* A process that died inside a read transaction leaves its slot behind, pinning old pages. */
    mdb_reader_check(store->env, NULL);

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    const struct {
        const char *name;
        MDB_dbi *dbi;
    } dbs[] = {
        {"orgs", &store->orgs},
        {"tokens", &store->tokens},
        {"token_ids", &store->token_ids},
        {"instances", &store->instances},
        {"org_instances", &store->org_instances},
    };
    for (size_t i = 0; i < ARRAY_SIZE(dbs); i++) {
        r = store_error(mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi));
        if (r < 0)
            return r;
    }
    r = txn_commit(&txn);
    if (r < 0)
        return r;

    *ret_store = TAKE_PTR(store);
    return 0;
}

/* --- orgs ---------------------------------------------------------------------------------- */

int store_org_create(Store *store, const StoreOrg *org, const StoreToken *token)
{
    StoreOrg o;
    StoreToken t;
    int r = org_check(org, &o);
    if (r < 0)
        return r;
    r = token_check(token, &t);
    if (r < 0)
        return r;
    if (strcmp(o.uuid, t.org_uuid) != 0)
        return -EINVAL;

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    r = org_put(store, txn, &o);
    if (r < 0)
        return r;
    r = token_put(store, txn, &t);
    if (r < 0)
        return r;
    return txn_commit(&txn);
}

int store_org_get(Store *store, const char *org_uuid, StoreOrg *ret_org)
{
    char uuid[UUID_STR_LEN];
    MDB_val key, data;
    int r = uuid_key(org_uuid, uuid, &key);
    if (r < 0)
        return r;

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_begin(store, false, &txn);
    if (r < 0)
        return r;
    r = store_error(mdb_get(txn, store->orgs, &key, &data));
    if (r < 0)
        return r;
    return org_decode(&key, &data, ret_org);
}

int store_org_list(Store *store, StoreOrg **ret_orgs, size_t *ret_count)
{
    _cleanup_free_ StoreOrg *orgs = NULL;
    size_t count = 0, allocated = 0;
    MDB_val key, data;

    _cleanup_txn_ MDB_txn *txn = NULL;
    int r = txn_begin(store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_cursor_ MDB_cursor *cursor = NULL;
    r = store_error(mdb_cursor_open(txn, store->orgs, &cursor));
    if (r < 0)
        return r;

    int rc;
    for (rc = mdb_cursor_get(cursor, &key, &data, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT)) {
        r = array_grow((void **)&orgs, &allocated, count, sizeof(*orgs));
        if (r < 0)
            return r;
        r = org_decode(&key, &data, &orgs[count]);
        if (r < 0)
            return r;
        count++;
    }
    if (rc != MDB_NOTFOUND)
        return store_error(rc);

    *ret_orgs = TAKE_PTR(orgs);
    *ret_count = count;
    return 0;
}

/* --- tokens -------------------------------------------------------------------------------- */

int store_token_add(Store *store, const StoreToken *token)
{
    StoreToken t;
    int r = token_check(token, &t);
    if (r < 0)
        return r;

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    r = token_put(store, txn, &t);
    if (r < 0)
        return r;
    return txn_commit(&txn);
}

int store_token_lookup(Store *store, const uint8_t hash[AUTH_HASH_LEN], StoreToken *ret_token)
{
    if (!hash)
        return -EINVAL;
    MDB_val key = {.mv_size = AUTH_HASH_LEN, .mv_data = (void *)hash};
    MDB_val data;

    _cleanup_txn_ MDB_txn *txn = NULL;
    int r = txn_begin(store, false, &txn);
    if (r < 0)
        return r;
    r = store_error(mdb_get(txn, store->tokens, &key, &data));
    if (r < 0)
        return r;
    return token_decode(&key, &data, ret_token);
}

int store_token_revoke(Store *store, const char *token_id)
{
    char id[UUID_STR_LEN];
    uint8_t hash_buf[AUTH_HASH_LEN];
    MDB_val key, data;
    int r = uuid_key(token_id, id, &key);
    if (r < 0)
        return r;

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    r = store_error(mdb_get(txn, store->token_ids, &key, &data));
    if (r < 0)
        return r;
    if (data.mv_size != AUTH_HASH_LEN)
        return -EBADMSG;
    /* data points into the map, which the deletes below may rewrite. */
    memcpy(hash_buf, data.mv_data, AUTH_HASH_LEN);
    MDB_val hash = {.mv_size = AUTH_HASH_LEN, .mv_data = hash_buf};

    /* A token whose record is already gone can still have its id revoked. */
    r = store_error(mdb_del(txn, store->tokens, &hash, NULL));
    if (r < 0 && r != -ENOENT)
        return r;
    r = store_error(mdb_del(txn, store->token_ids, &key, NULL));
    if (r < 0)
        return r;
    return txn_commit(&txn);
}

int store_token_list(Store *store, const char *org_uuid, StoreToken **ret_tokens, size_t *ret_count)
{
    char org[UUID_STR_LEN];
    MDB_val key, data;
    if (org_uuid && uuid_normalize(org_uuid, org) < 0)
        return -EINVAL;

    _cleanup_free_ StoreToken *tokens = NULL;
    size_t count = 0, allocated = 0;

    _cleanup_txn_ MDB_txn *txn = NULL;
    int r = txn_begin(store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_cursor_ MDB_cursor *cursor = NULL;
    r = store_error(mdb_cursor_open(txn, store->tokens, &cursor));
    if (r < 0)
        return r;

    /* Tokens are few (an operator makes each by hand), so a scan is cheaper than an index. */
    int rc;
    for (rc = mdb_cursor_get(cursor, &key, &data, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT)) {
        StoreToken token;
        r = token_decode(&key, &data, &token);
        if (r < 0)
            return r;
        if (org_uuid && strcmp(token.org_uuid, org) != 0)
            continue;
        r = array_grow((void **)&tokens, &allocated, count, sizeof(*tokens));
        if (r < 0)
            return r;
        tokens[count++] = token;
    }
    if (rc != MDB_NOTFOUND)
        return store_error(rc);

    if (count > 1)
        qsort(tokens, count, sizeof(*tokens), token_compare);
    *ret_tokens = TAKE_PTR(tokens);
    *ret_count = count;
    return 0;
}

/* --- instances ----------------------------------------------------------------------------- */

int store_instance_insert(Store *store, const StoreInstance *instance)
{
    StoreInstance in;
    char index_buf[ORG_INSTANCE_KEY_LEN];
    int r = instance_check(instance, &in);
    if (r < 0)
        return r;

    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    if (!json || !cJSON_AddStringToObject(json, "org_uuid", in.org_uuid) ||
        !cJSON_AddStringToObject(json, "image", in.image) ||
        !cJSON_AddStringToObject(json, "size", in.size) ||
        !cJSON_AddStringToObject(json, "state", instance_state_to_string(in.state)) ||
        !cJSON_AddNumberToObject(json, "created_at", (double)in.created_at) ||
        !cJSON_AddNumberToObject(json, "updated_at", (double)in.updated_at))
        return -ENOMEM;

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    r = org_exists(store, txn, in.org_uuid);
    if (r < 0)
        return r;
    MDB_val key = {.mv_size = UUID_KEY_LEN, .mv_data = in.uuid};
    r = put_json(txn, store->instances, &key, json, MDB_NOOVERWRITE);
    if (r < 0)
        return r;
    MDB_val index = org_instance_key(&in, index_buf);
    MDB_val empty = {.mv_size = 0, .mv_data = NULL};
    r = store_error(mdb_put(txn, store->org_instances, &index, &empty, MDB_NOOVERWRITE));
    if (r < 0)
        return r;
    return txn_commit(&txn);
}

int store_instance_get(Store *store, const char *instance_uuid, StoreInstance *ret_instance)
{
    char uuid[UUID_STR_LEN];
    MDB_val key, data;
    int r = uuid_key(instance_uuid, uuid, &key);
    if (r < 0)
        return r;

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_begin(store, false, &txn);
    if (r < 0)
        return r;
    r = store_error(mdb_get(txn, store->instances, &key, &data));
    if (r < 0)
        return r;
    return instance_decode(&key, &data, ret_instance);
}

int store_instance_transition(Store *store, const char *instance_uuid, InstanceState expected,
                              InstanceState next, StoreInstance *ret_instance)
{
    char uuid[UUID_STR_LEN];
    MDB_val key, data;
    int r = uuid_key(instance_uuid, uuid, &key);
    if (r < 0)
        return r;
    if (!instance_state_to_string(expected) || !instance_state_to_string(next))
        return -EINVAL;

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    r = store_error(mdb_get(txn, store->instances, &key, &data));
    if (r < 0)
        return r;
    _cleanup_json_ cJSON *json = NULL;
    r = json_parse(&data, &json);
    if (r < 0)
        return r;
    StoreInstance current;
    r = instance_from_json(&key, json, &current);
    if (r < 0)
        return r;
    if (current.state != expected) {
        if (ret_instance)
            *ret_instance = current;
        return -ESTALE;
    }

    current.state = next;
    current.updated_at = (int64_t)time(NULL);
    r = json_set(json, "state", cJSON_CreateString(instance_state_to_string(next)));
    if (r < 0)
        return r;
    r = json_set(json, "updated_at", cJSON_CreateNumber((double)current.updated_at));
    if (r < 0)
        return r;
    r = put_json(txn, store->instances, &key, json, 0);
    if (r < 0)
        return r;
    r = txn_commit(&txn);
    if (r < 0)
        return r;
    if (ret_instance)
        *ret_instance = current;
    return 0;
}

int store_instance_delete(Store *store, const char *instance_uuid)
{
    char uuid[UUID_STR_LEN];
    char index_buf[ORG_INSTANCE_KEY_LEN];
    MDB_val key, data;
    int r = uuid_key(instance_uuid, uuid, &key);
    if (r < 0)
        return r;

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    r = store_error(mdb_get(txn, store->instances, &key, &data));
    if (r < 0)
        return r;
    /* The record names its org, which locates the index entry to delete with it. */
    StoreInstance instance;
    r = instance_decode(&key, &data, &instance);
    if (r < 0)
        return r;
    MDB_val index = org_instance_key(&instance, index_buf);
    r = store_error(mdb_del(txn, store->org_instances, &index, NULL));
    if (r < 0 && r != -ENOENT)
        return r;
    r = store_error(mdb_del(txn, store->instances, &key, NULL));
    if (r < 0)
        return r;
    return txn_commit(&txn);
}

/* One org's instances, found through org_instances: a range scan from the org's prefix. */
static int instance_list_org(Store *store, MDB_txn *txn, const char org[UUID_STR_LEN],
                             StoreInstance **ret_instances, size_t *ret_count)
{
    _cleanup_free_ StoreInstance *instances = NULL;
    size_t count = 0, allocated = 0;
    MDB_val key = {.mv_size = UUID_KEY_LEN, .mv_data = (void *)org};
    MDB_val data;

    _cleanup_cursor_ MDB_cursor *cursor = NULL;
    int r = store_error(mdb_cursor_open(txn, store->org_instances, &cursor));
    if (r < 0)
        return r;

    int rc;
    for (rc = mdb_cursor_get(cursor, &key, &data, MDB_SET_RANGE); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT)) {
        if (key.mv_size < UUID_KEY_LEN || memcmp(key.mv_data, org, UUID_KEY_LEN) != 0)
            break;
        if (key.mv_size != ORG_INSTANCE_KEY_LEN)
            return -EBADMSG;

        MDB_val instance_key = {.mv_size = UUID_KEY_LEN,
                                .mv_data = (char *)key.mv_data + UUID_KEY_LEN};
        MDB_val instance_data;
        r = store_error(mdb_get(txn, store->instances, &instance_key, &instance_data));
        if (r == -ENOENT)
            return -EBADMSG; /* an index entry without its record */
        if (r < 0)
            return r;
        r = array_grow((void **)&instances, &allocated, count, sizeof(*instances));
        if (r < 0)
            return r;
        r = instance_decode(&instance_key, &instance_data, &instances[count]);
        if (r < 0)
            return r;
        /* Never hand one org another org's instance, whatever the index says. */
        if (strcmp(instances[count].org_uuid, org) != 0)
            return -EBADMSG;
        count++;
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return store_error(rc);

    *ret_instances = TAKE_PTR(instances);
    *ret_count = count;
    return 0;
}

static int instance_list_all(Store *store, MDB_txn *txn, StoreInstance **ret_instances,
                             size_t *ret_count)
{
    _cleanup_free_ StoreInstance *instances = NULL;
    size_t count = 0, allocated = 0;
    MDB_val key, data;

    _cleanup_cursor_ MDB_cursor *cursor = NULL;
    int r = store_error(mdb_cursor_open(txn, store->instances, &cursor));
    if (r < 0)
        return r;

    int rc;
    for (rc = mdb_cursor_get(cursor, &key, &data, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT)) {
        r = array_grow((void **)&instances, &allocated, count, sizeof(*instances));
        if (r < 0)
            return r;
        r = instance_decode(&key, &data, &instances[count]);
        if (r < 0)
            return r;
        count++;
    }
    if (rc != MDB_NOTFOUND)
        return store_error(rc);

    *ret_instances = TAKE_PTR(instances);
    *ret_count = count;
    return 0;
}

int store_instance_list(Store *store, const char *org_uuid, StoreInstance **ret_instances,
                        size_t *ret_count)
{
    char org[UUID_STR_LEN];
    if (org_uuid && uuid_normalize(org_uuid, org) < 0)
        return -EINVAL;

    _cleanup_txn_ MDB_txn *txn = NULL;
    int r = txn_begin(store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_free_ StoreInstance *instances = NULL;
    size_t count = 0;
    if (org_uuid)
        r = instance_list_org(store, txn, org, &instances, &count);
    else
        r = instance_list_all(store, txn, &instances, &count);
    if (r < 0)
        return r;

    if (count > 1)
        qsort(instances, count, sizeof(*instances), instance_compare);
    *ret_instances = TAKE_PTR(instances);
    *ret_count = count;
    return 0;
}
