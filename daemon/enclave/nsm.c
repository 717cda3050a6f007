#include "enclave/nsm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbor.h>

#include "base/clock.h"

/* ---- CBOR marshalling -------------------------------------------------------------------- */

static bool map_add(cbor_item_t *map, const char *key, cbor_item_t *value)
{
    cbor_item_t *k = cbor_build_string(key);
    bool ok = k != NULL && value != NULL &&
              cbor_map_add(map, (struct cbor_pair){.key = k, .value = value});
    if (k != NULL)
        cbor_decref(&k);
    if (value != NULL)
        cbor_decref(&value);
    return ok;
}

int nsm_encode_request(const uint8_t *user_data, size_t user_data_len, const uint8_t *nonce,
                       size_t nonce_len, uint8_t *out, size_t cap)
{
    cbor_item_t *root = NULL, *att = NULL;
    size_t n;
    int rc = -ENOMEM;

    if (user_data_len > NSM_USER_DATA_MAX || nonce_len > NSM_USER_DATA_MAX)
        return -EINVAL;
    if (cap > NSM_REQUEST_MAX)
        cap = NSM_REQUEST_MAX;
    root = cbor_new_definite_map(1);
    att = cbor_new_definite_map(3);
    if (root == NULL || att == NULL)
        goto out;
    if (!map_add(att, "user_data", cbor_build_bytestring(user_data, user_data_len)) ||
        !map_add(att, "nonce", cbor_build_bytestring(nonce, nonce_len)) ||
        !map_add(att, "public_key", cbor_new_null()))
        goto out;
    if (!map_add(root, "Attestation", cbor_incref(att)))
        goto out;
    n = cbor_serialize(root, out, cap);
    rc = n == 0 ? -EMSGSIZE : (int)n;
out:
    if (att != NULL)
        cbor_decref(&att);
    if (root != NULL)
        cbor_decref(&root);
    return rc;
}

static bool is_key(const cbor_item_t *item, const char *name)
{
    size_t n = strlen(name);
    return cbor_isa_string(item) && cbor_string_is_definite(item) &&
           cbor_string_length(item) == n && memcmp(cbor_string_handle(item), name, n) == 0;
}

/* The value of a map of exactly one pair whose key is `name`, or NULL. */
static cbor_item_t *only_pair(const cbor_item_t *map, const char *name)
{
    struct cbor_pair *p;
    if (!cbor_isa_map(map) || cbor_map_size(map) != 1)
        return NULL;
    p = cbor_map_handle(map);
    return is_key(p[0].key, name) ? p[0].value : NULL;
}

/* Copies a printable version of the NSM's error code into err. */
static void error_code(const cbor_item_t *v, char *err, size_t cap)
{
    char code[NSM_ERROR_MAX];
    size_t n = 0;
    if (cbor_isa_string(v) && cbor_string_is_definite(v)) {
        const unsigned char *s = cbor_string_handle(v);
        for (size_t i = 0; i < cbor_string_length(v) && n + 1 < sizeof(code); i++)
            code[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    }
    code[n] = '\0';
    snprintf(err, cap, "the NSM answered Error: %s", n > 0 ? code : "(not a string)");
}

int nsm_decode_response(const uint8_t *resp, size_t len, uint8_t *out, size_t cap, char *err,
                        size_t err_cap)
{
    struct cbor_load_result res;
    cbor_item_t *root = NULL, *v, *doc;
    int rc = -EBADMSG;

    if (len > NSM_RESPONSE_MAX) {
        snprintf(err, err_cap, "the NSM response is %zu bytes, over %d", len, NSM_RESPONSE_MAX);
        return -EMSGSIZE;
    }
    root = cbor_load(resp, len, &res);
    if (root == NULL || res.error.code != CBOR_ERR_NONE || res.read != len) {
        snprintf(err, err_cap, "the NSM response is not one CBOR item");
        goto out;
    }
    if ((v = only_pair(root, "Error")) != NULL) {
        error_code(v, err, err_cap);
        rc = -EPROTO;
        goto out;
    }
    v = only_pair(root, "Attestation");
    doc = v != NULL ? only_pair(v, "document") : NULL;
    if (doc == NULL || !cbor_isa_bytestring(doc) || !cbor_bytestring_is_definite(doc) ||
        cbor_bytestring_length(doc) == 0) {
        snprintf(err, err_cap, "the NSM response is not {\"Attestation\": {\"document\": bstr}}");
        goto out;
    }
    if (cbor_bytestring_length(doc) > cap || cbor_bytestring_length(doc) > NSM_DOCUMENT_MAX) {
        snprintf(err, err_cap, "the NSM document is %zu bytes, too large",
                 cbor_bytestring_length(doc));
        rc = -EMSGSIZE;
        goto out;
    }
    memcpy(out, cbor_bytestring_handle(doc), cbor_bytestring_length(doc));
    rc = (int)cbor_bytestring_length(doc);
out:
    if (root != NULL)
        cbor_decref(&root);
    return rc;
}

/* ---- The device backend ------------------------------------------------------------------ */

struct nsm_device {
    struct nsm_backend base;
    int fd;
};

static int device_get_document(struct nsm_backend *b, const uint8_t *user_data,
                               size_t user_data_len, const uint8_t *nonce, size_t nonce_len,
                               uint8_t *out, size_t cap, char *err, size_t err_cap)
{
    struct nsm_device *d = (struct nsm_device *)b;
    uint8_t req[NSM_REQUEST_MAX];
    uint8_t *resp;
    struct nsm_message msg;
    int n, rc;

    n = nsm_encode_request(user_data, user_data_len, nonce, nonce_len, req, sizeof(req));
    if (n < 0) {
        snprintf(err, err_cap, "cannot encode the NSM request: %s", strerror(-n));
        return n;
    }
    /* The response buffer is the driver's maximum, allocated per call: a document is never
     * kept beyond the request that asked for it. */
    resp = malloc(NSM_RESPONSE_MAX);
    if (resp == NULL) {
        snprintf(err, err_cap, "out of memory");
        return -ENOMEM;
    }
    msg.request.iov_base = req;
    msg.request.iov_len = (size_t)n;
    msg.response.iov_base = resp;
    msg.response.iov_len = NSM_RESPONSE_MAX;
    if (ioctl(d->fd, NSM_IOCTL, &msg) != 0) {
        rc = -errno;
        snprintf(err, err_cap, "the NSM ioctl failed: %s", strerror(errno));
        goto out;
    }
    rc = nsm_decode_response(resp, msg.response.iov_len, out, cap, err, err_cap);
out:
    free(resp);
    return rc;
}

static void device_free(struct nsm_backend *b)
{
    struct nsm_device *d = (struct nsm_device *)b;
    close(d->fd);
    free(d);
}

static const struct nsm_backend_ops device_ops = {device_get_document, device_free};

/* ---- The test backend, wrapped --------------------------------------------------------- */

struct nsm_testing {
    struct nsm_backend base;
    struct nsm_test *t;
};

static int testing_get_document(struct nsm_backend *b, const uint8_t *user_data,
                                size_t user_data_len, const uint8_t *nonce, size_t nonce_len,
                                uint8_t *out, size_t cap, char *err, size_t err_cap)
{
    struct nsm_testing *t = (struct nsm_testing *)b;
    return nsm_test_document(t->t, clock_wall_ms(), user_data, user_data_len, nonce, nonce_len, out,
                             cap, err, err_cap);
}

static void testing_free(struct nsm_backend *b)
{
    struct nsm_testing *t = (struct nsm_testing *)b;
    nsm_test_free(t->t);
    free(t);
}

static const struct nsm_backend_ops testing_ops = {testing_get_document, testing_free};

struct nsm_backend *nsm_backend_open(const char *spec, char *err, size_t cap)
{
    if (strncmp(spec, "test:", 5) == 0) {
        struct nsm_testing *t = calloc(1, sizeof(*t));
        if (t == NULL) {
            snprintf(err, cap, "out of memory");
            return NULL;
        }
        t->t = nsm_test_new(spec + 5, err, cap);
        if (t->t == NULL) {
            free(t);
            return NULL;
        }
        t->base.ops = &testing_ops;
        t->base.name = "test";
        return &t->base;
    }
    if (spec[0] != '/') {
        snprintf(err, cap, "nsm must be a device path (%s) or test:DIR, not \"%s\"", NSM_DEVICE,
                 spec);
        return NULL;
    }
    struct nsm_device *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    d->fd = open(spec, O_RDWR | O_CLOEXEC);
    if (d->fd < 0) {
        snprintf(err, cap, "cannot open %s: %s (not inside a Nitro enclave?)", spec,
                 strerror(errno));
        free(d);
        return NULL;
    }
    d->base.ops = &device_ops;
    d->base.name = "device";
    return &d->base;
}

int nsm_backend_set_test_pcr(struct nsm_backend *b, unsigned index, const uint8_t pcr[48])
{
    if (b->ops != &testing_ops)
        return -EINVAL;
    return nsm_test_set_pcr(((struct nsm_testing *)b)->t, index, pcr);
}

void nsm_backend_free(struct nsm_backend *b)
{
    if (b != NULL)
        b->ops->free(b);
}

int nsm_get_document(struct nsm_backend *b, const uint8_t *user_data, size_t user_data_len,
                     const uint8_t *nonce, size_t nonce_len, uint8_t *out, size_t cap, char *err,
                     size_t err_cap)
{
    return b->ops->get_document(b, user_data, user_data_len, nonce, nonce_len, out, cap, err,
                                err_cap);
}
