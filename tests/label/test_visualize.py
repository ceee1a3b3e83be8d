import numpy as np
import pytest
from PIL import Image

from wsi_ccrl.io.store import CellStore
from wsi_ccrl.label.palette import cluster_styles
from wsi_ccrl.label.visualize import (
    LEGEND_WIDTH,
    draw_gallery,
    draw_overview,
    gallery_size,
    overview_size,
)


@pytest.fixture
def store(small_store_factory):
    s = CellStore.open(small_store_factory("v", max_cells=40), mode="r+")
    s.write_column("cluster", (np.arange(s.n_cells) % 3).astype(np.int16))
    return s


def test_overview_on_the_real_thumbnail(store, tmp_path):
    styles = cluster_styles(3)
    clusters = store["cluster"][:]
    path = draw_overview(store, clusters, styles, tmp_path / "v.overview.png", max_side=512)
    img = np.asarray(Image.open(path).convert("RGB"))
    (w, h), scale = overview_size((2220, 2967), 512, 3)
    assert img.shape == (h, w, 3) and (w, h) == (round(2220 * scale) + LEGEND_WIDTH, 512)
    thumb = img[:, : w - LEGEND_WIDTH]
    assert thumb.std() > 10  # the slide, not a blank page
    # every cluster's cells are outlined in its colour, near their centroids
    for c, colour in enumerate(styles.colours):
        ys, xs = np.nonzero((thumb == colour).all(2))
        assert ys.size > 20
        cx, cy = (store["centroid"][:][clusters == c] * scale).T
        assert np.hypot(cx[:, None] - xs[None], cy[:, None] - ys[None]).min(0).max() < 20
    # the legend shows each colour
    legend = img[:, w - LEGEND_WIDTH :].reshape(-1, 3)
    for colour in styles.colours:
        assert (legend == colour).all(1).any()


def test_overview_without_the_slide_is_drawn_on_white(small_store_factory, tmp_path):
    s = CellStore.open(
        small_store_factory("m", slide=tmp_path / "gone.svs", max_cells=10), mode="r+"
    )
    clusters = np.zeros(s.n_cells, np.int16)
    path = draw_overview(s, clusters, cluster_styles(2), tmp_path / "m.png", max_side=256)
    img = np.asarray(Image.open(path).convert("RGB"))
    (w, h), _ = overview_size((2220, 2967), 256, 2)
    assert img.shape == (h, w, 3)
    assert (img[:5, :5] == 255).all()  # white where the slide would be
    assert (img.reshape(-1, 3) == cluster_styles(2).colours[0]).all(1).any()


def test_many_small_cells_are_dots(store, tmp_path):
    # at 1/16 scale nuclei are under 4 px: vectorised dots
    path = draw_overview(store, store["cluster"][:], cluster_styles(3), tmp_path / "d.png", 180)
    img = np.asarray(Image.open(path).convert("RGB"))
    last = store.n_cells - 1  # drawn last, so no neighbour's dot covers it
    x, y = np.floor(store["centroid"][last] * 180 / 2967).astype(int)
    assert tuple(img[y, x]) == cluster_styles(3).colours[store["cluster"][last]]
    for colour in cluster_styles(3).colours:
        assert (img[:, : img.shape[1] - LEGEND_WIDTH] == colour).all(2).any()


def test_gallery_grid(small_store_factory, tmp_path):
    a = CellStore.open(small_store_factory("a", max_cells=10), "r+")
    b = CellStore.open(small_store_factory("b", patches=("train_10_002",), max_cells=10), "r+")
    clusters = [np.zeros(a.n_cells, np.int16), np.full(b.n_cells, 2, np.int16)]
    styles = cluster_styles(3)
    path = draw_gallery([a, b], clusters, styles, tmp_path / "g.png", per_cluster=4, tile=32)
    img = np.asarray(Image.open(path).convert("RGB"))
    w, h = gallery_size(3, 4, 32)
    assert img.shape == (h, w, 3)
    row = lambda r: img[4 + r * 36 : 4 + r * 36 + 32, 204:]  # noqa: E731
    assert row(0).std() > 10 and row(2).std() > 10  # crops drawn
    assert (row(1) == 255).all()  # cluster 1 is empty
    again = draw_gallery([a, b], clusters, styles, tmp_path / "g2.png", per_cluster=4, tile=32)
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(path)))
