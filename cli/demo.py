"""``wsi-ccrl demo``: the whole job on the bundled sample slide — segment, train, label, export."""

from __future__ import annotations

import time
from pathlib import Path

import click

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "CMU-1-Small-Region.svs"
QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


@click.command()
@click.option(
    "--slide",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=SAMPLE,
    show_default=True,
    help="Slide to run on (the bundled sample by default).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=QUICK,
    show_default=True,
    help="Profile for all three steps.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Override training epochs."
)
def demo(slide: Path, config_path: Path, out: Path, epochs: int | None) -> None:
    """Segment the sample slide, train CCRL on its cells, label them and export QuPath overlays."""
    from wsi_ccrl.demo import run_demo

    started = time.perf_counter()
    result = run_demo(slide, out, config_path, epochs=epochs)
    minutes = (time.perf_counter() - started) / 60
    click.echo(f"\nDone in {minutes:.1f} min. Wrote:")
    for label, path in result.items():
        click.echo(f"  {label:<16} {path}")
    click.echo(
        "\nOpen it in QuPath: open the slide, then File › Import objects… and choose the .geojson "
        "(or drag the .geojson onto the open slide). Cells appear as detections, coloured by cluster; "
        "name the clusters with the gallery and re-export with `wsi-ccrl label --names names.yaml`."
    )
