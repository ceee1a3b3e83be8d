"""Ablation: CCRL on crops cut from Reinhard-normalised images (rejected; BENCHMARKS.md).

Runs ``wsi-ccrl benchmark`` with every CoNSeP patch Reinhard-normalised to the CoNSeP reference
(``wsi_ccrl.io.stain``) with the pooled statistics of its source tile, the way ``segment`` would
normalise a slide with its whole-slide statistics. Same arguments as the benchmark command:

    OMP_NUM_THREADS=1 python benchmarks/reinhard_crops.py benchmark consep \\
        --data-dir ../shared/data/consep-patches --split tiles --device cpu \\
        --config benchmarks/folds/fold1-baselines.yaml --out runs/reinhard/fold1
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsi_ccrl.bench.datasets import consep  # noqa: E402
from wsi_ccrl.io.stain import CONSEP_REFERENCE, reinhard_normalize, slide_statistics  # noqa: E402

_read_all = consep.iter_tiles


def normalised_tiles(images, scheme):
    """``consep.iter_tiles`` with each image normalised by its source tile's statistics."""
    groups = defaultdict(list)
    for path in images:
        groups[consep.tile_id(path.name)].append(path)
    stats = {
        tile: slide_statistics([np.asarray(Image.open(p).convert("RGB")) for p in paths])
        for tile, paths in groups.items()
    }
    for tile in _read_all(images, scheme):
        tile.image = reinhard_normalize(
            tile.image, CONSEP_REFERENCE, stats[consep.tile_id(tile.name)]
        )
        yield tile


if __name__ == "__main__":
    consep.iter_tiles = normalised_tiles  # the benchmark reads tiles through this name
    from wsi_ccrl_cli.main import cli

    sys.exit(cli())
