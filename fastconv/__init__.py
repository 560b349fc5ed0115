"""fastconv: convolution, pooling, unshared and transposed convolution for NumPy.

Typed Cython kernels with OpenMP (GIL released) behind a thin Python layer; GEMM from BLAS.
The public interface is described in API.md; every name is importable as ``fastconv.NAME``.
"""
__version__ = "0.1.0"

from ._config import get_num_threads, set_num_threads, threads, show_config  # noqa: F401
from .shapes import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403
from .unshared import *  # noqa: F401,F403
from .matrix import *  # noqa: F401,F403
