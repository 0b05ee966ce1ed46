"""The one training loop, for every architecture.

AdamW with linear warm-up and cosine decay; the config's augmentation of the
model's view on training batches (:mod:`wsbench.augment`); BatchNorm statistics
recomputed before every evaluation; model selection on validation accuracy;
test evaluation, per-sample predictions and representations of every named
layer at the selected epoch. Seeded: the same seed, config and device
give the same numbers.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from wsbench.augment import augmenter
from wsbench.errors import WsbenchError
from wsbench.specs import ArchitectureSpec
from wsbench.task import Task


class NonFiniteLoss(RuntimeError):
    """Training diverged: the loss became NaN or infinite."""


@dataclass
class RunResult:
    test_acc: float
    val_acc: float
    best_epoch: int
    history: list  # per epoch: {"epoch", "train_loss", "val_acc"}
    test_ids: np.ndarray  # (n,) sample ids of the test split (where representations are captured)
    labels: np.ndarray  # (n,)
    preds: np.ndarray  # (n,)
    confidence: np.ndarray  # (n,) softmax probability of the prediction
    layers: dict = field(default_factory=dict)  # name -> (n, d) float32, in the model's order
    wall_time_s: float = 0.0


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
def _predict(model, x, rows, batch_size, want_layers=False):
    model.eval()
    logits_all, layers_all = [], {}
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


def train(task: Task, arch: ArchitectureSpec, config: dict, seed: int, device: torch.device,
          on_epoch: Callable[[int, int, dict], None] | None = None) -> RunResult:
    """Train ``arch`` on ``task`` with ``config``; see the module docstring."""
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
    y = torch.from_numpy(task.labels).to(device)
    tr = torch.from_numpy(task.splits["train"]).to(device)
    va = torch.from_numpy(task.splits["val"]).to(device)
    te = torch.from_numpy(task.splits["test"]).to(device)
    if len(tr) == 0 or len(va) == 0 or len(te) == 0:
        raise WsbenchError("every split needs at least one sample; raise --limit")

    epochs, bs = int(config["epochs"]), int(config["batch_size"])
    steps_per_epoch = max(1, math.ceil(len(tr) / bs))
    total, warmup = epochs * steps_per_epoch, int(config["warmup_epochs"]) * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))

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
    for epoch in range(epochs):
        model.train()
        order = tr[torch.randperm(len(tr), generator=gen).to(device)]
        loss_sum = torch.zeros((), device=device)
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            xb = augment(x[idx], gen) if augment else x[idx]
            logits, _ = model(xb)
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
        val_logits, _ = _predict(model, x, va, eval_bs)
        val_acc = float((val_logits.argmax(1) == y[va].cpu()).float().mean())
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_acc": val_acc})
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, history[-1])
    if best_state is not None:
        model.load_state_dict(best_state)
    logits, layers = _predict(model, x, te, eval_bs, want_layers=True)
    probs = logits.softmax(1)
    conf, preds = probs.max(1)
    labels = y[te].cpu().numpy()
    return RunResult(
        test_acc=float((preds.numpy() == labels).mean()), val_acc=best_acc, best_epoch=best_epoch,
        history=history, test_ids=task.ids[task.splits["test"]], labels=labels, preds=preds.numpy(),
        confidence=conf.numpy(), layers=layers, wall_time_s=time.perf_counter() - started)
