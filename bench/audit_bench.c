/*
 * audit_bench DIR [N]: appends N attestation-sized records to DIR/audit-MODE.jsonl with each
 * audit_fsync mode and prints records per second. It measures the disk under DIR: run it on
 * the file system the audit log will live on (docs/operations.md, "The audit log").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/audit.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static const enum audit_fsync_mode modes[] = {AUDIT_FSYNC_RECORD, AUDIT_FSYNC_INTERVAL,
                                                  AUDIT_FSYNC_NONE};
    uint8_t doc[4500], pin[32], pcrs[NITRO_PCR_COUNT][NITRO_PCR_LEN];
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 2000;

    if (argc < 2 || n <= 0) {
        fprintf(stderr, "usage: audit_bench DIR [N]\n");
        return 2;
    }
    memset(doc, 0x5a, sizeof(doc));
    memset(pin, 0x11, sizeof(pin));
    memset(pcrs, 0x22, sizeof(pcrs));
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        char path[4096], err[256];
        struct audit_options o = {.path = path, .fsync = modes[m]};
        struct audit *a;
        double t0, t1;
        snprintf(path, sizeof(path), "%s/audit-%s.jsonl", argv[1],
                 config_audit_fsync_name(modes[m]));
        unlink(path);
        if (audit_open(&o, &a, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        t0 = now_s();
        for (long i = 0; i < n; i++) {
            doc[0] = (uint8_t)i; /* a different digest per record */
            audit_attestation(a, "demo", doc, sizeof(doc), pin, 0x7,
                              (const uint8_t(*)[NITRO_PCR_LEN])pcrs, "verified", "ok");
        }
        audit_close(a);
        t1 = now_s();
        printf("audit_fsync = %-8s %ld records in %.3f s: %.0f records/s\n",
               config_audit_fsync_name(modes[m]), n, t1 - t0, (double)n / (t1 - t0));
        unlink(path);
    }
    return 0;
}
