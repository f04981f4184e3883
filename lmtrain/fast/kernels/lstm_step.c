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
 * σ and tanh are fastmath.h's, which the compiler vectorizes. The batch rows are shared between OpenMP
 * threads (torch's own pool: the loaded libgomp is torch's).
 */
#include <stdint.h>

#include "fastmath.h"

/* Below this many elements per step one thread is faster than waking the others. */
#define PARALLEL_MIN_ELEMENTS 4096

/* One batch row of the forward step: z = the recurrent product + the input half; the activated gates
 * overwrite the input half; C<t> and a<t> out. */
static void forward_row(int64_t hidden, const float *restrict product, float *restrict gates,
                        const float *restrict c_prev, float *restrict c, float *restrict a) {
    const float *p_u = product, *p_f = product + hidden, *p_c = product + 2 * hidden, *p_o = product + 3 * hidden;
    float *g_u = gates, *g_f = gates + hidden, *g_c = gates + 2 * hidden, *g_o = gates + 3 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
        float u = sigmoid(g_u[j] + p_u[j]), f = sigmoid(g_f[j] + p_f[j]);
        float g = tanh_approx(g_c[j] + p_c[j]), o = sigmoid(g_o[j] + p_o[j]);
        float cell = f * c_prev[j] + u * g;
        g_u[j] = u;
        g_f[j] = f;
        g_c[j] = g;
        g_o[j] = o;
        c[j] = cell;
        a[j] = o * tanh_approx(cell);
    }
}

/* Forward step: product [B, 4H] = a<t-1> W_aa^T; gates [B, 4H] in: W_ax x<t> + b, out: Γ_u, Γ_f, C~, Γ_o;
 * c [B, H] = C<t>, a [B, H] = a<t> out. product and gates may not overlap. */
void lstm_forward_step(int64_t batch, int64_t hidden, const float *product, float *gates, const float *c_prev,
                       float *c, float *a) {
#pragma omp parallel for if (batch * hidden >= PARALLEL_MIN_ELEMENTS)
    for (int64_t b = 0; b < batch; ++b)
        forward_row(hidden, product + b * 4 * hidden, gates + b * 4 * hidden, c_prev + b * hidden, c + b * hidden,
                    a + b * hidden);
}

/* One batch row of the backward step. With da = dL/da<t> = dy<t> + dz<t+1> W_aa and dC = dL/dC<t>
 * carried from step t + 1:
 *     dC   += da Γ_o (1 - tanh²C<t>)          dz_o = da tanh(C<t>) Γ_o (1 - Γ_o)
 *     dz_u  = dC C~ Γ_u (1 - Γ_u)             dz_f = dC C<t-1> Γ_f (1 - Γ_f)
 *     dz_C~ = dC Γ_u (1 - C~²)                dC<t-1> = dC Γ_f   (written back into dc) */
static void backward_row(int64_t hidden, const float *restrict gates, const float *restrict c_prev,
                         const float *restrict c, const float *restrict recurrent, const float *restrict dy,
                         float *restrict dc, float *restrict dz) {
    const float *gate_u = gates, *gate_f = gates + hidden, *candidate = gates + 2 * hidden, *gate_o = gates + 3 * hidden;
    float *dz_u = dz, *dz_f = dz + hidden, *dz_c = dz + 2 * hidden, *dz_o = dz + 3 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
        float u = gate_u[j], f = gate_f[j], g = candidate[j], o = gate_o[j];
        float da = dy[j] + recurrent[j];
        float tanh_c = tanh_approx(c[j]);
        float d_cell = dc[j] + da * o * (1.0f - tanh_c * tanh_c);
        dz_o[j] = da * tanh_c * o * (1.0f - o);
        dz_u[j] = d_cell * g * u * (1.0f - u);
        dz_f[j] = d_cell * c_prev[j] * f * (1.0f - f);
        dz_c[j] = d_cell * u * (1.0f - g * g);
        dc[j] = d_cell * f;
    }
}

/* Backward step: gates [B, 4H] of step t, C<t-1> and C<t> [B, H]; recurrent [B, H] = dz<t+1> W_aa (zeros at
 * the last step) and dy [B, H] = dL/dy<t>; dc [B, H] in: dC from step t + 1, out: dC<t-1>; dz [B, 4H] out:
 * the gradient of the pre-activations z<t>. */
void lstm_backward_step(int64_t batch, int64_t hidden, const float *gates, const float *c_prev, const float *c,
                        const float *recurrent, const float *dy, float *dc, float *dz) {
#pragma omp parallel for if (batch * hidden >= PARALLEL_MIN_ELEMENTS)
    for (int64_t b = 0; b < batch; ++b)
        backward_row(hidden, gates + b * 4 * hidden, c_prev + b * hidden, c + b * hidden, recurrent + b * hidden,
                     dy + b * hidden, dc + b * hidden, dz + b * 4 * hidden);
}
