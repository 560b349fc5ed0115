# cython: language_level=3
"""OpenMP facts for show_config() and the thread-count default."""
from fastconv._core._common cimport fc_openmp_enabled, fc_omp_max_threads


def openmp_enabled():
    return bool(fc_openmp_enabled())


def omp_max_threads():
    return fc_omp_max_threads()
