"""Many slides: list files and folders expanded, shards, and a run that goes on past failures."""

from pathlib import Path

import pytest
from conftest import SAMPLE_SLIDE

from wsi_ccrl.config import load_section
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.segment.cohort import expand_slide_inputs, parse_shard, segment_slides, select_shard

SMALL = {"segmenter": "watershed", "tile_size": 160, "tile_overlap": 32, "chunk_cells": 16}


def test_many_slides_continue_past_failures(no_mpp_slide, tmp_path):
    listing = tmp_path / "slides.txt"
    corrupt = tmp_path / "corrupt.svs"
    corrupt.write_bytes(b"\x00" * 1000)
    listing.write_text(f"# cohort\n{SAMPLE_SLIDE}\nmissing.svs\n\n{corrupt}\n{no_mpp_slide}\n")
    report = segment_slides(
        [listing],
        tmp_path / "out",
        load_section("segment", None, {**SMALL, "roi": (1100, 1500, 120, 120)}),
    )
    assert [p.name for p in report.done] == ["CMU-1-Small-Region.zarr"]
    reasons = dict(report.failed)
    assert set(reasons) == {str(tmp_path / "missing.svs"), str(corrupt), str(no_mpp_slide)}
    assert "not found" in reasons[str(tmp_path / "missing.svs")]
    assert "cannot read slide" in reasons[str(corrupt)]
    assert "--mpp" in reasons[str(no_mpp_slide)]
    assert not report.ok


def test_shards_split_a_list_once():
    items = list(range(10))
    parts = [select_shard(items, parse_shard(f"{i}/3")) for i in range(3)]
    assert parts[0] == [0, 3, 6, 9] and sorted(sum(parts, [])) == items
    assert select_shard(items, None) == items
    for bad in ("3/3", "1-3", "x/2", "0/0"):
        with pytest.raises(WsiCcrlError, match="--shard"):
            parse_shard(bad)


def test_slide_lists_expand_relative_to_the_list(tmp_path):
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "cohort.txt"
    listing.write_text("a.svs  # first\n/abs/b.tif\n")
    assert expand_slide_inputs([listing, "c.svs"]) == [
        tmp_path / "lists" / "a.svs",
        Path("/abs/b.tif"),
        Path("c.svs"),
    ]
