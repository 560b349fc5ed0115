"""Size arithmetic of convolution and pooling, and receptive fields of layer stacks."""
import collections

from . import _args

__all__ = ["output_shape", "conv_transpose_output_shape", "receptive_field", "ReceptiveField"]


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
    ceil_mode = _args.as_bool(func, "ceil_mode", ceil_mode)
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
    Padding strings as :func:`conv_transpose`: ``"valid"``, ``"full"``, and ``"same"`` (``in * stride``).

    >>> conv_transpose_output_shape((8, 64, 28, 28), (4, 4), stride=2, padding=1)
    (8, 64, 56, 56)
    """
    func = "conv_transpose_output_shape"
    lead, sp, kernel = _split_shape(func, input_shape, kernel_size)
    from .conv import _transpose_geometry  # the very arithmetic conv_transpose uses
    geom = _transpose_geometry(func, sp, kernel, stride, padding, output_padding, dilation, None)
    return lead + tuple(geom.in_sp)


ReceptiveField = collections.namedtuple("ReceptiveField", "receptive_field jump start center output_size")
ReceptiveField.__doc__ = """One layer's entry in :func:`receptive_field` (ints, or tuples of per-dim ints).

receptive_field : how many input elements (per dim) one unit of this layer depends on
jump : distance in the input between neighbouring units of this layer (the product of strides)
start : input index of the first element seen by unit 0 (negative: it reaches into padding)
center : input coordinate of the centre of unit 0's field, ``start + (receptive_field - 1) / 2``
output_size : units of this layer per dim, or None when no ``input_size`` was given
"""

_LAYER_KEYS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")


def _layer_params(func, i, layer):
    """(kernel_size, stride, padding, dilation, ceil_mode) of a dict or an object with those
    attributes."""
    if isinstance(layer, dict):
        unknown = set(layer) - set(_LAYER_KEYS)
        if unknown:
            raise _args.fail(func, f"layers[{i}] has unknown key(s) {sorted(unknown)}; expected "
                                   f"{', '.join(_LAYER_KEYS)}")
        get = layer.get
    else:
        def get(key, default=None):
            return getattr(layer, key, default)
    k = get("kernel_size")
    if k is None:
        raise _args.fail(func, f"layers[{i}] has no kernel_size ({layer!r})")
    stride = get("stride", 1)
    if stride is None:                # pooling's convention: stride defaults to the window
        stride = k
    padding = get("padding", 0)
    dilation = get("dilation", 1)
    ceil_mode = _args.as_bool(func, f"layers[{i}] ceil_mode", get("ceil_mode", False))
    return k, stride, 0 if padding is None else padding, 1 if dilation is None else dilation, ceil_mode


def _rank_of(values):
    """Spatial rank from the first per-dim tuple (padding pairs count one entry per dim), or None."""
    for v in values:
        if isinstance(v, (tuple, list)):
            return len(v)
    return None


def receptive_field(layers, input_size=None):
    """Receptive field size, jump and start offset after each layer of a stack.

    The lecture's point that deeper units see more of the input, as numbers: for each layer, how
    many input elements one of its units depends on, how far apart (in input elements) its
    neighbouring units are, and where unit 0's field begins.

    Parameters
    ----------
    layers : sequence
        One entry per layer, input side first: a dict with keys ``"kernel_size"`` (required),
        ``"stride"`` (default 1), ``"padding"`` (default 0), ``"dilation"`` (default 1) and
        ``"ceil_mode"`` (default False: pooling's rounding, for ``output_size``), or any object
        with those attributes (a layer object such as torch's ``nn.MaxPool2d``; a missing
        attribute takes the default). A
        stride of None means ``stride = kernel_size`` (pooling's convention). Entries are ints or
        per-dim tuples; padding also takes ``(before, after)`` pairs and ``"valid"``, ``"same"``,
        ``"full"`` (``"same"`` with a stride above 1 needs ``input_size``).
    input_size : int or tuple of int, optional
        Spatial input size; when given, each entry's ``output_size`` is filled in (and checked: a
        layer whose window does not fit raises ``ValueError``).

    Returns
    -------
    list of ReceptiveField
        Named tuples ``(receptive_field, jump, start, center, output_size)``, one per layer. Values
        are ints when every layer parameter (and ``input_size``) is an int, else per-dim tuples.

    Notes
    -----
    With ``k' = dilation * (kernel_size - 1) + 1`` the dilated window and starting from
    ``r = 1, j = 1, start = 0`` (the input itself), each layer maps, per dim::

        r     <- r + (k' - 1) * j
        start <- start - pad_before * j
        j     <- j * stride

    so unit ``u`` of a layer covers input indices ``[start + u * j, start + u * j + r - 1]``.

    Examples
    --------
    Three 3x3 stride-1 convolutions see a 7x7 patch; with dilations 1, 2, 4 they see 15x15:

    >>> [f.receptive_field for f in receptive_field([{"kernel_size": 3}] * 3)]
    [3, 5, 7]
    >>> receptive_field([{"kernel_size": 3, "dilation": d} for d in (1, 2, 4)])[-1].receptive_field
    15
    >>> receptive_field([{"kernel_size": (3, 3), "padding": 1}, {"kernel_size": 2, "stride": None}],
    ...                 input_size=(32, 32))[-1]
    ReceptiveField(receptive_field=(4, 4), jump=(2, 2), start=(-1, -1), center=(0.5, 0.5), output_size=(16, 16))
    """
    func = "receptive_field"
    try:
        layers = list(layers)
    except TypeError:
        raise _args.type_fail(func, f"layers must be a sequence of dicts or layer objects, got {layers!r}") from None
    params = [_layer_params(func, i, layer) for i, layer in enumerate(layers)]
    flat = [v for p in params for v in p if not isinstance(v, str)]
    rank = _rank_of(flat + ([input_size] if input_size is not None else []))
    scalar = rank is None
    rank = rank or 1
    size = None
    if input_size is not None:
        size = _args.ntuple(func, "input_size", input_size, rank, minimum=1)
    r, j, start = [1] * rank, [1] * rank, [0] * rank
    out = []
    for i, (k, s, p, d, ceil_mode) in enumerate(params):
        name = f"layers[{i}]"
        k = _args.ntuple(func, f"{name} kernel_size", k, rank, minimum=1)
        s = _args.ntuple(func, f"{name} stride", s, rank, minimum=1)
        d = _args.ntuple(func, f"{name} dilation", d, rank, minimum=1)
        if isinstance(p, str) and p.lower() == "same" and size is None and any(v > 1 for v in s):
            raise _args.fail(func, f"{name} has padding='same' with stride {s}: the padding depends on "
                                   f"the input size, so give input_size")
        pads = _args.resolve_padding(func, p, size or (1,) * rank, k, s, d, name=f"{name} padding")
        if size is not None:
            new = tuple(_args.conv_output_size(n, kk, ss, dd, pb, pa, ceil_mode)
                        for n, kk, ss, dd, (pb, pa) in zip(size, k, s, d, pads))
            if any(v < 1 for v in new):
                raise _args.fail(func, f"{name}: window {k} (dilation {d}) does not fit the padded input "
                                       f"{tuple(n + pb + pa for n, (pb, pa) in zip(size, pads))}")
            size = new
        for a in range(rank):
            keff = d[a] * (k[a] - 1) + 1
            r[a] += (keff - 1) * j[a]
            start[a] -= pads[a][0] * j[a]
            j[a] *= s[a]
        center = [st + (rr - 1) / 2 for st, rr in zip(start, r)]
        center = [int(c) if float(c).is_integer() else c for c in center]
        if scalar:
            out.append(ReceptiveField(r[0], j[0], start[0], center[0], None if size is None else size[0]))
        else:
            out.append(ReceptiveField(tuple(r), tuple(j), tuple(start), tuple(center), size))
    return out
