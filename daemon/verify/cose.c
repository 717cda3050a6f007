#include "verify/cose.h"

#include <errno.h>
#include <string.h>

#include <cbor.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>

/* ---- A pull tokenizer over libcbor's streaming decoder ------------------------------------ */

/*
 * cbor_stream_decode() decodes exactly one item header (with the contents of a definite string)
 * per call and reports it through a callback. The callbacks below turn that report into a token
 * that the schema-driven parser pulls, one at a time.
 */
enum tok_kind {
    TOK_NONE = 0,
    TOK_UINT,
    TOK_NEGINT, /* value holds n for the integer -1 - n */
    TOK_BSTR,
    TOK_TSTR,
    TOK_BSTR_INDEF,
    TOK_TSTR_INDEF,
    TOK_ARRAY,
    TOK_ARRAY_INDEF,
    TOK_MAP,
    TOK_MAP_INDEF,
    TOK_TAG,
    TOK_NULL,
    TOK_UNDEFINED,
    TOK_BOOL,
    TOK_FLOAT,
    TOK_BREAK,
};

struct tok {
    enum tok_kind kind;
    uint64_t value; /* integer, tag number, or element count of a definite array/map */
    const uint8_t *data;
    size_t len;
};

struct reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
};

static void on_uint8(void *ctx, uint8_t v)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_UINT, .value = v};
}
static void on_uint16(void *ctx, uint16_t v)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_UINT, .value = v};
}
static void on_uint32(void *ctx, uint32_t v)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_UINT, .value = v};
}
static void on_uint64(void *ctx, uint64_t v)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_UINT, .value = v};
}
static void on_negint8(void *ctx, uint8_t v)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_NEGINT, .value = v};
}
static void on_negint16(void *ctx, uint16_t v)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_NEGINT, .value = v};
}
static void on_negint32(void *ctx, uint32_t v)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_NEGINT, .value = v};
}
static void on_negint64(void *ctx, uint64_t v)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_NEGINT, .value = v};
}
static void on_bstr(void *ctx, cbor_data data, size_t len)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_BSTR, .data = data, .len = len};
}
static void on_bstr_indef(void *ctx)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_BSTR_INDEF};
}
static void on_tstr(void *ctx, cbor_data data, size_t len)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_TSTR, .data = data, .len = len};
}
static void on_tstr_indef(void *ctx)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_TSTR_INDEF};
}
static void on_array(void *ctx, size_t n)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_ARRAY, .value = n};
}
static void on_array_indef(void *ctx)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_ARRAY_INDEF};
}
static void on_map(void *ctx, size_t n)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_MAP, .value = n};
}
static void on_map_indef(void *ctx)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_MAP_INDEF};
}
static void on_tag(void *ctx, uint64_t v)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_TAG, .value = v};
}
static void on_float(void *ctx, float v)
{
    (void)v;
    *(struct tok *)ctx = (struct tok){.kind = TOK_FLOAT};
}
static void on_double(void *ctx, double v)
{
    (void)v;
    *(struct tok *)ctx = (struct tok){.kind = TOK_FLOAT};
}
static void on_undefined(void *ctx)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_UNDEFINED};
}
static void on_null(void *ctx)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_NULL};
}
static void on_bool(void *ctx, bool v)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_BOOL, .value = v};
}
static void on_break(void *ctx)
{
    *(struct tok *)ctx = (struct tok){.kind = TOK_BREAK};
}

static const struct cbor_callbacks tok_callbacks = {
    .uint8 = on_uint8,
    .uint16 = on_uint16,
    .uint32 = on_uint32,
    .uint64 = on_uint64,
    .negint8 = on_negint8,
    .negint16 = on_negint16,
    .negint32 = on_negint32,
    .negint64 = on_negint64,
    .byte_string_start = on_bstr_indef,
    .byte_string = on_bstr,
    .string = on_tstr,
    .string_start = on_tstr_indef,
    .indef_array_start = on_array_indef,
    .array_start = on_array,
    .indef_map_start = on_map_indef,
    .map_start = on_map,
    .tag = on_tag,
    .float2 = on_float,
    .float4 = on_float,
    .float8 = on_double,
    .undefined = on_undefined,
    .null = on_null,
    .boolean = on_bool,
    .indef_break = on_break,
};

/* Reads the next item header. Returns 0, or -EBADMSG for malformed or truncated input: a
 * reserved or unassigned initial byte, or a length running past the end of the buffer. */
static int reader_next(struct reader *r, struct tok *t)
{
    struct cbor_decoder_result res;

    *t = (struct tok){.kind = TOK_NONE};
    if (r->pos >= r->len)
        return -EBADMSG;
    res = cbor_stream_decode(r->buf + r->pos, r->len - r->pos, &tok_callbacks, t);
    if (res.status != CBOR_DECODER_FINISHED || t->kind == TOK_NONE || res.read == 0 ||
        res.read > r->len - r->pos)
        return -EBADMSG;
    r->pos += res.read;
    return 0;
}

/* True when the byte at the reader's position starts a tag (major type 6). libcbor 0.8 refuses
 * the one-byte tags 6..20 (0xc6..0xd4) as "unassigned", so a tag can surface as a decoder error;
 * this lets such errors be reported as the tag they are. */
static bool reader_at_tag(const struct reader *r)
{
    return r->pos < r->len && (r->buf[r->pos] & 0xe0) == 0xc0;
}

/* ---- COSE_Sign1 ----------------------------------------------------------------------------- */

/* Reads one COSE array element, mapping the failures every element shares. */
static int cose_next(struct reader *r, struct tok *t, struct verify_error *err)
{
    bool at_tag = reader_at_tag(r);
    if (reader_next(r, t) < 0)
        return verify_error_set(err, at_tag ? VERIFY_R_COSE_TAG : VERIFY_R_COSE_MALFORMED, NULL);
    if (t->kind == TOK_TAG)
        return verify_error_set(err, VERIFY_R_COSE_TAG, NULL);
    if (t->kind == TOK_BSTR_INDEF || t->kind == TOK_TSTR_INDEF)
        return verify_error_set(err, VERIFY_R_COSE_INDEFINITE_STRING, NULL);
    return 0;
}

int cose_decode_sign1(const uint8_t *buf, size_t len, struct nitro_document *doc,
                      struct verify_error *err)
{
    struct reader r = {buf, len, 0};
    struct tok t;
    bool indefinite;
    bool at_tag;
    int rc;

    if (len == 0)
        return verify_error_set(err, VERIFY_R_COSE_MALFORMED, NULL);
    if (len > VERIFY_MAX_INPUT)
        return verify_error_set(err, VERIFY_R_ENVELOPE_DOC_TOO_LARGE, NULL);

    /* Tag 18 in its one-byte form is taken here because libcbor 0.8 cannot decode 0xd2 (see
     * reader_at_tag); its two-byte form d8 12 arrives below as an ordinary tag token. */
    if (buf[0] == 0xd2) {
        doc->tagged = true;
        r.pos = 1;
    }
    at_tag = reader_at_tag(&r);
    if (reader_next(&r, &t) < 0)
        return verify_error_set(err, at_tag ? VERIFY_R_COSE_TAG : VERIFY_R_COSE_MALFORMED, NULL);
    if (t.kind == TOK_TAG) {
        if (doc->tagged || t.value != 18)
            return verify_error_set(err, VERIFY_R_COSE_TAG, NULL);
        doc->tagged = true;
        at_tag = reader_at_tag(&r);
        if (reader_next(&r, &t) < 0)
            return verify_error_set(err, at_tag ? VERIFY_R_COSE_TAG : VERIFY_R_COSE_MALFORMED,
                                    NULL);
        if (t.kind == TOK_TAG)
            return verify_error_set(err, VERIFY_R_COSE_TAG, NULL);
    }
    if (t.kind == TOK_ARRAY) {
        if (t.value != 4)
            return verify_error_set(err, VERIFY_R_COSE_ARRAY_LENGTH, NULL);
        indefinite = false;
    } else if (t.kind == TOK_ARRAY_INDEF) {
        indefinite = true;
    } else {
        return verify_error_set(err, VERIFY_R_COSE_NOT_ARRAY, NULL);
    }

    /* protected: the exact bytes of {1: -35}. Any other encoding — extra parameters, another
     * algorithm, a non-minimal integer — is refused, not interpreted. */
    if ((rc = cose_next(&r, &t, err)) < 0)
        return rc;
    if (t.kind != TOK_BSTR || t.len != COSE_PROTECTED_LEN ||
        memcmp(t.data, COSE_PROTECTED_ES384, COSE_PROTECTED_LEN) != 0)
        return verify_error_set(err, VERIFY_R_COSE_PROTECTED, NULL);
    doc->protected_hdr = (struct cose_bytes){t.data, t.len};

    /* unprotected: unsigned, hence attacker-controlled; it must be empty (a0, or bf ff). */
    if ((rc = cose_next(&r, &t, err)) < 0)
        return rc;
    if (t.kind == TOK_MAP_INDEF) {
        if (reader_next(&r, &t) < 0)
            return verify_error_set(err, VERIFY_R_COSE_MALFORMED, NULL);
        if (t.kind != TOK_BREAK)
            return verify_error_set(err, VERIFY_R_COSE_UNPROTECTED, NULL);
    } else if (t.kind != TOK_MAP || t.value != 0) {
        return verify_error_set(err, VERIFY_R_COSE_UNPROTECTED, NULL);
    }

    if ((rc = cose_next(&r, &t, err)) < 0)
        return rc;
    if (t.kind != TOK_BSTR || t.len == 0 || t.len > COSE_MAX_PAYLOAD)
        return verify_error_set(err, VERIFY_R_COSE_PAYLOAD, NULL);
    doc->payload = (struct cose_bytes){t.data, t.len};

    if ((rc = cose_next(&r, &t, err)) < 0)
        return rc;
    if (t.kind != TOK_BSTR || t.len != COSE_SIGNATURE_LEN)
        return verify_error_set(err, VERIFY_R_COSE_SIGNATURE_FORMAT, NULL);
    doc->signature = (struct cose_bytes){t.data, t.len};

    if (indefinite) {
        if (reader_next(&r, &t) < 0)
            return verify_error_set(err, VERIFY_R_COSE_MALFORMED, NULL);
        if (t.kind != TOK_BREAK)
            return verify_error_set(err, VERIFY_R_COSE_ARRAY_LENGTH, NULL);
    }
    if (r.pos != len)
        return verify_error_set(err, VERIFY_R_COSE_TRAILING, NULL);
    return 0;
}

/* ---- Payload -------------------------------------------------------------------------------- */

enum field {
    F_MODULE_ID = 0,
    F_DIGEST,
    F_TIMESTAMP,
    F_PCRS,
    F_CERTIFICATE,
    F_CABUNDLE,
    F_PUBLIC_KEY,
    F_USER_DATA,
    F_NONCE,
    F_COUNT_,
};

static const char *const field_names[F_COUNT_] = {
    [F_MODULE_ID] = "module_id",
    [F_DIGEST] = "digest",
    [F_TIMESTAMP] = "timestamp",
    [F_PCRS] = "pcrs",
    [F_CERTIFICATE] = "certificate",
    [F_CABUNDLE] = "cabundle",
    [F_PUBLIC_KEY] = "public_key",
    [F_USER_DATA] = "user_data",
    [F_NONCE] = "nonce",
};

#define MANDATORY_FIELDS                                                                           \
    ((1u << F_MODULE_ID) | (1u << F_DIGEST) | (1u << F_TIMESTAMP) | (1u << F_PCRS) |               \
     (1u << F_CERTIFICATE) | (1u << F_CABUNDLE))

static int lookup_field(const struct tok *key)
{
    for (int f = 0; f < F_COUNT_; f++) {
        size_t n = strlen(field_names[f]);
        if (key->len == n && memcmp(key->data, field_names[f], n) == 0)
            return f;
    }
    return -1;
}

/* Reads a value token, mapping the failures every value shares. */
static int payload_next(struct reader *r, struct tok *t, enum field f, struct verify_error *err)
{
    bool at_tag = reader_at_tag(r);
    if (reader_next(r, t) < 0)
        return verify_error_set(err, at_tag ? VERIFY_R_PAYLOAD_TAG : VERIFY_R_PAYLOAD_MALFORMED,
                                NULL);
    if (t->kind == TOK_TAG)
        return verify_error_set(err, VERIFY_R_PAYLOAD_TAG, field_names[f]);
    if (t->kind == TOK_BSTR_INDEF || t->kind == TOK_TSTR_INDEF)
        return verify_error_set(err, VERIFY_R_PAYLOAD_INDEFINITE_STRING, field_names[f]);
    return 0;
}

static int field_error(struct verify_error *err, enum field f)
{
    return verify_error_set(err, VERIFY_R_PAYLOAD_FIELD, field_names[f]);
}

static int parse_pcrs(struct reader *r, const struct tok *head, struct nitro_document *doc,
                      struct verify_error *err)
{
    bool indefinite = head->kind == TOK_MAP_INDEF;
    uint64_t count = 0;
    struct tok k, v;
    int rc;

    if (head->kind != TOK_MAP && !indefinite)
        return field_error(err, F_PCRS);
    if (!indefinite && (head->value == 0 || head->value > NITRO_PCR_COUNT))
        return field_error(err, F_PCRS);
    /* Each iteration consumes at least two bytes of input and a 33rd entry necessarily
     * repeats or exceeds an index, so the loop is bounded for both map forms. */
    for (;;) {
        if (!indefinite && count == head->value)
            break;
        if ((rc = payload_next(r, &k, F_PCRS, err)) < 0)
            return rc;
        if (k.kind == TOK_BREAK) {
            if (!indefinite)
                return verify_error_set(err, VERIFY_R_PAYLOAD_MALFORMED, NULL);
            break;
        }
        if (k.kind == TOK_NEGINT || (k.kind == TOK_UINT && k.value >= NITRO_PCR_COUNT))
            return verify_error_set(err, VERIFY_R_PAYLOAD_PCR_INDEX, NULL);
        if (k.kind != TOK_UINT)
            return field_error(err, F_PCRS);
        if (doc->pcr_mask & (1u << k.value))
            return verify_error_set(err, VERIFY_R_PAYLOAD_PCR_DUPLICATE, NULL);
        if ((rc = payload_next(r, &v, F_PCRS, err)) < 0)
            return rc;
        if (v.kind != TOK_BSTR)
            return field_error(err, F_PCRS);
        if (v.len != 32 && v.len != 48 && v.len != 64)
            return verify_error_set(err, VERIFY_R_PAYLOAD_PCR_LENGTH, NULL);
        doc->pcr_mask |= 1u << k.value;
        doc->pcrs[k.value] = (struct cose_bytes){v.data, v.len};
        count++;
    }
    if (count == 0)
        return field_error(err, F_PCRS);
    return 0;
}

static int parse_cabundle(struct reader *r, const struct tok *head, struct nitro_document *doc,
                          struct verify_error *err)
{
    bool indefinite = head->kind == TOK_ARRAY_INDEF;
    struct tok c;
    int rc;

    if (head->kind != TOK_ARRAY && !indefinite)
        return field_error(err, F_CABUNDLE);
    if (!indefinite && (head->value == 0 || head->value > NITRO_MAX_CABUNDLE))
        return field_error(err, F_CABUNDLE);
    for (;;) {
        if (!indefinite && doc->n_cabundle == head->value)
            break;
        if ((rc = payload_next(r, &c, F_CABUNDLE, err)) < 0)
            return rc;
        if (c.kind == TOK_BREAK) {
            if (!indefinite)
                return verify_error_set(err, VERIFY_R_PAYLOAD_MALFORMED, NULL);
            break;
        }
        if (c.kind != TOK_BSTR || c.len == 0 || c.len > NITRO_MAX_CERT ||
            doc->n_cabundle == NITRO_MAX_CABUNDLE)
            return field_error(err, F_CABUNDLE);
        doc->cabundle[doc->n_cabundle++] = (struct cose_bytes){c.data, c.len};
    }
    if (doc->n_cabundle == 0)
        return field_error(err, F_CABUNDLE);
    return 0;
}

static bool printable_ascii(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] > 0x7e)
            return false;
    }
    return true;
}

static int parse_optional(const struct tok *v, enum field f, bool *has, struct cose_bytes *out,
                          struct verify_error *err)
{
    if (v->kind == TOK_NULL) {
        *has = false;
        return 0;
    }
    if (v->kind != TOK_BSTR || v->len > NITRO_MAX_OPTIONAL)
        return field_error(err, f);
    *has = true;
    *out = (struct cose_bytes){v->data, v->len};
    return 0;
}

static int parse_field(struct reader *r, enum field f, struct nitro_document *doc,
                       struct verify_error *err)
{
    struct tok v;
    int rc;

    if ((rc = payload_next(r, &v, f, err)) < 0)
        return rc;
    if (v.kind == TOK_NULL && ((1u << f) & MANDATORY_FIELDS))
        return verify_error_set(err, VERIFY_R_PAYLOAD_NULL_FIELD, field_names[f]);

    switch (f) {
    case F_MODULE_ID:
        /* Printable ASCII only: module_id is logged and shown to operators, and the NSM
         * emits "i-<hex>-enc<hex>". */
        if (v.kind != TOK_TSTR || v.len == 0 || v.len >= sizeof(doc->module_id) ||
            !printable_ascii(v.data, v.len))
            return field_error(err, f);
        memcpy(doc->module_id, v.data, v.len);
        doc->module_id[v.len] = '\0';
        return 0;
    case F_DIGEST:
        if (v.kind != TOK_TSTR || v.len == 0 || v.len > NITRO_MAX_DIGEST)
            return field_error(err, f);
        doc->digest = (struct cose_bytes){v.data, v.len};
        return 0;
    case F_TIMESTAMP:
        if (v.kind != TOK_UINT)
            return field_error(err, f);
        if (v.value == 0 || v.value > (uint64_t)INT64_MAX)
            return verify_error_set(err, VERIFY_R_PAYLOAD_TIMESTAMP, NULL);
        doc->timestamp_ms = v.value;
        return 0;
    case F_PCRS:
        return parse_pcrs(r, &v, doc, err);
    case F_CERTIFICATE:
        if (v.kind != TOK_BSTR || v.len == 0 || v.len > NITRO_MAX_CERT)
            return field_error(err, f);
        doc->certificate = (struct cose_bytes){v.data, v.len};
        return 0;
    case F_CABUNDLE:
        return parse_cabundle(r, &v, doc, err);
    case F_PUBLIC_KEY:
        return parse_optional(&v, f, &doc->has_public_key, &doc->public_key, err);
    case F_USER_DATA:
        return parse_optional(&v, f, &doc->has_user_data, &doc->user_data, err);
    case F_NONCE:
        return parse_optional(&v, f, &doc->has_nonce, &doc->nonce, err);
    case F_COUNT_:
    default:
        break;
    }
    return verify_error_set(err, VERIFY_R_INTERNAL, NULL);
}

int cose_decode_payload(struct nitro_document *doc, struct verify_error *err)
{
    struct reader r = {doc->payload.data, doc->payload.len, 0};
    struct tok t;
    bool indefinite;
    uint64_t entries = 0;
    unsigned seen = 0;
    bool at_tag = reader_at_tag(&r);
    int rc;

    if (reader_next(&r, &t) < 0)
        return verify_error_set(err, at_tag ? VERIFY_R_PAYLOAD_TAG : VERIFY_R_PAYLOAD_MALFORMED,
                                NULL);
    if (t.kind == TOK_TAG)
        return verify_error_set(err, VERIFY_R_PAYLOAD_TAG, NULL);
    if (t.kind != TOK_MAP && t.kind != TOK_MAP_INDEF)
        return verify_error_set(err, VERIFY_R_PAYLOAD_NOT_MAP, NULL);
    indefinite = t.kind == TOK_MAP_INDEF;

    /* Bounded in both forms: every key must be one of 9 names, each at most once, so a 10th
     * key is always rejected, whatever count a definite header claims. */
    for (uint64_t limit = t.value;; entries++) {
        struct tok k;
        if (!indefinite && entries == limit)
            break;
        at_tag = reader_at_tag(&r);
        if (reader_next(&r, &k) < 0)
            return verify_error_set(err, at_tag ? VERIFY_R_PAYLOAD_TAG : VERIFY_R_PAYLOAD_MALFORMED,
                                    NULL);
        if (k.kind == TOK_BREAK) {
            if (!indefinite)
                return verify_error_set(err, VERIFY_R_PAYLOAD_MALFORMED, NULL);
            break;
        }
        if (k.kind == TOK_TAG)
            return verify_error_set(err, VERIFY_R_PAYLOAD_TAG, NULL);
        if (k.kind == TOK_TSTR_INDEF || k.kind == TOK_BSTR_INDEF)
            return verify_error_set(err, VERIFY_R_PAYLOAD_INDEFINITE_STRING, NULL);
        int f = k.kind == TOK_TSTR ? lookup_field(&k) : -1;
        if (f < 0)
            return verify_error_set(err, VERIFY_R_PAYLOAD_UNKNOWN_KEY, NULL);
        if (seen & (1u << f))
            return verify_error_set(err, VERIFY_R_PAYLOAD_DUPLICATE_KEY, field_names[f]);
        seen |= 1u << f;
        if ((rc = parse_field(&r, (enum field)f, doc, err)) < 0)
            return rc;
    }
    if (r.pos != r.len)
        return verify_error_set(err, VERIFY_R_PAYLOAD_TRAILING, NULL);
    for (int f = 0; f < F_COUNT_; f++) {
        if ((MANDATORY_FIELDS & (1u << f)) && !(seen & (1u << f)))
            return verify_error_set(err, VERIFY_R_PAYLOAD_MISSING_FIELD, field_names[f]);
    }
    return 0;
}

int cose_decode_document(const uint8_t *buf, size_t len, struct nitro_document *doc,
                         struct verify_error *err)
{
    int rc;
    memset(doc, 0, sizeof(*doc));
    rc = cose_decode_sign1(buf, len, doc, err);
    if (rc < 0)
        return rc;
    return cose_decode_payload(doc, err);
}

/* ---- ES384 ---------------------------------------------------------------------------------- */

/* Writes the minimal (deterministic, RFC 9052 §9) CBOR header of a byte string of `len` bytes;
 * the Sig_structure is a fresh encoding, whatever header the document used. */
static size_t bstr_header(uint8_t out[9], size_t len)
{
    if (len < 24) {
        out[0] = (uint8_t)(0x40 | len);
        return 1;
    }
    if (len <= 0xff) {
        out[0] = 0x58;
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[0] = 0x59;
        out[1] = (uint8_t)(len >> 8);
        out[2] = (uint8_t)len;
        return 3;
    }
    out[0] = 0x5a;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
    return 5;
}

/* SHA-384 of ["Signature1", protected, h'', payload], streamed so no copy is made. */
static int sig_structure_digest(const struct nitro_document *doc, const EVP_MD *md, uint8_t out[48])
{
    static const uint8_t prefix[] = {0x84, 0x6a, 'S', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', '1'};
    static const uint8_t empty_aad = 0x40;
    uint8_t hdr[9];
    size_t hlen;
    unsigned int dlen = 0;
    int rc = -ENOMEM;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    if (ctx == NULL)
        return -ENOMEM;
    if (EVP_DigestInit_ex(ctx, md, NULL) != 1 || EVP_DigestUpdate(ctx, prefix, sizeof(prefix)) != 1)
        goto out_ctx;
    hlen = bstr_header(hdr, doc->protected_hdr.len);
    if (EVP_DigestUpdate(ctx, hdr, hlen) != 1 ||
        EVP_DigestUpdate(ctx, doc->protected_hdr.data, doc->protected_hdr.len) != 1 ||
        EVP_DigestUpdate(ctx, &empty_aad, 1) != 1)
        goto out_ctx;
    hlen = bstr_header(hdr, doc->payload.len);
    if (EVP_DigestUpdate(ctx, hdr, hlen) != 1 ||
        EVP_DigestUpdate(ctx, doc->payload.data, doc->payload.len) != 1 ||
        EVP_DigestFinal_ex(ctx, out, &dlen) != 1 || dlen != 48)
        goto out_ctx;
    rc = 0;
out_ctx:
    EVP_MD_CTX_free(ctx);
    return rc;
}

int cose_verify_signature(const struct nitro_document *doc, EVP_PKEY *key, EVP_MD *sha384,
                          struct verify_error *err)
{
    const EVP_MD *md = sha384 != NULL ? sha384 : EVP_sha384();
    uint8_t digest[48];
    uint8_t der[128]; /* DER ECDSA-Sig-Value of two 48-byte integers: at most 104 bytes */
    unsigned char *p = der;
    ECDSA_SIG *sig = NULL;
    BIGNUM *r = NULL, *s = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    int der_len;
    int rc;

    if (doc->signature.len != COSE_SIGNATURE_LEN || key == NULL)
        return verify_error_set(err, VERIFY_R_SIGNATURE_INVALID, NULL);
    rc = sig_structure_digest(doc, md, digest);
    if (rc < 0)
        goto out;

    /* COSE carries r || s as fixed-width big-endian integers (RFC 8152 §8.1); OpenSSL wants
     * the DER ECDSA-Sig-Value, so the two halves are re-encoded rather than reinterpreted.
     * s is taken as is: plain ECDSA accepts both s and n - s, and so do real AWS documents. */
    rc = -ENOMEM;
    r = BN_bin2bn(doc->signature.data, 48, NULL);
    s = BN_bin2bn(doc->signature.data + 48, 48, NULL);
    sig = ECDSA_SIG_new();
    if (r == NULL || s == NULL || sig == NULL)
        goto out;
    if (ECDSA_SIG_set0(sig, r, s) != 1)
        goto out;
    r = s = NULL; /* owned by sig now */
    der_len = i2d_ECDSA_SIG(sig, NULL);
    if (der_len <= 0 || (size_t)der_len > sizeof(der))
        goto out;
    der_len = i2d_ECDSA_SIG(sig, &p);
    if (der_len <= 0)
        goto out;

    pctx = EVP_PKEY_CTX_new(key, NULL);
    if (pctx == NULL)
        goto out;
    if (EVP_PKEY_verify_init(pctx) != 1 || EVP_PKEY_CTX_set_signature_md(pctx, md) != 1) {
        rc = verify_error_set(err, VERIFY_R_SIGNATURE_INVALID, NULL);
        goto out;
    }
    if (EVP_PKEY_verify(pctx, der, (size_t)der_len, digest, sizeof(digest)) != 1) {
        rc = verify_error_set(err, VERIFY_R_SIGNATURE_INVALID, NULL);
        goto out;
    }
    rc = 0;
out:
    /* A failed verification leaves entries on OpenSSL's thread error queue; they say nothing
     * the reason does not, and must not be mistaken for a later call's error. */
    if (rc != 0)
        ERR_clear_error();
    EVP_PKEY_CTX_free(pctx);
    ECDSA_SIG_free(sig);
    BN_free(r);
    BN_free(s);
    return rc;
}
