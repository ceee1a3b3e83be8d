"""Process-group helpers in one process, and a real 2-process DDP run with gloo."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.multiprocessing as mp
from conftest import write_store

from wsi_ccrl.ccrl import distributed
from wsi_ccrl.config import TrainConfig
from wsi_ccrl.io.store import CellStore


def test_helpers_are_no_ops_in_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = distributed.detect()
    assert (env.world_size, env.rank, env.distributed, env.is_main) == (1, 0, False, True)
    x = torch.arange(6.0).view(3, 2)
    assert distributed.all_gather_cat(x) is x
    assert distributed.broadcast_(x) is x
    assert distributed.all_reduce_mean(2.5, torch.device("cpu")) == 2.5
    assert distributed.world_size() == 1 and distributed.rank() == 0
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.detect() == distributed.DistEnv(4, 3, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, store: str, out: str, port: int) -> None:
    """One torchrun-like process: environment variables in, trained weights saved per rank."""
    from pathlib import Path

    from wsi_ccrl.ccrl.train import fit

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    cfg = TrainConfig(
        stem="imagenet",
        queue_size=32,
        momentum=0.9,
        epochs=1,
        batch_size=8,  # 4 per process
        max_steps=2,
        num_workers=0,
        eval_every=0,
    )
    model, _ = fit([Path(store)], Path(out) / "run", cfg)
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")


def test_two_process_ddp_trains_identical_replicas(consep_store, tmp_path):
    crops = np.asarray(CellStore.open(consep_store)["crops"][:24])
    store = write_store(tmp_path / "tiny.zarr", crops, chunk_cells=8)
    mp.spawn(_worker, args=(str(store), str(tmp_path), _free_port()), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    assert int(r0["queue_ptr"]) == 16  # 2 steps x 8 keys gathered from both ranks
    model = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert model["training"]["world_size"] == 2
    for name, value in model["momentum_backbone"].items():
        assert torch.equal(value, r0[f"backbone_k.{name}"])
    # the query encoder trained; the momentum encoder followed it only part-way
    assert not torch.equal(r0["backbone_q.stem.0.weight"], r0["backbone_k.stem.0.weight"])
