/*
 * Why a document was rejected: one table of named reasons, each tied to the stage that reports
 * it. Metrics label failures by verify_reason_name() (a fixed identifier such as
 * "chain_expired"); logs and the CLI print verify_reason_string() ("chain: certificate
 * expired"). docs/attestation.md lists every row.
 *
 * A reason may carry a short detail (a field name, a certificate position, a PCR index, an
 * OpenSSL verify error name). Details are always chosen by the verifier from bounded, fixed
 * vocabularies — never copied from the document — so a hostile document cannot inject text
 * into logs or metrics through them.
 */
#ifndef ATTESTPROXY_VERIFY_REASON_H
#define ATTESTPROXY_VERIFY_REASON_H

#include <errno.h>
#include <stddef.h>

/* Where a rejection happened; each stage has its own reasons (see the table below). */
enum verify_stage {
    VERIFY_STAGE_NONE = 0,  /* accepted */
    VERIFY_STAGE_ENVELOPE,  /* "envelope: ..." evidence body encoding */
    VERIFY_STAGE_COSE,      /* "cose: ..."     CBOR / COSE_Sign1 structure */
    VERIFY_STAGE_PAYLOAD,   /* "payload: ..."  attestation document fields */
    VERIFY_STAGE_CHAIN,     /* "chain: ..."    certificates */
    VERIFY_STAGE_SIGNATURE, /* "signature: ..." */
    VERIFY_STAGE_POLICY,    /* "policy: ..."   digest, freshness, nonce, PCRs, debug */
    VERIFY_STAGE_BINDING,   /* "binding: ..."  document vs TLS peer */
    VERIFY_STAGE_INTERNAL,  /* "internal: ..." allocation or library failure (still a rejection) */
};

/*
 * The reason table: X(enum suffix, stage, metric name, message). The message starts with the
 * stage name; a detail, when present, is appended as " (detail)".
 */
#define VERIFY_REASONS(X)                                                                          \
    X(OK, NONE, "ok", "accepted")                                                                  \
    X(ENVELOPE_EMPTY, ENVELOPE, "envelope_empty", "envelope: evidence is empty")                   \
    X(ENVELOPE_TOO_LARGE, ENVELOPE, "envelope_too_large", "envelope: evidence exceeds 64 KiB")     \
    X(ENVELOPE_DOC_TOO_LARGE, ENVELOPE, "envelope_document_too_large",                             \
      "envelope: document exceeds 16 KiB")                                                         \
    X(ENVELOPE_BAD_JSON, ENVELOPE, "envelope_bad_json",                                            \
      "envelope: JSON is malformed or has duplicate keys")                                         \
    X(ENVELOPE_JSON_NO_DOCUMENT, ENVELOPE, "envelope_json_no_document",                            \
      "envelope: JSON has no attestation_doc, attestation_document, document or body string")      \
    X(ENVELOPE_JSON_AMBIGUOUS, ENVELOPE, "envelope_json_ambiguous",                                \
      "envelope: JSON has more than one document field")                                           \
    X(ENVELOPE_BAD_BASE64, ENVELOPE, "envelope_bad_base64", "envelope: base64 is malformed")       \
    X(COSE_MALFORMED, COSE, "cose_malformed", "cose: malformed or truncated CBOR")                 \
    X(COSE_TAG, COSE, "cose_tag", "cose: tag other than a single tag 18")                          \
    X(COSE_NOT_ARRAY, COSE, "cose_not_array", "cose: not a COSE_Sign1 array")                      \
    X(COSE_ARRAY_LENGTH, COSE, "cose_array_length", "cose: COSE_Sign1 array is not 4 elements")    \
    X(COSE_INDEFINITE_STRING, COSE, "cose_indefinite_string",                                      \
      "cose: indefinite-length byte or text string")                                               \
    X(COSE_PROTECTED, COSE, "cose_protected", "cose: protected header is not {1: -35} (ES384)")    \
    X(COSE_UNPROTECTED, COSE, "cose_unprotected", "cose: unprotected header is not an empty map")  \
    X(COSE_PAYLOAD, COSE, "cose_payload", "cose: payload is not a byte string of 1..16384 bytes")  \
    X(COSE_SIGNATURE_FORMAT, COSE, "cose_signature_format",                                        \
      "cose: signature is not a 96-byte raw r||s byte string")                                     \
    X(COSE_TRAILING, COSE, "cose_trailing", "cose: trailing bytes after COSE_Sign1")               \
    X(PAYLOAD_MALFORMED, PAYLOAD, "payload_malformed", "payload: malformed or truncated CBOR")     \
    X(PAYLOAD_NOT_MAP, PAYLOAD, "payload_not_map", "payload: not a map")                           \
    X(PAYLOAD_TRAILING, PAYLOAD, "payload_trailing", "payload: trailing bytes after the map")      \
    X(PAYLOAD_TAG, PAYLOAD, "payload_tag", "payload: tagged item")                                 \
    X(PAYLOAD_INDEFINITE_STRING, PAYLOAD, "payload_indefinite_string",                             \
      "payload: indefinite-length byte or text string")                                            \
    X(PAYLOAD_UNKNOWN_KEY, PAYLOAD, "payload_unknown_key", "payload: unknown or non-text key")     \
    X(PAYLOAD_DUPLICATE_KEY, PAYLOAD, "payload_duplicate_key", "payload: duplicate key")           \
    X(PAYLOAD_MISSING_FIELD, PAYLOAD, "payload_missing_field", "payload: missing mandatory field") \
    X(PAYLOAD_NULL_FIELD, PAYLOAD, "payload_null_field", "payload: null in a mandatory field")     \
    X(PAYLOAD_FIELD, PAYLOAD, "payload_field", "payload: field has the wrong type or size")        \
    X(PAYLOAD_TIMESTAMP, PAYLOAD, "payload_timestamp",                                             \
      "payload: timestamp is zero or exceeds 63 bits")                                             \
    X(PAYLOAD_PCR_INDEX, PAYLOAD, "payload_pcr_index", "payload: pcr index outside 0..31")         \
    X(PAYLOAD_PCR_DUPLICATE, PAYLOAD, "payload_pcr_duplicate", "payload: duplicate pcr index")     \
    X(PAYLOAD_PCR_LENGTH, PAYLOAD, "payload_pcr_length",                                           \
      "payload: pcr value is not 32, 48 or 64 bytes")                                              \
    X(CHAIN_ROOT_MISMATCH, CHAIN, "chain_root_mismatch",                                           \
      "chain: cabundle[0] is not the pinned root")                                                 \
    X(CHAIN_BAD_DER, CHAIN, "chain_bad_der",                                                       \
      "chain: certificate DER is malformed or has trailing bytes")                                 \
    X(CHAIN_NOT_YET_VALID, CHAIN, "chain_not_yet_valid", "chain: certificate not yet valid")       \
    X(CHAIN_EXPIRED, CHAIN, "chain_expired", "chain: certificate expired")                         \
    X(CHAIN_BAD_SIGNATURE, CHAIN, "chain_bad_signature", "chain: certificate signature invalid")   \
    X(CHAIN_UNTRUSTED, CHAIN, "chain_untrusted", "chain: no path to the pinned root")              \
    X(CHAIN_ORDER, CHAIN, "chain_order", "chain: cabundle is not the root-first path to the leaf") \
    X(CHAIN_NOT_CA, CHAIN, "chain_not_ca",                                                         \
      "chain: issuer is not a CA (critical basicConstraints cA, keyCertSign)")                     \
    X(CHAIN_PATH_LENGTH, CHAIN, "chain_path_length", "chain: path length constraint exceeded")     \
    X(CHAIN_KEY, CHAIN, "chain_key", "chain: certificate key is not EC P-384")                     \
    X(CHAIN_SIGNATURE_ALGORITHM, CHAIN, "chain_signature_algorithm",                               \
      "chain: certificate is not signed with ecdsa-with-SHA384")                                   \
    X(CHAIN_LEAF, CHAIN, "chain_leaf",                                                             \
      "chain: leaf is a CA, has a pathLen or lacks digitalSignature")                              \
    X(CHAIN_EXTENSION, CHAIN, "chain_extension", "chain: invalid or unhandled critical extension") \
    X(CHAIN_OTHER, CHAIN, "chain_other", "chain: verification failed")                             \
    X(SIGNATURE_INVALID, SIGNATURE, "signature_invalid",                                           \
      "signature: ES384 signature does not verify with the leaf key")                              \
    X(POLICY_DIGEST, POLICY, "policy_digest", "policy: digest is not SHA384")                      \
    X(POLICY_STALE, POLICY, "policy_stale", "policy: document is older than max_age")              \
    X(POLICY_FUTURE, POLICY, "policy_future", "policy: document timestamp is after now + skew")    \
    X(POLICY_NONCE_MISSING, POLICY, "policy_nonce_missing", "policy: nonce missing from document") \
    X(POLICY_NONCE_MISMATCH, POLICY, "policy_nonce_mismatch", "policy: nonce does not match")      \
    X(POLICY_PCR_LENGTH, POLICY, "policy_pcr_length", "policy: pcr value is not 48 bytes")         \
    X(POLICY_PCR_ABSENT, POLICY, "policy_pcr_absent", "policy: pcr0, pcr1 or pcr2 is absent")      \
    X(POLICY_DEBUG, POLICY, "policy_debug",                                                        \
      "policy: debug-mode enclave (pcr0, pcr1, pcr2 all zero)")                                    \
    X(POLICY_NO_MEASUREMENTS, POLICY, "policy_no_measurements",                                    \
      "policy: no measurement sets configured")                                                    \
    X(POLICY_PCR_MISMATCH, POLICY, "policy_pcr_mismatch", "policy: pcrs match no measurement set") \
    X(POLICY_EXPIRED, POLICY, "policy_expired",                                                    \
      "policy: the policy bundle in force has expired (expires + policy_expiry_grace)")            \
    X(BINDING_NO_PEER, BINDING, "binding_no_peer", "binding: no peer certificate to bind to")      \
    X(BINDING_USER_DATA_ABSENT, BINDING, "binding_user_data_absent",                               \
      "binding: user_data is absent")                                                              \
    X(BINDING_PUBLIC_KEY_ABSENT, BINDING, "binding_public_key_absent",                             \
      "binding: public_key is absent")                                                             \
    X(BINDING_SPKI_SHA256, BINDING, "binding_spki_sha256",                                         \
      "binding: user_data does not hash the peer key")                                             \
    X(BINDING_PUBLIC_KEY_SPKI, BINDING, "binding_public_key_spki",                                 \
      "binding: public_key is not the peer key")                                                   \
    X(BINDING_SPKI_DER, BINDING, "binding_spki_der", "binding: user_data is not the peer key")     \
    X(BINDING_SESSION, BINDING, "binding_session",                                                 \
      "binding: user_data does not hash the peer key with this TLS session's exporter")            \
    X(BINDING_CERT_SHA256, BINDING, "binding_cert_sha256",                                         \
      "binding: user_data does not hash the peer certificate")                                     \
    X(BINDING_NITRIDING, BINDING, "binding_nitriding",                                             \
      "binding: user_data is not a nitriding multihash of the peer certificate")                   \
    X(BINDING_BLINDAI, BINDING, "binding_blindai",                                                 \
      "binding: user_data is not a blindai digest of the peer certificate")                        \
    X(BINDING_MODE, BINDING, "binding_mode", "binding: unknown binding mode")                      \
    X(INTERNAL, INTERNAL, "internal", "internal: verifier error")

#define VERIFY_REASON_ENUM_(name, stage, id, msg) VERIFY_R_##name,
enum verify_reason { VERIFY_REASONS(VERIFY_REASON_ENUM_) VERIFY_R_COUNT_ };
#undef VERIFY_REASON_ENUM_

#define VERIFY_DETAIL_MAX 48

/*
 * A rejection as the stages report it: the reason and an optional detail from a fixed
 * vocabulary (see the file comment). Stages fill it through verify_error_set() and return
 * VERIFY_REJECT.
 */
struct verify_error {
    enum verify_reason reason;
    char detail[VERIFY_DETAIL_MAX];
};

/* What the stage functions return when they reject: a verdict, not an internal failure. */
#define VERIFY_REJECT (-EPERM)

/** Records `reason` (and `detail`, NULL for none) in `err`; returns VERIFY_REJECT. */
int verify_error_set(struct verify_error *err, enum verify_reason reason, const char *detail);

/** The message of a reason, e.g. "chain: certificate expired"; never NULL. */
const char *verify_reason_string(enum verify_reason reason);

/** The metric label of a reason, e.g. "chain_expired"; never NULL. */
const char *verify_reason_name(enum verify_reason reason);

/** The stage that reports a reason. */
enum verify_stage verify_reason_stage(enum verify_reason reason);

/** The name of a stage: "envelope", "cose", ..., "none" for acceptance. */
const char *verify_stage_name(enum verify_stage stage);

/**
 * Writes "message" or "message (detail)" into `out` (cap bytes, always NUL-terminated,
 * truncated if needed).
 */
void verify_error_format(const struct verify_error *err, char *out, size_t cap);

#endif
