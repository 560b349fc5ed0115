"""pytest-benchmark timings of the convolution family (``pytest bench/bench_conv.py``).

The same cases as ``python -m fastconv.bench`` section 5 (``fastconv._benchdefs.conv``): each case
is timed for fastconv and, where installed, for every torch layout (NCHW and channels_last,
converted before timing; for conv1d, torch's conv2d on (N, C, 1, L) channels_last tensors, its
fastest 1-d path) and scipy.ndimage. Compare with ``--benchmark-group-by=group``.
"""
import pytest

from fastconv._benchdefs import run_benchmark
from fastconv._benchdefs.conv import CASES


def _runs():
    for case in CASES:
        yield pytest.param(case, "fastconv", None, id=f"{case.name} | fastconv")
        for lib, labels in (("torch", ("NCHW", "channels_last", "channels_last (as 2-d)")), ("scipy", ("ndimage.correlate",))):
            for label in labels:
                yield pytest.param(case, lib, label, id=f"{case.name} | {lib} {label}")


@pytest.mark.parametrize("case, lib, label", list(_runs()))
def test_conv_case(benchmark, case, lib, label):
    run_benchmark(benchmark, case, lib, label)
