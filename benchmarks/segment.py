"""Segmentation throughput and peak memory, on the sample slide and on a large synthetic slide.

Cases (each in its own subprocess, so every peak RSS is separate):
  watershed    the full pipeline with the classical segmenter (read, segment, crop, write)
  embedded     the full pipeline with the bundled nucleus U-Net (the offline default)
  crops+store  the pipeline with a zero-cost "segmenter" that returns a fixed lattice of nuclei:
               reading, ownership, level-0 mapping, crop extraction and store writing alone
  profile      the embedded pipeline's seconds per stage (``wsi_ccrl.segment.stages``), then, in
               the same process, the segmenter alone (network + post-processing) on the same
               tiles and on 256² patches of them (``nucleus_net.py --speed-n``'s unit): the
               pipeline's cost as a ratio of its network's, from one run

The large slide is made by tiling real H&E regions of the sample slide into a pyramidal, JPEG-tiled
TIFF at 0.25 µm/px (built once, memory-mapped, then cached in --workdir). If peak RSS is flat from
the sample (2220 x 2967 px) to the large slide, memory does not grow with slide size. Two layouts:
``large`` (1024² blocks of the sample side by side: tissue scattered in fragments with glass
between them everywhere, the hard case for a tile plan) and ``section`` (one irregular piece of
tissue with holes, as a section lies on a slide, filled with the sample's densest 512² blocks,
glass around it).

    python benchmarks/segment.py                 # sample + 20,000² slide
    python benchmarks/segment.py --size 40000    # a 1.6-gigapixel slide
    python benchmarks/segment.py --size 10000 --slides large,section --cases profile
    python benchmarks/segment.py --end-to-end --slides large   # segment, label, export as a user

``--end-to-end`` runs the commands a user runs, each in its own process under ``/usr/bin/time``
(wall seconds, peak RSS): ``wsi-ccrl segment`` (embedded), ``wsi-ccrl label --export geojson``
with a ``quick`` model trained for a few steps on the same store (training is not timed: its
cost does not grow with the slide), and reports s/mm² of tissue per step and in total.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "wsi_ccrl" / "data" / "CMU-1-Small-Region.svs"


# --------------------------------------------------------------------------- child side
def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space made at exec, so
    unlike ``ru_maxrss`` it does not inherit the parent's peak across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lattice_segmenter(spacing: int = 24, side: int = 10):
    """A segmenter with no cost: a square nucleus every ``spacing`` px (crops and store only)."""
    from wsi_ccrl.segment.base import Nuclei, Segmenter

    class Lattice(Segmenter):
        name = "lattice"
        mpp = 0.25

        def segment(self, tiles):
            out = []
            for t in tiles:
                h, w = t.shape[:2]
                ys, xs = np.mgrid[
                    spacing // 2 : h - side : spacing, spacing // 2 : w - side : spacing
                ]
                x0, y0 = xs.ravel().astype(np.float32), ys.ravel().astype(np.float32)
                n = x0.size
                corners = np.stack(
                    [
                        np.stack([x0, y0], 1),
                        np.stack([x0 + side - 1, y0], 1),
                        np.stack([x0 + side - 1, y0 + side - 1], 1),
                        np.stack([x0, y0 + side - 1], 1),
                    ],
                    1,
                ).reshape(-1, 2)
                out.append(
                    Nuclei(
                        centroid=np.stack([x0 + (side - 1) / 2, y0 + (side - 1) / 2], 1),
                        bbox=np.stack([x0, y0, x0 + side, y0 + side], 1),
                        area=np.full(n, side * side, np.float32),
                        contour_offsets=np.arange(0, 4 * n + 1, 4, dtype=np.int64),
                        contour_xy=corners.astype(np.float32),
                        seg_type=np.zeros(n, np.int16),
                        seg_prob=np.ones(n, np.float32),
                    )
                )
            return out

    return Lattice()


def run_case(
    case: str, slide: str, out: str, tile_size: int, device: str = "cpu", engine: str = "auto"
) -> dict:
    from wsi_ccrl.config import load_section
    from wsi_ccrl.log import configure_logging
    from wsi_ccrl.segment.pipeline import segment_slide

    configure_logging(-1)
    if case == "imports":  # the floor every case starts from (torch alone maps ~600 MB)
        import torchvision.ops  # noqa: F401

        import wsi_ccrl.segment.watershed  # noqa: F401

        rss = peak_rss_mb()
        return {"cells": 0, "tiles": 0, "seconds": 0.0, "peak_rss_mb": rss, "dimensions": [0, 0]}
    name = "embedded" if case in ("embedded", "profile") else "watershed"
    cfg = load_section(
        "segment",
        None,
        {
            "segmenter": name,
            "device": device,
            "tile_size": tile_size,
            "overwrite": True,
            "engine": engine,
        },
    )
    seg = lattice_segmenter() if case == "crops+store" else None
    ref = None
    if case == "profile":
        from wsi_ccrl.segment import build_segmenter

        seg = build_segmenter(cfg)
        ref = SegmenterAlone(slide, cfg, seg)
        ref.run(0)  # half the reference before the pipeline, half after: load drifts cancel
    t0, c0 = time.perf_counter(), time.process_time()
    store = segment_slide(slide, out, cfg, segmenter=seg)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = {
        "cells": store.n_cells,
        "tiles": store.attrs["tiles"]["count"],
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak_rss_mb(),
        "dimensions": store.attrs["slide"]["dimensions"],
        "tissue_mm2": tissue_mm2(slide, cfg.tissue_mpp),
    }
    if ref is not None:
        from wsi_ccrl.segment.stages import STAGES

        result["stages"] = STAGES.snapshot()
        ref.run(1)
        result.update(ref.result())
    return result


class SegmenterAlone:
    """The reference: the segmenter alone (``segment``: normalisation, network, post-processing,
    contours) on the pipeline's own tiles, batch by batch, each batch followed by 256² patches of
    the same tiles' cores (``nucleus_net.py --speed-n``'s unit), so both see the same load; reads
    are not timed. ``run(0)`` does the even batches, ``run(1)`` the odd ones."""

    def __init__(self, path: str, cfg, seg, patch: int = 256):
        from wsi_ccrl.io.slide import Slide
        from wsi_ccrl.segment.pipeline import make_plan, stain_samples, tissue_thumbnail

        self.slide = Slide.open(path, mpp=cfg.mpp)
        tissue = tissue_thumbnail(self.slide, cfg)
        self.plan = make_plan(self.slide, cfg, seg.mpp, tissue)
        seg.fit_slide(stain_samples(self.slide, tissue, self.plan))  # as the pipeline does
        self.cfg, self.seg, self.patch = cfg, seg, patch
        self.wall = {"tiles": 0.0, "patches": 0.0}
        self.cpu = {"tiles": 0.0, "patches": 0.0}
        self.n_patches = 0

    def _time(self, key: str, images: list[np.ndarray]) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        self.seg.segment(images)
        self.wall[key] += time.perf_counter() - t0
        self.cpu[key] += time.process_time() - c0

    def run(self, part: int) -> None:
        from wsi_ccrl.segment.pipeline import _read_box

        plan, b, p = self.plan, self.cfg.batch_size, self.patch
        m = plan.crop_margin
        for k, i in enumerate(range(0, len(plan), b)):
            if k % 2 != part:
                continue
            tiles = plan.tiles[i : i + b]
            images = [_read_box(self.slide, plan, t.read)[0] for t in tiles]
            views = [im[m : im.shape[0] - m, m : im.shape[1] - m] for im in images]
            self._time("tiles", views)
            patches = [  # centred in the tile's box (trimmed boxes too); whole patches only
                np.ascontiguousarray(v[y : y + p, x : x + p])
                for v in views
                if min(v.shape[:2]) >= p
                for y, x in [((v.shape[0] - p) // 2, (v.shape[1] - p) // 2)]
            ]
            self._time("patches", patches)
            self.n_patches += len(patches)
        if part == 1:
            self.slide.close()

    def result(self) -> dict:
        tiles = self.plan.tiles
        n = max(self.n_patches, 1)
        return {
            "reference_tiles_s": self.wall["tiles"],
            "reference_tiles_cpu": self.cpu["tiles"],
            "reference_patch_s": self.wall["patches"] / n,
            "reference_patch_cpu": self.cpu["patches"] / n,
            "n_patches": self.n_patches,
            "seg_px": int(sum((t.seg[2] - t.seg[0]) * (t.seg[3] - t.seg[1]) for t in tiles)),
            "core_px": int(sum((t.core[2] - t.core[0]) * (t.core[3] - t.core[1]) for t in tiles)),
            "target_mpp": float(self.plan.target_mpp),
        }


def print_profile(slide_name: str, r: dict, args) -> None:
    """The per-stage table and the ratios of one ``profile`` run."""
    mm2, wall = max(r["tissue_mm2"], 1e-9), r["seconds"]
    px_per_mm2 = (1000 / r["target_mpp"]) ** 2
    threads = {"read": "read-ahead"}
    worker = ("resolve", "cells", "store", "segment: post-processing", "segment: contours")
    if "resolve" not in r["stages"]:  # a pipeline without the post-processing worker
        worker = ()
    print(f"\n#### Where `segment` spends its time ({slide_name}, {r['tiles']} tiles)\n")
    print("| stage | thread | calls | s | % of wall | s/mm² |")
    print("|---|---|---:|---:|---:|---:|")
    for stage, (s, calls) in r["stages"].items():
        thread = threads.get(stage, "worker" if worker and stage.startswith(worker) else "main")
        print(
            f"| {stage} | {thread} | {calls} | {s:.1f} | {100 * s / wall:.0f} % | {s / mm2:.2f} |"
        )
    print(f"| **wall** | | | **{wall:.1f}** | 100 % | **{wall / mm2:.2f}** |")
    print(f"| CPU (all threads) | | | {r['cpu_seconds']:.1f} | | {r['cpu_seconds'] / mm2:.2f} |")
    per_patch = px_per_mm2 / 256**2
    print(
        f"\nThe segmenter alone (`segment`: normalisation, network, post-processing, contours), "
        f"same process, reads untimed, half before and half after the pipeline: on the "
        f"pipeline's {r['tiles']} tiles {r['reference_tiles_s']:.1f} s "
        f"({r['reference_tiles_s'] / mm2:.2f} s/mm²); on {r['n_patches']} 256² patches of their "
        f"cores, interleaved, {1 / max(r['reference_patch_s'], 1e-9):.1f} patches/s, "
        f"{r['reference_patch_s'] * per_patch:.2f} s per mm² of tissue. Segmented pixels per "
        f"tissue pixel: {r['seg_px'] / (mm2 * px_per_mm2):.2f} (tile cores "
        f"{r['core_px'] / (mm2 * px_per_mm2):.2f}, overlap {r['seg_px'] / r['core_px']:.2f}x).\n"
    )
    print("| ratio | wall | CPU |")
    print("|---|---:|---:|")
    print(
        f"| `segment` / segmenter alone on the same tiles | {wall / r['reference_tiles_s']:.2f} "
        f"| {r['cpu_seconds'] / r['reference_tiles_cpu']:.2f} |"
    )
    print(
        f"| `segment` / segmenter alone on 256² patches, per mm² of tissue "
        f"| {wall / mm2 / (r['reference_patch_s'] * per_patch):.2f} "
        f"| {r['cpu_seconds'] / mm2 / (r['reference_patch_cpu'] * per_patch):.2f} |"
    )
    print(
        f"| segmenter alone: same tiles / patches, per mm² of tissue "
        f"| {r['reference_tiles_s'] / (r['reference_patch_s'] * per_patch * mm2):.2f} "
        f"| {r['reference_tiles_cpu'] / (r['reference_patch_cpu'] * per_patch * mm2):.2f} |"
    )


def tissue_mm2(path: str, tissue_mpp: float) -> float:
    """Tissue area of a slide from the pipeline's own thumbnail mask (mm²)."""
    from wsi_ccrl.io.slide import Slide
    from wsi_ccrl.io.tiles import tissue_mask

    with Slide.open(path) as slide:
        thumb, downsample = slide.thumbnail(max(tissue_mpp, slide.mpp))
        px_um = downsample * slide.mpp
        return float(tissue_mask(thumb).sum()) * px_um * px_um / 1e6


def profile_ratios(r: dict) -> dict[str, float]:
    """The pipeline against the segmenter alone, wall and CPU, from one ``profile`` run."""
    mm2 = max(r["tissue_mm2"], 1e-9)
    per_mm2 = (1000 / r["target_mpp"]) ** 2 / 256**2  # 256² patches per mm² of tissue
    patch_wall, patch_cpu = r["reference_patch_s"] * per_mm2, r["reference_patch_cpu"] * per_mm2
    return {
        "`segment` / segmenter, same tiles, wall": r["seconds"] / r["reference_tiles_s"],
        "`segment` / segmenter, same tiles, CPU": r["cpu_seconds"] / r["reference_tiles_cpu"],
        "`segment` / segmenter on 256² patches, per mm², wall": r["seconds"] / mm2 / patch_wall,
        "`segment` / segmenter on 256² patches, per mm², CPU": r["cpu_seconds"] / mm2 / patch_cpu,
        "segmenter: tiles / 256² patches, per mm², wall": r["reference_tiles_s"] / mm2 / patch_wall,
        "pixels segmented per tissue pixel": r["seg_px"] / (mm2 * per_mm2 * 256**2),
    }


SUMS = ("segment", "infer", "resolve", "cells")  # stages that hold others


def compare_profiles(runs: dict[str, dict]) -> None:
    """Stages (s/mm² of tissue; not the sums, not those under 1 s/mm²) and ratios of several
    saved ``profile`` runs, one column each."""
    names = list(runs)
    stages = [
        k
        for k in dict.fromkeys(k for r in runs.values() for k in r["stages"])
        if k not in SUMS
        and max(r["stages"].get(k, (0, 0))[0] / r["tissue_mm2"] for r in runs.values()) >= 1
    ]
    print("| stage (s per mm² of tissue) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for stage in stages:
        cells = []
        for r in runs.values():
            s = r["stages"].get(stage)
            cells.append(f"{s[0] / r['tissue_mm2']:.2f}" if s else "-")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    rows = [
        ("**wall**", lambda r: f"**{r['seconds'] / r['tissue_mm2']:.2f}**"),
        ("CPU, all threads", lambda r: f"{r['cpu_seconds'] / r['tissue_mm2']:.2f}"),
        ("peak RSS (MB)", lambda r: f"{r['peak_rss_mb']:.0f}"),
    ]
    for label, cell in rows:
        print(f"| {label} | " + " | ".join(cell(r) for r in runs.values()) + " |")
    print("|  |" + " |" * len(names))
    for i, label in enumerate(profile_ratios(next(iter(runs.values())))):
        values = [list(profile_ratios(r).values())[i] for r in runs.values()]
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |")


# --------------------------------------------------------------------------- end to end
def timed(cmd: list[str]) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one command, from /usr/bin/time."""
    res = subprocess.run(
        ["/usr/bin/time", "-f", "TIME %e %M", *cmd], capture_output=True, text=True, check=False
    )
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    line = [x for x in res.stderr.splitlines() if x.startswith("TIME ")][-1]
    wall, rss_kb = line.split()[1:]
    return {"seconds": float(wall), "peak_mb": float(rss_kb) / 1024}


def end_to_end(slides: dict[str, Path], workdir: Path, device: str, engine: str) -> None:
    """segment -> (train, untimed) -> label + GeoJSON export, per slide: s/mm² and peak RSS."""
    cli = [sys.executable, "-m", "wsi_ccrl_cli.main"]
    rows = []
    for name, slide in slides.items():
        work = workdir / f"e2e-{name}"
        stores, run, labels = work / "stores", work / "model", work / "labels"
        work.mkdir(parents=True, exist_ok=True)
        config = work / "engine.yaml"  # the defaults, with the CPU engine asked for
        config.write_text(f"segment:\n  engine: {engine}\nlabel:\n  engine: {engine}\n")
        seg = timed([*cli, "segment", str(slide), "--out", str(stores), "--device", device,
                     "--overwrite", "--config", str(config)])  # fmt: skip
        subprocess.run(
            [*cli, "train", "--data", str(stores), "--out", str(run), "--config", "quick",
             "--max-steps", "20", "--device", device, "--no-resume"],
            check=True, capture_output=True,
        )  # fmt: skip
        lab = timed([*cli, "label", "--model", str(run / "model.pt"), "--data", str(stores),
                     "--k", "6", "--export", "geojson", "--out", str(labels), "--device", device,
                     "--config", str(config)])  # fmt: skip
        from wsi_ccrl.io.store import CellStore

        store = CellStore.open(next(stores.glob("*.zarr")))
        mm2 = tissue_mm2(str(slide), store.attrs["config"]["tissue_mpp"])
        rows.append((name, store.n_cells, mm2, seg, lab))
    print(f"### End to end: segment, label, export ({machine()}, engine {engine})\n")
    print("| slide | tissue mm² | cells | segment s/mm² | label + export s/mm² | total s/mm² "
          "| peak RSS segment / label (MB) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, cells, mm2, seg, lab in rows:
        a, b = seg["seconds"] / mm2, lab["seconds"] / mm2
        print(f"| {name} | {mm2:.2f} | {cells} | {a:.1f} | {b:.1f} | **{a + b:.1f}** "
              f"| {seg['peak_mb']:.0f} / {lab['peak_mb']:.0f} |")  # fmt: skip


# --------------------------------------------------------------------------- parent side
def make_large_slide(path: Path, size: int, block: int = 1024) -> Path:
    """Tile real H&E blocks of the sample (flipped/rotated for variety) into a ``size``² pyramid."""
    from wsi_ccrl.io.slide import Slide

    if path.exists():
        return path
    with Slide.open(SAMPLE) as s:
        w, h = s.dimensions
        offsets = [
            (x, y) for y in range(0, h - block, block // 2) for x in range(0, w - block, 512)
        ]
        blocks = [s.read_level(x, y, block, block, 0) for x, y in offsets]
    n = -(-size // block)
    return _paint_slide(path, size, blocks, np.ones((n, n), bool), np.random.default_rng(0))


def make_section_slide(path: Path, size: int, block: int = 512) -> Path:
    """One irregular piece of tissue (smoothed noise, thresholded: ~45 % of the slide, with holes)
    on glass, each ``block``² of it a block of the sample that is almost all tissue."""
    import cv2

    from wsi_ccrl.io.slide import Slide
    from wsi_ccrl.io.tiles import tissue_mask

    if path.exists():
        return path
    with Slide.open(SAMPLE) as s:
        w, h = s.dimensions
        image = s.read_level(0, 0, w, h, 0)
    mask = tissue_mask(cv2.resize(image, (w // 16, h // 16), interpolation=cv2.INTER_AREA))
    glass = np.median(image[cv2.resize(mask.astype(np.uint8), (w, h)) == 0], axis=0)
    blocks = [
        image[y : y + block, x : x + block]
        for y in range(0, h - block, block // 4)
        for x in range(0, w - block, block // 4)
        if mask[y // 16 : (y + block) // 16, x // 16 : (x + block) // 16].mean() >= 0.9
    ]
    rng = np.random.default_rng(0)
    n = -(-size // block)
    yy, xx = np.mgrid[0:n, 0:n] / max(n - 1, 1) - 0.5
    field = cv2.GaussianBlur(rng.normal(size=(n, n)), (0, 0), max(n / 10, 1))
    field = field / field.std() - 4 * (xx**2 + yy**2)  # a blob towards the middle, ragged edges
    inside = field > np.quantile(field, 0.55)
    return _paint_slide(path, size, blocks, inside, rng, glass.astype(np.uint8))


def _paint_slide(path, size, blocks, where, rng, glass=None) -> Path:
    """A ``size``² pyramidal TIFF at 0.25 µm/px: a random block (turned by a random right angle)
    on each cell of the ``where`` grid, ``glass`` elsewhere; painted on a memory-mapped canvas."""
    from wsi_ccrl.io.slide import write_pyramidal_tiff

    block = blocks[0].shape[0]
    raw = path.with_suffix(".u8")
    canvas = np.lib.format.open_memmap(raw, mode="w+", dtype=np.uint8, shape=(size, size, 3))
    if glass is not None:
        canvas[:] = glass
    for i, j in zip(*np.nonzero(where), strict=True):
        b = np.rot90(blocks[rng.integers(len(blocks))], rng.integers(4))
        y, x = i * block, j * block
        bh, bw = min(block, size - y), min(block, size - x)
        canvas[y : y + bh, x : x + bw] = b[:bh, :bw]
    canvas.flush()
    write_pyramidal_tiff(path, canvas, mpp=0.25, levels=6)
    del canvas
    raw.unlink()
    return path


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=20000, help="side of the large slide, px")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/wsi-ccrl-bench"))
    p.add_argument("--tile-size", type=int, default=1024)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (the embedded model's)")
    p.add_argument("--engine", default="auto", help="the embedded U-Net's CPU engine")
    p.add_argument("--cases", default="embedded,watershed,crops+store")
    p.add_argument("--slides", default="sample,large", help="sample, large, section")
    p.add_argument("--end-to-end", action="store_true", help="segment, label, export (see above)")
    p.add_argument("--child", nargs=3, metavar=("CASE", "SLIDE", "OUT"), help=argparse.SUPPRESS)
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="NAME=JSON",
        help="print the stages and ratios of saved profile runs side by side (<workdir>/<slide>-"
        "profile.json of each run) and exit",
    )
    args = p.parse_args()
    if args.compare:
        runs = {}
        for item in args.compare:
            name, path = item.split("=", 1)
            runs[name] = json.loads(Path(path).read_text())
        compare_profiles(runs)
        return
    if args.child:
        r = run_case(*args.child, tile_size=args.tile_size, device=args.device, engine=args.engine)
        print(json.dumps(r))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    slides = {}
    for name in args.slides.split(","):
        if name == "sample":
            slides[name] = SAMPLE
        else:
            t = time.perf_counter()
            make = {"large": make_large_slide, "section": make_section_slide}[name]
            slides[name] = make(args.workdir / f"{name}-{args.size}.tif", args.size)
            print(f"{name} slide ready ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    if args.end_to_end:
        end_to_end(slides, args.workdir, args.device, args.engine)
        return
    rows = []
    res = subprocess.run(
        [sys.executable, __file__, "--child", "imports", str(SAMPLE), "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows.append(("(none)", "imports only", json.loads(res.stdout.strip().splitlines()[-1])))
    for slide_name, slide in slides.items():
        for case in args.cases.split(","):
            out = args.workdir / f"{slide_name}-{case.replace('+', '-')}"
            cmd = [sys.executable, __file__, "--tile-size", str(args.tile_size)]
            cmd += ["--device", args.device, "--engine", args.engine]
            cmd += ["--child", case, str(slide), str(out)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode:
                print(res.stderr[-3000:], file=sys.stderr)
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append((slide_name, case, r))
            print(f"{slide_name} {case}: {r}", file=sys.stderr)
            if case == "profile":
                print_profile(slide_name, r, args)
                (out.parent / f"{out.name}.json").write_text(json.dumps(r))
    print(f"### Segmentation throughput and memory ({machine()})\n")
    print(
        "| slide | size (px) | case | tissue tiles | tissue mm² | cells | s | s/mm² | cells/s "
        "| peak RSS (MB) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for slide_name, case, r in rows:
        w, h = r["dimensions"]
        if case == "imports only":
            print(f"| - | - | {case} | - | - | - | - | - | - | {r['peak_rss_mb']:.0f} |")
            continue
        print(
            f"| {slide_name} | {w} x {h} | {case} | {r['tiles']} | {r['tissue_mm2']:.1f} "
            f"| {r['cells']} | {r['seconds']:.1f} | {r['seconds'] / max(r['tissue_mm2'], 1e-9):.1f} "
            f"| {r['cells'] / max(r['seconds'], 1e-9):.0f} | {r['peak_rss_mb']:.0f} |"
        )
    print(
        f"\ntile {args.tile_size} px at 0.25 µm/px, engine {args.engine}; one process, 2 torch "
        "threads or fewer."
    )


if __name__ == "__main__":
    main()
