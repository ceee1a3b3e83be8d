"""The nucleus U-Net in int8 for ONNX Runtime, calibrated on its training images.

Why a shipped file (``weights/nucleus_unet-<sha>.int8.onnx``, 0.5 MB) rather than a run-time
step like the fp32 export: static int8 needs calibration on training images, which an install
does not have. Its name carries the hash of the weights it was made from, so it is used only
beside those weights. Rebuild it where the training data is (``../shared/data``)::

    python -m wsi_ccrl.nuclei.quantise --data ../shared/data

Static QDQ quantisation, per-channel weights, min-max activation ranges; the output layer (the
last convolution and what follows it) stays fp32, which keeps the maps' fine values:
``benchmarks/engines.py`` holds the result to torch's F1 and PQ on the held-back images.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from wsi_ccrl.engine import onnx_file
from wsi_ccrl.io.stain import CONSEP_REFERENCE, StainReference, reinhard_normalize, slide_statistics
from wsi_ccrl.nuclei.data import LabelledImage, load_source, split
from wsi_ccrl.nuclei.net import NucleusUNet, build_net
from wsi_ccrl.runtime import atomic_write, read_torch_file

__all__ = ["calibration_inputs", "int8_path", "quantise_onnx", "shipped_int8"]

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "nucleus_unet.pt"
FOLDERS = {"consep": "consep-patches/Train", "monuseg": "monuseg-train", "cpm15": "cpm15"}


def int8_path(weights: str | Path) -> Path:
    """Where the int8 model of ``weights`` lives: beside it, named by the weights' hash."""
    weights = Path(weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    return weights.with_name(f"{weights.stem}-{sha}.int8.onnx")


def shipped_int8(weights: str | Path) -> Path | None:
    """The int8 model made from exactly these weights, if there is one."""
    path = int8_path(weights)
    return path if path.is_file() else None


def calibration_inputs(
    net: NucleusUNet, images: list[LabelledImage], reference: StainReference, side: int = 512
) -> list[np.ndarray]:
    """What the U-Net is fed for ``images``: Reinhard-normalised with each slide's statistics
    (as ``segment`` does), at most ``side`` square, (1, 3, H, W) float in [0, 1]."""
    groups: dict[str, list[LabelledImage]] = {}
    for im in images:
        groups.setdefault(im.group, []).append(im)
    out = []
    s = net.stride
    for group in groups.values():
        source = slide_statistics([im.image for im in group])
        for im in group:
            h, w = (min(n, side) // s * s for n in im.image.shape[:2])
            tile = reinhard_normalize(np.ascontiguousarray(im.image[:h, :w]), reference, source)
            out.append(tile.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    return out


def quantise_onnx(fp32: Path, inputs: list[np.ndarray], out: Path) -> Path:
    """Static int8 (QDQ, per-channel) of an ONNX file, calibrated on ``inputs``; the last
    convolution and every node after it stay fp32."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(inputs)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"x": np.ascontiguousarray(x, np.float32)}

    nodes = list(onnx.load(str(fp32)).graph.node)
    last_conv = max(i for i, n in enumerate(nodes) if n.op_type == "Conv")
    keep = [n.name for n in nodes[last_conv:]]
    pre = out.with_name(out.name + ".pre.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser's notes per tensor
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        with atomic_write(out, ".onnx") as tmp:
            quantize_static(
                str(pre),
                str(tmp),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep,
            )
    finally:
        root.setLevel(level)
        pre.unlink(missing_ok=True)
    return out


def training_images(data: Path, per_source: int = 8) -> list[LabelledImage]:
    """Up to ``per_source`` training images of each source, spread over it (never held back)."""
    images = []
    for source, folder in FOLDERS.items():
        if (data / folder).is_dir():
            train, _ = split(load_source(data / folder, source))
            images += train[:: max(1, len(train) // per_source)][:per_source]
    return images


def build(weights: Path, data: Path, out: Path | None = None) -> Path:
    """The int8 model of ``weights``, calibrated on training images of ``data``."""
    blob = read_torch_file(weights, "nucleus weights", "expected its state_dict and config")
    net = build_net(blob["config"])
    net.load_state_dict(blob["state_dict"])
    net.eval()
    ref = blob["config"].get("stain_reference")
    reference = StainReference.from_dict(ref) if ref else CONSEP_REFERENCE
    images = training_images(data)
    if not images:
        raise SystemExit(f"no training images under {data}")
    inputs = calibration_inputs(net, images, reference)
    fp32 = onnx_file(net, torch.zeros(1, 3, 2 * net.stride, 2 * net.stride), "nucleus_unet")
    return quantise_onnx(fp32, inputs, out or int8_path(weights))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--data", type=Path, required=True, help="folder of the three sources")
    parser.add_argument("--out", type=Path, help="default: beside the weights, by their hash")
    args = parser.parse_args()
    print(build(args.weights, args.data, args.out))


if __name__ == "__main__":
    main()
