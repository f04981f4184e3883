/* Eight floats as one vector, for the kernels that write their inner loops with it (panel_product.c,
 * generate.c): GCC and clang vector extensions, so the same source is one AVX register with
 * -march=native and two SSE registers in the portable build. Loads and stores need no alignment (they
 * compile to one unaligned vector move each).
 */
#ifndef LMTRAIN_FLOAT8_H
#define LMTRAIN_FLOAT8_H

#include <string.h>

typedef float float8 __attribute__((vector_size(32)));

static inline float8 load8(const float *p) {
    float8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, float8 v) { memcpy(p, &v, sizeof v); }

#endif
