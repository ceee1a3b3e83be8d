"""The report's two charts, drawn with Pillow (no plotting library): cluster proportions per slide
as stacked bars, and a 2-D map of embeddings coloured by cluster. Pixels are set from whole
arrays, so a chart costs the same whatever the number of cells behind it."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BAR_HEIGHT, BAR_GAP, BAR_WIDTH = 18, 6, 640
NAME_WIDTH, COUNT_WIDTH = 220, 110
MAP_SIDE, MAP_MARGIN, DOT = 560, 36, 2  # a dot covers (2 DOT + 1)² pixels


def _font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizing
        return ImageFont.load_default()


def _short(text: str, n: int = 30) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def proportion_bars(
    slides: list[str], counts: np.ndarray, colours: list[tuple[int, int, int]]
) -> Image.Image:
    """One bar per slide (rows of ``counts``, cells per cluster), split by cluster share."""
    counts = np.asarray(counts, np.float64).reshape(len(slides), -1)
    total = counts.sum(1, keepdims=True)
    share = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    edges = np.round(np.cumsum(share, 1) * BAR_WIDTH).astype(int)
    starts = np.concatenate([np.zeros((len(slides), 1), int), edges[:, :-1]], 1)
    height = BAR_GAP + len(slides) * (BAR_HEIGHT + BAR_GAP)
    image = Image.new("RGB", (NAME_WIDTH + BAR_WIDTH + COUNT_WIDTH, height), "white")
    draw, font = ImageDraw.Draw(image), _font()
    for i, name in enumerate(slides):
        y = BAR_GAP + i * (BAR_HEIGHT + BAR_GAP)
        draw.text((4, y + 2), _short(name), fill="black", font=font)
        for j in np.flatnonzero(edges[i] > starts[i]):
            box = (NAME_WIDTH + starts[i, j], y, NAME_WIDTH + edges[i, j] - 1, y + BAR_HEIGHT)
            draw.rectangle(box, fill=tuple(colours[j]))
        draw.text((NAME_WIDTH + BAR_WIDTH + 8, y + 2), f"{int(total[i, 0]):,}", "black", font)
    return image


def embedding_map(
    xy: np.ndarray, cluster: np.ndarray, colours: list[tuple[int, int, int]], axes: tuple[str, str]
) -> Image.Image:
    """``xy`` (n, 2) scattered in a square, each dot its cluster's colour; ``axes`` names x, y."""
    side = MAP_SIDE + 2 * MAP_MARGIN
    pixels = np.full((side, side, 3), 255, np.uint8)
    if len(xy):
        lo, hi = xy.min(0), xy.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        px = MAP_MARGIN + np.round((xy - lo) / span * (MAP_SIDE - 1)).astype(int)
        px[:, 1] = side - 1 - px[:, 1]  # y up
        rgb = np.asarray(colours, np.uint8)[cluster]
        for dy in range(-DOT, DOT + 1):
            for dx in range(-DOT, DOT + 1):
                pixels[px[:, 1] + dy, px[:, 0] + dx] = rgb
    image = Image.fromarray(pixels)
    draw, font = ImageDraw.Draw(image), _font()
    draw.rectangle((MAP_MARGIN - 6, MAP_MARGIN - 6, side - MAP_MARGIN + 5, side - MAP_MARGIN + 5),
                   outline=(160, 160, 160))  # fmt: skip
    draw.text((side // 2 - 30, side - MAP_MARGIN + 12), axes[0], fill="black", font=font)
    draw.text((6, 8), axes[1], fill="black", font=font)
    return image
