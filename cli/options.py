"""Option factories shared by the commands (after TIAToolbox's ``cli_*`` helpers)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from wsi_ccrl.config import SECTION_TYPES, load_section

# Parameter types the commands share (a click type holds no state). An option left without a
# default is None when not given: a setting the config file then decides.
FILE = click.Path(dir_okay=False)
FOLDER = click.Path(file_okay=False, path_type=Path)
POSITIVE = click.FloatRange(min=0, min_open=True)
AT_LEAST_ONE = click.IntRange(min=1)


def choice_option(name: str, choices: tuple[str, ...] | list[str], help: str):
    """``name`` taking one of ``choices`` (a list the config checks too, so the two agree)."""
    return click.option(name, type=click.Choice(list(choices)), help=help)


def config_option():
    return click.option(
        "--config",
        "config_path",
        type=FILE,
        help="YAML config, or a shipped profile's name (ccrl: the paper's, quick: CPU-sized); "
        "options given here override it.",
    )


def device_option():
    """``--device auto | cpu | cuda | cuda:N``, checked as the config checks it."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        from wsi_ccrl.config import check_device
        from wsi_ccrl.errors import ConfigError

        if value is not None:
            try:
                check_device("--device", value)
            except ConfigError as exc:
                raise click.BadParameter(str(exc).split(": ", 1)[-1]) from None
        return value

    return click.option(
        "--device",
        callback=check,
        help="Where to compute: auto (CUDA when a GPU is visible), cpu, cuda or cuda:N.",
    )


def gpus_option():
    """``--gpus 0,1``: the GPUs DataParallel spreads batches over (default: cuda:N alone, else
    every visible one), alike for train, label and benchmark."""
    return click.option("--gpus", help="CUDA device ids for DataParallel, e.g. 0,1 (default: all).")


def out_option(help: str | None, type: click.ParamType = FOLDER, **kwargs: Any):
    """``--out``: the folder a command writes, passed as ``out_dir``."""
    return click.option("--out", "out_dir", type=type, help=help, **kwargs)


def placement_options():
    """``--device`` then ``--gpus``: where train, label and benchmark compute."""

    def decorate(command):
        return device_option()(gpus_option()(command))

    return decorate


def batch_size_option():
    return click.option("--batch-size", type=AT_LEAST_ONE, help="Batch size.")


def command_config(section: str, **derived: Any):
    """The running command's frozen config: the ``--config`` file's values, then every option the
    user set whose name is a setting of ``section`` (``--batch-size`` sets ``batch_size``), then
    ``derived``: values the command worked out itself (a parsed ROI, a dotted ``augment.`` key).

    An option left unset is ``None`` and keeps the file's value."""
    params = click.get_current_context().params
    settings = {f.name for f in dataclasses.fields(SECTION_TYPES[section])}
    overrides = {name: value for name, value in params.items() if name in settings}
    overrides.update(derived)
    return load_section(section, params.get("config_path"), overrides)
