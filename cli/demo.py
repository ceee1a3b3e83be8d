"""``wsi-ccrl demo``: the whole job on the bundled sample slide — segment, train, label, export."""

from __future__ import annotations

import time
from pathlib import Path

import click
from wsi_ccrl_cli import options


@click.command()
@click.option(
    "--slide",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Slide to run on (default: the bundled sample, CMU-1-Small-Region.svs).",
)
@click.option(
    "--config",
    "config_path",
    default="demo",
    show_default=True,
    help="Profile for all three steps: a YAML file or a shipped profile's name "
    "(demo = quick with 5 epochs).",
)
@click.option("--roi", help="Only this region x,y,w,h (level-0 pixels): a quick look.")
@options.out_option(None, default=Path("demo-out"), show_default=True)
@click.option("--epochs", type=options.AT_LEAST_ONE, help="Override training epochs.")
def demo(
    slide: Path | None, config_path: str, roi: str | None, out_dir: Path, epochs: int | None
) -> None:
    """Segment the sample slide, train CCRL on its cells, label them and export QuPath overlays."""
    from wsi_ccrl.demo import run_demo
    from wsi_ccrl.io.tiles import parse_roi
    from wsi_ccrl.resources import sample_slide

    started = time.perf_counter()
    result = run_demo(
        slide or sample_slide(), out_dir, config_path, epochs=epochs, roi=parse_roi(roi)
    )
    minutes = (time.perf_counter() - started) / 60
    click.echo(f"\nDone in {minutes:.1f} min. Wrote:")
    for label, path in result.items():
        click.echo(f"  {label:<16} {path}")
    click.echo(
        "\nOpen it in QuPath: open the slide, then File › Import objects… and choose the .geojson "
        "(or drag the .geojson onto the open slide). Cells appear as detections, coloured by cluster; "
        "name the clusters with the gallery and re-export with `wsi-ccrl label --names names.yaml`."
    )
