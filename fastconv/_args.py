"""The one place where public arguments are normalised and checked.

Every public function of fastconv goes through these helpers, so every op accepts the same forms
(int or per-dimension tuple, padding strings and pairs, array-likes of any layout and byte order) and
fails with the same kind of message: ``"<function>: <argument> <what is wrong> (<values>)"``.
"""
import functools
import math
import numbers
import os

import numpy as np

__all__ = [
    "fail", "type_fail", "ntuple", "as_float_arrays", "result_dtype", "split_batch",
    "resolve_padding", "conv_output_size", "check_alloc", "check_spatial_rank", "as_shape",
]

_STRING_PADDINGS = ("valid", "same", "full")
_SSIZE_MAX = 2 ** 63 - 1
_OPTIONAL_ARRAYS = frozenset({"bias"})  # array arguments that may be None


def fail(func, msg, exc=ValueError):
    """Return (not raise) an exception whose message starts with the function name."""
    return exc(f"{func}: {msg}")


def type_fail(func, msg):
    return fail(func, msg, TypeError)


def _is_int(v):
    if type(v) is int:  # the common case, without the ABC machinery
        return True
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def as_bool(func, name, value):
    """A flag: a bool, NumPy bool or int (0 / 1 and other ints as their truth value, as torch)."""
    if not isinstance(value, (bool, np.bool_, numbers.Integral)):
        raise type_fail(func, f"{name} must be a bool, got {value!r}")
    return bool(value)


def as_int(func, name, value, *, minimum=None):
    """A single int argument (a count, not a per-dimension size)."""
    if not _is_int(value):
        raise type_fail(func, f"{name} must be an int, got {value!r}")
    return ntuple(func, name, value, 1, minimum=minimum)[0]


def ntuple(func, name, value, n, *, minimum=None, allow_none=False):
    """Turn an int or a length-``n`` sequence into a tuple of ``n`` Python ints.

    ``minimum`` (if given) is checked for every entry; ``allow_none`` lets entries be None
    (adaptive pooling's "keep this size").
    """
    if _is_int(value) or (allow_none and value is None):
        vals = (value,) * n
    elif isinstance(value, (str, bytes)):
        raise type_fail(func, f"{name} must be an int or a tuple of {n} ints, got {value!r}")
    else:
        try:
            vals = tuple(value)
        except TypeError:
            raise type_fail(func, f"{name} must be an int or a tuple of {n} ints, got {value!r}") from None
        if len(vals) != n:
            raise fail(func, f"{name} must be an int or a tuple of {n} ints (one per spatial "
                             f"dimension), got {value!r} with {len(vals)} entries")
    out = []
    for v in vals:
        if v is None and allow_none:
            out.append(None)
            continue
        if not _is_int(v):
            raise type_fail(func, f"{name} entries must be ints, got {value!r}")
        v = int(v)
        if minimum is not None and v < minimum:
            raise fail(func, f"{name} must be >= {minimum}, got {value!r}")
        if v > _SSIZE_MAX:
            raise fail(func, f"{name} must be at most 2**63 - 1 (a C index), got {value!r}")
        out.append(v)
    return tuple(out)


def as_shape(func, name, shape, *, minimum=1):
    """A shape given as a sequence of ints (e.g. ``input_shape``)."""
    try:
        vals = tuple(shape)
    except TypeError:
        raise type_fail(func, f"{name} must be a tuple of ints, got {shape!r}") from None
    for v in vals:
        if not _is_int(v):
            raise type_fail(func, f"{name} must be a tuple of ints, got {shape!r}")
        if v < minimum:
            raise fail(func, f"{name} entries must be >= {minimum}, got {shape!r}")
    return tuple(int(v) for v in vals)


def _check_dtype(func, name, dt):
    if dt == np.float16:
        raise type_fail(func, f"{name} has dtype float16, which is not supported (use float32 or float64)")
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise type_fail(func, f"{name} has unsupported dtype {dt} (float32 and float64 run natively; "
                              f"integer and bool become float64)")
    return np.dtype(dt.newbyteorder("="))


def result_dtype(func, **arrays):
    """The computation dtype of the named arrays (np.result_type of their float dtypes)."""
    dts = []
    for name, a in arrays.items():
        if a is None:
            continue
        dts.append(_check_dtype(func, name, a.dtype))
    return np.result_type(*dts) if dts else np.dtype(np.float64)


def _to_array(func, name, a):
    if isinstance(a, np.ndarray):
        return a
    try:
        arr = np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise type_fail(func, f"{name} could not be converted to an array ({e})") from None
    return arr


NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def ready(a, dt):
    """True if ``a`` can go to the kernels as it is (fast path of as_float_arrays)."""
    return (type(a) is np.ndarray and a.dtype == dt and a.dtype.isnative
            and a.flags.c_contiguous and a.flags.writeable)


def as_float_arrays(func, dtype=None, **arrays):
    """Convert array-likes to C-contiguous native-byte-order arrays of one float dtype.

    Returns ``(dtype, [arrays in the given order])``; None stays None for the optional arrays
    (``bias``) and is a TypeError for every other one. The results may be the inputs themselves when
    they already qualify: callers must never write into them.
    """
    if dtype is None:
        # fast path: every array already a contiguous native float32/float64 ndarray of one dtype
        first = None
        for v in arrays.values():
            if v is not None:
                first = v.dtype if type(v) is np.ndarray else None
                break
        if first is not None and first in NATIVE_FLOATS and all(
                (v is None and k in _OPTIONAL_ARRAYS) or (v is not None and ready(v, first))
                for k, v in arrays.items()):
            return first, list(arrays.values())
    for k, v in arrays.items():
        if v is None and k not in _OPTIONAL_ARRAYS:
            raise type_fail(func, f"{k} must be an array, got None")
    raw = {k: (None if v is None else _to_array(func, k, v)) for k, v in arrays.items()}
    dt = np.dtype(dtype) if dtype is not None else result_dtype(func, **raw)
    if dtype is not None:
        for k, v in raw.items():
            if v is not None:
                _check_dtype(func, k, v.dtype)
    out = []
    for k, v in raw.items():
        if v is None:
            out.append(None)
        else:
            a = np.asarray(v, dtype=dt, order="C")  # keeps 0-d arrays 0-d (ascontiguousarray would not)
            if not a.flags.writeable:
                # the Cython kernels take (non-const) typed memoryviews, which refuse read-only
                # buffers: hand them a private copy (never written to either)
                a = a.copy()
            out.append(a)
    return dt, out


def check_spatial_rank(func, rank, expected=None):
    if not 1 <= rank <= 3:
        raise fail(func, f"supports 1, 2 or 3 spatial dimensions, got {rank}")
    if expected is not None and rank != expected:
        raise fail(func, f"expects {expected} spatial dimension(s), got {rank}")


def split_batch(func, x, rank, name="input"):
    """Check an ``(N, C, *spatial)`` or unbatched ``(C, *spatial)`` array of spatial rank ``rank``.

    Returns ``(x4, batched)`` where ``x4`` always has a batch axis.
    """
    if x.ndim == rank + 2:
        batched = True
    elif x.ndim == rank + 1:
        batched = False
        x = x[None]
    else:
        raise fail(func, f"{name} must have {rank + 1} (unbatched) or {rank + 2} (batched) dimensions "
                         f"for {rank} spatial dimension(s), got shape {tuple(x.shape)}")
    if x.size == 0:
        raise fail(func, f"{name} is empty (shape {tuple(x.shape) if batched else tuple(x.shape[1:])}); "
                         f"every dimension must be >= 1")
    return x, batched


def conv_output_size(in_size, k, s, d, pb, pa, ceil_mode=False):
    """floor((in + pb + pa - d*(k-1) - 1) / s) + 1 (or ceil with ceil_mode, torch's pooling rule)."""
    span = in_size + pb + pa - d * (k - 1) - 1
    if ceil_mode:
        out = max(0, -(-span // s) + 1)
        # torch: the last window must start inside the input or the left padding
        if (out - 1) * s >= in_size + pb:
            out -= 1
        return out
    return span // s + 1 if span >= 0 else 0


def resolve_padding(func, padding, in_sizes, kernel, stride, dilation, *, strings=_STRING_PADDINGS,
                    name="padding"):
    """Normalise every accepted padding form to a tuple of ``(before, after)`` pairs.

    Forms: int; tuple of ints (one per dim, symmetric); tuple of ``(before, after)`` pairs;
    ``"valid"`` (no padding); ``"same"`` (output ``ceil(in / stride)``, TensorFlow's SAME rule, the odd
    element after); ``"full"`` (``dilation * (k - 1)`` on both sides).
    """
    n = len(kernel)
    if isinstance(padding, str):
        p = padding.lower()
        if p not in strings:
            raise fail(func, f"{name} string must be one of {', '.join(map(repr, strings))}, got {padding!r}")
        if p == "valid":
            return ((0, 0),) * n
        if p == "full":
            return tuple((d * (k - 1), d * (k - 1)) for k, d in zip(kernel, dilation))
        pairs = []
        for i, k, s, d in zip(in_sizes, kernel, stride, dilation):
            out = -(-i // s)
            total = max(0, (out - 1) * s + d * (k - 1) + 1 - i)
            pairs.append((total // 2, total - total // 2))
        return tuple(pairs)
    if _is_int(padding):
        if padding < 0 or padding > _SSIZE_MAX:
            raise fail(func, f"{name} must be >= 0 and at most 2**63 - 1, got {padding!r}")
        return ((int(padding), int(padding)),) * n
    try:
        vals = tuple(padding)
    except TypeError:
        raise type_fail(func, f"{name} must be an int, a tuple, (before, after) pairs or one of "
                              f"{', '.join(map(repr, strings))}; got {padding!r}") from None
    if len(vals) != n:
        raise fail(func, f"{name} must have one entry per spatial dimension ({n}), got {padding!r}")
    pairs = []
    for v in vals:
        if _is_int(v):
            pairs.append((int(v), int(v)))
        else:
            try:
                b, a = v
            except (TypeError, ValueError):
                raise fail(func, f"{name} entries must be ints or (before, after) pairs, got {padding!r}") from None
            if not (_is_int(b) and _is_int(a)):
                raise type_fail(func, f"{name} entries must be ints or (before, after) pairs, got {padding!r}")
            pairs.append((int(b), int(a)))
    if any(b < 0 or a < 0 for b, a in pairs):
        raise fail(func, f"{name} must be >= 0, got {padding!r}")
    if any(b > _SSIZE_MAX or a > _SSIZE_MAX for b, a in pairs):
        raise fail(func, f"{name} must be at most 2**63 - 1 (a C index), got {padding!r}")
    return tuple(pairs)


@functools.lru_cache(maxsize=None)
def _memory_limit():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 46


def check_alloc(func, shape, dtype, what="output"):
    """Raise MemoryError (before allocating) if an array of this shape cannot exist here."""
    count = 1
    for s in shape:
        count *= int(s)
    nbytes = count * np.dtype(dtype).itemsize
    limit = _memory_limit()
    if count >= 2 ** 63 or nbytes > limit:
        raise MemoryError(f"{func}: {what} of shape {tuple(int(s) for s in shape)} and dtype "
                          f"{np.dtype(dtype)} would need {nbytes:,} bytes, more than this machine's "
                          f"{limit:,} bytes of memory")
    return nbytes


def prod(vals):
    return math.prod(vals)


class ConvGeom(tuple):
    """Spatial geometry of a convolution-like op (all tuples have one entry per spatial dim)."""
    __slots__ = ()
    _fields = ("in_sp", "kernel", "stride", "dilation", "pads", "out_sp")

    def __new__(cls, in_sp, kernel, stride, dilation, pads, out_sp):
        return tuple.__new__(cls, (in_sp, kernel, stride, dilation, pads, out_sp))

    in_sp = property(lambda self: self[0])
    kernel = property(lambda self: self[1])
    stride = property(lambda self: self[2])
    dilation = property(lambda self: self[3])
    pads = property(lambda self: self[4])
    out_sp = property(lambda self: self[5])

    @property
    def rank(self):
        return len(self[1])

    def as3d(self):
        """(insz, ksz, stride, dilation, pad_before, outsz) padded to 3 dims for the kernels."""
        one = (1,) * (3 - len(self[1]))
        return (one + self[0], one + self[1], one + self[2], one + self[3],
                (0,) * len(one) + tuple([b for b, _ in self[4]]), one + self[5])


def conv_geometry(func, in_sp, kernel, stride, padding, dilation, *, strings=_STRING_PADDINGS,
                  out_sp=None):
    """Cached :func:`_conv_geometry` (arguments given as ints, tuples and strings are hashable;
    lists and arrays are not, and are simply computed every time)."""
    if is_plain(stride) and is_plain(padding) and is_plain(dilation):
        return _conv_geometry_cached(func, tuple(in_sp), tuple(kernel), stride, padding, dilation,
                                     strings, None if out_sp is None else tuple(out_sp))
    return _conv_geometry(func, in_sp, kernel, stride, padding, dilation, strings=strings,
                          out_sp=out_sp)


def is_plain(v):
    """Exactly an int, a string, or a tuple (nested) of ints, strings and Nones: safe in a cache
    key -- no bool, float or array that would compare equal to an int. Loops, no generators: it
    runs on every call that repeats an earlier one."""
    t = type(v)
    if t is int or t is str:
        return True
    if t is not tuple:
        return False
    for e in v:
        te = type(e)
        if not (te is int or e is None or te is str or (te is tuple and is_plain(e))):
            return False
    return True


def remember(cache, key, value, limit=1024):
    """``cache[key] = value`` unless ``key`` is None (a call that was not cacheable); a cache
    that reached ``limit`` entries is emptied first (bounded memory for the repeat-call caches)."""
    if key is not None:
        if len(cache) >= limit:
            cache.clear()
        cache[key] = value


def plain_key(args):
    """``args`` followed by their types -- the cache key of a call that may repeat a validated one
    -- when every argument is None, a bool or plain (is_plain); else None (check the call in full).
    The types keep a bool from posing as an int at the top level; inside tuples bools are not
    plain at all."""
    for a in args:
        if a is not None and type(a) is not bool and not is_plain(a):
            return None
    return args + tuple(map(type, args))


@functools.lru_cache(maxsize=512)
def _conv_geometry_cached(func, in_sp, kernel, stride, padding, dilation, strings, out_sp):
    return _conv_geometry(func, in_sp, kernel, stride, padding, dilation, strings=strings,
                          out_sp=out_sp)


def _conv_geometry(func, in_sp, kernel, stride, padding, dilation, *, strings=_STRING_PADDINGS,
                   out_sp=None):
    """Normalise stride/dilation/padding for a convolution over spatial sizes ``in_sp``.

    The output sizes are computed (or, if ``out_sp`` is given, taken as they are: transposed
    convolution with output_padding). Raises if the dilated kernel is larger than the padded input.
    """
    rank = len(kernel)
    stride = ntuple(func, "stride", stride, rank, minimum=1)
    dilation = ntuple(func, "dilation", dilation, rank, minimum=1)
    pads = resolve_padding(func, padding, in_sp, kernel, stride, dilation, strings=strings)
    if out_sp is None:
        out = []
        for i, k, s, d, (pb, pa) in zip(in_sp, kernel, stride, dilation, pads):
            if i + pb + pa < d * (k - 1) + 1:
                raise fail(func, f"kernel size {tuple(kernel)} (dilation {tuple(dilation)}) is larger "
                                 f"than the padded input {tuple(ii + b + a for ii, (b, a) in zip(in_sp, pads))}")
            out.append(conv_output_size(i, k, s, d, pb, pa))
        out_sp = tuple(out)
    return ConvGeom(tuple(in_sp), tuple(kernel), stride, dilation, pads, tuple(out_sp))


def weight_rank(func, weight, name="weight", layout="(C_out, C_in/groups, *kernel)"):
    """Spatial rank of a convolution weight ``layout`` (1 to 3 kernel dims, non-empty)."""
    if not 3 <= weight.ndim <= 5:
        raise fail(func, f"{name} must have shape {layout} with 1 to 3 kernel dims, got shape "
                         f"{weight.shape} ({weight.ndim - 2} kernel dims)")
    rank = weight.ndim - 2
    if weight.size == 0:
        raise fail(func, f"{name} is empty (shape {weight.shape})")
    return rank
