"""One device resolver: what every command accepts and the errors a user sees."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from wsi_ccrl.config import load_section
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.runtime import (
    atomic_save_torch,
    atomic_write,
    atomic_write_text,
    release_freed_heap,
    resolve_device,
)


def test_auto_and_cpu_resolve_to_torch_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "mps"])
def test_unknown_devices_are_one_line_errors(bad):
    with pytest.raises(WsiCcrlError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_says_what_to_do():
    for device in ("cuda", "cuda:1"):
        with pytest.raises(WsiCcrlError, match="no CUDA GPU is visible"):
            resolve_device(device)


@pytest.mark.parametrize("section", ["segment", "train", "label", "benchmark"])
def test_every_section_accepts_the_same_device_names(section):
    for ok in ("auto", "cpu", "cuda", "cuda:1"):
        assert load_section(section, None, {"device": ok}).device == ok
    with pytest.raises(ConfigError, match=f"{section}.device"):
        load_section(section, None, {"device": "cuda:one"})


def test_atomic_write_replaces_on_success(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with atomic_write(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_text("new")
        assert path.read_text() == "old"  # nothing visible until the rename
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_text_and_torch_wrappers(tmp_path):
    assert atomic_write_text(tmp_path / "a.txt", "hello").read_text() == "hello"
    saved = atomic_save_torch({"w": torch.arange(3)}, tmp_path / "m.pt")
    assert torch.equal(torch.load(saved, weights_only=True)["w"], torch.arange(3))
    with pytest.raises(TypeError), atomic_write(tmp_path / "a.txt") as tmp:
        tmp.write_text(object())  # a writer that fails before anything is renamed
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "m.pt"]


def test_gpus_follow_one_rule_for_every_command():
    """``resolve_gpus``: none on the CPU; listed ids are checked against what is visible."""
    import torch

    from wsi_ccrl.runtime import resolve_gpus

    assert resolve_gpus(torch.device("cpu"), (0, 1)) == []
    visible = torch.cuda.device_count()
    with pytest.raises(WsiCcrlError, match=f"--gpus {visible} does not exist"):
        resolve_gpus(torch.device("cuda"), (visible,))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_freed_heap_hands_freed_memory_back():
    import psutil

    rss = psutil.Process().memory_info
    blocks = [np.ones(100_000 // 8) for _ in range(2_000)]  # 200 MB of heap, not mmap
    keep = blocks[-1]  # holds the heap's top, so free() alone cannot shrink it
    del blocks
    held = rss().rss
    release_freed_heap()
    assert held - rss().rss > 100 * 2**20
    assert keep.sum() == keep.size
