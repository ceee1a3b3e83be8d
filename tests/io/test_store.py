import numpy as np
import pytest

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.store import (
    CellBatch,
    CellStore,
    CellStoreWriter,
    final_path,
    find_stores,
    partial_path,
)

ATTRS = {"slide": {"path": "x.svs", "mpp": 0.5}, "crop": {"crop_size": 8}}


def make_batch(n: int, tile: int, rng: np.random.Generator) -> CellBatch:
    lengths = rng.integers(3, 7, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return CellBatch(
        crops=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
        centroid=rng.random((n, 2), dtype=np.float32) * 100,
        bbox=rng.integers(0, 100, (n, 4), dtype=np.int32),
        area=rng.random(n, dtype=np.float32),
        seg_type=np.full(n, tile, np.int16),
        seg_prob=rng.random(n, dtype=np.float32),
        contour_offsets=offsets,
        contour_xy=rng.random((int(offsets[-1]), 2), dtype=np.float32),
        extra={"gt_class": np.full(n, tile % 3, np.int16)},
    )


def write(path, batches, chunk_cells=5):
    writer = CellStoreWriter(path, 8, ATTRS, chunk_cells=chunk_cells)
    for b in batches[writer.tiles_done :]:
        writer.add(b)
    return writer.finalize()


def test_round_trip_and_csr_contours(tmp_path):
    rng = np.random.default_rng(0)
    batches = [make_batch(n, t, rng) for t, n in enumerate([4, 0, 7, 3, 9])]
    store = write(tmp_path / "s", batches)
    assert store.path == tmp_path / "s.zarr" and not partial_path(store.path).exists()
    whole = CellBatch.concat(batches)
    assert store.n_cells == len(whole) == 23
    for name in ("crops", "centroid", "bbox", "area", "seg_type", "seg_prob", "gt_class"):
        want = whole.extra["gt_class"] if name == "gt_class" else getattr(whole, name)
        np.testing.assert_array_equal(store[name][:], want)
    offsets, xy = store.contours(5, 12)
    sub = whole.select(np.isin(np.arange(23), np.arange(5, 12)))
    np.testing.assert_array_equal(offsets, sub.contour_offsets)
    np.testing.assert_array_equal(xy, sub.contour_xy)
    assert store.attrs["progress"]["tiles_done"] == 5 and store.attrs["complete"] is True


def test_select_regathers_contours():
    rng = np.random.default_rng(1)
    b = make_batch(6, 0, rng)
    keep = np.array([True, False, False, True, True, False])
    sel = b.select(keep)
    for j, i in enumerate(np.flatnonzero(keep)):
        want = b.contour_xy[b.contour_offsets[i] : b.contour_offsets[i + 1]]
        np.testing.assert_array_equal(
            sel.contour_xy[sel.contour_offsets[j] : sel.contour_offsets[j + 1]], want
        )


def test_resume_after_crash_equals_clean_run(tmp_path):
    rng = np.random.default_rng(2)
    batches = [make_batch(int(n), t, rng) for t, n in enumerate(rng.integers(0, 6, 12))]
    clean = write(tmp_path / "clean", batches)

    # a "crash": rows are added, some flushed, then the writer is dropped without finalize,
    # and rows of a half-done flush are left beyond the durable count
    writer = CellStoreWriter(tmp_path / "crash", 8, ATTRS, chunk_cells=5)
    for b in batches[:7]:
        writer.add(b)
    durable = writer.durable_tiles
    assert 0 < durable < 7
    writer.group["crops"].resize((writer.group["crops"].shape[0] + 3, 8, 8, 3))  # torn write
    del writer

    resumed = CellStoreWriter(tmp_path / "crash", 8, ATTRS, chunk_cells=5)
    assert resumed.tiles_done == durable
    for b in batches[resumed.tiles_done :]:
        resumed.add(b)
    store = resumed.finalize()
    for name in clean.group.array_keys():
        np.testing.assert_array_equal(store[name][:], clean[name][:], err_msg=name)


def test_changed_settings_restart_instead_of_resume(tmp_path):
    rng = np.random.default_rng(3)
    writer = CellStoreWriter(tmp_path / "s", 8, ATTRS, chunk_cells=2)
    writer.add(make_batch(5, 0, rng))
    del writer  # that run ended (a live writer holds the store's lock)
    other = {**ATTRS, "crop": {"crop_size": 8, "window_scale": 1.0}}
    again = CellStoreWriter(tmp_path / "s", 8, other, chunk_cells=2)
    assert again.tiles_done == 0 and again.n_cells == 0


def test_open_errors(tmp_path):
    with pytest.raises(WsiCcrlError, match="not found"):
        CellStore.open(tmp_path / "missing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(WsiCcrlError, match="cell store"):
        CellStore.open(tmp_path / "empty.zarr")
    writer = CellStoreWriter(tmp_path / "half", 8, ATTRS)
    writer.flush()
    with pytest.raises(WsiCcrlError, match="incomplete"):
        CellStore.open(writer.partial)


def test_columns_and_find_stores(tmp_path):
    rng = np.random.default_rng(4)
    store = write(tmp_path / "a", [make_batch(7, 0, rng)])
    write(tmp_path / "b", [make_batch(2, 0, rng)])
    reopened = CellStore.open(store.path, mode="r+")
    reopened.write_column("cluster", np.arange(7, dtype=np.int16))
    emb = reopened.create_column("embedding", np.float16, (4,))
    emb[:] = 1.0
    again = CellStore.open(store.path)
    np.testing.assert_array_equal(again["cluster"][:], np.arange(7))
    assert again["embedding"].shape == (7, 4)
    with pytest.raises(WsiCcrlError):
        reopened.write_column("crops", np.zeros(7))
    assert find_stores([tmp_path]) == [tmp_path / "a.zarr", tmp_path / "b.zarr"]
    assert final_path(tmp_path / "a.zarr.partial") == tmp_path / "a.zarr"
