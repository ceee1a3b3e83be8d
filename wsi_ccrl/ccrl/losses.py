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


@torch.no_grad()
def spherical_kmeans(
    x: torch.Tensor, k: int, iters: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K-means of L2-normalised rows by cosine similarity, seeded from k distinct rows (the
    global RNG, which the trainer seeds per step).

    Returns:
        (k, D) L2-normalised centroids, (N,) the cluster of each row, and (k,) each cluster's
        PCL concentration: mean Euclidean distance of its members to their (unnormalised) mean
        over log(size + 10); a cluster of at most one member gets the largest of the others.
    """
    centroids = x[torch.randperm(x.shape[0], device=x.device)[:k]].clone()
    for _ in range(iters):
        assign = (x @ centroids.t()).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        centroids = torch.where(counts > 0, F.normalize(sums, dim=1), centroids)
    assign = (x @ centroids.t()).argmax(dim=1)
    counts = torch.bincount(assign, minlength=k).float()
    means = torch.zeros_like(centroids).index_add_(0, assign, x) / counts.clamp(min=1).unsqueeze(1)
    dist = (x - means[assign]).norm(dim=1)
    spread = torch.zeros(k, device=x.device).index_add_(0, assign, dist) / counts.clamp(min=1)
    density = spread / torch.log(counts + 10.0)
    real = counts > 1
    fill = density[real].max() if real.any() else torch.ones((), device=x.device)
    return centroids, assign, torch.where(real, density, fill)


def prototype_temperatures(density: torch.Tensor, temperature: float) -> torch.Tensor:
    """PCL's per-prototype temperatures: concentrations clipped to their 10th-90th percentiles,
    scaled to a mean of ``temperature`` (all-equal, e.g. zero, concentrations give it to all)."""
    lo, hi = torch.quantile(density, torch.tensor([0.1, 0.9], device=density.device))
    density = density.clamp(lo, hi).clamp(min=1e-8)
    return temperature * density / density.mean()


def proto_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    queue: torch.Tensor,
    n_clusters: tuple[int, ...],
    temperature: float,
) -> torch.Tensor:
    """PCL's ProtoNCE (Li et al. 2021) with prototypes of the queue: the mean, over the cluster
    counts, of the cross-entropy of picking the prototype of the query's key among all of them.

    The prototypes are spherical K-means centroids of the queued keys, recomputed every step
    (~35 ms for 8, 16 and 32 clusters of 2048 keys on one CPU thread, BENCHMARKS.md); each
    prototype's similarity is divided by its temperature (:func:`prototype_temperatures`): loose
    clusters get a softer softmax. PCL clusters the whole dataset once an epoch; the queue is a
    fresh sample of it that needs no pass over the data. Shapes as in :func:`info_nce_logits`.
    """
    losses = []
    for k in n_clusters:
        centroids, _, density = spherical_kmeans(queue.float(), k)
        phi = prototype_temperatures(density, temperature)
        target = (key.float() @ centroids.t()).argmax(dim=1)
        logits = (query.float() @ centroids.t()) / phi
        losses.append(F.cross_entropy(logits, target))
    return torch.stack(losses).mean()
