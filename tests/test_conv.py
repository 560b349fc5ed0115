"""Correctness tests of the convolution family (issue 3, "Correctness (tests/)").

conv / conv1d-3d, conv_transpose / conv_transpose1d-3d, conv_grad_input / conv_grad_weight /
conv_grad_bias, threads and show_config. References: the slow direct sums of ``ref_conv.py``,
scipy.signal.convolve, finite differences, and torch.nn.functional where torch is installed.
"""
import io
import itertools
import math
import os
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import fastconv as fc

sys.path.insert(0, os.path.dirname(__file__))
from ref_conv import conv_grad_weight_ref, conv_ref, conv_transpose_ref  # noqa: E402

MODES = ("zeros", "reflect", "replicate", "circular")
PAD_FORMS = ("int", "tuple", "pairs", "valid", "same", "full")
RANK_FUNCS = {1: fc.conv1d, 2: fc.conv2d, 3: fc.conv3d}
RANK_TFUNCS = {1: fc.conv_transpose1d, 2: fc.conv_transpose2d, 3: fc.conv_transpose3d}
MAX_SP = {1: 12, 2: 7, 3: 5}
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def ref_pads(padding, in_sp, k, s, d, flip=False):
    """(before, after) pairs of every padding form, computed independently of fastconv."""
    rank = len(k)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * rank
        if padding == "full":
            return tuple((dd * (kk - 1),) * 2 for kk, dd in zip(k, d))
        assert padding == "same"
        pairs = []
        for i, kk, ss, dd in zip(in_sp, k, s, d):
            out = -(-i // ss)
            total = max(0, (out - 1) * ss + dd * (kk - 1) + 1 - i)
            lo, hi = total // 2, total - total // 2
            pairs.append((hi, lo) if flip else (lo, hi))  # flip=True centres like scipy "same"
        return tuple(pairs)
    if isinstance(padding, int):
        return ((padding, padding),) * rank
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def flipped(w):
    return w[(Ellipsis,) + (slice(None, None, -1),) * (w.ndim - 2)]


def assert_close(got, ref, scale, dtype):
    """|got - ref| <= rtol * scale elementwise, ``scale`` = the same sum taken over |terms|."""
    dtype = np.dtype(dtype)
    assert got.dtype == dtype, (got.dtype, dtype)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    err = np.abs(got.astype(np.float64) - ref)
    bound = RTOL[dtype] * np.asarray(scale) + 1e-300
    bad = err > bound
    assert not bad.any(), (f"{bad.sum()} of {bad.size} elements off; worst error "
                           f"{err.max():.3g} vs magnitude {np.max(scale):.3g}")


def one_or_tuple(draw, values):
    """An int when every per-dim value is equal (and sometimes even then a tuple)."""
    if len(set(values)) == 1 and draw(st.booleans()):
        return values[0]
    return tuple(values)


def rng_for(seed):
    return np.random.default_rng(seed)


def copies(*arrays):
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def assert_unchanged(before, after):
    for b, a in zip(before, after):
        if b is not None:
            np.testing.assert_array_equal(np.asarray(a), b)


def assert_fresh(result, *inputs):
    for a in inputs:
        if isinstance(a, np.ndarray):
            assert not np.shares_memory(result, a)


# ----------------------------------------------------------------------------------------------
# the lecture's worked example
# ----------------------------------------------------------------------------------------------

LECTURE_R = [[156, 155, 156, 158, 158], [153, 154, 157, 159, 159], [149, 151, 155, 158, 159],
             [146, 146, 149, 153, 158], [145, 143, 143, 148, 158]]
LECTURE_G = [[167, 166, 167, 169, 169], [164, 165, 168, 170, 170], [160, 162, 166, 169, 170],
             [156, 156, 159, 163, 168], [155, 153, 153, 158, 168]]
LECTURE_B = [[163, 162, 163, 165, 165], [160, 161, 164, 166, 166], [156, 158, 162, 165, 166],
             [155, 155, 158, 162, 167], [154, 152, 152, 157, 167]]
LECTURE_K = [[[-1, -1, 1], [0, 1, -1], [0, 1, 1]],
             [[1, 0, 0], [1, -1, -1], [1, 0, -1]],
             [[0, 1, 1], [0, 1, 0], [1, -1, 1]]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, None])
def test_lecture_worked_example(dtype):
    image = np.array([LECTURE_R, LECTURE_G, LECTURE_B])          # (3, 5, 5) ints
    weight = np.array([LECTURE_K])                                # ONE filter, 3 input slices
    if dtype is not None:
        image, weight = image.astype(dtype), weight.astype(dtype)
    out = fc.conv2d(image[None], weight, np.array([1.0]), padding=1)
    assert out.shape == (1, 1, 5, 5)
    assert out[0, 0, 0, 0] == -25
    # the rest of the map, and the other entry points, agree with the direct sum
    ref = conv_ref(image[None], weight, [1.0], None, ((1, 1), (1, 1)))
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    np.testing.assert_allclose(fc.conv(image, weight, [1], padding=1), ref[0], rtol=1e-6)
    np.testing.assert_allclose(fc.conv2d(image, weight, [1], padding="same"), ref[0], rtol=1e-6)
    # by hand: 308 (R) - 498 (G) + 164 (B) + 1
    terms = [np.sum(np.pad(ch, 1)[:3, :3] * k) for ch, k in zip(image, LECTURE_K)]
    assert terms == [308, -498, 164]


# ----------------------------------------------------------------------------------------------
# randomized comparison with the reference
# ----------------------------------------------------------------------------------------------

@st.composite
def conv_cases(draw, ranks=(1, 2, 3), modes=MODES, forms=PAD_FORMS, flips=(False, True)):
    rank = draw(st.sampled_from(ranks))
    groups = draw(st.integers(1, 3))
    cig = draw(st.integers(1, 3))
    cog = draw(st.integers(1, 3))
    kmax = 3 if rank == 3 else 4
    k = tuple(draw(st.integers(1, kmax)) for _ in range(rank))
    s = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    d = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    mode = draw(st.sampled_from(modes))
    form = draw(st.sampled_from(forms))
    extra = 1 if mode == "reflect" else 0
    keff = [dd * (kk - 1) + 1 for kk, dd in zip(k, d)]
    if form in ("int", "tuple", "pairs"):
        if form == "int":
            p = draw(st.integers(0, 3))
            padding, pairs = p, [(p, p)] * rank
        elif form == "tuple":
            padding = tuple(draw(st.integers(0, 3)) for _ in range(rank))
            pairs = [(p, p) for p in padding]
        else:
            pairs = [(draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(rank)]
            # a mix of ints and pairs is a valid per-dim form too
            padding = tuple(a if a == b and draw(st.booleans()) else (a, b) for a, b in pairs)
        lbs = [max(1, ke - a - b, (max(a, b) + extra) if mode != "zeros" and (a or b) else 1)
               for ke, (a, b) in zip(keff, pairs)]
    elif form == "valid":
        padding = "valid"
        lbs = keff
    elif form == "full":
        padding = "full"
        lbs = [1 if mode == "zeros" or ke == 1 else ke - 1 + extra for ke in keff]
    else:
        padding = "same"
        lbs = [1 if mode == "zeros" else -(-(ke - 1) // 2) + extra for ke in keff]
        lbs = [max(lb, 1) for lb in lbs]
    sp = tuple(draw(st.integers(lb, lb + MAX_SP[rank])) for lb in lbs)
    batch = draw(st.sampled_from([None, 1, 2, 3]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return dict(rank=rank, groups=groups, cig=cig, cog=cog, k=k, stride=one_or_tuple(draw, s),
                s=s, dilation=one_or_tuple(draw, d), d=d, padding=padding, mode=mode, sp=sp,
                batch=batch, dtype=dtype, bias=draw(st.booleans()), flip=draw(st.sampled_from(flips)),
                seed=draw(st.integers(0, 2 ** 32 - 1)), generic=draw(st.booleans()))


def make_arrays(case):
    rng = rng_for(case["seed"])
    g, cig, cog = case["groups"], case["cig"], case["cog"]
    lead = () if case["batch"] is None else (case["batch"],)
    x = rng.standard_normal(lead + (g * cig,) + case["sp"]).astype(case["dtype"])
    w = rng.standard_normal((g * cog, cig) + case["k"]).astype(case["dtype"])
    b = rng.standard_normal(g * cog).astype(case["dtype"]) if case["bias"] else None
    return x, w, b


def reference(case, x, w, b):
    """(float64 reference, magnitude scale) for a conv case, batched."""
    xb = x if case["batch"] is not None else x[None]
    wr = flipped(w) if case["flip"] else w
    pads = ref_pads(case["padding"], case["sp"], case["k"], case["s"], case["d"], case["flip"])
    kw = dict(stride=case["s"], pads=pads, dilation=case["d"], groups=case["groups"], mode=case["mode"])
    ref = conv_ref(xb, wr, b, **kw)
    scale = conv_ref(np.abs(xb), np.abs(wr), None if b is None else np.abs(b), **kw)
    return ref, scale


def call_conv(case, x, w, b):
    f = fc.conv if case["generic"] else RANK_FUNCS[case["rank"]]
    return f(x, w, b, case["stride"], case["padding"], case["dilation"], case["groups"],
             padding_mode=case["mode"], flip=case["flip"])


@given(conv_cases())
def test_conv_matches_reference(case):
    x, w, b = make_arrays(case)
    before = copies(x, w, b)
    out = call_conv(case, x, w, b)
    ref, scale = reference(case, x, w, b)
    if case["batch"] is None:
        ref, scale = ref[0], scale[0]
    assert_close(out, ref, scale, case["dtype"])
    assert_unchanged(before, (x, w, b))
    assert_fresh(out, x, w, b)


@given(conv_cases(ranks=(2,), modes=("zeros",), flips=(False,)))
def test_conv_accepts_array_likes(case):
    """Nested lists work as input/weight/bias (np.asarray semantics); result float64."""
    x, w, b = make_arrays(case)
    out = call_conv(case, x.tolist(), w.tolist(), None if b is None else b.tolist())
    ref, scale = reference(case, x, w, b)
    if case["batch"] is None:
        ref, scale = ref[0], scale[0]
    assert_close(out, ref, scale, np.float64)


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
@pytest.mark.parametrize("k, dil", [(1, 1), (2, 1), (3, 1), (4, 1), (3, 2), (2, 3)])
def test_same_padding_any_stride(stride, k, dil):
    """'same' = TensorFlow's SAME: out = ceil(in / stride), the odd padding element after."""
    rng = rng_for(stride * 100 + k * 10 + dil)
    for n in range(1, 12):
        x = rng.standard_normal((1, 2, n))
        w = rng.standard_normal((3, 2, k))
        out = fc.conv1d(x, w, stride=stride, padding="same", dilation=dil)
        assert out.shape == (1, 3, -(-n // stride))
        total = max(0, (out.shape[-1] - 1) * stride + dil * (k - 1) + 1 - n)
        expl = fc.conv1d(x, w, stride=stride, padding=((total // 2, total - total // 2),), dilation=dil)
        np.testing.assert_array_equal(out, expl)


@pytest.mark.parametrize("k, dil", [(1, 1), (3, 1), (4, 2), (2, 3)])
def test_full_padding(k, dil):
    rng = rng_for(k + dil)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((2, 3, k, 2))
    out = fc.conv2d(x, w, padding="full", dilation=(dil, 1))
    assert out.shape == (2, 2, 6 + dil * (k - 1), 5 + 1)
    np.testing.assert_array_equal(out, fc.conv2d(x, w, padding=(dil * (k - 1), 1), dilation=(dil, 1)))


@pytest.mark.parametrize("mode", MODES)
def test_padding_modes_by_hand(mode):
    """A 1x1 identity kernel returns the padded input itself: compare with np.pad."""
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    w = np.eye(3).reshape(3, 3, 1, 1)
    out = fc.conv2d(x, w, padding=((1, 3), (2, 0)), padding_mode=mode)
    npmode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (0, 0), (1, 3), (2, 0)), mode=npmode))


def test_padding_mode_zeros_without_padding_ignores_mode():
    rng = rng_for(1)
    x, w = rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((1, 2, 3, 3))
    ref = fc.conv2d(x, w)
    for mode in MODES:
        np.testing.assert_array_equal(fc.conv2d(x, w, padding_mode=mode), ref)


# ----------------------------------------------------------------------------------------------
# layouts, byte orders, dtypes
# ----------------------------------------------------------------------------------------------

def _layouts(a):
    """The same values as ``a`` in awkward memory layouts."""
    big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    neg = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    ro = a.copy()
    ro.flags.writeable = False
    be = a.astype(a.dtype.newbyteorder(">"))
    le = a.astype(a.dtype.newbyteorder("<"))
    return {"contiguous": a, "fortran": np.asfortranarray(a), "strided": view, "negative": neg,
            "readonly": ro, "bigendian": be, "littleendian": le}


LAYOUTS = ["contiguous", "fortran", "strided", "negative", "readonly", "bigendian", "littleendian"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups, cin, cout", [(1, 3, 4), (3, 3, 6), (1, 1, 1)])  # im2row / depthwise / single
def test_conv_layouts(layout, dtype, groups, cin, cout):
    rng = rng_for(7)
    x = rng.standard_normal((2, cin, 7, 6)).astype(dtype)
    w = rng.standard_normal((cout, cin // groups, 3, 2)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    ref = fc.conv2d(x, w, b, stride=(1, 2), padding=1, groups=groups)
    xs, ws, bs = _layouts(x)[layout], _layouts(w)[layout], _layouts(b)[layout]
    before = copies(xs, ws, bs)
    out = fc.conv2d(xs, ws, bs, stride=(1, 2), padding=1, groups=groups)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, ref)
    assert_unchanged(before, (xs, ws, bs))
    assert_fresh(out, xs, ws, bs)
    # the other modes copy/pad first: the layout must not matter there either
    ref2 = fc.conv2d(x, w, b, padding=1, groups=groups, padding_mode="reflect", flip=True)
    np.testing.assert_array_equal(
        fc.conv2d(xs, ws, bs, padding=1, groups=groups, padding_mode="reflect", flip=True), ref2)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_transpose_and_grads_layouts(layout):
    rng = rng_for(8)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((6, 2, 3, 3))
    gy = rng.standard_normal((2, 6, 3, 3))
    kw = dict(stride=2, padding=1, groups=2)
    ref_t = fc.conv_transpose2d(gy, w, None, 2, 1, 1, 1, 2)
    ref_gi = fc.conv_grad_input(x.shape, w, gy, **kw)
    ref_gw = fc.conv_grad_weight(x, w.shape, gy, **kw)
    L = {k: _layouts(v)[layout] for k, v in dict(x=x, w=w, gy=gy).items()}
    before = copies(L["x"], L["w"], L["gy"])
    t = fc.conv_transpose2d(L["gy"], L["w"], None, 2, 1, 1, 1, 2)
    gi = fc.conv_grad_input(x.shape, L["w"], L["gy"], **kw)
    gw = fc.conv_grad_weight(L["x"], w.shape, L["gy"], **kw)
    gb = fc.conv_grad_bias(L["gy"])
    np.testing.assert_array_equal(t, ref_t)
    np.testing.assert_array_equal(gi, ref_gi)
    np.testing.assert_allclose(gw, ref_gw, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-13)
    assert_unchanged(before, (L["x"], L["w"], L["gy"]))
    for r in (t, gi, gw, gb):
        assert r.dtype.isnative
        assert_fresh(r, *L.values())


@pytest.mark.parametrize("xdt, wdt, bdt, expect", [
    (np.float32, np.float32, np.float32, np.float32),
    (np.float32, np.float32, None, np.float32),
    (np.float64, np.float64, None, np.float64),
    (np.float32, np.float64, None, np.float64),
    (np.float64, np.float32, None, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
    (np.int64, np.int64, None, np.float64),
    (np.int32, np.int16, np.uint8, np.float64),
    (np.uint8, np.float64, None, np.float64),
    (np.bool_, np.bool_, None, np.float64),
    (np.bool_, np.int8, np.int64, np.float64),
])
def test_conv_dtypes(xdt, wdt, bdt, expect):
    rng = rng_for(3)
    x = (rng.standard_normal((2, 2, 6)) * 3).astype(xdt)
    w = (rng.standard_normal((3, 2, 3)) * 3).astype(wdt)
    b = None if bdt is None else (rng.standard_normal(3) * 3).astype(bdt)
    out = fc.conv1d(x, w, b, padding=1)
    assert out.dtype == np.dtype(expect)
    ref = conv_ref(x, w, b, None, ((1, 1),))
    scale = conv_ref(np.abs(x.astype(float)), np.abs(w.astype(float)), None if b is None else np.abs(b.astype(float)),
                     None, ((1, 1),))
    assert_close(out, ref, scale, expect)
    # transposed and gradients follow the same dtype rule
    assert fc.conv_transpose1d(out.astype(xdt) if xdt != np.bool_ else out > 0, w).dtype == np.dtype(
        np.result_type(*[np.float64 if np.dtype(t).kind in "biu" else t for t in (xdt, wdt)]))
    assert fc.conv_grad_bias(np.ones((2, 3, 4), dtype=xdt)).dtype == (
        np.dtype(np.float64) if np.dtype(xdt).kind in "biu" else np.dtype(xdt))


def test_integer_conv_is_exact():
    x = np.arange(2 * 3 * 10).reshape(2, 3, 10)
    w = np.arange(4 * 3 * 3).reshape(4, 3, 3) - 17
    out = fc.conv1d(x, w, stride=2, padding=2)
    np.testing.assert_array_equal(out, conv_ref(x, w, None, (2,), ((2, 2),)))


# ----------------------------------------------------------------------------------------------
# transposed convolution
# ----------------------------------------------------------------------------------------------

@st.composite
def transpose_cases(draw, ranks=(1, 2, 3)):
    rank = draw(st.sampled_from(ranks))
    groups = draw(st.integers(1, 3))
    cin_g = draw(st.integers(1, 3))     # transposed input channels per group (= conv's C_out / g)
    cout_g = draw(st.integers(1, 3))    # transposed output channels per group (= conv's C_in / g)
    kmax = 3 if rank == 3 else 4
    k = tuple(draw(st.integers(1, kmax)) for _ in range(rank))
    s = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    d = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    form = draw(st.sampled_from(["int", "tuple", "pairs", "valid", "full", "same"]))
    keff = [dd * (kk - 1) + 1 for kk, dd in zip(k, d)]
    if form == "int":
        p = draw(st.integers(0, 3))
        padding, pairs = p, [(p, p)] * rank
    elif form == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(rank))
        pairs = [(p, p) for p in padding]
    elif form == "pairs":
        pairs = [(draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(rank)]
        padding = tuple(pairs)
    elif form == "valid":
        padding, pairs = "valid", [(0, 0)] * rank
    elif form == "full":
        padding = "full"
        pairs = [(ke - 1, ke - 1) for ke in keff]
    else:
        padding, pairs = "same", None
    sp, out_sp, opad = [], [], []
    for i in range(rank):
        if pairs is None:  # 'same': any output size L with ceil(L / s) == in
            n = draw(st.integers(1, MAX_SP[rank]))
            L = draw(st.integers((n - 1) * s[i] + 1, n * s[i]))
            sp.append(n)
            out_sp.append(L)
            opad.append(0)
            continue
        pb, pa = pairs[i]
        # smallest input size whose transposed output is >= 1: (n-1)*s + keff - pb - pa >= 1
        lb = max(1, 1 + -(-(pb + pa + 1 - keff[i]) // s[i]))
        n = draw(st.integers(lb, lb + MAX_SP[rank] - 1))
        o = draw(st.integers(0, max(s[i], d[i]) - 1))
        sp.append(n)
        opad.append(o)
        out_sp.append((n - 1) * s[i] - pb - pa + keff[i] + o)
    if pairs is None:
        pairs = ref_pads("same", out_sp, k, s, d)
    how = draw(st.sampled_from(["output_padding", "output_size", "output_size_full"]))
    if padding == "same" and how == "output_padding" and out_sp != [n * ss for n, ss in zip(sp, s)]:
        how = "output_size"
    return dict(rank=rank, groups=groups, cin_g=cin_g, cout_g=cout_g, k=k, s=s, d=d,
                stride=one_or_tuple(draw, s), dilation=one_or_tuple(draw, d), padding=padding,
                pairs=tuple(pairs), sp=tuple(sp), out_sp=tuple(out_sp), opad=one_or_tuple(draw, opad),
                how=how, batch=draw(st.sampled_from([None, 1, 2])), bias=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float64])), generic=draw(st.booleans()),
                seed=draw(st.integers(0, 2 ** 32 - 1)))


def call_transpose(case, y, w, b):
    f = fc.conv_transpose if case["generic"] else RANK_TFUNCS[case["rank"]]
    kw = {}
    if case["how"] == "output_padding":
        kw["output_padding"] = case["opad"]
    elif case["how"] == "output_size":
        kw["output_size"] = case["out_sp"]
    else:  # torch's module accepts the full output shape too
        lead = (() if case["batch"] is None else (case["batch"],)) + (case["groups"] * case["cout_g"],)
        kw["output_size"] = lead + case["out_sp"]
    return f(y, w, b, stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
             groups=case["groups"], **kw)


@given(transpose_cases())
def test_conv_transpose_matches_reference(case):
    rng = rng_for(case["seed"])
    g = case["groups"]
    lead = () if case["batch"] is None else (case["batch"],)
    y = rng.standard_normal(lead + (g * case["cin_g"],) + case["sp"]).astype(case["dtype"])
    w = rng.standard_normal((g * case["cin_g"], case["cout_g"]) + case["k"]).astype(case["dtype"])
    b = rng.standard_normal(g * case["cout_g"]).astype(case["dtype"]) if case["bias"] else None
    before = copies(y, w, b)
    out = call_transpose(case, y, w, b)
    yb = y if case["batch"] is not None else y[None]
    kw = dict(stride=case["s"], pads=case["pairs"], dilation=case["d"], groups=g)
    ref = conv_transpose_ref(yb, w, case["out_sp"], **kw)
    scale = conv_transpose_ref(np.abs(yb), np.abs(w), case["out_sp"], **kw)
    if b is not None:
        ref = ref + b.reshape((1, -1) + (1,) * case["rank"])
        scale = scale + np.abs(b).reshape((1, -1) + (1,) * case["rank"])
    if case["batch"] is None:
        ref, scale = ref[0], scale[0]
    assert_close(out, ref, scale, case["dtype"])
    assert_unchanged(before, (y, w, b))
    assert_fresh(out, y, w, b)


@given(conv_cases(modes=("zeros",), flips=(False,)), st.integers(0, 2 ** 32 - 1))
def test_adjoint_identity(case, seed):
    """<conv(x, w), y> == <x, conv_transpose(y, w)>, and conv_grad_input is the same map."""
    case = dict(case, dtype=np.float64, bias=False)
    x, w, _ = make_arrays(case)
    cx = call_conv(case, x, w, None)
    y = rng_for(seed).standard_normal(cx.shape)
    tf = fc.conv_transpose if case["generic"] else RANK_TFUNCS[case["rank"]]
    ty = tf(y, w, None, case["stride"], case["padding"], 0, case["dilation"], case["groups"],
            output_size=case["sp"])
    assert ty.shape == x.shape
    lhs, rhs = np.vdot(cx, y), np.vdot(x, ty)
    mag = np.vdot(np.abs(cx), np.abs(y)) + np.vdot(np.abs(x), np.abs(ty))
    assert abs(lhs - rhs) <= 1e-12 * mag
    gi = fc.conv_grad_input(x.shape, w, y, case["stride"], case["padding"], case["dilation"], case["groups"])
    np.testing.assert_allclose(gi, ty, rtol=1e-12, atol=1e-12 * np.abs(ty).max())


def test_conv_transpose_docstring_example_and_bias():
    out = fc.conv_transpose(np.ones((1, 1, 2)), np.ones((1, 1, 3)), stride=2)
    assert out.tolist() == [[[1.0, 1.0, 2.0, 1.0, 1.0]]]
    out = fc.conv_transpose1d(np.ones((1, 2)), np.ones((1, 2, 3)), np.array([10.0, -1.0]), stride=2)
    assert out.tolist() == [[11.0, 11.0, 12.0, 11.0, 11.0], [0.0, 0.0, 1.0, 0.0, 0.0]]


@pytest.mark.parametrize("stride, dilation, k", [(2, 1, 3), (3, 1, 2), (1, 3, 2), (2, 3, 3)])
def test_output_padding_and_output_size(stride, dilation, k):
    """Every output_padding < max(stride, dilation) is accepted; output_size picks it."""
    rng = rng_for(stride + 10 * dilation)
    y = rng.standard_normal((2, 3, 4, 5))
    w = rng.standard_normal((3, 2, k, k))
    base = [(n - 1) * stride - 2 + dilation * (k - 1) + 1 for n in (4, 5)]
    for op in range(max(stride, dilation)):
        out = fc.conv_transpose2d(y, w, stride=stride, padding=1, dilation=dilation, output_padding=(op, 0))
        assert out.shape == (2, 2, base[0] + op, base[1])
        same = fc.conv_transpose2d(y, w, stride=stride, padding=1, dilation=dilation,
                                   output_size=(base[0] + op, base[1]))
        np.testing.assert_array_equal(out, same)
        ref = conv_transpose_ref(y, w, out.shape[2:], (stride,) * 2, ((1, 1),) * 2, (dilation,) * 2)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
        # output_padding only adds positions at the end: the common part is identical
        np.testing.assert_array_equal(out[..., :base[0], :], fc.conv_transpose2d(
            y, w, stride=stride, padding=1, dilation=dilation)[..., :base[0], :])
        # an int output_size means that size in every dimension (API.md: per-dimension arguments)
        sq = fc.conv_transpose2d(y[..., :4], w, stride=stride, padding=1, dilation=dilation,
                                 output_size=base[0] + op)
        np.testing.assert_array_equal(sq, fc.conv_transpose2d(
            y[..., :4], w, stride=stride, padding=1, dilation=dilation, output_padding=op))


@pytest.mark.parametrize("s", [1, 2, 3])
def test_conv_transpose_same_is_adjoint_of_same(s):
    rng = rng_for(s)
    for L in range(1, 10):
        x = rng.standard_normal((1, 2, L))
        w = rng.standard_normal((3, 2, 4))
        y = fc.conv1d(x, w, stride=s, padding="same")
        assert y.shape[-1] == -(-L // s)
        r = rng.standard_normal(y.shape)
        t = fc.conv_transpose1d(r, w, stride=s, padding="same", output_size=(L,))
        assert t.shape == x.shape
        assert np.isclose(np.vdot(y, r), np.vdot(x, t), rtol=1e-12, atol=1e-12)
        if L % s == 0:   # then output_size can be left out
            np.testing.assert_array_equal(fc.conv_transpose1d(r, w, stride=s, padding="same"), t)


# ----------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------

@given(conv_cases(modes=("zeros",), flips=(False,)))
@settings(max_examples=min(settings().max_examples, 30) if settings().max_examples < 2000 else 500)
def test_grad_weight_and_input_vs_reference(case):
    case = dict(case, bias=False)
    x, w, _ = make_arrays(case)
    y = call_conv(case, x, w, None)
    gy = rng_for(case["seed"] + 1).standard_normal(y.shape).astype(case["dtype"])
    args = (case["stride"], case["padding"], case["dilation"], case["groups"])
    gw = fc.conv_grad_weight(x, w.shape, gy, *args)
    gi = fc.conv_grad_input(x.shape, w, gy, *args)
    xb, gyb = (x, gy) if case["batch"] is not None else (x[None], gy[None])
    pads = ref_pads(case["padding"], case["sp"], case["k"], case["s"], case["d"])
    kw = dict(stride=case["s"], pads=pads, dilation=case["d"], groups=case["groups"])
    assert_close(gw, conv_grad_weight_ref(xb, gyb, w.shape, **kw),
                 conv_grad_weight_ref(np.abs(xb), np.abs(gyb), w.shape, **kw), case["dtype"])
    ref = conv_transpose_ref(gyb, w, case["sp"], **kw)
    scale = conv_transpose_ref(np.abs(gyb), np.abs(w), case["sp"], **kw)
    if case["batch"] is None:
        ref, scale = ref[0], scale[0]
    assert_close(gi, ref, scale, case["dtype"])


GRAD_CONFIGS = [
    # x shape, w shape, stride, padding, dilation, groups
    ((2, 3, 9), (4, 3, 3), 2, 1, 1, 1),
    ((2, 4, 9), (6, 2, 2), 1, "same", 2, 2),
    ((1, 2, 7, 6), (3, 2, 3, 2), (2, 1), ((1, 0), (2, 1)), (1, 2), 1),
    ((2, 4, 6, 7), (4, 1, 3, 3), 1, 1, 1, 4),
    ((3, 5, 5), (2, 3, 2, 2), 2, "full", 1, 1),             # unbatched: (C, H, W)
    ((1, 2, 4, 5, 4), (2, 1, 2, 3, 2), (1, 2, 1), (1, 0, 1), (2, 1, 1), 2),
    ((2, 4, 6, 6), (3, 4, 1, 1), 2, 0, 1, 1),
]


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", GRAD_CONFIGS)
def test_gradients_vs_finite_differences(xs, ws, stride, padding, dilation, groups):
    """Loss 0.5 * ||conv(x, w) + b||^2: its gradients by central differences (exact for a
    quadratic up to rounding) against conv_grad_input / conv_grad_weight / conv_grad_bias."""
    rng = rng_for(len(xs) * 1000 + ws[0])
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    args = (stride, padding, dilation, groups)

    def loss(x, w, b):
        return 0.5 * np.sum(fc.conv(x, w, b, *args) ** 2)

    y = fc.conv(x, w, b, *args)
    gx = fc.conv_grad_input(x.shape, w, y, *args)
    gw = fc.conv_grad_weight(x, w.shape, y, *args)
    gb = fc.conv_grad_bias(y, batched=len(xs) == len(ws))
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    eps = 1e-5
    for arr, grad in ((x, gx), (w, gw), (b, gb)):
        flat_idx = rng.choice(arr.size, size=min(arr.size, 12), replace=False)
        for fi in flat_idx:
            idx = np.unravel_index(fi, arr.shape)
            old = arr[idx]
            arr[idx] = old + eps
            lp = loss(x, w, b)
            arr[idx] = old - eps
            lm = loss(x, w, b)
            arr[idx] = old
            fd = (lp - lm) / (2 * eps)
            assert abs(fd - grad[idx]) <= 1e-6 * max(1.0, abs(fd)), (idx, fd, grad[idx])


def test_grad_input_equals_conv_transpose():
    rng = rng_for(11)
    x_shape = (2, 6, 11, 9)
    w = rng.standard_normal((4, 3, 3, 2))
    gy = rng.standard_normal((2, 4, 6, 4))
    gi = fc.conv_grad_input(x_shape, w, gy, stride=2, padding=(1, 0), dilation=(1, 2), groups=2)
    t = fc.conv_transpose2d(gy, w, stride=2, padding=(1, 0), dilation=(1, 2), groups=2,
                            output_size=x_shape[2:])
    np.testing.assert_array_equal(gi, t)
    # unbatched input_shape
    gi1 = fc.conv_grad_input(x_shape[1:], w, gy[0], stride=2, padding=(1, 0), dilation=(1, 2), groups=2)
    np.testing.assert_array_equal(gi1, gi[0])
    gw1 = fc.conv_grad_weight(rng.standard_normal(x_shape[1:]), w.shape, gy[1], 2, (1, 0), (1, 2), 2)
    assert gw1.shape == w.shape


def test_docstring_examples_of_gradients():
    assert fc.conv_grad_input((1, 1, 3), np.array([[[1.0, 2.0]]]), np.ones((1, 1, 2))).tolist() == [[[1.0, 3.0, 2.0]]]
    assert fc.conv_grad_weight(np.arange(3.0)[None, None], (1, 1, 2), np.ones((1, 1, 2))).tolist() == [[[1.0, 3.0]]]


def test_conv_grad_bias():
    rng = rng_for(12)
    gy = rng.standard_normal((3, 4, 5, 6))
    np.testing.assert_allclose(fc.conv_grad_bias(gy), gy.sum(axis=(0, 2, 3)), rtol=1e-13)
    assert fc.conv_grad_bias(np.ones((2, 3, 4, 5))).tolist() == [40.0, 40.0, 40.0]
    np.testing.assert_allclose(fc.conv_grad_bias(gy[0], batched=False), gy[0].sum(axis=(1, 2)), rtol=1e-13)
    np.testing.assert_allclose(fc.conv_grad_bias(gy[0, :, :, 0]), gy[0, :, :, 0].sum(axis=1), rtol=1e-13)
    g32 = gy.astype(np.float32)
    assert fc.conv_grad_bias(g32).dtype == np.float32
    np.testing.assert_allclose(fc.conv_grad_bias(g32[:, :, ::-2, 1:]), gy[:, :, ::-2, 1:].sum(axis=(0, 2, 3)),
                               rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# scipy, equivariance
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["full", "valid", "same"])
@pytest.mark.parametrize("ksize", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [9, 10])
def test_flip_matches_scipy_convolve(mode, ksize, n):
    signal = pytest.importorskip("scipy.signal")
    rng = rng_for(ksize * 100 + n)
    x1, k1 = rng.standard_normal(n + 8), rng.standard_normal(ksize)
    got = fc.conv1d(x1[None], k1[None, None], padding=mode, flip=True)[0]
    np.testing.assert_allclose(got, signal.convolve(x1, k1, mode=mode, method="direct"), rtol=1e-12, atol=1e-12)
    x2, k2 = rng.standard_normal((n, n + 3)), rng.standard_normal((ksize, ksize + 1))
    got = fc.conv2d(x2[None], k2[None, None], padding=mode, flip=True)[0]
    np.testing.assert_allclose(got, signal.convolve(x2, k2, mode=mode, method="direct"), rtol=1e-12, atol=1e-12)
    # float32 and batched
    got = fc.conv2d(x2[None, None].astype(np.float32), k2[None, None].astype(np.float32),
                    padding=mode, flip=True)[0, 0]
    np.testing.assert_allclose(got, signal.convolve(x2, k2, mode=mode, method="direct"), rtol=1e-4, atol=1e-4)


def test_flip_is_true_convolution_formula():
    """(K * I)(i, j) = sum K(a, b) I(i - a, j - b), with 'full' padding, by hand."""
    rng = rng_for(13)
    img, ker = rng.standard_normal((5, 6)), rng.standard_normal((3, 2))
    got = fc.conv2d(img[None], ker[None, None], padding="full", flip=True)[0]
    ref = np.zeros((7, 7))
    for i, j in itertools.product(range(7), range(7)):
        for a, b in itertools.product(range(3), range(2)):
            if 0 <= i - a < 5 and 0 <= j - b < 6:
                ref[i, j] += ker[a, b] * img[i - a, j - b]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("shift", [1, 2, 3])
def test_shift_equivariance(rank, shift):
    """Shifting the input by s (along any axis) shifts a stride-1 'valid' output by s."""
    rng = rng_for(rank * 10 + shift)
    sp = {1: (20,), 2: (9, 10), 3: (8, 9, 8)}[rank]
    x = rng.standard_normal((2, 3) + sp)
    w = rng.standard_normal((4, 3) + (3,) * rank)
    for dil in (1, 2):
        out = fc.conv(x, w, padding="valid", dilation=dil)
        for axis in range(2, 2 + rank):
            xs = np.take(x, range(shift, x.shape[axis]), axis=axis)      # x_s[i] = x[i + s]
            outs = fc.conv(xs, w, padding="valid", dilation=dil)
            np.testing.assert_allclose(outs, np.take(out, range(shift, out.shape[axis]), axis=axis),
                                       rtol=1e-12, atol=1e-12)
        # and circular padding makes it exact on the whole torus
        xr = np.roll(x, shift, axis=-1)
        p = dil  # k = 3: dil * (k - 1) / 2 per side keeps the size
        np.testing.assert_allclose(fc.conv(xr, w, padding=p, dilation=dil, padding_mode="circular"),
                                   np.roll(fc.conv(x, w, padding=p, dilation=dil, padding_mode="circular"),
                                           shift, axis=-1), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# special paths and tile boundaries
# ----------------------------------------------------------------------------------------------

SPECIAL = [
    # name, x shape, w shape, kwargs
    ("depthwise", (2, 8, 13, 11), (8, 1, 3, 3), dict(padding=1, groups=8)),
    ("depthwise x3 multiplier", (2, 4, 13, 11), (12, 1, 3, 3), dict(padding=1, groups=4)),
    ("depthwise stride2 dil2", (2, 4, 13, 11), (8, 1, 3, 2), dict(stride=2, dilation=2, padding=(2, 1), groups=4)),
    ("depthwise 1d", (3, 5, 40), (10, 1, 5), dict(stride=3, padding="same", groups=5)),
    ("depthwise 3d", (1, 3, 5, 6, 7), (3, 1, 2, 3, 3), dict(padding=1, groups=3)),
    ("single channel", (1, 1, 30, 31), (1, 1, 3, 3), dict(padding=1)),
    ("single channel many out", (2, 1, 17, 9), (5, 1, 4, 2), dict(stride=(2, 1))),
    ("single channel stride3", (1, 1, 32, 32), (1, 1, 5, 5), dict(stride=3, padding=2, dilation=2)),
    ("pointwise", (2, 6, 9, 10), (4, 6, 1, 1), {}),
    ("pointwise groups", (2, 6, 9, 10), (4, 3, 1, 1), dict(groups=2)),
    ("pointwise stride2", (2, 6, 9, 10), (4, 6, 1, 1), dict(stride=2)),
    ("pointwise padded", (2, 6, 9, 10), (4, 6, 1, 1), dict(padding=1)),
    ("pointwise 1d", (2, 6, 33), (5, 6, 1), {}),
    ("pointwise 3d", (2, 3, 4, 5, 6), (2, 3, 1, 1, 1), dict(stride=(1, 2, 1))),
    ("kernel == input", (2, 3, 5, 4), (2, 3, 5, 4), {}),
    ("1x1 input", (2, 3, 1, 1), (2, 3, 1, 1), {}),
    ("1x1 input padded", (2, 3, 1, 1), (2, 3, 3, 3), dict(padding=1)),
    ("long 1d", (2, 3, 5000), (4, 3, 5), dict(padding=2)),
    ("long 1d strided", (1, 2, 5000), (3, 2, 7), dict(stride=3, dilation=2)),
    ("tiles 2d", (2, 8, 70, 70), (6, 8, 3, 3), dict(padding=1)),
    ("tiles 2d stride", (2, 8, 70, 70), (6, 8, 3, 3), dict(stride=2, padding=1, dilation=2)),
    ("tiles 2d groups", (2, 8, 70, 70), (4, 2, 3, 3), dict(padding="same", groups=4)),
    ("tiles 3d", (1, 4, 12, 20, 21), (3, 4, 3, 3, 3), dict(padding=1)),
    ("big K", (1, 64, 12, 12), (3, 64, 5, 5), dict(padding=2)),
    # the row-shift form of the forward GEMM (stride 1 along W, C_in/g * KD * KH >= 128)
    ("row shift 2d", (2, 48, 20, 23), (8, 48, 3, 3), dict(padding=1)),
    ("row shift 2d same even", (3, 64, 9, 17), (5, 64, 2, 4), dict(padding="same", stride=(2, 1))),
    ("row shift 3d", (1, 16, 6, 7, 9), (4, 16, 3, 3, 3), dict(padding=(0, 0, 1))),
    ("row shift 1d", (2, 130, 50), (3, 130, 4), dict(padding="same", dilation=2)),
    ("row shift groups", (2, 64, 8, 30), (6, 32, 5, 5), dict(padding=(1, 2), groups=2)),
]


def _ref_special(x, w, kw, dtype):
    rank = w.ndim - 2
    k = w.shape[2:]
    norm = lambda v, n: (v,) * rank if isinstance(v, int) else tuple(v)  # noqa: E731
    s, d = norm(kw.get("stride", 1), rank), norm(kw.get("dilation", 1), rank)
    pads = ref_pads(kw.get("padding", 0), x.shape[2:], k, s, d)
    return (conv_ref(x, w, None, s, pads, d, kw.get("groups", 1)),
            conv_ref(np.abs(x), np.abs(w), None, s, pads, d, kw.get("groups", 1)), s, d, pads)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, xs, ws, kw", SPECIAL, ids=[c[0] for c in SPECIAL])
def test_special_paths(name, xs, ws, kw, dtype):
    rng = rng_for(abs(hash(name)) % 2 ** 32)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    ref, scale, s, d, pads = _ref_special(x, w, kw, dtype)
    bshape = (1, -1) + (1,) * (w.ndim - 2)
    out = fc.conv(x, w, b, **kw)
    assert_close(out, ref + b.reshape(bshape), scale + np.abs(b).reshape(bshape), dtype)
    # unbatched gives the first sample
    np.testing.assert_array_equal(fc.conv(x[0], w, b, **kw), out[0])
    # the backward kernels on the same geometry
    gy = rng.standard_normal(out.shape).astype(dtype)
    g = kw.get("groups", 1)
    gi = fc.conv_grad_input(x.shape, w, gy, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), g)
    rk = dict(stride=s, pads=pads, dilation=d, groups=g)
    assert_close(gi, conv_transpose_ref(gy, w, x.shape[2:], **rk),
                 conv_transpose_ref(np.abs(gy), np.abs(w), x.shape[2:], **rk), dtype)
    gw = fc.conv_grad_weight(x, w.shape, gy, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), g)
    assert_close(gw, conv_grad_weight_ref(x, gy, w.shape, **rk),
                 conv_grad_weight_ref(np.abs(x), np.abs(gy), w.shape, **rk), dtype)


def spy_on(monkeypatch, module, name):
    """Replace module.name by a wrapper that records each result; returns the list of results."""
    taken = []
    orig = getattr(module, name)

    def spy(*args):
        r = orig(*args)
        taken.append(r)
        return r
    monkeypatch.setattr(module, name, spy)
    return taken


@pytest.fixture
def row_shift_everywhere(monkeypatch):
    """The row-shift forward form for every GEMM depth; returns the list of its tilings taken."""
    conv_mod = sys.modules["fastconv.conv"]
    monkeypatch.setattr(conv_mod, "ROW_SHIFT_MIN_DEPTH", 0)
    monkeypatch.setattr(conv_mod, "WINOGRAD", False)
    taken = spy_on(monkeypatch, conv_mod, "_row_shift_tiles")
    conv_mod._forward_plan.cache_clear()
    yield conv_mod, taken
    conv_mod._forward_plan.cache_clear()


@pytest.mark.parametrize("tile_bytes", [1, 3000, 1 << 20])
def test_row_shift_form_vs_reference(row_shift_everywhere, tile_bytes, monkeypatch):
    """The row-shift form (KW taps in the GEMM's N dimension, then summed with their column
    shifts) against the reference: row blocks and split rows (tiny tiles), padding wider than the
    kernel (outputs whose taps all lie in the padding), dilation, groups, strides along D/H,
    1-3-D, both dtypes, the in-place (kernel 1 along D and H) variant."""
    conv_mod, taken = row_shift_everywhere
    monkeypatch.setattr(conv_mod, "ROW_TILE_BYTES", tile_bytes)
    rng = rng_for(77 + tile_bytes)
    for trial in range(40):
        rank = int(rng.integers(1, 4))
        dtype = (np.float32, np.float64)[trial % 2]
        g = int(rng.choice([1, 2]))
        cig, cog = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        sp = tuple(int(v) for v in rng.integers(2, 6, rank - 1)) + (int(rng.integers(3, 40)),)
        k = tuple(int(v) for v in rng.integers(1, 3, rank - 1)) + (int(rng.integers(2, 5)),)
        d = tuple(int(v) for v in rng.integers(1, 3, rank))
        s = tuple(int(v) for v in rng.integers(1, 3, rank - 1)) + (1,)
        pads = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (rank, 2)))
        if trial % 7 == 0:
            pads = pads[:-1] + ((2 * k[-1] + 3, 2 * k[-1] + 3),)    # columns with no valid tap
        if any(n + a + b < dd * (kk - 1) + 1 for n, (a, b), dd, kk in zip(sp, pads, d, k)):
            continue
        x = rng.standard_normal((int(rng.integers(1, 4)), cig * g) + sp).astype(dtype)
        w = rng.standard_normal((cog * g, cig) + k).astype(dtype)
        b = rng.standard_normal(cog * g).astype(dtype)
        n_before = len(taken)
        conv_mod._forward_plan.cache_clear()
        out = fc.conv(x, w, b, stride=s, padding=pads, dilation=d, groups=g)
        ref = conv_ref(x, w, b, s, pads, d, g)
        scale = conv_ref(np.abs(x), np.abs(w), np.abs(b), s, pads, d, g)
        assert_close(out, ref, scale, dtype)
        used = taken[n_before:]
        if cig > 1 and 4 * sp[-1] <= 5 * out.shape[-1]:   # (one channel per group: the stencil)
            assert used and used[-1] is not None
    tilings = [t for t in taken if t is not None]
    assert len(tilings) >= 20
    if tile_bytes == 1:
        assert any(R == 1 for R, CW, direct in tilings)      # rows split into column chunks
    assert any(direct for R, CW, direct in tilings) and not all(direct for R, CW, direct in tilings)


def test_row_shift_nan_stays_local(row_shift_everywhere):
    """A NaN in the input reaches exactly the outputs whose window covers it: the GEMM rows of the
    row-shift form over neighbouring input columns never leak into other outputs."""
    x = np.ones((1, 3, 9, 40))
    x[0, 1, 4, 20] = np.nan
    w = np.ones((2, 3, 3, 5))
    y = fc.conv2d(x, w, padding=(1, 2), dilation=(1, 2))
    expect = np.zeros(y.shape, bool)
    expect[0, :, 3:6, 14:23:2] = True          # ow - 2 + 2 * kw == 20 for kw = 0..4
    np.testing.assert_array_equal(np.isnan(y), expect)
    assert row_shift_everywhere[1][-1] is not None


@pytest.fixture(params=["all-axes", "planes"])
def winograd_everywhere(monkeypatch, request):
    """The Winograd forward form for any channel count and every tile-size table entry (no minimum
    saving); returns the module and the list of its plans taken (None where it did not apply).
    "planes": the form that transforms only H and W of a 3-d kernel, its KD taps in the GEMM
    depth, for every 3-d kernel with KD > 1 (and no Winograd for the others)."""
    conv_mod = sys.modules["fastconv.conv"]
    wino = sys.modules["fastconv._winograd"]
    if request.param == "planes":
        monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_CHANNELS", 1 << 40)
        monkeypatch.setattr(conv_mod, "WINOGRAD_PLANES_MIN_CHANNELS", 1)
        monkeypatch.setattr(conv_mod, "WINOGRAD_PLANES_MIN_DEPTH", 1)
    else:
        monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(wino, "MIN_SAVING", 0)
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_TILES", 1)
    taken = spy_on(monkeypatch, conv_mod, "_winograd_tiles")
    conv_mod._forward_plan.cache_clear()
    yield conv_mod, wino, taken
    conv_mod._forward_plan.cache_clear()


def _planes(taken):
    """Whether the plans taken are of the "planes" form (kdd > 1)."""
    return any(t[3] > 1 for t in taken if t is not None)


WINO_TABLES = {
    "default": None,
    # larger tiles: the dense (generic) transform passes, F(3, 2), F(4, 3), F(3, 4), F(4, 5)
    "large": {1: 1, 2: 3, 3: 4, 4: 3, 5: 4},
}


@pytest.mark.parametrize("table", list(WINO_TABLES))
@pytest.mark.parametrize("tile_bytes", [1, 1 << 20])
def test_winograd_form_vs_reference(winograd_everywhere, table, tile_bytes, monkeypatch):
    """Winograd F(m, r) along every axis against the direct-sum reference: 1-3-D, kernel sizes 1-5
    per axis, padding wider than the kernel, groups, bias, both dtypes, one sample (threads share
    the tiles of a channels-last copy) and several (a thread per sample), tile blocks of whole tile
    rows and of column chunks (tiny blocks); batched == unbatched bitwise. In the "planes" form
    only 3-d kernels with KD > 1 take it."""
    conv_mod, wino, taken = winograd_everywhere
    planes = conv_mod.WINOGRAD_PLANES_MIN_DEPTH == 1
    monkeypatch.setattr(conv_mod, "WINOGRAD_TILE_BYTES", tile_bytes)
    if WINO_TABLES[table] is not None:
        monkeypatch.setattr(wino, "M_FOR_R", WINO_TABLES[table])
        monkeypatch.setattr(wino, "M_FOR_R_ONE_AXIS", WINO_TABLES[table])
    rng = rng_for(91 + tile_bytes + len(table))
    n_used = 0
    for trial in range(30):
        rank = 3 if planes else int(rng.integers(1, 4))
        dtype = (np.float32, np.float64)[trial % 2]
        g = int(rng.choice([1, 2]))
        cig, cog = int(rng.integers(2, 6)), int(rng.integers(1, 6))
        k = tuple(int(v) for v in rng.integers(1, 6 if rank < 3 else 4, rank))
        if max(k) == 1:
            k = k[:-1] + (3,)
        if planes and k[0] == 1:
            k = (int(rng.integers(2, 4)),) + k[1:]
        sp = tuple(int(rng.integers(max(kk, 2), {1: 60, 2: 15, 3: 8}[rank])) for kk in k)
        pads = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (rank, 2)))
        if trial % 5 == 0:
            pads = pads[:-1] + ((k[-1] + 2, 1),)                  # columns with no valid tap
        N = int(rng.choice([1, 2, 5]))
        x = rng.standard_normal((N, cig * g) + sp).astype(dtype)
        w = rng.standard_normal((cog * g, cig) + k).astype(dtype)
        b = rng.standard_normal(cog * g).astype(dtype)
        n_before = len(taken)
        out = fc.conv(x, w, b, padding=pads, groups=g)
        used = [t for t in taken[n_before:] if t is not None]
        n_used += bool(used)
        ref = conv_ref(x, w, b, None, pads, None, g)
        scale = conv_ref(np.abs(x), np.abs(w), np.abs(b), None, pads, None, g)
        # the larger tiles (not used by default) carry coefficients up to 2^4 and 1/2^4 in their
        # transforms and round up to ~10x worse than the direct sum
        assert_close(out, ref, scale * (1 if table == "default" else 30), dtype)
        np.testing.assert_array_equal(fc.conv(x[N - 1], w, b, padding=pads, groups=g), out[N - 1])
    assert n_used >= 20
    assert _planes(taken) == planes
    if tile_bytes == 1:
        assert any(rb == 1 for _, rb, *_ in (t for t in taken if t is not None))


def _winograd_on(conv_mod, x, w, **kw):
    """conv(x, w) through the Winograd form, and through the im2col/row-shift forms."""
    saved = conv_mod.WINOGRAD
    try:
        conv_mod.WINOGRAD = True
        y = fc.conv(x, w, **kw)
        conv_mod.WINOGRAD = False
        conv_mod._forward_plan.cache_clear()
        y_gemm = fc.conv(x, w, **kw)
    finally:
        conv_mod.WINOGRAD = saved
        conv_mod._forward_plan.cache_clear()
    return y, y_gemm


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("xshape, wshape, padding", [
    ((1, 8, 40), (8, 8, 5), 7),
    ((1, 8, 40), (8, 8, 3), ((5, 2),)),
    ((2, 8, 11, 12), (8, 8, 3, 3), ((5, 3), (4, 6))),
    ((1, 4, 5, 9, 10), (4, 4, 3, 3, 3), (3, 4, 5)),
])
def test_winograd_padding_only_outputs_exact(winograd_everywhere, xshape, wshape, padding, bias):
    """Outputs whose window lies wholly in the zero padding are the bias (or 0) exactly, as in the
    direct sum, though the Winograd tiles that compute them also cover real inputs (their
    transforms gave rounding noise there); the other outputs are untouched (the GEMM forms'
    values to rounding)."""
    conv_mod, _, taken = winograd_everywhere
    if len(wshape) != 5 and conv_mod.WINOGRAD_MIN_CHANNELS > 1 << 30:
        pytest.skip("the planes form is for 3-d kernels")
    rng = rng_for(sum(xshape) + len(wshape))
    x = rng.standard_normal(xshape).astype(np.float32) * 100
    w = rng.standard_normal(wshape).astype(np.float32)
    b = rng.standard_normal(wshape[0]).astype(np.float32) if bias else None
    y = fc.conv(x, w, b, padding=padding)
    assert any(t is not None for t in taken), "the Winograd form must run"
    rank = len(wshape) - 2
    pads = fc_args_pairs(padding, rank)
    expect = np.zeros(wshape[0], np.float32) if b is None else b
    found = 0
    for ax, (pb, pa) in enumerate(pads):
        k = wshape[2 + ax]
        for sl in (slice(0, max(0, pb - (k - 1))), slice(y.shape[2 + ax] - max(0, pa - (k - 1)), None)):
            idx = [slice(None)] * y.ndim
            idx[2 + ax] = sl
            part = y[tuple(idx)]
            found += part.size
            np.testing.assert_array_equal(
                part, np.broadcast_to(expect.reshape((1, -1) + (1,) * rank), part.shape))
    assert found
    ref = conv_ref(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64),
                   (1,) * rank, pads, (1,) * rank, 1)
    assert_close(y, ref, np.abs(ref).max(), np.float32)


def fc_args_pairs(padding, rank):
    """(before, after) per axis of an int, per-axis ints or per-axis pairs padding argument."""
    if isinstance(padding, int):
        return [(padding, padding)] * rank
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def test_conv_transpose_winograd_unreached_outputs_exact(few_tiles):
    """Transposed-form patch points no input reaches (past the input's extent plus the phase
    kernel, kept by output_padding / output_size and cropping padding) are exactly 0, as in col2im:
    the transforms gave rounding noise there."""
    rng = rng_for(11)
    y = rng.standard_normal((1, 32, 4, 1))
    w = rng.standard_normal((32, 16, 4, 2)) * 0.3
    out = fc.conv_transpose2d(y, w, stride=(2, 1), padding=((10, 0), (0, 0)), output_size=(1, 2))
    np.testing.assert_array_equal(out, 0)
    y = rng.standard_normal((2, 32, 7, 6)).astype(np.float32)
    w = rng.standard_normal((32, 16, 4, 4)).astype(np.float32)
    out = fc.conv_transpose2d(y, w, stride=2, padding=((1, 0), (0, 0)), output_padding=1)
    ref = conv_transpose_ref(y, w, out.shape[2:], (2, 2), ((1, 0), (0, 0)), (1, 1), 1)
    np.testing.assert_array_equal(out[:, :, -1], 0)
    np.testing.assert_array_equal(out[:, :, :, -1], 0)
    assert_close(out, ref, np.abs(ref).max(), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_nonfinite_input_stays_local(winograd_everywhere, dtype):
    """The transforms mix a tile's inputs, so a NaN or infinity would spoil neighbouring outputs;
    rows that come out non-finite are redone by the im2row GEMM: the same NaN / inf pattern as the
    direct sum, and the other outputs unchanged."""
    conv_mod, _, taken = winograd_everywhere
    planes = conv_mod.WINOGRAD_PLANES_MIN_DEPTH == 1
    rng = rng_for(5)
    # "planes": the same 2-d problem as one plane of a 3-d input, 3 planes deep kernel
    x = rng.standard_normal((2, 4, 1, 13, 17) if planes else (2, 4, 13, 17)).astype(dtype)
    x[(1, 2) + (0,) * planes + (6, 9)] = np.nan
    x[(0, 1) + (0,) * planes + (3, 4)] = np.inf
    w = rng.standard_normal((3, 4, 3, 3, 3) if planes else (3, 4, 3, 3)).astype(dtype)
    y, y_gemm = _winograd_on(conv_mod, x, w, padding=1)
    assert taken and taken[0] is not None and _planes(taken) == planes
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_gemm))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(y_gemm))
    expect = np.zeros(y.shape, bool)
    expect[(1, slice(None)) + (0,) * planes + (slice(5, 8), slice(8, 11))] = True
    expect[(0, slice(None)) + (0,) * planes + (slice(2, 5), slice(3, 6))] = True
    np.testing.assert_array_equal(~np.isfinite(y), expect)
    ok = np.isfinite(y)
    np.testing.assert_allclose(y[ok], y_gemm[ok], rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


TRANSPOSE_WINOGRAD_CASES = [
    # (N, C_in, C_out, H, W, K, stride, padding, output_padding, groups)
    (2, 64, 64, 7, 9, 4, 2, 1, 0, 1),
    (2, 64, 32, 6, 5, 4, 2, 1, 1, 1),
    (1, 32, 48, 8, 8, 3, 1, 1, 0, 1),
    (3, 64, 40, 5, 6, 6, 3, 2, 1, 1),
    (2, 128, 64, 5, 7, 4, 2, 0, 0, 2),
    (2, 64, 64, 9, 4, 6, 2, 3, 1, 1),
    (1, 64, 32, 23, 20, 4, 2, 2, 1, 1),     # 8 tile rows through the ring of output rows
]


@pytest.fixture
def few_tiles(monkeypatch):
    """The Winograd forms on samples of any tile count (WINOGRAD_MIN_TILES = 1), so that small
    test shapes take them; the plan caches cleared around the test."""
    conv_mod = sys.modules["fastconv.conv"]
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_TILES", 1)
    conv_mod._forward_plan.cache_clear()
    conv_mod._transpose_winograd_plan.cache_clear()
    yield conv_mod
    conv_mod._forward_plan.cache_clear()
    conv_mod._transpose_winograd_plan.cache_clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TRANSPOSE_WINOGRAD_CASES)
def test_conv_transpose_winograd(case, dtype, monkeypatch, few_tiles):
    """The transposed Winograd form (stride phases, Toom-Cook linear convolution per tile, patches
    scatter-added): against the direct reference, bitwise per sample as in a batch, equal to
    conv_grad_input, and with a NaN or inf in the input the same as the col2im form."""
    N, Ci, Co, H, W, K, s, p, op, g = case
    conv_mod = sys.modules["fastconv.conv"]
    plan = conv_mod._transpose_winograd_plan(Ci // g, Co // g, (1, 1, 1), (1, K, K), (1, s, s),
                                             (1, 1, 1), (1, H, W), np.dtype(dtype).itemsize)
    assert plan is not None, "the case must take the Winograd form"
    rng = rng_for(sum(case))
    y = rng.standard_normal((N, Ci, H, W)).astype(dtype)
    w = rng.standard_normal((Ci, Co // g, K, K)).astype(dtype)
    out = fc.conv_transpose2d(y, w, stride=s, padding=p, output_padding=op, groups=g)
    ref = conv_transpose_ref(y, w, out.shape[2:], (s, s), ((p, p), (p, p)), (1, 1), g)
    assert_close(out, ref, np.abs(ref).max(), dtype)
    for n in range(N):
        np.testing.assert_array_equal(
            fc.conv_transpose2d(y[n], w, stride=s, padding=p, output_padding=op, groups=g), out[n])
    np.testing.assert_array_equal(
        fc.conv_grad_input(out.shape, w, y, stride=s, padding=p, groups=g), out)
    bad = y.copy()
    bad[0, 1, 2, 3] = np.inf
    bad[-1, 0, 1, 1] = np.nan
    got = fc.conv_transpose2d(bad, w, stride=s, padding=p, output_padding=op, groups=g)
    monkeypatch.setattr(conv_mod, "WINOGRAD", False)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(
        fc.conv_transpose2d(bad, w, stride=s, padding=p, output_padding=op, groups=g)))


@pytest.mark.parametrize("padding, output_padding", [(0, 1), (1, 0), (2, 1), (3, 0)])
def test_conv_transpose_winograd_small_blocks(padding, output_padding, monkeypatch, few_tiles):
    """GEMM blocks of 16 tiles that end inside tile rows, rows that no tile reaches
    (output_padding), and padding that crops whole rows: the ring of output rows (written out as
    tile rows complete) against the direct reference, unbatched the same bits."""
    monkeypatch.setattr(few_tiles, "WINOGRAD_TILE_BYTES", 1)
    assert few_tiles._transpose_winograd_plan(64, 32, (1, 1, 1), (1, 4, 4), (1, 2, 2), (1, 1, 1),
                                              (1, 19, 22), 4)[2] == 16
    rng = rng_for(padding + 7 * output_padding)
    y = rng.standard_normal((2, 64, 19, 22)).astype(np.float32)
    w = rng.standard_normal((64, 32, 4, 4)).astype(np.float32)
    kw = dict(stride=2, padding=padding, output_padding=output_padding)
    k = few_tiles._kernels()
    calls = []
    monkeypatch.setattr(few_tiles, "_kernels", lambda: types.SimpleNamespace(
        **{n: getattr(k, n) for n in dir(k) if not n.startswith("__")
           and n != "conv_transpose_winograd"},
        conv_transpose_winograd=lambda *a: calls.append(1) or k.conv_transpose_winograd(*a)))
    out = fc.conv_transpose2d(y, w, **kw)
    assert calls, "the Winograd form must run"
    ref = conv_transpose_ref(y, w, out.shape[2:], (2, 2), ((padding,) * 2,) * 2, (1, 1), 1)
    assert_close(out, ref, np.abs(ref).max(), np.float32)
    np.testing.assert_array_equal(fc.conv_transpose2d(y[1], w, **kw), out[1])


@pytest.mark.parametrize("dtype, big", [(np.float32, 8e37), (np.float64, 8e307)])
def test_conv_transpose_winograd_near_overflow(dtype, big, monkeypatch, few_tiles):
    """Values whose direct sums are still finite (or overflow to inf, not NaN) but whose Winograd
    transforms would overflow take the direct col2im form: the same results as it."""
    assert few_tiles._transpose_winograd_plan(32, 32, (1, 2, 2), (1, 3, 3), (1, 1, 1), (1, 1, 1),
                                              (1, 2, 2), np.dtype(dtype).itemsize) is not None
    y = np.zeros((1, 32, 2, 2), dtype)
    y[0, 0] = big
    w = np.zeros((32, 32, 3, 3), dtype)
    w[0] = 1
    got = fc.conv_transpose2d(y, w, padding=1)
    monkeypatch.setattr(sys.modules["fastconv.conv"], "WINOGRAD", False)
    np.testing.assert_array_equal(got, fc.conv_transpose2d(y, w, padding=1))
    assert not np.isnan(got).any()


def test_winograd_planes_deep_kernels_and_tiny_batches(few_tiles):
    """Regressions (a bug hunt): the planes form took Winograd matrices for the untransformed D
    axis too, which fail past 12 taps (ValueError); and with outputs so small that the call
    left BLAS threaded, the weight transform's GEMM ran threaded and rounded differently from
    the same call on one sample (a sample's result depended on its batch)."""
    rng = rng_for(13)
    x = rng.standard_normal((1, 16, 15, 6, 6))
    w = rng.standard_normal((16, 16, 13, 3, 3))
    assert_close(fc.conv3d(x, w), conv_ref(x, w, None, None, ((0, 0),) * 3, None, 1),
                 conv_ref(np.abs(x), np.abs(w), None, None, ((0, 0),) * 3, None, 1), np.float64)
    for xs, ws, pad in [((4, 20, 4, 3, 5), (14, 20, 3, 3, 5), 0),    # planes form
                        ((4, 33, 1, 1), (61, 33, 4, 4), "same")]:   # all axes, 2-d
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        y = fc.conv(x, w, padding=pad)
        for n in range(len(x)):
            np.testing.assert_array_equal(fc.conv(x[n:n + 1], w, padding=pad), y[n:n + 1])


def test_winograd_conv1d_channels_first_form(monkeypatch, few_tiles):
    """conv1d with 5 taps and channels per group in multiples of 8 runs F(4, 5) on the NCL rows
    (transposes fused into the transforms, AVX2 builds): against the direct-sum reference over
    lengths shorter than a tile up to several blocks, padding wider than the kernel, groups,
    bias; non-finite inputs give the direct sum's NaN / inf pattern (those tiles are redone);
    the same bits batched or not, for any thread count, and within rounding of the
    channels-last form (FASTCONV_WINOGRAD_NCL=0)."""
    conv_mod = sys.modules["fastconv.conv"]
    if not conv_mod._kernels().wino45_ncl_available():
        pytest.skip("this build has no AVX2/FMA kernels")
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_CHANNELS", 8)
    monkeypatch.setattr(conv_mod, "WINOGRAD_TILE_BYTES", 64 * 1024)     # several blocks per row
    used = _spy_forward_kwarg(monkeypatch, "ncl", False)
    conv_mod._forward_plan.cache_clear()
    rng = rng_for(45)
    for L, cig, cog, g, pad, N in [(1, 8, 8, 1, (2, 2), 1), (5, 8, 16, 1, (0, 0), 2),
                                   (9, 16, 8, 2, (3, 3), 3), (37, 8, 24, 1, (6, 1), 1),
                                   (300, 16, 16, 1, (2, 2), 4), (1003, 24, 8, 3, (1, 1), 2)]:
        pad = (pad,)
        x = rng.standard_normal((N, cig * g, L)).astype(np.float32)
        w = rng.standard_normal((cog * g, cig, 5)).astype(np.float32)
        b = rng.standard_normal(cog * g).astype(np.float32)
        x[0, 0, L // 2] = np.nan
        x[N - 1, cig * g - 1, L - 1] = np.inf
        used.clear()
        y = fc.conv1d(x, w, b, padding=pad, groups=g)
        assert used == [True], (L, cig, cog)
        ref = conv_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), None,
                       pad, None, g)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))
        fin = np.isfinite(ref)
        scale = conv_ref(np.abs(x), np.abs(w), np.abs(b), None, pad, None, g)
        assert_close(np.where(fin, y, 0), np.where(fin, ref, 0), scale, np.float32)
        np.testing.assert_array_equal(fc.conv1d(x[N - 1], w, b, padding=pad, groups=g), y[N - 1])
        for n in (1, 3):
            with fc.threads(n):
                np.testing.assert_array_equal(fc.conv1d(x, w, b, padding=pad, groups=g), y)
        monkeypatch.setattr(conv_mod, "WINOGRAD_NCL", False)
        conv_mod._wino45_ncl.cache_clear()
        y_cl = fc.conv1d(x, w, b, padding=pad, groups=g)
        monkeypatch.setattr(conv_mod, "WINOGRAD_NCL", True)
        conv_mod._wino45_ncl.cache_clear()
        np.testing.assert_allclose(y_cl[fin], y[fin], rtol=1e-4,
                                   atol=1e-4 * np.abs(y[fin]).max(initial=0))
    conv_mod._forward_plan.cache_clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_stride_two_deinterleaved_rows(dtype):
    """Depthwise convolutions with stride 2 along W copy each row even columns first (so the taps
    read unit-stride runs): odd and even widths, every padding up to beyond the kernel, dilation,
    kernels of 1-5 columns, a channel multiplier, 3-d, and a NaN / inf at an odd and an even
    column -- against the direct-sum reference."""
    rng = rng_for(17)
    for xs, k, st, pad, dil, mult in [((2, 3, 9, 17), (3, 3), (1, 2), (1, 1), (1, 1), 1),
                                      ((1, 2, 6, 20), (2, 5), (2, 2), (0, 3), (1, 1), 2),
                                      ((1, 2, 7, 31), (3, 4), (1, 2), (2, 0), (1, 2), 1),
                                      ((2, 1, 5, 8), (1, 1), (1, 2), (0, 0), (1, 1), 3),
                                      ((1, 2, 4, 5, 13), (2, 3, 3), (1, 1, 2), (1, 1, 1), (1, 1, 1), 1)]:
        x = rng.standard_normal(xs).astype(dtype)
        C = xs[1]
        w = rng.standard_normal((C * mult, 1) + k).astype(dtype)
        b = rng.standard_normal(C * mult).astype(dtype)
        x[0, 0, ..., 3] = np.nan
        x[-1, -1, ..., 6] = np.inf
        pads = tuple((p, p) for p in pad)
        y = fc.conv(x, w, b, stride=st, padding=pad, dilation=dil, groups=C)
        ref = conv_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), st, pads,
                       dil, C)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))
        fin = np.isfinite(ref)
        scale = conv_ref(np.nan_to_num(np.abs(x), posinf=0), np.abs(w), np.abs(b), st, pads, dil, C)
        assert_close(np.where(fin, y, 0), np.where(fin, ref, 0), scale, dtype)


def test_conv2d_one_by_five_kernel_is_not_taken_for_conv1d():
    """Regression: a 2-d float32 input with a 1 x 5 kernel (64 channels, the F(4, 5) Winograd
    tiles of a 1-d kernel) was sent to the channels-first conv1d form, which takes one row only:
    ValueError from the kernel instead of a result."""
    rng = rng_for(15)
    x = rng.standard_normal((2, 64, 3, 40)).astype(np.float32)
    w = rng.standard_normal((64, 64, 1, 5)).astype(np.float32)
    y = fc.conv2d(x, w, padding=(0, 2))
    ref = conv_ref(x.astype(np.float64), w.astype(np.float64), None, None, ((0, 0), (2, 2)), None, 1)
    assert_close(y, ref, conv_ref(np.abs(x), np.abs(w), None, None, ((0, 0), (2, 2)), None, 1),
                 np.float32)


def _spy_kernel(monkeypatch, method, record):
    """The list of ``record(args, kwargs)`` for each call of the conv kernel module's ``method``
    while the test runs."""
    conv_mod = sys.modules["fastconv.conv"]
    real = conv_mod._kernels()
    seen = []

    class Spy:
        def __getattr__(self, attr):
            if attr != method:
                return getattr(real, attr)

            def spy(*a, **k):
                seen.append(record(a, k))
                return getattr(real, attr)(*a, **k)
            return spy
    monkeypatch.setattr(conv_mod, "_CONV_KERNELS", Spy())
    return seen


def _check_conv_form(used, took, x, w, b, stride=1, pad=0, groups=1):
    """conv(x, w, b) took the form under test (``took(used[0])``, ``used`` from _spy_kernel),
    agrees with the direct-sum reference and gives the same bits for every sample alone and on 1
    or 3 threads. Returns the result."""
    rank = x.ndim - 2
    st = (stride,) * rank if isinstance(stride, int) else stride
    pads = ((pad, pad),) * rank
    used.clear()
    y = fc.conv(x, w, b, stride=stride, padding=pad, groups=groups)
    assert used and took(used[0]), used
    ref = conv_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), st, pads, None,
                   groups)
    assert y.shape == ref.shape
    assert_close(y, ref, conv_ref(np.abs(x), np.abs(w), np.abs(b), st, pads, None, groups), x.dtype)
    for n in range(len(x)):
        np.testing.assert_array_equal(fc.conv(x[n:n + 1], w, b, stride=stride, padding=pad,
                                              groups=groups)[0], y[n])
    for nt in (1, 3):
        with fc.threads(nt):
            np.testing.assert_array_equal(fc.conv(x, w, b, stride=stride, padding=pad,
                                                  groups=groups), y)
    return y


def _spy_forward_kwarg(monkeypatch, name, default):
    """The list that records conv_forward's keyword ``name`` (``default`` when not passed) for
    each call, while the test runs."""
    return _spy_kernel(monkeypatch, "conv_forward", lambda a, k: k.get(name, default))


@pytest.mark.parametrize("xs, ws, pad, groups", [
    ((2, 128, 5, 5), (128, 128, 3, 3), 1, 1),          # im2row, one tile per sample
    ((2, 128, 12, 12), (128, 128, 3, 3), 1, 1),        # Winograd, one block per sample
    ((3, 64, 5, 6), (256, 32, 3, 3), 1, 2),            # groups, each split
    ((2, 32, 5, 10, 10), (128, 32, 3, 3, 3), 0, 1),    # 3-d Winograd
    ((2, 96, 9), (256, 96, 3), 1, 1),                  # 1-d
])
def test_conv_output_channel_blocks(xs, ws, pad, groups, monkeypatch):
    """A sample of fewer work units than MIN_UNITS_PER_SAMPLE has each group's output channels
    split into blocks (conv_forward's ncb > 1, so that one sample keeps several threads busy):
    against the direct-sum reference with a bias, and the same bits for every sample alone,
    batched, and on 1 or 3 threads."""
    used = _spy_forward_kwarg(monkeypatch, "ncb", 1)
    rng = rng_for(16)
    for dt in (np.float64, np.float32):
        x, w = rng.standard_normal(xs).astype(dt), rng.standard_normal(ws).astype(dt)
        _check_conv_form(used, lambda ncb: ncb > 1, x, w, rng.standard_normal(ws[0]).astype(dt),
                         pad=pad, groups=groups)


def test_winograd_transform_overflow_is_redone(winograd_everywhere):
    """Finite float32 inputs whose transform overflows (d1 + d2 > float32 max) while the direct
    sums do not: those rows are redone by the im2row GEMM, so no inf appears."""
    conv_mod, _, taken = winograd_everywhere
    planes = conv_mod.WINOGRAD_PLANES_MIN_DEPTH == 1
    x = np.ones((1, 2) + (3,) * planes + (8, 8), np.float32)
    x[0, 0, ..., 2, 2] = x[0, 0, ..., 2, 3] = 3e38
    w = np.full((2, 2) + (3,) * planes + (3, 3), 1e-3, np.float32)
    y, y_gemm = _winograd_on(conv_mod, x, w, padding=1)
    assert _planes(taken) == planes
    assert np.isfinite(y_gemm).all()
    np.testing.assert_array_equal(np.isfinite(y), True)
    np.testing.assert_allclose(y, y_gemm, rtol=1e-5)


def test_winograd_accuracy_matches_direct_sum(monkeypatch):
    """The default tile sizes round like the direct sum: float32 errors against a float64
    reference, at the benchmark's channel counts, within 1.5x those of the im2col GEMM for
    F(2, 3) along two or three axes (measured: 0.8x) and 3x for F(4, 5) in 1-D (measured: 2.1x)."""
    conv_mod = sys.modules["fastconv.conv"]
    rng = rng_for(8)
    for xs, ws, pad, g, factor in [((2, 64, 20, 24), (64, 64, 3, 3), 1, 1, 1.5),
                                   ((2, 64, 400), (64, 64, 5), 2, 1, 3),
                                   ((1, 32, 6, 8, 10), (32, 32, 3, 3, 3), 1, 1, 1.5),
                                   ((3, 64, 11, 13), (96, 32, 3, 3), 1, 2, 1.5)]:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        # float64 (errors ~1e-16, against ~1e-7 measured here; the form itself is checked
        # against the direct sums in test_winograd_form_vs_reference)
        ref = fc.conv(x.astype(np.float64), w.astype(np.float64), padding=pad, groups=g)
        with monkeypatch.context() as mp:
            taken = spy_on(mp, conv_mod, "_winograd_tiles")
            conv_mod._forward_plan.cache_clear()
            y, y_gemm = _winograd_on(conv_mod, x, w, padding=pad, groups=g)
        assert taken[0] is not None, xs
        err = np.abs(y - ref).max()
        err_gemm = np.abs(y_gemm - ref).max()
        assert err <= factor * err_gemm, (xs, err, err_gemm)


def _conv_in_subprocess(tmp_path, env, says, x, w, **kw):
    """fastconv.conv(x, w, **kw) in a fresh interpreter with ``env`` added to the environment:
    (whether show_config's text contains ``says``, the result)."""
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    code = ("import io, numpy as np, fastconv as fc; b = io.StringIO(); fc.show_config(b); "
            f"print({says!r} in b.getvalue()); "
            f"np.save(r'{tmp_path / 'y.npy'}', fc.conv(np.load(r'{tmp_path / 'x.npy'}'), "
            f"np.load(r'{tmp_path / 'w.npy'}'), **{kw!r}))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env),
                         capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True", np.load(tmp_path / "y.npy")


def test_winograd_switch_by_environment(tmp_path, monkeypatch):
    """FASTCONV_WINOGRAD=0 turns the form off for the process (show_config says so): results are
    then bitwise those of the GEMM forms."""
    conv_mod = sys.modules["fastconv.conv"]
    rng = rng_for(12)
    x = rng.standard_normal((2, 32, 12, 11)).astype(np.float32)     # 36 tiles: Winograd's
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    for value in ("0", "OFF", " False "):      # case and spaces do not matter
        said, y = _conv_in_subprocess(tmp_path, {"FASTCONV_WINOGRAD": value}, "Winograd      : off",
                                      x, w, padding=1)
        assert said, value
    monkeypatch.setattr(conv_mod, "WINOGRAD", False)
    conv_mod._forward_plan.cache_clear()
    np.testing.assert_array_equal(y, fc.conv2d(x, w, padding=1))
    conv_mod._forward_plan.cache_clear()


def test_winograd_ncl_switch_by_environment(tmp_path, monkeypatch):
    """FASTCONV_WINOGRAD_NCL=0 keeps conv1d k5 on the channels-last F(4, 5) form (show_config
    says so): results bitwise those of that form in this process."""
    conv_mod = sys.modules["fastconv.conv"]
    rng = rng_for(14)
    x = rng.standard_normal((2, 32, 200)).astype(np.float32)        # 49 tiles: Winograd's
    w = rng.standard_normal((32, 32, 5)).astype(np.float32)
    said, y = _conv_in_subprocess(tmp_path, {"FASTCONV_WINOGRAD_NCL": "0"}, "NCL rows: off", x, w)
    assert said
    monkeypatch.setattr(conv_mod, "WINOGRAD_NCL", False)
    conv_mod._wino45_ncl.cache_clear()
    try:
        np.testing.assert_array_equal(y, fc.conv1d(x, w))
    finally:
        conv_mod._wino45_ncl.cache_clear()


@pytest.mark.parametrize("m, r", [(2, 3), (4, 3), (2, 5), (4, 5), (3, 2), (2, 4), (1, 3), (6, 3)])
def test_winograd_matrices(m, r):
    """A^T [(G g) * (B^T d)] is the correlation of d with g (exactly, in float64 up to rounding);
    F(2, 3) has Lavin's integer transforms."""
    wino = sys.modules["fastconv._winograd"]
    at, g, bt = wino.matrices(m, r)
    a = m + r - 1
    assert at.shape == (m, a) and g.shape == (a, r) and bt.shape == (a, a)
    rng = rng_for(m * 10 + r)
    for _ in range(5):
        d, k = rng.standard_normal(a), rng.standard_normal(r)
        np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), np.correlate(d, k, "valid"),
                                   rtol=1e-12, atol=1e-12)
    if (m, r) == (2, 3):
        np.testing.assert_array_equal(bt, [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]])
        np.testing.assert_array_equal(at, [[1, 1, 1, 0], [0, 1, -1, 1]])


def test_many_samples_and_channels_direct_path():
    """Batch and channel counts larger than the thread count on the direct (depthwise) path."""
    rng = rng_for(21)
    x = rng.standard_normal((9, 7, 6, 5))
    w = rng.standard_normal((14, 1, 2, 3))
    out = fc.conv2d(x, w, padding=(0, 1), groups=7)
    np.testing.assert_allclose(out, conv_ref(x, w, None, None, ((0, 0), (1, 1)), None, 7), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups, cin, cout, k", [(1, 3, 4, 3), (1, 4, 2, 1), (3, 3, 6, 3), (1, 1, 1, 3)])
def test_nan_and_inf_stay_local(groups, cin, cout, k):
    """A NaN in the input poisons exactly the outputs whose window covers it (padding, tile
    buffers and GEMM never mix it elsewhere); an inf in grad_output reaches exactly its window."""
    x = np.ones((2, cin, 20, 21))
    x[1, 0, 10, 12] = np.nan
    w = np.ones((cout, cin // groups, k, k))
    y = fc.conv2d(x, w, padding=k // 2, groups=groups)
    r = k // 2
    expect = np.zeros(y.shape, bool)
    expect[1, :cout // groups, 10 - r:10 + r + 1, 12 - r:12 + r + 1] = True   # group 0 reads channel 0
    np.testing.assert_array_equal(np.isnan(y), expect)
    gy = np.ones(y.shape)
    gy[0, 0, 5, 6] = np.inf
    gi = fc.conv_grad_input(x.shape, w, gy, padding=k // 2, groups=groups)
    expect = np.zeros(x.shape, bool)
    expect[0, :cin // groups, 5 - r:5 + r + 1, 6 - r:6 + r + 1] = True
    np.testing.assert_array_equal(~np.isfinite(gi), expect)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_benchmark_shape_vs_torch(dtype):
    """The speed case 8x64x56x56 * 64x64x3x3 is also right (torch as the reference)."""
    torch = pytest.importorskip("torch")
    rng = rng_for(22)
    x = rng.standard_normal((8, 64, 56, 56)).astype(dtype)
    w = rng.standard_normal((64, 64, 3, 3)).astype(dtype)
    out = fc.conv2d(x, w, padding=1)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64)),
                                     torch.from_numpy(w.astype(np.float64)), padding=1).numpy()
    np.testing.assert_allclose(out, ref, rtol=0, atol=RTOL[np.dtype(dtype)] * 100 * np.abs(ref).max())
    y = rng.standard_normal((8, 64, 28, 28)).astype(dtype)
    wt = rng.standard_normal((64, 64, 4, 4)).astype(dtype)
    out = fc.conv_transpose2d(y, wt, stride=2, padding=1)
    ref = torch.nn.functional.conv_transpose2d(torch.from_numpy(y.astype(np.float64)),
                                               torch.from_numpy(wt.astype(np.float64)), stride=2, padding=1).numpy()
    np.testing.assert_allclose(out, ref, rtol=0, atol=RTOL[np.dtype(dtype)] * 100 * np.abs(ref).max())


# ----------------------------------------------------------------------------------------------
# torch.nn.functional
# ----------------------------------------------------------------------------------------------

TORCH_CONV = [
    # rank, x shape, w shape, kwargs
    (1, (3, 4, 20), (6, 4, 5), dict(stride=3, padding=4, dilation=2)),
    (1, (2, 6, 17), (6, 2, 4), dict(padding="same", groups=3, dilation=2)),
    (1, (2, 6, 17), (4, 6, 3), dict(padding="valid", stride=2)),
    (2, (2, 4, 9, 10), (6, 2, 4, 3), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
    (2, (2, 4, 9, 10), (6, 2, 4, 3), dict(padding="same", dilation=(2, 1), groups=2)),
    (2, (1, 3, 12, 11), (9, 1, 3, 3), dict(padding=1, groups=3)),
    (2, (2, 5, 8, 8), (3, 5, 1, 1), dict(stride=2)),
    (3, (2, 2, 6, 7, 5), (4, 1, 2, 3, 2), dict(stride=(1, 2, 1), padding=(1, 0, 1), dilation=(2, 1, 1), groups=2)),
    (3, (1, 3, 5, 6, 7), (2, 3, 3, 3, 3), dict(padding="same")),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rank, xs, ws, kw", TORCH_CONV)
def test_conv_vs_torch(rank, xs, ws, kw, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = rng_for(len(xs) * 7 + ws[0])
    x, w, b = (rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype),
               rng.standard_normal(ws[0]).astype(dtype))
    tf = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    ref = tf(*map(torch.from_numpy, (x, w, b)), **kw).numpy()
    out = RANK_FUNCS[rank](x, w, b, **kw)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, ref, rtol=0, atol=RTOL[np.dtype(dtype)] * 10 * np.abs(ref).max())


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_padding_modes_vs_torch(mode, rank):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    rng = rng_for(rank * 10 + len(mode))
    sp = {1: (11,), 2: (7, 8), 3: (4, 5, 6)}[rank]
    k = {1: (4,), 2: (3, 2), 3: (2, 3, 3)}[rank]
    x = rng.standard_normal((2, 4) + sp)
    w = rng.standard_normal((6, 2) + k)
    b = rng.standard_normal(6)
    Conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]
    pad = tuple(range(1, rank + 1))
    for padding, stride in ((pad, 2), ("same", 1)):
        m = Conv(4, 6, k, stride=stride, padding=padding, padding_mode=mode, groups=2, bias=True).double()
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(w))
            m.bias.copy_(torch.from_numpy(b))
            ref = m(torch.from_numpy(x)).numpy()
        out = fc.conv(x, w, b, stride=stride, padding=padding, groups=2, padding_mode=mode)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


TORCH_TRANSPOSE = [
    (1, (2, 4, 7), (4, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    (1, (2, 4, 7), (4, 2, 4), dict(stride=3, padding=2, dilation=2, groups=2, output_padding=2)),
    (1, (1, 3, 9), (3, 2, 2), dict(stride=1, dilation=3, output_padding=2)),   # output_padding via dilation
    (2, (2, 6, 5, 4), (6, 3, 3, 4), dict(stride=(2, 3), padding=(1, 2), output_padding=(1, 0), dilation=(1, 2), groups=2)),
    (2, (2, 4, 7, 7), (4, 4, 4, 4), dict(stride=2, padding=1)),
    (2, (1, 4, 5, 6), (4, 1, 3, 3), dict(stride=2, groups=4, output_padding=1)),
    (3, (2, 2, 4, 3, 4), (2, 3, 2, 3, 2), dict(stride=(2, 1, 3), padding=(1, 0, 1), output_padding=(1, 0, 2), dilation=(2, 1, 1))),
    (3, (1, 4, 3, 4, 3), (4, 1, 3, 3, 3), dict(stride=2, padding=1, groups=2)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rank, ys, ws, kw", TORCH_TRANSPOSE)
def test_conv_transpose_vs_torch(rank, ys, ws, kw, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = rng_for(len(ys) * 7 + ws[1])
    groups = kw.get("groups", 1)
    y, w, b = (rng.standard_normal(ys).astype(dtype), rng.standard_normal(ws).astype(dtype),
               rng.standard_normal(ws[1] * groups).astype(dtype))
    tf = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
    ref = tf(*map(torch.from_numpy, (y, w, b)), **kw).numpy()
    out = RANK_TFUNCS[rank](y, w, b, **kw)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, ref, rtol=0, atol=RTOL[np.dtype(dtype)] * 10 * np.abs(ref).max())


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_transpose_output_size_vs_torch_module(rank):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    rng = rng_for(rank)
    sp = {1: (6,), 2: (5, 4), 3: (3, 4, 3)}[rank]
    y = rng.standard_normal((2, 6) + sp)
    w = rng.standard_normal((6, 2) + (3,) * rank)
    M = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[rank]
    m = M(6, 4, 3, stride=3, padding=1, groups=2, bias=False).double()
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
    base = tuple((n - 1) * 3 - 2 + 3 for n in sp)
    for extra in range(3):
        size = tuple(v + extra for v in base)
        ref = m(torch.from_numpy(y), output_size=size).detach().numpy()
        out = fc.conv_transpose(y, w, stride=3, padding=1, groups=2, output_size=size)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


GRAD_TORCH = [
    ((2, 4, 9, 10), (6, 2, 4, 3), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
    ((2, 3, 17), (4, 3, 5), dict(stride=2, padding="valid", dilation=3)),
    ((2, 4, 11), (4, 2, 4), dict(padding="same", groups=2)),
    ((1, 4, 5, 6, 4), (2, 4, 3, 2, 2), dict(stride=(1, 2, 1), padding=1)),
    ((2, 6, 8, 8), (6, 1, 3, 3), dict(padding=1, groups=6)),
    ((2, 6, 8, 8), (3, 6, 1, 1), {}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, kw", GRAD_TORCH)
def test_gradients_vs_torch_autograd(xs, ws, kw, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rank = len(ws) - 2
    rng = rng_for(len(xs) * 3 + ws[0])
    x, w, b = (rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype),
               rng.standard_normal(ws[0]).astype(dtype))
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    out = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank](tx, tw, tb, **kw)
    go = rng.standard_normal(tuple(out.shape)).astype(dtype)
    out.backward(torch.from_numpy(go))
    args = [kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), kw.get("groups", 1)]
    tol = RTOL[np.dtype(dtype)] * 10
    for got, ref in ((fc.conv_grad_input(xs, w, go, *args), tx.grad),
                     (fc.conv_grad_weight(x, ws, go, *args), tw.grad),
                     (fc.conv_grad_bias(go), tb.grad)):
        ref = ref.numpy()
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * max(1.0, np.abs(ref).max()))


# ----------------------------------------------------------------------------------------------
# threads and configuration
# ----------------------------------------------------------------------------------------------

THREAD_CASES = [
    ("im2row", (3, 8, 40, 37), (6, 8, 3, 3), dict(padding=1)),
    ("im2row strided groups", (2, 8, 33, 35), (8, 4, 3, 2), dict(stride=2, dilation=(1, 2), groups=2)),
    ("direct", (3, 6, 40, 41), (6, 1, 3, 3), dict(padding=1, groups=6)),
    ("single channel", (1, 1, 120, 90), (1, 1, 3, 3), {}),
    ("pointwise", (2, 16, 30, 30), (8, 16, 1, 1), {}),
    ("pointwise tiled groups", (3, 12, 70, 70), (9, 4, 1, 1), dict(groups=3)),
    ("1d long", (2, 4, 5000), (6, 4, 5), dict(padding=2)),
    ("3d", (2, 3, 10, 12, 11), (4, 3, 3, 3, 3), dict(padding=1)),
    ("winograd 2d", (3, 32, 19, 23), (32, 32, 3, 3), dict(padding=1)),
    ("winograd 1d", (3, 32, 300), (32, 32, 5), dict(padding=2)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, groups", [((3, 64, 40, 50), (32, 64, 1, 1), 1),
                                            ((2, 12, 5000), (9, 4, 1), 3),
                                            ((1, 96, 7, 9, 11), (24, 32, 1, 1, 1), 3),
                                            ((2, 6, 90, 91), (4, 6, 1, 1), 1)])
def test_pointwise_nchw_gemm(xs, ws, groups, dtype):
    """1 x 1 kernels run as GEMMs on the NCHW rows (conv_pointwise), forward and adjoint, whole rows
    or tiles of positions (P > 4096): against the reference, and each sample bitwise as in a
    batch of one (OpenBLAS's float32 bits depend on the GEMM sizes, so tiles must not depend on N)."""
    rng = rng_for(7)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    out = fc.conv(x, w, b, groups=groups)
    zero = ((0, 0),) * (len(xs) - 2)
    ref = conv_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), None, zero,
                   None, groups)
    assert_close(out, ref, np.abs(ref).max(), dtype)
    gy = rng.standard_normal(out.shape).astype(dtype)
    gx = fc.conv_transpose(gy, np.ascontiguousarray(w), groups=groups)
    gref = conv_transpose_ref(gy.astype(np.float64), w.astype(np.float64), xs[2:],
                              (1,) * (len(xs) - 2), zero, (1,) * (len(xs) - 2), groups)
    assert_close(gx, gref, np.abs(gref).max(), dtype)
    np.testing.assert_array_equal(fc.conv_grad_input(xs, w, gy, groups=groups), gx)
    for n in range(xs[0]):
        np.testing.assert_array_equal(fc.conv(x[n:n + 1], w, b, groups=groups)[0], out[n])
        np.testing.assert_array_equal(fc.conv_transpose(gy[n:n + 1], w, groups=groups)[0], gx[n])


def _spy_pointwise(monkeypatch):
    """The list of (stride or None, ncb) that conv_pointwise's calls receive while the test runs
    (None, None for the adjoint's)."""
    return _spy_kernel(monkeypatch, "conv_pointwise",
                       lambda a, k: (None, None) if a[11] else (a[15], a[13]))


@pytest.mark.parametrize("xs, ws, stride, groups", [
    ((2, 6, 9, 10), (4, 6, 1, 1), 2, 1),                 # short runs: the scalar tail only
    ((3, 8, 23, 40), (6, 4, 1, 1), 2, 2),                # vector runs, even W
    ((2, 16, 21, 37), (12, 16, 1, 1), (3, 2), 1),        # odd W: the run ends on the last column
    ((2, 5, 40, 41), (7, 5, 1, 1), (1, 3), 1),           # stride 3
    ((2, 64, 30, 30), (48, 64, 1, 1), 2, 1),             # several tiles per sample
    ((2, 6, 50), (4, 6, 1), 2, 1),                       # 1-d
    ((2, 4, 7, 9, 19), (6, 2, 1, 1, 1), (2, 1, 2), 2),   # 3-d
])
def test_pointwise_strided(xs, ws, stride, groups, monkeypatch):
    """A 1 x 1 kernel with a stride runs as conv_pointwise on a per-thread copy of each tile's
    input positions (fc_subsample): against the reference with a bias, on float32 and float64, a
    non-contiguous input, and bitwise the same for each sample alone and on 1 or 3 threads."""
    used = _spy_pointwise(monkeypatch)
    monkeypatch.setattr(sys.modules["fastconv.conv"], "SUBSAMPLE_TILE_BYTES", 16 * 1024)
    sys.modules["fastconv.conv"]._forward_plan.cache_clear()
    rng = rng_for(17)
    for dt in (np.float64, np.float32):
        x, w = rng.standard_normal(xs).astype(dt), rng.standard_normal(ws).astype(dt)
        b = rng.standard_normal(ws[0]).astype(dt)
        y = _check_conv_form(used, lambda u: u[0] is not None, x, w, b, stride=stride, groups=groups)
        xnc = np.empty(xs[:-1] + (2 * xs[-1],), dt)[..., ::2]
        xnc[...] = x
        np.testing.assert_array_equal(fc.conv(xnc, w, b, stride=stride, groups=groups), y)
    sys.modules["fastconv.conv"]._forward_plan.cache_clear()


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_padding_after_only(stride):
    """Padding after the input only (kernel 1): the extra outputs read padding, so the 1 x 1 GEMM
    forms (which read input positions only) must not take it -- the strided one once did, and
    read past the input (found by hypothesis in test_matrix)."""
    rng = rng_for(19)
    for dt in (np.float64, np.float32):
        x = rng.standard_normal((2, 3, 5, 6)).astype(dt)
        w = rng.standard_normal((4, 3, 1, 1)).astype(dt)
        for pad in (((0, 1), (0, 0)), ((0, 0), (0, 2)), ((0, 1), (0, 1))):
            y = fc.conv2d(x, w, stride=stride, padding=pad)
            ref = conv_ref(x.astype(np.float64), w.astype(np.float64), None, (stride, stride), pad,
                           None, 1)
            assert y.shape == ref.shape
            assert_close(y, ref, conv_ref(np.abs(x), np.abs(w), None, (stride, stride), pad, None, 1),
                         dt)


@pytest.mark.parametrize("xs, ws, stride", [((2, 96, 7, 7), (256, 96, 1, 1), 1),
                                            ((2, 64, 14, 14), (128, 64, 1, 1), 2)])
def test_pointwise_output_channel_blocks(xs, ws, stride, monkeypatch):
    """A 1 x 1 convolution on a small image (fewer work units per sample than
    MIN_UNITS_PER_SAMPLE) splits the output channels into blocks (conv_pointwise's ncb > 1): the
    reference, and the same bits for every sample alone and on 1 or 3 threads."""
    used = _spy_pointwise(monkeypatch)
    rng = rng_for(18)
    for dt in (np.float64, np.float32):
        x, w = rng.standard_normal(xs).astype(dt), rng.standard_normal(ws).astype(dt)
        _check_conv_form(used, lambda u: u[1] > 1, x, w, rng.standard_normal(ws[0]).astype(dt),
                         stride=stride)


def test_gemm_tiles_hold_enough_positions_for_big_weights():
    """The plain im2row form repacks the weight for every tile (OpenBLAS): with many output
    channels its tiles hold at least min(C_out/groups, GEMM_MIN_TILE_POSITIONS) positions even
    when that exceeds TILE_BYTES, and small weights keep the TILE_BYTES tiles."""
    conv_mod = sys.modules["fastconv.conv"]
    from fastconv import _args

    def plan(xs, ws, s, p):
        geom = _args.conv_geometry("t", xs[2:], ws[2:], s, p, 1)
        return conv_mod._forward_plan(xs[0], xs[1], ws[0], 1, geom, 4, 2, conv_mod.TILE_BYTES, 1,
                                      64 * 1024, 0, 0, 0)
    kind, _, extra, _, _ = plan((8, 256, 56, 56), (512, 256, 3, 3), 2, 1)
    # 784 positions in tiles of at most 512 (balanced: 2 x 392), not TILE_BYTES' 56 (14 tiles)
    assert kind == "gemm" and extra[0] == 392 and 392 * 256 * 9 * 4 > conv_mod.TILE_BYTES
    kind, _, extra, _, _ = plan((8, 64, 56, 56), (32, 64, 3, 3), 2, 1)
    assert kind == "gemm" and extra[0] * 64 * 9 * 4 <= conv_mod.TILE_BYTES


@pytest.mark.parametrize("xs, ws, stride, pad, groups", [
    ((3, 16, 5, 5), (192, 16, 1, 1), (2, 1), 0, 1),      # found by a differential test
    ((1, 48, 5, 5), (576, 16, 1, 1), (2, 1), 0, 3),
    ((2, 64, 30, 30), (96, 64, 3, 3), 2, 1, 1),          # several tiles per sample
    ((1, 24, 40, 40), (16, 24, 5, 5), 2, 2, 1),
    ((3, 8, 9, 11, 10), (12, 4, 3, 1, 2), (2, 1, 2), (1, 0, 1), 2),
])
def test_grad_input_same_bits_for_any_batch_and_thread_count(xs, ws, stride, pad, groups):
    """conv_grad_input / conv_transpose by the col2im GEMM: each sample's result bitwise the same
    alone or batched and on 1, 2 or 3 threads (the GEMMs' sizes, which set OpenBLAS's bits, and
    the order of the scatter-adds depend on the shapes only; input-channel blocks that followed
    the batch and thread count once made them differ by 1e-14 in float64). No kernel here is a
    multiple of its stride, so none takes the transposed Winograd form."""
    rng = rng_for(20)
    for dt in (np.float64, np.float32):
        w = rng.standard_normal(ws).astype(dt)
        rank = len(xs) - 2
        st = (stride,) * rank if isinstance(stride, int) else stride
        pd = (pad,) * rank if isinstance(pad, int) else pad
        osz = tuple((i + 2 * p - k) // s + 1 for i, p, k, s in zip(xs[2:], pd, ws[2:], st))
        gy = rng.standard_normal((xs[0], ws[0]) + osz).astype(dt)
        results = {}
        for nt in (1, 2, 3):
            with fc.threads(nt):
                results[nt] = fc.conv_grad_input(xs, w, gy, stride, pad, 1, groups)
        np.testing.assert_array_equal(results[1], results[2])
        np.testing.assert_array_equal(results[1], results[3])
        for n in range(xs[0]):
            np.testing.assert_array_equal(
                fc.conv_grad_input((1,) + xs[1:], w, gy[n:n + 1], stride, pad, 1, groups)[0],
                results[2][n])
        ref = conv_transpose_ref(gy.astype(np.float64), w.astype(np.float64), xs[2:], st,
                                 tuple((p, p) for p in pd), (1,) * rank, groups)
        assert_close(results[2], ref, conv_transpose_ref(np.abs(gy), np.abs(w), xs[2:], st,
                                                         tuple((p, p) for p in pd), (1,) * rank,
                                                         groups), dt)


@pytest.mark.parametrize("name, xs, ws, kw", THREAD_CASES, ids=[c[0] for c in THREAD_CASES])
def test_threads_give_identical_results(name, xs, ws, kw):
    rng = rng_for(31)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    args = (kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), kw.get("groups", 1))
    results = {}
    for n in (1, 2, 3):
        with fc.threads(n):
            assert fc.get_num_threads() == n or fc.get_num_threads() == 1  # 1: build without OpenMP
            y = fc.conv(x, w, b, *args)
            gy = np.cos(y)
            results[n] = (y, fc.conv_transpose(gy, w, None, args[0], args[1], 0, args[2], args[3],
                                               output_size=xs[2:]),
                          fc.conv_grad_input(xs, w, gy, *args), fc.conv_grad_weight(x, ws, gy, *args))
    for n in (2, 3):
        for a, b_ in zip(results[1][:3], results[n][:3]):
            np.testing.assert_array_equal(a, b_)
        # per-thread accumulators are summed in a different order: equal up to rounding
        np.testing.assert_allclose(results[1][3], results[n][3], rtol=1e-12, atol=1e-12 * np.abs(results[1][3]).max())


def test_grad_weight_bitwise_reproducible_for_a_thread_count():
    # per-thread partial gradients with a static unit -> thread map: the same thread count gives
    # bitwise the same sum on every run (different counts agree up to rounding, tested above)
    rng = rng_for(32)
    x = rng.standard_normal((4, 8, 70, 70))
    gy = rng.standard_normal((4, 5, 70, 70))
    for n in (1, 2):
        with fc.threads(n):
            ref = fc.conv_grad_weight(x, (5, 8, 3, 3), gy, padding=1)
            for _ in range(3):
                np.testing.assert_array_equal(fc.conv_grad_weight(x, (5, 8, 3, 3), gy, padding=1), ref)


def test_thread_count_api(monkeypatch):
    from fastconv import _config
    openmp = "on" in [line for line in _show_config_text().splitlines() if "OpenMP" in line][0]
    # the default honours OMP_NUM_THREADS (read when the process starts), else the usable cores
    code = "import fastconv; print(fastconv.get_num_threads())"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    env.pop("OMP_NUM_THREADS", None)
    default = int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                 check=True, cwd=root).stdout)
    env["OMP_NUM_THREADS"] = "1"
    one = int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True, cwd=root).stdout)
    assert one == 1
    assert default == (len(os.sched_getaffinity(0)) if openmp else 1)
    monkeypatch.setattr(_config, "_global_threads", None)
    if openmp:
        fc.set_num_threads(3)
        assert fc.get_num_threads() == 3
        with fc.threads(1) as n:
            assert n == 1 and fc.get_num_threads() == 1
            with fc.threads(2):
                assert fc.get_num_threads() == 2
            assert fc.get_num_threads() == 1
        assert fc.get_num_threads() == 3
        # threads() is per Python thread: another thread keeps the global setting
        seen = []
        with fc.threads(1):
            t = threading.Thread(target=lambda: seen.append(fc.get_num_threads()))
            t.start()
            t.join()
        assert seen == [3]
        # an exception inside the block restores the old count
        with pytest.raises(RuntimeError):
            with fc.threads(2):
                raise RuntimeError
        assert fc.get_num_threads() == 3
    else:
        assert fc.get_num_threads() == 1
    for bad in (0, -1):
        with pytest.raises(ValueError, match="set_num_threads"):
            fc.set_num_threads(bad)
        with pytest.raises(ValueError, match="threads"):
            with fc.threads(bad):
                pass
    for bad in (1.5, "2", (2,), None, True):
        with pytest.raises(TypeError, match=r"set_num_threads: n must be an int, got"):
            fc.set_num_threads(bad)
        with pytest.raises(TypeError, match=r"threads: n must be an int, got"):
            with fc.threads(bad):
                pass


def test_more_threads_than_cores_is_correct():
    rng = rng_for(33)
    x, w = rng.standard_normal((3, 4, 20, 20)), rng.standard_normal((5, 4, 3, 3))
    gy = rng.standard_normal((3, 5, 18, 18))
    ref = (fc.conv(x, w), fc.conv_grad_weight(x, w.shape, gy), fc.conv_grad_input(x.shape, w, gy))
    with fc.threads(7):
        got = (fc.conv(x, w), fc.conv_grad_weight(x, w.shape, gy), fc.conv_grad_input(x.shape, w, gy))
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[2], ref[2])


def test_concurrent_python_threads():
    """Calls from several Python threads at once (GIL released) give the single-call results."""
    rng = rng_for(34)
    xs = [rng.standard_normal((2, 4, 30, 30)) for _ in range(4)]
    w = rng.standard_normal((6, 4, 3, 3))
    expect = [fc.conv(x, w, padding=1) for x in xs]
    got = [None] * 4
    errors = []

    def work(i):
        try:
            for _ in range(3):
                got[i] = fc.conv(xs[i], w, padding=1)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for g, e in zip(got, expect):
        np.testing.assert_array_equal(g, e)


def test_blas_limit_from_worker_threads():
    """BLAS runs single-threaded inside the kernels whichever Python thread calls: threadpoolctl
    lets only the thread that first set a limit change it, so calls from a worker thread after
    the main thread's used to leave BLAS threaded (float32 bits that depend on BLAS's thread
    count, nested threads). Also the limit is lifted again afterwards."""
    from fastconv import _config
    rng = rng_for(35)
    cases = [(rng.standard_normal((1, 40, 71, 64)).astype(np.float32),
              rng.standard_normal((24, 40, 1, 1)).astype(np.float32), {}),
             (rng.standard_normal((2, 24, 40, 50)).astype(np.float32),
              rng.standard_normal((40, 24, 3, 3)).astype(np.float32), dict(stride=2, padding=1))]
    before = [c.num_threads for c in _config._blas_controllers()]
    expect = [fc.conv(x, w, **kw) for x, w, kw in cases]
    got = []

    def work():
        got.append([fc.conv(x, w, **kw) for x, w, kw in cases])
        got.append([c.num_threads for c in _config._blas_controllers()])

    t = threading.Thread(target=work)
    t.start()
    t.join()
    for g, e in zip(got[0], expect):
        np.testing.assert_array_equal(g, e)
    assert got[1] == before
    assert [c.num_threads for c in _config._blas_controllers()] == before


def test_blas_single_threaded_inside_kernels(monkeypatch):
    """Inside a kernel call the BLAS that the kernels call runs on one thread (set through the
    library's own C function where it is OpenBLAS with a process-wide pool), and afterwards it
    has its thread count back -- as threadpoolctl reads them."""
    from fastconv import _config
    ctls = _config._blas_controllers()
    if not ctls:
        pytest.skip("threadpoolctl sees no BLAS")
    before = [c.num_threads for c in ctls]
    conv_mod = sys.modules["fastconv.conv"]
    k = conv_mod._kernels()
    seen = []

    def spy(*a, **kw):
        seen.append([c.num_threads for c in ctls])
        return k.conv_forward(*a, **kw)

    monkeypatch.setattr(conv_mod, "_kernels", lambda: types.SimpleNamespace(
        **{n: getattr(k, n) for n in dir(k) if not n.startswith("__") and n != "conv_forward"},
        conv_forward=spy))
    rng = rng_for(36)
    x = rng.standard_normal((2, 24, 30, 30)).astype(np.float32)
    w = rng.standard_normal((40, 24, 3, 3)).astype(np.float32)
    fc.conv(x, w, stride=2, padding=1)
    assert seen == [[1] * len(ctls)]
    assert [c.num_threads for c in ctls] == before


def _show_config_text():
    buf = io.StringIO()
    fc.show_config(file=buf)
    return buf.getvalue()


def test_show_config(capsys):
    fc.show_config()
    text = capsys.readouterr().out
    assert text == _show_config_text()
    assert fc.__version__ in text
    assert "OpenMP" in text and ("on" in text or "off" in text)
    assert "BLAS" in text
    assert f"threads       : {fc.get_num_threads()}" in text or str(fc.get_num_threads()) in text


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------

X2 = np.ones((1, 3, 5, 5))
W2 = np.ones((4, 3, 3, 3))
Y2 = np.ones((1, 4, 3, 3))

BAD = [
    # id, call, exception, substrings the message must contain
    ("rank input 2d", lambda: fc.conv2d(np.ones((5, 5)), W2), ValueError, ["conv2d", "input", "(5, 5)"]),
    ("rank input 5d", lambda: fc.conv2d(np.ones((1, 1, 3, 5, 5)), W2), ValueError, ["conv2d", "input", "(1, 1, 3, 5, 5)"]),
    ("conv1d 2-D weight", lambda: fc.conv1d(np.ones((1, 3, 5)), np.ones((3, 3))), ValueError, ["conv1d", "weight", "(3, 3)"]),
    ("conv1d 4-D weight", lambda: fc.conv1d(np.ones((1, 3, 5)), W2), ValueError, ["conv1d", "1", "2"]),
    ("conv3d 4-D weight", lambda: fc.conv3d(X2, W2), ValueError, ["conv3d", "3", "2"]),
    ("conv 6-D weight", lambda: fc.conv(np.ones((1, 1, 3, 3, 3, 3)), np.ones((1, 1, 2, 2, 2, 2))), ValueError, ["conv", "4"]),
    ("weight 1-D", lambda: fc.conv(X2, np.ones(3)), ValueError, ["conv", "weight", "(3,)"]),
    ("channels", lambda: fc.conv2d(np.ones((1, 4, 5, 5)), W2), ValueError, ["conv2d", "4 channels", "3"]),
    ("groups mismatch", lambda: fc.conv2d(X2, W2, groups=2), ValueError, ["conv2d", "groups=2"]),
    ("groups not dividing C_out", lambda: fc.conv2d(np.ones((1, 3, 5, 5)), np.ones((4, 1, 3, 3)), groups=3), ValueError,
     ["conv2d", "groups=3", "4"]),
    ("groups 0", lambda: fc.conv2d(X2, W2, groups=0), ValueError, ["conv2d", "groups", "0"]),
    ("kernel > input", lambda: fc.conv2d(np.ones((1, 3, 2, 2)), W2), ValueError, ["conv2d", "kernel", "(3, 3)", "(2, 2)"]),
    ("dilated kernel > input", lambda: fc.conv2d(X2, W2, dilation=3), ValueError, ["conv2d", "kernel", "dilation", "(5, 5)"]),
    ("kernel > padded input", lambda: fc.conv1d(np.ones((1, 1, 2)), np.ones((1, 1, 5)), padding=1), ValueError,
     ["conv1d", "kernel", "(5,)", "(4,)"]),
    ("stride 0", lambda: fc.conv2d(X2, W2, stride=0), ValueError, ["conv2d", "stride", "0"]),
    ("stride negative", lambda: fc.conv2d(X2, W2, stride=(1, -1)), ValueError, ["conv2d", "stride", "-1"]),
    ("stride float", lambda: fc.conv2d(X2, W2, stride=1.0), TypeError, ["conv2d", "stride", "1.0"]),
    ("stride wrong length", lambda: fc.conv2d(X2, W2, stride=(1, 1, 1)), ValueError, ["conv2d", "stride", "(1, 1, 1)"]),
    ("dilation 0", lambda: fc.conv2d(X2, W2, dilation=0), ValueError, ["conv2d", "dilation", "0"]),
    ("dilation negative", lambda: fc.conv1d(np.ones((1, 1, 9)), np.ones((1, 1, 2)), dilation=-2), ValueError,
     ["conv1d", "dilation", "-2"]),
    ("padding string", lambda: fc.conv2d(X2, W2, padding="sam"), ValueError, ["conv2d", "padding", "'sam'"]),
    ("padding negative", lambda: fc.conv2d(X2, W2, padding=-1), ValueError, ["conv2d", "padding", "-1"]),
    ("padding pair negative", lambda: fc.conv2d(X2, W2, padding=((0, -1), 1)), ValueError, ["conv2d", "padding", "-1"]),
    ("padding wrong length", lambda: fc.conv2d(X2, W2, padding=(1, 1, 1)), ValueError, ["conv2d", "padding", "(1, 1, 1)"]),
    ("padding bad pair", lambda: fc.conv2d(X2, W2, padding=((1, 2, 3), 1)), ValueError, ["conv2d", "padding", "(1, 2, 3)"]),
    ("padding float", lambda: fc.conv2d(X2, W2, padding=1.5), TypeError, ["conv2d", "padding", "1.5"]),
    ("padding_mode", lambda: fc.conv2d(X2, W2, padding=1, padding_mode="mirror"), ValueError,
     ["conv2d", "padding_mode", "'mirror'"]),
    ("padding_mode not str", lambda: fc.conv2d(X2, W2, padding=1, padding_mode=0), ValueError, ["conv2d", "padding_mode"]),
    ("reflect too large", lambda: fc.conv2d(X2, W2, padding=5, padding_mode="reflect"), ValueError,
     ["conv2d", "padding", "reflect", "(5, 5)"]),
    ("reflect too large one dim", lambda: fc.conv2d(X2, W2, padding=((1, 1), (0, 5)), padding_mode="reflect"), ValueError,
     ["conv2d", "reflect", "5"]),
    ("circular too large", lambda: fc.conv2d(X2, W2, padding=6, padding_mode="circular"), ValueError,
     ["conv2d", "circular", "6"]),
    ("replicate too large", lambda: fc.conv1d(np.ones((1, 1, 3)), np.ones((1, 1, 3)), padding=4,
                                              padding_mode="replicate"), ValueError, ["conv1d", "replicate", "4"]),
    ("complex input", lambda: fc.conv2d(X2.astype(complex), W2), TypeError, ["conv2d", "input", "complex128"]),
    ("complex weight", lambda: fc.conv2d(X2, W2.astype(np.complex64)), TypeError, ["conv2d", "weight", "complex64"]),
    ("object input", lambda: fc.conv2d(X2.astype(object), W2), TypeError, ["conv2d", "input", "object"]),
    ("float16 weight", lambda: fc.conv2d(X2, W2.astype(np.float16)), TypeError, ["conv2d", "weight", "float16"]),
    ("float16 input", lambda: fc.conv_transpose2d(Y2.astype(np.float16), W2), TypeError,
     ["conv_transpose2d", "input", "float16"]),
    ("string input", lambda: fc.conv2d(np.full((1, 3, 5, 5), "a"), W2), TypeError, ["conv2d", "input", "U1"]),
    ("bytes input", lambda: fc.conv1d(np.full((1, 3, 5), b"a"), np.ones((1, 3, 2))), TypeError, ["conv1d", "input", "S1"]),
    ("longdouble", lambda: fc.conv1d(np.ones((1, 1, 5), np.longdouble), np.ones((1, 1, 2))), TypeError,
     ["conv1d", "input"]),
    ("complex bias", lambda: fc.conv2d(X2, W2, np.ones(4, complex)), TypeError, ["conv2d", "bias", "complex"]),
    ("ragged input", lambda: fc.conv2d([[1, 2], [3]], W2), TypeError, ["conv2d", "input"]),
    ("empty batch", lambda: fc.conv2d(np.ones((0, 3, 5, 5)), W2), ValueError, ["conv2d", "input", "empty", "(0, 3, 5, 5)"]),
    ("empty spatial", lambda: fc.conv2d(np.ones((1, 3, 0, 5)), W2), ValueError, ["conv2d", "input", "(1, 3, 0, 5)"]),
    ("empty channels", lambda: fc.conv1d(np.ones((1, 0, 5)), np.ones((2, 1, 3))), ValueError,
     ["conv1d", "input", "empty", "(1, 0, 5)"]),
    ("empty unbatched", lambda: fc.conv1d(np.ones((3, 0)), np.ones((2, 3, 1))), ValueError,
     ["conv1d", "input", "empty", "(3, 0)"]),
    ("empty weight", lambda: fc.conv2d(X2, np.ones((0, 3, 3, 3))), ValueError, ["conv2d", "weight", "(0, 3, 3, 3)"]),
    ("empty kernel", lambda: fc.conv2d(X2, np.ones((4, 3, 0, 3))), ValueError, ["conv2d", "weight", "(4, 3, 0, 3)"]),
    ("bias shape", lambda: fc.conv2d(X2, W2, np.ones(3)), ValueError, ["conv2d", "bias", "(4,)", "(3,)"]),
    ("bias 2-D", lambda: fc.conv2d(X2, W2, np.ones((4, 1))), ValueError, ["conv2d", "bias", "(4, 1)"]),
    ("bias scalar", lambda: fc.conv2d(X2, W2, 1.0), ValueError, ["conv2d", "bias", "(4,)"]),
    ("flip not bool", lambda: fc.conv2d(X2, W2, flip="yes"), TypeError, ["conv2d", "flip", "'yes'"]),
    # transposed
    ("T channels", lambda: fc.conv_transpose2d(np.ones((1, 3, 3, 3)), W2), ValueError,
     ["conv_transpose2d", "3 channels", "4"]),
    ("T groups", lambda: fc.conv_transpose2d(Y2, W2, groups=3), ValueError, ["conv_transpose2d", "groups=3", "4"]),
    ("T rank", lambda: fc.conv_transpose1d(Y2, W2), ValueError, ["conv_transpose1d", "1", "2"]),
    ("T input rank", lambda: fc.conv_transpose2d(np.ones((4, 3)), W2), ValueError, ["conv_transpose2d", "input", "(4, 3)"]),
    ("T output_padding >= stride", lambda: fc.conv_transpose2d(Y2, W2, stride=2, output_padding=2), ValueError,
     ["conv_transpose2d", "output_padding", "(2, 2)", "stride"]),
    ("T output_padding >= dilation", lambda: fc.conv_transpose2d(Y2, W2, dilation=(1, 2), output_padding=(0, 2)),
     ValueError, ["conv_transpose2d", "output_padding", "(0, 2)"]),
    ("T output_padding negative", lambda: fc.conv_transpose2d(Y2, W2, output_padding=-1), ValueError,
     ["conv_transpose2d", "output_padding", "-1"]),
    ("T output_size too big", lambda: fc.conv_transpose2d(Y2, W2, stride=2, output_size=(10, 10)), ValueError,
     ["conv_transpose2d", "output_size", "(10, 10)", "(7, 7)", "(8, 8)"]),
    ("T output_size too small", lambda: fc.conv_transpose2d(Y2, W2, stride=2, output_size=(6, 7)), ValueError,
     ["conv_transpose2d", "output_size", "(6, 7)"]),
    ("T output_size length", lambda: fc.conv_transpose2d(Y2, W2, output_size=(5,)), ValueError,
     ["conv_transpose2d", "output_size", "(5,)"]),
    ("T output_size zero", lambda: fc.conv_transpose2d(Y2, W2, output_size=(0, 5)), ValueError,
     ["conv_transpose2d", "output_size"]),
    ("T output_size same", lambda: fc.conv_transpose1d(np.ones((1, 1, 3)), np.ones((1, 1, 3)), stride=2,
                                                       padding="same", output_size=(7,)), ValueError,
     ["conv_transpose1d", "output_size", "same"]),
    ("T padding too large", lambda: fc.conv_transpose2d(np.ones((1, 4, 1, 1)), W2, padding=3), ValueError,
     ["conv_transpose2d", "padding", "3"]),
    ("T bias", lambda: fc.conv_transpose2d(Y2, W2, np.ones(4)), ValueError, ["conv_transpose2d", "bias", "(3,)", "(4,)"]),
    ("T empty", lambda: fc.conv_transpose2d(np.ones((1, 4, 0, 3)), W2), ValueError, ["conv_transpose2d", "input", "empty"]),
    ("T complex", lambda: fc.conv_transpose(Y2, W2.astype(complex)), TypeError, ["conv_transpose", "weight", "complex"]),
    ("T bad padding string", lambda: fc.conv_transpose2d(Y2, W2, padding="bogus"), ValueError,
     ["conv_transpose2d", "padding", "'bogus'"]),
    ("T stride 0", lambda: fc.conv_transpose2d(Y2, W2, stride=0), ValueError, ["conv_transpose2d", "stride", "0"]),
    ("T dilation 0", lambda: fc.conv_transpose2d(Y2, W2, dilation=(0, 1)), ValueError, ["conv_transpose2d", "dilation"]),
    # gradients
    ("grad_input grad_output shape", lambda: fc.conv_grad_input(X2.shape, W2, np.ones((1, 4, 4, 4))), ValueError,
     ["conv_grad_input", "grad_output", "(1, 4, 4, 4)", "(1, 4, 3, 3)"]),
    ("grad_input grad_output channels", lambda: fc.conv_grad_input(X2.shape, W2, np.ones((1, 3, 3, 3))), ValueError,
     ["conv_grad_input", "grad_output", "(1, 3, 3, 3)"]),
    ("grad_input unbatched shape batched gy", lambda: fc.conv_grad_input(X2.shape[1:], W2, Y2), ValueError,
     ["conv_grad_input", "grad_output"]),
    ("grad_input input_shape rank", lambda: fc.conv_grad_input((3, 5), W2, Y2), ValueError,
     ["conv_grad_input", "input", "(3, 5)"]),
    ("grad_input input_shape channels", lambda: fc.conv_grad_input((1, 2, 5, 5), W2, Y2), ValueError,
     ["conv_grad_input", "2 channels"]),
    ("grad_input input_shape zero", lambda: fc.conv_grad_input((1, 3, 0, 5), W2, Y2), ValueError,
     ["conv_grad_input", "input_shape"]),
    ("grad_input input_shape float", lambda: fc.conv_grad_input((1, 3, 5.0, 5), W2, Y2), TypeError,
     ["conv_grad_input", "input_shape"]),
    ("grad_input stride 0", lambda: fc.conv_grad_input(X2.shape, W2, Y2, stride=0), ValueError,
     ["conv_grad_input", "stride"]),
    ("grad_input complex", lambda: fc.conv_grad_input(X2.shape, W2, Y2.astype(complex)), TypeError,
     ["conv_grad_input", "grad_output", "complex"]),
    ("grad_weight grad_output shape", lambda: fc.conv_grad_weight(X2, W2.shape, np.ones((1, 4, 4, 4))), ValueError,
     ["conv_grad_weight", "grad_output", "(1, 4, 4, 4)", "(1, 4, 3, 3)"]),
    ("grad_weight weight_shape rank", lambda: fc.conv_grad_weight(X2, (4, 3), Y2), ValueError,
     ["conv_grad_weight", "weight_shape", "(4, 3)"]),
    ("grad_weight input rank", lambda: fc.conv_grad_weight(np.ones((5, 5)), W2.shape, Y2), ValueError,
     ["conv_grad_weight", "input", "(5, 5)"]),
    ("grad_weight channels", lambda: fc.conv_grad_weight(np.ones((1, 2, 5, 5)), W2.shape, Y2), ValueError,
     ["conv_grad_weight", "2 channels"]),
    ("grad_weight kernel > input", lambda: fc.conv_grad_weight(np.ones((1, 3, 2, 2)), W2.shape, Y2), ValueError,
     ["conv_grad_weight", "kernel"]),
    ("grad_weight float16", lambda: fc.conv_grad_weight(X2.astype(np.float16), W2.shape, Y2), TypeError,
     ["conv_grad_weight", "input", "float16"]),
    ("grad_weight padding mode string", lambda: fc.conv_grad_weight(X2, W2.shape, Y2, padding="nope"), ValueError,
     ["conv_grad_weight", "padding", "'nope'"]),
    ("grad_bias empty", lambda: fc.conv_grad_bias(np.ones((0, 3))), ValueError, ["conv_grad_bias", "grad_output", "(0, 3)"]),
    ("grad_bias 1-D", lambda: fc.conv_grad_bias(np.ones(3)), ValueError, ["conv_grad_bias", "grad_output", "(3,)"]),
    ("grad_bias complex", lambda: fc.conv_grad_bias(np.ones((2, 3), complex)), TypeError, ["conv_grad_bias", "complex"]),
    ("grad_bias object", lambda: fc.conv_grad_bias(np.ones((2, 3), object)), TypeError, ["conv_grad_bias", "object"]),
]


@pytest.mark.parametrize("call, exc, parts", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(call, exc, parts):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    assert msg.split(":")[0] in {p for p in parts if p.startswith("conv")}, msg


@pytest.mark.parametrize("func", ["conv", "conv_transpose", "conv_grad_input", "conv_grad_weight"])
def test_none_arrays_raise_type_error(func):
    """None where an array is required is a TypeError naming the function (not AttributeError)."""
    calls = {
        "conv": [lambda: fc.conv(None, W2), lambda: fc.conv2d(X2, None)],
        "conv_transpose": [lambda: fc.conv_transpose(None, W2), lambda: fc.conv_transpose2d(Y2, None)],
        "conv_grad_input": [lambda: fc.conv_grad_input(X2.shape, None, Y2), lambda: fc.conv_grad_input(X2.shape, W2, None)],
        "conv_grad_weight": [lambda: fc.conv_grad_weight(None, W2.shape, Y2), lambda: fc.conv_grad_weight(X2, W2.shape, None)],
    }[func]
    for call in calls:
        with pytest.raises(TypeError, match=func):
            call()


def test_bad_input_never_crashes_on_extremes():
    """Huge strides/dilations/paddings are either computed or rejected cleanly."""
    x = np.ones((1, 1, 5))
    w = np.ones((1, 1, 2))
    assert fc.conv1d(x, w, stride=10 ** 6).shape == (1, 1, 1)
    with pytest.raises(ValueError, match="conv1d"):
        fc.conv1d(x, w, dilation=10 ** 6)
    with pytest.raises((ValueError, MemoryError), match="conv1d"):
        fc.conv1d(x, w, padding=10 ** 15)
    with pytest.raises((ValueError, MemoryError), match="conv_transpose1d"):
        fc.conv_transpose1d(x, w, stride=10 ** 15)


# ----------------------------------------------------------------------------------------------
# the SIMD 3x3 stencil (groups == C_in, padding <= 1): interior vectors, masked edge vectors,
# overlapping tail vectors and the narrow-row scalar fallback, against the reference
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pads", [((1, 1), (1, 1)), ((0, 0), (0, 0)), ((1, 0), (0, 1)),
                                  ((0, 1), (1, 1)), ((1, 1), (1, 0))])
def test_stencil3x3_every_width(dtype, pads):
    rng = np.random.default_rng(7)
    for W in list(range(1, 21)) + [31, 33, 56]:
        H = 1 + W % 5
        if H + sum(pads[0]) < 3 or W + sum(pads[1]) < 3:
            continue
        x = rng.standard_normal((2, 3, H, W)).astype(dtype)
        w = rng.standard_normal((6, 1, 3, 3)).astype(dtype)       # two outputs per input channel
        b = rng.standard_normal(6).astype(dtype)
        got = fc.conv2d(x, w, b, padding=pads, groups=3)
        want = conv_ref(x, w, b, pads=pads, groups=3)
        np.testing.assert_allclose(got, want, rtol=RTOL[np.dtype(dtype)] * 10,
                                   atol=RTOL[np.dtype(dtype)] * 10, err_msg=f"W={W}")


def test_stencil3x3_inf_next_to_padding():
    # masked lanes must read as exact zeros: an inf at the row edge may only reach the outputs
    # whose windows hold it (a 0 * inf from a padding column would turn neighbours into NaN)
    x = np.zeros((1, 1, 4, 12), np.float32)
    x[0, 0, :, 0] = np.inf
    w = np.ones((1, 1, 3, 3), np.float32)
    got = fc.conv2d(x, w, padding=1)
    assert np.isinf(got[0, 0, :, :2]).all()
    assert (got[0, 0, :, 2:] == 0).all()


def test_plain_key_rule():
    """The one rule for repeat-call keys (_args.plain_key): None, bools, ints, strings and nested
    tuples of ints, strings and Nones, with the top-level types in the key; bools inside tuples,
    floats, lists and numpy scalars are not plain (such calls are checked in full every time)."""
    from fastconv import _args
    k = _args.plain_key((1, (2, None), ((1, 2), (3, 4)), "same", None, True))
    assert k is not None and k[-6:] == (int, tuple, tuple, str, type(None), bool)
    assert _args.plain_key((True,)) != _args.plain_key((1,))
    for bad in [(1, True)], [1.0], [[1, 2]], [np.int64(1)], [(np.int64(1),)], [(1.0, 2)]:
        assert _args.plain_key(tuple(bad)) is None, bad


def test_repeated_calls_skip_checks_but_not_correctness(monkeypatch):
    """A repeat of a validated conv / conv_transpose call (same shapes, dtype and plain arguments)
    skips the argument checks: it must still compute from the new data, keep batched / unbatched
    apart, use the normalised groups, and leave every other call to the full checks."""
    conv_mod = sys.modules["fastconv.conv"]
    monkeypatch.setattr(conv_mod, "_VALIDATED", {})
    rng = np.random.default_rng(8)
    for _ in range(3):
        x = rng.standard_normal((2, 4, 7, 6))
        w = rng.standard_normal((6, 2, 3, 2))
        b = rng.standard_normal(6)
        want = conv_ref(x, w, b, (2, 1), ((1, 1), (0, 1)), None, 2)
        np.testing.assert_allclose(fc.conv2d(x, w, b, (2, 1), ((1, 1), (0, 1)), groups=(2,)), want,
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fc.conv2d(x[0], w, b, (2, 1), ((1, 1), (0, 1)), groups=2), want[0],
                                   rtol=1e-12, atol=1e-12)
        wt = rng.standard_normal((4, 3, 3, 3))
        y = rng.standard_normal((2, 4, 3, 4))
        got = fc.conv_transpose2d(y, wt, None, 2, 1, groups=(2,), output_size=(6, 8))
        want_t = conv_transpose_ref(y, wt, (6, 8), (2, 2), ((1, 1), (1, 1)), None, 2)
        np.testing.assert_allclose(got, want_t, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fc.conv_transpose2d(y[1], wt, None, 2, 1, groups=2,
                                                       output_size=(6, 8)), want_t[1],
                                   rtol=1e-12, atol=1e-12)
    assert len(conv_mod._VALIDATED) == 4
    # same shapes, other arguments: checked in full
    with pytest.raises(ValueError, match="output_size"):
        fc.conv_transpose2d(y, wt, None, 2, 1, groups=2, output_size=(9, 9))
    with pytest.raises(ValueError, match="groups"):
        fc.conv2d(x, w, b, (2, 1), ((1, 1), (0, 1)), groups=3)
    with pytest.raises(TypeError):
        fc.conv2d(x, w, b, (2, 1), ((1, 1), (0, 1)), groups=2.0)
    # a bool where an int passed (True == 1 and hashes alike): its own key, checked in full
    fc.conv2d(x, w, b, 1, 1, groups=2)
    with pytest.raises(TypeError, match="stride"):
        fc.conv2d(x, w, b, True, 1, groups=2)
    with pytest.raises(TypeError, match="stride"):
        fc.conv2d(x, w, b, (1, True), 1, groups=2)
    # not an array the kernels take as it is: converted, same result
    xb = x.astype(">f8")
    np.testing.assert_allclose(fc.conv2d(xb, w, b, (2, 1), ((1, 1), (0, 1)), groups=2),
                               conv_ref(x, w, b, (2, 1), ((1, 1), (0, 1)), None, 2), rtol=1e-12)
