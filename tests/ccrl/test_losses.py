"""InfoNCE against a NumPy implementation written from the definition, and known values."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from wsi_ccrl.ccrl.losses import (
    info_nce,
    info_nce_logits,
    proto_nce,
    prototype_temperatures,
    spherical_kmeans,
)


def numpy_info_nce(q: np.ndarray, k: np.ndarray, queue: np.ndarray, tau: float) -> float:
    """-mean_i log( exp(q_i.k_i/tau) / (exp(q_i.k_i/tau) + sum_j exp(q_i.n_j/tau)) )."""
    total = 0.0
    for qi, ki in zip(q, k, strict=True):
        pos = math.exp(float(qi @ ki) / tau)
        neg = sum(math.exp(float(qi @ n) / tau) for n in queue)
        total += -math.log(pos / (pos + neg))
    return total / len(q)


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1)


def test_matches_numpy():
    g = torch.Generator().manual_seed(0)
    q, k, queue = (unit(torch.randn(n, 8, generator=g)) for n in (5, 5, 11))
    got = info_nce(q, k, queue, 0.07).item()
    want = numpy_info_nce(q.double().numpy(), k.double().numpy(), queue.double().numpy(), 0.07)
    assert abs(got - want) < 1e-4 * max(1.0, want)


def test_hand_computed_two_dimensional_case():
    # q = (1, 0), positive (1, 0): q.k = 1; negatives (0, 1) and (-1, 0): 0 and -1; tau = 1
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    want = -math.log(math.e / (math.e + 1 + math.exp(-1)))
    assert abs(info_nce(q, k, queue, 1.0).item() - want) < 1e-6
    logits = info_nce_logits(q, k, queue, 0.5)
    assert torch.allclose(logits, torch.tensor([[2.0, 0.0, -2.0]]))


def test_uninformative_query_gives_log_k_plus_one():
    # the query is orthogonal to its key and every negative: all logits 0
    queue_size = 63
    q = torch.zeros(4, 65)
    q[:, 0] = 1.0
    k = torch.zeros(4, 65)
    k[:, 1] = 1.0
    queue = torch.zeros(queue_size, 65)
    queue[torch.arange(queue_size), torch.arange(queue_size) + 2] = 1.0
    assert abs(info_nce(q, k, queue, 0.07).item() - math.log(queue_size + 1)) < 1e-6


def test_perfect_query_has_low_loss_and_gradient_flows_to_query():
    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[-1.0, 0.0]] * 4)
    loss = info_nce(q, k, queue, 0.07)
    assert loss.item() < 1e-6
    loss.backward()
    assert q.grad is not None


def test_bf16_inputs_are_computed_in_float32():
    g = torch.Generator().manual_seed(1)
    q, k, queue = (unit(torch.randn(n, 16, generator=g)) for n in (6, 6, 20))
    full = info_nce(q, k, queue, 0.07)
    half = info_nce(q.bfloat16(), k.bfloat16(), queue.bfloat16(), 0.07)
    assert half.dtype == torch.float32
    assert abs(full.item() - half.item()) < 0.1


def test_under_autocast_only_the_queue_product_is_bf16():
    """What training on CUDA with ``amp`` computes (the docstring's account), shown with CPU
    autocast: the negatives' similarities rounded to bf16, everything else float32."""
    g = torch.Generator().manual_seed(2)
    q, k, queue = (unit(torch.randn(n, 32, generator=g)) for n in (8, 8, 256))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = info_nce(q, k, queue, 0.07)
    pos = (q * k).sum(1, keepdim=True)
    neg = (q.bfloat16() @ queue.bfloat16().t()).float()
    logits = torch.cat([pos, neg], 1) / 0.07
    want = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
    assert auto.dtype == torch.float32
    assert abs(auto.item() - want.item()) < 1e-6
    assert abs(auto.item() - info_nce(q, k, queue, 0.07).item()) < 1e-2


def test_false_negatives_drop_the_queued_keys_nearest_each_key():
    """With ``false_negatives`` = n, each query's loss is the plain InfoNCE against the queue
    without the n entries most similar to its own key (chosen per query, not per batch)."""
    g = torch.Generator().manual_seed(2)
    q, k, queue = (unit(torch.randn(n, 8, generator=g)) for n in (5, 5, 12))
    got = info_nce(q, k, queue, 0.2, false_negatives=3)
    nearest = (k @ queue.t()).topk(3, dim=1).indices
    want = np.mean(
        [
            numpy_info_nce(
                q[i : i + 1].double().numpy(),
                k[i : i + 1].double().numpy(),
                np.delete(queue.double().numpy(), nearest[i].numpy(), axis=0),
                0.2,
            )
            for i in range(5)
        ]
    )
    assert abs(got.item() - want) < 1e-4
    assert got.item() < info_nce(q, k, queue, 0.2).item()  # fewer negatives, lower loss


def test_nn_positives_average_the_cross_entropy_over_the_key_and_its_neighbours():
    """With ``nn_positives`` = n, each query scores -mean log p over its key and the n queued keys
    nearest that key (SupCon's L_out), against the whole queue."""
    g = torch.Generator().manual_seed(3)
    q, k, queue = (unit(torch.randn(n, 8, generator=g)) for n in (4, 4, 10))
    got = info_nce(q, k, queue, 0.5, nn_positives=2).item()
    nearest = (k @ queue.t()).topk(2, dim=1).indices
    total = 0.0
    for i in range(4):
        logits = torch.cat([(q[i] * k[i]).sum().view(1), queue @ q[i]]) / 0.5
        log_p = logits.double().log_softmax(0)
        total += -(log_p[0] + log_p[1 + nearest[i]].sum()).item() / 3
    assert abs(got - total / 4) < 1e-5
    # with positives first and the false negatives after them: the next nearest leave the queue
    both = info_nce(q, k, queue, 0.5, false_negatives=4, nn_positives=2).item()
    assert both < got


def test_spherical_kmeans_finds_separated_clusters_and_their_concentration():
    g = torch.Generator().manual_seed(0)
    centres = unit(torch.randn(3, 16, generator=g))
    x = unit(centres.repeat_interleave(50, 0) + 0.05 * torch.randn(150, 16, generator=g))
    torch.manual_seed(0)
    centroids, assign, density = spherical_kmeans(x, 3)
    truth = torch.arange(3).repeat_interleave(50)
    for c in range(3):  # each found cluster is one true cluster
        assert len(set(truth[assign == c].tolist())) == 1
    assert torch.allclose(centroids.norm(dim=1), torch.ones(3))
    for c in range(3):  # PCL's concentration: mean distance to the members' mean / log(n + 10)
        members = x[assign == c].double()
        dist = (members - members.mean(0)).norm(dim=1).mean()
        assert abs(float(density[c]) - float(dist / math.log(len(members) + 10))) < 1e-5


def test_proto_nce_matches_numpy_of_the_prototypes():
    g = torch.Generator().manual_seed(1)
    queue = unit(torch.randn(40, 8, generator=g))
    q, k = unit(torch.randn(6, 8, generator=g)), unit(torch.randn(6, 8, generator=g))
    torch.manual_seed(5)
    got = proto_nce(q, k, queue, (3, 5), 0.2).item()
    torch.manual_seed(5)  # the same centroids, then the cross-entropy by hand
    want = 0.0
    for n in (3, 5):
        centroids, _, density = spherical_kmeans(queue, n)
        d = np.clip(density.double().numpy(), *np.percentile(density.double().numpy(), [10, 90]))
        c, phi = centroids.double().numpy(), 0.2 * d / d.mean()
        for qi, ki in zip(q.double().numpy(), k.double().numpy(), strict=True):
            logits = (c @ qi) / phi
            target = int(np.argmax(c @ ki))
            want -= (logits[target] - np.log(np.exp(logits).sum())) / (len(q) * 2)
    assert abs(got - want) < 1e-4 * max(1.0, want)


def test_prototype_temperatures_average_to_tau_and_survive_tight_clusters():
    density = np.array([0.01, 0.02, 0.03, 0.04, 1.0])
    clipped = np.clip(density, *np.percentile(density, [10, 90]))  # 1.0 -> 0.616, 0.01 -> 0.014
    phi = prototype_temperatures(torch.tensor(density, dtype=torch.float32), 0.2)
    assert np.allclose(phi.numpy(), 0.2 * clipped / clipped.mean(), atol=1e-6)
    assert torch.allclose(prototype_temperatures(torch.zeros(4), 0.2), torch.full((4,), 0.2))
