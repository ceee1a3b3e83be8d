"""Training checkpoints: what a run needs to continue exactly, written atomically, and the
check that a resumed run is the same run (config, data) before its state is restored."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wsi_ccrl.ccrl.model import CCRL
from wsi_ccrl.ccrl.model_io import load_checked
from wsi_ccrl.config import TrainConfig, drop_retired, to_dict
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.runtime import atomic_save_torch

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "wsi-ccrl-checkpoint"
# settings that may change when a run is resumed: they do not change what one step computes
# (not ``epochs``: the lr schedule is spread over them; ``max_steps`` stops a run early instead)
RESUME_MAY_CHANGE = (
    "max_steps",
    "device",
    "gpus",
    "num_workers",
    "checkpoint_every",
    "eval_every",
    "eval_max_cells",
)


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict, detached, on the CPU."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (saved as is)
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))


def save_checkpoint(
    path: Path,
    model: CCRL,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    steps_per_epoch: int,
    fingerprint: list,
) -> None:
    """Everything needed to continue exactly, written atomically (temp file, then rename).

    ``step`` is the global step, which also indexes the lr schedule (the scheduler's state).
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": cpu_state(model),  # both encoders, heads, queue and pointer
        "optimizer": optimizer.state_dict(),
        "step": step,
        "epoch": step // steps_per_epoch,  # completed epochs
        "steps_per_epoch": steps_per_epoch,
        "config": to_dict(cfg),
        "data": fingerprint,
        "rng": rng_state(),
    }
    atomic_save_torch(payload, path)


def load_checkpoint(
    path: Path,
    model: CCRL,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    fingerprint: list,
    device: torch.device,
) -> int:
    """Restore a run's state in place; returns the global step. Refuses a different setup.

    A checkpoint of an older build loads when its retired settings hold their no-op values."""
    payload = load_checked(
        path,
        CHECKPOINT_FORMAT,
        "checkpoint",
        "expected train's checkpoint.pt; --no-resume starts over",
    )
    old, new = drop_retired(payload["config"], str(path.parent)), to_dict(cfg)
    for key in new:
        if key not in RESUME_MAY_CHANGE and old.get(key) != new[key]:
            why = " (the lr schedule spans the epochs)" if key == "epochs" else ""
            raise ConfigError(
                f"{path.parent}: train.{key} was {old.get(key)!r} in the checkpoint, now "
                f"{new[key]!r}{why}; use the same config or --no-resume to start over"
            )
    if payload["data"] != fingerprint:
        raise WsiCcrlError(
            f"{path.parent} was trained on other stores ({payload['data']}); "
            "use the same --data or --no-resume"
        )
    # older builds kept a queue-wrapped flag for a retired loss term
    model.load_state_dict({k: v for k, v in payload["model"].items() if k != "queue_full"})
    optimizer.load_state_dict(payload["optimizer"])
    set_rng_state(payload["rng"])
    model.to(device)
    return int(payload["step"])
