"""Faults through the real CLI, in subprocesses: kill -9 at points of segment, train, label and its
export, then a rerun equals an uninterrupted run; a full disk; a corrupt chunk in one store of a
cohort; two label runs at once. benchmarks/results/reliability.md is the table of these cases."""

from __future__ import annotations

import filecmp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from conftest import ROOT, SAMPLE_SLIDE, build_label_store, corrupt_chunk, write_store

from wsi_ccrl.io.store import CellStore

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "wsi_ccrl_cli.main"]
FAULTS = ROOT / "tests" / "faults"  # sitecustomize.py: the ENOSPC hook


def run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def kill_when(args: list[str], seen, timeout: float = 300) -> None:
    """Run the CLI (verbose) and SIGKILL it the moment ``seen`` (a text) appears in its log, or
    ``seen()`` (a callable) is true; polled every 5 ms."""
    log = Path(tempfile.mkstemp(suffix=".log")[1])
    with log.open("w") as err:
        proc = subprocess.Popen([*CLI, "-v", *args], stdout=subprocess.DEVNULL, stderr=err)
    ready = seen if callable(seen) else lambda: seen in log.read_text()
    t0 = time.monotonic()
    while proc.poll() is None and not ready() and time.monotonic() - t0 < timeout:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    text = log.read_text()
    log.unlink()
    assert proc.returncode == -signal.SIGKILL, f"finished before {seen!r}:\n{text}"


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [x for x in done.stderr.splitlines() if x.startswith("Error:")]
    assert done.returncode != 0 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def same_outputs(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def same_columns(a: Path, b: Path, names=("embedding", "cluster", "cluster_distance")) -> None:
    sa, sb = CellStore.open(a), CellStore.open(b)
    for name in names:
        np.testing.assert_array_equal(sa[name][:], sb[name][:], err_msg=name)


# --------------------------------------------------------------------------- segment
SEGMENT = ["--roi", "400,400,1024,1024", "--segmenter", "watershed", "--tile-size", "128"]
SEGMENT += ["--crop-size", "32", "--device", "cpu"]


def test_segment_killed_mid_slide_resumes_to_the_same_store(tmp_path):
    cfg = tmp_path / "seg.yaml"
    cfg.write_text("segment:\n  chunk_cells: 8\n  tile_overlap: 16\n")
    args = [str(SAMPLE_SLIDE), *SEGMENT, "--config", str(cfg)]
    assert run("segment", *args, "--out", str(tmp_path / "a")).returncode == 0
    partial = tmp_path / "b" / "CMU-1-Small-Region.zarr.partial"

    def flushed() -> bool:  # some rows are durable, more are coming
        try:
            return zarr.open_group(str(partial), mode="r").attrs["progress"]["n_cells"] >= 1
        except Exception:
            return False

    kill_when(["segment", *args, "--out", str(tmp_path / "b")], flushed)
    assert partial.exists() and not (tmp_path / "b" / "CMU-1-Small-Region.zarr").exists()
    assert run("segment", *args, "--out", str(tmp_path / "b")).returncode == 0
    a, b = (CellStore.open(p / "CMU-1-Small-Region.zarr") for p in (tmp_path / "a", tmp_path / "b"))
    for name in ("crops", "centroid", "bbox", "contour_offsets", "contour_xy"):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


# --------------------------------------------------------------------------- train
TRAIN_CFG = "train:\n  stem: small\n  queue_size: 32\n  epochs: 2\n  warmup_epochs: 0\n"
TRAIN_CFG += "  num_workers: 0\n  checkpoint_every: 1\n  eval_every: 0\n  min_steps: 0\n"


def test_train_killed_after_an_epoch_resumes_to_the_same_model(consep_store, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAIN_CFG)
    store = write_store(tmp_path / "tiny.zarr", CellStore.open(consep_store)["crops"][:64])
    args = ["train", "--data", str(store), "--config", str(cfg), "--batch-size", "16"]
    args += ["--device", "cpu", "--seed", "1"]
    assert run(*args, "--out", str(tmp_path / "a")).returncode == 0
    kill_when([*args, "--out", str(tmp_path / "b")], "epoch 1/")  # its checkpoint being written
    assert not (tmp_path / "b" / "model.pt").exists()
    assert run(*args, "--out", str(tmp_path / "b")).returncode == 0
    a, b = (torch.load(p / "model.pt", weights_only=True) for p in (tmp_path / "a", tmp_path / "b"))
    for part in ("query_backbone", "momentum_backbone"):
        for key, value in a[part].items():
            torch.testing.assert_close(value, b[part][key], rtol=0, atol=0, msg=key)


# --------------------------------------------------------------------------- label and export
def label_args(model: Path, stores: Path, out: Path) -> list[str]:
    return ["label", "--model", str(model), "--data", str(stores), "--out", str(out), "--k", "3",
            "--export", "geojson,csv", "--device", "cpu", "--seed", "1"]  # fmt: skip


def two_stores(root: Path) -> Path:
    for i, name in enumerate(("s1", "s2")):
        build_label_store(root / f"{name}.zarr", origin=(1200, 1400 + 300 * i), max_cells=30)
    return root


OUTPUTS = ["s1.geojson", "s1.csv", "s2.geojson", "s2.csv"]


@pytest.mark.parametrize("seen", ["K-means (sklearn)", "s1: 60 cells labelled"])
def test_label_killed_then_rerun_equals_one_run(random_model_file, tmp_path, seen):
    """Killed with the new set staged (before any commit) and while exporting (one committed)."""
    base = two_stores(tmp_path / "a")
    assert run(*label_args(random_model_file, base, tmp_path / "out-a")).returncode == 0
    stores = two_stores(tmp_path / "b")
    # a previous complete set, which the killed run must not leave half-replaced
    assert run(*label_args(random_model_file, stores, tmp_path / "old"), "--k", "2").returncode == 0
    kill_when(label_args(random_model_file, stores, tmp_path / "out-b"), seen)
    for name in ("s1", "s2"):
        assert not list((tmp_path / "out-b").glob(f"{name}.geojson.tmp*"))
    check = run("check", str(stores))  # the previous set or the new one, each whole
    assert check.returncode == 0 or "run label again" in check.stdout, check.stdout
    assert run(*label_args(random_model_file, stores, tmp_path / "out-b")).returncode == 0
    same_outputs(tmp_path / "out-a", tmp_path / "out-b", OUTPUTS)
    for name in ("s1.zarr", "s2.zarr"):
        same_columns(base / name, stores / name)
    assert run("check", str(stores)).returncode == 0


def test_two_label_runs_at_once_one_stops_in_one_line(random_model_file, tmp_path):
    stores = two_stores(tmp_path / "s")
    first = subprocess.Popen(
        [*CLI, *label_args(random_model_file, stores, tmp_path / "k3")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)
    second = run(*label_args(random_model_file, stores, tmp_path / "k7"), "--k", "7")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "is being written by pid" in one_error_line(second)
    assert not (tmp_path / "k7" / "s1.geojson").exists()
    clusters = CellStore.open(stores / "s1.zarr")["cluster"][:]
    rows = (tmp_path / "k3" / "s1.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[5]) for r in rows] == clusters.tolist()


def test_a_full_disk_during_export_is_one_line_and_leaves_no_file(random_model_file, tmp_path):
    stores = two_stores(tmp_path / "s")
    env = {"PYTHONPATH": f"{FAULTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["WSI_CCRL_FAULT_ENOSPC"] = ".geojson.tmp"
    done = run(*label_args(random_model_file, stores, tmp_path / "out"), env=env)
    assert "No space left on device" in one_error_line(done)
    assert "nothing was left under a final name" in done.stderr
    assert not list((tmp_path / "out").glob("*.geojson*"))


def test_a_corrupt_store_of_three_is_named_and_the_others_go_on(
    random_model_file, consep_store, tmp_path
):
    cohort = tmp_path / "cohort"
    for i, name in enumerate(("a", "b", "c")):
        build_label_store(cohort / f"{name}.zarr", origin=(1200, 1400 + 300 * i), max_cells=30)
    corrupt_chunk(cohort / "b.zarr", "crops", 0)
    check = run("check", str(cohort))
    assert check.stdout.splitlines() == [f"{cohort / 'b.zarr'}: crops: chunk 0: checksum mismatch"]
    assert "1 of 3 cell store(s) have problems" in one_error_line(check)

    labelled = run(*label_args(random_model_file, cohort, tmp_path / "out"))
    assert "skipped 1 of 3 cell store(s)" in one_error_line(labelled)
    assert f"{cohort / 'b.zarr'}: crops: chunk 0: checksum mismatch; skipping" in labelled.stderr
    assert (tmp_path / "out" / "a.geojson").exists() and (tmp_path / "out" / "c.geojson").exists()
    assert not (tmp_path / "out" / "b.geojson").exists()

    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAIN_CFG.replace("epochs: 2", "epochs: 1"))
    trained = run("train", "--data", str(cohort), "--out", str(tmp_path / "run"), "--config",
                  str(cfg), "--batch-size", "16", "--max-steps", "2", "--device", "cpu")  # fmt: skip
    assert "skipped 1 of 3" in one_error_line(trained)
    assert (tmp_path / "run" / "model.pt").exists()
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert payload["training"]["stores"] == ["a.zarr", "c.zarr"]

    shutil.rmtree(cohort / "a.zarr")
    shutil.rmtree(cohort / "c.zarr")
    alone = run("train", "--data", str(cohort), "--out", str(tmp_path / "run2"))
    assert "all 1 cell store(s) failed to read" in one_error_line(alone)
