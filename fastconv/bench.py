"""``python -m fastconv.bench``: convolution versus its matrix forms, measured.

The lecture compares convolution with the same linear map written as a dense and as a sparse matrix
(edge detection on a 320 wide by 280 high image with a 2 by 1 kernel). This command makes that
comparison runnable:

1. the build in brief (``show_config``);
2. the efficiency table for the lecture's case, counted exactly by formula;
3. measured times on a deterministic synthetic 320x280 image (or ``--image PATH``): fastconv
   ``conv``, the ``scipy.sparse`` matvec with the matrix from ``conv_matrix``, and the dense matvec
   (refused with ``conv_matrix``'s MemoryError at full size, measured on a crop where it fits),
   with speed-up ratios;
4. a scaling sweep over square images (side 32 ... 1024, 3x3 kernel, padding 1): time and bytes of
   conv, sparse and dense (dense while it fits);
5. fastconv against torch and scipy on every registered benchmark case (``fastconv._benchdefs``),
   as ratios.

Times are the best single call over repeated runs (robust to other work on the machine). Progress
goes to stderr, results to stdout; ``--json PATH`` writes everything machine-readable,
``--plot PATH`` (needs matplotlib) the sweep on log-log axes and the edge-detected image.
"""
import argparse
import io
import json
import math
import os
import platform
import sys
import time

import numpy as np

__all__ = ["main"]

SEED_SHAPE = (280, 320)          # (height, width): the lecture's 320 wide by 280 high image
SWEEP_SIDES = (32, 64, 128, 256, 512, 1024)
QUICK_SWEEP_SIDES = (32, 64, 128, 256)
SOBEL_X = np.array([[[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]]], dtype=np.float32)


class _Progress:
    """Progress lines on stderr (results stay on stdout)."""

    def __init__(self, total, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.step_no = 0

    def elapsed(self):
        return time.perf_counter() - self.t0

    def step(self, title):
        self.step_no += 1
        self._write(f"[{self.step_no}/{self.total}] {title}")

    def note(self, msg):
        self._write(f"      {msg}")

    def _write(self, msg):
        print(f"fastconv.bench {self.elapsed():5.1f}s {msg}", file=self.stream, flush=True)


#: section 5 times every library this many times, alternating (the best of them counts)
COMPARE_ROUNDS = 3


def _best_time(fn, min_time, min_calls=3, max_calls=5000):
    """Best single-call time (seconds) over calls run for at least ``min_time`` (after a warm-up).

    The minimum of individual calls, as ``timeit`` recommends: on a machine shared with other work
    a multi-threaded call is sometimes stalled by a descheduled thread, which would spoil every
    average that contains it.
    """
    fn()
    best = math.inf
    calls = 0
    t_end = time.perf_counter() + min_time
    while calls < max_calls and (calls < min_calls or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        calls += 1
    return best


def _fmt_time(t):
    if t is None:
        return "-"
    if t < 1e-3:
        return f"{t * 1e6:.1f} us"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def _fmt_bytes(n):
    if n is None:
        return "-"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.3g} {unit}"
    return f"{n} B"


def _table(headers, rows, align=None):
    """Aligned text table; ``align`` is a string of 'l'/'r' per column (default: first l, rest r)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(vals):
        return "  ".join(v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(vals, widths, align))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _ratio(a, b):
    return None if (a is None or b is None or b <= 0) else a / b


def _fmt_ratio(r):
    return "-" if r is None else f"{r:.1f}x"


# --------------------------------------------------------------------------------------------------
# sections

def _config_section(out):
    import fastconv
    buf = io.StringIO()
    fastconv.show_config(file=buf)
    lines = [ln for ln in buf.getvalue().splitlines() if "compile flags" not in ln]
    try:
        load = os.getloadavg()
        lines.append(f"  load average  : {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} over {os.cpu_count()} "
                     f"cpu(s) (other work on the machine slows the multi-threaded timings)")
    except (AttributeError, OSError):  # pragma: no cover - not available on this platform
        load = None
    print("\n".join(lines), file=out)
    info = {"version": fastconv.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "threads": fastconv.get_num_threads(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "load_average": load,
            "show_config": lines}
    try:
        import scipy
        info["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover - scipy is a dependency
        pass
    try:
        from fastconv._config import _openmp
        info["openmp"] = bool(_openmp())
    except Exception:  # pragma: no cover
        info["openmp"] = None
    return info


def _efficiency_section(out, height, width):
    import fastconv
    rep = fastconv.efficiency((height, width), (1, 2))
    print(f"The lecture's edge detection: image {width} wide x {height} high, kernel 2 wide x 1 high "
          f"([-1, 1]), output {rep.output_shape[2]} x {rep.output_shape[1]}", file=out)
    print(rep, file=out)
    d = rep["dense matrix"]
    print(f"dense / convolution: {rep.ratio('stored_floats', 'dense matrix'):,.0f}x the stored floats, "
          f"{rep.ratio('flops', 'dense matrix'):,.0f}x the operations ({d['flops']:,} = over "
          f"{math.floor(d['flops'] / 1e9)}e9)", file=out)
    return rep.to_dict()


def _load_image(path):
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit("fastconv.bench: --image needs Pillow (pip install pillow)") from None
    try:
        with Image.open(path) as im:
            img = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except Exception as e:     # missing file, a directory, not an image: one line, no traceback
        raise SystemExit(f"fastconv.bench: --image {path!r} cannot be read as an image "
                         f"({type(e).__name__}: {e})") from None
    if img.shape[1] < 2:
        raise SystemExit(f"fastconv.bench: --image {path!r} is {img.shape[1]} pixel(s) wide; the "
                         f"2-wide edge kernel needs at least 2")
    return img


def _output_path(p, option, path, suffix=None):
    """``path`` for an output file, checked before any work: its directory exists and is writable
    and it is not a directory itself. ``suffix`` is added when the name has none (what matplotlib
    would do, so that the reported name is the file's)."""
    if os.path.isdir(path):
        p.error(f"{option} {path!r} is a directory, not a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        p.error(f"{option} {path!r}: the directory {folder!r} does not exist or is not writable")
    if suffix and not os.path.splitext(path)[1]:
        path += suffix
    return path


def _largest_dense_crop(height, width, itemsize, max_bytes):
    """Largest (h, w) crop (keeping the aspect ratio roughly) whose dense edge matrix fits."""
    s = 1.0
    while True:
        h, w = max(1, int(height * s)), max(2, int(width * s))
        if h * (w - 1) * h * w * itemsize <= max_bytes or (h == 1 and w == 2):
            return h, w
        s *= 0.95


def _seed_section(out, prog, img, timer, dense_max_bytes, image_name):
    import fastconv
    from fastconv._benchdefs.matrix import EDGE
    x = img[None]
    xf = x.ravel()
    w = EDGE
    H, W = img.shape
    res = {"image": image_name, "shape": [H, W], "kernel": "[-1, 1] (1 high x 2 wide)"}
    prog.note("building the CSR matrix with conv_matrix")
    t0 = time.perf_counter()
    M = fastconv.conv_matrix(x.shape, w)
    res["csr_build_s"] = time.perf_counter() - t0
    y = fastconv.conv(x, w)
    res["max_abs_diff_sparse_vs_conv"] = float(np.abs(M @ xf - y.ravel()).max())
    prog.note("timing conv")
    res["conv_s"] = timer(lambda: fastconv.conv(x, w))
    with fastconv.threads(1):      # the sparse matvec runs on one thread: the like-for-like figure
        res["conv_1thread_s"] = timer(lambda: fastconv.conv(x, w))
    prog.note("timing scipy.sparse matvec")
    res["sparse_s"] = timer(lambda: M @ xf)
    res["sparse_bytes"] = int(M.data.nbytes + M.indices.nbytes + M.indptr.nbytes)
    res["ratio_sparse_over_conv"] = _ratio(res["sparse_s"], res["conv_s"])
    res["ratio_sparse_over_conv_1thread"] = _ratio(res["sparse_s"], res["conv_1thread_s"])
    res["claim_conv_5x_faster_than_sparse"] = bool(res["ratio_sparse_over_conv"] >= 5)
    try:
        fastconv.conv_matrix(x.shape, w, format="dense", max_bytes=dense_max_bytes)
        res["dense_full_refused"] = None
    except MemoryError as e:
        res["dense_full_refused"] = str(e)
    # dense on a crop where it fits (or the full image, if it fits)
    h, wd = _largest_dense_crop(H, W, 4, dense_max_bytes)
    r0, c0 = (H - h) // 2, (W - wd) // 2
    xs = np.ascontiguousarray(img[r0:r0 + h, c0:c0 + wd])[None]
    xsf = xs.ravel()
    prog.note(f"timing the dense matvec on a {wd}x{h} crop")
    D = fastconv.conv_matrix(xs.shape, w, format="dense", max_bytes=dense_max_bytes)
    Ms = fastconv.conv_matrix(xs.shape, w)
    small = {"shape": [h, wd], "dense_bytes": int(D.nbytes),
             "sparse_bytes": int(Ms.data.nbytes + Ms.indices.nbytes + Ms.indptr.nbytes),
             "conv_s": timer(lambda: fastconv.conv(xs, w)),
             "sparse_s": timer(lambda: Ms @ xsf),
             "dense_s": timer(lambda: D @ xsf)}
    small["max_abs_diff_dense_vs_conv"] = float(np.abs(D @ xsf - fastconv.conv(xs, w).ravel()).max())
    small["ratio_sparse_over_conv"] = _ratio(small["sparse_s"], small["conv_s"])
    small["ratio_dense_over_conv"] = _ratio(small["dense_s"], small["conv_s"])
    del D
    res["small"] = small

    print(f"Edge detection on {image_name} ({W} wide x {H} high, float32, "
          f"{get_threads()} thread(s)):", file=out)
    rows = [
        [f"fastconv conv ({get_threads()} thread(s))", _fmt_time(res["conv_s"]), "1.0x", _fmt_bytes(w.nbytes)],
        ["fastconv conv (1 thread)", _fmt_time(res["conv_1thread_s"]),
         _fmt_ratio(_ratio(res["conv_1thread_s"], res["conv_s"])), _fmt_bytes(w.nbytes)],
        ["scipy.sparse CSR matvec", _fmt_time(res["sparse_s"]), _fmt_ratio(res["ratio_sparse_over_conv"]),
         _fmt_bytes(res["sparse_bytes"])],
        ["dense matvec", "refused" if res["dense_full_refused"] else "fits: timed below", "-",
         "see below" if res["dense_full_refused"] else "-"],
    ]
    print(_table(["method", "time", "vs conv", "operator bytes"], rows), file=out)
    print(f"  CSR build (conv_matrix): {_fmt_time(res['csr_build_s'])}; max |M @ x - conv(x)| = "
          f"{res['max_abs_diff_sparse_vs_conv']:.3g}", file=out)
    print(f"  speed-up of conv over the scipy.sparse matvec (same arithmetic): "
          f"{res['ratio_sparse_over_conv']:.2f}x (target >= 5x: "
          f"{'met' if res['claim_conv_5x_faster_than_sparse'] else 'NOT met'}); with conv on one "
          f"thread, like the matvec: {res['ratio_sparse_over_conv_1thread']:.2f}x", file=out)
    if res["dense_full_refused"]:
        print(f"  dense at full size: MemoryError: {res['dense_full_refused']}", file=out)
    print(f"On a {wd} wide x {h} high crop, where the dense matrix fits:", file=out)
    rows = [
        ["fastconv conv", _fmt_time(small["conv_s"]), "1.0x", _fmt_bytes(w.nbytes)],
        ["scipy.sparse CSR matvec", _fmt_time(small["sparse_s"]), _fmt_ratio(small["ratio_sparse_over_conv"]),
         _fmt_bytes(small["sparse_bytes"])],
        ["dense matvec (numpy)", _fmt_time(small["dense_s"]), _fmt_ratio(small["ratio_dense_over_conv"]),
         _fmt_bytes(small["dense_bytes"])],
    ]
    print(_table(["method", "time", "vs conv", "operator bytes"], rows), file=out)
    return res, y[0]


def get_threads():
    import fastconv
    return fastconv.get_num_threads()


def _sweep_section(out, prog, sides, timer, dense_max_bytes):
    import fastconv
    from fastconv._benchdefs.matrix import synthetic_image
    w = SOBEL_X
    rows, table = [], []
    for s in sides:
        prog.note(f"sweep: side {s}")
        x = synthetic_image(s, s)[None]
        xf = x.ravel()
        rep = fastconv.efficiency(x.shape, (3, 3), padding=1)
        r = {"side": s, "nnz": rep.nnz, "flops": rep["convolution"]["flops"],
             "conv_bytes": rep["convolution"]["bytes"], "sparse_bytes": rep["sparse matrix"]["bytes"],
             "dense_bytes": rep["dense matrix"]["bytes"]}
        r["conv_s"] = timer(lambda: fastconv.conv(x, w, padding=1))
        t0 = time.perf_counter()
        M = fastconv.conv_matrix(x.shape, w, padding=1)
        r["csr_build_s"] = time.perf_counter() - t0
        actual = int(M.data.nbytes + M.indices.nbytes + M.indptr.nbytes)
        if actual != r["sparse_bytes"]:  # the report is exact; say so loudly if it ever is not
            print(f"  WARNING: side {s}: CSR uses {actual:,} bytes, efficiency() said "
                  f"{r['sparse_bytes']:,}", file=out)
        r["sparse_s"] = timer(lambda: M @ xf)
        del M
        r["dense_s"] = None
        if r["dense_bytes"] <= dense_max_bytes:
            D = fastconv.conv_matrix(x.shape, w, padding=1, format="dense", max_bytes=dense_max_bytes)
            r["dense_s"] = timer(lambda: D @ xf)
            del D
        r["ratio_sparse_over_conv"] = _ratio(r["sparse_s"], r["conv_s"])
        r["ratio_dense_over_conv"] = _ratio(r["dense_s"], r["conv_s"])
        rows.append(r)
        table.append([f"{s}x{s}", _fmt_time(r["conv_s"]), _fmt_time(r["sparse_s"]),
                      _fmt_ratio(r["ratio_sparse_over_conv"]),
                      _fmt_time(r["dense_s"]) if r["dense_s"] is not None else "does not fit",
                      _fmt_ratio(r["ratio_dense_over_conv"]), _fmt_time(r["csr_build_s"]),
                      _fmt_bytes(r["conv_bytes"]), _fmt_bytes(r["sparse_bytes"]),
                      _fmt_bytes(r["dense_bytes"])])
    print(f"Sobel 3x3, padding 1, one float32 channel; dense measured while it needs <= "
          f"{_fmt_bytes(dense_max_bytes)}; bytes are the operator's storage:", file=out)
    print(_table(["image", "conv", "sparse", "vs conv", "dense", "vs conv", "CSR build",
                  "conv bytes", "sparse bytes", "dense bytes"], table), file=out)
    return rows


def _sgemm_peak(timer):
    """GFLOP/s of numpy's float32 matrix product on 2048 x 2048 operands (its BLAS, all threads)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    b = rng.standard_normal((2048, 2048), dtype=np.float32)
    c = np.empty_like(a)
    t = timer(lambda: np.matmul(a, b, out=c), 3)
    return 2.0 * 2048 ** 3 / t / 1e9


def _compare_section(out, prog, quick, timer, deadline):
    from fastconv._benchdefs import all_cases, try_torch
    torch = try_torch()
    try:
        import scipy.ndimage  # noqa: F401
        have_ndimage = True
    except ImportError:  # pragma: no cover
        have_ndimage = False
    info = {"torch": getattr(torch, "__version__", None), "scipy_ndimage": have_ndimage, "cases": []}
    if torch is None and not have_ndimage:
        print("neither torch nor scipy.ndimage is installed: nothing to compare against", file=out)
        return info
    cases = [c for c in all_cases() if c.quick or not quick]
    cases.sort(key=lambda c: c.family != "matrix")     # this command's own cases first
    prog.note("sgemm peak: numpy float32 2048^3")
    peak = _sgemm_peak(timer)
    table = []
    for i, case in enumerate(cases):
        rec = {"name": case.name, "family": case.family}
        info["cases"].append(rec)
        if time.perf_counter() > deadline:
            rec["skipped"] = "time budget"
            table.append([case.name, "skipped (time budget)", "", "", "", "", ""])
            continue
        prog.note(f"compare {i + 1}/{len(cases)}: {case.name}")
        try:
            d = case.setup()
            # rounds alternate between the libraries, so that a slow spell of this shared
            # machine hits every one of them, not only the one that happened to be running
            fns = [("fastconv", None, d["fastconv"])] + [
                (lib, label, fn) for lib in ("torch", "scipy") for label, fn in (d.get(lib) or {}).items()]
            times = {}
            for _ in range(COMPARE_ROUNDS):
                for lib, label, fn in fns:
                    t = timer(fn, COMPARE_ROUNDS)
                    times[lib, label] = min(t, times.get((lib, label), math.inf))
            rec["fastconv_s"] = times["fastconv", None]
            for lib in ("torch", "scipy"):
                best = None
                for label in (d.get(lib) or {}):
                    t = times[lib, label]
                    rec.setdefault(f"{lib}_labels", {})[label] = t
                    if best is None or t < best[1]:
                        best = (label, t)
                if best is not None:
                    rec[f"{lib}_s"], rec[f"{lib}_label"] = best[1], best[0]
                    rec[f"ratio_{lib}_over_fastconv"] = _ratio(best[1], rec["fastconv_s"])
            if d.get("flops"):
                rec["fastconv_gflops"] = d["flops"] / rec["fastconv_s"] / 1e9
        except Exception as e:  # one broken case must not end the report
            rec["error"] = f"{type(e).__name__}: {e}"
            table.append([case.name, "error: " + rec["error"][:60], "", "", "", "", ""])
            continue
        table.append([case.name, _fmt_time(rec["fastconv_s"]), "",
                      _fmt_time(rec.get("torch_s")) + (f" ({rec['torch_label']})" if "torch_label" in rec else ""),
                      _fmt_ratio(rec.get("ratio_torch_over_fastconv")),
                      _fmt_time(rec.get("scipy_s")) + (f" ({rec['scipy_label']})" if "scipy_label" in rec else ""),
                      _fmt_ratio(rec.get("ratio_scipy_over_fastconv"))])
    # the peak is the best of a measurement before and one after the cases: a slow spell of this
    # shared machine during one of them would otherwise understate it
    prog.note("sgemm peak again")
    info["sgemm_gflops"] = peak = max(peak, _sgemm_peak(timer))
    for row, rec in zip(table, info["cases"]):
        gf = rec.get("fastconv_gflops")
        row[2] = f"{gf:.0f} ({100 * gf / peak:.0f}%)" if gf else ""
    print(f"Ratios are other time / fastconv time (above 1: fastconv faster); torch "
          f"{info['torch'] or 'not installed'}, best of its layouts:", file=out)
    print(f"GFLOP/s: the direct sum's multiply-adds x 2 / time (the Winograd form does fewer "
          f"multiplications, so it can pass the sgemm peak); % of numpy's float32 sgemm on a "
          f"2048^3 product measured in this run (its BLAS's own thread count): {peak:.0f} GFLOP/s.",
          file=out)
    print(_table(["case", "fastconv", "GFLOP/s (% sgemm)", "torch", "torch/fc", "scipy", "scipy/fc"],
                 table, "lrrrrrr"), file=out)
    return info


def _plot(path, sweep, img, edges, prog):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        prog.note("--plot: matplotlib is not installed (pip install matplotlib); no plot written")
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    ax = axes[0, 0]
    ax.imshow(img, cmap="gray")
    ax.set_title(f"input ({img.shape[1]} x {img.shape[0]})")
    ax.axis("off")
    ax = axes[0, 1]
    ax.imshow(edges, cmap="gray")
    ax.set_title("conv with [-1, 1] (vertical edges)")
    ax.axis("off")
    sides = [r["side"] for r in sweep]
    ax = axes[1, 0]
    for key, label in (("conv_s", "fastconv conv"), ("sparse_s", "scipy.sparse matvec"),
                       ("dense_s", "dense matvec"), ("csr_build_s", "CSR build")):
        pts = [(r["side"] ** 2, r[key]) for r in sweep if r[key] is not None]
        if pts:
            ax.loglog(*zip(*pts), "o-", label=label)
    ax.set_xlabel("pixels")
    ax.set_ylabel("seconds")
    ax.set_title("time (Sobel 3x3)")
    ax.legend()
    ax = axes[1, 1]
    for key, label in (("conv_bytes", "conv (weight)"), ("sparse_bytes", "CSR matrix"),
                       ("dense_bytes", "dense matrix")):
        ax.loglog([s * s for s in sides], [r[key] for r in sweep], "o-", label=label)
    ax.set_xlabel("pixels")
    ax.set_ylabel("bytes")
    ax.set_title("operator storage")
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except Exception as e:     # e.g. a format matplotlib does not write: the results still count
        prog.note(f"plot not written to {path}: {type(e).__name__}: {e}")
        return None
    finally:
        plt.close(fig)
    prog.note(f"plot written to {path}")
    return path


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m fastconv.bench",
        description="Convolution versus its dense and sparse matrix forms: the efficiency table of "
                    "the lecture's edge-detection example, measured times, a scaling sweep, and "
                    "fastconv against torch / scipy.")
    p.add_argument("--quick", action="store_true",
                   help="shorter timings, sweep up to 256x256, only the quick comparison cases")
    p.add_argument("--json", metavar="PATH", help="write all results as JSON to PATH")
    p.add_argument("--plot", metavar="PATH",
                   help="save a figure (needs matplotlib): the sweep on log-log axes and the "
                        "edge-detected image beside the input")
    p.add_argument("--image", metavar="PATH",
                   help="use this image (converted to grayscale; needs Pillow) instead of the "
                        "synthetic 320x280 one")
    p.add_argument("--threads", type=int, metavar="N", help="threads for fastconv (and torch)")
    p.add_argument("--dense-max-bytes", type=int, default=2 ** 28, metavar="BYTES",
                   help="largest dense matrix to build and time (default 268435456 = 256 MiB)")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="stop starting new comparison cases after this long (default 40, quick 20)")
    p.add_argument("--no-compare", action="store_true", help="skip section 5 (torch / scipy ratios)")
    return p


#: the smallest dense edge matrix (a 1 x 2 crop, float32)
_MIN_DENSE_BYTES = 8


def main(argv=None):
    """Run the benchmark; returns the results dict (also written with ``--json``)."""
    p = _parser()
    args = p.parse_args(argv)
    import fastconv
    from fastconv._benchdefs.matrix import synthetic_image
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        fastconv.set_num_threads(args.threads)
    if args.dense_max_bytes < _MIN_DENSE_BYTES:
        p.error(f"--dense-max-bytes must be at least {_MIN_DENSE_BYTES} (the dense matrix of a "
                f"1 x 2 crop), got {args.dense_max_bytes}")
    try:                       # never more than half of this machine's memory
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        args.dense_max_bytes = min(args.dense_max_bytes, max(_MIN_DENSE_BYTES, ram // 2))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf
        pass
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget >= 0):
        p.error(f"--budget must be a finite number of seconds >= 0, got {args.budget}")
    if args.json:
        args.json = _output_path(p, "--json", args.json)
    if args.plot:
        args.plot = _output_path(p, "--plot", args.plot, ".png")
    img = _load_image(args.image) if args.image else None
    if args.quick:
        def timer(fn, rounds=1):
            return _best_time(fn, min_time=0.03 / rounds, min_calls=2 if rounds == 1 else 1)
    else:
        def timer(fn, rounds=1):
            return _best_time(fn, min_time=0.15 / rounds, min_calls=3 if rounds == 1 else 1)
    out = sys.stdout
    prog = _Progress(5)
    budget = args.budget if args.budget is not None else (20.0 if args.quick else 40.0)
    deadline = prog.t0 + budget
    results = {"quick": bool(args.quick), "argv": list(argv if argv is not None else sys.argv[1:])}

    def header(title):
        print(f"\n== {title} ==", file=out)

    prog.step("configuration")
    header("1. configuration")
    results["config"] = _config_section(out)

    prog.step("efficiency table (counted, nothing built)")
    header("2. efficiency: convolution vs dense vs sparse matrix (exact counts)")
    results["efficiency"] = _efficiency_section(out, *SEED_SHAPE)

    prog.step("seed case: conv vs scipy.sparse vs dense")
    if img is not None:
        name = os.path.basename(args.image)
    else:
        img = synthetic_image(*SEED_SHAPE)
        name = "the synthetic image"
    header("3. measured: edge detection")
    results["seed"], edges = _seed_section(out, prog, img, timer, args.dense_max_bytes, name)

    prog.step("scaling sweep")
    header("4. scaling sweep")
    sides = QUICK_SWEEP_SIDES if args.quick else SWEEP_SIDES
    results["sweep"] = _sweep_section(out, prog, sides, timer, args.dense_max_bytes)

    prog.step("fastconv vs torch / scipy on the benchmark cases")
    header("5. fastconv vs torch / scipy")
    if args.no_compare:
        print("skipped (--no-compare)", file=out)
        results["compare"] = None
    else:
        results["compare"] = _compare_section(out, prog, args.quick, timer, deadline)

    results["plot"] = _plot(args.plot, results["sweep"], img, edges, prog) if args.plot else None
    results["elapsed_s"] = prog.elapsed()
    print(f"\ndone in {results['elapsed_s']:.1f} s", file=out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_jsonable(results), f, indent=2)
        prog.note(f"results written to {args.json}")
    return results


if __name__ == "__main__":
    main()
