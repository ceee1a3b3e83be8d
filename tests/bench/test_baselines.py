"""Baselines: finite features of the right shape on real CoNSeP cells; moments against OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from wsi_ccrl.bench import baselines
from wsi_ccrl.errors import WsiCcrlError


@pytest.fixture
def cells(tile10_cells):
    return tile10_cells


def test_polygon_moments_match_opencv(cells):
    m = baselines.polygon_moments(cells.contour_offsets, cells.contour_xy)
    hu = baselines.hu_moments(m)
    for i in (0, 5, len(cells) - 1):
        poly = cells.contour_xy[cells.contour_offsets[i] : cells.contour_offsets[i + 1]]
        ref = cv2.moments(poly)
        for key in ("m00", "m10", "m01", "m20", "m11", "m02", "m30", "m21", "m12", "m03"):
            assert m[key][i] == pytest.approx(ref[key], rel=1e-6)
        assert np.allclose(hu[i], cv2.HuMoments(ref).ravel(), rtol=1e-5, atol=1e-12)
    # a clockwise polygon gives the same (positive) moments
    flipped = baselines.polygon_moments(
        np.array([0, 4]), np.array([[0, 0], [0, 2], [3, 2], [3, 0]])
    )
    assert flipped["m00"][0] == pytest.approx(6.0)


def test_morphological_features(cells):
    f = baselines.Morphological().fit(cells).transform(cells)
    assert f.shape == (len(cells), len(baselines.MORPH_FEATURES)) == (len(cells), 29)
    assert np.isfinite(f).all()
    names = baselines.MORPH_FEATURES
    # the polygon runs through boundary pixel centres: a little under the pixel count
    area = f[:, names.index("area")]
    assert ((area > 0) & (area <= np.maximum(cells.area, 1))).all()
    assert ((f[:, names.index("solidity")] > 0.5) & (f[:, names.index("solidity")] <= 1.0)).all()


def test_manual_features(cells):
    lbp = baselines.lbp_histograms(cells.crops)
    assert lbp.shape == (len(cells), 10 + 18)
    assert np.allclose(lbp[:, :10].sum(1), 1) and np.allclose(lbp[:, 10:].sum(1), 1)
    # the mosaic gives each crop its own histogram: same as skimage on the crop alone
    from skimage.feature import local_binary_pattern

    grey = baselines._grey(cells.crops[:1])[0]
    padded = np.pad(grey, 2, mode="reflect")
    own = local_binary_pattern(padded, 8, 1, method="uniform")[2:-2, 2:-2].astype(int)
    assert np.allclose(lbp[0, :10], np.bincount(own.ravel(), minlength=10) / own.size)
    model = baselines.Manual(words=8).fit(cells)
    f = model.transform(cells)
    assert f.shape == (len(cells), 8 + 28) and np.isfinite(f).all()
    assert np.allclose(f[:, :8].sum(1), 1)  # bag of words over the 10 dense keypoints


def test_raw_pixels(cells):
    """The projections on the top principal axes of the crops scaled to [0, 1], as NumPy's SVD
    gives them (each axis up to its sign)."""
    f = baselines.RawPixels(components=10).fit(cells).transform(cells)
    assert f.shape == (len(cells), 10) and np.isfinite(f).all()
    x = cells.crops.reshape(len(cells), -1).astype(np.float64) / 255
    x -= x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    want = x @ vt[:10].T
    signs = np.sign((f * want).sum(axis=0))
    assert np.allclose(f * signs, want, atol=2e-3 * np.abs(want).max())


def test_imagenet_needs_local_weights(cells, tmp_path, monkeypatch):
    import torch
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    message = baselines.imagenet_missing_message()
    assert message and str(tmp_path) in message and "resnet18" in message
    with pytest.raises(WsiCcrlError, match="skipped"):
        baselines.ImageNet(size=32).fit(cells)
    # weights saved from a randomly initialised model stand in for the real file
    path = baselines.imagenet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(resnet18().state_dict(), path)
    assert baselines.imagenet_missing_message() is None
    f = baselines.ImageNet(size=32, batch_size=64).fit(cells).transform(cells)
    assert f.shape == (len(cells), 512) and np.isfinite(f).all()
    # by hand: ImageNet's mean / std on [0, 1] RGB, bilinear resize, the pooled 512-d features
    net = resnet18()
    net.load_state_dict(torch.load(path, weights_only=True))
    net.fc = torch.nn.Identity()
    x = torch.from_numpy(cells.crops[:3]).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=32, mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = net.eval()((x - mean) / std).numpy()
    assert np.allclose(f[:3], want, atol=1e-5) and (f >= 0).all()  # after ReLU and pooling


def test_unknown_baseline():
    with pytest.raises(WsiCcrlError, match="unknown baseline"):
        baselines.make_baseline("sift_only")


def test_a_new_baseline_is_one_class_and_one_decorator(tmp_path):
    """Registered, it is a valid ``benchmark.models`` entry, scaled by its rule and run by the
    protocol like the paper's baselines."""
    from test_protocol import tiny_config, tiny_consep

    from wsi_ccrl.bench import protocol

    @baselines.register_baseline("mean_colour", "Mean colour", scaling="zscore")
    class MeanColour:
        def __init__(self, seed: int = 0):
            self.seed = seed

        def fit(self, train):
            return self

        def transform(self, cells):
            return cells.crops.reshape(len(cells), -1, 3).mean(1).astype(np.float32)

    try:
        assert baselines.make_baseline("mean_colour", seed=5).seed == 5
        assert "mean_colour" in baselines.baseline_names()
        names = ["train_10_000", "train_10_001", "train_21_000"]
        data = tiny_consep(tmp_path / "consep", names)
        results = protocol.run_benchmark(
            data, tmp_path / "out", tiny_config(models=["mean_colour"])
        )
        assert list(results["models"]) == ["mean_colour"]
        assert "| Mean colour |" in (tmp_path / "out" / "results.md").read_text()
        fit, x = baselines.scale_features("mean_colour", np.eye(3) * 4, np.eye(3) * 4)
        assert np.allclose(fit.std(0), 1.0)
    finally:
        baselines.BASELINES.pop("mean_colour")
    with pytest.raises(Exception, match="benchmark.models: unknown 'mean_colour'"):
        protocol.load_benchmark_config(None, {"models": ["mean_colour"]})
