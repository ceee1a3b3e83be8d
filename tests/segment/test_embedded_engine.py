"""The embedded segmenter on a CPU engine finds the nuclei torch finds on real patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_ccrl import engine
from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.nuclei.data import load_source
from wsi_ccrl.nuclei.quantise import shipped_int8
from wsi_ccrl.segment import build_segmenter
from wsi_ccrl.segment.embedded import DEFAULT_WEIGHTS, EmbeddedSegmenter
from wsi_ccrl.segment.evaluate import detection_score

pytest.importorskip("onnx")

CONSEP = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "consep" / "Train"


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    """Three held-back CoNSeP patches and one that needs padding."""
    tiles = [im.image for im in load_source(CONSEP, "consep", names={"tile21"})[:3]]
    return [*tiles, tiles[0][:200, :230]]


@pytest.fixture(scope="module")
def reference(tiles):
    seg = EmbeddedSegmenter(device="cpu", engine="torch")
    assert seg.engine is None
    seg.fit_slide(tiles)
    return seg.predict(tiles), seg.segment(tiles)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_engine_maps_and_nuclei_match_torch(name, tiles, reference):
    """ONNX Runtime runs the shipped int8 model, OpenVINO fp32 or bf16: the nuclei are torch's."""
    pytest.importorskip(name)
    seg = EmbeddedSegmenter(device="cpu", engine=name)
    assert seg.engine is not None
    seg.fit_slide(tiles)
    maps, nuclei = reference
    for (p0, h0), (p1, h1) in zip(maps, seg.predict(tiles), strict=True):
        assert p1.shape == p0.shape and h1.shape == h0.shape
        assert np.abs(p1 - p0).mean() < 5e-3 and np.abs(h1 - h0).mean() < 5e-3
        assert np.abs(p1 - p0).max() < 0.2
    for ref, got in zip(nuclei, seg.segment(tiles), strict=True):
        assert detection_score(got.centroid, ref.centroid, 3.0).f1 >= 0.95


def test_onnxruntime_runs_the_int8_model_of_the_shipped_weights_only(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    loaded = []
    real = engine.load_runner

    def spy(name, path, *args):
        loaded.append(Path(path))
        return real(name, path, *args)

    monkeypatch.setattr(engine, "load_runner", spy)
    monkeypatch.setenv("WSI_CCRL_ENGINE_CACHE", str(tmp_path))
    EmbeddedSegmenter(device="cpu", engine="onnxruntime")
    assert loaded == [shipped_int8(DEFAULT_WEIGHTS)]
    EmbeddedSegmenter(DEFAULT_WEIGHTS.with_name("nucleus_unet_v2.pt"), "cpu", engine="onnxruntime")
    assert loaded[-1].parent == tmp_path and not loaded[-1].name.endswith(".int8.onnx")


def test_the_config_picks_the_engine():
    seg = build_segmenter(SegmentConfig(segmenter="embedded", device="cpu", engine="torch"))
    assert seg.engine is None
    if engine.resolve_engine("auto", engine.torch.device("cpu"), "nucleus_unet") != "torch":
        pytest.importorskip(engine.AUTO_CPU["nucleus_unet"])
        seg = build_segmenter(SegmentConfig(segmenter="embedded", device="cpu", engine="auto"))
        assert seg.engine is not None
