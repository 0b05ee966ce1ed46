"""Experiment tracking: every epoch's metrics to TensorBoard or Weights & Biases (off by default).

``--track tensorboard`` writes one TensorBoard run per cell under
``<results>/tensorboard/<dataset>/<arch>/seed<seed>-<run_id>`` (``--track tensorboard:DIR`` puts
the tree under DIR instead); ``--track wandb[:PROJECT]`` logs to a W&B run named the same way
(project ``wsbench`` by default; W&B's own settings and login apply). Logged per epoch:
``train/loss``, ``val/acc``, ``lr``, ``epoch_seconds``; at the end ``test/acc`` at the selected epoch.
Neither library is a dependency: ``pip install 'wsbench[tracking]'`` installs TensorBoard.
"""
from __future__ import annotations

from pathlib import Path

from wsbench.errors import WsbenchError

BACKENDS = ("tensorboard", "wandb")


def parse_track(text: str | None) -> tuple[str, str | None] | None:
    """``"tensorboard"`` -> ("tensorboard", None); ``"tensorboard:runs/tb"`` -> ("tensorboard", "runs/tb")."""
    if not text or text == "none":
        return None
    backend, _, where = text.partition(":")
    if backend not in BACKENDS:
        raise WsbenchError(f"--track {text!r}: unknown tracker {backend!r}; known: {', '.join(BACKENDS)} "
                           "(tensorboard[:DIR], wandb[:PROJECT])")
    return backend, (where or None)


class TensorBoardTracker:
    """Scalars to a TensorBoard event file in ``log_dir``."""

    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise WsbenchError("--track tensorboard needs TensorBoard: pip install 'wsbench[tracking]'") from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbTracker:
    """Metrics to a Weights & Biases run."""

    def __init__(self, project: str, name: str, config: dict, group: str):
        try:
            import wandb
        except ImportError:
            raise WsbenchError("--track wandb needs the W&B client: pip install wandb") from None
        self.run = wandb.init(project=project, name=name, config=config, group=group, reinit=True)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def make_tracker(track: str, results: Path, dataset: str, arch: str, seed: int, run_id: str, config: dict):
    """The tracker ``--track`` names for one run, or None when tracking is off."""
    parsed = parse_track(track)
    if parsed is None:
        return None
    backend, where = parsed
    name = f"seed{seed}-{run_id}"
    if backend == "tensorboard":
        root = Path(where) if where else Path(results) / "tensorboard"
        return TensorBoardTracker(root / dataset / arch / name)
    return WandbTracker(where or "wsbench", f"{dataset}/{arch}/{name}", config, group=f"{dataset}/{arch}")
