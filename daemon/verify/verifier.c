#include "verify/verifier.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "base/log.h"
#include "verify/binding.h"
#include "verify/chain.h"
#include "verify/cose.h"
#include "verify/evidence.h"

struct verifier {
    struct chain *chain;
    EVP_MD *sha384; /* fetched once: an implicit fetch per signature check is measurable */
    uint64_t accepted;
    uint64_t rejected;
};

struct verifier *verifier_new(const char *root_pem_path, char *err, size_t cap)
{
    struct verifier *v = calloc(1, sizeof(*v));
    if (v == NULL) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    v->sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
    if (v->sha384 == NULL) {
        snprintf(err, cap, "SHA-384 is not available");
        goto fail;
    }
    v->chain = chain_new(root_pem_path, err, cap);
    if (v->chain == NULL)
        goto fail;
    return v;
fail:
    verifier_free(v);
    return NULL;
}

void verifier_free(struct verifier *v)
{
    if (v == NULL)
        return;
    chain_free(v->chain);
    EVP_MD_free(v->sha384);
    free(v);
}

bool verifier_same_root(const struct verifier *a, const struct verifier *b)
{
    size_t la, lb;
    const uint8_t *da = chain_root_der(a->chain, &la);
    const uint8_t *db = chain_root_der(b->chain, &lb);
    return la == lb && memcmp(da, db, la) == 0;
}

int verifier_spki_pin(X509 *cert, uint8_t out[32])
{
    if (cert == NULL)
        return -EINVAL;
    return binding_spki_sha256(cert, out);
}

void verifier_get_stats(const struct verifier *v, struct verifier_stats *out)
{
    struct chain_stats cs;
    chain_get_stats(v->chain, &cs);
    out->accepted = v->accepted;
    out->rejected = v->rejected;
    out->chain_warm = cs.warm;
    out->chain_leaf_hits = cs.leaf_hits;
    out->chain_cold = cs.cold;
    out->cached_certs = cs.cached;
    out->cached_leaves = cs.cached_leaves;
}

void verifier_clear_cache(struct verifier *v)
{
    chain_clear_cache(v->chain);
}

/* The facts an operator needs to understand a policy or binding failure. Only called once the
 * chain and the signature have verified, so nothing here is unauthenticated. */
static void fill_summary(struct verify_summary *s, const struct nitro_document *doc,
                         int64_t leaf_not_before_ms, int64_t leaf_not_after_ms)
{
    memcpy(s->module_id, doc->module_id, sizeof(s->module_id));
    s->timestamp_ms = (int64_t)doc->timestamp_ms;
    s->pcr_mask = doc->pcr_mask;
    for (unsigned i = 0; i < NITRO_PCR_COUNT; i++) {
        size_t n = doc->pcrs[i].len < NITRO_PCR_LEN ? doc->pcrs[i].len : NITRO_PCR_LEN;
        if (doc->pcr_mask & (1u << i))
            memcpy(s->pcrs[i], doc->pcrs[i].data, n);
    }
    s->debug_mode = policy_is_debug(doc);
    s->leaf_not_before_ms = leaf_not_before_ms;
    s->leaf_not_after_ms = leaf_not_after_ms;
}

int verifier_verify(struct verifier *v, const struct verify_request *req, const uint8_t *body,
                    size_t len, struct verify_result *res)
{
    struct verify_error err = {.reason = VERIFY_R_INTERNAL};
    struct nitro_document doc;
    struct policy_input pin;
    const uint8_t *doc_bytes;
    size_t doc_len;
    uint8_t *scratch = NULL;
    X509 *leaf = NULL;
    int64_t leaf_nb = 0, leaf_na = 0;
    int matched = -1;
    bool authentic = false;
    int rc = -EINVAL;

    memset(res, 0, sizeof(*res));
    res->summary.matched_set = -1;
    if (v == NULL || req == NULL || req->policy == NULL || (body == NULL && len > 0))
        goto out;

    /* Stages, in the order of BRIEF §2.3: each either passes or names one reason. */
    rc = -ENOMEM;
    scratch = malloc(VERIFY_MAX_INPUT);
    if (scratch == NULL)
        goto out;
    if ((rc = evidence_decode(body, len, scratch, &doc_bytes, &doc_len, &err)) < 0)
        goto out;
    if ((rc = cose_decode_document(doc_bytes, doc_len, &doc, &err)) < 0)
        goto out;
    if ((rc = chain_verify(v->chain, &doc, req->now_ms, req->policy->skew_ms, &leaf, &leaf_nb,
                           &leaf_na, &err)) < 0)
        goto out;
    if ((rc = cose_verify_signature(&doc, X509_get0_pubkey(leaf), v->sha384, &err)) < 0)
        goto out;
    authentic = true;

    pin = (struct policy_input){
        .now_ms = req->now_ms,
        .nonce = req->nonce,
        .nonce_len = req->nonce_len,
        .skip_measurements = req->skip_measurements,
    };
    if ((rc = policy_check(req->policy, &doc, &pin, &matched, &err)) < 0)
        goto out;
    if ((rc = binding_check(req->binding, req->peer_cert, req->session_exporter, &doc, &err)) < 0)
        goto out;

    if (policy_is_debug(&doc))
        log_event(LOG_LEVEL_WARN, "attestation_debug_mode_accepted", "module_id", doc.module_id,
                  "why", "allow_debug is set; a debug-mode enclave can be inspected by its host",
                  NULL);
    rc = 0;
out:
    if (authentic)
        fill_summary(&res->summary, &doc, leaf_nb, leaf_na);
    res->summary.matched_set = rc == 0 ? matched : -1;
    if (rc == 0) {
        res->accepted = true;
        res->stage = VERIFY_STAGE_NONE;
        res->reason_code = VERIFY_R_OK;
        snprintf(res->reason, sizeof(res->reason), "%s", verify_reason_string(VERIFY_R_OK));
        if (v != NULL)
            v->accepted++;
    } else {
        if (rc != VERIFY_REJECT) {
            /* An internal failure is still a rejection; callers see a named reason either way. */
            verify_error_set(&err, VERIFY_R_INTERNAL, NULL);
            ERR_clear_error();
        } else {
            rc = 0; /* a verdict was reached */
        }
        res->accepted = false;
        res->reason_code = err.reason;
        res->stage = verify_reason_stage(err.reason);
        verify_error_format(&err, res->reason, sizeof(res->reason));
        if (v != NULL)
            v->rejected++;
    }
    X509_free(leaf);
    free(scratch);
    return rc;
}
