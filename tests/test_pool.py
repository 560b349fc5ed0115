"""Pooling family (fastconv/pool.py): against the slow NumPy reference (tests/ref_pool.py), against
torch where installed, finite differences for the backward passes, the lecture's properties (small
shift invariance of max pooling, fixed output size of adaptive pooling) and bad input."""
import contextlib
import itertools
import math
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import fastconv as fc
from ref_pool import adaptive_pool, avg_pool, lp_pool, max_pool, out_size

RNG = np.random.default_rng(1234)


def _close(a, b, dtype):
    tol = 2e-5 if np.dtype(dtype) == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, equal_nan=True)


@contextlib.contextmanager
def _row_kernels():
    """Pool small planes with the per-plane row kernels instead of groups of planes (pool.py's
    GROUP_PLANE_MAX and GROUP_BACKWARD_PLANE_MAX; whole-plane windows still go to global pooling).
    Stored plans are set aside."""
    mod = sys.modules["fastconv.pool"]
    saved = mod.GROUP_PLANE_MAX, mod.GROUP_BACKWARD_PLANE_MAX, dict(mod._PLANS)
    mod.GROUP_PLANE_MAX = mod.GROUP_BACKWARD_PLANE_MAX = 0
    mod._PLANS.clear()
    try:
        yield
    finally:
        mod.GROUP_PLANE_MAX, mod.GROUP_BACKWARD_PLANE_MAX = saved[:2]
        mod._PLANS.clear()
        mod._PLANS.update(saved[2])


def _both_paths(f):
    """f() by groups of planes (the default for these small planes) and by the row kernels."""
    a = f()
    with _row_kernels():
        b = f()
    return a, b


# ----------------------------------------------------------------------------------------------
# randomized comparison with the reference

@st.composite
def pool_problem(draw, with_dilation=True):
    rank = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank)) if with_dilation else (1,) * rank
    ceil_mode = draw(st.booleans())
    size = tuple(draw(st.integers(1, 7 if rank < 3 else 5)) for _ in range(rank))
    assume(all(out_size(n, k, s, p, d, ceil_mode) >= 1
               for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)))
    batched = draw(st.booleans())
    lead = (draw(st.integers(1, 2)), draw(st.integers(1, 3))) if batched else (draw(st.integers(1, 3)),)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    layout = draw(st.sampled_from(["c", "fortran", "reversed", "strided"]))
    x = RNG.standard_normal(lead + size).astype(dtype)
    if draw(st.booleans()):        # ties (ReLU-like zeros) and repeated values
        x = np.maximum(np.round(x), 0).astype(dtype)
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "reversed":
        x = x[..., ::-1].copy()[..., ::-1]
    elif layout == "strided":
        big = np.zeros(lead + tuple(2 * n for n in size), dtype)
        big[(...,) + tuple(slice(None, None, 2) for _ in size)] = x
        x = big[(...,) + tuple(slice(None, None, 2) for _ in size)]
    return x, kernel, stride, padding, dilation, ceil_mode


@settings(deadline=None, max_examples=60)
@given(pool_problem())
def test_max_pool_matches_reference(prob):
    x, k, s, p, d, ceil_mode = prob
    before = x.copy()
    ref, ref_idx = max_pool(x, k, s, p, d, ceil_mode)
    for (out, idx), values in zip(_both_paths(lambda: fc.max_pool(x, k, s, p, d, ceil_mode,
                                                                  return_indices=True)),
                                  _both_paths(lambda: fc.max_pool(x, k, s, p, d, ceil_mode))):
        assert out.dtype == x.dtype and idx.dtype == np.int64
        np.testing.assert_array_equal(out, ref.astype(x.dtype))
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(values, out)
    np.testing.assert_array_equal(x, before)


@settings(deadline=None, max_examples=60)
@given(pool_problem(with_dilation=False), st.booleans(), st.sampled_from([None, 1, 3, -2]))
def test_avg_pool_matches_reference(prob, count_include_pad, divisor_override):
    x, k, s, p, _, ceil_mode = prob
    ref = avg_pool(x, k, s, p, ceil_mode, count_include_pad, divisor_override)
    for out in _both_paths(lambda: fc.avg_pool(x, k, s, p, ceil_mode, count_include_pad,
                                               divisor_override)):
        assert out.dtype == x.dtype
        _close(out, ref, x.dtype)


@settings(deadline=None, max_examples=30)
@given(pool_problem(with_dilation=False), st.sampled_from([1, 2, 3, 1.5]))
def test_lp_pool_matches_reference(prob, p):
    x, k, s, _, _, ceil_mode = prob
    assume(all(n >= kk for n, kk in zip(x.shape[-len(k):], k)))
    x = np.abs(x) + 0.1
    _close(fc.lp_pool(x, p, k, s, ceil_mode), lp_pool(x, p, k, s, ceil_mode), x.dtype)


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 3), st.data())
def test_adaptive_matches_reference(rank, data):
    size = tuple(data.draw(st.integers(1, 9 if rank < 3 else 5)) for _ in range(rank))
    osz = tuple(data.draw(st.integers(1, 6)) for _ in range(rank))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    x = RNG.standard_normal((2, 3) + size).astype(dtype)
    if data.draw(st.booleans()):
        x = np.maximum(np.round(x), 0).astype(dtype)
    ref, ref_idx = adaptive_pool(x, osz, "max")
    for (out, idx), values, avg in zip(
            _both_paths(lambda: fc.adaptive_max_pool(x, osz, return_indices=True)),
            _both_paths(lambda: fc.adaptive_max_pool(x, osz)),
            _both_paths(lambda: fc.adaptive_avg_pool(x, osz))):
        np.testing.assert_array_equal(out, ref.astype(dtype))
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(values, out)
        _close(avg, adaptive_pool(x, osz, "avg"), dtype)


def test_rank_specific_names_and_unbatched():
    x = RNG.standard_normal((2, 3, 6, 7, 5))
    for rank in (1, 2, 3):
        xr = x[(slice(None), slice(None)) + (0,) * (3 - rank)]
        k = (2,) * rank
        for name, generic in (("max_pool", fc.max_pool), ("avg_pool", fc.avg_pool)):
            f = getattr(fc, f"{name}{rank}d")
            np.testing.assert_array_equal(f(xr, 2), generic(xr, k))
            np.testing.assert_array_equal(f(xr[0], 2), generic(xr, k)[0])
        np.testing.assert_array_equal(getattr(fc, f"lp_pool{rank}d")(np.abs(xr), 2, 2),
                                      fc.lp_pool(np.abs(xr), 2, k))
        for name in ("adaptive_max_pool", "adaptive_avg_pool"):
            f = getattr(fc, f"{name}{rank}d")
            np.testing.assert_array_equal(f(xr[0], 3), getattr(fc, name)(xr, (3,) * rank)[0])


def test_nan_wins_and_index_rules():
    x = np.array([[[1.0, np.nan, 5.0, np.nan, 2.0, 7.0]]])
    out, idx = fc.max_pool1d(x, 3, 3, return_indices=True)
    assert np.isnan(out[0, 0, 0]) and np.isnan(out[0, 0, 1])
    np.testing.assert_array_equal(idx[0, 0], [1, 3])
    ties = np.zeros((1, 1, 4, 4))
    out, idx = fc.max_pool2d(ties, 2, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [8, 10]])   # first maximum in row-major order
    cross = np.array([[[[0.0, 5.0], [5.0, 1.0]]]])    # equal maxima at (0, 1) and (1, 0)
    assert fc.max_pool2d(cross, 2, return_indices=True)[1].item() == 1
    assert fc.adaptive_max_pool2d(cross[0], 1, return_indices=True)[1].item() == 1
    neg = np.full((1, 1, 3, 3), -np.inf)
    out, idx = fc.max_pool2d(neg, 2, 1, padding=1, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1, 2], [0, 0, 1, 2], [3, 3, 4, 5], [6, 6, 7, 8]])
    np.testing.assert_array_equal(fc.global_max_pool(np.array([[[1.0, np.nan, 3.0]]])).shape, (1, 1))
    assert np.isnan(fc.global_max_pool(np.array([[[1.0, np.nan, 3.0]]]))[0, 0])
    assert np.isnan(fc.adaptive_max_pool1d(np.array([[1.0, np.nan, 3.0, 4.0]]), 2)[0, 0])


def test_window_without_valid_tap():
    # dilation can make a window skip the whole input: torch gives -inf and its first (adjusted) tap
    x = np.full((1, 1, 1, 3, 3), 0.5)
    out, idx = fc.max_pool3d(x, (2, 1, 1), padding=(1, 0, 0), dilation=(2, 1, 1), stride=1,
                             return_indices=True)
    ref, ref_idx = max_pool(x, (2, 1, 1), (1, 1, 1), (1, 0, 0), (2, 1, 1), False)
    assert np.all(np.isneginf(out))
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(fc.max_pool3d(x, (2, 1, 1), 1, (1, 0, 0), (2, 1, 1)), out)


def test_global_pool():
    x = RNG.standard_normal((3, 4, 5, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(fc.global_max_pool(x), x.max(axis=(2, 3, 4)))
    _close(fc.global_avg_pool(x), x.astype(np.float64).mean(axis=(2, 3, 4)), np.float32)
    big = RNG.standard_normal((1, 1, 70001))       # one plane: split across threads
    np.testing.assert_allclose(fc.global_avg_pool(big), big.mean(axis=2), rtol=1e-12)
    assert fc.global_max_pool(big)[0, 0] == big.max()
    assert fc.global_avg_pool(np.ones((4, 10))).shape == (4,)
    assert fc.global_max_pool(np.arange(6).reshape(1, 2, 3)).dtype == np.float64


@pytest.mark.parametrize("shape, dtype", [((1, 1, 301, 275), np.float32), ((1, 100003), np.float64),
                                          ((1, 2, 200001), np.float32)])
def test_global_pool_same_bits_for_any_thread_count_and_batch(shape, dtype):
    """Planes split across threads (fewer planes than threads) are summed in fixed chunks, added
    in order: the mean is bitwise the same on 1, 2 or 3 threads and batched or alone (the split
    once followed the thread count: 301 x 275 float32 gave ...9106749 on one thread and
    ...4450136 on two)."""
    x = RNG.standard_normal(shape).astype(dtype)
    res = {}
    for nt in (1, 2, 3):
        with fc.threads(nt):
            res[nt] = fc.global_avg_pool(x), fc.global_max_pool(x)
    for nt in (2, 3):
        np.testing.assert_array_equal(res[nt][0], res[1][0])
        np.testing.assert_array_equal(res[nt][1], res[1][1])
    with fc.threads(2):
        np.testing.assert_array_equal(fc.global_avg_pool(np.concatenate([x, x] * 2))[:len(x)],
                                      res[1][0])
    ref = x.astype(np.float64).mean(axis=tuple(range(1 if x.ndim == 2 else 2, x.ndim)))
    _close(res[1][0], ref, dtype)


def test_dtypes_and_no_aliasing():
    x = np.arange(16, dtype=np.int32).reshape(1, 1, 4, 4)
    out = fc.max_pool2d(x, 1)
    assert out.dtype == np.float64
    xf = np.arange(16.0).reshape(1, 1, 4, 4)
    y = fc.avg_pool2d(xf, 1)
    assert not np.shares_memory(y, xf)
    np.testing.assert_array_equal(y, xf)
    ro = np.arange(16.0, dtype=">f4").reshape(1, 1, 4, 4)
    ro.setflags(write=False)
    np.testing.assert_array_equal(fc.max_pool2d(ro, 2), [[[[5, 7], [13, 15]]]])


def test_threads_and_row_split_agree():
    x = RNG.standard_normal((1, 1, 33, 47)).astype(np.float32)   # fewer planes than threads
    with fc.threads(1):
        a = fc.max_pool2d(x, 3, 2, 1, return_indices=True)
        b = fc.avg_pool2d(x, 3, 2, 1)
    with fc.threads(4):
        c = fc.max_pool2d(x, 3, 2, 1, return_indices=True)
        d = fc.avg_pool2d(x, 3, 2, 1)
    np.testing.assert_array_equal(a[0], c[0])
    np.testing.assert_array_equal(a[1], c[1])
    np.testing.assert_array_equal(b, d)


def test_row_chunks_are_private_to_their_thread():
    """Fewer planes than threads: tasks are (plane, chunk of output rows), each thread computing
    its own chunk bounds. Repeated many times with more threads than cores (preemption between a
    thread's bounds and its loop is what exposes bounds shared between threads), every path gives
    the single-threaded result."""
    x = RNG.standard_normal((1, 1, 96, 70)).astype(np.float32)
    calls = [lambda: fc.max_pool2d(x, 3, 2, 1), lambda: fc.max_pool2d(x, 3, 2, 1, return_indices=True)[1],
             lambda: fc.avg_pool2d(x, 2), lambda: fc.avg_pool2d(x, 3, 1, 1), lambda: fc.max_pool2d(x, 5),
             lambda: fc.adaptive_avg_pool2d(x, (12, 7))]
    with fc.threads(1):
        want = [f() for f in calls]
    with fc.threads(8):
        for _ in range(60):
            for f, w in zip(calls, want):
                np.testing.assert_array_equal(f(), w)


# ----------------------------------------------------------------------------------------------
# the lecture's properties

def test_max_pool_small_shift_invariance():
    # a detector-like signal: a strong response every 4 samples over a weak, varying background;
    # shifting it by one changes every input value ...
    rng = np.random.default_rng(7)
    x = rng.uniform(0.0, 0.5, 64)
    x[1::4] = rng.uniform(1.0, 2.0, 16)
    shifted = np.roll(x, 1)
    assert np.count_nonzero(x != shifted) == x.size
    for stride in (1, 2):
        a = fc.max_pool1d(x[None], 3, stride)[0]
        b = fc.max_pool1d(shifted[None], 3, stride)[0]
        # ... but only about half of the pooled values (width 3, stride 1 and 2)
        assert np.count_nonzero(a != b) <= 0.55 * a.size
        # and the strong responses survive the shift where they are the window maximum
        same = a == b
        assert np.all(a[same] >= 1.0)
    # 2-D: the same signal along rows
    img = np.tile(x, (8, 1))[None]
    a = fc.max_pool2d(img, 3, 2)
    b = fc.max_pool2d(np.roll(img, 1, axis=-1), 3, 2)
    assert np.count_nonzero(a != b) <= 0.55 * a.size


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_adaptive_output_shape_is_fixed(rank):
    osz = (3, 4, 2)[:rank]
    for n in (5, 8, 13, 21):
        x = RNG.standard_normal((2, 3) + (n,) * rank)
        assert fc.adaptive_avg_pool(x, osz).shape == (2, 3) + osz
        assert fc.adaptive_max_pool(x, osz).shape == (2, 3) + osz
    x = RNG.standard_normal((2, 3) + (7,) * rank)
    keep = (None,) + osz[1:]
    assert fc.adaptive_avg_pool(x, keep).shape == (2, 3, 7) + osz[1:]


# ----------------------------------------------------------------------------------------------
# backward

def _fd_grad(f, x, g, eps=1e-6):
    """Numerical gradient of <f(x), g> with respect to x (central differences)."""
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp = x.copy()
        xp[i] += eps
        xm = x.copy()
        xm[i] -= eps
        out[i] = (np.sum(f(xp) * g) - np.sum(f(xm) * g)) / (2 * eps)
    return out


@pytest.mark.parametrize("kw", [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=1, padding=(1, 0), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=5),
])
def test_avg_pool_backward_finite_differences(kw):
    x = RNG.standard_normal((2, 2, 6, 7))
    out = fc.avg_pool2d(x, **kw)
    g = RNG.standard_normal(out.shape)
    gi = fc.avg_pool_backward(g, x.shape, **kw)
    np.testing.assert_allclose(gi, _fd_grad(lambda v: fc.avg_pool2d(v, **kw), x, g), atol=1e-7)
    # adjoint identity: <avg(x), g> == <x, avg_backward(g)>
    np.testing.assert_allclose(np.sum(out * g), np.sum(x * gi), rtol=1e-12)


@settings(deadline=None, max_examples=40)
@given(pool_problem(with_dilation=False), st.booleans(), st.sampled_from([None, 3]), st.data())
def test_avg_backward_adjoint_both_paths(prob, count_include_pad, divisor_override, data):
    """<avg_pool(x), g> == <x, avg_pool_backward(g)> by groups of planes and by the row kernels,
    which agree; the same for adaptive average pooling."""
    x, k, s, p, _, ceil_mode = prob
    x = x.astype(np.float64)
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad, divisor_override=divisor_override)
    out = fc.avg_pool(x, **kw)
    g = RNG.standard_normal(out.shape)
    grads = _both_paths(lambda: fc.avg_pool_backward(g, x.shape, **kw))
    for gi in grads:
        assert gi.shape == x.shape
        np.testing.assert_allclose(np.sum(out * g), np.sum(x * gi), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-14)
    rank = len(k)
    osz = tuple(data.draw(st.integers(1, 6)) for _ in range(rank))
    out = fc.adaptive_avg_pool(x, osz)
    g = RNG.standard_normal(out.shape)
    grads = _both_paths(lambda: fc.adaptive_avg_pool_backward(g, x.shape))
    for gi in grads:
        np.testing.assert_allclose(np.sum(out * g), np.sum(x * gi), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-14)
    g32 = g.astype(np.float32)
    a, b = _both_paths(lambda: fc.adaptive_avg_pool_backward(g32, x.shape))
    assert a.dtype == np.float32
    _close(a, b, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_backward_of_exact_blocks(dtype):
    """Blocks tiling the planes exactly (stride = kernel, nothing left over; one window over the
    whole plane): every input gets its block's gradient times the reciprocal divisor, for the
    vector path (kw == 2) at every row length around the vector width and for other blocks."""
    rng = np.random.default_rng(13)
    cases = [((3, 5, 2 * h, 2 * w), (2, 2)) for h in (1, 3) for w in (1, 3, 4, 7, 8, 9, 17)]
    cases += [((2, 3, 9, 12), (3, 4)), ((2, 3, 6, 10), (1, 2)), ((4, 70), (5,)), ((2, 3, 64), (4,)),
              ((2, 3, 5, 7), (5, 7)), ((2, 3, 2, 3, 4), (2, 3, 4))]
    for shape, k in cases:
        rank = len(k)
        x = rng.standard_normal(shape).astype(dtype)
        out = fc.avg_pool(x, k)
        g = rng.standard_normal(out.shape).astype(dtype)
        for nt in (1, 2, 3):
            with fc.threads(nt):
                gi = fc.avg_pool_backward(g, x.shape, k)
            want = g * dtype(1.0 / math.prod(k))
            for i, kk in enumerate(k):
                want = np.repeat(want, kk, axis=g.ndim - rank + i)
            np.testing.assert_array_equal(gi, want)
        gi = fc.avg_pool_backward(g, x.shape, k, divisor_override=3)
        np.testing.assert_allclose(np.sum(fc.avg_pool(x, k, divisor_override=3) * g), np.sum(x * gi),
                                   rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_adaptive_avg_and_lp_backward_finite_differences():
    x = RNG.standard_normal((1, 2, 7, 5))
    g = RNG.standard_normal((1, 2, 3, 2))
    gi = fc.adaptive_avg_pool_backward(g, x.shape)
    np.testing.assert_allclose(gi, _fd_grad(lambda v: fc.adaptive_avg_pool2d(v, (3, 2)), x, g), atol=1e-7)
    xp = np.abs(x) + 0.5
    for p, k, s, ceil in ((2, 2, 2, True), (3, (3, 2), 1, False), (1.5, 2, 1, False)):
        out = fc.lp_pool2d(xp, p, k, s, ceil)
        g = RNG.standard_normal(out.shape)
        gi = fc.lp_pool_backward(g, xp, p, k, s, ceil)
        np.testing.assert_allclose(gi, _fd_grad(lambda v: fc.lp_pool2d(v, p, k, s, ceil), xp, g),
                                   atol=1e-6, rtol=1e-6)


def test_max_pool_backward_scatter_adds():
    x = np.array([[[1.0, 9.0, 2.0, 3.0]]])
    out, idx = fc.max_pool1d(x, 3, 1, padding=1, return_indices=True)   # 9 wins three windows
    np.testing.assert_array_equal(idx[0, 0], [1, 1, 1, 3])
    gi = fc.max_pool_backward(np.array([[[1.0, 2.0, 4.0, 8.0]]]), idx, x.shape)
    np.testing.assert_array_equal(gi, [[[0.0, 7.0, 0.0, 8.0]]])
    x = RNG.standard_normal((3, 5, 9, 8)).astype(np.float32)
    out, idx = fc.max_pool2d(x, 3, 1, 1, return_indices=True)
    g = RNG.standard_normal(out.shape).astype(np.float32)
    ref = np.zeros_like(x).reshape(15, -1)
    np.add.at(ref, (np.arange(15)[:, None], idx.reshape(15, -1)), g.reshape(15, -1))
    np.testing.assert_allclose(fc.max_pool_backward(g, idx, x.shape), ref.reshape(x.shape), rtol=1e-6)
    out, idx = fc.adaptive_max_pool2d(x[0], (4, 3), return_indices=True)
    gi = fc.max_pool_backward(np.ones_like(out), idx, x[0].shape)
    assert gi.shape == x[0].shape and gi.sum() == out.size


# ----------------------------------------------------------------------------------------------
# torch

def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


@settings(deadline=None, max_examples=15)
@given(pool_problem())
def test_against_torch_forward(prob):
    torch = _torch()
    F = torch.nn.functional
    x, k, s, p, d, ceil_mode = prob
    rank = len(k)
    t = torch.from_numpy(x.copy())
    tmax = getattr(F, f"max_pool{rank}d")
    ref, ref_idx = tmax(t, k, s, p, d, ceil_mode=ceil_mode, return_indices=True)
    out, idx = fc.max_pool(x, k, s, p, d, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(out, ref.numpy())
    # a window without any tap in the input: -1 here, torch's (meaningless) first-tap index there
    empty = max_pool(x, k, s, p, d, ceil_mode)[1] == -1
    np.testing.assert_array_equal(idx, np.where(empty, -1, ref_idx.numpy()))
    tavg = getattr(F, f"avg_pool{rank}d")
    # torch's avg_pool3d (only) refuses an input smaller than the kernel even with padding;
    # fastconv pools it like the other ranks (documented difference)
    small = rank == 3 and any(n < kk for n, kk in zip(x.shape[-3:], k))
    for cip in (() if small else (True, False)):
        _close(fc.avg_pool(x, k, s, p, ceil_mode, cip), tavg(t, k, s, p, ceil_mode, cip).numpy(), x.dtype)
    osz = tuple(max(1, n // 2 + 1) for n in x.shape[-rank:])
    amax = getattr(F, f"adaptive_max_pool{rank}d")(t, osz, return_indices=True)
    a, ai = fc.adaptive_max_pool(x, osz, return_indices=True)
    np.testing.assert_array_equal(a, amax[0].numpy())
    np.testing.assert_array_equal(ai, amax[1].numpy())
    _close(fc.adaptive_avg_pool(x, osz), getattr(F, f"adaptive_avg_pool{rank}d")(t, osz).numpy(), x.dtype)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_against_torch_lp_and_nan(rank):
    torch = _torch()
    F = torch.nn.functional
    x = np.abs(RNG.standard_normal((2, 3) + (7,) * rank))
    t = torch.from_numpy(x)
    lp = getattr(F, f"lp_pool{rank}d")
    for p, k, s, ceil in ((2, 2, 2, True), (3, 3, 2, False), (1.5, 2, None, True)):
        _close(fc.lp_pool(x, p, (k,) * rank, s, ceil), lp(t, p, k, s, ceil).numpy(), np.float64)
    xn = x.copy()
    xn.reshape(-1)[::7] = np.nan
    tn = torch.from_numpy(xn)
    ref, ref_idx = getattr(F, f"max_pool{rank}d")(tn, 3, 2, 1, return_indices=True)
    out, idx = fc.max_pool(xn, (3,) * rank, 2, 1, return_indices=True)
    np.testing.assert_array_equal(out, ref.numpy())
    np.testing.assert_array_equal(idx, ref_idx.numpy())


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_against_torch_backward(rank):
    torch = _torch()
    F = torch.nn.functional
    x = RNG.standard_normal((2, 3) + (6,) * rank)
    t = torch.from_numpy(x).requires_grad_(True)
    cases = [
        (lambda v: getattr(F, f"max_pool{rank}d")(v, 3, 2, 1, ceil_mode=True),
         lambda g: fc.max_pool_backward(g, fc.max_pool(x, (3,) * rank, 2, 1, ceil_mode=True,
                                                       return_indices=True)[1], x.shape)),
        (lambda v: getattr(F, f"avg_pool{rank}d")(v, 3, 2, 1, ceil_mode=True, count_include_pad=False),
         lambda g: fc.avg_pool_backward(g, x.shape, (3,) * rank, 2, 1, ceil_mode=True,
                                        count_include_pad=False)),
        (lambda v: getattr(F, f"adaptive_avg_pool{rank}d")(v, 4),
         lambda g: fc.adaptive_avg_pool_backward(g, x.shape)),
        (lambda v: getattr(F, f"adaptive_max_pool{rank}d")(v, 4),
         lambda g: fc.max_pool_backward(g, fc.adaptive_max_pool(x, (4,) * rank, True)[1], x.shape)),
        (lambda v: getattr(F, f"lp_pool{rank}d")(v.abs() + 0.5, 2, 2, 1),
         None),
    ]
    for tf, ff in cases:
        out = tf(t)
        g = torch.from_numpy(RNG.standard_normal(tuple(out.shape)))
        (ref,) = torch.autograd.grad(out, t, g)
        if ff is None:   # lp: chain through |x| + 0.5 by hand
            xa = np.abs(x) + 0.5
            mine = fc.lp_pool_backward(g.numpy(), xa, 2, (2,) * rank, 1) * np.sign(x)
        else:
            mine = ff(g.numpy())
        np.testing.assert_allclose(mine, ref.numpy(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# bad input: each names the function and the argument

def _raises(exc, func_name, words, f, *a, **kw):
    with pytest.raises(exc) as e:
        f(*a, **kw)
    msg = str(e.value)
    assert msg.startswith(func_name + ":"), msg
    for w in words:
        assert w in msg, (w, msg)


X4 = np.zeros((1, 2, 5, 5))


def test_bad_input_forward():
    _raises(ValueError, "max_pool2d", ["kernel_size", "larger"], fc.max_pool2d, X4, 7)
    _raises(ValueError, "avg_pool2d", ["padding", "half"], fc.avg_pool2d, X4, 3, padding=2)
    _raises(ValueError, "max_pool2d", ["stride", ">= 1"], fc.max_pool2d, X4, 2, stride=0)
    _raises(ValueError, "max_pool2d", ["kernel_size", ">= 1"], fc.max_pool2d, X4, 0)
    _raises(ValueError, "max_pool2d", ["dilation"], fc.max_pool2d, X4, 2, dilation=-1)
    _raises(ValueError, "max_pool3d", ["input", "dimensions", "(2, 5, 5)"], fc.max_pool3d, X4[0], 2)
    _raises(ValueError, "max_pool", ["kernel_size", "1, 2 or 3 entries"], fc.max_pool, X4, (2, 2, 2, 2))
    _raises(ValueError, "max_pool", ["input", "spatial"], fc.max_pool, np.zeros((3, 4)), 2)
    _raises(ValueError, "avg_pool2d", ["stride", "2 ints"], fc.avg_pool2d, X4, 2, stride=(1, 1, 1))
    _raises(TypeError, "avg_pool2d", ["kernel_size"], fc.avg_pool2d, X4, 2.5)
    _raises(ValueError, "avg_pool2d", ["divisor_override", "zero"], fc.avg_pool2d, X4, 2, divisor_override=0)
    _raises(TypeError, "max_pool2d", ["input", "complex"], fc.max_pool2d, X4.astype(complex), 2)
    _raises(TypeError, "max_pool2d", ["input", "float16"], fc.max_pool2d, X4.astype(np.float16), 2)
    _raises(ValueError, "max_pool2d", ["input", "empty"], fc.max_pool2d, np.zeros((0, 2, 5, 5)), 2)
    _raises(ValueError, "lp_pool2d", ["norm_type"], fc.lp_pool2d, X4, 0, 2)
    _raises(TypeError, "lp_pool2d", ["norm_type"], fc.lp_pool2d, X4, "2", 2)
    _raises(ValueError, "lp_pool1d", ["kernel_size", "larger"], fc.lp_pool1d, np.zeros((1, 3)), 2, 4)
    _raises(ValueError, "adaptive_avg_pool2d", ["output_size", ">= 1"], fc.adaptive_avg_pool2d, X4, (0, 2))
    _raises(ValueError, "adaptive_max_pool", ["output_size", ">= 1"], fc.adaptive_max_pool, X4, -1)
    _raises(ValueError, "adaptive_max_pool1d", ["input", "dimensions"], fc.adaptive_max_pool1d, X4, 2)
    _raises(ValueError, "adaptive_avg_pool", ["output_size", "3 entries"], fc.adaptive_avg_pool, X4[0],
            (1, 2, 3, 4))
    _raises(ValueError, "global_avg_pool", ["input", "shape"], fc.global_avg_pool, np.zeros(4))
    with pytest.raises(MemoryError, match="adaptive_avg_pool1d: output"):
        fc.adaptive_avg_pool1d(np.zeros((1, 4)), 2 ** 62)


def test_bad_input_backward():
    out, idx = fc.max_pool2d(X4, 2, return_indices=True)
    g = np.ones_like(out)
    _raises(ValueError, "max_pool_backward", ["indices", "shape"], fc.max_pool_backward, g, idx[..., :1], X4.shape)
    _raises(TypeError, "max_pool_backward", ["indices", "integer"], fc.max_pool_backward, g,
            idx.astype(float), X4.shape)
    _raises(ValueError, "max_pool_backward", ["indices", "outside"], fc.max_pool_backward, g, idx + 100, X4.shape)
    _raises(ValueError, "max_pool_backward", ["grad_output", "input_shape"], fc.max_pool_backward, g, idx,
            (2, 2, 5, 5))
    _raises(ValueError, "avg_pool_backward", ["grad_output", "(1, 2, 2, 2)"], fc.avg_pool_backward,
            np.ones((1, 2, 3, 3)), X4.shape, 2)
    _raises(ValueError, "avg_pool_backward", ["padding"], fc.avg_pool_backward, g, X4.shape, 2, padding=3)
    _raises(ValueError, "adaptive_avg_pool_backward", ["input_shape"], fc.adaptive_avg_pool_backward,
            g, (5, 5))
    _raises(TypeError, "adaptive_avg_pool_backward", ["input_shape"], fc.adaptive_avg_pool_backward, g, 5)
    _raises(ValueError, "lp_pool_backward", ["grad_output"], fc.lp_pool_backward, np.ones((1, 2, 3, 3)),
            X4, 2, 2)


# the dedicated passes: 2x2/stride-2 average (SIMD pair reduction) and non-overlapping blocks
# (stride = kernel, adaptive pooling with divisible sizes), against the reference, NaN included

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_pooling_paths(dtype):
    rng = np.random.default_rng(11)
    for H, W, lead in [(2, 2, (2, 3)), (3, 5, (2, 3)), (4, 16, (2, 3)), (7, 17, (2, 3)),
                       (8, 18, (2, 3)), (12, 40, (2, 3)), (16, 33, (2, 3)),
                       (40, 24, (1, 1)), (33, 18, (1,)), (256, 200, (1, 1))]:   # one plane: row chunks
        x = rng.standard_normal(lead + (H, W)).astype(dtype)
        x.reshape(-1, H, W)[-1, 0, 1] = np.nan
        tol = dict(rtol=2e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
        for k in [(2, 2), (1, 3), (2, 1), (2, 4), (H // 2 or 1, W // 2 or 1)]:
            if k[0] > H or k[1] > W:
                continue
            np.testing.assert_allclose(fc.avg_pool2d(x, k), avg_pool(x, k, k, (0, 0), False, True, None),
                                       equal_nan=True, **tol)
            np.testing.assert_allclose(fc.avg_pool2d(x, k, divisor_override=3),
                                       avg_pool(x, k, k, (0, 0), False, True, 3), equal_nan=True, **tol)
            np.testing.assert_array_equal(fc.max_pool2d(x, k), max_pool(x, k, k, (0, 0), (1, 1), False)[0])
        for o in [(1, 1), (H, W), (max(H // 2, 1), max(W // 2, 1))]:
            np.testing.assert_allclose(fc.adaptive_avg_pool2d(x, o), adaptive_pool(x, o, "avg"),
                                       equal_nan=True, **tol)
            np.testing.assert_array_equal(fc.adaptive_max_pool2d(x, o), adaptive_pool(x, o, "max")[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pair_rows_of_small_planes(dtype):
    """2x2 / stride 2 pooling of planes with short even rows (one vector per output row over the
    planes as one tall plane; the last row of each thread's chunk value by value): every row width
    the kernel takes and the widths around it, NaN in any of the four positions of a block,
    several thread counts, against the reference."""
    rng = np.random.default_rng(12)
    for W in (4, 6, 8, 10, 12, 14, 16, 18):
        for H in (2, 4, 6):
            for lead in ((1, 1), (3, 5), (2, 37)):
                x = rng.standard_normal(lead + (H, W)).astype(dtype)
                flat = x.reshape(-1)
                flat[rng.integers(0, flat.size, 3)] = np.nan
                flat[-1] = np.nan
                ref_max = max_pool(x, (2, 2), (2, 2), (0, 0), (1, 1), False)[0]
                ref_avg = avg_pool(x, (2, 2), (2, 2), (0, 0), False, True, None)
                for nt in (1, 2, 3):
                    with fc.threads(nt):
                        np.testing.assert_array_equal(fc.max_pool2d(x, 2), ref_max)
                        _close(fc.avg_pool2d(x, 2), ref_avg, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_of_signed_zeros_is_the_first_in_scan_order(dtype):
    """-0 and +0 tie: torch keeps the first maximum in scan order, so a maximum of zero carries the
    sign of the window's first zero. Lane-parallel maxima (global pooling, the groups of planes'
    four accumulators) do not keep that order by themselves (a helper's bug hunt found +0 for
    [-0, 0, 0, 0]): they redo such outputs in scan order. Checked against the reference's scan:
    every path with indices, the groups of planes and global pooling without (the row kernels'
    separable maxima are a documented deviation, see the README)."""
    rng = np.random.default_rng(14)
    cases = [((3, 5, 7, 7), (7, 7), None), ((3, 5, 7, 7), (3, 3), 1), ((2, 9, 14, 14), (3, 3), 2),
             ((2, 3, 60, 60), (3, 3), 2), ((2, 9, 7), (6,), 1), ((2, 3, 5, 4, 3), (2, 3, 3), 1)]
    for shape, k, s in cases:
        x = rng.choice(np.array([-0.0, 0.0, -1.0, -2.0], dtype), size=shape)
        x[0, 0] = -0.0
        x[0, 1] = 0.0
        ref, ref_idx = max_pool(x, k, (s,) * len(k) if s else k, (0,) * len(k), (1,) * len(k), False)
        outs = [vals for vals, _ in _both_paths(lambda: fc.max_pool(x, k, s, return_indices=True))]
        if x[0, 0].size <= 512:
            outs.append(fc.max_pool(x, k, s))            # groups of planes (or global pooling)
        for (_, idx) in _both_paths(lambda: fc.max_pool(x, k, s, return_indices=True)):
            np.testing.assert_array_equal(idx, ref_idx)
        for got in outs:
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))
    for shape in ((4, 33, 7, 7), (2, 5, 60, 60), (3, 4, 3), (1, 1, 70001)):
        x = rng.choice(np.array([-0.0, 0.0, -1.0], dtype), size=shape)
        rows = x.reshape(-1, x.shape[-1])
        rows[0] = -0.0
        rows[-1] = 0.0 if len(rows) > 1 else rows[-1]
        axes = tuple(range(2, x.ndim))
        first = np.array([p[p == 0][0] if (p == 0).any() else p.max()
                          for p in x.reshape(x.shape[0] * x.shape[1], -1)]).reshape(x.shape[:2])
        for got in (fc.global_max_pool(x), fc.adaptive_max_pool(x, 1).reshape(x.shape[:2])):
            np.testing.assert_array_equal(got, x.max(axis=axes))
            np.testing.assert_array_equal(np.signbit(got), np.signbit(first))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_max_nan_and_infinities(dtype):
    rng = np.random.default_rng(5)
    for n in (1, 7, 31, 32, 33, 100, 1000):
        x = rng.standard_normal((3, 2, n)).astype(dtype)
        x[0, 0, n // 2] = np.nan
        x[1, 1, 0] = np.inf
        x[1, 1, -1] = -np.inf
        x[2, 0] = -np.inf
        got = fc.global_max_pool(x)
        want = np.max(x, axis=-1)     # NumPy's max propagates NaN too
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_pool_small_planes(dtype):
    """Planes of up to 512 elements are pooled a group of planes at a time (one vector register
    each, the last n % width elements from the plane's last whole vector): every plane size around
    the vector width, NaN (a NaN wins the maximum) and infinities, against float64 NumPy; a plane's
    result is bitwise the same alone, in any batch position and on any number of threads."""
    rng = np.random.default_rng(8)
    for n in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 49, 196, 511, 512, 513):
        x = rng.standard_normal((3, 7, n)).astype(dtype)
        x[0, 1, n // 2] = np.nan
        x[1, 2, -1] = np.nan
        x[1, 3, 0] = np.inf
        x[2, 4, -1] = -np.inf
        x[2, 5] = -np.inf
        x[2, 6, 0] = np.inf
        x[2, 6, -1] = -np.inf if n > 1 else np.inf
        np.testing.assert_array_equal(fc.global_max_pool(x), np.max(x, axis=-1))
        with np.errstate(invalid="ignore"):
            want = x.astype(np.float64).mean(axis=-1)
        got = fc.global_avg_pool(x)
        _close(got, want, dtype)
        for nt in (1, 2, 3):
            with fc.threads(nt):
                np.testing.assert_array_equal(fc.global_avg_pool(x), got)
                for i in range(3):
                    np.testing.assert_array_equal(fc.global_avg_pool(x[i]), got[i])
                    np.testing.assert_array_equal(fc.global_avg_pool(x[i, 2:]), got[i, 2:])
                    np.testing.assert_array_equal(fc.global_max_pool(x[i, 1:]), np.max(x[i, 1:], axis=-1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_by_groups_of_planes(dtype):
    """Small planes are pooled by groups of 8 float / 4 double planes side by side: the same
    maxima and indices (torch's first-maximum and NaN rules) as the row kernels, averages within
    rounding; a plane's result is bitwise the same in any batch position (a full or a partial
    group) and on any number of threads."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 9, 7, 6)).astype(dtype)
    x[0, 2, 3, 3] = np.nan
    x[1, 8, 0, :] = np.nan
    x[2, 0] = np.maximum(np.round(x[2, 0]), 0)       # ties
    x[2, 1] = -np.inf
    calls = [lambda a: fc.max_pool2d(a, 3, 2, 1, return_indices=True),
             lambda a: fc.max_pool2d(a, (2, 3), (1, 2), (1, 1), dilation=(2, 1), ceil_mode=True,
                                     return_indices=True),
             lambda a: fc.max_pool2d(a, 2),
             lambda a: fc.avg_pool2d(a, 3, 2, 1, count_include_pad=False),
             lambda a: fc.avg_pool2d(a, (3, 2), 1, (1, 0), ceil_mode=True),
             lambda a: fc.avg_pool2d(a, 2, divisor_override=3),
             lambda a: fc.adaptive_avg_pool2d(a, (4, 5)),
             lambda a: fc.adaptive_max_pool2d(a, (3, 4), return_indices=True),
             lambda a: fc.lp_pool2d(np.abs(a), 2, 3, 2)]
    for f in calls:
        got, rows = _both_paths(lambda: f(x))
        for g, r in zip(got if isinstance(got, tuple) else (got,), rows if isinstance(rows, tuple) else (rows,)):
            if g.dtype.kind == "i" or f is calls[0] or f is calls[1] or f is calls[2]:
                np.testing.assert_array_equal(g, r)
            else:
                _close(g, r, dtype)
        first = got[0] if isinstance(got, tuple) else got
        for nt in (1, 2, 3):
            with fc.threads(nt):
                again = f(x)
                np.testing.assert_array_equal(again[0] if isinstance(again, tuple) else again, first)
                for i, j in ((0, 0), (1, 8), (2, 4)):
                    one = f(x[i:i + 1, j:j + 1])
                    np.testing.assert_array_equal(one[0] if isinstance(one, tuple) else one,
                                                  first[i:i + 1, j:j + 1])


def test_whole_plane_window_is_global_pooling():
    """A single window over the whole plane (avg_pool2d(7) on 7x7, adaptive pooling to 1) is global
    pooling; a divisor other than the plane size (divisor_override, padding counted) is not."""
    rng = np.random.default_rng(10)
    for shape in ((4, 33, 7, 7), (2, 5, 56, 56), (3, 2, 5, 4, 3)):
        x = rng.standard_normal(shape).astype(np.float32)
        rank = len(shape) - 2
        sp = shape[2:]
        g_avg, g_max = fc.global_avg_pool(x), fc.global_max_pool(x)
        ones = (1,) * rank
        np.testing.assert_array_equal(fc.avg_pool(x, sp), g_avg.reshape(shape[:2] + ones))
        np.testing.assert_array_equal(fc.max_pool(x, sp), g_max.reshape(shape[:2] + ones))
        np.testing.assert_array_equal(fc.adaptive_avg_pool(x, 1), g_avg.reshape(shape[:2] + ones))
        np.testing.assert_array_equal(fc.adaptive_max_pool(x, 1), g_max.reshape(shape[:2] + ones))
        _close(fc.avg_pool(x, sp, divisor_override=10),
               avg_pool(x, sp, sp, (0,) * rank, False, True, 10), np.float32)
    x = rng.standard_normal((2, 3, 3, 3))
    # kernel 3 with padding 1, ceil_mode: one window over the padded plane, divisor 16 with padding
    np.testing.assert_allclose(fc.avg_pool2d(x, 3, 3, 1, ceil_mode=True),
                               avg_pool(x, (3, 3), (3, 3), (1, 1), True, True, None), rtol=1e-12)


def test_repeated_calls_reuse_plans_and_stay_checked(monkeypatch):
    """A repeat of a validated call (same function, input shape and dtype, plain arguments) runs
    its stored plan: the result is still computed from the new data, and anything that differs
    (a bad argument, another dtype, True for 1, a non-contiguous input) goes through the checks."""
    pool_mod = __import__("sys").modules["fastconv.pool"]
    built = []
    real = pool_mod._forward_plan
    monkeypatch.setattr(pool_mod, "_forward_plan", lambda *a, **k: built.append(a[0]) or real(*a, **k))
    monkeypatch.setattr(pool_mod, "_PLANS", {})
    rng = np.random.default_rng(3)
    calls = [
        (lambda x: fc.max_pool2d(x, 3, 2, 1), lambda x: max_pool(x, (3, 3), (2, 2), (1, 1), (1, 1), False)[0]),
        (lambda x: fc.max_pool2d(x, 3, 2, 1, return_indices=True)[1],
         lambda x: max_pool(x, (3, 3), (2, 2), (1, 1), (1, 1), False)[1]),
        (lambda x: fc.avg_pool2d(x, 2), lambda x: avg_pool(x, (2, 2), (2, 2), (0, 0), False, True, None)),
        (lambda x: fc.avg_pool2d(x, (3, 2), 1, (1, 0), True, False),
         lambda x: avg_pool(x, (3, 2), (1, 1), (1, 0), True, False, None)),
        (lambda x: fc.adaptive_avg_pool2d(x, (3, None)), lambda x: adaptive_pool(x, (3, 9), "avg")),
        (lambda x: fc.adaptive_max_pool(x, 4), lambda x: adaptive_pool(x, (4, 4), "max")[0]),
    ]
    for dtype in (np.float32, np.float64):
        for f, ref in calls:
            n0 = len(built)
            for _ in range(3):
                x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
                got = f(x)
                assert got.dtype == (np.int64 if got.dtype.kind == "i" else dtype)
                np.testing.assert_allclose(got, ref(x), rtol=2e-5, atol=1e-6)
            assert len(built) == n0 + 1          # planned once per dtype, then reused
    x = rng.standard_normal((2, 3, 7, 9))
    n0 = len(built)
    np.testing.assert_allclose(fc.max_pool2d(x[..., ::-1], 3, 2, 1),     # not contiguous: checked
                               max_pool(x[..., ::-1], (3, 3), (2, 2), (1, 1), (1, 1), False)[0])
    assert len(built) == n0 + 1
    with pytest.raises(ValueError, match="padding"):
        fc.max_pool2d(x, 3, 2, 2)
    with pytest.raises(TypeError, match="return_indices"):
        fc.max_pool2d(x, 3, 2, 1, return_indices="yes")
    out = fc.max_pool2d(x, 3, 2, 1, return_indices=1)       # 1 is not True: its own, checked plan
    assert isinstance(out, tuple) and len(out) == 2
    with pytest.raises(ValueError, match="kernel_size"):
        fc.max_pool2d(x[:, :, :1, :1], 5, 2, 1)


def test_max_pool_dilated_rows_exhaustive():
    """Every small 1-D window geometry (dilation up to 4), on planes of two rows: with padding and
    dilation the last window can be cut short by the end of the row while an earlier one reaches
    further, which the flat-row pass must not read past (a tap from the next row or the margin)."""
    rng = np.random.default_rng(17)
    for W in range(1, 10):
        x = rng.standard_normal((1, 2, 2, W)) - 5.0       # all negative: a stray 0 would win
        for k, s, d, ceil_mode in itertools.product(range(1, 4), range(1, 4), range(1, 5),
                                                    (False, True)):
            for p in range(k // 2 + 1):
                if out_size(W, k, s, p, d, ceil_mode) < 1:
                    continue
                want, want_idx = max_pool(x, (1, k), (1, s), (0, p), (1, d), ceil_mode)
                got = fc.max_pool2d(x, (1, k), (1, s), (0, p), (1, d), ceil_mode)
                np.testing.assert_array_equal(got, want, err_msg=f"W={W} k={k} s={s} p={p} d={d} "
                                                                 f"ceil={ceil_mode}")
                got1 = fc.max_pool1d(x[0, :, 0], k, s, p, d, ceil_mode)
                np.testing.assert_array_equal(got1, want[0, :, 0])


def test_huge_strides_and_dilations_need_no_huge_buffers():
    """Scratch rows are sized by the input, not by kernel_size * dilation or stride * out (valid
    calls that torch cannot even take: its sizes are 32-bit)."""
    x = RNG.standard_normal((1, 2, 5, 6))
    np.testing.assert_array_equal(fc.max_pool(x, 1, 1, 0, 2 ** 62), x)
    np.testing.assert_array_equal(fc.max_pool(x, 1, 2 ** 40, 0, 1), x[:, :, :1, :1])
    np.testing.assert_array_equal(fc.max_pool(x, 3, 2 ** 40, 1, 1),
                                  max_pool(x, (3, 3), (2 ** 40,) * 2, (1, 1), (1, 1), False)[0])
    big = fc.max_pool(x, (2 ** 40, 2 ** 40), 1, 2 ** 39, 1)
    assert big.shape == (1, 2, 6, 7)
    np.testing.assert_array_equal(big, np.broadcast_to(x.max(axis=(2, 3))[..., None, None], big.shape))
    np.testing.assert_allclose(fc.avg_pool(x, 3, 2 ** 40, 1), avg_pool(x, (3, 3), (2 ** 40,) * 2,
                                                                        (1, 1), False, True, None))


def test_max_pool_nan_found_with_padding_and_dilation():
    """A NaN anywhere a window reads wins, also where padding and dilation make the rows the
    windows of a block read differ from the first and last rows' spans (the check for a NaN in
    the block's input must cover every tap), along H and along D."""
    for H in range(1, 9):
        for k, s, d, ceil_mode in itertools.product(range(1, 4), range(1, 4), range(1, 5),
                                                    (False, True)):
            for p in range(k // 2 + 1):
                if out_size(H, k, s, p, d, ceil_mode) < 1:
                    continue
                for j in range(H):
                    x = np.arange(H, dtype=np.float64)
                    x[j] = np.nan
                    x2 = x.reshape(1, 1, H, 1)
                    want = max_pool(x2, (k, 1), (s, 1), (p, 0), (d, 1), ceil_mode)[0]
                    got = fc.max_pool2d(x2, (k, 1), (s, 1), (p, 0), (d, 1), ceil_mode)
                    np.testing.assert_array_equal(got, want, err_msg=f"H={H} k={k} s={s} p={p} "
                                                                     f"d={d} ceil={ceil_mode} nan@{j}")
                    x3 = x.reshape(1, 1, H, 1, 1)
                    got3 = fc.max_pool3d(x3, (k, 1, 1), (s, 1, 1), (p, 0, 0), (d, 1, 1), ceil_mode)
                    np.testing.assert_array_equal(got3[..., 0], want)


def test_windows_without_taps_have_index_minus_one():
    """With dilation a window can have every tap in the padding (then, it turns out, every window
    along that axis has: the plane's output is all -inf). Its index is -1, "no input element"
    (torch's points past the plane, or at an unrelated element of the next row), and
    max_pool_backward gives such outputs no gradient, the derivative of a constant, instead of
    failing on (or, in torch, writing past) the plane."""
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    out, idx = fc.max_pool1d(x, 2, stride=1, padding=1, dilation=5, return_indices=True)
    assert out.tolist() == [[[-np.inf]]] and idx.tolist() == [[[-1]]]
    np.testing.assert_array_equal(fc.max_pool_backward(np.ones_like(out), idx, x.shape), 0 * x)
    x2 = RNG.standard_normal((2, 3, 4, 3))
    kw = dict(kernel_size=(1, 2), stride=1, padding=(0, 1), dilation=(1, 4))
    out, idx = fc.max_pool2d(x2, return_indices=True, **kw)
    want, want_idx = max_pool(x2, (1, 2), (1, 1), (0, 1), (1, 4), False)
    assert out.shape == (2, 3, 4, 1) and np.all(out == -np.inf)
    np.testing.assert_array_equal(idx, want_idx)
    assert np.all(idx == -1)
    g = RNG.standard_normal(out.shape)
    np.testing.assert_array_equal(fc.max_pool_backward(g, idx, x2.shape), np.zeros_like(x2))
    # any other index outside the plane is still an error
    with pytest.raises(ValueError, match="indices"):
        fc.max_pool_backward(g, np.full_like(idx, -2), x2.shape)
    with pytest.raises(ValueError, match="indices"):
        fc.max_pool_backward(g, np.full_like(idx, 12), x2.shape)


def test_windows_without_taps_against_torch():
    torch = _torch()
    x2 = RNG.standard_normal((2, 3, 4, 3))
    kw = dict(kernel_size=(1, 2), stride=1, padding=(0, 1), dilation=(1, 4))
    out, idx = fc.max_pool2d(x2, return_indices=True, **kw)
    t_out, t_idx = torch.nn.functional.max_pool2d(torch.from_numpy(x2), return_indices=True, **kw)
    np.testing.assert_array_equal(out, t_out.numpy())
    assert np.all(idx == -1) and not np.array_equal(idx, t_idx.numpy())   # the documented difference
