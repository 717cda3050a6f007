/* Lowercase hexadecimal, the one encoding of pins, PCRs and digests in logs, JSON and headers. */
#ifndef ATTESTPROXY_BASE_HEX_H
#define ATTESTPROXY_BASE_HEX_H

#include <stddef.h>
#include <stdint.h>

/** Writes the lowercase hex of the `n` bytes at `in`, then a NUL, to `out`, which holds at
 *  least 2 * n + 1 bytes. Returns `out`. */
char *hex_encode(const uint8_t *in, size_t n, char *out);

#endif
