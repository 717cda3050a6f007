#include "base/args.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

/* Whether `arg` is a cluster of short options ("-xh") holding `opt`. */
static int short_cluster_has(const char *arg, int opt)
{
    return arg != NULL && arg[0] == '-' && arg[1] != '-' && arg[1] != '\0' &&
           strchr(arg + 1, opt) != NULL;
}

const char *args_refused(int argc, char **argv, char *buf, size_t cap)
{
    if (optopt > 0 && optopt < 128 &&
        ((optind < argc && short_cluster_has(argv[optind], optopt)) ||
         (optind > 0 && optind <= argc && short_cluster_has(argv[optind - 1], optopt)))) {
        snprintf(buf, cap, "-%c", optopt);
        return buf;
    }
    if (optind > 0 && optind <= argc)
        return argv[optind - 1];
    return "?";
}
