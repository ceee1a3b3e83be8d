"""Peak memory and time of ``label --export anndata`` on a synthetic labelled cohort.

Builds stores of random 512-d float16 embeddings (the store's dtype) with clusters, centroids,
areas and segmenter types, then writes the .h5ad in a fresh process and reports its peak resident
memory beside what holding the embeddings (float32) would take; ``--naive`` also measures an
AnnData built in memory and written by anndata, for comparison.

    python benchmarks/export_anndata.py --cells 1000000 --slides 4 [--naive] [--out results.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 512


def build(root: Path, cells: int, slides: int) -> list[Path]:
    """``slides`` labelled stores holding ``cells`` cells in all (3-point outlines, 8 px crops)."""
    from wsi_ccrl.io.contours import SEGMENT_CONTOURS
    from wsi_ccrl.io.store import CellBatch, CellStore, CellStoreWriter

    rng = np.random.default_rng(0)
    paths = []
    for s, n in enumerate(np.diff(np.linspace(0, cells, slides + 1).astype(int))):
        attrs = {"slide": {"path": f"slide{s}.svs", "mpp": 0.25}, "contour": SEGMENT_CONTOURS}
        writer = CellStoreWriter(root / f"slide{s}.zarr", 8, attrs, chunk_cells=65536)
        for a in range(0, n, 65536):
            m = min(65536, n - a)
            xy = rng.uniform(0, 90_000, (m, 2)).astype(np.float32)
            tri = np.stack([xy, xy + [6, 0], xy + [0, 6]], 1).reshape(-1, 2)
            writer.add(
                CellBatch(
                    crops=np.zeros((m, 8, 8, 3), np.uint8),
                    centroid=xy + 2,
                    bbox=np.hstack([xy, xy + 7]).astype(np.int32),
                    area=rng.uniform(20, 200, m).astype(np.float32),
                    seg_type=rng.integers(0, 5, m).astype(np.int16),
                    seg_prob=rng.uniform(0.5, 1, m).astype(np.float32),
                    contour_offsets=np.arange(0, 3 * m + 1, 3),
                    contour_xy=tri,
                )
            )
        store = CellStore.open(writer.finalize().path, mode="r+")
        emb = store.create_column("embedding", np.float16, (DIM,))
        for a, b in store.iter_ranges():
            emb[a:b] = rng.standard_normal((b - a, DIM)).astype(np.float16)
        store.write_column("cluster", rng.integers(0, 8, n).astype(np.int16))
        store.write_column("cluster_distance", rng.uniform(0, 2, n).astype(np.float32))
        store.update_attrs(
            embedding={"model_sha256": "0" * 64, "encoder": "momentum", "dim": DIM},
            label={"model": "model.pt", "model_sha256": "0" * 64, "encoder": "momentum", "k": 8},
        )
        paths.append(store.path)
    return paths


def measure(paths: list[str], out: str, naive: bool) -> dict:
    """Run in a fresh process: peak RSS above the imports' while writing ``out``."""
    import anndata  # noqa: F401  (imported before the baseline)
    import h5py  # noqa: F401
    import pandas  # noqa: F401

    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.h5ad import write_h5ad
    from wsi_ccrl.label.palette import cluster_styles

    stores = [CellStore.open(p) for p in paths]
    stems = [Path(p).stem for p in paths]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if naive:
        import anndata as ad

        from wsi_ccrl.label.h5ad import _centroids, _obs, _uns

        styles = cluster_styles(8)
        emb = np.concatenate([np.asarray(s["embedding"][:], np.float32) for s in stores])
        adata = ad.AnnData(
            obs=_obs(stores, stems, styles),
            obsm={"spatial": np.concatenate([_centroids(s) for s in stores]), "X_ccrl": emb},
            uns=_uns(stores, stems, styles),
        )
        adata.write_h5ad(out)
    else:
        write_h5ad(stores, stems, cluster_styles(8), out)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"base": base, "peak": peak, "seconds": seconds, "bytes": Path(out).stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--slides", type=int, default=4)
    ap.add_argument("--naive", action="store_true", help="also measure anndata in memory")
    ap.add_argument("--workdir", default=None, help="where the stores and files go (a temp dir)")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    ap.add_argument("--_measure", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure:  # the child: OUT NAIVE STORE...
        out, naive, *paths = args._measure
        print(json.dumps(measure(paths, out, naive == "1")))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = [str(p) for p in build(root, args.cells, args.slides)]
        print(
            f"built {args.slides} stores, {args.cells:,} cells in {time.perf_counter() - t0:.0f} s"
        )
        rows = []
        for naive in [False, True] if args.naive else [False]:
            cmd = [sys.executable, __file__, "--_measure", str(root / f"c{int(naive)}.h5ad"),
                   str(int(naive)), *paths]  # fmt: skip
            run = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append((naive, json.loads(run.stdout.strip().splitlines()[-1])))
            (root / f"c{int(naive)}.h5ad").unlink()
    mib = 1 << 20
    emb32 = args.cells * DIM * 4 / mib
    lines = [
        f"`python benchmarks/export_anndata.py --cells {args.cells} --slides {args.slides}"
        + (" --naive" if args.naive else "") + "`; " + f"{platform.machine()}, "
        + time.strftime("%Y-%m-%d") + f"; embeddings {DIM}-d (float32 in the file: {emb32:,.0f} MiB)",
        "",
        "| writer | cells | peak RSS, MiB | above imports, MiB | per cell, bytes | s | file, MiB |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for naive, r in rows:
        above = r["peak"] - r["base"]
        name = "anndata, embeddings in memory" if naive else "`write_h5ad` (filled by spans)"
        lines.append(
            f"| {name} | {args.cells:,} | {r['peak'] / mib:,.0f} | {above / mib:,.0f} | "
            f"{above / args.cells:,.0f} | {r['seconds']:.1f} | {r['bytes'] / mib:,.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
