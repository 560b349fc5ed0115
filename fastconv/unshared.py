"""Unshared convolution (locally connected layers): forward, adjoint and gradients, 1-D to 3-D.

Like convolution, but every output location has its own kernel. The work is a batch of small matrix
products, one per output location ``p``: the patch of the whole batch at ``p`` (``N x C_in*k``)
times that location's weights (``C_in*k x C_out``). The input is first copied once into a padded,
batch-innermost layout in which every patch row (one channel at one kernel offset, all samples)
is contiguous; the kernels (``fastconv/_core/_unshared.pyx``) then contract each location's patch
with its weights -- a register-blocked micro-kernel reading the patch in place for batch chunks of
up to 32 samples, BLAS gemm on a copied patch beyond -- with the locations in parallel.
"""
import contextlib

import numpy as np

from . import _args
from ._config import blas_single_thread, get_num_threads

__all__ = [
    "unshared_conv", "unshared_conv_transpose", "unshared_conv_grad_input",
    "unshared_conv_grad_weight",
]

_PAD_STRINGS = ("valid", "same")
_TILE_BYTES = 256 * 1024  # patch tile (K x batch chunk) per thread, BLAS path
_WEIGHT_CACHE_BYTES = 64 * 1024  # one location's weights re-read for every batch chunk


def _kernels():
    from ._core import _unshared
    return _unshared


# ---------------------------------------------------------------------------------------------
# shapes and geometry

def _weight_layout(func, wshape, name="weight"):
    """(rank, grid, C_out, C_in, kernel) of a weight shape ``(*out_spatial, C_out, C_in, *kernel)``."""
    nd = len(wshape)
    if nd not in (4, 6, 8):
        raise _args.fail(func, f"{name} must have shape (*out_spatial, C_out, C_in, *kernel) with 1, 2 "
                               f"or 3 spatial dimensions (4, 6 or 8 dimensions), got shape {tuple(wshape)}")
    if any(s < 1 for s in wshape):
        raise _args.fail(func, f"{name} is empty (shape {tuple(wshape)}); every dimension must be >= 1")
    rank = (nd - 2) // 2
    return (rank, tuple(wshape[:rank]), int(wshape[rank]), int(wshape[rank + 1]),
            tuple(wshape[rank + 2:]))


def _geometry(func, in_sp, wshape, stride, padding, dilation, name="weight"):
    """Geometry over input spatial sizes ``in_sp``; the weight's location grid must match."""
    rank, grid, _, _, kernel = _weight_layout(func, wshape, name)
    geom = _args.conv_geometry(func, tuple(in_sp), kernel, stride, padding, dilation,
                               strings=_PAD_STRINGS)
    if geom.out_sp != grid:
        raise _args.fail(func, f"{name} has a location grid of {grid} (shape {tuple(wshape)}) but the "
                               f"output grid is {geom.out_sp} (input spatial size {tuple(in_sp)}, kernel "
                               f"{kernel}, stride {geom.stride}, padding {geom.pads}, dilation "
                               f"{geom.dilation})")
    return geom


class _Plan:
    """3-D sizes for the kernels: the packed (padded) input extent covers the input and every
    window. ``NB`` is the batch chunk: at most the micro-kernel's limit while one location's
    weights are small enough to stay in cache across chunks, else as many samples as keep one
    K x NB patch tile within _TILE_BYTES (and BLAS does the product)."""

    def __init__(self, geom, N, C_in, C_out, dtype):
        insz, ksz, stride, dil, before, outsz = geom.as3d()
        # a stride with one output, a dilation with a kernel of 1, never matters: any value (even
        # one beyond a C ssize_t) may be given; the kernels get 1
        stride = tuple(s if o > 1 else 1 for s, o in zip(stride, outsz))
        dil = tuple(d if k > 1 else 1 for d, k in zip(dil, ksz))
        self.insz, self.ksz, self.stride, self.dil, self.before, self.outsz = (
            insz, ksz, stride, dil, before, outsz)
        self.padsz = tuple(max(b + i, (o - 1) * s + d * (k - 1) + 1)
                           for i, k, s, d, b, o in zip(insz, ksz, stride, dil, before, outsz))
        self.padded = self.padsz != insz
        self.N, self.C_in, self.C_out = N, C_in, C_out
        K = C_in * ksz[0] * ksz[1] * ksz[2]
        if max(K, C_out, N) >= 2 ** 31:
            raise MemoryError(f"unshared convolution: C_in * kernel volume ({K}), C_out ({C_out}) and "
                              f"N ({N}) must each be below 2**31 (BLAS index limit)")
        itemsize = np.dtype(dtype).itemsize
        small = _kernels().small_n()
        if small > 0 and C_out * K * itemsize <= _WEIGHT_CACHE_BYTES:
            self.NB = int(min(N, small))
        else:
            self.NB = int(min(N, max(_TILE_BYTES // (K * itemsize), 16)))
        # whether any product goes to BLAS (then BLAS must be kept single-threaded)
        self.blas_fwd = self.NB > small
        self.blas_gw = C_out > small
        self.nthreads = get_num_threads()
        self.dtype = dtype

    def geo(self):
        return self.padsz, self.ksz, self.stride, self.dil, self.outsz

    def slabs(self):
        """(axis, rows, phases) for the race-free scatter of the adjoint.

        Output rows ``i`` and ``i + m`` along an axis read disjoint input windows when
        ``m * stride > dilation * (kernel - 1)``. So slabs of one row, in ``m = dilation *
        (kernel - 1) // stride + 1`` phases (rows f, f + m, ... in parallel), never collide; the axis
        with the most rows per phase wins. The choice does not depend on the thread count, so
        neither does the summation order: results are identical for every number of threads.
        """
        best = None
        for a in range(3):
            m = self.dil[a] * (self.ksz[a] - 1) // self.stride[a] + 1
            key = (-(-self.outsz[a] // m), -a)
            if best is None or key > best[0]:
                best = (key, a, m)
        return best[1], 1, best[2]


def _blas_guard(uses_blas):
    """BLAS single-threaded while our threads call it; nothing to do when only the micro-kernel
    runs."""
    return blas_single_thread() if uses_blas else contextlib.nullcontext()


def _pack(func, x4, plan):
    """The padded, batch-innermost copy (Dp, Hp, Wp, C, N) of ``x4`` (N, C, *spatial), flat, with
    the kernels' slack (a few zeros the vector loads may touch) at the end."""
    shape = plan.padsz + (plan.C_in, plan.N)
    _args.check_alloc(func, shape, plan.dtype, "packed input")
    k = _kernels()
    size = _args.prod(shape) + k.SLACK
    if plan.padded:
        xt = np.zeros(size, plan.dtype)
    else:
        xt = np.empty(size, plan.dtype)
        xt[-k.SLACK:] = 0
    k.pack_input(x4.reshape(-1), xt, plan.N, plan.C_in, plan.insz, plan.padsz, plan.before, False,
                 plan.nthreads)
    return xt


def _check_grad_output(func, gy4, plan, grid):
    want = (plan.N, plan.C_out) + grid
    if gy4.shape != want:
        raise _args.fail(func, f"grad_output has shape {gy4.shape} but the convolution output has shape "
                               f"{want} (N, C_out, *out_spatial)")


def _adjoint(func, gy4, w, plan, in_sp):
    """The transposed product: (N, C_in, *in_sp) = sum over locations of scatter(W_p^T gy_p)."""
    shape = plan.padsz + (plan.C_in, plan.N)
    _args.check_alloc(func, shape, plan.dtype, "packed input gradient")
    _args.check_alloc(func, (plan.N, plan.C_in) + tuple(in_sp), plan.dtype)
    gxt = np.zeros(shape, plan.dtype)
    axis, rows, phases = plan.slabs()
    k = _kernels()
    with _blas_guard(plan.blas_fwd):
        k.backward_input(gy4.reshape(-1), w.reshape(-1), gxt.reshape(-1), plan.N, plan.C_in,
                         plan.C_out, *plan.geo(), plan.NB, axis, rows, phases, plan.nthreads)
    gx = np.empty((plan.N, plan.C_in) + tuple(in_sp), plan.dtype)
    k.pack_input(gxt.reshape(-1), gx.reshape(-1), plan.N, plan.C_in, plan.insz, plan.padsz,
                 plan.before, True, plan.nthreads)
    return gx


def _batched_shape(func, shape, rank, name):
    """A full input shape (N, C, *spatial) or unbatched (C, *spatial): returns (N, C, sp, batched)."""
    shape = _args.as_shape(func, name, shape)
    if len(shape) == rank + 2:
        return shape[0], shape[1], shape[2:], True
    if len(shape) == rank + 1:
        return 1, shape[0], shape[1:], False
    raise _args.fail(func, f"{name} must be (N, C_in, *spatial) or (C_in, *spatial) with {rank} spatial "
                           f"dimension(s), got {shape}")


def _same_batching(func, batched_a, name_a, batched_b, name_b, shape_a, shape_b):
    if batched_a != batched_b:
        raise _args.fail(func, f"{name_a} {tuple(shape_a)} is {'' if batched_a else 'un'}batched but "
                               f"{name_b} {tuple(shape_b)} is {'' if batched_b else 'un'}batched")


def _smallest_input(func, grid, kernel, stride, padding, dilation):
    """The smallest input spatial size whose output grid is ``grid`` (for output_size=None)."""
    rank = len(kernel)
    stride = _args.ntuple(func, "stride", stride, rank, minimum=1)
    dilation = _args.ntuple(func, "dilation", dilation, rank, minimum=1)
    if isinstance(padding, str) and padding.lower() == "same":
        return tuple((o - 1) * s + 1 for o, s in zip(grid, stride))
    pads = _args.resolve_padding(func, padding, grid, kernel, stride, dilation, strings=_PAD_STRINGS)
    return tuple(max(1, (o - 1) * s + d * (k - 1) + 1 - pb - pa)
                 for o, k, s, d, (pb, pa) in zip(grid, kernel, stride, dilation, pads))


# ---------------------------------------------------------------------------------------------
# public functions

def unshared_conv(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """Unshared convolution (locally connected layer): a separate kernel at every output location.

    Parameters
    ----------
    input : array_like
        ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``, 1, 2 or 3 spatial dimensions.
    weight : array_like
        ``(*out_spatial, C_out, C_in, *kernel)``: one ``(C_out, C_in, *kernel)`` kernel per output
        location. The spatial rank is ``(weight.ndim - 2) // 2``; ``out_spatial`` must equal the
        output grid that ``stride``, ``padding`` and ``dilation`` give for ``input``.
    bias : array_like, optional
        ``(C_out, *out_spatial)`` (a bias per channel and location), ``(C_out,)`` or None.
    stride, dilation : int or tuple of ints
        One value, or one per spatial dimension.
    padding : int, tuple, tuple of (before, after) pairs, "valid" or "same"
        Zero padding, as :func:`fastconv.conv`. ``"same"`` gives ``ceil(in / stride)`` outputs for
        every stride (TensorFlow's SAME rule; an odd total puts the extra element after).

    Returns
    -------
    ndarray
        ``(N, C_out, *out_spatial)`` (or ``(C_out, *out_spatial)`` for an unbatched input), dtype
        ``np.result_type`` of the float inputs.

    Raises
    ------
    ValueError
        The weight's location grid does not match the output grid (both shapes are stated), the
        input's channels do not match the weight's ``C_in``, the bias has the wrong shape, or any
        other malformed argument.
    TypeError
        Unsupported dtypes (complex, object, float16, ...) or non-integer sizes.

    Notes
    -----
    With ``i = o * stride - pad_before + k * dilation`` per dimension,

    ``out[n, co, o] = bias[co, o] + sum_{ci, k} weight[o, co, ci, k] * input_padded[n, ci, i]``.

    With every location's kernel equal to one ``(C_out, C_in, *kernel)`` array ``w``, this is
    ``conv(input, w, bias, stride, padding, dilation)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import unshared_conv
    >>> x = np.arange(4.0).reshape(1, 4)              # C_in = 1, width 4
    >>> w = np.zeros((3, 1, 1, 2))                    # 3 locations, C_out = C_in = 1, kernel 2
    >>> w[:, 0, 0] = [[1, 0], [0, 1], [1, 1]]         # each location its own kernel
    >>> unshared_conv(x, w)
    array([[0., 2., 5.]])
    """
    func = "unshared_conv"
    dt, (x, w, b) = _args.as_float_arrays(func, input=input, weight=weight, bias=bias)
    rank, grid, C_out, C_in, kernel = _weight_layout(func, w.shape)
    x4, batched = _args.split_batch(func, x, rank)
    if x4.shape[1] != C_in:
        raise _args.fail(func, f"input has {x4.shape[1]} channels but weight expects {C_in} "
                               f"(input shape {tuple(x.shape)}, weight shape {tuple(w.shape)})")
    geom = _geometry(func, x4.shape[2:], w.shape, stride, padding, dilation)
    P = int(np.prod(grid))
    if b is None:
        b2 = np.zeros(1, dt)
    elif b.shape == (C_out,):
        b2 = np.ascontiguousarray(np.broadcast_to(b[:, None], (C_out, P))).reshape(-1)
    elif b.shape == (C_out,) + grid:
        b2 = b.reshape(-1)
    else:
        raise _args.fail(func, f"bias must have shape (C_out,) = {(C_out,)} or (C_out, *out_spatial) = "
                               f"{(C_out,) + grid}, got {tuple(b.shape)}")
    N = x4.shape[0]
    plan = _Plan(geom, N, C_in, C_out, dt)
    _args.check_alloc(func, (N, C_out) + grid, dt)
    xt = _pack(func, x4, plan)
    out = np.empty((N, C_out) + grid, dt)
    with _blas_guard(plan.blas_fwd):
        _kernels().forward(xt, w.reshape(-1), b2, out.reshape(-1), N, C_in, C_out,
                           *plan.geo(), b is not None, plan.NB, plan.nthreads)
    return out if batched else out[0]


def unshared_conv_transpose(input, weight, stride=1, padding=0, dilation=1, output_size=None):
    """Transposed unshared convolution: the exact adjoint of :func:`unshared_conv`.

    ``<unshared_conv(x, w), y> == <x, unshared_conv_transpose(y, w)>`` for every ``x``, ``y`` of
    matching shapes (with the same ``stride``, ``padding``, ``dilation`` and ``output_size`` equal
    to ``x``'s spatial size).

    Parameters
    ----------
    input : array_like
        ``(N, C_out, *out_spatial)`` or unbatched ``(C_out, *out_spatial)``: values on the weight's
        location grid.
    weight : array_like
        ``(*out_spatial, C_out, C_in, *kernel)``, as for :func:`unshared_conv`.
    stride, padding, dilation
        The forward convolution's, as for :func:`unshared_conv`.
    output_size : int or tuple of ints, optional
        The spatial size of the forward convolution's input, i.e. of the result (``(N, C, *spatial)``
        is accepted too; its last entries are used). Several input sizes can give the same output
        grid when ``stride > 1``. When None, the **smallest** input size consistent with the
        weight's grid is used: ``(out - 1) * stride + dilation * (k - 1) + 1 - pad_before -
        pad_after`` (at least 1), or ``(out - 1) * stride + 1`` for ``padding="same"``.

    Returns
    -------
    ndarray
        ``(N, C_in, *output_size)`` (unbatched for an unbatched input).

    Raises
    ------
    ValueError
        ``input`` does not lie on the weight's grid (channels or spatial shape), ``output_size`` is
        inconsistent with the grid (both shapes are stated), or other malformed arguments.

    Notes
    -----
    ``out[n, ci, i] = sum over (o, co, k) with o * stride - pad_before + k * dilation == i of
    weight[o, co, ci, k] * input[n, co, o]``: each location's kernel scattered back, weighted.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import unshared_conv_transpose
    >>> w = np.zeros((3, 1, 1, 2))
    >>> w[:, 0, 0] = [[1, 0], [0, 1], [1, 1]]
    >>> unshared_conv_transpose(np.ones((1, 3)), w)   # output_size None -> 4 = (3 - 1) + 1 + 1
    array([[1., 0., 2., 1.]])
    """
    func = "unshared_conv_transpose"
    dt, (y, w) = _args.as_float_arrays(func, input=input, weight=weight)
    rank, grid, C_out, C_in, kernel = _weight_layout(func, w.shape)
    y4, batched = _args.split_batch(func, y, rank)
    if y4.shape[1] != C_out or y4.shape[2:] != grid:
        raise _args.fail(func, f"input has shape {tuple(y.shape)} but weight {tuple(w.shape)} expects "
                               f"{C_out} channels on a location grid of {grid} "
                               f"(shape {(C_out,) + grid} or (N, {C_out}, {', '.join(map(str, grid))}))")
    if output_size is None:
        in_sp = _smallest_input(func, grid, kernel, stride, padding, dilation)
    elif not hasattr(output_size, "__len__"):
        in_sp = _args.ntuple(func, "output_size", output_size, rank, minimum=1)
    else:
        sz = _args.as_shape(func, "output_size", output_size)
        if len(sz) not in (rank, rank + 1, rank + 2):
            raise _args.fail(func, f"output_size must have {rank} entries (the spatial size), got {sz}")
        in_sp = sz[len(sz) - rank:]
    geom = _geometry(func, in_sp, w.shape, stride, padding, dilation)
    plan = _Plan(geom, y4.shape[0], C_in, C_out, dt)
    gx = _adjoint(func, y4, w, plan, in_sp)
    return gx if batched else gx[0]


def unshared_conv_grad_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1):
    """Gradient of :func:`unshared_conv` with respect to its input.

    Parameters
    ----------
    input_shape : tuple of ints
        Shape of the forward input: ``(N, C_in, *spatial)``, or ``(C_in, *spatial)`` when the forward
        call was unbatched (``grad_output`` must then be unbatched too).
    weight : array_like
        ``(*out_spatial, C_out, C_in, *kernel)``.
    grad_output : array_like
        ``(N, C_out, *out_spatial)`` (or unbatched): gradient of the loss w.r.t. the output.
    stride, padding, dilation
        The forward call's.

    Returns
    -------
    ndarray
        Array of shape ``input_shape``: ``unshared_conv_transpose(grad_output, weight, ...,
        output_size=spatial)``.

    Raises
    ------
    ValueError
        Shapes that do not fit together (each message names the argument and the shapes).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import unshared_conv_grad_input
    >>> w = np.ones((3, 1, 1, 2))
    >>> unshared_conv_grad_input((1, 1, 4), w, np.ones((1, 1, 3)))
    array([[[1., 2., 2., 1.]]])
    """
    func = "unshared_conv_grad_input"
    dt, (w, gy) = _args.as_float_arrays(func, weight=weight, grad_output=grad_output)
    rank, grid, C_out, C_in, kernel = _weight_layout(func, w.shape)
    N, C, in_sp, batched = _batched_shape(func, input_shape, rank, "input_shape")
    gy4, gbatched = _args.split_batch(func, gy, rank, "grad_output")
    _same_batching(func, batched, "input_shape", gbatched, "grad_output", input_shape, gy.shape)
    if C != C_in:
        raise _args.fail(func, f"input_shape {tuple(input_shape)} has {C} channels but weight expects "
                               f"{C_in} (weight shape {tuple(w.shape)})")
    geom = _geometry(func, in_sp, w.shape, stride, padding, dilation)
    plan = _Plan(geom, N, C_in, C_out, dt)
    _check_grad_output(func, gy4, plan, grid)
    gx = _adjoint(func, gy4, w, plan, in_sp)
    return gx if batched else gx[0]


def unshared_conv_grad_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1):
    """Gradient of :func:`unshared_conv` with respect to its weight.

    Parameters
    ----------
    input : array_like
        The forward input, ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``.
    weight_shape : tuple of ints
        ``(*out_spatial, C_out, C_in, *kernel)``.
    grad_output : array_like
        ``(N, C_out, *out_spatial)`` (unbatched if ``input`` is).
    stride, padding, dilation
        The forward call's.

    Returns
    -------
    ndarray
        Array of shape ``weight_shape``: ``gw[o, co, ci, k] = sum_n grad_output[n, co, o] *
        input_padded[n, ci, o * stride + k * dilation]`` (``input_padded``: the input with the
        padding's zeros, indexed from the first padded element).

    Raises
    ------
    ValueError
        Shapes that do not fit together (each message names the argument and the shapes).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import unshared_conv_grad_weight
    >>> x = np.arange(4.0).reshape(1, 1, 4)
    >>> unshared_conv_grad_weight(x, (3, 1, 1, 2), np.ones((1, 1, 3)))[:, 0, 0]
    array([[0., 1.],
           [1., 2.],
           [2., 3.]])
    """
    func = "unshared_conv_grad_weight"
    dt, (x, gy) = _args.as_float_arrays(func, input=input, grad_output=grad_output)
    wshape = _args.as_shape(func, "weight_shape", weight_shape)
    rank, grid, C_out, C_in, kernel = _weight_layout(func, wshape, "weight_shape")
    x4, batched = _args.split_batch(func, x, rank)
    gy4, gbatched = _args.split_batch(func, gy, rank, "grad_output")
    _same_batching(func, batched, "input", gbatched, "grad_output", x.shape, gy.shape)
    if x4.shape[1] != C_in:
        raise _args.fail(func, f"input has {x4.shape[1]} channels but weight_shape {wshape} expects "
                               f"{C_in}")
    geom = _geometry(func, x4.shape[2:], wshape, stride, padding, dilation, "weight_shape")
    plan = _Plan(geom, x4.shape[0], C_in, C_out, dt)
    _check_grad_output(func, gy4, plan, grid)
    _args.check_alloc(func, wshape, dt)
    xt = _pack(func, x4, plan)
    gw = np.empty(wshape, dt)
    with _blas_guard(plan.blas_gw):
        _kernels().backward_weight(xt, gy4.reshape(-1), gw.reshape(-1), plan.N, C_in,
                                   C_out, *plan.geo(), plan.NB, plan.nthreads)
    return gw
