# cython: language_level=3
"""Nonzero pattern of a convolution matrix (fastconv/matrix.py): one output channel's rows.

Every rank arrives as 3-D (leading spatial sizes of 1). For output position ``(od, oh, ow)`` the
kernel offsets whose input index lies inside the input form a box ``[klo, khi)`` per dim (the tap
index ``o * s + k * d - p`` is increasing in ``k``), computed by the caller; this loop nest writes,
for every row in parallel, the column index and the flat weight index ``(c, kd, kh, kw)`` of each
nonzero in sorted column order. ``start[r]`` is where row ``r`` begins (a cumulative sum of the
row counts), so rows are independent.
"""
from cython.parallel cimport prange

ctypedef fused index_t:
    int
    long long


def conv_pattern(index_t[::1] cols, Py_ssize_t[::1] kflat, const long long[::1] start,
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
    cdef Py_ssize_t R = OD * OH * OW, plane = D * H * W, HW = H * W
    cdef Py_ssize_t r, od, oh, ow, c, kd, kh, kw, pos, base_d, base_h, kbase_d, kbase_h, iw0
    with nogil:
        for r in prange(R, num_threads=num_threads, schedule="static"):
            od = r // (OH * OW)
            oh = (r // OW) % OH
            ow = r % OW
            pos = start[r]
            for c in range(cg):
                for kd in range(klo_d[od], khi_d[od]):
                    base_d = c * plane + (od * sd + kd * dd - pd) * HW
                    kbase_d = (c * KD + kd) * KH
                    for kh in range(klo_h[oh], khi_h[oh]):
                        base_h = base_d + (oh * sh + kh * dh - ph) * W
                        kbase_h = (kbase_d + kh) * KW
                        iw0 = base_h + ow * sw - pw
                        for kw in range(klo_w[ow], khi_w[ow]):
                            cols[pos] = <index_t>(iw0 + kw * dw)
                            kflat[pos] = kbase_h + kw
                            pos = pos + 1
