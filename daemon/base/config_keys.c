/*
 * The configuration's tables: every key with its section, type, field, range, default and
 * documentation (config__keys, the one source of truth for loading, defaults, `check-config`
 * and docs/configuration.md), the evidence profile presets and the binding names, and the
 * lookups over them.
 */
#include "base/config_internal.h"

#include <errno.h>
#include <string.h>

#define D(field) offsetof(struct daemon_config, field), sizeof(((struct daemon_config *)0)->field)
#define S(field) offsetof(struct service_config, field), sizeof(((struct service_config *)0)->field)

const struct key_def config__keys[] = {
    /* [daemon] */
    {"log_level", SEC_DAEMON, T_LOG_LEVEL, D(log_level), 0, 0, "info", 0,
     "debug | info | warn | error"},
    {"log_format", SEC_DAEMON, T_LOG_FORMAT, D(log_format), 0, 0, "logfmt", 0,
     "logfmt | json: one line per event on stderr"},
    {"root_ca", SEC_DAEMON, T_STRING, D(root_ca), 0, 0, NULL, 0,
     "PEM file replacing the compiled-in AWS Nitro Enclaves Root-G1 (tests, other partitions); "
     "read again on every reload"},
    {"admin_listen", SEC_DAEMON, T_ADMIN, D(admin), 0, 0, NULL, 0,
     "admin API address: host:port on loopback or unix:PATH; unset = no admin listener"},
    {"shutdown_timeout", SEC_DAEMON, T_DURATION, D(shutdown_timeout_ms), 0, HOUR, "30s", 0,
     "on SIGTERM, how long in-flight exchanges may finish before connections are closed"},
    {"ready_requires_attestation", SEC_DAEMON, T_BOOL, D(ready_requires_attestation), 0, 0, "no", 0,
     "report ready (systemd, /readyz) only once every service has an attested pin"},
    {"batch_wait_us", SEC_DAEMON, T_U32, D(batch_wait_us), 0, 1000, "20", 0,
     "microseconds a busy loop pass (two or more reads, 32 or more exchanges in flight) waits "
     "before polling again, so that events gather and the peers' cores wake the daemon less "
     "often; 0 = never"},
    {"busy_poll_us", SEC_DAEMON, T_U32, D(busy_poll_us), 0, 1000, "0", 0,
     "microseconds a loop pass that handled a read keeps polling without sleeping, so that the "
     "next event finds the daemon awake: lower latency at light load for more CPU; 0 = never"},
    {"policy_key", SEC_DAEMON, T_POLICY_KEY, D(policy_keys), 0, 0, NULL, KEY_REPEAT,
     "a key trusted to sign policy bundles, NAME:KEY (KEY: base64 Ed25519 public key, or the "
     "absolute path of a PEM public key); several overlap during a key rotation (at most 16)"},
    {"state_dir", SEC_DAEMON, T_STRING, D(state_dir), 0, 0, "/var/lib/attestproxy", 0,
     "directory keeping the last accepted policy bundle of each service (anti-rollback across "
     "restarts)"},
    {"audit_log", SEC_DAEMON, T_STRING, D(audit_log), 0, 0, NULL, 0,
     "append-only, hash-chained JSON lines file of verdicts, policy changes, pin cuts and "
     "reloads; unset = none"},
    {"audit_max_bytes", SEC_DAEMON, T_SIZE, D(audit_max_bytes), 0, UINT64_MAX, "64m", 0,
     "rotate the audit log (to FILE.1, FILE.2, ... up to FILE.99999; nothing is deleted) before "
     "it grows past this; 0 = never"},
    {"audit_fsync", SEC_DAEMON, T_AUDIT_FSYNC, D(audit_fsync), 0, 0, "record", 0,
     "record | interval | none: fsync after every audit record, at most once a second, or never"},
    {"audit_archive", SEC_DAEMON, T_STRING, D(audit_archive), 0, 0, NULL, 0,
     "directory keeping each verified evidence document once, named by its SHA-256; unset = none"},
    {"audit_archive_max_bytes", SEC_DAEMON, T_SIZE, D(audit_archive_max_bytes), 0, UINT64_MAX,
     "256m", 0, "the archive's size bound; the oldest documents are removed beyond it"},

    /* [service NAME]: client side */
    {"listen", SEC_SERVICE, T_LISTEN, S(listen), 0, 0, NULL, KEY_REQUIRED | KEY_REPEAT,
     "host:port (IP literal) or unix:PATH; may repeat; non-loopback needs allow_remote + token"},
    {"unix_mode", SEC_SERVICE, T_MODE, S(unix_mode), 0, 0777, "0660", 0,
     "permission bits of Unix listener sockets"},
    {"allow_remote", SEC_SERVICE, T_BOOL, S(allow_remote), 0, 0, "no", 0,
     "permit a non-loopback TCP listener (requires token or token_file)"},
    {"token", SEC_SERVICE, T_STRING, S(token), 0, 0, NULL, KEY_SECRET,
     "bearer token clients must send (Authorization: Bearer ...), at least 16 characters"},
    {"token_file", SEC_SERVICE, T_TOKEN_FILE, S(token_file), 0, 0, NULL, 0,
     "file holding the bearer token (first line); alternative to token"},
    {"allowed_hosts", SEC_SERVICE, T_HOSTS, S(allowed_hosts), 0, 0, NULL, 0,
     "Host header values accepted (space separated, at most 16 of 255 characters); unset = "
     "localhost 127.0.0.1 [::1] and the listen addresses"},
    {"keep_forwarded", SEC_SERVICE, T_BOOL, S(keep_forwarded), 0, 0, "no", 0,
     "pass client X-Forwarded-* and Forwarded headers upstream instead of removing them"},
    {"attestation_header", SEC_SERVICE, T_BOOL, S(attestation_header), 0, 0, "no", 0,
     "add X-Attestation (pin, PCR0, verification time) to each response"},
    {"max_connections", SEC_SERVICE, T_U32, S(max_connections), 1, 1000000, "1024", 0,
     "client connections served at once by this service"},
    {"max_header_bytes", SEC_SERVICE, T_SIZE, S(max_header_bytes), 1024, 1 * MIB, "32k", 0,
     "request head size limit (request line and headers); beyond: 431"},
    {"max_headers", SEC_SERVICE, T_U32, S(max_headers), 1, 1000, "100", 0,
     "request header count limit; beyond: 431"},
    {"max_body_size", SEC_SERVICE, T_SIZE, S(max_body_size), 0, UINT64_MAX, "0", 0,
     "request body size limit; 0 = unlimited; beyond: 413"},
    {"client_header_timeout", SEC_SERVICE, T_DURATION, S(client_header_timeout_ms), 100, HOUR,
     "10s", 0, "time allowed to receive a request head"},
    {"client_idle_timeout", SEC_SERVICE, T_DURATION, S(client_idle_timeout_ms), 100, DAY, "60s", 0,
     "idle keep-alive client connections are closed after this"},
    {"allow_upgrade", SEC_SERVICE, T_UPGRADE, S(allow_websocket), 0, 0, "websocket", 0,
     "websocket | none: relay RFC 6455 handshakes as attested tunnels; other Upgrade tokens "
     "(and websocket with none) are removed and the request relayed as plain HTTP"},
    {"allowed_origins", SEC_SERVICE, T_ORIGINS, S(allowed_origins), 0, 0, NULL, 0,
     "origins (scheme://host[:port], space separated, at most 16) whose pages may open a "
     "WebSocket; unset "
     "= only http://<the request's Host>; a handshake without Origin (no browser) is allowed"},
    {"max_tunnels", SEC_SERVICE, T_U32, S(max_tunnels), 0, 1000000, "256", 0,
     "WebSocket tunnels open at once (handshakes in progress included); beyond: 503; 0 = none"},
    {"tunnel_idle_timeout", SEC_SERVICE, T_DURATION, S(tunnel_idle_timeout_ms), 1000, DAY, "5m", 0,
     "a tunnel with no byte in either direction for this long is closed (1001)"},
    {"tunnel_max_life", SEC_SERVICE, T_DURATION, S(tunnel_max_life_ms), 0, 30 * DAY, "0s", 0,
     "a tunnel is closed (1001) this long after its handshake; 0 = no limit (a tunnel still "
     "ends with its key's attestation)"},

    /* [service NAME]: upstream side */
    {"upstream", SEC_SERVICE, T_UPSTREAM, S(upstream_host), 0, 0, NULL, KEY_REQUIRED,
     "enclave TLS endpoint, host:port"},
    {"sni", SEC_SERVICE, T_STRING, S(sni), 0, 0, NULL, 0,
     "TLS server name; unset = the upstream host when it is a DNS name"},
    {"connect_timeout", SEC_SERVICE, T_DURATION, S(connect_timeout_ms), 100, 10 * MIN, "5s", 0,
     "TCP connect plus TLS handshake (through an upstream_proxy: the TLS handshake alone)"},
    {"first_byte_timeout", SEC_SERVICE, T_DURATION, S(first_byte_timeout_ms), 100, DAY, "60s", 0,
     "from the end of the request to the first response byte"},
    {"stream_idle_timeout", SEC_SERVICE, T_DURATION, S(stream_idle_timeout_ms), 100, DAY, "300s", 0,
     "longest silence in either direction while a body is streaming"},
    {"pool_max_idle", SEC_SERVICE, T_U32, S(pool_max_idle), 0, 10000, "1024", 0,
     "hard cap on idle upstream connections kept for reuse (about 40 KiB each); 0 = no reuse"},
    {"pool_idle_timeout", SEC_SERVICE, T_DURATION, S(pool_idle_timeout_ms), 100, HOUR, "30s", 0,
     "an idle upstream connection is closed after this (keep it below the enclave's)"},
    {"pool_purge_interval", SEC_SERVICE, T_DURATION, S(pool_purge_interval_ms), 100, HOUR, "5s", 0,
     "every interval, half of the idle connections beyond recent demand (the most connections "
     "in use at once lately) are closed"},
    {"session_resumption", SEC_SERVICE, T_BOOL, S(session_resumption), 0, 0, "no", 0,
     "resume TLS sessions with the enclave; a resumed session proves the ticket key, not the "
     "attested key: only for enclaves that keep their ticket keys inside (docs/security.md)"},
    {"upstream_proxy", SEC_SERVICE, T_PROXY_URL, S(upstream_proxy_host), 0, 0, NULL, 0,
     "http://HOST:PORT of an HTTP forward proxy: the enclave is reached through a CONNECT tunnel, "
     "TLS and the pin stay end to end; unset = direct (HTTP_PROXY and HTTPS_PROXY are ignored)"},
    {"upstream_proxy_credentials", SEC_SERVICE, T_PROXY_CREDENTIALS, S(upstream_proxy_credentials),
     0, 0, NULL, 0,
     "file holding user:password (first line) for Proxy-Authorization: Basic, read at every "
     "reload; sent in clear to the proxy"},
    {"upstream_proxy_connect_timeout", SEC_SERVICE, T_DURATION,
     S(upstream_proxy_connect_timeout_ms), 100, 10 * MIN, "5s", 0,
     "TCP connect to the upstream proxy"},
    {"upstream_proxy_timeout", SEC_SERVICE, T_DURATION, S(upstream_proxy_timeout_ms), 100, 10 * MIN,
     "10s", 0,
     "from the CONNECT request to the proxy's answer (the TLS handshake then has connect_timeout)"},

    /* [service NAME]: attestation */
    {"profile", SEC_SERVICE, T_PROFILE, S(profile), 0, 0, "native", 0,
     "evidence profile: native | native-session | nitriding | blindai | evervault (presets the "
     "next four keys)"},
    {"evidence_path", SEC_SERVICE, T_STRING, S(evidence_path), 0, 0, NULL, 0,
     "path of the evidence request; unset = the profile's"},
    {"nonce", SEC_SERVICE, T_NONCE, S(nonce), 0, 0, NULL, 0,
     "query | session | none: send ?nonce=<hex>, ?session_nonce=<hex> (the document's "
     "user_data then binds it to this TLS session) or no nonce; unset = the profile's"},
    {"nonce_bytes", SEC_SERVICE, T_U32, S(nonce_bytes), 16, 64, NULL, 0,
     "random nonce length in bytes; unset = the profile's"},
    {"binding", SEC_SERVICE, T_BINDING, S(binding), 0, 0, NULL, 0,
     "spki_sha256 | public_key_spki | spki_der | cert_sha256 | nitriding | blindai; unset = the "
     "profile's"},
    {"attestation_timeout", SEC_SERVICE, T_DURATION, S(attestation_timeout_ms), 100, 10 * MIN,
     "10s", 0, "fetching and verifying evidence over a new connection"},
    {"attestation_ttl", SEC_SERVICE, T_DURATION, S(attestation_ttl_ms), 1000, DAY, "10m", 0,
     "an attested pin is trusted this long at most (and never past its certificate)"},
    {"refresh_before", SEC_SERVICE, T_DURATION, S(refresh_before_ms), 0, DAY, "1m", 0,
     "re-attest over an idle pooled connection this long before a pin expires"},
    {"cert_margin", SEC_SERVICE, T_DURATION, S(cert_margin_ms), 0, HOUR, "1m", 0,
     "a pin expires this long before the enclave's NSM leaf certificate"},
    {"negative_cache", SEC_SERVICE, T_DURATION, S(negative_cache_ms), 0, HOUR, "5s", 0,
     "after a failed attestation, refuse the pin (503 + Retry-After) this long before retrying"},
    {"warm_attestation", SEC_SERVICE, T_BOOL, S(warm_attestation), 0, 0, "yes", 0,
     "attest at start and whenever no pin is fresh, over one pooled connection, and refresh "
     "pins without traffic (retries back off 1 s to 30 s); an idle daemon costs the enclave a "
     "connection and an attestation every attestation_ttl - refresh_before; no = attest on the "
     "first request"},
    {"max_age", SEC_SERVICE, T_DURATION_S64, S(policy.max_age_ms), 1000, DAY, "5m", 0,
     "oldest acceptable document timestamp (the only freshness proof without a nonce)"},
    {"clock_skew", SEC_SERVICE, T_DURATION_S64, S(policy.skew_ms), 0, HOUR, "60s", 0,
     "allowance for clock differences on certificates and document timestamps"},
    {"measurement", SEC_SERVICE, T_MEASUREMENT, S(policy), 0, 0, NULL, KEY_REPEAT,
     "one trusted measurement set, \"pcr0=HEX pcr1=HEX ...\" (96 hex digits each); may repeat "
     "(any one set may match) and continue on indented lines"},
    {"allow_debug", SEC_SERVICE, T_BOOL, S(policy.allow_debug), 0, 0, "no", 0,
     "accept debug-mode enclaves (PCR0..2 all zero); logs a warning at every attestation"},
    {"policy_file", SEC_SERVICE, T_STRING, S(policy_file), 0, 0, NULL, 0,
     "file with a [policy] section (measurement, allow_debug) used instead of inline keys"},
    {"policy_bundle", SEC_SERVICE, T_STRING, S(policy_bundle), 0, 0, NULL, 0,
     "signed policy bundle used instead of inline keys or policy_file (docs/policy-bundles.md); "
     "needs a policy_key in [daemon]"},
    {"policy_expiry_grace", SEC_SERVICE, T_DURATION, S(policy_expiry_grace_ms), 0, 30 * DAY, "0", 0,
     "how long past its expires line a policy bundle still admits new attestations"},
    {"watch_policy", SEC_SERVICE, T_BOOL, S(watch_policy), 0, 0, "yes", 0,
     "reload when policy_file or policy_bundle changes on disk"},

    /* [policy] in a policy file */
    {"measurement", SEC_POLICY, T_MEASUREMENT, 0, sizeof(struct policy), 0, 0, NULL, KEY_REPEAT,
     "one trusted measurement set, as in a service"},
    {"allow_debug", SEC_POLICY, T_BOOL, offsetof(struct policy, allow_debug), sizeof(bool), 0, 0,
     NULL, 0, "accept debug-mode enclaves"},
};

const size_t config__n_keys = sizeof(config__keys) / sizeof(config__keys[0]);

const struct key_def *config__find_key(enum section_kind sec, const char *name)
{
    for (size_t i = 0; i < config__n_keys; i++) {
        if (config__keys[i].section == sec && strcmp(config__keys[i].name, name) == 0)
            return &config__keys[i];
    }
    return NULL;
}

/* Profile presets (BRIEF §4). */
const struct profile_preset config__profiles[] = {
    [PROFILE_NATIVE] = {"native", "/.well-known/nitro-attestation", NONCE_QUERY, 32,
                        BINDING_SPKI_SHA256},
    [PROFILE_NITRIDING] = {"nitriding", "/enclave/attestation", NONCE_QUERY, 20, BINDING_NITRIDING},
    [PROFILE_BLINDAI] = {"blindai", "/enclave/attestation", NONCE_NONE, 0, BINDING_BLINDAI},
    [PROFILE_EVERVAULT] = {"evervault", "/.well-known/attestation", NONCE_NONE, 0,
                           BINDING_SPKI_DER},
    [PROFILE_NATIVE_SESSION] = {"native-session", "/.well-known/nitro-attestation", NONCE_SESSION,
                                32, BINDING_SPKI_SHA256},
};

static const char *const binding_names[] = {
    [BINDING_SPKI_SHA256] = "spki_sha256",
    [BINDING_PUBLIC_KEY_SPKI] = "public_key_spki",
    [BINDING_SPKI_DER] = "spki_der",
    [BINDING_CERT_SHA256] = "cert_sha256",
    [BINDING_NITRIDING] = "nitriding",
    [BINDING_BLINDAI] = "blindai",
    [BINDING_NONE] = "none",
};

const char *config_profile_name(enum evidence_profile p)
{
    if ((unsigned)p >= sizeof(config__profiles) / sizeof(config__profiles[0]))
        return "unknown";
    return config__profiles[p].name;
}

const char *config_nonce_name(enum nonce_placement n)
{
    switch (n) {
    case NONCE_QUERY:
        return "query";
    case NONCE_SESSION:
        return "session";
    case NONCE_NONE:
        return "none";
    }
    return "unknown";
}

const char *config_binding_name(enum binding_mode b)
{
    if ((unsigned)b >= sizeof(binding_names) / sizeof(binding_names[0]))
        return "unknown";
    return binding_names[b];
}

int config_parse_profile(const char *s, enum evidence_profile *out)
{
    for (unsigned i = 0; i < sizeof(config__profiles) / sizeof(config__profiles[0]); i++) {
        if (strcmp(s, config__profiles[i].name) == 0) {
            *out = (enum evidence_profile)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* "none" is not accepted here: it exists for offline verification only. */
int config_parse_binding(const char *s, enum binding_mode *out)
{
    for (unsigned i = 0; i < BINDING_NONE; i++) {
        if (strcmp(s, binding_names[i]) == 0) {
            *out = (enum binding_mode)i;
            return 0;
        }
    }
    return -EINVAL;
}
