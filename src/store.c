/*
 * LMDB key layout: the one place it is written down.
 *
 * One environment at DATA_DIR/state (data.mdb + lock.mdb), opened by legbad
 * and by legbactl, possibly at the same time. Six named databases:
 *
 *   database       key                                   value
 *   orgs           org_uuid                              {"name","created_at","quota_instances",
 *                                                         "quota_vcpus","quota_memory_mib",
 *                                                         "network"}
 *   tokens         SHA-256 of the token (32 raw bytes)   {"id","org_uuid","created_at"}
 *   token_ids      token id                              SHA-256 of the token (32 raw bytes)
 *   instances      instance_uuid                         {"org_uuid","image","size","state",
 *                                                         "created_at","updated_at",
 *                                                         "start_url","ready_at",
 *                                                         "console_hash","expires_at",
 *                                                         "vcpus","memory_mib",
 *                                                         "network","clipboard","pool"}
 *   org_instances  org_uuid ‖ instance_uuid (72 bytes)   empty
 *   idempotency    org_uuid ‖ SHA-256 hex of an           {"instance_uuid","body_hash",
 *                  Idempotency-Key (100 bytes)             "created_at"}
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
 * - An idempotency entry is written in the transaction that inserts its
 *   instance; one whose instance record is gone (a create that failed and
 *   was undone, an instance forgotten) no longer binds its key.
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
#include <stddef.h>
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
    MDB_dbi idempotency;
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

/*
 * The start of every call that reads or rewrites one record: a transaction and the value at
 * key, which points into the map and so is valid only until that transaction ends.
 */
static int txn_get(Store *store, bool write, MDB_dbi dbi, MDB_val *key, MDB_val *ret_data,
                   MDB_txn **ret_txn)
{
    _cleanup_txn_ MDB_txn *txn = NULL;
    MDB_val data;
    int r = txn_begin(store, write, &txn);
    if (r < 0)
        return r;
    r = store_error(mdb_get(txn, dbi, key, &data));
    if (r < 0)
        return r;
    *ret_data = data;
    *ret_txn = TAKE_PTR(txn);
    return 0;
}

/*
 * The start of every call that rewrites one record by its uuid: the key (held in buf), a write
 * transaction and the value at the key.
 */
static int txn_get_for_update(Store *store, MDB_dbi dbi, const char *uuid, char buf[UUID_STR_LEN],
                              MDB_val *ret_key, MDB_val *ret_data, MDB_txn **ret_txn)
{
    MDB_val key;
    int r = uuid_key(uuid, buf, &key);
    if (r < 0)
        return r;
    r = txn_get(store, true, dbi, &key, ret_data, ret_txn);
    if (r < 0)
        return r;
    *ret_key = key;
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

/*
 * Replaces a field in place (or adds it to a record written before it
 * existed), so fields this version does not know survive a rewrite.
 */
static int json_set(cJSON *json, const char *name, cJSON *item)
{
    if (!item)
        return -ENOMEM;
    bool ok = cJSON_HasObjectItem(json, name)
                  ? cJSON_ReplaceItemInObjectCaseSensitive(json, name, item)
                  : cJSON_AddItemToObject(json, name, item);
    if (!ok) {
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

/* --- records ------------------------------------------------------------------------------- */

/*
 * Orgs, tokens and instances are checked, written and read back by the same code, driven by a
 * table of each record's fields (the RecordType below), so the three cannot drift apart in how
 * a field of one kind is treated.
 */
typedef enum {
    FIELD_UUID,     /* char[UUID_STR_LEN], canonical lowercase */
    FIELD_TEXT,     /* char[size], 1 to size - 1 bytes */
    FIELD_TIME,     /* int64_t, a whole JSON number */
    FIELD_STATE,    /* InstanceState, by its name */
    FIELD_HASH,     /* uint8_t[AUTH_HASH_LEN]; only ever a key */
    FIELD_OPT_TEXT, /* char[size], 0 to size - 1 bytes; "" when absent from the value */
    FIELD_OPT_TIME, /* int64_t (a time, or any whole number); 0 when absent from the value */
} FieldType;

typedef struct {
    const char *name; /* in the JSON value; NULL for the key */
    FieldType type;
    size_t offset;
    size_t size;
} Field;

#define FIELD_AT(record, member, field_type, field_name)                                           \
    {                                                                                              \
        .name = field_name, .type = field_type, .offset = offsetof(record, member),                \
        .size = sizeof(((record *)NULL)->member),                                                  \
    }
/* A field of struct record, kept in the value under the member's own name. */
#define FIELD(record, member, field_type) FIELD_AT(record, member, field_type, #member)
/* The field of struct record that its key holds. */
#define KEY(record, member, field_type) FIELD_AT(record, member, field_type, NULL)

/* One kind of record: its struct, what its key holds and, in order, the fields of its value. */
typedef struct {
    size_t size;
    Field key;
    Field fields[24]; /* up to the first without a name: at most 23 */
} RecordType;

/* Room for a record of any type, so a copy can be built before it is handed out. */
typedef union {
    StoreOrg org;
    StoreToken token;
    StoreInstance instance;
} AnyRecord;

/* A validated copy of one field into dst; -EINVAL for a value that may not be stored. */
static int field_check(const Field *field, const void *src, void *dst)
{
    const char *from = (const char *)src + field->offset;
    char *to = (char *)dst + field->offset;
    switch (field->type) {
    case FIELD_UUID:
        return uuid_normalize(from, to) < 0 ? -EINVAL : 0;
    case FIELD_TEXT:
        if (!text_valid(from, field->size - 1))
            return -EINVAL;
        memcpy(to, from, strnlen(from, field->size - 1));
        return 0;
    case FIELD_OPT_TEXT:
        if (strnlen(from, field->size) == field->size)
            return -EINVAL;
        memcpy(to, from, strnlen(from, field->size - 1));
        return 0;
    case FIELD_STATE:
        if (!instance_state_to_string(*(const InstanceState *)from))
            return -EINVAL;
        break;
    case FIELD_TIME:
    case FIELD_OPT_TIME:
    case FIELD_HASH:
        break;
    }
    memcpy(to, from, field->size);
    return 0;
}

/* Adds one field of a checked record to its value; false when out of memory. */
static bool field_encode(const Field *field, const void *record, cJSON *json)
{
    const void *value = (const char *)record + field->offset;
    const char *state;
    switch (field->type) {
    case FIELD_UUID:
    case FIELD_TEXT:
    case FIELD_OPT_TEXT:
        return cJSON_AddStringToObject(json, field->name, value) != NULL;
    case FIELD_STATE:
        state = instance_state_to_string(*(const InstanceState *)value);
        return cJSON_AddStringToObject(json, field->name, state) != NULL;
    case FIELD_TIME:
    case FIELD_OPT_TIME:
        return cJSON_AddNumberToObject(json, field->name, (double)*(const int64_t *)value) != NULL;
    case FIELD_HASH:
        break;
    }
    return false;
}

/* One field of a record from its value; -EBADMSG when it is missing or out of range. */
static int field_decode(const Field *field, const cJSON *json, void *record)
{
    void *value = (char *)record + field->offset;
    char state[16];
    switch (field->type) {
    case FIELD_UUID:
        return json_get_uuid(json, field->name, value);
    case FIELD_TEXT:
        return json_get_string(json, field->name, value, field->size);
    case FIELD_TIME:
        return json_get_time(json, field->name, value);
    case FIELD_OPT_TEXT:
        /* Records written before the field existed simply lack it. */
        if (!cJSON_HasObjectItem(json, field->name)) {
            *(char *)value = '\0';
            return 0;
        }
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(json, field->name)))
            return -EBADMSG;
        if (cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(json, field->name))[0] == '\0') {
            *(char *)value = '\0';
            return 0;
        }
        return json_get_string(json, field->name, value, field->size);
    case FIELD_OPT_TIME:
        if (!cJSON_HasObjectItem(json, field->name)) {
            *(int64_t *)value = 0;
            return 0;
        }
        return json_get_time(json, field->name, value);
    case FIELD_STATE:
        if (json_get_string(json, field->name, state, sizeof(state)) < 0 ||
            instance_state_from_string(state, value) < 0)
            return -EBADMSG;
        return 0;
    case FIELD_HASH:
        break;
    }
    return -EBADMSG;
}

/* A uuid is kept in a key without its NUL. */
static MDB_val record_key(const RecordType *type, const void *record)
{
    size_t len = type->key.type == FIELD_UUID ? UUID_KEY_LEN : type->key.size;
    return (MDB_val){.mv_size = len, .mv_data = (void *)((const char *)record + type->key.offset)};
}

/* A validated copy with every uuid in canonical form; -EINVAL for what may not be stored. */
static int record_check(const RecordType *type, const void *record, void *ret)
{
    AnyRecord copy;
    memset(&copy, 0, sizeof(copy));
    if (!record || field_check(&type->key, record, &copy) < 0)
        return -EINVAL;
    for (const Field *field = type->fields; field->name; field++)
        if (field_check(field, record, &copy) < 0)
            return -EINVAL;
    memcpy(ret, &copy, type->size);
    return 0;
}

/* The value of a checked record: its fields other than the key. */
static int record_encode(const RecordType *type, const void *record, cJSON **ret_json)
{
    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    if (!json)
        return -ENOMEM;
    for (const Field *field = type->fields; field->name; field++)
        if (!field_encode(field, record, json))
            return -ENOMEM;
    *ret_json = TAKE_PTR(json);
    return 0;
}

/* Writes a checked record under its key; -EEXIST if the key is taken. */
static int record_put(MDB_txn *txn, MDB_dbi dbi, const RecordType *type, const void *record)
{
    _cleanup_json_ cJSON *json = NULL;
    int r = record_encode(type, record, &json);
    if (r < 0)
        return r;
    MDB_val key = record_key(type, record);
    return put_json(txn, dbi, &key, json, MDB_NOOVERWRITE);
}

/* A record from its key and parsed value; -EBADMSG unless both are what a write leaves. */
static int record_decode(const RecordType *type, const MDB_val *key, const cJSON *json, void *ret)
{
    AnyRecord record;
    memset(&record, 0, sizeof(record));
    char *key_field = (char *)&record + type->key.offset;
    if (type->key.type == FIELD_UUID) {
        if (key_to_uuid(key, key_field) < 0)
            return -EBADMSG;
    } else {
        if (key->mv_size != type->key.size)
            return -EBADMSG;
        memcpy(key_field, key->mv_data, key->mv_size);
    }
    for (const Field *field = type->fields; field->name; field++)
        if (field_decode(field, json, &record) < 0)
            return -EBADMSG;
    memcpy(ret, &record, type->size);
    return 0;
}

static int record_parse(const RecordType *type, const MDB_val *key, const MDB_val *data, void *ret)
{
    _cleanup_json_ cJSON *json = NULL;
    int r = json_parse(data, &json);
    if (r < 0)
        return r;
    return record_decode(type, key, json, ret);
}

/* One record by what identifies it: a uuid in either case, or for a token its hash. */
static int record_get(Store *store, MDB_dbi dbi, const RecordType *type, const void *id, void *ret)
{
    char uuid[UUID_STR_LEN];
    MDB_val key = {.mv_size = type->key.size, .mv_data = (void *)id}, data;
    int r = 0;
    if (type->key.type == FIELD_UUID)
        r = uuid_key(id, uuid, &key);
    else if (!id)
        r = -EINVAL;
    if (r < 0)
        return r;

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_get(store, false, dbi, &key, &data, &txn);
    if (r < 0)
        return r;
    return record_parse(type, &key, &data, ret);
}

/*
 * Finds the key of the entry linked to a record (its index entry, or the record an index entry
 * names), copied into buf: the record points into the map, which a delete may rewrite. buf has
 * room for the longest such key.
 */
typedef int (*LinkFn)(const MDB_val *key, const MDB_val *data, char buf[ORG_INSTANCE_KEY_LEN],
                      MDB_val *ret_linked);
_Static_assert(AUTH_HASH_LEN <= ORG_INSTANCE_KEY_LEN, "a token hash fits a LinkFn buffer");

/*
 * Deletes the record with this uuid and, in the same transaction, the entry linked to it,
 * which may be gone already.
 */
static int record_delete(Store *store, MDB_dbi dbi, const char *uuid, MDB_dbi linked_dbi,
                         LinkFn link)
{
    char uuid_buf[UUID_STR_LEN];
    char linked_buf[ORG_INSTANCE_KEY_LEN];
    MDB_val key, data, linked;
    _cleanup_txn_ MDB_txn *txn = NULL;
    int r = txn_get_for_update(store, dbi, uuid, uuid_buf, &key, &data, &txn);
    if (r < 0)
        return r;
    r = link(&key, &data, linked_buf, &linked);
    if (r < 0)
        return r;
    r = store_error(mdb_del(txn, linked_dbi, &linked, NULL));
    if (r < 0 && r != -ENOENT)
        return r;
    r = store_error(mdb_del(txn, dbi, &key, NULL));
    if (r < 0)
        return r;
    return txn_commit(&txn);
}

/* --- lists --------------------------------------------------------------------------------- */

/* What an entry function returns for an entry the list leaves out. */
#define SCAN_SKIP 1

typedef struct Scan Scan;
struct Scan {
    MDB_dbi dbi;
    const RecordType *type; /* of each element */
    const char *org;        /* the org a list is narrowed to, or NULL */
    bool org_range;         /* keys start with the org's uuid: read only that range */
    /*
     * Turns one entry into the element at ret (scratch space until it returns 0), or returns
     * SCAN_SKIP or a negative error. NULL when every entry is a record of type under its key.
     */
    int (*entry)(Store *store, MDB_txn *txn, const Scan *scan, const MDB_val *key,
                 const MDB_val *data, void *ret);
    int (*compare)(const void *a, const void *b); /* the order of the list; NULL keeps key order */
};

/* A list read in one transaction; *ret_items is malloc'd (NULL when none). */
static int scan_list(Store *store, const Scan *scan, void **ret_items, size_t *ret_count)
{
    _cleanup_free_ void *items = NULL;
    size_t size = scan->type->size, count = 0, allocated = 0;
    AnyRecord item;
    MDB_val key = {.mv_size = UUID_KEY_LEN, .mv_data = (void *)scan->org}; /* for MDB_SET_RANGE */
    MDB_val data;

    _cleanup_txn_ MDB_txn *txn = NULL;
    int r = txn_begin(store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_cursor_ MDB_cursor *cursor = NULL;
    r = store_error(mdb_cursor_open(txn, scan->dbi, &cursor));
    if (r < 0)
        return r;

    int rc;
    for (rc = mdb_cursor_get(cursor, &key, &data, scan->org_range ? MDB_SET_RANGE : MDB_FIRST);
         rc == MDB_SUCCESS; rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT)) {
        if (scan->org_range &&
            (key.mv_size < UUID_KEY_LEN || memcmp(key.mv_data, scan->org, UUID_KEY_LEN) != 0))
            break;
        r = scan->entry ? scan->entry(store, txn, scan, &key, &data, &item)
                        : record_parse(scan->type, &key, &data, &item);
        if (r < 0)
            return r;
        if (r == SCAN_SKIP)
            continue;
        r = array_grow(&items, &allocated, count, size);
        if (r < 0)
            return r;
        memcpy((char *)items + count++ * size, &item, size);
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return store_error(rc);

    if (scan->compare && count > 1)
        qsort(items, count, size, scan->compare);
    *ret_items = TAKE_PTR(items);
    *ret_count = count;
    return 0;
}

/* Oldest first; the uuid breaks ties, so a list comes out the same on every call. */
static int compare_age(int64_t created_a, const char *uuid_a, int64_t created_b, const char *uuid_b)
{
    if (created_a != created_b)
        return created_a < created_b ? -1 : 1;
    return strcmp(uuid_a, uuid_b);
}

static int token_compare(const void *a, const void *b)
{
    const StoreToken *x = a, *y = b;
    return compare_age(x->created_at, x->id, y->created_at, y->id);
}

static int instance_compare(const void *a, const void *b)
{
    const StoreInstance *x = a, *y = b;
    return compare_age(x->created_at, x->uuid, y->created_at, y->uuid);
}

/*
 * A change to one record in one write transaction. `change` looks at the
 * current record and either refuses (a negative errno, with the current
 * record handed back) or edits both the struct and its JSON value; only the
 * fields it touches are rewritten, so fields this version does not know
 * survive.
 */
typedef int (*RecordChange)(void *current, cJSON *json, const void *arg);

static int record_update(Store *store, MDB_dbi dbi, const RecordType *type, const char *uuid_in,
                         RecordChange change, const void *arg, void *ret_record)
{
    char uuid[UUID_STR_LEN];
    MDB_val key, data;
    _cleanup_txn_ MDB_txn *txn = NULL;
    int r = txn_get_for_update(store, dbi, uuid_in, uuid, &key, &data, &txn);
    if (r < 0)
        return r;
    _cleanup_json_ cJSON *json = NULL;
    r = json_parse(&data, &json);
    if (r < 0)
        return r;
    AnyRecord current, before;
    r = record_decode(type, &key, json, &current);
    if (r < 0)
        return r;
    before = current;
    r = change(&current, json, arg);
    if (r == -ESTALE || r == -EALREADY) {
        if (ret_record)
            memcpy(ret_record, &before, type->size);
        return r;
    }
    if (r < 0)
        return r;
    r = put_json(txn, dbi, &key, json, 0);
    if (r < 0)
        return r;
    r = txn_commit(&txn);
    if (r < 0)
        return r;
    if (ret_record)
        memcpy(ret_record, &current, type->size);
    return 0;
}

/* --- orgs ---------------------------------------------------------------------------------- */

static const RecordType org_record = {
    sizeof(StoreOrg),
    KEY(StoreOrg, uuid, FIELD_UUID),
    {FIELD(StoreOrg, name, FIELD_TEXT), FIELD(StoreOrg, created_at, FIELD_TIME),
     FIELD_AT(StoreOrg, quota.instances, FIELD_OPT_TIME, "quota_instances"),
     FIELD_AT(StoreOrg, quota.vcpus, FIELD_OPT_TIME, "quota_vcpus"),
     FIELD_AT(StoreOrg, quota.memory_mib, FIELD_OPT_TIME, "quota_memory_mib"),
     FIELD(StoreOrg, network, FIELD_OPT_TEXT)},
};

/* -ENOENT unless the org is there, as seen by this transaction. */
static int org_exists(Store *store, MDB_txn *txn, const char org_uuid[UUID_STR_LEN])
{
    MDB_val key = {.mv_size = UUID_KEY_LEN, .mv_data = (void *)org_uuid};
    MDB_val data;
    return store_error(mdb_get(txn, store->orgs, &key, &data));
}

/* --- tokens -------------------------------------------------------------------------------- */

static const RecordType token_record = {
    sizeof(StoreToken),
    KEY(StoreToken, hash, FIELD_HASH),
    {FIELD(StoreToken, id, FIELD_UUID), FIELD(StoreToken, org_uuid, FIELD_UUID),
     FIELD(StoreToken, created_at, FIELD_TIME)},
};

/* Writes both the token and its id entry; the token must be checked and its org must exist. */
static int token_put(Store *store, MDB_txn *txn, const StoreToken *token)
{
    int r = org_exists(store, txn, token->org_uuid);
    if (r < 0)
        return r;
    r = record_put(txn, store->tokens, &token_record, token);
    if (r < 0)
        return r;
    MDB_val hash = record_key(&token_record, token);
    MDB_val id = {.mv_size = UUID_KEY_LEN, .mv_data = (void *)token->id};
    return store_error(mdb_put(txn, store->token_ids, &id, &hash, MDB_NOOVERWRITE));
}

/* A checked token, and first its checked org when org is not NULL, in one transaction. */
static int token_write(Store *store, const StoreOrg *org, const StoreToken *token)
{
    _cleanup_txn_ MDB_txn *txn = NULL;
    int r = txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    if (org) {
        r = record_put(txn, store->orgs, &org_record, org);
        if (r < 0)
            return r;
    }
    r = token_put(store, txn, token);
    if (r < 0)
        return r;
    return txn_commit(&txn);
}

/* A token_ids entry holds the token's hash, the key of the token record. */
static int token_id_link(const MDB_val *key, const MDB_val *data, char buf[ORG_INSTANCE_KEY_LEN],
                         MDB_val *ret_linked)
{
    if (data->mv_size != AUTH_HASH_LEN)
        return -EBADMSG;
    memcpy(buf, data->mv_data, AUTH_HASH_LEN);
    *ret_linked = (MDB_val){.mv_size = AUTH_HASH_LEN, .mv_data = buf};
    return 0;
}

/* Tokens are few (an operator makes each by hand), so a scan is cheaper than an index. */
static int token_entry(Store *store, MDB_txn *txn, const Scan *scan, const MDB_val *key,
                       const MDB_val *data, void *ret)
{
    StoreToken *token = ret;
    int r = record_parse(&token_record, key, data, token);
    if (r < 0)
        return r;
    if (scan->org && strcmp(token->org_uuid, scan->org) != 0)
        return SCAN_SKIP;
    return 0;
}

/* --- instances ----------------------------------------------------------------------------- */

static const RecordType instance_record = {
    sizeof(StoreInstance),
    KEY(StoreInstance, uuid, FIELD_UUID),
    {FIELD(StoreInstance, org_uuid, FIELD_UUID), FIELD(StoreInstance, image, FIELD_TEXT),
     FIELD(StoreInstance, size, FIELD_TEXT), FIELD(StoreInstance, state, FIELD_STATE),
     FIELD(StoreInstance, created_at, FIELD_TIME), FIELD(StoreInstance, updated_at, FIELD_TIME),
     FIELD(StoreInstance, start_url, FIELD_OPT_TEXT),
     FIELD(StoreInstance, ready_at, FIELD_OPT_TIME),
     FIELD(StoreInstance, console_hash, FIELD_OPT_TEXT),
     FIELD(StoreInstance, expires_at, FIELD_OPT_TIME), FIELD(StoreInstance, vcpus, FIELD_OPT_TIME),
     FIELD(StoreInstance, memory_mib, FIELD_OPT_TIME),
     FIELD(StoreInstance, network, FIELD_OPT_TEXT), FIELD(StoreInstance, clipboard, FIELD_OPT_TEXT),
     FIELD(StoreInstance, pool, FIELD_OPT_TEXT)},
};

/* The org_instances key for an instance: org_uuid ‖ instance_uuid. */
static MDB_val org_instance_key(const StoreInstance *instance, char buf[ORG_INSTANCE_KEY_LEN])
{
    memcpy(buf, instance->org_uuid, UUID_KEY_LEN);
    memcpy(buf + UUID_KEY_LEN, instance->uuid, UUID_KEY_LEN);
    return (MDB_val){.mv_size = ORG_INSTANCE_KEY_LEN, .mv_data = buf};
}

/* The record names its org, which locates the index entry to delete with it. */
static int instance_link(const MDB_val *key, const MDB_val *data, char buf[ORG_INSTANCE_KEY_LEN],
                         MDB_val *ret_linked)
{
    StoreInstance instance;
    int r = record_parse(&instance_record, key, data, &instance);
    if (r < 0)
        return r;
    *ret_linked = org_instance_key(&instance, buf);
    return 0;
}

/* An org_instances entry of the org scanned: the instance record it points to. */
static int org_instance_entry(Store *store, MDB_txn *txn, const Scan *scan, const MDB_val *key,
                              const MDB_val *data, void *ret)
{
    StoreInstance *instance = ret;
    if (key->mv_size != ORG_INSTANCE_KEY_LEN)
        return -EBADMSG;

    MDB_val instance_key = {.mv_size = UUID_KEY_LEN,
                            .mv_data = (char *)key->mv_data + UUID_KEY_LEN};
    MDB_val instance_data;
    int r = store_error(mdb_get(txn, store->instances, &instance_key, &instance_data));
    if (r == -ENOENT)
        return -EBADMSG; /* an index entry without its record */
    if (r < 0)
        return r;
    r = record_parse(&instance_record, &instance_key, &instance_data, instance);
    if (r < 0)
        return r;
    /* Never hand one org another org's instance, whatever the index says. */
    if (strcmp(instance->org_uuid, scan->org) != 0)
        return -EBADMSG;
    return 0;
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

int store_generation(Store *store, uint64_t *ret_generation)
{
    MDB_envinfo info;
    int r = store_error(mdb_env_info(store->env, &info));
    if (r < 0)
        return r;
    *ret_generation = (uint64_t)info.me_last_txnid;
    return 0;
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
    /* One slot per concurrent read transaction: every HTTP connection thread may hold one. */
    r = store_error(mdb_env_set_maxreaders(store->env, STORE_MAX_READERS));
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
        {"idempotency", &store->idempotency},
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
    int r = record_check(&org_record, org, &o);
    if (r < 0)
        return r;
    r = record_check(&token_record, token, &t);
    if (r < 0)
        return r;
    if (strcmp(o.uuid, t.org_uuid) != 0)
        return -EINVAL;
    return token_write(store, &o, &t);
}

int store_org_get(Store *store, const char *org_uuid, StoreOrg *ret_org)
{
    return record_get(store, store->orgs, &org_record, org_uuid, ret_org);
}

static int change_quota(void *current, cJSON *json, const void *arg)
{
    StoreOrg *org = current;
    const StoreQuota *quota = arg;
    org->quota = *quota;
    int r = json_set(json, "quota_instances", cJSON_CreateNumber((double)quota->instances));
    if (r >= 0)
        r = json_set(json, "quota_vcpus", cJSON_CreateNumber((double)quota->vcpus));
    if (r >= 0)
        r = json_set(json, "quota_memory_mib", cJSON_CreateNumber((double)quota->memory_mib));
    return r;
}

int store_org_set_quota(Store *store, const char *org_uuid, const StoreQuota *quota,
                        StoreOrg *ret_org)
{
    if (quota->instances < 0 || quota->vcpus < 0 || quota->memory_mib < 0)
        return -EINVAL;
    return record_update(store, store->orgs, &org_record, org_uuid, change_quota, quota, ret_org);
}

static int change_network(void *current, cJSON *json, const void *arg)
{
    StoreOrg *org = current;
    snprintf(org->network, sizeof(org->network), "%s", (const char *)arg);
    return json_set(json, "network", cJSON_CreateString(org->network));
}

int store_org_set_network(Store *store, const char *org_uuid, const char *network,
                          StoreOrg *ret_org)
{
    if (strcmp(network, "") != 0 && strcmp(network, "none") != 0 && strcmp(network, "egress") != 0)
        return -EINVAL;
    return record_update(store, store->orgs, &org_record, org_uuid, change_network, network,
                         ret_org);
}

int store_org_list(Store *store, StoreOrg **ret_orgs, size_t *ret_count)
{
    const Scan scan = {.dbi = store->orgs, .type = &org_record};
    return scan_list(store, &scan, (void **)ret_orgs, ret_count);
}

/* --- tokens -------------------------------------------------------------------------------- */

int store_token_add(Store *store, const StoreToken *token)
{
    StoreToken t;
    int r = record_check(&token_record, token, &t);
    if (r < 0)
        return r;
    return token_write(store, NULL, &t);
}

int store_token_lookup(Store *store, const uint8_t hash[AUTH_HASH_LEN], StoreToken *ret_token)
{
    return record_get(store, store->tokens, &token_record, hash, ret_token);
}

int store_token_revoke(Store *store, const char *token_id)
{
    /* A token whose record is already gone can still have its id revoked. */
    return record_delete(store, store->token_ids, token_id, store->tokens, token_id_link);
}

int store_token_list(Store *store, const char *org_uuid, StoreToken **ret_tokens, size_t *ret_count)
{
    char org[UUID_STR_LEN];
    if (org_uuid && uuid_normalize(org_uuid, org) < 0)
        return -EINVAL;

    const Scan scan = {.dbi = store->tokens,
                       .type = &token_record,
                       .org = org_uuid ? org : NULL,
                       .entry = token_entry,
                       .compare = token_compare};
    return scan_list(store, &scan, (void **)ret_tokens, ret_count);
}

/* --- instances ----------------------------------------------------------------------------- */

bool store_instance_pool_ready(const StoreInstance *instance)
{
    if (strcmp(instance->pool, "warm") == 0)
        return instance->state == INSTANCE_RUNNING && instance->ready_at != 0;
    return strcmp(instance->pool, "standby") == 0 && instance->state == INSTANCE_STOPPED;
}

int store_instance_insert(Store *store, const StoreInstance *instance)
{
    return store_instance_insert_admitted(store, instance, NULL, NULL);
}

/* Sums what live instances hold, on the host and in one org, as this transaction sees them. */
typedef struct {
    int64_t host_instances, host_memory_mib;
    int64_t org_instances, org_vcpus, org_memory_mib;
} Usage;

/* Every live instance but `except` (NULL: none) counts. */
static int usage_scan(Store *store, MDB_txn *txn, const char *org_uuid, const char *except,
                      Usage *ret)
{
    Usage u = {0};
    _cleanup_cursor_ MDB_cursor *cursor = NULL;
    int r = store_error(mdb_cursor_open(txn, store->instances, &cursor));
    if (r < 0)
        return r;
    MDB_val key, data;
    int rc;
    for (rc = mdb_cursor_get(cursor, &key, &data, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT)) {
        StoreInstance in;
        r = record_parse(&instance_record, &key, &data, &in);
        if (r < 0)
            return r;
        if (in.state == INSTANCE_TERMINATED || (except && strcmp(in.uuid, except) == 0))
            continue;
        u.host_instances++;
        u.host_memory_mib += in.memory_mib;
        if (strcmp(in.org_uuid, org_uuid) == 0) {
            u.org_instances++;
            u.org_vcpus += in.vcpus;
            u.org_memory_mib += in.memory_mib;
        }
    }
    if (rc != MDB_NOTFOUND)
        return store_error(rc);
    *ret = u;
    return 0;
}

/* The first limit the new instance would break, or 0. */
static StoreRefusedBy admission_check(const StoreAdmission *a, const StoreQuota *q, const Usage *u,
                                      const StoreInstance *in, StoreRefusal *ret)
{
    const struct {
        StoreRefusedBy by;
        int64_t limit, used, adds;
    } checks[] = {
        {STORE_REFUSED_ORG_INSTANCES, q->instances, u->org_instances, 1},
        {STORE_REFUSED_ORG_VCPUS, q->vcpus, u->org_vcpus, in->vcpus},
        {STORE_REFUSED_ORG_MEMORY, q->memory_mib, u->org_memory_mib, in->memory_mib},
        {STORE_REFUSED_HOST_INSTANCES, (int64_t)a->max_instances, u->host_instances, 1},
        {STORE_REFUSED_HOST_MEMORY, a->max_memory_mib, u->host_memory_mib, in->memory_mib},
    };
    for (size_t i = 0; i < ARRAY_SIZE(checks); i++) {
        if (checks[i].limit > 0 && checks[i].used + checks[i].adds > checks[i].limit) {
            *ret = (StoreRefusal){checks[i].by, checks[i].limit, checks[i].used};
            return checks[i].by;
        }
    }
    return 0;
}

/* The idempotency key of an org's request: org_uuid ‖ the key's hash. */
static MDB_val idempotency_key(const char *org_uuid, const char *key_hash,
                               char buf[UUID_KEY_LEN + STORE_HASH_HEX_LEN])
{
    memcpy(buf, org_uuid, UUID_KEY_LEN);
    memcpy(buf + UUID_KEY_LEN, key_hash, STORE_HASH_HEX_LEN);
    return (MDB_val){.mv_size = UUID_KEY_LEN + STORE_HASH_HEX_LEN, .mv_data = buf};
}

/*
 * Binds the key to the instance being inserted, unless it is bound to an
 * instance that still has a record: then -EEXIST with that instance.
 */
static int idempotency_claim(Store *store, MDB_txn *txn, const StoreInstance *in,
                             const StoreInsertOptions *options, StoreInsertResult *ret)
{
    char buf[UUID_KEY_LEN + STORE_HASH_HEX_LEN];
    MDB_val key = idempotency_key(in->org_uuid, options->idempotency_key, buf), data;
    int r = store_error(mdb_get(txn, store->idempotency, &key, &data));
    if (r == 0) {
        _cleanup_json_ cJSON *json = NULL;
        char uuid[UUID_STR_LEN], body[STORE_HASH_HEX_LEN + 1];
        r = json_parse(&data, &json);
        if (r < 0 || json_get_uuid(json, "instance_uuid", uuid) < 0 ||
            json_get_string(json, "body_hash", body, sizeof(body)) < 0)
            return -EBADMSG;
        MDB_val instance_key = {.mv_size = UUID_KEY_LEN, .mv_data = uuid}, instance_data;
        r = store_error(mdb_get(txn, store->instances, &instance_key, &instance_data));
        if (r == 0) {
            if (ret) {
                memcpy(ret->existing_uuid, uuid, UUID_STR_LEN);
                ret->same_body = strcmp(body, options->body_hash) == 0;
            }
            return -EEXIST;
        }
        if (r != -ENOENT)
            return r;
    } else if (r != -ENOENT) {
        return r;
    }
    _cleanup_json_ cJSON *json = cJSON_CreateObject();
    if (!json || !cJSON_AddStringToObject(json, "instance_uuid", in->uuid) ||
        !cJSON_AddStringToObject(json, "body_hash", options->body_hash) ||
        !cJSON_AddNumberToObject(json, "created_at", (double)in->created_at))
        return -ENOMEM;
    return put_json(txn, store->idempotency, &key, json, 0);
}

int store_idempotency_expire(Store *store, int64_t before)
{
    _cleanup_txn_ MDB_txn *txn = NULL;
    int r = txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_cursor_ MDB_cursor *cursor = NULL;
    r = store_error(mdb_cursor_open(txn, store->idempotency, &cursor));
    if (r < 0)
        return r;
    MDB_val key, data;
    int rc, removed = 0;
    for (rc = mdb_cursor_get(cursor, &key, &data, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT)) {
        _cleanup_json_ cJSON *json = NULL;
        int64_t created;
        if (json_parse(&data, &json) < 0 || json_get_time(json, "created_at", &created) < 0 ||
            created < before) {
            r = store_error(mdb_cursor_del(cursor, 0));
            if (r < 0)
                return r;
            removed++;
        }
    }
    if (rc != MDB_NOTFOUND)
        return store_error(rc);
    /* A write transaction frees its cursors when it commits: this one goes first. */
    mdb_cursor_close(TAKE_PTR(cursor));
    r = txn_commit(&txn);
    return r < 0 ? r : removed;
}

/*
 * For take_pooled: the pool instance must still wait in the pool, in the
 * expected state; its index entry under the pool org goes.
 */
static int pool_release(Store *store, MDB_txn *txn, const StoreInstance *in, InstanceState expected)
{
    StoreInstance pooled;
    MDB_val key = record_key(&instance_record, in), data;
    int r = store_error(mdb_get(txn, store->instances, &key, &data));
    if (r == -ENOENT)
        return -ESTALE;
    if (r < 0)
        return r;
    r = record_parse(&instance_record, &key, &data, &pooled);
    if (r < 0)
        return r;
    if (!pooled.pool[0] || pooled.state != expected || strcmp(pooled.image, in->image) != 0 ||
        strcmp(pooled.size, in->size) != 0)
        return -ESTALE;
    char buf[ORG_INSTANCE_KEY_LEN];
    MDB_val index = org_instance_key(&pooled, buf);
    return store_error(mdb_del(txn, store->org_instances, &index, NULL));
}

int store_instance_insert_admitted(Store *store, const StoreInstance *instance,
                                   const StoreInsertOptions *options, StoreInsertResult *ret_result)
{
    const StoreAdmission *admission = options ? options->admission : NULL;
    bool pool = options && options->pool, take = options && options->take_pooled;
    if (options && options->idempotency_key &&
        (strlen(options->idempotency_key) != STORE_HASH_HEX_LEN || !options->body_hash ||
         strlen(options->body_hash) != STORE_HASH_HEX_LEN))
        return -EINVAL;
    StoreInstance in;
    char index_buf[ORG_INSTANCE_KEY_LEN];
    int r = record_check(&instance_record, instance, &in);
    if (r < 0)
        return r;
    /* Only the pool's own inserts are of the pool org, and they are in the pool. */
    if ((pool && (take || strcmp(in.org_uuid, STORE_POOL_ORG) != 0 || !in.pool[0])) ||
        (!pool && (in.pool[0] || strcmp(in.org_uuid, STORE_POOL_ORG) == 0)))
        return -EINVAL;
    _cleanup_json_ cJSON *json = NULL;
    r = record_encode(&instance_record, &in, &json);
    if (r < 0)
        return r;

    _cleanup_txn_ MDB_txn *txn = NULL;
    r = txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    /* The pool has no org record, and no quota: only the host's limits apply to it. */
    StoreOrg org = {0};
    if (!pool) {
        MDB_val org_key = {.mv_size = UUID_KEY_LEN, .mv_data = in.org_uuid}, org_data;
        r = store_error(mdb_get(txn, store->orgs, &org_key, &org_data));
        if (r < 0)
            return r;
        r = record_parse(&org_record, &org_key, &org_data, &org);
        if (r < 0)
            return r;
    }
    /* A retried request finds its instance even when the limits are reached meanwhile. */
    if (options && options->idempotency_key) {
        r = idempotency_claim(store, txn, &in, options, ret_result);
        if (r < 0)
            return r;
    }
    if (take) {
        r = pool_release(store, txn, &in, options->pool_state);
        if (r < 0)
            return r;
    }
    if (admission) {
        /* Counted inside the write transaction, so concurrent creates cannot overshoot. */
        Usage usage;
        StoreRefusal refusal;
        r = usage_scan(store, txn, in.org_uuid, take ? in.uuid : NULL, &usage);
        if (r < 0)
            return r;
        if (admission_check(admission, &org.quota, &usage, &in, &refusal)) {
            if (ret_result)
                ret_result->refusal = refusal;
            return -EDQUOT;
        }
    }
    MDB_val key = record_key(&instance_record, &in);
    r = put_json(txn, store->instances, &key, json, take ? 0 : MDB_NOOVERWRITE);
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
    return record_get(store, store->instances, &instance_record, instance_uuid, ret_instance);
}

typedef int (*InstanceChange)(StoreInstance *current, cJSON *json, const void *arg);

static int instance_update(Store *store, const char *instance_uuid, InstanceChange change,
                           const void *arg, StoreInstance *ret_instance)
{
    return record_update(store, store->instances, &instance_record, instance_uuid,
                         (RecordChange)change, arg, ret_instance);
}

typedef struct {
    InstanceState expected, next;
} Transition;

static int change_state(StoreInstance *current, cJSON *json, const void *arg)
{
    const Transition *t = arg;
    if (current->state != t->expected)
        return -ESTALE;
    current->state = t->next;
    current->updated_at = (int64_t)time(NULL);
    int r = json_set(json, "state", cJSON_CreateString(instance_state_to_string(t->next)));
    if (r < 0)
        return r;
    return json_set(json, "updated_at", cJSON_CreateNumber((double)current->updated_at));
}

int store_instance_transition(Store *store, const char *instance_uuid, InstanceState expected,
                              InstanceState next, StoreInstance *ret_instance)
{
    if (!instance_state_to_string(expected) || !instance_state_to_string(next))
        return -EINVAL;
    Transition t = {.expected = expected, .next = next};
    return instance_update(store, instance_uuid, change_state, &t, ret_instance);
}

static int change_ready(StoreInstance *current, cJSON *json, const void *arg)
{
    int64_t ready_at = *(const int64_t *)arg;
    if (current->ready_at != 0)
        return -EALREADY;
    current->ready_at = ready_at;
    return json_set(json, "ready_at", cJSON_CreateNumber((double)ready_at));
}

int store_instance_set_ready(Store *store, const char *instance_uuid, int64_t ready_at,
                             StoreInstance *ret_instance)
{
    if (ready_at <= 0)
        return -EINVAL;
    return instance_update(store, instance_uuid, change_ready, &ready_at, ret_instance);
}

static int change_console_hash(StoreInstance *current, cJSON *json, const void *arg)
{
    const char *hash = arg;
    if (current->state != INSTANCE_RUNNING && current->state != INSTANCE_STOPPED)
        return -ESTALE;
    snprintf(current->console_hash, sizeof(current->console_hash), "%s", hash);
    return json_set(json, "console_hash", cJSON_CreateString(hash));
}

int store_instance_set_console_hash(Store *store, const char *instance_uuid,
                                    const char hash[STORE_CONSOLE_HASH_LEN],
                                    StoreInstance *ret_instance)
{
    if (strlen(hash) != STORE_CONSOLE_HASH_LEN - 1 ||
        strspn(hash, "0123456789abcdef") != STORE_CONSOLE_HASH_LEN - 1)
        return -EINVAL;
    return instance_update(store, instance_uuid, change_console_hash, hash, ret_instance);
}

static int change_expiry(StoreInstance *current, cJSON *json, const void *arg)
{
    int64_t expires_at = *(const int64_t *)arg;
    if (current->state != INSTANCE_RUNNING && current->state != INSTANCE_STOPPED)
        return -ESTALE;
    current->expires_at = expires_at;
    return json_set(json, "expires_at", cJSON_CreateNumber((double)expires_at));
}

int store_instance_set_expiry(Store *store, const char *instance_uuid, int64_t expires_at,
                              StoreInstance *ret_instance)
{
    if (expires_at < 0)
        return -EINVAL;
    return instance_update(store, instance_uuid, change_expiry, &expires_at, ret_instance);
}

static int change_unready(StoreInstance *current, cJSON *json, const void *arg)
{
    current->ready_at = 0;
    return json_set(json, "ready_at", cJSON_CreateNumber(0));
}

int store_instance_clear_ready(Store *store, const char *instance_uuid)
{
    return instance_update(store, instance_uuid, change_unready, NULL, NULL);
}

int store_instance_delete(Store *store, const char *instance_uuid)
{
    return record_delete(store, store->instances, instance_uuid, store->org_instances,
                         instance_link);
}

int store_instance_list(Store *store, const char *org_uuid, StoreInstance **ret_instances,
                        size_t *ret_count)
{
    char org[UUID_STR_LEN];
    if (org_uuid && uuid_normalize(org_uuid, org) < 0)
        return -EINVAL;

    /* One org's instances are found through org_instances: a range scan from the org's prefix. */
    const Scan scan = org_uuid ? (Scan){.dbi = store->org_instances,
                                        .type = &instance_record,
                                        .org = org,
                                        .org_range = true,
                                        .entry = org_instance_entry,
                                        .compare = instance_compare}
                               : (Scan){.dbi = store->instances,
                                        .type = &instance_record,
                                        .compare = instance_compare};
    return scan_list(store, &scan, (void **)ret_instances, ret_count);
}
