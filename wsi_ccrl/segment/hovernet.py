"""HoVer-Net (Graham et al. 2019) through TIAToolbox's 2.x engine, on tiles already in memory.

One file of ~330 lines on purpose: one adapter to TIAToolbox's engine (weights check, padding, run,
conversion of its output).

Each tile is padded (reflected) by the model's context margin (input minus output size, halved: 46
px for the "fast" models, 95 px for "original") before, and up to a size HoVer-Net accepts after,
and run in TIAToolbox's patch mode with the patch shape set to the padded tile: HoVer-Net's output
then starts at the tile's first pixel, so its instance dict is in the tile's pixel frame (at the
model's 0.25 µm/px) and nuclei centred past the tile's end are dropped. The pipeline then applies the same core ownership and
level-0 mapping as for every other segmenter. The dict output is used (never the SQLite store,
which needs ``enable_load_extension``); TIAToolbox's own progress output is hidden, its warnings
and errors are logged.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ccrl.config import SegmentConfig, settings_for
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.io.contours import polygon_area_centroid, polygon_edges
from wsi_ccrl.log import get_logger
from wsi_ccrl.runtime import read_torch_file, resolve_device
from wsi_ccrl.segment import register
from wsi_ccrl.segment.base import Nuclei, Segmenter

log = get_logger(__name__)


def _hovernet_models() -> dict[str, dict]:
    from tiatoolbox import rcParam

    info = rcParam["pretrained_model_info"]
    return {
        name: v
        for name, v in info.items()
        if v.get("architecture", {}).get("class") == "hovernet.HoVerNet"
    }


def _fetch_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a failed weight download can raise (network, hub, file system)."""
    errors: list[type[BaseException]] = [OSError, RuntimeError]
    with contextlib.suppress(ImportError):
        import requests

        errors.append(requests.RequestException)
    with contextlib.suppress(ImportError):
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        errors += [HfHubHTTPError, LocalEntryNotFoundError]
    return tuple(errors)


def _check_state_dict(path: Path, model: str) -> None:
    """``--weights`` must be a state dict (tensors by name): TIAToolbox would otherwise fail deep in
    its engine with torch's unpickling paragraphs."""
    import torch

    if not path.is_file():
        raise WsiCcrlError(f"--weights {path}: file not found")
    what = f"HoVer-Net state dict for {model}"
    state = read_torch_file(path, what, "expected a .pth of TIAToolbox's HoVer-Net weights")
    if not isinstance(state, dict) or not state:
        raise WsiCcrlError(f"{path} is not a {what} (expected tensors by layer name)")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WsiCcrlError(f"{path} is not a {what} (expected tensors by layer name)")


class HoVerNetSegmenter(Segmenter):
    """HoVer-Net instance segmentation and typing via ``tiatoolbox.models.MultiTaskSegmentor``.

    Args:
        model: TIAToolbox pretrained name (``hovernet_fast-pannuke``, ``hovernet_original-consep``,
            ``hovernet_fast-monusac``, ...): the architecture and its IO config.
        weights: local state-dict file; when None, TIAToolbox's cached/downloaded weights are used.
        device: ``auto`` | ``cpu`` | ``cuda``.
        batch_size: tiles per engine call.
        offline: never try a download (``HF_HUB_OFFLINE=1`` while the weights are loaded).
    """

    name = "hovernet"

    def __init__(
        self,
        model: str = SegmentConfig.model,
        weights: str | Path | None = SegmentConfig.weights,
        device: str = SegmentConfig.device,
        batch_size: int = SegmentConfig.batch_size,
        offline: bool = SegmentConfig.offline,
    ):
        models = _hovernet_models()
        if model not in models:
            raise ConfigError(
                f"--model {model!r} is not a TIAToolbox HoVer-Net model "
                f"(choose from {', '.join(sorted(models))})"
            )
        if weights is not None:
            _check_state_dict(Path(weights), model)
        self.model_name = model
        self.weights = str(weights) if weights is not None else None
        self.device = str(resolve_device(device))  # TIAToolbox takes "cpu" / "cuda:N"
        self.batch_size = batch_size
        with _hub_offline(offline):
            self.engine = self._load_engine()
        ioc = self.engine.ioconfig
        res = ioc.input_resolutions[0]
        if res.get("units") != "mpp":
            raise ConfigError(f"{model}: input resolution is not in mpp ({res})")
        self.mpp = float(res["resolution"])
        self.margin = (int(ioc.patch_input_shape[0]) - int(ioc.patch_output_shape[0])) // 2
        info = models[model]["architecture"]["kwargs"]
        self.type_names = {int(k): str(v) for k, v in (info.get("nuc_type_dict") or {}).items()}

    def _load_engine(self):
        from tiatoolbox.models.engine.multi_task_segmentor import MultiTaskSegmentor

        source = self.weights or f"TIAToolbox's pretrained {self.model_name} weights"
        try:
            with _quiet():
                return MultiTaskSegmentor(
                    model=self.model_name,
                    weights=self.weights,
                    batch_size=self.batch_size,
                    device=self.device,
                    verbose=False,
                )
        except _fetch_errors() as exc:
            if self.weights is not None:
                raise WsiCcrlError(
                    f"cannot load HoVer-Net weights {self.weights} into {self.model_name}: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                ) from None
            raise WsiCcrlError(
                f"cannot get {source} (offline or download failed: {type(exc).__name__}); "
                "pass a local state dict with --weights PATH, or use --segmenter watershed "
                "(or --segmenter embedded)"
            ) from None

    def segment(self, tiles: list[np.ndarray]) -> list[Nuclei]:
        if not tiles:
            return []
        out: list[Nuclei | None] = [None] * len(tiles)
        # the engine needs one patch shape per call: group tiles by shape
        shapes: dict[tuple[int, ...], list[int]] = {}
        for i, t in enumerate(tiles):
            shapes.setdefault(t.shape, []).append(i)
        for shape, idx in shapes.items():
            pads = [self.padding(n) for n in shape[:2]]
            batch = np.stack([np.pad(tiles[i], (*pads, (0, 0)), mode="reflect") for i in idx])
            result = self.run_engine(batch)
            for k, i in enumerate(idx):
                out[i] = nuclei_from_tiatoolbox(result, k, tile_shape=shape[:2])
        return out  # type: ignore[return-value]

    def padding(self, size: int) -> tuple[int, int]:
        """(before, after) padding of a tile side: the model's margin before, and after enough
        for the margin and for HoVer-Net's valid sizes (patch input + a multiple of 8)."""
        base = int(self.engine.ioconfig.patch_input_shape[0])
        need = size + 2 * self.margin
        total = base + int(np.ceil((need - base) / 8)) * 8
        return self.margin, total - size - self.margin

    def run_engine(self, batch: np.ndarray) -> dict[str, Any]:
        """TIAToolbox's dict output for (N, H+2m, W+2m, 3) uint8 padded tiles."""
        h, w = batch.shape[1:3]
        with _quiet():
            return self.engine.run(
                batch,
                patch_mode=True,
                patch_input_shape=(h, w),
                output_type="dict",
                device=self.device,
                batch_size=self.batch_size,
            )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mpp": self.mpp,
            "model": self.model_name,
            "weights": self.weights or f"tiatoolbox:{self.model_name}",
            "types": {str(k): v for k, v in self.type_names.items()},
            "engine": "tiatoolbox.MultiTaskSegmentor (patch mode, dict output)",
        }


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """No download from the Hugging Face hub inside the block when ``offline``: the environment
    variable and huggingface_hub's constant (read at its import) are set, then restored."""
    if not offline:
        yield
        return
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub = None
    with contextlib.suppress(ImportError):
        import huggingface_hub.constants as hub
    hub_before = getattr(hub, "HF_HUB_OFFLINE", None)
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before
        if hub is not None:
            hub.HF_HUB_OFFLINE = hub_before


_TIATOOLBOX_PROBLEM = ("[WARNING]", "[ERROR]", "[CRITICAL]", "Traceback", "Error")


@contextlib.contextmanager
def _quiet():
    """Hide what TIAToolbox prints while it works (progress bars, info lines, even with
    verbose=False). Its warning and error lines are logged; if the call fails, everything it
    printed is logged with the error, so nothing that explains a failure is lost."""
    printed = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stderr(printed),
            contextlib.redirect_stdout(printed),
        ):
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        if printed.getvalue().strip():
            log.warning("TIAToolbox printed before failing:\n%s", printed.getvalue()[-4000:])
        raise
    for line in printed.getvalue().splitlines():
        if any(mark in line for mark in _TIATOOLBOX_PROBLEM):
            log.warning("TIAToolbox: %s", line.strip())


def nuclei_from_tiatoolbox(
    output: dict[str, Any],
    index: int,
    tile_shape: tuple[int, int] | None = None,
    offset: tuple[float, float] = (0.0, 0.0),
) -> Nuclei:
    """``Nuclei`` of image ``index`` from TIAToolbox's HoVer-Net dict output.

    The dict holds, per image, ``box`` (n, 4) x0, y0, x1, y1; ``centroid`` (n, 2) x, y;
    ``contours`` (n, L, 2) x, y padded with the dtype's minimum (or equal-length rows); ``prob``
    (n,); ``type`` (n,). All are in the model's output frame; ``offset`` (x, y) is subtracted to
    move them into the tile frame (0 when the input was padded by exactly the model's margin).

    Area is the pixel count of the polygon (Pick's theorem on the lattice contour), vectorised.
    """
    box = np.asarray(_item(output["box"], index), dtype=np.float64)
    if box.size == 0:
        return Nuclei.empty()
    n = box.shape[0]
    off = np.asarray(offset, np.float64)
    centroid = np.asarray(_item(output["centroid"], index), np.float64).reshape(n, 2) - off
    box = box.reshape(n, 4) - np.tile(off, 2)
    contours = np.asarray(_item(output["contours"], index))
    if contours.dtype == object:  # ragged list of (k, 2)
        lengths = np.array([len(c) for c in contours], np.int64)
        flat = np.concatenate([np.asarray(c, np.float64).reshape(-1, 2) for c in contours])
    else:
        contours = contours.reshape(n, -1, 2)
        pad = np.iinfo(contours.dtype).min if contours.dtype.kind == "i" else np.nan
        valid = ~np.any(contours == pad, axis=2) if contours.dtype.kind == "i" else None
        if valid is None:
            valid = ~np.isnan(contours).any(axis=2)
        lengths = valid.sum(axis=1).astype(np.int64)
        flat = contours[valid].astype(np.float64)
    flat = flat - off
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    area = _lattice_polygon_pixels(flat, offsets)
    prob = np.asarray(_item(output["prob"], index), np.float32).reshape(n)
    types = np.asarray(_item(output["type"], index)).reshape(n).astype(np.int16)
    keep = lengths >= 3
    if tile_shape is not None:  # centroids the padding produced (reflected nuclei) are dropped
        h, w = tile_shape
        keep &= (centroid[:, 0] >= -0.5) & (centroid[:, 0] < w - 0.5)
        keep &= (centroid[:, 1] >= -0.5) & (centroid[:, 1] < h - 0.5)
    nuclei = Nuclei(
        centroid=centroid.astype(np.float32),
        bbox=box.astype(np.float32),
        area=area.astype(np.float32),
        contour_offsets=offsets,
        contour_xy=flat.astype(np.float32).reshape(-1, 2),
        seg_type=types,
        seg_prob=prob,
    )
    return nuclei if keep.all() else nuclei.select(keep)


def _item(values: Any, index: int) -> Any:
    """Element ``index`` of a per-image list or stacked (dask) array, as NumPy."""
    item = values[index]
    compute = getattr(item, "compute", None)
    return compute() if compute is not None else item


def _lattice_polygon_pixels(xy: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Pixels covered by each closed lattice polygon (CSR), by Pick's theorem:
    pixels = interior + boundary = shoelace area + boundary points / 2 + 1."""
    n = offsets.size - 1
    if n == 0:
        return np.zeros(0)
    cell, start, end = polygon_edges(offsets, xy)
    steps = np.abs(np.rint(end - start)).astype(np.int64)
    points = np.bincount(cell, weights=np.gcd(steps[:, 0], steps[:, 1]), minlength=n)
    shoelace, _ = polygon_area_centroid(offsets, xy)
    return shoelace + points / 2 + 1


@register("hovernet")
def _build(cfg: SegmentConfig) -> HoVerNetSegmenter:
    return HoVerNetSegmenter(**settings_for(HoVerNetSegmenter, cfg))
