"""HoVer-Net through TIAToolbox's real engine, with a locally saved random state dict (no download)."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import SAMPLE_SLIDE

from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.io.slide import Slide
from wsi_ccrl.io.tiles import plan_tiles
from wsi_ccrl.segment import build_segmenter
from wsi_ccrl.segment.hovernet import (
    HoVerNetSegmenter,
    _lattice_polygon_pixels,
    nuclei_from_tiatoolbox,
)
from wsi_ccrl.segment.pipeline import tile_cells

TILE = 68  # + 2 x 46 px context = 160, a size HoVer-Net-fast accepts


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """HoVer-Net-fast (PanNuke types) with random weights saved locally: no download."""
    from tiatoolbox.models.architecture.hovernet import HoVerNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hovernet") / "hovernet_random.pth"
    torch.save(HoVerNet(num_types=6, mode="fast").state_dict(), path)
    return build_segmenter(
        SegmentConfig(segmenter="hovernet", weights=str(path), device="cpu", batch_size=1)
    )


@pytest.mark.slow
def test_engine_runs_on_a_tile_in_its_frame(segmenter):
    seg = segmenter
    assert seg.mpp == 0.25 and seg.margin == 46 and seg.padding(TILE) == (46, 46)
    assert seg.describe()["weights"].endswith("hovernet_random.pth")
    assert seg.describe()["types"]["1"] == "Neoplastic"
    with Slide.open(SAMPLE_SLIDE) as slide:
        tile, _ = slide.read_scaled(1100, 1500, 1100 + TILE / 2, 1500 + TILE / 2, TILE, TILE)
    raw = seg.run_engine(np.pad(tile, (*[seg.padding(TILE)] * 2, (0, 0)), mode="reflect")[None])
    # the engine's dict output: per image, instance map in the tile's frame plus instance arrays
    assert {"box", "centroid", "contours", "prob", "type"} <= set(raw)
    assert np.asarray(raw["predictions"][0]).shape == (TILE, TILE)
    nuc = nuclei_from_tiatoolbox(raw, 0, tile_shape=(TILE, TILE))  # random weights: any number
    assert (nuc.centroid >= -0.5).all() and (nuc.centroid < TILE - 0.5).all()
    assert nuc.contour_offsets[-1] == len(nuc.contour_xy)


def _engine_output(seg):
    """TIAToolbox's own HoVer-Net post-processing and dict output (the engine's code path after
    inference) on ideal head maps: two nuclei of known centre, radius and type."""
    yy, xx = np.mgrid[:TILE, :TILE].astype(float)
    np_map, hv, tp = np.zeros((TILE, TILE)), np.zeros((TILE, TILE, 2)), np.zeros((TILE, TILE))
    for cx, cy, r, t in [(20, 25, 7, 2), (45, 40, 9, 5)]:
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        np_map[disc], tp[disc] = 1, t
        hv[disc, 0], hv[disc, 1] = (xx[disc] - cx) / r, (yy[disc] - cy) / r
    raw = {"probabilities": [np_map[None, ..., None], hv[None], tp[None, ..., None]]}
    post = seg.engine.post_process_patches(raw)
    return seg.engine.save_predictions(post, output_type="dict"), np_map


@pytest.mark.slow
def test_adapter_maps_engine_output_to_level0(segmenter):
    out, np_map = _engine_output(segmenter)
    nuc = nuclei_from_tiatoolbox(out, 0, tile_shape=(TILE, TILE))
    order = np.argsort(nuc.centroid[:, 0])
    nuc = nuc.select(order)
    np.testing.assert_allclose(nuc.centroid, [[20, 25], [45, 40]], atol=0.05)
    np.testing.assert_array_equal(nuc.bbox, [[13, 18, 28, 33], [36, 31, 55, 50]])
    assert nuc.area.sum() == np_map.sum()
    np.testing.assert_array_equal(nuc.seg_type, [2, 5])
    np.testing.assert_allclose(nuc.seg_prob, [1, 1], atol=1e-6)
    # this tile's segmenter frame starts at target px (956, 556) of a 0.5 µm/px slide
    plan = plan_tiles((4000, 4000), 0.5, 0.25, tile_size=TILE, overlap=4, roi=(480, 280, 30, 30))
    tile = plan.tiles[0]
    assert tile.seg[:2] == (956, 556) and tile.core[:2] == (960, 560)
    image = np.full((TILE, TILE, 3), 200, np.uint8)
    mapping = (tile.read[0] * 0.5, tile.read[1] * 0.5, 0.5, 0.5)
    cells = tile_cells(tile, image, mapping, nuc, plan, SegmentConfig(crop_size=8))
    # the core is [960, 1020) x [560, 620) in target px: both centres (976, 581), (1001, 596) in it
    assert len(cells) == 2
    expected = [[(956 + 20 + 0.5) * 0.5, (556 + 25 + 0.5) * 0.5]]  # pixel-edge frame
    expected += [[(956 + 45 + 0.5) * 0.5, (556 + 40 + 0.5) * 0.5]]
    np.testing.assert_allclose(cells.centroid, expected, atol=0.03)
    np.testing.assert_array_equal(cells.bbox[0], [(956 + 13) // 2, (556 + 18) // 2, 492, 295])
    np.testing.assert_allclose(cells.area, nuc.area * 0.25)
    assert cells.seg_type.tolist() == [2, 5]
    assert cells.crops.shape == (2, 8, 8, 3)


def test_polygon_pixel_count_matches_masks():
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = np.zeros((60, 60), np.uint8)
        cv2.ellipse(
            mask,
            (30, 30),
            tuple(int(v) for v in rng.integers(3, 20, 2)),
            float(rng.integers(0, 180)),
            0,
            360,
            1,
            -1,
        )
        c = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0][0][:, 0]
        got = _lattice_polygon_pixels(c.astype(float), np.array([0, len(c)]))
        assert got[0] == mask.sum()


def test_bad_model_weights_and_offline_download(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="not a TIAToolbox HoVer-Net model"):
        HoVerNetSegmenter(model="resnet18-kather100k", device="cpu")
    with pytest.raises(WsiCcrlError, match="file not found"):
        HoVerNetSegmenter(weights=tmp_path / "none.pth", device="cpu")
    junk = tmp_path / "junk.pth"
    torch.save({"conv.weight": torch.zeros(1)}, junk)
    with pytest.raises(WsiCcrlError, match="cannot load HoVer-Net weights"):
        HoVerNetSegmenter(weights=junk, device="cpu")
    for foreign in (SAMPLE_SLIDE, _pickled_module(tmp_path)):  # not torch at all; pickled code
        with pytest.raises(WsiCcrlError) as err:
            HoVerNetSegmenter(weights=foreign, device="cpu")
        assert str(err.value) == (
            f"{foreign} is not a HoVer-Net state dict for hovernet_fast-pannuke "
            "(expected a .pth of TIAToolbox's HoVer-Net weights)"
        )
    from tiatoolbox import rcParam

    monkeypatch.setitem(rcParam, "TIATOOLBOX_HOME", tmp_path / "empty-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WsiCcrlError) as err:
        HoVerNetSegmenter(model="hovernet_original-consep", device="cpu", offline=True)
    msg = str(err.value)
    assert "--weights" in msg and "--segmenter watershed" in msg and "\n" not in msg


def _pickled_module(folder: Path) -> Path:
    """A whole pickled ``nn.Module``, as other tools save models: refused by weights_only."""
    path = folder / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    return path


def test_offline_is_scoped_and_tiatoolbox_errors_are_not_hidden(monkeypatch, caplog):
    import huggingface_hub.constants as hub

    from wsi_ccrl.segment.hovernet import _hub_offline, _quiet

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    with _hub_offline(True):
        assert os.environ["HF_HUB_OFFLINE"] == "1" and hub.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ and hub.HF_HUB_OFFLINE is False
    caplog.set_level("WARNING", logger="wsi_ccrl")
    with _quiet():
        print("Inferring patches: 100%|##########| 3/3")
        print("|12:00:00.000| [WARNING] the resolution is odd")
    assert "Inferring" not in caplog.text and "resolution is odd" in caplog.text
    with pytest.raises(RuntimeError, match="boom"), _quiet():
        print("the reason it failed")
        raise RuntimeError("boom")
    assert "the reason it failed" in caplog.text
