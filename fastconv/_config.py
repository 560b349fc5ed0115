"""Thread count, BLAS thread control and show_config().

fastconv parallelises in one place only: its own OpenMP loops. BLAS (scipy's OpenBLAS, called per
thread tile from inside those loops) is kept single-threaded while a fastconv kernel runs, so the two
never nest. The BLAS limit is reference-counted across Python threads: the first concurrent call
lowers it, the last one restores it.
"""
import contextlib
import ctypes
import functools
import itertools
import os
import sys
import threading

from . import _args

_lock = threading.Lock()
class _Local(threading.local):
    threads = None       # a class default: reading it costs no AttributeError (getattr with a
                         # default on a plain threading.local took ~0.65 us per call)


_local = _Local()
_global_threads = None
_blas_users = 0
_blas_saved = None
_blas_ctl = None


def _omp_env_threads():
    """OMP_NUM_THREADS's first entry when it is a positive int, else None."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def _default_threads():
    env = _omp_env_threads()
    if env:
        return env
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=None)
def _openmp():
    from ._core import _threads
    return _threads.openmp_enabled()


@functools.lru_cache(maxsize=None)
def _default_threads_cached():
    return _default_threads()


def get_num_threads():
    """Number of threads fastconv kernels use (1 in a build without OpenMP)."""
    if not _openmp():
        return 1
    n = _local.threads
    if n is None:
        n = _global_threads if _global_threads is not None else _default_threads_cached()
    return n


def set_num_threads(n):
    """Set the number of threads for every later call (all Python threads)."""
    global _global_threads
    n = _args.as_int("set_num_threads", "n", n, minimum=1)
    _global_threads = n


@contextlib.contextmanager
def threads(n):
    """``with threads(n):`` run fastconv calls made by this Python thread on ``n`` threads."""
    n = _args.as_int("threads", "n", n, minimum=1)
    old = _local.threads
    _local.threads = n
    try:
        yield n
    finally:
        _local.threads = old


def _blas_controllers():
    global _blas_ctl
    if _blas_ctl is None:
        import scipy.linalg.cython_blas  # noqa: F401  (make sure scipy's BLAS is loaded)
        try:
            from threadpoolctl import ThreadpoolController
            import scipy
            ctl = ThreadpoolController()
            blas = [c for c in ctl.lib_controllers if c.user_api == "blas"]
            # only the BLAS that scipy.linalg.cython_blas calls (numpy's own stays as it is);
            # where it cannot be told apart (one shared BLAS), all of them
            mine = [c for c in blas if os.path.basename(os.path.dirname(c.filepath)) == "scipy.libs"
                    or c.filepath.startswith(os.path.dirname(scipy.__file__))]
            _blas_ctl = mine or blas
        except Exception:  # pragma: no cover - threadpoolctl missing or broken
            _blas_ctl = []
    return _blas_ctl


#: OpenBLAS runs a GEMM on the calling thread when m*n*k < 65536 * GEMM_MULTITHREAD_THRESHOLD
#: (interface/gemm.c; the threshold is 4 unless a build sets it, and at least 1)
_OPENBLAS_SERIAL_MNK = 65536


@functools.lru_cache(maxsize=None)
def _blas_is_openblas():
    ctls = _blas_controllers()
    return bool(ctls) and all(c.internal_api == "openblas" for c in ctls)


def blas_single_thread(macs=None):
    """Keep BLAS single-threaded while our OpenMP threads each call it on their own tile.

    ``macs``: the call's multiply-adds. Below OpenBLAS's own threshold no GEMM of the call can be
    threaded, and the limit (some 10 us of library calls each way) is skipped."""
    if macs is not None and macs < _OPENBLAS_SERIAL_MNK and _blas_is_openblas():
        return contextlib.nullcontext()
    return _blas_limited()


def _set_blas_threads(c, n):
    """``c.set_num_threads(n)`` from whichever Python thread calls: threadpoolctl (3.6+) lets only
    the first thread that set a limit on a shared (pthreads) OpenBLAS pool change it again and
    silently ignores the others -- so after a call from the main thread, a call from a worker
    thread left BLAS multi-threaded inside our OpenMP loops (nested threads, and float32 bits that
    depend on BLAS's thread count). Our own lock serialises these changes, so take control here
    and hand it back."""
    clear = getattr(type(c), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
    c.set_num_threads(n)
    if clear is not None:
        clear(force=True)


def _raw_openblas(c):
    """(get, set) of the thread count of an OpenBLAS whose threads form one process-wide pool (its
    pthreads layer), as the library's own C functions through ctypes, or None (other BLAS, the
    OpenMP layer, symbols not found: threadpoolctl does it). threadpoolctl's get / set / controlling
    thread bookkeeping took ~100 us per conv call (27 us to limit, 73 us to restore, measured in a
    2x16x16x32x32 conv3d: 2% of it, more of smaller calls); the C calls take ~1 us."""
    if c.internal_api != "openblas" or getattr(c, "threading_layer", None) == "openmp":
        return None
    lib = getattr(c, "dynlib", None)
    for pre, suf in itertools.product(("", "scipy_"), ("", "64_", "_64")):
        get = getattr(lib, f"{pre}openblas_get_num_threads{suf}", None)
        set_ = getattr(lib, f"{pre}openblas_set_num_threads{suf}", None)
        if get is not None and set_ is not None:
            get.restype, get.argtypes = ctypes.c_int, []
            set_.restype, set_.argtypes = None, [ctypes.c_int]
            return get, set_
    return None


@functools.lru_cache(maxsize=None)
def _blas_handles():
    """(controller, raw (get, set) or None) for each BLAS that fastconv limits."""
    out = []
    for c in _blas_controllers():
        try:
            raw = _raw_openblas(c)
        except Exception:  # pragma: no cover - an unusual build: threadpoolctl's way
            raw = None
        out.append((c, raw))
    return tuple(out)


def _apply_blas_threads(c, raw, n):
    """Set controller ``c``'s thread count: through the library's own C function where
    _raw_openblas found it, else through threadpoolctl."""
    if raw:
        raw[1](n)
    else:
        _set_blas_threads(c, n)


@contextlib.contextmanager
def _blas_limited():
    global _blas_users, _blas_saved
    with _lock:
        if _blas_users == 0:
            _blas_saved = [(c, raw, raw[0]() if raw else c.num_threads) for c, raw in _blas_handles()]
            for c, raw, n in _blas_saved:
                if n != 1:
                    _apply_blas_threads(c, raw, 1)
        _blas_users += 1
    try:
        yield
    finally:
        with _lock:
            _blas_users -= 1
            if _blas_users == 0:
                for c, raw, n in _blas_saved or ():
                    if n != 1:
                        _apply_blas_threads(c, raw, n)
                _blas_saved = None


def _build_config():
    try:
        from . import _build_config as bc
        return bc
    except ImportError:  # pragma: no cover
        return None


def show_config(file=None):
    """Print version, OpenMP on/off, thread count, BLAS in use and compile flags."""
    from . import __version__
    import numpy
    import scipy
    file = file or sys.stdout
    bc = _build_config()
    omp = _openmp()
    conv = sys.modules["fastconv.conv"]
    lines = [
        f"fastconv {__version__}",
        f"  python        : {sys.version.split()[0]}  numpy {numpy.__version__}  scipy {scipy.__version__}",
        f"  OpenMP        : {'on' if omp else 'off (single-threaded build)'}",
        f"  threads       : {get_num_threads()} (default: {_default_threads()}, from "
        f"{'OMP_NUM_THREADS' if _omp_env_threads() else 'the usable cores'})",
        f"  Winograd      : {'on' if conv.WINOGRAD else 'off'} for stride-1 "
        f"convolutions and for transposed ones on their stride phases "
        f"(FASTCONV_WINOGRAD=0 turns it off); conv1d k5 on NCL rows: "
        f"{'on' if conv.WINOGRAD and conv._wino45_ncl() else 'off'}"
        f"{'' if conv._kernels().wino45_ncl_available() else ' (no AVX2/FMA in this build)'}"
        f" (FASTCONV_WINOGRAD_NCL=0 turns it off)",
    ]
    for c in _blas_controllers():
        info = c.info()
        lines.append(f"  BLAS          : {info.get('internal_api')} {info.get('version')} "
                     f"({info.get('architecture')}, {os.path.basename(info.get('filepath', ''))}); "
                     f"fastconv calls it single-threaded per tile")
    if bc is not None:
        lines.append(f"  compiler      : {bc.COMPILER}")
        lines.append(f"  compile flags : {' '.join(bc.CFLAGS)}")
        for note in bc.NOTES:
            lines.append(f"  note          : {note}")
    print("\n".join(lines), file=file)
