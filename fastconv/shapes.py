"""Size arithmetic of convolution and pooling, and receptive fields of layer stacks."""
from . import _args

__all__ = ["output_shape", "conv_transpose_output_shape"]


def _split_shape(func, input_shape, kernel_size):
    shape = _args.as_shape(func, "input_shape", input_shape)
    if isinstance(kernel_size, (tuple, list)):
        rank = len(kernel_size)
    else:
        rank = len(shape)
    if not 1 <= rank <= 3 or len(shape) not in (rank, rank + 1, rank + 2):
        raise _args.fail(func, f"input_shape {shape} does not fit kernel_size {kernel_size!r}: give the "
                               f"spatial sizes, (C, *spatial) or (N, C, *spatial) for 1 to 3 spatial dims")
    kernel = _args.ntuple(func, "kernel_size", kernel_size, rank, minimum=1)
    return shape[:len(shape) - rank], shape[len(shape) - rank:], kernel


def output_shape(input_shape, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    """Output shape of a convolution or pooling window over ``input_shape``.

    ``input_shape`` is the spatial sizes, ``(C, *spatial)`` or ``(N, C, *spatial)``; leading entries are
    kept as they are (the channel count of a convolution is the weight's business). The spatial rank
    is ``len(kernel_size)`` for a tuple, else ``len(input_shape)``. Padding accepts every form of
    ``conv`` (int, tuple, pairs, ``"valid"``, ``"same"``, ``"full"``).

    >>> output_shape((320, 280), (2, 1))
    (319, 280)
    >>> output_shape((8, 64, 56, 56), (3, 3), stride=2, padding=1)
    (8, 64, 28, 28)
    """
    func = "output_shape"
    lead, sp, kernel = _split_shape(func, input_shape, kernel_size)
    rank = len(kernel)
    stride = _args.ntuple(func, "stride", stride, rank, minimum=1)
    dilation = _args.ntuple(func, "dilation", dilation, rank, minimum=1)
    pads = _args.resolve_padding(func, padding, sp, kernel, stride, dilation)
    out = tuple(_args.conv_output_size(i, k, s, d, pb, pa, ceil_mode)
                for i, k, s, d, (pb, pa) in zip(sp, kernel, stride, dilation, pads))
    if any(o < 1 for o in out):
        raise _args.fail(func, f"kernel_size {kernel} (dilation {dilation}) is larger than the padded "
                               f"input {tuple(i + b + a for i, (b, a) in zip(sp, pads))}")
    return lead + out


def conv_transpose_output_shape(input_shape, kernel_size, stride=1, padding=0, output_padding=0,
                                dilation=1):
    """Output shape of a transposed convolution: ``(in - 1) * stride - pad_before - pad_after +
    dilation * (k - 1) + output_padding + 1`` per spatial dim (torch's formula; padding pairs allowed).

    >>> conv_transpose_output_shape((8, 64, 28, 28), (4, 4), stride=2, padding=1)
    (8, 64, 56, 56)
    """
    func = "conv_transpose_output_shape"
    lead, sp, kernel = _split_shape(func, input_shape, kernel_size)
    rank = len(kernel)
    stride = _args.ntuple(func, "stride", stride, rank, minimum=1)
    dilation = _args.ntuple(func, "dilation", dilation, rank, minimum=1)
    opad = _args.ntuple(func, "output_padding", output_padding, rank, minimum=0)
    pads = _args.resolve_padding(func, padding, sp, kernel, stride, dilation, strings=("valid",))
    for o, s, d in zip(opad, stride, dilation):
        if o >= max(s, d):
            raise _args.fail(func, f"output_padding {opad} must be smaller than stride {stride} or "
                                   f"dilation {dilation}")
    out = tuple((i - 1) * s - pb - pa + d * (k - 1) + o + 1
                for i, k, s, d, (pb, pa), o in zip(sp, kernel, stride, dilation, pads, opad))
    if any(v < 1 for v in out):
        raise _args.fail(func, f"padding {padding!r} is too large: the output would have spatial size {out}")
    return lead + out
