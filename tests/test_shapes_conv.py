"""output_shape / conv_transpose_output_shape: the size arithmetic of the convolution family.

Checked against an independent formula, against the shapes conv / conv_transpose really return,
and against torch where installed.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastconv as fc


def ref_out(i, k, s, d, pb, pa, ceil_mode=False):
    span = i + pb + pa - d * (k - 1) - 1
    if ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= i + pb:          # torch: the last window must start inside
            out -= 1
        return out
    return span // s + 1


def ref_pairs(padding, sp, k, s, d):
    rank = len(k)
    if padding == "valid":
        return [(0, 0)] * rank
    if padding == "full":
        return [(dd * (kk - 1),) * 2 for kk, dd in zip(k, d)]
    if padding == "same":
        pairs = []
        for i, kk, ss, dd in zip(sp, k, s, d):
            total = max(0, (-(-i // ss) - 1) * ss + dd * (kk - 1) + 1 - i)
            pairs.append((total // 2, total - total // 2))
        return pairs
    if isinstance(padding, int):
        return [(padding, padding)] * rank
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


@st.composite
def shape_cases(draw):
    rank = draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    s = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    d = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    form = draw(st.sampled_from(["int", "tuple", "pairs", "valid", "same", "full"]))
    if form == "int":
        padding = draw(st.integers(0, 3))
    elif form == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(rank))
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(rank))
    else:
        padding = form
    pairs = ref_pairs(padding, [99] * rank, k, s, d) if form != "same" else None
    lbs = [max(1, dd * (kk - 1) + 1 - (0 if pairs is None else sum(pairs[i])))
           for i, (kk, dd) in enumerate(zip(k, d))]
    sp = tuple(draw(st.integers(lb, lb + 9)) for lb in lbs)
    lead = draw(st.sampled_from([(), (3,), (2, 3)]))
    return dict(rank=rank, k=k, s=s, d=d, padding=padding, sp=sp, lead=lead,
                stride=s[0] if len(set(s)) == 1 and draw(st.booleans()) else s,
                dilation=d[0] if len(set(d)) == 1 and draw(st.booleans()) else d)


@given(shape_cases())
def test_output_shape_formula_and_conv(case):
    k, s, d, sp = case["k"], case["s"], case["d"], case["sp"]
    got = fc.output_shape(case["lead"] + sp, k, case["stride"], case["padding"], case["dilation"])
    pairs = ref_pairs(case["padding"], sp, k, s, d)
    expect = tuple(ref_out(i, kk, ss, dd, pb, pa) for i, kk, ss, dd, (pb, pa) in zip(sp, k, s, d, pairs))
    assert got == case["lead"] + expect
    if case["padding"] == "same":
        assert expect == tuple(-(-i // ss) for i, ss in zip(sp, s))
    # the convolution itself produces exactly that shape
    x = np.zeros((2, 3) + sp)
    w = np.zeros((2, 3) + k)
    out = fc.conv(x, w, None, case["stride"], case["padding"], case["dilation"])
    assert out.shape == (2, 2) + expect


@given(st.integers(1, 3), st.data())
def test_output_shape_ceil_mode(rank, data):
    k = tuple(data.draw(st.integers(1, 4)) for _ in range(rank))
    s = tuple(data.draw(st.integers(1, 4)) for _ in range(rank))
    p = tuple(data.draw(st.integers(0, kk // 2)) for kk in k)
    sp = tuple(data.draw(st.integers(kk, kk + 12)) for kk in k)
    got = fc.output_shape(sp, k, s, p, ceil_mode=True)
    expect = tuple(ref_out(i, kk, ss, 1, pp, pp, True) for i, kk, ss, pp in zip(sp, k, s, p))
    assert got == expect
    floor = fc.output_shape(sp, k, s, p)
    assert all(f <= c <= f + 1 for f, c in zip(floor, got))


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_output_shape_ceil_mode_vs_torch_pooling(rank):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
    rng = np.random.default_rng(rank)
    for _ in range(60):
        k = tuple(int(v) for v in rng.integers(1, 5, rank))
        s = tuple(int(v) for v in rng.integers(1, 5, rank))
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        sp = tuple(int(kk + rng.integers(0, 9)) for kk in k)
        for ceil_mode in (False, True):
            ref = pool(torch.zeros((1, 1) + sp), k, s, p, ceil_mode=ceil_mode).shape
            assert fc.output_shape((1, 1) + sp, k, s, p, ceil_mode=ceil_mode) == tuple(ref)


def test_output_shape_examples():
    assert fc.output_shape((320, 280), (2, 1)) == (319, 280)
    assert fc.output_shape((8, 64, 56, 56), (3, 3), stride=2, padding=1) == (8, 64, 28, 28)
    assert fc.output_shape((5, 5), 3, padding=1) == (5, 5)                # the lecture's example
    assert fc.output_shape((3, 5, 5), (3, 3), padding=1) == (3, 5, 5)     # (C, *spatial) kept
    assert fc.output_shape((10, 11), (3, 2), padding="full", dilation=2) == (14, 13)
    assert fc.output_shape((10,), (3,), stride=2, ceil_mode=True) == (5,)
    assert fc.output_shape((10,), (3,), stride=2) == (4,)
    assert fc.output_shape((7, 7), (3, 3), stride=(2, 3), padding="same") == (4, 3)
    assert fc.output_shape((6,), (4,), padding=((2, 0),)) == (5,)


@st.composite
def transpose_shape_cases(draw):
    rank = draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    s = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    d = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    form = draw(st.sampled_from(["int", "tuple", "pairs", "valid"]))
    if form == "int":
        padding = draw(st.integers(0, 3))
    elif form == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(rank))
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(rank))
    else:
        padding = "valid"
    pairs = ref_pairs(padding, [1] * rank, k, s, d)
    sp, opad = [], []
    for i in range(rank):
        keff = d[i] * (k[i] - 1) + 1
        lb = max(1, 1 + -(-(sum(pairs[i]) + 1 - keff) // s[i]))
        sp.append(draw(st.integers(lb, lb + 8)))
        opad.append(draw(st.integers(0, max(s[i], d[i]) - 1)))
    return dict(rank=rank, k=k, s=s, d=d, padding=padding, pairs=pairs, sp=tuple(sp), opad=tuple(opad),
                lead=draw(st.sampled_from([(), (4,), (2, 4)])))


@given(transpose_shape_cases())
def test_conv_transpose_output_shape(case):
    k, s, d, sp, opad = case["k"], case["s"], case["d"], case["sp"], case["opad"]
    got = fc.conv_transpose_output_shape(case["lead"] + sp, k, s, case["padding"], opad, d)
    expect = tuple((i - 1) * ss - pb - pa + dd * (kk - 1) + o + 1
                   for i, kk, ss, dd, (pb, pa), o in zip(sp, k, s, d, case["pairs"], opad))
    assert got == case["lead"] + expect
    y = np.zeros((2, 4) + sp)
    w = np.zeros((4, 3) + k)
    assert fc.conv_transpose(y, w, None, s, case["padding"], opad, d).shape == (2, 3) + expect
    # output_shape inverts it when output_padding is 0 (and stride divides evenly)
    if not any(opad) and all(v >= 1 for v in expect):
        assert fc.output_shape(expect, k, s, case["padding"], d) == sp


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_transpose_output_shape_vs_torch(rank):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tf = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
    rng = np.random.default_rng(10 + rank)
    for _ in range(30):
        k = tuple(int(v) for v in rng.integers(1, 4, rank))
        s = tuple(int(v) for v in rng.integers(1, 4, rank))
        d = tuple(int(v) for v in rng.integers(1, 3, rank))
        p = tuple(int(rng.integers(0, 2)) for _ in range(rank))
        o = tuple(int(rng.integers(0, max(ss, dd))) for ss, dd in zip(s, d))
        sp = tuple(int(v) for v in rng.integers(2, 6, rank))
        try:
            ref = tuple(tf(torch.zeros((1, 1) + sp), torch.zeros((1, 1) + k), stride=s, padding=p,
                           output_padding=o, dilation=d).shape)
        except RuntimeError:
            continue
        assert fc.conv_transpose_output_shape((1, 1) + sp, k, s, p, o, d) == ref


@pytest.mark.parametrize("padding", ["same", "full"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv_transpose_output_shape_string_paddings(padding, stride):
    """conv_transpose accepts 'same' and 'full'; the size arithmetic must agree with it."""
    for n in range(1, 6):
        for k in (1, 2, 3):
            try:
                real = fc.conv_transpose1d(np.zeros((1, 1, n)), np.zeros((1, 1, k)), stride=stride,
                                           padding=padding).shape[2:]
            except ValueError:
                with pytest.raises(ValueError, match="conv_transpose_output_shape"):
                    fc.conv_transpose_output_shape((n,), (k,), stride, padding)
                continue
            assert fc.conv_transpose_output_shape((n,), (k,), stride, padding) == real


BAD = [
    (lambda: fc.output_shape((2, 2), (3, 3)), ValueError, ["output_shape", "kernel_size", "(3, 3)", "(2, 2)"]),
    (lambda: fc.output_shape((5, 5), (3, 3), dilation=3), ValueError, ["output_shape", "dilation"]),
    (lambda: fc.output_shape((5, 5), (3, 3), stride=0), ValueError, ["output_shape", "stride", "0"]),
    (lambda: fc.output_shape((5, 5), (3, 3), dilation=(1, 0)), ValueError, ["output_shape", "dilation"]),
    (lambda: fc.output_shape((5, 5), (3, 0)), ValueError, ["output_shape", "kernel_size"]),
    (lambda: fc.output_shape((5, 5), (3, 3), padding=-1), ValueError, ["output_shape", "padding", "-1"]),
    (lambda: fc.output_shape((5, 5), (3, 3), padding="bogus"), ValueError, ["output_shape", "padding", "'bogus'"]),
    (lambda: fc.output_shape((5, 5), (3, 3), padding=(1, 1, 1)), ValueError, ["output_shape", "padding"]),
    (lambda: fc.output_shape((0, 5), (3, 3)), ValueError, ["output_shape", "input_shape"]),
    (lambda: fc.output_shape((5.0, 5), (3, 3)), TypeError, ["output_shape", "input_shape"]),
    (lambda: fc.output_shape((5, 5), (1, 1, 1, 1)), ValueError, ["output_shape", "kernel_size"]),
    (lambda: fc.output_shape((1, 2, 3, 4, 5, 6), (1, 1)), ValueError, ["output_shape", "input_shape"]),
    (lambda: fc.output_shape(5, 3), TypeError, ["output_shape", "input_shape"]),
    (lambda: fc.output_shape((5,), 1.5), TypeError, ["output_shape", "kernel_size"]),
    (lambda: fc.conv_transpose_output_shape((5, 5), (3, 3), stride=2, output_padding=2), ValueError,
     ["conv_transpose_output_shape", "output_padding", "(2, 2)"]),
    (lambda: fc.conv_transpose_output_shape((5, 5), (3, 3), output_padding=-1), ValueError,
     ["conv_transpose_output_shape", "output_padding", "-1"]),
    (lambda: fc.conv_transpose_output_shape((1,), (1,), padding=1), ValueError,
     ["conv_transpose_output_shape", "padding"]),
    (lambda: fc.conv_transpose_output_shape((5, 5), (3, 3), stride=0), ValueError,
     ["conv_transpose_output_shape", "stride"]),
    (lambda: fc.conv_transpose_output_shape((5, 5), (3, 3), padding="bogus"), ValueError,
     ["conv_transpose_output_shape", "padding", "'bogus'"]),
]


@pytest.mark.parametrize("call, exc, parts", BAD)
def test_shape_bad_input(call, exc, parts):
    with pytest.raises(exc) as info:
        call()
    for part in parts:
        assert part in str(info.value), (part, str(info.value))
