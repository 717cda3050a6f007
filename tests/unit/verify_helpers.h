/*
 * Helpers shared by the daemon/verify unit tests: reading the AWS Nitro vectors
 * (tests/vectors/nitro) and minting a test PKI with OpenSSL. Everything is `static inline` so each
 * test file takes what it uses. Test code only: failures abort the test through cmocka assertions.
 */
#ifndef ATTESTPROXY_TESTS_VERIFY_HELPERS_H
#define ATTESTPROXY_TESTS_VERIFY_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "verify/cose.h"

/* The 18 real AWS documents of tests/vectors/nitro (README "Real vectors"). */
#define TH_REAL_COUNT 18

static inline uint8_t *th_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (f == NULL)
        fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static inline const char *th_vector_path(const char *name)
{
    static char path[4096];
    const char *dir = getenv("NITRO_VECTORS");
    if (dir == NULL)
        dir = "tests/vectors/nitro";
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return path;
}

static inline uint8_t *th_read_vector(const char *name, size_t *len)
{
    return th_read_file(th_vector_path(name), len);
}

/* The document's own timestamp: the "now" at which a real vector verifies. */
static inline int64_t th_doc_timestamp(const uint8_t *buf, size_t len)
{
    struct nitro_document doc;
    struct verify_error err;
    assert_int_equal(cose_decode_document(buf, len, &doc, &err), 0);
    return (int64_t)doc.timestamp_ms;
}

static inline size_t th_unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        char b[3] = {hex[2 * i], hex[2 * i + 1], 0};
        v = (unsigned)strtoul(b, NULL, 16);
        out[i] = (uint8_t)v;
    }
    return n;
}

/* ---- A test PKI ---------------------------------------------------------------------------- */

struct th_cert_opts {
    bool ca;
    int pathlen; /* -1: none */
    bool bc;     /* add basicConstraints at all */
    bool bc_critical;
    const char *ku;              /* keyUsage value for X509V3_EXT_conf_nid, NULL: none */
    const char *extra_nid_value; /* an extra extension "value" for extra_nid, or NULL */
    int extra_nid;
    const EVP_MD *md;  /* NULL: SHA-384 */
    time_t base;       /* validity relative to this instant */
    long not_before_s; /* offsets from base */
    long not_after_s;
};

static inline struct th_cert_opts th_ca_opts(time_t base, int pathlen)
{
    return (struct th_cert_opts){.ca = true,
                                 .pathlen = pathlen,
                                 .bc = true,
                                 .bc_critical = true,
                                 .ku = "critical,digitalSignature,keyCertSign,cRLSign",
                                 .base = base,
                                 .not_before_s = -86400,
                                 .not_after_s = 86400 * 30};
}

static inline struct th_cert_opts th_leaf_opts(time_t base)
{
    return (struct th_cert_opts){.ca = false,
                                 .pathlen = -1,
                                 .bc = true,
                                 .bc_critical = true,
                                 .ku = "digitalSignature,nonRepudiation",
                                 .base = base,
                                 .not_before_s = -60,
                                 .not_after_s = 3 * 3600};
}

static inline EVP_PKEY *th_key(const char *curve)
{
    EVP_PKEY *k = EVP_EC_gen(curve);
    assert_non_null(k);
    return k;
}

static inline void th_add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

/* A certificate for `key` named `cn`, signed by `issuer_key` (self-signed when issuer is NULL). */
static inline X509 *th_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                            const struct th_cert_opts *o)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    char bc[64];
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    X509_NAME_free(name);
    time_t base = o->base;
    assert_non_null(X509_time_adj_ex(X509_getm_notBefore(x), 0, o->not_before_s, &base));
    assert_non_null(X509_time_adj_ex(X509_getm_notAfter(x), 0, o->not_after_s, &base));
    assert_int_equal(X509_set_pubkey(x, key), 1);
    if (o->bc) {
        if (o->ca && o->pathlen >= 0)
            snprintf(bc, sizeof(bc), "%sCA:TRUE,pathlen:%d", o->bc_critical ? "critical," : "",
                     o->pathlen);
        else
            snprintf(bc, sizeof(bc), "%sCA:%s", o->bc_critical ? "critical," : "",
                     o->ca ? "TRUE" : "FALSE");
        th_add_ext(x, issuer != NULL ? issuer : x, NID_basic_constraints, bc);
    }
    if (o->ku != NULL)
        th_add_ext(x, issuer != NULL ? issuer : x, NID_key_usage, o->ku);
    if (o->extra_nid_value != NULL)
        th_add_ext(x, issuer != NULL ? issuer : x, o->extra_nid, o->extra_nid_value);
    assert_true(X509_sign(x, issuer_key, o->md != NULL ? o->md : EVP_sha384()) > 0);
    return x;
}

static inline uint8_t *th_der(X509 *x, size_t *len)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    assert_true(n > 0);
    *len = (size_t)n;
    return der;
}

static inline void th_write_pem(X509 *x, const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    fclose(f);
}

#endif
