"""Downloads against a local HTTP server: MD5 checks, mirror fallback, nothing half-written."""
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from wsbench.download import download, ensure, md5_file
from wsbench.errors import WsbenchError


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the server's folder; ``/short/NAME`` promises the full length but sends half."""

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path.startswith("/short/"):
            body = (Path(self.server.root) / self.path[len("/short/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def translate_path(self, path):
        return str(Path(self.server.root) / path.lstrip("/"))


@pytest.fixture
def server(tmp_path):
    """``(base_url, folder)``: an HTTP server on 127.0.0.1 serving ``folder``."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root = str(root)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_md5_and_renames_into_place(server, tmp_path):
    base, root = server
    payload = bytes(range(256)) * 5000
    (root / "f.bin").write_bytes(payload)
    dest = tmp_path / "data" / "f.bin"
    download([base + "f.bin"], dest, hashlib.md5(payload).hexdigest())
    assert dest.read_bytes() == payload
    assert _leftovers(dest.parent) == ["f.bin"]
    assert md5_file(dest) == hashlib.md5(payload).hexdigest()


def test_wrong_checksum_is_one_line_error_and_leaves_nothing(server, tmp_path):
    base, root = server
    (root / "f.bin").write_bytes(b"not the official bytes")
    dest = tmp_path / "data" / "f.bin"
    with pytest.raises(WsbenchError) as err:
        download([base + "f.bin"], dest, "0" * 32)
    msg = str(err.value)
    assert "\n" not in msg and "f.bin" in msg and "MD5" in msg and "expected " + "0" * 32 in msg
    assert "place it at" in msg
    assert _leftovers(dest.parent) == []


def test_truncated_transfer_falls_back_to_next_mirror(server, tmp_path):
    base, root = server
    payload = b"x" * 300_000
    (root / "f.bin").write_bytes(payload)
    dest = tmp_path / "data" / "f.bin"
    # first mirror truncates, second 404s, third serves the file
    download([base + "short/f.bin", base + "missing/f.bin", base + "f.bin"], dest, hashlib.md5(payload).hexdigest())
    assert dest.read_bytes() == payload
    assert _leftovers(dest.parent) == ["f.bin"]


def test_every_mirror_failing_names_the_file_and_the_fix(server, tmp_path):
    base, root = server
    (root / "f.bin").write_bytes(b"y" * 100_000)
    dest = tmp_path / "data" / "f.bin"
    with pytest.raises(WsbenchError) as err:
        download([base + "short/f.bin", base + "nope.bin"], dest, hashlib.md5(b"y" * 100_000).hexdigest())
    msg = str(err.value)
    assert "\n" not in msg and "could not download f.bin" in msg and str(dest) in msg
    assert _leftovers(dest.parent) == []


def test_ensure_keeps_an_existing_file_without_network(tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"local")
    assert ensure(dest, ["http://127.0.0.1:9/never"], "0" * 32) == dest
    assert dest.read_bytes() == b"local"
