/*
 * Configuration: the INI file (inih) parsed into one validated, immutable structure.
 *
 * `config_load()` builds a complete new `struct config` or fails with a `file:line: message`
 * error; it never modifies a live configuration. A reload loads a new structure and the daemon
 * swaps the pointer only when loading succeeded, so a bad edit never takes effect.
 *
 * Every key, its type, range and default is one row of the table in config_keys.c; `check-config`
 * prints the effective configuration from that table, and docs/configuration.md documents it.
 */
#ifndef ATTESTPROXY_BASE_CONFIG_H
#define ATTESTPROXY_BASE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/log.h"
#include "base/trust.h"

#define CONFIG_MAX_SERVICES 64
#define CONFIG_MAX_LISTEN   8
#define CONFIG_MAX_HOSTS    16
#define CONFIG_NAME_MAX     64
#define CONFIG_PATH_MAX     4096
#define CONFIG_HOST_MAX     256
#define CONFIG_TOKEN_MAX    256
#define CONFIG_ERROR_MAX    512
/* "Basic " credentials of an upstream proxy: base64 of user:password (at most 255 bytes). */
#define CONFIG_PROXY_AUTH_MAX 352

/* Evidence profiles of BRIEF §4: presets for the path, nonce and binding. */
enum evidence_profile {
    PROFILE_NATIVE = 0,
    PROFILE_NITRIDING,
    PROFILE_BLINDAI,
    PROFILE_EVERVAULT,
    PROFILE_NATIVE_SESSION, /* native with session-bound evidence */
};

/* How the document is bound to the TLS peer of the connection it was fetched over. */
enum binding_mode {
    BINDING_SPKI_SHA256 = 0, /* user_data == SHA-256(peer SPKI DER) */
    BINDING_PUBLIC_KEY_SPKI, /* public_key == peer SPKI DER */
    BINDING_SPKI_DER,        /* user_data == peer SPKI DER */
    BINDING_CERT_SHA256,     /* user_data == SHA-256(peer certificate DER) */
    BINDING_NITRIDING,       /* user_data == 12 20 || SHA-256(cert) [|| 12 20 || 32 bytes] */
    BINDING_BLINDAI,         /* user_data == "sha256:" || SHA-256(cert) || ";sha256:" || 32 bytes */
    BINDING_NONE,            /* offline `verify` only: no peer to bind to */
};

/* When the audit log is forced to disk (docs/operations.md, "The audit log"). */
enum audit_fsync_mode {
    AUDIT_FSYNC_RECORD = 0, /* fsync after every record */
    AUDIT_FSYNC_INTERVAL,   /* fsync when the last one is older than 1 s, and at close */
    AUDIT_FSYNC_NONE,       /* leave it to the kernel */
};

enum nonce_placement {
    NONCE_QUERY = 0, /* ?nonce=<lowercase hex> appended to the evidence path */
    NONCE_NONE,      /* no nonce: freshness rests on max_age alone */
    NONCE_SESSION,   /* ?session_nonce=<lowercase hex>; the document's nonce is bound to the
                        TLS session (docs/evidence-protocol.md, §12) */
};

/* A listen address: TCP host:port or a Unix socket path. */
struct listen_addr {
    bool is_unix;
    char host[CONFIG_HOST_MAX]; /* TCP: literal address, without brackets */
    uint16_t port;
    char path[CONFIG_PATH_MAX]; /* Unix: socket path */
};

struct service_config {
    char name[CONFIG_NAME_MAX];
    int line; /* line of the [service NAME] header, for messages */

    /* Client side. */
    struct listen_addr listen[CONFIG_MAX_LISTEN];
    size_t n_listen;
    unsigned unix_mode;               /* permissions of Unix listener sockets */
    bool allow_remote;                /* permit non-loopback TCP binds (needs a token) */
    char token[CONFIG_TOKEN_MAX];     /* bearer token clients must present; "" = none */
    char token_file[CONFIG_PATH_MAX]; /* where the token was read from, when not inline */
    char allowed_hosts[CONFIG_MAX_HOSTS][CONFIG_HOST_MAX];
    size_t n_allowed_hosts;  /* 0 = the defaults: localhost, 127.0.0.1, [::1], listen addresses */
    bool keep_forwarded;     /* keep X-Forwarded-* / Forwarded from clients */
    bool attestation_header; /* add the attestation metadata header to responses */
    uint32_t max_connections;
    uint32_t max_header_bytes;
    uint32_t max_headers;
    uint64_t max_body_size; /* 0 = unlimited */
    uint64_t client_header_timeout_ms;
    uint64_t client_idle_timeout_ms;
    /* WebSocket tunnels (proxy/tunnel.c). */
    bool allow_websocket; /* allow_upgrade = websocket */
    char allowed_origins[CONFIG_MAX_HOSTS][CONFIG_HOST_MAX];
    size_t n_allowed_origins; /* 0 = only an Origin naming the request's own Host, or none */
    uint32_t max_tunnels;
    uint64_t tunnel_idle_timeout_ms;
    uint64_t tunnel_max_life_ms; /* 0 = no limit */

    /* Upstream side. */
    char upstream_host[CONFIG_HOST_MAX];
    uint16_t upstream_port;
    /* Derived at load, not a key: the Host value sent upstream ("host:port", "[v6]:port", the
     * port left out when it is 443). Built once here rather than for every request. */
    char upstream_authority[CONFIG_HOST_MAX + 8];
    char sni[CONFIG_HOST_MAX]; /* "" = upstream host when it is a name, none for an address */
    uint64_t connect_timeout_ms;
    uint64_t first_byte_timeout_ms;
    uint64_t stream_idle_timeout_ms;
    uint32_t pool_max_idle;
    uint64_t pool_idle_timeout_ms;
    uint64_t pool_purge_interval_ms;
    bool session_resumption; /* offer TLS sessions for resumption (BRIEF §2.7: off by default) */
    /* An HTTP forward proxy on the way to the enclave (proxy/egress.c): TCP goes to it and a
     * CONNECT tunnel carries the enclave's TLS end to end. "" = direct connections. */
    char upstream_proxy_host[CONFIG_HOST_MAX];
    uint16_t upstream_proxy_port;
    char upstream_proxy_credentials[CONFIG_PATH_MAX]; /* file holding user:password */
    /* Derived at load from that file, not a key: base64(user:password) for
     * Proxy-Authorization: Basic; a secret (never printed, wiped by config_free()). */
    char upstream_proxy_auth[CONFIG_PROXY_AUTH_MAX];
    uint64_t upstream_proxy_connect_timeout_ms; /* TCP to the proxy */
    uint64_t upstream_proxy_timeout_ms;         /* the proxy's answer to CONNECT */

    /* Attestation. */
    enum evidence_profile profile;
    char evidence_path[CONFIG_PATH_MAX]; /* filled from the profile when not set */
    enum nonce_placement nonce;
    uint32_t nonce_bytes;
    enum binding_mode binding;
    uint64_t attestation_timeout_ms;
    uint64_t attestation_ttl_ms;
    uint64_t refresh_before_ms; /* re-attest this long before a pin expires */
    uint64_t cert_margin_ms;    /* a pin expires this long before the leaf certificate */
    uint64_t negative_cache_ms; /* how long a failed pin is refused without retrying */
    bool warm_attestation;      /* attest at start and keep a fresh pin without traffic (warm.c) */
    char policy_file[CONFIG_PATH_MAX];   /* "" = measurement sets are inline */
    char policy_bundle[CONFIG_PATH_MAX]; /* "" = no signed bundle (docs/policy-bundles.md) */
    uint64_t policy_expiry_grace_ms;     /* attestations continue this long past expires */
    bool watch_policy;                   /* reload when policy_file or policy_bundle changes */
    struct policy policy;                /* measurement sets, allow_debug, max_age, skew */
    /* Where the policy came from when policy_bundle is set: filled by the daemon
     * (app/bundles.c) after the bundle was accepted, not by config_load(). */
    struct policy_bundle_info bundle;
};

struct daemon_config {
    enum log_level log_level;
    enum log_format log_format;
    char root_ca[CONFIG_PATH_MAX]; /* "" = the compiled-in AWS Nitro Enclaves Root-G1 */
    struct listen_addr admin;      /* admin listener; port 0 and no path = off */
    bool admin_enabled;
    uint64_t shutdown_timeout_ms;
    bool ready_requires_attestation;
    uint32_t batch_wait_us;                         /* see proxy.c on_loop_pass() */
    uint32_t busy_poll_us;                          /* see proxy.c on_loop_pass() */
    struct policy_key policy_keys[POLICY_MAX_KEYS]; /* keys trusted to sign policy bundles */
    size_t n_policy_keys;
    char state_dir[CONFIG_PATH_MAX]; /* the last accepted bundle of each service */
    char audit_log[CONFIG_PATH_MAX]; /* "" = no audit log */
    uint64_t audit_max_bytes;        /* rotate beyond this; 0 = never */
    enum audit_fsync_mode audit_fsync;
    char audit_archive[CONFIG_PATH_MAX]; /* "" = verified documents are not kept */
    uint64_t audit_archive_max_bytes;
};

struct config {
    char path[CONFIG_PATH_MAX];
    struct daemon_config daemon;
    struct service_config *services; /* n_services entries */
    size_t n_services;
};

/**
 * Loads and validates `path`. On success returns 0 and a new configuration in `*out`, which the
 * caller frees with config_free(). On failure returns a negative code and writes one message,
 * "file:line: what is wrong", into `err` (cap bytes); `*out` is left NULL.
 * -ENOENT/-EACCES/-EIO: the file could not be read; -EINVAL: it is not a valid configuration.
 */
int config_load(const char *path, struct config **out, char *err, size_t cap);

/** Frees a configuration; NULL is a no-op. */
void config_free(struct config *cfg);

/** Writes the effective configuration, defaults filled in, in the file's own INI syntax. */
void config_print(const struct config *cfg, FILE *out);

/**
 * Valid but weak settings, one message at a time through `emit`: a measurement set that names
 * no PCR0 (the enclave image) admits any image whose other PCRs match. Returns how many.
 * check-config prints them; the daemon logs them at start and at every reload.
 */
size_t config_warnings(const struct config *cfg,
                       void (*emit)(void *arg, const char *service, const char *msg), void *arg);

/**
 * Loads a policy file (a [policy] section with `measurement` and `allow_debug` keys) into
 * `policy`, keeping its max_age and skew. Used at load time and by the policy-file watcher.
 * Returns 0, or a negative code with "file:line: message" in `err`.
 */
int config_load_policy_file(const char *path, struct policy *policy, char *err, size_t cap);

/** Writes the key table (name, default, range, meaning) as Markdown tables. */
void config_print_reference(FILE *out);

/** Returns the service named `name`, or NULL. */
const struct service_config *config_find_service(const struct config *cfg, const char *name);

/* Value parsers shared with the CLI; each returns 0 or -EINVAL (-ERANGE on overflow). */
int config_parse_duration(const char *s, uint64_t *ms); /* "250ms", "30s", "5m", "1h", "2d" */
int config_parse_size(const char *s, uint64_t *bytes);  /* "512", "64k", "1m", "2g" (1024-based) */
int config_parse_bool(const char *s, bool *out);        /* yes/no, true/false, on/off, 1/0 */
int config_parse_listen(const char *s,
                        struct listen_addr *out); /* host:port, [v6]:port, unix:PATH */
int config_parse_measurement(const char *s, struct measurement_set *out); /* "pcr0=HEX pcr8=HEX" */

/**
 * Parses "NAME:KEY", KEY being the base64 of a 32-byte Ed25519 public key or the absolute path
 * of a PEM public key file. 0, or -EINVAL with the reason in `why`.
 */
int config_parse_policy_key(const char *s, struct policy_key *out, char *why, size_t cap);

/** "record", "interval", "none". */
const char *config_audit_fsync_name(enum audit_fsync_mode m);

/** True for Unix sockets and for TCP addresses in 127.0.0.0/8 or ::1. */
bool config_listen_is_loopback(const struct listen_addr *a);

/** "127.0.0.1:8080", "[::1]:8080" or "unix:/run/x.sock". */
void config_listen_describe(const struct listen_addr *a, char *out, size_t cap);

/** True when `a` and `b` name the same address (IPv6 compared as addresses, no resolution). */
bool config_listen_equal(const struct listen_addr *a, const struct listen_addr *b);

/** True when `a` and `b` cannot both be bound: the same address, a wildcard (0.0.0.0, ::) and
 *  an address of its family on the same port, or one Unix path spelled two ways ("/d//a",
 *  "/d/./a", "/d/x/../a"). */
bool config_listen_clash(const struct listen_addr *a, const struct listen_addr *b);

/** The value of one hexadecimal digit (either case), or -1. */
int config_hex_digit(int c);

const char *config_profile_name(enum evidence_profile p);
const char *config_binding_name(enum binding_mode b);
const char *config_nonce_name(enum nonce_placement n); /* "query", "session", "none" */
int config_parse_binding(const char *s, enum binding_mode *out);
int config_parse_profile(const char *s, enum evidence_profile *out);

#endif
