"""``wsi-ccrl train``: CCRL on one or many cell stores; writes RUN_DIR/model.pt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from wsi_ccrl_cli import options


@click.command()
@click.option(
    "--data",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A cell store (*.zarr) or a folder of them; repeat for several.",
)
@options.out_option("Run folder: config, checkpoints, metrics.csv, model.pt.", required=True)
@options.config_option()
@click.option("--epochs", type=options.AT_LEAST_ONE, help="Training epochs.")
@options.batch_size_option()
@click.option("--lr", type=options.POSITIVE, help="Adam lr.")
@options.placement_options()
@click.option("--seed", type=int, help="Random seed.")
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Continue from RUN_DIR's checkpoint, or start over.",
)
@click.option("--no-local-global", is_flag=True, help="Ablation: neither view is cropped.")
@click.option("--no-predictor", is_flag=True, help="Ablation: no prediction head.")
@click.option("--max-steps", type=options.AT_LEAST_ONE, help="Stop after N steps.")
def train(
    data: tuple[Path, ...],
    out_dir: Path,
    resume: bool,
    no_local_global: bool,
    no_predictor: bool,
    **settings: Any,  # --config and the options named as train settings: command_config's
) -> None:
    """Train CCRL on the cells of STORE... (same command under torchrun for several processes)."""
    cfg = options.command_config(
        "train",
        **{"augment.local_global": False if no_local_global else None},
        use_predictor=False if no_predictor else None,
    )
    from wsi_ccrl.ccrl.distributed import detect
    from wsi_ccrl.ccrl.train import train as run_training
    from wsi_ccrl.errors import WsiCcrlError
    from wsi_ccrl.io.store import find_stores
    from wsi_ccrl.io.verify import skipped_summary, usable_stores

    stores = find_stores(list(data))
    # every chunk training reads is checked first: a broken store is skipped, not met mid-epoch
    usable, skipped = usable_stores(stores, ("crops", "gt_class"), labels=False)
    model_path = run_training(usable, out_dir, cfg, resume=resume)
    if detect().is_main:  # under torchrun, one line for the job, not one per process
        click.echo(f"model: {model_path}")
    if skipped:  # trained on the rest; the run ends non-zero, naming what it left out
        raise WsiCcrlError(skipped_summary(skipped, len(stores)))
