/* Laying a weight out transposed, for the products that multiply by W^T at every step.
 *
 * A backward pass through time multiplies by W_aa (not W_aa^T) at every step, and oneDNN wants that
 * operand as a contiguous [H, 4H] matrix, a transposed copy of the weight made once per window. torch's
 * copy of a transposed view walks one side with a stride of a whole row; this one goes through 64 x 64
 * tiles, so that both the rows read and the rows written stay in cache, and transposes each tile's 8 x 8
 * blocks in AVX registers (eight loads, 24 shuffles, eight stores) where the CPU has AVX. Measured on the
 * README's machine (session 11, destination reused): 0.16-0.19 ms for [2600, 650], [650, 2600] and
 * [700, 2600], where 16 x 16 scalar tiles took 0.35-0.52 ms and torch's copy 2-5 ms. The same routine makes
 * the transposed copies of the windows' other products (dz^T, x^T for the weight gradients).
 */
#include <stdint.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#define TILE 64 /* a 64 x 64 tile: 16 KB read and 16 KB written, both in L1 */

#if defined(__AVX__)
/* dst [8, 8] (rows dst_stride apart) = src [8, 8]^T (rows src_stride apart), in registers. */
static inline void transpose_8x8(const float *src, int64_t src_stride, float *dst, int64_t dst_stride) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + src_stride);
    __m256 r2 = _mm256_loadu_ps(src + 2 * src_stride), r3 = _mm256_loadu_ps(src + 3 * src_stride);
    __m256 r4 = _mm256_loadu_ps(src + 4 * src_stride), r5 = _mm256_loadu_ps(src + 5 * src_stride);
    __m256 r6 = _mm256_loadu_ps(src + 6 * src_stride), r7 = _mm256_loadu_ps(src + 7 * src_stride);
    /* pairs of rows interleaved, then pairs of pairs: each 128-bit lane holds a 4 x 4 transpose */
    __m256 p0 = _mm256_unpacklo_ps(r0, r1), p1 = _mm256_unpackhi_ps(r0, r1);
    __m256 p2 = _mm256_unpacklo_ps(r2, r3), p3 = _mm256_unpackhi_ps(r2, r3);
    __m256 p4 = _mm256_unpacklo_ps(r4, r5), p5 = _mm256_unpackhi_ps(r4, r5);
    __m256 p6 = _mm256_unpacklo_ps(r6, r7), p7 = _mm256_unpackhi_ps(r6, r7);
    __m256 q0 = _mm256_shuffle_ps(p0, p2, 0x44), q1 = _mm256_shuffle_ps(p0, p2, 0xEE);
    __m256 q2 = _mm256_shuffle_ps(p1, p3, 0x44), q3 = _mm256_shuffle_ps(p1, p3, 0xEE);
    __m256 q4 = _mm256_shuffle_ps(p4, p6, 0x44), q5 = _mm256_shuffle_ps(p4, p6, 0xEE);
    __m256 q6 = _mm256_shuffle_ps(p5, p7, 0x44), q7 = _mm256_shuffle_ps(p5, p7, 0xEE);
    /* the low lanes of rows 0-3 with those of rows 4-7 give output rows 0-3, the high lanes rows 4-7 */
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(q0, q4, 0x20));
    _mm256_storeu_ps(dst + dst_stride, _mm256_permute2f128_ps(q1, q5, 0x20));
    _mm256_storeu_ps(dst + 2 * dst_stride, _mm256_permute2f128_ps(q2, q6, 0x20));
    _mm256_storeu_ps(dst + 3 * dst_stride, _mm256_permute2f128_ps(q3, q7, 0x20));
    _mm256_storeu_ps(dst + 4 * dst_stride, _mm256_permute2f128_ps(q0, q4, 0x31));
    _mm256_storeu_ps(dst + 5 * dst_stride, _mm256_permute2f128_ps(q1, q5, 0x31));
    _mm256_storeu_ps(dst + 6 * dst_stride, _mm256_permute2f128_ps(q2, q6, 0x31));
    _mm256_storeu_ps(dst + 7 * dst_stride, _mm256_permute2f128_ps(q3, q7, 0x31));
}
#define BLOCK 8
#else
#define BLOCK 1
#endif

/* dst [cols, rows] = src [rows, cols]^T, both row-major. */
void transpose(int64_t rows, int64_t cols, const float *restrict src, float *restrict dst) {
#pragma omp parallel for collapse(2) schedule(static) if (rows * cols >= 65536)
    for (int64_t row0 = 0; row0 < rows; row0 += TILE)
        for (int64_t col0 = 0; col0 < cols; col0 += TILE) {
            int64_t row1 = row0 + TILE < rows ? row0 + TILE : rows;
            int64_t col1 = col0 + TILE < cols ? col0 + TILE : cols;
            /* the tile's whole 8 x 8 blocks in registers, the rest (its last rows and columns) one by one */
            int64_t whole_rows = row0 + (row1 - row0) / BLOCK * BLOCK;
            int64_t whole_cols = col0 + (col1 - col0) / BLOCK * BLOCK;
#if defined(__AVX__)
            for (int64_t row = row0; row < whole_rows; row += BLOCK)
                for (int64_t col = col0; col < whole_cols; col += BLOCK)
                    transpose_8x8(src + row * cols + col, cols, dst + col * rows + row, rows);
#endif
            for (int64_t row = row0; row < row1; ++row)
                for (int64_t col = row < whole_rows ? whole_cols : col0; col < col1; ++col)
                    dst[col * rows + row] = src[row * cols + col];
        }
}
