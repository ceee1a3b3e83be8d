"""Entry point: ``wsi-ccrl [--verbose|--quiet] COMMAND ...``.

Commands are imported lazily so ``wsi-ccrl --help`` never loads torch or TIAToolbox. User errors
(``WsiCcrlError``, and a full or read-only disk) become one ``Error: ...`` line: exit 2 for
config/usage errors, 1 otherwise.
"""

from __future__ import annotations

import errno
import importlib
import os

import click

from wsi_ccrl import __version__
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.log import configure_logging

DISK_ERRORS = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space",
    errno.EROFS: "write to another folder",
}
COMMANDS = {
    "segment": ("wsi_ccrl_cli.segment", "Segment every nucleus of slides into zarr cell stores."),
    "train": ("wsi_ccrl_cli.train", "Train CCRL on cell stores."),
    "label": ("wsi_ccrl_cli.label", "Embed, cluster and export every cell (GeoJSON for QuPath)."),
    "benchmark": (
        "wsi_ccrl_cli.benchmark",
        "The paper's protocol on CoNSeP / NuCLS, with baselines.",
    ),
    "demo": ("wsi_ccrl_cli.demo", "The whole pipeline on the bundled sample slide."),
    "check": ("wsi_ccrl_cli.check", "Verify every chunk and invariant of cell stores."),
}


class LazyGroup(click.Group):
    """Loads a command's module only when that command runs; turns user errors into one line."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return getattr(module, name)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        except WsiCcrlError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # a full disk, a quota, a read-only folder: the user's to fix
            if exc.errno not in DISK_ERRORS:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(
                f"{os.strerror(exc.errno)}{where}: nothing was left under a final name; "
                f"{DISK_ERRORS[exc.errno]} and run again"
            ) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wsi-ccrl")
@click.option("-v", "--verbose", "verbosity", flag_value=1, help="Debug logging.")
@click.option("-q", "--quiet", "verbosity", flag_value=-1, help="Warnings only, no progress bars.")
def cli(verbosity: int | None) -> None:
    """Label every cell of H&E whole-slide images by unsupervised cell type (CCRL).

    segment → train → label: slides in, QuPath overlays out.
    """
    configure_logging(verbosity or 0)


if __name__ == "__main__":
    cli()
