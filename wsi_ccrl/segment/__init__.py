"""Nucleus segmenters behind one interface, chosen by name (``SegmentConfig.segmenter``).

``auto`` picks HoVer-Net when its weights are at hand (``--weights`` or TIAToolbox's cache), else the
bundled learned ``embedded`` segmenter when it is installed, else the classical ``watershed``; one log
line says which and why. Segmenter modules are imported lazily so that the heavy ones (TIAToolbox)
are loaded only when used.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_ccrl.log import get_logger
from wsi_ccrl.registry import Registry
from wsi_ccrl.segment.base import Nuclei, Segmenter, nuclei_from_labels

if TYPE_CHECKING:
    from wsi_ccrl.config import SegmentConfig

__all__ = [
    "SEGMENTERS",
    "Nuclei",
    "Segmenter",
    "build_segmenter",
    "nuclei_from_labels",
    "register",
    "resolve_segmenter",
    "segmenter_names",
]

log = get_logger(__name__)

# name -> factory (SegmentConfig -> Segmenter); the shipped ones load on first use (hovernet pulls
# in TIAToolbox)
SEGMENTERS = Registry(
    {
        "watershed": "wsi_ccrl.segment.watershed",
        "hovernet": "wsi_ccrl.segment.hovernet",
        "embedded": "wsi_ccrl.segment.embedded",
    },
    "segment.segmenter: unknown {name!r} (known: auto, {known})",
)


def register(name: str) -> Callable:
    """Class/factory decorator: ``@register("watershed")`` makes it buildable by name
    (``segment.segmenter`` / ``--segmenter``)."""
    return SEGMENTERS.register(name)


def segmenter_names() -> tuple[str, ...]:
    """Every name ``segment.segmenter`` accepts: ``auto`` and the registered segmenters."""
    return ("auto", *SEGMENTERS.names())


def tiatoolbox_home() -> Path:
    """TIAToolbox's cache folder: its ``rcParam["TIATOOLBOX_HOME"]`` when TIAToolbox is already
    imported (a script may have moved it), else its default, ``~/.tiatoolbox`` (importing
    TIAToolbox only to read this costs seconds)."""
    module = sys.modules.get("tiatoolbox")
    if module is not None and hasattr(module, "rcParam"):
        return Path(module.rcParam["TIATOOLBOX_HOME"])
    return Path.home() / ".tiatoolbox"


def tiatoolbox_cached_weights(model: str) -> Path | None:
    """Where TIAToolbox keeps ``model``'s downloaded weights, if they are there."""
    path = tiatoolbox_home() / "models" / f"{model}.pth"
    return path if path.is_file() else None


def resolve_segmenter(cfg: SegmentConfig) -> tuple[str, str]:
    """(segmenter name, reason) for ``cfg.segmenter``, resolving ``auto``."""
    if cfg.segmenter != "auto":
        return cfg.segmenter, "chosen in the config/options"
    if cfg.weights:
        return "hovernet", f"--weights {cfg.weights} given"
    cached = tiatoolbox_cached_weights(cfg.model)
    if cached is not None:
        return "hovernet", f"{cfg.model} weights found in TIAToolbox's cache ({cached})"
    if SEGMENTERS.load("embedded"):
        return "embedded", f"no HoVer-Net weights at hand ({cfg.model} not cached, no --weights)"
    return "watershed", (
        f"no HoVer-Net weights at hand ({cfg.model} not cached, no --weights) "
        "and no embedded segmenter installed"
    )


def build_segmenter(cfg: SegmentConfig) -> Segmenter:
    """The segmenter named by ``cfg.segmenter`` (``auto`` resolved, with one log line)."""
    name, reason = resolve_segmenter(cfg)
    if cfg.segmenter == "auto":
        log.info("segmenter: %s (auto: %s)", name, reason)
    return SEGMENTERS.entry(name)(cfg)


# the learned segmenter is an optional module; its absence is harmless
SEGMENTERS.load("embedded")
