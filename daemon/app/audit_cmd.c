/*
 * `attestproxy audit verify`: walks the records of the given files in order and checks that
 * each one's seq is one more than the previous one's and that its prev is the SHA-256 of the
 * previous line. With --archive, every verified attestation whose document is archived is
 * verified again — chain, signature, freshness — at the time of its record, and its PCRs are
 * compared with those the record names. Findings are printed as FILE:LINE: message.
 */
#include "app/audit_cmd.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "app/verify_cmd.h"
#include "base/audit.h"
#include "base/args.h"
#include "base/file.h"
#include "base/hex.h"
#include "verify/verifier.h"

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

static const char usage[] =
    "Usage: attestproxy audit verify [--archive DIR] [--root-ca PEM] FILE...\n"
    "\n"
    "Checks the hash chain of an audit log (audit_log): every record's seq follows the one\n"
    "before and its prev is the SHA-256 of the previous line. Give rotated files oldest first\n"
    "(FILE.2 FILE.1 FILE) to check the chain across them. With --archive DIR, each verified\n"
    "attestation whose document is in the archive (audit_archive) is verified again at the\n"
    "time of its record (against --root-ca, default the AWS Nitro root) and its PCRs compared.\n"
    "\n"
    "Exit status: 0 intact; 1 a record was edited, deleted, inserted or reordered, or an\n"
    "archived document does not verify; 2 usage error or unreadable file; 3 only the last line\n"
    "is torn (the writer stopped mid-record) and every earlier record verifies.\n";

struct walk {
    bool have_prev;
    uint64_t seq;
    char prev[AUDIT_HASH_HEX];
    uint64_t records, first_seq;
    const char *archive;
    struct verifier *verifier;
    uint64_t docs_verified, docs_missing;
    int status;
};

static void finding(struct walk *w, const char *file, unsigned long line, const char *msg)
{
    printf("%s:%lu: %s\n", file, line, msg);
    w->status = AUDIT_CMD_BROKEN;
}

/* Verifies an archived document at the time of its record and compares its PCRs. */
static void check_document(struct walk *w, const char *file, unsigned long line, json_t *rec)
{
    const char *digest = json_string_value(json_object_get(rec, "document_sha256"));
    const char *ts = json_string_value(json_object_get(rec, "ts"));
    json_t *pcrs = json_object_get(rec, "pcrs");
    char path[4200], got[AUDIT_HASH_HEX], msg[300];
    struct policy pol;
    struct verify_request req;
    struct verify_result *res = NULL;
    uint8_t *doc = NULL;
    size_t len = 0;
    const char *k;
    json_t *v;

    if (digest == NULL || strlen(digest) != 64 || ts == NULL)
        return;
    snprintf(path, sizeof(path), "%s/%s.evidence", w->archive, digest);
    if (file_read(path, VERIFY_MAX_ENVELOPE, FILE_REGULAR, &doc, &len) < 0) {
        w->docs_missing++; /* removed by audit_archive_max_bytes, or never archived */
        return;
    }
    res = calloc(1, sizeof(*res));
    if (doc == NULL || res == NULL)
        goto out;
    audit_sha256_hex(doc, len, got);
    if (strcmp(got, digest) != 0) {
        snprintf(msg, sizeof(msg), "archived document %.16s... does not hash to its name", digest);
        finding(w, file, line, msg);
        goto out;
    }
    memset(&pol, 0, sizeof(pol));
    /* Freshness was judged when the record was written; here the chain and the signature are.
     * The widest bounds a service can be configured with (max_age 1 d, clock_skew 1 h), so
     * that no document the daemon accepted is a finding. */
    pol.max_age_ms = 24LL * 3600 * 1000;
    pol.skew_ms = 3600LL * 1000;
    memset(&req, 0, sizeof(req));
    req.policy = &pol;
    req.binding = BINDING_NONE;
    req.skip_measurements = true;
    if (verify_cmd_parse_time(ts, &req.now_ms) < 0) {
        finding(w, file, line, "ts is not a time");
        goto out;
    }
    if (verifier_verify(w->verifier, &req, doc, len, res) < 0 || !res->accepted) {
        snprintf(msg, sizeof(msg), "archived document %.16s... does not verify at %s: %s", digest,
                 ts, res->reason);
        finding(w, file, line, msg);
        goto out;
    }
    json_object_foreach(pcrs, k, v)
    {
        unsigned idx;
        char hex[2 * NITRO_PCR_LEN + 1];
        /* The prefix first: a shorter key ("", "p") has no byte at k + 3 to parse. */
        if (strncmp(k, "pcr", 3) != 0)
            continue;
        idx = (unsigned)strtoul(k + 3, NULL, 10);
        if (idx >= NITRO_PCR_COUNT || !(res->summary.pcr_mask & (1u << idx)))
            continue;
        hex_encode(res->summary.pcrs[idx], NITRO_PCR_LEN, hex);
        if (!json_is_string(v) || strcmp(json_string_value(v), hex) != 0) {
            snprintf(msg, sizeof(msg), "%s of the record differs from the archived document", k);
            finding(w, file, line, msg);
            goto out;
        }
    }
    w->docs_verified++;
out:
    free(res);
    free(doc);
}

/* One record line (without its newline). */
static void check_line(struct walk *w, const char *file, unsigned long line, const char *text,
                       size_t len)
{
    json_error_t jerr;
    json_t *rec = json_loadb(text, len, 0, &jerr);
    json_t *jseq = json_object_get(rec, "seq");
    const char *prev = json_string_value(json_object_get(rec, "prev"));
    const char *type = json_string_value(json_object_get(rec, "type"));
    char msg[200];
    uint64_t seq;

    if (rec == NULL || !json_is_integer(jseq) || json_integer_value(jseq) <= 0 || prev == NULL ||
        strlen(prev) != 64 || type == NULL) {
        finding(w, file, line, "not an audit record (edited, or not an audit log)");
        json_decref(rec);
        /* Later records are judged against this line, as the writer would have linked them. */
        w->have_prev = false;
        return;
    }
    seq = (uint64_t)json_integer_value(jseq);
    if (w->have_prev) {
        if (seq != w->seq + 1) {
            snprintf(msg, sizeof(msg),
                     "seq %llu follows seq %llu: a record was deleted, inserted or reordered",
                     (unsigned long long)seq, (unsigned long long)w->seq);
            finding(w, file, line, msg);
        } else if (strcmp(prev, w->prev) != 0) {
            finding(w, file, line,
                    "prev is not the hash of the previous record: that record (the line "
                    "before) or this one was edited or replaced");
        }
    } else if (w->records == 0) {
        w->first_seq = seq;
        if (seq == 1 && strcmp(prev, ZERO_HASH) != 0)
            finding(w, file, line, "the first record (seq 1) must have prev = 64 zeros");
    }
    if (w->archive != NULL && strcmp(type, "attestation") == 0) {
        const char *verdict = json_string_value(json_object_get(rec, "verdict"));
        if (verdict != NULL && strcmp(verdict, "verified") == 0)
            check_document(w, file, line, rec);
    }
    w->have_prev = true;
    w->seq = seq;
    audit_sha256_hex(text, len, w->prev);
    w->records++;
    json_decref(rec);
}

/* One line of at most `cap` - 1 bytes kept in `buf` (NUL-terminated); a longer one is read to
 * its end and counted, not kept, so a tampered log's endless line costs no memory. Returns its
 * length with the newline (0 at the end of the file); *ended says whether a newline ended it. */
static size_t bounded_line(FILE *fp, char *buf, size_t cap, bool *ended)
{
    size_t n = 0;
    int ch;
    *ended = false;
    while ((ch = getc(fp)) != EOF) {
        if (n + 1 < cap)
            buf[n] = (char)ch;
        n++;
        if (ch == '\n') {
            *ended = true;
            break;
        }
    }
    buf[n + 1 < cap ? n : cap - 1] = '\0';
    return n;
}

static int walk_file(struct walk *w, const char *file, bool last)
{
    FILE *fp = fopen(file, "re");
    char *buf = malloc(AUDIT_RECORD_MAX + 2);
    size_t n;
    bool ended;
    unsigned long line = 0;

    if (fp == NULL || buf == NULL) {
        fprintf(stderr, "attestproxy: audit verify: %s: %s\n", file,
                fp == NULL ? strerror(errno) : "out of memory");
        if (fp != NULL)
            fclose(fp);
        free(buf);
        return AUDIT_CMD_USAGE;
    }
    while ((n = bounded_line(fp, buf, AUDIT_RECORD_MAX + 2, &ended)) > 0) {
        line++;
        if (!ended) {
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "torn record (%zu bytes without a newline: the writer stopped mid-write)", n);
            printf("%s:%lu: %s\n", file, line, msg);
            if (!last)
                w->status = AUDIT_CMD_BROKEN;
            else if (w->status == AUDIT_CMD_OK)
                w->status = AUDIT_CMD_TORN;
            break;
        }
        if (n > AUDIT_RECORD_MAX) {
            finding(w, file, line, "line longer than any record");
            w->have_prev = false;
            continue;
        }
        check_line(w, file, line, buf, n - 1);
    }
    free(buf);
    fclose(fp);
    return 0;
}

int audit_cmd_main(int argc, char **argv)
{
    char bad[8];
    static const struct option opts[] = {
        {"archive", required_argument, NULL, 'a'},
        {"root-ca", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct walk w;
    const char *root = NULL;
    char err[256];
    int c;

    memset(&w, 0, sizeof(w));
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return AUDIT_CMD_OK;
    }
    if (argc < 3 || strcmp(argv[1], "verify") != 0) {
        if (argc >= 2 && strcmp(argv[1], "verify") != 0)
            fprintf(stderr, "attestproxy: audit: unknown subcommand '%s'\n", argv[1]);
        else
            fprintf(stderr, "attestproxy: audit: %s\n",
                    argc < 2 ? "no subcommand (verify)" : "verify needs a FILE");
        fputs(usage, stderr);
        return AUDIT_CMD_USAGE;
    }
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc - 1, argv + 1, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            w.archive = optarg;
            break;
        case 'r':
            root = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return AUDIT_CMD_OK;
        default:
            fprintf(stderr, "attestproxy: audit verify: unknown option or missing value: %s\n",
                    args_refused(argc - 1, argv + 1, bad, sizeof(bad)));
            fputs(usage, stderr);
            return AUDIT_CMD_USAGE;
        }
    }
    optind++;
    if (optind >= argc) {
        fprintf(stderr, "attestproxy: audit: verify needs a FILE\n");
        fputs(usage, stderr);
        return AUDIT_CMD_USAGE;
    }
    if (w.archive != NULL) {
        w.verifier = verifier_new(root, err, sizeof(err));
        if (w.verifier == NULL) {
            fprintf(stderr, "attestproxy: audit verify: %s\n", err);
            return AUDIT_CMD_USAGE;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (walk_file(&w, argv[i], i == argc - 1) != 0) {
            verifier_free(w.verifier);
            return AUDIT_CMD_USAGE;
        }
    }
    verifier_free(w.verifier);
    if (w.status == AUDIT_CMD_BROKEN) {
        printf("broken: %llu records read\n", (unsigned long long)w.records);
        return AUDIT_CMD_BROKEN;
    }
    printf("%s: %llu records, seq %llu..%llu%s", w.status == AUDIT_CMD_TORN ? "torn" : "ok",
           (unsigned long long)w.records, (unsigned long long)w.first_seq,
           (unsigned long long)w.seq,
           w.first_seq > 1 ? " (the chain starts in an earlier file not given)" : "");
    if (w.archive != NULL)
        printf(", %llu archived documents verified, %llu not archived",
               (unsigned long long)w.docs_verified, (unsigned long long)w.docs_missing);
    putchar('\n');
    return w.status;
}
