"""The label columns replaced as one set: staged, committed, recovered after a kill, checked."""

import shutil

import numpy as np
import pytest

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io import labelset
from wsi_ccrl.io.store import CellStore


def stage(store: CellStore, value: int) -> labelset.Staged:
    """A run's new set, written under staged names and sealed."""
    staged = labelset.Staged(store)
    n = store.n_cells
    staged.create_column("embedding", np.float16, (4,))[:] = np.full((n, 4), value, np.float16)
    staged.create_column("cluster", np.int16)[:] = np.full(n, value, np.int16)
    staged.create_column("cluster_distance", np.float32)[:] = np.full(n, value, np.float32)
    staged.seal(*labelset.LABEL_COLUMNS)
    return staged


def test_a_staged_set_is_invisible_until_committed(small_store_factory):
    store = CellStore.open(small_store_factory("s", max_cells=10), mode="r+")
    labelset.commit(stage(store, 1), label={"k": 2})
    staged = stage(store, 2)  # a second run, not committed: a kill here
    assert store["cluster"][0] == 1 and staged["cluster"][0] == 2
    labelset.require_current(store)  # the previous set is whole
    labelset.recover(store)  # the next run drops the staging
    assert "next_cluster" not in store and store["cluster"][0] == 1
    labelset.commit(stage(store, 3), label={"k": 2})
    assert store["cluster"][0] == 3 and store.attrs["label"]["k"] == 2
    labelset.require_current(store)


def test_a_swap_stopped_half_way_is_refused_then_finished(small_store_factory):
    store = CellStore.open(small_store_factory("s", max_cells=10), mode="r+")
    labelset.commit(stage(store, 1), label={})
    staged = stage(store, 2)
    record = {"run": staged.run, "move": list(labelset.LABEL_COLUMNS), "attrs": {"label": {}}}
    columns = {n: staged.run for n in labelset.LABEL_COLUMNS}
    record["attrs"]["label"] = {"run": staged.run, "columns": columns}
    store.group.attrs[labelset.COMMIT_ATTR] = record
    (store.path / "next_embedding").rename(store.path / "embedding.x")  # one array swapped...
    shutil.rmtree(store.path / "embedding")
    (store.path / "embedding.x").rename(store.path / "embedding")  # ...then the kill
    with pytest.raises(WsiCcrlError, match="stale or half-written .*run label again"):
        labelset.require_current(store)
    labelset.recover(store)
    labelset.require_current(store)
    assert store["cluster"][0] == 2 and store["embedding"][0, 0] == 2


def test_a_column_of_another_run_is_refused(small_store_factory):
    store = CellStore.open(small_store_factory("s", max_cells=10), mode="r+")
    labelset.commit(stage(store, 1), label={})
    store.write_column("cluster", np.zeros(store.n_cells, np.int16))  # written outside a run
    with pytest.raises(WsiCcrlError, match="'cluster' is not of the last complete label run"):
        labelset.require_current(store)
