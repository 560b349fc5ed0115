/* Small SIMD helpers for loops GCC vectorises poorly (strided pair reductions).
 * Every helper has a plain C fallback; the x86 paths are chosen at compile time from the
 * target flags (-march=native adds AVX where the machine has it). */
#ifndef FC_SIMD_H
#define FC_SIMD_H
#include <stddef.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

/* o[j] = s * ((a[2j] + b[2j]) + (a[2j+1] + b[2j+1])) for j < n: 2x2 / stride-2 average pooling of
 * two input rows a, b. In-lane shuffles split even and odd columns (a cross-lane permute, which
 * costs several cycles on AMD cores, is needed once per 8 outputs, not per load). */
static inline void fc_pair_avg_f(const float *a, const float *b, float *o, ptrdiff_t n, float s)
{
    ptrdiff_t j = 0;
#if defined(__AVX2__)
    const __m256 vs = _mm256_set1_ps(s);
    for (;;) {
        if (j + 8 > n) {
            if (j == n || n < 8)
                break;
            j = n - 8;   /* the tail as one overlapping vector: recomputes a few outputs identically */
        }
        __m256 v0 = _mm256_add_ps(_mm256_loadu_ps(a + 2 * j), _mm256_loadu_ps(b + 2 * j));
        __m256 v1 = _mm256_add_ps(_mm256_loadu_ps(a + 2 * j + 8), _mm256_loadu_ps(b + 2 * j + 8));
        __m256 ev = _mm256_shuffle_ps(v0, v1, 0x88);   /* 0 2 8 10 | 4 6 12 14 */
        __m256 od = _mm256_shuffle_ps(v0, v1, 0xDD);   /* 1 3 9 11 | 5 7 13 15 */
        __m256 r = _mm256_mul_ps(_mm256_add_ps(ev, od), vs);
        r = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(r), 0xD8));
        _mm256_storeu_ps(o + j, r);
        j += 8;
    }
#endif
    for (; j < n; j++)
        o[j] = ((a[2 * j] + b[2 * j]) + (a[2 * j + 1] + b[2 * j + 1])) * s;
}

static inline void fc_pair_avg_d(const double *a, const double *b, double *o, ptrdiff_t n, double s)
{
    ptrdiff_t j = 0;
#if defined(__AVX2__)
    const __m256d vs = _mm256_set1_pd(s);
    for (;;) {
        if (j + 4 > n) {
            if (j == n || n < 4)
                break;
            j = n - 4;
        }
        __m256d v0 = _mm256_add_pd(_mm256_loadu_pd(a + 2 * j), _mm256_loadu_pd(b + 2 * j));
        __m256d v1 = _mm256_add_pd(_mm256_loadu_pd(a + 2 * j + 4), _mm256_loadu_pd(b + 2 * j + 4));
        __m256d ev = _mm256_unpacklo_pd(v0, v1);       /* 0 4 | 2 6 */
        __m256d od = _mm256_unpackhi_pd(v0, v1);       /* 1 5 | 3 7 */
        __m256d r = _mm256_mul_pd(_mm256_add_pd(ev, od), vs);
        _mm256_storeu_pd(o + j, _mm256_permute4x64_pd(r, 0xD8));
        j += 4;
    }
#endif
    for (; j < n; j++)
        o[j] = ((a[2 * j] + b[2 * j]) + (a[2 * j + 1] + b[2 * j + 1])) * s;
}
#endif
