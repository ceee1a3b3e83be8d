"""Embedded nucleus U-Net vs the classical watershed on held-back CoNSeP tiles; speed on this CPU.

Detection F1: centroids matched one-to-one within 6 px (HoVer-Net's protocol, 0.25 µm/px), counts
summed over all held-back patches (source tiles the network never saw). Prints a Markdown table.

    python benchmarks/nucleus_net.py [--data DIR] [--weights FILE] [--tiles 21-27] [--speed-n 32]
    python benchmarks/nucleus_net.py --tune   # grid-search watershed thresholds on TRAINING tiles
    python benchmarks/nucleus_net.py --train-f1   # F1 on training tiles (for choosing a run)
    python benchmarks/nucleus_net.py --no-stain-normalize   # raw colours (the old behaviour)
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from wsi_ccrl.nuclei.postprocess import PostprocessConfig
from wsi_ccrl.nuclei.train import PatchSet, load_patches
from wsi_ccrl.segment.base import nuclei_from_labels
from wsi_ccrl.segment.embedded import DEFAULT_WEIGHTS, EmbeddedSegmenter
from wsi_ccrl.segment.evaluate import DetectionScore, detection_score
from wsi_ccrl.segment.watershed import WatershedSegmenter

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "consep-patches" / "Train"
HOVERNET_F1 = 0.748  # Graham et al. 2019, CoNSeP detection F_d


def true_centroids(patches: PatchSet) -> list[np.ndarray]:
    return [nuclei_from_labels(inst).centroid for inst in patches.inst]


def score(pred: list[np.ndarray], true: list[np.ndarray]) -> DetectionScore:
    total = DetectionScore(0, 0, 0)
    for p, t in zip(pred, true, strict=True):
        total = total + detection_score(p, t, radius=6.0)
    return total


def embedded_f1(seg: EmbeddedSegmenter, patches: PatchSet, batch: int = 16) -> DetectionScore:
    """Detection score of the embedded segmenter on all patches."""
    pred = []
    for s in range(0, len(patches), batch):
        pred += [n.centroid for n in seg.segment(list(patches.images[s : s + batch]))]
    return score(pred, true_centroids(patches))


def tune(seg: EmbeddedSegmenter, patches: PatchSet) -> tuple[PostprocessConfig, float]:
    """Best watershed thresholds by F1 on ``patches`` (training tiles: no peeking at held-out)."""
    maps = []
    for s in range(0, len(patches), 16):
        maps += seg.predict(list(patches.images[s : s + 16]))
    true = true_centroids(patches)
    best = (seg.post, -1.0)
    grid = itertools.product((0.4, 0.5, 0.6), (0.3, 0.4, 0.5, 0.6), (11, 15, 21), (3, 5))
    for fg, edge, ks, op in grid:
        seg.post = replace(
            seg.post, fg_threshold=fg, edge_threshold=edge, sobel_ksize=ks, marker_open=op
        )
        pred = [nuclei_from_labels(seg.label(m)[0]).centroid for m in maps]
        f1 = score(pred, true).f1
        print(f"fg={fg} edge={edge} ksize={ks} open={op}: F1 {f1:.4f}", flush=True)
        if f1 > best[1]:
            best = (seg.post, f1)
    seg.post = best[0]
    return best


def speed(
    seg: EmbeddedSegmenter, patches: PatchSet, n: int, batch: int = 16
) -> tuple[float, float]:
    """(patches/s of the network alone, patches/s end to end incl. watershed) on 256² patches."""
    images = [patches.images[i % len(patches)] for i in range(n)]
    seg.predict(images[:batch])  # warm-up
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        seg.predict(images[s : s + batch])
    t_net = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        seg.segment(images[s : s + batch])
    t_all = time.perf_counter() - t0
    return n / t_net, n / t_all


def parse_tiles(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--tiles", default="21-27", help="held-back source tiles")
    parser.add_argument("--speed-n", type=int, default=32, help="patches timed (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tune", action="store_true", help="tune thresholds on tiles 1-20")
    parser.add_argument(
        "--train-f1", action="store_true", help="F1 on 4 patches per training tile, then stop"
    )
    parser.add_argument("--no-stain-normalize", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seg = EmbeddedSegmenter(
        weights=args.weights, device="cpu", stain_normalize=not args.no_stain_normalize
    )

    if args.train_f1:
        train_tiles = set(range(1, 21)) - set(parse_tiles(args.tiles))
        patches = load_patches(args.data, tiles=train_tiles)
        every = np.array([int(n.rsplit("_", 1)[1]) % 4 == 0 for n in patches.names])
        sc = embedded_f1(seg, patches.subset(every))
        print(
            f"training tiles (4 patches each): F1 {sc.f1:.4f} P {sc.precision:.3f} "
            f"R {sc.recall:.3f} TP {sc.tp} FP {sc.fp} FN {sc.fn}"
        )
        return

    if args.tune:
        train_tiles = set(range(1, 21)) - set(parse_tiles(args.tiles))
        patches = load_patches(args.data, tiles=train_tiles)
        every = np.array([int(n.rsplit("_", 1)[1]) % 4 == 0 for n in patches.names])
        post, f1 = tune(seg, patches.subset(every))  # 4 patches per training tile
        print(f"best on training tiles: {post} F1 {f1:.4f}")
        return

    held = load_patches(args.data, tiles=set(parse_tiles(args.tiles)))
    t0 = time.perf_counter()
    emb = embedded_f1(seg, held)
    t_emb = time.perf_counter() - t0
    ws = WatershedSegmenter(mpp=0.25)
    t0 = time.perf_counter()
    ws_score = score([n.centroid for n in ws.segment(list(held.images))], true_centroids(held))
    t_ws = time.perf_counter() - t0

    n_params = sum(p.numel() for p in seg.net.parameters())
    norm = "raw colours" if args.no_stain_normalize else "Reinhard stain normalisation"
    print(
        f"## Nucleus detection on held-back CoNSeP tiles {args.tiles} ({len(held)} patches 256², "
        f"{norm})"
    )
    print()
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared, loaded), torch {torch.__version__}, {datetime.date.today()}, "
        f"{args.threads} threads."
    )
    print()
    print("| segmenter | F1 (6 px) | precision | recall | TP | FP | FN | s (all patches) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, sc, t in (
        (f"embedded U-Net ({n_params / 1e6:.2f} M params)", emb, t_emb),
        ("watershed (classical)", ws_score, t_ws),
    ):
        print(
            f"| {name} | {sc.f1:.3f} | {sc.precision:.3f} | {sc.recall:.3f} | {sc.tp} | {sc.fp} "
            f"| {sc.fn} | {t:.1f} |"
        )
    print(f"| HoVer-Net (published, CoNSeP test) | {HOVERNET_F1:.3f} | | | | | | |")
    if args.speed_n > 0:
        net_ps, all_ps = speed(seg, held, args.speed_n)
        print()
        print("| embedded speed, 256² patches, batch 16, CPU | patches/s |")
        print("|---|---|")
        print(f"| network only | {net_ps:.1f} |")
        print(f"| network + watershed post-processing | {all_ps:.1f} |")


if __name__ == "__main__":
    main()
