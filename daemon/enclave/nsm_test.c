/*
 * The test NSM: documents shaped exactly like the Nitro Secure Module's, signed with the leaf
 * key of a test chain (tests/sim/chain.py), so that a daemon with `root_ca = DIR/root.pem`
 * verifies them. Used by attestproxy-enclave only with `nsm = test:DIR`, and by the fake
 * device of the tests (tests/enclave/fake_nsm.c), which compiles this file in: it depends on
 * OpenSSL and libcbor only.
 */
#include "enclave/nsm.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define PCRS       16
#define PCR_LEN    48
#define MAX_BUNDLE 6

struct nsm_test {
    EVP_PKEY *leaf_key;
    uint8_t *leaf_der;
    size_t leaf_len;
    uint8_t *bundle[MAX_BUNDLE]; /* root first */
    size_t bundle_len[MAX_BUNDLE];
    size_t n_bundle;
    uint8_t pcrs[PCRS][PCR_LEN];
    char module_id[64];
};

static int cert_der(const char *dir, const char *level, bool optional, uint8_t **der, size_t *len,
                    char *err, size_t cap)
{
    char path[4096];
    FILE *f;
    X509 *x;
    int n;

    snprintf(path, sizeof(path), "%s/%s.crt.pem", dir, level);
    f = fopen(path, "r");
    if (f == NULL) {
        if (optional)
            return 1;
        snprintf(err, cap, "cannot open %s: %s", path, strerror(errno));
        return -ENOENT;
    }
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    *der = NULL;
    n = x != NULL ? i2d_X509(x, der) : -1;
    X509_free(x);
    if (n <= 0) {
        snprintf(err, cap, "%s is not a PEM certificate", path);
        return -EINVAL;
    }
    *len = (size_t)n;
    return 0;
}

void nsm_test_free(struct nsm_test *t)
{
    if (t == NULL)
        return;
    EVP_PKEY_free(t->leaf_key);
    OPENSSL_free(t->leaf_der);
    for (size_t i = 0; i < t->n_bundle; i++)
        OPENSSL_free(t->bundle[i]);
    free(t);
}

struct nsm_test *nsm_test_new(const char *dir, char *err, size_t cap)
{
    static const char *const levels[] = {"root", "regional", "zonal", "instance", "extra"};
    struct nsm_test *t = calloc(1, sizeof(*t));
    char path[4096];
    FILE *f;

    if (t == NULL) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        int rc = cert_der(dir, levels[i], i == 4, &t->bundle[t->n_bundle],
                          &t->bundle_len[t->n_bundle], err, cap);
        if (rc < 0)
            goto fail;
        if (rc == 0)
            t->n_bundle++;
    }
    if (cert_der(dir, "leaf", false, &t->leaf_der, &t->leaf_len, err, cap) < 0)
        goto fail;
    snprintf(path, sizeof(path), "%s/leaf.key.pem", dir);
    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, cap, "cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    t->leaf_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (t->leaf_key == NULL || EVP_PKEY_get_base_id(t->leaf_key) != EVP_PKEY_EC) {
        snprintf(err, cap, "%s is not an EC private key", path);
        goto fail;
    }
    for (unsigned i = 0; i < PCRS; i++) {
        char seed[32];
        int n = snprintf(seed, sizeof(seed), "attestproxy-sim-pcr%u", i);
        if (i <= 2 || i == 4)
            EVP_Digest(seed, (size_t)n, t->pcrs[i], NULL, EVP_sha384(), NULL);
    }
    snprintf(t->module_id, sizeof(t->module_id), "i-0123456789abcdef0-enc0123456789abcdef");
    return t;
fail:
    nsm_test_free(t);
    return NULL;
}

int nsm_test_set_pcr(struct nsm_test *t, unsigned index, const uint8_t pcr[48])
{
    if (index >= PCRS)
        return -EINVAL;
    memcpy(t->pcrs[index], pcr, PCR_LEN);
    return 0;
}

/* Adds key -> value to a map and drops the builder's references; false on failure. */
static bool put(cbor_item_t *map, cbor_item_t *key, cbor_item_t *value)
{
    bool ok = key != NULL && value != NULL &&
              cbor_map_add(map, (struct cbor_pair){.key = key, .value = value});
    if (key != NULL)
        cbor_decref(&key);
    if (value != NULL)
        cbor_decref(&value);
    return ok;
}

static bool push(cbor_item_t *array, cbor_item_t *item)
{
    bool ok = item != NULL && cbor_array_push(array, item);
    if (item != NULL)
        cbor_decref(&item);
    return ok;
}

static cbor_item_t *bytes_or_null(const uint8_t *data, size_t len)
{
    return data != NULL ? cbor_build_bytestring(data, len) : cbor_new_null();
}

/* The payload map, the 9 keys in the order the NSM writes them. */
static cbor_item_t *payload(const struct nsm_test *t, int64_t now_ms, const uint8_t *user_data,
                            size_t user_data_len, const uint8_t *nonce, size_t nonce_len)
{
    cbor_item_t *m = cbor_new_definite_map(9), *pcrs = cbor_new_definite_map(PCRS),
                *bundle = cbor_new_definite_array(t->n_bundle);
    bool ok = m != NULL && pcrs != NULL && bundle != NULL;

    for (unsigned i = 0; ok && i < PCRS; i++)
        ok = put(pcrs, cbor_build_uint8((uint8_t)i), cbor_build_bytestring(t->pcrs[i], PCR_LEN));
    for (size_t i = 0; ok && i < t->n_bundle; i++)
        ok = push(bundle, cbor_build_bytestring(t->bundle[i], t->bundle_len[i]));
    ok =
        ok && put(m, cbor_build_string("module_id"), cbor_build_string(t->module_id)) &&
        put(m, cbor_build_string("digest"), cbor_build_string("SHA384")) &&
        put(m, cbor_build_string("timestamp"), cbor_build_uint64((uint64_t)now_ms)) &&
        put(m, cbor_build_string("pcrs"), cbor_incref(pcrs)) &&
        put(m, cbor_build_string("certificate"), cbor_build_bytestring(t->leaf_der, t->leaf_len)) &&
        put(m, cbor_build_string("cabundle"), cbor_incref(bundle)) &&
        put(m, cbor_build_string("public_key"), cbor_new_null()) &&
        put(m, cbor_build_string("user_data"), bytes_or_null(user_data, user_data_len)) &&
        put(m, cbor_build_string("nonce"), bytes_or_null(nonce, nonce_len));
    if (pcrs != NULL)
        cbor_decref(&pcrs);
    if (bundle != NULL)
        cbor_decref(&bundle);
    if (!ok && m != NULL)
        cbor_decref(&m);
    return ok ? m : NULL;
}

/* ES384 over SHA-384(Sig_structure) as raw r || s, 48 bytes each. */
static int sign(EVP_PKEY *key, const uint8_t *tbs, size_t tbs_len, uint8_t sig[96])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[160];
    const unsigned char *p = der;
    size_t der_len = sizeof(der);
    ECDSA_SIG *s = NULL;
    int rc = -EIO;

    if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, key) != 1 ||
        EVP_DigestSign(md, der, &der_len, tbs, tbs_len) != 1)
        goto out;
    s = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (s == NULL || BN_bn2binpad(ECDSA_SIG_get0_r(s), sig, 48) != 48 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(s), sig + 48, 48) != 48)
        goto out;
    rc = 0;
out:
    ECDSA_SIG_free(s);
    EVP_MD_CTX_free(md);
    return rc;
}

int nsm_test_document(struct nsm_test *t, int64_t now_ms, const uint8_t *user_data,
                      size_t user_data_len, const uint8_t *nonce, size_t nonce_len, uint8_t *out,
                      size_t cap, char *err, size_t err_cap)
{
    static const uint8_t protected_hdr[] = {0xa1, 0x01, 0x38, 0x22}; /* {1: -35} */
    cbor_item_t *pl = NULL, *tbs = NULL, *cose = NULL;
    unsigned char *pl_buf = NULL, *tbs_buf = NULL;
    size_t pl_len = 0, tbs_len = 0, n;
    uint8_t sig[96];
    int rc = -ENOMEM;

    if (user_data_len > NSM_USER_DATA_MAX || nonce_len > NSM_USER_DATA_MAX) {
        snprintf(err, err_cap, "user_data or nonce over %d bytes", NSM_USER_DATA_MAX);
        return -EINVAL;
    }
    pl = payload(t, now_ms, user_data, user_data_len, nonce, nonce_len);
    if (pl == NULL || (pl_len = cbor_serialize_alloc(pl, &pl_buf, &n)) == 0)
        goto out;
    tbs = cbor_new_definite_array(4);
    if (tbs == NULL || !push(tbs, cbor_build_string("Signature1")) ||
        !push(tbs, cbor_build_bytestring(protected_hdr, sizeof(protected_hdr))) ||
        !push(tbs, cbor_build_bytestring((const uint8_t *)"", 0)) ||
        !push(tbs, cbor_build_bytestring(pl_buf, pl_len)))
        goto out;
    if ((tbs_len = cbor_serialize_alloc(tbs, &tbs_buf, &n)) == 0)
        goto out;
    if (sign(t->leaf_key, tbs_buf, tbs_len, sig) < 0) {
        snprintf(err, err_cap, "cannot sign the document");
        rc = -EIO;
        goto done;
    }
    cose = cbor_new_definite_array(4);
    if (cose == NULL || !push(cose, cbor_build_bytestring(protected_hdr, sizeof(protected_hdr))) ||
        !push(cose, cbor_new_definite_map(0)) ||
        !push(cose, cbor_build_bytestring(pl_buf, pl_len)) ||
        !push(cose, cbor_build_bytestring(sig, sizeof(sig))))
        goto out;
    n = cbor_serialize(cose, out, cap);
    if (n == 0) {
        snprintf(err, err_cap, "the document does not fit in %zu bytes", cap);
        rc = -EMSGSIZE;
        goto done;
    }
    rc = (int)n;
    goto done;
out:
    snprintf(err, err_cap, "out of memory");
done:
    free(pl_buf);
    free(tbs_buf);
    if (pl != NULL)
        cbor_decref(&pl);
    if (tbs != NULL)
        cbor_decref(&tbs);
    if (cose != NULL)
        cbor_decref(&cose);
    return rc;
}
