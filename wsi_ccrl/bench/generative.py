"""The paper's two generative baselines (Table 2), trained from scratch on the train split's crops.

One file of ~370 lines on purpose: the two generative baselines share their settings, data,
progress, encoding helpers and the fit/transform interface.

- ``dcae``: a deep convolutional auto-encoder, after the DCAE of Vununu et al. for cell images:
  three 4x4 stride-2 conv blocks (32, 64, 128 channels) to a 64-d linear bottleneck, a mirrored
  transposed-conv decoder with a sigmoid output, MSE reconstruction of [0, 1] pixels, Adam(1e-3).
  Features: the bottleneck code.
- ``infogan``: InfoGAN (Chen et al., 2016) as Hu et al. (2018, "Unsupervised learning for
  cell-level visual representation in histopathology images with generative adversarial
  networks") used it for cells: a DCGAN generator and discriminator for [-1, 1] crops, and a Q head
  on the discriminator's shared trunk that recovers the generator's latent codes: 62 noise
  dimensions, one 10-way categorical code and 2 continuous codes in [-1, 1] (InfoGAN's MNIST
  setting; a fixed default, never set from the dataset's classes). The mutual-information lower
  bound (cross-entropy of the categorical code plus the unit-variance Gaussian log-likelihood of
  the continuous ones, weighted 0.1 as InfoGAN advises for continuous codes) is minimised by both
  the generator and the discriminator/Q side, as in the original InfoGAN code. Non-saturating GAN
  loss, Adam(2e-4, betas (0.5, 0.999)), 32/64/128-channel convs in both networks.
  Features: the trunk's last hidden layer (128-d), the layer the Q head reads. Hu et al. assign a
  cell to the argmax of Q's categorical posterior, a linear-softmax read-out of this layer; the
  benchmark's protocol needs vectors for K-means with k = number of classes (not 10), so we take
  the layer itself, as DCGAN-style GAN representations are usually taken.

Sizes and step counts are fixed (never tuned on scores) to fit about 2 minutes of training each
on the 2-core CPU the quick benchmark runs on, whatever the number of train cells: there, with the
machine nearly idle (load ~1), a training step took 114 ms for the DCAE (batch 128) and 113 ms for
the InfoGAN (batch 64), so ~115 s for each one's 1,000 steps; fitting them on the 14,405 crops of
CoNSeP train tiles 1-20 while two other trainings shared the 2 cores (load ~4) took 654 s and
568 s. Crops of any square side that is a multiple of 8 work (the networks go down to side / 8).
Training is deterministic from ``seed`` on the CPU: weights are initialised under
``torch.manual_seed`` (the caller's global RNG is restored afterwards) and a ``torch.Generator``
draws the data order and the latent codes.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsi_ccrl.bench.baselines import register_baseline
from wsi_ccrl.bench.datasets.common import CellSet
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.log import get_logger, progress_enabled

log = get_logger(__name__)
T = TypeVar("T", bound="SeededTraining")


# --------------------------------------------------------------------------- shared parts
def crops_tensor(crops: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """(n, S, S, 3) uint8 crops → (n, 3, S, S) uint8 on ``device``; S must be a multiple of 8."""
    if crops.ndim != 4 or crops.shape[3] != 3 or crops.shape[1] != crops.shape[2]:
        raise WsiCcrlError(f"expected (n, S, S, 3) RGB crops, got shape {crops.shape}")
    if crops.shape[1] % 8:
        raise WsiCcrlError(
            f"the generative baselines need a crop side that is a multiple of 8, "
            f"got {crops.shape[1]}"
        )
    x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.uint8))
    return x.permute(0, 3, 1, 2).contiguous().to(device)


def batch_indices(
    n: int, batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """``steps`` batches of row indices, walking through one shuffled epoch after another."""
    if n == 0:
        raise WsiCcrlError("cannot train on an empty cell set")
    batch_size = min(batch_size, n)
    perm, pos = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=generator), 0
        yield perm[pos : pos + batch_size]
        pos += batch_size


@torch.no_grad()
def encode(
    fn: Callable[[torch.Tensor], torch.Tensor],
    crops: np.ndarray,
    device: str,
    lo: float,
    hi: float,
    batch_size: int = 512,
) -> np.ndarray:
    """``fn`` applied to the crops in batches, pixels mapped from [0, 255] to [lo, hi]."""
    x = crops_tensor(crops, "cpu")
    out = [
        fn(x[i : i + batch_size].to(device).float() * ((hi - lo) / 255) + lo).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def _progress(steps: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=steps, desc=desc, unit="step", disable=not progress_enabled())


def _down(cin: int, cout: int, bn: bool, act: nn.Module) -> list[nn.Module]:
    """4x4 stride-2 conv: halves the side."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not bn)]
    return layers + ([nn.BatchNorm2d(cout)] if bn else []) + [act]


def _up(cin: int, cout: int, bn: bool) -> list[nn.Module]:
    """4x4 stride-2 transposed conv: doubles the side."""
    layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=not bn)]
    return layers + ([nn.BatchNorm2d(cout)] if bn else []) + [nn.ReLU()]


@dataclass
class SeededTraining(ABC):
    """The settings and the fit both generative baselines share: the crops on the device, the
    networks initialised under ``torch.manual_seed(seed)`` (the caller's RNG restored after),
    ``steps`` batches drawn by a seeded ``torch.Generator``, a progress bar and the time taken.

    A subclass names itself (``name``) and writes ``_build`` (networks and optimisers for a crop
    side), ``_step`` (one optimiser step on a uint8 batch; returns the progress bar's numbers) and
    ``_finish`` (eval mode, a log line).
    """

    name: ClassVar[str] = ""
    steps: int = 1000
    batch_size: int = 64
    width: int = 32  # channels of the first conv, doubled by each stride-2 conv
    seed: int = 0
    device: str = "cpu"

    def fit(self: T, train: CellSet) -> T:
        x = crops_tensor(train.crops, self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._build(x.shape[-1])
        gen = torch.Generator().manual_seed(self.seed)
        t0, bar = time.perf_counter(), _progress(self.steps, self.name)
        for idx in batch_indices(len(x), self.batch_size, self.steps, gen):
            shown = self._step(x[idx.to(self.device)], gen)
            bar.update()
            bar.set_postfix(shown, refresh=False)
        bar.close()
        self.seconds_ = time.perf_counter() - t0
        self._finish(len(x))
        return self

    @abstractmethod
    def _build(self, size: int) -> None:
        """Create the networks and optimisers for ``size`` px crops."""

    @abstractmethod
    def _step(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, str]:
        """One optimiser step on ``batch``; what the progress bar shows."""

    @abstractmethod
    def _finish(self, n_cells: int) -> None:
        """Set the fitted state after the last step."""


# --------------------------------------------------------------------------- DCAE
class ConvAutoEncoder(nn.Module):
    """Encoder (S → S/8 in three stride-2 convs, then linear to ``code``) and its mirror image."""

    def __init__(self, size: int = 32, width: int = 32, code: int = 64):
        super().__init__()
        w, s = width, size // 8
        self.encoder = nn.Sequential(
            *_down(3, w, False, nn.ReLU()),
            *_down(w, 2 * w, False, nn.ReLU()),
            *_down(2 * w, 4 * w, False, nn.ReLU()),
            nn.Flatten(),
            nn.Linear(4 * w * s * s, code),
        )
        self.decoder = nn.Sequential(
            nn.Linear(code, 4 * w * s * s),
            nn.ReLU(),
            nn.Unflatten(1, (4 * w, s, s)),
            *_up(4 * w, 2 * w, False),
            *_up(2 * w, w, False),
            nn.ConvTranspose2d(w, 3, 4, 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] → its reconstruction, same shape."""
        return self.decoder(self.encoder(x))


@register_baseline("dcae", "Conv. auto-encoder (DCAE)")
@dataclass
class DCAE(SeededTraining):
    """Deep convolutional auto-encoder baseline: features are the bottleneck code."""

    batch_size: int = 128
    code: int = 64
    lr: float = 1e-3

    def _build(self, size: int) -> None:
        self.net_ = ConvAutoEncoder(size, self.width, self.code).to(self.device)
        self._opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        self.losses_: list[float] = []

    def _step(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, str]:
        x = batch.float() / 255
        loss = F.mse_loss(self.net_(x), x)
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        self._opt.step()
        self.losses_.append(loss.item())
        return {"mse": f"{self.losses_[-1]:.4f}"}

    def _finish(self, n_cells: int) -> None:
        self.net_.eval()
        log.info(
            "dcae: %d steps of %d on %d cells in %.0f s, final MSE %.4f",
            self.steps, self.batch_size, n_cells, self.seconds_, np.mean(self.losses_[-20:] or [0]),
        )  # fmt: skip

    def reconstruct(self, crops: np.ndarray) -> np.ndarray:
        """(n, 3, S, S) reconstructions in [0, 1] of uint8 (n, S, S, 3) crops."""
        return encode(self.net_, crops, self.device, 0.0, 1.0)

    def transform(self, cells: CellSet) -> np.ndarray:
        f = encode(self.net_.encoder, cells.crops, self.device, 0.0, 1.0)
        return f.reshape(len(cells), self.code).astype(np.float32)


# --------------------------------------------------------------------------- InfoGAN
class Generator(nn.Module):
    """DCGAN generator: latent → (4w, S/8, S/8) → three stride-2 transposed convs → tanh RGB."""

    def __init__(self, latent: int, size: int = 32, width: int = 32):
        super().__init__()
        w, s = width, size // 8
        self.net = nn.Sequential(
            nn.Linear(latent, 4 * w * s * s, bias=False),
            nn.BatchNorm1d(4 * w * s * s),
            nn.ReLU(),
            nn.Unflatten(1, (4 * w, s, s)),
            *_up(4 * w, 2 * w, True),
            *_up(2 * w, w, True),
            nn.ConvTranspose2d(w, 3, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, latent) → (B, 3, S, S) in [-1, 1]."""
        return self.net(latent)


class Discriminator(nn.Module):
    """DCGAN discriminator trunk shared by the real/fake head and InfoGAN's Q head."""

    def __init__(self, size: int = 32, width: int = 32, hidden: int = 128, q_out: int = 12):
        super().__init__()
        w, s = width, size // 8
        act = nn.LeakyReLU(0.2)
        self.trunk = nn.Sequential(
            *_down(3, w, False, act),
            *_down(w, 2 * w, True, act),
            *_down(2 * w, 4 * w, True, act),
            nn.Flatten(),
            nn.Linear(4 * w * s * s, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            act,
        )
        self.d_head = nn.Linear(hidden, 1)
        self.q_head = nn.Linear(hidden, q_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) → real/fake logits (B,) and Q's outputs (B, q_out)."""
        h = self.trunk(x)
        return self.d_head(h).squeeze(1), self.q_head(h)


@register_baseline("infogan", "InfoGAN")
@dataclass
class InfoGAN(SeededTraining):
    """InfoGAN baseline: features are the discriminator trunk's last hidden layer (see module)."""

    hidden: int = 128
    noise: int = 62
    categories: int = 10
    continuous: int = 2
    info_weight: float = 1.0
    continuous_weight: float = 0.1

    def sample_latent(
        self, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Generator inputs (n, noise + categories + continuous), the categorical code (n,) and
        the continuous codes (n, continuous), drawn on the CPU (same draws on any device)."""
        z = torch.randn(n, self.noise, generator=generator)
        cat = torch.randint(self.categories, (n,), generator=generator)
        cont = torch.rand(n, self.continuous, generator=generator) * 2 - 1
        latent = torch.cat([z, F.one_hot(cat, self.categories).float(), cont], 1)
        return latent.to(self.device), cat.to(self.device), cont.to(self.device)

    def info_loss(self, q: torch.Tensor, cat: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        """−(mutual-information lower bound) up to a constant: categorical cross-entropy plus the
        weighted unit-variance Gaussian negative log-likelihood of the continuous codes."""
        logits, mean = q[:, : self.categories], q[:, self.categories :]
        nll = 0.5 * (cont - mean).pow(2).sum(1).mean()
        return self.info_weight * (F.cross_entropy(logits, cat) + self.continuous_weight * nll)

    def _build(self, size: int) -> None:
        codes = self.categories + self.continuous
        g = Generator(self.noise + codes, size, self.width)
        d = Discriminator(size, self.width, self.hidden, codes)
        self.generator_, self.discriminator_ = g.to(self.device), d.to(self.device)
        self._opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self._opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.history_: list[tuple[float, float, float]] = []  # (D loss, G loss, info loss)

    def _step(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, str]:
        g, d, bce = self.generator_, self.discriminator_, F.binary_cross_entropy_with_logits
        real = batch.float() / 127.5 - 1
        latent, cat, cont = self.sample_latent(len(batch), generator)
        fake = g(latent)
        # discriminator and Q: tell real from fake, recover the fake's codes
        d_real, _ = d(real)
        d_fake, q = d(fake.detach())
        info_d = self.info_loss(q, cat, cont)
        loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        self._opt_d.zero_grad(set_to_none=True)
        (loss_d + info_d).backward()
        self._opt_d.step()
        # generator: fool the discriminator and keep the codes recoverable
        d.requires_grad_(False)
        d_fake, q = d(fake)
        info_g = self.info_loss(q, cat, cont)
        loss_g = bce(d_fake, torch.ones_like(d_fake))
        self._opt_g.zero_grad(set_to_none=True)
        (loss_g + info_g).backward()
        self._opt_g.step()
        d.requires_grad_(True)
        self.history_.append((loss_d.item(), loss_g.item(), info_g.item()))
        return {"d": f"{self.history_[-1][0]:.2f}", "g": f"{self.history_[-1][1]:.2f}"}

    def _finish(self, n_cells: int) -> None:
        self.generator_.eval()
        self.discriminator_.eval()
        tail = np.mean(self.history_[-20:], axis=0) if self.history_ else np.zeros(3)
        log.info(
            "infogan: %d steps of %d on %d cells in %.0f s, final D %.3f G %.3f info %.3f",
            self.steps, self.batch_size, n_cells, self.seconds_, *tail,
        )  # fmt: skip

    @torch.no_grad()
    def generate(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` generated crops (n, 3, S, S) in [-1, 1] with their categorical and continuous
        codes."""
        latent, cat, cont = self.sample_latent(n, torch.Generator().manual_seed(seed))
        return self.generator_(latent), cat, cont

    @torch.no_grad()
    def predict_codes(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q's categorical posterior (n, categories) and continuous means (n, continuous) of
        (n, 3, S, S) images in [-1, 1]."""
        _, q = self.discriminator_(images.to(self.device))
        return q[:, : self.categories].softmax(1), q[:, self.categories :]

    def transform(self, cells: CellSet) -> np.ndarray:
        f = encode(self.discriminator_.trunk, cells.crops, self.device, -1.0, 1.0)
        return f.reshape(len(cells), self.hidden).astype(np.float32)
