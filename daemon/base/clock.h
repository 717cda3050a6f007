/*
 * The daemon's one wall clock. Timers and timeouts use the loop's monotonic time (uv_now);
 * wall-clock time is read only where certificates and documents need it (validity, document
 * timestamps) and for display, and always through this function, so that a reader finds every
 * use, and tests pass their own `now_ms` to the verifier instead.
 */
#ifndef ATTESTPROXY_BASE_CLOCK_H
#define ATTESTPROXY_BASE_CLOCK_H

#include <stdint.h>

/** Wall-clock time in Unix milliseconds (CLOCK_REALTIME). */
int64_t clock_wall_ms(void);

#endif
