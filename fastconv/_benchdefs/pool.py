"""Benchmark cases of the pooling family (issue 4): fastconv on NCHW against torch's faster path.

torch is timed on contiguous NCHW tensors and on ``channels_last`` tensors (converted before timing);
a comparison takes the faster of the two. ``bytes`` counts what the op must read and write.
"""
import numpy as np

from . import Case, try_torch

__all__ = ["CASES"]

SHAPE = (8, 64, 56, 56)


def _input(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _torch_pair(torch, x, fn):
    t = torch.from_numpy(x)
    tc = t.contiguous(memory_format=torch.channels_last)
    return {"NCHW": lambda: fn(t), "channels_last": lambda: fn(tc)}


def _forward_case(name, fc_fn, torch_fn, out_shape, torch_extra=None, shape=SHAPE, quick=True):
    """``torch_extra``: label -> fn(torch, t) of other torch ways to compute the same thing."""
    def setup():
        import fastconv
        x = _input(shape)
        res = {"fastconv": lambda: fc_fn(fastconv, x),
               "bytes": x.nbytes + int(np.prod(out_shape)) * 4, "flops": None}
        torch = try_torch()
        if torch is not None:
            F = torch.nn.functional
            res["torch"] = _torch_pair(torch, x, lambda t: torch_fn(F, t))
            t = torch.from_numpy(x)
            for label, fn in (torch_extra or {}).items():
                res["torch"][label] = (lambda fn=fn: fn(torch, t))
        return res
    return Case(name, "pool", setup, quick)


def _max_backward_setup():
    import fastconv
    x = _input()
    out, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    g = np.random.default_rng(1).standard_normal(out.shape, dtype=np.float32)
    res = {"fastconv": lambda: fastconv.max_pool_backward(g, idx, x.shape),
           # read grad (4 B) and index (8 B) per output, write the input-sized gradient
           "bytes": g.nbytes + idx.nbytes + x.nbytes, "flops": None}
    torch = try_torch()
    if torch is not None:
        F = torch.nn.functional
        res["torch"] = {}
        for label, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
            t = torch.from_numpy(x).contiguous(memory_format=fmt)
            o, i = F.max_pool2d(t, 3, 2, 1, return_indices=True)
            gt = torch.from_numpy(g).contiguous(memory_format=fmt)
            res["torch"][label] = (lambda gt=gt, t=t, i=i: torch.ops.aten.max_pool2d_with_indices_backward(
                gt, t, [3, 3], [2, 2], [1, 1], [1, 1], False, i))
    return res


def _avg_backward_setup():
    import fastconv
    x = _input()
    g = np.random.default_rng(1).standard_normal(fastconv.avg_pool2d(x, 2).shape, dtype=np.float32)
    res = {"fastconv": lambda: fastconv.avg_pool_backward(g, x.shape, 2),
           "bytes": g.nbytes + x.nbytes, "flops": None}
    torch = try_torch()
    if torch is not None:
        res["torch"] = {}
        for label, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
            t = torch.from_numpy(x).contiguous(memory_format=fmt)
            gt = torch.from_numpy(g).contiguous(memory_format=fmt)
            res["torch"][label] = (lambda gt=gt, t=t: torch.ops.aten.avg_pool2d_backward(
                gt, t, [2, 2], [2, 2], [0, 0], False, True, None))
    return res


HEAD = (8, 2048, 7, 7)        # ResNet-50's last feature map: many 7x7 planes
SMALL = (8, 512, 14, 14)      # small planes: pooled by groups of planes
N, C, H, W = SHAPE
CASES = [
    _forward_case("max_pool2d k3 s2 p1 8x64x56x56 f32",
                  lambda fc, x: fc.max_pool2d(x, 3, 2, 1),
                  lambda F, t: F.max_pool2d(t, 3, 2, 1), (N, C, 28, 28)),
    _forward_case("avg_pool2d k2 s2 8x64x56x56 f32",
                  lambda fc, x: fc.avg_pool2d(x, 2, 2),
                  lambda F, t: F.avg_pool2d(t, 2, 2), (N, C, 28, 28)),
    _forward_case("adaptive_avg_pool2d 7x7 8x64x56x56 f32",
                  lambda fc, x: fc.adaptive_avg_pool2d(x, 7),
                  lambda F, t: F.adaptive_avg_pool2d(t, 7), (N, C, 7, 7)),
    _forward_case("adaptive_max_pool2d 7x7 8x64x56x56 f32",
                  lambda fc, x: fc.adaptive_max_pool2d(x, 7),
                  lambda F, t: F.adaptive_max_pool2d(t, 7), (N, C, 7, 7)),
    _forward_case("global_avg_pool 8x64x56x56 f32",
                  lambda fc, x: fc.global_avg_pool(x),
                  lambda F, t: F.adaptive_avg_pool2d(t, 1), (N, C),
                  {"NCHW mean": lambda torch, t: t.mean((2, 3))}),
    _forward_case("global_max_pool 8x64x56x56 f32",
                  lambda fc, x: fc.global_max_pool(x),
                  lambda F, t: F.adaptive_max_pool2d(t, 1), (N, C),
                  {"NCHW amax": lambda torch, t: t.amax((2, 3))}),
    Case("max_pool2d backward k3 s2 p1 8x64x56x56 f32", "pool", _max_backward_setup),
    Case("avg_pool2d backward k2 s2 8x64x56x56 f32", "pool", _avg_backward_setup, False),
    _forward_case("global_avg_pool 8x2048x7x7 f32 (ResNet-50 head)",
                  lambda fc, x: fc.global_avg_pool(x),
                  lambda F, t: F.adaptive_avg_pool2d(t, 1), HEAD[:2],
                  {"NCHW mean": lambda torch, t: t.mean((2, 3))}, shape=HEAD, quick=False),
    _forward_case("global_max_pool 8x2048x7x7 f32",
                  lambda fc, x: fc.global_max_pool(x),
                  lambda F, t: F.adaptive_max_pool2d(t, 1), HEAD[:2],
                  {"NCHW amax": lambda torch, t: t.amax((2, 3))}, shape=HEAD, quick=False),
    _forward_case("max_pool2d k3 s2 p1 8x512x14x14 f32",
                  lambda fc, x: fc.max_pool2d(x, 3, 2, 1),
                  lambda F, t: F.max_pool2d(t, 3, 2, 1), SMALL[:2] + (7, 7), shape=SMALL, quick=False),
    _forward_case("avg_pool2d k2 s2 8x512x14x14 f32",
                  lambda fc, x: fc.avg_pool2d(x, 2),
                  lambda F, t: F.avg_pool2d(t, 2), SMALL[:2] + (7, 7), shape=SMALL, quick=False),
]
