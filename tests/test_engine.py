"""CPU engines: the same outputs as torch on real inputs; torch whenever an engine cannot run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_ccrl import engine
from wsi_ccrl.ccrl.backbone import PreActResNet18
from wsi_ccrl.ccrl.embed import embed_crops
from wsi_ccrl.engine import AUTO_CPU, cpu_runner, onnx_file, resolve_engine
from wsi_ccrl.nuclei.data import load_source
from wsi_ccrl.segment.embedded import load_nucleus_net

ROOT = Path(__file__).resolve().parents[1]
CONSEP = ROOT / "tests" / "fixtures" / "consep" / "Train"
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WSI_CCRL_ENGINE_CACHE", str(tmp_path / "engines"))
    engine.load_runner.cache_clear()


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    """Two real CoNSeP patches, (2, 3, 256, 256) float in [0, 1]."""
    images = load_source(CONSEP, "consep", names={"tile10"})[:2]
    return np.stack([im.image for im in images]).transpose(0, 3, 1, 2).astype(np.float32) / 255


def _installed(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


ENGINES = [e for e in ("onnxruntime", "openvino") if _installed(e) and _installed("onnx")]
# OpenVINO computes in bf16 where the CPU has it (its default, and the benchmark's same output)
UNET_ATOL = {"onnxruntime": 2e-3, "openvino": 0.05}
ENCODER_ATOL = {"onnxruntime": 1e-3, "openvino": 1e-2}


@pytest.mark.parametrize("name", ENGINES)
def test_unet_maps_match_torch_on_real_patches(name, patches):
    net, _ = load_nucleus_net()
    runner = cpu_runner(net, torch.zeros(1, 3, 64, 64), name, CPU, "unet")
    assert runner is not None
    with torch.inference_mode():
        expected = net(torch.from_numpy(patches)).numpy()
    got = runner(patches)
    assert got.shape == expected.shape == (2, 3, 256, 256)
    sigmoid = lambda y: 1 / (1 + np.exp(-y[:, :1]))  # noqa: E731 - the segmenter's probability
    np.testing.assert_allclose(sigmoid(got), sigmoid(expected), atol=UNET_ATOL[name])
    np.testing.assert_allclose(got[:, 1:], expected[:, 1:], atol=UNET_ATOL[name])
    # another size through the same model: height and width are dynamic
    assert runner(patches[:1, :, :128, :192]).shape == (1, 3, 128, 192)


@pytest.mark.parametrize("name", ENGINES)
def test_encoder_features_match_torch_on_real_crops(name, patches):
    torch.manual_seed(0)
    backbone = PreActResNet18("imagenet").eval()
    crops = (patches[:, :, :128, :128].transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    crops = crops.reshape(2, 4, 32, 4, 32, 3).transpose(0, 1, 3, 2, 4, 5).reshape(32, 32, 32, 3)
    runner = cpu_runner(backbone, torch.zeros(1, 3, 32, 32), name, CPU, "encoder")
    assert runner is not None
    expected = embed_crops(backbone, crops, batch_size=12)
    got = embed_crops(backbone, crops, batch_size=12, runner=runner)
    assert got.shape == expected.shape == (32, 512)
    np.testing.assert_allclose(got, expected, atol=ENCODER_ATOL[name])


def test_export_is_cached_by_the_weights(tmp_path):
    if not _installed("onnx"):
        pytest.skip("onnx is not installed")
    net, _ = load_nucleus_net()
    first = onnx_file(net, torch.zeros(1, 3, 64, 64), "unet")
    stamp = first.stat().st_mtime_ns
    assert onnx_file(net, torch.zeros(1, 3, 64, 64), "unet") == first
    assert first.stat().st_mtime_ns == stamp  # not exported again
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left
    with torch.no_grad():
        net.head.bias.add_(1.0)
    assert onnx_file(net, torch.zeros(1, 3, 64, 64), "unet") != first


def test_a_missing_engine_falls_back_to_torch_in_one_line(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    net, _ = load_nucleus_net()
    with caplog.at_level(logging.WARNING, logger="wsi_ccrl"):
        assert cpu_runner(net, torch.zeros(1, 3, 64, 64), "onnxruntime", CPU, "unet") is None
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "onnxruntime is not installed" in lines[0]
    assert "\n" not in lines[0]


@pytest.mark.parametrize("name", ENGINES)
def test_a_model_that_fails_to_load_falls_back_to_torch_in_one_line(name, caplog):
    net, _ = load_nucleus_net()
    example = torch.zeros(1, 3, 64, 64)
    cached = engine.cache_dir() / f"unet-{engine.weights_key(net)}.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not an onnx model")
    with caplog.at_level(logging.WARNING, logger="wsi_ccrl"):
        assert cpu_runner(net, example, name, CPU, "unet") is None
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "could not load the model" in lines[0] and "torch" in lines[0]
    assert "\n" not in lines[0]


def test_torch_runs_on_cuda_and_when_chosen():
    assert resolve_engine("auto", CPU, "nucleus_unet") == AUTO_CPU["nucleus_unet"]
    assert resolve_engine("auto", CPU, "ccrl_encoder") == AUTO_CPU["ccrl_encoder"]
    assert resolve_engine("openvino", CPU, "nucleus_unet") == "openvino"
    assert resolve_engine("openvino", torch.device("cuda")) == "torch"
    assert resolve_engine("auto", torch.device("cuda")) == "torch"
    net, _ = load_nucleus_net()
    assert cpu_runner(net, torch.zeros(1, 3, 64, 64), "torch", CPU, "unet") is None
    with pytest.raises(ValueError, match="engine must be one of"):
        resolve_engine("tensorrt", CPU)
