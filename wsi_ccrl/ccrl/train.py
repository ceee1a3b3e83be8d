"""The CCRL training loop: stores in, ``RUN_DIR/model.pt`` out, resumable from checkpoints.

What the loop reports (periodic K-means evaluation, ``metrics.csv``) is in ``monitor``;
checkpoints and RNG state are in ``checkpoint``.

One code path for every layout: one CPU process, one GPU, DataParallel over several GPUs (the
backbones are wrapped; weights, momentum update and queue stay in the ``CCRL`` module), or
DistributedDataParallel under ``torchrun`` (data sharded per rank, keys gathered into the queue).
Every step seeds the RNG from (seed, step, rank) and the data order depends on (seed, epoch), so a
run stopped and resumed from a checkpoint repeats an uninterrupted one exactly on the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from wsi_ccrl.ccrl import distributed
from wsi_ccrl.ccrl.augment import CellViews
from wsi_ccrl.ccrl.checkpoint import CHECKPOINT, cpu_state, load_checkpoint, save_checkpoint
from wsi_ccrl.ccrl.data import CellCrops, load_eval_set, open_stores
from wsi_ccrl.ccrl.model import CCRL
from wsi_ccrl.ccrl.model_io import save_model
from wsi_ccrl.ccrl.monitor import METRICS, evaluate, log_epoch, tensorboard, trim_metrics
from wsi_ccrl.config import TrainConfig, dump_yaml, to_dict
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.log import get_logger, progress_enabled
from wsi_ccrl.runtime import resolve_device, resolve_gpus
from wsi_ccrl.schedule import cosine_schedule

log = get_logger(__name__)

MODEL = "model.pt"
CONFIG = "config.yaml"


@dataclass
class Placement:
    """Where the model runs: the device, the DataParallel GPUs, and the DDP layout."""

    device: torch.device
    gpu_ids: list[int] | None
    env: distributed.DistEnv


def train(stores: list[Path], out_dir: Path, cfg: TrainConfig, resume: bool = True) -> Path:
    """Train CCRL on the cells of ``stores``; return the path of ``out_dir/model.pt``.

    Args:
        stores: finished cell stores (all of one crop size, equal to ``cfg.crop_size``).
        out_dir: the run folder: config.yaml, checkpoint.pt, metrics.csv, model.pt.
        cfg: the resolved training config.
        resume: continue from ``out_dir/checkpoint.pt`` when there is one (else start over).
    """
    return fit(stores, out_dir, cfg, resume)[1]


def fit(
    stores: list[Path], out_dir: Path, cfg: TrainConfig, resume: bool = True
) -> tuple[CCRL, Path]:
    """As :func:`train`, also returning this process's trained module (for inspection)."""
    placement = select_device(cfg, distributed.detect())
    owns_group = not distributed.is_initialized()
    distributed.init(placement.device.type)
    try:
        return _train(list(map(Path, stores)), Path(out_dir), cfg, resume, placement)
    finally:
        if owns_group:
            distributed.teardown()


def select_device(cfg: TrainConfig, env: distributed.DistEnv) -> Placement:
    """The training device from ``cfg.device``/``cfg.gpus``; one clear error when there is none."""
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        return Placement(torch.device("cpu"), None, env)
    count = torch.cuda.device_count()
    if env.distributed:  # one GPU per process under torchrun
        if env.local_rank >= count:
            raise WsiCcrlError(f"LOCAL_RANK {env.local_rank} but only {count} GPU(s) visible")
        return Placement(torch.device("cuda", env.local_rank), None, env)
    ids = resolve_gpus(device, cfg.gpus)  # the rule every command follows
    return Placement(torch.device("cuda", ids[0]), ids if len(ids) > 1 else None, env)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one optimiser step on one rank (augmentations, batch shuffle)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _train(
    paths: list[Path], out_dir: Path, cfg: TrainConfig, resume: bool, place: Placement
) -> tuple[CCRL, Path]:
    env, device = place.env, place.device
    opened = open_stores(paths, cfg.crop_size)
    if cfg.batch_size % env.world_size:
        raise ConfigError(
            f"train.batch_size {cfg.batch_size} must divide among {env.world_size} processes"
        )
    n_cells = sum(s.n_cells for s in opened)
    if cfg.batch_size > n_cells:
        raise WsiCcrlError(f"batch size {cfg.batch_size} is larger than the {n_cells} cells")
    data = CellCrops(
        opened, cfg.in_memory_max_cells, cfg.shuffle_buffer_chunks, prefetch=cfg.num_workers
    )
    batch = cfg.batch_size // env.world_size
    steps_per_epoch = data.steps_per_epoch(batch, env.world_size)
    if steps_per_epoch == 0:
        raise WsiCcrlError(f"batch size {cfg.batch_size} is larger than one process's share")
    epochs = cfg.epochs_for(steps_per_epoch)  # a small cohort gets min_steps all the same
    total_steps = epochs * steps_per_epoch
    stop_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    lr_schedule = cosine_schedule(cfg.lr, 0.0, epochs, steps_per_epoch, cfg.warmup_epochs)
    fingerprint = [[s.path.name, s.n_cells] for s in opened]  # empty stores were left out

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = CCRL.from_config(cfg).to(device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    views = CellViews(cfg.augment, cfg.crop_size).to(device)
    optimizer = build_optimizer(model, cfg)

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    step = 0
    if resume and ckpt_path.exists():
        step = load_checkpoint(ckpt_path, model, optimizer, cfg, fingerprint, device)
        if env.is_main:
            log.info("resuming %s at step %d (epoch %.2f)", out_dir, step, step / steps_per_epoch)
    elif env.is_main:
        for name in (CHECKPOINT, METRICS, MODEL):
            (out_dir / name).unlink(missing_ok=True)
    distributed.barrier()
    if env.is_main:
        dump_yaml("train", cfg, out_dir / CONFIG)
        trim_metrics(out_dir / METRICS, step)

    runner: nn.Module = model
    if env.distributed:
        ids = [device.index] if device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    elif place.gpu_ids:
        runner = distributed.DataParallelCCRL(model, place.gpu_ids)
        log.info("DataParallel over GPUs %s", place.gpu_ids)

    eval_set = load_eval_set(opened, cfg.eval_max_cells, cfg.seed) if env.is_main else None
    writer = tensorboard(out_dir) if env.is_main else None
    if env.is_main:
        log.info(
            "training on %d cells from %d store(s): %d epochs x %d steps of %d on %s, "
            "%d process(es)",
            n_cells,
            len(opened),
            epochs,
            steps_per_epoch,
            cfg.batch_size,
            device,
            env.world_size,
        )
    amp = device.type == "cuda" and cfg.amp
    cl = device.type == "cuda" and cfg.channels_last
    bar = tqdm(
        total=stop_step,
        initial=step,
        desc="train",
        unit="step",
        disable=not (progress_enabled() and env.is_main),
    )
    last_loss = float("nan")
    while step < stop_step:
        epoch, skip = divmod(step, steps_per_epoch)
        losses, t0 = [], time.perf_counter()
        for crops in data.batches(epoch, batch, cfg.seed, env.rank, env.world_size, skip):
            lr = float(lr_schedule[step])
            seed = step_seed(cfg.seed, step, env.rank)
            loss = train_step(runner, views, optimizer, crops, lr, seed, device, amp, cl)
            last_loss = distributed.all_reduce_mean(float(loss), device)
            if not np.isfinite(last_loss):
                raise WsiCcrlError(
                    f"training diverged: loss is {last_loss} at step {step} (epoch {epoch + 1}); "
                    "lower --lr or check the input crops"
                )
            step += 1
            losses.append(last_loss)
            rate = len(losses) * cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
            bar.update(1)
            if step >= stop_step:
                break
        seconds = time.perf_counter() - t0
        epoch_done = step % steps_per_epoch == 0
        done_epochs = step // steps_per_epoch
        finished = step >= stop_step
        row: dict[str, Any] = {
            "epoch": done_epochs if epoch_done else round(step / steps_per_epoch, 3),
            "step": step,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": float(lr_schedule[step - 1]),
            "images_per_s": len(losses) * cfg.batch_size / max(seconds, 1e-9),
            "seconds": seconds,
        }
        due_eval = cfg.eval_every and epoch_done and done_epochs % cfg.eval_every == 0
        if eval_set is not None and (due_eval or finished):
            row.update(evaluate(model, eval_set, cfg, device))
        if env.is_main:
            log_epoch(row, epochs, out_dir / METRICS, writer)
        if finished or (epoch_done and done_epochs % cfg.checkpoint_every == 0):
            distributed.broadcast_buffers(model)
            if env.is_main:
                save_checkpoint(
                    ckpt_path, model, optimizer, cfg, step, steps_per_epoch, fingerprint
                )
            distributed.barrier()
    bar.close()
    if writer is not None:
        writer.close()
    model_path = out_dir / MODEL
    if env.is_main:
        extra = {
            "projector_q": cpu_state(model.projector_q),
            "projector_k": cpu_state(model.projector_k),
            "training": {
                "steps": step,
                "epochs": step / steps_per_epoch,
                "final_loss": last_loss,
                "n_cells": n_cells,
                "stores": [s.path.name for s in opened],
                "world_size": env.world_size,
            },
        }
        if model.predictor is not None:
            extra["predictor"] = cpu_state(model.predictor)
        save_model(model_path, model.backbone_q, model.backbone_k, to_dict(cfg), extra)
        log.info("model written to %s", model_path)
    distributed.barrier()
    return model, model_path


def build_optimizer(model: CCRL, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The paper's Adam on the query branch; the fused kernel (CPU and CUDA) when torch has it:
    one pass over the 11 M parameters instead of several, a large share of a CPU step."""
    params = model.query_parameters()
    try:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # older torch or an unsupported device
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_step(
    runner: nn.Module,
    views: CellViews,
    optimizer: torch.optim.Optimizer,
    crops: np.ndarray,
    lr: float,
    seed: int,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """One optimiser step on a batch: views on the device, CCRL loss, backward, Adam.

    Args:
        runner: the ``CCRL`` module or its DDP / DataParallel wrapper; ``runner(im_q, im_k)``
            returns the loss.
        crops: (B, S, S, 3) uint8.
        seed: seeds the augmentations and the key-batch shuffle of this step.
        amp: bf16 autocast (CUDA).

    Returns:
        The loss, detached (a NaN is the caller's to handle).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    torch.manual_seed(seed)
    x = torch.from_numpy(crops).to(device, non_blocking=True)
    im_q, im_k = views(x)
    if channels_last:
        im_q = im_q.contiguous(memory_format=torch.channels_last)
        im_k = im_k.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss = runner(im_q, im_k)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
