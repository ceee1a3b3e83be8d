"""``wsi-ccrl check``: is every chunk of every array of STOREs whole, and do their invariants hold?"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("stores", nargs=-1, required=True, type=click.Path(path_type=Path))
def check(stores: tuple[Path, ...]) -> None:
    """Verify cell stores (or folders of them): one line per problem (store, array, chunk); exit 1
    when there is any.

    \b
    Example:
      wsi-ccrl check stores/
    """
    from wsi_ccrl.errors import WsiCcrlError
    from wsi_ccrl.io.store import find_stores
    from wsi_ccrl.io.verify import check_store

    paths = find_stores(list(stores))
    bad = 0
    for path in paths:
        problems = check_store(path)
        bad += bool(problems)
        for problem in problems:
            click.echo(str(problem))
    if bad:
        raise WsiCcrlError(f"{bad} of {len(paths)} cell store(s) have problems")
    click.echo(f"{len(paths)} cell store(s) checked: every chunk and invariant is whole")
