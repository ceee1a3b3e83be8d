"""Is a cell store whole? Every chunk of every array, and the invariants the readers rely on.

``check_store`` lists the problems of one store, one line each (store, array, chunk): a chunk whose
CRC32C does not match its bytes (checked on the stored bytes, without decoding, so a whole store is
checked at disk speed), a chunk of an older store (no checksums) that fails to decode, arrays whose
row counts disagree, contour offsets that decrease, missing attrs, an unfinished store, a label set
that is stale or half-written. ``usable_stores`` runs it before ``train`` and ``label`` read a
cohort, so that a broken store is skipped in one warning line instead of stopping the run mid-way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.labelset import STAGED, stale_reason
from wsi_ccrl.io.store import ROW_ARRAYS, CellStore
from wsi_ccrl.log import get_logger

log = get_logger(__name__)

CONTOUR_ARRAYS = ("contour_offsets", "contour_xy")
REQUIRED_ATTRS = ("schema_version", "complete", "progress")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store; ``array`` and ``chunk`` say where, when they can."""

    store: Path
    message: str
    array: str | None = None
    chunk: int | None = None

    def __str__(self) -> str:
        where = "".join(
            [
                f"{self.array}: " if self.array else "",
                f"chunk {self.chunk}: " if self.chunk is not None else "",
            ]
        )
        return f"{self.store}: {where}{self.message}"


def check_store(
    path: str | Path, arrays: Iterable[str] | None = None, labels: bool = True
) -> list[Problem]:
    """The problems of the store at ``path`` (empty: it is whole).

    Args:
        path: a finished store (``x.zarr``).
        arrays: check the chunks of these arrays only (default: every array); the invariants are
            always checked.
        labels: check that the label columns are one complete set (``label`` itself, which
            replaces them, does not need them to be).
    """
    path = Path(path)
    try:
        store = CellStore.open(path)
    except WsiCcrlError as exc:
        return [Problem(path, str(exc).replace(f": {path}", "").replace(f"{path}: ", ""))]
    problems = _attr_problems(store)
    # a stopped label run's staged columns are not the store's: the next run drops them
    names = sorted(n for n in store.group.array_keys() if not n.startswith(STAGED))
    wanted = names if arrays is None else [n for n in names if n in set(arrays)]
    for name in (*ROW_ARRAYS, *CONTOUR_ARRAYS):
        if name not in names:
            problems.append(Problem(path, "missing", name))
    broken = set()
    for name in wanted:
        found = _chunk_problems(store, name)
        problems += found
        broken |= {name} if found else set()
    problems += _shape_problems(store, names, broken)
    if labels and not problems:
        reason = stale_reason(store)
        if reason is not None:
            problems.append(
                Problem(path, f"labels are stale or half-written ({reason}); run label again")
            )
    return problems


def usable_stores(
    paths: list[Path], arrays: Iterable[str] | None = None, labels: bool = True
) -> tuple[list[Path], list[list[Problem]]]:
    """The stores of ``paths`` that pass ``check_store`` and the problems of the others, one
    warning line each; one error line when none passes.

    Returns:
        (usable paths in the given order, one problem list per skipped store).
    """
    usable, skipped = [], []
    for path in paths:
        problems = check_store(path, arrays, labels)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            log.warning("%s%s; skipping this store", problems[0], more)
            skipped.append(problems)
        else:
            usable.append(path)
    if paths and not usable:
        raise WsiCcrlError(
            f"all {len(paths)} cell store(s) failed to read (first: {skipped[0][0]}); "
            "`wsi-ccrl check STORE` lists every problem"
        )
    return usable, skipped


def skipped_summary(skipped: list[list[Problem]], total: int) -> str:
    """One line: which stores a run left out, and why (their first problem)."""
    names = "; ".join(str(problems[0]) for problems in skipped[:3])
    more = ", ..." if len(skipped) > 3 else ""
    return (
        f"skipped {len(skipped)} of {total} cell store(s) that failed to read ({names}{more}); "
        "the others were used; `wsi-ccrl check STORE` lists every problem"
    )


def _attr_problems(store: CellStore) -> list[Problem]:
    attrs = store.attrs
    problems = [
        Problem(store.path, f"attr {k!r} is missing") for k in REQUIRED_ATTRS if k not in attrs
    ]
    if "complete" in attrs and attrs["complete"] is not True:
        problems.append(Problem(store.path, "not finalised (resume it with `wsi-ccrl segment`)"))
    return problems


def _chunk_problems(store: CellStore, name: str) -> list[Problem]:
    """Every stored chunk of one array: its checksum, or (no checksum) that it decodes."""
    try:
        arr = store.group[name]
    except Exception as exc:  # zarr raises several types for unreadable metadata
        return [Problem(store.path, f"metadata unreadable ({type(exc).__name__})", name)]
    meta, has_crc, problems = arr.metadata, _has_crc(arr), []
    for coords in itertools.product(*(range(n) for n in arr.cdata_shape)):
        if has_crc:
            chunk_file = store.path / name / meta.encode_chunk_key(coords)
            try:
                data = chunk_file.read_bytes()
            except FileNotFoundError:
                continue  # never written: zarr reads it as the fill value
            stored = int.from_bytes(data[-4:], "little") if len(data) >= 4 else -1
            if google_crc32c.value(data[:-4]) != stored:
                problems.append(Problem(store.path, "checksum mismatch", name, coords[0]))
            continue
        try:
            region = tuple(
                slice(i * c, (i + 1) * c) for i, c in zip(coords, arr.chunks, strict=True)
            )
            np.asarray(arr[region])
        except Exception as exc:  # a codec's error on a corrupt chunk of an older store
            problems.append(
                Problem(store.path, f"unreadable ({type(exc).__name__})", name, coords[0])
            )
    return problems


def _shape_problems(store: CellStore, names: list[str], broken: set[str]) -> list[Problem]:
    """Row counts agree, contour offsets start at 0, never decrease and end at the points."""
    problems = []
    if "centroid" not in names:
        return problems
    n = store.group["centroid"].shape[0]
    progress = store.attrs.get("progress") or {}
    if progress.get("n_cells", n) != n:
        problems.append(
            Problem(store.path, f"{n} cells but its attrs record {progress['n_cells']}")
        )
    for name in names:
        if name in CONTOUR_ARRAYS:
            continue
        rows = store.group[name].shape[0]
        if rows != n:
            problems.append(Problem(store.path, f"{rows} rows for {n} cells", name))
    if not set(CONTOUR_ARRAYS) <= set(names):
        return problems
    offsets_arr, xy = store.group["contour_offsets"], store.group["contour_xy"]
    if offsets_arr.shape[0] != n + 1:
        problems.append(
            Problem(store.path, f"{offsets_arr.shape[0]} offsets for {n} cells", "contour_offsets")
        )
    elif "contour_offsets" not in broken:
        try:
            offsets = np.asarray(offsets_arr[:])
        except Exception as exc:
            return [
                *problems,
                Problem(store.path, f"unreadable ({type(exc).__name__})", "contour_offsets"),
            ]
        drops = np.flatnonzero(np.diff(offsets) < 0)
        if offsets[0] != 0 or len(drops):
            cell = int(drops[0]) if len(drops) else 0  # its polygon would end before it starts
            chunk = (cell + bool(len(drops))) // offsets_arr.chunks[0]
            problems.append(
                Problem(store.path, f"offsets decrease at cell {cell}", "contour_offsets", chunk)
            )
        elif offsets[-1] != xy.shape[0]:
            problems.append(
                Problem(
                    store.path, f"offsets end at {offsets[-1]}, not {xy.shape[0]}", "contour_xy"
                )
            )
    return problems


def _has_crc(arr) -> bool:
    """Whether the array's chunks carry a CRC32C (stores written before checksums do not)."""
    return any(getattr(c, "to_dict", dict)().get("name") == "crc32c" for c in arr.metadata.codecs)
