"""``wsi-ccrl benchmark consep|nucls|brca-m2c``: label quality with baselines, one table.

``--cells ground-truth`` is the paper's protocol (its nuclei); ``--cells detected`` runs the tool
end to end on the data set's images and scores the detections matched to typed nuclei.
"""

from __future__ import annotations

from pathlib import Path

import click
from wsi_ccrl_cli import options

from wsi_ccrl.config import CLASS_SCHEMES, SPLITS


def profile_config(dataset: str, profile: str) -> Path:
    """The shipped ``benchmark-<dataset>.yaml`` (paper) or ``benchmark-<dataset>-quick.yaml``."""
    from wsi_ccrl.resources import profile as shipped

    suffix = "" if profile == "paper" else f"-{profile}"
    return shipped(f"benchmark-{dataset}{suffix}")


@click.command()
@click.argument("dataset")
@click.option(
    "--data-dir",
    required=True,
    type=options.FOLDER,
    help="The dataset root (CoNSeP: Train/ and Test/; NuCLS: train/ and test/ with rgb/, csv/; "
    "BRCA-M2C: images/, labels/, brca_ds_<split>.txt).",
)
@options.choice_option(
    "--cells",
    ["ground-truth", "detected"],
    "ground-truth: the paper's protocol on annotated nuclei; detected: segment, train and "
    "label the images as a user does, then score the detections (default for brca-m2c).",
)
@click.option(
    "--cohort",
    help="detected: comma-separated splits segmented and trained on (default: train,val for "
    "brca-m2c; train,test for consep).",
)
@click.option(
    "--evaluate",
    help="detected: comma-separated splits whose detections are scored (default: val / test).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML config (default: the shipped benchmark-<dataset>[-quick] per --profile).",
)
@options.choice_option(
    "--profile",
    ["paper", "quick"],
    "paper: the paper's settings (GPU); quick: a short CPU run. Default: paper.",
)
@options.out_option("Output folder (default: benchmark-<dataset>-<profile>).")
@options.choice_option(
    "--class-scheme",
    CLASS_SCHEMES,
    "CoNSeP types: original7 (official release, merged to 4 here) or merged4 (pre-merged).",
)
@options.choice_option(
    "--split",
    SPLITS,
    "official: Train/Test folders; tiles: split one folder by source tile (config's tiles).",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    help="consep, ground-truth cells: cross-validation by source tile; the profile's validation "
    "tiles are fold 1, the other tiles N - 1 folds (OUT/foldI, OUT/folds.md).",
)
@options.placement_options()
def benchmark(
    dataset: str,
    data_dir: Path,
    config_path: Path | None,
    profile: str | None,
    out_dir: Path | None,
    class_scheme: str | None,
    split: str | None,
    device: str | None,
    gpus: str | None,
    cells: str | None,
    cohort: str | None,
    evaluate: str | None,
    folds: int | None,
) -> None:
    """Cluster the cells of DATASET (consep, nucls, brca-m2c or another registered data set) with
    CCRL and baselines; AMI / ARI / Purity vs the paper."""
    from wsi_ccrl.bench.datasets import get_dataset
    from wsi_ccrl.bench.protocol import check_data, load_benchmark_config, run_benchmark
    from wsi_ccrl.errors import ConfigError

    data = get_dataset(dataset)  # one line listing the registered ones when unknown

    if config_path is not None and profile is not None:
        raise ConfigError("give --config or --profile, not both (a config file is a profile)")
    profile_name = profile or ("custom" if config_path else "paper")
    path = config_path or profile_config(dataset, profile or "paper")
    cfg = load_benchmark_config(
        path,
        {
            "class_scheme": class_scheme,
            "split": split,
            "device": device,
            "train.device": device,
            "train.gpus": gpus,
        },
    )
    if cfg.dataset != dataset:
        raise ConfigError(f"{path} is a {cfg.dataset} config, not {dataset}")
    cells = cells or data.cells
    out = out_dir or Path(
        f"benchmark-{dataset}-{profile_name}" + ("-detected" * (cells == "detected"))
    )
    if cells == "detected":
        from wsi_ccrl.bench.detected import run_detected_benchmark

        if folds:
            raise ConfigError("--folds goes with --cells ground-truth (the paper's protocol)")

        splits = tuple(cohort.split(",")) if cohort else data.cohort
        scored = tuple(evaluate.split(",")) if evaluate else data.cohort[-1:]
        overrides = {"class_scheme": class_scheme, "split": split, "device": device}
        overrides["train.gpus"] = gpus
        results = run_detected_benchmark(dataset, data_dir, out, path, splits, scored, overrides)
    else:
        if cohort or evaluate:
            raise ConfigError("--cohort and --evaluate go with --cells detected")
        if folds:
            from wsi_ccrl.bench.folds import run_folds

            results = run_folds(data_dir, out, cfg, folds, profile_name)
            click.echo((out / "folds.md").read_text())
            click.echo(f"wrote {out / 'folds.md'}, {out / 'folds.json'}, {out}/fold*/")
            for message in results["skipped"].values():
                click.echo(message)
            return
        check_data(data_dir, cfg)  # before anything slow: says how to obtain missing data
        results = run_benchmark(data_dir, out, cfg, profile=profile_name)
    click.echo((out / "results.md").read_text())
    click.echo(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'config.yaml'}")
    for message in results["skipped"].values():
        click.echo(message)
