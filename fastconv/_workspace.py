"""Work buffers reused from call to call.

The kernels need per-thread scratch (im2col tiles, GEMM results, channels-last copies of a
sample) of up to a few MiB per thread. Taken from ``malloc`` and given back on every call, glibc
returns such blocks to the kernel (``munmap`` / heap trimming) and the next call page-faults them
in again -- zeroed pages, and TLB shootdowns on the other cores -- which measured up to ~40% of a
small convolution. A kernel call takes one block from this pool under the GIL and puts it back
when it is done; concurrent calls (from several Python threads) each get their own block.

At most ``MAX_KEEP`` idle blocks and ``MAX_KEEP_BYTES`` are kept; ``clear()`` drops them.
"""
import threading

import numpy as np

__all__ = ["take", "give", "clear", "MAX_KEEP", "MAX_KEEP_BYTES"]

#: idle blocks kept for reuse, and their total size
MAX_KEEP = 4
MAX_KEEP_BYTES = 256 * 2 ** 20
#: every block has this many spare bytes, so that its start can be moved to a cache line
ALIGN = 64

_lock = threading.Lock()
_idle = []   # uint8 arrays, smallest first


def take(nbytes):
    """A uint8 array of at least ``nbytes + ALIGN`` bytes: the smallest idle one that fits, or new."""
    need = int(nbytes) + ALIGN
    with _lock:
        for i, blk in enumerate(_idle):
            if blk.nbytes >= need:
                return _idle.pop(i)
    return np.empty(need, np.uint8)


def give(blk):
    """Return a block from :func:`take`; the smallest idle blocks go beyond the limits."""
    with _lock:
        _idle.append(blk)
        _idle.sort(key=lambda b: b.nbytes)
        while len(_idle) > MAX_KEEP or sum(b.nbytes for b in _idle) > MAX_KEEP_BYTES:
            _idle.pop(0)


def clear():
    """Drop every idle block (their memory goes back to the allocator)."""
    with _lock:
        _idle.clear()
