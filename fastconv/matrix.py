"""Convolution written as a matrix, and what that costs (the lecture's comparison).

A convolution is a linear map, so it has a matrix ``M`` with ``conv(x, w).ravel() == M @ x.ravel()``.
:func:`conv_matrix` and :func:`unshared_conv_matrix` build that matrix (dense or ``scipy.sparse``),
and :func:`efficiency` counts -- by formula, without building anything -- what convolution, the dense
matrix and the sparse matrix store and compute.

Layout of ``M`` (for an unbatched input ``(C_in, *spatial)``):

- row ``r`` is output element ``(co, *o)`` in C order: ``r = co * prod(out) + ravel(o)``;
- column ``c`` is input element ``(ci, *i)`` in C order;
- row ``(co, *o)`` holds ``w[co, ci - g * C_in/groups, *k]`` at column ``(ci, *(o * stride + k * dilation
  - pad_before))`` for every kernel offset ``k`` whose input index lies inside the input, ``g = co //
  (C_out / groups)`` the group of ``co``. Offsets that land in the zero padding have no entry: padding
  is folded into the matrix, never stored.

Columns inside a row come out sorted (channel, then kernel offset, and input index grows with the
offset), so the CSR matrix is canonical as built. The build is a compiled loop nest
(fastconv/_core/_matrix.pyx, OpenMP over rows) writing column indices and values straight into the
CSR arrays, whose row pointers come from the per-dimension tap counts; a vectorised NumPy version
(:func:`_nonzeros_numpy`) is the fallback and the test reference. No Python loop over nonzeros.
"""
import math

import numpy as np

from . import _args

__all__ = ["conv_matrix", "unshared_conv_matrix", "efficiency", "EfficiencyReport"]

_FORMATS = ("csr", "csc", "coo", "dense")
_INT32_MAX = 2 ** 31 - 1


# --------------------------------------------------------------------------------------------------
# exact counting (pure integer arithmetic: any size, nothing allocated)

def _tap_interval(in_size, s, off, out):
    """Output indices ``o`` in ``[a, b)`` with ``0 <= o * s + off < in_size``, clipped to ``[0, out)``."""
    a = max(0, -(off // s))                    # ceil(-off / s)
    b = min(out, (in_size - 1 - off) // s + 1)
    return a, max(a, b)


def _count_dim(in_size, k, s, d, pb, out):
    """For one spatial dim: (number of valid (o, k) pairs, number of o with at least one valid k).

    ``o`` is valid for tap ``t`` when ``0 <= o*s + t*d - pb < in_size``: for each tap that is an interval
    of ``o``, so the first count is a sum of interval lengths and the second the size of their union.
    """
    intervals = [_tap_interval(in_size, s, t * d - pb, out) for t in range(k)]
    taps = sum(b - a for a, b in intervals)
    covered, end = 0, 0
    for a, b in sorted(iv for iv in intervals if iv[1] > iv[0]):
        a = max(a, end)
        if b > a:
            covered += b - a
            end = b
    return taps, covered


def _index_dtype(rows, cols, nnz):
    """The index dtype scipy.sparse picks: int32 when every index and count fits, else int64."""
    return np.dtype(np.int32) if max(rows, cols, nnz, 1) <= _INT32_MAX else np.dtype(np.int64)


def _storage_bytes(fmt, rows, cols, nnz, itemsize):
    """Bytes of the stored matrix (values plus index arrays) in format ``fmt``."""
    if fmt == "dense":
        return rows * cols * itemsize
    idx = _index_dtype(rows, cols, nnz).itemsize
    if fmt == "csr":
        return nnz * (itemsize + idx) + (rows + 1) * idx
    if fmt == "csc":
        return nnz * (itemsize + idx) + (cols + 1) * idx
    return nnz * (itemsize + 2 * idx)  # coo: row and column index per entry


class _Structure:
    """Exact sizes of the matrix of a convolution-like op, from its geometry alone."""

    def __init__(self, geom, c_in, c_out, groups):
        self.geom = geom
        self.c_in, self.c_out, self.groups = c_in, c_out, groups
        self.cg = c_in // groups
        self.rows = c_out * math.prod(geom.out_sp)
        self.cols = c_in * math.prod(geom.in_sp)
        taps, covered = 1, 1
        self.dim_counts = []
        for i, k, s, d, (pb, _), o in zip(geom.in_sp, geom.kernel, geom.stride, geom.dilation,
                                          geom.pads, geom.out_sp):
            t, c = _count_dim(i, k, s, d, pb, o)
            self.dim_counts.append((t, c))
            taps *= t
            covered *= c
        #: nonzeros of the rows of one output channel (the build template)
        self.nnz_per_channel = self.cg * taps
        self.nnz = c_out * self.nnz_per_channel
        #: rows with at least one nonzero (the others are all-zero: windows entirely in padding)
        self.nonempty_rows = c_out * covered

    def nbytes(self, fmt, itemsize):
        return _storage_bytes(fmt, self.rows, self.cols, self.nnz, itemsize)


# --------------------------------------------------------------------------------------------------
# argument handling

def _check_format(func, format):
    if not isinstance(format, str) or format.lower() not in _FORMATS:
        raise _args.fail(func, f"format must be one of {', '.join(map(repr, _FORMATS))}, got {format!r}")
    return format.lower()


def _check_max_bytes(func, max_bytes):
    if max_bytes is None:
        return None
    if not _args._is_int(max_bytes) or max_bytes < 0:
        raise _args.type_fail(func, f"max_bytes must be a non-negative int or None, got {max_bytes!r}")
    return int(max_bytes)


def _check_budget(func, st, fmt, dtype, max_bytes):
    """MemoryError (before anything is allocated) when the result would not fit."""
    need = st.nbytes(fmt, dtype.itemsize)
    what = (f"a {fmt} {dtype} matrix of shape ({st.rows:,}, {st.cols:,})"
            + ("" if fmt == "dense" else f" with {st.nnz:,} nonzeros"))
    if max_bytes is not None and need > max_bytes:
        hint = "" if fmt != "dense" else " (format='csr' would need " \
                                          f"{st.nbytes('csr', dtype.itemsize):,} bytes)"
        raise MemoryError(f"{func}: {what} would need {need:,} bytes, more than max_bytes="
                          f"{max_bytes:,}{hint}")
    limit = _args._memory_limit()
    if need > limit:
        raise MemoryError(f"{func}: {what} would need {need:,} bytes, more than this machine's "
                          f"{limit:,} bytes of memory")
    return need


def _input_shape(func, input_shape, rank):
    shape = _args.as_shape(func, "input_shape", input_shape)
    if len(shape) != rank + 1:
        raise _args.fail(func, f"input_shape must be unbatched (C_in, *spatial) with {rank} spatial "
                               f"dimension(s) to match the weight, got {shape}")
    return shape


# --------------------------------------------------------------------------------------------------
# the build

def _tap_bounds(i_sz, k, s, dil, pb, o):
    """Per output index: the kernel offsets ``[lo, hi)`` whose input index lies inside the input."""
    base = np.arange(o, dtype=np.int64) * s - pb               # input index of tap 0
    lo = np.clip(-(base // dil), 0, k)                          # ceil(-base / dil)
    hi = np.clip((i_sz - 1 - base) // dil + 1, 0, k)
    return lo.astype(np.intp), np.maximum(hi, lo).astype(np.intp)


def _nonzeros(geom, st, w2, wrow, goff, idx_dtype):
    """Column indices and values of every nonzero in CSR order, and the row starts of one channel.

    ``w2`` is ``(C_out, X)``: row ``(co, r)`` takes its weights from ``w2[co, r * wrow + (c, *k)]``
    (``wrow = 0`` for conv, one kernel's size for unshared); ``goff[co]`` is the column offset of
    ``co``'s group. Returns ``(indices, data, counts, start)`` where ``counts``/``start`` are the
    nonzeros per row and the row starts of one output channel (the same for every channel). Uses
    the compiled kernel (fastconv/_core/_matrix.pyx) when it is built, else :func:`_nonzeros_numpy`.
    """
    try:
        from ._core import _matrix
    except ImportError:  # pragma: no cover - extension not built
        return _nonzeros_numpy(geom, st, w2, wrow, goff, idx_dtype)
    from ._config import get_num_threads
    g3 = geom.as3d()
    bounds = [_tap_bounds(*args) for args in zip(*g3)]
    counts = np.full((), st.cg, dtype=np.int64)
    for lo, hi in bounds:
        counts = np.multiply.outer(counts, (hi - lo).astype(np.int64))
    counts = counts.ravel()
    start = np.zeros(counts.size, dtype=np.int64)
    np.cumsum(counts[:-1], out=start[1:])
    cols = np.empty(st.nnz, dtype=idx_dtype)
    data = np.empty(st.nnz, dtype=w2.dtype)
    _matrix.conv_nonzeros(cols, data, w2, wrow, goff.astype(np.int64), start, st.nnz_per_channel,
                          st.cg, *g3, *(a for lo_hi in bounds for a in lo_hi), get_num_threads())
    return cols, data, counts, start


def _nonzeros_numpy(geom, st, w2, wrow, goff, idx_dtype):
    """:func:`_nonzeros` by broadcasting (the reference for the compiled kernel)."""
    cols_t, kflat_t, counts = _template_numpy(geom, st.cg, idx_dtype)
    if wrow:
        kflat_t = np.repeat(np.arange(counts.size, dtype=np.intp) * wrow, counts) + kflat_t
    data = w2[:, kflat_t].ravel()
    indices = np.add(cols_t[None, :], goff.astype(idx_dtype)[:, None], dtype=idx_dtype).ravel()
    counts = counts.astype(np.int64)
    start = np.zeros(counts.size, dtype=np.int64)
    np.cumsum(counts[:-1], out=start[1:])
    return indices, data, counts, start


def _template_numpy(geom, cg, idx_dtype):
    """Column indices and flat weight indices of the nonzeros of one output channel's rows.

    Returns ``(cols, kflat, counts)``: ``cols`` and ``kflat`` in row-major order of
    ``(*out, ci, *k)`` restricted to taps inside the input (``ci`` in ``[0, cg)``), and ``counts``
    the number of nonzeros of each of the ``prod(out)`` rows.
    """
    rank = geom.rank
    nd = 2 * rank + 1
    in_strides = [math.prod(geom.in_sp[d + 1:]) for d in range(rank)]
    k_strides = [math.prod(geom.kernel[d + 1:]) for d in range(rank)]
    plane, kprod = math.prod(geom.in_sp), math.prod(geom.kernel)

    def shaped(a, *axes):
        shape = [1] * nd
        for ax, n in zip(axes, a.shape):
            shape[ax] = n
        return a.reshape(shape)

    cols = shaped(np.arange(cg, dtype=idx_dtype) * idx_dtype.type(plane), rank)
    kflat = shaped(np.arange(cg, dtype=np.intp) * kprod, rank)
    mask = None
    row_counts = np.full((), cg, dtype=np.intp)
    for d in range(rank):
        i_sz, k, s, dil, (pb, _), o = (geom.in_sp[d], geom.kernel[d], geom.stride[d],
                                       geom.dilation[d], geom.pads[d], geom.out_sp[d])
        idx = (np.arange(o, dtype=np.int64)[:, None] * s + np.arange(k, dtype=np.int64)[None, :] * dil
               - pb)
        valid = (idx >= 0) & (idx < i_sz)
        cols = cols + shaped(idx.astype(idx_dtype) * idx_dtype.type(in_strides[d]), d, rank + 1 + d)
        kflat = kflat + shaped(np.arange(k, dtype=np.intp) * k_strides[d], rank + 1 + d)
        if not valid.all():
            v = shaped(valid, d, rank + 1 + d)
            mask = v if mask is None else mask & v
        row_counts = np.multiply.outer(row_counts, valid.sum(axis=1))
    full = tuple(geom.out_sp) + (cg,) + tuple(geom.kernel)
    if mask is None:
        cols = np.broadcast_to(cols, full).ravel()
        kflat = np.broadcast_to(kflat, full).ravel()
    else:
        mask = np.broadcast_to(mask, full)
        cols = np.broadcast_to(cols, full)[mask]
        kflat = np.broadcast_to(kflat, full)[mask]
    return cols, kflat, row_counts.ravel()


def _assemble(st, indices, data, counts, start, fmt, idx_dtype):
    """The matrix in format ``fmt`` from the nonzeros in CSR order (see :func:`_nonzeros`)."""
    import scipy.sparse as sp
    if fmt == "dense":
        rows = np.repeat(np.arange(st.rows, dtype=np.intp), np.tile(counts, st.c_out))
        out = np.zeros((st.rows, st.cols), dtype=data.dtype)
        out[rows, indices] = data
        return out
    indptr = np.empty(st.rows + 1, dtype=idx_dtype)
    np.add(start[None, :], np.arange(st.c_out, dtype=np.int64)[:, None] * st.nnz_per_channel,
           out=indptr[:-1].reshape(st.c_out, -1), casting="unsafe")
    indptr[-1] = st.nnz
    m = sp.csr_array((data, indices, indptr), shape=(st.rows, st.cols), copy=False)
    m.has_sorted_indices = True
    m.has_canonical_format = True
    if fmt == "csc":
        return m.tocsc()
    if fmt == "coo":
        return m.tocoo()
    return m


def conv_matrix(input_shape, weight, stride=1, padding=0, dilation=1, groups=1, *, format="csr",
                max_bytes=2 ** 30):
    """The matrix ``M`` of :func:`fastconv.conv` on an input of shape ``input_shape``.

    ``conv(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups).ravel()
    == M @ x.ravel()`` for every ``x`` of shape ``input_shape``, and ``M.T`` is the matching
    :func:`fastconv.conv_transpose` (the gradient with respect to the input).

    Parameters
    ----------
    input_shape : tuple of int
        Unbatched input shape ``(C_in, *spatial)`` with 1, 2 or 3 spatial dims.
    weight : array_like, shape (C_out, C_in // groups, *kernel)
        Its dtype decides the matrix dtype (float32 or float64; integers and bools become float64).
    stride, dilation : int or tuple
    padding : int, tuple, (before, after) pairs, "valid", "same" or "full"
        As :func:`fastconv.conv` with ``padding_mode="zeros"``. Padding is folded into the matrix:
        taps that read padding have no entry (nothing is stored for them).
    groups : int
    format : {"csr", "csc", "coo", "dense"}
        ``"dense"`` gives an ndarray, the others a ``scipy.sparse`` array (``csr_array``, ...).
    max_bytes : int or None
        Largest storage (values plus index arrays) allowed for the result; None for no limit.

    Returns
    -------
    ndarray or scipy.sparse array, shape ``(C_out * prod(out), C_in * prod(spatial))``
        Row ``(co, *o)`` and column ``(ci, *i)`` in C order. Sparse results use int32 indices when
        every index fits (as scipy itself would), else int64; CSR comes out canonical (sorted
        column indices, no duplicates).

    Raises
    ------
    MemoryError
        Before anything is allocated, when the result would need more than ``max_bytes`` (or more
        than the machine's memory); the message gives the bytes it would need. The build itself
        briefly needs about two to three times the result's size.
    ValueError, TypeError
        Bad shapes or arguments, with the same messages as :func:`fastconv.conv`.

    See Also
    --------
    efficiency : the sizes and operation counts of this matrix, without building it.

    Notes
    -----
    Entry ``M[(co, *o), (ci, *i)] = w[co, ci - g * C_in/groups, *k]`` where ``i = o * stride + k *
    dilation - pad_before`` lies inside the input and ``ci`` is in ``co``'s group ``g``. The number of
    nonzeros is ``C_out * C_in/groups * prod_d(#valid (o_d, k_d) pairs)``, exactly
    ``efficiency(...)["sparse matrix"]["stored_floats"]`` (without bias).

    Examples
    --------
    The lecture's edge detector (kernel ``[-1, 1]``) on a 1 x 4 image:

    >>> import numpy as np, fastconv
    >>> w = np.array([[[[-1.0, 1.0]]]])
    >>> M = conv_matrix((1, 1, 4), w, format="dense")
    >>> M
    array([[-1.,  1.,  0.,  0.],
           [ 0., -1.,  1.,  0.],
           [ 0.,  0., -1.,  1.]])
    >>> x = np.array([[[3.0, 5.0, 4.0, 4.0]]])
    >>> M @ x.ravel()
    array([ 2., -1.,  0.])
    >>> fastconv.conv(x, w).ravel()
    array([ 2., -1.,  0.])
    >>> conv_matrix((1, 1, 4), w, padding=1).nnz          # padded taps are not stored
    8
    """
    func = "conv_matrix"
    fmt = _check_format(func, format)
    max_bytes = _check_max_bytes(func, max_bytes)
    dt, (w,) = _args.as_float_arrays(func, weight=weight)
    rank = _args.weight_rank(func, w)
    shape = _input_shape(func, input_shape, rank)
    (groups,) = _args.ntuple(func, "groups", groups, 1, minimum=1)
    c_in, c_out = shape[0], w.shape[0]
    if c_out % groups:
        raise _args.fail(func, f"groups={groups} must divide the number of output channels "
                               f"(weight.shape[0]), got {c_out}")
    if c_in != w.shape[1] * groups:
        raise _args.fail(func, f"input has {c_in} channels but weight expects {w.shape[1] * groups} "
                               f"(weight.shape[1]={w.shape[1]} x groups={groups})")
    geom = _args.conv_geometry(func, shape[1:], w.shape[2:], stride, padding, dilation)
    st = _Structure(geom, c_in, c_out, groups)
    _check_budget(func, st, fmt, dt, max_bytes)
    idx_dtype = _index_dtype(st.rows, st.cols, st.nnz)
    goff = (np.arange(c_out, dtype=np.int64) // (c_out // groups)) * (st.cg * math.prod(geom.in_sp))
    nz = _nonzeros(geom, st, w.reshape(c_out, -1), 0, goff, idx_dtype)
    return _assemble(st, *nz, fmt, idx_dtype)


def unshared_conv_matrix(input_shape, weight, stride=1, padding=0, dilation=1, *, format="csr",
                         max_bytes=2 ** 30):
    """The matrix ``M`` of :func:`fastconv.unshared_conv` (a locally connected layer).

    ``unshared_conv(x, weight, ...).ravel() == M @ x.ravel()``; ``M.T`` is
    :func:`fastconv.unshared_conv_transpose`. The nonzero pattern is that of :func:`conv_matrix`
    with ``groups=1``; only the values differ from row to row, because every output location has
    its own kernel.

    Parameters
    ----------
    input_shape : tuple of int
        Unbatched ``(C_in, *spatial)``.
    weight : array_like, shape (*out_spatial, C_out, C_in, *kernel)
        ``out_spatial`` must be the output size the geometry gives.
    stride, padding, dilation, format, max_bytes
        As :func:`conv_matrix`.

    Returns
    -------
    ndarray or scipy.sparse array, shape ``(C_out * prod(out), C_in * prod(spatial))``
        Row ``(co, *o)`` holds ``weight[(*o, co, ci, *k)]`` at column ``(ci, *(o * stride + k *
        dilation - pad_before))`` for the taps inside the input.

    Raises
    ------
    MemoryError
        Before allocating, when the result would exceed ``max_bytes``.

    Examples
    --------
    Two output positions, each with its own 2-tap kernel:

    >>> import numpy as np
    >>> w = np.array([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])     # (out=2, C_out=1, C_in=1, k=2)
    >>> unshared_conv_matrix((1, 3), w, format="dense")
    array([[1., 2., 0.],
           [0., 3., 4.]])
    """
    func = "unshared_conv_matrix"
    fmt = _check_format(func, format)
    max_bytes = _check_max_bytes(func, max_bytes)
    dt, (w,) = _args.as_float_arrays(func, weight=weight)
    if w.ndim < 4 or w.ndim % 2:
        raise _args.fail(func, f"weight must have shape (*out_spatial, C_out, C_in, *kernel) with 1 to "
                               f"3 spatial dims, got shape {w.shape}")
    rank = (w.ndim - 2) // 2
    _args.check_spatial_rank(func, rank)
    if w.size == 0:
        raise _args.fail(func, f"weight is empty (shape {w.shape})")
    shape = _input_shape(func, input_shape, rank)
    c_out, c_in = w.shape[rank], w.shape[rank + 1]
    if shape[0] != c_in:
        raise _args.fail(func, f"input has {shape[0]} channels but weight expects {c_in} "
                               f"(weight.shape[{rank + 1}])")
    # the padding forms of unshared_conv, whose matrix this is ("full" is not one of them)
    geom = _args.conv_geometry(func, shape[1:], w.shape[rank + 2:], stride, padding, dilation,
                               strings=("valid", "same"))
    if tuple(w.shape[:rank]) != tuple(geom.out_sp):
        raise _args.fail(func, f"weight has output locations {tuple(w.shape[:rank])} but input_shape "
                               f"{shape} with this stride/padding/dilation gives output {geom.out_sp}")
    st = _Structure(geom, c_in, c_out, 1)
    _check_budget(func, st, fmt, dt, max_bytes)
    idx_dtype = _index_dtype(st.rows, st.cols, st.nnz)
    n_out = math.prod(geom.out_sp)
    ck = c_in * math.prod(geom.kernel)
    # (*out, C_out, C_in*K) -> (C_out, out*C_in*K): row (co, o) takes its kernel from w[o, co]
    wt = np.ascontiguousarray(w.reshape(n_out, c_out, ck).transpose(1, 0, 2)).reshape(c_out, n_out * ck)
    nz = _nonzeros(geom, st, wt, ck, np.zeros(c_out, dtype=np.int64), idx_dtype)
    return _assemble(st, *nz, fmt, idx_dtype)


# --------------------------------------------------------------------------------------------------
# the efficiency report

_COLUMNS = ("stored_floats", "multiplies", "adds", "flops", "bytes")
_HEADERS = ("stored floats", "multiplies", "adds", "flops", "bytes")


class EfficiencyReport:
    """What convolution and its matrix forms store and compute (see :func:`efficiency`).

    Attributes
    ----------
    rows : dict
        Row name (``"convolution"``, ``"dense matrix"``, ``"sparse matrix"`` and, for
        ``groups=1``, ``"unshared"``) -> dict of the columns ``stored_floats``, ``multiplies``,
        ``adds``, ``flops``, ``bytes`` (Python ints, exact).
    input_shape, output_shape : tuple
        ``(C_in, *spatial)`` and ``(C_out, *out_spatial)``.
    kernel_shape : tuple
        Spatial kernel sizes.
    matrix_shape : tuple
        ``(rows, cols)`` of the matrix form.
    nnz : int
        Nonzeros of the sparse matrix (padding folded in), ``== conv_matrix(...).nnz``.
    index_dtype : str
        Index dtype of the sparse (CSR) matrix: ``"int32"`` or ``"int64"``.
    dtype : str
        Float dtype the bytes are counted in.

    Examples
    --------
    >>> r = efficiency((280, 320), (1, 2))
    >>> r["sparse matrix"]["stored_floats"], r.nnz, r.index_dtype
    (178640, 178640, 'int32')
    >>> round(r.ratio("flops", "dense matrix"))
    59733
    >>> sorted(r.to_dict()["rows"])
    ['convolution', 'dense matrix', 'sparse matrix', 'unshared']
    """

    columns = _COLUMNS

    def __init__(self, rows, **info):
        self.rows = rows
        self.info = info
        for k, v in info.items():
            setattr(self, k, v)

    def __getitem__(self, name):
        return self.rows[name]

    def __iter__(self):
        return iter(self.rows)

    def to_dict(self):
        """Plain dict (JSON-serialisable): ``{"rows": {name: {column: int}}, **info}``."""
        out = {"rows": {name: dict(r) for name, r in self.rows.items()}}
        def plain(v):
            return [plain(e) for e in v] if isinstance(v, (tuple, list)) else v
        for k, v in self.info.items():
            out[k] = plain(v)
        return out

    def ratio(self, column, row, base="convolution"):
        """``self[row][column] / self[base][column]`` (inf when the base is 0)."""
        b = self.rows[base][column]
        return self.rows[row][column] / b if b else math.inf

    def __str__(self):
        name_w = max(len(n) for n in self.rows)
        cells = {n: [f"{r[c]:,}" for c in _COLUMNS] for n, r in self.rows.items()}
        widths = [max(len(h), *(len(cells[n][j]) for n in self.rows)) for j, h in enumerate(_HEADERS)]
        lines = [
            f"input {self.input_shape} -> output {self.output_shape}, kernel {self.kernel_shape}, "
            f"stride {self.stride}, dilation {self.dilation}, padding {self.padding}, "
            f"groups {self.groups}, bias {self.bias}, {self.dtype}",
            " " * name_w + "  " + "  ".join(h.rjust(wd) for h, wd in zip(_HEADERS, widths)),
        ]
        for n in self.rows:
            lines.append(n.ljust(name_w) + "  " + "  ".join(c.rjust(wd) for c, wd in zip(cells[n], widths)))
        lines.append(f"matrix {self.matrix_shape[0]:,} x {self.matrix_shape[1]:,}, {self.nnz:,} nonzeros "
                     f"(density {self.density:.3g}); sparse bytes are CSR with {self.index_dtype} indices; "
                     f"flops = multiplies + adds")
        return "\n".join(lines)

    def __repr__(self):
        return (f"EfficiencyReport(input_shape={self.input_shape}, kernel_shape={self.kernel_shape}, "
                f"output_shape={self.output_shape}, nnz={self.nnz})")


def _row(stored, mults, adds, nbytes):
    return {"stored_floats": stored, "multiplies": mults, "adds": adds, "flops": mults + adds,
            "bytes": nbytes}


def efficiency(input_shape, kernel_shape, stride=1, padding=0, dilation=1, groups=1, *, c_out=1,
               bias=False, dtype="float32"):
    """Storage and arithmetic of a convolution versus its dense and sparse matrix forms.

    Everything is counted exactly with integer formulas: nothing is built or allocated, so any size
    works (a 100,000 x 100,000 image takes microseconds).

    Parameters
    ----------
    input_shape : tuple of int
        The spatial sizes ``(*spatial)`` (one input channel), or ``(C_in, *spatial)``. The spatial rank
        is ``len(kernel_shape)``. Sizes are in array order: an image 320 wide and 280 high is
        ``(280, 320)``.
    kernel_shape : int or tuple of int
        Spatial kernel sizes only, array order (a kernel 2 wide and 1 high is ``(1, 2)``). An int
        means that size in every spatial dim of ``input_shape`` (which is then all spatial).
    stride, padding, dilation, groups
        As :func:`fastconv.conv` (every padding form).
    c_out : int
        Output channels.
    bias : bool
        Count a bias: ``C_out`` more stored floats per form and one more add per output.
    dtype : str or dtype
        Float dtype of the stored values (``"float32"`` or ``"float64"``), for the bytes column.

    Returns
    -------
    EfficiencyReport
        Rows ``"convolution"``, ``"dense matrix"``, ``"sparse matrix"`` and, when ``groups == 1``,
        ``"unshared"`` (the locally connected layer of the same geometry: its own kernel per output
        location; :func:`fastconv.unshared_conv` has no groups, so the row is left out otherwise).
        Columns ``stored_floats``, ``multiplies``, ``adds``, ``flops`` (= multiplies + adds) and
        ``bytes``. ``str(report)`` is an aligned table, ``report.to_dict()`` a plain dict,
        ``report["dense matrix"]["flops"]`` one number.

    Notes
    -----
    With ``rows = C_out * prod(out)`` and ``cols = C_in * prod(spatial)``, ``nnz`` the taps that
    fall inside the input (padding folded in: boundary windows have fewer) and ``R`` the rows with
    at least one such tap:

    - convolution: stores the weight, ``C_out * C_in/groups * prod(kernel)`` floats; does one
      multiply per tap inside the input (``nnz``) and one add fewer than that per output
      (``nnz - R``) -- the same arithmetic as the sparse matrix-vector product;
    - dense matrix: stores ``rows * cols`` floats; a matrix-vector product does ``rows * cols``
      multiplies and ``rows * (cols - 1)`` adds;
    - sparse matrix: stores ``nnz`` floats, ``nnz`` multiplies, ``nnz - R`` adds; its bytes are CSR:
      values, ``nnz`` column indices and ``rows + 1`` row pointers, in the index dtype scipy would
      pick (int32 while rows, cols and nnz fit, else int64);
    - unshared: ``prod(out) * C_out * C_in * prod(kernel)`` floats (every output location stores a
      whole kernel, padded taps included, as ``unshared_conv``'s weight does); arithmetic as
      convolution.

    ``bias=True`` adds ``C_out`` stored floats to every row and one add per output. Bytes are the
    stored floats times the itemsize (plus index arrays for the sparse matrix). Inputs and outputs
    are not counted: they are the same for every form.

    Examples
    --------
    The lecture's edge detection: a 320 wide by 280 high image, a 2 wide by 1 high kernel.

    >>> r = efficiency((280, 320), (1, 2))
    >>> print(r)                                        # doctest: +NORMALIZE_WHITESPACE
    input (1, 280, 320) -> output (1, 280, 319), kernel (1, 2), stride (1, 1), dilation (1, 1),
    padding ((0, 0), (0, 0)), groups 1, bias False, float32
                   stored floats     multiplies           adds           flops           bytes
    convolution                2        178,640         89,320         267,960               8
    dense matrix   8,003,072,000  8,003,072,000  8,002,982,680  16,006,054,680  32,012,288,000
    sparse matrix        178,640        178,640         89,320         267,960       1,786,404
    unshared             178,640        178,640         89,320         267,960         714,560
    matrix 89,320 x 89,600, 178,640 nonzeros (density 2.23e-05); sparse bytes are CSR with int32
    indices; flops = multiplies + adds
    >>> r["dense matrix"]["flops"] > 16e9
    True
    """
    func = "efficiency"
    shape = _args.as_shape(func, "input_shape", input_shape)
    if isinstance(kernel_shape, (tuple, list)):
        rank = len(kernel_shape)
    else:
        rank = len(shape)
    _args.check_spatial_rank(func, rank)
    if len(shape) == rank:
        shape = (1,) + shape
    elif len(shape) != rank + 1:
        raise _args.fail(func, f"input_shape must be (*spatial) or (C_in, *spatial) for a kernel with "
                               f"{rank} spatial dim(s), got {shape}")
    kernel = _args.ntuple(func, "kernel_shape", kernel_shape, rank, minimum=1)
    (groups,) = _args.ntuple(func, "groups", groups, 1, minimum=1)
    (c_out,) = _args.ntuple(func, "c_out", c_out, 1, minimum=1)
    c_in = shape[0]
    if c_in % groups or c_out % groups:
        raise _args.fail(func, f"groups={groups} must divide both C_in={c_in} and c_out={c_out}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise _args.type_fail(func, f"dtype must be a float dtype, got {dtype!r}") from None
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise _args.type_fail(func, f"dtype must be float32 or float64, got {dt}")
    bias = _args.as_bool(func, "bias", bias)
    geom = _args.conv_geometry(func, shape[1:], kernel, stride, padding, dilation)
    st = _Structure(geom, c_in, c_out, groups)
    isz = dt.itemsize
    b = c_out if bias else 0
    bias_adds = st.rows if bias else 0
    sparse_adds = st.nnz - st.nonempty_rows + bias_adds
    w_floats = c_out * st.cg * math.prod(kernel)
    rows = {
        "convolution": _row(w_floats + b, st.nnz, sparse_adds, (w_floats + b) * isz),
        "dense matrix": _row(st.rows * st.cols + b, st.rows * st.cols,
                             st.rows * (st.cols - 1) + bias_adds, (st.rows * st.cols + b) * isz),
        "sparse matrix": _row(st.nnz + b, st.nnz, sparse_adds, st.nbytes("csr", isz) + b * isz),
    }
    if groups == 1:
        u = math.prod(geom.out_sp) * c_out * c_in * math.prod(kernel)
        rows["unshared"] = _row(u + b, st.nnz, sparse_adds, (u + b) * isz)
    return EfficiencyReport(
        rows, input_shape=shape, kernel_shape=kernel, output_shape=(c_out,) + tuple(geom.out_sp),
        stride=geom.stride, dilation=geom.dilation, padding=geom.pads, groups=groups, bias=bias,
        dtype=str(dt), matrix_shape=(st.rows, st.cols), nnz=st.nnz,
        density=st.nnz / (st.rows * st.cols),
        index_dtype=str(_index_dtype(st.rows, st.cols, st.nnz)))
