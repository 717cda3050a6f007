#include "verify/evidence.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "verify/verifier.h"

/* The JSON members that may carry the document, in the order BRIEF §4 lists them. */
static const char *const json_doc_keys[] = {"attestation_doc", "attestation_document", "document",
                                            "body"};

static bool is_b64_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_b64_alpha(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Decodes one complete quad; `pad` '=' characters at its end give 3 - pad bytes. */
static int flush_quad(const unsigned char quad[4], int pad, uint8_t *out, size_t cap, size_t *n)
{
    unsigned char tmp[3];
    size_t take = (size_t)(3 - pad);
    /* EVP_DecodeBlock() always yields 3 bytes per quad, padding included, which is why the
     * padding is accounted for here rather than by its return value. */
    if (EVP_DecodeBlock(tmp, quad, 4) != 3)
        return -EINVAL;
    if (take > cap - *n)
        return -E2BIG;
    memcpy(out + *n, tmp, take);
    *n += take;
    return 0;
}

int evidence_decode_base64(const char *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    unsigned char quad[4];
    int q = 0;
    int pad = 0;
    bool done = false;
    size_t n = 0;
    int rc;

    /* Quads are collected one by one so that whitespace anywhere is skipped without a second,
     * unbounded copy of the input, and the output limit is checked before each write. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (is_b64_space(c))
            continue;
        if (done)
            return -EINVAL; /* data after a padded final quad */
        if (c == '=') {
            if (q < 2)
                return -EINVAL;
            pad++;
        } else if (!is_b64_alpha(c) || pad > 0) {
            return -EINVAL;
        }
        quad[q++] = c;
        if (q == 4) {
            rc = flush_quad(quad, pad, out, cap, &n);
            if (rc < 0)
                return rc;
            q = 0;
            done = pad > 0;
        }
    }
    if (q != 0) {
        /* An unpadded tail of 2 or 3 characters is accepted (some servers strip padding); a
         * lone character or an incomplete padded quad is not base64. */
        if (pad > 0 || q == 1)
            return -EINVAL;
        int tail_pad = 4 - q;
        while (q < 4)
            quad[q++] = '=';
        rc = flush_quad(quad, tail_pad, out, cap, &n);
        if (rc < 0)
            return rc;
    }
    *out_len = n;
    return 0;
}

enum evidence_format evidence_sniff_format(const uint8_t *body, size_t len)
{
    size_t i = 0;
    if (len > 0 && (body[0] == 0x84 || body[0] == 0xd2))
        return EVIDENCE_CBOR;
    while (i < len && is_b64_space(body[i]))
        i++;
    if (i < len && body[i] == '{')
        return EVIDENCE_JSON;
    /* A body that starts with a byte base64 can never contain (0x85, 0xd8, ...) is binary: it
     * goes to the strict COSE decoder, which names what is wrong with it, instead of failing
     * as "malformed base64". No body can be read both ways, so this adds no ambiguity. */
    if (i == 0 && len > 0 && !is_b64_alpha(body[0]) && body[0] != '=')
        return EVIDENCE_CBOR;
    return EVIDENCE_BASE64;
}

static int decode_b64_doc(const char *in, size_t len, uint8_t *scratch, size_t *doc_len,
                          struct verify_error *err)
{
    int rc = evidence_decode_base64(in, len, scratch, VERIFY_MAX_INPUT, doc_len);
    if (rc == -E2BIG)
        return verify_error_set(err, VERIFY_R_ENVELOPE_DOC_TOO_LARGE, NULL);
    if (rc < 0)
        return verify_error_set(err, VERIFY_R_ENVELOPE_BAD_BASE64, NULL);
    if (*doc_len == 0)
        return verify_error_set(err, VERIFY_R_ENVELOPE_EMPTY, NULL);
    return 0;
}

static int decode_json(const uint8_t *body, size_t len, uint8_t *scratch, size_t *doc_len,
                       struct verify_error *err)
{
    json_error_t jerr;
    json_t *root;
    json_t *found = NULL;
    const char *found_key = NULL;
    int rc;

    /* Duplicate members are refused: two parsers reading "the" document field of one object
     * differently is how ambiguity attacks start. */
    root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return verify_error_set(err, VERIFY_R_ENVELOPE_BAD_JSON, NULL);
    if (!json_is_object(root)) {
        rc = verify_error_set(err, VERIFY_R_ENVELOPE_BAD_JSON, NULL);
        goto out_root;
    }
    for (size_t i = 0; i < sizeof(json_doc_keys) / sizeof(json_doc_keys[0]); i++) {
        json_t *v = json_object_get(root, json_doc_keys[i]);
        if (v == NULL)
            continue;
        if (found != NULL) {
            rc = verify_error_set(err, VERIFY_R_ENVELOPE_JSON_AMBIGUOUS, NULL);
            goto out_root;
        }
        found = v;
        found_key = json_doc_keys[i];
    }
    if (found == NULL || !json_is_string(found)) {
        rc = verify_error_set(err, VERIFY_R_ENVELOPE_JSON_NO_DOCUMENT, found_key);
        goto out_root;
    }
    rc = decode_b64_doc(json_string_value(found), json_string_length(found), scratch, doc_len, err);
out_root:
    json_decref(root);
    return rc;
}

int evidence_decode(const uint8_t *body, size_t len, uint8_t *scratch, const uint8_t **doc,
                    size_t *doc_len, struct verify_error *err)
{
    int rc;

    *doc = NULL;
    *doc_len = 0;
    if (len == 0)
        return verify_error_set(err, VERIFY_R_ENVELOPE_EMPTY, NULL);
    if (len > VERIFY_MAX_ENVELOPE)
        return verify_error_set(err, VERIFY_R_ENVELOPE_TOO_LARGE, NULL);

    switch (evidence_sniff_format(body, len)) {
    case EVIDENCE_CBOR:
        if (len > VERIFY_MAX_INPUT)
            return verify_error_set(err, VERIFY_R_ENVELOPE_DOC_TOO_LARGE, NULL);
        *doc = body;
        *doc_len = len;
        return 0;
    case EVIDENCE_JSON:
        rc = decode_json(body, len, scratch, doc_len, err);
        break;
    case EVIDENCE_BASE64:
    default:
        rc = decode_b64_doc((const char *)body, len, scratch, doc_len, err);
        break;
    }
    if (rc == 0)
        *doc = scratch;
    return rc;
}
