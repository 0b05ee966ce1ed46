"""``shapes``: a built-in task of procedurally drawn grayscale shapes, no download needed.

Six classes (disk, square, triangle, ring, cross, bar) drawn at a random centre,
size, rotation and intensity on a 16 x 16 canvas with a little pixel noise;
deterministic from a fixed seed, so every user gets the same images.
"""
from __future__ import annotations

import hashlib

import numpy as np

from wsbench import DatasetSpec, ImageData, hookimpl

CLASSES = ("disk", "square", "triangle", "ring", "cross", "bar")
SIZE = 16
N_TRAIN, N_TEST, N_VAL = 1200, 300, 200


def _draw(kind: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
    r = rng.uniform(size * 0.2, size * 0.32)
    theta = rng.uniform(0, np.pi)
    # Coordinates in the shape's rotated frame.
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    dist = np.hypot(u, v)
    name = CLASSES[kind]
    if name == "disk":
        mask = dist <= r
    elif name == "square":
        mask = (np.abs(u) <= r * 0.8) & (np.abs(v) <= r * 0.8)
    elif name == "triangle":
        ang = np.arctan2(v, u)
        sector = (ang + np.pi / 3) % (2 * np.pi / 3) - np.pi / 3
        mask = dist * np.cos(sector) <= r * 0.5
    elif name == "ring":
        mask = (dist <= r) & (dist >= r * 0.55)
    elif name == "cross":
        w = r * 0.3
        mask = ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))
    else:  # bar
        mask = (np.abs(u) <= r * 1.1) & (np.abs(v) <= r * 0.3)
    fg, bg = rng.uniform(0.6, 1.0), rng.uniform(0.0, 0.25)
    img = np.where(mask, fg, bg) + rng.normal(0, 0.04, (size, size))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 1, 16, 16)`` uint8 with balanced labels, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    images = np.stack([_draw(int(k), rng) for k in labels])[:, None]
    return images, labels.astype(np.int64)


def load(data_dir=None) -> ImageData:
    tr_x, tr_y = generate(N_TRAIN, seed=1)
    te_x, te_y = generate(N_TEST, seed=2)
    digest = hashlib.sha256(tr_x.tobytes() + te_x.tobytes()).hexdigest()
    return ImageData(tr_x, tr_y, te_x, te_y, CLASSES, checksums={"generated:shapes": digest})


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="shapes", load=load, num_val=N_VAL, split_seed=0, inr_hidden=(32, 32),
        # One shared initialisation, as for MNIST and Fashion-MNIST: the weights of two INRs then differ only
        # by what fitting put there, so weight-space models (flat-mlp, gmn) can learn from them. From
        # independent draws a flat MLP sat at chance (14.9 %, training loss 0.000).
        inr_recipe={"steps": 80, "lr": 1e-3, "chunk_size": 256, "init": "shared"},
        description="Built-in: 6 procedurally drawn shape classes, 16x16 grayscale, no download",
    ))
