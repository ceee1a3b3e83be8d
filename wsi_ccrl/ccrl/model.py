"""The CCRL module, after MoCo's ``builder.py``: two encoders, a queue, a momentum update.

Query branch: backbone -> projector -> predictor. Key branch: momentum copies of the backbone and
projector, updated as theta_k <- m * theta_k + (1 - m) * theta_q, never by gradients. Keys are
L2-normalised and enqueued after each step (gathered from every rank under DDP, so the queue is
the same everywhere). No ``.cuda()`` calls: everything follows the input's device.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from wsi_ccrl.ccrl import distributed
from wsi_ccrl.ccrl.backbone import PreActResNet18
from wsi_ccrl.ccrl.heads import mlp_head
from wsi_ccrl.ccrl.losses import info_nce
from wsi_ccrl.config import TrainConfig, settings_for


class CCRL(nn.Module):
    """Contrastive cell representation learning (Nakhli et al.).

    Defaults are ``TrainConfig``'s (the paper's), the one place they are set.

    Args:
        stem: backbone stem, ``small`` (32 px crops) or ``imagenet``.
        proj_hidden, proj_dim: projector 512 -> proj_hidden -> proj_dim.
        pred_hidden: predictor proj_dim -> pred_hidden -> proj_dim.
        use_predictor: False for the "no prediction head" ablation.
        queue_size: K, the number of queued negatives.
        temperature: InfoNCE tau.
        momentum: m of the key-encoder update.
        shuffle_bn: shuffle the key batch across devices so BatchNorm cannot leak positives.
    """

    def __init__(
        self,
        stem: str = TrainConfig.stem,
        proj_hidden: int = TrainConfig.proj_hidden,
        proj_dim: int = TrainConfig.proj_dim,
        pred_hidden: int = TrainConfig.pred_hidden,
        use_predictor: bool = TrainConfig.use_predictor,
        queue_size: int = TrainConfig.queue_size,
        temperature: float = TrainConfig.temperature,
        momentum: float = TrainConfig.momentum,
        shuffle_bn: bool = TrainConfig.shuffle_bn,
    ):
        super().__init__()
        self.temperature = temperature
        self.momentum = momentum
        self.shuffle_bn = shuffle_bn
        feat = PreActResNet18.feature_dim
        self.backbone_q = PreActResNet18(stem)
        self.projector_q = mlp_head(feat, proj_hidden, proj_dim)
        self.predictor = mlp_head(proj_dim, pred_hidden, proj_dim) if use_predictor else None
        self.backbone_k = copy.deepcopy(self.backbone_q)
        self.projector_k = copy.deepcopy(self.projector_q)
        for p in self.momentum_parameters():
            p.requires_grad_(False)
        queue = F.normalize(torch.randn(queue_size, proj_dim), dim=1)
        self.register_buffer("queue", queue)  # KxD
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> CCRL:
        """Build from a ``TrainConfig`` (every argument above is the field of that name)."""
        return cls(**settings_for(cls, cfg))

    # ------------------------------------------------------------------ momentum
    def query_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser trains (query backbone, projector, predictor)."""
        mods = [self.backbone_q, self.projector_q] + ([self.predictor] if self.predictor else [])
        return [p for m in mods for p in m.parameters()]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(query module, its momentum copy)."""
        return [(self.backbone_q, self.backbone_k), (self.projector_q, self.projector_k)]

    def momentum_parameters(self) -> list[nn.Parameter]:
        return [p for _, k in self.momentum_pairs() for p in k.parameters()]

    @torch.no_grad()
    def momentum_update(self, m: float | None = None) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q, for every momentum pair."""
        m = self.momentum if m is None else m
        q = [p for qm, _ in self.momentum_pairs() for p in qm.parameters()]
        k = self.momentum_parameters()
        torch._foreach_mul_(k, m)
        torch._foreach_add_(k, q, alpha=1.0 - m)

    # ------------------------------------------------------------------ queue
    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest queue entries with ``keys`` (B, D) from every rank (FIFO, wraps)."""
        keys = distributed.all_gather_cat(keys.float())
        k, n = self.queue.shape[0], keys.shape[0]
        if n >= k:
            self.queue.copy_(keys[-k:])
            self.queue_ptr.zero_()
            return
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % k
        self.queue[idx] = keys
        self.queue_ptr.copy_((self.queue_ptr + n) % k)

    # ------------------------------------------------------------------ encoders
    def encode_query(self, im_q: torch.Tensor, backbone: nn.Module | None = None) -> torch.Tensor:
        """(B, 3, S, S) -> (B, D) L2-normalised prediction (or projection) of the query view.

        ``backbone`` runs ``backbone_q`` (a DataParallel wrapper of it); default ``backbone_q``."""
        backbone = self.backbone_q if backbone is None else backbone

        z = self.projector_q(backbone(im_q))
        z = z if self.predictor is None else self.predictor(z)
        return F.normalize(z.float(), dim=1)

    @torch.no_grad()
    def encode_key(self, im_k: torch.Tensor, backbone: nn.Module | None = None) -> torch.Tensor:
        """(B, 3, S, S) -> (B, D) L2-normalised momentum projection, BatchNorm batch shuffled.

        ``backbone`` runs ``backbone_k`` (a DataParallel wrapper of it); default ``backbone_k``."""
        backbone = self.backbone_k if backbone is None else backbone

        def encode(x: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.projector_k(backbone(x)).float(), dim=1)

        if not self.shuffle_bn:
            return encode(im_k)
        im_k, unshuffle = self._shuffle(im_k)
        return self._unshuffle(encode(im_k), unshuffle)

    def _shuffle(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Permute the batch across every rank's samples (MoCo's shuffle BN)."""
        if distributed.world_size() == 1:
            perm = torch.randperm(x.shape[0], device=x.device)
            return x[perm], torch.argsort(perm)
        gathered = distributed.all_gather_cat(x)  # (world*B)x3xSxS
        perm = distributed.broadcast_(torch.randperm(gathered.shape[0], device=x.device))
        b, r = x.shape[0], distributed.rank()
        mine = perm.view(-1, b)[r]
        return gathered[mine], torch.argsort(perm)

    def _unshuffle(self, k: torch.Tensor, unshuffle: torch.Tensor) -> torch.Tensor:
        if distributed.world_size() == 1:
            return k[unshuffle]
        gathered = distributed.all_gather_cat(k)
        b, r = k.shape[0], distributed.rank()
        return gathered[unshuffle.view(-1, b)[r]]

    # ------------------------------------------------------------------ step
    def forward(
        self,
        im_q: torch.Tensor,
        im_k: torch.Tensor,
        backbones: tuple[nn.Module, nn.Module] | None = None,
    ) -> torch.Tensor:
        """One CCRL step's loss: update the key encoder, score, enqueue the keys.

        Args:
            im_q: (B, 3, S, S) float query views (global).
            im_k: (B, 3, S, S) float key views (local).
            backbones: what runs (backbone_q, backbone_k), e.g. their DataParallel wrappers
                (``distributed.DataParallelCCRL``); default the backbones themselves.

        Returns:
            The InfoNCE loss (scalar) of the queries against their keys and the queue.
        """
        run_q, run_k = backbones or (None, None)
        q = self.encode_query(im_q, run_q)  # BxD
        with torch.no_grad():
            self.momentum_update()
            k = self.encode_key(im_k, run_k)  # BxD
        loss = info_nce(q, k, self.queue.clone().detach(), self.temperature)
        self.enqueue(k)
        return loss
