"""HoVer-Net's training targets and loss (Graham et al. 2019) for the nucleus U-Net.

Targets: foreground, and per pixel its horizontal / vertical offset from its nucleus' centre of
mass scaled to [-1, 1] per nucleus. Loss: foreground BCE + Dice, map MSE + gradient MSE inside
nuclei (the gradients are where touching nuclei are split).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["hovernet_loss", "hv_targets"]


def hv_targets(inst: np.ndarray) -> np.ndarray:
    """HoVer-Net's horizontal/vertical maps of an instance map, vectorised over instances.

    Each pixel gets its offset from its nucleus' centre of mass, divided per side (negative and
    positive separately) by the largest offset of that nucleus, so values span [-1, 1].

    Args:
        inst: (H, W) int instance map, 0 = background.

    Returns:
        (2, H, W) float32: horizontal (x) then vertical (y) map; 0 on background.
    """
    inst = np.asarray(inst)
    out = np.zeros((2,) + inst.shape, np.float32)
    fg = inst > 0
    if not fg.any():
        return out
    # relabel to 1..n so per-label tables stay small
    ids, lab = np.unique(inst[fg], return_inverse=True)
    lab = lab + 1
    n = ids.size
    ys, xs = np.nonzero(fg)
    count = np.bincount(lab, minlength=n + 1).astype(np.float64)
    count[0] = 1
    for axis, coord in enumerate((xs, ys)):
        centre = np.bincount(lab, weights=coord, minlength=n + 1) / count
        d = coord - centre[lab]
        neg = np.zeros(n + 1)
        pos = np.zeros(n + 1)
        np.minimum.at(neg, lab, d)
        np.maximum.at(pos, lab, d)
        scale = np.where(d < 0, -neg[lab], pos[lab])
        out[axis][ys, xs] = np.where(scale > 0, d / np.maximum(scale, 1e-6), 0.0)
    return out


def _sobel(size: int = 5) -> torch.Tensor:
    """HoVer-Net's 5x5 Sobel kernels, (2, 1, size, size): d/dx then d/dy."""
    r = torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float32)
    v, h = torch.meshgrid(r, r, indexing="ij")
    kx = h / (h * h + v * v + 1e-15)
    ky = v / (h * h + v * v + 1e-15)
    return torch.stack([kx, ky]).unsqueeze(1)


def hovernet_loss(
    pred: torch.Tensor, fg: torch.Tensor, hv: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE + Dice on foreground, MSE + gradient MSE (inside nuclei) on the HV maps.

    Args:
        pred: (B, 3, H, W) network output (foreground logit, h, v).
        fg: (B, 1, H, W) foreground target in {0, 1}.
        hv: (B, 2, H, W) HV target maps in [-1, 1].

    Returns:
        total loss, and its parts as floats.
    """
    logit, hv_pred = pred[:, :1], pred[:, 1:]
    bce = F.binary_cross_entropy_with_logits(logit, fg)
    prob = torch.sigmoid(logit)
    inter = (prob * fg).sum(dim=(1, 2, 3))
    dice = 1 - ((2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + fg.sum(dim=(1, 2, 3)) + 1)).mean()
    mse = F.mse_loss(hv_pred, hv)
    k = _sobel().to(pred)
    # gradient of h along x, of v along y (the sign flips that split touching nuclei)
    g_pred = torch.cat(
        [F.conv2d(hv_pred[:, :1], k[:1], padding=2), F.conv2d(hv_pred[:, 1:], k[1:], padding=2)], 1
    )
    g_true = torch.cat(
        [F.conv2d(hv[:, :1], k[:1], padding=2), F.conv2d(hv[:, 1:], k[1:], padding=2)], 1
    )
    mask = fg.expand_as(g_pred)
    msge = ((g_pred - g_true) ** 2 * mask).sum() / (mask.sum() + 1e-8)
    total = bce + dice + mse + msge
    parts = {"bce": bce.item(), "dice": dice.item(), "mse": mse.item(), "msge": msge.item()}
    return total, parts
