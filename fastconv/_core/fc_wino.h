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
        FC_WPASS_LOOP(T, 8, 8, T x1 = s[1][c], x2 = s[2][c], x3 = s[3][c], x4 = s[4][c];           \
                      T x5 = s[5][c], x6 = s[6][c];                                                \
                      T e = -4 * x2 + 17 * x4 - 4 * x6, od = -4 * x1 + 17 * x3 - 4 * x5;           \
                      T e3 = x2 - 5 * x4 + 4 * x6, o3 = 2 * x1 - 10 * x3 + 8 * x5;                 \
                      T e5 = 8 * x2 - 10 * x4 + 2 * x6, o5 = 4 * x1 - 5 * x3 + x5;                 \
                      d[0][c] = 4 * s[0][c] - 21 * x2 + 21 * x4 - 4 * x6;                          \
                      d[1][c] = e + od; d[2][c] = e - od; d[3][c] = e3 + o3; d[4][c] = e3 - o3;    \
                      d[5][c] = e5 + o5; d[6][c] = e5 - o5;                                        \
                      d[7][c] = -4 * x1 + 21 * x3 - 21 * x5 + 4 * s[7][c];)                        \
    }                                                                                              \
    if (kind == FC_WK_AT45) {                                                                      \
        FC_WPASS_LOOP(T, 8, 4, T p1 = s[1][c] + s[2][c], q1 = s[1][c] - s[2][c];                   \
                      T p2 = s[3][c] + s[4][c], q2 = s[3][c] - s[4][c];                            \
                      T p3 = s[5][c] + s[6][c], q3 = s[5][c] - s[6][c];                            \
                      d[0][c] = s[0][c] + p1 + p2 + p3; d[1][c] = q1 + 2 * q2 + (T)0.5 * q3;       \
                      d[2][c] = p1 + 4 * p2 + (T)0.25 * p3;                                        \
                      d[3][c] = q1 + 8 * q2 + (T)0.125 * q3 + s[7][c];)                            \
    }                                                                                              \
    switch (nin * 16 + nout) {                                                                     \
        FC_WPASS_CASE(T, 3, 3) FC_WPASS_CASE(T, 3, 2)                                              \
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


/* F(2 x 2, 3 x 3) on (H, W), both passes of a tile in one loop (the separate passes spend more
 * on their loop set-up than on the additions when a vector holds only 16 or 32 channels).
 * Same operations in the same order as the two fc_wpass calls they replace (W, then H for the
 * input; H, then W for the output), so the results are bitwise those of the passes.
 * fc_wino_in23: dst[(i*4 + j)*dvs + c] = (B^T d B)[i][j] for the 4 x 4 tile of vectors
 * d[i][j] = src + i*srs + j*scs; fc_wino_out23: dst[i*drs + j*dcs + c] = (A^T m A)[i][j] for
 * m[i][j] = src + (i*4 + j)*svs. */
#define FC_DEFINE_WINO23(S, T)                                                                     \
static inline void fc_wino_in23_##S(const T *src, ptrdiff_t srs, ptrdiff_t scs, T *dst,           \
                                    ptrdiff_t dvs, ptrdiff_t nc)                                   \
{                                                                                                  \
    _Pragma("GCC ivdep")                                                                           \
    for (ptrdiff_t c = 0; c < nc; c++) {                                                           \
        T t[4][4];                                                                                 \
        for (int i = 0; i < 4; i++) {                                                              \
            const T *r = src + i * srs + c;                                                        \
            T x1 = r[scs], x2 = r[2 * scs];                                                        \
            t[i][0] = r[0] - x2; t[i][1] = x1 + x2; t[i][2] = x2 - x1; t[i][3] = r[3 * scs] - x1;  \
        }                                                                                          \
        for (int j = 0; j < 4; j++) {                                                              \
            T x1 = t[1][j], x2 = t[2][j];                                                          \
            dst[j * dvs + c] = t[0][j] - x2;                                                       \
            dst[(4 + j) * dvs + c] = x1 + x2;                                                      \
            dst[(8 + j) * dvs + c] = x2 - x1;                                                      \
            dst[(12 + j) * dvs + c] = t[3][j] - x1;                                                \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
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

#endif
