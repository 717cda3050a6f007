/*
 * COSE_Sign1 and payload decoding (daemon/verify/cose.c): the real documents decode to what the
 * vectors README says; every structural rule of BRIEF §2.3 has a document that breaks it and
 * the exact reason it gets; no prefix of a document decodes; the ES384 check accepts exactly
 * the right signature. Test documents are written by a small CBOR writer below, independent of
 * libcbor.
 */
#include "verify_helpers.h"

#include "verify/cose.h"

/* ---- A CBOR writer ----------------------------------------------------------------------------
 */

struct w {
    uint8_t buf[24 * 1024];
    size_t n;
};

static void w_raw(struct w *w, const void *p, size_t n)
{
    assert_true(w->n + n <= sizeof(w->buf));
    memcpy(w->buf + w->n, p, n);
    w->n += n;
}

static void w_byte(struct w *w, uint8_t b)
{
    w_raw(w, &b, 1);
}

static void w_head(struct w *w, unsigned major, uint64_t v)
{
    uint8_t m = (uint8_t)(major << 5);
    if (v < 24) {
        w_byte(w, (uint8_t)(m | v));
    } else if (v <= 0xff) {
        w_byte(w, m | 24);
        w_byte(w, (uint8_t)v);
    } else if (v <= 0xffff) {
        w_byte(w, m | 25);
        w_byte(w, (uint8_t)(v >> 8));
        w_byte(w, (uint8_t)v);
    } else if (v <= 0xffffffffu) {
        w_byte(w, m | 26);
        for (int s = 24; s >= 0; s -= 8)
            w_byte(w, (uint8_t)(v >> s));
    } else {
        w_byte(w, m | 27);
        for (int s = 56; s >= 0; s -= 8)
            w_byte(w, (uint8_t)(v >> s));
    }
}

static void w_bstr(struct w *w, const void *p, size_t n)
{
    w_head(w, 2, n);
    w_raw(w, p, n);
}

static void w_tstr(struct w *w, const char *s)
{
    w_head(w, 3, strlen(s));
    w_raw(w, s, strlen(s));
}

/* ---- Documents --------------------------------------------------------------------------------
 */

/* What to break in a payload built from real-2's fields. */
enum mutation {
    M_NONE = 0,
    M_INDEF_MAP,
    M_INDEF_PCRS,
    M_INDEF_CABUNDLE,
    M_OPTIONALS_ABSENT,
    M_UNKNOWN_KEY,
    M_INT_KEY,
    M_DUP_KEY,
    M_MISSING_DIGEST,
    M_NULL_CERTIFICATE,
    M_NULL_PCRS,
    M_MODULE_ID_EMPTY,
    M_MODULE_ID_CONTROL,
    M_MODULE_ID_LONG,
    M_DIGEST_BSTR,
    M_TIMESTAMP_ZERO,
    M_TIMESTAMP_2_63,
    M_TIMESTAMP_NEGATIVE,
    M_TIMESTAMP_FLOAT,
    M_TIMESTAMP_TAGGED,
    M_PCR_INDEX_32,
    M_PCR_INDEX_NEGATIVE,
    M_PCR_INDEX_TEXT,
    M_PCR_DUPLICATE,
    M_PCR_LENGTH_47,
    M_PCR_LENGTH_32,
    M_PCRS_EMPTY,
    M_PCRS_33,
    M_CABUNDLE_EMPTY,
    M_CABUNDLE_9,
    M_CABUNDLE_ITEM_EMPTY,
    M_CABUNDLE_ITEM_TEXT,
    M_CERTIFICATE_1025,
    M_USER_DATA_1024,
    M_USER_DATA_1025,
    M_USER_DATA_EMPTY,
    M_NONCE_TEXT,
    M_USER_DATA_INDEF,
    M_MODULE_ID_INDEF,
    M_KEY_INDEF,
    M_TRAILING,
    M_NOT_MAP,
    M_INDEF_NO_BREAK,
    M_COUNT_TOO_SMALL,
    M_COUNT_HUGE,
    M_BOOL_PUBLIC_KEY,
};

static struct nitro_document real2;
static uint8_t *real2_buf;
static size_t real2_len;

static int setup(void **state)
{
    struct verify_error err;
    (void)state;
    real2_buf = th_read_vector("real-2.cbor", &real2_len);
    assert_int_equal(cose_decode_document(real2_buf, real2_len, &real2, &err), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(real2_buf);
    return 0;
}

static void w_pcrs(struct w *w, enum mutation m)
{
    const struct nitro_document *d = &real2;
    uint8_t big[64] = {0};
    unsigned n = (unsigned)__builtin_popcount(d->pcr_mask);

    if (m == M_PCRS_EMPTY) {
        w_head(w, 5, 0);
        return;
    }
    if (m == M_PCRS_33) {
        w_head(w, 5, 33);
        for (unsigned i = 0; i < 33; i++) {
            w_head(w, 0, i);
            w_bstr(w, big, 48);
        }
        return;
    }
    if (m == M_INDEF_PCRS)
        w_byte(w, 0xbf);
    else
        w_head(w, 5, n);
    for (unsigned i = 0; i < NITRO_PCR_COUNT; i++) {
        if (!(d->pcr_mask & (1u << i)))
            continue;
        if (i == 15 && m == M_PCR_INDEX_32)
            w_head(w, 0, 32);
        else if (i == 15 && m == M_PCR_INDEX_NEGATIVE)
            w_head(w, 1, 0);
        else if (i == 15 && m == M_PCR_INDEX_TEXT)
            w_tstr(w, "15");
        else if (i == 15 && m == M_PCR_DUPLICATE)
            w_head(w, 0, 14);
        else
            w_head(w, 0, i);
        if (i == 3 && m == M_PCR_LENGTH_47)
            w_bstr(w, big, 47);
        else if (i == 3 && m == M_PCR_LENGTH_32)
            w_bstr(w, big, 32);
        else
            w_bstr(w, d->pcrs[i].data, d->pcrs[i].len);
    }
    if (m == M_INDEF_PCRS)
        w_byte(w, 0xff);
}

static void w_cabundle(struct w *w, enum mutation m)
{
    const struct nitro_document *d = &real2;
    if (m == M_CABUNDLE_EMPTY) {
        w_head(w, 4, 0);
        return;
    }
    if (m == M_CABUNDLE_9) {
        w_head(w, 4, 9);
        for (int i = 0; i < 9; i++)
            w_bstr(w, d->cabundle[0].data, d->cabundle[0].len);
        return;
    }
    if (m == M_INDEF_CABUNDLE)
        w_byte(w, 0x9f);
    else
        w_head(w, 4, d->n_cabundle);
    for (size_t i = 0; i < d->n_cabundle; i++) {
        if (i == 2 && m == M_CABUNDLE_ITEM_EMPTY)
            w_bstr(w, "", 0);
        else if (i == 2 && m == M_CABUNDLE_ITEM_TEXT)
            w_tstr(w, "certificate");
        else
            w_bstr(w, d->cabundle[i].data, d->cabundle[i].len);
    }
    if (m == M_INDEF_CABUNDLE)
        w_byte(w, 0xff);
}

static void w_payload(struct w *w, enum mutation m)
{
    const struct nitro_document *d = &real2;
    static uint8_t big[1025];
    char long_id[129];
    bool indef = m == M_INDEF_MAP || m == M_INDEF_NO_BREAK;
    unsigned entries = m == M_OPTIONALS_ABSENT ? 6 : m == M_MISSING_DIGEST ? 8 : 9;

    if (m == M_NOT_MAP) {
        w_head(w, 4, 1);
        w_tstr(w, "module_id");
        return;
    }
    if (m == M_UNKNOWN_KEY || m == M_INT_KEY || m == M_DUP_KEY)
        entries++;
    if (indef)
        w_byte(w, 0xbf);
    else if (m == M_COUNT_HUGE)
        w_raw(w, "\xbb\xff\xff\xff\xff\xff\xff\xff\xff", 9);
    else
        w_head(w, 5, m == M_COUNT_TOO_SMALL ? entries - 1 : entries);

    if (m == M_KEY_INDEF)
        w_raw(w, "\x7f\x69module_id\xff", 12);
    else
        w_tstr(w, "module_id");
    if (m == M_MODULE_ID_EMPTY) {
        w_tstr(w, "");
    } else if (m == M_MODULE_ID_CONTROL) {
        w_tstr(w, "i-0\n-enc1");
    } else if (m == M_MODULE_ID_LONG) {
        memset(long_id, 'a', 128);
        long_id[128] = '\0';
        w_tstr(w, long_id);
    } else if (m == M_MODULE_ID_INDEF) {
        w_raw(w,
              "\x7f\x62i-\x62"
              "01\xff",
              8);
    } else {
        w_tstr(w, d->module_id);
    }
    if (m == M_DUP_KEY) {
        w_tstr(w, "module_id");
        w_tstr(w, d->module_id);
    }
    if (m != M_MISSING_DIGEST) {
        w_tstr(w, "digest");
        if (m == M_DIGEST_BSTR)
            w_bstr(w, "SHA384", 6);
        else
            w_tstr(w, "SHA384");
    }
    w_tstr(w, "timestamp");
    switch (m) {
    case M_TIMESTAMP_ZERO:
        w_head(w, 0, 0);
        break;
    case M_TIMESTAMP_2_63:
        w_head(w, 0, (uint64_t)1 << 63);
        break;
    case M_TIMESTAMP_NEGATIVE:
        w_head(w, 1, 5);
        break;
    case M_TIMESTAMP_FLOAT:
        w_raw(w, "\xfb\x42\x78\x84\x6a\x6c\x9b\x60\x00", 9);
        break;
    case M_TIMESTAMP_TAGGED:
        w_byte(w, 0xc1);
        w_head(w, 0, d->timestamp_ms);
        break;
    default:
        w_raw(w, "\x1b", 1); /* the NSM's 8-byte form, not minimal */
        for (int s = 56; s >= 0; s -= 8)
            w_byte(w, (uint8_t)(d->timestamp_ms >> s));
        break;
    }
    w_tstr(w, "pcrs");
    if (m == M_NULL_PCRS)
        w_byte(w, 0xf6);
    else
        w_pcrs(w, m);
    w_tstr(w, "certificate");
    if (m == M_NULL_CERTIFICATE)
        w_byte(w, 0xf6);
    else if (m == M_CERTIFICATE_1025)
        w_bstr(w, big, 1025);
    else
        w_bstr(w, d->certificate.data, d->certificate.len);
    w_tstr(w, "cabundle");
    w_cabundle(w, m);
    if (m == M_UNKNOWN_KEY) {
        w_tstr(w, "extra");
        w_head(w, 0, 1);
    }
    if (m == M_INT_KEY) {
        w_head(w, 0, 1);
        w_head(w, 0, 1);
    }
    if (m != M_OPTIONALS_ABSENT) {
        w_tstr(w, "public_key");
        if (m == M_BOOL_PUBLIC_KEY)
            w_byte(w, 0xf5);
        else
            w_bstr(w, d->public_key.data, d->public_key.len);
        w_tstr(w, "user_data");
        if (m == M_USER_DATA_1024)
            w_bstr(w, big, 1024);
        else if (m == M_USER_DATA_1025)
            w_bstr(w, big, 1025);
        else if (m == M_USER_DATA_EMPTY)
            w_bstr(w, "", 0);
        else if (m == M_USER_DATA_INDEF)
            w_raw(w, "\x5f\x41\x01\x41\x02\xff", 6);
        else
            w_bstr(w, d->user_data.data, d->user_data.len);
        w_tstr(w, "nonce");
        if (m == M_NONCE_TEXT)
            w_tstr(w, "nonce");
        else
            w_byte(w, 0xf6);
    }
    if (m == M_INDEF_MAP)
        w_byte(w, 0xff);
    if (m == M_TRAILING)
        w_byte(w, 0x00);
}

static void w_cose(struct w *w, const uint8_t *payload, size_t len)
{
    static const uint8_t sig[96] = {1};
    w_head(w, 4, 4);
    w_bstr(w, COSE_PROTECTED_ES384, 4);
    w_head(w, 5, 0);
    w_bstr(w, payload, len);
    w_bstr(w, sig, sizeof(sig));
}

static int decode_mutation(enum mutation m, struct nitro_document *doc, struct verify_error *err)
{
    static struct w payload, cose;
    payload.n = 0;
    cose.n = 0;
    w_payload(&payload, m);
    w_cose(&cose, payload.buf, payload.n);
    return cose_decode_document(cose.buf, cose.n, doc, err);
}

/* ---- Tests ------------------------------------------------------------------------------------
 */

static void test_real_documents(void **state)
{
    /* Fields per the README's "contents" table: n_pcrs, public_key, user_data, nonce (-1 null). */
    static const struct {
        const char *file;
        unsigned n_pcrs;
        int pk, ud, nonce;
        bool indefinite;
    } t[TH_REAL_COUNT] = {
        {"real-1.cbor", 16, 32, 19, -1, false},       {"real-2.cbor", 16, 32, 19, -1, false},
        {"real-3.cbor", 16, -1, -1, 256, false},      {"real-4.cbor", 16, 19, 13, -1, false},
        {"real-5.cbor", 16, -1, 91, 256, false},      {"real-6.cbor", 16, -1, 120, 256, false},
        {"real-7.cbor", 16, -1, 120, 256, false},     {"real-8.cbor", 16, 1024, 1024, 1024, false},
        {"real-9.cbor", 16, 1024, 1024, 1024, false}, {"real-10.cbor", 16, 64, -1, -1, false},
        {"real-11.cbor", 17, 32, 0, -1, false},       {"real-12.cbor", 16, 64, -1, -1, false},
        {"real-13.cbor", 16, 64, -1, -1, false},      {"real-14.cbor", 16, -1, -1, -1, false},
        {"real-15.cbor", 16, 19, 13, -1, false},      {"real-16.cbor", 16, -1, 32, -1, false},
        {"real-17.cbor", 17, 32, 0, -1, true},        {"real-18.cbor", 16, -1, 20, -1, true},
    };
    (void)state;
    for (size_t i = 0; i < TH_REAL_COUNT; i++) {
        size_t len;
        uint8_t *buf = th_read_vector(t[i].file, &len);
        struct nitro_document d;
        struct verify_error err;
        if (cose_decode_document(buf, len, &d, &err) != 0)
            fail_msg("%s: %s", t[i].file, verify_reason_string(err.reason));
        assert_false(d.tagged);
        assert_int_equal(d.protected_hdr.len, 4);
        assert_int_equal(d.signature.len, 96);
        assert_int_equal(__builtin_popcount(d.pcr_mask), t[i].n_pcrs);
        assert_int_equal(d.pcrs[0].len, 48);
        assert_int_equal(d.n_cabundle, 4);
        assert_int_equal(d.digest.len, 6);
        assert_true(d.has_public_key == (t[i].pk >= 0));
        assert_true(d.has_user_data == (t[i].ud >= 0));
        assert_true(d.has_nonce == (t[i].nonce >= 0));
        if (t[i].pk >= 0)
            assert_int_equal(d.public_key.len, t[i].pk);
        if (t[i].ud >= 0)
            assert_int_equal(d.user_data.len, t[i].ud);
        if (t[i].nonce >= 0)
            assert_int_equal(d.nonce.len, t[i].nonce);
        /* The payload's first byte tells the map form: 0xbf is indefinite. */
        assert_int_equal(d.payload.data[0] == 0xbf, t[i].indefinite);
        free(buf);
    }
}

static void test_payload_rules(void **state)
{
    static const struct {
        enum mutation m;
        enum verify_reason reason; /* VERIFY_R_OK: decodes */
        const char *detail;
    } cases[] = {
        {M_NONE, VERIFY_R_OK, NULL},
        {M_INDEF_MAP, VERIFY_R_OK, NULL},
        {M_INDEF_PCRS, VERIFY_R_OK, NULL},
        {M_INDEF_CABUNDLE, VERIFY_R_OK, NULL},
        {M_OPTIONALS_ABSENT, VERIFY_R_OK, NULL},
        {M_PCR_LENGTH_32, VERIFY_R_OK, NULL}, /* policy, not the decoder, wants 48 */
        {M_USER_DATA_1024, VERIFY_R_OK, NULL},
        {M_USER_DATA_EMPTY, VERIFY_R_OK, NULL},
        {M_UNKNOWN_KEY, VERIFY_R_PAYLOAD_UNKNOWN_KEY, NULL},
        {M_INT_KEY, VERIFY_R_PAYLOAD_UNKNOWN_KEY, NULL},
        {M_DUP_KEY, VERIFY_R_PAYLOAD_DUPLICATE_KEY, "module_id"},
        {M_MISSING_DIGEST, VERIFY_R_PAYLOAD_MISSING_FIELD, "digest"},
        {M_NULL_CERTIFICATE, VERIFY_R_PAYLOAD_NULL_FIELD, "certificate"},
        {M_NULL_PCRS, VERIFY_R_PAYLOAD_NULL_FIELD, "pcrs"},
        {M_MODULE_ID_EMPTY, VERIFY_R_PAYLOAD_FIELD, "module_id"},
        {M_MODULE_ID_CONTROL, VERIFY_R_PAYLOAD_FIELD, "module_id"},
        {M_MODULE_ID_LONG, VERIFY_R_PAYLOAD_FIELD, "module_id"},
        {M_DIGEST_BSTR, VERIFY_R_PAYLOAD_FIELD, "digest"},
        {M_TIMESTAMP_ZERO, VERIFY_R_PAYLOAD_TIMESTAMP, NULL},
        {M_TIMESTAMP_2_63, VERIFY_R_PAYLOAD_TIMESTAMP, NULL},
        {M_TIMESTAMP_NEGATIVE, VERIFY_R_PAYLOAD_FIELD, "timestamp"},
        {M_TIMESTAMP_FLOAT, VERIFY_R_PAYLOAD_FIELD, "timestamp"},
        {M_TIMESTAMP_TAGGED, VERIFY_R_PAYLOAD_TAG, "timestamp"},
        {M_PCR_INDEX_32, VERIFY_R_PAYLOAD_PCR_INDEX, NULL},
        {M_PCR_INDEX_NEGATIVE, VERIFY_R_PAYLOAD_PCR_INDEX, NULL},
        {M_PCR_INDEX_TEXT, VERIFY_R_PAYLOAD_FIELD, "pcrs"},
        {M_PCR_DUPLICATE, VERIFY_R_PAYLOAD_PCR_DUPLICATE, NULL},
        {M_PCR_LENGTH_47, VERIFY_R_PAYLOAD_PCR_LENGTH, NULL},
        {M_PCRS_EMPTY, VERIFY_R_PAYLOAD_FIELD, "pcrs"},
        {M_PCRS_33, VERIFY_R_PAYLOAD_FIELD, "pcrs"},
        {M_CABUNDLE_EMPTY, VERIFY_R_PAYLOAD_FIELD, "cabundle"},
        {M_CABUNDLE_9, VERIFY_R_PAYLOAD_FIELD, "cabundle"},
        {M_CABUNDLE_ITEM_EMPTY, VERIFY_R_PAYLOAD_FIELD, "cabundle"},
        {M_CABUNDLE_ITEM_TEXT, VERIFY_R_PAYLOAD_FIELD, "cabundle"},
        {M_CERTIFICATE_1025, VERIFY_R_PAYLOAD_FIELD, "certificate"},
        {M_USER_DATA_1025, VERIFY_R_PAYLOAD_FIELD, "user_data"},
        {M_NONCE_TEXT, VERIFY_R_PAYLOAD_FIELD, "nonce"},
        {M_BOOL_PUBLIC_KEY, VERIFY_R_PAYLOAD_FIELD, "public_key"},
        {M_USER_DATA_INDEF, VERIFY_R_PAYLOAD_INDEFINITE_STRING, "user_data"},
        {M_MODULE_ID_INDEF, VERIFY_R_PAYLOAD_INDEFINITE_STRING, "module_id"},
        {M_KEY_INDEF, VERIFY_R_PAYLOAD_INDEFINITE_STRING, NULL},
        {M_TRAILING, VERIFY_R_PAYLOAD_TRAILING, NULL},
        {M_NOT_MAP, VERIFY_R_PAYLOAD_NOT_MAP, NULL},
        {M_INDEF_NO_BREAK, VERIFY_R_PAYLOAD_MALFORMED, NULL},
        {M_COUNT_TOO_SMALL, VERIFY_R_PAYLOAD_TRAILING, NULL},
        {M_COUNT_HUGE, VERIFY_R_PAYLOAD_MALFORMED, NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct nitro_document d;
        struct verify_error err = {0};
        int rc = decode_mutation(cases[i].m, &d, &err);
        if (cases[i].reason == VERIFY_R_OK) {
            if (rc != 0)
                fail_msg("mutation %d: %s (%s)", cases[i].m, verify_reason_string(err.reason),
                         err.detail);
            continue;
        }
        assert_int_equal(rc, VERIFY_REJECT);
        if (err.reason != cases[i].reason)
            fail_msg("mutation %d: got %s, want %s", cases[i].m, verify_reason_string(err.reason),
                     verify_reason_string(cases[i].reason));
        assert_string_equal(err.detail, cases[i].detail != NULL ? cases[i].detail : "");
    }
}

static void test_payload_fields_decoded(void **state)
{
    struct nitro_document d;
    struct verify_error err;
    (void)state;
    assert_int_equal(decode_mutation(M_INDEF_MAP, &d, &err), 0);
    assert_string_equal(d.module_id, real2.module_id);
    assert_int_equal(d.timestamp_ms, 1684948068582ULL);
    assert_int_equal(d.pcr_mask, 0xffff);
    assert_memory_equal(d.pcrs[4].data, real2.pcrs[4].data, 48);
    assert_int_equal(d.n_cabundle, 4);
    assert_false(d.has_nonce);
    assert_int_equal(decode_mutation(M_OPTIONALS_ABSENT, &d, &err), 0);
    assert_false(d.has_public_key || d.has_user_data || d.has_nonce);
}

/* Rewraps real-2's payload and signature in a COSE structure built from `prefix` (everything
 * before the protected header), `prot`/`unprot` encodings and `suffix` after the signature. */
static int rewrap(const char *prefix, size_t prefix_len, const char *prot, size_t prot_len,
                  const char *unprot, size_t unprot_len, const char *suffix, size_t suffix_len,
                  struct nitro_document *d, struct verify_error *err)
{
    static struct w w;
    w.n = 0;
    w_raw(&w, prefix, prefix_len);
    w_raw(&w, prot, prot_len);
    w_raw(&w, unprot, unprot_len);
    w_bstr(&w, real2.payload.data, real2.payload.len);
    w_bstr(&w, real2.signature.data, real2.signature.len);
    w_raw(&w, suffix, suffix_len);
    memset(d, 0, sizeof(*d));
    return cose_decode_document(w.buf, w.n, d, err);
}

#define S(x) x, sizeof(x) - 1
#define PROT "\x44\xa1\x01\x38\x22"

static void test_cose_rules(void **state)
{
    static const struct {
        const char *name;
        const char *prefix;
        size_t prefix_len;
        const char *prot;
        size_t prot_len;
        const char *unprot;
        size_t unprot_len;
        const char *suffix;
        size_t suffix_len;
        enum verify_reason reason;
    } cases[] = {
        {"untagged", S("\x84"), S(PROT), S("\xa0"), S(""), VERIFY_R_OK},
        {"tag 18", S("\xd2\x84"), S(PROT), S("\xa0"), S(""), VERIFY_R_OK},
        {"tag 18 two-byte", S("\xd8\x12\x84"), S(PROT), S("\xa0"), S(""), VERIFY_R_OK},
        {"indefinite array", S("\x9f"), S(PROT), S("\xa0"), S("\xff"), VERIFY_R_OK},
        {"indefinite empty unprotected", S("\x84"), S(PROT), S("\xbf\xff"), S(""), VERIFY_R_OK},
        {"protected, long bstr head", S("\x84"), S("\x58\x04\xa1\x01\x38\x22"), S("\xa0"), S(""),
         VERIFY_R_OK},
        {"tag 18 twice", S("\xd2\xd2\x84"), S(PROT), S("\xa0"), S(""), VERIFY_R_COSE_TAG},
        {"tag 18 then d8 12", S("\xd2\xd8\x12\x84"), S(PROT), S("\xa0"), S(""), VERIFY_R_COSE_TAG},
        {"tag 98", S("\xd8\x62\x84"), S(PROT), S("\xa0"), S(""), VERIFY_R_COSE_TAG},
        {"tag 17", S("\xd1\x84"), S(PROT), S("\xa0"), S(""), VERIFY_R_COSE_TAG},
        {"tag 1", S("\xc1\x84"), S(PROT), S("\xa0"), S(""), VERIFY_R_COSE_TAG},
        {"tagged element", S("\x84\xc1"), S(PROT), S("\xa0"), S(""), VERIFY_R_COSE_TAG},
        {"map", S("\xa2"), S(PROT), S("\xa0"), S(""), VERIFY_R_COSE_NOT_ARRAY},
        {"array of 3", S("\x83"), S(PROT), S("\xa0"), S(""), VERIFY_R_COSE_ARRAY_LENGTH},
        {"indefinite, 5 items", S("\x9f"), S(PROT), S("\xa0"), S("\x40\xff"),
         VERIFY_R_COSE_ARRAY_LENGTH},
        {"indefinite, no break", S("\x9f"), S(PROT), S("\xa0"), S(""), VERIFY_R_COSE_MALFORMED},
        {"protected empty", S("\x84"), S("\x40"), S("\xa0"), S(""), VERIFY_R_COSE_PROTECTED},
        {"protected es256", S("\x84"), S("\x43\xa1\x01\x26"), S("\xa0"), S(""),
         VERIFY_R_COSE_PROTECTED},
        /* Same length as {1: -35} and equal but for the last byte: {1: -36}, ES512. */
        {"protected es512", S("\x84"), S("\x44\xa1\x01\x38\x23"), S("\xa0"), S(""),
         VERIFY_R_COSE_PROTECTED},
        /* Same length, last byte one lower: {1: -34}, not ES384 either. */
        {"protected alg -34", S("\x84"), S("\x44\xa1\x01\x38\x21"), S("\xa0"), S(""),
         VERIFY_R_COSE_PROTECTED},
        /* Same length, another label with the ES384 value: {2: -35} names no algorithm. */
        {"protected label 2", S("\x84"), S("\x44\xa1\x02\x38\x22"), S("\xa0"), S(""),
         VERIFY_R_COSE_PROTECTED},
        {"protected with kid", S("\x84"), S("\x47\xa2\x01\x38\x22\x04\x40"), S("\xa0"), S(""),
         VERIFY_R_COSE_PROTECTED},
        {"protected not minimal", S("\x84"), S("\x45\xa1\x01\x39\x00\x22"), S("\xa0"), S(""),
         VERIFY_R_COSE_PROTECTED},
        {"protected as map", S("\x84"), S("\xa1\x01\x38\x22"), S("\xa0"), S(""),
         VERIFY_R_COSE_PROTECTED},
        {"protected indefinite", S("\x84"), S("\x5f\x44\xa1\x01\x38\x22\xff"), S("\xa0"), S(""),
         VERIFY_R_COSE_INDEFINITE_STRING},
        {"unprotected null", S("\x84"), S(PROT), S("\xf6"), S(""), VERIFY_R_COSE_UNPROTECTED},
        {"unprotected kid", S("\x84"), S(PROT), S("\xa1\x04\x43kid"), S(""),
         VERIFY_R_COSE_UNPROTECTED},
        {"unprotected indefinite kid", S("\x84"), S(PROT), S("\xbf\x04\x40\xff"), S(""),
         VERIFY_R_COSE_UNPROTECTED},
        {"trailing byte", S("\x84"), S(PROT), S("\xa0"), S("\x00"), VERIFY_R_COSE_TRAILING},
        {"trailing item", S("\x84"), S(PROT), S("\xa0"), S("\x84"), VERIFY_R_COSE_TRAILING},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct nitro_document d;
        struct verify_error err = {0};
        int rc = rewrap(cases[i].prefix, cases[i].prefix_len, cases[i].prot, cases[i].prot_len,
                        cases[i].unprot, cases[i].unprot_len, cases[i].suffix, cases[i].suffix_len,
                        &d, &err);
        if (cases[i].reason == VERIFY_R_OK) {
            if (rc != 0)
                fail_msg("%s: %s", cases[i].name, verify_reason_string(err.reason));
            assert_int_equal(d.tagged,
                             cases[i].prefix[0] != '\x84' && cases[i].prefix[0] != '\x9f');
            continue;
        }
        if (rc != VERIFY_REJECT || err.reason != cases[i].reason)
            fail_msg("%s: got %s, want %s", cases[i].name,
                     rc == 0 ? "accepted" : verify_reason_string(err.reason),
                     verify_reason_string(cases[i].reason));
    }
}

static void test_cose_element_types(void **state)
{
    static struct w w;
    struct nitro_document d;
    struct verify_error err;
    static const uint8_t sig95[95], sig97[97];
    (void)state;

    /* Payload: empty, text, null, 16385 bytes. */
    static uint8_t big[COSE_MAX_PAYLOAD + 1];
    const struct {
        const char *name;
        int kind; /* 0 empty bstr, 1 tstr, 2 null, 3 too long, 4 sig95, 5 sig97, 6 sig tstr */
        enum verify_reason reason;
    } cases[] = {
        {"empty payload", 0, VERIFY_R_COSE_PAYLOAD},
        {"text payload", 1, VERIFY_R_COSE_PAYLOAD},
        {"detached payload", 2, VERIFY_R_COSE_PAYLOAD},
        {"payload over 16 KiB", 3, VERIFY_R_ENVELOPE_DOC_TOO_LARGE},
        {"95-byte signature", 4, VERIFY_R_COSE_SIGNATURE_FORMAT},
        {"97-byte signature", 5, VERIFY_R_COSE_SIGNATURE_FORMAT},
        {"text signature", 6, VERIFY_R_COSE_SIGNATURE_FORMAT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        w.n = 0;
        w_raw(&w, S("\x84" PROT "\xa0"));
        switch (cases[i].kind) {
        case 0:
            w_bstr(&w, "", 0);
            break;
        case 1:
            w_tstr(&w, "payload");
            break;
        case 2:
            w_byte(&w, 0xf6);
            break;
        case 3:
            w_bstr(&w, big, sizeof(big));
            break;
        default:
            w_bstr(&w, real2.payload.data, real2.payload.len);
            break;
        }
        if (cases[i].kind == 4)
            w_bstr(&w, sig95, sizeof(sig95));
        else if (cases[i].kind == 5)
            w_bstr(&w, sig97, sizeof(sig97));
        else if (cases[i].kind == 6)
            w_tstr(&w, "signature");
        else
            w_bstr(&w, real2.signature.data, 96);
        err.reason = VERIFY_R_OK;
        assert_int_equal(cose_decode_document(w.buf, w.n, &d, &err), VERIFY_REJECT);
        if (err.reason != cases[i].reason)
            fail_msg("%s: got %s", cases[i].name, verify_reason_string(err.reason));
    }
    /* A payload of exactly 16384 bytes passes the COSE layer (and fails as a payload). */
    w.n = 0;
    w_raw(&w, S("\x84" PROT "\xa0"));
    w_bstr(&w, big, COSE_MAX_PAYLOAD);
    w_bstr(&w, real2.signature.data, 96);
    memset(&d, 0, sizeof(d));
    assert_int_equal(cose_decode_sign1(w.buf, w.n, &d, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_ENVELOPE_DOC_TOO_LARGE); /* the whole is > 16 KiB */
}

static void test_every_prefix_rejected(void **state)
{
    struct nitro_document d;
    struct verify_error err;
    (void)state;
    for (size_t n = 0; n < real2_len; n++) {
        assert_int_equal(cose_decode_document(real2_buf, n, &d, &err), VERIFY_REJECT);
        assert_true(verify_reason_stage(err.reason) == VERIFY_STAGE_COSE ||
                    verify_reason_stage(err.reason) == VERIFY_STAGE_PAYLOAD);
    }
    assert_int_equal(cose_decode_document(real2_buf, real2_len, &d, &err), 0);
}

static void test_signature(void **state)
{
    const unsigned char *p = real2.certificate.data;
    X509 *leaf = d2i_X509(NULL, &p, (long)real2.certificate.len);
    struct nitro_document d = real2;
    struct verify_error err;
    uint8_t sig[96];
    EVP_PKEY *other = th_key("P-384");
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA384", NULL);
    (void)state;

    assert_non_null(leaf);
    assert_int_equal(cose_verify_signature(&d, X509_get0_pubkey(leaf), NULL, &err), 0);
    assert_int_equal(cose_verify_signature(&d, X509_get0_pubkey(leaf), md, &err), 0);
    assert_int_equal(cose_verify_signature(&d, other, md, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_SIGNATURE_INVALID);

    for (size_t i = 0; i < sizeof(sig); i += 47) {
        memcpy(sig, real2.signature.data, sizeof(sig));
        sig[i] ^= 0x80;
        d.signature.data = sig;
        assert_int_equal(cose_verify_signature(&d, X509_get0_pubkey(leaf), md, &err),
                         VERIFY_REJECT);
    }
    /* r = 0 and s = 0 are never valid. */
    memset(sig, 0, sizeof(sig));
    assert_int_equal(cose_verify_signature(&d, X509_get0_pubkey(leaf), md, &err), VERIFY_REJECT);
    d.signature.data = real2.signature.data;
    assert_int_equal(cose_verify_signature(&d, NULL, md, &err), VERIFY_REJECT);
    X509_free(leaf);
    EVP_PKEY_free(other);
    EVP_MD_free(md);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_documents),
        cmocka_unit_test(test_payload_rules),
        cmocka_unit_test(test_payload_fields_decoded),
        cmocka_unit_test(test_cose_rules),
        cmocka_unit_test(test_cose_element_types),
        cmocka_unit_test(test_every_prefix_rejected),
        cmocka_unit_test(test_signature),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
