"""pytest-benchmark timings of the matrix forms (``pytest bench/bench_matrix.py``).

The same cases as ``python -m fastconv.bench`` section 5 (``fastconv._benchdefs.matrix``): fastconv's
convolution against the matvec with the matrix from ``conv_matrix`` (scipy.sparse CSR, NumPy
dense), and the CSR build itself (target: under 0.5 s for a 1024x1024 image with a 3x3 kernel).
Compare groups with ``--benchmark-group-by=group``.
"""
import numpy as np
import pytest

import fastconv
from fastconv._benchdefs import run_benchmark
from fastconv._benchdefs.matrix import CASES, EDGE, synthetic_image


def _runs():
    """(case name, label, callable-maker) for every timed callable of every matrix case."""
    for case in CASES:
        yield pytest.param(case, "fastconv", id=f"{case.name} | fastconv")
        for lib in ("scipy", "torch"):
            yield pytest.param(case, lib, id=f"{case.name} | {lib}")


@pytest.mark.parametrize("case, lib", list(_runs()))
def test_matrix_case(benchmark, case, lib):
    run_benchmark(benchmark, case, lib)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_conv_matrix_build_1024(benchmark, fmt):
    w = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    benchmark.group = "conv_matrix build 1x1024x1024 k3x3 p1"
    M = benchmark(fastconv.conv_matrix, (1, 1024, 1024), w, padding=1, format=fmt)
    assert M.nnz == (3 * 1024 - 2) ** 2


def test_seed_conv_vs_sparse(benchmark):
    """The issue's speed claim: conv >= 5x faster than the CSR matvec on the lecture's image."""
    x = synthetic_image(280, 320)[None]
    M = fastconv.conv_matrix(x.shape, EDGE)
    xf = x.ravel()
    benchmark.group = "seed: edge 1x280x320"
    benchmark(fastconv.conv, x, EDGE)
    from fastconv._benchdefs import time_call
    ratio = time_call(lambda: M @ xf) / time_call(lambda: fastconv.conv(x, EDGE))
    benchmark.extra_info["sparse_over_conv"] = ratio
