"""pytest-benchmark timings of the pooling family (``pytest bench/bench_pool.py``).

The same cases as ``python -m fastconv.bench`` (``fastconv._benchdefs.pool``): fastconv on NCHW
input against torch on NCHW and on ``channels_last`` tensors (converted before timing; torch's fast
path), plus torch's reductions for global pooling. Compare with ``--benchmark-group-by=group``;
the issue's targets are ratios against the fastest torch entry of each group.
"""
import pytest

from fastconv._benchdefs import run_benchmark
from fastconv._benchdefs.pool import CASES

_TORCH_LABELS = ("NCHW", "channels_last", "NCHW mean", "NCHW amax")


def _runs():
    for case in CASES:
        yield pytest.param(case, "fastconv", None, id=f"{case.name} | fastconv")
        for label in _TORCH_LABELS:
            yield pytest.param(case, "torch", label, id=f"{case.name} | torch {label}")


@pytest.mark.parametrize("case, lib, label", list(_runs()))
def test_pool_case(benchmark, case, lib, label):
    run_benchmark(benchmark, case, lib, label)
