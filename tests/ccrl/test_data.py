"""Training batches from cell stores: checks, order, shuffling, sharding, streaming."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_store

from wsi_ccrl.ccrl.data import CellCrops, load_eval_set, open_stores
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.store import CellStore


@pytest.fixture(scope="module")
def real(consep_store) -> np.ndarray:
    return np.asarray(CellStore.open(consep_store)["crops"][:60])


def row_ids(batch: np.ndarray, crops: np.ndarray) -> list[int]:
    """Which rows of ``crops`` a batch holds (crops of real cells are all different)."""
    lookup = {c.tobytes(): i for i, c in enumerate(crops)}
    return [lookup[c.tobytes()] for c in batch]


def test_bad_stores_fail_with_one_clear_line(tmp_path, real, consep_store):
    empty = write_store(tmp_path / "empty.zarr", real[:0])
    with pytest.raises(WsiCcrlError, match="all 1 cell store"):
        open_stores([empty])
    # one blank slide in a cohort: skipped with a warning, the others train
    assert [s.path for s in open_stores([consep_store, empty])] == [
        CellStore.open(consep_store).path
    ]
    small = write_store(tmp_path / "small.zarr", real[:4, ::2, ::2])
    with pytest.raises(WsiCcrlError, match="different crop sizes"):
        open_stores([consep_store, small])
    with pytest.raises(WsiCcrlError, match="crop_size: 32"):
        open_stores([consep_store], crop_size=64)
    with pytest.raises(WsiCcrlError, match="not found"):
        open_stores([tmp_path / "missing.zarr"])


@pytest.mark.parametrize("in_memory", [True, False])
def test_one_epoch_is_a_shuffled_pass_without_repeats(tmp_path, real, in_memory):
    store = write_store(tmp_path / "a.zarr", real[:40], chunk_cells=8)
    data = CellCrops(
        open_stores([store]),
        in_memory_max_cells=1000 if in_memory else 0,
        buffer_chunks=2,
        prefetch=2,
    )
    assert data.in_memory is in_memory
    batches = list(data.batches(epoch=0, batch_size=8, seed=0))
    assert len(batches) == data.steps_per_epoch(8) == 5
    assert all(b.dtype == np.uint8 and b.shape == (8, 32, 32, 3) for b in batches)
    ids = [i for b in batches for i in row_ids(b, real)]
    assert sorted(ids) == list(range(40))  # every cell once
    assert ids != list(range(40))  # not in store order
    again = list(data.batches(epoch=0, batch_size=8, seed=0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = list(data.batches(epoch=1, batch_size=8, seed=0))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=True))
    resumed = list(data.batches(epoch=0, batch_size=8, seed=0, skip=3))
    assert all(np.array_equal(a, b) for a, b in zip(batches[3:], resumed, strict=True))


@pytest.mark.parametrize("in_memory", [True, False])
def test_ranks_get_disjoint_shares_and_equal_steps(tmp_path, real, in_memory):
    stores = [
        write_store(tmp_path / "a.zarr", real[:30], chunk_cells=8),
        write_store(tmp_path / "b.zarr", real[30:60], chunk_cells=8),
    ]
    data = CellCrops(open_stores(stores), 1000 if in_memory else 0, buffer_chunks=3, prefetch=0)
    shares = [list(data.batches(2, 4, seed=7, rank=r, world=2)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == data.steps_per_epoch(4, world=2) > 0
    ids = [set(i for b in share for i in row_ids(b, real)) for share in shares]
    assert not ids[0] & ids[1]


def test_batch_larger_than_the_data(tmp_path, real):
    data = CellCrops(open_stores([write_store(tmp_path / "a.zarr", real[:6])]))
    with pytest.raises(WsiCcrlError, match="larger than"):
        next(data.batches(0, batch_size=8))


def test_eval_set_only_from_stores_with_classes(tmp_path, real):
    gt = np.arange(20, dtype=np.int16) % 3
    labelled = write_store(tmp_path / "gt.zarr", real[:20], gt=gt)
    plain = write_store(tmp_path / "plain.zarr", real[20:30])
    assert load_eval_set(open_stores([plain]), 100, 0) is None
    crops, labels = load_eval_set(open_stores([plain, labelled]), 100, 0)
    assert np.array_equal(labels, gt) and np.array_equal(crops, real[:20])
    crops, labels = load_eval_set(open_stores([labelled]), 7, 0)
    assert len(crops) == len(labels) == 7
    assert np.array_equal(labels, gt[row_ids(crops, real)])
