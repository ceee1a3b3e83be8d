import numpy as np
import pytest

from wsi_ccrl.io.cellrows import CellRows


@pytest.mark.parametrize(
    "record",
    ["segment.base.Nuclei", "io.store.CellBatch", "GroundTruthNuclei", "CellSet"],
)
def test_every_cell_record_shares_one_set_of_row_operations(record):
    """The four per-cell records select, concatenate and start empty alike (``CellRows``)."""
    import dataclasses

    from wsi_ccrl.bench.datasets.common import CellSet, GroundTruthNuclei
    from wsi_ccrl.io.store import CellBatch
    from wsi_ccrl.segment.base import Nuclei

    cls = {"segment.base.Nuclei": Nuclei, "io.store.CellBatch": CellBatch,
           "GroundTruthNuclei": GroundTruthNuclei, "CellSet": CellSet}[record]  # fmt: skip
    assert issubclass(cls, CellRows)
    rng = np.random.default_rng(1)
    n, lengths = 6, rng.integers(3, 7, 6)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = {"contour_offsets": offsets}
    for f in dataclasses.fields(cls):
        if f.name == "contour_offsets":
            continue
        if "dtype" not in f.metadata:  # CellBatch.extra: further columns
            values[f.name] = {"gt_class": np.arange(n, dtype=np.int16)}
            continue
        shape = tuple(8 if s is None else s for s in f.metadata["shape"])
        rows = int(offsets[-1]) if f.name == "contour_xy" else n
        values[f.name] = (rng.random((rows, *shape)) * 100).astype(f.metadata["dtype"])
    cells = cls(**values)
    assert len(cells) == n

    picked = cells.select(np.array([4, 1]))  # an index array keeps its order
    assert len(picked) == 2
    np.testing.assert_array_equal(picked.contour_offsets, [0, lengths[4], lengths[4] + lengths[1]])
    np.testing.assert_array_equal(
        picked.contour_xy,
        np.concatenate([cells.contour_xy[offsets[i] : offsets[i + 1]] for i in (4, 1)]),
    )
    mask = np.arange(n) < 2
    again = cls.concat([cells.select(mask), cells.select(~mask)])
    for f in dataclasses.fields(cls):
        a, b = getattr(again, f.name), getattr(cells, f.name)
        if isinstance(b, dict):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in b)
        else:
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype, f.name

    empty = cls.empty(crops=8) if "crops" in values else cls.empty()
    assert len(empty) == 0 and empty.contour_offsets.tolist() == [0]
    for f in dataclasses.fields(cls):
        if "dtype" in f.metadata and f.name != "contour_offsets":
            value = getattr(empty, f.name)
            assert (
                value.dtype == f.metadata["dtype"]
                and value.shape[1:] == getattr(cells, f.name).shape[1:]
            )
