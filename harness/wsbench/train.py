"""The one training loop, for every architecture.

AdamW with linear warm-up and cosine decay; the config's augmentation of the
model's view on training batches (:mod:`wsbench.augment`); BatchNorm statistics
recomputed before every evaluation; model selection on validation accuracy;
test evaluation, per-sample predictions and representations of every named
layer at the selected epoch. Seeded: the same seed, config and device
give the same numbers.

Resuming: with a ``checkpoint`` path the whole training state (model, optimizer, schedule,
random generators, the best state so far, the history) is written there after every epoch
(atomically; tensors and plain values only, read back with ``weights_only=True``). A run
started again with the same path continues after the last finished epoch and gives the very
numbers an uninterrupted run gives.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F

from wsbench.augment import augmenter
from wsbench.errors import WsbenchError
from wsbench.scores import primary, score_all
from wsbench.specs import ArchitectureSpec, TaskInfo
from wsbench.tables import atomic_write
from wsbench.task import Task

CHECKPOINT_FORMAT = 1


class Tracker(Protocol):
    """Receives per-epoch metrics (:mod:`wsbench.tracking`): ``log(metrics, step)`` then ``close()``."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class NonFiniteLoss(RuntimeError):
    """Training diverged: the loss became NaN or infinite."""


@dataclass
class RunResult:
    test_acc: float  # class targets: test accuracy; NaN for a scalar target
    val_acc: float  # class targets: the selected epoch's validation accuracy; NaN for a scalar target
    best_epoch: int
    history: list  # per epoch: {"epoch", "train_loss", "val_acc"} ("val_score" for a scalar target)
    test_ids: np.ndarray  # (n,) sample ids of the test split (where representations are captured)
    labels: np.ndarray  # (n,) the test targets: classes, or values of a scalar target
    preds: np.ndarray  # (n,) predicted classes, or predicted values (in the target's units)
    confidence: np.ndarray  # (n,) softmax probability of the prediction (NaN for a scalar target)
    layers: dict = field(default_factory=dict)  # name -> (n, d) float32, in the model's order
    wall_time_s: float = 0.0
    state_dict: dict = field(default_factory=dict)  # the selected epoch's model state (CPU tensors)
    resumed_from: int = 0  # the epoch a resumed run continued after (0: trained from the start)
    scores: dict = field(default_factory=dict)  # every test score of the task's target (wsbench.scores), primary first
    val_score: float = math.nan  # the selected epoch's validation value of the primary score


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise WsbenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise WsbenchError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
    return dev


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor, rows: torch.Tensor, batch_size: int) -> bool:
    """Recompute every BatchNorm layer's running statistics with the current weights.

    A running average taken during training lags the weights: while the learning rate is high the
    evaluation-mode statistics describe an older model (a width-32 GMN scored 9 % on validation in
    evaluation mode and 32 % with batch statistics after its first epoch on 2,000 MNIST INRs).
    Averaging fresh batch statistics over ``rows`` (training samples, unaugmented) in batches of the
    training size removes the lag ("precise BN", Wu and Johnson 2021). Weights, gradients and random
    draws are untouched, so training itself is the same. Returns whether the model has BatchNorm.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(rows) < 2:  # train-mode BatchNorm needs two samples a batch
        return False
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
        m.train()
    for i in range(0, len(rows) - 1, batch_size):  # a last batch of one sample is left out
        model(x[rows[i:i + batch_size]])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
        m.eval()
    return True


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, rows: torch.Tensor, batch_size: int,
            want_layers: bool = False) -> tuple[torch.Tensor, dict]:
    """Evaluation-mode logits ``(n, classes)`` (CPU, float32) of ``x[rows]`` in batches, and with
    ``want_layers`` every named layer's representation ``{name: (n, d) float32 numpy}``."""
    model.eval()
    logits_all: list[torch.Tensor] = []
    layers_all: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(rows), batch_size):
        idx = rows[i:i + batch_size]
        logits, layers = model(x[idx])
        logits_all.append(logits.float().cpu())
        if want_layers:
            for name, rep in layers.items():
                layers_all.setdefault(name, []).append(rep.reshape(rep.shape[0], -1).float().cpu())
    logits = torch.cat(logits_all) if logits_all else torch.zeros(0)
    layers = {k: torch.cat(v).numpy() for k, v in layers_all.items()}
    return logits, layers


def predicted_values(logits: torch.Tensor, info: TaskInfo) -> np.ndarray:
    """A scalar target's predictions in its own units: the model's first output, un-standardised."""
    return logits.reshape(len(logits), -1)[:, 0].double().numpy() * info.target_std + info.target_mean


def _rng_state(gen: torch.Generator, device: torch.device) -> dict:
    np_state = cast(tuple, np.random.get_state())  # ("MT19937", keys, pos, has_gauss, cached_gaussian)
    state = {"torch": torch.get_rng_state(), "gen": gen.get_state(),
             "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
             "numpy_pos": int(np_state[2]), "numpy_has_gauss": int(np_state[3]),
             "numpy_gauss": float(np_state[4])}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["gen"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _cpu_state(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _fits(model: torch.nn.Module, saved) -> bool:
    """Whether ``saved`` has exactly the model's state keys, shapes and dtypes."""
    mine = model.state_dict()
    if not isinstance(saved, dict) or set(saved) != set(mine):
        return False
    return all(saved[k].shape == v.shape and saved[k].dtype == v.dtype for k, v in mine.items())


def save_checkpoint(path: Path, state: dict) -> None:
    """``state`` (tensors and plain values) at ``path``, atomically."""
    for attempt in range(3):
        try:
            atomic_write(path, lambda tmp: torch.save(state, tmp))
            return
        except FileNotFoundError:  # another run removed the empty parent folder meanwhile: make it again
            if attempt == 2:
                raise


def load_checkpoint(path: Path, device: torch.device) -> dict | None:
    """The training state saved at ``path``, or None when there is none or it cannot be read."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a damaged or foreign file: train from the start
        warnings.warn(f"checkpoint {path} could not be read ({type(exc).__name__}: {exc}); training from epoch 0",
                      stacklevel=2)
        return None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        return None
    return state


def make_optimizer(model: torch.nn.Module, config: dict) -> torch.optim.AdamW:
    """The training loop's AdamW (``config``'s lr and weight_decay); also timed by benchmarks/gmn_throughput.py."""
    params = list(model.parameters())
    # Fused on CUDA: the foreach step cost 2 ms, 15 % of a GMN training step on an H200. On CPU as before.
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=float(config["lr"]), weight_decay=float(config["weight_decay"]),
                             fused=fused or None)


def train(task: Task, arch: ArchitectureSpec, config: dict, seed: int, device: torch.device,
          on_epoch: Callable[[int, int, dict], None] | None = None, checkpoint: Path | None = None,
          tracker: Tracker | None = None) -> RunResult:
    """Train ``arch`` on ``task`` with ``config``; see the module docstring.

    ``on_epoch(epoch, epochs, entry)`` gets each epoch's history entry plus ``seconds``, the epoch's
    wall time. ``checkpoint``: where to keep the training state after every epoch (and to resume
    from, when it holds one); ``tracker`` receives every epoch's metrics.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if device.type == "cuda":
        # cuDNN may otherwise pick non-deterministic convolution kernels (the published CNNs' accuracies
        # moved in the 4th digit between two runs of one config); the same seed must give the same numbers.
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    model = arch.build(task.info, config)
    if not isinstance(model, torch.nn.Module):
        raise WsbenchError(f"architecture {arch.name!r} built a {type(model).__name__}, not a torch.nn.Module")
    model = model.to(device)
    x = task.inputs(arch.view).to(device)
    scalar = task.info.target == "scalar"
    if scalar:  # trained on the standardised target, scored in its own units
        y = torch.from_numpy((task.labels - task.info.target_mean) / task.info.target_std).float().to(device)
    else:
        y = torch.from_numpy(task.labels).to(device)
    score = primary(task.info.target)

    def val_value(out: torch.Tensor, rows: torch.Tensor) -> float:
        """The primary score of outputs ``out`` on ``rows`` (higher is better for the selection)."""
        if not scalar:
            return float((out.argmax(1) == y[rows].cpu()).float().mean())
        value = score.fn(out[:, 0].double().numpy(), y[rows].cpu().double().numpy())
        return value if score.higher_is_better else -value
    tr = torch.from_numpy(task.splits["train"]).to(device)
    va = torch.from_numpy(task.splits["val"]).to(device)
    te = torch.from_numpy(task.splits["test"]).to(device)
    if len(tr) == 0 or len(va) == 0 or len(te) == 0:
        raise WsbenchError("every split needs at least one sample; raise --limit")

    epochs, bs = int(config["epochs"]), int(config["batch_size"])
    steps_per_epoch = max(1, math.ceil(len(tr) / bs))
    total, warmup = epochs * steps_per_epoch, int(config["warmup_epochs"]) * steps_per_epoch
    opt = make_optimizer(model, config)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    gen = torch.Generator().manual_seed(seed)
    augment = augmenter(config.get("augment", "none"), arch.view, task.info.inr)
    best_acc, best_epoch, best_state, history = -1.0, -1, None, []
    eval_bs = int(config["eval_batch_size"])
    # A fixed random subset of the training split for BatchNorm statistics (its own generator, so the
    # training draws are the same with or without it).
    calib_gen = torch.Generator().manual_seed(seed + 1)
    calib = tr[torch.randperm(len(tr), generator=calib_gen)[:int(config["bn_recalibrate"])].to(device)]
    first = 0
    state = load_checkpoint(checkpoint, device) if checkpoint is not None else None
    if state is not None and not _fits(model, state.get("model")):
        # Another model under the same run id (the code changed): nothing of it is loaded.
        warnings.warn(f"checkpoint {checkpoint} does not fit the model; training from epoch 0", stacklevel=2)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], gen, device)
        first = int(state["epoch"])
        best_acc, best_epoch, history = float(state["best_acc"]), int(state["best_epoch"]), list(state["history"])
        best_state = state["best_state"] or None
    for epoch in range(first, epochs):
        epoch_started = time.perf_counter()
        model.train()
        order = tr[torch.randperm(len(tr), generator=gen).to(device)]
        loss_sum = torch.zeros((), device=device)
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            xb = augment(x[idx], gen) if augment else x[idx]
            logits, _ = model(xb)
            if scalar:
                loss = F.mse_loss(logits.reshape(len(idx), -1)[:, 0], y[idx])
            else:
                loss = F.cross_entropy(logits, y[idx], label_smoothing=float(config["label_smoothing"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(config["grad_clip"]))
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(idx)
        train_loss = float(loss_sum) / len(order)
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"loss became {train_loss} in epoch {epoch + 1}; lower lr or enable grad_clip")
        recalibrate_batchnorm(model, x, calib, bs)
        val_logits, _ = predict(model, x, va, eval_bs)
        val_acc = val_value(val_logits, va)
        if not math.isfinite(val_acc):  # e.g. constant predictions give no tau: never better than a real value
            val_acc = -math.inf
        history.append({"epoch": epoch + 1, "train_loss": train_loss,
                        **({"val_score": val_acc} if scalar else {"val_acc": val_acc})})
        if val_acc > best_acc or best_state is None:
            best_acc, best_epoch = val_acc, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        if checkpoint is not None and epoch + 1 < epochs:
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state(gen, device),
                "best_acc": best_acc, "best_epoch": best_epoch, "best_state": best_state or {},
                "history": history})
        seconds = time.perf_counter() - epoch_started
        if tracker is not None:
            tracker.log({"train/loss": train_loss, f"val/{'score' if scalar else 'acc'}": val_acc,
                         "lr": opt.param_groups[0]["lr"],
                         "epoch_seconds": seconds}, epoch + 1)
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, {**history[-1], "seconds": seconds})
    if best_state is not None:
        model.load_state_dict(best_state)
    logits, layers = predict(model, x, te, eval_bs, want_layers=True)
    test_ids = task.ids[task.splits["test"]]
    common = dict(best_epoch=best_epoch, history=history, test_ids=test_ids, layers=layers,
                  state_dict=_cpu_state(model.state_dict()), resumed_from=first)
    if scalar:
        values = predicted_values(logits, task.info)
        targets = task.labels[task.splits["test"]].astype(np.float64)
        scores = score_all("scalar", values, targets)
        return RunResult(test_acc=math.nan, val_acc=math.nan, labels=targets, preds=values,
                         confidence=np.full(len(values), np.nan, np.float32), scores=scores,
                         val_score=best_acc if score.higher_is_better else -best_acc,
                         wall_time_s=time.perf_counter() - started, **common)
    probs = logits.softmax(1)
    conf, preds = probs.max(1)
    labels = y[te].cpu().numpy()
    acc = float((preds.numpy() == labels).mean())
    return RunResult(
        test_acc=acc, val_acc=best_acc, labels=labels, preds=preds.numpy(), confidence=conf.numpy(),
        scores={"accuracy": acc}, val_score=best_acc, wall_time_s=time.perf_counter() - started, **common)
