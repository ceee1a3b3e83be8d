"""End-to-end label quality (``benchmark --cells detected``): real images segmented, CCRL trained
for a few steps, detections matched to typed dots and scored beside the baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CONSEP_PATCHES, make_brca_folder
from wsi_ccrl_cli.main import cli

from wsi_ccrl.bench.datasets.common import TypedImage
from wsi_ccrl.bench.detected import match_cohort, score_clusters
from wsi_ccrl.io.store import CellStore

TINY = """inherit: benchmark-brca-m2c-quick.yaml
segment:
  segmenter: embedded
train:
  max_steps: 3
benchmark:
  seeds: [0]
  train_seeds: [0]
  models: [ccrl, shape_colour, morphological]
"""


@pytest.mark.slow
def test_brca_layout_end_to_end(tmp_path):
    data = make_brca_folder(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "out"
    args = ["benchmark", "brca-m2c", "--data-dir", str(data), "--config", str(config)]
    result = CliRunner().invoke(
        cli, [*args, "--cohort", "val", "--evaluate", "val", "--out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    r = json.loads((out / "results.json").read_text())
    c = r["detection"]
    assert c["images"] == 4 and r["segmenter"] == "embedded"
    # the bundled segmenter finds most nuclei of real H&E at 20x (resampled to 0.25 µm/px)
    assert c["matched"] >= 0.6 * c["truth"] and c["matched"] <= c["detected"]
    assert r["n_evaluated"] == c["matched"] == sum(c["classes"])
    assert set(r["models"]) == {
        "ccrl",
        "ccrl, embedding alone (l2)",
        "shape_colour",
        "morphological",
    }
    for model in r["models"].values():
        for scope in ("evaluated", "cohort"):
            s = model["summary"][scope]
            assert 0 <= s["purity"]["mean"] <= 1 and -1 <= s["ari"]["mean"] <= 1
    table = (out / "results.md").read_text()
    assert "| Shape and colour (7 numbers) |" in table and "| CCRL |" in table
    stores = sorted((out / "stores").glob("*.zarr"))
    assert len(stores) == 4 and CellStore.open(stores[0]).attrs["slide"]["mpp"] == 0.5


def test_brca_needs_detected_cells(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["benchmark", "brca-m2c", "--data-dir", str(tmp_path), "--cells", "ground-truth"],
    )
    assert result.exit_code == 2 and "use --cells detected" in result.output
    result = CliRunner().invoke(cli, ["benchmark", "brca-m2c", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "brca_ds_train.txt not found" in result.output


def test_matching_is_one_to_one_within_the_radius(tmp_path, small_store_factory):
    path = small_store_factory("slide")
    store = CellStore.open(path)
    centroid = store["centroid"][:].astype(np.float64)
    n = len(centroid)
    points = centroid[::2] + 0.4  # every other cell has a dot 0.4 px away, at 0.5 µm/px
    classes = np.arange(len(points)) % 3
    image = TypedImage(CONSEP_PATCHES, 0.5, points, classes, "val", "s")
    cohort = match_cohort([path], [image], radius_um=1.0, n_classes=3)
    gt = cohort.gt_class[0]
    assert gt.shape == (n,) and np.array_equal(gt[::2], classes) and (gt[1::2] == -1).all()
    far = match_cohort([path], [image], radius_um=0.1, n_classes=3)  # 0.2 px: no dot that close
    assert (far.gt_class[0] == -1).all() and far.counts["matched"] == 0


def test_scores_count_only_the_scored_rows():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 50)
    x = np.eye(3)[y] * 10 + rng.normal(0, 0.1, (150, 3))
    scored = {"all": np.arange(150), "first": np.arange(50)}
    runs = score_clusters(x, np.arange(0, 150, 2), scored, y, 3, (0, 1), 2)
    assert [r["ami"] for r in runs["all"]] == pytest.approx([1.0, 1.0])
    assert [r["purity"] for r in runs["first"]] == pytest.approx([1.0, 1.0])


@pytest.mark.slow
def test_a_new_dataset_is_one_class_and_one_decorator(tmp_path):
    """A data set registered in a test (BRCA-M2C's layout read under another name) is a valid
    ``benchmark DATASET`` and runs end to end; an unknown name is one line listing the known."""
    from wsi_ccrl.bench.datasets import DATASETS, BenchmarkDataset, register_dataset
    from wsi_ccrl.bench.datasets.brca_m2c import CLASSES, read_split

    @register_dataset("dots-twin")
    class DotsTwin(BenchmarkDataset):
        classes = CLASSES
        cells = "detected"
        cohort = ("val",)

        def typed_images(self, data_dir, cfg, splits):
            return [im for s in splits for im in read_split(data_dir, s)]

    try:
        data = make_brca_folder(tmp_path / "data")
        config = tmp_path / "twin.yaml"
        config.write_text(
            TINY.replace("models: [ccrl, shape_colour, morphological]", "models: [shape_colour]")
            + "  dataset: dots-twin\n"
        )
        out = tmp_path / "out"
        args = ["benchmark", "dots-twin", "--data-dir", str(data), "--config", str(config)]
        result = CliRunner().invoke(cli, [*args, "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        r = json.loads((out / "results.json").read_text())
        assert r["detection"]["images"] == 4 and set(r["models"]) == {"shape_colour"}
    finally:
        DATASETS.pop("dots-twin")
    result = CliRunner().invoke(cli, ["benchmark", "dots-twin", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert (
        "benchmark.dataset: unknown 'dots-twin' (known: consep, nucls, brca-m2c)" in result.output
    )
