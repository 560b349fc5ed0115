"""Pooling: max, average and Lp pooling, global and adaptive (fixed-output-size) pooling, backward passes.

Semantics follow ``torch.nn.functional`` (argument names, defaults, ceil_mode, count_include_pad,
divisor_override, NaN propagation, indices as flat offsets into each input plane). Deliberate
differences are listed in the docstrings (Notes).

Every rank is handled by one set of kernels (``fastconv/_core/_pool.pyx``) that see 3 spatial
dimensions; here a window is described per dimension by tables of first valid tap and tap count,
built once per geometry (cached), so regular and adaptive pooling share the same kernels.
"""
import functools
import math
import numbers

import numpy as np

from . import _args
from ._config import get_num_threads
from ._core import _pool

__all__ = [
    "max_pool", "max_pool1d", "max_pool2d", "max_pool3d",
    "avg_pool", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "lp_pool", "lp_pool1d", "lp_pool2d", "lp_pool3d",
    "global_max_pool", "global_avg_pool",
    "adaptive_max_pool", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "adaptive_avg_pool", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "max_pool_backward", "avg_pool_backward", "adaptive_avg_pool_backward", "lp_pool_backward",
]

_ONE = np.ones(1)
_ONES = {"f": np.ones(1, np.float32), "d": np.ones(1, np.float64)}
_NO_INDEX = np.zeros((1, 1), np.int64)      # pool_groups' index output when it computes none


# ----------------------------------------------------------------------------------------------
# window tables (per spatial dimension)

class _Dim:
    """Windows along one spatial dimension: ``start``/``count`` per output (taps ``step`` apart),
    the divisor factor of average pooling, and the affine interior ``[lo, hi)`` where window ``o``
    has all ``k`` taps valid, starting at ``o * stride + off``."""
    __slots__ = ("n_in", "out", "start", "count", "step", "factor", "lo", "hi", "stride", "off", "k")


_UNIT = None


def _unit_dim():
    global _UNIT
    if _UNIT is None:
        d = _Dim()
        d.n_in = d.out = 1
        d.start = np.zeros(1, np.intp)
        d.count = np.ones(1, np.intp)
        d.step = 1
        d.factor = np.ones(1)
        d.lo, d.hi, d.stride, d.off, d.k = 0, 1, 1, 0, 1
        _UNIT = d
    return _UNIT


def _readonly(*arrays):
    for a in arrays:
        a.setflags(write=False)


def _pool_output_size(n_in, k, s, p, d, ceil_mode):
    """torch's pooling_output_shape: floor division (also of a negative span), and with ceil_mode
    the last window must start inside the input or the left padding. Unlike
    ``_args.conv_output_size`` a slightly negative span still gives one window in ceil_mode (torch
    pools a 1-element input with kernel 2, stride 2, ceil_mode=True)."""
    span = n_in + 2 * p - d * (k - 1) - 1
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= n_in + p:
        out -= 1
    return out


@functools.lru_cache(maxsize=1024)
def _regular_dim(n_in, k, s, p, d, ceil_mode):
    out = _pool_output_size(n_in, k, s, p, d, ceil_mode)
    o = np.arange(out, dtype=np.intp)
    s0 = o * s - p
    # torch: the first tap is moved right by whole dilation steps until it is inside the input
    start = np.where(s0 < 0, s0 + ((-s0 + d - 1) // d) * d, s0)
    end = np.minimum(s0 + (k - 1) * d + 1, n_in)
    count = np.maximum(0, (end - start + d - 1) // d)
    # average pooling's count_include_pad divisor: the window clipped to the padded input
    factor = (np.minimum(s0 + k, n_in + p) - s0).astype(np.float64)
    interior = np.flatnonzero((s0 >= 0) & (s0 + (k - 1) * d <= n_in - 1))
    dim = _Dim()
    dim.n_in, dim.out, dim.start, dim.count, dim.step, dim.factor = n_in, out, start, count, d, factor
    if interior.size:
        dim.lo, dim.hi = int(interior[0]), int(interior[-1]) + 1
    else:
        dim.lo = dim.hi = 0
    # one window: the stride is never used, and a huge one must not size the kernels' buffers
    dim.stride, dim.off, dim.k = (s if out > 1 else 1), -p, k
    _readonly(start, count, factor)
    return dim


@functools.lru_cache(maxsize=1024)
def _adaptive_dim(n_in, out):
    o = np.arange(out, dtype=np.intp)
    start = (o * n_in) // out
    end = ((o + 1) * n_in + out - 1) // out
    count = end - start
    dim = _Dim()
    dim.n_in, dim.out, dim.start, dim.count, dim.step = n_in, out, start, count, 1
    dim.factor = count.astype(np.float64)
    if n_in % out == 0:       # equal regions: regular pooling with kernel = stride = n_in / out
        dim.lo, dim.hi, dim.stride, dim.off, dim.k = 0, out, n_in // out, 0, n_in // out
    else:
        dim.lo = dim.hi = 0
        dim.stride, dim.off, dim.k = 1, 0, 1
    _readonly(start, count, dim.factor)
    return dim


def _as3(dims):
    return (_unit_dim(),) * (3 - len(dims)) + tuple(dims)


@functools.lru_cache(maxsize=1024)
def _kernel_args(dims):
    """The geometry as one int64 array for the kernels (see _pool._fill_win)."""
    d, h, w = _as3(dims)
    # flat rows (see _pool.pool_forward): every tap of every width window lies below stride * out
    # (the furthest tap is not always the last window's: padding and dilation can cut that one
    # short), and stride * out is not much more than the row (a huge stride makes it huge)
    taps = (w.start + (w.count - 1) * w.step)[w.count > 0]
    last = int(taps.max()) if taps.size else -1
    pitch = w.stride * w.out
    if not (w.hi > w.lo and last < pitch <= 2 * w.n_in + 64):
        pitch = 0
    head = np.array([d.n_in, h.n_in, w.n_in, d.out, h.out, w.out, d.step, h.step, w.step,
                     w.lo, w.hi, w.stride, w.off, w.k, pitch, h.k, h.stride, h.off, h.lo, h.hi],
                    dtype=np.intp)
    geo = np.concatenate([head, d.start, d.count, h.start, h.count, w.start, w.count]).astype(np.intp)
    _readonly(geo)
    return geo


@functools.lru_cache(maxsize=1024)
def _inv_factors(dims, mode, divisor_override, dtype):
    """Per-dimension reciprocal divisors: 'pad' (count_include_pad), 'valid' (counts) or override."""
    d, h, w = _as3(dims)
    if divisor_override is not None:
        inv = (np.full(d.out, 1.0 / divisor_override), np.ones(h.out), np.ones(w.out, dtype))
    elif mode == "pad":
        inv = (1.0 / d.factor, 1.0 / h.factor, (1.0 / w.factor).astype(dtype))
    else:
        with np.errstate(divide="ignore"):
            inv = tuple(1.0 / np.maximum(x.count, 0).astype(np.float64) for x in (d, h, w))
        inv = (inv[0], inv[1], inv[2].astype(dtype))
    # a single reciprocal divisor for every output (full windows): the kernels scale in one pass
    uniform = 0.0
    if all(np.all(v == v[0]) for v in inv):
        uniform = float(inv[0][0] * inv[1][0] * inv[2][0])
    inv = (np.concatenate(inv[:2]), inv[2], uniform)
    _readonly(*inv[:2])
    return inv


# ----------------------------------------------------------------------------------------------
# argument handling

def _is_seq(v):
    return isinstance(v, (tuple, list))


def _rank(func, x, key, expected, argname="kernel_size"):
    """Spatial rank: the function's own (1d/2d/3d), the length of a tuple argument, or ndim - 2."""
    if expected is not None:
        rank = expected
    elif _is_seq(key):
        rank = len(key)
        if not 1 <= rank <= 3:
            raise _args.fail(func, f"{argname} must have 1, 2 or 3 entries (one per spatial dimension), "
                                   f"got {key!r}")
    else:
        rank = x.ndim - 2
        if not 1 <= rank <= 3:
            raise _args.fail(func, f"input must be (N, C, *spatial) with 1 to 3 spatial dimensions when "
                                   f"{argname} is an int (give a tuple for unbatched input), got shape "
                                   f"{tuple(x.shape)}")
    return rank


_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = _NATIVE


def _as_input(func, input):
    """The input as a C-contiguous native float array (itself when it already is one)."""
    if type(input) is np.ndarray and input.dtype in _NATIVE and input.flags.c_contiguous:
        return input
    return _args.as_float_arrays(func, input=input)[1][0]


def _threads(work):
    """Threads for ``work`` elements: a parallel region costs more than a small pooling."""
    if work < 65536:
        return 1
    return max(1, min(get_num_threads(), work // 32768))


def _prepare(func, input, key, expected, argname="kernel_size"):
    """-> (x as (P, plane) contiguous float array, lead shape (N, C) or (C,), spatial sizes, rank)."""
    x = _as_input(func, input)
    rank = _rank(func, x, key, expected, argname)
    x4, batched = _args.split_batch(func, x, rank)
    lead = x.shape[:x.ndim - rank]
    sp = x.shape[x.ndim - rank:]
    P = x4.shape[0] * x4.shape[1]
    return x.reshape(P, -1), lead, tuple(int(s) for s in sp), rank


_GEOM_CACHE = {}


def _window_dims(func, sp, kernel_size, stride, padding, dilation, ceil_mode, *, check_pad=True):
    """Validated window tables for every spatial dim (cached per geometry: only arguments that
    passed validation once are ever found in the cache)."""
    key = _args.plain_key((kernel_size, stride, padding, dilation, ceil_mode, check_pad))
    if key is not None:
        key = (sp,) + key
        hit = _GEOM_CACHE.get(key)
        if hit is None:
            hit = _window_dims_checked(func, sp, kernel_size, stride, padding, dilation, ceil_mode,
                                       check_pad)
            _args.remember(_GEOM_CACHE, key, hit, limit=4097)
        return hit
    return _window_dims_checked(func, sp, kernel_size, stride, padding, dilation, ceil_mode, check_pad)


def _window_dims_checked(func, sp, kernel_size, stride, padding, dilation, ceil_mode, check_pad):
    rank = len(sp)
    kernel = _args.ntuple(func, "kernel_size", kernel_size, rank, minimum=1)
    stride = kernel if stride is None or (_is_seq(stride) and len(stride) == 0) else \
        _args.ntuple(func, "stride", stride, rank, minimum=1)
    padding = _args.ntuple(func, "padding", padding, rank, minimum=0)
    dilation = _args.ntuple(func, "dilation", dilation, rank, minimum=1)
    if check_pad and any(p > k // 2 for p, k in zip(padding, kernel)):
        raise _args.fail(func, f"padding {padding} must be at most half of kernel_size {kernel} "
                               f"(padding <= kernel_size // 2 in every dimension)")
    ceil_mode = _args.as_bool(func, "ceil_mode", ceil_mode)
    dims = []
    for i, k, s, p, d in zip(sp, kernel, stride, padding, dilation):
        out = _pool_output_size(i, k, s, p, d, ceil_mode)
        if out < 1:
            raise _args.fail(func, f"kernel_size {kernel} (dilation {dilation}) is larger than the "
                                   f"padded input {tuple(ii + 2 * pp for ii, pp in zip(sp, padding))}: "
                                   f"output size would be {out}")
        dims.append(_regular_dim(i, k, s, p, d, ceil_mode))
    return tuple(dims), kernel


#: planes of at most this many elements are pooled by groups of planes (_pool.pool_groups): a
#: group's tile of 8 float planes then takes 16 KiB, in L1 with its outputs
GROUP_PLANE_MAX = 512
#: ... when the windows' taps (summed over the outputs) are at most this many, and the outputs per
#: plane at most this many (a thread's output tile of 8 float planes: 128 KiB; adaptive pooling
#: to a larger size goes to the row kernels)
GROUP_TAPS_MAX = 1 << 16
GROUP_OUT_MAX = 4096
#: the backward pass of averages by groups of planes up to this size (a 128 KiB float tile, in L2):
#: the adjoint's scatter-add is one vector operation per tap there too
GROUP_BACKWARD_PLANE_MAX = 4096


@functools.lru_cache(maxsize=256)
def _tap_lists(dims):
    """Each output's taps (in scan order od, oh, ow) as flat offsets in the input plane, in the
    windows' own scan order: ``(taps, starts)``, int32, output o reading ``taps[starts[o]:starts[o+1]]``;
    None when there are more than GROUP_TAPS_MAX taps or GROUP_OUT_MAX outputs."""
    d, h, w = _as3(dims)
    kmax = [max(int(v.count.max()), 1) for v in (d, h, w)]
    nout = d.out * h.out * w.out
    if nout > GROUP_OUT_MAX or nout * math.prod(kmax) > 4 * GROUP_TAPS_MAX:
        return None
    pos, inside = [], []
    for v, k in zip((d, h, w), kmax):
        j = np.arange(k)
        pos.append(v.start[:, None] + j * v.step)
        inside.append(j < v.count[:, None])
    # axes (od, oh, ow, a, b, c)
    off = ((pos[0][:, None, None, :, None, None] * h.n_in + pos[1][None, :, None, None, :, None])
           * w.n_in + pos[2][None, None, :, None, None, :]).reshape(nout, -1)
    keep = (inside[0][:, None, None, :, None, None] & inside[1][None, :, None, None, :, None]
            & inside[2][None, None, :, None, None, :]).reshape(nout, -1)
    starts = np.zeros(nout + 1, np.int32)
    np.cumsum(keep.sum(1), out=starts[1:])
    if starts[-1] > GROUP_TAPS_MAX:
        return None
    taps = off[keep].astype(np.int32)
    _readonly(taps, starts)
    return taps, starts


def _whole_plane(dims):
    """One window covering each plane exactly (no padding taps inside, every element once)."""
    return all(d.out == 1 and d.start[0] == 0 and d.count[0] == d.n_in and (d.step == 1 or d.n_in == 1)
               for d in dims)


def _block_divisor(dims, mode, divisor_override):
    """The divisor of the first window (all of them, for non-overlapping blocks or one window)."""
    if divisor_override is not None:
        return divisor_override
    return math.prod(float(d.factor[0] if mode == "pad" else d.count[0]) for d in dims)


def _group_scale(dims, inv, dt):
    """The averages' reciprocal divisor per output, rounded as pool_forward rounds it."""
    if inv[2] != 0:
        return np.full(math.prod(d.out for d in dims), inv[2], dt)
    d, h, w = _as3(dims)
    sc = (inv[0][:d.out, None] * inv[0][None, d.out:]).astype(dt)
    return np.ascontiguousarray((sc[:, :, None] * inv[1][None, None, :]).reshape(-1), dtype=dt)


def _forward_plan(func, x, lead, dims, is_max, *, mode="pad", divisor_override=None,
                  with_indices=False):
    """``run(a)``: the pooling of an input of x's shape and dtype (any array of that shape that
    is C-contiguous and native float), everything that depends only on the arguments done once."""
    P, dt = x.shape[0], x.dtype
    nout = math.prod(d.out for d in dims)
    shape = tuple(lead) + tuple(d.out for d in dims)
    if nout > x.shape[1]:      # adaptive pooling may enlarge; pooling windows never do by much
        _args.check_alloc(func, shape, dt)
    work = x.size + P * nout
    if not with_indices and _whole_plane(dims) and (
            is_max or _block_divisor(dims, mode, divisor_override) == x.shape[1]):
        # one window, the whole plane (a ResNet head's avg_pool2d(7) or adaptive pooling to 1):
        # global pooling, if an average's divisor is the plane's size
        def run(a):
            out = np.empty(P, dt)
            _pool.global_pool(a.reshape(P, -1), out, is_max, _threads(work))
            return out.reshape(shape)
        return run
    blocks = (not with_indices and len(dims) == 2
              and all(d.lo == 0 and d.hi == d.out and d.stride == d.k and d.off == 0 and d.step == 1
                      and d.out * d.k <= d.n_in for d in dims))
    if blocks:
        # non-overlapping blocks, all inside (stride = kernel, no padding; adaptive pooling with
        # divisible sizes): one dedicated pass, the divisor is the block size
        h, w = dims
        scale = 1.0 / (divisor_override if divisor_override is not None else h.k * w.k)
        if not is_max and h.k == 2 and w.k == 2 and w.out >= 8:
            # 2x2 / stride 2: a unit-stride pass with an explicit pair reduction
            def run(a):
                out = np.empty((P, nout), dt)
                _pool.avg_pool_2x2(a.reshape(P, -1), out, h.n_in, w.n_in, h.out, w.out, scale,
                                   _threads(work))
                return out.reshape(shape)
            return run
        width = 32 // dt.itemsize
        if (h.k == 2 and w.k == 2 and h.out * 2 == h.n_in and w.out * 2 == w.n_in
                and w.out <= width and 2 * width <= 3 * w.n_in and x.size > 0):
            # 2x2 blocks tiling short rows exactly (VGG's 14x14 planes): one vector
            # per output row over the planes taken as one tall plane
            def run(a):
                out = np.empty(P * nout, dt)
                _pool.pool_tall_plane(a.reshape(-1), out, w.out, 2, 2, False, is_max, scale,
                                      _threads(work))
                return out.reshape(shape)
            return run
        if _exact_blocks(dims) is not None:
            # the blocks tile the planes exactly: the planes are one tall plane of P * H rows
            # (no per-plane work, whatever the plane size: VGG's 2x2 pooling of 14x14 planes)
            def run(a):
                out = np.empty((1, P * nout), dt)
                _pool.pool_blocks(a.reshape(1, -1), out, P * h.n_in, w.n_in, P * h.out, w.out,
                                  h.k, w.k, is_max, scale, _threads(work))
                return out.reshape(shape)
            return run
    lists = _tap_lists(dims) if x.shape[1] <= GROUP_PLANE_MAX else None
    if lists is not None:
        # small planes: groups of planes side by side in a tile, every tap one vector operation
        taps, starts = lists
        kind = 2 if with_indices else 1 if is_max else 0
        scale = np.ones(nout, dt) if is_max else \
            _group_scale(dims, _inv_factors(dims, mode, divisor_override, dt), dt)
    if with_indices:
        geo = _kernel_args(dims)
        # windows with no tap inside the input (all in the padding; only with dilation): index -1
        empty = np.zeros((), bool)
        for d in _as3(dims):
            empty = np.logical_or.outer(empty, d.count == 0)
        empty = np.flatnonzero(empty) if empty.any() else None

        def run(a):
            out = np.empty((P, nout), dt)
            ind = np.empty((P, nout), np.int64)
            if lists is not None:
                _pool.pool_groups(a.reshape(P, -1), out, ind, taps, starts, scale, kind,
                                  _threads(work))
            else:
                _pool.max_pool_forward_indices(a.reshape(P, -1), out, ind, geo, _threads(work))
            if empty is not None:
                ind[:, empty] = -1
            return out.reshape(shape), ind.reshape(shape)
        return run
    if lists is not None:
        def run(a):
            out = np.empty((P, nout), dt)
            _pool.pool_groups(a.reshape(P, -1), out, _NO_INDEX, taps, starts, scale, kind,
                              _threads(work))
            return out.reshape(shape)
        return run
    if blocks:
        def run(a):
            out = np.empty((P, nout), dt)
            _pool.pool_blocks(a.reshape(P, -1), out, h.n_in, w.n_in, h.out, w.out, h.k, w.k, is_max,
                              scale, _threads(work))
            return out.reshape(shape)
        return run
    geo = _kernel_args(dims)
    inv = (_ONE, _ONES[dt.char], 0.0) if is_max else _inv_factors(dims, mode, divisor_override, dt)

    def run(a):
        out = np.empty((P, nout), dt)
        _pool.pool_forward(a.reshape(P, -1), out, geo, is_max, inv[0], inv[1], inv[2],
                           _threads(work))
        return out.reshape(shape)
    return run


def _forward(func, x, lead, dims, is_max, **kw):
    return _forward_plan(func, x, lead, dims, is_max, **kw)(x)


#: plans of validated calls: key (function, rank, input shape and dtype, plain arguments) -> run
_PLANS = {}


def _plan_key(func, rank_expected, input, args):
    """The plan-cache key of a call on an array the kernels take as it is, with only plain
    arguments (_args.plain_key: None, bools, ints, strings, tuples of them, with their types:
    True is not 1); else None, and the call is checked in full. Only calls that passed every
    check are ever stored."""
    if type(input) is not np.ndarray or not input.flags.c_contiguous:
        return None
    dt = input.dtype
    if not (dt is _F32 or dt is _F64 or dt in _NATIVE):     # identity first: the common case
        return None
    plain = _args.plain_key(args)
    if plain is None:
        return None
    return (func, rank_expected, input.shape, dt.char) + plain


def _lookup(func, rank_expected, input, args):
    """(key, the stored plan or None) of a call; key None: not cacheable, check in full."""
    key = _plan_key(func, rank_expected, input, args)
    return key, (_PLANS.get(key) if key is not None else None)


def _planned(key, run, x):
    """Remember ``run`` under ``key`` (when there is one) and run it on ``x``."""
    _args.remember(_PLANS, key, run)
    return run(x)


# ----------------------------------------------------------------------------------------------
# max pooling

def max_pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
             return_indices=False, *, _func="max_pool", _rank_expected=None):
    """Max pooling over 1, 2 or 3 spatial dimensions.

    Parameters
    ----------
    input : array_like
        ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``.
    kernel_size : int or tuple of int
        Window size. A tuple sets the spatial rank; an int in this generic form means
        ``input.ndim - 2`` spatial dimensions.
    stride : int or tuple of int, optional
        Defaults to ``kernel_size``.
    padding : int or tuple of int, optional
        Implicit ``-inf`` padding on both sides, at most ``kernel_size // 2``.
    dilation : int or tuple of int, optional
        Spacing between window taps.
    ceil_mode : bool, optional
        Round the output size up (the last window must start inside the input or the left padding).
    return_indices : bool, optional
        Also return the argmax of each window as a flat offset into its input plane (``int64``);
        -1 for a window with no tap inside the input (every tap in the padding, possible only
        with dilation; its output is -inf).

    Returns
    -------
    out : ndarray
        ``(N, C, *out_spatial)``, ``out = floor((in + 2p - d(k-1) - 1) / s) + 1`` per dimension.
    indices : ndarray of int64
        Only with ``return_indices=True``.

    Raises
    ------
    ValueError
        Wrong rank, padding larger than half the kernel, kernel larger than the padded input,
        non-positive kernel_size / stride / dilation.
    TypeError
        Unsupported dtype or non-integer sizes.

    Notes
    -----
    ``out[n, c, i] = max_j input[n, c, s*i - p + d*j]`` over the valid taps. As in torch, a NaN in
    the window is the result (and its index the last NaN's); among equal maxima the first in
    row-major order gives the index.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> fastconv.max_pool(x, 2)
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    >>> out, idx = fastconv.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    >>> idx[0, 0]
    array([[ 5,  7],
           [13, 15]])
    """
    func = _func
    key, run = _lookup(func, _rank_expected, input,
                       (kernel_size, stride, padding, dilation, ceil_mode, return_indices))
    if run is not None:
        return run(input)
    x, lead, sp, rank = _prepare(func, input, kernel_size, _rank_expected)
    dims, _ = _window_dims(func, sp, kernel_size, stride, padding, dilation, ceil_mode)
    return _planned(key, _forward_plan(func, x, lead, dims, True, with_indices=_args.as_bool(
        func, "return_indices", return_indices)), x)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """1-D :func:`max_pool`: input ``(N, C, L)`` or ``(C, L)``.

    >>> import fastconv
    >>> fastconv.max_pool1d([[1.0, 3.0, 2.0, 5.0, 4.0]], 2)
    array([[3., 5.]])
    """
    return max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                    _func="max_pool1d", _rank_expected=1)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D :func:`max_pool`: input ``(N, C, H, W)`` or ``(C, H, W)``.

    >>> import numpy as np, fastconv
    >>> fastconv.max_pool2d(np.arange(16.0).reshape(1, 4, 4), 2)
    array([[[ 5.,  7.],
            [13., 15.]]])
    """
    return max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                    _func="max_pool2d", _rank_expected=2)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """3-D :func:`max_pool`: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    >>> import numpy as np, fastconv
    >>> fastconv.max_pool3d(np.arange(8.0).reshape(1, 2, 2, 2), 2)
    array([[[[7.]]]])
    """
    return max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                    _func="max_pool3d", _rank_expected=3)


# ----------------------------------------------------------------------------------------------
# average pooling

def _check_divisor(func, divisor_override):
    if divisor_override is None:
        return None
    if not _args._is_int(divisor_override):
        raise _args.type_fail(func, f"divisor_override must be an int or None, got {divisor_override!r}")
    if divisor_override == 0:
        raise _args.fail(func, "divisor_override must not be zero")
    return int(divisor_override)


def avg_pool(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
             divisor_override=None, *, _func="avg_pool", _rank_expected=None):
    """Average pooling over 1, 2 or 3 spatial dimensions.

    Parameters
    ----------
    input : array_like
        ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``.
    kernel_size : int or tuple of int
        Window size (a tuple sets the spatial rank; an int means ``input.ndim - 2`` dims).
    stride : int or tuple of int, optional
        Defaults to ``kernel_size``.
    padding : int or tuple of int, optional
        Implicit zero padding on both sides, at most ``kernel_size // 2``.
    ceil_mode : bool, optional
        Round the output size up (torch's rule).
    count_include_pad : bool, optional
        Count the padded zeros in the divisor (default True, as torch).
    divisor_override : int, optional
        Divide every window sum by this instead.

    Returns
    -------
    ndarray
        ``(N, C, *out_spatial)``.

    Raises
    ------
    ValueError
        Wrong rank, padding larger than half the kernel, kernel larger than the padded input,
        non-positive sizes, ``divisor_override == 0``.
    TypeError
        Unsupported dtype or non-integer sizes.

    Notes
    -----
    ``out = sum(window) / divisor`` with divisor ``divisor_override``, else the window clipped to the
    padded input (``count_include_pad``) or to the input. Windows that ceil_mode adds past the padded
    input are clipped in both cases, as torch does.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool(np.arange(16.0).reshape(1, 1, 4, 4), 2)
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])
    >>> fastconv.avg_pool1d([[1.0, 2.0, 3.0]], 2, stride=1, padding=1, count_include_pad=False)
    array([[1. , 1.5, 2.5, 3. ]])
    """
    func = _func
    key, run = _lookup(func, _rank_expected, input,
                       (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override))
    if run is not None:
        return run(input)
    divisor_override = _check_divisor(func, divisor_override)
    x, lead, sp, rank = _prepare(func, input, kernel_size, _rank_expected)
    dims, _ = _window_dims(func, sp, kernel_size, stride, padding, 1, ceil_mode)
    mode = "pad" if _args.as_bool(func, "count_include_pad", count_include_pad) else "valid"
    return _planned(key, _forward_plan(func, x, lead, dims, False, mode=mode,
                                       divisor_override=divisor_override), x)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """1-D :func:`avg_pool` (torch's avg_pool1d has no divisor_override).

    >>> import fastconv
    >>> fastconv.avg_pool1d([[1.0, 3.0, 2.0, 6.0]], 2)
    array([[2., 4.]])
    """
    return avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, None,
                    _func="avg_pool1d", _rank_expected=1)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D :func:`avg_pool`.

    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool2d(np.ones((1, 2, 2)), 2, divisor_override=1)
    array([[[4.]]])
    """
    return avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override, _func="avg_pool2d", _rank_expected=2)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """3-D :func:`avg_pool`.

    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool3d(np.arange(8.0).reshape(1, 2, 2, 2), 2)
    array([[[[3.5]]]])
    """
    return avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override, _func="avg_pool3d", _rank_expected=3)


# ----------------------------------------------------------------------------------------------
# Lp pooling

def _check_norm(func, norm_type):
    if isinstance(norm_type, (bool, np.bool_)) or not isinstance(norm_type, numbers.Real):
        raise _args.type_fail(func, f"norm_type must be a real number, got {norm_type!r}")
    p = float(norm_type)
    if not (math.isfinite(p) and p > 0):
        raise _args.fail(func, f"norm_type must be finite and > 0, got {norm_type!r}")
    return p


def _lp_setup(func, input, norm_type, kernel_size, stride, ceil_mode, rank_expected):
    p = _check_norm(func, norm_type)
    x, lead, sp, rank = _prepare(func, input, kernel_size, rank_expected)
    dims, kernel = _window_dims(func, sp, kernel_size, stride, 0, 1, ceil_mode)
    return p, x, lead, dims, math.prod(kernel)


def lp_pool(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, _func="lp_pool",
            _rank_expected=None):
    """Power-average (Lp) pooling: ``(sum over the window of x**p) ** (1/p)``.

    Parameters
    ----------
    input : array_like
        ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``.
    norm_type : float
        The power ``p`` (finite, > 0).
    kernel_size : int or tuple of int
        Window size (a tuple sets the spatial rank; an int means ``input.ndim - 2`` dims).
    stride : int or tuple of int, optional
        Defaults to ``kernel_size``.
    ceil_mode : bool, optional
        Round the output size up.

    Returns
    -------
    ndarray
        ``(N, C, *out_spatial)``.

    Raises
    ------
    ValueError
        Wrong rank, kernel larger than the input, ``norm_type`` not finite and positive.
    TypeError
        Unsupported dtype or non-integer sizes.

    Notes
    -----
    Computed as torch does: ``(avg_pool(x**p) * prod(kernel_size)) ** (1/p)``, so a window cut short
    by ceil_mode is scaled up to the full kernel size, negative ``x`` with a non-integer ``p`` gives
    NaN, and a negative window sum (odd ``p``) gives NaN. Unlike torch, ``norm_type <= 0`` or
    infinite is rejected (torch returns meaningless values there).

    Examples
    --------
    >>> import fastconv
    >>> fastconv.lp_pool1d([[3.0, 4.0, 1.0, 0.0]], 2, 2)
    array([[5., 1.]])
    """
    func = _func
    p, x, lead, dims, knum = _lp_setup(func, input, norm_type, kernel_size, stride, ceil_mode,
                                       _rank_expected)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        xp = np.power(x, x.dtype.type(p))
        out = _forward(func, xp, lead, dims, False, mode="pad")
        out *= knum
        np.power(out, out.dtype.type(1.0 / p), out=out)
    return out


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """1-D :func:`lp_pool`.

    >>> import fastconv
    >>> fastconv.lp_pool1d([[1.0, 1.0]], 1, 2)
    array([[2.]])
    """
    return lp_pool(input, norm_type, kernel_size, stride, ceil_mode, _func="lp_pool1d",
                   _rank_expected=1)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """2-D :func:`lp_pool`.

    >>> import numpy as np, fastconv
    >>> fastconv.lp_pool2d(np.full((1, 2, 2), 2.0), 2, 2)
    array([[[4.]]])
    """
    return lp_pool(input, norm_type, kernel_size, stride, ceil_mode, _func="lp_pool2d",
                   _rank_expected=2)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """3-D :func:`lp_pool`.

    >>> import numpy as np, fastconv
    >>> fastconv.lp_pool3d(np.ones((1, 2, 2, 2)), 1, 2)
    array([[[[8.]]]])
    """
    return lp_pool(input, norm_type, kernel_size, stride, ceil_mode, _func="lp_pool3d",
                   _rank_expected=3)


# ----------------------------------------------------------------------------------------------
# global pooling

def _global(func, input, is_max):
    x = _as_input(func, input)
    if x.ndim < 2:
        raise _args.fail(func, f"input must be (N, C, *spatial) or unbatched (C, L), got shape "
                               f"{tuple(x.shape)}")
    lead = x.shape[:2] if x.ndim >= 3 else x.shape[:1]
    if x.size == 0:
        raise _args.fail(func, f"input is empty (shape {tuple(x.shape)}); every dimension must be >= 1")
    P = math.prod(lead)
    out = np.empty(P, x.dtype)
    _pool.global_pool(x.reshape(P, -1), out, is_max, _threads(x.size))
    return out.reshape(lead)


def global_max_pool(input):
    """Maximum over all spatial positions: ``(N, C, *spatial) -> (N, C)``.

    Parameters
    ----------
    input : array_like
        ``(N, C, *spatial)`` with any number (>= 1) of spatial dims; a 2-D input is taken as an
        unbatched ``(C, L)`` and gives ``(C,)``.

    Returns
    -------
    ndarray
        ``(N, C)``; NaN where a plane holds a NaN.

    Raises
    ------
    ValueError
        Fewer than 2 dimensions, or an empty input.
    TypeError
        Unsupported dtype.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.global_max_pool(np.arange(8.0).reshape(1, 2, 2, 2))
    array([[3., 7.]])
    """
    return _global("global_max_pool", input, True)


def global_avg_pool(input):
    """Mean over all spatial positions: ``(N, C, *spatial) -> (N, C)``.

    Parameters
    ----------
    input : array_like
        ``(N, C, *spatial)`` with any number (>= 1) of spatial dims; a 2-D input is taken as an
        unbatched ``(C, L)`` and gives ``(C,)``.

    Returns
    -------
    ndarray
        ``(N, C)``.

    Raises
    ------
    ValueError
        Fewer than 2 dimensions, or an empty input.
    TypeError
        Unsupported dtype.

    Notes
    -----
    Planes of up to 512 elements are summed in one vector per plane (8 float32 / 4 float64 lanes,
    folded by a fixed tree) and divided in the input's dtype; larger planes in 64 lanes per block of
    4096 elements, the blocks added in float64. Either way a plane's mean does not depend on the
    batch it is in or on the thread count.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.global_avg_pool(np.arange(8.0).reshape(1, 2, 2, 2))
    array([[1.5, 5.5]])
    """
    return _global("global_avg_pool", input, False)


# ----------------------------------------------------------------------------------------------
# adaptive pooling

def _adaptive_dims(func, sp, output_size, lead, dtype):
    rank = len(sp)
    osz = _args.ntuple(func, "output_size", output_size, rank, allow_none=True)
    osz = tuple(i if o is None else o for i, o in zip(sp, osz))
    if any(o < 1 for o in osz):
        raise _args.fail(func, f"output_size entries must be >= 1 (or None), got {output_size!r}")
    _args.check_alloc(func, tuple(lead) + osz, dtype)
    return tuple(_adaptive_dim(i, o) for i, o in zip(sp, osz))


def adaptive_max_pool(input, output_size, return_indices=False, *, _func="adaptive_max_pool",
                      _rank_expected=None):
    """Max pooling over a fixed number of regions: any input size gives ``output_size``.

    Parameters
    ----------
    input : array_like
        ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``.
    output_size : int or tuple of (int or None)
        Output spatial sizes; None keeps that input size. A tuple sets the spatial rank; an int in
        this generic form means ``input.ndim - 2`` dims.
    return_indices : bool, optional
        Also return flat argmax offsets into each input plane (``int64``), for
        :func:`max_pool_backward`.

    Returns
    -------
    out : ndarray
        ``(N, C, *output_size)``.
    indices : ndarray of int64
        Only with ``return_indices=True``.

    Raises
    ------
    ValueError
        Wrong rank, ``output_size`` entry < 1 (torch returns an empty array there).
    TypeError
        Unsupported dtype or non-integer sizes.

    Notes
    -----
    Region ``i`` spans ``[floor(i * in / out), ceil((i + 1) * in / out))`` in every dimension.
    ``output_size`` may exceed the input size (regions then repeat input elements), as in torch.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.adaptive_max_pool(np.arange(10.0).reshape(1, 1, 10), 3)
    array([[[3., 6., 9.]]])
    """
    func = _func
    key, run = _lookup(func, _rank_expected, input, (output_size, return_indices))
    if run is not None:
        return run(input)
    x, lead, sp, rank = _prepare(func, input, output_size, _rank_expected, "output_size")
    dims = _adaptive_dims(func, sp, output_size, lead, x.dtype)
    return _planned(key, _forward_plan(func, x, lead, dims, True, with_indices=_args.as_bool(
        func, "return_indices", return_indices)), x)


def adaptive_avg_pool(input, output_size, *, _func="adaptive_avg_pool", _rank_expected=None):
    """Average pooling over a fixed number of regions: any input size gives ``output_size``.

    Parameters
    ----------
    input : array_like
        ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``.
    output_size : int or tuple of (int or None)
        Output spatial sizes; None keeps that input size. A tuple sets the spatial rank; an int in
        this generic form means ``input.ndim - 2`` dims.

    Returns
    -------
    ndarray
        ``(N, C, *output_size)``.

    Raises
    ------
    ValueError
        Wrong rank, ``output_size`` entry < 1.
    TypeError
        Unsupported dtype or non-integer sizes.

    Notes
    -----
    Region ``i`` spans ``[floor(i * in / out), ceil((i + 1) * in / out))``; the mean of each region.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.adaptive_avg_pool(np.arange(6.0).reshape(1, 1, 6), 2)
    array([[[1., 4.]]])
    """
    func = _func
    key, run = _lookup(func, _rank_expected, input, (output_size,))
    if run is not None:
        return run(input)
    x, lead, sp, rank = _prepare(func, input, output_size, _rank_expected, "output_size")
    dims = _adaptive_dims(func, sp, output_size, lead, x.dtype)
    return _planned(key, _forward_plan(func, x, lead, dims, False, mode="valid"), x)


def _make_adaptive(fn, rank, name, returns_indices):
    if returns_indices:
        def f(input, output_size, return_indices=False):
            return fn(input, output_size, return_indices, _func=name, _rank_expected=rank)
    else:
        def f(input, output_size):
            return fn(input, output_size, _func=name, _rank_expected=rank)
    f.__name__ = f.__qualname__ = name
    shape = {1: "(N, C, L) or (C, L)", 2: "(N, C, H, W) or (C, H, W)",
             3: "(N, C, D, H, W) or (C, D, H, W)"}[rank]
    example = "np.arange(%d.0).reshape(1, %s)" % (4 ** rank, ", ".join(["4"] * rank))
    expect = {("adaptive_max_pool", 1): "array([[1., 3.]])",
              ("adaptive_max_pool", 2): "array([[[ 5.,  7.],\n            [13., 15.]]])",
              ("adaptive_max_pool", 3): None,
              ("adaptive_avg_pool", 1): "array([[0.5, 2.5]])",
              ("adaptive_avg_pool", 2): "array([[[ 2.5,  4.5],\n            [10.5, 12.5]]])",
              ("adaptive_avg_pool", 3): None}[(fn.__name__, rank)]
    doc = f"""{rank}-D :func:`{fn.__name__}`: input {shape}.

    >>> import numpy as np, fastconv
    >>> fastconv.{name}({example}, 2){'.shape' if expect is None else ''}
    {expect if expect is not None else '(1, 2, 2, 2)'}
    """
    f.__doc__ = doc
    return f


adaptive_max_pool1d = _make_adaptive(adaptive_max_pool, 1, "adaptive_max_pool1d", True)
adaptive_max_pool2d = _make_adaptive(adaptive_max_pool, 2, "adaptive_max_pool2d", True)
adaptive_max_pool3d = _make_adaptive(adaptive_max_pool, 3, "adaptive_max_pool3d", True)
adaptive_avg_pool1d = _make_adaptive(adaptive_avg_pool, 1, "adaptive_avg_pool1d", False)
adaptive_avg_pool2d = _make_adaptive(adaptive_avg_pool, 2, "adaptive_avg_pool2d", False)
adaptive_avg_pool3d = _make_adaptive(adaptive_avg_pool, 3, "adaptive_avg_pool3d", False)


# ----------------------------------------------------------------------------------------------
# backward

def _grad_setup(func, grad_output, input_shape, rank_hint=None):
    """Check grad_output against input_shape; -> (g, input_shape, spatial sizes, rank, planes).

    Without ``rank_hint`` the rank is ``len(input_shape) - 2`` (batched) when grad_output has the
    same (N, C), else ``len(input_shape) - 1`` (unbatched).
    """
    shape = _args.as_shape(func, "input_shape", input_shape)
    dt, (g,) = _args.as_float_arrays(func, grad_output=grad_output)
    if rank_hint is not None:
        candidates = [rank_hint]
    else:
        candidates = [r for r in (len(shape) - 2, len(shape) - 1) if 1 <= r <= 3]
    if not candidates or not all(1 <= r <= 3 for r in candidates) or \
            any(len(shape) not in (r + 1, r + 2) for r in candidates):
        raise _args.fail(func, f"input_shape {shape} must be (N, C, *spatial) or (C, *spatial) with 1 "
                               f"to 3 spatial dimensions")
    for rank in candidates:
        nl = len(shape) - rank
        if g.ndim == len(shape) and g.shape[:nl] == shape[:nl]:
            break
    else:
        raise _args.fail(func, f"grad_output of shape {tuple(g.shape)} does not match input_shape "
                               f"{shape} (same rank and leading (N, C) dimensions expected)")
    P = math.prod(shape[:nl])
    return g, shape, shape[nl:], rank, P


def max_pool_backward(grad_output, indices, input_shape, *, spatial_rank=None):
    """Gradient of max pooling (and adaptive max pooling) with respect to its input.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the pooled output, ``(N, C, *out_spatial)`` or unbatched.
    indices : array_like of int
        The indices returned by the forward pass (same shape as ``grad_output``).
    input_shape : tuple of int
        Shape of the forward input, ``(N, C, *spatial)`` or ``(C, *spatial)``.
    spatial_rank : int, optional
        Number of spatial dimensions (an addition to torch's interface). By default it is
        ``len(input_shape) - 2`` when ``grad_output`` has the same leading ``(N, C)``, else
        ``len(input_shape) - 1`` (unbatched); give it for an unbatched input whose first pooled
        dimension kept its size (e.g. ``(C, H, W)`` pooled with kernel ``(1, k)``).

    Returns
    -------
    ndarray
        ``grad_input`` of shape ``input_shape``: ``grad_input.flat[plane][indices[j]] += grad_output[j]``
        (overlapping windows add up; index -1, a window without any tap in the input, adds nothing).

    Raises
    ------
    ValueError
        Shapes that do not match, indices outside the input plane (other than -1).
    TypeError
        Non-integer indices or unsupported dtype.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[1.0, 3.0, 2.0]]])
    >>> out, idx = fastconv.max_pool1d(x, 2, stride=1, return_indices=True)
    >>> fastconv.max_pool_backward(np.ones_like(out), idx, x.shape)
    array([[[0., 2., 0.]]])
    """
    func = "max_pool_backward"
    # fast path: a repeat of an already validated call (same shapes and dtypes) on contiguous
    # native arrays skips the argument checks; the index range is still checked by the kernel
    key = None
    if (type(grad_output) is np.ndarray and type(indices) is np.ndarray and type(input_shape) is tuple
            and (spatial_rank is None or type(spatial_rank) is int)
            and grad_output.dtype in _args.NATIVE_FLOATS and grad_output.flags.c_contiguous
            and indices.dtype == _INT64 and indices.flags.c_contiguous
            and all(type(v) is int for v in input_shape)):
        key = (grad_output.shape, grad_output.dtype, indices.shape, input_shape, spatial_rank)
        hit = _VALIDATED_MPB.get(key)
        if hit is not None:
            shape, sp, P = hit
            return _max_backward_run(func, grad_output, indices, shape, sp, P)
    shape = _args.as_shape(func, "input_shape", input_shape)
    ind = _args._to_array(func, "indices", indices)
    if ind.dtype.kind not in "iu":
        raise _args.type_fail(func, f"indices must be an integer array, got dtype {ind.dtype}")
    gshape = np.shape(grad_output)
    if tuple(ind.shape) != tuple(gshape):
        raise _args.fail(func, f"indices of shape {tuple(ind.shape)} must have the shape of grad_output "
                               f"{tuple(gshape)}")
    g, shape, sp, rank, P = _grad_setup(func, grad_output, shape, spatial_rank)
    ind = np.ascontiguousarray(ind, dtype=np.int64)
    _args.check_alloc(func, shape, g.dtype, "grad_input")
    _args.remember(_VALIDATED_MPB, key, (shape, sp, P))
    return _max_backward_run(func, g, ind, shape, sp, P)


_INT64 = np.dtype(np.int64)
#: max_pool_backward calls that passed validation: key (shapes, dtypes) -> (input shape, spatial, planes)
_VALIDATED_MPB = {}


def _max_backward_run(func, g, ind, shape, sp, P):
    """The scatter of max_pool_backward on validated, contiguous arrays."""
    gi = np.empty((P, math.prod(sp)), g.dtype)
    bad = _pool.max_pool_backward(g.reshape(P, -1), ind.reshape(P, -1), gi,
                                  _threads(gi.size + 3 * g.size))
    if bad:
        raise _args.fail(func, f"indices has {bad} entries outside [0, {math.prod(sp)}) (the size of an "
                               f"input plane of shape {sp})")
    return gi.reshape(shape)


def _exact_blocks(dims):
    """(kh, kw, OW) when the windows are non-overlapping blocks tiling the planes exactly (stride =
    kernel, no padding, nothing left over), the planes taken as one tall plane of output rows of OW
    blocks kh input rows high and kw wide (a 1-d input: kh = 1; a 3-d input only as one block over
    the whole plane); else None."""
    if _whole_plane(dims):
        return 1, math.prod(d.n_in for d in dims), 1
    if len(dims) > 2 or not all(d.lo == 0 and d.hi == d.out and d.stride == d.k and d.off == 0
                                and d.step == 1 and d.out * d.k == d.n_in for d in dims):
        return None
    return (dims[0].k if len(dims) == 2 else 1), dims[-1].k, dims[-1].out


def _sum_backward(func, g, shape, dims, P, mode, divisor_override=None):
    """Adjoint of average pooling ('pad': count_include_pad, 'valid': counts, or the override)."""
    inv = _inv_factors(dims, mode, divisor_override, g.dtype)
    _args.check_alloc(func, shape, g.dtype, "grad_input")
    n = math.prod(d.n_in for d in dims)
    gi = np.empty((P, n), g.dtype)
    blocks = _exact_blocks(dims)
    if blocks is not None and inv[2] != 0:
        # one gradient per block, written to each of its inputs: a streaming pass over the planes
        # as one tall plane; the divisor is the block's (as the forward pass of blocks divides)
        kh, kw, OW = blocks
        _pool.pool_tall_plane(g.reshape(-1), gi.reshape(-1), OW, kh, kw, True, False,
                              1.0 / _block_divisor(dims, mode, divisor_override),
                              _threads(gi.size + g.size))
        return gi.reshape(shape)
    lists = _tap_lists(dims) if n <= GROUP_BACKWARD_PLANE_MAX else None
    if lists is not None:
        _pool.pool_groups_backward(g.reshape(P, -1), gi, lists[0], lists[1],
                                   _group_scale(dims, inv, g.dtype), _threads(gi.size + g.size))
    else:
        _pool.sum_pool_backward(g.reshape(P, -1), gi, _kernel_args(dims), inv[0], inv[1],
                                _threads(gi.size + g.size))
    return gi.reshape(shape)


def _check_grad_shape(func, g, shape, dims):
    rank = len(dims)
    want = tuple(shape[:len(shape) - rank]) + tuple(d.out for d in dims)
    if tuple(g.shape) != want:
        raise _args.fail(func, f"grad_output has shape {tuple(g.shape)} but the pooling of input_shape "
                               f"{tuple(shape)} gives {want}")


def avg_pool_backward(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                      count_include_pad=True, divisor_override=None):
    """Gradient of :func:`avg_pool` with respect to its input (its adjoint).

    Parameters
    ----------
    grad_output : array_like
        ``(N, C, *out_spatial)`` or unbatched.
    input_shape : tuple of int
        Shape of the forward input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As in the forward call.

    Returns
    -------
    ndarray
        ``grad_input`` of shape ``input_shape``: each output's gradient divided by its divisor and
        added to every input of its window.

    Raises
    ------
    ValueError
        Shapes that do not match the forward geometry, invalid pooling arguments.
    TypeError
        Unsupported dtype or non-integer sizes.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool_backward(np.ones((1, 1, 2)), (1, 1, 4), 2)
    array([[[0.5, 0.5, 0.5, 0.5]]])
    """
    func = "avg_pool_backward"
    divisor_override = _check_divisor(func, divisor_override)
    shape = _args.as_shape(func, "input_shape", input_shape)
    rank = len(kernel_size) if _is_seq(kernel_size) else len(shape) - 2
    g, shape, sp, rank, P = _grad_setup(func, grad_output, shape, rank)
    dims, _ = _window_dims(func, sp, kernel_size, stride, padding, 1, ceil_mode)
    _check_grad_shape(func, g, shape, dims)
    mode = "pad" if _args.as_bool(func, "count_include_pad", count_include_pad) else "valid"
    return _sum_backward(func, g, shape, dims, P, mode, divisor_override)


def adaptive_avg_pool_backward(grad_output, input_shape, *, spatial_rank=None):
    """Gradient of :func:`adaptive_avg_pool` with respect to its input.

    Parameters
    ----------
    grad_output : array_like
        ``(N, C, *output_size)`` or unbatched; its spatial sizes are the forward ``output_size``.
    input_shape : tuple of int
        Shape of the forward input (same rank as ``grad_output``).
    spatial_rank : int, optional
        As in :func:`max_pool_backward` (needed only for an unbatched input whose first output
        size equals its input size).

    Returns
    -------
    ndarray
        ``grad_input`` of shape ``input_shape``.

    Raises
    ------
    ValueError
        Shapes that do not match.
    TypeError
        Unsupported dtype or non-integer sizes.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.adaptive_avg_pool_backward(np.ones((1, 1, 2)), (1, 1, 4))
    array([[[0.5, 0.5, 0.5, 0.5]]])
    """
    func = "adaptive_avg_pool_backward"
    shape = _args.as_shape(func, "input_shape", input_shape)
    g, shape, sp, rank, P = _grad_setup(func, grad_output, shape, spatial_rank)
    dims = tuple(_adaptive_dim(i, o) for i, o in zip(sp, g.shape[g.ndim - rank:]))
    return _sum_backward(func, g, shape, dims, P, "valid")


def lp_pool_backward(grad_output, input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Gradient of :func:`lp_pool` with respect to its input (an addition to the API).

    Parameters
    ----------
    grad_output : array_like
        ``(N, C, *out_spatial)`` or unbatched.
    input : array_like
        The forward input (the gradient depends on it).
    norm_type, kernel_size, stride, ceil_mode
        As in the forward call.

    Returns
    -------
    ndarray
        ``grad_input`` with the shape of ``input``.

    Raises
    ------
    ValueError, TypeError
        As :func:`lp_pool`, and a ``grad_output`` of the wrong shape.

    Notes
    -----
    With ``y = (K * avg(x**p)) ** (1/p)`` (``K = prod(kernel_size)``),
    ``dL/dx = x**(p-1) * avg_backward(K * y**(1-p) * dL/dy)``. Where ``y == 0`` the gradient is 0
    (torch's autograd gives NaN or 0 there).

    Examples
    --------
    >>> import fastconv
    >>> fastconv.lp_pool_backward([[[1.0]]], [[[3.0, 4.0]]], 2, 2)
    array([[[0.6, 0.8]]])
    """
    func = "lp_pool_backward"
    p, x, lead, dims, knum = _lp_setup(func, input, norm_type, kernel_size, stride, ceil_mode, None)
    dt, (g,) = _args.as_float_arrays(func, grad_output=grad_output)
    dt = np.result_type(dt, x.dtype)
    x = x.astype(dt, copy=False)
    g = g.astype(dt, copy=False)
    rank = len(dims)
    shape = tuple(lead) + tuple(d.n_in for d in dims)
    _check_grad_shape(func, g, shape, dims)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        xp = np.power(x, dt.type(p))
        y = _forward(func, xp, lead, dims, False, mode="pad") * knum
        y = np.power(y, dt.type(1.0 / p))
        scale = np.where(y == 0, 0, knum * np.power(y, dt.type(1.0 - p)) * g).astype(dt)
        ga = _sum_backward(func, scale, shape, dims, x.shape[0], "pad")
        gi = ga * np.power(x.reshape(shape), dt.type(p - 1.0))
    return gi
