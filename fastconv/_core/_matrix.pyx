# cython: language_level=3
"""Nonzeros of a convolution matrix (fastconv/matrix.py), written straight into CSR arrays.

Every rank arrives as 3-D (leading spatial sizes of 1). For output position ``(od, oh, ow)`` the
kernel offsets whose input index lies inside the input form a box ``[klo, khi)`` per dim (the tap
index ``o * s + k * d - p`` is increasing in ``k``), computed by the caller. This loop nest writes,
for every row in parallel, the column index and the weight of each nonzero in sorted column order.

Rows are ``(co, r)`` with ``r`` the flat output position. The column pattern of row ``r`` is the
same for every output channel up to the column offset ``goff[co]`` of the channel's group, so the
caller passes ``start[r]`` (where row ``r`` of one channel begins, a cumulative sum of the row
counts) and ``nnz_c`` (the nonzeros of one channel); row ``(co, r)`` starts at ``co * nnz_c +
start[r]``. Its weights are ``w[co, r * wrow + (c, kd, kh, kw)]``: ``wrow = 0`` for a convolution
(one kernel for every position), ``C_in * KD * KH * KW`` for an unshared one (a kernel per position).
"""
from cython.parallel cimport prange
from fastconv._core._common cimport floating

ctypedef fused index_t:
    int
    long long


def conv_nonzeros(index_t[::1] cols, floating[::1] data, const floating[:, ::1] w, Py_ssize_t wrow,
                  const long long[::1] goff, const long long[::1] start, long long nnz_c,
                  Py_ssize_t cg, tuple in_sp, tuple kernel, tuple stride, tuple dilation, tuple pad,
                  tuple out_sp,
                  const Py_ssize_t[::1] klo_d, const Py_ssize_t[::1] khi_d,
                  const Py_ssize_t[::1] klo_h, const Py_ssize_t[::1] khi_h,
                  const Py_ssize_t[::1] klo_w, const Py_ssize_t[::1] khi_w, int num_threads):
    cdef Py_ssize_t D = in_sp[0], H = in_sp[1], W = in_sp[2]
    cdef Py_ssize_t KD = kernel[0], KH = kernel[1], KW = kernel[2]
    cdef Py_ssize_t sd = stride[0], sh = stride[1], sw = stride[2]
    cdef Py_ssize_t dd = dilation[0], dh = dilation[1], dw = dilation[2]
    cdef Py_ssize_t pd = pad[0], ph = pad[1], pw = pad[2]
    cdef Py_ssize_t OD = out_sp[0], OH = out_sp[1], OW = out_sp[2]
    cdef Py_ssize_t R = OD * OH * OW, plane = D * H * W, HW = H * W, C_out = w.shape[0]
    cdef Py_ssize_t task, r, co, od, oh, ow, c, kd, kh, kw, pos, base_d, base_h, kbase_d, kbase_h
    cdef Py_ssize_t iw0, wbase
    cdef long long off
    cdef const floating* wc
    with nogil:
        for task in prange(C_out * R, num_threads=num_threads, schedule="static"):
            co = task // R
            r = task - co * R
            od = r // (OH * OW)
            oh = (r // OW) % OH
            ow = r % OW
            pos = co * nnz_c + start[r]
            off = goff[co]
            wc = &w[co, 0]
            wbase = r * wrow
            for c in range(cg):
                for kd in range(klo_d[od], khi_d[od]):
                    base_d = c * plane + (od * sd + kd * dd - pd) * HW
                    kbase_d = (c * KD + kd) * KH
                    for kh in range(klo_h[oh], khi_h[oh]):
                        base_h = base_d + (oh * sh + kh * dh - ph) * W
                        kbase_h = wbase + (kbase_d + kh) * KW
                        iw0 = base_h + ow * sw - pw
                        for kw in range(klo_w[ow], khi_w[ow]):
                            cols[pos] = <index_t>(off + iw0 + kw * dw)
                            data[pos] = wc[kbase_h + kw]
                            pos = pos + 1
