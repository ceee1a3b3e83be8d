"""A whole cell store's embeddings, written back into it (the crop-level pass is ``ccrl/embed``).

``embed_store`` streams a whole cell store through the backbone, one chunk of crops at a time (the
next chunk is read and decompressed on a thread while the current one runs), and writes the
features back into the store as ``embedding`` float16 (N, D). On CUDA the backbone runs under bf16
autocast, with DataParallel over every visible GPU.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from wsi_ccrl.ccrl.embed import embed_crops
from wsi_ccrl.config import LabelConfig
from wsi_ccrl.engine import cpu_runner
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.log import get_logger, progress_enabled
from wsi_ccrl.runtime import resolve_device, resolve_gpus

log = get_logger(__name__)


def parallel_backbone(
    backbone: nn.Module, device: torch.device, gpus: tuple[int, ...] | None = None
) -> nn.Module:
    """The backbone on ``device``, wrapped in DataParallel over ``resolve_gpus``'s GPUs (``gpus``,
    else ``cuda:N`` alone, else every visible one) when there are several."""
    ids = resolve_gpus(device, gpus)
    backbone = backbone.to(torch.device("cuda", ids[0]) if ids else device).eval()
    if len(ids) > 1:
        log.info("embedding on %d GPUs (DataParallel)", len(ids))
        backbone = nn.DataParallel(backbone, device_ids=ids)
    if device.type == "cuda":
        backbone = backbone.to(memory_format=torch.channels_last)
    return backbone


def embed_store(
    store,
    backbone: nn.Module,
    batch_size: int = LabelConfig.batch_size,
    device: str | torch.device = LabelConfig.device,
    column: str = "embedding",
    engine: str = LabelConfig.engine,
    gpus: tuple[int, ...] | None = None,
):
    """Embed every crop of ``store`` (a writable CellStore) into its ``column`` (float16, N × D).

    Args:
        store: a ``CellStore`` opened with mode ``r+``.
        backbone: maps (B, 3, S, S) float in [0, 1] to (B, D).
        batch_size: crops per forward pass (per step of all GPUs together).
        device: ``auto``, ``cpu``, ``cuda`` or a torch device.
        engine: the CPU inference engine (``wsi_ccrl.engine``); torch on CUDA.
        gpus: the GPUs for DataParallel (``runtime.resolve_gpus``).

    Returns:
        The written zarr array.
    """
    device = resolve_device(device)
    model = parallel_backbone(backbone, device, gpus)
    module = getattr(model, "module", model)
    dim = int(getattr(module, "feature_dim", 512))
    out = store.create_column(column, np.float16, (dim,))
    crops = store["crops"]
    side = int(crops.shape[1])
    runner = cpu_runner(module, torch.zeros(1, 3, side, side), engine, device, "ccrl_encoder")
    # read whole store chunks (aligned writes), at least one batch's worth
    rows = store.chunk_cells * max(1, -(-batch_size // store.chunk_cells))
    ranges = list(store.iter_ranges(rows))
    bar = tqdm(
        total=store.n_cells,
        desc=f"embed {store.path.name}",
        unit="cell",
        disable=not progress_enabled(),
    )
    with ThreadPoolExecutor(max_workers=1) as reader, bar:
        pending = reader.submit(_read, crops, *ranges[0]) if ranges else None
        for i, (start, stop) in enumerate(ranges):
            batch = pending.result()
            if i + 1 < len(ranges):
                pending = reader.submit(_read, crops, *ranges[i + 1])
            feats = embed_crops(model, batch, batch_size, device, runner)
            if not np.isfinite(feats).all():
                raise WsiCcrlError(
                    f"{store.path}: the model gives NaN/inf features (cells {start}+)"
                )
            out[start:stop] = feats.astype(np.float16)
            bar.update(stop - start)
    return out


def _read(array, start: int, stop: int) -> np.ndarray:
    return np.asarray(array[start:stop])
