"""InfoNCE against a NumPy implementation written from the definition, and known values."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from wsi_ccrl.ccrl.losses import info_nce, info_nce_logits


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
