/*
 * The audit log (audit_log in [daemon]): append-only JSON lines, one record per attestation
 * verdict, policy change, pin cut or drop and reload, each carrying
 *   "seq"  a number one higher than the previous record's (the first record ever has 1),
 *   "ts"   the wall-clock time, "2026-12-06T05:01:11.123Z",
 *   "prev" the SHA-256 (hex) of the previous record's line bytes, without its newline
 *          (64 zeros for the first record ever),
 *   "type" attestation | policy | policy_bundle_refused | pin | reload | recovered,
 * then the type's own fields. The chain continues across restarts (the tail of the file is
 * read at open) and across rotation (the first record of a new file links to the last record
 * of the file renamed to FILE.1). `attestproxy audit verify` checks it (app/audit_cmd.c);
 * docs/operations.md, "The audit log", documents the fields, the fsync modes and what the
 * chain does and does not prove.
 *
 * Bounded: a record is at most AUDIT_RECORD_MAX bytes, written with one write(); the tail read
 * at open is at most AUDIT_RECORD_MAX bytes. Used from the loop thread only.
 */
#ifndef ATTESTPROXY_BASE_AUDIT_H
#define ATTESTPROXY_BASE_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/config.h"

#define AUDIT_RECORD_MAX (16 * 1024)
#define AUDIT_HASH_HEX   65 /* 64 hex digits and the NUL */

struct audit;

struct audit_options {
    const char *path;   /* the log file */
    uint64_t max_bytes; /* rotate before the file would grow past this; 0 = never */
    enum audit_fsync_mode fsync;
    const char *archive_dir;    /* NULL: no evidence archive */
    uint64_t archive_max_bytes; /* the archive's bound; the oldest documents go first */
};

/**
 * Opens (creating it, mode 0640) the log at o->path and finds where its chain stands: the last
 * complete record's seq and hash. A last line without its newline (the writer died mid-write)
 * is cut off and a "recovered" record says how many bytes were cut and their SHA-256; a last
 * complete line that is not a record is an error (the file is not ours, or was edited: move it
 * aside). An empty file continues from the last record of FILE.1, when there is one.
 * Returns 0 with the handle in *out, or a negative errno with the reason in `err`.
 */
int audit_open(const struct audit_options *o, struct audit **out, char *err, size_t cap);

/** fsyncs (unless fsync = none) and closes; NULL is a no-op. */
void audit_close(struct audit *a);

/**
 * Appends one record of `type` with the members of `fields` (borrowed; may be NULL) after
 * seq, ts, prev and type, rotating first when the record would take the file past max_bytes.
 * Returns 0, or a negative errno (the failure is logged as event=audit_write_failed; the chain
 * stays consistent because seq and prev advance only after a complete write). NULL `a`: 0.
 */
int audit_append(struct audit *a, const char *type, json_t *fields);

/**
 * One attestation verdict: the SHA-256 of the evidence bytes as received (`doc`, `len`), the
 * pin, the document's PCRs (`pcr_mask` bit i = PCR i present; NULL `pcrs` when the document
 * was never decoded), the verdict and its reason. A verified document is also stored in the
 * archive under its SHA-256 (once). NULL `a`: nothing.
 */
void audit_attestation(struct audit *a, const char *service, const uint8_t *doc, size_t len,
                       const uint8_t pin[32], uint32_t pcr_mask,
                       const uint8_t (*pcrs)[NITRO_PCR_LEN], const char *verdict,
                       const char *reason);

/** A pin event: `event` = pin_dropped | pin_expired | policy_enforced, its reason, and the pin
 *  (NULL when the event concerns `count` pins at once). NULL `a`: nothing. */
void audit_pin(struct audit *a, const char *service, const char *event, const char *reason,
               const uint8_t *pin, size_t count);

/** The SHA-256 of `len` bytes as 64 lower-case hex digits. */
void audit_sha256_hex(const void *data, size_t len, char out[AUDIT_HASH_HEX]);

/** Records written since audit_open(), and the seq of the last one (tests, status). */
uint64_t audit_last_seq(const struct audit *a);

#endif
