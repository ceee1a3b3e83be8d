"""Text built from NumPy arrays with no Python loop per value: rows of bytes, joined per record.

An export writes millions of short records (a GeoJSON Feature, a CSV line). Here each record is a
sequence of fields; a field renders as one or more rows of at most ``WIDTH`` bytes (a literal, a
number, a pick from a table of strings, a UUID) and the text is every record's rows in field
order. Every piece sits in a fixed-width block padded with NUL bytes, so a row is just its blocks
side by side and the text is the rows' bytes with the NULs removed (text never holds a NUL).
Numbers are formatted from integers: ``decimals`` places at most, trailing zeros and a bare point
dropped (``12.5``, ``12``, ``-0.25``).

    rows = Rows(n)
    rows.literal('{"x":')
    rows.number(x, decimals=2)
    rows.literal("}\\n")
    data = rows.to_bytes()
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

WIDTH = 48  # bytes per row; longer literals span several rows
_MAX_INT_DIGITS = 15


class Rows:
    """Records ``0..n-1``, each the concatenation of the fields added, in the order added."""

    def __init__(self, n: int):
        self.n = int(n)
        # per field: rows per record (n,), the rows' bytes packed end to end, each row's length
        self._fields: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    # ------------------------------------------------------------------ fields
    def literal(self, text: str, present: np.ndarray | None = None) -> None:
        """The same text in every record (or in those where ``present`` is true)."""
        self.pick([text], np.zeros(self.n, np.int64), present)

    def pick(
        self, table: Sequence[str], index: np.ndarray, present: np.ndarray | None = None
    ) -> None:
        """``table[index[i]]`` in record i (names, classifications, any per-record choice);
        entries longer than a row take several."""
        pieces = [_chunks(s.encode()) for s in table]
        counts = np.array([len(p) for p in pieces], np.int64)
        flat = _table([row for p in pieces for row in p] or [b""])
        first = np.cumsum(counts) - counts
        index = np.asarray(index, np.int64)
        per = counts[index]
        if present is not None:
            per = np.where(present, per, 0)
        rows = np.repeat(first[index] - np.cumsum(per) + per, per) + np.arange(int(per.sum()))
        self._fields.append((per, *_pack(flat[rows])))

    def number(
        self,
        values: np.ndarray,
        decimals: int,
        prefix: str = "",
        suffix: str = "",
        present: np.ndarray | None = None,
    ) -> None:
        """One formatted number per record, between ``prefix`` and ``suffix`` (short literals);
        a record where ``present`` is false gets nothing, literals included."""
        values = np.asarray(values, np.float64)
        keep = np.ones(self.n, bool) if present is None else np.asarray(present, bool)
        self.items(keep.astype(np.int64), [prefix, (values[keep], decimals), suffix])

    def items(self, counts: np.ndarray, parts: Sequence) -> None:
        """``counts[i]`` rows in record i, one per item (items ordered by record), each the
        concatenation of ``parts``: a str (the same for all items), a ``(values, decimals)``
        number per item, a ``(table, index)`` pick of short strings, or a uint8 (items, w)
        array of NUL-padded characters. A row must fit ``WIDTH`` bytes."""
        counts = np.asarray(counts, np.int64)
        k = int(counts.sum())
        blocks = [_render(part, k) for part in parts]
        rows = np.concatenate([b for b in blocks if b.shape[1]], axis=1) if blocks else None
        if rows is None or rows.shape[1] == 0:
            rows = np.zeros((k, 1), np.uint8)
        if rows.shape[1] > WIDTH:
            raise ValueError(f"a row is longer than {WIDTH} bytes")
        self._fields.append((counts, *_pack(rows)))

    def packed(self, counts: np.ndarray, data: np.ndarray, lengths: np.ndarray) -> None:
        """``counts[i]`` rows in record i given already packed: ``data`` (uint8) holds the rows'
        bytes end to end, ``lengths`` each row's (as ``point_rows`` returns them)."""
        self._fields.append((np.asarray(counts, np.int64), data, np.asarray(lengths, np.int64)))

    # ------------------------------------------------------------------ output
    def to_bytes(self) -> bytes:
        """All records, each its fields' rows in the order the fields were added."""
        if not self._fields:
            return b""
        counts = np.stack([c for c, _, _ in self._fields])  # (fields, n)
        per_record = counts.sum(axis=0)
        start = np.cumsum(per_record) - per_record  # first row of each record
        order = np.empty(int(per_record.sum()), np.int64)  # output row -> source row
        before = np.zeros(self.n, np.int64)
        first_source = 0
        for c, done in zip(counts, counts, strict=True):
            k = int(c.sum())
            pos = np.repeat(start + before - (np.cumsum(c) - c), c) + np.arange(k)
            order[pos] = np.arange(first_source, first_source + k)
            first_source += k
            before += done
        lengths = np.concatenate([lens for _, _, lens in self._fields])
        data = np.concatenate([d for _, d, _ in self._fields])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return _gather_rows(data, offsets, order).tobytes()


# --------------------------------------------------------------------------- rendering
def _pack(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NUL-padded rows as (their bytes end to end, each row's length)."""
    rows = np.ascontiguousarray(rows)
    data = np.frombuffer(rows.tobytes().translate(None, b"\0"), np.uint8)
    return data, np.count_nonzero(rows, axis=1).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _gather_rows(data, offsets, order):  # pragma: no cover - compiled
    """The rows ``data[offsets[r]:offsets[r + 1]]`` for r in ``order``, end to end."""
    total = 0
    for r in order:
        total += offsets[r + 1] - offsets[r]
    out = np.empty(total, np.uint8)
    w = 0
    for r in order:
        for i in range(offsets[r], offsets[r + 1]):
            out[w] = data[i]
            w += 1
    return out


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + WIDTH] for i in range(0, len(data), WIDTH)]


def _table(strings: Sequence[bytes]) -> np.ndarray:
    """(len, width) uint8, each string left-aligned, NUL-padded."""
    width = max((len(s) for s in strings), default=0)
    table = np.zeros((len(strings), max(width, 1)), np.uint8)
    for r, s in enumerate(strings):
        if b"\0" in s:
            raise ValueError("text must not contain NUL bytes")
        table[r, : len(s)] = np.frombuffer(s, np.uint8)
    return table


def _render(part, k: int) -> np.ndarray:
    """(k, w) uint8 NUL-padded block of one part for ``k`` rows."""
    if isinstance(part, str):
        return np.broadcast_to(_table([part.encode()]), (k, len(part.encode())))
    if isinstance(part, np.ndarray):
        return part
    first, second = part
    if isinstance(first, (list, tuple)):  # (table, index)
        return _table([s.encode() for s in first])[np.asarray(second, np.int64)]
    return format_fixed(first, int(second))


def format_fixed(values: np.ndarray, decimals: int) -> np.ndarray:
    """Numbers as NUL-padded ASCII (n, w): ``decimals`` places at most, no trailing zeros.

    Values must be finite and below 10^15 in magnitude once scaled. Digits come from integer
    division, least significant first (int32 when the values allow: twice as fast).
    """
    values = np.asarray(values, np.float64)
    scale = 10**decimals
    q = np.rint(values * scale)
    top = np.abs(q).max() if q.size else 0.0
    if not top < 10 ** (_MAX_INT_DIGITS + decimals):
        raise ValueError("number too large (or not finite) to format")
    q = q.astype(np.int32 if top < 2**31 - 1 else np.int64)
    neg = q < 0
    q = np.abs(q)
    ip, fp = np.divmod(q, q.dtype.type(scale))
    width = len(str(int(ip.max()))) if ip.size else 1
    out = np.zeros((q.size, 1 + width + (1 + decimals if decimals else 0)), np.uint8)
    out[:, 0] = np.where(neg, ord("-"), 0)
    rest = ip.copy()
    for c in range(width, 0, -1):
        out[:, c] = 48 + rest % 10
        rest //= 10
    n_digits = np.ones(q.size, np.int64)
    for power in range(1, width):
        n_digits += ip >= 10**power
    out[:, 1 : width + 1] *= np.arange(width)[None, :] >= (width - n_digits)[:, None]
    if decimals:
        rest = fp.copy()
        shown = np.zeros(q.size, bool)  # a digit is shown if it or a later one is not zero
        for c in range(width + 1 + decimals, width + 1, -1):
            digit = rest % 10
            rest //= 10
            shown |= digit != 0
            out[:, c] = np.where(shown, 48 + digit, 0)
        out[:, width + 1] = np.where(fp != 0, ord("."), 0)
    return out


def point_rows(
    x: np.ndarray, y: np.ndarray, opens: np.ndarray, closes: np.ndarray, comma: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """GeoJSON positions, packed for ``Rows.packed``: per point ``opens`` brackets, ``[x,y]`` to 2
    decimals (trailing zeros dropped), ``closes`` brackets and a comma where ``comma``. Returns
    (bytes, length of each point's row). Coordinates must be below 10^9 in magnitude."""
    x = np.ascontiguousarray(x, np.float64)
    y = np.ascontiguousarray(y, np.float64)
    if x.size and not max(np.abs(x).max(), np.abs(y).max()) < 1e9:
        raise ValueError("coordinate too large (or not finite) to format")
    return _point_rows(x, y, opens.astype(np.int64), closes.astype(np.int64),
                       comma.astype(np.int64))  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _put_number(out, w, v):  # pragma: no cover - compiled
    """Write ``v`` to 2 decimals at ``out[w:]``, no trailing zeros; returns the new end."""
    q = np.int64(np.rint(v * 100.0))
    if q < 0:
        out[w] = 45  # '-'
        w += 1
        q = -q
    ip, fp = q // 100, q % 100
    n = 1
    power = 10
    while ip >= power:
        n += 1
        power *= 10
    for i in range(n - 1, -1, -1):
        out[w + i] = 48 + ip % 10
        ip //= 10
    w += n
    if fp:
        out[w] = 46  # '.'
        out[w + 1] = 48 + fp // 10
        w += 2
        if fp % 10:
            out[w] = 48 + fp % 10
            w += 1
    return w


@numba.njit(cache=True, nogil=True)
def _point_rows(x, y, opens, closes, comma):  # pragma: no cover - compiled
    k = x.size
    out = np.empty(k * 40, np.uint8)
    lengths = np.empty(k, np.int64)
    w = 0
    for i in range(k):
        start = w
        for _ in range(opens[i] + 1):
            out[w] = 91  # '['
            w += 1
        w = _put_number(out, w, x[i])
        out[w] = 44  # ','
        w = _put_number(out, w + 1, y[i])
        for _ in range(closes[i] + 1):
            out[w] = 93  # ']'
            w += 1
        if comma[i]:
            out[w] = 44
            w += 1
        lengths[i] = w - start
    return out[:w].copy(), lengths
