"""Slow, obvious references for unshared convolution (pure NumPy direct sums)."""
import itertools

import numpy as np


def pad_pairs(padding, in_sp, kernel, stride, dilation):
    """(before, after) per dim for int / tuple / pairs / "valid" / "same" (TensorFlow SAME)."""
    n = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * n
        pairs = []
        for i, k, s, d in zip(in_sp, kernel, stride, dilation):
            out = -(-i // s)
            tot = max(0, (out - 1) * s + d * (k - 1) + 1 - i)
            pairs.append((tot // 2, tot - tot // 2))
        return pairs
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def out_grid(in_sp, kernel, stride, dilation, pads):
    return tuple((i + b + a - d * (k - 1) - 1) // s + 1
                 for i, k, s, d, (b, a) in zip(in_sp, kernel, stride, dilation, pads))


def _tup(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def ref_unshared_conv(x, w, bias=None, stride=1, padding=0, dilation=1):
    """out[n, co, o] = bias + sum_{ci, k} w[o, co, ci, k] * xpad[n, ci, o*s + k*d] by direct sums."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    rank = (w.ndim - 2) // 2
    unbatched = x.ndim == rank + 1
    if unbatched:
        x = x[None]
    grid = w.shape[:rank]
    C_out, C_in = w.shape[rank], w.shape[rank + 1]
    kernel = w.shape[rank + 2:]
    stride, dilation = _tup(stride, rank), _tup(dilation, rank)
    pads = pad_pairs(padding, x.shape[2:], kernel, stride, dilation)
    assert out_grid(x.shape[2:], kernel, stride, dilation, pads) == grid
    xp = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    N = x.shape[0]
    out = np.zeros((N, C_out) + grid)
    for o in itertools.product(*[range(g) for g in grid]):
        for k in itertools.product(*[range(kk) for kk in kernel]):
            idx = tuple(oi * s + ki * d for oi, ki, s, d in zip(o, k, stride, dilation))
            patch = xp[(slice(None), slice(None)) + idx]              # (N, C_in)
            wk = w[o + (slice(None), slice(None)) + k]                # (C_out, C_in)
            out[(slice(None), slice(None)) + o] += patch @ wk.T
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.ndim == 1:
            bias = bias.reshape((C_out,) + (1,) * rank)
        out += bias[None]
    return out[0] if unbatched else out


def ref_unshared_conv_transpose(y, w, in_sp, stride=1, padding=0, dilation=1):
    """The adjoint by direct scatter: xpad[n, ci, o*s + k*d] += w[o, co, ci, k] * y[n, co, o]."""
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    rank = (w.ndim - 2) // 2
    unbatched = y.ndim == rank + 1
    if unbatched:
        y = y[None]
    grid = w.shape[:rank]
    C_in = w.shape[rank + 1]
    kernel = w.shape[rank + 2:]
    stride, dilation = _tup(stride, rank), _tup(dilation, rank)
    pads = pad_pairs(padding, in_sp, kernel, stride, dilation)
    assert out_grid(in_sp, kernel, stride, dilation, pads) == grid
    N = y.shape[0]
    xp = np.zeros((N, C_in) + tuple(i + b + a for i, (b, a) in zip(in_sp, pads)))
    for o in itertools.product(*[range(g) for g in grid]):
        for k in itertools.product(*[range(kk) for kk in kernel]):
            idx = tuple(oi * s + ki * d for oi, ki, s, d in zip(o, k, stride, dilation))
            wk = w[o + (slice(None), slice(None)) + k]                # (C_out, C_in)
            xp[(slice(None), slice(None)) + idx] += y[(slice(None), slice(None)) + o] @ wk
    x = xp[(slice(None), slice(None)) + tuple(slice(b, b + i) for i, (b, _) in zip(in_sp, pads))]
    return x[0] if unbatched else x


def ref_unshared_conv_grad_weight(x, wshape, gy, stride=1, padding=0, dilation=1):
    """gw[o, co, ci, k] = sum_n gy[n, co, o] * xpad[n, ci, o*s + k*d]."""
    x = np.asarray(x, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    rank = (len(wshape) - 2) // 2
    if x.ndim == rank + 1:
        x, gy = x[None], gy[None]
    grid = tuple(wshape[:rank])
    kernel = tuple(wshape[rank + 2:])
    stride, dilation = _tup(stride, rank), _tup(dilation, rank)
    pads = pad_pairs(padding, x.shape[2:], kernel, stride, dilation)
    xp = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    gw = np.zeros(wshape)
    for o in itertools.product(*[range(g) for g in grid]):
        for k in itertools.product(*[range(kk) for kk in kernel]):
            idx = tuple(oi * s + ki * d for oi, ki, s, d in zip(o, k, stride, dilation))
            patch = xp[(slice(None), slice(None)) + idx]              # (N, C_in)
            g = gy[(slice(None), slice(None)) + o]                    # (N, C_out)
            gw[o + (slice(None), slice(None)) + k] = g.T @ patch
    return gw
