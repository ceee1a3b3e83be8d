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
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].endswith(
        "unknown export format 'pdf' (valid: geojson, csv, anndata)"
    )
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


def test_fit_once_then_label_shares_equals_one_run(random_model_file, tmp_path):
    """``--fit-only`` embeds only the sample; ``--kmeans --shard I/N`` jobs then give every cell
    the cluster a one-process run gives it (a job array over a cohort)."""
    import shutil

    import numpy as np
    from conftest import LABEL_PATCHES, build_label_store
    from wsi_ccrl_cli.main import cli as main_cli

    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.cluster import KMeansModel

    one, cohort = tmp_path / "one", tmp_path / "cohort"
    for i, patches in enumerate([LABEL_PATCHES[:2], LABEL_PATCHES[2:], LABEL_PATCHES[1:3]]):
        build_label_store(one / f"s{i}.zarr", patches=patches, max_cells=15)
    shutil.copytree(one, cohort)
    base = ["label", "--model", str(random_model_file), "--device", "cpu", "--batch-size", "16",
            "--k", "4", "--fit-sample", "60", "--export", "csv"]  # fmt: skip
    r = CliRunner().invoke(
        main_cli, [*base, "--data", str(one), "--out", str(tmp_path / "o1"),
                   "--save-kmeans", str(tmp_path / "one.npz")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    km_file = tmp_path / "km.npz"
    r = CliRunner().invoke(
        main_cli, [*base, "--data", str(cohort), "--fit-only", "--save-kmeans", str(km_file)]
    )
    assert r.exit_code == 0, r.output
    assert "fitted on 60 sampled cells" in r.output
    assert all("embedding" not in CellStore.open(p) for p in cohort.glob("*.zarr"))
    a, b = KMeansModel.load(tmp_path / "one.npz"), KMeansModel.load(km_file)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, atol=1e-5)
    for shard in ("0/2", "1/2"):
        r = CliRunner().invoke(
            main_cli, [*base, "--data", str(cohort), "--kmeans", str(km_file),
                       "--shard", shard, "--out", str(tmp_path / "o2")],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
    assert "Labelled" in r.output and "1 slide(s)" in r.output  # shard 1/2: the second store
    for path in sorted(one.glob("*.zarr")):
        expected = CellStore.open(path)["cluster"][:]
        assert np.array_equal(CellStore.open(cohort / path.name)["cluster"][:], expected)
    assert (tmp_path / "o2" / "gallery-shard0of2.png").is_file()


def test_shard_and_fit_only_misuse_is_one_line(random_model_file, small_store_factory, tmp_path):
    store = small_store_factory("s", max_cells=4)
    base = ["label", "--model", str(random_model_file), "--data", str(store.parent), "--k", "2"]
    r = CliRunner().invoke(cli, [*base, "--shard", "0/2"])
    assert r.exit_code == 1 and "fit them first (label --fit-only" in r.output
    r = CliRunner().invoke(cli, [*base, "--fit-only"])
    assert r.exit_code == 2 and "--fit-only needs --save-kmeans" in r.output
    km = tmp_path / "km.npz"
    assert CliRunner().invoke(cli, [*base, "--fit-only", "--save-kmeans", str(km)]).exit_code == 0
    r = CliRunner().invoke(cli, [*base, "--kmeans", str(km), "--shard", "3/4"])
    assert r.exit_code == 1 and "holds no store: the cohort has 1" in r.output
    r = CliRunner().invoke(cli, [*base, "--kmeans", str(km), "--shard", "4/4"])
    assert r.exit_code == 1 and "need 0 <= I < N" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_store_being_labelled_is_not_labelled_twice(random_model_file, small_store_factory):
    """``label`` writes into the stores, so it takes `segment`'s lock: a second run at the same
    time stops in one line and leaves the first run's columns alone."""
    from wsi_ccrl.io.store_lock import StoreLock

    store = small_store_factory("s", max_cells=4)
    args = ["label", "--model", str(random_model_file), "--data", str(store), "--k", "2"]
    with StoreLock(store):  # another live writer (this process) holds it
        r = CliRunner().invoke(cli, [*args, "--out", str(store.parent / "busy")])
    assert r.exit_code == 1 and "s.zarr" in r.output and "pid" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (store.parent / "busy" / "s.csv").exists()
    assert not store.with_name("s.zarr.lock").exists()  # released: a later run goes on
    r = CliRunner().invoke(cli, [*args, "--out", str(store.parent / "ok")])
    assert r.exit_code == 0, r.output
    assert not store.with_name("s.zarr.lock").exists()
