"""Ablation input: a grey-scale copy of a CoNSeP patch folder (luminance in all three channels).

Tests whether CCRL's tile-bound clusters on validation fold 2 come from the stain's hue: every
model of the benchmark then sees the same cells without colour (labels copied unchanged).

    python benchmarks/grey_patches.py ../shared/data/consep-patches /tmp/consep-grey
    OMP_NUM_THREADS=1 wsi-ccrl benchmark consep --data-dir /tmp/consep-grey --split tiles \\
        --device cpu --config benchmarks/folds/fold2-baselines.yaml --out runs/fold2-grey
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="a folder with Train/Images and Train/Labels")
    parser.add_argument("dst", type=Path)
    args = parser.parse_args()
    files = [p for p in sorted(args.src.rglob("*")) if p.is_file()]
    for path in files:
        out = args.dst / path.relative_to(args.src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            Image.open(path).convert("RGB").convert("L").convert("RGB").save(out)
        else:
            shutil.copy(path, out)
    print(f"{len(files)} files written under {args.dst}")


if __name__ == "__main__":
    main()
