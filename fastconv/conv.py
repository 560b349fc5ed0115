"""Convolution, transposed convolution and their gradients (1-D, 2-D, 3-D; batched or not).

All of it is three compositions of one index mapping (Caffe's im2col/col2im twins, per thread tile):

- forward ``conv``            = im2col tile + GEMM (``W @ col``); with stride 1 along W, the
  row-shift form (``_row_shift_tiles``): the KW taps in the GEMM's N dimension, then summed with
  their column shifts; with stride and dilation 1 and enough channels, Winograd's F(m, r)
  (``_winograd_tiles``, fastconv/_winograd.py): transformed tiles, one GEMM per transform point
  (3-d kernels on few channels: only H and W transformed, the D taps in the GEMM depth; conv1d
  with 5 taps: on the NCL rows, the transposes fused into the transforms);
- ``conv_grad_input``         = GEMM with the transposed weight + col2im (scatter-add);
- ``conv_transpose``          = ``conv_grad_input`` (it *is* the adjoint of ``conv``);
- ``conv_grad_weight``        = im2col tile + GEMM with the output gradient.

Groups with one input channel each (depthwise, single channel) use a direct stencil instead.
"""
import contextlib
import functools
import os

import numpy as np

from . import _args, _winograd, _workspace
from ._config import blas_single_thread, get_num_threads

__all__ = [
    "conv", "conv1d", "conv2d", "conv3d",
    "conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "conv_grad_input", "conv_grad_weight", "conv_grad_bias",
]

def _env_on(name):
    """A switch in the environment: on unless set to 0 / false / no / off (any case, spaces)."""
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


#: bytes of one im2col tile (K x T) per thread; T = TILE_BYTES / (K * itemsize), at least 64 columns
TILE_BYTES = 512 * 1024
#: ... but at least min(C_out/groups, this) positions in the plain im2row form: OpenBLAS packs the
#: K x C_out/groups weight again for every tile, and with big weights that cost more than the
#: tile's L2 fit saves (measured: 3x3 stride 2 on 256 -> 512 channels of 28 x 28, batch 8,
#: 38.5 -> 29.5 ms; 128 -> 256 channels of 56 x 56 32.5 -> 29.5 ms)
GEMM_MIN_TILE_POSITIONS = 512
#: bytes of one GEMM result tile (T x K) of conv_grad_input / conv_transpose per thread: larger than
#: TILE_BYTES because the GEMM's depth there is only C_out/groups, so OpenBLAS re-packs the whole
#: weight for every tile; fewer, longer tiles pack it less often (measured: 8-9% faster)
GRAD_INPUT_TILE_BYTES = 2 * 1024 * 1024
#: ... and up to this many tiles per sample while a tile keeps GRAD_INPUT_MIN_SPLIT positions, so
#: that the threads can share one sample's GEMMs (tiles depend on the shapes only: the GEMM sizes
#: set OpenBLAS's bits). Measured, batch 1, 64 -> 128 channels 3x3 stride 2 on 56x56: 2.1 -> 1.3
#: ms; 1x1 stride 2, 256 -> 512 channels: 4.2 -> 2.9 ms
GRAD_INPUT_MIN_TILES = 4
GRAD_INPUT_MIN_SPLIT = 256
#: the row-shift form of the forward GEMM (see _row_shift_tiles) for C_out/groups up to this
ROW_SHIFT = True
ROW_SHIFT_MAX_COG = 64
#: ... and a GEMM depth (C_in/groups * KD * KH) of at least this: shallower GEMMs lose more to
#: BLAS's result-tile traffic than the narrower im2row tile saves (conv1d with 64 channels: -5%)
ROW_SHIFT_MIN_DEPTH = 128
#: ... except for narrow GEMMs (C_out/groups up to this): there the plain form's N = C_out/groups
#: is what BLAS does worst, and the row-shift form wins from a depth of 64, or at any depth when
#: the kernel has more than one row (measured, after the im2row gather moved to C: groups=4 of
#: 16 channels 3x3 6.2 -> 4.8 ms, 3x3x3 on 8 channels 2.2 -> 1.4 ms, 16 -> 8 channels 3x3
#: 0.92 -> 0.71 ms; 1-D kernels on 16 channels lose 10-40%)
ROW_SHIFT_NARROW_COG = 16
#: bytes of the im2row tile + GEMM result of one row-shift tile per thread
ROW_TILE_BYTES = 1024 * 1024
#: Winograd F(m, r) for stride-1, dilation-1 kernels (fastconv/_winograd.py; FASTCONV_WINOGRAD=0 in
#: the environment turns it off, for results bitwise equal to the GEMM forms) where every group
#: has at least WINOGRAD_MIN_CHANNELS input and output channels: its GEMMs are only C_in/groups
#: deep and C_out/groups wide (conv3d with 16 channels: 1.4x slower than the row-shift form)
WINOGRAD = _env_on("FASTCONV_WINOGRAD")
WINOGRAD_MIN_CHANNELS = 32
#: ... or, for 3-d kernels on fewer channels, only H and W transformed and the KD taps of D in the
#: GEMM depth (KD * C_in/groups), where that depth is at least WINOGRAD_PLANES_MIN_DEPTH and
#: C_out/groups at least WINOGRAD_PLANES_MIN_CHANNELS (conv3d 16 -> 16 channels: 15% faster than
#: the row-shift form; with 32 or 64 channels transforming D as well is faster still)
WINOGRAD_PLANES_MIN_CHANNELS = 8
WINOGRAD_PLANES_MIN_DEPTH = 32
#: the 1-D F(4, 5) form on channels-first rows (see _wino45_ncl; 0 for the channels-last form)
WINOGRAD_NCL = _env_on("FASTCONV_WINOGRAD_NCL")
#: bytes of the transformed-input and GEMM-result blocks (V and M) of one Winograd work unit
WINOGRAD_TILE_BYTES = 2 * 1024 * 1024
#: ... holding at least this many tiles, and samples with fewer tiles take the other forms: each
#: transform point's GEMM packs its C_in/groups x C_out/groups block of U again, which a GEMM over
#: a few tiles does not repay (3x3 on 512 channels of 7 x 7, 16 tiles: 1.13-1.26x slower than
#: im2row at any batch; 256 channels of 14 x 14, 49 tiles: 1.7x faster at a batch of 8)
WINOGRAD_MIN_TILES = 32
#: bytes of the padded input rows + accumulator of one direct-stencil work unit
DIRECT_BLOCK_BYTES = 64 * 1024
#: 1 x 1 kernels with stride 1 and no padding: GEMMs on the NCHW rows (no transposes), tiles of
#: at most POINTWISE_TILE positions (2048: a 56 x 56 sample is two tiles, so one sample keeps two
#: threads busy -- 1.7-1.8x faster than 4096 there, within noise on batches of 8 or more)
POINTWISE = True
POINTWISE_TILE = 2048
#: ... with a stride (and no padding): the same GEMMs on a per-thread copy of the tile's input
#: positions, at most this many bytes (C_in/groups x T, at least 64 positions). Measured against
#: the im2row form (which transposes the whole input sample to channels-last, where a stride of 2
#: uses a quarter of it), batch 8: 256 -> 512 channels of 56 x 56 14.7 -> 11.8 ms, 1024 -> 2048
#: of 14 x 14 18.7 -> 13.5 ms; batch 1: 512 -> 1024 of 28 x 28 2.0 -> 1.6 ms (128 KiB to 1 MiB
#: tried: within 10% of each other, 256 KiB the best overall)
SUBSAMPLE_TILE_BYTES = 256 * 1024
_PADDING_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_INT_MAX = 2 ** 31 - 1


#: multiply-adds below which a call runs on one thread (a parallel region costs more than it saves)
MIN_WORK_PER_THREAD = 1 << 15
#: a sample of fewer work units than this (small images: one or two tiles) has each group's
#: output channels split into blocks of at least MIN_COUT_BLOCK, each a unit of its own, so that
#: even one sample keeps several threads busy (_cout_blocks)
MIN_UNITS_PER_SAMPLE = 4
MIN_COUT_BLOCK = 64


def _threads_for(work):
    """Threads for a kernel doing ``work`` multiply-adds: all of them, unless the call is tiny."""
    return max(1, min(get_num_threads(), work // MIN_WORK_PER_THREAD))


_CONV_KERNELS = None
#: stand-in bias arrays for the kernels (never written)
_ZERO_BIAS = {"f": np.zeros(1, np.float32), "d": np.zeros(1, np.float64)}


def _per_sample(N, nt):
    """Enough samples for threads to take whole ones (each transposing its sample into a private
    channels-last buffer); otherwise threads split the tiles of one shared channels-last copy."""
    return N >= 2 * nt or (N >= nt and N % nt == 0)


@functools.lru_cache(maxsize=None)
def _wino45_ncl():
    """Whether the build has the channels-first 1-D F(4, 5) kernels (and FASTCONV_WINOGRAD_NCL is
    not 0): conv1d with 5 taps then runs on the NCL rows without transposing them."""
    return WINOGRAD_NCL and _kernels().wino45_ncl_available()


def _kernels():
    global _CONV_KERNELS
    if _CONV_KERNELS is None:
        from ._core import _conv
        _CONV_KERNELS = _conv
    return _CONV_KERNELS


def _check_channels(func, c_in, c_out, w_cin, groups, *, transposed=False):
    """c_in/c_out are the *convolution's* channel counts; w_cin = weight.shape[1]."""
    (groups,) = _args.ntuple(func, "groups", groups, 1, minimum=1)
    if c_out % groups:
        which = "input channels" if transposed else "output channels (weight.shape[0])"
        raise _args.fail(func, f"groups={groups} must divide the number of {which}, got {c_out}")
    if c_in != w_cin * groups:
        if transposed:
            raise _args.fail(func, f"weight has {w_cin} output channels per group, so groups={groups} "
                                   f"gives {w_cin * groups} output channels, but {c_in} were requested")
        raise _args.fail(func, f"input has {c_in} channels but weight expects {w_cin * groups} "
                               f"(weight.shape[1]={w_cin} x groups={groups})")
    return groups


def _prologue(func, input, weight, bias, expected_rank):
    """Arrays of one float dtype, the spatial rank from the weight, and the batch axis added."""
    dt, (x, w, b) = _args.as_float_arrays(func, input=input, weight=weight, bias=bias)
    rank = _args.weight_rank(func, w)
    if expected_rank is not None and rank != expected_rank:
        raise _args.fail(func, f"weight must have {expected_rank + 2} dimensions (two channel dims and "
                               f"{expected_rank} kernel dims), got shape {w.shape} ({rank} kernel dims)")
    x, batched = _args.split_batch(func, x, rank)
    return dt, x, w, b, rank, batched


def _check_blas_sizes(func, *sizes):
    if max(sizes) > _INT_MAX:
        raise MemoryError(f"{func}: a matrix dimension of {max(sizes):,} exceeds the 32-bit BLAS "
                          f"interface (split the problem into smaller pieces)")


def _tile(K, P, dtype, tile_bytes=None):
    return _kernels().tile_rows(K, P, np.dtype(dtype).itemsize,
                                TILE_BYTES if tile_bytes is None else tile_bytes)


@contextlib.contextmanager
def _pooled(shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` in a block of the workspace pool (given
    back on exit): call-sized temporaries taken fresh from malloc on every call were handed back
    to the kernel and page-faulted in again each time, with TLB shootdowns on the other cores
    (40% of a one-sample conv_transpose)."""
    dt = np.dtype(dtype)
    n = _args.prod(shape) * dt.itemsize
    blk = _workspace.take(n)
    try:
        off = -blk.ctypes.data % _workspace.ALIGN
        yield blk[off:off + n].view(dt).reshape(shape)
    finally:
        _workspace.give(blk)


def _channels_last(a, nt, out=None):
    """(N, C, *sp) C-contiguous -> (N, prod(sp), C) C-contiguous (parallel blocked transpose),
    into ``out`` when given."""
    N, C = a.shape[:2]
    S = a.size // (N * C)
    if out is None:
        out = np.empty((N, S, C), dtype=a.dtype)
    _kernels().transpose_last2(a.reshape(-1), out.reshape(-1), N, C, S, nt)
    return out


def _channels_first(a, shape, nt):
    """(N, prod(sp), C) -> array of ``shape`` (N, C, *sp)."""
    N, S, C = a.shape
    out = np.empty(shape, dtype=a.dtype)
    _kernels().transpose_last2(a.reshape(-1), out.reshape(-1), N, S, C, nt)
    return out


@functools.lru_cache(maxsize=256)
def _forward_plan(N, C_in, C_out, groups, geom, itemsize, nthreads, tile_bytes, min_work, block_bytes,
                  row_tile_bytes, wino_tile_bytes, pw_tile):
    """Everything about a forward call that depends only on shapes: (kind, its size arguments,
    its tiling (thread count, tile or row-block size), the weight's packing shape, output-channel
    blocks per group (conv_forward's ncb)). Cached: repeated calls skip the arithmetic."""
    insz, ksz, st, dl, pb, outsz = geom.as3d()
    cig, cog = C_in // groups, C_out // groups
    kvol = _args.prod(ksz)
    K = cig * kvol
    P = _args.prod(outsz)
    nt = max(1, min(nthreads, N * C_out * P * K // min_work))
    sizes = (N, C_in, C_out, groups, insz, ksz, st, dl, pb, outsz)
    if C_in == groups:
        # one input channel per group: a direct stencil beats im2col + a K=kvol GEMM.
        # Row blocks keep the padded input rows + accumulator of a unit within ~64 KB,
        # and give every thread several units.
        Wp = (outsz[2] - 1) * st[2] + dl[2] * (ksz[2] - 1) + 1
        halo = dl[1] * (ksz[1] - 1) + 1
        R = max(1, (block_bytes // itemsize // Wp - ksz[0] * halo) // (ksz[0] * st[1] + 1))
        R = min(R, outsz[1])
        while R > 1 and N * C_out * outsz[0] * -(-outsz[1] // R) < 4 * nt:
            R = -(-R // 2)
        return "direct", sizes, (R, nt), None, 1
    _check_blas_sizes("conv", K, P, C_in * _args.prod(insz))
    if pw_tile and ksz == (1, 1, 1) and pb == (0, 0, 0) and all(
            (o - 1) * s < i for o, s, i in zip(outsz, st, insz)):   # (padding after adds outputs)
        # GEMMs straight on the NCHW rows (conv_pointwise); with a stride, on a per-thread copy
        # of the tile's positions (at most SUBSAMPLE_TILE_BYTES)
        strided = not _pointwise(ksz, st, pb, insz, outsz)
        T = _balanced_tile(P, max(64, SUBSAMPLE_TILE_BYTES // (cig * itemsize)) if strided
                            else pw_tile)
        return "pointwise", sizes, (T, nt, strided), None, _cout_blocks(groups * -(-P // T), cog)
    per_sample = _per_sample(N, nt)
    T = _kernels().tile_rows(K, P, itemsize, tile_bytes)
    wino = _winograd_tiles(cig, cog, ksz, st, dl, outsz, itemsize, wino_tile_bytes)
    if wino is not None:
        mtile, rb, ncols, kdd = wino
        ntx = -(-outsz[2] // mtile[2])
        nrows = -(-outsz[0] // mtile[0]) * -(-outsz[1] // mtile[1])
        ncb = _cout_blocks(groups * -(-nrows // rb) * -(-ntx // ncols), cog)
        return ("winograd", sizes, (T, nt, per_sample) + wino, (groups * ncb, cog // ncb, cig, kvol),
                ncb)
    rows = _row_shift_tiles(cig, cog, insz, ksz, st, dl, pb, outsz, itemsize, row_tile_bytes)
    if rows is not None:
        _check_blas_sizes("conv", cig * ksz[0] * ksz[1], ksz[2] * cog)
        R, CW, direct = rows
        ncb = _cout_blocks(groups * -(-(outsz[0] * outsz[1]) // R) * -(-outsz[2] // CW), cog)
        pack = (groups * ncb, cog // ncb, cig, ksz[0], ksz[1], ksz[2])
        return "rows", sizes, (T, nt, per_sample, R, CW, direct), pack, ncb
    # OpenBLAS packs the weight again for every tile: a tile of at least min(C_out/groups,
    # GEMM_MIN_TILE_POSITIONS) positions keeps that below the tile's own packing
    T = _kernels().tile_rows(K, P, itemsize,
                             max(tile_bytes, min(cog, GEMM_MIN_TILE_POSITIONS) * K * itemsize))
    ncb = _cout_blocks(groups * -(-P // T), cog)
    return "gemm", sizes, (T, nt, per_sample), (groups * ncb, cog // ncb, cig, kvol), ncb


def _cout_blocks(units, cog):
    """Output-channel blocks per group for conv_forward (its ``ncb``) where a sample is only
    ``units`` work units (groups x tiles: few tiles on a small image): halve the C_out/groups of a
    unit while the sample has fewer than MIN_UNITS_PER_SAMPLE and a half keeps at least
    MIN_COUT_BLOCK channels. From the shapes only (not the batch or the thread count), since
    splitting a GEMM changes its float32 bits."""
    ncb = 1
    while units * ncb < MIN_UNITS_PER_SAMPLE and cog % (2 * ncb) == 0 \
            and cog // (2 * ncb) >= MIN_COUT_BLOCK:
        ncb *= 2
    return ncb


def _pointwise(ksz, st, pb, insz, outsz):
    """A 1 x 1 kernel, stride 1, no padding (as3d sizes): the NCHW rows are the GEMM operands."""
    return ksz == (1, 1, 1) and st == (1, 1, 1) and pb == (0, 0, 0) and outsz == insz


def _balanced_tile(P, max_positions):
    """Positions per tile (of conv_pointwise, of the input gradient's GEMMs): all P up to
    ``max_positions``, else balanced tiles of at most that many. From the shapes only: OpenBLAS's
    float32 results depend on the GEMM's sizes, so the tiles must not depend on the batch or the
    thread count."""
    T = min(max_positions, P)
    return -(-P // -(-P // T))


def _row_shift_tiles(cig, cog, insz, ksz, st, dl, pb, outsz, itemsize, tile_bytes):
    """(R, CW, direct) of the row-shift form of the forward GEMM, or None where it does not apply.

    With stride 1 along W the kernel's KW taps can sit side by side in the GEMM's N dimension
    (KW*C_out/groups columns) instead of in its depth: the im2row tile gets KW times narrower
    (less gathering, and less for BLAS to pack) and the GEMM is less lopsided when C_out/groups is
    small. It computes over the input columns the outputs need, so it is used where those are not
    many more than the output columns; the taps are summed with their shifts afterwards.
    """
    W, OW, KW = insz[2], outsz[2], ksz[2]
    K2 = cig * ksz[0] * ksz[1]
    narrow = cog <= ROW_SHIFT_NARROW_COG and (K2 >= 64 or ksz[0] * ksz[1] > 1)
    if (not tile_bytes or st[2] != 1 or KW == 1 or cog > ROW_SHIFT_MAX_COG
            or (K2 < ROW_SHIFT_MIN_DEPTH and not narrow) or 4 * W > 5 * OW):
        return None
    # GEMM rows per tile: its im2row rows and result rows within the tile budget
    TT = max(64, tile_bytes // ((K2 + KW * cog) * itemsize))
    nrows = outsz[0] * outsz[1]
    if W <= TT:
        R = min(nrows, TT // W)
        R = -(-nrows // -(-nrows // R))                    # balanced row blocks
        CW = OW
    else:
        R = 1
        CW = max(16, TT - (KW - 1) * dl[2])
        CW = -(-OW // -(-OW // CW))                        # balanced column chunks
    direct = (ksz[0] == 1 and ksz[1] == 1 and st[0] == 1 and st[1] == 1 and pb[0] == 0
              and pb[1] == 0 and insz[0] == outsz[0] and insz[1] == outsz[1])
    return R, CW, direct


def _winograd_tiles(cig, cog, ksz, st, dl, outsz, itemsize, tile_bytes):
    """(mtile, rb, ncols, kdd) of the Winograd form, or None where it does not apply: a work unit
    is rb tile rows x ncols tile columns, its V and M blocks within ``tile_bytes``. kdd > 1: only
    H and W are transformed, the KD = kdd taps of D go into the GEMM depth (kdd * C_in/groups),
    for 3-d kernels on fewer channels than a GEMM per transform point needs."""
    if not tile_bytes or st != (1, 1, 1) or dl != (1, 1, 1) or max(ksz) == 1:
        return None
    kdd = 1
    if min(cig, cog) >= WINOGRAD_MIN_CHANNELS:
        mtile = _winograd.tile_sizes(ksz)
    elif cog >= WINOGRAD_PLANES_MIN_CHANNELS and ksz[0] * cig >= WINOGRAD_PLANES_MIN_DEPTH:
        mtile = _winograd.plane_tile_sizes(ksz)
        kdd = ksz[0]
    else:
        return None
    if mtile is None:
        return None
    A = _args.prod(m + k - 1 for m, k in zip(mtile[1:], ksz[1:]))
    if kdd == 1:
        A *= mtile[0] + ksz[0] - 1
    tb = max(16, WINOGRAD_MIN_TILES, tile_bytes // (A * (kdd * cig + cog) * itemsize))
    _check_blas_sizes("conv", A * max(kdd * cig, cog) + 16, tb)
    ntx = -(-outsz[2] // mtile[2])
    nrows = -(-outsz[0] // mtile[0]) * -(-outsz[1] // mtile[1])
    if ntx * nrows < WINOGRAD_MIN_TILES:
        return None
    if ntx <= tb:
        rb = min(nrows, tb // ntx)
        rb = -(-nrows // -(-nrows // rb))                  # balanced row blocks
        return mtile, rb, ntx, kdd
    ncols = -(-ntx // -(-ntx // tb))                       # balanced column chunks
    return mtile, 1, ncols, kdd


def _run_forward(x, w, b, groups, geom):
    """x (N, C_in, *in_sp) float contiguous, w (C_out, C_in/g, *k), b (C_out,) or None."""
    N, C_in = x.shape[:2]
    C_out = w.shape[0]
    kind, sizes, extra, pack, ncb = _forward_plan(N, C_in, C_out, groups, geom, x.itemsize,
                                             get_num_threads(), TILE_BYTES, MIN_WORK_PER_THREAD,
                                             DIRECT_BLOCK_BYTES, ROW_TILE_BYTES if ROW_SHIFT else 0,
                                             WINOGRAD_TILE_BYTES if WINOGRAD else 0,
                                             POINTWISE_TILE if POINTWISE else 0)
    out = np.empty((N, C_out) + geom.out_sp, dtype=x.dtype)
    has_bias = b is not None
    bias = b if has_bias else _ZERO_BIAS[x.dtype.char]
    k = _kernels()
    if kind == "direct":
        k.conv_direct(x.ravel(), w.ravel(), bias, out.reshape(-1), *sizes, has_bias, *extra)
        return out
    if kind == "pointwise":
        T, nt, strided = extra
        insz, _, st, _, _, outsz = geom.as3d()
        with blas_single_thread(N * C_out * _args.prod(geom.out_sp) * (C_in // groups)):
            k.conv_pointwise(x.reshape(-1), w.reshape(-1), bias, out.reshape(-1), N, C_in, C_out,
                             groups, _args.prod(geom.out_sp), T, has_bias, False, nt, ncb,
                             *((insz, st, outsz) if strided else (None, None, None)))
        return out
    T, nt, per_sample = extra[:3]
    ncl = (kind == "winograd" and x.dtype == np.float32 and extra[3] == (1, 1, 4)
           and geom.as3d()[1] == (1, 1, 5) and geom.as3d()[0][:2] == (1, 1)
           and (C_in // groups) % 8 == 0
           and (C_out // groups) % 8 == 0 and _wino45_ncl())
    if ncl and ncb > 1:
        # the channels-first F(4, 5) form keeps whole groups
        ncb, pack = 1, (groups, C_out // groups) + pack[2:]
    with contextlib.ExitStack() as stack:
        # the weight per (virtual) group as the GEMM's K x cog operand, K ordered (kernel offset,
        # channel) -- or for the row-shift form (kd, kh, c) x (kw, co), the KW taps side by side
        # (see _row_shift_tiles); a pooled buffer, filled in parallel (numpy's strided copy of a
        # 512 x 512 x 3 x 3 weight took longer than the convolution of a 7 x 7 sample)
        wp = stack.enter_context(_pooled((w.size,), w.dtype))
        inner = pack[5] if kind == "rows" else 1
        with _pooled((w.size,), w.dtype) as scratch:
            k.pack_weight(w.reshape(-1), scratch, wp, pack[0], pack[1], pack[2],
                          w.size // (w.shape[0] * pack[2] * inner), inner, nt)
        # the shared channels-last copy of the input (fewer samples than threads) from the pool
        xt = x if per_sample or ncl else _channels_last(
            x, nt, stack.enter_context(_pooled((N, x.size // (N * C_in), C_in), x.dtype)))
        # twice the direct sum's multiply-adds bounds every GEMM of the call (the row-shift form runs
        # over input columns, a few more than the output's)
        macs = 2 * N * C_out * _args.prod(geom.out_sp) * (C_in // groups) * _args.prod(w.shape[2:])
        with blas_single_thread(macs):
            wino = {}
            if kind == "winograd":
                mtile, rb, ncols, kdd = extra[3:]
                extra = extra[:3]
                # U and its scratch from the pool: fresh, they page-faulted in on every call
                # (a 512 x 512 x 3 x 3 weight's U is 16 MiB)
                u, bt, at = _winograd.transform_weight(
                    w, groups * ncb, geom.as3d()[1], mtile, x.dtype, kdd > 1, nt,
                    lambda n, dt: stack.enter_context(_pooled((n,), dt)))
                wino = dict(U=u.reshape(-1), bt=bt, at=at, mtile=mtile, rb=rb, ncols=ncols, kdd=kdd,
                            ncl=ncl)
            k.conv_forward(xt.reshape(-1), wp.reshape(-1), bias, out.reshape(-1), *sizes, has_bias, *extra,
                           ncb=ncb, **wino)
    if kind == "winograd":
        _padding_only_outputs(out, b, geom)
    return out


@functools.lru_cache(maxsize=256)
def _padding_only_slabs(geom):
    """Per spatial axis of the output, the (start, stop) ranges of outputs whose window lies
    wholly in the zero padding (stride s, dilation d: o*s + (k-1)*d < pad_before, or
    o*s - pad_before >= in), as (axis, start, stop) triples."""
    insz, ksz, st, dl, pb, outsz = geom.as3d()
    rank = len(geom.out_sp)
    slabs = []
    for ax in range(3 - rank, 3):
        lo = min(outsz[ax], max(0, -(-(pb[ax] - (ksz[ax] - 1) * dl[ax]) // st[ax])))
        hi = max(lo, -(-(insz[ax] + pb[ax]) // st[ax]))
        if lo > 0:
            slabs.append((2 + ax - (3 - rank), 0, lo))
        if hi < outsz[ax]:
            slabs.append((2 + ax - (3 - rank), hi, outsz[ax]))
    return tuple(slabs)


def _padding_only_outputs(out, b, geom):
    """Outputs whose window reads only zero padding are the bias (or 0) exactly, as in the direct
    sum: the Winograd transforms mix a tile's inputs, so where a tile also covers real inputs they
    came out as rounding noise."""
    for ax, start, stop in _padding_only_slabs(geom):
        idx = [slice(None)] * out.ndim
        idx[ax] = slice(start, stop)
        if b is None:
            out[tuple(idx)] = 0
        else:
            out[tuple(idx)] = (b + out.dtype.type(0)).reshape((-1,) + (1,) * (out.ndim - 2))


#: output tile m per kernel taps per stride phase k' = K / stride of the transposed Winograd form
#: (a = m + k' - 1 points: 0, 1, -1 and infinity, the transforms of F(2, 3))
WINOGRAD_T_M = {1: 1, 2: 3, 3: 2}


@functools.lru_cache(maxsize=256)
def _transpose_winograd_plan(cy, cx, insz, ksz, st, dl, outsz, itemsize):
    """(mtile, npts, TB, gain) of conv_transpose_winograd for the adjoint of a forward convolution (its
    input gradient: ``cy`` = C_out/groups channels in, ``cx`` = C_in/groups out), or None where it
    does not apply: 2-d (1-d kernels save at most 1.5x), dilation 1, every kernel size a multiple
    of its stride, a tile size in WINOGRAD_T_M, a GEMM at least WINOGRAD_MIN_CHANNELS deep, and at
    least _winograd.MIN_SAVING times fewer multiplications than the direct sum."""
    if insz[0] != 1 or ksz[0] != 1 or dl != (1, 1, 1) or cy < WINOGRAD_MIN_CHANNELS:
        return None
    if any(k % s for k, s in zip(ksz[1:], st[1:])):
        return None
    kp = [k // s for k, s in zip(ksz[1:], st[1:])]
    if any(k not in WINOGRAD_T_M for k in kp):
        return None
    m = tuple(WINOGRAD_T_M[k] for k in kp)
    a = tuple(mi + k - 1 for mi, k in zip(m, kp))
    S = st[1] * st[2]
    if S * cx < 32 or m[0] * ksz[1] * m[1] * ksz[2] < _winograd.MIN_SAVING * a[0] * a[1] * S:
        return None
    if -(-outsz[1] // m[0]) * -(-outsz[2] // m[1]) < WINOGRAD_MIN_TILES:   # tiles of gy
        return None
    A = a[0] * a[1]
    TB = max(16, WINOGRAD_MIN_TILES, WINOGRAD_TILE_BYTES // (A * (cy + S * cx) * itemsize))
    _check_blas_sizes("conv_transpose", A * max(cy, S * cx) + 16, TB)
    # gain: |anything computed| <= gain * max|gy| * max|w| (row sums of |A|, |G|, |B| per axis,
    # cy products per GEMM, overlapping patches per output), with a margin of 16
    gain = 16.0 * cy
    for mi, k in zip(m, kp):
        at, g, bt = _winograd.matrices(mi, k)
        gain *= (np.abs(at.T).sum(1).max() * np.abs(g).sum(1).max() * np.abs(bt.T).sum(1).max()
                 * -(-(mi + k - 1) // mi))
    return m, a, TB, gain


@functools.lru_cache(maxsize=16)
def _transpose_winograd_mats(mh, kph, mw, kpw, dtype_char):
    """(A_h, A_w, B_h, B_w concatenated in the working dtype, G_h x G_w in float64) of
    conv_transpose_winograd (shared between calls: not to be written to)."""
    mats_h, mats_w = _winograd.matrices(mh, kph), _winograd.matrices(mw, kpw)
    mats = np.concatenate([mats_h[0].T.ravel(), mats_w[0].T.ravel(), mats_h[2].T.ravel(),
                           mats_w[2].T.ravel()]).astype(dtype_char)
    return mats, np.kron(mats_h[1], mats_w[1])


def _run_transpose_winograd(gy, w, groups, geom, N, C_in, nt, macs, m, a, TB, gain):
    """The input gradient / transposed convolution by conv_transpose_winograd (see there), or None
    where the direct col2im form must do it: the transforms mix the inputs of a tile, so an inf or
    NaN would spread over the tile's whole patch (inf - inf) where the direct sum keeps it to the
    outputs it reaches, and values near the dtype's limit could overflow in them where the direct
    sum does not. Taken only when max|gy| * max|w| is below the dtype's max over a bound on the
    transforms' ``gain`` (max|w| here, max|gy| per sample in the kernel; NaN compares false)."""
    wmax, limit = float(max(w.max(), -w.min())), np.finfo(gy.dtype).max / gain
    if not wmax <= limit:
        return None
    ylimit = limit / max(wmax, 1.0)
    C_out = w.shape[0]
    insz, ksz, st, dl, pb, outsz = geom.as3d()
    cy, cx = C_out // groups, C_in // groups
    (sh, sw), (kh, kw) = st[1:], ksz[1:]
    (mh, mw), (ah, aw) = m, a
    mats, kron = _transpose_winograd_mats(mh, kh // sh, mw, kw // sw, gy.dtype.char)
    # U[q, gi, c, r, d] = (G_h k_r G_w^T)[q] for the phase kernels k_r = w[gi*cy + c, d, rh::sh, rw::sw]
    k = _kernels()
    # U and the transposed weight from the pool, as in the forward form (fresh, they page-fault)
    gx = np.empty((N, C_in) + geom.in_sp, dtype=gy.dtype)
    with _pooled((_args.prod(a) * w.size // (kh // sh * (kw // sw)),), gy.dtype) as U, \
            _pooled((kh * kw, w.size // (kh * kw)), gy.dtype) as wt:
        k.transpose_last2(w.reshape(-1), wt.reshape(-1), 1, wt.shape[1], kh * kw, nt)
        k.wino_t_weight(wt, kron, U, sh, sw, kw, cx, nt)
        with blas_single_thread(macs):
            skipped = k.conv_transpose_winograd(gy.reshape(-1), U, mats, gx.reshape(-1), N, C_out,
                                                C_in, groups, outsz[1:], insz[1:], (sh, sw), pb[1:],
                                                m, a, TB, ylimit, nt)
    return None if skipped else gx


def _run_grad_input(gy, w, groups, geom, N, C_in):
    """Adjoint of _run_forward: gy (N, C_out, *out_sp) -> gx (N, C_in, *in_sp)."""
    C_out = w.shape[0]
    insz, ksz, st, dl, pb, outsz = geom.as3d()
    cig = C_in // groups
    kvol = _args.prod(ksz)
    P = _args.prod(outsz)
    macs = N * C_out * P * cig * kvol
    nt = _threads_for(macs)
    _check_blas_sizes("conv_grad_input", cig * kvol, P, C_out * P)
    plan = (_transpose_winograd_plan(C_out // groups, cig, insz, ksz, st, dl, outsz, gy.itemsize)
            if WINOGRAD else None)
    if plan is not None:
        gx = _run_transpose_winograd(gy, w, groups, geom, N, C_in, nt, macs, *plan)
        if gx is not None:
            return gx
    if POINTWISE and _pointwise(ksz, st, pb, insz, outsz):
        # W^T GEMMs straight on the NCHW rows (conv_pointwise)
        gx = np.empty((N, C_in) + geom.in_sp, dtype=gy.dtype)
        T = _balanced_tile(P, POINTWISE_TILE)
        with blas_single_thread(macs):
            _kernels().conv_pointwise(gy.reshape(-1), w.reshape(-1), _ZERO_BIAS[gy.dtype.char],
                                      gx.reshape(-1), N, C_in, C_out, groups, P, T, False, True, nt)
        return gx
    per_sample = _per_sample(N, nt)
    if per_sample:
        cblock = cig
    else:
        # enough (sample, group, channel-block) units for every thread to scatter; blocks own
        # their gx channels (the GEMMs stay whole: the bits do not depend on the blocks)
        want = -(-4 * nt // (N * groups))
        ncb = max(1, min(cig, want))
        cblock = -(-cig // ncb)
    # weight packed as C_out x K, K ordered (kernel offset, channel)
    wp = np.ascontiguousarray(w.reshape(C_out, cig, kvol).transpose(0, 2, 1))
    # tiles from the shapes only: up to GRAD_INPUT_MIN_TILES per sample while a tile keeps
    # GRAD_INPUT_MIN_SPLIT positions (with few samples the threads share a sample's tile GEMMs)
    T = _tile(cig * kvol, P, gy.dtype, GRAD_INPUT_TILE_BYTES)
    if T > GRAD_INPUT_MIN_SPLIT and -(-P // T) < GRAD_INPUT_MIN_TILES:
        T = _balanced_tile(P, max(GRAD_INPUT_MIN_SPLIT, -(-P // GRAD_INPUT_MIN_TILES)))
    if per_sample:
        # whole samples per thread, private channels-last buffers: no input-sized temporaries
        gx = np.empty((N, C_in) + geom.in_sp, dtype=gy.dtype)
        with blas_single_thread(macs):
            _kernels().conv_backward_input(gy.reshape(-1), wp.reshape(-1), gx.reshape(-1), N, C_in,
                                           C_out, groups, insz, ksz, st, dl, pb, outsz, T, cblock, nt,
                                           True)
        return gx
    # shared channels-last copies of the output gradient and the input gradient, from the pool
    with _pooled((N, P, C_out), gy.dtype) as gyt, _pooled((N, _args.prod(insz), C_in), gy.dtype) as gxt:
        _channels_last(gy, nt, gyt)
        gxt.fill(0)
        with blas_single_thread(macs):
            _kernels().conv_backward_input(gyt.reshape(-1), wp.reshape(-1), gxt.reshape(-1), N, C_in,
                                           C_out, groups, insz, ksz, st, dl, pb, outsz, T, cblock, nt,
                                           False)
        return _channels_first(gxt, (N, C_in) + geom.in_sp, nt)


def _run_grad_weight(x, gy, groups, geom, w_shape):
    N, C_in = x.shape[:2]
    C_out = w_shape[0]
    insz, ksz, st, dl, pb, outsz = geom.as3d()
    cig = C_in // groups
    kvol = _args.prod(ksz)
    K = cig * kvol
    P = _args.prod(outsz)
    macs = N * C_out * P * K
    nt = _threads_for(macs)
    _check_blas_sizes("conv_grad_weight", K, P, C_in * _args.prod(insz))
    gw = np.empty((C_out, K), dtype=x.dtype)
    per_sample = _per_sample(N, nt)
    T = _tile(K, P, x.dtype)
    with contextlib.ExitStack() as stack:
        # the shared channels-last copy of the input (fewer samples than threads) from the pool
        xt = x if per_sample else _channels_last(
            x, nt, stack.enter_context(_pooled((N, x.size // (N * C_in), C_in), x.dtype)))
        with blas_single_thread(macs):
            _kernels().conv_backward_weight(xt.reshape(-1), gy.ravel(), gw.reshape(-1), N, C_in, C_out,
                                            groups, insz, ksz, st, dl, pb, outsz, T, nt, per_sample)
    # K is ordered (kernel offset, channel): back to (C_out, C_in/groups, *kernel)
    return np.ascontiguousarray(gw.reshape(C_out, kvol, cig).transpose(0, 2, 1)).reshape(w_shape)


def _flip_pads(pads):
    return tuple((a, b) for b, a in pads)


#: calls of conv() and conv_transpose() that passed validation: key (function, shapes, dtype,
#: plain arguments) -> (geometry, batched, groups[, C_out])
_VALIDATED = {}


def _repeat_key(func, rank, input, weight, bias, args):
    """Key under which a call may repeat an already validated one: arrays the kernels take as they
    are and plain arguments (_args.plain_key); None otherwise (checked in full). A repeat skips
    the argument checks and goes straight to the kernels."""
    if type(input) is not np.ndarray or type(weight) is not np.ndarray:
        return None
    plain = _args.plain_key(args)
    if plain is None:
        return None
    dt = input.dtype
    if (dt in _args.NATIVE_FLOATS and _args.ready(input, dt) and _args.ready(weight, dt)
            and (bias is None or (type(bias) is np.ndarray and _args.ready(bias, dt)))):
        return (func, rank, input.shape, weight.shape, None if bias is None else bias.shape,
                dt) + plain
    return None


def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
         padding_mode="zeros", flip=False, _func="conv", _rank=None):
    """N-dimensional convolution (cross-correlation unless ``flip=True``), batched or not.

    Parameters
    ----------
    input : array_like, shape (N, C_in, *spatial) or (C_in, *spatial)
        1, 2 or 3 spatial dimensions (the rank is ``weight.ndim - 2``).
    weight : array_like, shape (C_out, C_in // groups, *kernel)
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or tuple
    padding : int, tuple, tuple of (before, after) pairs, "valid", "same" or "full"
        ``"same"`` gives output size ``ceil(in / stride)`` for any stride (TensorFlow's SAME, the
        odd element after; with ``flip=True`` before, so that it centres like
        ``scipy.signal.convolve(mode="same")``); ``"full"`` pads ``dilation * (k - 1)`` on both sides.
    groups : int
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
    flip : bool
        ``True`` flips the kernel: the true convolution ``sum K(a) I(i - a)``.

    Returns
    -------
    ndarray, shape (N, C_out, *out) (or (C_out, *out) for unbatched input)
        ``out = floor((in + pad_before + pad_after - dilation * (k - 1) - 1) / stride) + 1``.

    Raises
    ------
    ValueError
        Wrong ranks, channel/groups mismatch, kernel larger than the padded input, bad padding.
    TypeError
        Complex, object, string or float16 data.

    Notes
    -----
    ``out[n, o, i] = bias[o] + sum_{c, a} weight[o, c, a] * x_pad[n, g(o) * C_in/groups + c,
    i * stride + a * dilation]``. Computed as per-thread im2col tiles times the weight (BLAS GEMM);
    a direct stencil when each group has one input channel (depthwise, single channel).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(5.0)[None, None]          # (N=1, C=1, L=5)
    >>> fastconv.conv(x, np.array([[[1.0, -1.0]]]))
    array([[[-1., -1., -1., -1.]]])
    """
    key = None
    if flip is False and type(padding_mode) is str and padding_mode == "zeros":
        key = _repeat_key(_func, _rank, input, weight, bias, (stride, padding, dilation, groups))
        hit = _VALIDATED.get(key) if key is not None else None
        if hit is not None:
            geom, batched, groups = hit
            out = _run_forward(input if batched else input[None], weight, bias, groups, geom)
            return out if batched else out[0]
    func = _func
    dt, x, w, b, rank, batched = _prologue(func, input, weight, bias, _rank)
    groups = _check_channels(func, x.shape[1], w.shape[0], w.shape[1], groups)
    if b is not None and b.shape != (w.shape[0],):
        raise _args.fail(func, f"bias must have shape ({w.shape[0]},) (C_out), got {b.shape}")
    if not isinstance(padding_mode, str) or padding_mode not in _PADDING_MODES:
        raise _args.fail(func, f"padding_mode must be one of {', '.join(map(repr, _PADDING_MODES))}, "
                               f"got {padding_mode!r}")
    if not isinstance(flip, (bool, np.bool_)):
        raise _args.type_fail(func, f"flip must be True or False, got {flip!r}")
    kernel = w.shape[2:]
    geom = _args.conv_geometry(func, x.shape[2:], kernel, stride, padding, dilation)
    if flip:
        w = np.ascontiguousarray(w[(Ellipsis,) + (slice(None, None, -1),) * rank])
        if isinstance(padding, str) and padding.lower() == "same":
            geom = _args.conv_geometry(func, geom.in_sp, kernel, geom.stride, _flip_pads(geom.pads),
                                       geom.dilation)
    mode = _PADDING_MODES[padding_mode]
    if mode is not None and any(p != (0, 0) for p in geom.pads):
        for size, (pb, pa) in zip(geom.in_sp, geom.pads):
            limit = size - 1 if mode == "reflect" else size
            if max(pb, pa) > limit:
                raise _args.fail(func, f"padding {geom.pads} is too large for padding_mode="
                                       f"{padding_mode!r} on input of spatial size {geom.in_sp} "
                                       f"(at most {'size - 1' if mode == 'reflect' else 'size'} per side)")
        _args.check_alloc(func, x.shape[:2] + tuple(s + a + b for s, (a, b) in zip(geom.in_sp, geom.pads)),
                          dt, "padded input")
        x = np.pad(x, ((0, 0), (0, 0)) + tuple(geom.pads), mode=mode)
        geom = _args.conv_geometry(func, x.shape[2:], kernel, geom.stride, 0, geom.dilation)
    _args.check_alloc(func, (x.shape[0], w.shape[0]) + geom.out_sp, dt)
    _args.remember(_VALIDATED, key, (geom, batched, groups))
    out = _run_forward(x, w, b, groups, geom)
    return out if batched else out[0]


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", flip=False):
    """1-D :func:`conv`: input (N, C_in, L) or (C_in, L), weight (C_out, C_in/groups, k)."""
    return conv(input, weight, bias, stride, padding, dilation, groups, padding_mode=padding_mode,
                flip=flip, _func="conv1d", _rank=1)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", flip=False):
    """2-D :func:`conv`: input (N, C_in, H, W) or (C_in, H, W), weight (C_out, C_in/groups, kH, kW)."""
    return conv(input, weight, bias, stride, padding, dilation, groups, padding_mode=padding_mode,
                flip=flip, _func="conv2d", _rank=2)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", flip=False):
    """3-D :func:`conv`: input (N, C_in, D, H, W) or (C_in, D, H, W), weight (C_out, C_in/groups, kD, kH, kW)."""
    return conv(input, weight, bias, stride, padding, dilation, groups, padding_mode=padding_mode,
                flip=flip, _func="conv3d", _rank=3)


def _transpose_geometry(func, in_sp, kernel, stride, padding, output_padding, dilation, output_size):
    """Geometry of the convolution whose adjoint maps ``in_sp`` to the transposed output."""
    rank = len(kernel)
    stride = _args.ntuple(func, "stride", stride, rank, minimum=1)
    dilation = _args.ntuple(func, "dilation", dilation, rank, minimum=1)
    opad = _args.ntuple(func, "output_padding", output_padding, rank, minimum=0)
    if output_size is not None and not hasattr(output_size, "__len__"):
        # an int: the same size in every spatial dimension
        output_size = _args.ntuple(func, "output_size", output_size, rank, minimum=1)
    if output_size is not None:
        size = _args.as_shape(func, "output_size", output_size)
        if len(size) < rank:
            raise _args.fail(func, f"output_size must give the {rank} spatial sizes, got {output_size!r}")
        size = size[len(size) - rank:]
    same = isinstance(padding, str) and padding.lower() == "same"
    if same:
        if output_size is None:
            size = tuple(i * s + o for i, s, o in zip(in_sp, stride, opad))
        for i, L, s in zip(in_sp, size, stride):
            if -(-L // s) != i:
                raise _args.fail(func, f"output_size {size} is not consistent with padding='same': "
                                       f"ceil(output / stride {stride}) must equal the input size {in_sp}")
        pads = _args.resolve_padding(func, "same", size, kernel, stride, dilation)
        return _args.ConvGeom(size, tuple(kernel), stride, dilation, pads, tuple(in_sp))
    pads = _args.resolve_padding(func, padding, in_sp, kernel, stride, dilation,
                                 strings=("valid", "same", "full"))
    base = tuple((i - 1) * s - pb - pa + d * (k - 1) + 1
                 for i, k, s, d, (pb, pa) in zip(in_sp, kernel, stride, dilation, pads))
    if output_size is not None:
        opad = tuple(L - b for L, b in zip(size, base))
        for o, s, d in zip(opad, stride, dilation):
            if not 0 <= o < max(s, d):
                lo = base
                hi = tuple(b + max(s, d) - 1 for b, s, d in zip(base, stride, dilation))
                raise _args.fail(func, f"requested output_size {size} is not between the smallest {lo} "
                                       f"and largest {hi} sizes this input, stride and padding allow")
    else:
        for o, s, d in zip(opad, stride, dilation):
            if o >= max(s, d):
                raise _args.fail(func, f"output_padding {opad} must be smaller than stride {stride} "
                                       f"or dilation {dilation}")
    size = tuple(b + o for b, o in zip(base, opad))
    if any(L < 1 for L in size):
        raise _args.fail(func, f"padding {padding!r} is too large: the output would have spatial size {size}")
    return _args.ConvGeom(size, tuple(kernel), stride, dilation, pads, tuple(in_sp))


def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                   groups=1, *, output_size=None, _func="conv_transpose", _rank=None):
    """Transposed convolution ("deconvolution"): the exact adjoint of :func:`conv`.

    Parameters
    ----------
    input : array_like, shape (N, C_in, *spatial) or (C_in, *spatial)
    weight : array_like, shape (C_in, C_out // groups, *kernel)
        The same array a :func:`conv` from C_out to C_in channels would take.
    bias : array_like, shape (C_out,), optional
    stride, dilation, output_padding : int or tuple
    padding : int, tuple, (before, after) pairs, "valid", "same" or "full"
        ``"same"`` is the adjoint of ``conv(padding="same")`` on an input of size ``in * stride``.
    groups : int
    output_size : int or tuple, optional
        Spatial output sizes (an int: the same in every dimension; extra leading entries of a
        tuple are ignored, as in torch); picks output_padding.

    Returns
    -------
    ndarray, shape (N, C_out, *out), ``out = (in - 1) * stride - pad_before - pad_after +
    dilation * (k - 1) + output_padding + 1``.

    Notes
    -----
    Computed as GEMM with the transposed weight followed by col2im (scatter-add), never by
    zero-stuffing the input: ``<conv(x, w), y> == <x, conv_transpose(y, w)>``. For 2-d kernels
    whose sizes are multiples of the strides (dilation 1, >= 32 input channels per group)
    the GEMMs run in Winograd's transform domain, one per transform point for all stride phases,
    and the transformed patches are scatter-added (see the README, "Winograd on the stride
    phases").

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv_transpose(np.ones((1, 1, 2)), np.ones((1, 1, 3)), stride=2).tolist()
    [[[1.0, 1.0, 2.0, 1.0, 1.0]]]
    """
    func = _func
    key = _repeat_key(func, _rank, input, weight, bias,
                      (stride, padding, output_padding, dilation, groups, output_size))
    hit = _VALIDATED.get(key) if key is not None else None
    if hit is not None:
        geom, batched, groups, c_out = hit
        y, w, b = input if batched else input[None], weight, bias
    else:
        geom, batched, groups, c_out, y, w, b = _transpose_setup(
            func, _rank, input, weight, bias, stride, padding, output_padding, dilation, groups,
            output_size)
        _args.remember(_VALIDATED, key, (geom, batched, groups, c_out))
    out = _run_grad_input(y, w, groups, geom, y.shape[0], c_out)
    if b is not None:
        out += b.reshape((1, c_out) + (1,) * (y.ndim - 2))
    return out if batched else out[0]


def _transpose_setup(func, rank, input, weight, bias, stride, padding, output_padding, dilation,
                     groups, output_size):
    """conv_transpose's argument checks -> (geometry, batched, groups, C_out, input, weight,
    bias)."""
    dt, y, w, b, rank, batched = _prologue(func, input, weight, bias, rank)
    (groups,) = _args.ntuple(func, "groups", groups, 1, minimum=1)
    if y.shape[1] != w.shape[0]:
        raise _args.fail(func, f"input has {y.shape[1]} channels but weight expects {w.shape[0]} "
                               f"(weight.shape[0])")
    if w.shape[0] % groups:
        raise _args.fail(func, f"groups={groups} must divide the number of input channels {w.shape[0]}")
    c_out = w.shape[1] * groups
    if b is not None and b.shape != (c_out,):
        raise _args.fail(func, f"bias must have shape ({c_out},) (C_out), got {b.shape}")
    geom = _transpose_geometry(func, y.shape[2:], w.shape[2:], stride, padding, output_padding,
                               dilation, output_size)
    _args.check_alloc(func, (y.shape[0], c_out) + geom.in_sp, dt)
    return geom, batched, groups, c_out, y, w, b


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups=1, *, output_size=None):
    """1-D :func:`conv_transpose`."""
    return conv_transpose(input, weight, bias, stride, padding, output_padding, dilation, groups,
                          output_size=output_size, _func="conv_transpose1d", _rank=1)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups=1, *, output_size=None):
    """2-D :func:`conv_transpose`."""
    return conv_transpose(input, weight, bias, stride, padding, output_padding, dilation, groups,
                          output_size=output_size, _func="conv_transpose2d", _rank=2)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups=1, *, output_size=None):
    """3-D :func:`conv_transpose`."""
    return conv_transpose(input, weight, bias, stride, padding, output_padding, dilation, groups,
                          output_size=output_size, _func="conv_transpose3d", _rank=3)


def _grad_setup(func, in_shape, w_shape, gy, stride, padding, dilation, groups):
    """Shared checks of the gradient functions; returns (geom, groups, gy with batch axis, batched)."""
    rank = len(w_shape) - 2
    _args.check_spatial_rank(func, rank)
    if len(in_shape) not in (rank + 1, rank + 2):
        raise _args.fail(func, f"input shape {in_shape} must be (N, C_in, *spatial) or (C_in, *spatial) "
                               f"with {rank} spatial dims")
    batched = len(in_shape) == rank + 2
    full_in = in_shape if batched else (1,) + in_shape
    groups = _check_channels(func, full_in[1], w_shape[0], w_shape[1], groups)
    geom = _args.conv_geometry(func, full_in[2:], w_shape[2:], stride, padding, dilation)
    expect = (full_in[0], w_shape[0]) + geom.out_sp
    got = gy.shape if batched else (1,) + gy.shape
    if got != expect:
        raise _args.fail(func, f"grad_output has shape {gy.shape} but the convolution output has shape "
                               f"{expect if batched else expect[1:]}")
    return geom, groups, gy.reshape(expect), batched, full_in


def conv_grad_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of :func:`conv` with respect to its input (``padding_mode="zeros"``).

    Parameters
    ----------
    input_shape : tuple
        Shape of the forward input, (N, C_in, *spatial) or (C_in, *spatial).
    weight : array_like, shape (C_out, C_in // groups, *kernel)
    grad_output : array_like, the shape of ``conv(input, weight, ...)``

    Returns
    -------
    ndarray of shape ``input_shape``: ``W^T`` applied to ``grad_output`` (col2im of ``W^T @ dy``).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv_grad_input((1, 1, 3), np.array([[[1.0, 2.0]]]), np.ones((1, 1, 2))).tolist()
    [[[1.0, 3.0, 2.0]]]
    """
    func = "conv_grad_input"
    in_shape = _args.as_shape(func, "input_shape", input_shape)
    dt, (w, gy) = _args.as_float_arrays(func, weight=weight, grad_output=grad_output)
    _args.check_alloc(func, in_shape, dt, "input gradient")
    _args.weight_rank(func, w)
    geom, groups, gy4, batched, full_in = _grad_setup(func, in_shape, w.shape, gy, stride, padding,
                                                      dilation, groups)
    _args.check_alloc(func, full_in, dt)
    gx = _run_grad_input(gy4, w, groups, geom, full_in[0], full_in[1])
    return gx if batched else gx[0]


def conv_grad_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of :func:`conv` with respect to its weight (``padding_mode="zeros"``).

    Parameters
    ----------
    input : array_like, (N, C_in, *spatial) or (C_in, *spatial)
    weight_shape : tuple, (C_out, C_in // groups, *kernel)
    grad_output : array_like, the shape of ``conv(input, weight, ...)``

    Returns
    -------
    ndarray of shape ``weight_shape``: ``sum_n dy[n] @ im2col(x[n])^T``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv_grad_weight(np.arange(3.0)[None, None], (1, 1, 2), np.ones((1, 1, 2))).tolist()
    [[[1.0, 3.0]]]
    """
    func = "conv_grad_weight"
    w_shape = _args.as_shape(func, "weight_shape", weight_shape)
    if not 3 <= len(w_shape) <= 5:
        raise _args.fail(func, f"weight_shape must be (C_out, C_in/groups, *kernel) with 1 to 3 kernel "
                               f"dims, got {w_shape}")
    dt, (x, gy) = _args.as_float_arrays(func, input=input, grad_output=grad_output)
    rank = len(w_shape) - 2
    was_batched = x.ndim == rank + 2
    x, _ = _args.split_batch(func, x, rank)
    in_shape = x.shape if was_batched else x.shape[1:]
    geom, groups, gy4, _, _ = _grad_setup(func, in_shape, w_shape, gy, stride, padding, dilation, groups)
    return _run_grad_weight(x, gy4, groups, geom, w_shape)


def conv_grad_bias(grad_output, *, batched=True):
    """Gradient of :func:`conv` with respect to its bias: ``grad_output`` summed over all axes but
    the channel axis.

    ``grad_output`` is (N, C_out, *spatial); a 2-D array is taken as unbatched (C_out, L). For other
    unbatched gradients pass ``batched=False`` (the channel axis is then axis 0).

    >>> import numpy as np, fastconv
    >>> fastconv.conv_grad_bias(np.ones((2, 3, 4, 5))).tolist()
    [40.0, 40.0, 40.0]
    """
    func = "conv_grad_bias"
    dt, (gy,) = _args.as_float_arrays(func, grad_output=grad_output)
    if gy.ndim < 2 or gy.size == 0:
        raise _args.fail(func, f"grad_output must be a non-empty (N, C_out, *spatial) array, got shape {gy.shape}")
    if gy.ndim == 2 or not batched:
        return gy.reshape(gy.shape[0], -1).sum(axis=1)
    return np.moveaxis(gy, 1, 0).reshape(gy.shape[1], -1).sum(axis=1)
