/*
 * The forged corpus of the enclave simulator (tests/sim/gen_corpus.py, written independently of
 * daemon/verify in Python so that a shared bug cannot cancel out): every case of its manifest
 * gets the verdict and stage the generator expects, and the exact reason this table says.
 *
 * The corpus comes from $NITRO_CORPUS (a directory holding manifest.json) when set; otherwise
 * the test runs `/usr/bin/python3 $SOURCE_ROOT/tests/sim/gen_corpus.py DIR` into a fresh
 * temporary directory itself (the equivalent of a meson custom_target, kept inside this test so
 * that only the "# verify" line of tests/unit/meson.build is ours). Without the generator the
 * test fails: the repository carries it, so its absence is a broken checkout, not a reason to
 * pass silently.
 */
#include "verify_helpers.h"

#include <ftw.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/pem.h>

#include "base/config.h"
#include "base/log.h"
#include "verify/verifier.h"

/* The exact reason of every case, by the generator's case name. */
struct expected_reason {
    const char *name;
    const char *reason;
};

static const struct expected_reason reasons[] = {
    {"env_garbage", "cose: not a COSE_Sign1 array"},
    {"env_bad_base64", "envelope: base64 is malformed"},
    {"env_json_no_key",
     "envelope: JSON has no attestation_doc, attestation_document, document or body string"},
    {"env_json_not_string", "envelope: JSON has no attestation_doc, attestation_document, document "
                            "or body string (attestation_doc)"},
    {"env_too_large", "envelope: document exceeds 16 KiB"},
    {"env_empty", "envelope: evidence is empty"},
    {"cose_not_array", "cose: not a COSE_Sign1 array"},
    {"cose_3_elements", "cose: COSE_Sign1 array is not 4 elements"},
    {"cose_5_elements", "cose: COSE_Sign1 array is not 4 elements"},
    {"cose_tag98", "cose: tag other than a single tag 18"},
    {"cose_tag18_twice", "cose: tag other than a single tag 18"},
    {"cose_alg_es256", "cose: protected header is not {1: -35} (ES384)"},
    {"cose_protected_extra", "cose: protected header is not {1: -35} (ES384)"},
    {"cose_protected_map", "cose: protected header is not {1: -35} (ES384)"},
    {"cose_unprotected_nonempty", "cose: unprotected header is not an empty map"},
    {"cose_unprotected_null", "cose: unprotected header is not an empty map"},
    {"cose_sig_95", "cose: signature is not a 96-byte raw r||s byte string"},
    {"cose_sig_97", "cose: signature is not a 96-byte raw r||s byte string"},
    {"cose_sig_der", "cose: signature is not a 96-byte raw r||s byte string"},
    {"cose_trailing_byte", "cose: trailing bytes after COSE_Sign1"},
    {"cose_truncated", "cose: malformed or truncated CBOR"},
    {"cose_payload_indefinite_bstr", "cose: indefinite-length byte or text string"},
    {"cose_payload_not_bstr", "cose: payload is not a byte string of 1..16384 bytes"},
    {"cose_payload_empty", "cose: payload is not a byte string of 1..16384 bytes"},
    {"payload_missing_module_id", "payload: missing mandatory field (module_id)"},
    {"payload_missing_digest", "payload: missing mandatory field (digest)"},
    {"payload_missing_timestamp", "payload: missing mandatory field (timestamp)"},
    {"payload_missing_pcrs", "payload: missing mandatory field (pcrs)"},
    {"payload_missing_certificate", "payload: missing mandatory field (certificate)"},
    {"payload_missing_cabundle", "payload: missing mandatory field (cabundle)"},
    {"payload_unknown_key", "payload: unknown or non-text key"},
    {"payload_duplicate_key", "payload: duplicate key (nonce)"},
    {"payload_null_timestamp", "payload: null in a mandatory field (timestamp)"},
    {"payload_timestamp_text", "payload: field has the wrong type or size (timestamp)"},
    {"payload_pcrs_array", "payload: field has the wrong type or size (pcrs)"},
    {"payload_cabundle_map", "payload: field has the wrong type or size (cabundle)"},
    {"payload_user_data_text", "payload: field has the wrong type or size (user_data)"},
    {"payload_empty_module_id", "payload: field has the wrong type or size (module_id)"},
    {"payload_timestamp_zero", "payload: timestamp is zero or exceeds 63 bits"},
    {"payload_pcrs_empty", "payload: field has the wrong type or size (pcrs)"},
    {"payload_33_pcrs", "payload: field has the wrong type or size (pcrs)"},
    {"payload_pcr_index_32", "payload: pcr index outside 0..31"},
    {"payload_pcr_duplicate_index", "payload: duplicate pcr index"},
    {"payload_pcr_47_bytes", "payload: pcr value is not 32, 48 or 64 bytes"},
    {"payload_certificate_empty", "payload: field has the wrong type or size (certificate)"},
    {"payload_certificate_1025", "payload: field has the wrong type or size (certificate)"},
    {"payload_cabundle_empty", "payload: field has the wrong type or size (cabundle)"},
    {"payload_cabundle_entry_text", "payload: field has the wrong type or size (cabundle)"},
    {"payload_public_key_1025", "payload: field has the wrong type or size (public_key)"},
    {"payload_user_data_1025", "payload: field has the wrong type or size (user_data)"},
    {"payload_nonce_1025", "payload: field has the wrong type or size (nonce)"},
    {"payload_tag_inside", "payload: tagged item (timestamp)"},
    {"payload_integer_key", "payload: unknown or non-text key"},
    {"chain_foreign_root", "chain: cabundle[0] is not the pinned root"},
    {"chain_cabundle0_not_root", "chain: cabundle[0] is not the pinned root"},
    {"chain_leaf_first_order", "chain: cabundle[0] is not the pinned root"},
    {"chain_missing_intermediate", "chain: no path to the pinned root (cabundle[2])"},
    {"chain_leaf_expired", "chain: certificate expired (leaf)"},
    {"chain_leaf_not_yet_valid", "chain: certificate not yet valid (leaf)"},
    {"chain_intermediate_expired", "chain: certificate expired (cabundle[3])"},
    {"chain_intermediate_not_ca",
     "chain: issuer is not a CA (critical basicConstraints cA, keyCertSign) (cabundle[3])"},
    {"chain_intermediate_no_certsign",
     "chain: issuer is not a CA (critical basicConstraints cA, keyCertSign) (cabundle[3])"},
    {"chain_pathlen_exceeded", "chain: path length constraint exceeded (cabundle[3])"},
    {"chain_leaf_p256", "chain: certificate key is not EC P-384 (leaf)"},
    {"chain_sha256_signature", "chain: certificate is not signed with ecdsa-with-SHA384 (leaf)"},
    {"chain_leaf_wrong_issuer_key", "chain: certificate signature invalid (leaf)"},
    {"chain_cert_trailing_bytes",
     "chain: certificate DER is malformed or has trailing bytes (cabundle[3])"},
    {"chain_leaf_is_ca", "chain: leaf is a CA, has a pathLen or lacks digitalSignature"},
    {"sig_payload_bitflip", "signature: ES384 signature does not verify with the leaf key"},
    {"sig_other_key", "signature: ES384 signature does not verify with the leaf key"},
    {"sig_r_zero", "signature: ES384 signature does not verify with the leaf key"},
    {"sig_s_ge_n", "signature: ES384 signature does not verify with the leaf key"},
    {"sig_all_zero", "signature: ES384 signature does not verify with the leaf key"},
    {"policy_digest_sha256", "policy: digest is not SHA384"},
    {"policy_pcr0_mismatch", "policy: pcrs match no measurement set (pcr0)"},
    {"policy_pcr_absent", "policy: pcrs match no measurement set (pcr20)"},
    {"policy_debug", "policy: debug-mode enclave (pcr0, pcr1, pcr2 all zero)"},
    {"policy_too_old", "policy: document is older than max_age"},
    {"policy_future", "policy: document timestamp is after now + skew"},
    {"policy_nonce_differs", "policy: nonce does not match"},
    {"policy_nonce_null", "policy: nonce missing from document"},
    {"binding_spki_sha256_other_key", "binding: user_data does not hash the peer key"},
    {"binding_public_key_spki_other_key", "binding: public_key is not the peer key"},
    {"binding_spki_der_other_key", "binding: user_data is not the peer key"},
    {"binding_cert_sha256_other_key", "binding: user_data does not hash the peer certificate"},
    {"binding_nitriding_other_key",
     "binding: user_data is not a nitriding multihash of the peer certificate"},
    {"binding_blindai_other_key",
     "binding: user_data is not a blindai digest of the peer certificate"},
    {"binding_spki_sha256_short", "binding: user_data does not hash the peer key"},
    {"binding_nitriding_bad_prefix",
     "binding: user_data is not a nitriding multihash of the peer certificate"},
    {NULL, NULL},
};

static char corpus_dir[4096];
static bool corpus_is_temp;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int generate(const char *script, const char *dir)
{
    pid_t pid = fork();
    int status = 0;
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char *argv[] = {(char *)"/usr/bin/python3", (char *)script, (char *)dir, NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    return 0;
}

static int setup(void **state)
{
    const char *env = getenv("NITRO_CORPUS");
    const char *src = getenv("SOURCE_ROOT");
    char script[4096];
    (void)state;

    if (env != NULL && *env != '\0') {
        snprintf(corpus_dir, sizeof(corpus_dir), "%s", env);
        return 0;
    }
    snprintf(script, sizeof(script), "%s/tests/sim/gen_corpus.py", src != NULL ? src : ".");
    if (access(script, R_OK) != 0) {
        corpus_dir[0] = '\0';
        return 0; /* test_corpus fails with the path it looked for */
    }
    snprintf(corpus_dir, sizeof(corpus_dir), "/tmp/attestproxy-corpus-XXXXXX");
    if (mkdtemp(corpus_dir) == NULL)
        fail_msg("mkdtemp failed");
    corpus_is_temp = true;
    if (generate(script, corpus_dir) != 0)
        fail_msg("%s %s failed", script, corpus_dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (corpus_is_temp)
        nftw(corpus_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- Manifest access: the generator's field names, with the obvious alternatives ---------- */

static json_t *field(json_t *obj, const char *const *names)
{
    for (; *names != NULL; names++) {
        json_t *v = json_object_get(obj, *names);
        if (v != NULL && !json_is_null(v))
            return v;
    }
    return NULL;
}

#define FIELD(obj, ...) field((obj), (const char *const[]){__VA_ARGS__, NULL})

static const char *path_in_corpus(const char *name, char *out, size_t cap)
{
    int n = name[0] == '/' ? snprintf(out, cap, "%s", name)
                           : snprintf(out, cap, "%s/%s", corpus_dir, name);
    if (n < 0 || (size_t)n >= cap)
        fail_msg("path too long: %s", name);
    return out;
}

static X509 *load_cert_file(const char *path)
{
    size_t len;
    uint8_t *data = th_read_file(path, &len);
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (x == NULL) {
        const unsigned char *p = data;
        x = d2i_X509(NULL, &p, (long)len);
    }
    BIO_free(bio);
    free(data);
    if (x == NULL)
        fail_msg("%s: not a certificate", path);
    return x;
}

/* One measurement set: {"0": HEX, ...}, {"pcr0": HEX, ...}, or "pcr0=HEX pcr1=HEX". */
static void parse_set(json_t *j, struct measurement_set *set)
{
    memset(set, 0, sizeof(*set));
    if (json_is_string(j)) {
        if (config_parse_measurement(json_string_value(j), set) != 0)
            fail_msg("bad measurement set \"%s\"", json_string_value(j));
        return;
    }
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        const char *k = strncmp(key, "pcr", 3) == 0 ? key + 3 : key;
        char *end;
        long idx = strtol(k, &end, 10);
        if (*end != '\0' || idx < 0 || idx >= NITRO_PCR_COUNT || !json_is_string(v) ||
            strlen(json_string_value(v)) != 2 * NITRO_PCR_LEN)
            fail_msg("bad measurement set entry %s", key);
        th_unhex(json_string_value(v), set->pcr[idx], NITRO_PCR_LEN);
        set->mask |= 1u << idx;
    }
}

static const char *expected_reason_of(const char *name)
{
    for (size_t i = 0; reasons[i].name != NULL; i++) {
        if (strcmp(reasons[i].name, name) == 0)
            return reasons[i].reason;
    }
    return NULL;
}

static void test_corpus(void **state)
{
    json_error_t jerr;
    json_t *manifest, *cases, *c;
    char path[8192];
    size_t i, failures = 0, missing = 0;
    (void)state;

    if (corpus_dir[0] == '\0')
        fail_msg("the corpus generator tests/sim/gen_corpus.py is missing (SOURCE_ROOT=%s)",
                 getenv("SOURCE_ROOT") != NULL ? getenv("SOURCE_ROOT") : "(unset)");
    manifest = json_load_file(path_in_corpus("manifest.json", path, sizeof(path)), 0, &jerr);
    if (manifest == NULL)
        fail_msg("manifest.json: %s", jerr.text);
    cases = json_is_array(manifest) ? manifest : FIELD(manifest, "cases");
    assert_true(json_is_array(cases));
    assert_true(json_array_size(cases) > 0);
    json_t *root_default =
        json_is_object(manifest) ? FIELD(manifest, "root_ca", "root", "root_pem") : NULL;

    json_array_foreach(cases, i, c)
    {
        char err[256], rootp[8192], docp[8192], peerp[8192];
        const char *name = json_string_value(FIELD(c, "name", "id"));
        json_t *file = FIELD(c, "file", "path", "document");
        json_t *expect = FIELD(c, "expect", "expected", "verdict");
        json_t *stage = FIELD(c, "stage", "expect_stage");
        json_t *root = FIELD(c, "root_ca", "root", "root_pem");
        json_t *sets = FIELD(c, "measurement_sets", "measurements", "sets", "pcrs");
        json_t *nonce = FIELD(c, "nonce");
        json_t *binding = FIELD(c, "binding");
        json_t *peer = FIELD(c, "peer_cert", "peer_certificate");
        struct policy policy;
        struct verify_request req;
        struct verify_result res;
        uint8_t nonce_bytes[1024];
        X509 *peer_cert = NULL;
        struct verifier *v;
        size_t len;
        uint8_t *body;
        bool want_accept;

        if (name == NULL || file == NULL || expect == NULL)
            fail_msg("case %zu lacks name, file or expect", i);
        want_accept = json_is_boolean(expect) ? json_is_true(expect)
                                              : strcmp(json_string_value(expect), "accept") == 0;
        if (root == NULL)
            root = root_default;
        memset(&policy, 0, sizeof(policy));
        policy.allow_debug = json_is_true(FIELD(c, "allow_debug"));
        policy.max_age_ms = json_integer_value(FIELD(c, "max_age_ms"));
        policy.skew_ms = json_integer_value(FIELD(c, "skew_ms"));
        if (sets != NULL) {
            json_t *s;
            size_t k;
            if (json_is_object(sets) || json_is_string(sets)) {
                parse_set(sets, &policy.sets[0]);
                policy.n_sets = 1;
            } else {
                json_array_foreach(sets, k, s)
                {
                    assert_true(k < POLICY_MAX_SETS);
                    parse_set(s, &policy.sets[k]);
                }
                policy.n_sets = json_array_size(sets);
            }
        }
        req = (struct verify_request){
            .policy = &policy,
            .now_ms = json_integer_value(FIELD(c, "now_ms")),
            .binding = BINDING_NONE,
            .skip_measurements = sets == NULL,
        };
        if (nonce != NULL) {
            req.nonce_len = th_unhex(json_string_value(nonce), nonce_bytes, sizeof(nonce_bytes));
            req.nonce = nonce_bytes;
        }
        if (binding != NULL && strcmp(json_string_value(binding), "none") != 0) {
            if (config_parse_binding(json_string_value(binding), &req.binding) != 0)
                fail_msg("%s: unknown binding %s", name, json_string_value(binding));
        }
        if (peer != NULL)
            peer_cert =
                load_cert_file(path_in_corpus(json_string_value(peer), peerp, sizeof(peerp)));
        req.peer_cert = peer_cert;

        v = verifier_new(
            root != NULL ? path_in_corpus(json_string_value(root), rootp, sizeof(rootp)) : NULL,
            err, sizeof(err));
        if (v == NULL)
            fail_msg("%s: verifier_new: %s", name, err);
        body = th_read_file(path_in_corpus(json_string_value(file), docp, sizeof(docp)), &len);
        assert_int_equal(verifier_verify(v, &req, body, len, &res), 0);

        const char *want_reason = want_accept ? "accepted" : expected_reason_of(name);
        const char *want_stage =
            stage != NULL ? json_string_value(stage) : (want_accept ? "none" : NULL);
        bool ok = res.accepted == want_accept;
        if (want_stage != NULL && !(want_accept && strcmp(want_stage, "none") != 0))
            ok = ok && strcmp(verify_stage_name(res.stage), want_stage) == 0;
        if (want_reason == NULL) {
            /* Printed ready to paste into reasons[] once the verdict has been reviewed. */
            print_message("corpus: no expected reason for this case; got:  {\"%s\", \"%s\"},\n",
                          name, res.reason);
            missing++;
        } else {
            ok = ok && strcmp(res.reason, want_reason) == 0;
        }
        if (!ok) {
            print_message("corpus: %s: got %s \"%s\" (stage %s), want %s \"%s\" (stage %s)\n", name,
                          res.accepted ? "accept" : "reject", res.reason,
                          verify_stage_name(res.stage), want_accept ? "accept" : "reject",
                          want_reason != NULL ? want_reason : "?",
                          want_stage != NULL ? want_stage : "?");
            failures++;
        }
        free(body);
        X509_free(peer_cert);
        verifier_free(v);
    }
    json_decref(manifest);
    if (failures > 0 || missing > 0)
        fail_msg("%zu case(s) with the wrong verdict, %zu without an expected reason", failures,
                 missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
    };
    log_configure(LOG_LEVEL_ERROR, LOG_FORMAT_LOGFMT, NULL);
    return cmocka_run_group_tests(tests, setup, teardown);
}
