/* Generation kernels: one token for a few streams, with the matrix products inside.
 *
 * Generating one token for one stream multiplies every weight matrix by a single vector. That reads
 * each weight once and does two flops per weight read, so the speed is the speed at which the cores
 * read the weights and multiply them, and any call overhead shows: torch's per-step path makes about a
 * dozen calls per layer. Here a layer's whole step is one call that reads every weight once, with the
 * weights' blocks shared out between OpenMP threads (torch's own pool: the loaded libgomp is torch's),
 * and the gate arithmetic done on each block's results while they are still in cache.
 *
 * Layout: the weights are packed once (pack_generation_weight) into blocks of 64 output rows,
 * [blocks][K][64]: for each input column k, the 64 rows' weights side by side, so that one broadcast x[k]
 * multiplies eight vectors of eight weights and the block's 64 sums stay in eight vector registers; no
 * horizontal sums. An LSTM block holds 16 units' four gate rows (u, f, C~, o: rows j, H + j, 2H + j, 3H + j),
 * so its sums are the 16 units' whole z; a linear layer's block holds 64 consecutive output rows. Rows past
 * the matrix's end are zeros. The weights are fp32, or bfloat16 (half the bytes to read: see
 * load16_bf16_interleaved for how each 16 are stored); the arithmetic is fp32 either way, and the same
 * multiply-adds in the same order, so on weights bfloat16 holds exactly the two agree to the last bit.
 * Activations, state and outputs are row-major fp32, B streams (rows).
 * The arithmetic is the one of lstm_step.c (see there for the notation), with fastmath.h's activations.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fastmath.h"
#include "float8.h"

/* Below this many weights per call one thread is faster than waking the others. */
#define PARALLEL_MIN_WEIGHTS 65536

/* Output rows per packed block, and the vectors of eight that hold their sums. */
#define BLOCK_ROWS 64
#define BLOCK_VECTORS (BLOCK_ROWS / 8)

/* Whether each of n floats is a bfloat16 number (its low 16 bits zero), stopping at the first that is
 * not: a trained fp32 weight answers at its first value, a rounded one after one read. */
int holds_bfloat16(int64_t n, const float *values) {
    for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        memcpy(&bits, values + i, sizeof bits);
        if (bits & 0xffffu)
            return 0;
    }
    return 1;
}

/* Packs a weight [rows, k_count] (row-major fp32) into blocks [blocks][k_count][64] as the kernels below
 * read it. The rows form `groups` groups of rows / groups (4 for an LSTM weight: its gates; 1 for a linear
 * layer), and a block holds the same 64 / groups lanes of every group: slot s of block b is lane l = s mod
 * (64 / groups) of group g = s / (64 / groups), which is row g * (rows / groups) + b * (64 / groups) + l, or
 * zero past the group's last row. Where bf16 is 1 the weight must hold bfloat16 numbers exactly, and out
 * gets each value's top half, every 16 of a column interleaved as load16_bf16_interleaved reads them.
 * Each row is read whole, one after another: one stream for the prefetcher, where reading 64 rows side by
 * side outran it; the block being written ([K][64], 128 KB for K = 512) stays in cache. */
void pack_generation_weight(int64_t rows, int64_t k_count, int64_t groups, const float *weight, int bf16,
                            void *out) {
    const int64_t lanes = BLOCK_ROWS / groups, group_rows = rows / groups;
    const int64_t blocks = (group_rows + lanes - 1) / lanes;
#pragma omp parallel for schedule(static) if (rows * k_count >= PARALLEL_MIN_WEIGHTS)
    for (int64_t block = 0; block < blocks; ++block) {
        for (int64_t slot = 0; slot < BLOCK_ROWS; ++slot) {
            int64_t group = slot / lanes, unit = block * lanes + slot % lanes, lane16 = slot % 16;
            const float *row = unit < group_rows ? weight + (group * group_rows + unit) * k_count : NULL;
            int64_t at = bf16 ? slot - lane16 + (lane16 < 8 ? 2 * lane16 : 2 * (lane16 - 8) + 1) : slot;
            int64_t first = block * k_count * BLOCK_ROWS + at;
            if (bf16) {
                uint16_t *packed = (uint16_t *)out + first;
                for (int64_t k = 0; k < k_count; ++k) {
                    uint32_t bits = 0;
                    if (row)
                        memcpy(&bits, row + k, sizeof bits);
                    packed[k * BLOCK_ROWS] = (uint16_t)(bits >> 16);
                }
            } else {
                float *packed = (float *)out + first;
                for (int64_t k = 0; k < k_count; ++k)
                    packed[k * BLOCK_ROWS] = row ? row[k] : 0.0f;
            }
        }
    }
}

/* Sixteen weights of a packed column: fp32 in order, or bfloat16 interleaved. */
static inline __attribute__((always_inline)) void load_weights16(const void *column, int64_t at, int bf16,
                                                                 float8 *low, float8 *high) {
    if (bf16) {
        load16_bf16_interleaved((const uint16_t *)column + at, low, high);
    } else {
        *low = load8((const float *)column + at);
        *high = load8((const float *)column + at + 8);
    }
}

/* sums[r] += sum over k of block[k][r] * x[k], r < 64, for one packed block [K][64]. Inlined into
 * block_sums_fp32 and block_sums_bf16 with bf16 a constant, so each has one kind of load in its loop;
 * the eight sums are eight independent chains of multiply-adds, enough to hide their latency. */
static inline __attribute__((always_inline)) void block_sums(const void *block, const float *restrict x,
                                                             int64_t k_count, float8 sums[BLOCK_VECTORS],
                                                             int bf16) {
    float8 s[BLOCK_VECTORS];
    for (int v = 0; v < BLOCK_VECTORS; ++v)
        s[v] = sums[v];
    for (int64_t k = 0; k < k_count; ++k) {
        float8 xk = {x[k], x[k], x[k], x[k], x[k], x[k], x[k], x[k]};
        for (int v = 0; v < BLOCK_VECTORS; v += 2) {
            float8 low, high;
            load_weights16(block, k * BLOCK_ROWS + 8 * v, bf16, &low, &high);
            s[v] += low * xk;
            s[v + 1] += high * xk;
        }
    }
    for (int v = 0; v < BLOCK_VECTORS; ++v)
        sums[v] = s[v];
}

static void block_sums_fp32(const void *block, const float *x, int64_t k_count, float8 *sums) {
    block_sums(block, x, k_count, sums, 0);
}

static void block_sums_bf16(const void *block, const float *x, int64_t k_count, float8 *sums) {
    block_sums(block, x, k_count, sums, 1);
}

/* Block b of packed weights with k_count columns. */
static inline const void *block_at(const void *packed, int64_t b, int64_t k_count, int bf16) {
    return (const char *)packed + b * k_count * BLOCK_ROWS * (bf16 ? sizeof(uint16_t) : sizeof(float));
}

/* Whether each stream's token is a row of the table (the input rows of a folded layer, tokens != NULL). */
static int tokens_in_table(int64_t batch, const int64_t *tokens, int64_t table_rows) {
    if (tokens)
        for (int64_t b = 0; b < batch; ++b)
            if (tokens[b] < 0 || tokens[b] >= table_rows)
                return 0;
    return 1;
}

/* Units of one block when the block's 64 rows are `groups` groups of a layer with `units` units. */
static inline int64_t units_in_block(int64_t block, int64_t units, int64_t groups) {
    int64_t lanes = BLOCK_ROWS / groups, first = block * lanes;
    return units - first < lanes ? units - first : lanes;
}

/* One stream's 64 pre-activations of a block whose rows are `groups` groups of `units` units,
 *     z[g * lanes + l] = input_row[g * units + first + l] + (W_ax x + W_aa h)[that row]
 * (lanes = 64 / groups, first = block * lanes; z is 0 past the last unit): the input row's entries where
 * input_row is not NULL, W_ax x where packed_ax is not NULL (an unfolded layer), W_aa h where packed_aa
 * is not NULL. */
static void block_preactivations(int64_t block, int64_t units, int64_t groups, const float *input_row,
                                 const void *packed_ax, const float *x, int64_t input_size,
                                 const void *packed_aa, const float *h, int bf16, float z[BLOCK_ROWS]) {
    void (*sums_of)(const void *, const float *, int64_t, float8 *) =
        bf16 ? block_sums_bf16 : block_sums_fp32;
    const int64_t lanes = BLOCK_ROWS / groups, count = units_in_block(block, units, groups);
    memset(z, 0, BLOCK_ROWS * sizeof(float));
    if (input_row)
        for (int64_t group = 0; group < groups; ++group)
            memcpy(z + group * lanes, input_row + group * units + block * lanes, count * sizeof(float));
    float8 sums[BLOCK_VECTORS];
    memcpy(sums, z, sizeof sums);
    if (packed_ax)
        sums_of(block_at(packed_ax, block, input_size, bf16), x, input_size, sums);
    if (packed_aa)
        sums_of(block_at(packed_aa, block, units, bf16), h, units, sums);
    memcpy(z, sums, sizeof sums);
}

/* One LSTM step for B streams:
 *     z = input_row + W_ax x + W_aa a_prev            gates u, f, C~, o of z -> c = C<t>, a = a<t>
 * ([B, H] each; a and c may not alias a_prev and c_prev). The input row of stream b is the bias
 * (input_rows [4H], with tokens = NULL) or, with the embedding folded into W_ax (packed_ax = NULL), row
 * tokens[b] of the table input_rows [table_rows, 4H]. packed_ax and packed_aa are W_ax and W_aa packed
 * in LSTM blocks (16 units each), fp32 or, where bf16 is 1, bfloat16. Returns 0, or -1 without computing
 * anything when a token is not a row of the table. */
int lstm_generate_step(int64_t batch, int64_t hidden, int64_t input_size, const float *input_rows,
                       const int64_t *tokens, int64_t table_rows, const void *packed_ax, const float *x,
                       const void *packed_aa, int bf16, const float *a_prev, const float *c_prev, float *a,
                       float *c) {
    if (!tokens_in_table(batch, tokens, table_rows))
        return -1;
    const int64_t units = BLOCK_ROWS / 4, blocks = (hidden + units - 1) / units;
    int64_t weights = 4 * hidden * (hidden + (packed_ax ? input_size : 0));
#pragma omp parallel for schedule(static) if (weights >= PARALLEL_MIN_WEIGHTS)
    for (int64_t block = 0; block < blocks; ++block) {
        int64_t first = block * units, count = units_in_block(block, hidden, 4);
        for (int64_t b = 0; b < batch; ++b) {
            const float *input_row = tokens ? input_rows + tokens[b] * 4 * hidden : input_rows;
            float z[BLOCK_ROWS]; /* [gate][unit of the block] */
            block_preactivations(block, hidden, 4, input_row, packed_ax, x + b * input_size, input_size,
                                 packed_aa, a_prev + b * hidden, bf16, z);
            for (int64_t unit = 0; unit < count; ++unit) {
                int64_t j = b * hidden + first + unit;
                float u = sigmoid(z[unit]), f = sigmoid(z[units + unit]);
                float g = tanh_approx(z[2 * units + unit]);
                float cell = f * c_prev[j] + u * g;
                c[j] = cell;
                a[j] = sigmoid(z[3 * units + unit]) * tanh_approx(cell);
            }
        }
    }
    return 0;
}

/* One GRU step for B streams, either variant (the notes' with candidate_bias NULL, cuDNN's with its b_ca):
 *     Γ_u, Γ_r = σ(input rows u, r + W_ax x + W_aa c_prev)                              (phase 1)
 *     notes:  C~ = tanh(input row C~ + W_cx x + W_ca (Γ_r * c_prev))                      (phase 2)
 *     cuDNN:  C~ = tanh(input row C~ + W_cx x + Γ_r * (W_ca c_prev + b_ca))
 *     c = Γ_u * C~ + (1 - Γ_u) * c_prev
 * Phase 2 needs phase 1's Γ_r of every unit (the notes' W_ca multiplies the whole Γ_r * c_prev), so the
 * threads meet between the two. The input rows are the bias [3H] (tokens NULL) or the folded table
 * [table_rows, 3H] at tokens. The gates' rows (u, r) are packed in blocks of 32 units (groups 2): gates_ax
 * and gates_aa; the candidate's in blocks of 64 (groups 1): candidate_ax and candidate_aa; the _ax ones
 * NULL for a folded layer. scratch [B, 2H] holds Γ_u and, for phase 2's product, Γ_r * c_prev (notes) or
 * Γ_r (cuDNN). c may not alias c_prev. Returns 0, or -1 without computing anything when a token is not a
 * row of the table. */
int gru_generate_step(int64_t batch, int64_t hidden, int64_t input_size, const float *input_rows,
                      const int64_t *tokens, int64_t table_rows, const void *gates_ax,
                      const void *candidate_ax, const float *x, const void *gates_aa,
                      const void *candidate_aa, int bf16, const float *candidate_bias, const float *c_prev,
                      float *scratch, float *c) {
    if (!tokens_in_table(batch, tokens, table_rows))
        return -1;
    const int64_t gate_units = BLOCK_ROWS / 2, gate_blocks = (hidden + gate_units - 1) / gate_units;
    const int64_t candidate_blocks = (hidden + BLOCK_ROWS - 1) / BLOCK_ROWS;
    int64_t weights = 3 * hidden * (hidden + (gates_ax ? input_size : 0));
#pragma omp parallel if (weights >= PARALLEL_MIN_WEIGHTS)
    {
#pragma omp for schedule(static)
        for (int64_t block = 0; block < gate_blocks; ++block) {
            int64_t first = block * gate_units, count = units_in_block(block, hidden, 2);
            for (int64_t b = 0; b < batch; ++b) {
                const float *input_row = tokens ? input_rows + tokens[b] * 3 * hidden : input_rows;
                float z[BLOCK_ROWS]; /* [gate (u, r)][unit of the block] */
                block_preactivations(block, hidden, 2, input_row, gates_ax, x + b * input_size, input_size,
                                     gates_aa, c_prev + b * hidden, bf16, z);
                float *update = scratch + b * 2 * hidden, *reset_part = update + hidden;
                for (int64_t unit = 0; unit < count; ++unit) {
                    int64_t j = first + unit;
                    float reset = sigmoid(z[gate_units + unit]);
                    update[j] = sigmoid(z[unit]);
                    reset_part[j] = candidate_bias ? reset : reset * c_prev[b * hidden + j];
                }
            }
        }
#pragma omp for schedule(static)
        for (int64_t block = 0; block < candidate_blocks; ++block) {
            int64_t first = block * BLOCK_ROWS, count = units_in_block(block, hidden, 1);
            for (int64_t b = 0; b < batch; ++b) {
                const float *input_row = tokens ? input_rows + tokens[b] * 3 * hidden : input_rows;
                const float *update = scratch + b * 2 * hidden, *reset_part = update + hidden;
                /* notes: W_ca (Γ_r * c_prev) in the same sums as W_cx x; cuDNN: W_ca c_prev apart */
                float z[BLOCK_ROWS], recurrent[BLOCK_ROWS];
                block_preactivations(block, hidden, 1, input_row + 2 * hidden, candidate_ax,
                                     x + b * input_size, input_size, candidate_bias ? NULL : candidate_aa,
                                     reset_part, bf16, z);
                if (candidate_bias)
                    block_preactivations(block, hidden, 1, NULL, NULL, NULL, 0, candidate_aa,
                                         c_prev + b * hidden, bf16, recurrent);
                for (int64_t unit = 0; unit < count; ++unit) {
                    int64_t j = first + unit;
                    float pre = z[unit];
                    if (candidate_bias)
                        pre += reset_part[j] * (recurrent[unit] + candidate_bias[j]);
                    float previous = c_prev[b * hidden + j];
                    c[b * hidden + j] = previous + update[j] * (tanh_approx(pre) - previous);
                }
            }
        }
    }
    return 0;
}

/* One plain RNN step for B streams: a = g(input_row + W_ax x + W_aa a_prev), g = tanh, or relu where relu
 * is 1 (NaN stays NaN). Weights packed in linear blocks (64 units each), W_ax NULL for a folded layer; the
 * input rows, and the rest, as in gru_generate_step. a may not alias a_prev. */
int rnn_generate_step(int64_t batch, int64_t hidden, int64_t input_size, const float *input_rows,
                      const int64_t *tokens, int64_t table_rows, const void *packed_ax, const float *x,
                      const void *packed_aa, int bf16, int relu, const float *a_prev, float *a) {
    if (!tokens_in_table(batch, tokens, table_rows))
        return -1;
    const int64_t blocks = (hidden + BLOCK_ROWS - 1) / BLOCK_ROWS;
    int64_t weights = hidden * (hidden + (packed_ax ? input_size : 0));
#pragma omp parallel for schedule(static) if (weights >= PARALLEL_MIN_WEIGHTS)
    for (int64_t block = 0; block < blocks; ++block) {
        int64_t first = block * BLOCK_ROWS, count = units_in_block(block, hidden, 1);
        for (int64_t b = 0; b < batch; ++b) {
            const float *input_row = tokens ? input_rows + tokens[b] * hidden : input_rows;
            float z[BLOCK_ROWS];
            block_preactivations(block, hidden, 1, input_row, packed_ax, x + b * input_size, input_size,
                                 packed_aa, a_prev + b * hidden, bf16, z);
            for (int64_t unit = 0; unit < count; ++unit)
                a[b * hidden + first + unit] =
                    relu ? (z[unit] < 0.0f ? 0.0f : z[unit]) : tanh_approx(z[unit]);
        }
    }
    return 0;
}

/* out = x W^T + bias for B streams: x [B, K], W [N, K] packed in linear blocks (64 rows each), fp32 or,
 * where bf16 is 1, bfloat16; bias [N] (or NULL), out [B, N]. */
void linear_few_rows(int64_t batch, int64_t in_features, int64_t out_features, const float *x,
                     const void *packed, int bf16, const float *bias, float *out) {
    int64_t blocks = (out_features + BLOCK_ROWS - 1) / BLOCK_ROWS;
#pragma omp parallel for schedule(static) if (in_features * out_features >= PARALLEL_MIN_WEIGHTS)
    for (int64_t block = 0; block < blocks; ++block) {
        for (int64_t b = 0; b < batch; ++b) {
            float z[BLOCK_ROWS];
            block_preactivations(block, out_features, 1, bias, packed, x + b * in_features, in_features, NULL,
                                 NULL, bf16, z);
            memcpy(out + b * out_features + block * BLOCK_ROWS, z,
                   units_in_block(block, out_features, 1) * sizeof(float));
        }
    }
}

/* The token that u in [0, 1) picks from the weights w [V] (a distribution up to a factor), by inverting the
 * cumulative distribution exactly as lmtrain.sampling.draw does it in torch: w summed left to right in
 * double precision (the order of torch's cumsum, so the cumulative values are the same to the last bit),
 * the token the first whose cumulative weight exceeds u * total; and, where u * total rounds up to the
 * total itself, the heaviest token (the first of equals, as torch's argmax). */
static int64_t draw_one(int64_t vocab, const float *w, double u) {
    double total = 0.0;
    for (int64_t i = 0; i < vocab; ++i)
        total += (double)w[i];
    double threshold = u * total, cumulative = 0.0;
    for (int64_t i = 0; i < vocab; ++i) {
        cumulative += (double)w[i];
        if (cumulative > threshold)
            return i;
    }
    int64_t heaviest = 0;
    for (int64_t i = 1; i < vocab; ++i)
        if (w[i] > w[heaviest])
            heaviest = i;
    return heaviest;
}

/* The next token of each of M streams from its probabilities probs [M, V] and u = uniforms[m] (draw_one):
 * the token lmtrain.sampling.draw picks in torch, bit for bit. */
void draw_tokens(int64_t streams, int64_t vocab, const float *probs, const double *uniforms, int64_t *tokens) {
    for (int64_t m = 0; m < streams; ++m)
        tokens[m] = draw_one(vocab, probs + m * vocab, uniforms[m]);
}

/* The next token of each of M streams from its logits [M, V], as lmtrain.sampling.next_tokens chooses it
 * without top-k or top-p: the token `banned` (-1 for none) never, then with `greedy` the first largest
 * logit (temperature ignored), otherwise a draw (draw_one, with u = uniforms[m]) from softmax(logits / temperature). The softmax
 * is left unnormalized, w = e^(s - max s) for s = logits / temperature (the division skipped at 1, as
 * torch's path skips it; w = 0 where s = -inf), since the draw compares with u times the total; with
 * fastmath.h's exponential its weights agree with torch's to float rounding, so the two paths pick the
 * same token unless u falls within that rounding of a boundary between two tokens. weights is scratch of
 * V floats. */
void sample_tokens(int64_t streams, int64_t vocab, const float *logits, float temperature, int64_t banned,
                   int greedy, const double *uniforms, float *weights, int64_t *tokens) {
    if (greedy) /* torch's path takes the argmax of the logits themselves */
        temperature = 1.0f;
    for (int64_t m = 0; m < streams; ++m) {
        const float *row = logits + m * vocab;
        float largest = -INFINITY;
        int64_t first_largest = banned == 0 && vocab > 1 ? 1 : 0;
        for (int64_t i = 0; i < vocab; ++i) {
            float s = i == banned ? -INFINITY : (temperature == 1.0f ? row[i] : row[i] / temperature);
            weights[i] = s;
            if (s > largest) {
                largest = s;
                first_largest = i;
            }
        }
        if (greedy || largest == -INFINITY) { /* nothing to draw from: every logit -inf (or NaN) */
            tokens[m] = first_largest;
            continue;
        }
        for (int64_t i = 0; i < vocab; ++i)
            weights[i] = weights[i] == -INFINITY ? 0.0f : exp_approx(weights[i] - largest);
        tokens[m] = draw_one(vocab, weights, uniforms[m]);
    }
}
