"""Reproducible training of the embedded nucleus U-Net on several labelled sources (CPU or GPU).

Data: CoNSeP, MoNuSeg and CPM-15 in CoNSeP's layout, at 0.25 µm/px (``wsi_ccrl.nuclei.data``),
whole images held back per source and organ (``HELD_BACK``). Each batch draws its crops evenly
from the sources (then by image area), so 30 MoNuSeg images weigh as much as 432 CoNSeP patches
and 11 CPM-15 images: the network learns nuclei, not one lab. Views, targets and loss:
``wsi_ccrl.nuclei.augment`` and ``wsi_ccrl.nuclei.targets``. The shipped weights (v3)::

    python -m wsi_ccrl.nuclei.train --consep ../shared/data/consep-patches/Train \
        --monuseg ../shared/data/monuseg-train --cpm15 ../shared/data/cpm15 \
        --out wsi_ccrl/weights/nucleus_unet.pt --init <v2.pt> --seed 0 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.stain import reference_from_images
from wsi_ccrl.log import get_logger
from wsi_ccrl.nuclei.augment import AugmentConfig, colour_jitter, make_batch
from wsi_ccrl.nuclei.data import HELD_BACK, LabelledImage, load_sources, split
from wsi_ccrl.nuclei.net import NucleusUNet
from wsi_ccrl.nuclei.targets import hovernet_loss
from wsi_ccrl.runtime import atomic_save_torch, read_torch_file
from wsi_ccrl.schedule import cosine_schedule

__all__ = ["NucleusTrainConfig", "SourceSampler", "save_weights", "train"]

log = get_logger(__name__)


@dataclass(frozen=True)
class NucleusTrainConfig:
    """Everything that determines a training run (recorded in the weights file)."""

    sources: dict[str, str] = field(default_factory=dict)  # {"consep": folder, ...}
    out: str = "nucleus_unet.pt"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    stem_stride: int = 2
    epochs: int = 50
    steps_per_epoch: int = 200  # a checkpoint and a log line per epoch
    warmup_epochs: int = 1
    batch_size: int = 8
    crop: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    colour_jitter: float = 0.1
    stain_normalize: bool = True  # Reinhard-normalise inputs to the training images' statistics
    init: str | None = None  # start from these weights (fine-tuning) instead of from scratch
    seed: int = 0
    threads: int = 2

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.steps_per_epoch < 1:
            raise WsiCcrlError("epochs, steps_per_epoch and batch_size must be >= 1")
        if self.init and not Path(self.init).is_file():
            raise WsiCcrlError(f"--init weights not found: {self.init}")
        stride = self.stem_stride * 2 ** (len(self.channels) - 1)
        if self.crop % stride:
            raise WsiCcrlError(f"crop {self.crop} must be a multiple of the net's stride {stride}")

    def record(self) -> dict[str, Any]:
        """Plain builtins (JSON- and weights_only-safe)."""
        return json.loads(json.dumps(asdict(self)))


class SourceSampler:
    """Batches of images drawn evenly over sources, then in proportion to image area."""

    def __init__(self, images: list[LabelledImage]) -> None:
        self.images = images
        self.sources = sorted({im.source for im in images})
        self.members = [np.flatnonzero([im.source == s for im in images]) for s in self.sources]
        self.weights = []
        for idx in self.members:
            area = np.array([images[i].inst.size for i in idx], np.float64)
            self.weights.append(area / area.sum())

    def draw(self, n: int, rng: np.random.Generator) -> list[LabelledImage]:
        which = rng.integers(len(self.sources), size=n)
        picks = [rng.choice(self.members[s], p=self.weights[s]) for s in which]
        return [self.images[i] for i in picks]


def save_weights(path: str | Path, net: NucleusUNet, config: dict[str, Any]) -> None:
    """Atomically write ``{"state_dict", "config"}`` (plain tensors and builtins: weights_only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    atomic_save_torch({"state_dict": state, "config": config}, path)


def train(
    cfg: NucleusTrainConfig, images: list[LabelledImage] | None = None
) -> tuple[NucleusUNet, list[float]]:
    """Train (or resume ``<out>.ckpt``); writes ``cfg.out`` and returns the losses of this call.

    Args:
        cfg: the run's settings.
        images: already loaded images (tests); default: ``load_sources(cfg.sources)``. The
            held-back images (``HELD_BACK``) are removed either way.

    Returns:
        the trained network (eval mode) and the per-step total losses of this call.
    """
    cfg.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, images)
    finally:
        torch.set_num_threads(threads)


def _train(
    cfg: NucleusTrainConfig, images: list[LabelledImage] | None
) -> tuple[NucleusUNet, list[float]]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if images is None:
        if not cfg.sources:
            raise WsiCcrlError("no training sources given (--consep / --monuseg / --cpm15)")
        images = load_sources(cfg.sources)
    images, _ = split(images)
    if not images:
        raise WsiCcrlError("no training images left after holding back the validation images")
    counts = {s: sum(im.source == s for im in images) for s in sorted({im.source for im in images})}
    log.info("training on %s images (held-back images removed)", counts)
    sampler = SourceSampler(images)

    net = NucleusUNet(cfg.channels, cfg.stem_stride)
    if cfg.init:
        blob = read_torch_file(cfg.init, "nucleus model", "expected a nucleus_unet.pt of this tool")
        if not isinstance(blob, dict) or "state_dict" not in blob:
            raise WsiCcrlError(f"{cfg.init} is not a nucleus model (no state_dict)")
        try:
            net.load_state_dict(blob["state_dict"])
        except RuntimeError as exc:
            raise WsiCcrlError(f"--init {cfg.init} does not fit --channels: {exc}") from None
        log.info("starting from %s", cfg.init)
    reference = reference_from_images([im.image for im in images]) if cfg.stain_normalize else None
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lrs = cosine_schedule(
        cfg.lr, cfg.min_lr, cfg.epochs, cfg.steps_per_epoch, cfg.warmup_epochs, cfg.min_lr
    )
    total = len(lrs)
    config = {
        "arch": "unet",
        "channels": list(cfg.channels),
        "stem_stride": cfg.stem_stride,
        "mpp": 0.25,
        "outputs": ["fg_logit", "h", "v"],
        "stain_reference": reference.to_dict() if reference else None,
        "stain_fit": "slide",  # normalise with whole-slide (image) statistics
        "held_back": {k: list(v) for k, v in HELD_BACK.items()},  # never trained on
        "train": cfg.record(),
    }
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    ckpt = Path(str(cfg.out) + ".ckpt")
    step = 0
    if ckpt.is_file():
        state = read_torch_file(ckpt, "nucleus training checkpoint", "delete it to start afresh")
        if state.get("train") != config["train"]:
            raise WsiCcrlError(
                f"{ckpt} is from a run with other settings; delete it to start afresh"
            )
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        rng.bit_generator.state = state["rng"]
        gen.set_state(state["gen"])
        log.info("resumed from %s at step %d", ckpt, step)

    losses: list[float] = []
    net.train()
    t0 = time.time()
    log_path = Path(str(cfg.out) + ".log.jsonl")
    while step < total:
        x, fg, hv = make_batch(
            sampler.draw(cfg.batch_size, rng), cfg.crop, rng, cfg.augment, reference
        )
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
            record = {"step": step, "lr": float(lrs[step - 1]), "loss": loss.item(), **parts}
            record["elapsed_s"] = round(time.time() - t0, 1)
            log.info("%s", json.dumps(record))
            with open(log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if step % cfg.steps_per_epoch == 0 or step == total:
            state = {
                "net": net.state_dict(),
                "opt": opt.state_dict(),
                "step": step,
                "rng": rng.bit_generator.state,
                "gen": gen.get_state(),
                "train": config["train"],
            }
            atomic_save_torch(state, ckpt)
            save_weights(cfg.out, net, config)
    net.eval()
    save_weights(cfg.out, net, config)
    return net, losses


def main(argv: list[str] | None = None) -> None:
    defaults = NucleusTrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for source in ("consep", "monuseg", "cpm15"):
        parser.add_argument(f"--{source}", default=None, help=f"{source} folder (Images/, Labels/)")
    parser.add_argument("--out", required=True, help="weights file to write")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--steps-per-epoch", type=int, default=defaults.steps_per_epoch)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--crop", type=int, default=defaults.crop)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--min-lr", type=float, default=defaults.min_lr)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--init", default=None, help="weights to fine-tune from")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sources = {s: getattr(args, s) for s in ("consep", "monuseg", "cpm15") if getattr(args, s)}
    cfg = NucleusTrainConfig(
        sources=sources,
        out=args.out,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        seed=args.seed,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        min_lr=args.min_lr,
        threads=args.threads,
        init=args.init,
    )
    try:
        train(cfg)
    except WsiCcrlError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
