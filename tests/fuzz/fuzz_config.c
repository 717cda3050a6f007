/*
 * libFuzzer target: configuration loading. Any byte string must produce either a valid
 * configuration or a "file:line: message" error — never a crash, a leak or an unbounded
 * allocation. The input is handed to config_load() through a memfd so the real file path
 * (fopen, inih's reader, our line reader) is exercised.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    char err[CONFIG_ERROR_MAX];
    struct config *cfg = NULL;
    int fd = memfd_create("fuzz_config", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size)
        goto out_close;
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (config_load(path, &cfg, err, sizeof(err)) == 0) {
        FILE *devnull = fopen("/dev/null", "w");
        if (devnull != NULL) {
            config_print(cfg, devnull);
            fclose(devnull);
        }
        config_free(cfg);
    } else if (strncmp(err, path, strlen(path)) != 0 && strstr(err, "No such file") == NULL) {
        /* Every load error names the file it is about (the policy file's own path for policy
         * errors, which a fuzzed policy_file key may point anywhere). */
        if (strstr(err, ": ") == NULL)
            abort();
    }
out_close:
    close(fd);
    return 0;
}
