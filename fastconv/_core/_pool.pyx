# cython: language_level=3
"""Pooling kernels: max / average (and, through them, Lp and adaptive) pooling with backward passes.

Every kernel works on 3 spatial dimensions (D, H, W); 1-D and 2-D problems arrive with leading spatial
sizes of 1, so one loop nest serves every rank. The Python layer (fastconv/pool.py) has validated every
shape and argument and built the window tables below: indices are not bounds-checked here.

Layouts (C-contiguous, passed as flat 2-D buffers):
  x    (P, D*H*W)      P = N*C planes
  out  (P, OD*OH*OW)
  ind  (P, OD*OH*OW)   int64 flat offsets into each input plane (max pooling with indices)

Windows are described per spatial dimension by two tables over the output positions o:
``start[o]`` (first valid input index, torch's adjusted start when the window holds no valid element)
and ``count[o]`` (number of valid taps, ``step`` apart: the dilation, 1 for average and adaptive
pooling). Regular and adaptive pooling are the same kernels with different tables. Along W the
windows whose taps are all valid and start at ``ow * wst + woff`` (the "interior" ``[wlo, whi)``) run a
vectorisable loop with the stride as a constant (1, 2 or general); the few border windows use the
tables.

Forward without indices is separable and reads every input row of a window once per output row:
1. vertical: combine the window's valid input rows (max or sum) into a per-thread row buffer of W
   (unit-stride, vectorised; a window with one valid row uses the input row itself);
2. horizontal: reduce each output's taps along that row.
Forward with indices goes the other way round (horizontal argmax of each input row, then the rows in
scan order) so that ties and NaNs resolve exactly as torch's row-major scan: the first maximum wins,
a NaN always replaces the current value (so the last NaN wins).
"""
import numpy as np
from cython.parallel cimport prange, parallel
from libc.string cimport memset
from libc.stdint cimport int64_t, int32_t
from libc.math cimport INFINITY
from fastconv._core._common cimport floating, fc_thread_id, line_stride

cdef extern from "fc_simd.h" nogil:
    void fc_pair_avg_f(const float* a, const float* b, float* o, Py_ssize_t n, float s)
    void fc_pair_avg_d(const double* a, const double* b, double* o, Py_ssize_t n, double s)
    void fc_block_pool_rows_f(const float* r, float* o, float* t, Py_ssize_t W, Py_ssize_t OW,
                              Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t nrows, int is_max, float s)
    void fc_block_pool_rows_d(const double* r, double* o, double* t, Py_ssize_t W, Py_ssize_t OW,
                              Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t nrows, int is_max, double s)
    float fc_plane_max_f(const float* a, Py_ssize_t n)
    void fc_argmax_merge_f(const float* hv, const int* hc, float* ov, int* oc, int* orr,
                           Py_ssize_t n, int rown, int first)
    void fc_argmax_merge_d(const double* hv, const int* hc, double* ov, int* oc, int* orr,
                           Py_ssize_t n, int rown, int first)
    int fc_argmax_vert_f(const float* row0, Py_ssize_t rstride, int nrows, int rown0, int rstep,
                         float* av, int* ar, Py_ssize_t W, int first)
    int fc_argmax_vert_d(const double* row0, Py_ssize_t rstride, int nrows, int rown0, int rstep,
                         double* av, int* ar, Py_ssize_t W, int first)
    void fc_argmax_horiz_f(const float* av, const int* ar, float* ov, int* orr, int* oc,
                           Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t st, Py_ssize_t off,
                           Py_ssize_t dw, Py_ssize_t KW, Py_ssize_t* idx, Py_ssize_t W)
    void fc_argmax_horiz_d(const double* av, const int* ar, double* ov, int* orr, int* oc,
                           Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t st, Py_ssize_t off,
                           Py_ssize_t dw, Py_ssize_t KW, Py_ssize_t* idx, Py_ssize_t W)
    double fc_plane_max_d(const double* a, Py_ssize_t n)
    int fc_plane_group_f(const float* a, Py_ssize_t n, int cnt, int is_max, float* out)
    int fc_plane_group_d(const double* a, Py_ssize_t n, int cnt, int is_max, double* out)
    void fc_pool_group_f(const float* x, Py_ssize_t n, int cnt, int mode, const int32_t* taps,
                         const int32_t* starts, const float* scale, Py_ssize_t nout, float* tile,
                         float* otile, int32_t* itile, float* out, int64_t* ind)
    void fc_pool_group_d(const double* x, Py_ssize_t n, int cnt, int mode, const int32_t* taps,
                         const int32_t* starts, const double* scale, Py_ssize_t nout, double* tile,
                         double* otile, int64_t* itile, double* out, int64_t* ind)
    void fc_pair_rows_f(const float* x, float* o, Py_ssize_t W, Py_ssize_t OW, Py_ssize_t nrows,
                        int is_max, float s)
    void fc_pair_rows_d(const double* x, double* o, Py_ssize_t W, Py_ssize_t OW, Py_ssize_t nrows,
                        int is_max, double s)
    void fc_block_backward_f(const float* g, float* gi, Py_ssize_t OW, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t nrows, float s)
    void fc_block_backward_d(const double* g, double* gi, Py_ssize_t OW, Py_ssize_t kh,
                             Py_ssize_t kw, Py_ssize_t nrows, double s)
    void fc_pool_group_backward_f(const float* g, Py_ssize_t nout, int cnt, const int32_t* taps,
                                  const int32_t* starts, const float* scale, Py_ssize_t n,
                                  float* tile, float* gtile, float* gi)
    void fc_pool_group_backward_d(const double* g, Py_ssize_t nout, int cnt, const int32_t* taps,
                                  const int32_t* starts, const double* scale, Py_ssize_t n,
                                  double* tile, double* gtile, double* gi)
    Py_ssize_t fc_scatter_plane_f(float* d, const float* g, const int64_t* k, Py_ssize_t n,
                                  Py_ssize_t ipl)
    Py_ssize_t fc_scatter_plane_d(double* d, const double* g, const int64_t* k, Py_ssize_t n,
                                  Py_ssize_t ipl)

ctypedef Py_ssize_t isz


cdef struct Win:
    isz D, H, W, OD, OH, OW
    isz dd, dh, dw                   # tap steps (dilation)
    const isz* ds                     # window tables, see the module docstring
    const isz* dn
    const isz* hs
    const isz* hn
    const isz* ws
    const isz* wn
    isz wlo, whi, wst, woff, KW       # affine interior along W
    isz pitch                         # > 0: rows can be processed flat, see pool_forward
    isz KH, hst, hoff, hlo, hhi       # affine interior along H


cdef inline bint _gt(floating v, floating m) noexcept nogil:
    # torch's max-pool update rule: a larger value or a NaN replaces the current maximum
    return (v > m) | (v != v)


cdef inline floating _max(floating m, floating v) noexcept nogil:
    return v if ((v > m) | (v != v)) else m


cdef void _fill_win(Win* g, const isz* t) noexcept nogil:
    """Unpack the geometry array built by fastconv.pool._kernel_args: 20 scalars
    (D, H, W, OD, OH, OW, dd, dh, dw, wlo, whi, wst, woff, KW, pitch, KH, hst, hoff, hlo, hhi), then
    the tables
    start/count for D (OD each), H (OH each) and W (OW each)."""
    g.D, g.H, g.W, g.OD, g.OH, g.OW = t[0], t[1], t[2], t[3], t[4], t[5]
    g.dd, g.dh, g.dw = t[6], t[7], t[8]
    g.wlo, g.whi, g.wst, g.woff, g.KW, g.pitch = t[9], t[10], t[11], t[12], t[13], t[14]
    g.KH, g.hst, g.hoff, g.hlo, g.hhi = t[15], t[16], t[17], t[18], t[19]
    g.ds = t + 20
    g.dn = g.ds + g.OD
    g.hs = g.dn + g.OD
    g.hn = g.hs + g.OH
    g.ws = g.hn + g.OH
    g.wn = g.ws + g.OW


# ----------------------------------------------------------------------------------------------
# row primitives (unit-stride over a row, vectorisable). ``mode``: SUM, MAX (no NaN in the data:
# a plain maximum, one vmaxps) or NANMAX (torch's rule, a NaN wins). ``mode`` is loop-invariant:
# the compiler unswitches the loops into one vectorised version per mode.

cdef enum:
    SUM = 0
    MAX = 1
    NANMAX = 2


cdef inline floating _op(floating a, floating b, int mode) noexcept nogil:
    if mode == SUM:
        return a + b
    if mode == MAX:
        return b if b > a else a
    return b if ((b > a) | (b != b)) else a


cdef inline void _comb2(floating* dst, const floating* a, const floating* b, isz n,
                        int mode) noexcept nogil:
    cdef isz i
    for i in range(n):
        dst[i] = _op(a[i], b[i], mode)


cdef inline void _comb3(floating* dst, const floating* a, const floating* b, const floating* c,
                        isz n, int mode) noexcept nogil:
    cdef isz i
    for i in range(n):
        dst[i] = _op(_op(a[i], b[i], mode), c[i], mode)


cdef inline void _comb_into(floating* dst, const floating* b, isz n, int mode) noexcept nogil:
    cdef isz i
    for i in range(n):
        dst[i] = _op(dst[i], b[i], mode)


cdef inline void _comb_into2(floating* dst, const floating* b, const floating* c, isz n,
                             int mode) noexcept nogil:
    cdef isz i
    for i in range(n):
        dst[i] = _op(dst[i], _op(b[i], c[i], mode), mode)


cdef const floating* _vertical(const floating* xp, const Win* g, isz od, isz oh, floating* acc,
                               int mode) noexcept nogil:
    """Combine the valid input rows of window row (od, oh); returns the combined row (length W)."""
    cdef isz nd = g.dn[od], nh = g.hn[oh], a, b, k = 0, w, W = g.W
    cdef const floating* row
    cdef const floating* r0 = NULL
    cdef const floating* r1 = NULL
    cdef floating v
    if nd == 0 or nh == 0:
        v = 0 if mode == SUM else -INFINITY
        for w in range(W):
            acc[w] = v
        return acc
    for a in range(nd):
        row = xp + ((g.ds[od] + a * g.dd) * g.H + g.hs[oh]) * W
        for b in range(nh):
            if k == 0:
                r0 = row
            elif k == 1:
                r1 = row
            elif k == 2:
                _comb3(acc, r0, r1, row, W, mode)
            elif k % 2 == 1:
                r0 = row
            else:
                _comb_into2(acc, r0, row, W, mode)
            k += 1
            row += g.dh * W
    if k == 1:
        return r0
    if k == 2:
        _comb2(acc, r0, r1, W, mode)
    elif k % 2 == 0:
        _comb_into(acc, r0, W, mode)
    return acc


cdef void _vert_rows(const floating* xp, floating* acc, isz pitch, isz oh0, isz n, const Win* g,
                     int mode, isz ncols) noexcept nogil:
    """Vertical pass of ``n`` consecutive 2-D output rows from ``oh0`` whose windows are all inside
    the input (``KH`` taps from ``oh * hst + hoff``): row j goes to ``acc + j * pitch``."""
    cdef isz j, w, k, W = g.W, step = g.dh * g.W, KH = g.KH
    cdef const floating* r
    cdef floating* d
    for j in range(n):
        r = xp + ((oh0 + j) * g.hst + g.hoff) * W
        d = acc + j * pitch
        if KH == 1:
            for w in range(ncols):
                d[w] = r[w]
        elif KH == 2:
            for w in range(ncols):
                d[w] = _op(r[w], r[w + step], mode)
        elif KH == 3:
            for w in range(ncols):
                d[w] = _op(_op(r[w], r[w + step], mode), r[w + 2 * step], mode)
        else:
            # four rows at a time, then three at a time into the buffer (few passes over it)
            for w in range(ncols):
                d[w] = _op(_op(r[w], r[w + step], mode), _op(r[w + 2 * step], r[w + 3 * step], mode),
                           mode)
            k = 4
            while k + 3 <= KH:
                for w in range(ncols):
                    d[w] = _op(d[w], _op(_op(r[w + k * step], r[w + (k + 1) * step], mode),
                                         r[w + (k + 2) * step], mode), mode)
                k = k + 3
            while k < KH:
                for w in range(ncols):
                    d[w] = _op(d[w], r[w + k * step], mode)
                k = k + 1


cdef inline floating _fin(floating v, int mode, floating sc) noexcept nogil:
    return v * sc if mode == SUM else v


cdef inline void _hborder(const floating* a, floating* o, const Win* g, isz ow0, isz ow1,
                          int mode) noexcept nogil:
    cdef isz ow, t, s
    cdef floating m
    for ow in range(ow0, ow1):
        s = g.ws[ow]
        m = 0 if mode == SUM else -INFINITY
        for t in range(g.wn[ow]):
            m = _op(m, a[s + t * g.dw], mode)
        o[ow] = m


cdef void _hinterior(const floating* a, floating* o, isz lo, isz hi, const Win* g,
                     int mode, floating sc) noexcept nogil:
    """o[ow] = op over the taps ``a[st*ow + off + kw*dw]`` for ow in [lo, hi), times ``sc`` for
    sums; the stride is a compile-time constant in the common cases so that the strided loads
    vectorise."""
    cdef isz ow, kw, j, st = g.wst, dw = g.dw, off = g.woff, KW = g.KW
    if hi <= lo:
        return
    if st == 1 and dw == 1 and KW == 3:
        for ow in range(lo, hi):
            o[ow] = _fin(_op(_op(a[ow + off], a[ow + off + 1], mode), a[ow + off + 2], mode), mode, sc)
    elif st == 1 and dw == 1 and KW == 2:
        for ow in range(lo, hi):
            o[ow] = _fin(_op(a[ow + off], a[ow + off + 1], mode), mode, sc)
    elif st == 2 and dw == 1 and KW == 3:
        for ow in range(lo, hi):
            o[ow] = _fin(_op(_op(a[2 * ow + off], a[2 * ow + off + 1], mode), a[2 * ow + off + 2], mode),
                         mode, sc)
    elif st == 2 and dw == 1 and KW == 2:
        for ow in range(lo, hi):
            o[ow] = _fin(_op(a[2 * ow + off], a[2 * ow + off + 1], mode), mode, sc)
    elif st == 1:
        for ow in range(lo, hi):
            o[ow] = a[ow + off]
        for kw in range(1, KW):
            j = off + kw * dw
            for ow in range(lo, hi):
                o[ow] = _op(o[ow], a[ow + j], mode)
    elif st == 2:
        for ow in range(lo, hi):
            o[ow] = a[2 * ow + off]
        for kw in range(1, KW):
            j = off + kw * dw
            for ow in range(lo, hi):
                o[ow] = _op(o[ow], a[2 * ow + j], mode)
    else:
        # general stride (adaptive regions of equal size, large strides): taps inner
        for ow in range(lo, hi):
            j = st * ow + off
            o[ow] = a[j]
            for kw in range(1, KW):
                o[ow] = _op(o[ow], a[j + kw * dw], mode)
    if mode == SUM and sc != 1 and not ((st == 1 or st == 2) and dw == 1 and (KW == 2 or KW == 3)):
        for ow in range(lo, hi):
            o[ow] = o[ow] * sc


cdef inline void _horizontal(const floating* a, floating* o, const Win* g, int mode) noexcept nogil:
    """o[ow] = max or sum of row ``a`` over the taps of width window ow."""
    _hborder(a, o, g, 0, g.wlo if g.wlo < g.OW else g.OW, mode)
    _hborder(a, o, g, g.whi, g.OW, mode)
    _hinterior(a, o, g.wlo, g.whi, g, mode, 1)


cdef void _hargmax(const floating* a, floating* hv, int* hc, const Win* g) noexcept nogil:
    """hv[ow], hc[ow] = max of row ``a`` over width window ow and its column (torch's scan rule:
    a larger value or a NaN replaces the current one). Only rows of data holding a NaN come here
    (the NaN-free path is fc_simd.h's), so one plain loop over the window tables serves all."""
    cdef isz ow, t, s, dw = g.dw
    cdef floating m, v
    cdef int mi
    for ow in range(g.OW):
        s = g.ws[ow]
        m = -INFINITY
        mi = <int>s
        for t in range(g.wn[ow]):
            v = a[s + t * dw]
            if _gt(v, m):
                m = v
                mi = <int>(s + t * dw)
        hv[ow] = m
        hc[ow] = mi


cdef inline isz _chunk_row(isz c, isz nchunk, isz R) noexcept nogil:
    """First output row of chunk ``c`` of ``nchunk`` (``c == nchunk``: R). Task t covers rows
    [_chunk_row(t % nchunk), _chunk_row(t % nchunk + 1)).

    (A value, not an output argument: Cython makes a prange body's variables thread-private only
    when the body assigns them; one filled through a pointer stays shared between the threads.)"""
    return c * R // nchunk


def _chunks(isz P, isz R, int nthreads):
    """Tasks per plane: 1, or enough output-row chunks to keep every thread busy when P is small.

    Tasks are handed out dynamically in small chunks: on a loaded machine a thread that gets its
    core late finds the work already done by the others instead of holding everyone up."""
    if P >= nthreads or R <= 1:
        return 1
    return min(R, (4 * nthreads + P - 1) // P)



def _thread_rows(int nthreads, isz n, dtype, zero=False):
    """Per-thread work rows of ``n`` elements, each starting on its own cache lines (rows padded
    to 64-byte multiples plus one spare line): threads writing neighbouring rows of one array
    otherwise share the line at the boundary (false sharing; measured 2x on block pooling)."""
    return (np.zeros if zero else np.empty)((max(nthreads, 1), line_stride(n, np.dtype(dtype).itemsize)),
                                            dtype=dtype)


# ----------------------------------------------------------------------------------------------
# forward

cdef double _plane_sum(const floating* a, isz n) noexcept nogil:
    """Sum in 64 lanes (vector registers) per 4096-element block, blocks added in double."""
    cdef floating acc[64]
    cdef double total = 0
    cdef isz i = 0, j, e
    while i < n:
        e = i + 4096
        if e > n:
            e = n
        for j in range(64):
            acc[j] = 0
        while i + 64 <= e:
            _comb_into(acc, a + i, 64, SUM)
            i = i + 64
        while i < e:
            acc[0] = acc[0] + a[i]
            i = i + 1
        for j in range(32):             # fold the lanes in vector registers, then 8 in double
            acc[j] = acc[j] + acc[j + 32]
        for j in range(16):
            acc[j] = acc[j] + acc[j + 16]
        for j in range(8):
            total = total + (acc[j] + acc[j + 8])
    return total


cdef double _input_span_sum(const floating* xp, const Win* g, isz r0, isz r1) noexcept nogil:
    """The sum of a range of input elements (of the plane) that contains every element the windows
    of output rows [r0, r1) read: a number unless one of them is NaN. The range runs from the
    smallest first tap to the largest last tap over the rows' windows, depth and height (with
    padding and dilation neither is the first or last row's: a window starting in the padding
    has its first tap moved right, one cut by the end of the input ends early)."""
    cdef isz r, od, oh, e, dlo = g.D, dhi = -1, hlo = g.H, hhi = -1, lo, hi
    cdef isz n = g.D * g.H * g.W
    for r in range(r0, r1):
        od = r // g.OH
        oh = r - od * g.OH
        if g.dn[od] > 0:
            e = g.ds[od] + (g.dn[od] - 1) * g.dd
            dlo = g.ds[od] if g.ds[od] < dlo else dlo
            dhi = e if e > dhi else dhi
        if g.hn[oh] > 0:
            e = g.hs[oh] + (g.hn[oh] - 1) * g.dh
            hlo = g.hs[oh] if g.hs[oh] < hlo else hlo
            hhi = e if e > hhi else hhi
    if dhi < 0 or hhi < 0:
        return 0                      # no window of these rows has a tap
    # every row (d, h) with dlo <= d <= dhi and hlo <= h <= hhi lies in this flat range
    lo = (dlo * g.H + hlo) * g.W
    hi = (dhi * g.H + hhi + 1) * g.W
    if lo < 0:
        lo = 0
    if hi > n:
        hi = n
    if hi < lo:
        hi = lo
    return _plane_sum(xp + lo, hi - lo)


def pool_forward(const floating[:, ::1] x, floating[:, ::1] out, const isz[::1] geo, bint is_max,
                 const double[::1] inv_dh, const floating[::1] inv_w, double uniform, int nthreads):
    """Max (values only) or average pooling, separable: vertical combine then horizontal windows.

    For averages ``inv_dh`` (OD entries for depth, then OH for height) and ``inv_w`` are the
    per-dimension reciprocal divisors (their product is 1 / divisor of each output); ignored for max.
    ``uniform`` != 0: every output has that reciprocal divisor (one flat scaling pass per block). Work goes in blocks of output rows whose input
    fits in L1. Max pooling first sums the block's input: without a NaN (the sum is a number) it
    uses the plain maximum, else torch's NaN rule.

    Flat rows (``pitch = wst * OW > 0``, every tap inside ``[0, pitch)``): the vertical results of a
    block are stored ``pitch`` apart, so output ``i`` of the block reads ``acc[wst*i + woff + ...]``
    whatever its row: one long vectorised loop for the block, then the few border windows of each
    row are redone from the tables (the flat loop wrote garbage there, reading the zero margins).
    """
    cdef Win g
    _fill_win(&g, &geo[0])
    cdef isz P = x.shape[0], R = g.OD * g.OH, W = g.W, OW = g.OW, pitch = g.pitch
    cdef isz nchunk = _chunks(P, R, nthreads), ntask = P * nchunk
    cdef isz rowlen = max(W, pitch)
    cdef isz B = max(1, 4096 // rowlen)
    # flat rows read the margins around a block's rows for the border windows (redone later):
    # left of the first row, and up to (KW - 1) * dw + wst past the last; rows by tables do not
    cdef isz front = (max(0, -g.woff) if pitch > 0 else 0) + 8
    cdef isz ncopy = min(W, pitch) if pitch > 0 else W
    cdef isz slack = (g.KW - 1) * g.dw + g.wst if pitch > 0 else 0
    cdef isz buflen = front + (B if pitch > 0 else 1) * rowlen + rowlen + slack + 8
    cdef floating[:, ::1] work = _thread_rows(nthreads, buflen,
                                          np.float32 if floating is float else np.float64, True)
    cdef isz t, p, r, r0, r1, rb, re, od, oh, ow, j, w, n
    cdef int mode
    cdef floating* acc
    cdef floating* dst
    cdef floating* orow
    cdef const floating* row
    cdef const floating* xp
    cdef floating sc
    cdef double chk
    with nogil, parallel(num_threads=nthreads):
        for t in prange(ntask, schedule="dynamic", chunksize=4):
            acc = &work[fc_thread_id(), front]
            p = t // nchunk
            xp = &x[p, 0]
            r0 = _chunk_row(t % nchunk, nchunk, R)
            r1 = _chunk_row(t % nchunk + 1, nchunk, R)
            rb = r0
            while rb < r1:
                re = rb + B
                if re > r1:
                    re = r1
                mode = SUM
                if is_max:
                    chk = _input_span_sum(xp, &g, rb, re)
                    mode = MAX if chk == chk else NANMAX
                od = rb // g.OH
                oh = rb - od * g.OH
                if pitch > 0:
                    j = 0
                    while j < re - rb:
                        dst = acc + j * pitch
                        if g.D == 1 and g.dn[od] == 1 and g.hlo <= oh < g.hhi:
                            # a run of rows with full windows: one call, no per-row bookkeeping
                            n = min(re - rb - j, g.hhi - oh)
                            _vert_rows(xp, dst, pitch, oh, n, &g, mode, ncopy)
                            j = j + n
                            oh = oh + n
                        else:
                            row = _vertical(xp, &g, od, oh, dst, mode)
                            if row != dst:
                                for w in range(ncopy):
                                    dst[w] = row[w]
                            j = j + 1
                            oh = oh + 1
                        if oh == g.OH:
                            oh = 0
                            od = od + 1
                    orow = &out[p, rb * OW]
                    if g.wlo == 0 and g.whi == OW and (mode != SUM or uniform != 0):
                        # no border windows, the divisor (if any) applied in the same pass
                        _hinterior(acc, orow, 0, (re - rb) * OW, &g, mode, <floating>uniform)
                        rb = re
                        continue
                    _hinterior(acc, orow, 0, (re - rb) * OW, &g, mode, 1)
                    od = rb // g.OH
                    oh = rb - od * g.OH
                for r in range(rb, re):
                    orow = &out[p, r * OW]
                    if pitch > 0:
                        row = acc + (r - rb) * pitch
                        _hborder(row, orow, &g, 0, g.wlo if g.wlo < OW else OW, mode)
                        _hborder(row, orow, &g, g.whi, OW, mode)
                    else:
                        row = _vertical(xp, &g, od, oh, acc, mode)
                        _horizontal(row, orow, &g, mode)
                    if mode == SUM:
                        sc = <floating>(inv_dh[od] * inv_dh[g.OD + oh])
                        for ow in range(OW):
                            orow[ow] = orow[ow] * (sc * inv_w[ow])
                    oh = oh + 1
                    if oh == g.OH:
                        oh = 0
                        od = od + 1
                rb = re


cdef bint _argmax_rows(const floating* xp, const Win* g, isz od, isz oh, floating* av, int* ar,
                       int* mrb, int* mcb, floating* orow, isz* irow) noexcept nogil:
    """Argmax of window row (od, oh) for data without NaN (returns True, writing nothing, when the
    window rows hold a NaN: the caller takes the NaN-aware path), vertical first: per column the
    maximum of the window's rows and the first row reaching it (strict >), then per window the column
    whose (value, row) is largest value / smallest row, first column on a tie. That is torch's
    row-major scan result: the first maximum in (row, column) order."""
    cdef isz a, W = g.W, ow, t, s, col, lo = g.wlo, hi = g.whi, st = g.wst, e1, jb
    cdef isz dw = g.dw, off = g.woff
    cdef int rown, mr, mc, r, nan
    cdef const floating* row
    cdef floating m, v
    cdef bint c
    for a in range(g.dn[od]):
        # the window's rows of this depth slice in one pass, maxima kept in registers (fc_simd.h;
        # explicit blends: GCC turns this loop into masked stores, slow on AMD)
        rown = <int>((g.ds[od] + a * g.dd) * g.H + g.hs[oh])
        row = xp + <isz>rown * W
        if floating is float:
            nan = fc_argmax_vert_f(row, g.dh * W, <int>g.hn[oh], rown, <int>g.dh, av, ar, W, a == 0)
        else:
            nan = fc_argmax_vert_d(row, g.dh * W, <int>g.hn[oh], rown, <int>g.dh, av, ar, W, a == 0)
        if nan:
            return True
    # border windows only: [0, lo) and [hi, OW) (all of them when there is no interior)
    e1 = lo if hi > lo else g.OW
    for jb in range(e1 + (g.OW - hi if hi > lo else 0)):
        ow = jb if jb < e1 else hi + jb - e1
        s = g.ws[ow]
        m = -INFINITY
        mr = <int>(g.ds[od] * g.H + g.hs[oh])     # torch's index when every tap is -inf or none
        mc = <int>s
        for t in range(g.wn[ow]):
            col = s + t * dw
            v = av[col]
            r = ar[col]
            c = (v > m) | ((v == m) & (r < mr))     # branch-free: no mispredicted jumps
            m = v if c else m
            mr = r if c else mr
            mc = <int>col if c else mc
        orow[ow] = m
        irow[ow] = <isz>mr * W + mc
    if hi <= lo:
        return False
    # interior windows: SIMD blends over 8 windows at a time for strides 1 and 2 (fc_simd.h)
    # flat indices written directly when they fit 32 bits (they always do below 2**31 elements)
    cdef bint direct = g.D * g.H * W < 2147483647
    if floating is float:
        fc_argmax_horiz_f(av, ar, orow, mrb, mcb, lo, hi, st, off, dw, g.KW,
                          irow if direct else NULL, W)
    else:
        fc_argmax_horiz_d(av, ar, orow, mrb, mcb, lo, hi, st, off, dw, g.KW,
                          irow if direct else NULL, W)
    if not direct:
        for ow in range(lo, hi):
            irow[ow] = <isz>mrb[ow] * W + mcb[ow]
    return False


def max_pool_forward_indices(const floating[:, ::1] x, floating[:, ::1] out, isz[:, ::1] ind,
                             const isz[::1] geo, int nthreads):
    """Max pooling with argmax: horizontal argmax of each window row, then the rows in scan order
    (value, column and row tracked in 32-bit lanes; the flat index is formed once per output)."""
    cdef Win g
    _fill_win(&g, &geo[0])
    cdef isz P = x.shape[0], R = g.OD * g.OH, OW = g.OW
    cdef isz nchunk = _chunks(P, R, nthreads), ntask = P * nchunk
    cdef floating[:, ::1] hvw = _thread_rows(nthreads, max(OW, g.W),
                                         np.float32 if floating is float else np.float64)
    cdef int[:, ::1] iw = _thread_rows(nthreads, 3 * max(OW, g.W), np.intc)
    cdef isz t, p, r, r0, r1, od, oh, ow, a, b, k, nd, nh, idv, ihv
    cdef int rown
    cdef bint c
    cdef floating* hv
    cdef int* hc
    cdef int* oc
    cdef int* orr
    cdef floating* orow
    cdef isz* irow
    cdef const floating* xp
    with nogil, parallel(num_threads=nthreads):
        for t in prange(ntask, schedule="dynamic", chunksize=4):
            hv = &hvw[fc_thread_id(), 0]
            hc = &iw[fc_thread_id(), 0]
            oc = hc + max(OW, g.W)
            orr = oc + max(OW, g.W)
            p = t // nchunk
            xp = &x[p, 0]
            r0 = _chunk_row(t % nchunk, nchunk, R)
            r1 = _chunk_row(t % nchunk + 1, nchunk, R)
            for r in range(r0, r1):
                od = r // g.OH
                oh = r - od * g.OH
                orow = &out[p, r * OW]
                irow = &ind[p, r * OW]
                nd = g.dn[od]
                nh = g.hn[oh]
                if nd == 0 or nh == 0:
                    for ow in range(OW):
                        orow[ow] = -INFINITY
                        irow[ow] = (g.ds[od] * g.H + g.hs[oh]) * g.W + g.ws[ow]
                    continue
                # vertical-first argmax, unless the window rows hold a NaN
                if not _argmax_rows(xp, &g, od, oh, hv, hc, oc, orr, orow, irow):
                    continue
                k = 0
                for a in range(nd):
                    idv = g.ds[od] + a * g.dd
                    for b in range(nh):
                        ihv = g.hs[oh] + b * g.dh
                        rown = <int>(idv * g.H + ihv)
                        _hargmax(xp + rown * g.W, hv, hc, &g)
                        if floating is float:
                            fc_argmax_merge_f(hv, hc, orow, oc, orr, OW, rown, k == 0)
                        else:
                            fc_argmax_merge_d(hv, hc, orow, oc, orr, OW, rown, k == 0)
                        k = k + 1
                for ow in range(OW):
                    irow[ow] = <isz>orr[ow] * g.W + oc[ow]


# ----------------------------------------------------------------------------------------------
# global pooling

cdef inline floating _plane_max(const floating* a, isz n) noexcept nogil:
    """Maximum of n values, a NaN wins (fc_simd.h: SIMD max and a NaN-flagging sum in one pass)."""
    if floating is float:
        return fc_plane_max_f(a, n)
    else:
        return fc_plane_max_d(a, n)


cdef enum:
    SUM_CHUNK = 65536                 # elements per partial sum of a global average


cdef double _chunked_sum(const floating* a, isz n) noexcept nogil:
    """The plane sum of global average pooling: _plane_sum of every SUM_CHUNK elements, the
    chunks' sums added in order in double -- the association global_pool's parallel split
    computes too, so its result does not depend on the thread count or the batch."""
    cdef double total = 0
    cdef isz c = 0
    while c < n:
        total = total + _plane_sum(a + c, SUM_CHUNK if c + SUM_CHUNK <= n else n - c)
        c = c + SUM_CHUNK
    return total


cdef enum:
    SMALL_PLANE = 512                 # planes up to this size: global pooling by groups of planes


cdef void _global_small(const floating[:, ::1] x, floating[::1] out, bint is_max,
                        int nthreads) noexcept nogil:
    """Global pooling of small planes, a group of planes per call (fc_plane_group_*: one vector
    register per plane, the group folded together); a group whose maximum met a NaN is redone plane
    by plane with the NaN rule. Sums: at most SMALL_PLANE / 8 elements per float lane."""
    cdef isz P = x.shape[0], n = x.shape[1], q, p, e
    cdef isz G = 32 // sizeof(floating)          # planes per group: one AVX vector of lanes
    cdef int nan
    for q in prange((P + G - 1) // G, schedule="static", num_threads=nthreads):
        p = q * G
        e = P - p if P - p < G else G
        if floating is float:
            nan = fc_plane_group_f(&x[p, 0], n, <int>e, is_max, &out[p])
        else:
            nan = fc_plane_group_d(&x[p, 0], n, <int>e, is_max, &out[p])
        if nan:
            for p in range(q * G, q * G + e):
                out[p] = _plane_max(&x[p, 0], n)


cdef inline floating _first_zero(const floating* a, isz n) noexcept nogil:
    """The plane's first element equal to 0, for a maximum of 0: -0 and +0 tie, and torch keeps
    the first maximum in scan order (lane-parallel maxima do not)."""
    cdef isz i
    for i in range(n):
        if a[i] == 0:
            return a[i]
    return 0


def global_pool(const floating[:, ::1] x, floating[::1] out, bint is_max, int nthreads):
    """out[p] = max or mean of plane p. With fewer planes than threads the planes are split into
    chunks of SUM_CHUNK elements (the chunks of _chunked_sum, so the bits stay the same). A maximum
    of 0 takes the sign of the plane's first zero (torch's first maximum)."""
    cdef isz p
    _global_pool(x, out, is_max, nthreads)
    if is_max:
        with nogil:
            for p in range(x.shape[0]):
                if out[p] == 0:
                    out[p] = _first_zero(&x[p, 0], x.shape[1])


cdef void _global_pool(const floating[:, ::1] x, floating[::1] out, bint is_max, int nthreads):
    cdef isz P = x.shape[0], n = x.shape[1], p, t, c, lo, hi
    cdef isz nchunk = (n + SUM_CHUNK - 1) // SUM_CHUNK
    cdef double total
    cdef double[:, ::1] part
    if n <= SMALL_PLANE:
        _global_small(x, out, is_max, nthreads)
        return
    if P >= nthreads or nchunk == 1:
        with nogil:
            for p in prange(P, schedule="dynamic", chunksize=16, num_threads=nthreads):
                if is_max:
                    out[p] = _plane_max(&x[p, 0], n)
                else:
                    out[p] = <floating>(_chunked_sum(&x[p, 0], n) / n)
        return
    part = np.empty((P, nchunk))
    with nogil:
        for t in prange(P * nchunk, schedule="static", num_threads=nthreads):
            p = t // nchunk
            c = t % nchunk
            lo = c * SUM_CHUNK
            hi = lo + SUM_CHUNK if lo + SUM_CHUNK <= n else n
            if is_max:
                part[p, c] = _plane_max(&x[p, lo], hi - lo)
            else:
                part[p, c] = _plane_sum(&x[p, lo], hi - lo)
    for p in range(P):
        if is_max:
            out[p] = part[p, 0]
            for c in range(1, nchunk):
                out[p] = _max(out[p], <floating>part[p, c])
        else:
            total = 0
            for c in range(nchunk):
                total = total + part[p, c]
            out[p] = <floating>(total / n)


# ----------------------------------------------------------------------------------------------
# backward

cdef inline isz _up64(isz nbytes) noexcept nogil:
    return (nbytes + 63) // 64 * 64


def _group_work(int nthreads, isz nbytes):
    """A row of nbytes per thread for the groups of planes, plus 64 bytes to align its start."""
    return np.empty((max(nthreads, 1), nbytes + 64), np.uint8)


def pool_groups(const floating[:, ::1] x, floating[:, ::1] out, int64_t[:, ::1] ind,
                const int32_t[::1] taps, const int32_t[::1] starts, const floating[::1] scale,
                int mode, int nthreads):
    """Pooling of small planes by groups of planes transposed into a tile (fc_pool_group_*,
    fc_simd.h): output o of plane p reads plane elements ``taps[starts[o]:starts[o + 1]]``. mode 0:
    average (sum times scale[o]), 1: maximum, 2: maximum and its index into ``ind`` (else unused).
    Each thread has its tile (planes x elements) and output tile, 32-byte aligned."""
    cdef isz P = x.shape[0], n = x.shape[1], nout = out.shape[1], q, p, cnt, tid
    cdef isz L = 32 // sizeof(floating)          # planes per group: one AVX vector of lanes
    # tile, output tile, index tile (L int32 / int64 lanes: 32 bytes per output), 64-byte aligned
    cdef isz tbytes = _up64(n * 32), obytes = _up64(nout * 32)
    cdef unsigned char[:, ::1] work = _group_work(nthreads, tbytes + obytes + obytes)
    cdef unsigned char* base
    cdef floating* tile
    cdef floating* otile
    cdef void* itile
    cdef int64_t* iout
    with nogil, parallel(num_threads=nthreads):
        tid = fc_thread_id()
        base = <unsigned char*>((<size_t>&work[tid, 0] + 63) & ~(<size_t>63))
        tile = <floating*>base
        otile = <floating*>(base + tbytes)
        itile = <void*>(base + tbytes + obytes)
        for q in prange((P + L - 1) // L, schedule="static"):
            p = q * L
            cnt = P - p if P - p < L else L
            iout = &ind[p, 0] if mode == 2 else NULL
            if floating is float:
                fc_pool_group_f(&x[p, 0], n, <int>cnt, mode, &taps[0], &starts[0], &scale[0], nout,
                                tile, otile, <int32_t*>itile, &out[p, 0], iout)
            else:
                fc_pool_group_d(&x[p, 0], n, <int>cnt, mode, &taps[0], &starts[0], &scale[0], nout,
                                tile, otile, <int64_t*>itile, &out[p, 0], iout)


def pool_groups_backward(const floating[:, ::1] g, floating[:, ::1] gi, const int32_t[::1] taps,
                         const int32_t[::1] starts, const floating[::1] scale, int nthreads):
    """Adjoint of pool_groups' averages (fc_pool_group_backward_*): grad_input plane elements
    ``taps[starts[o]:starts[o + 1]]`` each get ``g[o] * scale[o]``, a group of planes at a time in a
    tile of the thread's own."""
    cdef isz P = g.shape[0], nout = g.shape[1], n = gi.shape[1], q, p, cnt, tid
    cdef isz L = 32 // sizeof(floating)
    cdef isz tbytes = _up64(n * 32)                # the tile, then the gradients' tile
    cdef unsigned char[:, ::1] work = _group_work(nthreads, tbytes + _up64(nout * 32))
    cdef unsigned char* base
    with nogil, parallel(num_threads=nthreads):
        tid = fc_thread_id()
        base = <unsigned char*>((<size_t>&work[tid, 0] + 63) & ~(<size_t>63))
        for q in prange((P + L - 1) // L, schedule="static"):
            p = q * L
            cnt = P - p if P - p < L else L
            if floating is float:
                fc_pool_group_backward_f(&g[p, 0], nout, <int>cnt, &taps[0], &starts[0], &scale[0],
                                         n, <float*>base, <float*>(base + tbytes), &gi[p, 0])
            else:
                fc_pool_group_backward_d(&g[p, 0], nout, <int>cnt, &taps[0], &starts[0], &scale[0],
                                         n, <double*>base, <double*>(base + tbytes), &gi[p, 0])


def max_pool_backward(const floating[:, ::1] g, const int64_t[:, ::1] ind, floating[:, ::1] gi,
                      int nthreads):
    """gi[p, ind[p, j]] += g[p, j]: one plane per task, so the scatter of a plane is private
    (fc_scatter_plane_*, fc_simd.h). Index -1 (a window without any tap in the input) adds nothing.

    Returns the number of other out-of-range indices (skipped); the caller raises when it is not 0.
    """
    cdef isz P = g.shape[0], n = g.shape[1], ipl = gi.shape[1], p, bad = 0
    # planes cost the same: static blocks (dynamic chunks of a few small planes cost an atomic
    # grab per chunk, as much as a 7x7 plane's scatter)
    with nogil:
        for p in prange(P, schedule="static", num_threads=nthreads):
            if floating is float:
                bad += fc_scatter_plane_f(&gi[p, 0], &g[p, 0], &ind[p, 0], n, ipl)
            else:
                bad += fc_scatter_plane_d(&gi[p, 0], &g[p, 0], &ind[p, 0], n, ipl)
    return bad


def sum_pool_backward(const floating[:, ::1] g, floating[:, ::1] gi, const isz[::1] geo,
                      const double[::1] inv_dh, const floating[::1] inv_w, int nthreads):
    """Adjoint of average pooling (regular or adaptive tables): every output's gradient, divided by
    its divisor, is added to each valid input of its window. Per output row: scatter along W into a
    row buffer, then add the buffer to the window's valid input rows. One plane per task."""
    cdef Win gw
    _fill_win(&gw, &geo[0])
    cdef isz P = g.shape[0], ipl = gi.shape[1]
    cdef floating[:, ::1] work = _thread_rows(nthreads, gw.W,
                                          np.float32 if floating is float else np.float64)
    cdef isz p, r, od, oh, ow, a, b, t, s, w, W = gw.W
    cdef floating* tmp
    cdef floating* dst
    cdef const floating* grow
    cdef floating sc, v
    with nogil, parallel(num_threads=nthreads):
        for p in prange(P, schedule="dynamic", chunksize=4):
            tmp = &work[fc_thread_id(), 0]
            memset(&gi[p, 0], 0, ipl * sizeof(floating))
            for r in range(gw.OD * gw.OH):
                od = r // gw.OH
                oh = r - od * gw.OH
                if gw.dn[od] == 0 or gw.hn[oh] == 0:
                    continue
                grow = &g[p, r * gw.OW]
                sc = <floating>(inv_dh[od] * inv_dh[gw.OD + oh])
                memset(tmp, 0, W * sizeof(floating))
                for ow in range(gw.OW):
                    v = grow[ow] * (sc * inv_w[ow])
                    s = gw.ws[ow]
                    for t in range(gw.wn[ow]):
                        tmp[s + t * gw.dw] = tmp[s + t * gw.dw] + v
                for a in range(gw.dn[od]):
                    for b in range(gw.hn[oh]):
                        dst = &gi[p, ((gw.ds[od] + a * gw.dd) * gw.H + gw.hs[oh] + b * gw.dh) * W]
                        for w in range(W):
                            dst[w] = dst[w] + tmp[w]





def avg_pool_2x2(const floating[:, ::1] x, floating[:, ::1] out, isz H, isz W, isz OH, isz OW,
                 double scale, int nthreads):
    """Average pooling with a 2x2 window, stride 2, no padding (the most common case), parallel
    over planes (and chunks of output rows when planes are few): each output row from two input rows, ``out = s * ((a + c) + (b + d))``, by an
    explicit SIMD pair reduction (fc_simd.h; GCC's own vectorisation of the stride-2 loads uses
    cross-lane permutes that cost ~3x more on AMD cores). An odd last row / column is dropped."""
    cdef isz P = x.shape[0], p, i, t, r0, r1
    cdef isz nchunk = _chunks(P, OH, nthreads)
    cdef floating s = <floating>scale
    with nogil:
        # tasks: (plane, chunk of output rows); more than one chunk only when planes are few
        for t in prange(P * nchunk, schedule="static", num_threads=nthreads):
            p = t // nchunk
            r0 = _chunk_row(t % nchunk, nchunk, OH)
            r1 = _chunk_row(t % nchunk + 1, nchunk, OH)
            for i in range(r0, r1):
                if floating is float:
                    fc_pair_avg_f(&x[p, 2 * i * W], &x[p, (2 * i + 1) * W], &out[p, i * OW], OW, s)
                else:
                    fc_pair_avg_d(&x[p, 2 * i * W], &x[p, (2 * i + 1) * W], &out[p, i * OW], OW, s)




def pool_tall_plane(const floating[::1] src, floating[::1] dst, isz OW, isz kh, isz kw,
                    bint backward, bint is_max, double scale, int nthreads):
    """Pooling over kh x kw blocks that tile the planes exactly, the planes taken as one tall plane
    of R output rows of OW outputs (input rows of OW * kw), in chunks of rows per thread:

    - forward (``src`` the input, ``dst`` the output; R = dst.size // OW): 2x2 blocks of rows of at
      most one vector of outputs, average (times scale) or maximum (fc_pair_rows_*);
    - backward (``src`` the average's output gradient, ``dst`` grad_input; R = src.size // OW):
      every input of a block gets its gradient times scale (fc_block_backward_*)."""
    cdef isz R = (src.shape[0] if backward else dst.shape[0]) // OW
    cdef isz nchunk = min(R, 8 * max(nthreads, 1)), c, r0, r1, W = OW * kw
    cdef floating sc = <floating>scale
    with nogil:
        for c in prange(nchunk, schedule="static", num_threads=nthreads):
            r0 = _chunk_row(c, nchunk, R)
            r1 = _chunk_row(c + 1, nchunk, R)
            if backward:
                if floating is float:
                    fc_block_backward_f(&src[r0 * OW], &dst[r0 * kh * W], OW, kh, kw, r1 - r0, sc)
                else:
                    fc_block_backward_d(&src[r0 * OW], &dst[r0 * kh * W], OW, kh, kw, r1 - r0, sc)
            elif floating is float:
                fc_pair_rows_f(&src[r0 * kh * W], &dst[r0 * OW], W, OW, r1 - r0, is_max, sc)
            else:
                fc_pair_rows_d(&src[r0 * kh * W], &dst[r0 * OW], W, OW, r1 - r0, is_max, sc)


def pool_blocks(const floating[:, ::1] x, floating[:, ::1] out, isz H, isz W, isz OH, isz OW,
                isz kh, isz kw, bint is_max, double scale, int nthreads):
    """2-D max or average pooling over non-overlapping ``kh x kw`` blocks (stride = kernel, no
    padding, every window inside; also adaptive pooling with divisible sizes), parallel over planes
    (and chunks of output rows when planes are fewer than threads). Per group of output rows
    (fc_simd.h): each block's ``kh`` input rows reduced column by column in SIMD registers (max
    with torch's NaN rule), then ``kw`` adjacent values per output in one flat pass over the group
    (eight outputs at a time through a register transpose when kw == 8, float32). Averages are
    multiplied by ``scale``."""
    cdef isz P = x.shape[0], p, i, t, r0, r1, nb
    cdef isz nchunk = _chunks(P, OH, nthreads)
    # output rows per kernel call: their column sums (OW * kw values each) fill ~16 KB at most
    cdef isz B = max(1, 4096 // max(OW * kw, 1))
    cdef floating[:, ::1] tb = _thread_rows(nthreads, min(B, OH) * OW * kw,
                                        np.float32 if floating is float else np.float64)
    cdef floating sc = <floating>scale
    with nogil:
        # tasks: (plane, chunk of output rows); more than one chunk only when planes are few
        for t in prange(P * nchunk, schedule="static", num_threads=nthreads):
            p = t // nchunk
            r0 = _chunk_row(t % nchunk, nchunk, OH)
            r1 = _chunk_row(t % nchunk + 1, nchunk, OH)
            i = r0
            while i < r1:
                nb = min(B, r1 - i)
                if floating is float:
                    fc_block_pool_rows_f(&x[p, i * kh * W], &out[p, i * OW], &tb[fc_thread_id(), 0],
                                         W, OW, kh, kw, nb, is_max, sc)
                else:
                    fc_block_pool_rows_d(&x[p, i * kh * W], &out[p, i * OW], &tb[fc_thread_id(), 0],
                                         W, OW, kh, kw, nb, is_max, sc)
                i = i + nb
