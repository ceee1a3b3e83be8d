"""Process-group helpers that are no-ops in a single process.

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with them the same ``wsi-ccrl
train`` command runs DistributedDataParallel (gloo on the CPU, nccl on CUDA). Without them every
helper here returns its input unchanged, so the training code has one path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect() -> DistEnv:
    """The job layout from torchrun's environment variables (one process when they are absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistEnv(world, rank, local)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device_type: str) -> DistEnv:
    """Join the process group when launched by torchrun; nccl for CUDA, gloo otherwise."""
    env = detect()
    if env.distributed and not is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend)
    return env


def teardown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


@torch.no_grad()
def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (B, ...) from every rank along dim 0, rank order; no gradient."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In place: every rank gets rank ``src``'s values."""
    if world_size() > 1:
        dist.broadcast(tensor, src)
    return tensor


@torch.no_grad()
def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Make BatchNorm statistics (and other buffers) identical on every rank before saving."""
    if world_size() > 1:
        for buf in module.buffers():
            dist.broadcast(buf, src)


class DataParallelCCRL(nn.Module):
    """Runs a CCRL module's two backbones under ``nn.DataParallel`` over ``device_ids``.

    The weights, the momentum update and the queue stay those of ``model`` (its state_dict has
    no ``module.`` prefixes); only the backbone passes are split across the GPUs.
    """

    def __init__(self, model: nn.Module, device_ids: list[int] | None):
        super().__init__()
        self.model = model
        self.backbone_q = nn.DataParallel(model.backbone_q, device_ids=device_ids)
        self.backbone_k = nn.DataParallel(model.backbone_k, device_ids=device_ids)

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> torch.Tensor:
        return self.model(im_q, im_k, (self.backbone_q, self.backbone_k))


def all_reduce_mean(value: float, device: torch.device) -> float:
    """The mean of a scalar over ranks (for logging)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
