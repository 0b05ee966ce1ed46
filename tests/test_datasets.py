"""The mnist / fmnist / cifar10 plugins: reading, validating and downloading the official layouts.

The tests build small files in those layouts (the loaders' expected counts are patched down),
so they run without the real data and without the network; one test reads the real files
when ``../shared/data`` is present.
"""
import gzip
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from wsbench.errors import WsbenchError
from wsbench.plugins import load_registry
from wsbench.task import make_task, split_ids
from wsbench_plugins import images as im

REAL = Path(__file__).resolve().parents[2] / "shared" / "data"
N_TR, N_TE = 60, 20


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = np.array([magic, *arr.shape], dtype=">i4").tobytes()
    return gzip.compress(header + arr.astype(np.uint8).tobytes(), mtime=0)


def fake_idx(seed=0) -> dict:
    """File name -> gz bytes of a tiny MNIST-layout dataset (N_TR train, N_TE test)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", N_TR), ("t10k", N_TE)):
        out[f"{split}-images-idx3-ubyte.gz"] = _idx_bytes(rng.integers(0, 256, (n, 28, 28)), im.IMAGE_MAGIC)
        out[f"{split}-labels-idx1-ubyte.gz"] = _idx_bytes(np.arange(n) % 10, im.LABEL_MAGIC)
    return out


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(im, "N_TRAIN_IDX", N_TR)
    monkeypatch.setattr(im, "N_TEST_IDX", N_TE)
    monkeypatch.setattr(im, "N_TRAIN_CIFAR", 50)
    monkeypatch.setattr(im, "N_TEST_CIFAR", 10)


def write_files(folder: Path, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def test_plugins_registered_with_issue_specs():
    reg = load_registry()
    for name in ("mnist", "fmnist", "cifar10"):
        spec = reg.dataset(name)
        assert spec.num_val == 5000 and tuple(spec.inr_hidden) == (32, 32)
        assert spec.distribution == "wsbench"
        assert spec.inr_recipe["w0"] == 30.0


def test_idx_folder_loads_with_checksums(tmp_path, small):
    files = fake_idx()
    write_files(tmp_path / "MNIST" / "raw", files)
    data = im.load_idx(tmp_path, "MNIST", im.MNIST_CLASSES)
    assert data.train_images.shape == (N_TR, 1, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_labels.dtype == np.int64 and list(data.test_labels[:3]) == [0, 1, 2]
    assert data.checksums["MNIST/raw/t10k-labels-idx1-ubyte.gz"] == hashlib.md5(
        files["t10k-labels-idx1-ubyte.gz"]).hexdigest()


def test_truncated_gzip_is_one_line_error_naming_the_file(tmp_path, small):
    files = fake_idx()
    name = "train-images-idx3-ubyte.gz"
    files[name] = files[name][: len(files[name]) // 2]
    write_files(tmp_path / "MNIST" / "raw", files)
    with pytest.raises(WsbenchError) as err:
        im.load_idx(tmp_path, "MNIST", im.MNIST_CLASSES)
    msg = str(err.value)
    assert "\n" not in msg and name in msg and "truncated or corrupt" in msg and "delete" in msg


@pytest.mark.parametrize("what", ["magic", "count", "label"])
def test_wrong_idx_content_is_rejected(tmp_path, small, what):
    files = fake_idx()
    if what == "magic":
        files["t10k-labels-idx1-ubyte.gz"] = _idx_bytes(np.zeros(N_TE), im.IMAGE_MAGIC)
    elif what == "count":
        files["t10k-labels-idx1-ubyte.gz"] = _idx_bytes(np.zeros(N_TE + 1), im.LABEL_MAGIC)
    else:
        files["t10k-labels-idx1-ubyte.gz"] = _idx_bytes(np.full(N_TE, 10), im.LABEL_MAGIC)
    write_files(tmp_path / "MNIST" / "raw", files)
    with pytest.raises(WsbenchError, match="t10k-labels-idx1-ubyte.gz"):
        im.load_idx(tmp_path, "MNIST", im.MNIST_CLASSES)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()
    httpd.server_close()


def test_missing_idx_files_are_downloaded_and_md5_checked(tmp_path, small, server, monkeypatch):
    base, root = server
    files = fake_idx()
    write_files(root / "mnist", files)
    monkeypatch.setitem(im.MIRRORS, "MNIST", [base + "gone/", base + "mnist/"])
    monkeypatch.setitem(im.IDX_MD5, "MNIST", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    data_dir = tmp_path / "data"
    data = im.load_idx(data_dir, "MNIST", im.MNIST_CLASSES)
    assert data.train_images.shape == (N_TR, 1, 28, 28)
    assert sorted(p.name for p in (data_dir / "MNIST" / "raw").iterdir()) == sorted(files)


def test_download_with_wrong_checksum_leaves_no_file(tmp_path, small, server, monkeypatch):
    base, root = server
    files = fake_idx()
    write_files(root / "mnist", files)
    monkeypatch.setitem(im.MIRRORS, "MNIST", [base + "mnist/"])
    md5 = {k: hashlib.md5(v).hexdigest() for k, v in files.items()}
    md5["train-images-idx3-ubyte.gz"] = "f" * 32
    monkeypatch.setitem(im.IDX_MD5, "MNIST", md5)
    raw = tmp_path / "data" / "MNIST" / "raw"
    with pytest.raises(WsbenchError) as err:
        im.load_idx(tmp_path / "data", "MNIST", im.MNIST_CLASSES)
    msg = str(err.value)
    assert "\n" not in msg and "train-images-idx3-ubyte.gz" in msg and "MD5" in msg
    assert not (raw / "train-images-idx3-ubyte.gz").exists()
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]


def _cifar_batch(n: int, seed: int, labels=None) -> bytes:
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"batch", b"labels": list(labels if labels is not None else rng.integers(0, 10, n)),
         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
    return pickle.dumps(d, protocol=2)


def _fake_cifar(**override) -> dict:
    files = {f"data_batch_{k}": _cifar_batch(10, k) for k in range(1, 6)}
    files["test_batch"] = _cifar_batch(10, 9)
    files["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in im.CIFAR_CLASSES]}, protocol=2)
    files.update(override)
    return files


def test_cifar_folder_validated_by_content(tmp_path, small):
    files = _fake_cifar()
    write_files(tmp_path / im.CIFAR_FOLDER, files)
    data = im.load_cifar10(tmp_path)
    assert data.train_images.shape == (50, 3, 32, 32) and data.test_images.shape == (10, 3, 32, 32)
    raw = pickle.loads(files["data_batch_2"])
    # the first row's R plane is the first image's channel 0, row-major
    assert np.array_equal(data.train_images[10, 0].ravel(), raw[b"data"][0, :1024])
    assert data.train_labels[10] == raw[b"labels"][0]


@pytest.mark.parametrize("bad", ["labels", "count", "shape"])
def test_cifar_folder_with_wrong_content_is_rejected(tmp_path, small, bad):
    if bad == "labels":
        override = {"data_batch_3": _cifar_batch(10, 3, labels=[12] * 10)}
    elif bad == "count":
        override = {"test_batch": _cifar_batch(9, 9)}
    else:
        d = pickle.loads(_cifar_batch(10, 1))
        d[b"data"] = d[b"data"].astype(np.float32)
        override = {"data_batch_1": pickle.dumps(d, protocol=2)}
    write_files(tmp_path / im.CIFAR_FOLDER, _fake_cifar(**override))
    with pytest.raises(WsbenchError) as err:
        im.load_cifar10(tmp_path)
    assert "\n" not in str(err.value) and im.CIFAR_FOLDER in str(err.value)


class _Boom:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > pwned.txt",))


def test_cifar_pickle_cannot_run_code(tmp_path, small, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path / im.CIFAR_FOLDER, _fake_cifar(data_batch_1=pickle.dumps({b"data": _Boom()})))
    with pytest.raises(WsbenchError, match="refusing to load"):
        im.load_cifar10(tmp_path)
    assert not (tmp_path / "pwned.txt").exists()


def _tar_gz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{im.CIFAR_FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_cifar_archive_downloaded_md5_checked_and_extracted(tmp_path, small, server, monkeypatch):
    base, root = server
    archive = _tar_gz(_fake_cifar())
    (root / im.CIFAR_ARCHIVE).write_bytes(archive)
    monkeypatch.setitem(im.MIRRORS, "cifar10", [base])
    monkeypatch.setattr(im, "CIFAR_ARCHIVE_MD5", hashlib.md5(archive).hexdigest())
    data = im.load_cifar10(tmp_path / "data")
    assert data.train_images.shape == (50, 3, 32, 32)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted([im.CIFAR_ARCHIVE, im.CIFAR_FOLDER])


def test_cifar_archive_with_wrong_md5_is_not_extracted(tmp_path, small):
    (tmp_path / im.CIFAR_ARCHIVE).write_bytes(_tar_gz(_fake_cifar()))
    with pytest.raises(WsbenchError) as err:
        im.load_cifar10(tmp_path)
    assert "MD5" in str(err.value) and im.CIFAR_ARCHIVE in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [im.CIFAR_ARCHIVE]


def test_splits_are_seeded_and_disjoint():
    a = split_ids(60000, 10000, 5000, 0)
    b = split_ids(60000, 10000, 5000, 0)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert len(a["val"]) == 5000 and len(a["train"]) == 55000 and len(a["test"]) == 10000
    assert not set(a["val"]) & set(a["train"])
    assert not np.array_equal(split_ids(60000, 10000, 5000, 1)["val"], a["val"])


def test_cifar_task_has_three_channel_inrs(tmp_path, small):
    write_files(tmp_path / "data" / im.CIFAR_FOLDER, _fake_cifar())
    spec = replace(load_registry().dataset("cifar10"), num_val=10, inr_recipe={"steps": 3, "chunk_size": 16})
    task = make_task(spec, tmp_path / "data", tmp_path / "cache", limit=8)
    assert task.info.inr.dims == [2, 32, 32, 3] and task.weights.shape == (24, task.info.inr.num_params)
    assert task.zoo.manifest["source_checksums"]["cifar-10-batches-py/test_batch"]
    assert (task.zoo.path / "splits.json").exists()


@pytest.mark.skipif(not (REAL / "MNIST").exists(), reason="real data not present")
def test_real_mnist_and_cifar_files():
    reg = load_registry()
    mnist = reg.dataset("mnist").load(REAL)
    assert mnist.train_images.shape == (60000, 1, 28, 28)
    assert list(np.bincount(mnist.test_labels)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    if (REAL / im.CIFAR_FOLDER).exists():
        cifar = reg.dataset("cifar10").load(REAL)
        assert list(cifar.train_labels[:10]) == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
        assert list(cifar.train_images[0, :, 0, 0]) == [59, 62, 63]
        assert np.all(np.bincount(cifar.test_labels) == 1000)
