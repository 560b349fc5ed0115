"""Tests of fastconv.unshared: unshared (locally connected) convolution, its adjoint and gradients.

The reference is a slow direct sum in pure NumPy (tests/ref_unshared.py); torch's unfold + einsum
formulation and its autograd are a second, independent reference where torch is installed.
"""
import os
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import fastconv
from fastconv import (unshared_conv, unshared_conv_grad_input, unshared_conv_grad_weight,
                      unshared_conv_transpose)
from fastconv import unshared as U

sys.path.insert(0, os.path.dirname(__file__))
from ref_unshared import (out_grid, pad_pairs, ref_unshared_conv,  # noqa: E402
                          ref_unshared_conv_grad_weight, ref_unshared_conv_transpose)

TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


def _layout(a, how):
    """The same values in another memory layout (the library must not care)."""
    if how == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if how == "byteswapped":
        return a.astype(a.dtype.newbyteorder(">"))
    if how == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    return a


@st.composite
def problems(draw):
    rank = draw(st.integers(1, 3))
    hi = {1: 9, 2: 7, 3: 5}[rank]
    kernel = tuple(draw(st.integers(1, 3 if rank < 3 else 2)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    if draw(st.booleans()):
        dilation = dilation[0]
    in_sp = tuple(draw(st.integers(1, hi)) for _ in range(rank))
    form = draw(st.sampled_from(["int", "tuple", "pairs", "valid", "same"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
    elif form == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(rank))
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(rank))
    else:
        padding = form
    dil = (dilation,) * rank if isinstance(dilation, int) else dilation
    pads = pad_pairs(padding, in_sp, kernel, stride, dil)
    assume(all(i + b + a >= d * (k - 1) + 1 for i, (b, a), k, d in zip(in_sp, pads, kernel, dil)))
    grid = out_grid(in_sp, kernel, stride, dil, pads)
    return dict(
        rank=rank, kernel=kernel, in_sp=in_sp, grid=grid,
        kw=dict(stride=stride if draw(st.booleans()) or len(set(stride)) > 1 else stride[0],
                padding=padding, dilation=dilation),
        N=draw(st.sampled_from([None, 1, 2, 3])),
        C_in=draw(st.integers(1, 3)), C_out=draw(st.integers(1, 3)),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        layout=draw(st.sampled_from(["c", "strided", "fortran", "reversed", "byteswapped",
                                     "readonly"])),
        bias=draw(st.sampled_from([None, "channel", "full"])),
        seed=draw(st.integers(0, 2 ** 31 - 1)),
    )


def _data(pb):
    rng = np.random.default_rng(pb["seed"])
    dt = pb["dtype"]
    lead = () if pb["N"] is None else (pb["N"],)
    x = rng.standard_normal(lead + (pb["C_in"],) + pb["in_sp"]).astype(dt)
    w = rng.standard_normal(pb["grid"] + (pb["C_out"], pb["C_in"]) + pb["kernel"]).astype(dt)
    gy = rng.standard_normal(lead + (pb["C_out"],) + pb["grid"]).astype(dt)
    b = None
    if pb["bias"] == "channel":
        b = rng.standard_normal(pb["C_out"]).astype(dt)
    elif pb["bias"] == "full":
        b = rng.standard_normal((pb["C_out"],) + pb["grid"]).astype(dt)
    return x, w, b, gy


# ---------------------------------------------------------------------------------------------
# against the direct-sum reference

@settings(deadline=None, max_examples=60)
@given(problems())
def test_matches_reference(pb):
    x, w, b, gy = _data(pb)
    kw = pb["kw"]
    xl = _layout(x, pb["layout"])
    x_before = x.copy()

    out = unshared_conv(xl, _layout(w, pb["layout"]), b, **kw)
    assert out.dtype == pb["dtype"]
    assert out.shape == gy.shape
    np.testing.assert_allclose(out, ref_unshared_conv(x, w, b, **kw), **TOL[pb["dtype"]])

    full_shape = x.shape
    gx = unshared_conv_grad_input(full_shape, w, _layout(gy, pb["layout"]), **kw)
    ref_gx = ref_unshared_conv_transpose(gy, w, pb["in_sp"], **kw)
    assert gx.shape == x.shape and gx.dtype == pb["dtype"]
    np.testing.assert_allclose(gx, ref_gx, **TOL[pb["dtype"]])
    gt = unshared_conv_transpose(gy, w, output_size=pb["in_sp"], **kw)
    np.testing.assert_array_equal(gt, gx)

    gw = unshared_conv_grad_weight(xl, w.shape, gy, **kw)
    assert gw.shape == w.shape and gw.dtype == pb["dtype"]
    np.testing.assert_allclose(gw, ref_unshared_conv_grad_weight(x, w.shape, gy, **kw),
                               **TOL[pb["dtype"]])
    np.testing.assert_array_equal(x, x_before)  # inputs are never modified


@settings(deadline=None, max_examples=30)
@given(problems())
def test_adjoint_identity(pb):
    """<unshared_conv(x, w), y> == <x, unshared_conv_transpose(y, w)> (float64)."""
    pb = dict(pb, dtype=np.float64)
    x, w, _, y = _data(pb)
    kw = pb["kw"]
    lhs = np.vdot(unshared_conv(x, w, **kw), y)
    rhs = np.vdot(x, unshared_conv_transpose(y, w, output_size=pb["in_sp"], **kw))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs), np.abs(x).sum() * np.abs(y).sum())


def test_reference_by_hand():
    """A case small enough to check on paper: each location has its own kernel."""
    x = np.arange(4.0).reshape(1, 4)
    w = np.zeros((3, 1, 1, 2))
    w[:, 0, 0] = [[1, 0], [0, 1], [1, 1]]
    np.testing.assert_array_equal(unshared_conv(x, w), [[0.0, 2.0, 5.0]])
    np.testing.assert_array_equal(unshared_conv(x, w, bias=[10.0]), [[10.0, 12.0, 15.0]])
    np.testing.assert_array_equal(unshared_conv(x, w, bias=[[1.0, 2.0, 3.0]]), [[1.0, 4.0, 8.0]])
    # 3 locations, kernel 2, padding 1, stride 2: windows [pad, 0], [1, 2], [3, pad]
    np.testing.assert_array_equal(unshared_conv(x, w, stride=2, padding=1), [[0.0, 2.0, 3.0]])
    # location 0 scatters [1, 0] onto x[0:2], location 1 [0, 1] onto x[1:3], location 2 [1, 1] onto x[2:4]
    np.testing.assert_array_equal(unshared_conv_transpose([[1.0, 1.0, 1.0]], w), [[1.0, 0.0, 2.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# relationships

@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding="same", dilation=2),
                                dict(padding="same", stride=3)])
def test_equal_kernels_is_conv(rank, kw):
    rng = np.random.default_rng(rank)
    in_sp = (9, 8, 7)[:rank]
    x = rng.standard_normal((2, 3) + in_sp)
    shared = rng.standard_normal((4, 3) + (3, 2, 3)[:rank])
    b = rng.standard_normal(4)
    expected = fastconv.conv(x, shared, b, **kw)
    grid = expected.shape[2:]
    w = np.broadcast_to(shared, grid + shared.shape)
    np.testing.assert_allclose(unshared_conv(x, w, b, **kw), expected, rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(expected.shape)
    np.testing.assert_allclose(unshared_conv_grad_input(x.shape, w, gy, **kw),
                               fastconv.conv_grad_input(x.shape, shared, gy, **kw),
                               rtol=1e-12, atol=1e-12)
    # the shared kernel's gradient is the sum of the per-location gradients
    gw = unshared_conv_grad_weight(x, w.shape, gy, **kw)
    np.testing.assert_allclose(gw.reshape((-1,) + shared.shape).sum(0),
                               fastconv.conv_grad_weight(x, shared.shape, gy, **kw),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kw, in_sp", [
    (dict(stride=2), (9,)), (dict(stride=3, padding=1), (11,)), (dict(padding="same", stride=2), (7,)),
    (dict(stride=(2, 1), dilation=(1, 2), padding=((0, 1), (2, 0))), (8, 9)),
])
def test_output_size_none_is_smallest_input(kw, in_sp):
    rng = np.random.default_rng(0)
    rank = len(in_sp)
    kernel = (3,) * rank
    x = rng.standard_normal((2, 2) + in_sp)
    grid = fastconv.conv(x, np.ones((1, 2) + kernel), **kw).shape[2:]
    w = rng.standard_normal(grid + (3, 2) + kernel)
    y = rng.standard_normal((2, 3) + grid)
    got = unshared_conv_transpose(y, w, **kw)
    # no smaller input has this output grid, and the result is the adjoint for that size
    small = got.shape[2:]
    for d in range(rank):
        smaller = small[:d] + (small[d] - 1,) + small[d + 1:]
        if smaller[d] >= 1:
            with pytest.raises(ValueError, match="grid"):
                unshared_conv_transpose(y, w, output_size=smaller, **kw)
    np.testing.assert_array_equal(got, unshared_conv_transpose(y, w, output_size=small, **kw))
    np.testing.assert_allclose(got, ref_unshared_conv_transpose(y, w, small, **kw), rtol=1e-12,
                               atol=1e-12)
    # an explicit larger forward size (stride > 1 leaves a choice) is honoured
    full = unshared_conv_transpose(y, w, output_size=(2, 2) + in_sp, **kw)
    assert full.shape == x.shape
    np.testing.assert_allclose(full, ref_unshared_conv_transpose(y, w, in_sp, **kw), rtol=1e-12,
                               atol=1e-12)


# ---------------------------------------------------------------------------------------------
# gradients against finite differences

@pytest.mark.parametrize("rank, kw", [
    (1, dict(stride=2, padding=1)), (2, dict(padding="same", dilation=(2, 1))),
    (3, dict(stride=(1, 2, 1), padding=((1, 0), 0, (0, 1)))),
])
def test_gradients_finite_differences(rank, kw):
    rng = np.random.default_rng(7)
    in_sp = (7, 6, 5)[:rank]
    kernel = (3, 2, 2)[:rank]
    x = rng.standard_normal((2, 2) + in_sp)
    grid = fastconv.conv(x, np.ones((1, 2) + kernel), **kw).shape[2:]
    w = rng.standard_normal(grid + (3, 2) + kernel)
    b = rng.standard_normal((3,) + grid)
    r = rng.standard_normal((2, 3) + grid)

    def loss(x_, w_, b_):
        return np.sum(unshared_conv(x_, w_, b_, **kw) * r)

    gx = unshared_conv_grad_input(x.shape, w, r, **kw)
    gw = unshared_conv_grad_weight(x, w.shape, r, **kw)
    eps = 1e-6
    for arr, grad in ((x, gx), (w, gw)):
        for flat in rng.choice(arr.size, size=12, replace=False):
            idx = np.unravel_index(flat, arr.shape)
            old = arr[idx]
            arr[idx] = old + eps
            up = loss(x, w, b)
            arr[idx] = old - eps
            down = loss(x, w, b)
            arr[idx] = old
            assert abs((up - down) / (2 * eps) - grad[idx]) < 1e-6 * max(1.0, abs(grad[idx]))
    # bias gradient: grad_output itself (full bias), summed over the batch
    idx = (1,) + tuple(g // 2 for g in grid)
    b2 = b.copy()
    b2[idx] += 1.0
    assert abs(loss(x, w, b2) - loss(x, w, b) - r[(slice(None),) + idx].sum()) < 1e-9


# ---------------------------------------------------------------------------------------------
# against torch (unfold + einsum, and its autograd)

def _torch_unshared(torch, x, w, stride, padding, dilation):
    grid = w.shape[:2]
    cols = torch.nn.functional.unfold(x, w.shape[4:], dilation=dilation, padding=padding,
                                      stride=stride)
    out = torch.einsum("nkl,lok->nol", cols, w.reshape(grid[0] * grid[1], w.shape[2], -1))
    return out.reshape(x.shape[0], w.shape[2], *grid)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, c_out, kernel, kw", [
    ((4, 16, 20, 18), 16, (3, 3), dict(stride=1, padding=0, dilation=1)),
    ((3, 5, 11, 9), 7, (3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))),
    ((1, 2, 6, 7), 3, (1, 3), dict(stride=3, padding=0, dilation=1)),
])
def test_against_torch(dtype, shape, c_out, kernel, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    grid = fastconv.conv(x, np.ones((1, shape[1]) + kernel, dtype), **kw).shape[2:]
    w = rng.standard_normal(grid + (c_out, shape[1]) + kernel).astype(dtype)
    gy = rng.standard_normal((shape[0], c_out) + grid).astype(dtype)
    tx = torch.from_numpy(x).requires_grad_(True)
    tw = torch.from_numpy(w).requires_grad_(True)
    tout = _torch_unshared(torch, tx, tw, **kw)
    tgx, tgw = torch.autograd.grad(tout, (tx, tw), torch.from_numpy(gy))
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(unshared_conv(x, w, **kw), tout.detach().numpy(), **tol)
    np.testing.assert_allclose(unshared_conv_grad_input(x.shape, w, gy, **kw), tgx.numpy(), **tol)
    np.testing.assert_allclose(unshared_conv_grad_weight(x, w.shape, gy, **kw), tgw.numpy(), **tol)


# ---------------------------------------------------------------------------------------------
# kernel paths: micro-kernel vs BLAS, batch chunks, threads

@pytest.fixture
def small_tiles(monkeypatch):
    """Tiny patch tiles: on the BLAS path the batch is cut into chunks of 16 (plus a remainder)."""
    monkeypatch.setattr(U, "_TILE_BYTES", 64)


@pytest.mark.parametrize("blas", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N", [1, 5, 37])
def test_paths_agree(blas, dtype, N, small_tiles):
    """The register-blocked micro-kernel and BLAS paths, full and partial vectors, batch chunks
    (N = 37 -> 32 + 5 on the micro-kernel, 16 + 16 + 5 on BLAS) and C_out not a multiple of the
    row block all match the reference."""
    kern = U._kernels()
    rng = np.random.default_rng(N)
    x = rng.standard_normal((N, 3, 7, 6)).astype(dtype)
    kw = dict(stride=(1, 2), padding=1)
    grid = out_grid((7, 6), (3, 3), (1, 2), (1, 1), [(1, 1), (1, 1)])
    w = rng.standard_normal(grid + (11, 3, 3, 3)).astype(dtype)
    gy = rng.standard_normal((N, 11) + grid).astype(dtype)
    old = kern._set_small_n(0 if blas else 32)
    try:
        out = unshared_conv(x, w, **kw)
        gx = unshared_conv_grad_input(x.shape, w, gy, **kw)
        gw = unshared_conv_grad_weight(x, w.shape, gy, **kw)
    finally:
        kern._set_small_n(old)
    tol = TOL[dtype]
    np.testing.assert_allclose(out, ref_unshared_conv(x, w, **kw), **tol)
    np.testing.assert_allclose(gx, ref_unshared_conv_transpose(gy, w, (7, 6), **kw), **tol)
    np.testing.assert_allclose(gw, ref_unshared_conv_grad_weight(x, w.shape, gy, **kw), **tol)


@pytest.mark.parametrize("shape, kernel, kw", [
    ((4, 3, 40), (5,), dict(dilation=2, padding=3)),                 # slabs along W only
    ((3, 2, 17, 15), (3, 3), dict(padding="same")),                   # slabs along H
    ((2, 2, 6, 5, 12), (2, 3, 3), dict(stride=(1, 1, 2), padding=1)),
])
def test_threads_deterministic(shape, kernel, kw):
    """Every thread count gives bit-identical results (no races in the scatter of grad_input)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    grid = fastconv.conv(x, np.ones((1, shape[1]) + kernel), **kw).shape[2:]
    w = rng.standard_normal(grid + (3, shape[1]) + kernel)
    gy = rng.standard_normal((shape[0], 3) + grid)
    results = []
    for n in (1, 2, 3, 4):
        with fastconv.threads(n):
            results.append((unshared_conv(x, w, **kw), unshared_conv_grad_input(x.shape, w, gy, **kw),
                            unshared_conv_grad_weight(x, w.shape, gy, **kw)))
    for res in results[1:]:
        for a, b in zip(results[0], res):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(results[0][1], ref_unshared_conv_transpose(gy, w, shape[2:], **kw),
                               rtol=1e-12, atol=1e-12)


@settings(deadline=None, max_examples=200)
@given(rank=st.integers(1, 3), data=st.data())
def test_scatter_schedule_never_collides(rank, data):
    """The adjoint's schedule, simulated as the kernel runs it: every output location in exactly
    one slab, and slabs of one phase (which run concurrently) touch disjoint input elements."""
    kernel = tuple(data.draw(st.integers(1, 5)) for _ in range(rank))
    stride = tuple(data.draw(st.integers(1, 4)) for _ in range(rank))
    dilation = tuple(data.draw(st.integers(1, 3)) for _ in range(rank))
    in_sp = tuple(data.draw(st.integers(d * (k - 1) + 1, 40))
                  for k, d in zip(kernel, dilation))
    geom = fastconv._args.conv_geometry("t", in_sp, kernel, stride, 0, dilation)
    plan = U._Plan(geom, 3, 2, 2, np.dtype(np.float64))
    axis, rows, phases = plan.slabs()
    O, k, s, d = plan.outsz[axis], plan.ksz[axis], plan.stride[axis], plan.dil[axis]
    nslab = -(-O // rows)
    seen = []
    for f in range(phases):
        owner = {}
        for u in range(-(-(nslab - f) // phases)):       # the kernel's prange over one phase
            slab = phases * u + f
            for o in range(slab * rows, min(O, (slab + 1) * rows)):
                seen.append(o)
                for kk in range(k):
                    i = o * s + kk * d
                    assert owner.setdefault(i, slab) == slab, (axis, rows, phases, i)
    assert sorted(seen) == list(range(O))


def test_dtypes():
    x = np.arange(2 * 6, dtype=np.int64).reshape(2, 6)
    w32 = np.ones((4, 1, 2, 3), np.float32)
    out = unshared_conv(x, w32)
    assert out.dtype == np.float64
    assert unshared_conv(x.astype(np.float32), w32).dtype == np.float32
    assert unshared_conv(x.astype(np.float32), w32, bias=np.zeros(1)).dtype == np.float64
    np.testing.assert_array_equal(out[0], [x[:, i:i + 3].sum() for i in range(4)])
    assert unshared_conv_grad_weight(x.astype(np.float32), w32.shape, out.astype(np.float32)).dtype \
        == np.float32
    with pytest.raises(TypeError, match="unshared_conv: .*float16"):
        unshared_conv(x.astype(np.float16), w32)
    with pytest.raises(TypeError, match="unshared_conv: weight"):
        unshared_conv(x, w32.astype(np.complex64))


# ---------------------------------------------------------------------------------------------
# bad input

def _ok():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((6, 6, 4, 3, 3, 3))


def test_bad_grid_states_both_shapes():
    x, w = _ok()
    with pytest.raises(ValueError, match=r"unshared_conv: weight has a location grid of \(6, 6\).*"
                                         r"output grid is \(3, 3\)"):
        unshared_conv(x, w, stride=2)
    with pytest.raises(ValueError, match=r"grid of \(6, 6\).*output grid is \(8, 8\)"):
        unshared_conv(x, w, padding="same")
    with pytest.raises(ValueError, match=r"unshared_conv_grad_input: weight has a location grid"):
        unshared_conv_grad_input((2, 3, 9, 8), w, np.zeros((2, 4, 6, 6)))
    with pytest.raises(ValueError, match=r"unshared_conv_grad_weight: weight_shape has a location grid"):
        unshared_conv_grad_weight(x, (5, 6, 4, 3, 3, 3), np.zeros((2, 4, 5, 6)))
    with pytest.raises(ValueError, match=r"unshared_conv_transpose: weight has a location grid of "
                                         r"\(6, 6\).*output grid is \(7, 6\)"):
        unshared_conv_transpose(np.zeros((2, 4, 6, 6)), w, output_size=(9, 8))


def test_bad_channels_and_bias():
    x, w = _ok()
    with pytest.raises(ValueError, match="unshared_conv: input has 2 channels but weight expects 3"):
        unshared_conv(x[:, :2], w)
    with pytest.raises(ValueError, match=r"unshared_conv: bias must have shape .*\(4,\).*\(4, 6, 6\)"
                                         r".*got \(3,\)"):
        unshared_conv(x, w, bias=np.zeros(3))
    with pytest.raises(ValueError, match=r"unshared_conv: bias .*got \(4, 6\)"):
        unshared_conv(x, w, bias=np.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"unshared_conv_transpose: input has shape \(2, 3, 6, 6\)"):
        unshared_conv_transpose(np.zeros((2, 3, 6, 6)), w)
    with pytest.raises(ValueError, match=r"unshared_conv_transpose: input has shape \(2, 4, 6, 5\)"):
        unshared_conv_transpose(np.zeros((2, 4, 6, 5)), w)
    with pytest.raises(ValueError, match="unshared_conv_grad_input: input_shape .* has 2 channels"):
        unshared_conv_grad_input((2, 2, 8, 8), w, np.zeros((2, 4, 6, 6)))
    with pytest.raises(ValueError, match="unshared_conv_grad_weight: input has 3 channels but "
                                         "weight_shape"):
        unshared_conv_grad_weight(x, (6, 6, 4, 2, 3, 3), np.zeros((2, 4, 6, 6)))


def test_bad_shapes_and_arguments():
    x, w = _ok()
    with pytest.raises(ValueError, match=r"unshared_conv: weight must have shape \(\*out_spatial"):
        unshared_conv(x, w[0])
    with pytest.raises(ValueError, match="unshared_conv: input must have 3 .* or 4"):
        unshared_conv(x[None], w)
    with pytest.raises(ValueError, match="unshared_conv: weight is empty"):
        unshared_conv(x, w[:, :, :0])
    with pytest.raises(ValueError, match="unshared_conv: input is empty"):
        unshared_conv(x[:0], w)
    with pytest.raises(ValueError, match="unshared_conv: padding string"):
        unshared_conv(x, w, padding="full")
    with pytest.raises(ValueError, match="unshared_conv: stride must be >= 1"):
        unshared_conv(x, w, stride=0)
    with pytest.raises(ValueError, match="unshared_conv: kernel size"):
        unshared_conv(x[..., :2, :2], np.zeros((1, 1, 4, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"unshared_conv_grad_input: grad_output has shape "
                                         r"\(2, 4, 6, 5\)"):
        unshared_conv_grad_input(x.shape, w, np.zeros((2, 4, 6, 5)))
    with pytest.raises(ValueError, match=r"unshared_conv_grad_input: grad_output has shape "
                                         r"\(3, 4, 6, 6\)"):
        unshared_conv_grad_input(x.shape, w, np.zeros((3, 4, 6, 6)))
    with pytest.raises(ValueError, match="unshared_conv_grad_input: input_shape .* is batched but "
                                         "grad_output .* is unbatched"):
        unshared_conv_grad_input(x.shape, w, np.zeros((4, 6, 6)))
    with pytest.raises(ValueError, match="unshared_conv_grad_input: input_shape must be"):
        unshared_conv_grad_input((8, 8), w, np.zeros((4, 6, 6)))
    with pytest.raises(ValueError, match="unshared_conv_grad_weight: input .* is unbatched"):
        unshared_conv_grad_weight(x[0], w.shape, np.zeros((2, 4, 6, 6)))
    with pytest.raises(ValueError, match="unshared_conv_transpose: output_size must have 2 entries"):
        unshared_conv_transpose(np.zeros((2, 4, 6, 6)), w, output_size=(1, 2, 3, 8, 8))
    with pytest.raises(TypeError, match="unshared_conv_transpose: output_size"):
        unshared_conv_transpose(np.zeros((2, 4, 6, 6)), w, output_size=(8.0, 8))


def test_irrelevant_huge_stride_and_dilation():
    """A stride with a single output, or a dilation with a kernel of 1, has no effect -- whatever
    its size up to a C ssize_t; beyond that it is a clean ValueError naming the argument (as for
    every op, via fastconv._args)."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 1, 1, 2, 2))
    np.testing.assert_array_equal(unshared_conv(x, w, stride=2 ** 63 - 1), [[[[0 + 1 + 4 + 5]]]])
    w1 = np.ones((4, 3, 1, 1, 1, 2))
    np.testing.assert_array_equal(unshared_conv(x, w1, dilation=(2 ** 62, 1)),
                                  unshared_conv(x, w1))
    np.testing.assert_array_equal(unshared_conv_grad_weight(x, w.shape, np.ones((1, 1, 1, 1)),
                                                            stride=2 ** 62), w * [[0, 1], [4, 5]])
    for kw in ({"stride": 2 ** 63}, {"dilation": (2 ** 70, 1)}):
        with pytest.raises(ValueError, match=r"^unshared_conv: (stride|dilation)"):
            unshared_conv(x, w1 if "dilation" in kw else w, **kw)


def test_unbatched_matches_batched():
    """(Not bitwise: a single sample takes the dot-product path, a batch the vector path.)"""
    x, w = _ok()
    b = np.arange(4.0)
    close = dict(rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(unshared_conv(x[1], w, b), unshared_conv(x, w, b)[1], **close)
    gy = np.random.default_rng(2).standard_normal((2, 4, 6, 6))
    gx1 = unshared_conv_grad_input(x.shape[1:], w, gy[1])
    np.testing.assert_allclose(gx1, unshared_conv_grad_input(x.shape, w, gy)[1], **close)
    np.testing.assert_array_equal(unshared_conv_transpose(gy[1], w, output_size=(8, 8)), gx1)
    np.testing.assert_allclose(unshared_conv_grad_weight(x[1], w.shape, gy[1]),
                               unshared_conv_grad_weight(x[1:], w.shape, gy[1:]), **close)
