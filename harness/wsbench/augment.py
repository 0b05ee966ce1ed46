"""Training-time augmentations, one set per input view, chosen with the ``augment`` config key.

``images`` (``(B, C, H, W)``): ``crop-flip``, a random 4-pixel-padded crop and horizontal flip.

``weights`` (``(B, P)`` flattened SIRENs): ``affine`` and ``affine-flip`` move the image an INR encodes
by editing its first layer, exactly. The first pre-activation of a SIREN at coordinates ``u`` is
``W1 u + b1``; the INR of the image sampled at ``A u + c`` is therefore the same network with
``W1' = W1 A`` and ``b1' = b1 + W1 c`` (every other layer unchanged). ``A`` is a random rotation
(up to ``MAX_ROTATION`` either way) times a random scale (``1 / MAX_SCALE .. MAX_SCALE``), ``c`` a
random shift of up to ``MAX_SHIFT`` per axis in the ``[-1, 1]`` coordinate frame; ``affine-flip``
also mirrors the x axis with probability 1/2 (for datasets whose labels survive a mirror, like
CIFAR-10). This is the input-space augmentation of Shamsian et al. 2024, "Improved generalization
of weight space networks via augmentations", for INR classifiers of any architecture.

Random draws come from the training loop's CPU generator, so a seed gives the same batches on any
device.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from wsbench.errors import WsbenchError
from wsbench.specs import SirenSpec

MAX_ROTATION = math.radians(15.0)
MAX_SCALE = 1.1
MAX_SHIFT = 0.1  # a tenth of the half-width: 1.4 pixels at 28 x 28, 1.6 at 32 x 32


def crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip, per sample: ``(B, C, H, W)``, same shape."""
    b, _, h, w = x.shape
    pad = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dy = torch.randint(0, 9, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 9, (b,), generator=gen).to(x.device)
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    out = pad.gather(2, rows.expand(b, pad.shape[1], h, pad.shape[3]))
    out = out.gather(3, cols.expand(b, pad.shape[1], h, w))
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    return torch.where(flip.view(b, 1, 1, 1), out.flip(3), out)


def random_affine(b: int, gen: torch.Generator, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``b`` random coordinate maps ``u -> A u + c`` on ``(y, x)`` coordinates: ``A (b, 2, 2)``, ``c (b, 2)``."""
    angle = (torch.rand(b, generator=gen) * 2 - 1) * MAX_ROTATION
    scale = torch.exp((torch.rand(b, generator=gen) * 2 - 1) * math.log(MAX_SCALE))
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * MAX_SHIFT
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    a = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    if flip:
        mirror = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
        a = a * torch.stack([torch.ones(b), mirror], 1).unsqueeze(1)  # x column: u_x -> -u_x first
    return a, shift


def warp_inrs(x: torch.Tensor, spec: SirenSpec, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """INRs of the images sampled at ``A u + c``: ``x (B, P)``, ``a (B, 2, 2)``, ``c (B, 2)`` -> ``(B, P)``.

    Only the first layer changes (``W1 A``, ``b1 + W1 c``); the flat layout is ``W1 (out, in)``
    row-major, then ``b1``, then the later layers.
    """
    o, i = spec.layer_shapes[0]
    w1 = x[:, :o * i].view(-1, o, i)
    b1 = x[:, o * i:o * i + o]
    a, c = a.to(x), c.to(x)
    w_new = torch.bmm(w1, a)
    b_new = b1 + torch.bmm(w1, c.unsqueeze(2)).squeeze(2)
    return torch.cat([w_new.reshape(x.shape[0], -1), b_new, x[:, o * i + o:]], 1)


def _inr_affine(spec: SirenSpec, flip: bool) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        a, c = random_affine(x.shape[0], gen, flip)
        return warp_inrs(x, spec, a, c)
    return apply


VIEWS = {"images": ("none", "crop-flip"), "weights": ("none", "affine", "affine-flip")}


def check(name: str, view: str) -> None:
    """A one-line error for an ``augment`` value the view does not know (listing the ones it does)."""
    known = VIEWS.get(view, ("none",))
    if name not in known:
        raise WsbenchError(f"augment {name!r} does not apply to the {view} view; known for {view}: "
                           f"{', '.join(known)} (set it with --set augment=NAME)")


def augmenter(name: str, view: str, inr: SirenSpec | None = None):
    """The ``augment`` config value for a model of ``view`` -> ``fn(x, gen)``, or None for ``none``."""
    check(name, view)
    if name == "none":
        return None
    if name == "crop-flip":
        return crop_flip
    if inr is None or inr.in_dim != 2:
        raise WsbenchError(f"augment {name!r} needs 2-D INRs (x, y inputs); this zoo's INRs take "
                           f"{getattr(inr, 'in_dim', '?')} inputs; use --set augment=none")
    return _inr_affine(inr, flip=name == "affine-flip")
