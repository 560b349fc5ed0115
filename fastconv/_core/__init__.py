"""Compiled kernels (Cython, OpenMP). Import the Python layer (fastconv) instead."""
