# Shared Cython declarations: fused float type, BLAS gemm wrapper (row-major), OpenMP shims.
# Every kernel module cimports from here; nobody calls sgemm/dgemm directly.
from scipy.linalg.cython_blas cimport sgemm, dgemm

ctypedef fused floating:
    float
    double

cdef extern from "fc_omp.h" nogil:
    int fc_openmp_enabled()
    int fc_thread_id()
    int fc_omp_max_threads()


cdef inline Py_ssize_t line_stride(Py_ssize_t n, Py_ssize_t itemsize) noexcept nogil:
    """Elements per thread for per-thread blocks of ``n`` elements laid side by side: whole 64-byte
    lines plus one spare line, so no two threads' blocks share a cache line (false sharing)."""
    cdef Py_ssize_t per_line = 64 // itemsize if itemsize < 64 else 1
    return ((n if n > 1 else 1) + per_line - 1) // per_line * per_line + per_line


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C.

    lda/ldb/ldc are row strides (elements) of the row-major matrices as stored.
    Implemented as the column-major product C^T = op(B)^T op(A)^T.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


cdef inline char* aligned_base(unsigned char[::1] blk) noexcept:
    """The first 64-byte aligned address of a block from fastconv._workspace.take."""
    cdef size_t a = <size_t>&blk[0]
    return <char*>((a + 63) & ~(<size_t>63))
