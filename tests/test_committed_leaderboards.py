"""The committed leaderboards are a function of their committed tables: re-exporting a copy of
``leaderboards/yeom2025`` or ``leaderboards/cnn-zoo`` from its Parquet tables and manifest alone gives
every committed file again, byte for byte (the HTML page's generation time and source folder aside),
and the cnn-zoo findings README is exactly what its script writes from those tables."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each committed leaderboard and the results root it was exported from (by folder name).
BOARDS = {"yeom2025": "all2", "cnn-zoo": "cnnstudy2-results"}
# What an export is re-rendered from: the tables it holds and its manifest (title, source).
INPUTS = ("tables/runs.parquet", "tables/similarity.parquet", "tables/predictions.parquet",
          "tables/sample_images.parquet", "manifest.json")
# The page's meta line names when and from which folder it was generated.
_GENERATED = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")
_SOURCE = re.compile(r" · from <code>[^<]*</code>")


_EXPORTED = re.compile(r'"exported_at": "[^"]*"')


def _manifest(text: str) -> str:
    return _EXPORTED.sub('"exported_at": TIME', text)


def _page(text: str) -> str:
    return _SOURCE.sub(" · from <code>SOURCE</code>", _GENERATED.sub("generated TIME", text))


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_committed_leaderboard_rerenders_to_the_committed_files(tmp_path, board):
    committed = ROOT / "leaderboards" / board
    if not (committed / "tables" / "runs.parquet").exists():
        pytest.skip(f"no committed {board} tables")
    copy = tmp_path / board
    for name in INPUTS:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(committed / name, copy / name)
    # No data directory: the sample images come from the export's own table.
    res = subprocess.run([sys.executable, "-m", "wsbench", "leaderboard", "--out", str(copy), "--output", f"{copy}/",
                          "--data-dir", str(tmp_path / "no-data")], check=False, capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "warning" not in res.stderr, res.stderr[-2000:]

    written = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    files = sorted(p.relative_to(committed).as_posix() for p in committed.rglob("*") if p.is_file())
    # The authors' README.md and the study log are never written by an export.
    assert written == [p for p in files if p not in ("README.md", "study-log.json")]
    for name in written:
        if name in ("index.html", "manifest.json"):
            continue
        assert (copy / name).read_bytes() == (committed / name).read_bytes(), f"{name} differs from the committed one"
    assert _page((copy / "index.html").read_text()) == _page((committed / "index.html").read_text())
    assert _manifest((copy / "manifest.json").read_text()) == _manifest((committed / "manifest.json").read_text())
    assert json.loads((copy / "manifest.json").read_text())["source"] == BOARDS[board]  # the results root, by name


def test_cnn_zoo_findings_readme_is_what_the_script_writes(tmp_path):
    """leaderboards/cnn-zoo/README.md is recomputed by scripts/cnn_zoo_findings.py from the exported
    tables and the GPU runs' JSON alone: rewriting it into a copy gives the committed file again."""
    committed = ROOT / "leaderboards" / "cnn-zoo"
    if not (committed / "README.md").exists():
        pytest.skip("no committed cnn-zoo leaderboard")
    copy = tmp_path / "cnn-zoo"
    shutil.copytree(committed, copy)
    (copy / "README.md").unlink()
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "cnn_zoo_findings.py"), str(copy), "--write-readme",
                          "--gpu-reference", str(ROOT / "benchmarks" / "results" / "cnn_zoo_gpu_h200.json")],
                         check=False, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (copy / "README.md").read_text() == (committed / "README.md").read_text()
