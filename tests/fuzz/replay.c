/*
 * Replays a fuzz target over files, without libFuzzer: the same harness (tests/fuzz/fuzz_*.c)
 * linked with this main() runs in the normal build, under valgrind and under ASan+UBSan, over
 * its seed corpus — which is where every input that ever crashed a target is kept, so each one
 * stays a regression test in every build.
 *
 *   replay_<name> FILE|DIR...   each file, or each regular file directly inside each DIR
 *
 * Exit 0 when every input ran (a crash or sanitizer report ends the process instead); 2 on a
 * usage or I/O error.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a harness: only some define it. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define REPLAY_MAX_INPUT (4u << 20)

static int run_file(const char *path, size_t *count)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    buf = malloc(REPLAY_MAX_INPUT);
    if (buf == NULL) {
        fclose(f);
        fprintf(stderr, "replay: out of memory\n");
        return -1;
    }
    n = fread(buf, 1, REPLAY_MAX_INPUT, f);
    if (ferror(f) || !feof(f)) {
        fprintf(stderr, "replay: %s: %s\n", path,
                ferror(f) ? "read error" : "larger than the 4 MiB replay limit");
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    /* An exact-size copy, so that ASan and valgrind see reads past the input's end. */
    {
        uint8_t *exact = malloc(n > 0 ? n : 1);
        if (exact == NULL) {
            free(buf);
            fprintf(stderr, "replay: out of memory\n");
            return -1;
        }
        memcpy(exact, buf, n);
        free(buf);
        LLVMFuzzerTestOneInput(exact, n);
        free(exact);
    }
    (*count)++;
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;

    if (d == NULL) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        if (de->d_name[0] == '.')
            continue;
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path) ||
            stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            char **grown = realloc(names, (cap ? cap * 2 : 64) * sizeof(*names));
            if (grown == NULL) {
                rc = -1;
                break;
            }
            names = grown;
            cap = cap ? cap * 2 : 64;
        }
        if ((names[n] = strdup(path)) == NULL) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc < 0)
        fprintf(stderr, "replay: out of memory\n");
    /* A stable order, so that a failure names the same input every time. */
    if (n > 1)
        qsort(names, n, sizeof(*names), compare_names);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && run_file(names[i], count) < 0)
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    size_t count = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        int rc;
        if (stat(argv[i], &st) < 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 2;
        }
        rc = S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) : run_file(argv[i], &count);
        if (rc < 0)
            return 2;
    }
    printf("replayed %zu inputs\n", count);
    return 0;
}
