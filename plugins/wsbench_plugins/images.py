"""``mnist``, ``fmnist`` and ``cifar10``: the official image files in torchvision's raw layout.

Under the data directory::

  MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
  FashionMNIST/raw/   (the same four names)
  cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   or   cifar-10-python.tar.gz

Missing files are downloaded from the canonical mirrors and must match the
official MD5s. Files already present are validated by content (magic numbers,
shapes, dtypes, label range, counts) rather than by MD5, so a faithful rebuild
of the official files (re-gzipped, re-pickled) loads too; their MD5s are
recorded in the zoo manifest. CIFAR pickles are read with an unpickler that
only rebuilds numpy arrays and plain containers, so a file cannot run code.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from wsbench import (
    CNN_ZOO_PARAMS,
    DatasetSpec,
    ImageData,
    WsbenchError,
    cnn_networks,
    cnn_zoo_recipes,
    ensure,
    hookimpl,
    imported_cnn_networks,
    md5_file,
)

# Canonical mirrors (the ones torchvision uses), tried in order; tests point these at a local server.
MIRRORS = {
    "MNIST": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "FashionMNIST": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}
# Official MD5s of the compressed files (as published by the datasets' authors and listed by torchvision).
IDX_MD5 = {
    "MNIST": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = [f"data_batch_{k}" for k in range(1, 6)]
CIFAR_TEST = ["test_batch"]

MNIST_CLASSES = tuple(str(k) for k in range(10))
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
N_TRAIN_IDX, N_TEST_IDX = 60000, 10000
N_TRAIN_CIFAR, N_TEST_CIFAR = 50000, 10000


def _redo(path: Path) -> str:
    return f"delete {path} so wsbench downloads it again, or replace it with the official file"


def read_idx(path: Path, magic: int, count: int, shape: tuple = ()) -> np.ndarray:
    """A gzipped IDX file -> uint8 array ``(count, *shape)``, checked against its header.

    Raises a one-line :class:`WsbenchError` naming the file when it is not a complete,
    well-formed IDX file of the expected kind.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise WsbenchError(f"{path} is not a readable gzip file (truncated or corrupt: {exc}); {_redo(path)}") from None
    ndim = 1 + len(shape)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise WsbenchError(f"{path} is too short for an IDX header ({len(raw)} bytes); {_redo(path)}")
    dims = np.frombuffer(raw[:header], dtype=">i4")
    if int(dims[0]) != magic:
        raise WsbenchError(f"{path} has IDX magic number {int(dims[0])}, expected {magic}; {_redo(path)}")
    if tuple(int(d) for d in dims[1:]) != (count, *shape):
        raise WsbenchError(f"{path} holds an array of shape {tuple(int(d) for d in dims[1:])}, expected "
                           f"{(count, *shape)}; {_redo(path)}")
    need = count * int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != need:
        raise WsbenchError(f"{path} holds {len(raw) - header} data bytes, expected {need}; {_redo(path)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(count, *shape)


def load_idx(data_dir: Path, folder: str, classes) -> ImageData:
    """MNIST-style dataset from ``data_dir/folder/raw``; missing files are downloaded."""
    raw = Path(data_dir) / folder / "raw"
    files = {}
    for name, md5 in IDX_MD5[folder].items():
        files[name] = ensure(raw / name, [m + name for m in MIRRORS[folder]], md5)
    arrays = {}
    for split, n in (("train", N_TRAIN_IDX), ("t10k", N_TEST_IDX)):
        arrays[split] = (read_idx(files[f"{split}-images-idx3-ubyte.gz"], IMAGE_MAGIC, n, (28, 28)),
                         read_idx(files[f"{split}-labels-idx1-ubyte.gz"], LABEL_MAGIC, n))
    for split, (_, labels) in arrays.items():
        if labels.max() >= len(classes):
            path = files[f"{split}-labels-idx1-ubyte.gz"]
            raise WsbenchError(f"{path} has label {int(labels.max())}, outside 0..{len(classes) - 1}; {_redo(path)}")
    (tr_x, tr_y), (te_x, te_y) = arrays["train"], arrays["t10k"]
    return ImageData(tr_x[:, None], tr_y.astype(np.int64), te_x[:, None], te_y.astype(np.int64), classes,
                     checksums={f"{folder}/raw/{k}": md5_file(v) for k, v in sorted(files.items())})


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and builtin containers only; any other global is refused."""

    ALLOWED: ClassVar[set] = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):] if hasattr(np, "_core") else module
        return super().find_class(module, name)


def safe_unpickle(data: bytes):
    return _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()


def _cifar_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch pickle -> ``images (10000, 3, 32, 32) uint8``, ``labels (10000,) int64``."""
    fix = f"delete it so wsbench extracts or downloads the official {CIFAR_ARCHIVE} again"
    try:
        d = safe_unpickle(data)
    except Exception as exc:
        raise WsbenchError(f"{where} is not a readable CIFAR-10 batch ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(d, dict):
        raise WsbenchError(f"{where} holds a {type(d).__name__}, not a CIFAR-10 batch dict; {fix}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    x, y = d.get("data"), d.get("labels")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise WsbenchError(f"{where}: 'data' is {desc}, expected uint8 (N, 3072); {fix}")
    y = np.asarray(y if y is not None else [], dtype=np.int64)
    if y.shape != (len(x),):
        raise WsbenchError(f"{where}: {len(y)} labels for {len(x)} images; {fix}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise WsbenchError(f"{where}: labels outside 0..9 ({int(y.min())}..{int(y.max())}); {fix}")
    return x.reshape(-1, 3, 32, 32), y


def _cifar_from(read, where: str, checksums: dict) -> ImageData:
    """Assemble CIFAR-10 from ``read(member_name) -> bytes``; validates counts."""
    parts = {}
    for names, expect in ((CIFAR_TRAIN, N_TRAIN_CIFAR), (CIFAR_TEST, N_TEST_CIFAR)):
        xs, ys = zip(*(_cifar_batch(read(n), f"{where}/{n}") for n in names))
        x, y = np.concatenate(xs), np.concatenate(ys)
        if len(x) != expect:
            raise WsbenchError(f"{where}: {'+'.join(names)} hold {len(x)} images, expected {expect}; delete it so "
                               f"wsbench extracts or downloads the official {CIFAR_ARCHIVE} again")
        parts[names[0]] = (x, y)
    (tr_x, tr_y), (te_x, te_y) = parts[CIFAR_TRAIN[0]], parts[CIFAR_TEST[0]]
    return ImageData(tr_x, tr_y, te_x, te_y, CIFAR_CLASSES, checksums=checksums)


def _extract_cifar(archive: Path, folder: Path) -> None:
    """Extract the batch files (and nothing else) into ``folder`` through a temporary folder."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name in [*CIFAR_TRAIN, *CIFAR_TEST, "batches.meta"]:
                member = tar.getmember(f"{CIFAR_FOLDER}/{name}")
                if not member.isfile():
                    raise WsbenchError(f"{archive}: {member.name} is not a regular file; {_redo(archive)}")
                data = tar.extractfile(member)
                assert data is not None  # a regular file (checked above)
                (tmp / name).write_bytes(data.read())
        os.replace(tmp, folder)
    except (KeyError, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise WsbenchError(f"{archive} could not be extracted ({type(exc).__name__}: {exc}); "
                           f"{_redo(archive)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_cifar10(data_dir: Path) -> ImageData:
    """CIFAR-10 from an extracted folder (validated by content) or the official archive (MD5-checked)."""
    data_dir = Path(data_dir)
    folder = data_dir / CIFAR_FOLDER
    names = [*CIFAR_TRAIN, *CIFAR_TEST]
    if not all((folder / n).is_file() for n in names):
        if folder.exists():
            missing = [n for n in names if not (folder / n).is_file()]
            raise WsbenchError(f"{folder} lacks {', '.join(missing)}; delete the folder so wsbench extracts or "
                               f"downloads {CIFAR_ARCHIVE} again")
        archive = data_dir / CIFAR_ARCHIVE
        if archive.exists():
            got = md5_file(archive)
            if got != CIFAR_ARCHIVE_MD5:
                raise WsbenchError(f"{archive} has MD5 {got}, expected {CIFAR_ARCHIVE_MD5}; {_redo(archive)}")
        ensure(archive, [m + CIFAR_ARCHIVE for m in MIRRORS["cifar10"]], CIFAR_ARCHIVE_MD5)  # downloads it if missing
        _extract_cifar(archive, folder)
    checksums = {f"{CIFAR_FOLDER}/{n}": md5_file(folder / n) for n in names}
    return _cifar_from(lambda n: (folder / n).read_bytes(), str(folder), checksums)


@hookimpl
def register_datasets(register):
    # Recipes: Adam, held for the first half of the steps, then a cosine decay to 1% of the rate
    # (see wsbench.inr.lr_at). Measured PSNR: benchmarks/results/inr_fit.json.
    fast = {"lr": 1e-2, "w0": 30.0, "steps": 100, "decay_frac": 0.5, "lr_final": 0.01, "chunk_size": 2048}
    # MNIST and Fashion-MNIST: one shared initialisation and a gentler, longer fit. The GMN reads such
    # zoos far better (MNIST, 15 epochs: 76.6 % -> 93.9 %; FMNIST 65.7 % -> 81.2 %) while the fit stays
    # at 48.9 / 55.5 dB mean PSNR (benchmarks/results/zoo_recipe_ablation_h100.json).
    gray = {**fast, "init": "shared", "lr": 1e-3, "steps": 600}
    register(DatasetSpec(
        name="mnist", load=lambda data_dir: load_idx(data_dir, "MNIST", MNIST_CLASSES), num_val=5000, split_seed=0,
        inr_hidden=(32, 32), inr_recipe=dict(gray),
        description="MNIST digits, 28x28 grayscale; official files (torchvision raw layout); SIREN 2-32-32-1",
    ))
    register(DatasetSpec(
        name="fmnist", load=lambda data_dir: load_idx(data_dir, "FashionMNIST", FMNIST_CLASSES), num_val=5000,
        split_seed=0, inr_hidden=(32, 32),
        inr_recipe=dict(gray),
        description="Fashion-MNIST, 28x28 grayscale; official files (torchvision raw layout); SIREN 2-32-32-1",
    ))
    register(DatasetSpec(
        name="cifar10", load=load_cifar10, num_val=5000, split_seed=0, inr_hidden=(32, 32),
        inr_recipe={**fast, "lr": 5e-3, "steps": 300},
        description="CIFAR-10, 32x32 RGB; official python batches or archive; SIREN 2-32-32-3",
    ))
    # Zoos of trained CNNs (the Small CNN Zoo's task, Unterthiner et al. 2020): predict each CNN's test
    # accuracy from its weights or from its outputs on probe images. Grayscale inputs, as there
    # (CIFAR-10 converted to gray by wsbench.cnnzoo.prepare_images).
    cnn = [("cnn-mnist", lambda d: load_idx(d, "MNIST", MNIST_CLASSES), "MNIST"),
           ("cnn-fmnist", lambda d: load_idx(d, "FashionMNIST", FMNIST_CLASSES), "Fashion-MNIST"),
           ("cnn-cifar10gs", load_cifar10, "grayscale CIFAR-10")]
    for name, load, what in cnn:
        register(DatasetSpec(
            name=name, load=load, target="scalar", views=("weights", "function"),
            networks=lambda request, name=name, load=load: cnn_networks(request, name, load(request.data_dir)),
            zoo_recipes=cnn_zoo_recipes(), zoo_params=CNN_ZOO_PARAMS,
            description=f"zoo of small CNNs trained on {what} (Small CNN Zoo network, 4,970 weights); "
                        "target: each CNN's test accuracy",
        ))
        # The same zoo with mixed architectures: per CNN 2 to 4 conv layers of 8 to 32 filters (wsbench.cnnzoo's
        # mixed zoos), so only models that read each network's own parameter graph (and function-view models) apply.
        register(DatasetSpec(
            name=f"{name}-mixed", load=load, target="scalar", views=("weights", "function"), mixed_networks=True,
            networks=lambda request, name=name, load=load: cnn_networks(request, f"{name}-mixed",
                                                                        load(request.data_dir), mixed=True),
            zoo_recipes=cnn_zoo_recipes(), zoo_params=CNN_ZOO_PARAMS,
            description=f"zoo of small CNNs of mixed depths (2-4 conv layers) and widths (8-32 filters) trained on "
                        f"{what}; target: each CNN's test accuracy",
        ))
    # A CNN zoo imported from the public Small CNN Zoo release (wsbench zoo import ROOT --layout small-cnn-zoo),
    # named with --recipe zoo=FOLDER: weights only (the release stores no network outputs).
    register(DatasetSpec(
        name="cnn-imported", target="scalar", views=("weights",), networks=imported_cnn_networks,
        zoo_recipes={"cpu": {"zoo": "", "zoo_seed": 0}}, zoo_params={"zoo_seed": CNN_ZOO_PARAMS["zoo_seed"]},
        description="an imported CNN zoo (--recipe zoo=FOLDER from `wsbench zoo import`); target: test accuracy",
    ))
