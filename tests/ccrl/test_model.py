"""The CCRL module: momentum update, queue, batch-shuffled keys, DataParallel, learning."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from wsi_ccrl.ccrl import distributed
from wsi_ccrl.ccrl.augment import CellViews
from wsi_ccrl.ccrl.model import CCRL
from wsi_ccrl.config import AugmentConfig
from wsi_ccrl.io.store import CellStore


def small_model(**kwargs) -> CCRL:
    torch.manual_seed(0)
    args = {"stem": "imagenet", "queue_size": 8, "momentum": 0.9}
    return CCRL(**{**args, **kwargs})


def test_shapes_and_frozen_key_encoder():
    model = small_model()
    assert model.queue.shape == (8, 64)
    assert torch.allclose(model.queue.norm(dim=1), torch.ones(8))
    assert all(not p.requires_grad for p in model.momentum_parameters())
    assert all(p.requires_grad for p in model.query_parameters())
    # the key encoder starts as a copy of the query encoder
    for (_, q), (_, k) in zip(
        model.backbone_q.named_parameters(), model.backbone_k.named_parameters(), strict=True
    ):
        assert torch.equal(q, k)
    loss = model(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    assert loss.ndim == 0
    assert CCRL(stem="imagenet", use_predictor=False).predictor is None


def test_heads_are_the_papers_sizes():
    """Projector 512 -> 128 -> 64 (Linear-BN-ReLU-Linear), predictor 64 -> 32 -> 64."""
    shapes = {n: tuple(p.shape) for n, p in CCRL().named_parameters()}
    for head in ("projector_q", "projector_k"):
        assert shapes[f"{head}.0.weight"] == (128, 512)
        assert shapes[f"{head}.1.weight"] == (128,)  # BatchNorm1d(128)
        assert shapes[f"{head}.3.weight"] == (64, 128)
        assert shapes[f"{head}.3.bias"] == (64,)
    assert shapes["predictor.0.weight"] == (32, 64)
    assert shapes["predictor.1.weight"] == (32,)
    assert shapes["predictor.3.weight"] == (64, 32)
    assert shapes["predictor.3.bias"] == (64,)


def key_side(name: str) -> str | None:
    """The momentum copy of a query parameter, by name: backbone_q.* <-> backbone_k.*,
    projector_q.* <-> projector_k.*; the predictor has no key side."""
    module, rest = name.split(".", 1)
    pairs = {"backbone_q": "backbone_k", "projector_q": "projector_k"}
    return f"{pairs[module]}.{rest}" if module in pairs else None


def test_momentum_update_formula():
    """theta_k <- m theta_k + (1 - m) theta_q for the named pairs; nothing else moves."""
    model = small_model()
    with torch.no_grad():
        for p in model.query_parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        n for n in before if n.split(".")[0] in ("backbone_q", "projector_q", "predictor")
    }
    keys = {key_side(n): n for n in trained if key_side(n) is not None}
    assert set(keys) == {n for n in before if n.split(".")[0] in ("backbone_k", "projector_k")}
    assert not any(n.startswith("predictor") for n in keys.values())
    model.momentum_update(0.9)
    after = dict(model.named_parameters())
    for name, value in before.items():
        if name in keys:
            expect = 0.9 * value + 0.1 * before[keys[name]]
            assert torch.allclose(after[name], expect, atol=1e-6), name
        else:
            assert torch.equal(after[name], value), name  # the query side is not touched
    model.momentum_update(0.0)  # m = 0 copies the query encoder
    for name, query_name in keys.items():
        assert torch.equal(after[name], before[query_name]), name


def test_forward_is_infonce_against_key_and_queue():
    """The loss, written out: -mean log(e^(q.k/t) / (e^(q.k/t) + sum_n e^(q.n/t)))."""
    model = small_model(momentum=0.0, shuffle_bn=False)  # m = 0: keys from the query encoder
    g = torch.Generator().manual_seed(3)
    im_q, im_k = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g)
    queue = model.queue.clone().double()
    loss = model(im_q, im_k)
    with torch.no_grad():  # BatchNorm in training mode: batch statistics, as in forward
        q = model.predictor(model.projector_q(model.backbone_q(im_q))).double()
        k = model.projector_q(model.backbone_q(im_k)).double()
    q, k, t = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True), model.temperature
    want = 0.0
    for qi, ki in zip(q, k, strict=True):
        pos = math.exp(float(qi @ ki) / t)
        neg = sum(math.exp(float(qi @ n) / t) for n in queue)
        want -= math.log(pos / (pos + neg)) / len(q)
    assert abs(loss.item() - want) < 1e-4 * max(1.0, want)


def test_queue_enqueue_and_wrap_around():
    model = small_model(queue_size=5, proj_dim=2)
    first = torch.arange(6.0).view(3, 2)
    model.enqueue(first)
    assert int(model.queue_ptr) == 3
    assert torch.equal(model.queue[:3], first)
    second = 10 + torch.arange(6.0).view(3, 2)
    model.enqueue(second)  # rows 3, 4, then wraps to 0
    assert int(model.queue_ptr) == 1
    assert torch.equal(model.queue[3:5], second[:2])
    assert torch.equal(model.queue[0], second[2])
    assert torch.equal(model.queue[1:3], first[1:])
    model.enqueue(torch.ones(7, 2))  # more keys than slots: the newest fill the queue
    assert torch.equal(model.queue, torch.ones(5, 2)) and int(model.queue_ptr) == 0


def test_forward_enqueues_keys_and_updates_key_encoder():
    model = small_model()
    before = [p.clone() for p in model.momentum_parameters()]
    with torch.no_grad():
        for p in model.query_parameters():
            p.add_(0.1)
    model(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    assert int(model.queue_ptr) == 4
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.momentum_parameters(), strict=True)
    )


def test_shuffled_keys_come_back_in_order():
    """Shuffle BN permutes the key batch and undoes it: the same keys as without shuffling."""
    model = small_model()
    x = torch.rand(8, 3, 32, 32)
    model.shuffle_bn = True
    shuffled = model.encode_key(x)
    model.shuffle_bn = False
    plain = model.encode_key(x)
    assert torch.allclose(shuffled, plain, atol=1e-5)


def test_data_parallel_keeps_weights_in_the_module():
    """nn.DataParallel on the CPU just calls the module: the wrapped path runs, state is ours."""
    model = small_model()
    keys = list(model.state_dict())
    runner = distributed.DataParallelCCRL(model, None)
    assert isinstance(runner.backbone_q, nn.DataParallel)
    assert runner.backbone_k.module is model.backbone_k
    assert list(model.state_dict()) == keys  # no "module." prefixes, no extra entries
    opt = torch.optim.Adam(model.query_parameters(), lr=1e-2)
    before = model.backbone_k.stem[0].weight.clone()
    loss = runner(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    loss.backward()
    opt.step()
    assert model.backbone_q.stem[0].weight.grad is not None
    runner(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    assert not torch.equal(before, model.backbone_k.stem[0].weight)
    assert int(model.queue_ptr) == 0  # 8 keys went into the 8-slot queue


def test_loss_falls_on_real_cells(consep_store):
    """20 Adam steps on real CoNSeP crops with the real views lower the InfoNCE loss."""
    crops = np.asarray(CellStore.open(consep_store)["crops"][:16])
    torch.manual_seed(0)
    model = CCRL(stem="imagenet", queue_size=16, momentum=0.9, use_predictor=True)
    views = CellViews(AugmentConfig(), 32)
    opt = torch.optim.Adam(model.query_parameters(), lr=1e-3, fused=True)
    x = torch.from_numpy(crops[:16])
    losses = []
    for step in range(20):
        im_q, im_k = views(x, seed=step)
        loss = model(im_q, im_k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[1:6]) - 0.1, losses
