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
    query: torch.Tensor,
    key: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    false_negatives: int = 0,
) -> torch.Tensor:
    """Mean InfoNCE loss: cross-entropy of picking the positive among 1 + K candidates.

    An uninformative query (equal similarity to all) gives ``log(K + 1)``.
    Shapes as in :func:`info_nce_logits`. The inputs are cast to float32 (bf16 embeddings are
    accepted), and the loss is float32. Under an active autocast, as in training on CUDA with
    ``amp``, the (B, K) query-queue product still runs in the autocast dtype (matrix products are
    on autocast's bf16 list): the negatives' similarities are rounded to bf16, while the positive
    similarity, the logits and the cross-entropy stay float32.

    ``false_negatives`` > 0 leaves out, per query, the queued keys most similar to its positive
    key (false-negative elimination, Huynh et al. 2022): with a handful of cell types, a large
    share of the queue is the query's own type, and pushing those away splits the types.
    """
    logits = info_nce_logits(query.float(), key.float(), queue.float(), temperature)
    if false_negatives > 0:
        with torch.no_grad():
            nearest = (key.float() @ queue.float().t()).topk(false_negatives, dim=1).indices
        logits = logits.scatter(1, nearest + 1, float("-inf"))
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)
