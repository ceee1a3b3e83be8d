"""End to end, as a new user runs it: `wsi-ccrl demo` on the bundled slide (a region of it)."""

import geojson
import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image
from qupath_geojson import check_qupath_geojson
from shapely.geometry import Point, shape
from wsi_ccrl_cli.main import cli

from wsi_ccrl.io.store import CellStore

TINY = """\
inherit: quick
segment:
  segmenter: embedded
  tile_size: 512
train:
  epochs: 1
  batch_size: 16
  queue_size: 64
  max_steps: 3
label:
  k: 3
  batch_size: 64
  export: [geojson, csv]
"""


def test_demo_runs_the_whole_chain(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "demo"
    roi = ["--roi", "1000,1350,420,420"]  # the bundled slide by default
    result = CliRunner().invoke(cli, ["demo", "--config", str(config), *roi, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Import objects" in result.output

    # the cell store: real cells inside the region, crops, contours
    store = CellStore.open(out / "stores" / "CMU-1-Small-Region.zarr")
    n = store.n_cells
    assert n >= 20, n
    centroid = store["centroid"][:]
    assert (centroid[:, 0] >= 1000).all() and (centroid[:, 0] < 1420).all()
    assert (centroid[:, 1] >= 1350).all() and (centroid[:, 1] < 1770).all()
    assert store["crops"].shape == (n, 32, 32, 3)
    assert set(np.unique(store["cluster"][:])) <= {0, 1, 2}

    # the model loads without pickled code
    payload = torch.load(out / "run" / "model.pt", map_location="cpu", weights_only=True)
    assert payload["crop_size"] == 32 and "momentum_backbone" in payload

    # GeoJSON: every cell exactly once, as a detection whose polygon holds its centroid
    # ... as QuPath's reader takes it (tests/qupath_geojson.py)
    summary = check_qupath_geojson(out / "labels" / "CMU-1-Small-Region.geojson")
    assert summary["features"] == n and summary["geometries"].get("Polygon", 0) >= 0.95 * n
    with open(out / "labels" / "CMU-1-Small-Region.geojson") as f:
        data = geojson.load(f)
    assert data.is_valid and data["type"] == "FeatureCollection"
    features = data["features"]
    assert len(features) == n and len({f["id"] for f in features}) == n
    for feat, (x, y) in zip(features, centroid, strict=True):
        assert feat["properties"]["objectType"] == "detection"
        assert shape(feat["geometry"]).buffer(1.0).contains(Point(x, y))

    # the pictures
    for name in ("CMU-1-Small-Region.overview.png", "gallery.png"):
        with Image.open(out / "labels" / name) as img:
            assert img.width > 100 and img.height > 100
