/* The im2row / row2im twins (Caffe's im2col / col2im on channels-last data), used by _conv.pyx:
 * one loop nest over (output position, kernel offset, channel) generated twice, differing in one
 * statement -- gather ``buf = im`` or scatter-add ``im += buf``. Written in C rather than Cython:
 * with restrict-qualified run copies GCC vectorises the short channel runs (16-64 values) without
 * the run-time overlap checks it adds to the Cython loop, which made the gather of a 16-channel
 * group ~30% of a grouped convolution.
 *
 * ``g`` = the 18 sizes of _conv.pyx's Geom, in its order: D, H, W, KD, KH, KW, sd, sh, sw, dd, dh,
 * dw, pd, ph, pw, OD, OH, OW. ``xt`` is one sample in channels-last layout (D*H*W x ctot); the
 * window covers channels [c0, c0 + nc). ``buf`` is row-major TT x (KD*KH*KW*nc) with row stride
 * ``ldb``: row q holds the patch of output position p0 + q, ordered (kd, kh, kw, c). The gather
 * writes zeros where the window reads padding; the scatter skips those entries -- which is what
 * makes row2im the exact adjoint. */
#ifndef FC_IM2ROW_H
#define FC_IM2ROW_H
#include <stddef.h>

/* GCC would turn the run loops into memcpy / memmove calls: a library call per run of 16-64
 * values, measured as costly as the copies themselves; keep them as inline vector loops */
#if defined(__GNUC__) && !defined(__clang__)
#define FC_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define FC_NO_LIBCALLS
#endif

/* One run copy d[c] = s[c], c < n. With AVX, a run of at least one vector ends with an
 * overlapping vector (the last VW values, some written twice with the same value) instead of a
 * scalar tail: runs of a few channels times the kernel width (3 x 7 = 21 for an RGB stem) spent
 * most of their time in the tail. */
#if defined(__AVX__)
#include <immintrin.h>
#define FC_DEFINE_RUN_COPY(S, T, VW, LOAD, STORE)                                                  \
static inline FC_NO_LIBCALLS void fc_copy_run_##S(T *restrict d, const T *restrict s, ptrdiff_t n) \
{                                                                                                  \
    if (n >= VW) {                                                                                 \
        ptrdiff_t c = 0;                                                                           \
        for (; c + VW <= n; c += VW)                                                               \
            STORE(d + c, LOAD(s + c));                                                             \
        if (c < n)                                                                                 \
            STORE(d + n - VW, LOAD(s + n - VW));                                                   \
        return;                                                                                    \
    }                                                                                              \
    for (ptrdiff_t c = 0; c < n; c++)                                                              \
        d[c] = s[c];                                                                               \
}
FC_DEFINE_RUN_COPY(f, float, 8, _mm256_loadu_ps, _mm256_storeu_ps)
FC_DEFINE_RUN_COPY(d, double, 4, _mm256_loadu_pd, _mm256_storeu_pd)
#define FC_RUN_GATHER(d, s, n)                                                                     \
    _Generic((d), float *: fc_copy_run_f, double *: fc_copy_run_d)((d), (s), (n))
#else
#define FC_RUN_GATHER(d, s, n)                                                                     \
    for (ptrdiff_t c_ = 0; c_ < (n); c_++)                                                         \
        (d)[c_] = (s)[c_]
#endif
#define FC_RUN_SCATTER(d, s, n)                                                                    \
    for (ptrdiff_t c_ = 0; c_ < (n); c_++)                                                         \
        (s)[c_] += (d)[c_]
#define FC_RUN_ZERO(d, n)                                                                          \
    for (ptrdiff_t c_ = 0; c_ < (n); c_++)                                                         \
        (d)[c_] = 0
#define FC_RUN_NONE(d, n)

/* NAME(xt, buf, ldb, ctot, c0, nc, ks, g, p0, TT); RUN(dst, src, n) moves one run, PAD(dst, n) the
 * entries of a window tap in the padding. ``ks`` (>= nc) is the distance between kernel offsets in
 * a buffer row: nc for a row of just these channels, more when the row holds further channels
 * (the input gradient scatters one channel block of a whole-group GEMM result). */
#define FC_DEFINE_IM2ROW(NAME, T, RUN, PAD)                                                        \
static FC_NO_LIBCALLS void NAME(T *restrict xt, T *restrict buf, ptrdiff_t ldb, ptrdiff_t ctot, ptrdiff_t c0,     \
                 ptrdiff_t nc, ptrdiff_t ks, const ptrdiff_t *g, ptrdiff_t p0, ptrdiff_t TT)       \
{                                                                                                  \
    const ptrdiff_t D = g[0], H = g[1], W = g[2], KD = g[3], KH = g[4], KW = g[5];                 \
    const ptrdiff_t sd = g[6], sh = g[7], sw = g[8], dd = g[9], dh = g[10], dw = g[11];            \
    const ptrdiff_t pd = g[12], ph = g[13], pw = g[14], OH = g[16], OW = g[17];                    \
    const ptrdiff_t OHW = OH * OW;                                                                 \
    ptrdiff_t od = p0 / OHW, oh = (p0 - od * OHW) / OW, ow = p0 - od * OHW - oh * OW;              \
    for (ptrdiff_t q = 0; q < TT; q++) {                                                           \
        T *restrict row = buf + q * ldb;                                                           \
        for (ptrdiff_t kd = 0; kd < KD; kd++) {                                                    \
            const ptrdiff_t idd = od * sd - pd + kd * dd;                                          \
            for (ptrdiff_t kh = 0; kh < KH; kh++) {                                                \
                const ptrdiff_t ih = oh * sh - ph + kh * dh;                                       \
                T *restrict dst = row + (kd * KH + kh) * KW * ks;                                  \
                if (idd < 0 || idd >= D || ih < 0 || ih >= H) {                                    \
                    for (ptrdiff_t kw = 0; kw < (ks == nc ? 1 : KW); kw++)                         \
                        PAD(dst + kw * ks, ks == nc ? KW * nc : nc);                               \
                    continue;                                                                      \
                }                                                                                  \
                T *restrict src = xt + ((idd * H + ih) * W) * ctot + c0;                           \
                ptrdiff_t iw = ow * sw - pw;                                                       \
                if (dw == 1 && ctot == nc && ks == nc && iw >= 0 && iw + KW <= W) {                \
                    /* the whole kernel row lies inside the input: one run of KW*nc */             \
                    T *restrict s = src + iw * ctot;                                               \
                    RUN(dst, s, KW * nc);                                                          \
                    continue;                                                                      \
                }                                                                                  \
                for (ptrdiff_t kw = 0; kw < KW; kw++, iw += dw) {                                  \
                    T *restrict d = dst + kw * ks;                                                 \
                    if (iw < 0 || iw >= W) {                                                       \
                        PAD(d, nc);                                                                \
                    } else {                                                                       \
                        T *restrict s = src + iw * ctot;                                           \
                        RUN(d, s, nc);                                                             \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        if (++ow == OW) {                                                                          \
            ow = 0;                                                                                \
            if (++oh == OH) {                                                                      \
                oh = 0;                                                                            \
                od++;                                                                              \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
}
FC_DEFINE_IM2ROW(fc_im2row_f, float, FC_RUN_GATHER, FC_RUN_ZERO)
FC_DEFINE_IM2ROW(fc_im2row_d, double, FC_RUN_GATHER, FC_RUN_ZERO)
FC_DEFINE_IM2ROW(fc_row2im_f, float, FC_RUN_SCATTER, FC_RUN_NONE)
FC_DEFINE_IM2ROW(fc_row2im_d, double, FC_RUN_SCATTER, FC_RUN_NONE)


/* Run helpers for the row-shift form (_conv.pyx _im2row_row / _forward_unit_rows):
 * fc_rows_copy: d[q*ldd + c] = s[q*lds + c] (or 0 when s is NULL) for q < nrows, c < n;
 * fc_run_copy / fc_run_add: d[c] = s[c] / d[c] += s[c] for c < n. */
#define FC_DEFINE_RUNS(S, T)                                                                       \
static FC_NO_LIBCALLS void fc_rows_copy_##S(T *restrict d, ptrdiff_t ldd, const T *restrict s,     \
                                            ptrdiff_t lds, ptrdiff_t nrows, ptrdiff_t n)           \
{                                                                                                  \
    for (ptrdiff_t q = 0; q < nrows; q++) {                                                        \
        T *restrict dq = d + q * ldd;                                                              \
        if (s) {                                                                                   \
            const T *restrict sq = s + q * lds;                                                    \
            FC_RUN_GATHER(dq, sq, n);                                                              \
        } else {                                                                                   \
            FC_RUN_ZERO(dq, n);                                                                    \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
static inline FC_NO_LIBCALLS void fc_run_copy_##S(T *restrict d, const T *restrict s, ptrdiff_t n) \
{                                                                                                  \
    FC_RUN_GATHER(d, s, n);                                                                        \
}                                                                                                  \
static inline void fc_run_add_##S(T *restrict d, const T *restrict s, ptrdiff_t n)                 \
{                                                                                                  \
    for (ptrdiff_t c = 0; c < n; c++)                                                              \
        d[c] += s[c];                                                                              \
}
FC_DEFINE_RUNS(f, float)
FC_DEFINE_RUNS(d, double)

#endif
