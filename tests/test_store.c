/*
 * store: the LMDB record of orgs, tokens and instances, exercised on a real
 * environment in a fresh temporary directory per test. Corrupt records are
 * written with the LMDB API directly, behind the store's back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "store.h"
#include "util.h"
#include "uuid.h"

/* Neighbouring uuids, so a per-org range scan that overran its prefix would show. */
#define ORG_A "0a000000-0000-4000-8000-000000000001"
#define ORG_B "0a000000-0000-4000-8000-000000000002"
#define ORG_C "0a000000-0000-4000-8000-000000000003"
#define ORG_MISSING "0a000000-0000-4000-8000-0000000000ff"
#define INST_1 "1b000000-0000-4000-8000-000000000001"
#define INST_2 "1b000000-0000-4000-8000-000000000002"
#define INST_3 "1b000000-0000-4000-8000-000000000003"
#define INST_4 "1b000000-0000-4000-8000-000000000004"
#define INST_MISSING "1b000000-0000-4000-8000-0000000000ff"

typedef struct {
    char dir[64];
    Store *store;
} Fixture;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_store.XXXXXX");
    if (!mkdtemp(f->dir) || store_open(f->dir, 0, &f->store) < 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    store_close(f->store);
    int r = nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return r;
}

/* Closes and opens the environment again: what a restart of legbad does. */
static void reopen(Fixture *f)
{
    store_close(f->store);
    f->store = NULL;
    assert_int_equal(store_open(f->dir, 0, &f->store), 0);
}

/* --- raw LMDB access; only while the store is closed (one env per process) ---------------- */

static MDB_env *raw_open(const char *dir, const char *db, MDB_txn **ret_txn, MDB_dbi *ret_dbi)
{
    char path[128];
    MDB_env *env;
    snprintf(path, sizeof(path), "%s/state", dir);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, ret_txn), 0);
    assert_int_equal(mdb_dbi_open(*ret_txn, db, 0, ret_dbi), 0);
    return env;
}

static void raw_put(Fixture *f, const char *db, const void *key, size_t key_len, const void *value,
                    size_t value_len)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    store_close(f->store);
    f->store = NULL;
    MDB_env *env = raw_open(f->dir, db, &txn, &dbi);
    MDB_val k = {.mv_size = key_len, .mv_data = (void *)key};
    MDB_val v = {.mv_size = value_len, .mv_data = (void *)value};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    reopen(f);
}

/* The raw value as a NUL-terminated string; the caller frees it. */
static char *raw_get(Fixture *f, const char *db, const void *key, size_t key_len)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    store_close(f->store);
    f->store = NULL;
    MDB_env *env = raw_open(f->dir, db, &txn, &dbi);
    MDB_val k = {.mv_size = key_len, .mv_data = (void *)key};
    MDB_val v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    char *copy = strndup(v.mv_data, v.mv_size);
    assert_non_null(copy);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    reopen(f);
    return copy;
}

/* --- helpers ----------------------------------------------------------------------------- */

static StoreToken new_token(const char *org_uuid, int64_t created_at)
{
    StoreToken token = {.created_at = created_at};
    char secret[AUTH_TOKEN_STR_LEN];
    assert_int_equal(uuid_generate(token.id), 0);
    snprintf(token.org_uuid, sizeof(token.org_uuid), "%s", org_uuid);
    assert_int_equal(auth_token_generate(secret, token.hash), 0);
    return token;
}

static StoreOrg new_org(const char *uuid, const char *name, int64_t created_at)
{
    StoreOrg org = {.created_at = created_at};
    snprintf(org.uuid, sizeof(org.uuid), "%s", uuid);
    snprintf(org.name, sizeof(org.name), "%s", name);
    return org;
}

/* An org with its first token, which *ret_token (may be NULL) receives. */
static void create_org(Store *store, const char *uuid, const char *name, StoreToken *ret_token)
{
    StoreOrg org = new_org(uuid, name, 1700000000);
    StoreToken token = new_token(uuid, 1700000000);
    assert_int_equal(store_org_create(store, &org, &token), 0);
    if (ret_token)
        *ret_token = token;
}

static StoreInstance new_instance(const char *uuid, const char *org_uuid, int64_t created_at)
{
    StoreInstance instance = {
        .state = INSTANCE_CREATING,
        .created_at = created_at,
        .updated_at = created_at,
    };
    snprintf(instance.uuid, sizeof(instance.uuid), "%s", uuid);
    snprintf(instance.org_uuid, sizeof(instance.org_uuid), "%s", org_uuid);
    snprintf(instance.image, sizeof(instance.image), "chromium");
    snprintf(instance.size, sizeof(instance.size), "small");
    return instance;
}

static void insert_instance(Store *store, const char *uuid, const char *org_uuid,
                            int64_t created_at)
{
    StoreInstance instance = new_instance(uuid, org_uuid, created_at);
    assert_int_equal(store_instance_insert(store, &instance), 0);
}

static void assert_instance_equal(const StoreInstance *a, const StoreInstance *b)
{
    assert_string_equal(a->uuid, b->uuid);
    assert_string_equal(a->org_uuid, b->org_uuid);
    assert_string_equal(a->image, b->image);
    assert_string_equal(a->size, b->size);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->created_at, b->created_at);
    assert_int_equal(a->updated_at, b->updated_at);
}

/* --- states and the environment ---------------------------------------------------------- */

static void test_state_names(void **state)
{
    static const char *const names[] = {"creating", "running", "stopped", "deleting", "terminated"};
    assert_int_equal(ARRAY_SIZE(names), _INSTANCE_STATE_MAX);
    for (int i = 0; i < _INSTANCE_STATE_MAX; i++) {
        InstanceState s = _INSTANCE_STATE_MAX;
        assert_string_equal(instance_state_to_string((InstanceState)i), names[i]);
        assert_int_equal(instance_state_from_string(names[i], &s), 0);
        assert_int_equal(s, i);
    }
    InstanceState s = INSTANCE_STOPPED;
    assert_null(instance_state_to_string(_INSTANCE_STATE_MAX));
    assert_null(instance_state_to_string((InstanceState)-1));
    assert_int_equal(instance_state_from_string("Running", &s), -EINVAL);
    assert_int_equal(instance_state_from_string("", &s), -EINVAL);
    assert_int_equal(instance_state_from_string(NULL, &s), -EINVAL);
    assert_int_equal(s, INSTANCE_STOPPED);
}

static void test_open_creates_private_dir(void **state)
{
    Fixture *f = *state;
    char path[128];
    struct stat st;

    snprintf(path, sizeof(path), "%s/state", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);

    /* A data dir below a regular file cannot be created; the error comes back, not a crash. */
    char file[128], below[160];
    snprintf(file, sizeof(file), "%s/file", f->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(below, sizeof(below), "%s/data", file);
    Store *store = (Store *)0x1;
    assert_int_equal(store_open(below, 0, &store), -ENOTDIR);
    assert_ptr_equal(store, (Store *)0x1);
    assert_int_equal(store_open("", 0, &store), -EINVAL);

    store_close(NULL);
}

/* --- orgs -------------------------------------------------------------------------------- */

static void test_org_create_get(void **state)
{
    Fixture *f = *state;
    StoreOrg org = new_org(ORG_A, "Acme Sécurité", 1736510400);
    StoreToken token = new_token(ORG_A, 1736510400);
    StoreOrg got;

    assert_int_equal(store_org_create(f->store, &org, &token), 0);
    assert_int_equal(store_org_get(f->store, ORG_A, &got), 0);
    assert_string_equal(got.uuid, ORG_A);
    assert_string_equal(got.name, "Acme Sécurité");
    assert_int_equal(got.created_at, 1736510400);

    /* The first token went in with the org. */
    StoreToken found;
    assert_int_equal(store_token_lookup(f->store, token.hash, &found), 0);
    assert_string_equal(found.id, token.id);
    assert_string_equal(found.org_uuid, ORG_A);

    /* Uuids are keys in one case only: upper case finds the same org. */
    char upper[UUID_STR_LEN];
    for (size_t i = 0; i < sizeof(upper); i++)
        upper[i] = (char)((ORG_A[i] >= 'a' && ORG_A[i] <= 'f') ? ORG_A[i] - 32 : ORG_A[i]);
    assert_int_equal(store_org_get(f->store, upper, &got), 0);
    assert_string_equal(got.uuid, ORG_A);
}

static void test_org_get_missing_leaves_output(void **state)
{
    Fixture *f = *state;
    StoreOrg got, before;
    memset(&got, 0xab, sizeof(got));
    before = got;

    assert_int_equal(store_org_get(f->store, ORG_MISSING, &got), -ENOENT);
    assert_int_equal(store_org_get(f->store, "not-a-uuid", &got), -EINVAL);
    assert_int_equal(store_org_get(f->store, NULL, &got), -EINVAL);
    assert_memory_equal(&got, &before, sizeof(got));
}

static void test_org_duplicate_is_atomic(void **state)
{
    Fixture *f = *state;
    StoreToken first;
    create_org(f->store, ORG_A, "first", &first);

    StoreOrg again = new_org(ORG_A, "second", 1700000100);
    StoreToken second = new_token(ORG_A, 1700000100);
    assert_int_equal(store_org_create(f->store, &again, &second), -EEXIST);

    /* Neither half of the failed create is left behind. */
    StoreOrg got;
    StoreToken found;
    assert_int_equal(store_org_get(f->store, ORG_A, &got), 0);
    assert_string_equal(got.name, "first");
    assert_int_equal(store_token_lookup(f->store, second.hash, &found), -ENOENT);
    assert_int_equal(store_token_revoke(f->store, second.id), -ENOENT);
    assert_int_equal(store_token_lookup(f->store, first.hash, &found), 0);

    /* A new org whose token collides with one already stored: the org is not created. */
    StoreOrg org_b = new_org(ORG_B, "b", 1);
    StoreToken clash = new_token(ORG_B, 1);
    memcpy(clash.id, first.id, UUID_STR_LEN);
    assert_int_equal(store_org_create(f->store, &org_b, &clash), -EEXIST);
    assert_int_equal(store_org_get(f->store, ORG_B, &got), -ENOENT);
    clash = new_token(ORG_B, 1);
    memcpy(clash.hash, first.hash, AUTH_HASH_LEN);
    assert_int_equal(store_org_create(f->store, &org_b, &clash), -EEXIST);
    assert_int_equal(store_org_get(f->store, ORG_B, &got), -ENOENT);
    assert_int_equal(store_token_lookup(f->store, first.hash, &found), 0);
    assert_string_equal(found.org_uuid, ORG_A);
}

static void test_org_list_ordered_by_uuid(void **state)
{
    Fixture *f = *state;
    StoreOrg *orgs = (StoreOrg *)0x1;
    size_t count = 99;

    assert_int_equal(store_org_list(f->store, &orgs, &count), 0);
    assert_null(orgs);
    assert_int_equal(count, 0);

    create_org(f->store, ORG_C, "gamma", NULL);
    create_org(f->store, ORG_A, "alpha", NULL);
    create_org(f->store, ORG_B, "beta", NULL);
    assert_int_equal(store_org_list(f->store, &orgs, &count), 0);
    assert_int_equal(count, 3);
    assert_string_equal(orgs[0].uuid, ORG_A);
    assert_string_equal(orgs[0].name, "alpha");
    assert_string_equal(orgs[1].uuid, ORG_B);
    assert_string_equal(orgs[2].uuid, ORG_C);
    assert_string_equal(orgs[2].name, "gamma");
    free(orgs);
}

static void test_org_rejects_invalid_input(void **state)
{
    Fixture *f = *state;
    StoreToken token = new_token(ORG_A, 1);
    StoreOrg org;

    org = new_org("0a000000-0000-4000-8000-00000000000", "short uuid", 1);
    assert_int_equal(store_org_create(f->store, &org, &token), -EINVAL);
    org = new_org(ORG_A, "", 1);
    assert_int_equal(store_org_create(f->store, &org, &token), -EINVAL);

    /* 64 bytes is the limit; a name filling all 65 bytes has no terminator at all. */
    org = new_org(ORG_A, "", 1);
    memset(org.name, 'x', sizeof(org.name));
    assert_int_equal(store_org_create(f->store, &org, &token), -EINVAL);
    org.name[STORE_ORG_NAME_MAX] = '\0';
    StoreToken other = new_token(ORG_B, 1);
    /* The first token must belong to the org it comes with. */
    assert_int_equal(store_org_create(f->store, &org, &other), -EINVAL);
    snprintf(token.id, sizeof(token.id), "not a uuid");
    assert_int_equal(store_org_create(f->store, &org, &token), -EINVAL);
    assert_int_equal(store_org_create(f->store, NULL, &token), -EINVAL);

    StoreOrg *orgs = NULL;
    size_t count = 0;
    assert_int_equal(store_org_list(f->store, &orgs, &count), 0);
    assert_int_equal(count, 0);

    token = new_token(ORG_A, 1);
    assert_int_equal(store_org_create(f->store, &org, &token), 0);
    StoreOrg got;
    assert_int_equal(store_org_get(f->store, ORG_A, &got), 0);
    assert_int_equal(strlen(got.name), STORE_ORG_NAME_MAX);
}

/* --- tokens ------------------------------------------------------------------------------ */

static void test_token_add_lookup(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);
    StoreToken token = new_token(ORG_A, 1736510400);
    StoreToken found;

    assert_int_equal(store_token_add(f->store, &token), 0);
    assert_int_equal(store_token_lookup(f->store, token.hash, &found), 0);
    assert_string_equal(found.id, token.id);
    assert_string_equal(found.org_uuid, ORG_A);
    assert_memory_equal(found.hash, token.hash, AUTH_HASH_LEN);
    assert_int_equal(found.created_at, 1736510400);

    /* A hash or an id already taken is refused, and nothing else changes. */
    StoreToken same_hash = new_token(ORG_A, 1);
    memcpy(same_hash.hash, token.hash, AUTH_HASH_LEN);
    assert_int_equal(store_token_add(f->store, &same_hash), -EEXIST);
    StoreToken same_id = new_token(ORG_A, 1);
    memcpy(same_id.id, token.id, UUID_STR_LEN);
    assert_int_equal(store_token_add(f->store, &same_id), -EEXIST);
    assert_int_equal(store_token_lookup(f->store, same_id.hash, &found), -ENOENT);

    uint8_t unknown[AUTH_HASH_LEN] = {0};
    memset(&found, 0xab, sizeof(found));
    StoreToken before = found;
    assert_int_equal(store_token_lookup(f->store, unknown, &found), -ENOENT);
    assert_memory_equal(&found, &before, sizeof(found));
}

static void test_token_add_missing_org(void **state)
{
    Fixture *f = *state;
    StoreToken token = new_token(ORG_MISSING, 1);
    StoreToken found;

    assert_int_equal(store_token_add(f->store, &token), -ENOENT);
    assert_int_equal(store_token_lookup(f->store, token.hash, &found), -ENOENT);
    snprintf(token.org_uuid, sizeof(token.org_uuid), "nope");
    assert_int_equal(store_token_add(f->store, &token), -EINVAL);
}

static void test_token_revoke(void **state)
{
    Fixture *f = *state;
    StoreToken first, second = new_token(ORG_A, 2);
    StoreToken found;
    create_org(f->store, ORG_A, "a", &first);
    assert_int_equal(store_token_add(f->store, &second), 0);

    assert_int_equal(store_token_revoke(f->store, first.id), 0);
    assert_int_equal(store_token_lookup(f->store, first.hash, &found), -ENOENT);
    /* The id entry went too, so a second revoke finds nothing. */
    assert_int_equal(store_token_revoke(f->store, first.id), -ENOENT);
    assert_int_equal(store_token_lookup(f->store, second.hash, &found), 0);

    StoreToken *tokens = NULL;
    size_t count = 0;
    assert_int_equal(store_token_list(f->store, NULL, &tokens, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(tokens[0].id, second.id);
    free(tokens);

    assert_int_equal(store_token_revoke(f->store, "1b000000-0000-4000-8000-00000000ffff"), -ENOENT);
    assert_int_equal(store_token_revoke(f->store, "garbage"), -EINVAL);
    assert_int_equal(store_token_revoke(f->store, NULL), -EINVAL);
}

static void test_token_list_by_org_and_all(void **state)
{
    Fixture *f = *state;
    StoreToken a1, b1;
    StoreToken *tokens = (StoreToken *)0x1;
    size_t count = 99;

    create_org(f->store, ORG_C, "c", NULL);
    /* Org C's only token revoked: an org with no tokens lists as empty. */
    assert_int_equal(store_token_list(f->store, ORG_C, &tokens, &count), 0);
    assert_int_equal(count, 1);
    assert_int_equal(store_token_revoke(f->store, tokens[0].id), 0);
    free(tokens);
    tokens = (StoreToken *)0x1;
    assert_int_equal(store_token_list(f->store, ORG_C, &tokens, &count), 0);
    assert_null(tokens);
    assert_int_equal(count, 0);

    create_org(f->store, ORG_A, "a", &a1); /* created_at 1700000000 */
    create_org(f->store, ORG_B, "b", &b1);
    StoreToken a0 = new_token(ORG_A, 1600000000);
    StoreToken a2 = new_token(ORG_A, 1800000000);
    assert_int_equal(store_token_add(f->store, &a2), 0);
    assert_int_equal(store_token_add(f->store, &a0), 0);

    assert_int_equal(store_token_list(f->store, ORG_A, &tokens, &count), 0);
    assert_int_equal(count, 3);
    /* Oldest first. */
    assert_string_equal(tokens[0].id, a0.id);
    assert_string_equal(tokens[1].id, a1.id);
    assert_string_equal(tokens[2].id, a2.id);
    for (size_t i = 0; i < count; i++)
        assert_string_equal(tokens[i].org_uuid, ORG_A);
    assert_memory_equal(tokens[1].hash, a1.hash, AUTH_HASH_LEN);
    free(tokens);

    assert_int_equal(store_token_list(f->store, ORG_B, &tokens, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(tokens[0].id, b1.id);
    free(tokens);

    assert_int_equal(store_token_list(f->store, NULL, &tokens, &count), 0);
    assert_int_equal(count, 4);
    size_t in_a = 0, in_b = 0;
    for (size_t i = 0; i < count; i++) {
        in_a += strcmp(tokens[i].org_uuid, ORG_A) == 0;
        in_b += strcmp(tokens[i].org_uuid, ORG_B) == 0;
    }
    assert_int_equal(in_a, 3);
    assert_int_equal(in_b, 1);
    free(tokens);

    assert_int_equal(store_token_list(f->store, "bad", &tokens, &count), -EINVAL);
}

/* --- instances --------------------------------------------------------------------------- */

static void test_instance_insert_get(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);
    StoreInstance instance = new_instance(INST_1, ORG_A, 1736510400);
    instance.state = INSTANCE_RUNNING;
    instance.updated_at = 1736510500;
    snprintf(instance.size, sizeof(instance.size), "large");
    StoreInstance got;

    assert_int_equal(store_instance_insert(f->store, &instance), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_instance_equal(&got, &instance);

    memset(&got, 0xab, sizeof(got));
    StoreInstance before = got;
    assert_int_equal(store_instance_get(f->store, INST_MISSING, &got), -ENOENT);
    assert_int_equal(store_instance_get(f->store, "x", &got), -EINVAL);
    assert_memory_equal(&got, &before, sizeof(got));
}

static void test_instance_insert_errors(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);
    create_org(f->store, ORG_B, "b", NULL);
    StoreInstance instance = new_instance(INST_1, ORG_A, 1);

    assert_int_equal(store_instance_insert(f->store, &instance), 0);
    assert_int_equal(store_instance_insert(f->store, &instance), -EEXIST);
    /* The same uuid under another org is still taken, and leaves no index entry behind. */
    StoreInstance elsewhere = new_instance(INST_1, ORG_B, 1);
    assert_int_equal(store_instance_insert(f->store, &elsewhere), -EEXIST);
    StoreInstance *list = NULL;
    size_t count = 0;
    assert_int_equal(store_instance_list(f->store, ORG_B, &list, &count), 0);
    assert_int_equal(count, 0);

    StoreInstance orphan = new_instance(INST_2, ORG_MISSING, 1);
    assert_int_equal(store_instance_insert(f->store, &orphan), -ENOENT);
    StoreInstance got;
    assert_int_equal(store_instance_get(f->store, INST_2, &got), -ENOENT);

    StoreInstance bad = new_instance(INST_3, ORG_A, 1);
    memset(bad.image, 'i', sizeof(bad.image)); /* 65 bytes, no terminator */
    assert_int_equal(store_instance_insert(f->store, &bad), -EINVAL);
    bad.image[STORE_IMAGE_NAME_MAX] = '\0'; /* 64: fine */
    memset(bad.size, 's', sizeof(bad.size));
    assert_int_equal(store_instance_insert(f->store, &bad), -EINVAL);
    bad = new_instance(INST_3, ORG_A, 1);
    bad.size[0] = '\0';
    assert_int_equal(store_instance_insert(f->store, &bad), -EINVAL);
    bad = new_instance(INST_3, ORG_A, 1);
    bad.state = _INSTANCE_STATE_MAX;
    assert_int_equal(store_instance_insert(f->store, &bad), -EINVAL);
    bad = new_instance(INST_3, "0a000000-0000-4000-8000-00000000000g", 1);
    assert_int_equal(store_instance_insert(f->store, &bad), -EINVAL);
    assert_int_equal(store_instance_insert(f->store, NULL), -EINVAL);
    assert_int_equal(store_instance_get(f->store, INST_3, &got), -ENOENT);

    bad = new_instance(INST_3, ORG_A, 1);
    memset(bad.image, 'i', STORE_IMAGE_NAME_MAX);
    bad.image[STORE_IMAGE_NAME_MAX] = '\0';
    memset(bad.size, 's', STORE_SIZE_NAME_MAX);
    bad.size[STORE_SIZE_NAME_MAX] = '\0';
    assert_int_equal(store_instance_insert(f->store, &bad), 0);
    assert_int_equal(store_instance_get(f->store, INST_3, &got), 0);
    assert_instance_equal(&got, &bad);
}

static void test_instance_list_isolated_per_org(void **state)
{
    Fixture *f = *state;
    StoreInstance *list = (StoreInstance *)0x1;
    size_t count = 99;

    create_org(f->store, ORG_A, "a", NULL);
    create_org(f->store, ORG_B, "b", NULL);
    create_org(f->store, ORG_C, "c", NULL);
    insert_instance(f->store, INST_1, ORG_A, 10);
    insert_instance(f->store, INST_2, ORG_B, 20);
    insert_instance(f->store, INST_3, ORG_A, 30);
    insert_instance(f->store, INST_4, ORG_C, 40);

    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), 0);
    assert_int_equal(count, 2);
    assert_string_equal(list[0].uuid, INST_1);
    assert_string_equal(list[1].uuid, INST_3);
    assert_string_equal(list[0].org_uuid, ORG_A);
    assert_string_equal(list[1].org_uuid, ORG_A);
    free(list);

    assert_int_equal(store_instance_list(f->store, ORG_B, &list, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(list[0].uuid, INST_2);
    free(list);

    assert_int_equal(store_instance_list(f->store, ORG_C, &list, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(list[0].uuid, INST_4);
    free(list);

    /* An org with nothing (or no org at all): NULL, 0. */
    list = (StoreInstance *)0x1;
    assert_int_equal(store_instance_list(f->store, ORG_MISSING, &list, &count), 0);
    assert_null(list);
    assert_int_equal(count, 0);

    assert_int_equal(store_instance_list(f->store, NULL, &list, &count), 0);
    assert_int_equal(count, 4);
    assert_string_equal(list[0].uuid, INST_1);
    assert_string_equal(list[1].uuid, INST_2);
    assert_string_equal(list[2].uuid, INST_3);
    assert_string_equal(list[3].uuid, INST_4);
    free(list);

    assert_int_equal(store_instance_list(f->store, "nope", &list, &count), -EINVAL);
}

static void test_instance_list_order(void **state)
{
    Fixture *f = *state;
    StoreInstance *list = NULL;
    size_t count = 0;

    create_org(f->store, ORG_A, "a", NULL);
    /* Key order is 1,2,3,4; created_at order is 4, then 1 and 3 (a tie), then 2. */
    insert_instance(f->store, INST_3, ORG_A, 200);
    insert_instance(f->store, INST_2, ORG_A, 300);
    insert_instance(f->store, INST_1, ORG_A, 200);
    insert_instance(f->store, INST_4, ORG_A, 100);

    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), 0);
    assert_int_equal(count, 4);
    assert_string_equal(list[0].uuid, INST_4);
    assert_string_equal(list[1].uuid, INST_1);
    assert_string_equal(list[2].uuid, INST_3);
    assert_string_equal(list[3].uuid, INST_2);
    assert_int_equal(list[0].created_at, 100);
    assert_int_equal(list[3].created_at, 300);
    free(list);

    assert_int_equal(store_instance_list(f->store, NULL, &list, &count), 0);
    assert_int_equal(count, 4);
    assert_string_equal(list[0].uuid, INST_4);
    assert_string_equal(list[1].uuid, INST_1);
    assert_string_equal(list[2].uuid, INST_3);
    assert_string_equal(list[3].uuid, INST_2);
    free(list);
}

static void test_instance_transition(void **state)
{
    Fixture *f = *state;
    StoreInstance got;
    create_org(f->store, ORG_A, "a", NULL);
    insert_instance(f->store, INST_1, ORG_A, 1000);

    int64_t before = (int64_t)time(NULL);
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, &got), 0);
    assert_int_equal(got.state, INSTANCE_RUNNING);
    assert_int_equal(got.created_at, 1000);
    assert_true(got.updated_at >= before && got.updated_at <= (int64_t)time(NULL));

    StoreInstance stored;
    assert_int_equal(store_instance_get(f->store, INST_1, &stored), 0);
    assert_instance_equal(&stored, &got);

    /* NULL is fine when the caller does not want the record. */
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_RUNNING, INSTANCE_STOPPED, NULL), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &stored), 0);
    assert_int_equal(stored.state, INSTANCE_STOPPED);
}

static void test_instance_transition_stale(void **state)
{
    Fixture *f = *state;
    StoreInstance got;
    create_org(f->store, ORG_A, "a", NULL);
    insert_instance(f->store, INST_1, ORG_A, 1000);
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_DELETING, NULL), 0);

    /* Someone else moved it on: the loser sees the record as it now is, which is unchanged. */
    memset(&got, 0, sizeof(got));
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, &got),
        -ESTALE);
    assert_string_equal(got.uuid, INST_1);
    assert_int_equal(got.state, INSTANCE_DELETING);
    StoreInstance stored;
    assert_int_equal(store_instance_get(f->store, INST_1, &stored), 0);
    assert_instance_equal(&stored, &got);
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_RUNNING, INSTANCE_STOPPED, NULL),
        -ESTALE);

    memset(&got, 0xab, sizeof(got));
    StoreInstance untouched = got;
    assert_int_equal(store_instance_transition(f->store, INST_MISSING, INSTANCE_CREATING,
                                               INSTANCE_RUNNING, &got),
                     -ENOENT);
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_DELETING, _INSTANCE_STATE_MAX, &got),
        -EINVAL);
    assert_memory_equal(&got, &untouched, sizeof(got));
    assert_int_equal(store_instance_get(f->store, INST_1, &stored), 0);
    assert_int_equal(stored.state, INSTANCE_DELETING);
}

typedef struct {
    Store *store;
    int result;
} Racer;

static void *race_transition(void *arg)
{
    Racer *racer = arg;
    racer->result =
        store_instance_transition(racer->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, NULL);
    return NULL;
}

static void test_instance_transition_one_winner(void **state)
{
    Fixture *f = *state;
    Racer racers[8];
    pthread_t threads[ARRAY_SIZE(racers)];
    create_org(f->store, ORG_A, "a", NULL);
    insert_instance(f->store, INST_1, ORG_A, 1000);

    for (size_t i = 0; i < ARRAY_SIZE(racers); i++) {
        racers[i] = (Racer){.store = f->store, .result = 1};
        assert_int_equal(pthread_create(&threads[i], NULL, race_transition, &racers[i]), 0);
    }
    int won = 0, stale = 0;
    for (size_t i = 0; i < ARRAY_SIZE(racers); i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        won += racers[i].result == 0;
        stale += racers[i].result == -ESTALE;
    }
    assert_int_equal(won, 1);
    assert_int_equal(stale, ARRAY_SIZE(racers) - 1);
}

static void test_instance_transition_keeps_unknown_fields(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);
    /* A record written by a later version, with a field this one does not know. */
    const char *value = "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
                        "\"state\":\"creating\",\"created_at\":5,\"updated_at\":5,"
                        "\"domain\":\"legba-x\"}";
    insert_instance(f->store, INST_1, ORG_A, 5);
    raw_put(f, "instances", INST_1, UUID_STR_LEN - 1, value, strlen(value));

    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, NULL), 0);
    char *raw = raw_get(f, "instances", INST_1, UUID_STR_LEN - 1);
    assert_non_null(strstr(raw, "\"domain\":\"legba-x\""));
    assert_non_null(strstr(raw, "\"state\":\"running\""));
    free(raw);
}

/* start_url and ready_at round-trip, and a record written before they existed reads as unset. */
static void test_instance_start_url_and_ready(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);
    StoreInstance with_url = new_instance(INST_1, ORG_A, 5);
    snprintf(with_url.start_url, sizeof(with_url.start_url), "https://example.org/x?y=1");
    assert_int_equal(store_instance_insert(f->store, &with_url), 0);
    StoreInstance got;
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.start_url, "https://example.org/x?y=1");
    assert_int_equal(got.ready_at, 0);

    assert_int_equal(store_instance_set_ready(f->store, INST_1, 42, &got), 0);
    assert_int_equal(got.ready_at, 42);
    /* The first report wins; a later one changes nothing. */
    assert_int_equal(store_instance_set_ready(f->store, INST_1, 99, &got), -EALREADY);
    assert_int_equal(got.ready_at, 42);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_int_equal(got.ready_at, 42);
    assert_int_equal(store_instance_set_ready(f->store, INST_1, 0, NULL), -EINVAL);
    assert_int_equal(store_instance_set_ready(f->store, INST_MISSING, 1, NULL), -ENOENT);

    const char *old = "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
                      "\"state\":\"running\",\"created_at\":5,\"updated_at\":5}";
    raw_put(f, "instances", INST_1, UUID_STR_LEN - 1, old, strlen(old));
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.start_url, "");
    assert_int_equal(got.ready_at, 0);
    assert_int_equal(store_instance_set_ready(f->store, INST_1, 7, NULL), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_int_equal(got.ready_at, 7);

    const char *bad = "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
                      "\"state\":\"running\",\"created_at\":5,\"updated_at\":5,\"start_url\":7}";
    raw_put(f, "instances", INST_1, UUID_STR_LEN - 1, bad, strlen(bad));
    assert_int_equal(store_instance_get(f->store, INST_1, &got), -EBADMSG);
}

/* A well-formed console hash: 64 lowercase hex characters. */
static void console_hash_fill(char ret[STORE_CONSOLE_HASH_LEN], char digit)
{
    memset(ret, digit, STORE_CONSOLE_HASH_LEN - 1);
    ret[STORE_CONSOLE_HASH_LEN - 1] = '\0';
}

static void test_instance_console_hash_round_trip(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);

    StoreInstance with_hash = new_instance(INST_1, ORG_A, 5);
    console_hash_fill(with_hash.console_hash, 'a');
    assert_int_equal(store_instance_insert(f->store, &with_hash), 0);
    StoreInstance got;
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.console_hash, with_hash.console_hash);

    /* None issued: "" in, "" out, and in a list too. */
    insert_instance(f->store, INST_2, ORG_A, 6);
    assert_int_equal(store_instance_get(f->store, INST_2, &got), 0);
    assert_string_equal(got.console_hash, "");

    StoreInstance *list = NULL;
    size_t count = 0;
    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), 0);
    assert_int_equal(count, 2);
    assert_string_equal(list[0].console_hash, with_hash.console_hash);
    assert_string_equal(list[1].console_hash, "");
    free(list);

    /* It survives a restart and a state change, which rewrites only its own fields. */
    reopen(f);
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, &got), 0);
    assert_string_equal(got.console_hash, with_hash.console_hash);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.console_hash, with_hash.console_hash);
}

static void test_instance_set_console_hash(void **state)
{
    Fixture *f = *state;
    char first[STORE_CONSOLE_HASH_LEN], second[STORE_CONSOLE_HASH_LEN];
    console_hash_fill(first, '1');
    console_hash_fill(second, '2');
    create_org(f->store, ORG_A, "a", NULL);
    StoreInstance instance = new_instance(INST_1, ORG_A, 5);
    memcpy(instance.console_hash, first, sizeof(first));
    assert_int_equal(store_instance_insert(f->store, &instance), 0);
    StoreInstance got;

    /* CREATING: the access URL is issued with the record, never replaced before it runs. */
    memset(&got, 0, sizeof(got));
    assert_int_equal(store_instance_set_console_hash(f->store, INST_1, second, &got), -ESTALE);
    assert_int_equal(got.state, INSTANCE_CREATING);
    assert_string_equal(got.console_hash, first);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.console_hash, first);

    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, NULL), 0);
    assert_int_equal(store_instance_set_console_hash(f->store, INST_1, second, &got), 0);
    assert_string_equal(got.console_hash, second);
    assert_int_equal(got.state, INSTANCE_RUNNING);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.console_hash, second);
    assert_int_equal(got.state, INSTANCE_RUNNING);
    assert_int_equal(got.created_at, 5);

    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_RUNNING, INSTANCE_STOPPED, NULL), 0);
    assert_int_equal(store_instance_set_console_hash(f->store, INST_1, first, NULL), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.console_hash, first);
    assert_int_equal(got.state, INSTANCE_STOPPED);

    /* A wrong length is refused before the record is even read. */
    char short_hash[STORE_CONSOLE_HASH_LEN];
    console_hash_fill(short_hash, '3');
    short_hash[STORE_CONSOLE_HASH_LEN - 2] = '\0';
    char long_hash[STORE_CONSOLE_HASH_LEN + 1];
    memset(long_hash, '4', STORE_CONSOLE_HASH_LEN);
    long_hash[STORE_CONSOLE_HASH_LEN] = '\0';
    assert_int_equal(store_instance_set_console_hash(f->store, INST_1, short_hash, NULL), -EINVAL);
    assert_int_equal(store_instance_set_console_hash(f->store, INST_1, long_hash, NULL), -EINVAL);
    char empty[STORE_CONSOLE_HASH_LEN] = "";
    assert_int_equal(store_instance_set_console_hash(f->store, INST_1, empty, NULL), -EINVAL);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.console_hash, first);

    assert_int_equal(store_instance_set_console_hash(f->store, INST_MISSING, second, NULL),
                     -ENOENT);
    assert_int_equal(store_instance_set_console_hash(f->store, "not-a-uuid", second, NULL),
                     -EINVAL);

    /* DELETING: on its way out, it gets no new access URL. */
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_STOPPED, INSTANCE_DELETING, NULL), 0);
    memset(&got, 0, sizeof(got));
    assert_int_equal(store_instance_set_console_hash(f->store, INST_1, second, &got), -ESTALE);
    assert_int_equal(got.state, INSTANCE_DELETING);
    assert_string_equal(got.console_hash, first);
    assert_int_equal(store_instance_set_console_hash(f->store, INST_1, second, NULL), -ESTALE);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.console_hash, first);
}

/* A record written before console_hash existed reads as "no secret issued", and takes one. */
static void test_instance_console_hash_old_record(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);
    insert_instance(f->store, INST_1, ORG_A, 5);
    const char *old = "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
                      "\"state\":\"running\",\"created_at\":5,\"updated_at\":5,"
                      "\"start_url\":\"\",\"ready_at\":9}";
    raw_put(f, "instances", INST_1, UUID_STR_LEN - 1, old, strlen(old));

    StoreInstance got;
    memset(&got, 0xab, sizeof(got));
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.console_hash, "");
    assert_int_equal(got.ready_at, 9);

    char hash[STORE_CONSOLE_HASH_LEN];
    console_hash_fill(hash, 'f');
    assert_int_equal(store_instance_set_console_hash(f->store, INST_1, hash, NULL), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.console_hash, hash);
    assert_int_equal(got.ready_at, 9);
    char *raw = raw_get(f, "instances", INST_1, UUID_STR_LEN - 1);
    assert_non_null(strstr(raw, "\"console_hash\":\"ffff"));
    free(raw);

    /* A hash that is not text is damage, like any other field of the wrong type. */
    const char *bad = "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
                      "\"state\":\"running\",\"created_at\":5,\"updated_at\":5,"
                      "\"console_hash\":7}";
    raw_put(f, "instances", INST_1, UUID_STR_LEN - 1, bad, strlen(bad));
    assert_int_equal(store_instance_get(f->store, INST_1, &got), -EBADMSG);
}

static void test_instance_delete(void **state)
{
    Fixture *f = *state;
    StoreInstance *list = NULL;
    size_t count = 0;
    StoreInstance got;

    create_org(f->store, ORG_A, "a", NULL);
    insert_instance(f->store, INST_1, ORG_A, 1);
    insert_instance(f->store, INST_2, ORG_A, 2);

    assert_int_equal(store_instance_delete(f->store, INST_1), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), -ENOENT);
    assert_int_equal(store_instance_delete(f->store, INST_1), -ENOENT);
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, NULL),
        -ENOENT);
    /* Its index entry went with it: the org lists only what is left. */
    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(list[0].uuid, INST_2);
    free(list);

    /* The uuid is free again. */
    insert_instance(f->store, INST_1, ORG_A, 3);
    assert_int_equal(store_instance_delete(f->store, "bad"), -EINVAL);
}

/* The states whose expiry may be set: a live instance's, never one on its way in or out. */
static void test_instance_set_expiry(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);
    StoreInstance instance = new_instance(INST_1, ORG_A, 5);
    instance.expires_at = 3605;
    assert_int_equal(store_instance_insert(f->store, &instance), 0);
    StoreInstance got;

    /* CREATING: refused, and the caller sees the record as it is. */
    memset(&got, 0, sizeof(got));
    assert_int_equal(store_instance_set_expiry(f->store, INST_1, 9999, &got), -ESTALE);
    assert_int_equal(got.state, INSTANCE_CREATING);
    assert_int_equal(got.expires_at, 3605);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_int_equal(got.expires_at, 3605);

    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, NULL), 0);
    assert_int_equal(store_instance_set_expiry(f->store, INST_1, 7205, &got), 0);
    assert_int_equal(got.expires_at, 7205);
    assert_int_equal(got.state, INSTANCE_RUNNING);
    StoreInstance stored;
    assert_int_equal(store_instance_get(f->store, INST_1, &stored), 0);
    assert_int_equal(stored.expires_at, 7205);
    /* Only the expiry changed: not the state's clock, which the janitor's retention reads. */
    assert_instance_equal(&stored, &got);
    /* Shorter is as fine as longer, and 0 (never) is a value too. */
    assert_int_equal(store_instance_set_expiry(f->store, INST_1, 10, NULL), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &stored), 0);
    assert_int_equal(stored.expires_at, 10);
    assert_int_equal(store_instance_set_expiry(f->store, INST_1, 0, NULL), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &stored), 0);
    assert_int_equal(stored.expires_at, 0);

    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_RUNNING, INSTANCE_STOPPED, NULL), 0);
    assert_int_equal(store_instance_set_expiry(f->store, INST_1, 8000, &got), 0);
    assert_int_equal(got.state, INSTANCE_STOPPED);
    assert_int_equal(store_instance_get(f->store, INST_1, &stored), 0);
    assert_int_equal(stored.expires_at, 8000);

    /* Bad arguments and a missing record leave the output alone. */
    memset(&got, 0xab, sizeof(got));
    StoreInstance untouched = got;
    assert_int_equal(store_instance_set_expiry(f->store, INST_1, -1, &got), -EINVAL);
    assert_int_equal(store_instance_set_expiry(f->store, INST_MISSING, 1, &got), -ENOENT);
    assert_int_equal(store_instance_set_expiry(f->store, "not-a-uuid", 1, &got), -EINVAL);
    assert_memory_equal(&got, &untouched, sizeof(got));
    assert_int_equal(store_instance_get(f->store, INST_1, &stored), 0);
    assert_int_equal(stored.expires_at, 8000);

    /* DELETING and TERMINATED: ending already, so no new expiry. */
    static const InstanceState ending[] = {INSTANCE_DELETING, INSTANCE_TERMINATED};
    InstanceState from = INSTANCE_STOPPED;
    for (size_t i = 0; i < ARRAY_SIZE(ending); i++) {
        assert_int_equal(store_instance_transition(f->store, INST_1, from, ending[i], NULL), 0);
        from = ending[i];
        memset(&got, 0, sizeof(got));
        assert_int_equal(store_instance_set_expiry(f->store, INST_1, 9000, &got), -ESTALE);
        assert_int_equal(got.state, ending[i]);
        assert_int_equal(got.expires_at, 8000);
        assert_int_equal(store_instance_set_expiry(f->store, INST_1, 9000, NULL), -ESTALE);
        assert_int_equal(store_instance_get(f->store, INST_1, &stored), 0);
        assert_int_equal(stored.expires_at, 8000);
    }
}

/* A domain that starts again has a guest that has not drawn anything yet. */
static void test_instance_clear_ready(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);
    StoreInstance instance = new_instance(INST_1, ORG_A, 5);
    instance.state = INSTANCE_STOPPED;
    instance.expires_at = 77;
    snprintf(instance.start_url, sizeof(instance.start_url), "https://example.org/");
    console_hash_fill(instance.console_hash, 'c');
    assert_int_equal(store_instance_insert(f->store, &instance), 0);
    assert_int_equal(store_instance_set_ready(f->store, INST_1, 42, NULL), 0);

    StoreInstance got;
    assert_int_equal(store_instance_clear_ready(f->store, INST_1), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_int_equal(got.ready_at, 0);
    /* Nothing else about it changed. */
    assert_instance_equal(&got, &instance);
    assert_int_equal(got.expires_at, 77);
    assert_string_equal(got.start_url, "https://example.org/");
    assert_string_equal(got.console_hash, instance.console_hash);

    /* The next report is a first report again, not -EALREADY. */
    assert_int_equal(store_instance_set_ready(f->store, INST_1, 50, &got), 0);
    assert_int_equal(got.ready_at, 50);
    /* Clearing what is clear already is fine, and so is doing it twice. */
    assert_int_equal(store_instance_clear_ready(f->store, INST_1), 0);
    assert_int_equal(store_instance_clear_ready(f->store, INST_1), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_int_equal(got.ready_at, 0);

    assert_int_equal(store_instance_clear_ready(f->store, INST_MISSING), -ENOENT);
    assert_int_equal(store_instance_clear_ready(f->store, "not-a-uuid"), -EINVAL);
}

/*
 * expires_at and the size's resources round-trip through insert, get, list,
 * a restart and a state change; a record written before they existed reads
 * them as 0; a value of the wrong type is damage.
 */
static void test_instance_expiry_and_resources_round_trip(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);
    StoreInstance instance = new_instance(INST_1, ORG_A, 1736510400);
    instance.expires_at = 1736510400 + 86400;
    instance.vcpus = 4;
    instance.memory_mib = 4096;
    assert_int_equal(store_instance_insert(f->store, &instance), 0);
    insert_instance(f->store, INST_2, ORG_A, 1736510401);

    StoreInstance got;
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_int_equal(got.expires_at, 1736510400 + 86400);
    assert_int_equal(got.vcpus, 4);
    assert_int_equal(got.memory_mib, 4096);
    assert_int_equal(store_instance_get(f->store, INST_2, &got), 0);
    assert_int_equal(got.expires_at, 0);
    assert_int_equal(got.vcpus, 0);
    assert_int_equal(got.memory_mib, 0);

    StoreInstance *list = NULL;
    size_t count = 0;
    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), 0);
    assert_int_equal(count, 2);
    assert_string_equal(list[0].uuid, INST_1);
    assert_int_equal(list[0].expires_at, 1736510400 + 86400);
    assert_int_equal(list[0].vcpus, 4);
    assert_int_equal(list[0].memory_mib, 4096);
    assert_int_equal(list[1].expires_at, 0);
    free(list);

    reopen(f);
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, &got), 0);
    assert_int_equal(got.expires_at, 1736510400 + 86400);
    assert_int_equal(got.vcpus, 4);
    assert_int_equal(got.memory_mib, 4096);
    assert_int_equal(store_instance_set_expiry(f->store, INST_1, 1736600000, NULL), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_int_equal(got.expires_at, 1736600000);
    assert_int_equal(got.vcpus, 4);
    assert_int_equal(got.memory_mib, 4096);
    char *raw = raw_get(f, "instances", INST_1, UUID_STR_LEN - 1);
    assert_non_null(strstr(raw, "\"expires_at\":1736600000"));
    assert_non_null(strstr(raw, "\"vcpus\":4"));
    assert_non_null(strstr(raw, "\"memory_mib\":4096"));
    free(raw);

    /* Written before the lifecycle existed: never expires, resources unknown. */
    const char *old = "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
                      "\"state\":\"running\",\"created_at\":5,\"updated_at\":5}";
    raw_put(f, "instances", INST_1, UUID_STR_LEN - 1, old, strlen(old));
    memset(&got, 0xab, sizeof(got));
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_int_equal(got.expires_at, 0);
    assert_int_equal(got.vcpus, 0);
    assert_int_equal(got.memory_mib, 0);
    assert_int_equal(store_instance_set_expiry(f->store, INST_1, 65, NULL), 0);
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_int_equal(got.expires_at, 65);

    static const char *const bad_values[] = {"\"expires_at\":\"soon\"", "\"expires_at\":1.5",
                                             "\"vcpus\":null", "\"memory_mib\":\"4096\""};
    for (size_t i = 0; i < ARRAY_SIZE(bad_values); i++) {
        char bad[512];
        snprintf(bad, sizeof(bad),
                 "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
                 "\"state\":\"running\",\"created_at\":5,\"updated_at\":5,%s}",
                 bad_values[i]);
        raw_put(f, "instances", INST_1, UUID_STR_LEN - 1, bad, strlen(bad));
        if (store_instance_get(f->store, INST_1, &got) != -EBADMSG)
            fail_msg("a record with %s is not -EBADMSG", bad_values[i]);
    }
}

/* --- persistence and damage -------------------------------------------------------------- */

static void test_reopen_keeps_data(void **state)
{
    Fixture *f = *state;
    StoreToken token;
    create_org(f->store, ORG_A, "kept", &token);
    insert_instance(f->store, INST_1, ORG_A, 42);
    assert_int_equal(
        store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, NULL), 0);

    reopen(f);

    StoreOrg org;
    StoreToken found;
    StoreInstance *list = NULL;
    size_t count = 0;
    assert_int_equal(store_org_get(f->store, ORG_A, &org), 0);
    assert_string_equal(org.name, "kept");
    assert_int_equal(store_token_lookup(f->store, token.hash, &found), 0);
    assert_string_equal(found.id, token.id);
    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(list[0].uuid, INST_1);
    assert_int_equal(list[0].state, INSTANCE_RUNNING);
    assert_int_equal(list[0].created_at, 42);
    free(list);
}

static void test_corrupt_instance_is_ebadmsg(void **state)
{
    Fixture *f = *state;
    static const char *const values[] = {
        "",
        "not json",
        "\xff\xfe\x01",
        "[1,2,3]",
        "\"a string\"",
        "{}",
        "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
        "\"state\":\"creating\",\"created_at\":1}",
        "{\"org_uuid\":\"nope\",\"image\":\"chromium\",\"size\":\"small\","
        "\"state\":\"creating\",\"created_at\":1,\"updated_at\":1}",
        "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
        "\"state\":\"exploded\",\"created_at\":1,\"updated_at\":1}",
        "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
        "\"state\":\"creating\",\"created_at\":\"yesterday\",\"updated_at\":1}",
        "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
        "\"state\":\"creating\",\"created_at\":1.5,\"updated_at\":1}",
        "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
        "\"state\":\"creating\",\"created_at\":1e300,\"updated_at\":1}",
        "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"a-size-name-too-long\","
        "\"state\":\"creating\",\"created_at\":1,\"updated_at\":1}",
        "{\"org_uuid\":\"" ORG_A "\",\"image\":7,\"size\":\"small\","
        "\"state\":\"creating\",\"created_at\":1,\"updated_at\":1}",
        "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
        "\"state\":\"creating\",\"created_at\":1,\"updated_at\":1}trailing",
    };
    create_org(f->store, ORG_A, "a", NULL);
    insert_instance(f->store, INST_1, ORG_A, 1);

    for (size_t i = 0; i < ARRAY_SIZE(values); i++) {
        raw_put(f, "instances", INST_1, UUID_STR_LEN - 1, values[i], strlen(values[i]));

        StoreInstance got, untouched;
        memset(&got, 0xab, sizeof(got));
        untouched = got;
        StoreInstance *list = (StoreInstance *)0x1;
        size_t count = 99;
        assert_int_equal(store_instance_get(f->store, INST_1, &got), -EBADMSG);
        assert_memory_equal(&got, &untouched, sizeof(got));
        assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), -EBADMSG);
        assert_int_equal(store_instance_list(f->store, NULL, &list, &count), -EBADMSG);
        assert_ptr_equal(list, (StoreInstance *)0x1);
        assert_int_equal(count, 99);
        assert_int_equal(
            store_instance_transition(f->store, INST_1, INSTANCE_CREATING, INSTANCE_RUNNING, &got),
            -EBADMSG);
        assert_memory_equal(&got, &untouched, sizeof(got));
        assert_int_equal(store_instance_delete(f->store, INST_1), -EBADMSG);
    }

    /* The same record, well formed, reads again: the failures above were about the value. */
    const char *good = "{\"org_uuid\":\"" ORG_A "\",\"image\":\"chromium\",\"size\":\"small\","
                       "\"state\":\"stopped\",\"created_at\":1,\"updated_at\":2}";
    raw_put(f, "instances", INST_1, UUID_STR_LEN - 1, good, strlen(good));
    StoreInstance got;
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_int_equal(got.state, INSTANCE_STOPPED);
}

static void test_corrupt_org_and_token_are_ebadmsg(void **state)
{
    Fixture *f = *state;
    StoreToken token;
    create_org(f->store, ORG_A, "a", &token);

    const char *bad_org = "{\"name\":\"a\",\"created_at\":\"soon\"}";
    raw_put(f, "orgs", ORG_A, UUID_STR_LEN - 1, bad_org, strlen(bad_org));
    StoreOrg org;
    StoreOrg *orgs = NULL;
    size_t count = 0;
    assert_int_equal(store_org_get(f->store, ORG_A, &org), -EBADMSG);
    assert_int_equal(store_org_list(f->store, &orgs, &count), -EBADMSG);
    assert_null(orgs);

    const char *bad_token = "{\"id\":\"x\",\"org_uuid\":\"" ORG_A "\",\"created_at\":1}";
    raw_put(f, "tokens", token.hash, AUTH_HASH_LEN, bad_token, strlen(bad_token));
    StoreToken found;
    StoreToken *tokens = NULL;
    assert_int_equal(store_token_lookup(f->store, token.hash, &found), -EBADMSG);
    assert_int_equal(store_token_list(f->store, NULL, &tokens, &count), -EBADMSG);
    assert_null(tokens);

    /* A key that is no uuid at all is as damaged as a bad value. */
    const char *good_org = "{\"name\":\"a\",\"created_at\":1}";
    raw_put(f, "orgs", ORG_A, UUID_STR_LEN - 1, good_org, strlen(good_org));
    assert_int_equal(store_org_list(f->store, &orgs, &count), 0);
    assert_int_equal(count, 1);
    free(orgs);
    orgs = NULL;
    raw_put(f, "orgs", "short", 5, good_org, strlen(good_org));
    assert_int_equal(store_org_list(f->store, &orgs, &count), -EBADMSG);
    assert_null(orgs);
}

/* An index entry that names another org's instance must never show it to this org. */
static void test_bad_index_is_ebadmsg(void **state)
{
    Fixture *f = *state;
    StoreInstance *list = NULL;
    size_t count = 0;
    create_org(f->store, ORG_A, "a", NULL);
    create_org(f->store, ORG_B, "b", NULL);
    insert_instance(f->store, INST_2, ORG_B, 1);

    char key[2 * (UUID_STR_LEN - 1)];
    memcpy(key, ORG_A, UUID_STR_LEN - 1);
    memcpy(key + UUID_STR_LEN - 1, INST_2, UUID_STR_LEN - 1);
    raw_put(f, "org_instances", key, sizeof(key), "", 0);
    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), -EBADMSG);
    assert_null(list);

    /* One pointing at nothing is damage too. */
    memcpy(key, ORG_B, UUID_STR_LEN - 1);
    memcpy(key + UUID_STR_LEN - 1, INST_MISSING, UUID_STR_LEN - 1);
    raw_put(f, "org_instances", key, sizeof(key), "", 0);
    assert_int_equal(store_instance_list(f->store, ORG_B, &list, &count), -EBADMSG);
    assert_null(list);
}

static void test_map_full_is_enospc(void **state)
{
    Fixture *f = *state;
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/small", f->dir);
    store_close(f->store);
    f->store = NULL;
    assert_int_equal(store_open(dir, 128 * 1024, &f->store), 0);

    int r = 0;
    size_t created = 0;
    while (created < 100000) {
        char uuid[UUID_STR_LEN];
        assert_int_equal(uuid_generate(uuid), 0);
        StoreOrg org = new_org(uuid, "filler filler filler filler filler filler", 1);
        StoreToken token = new_token(uuid, 1);
        r = store_org_create(f->store, &org, &token);
        if (r < 0)
            break;
        created++;
    }
    assert_int_equal(r, -ENOSPC);
    assert_true(created > 0);

    /* A full store still reads, and holds exactly what went in before it filled. */
    StoreOrg *orgs = NULL;
    size_t count = 0;
    assert_int_equal(store_org_list(f->store, &orgs, &count), 0);
    assert_int_equal(count, created);
    StoreToken *tokens = NULL;
    assert_int_equal(store_token_list(f->store, NULL, &tokens, &count), 0);
    assert_int_equal(count, created);
    free(tokens);
    free(orgs);
}

/* legbactl and legbad write the same environment at the same time. */
static void test_two_processes(void **state)
{
    Fixture *f = *state;
    enum { PER_PROCESS = 50 };
    create_org(f->store, ORG_A, "a", NULL);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* No cmocka in the child: its failures come back as the exit status. */
        Store *store = NULL;
        int failures = 0;
        if (store_open(f->dir, 0, &store) < 0)
            _exit(2);
        for (int i = 0; i < PER_PROCESS; i++) {
            char uuid[UUID_STR_LEN];
            snprintf(uuid, sizeof(uuid), "2c000000-0000-4000-8000-%012d", i);
            StoreInstance instance = new_instance(uuid, ORG_A, 100 + i);
            failures += store_instance_insert(store, &instance) != 0;
        }
        store_close(store);
        _exit(failures ? 1 : 0);
    }
    for (int i = 0; i < PER_PROCESS; i++) {
        char uuid[UUID_STR_LEN];
        snprintf(uuid, sizeof(uuid), "3d000000-0000-4000-8000-%012d", i);
        insert_instance(f->store, uuid, ORG_A, 100 + i);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* The parent's open environment sees the child's writes without reopening. */
    StoreInstance *list = NULL;
    size_t count = 0;
    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), 0);
    assert_int_equal(count, 2 * PER_PROCESS);
    free(list);
    StoreInstance got;
    assert_int_equal(store_instance_get(f->store, "2c000000-0000-4000-8000-000000000049", &got), 0);
    assert_int_equal(got.created_at, 149);
}

typedef struct {
    Store *store;
    char uuid[UUID_STR_LEN];
    int result;
} CappedRacer;

/* The host's instance cap alone (0: none), as legbad's max_instances applies it. */
static int insert_capped(Store *store, const StoreInstance *instance, size_t max)
{
    StoreAdmission admission = {.max_instances = max};
    StoreInsertOptions options = {.admission = &admission};
    return store_instance_insert_admitted(store, instance, &options, NULL);
}

static void *race_capped_insert(void *arg)
{
    CappedRacer *racer = arg;
    StoreInstance instance = new_instance(racer->uuid, ORG_A, 1);
    racer->result = insert_capped(racer->store, &instance, 3);
    return NULL;
}

/* The cap counts every record, and concurrent inserts never overshoot it. */
static void test_instance_insert_capped(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);

    enum { RACERS = 12 };
    CappedRacer racers[RACERS];
    pthread_t threads[RACERS];
    for (int i = 0; i < RACERS; i++) {
        racers[i] = (CappedRacer){.store = f->store};
        snprintf(racers[i].uuid, sizeof(racers[i].uuid), "4e000000-0000-4000-8000-%012d", i);
        assert_int_equal(pthread_create(&threads[i], NULL, race_capped_insert, &racers[i]), 0);
    }
    int created = 0, refused = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(threads[i], NULL);
        created += racers[i].result == 0;
        refused += racers[i].result == -EDQUOT;
    }
    assert_int_equal(created, 3);
    assert_int_equal(refused, RACERS - 3);

    /* A deleted record frees its place; 0 means no cap. */
    for (int i = 0; i < RACERS; i++) {
        if (racers[i].result == 0) {
            assert_int_equal(store_instance_delete(f->store, racers[i].uuid), 0);
            break;
        }
    }
    StoreInstance one = new_instance("4e000000-0000-4000-8000-000000000100", ORG_A, 2);
    assert_int_equal(insert_capped(f->store, &one, 3), 0);
    StoreInstance two = new_instance("4e000000-0000-4000-8000-000000000101", ORG_A, 2);
    assert_int_equal(insert_capped(f->store, &two, 3), -EDQUOT);
    assert_int_equal(insert_capped(f->store, &two, 0), 0);
}

/*
 * The pool: its inserts are of the pool org and host limits only; taking
 * one hands the same record (same uuid) to an org in one transaction, with
 * the org's quota, and only while it still waits in the pool as expected.
 */
static void test_pool_take(void **state)
{
    Fixture *f = *state;
    create_org(f->store, ORG_A, "a", NULL);
    StoreAdmission admission = {.max_instances = 2};
    StoreInsertOptions pool = {.admission = &admission, .pool = true};
    StoreInstance warm = new_instance(INST_1, STORE_POOL_ORG, 1);
    snprintf(warm.pool, sizeof(warm.pool), "warm");
    warm.state = INSTANCE_RUNNING;
    warm.ready_at = 2;
    assert_int_equal(store_instance_insert_admitted(f->store, &warm, &pool, NULL), 0);
    assert_true(store_instance_pool_ready(&warm));
    /* Not through a plain insert, and a pool insert must be of the pool. */
    StoreInstance sneaky = new_instance(INST_2, STORE_POOL_ORG, 1);
    assert_int_equal(store_instance_insert(f->store, &sneaky), -EINVAL);
    StoreInstance not_pooled = new_instance(INST_2, ORG_A, 1);
    assert_int_equal(store_instance_insert_admitted(f->store, &not_pooled, &pool, NULL), -EINVAL);

    StoreInstance *list = NULL;
    size_t count = 0;
    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), 0);
    assert_int_equal(count, 0);
    free(list);

    /* The org's quota decides; the pool VM counts against the host once, not twice. */
    assert_int_equal(store_org_set_quota(f->store, ORG_A, &(StoreQuota){.instances = 1}, NULL), 0);
    insert_instance(f->store, INST_3, ORG_A, 1);
    StoreInstance taken = new_instance(INST_1, ORG_A, 5);
    taken.state = INSTANCE_RUNNING;
    StoreInsertOptions take = {
        .admission = &admission, .take_pooled = true, .pool_state = INSTANCE_RUNNING};
    StoreInsertResult result = {0};
    assert_int_equal(store_instance_insert_admitted(f->store, &taken, &take, &result), -EDQUOT);
    assert_int_equal(result.refusal.by, STORE_REFUSED_ORG_INSTANCES);
    assert_int_equal(store_instance_delete(f->store, INST_3), 0);
    /* Host: the pool VM and the org's other instance make 2 of 2, and taking adds none. */
    insert_instance(f->store, INST_4, ORG_A, 1);
    assert_int_equal(store_org_set_quota(f->store, ORG_A, &(StoreQuota){0}, NULL), 0);
    /* Only in the state it was seen in. */
    take.pool_state = INSTANCE_STOPPED;
    assert_int_equal(store_instance_insert_admitted(f->store, &taken, &take, NULL), -ESTALE);
    take.pool_state = INSTANCE_RUNNING;
    assert_int_equal(store_instance_insert_admitted(f->store, &taken, &take, NULL), 0);
    StoreInstance got;
    assert_int_equal(store_instance_get(f->store, INST_1, &got), 0);
    assert_string_equal(got.org_uuid, ORG_A);
    assert_string_equal(got.pool, "");
    assert_int_equal(got.created_at, 5);
    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), 0);
    assert_int_equal(count, 2);
    free(list);
    assert_int_equal(store_instance_list(f->store, STORE_POOL_ORG, &list, &count), 0);
    assert_int_equal(count, 0);
    free(list);
    /* Once taken it is nobody else's to take. */
    assert_int_equal(store_instance_insert_admitted(f->store, &taken, &take, NULL), -ESTALE);
}

/* The generation moves with every committed write, and only then. */
static void test_generation(void **state)
{
    Fixture *f = *state;
    uint64_t g0, g1, g2;
    assert_int_equal(store_generation(f->store, &g0), 0);
    create_org(f->store, ORG_A, "a", NULL);
    assert_int_equal(store_generation(f->store, &g1), 0);
    assert_true(g1 > g0);
    StoreInstance *list = NULL;
    size_t count = 0;
    assert_int_equal(store_instance_list(f->store, ORG_A, &list, &count), 0);
    free(list);
    assert_int_equal(store_generation(f->store, &g2), 0);
    assert_int_equal(g2, g1);
    insert_instance(f->store, INST_1, ORG_A, 1);
    assert_int_equal(store_generation(f->store, &g2), 0);
    assert_true(g2 > g1);
    /* A refused write commits nothing. */
    StoreInstance again = new_instance(INST_1, ORG_A, 1);
    assert_int_equal(store_instance_insert(f->store, &again), -EEXIST);
    assert_int_equal(store_generation(f->store, &g1), 0);
    assert_int_equal(g1, g2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_names),
        cmocka_unit_test_setup_teardown(test_open_creates_private_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_org_create_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_org_get_missing_leaves_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_org_duplicate_is_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_org_list_ordered_by_uuid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_org_rejects_invalid_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_add_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_add_missing_org, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_list_by_org_and_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_insert_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_insert_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_insert_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_start_url_and_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_console_hash_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_set_console_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_console_hash_old_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_set_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_clear_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_expiry_and_resources_round_trip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_instance_list_isolated_per_org, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_list_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_transition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_transition_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_transition_one_winner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_transition_keeps_unknown_fields, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_instance_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_instance_is_ebadmsg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_org_and_token_are_ebadmsg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_index_is_ebadmsg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full_is_enospc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_take, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generation, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
