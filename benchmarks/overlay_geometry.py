"""What the exported outlines cost and keep: vertices, area and pixels of real nuclei per tolerance.

Nuclei: the ground-truth instance masks of CoNSeP patches (40x, 0.25 µm/px; the full set in
../shared/data/consep-patches when present, else the 27 in tests/fixtures). Each nucleus is traced
as ``segment`` stores it (OpenCV contour, then ``edge_contours``) and shaped as ``export`` writes it
(``cell_shapes``) at several tolerances; "before" is the outline earlier versions wrote (OpenCV's
contour through the border pixel centres). Per outline: vertices, area against the pixel count,
and IoU of the pixels whose centre it holds with the nucleus' pixels (QuPath's own rasterisation
rule). Nuclei traced as one piece without holes only (the outline has no holes, and other pieces
are not traced); the count of the rest is given. With ``--store``, the same per-tolerance figures
(without IoU) for the outlines of a real cell store, e.g. the demo's, against their exact outline.

    python benchmarks/overlay_geometry.py
    python benchmarks/overlay_geometry.py --store demo-out/stores/CMU-1-Small-Region.zarr
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "consep-patches" / "Train"
FIXTURES = ROOT / "tests" / "fixtures" / "consep" / "Train"
TOLERANCES = (0.0, 0.25, 0.5, 0.75, 1.0)


def load_nuclei(data: Path, limit: int | None):
    """Per patch: instance map, OpenCV contours (CSR), exact pixel-edge outlines, areas, boxes."""
    import scipy.io
    from scipy import ndimage as ndi

    from wsi_ccrl.io.contours import edge_contours
    from wsi_ccrl.segment.base import nuclei_from_labels

    for mat in sorted((data / "Labels").glob("*.mat"))[:limit]:
        inst = scipy.io.loadmat(mat)["inst_map"].astype(np.int32)
        nuc = nuclei_from_labels(inst)
        labels = np.unique(inst)[1:]
        whole = np.array(
            [
                ndi.label(inst == i, np.ones((3, 3)))[1] == 1
                and ndi.binary_fill_holes(inst == i).sum() == (inst == i).sum()
                for i in labels
            ],
            bool,
        )
        if not labels.size:
            continue
        e_off, e_xy = edge_contours(nuc.contour_offsets, nuc.contour_xy)
        yield inst, labels, nuc, e_off, e_xy + 0.5, whole


def iou(geom, inst, label) -> float:
    """IoU of the pixels whose centre ``geom`` holds with the pixels of ``label``."""
    import shapely

    ys, xs = np.nonzero(inst == label)
    r0, r1, c0, c1 = ys.min() - 2, ys.max() + 3, xs.min() - 2, xs.max() + 3
    gy, gx = np.mgrid[r0:r1, c0:c1]
    inside = shapely.contains_xy(geom, gx + 0.5, gy + 0.5)
    truth = np.pad(inst, 3)[r0 + 3 : r1 + 3, c0 + 3 : c1 + 3] == label
    return float((inside & truth).sum() / (inside | truth).sum())


def geometries(shapes):
    import shapely

    return shapely.from_ragged_array(
        shapely.GeometryType.MULTIPOLYGON,
        shapes.xy,
        (shapes.ring_offsets, shapes.polygon_offsets, shapes.cell_offsets),
    )


def measure_consep(data: Path, limit: int | None) -> tuple[list[str], dict]:
    import shapely

    from wsi_ccrl.label.overlay import cell_shapes

    rows: dict = {t: {"v": [], "da": [], "iou": [], "valid": [], "multi": 0} for t in TOLERANCES}
    before = {"v": [], "ratio": [], "iou": []}
    n_all = n_whole = 0
    for inst, labels, nuc, e_off, e_xy, whole in load_nuclei(data, limit):
        n_all += len(labels)
        n_whole += int(whole.sum())
        pixels = nuc.area.astype(np.float64)
        # before: OpenCV's contour through the pixel centres (what earlier versions exported)
        old = shapely.polygons(
            shapely.linearrings(
                nuc.contour_xy,  # pixel j spanned [j - 0.5, j + 0.5]: -0.5 in QuPath's frame
                indices=np.repeat(np.arange(len(labels)), np.diff(nuc.contour_offsets)),
            )
        ) if (np.diff(nuc.contour_offsets) >= 3).all() else None  # fmt: skip
        if old is not None:
            before["v"] += (np.diff(nuc.contour_offsets)[whole]).tolist()
            before["ratio"] += (pixels / shapely.area(old))[whole].tolist()
            before["iou"] += [iou(old[i], inst, labels[i]) for i in np.flatnonzero(whole)]
        for t in TOLERANCES:
            s = cell_shapes(e_off, e_xy, nuc.bbox, simplify=t)
            geoms = geometries(s)
            r = rows[t]
            r["v"] += (np.diff(s.ring_offsets)[s.polygon_offsets[s.cell_offsets[:-1]]] - 1)[
                whole
            ].tolist()
            r["da"] += ((s.area - pixels) / pixels)[whole].tolist()
            r["valid"] += shapely.is_valid(geoms).tolist()
            r["multi"] += int((np.diff(s.cell_offsets) > 1).sum())
            r["iou"] += [iou(geoms[i], inst, labels[i]) for i in np.flatnonzero(whole)]
    return _consep_table(rows, before, n_all, n_whole)


def _consep_table(rows, before, n_all, n_whole) -> tuple[list[str], dict]:
    v0 = np.mean(rows[0.0]["v"])
    lines = [
        f"Nuclei: {n_whole:,} traced whole of {n_all:,} ({n_all - n_whole} in pieces or with holes "
        "left out of the table).",
        "",
        "| outline | vertices / nucleus | vs exact | area − pixels: median | |Δ| p99 | |Δ| max "
        "| IoU median | IoU p1 | IoU min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    b = {k: np.asarray(v) for k, v in before.items()}
    lines.append(
        f"| before: pixel centres (OpenCV), −0.5 px | {b['v'].mean():.1f} | "
        f"{b['v'].mean() / v0 - 1:+.0%} | {np.median(1 / b['ratio']) - 1:+.1%} | "
        f"{np.percentile(np.abs(1 / b['ratio'] - 1), 99):.1%} | {np.abs(1 / b['ratio'] - 1).max():.1%} | "
        f"{np.median(b['iou']):.3f} | {np.percentile(b['iou'], 1):.3f} | {b['iou'].min():.3f} |"
    )
    summary = {"before_ratio_median": float(np.median(b["ratio"]))}
    for t, r in rows.items():
        v, da, io = np.asarray(r["v"]), np.asarray(r["da"]), np.asarray(r["iou"])
        name = (
            "exact pixel edges"
            if t == 0
            else f"simplify {t:g}" + (" (default)" if t == 0.5 else "")
        )
        lines.append(
            f"| {name} | {v.mean():.1f} | {v.mean() / v0 - 1:+.0%} | {np.median(da):+.2%} | "
            f"{np.percentile(np.abs(da), 99):.2%} | {np.abs(da).max():.2%} | {np.median(io):.3f} | "
            f"{np.percentile(io, 1):.3f} | {io.min():.3f} |"
        )
        assert all(r["valid"]), "an invalid geometry"
        summary[t] = {"vertices": float(v.mean()), "area_median": float(np.median(da))}
    return lines, summary


def measure_store(path: Path) -> list[str]:
    from wsi_ccrl.io.contours import legacy_shift
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.export import outline_pitch
    from wsi_ccrl.label.overlay import cell_shapes

    store = CellStore.open(path)
    offsets, xy = store.contours()
    bbox = store["bbox"][:]
    pitch, shift = outline_pitch(store.attrs), legacy_shift(store.attrs)
    exact = cell_shapes(offsets, xy, bbox, simplify=0, pitch=pitch, legacy_shift=shift)
    lines = [
        f"Store: {path.name}, {store.n_cells:,} cells, outline pixel = {pitch:.3f} level-0 px.",
        "",
        "| outline | vertices / cell | vs exact | area change: median | |Δ| p99 | |Δ| max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for t in TOLERANCES:
        s = cell_shapes(offsets, xy, bbox, simplify=t, pitch=pitch, legacy_shift=shift)
        da = (s.area - exact.area) / exact.area
        v = s.vertices() / s.n_cells
        name = (
            "exact pixel edges"
            if t == 0
            else f"simplify {t:g}" + (" (default)" if t == 0.5 else "")
        )
        lines.append(
            f"| {name} | {v:.1f} | {v / (exact.vertices() / exact.n_cells) - 1:+.0%} | "
            f"{np.median(da):+.2%} | {np.percentile(np.abs(da), 99):.2%} | {np.abs(da).max():.2%} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED if SHARED.exists() else FIXTURES)
    parser.add_argument("--limit", type=int, default=None, help="first N patches only")
    parser.add_argument("--store", type=Path, action="append", default=[])
    args = parser.parse_args()
    t0 = time.perf_counter()
    lines = [
        f"# Overlay geometry ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Data: {args.data} (CoNSeP ground truth, 40x).",
        "",
    ]
    table, _ = measure_consep(args.data, args.limit)
    lines += table
    for store in args.store:
        lines += ["", *measure_store(store)]
    lines += ["", f"({time.perf_counter() - t0:.0f} s)"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
