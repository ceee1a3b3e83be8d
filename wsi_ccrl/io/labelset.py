"""The label columns of a store (``embedding``, ``cluster``, ``cluster_distance``), replaced as a set.

A ``label`` run writes its columns under staged names (``next_embedding``, ...) through a
``Staged`` view, each tagged with the run's id once complete, so the previous set stays whole and
readable while the run works. ``commit`` then records the swap in the group's attrs (one atomic
write: the point of no return), renames the staged arrays over the current ones and sets the
``label`` attrs, whose ``columns`` name the run each column must carry. A kill before that record
leaves the previous set (the next run drops the staged arrays); a kill after it leaves a swap that
the next run finishes (``recover``). Export refuses a store whose columns are not the ones its
attrs name (``require_current``): a stale or half-written set is never exported.
"""

from __future__ import annotations

import shutil
import uuid
from typing import Any

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.store import CellStore

LABEL_COLUMNS = ("embedding", "cluster", "cluster_distance")
STAGED = "next_"
RUN_ATTR = "label_run"  # on each label column: the run that wrote it
COMMIT_ATTR = "label_commit"  # on the group while a swap is under way


class Staged:
    """A store as one ``label`` run sees it: label columns are written (and, once written, read)
    under staged names; everything else is the store's."""

    def __init__(self, store: CellStore, run: str | None = None):
        self.store = store
        self.run = run or uuid.uuid4().hex

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def _name(self, name: str) -> str:
        staged = STAGED + name
        return staged if name in LABEL_COLUMNS and staged in self.store.group else name

    def __contains__(self, name: str) -> bool:
        return self._name(name) in self.store

    def __getitem__(self, name: str):
        return self.store[self._name(name)]

    def __len__(self) -> int:
        return self.store.n_cells

    def create_column(self, name: str, *args: Any, **kwargs: Any):
        staged = STAGED + name if name in LABEL_COLUMNS else name
        return self.store.create_column(staged, *args, **kwargs)

    def seal(self, *names: str) -> None:
        """Tag staged columns as complete, written by this run."""
        for name in names:
            self.store[STAGED + name].attrs[RUN_ATTR] = self.run


def recover(store: CellStore) -> None:
    """Before a run (under the store's lock): finish a recorded swap, drop unrecorded staging."""
    commit = store.attrs.get(COMMIT_ATTR)
    if commit:
        _swap(store, commit)
    for name in LABEL_COLUMNS:
        if STAGED + name in store.group:
            del store.group[STAGED + name]


def commit(staged: Staged, **attrs: Any) -> None:
    """Make the staged columns the store's set; ``attrs`` (the ``label`` provenance, ...) are set
    with it, ``label`` gaining ``run`` and ``columns`` (the run id each column carries)."""
    store = staged.store
    moved = [n for n in LABEL_COLUMNS if STAGED + n in store.group]
    columns = {n: staged[n].attrs.get(RUN_ATTR) for n in LABEL_COLUMNS if n in staged}
    missing = [n for n in LABEL_COLUMNS if n not in columns]
    if missing:
        raise ValueError(f"{store.path}: no {missing[0]!r} column to commit")
    attrs["label"] = {**attrs.get("label", {}), "run": staged.run, "columns": columns}
    record = {"run": staged.run, "move": moved, "attrs": attrs}
    store.group.attrs[COMMIT_ATTR] = record  # the point of no return
    _swap(store, record)


def _swap(store: CellStore, record: dict[str, Any]) -> None:
    """Rename the recorded staged arrays over the current ones; idempotent, so a kill half-way is
    finished by running it again."""
    for name in record["move"]:
        staged, final = store.path / (STAGED + name), store.path / name
        if staged.exists():
            if final.exists():
                shutil.rmtree(final)
            staged.rename(final)
    store.group.attrs.update({**record["attrs"], COMMIT_ATTR: None})


def stale_reason(store: CellStore) -> str | None:
    """Why the store's label columns are not one complete set, or None when they are (or when
    the store was labelled before runs were recorded)."""
    attrs = store.attrs
    if attrs.get(COMMIT_ATTR):
        return "a label run stopped while replacing its columns"
    columns = (attrs.get("label") or {}).get("columns")
    if columns is None:
        return None
    for name in LABEL_COLUMNS:
        if name not in store:
            return f"no {name!r} column"
        if store[name].attrs.get(RUN_ATTR) != columns.get(name):
            return f"{name!r} is not of the last complete label run"
    return None


def require_current(store: CellStore) -> None:
    """One line, and no export, when the store's labels are stale or half-written."""
    if "cluster" not in store or "cluster_distance" not in store:
        raise WsiCcrlError(f"{store.path} has no 'cluster' column: run label first")
    reason = stale_reason(store)
    if reason is not None:
        raise WsiCcrlError(
            f"{store.path}: its labels are stale or half-written ({reason}); run label again"
        )
