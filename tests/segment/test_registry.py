"""Segmenters by name: a new one is one class and one ``@register``; unknown names fail early."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLE_SLIDE

from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.errors import ConfigError
from wsi_ccrl.io.store import CellStore
from wsi_ccrl.segment import SEGMENTERS, Segmenter, build_segmenter, register, segmenter_names
from wsi_ccrl.segment.base import nuclei_from_labels
from wsi_ccrl.segment.cohort import segment_slides


def test_a_registered_segmenter_runs_the_whole_pipeline(tmp_path):
    """A toy segmenter (a 6 x 6 px square every 40 px) registered in a test writes a store."""

    @register("lattice")
    class Lattice(Segmenter):
        name = "lattice"

        def __init__(self, cfg: SegmentConfig):
            self.mpp = cfg.target_mpp

        def segment(self, tiles):
            out = []
            for t in tiles:
                labels = np.zeros(t.shape[:2], np.int32)
                for k, (y, x) in enumerate(np.ndindex(t.shape[0] // 40, t.shape[1] // 40), 1):
                    labels[y * 40 + 17 : y * 40 + 23, x * 40 + 17 : x * 40 + 23] = k
                out.append(nuclei_from_labels(labels))
            return out

    try:
        assert "lattice" in segmenter_names() and segmenter_names()[0] == "auto"
        cfg = SegmentConfig(segmenter="lattice", roi=(1000, 850, 200, 200), device="cpu")
        report = segment_slides([SAMPLE_SLIDE], tmp_path, cfg)
        assert report.ok, report.failed
        store = CellStore.open(report.done[0])
        assert store.attrs["segmenter"]["name"] == "lattice"
        assert store.n_cells > 50 and np.allclose(store["area"][:], store["area"][0])
    finally:
        SEGMENTERS.pop("lattice")


def test_an_unknown_segmenter_is_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown 'hoverfast' \(known: auto, watershed"):
        build_segmenter(SegmentConfig(segmenter="hoverfast"))
    with pytest.raises(ConfigError, match="a segmenter's name"):
        SegmentConfig(segmenter="../x").validate()
