"""The nucleus trainer: balanced sources, a short real run, the seed, fine-tuning and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CONSEP_PATCHES, needs

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.nuclei.data import LabelledImage, load_source
from wsi_ccrl.nuclei.train import NucleusTrainConfig, SourceSampler, train
from wsi_ccrl.segment.embedded import load_nucleus_net

SMALL = dict(channels=(8, 16), batch_size=2, crop=32, steps_per_epoch=3, warmup_epochs=0, threads=1)


@pytest.fixture(scope="module")
def tile3():
    if not CONSEP_PATCHES.exists():
        pytest.skip(f"{CONSEP_PATCHES} not available (real CoNSeP patches, ../shared/data)")
    return load_source(CONSEP_PATCHES, "consep", names={"tile3", "tile21"})


def test_batches_draw_evenly_from_sources_whatever_their_size():
    blank = np.zeros((8, 8, 3), np.uint8)
    images = [
        LabelledImage(f"{s}{i}", s, f"{s}{i}", blank, np.zeros((8, 8), np.int32))
        for s, n in (("consep", 40), ("monuseg", 4), ("cpm15", 1))
        for i in range(n)
    ]
    drawn = SourceSampler(images).draw(3000, np.random.default_rng(0))
    counts = {s: sum(im.source == s for im in drawn) for s in ("consep", "monuseg", "cpm15")}
    assert all(900 < c < 1100 for c in counts.values()), counts


@needs(CONSEP_PATCHES)
def test_a_short_run_lowers_the_loss_and_writes_loadable_weights(tmp_path, tile3):
    cfg = NucleusTrainConfig(
        out=str(tmp_path / "w.pt"),
        channels=(8, 16, 32),
        epochs=10,
        steps_per_epoch=4,
        batch_size=4,
        crop=64,
        lr=3e-3,
        colour_jitter=0.0,
        threads=1,
    )
    net, losses = train(cfg, tile3)  # tile 21 is held back: only tile 3 trains
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.85 * np.mean(losses[:4])
    loaded, config = load_nucleus_net(tmp_path / "w.pt")  # weights_only=True inside
    assert config["channels"] == [8, 16, 32] and config["stain_fit"] == "slide"
    assert config["train"]["augment"]["scale"] == 0.25
    assert config["stain_reference"]["mean"][0] > 40 and len(config["stain_reference"]["std"]) == 3
    for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@needs(CONSEP_PATCHES)
def test_training_is_reproducible_from_the_seed_and_resumes_exactly(tmp_path, tile3):
    _, la = train(NucleusTrainConfig(out=str(tmp_path / "a.pt"), epochs=2, **SMALL), tile3)
    _, lb = train(NucleusTrainConfig(out=str(tmp_path / "b.pt"), epochs=2, **SMALL), tile3)
    assert la == lb and len(la) == 6
    _, lc = train(NucleusTrainConfig(out=str(tmp_path / "c.pt"), epochs=2, seed=1, **SMALL), tile3)
    assert lc != la
    # a crash in the second epoch: the resumed run ends where the straight one did
    import wsi_ccrl.nuclei.train as trainer

    real_loss, calls = trainer.hovernet_loss, []

    def crash_at_step_5(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_loss(*args)

    cfg = NucleusTrainConfig(out=str(tmp_path / "r.pt"), epochs=2, **SMALL)
    trainer.hovernet_loss = crash_at_step_5
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tile3)
    finally:
        trainer.hovernet_loss = real_loss
    _, rest = train(cfg, tile3)  # resumes from the checkpoint of epoch 1 (step 3)
    assert rest == la[3:]


@needs(CONSEP_PATCHES)
def test_fine_tuning_starts_from_the_given_weights(tmp_path, tile3):
    first, _ = train(NucleusTrainConfig(out=str(tmp_path / "a.pt"), **SMALL), tile3)
    tiny = dict(lr=1e-12, min_lr=1e-12, weight_decay=0.0, epochs=1)
    init = str(tmp_path / "a.pt")
    tuned, _ = train(
        NucleusTrainConfig(out=str(tmp_path / "b.pt"), init=init, **tiny, **SMALL), tile3
    )
    fresh, _ = train(NucleusTrainConfig(out=str(tmp_path / "c.pt"), seed=7, **tiny, **SMALL), tile3)
    w0, w1, w2 = (m.head.weight for m in (first, tuned, fresh))
    torch.testing.assert_close(w1, w0, atol=1e-6, rtol=0)
    assert not torch.allclose(w2, w0)


@needs(CONSEP_PATCHES)
def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, tile3):
    out = str(tmp_path / "w.pt")
    train(NucleusTrainConfig(out=out, epochs=1, **SMALL), tile3)
    assert (tmp_path / "w.pt.ckpt").is_file() and (tmp_path / "w.pt").is_file()
    _, again = train(NucleusTrainConfig(out=out, epochs=1, **SMALL), tile3)
    assert again == []  # finished run: resumes at its last step, nothing left to do
    with pytest.raises(WsiCcrlError, match="other settings"):
        train(NucleusTrainConfig(out=out, epochs=2, **SMALL), tile3)


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(WsiCcrlError, match="init weights not found"):
        NucleusTrainConfig(init=str(tmp_path / "none.pt")).validate()
    with pytest.raises(WsiCcrlError, match="multiple of the net's stride"):
        NucleusTrainConfig(crop=100).validate()
    with pytest.raises(WsiCcrlError, match="no training sources"):
        train(NucleusTrainConfig(out=str(tmp_path / "w.pt")))
    foreign = tmp_path / "slide.svs"
    foreign.write_bytes(b"II*\x00 not a torch file")
    with pytest.raises(WsiCcrlError, match="is not a nucleus model"):
        blank = np.zeros((64, 64, 3), np.uint8)
        one = [LabelledImage("x", "cpm15", "x", blank, np.zeros((64, 64), np.int32))]
        train(NucleusTrainConfig(out=str(tmp_path / "w.pt"), init=str(foreign)), one)


@needs(CONSEP_PATCHES)
def test_holding_back_every_image_is_an_error(tmp_path):
    held = load_source(CONSEP_PATCHES, "consep", names={"tile21"})
    with pytest.raises(WsiCcrlError, match="no training images"):
        train(NucleusTrainConfig(out=str(tmp_path / "w.pt")), held)
