/* The per-step product of a recurrent window, out = add + x W^T, on a weight packed once into panels.
 *
 * Inside a window every step multiplies a few rows (the batch, B = 20-64) by the same recurrent weight:
 * a<t-1> W_aa^T forward, dz<t> W_aa backward. These products are thin; general-purpose libraries run
 * them at 60-70% of the machine's peak. This file is the classic register-blocked scheme for that one
 * shape:
 *
 *   - The weight [N, K] is packed once per window into panels of 16 output columns, [N/16][K][16]:
 *     a panel is one contiguous stream, one cache line per k.
 *   - At each call, x [M, K] is packed into blocks of 6 rows, [M/6][K][6], so that the six values a
 *     k needs are adjacent.
 *   - The micro-kernel multiplies a 6-row block by a panel, over a stretch of K_BLOCK values of k, with
 *     its 6 x 16 results in twelve 8-float vector registers: per k, two panel loads, six broadcasts and
 *     twelve fused multiply-adds. Every row block passes over a stretch of a panel (32 KB) while it is
 *     in the L1 or L2 cache (stretches of 128, 256, 512 k or all of K measured the same, within noise).
 *   - The panels are shared between OpenMP threads (torch's own pool, as in the other kernels), in
 *     shrinking chunks, so that a slower core takes fewer.
 *
 * Written with GCC/clang vector types, so the same source compiles to AVX2 (-march=native) or SSE
 * (the portable build). Row-major fp32 throughout; the results are deterministic (fixed order of
 * summation over k, independent of the thread count and of which thread takes which panel).
 */
#include <stdint.h>
#include <string.h>

#include "float8.h"

#define PANEL_WIDTH 16 /* output columns per panel: two 8-float vectors */
#define BLOCK_ROWS 6   /* rows of x per micro-kernel: 6 x 2 accumulators + 2 panel loads + 1 broadcast */
#define K_BLOCK 512    /* k values per pass of the micro-kernel (a 32 KB stretch of a panel) */

/* Below this many multiply-adds a product runs on one thread. */
#define PARALLEL_MIN_MULTIPLY_ADDS (1 << 18)

/* Which build this is, for the choice between this kernel and torch's (panel_product.py): 1 for the one
 * measured faster than both MKL and oneDNN, OpenMP threads and 256-bit FMA vectors (AVX2); 2 for the same
 * on an AVX-512 CPU, where the 8-float vectors fill half a register: measured faster than MKL but not than
 * oneDNN; 0 for a portable build, which runs on one thread. */
int panel_product_tuned(void) {
#if defined(_OPENMP) && defined(__AVX2__) && defined(__FMA__) && defined(__AVX512F__)
    return 2;
#elif defined(_OPENMP) && defined(__AVX2__) && defined(__FMA__)
    return 1;
#else
    return 0;
#endif
}

static int64_t panel_count(int64_t n) { return (n + PANEL_WIDTH - 1) / PANEL_WIDTH; }

/* Floats of the packed weight [N, K] and of the packed rows of x [M, K]. */
int64_t packed_weight_size(int64_t n, int64_t k) { return panel_count(n) * k * PANEL_WIDTH; }
int64_t packed_rows_size(int64_t m, int64_t k) { return (m + BLOCK_ROWS - 1) / BLOCK_ROWS * BLOCK_ROWS * k; }

/* Pack the weight W [N, K], whose element (j, k) is weight[j * row_stride + k * column_stride], into
 * panels [N/16][K][16], the last one padded with zeros. The strides let W^T be packed from W directly. */
void pack_weight(int64_t n, int64_t k, const float *weight, int64_t row_stride, int64_t column_stride,
                 float *packed) {
    int64_t panels = panel_count(n);
#pragma omp parallel for if (n * k >= PARALLEL_MIN_MULTIPLY_ADDS)
    for (int64_t p = 0; p < panels; ++p) {
        float *panel = packed + p * k * PANEL_WIDTH;
        int64_t columns = n - p * PANEL_WIDTH < PANEL_WIDTH ? n - p * PANEL_WIDTH : PANEL_WIDTH;
        for (int64_t j = columns; j < PANEL_WIDTH; ++j) /* the last panel's padding */
            for (int64_t i = 0; i < k; ++i)
                panel[i * PANEL_WIDTH + j] = 0.0f;
        const float *first_column = weight + p * PANEL_WIDTH * row_stride;
        if (column_stride == 1) /* W's rows are contiguous: read along them */
            for (int64_t j = 0; j < columns; ++j)
                for (int64_t i = 0; i < k; ++i)
                    panel[i * PANEL_WIDTH + j] = first_column[j * row_stride + i];
        else /* W^T packed from W: a panel's 16 values of one k are adjacent in W */
            for (int64_t i = 0; i < k; ++i)
                for (int64_t j = 0; j < columns; ++j)
                    panel[i * PANEL_WIDTH + j] = first_column[j * row_stride + i * column_stride];
    }
}

/* Pack x [M, K] (row-major) into stretches of K_BLOCK k values, each [M/6][stretch][6]: block b's values
 * for one stretch are contiguous. Rows past M are zeros. */
static void pack_rows(int64_t m, int64_t k, const float *x, float *packed) {
    int64_t blocks = (m + BLOCK_ROWS - 1) / BLOCK_ROWS;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b)
        for (int64_t k0 = 0; k0 < k; k0 += K_BLOCK) {
            int64_t stretch = k - k0 < K_BLOCK ? k - k0 : K_BLOCK;
            float *block = packed + k0 * blocks * BLOCK_ROWS + b * stretch * BLOCK_ROWS;
            for (int64_t i = 0; i < stretch; ++i)
                for (int64_t r = 0; r < BLOCK_ROWS; ++r) {
                    int64_t row = b * BLOCK_ROWS + r;
                    block[i * BLOCK_ROWS + r] = row < m ? x[row * k + k0 + i] : 0.0f;
                }
        }
}

/* Write (or, after the first stretch, add) one row's 16 results; only `columns` of them in the last panel.
 * `start` is what the first stretch adds to: the row of `add`, or NULL. */
static inline void write_row(float *out, const float *start, float8 low, float8 high, int64_t columns, int first) {
    if (columns == PANEL_WIDTH) {
        float8 base_low = {0}, base_high = {0};
        if (!first) {
            base_low = load8(out);
            base_high = load8(out + 8);
        } else if (start) {
            base_low = load8(start);
            base_high = load8(start + 8);
        }
        store8(out, base_low + low);
        store8(out + 8, base_high + high);
        return;
    }
    float values[PANEL_WIDTH];
    memcpy(values, &low, sizeof low);
    memcpy(values + 8, &high, sizeof high);
    for (int64_t j = 0; j < columns; ++j)
        out[j] = (!first ? out[j] : start ? start[j] : 0.0f) + values[j];
}

/* The micro-kernel for a block of ROWS rows (6, or fewer for the last block): `rows` is the packed block
 * (stride BLOCK_ROWS per k), `panel` the panel's stretch; `out` and `add` point at the block's first row
 * and the panel's first column, `width` apart. */
#define MICRO_KERNEL(ROWS)                                                                                    \
    static void micro_kernel_##ROWS(int64_t stretch, const float *restrict rows, const float *restrict panel,  \
                                    float *restrict out, const float *restrict add, int64_t width,            \
                                    int64_t columns, int first) {                                             \
        float8 low[ROWS], high[ROWS];                                                                           \
        for (int r = 0; r < ROWS; ++r)                                                                        \
            low[r] = high[r] = (float8){0};                                                                     \
        for (int64_t i = 0; i < stretch; ++i) {                                                               \
            float8 panel_low = load8(panel + i * PANEL_WIDTH), panel_high = load8(panel + i * PANEL_WIDTH + 8); \
            for (int r = 0; r < ROWS; ++r) {                                                                  \
                float value = rows[i * BLOCK_ROWS + r];                                                       \
                float8 broadcast = {value, value, value, value, value, value, value, value};                    \
                low[r] += broadcast * panel_low;                                                              \
                high[r] += broadcast * panel_high;                                                            \
            }                                                                                                 \
        }                                                                                                     \
        for (int r = 0; r < ROWS; ++r)                                                                        \
            write_row(out + r * width, add ? add + r * width : NULL, low[r], high[r], columns, first);        \
    }
/* The broadcast is written as a vector literal: `(float8){0} + value` would be a scalar add first (-0.0
 * must stay -0.0 without -ffast-math), one more dependent instruction per row, 40% slower measured. */

MICRO_KERNEL(1)
MICRO_KERNEL(2)
MICRO_KERNEL(3)
MICRO_KERNEL(4)
MICRO_KERNEL(5)
MICRO_KERNEL(6)

typedef void (*micro_kernel)(int64_t, const float *, const float *, float *, const float *, int64_t, int64_t, int);
static const micro_kernel MICRO_KERNELS[BLOCK_ROWS + 1] = {
    NULL, micro_kernel_1, micro_kernel_2, micro_kernel_3, micro_kernel_4, micro_kernel_5, micro_kernel_6,
};

/* out [M, N] = add [M, N] (or nothing, when add is NULL) + x [M, K] W^T, W packed by pack_weight.
 * packed_rows is scratch of packed_rows_size(M, K) floats. out may not overlap x, add or the scratch. */
void panel_product(int64_t m, int64_t n, int64_t k, const float *x, const float *packed, const float *add,
                   float *out, float *packed_rows) {
    int64_t panels = panel_count(n), blocks = (m + BLOCK_ROWS - 1) / BLOCK_ROWS;
#pragma omp parallel if (m * n * k >= PARALLEL_MIN_MULTIPLY_ADDS)
    {
        pack_rows(m, k, x, packed_rows); /* ends in the barrier of its omp for */
        /* guided: a thread that finishes early takes more panels (on virtual machines the cores do
         * not always run at the same speed, and an even split waits for the slower one) */
#pragma omp for schedule(guided)
        for (int64_t p = 0; p < panels; ++p) {
            int64_t columns = n - p * PANEL_WIDTH < PANEL_WIDTH ? n - p * PANEL_WIDTH : PANEL_WIDTH;
            for (int64_t k0 = 0; k0 < k; k0 += K_BLOCK) {
                int64_t stretch = k - k0 < K_BLOCK ? k - k0 : K_BLOCK;
                const float *panel = packed + p * k * PANEL_WIDTH + k0 * PANEL_WIDTH;
                for (int64_t b = 0; b < blocks; ++b) {
                    int64_t rows = m - b * BLOCK_ROWS < BLOCK_ROWS ? m - b * BLOCK_ROWS : BLOCK_ROWS;
                    int64_t offset = b * BLOCK_ROWS * n + p * PANEL_WIDTH;
                    MICRO_KERNELS[rows](stretch, packed_rows + k0 * blocks * BLOCK_ROWS + b * stretch * BLOCK_ROWS,
                                        panel, out + offset, add ? add + offset : NULL, n, columns, k0 == 0);
                }
            }
        }
    }
}
