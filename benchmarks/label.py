"""Throughput and peak memory of ``label``'s phases: embedding, K-means, GeoJSON/CSV export.

Each phase runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its own. The export runs
on a synthetic store of 100k and of 1M cells (24-point nucleus outlines, blank crops): memory that
stays flat between the two shows the export streams. Embedding uses real-sized 32 px crops of
random pixels (the cost of the backbone does not depend on the pixels) with a randomly initialised
model in the released ``model.pt`` format; on this CPU it runs on fewer cells (``--embed-cells``).

    python benchmarks/label.py                 # defaults sized for a small CPU machine
    python benchmarks/label.py --cells 1000000 --embed-cells 100000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- synthetic stores
def build_store(path: Path, n: int, crop_size: int = 32, chunk: int = 4096, seed: int = 0) -> Path:
    """``n`` cells on a grid: 24-point jittered circles, blank crops, 512-d embeddings, clusters."""
    from wsi_ccrl.store import CellBatch, CellStore, CellStoreWriter

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    attrs = {"slide": {"path": "synthetic.svs", "dimensions": [side * 20, side * 20], "mpp": 0.25}}
    writer = CellStoreWriter(path, crop_size, attrs, chunk_cells=chunk, overwrite=True)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    crops = np.full((chunk, crop_size, crop_size, 3), 255, np.uint8)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        idx = np.arange(start, start + m)
        centre = np.stack([idx % side * 20 + 10, idx // side * 20 + 10], 1).astype(np.float64)
        radius = rng.uniform(3, 8, (m, 1)) * rng.uniform(0.85, 1.15, (m, 24))
        xy = centre[:, None, :] + radius[..., None] * np.stack([np.cos(angles), np.sin(angles)], 1)
        r = radius.max(1)
        writer.add(
            CellBatch(
                crops=crops[:m],
                centroid=centre.astype(np.float32),
                bbox=np.concatenate([centre - r[:, None], centre + r[:, None] + 1], 1).astype(
                    np.int32
                ),
                area=(np.pi * r**2).astype(np.float32),
                seg_type=rng.integers(1, 6, m).astype(np.int16),
                seg_prob=rng.uniform(0.5, 1, m).astype(np.float32),
                contour_offsets=np.arange(0, 24 * m + 1, 24, dtype=np.int64),
                contour_xy=xy.reshape(-1, 2).astype(np.float32),
            )
        )
    store = writer.finalize()
    store = CellStore.open(store.path, mode="r+")
    centers = rng.normal(0, 1, (8, 512))
    emb = store.create_column("embedding", np.float16, (512,))
    clusters = store.create_column("cluster", np.int16)
    dist = store.create_column("cluster_distance", np.float32)
    for a, b in store.iter_ranges():
        lab = rng.integers(0, 8, b - a)
        emb[a:b] = (centers[lab] + rng.normal(0, 0.3, (b - a, 512))).astype(np.float16)
        clusters[a:b] = lab.astype(np.int16)
        dist[a:b] = rng.uniform(0, 2, b - a).astype(np.float32)
    return store.path


def build_crop_store(path: Path, n: int, seed: int = 0) -> Path:
    from wsi_ccrl.store import CellBatch, CellStoreWriter

    rng = np.random.default_rng(seed)
    writer = CellStoreWriter(path, 32, {"slide": {"mpp": 0.25}}, chunk_cells=1024, overwrite=True)
    for start in range(0, n, 1024):
        m = min(1024, n - start)
        sq = np.array([[0, 0], [8, 0], [8, 8], [0, 8]], np.float32)
        writer.add(
            CellBatch(
                crops=rng.integers(0, 256, (m, 32, 32, 3), dtype=np.uint8),
                centroid=np.full((m, 2), 4, np.float32),
                bbox=np.tile(np.int32([0, 0, 9, 9]), (m, 1)),
                area=np.full(m, 64, np.float32),
                seg_type=np.zeros(m, np.int16),
                seg_prob=np.ones(m, np.float32),
                contour_offsets=np.arange(0, 4 * m + 1, 4, dtype=np.int64),
                contour_xy=np.tile(sq, (m, 1)),
            )
        )
    return writer.finalize().path


# --------------------------------------------------------------------------- phases (children)
def run_phase(phase: str, store: str, args: argparse.Namespace) -> dict:
    """One measured phase in this process; returns cells, seconds and RSS figures."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from wsi_ccrl.cluster import KMeansModel, fit_stores, predict_store
    from wsi_ccrl.embed import embed_store
    from wsi_ccrl.export import write_csv, write_geojson
    from wsi_ccrl.model_io import load_backbone
    from wsi_ccrl.palette import cluster_styles
    from wsi_ccrl.store import CellStore

    s = CellStore.open(store, mode="r+")
    out = Path(args.work) / "out"
    out.mkdir(exist_ok=True)
    base_rss = _rss_mb()
    t0 = time.perf_counter()
    if phase.startswith("embed"):
        backbone, _ = load_backbone(args.model)
        t0 = time.perf_counter()
        embed_store(s, backbone, args.batch_size, args.device)
        if args.device == "cuda":
            torch.cuda.synchronize()
    elif phase == "kmeans-fit":
        fit_stores(KMeansModel(8, seed=0, backend="sklearn"), [s], args.fit_sample, seed=0)
    elif phase == "kmeans-predict":
        km = KMeansModel(8, seed=0).fit(np.asarray(s["embedding"][:1000], np.float32))
        t0 = time.perf_counter()
        predict_store(km, s)
    elif phase == "geojson":
        write_geojson(s, cluster_styles(8), out / "x.geojson")
    elif phase == "geojson.gz":
        write_geojson(s, cluster_styles(8), out / "x.geojson.gz", compress=True)
    elif phase == "csv":
        write_csv(s, cluster_styles(8), out / "x.csv")
    seconds = time.perf_counter() - t0
    n = args.fit_sample if phase == "kmeans-fit" else s.n_cells
    return {
        "cells": min(n, s.n_cells),
        "seconds": seconds,
        "base_mb": base_rss,
        "peak_mb": _peak_mb(),
    }


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(phase: str, store: Path, args: argparse.Namespace, device: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--store", str(store), "--work", args.work]
    cmd += ["--model", args.model, "--batch-size", str(args.batch_size)]
    cmd += ["--device", device or args.device, "--fit-sample", str(args.fit_sample)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--small-cells", type=int, default=100_000)
    parser.add_argument("--embed-cells", type=int, default=512)
    parser.add_argument("--fit-sample", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--phase")
    parser.add_argument("--store")
    parser.add_argument("--model")
    parser.add_argument("--work")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.store, args)))
        return

    import torch

    from wsi_ccrl.backbone import PreActResNet18
    from wsi_ccrl.model_io import save_model

    with tempfile.TemporaryDirectory(prefix="wsi-ccrl-bench-") as work:
        args.work = work
        torch.manual_seed(0)
        args.model = str(
            save_model(
                Path(work) / "model.pt",
                PreActResNet18(),
                PreActResNet18(),
                {"crop_size": 32, "stem": "small"},
            )
        )
        t = time.perf_counter()
        big = build_store(Path(work) / "big.zarr", args.cells)
        small = build_store(Path(work) / "small.zarr", args.small_cells, seed=1)
        crops = build_crop_store(Path(work) / "crops.zarr", args.embed_cells)
        print(f"(synthetic stores built in {time.perf_counter() - t:.0f} s)", file=sys.stderr)
        rows = []
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            rows.append(
                (f"embed ({device}, batch {args.batch_size})", child("embed", crops, args, device))
            )
        rows.append((f"K-means fit (sample {args.fit_sample:,})", child("kmeans-fit", big, args)))
        rows.append(("K-means predict", child("kmeans-predict", big, args)))
        for label, store in ((f"{args.small_cells:,}", small), (f"{args.cells:,}", big)):
            rows.append((f"GeoJSON export, {label} cells", child("geojson", store, args)))
        rows.append((f"GeoJSON.gz export, {args.cells:,} cells", child("geojson.gz", big, args)))
        rows.append((f"CSV export, {args.cells:,} cells", child("csv", big, args)))
        size = {
            name: os.path.getsize(Path(work) / "out" / name) / 2**20
            for name in ("x.geojson", "x.geojson.gz", "x.csv")
            if (Path(work) / "out" / name).exists()
        }
    print(_table(rows, size, torch.__version__))


def _table(rows, size, torch_version) -> str:
    lines = [
        f"# label benchmark ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch_version}, Python {platform.python_version()}",
        "",
        "| phase | cells | seconds | cells/s | RSS before (MiB) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        rate = r["cells"] / r["seconds"] if r["seconds"] > 0 else float("inf")
        lines.append(
            f"| {name} | {r['cells']:,} | {r['seconds']:.1f} | {rate:,.0f} | "
            f"{r['base_mb']:.0f} | {r['peak_mb']:.0f} |"
        )
    if size:
        lines += [
            "",
            "Output sizes (last written): "
            + ", ".join(f"{k} {v:,.0f} MiB" for k, v in size.items()),
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
