"""pytest-benchmark timings of the pooling family (``pytest bench/bench_pool.py``).

The same cases as ``python -m fastconv.bench`` (``fastconv._benchdefs.pool``): fastconv on NCHW
input against torch on NCHW and on ``channels_last`` tensors (converted before timing; torch's fast
path), plus torch's reductions for global pooling. Compare with ``--benchmark-group-by=group``;
the issue's targets are ratios against the fastest torch entry of each group.
"""
import pytest

from fastconv._benchdefs.pool import CASES

_SETUPS = {}
_TORCH_LABELS = ("NCHW", "channels_last", "NCHW mean", "NCHW amax")


def _setup(case):
    if case.name not in _SETUPS:
        _SETUPS[case.name] = case.setup()
    return _SETUPS[case.name]


def _runs():
    for case in CASES:
        yield pytest.param(case, "fastconv", id=f"{case.name} | fastconv")
        for label in _TORCH_LABELS:
            yield pytest.param(case, label, id=f"{case.name} | torch {label}")


@pytest.mark.parametrize("case, label", list(_runs()))
def test_pool_case(benchmark, case, label):
    d = _setup(case)
    benchmark.group = case.name
    if label == "fastconv":
        benchmark(d["fastconv"])
        return
    fn = d.get("torch", {}).get(label)
    if fn is None:
        pytest.skip(f"torch {label} is not installed or does not apply to this case")
    benchmark(fn)
