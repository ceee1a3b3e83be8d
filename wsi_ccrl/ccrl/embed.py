"""Features of cell crops from a backbone, batched, with no augmentation.

The one forward pass that ``label`` (whole stores, ``label/embed``), the benchmark and the
training monitor share, so every caller embeds a crop the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from wsi_ccrl.config import LabelConfig
from wsi_ccrl.engine import Runner


@torch.no_grad()
def embed_crops(
    backbone: nn.Module,
    crops: np.ndarray,
    batch_size: int = LabelConfig.batch_size,
    device: str | torch.device = "cpu",
    runner: Runner | None = None,
) -> np.ndarray:
    """Features of every crop.

    Args:
        backbone: maps (B, 3, S, S) float in [0, 1] to (B, D); put in eval mode here.
        crops: (N, S, S, 3) uint8 (a NumPy or zarr array; read one batch at a time).
        batch_size: crops per forward pass.
        device: where the backbone runs.
        runner: the backbone loaded in a CPU engine (``wsi_ccrl.engine.cpu_runner``), which then
            runs in its place.

    Returns:
        (N, D) float32.
    """
    backbone.eval()
    device = torch.device(device)
    out = []
    for start in range(0, crops.shape[0], batch_size):
        batch = torch.from_numpy(np.asarray(crops[start : start + batch_size]))
        batch = batch.to(device, non_blocking=device.type == "cuda")
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        if runner is not None:
            out.append(runner(x.numpy()))
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            feats = backbone(x)
        out.append(feats.float().cpu().numpy())
    if not out:
        module = getattr(backbone, "module", backbone)
        return np.zeros((0, getattr(module, "feature_dim", 512)), np.float32)
    return np.concatenate(out)
