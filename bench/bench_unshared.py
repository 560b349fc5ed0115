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

from fastconv._benchdefs import cached_setup, run_benchmark, time_call
from fastconv._benchdefs.unshared import CASES

def _runs():
    for case in CASES:
        yield pytest.param(case, "fastconv", id=f"{case.name} | fastconv")
        yield pytest.param(case, "torch", id=f"{case.name} | torch")
        yield pytest.param(case, "baseline", id=f"{case.name} | shared conv, same FLOPs")


@pytest.mark.parametrize("case, lib", list(_runs()))
def test_unshared_case(benchmark, case, lib):
    run_benchmark(benchmark, case, lib)


def _case(prefix):
    return next(c for c in CASES if c.name.startswith(prefix))


def test_speed_targets():
    """The issue's ratios, measured in one run: the five callables are timed in interleaved rounds
    and each keeps its best time, so a burst of load from elsewhere hits all of them alike."""
    pytest.importorskip("torch")
    fwd = cached_setup(_case("unshared_conv2d f32 8x16x32x32"))
    bwd = cached_setup(_case("unshared_conv2d backward f32 8x16x32x32"))
    fns = {"fwd": fwd["fastconv"], "fwd_torch": next(iter(fwd["torch"].values())),
           "fwd_shared": next(iter(fwd["baseline"].values())),
           "bwd": bwd["fastconv"], "bwd_torch": next(iter(bwd["torch"].values()))}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(6):
        for k, f in fns.items():
            best[k] = min(best[k], time_call(f, min_time=0.02, repeat=2, warmup=1))
    fwd_speedup = best["fwd_torch"] / best["fwd"]
    vs_shared = best["fwd"] / best["fwd_shared"]
    bwd_speedup = best["bwd_torch"] / best["bwd"]
    ms = {k: v * 1e3 for k, v in best.items()}
    print(f"\nforward : fastconv {ms['fwd']:.3f} ms, torch unfold+einsum {ms['fwd_torch']:.3f} ms "
          f"-> {fwd_speedup:.1f}x faster (target >= 10x)")
    print(f"forward : shared conv2d of the same FLOPs {ms['fwd_shared']:.3f} ms -> unshared takes "
          f"{vs_shared:.2f}x its time (target <= 3x)")
    print(f"backward: fastconv grad_input + grad_weight {ms['bwd']:.3f} ms, torch autograd "
          f"{ms['bwd_torch']:.3f} ms -> {bwd_speedup:.1f}x faster (target >= 5x)")
    assert fwd_speedup >= 10
    assert vs_shared <= 3
    assert bwd_speedup >= 5
