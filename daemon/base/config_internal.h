/*
 * What the files of the configuration module share, and nothing outside base/config*.c includes:
 * the key table's types (config_keys.c holds the table), the profile presets, the unit
 * constants, the value parsers the loader calls by key type (config_values.c) and the lookup
 * of a key by name. The public API is base/config.h.
 *
 * Internal non-static names carry the double-underscore prefix: config__keys, config__set_value.
 */
#ifndef ATTESTPROXY_BASE_CONFIG_INTERNAL_H
#define ATTESTPROXY_BASE_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/config.h"

enum section_kind {
    SEC_DAEMON,
    SEC_SERVICE,
    SEC_POLICY, /* only in a policy file */
};

enum value_type {
    T_BOOL,
    T_DURATION,     /* uint64_t milliseconds */
    T_DURATION_S64, /* int64_t milliseconds */
    T_SIZE,         /* uint64_t bytes */
    T_U32,
    T_STRING, /* char[size] */
    T_LISTEN, /* repeatable listen address */
    T_ADMIN,  /* admin listen address, may be empty */
    T_HOSTS,  /* list of host names */
    T_MODE,   /* octal permission bits */
    T_LOG_LEVEL,
    T_LOG_FORMAT,
    T_PROFILE,
    T_BINDING,
    T_NONCE,
    T_UPSTREAM,          /* host:port */
    T_MEASUREMENT,       /* repeatable measurement set */
    T_TOKEN_FILE,        /* reads the token from a file */
    T_POLICY_KEY,        /* repeatable NAME:KEY, into daemon_config.policy_keys */
    T_AUDIT_FSYNC,       /* record | interval | none */
    T_UPGRADE,           /* allow_upgrade: websocket | none */
    T_ORIGINS,           /* list of origins (scheme://host[:port]) */
    T_PROXY_URL,         /* http://host:port of an upstream proxy */
    T_PROXY_CREDENTIALS, /* reads user:password for the upstream proxy from a file */
};

#define KEY_REQUIRED 0x1u
#define KEY_REPEAT   0x2u
#define KEY_SECRET   0x4u

struct key_def {
    const char *name;
    enum section_kind section;
    enum value_type type;
    size_t offset;
    size_t size;
    uint64_t min, max;
    const char *def; /* default, as text in the file's own syntax; NULL = unset */
    unsigned flags;
    const char *doc;
};

#define SEC  ((uint64_t)1000)
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)
#define KIB  ((uint64_t)1024)
#define MIB  (1024 * KIB)
#define GIB  (1024 * MIB)

/* The single source of truth for keys (config_keys.c): loading, defaults, `check-config` output
 * and the configuration reference (docs/configuration.md) all follow this table, in its order. */
extern const struct key_def config__keys[];
extern const size_t config__n_keys;

/** The key `name` of section `sec`, or NULL. */
const struct key_def *config__find_key(enum section_kind sec, const char *name);

/* Profile presets (BRIEF §4). */
struct profile_preset {
    const char *name;
    const char *path;
    enum nonce_placement nonce;
    uint32_t nonce_bytes;
    enum binding_mode binding;
};

/* Indexed by enum evidence_profile. */
extern const struct profile_preset config__profiles[];

/**
 * Parses a decimal unsigned integer without sign, spaces or leading '+' (strtoull alone accepts
 * all three); `*end` is the first byte after it. Returns 0, -EINVAL or -ERANGE.
 */
int config__parse_u64(const char *s, const char **end, uint64_t *out);

/** Splits "host:port" or "[v6]:port" into host (without brackets) and port. 0 or -EINVAL. */
int config__split_host_port(const char *s, char *host, size_t cap, uint16_t *port);

/**
 * Adds "pcrN=HEX" items to `set`; used for a new set and for its continuation lines. Returns 0,
 * or -EINVAL with the reason in `why`.
 */
int config__measurement_add(const char *s, struct measurement_set *set, char *why, size_t cap);

/**
 * Stores `value` for key `k` into `base` (a daemon_config, service_config or policy, as the
 * key's section says). Returns 0, or a negative code with the reason, without the key's name,
 * in `why`. A token_file key reads its file here.
 */
int config__set_value(const struct key_def *k, void *base, const char *value, char *why,
                      size_t whycap);

#endif
