"""CoNSeP (Graham et al., HoVer-Net 2019): ``Train|Test/Images/*.png`` + ``Labels/*.mat``.

Each ``.mat`` holds ``inst_map`` (H, W; 0 background, 1..N), ``inst_type`` (N, 1; the type of
instance i at row i-1), ``type_map`` and ``inst_centroid``. The class scheme is a dataset option,
never guessed from the numbers:

- ``original7`` (the official release): 1 other, 2 inflammatory, 3 healthy epithelial,
  4 dysplastic/malignant epithelial, 5 fibroblast, 6 muscle, 7 endothelial — merged as the paper
  does into miscellaneous / inflammatory / epithelial / spindle-shaped;
- ``merged4``: data already merged (1 miscellaneous, 2 inflammatory, 3 epithelial, 4 spindle).

Splits: ``official`` reads the ``Train`` and ``Test`` folders (the default when both exist);
``tiles`` splits one folder by source tile, the number in ``train_<tile>_<k>.png`` (patches of one
tile are correlated: never split them). Carved from Train, the held-back tiles are a validation
split: the one hyper-parameters are chosen on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from wsi_ccrl.bench.datasets import BenchmarkDataset, register_dataset
from wsi_ccrl.bench.datasets.common import GroundTruthTile, nuclei_from_instance_map
from wsi_ccrl.bench.report import ranges
from wsi_ccrl.errors import ConfigError, WsiCcrlError

CLASSES = ("miscellaneous", "inflammatory", "epithelial", "spindle-shaped")
SCHEMES = ("original7", "merged4")
# type number -> merged class index (into CLASSES); -1 = unlabelled / not a type of the scheme
_SCHEME_MAPS = {
    "original7": np.array([-1, 0, 1, 2, 2, 3, 3, 3], np.int16),
    "merged4": np.array([-1, 0, 1, 2, 3], np.int16),
}
MPP = 0.25  # CoNSeP is scanned at 40x
HOW_TO_GET = (
    "download CoNSeP from the TIA Centre (https://warwick.ac.uk/fac/cross_fac/tia/data/hovernet/) "
    "and unpack it so that DIR/Train/Images/*.png, DIR/Train/Labels/*.mat and DIR/Test/... exist"
)
_TILE_RE = re.compile(r"(\d+)")


def class_map(scheme: str) -> np.ndarray:
    """Type number → merged class index for ``scheme`` (-1 for types outside it)."""
    if scheme not in _SCHEME_MAPS:
        raise ConfigError(f"class_scheme must be one of {SCHEMES}, got {scheme!r}")
    return _SCHEME_MAPS[scheme]


def tile_id(name: str) -> int:
    """Source tile of a file: the first number in its name (``train_12_003.png`` → 12)."""
    match = _TILE_RE.search(Path(name).stem)
    if match is None:
        raise WsiCcrlError(f"cannot read a tile number from the file name {name!r}")
    return int(match.group(1))


def find_split_dir(data_dir: Path, split: str) -> Path | None:
    """``data_dir/<split>`` matched case-insensitively (``Train``/``train``), or None."""
    if not data_dir.is_dir():
        return None
    for child in sorted(data_dir.iterdir()):
        if child.is_dir() and child.name.lower() == split.lower():
            return child
    return None


def list_images(split_dir: Path) -> list[Path]:
    """The annotated images of a split folder (those with a matching ``Labels/<stem>.mat``)."""
    images = sorted((split_dir / "Images").glob("*.png"))
    if not images:
        raise WsiCcrlError(f"no Images/*.png in {split_dir}; {HOW_TO_GET}")
    missing = [p.name for p in images if not (split_dir / "Labels" / f"{p.stem}.mat").is_file()]
    if missing:
        raise WsiCcrlError(
            f"{split_dir}: no Labels/<name>.mat for {len(missing)} images, e.g. {missing[0]}"
        )
    return images


def read_tile(image_path: Path, scheme: str) -> GroundTruthTile:
    """One image and its labelled nuclei (classes merged per ``scheme``)."""
    import scipy.io as sio
    from PIL import Image

    mapping = class_map(scheme)
    label_path = image_path.parent.parent / "Labels" / f"{image_path.stem}.mat"
    try:
        mat = sio.loadmat(label_path)
    except Exception as exc:
        raise WsiCcrlError(f"cannot read {label_path}: {exc}") from None
    if "inst_map" not in mat or "inst_type" not in mat:
        raise WsiCcrlError(f"{label_path}: expected inst_map and inst_type (CoNSeP format)")
    inst_map = np.asarray(mat["inst_map"]).astype(np.int32)
    inst_type = np.asarray(mat["inst_type"]).astype(np.int64).ravel()
    if inst_type.size and inst_type.max() >= mapping.size:
        raise WsiCcrlError(
            f"{label_path}: type {inst_type.max()} is outside the {scheme!r} scheme "
            f"(types 1..{mapping.size - 1}); is --class-scheme right?"
        )
    n_max = int(inst_map.max())
    per_id = np.full(max(n_max, inst_type.size) + 1, -1, np.int16)
    per_id[1 : inst_type.size + 1] = mapping[np.clip(inst_type, 0, None)]
    image = np.asarray(Image.open(image_path).convert("RGB"))
    if image.shape[:2] != inst_map.shape:
        raise WsiCcrlError(f"{image_path}: image {image.shape[:2]} vs labels {inst_map.shape}")
    nuclei = nuclei_from_instance_map(inst_map, per_id)
    return GroundTruthTile(image_path.name, image, nuclei, {"tile_id": tile_id(image_path.name)})


def resolve_split(data_dir: str | Path, split: str) -> str:
    """``auto`` → ``official`` when the folder has ``Train/`` and ``Test/``, else ``tiles``."""
    if split != "auto":
        return split
    data_dir = Path(data_dir)
    both = find_split_dir(data_dir, "train") and find_split_dir(data_dir, "test")
    return "official" if both else "tiles"


def split_images(
    data_dir: str | Path,
    split: str,
    train_tiles: tuple[int, ...] = (),
    test_tiles: tuple[int, ...] = (),
) -> dict[str, list[Path]]:
    """Image files of the ``train`` and ``test`` splits.

    Args:
        data_dir: the dataset root (holding ``Train``, and ``Test`` for the official split).
        split: ``official`` | ``tiles`` | ``auto`` (see :func:`resolve_split`).
        train_tiles, test_tiles: for ``tiles``, the source tiles of each split (disjoint); the
            "test" tiles are then a validation split carved from Train.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise WsiCcrlError(f"CoNSeP data folder not found: {data_dir}; {HOW_TO_GET}")
    train_dir = find_split_dir(data_dir, "train")
    split = resolve_split(data_dir, split)
    if split == "official":
        test_dir = find_split_dir(data_dir, "test")
        if train_dir is None or test_dir is None:
            raise WsiCcrlError(
                f"{data_dir}: the official split needs Train/ and Test/ folders; {HOW_TO_GET} "
                "(or use --split tiles to split one folder by source tile)"
            )
        return {"train": list_images(train_dir), "test": list_images(test_dir)}
    if split != "tiles":
        raise ConfigError(f"split must be official or tiles, got {split!r}")
    if not train_tiles or not test_tiles:
        raise ConfigError("split=tiles needs train_tiles and test_tiles (source tile numbers)")
    if set(train_tiles) & set(test_tiles):
        raise ConfigError(
            f"train and test tiles overlap: {sorted(set(train_tiles) & set(test_tiles))}"
        )
    source = train_dir if train_dir is not None else data_dir
    if not (source / "Images").is_dir():
        raise WsiCcrlError(f"{data_dir}: no Images/ folder (or Train/Images); {HOW_TO_GET}")
    images = list_images(source)
    ids = np.array([tile_id(p.name) for p in images])
    out = {
        "train": [p for p, t in zip(images, ids, strict=True) if t in set(train_tiles)],
        "test": [p for p, t in zip(images, ids, strict=True) if t in set(test_tiles)],
    }
    for name, files in out.items():
        if not files:
            raise WsiCcrlError(
                f"{source}: no images of the {name} tiles (found tiles {sorted(set(ids))})"
            )
    return out


def iter_tiles(images: list[Path], scheme: str) -> Iterator[GroundTruthTile]:
    for path in images:
        yield read_tile(path, scheme)


def typed_images(images: list[Path], scheme: str, split: str) -> list:
    """The images as ``TypedImage``: each nucleus's class at its centroid (for end-to-end scoring
    of detections); the slide is the source tile."""
    from wsi_ccrl.bench.datasets.common import TypedImage

    out = []
    for path in images:
        nuclei = read_tile(path, scheme).nuclei
        out.append(
            TypedImage(
                path=path,
                mpp=MPP,
                points=nuclei.centroid.astype(np.float64),
                classes=nuclei.gt_class.astype(np.int64),
                split=split,
                slide=f"tile {tile_id(path.name)}",
            )
        )
    return out


@register_dataset("consep")
class CoNSeP(BenchmarkDataset):
    """Outlines and types (the paper's protocol); the centroids typed (end to end); Train split
    by source tile when there is no Test/ folder."""

    classes = CLASSES

    def resolve_split(self, data_dir, split):
        return resolve_split(data_dir, split)

    def ground_truth_files(self, data_dir, cfg):
        class_map(cfg.class_scheme)
        split = self.resolve_split(data_dir, cfg.split)
        return split_images(data_dir, split, cfg.train_tiles, cfg.test_tiles)

    def ground_truth_tiles(self, files, cfg):
        return [p.name for p in files], iter_tiles(files, cfg.class_scheme), MPP, cfg.class_scheme

    def typed_images(self, data_dir, cfg, splits):
        files = self.ground_truth_files(data_dir, cfg)
        return [im for s in splits for im in typed_images(files[s], cfg.class_scheme, s)]

    def describe(self, cfg, splits):
        if cfg.split == "tiles" and splits == ("test",):
            return f"validation: tiles {ranges(list(cfg.test_tiles))} of Train, held out by tile"
        return super().describe(cfg, splits)
