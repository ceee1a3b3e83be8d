"""One device resolver: what every command accepts and the errors a user sees."""

from __future__ import annotations

import pytest
import torch

from wsi_ccrl.config import load_section
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.runtime import resolve_device


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
