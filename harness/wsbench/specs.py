"""Spec dataclasses that plugins hand to the host's ``register`` callback.

The host fills in ``distribution`` and ``version`` from the entry point that
registered the spec, so plugin authors never set them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

VIEWS = ("weights", "images")


@dataclass(frozen=True)
class SirenSpec:
    """An MLP-shaped SIREN ``in_dim -> hidden... -> out_dim`` with sine activations."""

    in_dim: int = 2
    hidden: tuple = (32, 32)
    out_dim: int = 1
    w0: float = 30.0

    @property
    def dims(self) -> list[int]:
        return [self.in_dim, *self.hidden, self.out_dim]

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """``(out, in)`` of every linear layer."""
        d = self.dims
        return [(d[i + 1], d[i]) for i in range(len(d) - 1)]

    @property
    def num_params(self) -> int:
        return sum(o * i + o for o, i in self.layer_shapes)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


@dataclass
class TaskInfo:
    """What an architecture's builder sees about the task."""

    dataset: str
    num_classes: int
    image_shape: tuple  # (C, H, W)
    inr: SirenSpec
    # Training-split statistics, so models can normalise their inputs.
    image_mean: np.ndarray = field(repr=False, default=None)  # (C,)
    image_std: np.ndarray = field(repr=False, default=None)  # (C,)
    weight_mean: np.ndarray = field(repr=False, default=None)  # (P,)
    weight_std: np.ndarray = field(repr=False, default=None)  # (P,)

    @property
    def weight_dim(self) -> int:
        return self.inr.num_params


@dataclass
class ArchitectureSpec:
    """An architecture: builds an ``nn.Module`` that reads one view of a task.

    ``build(info, config)`` gets a :class:`wsbench.task.TaskInfo` and the resolved
    config (a flat dict) and returns a module whose ``forward(x)`` returns
    ``(logits (B, classes), layers)``, where ``layers`` is an ordered dict of
    named representations, each ``(B, d)``.
    """

    name: str
    view: str
    build: Callable[..., Any]
    description: str = ""
    # Hyperparameters as plain values; ``dataset_defaults[name]`` overrides them per dataset.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    dataset_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    kind: str = "architecture"
    distribution: str = ""
    version: str = ""

    def __post_init__(self):
        if self.view not in VIEWS:
            raise ValueError(f"architecture {self.name!r}: view must be one of {VIEWS}, got {self.view!r}")


@dataclass
class ImageData:
    """Images of a dataset in its official train/test split.

    ``train_images``/``test_images`` are ``(N, C, H, W)`` uint8; labels ``(N,)`` int64.
    ``checksums`` maps source file names to digests (recorded in the zoo manifest).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: Sequence[str]
    checksums: Mapping[str, str] = field(default_factory=dict)


@dataclass
class DatasetSpec:
    """A dataset: official images plus the INR spec and fitting recipe of its zoo.

    ``load(data_dir)`` returns :class:`ImageData`, reading (or downloading into)
    ``data_dir``. The harness splits, fits the INR zoo and caches it.
    """

    name: str
    load: Callable[..., ImageData]
    description: str = ""
    num_val: int = 0
    split_seed: int = 0
    inr_hidden: Sequence[int] = (32, 32)
    inr_recipe: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "dataset"
    distribution: str = ""
    version: str = ""


@dataclass
class GridRequest:
    """What the harness asks of a metric's batched ``grid`` path (see :class:`MetricSpec`).

    ``pairs`` (Q, 2) int64: the wanted ``(r, s)`` indices into the representation list.
    ``weights`` (n, B) float64 or None: bootstrap sample counts, one resample per column
    (each column sums to n); a resample is a reweighting of the n samples.
    ``perms`` (P, n) int64 or None: null draw ``p`` compares ``reps[r]`` with ``reps[s][perms[p]]``.
    ``max_bytes``: budget for temporaries; chunk to stay under it.
    ``progress(fraction)``: optional, called with the fraction of the work done.
    """

    pairs: Any
    weights: Any = None
    perms: Any = None
    max_bytes: int = 2 << 30
    progress: Callable[[float], None] | None = None


@dataclass
class GridResult:
    """``values`` (Q,), ``boot`` (B, Q) or None, ``null`` (P, Q) or None, in ``pairs`` order."""

    values: Any
    boot: Any = None
    null: Any = None


@dataclass
class MetricSpec:
    """A representation similarity measure.

    ``fn(x, y)`` takes two float64 tensors ``(n, d1)`` and ``(n, d2)`` whose rows
    are the same samples, and returns a float. That is all a metric needs: the
    harness then loops over pairs, resamples and permutations itself (slow path).

    ``grid(reps, request)`` is an optional fast path: ``reps`` is a list of M
    float64 tensors ``(n, d_i)`` on one device, ``request`` a :class:`GridRequest`;
    it returns a :class:`GridResult` whose values equal ``fn`` on the same pairs.
    ``invariances`` names transformations of one input that leave the value
    unchanged, checked by every similarity job: ``orthogonal``,
    ``isotropic-scaling``, ``translation``.
    """

    name: str
    fn: Callable[..., float]
    description: str = ""
    estimator: str = ""
    higher_is_better: bool = True
    symmetric: bool = True
    invariances: Sequence[str] = ()
    grid: Callable[..., GridResult] | None = None
    kind: str = "metric"
    distribution: str = ""
    version: str = ""
