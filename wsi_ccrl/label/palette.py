"""Cluster names and colours: a fixed, distinguishable palette, renamed by a ``--names`` YAML file.

The same cluster gets the same colour in every export (GeoJSON, CSV, overview, gallery) and on every
slide. A names file maps cluster ids to a name and, optionally, a colour::

    0: Lymphocyte
    1: {name: Tumour, color: [200, 30, 30]}
    3: {name: Stroma, color: "#2ca02c"}

Clusters not in the file keep ``Cluster <i>`` and their palette colour.

Names become QuPath classifications, so QuPath's rules apply (``PathClass``, 0.4-0.6): ``:`` splits
a name into a derived class ("Tumour: CD8" is CD8 under Tumour) and a trailing ``*`` marks a class
QuPath ignores in measurements, so both are refused; a built-in class (Tumor, Stroma, Immune
cells, ...) already exists in QuPath with its own colour, which wins over the file's, so it is
allowed with a warning.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.log import get_logger

log = get_logger(__name__)

RGB = tuple[int, int, int]

# Kelly's / Glasbey-style colours, ordered so the first few are the most distinct on H&E pink/purple.
BASE_PALETTE: tuple[RGB, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (128, 128, 0),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
    (0, 0, 128),
    (170, 255, 195),
    (210, 245, 60),
    (250, 190, 212),
    (255, 215, 180),
    (220, 190, 255),
    (128, 128, 128),
    (0, 0, 0),
)
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
# QuPath's PathClass.StandardPathClasses and intensity classes: created at start-up, colours fixed
QUPATH_BUILT_IN_CLASSES = (
    "Tumor", "Non-tumor", "Stroma", "Immune cells", "Necrosis", "Other", "Region*", "Ignore*",
    "Image", "Positive", "Negative", "1+", "2+", "3+",
)  # fmt: skip


def palette(k: int) -> list[RGB]:
    """``k`` fixed colours: the base palette, then golden-ratio hues for larger ``k``."""
    colours = list(BASE_PALETTE[:k])
    for i in range(len(colours), k):
        hue = (i * 0.618033988749895) % 1.0
        light = 0.45 + 0.2 * ((i // len(BASE_PALETTE)) % 2)
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


@dataclass(frozen=True)
class ClusterStyles:
    """Name and colour of each cluster id ``0..k-1``."""

    names: tuple[str, ...]
    colours: tuple[RGB, ...]

    @property
    def k(self) -> int:
        return len(self.names)

    def as_dict(self) -> dict[int, dict[str, Any]]:
        return {i: {"name": n, "color": list(c)} for i, (n, c) in enumerate(self.styles())}

    def styles(self) -> list[tuple[str, RGB]]:
        return list(zip(self.names, self.colours, strict=True))


def cluster_styles(k: int, names_path: str | Path | None = None) -> ClusterStyles:
    """Default names/colours for ``k`` clusters, overridden by a names file when given."""
    names = [f"Cluster {i}" for i in range(k)]
    colours = palette(k)
    if names_path is not None:
        for cluster, (name, colour) in load_names(names_path, k).items():
            names[cluster] = name
            if colour is not None:
                colours[cluster] = colour
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise WsiCcrlError(f"{names_path}: cluster name {dup!r} is used twice")
    return ClusterStyles(tuple(names), tuple(colours))


def load_names(path: str | Path, k: int) -> dict[int, tuple[str, RGB | None]]:
    """Read and validate a names file: ``{cluster: (name, colour or None)}``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WsiCcrlError(f"cannot read names file {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise WsiCcrlError(f"names file {path} is not valid YAML") from None
    if not isinstance(data, dict) or not data:
        raise WsiCcrlError(f"names file {path}: expected a mapping 'cluster id: name'")
    out: dict[int, tuple[str, RGB | None]] = {}
    for key, value in data.items():
        cluster = _cluster_id(key, k, path)
        if isinstance(value, str):
            name, colour = value, None
        elif isinstance(value, dict):
            unknown = set(value) - {"name", "color", "colour"}
            if unknown:
                raise WsiCcrlError(
                    f"names file {path}: cluster {cluster}: unknown key {sorted(unknown)[0]!r}"
                )
            name = value.get("name", f"Cluster {cluster}")
            raw = value.get("color", value.get("colour"))
            colour = None if raw is None else _colour(raw, cluster, path)
        else:
            raise WsiCcrlError(
                f"names file {path}: cluster {cluster}: expected a name or {{name, color}}"
            )
        if not isinstance(name, str) or not name.strip():
            raise WsiCcrlError(
                f"names file {path}: cluster {cluster}: name must be a non-empty string"
            )
        out[cluster] = (check_class_name(name.strip(), cluster, path), colour)
    return out


def check_class_name(name: str, cluster: int, path: Path) -> str:
    """``name`` if QuPath reads it as one plain class; a one-line error if not."""
    where = f"names file {path}: cluster {cluster}: {name!r}"
    if ":" in name:
        raise WsiCcrlError(
            f"{where} contains ':', which QuPath reads as a derived class (parent: child); "
            "use another character"
        )
    if name.endswith("*"):
        raise WsiCcrlError(
            f"{where} ends with '*', which makes an ignored class in QuPath (excluded from "
            "measurements); drop the '*'"
        )
    if "\n" in name or "\r" in name:
        raise WsiCcrlError(f"{where} contains a line break, which QuPath refuses in a class name")
    if name in QUPATH_BUILT_IN_CLASSES:
        log.warning(
            "%s is a built-in QuPath class: QuPath shows it in its own colour, not the one given "
            "here, and its classifiers already use the name; choose another name to keep both "
            "apart",
            where,
        )
    return name


def _cluster_id(key: Any, k: int, path: Path) -> int:
    try:
        cluster = int(key)
    except (TypeError, ValueError):
        raise WsiCcrlError(f"names file {path}: {key!r} is not a cluster id") from None
    if isinstance(key, bool) or str(cluster) != str(key).strip() or not 0 <= cluster < k:
        raise WsiCcrlError(f"names file {path}: cluster id {key!r} is not in 0..{k - 1}")
    return cluster


def _colour(raw: Any, cluster: int, path: Path) -> RGB:
    if isinstance(raw, str):
        match = _HEX.match(raw.strip())
        if match:
            h = match.group(1)
            return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    elif (
        isinstance(raw, (list, tuple))
        and len(raw) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in raw)
    ):
        return (int(raw[0]), int(raw[1]), int(raw[2]))
    raise WsiCcrlError(
        f"names file {path}: cluster {cluster}: color must be [r, g, b] (0-255) or '#rrggbb', "
        f"got {raw!r}"
    )
