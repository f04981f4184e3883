/* Generation kernels: one token for a few streams, with the matrix products inside.
 *
 * Generating one token for one stream multiplies every weight matrix by a single vector. That reads
 * each weight once and does two flops per weight read, so the speed is the speed at which the cores
 * read memory, and any call overhead shows: torch's per-step path makes about a dozen calls per layer.
 * Here a layer's whole step is one call that reads every weight row once, with the rows shared out
 * between OpenMP threads (torch's own pool: the loaded libgomp is torch's), and the gate arithmetic
 * done while the row's results are still in registers.
 *
 * Layout: row-major fp32, contiguous; weights in nn.Linear's [out, in] layout; B streams (rows).
 * The arithmetic is the one of lstm_step.c (see there for the notation), with fastmath.h's activations.
 */
#include <stdint.h>
#include <string.h>

#include "fastmath.h"
#include "float8.h"

/* Below this many weights per call one thread is faster than waking the others. */
#define PARALLEL_MIN_WEIGHTS 65536

static inline float sum8(float8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* sums[r] += rows[r] . x for four rows of length n: each load of x serves four rows, and the four
 * independent vector accumulators hide the latency of the multiply-adds. */
static void dot4(const float *restrict row0, const float *restrict row1, const float *restrict row2,
                 const float *restrict row3, const float *restrict x, int64_t n, float *restrict sums) {
    float8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float8 xv = load8(x + i);
        s0 += load8(row0 + i) * xv;
        s1 += load8(row1 + i) * xv;
        s2 += load8(row2 + i) * xv;
        s3 += load8(row3 + i) * xv;
    }
    float t0 = sum8(s0), t1 = sum8(s1), t2 = sum8(s2), t3 = sum8(s3);
    for (; i < n; ++i) {
        t0 += row0[i] * x[i];
        t1 += row1[i] * x[i];
        t2 += row2[i] * x[i];
        t3 += row3[i] * x[i];
    }
    sums[0] += t0;
    sums[1] += t1;
    sums[2] += t2;
    sums[3] += t3;
}

/* One LSTM step for B streams:
 *     z = input_row + W_ax x + W_aa a_prev            gates u, f, C~, o of z -> c = C<t>, a = a<t>
 * ([B, H] each; a and c may not alias a_prev and c_prev). The input row of stream b is the bias
 * (input_rows [4H], with tokens = NULL) or, with the embedding folded into W_ax (weight_ax = NULL), row
 * tokens[b] of the table input_rows [table_rows, 4H]. Returns 0, or -1 without computing anything when a
 * token is not a row of the table. Unit j needs rows j, H + j, 2H + j, 3H + j of each weight: the four
 * gates of a unit are one dot4. */
int lstm_generate_step(int64_t batch, int64_t hidden, int64_t input_size, const float *input_rows,
                       const int64_t *tokens, int64_t table_rows, const float *weight_ax, const float *x,
                       const float *weight_aa, const float *a_prev, const float *c_prev, float *a, float *c) {
    if (tokens)
        for (int64_t b = 0; b < batch; ++b)
            if (tokens[b] < 0 || tokens[b] >= table_rows)
                return -1;
    int64_t weights = 4 * hidden * (hidden + (weight_ax ? input_size : 0));
#pragma omp parallel for schedule(static) if (weights >= PARALLEL_MIN_WEIGHTS)
    for (int64_t j = 0; j < hidden; ++j) {
        for (int64_t b = 0; b < batch; ++b) {
            const float *input_row = tokens ? input_rows + tokens[b] * 4 * hidden : input_rows;
            float z[4];
            for (int gate = 0; gate < 4; ++gate)
                z[gate] = input_row[gate * hidden + j];
            if (weight_ax) {
                const float *w = weight_ax + j * input_size;
                int64_t block = hidden * input_size;
                dot4(w, w + block, w + 2 * block, w + 3 * block, x + b * input_size, input_size, z);
            }
            const float *w = weight_aa + j * hidden;
            int64_t block = hidden * hidden;
            dot4(w, w + block, w + 2 * block, w + 3 * block, a_prev + b * hidden, hidden, z);
            float u = sigmoid(z[0]), f = sigmoid(z[1]), g = tanh_approx(z[2]), o = sigmoid(z[3]);
            float cell = f * c_prev[b * hidden + j] + u * g;
            c[b * hidden + j] = cell;
            a[b * hidden + j] = o * tanh_approx(cell);
        }
    }
    return 0;
}

/* out = x W^T + bias for B streams: x [B, K], weight [N, K], bias [N] (or NULL), out [B, N].
 * Output features are taken four at a time (one dot4), shared out between threads. */
void linear_few_rows(int64_t batch, int64_t in_features, int64_t out_features, const float *x,
                     const float *weight, const float *bias, float *out) {
    int64_t groups = (out_features + 3) / 4;
#pragma omp parallel for schedule(static) if (in_features * out_features >= PARALLEL_MIN_WEIGHTS)
    for (int64_t group = 0; group < groups; ++group) {
        int64_t first = 4 * group;
        int64_t rows[4];
        for (int r = 0; r < 4; ++r)
            rows[r] = first + r < out_features ? first + r : out_features - 1; /* the last group repeats */
        for (int64_t b = 0; b < batch; ++b) {
            float sums[4];
            for (int r = 0; r < 4; ++r)
                sums[r] = bias ? bias[rows[r]] : 0.0f;
            dot4(weight + rows[0] * in_features, weight + rows[1] * in_features, weight + rows[2] * in_features,
                 weight + rows[3] * in_features, x + b * in_features, in_features, sums);
            for (int r = 0; r < 4 && first + r < out_features; ++r)
                out[b * out_features + first + r] = sums[r];
        }
    }
}

/* The next token of each of M streams, drawn by inverting the cumulative distribution exactly as
 * lmtrain.sampling.draw does it in torch: probs [M, V] summed left to right in double precision (the
 * order of torch's cumsum, so the cumulative values are the same to the last bit), the token the first
 * whose cumulative probability exceeds u * total, for u = uniforms[m] in [0, 1); and, where u * total
 * rounds up to the total itself, the most probable token (the first of equals, as torch's argmax). */
void draw_tokens(int64_t streams, int64_t vocab, const float *probs, const double *uniforms, int64_t *tokens) {
    for (int64_t m = 0; m < streams; ++m) {
        const float *p = probs + m * vocab;
        double total = 0.0;
        for (int64_t i = 0; i < vocab; ++i)
            total += (double)p[i];
        double threshold = uniforms[m] * total;
        double cumulative = 0.0;
        int64_t token = vocab;
        for (int64_t i = 0; i < vocab; ++i) {
            cumulative += (double)p[i];
            if (cumulative > threshold) {
                token = i;
                break;
            }
        }
        if (token == vocab) {
            token = 0;
            for (int64_t i = 1; i < vocab; ++i)
                if (p[i] > p[token])
                    token = i;
        }
        tokens[m] = token;
    }
}
