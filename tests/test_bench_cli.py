"""``python -m fastconv.bench`` runs and writes the results it promises (fastconv/bench.py)."""
import json
import os
import subprocess
import sys

import pytest

import fastconv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))


def _run(*args, timeout=150):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "fastconv.bench", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "results.json"
    proc = _run("--quick", "--json", str(path), "--budget", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(path) as f:
        return proc, json.load(f)


def test_cli_prints_every_section_with_progress(quick_run):
    proc, _ = quick_run
    for n in range(1, 6):
        assert f"== {n}." in proc.stdout
        assert f"[{n}/5]" in proc.stderr            # progress goes to stderr
    assert "[1/5]" not in proc.stdout
    for s in ("8,003,072,000", "178,640", "267,960", "scipy.sparse CSR matvec", "MemoryError",
              "32,012,288,000 bytes", "OpenMP"):
        assert s in proc.stdout


def test_cli_json_fields(quick_run):
    _, res = quick_run
    assert res["quick"] is True
    assert res["config"]["version"] == fastconv.__version__ and res["config"]["threads"] >= 1
    rows = res["efficiency"]["rows"]
    assert rows["convolution"]["stored_floats"] == 2
    assert rows["dense matrix"]["stored_floats"] == 8_003_072_000
    assert rows["sparse matrix"]["stored_floats"] == 178_640
    assert rows["convolution"]["flops"] == rows["sparse matrix"]["flops"] == 267_960
    assert rows["dense matrix"]["flops"] > 16e9
    seed = res["seed"]
    assert seed["shape"] == [280, 320]
    assert seed["conv_s"] > 0 and seed["sparse_s"] > 0
    assert seed["ratio_sparse_over_conv"] == pytest.approx(seed["sparse_s"] / seed["conv_s"])
    assert isinstance(seed["claim_conv_5x_faster_than_sparse"], bool)
    assert seed["max_abs_diff_sparse_vs_conv"] < 1e-5
    assert "32,012,288,000 bytes" in seed["dense_full_refused"]
    small = seed["small"]
    assert small["dense_s"] > 0 and small["dense_bytes"] <= 2 ** 28
    assert small["max_abs_diff_dense_vs_conv"] < 1e-5
    sweep = res["sweep"]
    assert [r["side"] for r in sweep] == [32, 64, 128, 256]
    for r in sweep:
        assert r["conv_s"] > 0 and r["sparse_s"] > 0 and r["csr_build_s"] > 0
        assert r["sparse_bytes"] < r["dense_bytes"]
        assert (r["dense_s"] is None) == (r["dense_bytes"] > 2 ** 28)
    assert sweep[0]["dense_s"] is not None and sweep[-1]["dense_s"] is None
    comp = res["compare"]
    assert comp["cases"], "no benchmark cases were found"
    names = [c["name"] for c in comp["cases"]]
    assert any(n.startswith("matrix: edge") for n in names)
    for c in comp["cases"]:
        assert "skipped" in c or "error" in c or c["fastconv_s"] > 0
    assert res["plot"] is None and res["elapsed_s"] > 0


def test_cli_bad_arguments(tmp_path):
    """User mistakes end at once (before any section runs) with one line naming the option, and
    exit status 2, as argparse's own errors: no traceback, no run whose results are then lost."""
    cases = [
        (("--threads", "0"), "--threads must be >= 1"),
        (("--no-such-option",), "usage: python -m fastconv.bench"),
        (("--dense-max-bytes", "7"), "--dense-max-bytes must be at least 8"),
        (("--dense-max-bytes", "-5"), "--dense-max-bytes must be at least 8"),
        (("--budget", "nan"), "--budget must be a finite number of seconds >= 0"),
        (("--budget", "-1"), "--budget must be a finite number of seconds >= 0"),
        (("--json", str(tmp_path / "missing" / "r.json")), "does not exist or is not writable"),
        (("--json", str(tmp_path)), "is a directory, not a file name"),
        (("--plot", str(tmp_path / "missing" / "p.png")), "does not exist or is not writable"),
    ]
    for args, words in cases:
        proc = _run(*args, timeout=60)
        assert proc.returncode == 2 and words in proc.stderr, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and "== 1." not in proc.stdout, args


def test_cli_bad_image_is_one_line(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    proc = _run("--quick", "--no-compare", "--image", str(bad), timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--image" in proc.stderr and ("cannot be read as an image" in proc.stderr
                                         or "needs Pillow" in proc.stderr)


def test_cli_image_and_plot_options(tmp_path):
    try:
        from PIL import Image
    except ImportError:
        proc = _run("--quick", "--no-compare", "--image", "nonexistent.png", timeout=60)
        assert proc.returncode != 0 and "--image needs Pillow" in proc.stderr
        return
    import numpy as np
    img = tmp_path / "in.png"
    Image.fromarray((np.arange(60 * 80) % 251).reshape(60, 80).astype(np.uint8)).save(img)
    plot = tmp_path / "plot.png"
    out = tmp_path / "r.json"
    proc = _run("--quick", "--no-compare", "--image", str(img), "--plot", str(plot), "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["seed"]["shape"] == [60, 80] and res["compare"] is None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert res["plot"] is None and "matplotlib is not installed" in proc.stderr
    else:
        assert res["plot"] == str(plot) and plot.stat().st_size > 10_000
        # no extension: matplotlib writes .png, and that is the name reported
        bare, out2 = tmp_path / "bare", tmp_path / "r2.json"
        proc = _run("--quick", "--no-compare", "--plot", str(bare), "--json", str(out2))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(out2.read_text())["plot"] == str(bare) + ".png"
        assert (tmp_path / "bare.png").stat().st_size > 10_000
