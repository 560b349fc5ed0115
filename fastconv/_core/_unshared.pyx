# cython: language_level=3
"""Unshared (locally connected) convolution kernels: one small matrix product per output location.

Every kernel works on 3 spatial dimensions (D, H, W); 1-D and 2-D problems arrive with leading
spatial sizes of 1, so one loop nest serves every rank. The Python layer (fastconv/unshared.py) has
validated every shape and argument before calling here: indices are not bounds-checked.

Layouts (C-contiguous, passed as flat buffers):
  x      (N, C_in, D, H, W)                       the user's input
  xt     (Dp, Hp, Wp, C_in, N) + FC_SLACK         padded, batch-innermost copy of x (pack_input):
                                                  the C_in x N block of one input position is
                                                  contiguous and padding is real zeros
  w      (OD, OH, OW, C_out, C_in, KD, KH, KW)    -> per location p a row-major C_out x K matrix,
                                                  K = C_in * KD*KH*KW (the user's layout, as is)
  y      (N, C_out, OD, OH, OW)                   output / grad_output

The patch of location p for samples [n0, n0 + nb) is the K x nb matrix whose row
r = c * kvol + (kd * KH + kh) * KW + kw (the weight's column order) is the contiguous segment
xt[od*sd + kd*dd, oh*sh + kh*dh, ow*sw + kw*dw, c, n0 : n0 + nb]. Relative to the window's corner
these rows sit at the same offsets ``roff[r]`` for every location, so the micro-kernel reads
(forward, grad_weight) and accumulates into (grad_input) the patch in place through that row
table: im2col and col2im without a copy. The BLAS path (many samples per chunk) copies the patch
into a K x nb tile, with ``_patch`` -- gather ``col = xt`` or scatter-add ``xt += col``, one loop
nest for both twins (Caffe).

Forward = patch @ weight; grad_input (the adjoint) = W_p^T @ grad_output scattered back through the
same rows; grad_weight = grad_output @ patch^T. Each is parallelised over locations (grad_input in
phases of locations whose windows do not overlap, so no two threads write the same element).
"""
from cython.parallel cimport prange, parallel
from libc.stdlib cimport calloc, malloc, free
from fastconv._core._common cimport floating, gemm, fc_thread_id, line_stride


cdef struct UGeom:
    # padded (packed) input sizes, kernel sizes, strides, dilations, output sizes
    Py_ssize_t Dp, Hp, Wp, KD, KH, KW, sd, sh, sw, dd, dh, dw, OD, OH, OW


cdef UGeom _geom(tuple padsz, tuple ksz, tuple stride, tuple dil, tuple outsz):
    cdef UGeom g
    g.Dp, g.Hp, g.Wp = padsz
    g.KD, g.KH, g.KW = ksz
    g.sd, g.sh, g.sw = stride
    g.dd, g.dh, g.dw = dil
    g.OD, g.OH, g.OW = outsz
    return g


# The register-blocked micro-kernel for the small products: C (+)= A @ B with an 8-row x
# one-vector block of C in registers (GCC/clang vector extensions; one element per "vector"
# elsewhere). Rows of A, B and C are found by a stride or through a row-offset table (the patch
# rows in xt); A is read with any element stride (so W_p and W_p^T cost the same).
cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FC_VEC 1
    #define FC_LANE(v, l) ((v)[l])
    typedef float fc_vf __attribute__((vector_size(32), aligned(4)));
    typedef double fc_vd __attribute__((vector_size(32), aligned(8)));
    #else
    #define FC_VEC 0
    #define FC_LANE(v, l) (v)
    typedef float fc_vf;
    typedef double fc_vd;
    #endif
    /* A partial vector (fewer than L columns left) still loads L elements of a B row: every B
       buffer is followed by FC_SLACK allocated elements. The extra lanes are never stored. */
    #define FC_SLACK 8

    #define FC_STORE(V, cr, v, nr)                                                                       \\
        if ((nr) == L) { if (acc) *(V*)(cr) += (v); else *(V*)(cr) = (v); }                              \\
        else { Py_ssize_t l_;                                                                            \\
               if (acc) for (l_ = 0; l_ < (nr); l_++) (cr)[l_] += FC_LANE(v, l_);                        \\
               else for (l_ = 0; l_ < (nr); l_++) (cr)[l_] = FC_LANE(v, l_); }

    #define FC_ROW(p, off, i, ld) ((p) + ((off) ? (off)[i] : (i) * (ld)))

    #define FC_UMM_DEF(NAME, T, V)                                                                       \\
    static void NAME(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,                                           \\
                     const T* a, Py_ssize_t sai, Py_ssize_t saq, const Py_ssize_t* aoff,                 \\
                     const T* b, Py_ssize_t ldb, const Py_ssize_t* boff,                                 \\
                     int acc, T* c, Py_ssize_t ldc, const Py_ssize_t* coff)                              \\
    {                                                                                                    \\
        const Py_ssize_t L = (Py_ssize_t)(sizeof(V) / sizeof(T));                                        \\
        Py_ssize_t i, j, q, nr;                                                                          \\
        const V z = {0};                                                                                 \\
        if (FC_VEC && n == 1 && saq == 1 && ldb == 1 && !boff) {                                         \\
            /* one column (an unbatched call), rows of A contiguous: vectorised dot products */          \\
            for (i = 0; i < m; i++) {                                                                    \\
                const T* ai = FC_ROW(a, aoff, i, sai);                                                   \\
                V s0 = z, s1 = z;                                                                        \\
                T s = 0;                                                                                 \\
                for (q = 0; q + 2 * L <= k; q += 2 * L) {                                                \\
                    s0 += *(const V*)(ai + q) * *(const V*)(b + q);                                      \\
                    s1 += *(const V*)(ai + q + L) * *(const V*)(b + q + L);                              \\
                }                                                                                        \\
                for (; q < k; q++) s += ai[q] * b[q];                                                    \\
                s0 += s1;                                                                                \\
                for (q = 0; q < L; q++) s += FC_LANE(s0, q);                                             \\
                if (acc) *FC_ROW(c, coff, i, ldc) += s; else *FC_ROW(c, coff, i, ldc) = s;               \\
            }                                                                                            \\
            return;                                                                                      \\
        }                                                                                                \\
        for (j = 0; j < n; j += L) {                                                                     \\
            nr = n - j < L ? n - j : L;                                                                  \\
            for (i = 0; i + 8 <= m; i += 8) {                                                            \\
                V c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z;                        \\
                const T* a0 = FC_ROW(a, aoff, i, sai); const T* a1 = FC_ROW(a, aoff, i + 1, sai);        \\
                const T* a2 = FC_ROW(a, aoff, i + 2, sai); const T* a3 = FC_ROW(a, aoff, i + 3, sai);    \\
                const T* a4 = FC_ROW(a, aoff, i + 4, sai); const T* a5 = FC_ROW(a, aoff, i + 5, sai);    \\
                const T* a6 = FC_ROW(a, aoff, i + 6, sai); const T* a7 = FC_ROW(a, aoff, i + 7, sai);    \\
                for (q = 0; q < k; q++) {                                                                \\
                    const V bv = *(const V*)(FC_ROW(b, boff, q, ldb) + j);                               \\
                    const Py_ssize_t o = q * saq;                                                        \\
                    c0 += a0[o] * bv; c1 += a1[o] * bv; c2 += a2[o] * bv; c3 += a3[o] * bv;              \\
                    c4 += a4[o] * bv; c5 += a5[o] * bv; c6 += a6[o] * bv; c7 += a7[o] * bv;              \\
                }                                                                                        \\
                FC_STORE(V, FC_ROW(c, coff, i, ldc) + j, c0, nr)                                         \\
                FC_STORE(V, FC_ROW(c, coff, i + 1, ldc) + j, c1, nr)                                     \\
                FC_STORE(V, FC_ROW(c, coff, i + 2, ldc) + j, c2, nr)                                     \\
                FC_STORE(V, FC_ROW(c, coff, i + 3, ldc) + j, c3, nr)                                     \\
                FC_STORE(V, FC_ROW(c, coff, i + 4, ldc) + j, c4, nr)                                     \\
                FC_STORE(V, FC_ROW(c, coff, i + 5, ldc) + j, c5, nr)                                     \\
                FC_STORE(V, FC_ROW(c, coff, i + 6, ldc) + j, c6, nr)                                     \\
                FC_STORE(V, FC_ROW(c, coff, i + 7, ldc) + j, c7, nr)                                     \\
            }                                                                                            \\
            for (; i < m; i++) {                                                                         \\
                V c0 = z;                                                                                \\
                const T* a0 = FC_ROW(a, aoff, i, sai);                                                   \\
                for (q = 0; q < k; q++)                                                                  \\
                    c0 += a0[q * saq] * *(const V*)(FC_ROW(b, boff, q, ldb) + j);                        \\
                FC_STORE(V, FC_ROW(c, coff, i, ldc) + j, c0, nr)                                         \\
            }                                                                                            \\
        }                                                                                                \\
    }

    FC_UMM_DEF(fc_umm_f, float, fc_vf)
    FC_UMM_DEF(fc_umm_d, double, fc_vd)
    """
    enum: FC_SLACK
    void fc_umm_f(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                  const float* a, Py_ssize_t sai, Py_ssize_t saq, const Py_ssize_t* aoff,
                  const float* b, Py_ssize_t ldb, const Py_ssize_t* boff,
                  int acc, float* c, Py_ssize_t ldc, const Py_ssize_t* coff) noexcept nogil
    void fc_umm_d(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                  const double* a, Py_ssize_t sai, Py_ssize_t saq, const Py_ssize_t* aoff,
                  const double* b, Py_ssize_t ldb, const Py_ssize_t* boff,
                  int acc, double* c, Py_ssize_t ldc, const Py_ssize_t* coff) noexcept nogil


SLACK = FC_SLACK

# Chunks of at most this many samples use the micro-kernel (a BLAS call's packing and dispatch
# cost more than such a product); larger chunks copy the patch and call BLAS gemm.
cdef int SMALL_N = 32


def small_n():
    """The micro-kernel limit (samples per chunk; output channels for grad_weight)."""
    return SMALL_N


def _set_small_n(int n):
    """(testing) Set the micro-kernel limit (0: always BLAS); returns the old value."""
    global SMALL_N
    old = SMALL_N
    SMALL_N = n
    return old


cdef inline void _umm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      const floating* a, Py_ssize_t sai, Py_ssize_t saq, const Py_ssize_t* aoff,
                      const floating* b, Py_ssize_t ldb, const Py_ssize_t* boff,
                      bint accumulate, floating* c, Py_ssize_t ldc,
                      const Py_ssize_t* coff) noexcept nogil:
    if floating is float:
        fc_umm_f(m, n, k, a, sai, saq, aoff, b, ldb, boff, accumulate, c, ldc, coff)
    else:
        fc_umm_d(m, n, k, a, sai, saq, aoff, b, ldb, boff, accumulate, c, ldc, coff)


cdef floating* _workspace(floating* dummy, int nthreads, Py_ssize_t per_thread) except NULL:
    """One zeroed block holding every thread's tiles (raises MemoryError, never NULL)."""
    cdef floating* buf = <floating*> calloc(nthreads * per_thread, sizeof(floating))
    if buf == NULL:
        raise MemoryError(f"unshared convolution: could not allocate "
                          f"{nthreads * per_thread * sizeof(floating):,} bytes of per-thread workspace")
    return buf


cdef Py_ssize_t* _row_offsets(const UGeom* g, Py_ssize_t C, Py_ssize_t N) except NULL:
    """roff[c * kvol + k]: offset in xt of patch row (c, k) from the window's corner."""
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW, kd, kh, kw, c, k
    cdef Py_ssize_t* roff = <Py_ssize_t*> malloc(C * kvol * sizeof(Py_ssize_t))
    if roff == NULL:
        raise MemoryError("unshared convolution: could not allocate the patch row table")
    for c in range(C):
        k = 0
        for kd in range(g.KD):
            for kh in range(g.KH):
                for kw in range(g.KW):
                    roff[c * kvol + k] = (((kd * g.dd * g.Hp + kh * g.dh) * g.Wp + kw * g.dw) * C
                                          + c) * N
                    k += 1
    return roff


cdef inline Py_ssize_t _corner(const UGeom* g, Py_ssize_t C, Py_ssize_t N, Py_ssize_t od,
                               Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """Offset in xt of the window corner of location (od, oh, ow), sample 0."""
    return (((od * g.sd) * g.Hp + oh * g.sh) * g.Wp + ow * g.sw) * C * N


cdef inline void _patch(floating* xt, floating* col, const Py_ssize_t* roff, Py_ssize_t K,
                        Py_ssize_t nb, bint scatter) noexcept nogil:
    """Gather (``col = patch``) or scatter-add (``patch += col``) the K x nb patch whose rows
    start at ``xt + roff[r]``; ``col`` has row stride nb."""
    cdef Py_ssize_t r, j
    cdef floating* src
    cdef floating* dst
    for r in range(K):
        src = xt + roff[r]
        dst = col + r * nb
        if scatter:
            for j in range(nb):
                src[j] += dst[j]
        else:
            for j in range(nb):
                dst[j] = src[j]


def pack_input(const floating[::1] src, floating[::1] dst, Py_ssize_t N, Py_ssize_t C, tuple insz,
               tuple padsz, tuple before, bint unpack, int nthreads):
    """Pack: ``dst = xt`` with xt[d + pd, h + ph, w + pw, c, n] = src[n, c, d, h, w] (the interior
    of the padded, batch-innermost copy; the caller zero-fills xt where there is padding).
    Unpack (``unpack``): ``src = xt``, ``dst = x``, the same index map the other way."""
    cdef Py_ssize_t D, H, W, Dp, Hp, Wp, pd, ph, pw
    D, H, W = insz
    Dp, Hp, Wp = padsz
    pd, ph, pw = before
    cdef Py_ssize_t plane = D * H * W, rows = D * H, r, d, h, n, c, i, rowx, rowt
    cdef const floating* sp = &src[0]
    cdef floating* dp = &dst[0]
    with nogil:
        for r in prange(rows, schedule="dynamic", num_threads=nthreads):
            d = r // H
            h = r - d * H
            rowt = (((d + pd) * Hp + h + ph) * Wp + pw) * C * N     # xt offset of (d, h, 0, 0, 0)
            for n in range(N):
                for c in range(C):
                    rowx = (n * C + c) * plane + (d * H + h) * W   # x offset of (n, c, d, h, 0)
                    if unpack:
                        for i in range(W):
                            dp[rowx + i] = sp[rowt + (i * C + c) * N + n]
                    else:
                        for i in range(W):
                            dp[rowt + (i * C + c) * N + n] = sp[rowx + i]


def forward(const floating[::1] xt, const floating[::1] w, const floating[::1] bias,
            floating[::1] out, Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out,
            tuple padsz, tuple ksz, tuple stride, tuple dil, tuple outsz,
            bint has_bias, Py_ssize_t NB, int nthreads):
    """out[n, :, p] = W_p @ patch_p[:, n] + bias[:, p] for every (location, batch chunk).
    ``bias`` is (C_out, P) when ``has_bias``."""
    cdef UGeom g = _geom(padsz, ksz, stride, dil, outsz)
    cdef Py_ssize_t K = C_in * g.KD * g.KH * g.KW, P = g.OD * g.OH * g.OW
    cdef Py_ssize_t nch = (N + NB - 1) // NB, units = P * nch
    cdef Py_ssize_t per = line_stride((K + C_out) * NB + 2 * FC_SLACK, sizeof(floating))
    cdef Py_ssize_t u, p, n0, nb, od, oh, ow, co, j
    cdef bint micro = NB <= SMALL_N
    cdef floating* tp = <floating*> &xt[0]  # read only
    cdef floating* wp = <floating*> &w[0]  # read only
    cdef floating* bp = <floating*> &bias[0]  # read only
    cdef floating* op = &out[0]
    cdef floating* ws = _workspace(tp, nthreads, per)
    cdef Py_ssize_t* roff = _row_offsets(&g, C_in, N)
    cdef floating* col
    cdef floating* yb
    cdef floating* corner
    cdef floating bv
    with nogil, parallel(num_threads=nthreads):
        col = ws + fc_thread_id() * per
        yb = col + K * NB + FC_SLACK
        for u in prange(units, schedule="dynamic", chunksize=16):
            p = u // nch
            n0 = (u - p * nch) * NB
            nb = NB if n0 + NB <= N else N - n0
            od = p // (g.OH * g.OW)
            oh = (p // g.OW) % g.OH
            ow = p % g.OW
            corner = tp + _corner(&g, C_in, N, od, oh, ow) + n0
            if micro:
                _umm(C_out, nb, K, wp + p * C_out * K, K, 1, NULL, corner, 0, roff,
                     False, yb, nb, NULL)
            else:
                _patch(corner, col, roff, K, nb, False)
                gemm(False, False, <int>C_out, <int>nb, <int>K, <floating>1, wp + p * C_out * K,
                     <int>K, col, <int>nb, <floating>0, yb, <int>nb)
            for co in range(C_out):
                bv = bp[co * P + p] if has_bias else 0
                for j in range(nb):
                    op[((n0 + j) * C_out + co) * P + p] = yb[co * nb + j] + bv
    free(roff)
    free(ws)


def backward_input(const floating[::1] gy, const floating[::1] w, floating[::1] gxt,
                   Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out,
                   tuple padsz, tuple ksz, tuple stride, tuple dil, tuple outsz,
                   Py_ssize_t NB, int axis, Py_ssize_t slab, int phases, int nthreads):
    """gxt (zero-initialised, packed layout) += scatter_p(W_p^T @ gy[:, :, p]): the adjoint of
    ``forward``.

    Race-free by construction: output locations are cut into slabs of ``slab`` index rows along
    spatial ``axis`` (0, 1, 2 = D, H, W), thick enough that the input windows of slabs i and
    i + ``phases`` never overlap (the caller picks the three numbers). Phase f runs the slabs
    f, f + phases, f + 2 * phases, ... in parallel, one phase after the other; batch chunks write
    disjoint memory too. No atomics, no per-thread copies, and the summation order does not depend
    on the number of threads.
    """
    cdef UGeom g = _geom(padsz, ksz, stride, dil, outsz)
    cdef Py_ssize_t K = C_in * g.KD * g.KH * g.KW, P = g.OD * g.OH * g.OW
    cdef Py_ssize_t nch = (N + NB - 1) // NB
    cdef Py_ssize_t per = line_stride((K + C_out) * NB + 2 * FC_SLACK, sizeof(floating))
    cdef Py_ssize_t O = g.OD if axis == 0 else (g.OH if axis == 1 else g.OW)
    cdef Py_ssize_t nslab = (O + slab - 1) // slab
    cdef Py_ssize_t units, u, s, p, n0, nb, od, oh, ow, co, j, a0, a1
    cdef Py_ssize_t d0, d1, h0, h1, w0, w1
    cdef int phase
    cdef bint micro = NB <= SMALL_N
    cdef floating* gyp = <floating*> &gy[0]  # read only
    cdef floating* wp = <floating*> &w[0]  # read only
    cdef floating* tp = &gxt[0]
    cdef floating* ws = _workspace(tp, nthreads, per)
    cdef Py_ssize_t* roff = _row_offsets(&g, C_in, N)
    cdef floating* col
    cdef floating* yb
    cdef floating* corner
    for phase in range(phases):
        units = ((nslab - phase + phases - 1) // phases) * nch
        if units <= 0:
            continue
        with nogil, parallel(num_threads=nthreads):
            col = ws + fc_thread_id() * per
            yb = col + K * NB + FC_SLACK
            for u in prange(units, schedule="dynamic"):
                s = phases * (u // nch) + phase
                n0 = (u % nch) * NB
                nb = NB if n0 + NB <= N else N - n0
                a0 = s * slab
                a1 = a0 + slab if a0 + slab <= O else O
                d0 = a0 if axis == 0 else 0
                d1 = a1 if axis == 0 else g.OD
                h0 = a0 if axis == 1 else 0
                h1 = a1 if axis == 1 else g.OH
                w0 = a0 if axis == 2 else 0
                w1 = a1 if axis == 2 else g.OW
                for od in range(d0, d1):
                    for oh in range(h0, h1):
                        for ow in range(w0, w1):
                            p = (od * g.OH + oh) * g.OW + ow
                            for co in range(C_out):
                                for j in range(nb):
                                    yb[co * nb + j] = gyp[((n0 + j) * C_out + co) * P + p]
                            corner = tp + _corner(&g, C_in, N, od, oh, ow) + n0
                            if micro:
                                # patch rows += W_p^T @ yb, straight into gxt
                                _umm(K, nb, C_out, wp + p * C_out * K, 1, K, NULL, yb, nb, NULL,
                                     True, corner, 0, roff)
                            else:
                                gemm(True, False, <int>K, <int>nb, <int>C_out, <floating>1,
                                     wp + p * C_out * K, <int>K, yb, <int>nb, <floating>0, col,
                                     <int>nb)
                                _patch(corner, col, roff, K, nb, True)
    free(roff)
    free(ws)


def backward_weight(const floating[::1] xt, const floating[::1] gy, floating[::1] gw,
                    Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out,
                    tuple padsz, tuple ksz, tuple stride, tuple dil, tuple outsz,
                    Py_ssize_t NB, int nthreads):
    """gw[p] = gy[:, :, p]^T @ patch_p^T, summed over batch chunks: each location owns its weight
    slice, so threads never write to the same memory.

    Few output channels: the micro-kernel computes gw[p]^T = patch @ gy (K x C_out, rows of
    C_out contiguous) into a per-thread tile, transposed into gw[p] once. Otherwise BLAS writes
    gw[p] directly from a copied patch.
    """
    cdef UGeom g = _geom(padsz, ksz, stride, dil, outsz)
    cdef Py_ssize_t K = C_in * g.KD * g.KH * g.KW, P = g.OD * g.OH * g.OW
    cdef bint micro = C_out <= SMALL_N
    cdef Py_ssize_t per = line_stride((K + C_out) * NB + 2 * FC_SLACK + (K * C_out if micro else 0),
                                      sizeof(floating))
    cdef Py_ssize_t p, n0, nb, od, oh, ow, co, j, r
    cdef floating* tp = <floating*> &xt[0]  # read only
    cdef floating* gyp = <floating*> &gy[0]  # read only
    cdef floating* gwp = &gw[0]
    cdef floating* ws = _workspace(tp, nthreads, per)
    cdef Py_ssize_t* roff = _row_offsets(&g, C_in, N)
    cdef floating* col
    cdef floating* yb
    cdef floating* gwt
    cdef floating* dst
    cdef floating* corner
    with nogil, parallel(num_threads=nthreads):
        col = ws + fc_thread_id() * per
        yb = col + K * NB + FC_SLACK
        gwt = yb + C_out * NB + FC_SLACK
        for p in prange(P, schedule="dynamic", chunksize=16):
            od = p // (g.OH * g.OW)
            oh = (p // g.OW) % g.OH
            ow = p % g.OW
            n0 = 0
            while n0 < N:
                nb = NB if n0 + NB <= N else N - n0
                corner = tp + _corner(&g, C_in, N, od, oh, ow) + n0
                if micro:
                    # yb = gy[n0:n0+nb, :, p] as nb x C_out; gwt (+)= patch @ yb
                    for j in range(nb):
                        for co in range(C_out):
                            yb[j * C_out + co] = gyp[((n0 + j) * C_out + co) * P + p]
                    _umm(K, C_out, nb, corner, 0, 1, roff, yb, C_out, NULL, n0 > 0, gwt, C_out,
                         NULL)
                else:
                    _patch(corner, col, roff, K, nb, False)
                    for co in range(C_out):
                        for j in range(nb):
                            yb[co * nb + j] = gyp[((n0 + j) * C_out + co) * P + p]
                    gemm(False, True, <int>C_out, <int>K, <int>nb, <floating>1, yb, <int>nb, col,
                         <int>nb, <floating>(0 if n0 == 0 else 1), gwp + p * C_out * K, <int>K)
                n0 = n0 + nb
            if micro:
                dst = gwp + p * C_out * K
                for co in range(C_out):
                    for r in range(K):
                        dst[co * K + r] = gwt[r * C_out + co]
    free(roff)
    free(ws)
