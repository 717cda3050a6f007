/* Command-line errors: what getopt_long() refused, named the way the user typed it. */
#ifndef ATTESTPROXY_BASE_ARGS_H
#define ATTESTPROXY_BASE_ARGS_H

#include <stddef.h>

/**
 * After getopt_long() (opterr = 0) returned '?' over `argc`/`argv` (the vector it was given):
 * "-x" for a short option, also one inside a cluster such as "-xh" (where optind has not moved
 * on), or the element itself for a long option ("--bogus", "--key" without its value).
 * Returns `buf` or an element of `argv`.
 */
const char *args_refused(int argc, char **argv, char *buf, size_t cap);

#endif
