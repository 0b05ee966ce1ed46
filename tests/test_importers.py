"""Importing DWSNets and NFN zoos: tiny files built here in those layouts, loaded weights-only."""
import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wsbench.cli import app
from wsbench.errors import WsbenchError
from wsbench.importers import import_zoo
from wsbench.specs import SirenSpec
from wsbench.weights import unflatten


def _state(seed: int, dims=(2, 4, 4, 1), label=None) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k in range(len(dims) - 1):
        sd[f"seq.{k}.weight"] = torch.randn(dims[k + 1], dims[k], generator=g)
        sd[f"seq.{k}.bias"] = torch.randn(dims[k + 1], generator=g)
    if label is not None:
        sd["label"] = label
    return sd


def _flat(sd: dict) -> np.ndarray:
    return torch.cat([v.reshape(-1) for k, v in sd.items() if k != "label"]).numpy()


def _dwsnets_mnist(root, n_train=6, n_test=3):
    """``mnist_png_{training|testing}_{label}_{index}/checkpoints/permanent_ckpt-0.pth``."""
    made = []
    for split, n in (("training", n_train), ("testing", n_test)):
        for i in range(n):
            label, index = (i * 3) % 10, 100 + i
            d = root / f"mnist_png_{split}_{label}_{index}" / "checkpoints"
            d.mkdir(parents=True)
            sd = _state(len(made))
            torch.save(sd, d / "permanent_ckpt-0.pth")
            made.append((split, label, index, sd))
    return made


def test_dwsnets_mnist_layout_labels_splits_ids_from_paths(tmp_path):
    made = _dwsnets_mnist(tmp_path / "mnist-inrs")
    zoo = import_zoo(tmp_path / "mnist-inrs", "dwsnets", tmp_path / "cache", num_val=2)
    m = zoo.manifest
    assert m["count"] == 9 and m["spec"]["hidden"] == [4, 4] and m["num_params"] == SirenSpec(hidden=(4, 4)).num_params
    ids = list(zoo.ids)
    labels = np.load(zoo.path / "labels.npy")
    for split, label, index, sd in made:
        sid = index + (0 if split == "training" else 60_000)
        row = ids.index(sid)
        assert labels[row] == label
        assert np.array_equal(zoo.weights[row], _flat(sd))  # wsbench's layout: W (out, in) row-major, then b
    splits = json.loads((zoo.path / "splits.json").read_text())
    assert len(splits["val"]) == 2 and len(splits["train"]) == 4 and sorted(splits["test"]) == [60100, 60101, 60102]
    assert np.isnan(zoo.psnr).all() and m["psnr"] is None
    # unflatten gives back the state dict's tensors
    w, b = unflatten(torch.from_numpy(np.array(zoo.weights[:1])), SirenSpec(hidden=(4, 4)))[0]
    assert w.shape == (1, 4, 2) and b.shape == (1, 4)
    again = import_zoo(tmp_path / "mnist-inrs", "dwsnets", tmp_path / "cache", num_val=2)
    assert again.path == zoo.path


def test_dwsnets_splits_file_with_foreign_paths_and_labels_in_state_dicts(tmp_path):
    root = tmp_path / "fmnist-inrs"
    table = {}
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        for i in range(n):
            rel = f"{split}/inr_{i:05d}/model.pth"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            torch.save(_state(i, label=torch.tensor(i % 10)), root / rel)
            table.setdefault(split, {"path": []})["path"].append(f"/home/someone/data/fmnist-inrs/{rel}")
    (root / "fmnist_splits.json").write_text(json.dumps(table))
    zoo = import_zoo(root, "dwsnets", tmp_path / "cache")
    labels = np.load(zoo.path / "labels.npy")
    assert zoo.manifest["splits"] == {"train": 4, "val": 2, "test": 3}
    assert list(labels) == [0, 1, 2, 3, 0, 1, 0, 1, 2]


def test_nfn_layout_splits_at_45k_50k_and_skips_augmented_copies(tmp_path):
    root = tmp_path / "siren_mnist"
    idx_label = {3: 1, 44_999: 7, 45_000: 2, 49_999: 2, 50_000: 9, 61_234: 0}
    for idx, label in idx_label.items():
        d = root / f"randinit_smaller_{label}s"
        d.mkdir(parents=True, exist_ok=True)
        torch.save(_state(idx, dims=(2, 8, 3)), d / f"net{idx}.pth")
    aug = root / "randinit_smaller_aug0_1s"
    aug.mkdir()
    torch.save(_state(99, dims=(2, 8, 3)), aug / "net3.pth")
    zoo = import_zoo(root, "nfn", tmp_path / "cache")
    assert list(zoo.ids) == sorted(idx_label)
    assert list(np.load(zoo.path / "labels.npy")) == [idx_label[i] for i in sorted(idx_label)]
    splits = json.loads((zoo.path / "splits.json").read_text())
    assert splits == {"train": [3, 44_999], "val": [45_000, 49_999], "test": [50_000, 61_234]}
    assert zoo.manifest["spec"]["out_dim"] == 3
    assert np.array_equal(zoo.weights[0], _flat(_state(3, dims=(2, 8, 3))))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_pth_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "z" / "randinit_smaller_1s"
    d.mkdir(parents=True)
    torch.save({"seq.0.weight": _Evil()}, d / "net0.pth")
    with pytest.raises(WsbenchError) as err:
        import_zoo(tmp_path / "z", "nfn", tmp_path / "cache")
    assert "net0.pth" in str(err.value) and "weights-only" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "pwned.txt").exists()


def test_mixed_architectures_and_bad_inputs_are_one_line_errors(tmp_path):
    d = tmp_path / "z" / "randinit_smaller_1s"
    d.mkdir(parents=True)
    torch.save(_state(0), d / "net0.pth")
    torch.save(_state(1, dims=(2, 5, 1)), d / "net1.pth")
    with pytest.raises(WsbenchError, match="a zoo needs one architecture"):
        import_zoo(tmp_path / "z", "nfn", tmp_path / "cache")
    with pytest.raises(WsbenchError, match="known layouts: dwsnets, nfn"):
        import_zoo(tmp_path / "z", "dws", tmp_path / "cache")
    with pytest.raises(WsbenchError, match="no .pth files"):
        (tmp_path / "empty").mkdir()
        import_zoo(tmp_path / "empty", "dwsnets", tmp_path / "cache")


def test_cli_import_then_info(tmp_path):
    _dwsnets_mnist(tmp_path / "mnist-inrs", n_train=3, n_test=2)
    cache = str(tmp_path / "cache")
    res = CliRunner().invoke(app, ["inrs", "import", str(tmp_path / "mnist-inrs"), "--layout", "dwsnets",
                                   "--name", "dws-mnist", "--cache-dir", cache])
    assert res.exit_code == 0, res.output
    assert "imported 5 INRs (2-4-4-1" in res.output
    res = CliRunner().invoke(app, ["inrs", "info", "--cache-dir", cache])
    assert res.exit_code == 0 and "zoos in " in res.output
    (listed,) = json.loads(CliRunner().invoke(app, ["inrs", "info", "--cache-dir", cache, "--json"]).output)
    assert listed["dataset"] == "dws-mnist" and listed["recipe"]["imported"] == "dwsnets"
    key = listed["key"]
    res = CliRunner().invoke(app, ["inrs", "info", key[:8], "--cache-dir", cache])
    assert json.loads(res.output)["source"]["layout"] == "dwsnets"
