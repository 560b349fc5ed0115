"""conv_matrix, unshared_conv_matrix and efficiency (fastconv/matrix.py)."""
import itertools
import json
import math
import time
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _args
from fastconv import matrix as fm
from fastconv.matrix import conv_matrix, efficiency, unshared_conv_matrix

from ref_conv import conv_ref, conv_transpose_ref

FORMATS = ("csr", "csc", "coo", "dense")


# --------------------------------------------------------------------------------------------------
# the lecture's numbers

def test_lecture_edge_detection_numbers():
    # input 320 wide x 280 high, kernel 2 wide x 1 high -> output 319 x 280
    r = efficiency((280, 320), (1, 2))
    assert r.output_shape == (1, 280, 319)
    assert r.matrix_shape == (319 * 280, 320 * 280)
    conv, dense, sparse = r["convolution"], r["dense matrix"], r["sparse matrix"]
    assert (conv["stored_floats"], dense["stored_floats"], sparse["stored_floats"]) == \
        (2, 8_003_072_000, 178_640)
    assert conv["flops"] == 267_960 == 319 * 280 * 3
    assert (conv["multiplies"], conv["adds"]) == (2 * 319 * 280, 319 * 280)
    assert sparse["flops"] == 267_960
    assert dense["flops"] > 16e9
    assert dense["multiplies"] == 319 * 280 * 320 * 280
    assert dense["adds"] == 319 * 280 * (320 * 280 - 1)
    for row in r.rows.values():
        assert row["flops"] == row["multiplies"] + row["adds"]
    # float32 bytes; CSR with int32 indices: values + column indices + row pointers
    assert conv["bytes"] == 8
    assert dense["bytes"] == 4 * 8_003_072_000
    assert sparse["bytes"] == 178_640 * 4 + 178_640 * 4 + (319 * 280 + 1) * 4
    assert r.index_dtype == "int32"
    text = str(r)
    for s in ("8,003,072,000", "178,640", "267,960", "convolution", "dense matrix", "sparse matrix"):
        assert s in text
    # the table is aligned: every row line has the same length
    body = [ln for ln in text.splitlines()[1:] if not ln.startswith("matrix ")]
    assert len({len(ln) for ln in body}) == 1
    d = r.to_dict()
    assert json.loads(json.dumps(d))["rows"]["dense matrix"]["stored_floats"] == 8_003_072_000


def test_lecture_matrix_is_what_the_report_counts():
    w = np.array([[[[-1.0, 1.0]]]], dtype=np.float32)
    M = conv_matrix((1, 280, 320), w)
    r = efficiency((280, 320), (1, 2))
    assert M.shape == r.matrix_shape
    assert M.nnz == r["sparse matrix"]["stored_floats"] == 178_640
    assert M.data.nbytes + M.indices.nbytes + M.indptr.nbytes == r["sparse matrix"]["bytes"]
    x = np.random.default_rng(0).random((1, 280, 320)).astype(np.float32)
    np.testing.assert_array_equal(M @ x.ravel(), fastconv.conv(x, w).ravel())


def test_efficiency_any_size_without_allocating():
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        r = efficiency((100_000, 100_000), (3, 3), padding=1, c_out=4, bias=True)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5 and peak < 1 << 20
    n = 100_000
    # padding 1: interior taps 3 per dim, the two border outputs have 2
    taps = 3 * n - 2
    assert r.nnz == 4 * taps * taps
    assert r["convolution"]["stored_floats"] == 4 * 9 + 4
    assert r["dense matrix"]["stored_floats"] == 4 * n * n * n * n + 4
    assert r.index_dtype == "int64"
    assert r["sparse matrix"]["bytes"] == (r.nnz + 4) * 4 + r.nnz * 8 + (4 * n * n + 1) * 8
    assert r["convolution"]["adds"] == r.nnz - 4 * n * n + 4 * n * n   # nnz - rows + bias adds


def test_efficiency_input_forms_and_errors():
    a = efficiency((3, 20, 30), (3, 3), c_out=6, groups=3)
    assert a.input_shape == (3, 20, 30) and a.output_shape == (6, 18, 28)
    assert "unshared" not in a.rows            # unshared has no groups
    assert a["convolution"]["stored_floats"] == 6 * 1 * 9
    assert efficiency((20, 30), 3).to_dict() == efficiency((1, 20, 30), (3, 3)).to_dict()
    assert efficiency((50,), 5, dtype="float64")["convolution"]["bytes"] == 40
    with pytest.raises(ValueError, match="efficiency: groups=2"):
        efficiency((3, 8, 8), (3, 3), groups=2)
    with pytest.raises(TypeError, match="efficiency: dtype"):
        efficiency((8, 8), (3, 3), dtype="int32")
    with pytest.raises(ValueError, match="efficiency: input_shape"):
        efficiency((2, 3, 8, 8), (3, 3))


# --------------------------------------------------------------------------------------------------
# M @ x == conv(x), M.T @ y == conv_transpose(y), for random configurations

@st.composite
def conv_configs(draw):
    rank = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    small = {1: 9, 2: 6, 3: 4}[rank]
    in_sp = tuple(draw(st.lists(st.integers(1, small), min_size=rank, max_size=rank)))
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank)))
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(*[st.integers(1, 3)] * rank)))
    dilation = draw(st.one_of(st.integers(1, 2), st.tuples(*[st.integers(1, 3)] * rank)))
    padding = draw(st.one_of(
        st.integers(0, 2), st.tuples(*[st.integers(0, 3)] * rank),
        st.tuples(*[st.tuples(st.integers(0, 3), st.integers(0, 3))] * rank),
        st.sampled_from(["valid", "same", "full"])))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    fmt = draw(st.sampled_from(FORMATS))
    return dict(rank=rank, groups=groups, c_in=cg * groups, c_out=c_out, in_sp=in_sp, kernel=kernel,
                stride=stride, dilation=dilation, padding=padding, dtype=dtype, fmt=fmt)


def _geom_or_none(cfg):
    try:
        return _args.conv_geometry("t", cfg["in_sp"], cfg["kernel"], cfg["stride"], cfg["padding"],
                                   cfg["dilation"])
    except ValueError:
        return None


def _check_csr_canonical(M):
    assert isinstance(M, sp.csr_array)
    starts = M.indptr[:-1]
    d = np.diff(M.indices.astype(np.int64))
    # strictly increasing inside every row (boundaries between rows may go down)
    inside = np.ones(M.nnz, dtype=bool)
    inside[starts[starts < M.nnz]] = False
    assert np.all(d[inside[1:]] > 0)


@settings(deadline=None, max_examples=80)
@given(conv_configs(), st.integers(0, 2 ** 31))
def test_matrix_matches_conv_and_transpose(cfg, seed):
    geom = _geom_or_none(cfg)
    assume(geom is not None)
    rng = np.random.default_rng(seed)
    dt = cfg["dtype"]
    w = rng.standard_normal((cfg["c_out"], cfg["c_in"] // cfg["groups"]) + cfg["kernel"]).astype(dt)
    x = rng.standard_normal((cfg["c_in"],) + cfg["in_sp"]).astype(dt)
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
              groups=cfg["groups"])
    M = conv_matrix(x.shape, w, format=cfg["fmt"], **kw)
    if cfg["fmt"] == "dense":
        assert isinstance(M, np.ndarray)
    else:
        assert isinstance(M, {"csr": sp.csr_array, "csc": sp.csc_array, "coo": sp.coo_array}[cfg["fmt"]])
    assert M.dtype == dt
    rows = cfg["c_out"] * math.prod(geom.out_sp)
    assert M.shape == (rows, x.size)
    tol = dict(rtol=1e-4, atol=1e-4) if dt == np.float32 else dict(rtol=1e-10, atol=1e-10)

    y = fastconv.conv(x, w, **kw)
    np.testing.assert_allclose(M @ x.ravel(), y.ravel(), **tol)
    ref = conv_ref(x[None], w, stride=geom.stride, pads=geom.pads, dilation=geom.dilation,
                   groups=cfg["groups"])[0]
    np.testing.assert_allclose(M @ x.ravel(), ref.ravel(), **tol)

    g = rng.standard_normal(y.shape).astype(dt)
    gt = fastconv.conv_transpose(g, w, stride=geom.stride, padding=geom.pads, dilation=geom.dilation,
                                 groups=cfg["groups"], output_size=cfg["in_sp"])
    np.testing.assert_allclose(M.T @ g.ravel(), gt.ravel(), **tol)
    gi = fastconv.conv_grad_input(x.shape, w, g, **kw)
    np.testing.assert_allclose(M.T @ g.ravel(), gi.ravel(), **tol)
    gref = conv_transpose_ref(g[None], w, cfg["in_sp"], stride=geom.stride, pads=geom.pads,
                              dilation=geom.dilation, groups=cfg["groups"])[0]
    np.testing.assert_allclose(M.T @ g.ravel(), gref.ravel(), **tol)

    # nnz and bytes are what the efficiency report counts (padding folded in, nothing stored for it)
    rep = efficiency(x.shape, cfg["kernel"], c_out=cfg["c_out"], dtype=dt, **kw)
    assert rep.matrix_shape == M.shape
    Mc = sp.csr_array(M) if cfg["fmt"] == "dense" else M.tocsr()
    assert np.count_nonzero(Mc.data) == rep.nnz                     # weights are nonzero a.s.
    if cfg["fmt"] != "dense":
        assert M.nnz == rep["sparse matrix"]["stored_floats"]
    per_row = np.diff(Mc.indptr)
    assert rep["sparse matrix"]["adds"] == int(np.maximum(per_row - 1, 0).sum())
    assert rep["convolution"]["multiplies"] == rep.nnz


@settings(deadline=None, max_examples=40)
@given(conv_configs())
def test_csr_structure_and_bytes(cfg):
    geom = _geom_or_none(cfg)
    assume(geom is not None)
    w = np.ones((cfg["c_out"], cfg["c_in"] // cfg["groups"]) + cfg["kernel"], dtype=cfg["dtype"])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
              groups=cfg["groups"])
    shape = (cfg["c_in"],) + cfg["in_sp"]
    M = conv_matrix(shape, w, **kw)
    _check_csr_canonical(M)
    assert M.indices.dtype == np.int32 and M.indptr.dtype == np.int32
    rep = efficiency(shape, cfg["kernel"], c_out=cfg["c_out"], dtype=cfg["dtype"], **kw)
    assert M.data.nbytes + M.indices.nbytes + M.indptr.nbytes == rep["sparse matrix"]["bytes"]
    # canonical as built: scipy's own canonicalisation changes nothing
    M2 = M.copy()
    M2.has_canonical_format = False
    M2.sum_duplicates()
    assert M2.nnz == M.nnz and np.array_equal(M2.indices, M.indices)
    # the compiled kernel and the NumPy fallback agree (values, indices, row starts)
    st_ = fm._Structure(geom, cfg["c_in"], cfg["c_out"], cfg["groups"])
    w2 = np.random.default_rng(1).standard_normal(w.shape).astype(cfg["dtype"]).reshape(cfg["c_out"], -1)
    goff = np.arange(cfg["c_out"]) // (cfg["c_out"] // cfg["groups"]) * 1000
    for idx in (np.dtype(np.int32), np.dtype(np.int64)):
        for a, b in zip(fm._nonzeros(geom, st_, w2, 0, goff, idx),
                        fm._nonzeros_numpy(geom, st_, w2, 0, goff, idx)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_padding_is_folded_in():
    w = np.ones((1, 1, 3, 3))
    M = conv_matrix((1, 5, 5), w, padding=1)
    # 9 taps in the interior 3x3 outputs, 6 on the edges, 4 at the corners
    assert M.nnz == 9 * 9 + 6 * 12 + 4 * 4
    assert np.all(M.data != 0)
    # a window entirely in the padding gives an empty row
    M = conv_matrix((1, 3), np.ones((1, 1, 1)), padding=2)
    assert M.shape == (7, 3) and M.nnz == 3
    assert np.diff(M.indptr).tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert efficiency((3,), 1, padding=2)["sparse matrix"]["adds"] == 0


def test_dtype_follows_weight():
    assert conv_matrix((1, 4), np.ones((1, 1, 2), dtype=np.float32)).dtype == np.float32
    assert conv_matrix((1, 4), np.ones((1, 1, 2), dtype=np.int64)).dtype == np.float64
    assert conv_matrix((1, 4), [[[1, 2]]], format="dense").dtype == np.float64
    w = np.ones((1, 1, 2), dtype=">f8")                      # non-native byte order works
    np.testing.assert_array_equal(conv_matrix((1, 3), w, format="dense"), [[1, 1, 0], [0, 1, 1]])
    with pytest.raises(TypeError, match="conv_matrix: weight has dtype float16"):
        conv_matrix((1, 4), np.ones((1, 1, 2), dtype=np.float16))


def test_argument_errors():
    w = np.ones((4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"conv_matrix: input has 2 channels but weight expects 3"):
        conv_matrix((2, 8, 8), w)
    with pytest.raises(ValueError, match="conv_matrix: input_shape must be unbatched"):
        conv_matrix((1, 3, 8, 8), w)
    with pytest.raises(ValueError, match="conv_matrix: format must be one of"):
        conv_matrix((3, 8, 8), w, format="lil")
    with pytest.raises(ValueError, match="conv_matrix: groups=3 must divide"):
        conv_matrix((9, 8, 8), w, groups=3)
    with pytest.raises(ValueError, match="conv_matrix: kernel size"):
        conv_matrix((3, 2, 2), w)
    with pytest.raises(ValueError, match="conv_matrix: weight must have shape"):
        conv_matrix((3, 8), np.ones((3, 3)))
    with pytest.raises(TypeError, match="conv_matrix: max_bytes"):
        conv_matrix((3, 8, 8), w, max_bytes=-1)


# --------------------------------------------------------------------------------------------------
# MemoryError before allocating

def test_memory_error_before_allocating():
    w = np.ones((1, 1, 3, 3), dtype=np.float32)
    n = 100_000
    need_csr = efficiency((n, n), (3, 3))["sparse matrix"]["bytes"]
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError) as e:
            conv_matrix((1, n, n), w)
        peak = tracemalloc.get_traced_memory()[1]
        with pytest.raises(MemoryError) as e2:
            conv_matrix((1, n, n), w, format="dense", max_bytes=None)   # more than any machine has
        peak = max(peak, tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes were allocated before the MemoryError"
    assert f"{need_csr:,} bytes" in str(e.value) and "max_bytes=1,073,741,824" in str(e.value)
    assert str(e.value).startswith("conv_matrix:")
    dense = (n - 2) ** 2 * n * n * 4
    assert f"{dense:,} bytes" in str(e2.value)


def test_max_bytes_is_exact():
    w = np.ones((2, 1, 3), dtype=np.float64)
    need = efficiency((1, 10), (3,), c_out=2, dtype="float64")
    M = conv_matrix((1, 10), w, max_bytes=need["sparse matrix"]["bytes"])
    assert M.data.nbytes + M.indices.nbytes + M.indptr.nbytes == need["sparse matrix"]["bytes"]
    with pytest.raises(MemoryError, match=f"would need {need['sparse matrix']['bytes']:,} bytes"):
        conv_matrix((1, 10), w, max_bytes=need["sparse matrix"]["bytes"] - 1)
    D = conv_matrix((1, 10), w, format="dense", max_bytes=need["dense matrix"]["bytes"])
    assert D.nbytes == need["dense matrix"]["bytes"]
    with pytest.raises(MemoryError, match="dense"):
        conv_matrix((1, 10), w, format="dense", max_bytes=D.nbytes - 1)
    coo = conv_matrix((1, 10), w, format="coo", max_bytes=None)
    assert coo.data.nbytes + sum(c.nbytes for c in coo.coords) == \
        fm._storage_bytes("coo", *coo.shape, coo.nnz, 8)
    csc = conv_matrix((1, 10), w, format="csc")
    assert csc.data.nbytes + csc.indices.nbytes + csc.indptr.nbytes == \
        fm._storage_bytes("csc", *csc.shape, csc.nnz, 8)


def test_csr_build_speed_1024_square_3x3():
    w = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3) + 1
    best = math.inf
    for _ in range(5):          # best of up to 5: the machine may be shared
        t0 = time.perf_counter()
        M = conv_matrix((1, 1024, 1024), w, padding=1)
        best = min(best, time.perf_counter() - t0)
        if best < 0.5:
            break
    assert M.nnz == efficiency((1024, 1024), 3, padding=1).nnz == (3 * 1024 - 2) ** 2
    assert best < 0.5, f"building the CSR matrix took {best:.3f} s"


# --------------------------------------------------------------------------------------------------
# unshared

def _unshared_ref(x, w, stride, pads, dilation):
    """Direct sum: out[co, *o] = sum_{ci, k} w[*o, co, ci, *k] * xpad[ci, *(o * s + k * d)]."""
    rank = x.ndim - 1
    xp = np.pad(x.astype(np.float64), ((0, 0),) + tuple(pads))
    out_sp = w.shape[:rank]
    c_out, c_in = w.shape[rank:rank + 2]
    kernel = w.shape[rank + 2:]
    out = np.zeros((c_out,) + out_sp)
    for o in itertools.product(*map(range, out_sp)):
        for k in itertools.product(*map(range, kernel)):
            i = tuple(oo * s + kk * d for oo, kk, s, d in zip(o, k, stride, dilation))
            out[(slice(None),) + o] += w[o + (slice(None), slice(None)) + k] @ xp[(slice(None),) + i]
    return out


@settings(deadline=None, max_examples=60)
@given(conv_configs(), st.integers(0, 2 ** 31))
def test_unshared_matrix(cfg, seed):
    geom = _geom_or_none(cfg)
    assume(geom is not None and cfg["padding"] != "full")
    rng = np.random.default_rng(seed)
    dt = cfg["dtype"]
    c_in = cfg["c_in"]
    w = rng.standard_normal(geom.out_sp + (cfg["c_out"], c_in) + cfg["kernel"]).astype(dt)
    x = rng.standard_normal((c_in,) + cfg["in_sp"]).astype(dt)
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"])
    M = unshared_conv_matrix(x.shape, w, format=cfg["fmt"], **kw)
    assert M.dtype == dt
    tol = dict(rtol=1e-4, atol=1e-4) if dt == np.float32 else dict(rtol=1e-10, atol=1e-10)
    ref = _unshared_ref(x, w, geom.stride, geom.pads, geom.dilation)
    np.testing.assert_allclose(M @ x.ravel(), ref.ravel(), **tol)
    # same pattern as the shared-weight matrix with groups=1
    P = conv_matrix(x.shape, np.ones((cfg["c_out"], c_in) + cfg["kernel"], dtype=dt), **kw)
    Mc = sp.csr_array(M) if cfg["fmt"] == "dense" else M.tocsr()
    assert np.count_nonzero(Mc.data) == P.nnz
    if hasattr(fastconv, "unshared_conv"):
        try:
            y = fastconv.unshared_conv(x, w, **kw)
        except NotImplementedError:  # pragma: no cover - while unshared.py is being written
            return
        np.testing.assert_allclose(M @ x.ravel(), y.ravel(), **tol)
        g = rng.standard_normal(y.shape).astype(dt)
        gt = fastconv.unshared_conv_transpose(g, w, stride=geom.stride, padding=geom.pads,
                                              dilation=geom.dilation, output_size=cfg["in_sp"])
        np.testing.assert_allclose(M.T @ g.ravel(), gt.ravel(), **tol)


def test_unshared_errors():
    w = np.ones((3, 1, 1, 2))                # out 3, C_out 1, C_in 1, k 2
    assert unshared_conv_matrix((1, 4), w).shape == (3, 4)
    with pytest.raises(ValueError, match=r"unshared_conv_matrix: weight has output locations \(3,\)"):
        unshared_conv_matrix((1, 5), w)
    with pytest.raises(ValueError, match="unshared_conv_matrix: input has 2 channels"):
        unshared_conv_matrix((2, 4), w)
    with pytest.raises(ValueError, match="unshared_conv_matrix: weight must have shape"):
        unshared_conv_matrix((1, 4), np.ones((3, 1, 2)))
    with pytest.raises(MemoryError, match="unshared_conv_matrix: a csr"):
        unshared_conv_matrix((1, 4), w, max_bytes=10)


def test_unshared_matrix_takes_the_padding_forms_of_unshared_conv():
    """The matrix of unshared_conv accepts what unshared_conv accepts: "valid" and "same", not
    "full" (which no unshared function takes)."""
    w = np.ones((3, 1, 1, 2))
    for f in (lambda: unshared_conv_matrix((1, 3), w, padding="full"),
              lambda: fastconv.unshared_conv(np.ones((1, 3)), w, padding="full")):
        with pytest.raises(ValueError, match="padding string must be one of 'valid', 'same'"):
            f()
    m = unshared_conv_matrix((1, 3), w, padding="same", format="dense")
    x = np.arange(3.0)
    np.testing.assert_allclose(m @ x, fastconv.unshared_conv(x[None], w, padding="same").ravel())


def test_efficiency_bias_is_a_flag():
    with pytest.raises(TypeError, match=r"efficiency: bias must be a bool"):
        efficiency((32, 32), (3, 3), bias=np.ones(3))
    with pytest.raises(TypeError, match=r"efficiency: bias must be a bool"):
        efficiency((32, 32), (3, 3), bias="no")
    with_bias = efficiency((32, 32), (3, 3), c_out=4, bias=True)
    assert with_bias.to_dict() == efficiency((32, 32), (3, 3), c_out=4, bias=1).to_dict()
    assert with_bias.to_dict() != efficiency((32, 32), (3, 3), c_out=4).to_dict()
