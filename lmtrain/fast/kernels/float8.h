/* Eight floats as one vector, for the kernels that write their inner loops with it (panel_product.c,
 * generate.c): GCC and clang vector extensions, so the same source is one AVX register with
 * -march=native and two SSE registers in the portable build. Loads and stores need no alignment (they
 * compile to one unaligned vector move each). Weights stored as bfloat16 load as floats too, 16 at a time.
 */
#ifndef LMTRAIN_FLOAT8_H
#define LMTRAIN_FLOAT8_H

#include <stdint.h>
#include <string.h>

typedef float float8 __attribute__((vector_size(32)));

static inline float8 load8(const float *p) {
    float8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, float8 v) { memcpy(p, &v, sizeof v); }

/* bfloat16 is the top half of a float's bits: widening one is a 16-bit shift, exact. */
typedef uint32_t uint32x8 __attribute__((vector_size(32)));

/* Sixteen bfloat16 values w0 .. w15 stored interleaved, w0 w8 w1 w9 ... w7 w15, widened to floats: as
 * eight 32-bit lanes, lane i holds w_i in its low half and w_{i+8} in its high half, so one load, one
 * shift and one mask give w0..w7 (*low) and w8..w15 (*high), with no shuffle between the vector's
 * halves (widening eight stored in order takes three on AVX2). */
static inline void load16_bf16_interleaved(const uint16_t *p, float8 *low, float8 *high) {
    uint32x8 bits;
    memcpy(&bits, p, sizeof bits);
    uint32x8 low_bits = bits << 16, high_bits = bits & 0xffff0000u;
    memcpy(low, &low_bits, sizeof *low);
    memcpy(high, &high_bits, sizeof *high);
}

#endif
