"""The whole job on one slide, as a new user first sees it: segment → train → label → export.

Each step is the same library call its command makes, with the sections of one config profile
(the shipped ``demo`` profile by default: ``quick`` with fewer epochs), so the demo is the real
pipeline, only smaller.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from wsi_ccrl.config import load_section
from wsi_ccrl.log import get_logger

log = get_logger(__name__)


def run_demo(
    slide: str | Path,
    out: str | Path,
    config_path: str | Path,
    epochs: int | None = None,
    roi: tuple[int, int, int, int] | None = None,
) -> dict[str, Path]:
    """Run the pipeline on ``slide`` (or its ``roi``) into ``out``; return what was written.

    Re-running resumes: a finished store is reused and training continues from its checkpoint.
    """
    from wsi_ccrl.ccrl.train import train
    from wsi_ccrl.label.pipeline import label_stores
    from wsi_ccrl.segment.pipeline import segment_slide

    out = Path(out)
    # validate every section before the first minute of work
    seg_cfg = load_section("segment", config_path, {"roi": roi})
    train_cfg = load_section("train", config_path, {"epochs": epochs})
    label_cfg = load_section("label", config_path)
    if train_cfg.crop_size != seg_cfg.crop_size:
        train_cfg = dataclasses.replace(train_cfg, crop_size=seg_cfg.crop_size)

    log.info("1/3 segment %s", slide)
    store = segment_slide(slide, out / "stores", seg_cfg)
    log.info("2/3 train CCRL on %d cells", store.n_cells)
    model = train([store.path], out / "run", train_cfg)
    log.info("3/3 label and export")
    summary = label_stores(model, [store.path], out / "labels", label_cfg)

    written = {"cell store": store.path, "model": model}
    for result in summary.slides:
        for path in result.files:
            written[_describe(path)] = path
    written["cluster gallery"] = summary.gallery
    written["report"] = summary.report
    return written


def _describe(path: Path) -> str:
    name = path.name
    if name.endswith((".geojson", ".geojson.gz")):
        return "QuPath GeoJSON"
    if name.endswith(".overview.png"):
        return "overview PNG"
    if name.endswith(".csv"):
        return "cells CSV"
    return path.suffix.lstrip(".") or name
