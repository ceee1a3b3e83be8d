"""End to end on CoNSeP: cluster scores of the nuclei the bundled segmenter finds, not of the
ground-truth nuclei that the paper's protocol (``wsi_ccrl.bench.protocol``) clusters.

Every patch of the train tiles (1–20) and validation tiles (21–27) of the shared CoNSeP patches'
Train is segmented; detections are paired one-to-one with ground-truth nuclei whose centroid lies
within 6 px (both in the store's pixel-edge frame). A matched detection takes its nucleus's class,
an unmatched one -1, and all detections become cell stores with the benchmark's crop rule. CCRL
trains on every train detection (no labels), the baselines fit on a subsample, K-means (k = 4)
clusters every detection, and AMI / ARI / Purity are scored over the validation detections that
matched a nucleus: train→val (K-means fit on train cells) and standalone (fit on the validation
cells), mean ± std over seeds. Stores and models are cached under OUT/<segmenter>[-first<N>].

    python benchmarks/end_to_end.py --out runs/end-to-end
    python benchmarks/end_to_end.py --segmenter watershed --out runs/end-to-end
    python benchmarks/end_to_end.py --out /tmp/e2e --limit-patches 24 --set train.max_steps=5

Prints a Markdown table and writes it to OUT/end_to_end.md (and OUT/end_to_end.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "consep-patches" / "Train"
CONFIG = ROOT / "wsi_ccrl" / "configs" / "benchmark-consep-quick.yaml"
log = logging.getLogger("wsi_ccrl.benchmarks.end_to_end")  # under the package's log handler


def parse_sets(items: list[str]) -> dict:
    """``--set train.max_steps=5`` → {"train.max_steps": 5} (values read as YAML)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def detected_tiles(files, seg, scheme: str, radius: float, batch: int, counts: dict):
    """The patches as tiles whose nuclei are the segmenter's detections (pixel-edge frame), each
    with the class of the ground-truth nucleus it matched, -1 for none; ``counts`` adds up."""
    from wsi_ccrl.bench.datasets.common import GroundTruthNuclei, GroundTruthTile
    from wsi_ccrl.bench.datasets.consep import read_tile
    from wsi_ccrl.segment.evaluate import match_centroids

    for start in range(0, len(files), batch):
        truth = [read_tile(p, scheme) for p in files[start : start + batch]]
        for tile, nuc in zip(truth, seg.segment([t.image for t in truth]), strict=True):
            centroid = nuc.centroid + 0.5  # pixel centres → pixel edges, as the ground truth
            pred_i, true_i = match_centroids(centroid, tile.nuclei.centroid, radius)
            gt = np.full(len(nuc), -1, np.int16)
            gt[pred_i] = tile.nuclei.gt_class[true_i]
            counts["truth"] += len(tile.nuclei)
            counts["detected"] += len(nuc)
            counts["matched"] += len(pred_i)
            counts["classes"] += np.bincount(gt[pred_i], minlength=len(counts["classes"]))
            det = GroundTruthNuclei(
                centroid=centroid.astype(np.float32),
                bbox=nuc.bbox.astype(np.int32),
                area=nuc.area.astype(np.float32),
                contour_offsets=nuc.contour_offsets,
                contour_xy=(nuc.contour_xy + 0.5).astype(np.float32),
                gt_class=gt,
            )
            yield GroundTruthTile(tile.name, tile.image, det, tile.meta)


def detection_store(split, files, seg, cfg, work: Path, args) -> tuple[Path, dict]:
    """The store of one split's detections and its detection counts (reused when unchanged)."""
    from wsi_ccrl.bench import protocol as bm
    from wsi_ccrl.bench.datasets.common import store_matches, write_store
    from wsi_ccrl.bench.datasets.consep import MPP

    path, stats = work / "stores" / f"{split}.zarr", work / "stores" / f"{split}-counts.json"
    attrs = {
        "dataset": "consep",
        "data_dir": str(args.data_dir.resolve()),
        "split": split,
        "split_rule": cfg.split,
        "class_scheme": cfg.class_scheme,
        "classes": list(bm.dataset_classes(cfg)),
        "files": [p.name for p in files],
        "mpp": MPP,
        "min_window": cfg.min_window,
        "segmenter": seg.describe(),
        "match_radius": args.radius,
    }
    if store_matches(path, attrs, cfg.crop_size, cfg.window_scale) and stats.is_file():
        saved = json.loads(stats.read_text())
        if saved.get("attrs") == json.loads(json.dumps(attrs)):
            log.info("reusing %s", path)
            return path, {**saved["counts"], "reused": True}
    counts = {"patches": len(files), "truth": 0, "detected": 0, "matched": 0}
    counts["classes"] = np.zeros(len(attrs["classes"]), np.int64)
    log.info("segmenting %d %s patches (%s)", len(files), split, seg.name)
    tiles = detected_tiles(files, seg, cfg.class_scheme, args.radius, args.batch_size, counts)
    write_store(path, tiles, attrs["files"], attrs, cfg.window_scale, cfg.crop_size, cfg.min_window)
    counts["classes"] = counts["classes"].tolist()
    stats.write_text(json.dumps({"attrs": attrs, "counts": counts}))
    return path, {**counts, "reused": False}


def matched_scores(tr, va, y, k: int, cfg) -> dict[str, list[dict[str, float]]]:
    """K-means sees every detection; scores count only matched ones (``y >= 0``).

    ``cluster_scores`` scores the cells it predicts, so train→val predicts the matched validation
    cells with K-means fit on train, and standalone predicts them with K-means fit on all
    validation cells (the labels ``fit_predict`` gives them).
    """
    from wsi_ccrl.bench.protocol import cluster_scores

    m = y >= 0
    fit_on = {"train_to_test": tr, "standalone": va}
    return {
        p: cluster_scores(x, va[m], y[m], k, tuple(cfg.seeds), cfg.kmeans_n_init)["train_to_test"]
        for p, x in fit_on.items()
    }


def run(args) -> dict:
    from wsi_ccrl.bench import protocol as bm
    from wsi_ccrl.bench.baselines import imagenet_missing_message, make_baseline
    from wsi_ccrl.bench.datasets.common import load_cells
    from wsi_ccrl.bench.report import machine_info
    from wsi_ccrl.config import load_section, to_dict
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.features import FeatureSpace
    from wsi_ccrl.runtime import resolve_device
    from wsi_ccrl.segment import build_segmenter

    t_start = time.time()
    cfg = bm.load_benchmark_config(args.config, {"split": "tiles", **parse_sets(args.set)})
    if cfg.dataset != "consep" or cfg.split != "tiles":
        raise SystemExit("end_to_end scores CoNSeP validation tiles: dataset consep, split tiles")
    device = str(resolve_device(cfg.device))
    train_device = cfg.train.device if cfg.train.device != "auto" else device
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=train_device))
    files = {s: f[: args.limit_patches] for s, f in bm.check_data(args.data_dir, cfg).items()}
    over = {"segmenter": args.segmenter, "device": device, "batch_size": args.batch_size}
    seg = build_segmenter(load_section("segment", None, over))
    if abs(seg.mpp - 0.25) > 0.01:
        raise SystemExit(f"{seg.name} works at {seg.mpp} µm/px, not CoNSeP's 0.25")
    tag = f"-first{args.limit_patches}" if args.limit_patches else ""
    work = args.out / f"{args.segmenter}{tag}"  # stores and models of these detections
    stores, counts = {}, {}
    for split in ("train", "test"):
        stores[split], counts[split] = detection_store(split, files[split], seg, cfg, work, args)
    if not counts["train"].pop("reused") and (work / "models").is_dir():
        log.info("new train detections: dropping the CCRL models trained on the old ones")
        shutil.rmtree(work / "models")
    counts["test"].pop("reused")

    train_store, val_store = CellStore.open(stores["train"]), CellStore.open(stores["test"])
    train_cells = load_cells(train_store, bm.subsample(train_store.n_cells, cfg.max_train_cells, 0))
    val_cells = load_cells(val_store, bm.subsample(val_store.n_cells, cfg.max_cells, 1))
    y = val_cells.gt_class.astype(np.int64)
    k = len(bm.dataset_classes(cfg))
    log.info(
        "%d train detections (%d to fit), %d validation detections (%d matched), k = %d",
        train_store.n_cells, len(train_cells), len(y), int((y >= 0).sum()), k,
    )  # fmt: skip
    results: dict = {"models": {}, "skipped": {}}

    def record(model: str, runs: dict, seconds: float) -> None:
        results["models"][model] = {"summary": bm.summarize(runs), "runs": runs, "s": seconds}
        s = results["models"][model]["summary"]["train_to_test"]
        log.info(
            "%-20s AMI %.3f ARI %.3f Purity %.3f (train→val, %.0f s)",
            model, s["ami"]["mean"], s["ari"]["mean"], s["purity"]["mean"], seconds,
        )  # fmt: skip

    for model in (m for m in cfg.models if m not in bm.CCRL_VARIANTS):
        if model == "imagenet" and (message := imagenet_missing_message()):
            log.warning(message)
            results["skipped"][model] = message
            continue
        t0 = time.time()
        baseline = make_baseline(model, 0, cfg.imagenet_size, device).fit(train_cells)
        tr, va = bm.scale_features(
            model, baseline.transform(train_cells), baseline.transform(val_cells)
        )
        record(model, matched_scores(tr, va, y, k, cfg), time.time() - t0)

    variants = [m for m in cfg.models if m in bm.CCRL_VARIANTS]
    models, train_s = {}, {}
    for name, train_cfg in bm.ccrl_runs(cfg).items():  # the runs these variants need
        t0 = time.time()
        for seed in cfg.train_seeds:
            models[name, seed] = bm.train_ccrl(stores["train"], work, name, train_cfg, seed)
        train_s[name] = time.time() - t0
    for model in variants:
        name, encoder = bm.CCRL_VARIANTS[model]
        t0 = time.time()
        runs: dict[str, list] = {p: [] for p in bm.PROTOCOLS}
        for seed in cfg.train_seeds:
            tr = bm.embed(models[name, seed], encoder, train_cells.crops, cfg, device)
            va = bm.embed(models[name, seed], encoder, val_cells.crops, cfg, device)
            space = FeatureSpace(cfg.features).fit(tr)  # as run_benchmark / `wsi-ccrl label`
            scores = matched_scores(space.transform(tr), space.transform(va), y, k, cfg)
            for p, rs in scores.items():
                runs[p].extend(rs)
        record(model, runs, time.time() - t0 + train_s.pop(name, 0.0))

    results.update(
        segmenter=seg.describe(),
        radius=args.radius,
        evaluated_split=bm.evaluated_split(cfg),
        classes=list(bm.dataset_classes(cfg)),
        detection={"train": counts["train"], "validation": counts["test"]},
        n_train_fit_cells=len(train_cells),
        config=to_dict(cfg),
        machine=machine_info(device),
        command=shlex.join(["python", *sys.argv]),
        total_seconds=round(time.time() - t_start, 1),
    )
    return results


def _pm(stat: dict) -> str:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def format_table(r: dict) -> str:
    from wsi_ccrl.bench.report import LABELS, machine_line
    from wsi_ccrl.segment.evaluate import DetectionScore

    cfg, train, m = r["config"], r["config"]["train"], r["machine"]
    lines = [
        f"# End to end on CoNSeP: {r['segmenter']['name']} detections, clustered",
        "",
        f"Evaluated on: {r['evaluated_split']}. Detections are matched one-to-one to ground-truth "
        f"nuclei within {r['radius']:g} px (0.25 µm/px); every detection is clustered (K-means "
        f"k = {len(r['classes'])}, seeds {cfg['seeds']}), scores count matched detections only.",
        "",
        "| split | patches | GT nuclei | detections | matched | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for split, c in r["detection"].items():
        s = DetectionScore(c["matched"], c["detected"] - c["matched"], c["truth"] - c["matched"])
        lines.append(
            f"| {split} | {c['patches']} | {c['truth']} | {c['detected']} | {c['matched']} "
            f"| {s.precision:.3f} | {s.recall:.3f} | **{s.f1:.3f}** |"
        )
    per_class = zip(r["classes"], r["detection"]["validation"]["classes"], strict=True)
    classes = ", ".join(f"{name} {n}" for name, n in per_class)
    lines += [
        "",
        f"Matched validation detections by class: {classes}. CCRL trained on all "
        f"{r['detection']['train']['detected']} train detections ({train['epochs']} epochs"
        + (f", max {train['max_steps']} steps" if train.get("max_steps") else "")
        + f", seeds {cfg['train_seeds']}); K-means and the baselines fit on "
        f"{r['n_train_fit_cells']}. Crops {cfg['crop_size']} px, window scale "
        f"{cfg['window_scale']}. Values in %, mean ± std over seeds.",
        "",
        "| model | train→val AMI | ARI | Purity | standalone AMI | ARI | Purity | time (s) |",
        "|---|---|---|---|---|---|---|---:|",
    ]
    for model, res in r["models"].items():
        a, b = res["summary"]["train_to_test"], res["summary"]["standalone"]
        lines.append(
            f"| {LABELS.get(model, model)} | {_pm(a['ami'])} | {_pm(a['ari'])} "
            f"| {_pm(a['purity'])} | {_pm(b['ami'])} | {_pm(b['ari'])} | {_pm(b['purity'])} "
            f"| {res['s']:.0f} |"
        )
    lines += [f"\n{why}" for why in r["skipped"].values()]
    lines += [
        "",
        f"{machine_line(m)}; total {r['total_seconds']:g} s. Command: `{r['command']}`",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    p.add_argument("--segmenter", default="embedded", choices=["embedded", "watershed"])
    p.add_argument("--radius", type=float, default=6.0, help="match radius, pixels")
    p.add_argument("--batch-size", type=int, default=16, help="patches per segmenter call")
    p.add_argument("--limit-patches", type=int, default=None, help="first N patches per split")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "end-to-end")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    import torch

    from wsi_ccrl.log import configure_logging

    configure_logging(-1 if args.quiet else 0)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args)
    table = format_table(results)
    print(table)
    (args.out / "end_to_end.md").write_text(table)
    (args.out / "end_to_end.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
