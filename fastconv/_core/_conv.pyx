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
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from fastconv._core._common cimport floating, gemm, fc_thread_id


cdef struct Geom:
    # input spatial sizes, kernel sizes, strides, dilations, padding before, output sizes
    Py_ssize_t D, H, W, KD, KH, KW, sd, sh, sw, dd, dh, dw, pd, ph, pw, OD, OH, OW


cdef inline Py_ssize_t _cdiv_floor(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # floor division for b > 0 and any sign of a
    if a >= 0:
        return a // b
    return -((-a + b - 1) // b)


cdef inline void _valid_range(Py_ssize_t off, Py_ssize_t s, Py_ssize_t n_in, Py_ssize_t n_out,
                              Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Output indices o in [lo, hi) with 0 <= o*s + off < n_in (clamped to [0, n_out])."""
    cdef Py_ssize_t a = _cdiv_floor(-off + s - 1, s)          # ceil(-off / s)
    cdef Py_ssize_t b = _cdiv_floor(n_in - 1 - off, s) + 1    # floor((n_in-1-off)/s) + 1
    if a < 0:
        a = 0
    if b > n_out:
        b = n_out
    if b < a:
        b = a
    lo[0] = a
    hi[0] = b


cdef void _im2col_tile(floating* im, floating* col, Py_ssize_t channels, const Geom* g,
                       Py_ssize_t p0, Py_ssize_t T, bint scatter) noexcept nogil:
    """The im2col / col2im twins (Caffe): one loop nest over (channel, kernel offset, output
    position), differing in one statement -- gather ``col = im`` or scatter-add ``im += col``.

    ``col`` is the (channels*KD*KH*KW) x T tile for output positions [p0, p0 + T); ``im`` points at
    the first of ``channels`` input planes. Gather writes zeros where the window reads padding;
    scatter skips those entries (that is what makes col2im the exact adjoint of im2col).
    """
    cdef Py_ssize_t c, kd, kh, kw, r = 0, j, seg, od, oh, ow, idd, ih, off, lo, hi, a, b, q
    cdef Py_ssize_t plane = g.D * g.H * g.W, OHW = g.OH * g.OW, sw = g.sw
    cdef floating* crow
    cdef floating* irow
    cdef floating* imc
    for c in range(channels):
        imc = im + c * plane
        for kd in range(g.KD):
            for kh in range(g.KH):
                for kw in range(g.KW):
                    crow = col + r * T
                    r += 1
                    off = kw * g.dw - g.pw
                    _valid_range(off, sw, g.W, g.OW, &lo, &hi)
                    od = p0 // OHW
                    oh = (p0 - od * OHW) // g.OW
                    ow = p0 - od * OHW - oh * g.OW
                    j = 0
                    while j < T:
                        seg = g.OW - ow
                        if seg > T - j:
                            seg = T - j
                        idd = od * g.sd - g.pd + kd * g.dd
                        ih = oh * g.sh - g.ph + kh * g.dh
                        if 0 <= idd < g.D and 0 <= ih < g.H:
                            a = lo if lo > ow else ow
                            b = hi if hi < ow + seg else ow + seg
                            if b < a:
                                b = a
                            irow = imc + (idd * g.H + ih) * g.W + off
                            if scatter:
                                for q in range(a, b):
                                    irow[q * sw] += crow[j + q - ow]
                            else:
                                for q in range(ow, a):
                                    crow[j + q - ow] = 0
                                for q in range(a, b):
                                    crow[j + q - ow] = irow[q * sw]
                                for q in range(b, ow + seg):
                                    crow[j + q - ow] = 0
                        elif not scatter:
                            for q in range(seg):
                                crow[j + q] = 0
                        j += seg
                        ow += seg
                        if ow == g.OW:
                            ow = 0
                            oh += 1
                            if oh == g.OH:
                                oh = 0
                                od += 1


cdef inline bint _pointwise(const Geom* g) noexcept nogil:
    # 1x1 kernel, stride 1, no padding: the input planes are already the column matrix
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
    return g


def tile_columns(Py_ssize_t K, Py_ssize_t P, Py_ssize_t itemsize, Py_ssize_t tile_bytes):
    """Output positions per im2col tile: the K x T tile stays within ``tile_bytes`` (one per thread)."""
    cdef Py_ssize_t T = tile_bytes // (K * itemsize)
    if T < 64:
        T = 64
    T = (T // 16) * 16
    if T >= P:
        return P
    # balance the tiles so the last one is not a sliver
    cdef Py_ssize_t n = (P + T - 1) // T
    T = (P + n - 1) // n
    return ((T + 7) // 8) * 8 if ((T + 7) // 8) * 8 <= P else P


def conv_forward(floating[::1] x, floating[::1] w, floating[::1] bias, floating[::1] out,
                 Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t groups,
                 tuple insz, tuple ksz, tuple stride, tuple dil, tuple pad, tuple outsz,
                 bint has_bias, Py_ssize_t T, int nthreads):
    """out = conv(x, w) + bias, im2col tile per thread + GEMM. ``T`` from tile_columns()."""
    cdef Geom g = _geom(insz, ksz, stride, dil, pad, outsz)
    cdef Py_ssize_t cig = C_in // groups, cog = C_out // groups
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW, K = cig * kvol
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, plane = g.D * g.H * g.W
    cdef Py_ssize_t ntiles = (P + T - 1) // T, units = N * groups * ntiles
    cdef Py_ssize_t u, n, gi, t, p0, TT, co, q
    cdef bint pw = _pointwise(&g)
    cdef floating* col
    cdef floating* xp = &x[0]
    cdef floating* wp = &w[0]
    cdef floating* op = &out[0]
    cdef floating* bp = &bias[0]
    cdef floating* dst
    cdef floating* src
    cdef floating bv
    with nogil, parallel(num_threads=nthreads):
        col = NULL
        if not pw:
            col = <floating*> malloc(K * T * sizeof(floating))
        for u in prange(units, schedule="dynamic"):
            t = u % ntiles
            gi = (u // ntiles) % groups
            n = u // (ntiles * groups)
            p0 = t * T
            TT = T if p0 + T <= P else P - p0
            src = xp + (n * C_in + gi * cig) * plane
            dst = op + (n * C_out + gi * cog) * P + p0
            if pw:
                gemm(False, False, <int>cog, <int>TT, <int>K, <floating>1, wp + gi * cog * K, <int>K,
                     src + p0, <int>P, <floating>0, dst, <int>P)
            else:
                _im2col_tile(src, col, cig, &g, p0, TT, False)
                gemm(False, False, <int>cog, <int>TT, <int>K, <floating>1, wp + gi * cog * K, <int>K,
                     col, <int>TT, <floating>0, dst, <int>P)
            if has_bias:
                for co in range(cog):
                    bv = bp[gi * cog + co]
                    for q in range(TT):
                        dst[co * P + q] += bv
        free(col)


def conv_backward_input(floating[::1] gy, floating[::1] w, floating[::1] gx,
                        Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t groups,
                        tuple insz, tuple ksz, tuple stride, tuple dil, tuple pad, tuple outsz,
                        Py_ssize_t T, Py_ssize_t cblock, int nthreads):
    """gx (zero-initialised by the caller) += col2im(W^T @ gy): the adjoint of conv_forward.

    Work units are (sample, group, block of ``cblock`` input channels); a unit owns its gx planes,
    so the scatter-adds of different threads never touch the same memory.
    """
    cdef Geom g = _geom(insz, ksz, stride, dil, pad, outsz)
    cdef Py_ssize_t cig = C_in // groups, cog = C_out // groups
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW, K = cig * kvol
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, plane = g.D * g.H * g.W
    cdef Py_ssize_t ntiles = (P + T - 1) // T
    cdef Py_ssize_t ncb = (cig + cblock - 1) // cblock, units = N * groups * ncb
    cdef Py_ssize_t u, n, gi, cb, c0, nc, t, p0, TT
    cdef bint pw = _pointwise(&g)
    cdef floating* col
    cdef floating* gyp = &gy[0]
    cdef floating* wp = &w[0]
    cdef floating* gxp = &gx[0]
    cdef floating* dst
    cdef floating* src
    with nogil, parallel(num_threads=nthreads):
        col = NULL
        if not pw:
            col = <floating*> malloc(cblock * kvol * T * sizeof(floating))
        for u in prange(units, schedule="dynamic"):
            cb = u % ncb
            gi = (u // ncb) % groups
            n = u // (ncb * groups)
            c0 = cb * cblock
            nc = cblock if c0 + cblock <= cig else cig - c0
            src = gyp + (n * C_out + gi * cog) * P
            dst = gxp + (n * C_in + gi * cig + c0) * plane
            for t in range(ntiles):
                p0 = t * T
                TT = T if p0 + T <= P else P - p0
                if pw:
                    gemm(True, False, <int>nc, <int>TT, <int>cog, <floating>1,
                         wp + gi * cog * K + c0, <int>K, src + p0, <int>P,
                         <floating>0, dst + p0, <int>P)
                else:
                    gemm(True, False, <int>(nc * kvol), <int>TT, <int>cog, <floating>1,
                         wp + gi * cog * K + c0 * kvol, <int>K, src + p0, <int>P,
                         <floating>0, col, <int>TT)
                    _im2col_tile(dst, col, nc, &g, p0, TT, True)
        free(col)


def conv_backward_weight(floating[::1] x, floating[::1] gy, floating[::1] gw,
                         Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t groups,
                         tuple insz, tuple ksz, tuple stride, tuple dil, tuple pad, tuple outsz,
                         Py_ssize_t T, int nthreads):
    """gw = sum over samples and tiles of gy_tile @ im2col(x)_tile^T.

    Each thread accumulates into a private copy of gw (weight-sized), reduced at the end.
    """
    cdef Geom g = _geom(insz, ksz, stride, dil, pad, outsz)
    cdef Py_ssize_t cig = C_in // groups, cog = C_out // groups
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW, K = cig * kvol
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, plane = g.D * g.H * g.W
    cdef Py_ssize_t ntiles = (P + T - 1) // T, units = N * groups * ntiles
    cdef Py_ssize_t wsize = C_out * K
    cdef Py_ssize_t u, n, gi, t, p0, TT, i, tid
    cdef bint pw = _pointwise(&g)
    cdef int nt = nthreads if nthreads > 0 else 1
    cdef floating* acc_all = <floating*> malloc(nt * wsize * sizeof(floating))
    if acc_all == NULL:
        raise MemoryError("conv_grad_weight: could not allocate per-thread accumulators")
    memset(acc_all, 0, nt * wsize * sizeof(floating))
    cdef floating* col
    cdef floating* acc
    cdef floating* xp = &x[0]
    cdef floating* gyp = &gy[0]
    cdef floating* gwp = &gw[0]
    cdef floating* src
    with nogil, parallel(num_threads=nt):
        col = NULL
        if not pw:
            col = <floating*> malloc(K * T * sizeof(floating))
        tid = fc_thread_id()
        acc = acc_all + tid * wsize
        for u in prange(units, schedule="dynamic"):
            t = u % ntiles
            gi = (u // ntiles) % groups
            n = u // (ntiles * groups)
            p0 = t * T
            TT = T if p0 + T <= P else P - p0
            src = xp + (n * C_in + gi * cig) * plane
            if pw:
                gemm(False, True, <int>cog, <int>K, <int>TT, <floating>1,
                     gyp + (n * C_out + gi * cog) * P + p0, <int>P, src + p0, <int>P,
                     <floating>1, acc + gi * cog * K, <int>K)
            else:
                _im2col_tile(src, col, cig, &g, p0, TT, False)
                gemm(False, True, <int>cog, <int>K, <int>TT, <floating>1,
                     gyp + (n * C_out + gi * cog) * P + p0, <int>P, col, <int>TT,
                     <floating>1, acc + gi * cog * K, <int>K)
        free(col)
    with nogil:
        for i in range(wsize):
            gwp[i] = 0
        for t in range(nt):
            for i in range(wsize):
                gwp[i] += acc_all[t * wsize + i]
    free(acc_all)


def conv_direct(floating[::1] x, floating[::1] w, floating[::1] bias, floating[::1] out,
                Py_ssize_t N, Py_ssize_t C_in, Py_ssize_t C_out, Py_ssize_t groups,
                tuple insz, tuple ksz, tuple stride, tuple dil, tuple pad, tuple outsz,
                bint has_bias, Py_ssize_t rows_per_unit, int nthreads):
    """Direct stencil for groups == C_in (one input channel per group: depthwise, single channel).

    out[n, co] = bias[co] + sum_k w[co, k] * x[n, co // (C_out/groups)] shifted by k. The inner loop
    runs over one output row with unit stride (stride 1) and no branches: the valid range of each
    kernel column is computed once per call.
    """
    cdef Geom g = _geom(insz, ksz, stride, dil, pad, outsz)
    cdef Py_ssize_t cog = C_out // groups
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW
    cdef Py_ssize_t plane = g.D * g.H * g.W, P = g.OD * g.OH * g.OW
    cdef Py_ssize_t nrows = g.OD * g.OH
    cdef Py_ssize_t nblk = (nrows + rows_per_unit - 1) // rows_per_unit
    cdef Py_ssize_t units = N * C_out * nblk
    cdef Py_ssize_t u, n, co, blk, row, r0, r1, od, oh, kd, kh, kw, idd, ih, q, off, lo, hi, sw = g.sw
    cdef floating* xp = &x[0]
    cdef floating* wp = &w[0]
    cdef floating* op = &out[0]
    cdef floating* bp = &bias[0]
    cdef floating* orow
    cdef floating* irow
    cdef floating* xin
    cdef floating* wk
    cdef floating wv, bv
    cdef Py_ssize_t* lohi = <Py_ssize_t*> malloc(2 * g.KW * sizeof(Py_ssize_t))
    if lohi == NULL:
        raise MemoryError()
    for kw in range(g.KW):
        _valid_range(kw * g.dw - g.pw, sw, g.W, g.OW, &lohi[2 * kw], &lohi[2 * kw + 1])
    with nogil:
        for u in prange(units, schedule="dynamic", num_threads=nthreads):
            blk = u % nblk
            co = (u // nblk) % C_out
            n = u // (nblk * C_out)
            xin = xp + (n * C_in + co // cog) * plane
            wk = wp + co * kvol
            bv = bp[co] if has_bias else 0
            r0 = blk * rows_per_unit
            r1 = r0 + rows_per_unit
            if r1 > nrows:
                r1 = nrows
            for row in range(r0, r1):
                od = row // g.OH
                oh = row - od * g.OH
                orow = op + (n * C_out + co) * P + row * g.OW
                for q in range(g.OW):
                    orow[q] = bv
                for kd in range(g.KD):
                    idd = od * g.sd - g.pd + kd * g.dd
                    if idd < 0 or idd >= g.D:
                        continue
                    for kh in range(g.KH):
                        ih = oh * g.sh - g.ph + kh * g.dh
                        if ih < 0 or ih >= g.H:
                            continue
                        for kw in range(g.KW):
                            wv = wk[(kd * g.KH + kh) * g.KW + kw]
                            off = kw * g.dw - g.pw
                            lo = lohi[2 * kw]
                            hi = lohi[2 * kw + 1]
                            irow = xin + (idd * g.H + ih) * g.W + off
                            if sw == 1:
                                for q in range(lo, hi):
                                    orow[q] += wv * irow[q]
                            else:
                                for q in range(lo, hi):
                                    orow[q] += wv * irow[q * sw]
    free(lohi)
