"""Benchmark data sets by name. A new one is one module here with one ``@register_dataset`` class:
the config's ``benchmark.dataset``, ``wsi-ccrl benchmark DATASET``, the paper's protocol (its
ground-truth cells) and the end-to-end run (its typed nuclei) all read this registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_ccrl.errors import ConfigError
from wsi_ccrl.registry import Registry

if TYPE_CHECKING:
    from wsi_ccrl.bench.datasets.common import GroundTruthTile, TypedImage
    from wsi_ccrl.config import BenchmarkConfig

# name -> BenchmarkDataset class; the shipped ones are imported on first use
DATASETS = Registry(
    {
        "consep": "wsi_ccrl.bench.datasets.consep",
        "nucls": "wsi_ccrl.bench.datasets.nucls",
        "brca-m2c": "wsi_ccrl.bench.datasets.brca_m2c",
    },
    "benchmark.dataset: unknown {name!r} (known: {known})",
)


class BenchmarkDataset:
    """What the benchmark needs of a data set; a data set implements what it has (nucleus
    outlines for the paper's protocol, typed nuclei for the end-to-end run)."""

    name: str = ""
    classes: tuple[str, ...] = ()
    cells: str = "ground-truth"  # the default of --cells: ground-truth | detected
    cohort: tuple[str, ...] = (
        "train",
        "test",
    )  # --cells detected: splits segmented, the last scored

    def resolve_split(self, data_dir: str | Path, split: str) -> str:
        """``auto`` made concrete."""
        return "official" if split == "auto" else split

    def ground_truth_files(self, data_dir: str | Path, cfg: BenchmarkConfig) -> dict[str, list]:
        """Each split's files, for the paper's protocol; a clear error when they are absent."""
        raise ConfigError(f"{self.name} has no nucleus outlines: use --cells detected")

    def ground_truth_tiles(
        self, files: list, cfg: BenchmarkConfig
    ) -> tuple[list[str], Iterator[GroundTruthTile], float, str]:
        """(file names, tiles with their true nuclei, µm/px, class scheme) of one split."""
        raise ConfigError(f"{self.name} has no nucleus outlines: use --cells detected")

    def typed_images(
        self, data_dir: str | Path, cfg: BenchmarkConfig, splits: tuple[str, ...]
    ) -> list[TypedImage]:
        """The images of ``splits`` with their typed nuclei, for the end-to-end run."""
        raise ConfigError(f"end-to-end scoring needs typed nuclei, which {self.name} lacks")

    def describe(self, cfg: BenchmarkConfig, splits: tuple[str, ...]) -> str:
        """The scored images, in words."""
        return f"{self.name} {', '.join(splits)} split"


register_dataset = DATASETS.register  # ``@register_dataset("consep")`` on a BenchmarkDataset
dataset_names = DATASETS.names


def get_dataset(name: str) -> BenchmarkDataset:
    """The data set ``name`` (importing the module that registers it if need be)."""
    return DATASETS.entry(name)()
