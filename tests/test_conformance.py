"""Randomized conformance of every op family against slow, obviously-right references.

Families: convolution (forward, all padding forms and modes, flip, groups, bias), transposed
convolution, convolution gradients, pooling (max with indices, avg, lp, adaptive, global, and the
backward passes), unshared convolution (forward, adjoint, gradients), matrix forms (conv_matrix,
unshared_conv_matrix). The references live in ``tests/ref_*.py`` and are imported, not duplicated.

Tolerances (relative to the magnitude of the result): ``1e-5`` for float32, ``1e-12`` for float64,
i.e. ``max|got - want| <= tol * max|want|``. Where the result cancels (random signs), the magnitude is
that of the same computation on ``|inputs|`` -- the size of the summed terms, which bounds rounding.

Example counts come from the hypothesis profile (``tests/conftest.py``): ``default``/``ci`` are fast;
``FASTCONV_HYPOTHESIS_PROFILE=thorough`` (or ``--hypothesis-profile=thorough``) runs >= 2000 examples
per test, hence per family. Run with ``--hypothesis-show-statistics`` to see the counts.
"""
import math

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import fastconv
import ref_pool
import ref_unshared
from ref_conv import conv_grad_weight_ref, conv_ref, conv_transpose_ref

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
MAX_SIDE = {1: 14, 2: 8, 3: 5}


# ------------------------------------------------------------------------------------------------
# helpers

def _abs_args(args):
    return [np.abs(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]


def assert_conforms(got, ref, args=(), kwargs=None, dtype=np.float64, want=None):
    """``got`` matches ``ref(*args, **kwargs)`` within TOL[dtype] relative to the result's magnitude."""
    kwargs = kwargs or {}
    dtype = np.dtype(dtype)
    got = np.asarray(got)
    if want is None:
        want = ref(*args, **kwargs)
    want = np.asarray(want, np.float64)
    assert got.dtype == dtype, f"result dtype {got.dtype}, expected {dtype}"
    assert got.shape == want.shape, f"result shape {got.shape}, expected {want.shape}"
    tol = TOL[dtype]
    err = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    scale = float(np.abs(want).max()) if want.size else 0.0
    if err <= tol * scale:
        return
    # cancellation: measure the magnitude on |inputs| (same op, no cancellation)
    if ref is not None and args:
        scale = max(scale, float(np.abs(np.asarray(ref(*_abs_args(args), **kwargs))).max()))
    note(f"max abs error {err:.3g}, magnitude {scale:.3g}, tol {tol}")
    assert err <= tol * max(scale, np.finfo(dtype).tiny), \
        f"max |got - want| = {err:.3g} > {tol} * {scale:.3g}"


def _rng(data):
    return np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))


def _array(rng, shape, dtype, *, positive=False, ties=False):
    if ties:
        a = rng.integers(-3, 4, size=shape).astype(np.float64)
    else:
        a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.1
    return a.astype(dtype)


def _layout(data, a):
    """Sometimes hand the op a non-contiguous, read-only or byte-swapped view of the same values."""
    kind = data.draw(st.sampled_from(["c", "c", "strided", "fortran", "swapped", "readonly"]), label="layout")
    if kind == "strided" and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "swapped":
        return a.astype(a.dtype.newbyteorder())
    if kind == "readonly":
        a = a.copy()
        a.flags.writeable = False
    return a


dtypes = st.sampled_from([np.float32, np.float64])


def _same_pairs(in_sp, kernel, stride, dilation, odd_before=False):
    """TensorFlow SAME, as API.md states it: out = ceil(in / s), the odd element after."""
    pairs = []
    for i, k, s, d in zip(in_sp, kernel, stride, dilation):
        out = -(-i // s)
        total = max(0, (out - 1) * s + d * (k - 1) + 1 - i)
        small, big = total // 2, total - total // 2
        pairs.append((big, small) if odd_before else (small, big))
    return tuple(pairs)


def _draw_padding(data, rank, kernel, dilation, *, strings=("valid", "same", "full"), max_pad=3):
    """-> (padding argument, function in_sp -> (before, after) pairs or None for 'same')."""
    form = data.draw(st.sampled_from(["int", "tuple", "pairs"] + list(strings)), label="padding form")
    if form == "int":
        p = data.draw(st.integers(0, max_pad))
        return p, ((p, p),) * rank
    if form == "tuple":
        p = tuple(data.draw(st.integers(0, max_pad)) for _ in range(rank))
        return p, tuple((v, v) for v in p)
    if form == "pairs":
        p = tuple((data.draw(st.integers(0, max_pad)), data.draw(st.integers(0, max_pad))) for _ in range(rank))
        return p, p
    if form == "valid":
        return "valid", ((0, 0),) * rank
    if form == "full":
        return "full", tuple((d * (k - 1), d * (k - 1)) for k, d in zip(kernel, dilation))
    return "same", None


def _draw_sizes(data, rank, kernel, dilation, pads, minimum=1):
    sizes = []
    for i in range(rank):
        need = dilation[i] * (kernel[i] - 1) + 1 - (pads[i][0] + pads[i][1] if pads else 0)
        lo = max(minimum, need)
        sizes.append(data.draw(st.integers(lo, max(lo, MAX_SIDE[rank])), label=f"size{i}"))
    return tuple(sizes)


def _conv_case(data, *, max_k=3):
    rank = data.draw(st.integers(1, 3), label="rank")
    groups = data.draw(st.integers(1, 3), label="groups")
    cig = data.draw(st.integers(1, 3), label="C_in/groups")
    cog = data.draw(st.integers(1, 2), label="C_out/groups")
    kmax = max_k if rank < 3 else 2
    kernel = tuple(data.draw(st.integers(1, kmax)) for _ in range(rank))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(rank))
    return rank, groups, cig, cog, kernel, stride, dilation


def _per_dim(data, t):
    """Pass a per-dimension tuple, or an int when all entries agree (both forms are API)."""
    if len(set(t)) == 1 and data.draw(st.booleans(), label="as int"):
        return t[0]
    return t


# ------------------------------------------------------------------------------------------------
# convolution family

@given(data=st.data(), dtype=dtypes)
def test_conv_forward(data, dtype):
    rng = _rng(data)
    rank, groups, cig, cog, kernel, stride, dilation = _conv_case(data)
    mode = data.draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]), label="mode")
    flip = data.draw(st.booleans(), label="flip")
    if mode == "zeros":
        padding, pads = _draw_padding(data, rank, kernel, dilation)
        in_sp = _draw_sizes(data, rank, kernel, dilation, pads)
    else:
        in_sp = tuple(data.draw(st.integers(2, MAX_SIDE[rank])) for _ in range(rank))
        limit = [s - 1 if mode == "reflect" else s for s in in_sp]
        pads = tuple((data.draw(st.integers(0, min(2, m))), data.draw(st.integers(0, min(2, m)))) for m in limit)
        padding = pads
        # the padded input must hold the dilated kernel
        in_sp_ok = all(s + a + b >= d * (k - 1) + 1 for s, (a, b), k, d in zip(in_sp, pads, kernel, dilation))
        if not in_sp_ok:
            kernel = (1,) * rank
    if pads is None:
        pads = _same_pairs(in_sp, kernel, stride, dilation, odd_before=flip)
    N = data.draw(st.sampled_from([None, 1, 2]), label="N")
    x = _array(rng, ((N,) if N else (1,)) + (cig * groups,) + in_sp, dtype)
    w = _array(rng, (cog * groups, cig) + kernel, dtype)
    b = _array(rng, (cog * groups,), dtype) if data.draw(st.booleans(), label="bias") else None
    func = data.draw(st.sampled_from(["conv", f"conv{rank}d"]))
    got = getattr(fastconv, func)(_layout(data, x[0] if N is None else x), _layout(data, w), b,
                                  stride=_per_dim(data, stride), padding=padding,
                                  dilation=_per_dim(data, dilation), groups=groups, padding_mode=mode, flip=flip)
    wr = w[(Ellipsis,) + (slice(None, None, -1),) * rank] if flip else w
    args = (x, wr, b, stride, pads, dilation, groups, mode)
    want = conv_ref(*args)
    assert_conforms(got, conv_ref, args, dtype=dtype, want=want[0] if N is None else want)


def test_conv_flip_same_is_scipy_convolve():
    """flip=True, padding="same" centres like scipy.signal.convolve(mode="same") (conv docstring)."""
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(5)
    for shape, k in [((11,), (4,)), ((7, 9), (3, 4)), ((5, 6, 4), (2, 3, 3))]:
        x = rng.standard_normal(shape)
        w = rng.standard_normal(k)
        got = fastconv.conv(x[None, None], w[None, None], padding="same", flip=True)[0, 0]
        np.testing.assert_allclose(got, signal.convolve(x, w, mode="same", method="direct"), rtol=1e-12, atol=1e-12)


def _transpose_case(data, dtype):
    rng = _rng(data)
    rank, groups, cig, cog, kernel, stride, dilation = _conv_case(data)
    # conv_transpose(y, w): w (C_in, C_out/groups, *k) is the weight of the conv from C_out to C_in
    c_in, c_out = cog * groups, cig * groups
    form = data.draw(st.sampled_from(["int", "pairs", "valid", "full", "same"]), label="padding form")
    in_sp = tuple(data.draw(st.integers(1, MAX_SIDE[rank] // 2 + 1)) for _ in range(rank))
    opad = (0,) * rank
    output_size = None
    if form == "same":
        padding = "same"
        out_sp = tuple(i * s for i, s in zip(in_sp, stride))
        pads = _same_pairs(out_sp, kernel, stride, dilation)
    else:
        if form == "int":
            p = data.draw(st.integers(0, 2))
            padding, pads = p, ((p, p),) * rank
        elif form == "pairs":
            pads = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in range(rank))
            padding = pads
        elif form == "valid":
            padding, pads = "valid", ((0, 0),) * rank
        else:
            padding = "full"
            pads = tuple((d * (k - 1), d * (k - 1)) for k, d in zip(kernel, dilation))
        opad = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
        out_sp = tuple((i - 1) * s - pb - pa + d * (k - 1) + o + 1
                       for i, s, (pb, pa), d, k, o in zip(in_sp, stride, pads, dilation, kernel, opad))
        if min(out_sp) < 1:
            # padding too large for this input: the call must refuse it cleanly
            with pytest.raises(ValueError, match="padding"):
                fastconv.conv_transpose(rng.standard_normal((1, c_in) + in_sp), np.ones((c_in, c_out // groups) + kernel),
                                        stride=stride, padding=padding, output_padding=opad,
                                        dilation=dilation, groups=groups)
            return None
        if data.draw(st.booleans(), label="output_size"):
            output_size = out_sp if data.draw(st.booleans()) else (2, c_out) + out_sp
            opad = 0
    return rng, rank, groups, c_in, c_out, kernel, stride, dilation, padding, pads, opad, output_size, in_sp, out_sp


@given(data=st.data(), dtype=dtypes)
def test_conv_transpose(data, dtype):
    case = _transpose_case(data, dtype)
    if case is None:
        return
    rng, rank, groups, c_in, c_out, kernel, stride, dilation, padding, pads, opad, output_size, in_sp, out_sp = case
    N = data.draw(st.sampled_from([None, 1, 2]), label="N")
    y = _array(rng, ((N,) if N else (1,)) + (c_in,) + in_sp, dtype)
    w = _array(rng, (c_in, c_out // groups) + kernel, dtype)
    b = _array(rng, (c_out,), dtype) if data.draw(st.booleans(), label="bias") else None
    func = data.draw(st.sampled_from(["conv_transpose", f"conv_transpose{rank}d"]))
    got = getattr(fastconv, func)(_layout(data, y[0] if N is None else y), _layout(data, w), b,
                                  stride=_per_dim(data, stride), padding=padding, output_padding=opad,
                                  dilation=dilation, groups=groups, output_size=output_size)

    def ref(y, w, b):
        r = conv_transpose_ref(y, w, out_sp, stride, pads, dilation, groups)
        if b is not None:
            r = r + b.reshape((1, -1) + (1,) * rank)
        return r[0] if N is None else r

    assert_conforms(got, ref, (y, w, b), dtype=dtype)


@given(data=st.data(), dtype=dtypes)
def test_conv_grads(data, dtype):
    """conv_grad_input is the adjoint (conv_transpose_ref), conv_grad_weight the weight gradient."""
    rng = _rng(data)
    rank, groups, cig, cog, kernel, stride, dilation = _conv_case(data)
    padding, pads = _draw_padding(data, rank, kernel, dilation)
    in_sp = _draw_sizes(data, rank, kernel, dilation, pads)
    if pads is None:
        pads = _same_pairs(in_sp, kernel, stride, dilation)
    batched = data.draw(st.booleans(), label="batched")
    N = data.draw(st.integers(1, 2)) if batched else 1
    c_in, c_out = cig * groups, cog * groups
    x = _array(rng, (N, c_in) + in_sp, dtype)
    w = _array(rng, (c_out, cig) + kernel, dtype)
    out_sp = conv_ref(x[:1, :1], w[:1, :1], None, stride, pads, dilation).shape[2:]
    gy = _array(rng, (N, c_out) + out_sp, dtype)
    sq = (lambda a: a) if batched else (lambda a: a[0])
    in_shape = (N, c_in) + in_sp if batched else (c_in,) + in_sp
    gi = fastconv.conv_grad_input(in_shape, _layout(data, w), _layout(data, sq(gy)), stride, padding, dilation, groups)
    assert_conforms(gi, lambda gy, w: sq(conv_transpose_ref(gy, w, in_sp, stride, pads, dilation, groups)),
                    (gy, w), dtype=dtype)
    gw = fastconv.conv_grad_weight(_layout(data, sq(x)), w.shape, sq(gy), stride, padding, dilation, groups)
    assert_conforms(gw, lambda x, gy: conv_grad_weight_ref(x, gy, w.shape, stride, pads, dilation, groups),
                    (x, gy), dtype=dtype)
    gb = fastconv.conv_grad_bias(gy if batched else gy[0], batched=batched)
    assert_conforms(gb, lambda gy: gy.astype(np.float64).sum(axis=(0,) + tuple(range(2, gy.ndim))), (gy,), dtype=dtype)


# ------------------------------------------------------------------------------------------------
# pooling family

def _pool_input(data, rng, rank, dtype, *, min_side=1, positive=False):
    lead = data.draw(st.sampled_from([(1, 1), (2, 3), (3,)]), label="lead")
    sp = tuple(data.draw(st.integers(min_side, MAX_SIDE[rank])) for _ in range(rank))
    ties = data.draw(st.booleans(), label="ties") and not positive
    return _array(rng, lead + sp, dtype, positive=positive, ties=ties), lead, sp


def _window(data, rank, sp, *, dilation=True, pad=True):
    kernel = tuple(data.draw(st.integers(1, min(3, s))) for s in sp)
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(rank))
    dil = tuple(data.draw(st.integers(1, 2)) if dilation else 1 for _ in range(rank))
    dil = tuple(d if (k - 1) * d + 1 <= s else 1 for d, k, s in zip(dil, kernel, sp))
    padding = tuple(data.draw(st.integers(0, k // 2)) if pad else 0 for k in kernel)
    return kernel, stride, dil, padding


def _stride_arg(data, stride, kernel):
    """stride=None means stride = kernel_size."""
    if stride == kernel and data.draw(st.booleans(), label="stride None"):
        return None
    return stride


def _pool_name(data, base, rank, lead):
    # the generic form takes the rank from a tuple kernel_size; unbatched input needs the ranked name
    return data.draw(st.sampled_from([base, f"{base}{rank}d"]), label="func")


@given(data=st.data(), dtype=dtypes)
def test_max_pool(data, dtype):
    rng = _rng(data)
    rank = data.draw(st.integers(1, 3), label="rank")
    x, lead, sp = _pool_input(data, rng, rank, dtype)
    kernel, stride, dil, padding = _window(data, rank, sp)
    ceil_mode = data.draw(st.booleans(), label="ceil_mode")
    func = _pool_name(data, "max_pool", rank, lead)
    out, idx = getattr(fastconv, func)(_layout(data, x), kernel, _stride_arg(data, stride, kernel), padding,
                                       dil, ceil_mode, return_indices=True)
    want, widx = ref_pool.max_pool(x, kernel, stride, padding, dil, ceil_mode)
    assert_conforms(out, None, dtype=dtype, want=want)
    np.testing.assert_array_equal(idx, widx)
    assert idx.dtype == np.int64
    plain = getattr(fastconv, func)(x, kernel, stride, padding, dil, ceil_mode)
    np.testing.assert_array_equal(plain, out)
    # backward: scatter-add of grad_output at the indices
    g = _array(rng, out.shape, dtype)
    # an unbatched input_shape can be ambiguous (API extension spatial_rank settles it)
    sr = dict(spatial_rank=rank) if len(lead) == 1 else {}
    gi = fastconv.max_pool_backward(_layout(data, g), idx, x.shape, **sr)
    P = math.prod(lead)
    ref = np.zeros((P, math.prod(sp)))
    for p in range(P):
        i = idx.reshape(P, -1)[p]
        keep = i >= 0                 # -1: a window without any tap in the input adds nothing
        np.add.at(ref[p], i[keep], g.reshape(P, -1)[p][keep].astype(np.float64))
    assert_conforms(gi, None, dtype=dtype, want=ref.reshape(x.shape))


def _jacobian(fn, sp):
    """Rows: outputs, columns: inputs, of a per-plane linear map (applied to basis planes)."""
    n = math.prod(sp)
    basis = np.eye(n).reshape((n, 1) + tuple(sp))
    out = np.asarray(fn(basis), np.float64)
    return out.reshape(n, -1).T


@given(data=st.data(), dtype=dtypes)
def test_avg_pool(data, dtype):
    rng = _rng(data)
    rank = data.draw(st.integers(1, 3), label="rank")
    x, lead, sp = _pool_input(data, rng, rank, dtype)
    kernel, stride, _, padding = _window(data, rank, sp, dilation=False)
    ceil_mode = data.draw(st.booleans(), label="ceil_mode")
    cip = data.draw(st.booleans(), label="count_include_pad")
    div = data.draw(st.sampled_from([None, None, 1, 3, -2]), label="divisor_override")
    func = data.draw(st.sampled_from(["avg_pool", f"avg_pool{rank}d"]), label="func")
    if func == "avg_pool1d":
        div = None                          # as torch: avg_pool1d has no divisor_override
    kw = dict(count_include_pad=cip)
    if div is not None:
        kw["divisor_override"] = div
    got = getattr(fastconv, func)(_layout(data, x), kernel, _stride_arg(data, stride, kernel), padding,
                                  ceil_mode, **kw)
    args = (x, kernel, stride, padding, ceil_mode, cip, div)
    assert_conforms(got, ref_pool.avg_pool, args, dtype=dtype)
    # backward against the transposed Jacobian of the reference
    g = _array(rng, got.shape, dtype)
    gi = fastconv.avg_pool_backward(_layout(data, g), x.shape, kernel, stride, padding, ceil_mode, cip, div)
    J = _jacobian(lambda b: ref_pool.avg_pool(b, kernel, stride, padding, ceil_mode, cip, div), sp)
    P = math.prod(lead)
    want = (g.reshape(P, -1).astype(np.float64) @ J).reshape(x.shape)
    assert_conforms(gi, lambda g: (g.reshape(P, -1) @ np.abs(J)).reshape(x.shape), (g,), dtype=dtype, want=want)


@given(data=st.data(), dtype=dtypes)
def test_lp_pool(data, dtype):
    rng = _rng(data)
    rank = data.draw(st.integers(1, 3), label="rank")
    x, lead, sp = _pool_input(data, rng, rank, dtype, positive=True)
    kernel, stride, _, _ = _window(data, rank, sp, dilation=False, pad=False)
    ceil_mode = data.draw(st.booleans(), label="ceil_mode")
    p = data.draw(st.sampled_from([1, 2, 3, 1.5, 4.0]), label="norm_type")
    func = _pool_name(data, "lp_pool", rank, lead)
    got = getattr(fastconv, func)(_layout(data, x), p, kernel, _stride_arg(data, stride, kernel), ceil_mode)
    assert_conforms(got, ref_pool.lp_pool, (x, p, kernel, stride, ceil_mode), dtype=dtype)


@given(data=st.data(), dtype=dtypes)
def test_adaptive_and_global_pool(data, dtype):
    rng = _rng(data)
    rank = data.draw(st.integers(1, 3), label="rank")
    x, lead, sp = _pool_input(data, rng, rank, dtype)
    osz = tuple(data.draw(st.one_of(st.none(), st.integers(1, s + 2))) for s in sp)
    eff = tuple(s if o is None else o for o, s in zip(osz, sp))
    arg = osz
    if len(set(osz)) == 1 and osz[0] is not None and data.draw(st.booleans()):
        arg = osz[0]
    ranked = data.draw(st.booleans(), label="ranked") or len(lead) == 1
    mx = (getattr(fastconv, f"adaptive_max_pool{rank}d") if ranked else fastconv.adaptive_max_pool)
    av = (getattr(fastconv, f"adaptive_avg_pool{rank}d") if ranked else fastconv.adaptive_avg_pool)
    if not ranked and not isinstance(arg, tuple):
        arg = (arg,) * rank
    out, idx = mx(_layout(data, x), arg, return_indices=True)
    want, widx = ref_pool.adaptive_pool(x, eff, "max")
    assert_conforms(out, None, dtype=dtype, want=want)
    np.testing.assert_array_equal(idx, widx)
    avg = av(_layout(data, x), arg)
    assert_conforms(avg, lambda x: ref_pool.adaptive_pool(x, eff, "avg"), (x,), dtype=dtype)
    # adaptive max backward goes through max_pool_backward; adaptive avg has its own
    g = _array(rng, avg.shape, dtype)
    sr = dict(spatial_rank=rank) if len(lead) == 1 else {}
    gi = fastconv.adaptive_avg_pool_backward(_layout(data, g), x.shape, **sr)
    J = _jacobian(lambda b: ref_pool.adaptive_pool(b, eff, "avg"), sp)
    P = math.prod(lead)
    assert_conforms(gi, None, dtype=dtype, want=(g.reshape(P, -1).astype(np.float64) @ J).reshape(x.shape))
    gm = fastconv.max_pool_backward(g, idx, x.shape, **sr)
    ref = np.zeros((P, math.prod(sp)))
    for p in range(P):
        np.add.at(ref[p], widx.reshape(P, -1)[p], g.reshape(P, -1)[p].astype(np.float64))
    assert_conforms(gm, None, dtype=dtype, want=ref.reshape(x.shape))
    # global pooling: (N, C, *spatial) -> (N, C); any number of spatial dims
    if len(lead) == 2:
        axes = tuple(range(2, x.ndim))
        assert_conforms(fastconv.global_max_pool(x), None, dtype=dtype, want=x.astype(np.float64).max(axis=axes))
        assert_conforms(fastconv.global_avg_pool(x), lambda x: x.astype(np.float64).mean(axis=axes), (x,), dtype=dtype)


# ------------------------------------------------------------------------------------------------
# unshared family

def _unshared_case(data, dtype):
    rng = _rng(data)
    rank = data.draw(st.integers(1, 2 if data.draw(st.integers(0, 4)) else 3), label="rank")
    c_in = data.draw(st.integers(1, 3), label="C_in")
    c_out = data.draw(st.integers(1, 3), label="C_out")
    kernel = tuple(data.draw(st.integers(1, 3 if rank < 3 else 2)) for _ in range(rank))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(rank))
    padding, pads = _draw_padding(data, rank, kernel, dilation, strings=("valid", "same"), max_pad=2)
    side = {1: 12, 2: 7, 3: 4}[rank]
    in_sp = []
    for i in range(rank):
        need = dilation[i] * (kernel[i] - 1) + 1 - (sum(pads[i]) if pads else 0)
        in_sp.append(data.draw(st.integers(max(1, need), max(1, need, side))))
    in_sp = tuple(in_sp)
    pads = ref_unshared.pad_pairs(padding, in_sp, kernel, stride, dilation)
    grid = ref_unshared.out_grid(in_sp, kernel, stride, dilation, pads)
    N = data.draw(st.sampled_from([None, 1, 2]), label="N")
    return rng, rank, c_in, c_out, kernel, stride, dilation, padding, in_sp, grid, N


@given(data=st.data(), dtype=dtypes)
def test_unshared_conv(data, dtype):
    rng, rank, c_in, c_out, kernel, stride, dilation, padding, in_sp, grid, N = _unshared_case(data, dtype)
    lead = (N, c_in) if N else (c_in,)
    x = _array(rng, lead + in_sp, dtype)
    w = _array(rng, grid + (c_out, c_in) + kernel, dtype)
    bias_kind = data.draw(st.sampled_from([None, "channel", "full"]), label="bias")
    b = None if bias_kind is None else _array(rng, (c_out,) if bias_kind == "channel" else (c_out,) + grid, dtype)
    got = fastconv.unshared_conv(_layout(data, x), _layout(data, w), b, _per_dim(data, stride), padding,
                                 _per_dim(data, dilation))
    assert_conforms(got, lambda x, w, b: ref_unshared.ref_unshared_conv(x, w, b, stride, padding, dilation),
                    (x, w, b), dtype=dtype)


@given(data=st.data(), dtype=dtypes)
def test_unshared_adjoint_and_grads(data, dtype):
    rng, rank, c_in, c_out, kernel, stride, dilation, padding, in_sp, grid, N = _unshared_case(data, dtype)
    batched = N is not None
    lead_in = (N, c_in) if batched else (c_in,)
    lead_out = (N, c_out) if batched else (c_out,)
    w = _array(rng, grid + (c_out, c_in) + kernel, dtype)
    y = _array(rng, lead_out + grid, dtype)
    x = _array(rng, lead_in + in_sp, dtype)
    size_arg = data.draw(st.sampled_from(["spatial", "full", "none"]), label="output_size")
    output_size = {"spatial": in_sp, "full": lead_in + in_sp, "none": None}[size_arg]
    got = fastconv.unshared_conv_transpose(_layout(data, y), _layout(data, w), stride, padding, dilation,
                                           output_size=output_size)
    target = in_sp if output_size is not None else got.shape[-rank:]
    assert_conforms(got, lambda y, w: ref_unshared.ref_unshared_conv_transpose(y, w, target, stride, padding,
                                                                                 dilation),
                    (y, w), dtype=dtype)
    gi = fastconv.unshared_conv_grad_input(lead_in + in_sp, _layout(data, w), y, stride, padding, dilation)
    assert_conforms(gi, lambda y, w: ref_unshared.ref_unshared_conv_transpose(y, w, in_sp, stride, padding,
                                                                                dilation),
                    (y, w), dtype=dtype)
    gw = fastconv.unshared_conv_grad_weight(_layout(data, x), w.shape, _layout(data, y), stride, padding, dilation)
    assert_conforms(gw, lambda x, y: ref_unshared.ref_unshared_conv_grad_weight(x, w.shape, y, stride, padding,
                                                                                  dilation),
                    (x, y), dtype=dtype)


# ------------------------------------------------------------------------------------------------
# matrix forms

def _matvec(M, v):
    # a column vector: scipy's 1x1 coo_array @ 1-d vector gives a 0-d result
    return np.asarray(M @ v.reshape(-1, 1)).ravel()


@given(data=st.data(), dtype=dtypes)
def test_conv_matrix(data, dtype):
    rng = _rng(data)
    rank, groups, cig, cog, kernel, stride, dilation = _conv_case(data)
    padding, pads = _draw_padding(data, rank, kernel, dilation)
    in_sp = _draw_sizes(data, rank, kernel, dilation, pads)
    if pads is None:
        pads = _same_pairs(in_sp, kernel, stride, dilation)
    fmt = data.draw(st.sampled_from(["dense", "csr", "csc", "coo"]), label="format")
    x = _array(rng, (cig * groups,) + in_sp, dtype)
    w = _array(rng, (cog * groups, cig) + kernel, dtype)
    M = fastconv.conv_matrix(x.shape, _layout(data, w), stride, padding, dilation, groups, format=fmt)
    assert M.dtype == dtype
    want = conv_ref(x[None], w, None, stride, pads, dilation, groups)[0]
    assert M.shape == (want.size, x.size)
    assert_conforms(_matvec(M, x), lambda x, w: conv_ref(x[None], w, None, stride, pads, dilation,
                                                                      groups).ravel(),
                    (x, w), dtype=dtype)
    # the transpose is conv_transpose
    y = _array(rng, want.shape, dtype)
    assert_conforms(_matvec(M.T, y),
                    lambda y, w: conv_transpose_ref(y[None], w, in_sp, stride, pads, dilation, groups).ravel(),
                    (y, w), dtype=dtype)


@given(data=st.data(), dtype=dtypes)
def test_unshared_conv_matrix(data, dtype):
    rng, rank, c_in, c_out, kernel, stride, dilation, padding, in_sp, grid, _ = _unshared_case(data, dtype)
    fmt = data.draw(st.sampled_from(["dense", "csr", "csc", "coo"]), label="format")
    x = _array(rng, (c_in,) + in_sp, dtype)
    w = _array(rng, grid + (c_out, c_in) + kernel, dtype)
    M = fastconv.unshared_conv_matrix(x.shape, _layout(data, w), stride, padding, dilation, format=fmt)
    assert M.dtype == dtype
    assert_conforms(_matvec(M, x),
                    lambda x, w: ref_unshared.ref_unshared_conv(x, w, None, stride, padding, dilation).ravel(),
                    (x, w), dtype=dtype)
