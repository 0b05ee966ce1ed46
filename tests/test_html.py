"""The HTML leaderboard: PNG encoding, SVG figures, escaping, and the page of a real
``shapes`` grid rendered by headless Chromium (screenshot and DOM checked)."""
import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
from typer.testing import CliRunner

from wsbench.reporting import html as H
from wsbench.reporting.board import build

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="headless Chromium not found at /usr/bin/chromium (Debian: apt-get install chromium); "
           "the page itself is still tested without a browser")


def read_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit grayscale, RGB or RGBA PNG to ``(H, W, C)`` uint8 (test helper)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (0, 2, 6)
            ch = {0: 1, 2: 3, 6: 4}[ctype]
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    assert w is not None, "no IHDR chunk"
    raw = zlib.decompress(idat)
    stride = w * ch
    out = np.zeros((h, stride), dtype=np.int64)
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if f == 0:
            row = line
        elif f == 1:  # Sub: a running sum along each channel
            row = np.cumsum(line.reshape(w, ch), axis=0).reshape(-1) % 256
        elif f == 2:  # Up
            row = (line + prev) % 256
        else:  # Average and Paeth depend on the pixel to the left: one at a time
            row = np.zeros(stride, np.int64)
            for x in range(stride):
                a = row[x - ch] if x >= ch else 0
                b, c = prev[x], (prev[x - ch] if x >= ch else 0)
                if f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[x] = (line[x] + pred) % 256
        out[y] = prev = row
    return out.reshape(h, w, ch).astype(np.uint8)


def test_png_bytes_round_trips_gray_and_rgb():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (1, 5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (3, 4, 6), dtype=np.uint8)
    assert np.array_equal(read_png(H.png_bytes(gray))[..., 0], gray[0])
    assert np.array_equal(read_png(H.png_bytes(rgb)), np.moveaxis(rgb, 0, -1))
    with pytest.raises(ValueError, match="uint8"):
        H.png_bytes(gray.astype(np.float32))


def test_colour_ramp_ends_and_missing_values():
    assert H.colour(0.0) == "#30123b" and H.colour(1.0) == "#fae623" and H.colour(2.0) == H.colour(1.0)
    assert H.colour(float("nan")) == "#e5e7eb"


def test_heatmap_has_a_cell_per_layer_pair_with_its_interval_in_the_tooltip():
    m = {"rows": ["fc1", "fc2"], "cols": ["a", "b", "c"], "values": [[0.1, 0.2, float("nan")], [0.4, 0.5, 0.6]],
         "cells": {("fc1", "a"): {"ci_low": 0.05, "ci_high": 0.15, "pairs": 3, "null_mean": 0.01}}}
    svg = H.heatmap_svg(m, title="t")
    assert svg.count('<g><title>') == 6 and "fc1 × a: 0.100; 95 % CI [0.0500, 0.1500]; 3 pairs; null 0.010" in svg
    assert ">0.60<" in svg and svg.count("fill=\"#e5e7eb\"") == 1  # the missing cell is grey and unlabelled


def test_names_are_escaped():
    board = build([{"run_id": "r", "dataset": "d", "arch": "<script>x</script>", "seed": 0, "status": "finished",
                       "test_acc": 0.5, "view": "images"}], [])
    page = H.render_html(board, title="a & b")
    assert "<script>" not in page and "&lt;script&gt;" in page and "<title>a &amp; b</title>" in page
    assert "https://" not in page and 'src="http' not in page and 'href="http' not in page


@pytest.fixture(scope="module")
def shapes_page(tmp_path_factory, shapes_task):
    """A real 2 x 2 shapes grid, its similarity and its exported leaderboard folder."""
    from wsbench import similarity
    from wsbench.cli import app
    from wsbench.executors import LocalExecutor
    from wsbench.grid import run_grid
    from wsbench.plugins import load_registry
    from wsbench.runner import Cell, Runner, Settings
    from wsbench.store import Store
    base = tmp_path_factory.mktemp("page")
    reg = load_registry()
    runner = Runner(reg, Settings(out=base / "R", limit=120, overrides={"epochs": 20, "lr": 0.003}))
    runner._tasks["shapes"] = shapes_task  # the session's task (limit 120): its zoo is fitted once
    cells = [Cell("shapes", a, s) for a in ("flat-mlp", "mlp") for s in (0, 1)]
    assert {o.status for o in run_grid(cells, runner, LocalExecutor(runner))} == {"finished"}
    similarity.compute(Store(base / "R"), [reg.metric("cka")], resamples=50, permutations=20)
    res = CliRunner().invoke(app, ["leaderboard", "--out", str(base / "R"), "--format", "md",
                                   "--output", str(base / "lb") + "/"])
    assert res.exit_code == 0, res.output
    return base / "lb"


def test_exported_page_is_self_contained_with_tables_figures_and_images(shapes_page):
    page = (shapes_page / "index.html").read_text()
    assert page.count('<svg class="heatmap"') >= 3  # seed vs seed for both archs, and flat-mlp vs mlp
    assert '<svg class="stability"' in page and '<svg class="forest"' in page
    for table in ("accuracy", "stability", "samples", "agreement"):
        assert f'<table class="{table}">' in page
    assert 'src="data:image/png;base64,' in page, "this grid has samples that split the two kinds of model"
    assert 'src="http' not in page and "<link" not in page and "<script" not in page


def _chromium(*args, tmp):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp}", *args], check=False, capture_output=True, timeout=120)


@needs_chromium
def test_chromium_renders_tables_heatmaps_and_sample_images(shapes_page, tmp_path):
    url = (shapes_page / "index.html").resolve().as_uri()
    dom = _chromium("--dump-dom", url, tmp=tmp_path / "profile-dom").stdout.decode()
    # What the browser built, not just what we wrote.
    assert dom.count("<table") >= 4 and dom.count('class="heatmap"') >= 3 and 'class="stability"' in dom
    assert "Test accuracy" in dom and "Cross-seed stability" in dom and "Sample analysis" in dom
    assert dom.count('<img alt="sample') >= 1 and "flat-mlp" in dom
    shot = tmp_path / "page.png"
    # A quarter-scale screenshot of a 1200 x 2400 window: enough pixels to see the figures, few to decode.
    res = _chromium("--window-size=1200,2400", "--force-device-scale-factor=0.25", f"--screenshot={shot}", url,
                    tmp=tmp_path / "profile-shot")
    assert shot.exists(), res.stderr.decode()[-2000:]
    img = read_png(shot.read_bytes())[..., :3].astype(int)
    h, w = img.shape[:2]
    assert h == 2 * w and 300 <= w <= 600  # Chromium may clamp the scale factor
    not_white = (img < 235).any(-1).mean()
    # Heatmap, interval-plot and view colours: strongly saturated pixels that tables and text do not have.
    saturated = (img.max(-1) - img.min(-1) > 80).mean()
    print(f"screenshot {w}x{h}: {100 * not_white:.1f} % not white, {100 * saturated:.2f} % saturated")
    assert not_white > 0.03 and saturated > 0.01, (not_white, saturated)


def test_similarity_heatmaps_use_the_unit_scale_and_other_values_their_own():
    assert H.heatmap_range([[-0.004, 0.02], [0.5, float("nan")]]) == (0.0, 1.0)
    assert H.heatmap_range([[3.0, 7.0]]) == (3.0, 7.0)
