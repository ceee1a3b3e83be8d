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
    nn_positives: int = 0,
) -> torch.Tensor:
    """Mean InfoNCE loss: cross-entropy of picking the positive among 1 + K candidates.

    An uninformative query (equal similarity to all) gives ``log(K + 1)``.
    Shapes as in :func:`info_nce_logits`. The inputs are cast to float32 (bf16 embeddings are
    accepted), and the loss is float32. Under an active autocast, as in training on CUDA with
    ``amp``, the (B, K) query-queue product still runs in the autocast dtype (matrix products are
    on autocast's bf16 list): the negatives' similarities are rounded to bf16, while the positive
    similarity, the logits and the cross-entropy stay float32.

    With a handful of cell types a large share of the queue is the query's own type, and pushing
    those away splits the types. Two remedies, both ranked by similarity to the query's positive
    key: ``nn_positives`` > 0 counts its nearest queued keys as positives too (the mean of their
    cross-entropies with the key's, SupCon's L_out, with the neighbours of NNCLR / MSF);
    ``false_negatives`` = n > 0 counts none of its n nearest queued keys as a negative: those
    beyond the ``nn_positives`` leave the softmax (false-negative elimination, Huynh et al. 2022).
    """
    logits = info_nce_logits(query.float(), key.float(), queue.float(), temperature)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    ranked = max(false_negatives, nn_positives)
    if ranked == 0:
        return F.cross_entropy(logits, labels)
    with torch.no_grad():
        nearest = (key.float() @ queue.float().t()).topk(ranked, dim=1).indices + 1
    if false_negatives > nn_positives:
        logits = logits.scatter(1, nearest[:, nn_positives:], float("-inf"))
    log_p = logits.log_softmax(dim=1)
    positives = torch.cat([log_p[:, :1], log_p.gather(1, nearest[:, :nn_positives])], dim=1)
    return -positives.mean()
