/*
 * The Nitro Secure Module, behind one interface: "give me an attestation document for this
 * user_data and this nonce". Two backends implement it:
 *
 *   - the device (`nsm = /dev/nsm`, the production default): the NSM driver's one ioctl, with a
 *     CBOR request {"Attestation": {"user_data": bstr, "nonce": bstr, "public_key": null}} and a
 *     CBOR response {"Attestation": {"document": bstr}} or {"Error": "<ErrorCode>"}, the request
 *     at most NSM_REQUEST_MAX and the response at most NSM_RESPONSE_MAX bytes, as the driver
 *     caps them (aws-nitro-enclaves-nsm-api, src/driver/mod.rs);
 *   - the test backend (`nsm = test:DIR`, only when configured so): documents shaped like the
 *     NSM's, signed with the leaf key of a test chain that tests/sim/chain.py wrote to DIR.
 *
 * There is no fallback from one to the other: a missing /dev/nsm is an error at start.
 * Every call asks for a new document; nothing is cached (docs/evidence-protocol.md, §4).
 * Backends are synchronous (the NSM answers an ioctl in about a millisecond) and single-threaded.
 */
#ifndef ATTESTPROXY_ENCLAVE_NSM_H
#define ATTESTPROXY_ENCLAVE_NSM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#define NSM_DEVICE        "/dev/nsm"
#define NSM_REQUEST_MAX   0x1000 /* the driver refuses larger requests */
#define NSM_RESPONSE_MAX  0x3000 /* the driver's response buffer */
#define NSM_DOCUMENT_MAX  (16 * 1024)
#define NSM_USER_DATA_MAX 512 /* what the NSM accepts for user_data and nonce */
#define NSM_ERROR_MAX     64

/* The driver's message: the request and the response buffer; the driver sets response.iov_len
 * to the length of its answer. */
struct nsm_message {
    struct iovec request;
    struct iovec response;
};

#define NSM_IOCTL_MAGIC 0x0A
#define NSM_IOCTL       _IOWR(NSM_IOCTL_MAGIC, 0, struct nsm_message)

struct nsm_backend;

struct nsm_backend_ops {
    /* Writes a fresh document for (user_data, nonce) into out (cap bytes); returns its length,
     * or a negative errno with a message in err. */
    int (*get_document)(struct nsm_backend *b, const uint8_t *user_data, size_t user_data_len,
                        const uint8_t *nonce, size_t nonce_len, uint8_t *out, size_t cap, char *err,
                        size_t err_cap);
    void (*free)(struct nsm_backend *b);
};

struct nsm_backend {
    const struct nsm_backend_ops *ops;
    const char *name; /* "device" or "test", for logs */
};

/**
 * Opens the backend that `spec` names: "/dev/nsm" (or another device path) or "test:DIR".
 * Returns NULL with a message in err when the device cannot be opened or the test chain cannot
 * be loaded; the caller refuses to start. Free with nsm_backend_free().
 */
struct nsm_backend *nsm_backend_open(const char *spec, char *err, size_t cap);
void nsm_backend_free(struct nsm_backend *b);

/** Sets PCR `index` (0..15) of the documents a test backend makes. Returns 0, or -EINVAL for
 *  the device backend (its PCRs are the enclave's) or a bad index. */
int nsm_backend_set_test_pcr(struct nsm_backend *b, unsigned index, const uint8_t pcr[48]);

/** The backend's get_document() (see struct nsm_backend_ops). */
int nsm_get_document(struct nsm_backend *b, const uint8_t *user_data, size_t user_data_len,
                     const uint8_t *nonce, size_t nonce_len, uint8_t *out, size_t cap, char *err,
                     size_t err_cap);

/**
 * Encodes the Attestation request (public_key null) into out. Returns its length, or -EMSGSIZE
 * when it would exceed min(cap, NSM_REQUEST_MAX), -EINVAL for fields over NSM_USER_DATA_MAX.
 */
int nsm_encode_request(const uint8_t *user_data, size_t user_data_len, const uint8_t *nonce,
                       size_t nonce_len, uint8_t *out, size_t cap);

/**
 * Decodes the driver's response. Returns the document's length after copying it into out, or
 * -EMSGSIZE (response over NSM_RESPONSE_MAX, document over cap), -EPROTO (the NSM answered
 * {"Error": ...}; its code in err), -EBADMSG (anything else: not one CBOR item, trailing bytes,
 * unknown shape, an empty document).
 */
int nsm_decode_response(const uint8_t *resp, size_t len, uint8_t *out, size_t cap, char *err,
                        size_t err_cap);

/* ---- The test backend (nsm_test.c) ------------------------------------------------------- */

struct nsm_test;

/**
 * Loads DIR/leaf.key.pem, DIR/leaf.crt.pem and the cabundle root first (DIR/root.crt.pem,
 * regional, zonal, instance, and extra when present), as tests/sim/chain.py saves them.
 * The PCRs default to the simulator's (SHA-384 of "attestproxy-sim-pcrN" for 0, 1, 2 and 4;
 * the other 12 of 0..15 zero). Returns NULL with a message in err.
 */
struct nsm_test *nsm_test_new(const char *dir, char *err, size_t cap);
void nsm_test_free(struct nsm_test *t);

/** Replaces PCR `index` (0..15) with 48 bytes. Returns 0 or -EINVAL. */
int nsm_test_set_pcr(struct nsm_test *t, unsigned index, const uint8_t pcr[48]);

/**
 * Builds and signs one document like the NSM's: untagged COSE_Sign1, protected {1: -35},
 * unprotected {}, the 9 payload keys in the NSM's order, timestamp `now_ms`, public_key null,
 * user_data and nonce as given (null when NULL), ES384 raw r||s over the Sig_structure.
 * Returns its length or a negative errno (err filled).
 */
int nsm_test_document(struct nsm_test *t, int64_t now_ms, const uint8_t *user_data,
                      size_t user_data_len, const uint8_t *nonce, size_t nonce_len, uint8_t *out,
                      size_t cap, char *err, size_t err_cap);

#endif
