"""Compiled per-ring loops of the overlay export: corner cutting, Douglas-Peucker, validity.

Each function walks rings in CSR form (``offsets`` into flat ``x``, ``y``) in one compiled pass:
NumPy needed about ten temporaries per point for the same work, and GEOS one object per ring.
Validity is decided exactly: coordinates are on the 0.01 px grid, so relative to a ring's first
point and scaled by 100 they are integers, and every orientation test is exact in float64.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}


@numba.njit(**_JIT)
def cut_ring(x, y, a, b, pitch, ox, oy):  # pragma: no cover - compiled
    """Corner-cut ring ``a:b`` into ``ox``, ``oy``; returns the number of points written.

    A ring whose edges are all axis-aligned multiples of ``pitch`` goes through the middle of the
    first and last pixel edge of each edge, points in straight runs dropped; another ring is
    copied, straight-run points dropped.
    """
    pixel_ring = True
    for i in range(a, b):
        j = i + 1 if i + 1 < b else a
        dx, dy = x[j] - x[i], y[j] - y[i]
        span = (abs(dx) + abs(dy)) / pitch
        if not ((dx == 0 or dy == 0) and abs(span - np.rint(span)) < 0.05 and span > 0.5):
            pixel_ring = False
            break
    k = 0
    for i in range(a, b):
        if not pixel_ring:
            ox[k], oy[k] = x[i], y[i]
            k += 1
            continue
        j = i + 1 if i + 1 < b else a
        dx, dy = x[j] - x[i], y[j] - y[i]
        span = (abs(dx) + abs(dy)) / pitch
        hx, hy = 0.5 * dx / span, 0.5 * dy / span
        ox[k], oy[k] = x[i] + hx, y[i] + hy
        k += 1
        if np.rint(span) >= 2:
            ox[k], oy[k] = x[j] - hx, y[j] - hy
            k += 1
    return _drop_straight(ox, oy, k, 0.05 * pitch * pitch)


@numba.njit(**_JIT)
def cut_rings(offsets, x, y, pitch):  # pragma: no cover - compiled
    """``cut_ring`` of every ring: (offsets, x, y)."""
    n = offsets.size - 1
    ox, oy = np.empty(2 * x.size + 2), np.empty(2 * x.size + 2)
    out = np.zeros(n + 1, np.int64)
    w = 0
    for r in range(n):
        w += cut_ring(x, y, offsets[r], offsets[r + 1], pitch, ox[w:], oy[w:])
        out[r + 1] = w
    return out, ox[:w].copy(), oy[:w].copy()


@numba.njit(**_JIT)
def _drop_straight(ox, oy, k, tol):  # pragma: no cover - compiled
    """Remove points inside straight runs (|cross| <= tol) of the ring ``ox[:k]``, in place."""
    keep = np.empty(k, np.bool_)
    for i in range(k):
        p = i - 1 if i > 0 else k - 1
        q = i + 1 if i + 1 < k else 0
        ax, ay = ox[i] - ox[p], oy[i] - oy[p]
        bx, by = ox[q] - ox[i], oy[q] - oy[i]
        keep[i] = abs(ax * by - ay * bx) > tol or ax * bx + ay * by <= 0
    w = 0
    for i in range(k):
        if keep[i]:
            ox[w], oy[w] = ox[i], oy[i]
            w += 1
    return w


@numba.njit(**_JIT)
def douglas_peucker(px, py, k, tol, keep, stack):  # pragma: no cover - compiled
    """Mark in ``keep[:k]`` the vertices Douglas-Peucker keeps of the closed ring ``p[:k]``:
    the first point and the one farthest from it, then each half split at its farthest point
    from its chord (distance to the segment) while that exceeds ``tol``."""
    for i in range(k):
        keep[i] = False
    if k <= 3:
        for i in range(k):
            keep[i] = True
        return
    far, best = 1, -1.0
    for i in range(1, k):
        d = (px[i] - px[0]) ** 2 + (py[i] - py[0]) ** 2
        if d > best:
            far, best = i, d
    keep[0] = keep[far] = True
    top = 0
    stack[0, 0], stack[0, 1] = 0, far
    stack[1, 0], stack[1, 1] = far, k  # index k is point 0 again
    top = 2
    while top > 0:
        top -= 1
        s, e = stack[top, 0], stack[top, 1]
        if e - s < 2:
            continue
        ex, ey = px[e % k], py[e % k]
        sx, sy = px[s], py[s]
        dx, dy = ex - sx, ey - sy
        length2 = dx * dx + dy * dy
        split, worst = -1, tol * tol
        for i in range(s + 1, e):
            t = 0.0 if length2 == 0 else ((px[i] - sx) * dx + (py[i] - sy) * dy) / length2
            t = min(max(t, 0.0), 1.0)
            d = (px[i] - sx - t * dx) ** 2 + (py[i] - sy - t * dy) ** 2
            if d > worst:
                split, worst = i, d
        if split >= 0:
            keep[split] = True
            stack[top, 0], stack[top, 1] = s, split
            stack[top + 1, 0], stack[top + 1, 1] = split, e
            top += 2


@numba.njit(**_JIT)
def _orient(ax, ay, bx, by, cx, cy):  # pragma: no cover - compiled
    v = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    return 0 if v == 0 else (1 if v > 0 else -1)


@numba.njit(**_JIT)
def _on_segment(ax, ay, bx, by, cx, cy):  # pragma: no cover - compiled
    """c, collinear with a-b, lies on the closed segment a-b."""
    return min(ax, bx) <= cx <= max(ax, bx) and min(ay, by) <= cy <= max(ay, by)


@numba.njit(**_JIT)
def _touch(ax, ay, bx, by, cx, cy, dx, dy):  # pragma: no cover - compiled
    """Segments a-b and c-d share at least one point."""
    o1, o2 = _orient(ax, ay, bx, by, cx, cy), _orient(ax, ay, bx, by, dx, dy)
    o3, o4 = _orient(cx, cy, dx, dy, ax, ay), _orient(cx, cy, dx, dy, bx, by)
    if o1 != o2 and o3 != o4:
        return True
    return (
        (o1 == 0 and _on_segment(ax, ay, bx, by, cx, cy))
        or (o2 == 0 and _on_segment(ax, ay, bx, by, dx, dy))
        or (o3 == 0 and _on_segment(cx, cy, dx, dy, ax, ay))
        or (o4 == 0 and _on_segment(cx, cy, dx, dy, bx, by))
    )


@numba.njit(**_JIT)
def simple_ring(px, py, k, gx, gy):  # pragma: no cover - compiled
    """Whether the ring ``p[:k]`` (0.01 grid) bounds a valid polygon: at least 3 points, an area,
    no repeated point, no edge touching a non-adjacent edge, no edge folding back on the next.
    ``gx``, ``gy``: scratch for the integer coordinates."""
    if k < 3:
        return False
    for i in range(k):
        gx[i] = np.rint((px[i] - px[0]) * 100.0)
        gy[i] = np.rint((py[i] - py[0]) * 100.0)
    twice = 0.0
    for i in range(k):
        j = i + 1 if i + 1 < k else 0
        if gx[i] == gx[j] and gy[i] == gy[j]:
            return False
        twice += gx[i] * gy[j] - gx[j] * gy[i]
    if twice == 0:
        return False
    for i in range(k):  # adjacent edges meeting at vertex j: no fold-back
        j = i + 1 if i + 1 < k else 0
        h = j + 1 if j + 1 < k else 0
        ax, ay = gx[j] - gx[i], gy[j] - gy[i]
        bx, by = gx[h] - gx[j], gy[h] - gy[j]
        if ax * by - ay * bx == 0 and ax * bx + ay * by < 0:
            return False
    for i in range(k):
        i2 = i + 1 if i + 1 < k else 0
        for j in range(i + 2, k):
            if i == 0 and j == k - 1:
                continue  # adjacent through the closing vertex
            j2 = j + 1 if j + 1 < k else 0
            if _touch(gx[i], gy[i], gx[i2], gy[i2], gx[j], gy[j], gx[j2], gy[j2]):
                return False
    return True


@numba.njit(**_JIT)
def ring_area_centroid(px, py, k):  # pragma: no cover - compiled
    """Signed area and centroid of the ring ``p[:k]`` (relative to its first point: exact)."""
    a = cx = cy = 0.0
    for i in range(k):
        j = i + 1 if i + 1 < k else 0
        x0, y0 = px[i] - px[0], py[i] - py[0]
        x1, y1 = px[j] - px[0], py[j] - py[0]
        c = x0 * y1 - x1 * y0
        a += c
        cx += (x0 + x1) * c
        cy += (y0 + y1) * c
    if a == 0:
        return 0.0, px[0], py[0]
    return 0.5 * a, px[0] + cx / (3.0 * a), py[0] + cy / (3.0 * a)


@numba.njit(**_JIT)
def simplest_rings(offsets, x, y, simplify, pitch, max_change):  # pragma: no cover - compiled
    """Per ring, the simplest of (corner-cut + Douglas-Peucker, corner-cut, exact) that bounds a
    valid polygon and keeps the exact ring's area within ``max_change`` (relative).

    Returns (offsets, x, y) of the chosen rings (not closed, on the 0.01 grid), whether each is
    valid (only an exact ring may not be: it is then repaired by the caller), and each ring's
    area and centroid.
    """
    n = offsets.size - 1
    longest = 1
    for r in range(n):
        longest = max(longest, offsets[r + 1] - offsets[r])
    cx_, cy_ = np.empty(2 * longest + 2), np.empty(2 * longest + 2)
    sx, sy = np.empty(2 * longest + 2), np.empty(2 * longest + 2)
    gx, gy = np.empty(2 * longest + 2), np.empty(2 * longest + 2)
    keep = np.empty(2 * longest + 2, np.bool_)
    stack = np.empty((2 * longest + 4, 2), np.int64)
    ox, oy = np.empty(2 * x.size + 2), np.empty(2 * x.size + 2)
    out = np.zeros(n + 1, np.int64)
    valid = np.zeros(n, np.bool_)
    area = np.zeros(n)
    cent = np.zeros((n, 2))
    w = 0
    for r in range(n):
        a, b = offsets[r], offsets[r + 1]
        k = b - a
        exact_area, ex, ey = ring_area_centroid(x[a:b], y[a:b], k)
        limit = max_change * abs(exact_area)
        chosen = 0  # 0: exact, 1: corner cut, 2: simplified
        kc = ks = 0
        if simplify > 0 and k >= 3:
            kc = cut_ring(x, y, a, b, pitch, cx_, cy_)
            for i in range(kc):  # back on the grid
                cx_[i] = np.rint(cx_[i] * 100.0) / 100.0
                cy_[i] = np.rint(cy_[i] * 100.0) / 100.0
            douglas_peucker(cx_, cy_, kc, simplify * pitch, keep, stack)
            for i in range(kc):
                if keep[i]:
                    sx[ks], sy[ks] = cx_[i], cy_[i]
                    ks += 1
            s_area = ring_area_centroid(sx, sy, ks)[0]
            if abs(abs(s_area) - abs(exact_area)) <= limit and simple_ring(sx, sy, ks, gx, gy):
                chosen = 2
            else:
                c_area = ring_area_centroid(cx_, cy_, kc)[0]
                if abs(abs(c_area) - abs(exact_area)) <= limit and simple_ring(
                    cx_, cy_, kc, gx, gy
                ):
                    chosen = 1
        if chosen == 2:
            px, py, kk = sx, sy, ks
        elif chosen == 1:
            px, py, kk = cx_, cy_, kc
        else:
            px, py, kk = x[a:b], y[a:b], k
        for i in range(kk):
            ox[w + i], oy[w + i] = px[i], py[i]
        w += kk
        out[r + 1] = w
        valid[r] = chosen > 0 or simple_ring(px, py, kk, gx, gy)
        if chosen > 0:
            ar, cx0, cy0 = ring_area_centroid(px, py, kk)
        else:
            ar, cx0, cy0 = exact_area, ex, ey
        area[r] = abs(ar)
        cent[r, 0], cent[r, 1] = cx0, cy0
    return out, ox[:w].copy(), oy[:w].copy(), valid, area, cent
