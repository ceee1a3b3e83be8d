"""The training loop: exact stop-and-resume, model.pt, metrics, clear errors before training."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch
from conftest import write_store

from wsi_ccrl.ccrl.model import CCRL
from wsi_ccrl.ccrl.model_io import load_backbone
from wsi_ccrl.ccrl.train import CHECKPOINT, load_checkpoint, train
from wsi_ccrl.config import TrainConfig
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.io.store import CellStore

# small and fast: the imagenet stem shrinks 32 px crops 4x before the residual stages
TINY = TrainConfig(
    stem="imagenet",
    queue_size=16,
    momentum=0.9,
    epochs=2,
    warmup_epochs=1,
    batch_size=8,
    num_workers=1,
    in_memory_max_cells=0,  # stream chunk-wise: the path large datasets take
    shuffle_buffer_chunks=2,
    checkpoint_every=2,  # only at the end: checkpoints of ResNet18 + Adam are ~180 MB
    eval_every=0,
)


@pytest.fixture(scope="module")
def tiny_store(consep_store, tmp_path_factory):
    """16 real cells in chunks of 8: 2 steps of 8 per epoch."""
    crops = np.asarray(CellStore.open(consep_store)["crops"][:16])
    return write_store(tmp_path_factory.mktemp("tiny") / "tiny.zarr", crops, chunk_cells=8)


def state(run_dir):
    return torch.load(run_dir / CHECKPOINT, weights_only=True)


def test_stop_and_resume_equals_a_straight_run(tiny_store, tmp_path):
    straight = train([tiny_store], tmp_path / "straight", TINY)
    stopped = dataclasses.replace(TINY, max_steps=3)  # stops inside the second epoch
    train([tiny_store], tmp_path / "resumed", stopped)
    assert state(tmp_path / "resumed")["step"] == 3
    resumed = train([tiny_store], tmp_path / "resumed", TINY)
    a, b = state(tmp_path / "straight"), state(tmp_path / "resumed")
    assert a["step"] == b["step"] == 4
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    for pa, pb in zip(opt_a.values(), opt_b.values(), strict=True):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    ma = torch.load(straight, weights_only=True)
    mb = torch.load(resumed, weights_only=True)
    for enc in ("query_backbone", "momentum_backbone", "projector_q", "predictor"):
        assert all(torch.equal(ma[enc][k], mb[enc][k]) for k in ma[enc]), enc
    rows = list(csv.DictReader((tmp_path / "resumed" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "1.5", "2"]
    assert (tmp_path / "resumed" / "config.yaml").exists()


def test_model_file_loads_weights_only(tiny_store, tmp_path):
    cfg = dataclasses.replace(TINY, max_steps=1, use_predictor=False)
    path = train([tiny_store], tmp_path / "run", cfg)
    payload = torch.load(path, weights_only=True)
    assert payload["crop_size"] == 32 and payload["config"]["use_predictor"] is False
    assert "predictor" not in payload and payload["training"]["steps"] == 1
    query, meta = load_backbone(path, "query")
    momentum, _ = load_backbone(path, "momentum")
    assert meta["stem"] == "imagenet"
    assert not torch.equal(query.stem[0].weight, momentum.stem[0].weight)
    ckpt = state(tmp_path / "run")
    assert set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert int(ckpt["model"]["queue_ptr"]) == 8


def test_resume_refuses_another_config_or_data_and_no_resume_starts_over(tiny_store, tmp_path):
    cfg = dataclasses.replace(TINY, max_steps=1)
    train([tiny_store], tmp_path / "run", cfg)
    with pytest.raises(ConfigError, match="train.lr was 0.001"):
        train([tiny_store], tmp_path / "run", dataclasses.replace(cfg, lr=0.01))
    # the lr schedule is spread over the epochs: more epochs on resume would change its past
    with pytest.raises(ConfigError, match=r"train.epochs was 2 in the checkpoint, now 3 \(the lr"):
        train([tiny_store], tmp_path / "run", dataclasses.replace(cfg, epochs=3))
    train([tiny_store], tmp_path / "run", dataclasses.replace(cfg, lr=0.01), resume=False)
    assert state(tmp_path / "run")["config"]["lr"] == 0.01
    cfg = dataclasses.replace(cfg, lr=0.01)
    model = CCRL.from_config(cfg)
    opt = torch.optim.Adam(model.query_parameters())
    with pytest.raises(WsiCcrlError, match="other stores"):
        load_checkpoint(
            tmp_path / "run" / CHECKPOINT, model, opt, cfg, [["x.zarr", 9]], torch.device("cpu")
        )


def test_a_foreign_checkpoint_is_one_line(tiny_store, tmp_path):
    """A run folder whose checkpoint.pt is another tool's (pickled code) or our model file."""
    run = tmp_path / "run"
    run.mkdir()
    torch.save(torch.nn.Linear(2, 2), run / CHECKPOINT)
    hint = "(expected train's checkpoint.pt; --no-resume starts over)"
    with pytest.raises(WsiCcrlError) as err:
        train([tiny_store], run, dataclasses.replace(TINY, max_steps=1))
    assert str(err.value) == f"{run / CHECKPOINT} is not a wsi-ccrl checkpoint {hint}"
    model = train([tiny_store], tmp_path / "ok", dataclasses.replace(TINY, max_steps=1))
    (run / CHECKPOINT).write_bytes(model.read_bytes())
    with pytest.raises(WsiCcrlError, match="is not a wsi-ccrl checkpoint"):
        train([tiny_store], run, dataclasses.replace(TINY, max_steps=1))


def test_bad_input_fails_before_training(tiny_store, tmp_path):
    with pytest.raises(WsiCcrlError, match="larger than the 16 cells"):
        train([tiny_store], tmp_path / "a", dataclasses.replace(TINY, batch_size=32))
    with pytest.raises(WsiCcrlError, match="crop_size: 64"):
        train([tiny_store], tmp_path / "b", dataclasses.replace(TINY, crop_size=64))
    if not torch.cuda.is_available():
        with pytest.raises(WsiCcrlError, match="no CUDA GPU"):
            train([tiny_store], tmp_path / "c", dataclasses.replace(TINY, device="cuda"))
    assert not (tmp_path / "a" / CHECKPOINT).exists()


def test_non_finite_loss_stops_with_a_clear_error(tiny_store, tmp_path):
    cfg = dataclasses.replace(TINY, temperature=1e-40, max_steps=2)
    with pytest.raises(WsiCcrlError, match="diverged: loss is nan at step 0"):
        train([tiny_store], tmp_path / "run", cfg)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda_with_bf16_and_every_visible_gpu(tiny_store, tmp_path):
    """bf16 autocast, channels_last, DataParallel when several GPUs are visible."""
    cfg = dataclasses.replace(TINY, device="cuda", max_steps=2, in_memory_max_cells=1000)
    path = train([tiny_store], tmp_path / "run", cfg)
    payload = torch.load(path, weights_only=True)
    assert payload["training"]["steps"] == 2 and np.isfinite(payload["training"]["final_loss"])
    assert all(v.device.type == "cpu" for v in payload["momentum_backbone"].values())
