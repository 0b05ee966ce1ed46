"""Augmentations: the weight-space warp is exactly the warped image's INR; crop-flip is a crop and a flip."""

import pytest
import torch

from wsbench.augment import MAX_ROTATION, MAX_SCALE, MAX_SHIFT, augmenter, crop_flip, random_affine, warp_inrs
from wsbench.errors import WsbenchError
from wsbench.inr import init_siren
from wsbench.specs import SirenSpec
from wsbench.weights import coordinates, flatten, siren_forward, unflatten

SPEC = SirenSpec(hidden=(16, 16), out_dim=3)


def _inrs(b, seed=0):
    params = init_siren(b, SPEC, torch.Generator().manual_seed(seed))
    layers = [(params[k].transpose(1, 2), params[k + 1].squeeze(1)) for k in range(0, len(params), 2)]
    return flatten(layers).double()


def _eval(x, coords):
    """INRs ``(B, P)`` at per-INR coordinates ``(B, M, 2)``."""
    params = []
    for w, b in unflatten(x, SPEC):
        params += [w.transpose(1, 2), b.unsqueeze(1)]
    return siren_forward(params, coords, SPEC.w0)


def test_warped_inr_is_the_inr_at_the_moved_coordinates():
    x = _inrs(6)
    a, c = random_affine(6, torch.Generator().manual_seed(1), flip=True)
    a, c = a.double(), c.double()
    u = coordinates(9, 7).double().expand(6, -1, -1)
    moved = u @ a.transpose(1, 2) + c.unsqueeze(1)  # A u + c per INR
    assert torch.allclose(_eval(warp_inrs(x, SPEC, a, c), u), _eval(x, moved), atol=1e-10)
    assert not torch.allclose(_eval(warp_inrs(x, SPEC, a, c), u), _eval(x, u), atol=1e-3)


def test_identity_warp_changes_nothing_and_only_the_first_layer_moves():
    x = _inrs(3)
    eye, zero = torch.eye(2).expand(3, 2, 2), torch.zeros(3, 2)
    assert torch.equal(warp_inrs(x, SPEC, eye, zero), x)
    a, c = random_affine(3, torch.Generator().manual_seed(2), flip=False)
    o, i = SPEC.layer_shapes[0]
    y = warp_inrs(x, SPEC, a, c)
    assert torch.equal(y[:, o * i + o:], x[:, o * i + o:]) and not torch.allclose(y[:, :o * i + o], x[:, :o * i + o])


def test_two_warps_compose_as_their_coordinate_maps():
    """g(u) = f(A1 u + c1) then h(u) = g(A2 u + c2) = f(A1 A2 u + A1 c2 + c1)."""
    x = _inrs(4)
    gen = torch.Generator().manual_seed(3)
    (a1, c1), (a2, c2) = [tuple(t.double() for t in random_affine(4, gen, flip=True)) for _ in range(2)]
    twice = warp_inrs(warp_inrs(x, SPEC, a1, c1), SPEC, a2, c2)
    once = warp_inrs(x, SPEC, a1 @ a2, (a1 @ c2.unsqueeze(2)).squeeze(2) + c1)
    assert torch.allclose(twice, once, atol=1e-12)


def test_random_maps_stay_within_their_bounds_and_flip_only_when_asked():
    gen = torch.Generator().manual_seed(4)
    a, c = random_affine(4000, gen, flip=False)
    scale = torch.linalg.det(a).sqrt()
    angle = torch.atan2(a[:, 1, 0], a[:, 0, 0]).abs()
    assert (torch.linalg.det(a) > 0).all() and (c.abs() <= MAX_SHIFT).all()
    assert scale.min() >= 1 / MAX_SCALE - 1e-6 and scale.max() <= MAX_SCALE + 1e-6
    assert angle.max() <= MAX_ROTATION + 1e-6 and angle.max() > 0.9 * MAX_ROTATION
    det = torch.linalg.det(random_affine(4000, gen, flip=True)[0])
    assert 0.45 < (det < 0).float().mean() < 0.55


def test_augmenters_are_seeded():
    x = _inrs(5).float()
    f = augmenter("affine", "weights", SPEC)
    one = f(x, torch.Generator().manual_seed(0))
    assert torch.equal(one, f(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(one, f(x, torch.Generator().manual_seed(1)))
    assert augmenter("none", "weights", SPEC) is None and augmenter("none", "images") is None


def test_crop_flip_is_a_shifted_window_of_the_padded_image_maybe_mirrored():
    x = torch.rand(8, 3, 10, 12, generator=torch.Generator().manual_seed(5))
    out = crop_flip(x, torch.Generator().manual_seed(6))
    pad = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    flips = 0
    for k in range(8):
        found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                 if torch.equal(out[k], (lambda w: w.flip(2) if f else w)(pad[k, :, dy:dy + 10, dx:dx + 12]))]
        assert found, f"sample {k} is no crop of its padded image"
        flips += found[0][2]
    assert 0 < flips < 8


@pytest.mark.parametrize("name, view, inr, needle", [
    ("crop-flip", "weights", SPEC, "known for weights: none, affine, affine-flip"),
    ("affine", "images", None, "known for images: none, crop-flip"),
    ("rotate", "weights", SPEC, "augment 'rotate' does not apply"),
    ("affine", "weights", SirenSpec(in_dim=3), "needs 2-D INRs"),
])
def test_unknown_or_misplaced_augmentations_are_errors(name, view, inr, needle):
    with pytest.raises(WsbenchError, match=needle):
        augmenter(name, view, inr)


def test_training_loop_applies_the_weight_augmentation_and_stays_seeded(shapes_task):
    from wsbench.config import resolve
    from wsbench.plugins import load_registry
    from wsbench.train import train
    arch = load_registry().architecture("flat-mlp")
    cpu = torch.device("cpu")
    plain = train(shapes_task, arch, resolve(arch, "shapes", {"epochs": 2}), seed=0, device=cpu)
    config = resolve(arch, "shapes", {"epochs": 2, "augment": "affine"})
    one, two = (train(shapes_task, arch, config, seed=0, device=cpu) for _ in range(2))
    assert one.history == two.history and torch.equal(torch.from_numpy(one.layers["logits"]),
                                                      torch.from_numpy(two.layers["logits"]))
    assert one.history[0]["train_loss"] != plain.history[0]["train_loss"]
