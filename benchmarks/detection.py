"""Nucleus detection F1 of the segmenters on the CoNSeP patches (HoVer-Net's detection protocol).

A predicted nucleus is a true positive when its centroid is paired one-to-one with a true centroid
within 6 px (1.5 µm at 0.25 µm/px). Counts are pooled over all patches. Patches are 256² crops of
CoNSeP's training tiles (../shared/data/consep-patches/Train), 40x, ≈0.25 µm/px.

    python benchmarks/detection.py                         # watershed, and embedded if installed
    python benchmarks/detection.py --segmenters watershed --limit 100
    python benchmarks/detection.py --segmenters hovernet --weights hovernet_fast-pannuke.pth
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "consep-patches" / "Train"


def load_patches(data: Path, limit: int | None, step: int):
    import scipy.io as sio
    from PIL import Image

    images = sorted((data / "Images").glob("*.png"))[::step][:limit]
    for path in images:
        truth = sio.loadmat(data / "Labels" / f"{path.stem}.mat")["inst_centroid"]
        yield path.stem, np.asarray(Image.open(path).convert("RGB")), truth.reshape(-1, 2)


def evaluate(name: str, args) -> tuple[dict, str]:
    from wsi_ccrl.config import load_section
    from wsi_ccrl.segment import build_segmenter
    from wsi_ccrl.segment.evaluate import DetectionScore, detection_score

    over = {"segmenter": name, "device": args.device, "batch_size": args.batch_size}
    if args.weights:
        over["weights"] = args.weights
    seg = build_segmenter(load_section("segment", None, over))
    if abs(seg.mpp - 0.25) > 0.01:
        return {}, f"works at {seg.mpp} µm/px, not CoNSeP's 0.25: skipped"
    total, n, seconds = DetectionScore(0, 0, 0), 0, 0.0
    batch: list = []

    def flush():
        nonlocal total, seconds
        t = time.perf_counter()
        found = seg.segment([im for _, im, _ in batch])
        seconds += time.perf_counter() - t
        for (_, _, truth), nuc in zip(batch, found, strict=True):
            total = total + detection_score(nuc.centroid, truth, radius=args.radius)
        batch.clear()

    for item in load_patches(args.data, args.limit, args.step):
        batch.append(item)
        n += 1
        if len(batch) == args.batch_size:
            flush()
    if batch:
        flush()
    note = seg.describe().get("model") or seg.describe().get("weights") or ""
    return {"n": n, "score": total, "s_per_patch": seconds / max(n, 1)}, str(note)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--segmenters", default=None, help="comma list; default watershed,embedded")
    p.add_argument("--weights", default=None, help="HoVer-Net state dict (for hovernet)")
    p.add_argument("--limit", type=int, default=None, help="at most this many patches")
    p.add_argument("--step", type=int, default=1, help="every step-th patch")
    p.add_argument("--radius", type=float, default=6.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()

    import torch

    from wsi_ccrl.log import configure_logging
    from wsi_ccrl.segment import SEGMENTERS

    configure_logging(-1)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    names = (args.segmenters or "watershed,embedded").split(",")
    if args.segmenters is None and "embedded" not in SEGMENTERS:
        names.remove("embedded")
    rows = []
    for name in names:
        result, note = evaluate(name, args)
        rows.append((name, result, note))
        if result:
            s = result["score"]
            print(f"{name}: F1 {s.f1:.3f} ({s})", file=sys.stderr)
    print(
        f"### Nucleus detection on CoNSeP Train patches ({platform.processor() or platform.machine()}"
        f", {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')})\n"
    )
    print(f"Match: one-to-one, centroid within {args.radius:g} px (0.25 µm/px).\n")
    print(
        "| segmenter | patches | true nuclei | predicted | TP | precision | recall | F1 | s/patch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r, note in rows:
        if not r:
            print(f"| {name} | - | - | - | - | - | - | - | {note} |")
            continue
        s = r["score"]
        print(
            f"| {name} | {r['n']} | {s.tp + s.fn} | {s.tp + s.fp} | {s.tp} | {s.precision:.3f} | "
            f"{s.recall:.3f} | **{s.f1:.3f}** | {r['s_per_patch']:.3f} |"
        )
    print("\nReference: HoVer-Net reports detection F1 0.748 on the CoNSeP test set.")


if __name__ == "__main__":
    main()
