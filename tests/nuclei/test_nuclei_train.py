"""Training pieces: HV targets vs a per-nucleus reference, data loading, loss, a short run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.nuclei.train import (
    NucleusTrainConfig,
    hovernet_loss,
    hv_targets,
    load_patches,
    make_batch,
    residual_jitter,
    stain_augment,
    train,
)
from wsi_ccrl.segment.embedded import load_nucleus_net
from wsi_ccrl.stain import CONSEP_REFERENCE, lab_stats, lab_to_rgb, rgb_to_lab

CONSEP_PATCHES = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "consep-patches" / "Train"
)
needs_consep = pytest.mark.skipif(not CONSEP_PATCHES.exists(), reason="no shared CoNSeP patches")


def _hv_reference(inst):
    """HoVer-Net's target, one nucleus at a time (the paper's definition)."""
    out = np.zeros((2,) + inst.shape, np.float32)
    for i in np.unique(inst)[1:]:
        ys, xs = np.nonzero(inst == i)
        for axis, c in enumerate((xs, ys)):
            d = c - c.mean()
            d = np.where(
                d < 0, d / -d.min() if d.min() < 0 else 0, d / d.max() if d.max() > 0 else 0
            )
            out[axis][ys, xs] = d
    return out


def test_hv_targets_match_the_per_nucleus_definition():
    rng = np.random.default_rng(0)
    inst = np.zeros((40, 40), np.int32)
    for i in range(1, 8):
        y, x = rng.integers(0, 32, 2)
        inst[y : y + rng.integers(2, 9), x : x + rng.integers(1, 9)] = i * 3  # gaps in the ids
    hv = hv_targets(inst)
    np.testing.assert_allclose(hv, _hv_reference(inst), atol=1e-5)
    assert hv.min() >= -1 and hv.max() <= 1
    assert (hv[:, inst == 0] == 0).all()


def test_loss_is_small_for_perfect_maps_and_large_for_wrong_ones():
    inst = np.zeros((32, 32), np.int32)
    inst[4:14, 6:16], inst[18:30, 10:24] = 1, 2
    fg = torch.from_numpy(inst > 0).float()[None, None]
    hv = torch.from_numpy(hv_targets(inst))[None]
    perfect = torch.cat([(fg * 2 - 1) * 20, hv], 1)
    good, parts = hovernet_loss(perfect, fg, hv)
    bad, _ = hovernet_loss(torch.cat([-perfect[:, :1], -hv], 1), fg, hv)
    assert parts["mse"] == 0 and parts["msge"] == 0
    assert good.item() < 0.01 < 1.0 < bad.item()


@needs_consep
def test_load_patches_by_tile_and_make_batch():
    patches = load_patches(CONSEP_PATCHES, tiles={21})
    assert len(patches) == 16 and set(patches.tile) == {21}
    assert patches.images.shape == (16, 256, 256, 3) and patches.images.dtype == np.uint8
    x, fg, hv = make_batch(patches, np.arange(3), 64, np.random.default_rng(0))
    assert x.shape == (3, 3, 64, 64) and fg.shape == (3, 1, 64, 64) and hv.shape == (3, 2, 64, 64)
    assert x.min() >= 0 and x.max() <= 1 and 0.02 < fg.mean() < 0.8
    # targets are recomputed after the geometry: zero outside nuclei, full range inside
    assert (hv * (1 - fg)).abs().max() == 0 and hv.max() == 1


@needs_consep
def test_stain_augment_changes_colour_not_geometry_and_follows_the_seed():
    image = load_patches(CONSEP_PATCHES, tiles={21}).images[0]
    a = stain_augment(image, 0.3, np.random.default_rng(5))
    b = stain_augment(image, 0.3, np.random.default_rng(5))
    c = stain_augment(image, 0.3, np.random.default_rng(6))
    assert a.shape == image.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 1 and np.abs(a.astype(int) - image).mean() > 1
    # the nuclei stay where they were: dark pixels of the original are still darker than average
    dark = image.mean(2) < np.percentile(image.mean(2), 20)
    assert a.mean(2)[dark].mean() < a.mean(2).mean() - 20


def test_residual_jitter_moves_lab_statistics_within_bounds():
    rng = np.random.default_rng(0)
    lab = np.stack(
        np.broadcast_arrays(
            rng.normal(CONSEP_REFERENCE.mean[0], 12, (64, 64)),
            rng.normal(CONSEP_REFERENCE.mean[1], 6, (64, 64)),
            rng.normal(CONSEP_REFERENCE.mean[2], 7, (64, 64)),
        ),
        -1,
    ).astype(np.float32)
    image = lab_to_rgb(lab)
    before = lab_stats(rgb_to_lab(image))[0]
    shifts = np.array(
        [
            lab_stats(rgb_to_lab(residual_jitter(image, CONSEP_REFERENCE, 0.3, rng)))[0] - before
            for _ in range(6)
        ]
    )
    assert np.abs(shifts).max() > 1  # it moves
    assert np.abs(shifts[:, 0]).max() < 12 and np.abs(shifts[:, 1:]).max() < 8  # within bounds


@needs_consep
def test_make_batch_normalises_like_the_segmenter():
    patches = load_patches(CONSEP_PATCHES, tiles={21})
    rng = np.random.default_rng(0)
    x, _, _ = make_batch(patches, np.arange(4), 128, rng, stain=0.0, reference=CONSEP_REFERENCE)
    for img in (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8):
        mean, _, _ = lab_stats(rgb_to_lab(np.ascontiguousarray(img)))
        np.testing.assert_allclose(mean, CONSEP_REFERENCE.mean, atol=4)
    # with augmentation the residual jitter leaves crops around the reference, not on it
    x, _, _ = make_batch(patches, np.arange(8), 128, rng, stain=0.3, reference=CONSEP_REFERENCE)
    means = [
        lab_stats(rgb_to_lab(np.ascontiguousarray(i)))[0]
        for i in (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    ]
    off = np.abs(np.array(means) - CONSEP_REFERENCE.mean)
    assert off.max() > 2 and off[:, 0].max() < 16


def test_bad_patch_folder_is_a_clear_error(tmp_path):
    with pytest.raises(WsiCcrlError, match="no patches"):
        load_patches(tmp_path)
    with pytest.raises(WsiCcrlError, match="init weights not found"):
        NucleusTrainConfig(init=str(tmp_path / "none.pt")).validate()


@needs_consep
def test_a_short_run_lowers_the_loss_and_writes_loadable_weights(tmp_path):
    patches = load_patches(CONSEP_PATCHES, tiles={3, 21})  # 21 is held back: 16 train patches
    cfg = NucleusTrainConfig(
        out=str(tmp_path / "w.pt"),
        channels=(8, 16, 32),
        epochs=10,
        batch_size=4,
        crop=64,
        lr=3e-3,
        colour_jitter=0.0,
        threads=1,  # on a shared CPU one thread beats two spinning ones
    )  # 16 patches / batch 4 = 4 steps per epoch: 40 steps
    net, losses = train(cfg, patches)
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.85 * np.mean(losses[:4])
    loaded, config = load_nucleus_net(tmp_path / "w.pt")  # weights_only=True inside
    assert config["channels"] == [8, 16, 32] and config["train"]["holdout_tiles"][0] == 21
    # the reference is measured on the training patches (tile 3 only) and recorded with the weights
    assert config["stain_reference"]["mean"][0] > 40 and len(config["stain_reference"]["std"]) == 3
    for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@needs_consep
def test_training_is_reproducible_from_the_seed(tmp_path):
    patches = load_patches(CONSEP_PATCHES, tiles={3})
    kw = dict(channels=(8, 16), batch_size=2, crop=32, max_steps=3, holdout_tiles=(), threads=1)
    a, la = train(NucleusTrainConfig(out=str(tmp_path / "a.pt"), **kw), patches)
    b, lb = train(NucleusTrainConfig(out=str(tmp_path / "b.pt"), **kw), patches)
    assert la == lb
    c, lc = train(NucleusTrainConfig(out=str(tmp_path / "c.pt"), seed=1, **kw), patches)
    assert lc != la


@needs_consep
def test_fine_tuning_starts_from_the_given_weights(tmp_path):
    patches = load_patches(CONSEP_PATCHES, tiles={3})
    kw = dict(channels=(8, 16), batch_size=2, crop=32, holdout_tiles=(), threads=1)
    first, _ = train(NucleusTrainConfig(out=str(tmp_path / "a.pt"), max_steps=3, **kw), patches)
    tiny = dict(lr=1e-12, min_lr=1e-12, weight_decay=0.0, max_steps=1)
    tuned, _ = train(
        NucleusTrainConfig(
            out=str(tmp_path / "b.pt"), init=str(tmp_path / "a.pt"), seed=7, **tiny, **kw
        ),
        patches,
    )
    fresh, _ = train(NucleusTrainConfig(out=str(tmp_path / "c.pt"), seed=7, **tiny, **kw), patches)
    w0, w1, w2 = (m.head.weight for m in (first, tuned, fresh))
    torch.testing.assert_close(w1, w0, atol=1e-6, rtol=0)
    assert not torch.allclose(w2, w0)


@needs_consep
def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    patches = load_patches(CONSEP_PATCHES, tiles={3})
    kw = dict(channels=(8, 16), batch_size=2, crop=32, holdout_tiles=(), threads=1)
    out = str(tmp_path / "w.pt")
    train(NucleusTrainConfig(out=out, max_steps=2, **kw), patches)
    assert (tmp_path / "w.pt.ckpt").is_file() and (tmp_path / "w.pt").is_file()
    _, again = train(NucleusTrainConfig(out=out, max_steps=2, **kw), patches)
    assert again == []  # finished run: resumes at its last step, nothing left to do
    with pytest.raises(WsiCcrlError, match="other settings"):
        train(NucleusTrainConfig(out=out, max_steps=3, **kw), patches)


@needs_consep
def test_holding_back_every_tile_is_an_error(tmp_path):
    patches = load_patches(CONSEP_PATCHES, tiles={21})
    with pytest.raises(WsiCcrlError, match="no training patches"):
        train(NucleusTrainConfig(out=str(tmp_path / "w.pt")), patches)
