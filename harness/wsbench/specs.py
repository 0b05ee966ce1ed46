"""The plugin contract's objects: every value a plugin builds or receives.

A plugin builds :class:`ArchitectureSpec`, :class:`DatasetSpec` and :class:`MetricSpec` objects (an
architecture's config keys typed with :class:`Param`) and
hands them to the ``register`` callback of its hooks (:mod:`wsbench.hookspecs`); the harness hands
back :class:`TaskInfo` (with its :class:`SirenSpec`) to an architecture's ``build``, expects
:class:`ImageData` from a dataset's ``load``, and passes :class:`BatchRequest` to a metric's
``batched`` path, which returns a :class:`BatchResult`. All of them are importable from ``wsbench``.

The host fills in ``distribution`` and ``version`` from the plugin that registered the spec, so
plugin authors never set them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# The inputs an architecture can read: a network's parameters, the images INRs encode, or a network's
# outputs on fixed probe inputs (its function).
VIEWS = ("weights", "images", "function")
# What a dataset's samples are labelled with: an integer class, or a real number (e.g. a CNN's test
# accuracy); the scores of each are in :mod:`wsbench.scores`.
TARGETS = ("class", "scalar")
# The kinds of 95 % interval over samples a similarity value can have (``MetricSpec.interval``; stored on
# every similarity row as ``ci_kind``): how the samples are resampled, and what the interval covers.
CI_KINDS = {
    "half-sample": ("n/2 of the n samples drawn without replacement (no sample twice), their percentile interval "
                    "around the value, rescaled to n and corrected for an O(1/n) bias: covers the population "
                    "value of an estimator biased by O(1/n); valid for any metric"),
    "expected-at-n": ("the half-samples' percentile interval around the value, rescaled to n, without the bias "
                      "correction: covers the metric's expected value at this n, not the population value of a "
                      "metric biased by more than O(1/n)"),
    "percentile": ("bootstrap over samples (with replacement; the metric keeps copies of a sample apart), "
                   "95 % percentile interval; covers the population value of an estimator without bias"),
    "per-sample-percentile": ("bootstrap of per-sample scores the metric computes once from all n samples "
                              "(mknn: each sample's neighbour overlap, with the neighbour sets of all n held fixed), "
                              "95 % percentile interval; it ignores that neighbouring samples' scores move "
                              "together, so it is narrower than the value's spread and covers the expected value "
                              "at n less often than 95 % (benchmarks/results/coverage.json)"),
}
BOOTSTRAP_KINDS = ("percentile", "per-sample-percentile")  # kinds computed from bootstrap counts (request.weights)


@dataclass(frozen=True)
class Param:
    """The type and range of one config key, checked (and converted) before any work.

    ``ArchitectureSpec.params`` maps keys to these. A key without one is typed by its default:
    ``int`` (rejects ``1.5``; ``2.0`` becomes ``2``), ``float`` (ints become floats; NaN and
    infinities are rejected), ``bool``, ``str``, or a list (of the type of its items); a ``None``
    default accepts anything. The harness declares the training keys (``epochs >= 1``,
    ``batch_size >= 1``, ``lr > 0``, ``0 <= dropout < 1``, ``grad_clip >= 0`` or null, ...;
    ``wsbench.config.COMMON_PARAMS``); a plugin's own ``Param`` for a key wins. A value outside its
    type or range is an error naming the key, the value, what was expected and the architecture,
    e.g. ``Param(int, ge=1)``, ``Param(float, gt=0, le=1)``, ``Param(str, choices=("sum", "mean"))``,
    ``Param(float, ge=0, none=True)`` (null allowed, meaning off), ``Param(list, item=int)``.
    """

    type: Any = object  # int, float, bool, str, list, or object (anything)
    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value <= le
    lt: float | None = None  # value < lt
    choices: Sequence[Any] | None = None  # the only values allowed
    none: bool = False  # whether None (TOML/JSON null) is allowed
    item: Any = None  # a list's item type (int, float, bool or str)
    finite: bool = True  # floats: reject NaN and infinities
    help: str = ""  # one line: what the key does


@dataclass(frozen=True)
class SirenSpec:
    """An MLP-shaped SIREN ``in_dim -> hidden... -> out_dim`` with sine activations.

    Every INR of a zoo follows one spec; one INR is a row of ``num_params`` float32 numbers in the
    flat layout of :mod:`wsbench.weights` (per layer ``W (out, in)`` row-major, then ``b (out,)``).
    """

    in_dim: int = 2  # coordinate dimensions: (y, x) in [-1, 1]^2
    hidden: tuple = (32, 32)  # widths of the hidden (sine) layers
    out_dim: int = 1  # image channels: 1 grayscale, 3 RGB
    w0: float = 30.0  # frequency factor: hidden layer k computes sin(w0 (W_k h + b_k))

    @property
    def dims(self) -> list[int]:
        """Widths of every layer of neurons: ``[in_dim, *hidden, out_dim]``."""
        return [self.in_dim, *self.hidden, self.out_dim]

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """``(out, in)`` of every linear layer."""
        d = self.dims
        return [(d[i + 1], d[i]) for i in range(len(d) - 1)]

    @property
    def num_params(self) -> int:
        """``P``: weights and biases of every layer, the width of the flat layout."""
        return sum(o * i + o for o, i in self.layer_shapes)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


@dataclass(frozen=True)
class MixedNetworks:
    """The layout of the ``weights`` view of a zoo whose networks differ in architecture.

    ``layouts`` are the distinct layouts of its networks (each with ``layer_shapes`` and
    ``num_params``, e.g. :class:`wsbench.cnnzoo.CnnSpec`). A row of the view is ``num_params`` =
    ``1 + max_params`` float32 numbers: first the index of the network's layout in ``layouts``
    (0.0, 1.0, ...), then its parameters in that layout's flat order, zero-padded to ``max_params``.
    :meth:`split` takes a batch of rows apart. Architectures that need one shared layout do not run
    on such a zoo (``ArchitectureSpec.mixed_networks``).
    """

    layouts: tuple

    @property
    def max_params(self) -> int:
        """The largest layout's ``num_params``: the padded width of a network's parameters."""
        return max(int(s.num_params) for s in self.layouts)

    @property
    def num_params(self) -> int:
        """The width of a row of the ``weights`` view: the layout column, then the padded parameters."""
        return 1 + self.max_params

    def split(self, x: Any) -> list[tuple[int, Any, Any]]:
        """Rows ``x (B, num_params)`` (a torch tensor) -> ``[(k, rows (B_k,) int64, params (B_k, P_k)), ...]``,
        one entry per layout ``k`` present, in layout order: the row positions in ``x`` and their parameters."""
        index = x[:, 0].round().long()
        out = []
        for k in sorted(int(v) for v in index.unique().tolist()):
            if not 0 <= k < len(self.layouts):
                raise ValueError(f"layout column holds {k}; this zoo has {len(self.layouts)} layouts")
            rows = (index == k).nonzero().flatten()
            out.append((k, rows, x[rows, 1:1 + int(self.layouts[k].num_params)]))
        return out


@dataclass
class TaskInfo:
    """What an architecture's ``build(info, config)`` sees about the task.

    The statistics are those of the training split, so a model can normalise its input the same way
    for every split. ``weight_mean``/``weight_std`` matter: the ``weights`` view arrives raw (see
    :class:`ArchitectureSpec`), and a model that does not standardise it typically trains at chance.

    ``target`` says what the model predicts: ``"class"`` (``num_classes`` logits) or ``"scalar"``
    (one value, ``num_classes == 1``; the harness trains it on the target standardised with
    ``target_mean``/``target_std`` and scores it in the target's units). ``network`` is the layout of
    the ``weights`` view: the :class:`SirenSpec` of an INR zoo (also ``inr``), or another spec with
    ``layer_shapes`` and ``num_params`` (e.g. :class:`wsbench.cnnzoo.CnnSpec` for a CNN zoo, where
    ``inr`` is None; a zoo of SIRENs keeps ``inr``), or a :class:`MixedNetworks` when the zoo's
    networks differ in architecture (its rows then carry their layout; ``layout_stats`` has the
    training statistics per layout).
    """

    dataset: str  # name of the dataset, as registered (``"shapes"``, ``"mnist"``, ...)
    num_classes: int  # the output width: labels are 0 .. num_classes - 1; 1 for a scalar target
    image_shape: tuple  # (C, H, W) of one image of the ``images`` view; () when the task has none
    inr: SirenSpec | None  # the SIREN every INR of the zoo follows; None for zoos of other networks
    # Training-split statistics, so models can normalise their inputs.
    image_mean: np.ndarray | None = field(repr=False, default=None)  # (C,) float32, pixels in [0, 1]; already applied
    image_std: np.ndarray | None = field(repr=False, default=None)  # (C,) float32; already applied to ``images``
    weight_mean: np.ndarray | None = field(repr=False, default=None)  # (P,) float32, per flat weight coordinate
    weight_std: np.ndarray | None = field(repr=False, default=None)  # (P,) float32, > 0 (1e-6 added)
    target: str = "class"  # "class" or "scalar" (:data:`TARGETS`)
    network: Any = None  # layout of the ``weights`` view; defaults to ``inr``
    views: tuple = ("weights", "images")  # the views the task offers
    function_shape: tuple = ()  # shape of one sample's ``function`` view, e.g. (probes, outputs)
    target_mean: float = 0.0  # training-split mean and standard deviation of a scalar target
    target_std: float = 1.0
    # Training-split mean and standard deviation of every feature of the ``function`` view (flattened).
    function_mean: np.ndarray | None = field(repr=False, default=None)
    function_std: np.ndarray | None = field(repr=False, default=None)
    # A zoo of mixed architectures (``network`` a :class:`MixedNetworks`): per layout of ``network.layouts``,
    # ``(rows, weight_mean (P_k,), weight_std (P_k,))`` over its training-split networks (``rows`` may be 0,
    # then mean 0 and std 1). Empty otherwise.
    layout_stats: tuple = field(repr=False, default=())

    def __post_init__(self):
        if self.network is None:
            self.network = self.inr

    @property
    def weight_dim(self) -> int:
        """``P``, the width of the ``weights`` view: ``network.num_params``."""
        return int(self.network.num_params)


@dataclass
class ArchitectureSpec:
    """An architecture: builds an ``nn.Module`` that reads one view of a task.

    ``build(info, config)`` gets a :class:`TaskInfo` and the resolved config (a flat dict of
    plain values: the harness's training defaults, then ``defaults``, then
    ``dataset_defaults[info.dataset]``, then the user's ``--set``) and returns a module whose
    ``forward(x)`` returns ``(logits (B, num_classes), layers)``, where ``layers`` is an ordered
    dict of named representations, each ``(B, d)`` (the harness flattens anything wider). See
    :func:`wsbench.hookspecs.register_architectures` for the views and determinism.
    """

    name: str  # unique among architectures; what ``--arch`` takes
    # The input it reads: "weights" (B, P) raw flat network weights, "images" (B, C, H, W), or
    # "function" (B, *info.function_shape): a network's outputs on the zoo's fixed probe inputs.
    view: str
    build: Callable[..., Any]  # build(info: TaskInfo, config: dict) -> torch.nn.Module
    description: str = ""  # one line, shown by ``wsbench plugins``
    # Hyperparameters as plain values (numbers, strings, booleans, lists of them): they are hashed
    # into the run id and stored, and ``--set key=value`` overrides them. Training keys (``epochs``,
    # ``batch_size``, ``lr``, ``weight_decay``, ``warmup_epochs``, ``label_smoothing``, ``grad_clip``,
    # ``augment``, ...; see ``wsbench.config.TRAIN_DEFAULTS``) may be set here too.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Per dataset name, overrides of ``defaults`` (e.g. ``{"cifar10": {"epochs": 30}}``), with keys of
    # ``defaults`` or the training defaults.
    dataset_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Optional: key -> Param, the type and range of a config key (see :class:`Param`); keys without one
    # are typed by their default, the training keys by the harness. Checked before any zoo or training
    # work, so a bad ``--set`` fails at once with the key, value and expected range.
    params: Mapping[str, Param] = field(default_factory=dict)
    # Whether it reads zoos whose networks differ in architecture (``TaskInfo.network`` a :class:`MixedNetworks`,
    # ``DatasetSpec.mixed_networks``). A weights-view architecture that needs one shared layout (a flat
    # vector of fixed meaning per coordinate) leaves it False and is left out of such zoos with a note.
    mixed_networks: bool = False
    kind: str = "architecture"  # fixed: the kind this spec registers as
    distribution: str = ""  # set by the host: the distribution that registered it
    version: str = ""  # set by the host: that distribution's version

    def __post_init__(self):
        if self.view not in VIEWS:
            raise ValueError(f"architecture {self.name!r}: view must be one of {VIEWS}, got {self.view!r}")
        bad = sorted(k for k, p in dict(self.params).items() if not isinstance(p, Param))
        if bad:
            raise TypeError(f"architecture {self.name!r}: params[{bad[0]!r}] must be a wsbench.Param")


@dataclass
class ImageData:
    """Images of a dataset in its official train/test split, as ``DatasetSpec.load`` returns them.

    The harness draws the validation split from the training images (``DatasetSpec.num_val``,
    ``split_seed``), so ``load`` gives only the official two.
    """

    train_images: np.ndarray  # (N_train, C, H, W) uint8, 0..255
    train_labels: np.ndarray  # (N_train,) int64 in 0 .. len(classes) - 1
    test_images: np.ndarray  # (N_test, C, H, W) uint8, same C, H, W
    test_labels: np.ndarray  # (N_test,) int64
    classes: Sequence[str]  # class names; their count is ``TaskInfo.num_classes``
    # Source file name -> digest (MD5 or SHA-256 hex), recorded in the zoo manifest for provenance.
    checksums: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ZooRequest:
    """What the harness passes to a dataset's ``networks(request)`` (see :class:`DatasetSpec`)."""

    data_dir: Path  # where the dataset's official files are (``--data-dir``)
    cache_dir: Path  # the cache root: build zoos under ``cache_dir / "zoos"``
    limit: int | None = None  # keep the first ``limit`` networks of each split (``--limit``)
    device: str = "cpu"  # where to train the zoo's networks
    # progress(done, total, quality) after each finished chunk of networks (quality: a running mean such as
    # an INR zoo's PSNR, or NaN)
    progress: Callable[..., None] | None = None
    repair: bool = False  # rebuild a cached zoo that fails its integrity check instead of raising
    recipe: Mapping[str, Any] = field(default_factory=dict)  # the user's ``--recipe`` overrides


@dataclass
class NetworkZoo:
    """A zoo of trained networks with one target each, as ``DatasetSpec.networks`` returns it.

    Rows are networks; every array has them in the same order. ``views`` maps each view the zoo offers
    to its float32 array: ``"weights"`` (N, P) in ``network``'s flat layout, ``"function"``
    (N, probes, outputs): each network's outputs on the zoo's fixed probe inputs.
    """

    ids: np.ndarray  # (N,) int64 network ids, unique: what predictions and representations are keyed by
    targets: np.ndarray  # (N,) float (scalar target) or int64 (class target)
    splits: Mapping[str, np.ndarray]  # "train", "val", "test" -> row indices (the limit already applied)
    views: Mapping[str, np.ndarray]  # view -> (N, ...) float32
    # layout of the weights view: ``layer_shapes``, ``num_params`` (e.g. wsbench.cnnzoo.CnnSpec), or a
    # :class:`MixedNetworks` when the networks differ in architecture (``DatasetSpec.mixed_networks``)
    network: Any
    key: str = ""  # the zoo's cache key, stored on every run row (``zoo_key``)
    classes: Sequence[str] = ()  # class names, for a class target
    manifest: Mapping[str, Any] = field(default_factory=dict)  # the zoo's manifest (provenance)


@dataclass
class DatasetSpec:
    """A dataset: official images plus the INR spec and fitting recipe of its zoo, or a zoo of other
    networks with targets (``networks``).

    ``load(data_dir)`` gets a :class:`pathlib.Path` (``--data-dir``, ``WSBENCH_DATA``, or a folder
    in the user cache) and returns :class:`ImageData`, reading its files there or downloading them
    into it (``wsbench.ensure`` downloads a missing file and checks its MD5). It must return the
    same arrays every time.
    The harness then splits, fits one SIREN ``2 -> inr_hidden... -> C`` per image (seeded) and
    caches the zoo, keyed by a hash of the images, spec and recipe.

    A dataset whose samples are other trained networks (a CNN zoo, say) sets ``networks`` instead:
    ``networks(request: ZooRequest) -> NetworkZoo`` builds (or reads from the cache) the zoo, its
    splits and its views; ``target`` says what each network is labelled with and ``views`` which
    views it offers (architectures reading another view are refused before any work). ``load`` is
    then the loader of the images the networks were trained on (used for probe images and pages).
    """

    name: str  # unique among datasets; what ``--dataset`` takes
    # load(data_dir: Path) -> ImageData; required unless ``networks`` is set (a zoo of networks may
    # have no images of its own)
    load: Callable[..., ImageData] | None = None
    description: str = ""  # one line, shown by ``wsbench plugins``
    num_val: int = 0  # training images held out as the validation split (model selection)
    split_seed: int = 0  # seed of the train/val permutation; stored with the zoo
    inr_hidden: Sequence[int] = (32, 32)  # hidden widths of the SIREN fitted to each image
    # Overrides of the fitting recipe ``wsbench.inr.DEFAULT_RECIPE``; its keys: ``steps``, ``lr``,
    # ``w0`` (also the SirenSpec's), ``decay_frac``, ``lr_final``, ``init`` ("independent" or
    # "shared"), ``psnr_target``, ``chunk_size`` and ``optimizer`` ("adam").
    inr_recipe: Mapping[str, Any] = field(default_factory=dict)
    target: str = "class"  # what a sample is labelled with: "class" or "scalar" (:data:`TARGETS`)
    # The views its samples offer; empty: ("weights", "images") for an INR dataset.
    views: Sequence[str] = ()
    networks: Callable[..., NetworkZoo] | None = None  # networks(request: ZooRequest) -> NetworkZoo
    # With ``networks``: the default recipe of the zoo per device type ("cpu", "cuda"; "cpu" also serves
    # any other), overridden key by key by ``--recipe``; its keys are the only ones ``--recipe`` accepts.
    # The resolved recipe is stored in every run's config (``zoo_recipe``), so runs on zoos built with
    # another recipe are another variant, and reaches ``networks`` as ``ZooRequest.recipe``.
    zoo_recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Optional: key -> Param, the type and range of a zoo recipe key (keys without one are typed by
    # their default, as config keys are); checked before any work.
    zoo_params: Mapping[str, Param] = field(default_factory=dict)
    # Whether its networks differ in architecture (the weights view's layout is a :class:`MixedNetworks`):
    # only architectures with ``mixed_networks`` (or reading another view) run on it.
    mixed_networks: bool = False
    kind: str = "dataset"  # fixed: the kind this spec registers as
    distribution: str = ""  # set by the host
    version: str = ""  # set by the host

    @property
    def offered_views(self) -> tuple:
        return tuple(self.views) or ("weights", "images")

    def __post_init__(self):
        if self.load is None and self.networks is None:
            raise ValueError(f"dataset {self.name!r}: give load (its images) or networks (a zoo of networks)")
        if self.target not in TARGETS:
            raise ValueError(f"dataset {self.name!r}: target must be one of {TARGETS}, got {self.target!r}")
        bad_views = [v for v in self.views if v not in VIEWS]
        if bad_views:
            raise ValueError(f"dataset {self.name!r}: unknown view {bad_views[0]!r}; views are {VIEWS}")
        # Typed like a config (the recipe's keys are checked against wsbench.config.RECIPE_PARAMS when used).
        def whole(x: Any) -> bool:
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
        if not whole(self.num_val) or self.num_val < 0:
            raise ValueError(f"dataset {self.name!r}: num_val must be a whole number >= 0, got {self.num_val!r}")
        if not whole(self.split_seed) or not 0 <= self.split_seed < 2**63:
            raise ValueError(f"dataset {self.name!r}: split_seed must be a whole number from 0 to 2**63 - 1, "
                             f"got {self.split_seed!r}")
        if not self.inr_hidden or not all(whole(h) and h >= 1 for h in self.inr_hidden):
            raise ValueError(f"dataset {self.name!r}: inr_hidden must be widths >= 1, got {self.inr_hidden!r}")


@dataclass
class BatchRequest:
    """What the harness asks of a metric's ``batched`` path (see :class:`MetricSpec`).

    Tensors are on the device of the representations.
    """

    pairs: Any  # (Q, 2) int64: the wanted (r, s) indices into the representation list
    # (n, B) float64 or None: bootstrap sample counts, one resample per column (each column sums
    # to n); a resample is a reweighting of the n samples.
    weights: Any = None
    perms: Any = None  # (P, n) int64 or None: null draw p compares reps[r] with reps[s][perms[p]]
    max_bytes: int = 2 << 30  # budget for temporaries; chunk to stay under it
    progress: Callable[[float], None] | None = None  # optional: call with the fraction of the work done


@dataclass
class BatchResult:
    """What a ``batched`` path returns, every tensor float64 and in ``request.pairs`` order."""

    values: Any  # (Q,): the metric on the full samples, equal to ``fn`` on each pair
    boot: Any = None  # (B, Q) or None: the metric on every bootstrap resample (when weights were asked)
    null: Any = None  # (P, Q) or None: the metric on every permuted pairing (when perms were asked)


@dataclass
class MetricSpec:
    """A representation similarity measure.

    ``fn(x, y)`` takes two float64 torch tensors ``(n, d1)`` and ``(n, d2)`` whose rows are the
    same samples (on the CPU, or the device of ``wsbench similarity --device``) and returns a
    Python float (NaN where undefined, e.g. a constant representation). That is all a metric
    needs: the harness then loops over pairs, resamples and permutations itself (the slow path).
    Its cost: ``wsbench similarity`` calls ``fn`` once per layer pair for the value, once per
    resample per layer pair (1,000 resamples by default) and once per permutation per layer pair
    (100 by default), so an ``fn`` of 10 ms over 100 layer pairs takes about 18 minutes; lower
    ``--resamples``/``--permutations`` or add a ``batched`` path.

    ``batched(reps, request)`` is the optional fast path: ``reps`` is a list of M float64 tensors
    ``(n, d_i)`` on one device, ``request`` a :class:`BatchRequest`; it returns a
    :class:`BatchResult` whose values equal ``fn`` on the same pairs (every job checks that).
    """

    name: str  # unique among metrics; what ``--metric`` takes (``wsbench leaderboard --metric NAME``)
    fn: Callable[..., float]  # fn(x (n, d1) float64, y (n, d2) float64) -> float; the reference
    description: str = ""  # one line, shown by ``wsbench plugins``
    # Full estimator id, stored on every similarity row and hashed into its key, e.g.
    # "linear-kernel/debiased-hsic(song2012)/feature-space/float64": change it when the numbers change.
    estimator: str = ""
    higher_is_better: bool = True  # whether a higher value means more similar
    symmetric: bool = True  # whether fn(x, y) == fn(y, x)
    # Transformations of one input that leave the value unchanged, checked by every similarity job
    # (optional; a claim that fails marks the rows' ``checks_passed`` false): "orthogonal",
    # "isotropic-scaling", "translation". Other names are recorded but not checked.
    invariances: Sequence[str] = ()
    batched: Callable[..., BatchResult] | None = None  # optional fast path, see above
    # Optional ``(low, high)``: the values the metric can take (e.g. ``(0.0, 1.0)``). Leaderboards clip
    # the seed-level intervals they show to it, so an interval never claims an impossible value.
    range: tuple[float, float] | None = None
    # Which 95 % interval over samples each value gets (stored as ``ci_kind``; :data:`CI_KINDS`):
    # "half-sample" (default, valid for any measure): half-samples without replacement (n // 2 of the n
    #   samples, so no sample appears twice) and their percentile interval around the value, rescaled to
    #   n; it also removes an O(1/n) bias of the estimator.
    # "expected-at-n": the same half-samples, the interval centred on the value without that correction;
    #   for a measure whose bias is of a larger order (e.g. a nuclear norm or canonical correlations where
    #   some population singular values are 0): it covers the measure's expected value at this n.
    # "percentile": bootstrap resamples with replacement and their percentile interval. Declare it only
    #   when copies of a sample do not bias the measure: ``batched`` receives the sample counts as
    #   ``request.weights`` and must treat copies as it should (the kernel engine keeps them apart), and
    #   without ``batched``, ``fn`` is called on the rows repeated by their counts: right for a mean of
    #   per-sample scores, wrong for anything built from distances between samples (copies are at 0).
    # "per-sample-percentile": the same bootstrap, for a ``batched`` path that reweights per-sample scores
    #   computed once from all n samples (mknn); the label says that their dependence is ignored.
    interval: str = "half-sample"
    # Null calibration (optional): ``calibrate(value, null_mean)`` -> the calibrated value, elementwise on
    # numpy arrays. Default (None): ``(value - null_mean) / (1 - null_mean)``, how far the value lies from
    # the permutation null towards perfect similarity (self-similarity is 1, which every job checks).
    calibrate: Callable[..., Any] | None = None
    kind: str = "metric"  # fixed: the kind this spec registers as
    distribution: str = ""  # set by the host
    version: str = ""  # set by the host

    def __post_init__(self):
        if self.interval not in CI_KINDS:
            raise ValueError(f"metric {self.name!r}: interval must be one of {', '.join(CI_KINDS)}, "
                             f"got {self.interval!r}")
