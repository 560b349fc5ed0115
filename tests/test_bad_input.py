"""Bad input, table-driven: every public function rejects it with a clear error, and touches nothing.

Each row is ``(public function name, exception type, words the message must contain, args, kwargs)``.
The message must start with the function's name (``"conv2d: ..."``) and name the offending argument
(API.md: "Bad input raises ValueError or TypeError whose message names the function, the argument and
the offending shapes or values"). Every array handed to a call is compared with a private copy
afterwards: inputs are never modified, not even on the error path.

Shapes whose element count overflows int64 or exceeds this machine's memory must raise
``MemoryError`` *before* anything is allocated: the message then comes from fastconv (it starts with
the function's name, not numpy's "Unable to allocate"), and tracemalloc sees no big allocation.
"""
import copy
import re
import tracemalloc

import numpy as np
import pytest

import fastconv

rng = np.random.default_rng(7)


def arr(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


X2 = arr(2, 3, 8, 8)                  # batched 2-D input
W2 = arr(4, 3, 3, 3)                  # conv2d weight 3 -> 4 channels
X1 = arr(2, 3, 10)
W1 = arr(4, 3, 3)
Y2 = arr(2, 4, 6, 6)                  # conv2d(X2, W2) output / conv_transpose2d input for W2.T-shaped weight
WT2 = arr(4, 3, 3, 3)                 # conv_transpose weight (C_in=4, C_out=3)
IDX = np.zeros((2, 3, 4, 4), np.int64)  # max_pool2d(X2, 2) indices
G_POOL = arr(2, 3, 4, 4)
WU = arr(6, 6, 4, 3, 3, 3)            # unshared weight: grid 6x6 for X2 with a 3x3 kernel
YU = arr(2, 4, 6, 6)

BIG = 2 ** 40                          # 2**40 * 2**40 elements overflow int64
HUGE = 2 ** 20                         # (2**20)**2 float64 = 8 TiB: more than any test machine


def case(func, exc, words, *args, id, xfail=None, **kwargs):
    # not strict: the fix was in flight (uncommitted) when this was written; make strict/remove after
    marks = [pytest.mark.xfail(strict=False, reason=f"bug: {xfail}")] if xfail else []
    return pytest.param(func, exc, words, args, kwargs, id=id, marks=marks)



CASES = [
    # ---------------------------------------------------------------- convolution
    case("conv2d", ValueError, ["input"], arr(3, 8), W2, id="conv2d-input-rank"),
    case("conv2d", ValueError, ["weight"], X2, W1, id="conv2d-weight-rank"),
    case("conv", ValueError, ["weight"], X2, arr(4, 3), id="conv-weight-2d"),
    case("conv", ValueError, ["weight"], arr(1, 1, 2, 2, 2, 2, 2), arr(1, 1, 1, 1, 1, 1, 1), id="conv-4-spatial-dims"),
    case("conv2d", ValueError, ["input", "channels"], arr(2, 5, 8, 8), W2, id="conv2d-channel-mismatch"),
    case("conv2d", ValueError, ["groups"], arr(2, 2, 8, 8), arr(5, 1, 3, 3), groups=2, id="conv2d-groups-not-dividing-cout"),
    case("conv2d", ValueError, ["groups"], X2, W2, groups=0, id="conv2d-groups-zero"),
    case("conv2d", ValueError, ["input", "groups"], X2, arr(4, 1, 3, 3), groups=2, id="conv2d-groups-channel-mismatch"),
    case("conv2d", ValueError, ["stride"], X2, W2, stride=0, id="conv2d-stride-zero"),
    case("conv1d", ValueError, ["stride"], X1, W1, stride=-2, id="conv1d-stride-negative"),
    case("conv2d", ValueError, ["stride"], X2, W2, stride=(1, 1, 1), id="conv2d-stride-wrong-length"),
    case("conv2d", TypeError, ["stride"], X2, W2, stride=1.5, id="conv2d-stride-float"),
    case("conv2d", ValueError, ["dilation"], X2, W2, dilation=0, id="conv2d-dilation-zero"),
    case("conv2d", ValueError, ["weight"], X2, arr(4, 3, 0, 3), id="conv2d-kernel-size-zero"),
    case("conv2d", ValueError, ["kernel"], arr(1, 3, 4, 4), arr(2, 3, 5, 5), id="conv2d-kernel-larger-than-input"),
    case("conv2d", ValueError, ["kernel"], arr(1, 3, 8, 8), W2, dilation=4, id="conv2d-dilated-kernel-too-large"),
    case("conv2d", ValueError, ["padding"], X2, W2, padding="sideways", id="conv2d-padding-bad-string"),
    case("conv2d", ValueError, ["padding"], X2, W2, padding=-1, id="conv2d-padding-negative"),
    case("conv2d", ValueError, ["padding"], X2, W2, padding=(1, 1, 1), id="conv2d-padding-wrong-length"),
    case("conv2d", ValueError, ["padding"], X2, W2, padding=((1, -1), (0, 0)), id="conv2d-padding-negative-pair"),
    case("conv2d", ValueError, ["padding_mode"], X2, W2, padding=1, padding_mode="mirror", id="conv2d-padding-mode"),
    case("conv2d", ValueError, ["padding"], X2, W2, padding=8, padding_mode="reflect", id="conv2d-reflect-pad-too-large"),
    case("conv2d", TypeError, ["flip"], X2, W2, flip="yes", id="conv2d-flip-not-bool"),
    case("conv2d", ValueError, ["bias"], X2, W2, arr(3), id="conv2d-bias-shape"),
    case("conv2d", TypeError, ["input", "complex"], X2.astype(np.complex128), W2, id="conv2d-complex-input"),
    case("conv2d", TypeError, ["input", "object"], X2.astype(object), W2, id="conv2d-object-input"),
    case("conv2d", TypeError, ["weight", "float16"], X2, W2.astype(np.float16), id="conv2d-float16-weight"),
    case("conv2d", TypeError, ["input"], np.full((1, 3, 4, 4), "a"), W2, id="conv2d-string-input"),
    case("conv2d", TypeError, ["bias", "complex"], X2, W2, np.ones(4, np.complex64), id="conv2d-complex-bias"),
    case("conv2d", ValueError, ["input", "empty"], arr(0, 3, 8, 8), W2, id="conv2d-empty-batch"),
    case("conv1d", ValueError, ["input", "empty"], arr(2, 3, 0), W1, id="conv1d-empty-length"),
    case("conv_transpose2d", ValueError, ["output_padding"], Y2, WT2, stride=2, output_padding=-1,
         id="conv_transpose2d-output-padding-negative"),
    case("conv_transpose2d", ValueError, ["output_padding"], Y2, WT2, stride=2, output_padding=2,
         id="conv_transpose2d-output-padding-ge-stride"),
    case("conv_transpose2d", ValueError, ["output_padding"], Y2, WT2, stride=2, dilation=3, output_padding=3,
         id="conv_transpose2d-output-padding-ge-dilation"),
    case("conv_transpose2d", ValueError, ["input", "channels"], arr(2, 3, 6, 6), WT2, id="conv_transpose2d-channel-mismatch"),
    case("conv_transpose2d", ValueError, ["groups"], Y2, WT2, groups=3, id="conv_transpose2d-groups"),
    case("conv_transpose2d", ValueError, ["output_size"], Y2, WT2, stride=2, output_size=(40, 40),
         id="conv_transpose2d-output-size-unreachable"),
    case("conv_transpose2d", ValueError, ["padding"], arr(1, 4, 2, 2), WT2, padding=5, id="conv_transpose2d-padding-too-large"),
    case("conv_transpose", TypeError, ["input", "complex"], Y2.astype(np.complex64), WT2, id="conv_transpose-complex"),
    case("conv_grad_input", ValueError, ["grad_output"], X2.shape, W2, arr(2, 4, 5, 5), id="conv_grad_input-grad-shape"),
    case("conv_grad_input", ValueError, ["input_shape"], (2, 3, -8, 8), W2, Y2, id="conv_grad_input-negative-shape"),
    case("conv_grad_input", TypeError, ["input_shape"], (2, 3, 8.0, 8), W2, Y2, id="conv_grad_input-float-shape"),
    case("conv_grad_input", ValueError, ["input", "channels"], (2, 5, 8, 8), W2, Y2, id="conv_grad_input-channels"),
    case("conv_grad_weight", ValueError, ["weight_shape"], X2, (4, 3), Y2, id="conv_grad_weight-weight-shape-rank"),
    case("conv_grad_weight", ValueError, ["grad_output"], X2, W2.shape, arr(2, 4, 7, 6), id="conv_grad_weight-grad-shape"),
    case("conv_grad_weight", ValueError, ["stride"], X2, W2.shape, Y2, stride=0, id="conv_grad_weight-stride"),
    case("conv_grad_bias", ValueError, ["grad_output"], arr(5), id="conv_grad_bias-1d"),
    case("conv_grad_bias", TypeError, ["grad_output"], Y2.astype(np.complex128), id="conv_grad_bias-complex"),
    # ---------------------------------------------------------------- pooling
    case("max_pool2d", ValueError, ["kernel_size"], X2, 0, id="max_pool2d-kernel-zero"),
    case("max_pool2d", ValueError, ["stride"], X2, 2, stride=0, id="max_pool2d-stride-zero"),
    case("max_pool2d", ValueError, ["dilation"], X2, 2, dilation=0, id="max_pool2d-dilation-zero"),
    case("max_pool2d", ValueError, ["padding"], X2, 2, padding=2, id="max_pool2d-padding-over-half-kernel"),
    case("max_pool2d", ValueError, ["padding"], X2, 3, padding=-1, id="max_pool2d-padding-negative"),
    case("max_pool2d", ValueError, ["input"], arr(8, 8), 2, id="max_pool2d-input-rank"),
    case("max_pool2d", ValueError, ["kernel_size"], X2, 9, id="max_pool2d-kernel-larger-than-input"),
    case("max_pool2d", ValueError, ["kernel_size"], X2, (2, 2, 2), id="max_pool2d-kernel-wrong-length"),
    case("max_pool", ValueError, ["kernel_size"], X2, (2, 2, 2, 2), id="max_pool-kernel-4-entries"),
    case("max_pool2d", TypeError, ["input", "complex"], X2.astype(np.complex128), 2, id="max_pool2d-complex"),
    case("max_pool2d", ValueError, ["input", "empty"], arr(2, 0, 8, 8), 2, id="max_pool2d-empty-channels"),
    case("avg_pool2d", ValueError, ["divisor_override"], X2, 2, divisor_override=0, id="avg_pool2d-divisor-zero"),
    case("avg_pool2d", TypeError, ["input", "float16"], X2.astype(np.float16), 2, id="avg_pool2d-float16"),
    case("avg_pool1d", ValueError, ["stride"], X1, 2, stride=-1, id="avg_pool1d-stride-negative"),
    case("lp_pool2d", ValueError, ["norm_type"], X2, 0, 2, id="lp_pool2d-norm-zero"),
    case("lp_pool2d", ValueError, ["norm_type"], X2, float("nan"), 2, id="lp_pool2d-norm-nan"),
    case("lp_pool1d", ValueError, ["kernel_size"], X1, 2, 0, id="lp_pool1d-kernel-zero"),
    case("adaptive_avg_pool2d", ValueError, ["output_size"], X2, 0, id="adaptive_avg_pool2d-output-zero"),
    case("adaptive_max_pool2d", ValueError, ["output_size"], X2, (2, 2, 2), id="adaptive_max_pool2d-output-wrong-length"),
    case("adaptive_avg_pool", TypeError, ["input", "object"], X2.astype(object), (2, 2), id="adaptive_avg_pool-object"),
    case("global_avg_pool", ValueError, ["input"], arr(5), id="global_avg_pool-1d"),
    case("global_max_pool", ValueError, ["input", "empty"], arr(2, 3, 0), id="global_max_pool-empty"),
    case("max_pool_backward", ValueError, ["indices"], G_POOL, np.full((2, 3, 4, 4), 64), X2.shape,
         id="max_pool_backward-index-out-of-plane"),
    case("max_pool_backward", ValueError, ["indices"], G_POOL, np.full((2, 3, 4, 4), -2), X2.shape,
         id="max_pool_backward-index-negative"),
    case("max_pool_backward", ValueError, ["indices"], G_POOL, IDX[:, :, :3], X2.shape,
         id="max_pool_backward-indices-shape"),
    case("max_pool_backward", TypeError, ["indices"], G_POOL, IDX.astype(np.float64), X2.shape,
         id="max_pool_backward-float-indices"),
    case("max_pool_backward", ValueError, ["grad_output"], G_POOL, IDX, (3, 3, 8, 8),
         id="max_pool_backward-input-shape-mismatch"),
    case("avg_pool_backward", ValueError, ["grad_output"], arr(2, 3, 5, 4), X2.shape, 2,
         id="avg_pool_backward-grad-shape"),
    case("avg_pool_backward", ValueError, ["kernel_size"], G_POOL, X2.shape, 0, id="avg_pool_backward-kernel-zero"),
    case("adaptive_avg_pool_backward", ValueError, ["grad_output"], arr(2, 4, 3, 3), (3, 3, 8, 8),
         id="adaptive_avg_pool_backward-grad-shape"),
    case("adaptive_avg_pool_backward", ValueError, ["input_shape"], arr(2, 3, 3, 3), (2, 3, 0, 8),
         id="adaptive_avg_pool_backward-empty-input-shape"),
    # ---------------------------------------------------------------- unshared
    case("unshared_conv", ValueError, ["weight", "grid"], X2, arr(5, 6, 4, 3, 3, 3), id="unshared_conv-wrong-grid"),
    case("unshared_conv", ValueError, ["input", "channels"], arr(2, 2, 8, 8), WU, id="unshared_conv-channel-mismatch"),
    case("unshared_conv", ValueError, ["weight"], X2, arr(6, 4, 3, 3, 3), id="unshared_conv-weight-odd-rank"),
    case("unshared_conv", ValueError, ["bias"], X2, WU, arr(4, 5, 6), id="unshared_conv-bias-shape"),
    case("unshared_conv", ValueError, ["stride"], X2, WU, stride=0, id="unshared_conv-stride-zero"),
    case("unshared_conv", ValueError, ["padding"], X2, WU, padding="full", id="unshared_conv-padding-full"),
    case("unshared_conv", TypeError, ["weight", "complex"], X2, WU.astype(np.complex128), id="unshared_conv-complex"),
    case("unshared_conv_transpose", ValueError, ["input"], arr(2, 4, 5, 6), WU, id="unshared_conv_transpose-input-shape"),
    case("unshared_conv_grad_input", ValueError, ["input_shape"], (2, 5, 8, 8), WU, YU,
         id="unshared_conv_grad_input-channels"),
    case("unshared_conv_grad_weight", ValueError, ["grad_output"], X2, WU.shape, arr(2, 4, 6, 5),
         id="unshared_conv_grad_weight-grad-shape"),
    case("unshared_conv_grad_weight", ValueError, ["weight_shape", "grid"], X2, (5, 6, 4, 3, 3, 3), arr(2, 4, 5, 6),
         id="unshared_conv_grad_weight-wrong-grid"),
    # ---------------------------------------------------------------- matrix forms
    case("conv_matrix", ValueError, ["format"], (3, 8, 8), W2, format="dok", id="conv_matrix-format"),
    case("conv_matrix", ValueError, ["input_shape"], (2, 3, 8, 8), W2, id="conv_matrix-batched-shape"),
    case("conv_matrix", ValueError, ["input", "channels"], (5, 8, 8), W2, id="conv_matrix-channels"),
    case("conv_matrix", TypeError, ["max_bytes"], (3, 8, 8), W2, max_bytes="1GB", id="conv_matrix-max-bytes-type"),
    case("unshared_conv_matrix", ValueError, ["weight"], (3, 8, 8), arr(5, 6, 4, 3, 3, 3), id="unshared_conv_matrix-grid"),
    case("efficiency", TypeError, ["dtype"], (3, 8, 8), (3, 3), dtype="float16", id="efficiency-dtype"),
    case("efficiency", ValueError, ["groups"], (3, 8, 8), (3, 3), groups=2, c_out=4, id="efficiency-groups"),
    # ---------------------------------------------------------------- shapes, threads
    case("output_shape", ValueError, ["stride"], (8, 8), 3, stride=0, id="output_shape-stride-zero"),
    case("conv_transpose_output_shape", ValueError, ["output_padding"], (8, 8), 3, stride=2, output_padding=2,
         id="conv_transpose_output_shape-output-padding"),
    case("set_num_threads", ValueError, ["n"], 0, id="set_num_threads-zero"),
    case("set_num_threads", TypeError, ["n"], "4", id="set_num_threads-string"),
]

# element counts that overflow int64 / exceed memory: MemoryError before any allocation
MEMORY_CASES = [
    case("conv3d", MemoryError, ["output"], arr(1, 1, 2, 2, 2), arr(1, 1, 1, 1, 1), padding=BIG,
         id="conv3d-padding-overflows-int64"),
    case("conv2d", MemoryError, ["output"], arr(1, 1, 2, 2), arr(1, 1, 1, 1), padding=HUGE,
         id="conv2d-padding-exceeds-memory"),
    case("conv_transpose2d", MemoryError, ["output"], arr(1, 1, 2, 2), arr(1, 1, 1, 1), stride=BIG,
         id="conv_transpose2d-stride-overflows-int64"),
    case("adaptive_avg_pool2d", MemoryError, ["output"], arr(1, 1, 2, 2), (BIG, BIG),
         id="adaptive_avg_pool2d-output-overflows-int64"),
    case("adaptive_max_pool2d", MemoryError, ["output"], arr(1, 1, 2, 2), (HUGE, HUGE), return_indices=True,
         id="adaptive_max_pool2d-output-exceeds-memory"),
    case("max_pool_backward", MemoryError, ["grad_input"], arr(1, 1, 1, 1), np.zeros((1, 1, 1, 1), np.int64),
         (1, 1, BIG, BIG), id="max_pool_backward-input-shape-overflows-int64"),
    case("adaptive_avg_pool_backward", MemoryError, ["grad_input"], arr(1, 1, 1, 1), (1, 1, HUGE, HUGE),
         id="adaptive_avg_pool_backward-input-shape-exceeds-memory"),
    case("conv_matrix", MemoryError, ["max_bytes"], (3, 8, 8), W2, format="dense", max_bytes=1000,
         id="conv_matrix-dense-over-max-bytes"),
    case("conv_matrix", MemoryError, [], (1, HUGE, HUGE), arr(1, 1, 1, 1), format="dense", max_bytes=None,
         id="conv_matrix-dense-exceeds-memory"),
]


def _snapshot(obj):
    return copy.deepcopy(obj)


def _same(a, b):
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype
                and (np.array_equal(a, b, equal_nan=a.dtype.kind in "fc") if a.dtype != object
                     else all(x == y for x, y in zip(a.ravel(), b.ravel()))))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b or (a != a and b != b)


def _check_message(exc_info, func, words):
    msg = str(exc_info.value)
    assert msg.startswith(f"{func}:"), f"message does not start with the function name {func!r}: {msg!r}"
    for w in words:
        assert w.lower() in msg.lower(), f"message does not mention {w!r}: {msg!r}"


def test_table_is_large_enough():
    assert len(CASES) + len(MEMORY_CASES) >= 40
    # every public function of the API appears at least once (families that landed later included)
    covered = {p.values[0] for p in CASES + MEMORY_CASES}
    for name in ["conv", "conv1d", "conv2d", "conv_transpose2d", "conv_grad_input", "conv_grad_weight",
                 "conv_grad_bias", "max_pool2d", "avg_pool2d", "lp_pool2d", "global_max_pool",
                 "global_avg_pool", "adaptive_max_pool2d", "adaptive_avg_pool2d", "max_pool_backward",
                 "avg_pool_backward", "adaptive_avg_pool_backward", "unshared_conv",
                 "unshared_conv_transpose", "unshared_conv_grad_input", "unshared_conv_grad_weight",
                 "conv_matrix", "unshared_conv_matrix", "efficiency"]:
        assert name in covered, name


@pytest.mark.parametrize("func, exc, words, args, kwargs", CASES)
def test_bad_input(func, exc, words, args, kwargs):
    fn = getattr(fastconv, func)          # AttributeError (a failure, not a skip) if it has not landed
    before = _snapshot((args, kwargs))
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    _check_message(info, func, words)
    assert _same((args, kwargs), before), f"{func} modified its inputs"


@pytest.mark.parametrize("func, exc, words, args, kwargs", MEMORY_CASES)
def test_memory_error_before_allocating(func, exc, words, args, kwargs):
    fn = getattr(fastconv, func)
    before = _snapshot((args, kwargs))
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError) as info:
            fn(*args, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _check_message(info, func, words)
    assert peak < 64 * 2 ** 20, f"{func} allocated {peak:,} bytes before failing"
    assert _same((args, kwargs), before)


def test_conv_grad_input_overflowing_shape():
    # input_shape whose element count overflows int64, consistent grad_output: MemoryError
    w = arr(1, 1, 1)
    gy = np.zeros((1, 1, 1))
    w = np.ones((1, 1, 1, 1))
    gy = np.zeros((1, 1, 1, 1))
    with pytest.raises(MemoryError, match=r"^conv_grad_input:"):
        fastconv.conv_grad_input((1, 1, 2 ** 62, 2 ** 62), w, gy, stride=2 ** 62)


def test_messages_name_offending_values():
    """The message also shows the offending shapes/values (API.md's example)."""
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(np.ones((1, 3, 8, 8)), np.ones((4, 4, 3, 3)))
    msg = str(info.value)
    assert "3" in msg and "4" in msg and re.match(r"conv2d: ", msg)
    with pytest.raises(ValueError) as info:
        fastconv.max_pool2d(np.ones((1, 1, 8, 8)), 2, stride=0)
    assert "0" in str(info.value)


@pytest.mark.parametrize("make", [
    lambda: np.ones((1, 1, 4, 4), dtype=">f8"),                      # non-native byte order
    lambda: np.ones((1, 1, 8, 8))[:, :, ::2, ::-2],                  # negative stride, non-contiguous
    lambda: np.asfortranarray(np.ones((1, 1, 4, 4))),
])
def test_unusual_layouts_are_not_errors(make):
    x = make()
    x.flags.writeable = False
    before = x.copy()
    out = fastconv.conv2d(x, np.ones((1, 1, 2, 2)))
    assert np.allclose(out, 4.0)
    out = fastconv.max_pool2d(x, 2)
    assert np.allclose(out, 1.0)
    assert np.array_equal(x, before)
