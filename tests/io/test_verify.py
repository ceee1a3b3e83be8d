"""``check_store`` on real stores: every array kind corrupted, broken invariants, older stores."""

import numpy as np
import pytest
import zarr
from conftest import corrupt_chunk
from zarr.codecs import BloscCodec

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io import store as store_module
from wsi_ccrl.io.store import CellStore
from wsi_ccrl.io.verify import check_store, skipped_summary, usable_stores


def test_a_whole_store_has_no_problems(small_store_factory):
    store = small_store_factory("whole", max_cells=40)
    assert check_store(store) == []


@pytest.mark.parametrize(
    "array",
    ["crops", "centroid", "bbox", "area", "seg_type", "seg_prob", "contour_offsets", "contour_xy"],
)
def test_a_corrupt_chunk_of_every_array_is_named(small_store_factory, array):
    store = small_store_factory("bad", max_cells=40)
    corrupt_chunk(store, array, 0)
    problems = check_store(store)
    assert [(p.array, p.chunk, p.message) for p in problems] == [(array, 0, "checksum mismatch")]
    assert str(problems[0]) == f"{store}: {array}: chunk 0: checksum mismatch"
    with pytest.raises(ValueError, match="checksum"):  # a reader never decodes it into garbage
        CellStore.open(store)[array][:]


def test_label_columns_are_checked_too(small_store_factory):
    store = small_store_factory("labelled", max_cells=40)
    cs = CellStore.open(store, mode="r+")
    cs.write_column("cluster", np.arange(cs.n_cells, dtype=np.int16) % 3)
    corrupt_chunk(store, "cluster", 1)
    assert [(p.array, p.chunk) for p in check_store(store)] == [("cluster", 1)]


def test_broken_invariants_are_named(small_store_factory):
    store = small_store_factory("shapes", max_cells=40)
    group = zarr.open_group(str(store), mode="r+")
    offsets = group["contour_offsets"]
    values = offsets[:]
    values[5] = values[4] - 1
    offsets[:] = values
    group["area"].resize((10,))
    attrs = dict(group.attrs)
    del group.attrs["progress"]
    lines = [str(p) for p in check_store(store)]
    assert f"{store}: attr 'progress' is missing" in lines
    assert f"{store}: area: 10 rows for {attrs['progress']['n_cells']} cells" in lines
    assert f"{store}: contour_offsets: chunk 0: offsets decrease at cell 4" in lines


def test_an_unfinished_or_foreign_folder_is_one_problem(small_store_factory, tmp_path):
    store = small_store_factory("draft", max_cells=40)
    zarr.open_group(str(store), mode="r+").attrs["complete"] = False
    assert [p.message for p in check_store(store)] == [
        "not finalised (resume it with `wsi-ccrl segment`)"
    ]
    (tmp_path / "x.zarr").mkdir()
    assert len(check_store(tmp_path / "x.zarr")) == 1


def test_an_older_store_without_checksums_reads_and_its_corruption_is_found(
    small_store_factory, monkeypatch
):
    monkeypatch.setattr(
        store_module, "_COMPRESSOR", BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
    )
    store = small_store_factory("older", max_cells=40)
    assert check_store(store) == []
    assert CellStore.open(store)["crops"][:].shape[0] > 0
    corrupt_chunk(store, "crops", 0)
    assert [(p.array, p.chunk) for p in check_store(store)] == [("crops", 0)]


def test_usable_stores_skip_the_broken_and_stop_when_none_is_left(small_store_factory):
    good = small_store_factory("good", max_cells=20)
    bad = small_store_factory("bad", max_cells=20)
    corrupt_chunk(bad, "crops", 0)
    usable, skipped = usable_stores([good, bad])
    assert usable == [good] and [p.array for p in skipped[0]] == ["crops"]
    assert skipped_summary(skipped, 2).startswith(
        f"skipped 1 of 2 cell store(s) that failed to read ({bad}: crops: chunk 0"
    )
    with pytest.raises(WsiCcrlError, match="all 1 cell store"):
        usable_stores([bad])
