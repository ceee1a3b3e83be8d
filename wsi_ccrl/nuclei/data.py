"""Labelled nucleus images from several sources, at one resolution, with a fixed held-back split.

Sources come in CoNSeP's layout (``Images/<name>.png``, ``Labels/<name>.mat`` with ``inst_map``).
Each is read at 0.25 µm/px: CPM-15's 20x images (``magnification.json``) are resampled x2 (labels
by nearest neighbour). The split holds back whole images, chosen per source and, for MoNuSeg,
per organ (one image of each of its 7 organs), so validation measures tissue the network never
saw; CoNSeP keeps its earlier split by source tile (tiles 21-27), so v2 is compared fairly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from wsi_ccrl.errors import WsiCcrlError

__all__ = [
    "HELD_BACK",
    "LabelledImage",
    "SOURCES",
    "image_group",
    "load_source",
    "load_sources",
    "split",
]

MPP = 0.25
SOURCES = ("consep", "monuseg", "cpm15")

# MoNuSeg 2018 training images by organ (the challenge's own listing; TCGA site codes 18/21/38/
# 49/50 are listed as liver there)
MONUSEG_ORGAN = {
    "breast": ("A7-A13E", "A7-A13F", "AR-A1AK", "AR-A1AS", "E2-A14V", "E2-A1B5"),
    "kidney": ("B0-5698", "B0-5710", "B0-5711", "HE-7128", "HE-7129", "HE-7130"),
    "liver": ("18-5592", "21-5784", "21-5786", "38-6178", "49-4488", "50-5931"),
    "prostate": ("G9-6336", "G9-6348", "G9-6356", "G9-6362", "G9-6363", "CH-5767"),
    "bladder": ("DK-A2I6", "G2-A2EK"),
    "colon": ("AY-A8YK", "NH-A8F7"),
    "stomach": ("KB-A93J", "RD-A8N9"),
}

# whole images never trained on or tuned with: validation of every choice
HELD_BACK = {
    "consep": tuple(f"tile{t}" for t in range(21, 28)),
    "monuseg": ("E2-A1B5", "HE-7130", "50-5931", "G9-6363", "G2-A2EK", "NH-A8F7", "RD-A8N9"),
    "cpm15": ("image03", "image06", "image12", "image15"),
}

_CONSEP_NAME = re.compile(r"_(\d+)_(\d+)$")
_TCGA = re.compile(r"TCGA-([0-9A-Z]{2}-[0-9A-Z]{4})")


@dataclass
class LabelledImage:
    """One labelled image at 0.25 µm/px.

    ``group`` is the unit of the split (a CoNSeP source tile, a MoNuSeg or CPM-15 image).
    """

    name: str
    source: str
    group: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    inst: np.ndarray  # (H, W) int32, 0 = background


def image_group(source: str, name: str) -> str:
    """The split unit of an image: its CoNSeP source tile, else the image itself."""
    if source == "consep":
        match = _CONSEP_NAME.search(name)
        if match is None:
            raise WsiCcrlError(f"CoNSeP patch name {name} does not end in _<tile>_<k>")
        return f"tile{int(match.group(1))}"
    if source == "monuseg":
        match = _TCGA.search(name)
        return match.group(1) if match else name
    return name


def monuseg_organ(name: str) -> str:
    """MoNuSeg organ of an image name (``unknown`` if not listed)."""
    group = image_group("monuseg", name)
    return next((o for o, ids in MONUSEG_ORGAN.items() if group in ids), "unknown")


def load_source(
    folder: str | Path, source: str, names: set[str] | None = None
) -> list[LabelledImage]:
    """Every labelled image of one source folder, resampled to 0.25 µm/px.

    Args:
        folder: ``Images/*.png`` + ``Labels/*.mat`` (``inst_map``); an optional
            ``magnification.json`` maps image stems to ``"20x"`` / ``"40x"`` (default 40x).
        source: one of ``SOURCES`` (decides the split unit).
        names: keep only these groups (see ``image_group``), e.g. the held-back ones.
    """
    if source not in SOURCES:
        raise WsiCcrlError(f"unknown nucleus source {source!r}; expected one of {SOURCES}")
    folder = Path(folder)
    paths = sorted((folder / "Images").glob("*.png"))
    if not paths:
        raise WsiCcrlError(
            f"no images in {folder / 'Images'} (expected <name>.png + Labels/<name>.mat)"
        )
    mag_file = folder / "magnification.json"
    magnification = json.loads(mag_file.read_text()) if mag_file.is_file() else {}
    out = []
    for path in paths:
        group = image_group(source, path.stem)
        if names is not None and group not in names:
            continue
        label_path = folder / "Labels" / f"{path.stem}.mat"
        if not label_path.is_file():
            raise WsiCcrlError(f"missing labels {label_path} for {path.name}")
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        inst = scipy.io.loadmat(label_path)["inst_map"].astype(np.int32)
        if inst.shape != image.shape[:2]:
            raise WsiCcrlError(f"{label_path}: inst_map {inst.shape} != image {image.shape[:2]}")
        mag = str(magnification.get(path.stem, "40x")).lower()
        if mag not in ("20x", "40x"):
            raise WsiCcrlError(f"{mag_file}: {path.stem} has magnification {mag!r}, not 20x/40x")
        if mag == "20x":  # ~0.5 µm/px -> 0.25
            h, w = inst.shape
            image = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
            inst = cv2.resize(inst, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
        out.append(LabelledImage(path.stem, source, group, image, inst))
    if not out:
        raise WsiCcrlError(f"no images of {sorted(names or [])} in {folder}")
    return out


def load_sources(folders: dict[str, str | Path]) -> list[LabelledImage]:
    """``load_source`` of every ``{source: folder}``."""
    images: list[LabelledImage] = []
    for source, folder in folders.items():
        images += load_source(folder, source)
    return images


def split(images: list[LabelledImage]) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(train, held back) by ``HELD_BACK``: whole groups, never single patches."""
    held = [im for im in images if im.group in HELD_BACK.get(im.source, ())]
    train = [im for im in images if im.group not in HELD_BACK.get(im.source, ())]
    return train, held
