"""The ``embedded`` segmenter: the small nucleus U-Net whose weights ship inside the package.

Works offline and on a CPU: no download, no TIAToolbox. Trained on CoNSeP at 0.25 µm/px (see
``wsi_ccrl/weights/README.md``), so tiles are read at that resolution, and Reinhard-normalised
to the training tiles' colour statistics (other labs' stains, see ``wsi_ccrl.io.stain``). The
network is fully convolutional: tiles of any size are reflect-padded to a multiple of its stride,
run in batches of equal shape (bounded in pixels, to bound memory), cropped back, and
post-processed one by one.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.engine import Runner, cpu_runner
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.io.stain import (
    CONSEP_REFERENCE,
    ColourTable,
    StainReference,
    reinhard_normalize,
    slide_statistics,
)
from wsi_ccrl.log import get_logger
from wsi_ccrl.nuclei.net import NucleusUNet, build_net
from wsi_ccrl.nuclei.postprocess import PostprocessConfig, instance_probs, maps_to_instances
from wsi_ccrl.nuclei.quantise import shipped_int8
from wsi_ccrl.runtime import read_torch_file, resolve_device
from wsi_ccrl.segment import register
from wsi_ccrl.segment.base import Nuclei, Segmenter, nuclei_from_labels
from wsi_ccrl.segment.stages import STAGES

__all__ = ["DEFAULT_WEIGHTS", "EmbeddedSegmenter", "load_nucleus_net"]

log = get_logger(__name__)

RESOLVE_THREADS = 2  # tiles post-processed at once
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "nucleus_unet.pt"


def load_nucleus_net(path: str | Path = DEFAULT_WEIGHTS) -> tuple[NucleusUNet, dict[str, Any]]:
    """(network in eval mode, its config dict) from a ``{"state_dict", "config"}`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"embedded segmenter weights not found: {path}")
    try:  # one line for a corrupt file or a pickle with code, not torch's paragraphs
        blob = read_torch_file(
            path, "weights file of the embedded segmenter", "expected its state_dict and config"
        )
    except WsiCcrlError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(blob, dict) or "state_dict" not in blob or "config" not in blob:
        raise ConfigError(f"{path} is not an embedded nucleus model (no state_dict/config)")
    net = build_net(blob["config"])
    try:
        net.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not fit the network they describe: {exc}") from exc
    return net.eval(), dict(blob["config"])


class EmbeddedSegmenter(Segmenter):
    """Nucleus U-Net (foreground + HV maps) followed by HoVer-Net's marker watershed.

    Args:
        weights: weights file; default: the one shipped in ``wsi_ccrl/weights``.
        device: ``auto`` | ``cpu`` | ``cuda``.
        postprocess: watershed thresholds; default: those stored with the weights.
        max_pixels: pixels per forward pass (batch x H x W), which bounds memory (~300 B/px);
            two 1024² tiles: as fast per pixel as four, and the maps are the same bytes.
        stain_normalize: Reinhard-normalise tiles to the training data's LAB statistics (the
            weights file's ``stain_reference``; CoNSeP's for files that record none), from the
            slide's statistics once ``fit_slide`` has seen it, else from each tile's own.
        engine: the CPU inference engine (``wsi_ccrl.engine``): auto | torch | onnxruntime |
            openvino; torch on CUDA.
    """

    name = "embedded"

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = SegmentConfig.device,
        postprocess: PostprocessConfig | None = None,
        max_pixels: int = 1 << 21,
        stain_normalize: bool = True,
        engine: str = SegmentConfig.engine,
    ) -> None:
        self.weights = Path(weights) if weights else DEFAULT_WEIGHTS
        net, self.config = load_nucleus_net(self.weights)
        self.device = resolve_device(device)
        self.net = net.to(self.device)
        example = torch.zeros(1, 3, 2 * net.stride, 2 * net.stride)
        int8 = shipped_int8(self.weights)  # calibrated where the training images are
        self.engine: Runner | None = cpu_runner(
            net, example, engine, self.device, "nucleus_unet", int8
        )
        self.mpp = float(self.config.get("mpp", 0.25))
        self.post = postprocess or PostprocessConfig(**self.config.get("postprocess", {}))
        self.max_pixels = int(max_pixels)
        self.stain: StainReference | None = None
        self.slide_stain: StainReference | None = None
        self._table: tuple[StainReference, ColourTable] | None = None
        self._pixels = 0  # normalised with the slide's statistics, before the table pays
        if stain_normalize:
            ref = self.config.get("stain_reference")
            try:
                self.stain = StainReference.from_dict(ref) if ref else CONSEP_REFERENCE
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{self.weights}: bad stain_reference: {exc}") from exc

    @torch.inference_mode()
    def predict(self, tiles: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Network maps per tile: (foreground prob (H, W), hv (2, H, W)), float32."""
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(tiles)
        shapes: dict[tuple[int, int], list[int]] = {}
        for i, tile in enumerate(tiles):
            if tile.ndim != 3 or tile.shape[2] != 3 or tile.dtype != np.uint8:
                raise ValueError(f"tile {i}: expected (H, W, 3) uint8 RGB, got {tile.shape}")
            shapes.setdefault(tile.shape[:2], []).append(i)
        s = self.net.stride
        amp = self.device.type == "cuda"
        for (h, w), idx in shapes.items():
            ph, pw = -h % s, -w % s
            per_pass = max(1, self.max_pixels // ((h + ph) * (w + pw)))
            for start in range(0, len(idx), per_pass):
                chunk = idx[start : start + per_pass]
                batch = [tiles[i] for i in chunk]
                if self.stain is not None:
                    with STAGES("segment: normalise"):
                        batch = [self.normalise(t) for t in batch]
                with STAGES("segment: network"):
                    x = torch.from_numpy(np.stack(batch)).to(self.device)
                    # (B, 3, H, W) viewing NHWC memory: oneDNN's channels-last path, ~1.5x
                    # NCHW's speed on a CPU
                    x = x.permute(0, 3, 1, 2).float().div_(255.0)
                    if ph or pw:
                        mode = "reflect" if ph < h and pw < w else "replicate"
                        x = F.pad(x, (0, pw, 0, ph), mode=mode)
                    if self.engine is not None:  # ONNX Runtime / OpenVINO on a CPU
                        y = torch.from_numpy(self.engine(x.numpy()))
                    else:
                        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                            y = self.net(x)
                    y = y[:, :, :h, :w].float()
                    prob = torch.sigmoid(y[:, 0]).cpu().numpy()
                    hv = y[:, 1:].cpu().numpy()
                for j, i in enumerate(chunk):
                    out[i] = (prob[j], hv[j])
        return out  # type: ignore[return-value]

    def normalise(self, tile: np.ndarray) -> np.ndarray:
        """The tile Reinhard-normalised; through a per-slide colour table once the slide has had
        more pixels than there are colours (the same bytes, a fifth of the cost)."""
        source = self.slide_stain
        if source is None:
            return reinhard_normalize(tile, self.stain, None)
        if self._table is None or self._table[0] is not source:
            self._pixels += tile.shape[0] * tile.shape[1]
            if self._pixels < 1 << 24:
                return reinhard_normalize(tile, self.stain, source)
            self._table = (source, ColourTable(self.stain, source))
        return self._table[1](tile)

    def fit_slide(self, samples: list[np.ndarray]) -> None:
        """Normalise this slide's tiles with the pooled statistics of ``samples`` (its tissue)."""
        self.slide_stain = slide_statistics(samples) if self.stain is not None else None
        self._table, self._pixels = None, 0
        if self.stain is not None:
            log.info(
                "stain statistics of the slide (LAB mean, std): %s",
                self.slide_stain.to_dict() if self.slide_stain else "too little tissue; per tile",
            )

    def label(self, tile_maps: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(instance labels (H, W) int32, per-label probability) of one tile's maps."""
        prob, hv = tile_maps
        with STAGES("segment: post-processing"):
            labels = maps_to_instances(prob, hv, self.post)
            return labels, instance_probs(labels, prob)

    def segment(self, tiles: list[np.ndarray]) -> list[Nuclei]:
        return self.resolve(tiles, self.infer(tiles))

    def infer(self, tiles: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return self.predict(tiles)

    def resolve(
        self, tiles: list[np.ndarray], inferred: list[tuple[np.ndarray, np.ndarray]]
    ) -> list[Nuclei]:
        def one(maps: tuple[np.ndarray, np.ndarray]) -> Nuclei:
            labels, probs = self.label(maps)
            with STAGES("segment: contours"):
                return nuclei_from_labels(labels, probs=probs)

        if len(inferred) < 2:
            return [one(maps) for maps in inferred]
        # tiles on two threads (numpy / scipy / OpenCV free the GIL), so a network faster than
        # the post-processing is not kept waiting (BENCHMARKS.md: whole-slide profile)
        with ThreadPoolExecutor(RESOLVE_THREADS, thread_name_prefix="segment-resolve") as pool:
            return list(pool.map(one, inferred))

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.weights.read_bytes()).hexdigest()[:16]
        return {
            "name": self.name,
            "mpp": self.mpp,
            "model": "nucleus_unet",
            "weights": str(self.weights),
            "weights_sha256": digest,
            "channels": list(self.config.get("channels", [])),
            "postprocess": {k: getattr(self.post, k) for k in self.post.__dataclass_fields__},
            "stain_reference": self.stain.to_dict() if self.stain else None,
            "slide_stain": self.slide_stain.to_dict() if self.slide_stain else None,
        }


@register("embedded")
def _build(cfg: SegmentConfig) -> EmbeddedSegmenter:
    # with segmenter "auto", --weights means HoVer-Net's; only an explicit choice uses them here
    weights = cfg.weights if cfg.segmenter == "embedded" else None
    seg = EmbeddedSegmenter(weights=weights, device=cfg.device, engine=cfg.engine)
    if abs(cfg.target_mpp - seg.mpp) > 1e-6:
        log.warning(
            "embedded segmenter works at %.3f µm/px (its training resolution), not target_mpp %.3f",
            seg.mpp,
            cfg.target_mpp,
        )
    return seg
