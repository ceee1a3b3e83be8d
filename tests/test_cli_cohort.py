"""A user's cohort of plain images, through the installed command: a folder of PNG tiles with
--mpp segments, trains and labels; a blank image (0 cells) is skipped with one warning each time;
a cohort of only blank images stops with one line."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest
from conftest import CONSEP_PATCHES, SAMPLE_SLIDE
from PIL import Image

from wsi_ccrl.io.slide import Slide
from wsi_ccrl.io.store import CellStore

TILES = ("train_10_000", "train_10_001", "train_10_002")  # real CoNSeP patches, 40x


def wsi_ccrl(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "wsi_ccrl_cli.main", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def warnings(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if " WARNING " in line]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """tiles/: three H&E patches and a nearly blank image (glass of the sample slide)."""
    root = tmp_path_factory.mktemp("cohort")
    (root / "tiles").mkdir()
    for name in TILES:
        shutil.copy(CONSEP_PATCHES / "Images" / f"{name}.png", root / "tiles")
    with Slide.open(SAMPLE_SLIDE) as slide:
        Image.fromarray(slide.read_level(1900, 0, 256, 256, 0)).save(root / "tiles" / "blank.png")
    return root


def test_a_folder_of_tiles_segments_trains_and_labels_past_a_blank_one(cohort):
    stores, run, labels = cohort / "stores", cohort / "run", cohort / "labels"
    seg = wsi_ccrl("segment", str(cohort / "tiles"), "--out", str(stores), "--mpp", "0.25",
                   "--segmenter", "embedded", "--tile-size", "512", "--device", "cpu")  # fmt: skip
    assert seg.returncode == 0, seg.stderr[-2000:]
    assert sorted(p.name for p in stores.glob("*.zarr")) == ["blank.zarr"] + [
        f"{n}.zarr" for n in TILES
    ]
    assert CellStore.open(stores / "blank.zarr").n_cells == 0
    assert all(CellStore.open(stores / f"{n}.zarr").n_cells > 20 for n in TILES)

    train = wsi_ccrl("train", "--data", str(stores), "--out", str(run), "--config", "quick",
                     "--max-steps", "2", "--batch-size", "16", "--device", "cpu")  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    assert (
        warnings(train) == [line for line in warnings(train) if "blank.zarr has no cells" in line]
        and len(warnings(train)) == 1
    )
    assert f"model: {run / 'model.pt'}" in train.stdout

    label = wsi_ccrl("label", "--model", str(run / "model.pt"), "--data", str(stores),
                     "--out", str(labels), "--k", "3", "--export", "geojson,csv",
                     "--device", "cpu")  # fmt: skip
    assert label.returncode == 0, label.stderr[-2000:]
    assert len(warnings(label)) == 1 and "blank.zarr has no cells" in warnings(label)[0]
    for name in TILES:
        with open(labels / f"{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == CellStore.open(stores / f"{name}.zarr").n_cells
        assert (labels / f"{name}.geojson").is_file()
    assert not list(labels.glob("blank.*"))


def test_a_cohort_of_only_blank_images_stops_with_one_line(cohort, random_model_file):
    blank = cohort / "blank-only"
    (blank / "tiles").mkdir(parents=True)
    for k in range(2):
        shutil.copy(cohort / "tiles" / "blank.png", blank / "tiles" / f"blank{k}.png")
    seg = wsi_ccrl("segment", str(blank / "tiles"), "--out", str(blank / "stores"), "--mpp",
                   "0.25", "--segmenter", "watershed")  # fmt: skip
    assert seg.returncode == 0, seg.stderr[-2000:]
    expected = "Error: all 2 cell store(s) are empty (blank0.zarr, blank1.zarr): nothing was " \
        "segmented in them"  # fmt: skip
    train = wsi_ccrl("train", "--data", str(blank / "stores"), "--out", str(blank / "run"))
    label = wsi_ccrl("label", "--model", str(random_model_file), "--data", str(blank / "stores"),
                     "--out", str(blank / "labels"))  # fmt: skip
    for result in (train, label):
        assert result.returncode == 1
        said = [line for line in result.stderr.splitlines() if line.strip()]
        assert said == [expected], result.stderr[-2000:]
