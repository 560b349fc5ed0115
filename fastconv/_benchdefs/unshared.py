"""Unshared convolution benchmark cases (the speed targets of issue 5).

Besides the protocol's keys, the 2-D cases return ``"baseline"``: label -> callable running
fastconv's *shared* conv2d of the same FLOP count (same input, one ``(C_out, C_in, *kernel)``
kernel), for the "within 3x of a shared convolution" target. Torch has no unshared convolution;
its comparison is the usual formulation ``unfold`` + ``einsum`` (forward) and autograd through it
(backward: the graph is built once, only the backward pass is timed).
"""
import numpy as np

from . import Case, try_torch


def _data(xshape, c_out, kernel, dtype, stride, padding, dilation):
    import fastconv
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xshape).astype(dtype)
    shared = rng.standard_normal((c_out, xshape[1]) + kernel).astype(dtype)
    # the grid from the shared convolution's output shape
    grid = fastconv.conv(x, shared, stride=stride, padding=padding, dilation=dilation).shape[2:]
    w = (rng.standard_normal(grid + (c_out, xshape[1]) + kernel)
         / np.sqrt(xshape[1] * np.prod(kernel))).astype(dtype)
    return x, w, shared, grid


def _torch_unfold_forward(torch, tx, tw, kernel, stride, padding, dilation):
    """out[n, o, l] = sum_k cols[n, k, l] * w[l, o, k]: torch's unfold + einsum formulation."""
    grid = tw.shape[:2]
    L, c_out = grid[0] * grid[1], tw.shape[2]
    w3 = tw.reshape(L, c_out, -1)
    cols = torch.nn.functional.unfold(tx, kernel, dilation=dilation, padding=padding, stride=stride)
    return torch.einsum("nkl,lok->nol", cols, w3).reshape(tx.shape[0], c_out, *grid)


def _case(name, xshape, c_out, kernel, dtype="float32", stride=1, padding=0, dilation=1,
          backward=False, quick=True):
    rank = len(kernel)

    def setup():
        import fastconv
        x, w, shared, grid = _data(xshape, c_out, kernel, dtype, stride, padding, dilation)
        kw = dict(stride=stride, padding=padding, dilation=dilation)
        N, K = xshape[0], xshape[1] * int(np.prod(kernel))
        P = int(np.prod(grid))
        flops = 2.0 * N * c_out * P * K
        if backward:
            gy = np.random.default_rng(1).standard_normal((N, c_out) + grid).astype(dtype)

            def run():
                return (fastconv.unshared_conv_grad_input(x.shape, w, gy, **kw),
                        fastconv.unshared_conv_grad_weight(x, w.shape, gy, **kw))

            def base():
                return (fastconv.conv_grad_input(x.shape, shared, gy, **kw),
                        fastconv.conv_grad_weight(x, shared.shape, gy, **kw))
            res = {"fastconv": run, "flops": 2 * flops,
                   "bytes": float(x.nbytes + 2 * w.nbytes + gy.nbytes + x.nbytes)}
        else:
            def run():
                return fastconv.unshared_conv(x, w, **kw)

            def base():
                return fastconv.conv(x, shared, **kw)
            res = {"fastconv": run, "flops": flops,
                   "bytes": float(x.nbytes + w.nbytes + N * c_out * P * x.itemsize)}
        res["baseline"] = {f"conv{rank}d same FLOPs": base}
        torch = try_torch() if rank == 2 else None
        if torch is not None:
            tx = torch.from_numpy(x)
            tw = torch.from_numpy(w)
            tkw = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
            if backward:
                tx = tx.clone().requires_grad_(True)
                tw = tw.clone().requires_grad_(True)
                out = _torch_unfold_forward(torch, tx, tw, **tkw)
                tgy = torch.from_numpy(gy)

                def trun():
                    return torch.autograd.grad(out, (tx, tw), tgy, retain_graph=True)
                res["torch"] = {"autograd(unfold+einsum)": trun}
            else:
                def trun():
                    with torch.no_grad():
                        return _torch_unfold_forward(torch, tx, tw, **tkw)
                res["torch"] = {"unfold+einsum": trun}
        return res
    return Case(name, "unshared", setup, quick)


def _shared_case(name, xshape, c_out, kernel, dtype="float32"):
    """fastconv's shared conv of the same FLOP count, listed beside the unshared cases."""
    def setup():
        import fastconv
        x, _, shared, grid = _data(xshape, c_out, kernel, dtype, 1, 0, 1)
        flops = 2.0 * xshape[0] * c_out * int(np.prod(grid)) * xshape[1] * int(np.prod(kernel))
        return {"fastconv": lambda: fastconv.conv(x, shared), "flops": flops,
                "bytes": float(x.nbytes + shared.nbytes + xshape[0] * c_out * np.prod(grid) * x.itemsize)}
    return Case(name, "unshared", setup, True)


# The target case: x 8x16x32x32, 30x30 grid, C_out 16, 3x3, float32.
TARGET = dict(xshape=(8, 16, 32, 32), c_out=16, kernel=(3, 3))

CASES = [
    _case("unshared_conv2d f32 8x16x32x32 grid30x30 C_out16 3x3", **TARGET),
    _case("unshared_conv2d backward f32 8x16x32x32 grid30x30 C_out16 3x3", **TARGET, backward=True),
    _shared_case("conv2d f32 8x16x32x32 w16x16x3x3 (same FLOPs as the unshared case)", **TARGET),
    _case("unshared_conv2d f64 8x16x32x32 grid30x30 C_out16 3x3", **TARGET, dtype="float64",
          quick=False),
    _case("unshared_conv2d f32 32x32x28x28 C_out32 3x3 s2 p1", (32, 32, 28, 28), 32, (3, 3), stride=2,
          padding=1, quick=False),
    _case("unshared_conv1d f32 16x32x512 C_out32 k5", (16, 32, 512), 32, (5,), quick=False),
    _case("unshared_conv3d f32 4x8x12x16x16 C_out8 3x3x3", (4, 8, 12, 16, 16), 8, (3, 3, 3), quick=False),
]
