"""CCRL's quick-profile choices, measured on the validation split (never on a test split).

Each variant is the quick CoNSeP benchmark config (`wsi_ccrl/configs/benchmark-consep-quick.yaml`) with some
dotted overrides; it trains CCRL once on the train tiles (1–20 of the shared patches' Train) and
scores the momentum embeddings of the validation tiles (21–27) with every way of turning
embeddings into K-means features (`wsi_ccrl.label.features`): AMI / ARI, train→test and
standalone, mean over 3 K-means seeds. Trained models are cached per variant, so re-running only
re-scores.

    python benchmarks/ccrl_ablation.py --variants base tau0.1 --out runs/ablation
    python benchmarks/ccrl_ablation.py --list           # the variants and their overrides
    python benchmarks/ccrl_ablation.py --edge-stats     # crops touching an image edge, old vs new

Prints a Markdown table (and appends it to OUT/ablation.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "consep-patches"
CONFIG = ROOT / "wsi_ccrl" / "configs" / "benchmark-consep-quick.yaml"

# name -> dotted overrides of the quick benchmark config (train.* are CCRL's settings); "edge":
# "shift" trains and scores on crops shifted inside the image instead of mirrored past its edge
NO_JITTER = {"train.augment.jitter_p": 0.0, "train.augment.grayscale_p": 0.0}
_FIRST_ROUND: dict[str, dict] = {
    "base": {},
    "no-jitter": NO_JITTER,
    "tau0.1": {"train.temperature": 0.1},
    "shift": {"edge": "shift"},
    "shift-paper-aug": {
        "edge": "shift",
        "train.augment.jitter": [0.4, 0.4, 0.4, 0.1],
        "train.augment.grayscale_p": 0.2,
        "train.augment.crop_scale": [0.2, 1.0],
        "train.augment.blur_sigma": [0.1, 2.0],
    },
    "shift-no-jitter": {**NO_JITTER, "edge": "shift"},
    "shift-weak-aug": {
        **NO_JITTER,
        "edge": "shift",
        "train.augment.crop_scale": [0.8, 1.0],
        "train.augment.blur_p": 0.2,
    },
    "shift-rot-reflect": {"edge": "shift", "train.augment.rotation_padding": "reflection"},
    "tau0.5": {"train.temperature": 0.5},
    "m0.999": {"train.momentum": 0.999},
    "batch128": {"train.batch_size": 128},
    "epochs6": {"train.epochs": 6},
    "crop48": {"crop_size": 48},
    "stem-small": {"train.stem": "small", "train.max_steps": 200},
    "no-local-global": {"train.augment.local_global": False},
}
# Every variant names the settings it was trained with that the profile has changed since (epochs
# 3 -> 2, warm-up 0 -> 1, queue 512 -> 2048, blur p 0.5 -> 0), so its cached model stays valid
# after the change.
BLUR = {"train.augment.blur_p": 0.5, "train.augment.blur_sigma": [0.1, 1.0]}  # every variant's
OLD = {**BLUR, "train.epochs": 3, "train.warmup_epochs": 0}  # the profile before the warm-up
WARMUP = {**BLUR, "train.queue_size": 2048, "train.warmup_epochs": 1}
VARIANTS: dict[str, dict] = {
    # the first round ran with the profile's queue of 512, before queue2048 won
    **{name: {**OLD, "train.queue_size": 512, **over} for name, over in _FIRST_ROUND.items()},
    "queue2048": {**OLD, "train.queue_size": 2048},
    # the profile again with other training seeds: how far one training run moves
    "queue2048-seed1": {**OLD, "train.queue_size": 2048, "seed": 1},
    "queue2048-seed2": {**OLD, "train.queue_size": 2048, "seed": 2},
    # seed 1 got stuck near the uniform loss (7.0 of log 2049 = 7.6): what makes it learn
    "queue2048-seed1-warmup1": {**WARMUP, "train.epochs": 3, "seed": 1},
    "queue2048-seed1-lr3e-4": {**OLD, "train.queue_size": 2048, "seed": 1, "train.lr": 3e-4},
    "queue512-seed1": {**OLD, "train.queue_size": 512, "seed": 1},
    **{f"warmup1-seed{seed}": {**WARMUP, "train.epochs": 3, "seed": seed} for seed in (0, 2, 3)},
    # training length with the warm-up: 6 epochs, then 2 (the profile since)
    **{
        f"warmup1-epochs{n}-seed{seed}": {**WARMUP, "train.epochs": n, "seed": seed}
        for n in (2, 6)
        for seed in (0, 1, 2, 3)
    },
    # the 2-epoch profile with a faster key encoder: m 0.99 averages the last ~100 of 450 steps
    **{
        f"epochs2-m{m}-seed{seed}": {**WARMUP, "train.epochs": 2, "train.momentum": m, "seed": seed}
        for m in (0.95, 0.98)
        for seed in (0, 1, 2, 3)
    },
    # the 2-epoch profile with the lower learning rate that also rescued seed 1
    **{
        f"epochs2-lr3e-4-seed{seed}": {**WARMUP, "train.epochs": 2, "train.lr": 3e-4, "seed": seed}
        for seed in (0, 1, 2, 3)
    },
}
NOT_CONFIG = ("edge", "seed")  # variant keys the script handles itself


def load_variant(name: str, extra: dict):
    from wsi_ccrl.bench.protocol import load_benchmark_config

    overrides = {k: v for k, v in VARIANTS[name].items() if k not in NOT_CONFIG}
    overrides.update(extra, device="cpu")
    overrides["train.device"] = "cpu"
    return load_benchmark_config(CONFIG, overrides)


def score_variant(name: str, args) -> list[dict]:
    import dataclasses

    from wsi_ccrl.bench import protocol as bm
    from wsi_ccrl.bench.datasets.common import load_cells
    from wsi_ccrl.ccrl.model_io import load_backbone
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.features import FEATURES

    cfg = bm.resolve_split(args.data_dir, load_variant(name, {}))
    cfg = dataclasses.replace(cfg, seeds=tuple(args.kmeans_seeds))
    files = bm.check_data(args.data_dir, cfg)
    if VARIANTS[name].get("edge") == "shift":  # the rejected rule's stores
        with shifted_crops():
            stores = bm.prepare_stores(args.data_dir, args.out / "stores-edge-shift", cfg, files)
    else:
        store_root = args.out / f"stores-{cfg.crop_size}px"
        stores = bm.prepare_stores(args.data_dir, store_root, cfg, files)
    train_store, val_store = CellStore.open(stores["train"]), CellStore.open(stores["test"])
    train_cells = load_cells(train_store, bm.subsample(train_store.n_cells, cfg.max_train_cells, 0))
    val_cells = load_cells(val_store)
    y = val_cells.gt_class.astype(np.int64)
    k = int(len(bm.dataset_classes(cfg)))
    run_dir = args.out / name
    t0 = time.time()
    seed = VARIANTS[name].get("seed", 0)
    done = (run_dir / "models" / f"ccrl-seed{seed}" / "model.pt").is_file()
    model = bm.train_ccrl(stores["train"], run_dir, "ccrl", bm.ccrl_runs(cfg)["ccrl"], seed)
    seconds = time.time() - t0 if not done else _train_seconds(model)
    rows = []
    for encoder in args.encoders:
        for bn in args.bn:
            backbone, meta = load_backbone(model, encoder=encoder)
            if bn == "recal":
                recalibrate_bn(backbone, train_cells.crops)
            for layer in args.layers:
                tr_emb = embed_layers(backbone, train_cells.crops, layer)
                val_emb = embed_layers(backbone, val_cells.crops, layer)
                for how in args.features or FEATURES:
                    rows.append(
                        score_row(
                            name,
                            f"{encoder}{'+bn' if bn == 'recal' else ''}",
                            layer,
                            how,
                            seconds,
                            meta,
                            tr_emb,
                            val_emb,
                            y,
                            k,
                            cfg,
                        )
                    )
    return rows


def score_row(name, encoder, layer, how, seconds, meta, tr_emb, val_emb, y, k, cfg) -> dict:
    from wsi_ccrl.bench import protocol as bm
    from wsi_ccrl.label.features import FeatureSpace

    space = FeatureSpace(how).fit(tr_emb)
    tr, te = space.transform(tr_emb), space.transform(val_emb)
    summary = bm.summarize(bm.cluster_scores(tr, te, y, k, cfg.seeds, cfg.kmeans_n_init))
    return {
        "variant": name,
        "encoder": encoder,
        "layer": layer,
        "features": how,
        "train_s": round(seconds),
        "loss": meta.get("training", {}).get("final_loss", float("nan")),
        **{
            f"{p}_{m}": 100 * summary[p][m]["mean"]
            for p in ("train_to_test", "standalone")
            for m in ("ami", "ari")
        },
    }


def embed_layers(backbone, crops: np.ndarray, layer: str, batch_size: int = 512) -> np.ndarray:
    """Pooled features of layer4 (the backbone's output), layer3, or both concatenated."""
    import torch

    from wsi_ccrl.label.embed import embed_crops

    if layer == "layer4":
        return embed_crops(backbone, crops, batch_size)
    out = []
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.asarray(crops[start : start + batch_size]))
            x = (x.permute(0, 3, 1, 2).float() / 255 - backbone.mean) / backbone.std
            h3 = backbone.layer3(backbone.layer2(backbone.layer1(backbone.stem(x))))
            f3 = h3.mean(dim=(2, 3))
            if layer == "layer3":
                out.append(f3.numpy())
                continue
            f4 = torch.relu(backbone.bn(backbone.layer4(h3))).mean(dim=(2, 3))
            out.append(torch.cat([f3, f4], 1).numpy())
    return np.concatenate(out)


def recalibrate_bn(backbone, crops: np.ndarray, batch_size: int = 256) -> None:
    """Re-estimate every BatchNorm's running statistics on whole, un-augmented cells."""
    import torch

    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over all batches
    backbone.train()
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.asarray(crops[start : start + batch_size]))
            backbone(x.permute(0, 3, 1, 2).float().div_(255.0))
    backbone.eval()


def _train_seconds(model: Path) -> float:
    import csv

    path = model.parent / "metrics.csv"
    with path.open() as fh:
        return sum(float(r["seconds"]) for r in csv.DictReader(fh))


def edge_stats(args) -> str:
    """How many crops of the shared patches' cells would cross an image edge (the old rule filled
    those pixels white), and the share of pure-white pixels in the stored crops now."""
    from wsi_ccrl.bench.datasets import consep
    from wsi_ccrl.io.crops import crop_windows

    images = consep.list_images(consep.find_split_dir(args.data_dir, "train"))
    n = crossing = 0
    white_old = []
    for path in images:
        tile = consep.read_tile(path, "merged4")
        h, w = tile.image.shape[:2]
        win = crop_windows(tile.nuclei.bbox, 2.0, 4.0)
        out = np.maximum.reduce(
            [-win[:, 0], -win[:, 1], win[:, 2] - w, win[:, 3] - h, np.zeros(len(win))]
        )
        n += len(win)
        crossing += int((out > 0).sum())
        side = win[:, 2] - win[:, 0]
        # share of the window outside the image = share of white-filled pixels under the old rule
        ix = np.clip(win[:, 2], 0, w) - np.clip(win[:, 0], 0, w)
        iy = np.clip(win[:, 3], 0, h) - np.clip(win[:, 1], 0, h)
        white_old.append(1 - ix * iy / side**2)
    white_old = np.concatenate(white_old)
    return (
        f"| CoNSeP patches (Train, {len(images)} patches of 256²) | {n} cells | windows crossing "
        f"an image edge: {100 * crossing / n:.1f} % | old rule: ≥ 2 % white fill in "
        f"{100 * (white_old >= 0.02).mean():.1f} % of crops | new rule: 0 % (mirrored from the image) |"
    )


@contextlib.contextmanager
def shifted_crops():
    """The rejected edge rule, for measuring it: windows shifted inside the image (keeping their
    size) instead of mirrored past its edge."""
    import wsi_ccrl.bench.datasets.common as common
    from wsi_ccrl.io.crops import crop_windows, extract_crops

    def shifted(image, bbox, crop_size, window_scale, min_window):
        h, w = image.shape[:2]
        win = crop_windows(bbox, window_scale, min_window)
        side = win[:, 2:] - win[:, :2]
        start = np.clip(win[:, :2], 0, np.maximum(np.array([w, h]) - side, 0))
        return extract_crops(image, np.concatenate([start, start + side], 1), crop_size)

    mirrored, common.crops_in_image = common.crops_in_image, shifted
    try:
        yield
    finally:
        common.crops_in_image = mirrored


def edge_compare(args) -> list[str]:
    """The two crop rules that never fill, compared with the fast baselines on validation:
    windows mirrored past the image edge (the rule) vs shifted inside the image."""
    import dataclasses

    from wsi_ccrl.bench import protocol as bm
    from wsi_ccrl.bench.baselines import make_baseline
    from wsi_ccrl.bench.datasets.common import load_cells
    from wsi_ccrl.io.store import CellStore

    cfg = bm.resolve_split(args.data_dir, load_variant("base", {}))
    cfg = dataclasses.replace(cfg, seeds=tuple(args.kmeans_seeds))
    files = bm.check_data(args.data_dir, cfg)
    lines = []
    for rule in ("shift", "reflect"):
        with shifted_crops() if rule == "shift" else contextlib.nullcontext():
            stores = bm.prepare_stores(args.data_dir, args.out / f"stores-edge-{rule}", cfg, files)
        train_store, val_store = CellStore.open(stores["train"]), CellStore.open(stores["test"])
        idx = bm.subsample(train_store.n_cells, cfg.max_train_cells, 0)
        train_cells, val_cells = load_cells(train_store, idx), load_cells(val_store)
        y = val_cells.gt_class.astype(np.int64)
        for model in ("raw_pixels", "manual"):
            base = make_baseline(model, 0).fit(train_cells)
            tr, te = bm.scale_features(
                model, base.transform(train_cells), base.transform(val_cells)
            )
            s = bm.summarize(bm.cluster_scores(tr, te, y, 4, cfg.seeds, cfg.kmeans_n_init))
            line = (
                f"| {rule} | {model} | {100 * s['train_to_test']['ami']['mean']:.1f} "
                f"| {100 * s['train_to_test']['ari']['mean']:.1f} "
                f"| {100 * s['standalone']['ami']['mean']:.1f} "
                f"| {100 * s['standalone']['ari']['mean']:.1f} |"
            )
            print(line, flush=True)
            lines.append(line)
    return lines


def report(out: Path, variants: list[str]) -> str:
    """One line per trained variant (from OUT/<variant>.json): the shipped read-out (momentum
    encoder, layer4, l2) and the other read-outs measured on the same model."""
    cols = [  # (label, encoder, layer, features)
        ("layer4 l2 (shipped)", "momentum", "layer4", "l2"),
        ("layer4 whiten", "momentum", "layer4", "whiten"),
        ("layer4 raw", "momentum", "layer4", "raw"),
        ("layer3 l2", "momentum", "layer3", "l2"),
        ("BN re-estimated, layer4 l2", "momentum+bn", "layer4", "l2"),
    ]
    head = "| variant | overrides | train s | loss | " + " | ".join(c[0] for c in cols) + " |"
    lines = [head, "|" + "---|" * (4 + len(cols))]
    for name in variants:
        path = out / f"{name}.json"
        if not path.is_file():
            continue
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):  # an interrupted older run: re-score it
            continue
        cells = []
        for _, enc, layer, how in cols:
            hit = [
                r
                for r in rows
                if r["encoder"] == enc
                and r.get("layer", "layer4") == layer
                and r["features"] == how
            ]
            cells.append(
                f"{hit[0]['train_to_test_ami']:.1f} / {hit[0]['train_to_test_ari']:.1f}"
                if hit
                else "–"
            )
        over = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in VARIANTS[name].items()) or "–"
        r0 = rows[0]
        lines.append(
            f"| {name} | {over} | {r0['train_s']} | {r0['loss']:.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--variants", nargs="+", default=["base"])
    parser.add_argument("--encoders", nargs="+", default=["momentum"])
    parser.add_argument("--features", nargs="+", default=None, help="default: all")
    parser.add_argument("--bn", nargs="+", default=["trained", "recal"], help="BN statistics")
    parser.add_argument("--layers", nargs="+", default=["layer4", "layer3", "layer3+4"])
    parser.add_argument("--kmeans-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--edge-stats", action="store_true")
    parser.add_argument("--edge-compare", action="store_true")
    parser.add_argument("--report", action="store_true", help="table of the cached results")
    args = parser.parse_args()
    if args.list:
        for name, over in VARIANTS.items():
            print(f"{name}: {over}")
        return
    if args.edge_stats:
        print(edge_stats(args))
        return
    if args.report:
        print(report(args.out, list(VARIANTS)))
        return
    if args.edge_compare:
        print("| edge rule | model | train→val AMI | ARI | standalone AMI | ARI |")
        print("|---|---|---:|---:|---:|---:|")
        edge_compare(args)
        return
    import torch

    from wsi_ccrl.log import configure_logging

    configure_logging(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    header = (
        "| variant | encoder | layer | features | train s | final loss | train→val AMI | ARI "
        "| standalone AMI | ARI |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = []
    for name in args.variants:
        rows = score_variant(name, args)
        for r in rows:
            line = (
                f"| {r['variant']} | {r['encoder']} | {r['layer']} | {r['features']} | {r['train_s']} "
                f"| {r['loss']:.2f} | {r['train_to_test_ami']:.1f} | {r['train_to_test_ari']:.1f} "
                f"| {r['standalone_ami']:.1f} | {r['standalone_ari']:.1f} |"
            )
            print(line, flush=True)
            lines.append(line)
        (args.out / f"{name}.json").write_text(json.dumps(rows, indent=1))
    machine = (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"`python benchmarks/ccrl_ablation.py --variants {' '.join(args.variants)}`"
    )
    table = "\n".join([header, *lines, "", machine, ""])
    print(table)
    with (args.out / "ablation.md").open("a") as fh:
        fh.write(table + "\n")


if __name__ == "__main__":
    main()
