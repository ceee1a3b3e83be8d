"""InfoNCE against a queue of negatives (MoCo), as a plain function of embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce_logits(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Similarities of each query to its positive key (column 0) and to every queued negative.

    Args:
        query: (B, D) L2-normalised query embeddings.
        key: (B, D) L2-normalised positive keys (no gradient needed).
        queue: (K, D) L2-normalised negatives.
        temperature: softmax temperature tau.

    Returns:
        (B, 1 + K) logits divided by ``temperature``.
    """
    pos = (query * key).sum(dim=1, keepdim=True)  # Bx1
    neg = query @ queue.t()  # BxK
    return torch.cat([pos, neg], dim=1) / temperature


def info_nce(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean InfoNCE loss: cross-entropy of picking the positive among 1 + K candidates.

    An uninformative query (equal similarity to all) gives ``log(K + 1)``.
    Shapes as in :func:`info_nce_logits`. The inputs are cast to float32 (bf16 embeddings are
    accepted), and the loss is float32. Under an active autocast, as in training on CUDA with
    ``amp``, the (B, K) query-queue product still runs in the autocast dtype (matrix products are
    on autocast's bf16 list): the negatives' similarities are rounded to bf16, while the positive
    similarity, the logits and the cross-entropy stay float32.
    """
    logits = info_nce_logits(query.float(), key.float(), queue.float(), temperature)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)
