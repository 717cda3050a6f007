/* Strict parsing of numbers from the environment and the command line. */
#ifndef ATTESTPROXY_BASE_NUM_H
#define ATTESTPROXY_BASE_NUM_H

#include <stdint.h>

/** Parses a decimal unsigned integer with nothing around it (no sign, no space). Returns 0, or
 *  -EINVAL (not a number) or -ERANGE (above UINT64_MAX); `*out` is set only on success. */
int num_parse_u64(const char *s, uint64_t *out);

#endif
