"""The released model file (``RUN_DIR/model.pt``): plain tensors and a config dict.

It loads with ``torch.load(weights_only=True)`` (no pickled code), holds both backbones so that
``label`` can embed with the momentum encoder (the paper's "ensembling") or the query encoder (the
ablation), and records the crop size the model was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_ccrl.ccrl.backbone import PreActResNet18
from wsi_ccrl.config import STEMS, LabelConfig
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.runtime import atomic_save_torch, read_torch_file

MODEL_FORMAT = "wsi-ccrl-model"
MODEL_VERSION = 1
ENCODERS = ("momentum", "query")


def save_model(
    path: str | Path,
    query_backbone: nn.Module,
    momentum_backbone: nn.Module,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model.pt atomically (temp name, then rename).

    Args:
        config: the resolved training config as plain Python (``config.to_dict``); must hold
            ``crop_size`` and ``stem``.
        extra: further tensors or plain values (e.g. projector weights, training summary).
    """
    path = Path(path)
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "config": config,
        "crop_size": int(config["crop_size"]),
        "stem": str(config["stem"]),
        "embed_dim": PreActResNet18.feature_dim,
        "query_backbone": {k: v.detach().cpu() for k, v in query_backbone.state_dict().items()},
        "momentum_backbone": {
            k: v.detach().cpu() for k, v in momentum_backbone.state_dict().items()
        },
        **(extra or {}),
    }
    return atomic_save_torch(payload, path)


def load_model_file(path: str | Path) -> dict[str, Any]:
    """The raw payload, checked; one clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise WsiCcrlError(f"model file not found: {path}")
    return load_checked(
        path, MODEL_FORMAT, "model file", "expected the model.pt of `wsi-ccrl train`"
    )


def load_checked(path: str | Path, fmt: str, what: str, hint: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a payload whose ``format`` must be ``fmt``.

    Any failure is one clear line naming ``what`` the file should be and ``hint`` (what to do).
    """
    payload = read_torch_file(path, f"wsi-ccrl {what}", hint)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise WsiCcrlError(f"{path} is not a wsi-ccrl {what} ({hint})")
    return payload


def load_backbone(
    path: str | Path, encoder: str = LabelConfig.encoder, device: str | torch.device = "cpu"
) -> tuple[PreActResNet18, dict[str, Any]]:
    """The chosen backbone in eval mode, and the payload's metadata (config, crop_size, ...)."""
    if encoder not in ENCODERS:
        raise WsiCcrlError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    payload = load_model_file(path)
    if payload["stem"] not in STEMS:
        raise WsiCcrlError(
            f"{path}: trained with stem {payload['stem']!r}, which this version no longer has"
            f" (only {', '.join(STEMS)}); train again"
        )
    backbone = PreActResNet18(stem=payload["stem"])
    backbone.load_state_dict(payload[f"{encoder}_backbone"])
    backbone.to(device).eval()
    meta = {k: v for k, v in payload.items() if not k.endswith("_backbone")}
    return backbone, meta
