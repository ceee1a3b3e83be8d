"""Training throughput: does the input pipeline keep up with the model?

For each crop size (and backbone stem) it measures images/s of
  (a) reading + augmentation alone: chunk-wise zarr reads (the streaming path of large datasets),
      transfer to the device, both kornia views;
  (b) full training steps: (a) plus the CCRL forward, backward, Adam and momentum update
      (``wsi_ccrl.ccrl.train.train_step``, the loop's own step).
The input keeps up when (a) is faster than (b). Real cells: crops around CoNSeP ground-truth nuclei.

    .venv/bin/python benchmarks/train.py [--sizes 32 64] [--stems small imagenet] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image
from scipy import ndimage

from wsi_ccrl.ccrl.augment import CellViews
from wsi_ccrl.ccrl.data import CellCrops, open_stores
from wsi_ccrl.ccrl.model import CCRL
from wsi_ccrl.ccrl.train import build_optimizer, train_step
from wsi_ccrl.config import TrainConfig
from wsi_ccrl.io.crops import CropSpec
from wsi_ccrl.io.store import CellBatch, CellStoreWriter

CONSEP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "consep-patches" / "Train"


def build_store(out: Path, crop_size: int, n_patches: int) -> Path:
    """Crops around the ground-truth nuclei of the first ``n_patches`` CoNSeP patches."""
    writer = CellStoreWriter(out, crop_size, {"source": "consep-patches"}, chunk_cells=1024)
    for png in sorted((CONSEP / "Images").glob("*.png"))[:n_patches]:
        image = np.asarray(Image.open(png).convert("RGB"))
        mat = scipy.io.loadmat(CONSEP / "Labels" / f"{png.stem}.mat")
        slices = ndimage.find_objects(mat["inst_map"].astype(np.int32))
        keep = [i for i, s in enumerate(slices) if s is not None]
        bbox = np.array(
            [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices if s is not None],
            np.int32,
        ).reshape(-1, 4)
        centroid = mat["inst_centroid"].astype(np.float32).reshape(-1, 2)[keep]
        n = len(bbox)
        crops = CropSpec(crop_size, 2.0, 16.0).crops(image, bbox)
        writer.add(
            CellBatch(
                crops=crops,
                centroid=centroid,
                bbox=bbox,
                area=np.ones(n, np.float32),
                seg_type=np.zeros(n, np.int16),
                seg_prob=np.ones(n, np.float32),
                contour_offsets=np.zeros(n + 1, np.int64),
                contour_xy=np.zeros((0, 2), np.float32),
            )
        )
    return writer.finalize().path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def input_rate(data: CellCrops, views: CellViews, batch: int, steps: int, device) -> float:
    """Images/s of reading + both views, over ``steps`` batches after one warm-up batch."""
    it = data.batches(0, batch, seed=0)
    x = torch.from_numpy(next(it)).to(device)
    views(x)
    sync(device)
    t0, n = time.perf_counter(), 0
    for _, crops in zip(range(steps), it, strict=False):
        q, k = views(torch.from_numpy(crops).to(device, non_blocking=True))
        n += len(crops)
    sync(device)
    return n / (time.perf_counter() - t0)


def train_rate(data: CellCrops, cfg: TrainConfig, steps: int, device: torch.device) -> float:
    """Images/s of full training steps (reading included), after one warm-up step."""
    torch.manual_seed(0)
    model = CCRL.from_config(cfg).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    views = CellViews(cfg.augment, cfg.crop_size).to(device)
    opt = build_optimizer(model, cfg)
    it = data.batches(0, cfg.batch_size, seed=0)
    train_step(model, views, opt, next(it), cfg.lr, 0, device, cuda, cuda)
    sync(device)
    t0, n = time.perf_counter(), 0
    for i, crops in zip(range(steps), it, strict=False):
        loss = train_step(model, views, opt, crops, cfg.lr, i + 1, device, cuda, cuda)
        n += len(crops)
    float(loss)
    sync(device)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--stems", nargs="+", default=["small", "imagenet"])
    parser.add_argument("--batch", type=int, default=64, help="batch size for both measures")
    parser.add_argument("--input-steps", type=int, default=10)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--patches", type=int, default=40, help="CoNSeP patches (~42 cells each)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            store = build_store(Path(tmp) / f"consep{size}.zarr", size, args.patches)
            stores = open_stores([store])
            data = CellCrops(stores, in_memory_max_cells=0, buffer_chunks=2, prefetch=2)
            cfg0 = TrainConfig(crop_size=size, batch_size=args.batch, queue_size=4096)
            views = CellViews(cfg0.augment, size).to(device)
            fed = input_rate(data, views, args.batch, args.input_steps, device)
            for stem in args.stems:
                cfg = TrainConfig(crop_size=size, stem=stem, batch_size=args.batch, queue_size=4096)
                trained = train_rate(data, cfg, args.train_steps, device)
                rows.append((size, stem, len(data), fed, trained, fed > trained))
    print(f"## Training throughput ({time.strftime('%Y-%m-%d')})\n")
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"({args.threads} torch threads), torch {torch.__version__}, device {device} {gpu}; "
        f"batch {args.batch}; real CoNSeP cells streamed chunk-wise from zarr; "
        f"load average at the end {os.getloadavg()[0]:.1f} (a machine shared with other jobs).\n"
    )
    print(
        "| crop px | stem | cells | (a) read + augment img/s | (b) full train step img/s "
        "| input keeps up |"
    )
    print("|---|---|---|---|---|---|")
    for size, stem, n, fed, trained, ok in rows:
        verdict = f"yes ({fed / trained:.1f}x)" if ok else f"no ({fed / trained:.2f}x)"
        print(f"| {size} | {stem} | {n} | {fed:.0f} | {trained:.1f} | {verdict} |")


if __name__ == "__main__":
    main()
