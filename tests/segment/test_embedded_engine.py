"""The embedded segmenter on a CPU engine finds the nuclei torch finds on real patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.nuclei.data import load_source
from wsi_ccrl.segment import build_segmenter
from wsi_ccrl.segment.embedded import EmbeddedSegmenter

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CONSEP = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "consep" / "Train"


def test_onnxruntime_maps_and_nuclei_match_torch():
    tiles = [im.image for im in load_source(CONSEP, "consep", names={"tile21"})[:3]]
    tiles.append(tiles[0][:200, :230])  # a size that needs padding
    ref, eng = (EmbeddedSegmenter(device="cpu", engine=e) for e in ("torch", "onnxruntime"))
    assert ref.engine is None and eng.engine is not None
    for seg in (ref, eng):
        seg.fit_slide(tiles)
    for (p0, h0), (p1, h1) in zip(ref.predict(tiles), eng.predict(tiles), strict=True):
        np.testing.assert_allclose(p1, p0, atol=1e-3)
        np.testing.assert_allclose(h1, h0, atol=2e-3)
    counts = [[len(n) for n in seg.segment(tiles)] for seg in (ref, eng)]
    assert counts[0] == counts[1] and sum(counts[0]) > 20


def test_the_config_picks_the_engine():
    seg = build_segmenter(SegmentConfig(segmenter="embedded", device="cpu", engine="torch"))
    assert seg.engine is None
    seg = build_segmenter(SegmentConfig(segmenter="embedded", device="cpu", engine="onnxruntime"))
    assert seg.engine is not None
