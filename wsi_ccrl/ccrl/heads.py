"""Projection and prediction heads (MoCo v2 / BYOL style two-layer MLPs)."""

from __future__ import annotations

from torch import nn


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear-BN-ReLU-Linear: (B, in_dim) -> (B, out_dim).

    CCRL's projector is ``mlp_head(512, 128, 64)`` and its predictor ``mlp_head(64, 32, 64)``.
    """
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )
