"""The two CCRL views: per-sample parameters, dtype and range, which branch crops, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kornia.augmentation import RandomAffine, RandomResizedCrop

from wsi_ccrl.ccrl.augment import CellViews, StainJitter, blur_kernel_size
from wsi_ccrl.config import AugmentConfig
from wsi_ccrl.io.store import CellStore

# everything but the crop switched off: a view is the input itself unless it is cropped
NO_OP = {
    "jitter_p": 0.0,
    "grayscale_p": 0.0,
    "blur_p": 0.0,
    "flip_p": 0.0,
    "rotation": (0.0, 0.0),
}


@pytest.fixture(scope="module")
def crops(consep_store) -> torch.Tensor:
    return torch.from_numpy(np.asarray(CellStore.open(consep_store)["crops"][:16]))


def test_dtype_range_shape_and_independent_parameters(crops):
    views = CellViews(AugmentConfig(), 32)
    q, k = views(crops, seed=0)
    for v in (q, k):
        assert v.dtype == torch.float32 and v.shape == (16, 3, 32, 32)
        assert v.min() >= 0.0 and v.max() <= 1.0
    crop = next(m for m in views.key if isinstance(m, RandomResizedCrop))
    boxes = crop._params["src"]  # (B, 4, 2) source corners of each sample's crop
    assert len({tuple(b.flatten().tolist()) for b in boxes}) == 16
    for pipeline in (views.query, views.key):
        rot = next(m for m in pipeline if isinstance(m, RandomAffine))
        angles = rot._params["angle"]
        assert len(set(angles.tolist())) == 16
        assert angles.min() >= 0.0 and angles.max() <= 180.0
    assert not torch.equal(q, k)


def test_only_the_key_branch_crops_by_default(crops):
    x = crops.permute(0, 3, 1, 2).float() / 255
    q, k = CellViews(AugmentConfig(**NO_OP), 32)(crops, seed=1)
    assert torch.allclose(q, x, atol=1e-5)  # global view: the whole cell, untouched
    differs = (k - x).abs().flatten(1).amax(dim=1) > 1e-3
    assert differs.sum() >= 12  # local view: a random part, resized back
    assert not any(isinstance(m, RandomResizedCrop) for m in CellViews(AugmentConfig(), 32).query)


def test_no_local_global_crops_neither_branch(crops):
    x = crops.permute(0, 3, 1, 2).float() / 255
    q, k = CellViews(AugmentConfig(**NO_OP, local_global=False), 32)(crops, seed=1)
    assert torch.allclose(q, x, atol=1e-5) and torch.allclose(k, x, atol=1e-5)


def test_seeded_views_are_reproducible_and_leave_the_global_rng(crops):
    views = CellViews(AugmentConfig(), 32)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = views(crops, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # seeded draws do not consume global RNG
    b = views(crops, seed=5)
    c = views(crops, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        CellViews(AugmentConfig(), 32)(torch.rand(2, 32, 32, 3))


def test_blur_kernel_fits_the_crop():
    assert blur_kernel_size(2.0, 32) == 9
    assert blur_kernel_size(2.0, 8) == 7
    assert blur_kernel_size(0.1, 32) == 3


def test_stain_jitter_changes_stain_amounts_per_cell_and_keeps_their_vectors(crops):
    """Real crops: s = 0 is the identity; s > 0 moves each crop's colours differently, and every
    jittered pixel is still a mix of the H, E and DAB vectors (no new hue is invented)."""
    from skimage.color import rgb2hed

    x = crops.permute(0, 3, 1, 2).float().div(255.0).clamp(min=1 / 255)
    assert torch.allclose(StainJitter(0.0)(x), x, atol=1e-5)
    torch.manual_seed(0)
    y = StainJitter(0.3)(x)
    assert y.shape == x.shape and y.min() >= 0.0 and y.max() <= 1.0
    change = (y - x).abs().mean(dim=(1, 2, 3))
    assert change.min() > 0.005 and len(set(change.tolist())) == len(x)
    # per crop, the haematoxylin channel is an affine map of the input's: amount x scale + shift
    hed_x = rgb2hed(x[0].permute(1, 2, 0).numpy().astype(np.float64))[..., 0].ravel()
    hed_y = rgb2hed(y[0].permute(1, 2, 0).numpy().astype(np.float64))[..., 0].ravel()
    unclipped = (y[0] > 1.5 / 255).all(0).ravel().numpy() & (y[0] < 1).all(0).ravel().numpy()
    assert np.corrcoef(hed_x[unclipped], hed_y[unclipped])[0, 1] > 0.99


def test_stain_jitter_is_in_the_views_only_when_asked():
    assert not any(isinstance(m, StainJitter) for m in CellViews(AugmentConfig(), 32).query)
    views = CellViews(AugmentConfig(stain=0.2), 32)
    assert isinstance(views.query[0], StainJitter)  # before the colour jitter
    assert any(isinstance(m, StainJitter) for m in views.key)
