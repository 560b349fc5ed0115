"""Matrix-form benchmark cases: convolution versus the same linear map as a scipy.sparse or dense
matrix (the lecture's comparison), and the cost of building the sparse matrix.

The comparison labels live under ``"scipy"`` (``scipy.sparse`` CSR matvec, NumPy dense matvec), so
``python -m fastconv.bench`` reports them as "scipy / fastconv" ratios: above 1 means convolution
is faster than multiplying by the matrix.
"""
import numpy as np

from . import Case, try_torch

#: the lecture's edge detector: a 2 wide by 1 high kernel [-1, 1]
EDGE = np.array([[[[-1.0, 1.0]]]], dtype=np.float32)


def synthetic_image(height, width, seed=0):
    """A deterministic float32 test image with edges in every direction (shapes on a gradient).

    >>> synthetic_image(280, 320).shape
    (280, 320)
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= max(height - 1, 1)
    xx /= max(width - 1, 1)
    img = 0.25 + 0.25 * xx                                             # soft horizontal gradient
    img += 0.4 * (((xx - 0.32) ** 2 + (yy - 0.45) ** 2) < 0.05)        # a disc
    img += 0.3 * ((abs(xx - 0.72) < 0.12) & (abs(yy - 0.6) < 0.25))   # a rectangle
    img += 0.2 * ((xx + yy > 1.35) & (xx + yy < 1.45))                 # a diagonal band
    img += 0.1 * (np.sin(xx * 40.0) > 0.9) * (yy < 0.2)                # thin vertical stripes
    img += 0.02 * np.random.default_rng(seed).standard_normal((height, width))
    return img.astype(np.float32)


def _edge_case(name, height, width, dense):
    def setup():
        import fastconv
        x = synthetic_image(height, width)[None]
        xf = x.ravel()
        w = EDGE
        out = fastconv.conv(x, w)
        res = {"fastconv": lambda: fastconv.conv(x, w),
               "flops": 3.0 * out.size, "bytes": float(x.nbytes + out.nbytes)}
        if dense:
            D = fastconv.conv_matrix(x.shape, w, format="dense", max_bytes=2 ** 28)
            res["scipy"] = {"dense matvec (numpy)": lambda: D @ xf}
        else:
            M = fastconv.conv_matrix(x.shape, w, format="csr")
            res["scipy"] = {"scipy.sparse CSR matvec": lambda: M @ xf}
        torch = try_torch()
        if torch is not None:
            tx, tw = torch.from_numpy(x[None]), torch.from_numpy(w)

            def run():
                with torch.no_grad():
                    return torch.nn.functional.conv2d(tx, tw)
            res["torch"] = {"conv2d": run}
        return res
    return Case(name, "matrix", setup, True)


def _build_case(name, side):
    def setup():
        import fastconv
        w = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
        shape = (1, side, side)
        return {"fastconv": lambda: fastconv.conv_matrix(shape, w, padding=1),
                "flops": None,
                "bytes": float(fastconv.efficiency(shape, (3, 3), padding=1)["sparse matrix"]["bytes"])}
    return Case(name, "matrix", setup, True)


CASES = [
    _edge_case("matrix: edge 1x280x320 k1x2, conv vs CSR matvec", 280, 320, dense=False),
    _edge_case("matrix: edge 1x64x64 k1x2, conv vs dense matvec", 64, 64, dense=True),
    _build_case("matrix: conv_matrix CSR build 1x1024x1024 k3x3 p1", 1024),
]
