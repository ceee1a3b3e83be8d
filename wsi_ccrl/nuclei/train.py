"""Reproducible training of the embedded nucleus U-Net on CoNSeP patches.

Data: a folder laid out like CoNSeP's release (``Images/<name>.png``, ``Labels/<name>.mat`` with
``inst_map``), 40x (~0.25 µm/px). Patch names end in ``_<tile>_<k>``; the split is by source tile
(whole tiles held back), never by patch, since patches of one tile overlap in content and stain.
Targets and losses follow HoVer-Net (Graham et al. 2019): foreground BCE + Dice, horizontal/vertical
map MSE + gradient MSE inside nuclei. Inputs are Reinhard-normalised as the segmenter does, after
stain/resolution augmentation, so the network transfers to other labs' and 20x slides. The shipped
weights (v2) fine-tune the first ones (v1: ``--epochs 100 --stain-augment 0
--no-stain-normalize``)::

    python -m wsi_ccrl.nuclei.train --data ../shared/data/consep-patches/Train \
        --out wsi_ccrl/weights/nucleus_unet.pt --init <v1.pt> --epochs 40 --lr 5e-4 \
        --seed 0 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io
import torch
import torch.nn.functional as F

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.log import get_logger
from wsi_ccrl.nuclei.net import NucleusUNet
from wsi_ccrl.stain import (
    StainReference,
    lab_to_rgb,
    reference_from_images,
    reinhard_normalize,
    rgb_to_lab,
)

__all__ = [
    "PatchSet",
    "NucleusTrainConfig",
    "hv_targets",
    "hovernet_loss",
    "load_patches",
    "make_batch",
    "residual_jitter",
    "stain_augment",
    "save_weights",
    "train",
]

log = get_logger(__name__)

_NAME = re.compile(r"_(\d+)_(\d+)$")


@dataclass
class PatchSet:
    """Patches in memory: images (N, H, W, 3) uint8, inst (N, H, W) int32, tile (N,) int."""

    images: np.ndarray
    inst: np.ndarray
    tile: np.ndarray
    names: list[str]

    def subset(self, keep: np.ndarray) -> PatchSet:
        idx = np.flatnonzero(keep)
        return PatchSet(
            self.images[idx], self.inst[idx], self.tile[idx], [self.names[i] for i in idx]
        )

    def __len__(self) -> int:
        return len(self.names)


def load_patches(data_dir: str | Path, tiles: set[int] | None = None) -> PatchSet:
    """Read every ``Images/*.png`` with its ``Labels/*.mat`` (optionally only some tiles)."""
    data_dir = Path(data_dir)
    image_paths = sorted((data_dir / "Images").glob("*.png"))
    if not image_paths:
        raise WsiCcrlError(f"no patches in {data_dir / 'Images'} (expected CoNSeP-style *.png)")
    images, insts, tile_ids, names = [], [], [], []
    for path in image_paths:
        match = _NAME.search(path.stem)
        if match is None:
            raise WsiCcrlError(f"patch name {path.name} does not end in _<tile>_<k>")
        tile = int(match.group(1))
        if tiles is not None and tile not in tiles:
            continue
        label_path = data_dir / "Labels" / f"{path.stem}.mat"
        if not label_path.is_file():
            raise WsiCcrlError(f"missing labels {label_path} for {path.name}")
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        images.append(image)
        insts.append(scipy.io.loadmat(label_path)["inst_map"].astype(np.int32))
        tile_ids.append(tile)
        names.append(path.stem)
    if not names:
        raise WsiCcrlError(f"no patches of tiles {sorted(tiles or [])} in {data_dir}")
    return PatchSet(np.stack(images), np.stack(insts), np.asarray(tile_ids), names)


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


def make_batch(
    patches: PatchSet,
    idx: np.ndarray,
    crop: int,
    rng: np.random.Generator,
    stain: float = 0.0,
    reference: StainReference | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augmented crops (random crop, rot90, flip) with their targets.

    With ``stain`` > 0 each crop also gets ``stain_augment`` (stain, light, focus and resolution
    changes); with a ``reference`` it is then Reinhard-normalised, as the segmenter does.

    Returns:
        images (B, 3, crop, crop) float [0, 1], foreground (B, 1, crop, crop) float,
        hv (B, 2, crop, crop) float.
    """
    h, w = patches.inst.shape[1:]
    images, fgs, hvs = [], [], []
    for i in idx:
        y0 = rng.integers(0, h - crop + 1)
        x0 = rng.integers(0, w - crop + 1)
        image = patches.images[i, y0 : y0 + crop, x0 : x0 + crop]
        inst = patches.inst[i, y0 : y0 + crop, x0 : x0 + crop]
        k = int(rng.integers(4))
        image, inst = np.rot90(image, k), np.rot90(inst, k)
        if rng.random() < 0.5:
            image, inst = image[:, ::-1], inst[:, ::-1]
        inst = np.ascontiguousarray(inst)
        image = np.ascontiguousarray(image)
        if stain > 0:
            image = stain_augment(image, stain, rng)
        if reference is not None:
            image = reinhard_normalize(image, reference)
            if stain > 0:
                image = residual_jitter(image, reference, stain, rng)
        images.append(image)
        fgs.append(inst > 0)
        hvs.append(hv_targets(inst))  # recomputed after the flips: maps follow the geometry
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    fg = torch.from_numpy(np.stack(fgs)).unsqueeze(1).float()
    hv = torch.from_numpy(np.stack(hvs))
    return x, fg, hv


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


def residual_jitter(
    image: np.ndarray, reference: StainReference, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """What normalisation leaves: random LAB mean shifts and spread changes around ``reference``.

    A crop normalised on its own matches the reference exactly; a region inside a large slide
    tile (dark epithelium in a tile of pale stroma) does not. Without this the network learns
    to rely on exact statistics and misses nuclei in such regions.

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


@dataclass(frozen=True)
class NucleusTrainConfig:
    """Everything that determines a training run (recorded in the weights file)."""

    data: str = ""
    out: str = "nucleus_unet.pt"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    stem_stride: int = 2
    holdout_tiles: tuple[int, ...] = (21, 22, 23, 24, 25, 26, 27)
    epochs: int = 100  # v1's schedule from scratch (4,000 steps of batch 8); v2 fine-tunes 40
    batch_size: int = 8
    crop: int = 128
    crops_per_patch: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-4
    colour_jitter: float = 0.1
    stain_augment: float = 0.3  # stain_augment strength (0: off)
    stain_normalize: bool = True  # Reinhard-normalise inputs to the training tiles' statistics
    init: str | None = None  # start from these weights (fine-tuning) instead of from scratch
    seed: int = 0
    threads: int = 2
    max_steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise WsiCcrlError("epochs and batch_size must be >= 1")
        if self.init and not Path(self.init).is_file():
            raise WsiCcrlError(f"--init weights not found: {self.init}")
        stride = self.stem_stride * 2 ** (len(self.channels) - 1)
        if self.crop % stride:
            raise WsiCcrlError(f"crop {self.crop} must be a multiple of the net's stride {stride}")


def save_weights(path: str | Path, net: NucleusUNet, config: dict[str, Any]) -> None:
    """Atomically write ``{"state_dict", "config"}`` (plain tensors and builtins: weights_only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "config": config}, tmp)
    os.replace(tmp, path)


def train(
    cfg: NucleusTrainConfig, patches: PatchSet | None = None
) -> tuple[NucleusUNet, list[float]]:
    """Train from scratch (or resume ``<out>.ckpt``); writes ``cfg.out`` and returns the losses.

    Args:
        cfg: the run's settings.
        patches: already loaded patches (tests); default: ``load_patches(cfg.data)``.

    Returns:
        the trained network (eval mode) and the per-step total losses of this call.
    """
    cfg.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, patches)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: NucleusTrainConfig, patches: PatchSet | None) -> tuple[NucleusUNet, list[float]]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if patches is None:
        patches = load_patches(cfg.data)
    patches = patches.subset(~np.isin(patches.tile, cfg.holdout_tiles))
    if len(patches) == 0:
        raise WsiCcrlError("no training patches left after holding back tiles")
    log.info("training on %d patches of tiles %s", len(patches), sorted(set(patches.tile.tolist())))

    net = NucleusUNet(cfg.channels, cfg.stem_stride)
    if cfg.init:
        blob = torch.load(cfg.init, map_location="cpu", weights_only=True)
        net.load_state_dict(blob["state_dict"])
        log.info("starting from %s", cfg.init)
    reference = reference_from_images(patches.images) if cfg.stain_normalize else None
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order_len = len(patches) * cfg.crops_per_patch
    steps_per_epoch = max(1, order_len // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    # DINO-style: the whole lr schedule up front, one value per step (cosine)
    t = np.arange(total) / max(1, total - 1)
    lrs = cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + np.cos(math.pi * t))

    config = {
        "arch": "unet",
        "channels": list(cfg.channels),
        "stem_stride": cfg.stem_stride,
        "mpp": 0.25,
        "outputs": ["fg_logit", "h", "v"],
        "stain_reference": reference.to_dict() if reference else None,
        "train": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    ckpt = Path(str(cfg.out) + ".ckpt")
    step = 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)  # our own checkpoint: holds RNG states
        if state.get("train") != config["train"]:
            raise WsiCcrlError(
                f"{ckpt} is from a run with other settings; delete it to start afresh"
            )
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        rng.bit_generator.state = state["rng"]
        gen.set_state(state["gen"])
        log.info("resumed from %s at step %d", ckpt, step)

    losses: list[float] = []
    net.train()
    t0 = time.time()
    log_path = Path(str(cfg.out) + ".log.jsonl")
    order = np.zeros(0, np.int64)
    while step < total:
        epoch, pos = divmod(step, steps_per_epoch)
        if pos == 0 or order.size == 0:
            # fresh permutation per epoch, drawn from a per-epoch seed (resume-safe)
            erng = np.random.default_rng([cfg.seed, epoch])
            order = np.tile(np.arange(len(patches)), cfg.crops_per_patch)
            order = erng.permutation(order)
        idx = order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
        x, fg, hv = make_batch(patches, idx, cfg.crop, rng, cfg.stain_augment, reference)
        if cfg.colour_jitter > 0:
            x = colour_jitter(x, cfg.colour_jitter, gen)
        for group in opt.param_groups:
            group["lr"] = float(lrs[step])
        loss, parts = hovernet_loss(net(x), fg, hv)
        if not torch.isfinite(loss):
            raise WsiCcrlError(f"non-finite loss at step {step}: {parts}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 20 == 0 or step == total:
            record = {"step": step, "epoch": epoch, "lr": float(lrs[step - 1]), "loss": loss.item()}
            record.update(parts)
            record["elapsed_s"] = round(time.time() - t0, 1)
            log.info("%s", json.dumps(record))
            with open(log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if step % steps_per_epoch == 0 or step == total:
            tmp = ckpt.with_name(ckpt.name + ".tmp")
            torch.save(
                {
                    "net": net.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                    "rng": rng.bit_generator.state,
                    "gen": gen.get_state(),
                    "train": config["train"],
                },
                tmp,
            )
            os.replace(tmp, ckpt)
            save_weights(cfg.out, net, config)
    net.eval()
    save_weights(cfg.out, net, config)
    return net, losses


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="CoNSeP-style folder (Images/, Labels/)")
    parser.add_argument("--out", required=True, help="weights file to write")
    parser.add_argument("--epochs", type=int, default=NucleusTrainConfig.epochs)
    parser.add_argument("--seed", type=int, default=NucleusTrainConfig.seed)
    parser.add_argument("--batch-size", type=int, default=NucleusTrainConfig.batch_size)
    parser.add_argument("--crop", type=int, default=NucleusTrainConfig.crop)
    parser.add_argument("--crops-per-patch", type=int, default=NucleusTrainConfig.crops_per_patch)
    parser.add_argument("--lr", type=float, default=NucleusTrainConfig.lr)
    parser.add_argument("--threads", type=int, default=NucleusTrainConfig.threads)
    parser.add_argument("--min-lr", type=float, default=NucleusTrainConfig.min_lr)
    parser.add_argument("--stain-augment", type=float, default=NucleusTrainConfig.stain_augment)
    parser.add_argument(
        "--no-stain-normalize", action="store_true", help="train on raw colours (old recipe)"
    )
    parser.add_argument("--init", default=None, help="weights to fine-tune from")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = NucleusTrainConfig(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        crop=args.crop,
        crops_per_patch=args.crops_per_patch,
        lr=args.lr,
        threads=args.threads,
        min_lr=args.min_lr,
        stain_augment=args.stain_augment,
        stain_normalize=not args.no_stain_normalize,
        init=args.init,
    )
    train(cfg)


if __name__ == "__main__":
    main()
