"""The per-cell record: one row per cell in every array, the nucleus polygons CSR
(``contour_offsets`` (n+1,) into ``contour_xy`` (m, 2)), and its row operations written once."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import numpy as np

from wsi_ccrl.io.contours import gather_polygons

R = TypeVar("R", bound="CellRows")


def column(dtype: Any, *shape: int | None) -> Any:
    """A field of a per-cell record: one row per cell, of ``dtype`` and row ``shape`` (a ``None``
    is a size that ``CellRows.empty`` is given, e.g. the crop side)."""
    return dataclasses.field(metadata={"dtype": np.dtype(dtype), "shape": shape})


class CellRows:
    """The row operations of every per-cell record, written once: ``len``, ``select``, ``concat``
    and ``empty``.

    A record is a dataclass of arrays with one row per cell, declared with :func:`column`, whose
    nucleus polygons are CSR (``contour_offsets`` (n+1,) into ``contour_xy`` (m, 2)), plus at most
    a dict of further columns (``CellBatch.extra``). The records: ``segment.base.Nuclei`` (a
    segmenter's output), ``io.store.CellBatch`` (rows to append), ``bench.datasets.common``'s
    ``GroundTruthNuclei`` and ``CellSet`` (ground truth, the benchmark models' input).
    """

    def __len__(self) -> int:
        return int(len(self.contour_offsets) - 1)

    def select(self: R, keep: np.ndarray) -> R:
        """The rows where boolean mask (or index array) ``keep`` selects, in that order; polygons
        re-based (one gather), a dict of further columns selected entry by entry."""
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        offsets, xy = gather_polygons(self.contour_offsets, self.contour_xy, idx)
        values: dict[str, Any] = {"contour_offsets": offsets, "contour_xy": xy}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in values:
                continue
            if isinstance(value, dict):
                values[f.name] = {k: v[idx] for k, v in value.items()}
            else:
                values[f.name] = value[idx]
        return type(self)(**values)

    @classmethod
    def concat(cls: type[R], records: list[R]) -> R:
        """One record from many, in order; polygon offsets re-based."""
        lengths = np.concatenate([np.diff(r.contour_offsets) for r in records])
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            parts = [getattr(r, f.name) for r in records]
            if isinstance(parts[0], dict):
                values[f.name] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            else:
                values[f.name] = np.concatenate(parts)
        values["contour_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values["contour_xy"] = values["contour_xy"].reshape(-1, 2)
        return cls(**values)

    @classmethod
    def empty(cls: type[R], **sizes: int) -> R:
        """No rows. ``sizes`` fills the open sizes of a column's rows: ``CellBatch.empty(crops=32)``
        has (0, 32, 32, 3) crops. A dict of further columns keeps its default (empty)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if "dtype" in f.metadata:
                shape = tuple(sizes[f.name] if s is None else s for s in f.metadata["shape"])
                values[f.name] = np.zeros((0, *shape), f.metadata["dtype"])
        values["contour_offsets"] = np.zeros(1, np.int64)
        return cls(**values)
