"""Winograd's minimal filtering algorithms F(m, r) for stride-1 convolution (Lavin & Gray, 2016).

Along one axis, m outputs of an r-tap correlation read a = m + r - 1 inputs d and cost m*r
multiplications directly; F(m, r) needs a: y = A^T [(G g) * (B^T d)]. Applied along every axis
(separable), a tile of m0 x m1 x m2 outputs costs a0*a1*a2 multiplications per channel pair
instead of m0*m1*m2 * r0*r1*r2; with many channels these become A = a0*a1*a2 independent
C_in x C_out matrix products, one per transform point, which go to BLAS (_conv.conv_forward_winograd).

The matrices are built here exactly (rational arithmetic, Toom-Cook): evaluation at the points
0, 1, -1, 2, -2, 1/2, ... and infinity. Linear convolution of the filter with an m-vector is
``V^-1 diag(G g) H``; correlation -- what a conv layer computes -- is its transpose, so
A^T = H^T, B^T = V^-T, and the rows of B^T are scaled to small integers with the scale moved into
G. Larger tiles save more multiplications but round worse (the transforms carry larger
coefficients), so the tile sizes are chosen per kernel size in ``M_FOR_R``: the errors stay at
the level of the direct sum's.
"""
import functools
import math
from fractions import Fraction

import numpy as np

__all__ = ["matrices", "tile_sizes", "plane_tile_sizes", "transform_weight", "M_FOR_R", "M_FOR_R_ONE_AXIS", "MIN_SAVING"]

_POINTS = [Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2),
           Fraction(-1, 2), Fraction(3), Fraction(-3), Fraction(1, 3), Fraction(-1, 3)]

#: output tile size m per kernel size r, for kernels with more than one axis longer than 1 (the
#: rounding errors of the axes compound) and for one such axis. Measured maximum error relative to
#: the largest output, float32, 64 channels (the im2col GEMM: 4e-7 to 8e-7): F(2, 3) x F(2, 3)
#: 3.5e-7 (its transforms hold only 0, +-1 and 1/2); F(4, 3) x F(4, 3) 7e-6, so not used;
#: F(4, 5) 1.7e-6 in 1-D, about twice the GEMM's 7.9e-7 (F(6, 5): 2e-5, not used).
M_FOR_R = {1: 1, 2: 2, 3: 2, 4: 2, 5: 2}
M_FOR_R_ONE_AXIS = {1: 1, 2: 2, 3: 2, 4: 2, 5: 4}
#: multiplications saved (direct / Winograd) below which the transforms cost more than they save
#: (measured: 2.25 for F(2x2, 3x3) gains 1.3x; 1.5 for F(2, 3) in 1-D and 2.0 for F(4, 3) gain nothing)
MIN_SAVING = 2.2


def _solve_inverse(m):
    n = len(m)
    a = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(m)]
    for c in range(n):
        piv = next(r for r in range(c, n) if a[r][c] != 0)
        a[c], a[piv] = a[piv], a[c]
        pv = a[c][c]
        a[c] = [v / pv for v in a[c]]
        for r in range(n):
            if r != c and a[r][c] != 0:
                f = a[r][c]
                a[r] = [x - f * y for x, y in zip(a[r], a[c])]
    return [row[n:] for row in a]


@functools.lru_cache(maxsize=None)
def matrices(m, r):
    """(A^T (m x a), G (a x r), B^T (a x a)) of F(m, r) as float64 arrays, a = m + r - 1."""
    a = m + r - 1
    if a == 1:
        one = np.ones((1, 1))
        return one, one, one
    pts = _POINTS[:a - 1]
    if len(pts) < a - 1:
        raise ValueError(f"F({m}, {r}) needs {a - 1} interpolation points, have {len(_POINTS)}")

    def evaluation(k):       # a x k: rows (1, p, p^2, ...) at each point, then infinity
        rows = [[p ** i for i in range(k)] for p in pts]
        rows.append([Fraction(int(i == k - 1)) for i in range(k)])
        return rows

    g, h, v = evaluation(r), evaluation(m), evaluation(a)
    vi = _solve_inverse(v)
    bt = [[vi[j][i] for j in range(a)] for i in range(a)]
    for i in range(a):
        den = math.lcm(*[x.denominator for x in bt[i]])
        ints = [int(x * den) for x in bt[i]]
        s = Fraction(math.gcd(*ints), den)
        bt[i] = [x / s for x in bt[i]]
        g[i] = [x * s for x in g[i]]
    at = [[h[j][i] for j in range(a)] for i in range(m)]
    return tuple(np.array([[float(x) for x in row] for row in mat]) for mat in (at, g, bt))


def tile_sizes(ksz):
    """Output tile (m0, m1, m2) for a 3-d kernel size, or None where no table entry fits or the
    multiplications saved fall below MIN_SAVING."""
    table = M_FOR_R_ONE_AXIS if sum(k > 1 for k in ksz) == 1 else M_FOR_R
    if any(k not in table for k in ksz):
        return None
    mtile = tuple(table[k] for k in ksz)
    direct = 1
    wino = 1
    for m, k in zip(mtile, ksz):
        direct *= m * k
        wino *= m + k - 1
    return mtile if direct >= MIN_SAVING * wino else None


def plane_tile_sizes(ksz):
    """Output tile (1, m1, m2) of the form that transforms only the H and W axes of a 3-d kernel
    and leaves its KD taps to the GEMM depth (few channels: a GEMM only C_in/groups deep is too
    shallow for BLAS), or None where KD is 1 or the plane's kernel 1 x 1, no table entry fits, or
    the multiplications saved on the (H, W) plane fall below MIN_SAVING."""
    if ksz[0] == 1 or max(ksz[1:]) == 1:
        return None
    plane = tile_sizes((1,) + tuple(ksz[1:]))
    return None if plane is None else (1,) + plane[1:]


@functools.lru_cache(maxsize=64)
def _transform_matrices(mtile, ksz, dtype_char, depth_direct):
    """(G0 x G1 x G2 in float64, flat B^T and flat A^T in the working dtype) of transform_weight
    (shared between calls: not to be written to)."""
    one = np.ones((1, 1))
    mats = [(one, one, one) if depth_direct and ax == 0 else matrices(m, r)
            for ax, (m, r) in enumerate(zip(mtile, ksz))]
    g0, g1, g2 = (mt[1] for mt in mats)
    # (G0 x G1 x G2), one A x kvol matrix (float64: wino_weight rounds each coefficient to the
    # working dtype), applied to every channel pair's kernel
    return (np.ascontiguousarray(np.kron(np.kron(g0, g1), g2), dtype=np.float64),
            np.concatenate([mt[2].ravel() for mt in mats]).astype(dtype_char),
            np.concatenate([mt[0].ravel() for mt in mats]).astype(dtype_char))


def transform_weight(w, groups, ksz, mtile, dtype, depth_direct=False, nthreads=1, alloc=None):
    """U (A, groups, C_in/groups, C_out/groups) = G g G^T per channel pair, plus the flat B^T and
    A^T matrices of the three axes (the kernel's wino_weight, on ``nthreads`` threads).
    ``alloc(n, dtype)``: where U and a weight-sized scratch array come from (default np.empty).

    ``depth_direct`` (``mtile`` (1, m1, m2), see plane_tile_sizes): the D axis is not transformed;
    U is (A_hw, groups, KD * C_in/groups, C_out/groups) with rows ordered (kd, c), and B^T, A^T
    of D are 1 x 1."""
    from ._core import _conv
    alloc = alloc or np.empty
    C_out, cig = w.shape[:2]
    cog = C_out // groups
    kron, bt, at = _transform_matrices(tuple(mtile), tuple(ksz), np.dtype(dtype).char, depth_direct)
    kdd = ksz[0] if depth_direct else 1
    # (groups, cog, cig * kvol) -> (groups, cig * kvol, cog): output channels last
    src = alloc(w.size, dtype)
    _conv.transpose_last2(np.ascontiguousarray(w, dtype).reshape(-1), src, groups, cog,
                          w.size // C_out, nthreads)
    u = alloc(len(kron) * kdd * cig * C_out, dtype)
    _conv.wino_weight(src, kron, u, groups * cig, kdd, groups, cig, cog, nthreads)
    return u.reshape(-1, groups, kdd * cig, cog), bt, at
