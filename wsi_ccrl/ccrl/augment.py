"""The two CCRL views of a batch of cell crops, made on the training device with kornia.

Both pipelines apply an optional H&E stain jitter, colour jitter, random grey-scale, Gaussian
blur, horizontal and vertical flips and a rotation in [0, 180] degrees, with independent random
parameters per sample. The key branch (as in the paper's Figure 1) first takes a random resized
crop of the cell: the local view; the query sees the whole cell: the global view.
``local_global: false`` makes both views global (the paper's ablation). Whole uint8 batches go
in, so the GPU does the work, not CPU workers per image.
"""

from __future__ import annotations

import math

import kornia.augmentation as K
import torch
from torch import nn

from wsi_ccrl.config import AugmentConfig


def blur_kernel_size(sigma_max: float, crop_size: int) -> int:
    """An odd kernel covering +-2 sigma, smaller than the crop (reflect padding needs that)."""
    size = 2 * math.ceil(2 * sigma_max) + 1
    largest = crop_size - 1 if crop_size % 2 == 0 else crop_size - 2
    return max(3, min(size, largest))


class StainJitter(nn.Module):
    """Per-sample H&E stain amounts: what another staining run of the same tissue looks like.

    Tellez et al. (2018): optical densities are deconvolved into haematoxylin, eosin and DAB, each
    scaled by U(1 - s, 1 + s) and shifted by U(-s/4, s/4) (optical density, natural log; s = 0.2:
    +-0.05, a 5 % tint on glass), and recomposed. Unlike RGB jitter it keeps
    the relation between a nucleus's haematoxylin and its surroundings' eosin.
    """

    def __init__(self, strength: float):
        super().__init__()
        self.strength = float(strength)
        from skimage.color import hed_from_rgb, rgb_from_hed  # row vectors: od = hed @ rgb_from_hed

        self.register_buffer("to_hed", torch.tensor(hed_from_rgb, dtype=torch.float32), False)
        self.register_buffer("to_rgb", torch.tensor(rgb_from_hed, dtype=torch.float32), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> the same, jittered."""
        b = x.shape[0]
        od = -torch.log(x.clamp(min=1.0 / 255.0))
        hed = torch.einsum("bchw,cd->bdhw", od, self.to_hed)
        s = self.strength
        scale = 1.0 + (torch.rand(b, 3, 1, 1, device=x.device) * 2 - 1) * s
        shift = (torch.rand(b, 3, 1, 1, device=x.device) * 2 - 1) * (s / 4)
        od = torch.einsum("bdhw,dc->bchw", hed * scale + shift, self.to_rgb).clamp(min=0.0)
        return torch.exp(-od).clamp(0.0, 1.0)


def view_pipeline(cfg: AugmentConfig, crop_size: int, local: bool) -> nn.Sequential:
    """One branch's augmentations on (B, 3, S, S) float in [0, 1]; ``local`` adds the crop."""
    steps: list[nn.Module] = []
    if local:
        steps.append(
            K.RandomResizedCrop((crop_size, crop_size), scale=tuple(cfg.crop_scale), p=1.0)
        )
    if cfg.stain > 0:
        steps.append(StainJitter(cfg.stain))
    b, c, s, h = cfg.jitter
    steps += [
        K.ColorJitter(b, c, s, h, p=cfg.jitter_p),
        K.RandomGrayscale(p=cfg.grayscale_p),
        K.RandomGaussianBlur(
            blur_kernel_size(cfg.blur_sigma[1], crop_size),
            tuple(cfg.blur_sigma),
            p=cfg.blur_p,
        ),
        K.RandomHorizontalFlip(p=cfg.flip_p),
        K.RandomVerticalFlip(p=cfg.flip_p),
        K.RandomAffine(tuple(cfg.rotation), padding_mode="zeros", p=1.0),
    ]
    return nn.Sequential(*steps)


class CellViews(nn.Module):
    """uint8 (B, S, S, 3) crops -> (query, key) views, float (B, 3, S, S) in [0, 1].

    Args:
        cfg: the augmentation settings.
        crop_size: S; the local view is resized back to it.
    """

    def __init__(self, cfg: AugmentConfig, crop_size: int):
        super().__init__()
        self.query = view_pipeline(cfg, crop_size, local=False)
        self.key = view_pipeline(cfg, crop_size, local=cfg.local_global)

    def forward(
        self, crops: torch.Tensor, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views of every crop.

        Args:
            crops: (B, S, S, 3) uint8, on the device the augmentation should run on.
            seed: makes the draw reproducible without touching the global RNG (kornia samples
                from it); None draws from the current global state.
        """
        if crops.dtype != torch.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"expected uint8 (B, S, S, 3) crops, got {crops.dtype} {crops.shape}")
        x = crops.permute(0, 3, 1, 2).float().div_(255.0)  # Bx3xSxS, channels-last in memory
        if seed is None:
            return self._views(x)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self._views(x)

    def _views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.query(x).clamp_(0.0, 1.0)
        k = self.key(x).clamp_(0.0, 1.0)
        return q, k
