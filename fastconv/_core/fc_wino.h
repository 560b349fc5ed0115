/* One axis of a separable Winograd transform on vectors of nc contiguous channels (used by
 * _conv.pyx): dst[o, i, j] = sum_k mat[i, k] * src[o, k, j], vector (o, k, j) of src at
 * src + o*sos + k*sks + j*sjs, vector (o, i, j) of dst at dst + o*dos + i*dis + j*djs.
 *
 * Dense and branch-free: for each channel the nin source values are loaded once and every output
 * is one sum of products kept in a register, with the matrix copied to locals first (so the
 * compiler knows it does not alias dst and keeps its broadcasts out of the channel loop). The
 * (nin, nout) pairs of the tile sizes in use get a fully unrolled loop nest; others a generic one.
 * A zero coefficient times a NaN or infinity gives NaN: the caller redoes rows that come out
 * non-finite, so this only makes that test stricter. */
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

#define FC_IS_MAT(T, mat, ref, n) fc_is_mat_##T(mat, ref, n)
#define FC_DEFINE_IS_MAT(T)                                                                        \
static inline int fc_is_mat_##T(const T *mat, const double *ref, int n)                            \
{                                                                                                  \
    for (int e = 0; e < n; e++)                                                                    \
        if (mat[e] != (T)ref[e])                                                                   \
            return 0;                                                                              \
    return 1;                                                                                      \
}
FC_DEFINE_IS_MAT(float)
FC_DEFINE_IS_MAT(double)

#define FC_WPASS_LOOP(T, ...)                                                                      \
    for (ptrdiff_t o = 0; o < outer; o++)                                                          \
        for (ptrdiff_t j = 0; j < nchunk; j++) {                                                   \
            const T *restrict s0 = src + o * sos + j * sjs, *restrict s1 = s0 + sks;               \
            const T *restrict s2 = s1 + sks, *restrict s3 = s2 + sks;                              \
            T *restrict d0 = dst + o * dos + j * djs, *restrict d1 = d0 + dis;                     \
            T *restrict d2 = d1 + dis, *restrict d3 = d2 + dis;                                    \
            (void)d2; (void)d3;                                                                    \
            for (ptrdiff_t c = 0; c < nc; c++) {                                                   \
                __VA_ARGS__                                                                        \
            }                                                                                      \
        }                                                                                          \
    return;

#define FC_DEFINE_WPASS(NAME, T)                                                                   \
static void NAME(const T *restrict src, ptrdiff_t sos, ptrdiff_t sks, ptrdiff_t sjs,               \
                 T *restrict dst, ptrdiff_t dos, ptrdiff_t dis, ptrdiff_t djs,                     \
                 const T *restrict mat, ptrdiff_t outer, ptrdiff_t nout, ptrdiff_t nin,            \
                 ptrdiff_t nchunk, ptrdiff_t nc)                                                   \
{                                                                                                  \
    if (nin == 4 && nout == 4 && FC_IS_MAT(T, mat, fc_bt23, 16)) {                                 \
        FC_WPASS_LOOP(T, T x1 = s1[c], x2 = s2[c];                                                 \
                      d0[c] = s0[c] - x2; d1[c] = x1 + x2; d2[c] = x2 - x1; d3[c] = s3[c] - x1;)   \
    }                                                                                              \
    if (nin == 4 && nout == 2 && FC_IS_MAT(T, mat, fc_at23, 8)) {                                  \
        FC_WPASS_LOOP(T, T x1 = s1[c], x2 = s2[c];                                                 \
                      d0[c] = s0[c] + x1 + x2; d1[c] = x1 - x2 + s3[c];)                           \
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

#endif
