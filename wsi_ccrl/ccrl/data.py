"""Batches of cell crops for training, from one or many cell stores.

Small datasets (up to ``in_memory_max_cells``) are read once and shuffled fully each epoch. Large
ones are streamed chunk-wise: chunks in a random order, rows shuffled within a buffer of
``buffer_chunks`` chunks, so reads stay near sequential speed. Under DDP each rank takes its own
share (of the permutation in memory, of the chunks when streaming) and every rank runs the same
number of steps. The order depends only on (seed, epoch), so a resumed run sees the same batches.
A batch is uint8 crops (B, S, S, 3), the augmentation runs on the training device afterwards,
and each crop's slide id (B,): a store is one slide unless it holds a ``slide`` column (a cohort
store of many images). With ``slides_per_batch`` an in-memory epoch is laid out in runs of cells
of one slide, so a batch holds about that many slides (same-slide negatives need company).
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
        slides_per_batch: lay batches out from about this many slides each (in memory; None:
            cells fully shuffled).
    """

    def __init__(
        self,
        stores: list[CellStore],
        in_memory_max_cells: int = TrainConfig.in_memory_max_cells,
        buffer_chunks: int = 8,
        prefetch: int = 2,
        slides_per_batch: int | None = None,
    ):
        self.stores = stores
        self.slides_per_batch = slides_per_batch
        self.crop_size = stores[0].crop_size
        self.buffer_chunks = max(1, buffer_chunks)
        self.prefetch = prefetch
        self.chunks = [Chunk(i, a, b) for i, s in enumerate(stores) for a, b in s.iter_ranges()]
        self.n_cells = sum(s.n_cells for s in stores)
        self.in_memory = self.n_cells <= in_memory_max_cells
        self._crops: np.ndarray | None = None
        self._slides = np.concatenate([_slide_ids(s, i) for i, s in enumerate(stores)])
        self._slides = np.unique(self._slides, axis=0, return_inverse=True)[1].ravel()
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
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's batches of one epoch: uint8 crops (batch_size, S, S, 3) and slide ids.

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
        if self.slides_per_batch:
            order = _runs_of_slides(self._slides, batch_size // self.slides_per_batch, rng)
            mine = order.reshape(-1)[: len(order) // world * world].reshape(-1, world)[:, rank]
        else:
            mine = rng.permutation(self.n_cells)[rank::world]
        for i in range(skip, n_steps):
            rows = mine[i * batch_size : (i + 1) * batch_size]
            yield self._crops[rows], self._slides[rows]

    def _stream_batches(self, epoch, batch_size, seed, rank, world, n_steps, skip):
        chunks = self._rank_chunks(epoch, seed, rank, world)
        rng = np.random.default_rng([seed, epoch, 2, rank])
        carry = np.zeros((0, self.crop_size, self.crop_size, 3), np.uint8)
        carry_slides = np.zeros(0, np.int64)
        offsets = np.cumsum([0] + [s.n_cells for s in self.stores])
        step = 0
        for start in range(0, len(chunks), self.buffer_chunks):
            group = chunks[start : start + self.buffer_chunks]
            rows = [carry] + [self.stores[c.store].rows("crops", c.start, c.stop) for c in group]
            ids = [carry_slides] + [
                self._slides[offsets[c.store] + c.start : offsets[c.store] + c.stop] for c in group
            ]
            perm = rng.permutation(sum(map(len, rows)))
            buf, slides = np.concatenate(rows)[perm], np.concatenate(ids)[perm]
            n_full = len(buf) // batch_size
            for j in range(n_full):
                if step >= n_steps:
                    return
                if step >= skip:
                    part = slice(j * batch_size, (j + 1) * batch_size)
                    yield buf[part], slides[part]
                step += 1
            carry, carry_slides = buf[n_full * batch_size :], slides[n_full * batch_size :]


def _slide_ids(store: CellStore, index: int) -> np.ndarray:
    """(n_cells, 2): the store's number and each cell's slide within it (0 unless it says)."""
    within = store.rows("slide") if "slide" in store else np.zeros(store.n_cells, np.int64)
    return np.stack([np.full(store.n_cells, index, np.int64), within.astype(np.int64)], axis=1)


def _runs_of_slides(slides: np.ndarray, run: int, rng: np.random.Generator) -> np.ndarray:
    """Every cell once, in shuffled runs of ``run`` cells of one slide (a slide's last run is
    shorter): consecutive batches then hold cells of about ``batch / run`` slides each."""
    order = rng.permutation(len(slides))
    order = order[np.argsort(slides[order], kind="stable")]  # each slide's cells, shuffled
    first = np.r_[0, np.flatnonzero(np.diff(slides[order])) + 1]
    starts = np.arange(len(order))
    pos = starts - np.repeat(first, np.diff(np.r_[first, len(order)]))  # rank within the slide
    run_id = np.unique(
        np.stack([slides[order], pos // max(run, 1)], 1), axis=0, return_inverse=True
    )[1].ravel()
    runs = rng.permutation(run_id.max() + 1)
    return order[np.argsort(np.argsort(runs)[run_id], kind="stable")]


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
