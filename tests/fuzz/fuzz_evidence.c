/*
 * libFuzzer target: evidence decoding and verification. Any byte string, as an evidence body,
 * must produce exactly one verdict — never a crash, a leak, an out-of-bounds read or an
 * unbounded allocation. The verifier trusts the compiled-in AWS root and checks a fixed policy
 * (real-2's PCR0, nonce-less, allow_debug off). When the input decodes, it is checked at its own
 * timestamp so that chain, signature and policy code is reached, not just the clock check; the
 * verifier (and its intermediate cache) lives across inputs, as it does in the daemon.
 *
 * Seeds: tests/fuzz/corpus/evidence (envelopes) and tests/vectors/nitro (raw documents):
 *   fuzz_evidence -max_total_time=60 WORKDIR tests/fuzz/corpus/evidence tests/vectors/nitro
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "verify/cose.h"
#include "verify/evidence.h"
#include "verify/verifier.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct verifier *verifier;
static struct policy policy;
static uint8_t scratch[VERIFY_MAX_INPUT];

/* PCR0 of real-2. */
static const uint8_t real2_pcr0[NITRO_PCR_LEN] = {
    0x28, 0xde, 0x65, 0x57, 0xcc, 0xe8, 0x96, 0xcf, 0x8c, 0x58, 0x0d, 0x86, 0x74, 0xfb, 0xc1, 0x3c,
    0x45, 0xc1, 0xa7, 0x63, 0x65, 0x45, 0xef, 0x02, 0x2a, 0x01, 0x00, 0x73, 0x36, 0xb8, 0x75, 0x2b,
    0x9a, 0x1c, 0xd9, 0xce, 0x69, 0xdf, 0x2e, 0xca, 0xcc, 0x76, 0x96, 0xa1, 0x20, 0x3b, 0x45, 0xc2};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    (void)argc;
    (void)argv;
    log_configure(LOG_LEVEL_ERROR, LOG_FORMAT_LOGFMT, NULL);
    verifier = verifier_new(NULL, err, sizeof(err));
    if (verifier == NULL) {
        fprintf(stderr, "fuzz_evidence: %s\n", err);
        abort();
    }
    policy.max_age_ms = 5 * 60 * 1000;
    policy.skew_ms = 60 * 1000;
    policy.sets[0].mask = 1;
    memcpy(policy.sets[0].pcr[0], real2_pcr0, NITRO_PCR_LEN);
    policy.n_sets = 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct verify_request req = {
        .policy = &policy,
        .now_ms = 1684948068582LL, /* real-2's timestamp */
        .binding = BINDING_NONE,
    };
    struct verify_result res;
    struct nitro_document doc;
    struct verify_error err;
    const uint8_t *doc_bytes;
    size_t doc_len;

    if (evidence_decode(data, size, scratch, &doc_bytes, &doc_len, &err) == 0 &&
        cose_decode_document(doc_bytes, doc_len, &doc, &err) == 0)
        req.now_ms = (int64_t)doc.timestamp_ms;

    if (verifier_verify(verifier, &req, data, size, &res) == 0) {
        /* A verdict is always complete: a stage and a reason that belongs to it. */
        if (res.accepted != (res.stage == VERIFY_STAGE_NONE) ||
            verify_reason_stage(res.reason_code) != res.stage || res.reason[0] == '\0')
            abort();
    } else if (res.accepted) {
        abort();
    }
    return 0;
}
