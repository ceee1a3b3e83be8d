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

import numpy as np

WIDTH = 48  # bytes per row; longer literals span several rows
_MAX_INT_DIGITS = 15


class Rows:
    """Records ``0..n-1``, each the concatenation of the fields added, in the order added."""

    def __init__(self, n: int):
        self.n = int(n)
        self._fields: list[tuple[np.ndarray, np.ndarray]] = []  # rows per record, rows (k, w)

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
        self._fields.append((per, flat[rows]))

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
        self._fields.append((counts, rows))

    # ------------------------------------------------------------------ output
    def to_bytes(self) -> bytes:
        """All records, each its fields' rows in the order the fields were added."""
        if not self._fields:
            return b""
        counts = np.stack([c for c, _ in self._fields])  # (fields, n)
        per_record = counts.sum(axis=0)
        start = np.cumsum(per_record) - per_record  # first row of each record
        mat = np.zeros((int(per_record.sum()), WIDTH), np.uint8)
        before = np.zeros(self.n, np.int64)
        for (c, rows), done in zip(self._fields, counts, strict=True):
            pos = np.repeat(start + before - (np.cumsum(c) - c), c) + np.arange(int(c.sum()))
            mat[pos, : rows.shape[1]] = rows
            before += done
        return mat.tobytes().translate(None, b"\0")


# --------------------------------------------------------------------------- rendering
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
