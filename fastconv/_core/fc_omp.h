/* OpenMP shims so kernels compile with and without -fopenmp (as scikit-learn's _openmp_helpers). */
#ifndef FC_OMP_H
#define FC_OMP_H
#ifdef _OPENMP
#include <omp.h>
static inline int fc_openmp_enabled(void) { return 1; }
static inline int fc_thread_id(void) { return omp_get_thread_num(); }
static inline int fc_omp_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int fc_openmp_enabled(void) { return 0; }
static inline int fc_thread_id(void) { return 0; }
static inline int fc_omp_max_threads(void) { return 1; }
#endif
#endif
