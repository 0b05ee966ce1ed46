"""The committed leaderboards are a function of their committed tables: re-exporting a copy of
``leaderboards/yeom2025`` from its Parquet tables and manifest alone gives every committed file again,
byte for byte (the HTML page's generation time and source folder aside)."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMMITTED = Path(__file__).resolve().parents[1] / "leaderboards" / "yeom2025"
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


@pytest.mark.skipif(not (COMMITTED / "tables" / "runs.parquet").exists(), reason="no committed yeom2025 tables")
def test_yeom2025_rerenders_to_the_committed_files(tmp_path):
    copy = tmp_path / "yeom2025"
    for name in INPUTS:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(COMMITTED / name, copy / name)
    # No data directory: the sample images come from the export's own table.
    res = subprocess.run([sys.executable, "-m", "wsbench", "leaderboard", "--out", str(copy), "--output", f"{copy}/",
                          "--data-dir", str(tmp_path / "no-data")], check=False, capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "warning" not in res.stderr, res.stderr[-2000:]

    written = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(COMMITTED).as_posix() for p in COMMITTED.rglob("*") if p.is_file())
    # The authors' README.md and the study log are never written by an export.
    assert written == [p for p in committed if p not in ("README.md", "study-log.json")]
    for name in written:
        if name in ("index.html", "manifest.json"):
            continue
        assert (copy / name).read_bytes() == (COMMITTED / name).read_bytes(), f"{name} differs from the committed one"
    assert _page((copy / "index.html").read_text()) == _page((COMMITTED / "index.html").read_text())
    assert _manifest((copy / "manifest.json").read_text()) == _manifest((COMMITTED / "manifest.json").read_text())
    assert json.loads((copy / "manifest.json").read_text())["source"] == "all2"  # the original results root, by name
