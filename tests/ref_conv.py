"""Slow, obviously-right references (direct sums over kernel offsets) for conv and its adjoint."""
import itertools

import numpy as np


def pad_pairs(x, pads, mode="zeros"):
    """Pad the spatial axes of (N, C, *sp) by (before, after) pairs."""
    npmode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    return np.pad(x, ((0, 0), (0, 0)) + tuple(pads), mode=npmode)


def _window(a, out_sp, stride, dilation):
    """The (padded) input positions kernel offset ``a`` meets over every output position."""
    return tuple(slice(a[i] * dilation[i], a[i] * dilation[i] + (out_sp[i] - 1) * stride[i] + 1, stride[i])
                 for i in range(len(a)))


def conv_ref(x, w, b=None, stride=None, pads=None, dilation=None, groups=1, mode="zeros"):
    """x (N, C_in, *sp), w (C_out, C_in/g, *k); pads as (before, after) pairs. float64 result."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    rank = w.ndim - 2
    stride = stride or (1,) * rank
    dilation = dilation or (1,) * rank
    pads = pads or ((0, 0),) * rank
    xp = pad_pairs(x, pads, mode)
    N, C_in = x.shape[:2]
    C_out, cig = w.shape[:2]
    cog = C_out // groups
    k = w.shape[2:]
    out_sp = tuple((xp.shape[2 + i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(rank))
    out = np.zeros((N, C_out) + out_sp)
    for o in range(C_out):
        g = o // cog
        for c in range(cig):
            for a in itertools.product(*[range(kk) for kk in k]):
                sl = _window(a, out_sp, stride, dilation)
                out[:, o] += w[(o, c) + a] * xp[(slice(None), g * cig + c) + sl]
    if b is not None:
        out += np.asarray(b, np.float64).reshape((1, C_out) + (1,) * rank)
    return out


def conv_transpose_ref(y, w, in_sp, stride=None, pads=None, dilation=None, groups=1):
    """Adjoint of conv_ref (zeros padding) onto an input of spatial size in_sp: scatter-add."""
    y = np.asarray(y, np.float64)
    w = np.asarray(w, np.float64)
    rank = w.ndim - 2
    stride = stride or (1,) * rank
    dilation = dilation or (1,) * rank
    pads = pads or ((0, 0),) * rank
    N = y.shape[0]
    C_out, cig = w.shape[:2]
    cog = C_out // groups
    C_in = cig * groups
    k = w.shape[2:]
    out_sp = y.shape[2:]
    padded = tuple(in_sp[i] + pads[i][0] + pads[i][1] for i in range(rank))
    # room for windows reaching past the padded input (output_padding beyond the conv's reach)
    big = tuple(max(padded[i], (out_sp[i] - 1) * stride[i] + dilation[i] * (k[i] - 1) + 1) for i in range(rank))
    xp = np.zeros((N, C_in) + big)
    for o in range(C_out):
        g = o // cog
        for c in range(cig):
            for a in itertools.product(*[range(kk) for kk in k]):
                sl = _window(a, out_sp, stride, dilation)
                xp[(slice(None), g * cig + c) + sl] += w[(o, c) + a] * y[:, o]
    crop = tuple(slice(pads[i][0], pads[i][0] + in_sp[i]) for i in range(rank))
    return xp[(slice(None), slice(None)) + crop]


def conv_grad_weight_ref(x, gy, w_shape, stride=None, pads=None, dilation=None, groups=1):
    """d/dw of <conv_ref(x, w), gy> (zeros padding): one dot product per kernel offset. float64."""
    x = np.asarray(x, np.float64)
    gy = np.asarray(gy, np.float64)
    rank = len(w_shape) - 2
    stride = stride or (1,) * rank
    dilation = dilation or (1,) * rank
    pads = pads or ((0, 0),) * rank
    xp = pad_pairs(x, pads)
    C_out, cig = w_shape[:2]
    cog = C_out // groups
    k = w_shape[2:]
    out_sp = gy.shape[2:]
    gw = np.zeros(w_shape)
    for o in range(C_out):
        g = o // cog
        for c in range(cig):
            for a in itertools.product(*[range(kk) for kk in k]):
                sl = _window(a, out_sp, stride, dilation)
                gw[(o, c) + a] = np.sum(gy[:, o] * xp[(slice(None), g * cig + c) + sl])
    return gw
