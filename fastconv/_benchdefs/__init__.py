"""Benchmark cases shared by ``python -m fastconv.bench`` and ``bench/`` (pytest-benchmark).

Each family module here (conv.py, pool.py, unshared.py, ...) defines ``CASES``, a list of
:class:`Case`. ``Case.setup()`` builds the data (outside any timing) and returns a dict:

- ``"fastconv"``: zero-argument callable running the fastconv op;
- ``"torch"``: dict label -> zero-argument callable (e.g. ``{"NCHW": f, "channels_last": g}``;
  tensors converted before timing); a comparison takes the fastest label. Omitted without torch;
- ``"scipy"``: dict label -> callable, likewise (scipy.ndimage, scipy.sparse, ...); optional;
- ``"flops"`` / ``"bytes"``: useful work for GFLOP/s and GB/s figures, or None.
"""
import dataclasses
import time

__all__ = ["Case", "try_torch", "time_call", "all_cases"]


@dataclasses.dataclass
class Case:
    name: str
    family: str
    setup: object
    quick: bool = True


def try_torch():
    """torch with intra-op threads matching fastconv's, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    from .._config import get_num_threads
    torch.set_num_threads(get_num_threads())
    return torch


def time_call(fn, min_time=0.2, repeat=5, warmup=1):
    """Best per-call time (seconds) over ``repeat`` rounds of at least ``min_time`` each."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(min_time / one))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - t0) / loops)
    return best


def all_cases():
    """Every registered case, family by family (families whose module is missing are skipped)."""
    import importlib
    cases = []
    for fam in ("conv", "pool", "unshared", "matrix"):
        try:
            mod = importlib.import_module(f"{__name__}.{fam}")
        except ImportError:
            continue
        cases.extend(getattr(mod, "CASES", []))
    return cases


_SETUPS = {}


def cached_setup(case):
    """``case.setup()``, built once per process (the pytest-benchmark files share it)."""
    if case.name not in _SETUPS:
        _SETUPS[case.name] = case.setup()
    return _SETUPS[case.name]


def run_benchmark(benchmark, case, lib, label=None):
    """Time one callable of a case with pytest-benchmark: ``lib`` is "fastconv" or a key of the
    setup dict ("torch", "scipy", "baseline"); ``label`` picks one of its entries (default: the
    first). Skips (pytest.skip) when that library or label is not there."""
    d = cached_setup(case)
    benchmark.group = case.name
    if lib == "fastconv":
        return benchmark(d["fastconv"])
    fns = d.get(lib) or {}
    fn = fns.get(label) if label is not None else next(iter(fns.values()), None)
    if fn is None:
        import pytest
        pytest.skip(f"{lib} {label or ''} is not installed or does not apply to this case")
    benchmark.extra_info["label"] = label or next(iter(fns))
    return benchmark(fn)
