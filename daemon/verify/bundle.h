/*
 * Signed, versioned policy bundles (docs/policy-bundles.md): a strict line-format body carried
 * in a C2SP signed note (the body, a blank line, then "— <key name> <base64(key id || sig)>"
 * lines), signed with Ed25519.
 *
 * Everything here is a pure function over bytes in memory: no file, clock or state directory
 * is touched. The daemon (app/bundles.c) reads the file, passes the time and the trusted keys,
 * and applies the anti-rollback and expiry rules; the CLI (app/policy_cmd.c) signs and shows.
 */
#ifndef ATTESTPROXY_VERIFY_BUNDLE_H
#define ATTESTPROXY_VERIFY_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "base/config.h"
#include "base/trust.h"

#define BUNDLE_MAX_BYTES    (64 * 1024) /* a whole bundle file, body and signatures */
#define BUNDLE_MAX_SERVICES 64
#define BUNDLE_MAX_SIGS     16 /* signature lines; more is malformed */
#define BUNDLE_LINE_MAX     4096
#define BUNDLE_SIG_MAX      512 /* decoded signature bytes of one line (other algorithms) */
#define BUNDLE_HEADER       "attestproxy-policy-bundle v1"

/* One signature line as parsed; it is checked only when its key name and id are trusted. */
struct bundle_sig {
    char key_name[POLICY_KEY_NAME_MAX];
    uint8_t key_id[4];
    uint8_t sig[BUNDLE_SIG_MAX];
    size_t sig_len;
};

struct bundle {
    uint64_t version;              /* >= 1 */
    int64_t issued_ms, expires_ms; /* Unix ms; issued < expires */
    char services[BUNDLE_MAX_SERVICES][CONFIG_NAME_MAX];
    size_t n_services;
    bool allow_debug;
    struct measurement_set sets[POLICY_MAX_SETS];
    size_t n_sets;
    size_t body_len;    /* bytes of the signed text, its final newline included */
    uint8_t digest[32]; /* SHA-256 of the whole bundle (body, blank line, signatures) */
    struct bundle_sig sigs[BUNDLE_MAX_SIGS];
    size_t n_sigs;
};

/* Why a bundle is not accepted; names are the `reason` of event=policy_bundle_refused and of
 * attestproxy_policy_bundle_refused_total. The last ones are decided by the daemon, not here. */
enum bundle_verdict {
    BUNDLE_OK = 0,
    BUNDLE_MALFORMED,       /* "malformed": not a strict bundle, or not a signed note */
    BUNDLE_UNKNOWN_KEY,     /* "unknown_key": no signature line from a trusted key */
    BUNDLE_BAD_SIGNATURE,   /* "bad_signature": a trusted key's signature does not verify */
    BUNDLE_NOT_FOR_SERVICE, /* "not_for_service": the service is not listed */
    BUNDLE_EXPIRED,         /* "expired": now >= expires + policy_expiry_grace */
    BUNDLE_NOT_YET_VALID,   /* "not_yet_valid": issued after now + clock_skew */
    BUNDLE_ROLLBACK,        /* "rollback": version lower than the highest accepted */
    BUNDLE_VERSION_REUSED,  /* "version_reused": same version as accepted, other content */
    BUNDLE_UNREADABLE,      /* "unreadable": the file cannot be read */
    BUNDLE_STATE_ERROR,     /* "state_error": the state directory cannot be read or written */
    BUNDLE_VERDICT_COUNT_
};

/** The label of a verdict ("bad_signature"); never NULL. */
const char *bundle_verdict_name(enum bundle_verdict v);

/**
 * Parses a signed bundle (`len` bytes, at most BUNDLE_MAX_BYTES) into `out`: the signed-note
 * envelope, then the body, strictly (docs/policy-bundles.md). Signatures are parsed, not
 * verified. Returns 0, or -EINVAL with the reason in `why` ("line 5: unknown line").
 */
int bundle_parse(const uint8_t *data, size_t len, struct bundle *out, char *why, size_t cap);

/**
 * Parses an unsigned body alone (what `policy sign` signs): the same strict rules. `out` gets
 * body_len = len; no signatures, no digest. Returns 0 or -EINVAL with the reason in `why`.
 */
int bundle_parse_body(const uint8_t *data, size_t len, struct bundle *out, char *why, size_t cap);

/**
 * Checks the signatures of a parsed bundle `b` over its body (`data`, the bytes it was parsed
 * from) against the trusted `keys`. Lines from keys not in `keys` are ignored; the first line
 * whose name and key id match a trusted key decides: BUNDLE_OK (with that key's index in
 * `*signer`) or BUNDLE_BAD_SIGNATURE. No line from a trusted key: BUNDLE_UNKNOWN_KEY.
 */
enum bundle_verdict bundle_verify(const struct bundle *b, const uint8_t *data,
                                  const struct policy_key *keys, size_t n_keys, size_t *signer);

/** The C2SP key id of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || public key)[:4]. */
void bundle_key_id(const char *name, const uint8_t pub[POLICY_KEY_LEN], uint8_t id[4]);

/**
 * Signs `body` (a valid body, checked by the caller) with the Ed25519 private key `pkey` under
 * `name`, and writes the signature line "— NAME BASE64\n" into `line`. Returns its length, or
 * a negative code (-EINVAL: not an Ed25519 key or a bad name; -ENOSPC; -EIO: OpenSSL failed).
 */
int bundle_sign_line(const uint8_t *body, size_t len, EVP_PKEY *pkey, const char *name, char *line,
                     size_t cap);

/** True when `name` is a valid key name: 1..63 printable ASCII, no space, '+' or ':'. */
bool bundle_key_name_valid(const char *name);

/** Parses "2026-12-01T00:00:00Z" (exactly this form, UTC) into Unix ms. 0 or -EINVAL. */
int bundle_parse_time(const char *s, size_t len, int64_t *ms);

/** Formats Unix ms as "2026-12-01T00:00:00Z" (21 bytes with the NUL). */
void bundle_format_time(int64_t ms, char out[24]);

#endif
