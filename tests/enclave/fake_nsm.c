/*
 * A fake /dev/nsm for the tests, loaded with LD_PRELOAD into attestproxy-enclave: it
 * intercepts open("/dev/nsm") (every libc spelling of open) and ioctl(fd, NSM_IOCTL, msg), so
 * that the companion's real device backend (daemon/enclave/nsm.c) runs exactly as on hardware:
 * it encodes its CBOR request, calls the ioctl with a struct nsm_message, and decodes the
 * response. The shim decodes the request with its own code, checks its shape and sizes, and
 * answers as the NSM would.
 *
 * Environment:
 *   FAKE_NSM_CHAIN=DIR   the test chain (tests/sim/chain.py) that signs the documents
 *   FAKE_NSM_MODE=MODE   document (default) | error ({"Error": "InternalError"}) |
 *                        garbage (not CBOR) | emsgsize (the ioctl fails with EMSGSIZE)
 *   FAKE_NSM_LOG=FILE    one line per ioctl: "user_data=HEX nonce=HEX public_key=null"
 */
#undef _FILE_OFFSET_BITS /* our open() must be the symbol "open", not an alias of open64 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cbor.h>

#include "enclave/nsm.h"

int open(const char *path, int flags, ...);
int open64(const char *path, int flags, ...);
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int openat(int dirfd, const char *path, int flags, ...);
int openat64(int dirfd, const char *path, int flags, ...);
int ioctl(int fd, unsigned long request, ...);

static int fake_fd = -1;
static struct nsm_test *backend;

static bool is_nsm(const char *path)
{
    return path != NULL && strcmp(path, NSM_DEVICE) == 0;
}

static int open_fake(void)
{
    int fd = memfd_create("fake-nsm", MFD_CLOEXEC);
    if (fd >= 0)
        fake_fd = fd;
    return fd;
}

#define MODE_ARG(flags, mode)                                                                      \
    do {                                                                                           \
        if ((flags) & (O_CREAT | O_TMPFILE)) {                                                     \
            va_list ap;                                                                            \
            va_start(ap, flags);                                                                   \
            mode = va_arg(ap, int);                                                                \
            va_end(ap);                                                                            \
        }                                                                                          \
    } while (0)

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*ioctl_fn)(int, unsigned long, void *);

/* libc's own function `name` (dlsym returns an object pointer: POSIX lets it be copied into a
 * function pointer, ISO C does not let it be cast). */
static void next_symbol(const char *name, void *fn, size_t size)
{
    void *sym = dlsym(RTLD_NEXT, name);
    memcpy(fn, &sym, size);
}

static int real_open(const char *name, const char *path, int flags, int mode)
{
    open_fn f;
    next_symbol(name, &f, sizeof(f));
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return f(path, flags, mode);
}

int open(const char *path, int flags, ...)
{
    int mode = 0;
    MODE_ARG(flags, mode);
    return is_nsm(path) ? open_fake() : real_open("open", path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    int mode = 0;
    MODE_ARG(flags, mode);
    return is_nsm(path) ? open_fake() : real_open("open64", path, flags, mode);
}

int __open_2(const char *path, int flags)
{
    return is_nsm(path) ? open_fake() : real_open("open", path, flags, 0);
}

int __open64_2(const char *path, int flags)
{
    return is_nsm(path) ? open_fake() : real_open("open64", path, flags, 0);
}

static int real_openat(const char *name, int dirfd, const char *path, int flags, int mode)
{
    openat_fn f;
    next_symbol(name, &f, sizeof(f));
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return f(dirfd, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    int mode = 0;
    MODE_ARG(flags, mode);
    return is_nsm(path) ? open_fake() : real_openat("openat", dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    int mode = 0;
    MODE_ARG(flags, mode);
    return is_nsm(path) ? open_fake() : real_openat("openat64", dirfd, path, flags, mode);
}

/* ---- The NSM ---------------------------------------------------------------------------- */

static cbor_item_t *lookup(const cbor_item_t *map, const char *key)
{
    struct cbor_pair *p;
    if (!cbor_isa_map(map))
        return NULL;
    p = cbor_map_handle(map);
    for (size_t i = 0; i < cbor_map_size(map); i++)
        if (cbor_isa_string(p[i].key) && cbor_string_length(p[i].key) == strlen(key) &&
            memcmp(cbor_string_handle(p[i].key), key, strlen(key)) == 0)
            return p[i].value;
    return NULL;
}

static void log_hex(FILE *f, const char *name, const cbor_item_t *v)
{
    fprintf(f, "%s=", name);
    if (v == NULL || cbor_is_null(v)) {
        fputs("null", f);
    } else if (cbor_isa_bytestring(v)) {
        for (size_t i = 0; i < cbor_bytestring_length(v); i++)
            fprintf(f, "%02x", cbor_bytestring_handle(v)[i]);
    } else {
        fputs("?", f);
    }
}

/* Serialises {"Attestation": {"document": doc}} or {"Error": code} into out. */
static size_t answer(const uint8_t *doc, size_t len, const char *error, uint8_t *out, size_t cap)
{
    cbor_item_t *root = cbor_new_definite_map(1), *inner = NULL;
    size_t n;
    if (error != NULL) {
        cbor_map_add(root, (struct cbor_pair){.key = cbor_move(cbor_build_string("Error")),
                                              .value = cbor_move(cbor_build_string(error))});
    } else {
        inner = cbor_new_definite_map(1);
        cbor_map_add(inner,
                     (struct cbor_pair){.key = cbor_move(cbor_build_string("document")),
                                        .value = cbor_move(cbor_build_bytestring(doc, len))});
        cbor_map_add(root, (struct cbor_pair){.key = cbor_move(cbor_build_string("Attestation")),
                                              .value = cbor_move(inner)});
    }
    n = cbor_serialize(root, out, cap);
    cbor_decref(&root);
    return n;
}

static int fake_ioctl(struct nsm_message *m)
{
    const char *mode = getenv("FAKE_NSM_MODE"), *logp = getenv("FAKE_NSM_LOG");
    struct cbor_load_result res;
    cbor_item_t *req = NULL, *att, *ud, *nonce, *pk;
    uint8_t doc[NSM_DOCUMENT_MAX];
    char err[256];
    size_t n = 0;
    int len;

    mode = mode != NULL ? mode : "document";
    if (m->request.iov_len > NSM_REQUEST_MAX || strcmp(mode, "emsgsize") == 0) {
        errno = EMSGSIZE;
        return -1;
    }
    req = cbor_load(m->request.iov_base, m->request.iov_len, &res);
    att = req != NULL && res.read == m->request.iov_len && cbor_map_size(req) == 1
              ? lookup(req, "Attestation")
              : NULL;
    ud = lookup(att, "user_data");
    nonce = lookup(att, "nonce");
    pk = lookup(att, "public_key");
    if (logp != NULL) {
        FILE *f = fopen(logp, "a");
        if (f != NULL) {
            log_hex(f, "user_data", ud);
            log_hex(f, " nonce", nonce);
            log_hex(f, " public_key", pk);
            fputc('\n', f);
            fclose(f);
        }
    }
    if (att == NULL || ud == NULL || nonce == NULL || !cbor_isa_bytestring(ud) ||
        !cbor_isa_bytestring(nonce)) {
        n = answer(NULL, 0, "InvalidArgument", m->response.iov_base, m->response.iov_len);
    } else if (strcmp(mode, "error") == 0) {
        n = answer(NULL, 0, "InternalError", m->response.iov_base, m->response.iov_len);
    } else if (strcmp(mode, "garbage") == 0) {
        static const char junk[] = "not a CBOR answer";
        n = sizeof(junk) - 1 <= m->response.iov_len ? sizeof(junk) - 1 : 0;
        memcpy(m->response.iov_base, junk, n);
    } else {
        struct timespec ts;
        if (backend == NULL) {
            const char *dir = getenv("FAKE_NSM_CHAIN");
            backend = dir != NULL ? nsm_test_new(dir, err, sizeof(err)) : NULL;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        len = backend == NULL
                  ? -1
                  : nsm_test_document(backend, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                                      cbor_bytestring_handle(ud), cbor_bytestring_length(ud),
                                      cbor_bytestring_handle(nonce), cbor_bytestring_length(nonce),
                                      doc, sizeof(doc), err, sizeof(err));
        n = len < 0 ? answer(NULL, 0, "InternalError", m->response.iov_base, m->response.iov_len)
                    : answer(doc, (size_t)len, NULL, m->response.iov_base, m->response.iov_len);
    }
    if (req != NULL)
        cbor_decref(&req);
    if (n == 0) {
        errno = EMSGSIZE;
        return -1;
    }
    m->response.iov_len = n;
    return 0;
}

int ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    void *arg;
    ioctl_fn f;
    va_start(ap, request);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (fd >= 0 && fd == fake_fd) {
        if (request != (unsigned long)NSM_IOCTL) {
            errno = ENOTTY;
            return -1;
        }
        return fake_ioctl(arg);
    }
    next_symbol("ioctl", &f, sizeof(f));
    return f != NULL ? f(fd, request, arg) : -1;
}
