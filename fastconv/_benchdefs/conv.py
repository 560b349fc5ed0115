"""Convolution benchmark cases (the speed targets of the conv family)."""
import numpy as np

from . import Case, try_torch


def _torch_conv(torch, fn, x, w, channels_last, **kw):
    tx = torch.from_numpy(x)
    tw = torch.from_numpy(w)
    if channels_last:
        fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
        tx = tx.contiguous(memory_format=fmt)
        tw = tw.contiguous(memory_format=fmt)

    def run():
        with torch.no_grad():
            return fn(tx, tw, **kw)
    return run


def _as_2d(kw):
    """conv1d keyword arguments for the same problem as conv2d on (N, C, 1, L)."""
    out = dict(kw)
    for k, extra in (("stride", 1), ("dilation", 1), ("padding", 0)):
        v = kw.get(k)
        if v is not None and not isinstance(v, str):
            out[k] = (extra, int(np.ravel(v)[0]))
    return out


def _conv_case(name, xshape, wshape, dtype="float32", quick=True, transpose=False, **kw):
    def setup():
        import fastconv
        rng = np.random.default_rng(0)
        x = rng.standard_normal(xshape).astype(dtype)
        w = rng.standard_normal(wshape).astype(dtype)
        rank = len(wshape) - 2
        f = fastconv.conv_transpose if transpose else fastconv.conv
        out = f(x, w, **kw)
        if transpose:
            flops = 2.0 * np.prod(x.shape) * np.prod(wshape[1:])
        else:
            flops = 2.0 * np.prod(out.shape) * np.prod(wshape[1:])
        res = {"fastconv": lambda: f(x, w, **kw), "flops": flops,
               "bytes": float(x.nbytes + w.nbytes + out.nbytes)}
        torch = try_torch()
        if torch is not None:
            F = torch.nn.functional
            tf = {(1, False): F.conv1d, (2, False): F.conv2d, (3, False): F.conv3d,
                  (1, True): F.conv_transpose1d, (2, True): F.conv_transpose2d,
                  (3, True): F.conv_transpose3d}[(rank, transpose)]
            res["torch"] = {"NCHW": _torch_conv(torch, tf, x, w, False, **kw)}
            if rank >= 2:
                res["torch"]["channels_last"] = _torch_conv(torch, tf, x, w, True, **kw)
            elif not transpose:
                # torch has no 1-d channels_last, but its 2-d path on (N, C, 1, L) channels_last
                # tensors is its fastest conv1d (~2x its NCL conv1d): time that too
                res["torch"]["channels_last (as 2-d)"] = _torch_conv(
                    torch, F.conv2d, x[:, :, None], w[:, :, None], True, **_as_2d(kw))
        if xshape[:2] == (1, 1) and not transpose:
            try:
                import scipy.ndimage as ndi
                x0, w0 = x[0, 0], w[0, 0]
                res["scipy"] = {"ndimage.correlate": lambda: ndi.correlate(x0, w0, mode="constant")}
            except ImportError:
                pass
        return res
    return Case(name, "conv", setup, quick)


CASES = [
    _conv_case("conv2d f32 8x64x56x56 w64x64x3x3 p1", (8, 64, 56, 56), (64, 64, 3, 3), padding=1),
    _conv_case("conv2d f64 8x64x56x56 w64x64x3x3 p1", (8, 64, 56, 56), (64, 64, 3, 3), "float64",
               padding=1),
    _conv_case("conv1d f32 16x64x4096 k5", (16, 64, 4096), (64, 64, 5)),
    _conv_case("conv3d f32 2x16x16x32x32 k3", (2, 16, 16, 32, 32), (16, 16, 3, 3, 3)),
    _conv_case("conv_transpose2d f32 8x64x28x28 w64x64x4x4 s2 p1", (8, 64, 28, 28), (64, 64, 4, 4),
               transpose=True, stride=2, padding=1),
    _conv_case("depthwise conv2d f32 8x64x56x56 g64 3x3 p1", (8, 64, 56, 56), (64, 1, 3, 3),
               padding=1, groups=64),
    _conv_case("conv2d f32 1x1x512x512 3x3 (one channel)", (1, 1, 512, 512), (1, 1, 3, 3)),
]
