"""The CNN zoo engine: many small CNNs trained at once, as on the Small CNN Zoo.

The network (Unterthiner et al. 2020, "Predicting Neural Network Accuracy from Weights",
arXiv 2002.11448; google-research ``dnn_predict_accuracy/train_network.py``): three 3x3
convolutions of 16 filters, stride 2, no padding (Keras ``"valid"``), each followed by the
activation (ReLU or tanh) and dropout; global average pooling; a dense layer to 10 logits. One
grayscale input channel scaled to ``[-1, 1]``; no batch norm, no augmentation. 4,970 parameters.
A 28x28 input gives maps of 13x13, 6x6, 2x2; a 32x32 one 15x15, 7x7, 3x3.

Flat layout (the convention of :mod:`wsbench.weights`): for every layer in order, its weight
row-major, then its bias ``(out,)``; conv weights are ``(out, in, kh, kw)`` (PyTorch's order), the
dense weight ``(out, in)`` and comes last. For the default spec: conv1 W 144 + b 16, conv2 W 2,304
+ b 16, conv3 W 2,304 + b 16, dense W 160 + b 10.

Training (:func:`train_members`): the K members of a chunk are one model. Convolutions are
grouped (``groups=K``, members side by side on the channel axis), batched matrix products on
unfolded patches (``method="bmm"``) or on strided taps in a channels-first layout
(``method="taps"``); the dense layer is an ``einsum``. Each conv layer's activation and dropout are
one elementwise function (:func:`act_dropout`) that ``torch.compile`` fuses into one kernel when the
recipe says ``compile = true``. Every member has its own
training subset (its train fraction), data order, dropout masks, hyperparameters and optimizer
state; SGD, Adam and RMSProp are vectorised over members (masks select the rule). All randomness
of a member comes from a counter-based hash of its own seed (:func:`hash_uniform`), so a member
trained in a chunk of any size, or alone, takes the same steps: :func:`train_alone` is the plain
one-network reference that the tests compare against.

The zoo cache (:func:`build_cnn_zoo`), ``<cache>/zoos/<dataset>-<key16>/``:
  weights.npy     (N, P) float32 final weights, flat layout
  function.npy    (N, n_probe, 10) float32 softmax outputs on the probe images (absent when imported)
  weights_epoch<E>.npy   (N, P) float32 weights at the end of epoch E, for each E of the recipe's
                  ``checkpoint_epochs`` (none by default: each is as large as weights.npy)
  test_acc.npy, train_acc.npy, test_loss.npy   (N,) float32 targets
  config_<name>.npy   (N,) one column per sampled hyperparameter (strings as fixed-width unicode)
  ids.npy         (N,) int64 zoo row ids 0..N-1
  done.json, metrics.partial.npy   while building: finished chunks (a killed build redoes only
                  unfinished chunks), and the targets of finished chunks
  manifest.json   written last: spec, recipe, seed, probe ids, data checksums, timings, and each
                  array's size and SHA-256 (:func:`wsbench.zoo.seal`)
Every array is a plain ``.npy`` (no pickles); :func:`open_cnn_zoo` verifies it with
:func:`wsbench.zoo.verify_zoo` and raises :class:`wsbench.zoo.ZooDamaged` naming the fix.

Zoos of mixed architectures (``build_cnn_zoo(..., mixed=True)``; the ``cnn-*-mixed`` datasets): the
same images, recipe and hyperparameter sampling, and per member a depth in :data:`MIXED_DEPTHS`
conv layers and a width in :data:`MIXED_WIDTHS` filters per layer (:func:`sample_architectures`,
seeded by the zoo seed apart from the hyperparameters, so member ``i`` has the hyperparameters of
member ``i`` of the homogeneous zoo). A member's convolutions are valid, as the Small CNN Zoo's, where
every layer keeps a map, and pad by :data:`MIXED_PADDING` where they would not (on 16x16 or 28x28
inputs valid convolutions leave no map for a fourth layer; padded, 16x16 gives 8x8, 4x4, 2x2, 1x1), so
the 3 x 16 members are the homogeneous zoo's network (:func:`member_spec`). Layout:
  weights.npy     (N, P_max) float32: each row its own network's flat layout (above), zero-padded to
                  the largest member's parameter count ``P_max`` (manifest ``num_params``; the
                  manifest ``spec`` is that largest network's)
  config_depth.npy, config_width.npy, config_padding.npy, config_num_params.npy   (N,) int64: a
                  member's network is ``CnnSpec(channels=(width,) * depth, padding=padding)`` with
                  ``num_params`` real parameters (:meth:`CnnZoo.member_spec`), the first
                  ``num_params`` numbers of its row
and the manifest's ``mixed`` entry records the depths, widths and padding rule. A chunk trains its members
one architecture and train fraction at a time (:func:`train_chunk`); a member's draws depend on its own seed only, so
it takes the same steps as when trained alone.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsbench import __version__
from wsbench.errors import WsbenchError, WsbenchWarning
from wsbench.tables import save_npy, sweep_temporaries, write_text
from wsbench.zoo import ZOO_FORMAT, ZooDamaged, build_lock, seal, verify_zoo


@dataclass(frozen=True)
class CnnSpec:
    """The Small CNN Zoo network: ``len(channels)`` 3x3 stride-2 valid convolutions, global average
    pooling, a dense layer to ``num_classes``. ``image_size`` is the input's height and width."""

    in_channels: int = 1
    channels: tuple = (16, 16, 16)
    kernel: int = 3
    stride: int = 2
    padding: int = 0  # Keras "valid"
    num_classes: int = 10
    image_size: int = 28

    @property
    def layer_shapes(self) -> list[tuple[tuple[int, ...], tuple[int]]]:
        """``(W shape, b shape)`` per layer: conv ``(out, in, k, k)``, dense ``(out, in)``."""
        out: list[tuple[tuple[int, ...], tuple[int]]] = []
        c = self.in_channels
        for o in self.channels:
            out.append(((o, c, self.kernel, self.kernel), (o,)))
            c = o
        out.append(((self.num_classes, c), (self.num_classes,)))
        return out

    @property
    def num_params(self) -> int:
        """``P``: 4,970 for the default spec."""
        return sum(math.prod(w) + b[0] for w, b in self.layer_shapes)

    @property
    def feature_sizes(self) -> list[int]:
        """Height (= width) of each conv layer's output."""
        sizes, s = [], self.image_size
        for _ in self.channels:
            s = (s + 2 * self.padding - self.kernel) // self.stride + 1
            sizes.append(s)
        return sizes

    @property
    def kernel_mask(self) -> np.ndarray:
        """``(P,)`` bool: True on weight (kernel) entries, False on biases (L2 applies to kernels)."""
        parts = []
        for w, b in self.layer_shapes:
            parts += [np.ones(math.prod(w), bool), np.zeros(b[0], bool)]
        return np.concatenate(parts)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out


def unflatten(flat: torch.Tensor, spec: CnnSpec) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(B, P)`` -> ``[(W (B, *w_shape), b (B, out)), ...]`` per layer (views into ``flat``)."""
    out, k = [], 0
    for w, b in spec.layer_shapes:
        n = math.prod(w)
        out.append((flat[:, k:k + n].reshape(-1, *w), flat[:, k + n:k + n + b[0]]))
        k += n + b[0]
    return out


def flatten(params: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Inverse of :func:`unflatten`: ``[(W (B, ...), b (B, out)), ...]`` -> ``(B, P)``."""
    parts = []
    for w, b in params:
        parts += [w.reshape(w.shape[0], -1), b.reshape(b.shape[0], -1)]
    return torch.cat(parts, dim=1)


def _act(z: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return torch.relu(z)
    if activation == "tanh":
        return torch.tanh(z)
    raise WsbenchError(f"unknown activation {activation!r}; choose relu or tanh")


def forward(flat: torch.Tensor, images: torch.Tensor, activation: str, spec: CnnSpec | None = None,
            keep: Sequence[torch.Tensor] | None = None, dropout: float = 0.0) -> torch.Tensor:
    """Logits ``(n, classes)`` of ONE CNN with parameters ``flat (P,)`` on ``images (n, 1, H, W)``
    in ``[-1, 1]``: the plain reference (``torch.nn.functional``). ``keep``: per conv layer a bool
    mask of its output's shape; kept units are scaled by ``1 / (1 - dropout)`` (inverted dropout)."""
    spec = spec or CnnSpec(image_size=images.shape[-1])
    layers = unflatten(flat.reshape(1, -1), spec)
    h = images
    for i, (w, b) in enumerate(layers[:-1]):
        h = _act(F.conv2d(h, w[0], b[0], stride=spec.stride, padding=spec.padding), activation)
        if keep is not None:
            h = h * keep[i] / (1.0 - dropout)
    w, b = layers[-1]
    return h.mean(dim=(2, 3)) @ w[0].T + b[0]


def prepare_images(images: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 ``(N, 1, H, W)`` in ``[-1, 1]``. RGB becomes gray as the
    mean of the three channels, as the Small CNN Zoo code does (``reduce_mean`` over channels).
    ``size``: resize to ``size x size`` by area averaging (the CPU recipe's 16x16; None keeps it)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.shape[1] != 1:
        x = x.mean(dim=1, keepdim=True)
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------
# Hyperparameters

OPTIMIZERS = ("sgd", "adam", "rmsprop")
ACTIVATIONS = ("relu", "tanh")
INITS = ("glorot_normal", "glorot_uniform", "he_normal", "random_normal", "truncated_normal", "orthogonal")
TRAIN_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
# Ranges as the paper's appendix and the release's metrics.csv describe them, to our reading:
# learning rate log-uniform [5e-4, 5e-2], L2 log-uniform [1e-8, 1e-2], dropout uniform [0, 0.7],
# init std log-uniform [1e-3, 0.5] (used only by random_normal/truncated_normal, as in the release's
# config.init_std), train fraction in {0.1, 0.25, 0.5, 1.0}, activation relu/tanh, optimizer
# SGD/Adam/RMSProp (Keras defaults: Adam b1 0.9 b2 0.999, RMSProp rho 0.9, eps 1e-7). Deviations:
# the init set is our choice of the Keras initialisers (the release names its own, e.g.
# GlorotNormal, RandomNormal, TruncatedNormal, VarianceScaling, orthogonal); biases start at zero.
RANGES = {"lr": (5e-4, 5e-2), "l2": (1e-8, 1e-2), "dropout": (0.0, 0.7), "init_std": (1e-3, 0.5)}
CONFIG_COLUMNS = ("optimizer", "lr", "l2", "dropout", "init", "init_std", "train_fraction", "activation", "seed")


def sample_configs(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` hyperparameter configurations, one per CNN, as numpy columns (:data:`CONFIG_COLUMNS`;
    strings as fixed-width unicode). Deterministic in ``seed``; ``seed`` column: each CNN's own seed."""
    rng = np.random.default_rng([seed, 17])

    def loguniform(lo: float, hi: float) -> np.ndarray:
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))

    return {
        "optimizer": np.array(OPTIMIZERS)[rng.integers(0, len(OPTIMIZERS), n)],
        "lr": loguniform(*RANGES["lr"]),
        "l2": loguniform(*RANGES["l2"]),
        "dropout": rng.uniform(*RANGES["dropout"], n),
        "init": np.array(INITS)[rng.integers(0, len(INITS), n)],
        "init_std": loguniform(*RANGES["init_std"]),
        "train_fraction": np.array(TRAIN_FRACTIONS)[rng.integers(0, len(TRAIN_FRACTIONS), n)],
        "activation": np.array(ACTIVATIONS)[rng.integers(0, len(ACTIVATIONS), n)],
        "seed": rng.integers(0, 2**31 - 1, n, dtype=np.int64),
    }


def take(configs: dict[str, np.ndarray], rows) -> dict[str, np.ndarray]:
    """The configurations of ``rows``."""
    return {k: v[rows] for k, v in configs.items()}


# Zoos of mixed architectures: conv layers per member, filters per conv layer, and the convolutions' padding.
MIXED_DEPTHS = (2, 3, 4)
MIXED_WIDTHS = (8, 16, 24, 32)
MIXED_PADDING = 1
ARCH_COLUMNS = ("depth", "width", "padding", "num_params")
MIXED_PADDING_RULE = f"0 (valid) where every conv layer keeps a map of at least 1x1, else {MIXED_PADDING}"


def member_spec(spec: CnnSpec, depth: int, width: int) -> CnnSpec:
    """The network of a mixed zoo's member: ``spec`` (its input, kernels, strides, classes and image size)
    with ``depth`` conv layers of ``width`` filters, padded by :data:`MIXED_PADDING_RULE`."""
    net = replace(spec, channels=(int(width),) * int(depth), padding=0)
    return net if net.feature_sizes[-1] >= 1 else replace(net, padding=MIXED_PADDING)


def mixed_zoo_spec(image_size: int) -> CnnSpec:
    """The largest network of a mixed zoo (the padded layout's width), for images of ``image_size``."""
    return member_spec(CnnSpec(image_size=image_size), max(MIXED_DEPTHS), max(MIXED_WIDTHS))


def sample_architectures(n: int, seed: int, spec: CnnSpec) -> dict[str, np.ndarray]:
    """The :data:`ARCH_COLUMNS` ``(n,)`` int64 of a mixed zoo's members: depth and width uniform over
    :data:`MIXED_DEPTHS` x :data:`MIXED_WIDTHS`, deterministic in ``seed`` and drawn apart from
    :func:`sample_configs` (which they leave unchanged); then each one's padding and parameter count
    (:func:`member_spec` of ``spec``, the zoo's largest network)."""
    rng = np.random.default_rng([seed, 19])
    depth = np.array(MIXED_DEPTHS, dtype=np.int64)[rng.integers(0, len(MIXED_DEPTHS), n)]
    width = np.array(MIXED_WIDTHS, dtype=np.int64)[rng.integers(0, len(MIXED_WIDTHS), n)]
    nets = [member_spec(spec, d, w) for d, w in zip(depth.tolist(), width.tolist())]
    return {"depth": depth, "width": width, "padding": np.array([s.padding for s in nets], dtype=np.int64),
            "num_params": np.array([s.num_params for s in nets], dtype=np.int64)}


# ---------------------------------------------------------------------------------------------
# Counter-based randomness: every draw a pure function of (member seed, stream, position)

_M32 = 0xFFFFFFFF
TAG_SUBSET, TAG_ORDER, TAG_DROPOUT, TAG_INIT = 1, 2, 3, 4


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (xorshift-multiply rounds) of int64 values in ``[0, 2^32)``."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def stream_key(seeds: torch.Tensor, tag: int, a, b=0) -> torch.Tensor:
    """``(K,)`` keys of the stream ``(tag, a, b)`` of each member seed (``a``, ``b``: ints or ``(K,)``)."""
    k = hash32(seeds.to(torch.int64) ^ (tag * 0x9E3779B9))
    k = hash32(k + torch.as_tensor(a, dtype=torch.int64, device=seeds.device) * 0x85EBCA6B)
    return hash32(k + torch.as_tensor(b, dtype=torch.int64, device=seeds.device))


_POS_MUL = 0x27D4EB2F


def hash_bits(keys: torch.Tensor, n: int) -> torch.Tensor:
    """``(K, n)`` int64 hashes in ``[0, 2^32)`` of positions ``0..n-1`` of each stream key."""
    pos = torch.arange(n, device=keys.device, dtype=torch.int64)
    return hash32(keys[:, None] * _POS_MUL + pos)


def hash_uniform(keys: torch.Tensor, n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(K, n)`` uniforms in ``(0, 1)`` from the stream keys ``(K,)``."""
    return (hash_bits(keys, n).to(dtype) + 0.5) / 2.0**32


def member_subsets(seeds: torch.Tensor, sizes: torch.Tensor, n_train: int) -> torch.Tensor:
    """``(K, n_train)`` training image ids per member; member k uses the first ``sizes[k]`` of its row."""
    return torch.argsort(hash_bits(stream_key(seeds, TAG_SUBSET, 0), n_train), dim=1, stable=True)


def epoch_order(seeds: torch.Tensor, epochs: torch.Tensor, sizes: torch.Tensor, width: int) -> torch.Tensor:
    """``(K, width)`` positions into each member's subset in its order for ``epochs``; positions
    ``>= sizes[k]`` sort last."""
    bits = hash_bits(stream_key(seeds, TAG_ORDER, epochs), width)
    pos = torch.arange(width, device=seeds.device)
    bits = torch.where(pos[None] < sizes[:, None], bits, torch.full_like(bits, 2**33))
    return torch.argsort(bits, dim=1, stable=True)


def dropout_keep(seeds: torch.Tensor, steps: torch.Tensor, layer: int, shape: Sequence[int],
                 rates: torch.Tensor) -> torch.Tensor:
    """``(K, *shape)`` bool keep masks of conv layer ``layer`` at each member's step ``steps``."""
    n = math.prod(shape)
    bits = hash_bits(stream_key(seeds, TAG_DROPOUT, steps, layer), n)
    thresh = (rates.to(torch.float64) * 2.0**32).to(torch.int64)
    return (bits >= thresh[:, None]).reshape(-1, *shape)


# ---------------------------------------------------------------------------------------------
# Initialisation (Keras initialisers; fans of a conv kernel count its receptive field)

def _ndtri(u: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtri(u)


def init_members(configs: dict[str, np.ndarray], spec: CnnSpec, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(K, P)`` initial parameters of the members in ``configs`` (biases zero). Each member's draws
    come from its own seed, so they do not depend on which other members share its chunk."""
    seeds = torch.as_tensor(configs["seed"], dtype=torch.int64)
    inits = configs["init"]
    std = torch.as_tensor(configs["init_std"], dtype=torch.float64)[:, None]
    k = len(seeds)
    layers = []
    for li, (w, b) in enumerate(spec.layer_shapes):
        fan_in = math.prod(w[1:])
        fan_out = w[0] * math.prod(w[2:])
        n = math.prod(w)
        u = hash_uniform(stream_key(seeds, TAG_INIT, li, 0), n)
        u2 = hash_uniform(stream_key(seeds, TAG_INIT, li, 1), n)
        normal = _ndtri(u)
        lo, hi = 0.022750131948179195, 0.9772498680518208  # Phi(-2), Phi(2)
        trunc = _ndtri(lo + (hi - lo) * u2)  # a normal truncated at two standard deviations
        out = torch.zeros(k, n, dtype=torch.float64)
        glorot = math.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978  # Keras: std of the truncated draw
        sel = {name: torch.as_tensor(inits == name) for name in INITS}
        out = torch.where(sel["glorot_normal"][:, None], trunc * glorot, out)
        lim = math.sqrt(6.0 / (fan_in + fan_out))
        out = torch.where(sel["glorot_uniform"][:, None], (2 * u - 1) * lim, out)
        out = torch.where(sel["he_normal"][:, None], trunc * math.sqrt(2.0 / fan_in) / 0.87962566103423978, out)
        out = torch.where(sel["random_normal"][:, None], normal * std, out)
        out = torch.where(sel["truncated_normal"][:, None], trunc * std, out)
        if sel["orthogonal"].any():
            rows = sel["orthogonal"].nonzero().flatten()
            a = normal[rows].reshape(-1, fan_in, w[0]) if fan_in >= w[0] else normal[rows].reshape(-1, w[0], fan_in)
            q, r = torch.linalg.qr(a)
            q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
            q = q.transpose(1, 2) if fan_in >= w[0] else q  # (out, fan_in)
            out[rows] = q.reshape(len(rows), n)
        layers.append((out.reshape(k, *w), torch.zeros(k, b[0], dtype=torch.float64)))
    return flatten(layers).to(dtype)


# ---------------------------------------------------------------------------------------------
# The batched model and the vectorised optimizers

@dataclass
class Dropout:
    """The dropout of one training step: per conv layer the members' stream keys ``(K,)``
    (:func:`stream_key` of ``(TAG_DROPOUT, step, layer)``), the keep thresholds ``(K,)`` (a unit is
    kept where its hash is at least ``rate * 2^32``: the masks of :func:`dropout_keep`) and the
    inverted-dropout scales ``(K,)`` = ``1 / (1 - rate)``."""

    keys: list[torch.Tensor]
    thresh: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def at_step(cls, seeds: torch.Tensor, steps: torch.Tensor, rates: torch.Tensor, layers: int,
                dtype: torch.dtype) -> Dropout:
        r = rates.to(torch.float64)
        return cls([stream_key(seeds, TAG_DROPOUT, steps, i) for i in range(layers)], (r * 2.0**32).to(torch.int64),
                   (1.0 / (1.0 - r)).to(dtype))


def act_dropout(z: torch.Tensor, relu: torch.Tensor, key: torch.Tensor | None, thresh: torch.Tensor | None,
                scale: torch.Tensor | None, pos: torch.Tensor | None) -> torch.Tensor:
    """A conv layer's activation and dropout, elementwise: ReLU where ``relu`` else tanh; with ``key``,
    units whose hash ``hash32(key * _POS_MUL + pos)`` is below ``thresh`` are dropped and the rest scaled
    by ``scale``. ``relu``, ``key``, ``thresh``, ``scale`` broadcast per member; ``pos`` is each unit's
    position in the ``(B, C, h, w)`` order of :func:`dropout_keep`, so the masks are the same whatever
    the layout of ``z``. One elementwise function, so ``torch.compile`` fuses it into one kernel (the
    recipe's ``compile``): eager, the 64-bit hash alone moves a dozen copies of the activations."""
    a = torch.where(relu, torch.relu(z), torch.tanh(z))
    if key is None or thresh is None or scale is None or pos is None:
        return a
    bits = hash32(key * _POS_MUL + pos)
    return torch.where(bits >= thresh, a * scale, torch.zeros((), dtype=a.dtype, device=a.device))


_COMPILED: dict[str, Callable] = {}


def unit_fn(compiled: bool) -> Callable:
    """:func:`act_dropout`, compiled once per process when ``compiled``: shape-generic (``dynamic``), so
    chunks of every size and maps of every layer share one kernel instead of meeting torch's recompile
    limit, past which it runs eager (which slowed the first 10-epoch GPU zoo build to 17 minutes)."""
    if not compiled:
        return act_dropout
    if "unit" not in _COMPILED:
        from wsbench.compiling import compile_fn

        _COMPILED["unit"] = compile_fn(act_dropout, dynamic=True)
    return _COMPILED["unit"]


def _positions(bsz: int, c: int, s: int, channels_first: bool, device: torch.device) -> torch.Tensor:
    """Each unit's position in the ``(B, C, s, s)`` order, laid out as ``(1, B, C, s, s)`` or, with
    ``channels_first``, ``(1, C, B, s, s)``."""
    pos = torch.arange(bsz * c * s * s, device=device, dtype=torch.int64).view(bsz, c, s, s)
    return (pos.transpose(0, 1) if channels_first else pos)[None]


def _taps_conv(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, spec: CnnSpec) -> torch.Tensor:
    """Per-member convolution in the ``(K, C, B, H, W)`` layout: the ``kernel^2`` strided views of the
    input stacked into ``(K, C * k * k, B * s * s)`` columns, one batched matrix product with the
    members' kernels ``(K, O, C * k * k)``; returns ``(K, O, B, s, s)``. No transposes: the layout
    stays channels-first, so every product is a plain strided batch."""
    k, c, bsz = h.shape[:3]
    kk, st, p = spec.kernel, spec.stride, spec.padding
    if p:
        h = F.pad(h, (p, p, p, p))
    s = (h.shape[-1] - kk) // st + 1
    span = st * (s - 1) + 1
    taps = [h[..., i:i + span:st, j:j + span:st] for i in range(kk) for j in range(kk)]
    cols = torch.stack(taps, dim=2).reshape(k, c * kk * kk, bsz * s * s)
    z = torch.baddbmm(b[:, :, None], w.reshape(k, w.shape[1], -1), cols)
    return z.view(k, w.shape[1], bsz, s, s)


METHODS = ("grouped", "bmm", "taps")


def batched_logits(theta: torch.Tensor, x: torch.Tensor, spec: CnnSpec, relu: torch.Tensor,
                   drop: Dropout | None = None, method: str = "grouped", unit: Callable = act_dropout,
                   compute: torch.dtype | None = None) -> torch.Tensor:
    """Logits ``(K, B, classes)`` of K members ``theta (K, P)`` on their own images ``x (K, B, 1, H, W)``.
    ``relu (K,)`` bool: ReLU where True, tanh elsewhere; ``drop``: the step's dropout (None: none).
    ``method``: ``grouped`` (one grouped convolution, members side by side on the channel axis),
    ``bmm`` (unfolded patches, batched products) or ``taps`` (:func:`_taps_conv`, channels-first);
    ``unit``: :func:`act_dropout` or its compiled form (:func:`unit_fn`). ``compute``: the dtype the
    images, parameters and activations are cast to (None: ``theta``'s); the logits come back in it."""
    if method not in METHODS:
        raise WsbenchError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    k, bsz = x.shape[:2]
    if compute is not None and compute != theta.dtype:
        # Mixed precision: the casts are differentiable, so gradients reach the master weights in theirs.
        theta, x = theta.to(compute), x.to(compute)
        if drop is not None:
            drop = Dropout(drop.keys, drop.thresh, drop.scale.to(compute))
    layers = unflatten(theta, spec)
    channels_first = method == "taps"
    view = (k, 1, 1, 1, 1)
    rv = relu.view(view)
    h = x.transpose(1, 2) if channels_first else x
    for i, (w, b) in enumerate(layers[:-1]):
        c_out, c_in = w.shape[1], w.shape[2]
        if method == "grouped":
            inp = h.transpose(0, 1).reshape(bsz, k * c_in, *h.shape[-2:])
            z = F.conv2d(inp, w.reshape(k * c_out, c_in, spec.kernel, spec.kernel), b.reshape(-1),
                         stride=spec.stride, padding=spec.padding, groups=k)
            z = z.reshape(bsz, k, c_out, *z.shape[-2:]).transpose(0, 1)
        elif method == "bmm":
            hw = h.shape[-1]
            cols = F.unfold(h.reshape(k * bsz, c_in, hw, hw), spec.kernel, stride=spec.stride, padding=spec.padding)
            s = (hw + 2 * spec.padding - spec.kernel) // spec.stride + 1
            cols = cols.reshape(k, bsz, c_in * spec.kernel**2, s * s).transpose(2, 3).reshape(k, bsz * s * s, -1)
            z = torch.baddbmm(b[:, None, :], cols, w.reshape(k, c_out, -1).transpose(1, 2))
            z = z.reshape(k, bsz, s, s, c_out).permute(0, 1, 4, 2, 3)
        else:
            z = _taps_conv(h, w, b, spec)
        if drop is None:
            h = unit(z, rv, None, None, None, None)
        else:
            pos = _positions(bsz, c_out, z.shape[-1], channels_first, z.device)
            h = unit(z, rv, drop.keys[i].view(view), drop.thresh.view(view), drop.scale.view(view), pos)
    w, b = layers[-1]
    pooled = h.mean(dim=(3, 4))  # (K, B, C), channels-first (K, C, B)
    eq = "kcb,koc->kbo" if channels_first else "kbc,koc->kbo"
    return torch.einsum(eq, pooled, w) + b[:, None, :]


@dataclass
class OptState:
    """Per-member optimizer state: Adam's ``m`` and ``v``, RMSProp's ``v`` (shared buffer), step counts."""

    m: torch.Tensor
    v: torch.Tensor
    t: torch.Tensor  # (K,) steps taken


ADAM_BETAS = (0.9, 0.999)
RMSPROP_RHO = 0.9
EPS = 1e-7  # Keras's epsilon


def optimizer_step(theta: torch.Tensor, grad: torch.Tensor, state: OptState, opt_code: torch.Tensor,
                   lr: torch.Tensor, active: torch.Tensor) -> None:
    """One update of all members in place. ``opt_code (K,)``: 0 SGD, 1 Adam, 2 RMSProp (the
    formulas of ``torch.optim.SGD``, ``Adam``, ``RMSprop(alpha=rho)``, with Keras's eps 1e-7);
    ``lr (K,)``; members where ``active (K,)`` is False are left unchanged (their state too)."""
    a = active.view(-1, 1)
    t = state.t + active.to(state.t.dtype)
    b1, b2 = ADAM_BETAS
    is_adam, is_rms = (opt_code == 1).view(-1, 1), (opt_code == 2).view(-1, 1)
    m_new = b1 * state.m + (1 - b1) * grad
    v_adam = b2 * state.v + (1 - b2) * grad * grad
    v_rms = RMSPROP_RHO * state.v + (1 - RMSPROP_RHO) * grad * grad
    v_new = torch.where(is_adam, v_adam, v_rms)
    tt = t.clamp(min=1).to(theta.dtype).view(-1, 1)
    m_hat = m_new / (1 - b1**tt)
    v_hat = v_adam / (1 - b2**tt)
    step_adam = m_hat / (v_hat.sqrt() + EPS)
    step_rms = grad / (v_rms.sqrt() + EPS)
    step = torch.where(is_adam, step_adam, torch.where(is_rms, step_rms, grad))
    theta.sub_(torch.where(a, lr.view(-1, 1) * step, torch.zeros_like(step)))
    state.m = torch.where(a & is_adam, m_new, state.m)
    state.v = torch.where(a & (is_adam | is_rms), v_new, state.v)
    state.t = t


# ---------------------------------------------------------------------------------------------
# Training

@dataclass
class Data:
    """Images prepared once (:func:`prepare_images`) on the training device."""

    train_x: torch.Tensor  # (n_train, 1, H, W)
    train_y: torch.Tensor  # (n_train,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    probe_x: torch.Tensor  # (n_probe, 1, H, W)


def member_sizes(fractions: np.ndarray, n_train: int, batch_size: int) -> np.ndarray:
    """Training images per member: ``floor(fraction * n_train)``, at least one batch."""
    return np.maximum(batch_size, np.floor(np.asarray(fractions) * n_train).astype(np.int64))


def member_steps(fractions: np.ndarray, n_train: int, batch_size: int, epochs: int) -> np.ndarray:
    """Steps per member: ``epochs`` epochs of full batches (the last partial batch is dropped, as Keras does)."""
    return epochs * (member_sizes(fractions, n_train, batch_size) // batch_size)


def step_batches(seeds: torch.Tensor, sizes: torch.Tensor, subsets: torch.Tensor, step: int,
                 batch_size: int, order: torch.Tensor | None, refresh: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch ids (K, B), order)``: the training image ids of each member at global ``step``;
    ``order`` is the members' current epoch order, recomputed where a member starts an epoch."""
    spe = sizes // batch_size
    epoch, j = step // spe, step % spe
    if order is None:
        order = epoch_order(seeds, epoch, sizes, subsets.shape[1])
    else:
        new = (j == 0) if refresh is None else refresh
        if bool(new.any()):
            rows = new.nonzero().flatten()
            order[rows] = epoch_order(seeds[rows], epoch[rows], sizes[rows], subsets.shape[1])
    pos = j[:, None] * batch_size + torch.arange(batch_size, device=seeds.device)
    return torch.gather(subsets, 1, torch.gather(order, 1, pos)), order


def eval_batch(k: int) -> int:
    """Images per evaluation pass of ``k`` members: about 2^18 member-images (memory bound)."""
    return max(8, min(500, 2**18 // max(k, 1)))


@torch.no_grad()
def evaluate(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None, spec: CnnSpec, relu: torch.Tensor,
             method: str = "grouped", batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(accuracy (K,), mean loss (K,), probabilities (K, n, classes))`` of all members on the shared
    images ``x (n, 1, H, W)`` (no dropout); accuracy and loss are NaN without labels ``y``."""
    k = theta.shape[0]
    batch = batch or eval_batch(k)
    correct = torch.zeros(k, dtype=torch.float64, device=theta.device)
    loss = torch.zeros(k, dtype=torch.float64, device=theta.device)
    probs = []
    for lo in range(0, x.shape[0], batch):
        xb = x[lo:lo + batch]
        logits = batched_logits(theta, xb[None].expand(k, *xb.shape), spec, relu, method=method)
        if y is None:
            probs.append(torch.softmax(logits, dim=-1))
            continue
        yb = y[lo:lo + batch]
        loss += F.cross_entropy(logits.transpose(1, 2), yb[None].expand(k, -1), reduction="none").sum(1).double()
        correct += (logits.argmax(-1) == yb[None]).sum(1).double()
    n = x.shape[0]
    if y is None:
        nan = torch.full((k,), float("nan"), device=theta.device)
        return nan, nan, torch.cat(probs, dim=1)
    return correct / n, loss / n, torch.empty(0)


@torch.no_grad()
def member_accuracy(theta: torch.Tensor, data: Data, ids: torch.Tensor, spec: CnnSpec, relu: torch.Tensor,
                    method: str = "grouped", batch: int | None = None) -> torch.Tensor:
    """``(K,)`` accuracy of each member on its own training images ``ids (K, n)``."""
    batch = batch or eval_batch(theta.shape[0])
    correct = torch.zeros(theta.shape[0], dtype=torch.float64, device=theta.device)
    for lo in range(0, ids.shape[1], batch):
        idx = ids[:, lo:lo + batch]
        logits = batched_logits(theta, data.train_x[idx], spec, relu, method=method)
        correct += (logits.argmax(-1) == data.train_y[idx]).sum(1).double()
    return correct / ids.shape[1]


def train_step(theta: torch.Tensor, state: OptState, x: torch.Tensor, y: torch.Tensor, spec: CnnSpec,
               relu: torch.Tensor, drop: Dropout | None, method: str, unit: Callable, l2: torch.Tensor,
               opt_code: torch.Tensor, lr: torch.Tensor, active: torch.Tensor,
               compute: torch.dtype | None = None) -> None:
    """One step of all members in place: mean cross-entropy on their own batches ``x (K, B, 1, H, W)``,
    ``y (K, B)``, plus Keras's L2 ``l2 * sum(kernel^2)`` (``l2 (K, P)``: the rate on kernel entries, 0
    on biases), then :func:`optimizer_step`. ``compute``: the forward's dtype (:func:`batched_logits`);
    the loss, gradient and update stay in ``theta``'s."""
    th = theta.detach().requires_grad_(True)
    logits = batched_logits(th, x, spec, relu, drop, method, unit, compute).to(theta.dtype)
    loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
    (grad,) = torch.autograd.grad(loss.sum(), th)
    optimizer_step(theta, grad + 2 * l2 * theta, state, opt_code, lr, active)


@dataclass
class Members:
    """K members' training state on one device (:func:`prepare_members`): seeds, training-subset sizes
    and ids, parameters ``theta (K, P)``, hyperparameters as tensors, optimizer state."""

    seeds: torch.Tensor  # (K,) int64
    sizes: torch.Tensor  # (K,) training images per member
    subsets: torch.Tensor  # (K, n) each member's image ids, its first ``size`` used
    theta: torch.Tensor  # (K, P), the master weights
    relu: torch.Tensor  # (K,) bool
    opt_code: torch.Tensor  # (K,) 0 SGD, 1 Adam, 2 RMSProp
    lr: torch.Tensor  # (K,)
    rate: torch.Tensor  # (K,) float64 dropout rate
    decay: torch.Tensor  # (K, P) L2 rate on kernel entries, 0 on biases
    state: OptState

    def step(self, data: Data, spec: CnnSpec, step: int, order: torch.Tensor | None, batch_size: int, method: str,
             unit: Callable, active: torch.Tensor, compute: torch.dtype | None = None) -> torch.Tensor:
        """Global training step ``step`` of every member (:func:`train_step` on its own batch and dropout
        masks); ``order`` is the members' epoch order (None at the start), returned updated."""
        ids, order = step_batches(self.seeds, self.sizes, self.subsets, step, batch_size, order)
        steps = torch.full_like(self.seeds, step)
        drop = Dropout.at_step(self.seeds, steps, self.rate, len(spec.channels), self.theta.dtype)
        train_step(self.theta, self.state, data.train_x[ids], data.train_y[ids], spec, self.relu, drop, method, unit,
                   self.decay, self.opt_code, self.lr, active, compute)
        return order


def prepare_members(configs: dict[str, np.ndarray], data: Data, spec: CnnSpec, batch_size: int) -> Members:
    """The members of ``configs`` ready to train on ``data``'s device, in its dtype."""
    dev, dtype = data.train_x.device, data.train_x.dtype
    k = len(configs["seed"])
    seeds = torch.as_tensor(configs["seed"], dtype=torch.int64, device=dev)
    sizes = torch.as_tensor(member_sizes(configs["train_fraction"], data.train_x.shape[0], batch_size), device=dev)
    theta = init_members(configs, spec, dtype).to(dev)
    l2 = torch.as_tensor(configs["l2"], dtype=dtype, device=dev).view(-1, 1)
    return Members(
        seeds=seeds, sizes=sizes, subsets=member_subsets(seeds, sizes, data.train_x.shape[0]), theta=theta,
        relu=torch.as_tensor(configs["activation"] == "relu", device=dev),
        opt_code=torch.as_tensor(np.select([configs["optimizer"] == "adam", configs["optimizer"] == "rmsprop"],
                                           [1, 2], 0), device=dev),
        lr=torch.as_tensor(configs["lr"], dtype=dtype, device=dev),
        rate=torch.as_tensor(configs["dropout"], dtype=torch.float64, device=dev),
        decay=l2 * torch.as_tensor(spec.kernel_mask, device=dev).to(dtype).view(1, -1),  # L2 on kernels only
        state=OptState(torch.zeros_like(theta), torch.zeros_like(theta), torch.zeros(k, dtype=torch.int64, device=dev)))


def train_members(configs: dict[str, np.ndarray], data: Data, spec: CnnSpec, recipe: dict,
                  method: str = "grouped") -> dict[str, np.ndarray]:
    """Train the K members of ``configs`` together; returns numpy ``weights (K, P)`` float32,
    ``test_acc``, ``train_acc``, ``test_loss`` ``(K,)``, ``function (K, n_probe, classes)``, and per epoch E of
    ``recipe["checkpoint_epochs"]`` the weights after it under its file's name (:func:`checkpoint_file`).

    ``train_acc`` is measured on the first ``recipe["train_eval"]`` images of each member's own
    subset (all of it when that is None). Members that diverge (non-finite weights) keep their
    weights as they are and score what they score (chance, or NaN loss): the targets say so."""
    _, compute = recipe_dtypes(recipe)
    bsz, epochs = int(recipe["batch_size"]), int(recipe["epochs"])
    m = prepare_members(configs, data, spec, bsz)
    theta, dev = m.theta, m.theta.device
    total = torch.as_tensor(member_steps(configs["train_fraction"], data.train_x.shape[0], bsz, epochs), device=dev)
    unit = unit_fn(bool(recipe.get("compile", False)))
    # Checkpoints: member k ends epoch e after step e * (its steps per epoch) - 1; the steps where any
    # member does are known up front, so the loop copies weights only there (and never syncs).
    per_epoch = m.sizes.cpu().numpy() // bsz
    marks = {int(e): torch.zeros_like(theta) for e in recipe.get("checkpoint_epochs", [])}
    ends = {e: torch.as_tensor(e * per_epoch - 1, device=dev) for e in marks}
    mark_steps = {int(s) for e in marks for s in e * per_epoch - 1}
    order = None
    for step in range(int(total.max())):
        order = m.step(data, spec, step, order, bsz, method, unit, step < total, compute)
        if step in mark_steps:
            for e, snap in marks.items():
                hit = (ends[e] == step).view(-1, 1)
                snap.copy_(torch.where(hit, theta, snap))
    test_acc, test_loss, _ = evaluate(theta, data.test_x, data.test_y, spec, m.relu, method)
    _, _, probs = evaluate(theta, data.probe_x, None, spec, m.relu, method)
    n_eval = recipe.get("train_eval")
    width = int(m.sizes.min()) if n_eval is None else min(int(n_eval), int(m.sizes.min()))
    train_acc = member_accuracy(theta, data, m.subsets[:, :width], spec, m.relu, method)
    return {"weights": theta.float().cpu().numpy(), "test_acc": test_acc.float().cpu().numpy(),
            "train_acc": train_acc.float().cpu().numpy(), "test_loss": test_loss.float().cpu().numpy(),
            "function": probs.float().cpu().numpy(),
            **{checkpoint_file(e): snap.float().cpu().numpy() for e, snap in marks.items()}}


def train_alone(config: dict, data: Data, spec: CnnSpec, recipe: dict) -> torch.Tensor:
    """The final ``(P,)`` parameters of ONE CNN trained by the plain reference: :func:`forward`, a
    ``torch.optim`` optimizer, the member's own batches and dropout masks. The ground truth that
    :func:`train_members` must match member for member."""
    cfg = {k: np.asarray([v]) for k, v in config.items()}
    dev, dtype = data.train_x.device, data.train_x.dtype
    bsz, epochs = int(recipe["batch_size"]), int(recipe["epochs"])
    n_train = data.train_x.shape[0]
    seeds = torch.as_tensor(cfg["seed"], dtype=torch.int64, device=dev)
    sizes = torch.as_tensor(member_sizes(cfg["train_fraction"], n_train, bsz), device=dev)
    subsets = member_subsets(seeds, sizes, n_train)
    p = init_members(cfg, spec, dtype)[0].to(dev).requires_grad_(True)
    name, lr = str(config["optimizer"]), float(config["lr"])
    o: torch.optim.Optimizer
    if name == "sgd":
        o = torch.optim.SGD([p], lr=lr)
    elif name == "adam":
        o = torch.optim.Adam([p], lr=lr, betas=ADAM_BETAS, eps=EPS)
    else:
        o = torch.optim.RMSprop([p], lr=lr, alpha=RMSPROP_RHO, eps=EPS)
    kmask = torch.as_tensor(spec.kernel_mask, device=dev).to(dtype)
    rate = torch.as_tensor([float(config["dropout"])], dtype=torch.float64, device=dev)
    shapes = [(bsz, c, s, s) for c, s in zip(spec.channels, spec.feature_sizes)]
    order = None
    for step in range(int(member_steps(cfg["train_fraction"], n_train, bsz, epochs)[0])):
        ids, order = step_batches(seeds, sizes, subsets, step, bsz, order)
        st = torch.tensor([step], device=dev)
        keep = [dropout_keep(seeds, st, i, shp, rate)[0] for i, shp in enumerate(shapes)]
        logits = forward(p, data.train_x[ids[0]], str(config["activation"]), spec, keep, float(config["dropout"]))
        loss = F.cross_entropy(logits, data.train_y[ids[0]]) + float(config["l2"]) * (kmask * p * p).sum()
        o.zero_grad()
        loss.backward()
        o.step()
    return p.detach()


def train_chunk(configs: dict[str, np.ndarray], data: Data, spec: CnnSpec, recipe: dict) -> dict[str, np.ndarray]:
    """:func:`train_members` on a chunk of a zoo. In a mixed zoo (``configs`` with the
    :data:`ARCH_COLUMNS`) one call per architecture and train fraction, in order of (depth, width,
    fraction): a call steps as long as its longest-training member, so fractions are not mixed (as
    :func:`chunk_rows` does for a homogeneous zoo). Weights are zero-padded to ``spec.num_params``
    (the largest network's); rows come back in ``configs``' order."""
    if "depth" not in configs:
        return train_members(configs, data, spec, recipe, recipe["method"])
    k = len(configs["seed"])
    out: dict[str, np.ndarray] = {}
    groups = zip(configs["depth"].tolist(), configs["width"].tolist(), configs["train_fraction"].tolist())
    for d, w, f in sorted(set(groups)):
        sel = np.flatnonzero((configs["depth"] == d) & (configs["width"] == w) & (configs["train_fraction"] == f))
        part = train_members(take(configs, sel), data, member_spec(spec, d, w), recipe, recipe["method"])
        for name, a in part.items():
            wide = name.startswith("weights")  # the final weights and the checkpoints
            if name not in out:
                out[name] = np.zeros((k, spec.num_params) if wide else (k, *a.shape[1:]), np.float32)
            if wide:
                out[name][sel, :a.shape[1]] = a  # the first P_k columns, zeros after them
            else:
                out[name][sel] = a
    return out


# ---------------------------------------------------------------------------------------------
# Recipes and the zoo cache

# CPU: images area-resized to 16x16 (maps 7x7, 3x3, 1x1: 5.5x fewer multiply-adds than 28x28), a
# 512-image training pool, 4 epochs, 500 test images: a small zoo whose accuracies spread from chance
# upwards (MNIST, 250 CNNs at 5 epochs: median 0.18, std 0.23, max 0.85; at 2 epochs the median sat at
# 0.14, barely above chance). Eager, so no compiler is needed. GPU: native size, full test set, a
# 10,000-image pool, the channels-first taps method with the activation and dropout fused by
# torch.compile, in mixed precision (dtype bfloat16): on one H200 a step of 6,000 members takes 71 ms,
# against 106 ms in float32 and 487 ms with grouped convolutions, 555x a one-CNN-at-a-time loop
# (benchmarks/results/cnn_zoo_step_h200.json). 10 epochs are what the step benchmark projected for a
# 9-minute training budget; the first such build took 17 minutes because the fused kernel then met
# torch's recompile limit and ran eager (benchmarks/results/cnn_zoo_gpu_h200.json; fixed since,
# unmeasured). The 5-epoch float32 zoo trained in 9.0 minutes (cnn_zoo_gpu_h200_5epoch_fp32.json).
# The Small CNN Zoo trained 86 epochs on the full set.
CPU_RECIPE: dict = {"epochs": 4, "batch_size": 32, "chunk_size": 250, "train_subset": 512, "test_subset": 500,
              "train_eval": 256, "n_probe": 128, "dtype": "float32", "method": "grouped", "image_size": 16,
              "compile": False, "checkpoint_epochs": []}
GPU_RECIPE: dict = {"epochs": 10, "batch_size": 32, "chunk_size": 6000, "train_subset": 10000, "test_subset": None,
              "train_eval": 2000, "n_probe": 128, "dtype": "bfloat16", "method": "taps", "image_size": None,
              "compile": True, "checkpoint_epochs": []}
DEFAULT_RECIPE = CPU_RECIPE
# float32 and float64 train in that dtype throughout; bfloat16 is mixed precision: each step's images,
# parameters and activations in bf16 (half the memory traffic of the memory-bound taps products), the
# loss, gradients, optimizer state, master weights and evaluation in float32.
DTYPES = ("float32", "float64", "bfloat16")
RECIPE_KEYS = set(CPU_RECIPE)


def recipe_dtypes(recipe: dict) -> tuple[torch.dtype, torch.dtype | None]:
    """``(dtype of the images and master weights, forward dtype or None: the same)`` of ``recipe["dtype"]``."""
    if recipe.get("dtype", "float32") == "bfloat16":
        return torch.float32, torch.bfloat16
    return getattr(torch, recipe.get("dtype", "float32")), None
CNN_ZOO_FORMAT = 1
TARGETS = ("test_acc", "train_acc", "test_loss")


def check_recipe(recipe: dict) -> dict:
    """``recipe`` over :data:`DEFAULT_RECIPE`; unknown keys are an error listing the valid ones."""
    unknown = set(recipe) - RECIPE_KEYS
    if unknown:
        raise WsbenchError(f"unknown CNN zoo recipe keys {sorted(unknown)}; valid: {sorted(RECIPE_KEYS)}")
    out = {**DEFAULT_RECIPE, **recipe}
    if out["dtype"] not in DTYPES:
        raise WsbenchError(f"recipe dtype {out['dtype']!r}: choose one of {', '.join(DTYPES)}")
    if out["method"] not in METHODS:
        raise WsbenchError(f"recipe method {out['method']!r}: choose one of {', '.join(METHODS)}")
    marks = out["checkpoint_epochs"]
    if not isinstance(marks, (list, tuple)) or any(not isinstance(e, int) or not 1 <= e <= int(out["epochs"])
                                                   for e in marks):
        raise WsbenchError(f"recipe checkpoint_epochs={marks!r}: give a list of epochs between 1 and epochs="
                           f"{out['epochs']}, e.g. --recipe checkpoint_epochs=[1,2]")
    out["checkpoint_epochs"] = sorted(set(marks))
    return out


@dataclass
class CnnZoo:
    """An opened CNN zoo: arrays memory-mapped where large."""

    path: Path
    weights: np.ndarray  # (N, P) float32
    function: np.ndarray | None  # (N, n_probe, classes) float32; None for imported zoos
    targets: dict[str, np.ndarray]  # test_acc, train_acc, test_loss: (N,) float32 (NaN where unknown)
    configs: dict[str, np.ndarray]  # one column per hyperparameter
    ids: np.ndarray  # (N,) int64
    manifest: dict
    checkpoints: dict[int, np.ndarray] = field(default_factory=dict)  # epoch -> (N, P) weights after it

    @property
    def spec(self) -> CnnSpec:
        """The network every row follows; in a mixed zoo the largest one (the padded layout)."""
        d = dict(self.manifest["spec"])
        d["channels"] = tuple(d["channels"])
        return CnnSpec(**d)

    @property
    def mixed(self) -> bool:
        """Whether its networks differ in architecture (see the module docstring)."""
        return bool(self.manifest.get("mixed"))

    def member_spec(self, row: int) -> CnnSpec:
        """The network of row ``row``: :attr:`spec`, or in a mixed zoo its own depth, width and padding."""
        if not self.mixed:
            return self.spec
        c = {k: int(self.configs[k][row]) for k in ("depth", "width", "padding")}
        return replace(self.spec, channels=(c["width"],) * c["depth"], padding=c["padding"])


def zoo_arrays(manifest: dict) -> list[str]:
    names = ["weights.npy", "ids.npy", *(f"{t}.npy" for t in TARGETS)]
    names += [f"config_{c}.npy" for c in manifest.get("config_columns", [])]
    if manifest.get("n_probe"):
        names.append("function.npy")
    names += [checkpoint_file(e) for e in manifest.get("recipe", {}).get("checkpoint_epochs", [])]
    return names


def checkpoint_file(epoch: int) -> str:
    return f"weights_epoch{epoch}.npy"


def open_cnn_zoo(path: Path | str) -> CnnZoo:
    """The CNN zoo in ``path``, verified first (:func:`wsbench.zoo.verify_zoo`: a damaged zoo is a
    :class:`~wsbench.zoo.ZooDamaged` error naming the fix)."""
    path = Path(path)
    manifest = verify_zoo(path)
    if manifest.get("kind") != "cnn":
        raise WsbenchError(f"{path} is not a CNN zoo (kind {manifest.get('kind', 'inr')!r})")
    fn = path / "function.npy"
    return CnnZoo(path=path, weights=np.load(path / "weights.npy", mmap_mode="r", allow_pickle=False),
                  function=np.load(fn, mmap_mode="r", allow_pickle=False) if manifest.get("n_probe") else None,
                  targets={t: np.load(path / f"{t}.npy", allow_pickle=False) for t in TARGETS},
                  configs={c: np.load(path / f"config_{c}.npy", allow_pickle=False)
                           for c in manifest.get("config_columns", [])},
                  ids=np.load(path / "ids.npy", allow_pickle=False), manifest=manifest,
                  checkpoints={e: np.load(path / checkpoint_file(e), mmap_mode="r", allow_pickle=False)
                               for e in manifest.get("recipe", {}).get("checkpoint_epochs", [])})


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def cnn_zoo_key(dataset: str, spec: CnnSpec, recipe: dict, seed: int, n: int, data_sha256: str,
                mixed: dict | None = None) -> str:
    meta = {"format": CNN_ZOO_FORMAT, "kind": "cnn", "dataset": dataset, "spec": spec.to_dict(), "recipe": recipe,
            "seed": seed, "n": n, "data": data_sha256}
    if mixed:
        meta["mixed"] = mixed
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def select_rows(n: int, subset: int | None, seed: int, tag: int) -> np.ndarray:
    """Sorted row ids of a seeded subset of ``subset`` of ``n`` (all of them when None or >= n)."""
    if subset is None or subset >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, tag]).choice(n, int(subset), replace=False))


def chunk_rows(configs: dict[str, np.ndarray], chunk_size: int) -> list[np.ndarray]:
    """Zoo rows per chunk, at most ``chunk_size`` each. A chunk steps as long as its longest-training
    member (inactive members are still computed), so no chunk mixes train fractions: each fraction's
    rows (in zoo order) are cut into the fewest chunks, of equal size. On the Small-CNN-Zoo-sized zoo
    (four fractions of about 7,500 CNNs, chunks of 6,000) that is 19 % fewer member-steps than one
    sorted cut. In a mixed zoo rows are ordered by depth, width and fraction and cut in order, so a
    chunk holds few architectures (:func:`train_chunk`)."""
    if "depth" in configs:
        order = np.lexsort((configs["train_fraction"], configs["width"], configs["depth"]))
        return [order[i:i + chunk_size] for i in range(0, len(order), chunk_size)]
    out: list[np.ndarray] = []
    for f in np.unique(configs["train_fraction"]):
        rows = np.flatnonzero(configs["train_fraction"] == f)
        out += np.array_split(rows, -(-len(rows) // chunk_size))
    return out


def discard_cnn_zoo(path: Path) -> None:
    """Remove a CNN zoo's files, the manifest first (the folder stops being a zoo at once)."""
    (path / "manifest.json").unlink(missing_ok=True)
    for f in path.glob("*.npy"):
        f.unlink()
    (path / "done.json").unlink(missing_ok=True)


def build_cnn_zoo(root: Path | str, dataset: str, train_images: np.ndarray, train_labels: np.ndarray,
                  test_images: np.ndarray, test_labels: np.ndarray, *, n: int, seed: int, recipe: dict | None = None,
                  device: str | torch.device = "cpu", progress: Callable[[int, int], None] | None = None,
                  repair: bool = False, extra_manifest: dict | None = None, mixed: bool = False) -> CnnZoo:
    """Train (or resume, or reuse) a zoo of ``n`` CNNs on the images (uint8 ``(N, C, H, W)``; RGB
    becomes gray, see :func:`prepare_images`); with ``mixed``, of mixed depths and widths (see the
    module docstring). ``progress(done, total)`` is called after each chunk.
    Each chunk's rows are written, then recorded in ``done.json``; a killed build redoes only the
    chunks not recorded. A stored zoo that fails its check raises :class:`ZooDamaged` (with
    ``repair``: is removed and trained again)."""
    recipe = check_recipe(recipe or {})
    train_rows = select_rows(len(train_labels), recipe["train_subset"], seed, 1)
    test_rows = select_rows(len(test_labels), recipe["test_subset"], seed, 2)
    probe_ids = np.sort(np.random.default_rng([seed, 3]).choice(len(test_labels), min(recipe["n_probe"],
                                                                                        len(test_labels)),
                                                                  replace=False)) if recipe["n_probe"] else np.arange(0)
    data_sha = _digest(np.asarray(train_images), np.asarray(train_labels), np.asarray(test_images),
                       np.asarray(test_labels))
    size = int(recipe["image_size"] or train_images.shape[-1])
    spec = mixed_zoo_spec(size) if mixed else CnnSpec(image_size=size)
    mixing = {"depths": list(MIXED_DEPTHS), "widths": list(MIXED_WIDTHS), "padding": MIXED_PADDING_RULE} if mixed \
        else None
    key = cnn_zoo_key(dataset, spec, recipe, seed, n, data_sha, mixing)
    path = Path(root) / "zoos" / f"{dataset}-{key[:16]}"
    if (path / "manifest.json").exists():
        try:
            return open_cnn_zoo(path)
        except ZooDamaged:
            if not repair:
                raise
    path.mkdir(parents=True, exist_ok=True)
    with build_lock(path):
        sweep_temporaries([path])
        if (path / "manifest.json").exists():
            try:
                return open_cnn_zoo(path)
            except ZooDamaged as exc:
                if not repair:
                    raise
                warnings.warn(f"{exc}: training it again", WsbenchWarning, stacklevel=2)
                discard_cnn_zoo(path)
        dev = torch.device(device)
        dtype, _ = recipe_dtypes(recipe)
        data = Data(train_x=prepare_images(train_images[train_rows], size).to(dev, dtype),
                    train_y=torch.as_tensor(np.asarray(train_labels)[train_rows], dtype=torch.int64, device=dev),
                    test_x=prepare_images(test_images[test_rows], size).to(dev, dtype),
                    test_y=torch.as_tensor(np.asarray(test_labels)[test_rows], dtype=torch.int64, device=dev),
                    probe_x=prepare_images(test_images[probe_ids], size).to(dev, dtype))
        configs = sample_configs(n, seed)
        layout = "per layer W row-major (conv (out, in, kh, kw), dense (out, in)) then b (out,)"
        if mixed:
            configs.update(sample_architectures(n, seed, spec))
            layout += ("; each row its own network's layout (channels (width,) * depth), zero-padded to "
                       "num_params; its depth, width, conv padding and real parameter count in config_depth, "
                       "config_width, config_padding, config_num_params")
        manifest = {"format": ZOO_FORMAT, "cnn_format": CNN_ZOO_FORMAT, "kind": "cnn", "key": key,
                    "dataset": dataset, "count": n, "num_params": spec.num_params, "spec": spec.to_dict(),
                    "recipe": recipe, "seed": seed, "n_probe": len(probe_ids),
                    "probe_ids": probe_ids.tolist(), "train_rows": len(train_rows), "test_rows": len(test_rows),
                    "data_sha256": data_sha, "config_columns": list(configs),
                    "grayscale": "mean of the RGB channels, then x / 127.5 - 1", "layout": layout,
                    **({"mixed": mixing} if mixing else {}), **(extra_manifest or {})}
        return _build_locked(path, manifest, configs, data, spec, recipe, dev, progress)


def _open_partial(path: Path, shape: tuple) -> np.memmap | None:
    """A finished chunk's array of a killed build, or None when it is missing or does not fit."""
    try:
        a = np.lib.format.open_memmap(path, mode="r+")
    except (ValueError, OSError, EOFError):
        return None
    return a if a.shape == shape and a.dtype == np.float32 else None


def _new_partial(path: Path, shape: tuple) -> np.memmap:
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)


def _build_locked(path: Path, manifest: dict, configs: dict, data: Data, spec: CnnSpec, recipe: dict,
                  dev: torch.device, progress) -> CnnZoo:
    n, p, n_probe = manifest["count"], spec.num_params, manifest["n_probe"]
    chunks = chunk_rows(configs, int(recipe["chunk_size"]))
    done_file = path / "done.json"
    files = {"weights.npy": (n, p), "function.npy": (n, n_probe, spec.num_classes), "metrics.partial.npy": (n, 3),
             **{checkpoint_file(e): (n, p) for e in recipe["checkpoint_epochs"]}}
    try:
        done = set(json.loads(done_file.read_text())) if done_file.exists() else set()
    except (OSError, ValueError, TypeError):
        done = set()
    arrays: dict[str, np.memmap] = {}
    if done:
        for name, shape in files.items():
            a = _open_partial(path / name, shape)
            if a is None:
                done, arrays = set(), {}
                break
            arrays[name] = a
    if not done:
        arrays = {name: _new_partial(path / name, shape) for name, shape in files.items()}
    started = time.perf_counter()
    for c, rows in enumerate(chunks):
        if c in done:
            continue
        out = train_chunk(take(configs, rows), data, spec, recipe)
        arrays["weights.npy"][rows] = out["weights"]
        arrays["function.npy"][rows] = out["function"]
        arrays["metrics.partial.npy"][rows] = np.stack([out[t] for t in TARGETS], axis=1)
        for e in recipe["checkpoint_epochs"]:
            arrays[checkpoint_file(e)][rows] = out[checkpoint_file(e)]
        for a in arrays.values():
            a.flush()
        done.add(c)
        write_text(done_file, json.dumps(sorted(done)))
        if progress is not None:
            progress(sum(len(chunks[j]) for j in done), n)
    metrics = np.array(arrays["metrics.partial.npy"])
    arrays.clear()
    for i, t in enumerate(TARGETS):
        save_npy(path / f"{t}.npy", metrics[:, i].astype(np.float32))
    for col, values in configs.items():
        save_npy(path / f"config_{col}.npy", values)
    save_npy(path / "ids.npy", np.arange(n, dtype=np.int64))
    acc = metrics[:, 0]
    manifest = {**manifest, "wsbench_version": __version__, "torch_version": torch.__version__, "device": str(dev),
                "train_seconds": round(time.perf_counter() - started, 3),
                "test_acc": {"min": float(np.nanmin(acc)), "p5": float(np.nanpercentile(acc, 5)),
                             "median": float(np.nanmedian(acc)), "p95": float(np.nanpercentile(acc, 95)),
                             "max": float(np.nanmax(acc)), "std": float(np.nanstd(acc))}}
    manifest = seal(manifest, path, zoo_arrays(manifest))
    write_text(path / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    (path / "metrics.partial.npy").unlink(missing_ok=True)
    done_file.unlink(missing_ok=True)
    return open_cnn_zoo(path)
