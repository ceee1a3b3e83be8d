"""Throughput and peak memory of ``label``'s phases: embedding, K-means, GeoJSON/CSV export.

Each phase runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its own. The export runs
on a synthetic store of 100k and of 1M cells whose outlines are what ``segment`` stores: exact
pixel-edge outlines (``edge_contours`` of OpenCV contours) of 2,000 random ellipses of real
nucleus size (semi-axes 4-12 px, 5-15 µm wide at 0.25 µm/px, a 40x slide), tiled on a grid. Memory
that stays flat between 100k and 1M cells shows the export streams; the table gives bytes and
vertices per cell of what is written. Embedding uses real-sized 32 px crops of random pixels (the
cost of the backbone does not depend on the pixels) with a randomly initialised model in the
released ``model.pt`` format; on this CPU it runs on fewer cells (``--embed-cells``).

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


# --------------------------------------------------------------------------- synthetic stores
def nucleus_templates(k: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact pixel-edge outlines (CSR, centred on 0) of ``k`` random ellipses."""
    import cv2

    from wsi_ccrl.io.contours import edge_contours

    rng = np.random.default_rng(seed)
    rings = []
    for _ in range(k):
        mask = np.zeros((32, 32), np.uint8)
        axes = (int(rng.integers(4, 13)), int(rng.integers(4, 13)))
        cv2.ellipse(mask, (16, 16), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        rings.append(found[0].reshape(-1, 2))
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rings])])
    e_off, e_xy = edge_contours(offsets, np.concatenate(rings).astype(np.float32))
    return e_off, e_xy + 0.5 - 16  # pixel-edge frame, centred


def build_store(path: Path, n: int, crop_size: int = 32, chunk: int = 4096, seed: int = 0) -> Path:
    """``n`` cells on a 32 px grid: template outlines, blank crops, 512-d embeddings, clusters."""
    from wsi_ccrl.io.contours import SEGMENT_CONTOURS, gather_polygons
    from wsi_ccrl.io.store import CellBatch, CellStore, CellStoreWriter

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    t_off, t_xy = nucleus_templates(seed=seed)
    attrs = {
        "slide": {"path": "synthetic.svs", "dimensions": [side * 32, side * 32], "mpp": 0.25},
        "tiles": {"target_mpp": 0.25},
        "segmenter": {"name": "synthetic", "types": {"1": "neoplastic", "2": "inflammatory"}},
        "contour": SEGMENT_CONTOURS,
    }
    writer = CellStoreWriter(path, crop_size, attrs, chunk_cells=chunk, overwrite=True)
    crops = np.full((chunk, crop_size, crop_size, 3), 255, np.uint8)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        idx = np.arange(start, start + m)
        pick = rng.integers(0, len(t_off) - 1, m)
        offsets, xy = gather_polygons(t_off, t_xy, pick)
        centre = np.stack([idx % side * 32 + 16, idx // side * 32 + 16], 1).astype(np.float64)
        xy = xy + np.repeat(centre, np.diff(offsets), axis=0)
        owner = np.repeat(np.arange(m), np.diff(offsets))
        lo = np.full((m, 2), np.inf)
        hi = np.full((m, 2), -np.inf)
        np.minimum.at(lo, owner, xy)
        np.maximum.at(hi, owner, xy)
        writer.add(
            CellBatch(
                crops=crops[:m],
                centroid=centre.astype(np.float32),
                bbox=np.concatenate([lo, hi], 1).astype(np.int32),
                area=np.prod(hi - lo, axis=1).astype(np.float32),
                seg_type=rng.integers(1, 3, m).astype(np.int16),
                seg_prob=rng.uniform(0.5, 1, m).astype(np.float32),
                contour_offsets=offsets,
                contour_xy=xy.astype(np.float32),
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
    from wsi_ccrl.io.store import CellBatch, CellStoreWriter

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
    from wsi_ccrl.ccrl.model_io import load_backbone
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.cluster import KMeansModel, fit_stores, predict_store
    from wsi_ccrl.label.embed import embed_store
    from wsi_ccrl.label.export import export_store
    from wsi_ccrl.label.palette import cluster_styles

    s = CellStore.open(store, mode="r+")
    out = Path(args.work) / "out"
    out.mkdir(exist_ok=True)
    base_rss = _rss_mb()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    if phase.startswith("embed"):
        backbone, _ = load_backbone(args.model)
        t0 = time.perf_counter()
        embed_store(s, backbone, args.batch_size, args.device)
        if args.device == "cuda":
            torch.cuda.synchronize()
    elif phase == "kmeans-fit":
        fit_stores(
            KMeansModel(8, seed=0, backend="sklearn", features="raw"), [s], args.fit_sample, seed=0
        )
    elif phase == "kmeans-predict":
        km = KMeansModel(8, seed=0, features="raw").fit(
            np.asarray(s["embedding"][:1000], np.float32)
        )
        t0 = time.perf_counter()
        predict_store(km, s)
    elif phase.startswith("export:"):  # export:<files>[:simplify]
        _, files, *tol = phase.split(":")
        names = {"geojson": "x.geojson", "gz": "x.geojson.gz", "csv": "x.csv"}
        paths = {k: out / names[k] for k in files.split("+")}
        files = {("geojson" if k == "gz" else k): p for k, p in paths.items()}
        counts = export_store(
            s,
            cluster_styles(8),
            files,
            compress="gz" in paths,
            simplify=float(tol[0]) if tol else 0.5,
        )
        extra = {"vertices": counts["vertices"], "bytes": counts["bytes"]}
        extra["files"] = {k: os.path.getsize(p) for k, p in paths.items()}
    elif phase == "export-profile":
        extra = {"stages": export_profile(s, out)}
    seconds = time.perf_counter() - t0
    n = args.fit_sample if phase == "kmeans-fit" else s.n_cells
    return {
        "cells": min(n, s.n_cells),
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu0,
        "base_mb": base_rss,
        "peak_mb": _peak_mb(),
        **(extra if phase.startswith("export") else {}),
    }


def export_profile(store, out: Path) -> dict[str, float]:
    """CPU µs per cell of each stage of the export, one thread, stage by stage (process time)."""
    from wsi_ccrl.io.contours import legacy_shift
    from wsi_ccrl.label.export import (
        EXPORT_CHUNK_CELLS,
        EXPORT_READ_CELLS,
        GeoJsonFormat,
        outline_pitch,
        read_chunks,
    )
    from wsi_ccrl.label.overlay import MAX_AREA_CHANGE, cell_shapes
    from wsi_ccrl.label.overlay_kernels import simplest_rings
    from wsi_ccrl.label.palette import cluster_styles

    fmt = GeoJsonFormat(cluster_styles(8), store)
    pitch, shift = outline_pitch(store.attrs), legacy_shift(store.attrs)
    stages = dict.fromkeys(
        ["read (zarr)", "outlines", "  of which the compiled ring pass", "format (GeoJSON text)",
         "write"], 0.0
    )  # fmt: skip
    with open(out / "profile.geojson", "wb") as f:
        for start, stop in store.iter_ranges(EXPORT_READ_CELLS):
            c0 = time.process_time()
            chunks = read_chunks(store, start, stop, "profile", EXPORT_CHUNK_CELLS)
            stages["read (zarr)"] += time.process_time() - c0
            for ch in chunks:
                c0 = time.process_time()
                ch.shapes = cell_shapes(ch.offsets, ch.xy, ch.bbox, 0.5, pitch, shift)
                c1 = time.process_time()
                data = fmt.chunk(ch, ch.start == 0)
                c2 = time.process_time()
                f.write(data)
                c3 = time.process_time()
                stages["outlines"] += c1 - c0
                stages["format (GeoJSON text)"] += c2 - c1
                stages["write"] += c3 - c2
                xy = np.round(np.asarray(ch.xy, np.float64), 2)  # the kernel alone, again
                x, y = np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1])
                c0 = time.process_time()
                simplest_rings(ch.offsets, x, y, 0.5, pitch, MAX_AREA_CHANGE)
                stages["  of which the compiled ring pass"] += time.process_time() - c0
    return {k: v / store.n_cells * 1e6 for k, v in stages.items()}


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
    parser.add_argument("--exports-only", action="store_true", help="skip embedding and K-means")
    parser.add_argument("--phase")
    parser.add_argument("--store")
    parser.add_argument("--model")
    parser.add_argument("--work")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.store, args)))
        return

    import torch

    from wsi_ccrl.ccrl.backbone import PreActResNet18
    from wsi_ccrl.ccrl.model_io import save_model

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
        for device in devices if not args.exports_only else []:
            rows.append(
                (f"embed ({device}, batch {args.batch_size})", child("embed", crops, args, device))
            )
        if not args.exports_only:
            rows.append(
                (f"K-means fit (sample {args.fit_sample:,})", child("kmeans-fit", big, args))
            )
            rows.append(("K-means predict", child("kmeans-predict", big, args)))
        exports = []
        for label, store in ((f"{args.small_cells:,}", small), (f"{args.cells:,}", big)):
            exports.append((f"GeoJSON, {label} cells", child("export:geojson", store, args)))
        big_n = f"{args.cells:,}"
        exports.append((f"GeoJSON.gz, {big_n} cells", child("export:gz", big, args)))
        exports.append((f"CSV, {big_n} cells", child("export:csv", big, args)))
        exports.append(
            (f"GeoJSON + CSV in one pass, {big_n} cells", child("export:geojson+csv", big, args))
        )
        exports.append(
            (f"GeoJSON, exact outlines (--simplify 0), {big_n} cells",
             child("export:geojson:0", big, args))
        )  # fmt: skip
        profile = child("export-profile", big, args)["stages"]
    print(_table(rows, exports, torch.__version__))
    print(_profile_table(profile, args.cells))


def _table(rows, exports, torch_version) -> str:
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
    lines += [
        "",
        "Export (`wsi_ccrl.label.export.export_store`, the default `--simplify 0.5` unless said):",
        "",
        "| export | cells | seconds | cells/s | CPU s | peak RSS (MiB) | vertices / cell "
        "| GeoJSON bytes / cell | files (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in exports:
        n = r["cells"]
        files = ", ".join(f"{k} {v / 2**20:,.0f}" for k, v in r["files"].items())
        lines.append(
            f"| {name} | {n:,} | {r['seconds']:.1f} | {n / r['seconds']:,.0f} | "
            f"{r['cpu_seconds']:.1f} | {r['peak_mb']:.0f} | {r['vertices'] / n:.1f} | "
            f"{r['bytes'] / n:.0f} | {files} |"
        )
    return "\n".join(lines)


def _profile_table(stages: dict[str, float], n: int) -> str:
    lines = [
        "",
        f"Where the export's time goes ({n:,} cells, one thread, CPU µs per cell):",
        "",
        "| stage | CPU µs / cell |",
        "|---|---:|",
    ]
    for name, us in stages.items():
        lines.append(f"| {name} | {us:.1f} |")
    total = sum(v for k, v in stages.items() if not k.startswith("  "))
    lines.append(f"| total | {total:.1f} (≈ {1e6 / total:,.0f} cells per CPU-second) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
