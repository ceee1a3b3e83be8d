"""The int8 U-Net: shipped beside the weights it was made from; the output layer stays fp32."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_ccrl.engine import load_runner, onnx_file
from wsi_ccrl.io.stain import CONSEP_REFERENCE
from wsi_ccrl.nuclei.data import load_source
from wsi_ccrl.nuclei.net import NucleusUNet
from wsi_ccrl.nuclei.quantise import calibration_inputs, quantise_onnx, shipped_int8

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "wsi_ccrl" / "weights"
CONSEP = ROOT / "tests" / "fixtures" / "consep" / "Train"


def test_the_shipped_int8_model_is_named_by_its_weights():
    shipped = shipped_int8(WEIGHTS / "nucleus_unet.pt")
    sha = hashlib.sha256((WEIGHTS / "nucleus_unet.pt").read_bytes()).hexdigest()[:16]
    assert shipped is not None and shipped.name == f"nucleus_unet-{sha}.int8.onnx"
    assert shipped.stat().st_size < 1_000_000
    assert shipped_int8(WEIGHTS / "nucleus_unet_v2.pt") is None  # none made from these


def test_quantised_on_real_patches_the_output_layer_stays_fp32(tmp_path, monkeypatch):
    monkeypatch.setenv("WSI_CCRL_ENGINE_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = NucleusUNet((8, 16), stem_stride=2).eval()
    images = load_source(CONSEP, "consep", names={"tile3"})
    inputs = calibration_inputs(net, images, CONSEP_REFERENCE, side=128)
    assert len(inputs) == 4 and inputs[0].shape == (1, 3, 128, 128)
    fp32 = onnx_file(net, torch.zeros(1, 3, 16, 16), "unet")
    out = quantise_onnx(fp32, inputs, tmp_path / "unet.int8.onnx")
    nodes = list(onnx.load(str(out)).graph.node)
    assert any(n.op_type == "QuantizeLinear" for n in nodes)
    last_conv = max(i for i, n in enumerate(nodes) if n.op_type == "Conv")
    assert all(n.op_type not in ("QuantizeLinear", "DequantizeLinear") for n in nodes[last_conv:])
    conv = nodes[last_conv]  # its weights are fp32 initialisers, not dequantised ones
    weights = {t.name for t in onnx.load(str(out)).graph.initializer}
    assert conv.input[1] in weights
    x = np.concatenate(inputs)
    with torch.inference_mode():
        expected = net(torch.from_numpy(x)).numpy()
    got = load_runner("onnxruntime", out, 1)(x)
    assert np.abs(got - expected).mean() < 0.05 * np.abs(expected).mean()
    assert not list(tmp_path.glob("*.pre.onnx"))  # the quantiser's intermediate is gone
