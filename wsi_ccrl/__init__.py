"""wsi-ccrl: label every cell of H&E whole-slide images by unsupervised cell type (CCRL).

The steps of the command line, as functions (imported on first use, so ``import wsi_ccrl`` stays
light)::

    from wsi_ccrl import load_section, profile, segment_slides, train, label_stores

    quick = profile("quick")
    report = segment_slides(["slide.svs"], "cells", load_section("segment", quick))
    model = train(report.done, "model", load_section("train", quick))
    label_stores(model, report.done, "labels", load_section("label", quick))
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "segment_slides": "wsi_ccrl.segment.cohort",  # slides -> one cell store each
    "train": "wsi_ccrl.ccrl.train",  # cell stores -> model.pt
    "label_stores": "wsi_ccrl.label.pipeline",  # model + stores -> clusters, GeoJSON / CSV / ...
    "fit_kmeans": "wsi_ccrl.label.pipeline",  # K-means from a sample of a cohort (sharded label)
    "run_benchmark": "wsi_ccrl.bench.protocol",  # the paper's protocol on CoNSeP / NuCLS
    "CellStore": "wsi_ccrl.io.store",  # read a store's cells, crops, outlines and labels
    "load_section": "wsi_ccrl.config",  # one command's frozen config from YAML + overrides
    "profile": "wsi_ccrl.resources",  # the path of a shipped profile (quick, ccrl, ...)
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'wsi_ccrl' has no attribute {name!r}")
