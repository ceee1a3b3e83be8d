"""Probe: does telling CCRL which pixels are the nucleus help? Dims each crop outside its nucleus.

CCRL's crop shows the nucleus with its surroundings (the window is twice the nucleus box), and
nothing says which pixels belong to the nucleus; a mask input channel would. This probe asks the
question without a new input channel: it rasterises every cell's contour into its crop (the crop
rule's own window, ``wsi_ccrl.io.crops.crop_windows``), dilates it by ``--dilate`` crop pixels and
multiplies the pixels outside by ``--factor``, rewriting the benchmark stores' crops in place. A
``wsi-ccrl benchmark`` run on those stores (they are reused: their attributes are unchanged) then
trains and scores CCRL and the crop-based baselines on the marked crops. Probe only: the dimmed
pixels are not the image's, which the crop rule forbids in a real store.

    OMP_NUM_THREADS=1 wsi-ccrl benchmark consep ... --config fold2-baselines-rawpixels.yaml --out R
    python benchmarks/mask_dim_probe.py R/stores          # dims both stores, prints a table
    OMP_NUM_THREADS=1 wsi-ccrl benchmark consep ... --config <the variant> --out R
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from wsi_ccrl.io.crops import crop_windows
from wsi_ccrl.io.store import CellStore

MARK = "mask_dim_probe"  # store attribute: the stores already dimmed, with what


def nucleus_masks(store: CellStore, dilate: int) -> np.ndarray:
    """(N, S, S) bool: each cell's contour in its crop's frame, dilated by ``dilate`` px."""
    crop = store.attrs["crop"]
    size = store.crop_size
    windows = crop_windows(store["bbox"][:], crop["window_scale"], crop["min_window"])
    scale = size / (windows[:, 2] - windows[:, 0])
    offsets, xy = store.contours()
    masks = np.zeros((store.n_cells, size, size), np.uint8)
    kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8) if dilate else None
    for i in range(store.n_cells):  # a probe over ~20k cells; cv2 rasterises one polygon each
        poly = (xy[offsets[i] : offsets[i + 1]] - windows[i, :2]) * scale[i]
        cv2.fillPoly(masks[i], [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
        if kernel is not None:
            masks[i] = cv2.dilate(masks[i], kernel)
    return masks.astype(bool)


def dim_store(path: Path, factor: float, dilate: int) -> tuple[int, float]:
    """Dim one store's crops outside the nuclei; returns (cells, mean nucleus share of a crop)."""
    store = CellStore.open(path, mode="r+")
    if MARK in store.attrs:
        sys.exit(f"{path} is already dimmed ({store.attrs[MARK]}); rebuild it first")
    masks = nucleus_masks(store, dilate)
    crops = store["crops"][:]
    dimmed = np.where(masks[..., None], crops, np.round(crops * factor)).astype(np.uint8)
    store["crops"][:] = dimmed
    store.update_attrs(**{MARK: {"factor": factor, "dilate": dilate}})
    return store.n_cells, float(masks.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", type=Path, help="a benchmark run's stores/ folder")
    parser.add_argument("--factor", type=float, default=0.5, help="multiplier outside the mask")
    parser.add_argument("--dilate", type=int, default=1, help="mask dilation, crop pixels")
    args = parser.parse_args()
    if not 0.0 <= args.factor <= 1.0 or args.dilate < 0:
        sys.exit("--factor must lie in [0, 1] and --dilate be >= 0")
    paths = sorted(p for p in args.stores.glob("*.zarr"))
    if not paths:
        sys.exit(f"no .zarr stores in {args.stores}")
    print(
        f"| store | cells | nucleus share of the crop |  (factor {args.factor}, dilate {args.dilate})"
    )
    print("|---|---:|---:|")
    for path in paths:
        n, share = dim_store(path, args.factor, args.dilate)
        print(f"| {path.name} | {n} | {share:.2f} |")


if __name__ == "__main__":
    main()
