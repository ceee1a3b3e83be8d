import pytest
import yaml
from conftest import CONFIGS

from wsi_ccrl.config import (
    SECTION_TYPES,
    LabelConfig,
    SegmentConfig,
    TrainConfig,
    dump_yaml,
    load_section,
    to_dict,
)
from wsi_ccrl.errors import ConfigError


def test_paper_defaults_match_dataclass_defaults():
    """configs/ccrl.yaml states the paper's values; the dataclass defaults are the same values."""
    for section in ("train", "label"):
        assert load_section(section, CONFIGS / "ccrl.yaml") == SECTION_TYPES[section]()


def test_paper_values():
    cfg = load_section("train", CONFIGS / "ccrl.yaml")
    assert (cfg.temperature, cfg.momentum, cfg.lr, cfg.weight_decay) == (0.07, 0.999, 1e-3, 1e-4)
    assert (cfg.epochs, cfg.warmup_epochs, cfg.batch_size, cfg.crop_size) == (500, 10, 1024, 32)
    assert (cfg.proj_hidden, cfg.proj_dim, cfg.pred_hidden) == (128, 64, 32)
    assert cfg.augment.crop_scale == (0.2, 1.0) and cfg.augment.jitter == (0.4, 0.4, 0.4, 0.1)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    for section in SECTION_TYPES:
        load_section(section, path)


def test_the_demo_profile_is_quick_with_its_own_training_length():
    """The demo runs the user's pipeline: only how long it trains may differ from ``quick``
    (more epochs: its one small slide gives 40 steps an epoch)."""
    import dataclasses

    for section in ("segment", "label", "benchmark"):
        assert load_section(section, "demo") == load_section(section, "quick")
    demo, quick = load_section("train", "demo"), load_section("train", "quick")
    assert demo.epochs != quick.epochs
    short = {"epochs", "min_steps", "checkpoint_every", "eval_every"}
    assert dataclasses.replace(demo, **{f: getattr(quick, f) for f in short}) == quick


def test_inherit_and_overrides(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(
        f"inherit: {CONFIGS / 'ccrl.yaml'}\ntrain:\n  epochs: 3\n  augment:\n    blur_p: 0.1\n"
    )
    cfg = load_section("train", child, {"lr": "0.5", "augment.local_global": False, "seed": None})
    assert cfg.epochs == 3 and cfg.lr == 0.5 and cfg.batch_size == 1024
    assert cfg.augment.blur_p == 0.1 and cfg.augment.local_global is False


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epoch: 3\n", "unknown key 'epoch'"),
        ("train:\n  epochs: three\n", "expected an integer"),
        ("train:\n  amp: maybe\n", "expected true or false"),
        ("train:\n  augment:\n    crop_scale: [0.2]\n", "expected 2 values"),
        ("train:\n  augment:\n    stain: 1.5\n", "need 0 <= stain < 1"),
        ("train:\n  stem: stride2\n", "train.stem: one of small, imagenet, got 'stride2'"),
        ("train:\n  bn_splits: 1\n", "train: 'bn_splits' is no longer a setting"),
        ("train:\n  optimizer: adam\n", "train: 'optimizer' is no longer a setting"),
        (
            "train:\n  augment:\n    crop_branch: key\n",
            "train.augment: 'crop_branch' is no longer a setting",
        ),
        ("trian:\n  epochs: 3\n", "unknown section 'trian'"),
        ("train: [1, 2\n", "not valid YAML"),
    ],
)
def test_bad_configs_give_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_section("train", path)
    assert "\n" not in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_section("train", "no/such.yaml")
    with pytest.raises(ConfigError, match=r"not found: fast \(shipped profiles: benchmark-brca"):
        load_section("train", "fast")


def test_a_shipped_profile_by_name(tmp_path, monkeypatch):
    """``--config quick`` works from any folder (an installed wheel has no configs/ beside it);
    a file of that name in the working folder wins, and a user's file may inherit a profile."""
    monkeypatch.chdir(tmp_path)
    quick = load_section("train", CONFIGS / "quick.yaml")
    assert load_section("train", "quick") == load_section("train", "quick.yaml") == quick
    (tmp_path / "quick").write_text("train:\n  epochs: 2\n")
    assert load_section("train", "quick").epochs == 2
    (tmp_path / "mine.yaml").write_text("inherit: quick.yaml\ntrain:\n  epochs: 4\n")
    mine = load_section("train", tmp_path / "mine.yaml")
    assert mine.epochs == 4 and mine.batch_size == quick.batch_size


def test_dump_round_trip(tmp_path):
    cfg = SegmentConfig(roi=(1, 2, 3, 4), mpp=0.5)
    dump_yaml("segment", cfg, tmp_path / "resolved.yaml")
    assert load_section("segment", tmp_path / "resolved.yaml") == cfg
    assert yaml.safe_load((tmp_path / "resolved.yaml").read_text())["segment"]["roi"] == [
        1,
        2,
        3,
        4,
    ]
    assert to_dict(LabelConfig())["export"] == ["geojson"]


def test_optional_tuple_none():
    assert load_section("train", None, {"gpus": "0,1"}).gpus == (0, 1)
    assert TrainConfig().gpus is None


def test_settings_for_takes_the_config_fields_a_function_names():
    from wsi_ccrl.ccrl.model import CCRL
    from wsi_ccrl.config import TrainConfig, settings_for

    def build(stem, lr, other=1):
        return stem, lr, other

    cfg = TrainConfig(stem="imagenet", lr=0.5)
    assert settings_for(build, cfg) == {"stem": "imagenet", "lr": 0.5}
    assert set(settings_for(CCRL, cfg)) == {
        "stem", "proj_hidden", "proj_dim", "pred_hidden", "use_predictor", "queue_size",
        "temperature", "momentum", "shuffle_bn",
    }  # fmt: skip


def test_min_steps_gives_a_small_cohort_more_epochs():
    from wsi_ccrl.config import TrainConfig

    cfg = TrainConfig(epochs=2, min_steps=500)
    assert cfg.epochs_for(486) == 2  # a large cohort: its epochs already pass min_steps
    assert cfg.epochs_for(64) == 8  # 8 x 64 >= 500
    assert TrainConfig(epochs=2).epochs_for(1) == 2


@pytest.mark.parametrize("section", ["segment", "label"])
def test_engine_is_one_of_the_engines(tmp_path, section):
    path = tmp_path / "engine.yaml"
    path.write_text(f"{section}:\n  engine: tensorrt\n")
    message = rf"{section}.engine: 'tensorrt' is not one of auto, torch, onnxruntime, openvino"
    with pytest.raises(ConfigError, match=message):
        load_section(section, path)
    path.write_text(f"{section}:\n  engine: openvino\n")
    assert load_section(section, path).engine == "openvino"
