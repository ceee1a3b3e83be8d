"""CPU inference engines: a torch network run by ONNX Runtime or OpenVINO instead of torch.

Why: on a CPU both run the nucleus U-Net and the CCRL encoder several times faster than torch
with the same outputs (``benchmarks/engines.py``, ``benchmarks/results/engines.md``). The ONNX
file is exported at run time from the torch weights and cached in the temp folder under the hash
of the weights, written atomically; only the U-Net's int8 model ships, as its calibration needs
the training images (``wsi_ccrl.nuclei.quantise``).

torch stays the path on CUDA and the fallback everywhere: an engine that is not installed, or
whose model fails to export or load, leaves the caller on torch after one log line.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wsi_ccrl.config import ENGINES
from wsi_ccrl.log import get_logger
from wsi_ccrl.runtime import atomic_write

__all__ = ["AUTO_CPU", "ENGINES", "Runner", "cpu_runner", "load_runner", "onnx_file"]

log = get_logger(__name__)

# what ``auto`` runs on a CPU, per network: the fastest with the same output in
# benchmarks/engines.py (the U-Net: ONNX Runtime int8; the encoder: OpenVINO, bf16 where the CPU
# has it)
AUTO_CPU = {"nucleus_unet": "onnxruntime", "ccrl_encoder": "openvino"}
OPSET = 17
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}

Runner = Callable[[np.ndarray], np.ndarray]
"""A loaded network: (B, C, H, W) float32 in, its first output as float32 out."""


def cache_dir() -> Path:
    """Where exported models are kept (``WSI_CCRL_ENGINE_CACHE`` or the temp folder)."""
    path = os.environ.get("WSI_CCRL_ENGINE_CACHE")
    return Path(path) if path else Path(tempfile.gettempdir()) / "wsi-ccrl-engines"


def weights_key(module: nn.Module) -> str:
    """A hash of the network's class, weights and buffers, and the exporter: the cache key."""
    digest = hashlib.sha256(f"{type(module).__name__}|{torch.__version__}|{OPSET}".encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def onnx_file(module: nn.Module, example: torch.Tensor, tag: str) -> Path:
    """The network as ONNX (batch, height and width dynamic), exported once per weights."""
    path = cache_dir() / f"{tag}-{weights_key(module)}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    axes = {0: "batch", 2: "height", 3: "width"}
    # a temporary name of this process's own: array jobs on one node may export the same model
    with (
        atomic_write(path, f".{os.getpid()}.onnx") as tmp,
        warnings.catch_warnings(),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(
            module,
            (example.to(next(module.parameters()).device),),
            str(tmp),
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, one self-contained file
            opset_version=OPSET,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": axes, "y": {0: "batch"} if _pooled(module) else axes},
        )
    return path


def _pooled(module: nn.Module) -> bool:
    """Networks with ``feature_dim`` (the encoder) output (B, D), not maps."""
    return hasattr(module, "feature_dim")


@functools.lru_cache(maxsize=4)
def load_runner(
    engine: str, path: str | Path, threads: int, precision: str | None = None
) -> Runner:
    """An ONNX file loaded in ``engine`` on the CPU with ``threads`` threads (kept loaded: a
    cohort's stores reuse it).

    ``precision``: OpenVINO's inference precision, by default its own choice (bf16 where the CPU
    computes it natively, else f32: both give ``segment`` and ``label`` torch's results,
    benchmarks/engines.py); ONNX Runtime runs what the file holds (fp32, or int8 QDQ). Raises
    what the engine raises.
    """
    if engine == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting between ops: the segment pipeline's other stages share these cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"x": np.ascontiguousarray(x, np.float32)})[0]
    if engine == "openvino":
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        return lambda x: np.array(request.infer([np.ascontiguousarray(x, np.float32)])[0])
    raise ValueError(f"engine must be onnxruntime or openvino, got {engine!r}")


def resolve_engine(engine: str, device: torch.device, tag: str = "") -> str:
    """The engine that runs: torch on CUDA, ``AUTO_CPU[tag]`` for ``auto`` on a CPU."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if device.type != "cpu":
        return "torch"
    return AUTO_CPU.get(tag, "onnxruntime") if engine == "auto" else engine


def cpu_runner(
    module: nn.Module,
    example: torch.Tensor,
    engine: str,
    device: torch.device,
    tag: str,
    int8: Path | None = None,
) -> Runner | None:
    """``module`` loaded in the chosen engine, or None where torch runs it (CUDA, ``torch``,
    or an engine that is missing or fails: one warning line says so). ONNX Runtime runs
    ``int8``, a quantised model of exactly these weights, where one is given."""
    name = resolve_engine(engine, torch.device(device), tag)
    if name == "torch":
        return None
    try:
        path = int8 if int8 is not None and name == "onnxruntime" else None
        path = path or onnx_file(module, example, tag)
        runner = load_runner(name, path, torch.get_num_threads())
        runner(example.detach().cpu().numpy())  # fails here, not in the middle of a slide
    except ImportError:
        log.warning("%s: %s is not installed; running on torch", tag, _PACKAGES[name])
        return None
    except Exception as exc:  # an exporter or engine error of any kind: torch still works
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("%s: %s could not load the model (%s); running on torch", tag, name, text)
        return None
    log.debug("%s runs on %s (%s)", tag, name, Path(path).name)
    return runner
