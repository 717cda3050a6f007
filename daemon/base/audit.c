/*
 * The audit log: see audit.h for the record format. This file owns the descriptor, the chain
 * state (last seq, last line hash), rotation and the evidence archive.
 *
 * A record is built completely in memory, bounded by AUDIT_RECORD_MAX, and written with one
 * write() on an O_APPEND descriptor; seq and prev advance only after the whole line is
 * written, so a failed write leaves no gap the next record would paper over. Durability is the
 * audit_fsync setting's (fdatasync per record, at most once a second, or never).
 */
#include "base/audit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/clock.h"
#include "base/file.h"
#include "base/hex.h"
#include "base/log.h"

#define ZERO_HASH     "0000000000000000000000000000000000000000000000000000000000000000"
#define SYNC_INTERVAL 1000   /* ms, for audit_fsync = interval */
#define ROTATE_MAX    100000 /* FILE.1 .. FILE.99999: beyond, rotation refuses */

struct audit {
    int fd;
    char path[CONFIG_PATH_MAX];
    uint64_t size;
    uint64_t max_bytes;
    enum audit_fsync_mode fsync;
    int64_t last_sync_ms;
    uint64_t seq;              /* of the last record written (0: none yet) */
    char prev[AUDIT_HASH_HEX]; /* hash of the last record's line */
    char archive[CONFIG_PATH_MAX];
    uint64_t archive_max;
    uint64_t archive_bytes; /* what the archive holds, as far as we know */
};

void audit_sha256_hex(const void *data, size_t len, char out[AUDIT_HASH_HEX])
{
    uint8_t md[32];
    unsigned n = 0;
    memset(md, 0, sizeof(md));
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    hex_encode(md, sizeof(md), out);
}

uint64_t audit_last_seq(const struct audit *a)
{
    return a != NULL ? a->seq : 0;
}

/* The last complete line of the file at `fd` (size `size`) into `line` (NUL-terminated), and
 * how many bytes after it lack their newline (`*torn`). Returns its length, 0 when the file
 * holds no complete line, or a negative errno. */
static ssize_t read_tail(int fd, uint64_t size, char *line, size_t cap, size_t *torn)
{
    char *buf = malloc(2 * AUDIT_RECORD_MAX + 2);
    size_t want = size < 2 * AUDIT_RECORD_MAX + 2 ? (size_t)size : 2 * AUDIT_RECORD_MAX + 2;
    ssize_t got, rc = 0;
    size_t end, start;

    *torn = 0;
    if (buf == NULL)
        return -ENOMEM;
    got = pread(fd, buf, want, (off_t)(size - want));
    if (got != (ssize_t)want) {
        rc = got < 0 ? -errno : -EIO;
        goto out;
    }
    end = want;
    while (end > 0 && buf[end - 1] != '\n')
        end--;
    *torn = want - end;
    if (end == 0) {
        /* No newline in the tail: the whole file is one torn line, or a record is too long. */
        rc = size > want ? -EINVAL : 0;
        goto out;
    }
    start = end - 1;
    while (start > 0 && buf[start - 1] != '\n')
        start--;
    if (start == 0 && size > want) {
        rc = -EINVAL; /* a line longer than any record */
        goto out;
    }
    if (end - 1 - start >= cap) {
        rc = -EINVAL;
        goto out;
    }
    memcpy(line, buf + start, end - 1 - start);
    line[end - 1 - start] = '\0';
    rc = (ssize_t)(end - 1 - start);
out:
    free(buf);
    return rc;
}

/* Takes seq and the hash from a record line; -EINVAL when it is not one of ours. */
static int adopt_line(struct audit *a, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *j = json_loadb(line, len, 0, &jerr);
    json_t *seq = j != NULL ? json_object_get(j, "seq") : NULL;
    int rc = -EINVAL;
    if (json_is_integer(seq) && json_integer_value(seq) > 0 &&
        json_is_string(json_object_get(j, "prev"))) {
        a->seq = (uint64_t)json_integer_value(seq);
        audit_sha256_hex(line, len, a->prev);
        rc = 0;
    }
    json_decref(j);
    return rc;
}

/* Where the chain of an empty file starts: after the last record of FILE.1, if any. */
static int continue_from_rotated(struct audit *a, char *err, size_t cap)
{
    char prev_path[CONFIG_PATH_MAX + 8], *line;
    struct stat st;
    size_t torn;
    ssize_t n;
    int fd, rc = 0;

    snprintf(prev_path, sizeof(prev_path), "%s.1", a->path);
    fd = open(prev_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* no earlier file: the chain starts here */
    line = malloc(AUDIT_RECORD_MAX + 1);
    if (line == NULL || fstat(fd, &st) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    n = read_tail(fd, (uint64_t)st.st_size, line, AUDIT_RECORD_MAX + 1, &torn);
    if (n > 0)
        rc = adopt_line(a, line, (size_t)n);
    if (n < 0 || rc < 0) {
        snprintf(err, cap, "%s: its last record is unreadable; the chain cannot continue",
                 prev_path);
        rc = -EINVAL;
    }
out:
    free(line);
    close(fd);
    return rc;
}

static void archive_scan(struct audit *a)
{
    DIR *d = opendir(a->archive);
    struct dirent *e;
    a->archive_bytes = 0;
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
            a->archive_bytes += (uint64_t)st.st_size;
    }
    closedir(d);
}

int audit_open(const struct audit_options *o, struct audit **out, char *err, size_t cap)
{
    struct audit *a = calloc(1, sizeof(*a));
    char *line = NULL;
    struct stat st;
    size_t torn = 0;
    ssize_t n;
    int rc;

    *out = NULL;
    if (a == NULL) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    a->fd = -1;
    snprintf(a->path, sizeof(a->path), "%s", o->path);
    a->max_bytes = o->max_bytes;
    a->fsync = o->fsync;
    memcpy(a->prev, ZERO_HASH, sizeof(a->prev));
    if (o->archive_dir != NULL && o->archive_dir[0] != '\0') {
        snprintf(a->archive, sizeof(a->archive), "%s", o->archive_dir);
        a->archive_max = o->archive_max_bytes;
        if (mkdir(a->archive, 0750) < 0 && errno != EEXIST) {
            rc = -errno;
            snprintf(err, cap, "audit_archive %s: %s", a->archive, strerror(errno));
            goto out_fail;
        }
        archive_scan(a);
    }
    a->fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (a->fd < 0 || fstat(a->fd, &st) < 0) {
        rc = -errno;
        snprintf(err, cap, "audit_log %s: %s", a->path, strerror(errno));
        goto out_fail;
    }
    a->size = (uint64_t)st.st_size;
    line = malloc(AUDIT_RECORD_MAX + 1);
    if (line == NULL) {
        rc = -ENOMEM;
        snprintf(err, cap, "out of memory");
        goto out_fail;
    }
    n = a->size > 0 ? read_tail(a->fd, a->size, line, AUDIT_RECORD_MAX + 1, &torn) : 0;
    if (n < 0 || (n > 0 && adopt_line(a, line, (size_t)n) < 0)) {
        rc = -EINVAL;
        snprintf(err, cap,
                 "audit_log %s: the last complete line is not an audit record; move the file "
                 "aside (attestproxy audit verify tells what is wrong)",
                 a->path);
        goto out_fail;
    }
    if (n == 0 && a->size == torn) {
        rc = continue_from_rotated(a, err, cap);
        if (rc < 0)
            goto out_fail;
    }
    free(line);
    line = NULL;
    if (torn > 0) {
        /* The writer died mid-record: cut the fragment, and say so in the chain itself. */
        char frag_hash[AUDIT_HASH_HEX] = "";
        char *frag = malloc(torn);
        json_t *f;
        if (frag != NULL && pread(a->fd, frag, torn, (off_t)(a->size - torn)) == (ssize_t)torn)
            audit_sha256_hex(frag, torn, frag_hash);
        free(frag);
        if (ftruncate(a->fd, (off_t)(a->size - torn)) < 0) {
            rc = -errno;
            snprintf(err, cap, "audit_log %s: cannot cut a torn last line: %s", a->path,
                     strerror(errno));
            goto out_fail;
        }
        a->size -= torn;
        f = json_pack("{s:I,s:s}", "torn_bytes", (json_int_t)torn, "torn_sha256", frag_hash);
        audit_append(a, "recovered", f);
        json_decref(f);
        log_event(LOG_LEVEL_WARN, "audit_log_recovered", "file", a->path, "why",
                  "its last line was torn (a crash mid-write); cut and recorded", NULL);
    }
    *out = a;
    return 0;

out_fail:
    free(line);
    if (a->fd >= 0)
        close(a->fd);
    free(a);
    return rc;
}

void audit_close(struct audit *a)
{
    if (a == NULL)
        return;
    if (a->fsync != AUDIT_FSYNC_NONE)
        fdatasync(a->fd);
    close(a->fd);
    free(a);
}

/* FILE.k -> FILE.k+1 from the highest, FILE -> FILE.1, then a new FILE. */
static int rotate(struct audit *a)
{
    char from[CONFIG_PATH_MAX + 8], to[CONFIG_PATH_MAX + 8];
    unsigned top = 1;
    int fd;

    while (top < ROTATE_MAX) {
        snprintf(from, sizeof(from), "%s.%u", a->path, top);
        if (access(from, F_OK) != 0)
            break;
        top++;
    }
    if (top == ROTATE_MAX)
        return -ENOSPC;
    for (unsigned k = top; k > 1; k--) {
        snprintf(from, sizeof(from), "%s.%u", a->path, k - 1);
        snprintf(to, sizeof(to), "%s.%u", a->path, k);
        if (rename(from, to) < 0)
            return -errno;
    }
    if (a->fsync != AUDIT_FSYNC_NONE)
        fdatasync(a->fd);
    snprintf(to, sizeof(to), "%s.1", a->path);
    if (rename(a->path, to) < 0)
        return -errno;
    fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    close(a->fd);
    a->fd = fd;
    a->size = 0;
    file_sync_dir(a->path);
    log_event(LOG_LEVEL_INFO, "audit_log_rotated", "file", a->path, "previous", to, NULL);
    return 0;
}

static void format_ts(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char base[24];
    if (gmtime_r(&t, &tm) == NULL || strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        snprintf(base, sizeof(base), "1970-01-01T00:00:00");
    snprintf(out, 32, "%s.%03dZ", base, (int)(ms % 1000));
}

int audit_append(struct audit *a, const char *type, json_t *fields)
{
    char ts[32], seq_s[24];
    json_t *rec;
    char *line = NULL;
    size_t len, off = 0;
    int64_t now;
    int rc = 0;

    if (a == NULL)
        return 0;
    now = clock_wall_ms();
    format_ts(now, ts);
    rec = json_pack("{s:I,s:s,s:s,s:s}", "seq", (json_int_t)(a->seq + 1), "ts", ts, "prev", a->prev,
                    "type", type);
    if (rec == NULL || (fields != NULL && json_object_update_missing(rec, fields) < 0)) {
        rc = -ENOMEM;
        goto out;
    }
    line = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    if (line == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    len = strlen(line);
    if (len + 1 > AUDIT_RECORD_MAX) {
        rc = -E2BIG;
        goto out;
    }
    if (a->max_bytes > 0 && a->size > 0 && a->size + len + 1 > a->max_bytes) {
        rc = rotate(a);
        if (rc < 0)
            goto out;
    }
    line[len] = '\n'; /* the NUL is not written; the hash covers the line without it */
    while (off < len + 1) {
        ssize_t w = write(a->fd, line + off, len + 1 - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -EIO;
            /* A partial line would tear the file: cut it back to the last record. */
            if (off > 0 && ftruncate(a->fd, (off_t)a->size) < 0)
                rc = -errno;
            goto out;
        }
        off += (size_t)w;
    }
    a->size += len + 1;
    a->seq++;
    audit_sha256_hex(line, len, a->prev);
    if (a->fsync == AUDIT_FSYNC_RECORD ||
        (a->fsync == AUDIT_FSYNC_INTERVAL && now - a->last_sync_ms >= SYNC_INTERVAL)) {
        fdatasync(a->fd);
        a->last_sync_ms = now;
    }
out:
    if (rc < 0) {
        snprintf(seq_s, sizeof(seq_s), "%llu", (unsigned long long)(a->seq + 1));
        log_event(LOG_LEVEL_ERROR, "audit_write_failed", "file", a->path, "type", type, "seq",
                  seq_s, "error", strerror(-rc), NULL);
    }
    free(line);
    json_decref(rec);
    return rc;
}

/* Removes the oldest archived documents until the archive is within its bound. */
static void archive_trim(struct audit *a)
{
    DIR *d;
    struct dirent *e;
    while (a->archive_bytes > a->archive_max) {
        char oldest[NAME_MAX + 1] = "";
        struct timespec when = {0, 0};
        off_t osize = 0;
        d = opendir(a->archive);
        if (d == NULL)
            return;
        while ((e = readdir(d)) != NULL) {
            struct stat st;
            if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &st, 0) < 0 ||
                !S_ISREG(st.st_mode))
                continue;
            if (oldest[0] == '\0' || st.st_mtim.tv_sec < when.tv_sec ||
                (st.st_mtim.tv_sec == when.tv_sec && st.st_mtim.tv_nsec < when.tv_nsec)) {
                snprintf(oldest, sizeof(oldest), "%s", e->d_name);
                when = st.st_mtim;
                osize = st.st_size;
            }
        }
        if (oldest[0] == '\0' || unlinkat(dirfd(d), oldest, 0) < 0) {
            closedir(d);
            archive_scan(a);
            return;
        }
        closedir(d);
        a->archive_bytes -=
            (uint64_t)osize <= a->archive_bytes ? (uint64_t)osize : a->archive_bytes;
    }
}

/* Keeps `doc` once as ARCHIVE/<sha256>.evidence: temp file, fsync, rename. */
static void archive_put(struct audit *a, const uint8_t *doc, size_t len, const char *hex)
{
    char path[CONFIG_PATH_MAX + 96], tmp[CONFIG_PATH_MAX + 96];

    snprintf(path, sizeof(path), "%s/%s.evidence", a->archive, hex);
    if (access(path, F_OK) == 0)
        return;
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", a->archive, hex);
    if (file_write_atomic(path, tmp, doc, len, 0640, a->fsync != AUDIT_FSYNC_NONE) < 0 &&
        access(path, F_OK) != 0)
        return; /* not written (a failed directory fsync leaves it written) */
    a->archive_bytes += len;
    if (a->archive_max > 0)
        archive_trim(a);
}

void audit_attestation(struct audit *a, const char *service, const uint8_t *doc, size_t len,
                       const uint8_t pin[32], uint32_t pcr_mask,
                       const uint8_t (*pcrs)[NITRO_PCR_LEN], const char *verdict,
                       const char *reason)
{
    char digest[AUDIT_HASH_HEX], pin_hex[65];
    json_t *f, *jp;
    if (a == NULL)
        return;
    audit_sha256_hex(doc != NULL ? doc : (const uint8_t *)"", doc != NULL ? len : 0, digest);
    hex_encode(pin, 32, pin_hex);
    jp = json_object();
    for (unsigned i = 0; pcrs != NULL && i < NITRO_PCR_COUNT; i++) {
        char name[8], hex[2 * NITRO_PCR_LEN + 1];
        if (!(pcr_mask & (1u << i)))
            continue;
        snprintf(name, sizeof(name), "pcr%u", i);
        hex_encode(pcrs[i], NITRO_PCR_LEN, hex);
        json_object_set_new(jp, name, json_string(hex));
    }
    f = json_pack("{s:s,s:s,s:s,s:o,s:s,s:s}", "service", service, "document_sha256",
                  doc != NULL && len > 0 ? digest : "", "pin", pin_hex, "pcrs", jp, "verdict",
                  verdict, "reason", reason);
    audit_append(a, "attestation", f);
    json_decref(f);
    if (a->archive[0] != '\0' && doc != NULL && len > 0 && strcmp(verdict, "verified") == 0)
        archive_put(a, doc, len, digest);
}

void audit_pin(struct audit *a, const char *service, const char *event, const char *reason,
               const uint8_t *pin, size_t count)
{
    char pin_hex[65];
    json_t *f;
    if (a == NULL)
        return;
    f = json_pack("{s:s,s:s,s:s,s:I}", "service", service, "event", event, "reason", reason, "pins",
                  (json_int_t)count);
    if (pin != NULL) {
        hex_encode(pin, 32, pin_hex);
        json_object_set_new(f, "pin", json_string(pin_hex));
    }
    audit_append(a, "pin", f);
    json_decref(f);
}
