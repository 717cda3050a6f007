#include "verify/policy.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "base/hex.h"
#include "verify/cose.h"
#include "verify/reason.h"

static const uint8_t zero_pcr[NITRO_PCR_LEN];

/* now - a and now + a without signed overflow: an injected clock can be anything. */
static int64_t sub_sat(int64_t now, int64_t a)
{
    if (a <= 0)
        return now;
    return now < INT64_MIN + a ? INT64_MIN : now - a;
}

static int64_t add_sat(int64_t now, int64_t a)
{
    if (a <= 0)
        return now;
    return now > INT64_MAX - a ? INT64_MAX : now + a;
}

static bool pcr_is(const struct nitro_document *doc, unsigned i, const uint8_t *value)
{
    return (doc->pcr_mask & (1u << i)) && doc->pcrs[i].len == NITRO_PCR_LEN &&
           CRYPTO_memcmp(doc->pcrs[i].data, value, NITRO_PCR_LEN) == 0;
}

bool policy_is_debug(const struct nitro_document *doc)
{
    /* Evaluated without short-circuit so that the three compares always run. */
    bool z0 = pcr_is(doc, 0, zero_pcr);
    bool z1 = pcr_is(doc, 1, zero_pcr);
    bool z2 = pcr_is(doc, 2, zero_pcr);
    return z0 & z1 & z2;
}

static bool set_matches(const struct measurement_set *set, const struct nitro_document *doc)
{
    bool ok = set->mask != 0;
    for (unsigned i = 0; i < NITRO_PCR_COUNT; i++) {
        if (set->mask & (1u << i))
            ok &= pcr_is(doc, i, set->pcr[i]);
    }
    return ok;
}

/* Names the lowest PCR that no set naming it accepts, for an operator-readable reason. The
 * index comes from the policy's own masks, so the detail stays in a fixed vocabulary. */
static void mismatch_detail(const struct policy *p, const struct nitro_document *doc, char *out,
                            size_t cap)
{
    for (unsigned i = 0; i < NITRO_PCR_COUNT; i++) {
        bool named = false;
        bool matched = false;
        for (size_t s = 0; s < p->n_sets; s++) {
            if (p->sets[s].mask & (1u << i)) {
                named = true;
                matched |= pcr_is(doc, i, p->sets[s].pcr[i]);
            }
        }
        if (named && !matched) {
            snprintf(out, cap, "pcr%u", i);
            return;
        }
    }
    snprintf(out, cap, "no single set matches all pcrs");
}

int policy_check(const struct policy *p, const struct nitro_document *doc,
                 const struct policy_input *in, int *matched_set, struct verify_error *err)
{
    char detail[VERIFY_DETAIL_MAX];
    int64_t ts = (int64_t)doc->timestamp_ms; /* the decoder bounds it to 63 bits */

    *matched_set = -1;
    /* A policy bundle past its expiry (and grace) admits nothing new: what it trusted was
     * trusted until then only (docs/policy-bundles.md). */
    if (p->not_after_ms != 0 && in->now_ms >= p->not_after_ms)
        return verify_error_set(err, VERIFY_R_POLICY_EXPIRED, NULL);
    if (doc->digest.len != 6 || memcmp(doc->digest.data, "SHA384", 6) != 0)
        return verify_error_set(err, VERIFY_R_POLICY_DIGEST, NULL);

    if (ts < sub_sat(in->now_ms, p->max_age_ms))
        return verify_error_set(err, VERIFY_R_POLICY_STALE, NULL);
    if (ts > add_sat(in->now_ms, p->skew_ms))
        return verify_error_set(err, VERIFY_R_POLICY_FUTURE, NULL);

    if (in->nonce != NULL) {
        /* A nonce we sent must come back exactly; a document without one proves no freshness. */
        if (!doc->has_nonce)
            return verify_error_set(err, VERIFY_R_POLICY_NONCE_MISSING, NULL);
        if (doc->nonce.len != in->nonce_len ||
            CRYPTO_memcmp(doc->nonce.data, in->nonce, in->nonce_len) != 0)
            return verify_error_set(err, VERIFY_R_POLICY_NONCE_MISMATCH, NULL);
    }

    /* digest is SHA384, so every PCR must be a SHA-384 value; 32/64-byte PCRs pass the decoder
     * only so that this reason, not a parse error, names the problem. */
    for (unsigned i = 0; i < NITRO_PCR_COUNT; i++) {
        if ((doc->pcr_mask & (1u << i)) && doc->pcrs[i].len != NITRO_PCR_LEN) {
            snprintf(detail, sizeof(detail), "pcr%u", i);
            return verify_error_set(err, VERIFY_R_POLICY_PCR_LENGTH, detail);
        }
    }
    /* Debug mode is defined by PCR0-2; a document without them cannot be judged, so it fails. */
    if ((doc->pcr_mask & 0x7u) != 0x7u)
        return verify_error_set(err, VERIFY_R_POLICY_PCR_ABSENT, NULL);
    if (policy_is_debug(doc) && !p->allow_debug)
        return verify_error_set(err, VERIFY_R_POLICY_DEBUG, NULL);

    if (in->skip_measurements)
        return 0;
    if (p->n_sets == 0 || p->n_sets > POLICY_MAX_SETS)
        return verify_error_set(err, VERIFY_R_POLICY_NO_MEASUREMENTS, NULL);
    /* Every set is compared, so the time taken does not depend on which one matches. */
    for (size_t s = 0; s < p->n_sets; s++) {
        if (set_matches(&p->sets[s], doc) && *matched_set < 0)
            *matched_set = (int)s;
    }
    if (*matched_set < 0) {
        mismatch_detail(p, doc, detail, sizeof(detail));
        return verify_error_set(err, VERIFY_R_POLICY_PCR_MISMATCH, detail);
    }
    return 0;
}

static void put_u64(EVP_MD_CTX *ctx, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    EVP_DigestUpdate(ctx, b, sizeof(b));
}

void policy_digest(const struct policy *p, char out[POLICY_DIGEST_LEN])
{
    uint8_t md[32];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    /* A fixed, versioned layout: "attestproxy-policy-v1", then each field big-endian, then each
     * set as its mask followed by the named PCRs in index order. */
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        snprintf(out, POLICY_DIGEST_LEN, "sha256:unavailable");
        EVP_MD_CTX_free(ctx);
        return;
    }
    EVP_DigestUpdate(ctx, "attestproxy-policy-v1", 21);
    put_u64(ctx, p->allow_debug ? 1 : 0);
    put_u64(ctx, (uint64_t)p->max_age_ms);
    put_u64(ctx, (uint64_t)p->skew_ms);
    put_u64(ctx, p->n_sets);
    for (size_t i = 0; i < p->n_sets; i++) {
        put_u64(ctx, p->sets[i].mask);
        for (unsigned j = 0; j < NITRO_PCR_COUNT; j++) {
            if (p->sets[i].mask & (1u << j))
                EVP_DigestUpdate(ctx, p->sets[i].pcr[j], NITRO_PCR_LEN);
        }
    }
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    memcpy(out, "sha256:", 7);
    hex_encode(md, sizeof(md), out + 7);
}
