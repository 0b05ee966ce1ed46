"""Trained models kept beside the tables, and what can be done with them again.

``--save-models`` (on ``run``, ``grid`` and ``study run``) keeps every run's selected model (the
epoch chosen on validation accuracy, BatchNorm statistics included) as
``<results>/models/dataset=D/arch=A/<run_id>.safetensors``. Its metadata (key ``wsbench``, JSON; the
same JSON sits beside it as ``<run_id>.json``) holds what rebuilds it: run id, dataset, architecture,
seed, ``--limit`` and the resolved config (the INR zoo's recipe included), with the accuracies it was
stored with. :func:`evaluate` rebuilds the task and the model from that alone and scores it on any
split; ``wsbench model eval RUN_ID`` is its command.

Safetensors holds tensors only: loading a model runs no code from the file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wsbench import __version__
from wsbench.errors import WsbenchError
from wsbench.scores import score_all
from wsbench.tables import atomic_write, write_text

MODEL_FORMAT = 1
SPLITS = ("train", "val", "test")


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:
        raise WsbenchError("saving and loading models needs safetensors: pip install safetensors") from None
    return st


def save_model(path: Path, state_dict: dict, row: dict, cell) -> Path:
    """``state_dict`` as safetensors at ``path`` with the run's metadata (and a JSON copy beside it)."""
    st = _safetensors()
    meta = {"format": MODEL_FORMAT, "run_id": row["run_id"], "dataset": cell.dataset, "arch": cell.arch,
            "seed": cell.seed, "limit": row.get("limit"), "view": row.get("view"),
            "config": json.loads(row["config"]), "test_acc": row.get("test_acc"), "val_acc": row.get("val_acc"),
            "test_score": row.get("test_score"), "score": row.get("score"),
            "best_epoch": row.get("best_epoch"), "wsbench_version": __version__,
            "git_commit": row.get("git_commit")}
    # Tensors of their own: safetensors refuses views sharing storage.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    text = json.dumps(meta, sort_keys=True)
    atomic_write(path, lambda tmp: st.save_file(tensors, str(tmp), metadata={"wsbench": text}))
    write_text(Path(path).with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return Path(path)


def find_model(results: Path, run_id: str) -> Path:
    """The saved model of ``run_id`` (a unique prefix is enough) under a results root."""
    base = Path(results) / "models"
    hits = sorted(base.glob(f"dataset=*/arch=*/{run_id}*.safetensors")) if base.exists() else []
    if len(hits) != 1:
        known = sorted(p.stem for p in base.glob("dataset=*/arch=*/*.safetensors")) if base.exists() else []
        what = "no saved model matches" if not hits else f"{len(hits)} saved models match"
        hint = (f"saved: {', '.join(k[:12] for k in known[:10])}" + (" …" if len(known) > 10 else "")
                if known else "train with --save-models to keep models")
        raise WsbenchError(f"{what} run id {run_id!r} under {base}; {hint}")
    return hits[0]


def read_model(path: Path) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of a saved model."""
    st = _safetensors()
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("wsbench", "{}"))
    if meta.get("format") != MODEL_FORMAT:
        raise WsbenchError(f"{path} is not a wsbench model (format {meta.get('format')!r}); save it with "
                           "--save-models")
    return st.load_file(str(path)), meta


@dataclass
class Evaluation:
    """A saved model scored on one split: ``(n,)`` arrays in split order."""

    run_id: str
    dataset: str
    arch: str
    split: str
    accuracy: float  # class targets; NaN for a scalar target (see ``scores``)
    sample_ids: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    confidence: np.ndarray
    layers: dict  # name -> (n, d) float32
    stored_test_acc: float | None
    scores: dict = field(default_factory=dict)  # every score of the task's target on the split, primary first
    stored_test_score: float | None = None  # the run's stored primary test score
    scalar: bool = False  # labels/preds are target values and predictions of a scalar target


def evaluate(results: Path, run_id: str, split: str = "test", registry=None, data_dir: Path | None = None,
             cache_dir: Path | None = None, device: str = "auto", want_layers: bool = False) -> Evaluation:
    """Rebuild a saved model and its task, and score it on ``split``."""
    from wsbench.runner import Runner, Settings
    from wsbench.train import predict, predicted_values

    if split not in SPLITS:
        raise WsbenchError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    state, meta = read_model(find_model(results, run_id))
    if registry is None:
        from wsbench.plugins import registry as default_registry
        registry = default_registry()
    config = meta["config"]
    settings = Settings(out=Path(results), data_dir=data_dir, cache_dir=cache_dir, device=device,
                        limit=meta.get("limit"), recipe=config.get("inr_recipe") or config.get("zoo_recipe"))
    runner = Runner(registry, settings)
    arch = registry.architecture(meta["arch"])
    task = runner.task(meta["dataset"])
    torch.manual_seed(int(meta["seed"]))
    model = arch.build(task.info, config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WsbenchError(f"the saved model of run {meta['run_id']} does not fit {meta['arch']} as the installed "
                           f"code builds it ({str(exc).splitlines()[0]})") from None
    model = model.to(runner.device)
    x = task.inputs(arch.view).to(runner.device)
    rows = torch.from_numpy(task.splits[split]).to(runner.device)
    logits, layers = predict(model, x, rows, int(config["eval_batch_size"]), want_layers=want_layers)
    labels = task.labels[task.splits[split]]
    common = dict(run_id=meta["run_id"], dataset=meta["dataset"], arch=meta["arch"], split=split,
                  sample_ids=task.ids[task.splits[split]], labels=labels, layers=layers,
                  stored_test_acc=meta.get("test_acc"), stored_test_score=meta.get("test_score"))
    if task.info.target == "scalar":
        values = predicted_values(logits, task.info)
        return Evaluation(accuracy=math.nan, preds=values, confidence=np.full(len(values), np.nan, np.float32),
                          scores=score_all("scalar", values, labels), scalar=True, **common)
    conf, preds = logits.softmax(1).max(1)
    acc = float((preds.numpy() == labels).mean())
    return Evaluation(accuracy=acc, preds=preds.numpy(), confidence=conf.numpy(), scores={"accuracy": acc},
                      **common)
