"""Frozen, validated configs loaded from YAML.

A config file has one section per command (``segment``, ``train``, ``label``, ``benchmark``); a file
may start with ``inherit: other.yaml`` to build on another profile. Every value is checked against
the dataclass field types here, before any work starts, so a typo costs one line and no hours.
This module imports no heavy library: the CLI loads it before deciding what else to import.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsi_ccrl.errors import ConfigError

SECTIONS = ("segment", "train", "label", "benchmark")


# --------------------------------------------------------------------------- segment
@dataclass(frozen=True)
class WatershedConfig:
    """QuPath-style classical nucleus detection (hematoxylin OD, threshold, distance watershed)."""

    smooth_sigma: float = 1.0
    threshold: float | None = None  # hematoxylin OD threshold; None = Otsu per tile
    min_threshold: float = 0.1
    min_area_um2: float = 8.0
    max_area_um2: float = 400.0
    split_distance_um: float = 1.5  # minimum distance between seeds, for splitting touching nuclei


@dataclass(frozen=True)
class SegmentConfig:
    """How slides become cell stores (see ``wsi_ccrl.segment``)."""

    segmenter: str = "hovernet"  # hovernet | watershed | embedded
    model: str = "hovernet_fast-pannuke"  # a TIAToolbox pretrained name
    weights: str | None = None  # local state-dict file for the model
    offline: bool = False
    mpp: float | None = None  # overrides or supplies the slide's µm/px
    target_mpp: float = 0.25  # the resolution the segmenter works at
    tile_size: int = 1024  # tile side at target_mpp, pixels
    tile_overlap: int = 64  # wider than the largest nucleus, pixels at target_mpp
    tissue_mpp: float = 8.0  # resolution of the thumbnail the tissue mask is computed on
    min_tissue_fraction: float = 0.02  # tiles with less tissue are skipped
    roi: tuple[int, int, int, int] | None = None  # x, y, w, h in level-0 pixels
    crop_size: int = 32
    window_scale: float = 2.0  # crop window = window_scale * max(bbox side)
    min_window: int = 16  # pixels at target_mpp
    chunk_cells: int = 4096
    batch_size: int = 8
    num_workers: int = 0
    device: str = "auto"
    overwrite: bool = False
    watershed: WatershedConfig = field(default_factory=WatershedConfig)


# --------------------------------------------------------------------------- train
@dataclass(frozen=True)
class AugmentConfig:
    """The CCRL views: colour jitter, grey-scale, blur, flips, rotation; one branch crops."""

    local_global: bool = True  # False: the ablation, neither branch crops
    crop_branch: str = "key"  # which branch makes the local (cropped) view: key | query
    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5
    flip_p: float = 0.5
    rotation: tuple[float, float] = (0.0, 180.0)


@dataclass(frozen=True)
class TrainConfig:
    """CCRL model and optimisation; defaults are the paper's (``configs/ccrl.yaml``)."""

    crop_size: int = 32
    stem: str = "small"  # small: 3x3 conv, no max-pool (for 32 px crops) | imagenet: 7x7 + max-pool
    proj_hidden: int = 128
    proj_dim: int = 64
    pred_hidden: int = 32
    use_predictor: bool = True
    queue_size: int = 4096
    temperature: float = 0.07
    momentum: float = 0.999
    shuffle_bn: bool = True
    epochs: int = 500
    warmup_epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    gpus: tuple[int, ...] | None = None  # CUDA device ids for DataParallel; None = all visible
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True
    num_workers: int = 2
    shuffle_buffer_chunks: int = 8
    in_memory_max_cells: int = 2_000_000  # datasets up to this size are loaded once
    checkpoint_every: int = 10  # epochs
    eval_every: int = 10  # epochs; K-means AMI/ARI/Purity when a store has gt_class
    max_steps: int | None = None  # stop early (tests, quick looks)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# --------------------------------------------------------------------------- label
@dataclass(frozen=True)
class LabelConfig:
    """Embedding, clustering and export of every cell."""

    k: int = 8
    encoder: str = "momentum"  # momentum | query
    batch_size: int = 1024
    fit_sample: int = 200_000
    seed: int = 0
    device: str = "auto"
    export: tuple[str, ...] = ("geojson",)  # geojson | csv
    compress: bool = False
    gallery_per_cluster: int = 16
    overview_max_side: int = 2048


# --------------------------------------------------------------------------- benchmark
@dataclass(frozen=True)
class BenchmarkConfig:
    """The paper's evaluation protocol (see ``wsi_ccrl.benchmark``)."""

    dataset: str = "consep"  # consep | nucls
    class_scheme: str = "original7"  # consep: original7 | merged4
    split: str = "official"  # official (Train/Test folders) | tiles
    train_tiles: tuple[int, ...] = ()  # for split=tiles: source tiles used for training
    test_tiles: tuple[int, ...] = ()
    window_scale: float = 1.0  # box padded by (scale/2)*max(h, w) per side
    crop_size: int = 32
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = (
        "ccrl",
        "ccrl_no_local_global",
        "ccrl_query_encoder",
        "ccrl_no_predictor",
        "morphological",
        "manual",
        "raw_pixels",
        "imagenet",
    )
    max_cells: int | None = None  # subsample for quick profiles
    train: TrainConfig = field(default_factory=TrainConfig)


SECTION_TYPES: dict[str, type] = {
    "segment": SegmentConfig,
    "train": TrainConfig,
    "label": LabelConfig,
    "benchmark": BenchmarkConfig,
}


# --------------------------------------------------------------------------- loading
def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file, following ``inherit:`` chains; one clear error for each failure."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    parent = data.pop("inherit", None)
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown section {sorted(unknown)[0]!r} (expected one of {', '.join(SECTIONS)})"
        )
    if parent is None:
        return data
    base = read_yaml(path.parent / parent)
    return _deep_merge(base, data)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_section(
    section: str, path: str | Path | None = None, overrides: dict[str, Any] | None = None
):
    """Build the frozen config of one command from a YAML file and CLI overrides.

    Overrides use dotted keys for nested fields (``augment.local_global``); ``None`` values are
    ignored so that unset CLI options keep the file's value.
    """
    values: dict[str, Any] = {}
    if path is not None:
        section_values = read_yaml(path).get(section) or {}
        if not isinstance(section_values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping")
        values = section_values
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        target = values
        *parents, leaf = key.split(".")
        for name in parents:
            target = target.setdefault(name, {})
        target[leaf] = value
    return build(SECTION_TYPES[section], values, where=section)


def build(cls: type, values: dict[str, Any], where: str):
    """Validate ``values`` against dataclass ``cls`` and construct it."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} (valid: {', '.join(fields)})")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if validate:
        validate()
    return obj


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint!r}")  # a bug in a dataclass, not user input


def to_dict(cfg) -> dict[str, Any]:
    """Plain-Python view of a config (tuples as lists), for YAML dumps and checkpoints."""

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def dump_yaml(section: str, cfg, path: str | Path) -> None:
    """Write the resolved config next to an output, so a run can be repeated exactly."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump({section: to_dict(cfg)}, sort_keys=False))
    tmp.replace(path)
