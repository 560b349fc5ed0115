"""Slow, obviously-right pooling references in pure NumPy: one Python loop per output element.

Windows follow torch's CPU kernels literally: a window starts at ``o * stride - padding``; max pooling
scans the valid taps in row-major order, keeping the first maximum and letting any NaN replace the
current value; average pooling divides by the window clipped to the padded input
(count_include_pad), by the valid count, or by divisor_override.
"""
import itertools
import math

import numpy as np


def out_size(n, k, s, p, d, ceil_mode):
    span = n + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        o = -(-span // s) + 1
        if (o - 1) * s >= n + p:
            o -= 1
        return o
    return span // s + 1


def _taps(o, n, k, s, p, d):
    return [o * s - p + j * d for j in range(k) if 0 <= o * s - p + j * d < n]


def _batched(x, rank):
    return (x, True) if x.ndim == rank + 2 else (x[None], False)


def max_pool(x, kernel, stride, padding, dilation, ceil_mode):
    rank = len(kernel)
    x, batched = _batched(np.asarray(x, dtype=np.float64), rank)
    sp = x.shape[2:]
    osz = [out_size(n, k, s, p, d, ceil_mode) for n, k, s, p, d in zip(sp, kernel, stride, padding, dilation)]
    out = np.empty(x.shape[:2] + tuple(osz))
    ind = np.empty(x.shape[:2] + tuple(osz), dtype=np.int64)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        plane = x[n, c]
        for o in itertools.product(*map(range, osz)):
            taps = [_taps(oi, ni, k, s, p, d) for oi, ni, k, s, p, d in zip(o, sp, kernel, stride, padding, dilation)]
            best, bi = -np.inf, None
            for pos in itertools.product(*taps):
                v = plane[pos]
                if v > best or np.isnan(v):
                    best, bi = v, pos
            if bi is None:    # every tap -inf: torch's adjusted first tap (the first valid one)
                bi = tuple(oi * s - p + (-(-(p - oi * s) // d) * d if oi * s - p < 0 else 0)
                           for oi, s, p, d in zip(o, stride, padding, dilation))
            out[(n, c) + o] = best
            # no tap inside the input (dilation skips it): -1, "no element" (torch gives its
            # adjusted first tap there too, which lies outside the input or on an unrelated element)
            ind[(n, c) + o] = -1 if not all(taps) else sum(
                b * math.prod(sp[i + 1:]) for i, b in enumerate(bi))
    if not batched:
        out, ind = out[0], ind[0]
    return out, ind


def avg_pool(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    rank = len(kernel)
    x, batched = _batched(np.asarray(x, dtype=np.float64), rank)
    sp = x.shape[2:]
    osz = [out_size(n, k, s, p, 1, ceil_mode) for n, k, s, p in zip(sp, kernel, stride, padding)]
    out = np.empty(x.shape[:2] + tuple(osz))
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for o in itertools.product(*map(range, osz)):
            taps = [_taps(oi, ni, k, s, p, 1) for oi, ni, k, s, p in zip(o, sp, kernel, stride, padding)]
            total = sum(x[(n, c) + pos] for pos in itertools.product(*taps))
            if divisor_override is not None:
                div = divisor_override
            elif count_include_pad:
                div = math.prod(min(oi * s - p + k, ni + p) - (oi * s - p)
                                for oi, ni, k, s, p in zip(o, sp, kernel, stride, padding))
            else:
                div = math.prod(len(t) for t in taps)
            out[(n, c) + o] = total / div
    return out if batched else out[0]


def adaptive_regions(n, o):
    return [(i * n // o, -(-(i + 1) * n // o)) for i in range(o)]


def adaptive_pool(x, output_size, kind):
    rank = len(output_size)
    x, batched = _batched(np.asarray(x, dtype=np.float64), rank)
    sp = x.shape[2:]
    regions = [adaptive_regions(n, o) for n, o in zip(sp, output_size)]
    out = np.empty(x.shape[:2] + tuple(output_size))
    ind = np.empty(out.shape, dtype=np.int64)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for o in itertools.product(*map(range, output_size)):
            sl = [regions[i][oi] for i, oi in enumerate(o)]
            best, bi, total, cnt = -np.inf, None, 0.0, 0
            for pos in itertools.product(*[range(a, b) for a, b in sl]):
                v = x[(n, c) + pos]
                total += v
                cnt += 1
                if v > best or np.isnan(v):
                    best, bi = v, pos
            if kind == "max":
                out[(n, c) + o] = best
                ind[(n, c) + o] = np.ravel_multi_index(bi, sp)
            else:
                out[(n, c) + o] = total / cnt
    if not batched:
        out, ind = out[0], ind[0]
    return (out, ind) if kind == "max" else out


def lp_pool(x, p, kernel, stride, ceil_mode):
    """torch's definition: (avg_pool(x**p) * prod(kernel)) ** (1/p)."""
    a = avg_pool(np.power(np.asarray(x, dtype=np.float64), p), kernel, stride, (0,) * len(kernel),
                 ceil_mode, True, None)
    with np.errstate(invalid="ignore"):
        return np.power(a * math.prod(kernel), 1.0 / p)
