/* Whole-file reads and atomic writes: the policy bundles, the offline checks and the audit
 * archive read and write files the same way. */
#ifndef ATTESTPROXY_BASE_FILE_H
#define ATTESTPROXY_BASE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FILE_REGULAR 0x1u /* refuse anything but a regular file: a FIFO would block the loop */

/**
 * Reads `path` ("-": standard input) whole, at most `max` + 1 bytes: one byte more than the
 * caller allows, so that it can tell (and report) an oversized input. Returns 0 with a
 * malloc'd buffer in `*out` (the caller frees it) and its length in `*len`, or -errno (-EINVAL:
 * not a regular file, with FILE_REGULAR).
 */
int file_read(const char *path, size_t max, unsigned flags, uint8_t **out, size_t *len);

/**
 * fopen(path, "re") for the files a start or a reload reads (configuration, policy file,
 * token, credentials, keys, root certificate): what is not a regular file is refused with
 * errno EISDIR (a directory) or EINVAL instead of opened — a FIFO there would hold the event loop
 * (and the reload) until something wrote to it. NULL with errno on failure.
 */
FILE *file_fopen_regular(const char *path);

/** strerror(e) for the errors above, "not a regular file" for EINVAL. */
const char *file_strerror(int e);

/** fsyncs the directory that holds `path` (a rename or a new file in it survives a crash).
 *  0 or -errno. */
int file_sync_dir(const char *path);

/**
 * Replaces `path` with `len` bytes at once: written whole to `tmp` (created with `mode`), then
 * renamed over `path`, so a reader sees the old file or the new one, never a part. With
 * `sync`, the data is forced to disk before the rename and the directory after it, so the
 * new file survives a crash. Returns 0, or -errno with `tmp` removed; with `sync`, a failed
 * directory fsync returns -errno after the rename, `path` already holding the new content.
 */
int file_write_atomic(const char *path, const char *tmp, const void *data, size_t len,
                      unsigned mode, bool sync);

/**
 * Makes way for binding a Unix socket at `path`: a socket file nobody accepts on (connecting
 * is refused: left by an earlier run) is removed; a live one is -EADDRINUSE (another listener,
 * maybe of this daemon, holds it; also one whose backlog is full), one that cannot be probed
 * -errno (EACCES: another user's), anything that is not a socket -EEXIST. 0 when the path is
 * free. Never blocks.
 */
int file_clear_stale_socket(const char *path);

#endif
