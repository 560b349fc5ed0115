/* One axis of a separable Winograd transform on vectors of nc contiguous channels (used by
 * _conv.pyx): dst[o, i, j] = sum_k mat[i, k] * src[o, k, j], vector (o, k, j) of src at
 * src + o*sos + k*sks + j*sjs, vector (o, i, j) of dst at dst + o*dos + i*dis + j*djs.
 *
 * The matrices of the default tile sizes, F(2, 3) and F(4, 5) (which one: fc_wpass_kind, once
 * per call), take passes written out for their coefficients (additions only, or paired rows).
 * Any other matrix takes a dense, branch-free pass: for each channel the nin source values are
 * loaded once and every output is one sum of products kept in a register, with the matrix copied
 * to locals first (so its broadcasts stay out of the channel loop); the (nin, nout) pairs of the
 * tile sizes tried get a fully unrolled loop nest, others a generic one. A zero coefficient times
 * a NaN or infinity gives NaN: the caller redoes rows that come out non-finite, so this only makes
 * that test stricter. The written-out loops carry `GCC ivdep`: source and destination never overlap. */
#ifndef FC_WINO_H
#define FC_WINO_H
#include <stddef.h>
#include "fc_simd.h"

#define FC_WPASS_CASE(T, NIN, NOUT)                                                                \
    case (NIN) * 16 + (NOUT): {                                                                    \
        T mm[(NIN) * (NOUT)];                                                                      \
        for (int e = 0; e < (NIN) * (NOUT); e++)                                                   \
            mm[e] = mat[e];                                                                        \
        for (ptrdiff_t o = 0; o < outer; o++)                                                      \
            for (ptrdiff_t j = 0; j < nchunk; j++) {                                               \
                const T *s = src + o * sos + j * sjs;                                              \
                T *d = dst + o * dos + j * djs;                                                    \
                for (ptrdiff_t c = 0; c < nc; c++) {                                               \
                    T x[NIN];                                                                      \
                    for (int k = 0; k < (NIN); k++)                                                \
                        x[k] = s[k * sks + c];                                                     \
                    for (int i = 0; i < (NOUT); i++) {                                             \
                        T acc = mm[i * (NIN)] * x[0];                                              \
                        for (int k = 1; k < (NIN); k++)                                            \
                            acc += mm[i * (NIN) + k] * x[k];                                       \
                        d[i * dis + c] = acc;                                                      \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        return;                                                                                    \
    }

/* F(2, 3), the common case, by its own exact matrices: B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0;
 * 0 -1 0 1] and A^T = [1 1 1 0; 0 1 -1 1] need additions only (4 and 4 per vector of channels,
 * against 16 and 8 multiply-adds dense). Recognised by value, so nothing else takes this path. */
static const double fc_bt23[16] = {1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 1, 0, 0, -1, 0, 1};
static const double fc_at23[8] = {1, 1, 1, 0, 0, 1, -1, 1};

/* F(4, 5) (points 0, +-1, +-2, +-1/2, infinity), the 1-D case: rows of B^T and columns of A^T come
 * in pairs at +p and -p that share their even and odd halves, so each pair costs one half-sum
 * each instead of two full rows (32 instead of 64 multiply-adds for B^T, 16 instead of 32 for A^T). */
static const double fc_bt45[64] = {
    4, 0, -21, 0, 21, 0, -4, 0,    0, -4, -4, 17, 17, -4, -4, 0,    0, 4, -4, -17, 17, 4, -4, 0,
    0, 2, 1, -10, -5, 8, 4, 0,     0, -2, 1, 10, -5, -8, 4, 0,      0, 4, 8, -5, -10, 1, 2, 0,
    0, -4, 8, 5, -10, -1, 2, 0,    0, -4, 0, 21, 0, -21, 0, 4};
static const double fc_at45[32] = {
    1, 1, 1, 1, 1, 1, 1, 0,    0, 1, -1, 2, -2, 0.5, -0.5, 0,
    0, 1, 1, 4, 4, 0.25, 0.25, 0,    0, 1, -1, 8, -8, 0.125, -0.125, 1};

/* Which specialised pass a matrix takes (found once per call by fc_wpass_kind, by value, so
 * nothing else takes these paths): FC_WK_DENSE = the generic dense pass. */
enum { FC_WK_DENSE = 0, FC_WK_BT23, FC_WK_AT23, FC_WK_BT45, FC_WK_AT45 };

#define FC_DEFINE_WPASS_KIND(NAME, T)                                                              \
static int NAME(const T *mat, ptrdiff_t nin, ptrdiff_t nout)                                       \
{                                                                                                  \
    const double *ref = NULL;                                                                      \
    int kind = FC_WK_DENSE;                                                                        \
    if (nin == 4 && nout == 4) { ref = fc_bt23; kind = FC_WK_BT23; }                               \
    else if (nin == 4 && nout == 2) { ref = fc_at23; kind = FC_WK_AT23; }                          \
    else if (nin == 8 && nout == 8) { ref = fc_bt45; kind = FC_WK_BT45; }                          \
    else if (nin == 8 && nout == 4) { ref = fc_at45; kind = FC_WK_AT45; }                          \
    else return FC_WK_DENSE;                                                                       \
    for (ptrdiff_t e = 0; e < nin * nout; e++)                                                     \
        if (mat[e] != (T)ref[e])                                                                   \
            return FC_WK_DENSE;                                                                    \
    return kind;                                                                                   \
}
FC_DEFINE_WPASS_KIND(fc_wpass_kind_f, float)
FC_DEFINE_WPASS_KIND(fc_wpass_kind_d, double)

/* F(4, 5)'s B^T and A^T (fc_bt45 / fc_at45 above) written out, on scalars or on GCC vectors
 * alike (the passes below and the channels-first kernels share them): X(k) reads input k, D(i)
 * is output i (an lvalue), T the value type, S its scalar type. */
#define FC_BT45(T, X, D)                                                                           \
    {                                                                                              \
        T x1_ = X(1), x2_ = X(2), x3_ = X(3), x4_ = X(4), x5_ = X(5), x6_ = X(6);                  \
        T e_ = -4 * x2_ + 17 * x4_ - 4 * x6_, o_ = -4 * x1_ + 17 * x3_ - 4 * x5_;                  \
        T e3_ = x2_ - 5 * x4_ + 4 * x6_, o3_ = 2 * x1_ - 10 * x3_ + 8 * x5_;                       \
        T e5_ = 8 * x2_ - 10 * x4_ + 2 * x6_, o5_ = 4 * x1_ - 5 * x3_ + x5_;                       \
        D(0) = 4 * X(0) - 21 * x2_ + 21 * x4_ - 4 * x6_;                                           \
        D(1) = e_ + o_; D(2) = e_ - o_; D(3) = e3_ + o3_; D(4) = e3_ - o3_;                        \
        D(5) = e5_ + o5_; D(6) = e5_ - o5_;                                                        \
        D(7) = -4 * x1_ + 21 * x3_ - 21 * x5_ + 4 * X(7);                                          \
    }
#define FC_AT45(T, S, X, D)                                                                        \
    {                                                                                              \
        T p1_ = X(1) + X(2), q1_ = X(1) - X(2), p2_ = X(3) + X(4), q2_ = X(3) - X(4);              \
        T p3_ = X(5) + X(6), q3_ = X(5) - X(6);                                                    \
        D(0) = X(0) + p1_ + p2_ + p3_; D(1) = q1_ + 2 * q2_ + (S)0.5 * q3_;                        \
        D(2) = p1_ + 4 * p2_ + (S)0.25 * p3_; D(3) = q1_ + 8 * q2_ + (S)0.125 * q3_ + X(7);        \
    }
#define FC_SRC_C(k) s[k][c]
#define FC_DST_C(i) d[i][c]

/* The channel loop of a written-out pass: s[k] = source vector k, d[i] = destination vector i of
 * one (o, j), NIN and NOUT of them. */
#define FC_WPASS_LOOP(T, NIN, NOUT, ...)                                                           \
    for (ptrdiff_t o = 0; o < outer; o++)                                                          \
        for (ptrdiff_t j = 0; j < nchunk; j++) {                                                   \
            const T *s[NIN];                                                                       \
            T *d[NOUT];                                                                            \
            for (int k = 0; k < (NIN); k++)                                                        \
                s[k] = src + o * sos + j * sjs + k * sks;                                          \
            for (int i = 0; i < (NOUT); i++)                                                       \
                d[i] = dst + o * dos + j * djs + i * dis;                                          \
            _Pragma("GCC ivdep")                                                                   \
            for (ptrdiff_t c = 0; c < nc; c++) {                                                   \
                __VA_ARGS__                                                                        \
            }                                                                                      \
        }                                                                                          \
    return;

#define FC_DEFINE_WPASS(NAME, T)                                                                   \
static void NAME(const T *src, ptrdiff_t sos, ptrdiff_t sks, ptrdiff_t sjs,                         \
                 T *dst, ptrdiff_t dos, ptrdiff_t dis, ptrdiff_t djs,                              \
                 const T *mat, ptrdiff_t outer, ptrdiff_t nout, ptrdiff_t nin,                     \
                 ptrdiff_t nchunk, ptrdiff_t nc, int kind)                                         \
{                                                                                                  \
    if (kind == FC_WK_BT23) {                                                                      \
        FC_WPASS_LOOP(T, 4, 4, T x1 = s[1][c], x2 = s[2][c];                                       \
                      d[0][c] = s[0][c] - x2; d[1][c] = x1 + x2; d[2][c] = x2 - x1;                \
                      d[3][c] = s[3][c] - x1;)                                                     \
    }                                                                                              \
    if (kind == FC_WK_AT23) {                                                                      \
        FC_WPASS_LOOP(T, 4, 2, T x1 = s[1][c], x2 = s[2][c];                                       \
                      d[0][c] = s[0][c] + x1 + x2; d[1][c] = x1 - x2 + s[3][c];)                   \
    }                                                                                              \
    if (kind == FC_WK_BT45) {                                                                      \
        FC_WPASS_LOOP(T, 8, 8, FC_BT45(T, FC_SRC_C, FC_DST_C))                                     \
    }                                                                                              \
    if (kind == FC_WK_AT45) {                                                                      \
        FC_WPASS_LOOP(T, 8, 4, FC_AT45(T, T, FC_SRC_C, FC_DST_C))                                  \
    }                                                                                              \
    switch (nin * 16 + nout) {                                                                     \
        FC_WPASS_CASE(T, 3, 3) FC_WPASS_CASE(T, 3, 2) FC_WPASS_CASE(T, 3, 4)                       \
        FC_WPASS_CASE(T, 4, 4) FC_WPASS_CASE(T, 4, 2)                                              \
        FC_WPASS_CASE(T, 5, 5) FC_WPASS_CASE(T, 5, 2)                                              \
        FC_WPASS_CASE(T, 6, 6) FC_WPASS_CASE(T, 6, 4) FC_WPASS_CASE(T, 6, 2)                       \
        default: break;                                                                            \
    }                                                                                              \
    for (ptrdiff_t o = 0; o < outer; o++)                                                          \
        for (ptrdiff_t i = 0; i < nout; i++)                                                       \
            for (ptrdiff_t j = 0; j < nchunk; j++) {                                               \
                const T *s = src + o * sos + j * sjs;                                              \
                T *d = dst + o * dos + i * dis + j * djs;                                          \
                const T *m = mat + i * nin;                                                        \
                for (ptrdiff_t c = 0; c < nc; c++)                                                 \
                    d[c] = m[0] * s[c];                                                            \
                for (ptrdiff_t k = 1; k < nin; k++) {                                              \
                    const T mk = m[k];                                                             \
                    for (ptrdiff_t c = 0; c < nc; c++)                                             \
                        d[c] += mk * s[k * sks + c];                                               \
                }                                                                                  \
            }                                                                                      \
}

FC_DEFINE_WPASS(fc_wpass_f, float)
FC_DEFINE_WPASS(fc_wpass_d, double)


/* Two passes of a 4-output transform FORM(y, z) over an NI x NI tile of vectors, in one loop:
 * dst[(i*4 + j)*dvs + c] = (F y F^T)[i][j] for y[i][j] = src + i*srs + j*scs (the pass along j
 * first), F the 4 x NI matrix FORM writes out. */
#define FC_DEFINE_WINO_2PASS(NAME, T, NI, FORM)                                                     \
static inline void NAME(const T *src, ptrdiff_t srs, ptrdiff_t scs, T *dst, ptrdiff_t dvs,         \
                        ptrdiff_t nc)                                                              \
{                                                                                                  \
    _Pragma("GCC ivdep")                                                                           \
    for (ptrdiff_t c = 0; c < nc; c++) {                                                           \
        T t[NI][4], y[NI], z[4];                                                                   \
        for (int i = 0; i < (NI); i++) {                                                           \
            for (int k = 0; k < (NI); k++)                                                         \
                y[k] = src[i * srs + k * scs + c];                                                 \
            FORM(y, t[i])                                                                          \
        }                                                                                          \
        for (int j = 0; j < 4; j++) {                                                              \
            for (int k = 0; k < (NI); k++)                                                         \
                y[k] = t[k][j];                                                                    \
            FORM(y, z)                                                                             \
            for (int i = 0; i < 4; i++)                                                            \
                dst[(i * 4 + j) * dvs + c] = z[i];                                                 \
        }                                                                                          \
    }                                                                                              \
}
/* F(2 x 2, 3 x 3) on (H, W), both passes of a tile in one loop (the separate passes spend more
 * on their loop set-up than on the additions when a vector holds only 16 or 32 channels).
 * Same operations in the same order as the two fc_wpass calls they replace (W, then H for the
 * input; H, then W for the output), so the results are bitwise those of the passes.
 * fc_wino_in23: FC_DEFINE_WINO_2PASS with B^T (FC_BT23); fc_wino_out23: dst[i*drs + j*dcs + c]
 * = (A^T m A)[i][j] for m[i][j] = src + (i*4 + j)*svs. */
#define FC_BT23(x, z) { z[0] = x[0] - x[2]; z[1] = x[1] + x[2]; z[2] = x[2] - x[1]; z[3] = x[3] - x[1]; }
#define FC_DEFINE_WINO23(S, T)                                                                     \
FC_DEFINE_WINO_2PASS(fc_wino_in23_##S, T, 4, FC_BT23)                                              \
static inline void fc_wino_out23_##S(const T *src, ptrdiff_t svs, T *dst, ptrdiff_t drs,          \
                                     ptrdiff_t dcs, ptrdiff_t nc)                                  \
{                                                                                                  \
    _Pragma("GCC ivdep")                                                                           \
    for (ptrdiff_t c = 0; c < nc; c++) {                                                           \
        T u[2][4];                                                                                 \
        for (int j = 0; j < 4; j++) {                                                              \
            T x1 = src[(4 + j) * svs + c], x2 = src[(8 + j) * svs + c];                            \
            u[0][j] = src[j * svs + c] + x1 + x2;                                                  \
            u[1][j] = x1 - x2 + src[(12 + j) * svs + c];                                           \
        }                                                                                          \
        for (int i = 0; i < 2; i++) {                                                              \
            T x1 = u[i][1], x2 = u[i][2];                                                          \
            dst[i * drs + c] = u[i][0] + x1 + x2;                                                  \
            dst[i * drs + dcs + c] = x1 - x2 + u[i][3];                                            \
        }                                                                                          \
    }                                                                                              \
}
FC_DEFINE_WINO23(f, float)
FC_DEFINE_WINO23(d, double)


/* The 1-D F(4, 5) form on channels-first (NCL) rows, float, AVX2/FMA: the input and output
 * transposes fused into the transforms (a transpose of the whole sample into channels-last and
 * of every output row back cost about as much as the transforms themselves). Eight channels at a
 * time: a tile's 8 inputs of 8 channel rows are loaded as 8 vectors, transposed in registers
 * (a vector per input column), and B^T makes the tile's 8 transform-point vectors; on the way out
 * A^T of two tiles gives 8 output columns of 8 channels, transposed back into the 8 rows.
 * fc_wino45_ncl_available: whether this build has these kernels. */
#if defined(__AVX2__) && defined(__FMA__)
static inline int fc_wino45_ncl_available(void) { return 1; }

/* GCC vectors of 8 floats: the same F(4, 5) formulas as the passes (FC_BT45 / FC_AT45) */
typedef float fc_v8f __attribute__((vector_size(32)));
#define FC_V8(k) v[k]
#define FC_R8(i) r[i]

/* V + t*ldv + xi*vs: the 8 transform points (8 channels each) of tiles t < nt, whose inputs are
 * columns ix0 + 4t .. ix0 + 4t + 7 of the rows x + k*ldx (k < 8, W columns; outside read as 0) */
static __attribute__((unused)) void fc_wino45_in8_f(const float *x, ptrdiff_t ldx, ptrdiff_t W,
        ptrdiff_t ix0, ptrdiff_t nt, float *V, ptrdiff_t ldv, ptrdiff_t vs)
{
    for (ptrdiff_t t = 0; t < nt; t++) {
        const ptrdiff_t p = ix0 + 4 * t;
        __m256 q[8];
        if (p >= 0 && p + 8 <= W) {
            for (int k = 0; k < 8; k++)
                q[k] = _mm256_loadu_ps(x + k * ldx + p);
        } else {
            float tmp[8];
            for (int k = 0; k < 8; k++) {
                for (int j = 0; j < 8; j++)
                    tmp[j] = (p + j >= 0 && p + j < W) ? x[k * ldx + p + j] : 0.0f;
                q[k] = _mm256_loadu_ps(tmp);
            }
        }
        fc_tr8x8_regs(q);                  /* q[j]: input column p + j of the 8 channels */
        fc_v8f v[8], r[8];
        for (int k = 0; k < 8; k++)
            v[k] = (fc_v8f)q[k];
        FC_BT45(fc_v8f, FC_V8, FC_R8)
        for (int i = 0; i < 8; i++)
            _mm256_storeu_ps(V + t * ldv + i * vs, (__m256)r[i]);
    }
}

/* The 4 outputs (8 channels each) of tile t: A^T of its transform points M + t*ldm + xi*ms */
static inline void fc_at45_tile(const float *m, ptrdiff_t ms, __m256 *o)
{
    fc_v8f v[8], r[4];
    for (int k = 0; k < 8; k++)
        v[k] = (fc_v8f)_mm256_loadu_ps(m + k * ms);
    FC_AT45(fc_v8f, float, FC_V8, FC_R8)
    for (int i = 0; i < 4; i++)
        o[i] = (__m256)r[i];
}

/* Output rows y + k*ldy (k < 8 channels), columns 4t .. 4t+3 of tiles t < nt, only the first n
 * columns: A^T of M's tiles plus bias[k] (bias NULL: none). bad[t] = 1 for a tile whose outputs
 * are not all finite (the caller redoes those), else left as it is. */
static __attribute__((unused)) void fc_wino45_out8_f(const float *M, ptrdiff_t ldm, ptrdiff_t ms,
        float *y, ptrdiff_t ldy, ptrdiff_t nt, ptrdiff_t n, const float *bias, unsigned char *bad)
{
    const __m256 vb = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    for (ptrdiff_t t = 0; t < nt; t += 2) {
        __m256 r[8];
        for (int h = 0; h < 2; h++) {
            if (t + h < nt) {
                fc_at45_tile(M + (t + h) * ldm, ms, r + 4 * h);
                __m256 z = _mm256_setzero_ps();
                for (int i = 0; i < 4; i++) {
                    r[4 * h + i] = _mm256_add_ps(r[4 * h + i], vb);
                    z = _mm256_add_ps(z, _mm256_sub_ps(r[4 * h + i], r[4 * h + i]));
                }
                if (_mm256_movemask_ps(_mm256_cmp_ps(z, z, _CMP_UNORD_Q)))
                    bad[t + h] = 1;
            } else {
                for (int i = 0; i < 4; i++)
                    r[4 * h + i] = _mm256_setzero_ps();
            }
        }
        fc_tr8x8_regs(r);                  /* r[k]: columns 4t .. 4t+7 of channel k */
        const ptrdiff_t col = 4 * t, cnt = n - col < 8 ? n - col : 8;
        if (cnt == 8) {
            for (int k = 0; k < 8; k++)
                _mm256_storeu_ps(y + k * ldy + col, r[k]);
        } else {
            float tmp[8];
            for (int k = 0; k < 8; k++) {
                _mm256_storeu_ps(tmp, r[k]);
                for (ptrdiff_t j = 0; j < cnt; j++)
                    y[k * ldy + col + j] = tmp[j];
            }
        }
    }
}
#else
static inline int fc_wino45_ncl_available(void) { return 0; }
static __attribute__((unused)) void fc_wino45_in8_f(const float *x, ptrdiff_t ldx, ptrdiff_t W,
        ptrdiff_t ix0, ptrdiff_t nt, float *V, ptrdiff_t ldv, ptrdiff_t vs) { }
static __attribute__((unused)) void fc_wino45_out8_f(const float *M, ptrdiff_t ldm, ptrdiff_t ms,
        float *y, ptrdiff_t ldy, ptrdiff_t nt, ptrdiff_t n, const float *bias, unsigned char *bad) { }
#endif


/* The transposed Winograd form (_conv.pyx conv_transpose_winograd) with a = 4 points (0, 1, -1,
 * infinity) on both axes, written out: additions only.
 * fc_wino_t_in34 / in24: dst[(i*4 + j)*dvs + c] = (A y A^T)[i][j] for the 3 x 3 / 2 x 2 tile of
 * vectors y[i][j] = src + i*srs + j*scs, A = at^T of F(3, 2) = [1 0 0; 1 1 1; 1 -1 1; 0 0 1] /
 * of F(2, 3) = [1 0; 1 1; 1 -1; 0 1].
 * fc_wino_t_out44: the same with B = bt^T = [1 0 0 0; 0 1 -1 -1; -1 1 1 0; 0 0 0 1] on a 4 x 4
 * tile (the points of a GEMM result: srs = 4 * scs). */
#define FC_T_A3(y, z) { z[0] = y[0]; z[1] = y[0] + y[1] + y[2]; z[2] = y[0] - y[1] + y[2]; z[3] = y[2]; }
#define FC_T_A2(y, z) { z[0] = y[0]; z[1] = y[0] + y[1]; z[2] = y[0] - y[1]; z[3] = y[1]; }
#define FC_T_B4(x, z) { z[0] = x[0]; z[1] = x[1] - x[2] - x[3]; z[2] = x[1] + x[2] - x[0]; z[3] = x[3]; }
#define FC_DEFINE_WINO_T(S, T)                                                                     \
FC_DEFINE_WINO_2PASS(fc_wino_t_in34_##S, T, 3, FC_T_A3)                                             \
FC_DEFINE_WINO_2PASS(fc_wino_t_in24_##S, T, 2, FC_T_A2)                                             \
FC_DEFINE_WINO_2PASS(fc_wino_t_out44_##S, T, 4, FC_T_B4)                                            \
/* kind 1: fc_wino_t_in34, 2: fc_wino_t_in24, 3: fc_wino_t_out44 */                                \
static inline void fc_wino_t_##S(int kind, const T *src, ptrdiff_t srs, ptrdiff_t scs, T *dst,      \
                                 ptrdiff_t dvs, ptrdiff_t nc)                                      \
{                                                                                                  \
    if (kind == 1)                                                                                 \
        fc_wino_t_in34_##S(src, srs, scs, dst, dvs, nc);                                           \
    else if (kind == 2)                                                                            \
        fc_wino_t_in24_##S(src, srs, scs, dst, dvs, nc);                                           \
    else                                                                                           \
        fc_wino_t_out44_##S(src, srs, scs, dst, dvs, nc);                                          \
}                                                                                                  \
/* 1 if every |a[i]| <= lim (NaN is not), i < n */                                                 \
static inline int fc_within_##S(const T *a, ptrdiff_t n, T lim)                                   \
{                                                                                                  \
    int bad = 0;                                                                                   \
    for (ptrdiff_t i = 0; i < n; i++)                                                              \
        bad |= !(a[i] <= lim && a[i] >= -lim);                                                     \
    return !bad;                                                                                   \
}
FC_DEFINE_WINO_T(f, float)
FC_DEFINE_WINO_T(d, double)

#endif
