"""Where work runs: one device resolver for every command (segment, train, label, benchmark)."""

from __future__ import annotations

import torch

from wsi_ccrl.errors import WsiCcrlError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is the first CUDA GPU when one is visible, else the CPU; ``cuda``/``cuda:N`` must
    exist (one clear error otherwise, naming what is visible)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise WsiCcrlError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise WsiCcrlError(f"--device {device}: no CUDA GPU is visible (use --device cpu)")
        if resolved.index is not None and resolved.index >= count:
            raise WsiCcrlError(f"--device {device}: only {count} CUDA GPU(s) visible")
    elif resolved.type != "cpu":
        raise WsiCcrlError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    return resolved
