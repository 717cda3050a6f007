/*
 * The evidence envelope (BRIEF §4): an evidence HTTP body is raw CBOR, a JSON object carrying
 * the document in base64, or bare base64. This module turns it into the raw document bytes and
 * applies the two size gates; it does not look inside the document.
 */
#ifndef ATTESTPROXY_VERIFY_EVIDENCE_H
#define ATTESTPROXY_VERIFY_EVIDENCE_H

#include <stddef.h>
#include <stdint.h>

#include "verify/reason.h"

/* Evidence encodings, as sniffed. */
enum evidence_format {
    EVIDENCE_CBOR = 0,
    EVIDENCE_JSON,
    EVIDENCE_BASE64,
};

/**
 * Sniffs the encoding of `body` (BRIEF §4): first byte 0x84 or 0xd2 is raw CBOR; `{` (after
 * optional ASCII whitespace) is JSON; otherwise base64 — except that a first byte outside the
 * base64 alphabet and whitespace marks a binary body, which goes to the CBOR decoder so that the
 * rejection names the structural fault.
 */
enum evidence_format evidence_sniff_format(const uint8_t *body, size_t len);

/**
 * Decodes `body` (at most VERIFY_MAX_ENVELOPE bytes) into the document. For raw CBOR `*doc`
 * points into `body`; otherwise the document is decoded into `scratch`, which must hold
 * VERIFY_MAX_INPUT bytes, and `*doc` points there. Either way `*doc_len` is 1..VERIFY_MAX_INPUT.
 *
 * Returns 0; VERIFY_REJECT with the reason in `err`; or -ENOMEM. Nothing is retained after the
 * call; the JSON tree, when there is one, is freed before returning.
 */
int evidence_decode(const uint8_t *body, size_t len, uint8_t *scratch, const uint8_t **doc,
                    size_t *doc_len, struct verify_error *err);

/**
 * Decodes standard base64 (RFC 4648 §4; ASCII space, tab, CR and LF ignored; padding optional
 * but, when present, only at the end) into `out` (cap bytes). Returns 0, -EINVAL for malformed
 * input, or -E2BIG when the output would exceed `cap`. Exposed for the CLI and the tests.
 */
int evidence_decode_base64(const char *in, size_t len, uint8_t *out, size_t cap, size_t *out_len);

#endif
