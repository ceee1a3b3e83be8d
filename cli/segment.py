"""``wsi-ccrl segment``: every nucleus of each slide into OUT/<slide-stem>.zarr (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from wsi_ccrl_cli import options


@click.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@options.out_option(
    "Output folder: one <slide-stem>.zarr per slide, and segment-config.yaml.",
    type=click.Path(path_type=Path),
    required=True,
)
@options.config_option()
@click.option(
    "--segmenter",
    help="auto (default): HoVer-Net if its weights are at hand, else embedded, else watershed; "
    "or any registered segmenter (hovernet, embedded, watershed, ...).",
)
@click.option("--model", help="TIAToolbox model name, e.g. hovernet_fast-pannuke.")
@click.option(
    "--weights", type=options.FILE, help="Local state-dict file for --model (no download)."
)
@click.option("--offline", is_flag=True, default=None, help="Never download model weights.")
@click.option(
    "--mpp",
    type=options.POSITIVE,
    help="µm per level-0 pixel: overrides (or supplies) the slide's; plain images need it.",
)
@click.option("--roi", help="Region x,y,w,h in level-0 pixels.")
@click.option("--tile-size", type=click.IntRange(min=32), help="Tile side, px.")
@click.option("--crop-size", type=click.IntRange(min=4), help="Crop side, px.")
@click.option(
    "--window-scale",
    type=options.POSITIVE,
    help="Crop window = scale x the nucleus's longer bbox side (2 CoNSeP, 1 NuCLS).",
)
@click.option("--shard", help="I/N: process slides I, I+N, I+2N, ... (0 <= I < N).")
@click.option("--overwrite", is_flag=True, default=None, help="Redo finished or partial stores.")
@options.device_option()
@options.batch_size_option()
def segment(
    slides: tuple[Path, ...],
    out_dir: Path,
    roi: str | None,
    offline: bool | None,
    overwrite: bool | None,
    shard: str | None,
    **settings: Any,  # --config and the options named as segment settings: command_config's
) -> None:
    """Segment every nucleus of SLIDE... (slides, plain images, folders of them, or text files
    listing one per line)."""
    from wsi_ccrl.io.tiles import parse_roi

    cfg = options.command_config(
        "segment", roi=parse_roi(roi), offline=offline or None, overwrite=overwrite or None
    )
    from wsi_ccrl.config import dump_yaml
    from wsi_ccrl.errors import WsiCcrlError
    from wsi_ccrl.segment.cohort import parse_shard, segment_slides
    from wsi_ccrl.segment.pipeline import ensure_writable

    shard_ = parse_shard(shard)
    ensure_writable(out_dir)
    dump_yaml("segment", cfg, out_dir / "segment-config.yaml")
    report = segment_slides(list(slides), out_dir, cfg, shard=shard_)
    for path in report.done:
        click.echo(f"store: {path}")
    for path in report.skipped:
        click.echo(f"skipped (already complete): {path}")
    if report.failed:
        listed = "; ".join(f"{p}: {why}" for p, why in report.failed)
        raise WsiCcrlError(f"{len(report.failed)} slide(s) failed: {listed}")
