# cython: language_level=3
"""Convolution kernels: im2col/col2im tiles + BLAS GEMM, and a direct stencil.

Every kernel works on 3 spatial dimensions (D, H, W); 1-D and 2-D problems arrive with leading
spatial sizes of 1, so one loop nest serves every rank. The Python layer (fastconv/conv.py) has
validated every shape and argument before calling here: indices are not bounds-checked.

Layouts (C-contiguous, passed as flat buffers):
  x      (N, C_in,  D,  H,  W)
  w      (C_out, C_in/groups, KD, KH, KW)          -> row-major (C_out/groups) x K per group
  out    (N, C_out, OD, OH, OW)                    -> row-major (C_out/groups) x P per sample, group
  col    (K, T) tile, K = C_in/groups * KD*KH*KW, T output positions (a slice of P = OD*OH*OW)
"""
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
from fastconv._core._common cimport floating, gemm, fc_thread_id, line_stride, aligned_base
from fastconv import _workspace

cdef extern from "fc_simd.h" nogil:
    void fc_deinterleave2_f(float* dst, const float* row, Py_ssize_t lo, Py_ssize_t hi,
                            Py_ssize_t wq, int zero)
    void fc_deinterleave2_d(double* dst, const double* row, Py_ssize_t lo, Py_ssize_t hi,
                            Py_ssize_t wq, int zero)
    void fc_stencil3x3_block_f(float* dst, Py_ssize_t OW, const float* src, Py_ssize_t ld,
                               Py_ssize_t H, const float* zero, Py_ssize_t ph, Py_ssize_t oh0,
                               Py_ssize_t Rb, Py_ssize_t W, Py_ssize_t pw, const float* w, float bv)
    void fc_stencil3x3_block_d(double* dst, Py_ssize_t OW, const double* src, Py_ssize_t ld,
                               Py_ssize_t H, const double* zero, Py_ssize_t ph, Py_ssize_t oh0,
                               Py_ssize_t Rb, Py_ssize_t W, Py_ssize_t pw, const double* w,
                               double bv)
    void fc_subsample_f(float* dst, Py_ssize_t ldd, const float* x, Py_ssize_t plane,
                        Py_ssize_t nc, const Py_ssize_t* g, Py_ssize_t p0, Py_ssize_t TT)
    void fc_subsample_d(double* dst, Py_ssize_t ldd, const double* x, Py_ssize_t plane,
                        Py_ssize_t nc, const Py_ssize_t* g, Py_ssize_t p0, Py_ssize_t TT)
    void fc_transpose_f(const float* a, Py_ssize_t lda, float* b, Py_ssize_t ldb, Py_ssize_t R,
                        Py_ssize_t S, const float* bias)
    void fc_transpose_d(const double* a, Py_ssize_t lda, double* b, Py_ssize_t ldb, Py_ssize_t R,
                        Py_ssize_t S, const double* bias)


cdef struct Geom:
    # input spatial sizes, kernel sizes, strides, dilations, padding before, output sizes
    # (fc_im2row.h reads these 18 as an array, in this order)
    Py_ssize_t D, H, W, KD, KH, KW, sd, sh, sw, dd, dh, dw, pd, ph, pw, OD, OH, OW
    # forward: output-channel blocks per group (conv_forward's ``ncb``); the work unit of
    # (virtual) group gi reads the input channels of group gi // ncb
    Py_ssize_t ncb


cdef extern from "fc_im2row.h" nogil:
    void fc_im2row_f(float* xt, float* buf, Py_ssize_t ldb, Py_ssize_t ctot, Py_ssize_t c0,
                     Py_ssize_t nc, Py_ssize_t ks, const Py_ssize_t* g, Py_ssize_t p0, Py_ssize_t T)
    void fc_im2row_d(double* xt, double* buf, Py_ssize_t ldb, Py_ssize_t ctot, Py_ssize_t c0,
                     Py_ssize_t nc, Py_ssize_t ks, const Py_ssize_t* g, Py_ssize_t p0, Py_ssize_t T)
    void fc_row2im_f(float* xt, float* buf, Py_ssize_t ldb, Py_ssize_t ctot, Py_ssize_t c0,
                     Py_ssize_t nc, Py_ssize_t ks, const Py_ssize_t* g, Py_ssize_t p0, Py_ssize_t T)
    void fc_row2im_d(double* xt, double* buf, Py_ssize_t ldb, Py_ssize_t ctot, Py_ssize_t c0,
                     Py_ssize_t nc, Py_ssize_t ks, const Py_ssize_t* g, Py_ssize_t p0, Py_ssize_t T)
    void fc_rows_copy_f(float* d, Py_ssize_t ldd, const float* s, Py_ssize_t lds, Py_ssize_t nrows,
                        Py_ssize_t n)
    void fc_rows_copy_d(double* d, Py_ssize_t ldd, const double* s, Py_ssize_t lds,
                        Py_ssize_t nrows, Py_ssize_t n)
    void fc_run_copy_f(float* d, const float* s, Py_ssize_t n)
    void fc_run_copy_d(double* d, const double* s, Py_ssize_t n)
    void fc_run_add_f(float* d, const float* s, Py_ssize_t n)
    void fc_run_add_d(double* d, const double* s, Py_ssize_t n)


cdef inline void _im2row_tile(floating* xt, floating* buf, Py_ssize_t ldb, Py_ssize_t ctot,
                              Py_ssize_t c0, Py_ssize_t nc, const Geom* g, Py_ssize_t p0,
                              Py_ssize_t T, bint scatter, Py_ssize_t ks=0) noexcept nogil:
    """The im2row / row2im twins (fc_im2row.h): gather ``buf = im`` (zeros where the window reads
    padding) or scatter-add ``im += buf`` (skipping those entries: the exact adjoint). ``xt`` is one
    sample channels-last (D*H*W x ctot), the window covers channels [c0, c0 + nc); ``buf`` is
    row-major T x (KD*KH*KW*nc), row stride ``ldb``, row q the patch of output position p0 + q
    ordered (kd, kh, kw, c), ``ks`` apart from one kernel offset to the next (default nc). Geom is
    18 Py_ssize_t in the order the C code reads them."""
    cdef const Py_ssize_t* gv = <const Py_ssize_t*> g
    if ks == 0:
        ks = nc
    if floating is float:
        if scatter:
            fc_row2im_f(xt, buf, ldb, ctot, c0, nc, ks, gv, p0, T)
        else:
            fc_im2row_f(xt, buf, ldb, ctot, c0, nc, ks, gv, p0, T)
    else:
        if scatter:
            fc_row2im_d(xt, buf, ldb, ctot, c0, nc, ks, gv, p0, T)
        else:
            fc_im2row_d(xt, buf, ldb, ctot, c0, nc, ks, gv, p0, T)


cdef inline bint _pointwise(const Geom* g) noexcept nogil:
    # 1x1 kernel, stride 1, no padding: the channels-last input rows already are the patches
    return (g.KD == 1 and g.KH == 1 and g.KW == 1 and g.sd == 1 and g.sh == 1 and g.sw == 1
            and g.pd == 0 and g.ph == 0 and g.pw == 0 and g.OD == g.D and g.OH == g.H and g.OW == g.W)


cdef Geom _geom(tuple insz, tuple ksz, tuple stride, tuple dil, tuple pad, tuple outsz):
    cdef Geom g
    g.D, g.H, g.W = insz
    g.KD, g.KH, g.KW = ksz
    g.sd, g.sh, g.sw = stride
    g.dd, g.dh, g.dw = dil
    g.pd, g.ph, g.pw = pad
    g.OD, g.OH, g.OW = outsz
    g.ncb = 1
    return g


def tile_rows(Py_ssize_t K, Py_ssize_t P, Py_ssize_t itemsize, Py_ssize_t tile_bytes):
    """Output positions per im2row tile: the T x K tile stays within ``tile_bytes`` (one per thread)."""
    cdef Py_ssize_t T = tile_bytes // (K * itemsize)
    if T < 64:
        T = 64
    if T >= P:
        return P
    # balance the tiles so the last one is not a sliver
    cdef Py_ssize_t n = (P + T - 1) // T
    return (P + n - 1) // n


cdef inline void _transpose_tile(const floating* a, Py_ssize_t lda, floating* b, Py_ssize_t ldb,
                                 Py_ssize_t R, Py_ssize_t S, const floating* bias) noexcept nogil:
    """b[s * ldb + r] = a[r * lda + s] (+ bias[s] unless NULL): SIMD register tiles (fc_simd.h)."""
    if floating is float:
        fc_transpose_f(a, lda, b, ldb, R, S, bias)
    else:
        fc_transpose_d(a, lda, b, ldb, R, S, bias)


cdef inline void _transpose(const floating* a, floating* b, Py_ssize_t R, Py_ssize_t S) noexcept nogil:
    """b = a.T for a contiguous R x S matrix (one thread)."""
    _transpose_tile(a, S, b, R, R, S, NULL)


def transpose_last2(const floating[::1] src, floating[::1] dst, Py_ssize_t N, Py_ssize_t R,
                    Py_ssize_t S, int nthreads):
    """dst[n, s, r] = src[n, r, s] (NC(P) <-> N(P)C), in 256 x 256 blocks, parallel over blocks."""
    cdef Py_ssize_t B = 256
    cdef Py_ssize_t nbr = (R + B - 1) // B, nbs = (S + B - 1) // B, units = N * nbr * nbs
    cdef Py_ssize_t u, n, br, bs
    cdef const floating* sp = &src[0]
    cdef floating* dp = &dst[0]
    with nogil:
        for u in prange(units, schedule="static", num_threads=nthreads):
            bs = u % nbs
            br = (u // nbs) % nbr
            n = u // (nbs * nbr)
            _transpose_tile(sp + n * R * S + br * B * S + bs * B, S, dp + n * R * S + bs * B * R + br * B,
                            R, min(B, R - br * B), min(B, S - bs * B), NULL)


cdef inline void _forward_unit(floating* xs, floating* wq, floating* bp, floating* op,
                               floating* buf, floating* ct, bint pw, bint has_bias, const Geom* g,
                               Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t cig, Py_ssize_t cog,
                               Py_ssize_t K, Py_ssize_t P, Py_ssize_t gi, Py_ssize_t p0,
                               Py_ssize_t TT) noexcept nogil:
    """One tile: out[gi's channels, p0:p0+TT] of one sample (``xs`` channels-last, ``op`` the
    sample's NCHW output): im2row gather, GEMM with the packed weight, transposed write + bias."""
    if pw:
        gemm(False, False, <int>TT, <int>cog, <int>K, <floating>1, xs + p0 * C_in + (gi // g.ncb) * cig,
             <int>C_in, wq + gi * K * cog, <int>cog, <floating>0, ct, <int>cog)
    else:
        _im2row_tile(xs, buf, K, C_in, (gi // g.ncb) * cig, cig, g, p0, TT, False)
        gemm(False, False, <int>TT, <int>cog, <int>K, <floating>1, buf, <int>K,
             wq + gi * K * cog, <int>cog, <floating>0, ct, <int>cog)
    # the TT x cog result, transposed into the NCHW output with the bias added on the way
    _transpose_tile(ct, cog, op + gi * cog * P + p0, P, TT, cog, bp + gi * cog if has_bias else NULL)


cdef void _im2row_row(const floating* xt, floating* buf, Py_ssize_t K2, Py_ssize_t ctot,
                      Py_ssize_t c0, Py_ssize_t nc, const Geom* g, Py_ssize_t r, Py_ssize_t lo,
                      Py_ssize_t niw) noexcept nogil:
    """The im2row rows of the row-shift form for output row ``r`` (= (od, oh)) and input columns
    lo .. lo+niw: buf[q, ((kd*KH + kh)*nc + c)] = x[od*sd - pd + kd*dd, oh*sh - ph + kh*dh, lo + q,
    c0 + c], zero where the row lies in the padding. Kernel offset outermost: each (kd, kh) is one
    run of niw short contiguous copies with its bounds checked once."""
    cdef Py_ssize_t od = r // g.OH, oh = r - (r // g.OH) * g.OH, kd, kh, idd, ih
    cdef const floating* src
    cdef floating* dst
    for kd in range(g.KD):
        idd = od * g.sd - g.pd + kd * g.dd
        for kh in range(g.KH):
            ih = oh * g.sh - g.ph + kh * g.dh
            dst = buf + (kd * g.KH + kh) * nc
            if idd < 0 or idd >= g.D or ih < 0 or ih >= g.H:
                src = NULL
            else:
                src = xt + ((idd * g.H + ih) * g.W + lo) * ctot + c0
            if floating is float:
                fc_rows_copy_f(dst, K2, src, ctot, niw, nc)
            else:
                fc_rows_copy_d(dst, K2, src, ctot, niw, nc)


cdef inline void _forward_unit_rows(floating* xs, floating* wq, floating* bp, floating* op,
                                    floating* buf, floating* y, floating* ct, bint direct,
                                    bint has_bias, const Geom* g, Py_ssize_t C_in,
                                    Py_ssize_t cig, Py_ssize_t cog, Py_ssize_t K2, Py_ssize_t P,
                                    Py_ssize_t gi, Py_ssize_t r0, Py_ssize_t nr, Py_ssize_t ow0,
                                    Py_ssize_t now) noexcept nogil:
    """Row-shift tile (stride 1 along W): output rows r0 .. r0+nr (a row = one (od, oh)), columns
    ow0 .. ow0+now, of one sample and group.

    The GEMM runs over input columns instead of output columns, with the KW taps of a kernel row
    side by side in its N dimension: y[(row, iw), (kw, co)] = sum over (kd, kh, c) of
    x[od+kd, oh+kh, iw, c] * w[co, c, kd, kh, kw] -- an im2row tile KW times narrower
    (_im2row_row) and a weight KW times wider, which suits BLAS
    better when C_out/groups is small. The KW taps are then summed with their column shifts,
    out[ow, co] = sum over kw of y[ow - pw + kw*dw, (kw, co)] (a col2im along W: taps that land in
    the padding are skipped), and the tile is written transposed into the NCHW output with the bias.
    ``direct``: the input rows themselves are the im2row rows (the kernel is 1 along D and H).
    """
    cdef Py_ssize_t KW = g.KW, KWc = g.KW * cog, W = g.W, OW = g.OW
    cdef Py_ssize_t lo = ow0 - g.pw, hi = ow0 + now - g.pw + (KW - 1) * g.dw
    cdef Py_ssize_t j, kw, ow, a, b, off, niw
    cdef floating* yrow
    cdef floating* crow
    if lo < 0:
        lo = 0
    if hi > W:
        hi = W
    niw = hi - lo
    if niw <= 0:
        # every tap of these outputs lies in the padding: the bias alone
        memset(ct, 0, nr * now * cog * sizeof(floating))
    else:
        if direct and (nr == 1 or niw == W):
            gemm(False, False, <int>(nr * niw), <int>KWc, <int>K2, <floating>1,
                 xs + (r0 * W + lo) * C_in + (gi // g.ncb) * cig, <int>C_in, wq + gi * K2 * KWc, <int>KWc,
                 <floating>0, y, <int>KWc)
        else:
            for j in range(nr):
                _im2row_row(xs, buf + j * niw * K2, K2, C_in, (gi // g.ncb) * cig, cig, g, r0 + j, lo, niw)
            gemm(False, False, <int>(nr * niw), <int>KWc, <int>K2, <floating>1, buf, <int>K2,
                 wq + gi * K2 * KWc, <int>KWc, <floating>0, y, <int>KWc)
        for j in range(nr):
            yrow = y + j * niw * KWc
            crow = ct + j * now * cog
            for kw in range(KW):
                off = kw * g.dw - g.pw - lo          # y row of output column ow: ow + off
                a = ow0 if ow0 + off >= 0 else -off
                b = ow0 + now if ow0 + now + off <= niw else niw - off
                if kw == 0:
                    # the first tap assigns; the columns it does not reach start at zero
                    if b < ow0:
                        b = ow0
                    if a > b:
                        a = b
                    memset(crow, 0, (a - ow0) * cog * sizeof(floating))
                    memset(crow + (b - ow0) * cog, 0, (ow0 + now - b) * cog * sizeof(floating))
                    for ow in range(a, b):
                        if floating is float:
                            fc_run_copy_f(crow + (ow - ow0) * cog, yrow + (ow + off) * KWc, cog)
                        else:
                            fc_run_copy_d(crow + (ow - ow0) * cog, yrow + (ow + off) * KWc, cog)
                    continue
                for ow in range(a, b):
                    if floating is float:
                        fc_run_add_f(crow + (ow - ow0) * cog, yrow + (ow + off) * KWc + kw * cog, cog)
                    else:
                        fc_run_add_d(crow + (ow - ow0) * cog, yrow + (ow + off) * KWc + kw * cog, cog)
    _transpose_tile(ct, cog, op + gi * cog * P + r0 * OW + ow0, P, nr * now, cog,
                    bp + gi * cog if has_bias else NULL)


# ---------------------------------------------------------------------------------------------
# Winograd minimal filtering F(m, r) per axis (stride 1, dilation 1): fewer multiplications
# ---------------------------------------------------------------------------------------------

cdef struct WGeom:
    # output tile m, input tile a = m + r - 1 per axis (D, H, W); tiles per axis; A = a0*a1*a2
    Py_ssize_t m0, m1, m2, a0, a1, a2, nty, ntx, A
    # work units: blocks of rb tile rows x ncols tile columns (nct column chunks, nrows tile rows,
    # Tb = rb * ncols tiles); per-thread scratch: V | M | ob (so elements) | p, q (sp each)
    Py_ssize_t rb, ncols, nct, nrows, Tb, so, sp, groups
    # D taps in the GEMM depth instead of transformed (kdd = KD; 1: every axis transformed)
    Py_ssize_t kdd
    # the specialised pass (fc_wino.h) of each axis' B^T and A^T
    int kbt[3]
    int kat[3]
    # F(2 x 2, 3 x 3) on (H, W) only: the fused two-pass transforms (fc_wino_in23 / out23)
    bint f23
    # 1-D F(4, 5) on channels-first rows (_wino_row_block)
    bint ncl


cdef extern from "fc_wino.h" nogil:
    void fc_wpass_f(const float* src, Py_ssize_t sos, Py_ssize_t sks, Py_ssize_t sjs, float* dst,
                    Py_ssize_t dos, Py_ssize_t dis, Py_ssize_t djs, const float* mat,
                    Py_ssize_t outer, Py_ssize_t nout, Py_ssize_t nin, Py_ssize_t nchunk,
                    Py_ssize_t nc, int kind)
    void fc_wpass_d(const double* src, Py_ssize_t sos, Py_ssize_t sks, Py_ssize_t sjs,
                    double* dst, Py_ssize_t dos, Py_ssize_t dis, Py_ssize_t djs,
                    const double* mat, Py_ssize_t outer, Py_ssize_t nout, Py_ssize_t nin,
                    Py_ssize_t nchunk, Py_ssize_t nc, int kind)
    int fc_wpass_kind_f(const float* mat, Py_ssize_t nin, Py_ssize_t nout)
    void fc_wino_t_f(int kind, const float* src, Py_ssize_t srs, Py_ssize_t scs, float* dst,
                     Py_ssize_t dvs, Py_ssize_t nc)
    void fc_wino_t_d(int kind, const double* src, Py_ssize_t srs, Py_ssize_t scs, double* dst,
                     Py_ssize_t dvs, Py_ssize_t nc)
    int fc_within_f(const float* a, Py_ssize_t n, float lim)
    int fc_within_d(const double* a, Py_ssize_t n, double lim)
    int fc_wpass_kind_d(const double* mat, Py_ssize_t nin, Py_ssize_t nout)
    enum:
        FC_WK_BT23
        FC_WK_AT23
        FC_WK_BT45
        FC_WK_AT45
    int fc_wino45_ncl_available()
    void fc_wino45_in8_f(const float* x, Py_ssize_t ldx, Py_ssize_t W, Py_ssize_t ix0,
                         Py_ssize_t nt, float* V, Py_ssize_t ldv, Py_ssize_t vs)
    void fc_wino45_out8_f(const float* M, Py_ssize_t ldm, Py_ssize_t ms, float* y, Py_ssize_t ldy,
                          Py_ssize_t nt, Py_ssize_t n, const float* bias, unsigned char* bad)
    void fc_wino_in23_f(const float* src, Py_ssize_t srs, Py_ssize_t scs, float* dst,
                        Py_ssize_t dvs, Py_ssize_t nc)
    void fc_wino_in23_d(const double* src, Py_ssize_t srs, Py_ssize_t scs, double* dst,
                        Py_ssize_t dvs, Py_ssize_t nc)
    void fc_wino_out23_f(const float* src, Py_ssize_t svs, float* dst, Py_ssize_t drs,
                         Py_ssize_t dcs, Py_ssize_t nc)
    void fc_wino_out23_d(const double* src, Py_ssize_t svs, double* dst, Py_ssize_t drs,
                         Py_ssize_t dcs, Py_ssize_t nc)


cdef inline void _wpass(const floating* src, Py_ssize_t sos, Py_ssize_t sks, Py_ssize_t sjs,
                        floating* dst, Py_ssize_t dos, Py_ssize_t dis, Py_ssize_t djs,
                        const floating* mat, Py_ssize_t outer, Py_ssize_t nout, Py_ssize_t nin,
                        Py_ssize_t nchunk, Py_ssize_t nc, int kind) noexcept nogil:
    """One axis of a separable transform on vectors of ``nc`` contiguous channels:
    dst[o, i, j] = sum_k mat[i, k] * src[o, k, j], where vector (o, k, j) of src starts at
    src + o*sos + k*sks + j*sjs and vector (o, i, j) of dst at dst + o*dos + i*dis + j*djs -- so a
    pass can read straight from the input or a GEMM result and write straight into the next GEMM's
    operand or the output rows (fc_wino.h: the F(2, 3) and F(4, 5) matrices written out, ``kind``
    from _wpass_kind; other matrices a dense pass; vectorised over channels)."""
    if floating is float:
        fc_wpass_f(src, sos, sks, sjs, dst, dos, dis, djs, mat, outer, nout, nin, nchunk, nc, kind)
    else:
        fc_wpass_d(src, sos, sks, sjs, dst, dos, dis, djs, mat, outer, nout, nin, nchunk, nc, kind)


cdef inline int _wpass_kind(const floating* mat, Py_ssize_t nin, Py_ssize_t nout) noexcept nogil:
    """The specialised pass (fc_wino.h) a transform matrix takes; 0: the dense one."""
    if floating is float:
        return fc_wpass_kind_f(mat, nin, nout)
    else:
        return fc_wpass_kind_d(mat, nin, nout)


cdef inline void _wsplit(const Py_ssize_t* dims, Py_ssize_t ax, Py_ssize_t* outer,
                         Py_ssize_t* nch) noexcept nogil:
    """A pass along axis ``ax`` of a (dims[0], dims[1], dims[2]) block of vectors: ``outer`` =
    the vectors before that axis, ``nch`` = those after it."""
    cdef Py_ssize_t c
    outer[0] = 1
    nch[0] = 1
    for c in range(ax):
        outer[0] *= dims[c]
    for c in range(ax + 1, 3):
        nch[0] *= dims[c]


cdef inline void _wino_gather(const floating* xs, Py_ssize_t ctot, Py_ssize_t c0, Py_ssize_t nc,
                              const Geom* g, const WGeom* w, Py_ssize_t iz, Py_ssize_t iy,
                              Py_ssize_t ix, floating* p) noexcept nogil:
    """p = the (a0, a1, a2) input tile at (iz, iy, ix), vectors of nc channels; zeros outside."""
    cdef Py_ssize_t i0, i1, i2, zz, yy, xx, c
    cdef floating* d
    cdef const floating* s
    for i0 in range(w.a0):
        zz = iz + i0
        for i1 in range(w.a1):
            yy = iy + i1
            d = p + (i0 * w.a1 + i1) * w.a2 * nc
            if zz < 0 or zz >= g.D or yy < 0 or yy >= g.H:
                memset(d, 0, w.a2 * nc * sizeof(floating))
                continue
            s = xs + ((zz * g.H + yy) * g.W) * ctot + c0
            for i2 in range(w.a2):
                xx = ix + i2
                if xx < 0 or xx >= g.W:
                    memset(d + i2 * nc, 0, nc * sizeof(floating))
                else:
                    for c in range(nc):
                        d[i2 * nc + c] = s[xx * ctot + c]


cdef inline void _wino_input_tile(const floating* xs, Py_ssize_t ctot, Py_ssize_t c0,
                                  Py_ssize_t nc, const Geom* g, const WGeom* w,
                                  const floating* bt, Py_ssize_t tz, Py_ssize_t ty,
                                  Py_ssize_t tx, floating* p, floating* q, floating* V,
                                  Py_ssize_t vstride) noexcept nogil:
    """V[xi, :nc] (vector xi at V + xi*vstride) = B^T d B of the input tile at tile coordinates
    (tz, ty, tx), channels [c0, c0+nc) of the channels-last sample ``xs``; zeros outside it.

    Passes along W, then H, then D (axes of size 1 skipped). An interior tile is read in place by
    the first pass; a border tile is gathered into ``p`` first. The last pass writes into V."""
    cdef Py_ssize_t iz = tz * w.m0 - g.pd, iy = ty * w.m1 - g.ph, ix = tx * w.m2 - g.pw
    cdef Py_ssize_t ax, last, outer, nin, nch, cs, scs
    cdef Py_ssize_t sos, sks, sjs, dos, dis, djs
    cdef Py_ssize_t dims[3]
    cdef Py_ssize_t sx[3]
    cdef const floating* mats[3]
    cdef const floating* src
    cdef floating* dst
    cdef floating* spare
    if w.f23:
        # one plane (a0 = 1), 4 x 4 tiles: both passes fused
        if iz >= 0 and iz < g.D and iy >= 0 and iy + 4 <= g.H and ix >= 0 and ix + 4 <= g.W:
            src = xs + ((iz * g.H + iy) * g.W + ix) * ctot + c0
            sos = g.W * ctot
            sjs = ctot
        else:
            _wino_gather(xs, ctot, c0, nc, g, w, iz, iy, ix, p)
            src = p
            sos = 4 * nc
            sjs = nc
        if floating is float:
            fc_wino_in23_f(src, sos, sjs, V, vstride, nc)
        else:
            fc_wino_in23_d(src, sos, sjs, V, vstride, nc)
        return
    dims[0] = w.a0
    dims[1] = w.a1
    dims[2] = w.a2
    mats[0] = bt
    mats[1] = bt + w.a0 * w.a0
    mats[2] = mats[1] + w.a1 * w.a1
    sx[0] = g.H * g.W * ctot
    sx[1] = g.W * ctot
    sx[2] = ctot
    last = 0 if w.a0 > 1 else (1 if w.a1 > 1 else 2)
    ax = 2 if w.a2 > 1 else (1 if w.a1 > 1 else 0)
    if (iz >= 0 and iz + w.a0 <= g.D and iy >= 0 and iy + w.a1 <= g.H and ix >= 0
            and ix + w.a2 <= g.W and not (ax == 2 and w.a0 > 1 and w.a1 > 1)):
        # in place: the outer axes of the first pass are one strided run (1-D, 2-D, or a 1-wide axis)
        src = xs + ((iz * g.H + iy) * g.W + ix) * ctot + c0
        sks = sx[ax]
        sjs = ctot
        if ax == 2:
            sos = sx[1] if w.a1 > 1 else sx[0]
        elif ax == 1:
            sos = sx[0]
        else:
            sos = 0
        scs = 0
        spare = p
    else:
        _wino_gather(xs, ctot, c0, nc, g, w, iz, iy, ix, p)
        src = p
        scs = nc
        spare = q
    while True:
        _wsplit(dims, ax, &outer, &nch)
        nin = dims[ax]
        if scs:
            # the source is a contiguous (dims, vectors scs apart) block
            sjs = scs
            sks = nch * scs
            sos = nin * sks
        if ax == last:
            dst = V
            cs = vstride
        else:
            dst = spare
            cs = nc
        djs = cs
        dis = nch * cs
        dos = nin * dis
        _wpass(src, sos, sks, sjs, dst, dos, dis, djs, mats[ax], outer, nin, nin, nch, nc, w.kbt[ax])
        if ax == last:
            break
        # the next pass reads this one's result (contiguous (a0, a1, a2) vectors of nc); the other
        # buffer takes its output
        src = dst
        scs = nc
        spare = q if dst == p else p
        ax -= 1
        while dims[ax] == 1:
            ax -= 1


cdef inline void _wino_output_tile(const floating* M, Py_ssize_t mstride, floating* ob,
                                   Py_ssize_t ldo, Py_ssize_t cog, const WGeom* w,
                                   const floating* at, floating* p, floating* q) noexcept nogil:
    """ob[(z*m1 + y)*ldo + x*cog + co] = (A^T m A)[z, y, x, co] for the GEMM results of one tile
    (vector xi at M + xi*mstride). Passes along D, then H, then W (axes of size 1 skipped); the
    first reads M in place, the last writes the output rows."""
    cdef Py_ssize_t ax, last, outer, nin, nout, nch, sos, sks, sjs, dos, dis, djs
    cdef Py_ssize_t scs = mstride
    cdef Py_ssize_t dims[3]
    cdef Py_ssize_t mo[3]
    cdef Py_ssize_t so[3]
    cdef const floating* mats[3]
    cdef const floating* src = M
    cdef floating* dst
    cdef floating* spare = p
    if w.f23:
        if floating is float:
            fc_wino_out23_f(M, mstride, ob, ldo, cog, cog)
        else:
            fc_wino_out23_d(M, mstride, ob, ldo, cog, cog)
        return
    dims[0] = w.a0
    dims[1] = w.a1
    dims[2] = w.a2
    mo[0] = w.m0
    mo[1] = w.m1
    mo[2] = w.m2
    so[0] = w.m1 * ldo
    so[1] = ldo
    so[2] = cog
    mats[0] = at
    mats[1] = at + w.m0 * w.a0
    mats[2] = mats[1] + w.m1 * w.a1
    ax = 0 if w.a0 > 1 else (1 if w.a1 > 1 else 2)
    last = 2 if w.a2 > 1 else (1 if w.a1 > 1 else 0)
    while True:
        # the source (M, then the scratch) is a contiguous block of vectors scs apart
        _wsplit(dims, ax, &outer, &nch)
        nin = dims[ax]
        sjs = scs
        sks = nch * scs
        sos = nin * sks
        nout = mo[ax]
        dims[ax] = nout
        if ax == last:
            # the axes after the last pass have size 1; those before it are whole output rows
            dis = so[ax]
            dos = so[ax - 1] if ax > 0 else 0
            djs = cog
            _wpass(src, sos, sks, sjs, ob, dos, dis, djs, mats[ax], outer, nout, nin, nch, cog,
                   w.kat[ax])
            return
        dst = spare
        djs = cog
        dis = nch * cog
        dos = nout * dis
        _wpass(src, sos, sks, sjs, dst, dos, dis, djs, mats[ax], outer, nout, nin, nch, cog,
               w.kat[ax])
        src = dst
        scs = cog
        spare = q if dst == p else p
        ax += 1
        while dims[ax] == 1:
            ax += 1


cdef inline bint _finite(const floating* a, Py_ssize_t n) noexcept nogil:
    """No NaN or infinity among a[:n] (x - x is 0 for finite x, NaN otherwise; 8 partial sums)."""
    cdef floating s[8]
    cdef Py_ssize_t i, j
    for j in range(8):
        s[j] = 0
    for i in range(0, n - n % 8, 8):
        for j in range(8):
            s[j] += a[i + j] - a[i + j]
    for i in range(n - n % 8, n):
        s[0] += a[i] - a[i]
    for j in range(1, 8):
        s[0] += s[j]
    return s[0] == s[0]


cdef inline Py_ssize_t _wino_ld(Py_ssize_t A, Py_ssize_t nc) noexcept nogil:
    # row stride of the V and M blocks: one row per tile holds its A vectors of nc channels, plus
    # 16 spare elements so that rows are not 4 KiB apart (BLAS reads them in strided groups)
    return A * nc + 16


cdef inline void _wino_gemms(floating* V, floating* U, floating* M, Py_ssize_t TT, Py_ssize_t kc,
                             Py_ssize_t cog, Py_ssize_t ldv, Py_ssize_t ldm, const WGeom* w,
                             Py_ssize_t gi) noexcept nogil:
    """M[:, xi] (TT x cog, row stride ldm) = V[:, xi] (TT x kc, row stride ldv) @ U[xi, gi] for
    every transform point xi: one BLAS GEMM each."""
    cdef Py_ssize_t xi
    for xi in range(w.A):
        gemm(False, False, <int>TT, <int>cog, <int>kc, <floating>1, V + xi * kc, <int>ldv,
             U + (xi * w.groups + gi) * kc * cog, <int>cog, <floating>0, M + xi * cog, <int>ldm)


cdef void _wino_block(floating* xs, floating* U, floating* wq, floating* bp, floating* op,
                      floating* V, floating* M, floating* ob, floating* p, floating* q,
                      const floating* bt, const floating* at, bint has_bias, const Geom* g,
                      const WGeom* w, Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t cig,
                      Py_ssize_t cog, Py_ssize_t P, Py_ssize_t gi, Py_ssize_t r0, Py_ssize_t nr,
                      Py_ssize_t tx0, Py_ssize_t ncols) noexcept nogil:
    """Tile rows r0 .. r0+nr (a tile row = one (tz, ty)), tile columns tx0 .. tx0+ncols, of one
    sample (``xs`` channels-last, ``op`` its NCHW output) and group ``gi``:

    1. V (TT x A*cig, row stride ldv) = input transforms of the TT = nr*ncols tiles, one row per
       tile holding its A transform points' vectors of cig channels side by side (w.kdd > 1:
       A*kdd vectors, the kdd input planes of each point side by side);
    2. M[:, xi] (TT x cog) = V[:, xi] @ U[xi, gi] for each transform point xi (BLAS, strided;
       w.kdd > 1: kdd*cig deep, the sum over the D taps done by the GEMM);
    3. output transforms A^T M A of every tile into ``ob`` (channels-last rows); each output
       row then written transposed into the NCHW output with the bias -- unless the row holds a
       NaN or infinity: the transforms mix neighbouring inputs, so a non-finite input (or an
       overflow) can spoil outputs whose windows never saw it; such rows are redone with the
       im2row GEMM (``wq``).
    """
    cdef Py_ssize_t TT = nr * ncols, A = w.A, j, tx, tz, ty, z, y, od, oh, ox0, ncv, k0, kk
    cdef Py_ssize_t OWc = ncols * w.m2, kvol = g.KD * g.KH * g.KW, K = cig * kvol, dd
    cdef Py_ssize_t kc = w.kdd * cig, ldv = _wino_ld(A * w.kdd, cig), ldm = _wino_ld(A, cog)
    cdef Py_ssize_t Tb = w.Tb
    cdef floating* d
    for j in range(nr):
        tz = (r0 + j) // w.nty
        ty = (r0 + j) - tz * w.nty
        for tx in range(ncols):
            # with the D taps in the GEMM depth (kdd > 1, one output plane per tile): the planes
            # of the kdd taps, each transformed along H and W, side by side per transform point
            for dd in range(w.kdd):
                _wino_input_tile(xs, C_in, (gi // g.ncb) * cig, cig, g, w, bt, tz + dd, ty, tx0 + tx, p, q,
                                 V + (j * ncols + tx) * ldv + dd * cig, kc)
    _wino_gemms(V, U, M, TT, kc, cog, ldv, ldm, w, gi)
    ox0 = tx0 * w.m2
    ncv = OWc if ox0 + OWc <= g.OW else g.OW - ox0
    # output transforms of every tile into ob: (tile row, z, y, OWc, cog)
    for j in range(nr):
        for tx in range(ncols):
            _wino_output_tile(M + (j * ncols + tx) * ldm, cog,
                              ob + (j * w.m0 * w.m1 * OWc + tx * w.m2) * cog, OWc * cog, cog, w,
                              at, p, q)
    # then each output row: transposed into the NCHW output, or (non-finite) redone by im2row GEMM
    # in chunks that fit V and M, which are free now
    for j in range(nr):
        tz = (r0 + j) // w.nty
        ty = (r0 + j) - tz * w.nty
        for z in range(w.m0):
            od = tz * w.m0 + z
            for y in range(w.m1):
                oh = ty * w.m1 + y
                if od >= g.OD or oh >= g.OH:
                    continue
                d = ob + ((j * w.m0 + z) * w.m1 + y) * OWc * cog
                if _finite(d, ncv * cog):
                    _transpose_tile(d, cog, op + gi * cog * P + (od * g.OH + oh) * g.OW + ox0, P,
                                    ncv, cog, bp + gi * cog if has_bias else NULL)
                    continue
                k0 = 0
                while k0 < ncv:
                    kk = Tb if k0 + Tb <= ncv else ncv - k0
                    _im2row_tile(xs, V, K, C_in, (gi // g.ncb) * cig, cig, g,
                                 (od * g.OH + oh) * g.OW + ox0 + k0, kk, False)
                    gemm(False, False, <int>kk, <int>cog, <int>K, <floating>1, V, <int>K,
                         wq + gi * K * cog, <int>cog, <floating>0, M, <int>cog)
                    _transpose_tile(M, cog, op + gi * cog * P + (od * g.OH + oh) * g.OW + ox0 + k0,
                                    P, kk, cog, bp + gi * cog if has_bias else NULL)
                    k0 = k0 + kk


def wino45_ncl_available():
    """Whether this build has the channels-first 1-D F(4, 5) kernels (AVX2/FMA)."""
    return bool(fc_wino45_ncl_available())


cdef void _wino_row_block(const floating* xs, floating* U, floating* wq, floating* bp,
                          floating* op, floating* V, floating* M, unsigned char* bad,
                          bint has_bias, const Geom* g, const WGeom* w, Py_ssize_t cig,
                          Py_ssize_t cog, Py_ssize_t gi, Py_ssize_t tx0,
                          Py_ssize_t nt) noexcept nogil:
    """1-D F(4, 5) on channels-first rows, float (``w.ncl``; ``xs`` NCHW, not channels-last): tiles tx0 .. tx0+nt of one sample
    (``xs`` its (C_in, W) input, ``op`` its (C_out, OW) output) and group ``gi``, 8 channels at a
    time, the transposes fused into the transforms (fc_wino45_in8_f / out8_f):

    1. V (nt x 8*cig, row stride ldv, as in _wino_block) = B^T of every tile, read straight from
       the input rows;
    2. M[:, xi] = V[:, xi] @ U[xi, gi] for the 8 transform points (BLAS);
    3. A^T of M written straight into the output rows with the bias; the tiles whose outputs are
       not all finite (a NaN or infinity in the input, or an overflow, which the transforms
       spread) are redone as the direct sum (``wq`` packed per group as (kw, c) x cog).
    """
    cdef Py_ssize_t A = w.A, ldv = _wino_ld(A, cig), ldm = _wino_ld(A, cog), c8, co8, t, o
    cdef Py_ssize_t ox0 = tx0 * 4, W = g.W, K = cig * g.KW, ncv, co, k, c, ii, i
    cdef floating acc
    cdef const floating* wk
    ncv = nt * 4 if ox0 + nt * 4 <= g.OW else g.OW - ox0
    if floating is float:
        for c8 in range(0, cig, 8):
            fc_wino45_in8_f(xs + ((gi // g.ncb) * cig + c8) * W, W, W, ox0 - g.pw, nt, V + c8, ldv, cig)
    _wino_gemms(V, U, M, nt, cig, cog, ldv, ldm, w, gi)
    for co8 in range(0, cog, 8):
        memset(bad, 0, nt)
        if floating is float:
            fc_wino45_out8_f(M + co8, ldm, cog, op + (gi * cog + co8) * g.OW + ox0, g.OW, nt, ncv,
                             bp + gi * cog + co8 if has_bias else NULL, bad)
        for t in range(nt):
            if not bad[t]:
                continue
            for co in range(co8, co8 + 8):
                wk = wq + gi * K * cog + co
                for i in range(4):
                    o = 4 * t + i
                    if o >= ncv:
                        break
                    acc = bp[gi * cog + co] if has_bias else 0
                    for k in range(g.KW):
                        ii = ox0 + o + k - g.pw
                        if 0 <= ii < W:
                            for c in range(cig):
                                acc = acc + wk[(k * cig + c) * cog] * xs[((gi // g.ncb) * cig + c) * W + ii]
                    op[(gi * cog + co) * g.OW + ox0 + o] = acc


cdef inline void _forward_tile(floating* xs, floating* wq, floating* bp, floating* op,
                               floating* buf, floating* y, floating* ct, bint pw, bint direct,
                               bint has_bias, const Geom* g, Py_ssize_t C_in,
                               Py_ssize_t C_out, Py_ssize_t cig, Py_ssize_t cog, Py_ssize_t K,
                               Py_ssize_t K2, Py_ssize_t P, Py_ssize_t gi, Py_ssize_t t,
                               Py_ssize_t T, Py_ssize_t R, Py_ssize_t CW,
                               Py_ssize_t nct, floating* U, const floating* bt,
                               const floating* at, const WGeom* w) noexcept nogil:
    """Tile ``t`` of one (sample, group): T output positions (R == 0), R output rows by CW
    output columns of the row-shift form (``nct`` column chunks per row block), or (``w`` not
    NULL) a Winograd block of w.rb tile rows x w.ncols tile columns (``buf``, ``y``, ``ct`` are
    its V, M and ob; p and q follow ob)."""
    cdef Py_ssize_t p0, r0, ow0, rows = g.OD * g.OH
    if w != NULL and w.ncl:
        # one tile row (rb == 1): column chunk t; ob (unused here) holds the non-finite flags
        ow0 = t * w.ncols
        _wino_row_block(xs, U, wq, bp, op, buf, y, <unsigned char*> ct, has_bias, g, w, cig, cog,
                        gi, ow0, w.ncols if ow0 + w.ncols <= w.ntx else w.ntx - ow0)
    elif w != NULL:
        r0 = (t // w.nct) * w.rb
        ow0 = (t % w.nct) * w.ncols
        _wino_block(xs, U, wq, bp, op, buf, y, ct, ct + w.so, ct + w.so + w.sp, bt, at, has_bias,
                    g, w, C_in, C_out, cig, cog, P, gi, r0,
                    w.rb if r0 + w.rb <= w.nrows else w.nrows - r0, ow0,
                    w.ncols if ow0 + w.ncols <= w.ntx else w.ntx - ow0)
    elif R == 0:
        p0 = t * T
        _forward_unit(xs, wq, bp, op, buf, ct, pw, has_bias, g, C_in, C_out, cig, cog, K, P, gi,
                      p0, T if p0 + T <= P else P - p0)
    else:
        r0 = (t // nct) * R
        ow0 = (t % nct) * CW
        _forward_unit_rows(xs, wq, bp, op, buf, y, ct, direct, has_bias, g, C_in, cig, cog,
                           K2, P, gi, r0, R if r0 + R <= rows else rows - r0, ow0,
                           CW if ow0 + CW <= g.OW else g.OW - ow0)


def conv_pointwise(floating[::1] x, floating[::1] w, floating[::1] bias, floating[::1] out,
                   Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t groups, Py_ssize_t P,
                   Py_ssize_t T, bint has_bias, bint adjoint, int nthreads, Py_ssize_t ncb=1,
                   tuple insz=None, tuple stride=None, tuple outsz=None):
    """A 1 x 1 kernel with no padding on NCHW data: per (sample, group, tile of T positions) one
    GEMM straight on the NCHW rows -- no im2col, no transposes.

    ``w`` is the weight as stored, (C_out, C_in/groups) row-major per group. Forward: ``x``
    (N, C_in, P) -> ``out`` (N, C_out, P) = W_g @ x_g (+ bias). ``adjoint`` (the input gradient /
    transposed convolution): ``x`` (N, C_out, P) -> ``out`` (N, C_in, P) = W_g^T @ x_g (``bias``
    unused). Tiles depend only on the shapes, so results do not depend on the thread count.

    Forward only: ``ncb`` > 1 splits each group's output channels into that many blocks (more work
    units for a small image, as conv_forward's ``ncb``); ``stride`` (3-d, with ``insz`` and
    ``outsz``, P = prod(outsz)) subsamples the input: each unit first copies the strided positions
    of its tile into a per-thread C_in/groups x T block (fc_subsample, fc_simd.h)."""
    cdef Py_ssize_t cig = C_in // groups, cog = C_out // groups
    cdef Py_ssize_t ns = cog if adjoint else cig, nd = cig if adjoint else cog
    cdef Py_ssize_t S = C_out if adjoint else C_in, Dc = C_in if adjoint else C_out
    cdef Py_ssize_t nb = nd // ncb
    cdef Py_ssize_t ntiles = (P + T - 1) // T, units = N * groups * ncb * ntiles
    cdef Py_ssize_t u, t, gi, cb, n, p0, TT, r, q, plane = P, per = 0
    cdef Py_ssize_t sub[7]
    cdef bint strided = stride is not None
    cdef floating* xp = &x[0]
    cdef floating* wp = &w[0]
    cdef floating* op = &out[0]
    cdef floating* bp = &bias[0]
    cdef floating* dst
    cdef floating* src
    cdef floating* buf = NULL
    cdef floating* wb = NULL
    cdef Py_ssize_t lds = P
    cdef floating bv
    cdef int nt = nthreads if nthreads > 0 else 1
    blk = None
    if adjoint and (strided or ncb != 1):
        raise ValueError("conv_pointwise: output-channel blocks and strides are forward only")
    if strided:
        sub[0], sub[1] = insz[1], insz[2]
        sub[2], sub[3], sub[4] = stride
        sub[5], sub[6] = outsz[1], outsz[2]
        plane = insz[0] * insz[1] * insz[2]
        per = line_stride(cig * T, sizeof(floating))
        blk = _workspace.take(nt * per * sizeof(floating))
        wb = <floating*> aligned_base(blk)
        lds = T
    try:
        with nogil, parallel(num_threads=nt):
            if strided:
                buf = wb + fc_thread_id() * per
            for u in prange(units, schedule="dynamic"):
                t = u % ntiles
                cb = (u // ntiles) % ncb
                gi = (u // (ntiles * ncb)) % groups
                n = u // (ntiles * ncb * groups)
                p0 = t * T
                TT = T if p0 + T <= P else P - p0
                dst = op + (n * Dc + gi * nd + cb * nb) * P + p0
                if strided:
                    src = buf
                    if floating is float:
                        fc_subsample_f(buf, T, xp + (n * S + gi * ns) * plane, plane, ns, sub, p0, TT)
                    else:
                        fc_subsample_d(buf, T, xp + (n * S + gi * ns) * plane, plane, ns, sub, p0, TT)
                else:
                    src = xp + (n * S + gi * ns) * P + p0
                gemm(adjoint, False, <int>nb, <int>TT, <int>ns, <floating>1,
                     wp + (gi * cog + cb * nb) * cig,
                     <int>(nd if adjoint else ns), src, <int>lds, <floating>0, dst, <int>P)
                if has_bias:
                    for r in range(nb):
                        bv = bp[gi * nd + cb * nb + r]
                        for q in range(TT):
                            dst[r * P + q] = dst[r * P + q] + bv
    finally:
        if strided:
            _workspace.give(blk)


def conv_forward(floating[::1] x, floating[::1] wp, floating[::1] bias, floating[::1] out,
                 Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t groups,
                 tuple insz, tuple ksz, tuple stride, tuple dil, tuple pad, tuple outsz,
                 bint has_bias, Py_ssize_t T, int nthreads, bint per_sample, Py_ssize_t R=0,
                 Py_ssize_t CW=0, bint direct=False, floating[::1] U=None,
                 floating[::1] bt=None, floating[::1] at=None, tuple mtile=None,
                 Py_ssize_t rb=0, Py_ssize_t ncols=0, Py_ssize_t kdd=1, bint ncl=False,
                 Py_ssize_t ncb=1):
    """out (NCHW) = conv + bias, GEMM on channels-last im2row tiles.

    ``wp`` is the weight packed per group as row-major K x (C_out/groups), K ordered
    (kd, kh, kw, c). Per work unit (sample, group, tile of T output positions) a thread gathers
    the T x K im2row tile, multiplies it by the packed weight (BLAS, one thread), and writes the
    T x C_out/groups result transposed into the NCHW output, adding the bias on the way.

    ``R > 0`` selects the row-shift form (stride 1 along W; see _forward_unit_rows): tiles of R
    output rows by CW output columns (R == 1 when a row is split), ``wp`` packed per group as
    row-major (C_in/groups*KD*KH) x (KW*C_out/groups), rows ordered (kd, kh, c), columns (kw, co).
    ``direct``: the kernel is 1 along D and H with stride 1 and no padding there, so the GEMM reads
    the channels-last input rows in place.

    ``U`` given selects Winograd's minimal filtering F(m, r) along each axis (stride 1, dilation
    1; see _wino_block): Y = A^T [(G g G^T) .* (B^T d B)] A per output tile of ``mtile``
    positions. ``U`` is the transformed weight, per transform point and group a (C_in/groups x
    C_out/groups) row-major block: (A, groups, cig, cog); ``bt`` = B^T of the D, H, W axes
    (a_i x a_i each, concatenated), ``at`` = A^T of each (m_i x a_i); ``wp`` is packed as for the
    im2row form (rows that come out non-finite are redone with it). Work units: blocks of ``rb``
    tile rows x ``ncols`` tile columns. ``kdd`` > 1 (= KD; ``mtile`` (1, m1, m2)): only the H and W
    axes are transformed, and the D taps go into the GEMM depth (U is then (A, groups,
    KD*cig, cog), rows ordered (kd, c); ``bt`` and ``at`` start with a 1 x 1 block for D).
    ``ncl`` (float, 1-D F(4, 5), channels per group multiples of 8, wino45_ncl_available()):
    ``x`` stays NCHW and the transposes are fused into the transforms (_wino_row_block), for
    every ``per_sample``.

    Tiles and blocks depend only on the shapes, so results do not depend on the thread count or
    batching. ``per_sample`` (enough samples for every thread): ``x`` is the NCHW input; a thread
    takes whole samples, transposing each into its own channels-last buffer (kept in cache, no
    input-sized copy). Otherwise ``x`` is already channels-last (N, D*H*W, C_in) and threads share
    the tiles.
    """
    cdef Geom g = _geom(insz, ksz, stride, dil, pad, outsz)
    cdef WGeom w
    cdef WGeom* wg = NULL
    cdef floating* up = NULL
    cdef floating* btp = NULL
    cdef floating* atp = NULL
    # ncb > 1: each group's output channels in ncb blocks, each block a work unit of its own (a
    # "virtual group" of the weight, U, bias and output, all packed that way by the caller) that
    # reads its real group's inputs -- so that a sample with fewer tiles than threads still keeps
    # them busy (its GEMMs split along C_out)
    cdef Py_ssize_t cig = C_in // groups
    groups = groups * ncb
    g.ncb = ncb
    cdef Py_ssize_t cog = C_out // groups
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW, K = cig * kvol, K2 = cig * g.KD * g.KH
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, plane = g.D * g.H * g.W
    cdef Py_ssize_t nct = 1, ncol = 0, ntiles
    cdef Py_ssize_t u, n, gi, t
    cdef bint pw = _pointwise(&g)
    cdef size_t nbuf, ny = 0, nc
    if U is not None:
        wg = &w
        w.m0, w.m1, w.m2 = mtile
        w.a0, w.a1, w.a2 = w.m0 + g.KD - 1, w.m1 + g.KH - 1, w.m2 + g.KW - 1
        w.kdd = kdd
        if kdd > 1:
            w.a0 = 1
        w.A = w.a0 * w.a1 * w.a2
        w.nty = (g.OH + w.m1 - 1) // w.m1
        w.ntx = (g.OW + w.m2 - 1) // w.m2
        w.nrows = (g.OD + w.m0 - 1) // w.m0 * w.nty
        w.rb, w.ncols, w.groups = rb, ncols, groups
        w.nct = (w.ntx + ncols - 1) // ncols
        w.Tb = rb * ncols
        w.so = line_stride(rb * w.m0 * w.m1 * ncols * w.m2 * cog, sizeof(floating))
        w.sp = line_stride(w.A * max(cig, cog), sizeof(floating))
        ntiles = (w.nrows + rb - 1) // rb * w.nct
        nbuf = w.Tb * _wino_ld(w.A * kdd, cig)
        ny = w.Tb * _wino_ld(w.A, cog)
        nc = w.so + 2 * w.sp
        up, btp, atp = &U[0], &bt[0], &at[0]
        w.kbt[0] = _wpass_kind(btp, w.a0, w.a0)
        w.kbt[1] = _wpass_kind(btp + w.a0 * w.a0, w.a1, w.a1)
        w.kbt[2] = _wpass_kind(btp + w.a0 * w.a0 + w.a1 * w.a1, w.a2, w.a2)
        w.kat[0] = _wpass_kind(atp, w.a0, w.m0)
        w.kat[1] = _wpass_kind(atp + w.m0 * w.a0, w.a1, w.m1)
        w.kat[2] = _wpass_kind(atp + w.m0 * w.a0 + w.m1 * w.a1, w.a2, w.m2)
        w.f23 = (w.a0 == 1 and w.kbt[1] == FC_WK_BT23 and w.kbt[2] == FC_WK_BT23
                 and w.kat[1] == FC_WK_AT23 and w.kat[2] == FC_WK_AT23)
        w.ncl = ncl
        if ncl:
            if not (floating is float and fc_wino45_ncl_available() and w.A == 8 and g.D == 1
                    and g.H == 1 and w.kbt[2] == FC_WK_BT45 and w.kat[2] == FC_WK_AT45
                    and cig % 8 == 0 and cog % 8 == 0 and rb == 1):
                raise ValueError("conv_forward: ncl needs the float 1-D F(4, 5) form")
            per_sample = False
    elif R > 0:
        nct = (g.OW + CW - 1) // CW
        ntiles = (g.OD * g.OH + R - 1) // R * nct
        ncol = min(g.W, CW + (g.KW - 1) * g.dw)
        nbuf = 0 if direct else R * ncol * K2
        ny = R * ncol * g.KW * cog
        nc = R * CW * cog
    else:
        ntiles = (P + T - 1) // T
        nbuf = 0 if pw else K * T
        nc = cog * T
    cdef Py_ssize_t units = N * groups * ntiles
    # per-thread scratch, one pooled block (fastconv/_workspace.py): buf | y | ct | xs
    # (the Winograd form: V | M | ob, p, q | xs)
    cdef Py_ssize_t sb = line_stride(nbuf, sizeof(floating)), sy = line_stride(ny, sizeof(floating))
    cdef Py_ssize_t sc = line_stride(nc, sizeof(floating))
    cdef Py_ssize_t per = sb + sy + sc + (line_stride(plane * C_in, sizeof(floating)) if per_sample else 0)
    cdef int nt = nthreads if nthreads > 0 else 1
    blk = _workspace.take(nt * per * sizeof(floating))
    cdef floating* wb = <floating*> aligned_base(blk)
    cdef floating* buf
    cdef floating* y
    cdef floating* ct
    cdef floating* xs
    cdef floating* xp = &x[0]
    cdef floating* wq = &wp[0]
    cdef floating* op = &out[0]
    cdef floating* bp = &bias[0]
    try:
        with nogil, parallel(num_threads=nt):
            buf = wb + fc_thread_id() * per
            y = buf + sb
            ct = y + sy
            xs = ct + sc
            if per_sample:
                for n in prange(N, schedule="dynamic"):
                    _transpose(xp + n * C_in * plane, xs, C_in, plane)
                    for gi in range(groups):
                        for t in range(ntiles):
                            _forward_tile(xs, wq, bp, op + n * C_out * P, buf, y, ct, pw, direct,
                                          has_bias, &g, C_in, C_out, cig, cog, K, K2, P, gi, t,
                                          T, R, CW, nct, up, btp, atp, wg)
            else:
                for u in prange(units, schedule="dynamic"):
                    t = u % ntiles
                    gi = (u // ntiles) % groups
                    n = u // (ntiles * groups)
                    _forward_tile(xp + n * plane * C_in, wq, bp, op + n * C_out * P, buf, y, ct,
                                  pw, direct, has_bias, &g, C_in, C_out, cig, cog, K, K2, P, gi,
                                  t, T, R, CW, nct, up, btp, atp, wg)
    finally:
        _workspace.give(blk)


cdef inline void _backward_input_unit(floating* gys, floating* wp, floating* gxs, floating* buf,
                                      const Geom* g, Py_ssize_t C_in, Py_ssize_t C_out,
                                      Py_ssize_t cig, Py_ssize_t cog, Py_ssize_t K, Py_ssize_t P,
                                      Py_ssize_t T, Py_ssize_t gi) noexcept nogil:
    """Every tile of one (sample, group): buf = gy_tile @ W_g (BLAS), then row2im scatter-adds it
    into the sample's channels-last input gradient ``gxs``."""
    cdef Py_ssize_t t, p0, TT
    for t in range((P + T - 1) // T):
        p0 = t * T
        TT = T if p0 + T <= P else P - p0
        _grad_input_gemm(gys, wp, buf, C_out, cog, K, gi, p0, TT)
        _im2row_tile(gxs, buf, K, C_in, gi * cig, cig, g, p0, TT, True)


cdef inline void _grad_input_gemm(const floating* gys, const floating* wp, floating* dst,
                                  Py_ssize_t C_out, Py_ssize_t cog, Py_ssize_t K, Py_ssize_t gi,
                                  Py_ssize_t p0, Py_ssize_t TT) noexcept nogil:
    """dst (TT x K) = the channels-last gy rows p0 .. p0 + TT of group gi @ W_gi (BLAS): the one
    GEMM of both forms of conv_backward_input, so that they give the same bits."""
    gemm(False, False, <int>TT, <int>K, <int>cog, <floating>1, gys + p0 * C_out + gi * cog,
         <int>C_out, wp + gi * cog * K, <int>K, <floating>0, dst, <int>K)


cdef inline void _wino_t_pass(int kind, const floating* src, Py_ssize_t srs, Py_ssize_t scs,
                              floating* dst, Py_ssize_t dvs, Py_ssize_t nc) noexcept nogil:
    """The written-out transforms of conv_transpose_winograd (fc_wino.h fc_wino_t_*): kind 1 / 2
    the input transform of a 3 x 3 / 2 x 2 tile, 3 the output transform of a 4 x 4 point grid."""
    if floating is float:
        fc_wino_t_f(kind, src, srs, scs, dst, dvs, nc)
    else:
        fc_wino_t_d(kind, src, srs, scs, dst, dvs, nc)


cdef inline void _ring_zero(floating* acc, Py_ssize_t RB, Py_ssize_t OW, Py_ssize_t cog,
                            Py_ssize_t* zrow, Py_ssize_t lim) noexcept nogil:
    """The ring of output rows of _wino_t_unit (rows from zrow[0] on are untouched): zero the
    slots of rows zrow[0] .. lim (exclusive)."""
    while zrow[0] < lim:
        memset(acc + (zrow[0] % RB) * OW * cog, 0, OW * cog * sizeof(floating))
        zrow[0] += 1


cdef inline void _ring_flush(const floating* acc, Py_ssize_t RB, Py_ssize_t OW, Py_ssize_t OHW,
                             Py_ssize_t cog, floating* op, Py_ssize_t* zrow, Py_ssize_t* done,
                             Py_ssize_t lim) noexcept nogil:
    """Write rows done[0] .. lim of the ring (complete: no later tile reaches them) into the NCHW
    output ``op`` (a plane per channel, OHW apart): transposed from the ring, or zeros for rows
    no tile reached (from zrow[0] on)."""
    cdef Py_ssize_t r = done[0], e = lim if lim < zrow[0] else zrow[0], s, cnt, c
    while r < e:
        s = r % RB
        cnt = RB - s if RB - s < e - r else e - r
        _transpose_tile(acc + s * OW * cog, cog, op + r * OW, OHW, cnt * OW, cog, NULL)
        r += cnt
    if r < lim:
        for c in range(cog):
            memset(op + c * OHW + r * OW, 0, (lim - r) * OW * sizeof(floating))
        zrow[0] = lim
    if lim > done[0]:
        done[0] = lim


cdef void _wino_t_unit(const floating* ys, floating* acc, floating* op, floating* V, floating* M,
                       floating* pb, floating* qb, const floating* U, const floating* mats,
                       const Py_ssize_t* z, Py_ssize_t gi) noexcept nogil:
    """All tiles of one (sample, group) of conv_transpose_winograd: ``ys`` the group's input
    channels-last (H*W x cig), ``op`` its NCHW output (cog planes of OH*OW). ``z``:
    H, W, OH, OW, sh, sw, ph, pw, mh, mw, ah, aw, cig, cog, groups, TB, fused (1: the written-out
    transforms of a 3 x 3 input tile, 2: of a 2 x 2 one, 0: the dense passes; 1 and 2 need
    a 4 x 4 point grid, whose output transform is then written out too), RB.

    The patches are summed in ``acc``, a ring of RB = min(OH, sh*ah) channels-last output rows
    (RB*OW x cog): the tiles go in order, a tile row reaches the sh*ah output rows from
    sh*ty*mh - ph on, so once tile row ty is done the rows below sh*(ty+1)*mh - ph are complete
    and are written out (transposed, while in cache), and their slots zeroed for the rows to come.
    Every output element receives the same additions in the same order as in a whole-plane
    accumulator."""
    cdef Py_ssize_t H = z[0], W = z[1], OH = z[2], OW = z[3], sh = z[4], sw = z[5]
    cdef Py_ssize_t ph = z[6], pw = z[7], mh = z[8], mw = z[9], ah = z[10], aw = z[11]
    cdef Py_ssize_t cig = z[12], cog = z[13], groups = z[14], TB = z[15], fused = z[16]
    cdef Py_ssize_t RB = z[17], zrow = 0, done = 0, lim
    cdef Py_ssize_t rs
    cdef Py_ssize_t A = ah * aw, S = sh * sw, SC = S * cog
    cdef Py_ssize_t ldv = _wino_ld(A, cig), ldm = _wino_ld(A, SC)
    cdef Py_ssize_t nty = (H + mh - 1) // mh, ntx = (W + mw - 1) // mw, ntiles = nty * ntx
    cdef const floating* Ah = mats
    cdef const floating* Aw = Ah + ah * mh
    cdef const floating* Bh = Aw + aw * mw
    cdef const floating* Bw = Bh + ah * ah
    cdef Py_ssize_t b, t0, TT, t, ty, tx, i, j, c, q, r, rh, rw, oh, ow, jh, jw, iy, ix
    cdef floating* d
    cdef const floating* src
    for b in range((ntiles + TB - 1) // TB):
        t0 = b * TB
        TT = TB if t0 + TB <= ntiles else ntiles - t0
        # 1. V row t - t0 = A y A^T of the mh x mw input tile (zeros outside the input)
        for t in range(t0, t0 + TT):
            ty = t // ntx
            tx = t - ty * ntx
            if (ty + 1) * mh <= H and (tx + 1) * mw <= W:
                src = ys + (ty * mh * W + tx * mw) * cig          # interior: read in place
                rs = W * cig
            else:
                for i in range(mh):
                    iy = ty * mh + i
                    for j in range(mw):
                        ix = tx * mw + j
                        d = pb + (i * mw + j) * cig
                        if iy < H and ix < W:
                            memcpy(d, ys + (iy * W + ix) * cig, cig * sizeof(floating))
                        else:
                            memset(d, 0, cig * sizeof(floating))
                src = pb
                rs = mw * cig
            d = V + (t - t0) * ldv
            if fused:
                _wino_t_pass(<int>fused, src, rs, cig, d, cig, cig)
            else:
                _wpass(src, rs, cig, 0, qb, aw * cig, cig, 0, Aw, mh, aw, mw, 1, cig, 0)
                _wpass(qb, 0, aw * cig, cig, d, 0, aw * cig, cig, Ah, 1, ah, mh, aw, cig, 0)
        # 2. M[:, q] (TT x S*cog: every phase's output channels) = V[:, q] @ U[q, gi] per point
        for q in range(A):
            gemm(False, False, <int>TT, <int>SC, <int>cig, <floating>1, V + q * cig, <int>ldv,
                 U + (q * groups + gi) * cig * SC, <int>SC, <floating>0, M + q * SC, <int>ldm)
        # 3. per tile and phase: B m B^T, an ah x aw patch scatter-added into the output (col2im)
        for t in range(t0, t0 + TT):
            ty = t // ntx
            tx = t - ty * ntx
            if tx == 0:
                # the rows this tile row reaches, zeroed
                lim = sh * (ty * mh + ah) - ph
                _ring_zero(acc, RB, OW, cog, &zrow, lim if lim < OH else OH)
            for r in range(S):
                rh = r // sw
                rw = r - rh * sw
                if fused:
                    _wino_t_pass(3, M + (t - t0) * ldm + r * cog, 4 * SC, SC, qb, cog, cog)
                else:
                    _wpass(M + (t - t0) * ldm + r * cog, aw * SC, SC, 0, pb, aw * cog, cog, 0, Bw,
                           ah, aw, aw, 1, cog, 0)
                    _wpass(pb, 0, aw * cog, cog, qb, 0, aw * cog, cog, Bh, 1, ah, ah, aw, cog, 0)
                # patch points past H + k' - 1 (W + k' - 1), k' = a - m + 1, are reached by no
                # input: their exact value is 0 and the transforms' is rounding noise, not added
                for jh in range(ah):
                    oh = sh * (ty * mh + jh) + rh - ph
                    if oh < 0 or oh >= OH or ty * mh + jh >= H + ah - mh:
                        continue
                    for jw in range(aw):
                        ow = sw * (tx * mw + jw) + rw - pw
                        if ow < 0 or ow >= OW or tx * mw + jw >= W + aw - mw:
                            continue
                        if floating is float:
                            fc_run_add_f(acc + ((oh % RB) * OW + ow) * cog, qb + (jh * aw + jw) * cog,
                                         cog)
                        else:
                            fc_run_add_d(acc + ((oh % RB) * OW + ow) * cog, qb + (jh * aw + jw) * cog,
                                         cog)
            if tx == ntx - 1:
                # tile row ty done: the rows no later tile reaches, written out
                lim = sh * (ty + 1) * mh - ph
                _ring_flush(acc, RB, OW, OH * OW, cog, op, &zrow, &done, lim if lim < OH else OH)
    _ring_flush(acc, RB, OW, OH * OW, cog, op, &zrow, &done, OH)


def pack_weight(const floating[::1] w, floating[::1] scratch, floating[::1] out, Py_ssize_t G,
                Py_ssize_t cog, Py_ssize_t cig, Py_ssize_t KO, Py_ssize_t inner, int nthreads):
    """out[g, ko, c, ki, o] = w[g, o, c, ko*inner + ki]: the weight (G, cog, cig, KO*inner) as
    conv_forward's GEMM operand, per group rows ordered (outer taps, channel, inner taps) and
    the output channels last (inner = 1: the im2row form's (kernel offset, channel) rows;
    inner = KW: the row-shift form's). Two cache-friendly passes, both parallel: the blocked
    transpose into ``scratch`` (g, c, ko, ki, o), then runs of inner*cog values moved to their
    (ko, c) places."""
    cdef Py_ssize_t run = inner * cog, gk, g, ko, c
    cdef const floating* sp
    cdef floating* dp
    transpose_last2(w, scratch, G, cog, cig * KO * inner, nthreads)
    sp = &scratch[0]
    dp = &out[0]
    with nogil:
        for gk in prange(G * KO, schedule="static", num_threads=nthreads):
            g = gk // KO
            ko = gk - g * KO
            for c in range(cig):
                memcpy(dp + (gk * cig + c) * run, sp + ((g * cig + c) * KO + ko) * run,
                       run * sizeof(floating))


cdef inline void _tap_sum(floating* dst, const floating* base, const Py_ssize_t* offs,
                          const double* coef, Py_ssize_t kk, Py_ssize_t n, double* acc) noexcept nogil:
    """dst[o] = sum_e coef[e] * base[offs[e] + o] for o < n (e < kk in order, zero coefficients
    skipped), summed in double 64 values at a time (``acc``: 64 doubles) and rounded once to the
    working dtype: one entry of a Winograd weight transform G g G^T, for a row of channels."""
    cdef Py_ssize_t o0, j, m, e
    cdef double cf
    cdef const floating* row
    for o0 in range(0, n, 64):
        m = 64 if o0 + 64 <= n else n - o0
        for j in range(m):
            acc[j] = 0
        for e in range(kk):
            cf = coef[e]
            if cf == 0:
                continue
            row = base + offs[e] + o0
            for j in range(m):
                acc[j] = acc[j] + cf * row[j]
        for j in range(m):
            dst[o0 + j] = <floating>acc[j]


def wino_weight(const floating[::1] src, const double[:, ::1] kron, floating[::1] U,
                Py_ssize_t ngc, Py_ssize_t kdd, Py_ssize_t groups, Py_ssize_t cig,
                Py_ssize_t cog, int nthreads):
    """The weight of the Winograd forward form: U[q, g, kd, c, o] = sum_e kron[q, e] *
    src[g, c, kd, e, o] (_tap_sum: e < kron.shape[1] in a fixed order, zero coefficients skipped,
    summed in double and rounded once to the working dtype) -- G g G^T
    of every channel pair, ``src`` the weight with its output channels last ((groups, cig, kdd *
    taps, cog): transpose_last2 of the (groups, cog, cig * kvol) weight). kdd > 1: the D taps are
    not transformed (the planes form: U's rows per point and group ordered (kd, c)); kdd = 1:
    ``kron`` spans every tap. Parallel over the (group, input channel) pairs (``ngc``): each
    reads its kdd x taps x cog block once, from cache, for all the points."""
    cdef Py_ssize_t A = kron.shape[0], kk = kron.shape[1], gc, g, c, kd, q, e
    cdef double* acc
    cdef int nt = nthreads if nthreads > 0 else 1
    cdef double* accs = <double*> malloc(nt * 64 * sizeof(double))
    cdef Py_ssize_t* offs = <Py_ssize_t*> malloc(kk * sizeof(Py_ssize_t))
    if accs == NULL or offs == NULL:
        free(accs)
        free(offs)
        raise MemoryError()
    for e in range(kk):
        offs[e] = e * cog                                # tap e's row of the channel pair's block
    cdef floating* up = &U[0]
    cdef const floating* sp = &src[0]
    with nogil, parallel(num_threads=nt):
        acc = accs + fc_thread_id() * 64                 # per thread (assigned in the block)
        for gc in prange(ngc, schedule="static"):
            g = gc // cig
            c = gc - g * cig
            for kd in range(kdd):
                for q in range(A):
                    _tap_sum(up + (((q * groups + g) * kdd + kd) * cig + c) * cog,
                             sp + (gc * kdd + kd) * kk * cog, offs, &kron[q, 0], kk, cog, acc)
    free(accs)
    free(offs)


def wino_t_weight(const floating[:, ::1] wt, const double[:, ::1] kron, floating[::1] U,
                  Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t kw, Py_ssize_t cx, int nthreads):
    """The weight of conv_transpose_winograd: U[q, gc, r, d] = sum over the phase-r taps (a, b) of
    kron[q, a*kpw + b] * wt[(a*sh + rh)*kw + b*sw + rw, gc*cx + d], kron = G_h x G_w (A x kph*kpw),
    ``wt`` the weight as (KH*KW) x (groups*cy*cx) -- G k_r G^T for every phase r and channel pair
    (U's layout: (A, groups*cy, S, cx)). Parallel over transform points; taps in a fixed order,
    summed in double (_tap_sum, as the forward form's wino_weight)."""
    cdef Py_ssize_t A = kron.shape[0], kk = kron.shape[1], R = wt.shape[1], ngc = R // cx
    cdef Py_ssize_t S = sh * sw, kpw = (kw // sw), q, r, rh, rw, gc, e, a, b
    cdef double* acc
    cdef int nt = nthreads if nthreads > 0 else 1
    cdef double* accs = <double*> malloc(nt * 64 * sizeof(double))
    cdef Py_ssize_t* offs = <Py_ssize_t*> malloc(S * kk * sizeof(Py_ssize_t))
    if accs == NULL or offs == NULL:
        free(accs)
        free(offs)
        raise MemoryError()
    for r in range(S):
        rh = r // sw
        rw = r - rh * sw
        for e in range(kk):
            a = e // kpw
            b = e - a * kpw
            offs[r * kk + e] = ((a * sh + rh) * kw + b * sw + rw) * R     # phase r's tap e in wt
    cdef floating* up = &U[0]
    cdef const floating* wp = &wt[0, 0]
    with nogil, parallel(num_threads=nt):
        acc = accs + fc_thread_id() * 64                 # per thread (assigned in the block)
        for q in prange(A, schedule="static"):
            for gc in range(ngc):
                for r in range(S):
                    _tap_sum(up + ((q * ngc + gc) * S + r) * cx, wp + gc * cx, offs + r * kk,
                             &kron[q, 0], kk, cx, acc)
    free(accs)
    free(offs)


def conv_transpose_winograd(floating[::1] y, floating[::1] U, floating[::1] mats,
                            floating[::1] out, Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out,
                            Py_ssize_t groups, tuple insz, tuple outsz, tuple stride, tuple pad,
                            tuple mtile, tuple npts, Py_ssize_t TB, double ylimit,
                            int nthreads):
    """Transposed convolution (2-d or 1-d as H = 1), kernel sizes multiples of the strides,
    dilation 1, by Winograd's linear-convolution algorithm on the stride phases, then col2im.

    With u = o + pad along an axis, output u = s*j + r (phase r < s) takes sum_a y[j - a] *
    w[a*s + r], a < k' = K/s: per phase a linear convolution of y with a k'-tap kernel. A tile of
    m inputs gives an (m + k' - 1)-point patch of every phase, z = B [(G k_r) .* (A y)] (Toom-Cook;
    B = bt^T, A = at^T of _winograd.matrices(m, k')), and the patches of neighbouring tiles
    overlap by k' - 1 points: they are scatter-added into the output (col2im), which zeroes the
    padding's share exactly as row2im does. All s_h*s_w phases share the input transform: one GEMM
    per transform point, C_in/groups deep and s_h*s_w*C_out/groups wide.

    ``y`` (N, C_in, H, W) NCHW; ``U`` (A, groups, cig, S, cog) = G k_r G^T per phase r (Python);
    ``mats`` = A_h (ah x mh), A_w (aw x mw), B_h (ah x ah), B_w (aw x aw), row-major, concatenated;
    ``out`` (N, C_out, OH, OW). Work units (sample, group), each with private channels-last
    copies of its input and output; ``TB`` tiles per GEMM block. Tiles depend only on the shapes.

    A unit whose input has a value beyond +-``ylimit`` (or a NaN) is skipped: the transforms could
    overflow, or spread an inf over whole patches, where the direct sum would not. Returns the
    number of units skipped (the caller then uses the direct col2im form)."""
    cdef Py_ssize_t H, W, OH, OW, sh, sw, ph, pw, mh, mw, ah, aw
    H, W = insz
    OH, OW = outsz
    sh, sw = stride
    ph, pw = pad
    mh, mw = mtile
    ah, aw = npts
    cdef Py_ssize_t cig = C_in // groups, cog = C_out // groups, S = sh * sw, A = ah * aw
    cdef Py_ssize_t HW = H * W, OHW = OH * OW, units = N * groups, u, n, gi, skipped = 0
    cdef floating lim = <floating>ylimit      # finite: the caller bounds it by the dtype's max
    cdef int ok
    cdef Py_ssize_t RB = min(OH, sh * ah)
    cdef Py_ssize_t z[18]
    z[0], z[1], z[2], z[3], z[4], z[5], z[6], z[7] = H, W, OH, OW, sh, sw, ph, pw
    z[8], z[9], z[10], z[11], z[12], z[13], z[14], z[15] = mh, mw, ah, aw, cig, cog, groups, TB
    z[16] = 0
    z[17] = RB
    if ah == 4 and aw == 4 and mh == mw and mh in (2, 3):
        z[16] = 1 if mh == 3 else 2
    # per-thread scratch, one pooled block: ys | acc | V | M | pb | qb
    cdef Py_ssize_t s_y = line_stride(HW * cig, sizeof(floating))
    cdef Py_ssize_t s_a = line_stride(RB * OW * cog, sizeof(floating))
    cdef Py_ssize_t s_v = line_stride(TB * _wino_ld(A, cig), sizeof(floating))
    cdef Py_ssize_t s_m = line_stride(TB * _wino_ld(A, S * cog), sizeof(floating))
    cdef Py_ssize_t s_p = line_stride(max(mh, ah) * aw * max(cig, cog), sizeof(floating))
    cdef Py_ssize_t per = s_y + s_a + s_v + s_m + 2 * s_p
    cdef int nt = nthreads if nthreads > 0 else 1
    blk = _workspace.take(nt * per * sizeof(floating))
    cdef floating* wb = <floating*> aligned_base(blk)
    cdef floating* ys
    cdef floating* acc
    try:
        with nogil, parallel(num_threads=nt):
            ys = wb + fc_thread_id() * per
            acc = ys + s_y
            for u in prange(units, schedule="dynamic"):
                gi = u % groups
                n = u // groups
                _transpose(&y[(n * C_in + gi * cig) * HW], ys, cig, HW)
                if floating is float:
                    ok = fc_within_f(ys, HW * cig, lim)
                else:
                    ok = fc_within_d(ys, HW * cig, lim)
                if ok:
                    _wino_t_unit(ys, acc, &out[(n * C_out + gi * cog) * OHW], acc + s_a,
                                 acc + s_a + s_v, acc + s_a + s_v + s_m,
                                 acc + s_a + s_v + s_m + s_p, &U[0], &mats[0], z, gi)
                else:
                    skipped += 1
    finally:
        _workspace.give(blk)
    return skipped


def conv_backward_input(floating[::1] gy, floating[::1] w, floating[::1] gx,
                        Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t groups,
                        tuple insz, tuple ksz, tuple stride, tuple dil, tuple pad, tuple outsz,
                        Py_ssize_t T, Py_ssize_t cblock, int nthreads, bint per_sample):
    """The adjoint of conv_forward: gx = row2im(gy @ W).

    ``w`` is the weight packed per group as row-major (C_out/groups) x K, K = C_in/groups *
    kernel volume ordered (kd, kh, kw, c). Every tile's GEMM is the whole group's (T x K), and
    every element of gx receives its tiles' contributions in tile order, whichever form runs: the
    bits depend on neither the batch nor the thread count.

    ``per_sample`` (enough samples for every thread): ``gy`` and ``gx`` are NCHW; a thread takes
    whole samples, with private channels-last copies of the sample's ``gy`` and input gradient,
    transposed into ``gx`` at the end (no input-sized temporaries).
    Otherwise ``gy`` is channels-last (N, P, C_out), ``gx`` channels-last and zeroed by the caller.
    With ``cblock`` == C_in/groups the work units are (sample, group). With smaller blocks (few
    samples and groups for the threads) the tiles go in chunks, in two parallel steps per chunk:
    the (sample, group, tile) GEMMs into a shared chunk buffer, then the scatter-adds by (sample,
    group, block of ``cblock`` input channels) -- a unit owns its channels of gx, so the
    scatter-adds of different threads never touch the same memory.
    """
    cdef Geom g = _geom(insz, ksz, stride, dil, pad, outsz)
    cdef Py_ssize_t cig = C_in // groups, cog = C_out // groups
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW, K = cig * kvol
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, plane = g.D * g.H * g.W
    cdef Py_ssize_t ncb = (cig + cblock - 1) // cblock, NG = N * groups
    cdef Py_ssize_t ntiles = (P + T - 1) // T, u, n, gi, cb, c0, ti, t0, nct, ch, p0, TT
    cdef int nt = nthreads if nthreads > 0 else 1
    # chunks of CT tiles: at least one GEMM per thread in the first step
    cdef Py_ssize_t CT = min(ntiles, (nt + NG - 1) // NG)
    cdef Py_ssize_t nch = (ntiles + CT - 1) // CT
    cdef bint chunked = not per_sample and ncb > 1
    # scratch, one pooled block (fastconv/_workspace.py): per thread buf | gys | gxs, or the chunk
    # buffer of NG * CT tile results
    cdef Py_ssize_t sb = line_stride(K * T, sizeof(floating))
    cdef Py_ssize_t sy = line_stride(P * C_out, sizeof(floating)) if per_sample else 0
    cdef Py_ssize_t per = sb + sy + (line_stride(plane * C_in, sizeof(floating)) if per_sample else 0)
    blk = _workspace.take((NG * CT * sb if chunked else nt * per) * sizeof(floating))
    cdef floating* wb = <floating*> aligned_base(blk)
    cdef floating* buf
    cdef floating* gys
    cdef floating* gxs
    cdef floating* gyp = &gy[0]
    cdef floating* wp = &w[0]
    cdef floating* gxp = &gx[0]
    try:
        if chunked:
            with nogil, parallel(num_threads=nt):
                for ch in range(nch):
                    t0 = ch * CT
                    nct = CT if t0 + CT <= ntiles else ntiles - t0
                    for u in prange(NG * nct, schedule="dynamic"):
                        ti = u % nct
                        gi = (u // nct) % groups
                        n = u // (nct * groups)
                        p0 = (t0 + ti) * T
                        TT = T if p0 + T <= P else P - p0
                        _grad_input_gemm(gyp + n * P * C_out, wp,
                                         wb + ((n * groups + gi) * CT + ti) * sb, C_out, cog, K,
                                         gi, p0, TT)
                    for u in prange(NG * ncb, schedule="dynamic"):
                        cb = u % ncb
                        gi = (u // ncb) % groups
                        n = u // (ncb * groups)
                        c0 = cb * cblock
                        for ti in range(nct):
                            p0 = (t0 + ti) * T
                            TT = T if p0 + T <= P else P - p0
                            _im2row_tile(gxp + n * plane * C_in,
                                         wb + ((n * groups + gi) * CT + ti) * sb + c0, K, C_in,
                                         gi * cig + c0, cblock if c0 + cblock <= cig else cig - c0,
                                         &g, p0, TT, True, cig)
            return
        with nogil, parallel(num_threads=nt):
            buf = wb + fc_thread_id() * per
            gys = buf + sb
            gxs = gys + sy
            if per_sample:
                for n in prange(N, schedule="dynamic"):
                    _transpose(gyp + n * C_out * P, gys, C_out, P)
                    memset(gxs, 0, plane * C_in * sizeof(floating))
                    for gi in range(groups):
                        _backward_input_unit(gys, wp, gxs, buf, &g, C_in, C_out, cig, cog, K, P,
                                             T, gi)
                    _transpose(gxs, gxp + n * C_in * plane, plane, C_in)
            else:
                for u in prange(NG, schedule="dynamic"):
                    gi = u % groups
                    n = u // groups
                    _backward_input_unit(gyp + n * P * C_out, wp, gxp + n * plane * C_in, buf,
                                         &g, C_in, C_out, cig, cog, K, P, T, gi)
    finally:
        _workspace.give(blk)


cdef inline void _weight_unit(floating* xs, floating* gys, floating* acc, floating* buf, bint pw,
                              const Geom* g, Py_ssize_t C_in, Py_ssize_t cig, Py_ssize_t cog,
                              Py_ssize_t K, Py_ssize_t P, Py_ssize_t gi, Py_ssize_t p0,
                              Py_ssize_t TT) noexcept nogil:
    """acc[gi's rows] += gy_tile @ im2row(x)_tile for one tile of one sample (``xs`` channels-last,
    ``gys`` the sample's NCHW output gradient)."""
    if pw:
        gemm(False, False, <int>cog, <int>K, <int>TT, <floating>1,
             gys + gi * cog * P + p0, <int>P, xs + p0 * C_in + gi * cig,
             <int>C_in, <floating>1, acc + gi * cog * K, <int>K)
    else:
        _im2row_tile(xs, buf, K, C_in, gi * cig, cig, g, p0, TT, False)
        gemm(False, False, <int>cog, <int>K, <int>TT, <floating>1,
             gys + gi * cog * P + p0, <int>P, buf, <int>K,
             <floating>1, acc + gi * cog * K, <int>K)


def conv_backward_weight(floating[::1] x, floating[::1] gy, floating[::1] gw,
                         Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t groups,
                         tuple insz, tuple ksz, tuple stride, tuple dil, tuple pad, tuple outsz,
                         Py_ssize_t T, int nthreads, bint per_sample):
    """gw (C_out x K per group, K ordered (kd, kh, kw, c)) = sum of gy_tile @ im2row(x)_tile.

    ``gy`` is the output gradient NCHW. ``per_sample``: ``x`` is NCHW and a thread takes whole
    samples, transposing each into a private channels-last buffer; else ``x`` is channels-last and
    threads split the tiles. Each thread accumulates into a private weight-sized buffer (a static
    unit -> thread map, so sums are reproducible for a thread count); the buffers are summed last.
    """
    cdef Geom g = _geom(insz, ksz, stride, dil, pad, outsz)
    cdef Py_ssize_t cig = C_in // groups, cog = C_out // groups
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW, K = cig * kvol
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, plane = g.D * g.H * g.W
    cdef Py_ssize_t ntiles = (P + T - 1) // T, units = N * groups * ntiles
    cdef Py_ssize_t wsize = C_out * K
    # per-thread accumulators on cache lines of their own (no false sharing)
    cdef Py_ssize_t wstride = line_stride(wsize, sizeof(floating))
    cdef Py_ssize_t u, n, gi, t, p0, i, tid
    cdef bint pw = _pointwise(&g)
    cdef int nt = nthreads if nthreads > 0 else 1
    # per-thread scratch, one pooled block (fastconv/_workspace.py): acc | buf | xs
    cdef Py_ssize_t sb = line_stride(0 if pw else K * T, sizeof(floating))
    cdef Py_ssize_t per = wstride + sb + (line_stride(plane * C_in, sizeof(floating)) if per_sample else 0)
    blk = _workspace.take(nt * per * sizeof(floating))
    cdef floating* acc_all = <floating*> aligned_base(blk)
    cdef floating* buf
    cdef floating* acc
    cdef floating* xs
    cdef floating* xp = &x[0]
    cdef floating* gyp = &gy[0]
    cdef floating* gwp = &gw[0]
    try:
        for t in range(nt):     # every accumulator, also of threads OpenMP may not start
            memset(acc_all + t * per, 0, wsize * sizeof(floating))
        with nogil, parallel(num_threads=nt):
            tid = fc_thread_id()
            acc = acc_all + tid * per
            buf = acc + wstride
            xs = buf + sb
            if per_sample:
                for n in prange(N, schedule="static"):
                    _transpose(xp + n * C_in * plane, xs, C_in, plane)
                    for gi in range(groups):
                        for t in range(ntiles):
                            p0 = t * T
                            _weight_unit(xs, gyp + n * C_out * P, acc, buf, pw, &g, C_in, cig, cog,
                                         K, P, gi, p0, T if p0 + T <= P else P - p0)
            else:
                for u in prange(units, schedule="static"):
                    t = u % ntiles
                    gi = (u // ntiles) % groups
                    n = u // (ntiles * groups)
                    p0 = t * T
                    _weight_unit(xp + n * plane * C_in, gyp + n * C_out * P, acc, buf, pw, &g,
                                 C_in, cig, cog, K, P, gi, p0, T if p0 + T <= P else P - p0)
        with nogil:
            for i in range(wsize):
                gwp[i] = 0
            for t in range(nt):
                for i in range(wsize):
                    gwp[i] += acc_all[t * per + i]
    finally:
        _workspace.give(blk)


cdef inline void _taps1(floating* dst, const floating* s, Py_ssize_t n, Py_ssize_t st,
                        floating w, Py_ssize_t o, floating bv, bint add) noexcept nogil:
    """dst[i] (+)= bv + w * s[i*st + o] (see _taps9)."""
    cdef Py_ssize_t i
    if add:
        for i in range(n):
            dst[i] += w * s[i * st + o]
    else:
        for i in range(n):
            dst[i] = bv + w * s[i * st + o]


cdef inline void _taps2(floating* dst, const floating* s, Py_ssize_t n, Py_ssize_t st,
                        const floating* w, const Py_ssize_t* o, floating bv, bint add) noexcept nogil:
    """dst[i] (+)= bv + sum_t w[t] * s[i*st + o[t]] for two taps (see _taps9)."""
    cdef Py_ssize_t i
    cdef floating w0 = w[0], w1 = w[1]
    cdef Py_ssize_t o0 = o[0], o1 = o[1]
    if st == 1:
        if add:
            for i in range(n):
                dst[i] += w0 * s[i + o0] + w1 * s[i + o1]
        else:
            for i in range(n):
                dst[i] = bv + w0 * s[i + o0] + w1 * s[i + o1]
    else:
        for i in range(n):
            dst[i] = (dst[i] if add else bv) + (w0 * s[i * st + o0] + w1 * s[i * st + o1])


cdef inline void _taps3(floating* dst, const floating* s, Py_ssize_t n, Py_ssize_t st,
                        const floating* w, const Py_ssize_t* o, floating bv, bint add) noexcept nogil:
    """dst[i] (+)= bv + sum_t w[t] * s[i*st + o[t]] for three taps (see _taps9)."""
    cdef Py_ssize_t i
    cdef floating w0 = w[0], w1 = w[1], w2 = w[2]
    cdef Py_ssize_t o0 = o[0], o1 = o[1], o2 = o[2]
    if st == 1:
        if add:
            for i in range(n):
                dst[i] += w0 * s[i + o0] + w1 * s[i + o1] + w2 * s[i + o2]
        else:
            for i in range(n):
                dst[i] = bv + w0 * s[i + o0] + w1 * s[i + o1] + w2 * s[i + o2]
    else:
        for i in range(n):
            dst[i] = (dst[i] if add else bv) + (w0 * s[i * st + o0] + w1 * s[i * st + o1]
                                                 + w2 * s[i * st + o2])


cdef inline void _taps9(floating* dst, const floating* s, Py_ssize_t n, Py_ssize_t st,
                        const floating* w, const Py_ssize_t* o, floating bv, bint add) noexcept nogil:
    """dst[i] (+)= bv + sum_t w[t] * s[i*st + o[t]] for nine taps: one store per nine
    multiply-adds, a unit-stride vectorisable loop when st == 1."""
    cdef Py_ssize_t i
    cdef floating w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5]
    cdef floating w6 = w[6], w7 = w[7], w8 = w[8]
    cdef Py_ssize_t o0 = o[0], o1 = o[1], o2 = o[2], o3 = o[3], o4 = o[4], o5 = o[5]
    cdef Py_ssize_t o6 = o[6], o7 = o[7], o8 = o[8]
    if st == 1:
        if add:
            for i in range(n):
                dst[i] += (w0 * s[i + o0] + w1 * s[i + o1] + w2 * s[i + o2] + w3 * s[i + o3]
                           + w4 * s[i + o4] + w5 * s[i + o5] + w6 * s[i + o6] + w7 * s[i + o7]
                           + w8 * s[i + o8])
        else:
            for i in range(n):
                dst[i] = (bv + w0 * s[i + o0] + w1 * s[i + o1] + w2 * s[i + o2] + w3 * s[i + o3]
                          + w4 * s[i + o4] + w5 * s[i + o5] + w6 * s[i + o6] + w7 * s[i + o7]
                          + w8 * s[i + o8])
    else:
        for i in range(n):
            dst[i] = (dst[i] if add else bv) + (
                w0 * s[i * st + o0] + w1 * s[i * st + o1] + w2 * s[i * st + o2]
                + w3 * s[i * st + o3] + w4 * s[i * st + o4] + w5 * s[i * st + o5]
                + w6 * s[i * st + o6] + w7 * s[i * st + o7] + w8 * s[i * st + o8])


cdef inline void _phase_row(floating* dst, const floating* row, Py_ssize_t lo, Py_ssize_t hi,
                            Py_ssize_t Wq, bint zero) noexcept nogil:
    """Columns [lo, hi) of a padded row (``row`` + c is padded column c) into the buffer row
    ``dst``, even columns first: column c at dst[(c % 2) * Wq + c // 2] (zeros if ``zero``)."""
    if floating is float:
        fc_deinterleave2_f(dst, row, lo, hi, Wq, zero)
    else:
        fc_deinterleave2_d(dst, row, lo, hi, Wq, zero)


cdef inline void _stencil3x3_block(floating* dst, Py_ssize_t OW, const floating* src,
                                   Py_ssize_t ld, Py_ssize_t H, const floating* zero, Py_ssize_t ph,
                                   Py_ssize_t oh0, Py_ssize_t Rb, Py_ssize_t W, Py_ssize_t pw,
                                   const floating* w, floating bv) noexcept nogil:
    """Output rows [oh0, oh0 + Rb) (written from ``dst``, OW apart) of a dense 3x3 stride-1 stencil
    with padding <= 1, reading the rows of ``src`` (``ld`` apart, H of them) in place: ``zero`` (a
    zero row) stands in for padding rows, padding columns are masked lanes of the edge vectors, two
    output rows at a time share their input rows (fc_simd.h)."""
    if floating is float:
        fc_stencil3x3_block_f(dst, OW, src, ld, H, zero, ph, oh0, Rb, W, pw, w, bv)
    else:
        fc_stencil3x3_block_d(dst, OW, src, ld, H, zero, ph, oh0, Rb, W, pw, w, bv)


def conv_direct(floating[::1] x, floating[::1] w, floating[::1] bias, floating[::1] out,
                Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t groups,
                tuple insz, tuple ksz, tuple stride, tuple dil, tuple pad, tuple outsz,
                bint has_bias, Py_ssize_t R, int nthreads):
    """Direct stencil for groups == C_in (one input channel per group: depthwise, single channel).

    out[n, co] = bias[co] + sum_k w[co, k] * x[n, co // (C_out/groups)] shifted by k.
    Work unit: (sample, output channel, output depth slice, block of ``R`` output rows). The unit
    copies the input rows its windows read into a per-thread buffer whose padding columns are zero
    (written once), so no bounds tests remain; each output row is then produced by passes of nine
    taps (missing taps have weight 0), writing straight into the output.
    """
    cdef Geom g = _geom(insz, ksz, stride, dil, pad, outsz)
    cdef Py_ssize_t cog = C_out // groups
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW, nchunk = (kvol + 8) // 9
    cdef Py_ssize_t plane = g.D * g.H * g.W, P = g.OD * g.OH * g.OW
    cdef Py_ssize_t Wp = (g.OW - 1) * g.sw + g.dw * (g.KW - 1) + 1
    cdef Py_ssize_t RN = (R - 1) * g.sh + g.dh * (g.KH - 1) + 1
    cdef Py_ssize_t nrb = (g.OH + R - 1) // R, units = N * C_out * g.OD * nrb
    cdef Py_ssize_t lo = g.pw if g.pw < Wp else Wp
    cdef Py_ssize_t hi = g.W + g.pw if g.W + g.pw < Wp else Wp
    cdef Py_ssize_t u, n, co, od, rb, oh0, Rb, kd, j, idd, ih, c, t, r
    cdef bint dense3x3 = (g.KD == 1 and g.KH == 3 and g.KW == 3 and g.sh == 1 and g.sw == 1
                          and g.dh == 1 and g.dw == 1)
    cdef floating* xp = &x[0]
    cdef floating* wp = &w[0]
    cdef floating* op = &out[0]
    cdef floating* bp = &bias[0]
    cdef floating* buf
    cdef floating* bufraw
    cdef floating* base
    cdef floating* wt
    cdef floating* src
    cdef floating* dst
    cdef floating bv
    # tap offsets into the padded buffer, nine per pass (missing taps: weight 0, offset 0)
    cdef Py_ssize_t* offs = <Py_ssize_t*> calloc(9 * nchunk, sizeof(Py_ssize_t))
    cdef Py_ssize_t* widx = <Py_ssize_t*> malloc(9 * nchunk * sizeof(Py_ssize_t))
    if offs == NULL or widx == NULL:
        free(offs)
        free(widx)
        raise MemoryError()
    for t in range(9 * nchunk):
        widx[t] = -1
    # no padding anywhere ("valid"): read the input planes in place, no buffer copy
    cdef bint inplace = (g.pd == 0 and g.ph == 0 and g.pw == 0 and Wp <= g.W and g.sw != 2
                         and (g.OH - 1) * g.sh + g.dh * (g.KH - 1) < g.H
                         and (g.OD - 1) * g.sd + g.dd * (g.KD - 1) < g.D)
    # stride 2 along W: the buffer's rows hold their even columns, then their odd ones (Wq each),
    # so that every tap reads a unit-stride run and the tap loops vectorise (strided reads do not;
    # 8x32x112x112 3x3 stride 2: 1.9 -> 1.0 ms)
    cdef bint phased = g.sw == 2
    cdef Py_ssize_t Wq = (Wp + 1) // 2 if phased else Wp
    cdef Py_ssize_t Wb = 2 * Wq if phased else Wp
    cdef Py_ssize_t ld = g.W if inplace else Wb
    cdef Py_ssize_t tst = 1 if phased else g.sw
    # dense 3x3 with padding <= 1: read the input rows in place (a zero row for padding rows,
    # masked edge vectors for padding columns; fc_simd.h), no padded copy
    cdef bint fast3 = (dense3x3 and g.pd == 0 and g.ph <= 1 and g.pw <= 1
                       and (g.OD - 1) * g.sd < g.D)
    cdef floating* zrow = <floating*> calloc(g.W, sizeof(floating)) if fast3 else NULL
    if fast3 and zrow == NULL:
        free(offs)
        free(widx)
        raise MemoryError()
    cdef bint nocopy = inplace or fast3
    t = 0
    for kd in range(g.KD):
        for j in range(g.KH):
            for c in range(g.KW):
                if inplace:
                    offs[t] = (kd * g.dd * g.H + j * g.dh) * g.W + c * g.dw
                else:
                    offs[t] = (kd * RN + j * g.dh) * Wb + (
                        (c * g.dw) % 2 * Wq + (c * g.dw) // 2 if phased else c * g.dw)
                widx[t] = (kd * g.KH + j) * g.KW + c
                t += 1
    with nogil, parallel(num_threads=nthreads):
        # 16 spare elements on each side: two threads' blocks never share a cache line
        bufraw = <floating*> calloc((0 if nocopy else g.KD * RN * Wb) + 9 * nchunk + 32,
                                    sizeof(floating))
        buf = bufraw + 16
        wt = buf + (0 if nocopy else g.KD * RN * Wb)
        for u in prange(units, schedule="dynamic"):
            rb = u % nrb
            od = (u // nrb) % g.OD
            co = (u // (nrb * g.OD)) % C_out
            n = u // (nrb * g.OD * C_out)
            src = xp + (n * C_in + co // cog) * plane
            for t in range(9 * nchunk):
                wt[t] = wp[co * kvol + widx[t]] if widx[t] >= 0 else 0
            bv = bp[co] if has_bias else 0
            oh0 = rb * R
            Rb = R if oh0 + R <= g.OH else g.OH - oh0
            if fast3:
                _stencil3x3_block(op + (n * C_out + co) * P + (od * g.OH + oh0) * g.OW, g.OW,
                                  src + od * g.sd * g.H * g.W, g.W, g.H, zrow, g.ph, oh0, Rb,
                                  g.W, g.pw, wt, bv)
                continue
            # the input rows this block reads; padding columns [0, lo) and [hi, Wp) stay zero
            # (at their phase-major places: the copies below never write them)
            base = buf
            if inplace:
                base = src + (od * g.sd * g.H + oh0 * g.sh) * g.W
            for kd in range(g.KD if not inplace else 0):
                idd = od * g.sd - g.pd + kd * g.dd
                for j in range((Rb - 1) * g.sh + g.dh * (g.KH - 1) + 1):
                    ih = oh0 * g.sh - g.ph + j
                    dst = buf + (kd * RN + j) * Wb
                    if phased:
                        if idd < 0 or idd >= g.D or ih < 0 or ih >= g.H:
                            _phase_row(dst, src, lo, hi, Wq, True)
                        else:
                            _phase_row(dst, src + (idd * g.H + ih) * g.W - g.pw, lo, hi, Wq, False)
                    elif idd < 0 or idd >= g.D or ih < 0 or ih >= g.H:
                        for c in range(lo, hi):
                            dst[c] = 0
                    else:
                        for c in range(lo, hi):
                            dst[c] = src[(idd * g.H + ih) * g.W + c - g.pw]
            dst = op + (n * C_out + co) * P + (od * g.OH + oh0) * g.OW
            if dense3x3:
                # rows of the padded buffer: every column inside, the same SIMD kernel as fast3
                _stencil3x3_block(dst, g.OW, base, ld, Rb + 2, zrow, 0, 0, Rb, ld, 0, wt, bv)
            else:
                for r in range(Rb):
                    # passes of nine, then three, then two or one taps: every tap exactly once
                    # (no weight-0 padding taps, which would turn an inf under them into NaN)
                    t = 0
                    while t < kvol:
                        if kvol - t >= 9:
                            _taps9(dst + r * g.OW, base + r * g.sh * ld, g.OW, tst, wt + t,
                                   offs + t, bv, t > 0)
                            t = t + 9
                        elif kvol - t >= 3:
                            _taps3(dst + r * g.OW, base + r * g.sh * ld, g.OW, tst, wt + t,
                                   offs + t, bv, t > 0)
                            t = t + 3
                        elif kvol - t == 2:
                            _taps2(dst + r * g.OW, base + r * g.sh * ld, g.OW, tst, wt + t,
                                   offs + t, bv, t > 0)
                            t = t + 2
                        else:
                            _taps1(dst + r * g.OW, base + r * g.sh * ld, g.OW, tst, wt[t],
                                   offs[t], bv, t > 0)
                            t = t + 1
        free(bufraw)
    free(offs)
    free(widx)
    free(zrow)
