"""Frozen, validated configs loaded from YAML.

One file of ~500 lines on purpose: every command's dataclass beside the one loader and type check
they share, so each setting and its default are found in one place.

A config file has one section per command (``segment``, ``train``, ``label``, ``benchmark``); a file
may start with ``inherit: other.yaml`` to build on another profile. Every value is checked against
the dataclass field types here, before any work starts, so a typo costs one line and no hours.
This module imports no heavy library: the CLI loads it before deciding what else to import.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsi_ccrl.errors import ConfigError
from wsi_ccrl.runtime import atomic_write_text

SECTIONS = ("segment", "train", "label", "benchmark")
# CPU inference engines of the U-Net and the encoder (wsi_ccrl.engine); CUDA always runs torch
ENGINES = ("auto", "torch", "onnxruntime", "openvino")


# --------------------------------------------------------------------------- segment
@dataclass(frozen=True)
class WatershedConfig:
    """QuPath-style classical nucleus detection (hematoxylin OD, threshold, distance watershed)."""

    smooth_sigma: float = 0.5  # Gaussian smoothing of the hematoxylin OD, pixels
    threshold: float | None = None  # hematoxylin OD threshold; None = Otsu per tile
    min_threshold: float = 0.02  # floor of the threshold (hematoxylin OD)
    min_area_um2: float = 3.0
    max_area_um2: float = 400.0
    split_distance_um: float = 1.0  # minimum distance between seeds, for splitting touching nuclei
    open_radius: int = 2  # binary opening of the nucleus mask, pixels (0 = none)
    dist_sigma: float = 1.5  # smoothing of the distance map before seeding, pixels
    min_peak_um: float = 0.5  # seeds need at least this distance to the background, µm
    seed_weight: float = 0.0  # weight of smoothed hematoxylin in the seed map (0 = distance)
    seed_sigma_um: float = 1.5  # scale of that smoothing, µm


@dataclass(frozen=True)
class SegmentConfig:
    """How slides become cell stores (see ``wsi_ccrl.segment``)."""

    segmenter: str = "auto"  # auto, or a registered segmenter (wsi_ccrl.segment.segmenter_names)
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
    window_scale: float = 2.0  # crop window side = window_scale * longer side of the nucleus box
    min_window: int = 16  # pixels at target_mpp
    chunk_cells: int = 4096
    batch_size: int = 8
    device: str = "auto"
    # the embedded U-Net's CPU engine: auto | torch | onnxruntime | openvino (wsi_ccrl/engine.py)
    engine: str = "auto"
    overwrite: bool = False
    watershed: WatershedConfig = field(default_factory=WatershedConfig)

    def validate(self) -> None:
        """Bad choices fail here, before any slide is opened."""
        if not self.segmenter.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"segment.segmenter: a segmenter's name, got {self.segmenter!r}")
        if self.target_mpp <= 0 or (self.mpp is not None and self.mpp <= 0):
            raise ConfigError("segment: target_mpp and mpp must be positive")
        if self.tile_overlap < 0 or self.tile_size - 2 * self.tile_overlap < 16:
            raise ConfigError(
                f"segment: tile_size {self.tile_size} must exceed 2 x tile_overlap "
                f"({self.tile_overlap}) by at least 16 px"
            )
        if self.crop_size < 1 or self.window_scale <= 0 or self.min_window < 1:
            raise ConfigError("segment: crop_size, window_scale and min_window must be positive")
        if self.chunk_cells < 1 or self.batch_size < 1:
            raise ConfigError("segment: chunk_cells and batch_size must be at least 1")
        if self.roi is not None and (self.roi[2] <= 0 or self.roi[3] <= 0):
            raise ConfigError(f"segment.roi: width and height must be positive, got {self.roi}")
        check_device("segment", self.device)
        check_engine("segment", self.engine)


def check_engine(section: str, engine: str) -> None:
    """The CPU inference engines (``wsi_ccrl.engine``); torch always runs on CUDA."""
    if engine not in ENGINES:
        raise ConfigError(f"{section}.engine: {engine!r} is not one of {', '.join(ENGINES)}")


def check_device(section: str, device: str) -> None:
    """Every section names devices alike: auto, cpu, cuda or cuda:N (resolved at run time by
    ``wsi_ccrl.runtime.resolve_device``)."""
    index = device[5:] if device.startswith("cuda:") else "0"
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and index.isdigit()
    ):
        raise ConfigError(f"{section}.device: {device!r} is not auto, cpu, cuda or cuda:N")


# --------------------------------------------------------------------------- train
@dataclass(frozen=True)
class AugmentConfig:
    """The CCRL views: colour jitter, grey-scale, blur, flips, rotation; the key branch crops."""

    local_global: bool = True  # False: the paper's ablation, neither branch crops
    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5
    flip_p: float = 0.5
    rotation: tuple[float, float] = (0.0, 180.0)  # degrees; uncovered corners are black
    stain: float = (
        0.0  # HED stain jitter (Tellez et al. 2018): amounts x U(1 +- s), + U(+-s/4); 0 off
    )

    def validate(self) -> None:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"train.augment.crop_scale: need 0 < min <= max <= 1, got {lo}, {hi}")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(
                f"train.augment.blur_sigma: need 0 < min <= max, got {self.blur_sigma}"
            )
        if not 0.0 <= self.stain < 1.0:
            raise ConfigError(f"train.augment.stain: need 0 <= stain < 1, got {self.stain}")
        for name in ("jitter_p", "grayscale_p", "blur_p", "flip_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"train.augment.{name}: a probability in [0, 1]")


STEMS = ("small", "imagenet")  # the backbone's stems (wsi_ccrl.ccrl.backbone)


@dataclass(frozen=True)
class TrainConfig:
    """CCRL model and optimisation; defaults are the paper's (``configs/ccrl.yaml``)."""

    crop_size: int = 32
    stem: str = "small"  # one of STEMS; the backbone's docstring says what each does
    proj_hidden: int = 128
    proj_dim: int = 64
    pred_hidden: int = 32
    use_predictor: bool = True
    queue_size: int = 4096
    temperature: float = 0.07
    momentum: float = 0.999
    shuffle_bn: bool = True
    epochs: int = 500
    min_steps: int = 0  # at least this many optimiser steps: a small cohort trains more epochs
    warmup_epochs: float = 10  # a fraction of an epoch too (short runs)
    batch_size: int = 1024
    lr: float = 1e-3  # Adam's, as in the paper
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
    eval_max_cells: int = 10_000  # cells of gt_class stores embedded for the periodic K-means eval
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def epochs_for(self, steps_per_epoch: int) -> int:
        """The epochs a run of ``steps_per_epoch`` trains: ``epochs``, or more to reach
        ``min_steps`` (the lr schedule spans them)."""
        need = -(-self.min_steps // max(steps_per_epoch, 1))
        return max(self.epochs, need)

    def validate(self) -> None:
        check_device("train", self.device)
        if self.stem not in STEMS:
            raise ConfigError(f"train.stem: one of {', '.join(STEMS)}, got {self.stem!r}")
        positive = ("crop_size", "proj_hidden", "proj_dim", "pred_hidden", "queue_size", "epochs")
        for name in (*positive, "checkpoint_every", "eval_max_cells"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("train.batch_size: at least 2 (BatchNorm needs a batch)")
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"train.momentum: in [0, 1], got {self.momentum}")
        if self.temperature <= 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("train: temperature and lr must be > 0, weight_decay >= 0")
        if self.warmup_epochs < 0 or self.eval_every < 0 or self.num_workers < 0:
            raise ConfigError("train: warmup_epochs, eval_every and num_workers must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps: at least 1, got {self.max_steps}")


# Settings measured and not adopted (git history has them), at the value that made them no-ops:
# a train config stored by an older build (a checkpoint) may still name them.
RETIRED_TRAIN: dict[str, Any] = {
    "bn_splits": 1,
    "symmetric": False,
    "false_negatives": 0,
    "nn_positives": 0,
    "prototypes": [],
    "optimizer": "adam",
    "augment": {
        "crop_branch": "key",
        "rotation_padding": "zeros",
        "right_angles": False,
        "key_views": 1,
    },
}


def drop_retired(stored: dict[str, Any], where: str) -> dict[str, Any]:
    """A stored train config (``to_dict``) without its retired settings, so that an older run
    compares equal to this build's; one at another value trained what this build cannot repeat."""

    def drop(values: dict[str, Any], retired: dict[str, Any], prefix: str) -> dict[str, Any]:
        out = {}
        for key, value in values.items():
            if key in retired and isinstance(retired[key], dict) and isinstance(value, dict):
                out[key] = drop(value, retired[key], f"{prefix}{key}.")
            elif key not in retired:
                out[key] = value
            elif value != retired[key]:
                raise ConfigError(
                    f"{where}: train.{prefix}{key} is {value!r}, a setting this version no longer"
                    f" has (only {retired[key]!r}); train again or use the version that wrote it"
                )
        return out

    return drop(stored, RETIRED_TRAIN, "")


# --------------------------------------------------------------------------- label
ENCODERS = ("momentum", "query")  # the backbone that embeds (label's --encoder)
FEATURES = ("raw", "l2", "whiten", "joint")  # embeddings -> K-means features (label/features.py)


@dataclass(frozen=True)
class LabelConfig:
    """Embedding, clustering and export of every cell."""

    k: int = 8
    encoder: str = "momentum"  # momentum | query
    batch_size: int = 1024
    fit_sample: int = 200_000
    seed: int = 0
    device: str = "auto"
    gpus: tuple[int, ...] | None = None  # CUDA device ids for DataParallel; None = all visible
    # the encoder's CPU engine: auto | torch | onnxruntime | openvino (wsi_ccrl/engine.py)
    engine: str = "auto"
    # registered formats (label.export): geojson, csv, anndata
    export: tuple[str, ...] = ("geojson",)
    compress: bool | None = None  # gzip the GeoJSON; None: only above 100,000 cells
    # Douglas-Peucker tolerance of the outlines, pixels of the segmenter (0: exact pixel edges;
    # 0.5 keeps the area within 1 %, benchmarks/overlay_geometry.py)
    simplify: float = 0.5
    gallery_per_cluster: int = 16
    overview_max_side: int = 2048
    gallery_tile: int = 64  # side of each crop in the gallery picture, pixels
    kmeans_backend: str = "auto"  # auto (faiss when installed, else sklearn) | sklearn | faiss
    kmeans_n_init: int = 3  # initialisations of the full K-means (the best inertia is kept)
    kmeans_minibatch_above: int = 50_000  # larger fit samples use MiniBatchKMeans
    # embeddings -> K-means features: raw | l2 | whiten | joint (the embedding beside seven size,
    # shape and colour numbers; label/features.py)
    features: str = "joint"
    reuse_embeddings: bool = True  # skip embedding a store already embedded by the same model

    def validate(self) -> None:
        """Bad choices fail here, before any embedding starts."""
        check_device("label", self.device)
        check_engine("label", self.engine)
        checks = (
            (
                self.encoder in ENCODERS,
                f"encoder must be momentum or query: {self.encoder}",
            ),
            (
                self.features in FEATURES,
                f"features must be raw, l2, whiten or joint: {self.features}",
            ),
            (
                self.kmeans_backend in ("auto", "sklearn", "faiss"),
                "kmeans_backend: auto|sklearn|faiss",
            ),
            (2 <= self.k <= 32767, f"k must be in 2..32767, got {self.k}"),
            (self.fit_sample >= 1, f"fit_sample must be positive, got {self.fit_sample}"),
            (self.kmeans_n_init >= 1, f"kmeans_n_init must be positive, got {self.kmeans_n_init}"),
            (self.kmeans_minibatch_above >= 1, "kmeans_minibatch_above must be positive"),
            (self.batch_size >= 1, f"batch_size must be positive, got {self.batch_size}"),
            (self.gallery_per_cluster >= 1, "gallery_per_cluster must be positive"),
            (self.overview_max_side >= 16, "overview_max_side must be at least 16"),
            (self.gallery_tile >= 8, "gallery_tile must be at least 8"),
            (0 <= self.simplify <= 4, f"simplify must be in 0..4 pixels, got {self.simplify}"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"label: {message}")
        if not all(e.isidentifier() for e in self.export):
            raise ConfigError(f"label: export formats by name, got {list(self.export)}")


# --------------------------------------------------------------------------- benchmark
CLASS_SCHEMES = ("original7", "merged4")  # CoNSeP's types as released, or pre-merged to 4
SPLITS = ("official", "tiles")  # train / test by folder or by source tile; "auto" picks one
BENCHMARK_MODELS = (
    "ccrl",
    "ccrl_no_local_global",
    "ccrl_query_encoder",
    "ccrl_no_predictor",
    "shape_colour",
    "morphological",
    "manual",
    "raw_pixels",
    "imagenet",
    "dcae",
    "infogan",
)


@dataclass(frozen=True)
class BenchmarkConfig:
    """The paper's evaluation protocol (see ``wsi_ccrl.bench.protocol``)."""

    dataset: str = "consep"  # a registered data set (wsi_ccrl.bench.datasets.dataset_names)
    class_scheme: str = "original7"  # consep: original7 | merged4
    split: str = (
        "auto"  # auto (official when Train/ and Test/ exist, else tiles) | official | tiles
    )
    train_tiles: tuple[int, ...] = ()  # for split=tiles: source tiles used for training
    test_tiles: tuple[int, ...] = ()  # for split=tiles: the validation tiles, evaluated
    window_scale: float = 2.0  # crop window side = window_scale * longer side (as in segment)
    crop_size: int = 32
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = BENCHMARK_MODELS  # checked against bench's registry of baselines
    max_cells: int | None = None  # cap on test cells evaluated (None: all)
    max_train_cells: int | None = None  # train cells K-means/baselines are fit on (None: all)
    train_seeds: tuple[int, ...] = (0, 1, 2)  # one CCRL training run per seed
    kmeans_n_init: int = 10
    min_window: float = 4.0  # smallest crop window, pixels
    imagenet_size: int = 224  # crops are upsampled to this for the ImageNet ResNet18
    embed_batch_size: int = 1024
    features: str = "l2"  # CCRL embeddings -> K-means features in the paper's protocol (raw | l2 |
    # whiten); ``--cells detected`` uses the profile's label.features, as `label` does
    device: str = "auto"  # auto | cpu | cuda
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        check_device("benchmark", self.device)
        if self.class_scheme not in CLASS_SCHEMES:
            raise ConfigError(
                f"benchmark.class_scheme: original7 or merged4, got {self.class_scheme!r}"
            )
        if self.split not in ("auto", *SPLITS):
            raise ConfigError(f"benchmark.split: auto, official or tiles, got {self.split!r}")
        if not self.seeds or not self.train_seeds:
            raise ConfigError("benchmark.seeds and benchmark.train_seeds need at least one seed")
        if self.window_scale <= 0 or self.crop_size < 8:
            raise ConfigError("benchmark: window_scale > 0 and crop_size >= 8 required")


SECTION_TYPES: dict[str, type] = {
    "segment": SegmentConfig,
    "train": TrainConfig,
    "label": LabelConfig,
    "benchmark": BenchmarkConfig,
}


# --------------------------------------------------------------------------- loading
def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file, following ``inherit:`` chains; one clear error for each failure.

    A bare name that is no file (``quick``, ``ccrl.yaml``) is the shipped profile of that name.
    """
    path = Path(path)
    if not path.is_file():
        path = _shipped_profile(path)
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
    beside = path.parent / parent
    bare = len(Path(parent).parts) == 1
    base = read_yaml(beside if beside.is_file() or not bare else _shipped_profile(Path(parent)))
    return _deep_merge(base, data)


def _shipped_profile(path: Path) -> Path:
    from wsi_ccrl import resources

    names = resources.profiles()
    if len(path.parts) == 1 and path.name.removesuffix(".yaml") in names:
        return resources.profile(path.name)
    raise ConfigError(f"config file not found: {path} (shipped profiles: {', '.join(names)})")


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
    apply_overrides(values, overrides)
    return build(SECTION_TYPES[section], values, where=section)


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Set dotted keys (``augment.local_global``) in ``values``, in place; ``None`` means unset."""
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        target = values
        *parents, leaf = key.split(".")
        for name in parents:
            target = target.setdefault(name, {})
        target[leaf] = value
    return values


def build(cls: type, values: dict[str, Any], where: str):
    """Validate ``values`` against dataclass ``cls`` and construct it."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields and _retired(where, key):
            raise ConfigError(f"{where}: {key!r} is no longer a setting (not adopted); delete it")
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


def _retired(where: str, key: str) -> bool:
    """Whether ``where.key`` is one of ``RETIRED_TRAIN`` (``train.augment``, ``benchmark.train``)."""
    parts = where.split(".")
    if "train" not in parts:
        return False
    node: Any = RETIRED_TRAIN
    for part in parts[parts.index("train") + 1 :]:
        node = node.get(part)
        if not isinstance(node, dict):
            return False
    return key in node and not isinstance(node[key], dict)


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
    if hint in (int, float):  # an int is a number too; a float is not an integer
        accepted, what = (
            ((int, str), "an integer") if hint is int else ((int, float, str), "a number")
        )
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ConfigError(f"{where}: expected {what}, got {value!r}")
        try:
            return hint(value)
        except ValueError:
            raise ConfigError(f"{where}: expected {what}, got {value!r}") from None
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


def settings_for(fn: Callable[..., Any], cfg: Any) -> dict[str, Any]:
    """The settings of ``cfg`` that ``fn`` takes, matched by name: a class whose parameters are
    named as the config's fields is built from it as ``cls(**settings_for(cls, cfg))``."""
    params = inspect.signature(fn).parameters
    return {name: getattr(cfg, name) for name in params if hasattr(cfg, name)}


def dump_yaml(section: str, cfg, path: str | Path) -> None:
    """Write the resolved config next to an output, so a run can be repeated exactly."""
    atomic_write_text(path, yaml.safe_dump({section: to_dict(cfg)}, sort_keys=False))
