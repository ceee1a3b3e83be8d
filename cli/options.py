"""Option factories shared by the commands (after TIAToolbox's ``cli_*`` helpers)."""

from __future__ import annotations

import click

from wsi_ccrl.config import load_section


def config_option():
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="YAML config, or a shipped profile's name (ccrl: the paper's, quick: CPU-sized); "
        "options given here override it.",
    )


def device_option():
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default=None,
        help="Where to compute: auto picks CUDA when a GPU is visible.",
    )


def batch_size_option():
    return click.option(
        "--batch-size", type=click.IntRange(min=1), default=None, help="Batch size."
    )


def load_config(section: str, config_path: str | None, **overrides):
    """The command's frozen config: file values, then the options the user actually set."""
    return load_section(section, config_path, overrides)
