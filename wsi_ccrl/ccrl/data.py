"""Batches of cell crops for training, from one or many cell stores.

Small datasets (up to ``in_memory_max_cells``) are read once and shuffled fully each epoch. Large
ones are streamed chunk-wise: chunks in a random order, rows shuffled within a buffer of
``buffer_chunks`` chunks, so reads stay near sequential speed. Under DDP each rank takes its own
share (of the permutation in memory, of the chunks when streaming) and every rank runs the same
number of steps. The order depends only on (seed, epoch), so a resumed run sees the same batches.
Batches are uint8 (B, S, S, 3); the augmentation runs on the training device afterwards.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_ccrl.config import TrainConfig
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.store import CellStore, drop_empty


@dataclass(frozen=True)
class Chunk:
    """Rows ``start:stop`` of store number ``store``."""

    store: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def open_stores(paths: list[Path], crop_size: int | None = None) -> list[CellStore]:
    """Open and check the training stores: empty ones skipped, one crop size, the config's."""
    if not paths:
        raise WsiCcrlError("no cell stores given (--data)")
    stores = drop_empty([CellStore.open(p) for p in paths])
    sizes = {s.crop_size for s in stores}
    if len(sizes) > 1:
        listing = ", ".join(f"{s.path.name}: {s.crop_size} px" for s in stores)
        raise WsiCcrlError(f"stores have different crop sizes ({listing}); train on one size")
    size = sizes.pop()
    if crop_size is not None and size != crop_size:
        raise WsiCcrlError(
            f"stores hold {size} px crops but the config says crop_size: {crop_size} "
            f"(set crop_size: {size} in the config, or re-segment at {crop_size} px)"
        )
    return stores


class CellCrops:
    """The training cells of several stores, in shuffled batches.

    Args:
        stores: opened, checked stores (``open_stores``).
        in_memory_max_cells: load everything once when there are at most this many cells.
        buffer_chunks: chunks shuffled together when streaming.
        prefetch: batches read ahead in a background thread (0: read in the caller's thread).
    """

    def __init__(
        self,
        stores: list[CellStore],
        in_memory_max_cells: int = TrainConfig.in_memory_max_cells,
        buffer_chunks: int = 8,
        prefetch: int = 2,
    ):
        self.stores = stores
        self.crop_size = stores[0].crop_size
        self.buffer_chunks = max(1, buffer_chunks)
        self.prefetch = prefetch
        self.chunks = [Chunk(i, a, b) for i, s in enumerate(stores) for a, b in s.iter_ranges()]
        self.n_cells = sum(s.n_cells for s in stores)
        self.in_memory = self.n_cells <= in_memory_max_cells
        self._crops: np.ndarray | None = None
        if self.in_memory:
            self._crops = np.concatenate([s.rows("crops") for s in stores])

    def __len__(self) -> int:
        return self.n_cells

    # ------------------------------------------------------------------ layout
    def _rank_chunks(self, epoch: int, seed: int, rank: int, world: int) -> list[Chunk]:
        rng = np.random.default_rng([seed, epoch, 1])
        order = rng.permutation(len(self.chunks))
        return [self.chunks[i] for i in order[rank::world]]

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        """Steps every rank runs per epoch; ``batch_size`` is per rank; the last partial drops."""
        if self.in_memory:
            return (self.n_cells // world) // batch_size
        # chunk shares differ by epoch; the smallest possible share bounds every epoch
        sizes = sorted(len(c) for c in self.chunks)
        per_rank = len(self.chunks) // world
        return sum(sizes[:per_rank]) // batch_size

    # ------------------------------------------------------------------ batches
    def batches(
        self,
        epoch: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        skip: int = 0,
    ) -> Iterator[np.ndarray]:
        """This rank's batches of one epoch: uint8 (batch_size, S, S, 3) each.

        Args:
            epoch, seed: fix the order.
            batch_size: per rank.
            rank, world: the DDP layout.
            skip: leave out the first ``skip`` batches (resuming inside an epoch).
        """
        n_steps = self.steps_per_epoch(batch_size, world)
        if n_steps == 0:
            raise WsiCcrlError(
                f"batch size {batch_size * world} is larger than the {self.n_cells} cells"
            )
        if self.in_memory:
            gen = self._memory_batches(epoch, batch_size, seed, rank, world, n_steps, skip)
        else:
            gen = self._stream_batches(epoch, batch_size, seed, rank, world, n_steps, skip)
        return _prefetched(gen, self.prefetch) if self.prefetch > 0 else gen

    def _memory_batches(self, epoch, batch_size, seed, rank, world, n_steps, skip):
        rng = np.random.default_rng([seed, epoch, 0])
        mine = rng.permutation(self.n_cells)[rank::world]
        for i in range(skip, n_steps):
            yield self._crops[mine[i * batch_size : (i + 1) * batch_size]]

    def _stream_batches(self, epoch, batch_size, seed, rank, world, n_steps, skip):
        chunks = self._rank_chunks(epoch, seed, rank, world)
        rng = np.random.default_rng([seed, epoch, 2, rank])
        carry = np.zeros((0, self.crop_size, self.crop_size, 3), np.uint8)
        step = 0
        for start in range(0, len(chunks), self.buffer_chunks):
            group = chunks[start : start + self.buffer_chunks]
            rows = [carry] + [self.stores[c.store].rows("crops", c.start, c.stop) for c in group]
            buf = np.concatenate(rows)
            buf = buf[rng.permutation(len(buf))]
            n_full = len(buf) // batch_size
            for j in range(n_full):
                if step >= n_steps:
                    return
                if step >= skip:
                    yield buf[j * batch_size : (j + 1) * batch_size]
                step += 1
            carry = buf[n_full * batch_size :]


def _prefetched(gen: Iterator[np.ndarray], depth: int) -> Iterator[np.ndarray]:
    """Run ``gen`` in a background thread (zarr decompression releases the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work():
        try:
            for item in gen:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as exc:  # surfaced in the consumer
            q.put(exc)
            return
        q.put(done)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not q.empty():  # unblock a producer waiting on a full queue
            q.get_nowait()
        thread.join(timeout=1.0)


def load_eval_set(
    stores: list[CellStore], max_cells: int, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Crops and classes of the stores that carry ``gt_class`` (subsampled), or None."""
    parts = [s for s in stores if "gt_class" in s]
    if not parts:
        return None
    labels = np.concatenate([s.rows("gt_class") for s in parts])
    offsets = np.cumsum([0] + [s.n_cells for s in parts])
    pick = np.arange(len(labels))
    if len(pick) > max_cells:
        pick = np.sort(np.random.default_rng([seed, 4]).choice(len(labels), max_cells, False))
    crops = []
    for i, s in enumerate(parts):
        rows = pick[(pick >= offsets[i]) & (pick < offsets[i + 1])] - offsets[i]
        if len(rows):
            crops.append(np.asarray(s["crops"].oindex[rows]))
    return np.concatenate(crops), labels[pick]
