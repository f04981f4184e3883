/* The activations of the cells, from one exponential that the compiler can vectorize.
 *
 * e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2, e^r from a degree-6 polynomial (the classic
 * Cephes expf scheme; relative error about 1e-7), 2^n built directly in the float's exponent bits. Plain
 * arithmetic only, so that a loop over these functions compiles to vector instructions (8 lanes with
 * AVX2; the build passes -fno-trapping-math so that the clamps become vector blends). NaN stays NaN.
 * σ(x) = 1 / (1 + e^-x) and tanh(x) = 1 - 2 / (1 + e^2x), which saturate cleanly at ±1.
 */
#ifndef LMTRAIN_FASTMATH_H
#define LMTRAIN_FASTMATH_H

#include <stdint.h>
#include <string.h>

static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x; /* e^x stays a normal float */
    x = x > 88.0f ? 88.0f : x;
    /* n = round(x / ln 2), by the add-and-subtract of 1.5 * 2^23 that rounds to an integer */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f; /* x - n ln 2, ln 2 split in two (Cody-Waite) */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f; /* e^r */
    int32_t exponent_bits = ((int32_t)n + 127) << 23; /* the float 2^n */
    float two_to_n;
    memcpy(&two_to_n, &exponent_bits, sizeof two_to_n);
    return p * two_to_n;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

static inline float tanh_approx(float x) { return 1.0f - 2.0f / (1.0f + exp_approx(2.0f * x)); }

#endif
