"""Text built from NumPy arrays with no Python loop per value: rows of bytes, joined per record.

An export writes millions of short records (a GeoJSON Feature, a CSV line). Here each record is a
sequence of fields, each field renders as one or more fixed-width byte rows (a literal, a number,
a pick from a table of strings, a UUID) and the text is every record's rows in field order, the
valid bytes of each row gathered in one boolean-mask copy. Numbers are formatted from integers:
``decimals`` places, trailing zeros and a bare point dropped (``12.5``, ``12``, ``-0.25``).

    rows = Rows(n)
    rows.literal('{"x":')
    rows.number(x, decimals=2)
    rows.literal("}\\n")
    data = rows.to_bytes()
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WIDTH = 40  # bytes per row; longer literals span several rows
_DIGITS = 16  # int64 magnitudes up to 10^16


class Rows:
    """Records ``0..n-1``, each the concatenation of the fields added, in the order added."""

    def __init__(self, n: int):
        self.n = int(n)
        self._fields: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # counts, rows, lengths

    # ------------------------------------------------------------------ fields
    def literal(self, text: str, present: np.ndarray | None = None) -> None:
        """The same text in every record (or in those where ``present`` is true)."""
        self.pick([text], np.zeros(self.n, np.int64), present)

    def pick(self, table: Sequence[str], index: np.ndarray, present: np.ndarray | None = None):
        """``table[index[i]]`` in record i: names, classifications, any per-record choice."""
        pieces = [_split(s.encode()) for s in table]
        counts = np.array([len(p) for p in pieces], np.int64)
        flat = [row for p in pieces for row in p]
        mat = np.zeros((max(len(flat), 1), WIDTH), np.uint8)
        lens = np.zeros(max(len(flat), 1), np.int64)
        for r, row in enumerate(flat):
            mat[r, : len(row)] = np.frombuffer(row, np.uint8)
            lens[r] = len(row)
        first = np.cumsum(counts) - counts
        index = np.asarray(index, np.int64)
        per = counts[index]
        if present is not None:
            per = np.where(present, per, 0)
        rows = np.repeat(first[index] - np.cumsum(per) + per, per) + np.arange(int(per.sum()))
        self._fields.append((per, mat[rows], lens[rows]))

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
        number per item, a ``(chars uint8 (k, w), lengths (k,))`` pair, or a ``(table, index)``
        pick of short strings. Each row must fit ``WIDTH`` bytes."""
        counts = np.asarray(counts, np.int64)
        k = int(counts.sum())
        mat = np.zeros((k, WIDTH), np.uint8)
        pos = np.zeros(k, np.int64)
        for part in parts:
            chars, lens = _render(part, k)
            if chars.shape[1] == 0:
                continue
            cols = pos[:, None] + np.arange(chars.shape[1])
            valid = np.arange(chars.shape[1]) < lens[:, None]
            if (pos + lens).max(initial=0) > WIDTH:
                raise ValueError(f"a row is longer than {WIDTH} bytes")
            rows = np.broadcast_to(np.arange(k)[:, None], cols.shape)
            mat[rows[valid], cols[valid]] = chars[valid]
            pos += lens
        self._fields.append((counts, mat, pos))

    # ------------------------------------------------------------------ output
    def to_bytes(self) -> bytes:
        """All records, each its fields' rows in the order the fields were added."""
        if not self._fields:
            return b""
        counts = np.stack([c for c, _, _ in self._fields])  # (fields, n)
        per_record = counts.sum(axis=0)
        start = np.cumsum(per_record) - per_record  # first row of each record
        total = int(per_record.sum())
        mat = np.empty((total, WIDTH), np.uint8)
        lens = np.empty(total, np.int64)
        before = np.zeros(self.n, np.int64)
        for (c, rows, row_lens), done in zip(self._fields, counts, strict=True):
            base = start + before
            pos = np.repeat(base - (np.cumsum(c) - c), c) + np.arange(int(c.sum()))
            mat[pos] = rows
            lens[pos] = row_lens
            before += done
        return mat[np.arange(WIDTH) < lens[:, None]].tobytes()


# --------------------------------------------------------------------------- rendering
def _split(data: bytes) -> list[bytes]:
    return [data[i : i + WIDTH] for i in range(0, len(data), WIDTH)] or []


def _render(part, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(chars (k, w) uint8, left-aligned; lengths (k,)) of one part for ``k`` rows."""
    if isinstance(part, str):
        raw = np.frombuffer(part.encode(), np.uint8)
        return np.broadcast_to(raw, (k, raw.size)), np.full(k, raw.size, np.int64)
    first, second = part
    if isinstance(first, np.ndarray) and first.dtype == np.uint8:
        return first, np.asarray(second, np.int64)
    if isinstance(first, (list, tuple)):  # (table, index)
        encoded = [s.encode() for s in first]
        width = max((len(e) for e in encoded), default=0)
        table = np.zeros((len(encoded), width), np.uint8)
        for r, e in enumerate(encoded):
            table[r, : len(e)] = np.frombuffer(e, np.uint8)
        idx = np.asarray(second, np.int64)
        return table[idx], np.array([len(e) for e in encoded], np.int64)[idx]
    return format_fixed(first, int(second))


def format_fixed(values: np.ndarray, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """Numbers as ASCII, ``decimals`` places at most, no trailing zeros (chars, lengths).

    Values must be finite and below 10^(16 - decimals) in magnitude.
    """
    values = np.asarray(values, np.float64)
    scale = 10**decimals
    q = np.rint(values * scale).astype(np.int64)
    neg = q < 0
    q = np.abs(q)
    if q.size and q.max() >= 10**_DIGITS:
        raise ValueError("number too large to format")
    ip, fp = np.divmod(q, scale)
    n_int = np.ones(q.size, np.int64)
    for d in range(1, _DIGITS):
        n_int += ip >= 10**d
    n_frac = np.zeros(q.size, np.int64)  # fraction digits left after dropping trailing zeros
    for d in range(decimals, 0, -1):
        n_frac = np.where((n_frac == 0) & (fp % 10 ** (decimals - d + 1) != 0), d, n_frac)
    width = 1 + int(n_int.max(initial=1)) + 1 + decimals
    out = np.zeros((q.size, width), np.uint8)
    rows = np.arange(q.size)
    out[rows[neg], 0] = ord("-")
    start = neg.astype(np.int64)
    for c in range(int(n_int.max(initial=1))):  # integer digits, most significant first
        has = c < n_int
        power = 10 ** np.maximum(n_int - 1 - c, 0)
        out[rows[has], start[has] + c] = 48 + (ip[has] // power[has]) % 10
    dot = start + n_int
    frac = n_frac > 0
    out[rows[frac], dot[frac]] = ord(".")
    for c in range(decimals):
        has = c < n_frac
        digit = (fp // 10 ** (decimals - 1 - c)) % 10
        out[rows[has], dot[has] + 1 + c] = 48 + digit[has]
    return out, dot + np.where(frac, 1 + n_frac, 0)
