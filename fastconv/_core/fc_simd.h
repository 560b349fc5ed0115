/* SIMD kernels for the loops GCC vectorises poorly or not at all: strided pair reductions,
 * the dense 3x3 stencil, block pooling, register-tile transposes, argmax passes without masked
 * stores. Every helper has a plain C fallback; the AVX2 paths are chosen at compile time from the
 * target flags (-march=native adds AVX2/FMA where the machine has them). */
#ifndef FC_SIMD_H
#define FC_SIMD_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

/* o[j] = s * ((a[2j] + b[2j]) + (a[2j+1] + b[2j+1])) for j < n: 2x2 / stride-2 average pooling of
 * two input rows a, b. In-lane shuffles split even and odd columns (a cross-lane permute, which
 * costs several cycles on AMD cores, is needed once per vector of outputs, not per load); the tail
 * is one overlapping vector that recomputes a few outputs identically. */
#define FC_DEFINE_PAIR_AVG(NAME, T, VT, WIDTH, SFX, EVEN, ODD)                                      \
static inline void NAME(const T *a, const T *b, T *o, ptrdiff_t n, T s)                             \
{                                                                                                   \
    ptrdiff_t j = 0;                                                                                \
    FC_PAIR_AVG_VECTOR(VT, WIDTH, SFX, EVEN, ODD)                                                   \
    for (; j < n; j++)                                                                              \
        o[j] = ((a[2 * j] + b[2 * j]) + (a[2 * j + 1] + b[2 * j + 1])) * s;                         \
}
#if defined(__AVX2__)
#define FC_PAIR_AVG_VECTOR(VT, WIDTH, SFX, EVEN, ODD)                                              \
    const VT vs = _mm256_set1_##SFX(s);                                                             \
    for (;;) {                                                                                      \
        if (j + WIDTH > n) {                                                                        \
            if (j == n || n < WIDTH)                                                                \
                break;                                                                              \
            j = n - WIDTH;                                                                          \
        }                                                                                           \
        VT v0 = _mm256_add_##SFX(_mm256_loadu_##SFX(a + 2 * j), _mm256_loadu_##SFX(b + 2 * j));     \
        VT v1 = _mm256_add_##SFX(_mm256_loadu_##SFX(a + 2 * j + WIDTH),                             \
                                 _mm256_loadu_##SFX(b + 2 * j + WIDTH));                            \
        VT r = _mm256_mul_##SFX(_mm256_add_##SFX(EVEN(v0, v1), ODD(v0, v1)), vs);                   \
        /* the pair sums come out as 64-bit chunks 0 2 1 3: one cross-lane permute */               \
        _mm256_storeu_##SFX(o + j, FC_CAST_##SFX(_mm256_permute4x64_pd(FC_TOPD_##SFX(r), 0xD8)));  \
        j += WIDTH;                                                                                 \
    }
#define FC_EVEN_ps(x, y) _mm256_shuffle_ps(x, y, 0x88)   /* 0 2 8 10 | 4 6 12 14 */
#define FC_ODD_ps(x, y) _mm256_shuffle_ps(x, y, 0xDD)    /* 1 3 9 11 | 5 7 13 15 */
#define FC_EVEN_pd(x, y) _mm256_unpacklo_pd(x, y)        /* 0 4 | 2 6 */
#define FC_ODD_pd(x, y) _mm256_unpackhi_pd(x, y)         /* 1 5 | 3 7 */
#define FC_TOPD_ps(x) _mm256_castps_pd(x)
#define FC_TOPD_pd(x) (x)
#define FC_CAST_ps(x) _mm256_castpd_ps(x)
#define FC_CAST_pd(x) (x)
#else
#define FC_PAIR_AVG_VECTOR(VT, WIDTH, SFX, EVEN, ODD)
#endif
FC_DEFINE_PAIR_AVG(fc_pair_avg_f, float, __m256, 8, ps, FC_EVEN_ps, FC_ODD_ps)
FC_DEFINE_PAIR_AVG(fc_pair_avg_d, double, __m256d, 4, pd, FC_EVEN_pd, FC_ODD_pd)

#if defined(__AVX2__)
/* r[i] <- column i of the 8 x 8 matrix whose rows are r[0..7] (in registers) */
static inline void fc_tr8x8_regs(__m256 *r)
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20); r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20); r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31); r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31); r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* o[j] = reduction of t[8j .. 8j+7] for j < m (sum times s, or max with the NaN rule), eight
 * outputs at a time through an in-register transpose; the values are combined in the same order
 * as the scalar loop (so the results are identical). Returns how many outputs it wrote. */
static inline ptrdiff_t fc_hreduce8_f(const float *t, float *o, ptrdiff_t m, int is_max, float s)
{
    ptrdiff_t j = 0;
    for (; j + 8 <= m; j += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; i++)
            r[i] = _mm256_loadu_ps(t + 8 * (j + i));
        fc_tr8x8_regs(r);
        __m256 acc = r[0];
        if (is_max) {
            __m256 nanm = _mm256_cmp_ps(acc, acc, _CMP_UNORD_Q);
            for (int i = 1; i < 8; i++) {
                nanm = _mm256_or_ps(nanm, _mm256_cmp_ps(r[i], r[i], _CMP_UNORD_Q));
                acc = _mm256_max_ps(r[i], acc);
            }
            _mm256_storeu_ps(o + j, _mm256_or_ps(acc, nanm));
        } else {
            for (int i = 1; i < 8; i++)
                acc = _mm256_add_ps(acc, r[i]);
            _mm256_storeu_ps(o + j, _mm256_mul_ps(acc, _mm256_set1_ps(s)));
        }
    }
    return j;
}
#endif

/* One output row of 2-D pooling over non-overlapping kh x kw blocks (stride = kernel, no padding):
 * the block's kh input rows (r, r + W, ...) are reduced column by column in registers into t
 * (n = OW * kw columns), then every kw adjacent values of t give one output. Max follows torch's
 * NaN rule (a NaN wins); averages are multiplied by s. */
#define FC_BLOCK_HORIZONTAL(T, j0, m)                                                              \
    for (ptrdiff_t j = (j0); j < (m); j++) {                                                        \
        T acc = t[j * kw];                                                                          \
        if (is_max) {                                                                               \
            /* branch-free: plain maximum plus a NaN flag (a data-dependent branch per value     \
               mispredicts half the time on random data) */                                      \
            int nan = acc != acc;                                                                   \
            for (ptrdiff_t b = 1; b < kw; b++) {                                                    \
                T v = t[j * kw + b];                                                                \
                acc = v > acc ? v : acc;                                                            \
                nan |= v != v;                                                                      \
            }                                                                                       \
            o[j] = nan ? (T)NAN : acc;                                                              \
        } else {                                                                                    \
            for (ptrdiff_t b = 1; b < kw; b++)                                                      \
                acc += t[j * kw + b];                                                               \
            o[j] = acc * s;                                                                         \
        }                                                                                           \
    }

#define FC_BLOCK_SCALAR_COLUMNS(T, j0)                                                             \
    for (ptrdiff_t j = (j0); j < n; j++) {                                                          \
        T acc = r[j];                                                                               \
        for (ptrdiff_t a = 1; a < kh; a++) {                                                        \
            T v = r[a * W + j];                                                                     \
            if (is_max)                                                                             \
                acc = (v > acc || v != v) ? v : acc;                                                \
            else                                                                                    \
                acc += v;                                                                           \
        }                                                                                           \
        t[j] = acc;                                                                                 \
    }

/* nrows consecutive output rows (their input rows r0, r0 + kh * W, ...; outputs contiguous from o;
 * t holds nrows * OW * kw values): columns of every row first, then one flat horizontal pass over
 * all nrows * OW outputs (t's rows are exactly kw values per output) */
#define FC_DEFINE_BLOCK_POOL(NAME, T, VT, WIDTH, SFX, S)                                            \
__attribute__((optimize("no-tree-vectorize")))                                                      \
static __attribute__((unused)) void NAME(const T *r0, T *o, T *t0, ptrdiff_t W, ptrdiff_t OW,       \
                 ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t nrows, int is_max, T s)                      \
{                                                                                                   \
    const ptrdiff_t n = OW * kw;                                                                    \
    for (ptrdiff_t q = 0; q < nrows; q++) {                                                         \
        const T *r = r0 + q * kh * W;                                                               \
        T *t = t0 + q * n;                                                                          \
        FC_BLOCK_COLUMNS(T, VT, WIDTH, SFX)                                                         \
    }                                                                                               \
    const T *t = t0;                                                                                \
    const ptrdiff_t m = nrows * OW;                                                                 \
    const ptrdiff_t jv = FC_HREDUCE_##S(t, o, m, is_max, s);                                        \
    FC_BLOCK_HORIZONTAL(T, jv, m)                                                                   \
}
#if defined(__AVX2__)
/* kw == 2: WIDTH outputs from 2 * WIDTH values by an even / odd split (as fc_pair_avg_*); the
 * maximum of a pair holding a NaN is NaN. Returns the number of outputs done. */
#define FC_DEFINE_HREDUCE2(NAME, T, VT, WIDTH, SFX, EVEN, ODD)                                      \
static inline ptrdiff_t NAME(const T *t, T *o, ptrdiff_t m, int is_max, T s)                        \
{                                                                                                   \
    const VT vs = _mm256_set1_##SFX(s);                                                             \
    ptrdiff_t j = 0;                                                                                \
    for (; j + WIDTH <= m; j += WIDTH) {                                                            \
        VT v0 = _mm256_loadu_##SFX(t + 2 * j), v1 = _mm256_loadu_##SFX(t + 2 * j + WIDTH);          \
        VT e = EVEN(v0, v1), d = ODD(v0, v1), r;                                                    \
        if (is_max)                                                                                 \
            r = _mm256_or_##SFX(_mm256_max_##SFX(d, e), _mm256_cmp_##SFX(e, d, _CMP_UNORD_Q));      \
        else                                                                                        \
            r = _mm256_mul_##SFX(_mm256_add_##SFX(e, d), vs);                                       \
        _mm256_storeu_##SFX(o + j, FC_CAST_##SFX(_mm256_permute4x64_pd(FC_TOPD_##SFX(r), 0xD8)));  \
    }                                                                                               \
    return j;                                                                                       \
}
FC_DEFINE_HREDUCE2(fc_hreduce2_f, float, __m256, 8, ps, FC_EVEN_ps, FC_ODD_ps)
FC_DEFINE_HREDUCE2(fc_hreduce2_d, double, __m256d, 4, pd, FC_EVEN_pd, FC_ODD_pd)
#define FC_HREDUCE_f(t, o, m, is_max, s)                                                           \
    (kw == 8 ? fc_hreduce8_f(t, o, m, is_max, s) : kw == 2 ? fc_hreduce2_f(t, o, m, is_max, s) : 0)
#define FC_HREDUCE_d(t, o, m, is_max, s) (kw == 2 ? fc_hreduce2_d(t, o, m, is_max, s) : 0)
#define FC_BLOCK_COLUMNS(T, VT, WIDTH, SFX)                                                         \
        if (n >= WIDTH) {                                                                           \
            for (ptrdiff_t j = 0;; j += WIDTH) {                                                    \
                if (j + WIDTH > n) {                                                                \
                    if (j == n)                                                                     \
                        break;                                                                      \
                    j = n - WIDTH;   /* overlapping tail vector */                                  \
                }                                                                                   \
                VT acc = _mm256_loadu_##SFX(r + j);                                                 \
                if (is_max) {                                                                       \
                    /* plain maximum, NaN lanes flagged on the side (off the dependency chain)   \
                       and set to NaN at the end (all bits set is a NaN) */                         \
                    VT nanm = _mm256_cmp_##SFX(acc, acc, _CMP_UNORD_Q);                             \
                    for (ptrdiff_t a = 1; a < kh; a++) {                                            \
                        VT v = _mm256_loadu_##SFX(r + a * W + j);                                   \
                        nanm = _mm256_or_##SFX(nanm, _mm256_cmp_##SFX(v, v, _CMP_UNORD_Q));        \
                        acc = _mm256_max_##SFX(v, acc);                                             \
                    }                                                                               \
                    acc = _mm256_or_##SFX(acc, nanm);                                               \
                } else {                                                                            \
                    for (ptrdiff_t a = 1; a < kh; a++)                                              \
                        acc = _mm256_add_##SFX(acc, _mm256_loadu_##SFX(r + a * W + j));             \
                }                                                                                   \
                _mm256_storeu_##SFX(t + j, acc);                                                    \
            }                                                                                       \
        } else {                                                                                    \
            FC_BLOCK_SCALAR_COLUMNS(T, 0)                                                           \
        }
FC_DEFINE_BLOCK_POOL(fc_block_pool_rows_f, float, __m256, 8, ps, f)
FC_DEFINE_BLOCK_POOL(fc_block_pool_rows_d, double, __m256d, 4, pd, d)
#else
#define FC_HREDUCE_f(t, o, m, is_max, s) 0
#define FC_HREDUCE_d(t, o, m, is_max, s) 0
#define FC_BLOCK_COLUMNS(T, VT, WIDTH, SFX) FC_BLOCK_SCALAR_COLUMNS(T, 0)
FC_DEFINE_BLOCK_POOL(fc_block_pool_rows_f, float, float, 8, ps, f)
FC_DEFINE_BLOCK_POOL(fc_block_pool_rows_d, double, double, 4, pd, d)
#endif

/* Output rows of a dense 3x3 stride-1 stencil with zero padding of at most one column per side:
 *   d0[j] = bv + sum_{a,b} w[3a+b] * r_a[j - pw + b]      (rows r0, r1, r2)
 *   d1[j] = bv + sum_{a,b} w[3a+b] * r_{a+1}[j - pw + b]  (rows r1, r2, r3; skipped when d1 == NULL)
 * for j in [0, OW); input columns outside [0, W) read as zero. Rows are the caller's (a zero row
 * stands in for padding rows). The nine weights stay in registers, each input vector is loaded once
 * for both output rows, two partial sums per row shorten the dependent FMA chains, the vectors at
 * the left / right edge use masked loads for the padding columns (no scalar border loop), and the
 * tail is one overlapping vector. Needs OW >= the vector width; otherwise (or without AVX2/FMA)
 * a plain loop. */
/* the pairs of output rows of a block (see fc_stencil3x3_block_*): the four input rows r0..r3 of
 * output rows d0 = r, d1 = r + 1 (NULL past the block), then PAIR */
#define FC_STENCIL_BLOCK_ROWS(T, PAIR)                                                              \
    for (ptrdiff_t r = 0; r < Rb; r += 2) {                                                         \
        const T *rr[4];                                                                             \
        for (int a_ = 0; a_ < 4; a_++) {                                                            \
            ptrdiff_t ih_ = oh0 + r - ph + a_;                                                      \
            rr[a_] = ih_ >= 0 && ih_ < H ? src + ih_ * ld : zero;                                   \
        }                                                                                           \
        const T *r0 = rr[0], *r1 = rr[1], *r2 = rr[2], *r3 = rr[3];                                 \
        T *d0 = dst + r * OW, *d1 = r + 1 < Rb ? d0 + OW : NULL;                                    \
        PAIR                                                                                        \
    }

#define FC_W_DECL(T) const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], \
                             w6 = w[6], w7 = w[7], w8 = w[8];

#define FC_STENCIL_SCALAR(T)                                                                       \
    {                                                                                               \
        FC_W_DECL(T)                                                                                \
        const T *rr[4] = {r0, r1, r2, r3};                                                          \
        T *dd[2] = {d0, d1};                                                                        \
        const T ww[9] = {w0, w1, w2, w3, w4, w5, w6, w7, w8};                                       \
        for (int k = 0; k < (d1 ? 2 : 1); k++)                                                      \
            for (ptrdiff_t j = 0; j < OW; j++) {                                                    \
                T acc = bv;                                                                         \
                for (int a = 0; a < 3; a++)                                                         \
                    for (int b = 0; b < 3; b++) {                                                   \
                        ptrdiff_t c = j - pw + b;                                                   \
                        if (c >= 0 && c < W)                                                        \
                            acc += ww[3 * a + b] * rr[k + a][c];                                    \
                    }                                                                               \
                dd[k][j] = acc;                                                                     \
            }                                                                                       \
    }

#if defined(__AVX2__) && defined(__FMA__)
/* one vector of both rows; LD(p, b) loads the 8 (or 4) columns for tap column b */
#define FC_STENCIL_BODY(VT, FMA, MUL, ADD, STOREU, LD)                                              \
    {                                                                                               \
        VT a = vb, b_ = vb, a2, b2, v;                                                              \
        a = FMA(w0, LD(r0, 0), a); a = FMA(w1, LD(r0, 1), a); a = FMA(w2, LD(r0, 2), a);            \
        if (d1) {                                                                                   \
            v = LD(r1, 0); a = FMA(w3, v, a); b_ = FMA(w0, v, b_);                                  \
            v = LD(r1, 1); a = FMA(w4, v, a); b_ = FMA(w1, v, b_);                                  \
            v = LD(r1, 2); a = FMA(w5, v, a); b_ = FMA(w2, v, b_);                                  \
            v = LD(r2, 0); a2 = MUL(w6, v); b_ = FMA(w3, v, b_);                                    \
            v = LD(r2, 1); a2 = FMA(w7, v, a2); b_ = FMA(w4, v, b_);                                \
            v = LD(r2, 2); a2 = FMA(w8, v, a2); b_ = FMA(w5, v, b_);                                \
            b2 = MUL(w6, LD(r3, 0)); b2 = FMA(w7, LD(r3, 1), b2); b2 = FMA(w8, LD(r3, 2), b2);      \
            STOREU(d1 + j, ADD(b_, b2));                                                            \
        } else {                                                                                    \
            a = FMA(w3, LD(r1, 0), a); a = FMA(w4, LD(r1, 1), a); a = FMA(w5, LD(r1, 2), a);        \
            a2 = MUL(w6, LD(r2, 0)); a2 = FMA(w7, LD(r2, 1), a2); a2 = FMA(w8, LD(r2, 2), a2);      \
        }                                                                                           \
        STOREU(d0 + j, ADD(a, a2));                                                                 \
    }

/* loads of one tap column b of the vector at column j: plain, or masked (lanes outside [0, W)) */
#define FC_LDU_ps(p, b) _mm256_loadu_ps((p) + j - pw + (b))
#define FC_LDM_ps(p, b) _mm256_maskload_ps((p) + j - pw + (b), m[b])
#define FC_LDU_pd(p, b) _mm256_loadu_pd((p) + j - pw + (b))
#define FC_LDM_pd(p, b) _mm256_maskload_pd((p) + j - pw + (b), m[b])

#define FC_STENCIL_WEIGHTS(VT, SFX)                                                                 \
    const VT w0 = _mm256_set1_##SFX(w[0]), w1 = _mm256_set1_##SFX(w[1]), w2 = _mm256_set1_##SFX(w[2]); \
    const VT w3 = _mm256_set1_##SFX(w[3]), w4 = _mm256_set1_##SFX(w[4]), w5 = _mm256_set1_##SFX(w[5]); \
    const VT w6 = _mm256_set1_##SFX(w[6]), w7 = _mm256_set1_##SFX(w[7]), w8 = _mm256_set1_##SFX(w[8]); \
    const VT vb = _mm256_set1_##SFX(bv);

#define FC_STENCIL_VEC(VT, SFX, LD)                                                                 \
    FC_STENCIL_BODY(VT, _mm256_fmadd_##SFX, _mm256_mul_##SFX, _mm256_add_##SFX, _mm256_storeu_##SFX, LD)

/* the vectors of one pair of output rows (d0, d1 from r0..r3); weights w0..w8, vb and the edge
   masks mL / mR in scope */
#define FC_STENCIL_ROW_PAIR(S, VT, WIDTH, SFX)                                                      \
    for (ptrdiff_t j = 0;; j += WIDTH) {                                                            \
        if (j + WIDTH > OW) {                                                                       \
            if (j == OW)                                                                            \
                break;                                                                              \
            j = OW - WIDTH;   /* the tail as one overlapping vector */                              \
        }                                                                                           \
        if (j - pw >= 0 && j - pw + WIDTH + 1 < W) {                                                \
            FC_STENCIL_VEC(VT, SFX, FC_LDU_##SFX)                                                   \
        } else if (j == 0 || j == OW - WIDTH) {                                                     \
            /* the usual edge vectors (first and last): masks computed once */                      \
            const __m256i *m = j == 0 ? mL : mR;                                                    \
            FC_STENCIL_VEC(VT, SFX, FC_LDM_##SFX)                                                   \
        } else {                                                                                    \
            fc_stencil3x3_edge_##S(d0, d1, r0, r1, r2, r3, j, W, pw, w, bv);                        \
        }                                                                                           \
    }

/* S: f / d; the lane masks use 32- or 64-bit integer lanes (SET1I, CMPGT, ADDI, IOTA); the float
 * version keeps W below 2**31 for its 32-bit lane columns (else the plain loop) */
#define FC_DEFINE_STENCIL3X3(S, T, VT, WIDTH, SFX, SET1I, CMPGT, ADDI, IOTA, WMAX)                  \
/* lane masks of the three tap columns of a vector whose first input column is c0: lanes whose    \
   column lies in [0, W) */                                                                         \
static inline void fc_edge_masks_##S(ptrdiff_t c0, ptrdiff_t W, __m256i *m)                         \
{                                                                                                   \
    const __m256i zero = _mm256_setzero_si256(), vW = SET1I(W), one = SET1I(1);                     \
    __m256i c = ADDI(SET1I(c0), IOTA);                                                              \
    for (int b = 0; b < 3; b++) {                                                                   \
        m[b] = _mm256_andnot_si256(CMPGT(zero, c), CMPGT(vW, c));                                   \
        c = ADDI(c, one);                                                                           \
    }                                                                                               \
}                                                                                                   \
/* one edge vector at column j (other than the first and the last): masked loads, kept out of     \
   line so the interior loop keeps its weights in registers */                                     \
static __attribute__((noinline, unused)) void fc_stencil3x3_edge_##S(T *d0, T *d1, const T *r0,             \
        const T *r1, const T *r2, const T *r3, ptrdiff_t j, ptrdiff_t W, ptrdiff_t pw,              \
        const T *w, T bv)                                                                           \
{                                                                                                   \
    FC_STENCIL_WEIGHTS(VT, SFX)                                                                     \
    __m256i m[3];                                                                                   \
    fc_edge_masks_##S(j - pw, W, m);                                                                \
    FC_STENCIL_VEC(VT, SFX, FC_LDM_##SFX)                                                           \
}                                                                                                   \
/* output rows [0, Rb) of a block: output row r reads input rows oh0 + r - ph + a (a < 3) of src   \
   (ld apart; rows outside [0, H) read as ``zero``), two output rows per pass. Weights and edge     \
   masks are set up once per block, not per pair of rows (small planes: ~15% of the time); rows   \
   narrower than a vector (or wider than 32-bit lanes can index) take the plain loop. */           \
static __attribute__((noinline, unused)) void fc_stencil3x3_block_##S(T *dst, ptrdiff_t OW,          \
        const T *src, ptrdiff_t ld, ptrdiff_t H, const T *zero, ptrdiff_t ph, ptrdiff_t oh0,        \
        ptrdiff_t Rb, ptrdiff_t W, ptrdiff_t pw, const T *w, T bv)                                  \
{                                                                                                   \
    FC_STENCIL_WEIGHTS(VT, SFX)                                                                     \
    __m256i mL[3], mR[3];                                                                           \
    const int vec = OW >= WIDTH && W <= WMAX;                                                       \
    if (vec) {                                                                                      \
        fc_edge_masks_##S(-pw, W, mL);                                                              \
        fc_edge_masks_##S(OW - WIDTH - pw, W, mR);                                                  \
    }                                                                                               \
    FC_STENCIL_BLOCK_ROWS(T, if (vec) { FC_STENCIL_ROW_PAIR(S, VT, WIDTH, SFX) }                    \
                             else FC_STENCIL_SCALAR(T))                                             \
}
#define FC_SET1_EPI32(v) _mm256_set1_epi32((int)(v))
#define FC_SET1_EPI64(v) _mm256_set1_epi64x((long long)(v))
FC_DEFINE_STENCIL3X3(f, float, __m256, 8, ps, FC_SET1_EPI32, _mm256_cmpgt_epi32, _mm256_add_epi32,
                     _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), 0x7fffff00)
FC_DEFINE_STENCIL3X3(d, double, __m256d, 4, pd, FC_SET1_EPI64, _mm256_cmpgt_epi64, _mm256_add_epi64,
                     _mm256_setr_epi64x(0, 1, 2, 3), PTRDIFF_MAX)
#else
#define FC_DEFINE_STENCIL_BLOCK_PLAIN(S, T)                                                         \
static __attribute__((unused)) void fc_stencil3x3_block_##S(T *dst, ptrdiff_t OW, const T *src,      \
        ptrdiff_t ld, ptrdiff_t H, const T *zero, ptrdiff_t ph, ptrdiff_t oh0, ptrdiff_t Rb,        \
        ptrdiff_t W, ptrdiff_t pw, const T *w, T bv)                                                \
{                                                                                                   \
    FC_STENCIL_BLOCK_ROWS(T, FC_STENCIL_SCALAR(T))                                                  \
}
FC_DEFINE_STENCIL_BLOCK_PLAIN(f, float)
FC_DEFINE_STENCIL_BLOCK_PLAIN(d, double)
#endif
/* b[s * ldb + r] = a[r * lda + s] (+ bias[s] when bias != NULL) for r < R, s < S: an out-of-place
 * transpose by 8 x 8 (float) / 4 x 4 (double) register tiles. Columns of ``a`` go in blocks of SB
 * so the block of ``b`` being filled stays in cache across the passes over ``a``'s rows; a plain
 * loop over one row at a time read power-of-two strides (16 KB for 4096-wide planes) that thrash
 * the L1 sets. Edges are scalar. */
#define FC_TRANSPOSE_SB 256
#define FC_TRANSPOSE_SCALAR(T, rlo, rhi, slo, shi)                                                  \
    for (ptrdiff_t r = (rlo); r < (rhi); r++)                                                       \
        for (ptrdiff_t s = (slo); s < (shi); s++)                                                   \
            b[s * ldb + r] = a[r * lda + s] + (bias ? bias[s] : (T)0);

#if defined(__AVX2__)
static inline void fc_tr8x8_f(const float *a, ptrdiff_t lda, float *b, ptrdiff_t ldb,
                              const float *bias)
{
    __m256 c[8];
    for (int i = 0; i < 8; i++)
        c[i] = _mm256_loadu_ps(a + i * lda);
    fc_tr8x8_regs(c);
    for (int i = 0; i < 8; i++)
        _mm256_storeu_ps(b + i * ldb, bias ? _mm256_add_ps(c[i], _mm256_set1_ps(bias[i])) : c[i]);
}

static inline void fc_tr4x4_d(const double *a, ptrdiff_t lda, double *b, ptrdiff_t ldb,
                              const double *bias)
{
    __m256d r0 = _mm256_loadu_pd(a), r1 = _mm256_loadu_pd(a + lda);
    __m256d r2 = _mm256_loadu_pd(a + 2 * lda), r3 = _mm256_loadu_pd(a + 3 * lda);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    __m256d c[4];
    c[0] = _mm256_permute2f128_pd(t0, t2, 0x20); c[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    c[2] = _mm256_permute2f128_pd(t0, t2, 0x31); c[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
    for (int i = 0; i < 4; i++)
        _mm256_storeu_pd(b + i * ldb, bias ? _mm256_add_pd(c[i], _mm256_set1_pd(bias[i])) : c[i]);
}
#define FC_TILE_F(a, lda, b, ldb, bias) fc_tr8x8_f(a, lda, b, ldb, bias)
#define FC_TILE_D(a, lda, b, ldb, bias) fc_tr4x4_d(a, lda, b, ldb, bias)
#define FC_TW_F 8
#define FC_TW_D 4
#else
#define FC_TW_F 1
#define FC_TW_D 1
#define FC_TILE_F(a, lda, b, ldb, bias) (*(b) = *(a) + ((bias) ? *(bias) : 0.0f))
#define FC_TILE_D(a, lda, b, ldb, bias) (*(b) = *(a) + ((bias) ? *(bias) : 0.0))
#endif

#define FC_DEFINE_TRANSPOSE(NAME, T, TW, TILE)                                                      \
static __attribute__((unused)) void NAME(const T *a, ptrdiff_t lda, T *b, ptrdiff_t ldb, ptrdiff_t R, ptrdiff_t S,          \
                 const T *bias)                                                                     \
{                                                                                                   \
    const ptrdiff_t R8 = R - R % TW, S8 = S - S % TW;                                               \
    for (ptrdiff_t sb = 0; sb < S8; sb += FC_TRANSPOSE_SB) {                                        \
        const ptrdiff_t se = sb + FC_TRANSPOSE_SB < S8 ? sb + FC_TRANSPOSE_SB : S8;                 \
        for (ptrdiff_t r = 0; r < R8; r += TW)                                                      \
            for (ptrdiff_t s = sb; s < se; s += TW)                                                 \
                TILE(a + r * lda + s, lda, b + s * ldb + r, ldb, bias ? bias + s : (const T *)0);   \
    }                                                                                               \
    FC_TRANSPOSE_SCALAR(T, R8, R, 0, S)                                                             \
    FC_TRANSPOSE_SCALAR(T, 0, R8, S8, S)                                                            \
}
FC_DEFINE_TRANSPOSE(fc_transpose_f, float, FC_TW_F, FC_TILE_F)
FC_DEFINE_TRANSPOSE(fc_transpose_d, double, FC_TW_D, FC_TILE_D)

/* Maximum (torch's rule: a NaN anywhere wins) and sum of n values, in one pass with four vector
 * accumulators each: the running sum flags a NaN (it becomes NaN); then the max is redone with the
 * NaN rule, which only happens for data holding a NaN (or both infinities). */
#define FC_DEFINE_PLANE_MAX(NAME, T, VT, WIDTH, SFX)                                                \
static __attribute__((unused)) T NAME(const T *a, ptrdiff_t n)                                                              \
{                                                                                                   \
    T m = -INFINITY, tot = 0;                                                                       \
    ptrdiff_t i = 0;                                                                                \
    FC_PLANE_MAX_VECTOR(T, VT, WIDTH, SFX)                                                          \
    for (; i < n; i++) {                                                                            \
        m = a[i] > m ? a[i] : m;                                                                    \
        tot += a[i];                                                                                \
    }                                                                                               \
    if (tot != tot) {                                                                               \
        m = -INFINITY;                                                                              \
        for (i = 0; i < n; i++)                                                                     \
            if (a[i] > m || a[i] != a[i]) {                                                         \
                m = a[i];                                                                           \
                if (m != m)                                                                         \
                    break;                                                                          \
            }                                                                                       \
    }                                                                                               \
    return m;                                                                                       \
}
#if defined(__AVX2__)
#define FC_PLANE_MAX_VECTOR(T, VT, WIDTH, SFX)                                                     \
    if (n >= 4 * WIDTH) {                                                                           \
        VT m0 = _mm256_set1_##SFX(-INFINITY), m1 = m0, m2 = m0, m3 = m0;                            \
        VT s0 = _mm256_setzero_##SFX(), s1 = s0, s2 = s0, s3 = s0;                                  \
        for (; i + 4 * WIDTH <= n; i += 4 * WIDTH) {                                                \
            VT v0 = _mm256_loadu_##SFX(a + i), v1 = _mm256_loadu_##SFX(a + i + WIDTH);              \
            VT v2 = _mm256_loadu_##SFX(a + i + 2 * WIDTH), v3 = _mm256_loadu_##SFX(a + i + 3 * WIDTH); \
            m0 = _mm256_max_##SFX(v0, m0); m1 = _mm256_max_##SFX(v1, m1);                          \
            m2 = _mm256_max_##SFX(v2, m2); m3 = _mm256_max_##SFX(v3, m3);                          \
            s0 = _mm256_add_##SFX(s0, v0); s1 = _mm256_add_##SFX(s1, v1);                          \
            s2 = _mm256_add_##SFX(s2, v2); s3 = _mm256_add_##SFX(s3, v3);                          \
        }                                                                                           \
        T mb[WIDTH], sb[WIDTH];                                                                     \
        _mm256_storeu_##SFX(mb, _mm256_max_##SFX(_mm256_max_##SFX(m0, m1), _mm256_max_##SFX(m2, m3))); \
        _mm256_storeu_##SFX(sb, _mm256_add_##SFX(_mm256_add_##SFX(s0, s1), _mm256_add_##SFX(s2, s3))); \
        for (int l = 0; l < WIDTH; l++) {                                                           \
            m = mb[l] > m ? mb[l] : m;                                                              \
            tot += sb[l];                                                                           \
        }                                                                                           \
    }
FC_DEFINE_PLANE_MAX(fc_plane_max_f, float, __m256, 8, ps)
FC_DEFINE_PLANE_MAX(fc_plane_max_d, double, __m256d, 4, pd)
#else
#define FC_PLANE_MAX_VECTOR(T, VT, WIDTH, SFX)
FC_DEFINE_PLANE_MAX(fc_plane_max_f, float, float, 8, ps)
FC_DEFINE_PLANE_MAX(fc_plane_max_d, double, double, 4, pd)
#endif

/* Argmax helpers of max pooling with indices (NaN-free data; _pool.pyx _argmax_rows). Written with
 * explicit blends: GCC if-converts "a[i] = c ? v : a[i]" into masked stores, which AMD cores
 * execute slowly (microcoded), and made this path ~10x slower than torch. */

/* the scalar forms (tails of the float versions, all of the double ones) */
#define FC_ARGMAX_VERT_SCALAR(T, w0)                                                                \
    for (ptrdiff_t w_ = (w0); w_ < W; w_++) {                                                       \
        T m = first ? row0[w_] : av[w_];                                                            \
        int mr = first ? rown0 : ar[w_];                                                            \
        nan |= row0[w_] != row0[w_];                                                                \
        for (int b = first ? 1 : 0; b < nrows; b++) {                                               \
            T v = row0[b * rstride + w_];                                                           \
            int c = v > m;                                                                          \
            nan |= v != v;                                                                          \
            m = c ? v : m;                                                                          \
            mr = c ? rown0 + b * rstep : mr;                                                        \
        }                                                                                           \
        av[w_] = m;                                                                                 \
        ar[w_] = mr;                                                                                \
    }
#define FC_ARGMAX_HORIZ_SCALAR(T, ow0)                                                              \
    for (ptrdiff_t o_ = (ow0); o_ < hi; o_++) {                                                     \
        ptrdiff_t j = st * o_ + off;                                                                \
        T m = av[j];                                                                                \
        int mr = ar[j], mc = (int)j;                                                                \
        for (ptrdiff_t kw = 1; kw < KW; kw++) {                                                     \
            ptrdiff_t jj = j + kw * dw;                                                             \
            T v = av[jj];                                                                           \
            int r = ar[jj];                                                                         \
            int c = (v > m) | ((v == m) & (r < mr));                                                \
            m = c ? v : m;                                                                          \
            mr = c ? r : mr;                                                                        \
            mc = c ? (int)jj : mc;                                                                  \
        }                                                                                           \
        ov[o_] = m;                                                                                 \
        if (idx) {                                                                                  \
            idx[o_] = (int64_t)mr * W + mc;                                                         \
        } else {                                                                                    \
            orr[o_] = mr;                                                                           \
            oc[o_] = mc;                                                                            \
        }                                                                                           \
    }

/* per column: the maximum over ``nrows`` window rows (row b at row0 + b * rstride, row number
 * rown0 + b * rstep) and the first row reaching it (strict >), kept in registers across the rows
 * and merged into av / ar (``first``: av / ar start from these rows). Returns nonzero when the rows
 * hold a NaN (the caller then takes the NaN-aware path). */
__attribute__((optimize("no-tree-vectorize"), unused))
static int fc_argmax_vert_f(const float *row0, ptrdiff_t rstride, int nrows, int rown0, int rstep,
                            float *av, int *ar, ptrdiff_t W, int first)
{
    ptrdiff_t w = 0;
    int nan = 0;
#if defined(__AVX2__)
    __m256 nanm = _mm256_setzero_ps();
    for (; w + 8 <= W; w += 8) {
        __m256 m, mr;
        int b0;
        if (first) {
            m = _mm256_loadu_ps(row0 + w);
            mr = _mm256_castsi256_ps(_mm256_set1_epi32(rown0));
            nanm = _mm256_or_ps(nanm, _mm256_cmp_ps(m, m, _CMP_UNORD_Q));
            b0 = 1;
        } else {
            m = _mm256_loadu_ps(av + w);
            mr = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(ar + w)));
            b0 = 0;
        }
        for (int b = b0; b < nrows; b++) {
            __m256 v = _mm256_loadu_ps(row0 + b * rstride + w);
            __m256 c = _mm256_cmp_ps(v, m, _CMP_GT_OQ);
            nanm = _mm256_or_ps(nanm, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            m = _mm256_blendv_ps(m, v, c);
            mr = _mm256_blendv_ps(mr, _mm256_castsi256_ps(_mm256_set1_epi32(rown0 + b * rstep)), c);
        }
        _mm256_storeu_ps(av + w, m);
        _mm256_storeu_si256((__m256i *)(ar + w), _mm256_castps_si256(mr));
    }
    nan = _mm256_movemask_ps(nanm);
#endif
    FC_ARGMAX_VERT_SCALAR(float, w)
    return nan;
}

/* interior windows [lo, hi): window ow's taps are columns st * ow + off + kw * dw; the winner is
 * the largest value, then the smallest row, then the first column (torch's row-major scan) */
#if defined(__AVX2__)
/* p[0], p[2], ..., p[14] in the lane order 0 1 4 5 2 3 6 7 (in-lane shuffle only; the caller
 * restores the order once per result instead of once per load) */
static inline __m256 fc_even8_lanes_ps(const float *p)
{
    return _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), 0x88);
}

static inline __m256 fc_unswap_ps(__m256 x)    /* lane order 0 1 4 5 2 3 6 7 -> 0 .. 7 */
{
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(x), 0xD8));
}
#endif

/* With ``idx`` (flat plane indices, when they fit 32 bits) the winners' row * W + column go
 * straight to it as int64; otherwise rows and columns go to orr / oc. */
__attribute__((optimize("no-tree-vectorize"), unused))
static void fc_argmax_horiz_f(const float *av, const int *ar, float *ov, int *orr, int *oc,
                              ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t st, ptrdiff_t off, ptrdiff_t dw,
                              ptrdiff_t KW, int64_t *idx, ptrdiff_t W)
{
    ptrdiff_t ow = lo;
#if defined(__AVX2__)
    if ((st == 1 || st == 2) && hi - lo >= 8) {
        const __m256i lane = st == 1 ? _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
                                     : _mm256_setr_epi32(0, 2, 8, 10, 4, 6, 12, 14);
        const __m256i vW = _mm256_set1_epi32((int)W);
        for (;;) {
            if (ow + 8 > hi) {
                if (ow == hi)
                    break;
                ow = hi - 8;   /* overlapping tail vector */
            }
            __m256 m = _mm256_setzero_ps(), mr = m, mc = m;
            for (ptrdiff_t kw = 0; kw < KW; kw++) {
                ptrdiff_t j = st * ow + off + kw * dw;
                __m256 v, r;
                if (st == 1) {
                    v = _mm256_loadu_ps(av + j);
                    r = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(ar + j)));
                } else {
                    v = fc_even8_lanes_ps(av + j);
                    r = fc_even8_lanes_ps((const float *)(ar + j));
                }
                __m256 col = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_set1_epi32((int)j), lane));
                if (kw == 0) {
                    m = v; mr = r; mc = col;
                    continue;
                }
                __m256 gt = _mm256_cmp_ps(v, m, _CMP_GT_OQ);
                __m256 tie = _mm256_and_ps(_mm256_cmp_ps(v, m, _CMP_EQ_OQ), _mm256_castsi256_ps(
                    _mm256_cmpgt_epi32(_mm256_castps_si256(mr), _mm256_castps_si256(r))));
                __m256 c = _mm256_or_ps(gt, tie);
                m = _mm256_blendv_ps(m, v, c);
                mr = _mm256_blendv_ps(mr, r, c);
                mc = _mm256_blendv_ps(mc, col, c);
            }
            if (st == 2) {
                m = fc_unswap_ps(m); mr = fc_unswap_ps(mr); mc = fc_unswap_ps(mc);
            }
            _mm256_storeu_ps(ov + ow, m);
            if (idx) {
                __m256i flat = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_castps_si256(mr), vW),
                                                _mm256_castps_si256(mc));
                _mm256_storeu_si256((__m256i *)(idx + ow),
                                    _mm256_cvtepi32_epi64(_mm256_castsi256_si128(flat)));
                _mm256_storeu_si256((__m256i *)(idx + ow + 4),
                                    _mm256_cvtepi32_epi64(_mm256_extracti128_si256(flat, 1)));
            } else {
                _mm256_storeu_si256((__m256i *)(orr + ow), _mm256_castps_si256(mr));
                _mm256_storeu_si256((__m256i *)(oc + ow), _mm256_castps_si256(mc));
            }
            ow += 8;
        }
        return;
    }
#endif
    FC_ARGMAX_HORIZ_SCALAR(float, ow)
}

/* double: the same rules in scalar, branch-free code (no masked stores either) */
__attribute__((optimize("no-tree-vectorize"), unused))
static int fc_argmax_vert_d(const double *row0, ptrdiff_t rstride, int nrows, int rown0, int rstep,
                            double *av, int *ar, ptrdiff_t W, int first)
{
    int nan = 0;
    FC_ARGMAX_VERT_SCALAR(double, 0)
    return nan;
}

__attribute__((optimize("no-tree-vectorize"), unused))
static void fc_argmax_horiz_d(const double *av, const int *ar, double *ov, int *orr, int *oc,
                              ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t st, ptrdiff_t off, ptrdiff_t dw,
                              ptrdiff_t KW, int64_t *idx, ptrdiff_t W)
{
    FC_ARGMAX_HORIZ_SCALAR(double, lo)
}

/* NaN path of max pooling with indices: merge one window row's horizontal argmax (hv, hc) into the
 * running result in scan order (a larger value or a NaN replaces it). Scalar and branch-free: the
 * vectoriser would turn the conditional updates into masked stores (slow on AMD). */
#define FC_DEFINE_ARGMAX_MERGE(NAME, T)                                                             \
__attribute__((optimize("no-tree-vectorize"), unused))                                              \
static void NAME(const T *hv, const int *hc, T *ov, int *oc, int *orr, ptrdiff_t n, int rown,       \
                 int first)                                                                         \
{                                                                                                   \
    for (ptrdiff_t i = 0; i < n; i++) {                                                             \
        T v = hv[i], m = ov[i];                                                                     \
        int c = first | (v > m) | (v != v);                                                         \
        ov[i] = c ? v : m;                                                                          \
        oc[i] = c ? hc[i] : oc[i];                                                                  \
        orr[i] = c ? rown : orr[i];                                                                 \
    }                                                                                               \
}
FC_DEFINE_ARGMAX_MERGE(fc_argmax_merge_f, float)
FC_DEFINE_ARGMAX_MERGE(fc_argmax_merge_d, double)



/* Global pooling of small planes (ResNet's 7x7 head: thousands of 49-element planes). One plane at
 * a time costs a dependency chain per plane and a horizontal fold; this takes a group of planes
 * (8 floats / 4 doubles, one vector register each), accumulates each plane in its own register
 * and folds the group's registers together into one vector of results by a transpose tree. The
 * last n % WIDTH elements come from the plane's last whole vector (its lanes already counted masked
 * out of a sum), or, in a plane shorter than a vector, from a masked load. Plane i of the group
 * starts at a + i * n; only the first ``cnt`` are real (the others re-read plane 0), and every plane
 * gets the same arithmetic whatever its group, so a result does not depend on the batch or the
 * thread count. out[i] = mean (is_max = 0: the sum divided by n) or maximum (is_max = 1) of plane
 * i, i < cnt. Returns 1 when a maximum met a NaN (max_ps drops it), for the caller to redo those
 * planes with torch's rule. */
#if defined(__AVX2__)
#define FC_GROUP_ACC(J, SFX)                                                                        \
    { __typeof__(acc0) v_ = _mm256_loadu_##SFX(p##J + i);                                          \
      acc##J = is_max ? _mm256_max_##SFX(acc##J, v_) : _mm256_add_##SFX(acc##J, v_);               \
      nan = _mm256_or_##SFX(nan, _mm256_cmp_##SFX(v_, v_, _CMP_UNORD_Q)); }
#define FC_GROUP_TAIL(J, SFX)                                                                       \
    { __typeof__(acc0) v_ = _mm256_maskload_##SFX(p##J + full, mask);                              \
      v_ = is_max ? _mm256_blendv_##SFX(ninf, v_, maskv) : v_;                                      \
      acc##J = is_max ? _mm256_max_##SFX(acc##J, v_) : _mm256_add_##SFX(acc##J, v_);               \
      nan = _mm256_or_##SFX(nan, _mm256_cmp_##SFX(v_, v_, _CMP_UNORD_Q)); }
#define FC_GROUP_LAST(J, SFX)                                                                       \
    { __typeof__(acc0) v_ = _mm256_loadu_##SFX(p##J + n - width_);                                  \
      acc##J = is_max ? _mm256_max_##SFX(acc##J, v_)                                                \
                      : _mm256_add_##SFX(acc##J, _mm256_andnot_##SFX(keep, v_));                    \
      nan = _mm256_or_##SFX(nan, _mm256_cmp_##SFX(v_, v_, _CMP_UNORD_Q)); }
#define FC_DEFINE_PLANE_GROUP(NAME, T, VT, WIDTH, SFX, ITYPE, SETMASK, FOLD)                        \
static inline __attribute__((always_inline))                                                        \
int NAME##_impl(const T *a, ptrdiff_t n, int cnt, const int is_max, T *out)                         \
{                                                                                                   \
    const T *p0 = a, *p1, *p2, *p3, *p4, *p5, *p6, *p7;                                             \
    p1 = cnt > 1 ? a + n : a; p2 = cnt > 2 ? a + 2 * n : a; p3 = cnt > 3 ? a + 3 * n : a;           \
    p4 = cnt > 4 ? a + 4 * n : a; p5 = cnt > 5 ? a + 5 * n : a; p6 = cnt > 6 ? a + 6 * n : a;       \
    p7 = cnt > 7 ? a + 7 * n : a;                                                                   \
    (void)p4; (void)p5; (void)p6; (void)p7;                                                         \
    VT ninf = _mm256_set1_##SFX(-INFINITY), zero = _mm256_setzero_##SFX();                          \
    VT init = is_max ? ninf : zero, nan = zero;                                                     \
    VT acc0 = init, acc1 = init, acc2 = init, acc3 = init;                                          \
    VT acc4 = init, acc5 = init, acc6 = init, acc7 = init;                                          \
    (void)acc4; (void)acc5; (void)acc6; (void)acc7;                                                 \
    const ptrdiff_t width_ = WIDTH, full = n - n % WIDTH;                                           \
    ptrdiff_t i;                                                                                    \
    for (i = 0; i < full; i += WIDTH) {                                                             \
        FC_GROUP_ACC(0, SFX) FC_GROUP_ACC(1, SFX) FC_GROUP_ACC(2, SFX) FC_GROUP_ACC(3, SFX)                             \
        if (WIDTH == 8) { FC_GROUP_ACC(4, SFX) FC_GROUP_ACC(5, SFX) FC_GROUP_ACC(6, SFX) FC_GROUP_ACC(7, SFX) }         \
    }                                                                                               \
    if (full < n && n >= WIDTH) {                                                                   \
        /* the plane's last vector, its first WIDTH - n % WIDTH lanes already counted: a maximum     \
         * may see them twice, a sum masks them out */                                              \
        VT keep = _mm256_castsi256_##SFX(SETMASK(WIDTH - (n - full)));                              \
        FC_GROUP_LAST(0, SFX) FC_GROUP_LAST(1, SFX) FC_GROUP_LAST(2, SFX) FC_GROUP_LAST(3, SFX)                         \
        if (WIDTH == 8) { FC_GROUP_LAST(4, SFX) FC_GROUP_LAST(5, SFX) FC_GROUP_LAST(6, SFX) FC_GROUP_LAST(7, SFX) }     \
    } else if (full < n) {                                                                          \
        /* planes shorter than a vector: a masked load (no access past the array's end) */         \
        ITYPE mask = SETMASK(n - full);                                                             \
        VT maskv = _mm256_castsi256_##SFX(mask);                                                    \
        FC_GROUP_TAIL(0, SFX) FC_GROUP_TAIL(1, SFX) FC_GROUP_TAIL(2, SFX) FC_GROUP_TAIL(3, SFX)                         \
        if (WIDTH == 8) { FC_GROUP_TAIL(4, SFX) FC_GROUP_TAIL(5, SFX) FC_GROUP_TAIL(6, SFX) FC_GROUP_TAIL(7, SFX) }     \
    }                                                                                               \
    VT res;                                                                                         \
    if (is_max) { FOLD(_mm256_max_##SFX) }                                                         \
    else { FOLD(_mm256_add_##SFX) res = _mm256_div_##SFX(res, _mm256_set1_##SFX((T)n)); }           \
    T buf[WIDTH];                                                                                   \
    _mm256_storeu_##SFX(buf, res);                                                                  \
    for (int l = 0; l < cnt; l++)                                                                   \
        out[l] = buf[l];                                                                            \
    return is_max && !_mm256_testz_si256(_mm256_cast##SFX##_si256(nan), _mm256_cast##SFX##_si256(nan)); \
}                                                                                                   \
static __attribute__((unused)) int NAME(const T *a, ptrdiff_t n, int cnt, int is_max, T *out)        \
{                                                                                                   \
    return is_max ? NAME##_impl(a, n, cnt, 1, out) : NAME##_impl(a, n, cnt, 0, out);                \
}
/* first r lanes set */
static inline __m256i fc_mask8(ptrdiff_t r)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256i fc_mask4(ptrdiff_t r)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(r), _mm256_setr_epi64x(0, 1, 2, 3));
}
/* 8 registers -> one of their 8 totals: pairs of registers by unpack, then pairs of pairs, then the
 * two 128-bit halves */
#define FC_FOLD8(OP)                                                                                \
    {                                                                                               \
        __typeof__(acc0) t01 = OP(_mm256_unpacklo_ps(acc0, acc1), _mm256_unpackhi_ps(acc0, acc1));                \
        __typeof__(acc0) t23 = OP(_mm256_unpacklo_ps(acc2, acc3), _mm256_unpackhi_ps(acc2, acc3));                \
        __typeof__(acc0) t45 = OP(_mm256_unpacklo_ps(acc4, acc5), _mm256_unpackhi_ps(acc4, acc5));                \
        __typeof__(acc0) t67 = OP(_mm256_unpacklo_ps(acc6, acc7), _mm256_unpackhi_ps(acc6, acc7));                \
        __typeof__(acc0) s03 = OP(_mm256_shuffle_ps(t01, t23, 0x44), _mm256_shuffle_ps(t01, t23, 0xEE));          \
        __typeof__(acc0) s47 = OP(_mm256_shuffle_ps(t45, t67, 0x44), _mm256_shuffle_ps(t45, t67, 0xEE));          \
        res = OP(_mm256_permute2f128_ps(s03, s47, 0x20), _mm256_permute2f128_ps(s03, s47, 0x31));   \
    }
#define FC_FOLD4(OP)                                                                                \
    {                                                                                               \
        __typeof__(acc0) t01 = OP(_mm256_unpacklo_pd(acc0, acc1), _mm256_unpackhi_pd(acc0, acc1));                \
        __typeof__(acc0) t23 = OP(_mm256_unpacklo_pd(acc2, acc3), _mm256_unpackhi_pd(acc2, acc3));                \
        res = OP(_mm256_permute2f128_pd(t01, t23, 0x20), _mm256_permute2f128_pd(t01, t23, 0x31));   \
    }
FC_DEFINE_PLANE_GROUP(fc_plane_group_f, float, __m256, 8, ps, __m256i, fc_mask8, FC_FOLD8)
FC_DEFINE_PLANE_GROUP(fc_plane_group_d, double, __m256d, 4, pd, __m256i, fc_mask4, FC_FOLD4)
#else
/* without AVX2: the same association in plain C (lane l of a plane sums elements l, l + W, ... of
 * its whole vectors, then the last n % W elements in the lanes the plane's last vector puts them
 * in; the lanes are folded as the vector tree folds them) */
#define FC_DEFINE_PLANE_GROUP(NAME, T, WIDTH)                                                       \
static __attribute__((unused)) int NAME(const T *a, ptrdiff_t n, int cnt, int is_max, T *out)        \
{                                                                                                   \
    int nan = 0;                                                                                    \
    for (int g = 0; g < cnt; g++) {                                                                 \
        const T *p = a + g * n;                                                                     \
        T lane[WIDTH];                                                                              \
        for (int l = 0; l < WIDTH; l++)                                                             \
            lane[l] = is_max ? -INFINITY : 0;                                                       \
        ptrdiff_t full = n - n % WIDTH, shift = n >= WIDTH ? n - WIDTH : full;                     \
        for (ptrdiff_t i = 0; i < n; i++) {                                                         \
            T v = p[i];                                                                             \
            int l = (int)(i < full ? i % WIDTH : i - shift);                                        \
            nan |= v != v;                                                                          \
            lane[l] = is_max ? (v > lane[l] ? v : lane[l]) : lane[l] + v;                           \
        }                                                                                           \
        FC_FOLD_LANES_##WIDTH                                                                       \
        out[g] = is_max ? lane[0] : lane[0] / (T)n;                                                 \
    }                                                                                               \
    return is_max && nan;                                                                           \
}
#define FC_OP2(x, y) (is_max ? ((y) > (x) ? (y) : (x)) : (x) + (y))
/* the vector folds' association: 8 lanes (e0+e2)+(e1+e3) per half, then the halves */
#define FC_FOLD_LANES_8                                                                             \
    { __typeof__(lane[0]) lo = FC_OP2(FC_OP2(lane[0], lane[2]), FC_OP2(lane[1], lane[3]));                          \
      __typeof__(lane[0]) hi = FC_OP2(FC_OP2(lane[4], lane[6]), FC_OP2(lane[5], lane[7]));                          \
      lane[0] = FC_OP2(lo, hi); }
#define FC_FOLD_LANES_4                                                                             \
    { lane[0] = FC_OP2(FC_OP2(lane[0], lane[1]), FC_OP2(lane[2], lane[3])); }
FC_DEFINE_PLANE_GROUP(fc_plane_group_f, float, 8)
FC_DEFINE_PLANE_GROUP(fc_plane_group_d, double, 4)
#endif

/* ---------------------------------------------------------------------------------------------
 * Pooling of small planes by groups of planes: a group of L planes (8 floats / 4 doubles) is
 * transposed into a tile whose element e holds the L planes' values side by side (one vector), so
 * every window tap is one vector operation for the whole group, as torch's channels_last kernels do
 * across channels. Used where planes are small and many: the per-plane row kernels pay their setup
 * per plane, which dominates at 7x7 or 14x14.
 *
 * Each output's taps come as a list of flat offsets in the plane (built once per geometry by
 * fastconv.pool). Modes: 0 average (the sum of the taps times the output's reciprocal divisor),
 * 1 maximum (values), 2 maximum with indices (flat offsets in the plane). Maxima follow torch's
 * rule: the first largest value in scan order; a NaN wins (the last NaN, as torch's update rule
 * "larger or NaN" gives).
 */

typedef float fc_v8f __attribute__((vector_size(32)));
typedef int32_t fc_v8i __attribute__((vector_size(32)));
typedef double fc_v4d __attribute__((vector_size(32)));
typedef int64_t fc_v4i __attribute__((vector_size(32)));

/* 8x8 floats / 4x4 doubles: row j of the block (src[j], WIDTH values) becomes column j of the
 * result (dst[i][j] = src[j][i]); stores unaligned */
#if defined(__AVX2__)
static inline void fc_tr8_f(const float *const *src, float *const *dst)
{
    __m256 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(src[i]);
    fc_tr8x8_regs(r);
    for (int i = 0; i < 8; i++)
        _mm256_storeu_ps(dst[i], r[i]);
}
static inline void fc_tr4_d(const double *const *src, double *const *dst)
{
    __m256d r0 = _mm256_loadu_pd(src[0]), r1 = _mm256_loadu_pd(src[1]);
    __m256d r2 = _mm256_loadu_pd(src[2]), r3 = _mm256_loadu_pd(src[3]);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst[0], _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst[1], _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst[2], _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst[3], _mm256_permute2f128_pd(t1, t3, 0x31));
}
#define FC_HAVE_TR 1
#else
#define FC_HAVE_TR 0
static inline void fc_tr8_f(const float *const *src, float *const *dst) { (void)src; (void)dst; }
static inline void fc_tr4_d(const double *const *src, double *const *dst) { (void)src; (void)dst; }
#endif

/* Planes <-> tile of a group of L planes (plane l at a + l * n; planes >= cnt repeat plane 0 on the
 * way in, are dropped on the way out): tile[e * L + l] = plane l's element e, and out[l * m + q] =
 * otile[q * L + l]. Whole L x L blocks by register transposes, the rest element by element. */
#define FC_DEFINE_TILE_IO(SFX, T, L, TR)                                                            \
static inline void fc_tile_in_##SFX(T *restrict tile, const T *a, ptrdiff_t n, int cnt)            \
{                                                                                                   \
    const T *p[L];                                                                                  \
    T *d[L];                                                                                        \
    for (int l = 0; l < L; l++)                                                                     \
        p[l] = a + (l < cnt ? l : 0) * n;                                                           \
    ptrdiff_t e = 0;                                                                                \
    if (FC_HAVE_TR)                                                                                 \
        for (; e + L <= n; e += L) {                                                                \
            const T *s[L];                                                                          \
            for (int l = 0; l < L; l++) {                                                           \
                s[l] = p[l] + e;                                                                    \
                d[l] = tile + (e + l) * L;                                                          \
            }                                                                                       \
            TR(s, d);                                                                               \
        }                                                                                           \
    for (; e < n; e++)                                                                              \
        for (int l = 0; l < L; l++)                                                                 \
            tile[e * L + l] = p[l][e];                                                              \
}                                                                                                   \
static inline void fc_tile_out_##SFX(T *out, const T *otile, ptrdiff_t m, int cnt, T *spare)        \
{                                                                                                   \
    T *d[L];                                                                                        \
    ptrdiff_t q = 0;                                                                                \
    if (FC_HAVE_TR)                                                                                 \
        for (; q + L <= m; q += L) {                                                                \
            const T *s[L];                                                                          \
            for (int l = 0; l < L; l++) {                                                           \
                s[l] = otile + (q + l) * L;                                                         \
                d[l] = l < cnt ? out + l * m + q : spare;                                           \
            }                                                                                       \
            TR(s, d);                                                                               \
        }                                                                                           \
    for (int l = 0; l < cnt; l++)                                                                   \
        for (ptrdiff_t r = q; r < m; r++)                                                           \
            out[l * m + r] = otile[r * L + l];                                                      \
}
FC_DEFINE_TILE_IO(f, float, 8, fc_tr8_f)
FC_DEFINE_TILE_IO(d, double, 4, fc_tr4_d)

#define FC_VBLEND(VI, m, a, b) ((__typeof__(a))(((VI)(b) & (m)) | ((VI)(a) & ~(m))))  /* m ? b : a */
/* v > a ? v : a (a NaN v is dropped; callers handle NaN apart): vmaxps / vmaxpd with AVX */
#if defined(__AVX__)
static inline fc_v8f fc_vmax_f(fc_v8f a, fc_v8f v) { return (fc_v8f)_mm256_max_ps((__m256)v, (__m256)a); }
static inline fc_v4d fc_vmax_d(fc_v4d a, fc_v4d v) { return (fc_v4d)_mm256_max_pd((__m256d)v, (__m256d)a); }
#define FC_VMAX(VI, a, v) ((__typeof__(a))_Generic((a), fc_v8f: fc_vmax_f, fc_v4d: fc_vmax_d)(a, v))
#else
#define FC_VMAX(VI, a, v) FC_VBLEND(VI, (VI)((v) > (a)), a, v)
#endif

/* One group: x = the group's first plane (planes n apart), out / ind = its first output row (nout
 * apart). Output o reads the tile elements taps[starts[o] .. starts[o + 1]) (in scan order), an
 * average is their sum times scale[o]. tile (n * L), otile (nout * L) and itile (nout * L indices,
 * mode 2) are 32-byte aligned buffers of the calling thread. */
#define FC_DEFINE_POOL_GROUP(NAME, T, VT, VI, IT, L, TILE_IN, TILE_OUT, INDEX_OUT)                 \
static __attribute__((unused)) void NAME(const T *x, ptrdiff_t n, int cnt, int mode, const int32_t *taps,                   \
                 const int32_t *starts, const T *scale, ptrdiff_t nout, T *tile, T *otile,         \
                 IT *itile, T *out, int64_t *ind)                                                   \
{                                                                                                   \
    TILE_IN(tile, x, n, cnt);                                                                       \
    const VT *tv = (const VT *)tile;                                                                \
    int nan = 0;                                                                                    \
    if (mode != 0) {                                                                                \
        VI any = {0};                                                                               \
        for (ptrdiff_t e = 0; e < n; e++)                                                           \
            any |= (VI)(tv[e] != tv[e]);                                                            \
        for (int l = 0; l < L; l++)                                                                 \
            nan |= any[l] != 0;                                                                     \
    }                                                                                               \
    const VT ninf = (VT){0} - (T)INFINITY, zero = {0};                                              \
    for (ptrdiff_t o = 0; o < nout; o++) {                                                          \
        const int32_t *tp = taps + starts[o];                                                       \
        ptrdiff_t nt = starts[o + 1] - starts[o], t = 0;                                            \
        VT r;                                                                                       \
        int chain = mode != 0 && nan;                                                               \
        if (mode == 1 && !nan) {                                                                    \
            VT a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf;                                          \
            for (; t + 4 <= nt; t += 4) {                                                           \
                a0 = FC_VMAX(VI, a0, tv[tp[t]]);                                                    \
                a1 = FC_VMAX(VI, a1, tv[tp[t + 1]]);                                                \
                a2 = FC_VMAX(VI, a2, tv[tp[t + 2]]);                                                \
                a3 = FC_VMAX(VI, a3, tv[tp[t + 3]]);                                                \
            }                                                                                       \
            for (; t < nt; t++)                                                                     \
                a0 = FC_VMAX(VI, a0, tv[tp[t]]);                                                    \
            r = FC_VMAX(VI, FC_VMAX(VI, a0, a1), FC_VMAX(VI, a2, a3));                              \
            /* a maximum of 0: -0 and +0 tie and the first in scan order gives the sign (torch's \
             * rule), which four accumulators do not keep: such an output goes by the chain */   \
            VI zr = (VI)(r == zero);                                                                \
            for (int l = 0; l < L; l++)                                                             \
                chain |= zr[l] != 0;                                                                \
            t = 0;                                                                                  \
        }                                                                                           \
        if (mode == 2 && !nan) {                                                                    \
            /* two chains (even and odd taps), each keeping its first maximum, then the larger     \
             * value, on a tie the smaller offset: the first maximum in scan order (the taps' \
             * offsets increase in scan order). No tap: -inf at the window's first position. */  \
            VT m0 = ninf, m1 = ninf;                                                                \
            VI i0 = (VI){0} + (IT)(nt ? tp[0] : 0), i1 = i0;                                        \
            for (; t + 2 <= nt; t += 2) {                                                           \
                VT v0 = tv[tp[t]], v1 = tv[tp[t + 1]];                                              \
                VI c0 = (VI)(v0 > m0), c1 = (VI)(v1 > m1);                                          \
                m0 = FC_VBLEND(VI, c0, m0, v0);                                                     \
                m1 = FC_VBLEND(VI, c1, m1, v1);                                                     \
                i0 = FC_VBLEND(VI, c0, i0, (VI){0} + (IT)tp[t]);                                    \
                i1 = FC_VBLEND(VI, c1, i1, (VI){0} + (IT)tp[t + 1]);                                \
            }                                                                                       \
            if (t < nt) {                                                                           \
                VT v0 = tv[tp[t]];                                                                  \
                VI c0 = (VI)(v0 > m0);                                                              \
                m0 = FC_VBLEND(VI, c0, m0, v0);                                                     \
                i0 = FC_VBLEND(VI, c0, i0, (VI){0} + (IT)tp[t]);                                    \
            }                                                                                       \
            VI c = (VI)(m1 > m0) | ((VI)(m1 == m0) & (VI)(i1 < i0));                                \
            r = FC_VBLEND(VI, c, m0, m1);                                                           \
            ((VI *)itile)[o] = FC_VBLEND(VI, c, i0, i1);                                            \
        } else if (chain) {                                                                         \
            /* one chain in scan order: a strictly larger value or a NaN takes over; with no tap  \
             * the value is -inf and the index the window's first position (set by the caller) */ \
            VT m = ninf;                                                                            \
            VI idx = (VI){0} + (IT)(nt ? tp[0] : 0);                                                \
            for (; t < nt; t++) {                                                                   \
                VT v = tv[tp[t]];                                                                   \
                VI take = (VI)(v > m);                                                              \
                if (nan)                                                                            \
                    take |= (VI)(v != v);                                                           \
                m = FC_VBLEND(VI, take, m, v);                                                      \
                idx = FC_VBLEND(VI, take, idx, (VI){0} + (IT)tp[t]);                                \
            }                                                                                       \
            r = m;                                                                                  \
            if (mode == 2)                                                                          \
                ((VI *)itile)[o] = idx;                                                             \
        } else if (mode == 0) {                                                                     \
            /* four partial sums taking the taps in turn: a fixed association per window */         \
            VT a0 = zero, a1 = zero, a2 = zero, a3 = zero;                                          \
            for (; t + 4 <= nt; t += 4) {                                                           \
                a0 += tv[tp[t]];                                                                    \
                a1 += tv[tp[t + 1]];                                                                \
                a2 += tv[tp[t + 2]];                                                                \
                a3 += tv[tp[t + 3]];                                                                \
            }                                                                                       \
            for (; t < nt; t++)                                                                     \
                a0 += tv[tp[t]];                                                                    \
            r = ((a0 + a1) + (a2 + a3)) * scale[o];                                                 \
        }                                                                                           \
        ((VT *)otile)[o] = r;                                                                       \
    }                                                                                               \
    T spare[L];                                                                                     \
    TILE_OUT(out, otile, nout, cnt, spare);                                                         \
    if (mode == 2)                                                                                  \
        INDEX_OUT(ind, itile, nout, cnt, otile);                                                    \
}
/* indices out of the index tile into int64 rows: float groups transpose their int32 lanes (as
 * floats, bit for bit) into the free output tile, then widen a row at a time; double groups' lanes
 * are int64 already */
static inline void fc_index_out_f(int64_t *ind, const int32_t *itile, ptrdiff_t nout, int cnt,
                                  float *scratch)
{
    float spare[8];
    fc_tile_out_f(scratch, (const float *)itile, nout, cnt, spare);
    const int32_t *rows = (const int32_t *)scratch;
    for (ptrdiff_t q = 0; q < cnt * nout; q++)
        ind[q] = rows[q];
}
static inline void fc_index_out_d(int64_t *ind, const int64_t *itile, ptrdiff_t nout, int cnt,
                                  double *scratch)
{
    double spare[4];
    (void)scratch;
    fc_tile_out_d((double *)ind, (const double *)itile, nout, cnt, spare);
}
FC_DEFINE_POOL_GROUP(fc_pool_group_f, float, fc_v8f, fc_v8i, int32_t, 8, fc_tile_in_f, fc_tile_out_f,
                     fc_index_out_f)
FC_DEFINE_POOL_GROUP(fc_pool_group_d, double, fc_v4d, fc_v4i, int64_t, 4, fc_tile_in_d, fc_tile_out_d,
                     fc_index_out_d)

/* Adjoint of the averages of fc_pool_group_*: a group of L gradient planes (nout values each, at
 * g + l * nout) is transposed into gtile, every output's gradient times scale[o] is added to each of
 * its taps in the zeroed tile (in output order, taps in scan order), and the tile is transposed out
 * into the group's grad_input planes (n values each, at gi + l * n). */
#define FC_DEFINE_POOL_GROUP_BACKWARD(NAME, T, VT, L, TILE_IN, TILE_OUT)                            \
static __attribute__((unused)) void NAME(const T *g, ptrdiff_t nout, int cnt, const int32_t *taps, const int32_t *starts,   \
                 const T *scale, ptrdiff_t n, T *tile, T *gtile, T *gi)                             \
{                                                                                                   \
    TILE_IN(gtile, g, nout, cnt);                                                                   \
    VT *tv = (VT *)tile;                                                                            \
    const VT *gv = (const VT *)gtile;                                                               \
    for (ptrdiff_t e = 0; e < n; e++)                                                               \
        tv[e] = (VT){0};                                                                            \
    for (ptrdiff_t o = 0; o < nout; o++) {                                                          \
        VT v = gv[o] * scale[o];                                                                    \
        for (int32_t t = starts[o]; t < starts[o + 1]; t++)                                         \
            tv[taps[t]] += v;                                                                       \
    }                                                                                               \
    T spare[L];                                                                                     \
    TILE_OUT(gi, tile, n, cnt, spare);                                                              \
}
FC_DEFINE_POOL_GROUP_BACKWARD(fc_pool_group_backward_f, float, fc_v8f, 8, fc_tile_in_f, fc_tile_out_f)
FC_DEFINE_POOL_GROUP_BACKWARD(fc_pool_group_backward_d, double, fc_v4d, 4, fc_tile_in_d, fc_tile_out_d)

/* 2x2 / stride 2 pooling (average or maximum with torch's NaN rule) of short rows, OW <= WIDTH
 * outputs per row, over nrows consecutive output rows whose input row pairs are consecutive (the
 * planes tile exactly, so the planes are one tall plane): each output row is one vector, from
 * 2 * WIDTH values of each of its two input rows (the values past the row belong to the next rows,
 * which exist for every output row but the last), stored WIDTH wide: the lanes past OW are
 * rewritten by the next rows. The last rows of the call, from the first whose WIDTH-wide store
 * would pass the call's last output, go value by value, so nothing is written past the call's
 * outputs (the next rows may be another thread's). Needs 2 * WIDTH <= 3 * W. */
#define FC_DEFINE_PAIR_ROWS(NAME, T, VT, WIDTH, SFX, EVEN, ODD)                                     \
static __attribute__((unused)) void NAME(const T *x, T *o, ptrdiff_t W, ptrdiff_t OW, ptrdiff_t nrows, int is_max, T s) \
{                                                                                                   \
    ptrdiff_t r = 0;                                                                                \
    FC_PAIR_ROWS_VECTOR(VT, WIDTH, SFX, EVEN, ODD)                                                  \
    for (; r < nrows; r++) {                                                                        \
        const T *a = x + 2 * r * W, *b = a + W;                                                     \
        for (ptrdiff_t j = 0; j < OW; j++) {                                                        \
            T p = a[2 * j], q = a[2 * j + 1], u = b[2 * j], v = b[2 * j + 1];                       \
            if (is_max) {                                                                           \
                T m = p;                                                                            \
                m = (q > m || q != q) ? q : m;                                                      \
                m = (u > m || u != u) ? u : m;                                                      \
                m = (v > m || v != v) ? v : m;                                                      \
                o[r * OW + j] = (p != p) ? p : m;                                                   \
            } else                                                                                  \
                o[r * OW + j] = ((p + u) + (q + v)) * s;                                            \
        }                                                                                           \
    }                                                                                               \
}
#if defined(__AVX2__)
#define FC_PAIR_ROWS_VECTOR(VT, WIDTH, SFX, EVEN, ODD)                                             \
    const VT vs = _mm256_set1_##SFX(s);                                                             \
    for (; r + 1 < nrows && r * OW + WIDTH <= nrows * OW; r++) {                                    \
        __typeof__(x) a = x + 2 * r * W, b = a + W;                                                 \
        VT a0 = _mm256_loadu_##SFX(a), a1 = _mm256_loadu_##SFX(a + WIDTH);                          \
        VT b0 = _mm256_loadu_##SFX(b), b1 = _mm256_loadu_##SFX(b + WIDTH);                          \
        VT res;                                                                                     \
        if (is_max) {                                                                               \
            VT n0 = _mm256_cmp_##SFX(a0, b0, _CMP_UNORD_Q), n1 = _mm256_cmp_##SFX(a1, b1, _CMP_UNORD_Q); \
            VT v0 = _mm256_or_##SFX(_mm256_max_##SFX(b0, a0), n0);                                  \
            VT v1 = _mm256_or_##SFX(_mm256_max_##SFX(b1, a1), n1);                                  \
            VT e = EVEN(v0, v1), d = ODD(v0, v1);                                                   \
            res = _mm256_or_##SFX(_mm256_max_##SFX(d, e), _mm256_cmp_##SFX(e, d, _CMP_UNORD_Q));    \
        } else {                                                                                    \
            VT v0 = _mm256_add_##SFX(a0, b0), v1 = _mm256_add_##SFX(a1, b1);                        \
            res = _mm256_mul_##SFX(_mm256_add_##SFX(EVEN(v0, v1), ODD(v0, v1)), vs);                \
        }                                                                                           \
        _mm256_storeu_##SFX(o + r * OW, FC_CAST_##SFX(_mm256_permute4x64_pd(FC_TOPD_##SFX(res), 0xD8))); \
    }
#else
#define FC_PAIR_ROWS_VECTOR(VT, WIDTH, SFX, EVEN, ODD)
#endif
FC_DEFINE_PAIR_ROWS(fc_pair_rows_f, float, __m256, 8, ps, FC_EVEN_ps, FC_ODD_ps)
FC_DEFINE_PAIR_ROWS(fc_pair_rows_d, double, __m256d, 4, pd, FC_EVEN_pd, FC_ODD_pd)

/* Adjoint of average pooling over kh x kw blocks that tile the planes exactly, the planes taken as
 * one tall plane of nrows output rows (OW outputs each, input rows of W = OW * kw): every input of
 * a block gets its output's gradient times s. The block's first input row is written (kw == 2: each
 * value twice by an unpack, a vector of outputs at a time), the other kh - 1 rows copy it. */
#define FC_DEFINE_BLOCK_BACKWARD(NAME, T, VT, WIDTH, SFX, DUP2, DUP2_ROW)                           \
static __attribute__((unused)) void NAME(const T *g, T *gi, ptrdiff_t OW, ptrdiff_t kh,              \
                                         ptrdiff_t kw, ptrdiff_t nrows, T s)                        \
{                                                                                                   \
    const ptrdiff_t W = OW * kw;                                                                    \
    for (ptrdiff_t r = 0; r < nrows; r++) {                                                         \
        const T *gr = g + r * OW;                                                                   \
        T *row = gi + r * kh * W;                                                                   \
        ptrdiff_t c = 0;                                                                            \
        if (FC_HAVE_DUP2 && kw == 2 && 2 * OW >= WIDTH && OW <= WIDTH && r + 1 < nrows) {           \
            /* a short row: one vector of gradients (read past the row into the next one), its   \
             * 2 * WIDTH copies stored over each of the block's rows and past it; the spill lands \
             * in rows written after it (the block's next row, or the next block row) */          \
            DUP2_ROW(VT, WIDTH, SFX)                                                                \
            continue;                                                                               \
        }                                                                                           \
        if (kw == 2) {                                                                              \
            DUP2(VT, WIDTH, SFX)                                                                    \
        }                                                                                           \
        for (; c < OW; c++) {                                                                       \
            T v = gr[c] * s;                                                                        \
            for (ptrdiff_t b = 0; b < kw; b++)                                                      \
                row[c * kw + b] = v;                                                                \
        }                                                                                           \
        for (ptrdiff_t a = 1; a < kh; a++)                                                          \
            memcpy(row + a * W, row, (size_t)W * sizeof(T));                                        \
    }                                                                                               \
}
#if defined(__AVX2__)
#define FC_DUP2(VT, WIDTH, SFX)                                                                    \
            const VT vs = _mm256_set1_##SFX(s);                                                     \
            for (; c + WIDTH <= OW; c += WIDTH) {                                                   \
                VT v = _mm256_mul_##SFX(_mm256_loadu_##SFX(gr + c), vs);                            \
                VT lo = _mm256_unpacklo_##SFX(v, v), hi = _mm256_unpackhi_##SFX(v, v);              \
                _mm256_storeu_##SFX(row + 2 * c, _mm256_permute2f128_##SFX(lo, hi, 0x20));          \
                _mm256_storeu_##SFX(row + 2 * c + WIDTH, _mm256_permute2f128_##SFX(lo, hi, 0x31));  \
            }
#define FC_DUP2_ROW(VT, WIDTH, SFX)                                                                \
            VT v = _mm256_mul_##SFX(_mm256_loadu_##SFX(gr), _mm256_set1_##SFX(s));                  \
            VT lo = _mm256_unpacklo_##SFX(v, v), hi = _mm256_unpackhi_##SFX(v, v);                  \
            VT p0 = _mm256_permute2f128_##SFX(lo, hi, 0x20), p1 = _mm256_permute2f128_##SFX(lo, hi, 0x31); \
            for (ptrdiff_t a = 0; a < kh; a++) {                                                    \
                _mm256_storeu_##SFX(row + a * W, p0);                                               \
                _mm256_storeu_##SFX(row + a * W + WIDTH, p1);                                       \
            }
#define FC_HAVE_DUP2 1
#else
#define FC_DUP2(VT, WIDTH, SFX)
#define FC_DUP2_ROW(VT, WIDTH, SFX)
#define FC_HAVE_DUP2 0
#endif
FC_DEFINE_BLOCK_BACKWARD(fc_block_backward_f, float, __m256, 8, ps, FC_DUP2, FC_DUP2_ROW)
FC_DEFINE_BLOCK_BACKWARD(fc_block_backward_d, double, __m256d, 4, pd, FC_DUP2, FC_DUP2_ROW)

/* One plane of max_pool_backward: d = 0, then d[k[j]] += g[j] for j < n (k = -1 adds nothing).
 * Returns the number of other indices outside [0, ipl) (skipped). Written in C rather than Cython:
 * the plain loop over raw pointers runs ~1.3x faster than the memoryview loop in the OpenMP body. */
#define FC_DEFINE_SCATTER(NAME, T)                                                                  \
static inline ptrdiff_t NAME(T *d, const T *g, const int64_t *k, ptrdiff_t n, ptrdiff_t ipl)        \
{                                                                                                   \
    ptrdiff_t bad = 0;                                                                              \
    memset(d, 0, (size_t)ipl * sizeof(T));                                                          \
    for (ptrdiff_t j = 0; j < n; j++) {                                                             \
        int64_t q = k[j];                                                                           \
        if ((uint64_t)q < (uint64_t)ipl)                                                            \
            d[q] += g[j];                                                                           \
        else                                                                                        \
            bad += q != -1;                                                                         \
    }                                                                                               \
    return bad;                                                                                     \
}
FC_DEFINE_SCATTER(fc_scatter_plane_f, float)
FC_DEFINE_SCATTER(fc_scatter_plane_d, double)


/* Columns [lo, hi) of a padded row (row[c] = padded column c) into a buffer row by stride phase:
 * column c at dst[(c % 2) * wq + c / 2] (zeros instead when ``zero``): the depthwise stencil's
 * stride-2 taps then read unit-stride runs. AVX2: 16 floats / 8 doubles split per step. */
#define FC_DEFINE_DEINTERLEAVE2(NAME, T, VECTOR)                                                    \
static inline void NAME(T *restrict dst, const T *restrict row, ptrdiff_t lo, ptrdiff_t hi,         \
                        ptrdiff_t wq, int zero)                                                     \
{                                                                                                   \
    T *ev = dst, *od = dst + wq;                                                                    \
    ptrdiff_t c = lo;                                                                               \
    if (zero) {                                                                                     \
        for (; c < hi; c++)                                                                         \
            (c & 1 ? od : ev)[c >> 1] = 0;                                                          \
        return;                                                                                     \
    }                                                                                               \
    if (c < hi && (c & 1)) {                                                                        \
        od[c >> 1] = row[c];                                                                        \
        c++;                                                                                        \
    }                                                                                               \
    VECTOR                                                                                          \
    for (; c + 1 < hi; c += 2) {                                                                    \
        ev[c >> 1] = row[c];                                                                        \
        od[c >> 1] = row[c + 1];                                                                    \
    }                                                                                               \
    if (c < hi)                                                                                     \
        ev[c >> 1] = row[c];                                                                        \
}
#if defined(__AVX2__)
#define FC_DEINTERLEAVE2_F_VEC                                                                      \
    for (; c + 16 <= hi; c += 16) {                                                                 \
        __m256 a = _mm256_loadu_ps(row + c), b = _mm256_loadu_ps(row + c + 8);                      \
        __m256 e = _mm256_shuffle_ps(a, b, 0x88), o = _mm256_shuffle_ps(a, b, 0xDD);                \
        _mm256_storeu_ps(ev + (c >> 1), _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8))); \
        _mm256_storeu_ps(od + (c >> 1), _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8))); \
    }
#define FC_DEINTERLEAVE2_D_VEC                                                                      \
    for (; c + 8 <= hi; c += 8) {                                                                   \
        __m256d a = _mm256_loadu_pd(row + c), b = _mm256_loadu_pd(row + c + 4);                     \
        __m256d e = _mm256_unpacklo_pd(a, b), o = _mm256_unpackhi_pd(a, b);                         \
        _mm256_storeu_pd(ev + (c >> 1), _mm256_permute4x64_pd(e, 0xD8));                            \
        _mm256_storeu_pd(od + (c >> 1), _mm256_permute4x64_pd(o, 0xD8));                            \
    }
#else
#define FC_DEINTERLEAVE2_F_VEC
#define FC_DEINTERLEAVE2_D_VEC
#endif
FC_DEFINE_DEINTERLEAVE2(fc_deinterleave2_f, float, FC_DEINTERLEAVE2_F_VEC)
FC_DEFINE_DEINTERLEAVE2(fc_deinterleave2_d, double, FC_DEINTERLEAVE2_D_VEC)


/* The input tile of a strided 1 x 1 convolution (_conv.pyx conv_pointwise): dst[c * ldd + q] =
 * x[c * plane + (od*sd*H + oh*sh) * W + ow*sw] for channels c < nc and tile positions q < TT, where
 * p0 + q = (od*OH + oh) * OW + ow; ``g`` = H, W, sd, sh, sw, OH, OW. Each output row of the tile is a
 * run at stride sw, copied for every channel; stride 2 picks the even lanes of two vectors at a
 * time (reading no further than the run's last element). */
#define FC_DEFINE_SUBSAMPLE(NAME, T, VECTOR)                                                        \
static __attribute__((unused)) void NAME(T *restrict dst, ptrdiff_t ldd, const T *restrict x,       \
                                         ptrdiff_t plane, ptrdiff_t nc, const ptrdiff_t *g,         \
                                         ptrdiff_t p0, ptrdiff_t TT)                                \
{                                                                                                   \
    const ptrdiff_t H = g[0], W = g[1], sd = g[2], sh = g[3], sw = g[4], OH = g[5], OW = g[6];     \
    for (ptrdiff_t q = 0, run; q < TT; q += run) {                                                  \
        const ptrdiff_t p = p0 + q, od = p / (OH * OW), oh = p / OW - od * OH, ow = p % OW;        \
        const ptrdiff_t off = (od * sd * H + oh * sh) * W + ow * sw;                                \
        run = OW - ow < TT - q ? OW - ow : TT - q;                                                  \
        for (ptrdiff_t c = 0; c < nc; c++) {                                                        \
            T *restrict d = dst + c * ldd + q;                                                      \
            const T *restrict s = x + c * plane + off;                                              \
            ptrdiff_t i = 0;                                                                        \
            if (sw == 2) {                                                                          \
                VECTOR                                                                              \
            }                                                                                       \
            for (; i < run; i++)                                                                    \
                d[i] = s[i * sw];                                                                   \
        }                                                                                           \
    }                                                                                               \
}
#if defined(__AVX2__)
#define FC_SUBSAMPLE2_F_VEC                                                                         \
    for (; i + 9 <= run; i += 8) {                                                                  \
        __m256 a = _mm256_loadu_ps(s + 2 * i), b = _mm256_loadu_ps(s + 2 * i + 8);                  \
        __m256 e = _mm256_shuffle_ps(a, b, 0x88);                                                   \
        _mm256_storeu_ps(d + i, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8))); \
    }
#define FC_SUBSAMPLE2_D_VEC                                                                         \
    for (; i + 5 <= run; i += 4) {                                                                  \
        __m256d a = _mm256_loadu_pd(s + 2 * i), b = _mm256_loadu_pd(s + 2 * i + 4);                 \
        _mm256_storeu_pd(d + i, _mm256_permute4x64_pd(_mm256_unpacklo_pd(a, b), 0xD8));             \
    }
#else
#define FC_SUBSAMPLE2_F_VEC
#define FC_SUBSAMPLE2_D_VEC
#endif
FC_DEFINE_SUBSAMPLE(fc_subsample_f, float, FC_SUBSAMPLE2_F_VEC)
FC_DEFINE_SUBSAMPLE(fc_subsample_d, double, FC_SUBSAMPLE2_D_VEC)

#endif
