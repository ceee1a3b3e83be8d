"""Per-step schedules computed up front (as in DINO): one value per optimiser step.

Below every package: both trainers (CCRL in ``ccrl/train``, the nucleus U-Net in
``nuclei/train``) take their learning rate from here."""

from __future__ import annotations

import numpy as np


def cosine_schedule(
    base_value: float,
    final_value: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """Linear warm-up from ``start_warmup_value`` to ``base_value``, then cosine to ``final_value``.

    ``warmup_epochs`` may be a fraction (of ``steps_per_epoch``, rounded to whole steps).

    Returns:
        (epochs * steps_per_epoch,) float64; entry ``i`` is the value at global step ``i``.
    """
    total = epochs * steps_per_epoch
    warmup_steps = min(round(warmup_epochs * steps_per_epoch), total)
    warmup = np.linspace(start_warmup_value, base_value, warmup_steps, endpoint=False)
    rest = np.arange(total - warmup_steps)
    cosine = final_value + 0.5 * (base_value - final_value) * (
        1 + np.cos(np.pi * rest / max(len(rest), 1))
    )
    return np.concatenate([warmup, cosine]).astype(np.float64)
