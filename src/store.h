/*
 * The record of truth for what should exist: orgs, tokens and instances in
 * one LMDB environment. Every function is one transaction; writers are
 * serialised by LMDB, so each call is atomic against other threads and
 * against legbactl in another process. The key layout is described once,
 * at the top of store.c.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "uuid.h"

#define STORE_ORG_NAME_MAX 64
#define STORE_IMAGE_NAME_MAX 64
#define STORE_SIZE_NAME_MAX 15
#define STORE_URL_MAX 2048
/* "none", "egress" (network); "none", "to_vm", "both" (clipboard); "" where unset. */
#define STORE_MODE_MAX 7
#define STORE_CONSOLE_HASH_LEN (2 * AUTH_HASH_LEN + 1)
/* Concurrent read transactions across all processes; above config's max_connections cap. */
#define STORE_MAX_READERS 4096

typedef struct Store Store;

typedef enum {
    INSTANCE_CREATING = 0, /* intent written, domain may not exist yet */
    INSTANCE_RUNNING,
    INSTANCE_STOPPED,
    INSTANCE_DELETING, /* intent written, domain/disk may still exist */
    INSTANCE_TERMINATED,
    _INSTANCE_STATE_MAX,
} InstanceState;

/* An org's limits on what it may hold at once; 0 means no limit. */
typedef struct {
    int64_t instances;
    int64_t vcpus;
    int64_t memory_mib;
} StoreQuota;

typedef struct {
    char uuid[UUID_STR_LEN];
    char name[STORE_ORG_NAME_MAX + 1];
    int64_t created_at; /* seconds since the epoch, UTC */
    StoreQuota quota;
    char network[STORE_MODE_MAX + 1]; /* the org's network mode; "": the config's */
} StoreOrg;

/* What a create must fit in, beyond the org's quota. 0 means no limit. */
typedef struct {
    size_t max_instances;   /* live instances on the host */
    int64_t max_memory_mib; /* guest memory of live instances on the host */
} StoreAdmission;

/* Which limit refused an insert (-EDQUOT), with the numbers for the message. */
typedef enum {
    STORE_REFUSED_HOST_INSTANCES = 1,
    STORE_REFUSED_HOST_MEMORY,
    STORE_REFUSED_ORG_INSTANCES,
    STORE_REFUSED_ORG_VCPUS,
    STORE_REFUSED_ORG_MEMORY,
} StoreRefusedBy;

typedef struct {
    StoreRefusedBy by;
    int64_t limit, used; /* used: before this create */
} StoreRefusal;

typedef struct {
    char id[UUID_STR_LEN]; /* public handle, used to revoke */
    char org_uuid[UUID_STR_LEN];
    uint8_t hash[AUTH_HASH_LEN];
    int64_t created_at;
} StoreToken;

typedef struct {
    char uuid[UUID_STR_LEN];
    char org_uuid[UUID_STR_LEN];
    char image[STORE_IMAGE_NAME_MAX + 1];
    char size[STORE_SIZE_NAME_MAX + 1];
    InstanceState state;
    int64_t created_at;
    int64_t updated_at;
    char start_url[STORE_URL_MAX + 1]; /* "" when none was asked for */
    int64_t ready_at;                  /* when the guest first drew its page; 0 = not yet */
    /* Lowercase hex SHA-256 of the access URL's secret; "" when none was issued. */
    char console_hash[STORE_CONSOLE_HASH_LEN];
    int64_t expires_at; /* when legbad destroys it; 0 = never */
    /* The size's resources when it was created, for quotas and host admission. */
    int64_t vcpus;
    int64_t memory_mib;
    /* Fixed at create: the guest's network mode and what its clipboard lets through. */
    char network[STORE_MODE_MAX + 1];
    char clipboard[STORE_MODE_MAX + 1];
    /*
     * "warm" or "standby" while the instance waits in the pool (its org is
     * STORE_POOL_ORG, no org sees it); "" once an org has it.
     */
    char pool[STORE_MODE_MAX + 1];
} StoreInstance;

/*
 * Whether a pool instance can be handed out: warm, running and ready (an
 * image without the agent is ready once booted); standby, saved.
 */
bool store_instance_pool_ready(const StoreInstance *instance);

/* The org of pool instances: no org has this uuid (version 0), so no token reaches them. */
#define STORE_POOL_ORG "00000000-0000-0000-0000-000000000000"

const char *instance_state_to_string(InstanceState state);
/* -EINVAL for an unknown name. */
int instance_state_from_string(const char *name, InstanceState *ret_state);

/*
 * Opens (creating if needed, mode 0700) DIR/state holding the LMDB
 * environment, with every named database opened here once.
 * map_size 0 means the default (1 GiB).
 */
int store_open(const char *data_dir, size_t map_size, Store **ret_store);
void store_close(Store *store);
/*
 * The id of the last committed write transaction of the environment (any
 * process's): when it has not changed, nothing in the store has. 0 or -errno.
 */
int store_generation(Store *store, uint64_t *ret_generation);

/* Org and its first token in one transaction. -EEXIST if the uuid is taken. */
int store_org_create(Store *store, const StoreOrg *org, const StoreToken *token);
int store_org_get(Store *store, const char *org_uuid, StoreOrg *ret_org); /* -ENOENT */
/* Replaces the org's quota (negative fields are refused: -EINVAL). -ENOENT. */
int store_org_set_quota(Store *store, const char *org_uuid, const StoreQuota *quota,
                        StoreOrg *ret_org);
/* Sets the org's network mode ("none", "egress"; "" follows the config). -EINVAL, -ENOENT. */
int store_org_set_network(Store *store, const char *org_uuid, const char *network,
                          StoreOrg *ret_org);
/* All orgs ordered by uuid; *ret_orgs is malloc'd (NULL when none). */
int store_org_list(Store *store, StoreOrg **ret_orgs, size_t *ret_count);

int store_token_add(Store *store, const StoreToken *token); /* -ENOENT if no such org */
int store_token_lookup(Store *store, const uint8_t hash[AUTH_HASH_LEN],
                       StoreToken *ret_token);              /* -ENOENT */
int store_token_revoke(Store *store, const char *token_id); /* -ENOENT */
/* org_uuid NULL lists every org's tokens. */
int store_token_list(Store *store, const char *org_uuid, StoreToken **ret_tokens,
                     size_t *ret_count);

/* Inserts; -EEXIST if the uuid is taken, -ENOENT if the org is missing. */
int store_instance_insert(Store *store, const StoreInstance *instance);
/* Lowercase hex of a SHA-256, without its NUL. */
#define STORE_HASH_HEX_LEN (2 * AUTH_HASH_LEN)

typedef struct {
    const StoreAdmission *admission; /* NULL: no limits */
    /*
     * An Idempotency-Key's hash (STORE_HASH_HEX_LEN hex) binding the request
     * to this instance, with the request body's hash; NULL: none.
     */
    const char *idempotency_key;
    const char *body_hash;
    /* The instance is for the pool (org STORE_POOL_ORG): host limits only. */
    bool pool;
    /*
     * Hand this pool instance (same uuid) to the instance's org instead of
     * inserting: -ESTALE unless it is still in the pool, in the state given
     * as pool_state; it counts against the host already, the org from now.
     */
    bool take_pooled;
    InstanceState pool_state;
} StoreInsertOptions;

typedef struct {
    StoreRefusal refusal;             /* -EDQUOT */
    char existing_uuid[UUID_STR_LEN]; /* -EEXIST for the key: the instance it is bound to */
    bool same_body;                   /* ...and whether that request had the same body */
} StoreInsertResult;

/*
 * The same, admitted in the insert's own write transaction (so concurrent
 * creates cannot overshoot): -EDQUOT with ret_result->refusal if the
 * instance does not fit the host's limits or its org's quota (live
 * instances count: every state but TERMINATED, with the vcpus and
 * memory_mib recorded in them); -EEXIST with ret_result->existing_uuid
 * when the idempotency key is bound to an instance that still has a record.
 * options and ret_result may be NULL.
 */
int store_instance_insert_admitted(Store *store, const StoreInstance *instance,
                                   const StoreInsertOptions *options,
                                   StoreInsertResult *ret_result);
/* Forgets idempotency keys bound before `before`. The number removed, or -errno. */
int store_idempotency_expire(Store *store, int64_t before);
int store_instance_get(Store *store, const char *instance_uuid, StoreInstance *ret_instance);
/*
 * Compare-and-set of the state, so two requests cannot both win a
 * transition: -ENOENT if missing, -ESTALE (ret_instance filled with the
 * current record when not NULL) if the state is not `expected`.
 */
int store_instance_transition(Store *store, const char *instance_uuid, InstanceState expected,
                              InstanceState next, StoreInstance *ret_instance);
/*
 * Records the first time the guest reported its page drawn. -EALREADY (with
 * ret_instance filled, when not NULL) if it was recorded before; -ENOENT.
 */
int store_instance_set_ready(Store *store, const char *instance_uuid, int64_t ready_at,
                             StoreInstance *ret_instance);
/* Replaces the console secret's hash (a new access URL). -ENOENT; -ESTALE unless RUNNING or
 * STOPPED (ret_instance filled with the record either way, when not NULL). */
int store_instance_set_console_hash(Store *store, const char *instance_uuid,
                                    const char hash[STORE_CONSOLE_HASH_LEN],
                                    StoreInstance *ret_instance);
/* A new expiry for a RUNNING or STOPPED instance: -ESTALE otherwise, -ENOENT. */
int store_instance_set_expiry(Store *store, const char *instance_uuid, int64_t expires_at,
                              StoreInstance *ret_instance);
/* Forgets the guest's readiness (the domain starts again): ready_at back to 0. */
int store_instance_clear_ready(Store *store, const char *instance_uuid);
int store_instance_delete(Store *store, const char *instance_uuid); /* -ENOENT */
/* org_uuid NULL lists all; ordered by created_at then uuid within an org. */
int store_instance_list(Store *store, const char *org_uuid, StoreInstance **ret_instances,
                        size_t *ret_count);
