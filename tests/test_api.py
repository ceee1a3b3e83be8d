"""The public API: the steps of the command line as functions, importable from ``wsi_ccrl``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import SAMPLE_SLIDE

import wsi_ccrl


def test_every_name_of_the_api_resolves_to_its_module():
    for name in wsi_ccrl.__all__:
        assert getattr(wsi_ccrl, name) is not None, name
    assert wsi_ccrl.segment_slides.__module__ == "wsi_ccrl.segment.cohort"


def test_importing_the_package_loads_no_torch():
    code = "import sys, wsi_ccrl; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_docstring_example_runs_on_the_sample_slide(tmp_path):
    """segment -> train -> label through the API on a small region of the bundled slide."""
    from wsi_ccrl import CellStore, label_stores, load_section, profile, segment_slides, train

    demo = profile("demo")
    seg = load_section("segment", demo, {"roi": (1000, 850, 200, 200), "device": "cpu"})
    report = segment_slides([SAMPLE_SLIDE], tmp_path / "cells", seg)
    assert report.ok and len(report.done) == 1
    cfg = load_section("train", demo, {"epochs": 1, "max_steps": 2, "device": "cpu"})
    model = train(report.done, tmp_path / "model", cfg)
    label_stores(model, report.done, tmp_path / "labels", load_section("label", demo, {"k": 3}))
    clusters = CellStore.open(report.done[0])["cluster"][:]
    assert len(clusters) > 0 and set(np.unique(clusters)) <= {0, 1, 2}
