"""``report.html``: a label run on one self-contained page, to look at before opening QuPath.

The cluster gallery, each cluster's share of every slide (stacked bars), a 2-D map of a sample of
embeddings coloured by cluster (their first two principal components), each slide's overview, and
links to the files written beside it. Pictures are inlined as base64 PNG and nothing is fetched,
so the page opens offline, from any folder it is copied to along with the files it links.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from wsi_ccrl.label.charts import embedding_map, proportion_bars
from wsi_ccrl.label.cluster import read_rows, sample_indices
from wsi_ccrl.label.palette import ClusterStyles
from wsi_ccrl.runtime import atomic_write_text

MAP_SAMPLE = 5000  # cells on the embedding map
OVERVIEW_WIDTH = 1200  # overviews are inlined at most this wide

STYLE = """body{font:14px/1.4 sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}h3{font-size:15px;margin-bottom:4px}
img{display:block;max-width:100%;border:1px solid #ddd;margin:6px 0}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left}
.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:middle}
.links a{margin-right:14px}"""


def png_data_uri(image: Image.Image, max_width: int | None = None) -> str:
    """The picture as a ``data:image/png;base64`` URI, scaled down to ``max_width``."""
    if max_width and image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        image = image.resize((max_width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def embedding_sample(
    stores: list, clusters: list[np.ndarray], n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (float32) and clusters of at most ``n`` cells drawn across ``stores``."""
    picks = sample_indices([s.n_cells for s in stores], n, seed)
    x = [
        read_rows(s["embedding"], r).astype(np.float32) for s, r in zip(stores, picks, strict=True)
    ]
    c = [np.asarray(cl)[r] for cl, r in zip(clusters, picks, strict=True)]
    return np.concatenate(x), np.concatenate(c).astype(np.int64)


def principal_2d(x: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The first two principal components of ``x`` and the share of variance each explains."""
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2 / max((s**2).sum(), 1e-12)
    pcs = centred @ vt[:2].T
    if pcs.shape[1] < 2:
        pcs = np.hstack([pcs, np.zeros((len(pcs), 2 - pcs.shape[1]))])
    return pcs, (float(var[0]), float(var[1]) if var.size > 1 else 0.0)


def write_report(
    path: str | Path,
    slides: list,
    styles: ClusterStyles,
    gallery: Path,
    stores: list,
    clusters: list[np.ndarray],
    run_files: list[Path],
    seed: int = 0,
    title: str = "wsi-ccrl label",
) -> Path:
    """Write the page. ``slides``: the run's ``SlideResult``s (stem, counts, files: the overview
    PNG among them); ``run_files``: files of the whole run to link (config, AnnData)."""
    path = Path(path)
    colours = [tuple(int(v) for v in c) for c in styles.colours]
    counts = np.array([s.counts for s in slides], np.int64).reshape(len(slides), styles.k)
    x, c = embedding_sample(stores, clusters, MAP_SAMPLE, seed)
    pcs, (v1, v2) = principal_2d(x)
    figures = {
        "gallery": png_data_uri(Image.open(gallery)),
        "proportions": png_data_uri(proportion_bars([s.stem for s in slides], counts, colours)),
        "embedding": png_data_uri(
            embedding_map(pcs, c, colours, (f"PC 1 ({v1:.0%})", f"PC 2 ({v2:.0%})"))
        ),
    }
    total = counts.sum()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{total:,} cells, {len(slides)} slide(s), {styles.k} clusters.</p>",
        _links(path, run_files),
        "<h2>Clusters</h2>",
        _cluster_table(styles, counts.sum(0)),
        "<h2>Cluster gallery</h2>",
        _img("gallery", figures["gallery"], "random cells of each cluster, one row per cluster"),
        "<h2>Clusters per slide</h2>",
        _img("proportions", figures["proportions"], "each cluster's share of every slide"),
        "<h2>Embeddings</h2>",
        f"<p>{len(c):,} cells drawn across the slides; the first two principal components of "
        "their embeddings, coloured by cluster.</p>",
        _img("embedding", figures["embedding"], "embedding map coloured by cluster"),
        "<h2>Slides</h2>",
    ]
    for i, slide in enumerate(slides):
        overview = next((f for f in slide.files if f.name.endswith(".overview.png")), None)
        others = [f for f in slide.files if f is not overview]
        parts += [
            f"<h3>{html.escape(slide.stem)} ({slide.n_cells:,} cells)</h3>",
            _links(path, others),
        ]
        if overview is not None and overview.is_file():
            uri = png_data_uri(Image.open(overview), OVERVIEW_WIDTH)
            parts.append(_img(f"overview-{i}", uri, f"{slide.stem}: cells coloured by cluster"))
    parts.append("</body></html>\n")
    return atomic_write_text(path, "\n".join(parts))


def _img(name: str, uri: str, alt: str) -> str:
    return f'<img class="figure" id="{name}" alt="{html.escape(alt)}" src="{uri}">'


def _links(page: Path, files: list[Path]) -> str:
    items = [
        f'<a href="{quote(os.path.relpath(f, page.parent).replace(os.sep, "/"))}">'
        f"{html.escape(f.name)}</a>"
        for f in files
    ]
    return f'<p class="links">{"".join(items)}</p>' if items else ""


def _cluster_table(styles: ClusterStyles, counts: np.ndarray) -> str:
    total = max(int(counts.sum()), 1)
    rows = [
        f'<tr><td><span class="swatch" style="background:rgb{tuple(colour)}"></span>{i}</td>'
        f"<td>{html.escape(name)}</td><td>{int(n):,}</td><td>{n / total:.1%}</td></tr>"
        for i, ((name, colour), n) in enumerate(zip(styles.styles(), counts, strict=True))
    ]
    head = "<tr><th>cluster</th><th>name</th><th>cells</th><th>share</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"
