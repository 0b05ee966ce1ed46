"""Downloading dataset files: canonical mirrors in order, MD5-checked, atomic.

A file is streamed to a hidden temporary name next to its destination
(:func:`wsbench.tables.atomic_write`), hashed while it streams, and renamed into
place only when its MD5 matches; any failure removes the temporary file, so a
killed or failed download never leaves a file that looks complete. Errors are one
:class:`WsbenchError` line naming the file and what to do.
"""
from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from wsbench.errors import WsbenchError
from wsbench.tables import atomic_write

CHUNK = 1 << 20
TIMEOUT_S = 60


def md5_file(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _progress(description: str):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty())


def _fetch(url: str, tmp: Path, name: str) -> str:
    """Stream ``url`` into ``tmp``; return its MD5. Raises ``OSError``/``URLError`` on network trouble."""
    h = hashlib.md5()
    req = urllib.request.Request(url, headers={"User-Agent": "wsbench"})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp, open(tmp, "wb") as out:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        got = 0
        with _progress(name) as progress:
            task = progress.add_task(f"download {name}", total=total)
            for block in iter(lambda: resp.read(CHUNK), b""):
                out.write(block)
                h.update(block)
                got += len(block)
                progress.update(task, advance=len(block))
        if total is not None and got != total:
            raise urllib.error.ContentTooShortError(f"got {got} of {total} bytes", None)
    return h.hexdigest()


def download(urls: Sequence[str], dest: Path, md5: str) -> Path:
    """Fetch ``dest`` from the first of ``urls`` that answers; verify its MD5; rename into place.

    A network failure moves on to the next mirror. A wrong MD5 is an error at once
    (a second mirror serving other bytes would not make the file right).
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(dest, exc) from None
    failures = []
    for url in urls:
        try:
            atomic_write(dest, lambda tmp, url=url: _fetch_verified(url, tmp, dest, md5))
            return dest
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
    raise WsbenchError(f"could not download {dest.name} ({'; '.join(failures) or 'no mirrors'}); check the "
                       f"network, or download it yourself and place it at {dest}")


def _unwritable(dest: Path, exc: OSError) -> WsbenchError:
    return WsbenchError(f"cannot write {dest.name} into {dest.parent} ({exc.strerror}); pass a writable "
                        "--data-dir or set WSBENCH_DATA")


def _fetch_verified(url: str, tmp: Path, dest: Path, md5: str) -> None:
    """Stream ``url`` into ``tmp`` and check its MD5: a wrong one is an error at once."""
    try:
        tmp.touch()
    except OSError as exc:
        raise _unwritable(dest, exc) from None
    digest = _fetch(url, tmp, dest.name)
    if digest != md5:
        raise WsbenchError(
            f"downloaded {dest.name} from {url} has MD5 {digest}, expected {md5}; nothing was kept: "
            f"retry later, or download it yourself and place it at {dest}")


def ensure(dest: Path, urls: Sequence[str], md5: str) -> Path:
    """``dest`` if it exists (its content is validated by its reader), else downloaded from ``urls``."""
    dest = Path(dest)
    if dest.exists():
        return dest
    return download(urls, dest, md5)

