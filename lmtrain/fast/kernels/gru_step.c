/* The element-wise part of one step of the notes' GRU, forward and backward, each in two fused passes.
 *
 * Notation of lmtrain/cells/gru_bptt.py (gates stacked u, r, c~ in a step's [B, 3H] row):
 *
 *     Γ_u = σ(x_u + W_u c<t-1>)    Γ_r = σ(x_r + W_r c<t-1>)
 *     r<t> = Γ_r * c<t-1>          c~ = tanh(x_c + W_c r<t>)
 *     c<t> = c<t-1> + Γ_u * (c~ - c<t-1>)
 *
 * W_c acts on r<t>, which needs Γ_r first, so each direction is product, pass, product, pass. The
 * matrix products stay in torch. Layout: row-major fp32, contiguous; σ and tanh are fastmath.h's.
 */
#include <stdint.h>

#include "fastmath.h"

#define PARALLEL_MIN_ELEMENTS 4096

/* Forward, first pass: gates [B, 3H] holds x_u, x_r, x_c; product [B, 2H] = c<t-1> [W_u; W_r]^T.
 * Writes Γ_u, Γ_r over x_u, x_r, and reset_state [B, H] = r<t>. */
void gru_forward_gates(int64_t batch, int64_t hidden, const float *product, float *gates, const float *c_prev,
                       float *reset_state) {
#pragma omp parallel for if (batch * hidden >= PARALLEL_MIN_ELEMENTS)
    for (int64_t b = 0; b < batch; ++b) {
        const float *restrict p = product + b * 2 * hidden;
        float *restrict g = gates + b * 3 * hidden;
        const float *restrict cp = c_prev + b * hidden;
        float *restrict r = reset_state + b * hidden;
        for (int64_t j = 0; j < 2 * hidden; ++j)
            g[j] = sigmoid(g[j] + p[j]);
        for (int64_t j = 0; j < hidden; ++j)
            r[j] = g[hidden + j] * cp[j];
    }
}

/* Forward, second pass: product [B, H] = r<t> W_c^T. Writes c~ over x_c, and c [B, H] = c<t>. */
void gru_forward_state(int64_t batch, int64_t hidden, const float *product, float *gates, const float *c_prev,
                       float *c) {
#pragma omp parallel for if (batch * hidden >= PARALLEL_MIN_ELEMENTS)
    for (int64_t b = 0; b < batch; ++b) {
        const float *restrict p = product + b * hidden;
        float *restrict g = gates + b * 3 * hidden;
        const float *restrict cp = c_prev + b * hidden;
        float *restrict cb = c + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            float candidate = tanh_approx(g[2 * hidden + j] + p[j]);
            g[2 * hidden + j] = candidate;
            cb[j] = cp[j] + g[j] * (candidate - cp[j]);
        }
    }
}

/* Backward, first pass: dz_c~ = dc Γ_u (1 - c~²) into the c~ block of dz [B, 3H]. */
void gru_backward_candidate(int64_t batch, int64_t hidden, const float *gates, const float *dc, float *dz) {
#pragma omp parallel for if (batch * hidden >= PARALLEL_MIN_ELEMENTS)
    for (int64_t b = 0; b < batch; ++b) {
        const float *restrict g = gates + b * 3 * hidden;
        const float *restrict d = dc + b * hidden;
        float *restrict out = dz + b * 3 * hidden + 2 * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            float candidate = g[2 * hidden + j];
            out[j] = d[j] * g[j] * (1.0f - candidate * candidate);
        }
    }
}

/* Backward, second pass, with dr = dz_c~ W_c: the u and r blocks of dz, and the part of dc<t-1> that does
 * not come through [W_u; W_r]:
 *     dz_u = dc (c~ - c<t-1>) Γ_u (1 - Γ_u)     dz_r = dr c<t-1> Γ_r (1 - Γ_r)
 *     rest = dc (1 - Γ_u) + dr Γ_r + dy_prev     (dy_prev = dL/dy<t-1>, the output gradient of step t-1) */
void gru_backward_gates(int64_t batch, int64_t hidden, const float *gates, const float *c_prev, const float *dc,
                        const float *dr, const float *dy_prev, float *dz, float *rest) {
#pragma omp parallel for if (batch * hidden >= PARALLEL_MIN_ELEMENTS)
    for (int64_t b = 0; b < batch; ++b) {
        const float *restrict g = gates + b * 3 * hidden;
        const float *restrict cp = c_prev + b * hidden;
        const float *restrict d = dc + b * hidden;
        const float *restrict r = dr + b * hidden;
        const float *restrict dy = dy_prev + b * hidden;
        float *restrict out = dz + b * 3 * hidden;
        float *restrict kept = rest + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            float u = g[j], reset = g[hidden + j], candidate = g[2 * hidden + j];
            out[j] = d[j] * (candidate - cp[j]) * u * (1.0f - u);
            out[hidden + j] = r[j] * cp[j] * reset * (1.0f - reset);
            kept[j] = d[j] * (1.0f - u) + r[j] * reset + dy[j];
        }
    }
}
