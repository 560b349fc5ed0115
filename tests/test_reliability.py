"""Reliability: NaN/inf propagation, inputs never modified, thread safety, leaks, 64-bit indexing.

- NaN and inf propagate as in torch: convolutions are sums (a NaN or an inf*0 anywhere in a window
  gives NaN; +inf and -inf in one window give NaN), max pooling picks NaN (and its index points at it).
- Inputs are never modified and results never alias inputs.
- The same calls from 8 Python threads at once give bit-identical results to serial calls;
  ``set_num_threads`` / ``with threads(n)`` in one thread does not break another thread's call.
- 10,000 repeated small calls do not grow the resident set size by more than a few MB.
- ``slow``: an input of more than 2**31 elements gives the right values at its far corner (index
  arithmetic in Py_ssize_t); the 32-bit BLAS limit of the GEMM path is a clean MemoryError.
"""
import gc
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv
from ref_conv import conv_grad_weight_ref, conv_ref, conv_transpose_ref
import ref_pool

rng = np.random.default_rng(1234)
SANITIZED = os.environ.get("FASTCONV_SANITIZE", "0") not in ("", "0") or "asan" in os.environ.get("LD_PRELOAD", "")


def _same_nonfinite(got, want):
    """Same NaN positions, same +-inf positions, and finite values close."""
    tol = 1e-5 if np.asarray(got).dtype == np.float32 else 1e-12
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN positions differ")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg="+inf positions differ")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg="-inf positions differ")
    fin = np.isfinite(want)
    if fin.any():
        scale = np.abs(want[fin]).max()
        np.testing.assert_allclose(got[fin], want[fin], rtol=tol, atol=tol * scale)


def _poisoned(shape, dtype=np.float64, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    idx = r.choice(flat.size, size=4, replace=False)
    flat[idx[0]] = np.nan
    flat[idx[1]] = np.inf
    flat[idx[2]] = -np.inf
    flat[idx[3]] = np.inf
    return x


# ------------------------------------------------------------------------------------------------
# NaN / inf propagation

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c_in, groups", [(1, 1), (3, 1), (4, 2), (4, 4)])   # direct stencil and GEMM paths
@pytest.mark.parametrize("padding", [0, 1])
def test_conv_nan_inf_propagate_as_sums(dtype, c_in, groups, padding):
    x = _poisoned((2, c_in, 9, 8), dtype, seed=c_in + groups)
    w = rng.standard_normal((4, c_in // groups, 3, 3)).astype(dtype)
    w[0, 0, 1, 1] = 0.0                      # inf * 0 is NaN, as in torch
    got = fastconv.conv2d(x, w, padding=padding, groups=groups)
    want = conv_ref(x, w, pads=((padding, padding),) * 2, groups=groups)
    _same_nonfinite(got, want)
    assert np.isnan(got).any()


def test_conv_opposite_infinities_give_nan():
    x = np.zeros((1, 2, 4))
    x[:, :, 1] = np.inf
    x[:, :, 2] = -np.inf
    out = fastconv.conv1d(x, np.ones((1, 2, 2)))          # two input channels: GEMM path
    assert np.isposinf(out[0, 0, 0]) and np.isnan(out[0, 0, 1]) and np.isneginf(out[0, 0, 2])



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kernel, groups", [
    ((1, 1, 4), (1,), 1),
    ((2, 3, 7, 8), (2, 2), 3),
    ((1, 1, 6, 6), (1, 1), 1),
    ((1, 2, 4, 5, 5), (2, 1, 3), 2),
])
def test_conv_inf_direct_stencil(shape, kernel, groups, dtype):
    x = np.zeros(shape, dtype)
    flat = x.reshape(-1)
    flat[1] = np.inf
    flat[flat.size // 2] = -np.inf
    flat[-2] = np.inf
    w = np.ones((shape[1], 1) + kernel, dtype)
    got = fastconv.conv(x, w, groups=groups)
    want = conv_ref(x, w, groups=groups)
    _same_nonfinite(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_transpose_and_grads_propagate(dtype):
    y = _poisoned((2, 3, 5, 5), dtype, seed=3)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    got = fastconv.conv_transpose2d(y, w, stride=2)
    # conv_transpose(y, w) is the adjoint of conv from 2 to 3 channels
    want = conv_transpose_ref(y, w, (11, 11), stride=(2, 2))
    _same_nonfinite(got, want)
    gi = fastconv.conv_grad_input((2, 2, 11, 11), w, y, stride=2)
    _same_nonfinite(gi, want)
    x = _poisoned((2, 2, 7, 7), dtype, seed=4)
    gy = rng.standard_normal((2, 3, 5, 5)).astype(dtype)
    gw = fastconv.conv_grad_weight(x, (3, 2, 3, 3), gy)
    _same_nonfinite(gw, conv_grad_weight_ref(x, gy, (3, 2, 3, 3)))
    assert np.isnan(gw).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_picks_nan(dtype):
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    x[0, 0, 0, 1] = np.nan                  # window (0, 0)
    x[0, 1, 5, 5] = np.inf                  # window (2, 2)
    x[1, 2, 3, 3] = np.nan
    x[1, 2, 2, 2] = np.inf                  # NaN wins over +inf in window (1, 1)
    x[1, 0, 6:, 6:] = -np.inf               # a window of -inf only
    out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    want, widx = ref_pool.max_pool(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    _same_nonfinite(out, want)
    assert np.isnan(out[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1
    assert np.isposinf(out[0, 1, 2, 2]) and idx[0, 1, 2, 2] == 5 * 8 + 5
    assert np.isnan(out[1, 2, 1, 1]) and idx[1, 2, 1, 1] == 3 * 8 + 3
    assert np.isneginf(out[1, 0, 3, 3])
    np.testing.assert_array_equal(idx[np.isnan(out)], widx[np.isnan(want)])
    # adaptive and global max pooling pick NaN too
    assert np.isnan(fastconv.adaptive_max_pool2d(x, (2, 2))[0, 0, 0, 0])
    assert np.isnan(fastconv.global_max_pool(x)[0, 0]) and np.isnan(fastconv.global_max_pool(x)[1, 2])
    assert np.isposinf(fastconv.global_max_pool(x)[0, 1])
    # the gradient flows to the NaN's position
    g = fastconv.max_pool_backward(np.ones_like(out), idx, x.shape)
    assert g[0, 0, 0, 1] == 1 and g[1, 2, 3, 3] == 1 and g[1, 2, 2, 2] == 0


def test_max_pool_nan_matches_torch():
    torch = pytest.importorskip("torch")
    x = _poisoned((2, 3, 9, 9), np.float64, seed=11)
    x[0, 0, :3, :3] = np.nan
    for kw in [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, dilation=2, ceil_mode=True)]:
        out, idx = fastconv.max_pool2d(x, return_indices=True, **kw)
        tout, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), return_indices=True, **kw)
        np.testing.assert_array_equal(out, tout.numpy())          # array_equal treats NaN == NaN
        np.testing.assert_array_equal(idx, tidx.numpy())


def test_conv_nan_matches_torch():
    torch = pytest.importorskip("torch")
    x = _poisoned((2, 3, 9, 9), np.float64, seed=12)
    w = rng.standard_normal((4, 3, 3, 3))
    out = fastconv.conv2d(x, w, padding=1, stride=2)
    tout = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1, stride=2).numpy()
    _same_nonfinite(out, tout)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_and_lp_pool_propagate(dtype):
    x = rng.standard_normal((1, 2, 6, 6)).astype(dtype)
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 3, 3] = np.inf
    a = fastconv.avg_pool2d(x, 3)
    assert np.isnan(a[0, 0, 0, 0]) and np.isposinf(a[0, 1, 1, 1])
    assert np.isfinite(a[0, 0, 1, 1]) and np.isfinite(a[0, 1, 0, 0])
    assert np.isnan(fastconv.adaptive_avg_pool2d(x, 2)[0, 0, 0, 0])
    assert np.isnan(fastconv.global_avg_pool(x)[0, 0]) and np.isposinf(fastconv.global_avg_pool(x)[0, 1])
    lp = fastconv.lp_pool2d(np.abs(x), 2, 3)
    assert np.isnan(lp[0, 0, 0, 0]) and np.isposinf(lp[0, 1, 1, 1]) and np.isfinite(lp[0, 0, 1, 1])


def test_unshared_propagates():
    x = np.ones((1, 2, 5, 5))
    x[0, 1, 4, 4] = np.nan
    w = rng.standard_normal((3, 3, 2, 2, 3, 3))
    out = fastconv.unshared_conv(x, w)
    assert np.isnan(out[:, :, 2, 2]).all()
    assert np.isfinite(out[:, :, :2]).all() and np.isfinite(out[:, :, :, :2]).all()


# ------------------------------------------------------------------------------------------------
# inputs unchanged, results never alias inputs

def _calls():
    """(name, callable taking the arrays, arrays) covering every public function with array input."""
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    y = rng.standard_normal((2, 6, 7, 6))
    wu = rng.standard_normal((7, 6, 3, 4, 3, 3))
    yu = rng.standard_normal((2, 3, 7, 6))
    g = rng.standard_normal((2, 4, 4, 4))
    _, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    return [
        ("conv2d", lambda x, w, b: fastconv.conv2d(x, w, b, padding=1, groups=2, padding_mode="reflect"), (x, w, b)),
        ("conv", lambda x, w: fastconv.conv(x, w, groups=2, flip=True, padding="same"), (x, w)),
        ("conv_transpose2d", lambda y, w, b: fastconv.conv_transpose2d(y, w.reshape(6, 2, 3, 3), b[:4], groups=2), (y, w, b)),
        ("conv_grad_input", lambda w, y: fastconv.conv_grad_input(x.shape, w, y, groups=2), (w, y)),
        ("conv_grad_weight", lambda x, y: fastconv.conv_grad_weight(x, w.shape, y, groups=2), (x, y)),
        ("conv_grad_bias", lambda y: fastconv.conv_grad_bias(y), (y,)),
        ("max_pool2d", lambda x: fastconv.max_pool2d(x, 3, stride=2, padding=1, return_indices=True), (x,)),
        ("avg_pool2d", lambda x: fastconv.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False), (x,)),
        ("lp_pool2d", lambda x: fastconv.lp_pool2d(x, 2, 2), (x,)),
        ("adaptive_max_pool2d", lambda x: fastconv.adaptive_max_pool2d(x, (3, 5), return_indices=True), (x,)),
        ("adaptive_avg_pool2d", lambda x: fastconv.adaptive_avg_pool2d(x, (3, 5)), (x,)),
        ("global_max_pool", lambda x: fastconv.global_max_pool(x), (x,)),
        ("global_avg_pool", lambda x: fastconv.global_avg_pool(x), (x,)),
        ("max_pool_backward", lambda g, i: fastconv.max_pool_backward(g, i, x.shape), (g, idx)),
        ("avg_pool_backward", lambda g: fastconv.avg_pool_backward(g, x.shape, 2), (g,)),
        ("adaptive_avg_pool_backward", lambda g: fastconv.adaptive_avg_pool_backward(g, x.shape), (g,)),
        ("unshared_conv", lambda x, wu: fastconv.unshared_conv(x, wu), (x, wu)),
        ("unshared_conv_transpose", lambda yu, wu: fastconv.unshared_conv_transpose(yu, wu), (yu, wu)),
        ("unshared_conv_grad_input", lambda wu, yu: fastconv.unshared_conv_grad_input(x.shape, wu, yu), (wu, yu)),
        ("unshared_conv_grad_weight", lambda x, yu: fastconv.unshared_conv_grad_weight(x, wu.shape, yu), (x, yu)),
        ("conv_matrix", lambda w: fastconv.conv_matrix((4, 9, 8), w, groups=2, format="dense"), (w,)),
        ("unshared_conv_matrix", lambda wu: fastconv.unshared_conv_matrix((4, 9, 8), wu, format="csr"), (wu,)),
    ]


_CALLS = _calls()


def _outputs(r):
    if isinstance(r, tuple):
        return [a for a in r if isinstance(a, np.ndarray)]
    if isinstance(r, np.ndarray):
        return [r]
    return [getattr(r, "data", None)] if hasattr(r, "data") else []


@pytest.mark.parametrize("layout", ["contiguous", "readonly-noncontiguous"])
@pytest.mark.parametrize("name, fn, arrays", _CALLS, ids=[c[0] for c in _CALLS])
def test_inputs_unchanged_and_not_aliased(name, fn, arrays, layout):
    if layout != "contiguous":
        def odd(a):
            big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
            big[..., ::2] = a
            v = big[..., ::2]
            v.flags.writeable = False
            return v
        arrays = tuple(odd(a) for a in arrays)
    before = [a.copy() for a in arrays]
    r = fn(*arrays)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b, err_msg=f"{name} modified an input")
    for out in _outputs(r):
        if out is None:
            continue
        for a in arrays:
            assert not np.shares_memory(out, a), f"{name}: result aliases an input"
        # results are writeable, owned arrays: writing into them must not reach the inputs
        if out.flags.writeable:
            out[...] = 0
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# thread safety

def _workload():
    r = np.random.default_rng(99)
    x = r.standard_normal((2, 6, 21, 19))
    x32 = x.astype(np.float32)
    w = r.standard_normal((8, 3, 3, 3))
    wd = r.standard_normal((6, 1, 5, 5))
    y = r.standard_normal((2, 8, 10, 9))
    gy = r.standard_normal((2, 8, 11, 10))
    wu = r.standard_normal((10, 9, 4, 6, 3, 3))
    calls = [
        lambda: fastconv.conv2d(x, w, stride=2, padding=1, groups=2),
        lambda: fastconv.conv2d(x32, w.astype(np.float32), padding="same", groups=2),
        lambda: fastconv.conv2d(x, wd, groups=6, dilation=2),                    # direct stencil
        lambda: fastconv.conv_transpose2d(y, w, stride=2, groups=2, output_padding=1),
        lambda: fastconv.conv_grad_weight(x, w.shape, gy, stride=2, padding=1, groups=2),
        lambda: fastconv.max_pool2d(x, 3, stride=2, padding=1, return_indices=True),
        lambda: fastconv.avg_pool2d(x32, 3, stride=2, ceil_mode=True),
        lambda: fastconv.adaptive_avg_pool2d(x, (5, 7)),
        lambda: fastconv.unshared_conv(x, wu, stride=2),
        lambda: fastconv.conv_matrix((6, 21, 19), w, groups=2, format="csr").toarray(),
    ]
    return calls


def _flat(r):
    if isinstance(r, tuple):
        return [np.asarray(a) for a in r]
    return [np.asarray(r)]


def _run_threaded(calls, n_threads=8, rounds=3, extra=None):
    """Every thread runs every call ``rounds`` times (each thread in its own order)."""
    barrier = threading.Barrier(n_threads + (1 if extra else 0))
    results = [[] for _ in range(n_threads)]

    def worker(t):
        order = list(range(len(calls)))
        np.random.default_rng(t).shuffle(order)
        barrier.wait()
        for _ in range(rounds):
            for i in order:
                results[t].append((i, _flat(calls[i]())))

    with ThreadPoolExecutor(n_threads + (1 if extra else 0)) as ex:
        futs = [ex.submit(worker, t) for t in range(n_threads)]
        if extra:
            futs.append(ex.submit(extra, barrier, futs[:n_threads]))
        for f in futs:
            f.result(timeout=600)
    return results


def test_threads_give_identical_results():
    calls = _workload()
    serial = [_flat(c()) for c in calls]
    results = _run_threaded(calls)
    for t, rs in enumerate(results):
        assert len(rs) == 3 * len(calls)
        for i, got in rs:
            for g, s in zip(got, serial[i]):
                assert g.dtype == s.dtype and g.shape == s.shape
                assert np.array_equal(g, s), f"thread {t}, call {i}: result differs from the serial call"


@pytest.fixture
def restore_threads():
    saved = fastconv._config._global_threads
    yield
    fastconv._config._global_threads = saved


def test_thread_count_changes_do_not_break_other_threads(restore_threads):
    calls = _workload()
    serial = [_flat(c()) for c in calls]

    def meddler(barrier, workers):
        barrier.wait()
        k = 0
        while not all(f.done() for f in workers):
            k += 1
            fastconv.set_num_threads(1 + k % 3)
            with fastconv.threads(1 + (k + 1) % 2):
                fastconv.conv2d(np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3)))

    results = _run_threaded(calls, n_threads=7, rounds=1, extra=meddler)
    for rs in results:
        for i, got in rs:
            for g, s in zip(got, serial[i]):
                # a different thread count may change the summation order of reductions
                if g.dtype.kind == "f":
                    tol = 1e-5 if g.dtype == np.float32 else 1e-12
                    np.testing.assert_allclose(g, s, rtol=tol, atol=tol * np.abs(s).max())
                else:
                    np.testing.assert_array_equal(g, s)


def test_with_threads_is_thread_local(restore_threads):
    fastconv.set_num_threads(2)
    inside = threading.Event()
    release = threading.Event()
    seen = {}

    def a():
        with fastconv.threads(1):
            seen["a"] = fastconv.get_num_threads()
            inside.set()
            release.wait(30)
            seen["a_after"] = fastconv.get_num_threads()

    def b():
        inside.wait(30)
        seen["b"] = fastconv.get_num_threads()
        release.set()

    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start(), tb.start()
    ta.join(60), tb.join(60)
    expected = 2 if fastconv.get_num_threads() == 2 else 1      # 1 in a build without OpenMP
    assert seen["a"] == 1 and seen["a_after"] == 1
    assert seen["b"] == expected
    assert fastconv.get_num_threads() == expected


# ------------------------------------------------------------------------------------------------
# leaks

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
@pytest.mark.skipif(SANITIZED, reason="ASan's quarantine holds freed memory: RSS is meaningless")
def test_no_leak_in_repeated_small_calls():
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((2, 2, 3, 3))
    wd = rng.standard_normal((2, 1, 3, 3))
    wu = rng.standard_normal((4, 4, 2, 2, 3, 3))
    calls = [
        lambda: fastconv.conv2d(x, w, padding=1),
        lambda: fastconv.conv2d(x, wd, groups=2),
        lambda: fastconv.conv_transpose2d(x, w),
        lambda: fastconv.conv_grad_weight(x, w.shape, x, padding=1),
        lambda: fastconv.max_pool2d(x, 2, return_indices=True),
        lambda: fastconv.avg_pool2d(x, 3, stride=1),
        lambda: fastconv.adaptive_max_pool2d(x, 4, return_indices=True),
        lambda: fastconv.unshared_conv(x, wu),
        lambda: fastconv.conv_matrix((2, 6, 6), w),
        lambda: fastconv.max_pool_backward(*fastconv.max_pool2d(x, 2, return_indices=True), x.shape),
    ]
    # errors must not leak either
    bad = [lambda: fastconv.conv2d(x, w[:, :1]), lambda: fastconv.max_pool2d(x, 0)]

    def run(n):
        for i in range(n):
            calls[i % len(calls)]()
            if i % 10 == 0:
                with pytest.raises(ValueError):
                    bad[(i // 10) % 2]()

    run(1000)                                # warm up: caches, thread pools, BLAS buffers
    gc.collect()
    before = _rss_bytes()
    run(10_000)
    gc.collect()
    grown = _rss_bytes() - before
    assert grown < 4 * 2 ** 20, f"RSS grew by {grown / 2 ** 20:.1f} MB over 10,000 calls"


# ------------------------------------------------------------------------------------------------
# big inputs: index arithmetic in Py_ssize_t

def _available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


BIG_SIDE = 46341                             # 46341**2 = 2,147,488,281 > 2**31 elements


@pytest.mark.slow
@pytest.mark.skipif(SANITIZED, reason="too big for a sanitizer run")
def test_pooling_beyond_2_31_elements():
    n_in = BIG_SIDE * BIG_SIDE
    if _available_bytes() < 14 * 2 ** 30:
        pytest.skip("needs ~14 GiB of available memory")
    x = np.zeros((1, 1, BIG_SIDE, BIG_SIDE), np.float32)      # untouched pages stay unallocated
    x[0, 0, -1, -1] = 7.0                                    # flat index 2**31 + 4632: past int32
    x[0, 0, -1, -3] = 5.0
    x[0, 0, -3, -1] = -2.0
    x[0, 0, 0, 0] = 1.0
    assert n_in - 1 > 2 ** 31
    # max pooling with indices: 3 divides 46341, the last window is the far corner
    out, idx = fastconv.max_pool2d(x, 3, return_indices=True)
    assert out.shape == (1, 1, 15447, 15447)
    assert out[0, 0, -1, -1] == 7.0 and idx[0, 0, -1, -1] == n_in - 1
    assert out[0, 0, 0, 0] == 1.0 and idx[0, 0, 0, 0] == 0
    assert out[0, 0, -1, -2] == 0.0
    del idx
    # average pooling, ceil_mode window at the corner
    a = fastconv.avg_pool2d(x, 3)
    assert np.isclose(a[0, 0, -1, -1], (7.0 + 5.0 - 2.0) / 9)
    del a, out
    # global reductions over the whole plane
    assert fastconv.global_max_pool(x)[0, 0] == 7.0
    assert np.isclose(fastconv.global_avg_pool(x)[0, 0], 11.0 / n_in, rtol=1e-3)
    # backward scatters to the far corner
    g = fastconv.max_pool_backward(np.ones((1, 1, 1, 1), np.float32), np.array([[[[n_in - 1]]]]),
                                   (1, 1, BIG_SIDE, BIG_SIDE))
    assert g[0, 0, -1, -1] == 1.0 and g[0, 0, -1, -2] == 0.0 and g[0, 0, 0, 0] == 0.0


@pytest.mark.slow
@pytest.mark.skipif(SANITIZED, reason="too big for a sanitizer run")
# was a bug while this was written (the direct stencil, which uses no BLAS, got the 32-bit BLAS size
# check and raised MemoryError); fixed in the working tree at the time: not strict until it has landed
def test_single_channel_conv_beyond_2_31_elements():
    if _available_bytes() < 12 * 2 ** 30:
        pytest.skip("needs ~12 GiB of available memory")
    x = np.zeros((1, 1, BIG_SIDE, BIG_SIDE), np.float32)
    x[0, 0, -1, -1] = 7.0
    x[0, 0, -2, -3] = 5.0
    w = np.arange(1.0, 10.0, dtype=np.float32).reshape(1, 1, 3, 3)
    out = fastconv.conv2d(x, w, stride=3)
    assert out.shape == (1, 1, 15447, 15447)
    assert out[0, 0, -1, -1] == 7.0 * 9 + 5.0 * 4


@pytest.mark.slow
@pytest.mark.skipif(SANITIZED, reason="too big for a sanitizer run")
def test_gemm_path_beyond_32bit_blas_is_a_clean_memory_error():
    if _available_bytes() < 10 * 2 ** 30:
        pytest.skip("needs ~10 GiB of available memory")
    x = np.zeros((1, 2, 32769, 32769), np.float32)          # C_in * H * W > 2**31 - 1
    w = np.ones((1, 2, 1, 1), np.float32)
    for call in [lambda: fastconv.conv2d(x, w),
                 lambda: fastconv.conv_grad_weight(x, w.shape, np.zeros((1, 1, 32769, 32769), np.float32))]:
        with pytest.raises(MemoryError, match="32-bit BLAS"):
            call()
    assert not x.any()


@pytest.mark.parametrize("kernel", [(1,), (2,), (3,), (2, 2), (1, 1)])
def test_conv_inf_short_kernels(kernel):
    """inf under any tap stays inf (the GEMM path and the 3-tap direct passes)."""
    rank = len(kernel)
    x = np.zeros((1, 2) + (6,) * rank)
    x.reshape(-1)[[1, 7, x.size - 2]] = [np.inf, -np.inf, np.inf]
    for groups, w in [(1, np.ones((2, 2) + kernel))] + ([(2, np.ones((2, 1) + kernel))] if kernel == (3,) else []):
        _same_nonfinite(fastconv.conv(x, w, groups=groups), conv_ref(x, w, groups=groups))


def test_large_strides_in_conv():
    """A stride up to 2**63 - 1 (Py_ssize_t) is a valid argument: one window, no overflow."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out = fastconv.conv2d(x, np.ones((1, 1, 2, 2)), stride=2 ** 63 - 1)
    assert out.shape == (1, 1, 1, 1) and out[0, 0, 0, 0] == 0 + 1 + 4 + 5
    out = fastconv.conv2d(np.stack([x[0], x[0]], 1), np.ones((1, 2, 2, 2)), stride=2 ** 62)   # GEMM path
    assert out.shape == (1, 1, 1, 1) and out[0, 0, 0, 0] == 20
    out, idx = fastconv.max_pool2d(x, 2, stride=2 ** 62, return_indices=True)
    assert out[0, 0, 0, 0] == 5 and idx[0, 0, 0, 0] == 5
    g = fastconv.avg_pool_backward(np.ones((1, 1, 1, 1)), (1, 1, 4, 4), 2, stride=2 ** 62)
    assert g[0, 0, :2, :2].tolist() == [[0.25, 0.25], [0.25, 0.25]] and g.sum() == 1


@pytest.mark.parametrize("stride", [2 ** 30, 2 ** 40, 2 ** 62])
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "lp_pool2d"])
def test_large_strides_in_pooling(op, stride):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    if op == "lp_pool2d":
        out = fastconv.lp_pool2d(x, 1, 2, stride=stride)
        want = 0 + 1 + 4 + 5
    else:
        out = getattr(fastconv, op)(x, 2, stride=stride)
        want = 5 if op == "max_pool2d" else 2.5
    assert out.shape == (1, 1, 1, 1) and out[0, 0, 0, 0] == want


_OVERFLOW_CALLS = [
    ("conv2d", lambda x: fastconv.conv2d(x, np.ones((1, 1, 2, 2)), stride=2 ** 63)),
    ("conv_transpose1d", lambda x: fastconv.conv_transpose1d(x[0, :, 0, :1], np.ones((1, 1, 2)), stride=2 ** 63)),
    ("conv_grad_weight", lambda x: fastconv.conv_grad_weight(x, (1, 1, 2, 2), np.ones((1, 1, 1, 1)), stride=2 ** 63)),
    ("max_pool2d", lambda x: fastconv.max_pool2d(x, 2, stride=2 ** 63)),
    ("avg_pool_backward", lambda x: fastconv.avg_pool_backward(np.ones((1, 1, 1, 1)), (1, 1, 4, 4), 2, stride=2 ** 63)),
    ("conv_matrix", lambda x: fastconv.conv_matrix((1, 4, 4), np.ones((1, 1, 2, 2)), stride=2 ** 63)),
]


def test_unshared_stride_beyond_ssize_t():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    try:
        r = fastconv.unshared_conv(x, np.ones((1, 1, 1, 1, 2, 2)), stride=2 ** 63)
    except (ValueError, MemoryError) as e:
        assert str(e).startswith("unshared_conv:") and "stride" in str(e)
    else:
        assert r.shape == (1, 1, 1, 1) and r[0, 0, 0, 0] == 10


# bug being fixed while this was written (an _args.ntuple bound, uncommitted at the time): a stride >=
# 2**63 raised a bare OverflowError ('Python int too large to convert to C ssize_t') naming neither the
# function nor the argument. Not strict, so that CI passes both before and after the fix lands; drop
# the marker once it has.
@pytest.mark.parametrize("name, call", _OVERFLOW_CALLS, ids=[c[0] for c in _OVERFLOW_CALLS])
def test_stride_beyond_ssize_t(name, call):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    try:
        r = call(x)
    except (ValueError, MemoryError) as e:
        assert str(e).startswith(f"{name}:") and "stride" in str(e)
    else:
        assert r is not None and np.size(r) >= 1


def test_workspace_pool_reuses_and_bounds_blocks():
    """Kernels take their scratch from fastconv._workspace: a block given back is reused by the
    next call that fits, concurrent takers get distinct blocks, and the pool keeps at most
    MAX_KEEP blocks / MAX_KEEP_BYTES."""
    from fastconv import _workspace as ws
    ws.clear()
    a = ws.take(1000)
    b = ws.take(1000)
    assert a is not b and a.nbytes >= 1000 + ws.ALIGN
    ws.give(a)
    assert ws.take(500) is a            # the idle block that fits
    ws.give(a)
    ws.give(b)
    big = ws.take(10 ** 6)              # nothing idle fits: a new one
    assert big is not a and big is not b
    for _ in range(ws.MAX_KEEP + 3):
        ws.give(ws.take(10 ** 6 + 1))
    assert len(ws._idle) <= ws.MAX_KEEP
    assert sum(blk.nbytes for blk in ws._idle) <= ws.MAX_KEEP_BYTES
    ws.clear()
    assert ws._idle == []
    # a conv call leaves its blocks (the packed weight, the threads' scratch) in the pool, and a
    # repeat takes the same ones again
    import fastconv as fc
    x = np.random.default_rng(0).standard_normal((2, 8, 12, 12))
    w = np.random.default_rng(1).standard_normal((4, 8, 3, 3))
    y = fc.conv2d(x, w, padding=1)
    kept = sorted(map(id, ws._idle))
    assert 1 <= len(kept) <= ws.MAX_KEEP
    np.testing.assert_array_equal(fc.conv2d(x, w, padding=1), y)
    assert sorted(map(id, ws._idle)) == kept


def test_parallel_regions_write_only_private_variables(tmp_path):
    """tools/check_prange.py on the C that Cython generated for this build: every variable a
    prange / parallel body writes (or passes by address to be filled) is thread-private. A
    variable filled through a pointer stays shared in Cython -- a race tests rarely catch (the
    pooling kernels' row-chunk bounds were one)."""
    import glob
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sources = sorted(glob.glob(os.path.join(os.path.dirname(fastconv.__file__), "_core", "*.c")))
    tool = os.path.join(root, "tools", "check_prange.py")
    if not sources or not os.path.exists(tool):
        pytest.skip("no generated C next to the extensions (an installed wheel) or no tools/")
    spec = importlib.util.spec_from_file_location("check_prange", tool)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    regions = {p: check.audit(p) for p in sources}
    assert not any(regions.values()), regions
    # the audit itself finds such a variable
    fake = ("#pragma omp parallel private(__pyx_v_a)\n{\n  __pyx_v_a = 1;\n"
            "  f(&__pyx_v_r0);\n  __pyx_v_g2 += 1;\n}\n")
    probe = tmp_path / "probe.c"
    probe.write_text(fake)
    assert check.audit(str(probe)) == [(1, ["__pyx_v_g2", "__pyx_v_r0"])]
