import csv
import gzip

import geojson
from click.testing import CliRunner
from wsi_ccrl_cli.main import cli

from wsi_ccrl.io.store import CellStore


def test_label_cli_end_to_end(small_store_factory, random_model_file, tmp_path):
    store = small_store_factory("sample", max_cells=4)
    names = tmp_path / "names.yaml"
    names.write_text("0: Lymphocyte\n1: {name: Tumour, color: '#c81e1e'}\n")
    out = tmp_path / "labels"
    args = ["label", "--model", str(random_model_file), "--data", str(store.parent)]
    opts = ["--device", "cpu", "--batch-size", "8", "--seed", "1", "--out", str(out)]
    result = CliRunner().invoke(
        cli,
        [
            *args,
            *opts,
            "--k",
            "3",
            "--export",
            "geojson,csv",
            "--compress",
            "--names",
            str(names),
            "--save-kmeans",
            str(tmp_path / "km.npz"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Labelled 8 cells of 1 slide(s) into k=3 clusters" in result.output
    assert (
        "File > Import objects" in result.output and "km.npz (reuse with --kmeans)" in result.output
    )
    for name in ("sample.geojson.gz", "sample.csv", "sample.overview.png", "gallery.png"):
        assert (out / name).is_file() and str(out / name) in result.output
    with gzip.open(out / "sample.geojson.gz", "rt") as f:
        data = geojson.load(f)
    assert data.is_valid and len(data["features"]) == 8
    clusters = CellStore.open(store)["cluster"][:]
    named = {0: ("Lymphocyte", [230, 25, 75]), 1: ("Tumour", [200, 30, 30])}
    for feat, c in zip(data["features"], clusters, strict=True):
        cls = feat["properties"]["classification"]
        assert (cls["name"], cls["color"]) == named.get(c, ("Cluster 2", [0, 130, 200]))
    with open(out / "sample.csv", newline="") as f:
        assert [r["cluster_name"] for r in csv.DictReader(f)][:3] == [
            named.get(c, ("Cluster 2",))[0] for c in clusters[:3]
        ]
    assert "seed: 1" in (out / "label_config.yaml").read_text()

    # reuse the centroids: k comes from the file; a conflicting --k is one clear line
    again = CliRunner().invoke(
        cli, [*args, *opts, "--kmeans", str(tmp_path / "km.npz"), "--out", str(tmp_path / "b")]
    )
    assert again.exit_code == 0, again.output
    assert "K-means from" in again.output and "(embeddings reused)" in again.output
    assert (tmp_path / "b" / "sample.geojson").is_file()
    bad = CliRunner().invoke(cli, [*args, *opts, "--kmeans", str(tmp_path / "km.npz"), "--k", "4"])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines() == [
        f"Error: {tmp_path / 'km.npz'} has k=3 but k=4 was asked; drop --k"
    ]


def test_label_cli_usage_errors(random_model_file, tmp_path):
    base = ["label", "--model", str(random_model_file), "--data", str(tmp_path)]
    result = CliRunner().invoke(cli, [*base, "--export", "geojson,pdf"])
    assert result.exit_code == 2 and "unknown export format 'pdf'" in result.output
    result = CliRunner().invoke(cli, base)
    assert result.exit_code == 1 and "no cell stores" in result.output


def test_a_file_that_is_not_a_model_is_one_line(sample_slide, tmp_path):
    """A slide, another tool's pickled model, or a torch file of ours of another kind."""
    import torch

    pickled = tmp_path / "other-tool.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    plain = tmp_path / "tensors.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    for wrong in (sample_slide, pickled, plain):
        result = CliRunner().invoke(cli, ["label", "--model", str(wrong), "--data", str(tmp_path)])
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == [
            f"Error: {wrong} is not a wsi-ccrl model file (expected the model.pt of `wsi-ccrl train`)"
        ]
