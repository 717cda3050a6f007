/*
 * The companion's configuration: one [enclave] section of an INI file (inih), parsed into one
 * validated structure with the daemon's value parsers (base/config.h: durations, sizes, listen
 * addresses). The key table is below and in attestproxy-enclave(8); there is no reload: the
 * companion runs in an enclave whose image fixes its configuration.
 */
#ifndef ATTESTPROXY_ENCLAVE_ENCLAVE_CONFIG_H
#define ATTESTPROXY_ENCLAVE_ENCLAVE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"
#include "base/log.h"

#define ENCLAVE_PCRS    16
#define ENCLAVE_PCR_LEN 48

enum enclave_curve {
    ENCLAVE_CURVE_P384 = 0,
    ENCLAVE_CURVE_P256,
};

struct enclave_config {
    char path[CONFIG_PATH_MAX];
    enum log_level log_level;
    enum log_format log_format;
    bool listen_vsock;         /* vsock_port set */
    uint32_t vsock_port;       /* AF_VSOCK, CID VMADDR_CID_ANY */
    bool listen_tcp;           /* listen set */
    struct listen_addr listen; /* TCP, for tests and for enclaves reached another way */
    struct listen_addr app;    /* the application inside the enclave, plain HTTP/1.1 */
    char nsm[CONFIG_PATH_MAX]; /* "/dev/nsm" or "test:DIR" */
    enum enclave_curve curve;  /* the TLS key */
    uint64_t max_header_bytes; /* one request head; 431 beyond */
    uint32_t max_headers;
    uint64_t max_body_size;          /* one request body; 413 beyond; 0 = no limit */
    uint64_t header_timeout_ms;      /* a started request head must be complete within this */
    uint64_t idle_timeout_ms;        /* keep-alive connection without a request */
    uint64_t connect_timeout_ms;     /* to the app: 502 beyond */
    uint64_t response_timeout_ms;    /* the app's response head after the request: 504 beyond */
    uint64_t stream_idle_timeout_ms; /* no byte either way while a body streams */
    uint32_t max_connections;
    uint32_t test_pcr_mask; /* PCRs given with test_pcr (test backend only) */
    uint8_t test_pcrs[ENCLAVE_PCRS][ENCLAVE_PCR_LEN];
};

/**
 * Loads and validates `path` into `out` (defaults first). Returns 0, or a negative errno with
 * "file:line: message" in err (-ENOENT and the like when unreadable, -EINVAL when invalid).
 */
int enclave_config_load(const char *path, struct enclave_config *out, char *err, size_t cap);

/** Parses "P-256" or "P-384". */
int enclave_parse_curve(const char *s, enum enclave_curve *out);

#endif
