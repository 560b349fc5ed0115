"""pytest-benchmark timings of unshared convolution (``pytest bench/bench_unshared.py``).

The cases of ``fastconv._benchdefs.unshared`` (also run by ``python -m fastconv.bench``): fastconv,
torch's ``unfold`` + ``einsum`` formulation (forward) and autograd through it (backward), and
fastconv's shared convolution of the same FLOP count ("baseline"). Compare with
``--benchmark-group-by=group``.

``test_speed_targets`` measures the issue's three ratios in one run and prints them:
forward >= 10x faster than torch, backward >= 5x faster than torch autograd, forward within 3x of
the shared conv2d.
"""
import pytest

from fastconv._benchdefs import time_call
from fastconv._benchdefs.unshared import CASES

_SETUPS = {}


def _setup(case):
    if case.name not in _SETUPS:
        _SETUPS[case.name] = case.setup()
    return _SETUPS[case.name]


def _runs():
    for case in CASES:
        yield pytest.param(case, "fastconv", None, id=f"{case.name} | fastconv")
        yield pytest.param(case, "torch", None, id=f"{case.name} | torch")
        yield pytest.param(case, "baseline", None, id=f"{case.name} | shared conv, same FLOPs")


@pytest.mark.parametrize("case, lib, _", list(_runs()))
def test_unshared_case(benchmark, case, lib, _):
    d = _setup(case)
    benchmark.group = case.name
    if lib == "fastconv":
        benchmark(d["fastconv"])
        return
    fns = d.get(lib)
    if not fns:
        pytest.skip(f"{lib} is not installed or does not apply to this case")
    benchmark(next(iter(fns.values())))


def _case(prefix):
    return next(c for c in CASES if c.name.startswith(prefix))


def test_speed_targets():
    """The issue's ratios, measured back to back in one process (best of 5 rounds each)."""
    pytest.importorskip("torch")
    fwd = _setup(_case("unshared_conv2d f32 8x16x32x32"))
    bwd = _setup(_case("unshared_conv2d backward f32 8x16x32x32"))
    t_fc = time_call(fwd["fastconv"])
    t_torch = time_call(next(iter(fwd["torch"].values())))
    t_shared = time_call(next(iter(fwd["baseline"].values())))
    t_fc_b = time_call(bwd["fastconv"])
    t_torch_b = time_call(next(iter(bwd["torch"].values())))
    fwd_speedup, bwd_speedup, vs_shared = t_torch / t_fc, t_torch_b / t_fc_b, t_fc / t_shared
    print(f"\nforward : fastconv {t_fc * 1e3:.3f} ms, torch unfold+einsum {t_torch * 1e3:.3f} ms "
          f"-> {fwd_speedup:.1f}x faster (target >= 10x)")
    print(f"forward : shared conv2d same FLOPs {t_shared * 1e3:.3f} ms -> unshared takes "
          f"{vs_shared:.2f}x its time (target <= 3x)")
    print(f"backward: fastconv grad_input + grad_weight {t_fc_b * 1e3:.3f} ms, torch autograd "
          f"{t_torch_b * 1e3:.3f} ms -> {bwd_speedup:.1f}x faster (target >= 5x)")
    assert fwd_speedup >= 10
    assert vs_shared <= 3
    assert bwd_speedup >= 5
