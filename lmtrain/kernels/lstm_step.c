/* The element-wise part of one LSTM step, fused into one pass over the batch, forward and backward.
 *
 * lmtrain's LSTM window (lmtrain/cells/lstm_bptt.py) runs a step as one matrix product, for the
 * pre-activations z<t> = W_ax x<t> + b + W_aa a<t-1>, and then the gate arithmetic. In torch that
 * arithmetic is seven calls forward and five backward, each a pass over [B, H] memory; here it is one
 * loop that keeps every intermediate in registers. The matrix products stay in torch (oneDNN or MKL).
 *
 * Layout: row-major fp32, contiguous. A step's gates are [B, 4H] stacked u, f, C~, o (torch's order);
 * cell and hidden states are [B, H]. Notation of lmtrain/cells/lstm.py:
 *
 *     Γ_u, Γ_f, Γ_o = σ(z_u), σ(z_f), σ(z_o)      C~ = tanh(z_C~)
 *     C<t> = Γ_u C~ + Γ_f C<t-1>                  a<t> = Γ_o tanh(C<t>)
 *
 * σ and tanh come from one exponential, evaluated with the classic Cephes scheme (e^x = 2^n e^r with
 * |r| <= ln2 / 2 and a degree-6 polynomial for e^r; relative error about 1e-7), written with plain
 * arithmetic so that the compiler vectorizes the loops (AVX2: 8 lanes). NaN stays NaN.
 *
 * Built by lmtrain/kernels/compiler.py with -O3 -march=native -fopenmp -fno-trapping-math; the batch rows
 * are shared between OpenMP threads (torch's own pool: the loaded libgomp is torch's).
 */
#include <stdint.h>
#include <string.h>

/* Below this many elements per step one thread is faster than waking the others. */
#define PARALLEL_MIN_ELEMENTS 16384

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

/* One batch row of the forward step: the pre-activations z_* in, the activated gates, C<t> and a<t> out. */
static void forward_row(int64_t hidden, const float *restrict z_u, const float *restrict z_f,
                        const float *restrict z_c, const float *restrict z_o, float *restrict gate_u,
                        float *restrict gate_f, float *restrict candidate, float *restrict gate_o,
                        const float *restrict c_prev, float *restrict c, float *restrict a) {
    for (int64_t j = 0; j < hidden; ++j) {
        float u = sigmoid(z_u[j]), f = sigmoid(z_f[j]), g = tanh_approx(z_c[j]), o = sigmoid(z_o[j]);
        float cell = f * c_prev[j] + u * g;
        gate_u[j] = u;
        gate_f[j] = f;
        candidate[j] = g;
        gate_o[j] = o;
        c[j] = cell;
        a[j] = o * tanh_approx(cell);
    }
}

/* Forward step: pre [B, 4H] -> gates [B, 4H] (Γ_u, Γ_f, C~, Γ_o), c [B, H] = C<t>, a [B, H] = a<t>.
 * pre and gates may not overlap. */
void lstm_forward_step(int64_t batch, int64_t hidden, const float *pre, float *gates, const float *c_prev,
                       float *c, float *a) {
#pragma omp parallel for if (batch * hidden >= PARALLEL_MIN_ELEMENTS)
    for (int64_t b = 0; b < batch; ++b) {
        const float *z = pre + b * 4 * hidden;
        float *g = gates + b * 4 * hidden;
        forward_row(hidden, z, z + hidden, z + 2 * hidden, z + 3 * hidden, g, g + hidden, g + 2 * hidden,
                    g + 3 * hidden, c_prev + b * hidden, c + b * hidden, a + b * hidden);
    }
}

/* One batch row of the backward step. With da = dL/da<t> and dC = dL/dC<t> carried from step t + 1:
 *     dC   += da Γ_o (1 - tanh²C<t>)          dz_o = da tanh(C<t>) Γ_o (1 - Γ_o)
 *     dz_u  = dC C~ Γ_u (1 - Γ_u)             dz_f = dC C<t-1> Γ_f (1 - Γ_f)
 *     dz_C~ = dC Γ_u (1 - C~²)                dC<t-1> = dC Γ_f   (written back into dc) */
static void backward_row(int64_t hidden, const float *restrict gate_u, const float *restrict gate_f,
                         const float *restrict candidate, const float *restrict gate_o,
                         const float *restrict c_prev, const float *restrict c, const float *restrict da,
                         float *restrict dc, float *restrict dz_u, float *restrict dz_f, float *restrict dz_c,
                         float *restrict dz_o) {
    for (int64_t j = 0; j < hidden; ++j) {
        float u = gate_u[j], f = gate_f[j], g = candidate[j], o = gate_o[j];
        float tanh_c = tanh_approx(c[j]);
        float d_cell = dc[j] + da[j] * o * (1.0f - tanh_c * tanh_c);
        dz_o[j] = da[j] * tanh_c * o * (1.0f - o);
        dz_u[j] = d_cell * g * u * (1.0f - u);
        dz_f[j] = d_cell * c_prev[j] * f * (1.0f - f);
        dz_c[j] = d_cell * u * (1.0f - g * g);
        dc[j] = d_cell * f;
    }
}

/* Backward step: gates [B, 4H] of step t, C<t-1> and C<t> [B, H], da [B, H]; dc [B, H] in: dC from step
 * t + 1, out: dC<t-1>; dz [B, 4H] out: the gradient of the pre-activations z<t>. */
void lstm_backward_step(int64_t batch, int64_t hidden, const float *gates, const float *c_prev, const float *c,
                        const float *da, float *dc, float *dz) {
#pragma omp parallel for if (batch * hidden >= PARALLEL_MIN_ELEMENTS)
    for (int64_t b = 0; b < batch; ++b) {
        const float *g = gates + b * 4 * hidden;
        float *d = dz + b * 4 * hidden;
        backward_row(hidden, g, g + hidden, g + 2 * hidden, g + 3 * hidden, c_prev + b * hidden, c + b * hidden,
                     da + b * hidden, dc + b * hidden, d, d + hidden, d + 2 * hidden, d + 3 * hidden);
    }
}
