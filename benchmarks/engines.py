"""CPU inference engines for the nucleus U-Net and the CCRL encoder: speed and sameness, one run.

Each network runs in torch (fp32: the reference), ONNX Runtime and OpenVINO, in fp32, in int8
(static QDQ quantisation, the output layer kept fp32: ``wsi_ccrl.nuclei.quantise``, which also
makes the shipped int8 U-Net; calibrated for the U-Net on normalised training images, never the
held-back ones, for the encoder on crops of the store) and in bf16 (OpenVINO, where the CPU has
it). Timing repeats are interleaved across engines (the machine is shared and noisy): speeds are
medians, ratios the median of each round's ratio to torch fp32. Every engine runs with torch's
thread count.

Same output means: for the U-Net, detection F1 (6 and 12 px) and PQ on the held-back images of
every source within 0.005 of torch fp32 (the worst source and metric shown); for the encoder,
K-means (``label``'s k) fitted on torch fp32 embeddings assigns >= 99 % of cells alike.

    python benchmarks/engines.py                   # nucleus data in ../shared/data, else fixtures;
                                                   # the encoder on the demo's model and store
    python benchmarks/engines.py --model run/model.pt --store stores/slide.zarr --cells 20000
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from wsi_ccrl.ccrl.embed import embed_crops
from wsi_ccrl.ccrl.model_io import load_backbone
from wsi_ccrl.config import LabelConfig
from wsi_ccrl.engine import load_runner, onnx_file
from wsi_ccrl.io.store import CellStore
from wsi_ccrl.nuclei.data import LabelledImage, load_source, split
from wsi_ccrl.nuclei.quantise import calibration_inputs, quantise_onnx
from wsi_ccrl.segment.base import nuclei_from_labels
from wsi_ccrl.segment.embedded import EmbeddedSegmenter
from wsi_ccrl.segment.evaluate import detection_score, segmentation_score

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FIXTURES = ROOT / "tests" / "fixtures"
FOLDERS = {"consep": "consep-patches/Train", "monuseg": "monuseg-train", "cpm15": "cpm15"}
FIXTURE_FOLDERS = {"consep": "consep/Train", "monuseg": "monuseg"}
CONFIGS = [
    ("torch", "fp32"),
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "int8"),
    ("openvino", "bf16"),
]
Runner = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- engines
def runners(
    module: torch.nn.Module, example: torch.Tensor, tag: str, calibration: list[np.ndarray]
) -> dict[tuple[str, str], Runner | None]:
    """Every configuration's runner (None: torch fp32, the reference)."""
    fp32 = onnx_file(module, example, tag)
    int8 = quantise_onnx(fp32, calibration, fp32.with_name(f"{tag}.int8.onnx"))
    threads = torch.get_num_threads()
    out: dict[tuple[str, str], Runner | None] = {}
    for engine, precision in CONFIGS:
        if engine == "torch":
            out[(engine, precision)] = None
        elif precision == "int8":
            out[(engine, precision)] = load_runner(engine, int8, threads)
        else:
            ov = "bf16" if precision == "bf16" else "f32"
            out[(engine, precision)] = load_runner(engine, fp32, threads, ov)
    return out


def timed(calls: dict, repeats: int) -> dict:
    """(median seconds, median ratio to torch fp32) per configuration; repeats interleaved,
    the order rotated each round."""
    seconds: dict = defaultdict(list)
    keys = list(calls)
    for key in keys:  # warm-up
        calls[key]()
    for r in range(repeats):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            t0 = time.perf_counter()
            calls[key]()
            seconds[key].append(time.perf_counter() - t0)
    ref = np.array(seconds[keys[0]])
    return {
        k: (float(np.median(v)), float(np.median(ref / np.array(v)))) for k, v in seconds.items()
    }


# --------------------------------------------------------------------------- U-Net
def unet_images(data: Path) -> tuple[dict[str, list[LabelledImage]], list[LabelledImage], str]:
    """(held-back images per source, training images for calibration, where they came from)."""
    folders = FOLDERS if (data / FOLDERS["consep"]).is_dir() else None
    base = data if folders else FIXTURES
    folders = folders or FIXTURE_FOLDERS
    held, train = {}, []
    for source, folder in folders.items():
        tr, he = split(load_source(base / folder, source))
        if he:
            held[source] = he
        train += tr[:: max(1, len(tr) // 8)][:8]  # spread over the source's training images
    return held, train, str(base)


def groups(images: list[LabelledImage]) -> list[list[LabelledImage]]:
    out: dict[str, list[LabelledImage]] = defaultdict(list)
    for im in images:
        out[im.group].append(im)
    return list(out.values())


def unet_quality(seg: EmbeddedSegmenter, held: dict[str, list[LabelledImage]]) -> dict:
    """Per source: (F1 at 6 px, F1 at 12 px, PQ) pooled over its held-back images."""
    out = {}
    for source, images in held.items():
        d6 = d12 = None
        seg_score = None
        for group in groups(images):
            seg.fit_slide([im.image for im in group])
            maps = seg.predict([im.image for im in group])
            for m, im in zip(maps, group, strict=True):
                pred = seg.label(m)[0]
                pc, tc = nuclei_from_labels(pred).centroid, nuclei_from_labels(im.inst).centroid
                a, b = detection_score(pc, tc, 6.0), detection_score(pc, tc, 12.0)
                s = segmentation_score(pred, im.inst)
                d6, d12 = (a, b) if d6 is None else (d6 + a, d12 + b)
                seg_score = s if seg_score is None else seg_score + s
        out[source] = (d6.f1, d12.f1, seg_score.pq)
    return out


def bench_unet(args) -> list[str]:
    seg = EmbeddedSegmenter(device="cpu", engine="torch")
    held, train, base = unet_images(Path(args.data))
    calibration = calibration_inputs(seg.net, train, seg.stain)  # as the shipped int8 file
    example = torch.zeros(1, 3, 2 * seg.net.stride, 2 * seg.net.stride)
    configs = runners(seg.net, example, "nucleus_unet", calibration)

    quality = {}
    for key, runner in configs.items():
        seg.engine = runner
        quality[key] = unet_quality(seg, held)

    consep = held.get("consep") or next(iter(held.values()))
    patches = [consep[i % len(consep)].image[:256, :256] for i in range(args.patches)]
    seg.fit_slide(patches)
    patches = [seg.normalise(p) for p in patches]
    stain, seg.stain = seg.stain, None  # time the network stage alone, on normalised patches

    def call(runner):
        def run():
            seg.engine = runner
            for s in range(0, len(patches), 16):
                seg.predict(patches[s : s + 16])

        return run

    speeds = timed({k: call(r) for k, r in configs.items()}, args.repeats)
    seg.stain, seg.engine = stain, None

    ref = quality[("torch", "fp32")]
    n_images = sum(len(v) for v in held.values())
    rows = [
        f"Nucleus U-Net (embedded, {seg.weights.name}): {args.patches} held-back 256² patches in "
        f"batches of 16, network stage only; quality on {n_images} held-back images of "
        f"{', '.join(held)} ({base}), calibration on {len(calibration)} training inputs.",
        "",
        "| engine | precision | patches/s | × torch fp32 | F1 6 px | F1 12 px | PQ "
        "| worst Δ vs torch | same output (≤ 0.005) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, (sec, ratio) in speeds.items():
        q = np.array(list(quality[key].values()))
        worst = float(np.abs(q - np.array(list(ref.values()))).max())
        mean = q.mean(axis=0)
        rows.append(
            f"| {key[0]} | {key[1]} | {args.patches / sec:.1f} | {ratio:.2f} | {mean[0]:.4f} "
            f"| {mean[1]:.4f} | {mean[2]:.4f} | {worst:.4f} | {'yes' if worst <= 0.005 else 'no'} |"
        )
    return rows


# --------------------------------------------------------------------------- encoder
def demo_inputs(folder: Path) -> tuple[Path, Path]:
    """A trained quick-profile model and its store: the demo's, run once into ``folder``."""
    model, stores = folder / "run" / "model.pt", folder / "stores"
    if not model.is_file():
        cli = Path(sys.executable).with_name("wsi-ccrl")
        subprocess.run([str(cli), "demo", "--out", str(folder)], check=True)
    return model, next(stores.glob("*.zarr"))


def bench_encoder(args) -> list[str]:
    from sklearn.cluster import KMeans

    if args.model and args.store:
        model, store_path = Path(args.model), Path(args.store)
    else:
        model, store_path = demo_inputs(Path(args.demo_dir))
    backbone, meta = load_backbone(model, encoder=LabelConfig.encoder)
    store = CellStore.open(store_path)
    crops = np.asarray(store["crops"][: args.cells])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(crops), min(args.calibration, len(crops)), replace=False)
    calib = crops[np.sort(pick)].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    calibration = [calib[s : s + 64] for s in range(0, len(calib), 64)]
    side = crops.shape[1]
    configs = runners(backbone, torch.zeros(1, 3, side, side), "ccrl_encoder", calibration)

    feats = {
        k: embed_crops(backbone, crops, args.batch, "cpu", runner) for k, runner in configs.items()
    }
    ref = feats[("torch", "fp32")]
    km = KMeans(LabelConfig.k, n_init=3, random_state=0).fit(ref)
    ref_labels = km.predict(ref)

    batch = crops[: args.batch]
    speeds = timed(
        {
            k: (lambda r=r: embed_crops(backbone, batch, args.batch, "cpu", r))
            for k, r in configs.items()
        },
        args.repeats,
    )
    rows = [
        f"CCRL encoder ({meta.get('stem')} stem, {side} px crops, {model}): {len(batch)} crops a "
        f"pass; sameness on {len(crops)} cells of {store_path.name}, K-means k = {LabelConfig.k} "
        f"fitted on torch fp32 embeddings; int8 calibrated on {len(pick)} of its crops.",
        "",
        "| engine | precision | crops/s | × torch fp32 | same cluster | max |Δ| of features "
        "| same output (≥ 99 %) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for key, (sec, ratio) in speeds.items():
        same = float((km.predict(feats[key]) == ref_labels).mean())
        diff = float(np.abs(feats[key] - ref).max())
        rows.append(
            f"| {key[0]} | {key[1]} | {len(batch) / sec:.0f} | {ratio:.2f} | {100 * same:.2f} % "
            f"| {diff:.2g} | {'yes' if same >= 0.99 else 'no'} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(SHARED), help="nucleus data (else tests/fixtures)")
    parser.add_argument("--model", help="a released model.pt (with --store; default: the demo's)")
    parser.add_argument("--store", help="a cell store whose crops the encoder embeds")
    parser.add_argument(
        "--demo-dir",
        default=str(Path(tempfile.gettempdir()) / "wsi-ccrl-bench" / "engines-demo"),
        help="where the demo runs once when no --model/--store is given",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch's and every engine's")
    parser.add_argument("--repeats", type=int, default=7, help="timing rounds, interleaved")
    parser.add_argument("--patches", type=int, default=64, help="256² patches a timing round")
    parser.add_argument("--batch", type=int, default=512, help="encoder crops a pass")
    parser.add_argument("--cells", type=int, default=20000, help="encoder cells compared")
    parser.add_argument("--calibration", type=int, default=512, help="encoder calibration crops")
    parser.add_argument("--only", choices=("unet", "encoder"), help="one network")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WSI_CCRL_ENGINE_CACHE", str(Path(tempfile.mkdtemp(prefix="engines-"))))
    import onnxruntime
    import openvino

    print(
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores "
        f"(shared), {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"{args.threads} threads each; torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, openvino {openvino.__version__}; {args.repeats} interleaved "
        "rounds, medians."
    )
    print()
    if args.only != "encoder":
        print("\n".join(bench_unet(args)), flush=True)
        print()
    if args.only != "unet":
        print("\n".join(bench_encoder(args)), flush=True)


if __name__ == "__main__":
    main()
