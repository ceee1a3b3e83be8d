"""Screen crop rules, augmentations and read-outs for label quality end to end, on the bundled
segmenter's detections of BRCA-M2C (train + val, 90 slides) or CoNSeP's Train patches (27 tiles).

Faster than `wsi-ccrl benchmark ... --cells detected` for comparing variants: the detections are
computed once (embedded segmenter at 0.25 µm/px, BRCA tiles resampled from their own resolution)
and cached; each variant only re-cuts the crops (window relative to the nucleus, or fixed in µm;
raw colour, or each slide Reinhard-normalised to CoNSeP's statistics) into one cohort store, trains
CCRL on every detection and clusters them as `label` does (K-means fit on a 20,000-cell sample,
seeds 0-2). Scores: matched detections of the validation images (BRCA val, CoNSeP tiles 21-27)
and of the whole cohort. Read-outs: l2 (the embedding), centre (each slide's mean removed),
joint (label's `joint`: the embedding beside the seven shape and colour numbers, equal weight;
`--joint-weights` scales the numbers' block).

    python benchmarks/label_quality_screen.py brca --out runs/screen --baselines shape_colour,manual
    python benchmarks/label_quality_screen.py brca --window um:16 --colour norm --out runs/screen
    python benchmarks/label_quality_screen.py consep --train augment.grayscale_p=0.2 --seeds 0,1,2

Prints one row per model and read-out (scores on val, on all matched detections, and ``slide_ami``:
how closely the clusters of every detection follow its slide), and appends them to
OUT/screen.jsonl.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image

from wsi_ccrl.bench import protocol as bm
from wsi_ccrl.bench.baselines import make_baseline, scale_features
from wsi_ccrl.bench.datasets.common import (
    GroundTruthNuclei,
    GroundTruthTile,
    load_cells,
    store_matches,
    write_store,
)
from wsi_ccrl.ccrl.metrics import cluster_metrics
from wsi_ccrl.config import TrainConfig, build, to_dict
from wsi_ccrl.io.crops import CropSpec
from wsi_ccrl.io.stain import CONSEP_REFERENCE, reinhard_normalize, slide_statistics
from wsi_ccrl.io.store import CellStore
from wsi_ccrl.label.features import FeatureSpace

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RADIUS_UM = {"brca": 3.0, "consep": 1.5}  # dots clicked by hand; centroids of drawn outlines
PROFILE = ROOT / "configs" / "benchmark-consep-quick.yaml"  # = the quick profile


def detections(dataset: str, cache: Path) -> list[dict]:
    """Per image: name, slide, split, shape at 0.25 µm/px, stain statistics, nuclei, matched class."""
    if cache.is_file():
        return pickle.loads(cache.read_bytes())
    from wsi_ccrl.bench.datasets import brca_m2c, consep
    from wsi_ccrl.config import load_section
    from wsi_ccrl.segment import build_segmenter
    from wsi_ccrl.segment.evaluate import match_centroids

    seg = build_segmenter(load_section("segment", None, {"segmenter": "embedded", "device": "cpu"}))
    if dataset == "brca":
        root = DATA / "brca-m2c"
        images = brca_m2c.read_split(root, "train") + brca_m2c.read_split(root, "val")
        groups = [[im] for im in images]
    else:
        files = sorted((DATA / "consep-patches" / "Train" / "Images").glob("*.png"))
        by_tile: dict[int, list] = {}
        for f in files:
            by_tile.setdefault(consep.tile_id(f.name), []).append(f)
        groups = [
            consep.typed_images(fs, "merged4", "val" if t >= 21 else "train")
            for t, fs in sorted(by_tile.items())
        ]
    out = []
    for group in groups:  # one slide: its stain is fitted once
        pixels = [_at_quarter_micron(im.path, im.mpp) for im in group]
        seg.fit_slide(pixels)
        stain = slide_statistics(pixels)
        for im, img, nuc in zip(group, pixels, seg.segment(pixels), strict=True):
            s = img.shape[1] / np.asarray(Image.open(im.path)).shape[1]
            pred, true = match_centroids(
                nuc.centroid + 0.5, im.points * s, RADIUS_UM[dataset] / 0.25
            )
            gt = np.full(len(nuc), -1, np.int16)
            gt[pred] = im.classes[true]
            out.append(
                {"name": im.path.name, "path": str(im.path), "mpp": im.mpp, "slide": im.slide, "split": im.split,
                 "shape": img.shape[:2], "stain": stain, "nuc": nuc, "gt": gt}
            )  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(out))
    return out


def _at_quarter_micron(path: Path, mpp: float) -> np.ndarray:
    """The image resampled to the segmenter's 0.25 µm/px."""
    img = np.asarray(Image.open(path).convert("RGB"))
    if abs(mpp - 0.25) < 1e-3:
        return img
    s = mpp / 0.25
    size = (round(img.shape[1] * s), round(img.shape[0] * s))
    return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)


def cohort_store(det: list[dict], path: Path, window: str, colour: str) -> Path:
    """One store of every detection, crops cut by the variant's rule (reused when unchanged)."""
    ws, mw = (2.0, 16.0) if window == "adaptive" else (0.0, float(window.split(":")[1]) / 0.25)
    attrs = {"window": window, "colour": colour, "mpp": 0.25, "min_window": mw}
    spec = CropSpec(32, ws, mw)
    if store_matches(path, attrs, spec):
        return path

    def tiles():
        for r in det:
            img = _at_quarter_micron(Path(r["path"]), r["mpp"])
            if colour == "norm" and r["stain"] is not None:
                img = reinhard_normalize(img, CONSEP_REFERENCE, r["stain"])
            n = r["nuc"]
            nuclei = GroundTruthNuclei(
                centroid=(n.centroid + 0.5).astype(np.float32), bbox=n.bbox.astype(np.int32),
                area=n.area.astype(np.float32), contour_offsets=n.contour_offsets,
                contour_xy=(n.contour_xy + 0.5).astype(np.float32), gt_class=r["gt"],
            )  # fmt: skip
            yield GroundTruthTile(r["name"], img, nuclei)

    write_store(path, tiles(), [r["name"] for r in det], attrs, spec)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dataset", choices=["brca", "consep"])
    p.add_argument("--window", default="adaptive", help="adaptive | um:W (fixed W µm)")
    p.add_argument("--colour", default="raw", choices=["raw", "norm"])
    p.add_argument("--train", nargs="*", default=[], help="train overrides key=value (YAML)")
    p.add_argument("--tag", default="quick", help="name of the training variant")
    p.add_argument("--seeds", default="0")
    p.add_argument("--baselines", default="")
    p.add_argument("--no-ccrl", action="store_true")
    p.add_argument(
        "--joint-weights", default="1", help="weights of the descriptors' block, e.g. 0.5,1,1.5"
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "screen")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    det = detections(a.dataset, a.out / f"detections-{a.dataset}.pkl")
    work = a.out / f"{a.dataset}-{a.window.replace(':', '')}-{a.colour}"
    store = CellStore.open(cohort_store(det, work / "cohort.zarr", a.window, a.colour))
    cells = load_cells(store)
    tile = store["tile"][:]
    slide = np.unique([r["slide"] for r in det], return_inverse=True)[1][tile]
    val = np.array([r["split"] == "val" for r in det])[tile]
    y = cells.gt_class.astype(np.int64)
    scopes = {"val": np.flatnonzero((y >= 0) & val), "all": np.flatnonzero(y >= 0)}
    n = len(y)
    fit = np.sort(np.random.default_rng(0).choice(n, min(n, 20000), replace=False))
    k = 3 if a.dataset == "brca" else 4
    descriptors = make_baseline("shape_colour").transform(cells)

    def score(x):
        from sklearn.cluster import KMeans
        from sklearn.metrics import adjusted_mutual_info_score

        runs = {s: [] for s in scopes}
        for seed in (0, 1, 2):
            pred = KMeans(k, n_init=4, random_state=seed).fit(x[fit]).predict(x)
            for s, rows in scopes.items():
                runs[s].append(cluster_metrics(y[rows], pred[rows]))
            # how much the clusters follow the slide instead of the cell (every detection)
            runs.setdefault("slide", []).append({"ami": adjusted_mutual_info_score(slide, pred)})
        return runs

    def emit(model, runs, **extra):
        row = {"dataset": a.dataset, "window": a.window, "colour": a.colour, "model": model}
        for s, rs in runs.items():
            for m in ("ami", "ari", "purity"):
                if m in rs[0]:
                    row[f"{s}_{m}"] = round(100 * float(np.mean([r[m] for r in rs])), 1)
        row.update(extra)
        with open(a.out / "screen.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(" | ".join(str(v) for v in row.values()), flush=True)

    for name in filter(None, a.baselines.split(",")):
        x = descriptors if name == "shape_colour" else None
        if x is None:
            x = make_baseline(name, 0, 64, "cpu").fit(
                cells.select(np.isin(np.arange(n), fit[:4000]))
            )
            x = x.transform(cells)
        emit(name, score(scale_features(name, x[fit], x)[1]))
    if a.no_ccrl:
        return
    cfg = bm.load_benchmark_config(PROFILE)
    values = to_dict(cfg.train)
    for item in a.train:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        target = values
        for part in parents:
            target = target[part]
        target[leaf] = yaml.safe_load(value)
    values.update(device="cpu", num_workers=0, eval_every=10**6)
    train_cfg = build(TrainConfig, values, where="train")
    runs: dict[str, dict] = {}
    for seed in (int(s) for s in a.seeds.split(",")):
        t0 = time.time()
        model = work / a.tag / "models" / f"ccrl-seed{seed}" / "model.pt"
        if not model.is_file():  # a finished model of this tag is reused as it is
            model = bm.train_ccrl(work / "cohort.zarr", work / a.tag, "ccrl", train_cfg, seed)
        seconds = round(time.time() - t0)
        emb = bm.embed(model, "momentum", cells.crops, cfg, "cpu")
        l2 = FeatureSpace("l2").transform(emb)
        centred = l2.copy()
        for s in np.unique(slide):
            centred[slide == s] -= centred[slide == s].mean(0)
        both = np.hstack([emb, descriptors])
        joint = FeatureSpace("joint").fit(both[fit]).transform(both)
        readouts = [("l2", l2), ("centre", centred)]
        for w in (float(v) for v in a.joint_weights.split(",")):
            weighted = joint.copy()
            weighted[:, -descriptors.shape[1] :] *= w  # the descriptors' block, w times as heavy
            readouts.append(("joint" if w == 1 else f"joint x{w:g}", weighted))
        for readout, x in readouts:
            r = score(x)
            emit(f"ccrl[{a.tag}] {readout} seed {seed}", r, train_s=seconds)
            for s in r:
                runs.setdefault(readout, {}).setdefault(s, []).extend(r[s])
    for readout, r in runs.items():
        emit(f"ccrl[{a.tag}] {readout} mean", r, seeds=a.seeds)


if __name__ == "__main__":
    main()
