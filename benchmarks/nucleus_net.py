"""Nucleus segmenters on held-back images of every training source; speed on this CPU.

Held back (never trained or tuned on, ``wsi_ccrl.nuclei.data.HELD_BACK``): CoNSeP tiles 21-27
(112 patches 256²), 7 MoNuSeg images (one per organ, 1000²), 4 CPM-15 images (two 20x resampled
to 0.25 µm/px, two 40x). Each image (CoNSeP: each source tile's patches) is a "slide": the
segmenter fits its stain statistics on it once (``Segmenter.fit_slide``), then segments it whole.
Scores pool the nuclei of a source: detection F1 with one-to-one centroid matching within 6 and
12 px, PQ (IoU > 0.5) and AJI on the instance maps. Prints Markdown tables.

    python benchmarks/nucleus_net.py                                  # shipped embedded + watershed
    python benchmarks/nucleus_net.py --model v2=runs/nuclei/v2.pt     # add other weights
    python benchmarks/nucleus_net.py --tune --model v3=wsi_ccrl/weights/nucleus_unet.pt
        # grid-search watershed thresholds on TRAINING images (4 per source), never held-back ones
    python benchmarks/nucleus_net.py --speed-n 64 --sources none       # speed only
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from wsi_ccrl.nuclei.data import HELD_BACK, LabelledImage, load_source, split
from wsi_ccrl.segment.base import nuclei_from_labels
from wsi_ccrl.segment.embedded import DEFAULT_WEIGHTS, EmbeddedSegmenter
from wsi_ccrl.segment.evaluate import (
    DetectionScore,
    SegmentationScore,
    detection_score,
    segmentation_score,
)
from wsi_ccrl.segment.watershed import WatershedSegmenter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FOLDERS = {"consep": "consep-patches/Train", "monuseg": "monuseg-train", "cpm15": "cpm15"}
PUBLISHED = "HoVer-Net on CoNSeP's official test: F1 0.748 (12 px), PQ 0.547, AJI 0.546"


class Scores:
    """Pooled scores of one segmenter on one source."""

    def __init__(self) -> None:
        self.d6 = DetectionScore(0, 0, 0)
        self.d12 = DetectionScore(0, 0, 0)
        self.seg = SegmentationScore()
        self.seconds = 0.0

    def add(self, pred: np.ndarray, true: np.ndarray) -> None:
        pc = nuclei_from_labels(pred).centroid
        tc = nuclei_from_labels(true).centroid
        self.d6 = self.d6 + detection_score(pc, tc, 6.0)
        self.d12 = self.d12 + detection_score(pc, tc, 12.0)
        self.seg = self.seg + segmentation_score(pred, true)


def slides(images: list[LabelledImage]) -> list[list[LabelledImage]]:
    """Images grouped by slide (CoNSeP: the patches of one source tile)."""
    groups: dict[str, list[LabelledImage]] = defaultdict(list)
    for im in images:
        groups[im.group].append(im)
    return list(groups.values())


def label_maps(seg, group: list[LabelledImage]) -> list[np.ndarray]:
    """Instance maps of a slide's images, stain statistics fitted on the slide first."""
    seg.fit_slide([im.image for im in group])
    if isinstance(seg, WatershedSegmenter):
        return [seg.label(im.image)[0] for im in group]
    maps = seg.predict([im.image for im in group])
    return [seg.label(m)[0] for m in maps]


def evaluate(seg, images: list[LabelledImage]) -> Scores:
    scores = Scores()
    for group in slides(images):
        t0 = time.perf_counter()
        preds = label_maps(seg, group)
        scores.seconds += time.perf_counter() - t0
        for pred, im in zip(preds, group, strict=True):
            scores.add(pred, im.inst)
    return scores


def tune(seg: EmbeddedSegmenter, images: list[LabelledImage], grid_args) -> None:
    """Print the watershed thresholds with the best mean (F1 at 12 px + PQ) over sources."""
    groups = slides(images)
    maps = []
    for group in groups:
        seg.fit_slide([im.image for im in group])
        maps += list(zip(seg.predict([im.image for im in group]), group, strict=True))
    best = (-1.0, seg.post)
    grid = itertools.product(grid_args.fg, grid_args.edge, grid_args.ksize, grid_args.open)
    for fg, edge, ks, op in grid:
        seg.post = replace(
            seg.post, fg_threshold=fg, edge_threshold=edge, sobel_ksize=ks, marker_open=op
        )
        per = defaultdict(Scores)
        for m, im in maps:
            per[im.source].add(seg.label(m)[0], im.inst)
        value = float(np.mean([s.d12.f1 + s.seg.pq for s in per.values()]))
        print(f"fg={fg} edge={edge} ksize={ks} open={op}: mean F1@12+PQ {value:.4f}", flush=True)
        if value > best[0]:
            best = (value, seg.post)
    print(f"best on training images: {best[1]} ({best[0]:.4f})")


def speed(seg: EmbeddedSegmenter, images: list[np.ndarray], n: int, batch: int = 16):
    """(patches/s of the network alone, patches/s incl. watershed) on 256² patches."""
    patches = [images[i % len(images)] for i in range(n)]
    seg.fit_slide(patches[:16])
    seg.predict(patches[:batch])  # warm-up
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        seg.predict(patches[s : s + batch])
    t_net = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        seg.segment(patches[s : s + batch])
    return n / t_net, n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(SHARED), help="folder holding the three sources")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=WEIGHTS",
        help="embedded weights to evaluate (repeatable); default: the shipped file",
    )
    parser.add_argument("--no-watershed", action="store_true")
    parser.add_argument("--sources", default="consep,monuseg,cpm15", help="or 'none'")
    parser.add_argument("--speed-n", type=int, default=64, help="256² patches timed (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tune", action="store_true", help="tune thresholds on training images")
    floats = lambda text: [float(v) for v in text.split(",")]  # noqa: E731
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    parser.add_argument("--fg", type=floats, default=[0.4, 0.5, 0.6], help="--tune grid")
    parser.add_argument("--edge", type=floats, default=[0.3, 0.4, 0.5], help="--tune grid")
    parser.add_argument("--ksize", type=ints, default=[15, 21], help="--tune grid")
    parser.add_argument("--open", type=ints, default=[3, 5], help="--tune grid")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = [m.split("=", 1) for m in args.model] or [["shipped", str(DEFAULT_WEIGHTS)]]
    sources = [] if args.sources == "none" else args.sources.split(",")

    if args.tune:
        train_images = []
        for source in sources:
            train, _ = split(load_source(Path(args.data) / FOLDERS[source], source))
            if source == "consep":  # 4 patches of each training tile
                train_images += [im for im in train if int(im.name.rsplit("_", 1)[1]) % 4 == 0]
            else:  # 8 whole images
                train_images += train[:: max(1, len(train) // 8)][:8]
        tune(EmbeddedSegmenter(weights=models[0][1], device="cpu"), train_images, args)
        return

    segmenters = [(name, EmbeddedSegmenter(weights=w, device="cpu")) for name, w in models]
    if not args.no_watershed:
        segmenters.append(("watershed", WatershedSegmenter(mpp=0.25)))
    held = {
        s: load_source(Path(args.data) / FOLDERS[s], s, names=set(HELD_BACK[s])) for s in sources
    }
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared),"
        f" torch {torch.__version__}, {datetime.date.today()}, {args.threads} threads."
    )
    print()
    if sources:
        print(
            "| source (held back) | segmenter | F1 6 px (P / R) | F1 12 px | PQ (DQ / SQ) | AJI | s |"
        )
        print("|---|---|---|---|---|---|---|")
        means = defaultdict(list)
        for source in sources:
            n_true = 0
            for name, seg in segmenters:
                sc = evaluate(seg, held[source])
                n_true = sc.d6.tp + sc.d6.fn
                means[name].append((sc.d6.f1, sc.d12.f1, sc.seg.pq, sc.seg.aji))
                print(
                    f"| {source} ({len(held[source])} images, {n_true} nuclei) | {name} "
                    f"| {sc.d6.f1:.3f} ({sc.d6.precision:.3f} / {sc.d6.recall:.3f}) "
                    f"| {sc.d12.f1:.3f} | {sc.seg.pq:.3f} ({sc.seg.dq:.3f} / {sc.seg.sq:.3f}) "
                    f"| {sc.seg.aji:.3f} | {sc.seconds:.1f} |",
                    flush=True,
                )
        for name, rows in means.items():
            m = np.mean(rows, axis=0)
            print(
                f"| **mean over sources** | {name} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} "
                f"| {m[3]:.3f} | |"
            )
        print()
        print(f"Published for reference (not comparable: other test images): {PUBLISHED}.")
    if args.speed_n > 0:
        consep = load_source(Path(args.data) / FOLDERS["consep"], "consep", {"tile21"})
        print()
        print(
            "| embedded speed, 256² patches, batch 16, CPU | network only, patches/s | with post-processing |"
        )
        print("|---|---|---|")
        for name, seg in segmenters:
            if isinstance(seg, EmbeddedSegmenter):
                net_ps, all_ps = speed(seg, [im.image for im in consep], args.speed_n)
                print(f"| {name} | {net_ps:.1f} | {all_ps:.1f} |")


if __name__ == "__main__":
    main()
