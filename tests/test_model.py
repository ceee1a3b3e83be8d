"""The CCRL module: momentum update, queue, batch-shuffled keys, DataParallel, learning."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from wsi_ccrl.augment import CellViews
from wsi_ccrl.config import AugmentConfig
from wsi_ccrl.model import CCRL
from wsi_ccrl.store import CellStore


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
    loss, logits = model(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    assert logits.shape == (4, 9) and loss.ndim == 0
    assert CCRL(stem="imagenet", use_predictor=False).predictor is None


def test_momentum_update_formula():
    model = small_model()
    with torch.no_grad():
        for p in model.query_parameters():
            p.add_(torch.randn_like(p))
    qs = [p.clone() for m, _ in model.momentum_pairs() for p in m.parameters()]
    ks = [p.clone() for p in model.momentum_parameters()]
    model.momentum_update(0.9)
    for q, k, new in zip(qs, ks, model.momentum_parameters(), strict=True):
        assert torch.allclose(new, 0.9 * k + 0.1 * q, atol=1e-6)
    model.momentum_update(0.0)  # m = 0 copies the query encoder
    for q, new in zip(qs, model.momentum_parameters(), strict=True):
        assert torch.allclose(new, q)


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
    model.data_parallel(None)
    assert isinstance(model._runners["q"], nn.DataParallel)
    assert list(model.state_dict()) == keys  # no "module." prefixes, no extra entries
    opt = torch.optim.Adam(model.query_parameters(), lr=1e-2)
    before = model.backbone_k.stem[0].weight.clone()
    loss, _ = model(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    loss.backward()
    opt.step()
    assert model.backbone_q.stem[0].weight.grad is not None
    model(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
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
        loss, _ = model(im_q, im_k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[1:6]) - 0.1, losses
