"""Training views of labelled nucleus images: what another lab, scanner or organ looks like.

Geometry (rotation by any angle, scale jitter, flips) is applied to image and instance map alike,
and the HoVer-Net targets are computed afterwards, so they follow it. Colour changes act on the
image only: stain amounts in HED space, gamma, contrast, brightness, a 20x read, focus blur and
JPEG. The segmenter then Reinhard-normalises; ``residual_jitter`` models what normalisation with
whole-slide statistics leaves in a local region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from wsi_ccrl.io.stain import StainReference, lab_to_rgb, reinhard_normalize, rgb_to_lab
from wsi_ccrl.nuclei.data import LabelledImage
from wsi_ccrl.nuclei.targets import hv_targets

__all__ = [
    "AugmentConfig",
    "colour_jitter",
    "make_batch",
    "residual_jitter",
    "sample_view",
    "stain_augment",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the training views (0 switches a part off)."""

    scale: float = 0.25  # zoom factor drawn log-uniformly in [1/(1+s), 1+s]
    rotate: bool = True  # any angle (else multiples of 90°)
    stain: float = 0.3  # HED stain scale changes (0.3: x0.7 - x1.3), gamma, contrast, brightness
    jpeg: float = 0.3  # probability of a JPEG round trip at quality 40-90
    residual: float = 0.3  # residual LAB jitter after normalisation (see ``residual_jitter``)


def sample_view(
    item: LabelledImage, crop: int, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """A random (crop, crop) view: image (uint8 RGB) and instance map, geometry applied to both.

    The view is taken from inside the image where it fits (no invented border nuclei); small
    images are mirrored at their edges.
    """
    h, w = item.inst.shape
    zoom = math.exp(rng.uniform(-1, 1) * math.log1p(cfg.scale)) if cfg.scale > 0 else 1.0
    angle = float(rng.uniform(0, 360)) if cfg.rotate else 90.0 * int(rng.integers(4))
    # source window that holds the rotated, zoomed view
    rad = math.radians(angle)
    reach = crop / zoom * (abs(math.cos(rad)) + abs(math.sin(rad))) / 2 + 2
    cx = rng.uniform(reach, w - reach) if w > 2 * reach else w / 2
    cy = rng.uniform(reach, h - reach) if h > 2 * reach else h / 2
    m = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
    m[:, 2] += (crop / 2 - cx, crop / 2 - cy)
    image = cv2.warpAffine(
        item.image, m, (crop, crop), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    inst = cv2.warpAffine(
        item.inst.astype(np.float32),
        m,
        (crop, crop),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REFLECT_101,
    ).astype(np.int32)
    if rng.random() < 0.5:
        image, inst = image[:, ::-1], inst[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(inst)


def stain_augment(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Another lab's slide: HED stain jitter, gamma, brightness/contrast, blur, 20x resampling.

    Stain amounts (Ruifrok colour deconvolution) are scaled and shifted per stain, so colour
    changes non-linearly (what Reinhard normalisation cannot fully undo); a 2x down- and
    up-sampling mimics a 20x slide read at 0.25 µm/px; a light Gaussian blur mimics focus.

    Args:
        image: (H, W, 3) uint8 RGB.
        strength: relative size of the stain scale changes (e.g. 0.3: x0.7 - x1.3).
        rng: the run's generator.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    from skimage.color import hed_from_rgb, rgb_from_hed

    h, w = image.shape[:2]
    od = -np.log(np.maximum(image.astype(np.float32), 1.0) / 255.0)  # optical density
    hed = od.reshape(-1, 3) @ hed_from_rgb.astype(np.float32)
    scale = 1 + rng.uniform(-strength, strength, 3).astype(np.float32)
    shift = rng.uniform(-0.05, 0.05, 3).astype(np.float32) * strength
    hed = hed * scale + shift
    od = np.maximum(hed @ rgb_from_hed.astype(np.float32), 0.0)
    x = np.exp(-od).reshape(h, w, 3)  # [0, 1]
    x = x ** np.float32(np.exp(rng.uniform(-0.5, 0.5) * strength))  # gamma
    mean = x.mean()
    x = mean + (x - mean) * np.float32(1 + rng.uniform(-strength, strength) / 2)  # contrast
    x = x + np.float32(rng.uniform(-0.1, 0.1) * strength / 0.3)  # brightness
    x = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if rng.random() < 0.5:  # 20x read at 0.25 µm/px: half the detail
        small = cv2.resize(x, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.3, 1.2)))
    return x


def colour_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and per-channel gain (stain variation).

    Args:
        x: (B, 3, H, W) float in [0, 1].
    """
    b = x.shape[0]

    def u(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1) * strength

    gray = x.mean(dim=1, keepdim=True)
    x = gray + (x - gray) * (1 + u(b, 1, 1, 1))  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (1 + u(b, 1, 1, 1))  # contrast
    x = x * (1 + 0.5 * u(b, 3, 1, 1)) + 0.5 * u(b, 1, 1, 1)  # channel gain, brightness
    return x.clamp(0, 1)


def jpeg_roundtrip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image after JPEG compression at a random quality (40-90): scanner/export artefacts."""
    quality = int(rng.integers(40, 91))
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        return image
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


def residual_jitter(
    image: np.ndarray, reference: StainReference, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """What normalisation leaves: random LAB mean shifts and spread changes around ``reference``.

    The segmenter normalises with statistics of the whole slide, so a region (dark epithelium
    in pale stroma) is never exactly at the reference. Without this the network learns to rely
    on exact statistics and misses nuclei in such regions.

    Args:
        image: (H, W, 3) uint8 RGB, already normalised to ``reference``.
        strength: 0.3 gives L* shifts of ±10, a*/b* ±5, spreads x0.8 - x1.2.
        rng: the run's generator.
    """
    lab = rgb_to_lab(image)
    mean = np.asarray(reference.mean, np.float32)
    k = strength / 0.3
    scale = 1 + rng.uniform(-0.2, 0.2, 3).astype(np.float32) * k
    shift = rng.uniform(-1, 1, 3).astype(np.float32) * np.array([10, 5, 5], np.float32) * k
    return lab_to_rgb((lab - mean) * scale + mean + shift)


def make_batch(
    items: list[LabelledImage],
    crop: int,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    reference: StainReference | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training view of each item, with HoVer-Net's targets.

    Returns:
        images (B, 3, crop, crop) float [0, 1], foreground (B, 1, crop, crop) float,
        hv (B, 2, crop, crop) float.
    """
    images, fgs, hvs = [], [], []
    for item in items:
        image, inst = sample_view(item, crop, rng, cfg)
        if cfg.stain > 0:
            image = stain_augment(image, cfg.stain, rng)
        if cfg.jpeg > 0 and rng.random() < cfg.jpeg:
            image = jpeg_roundtrip(image, rng)
        if reference is not None:
            image = reinhard_normalize(image, reference)
            if cfg.residual > 0:
                image = residual_jitter(image, reference, cfg.residual, rng)
        images.append(image)
        fgs.append(inst > 0)
        hvs.append(hv_targets(inst))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    fg = torch.from_numpy(np.stack(fgs)).unsqueeze(1).float()
    hv = torch.from_numpy(np.stack(hvs))
    return x, fg, hv
