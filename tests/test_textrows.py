import json

import numpy as np
import pytest

from wsi_ccrl.textrows import WIDTH, Rows, format_fixed


def _text(values, decimals):
    chars = format_fixed(np.asarray(values, np.float64), decimals)
    return [row.tobytes().replace(b"\0", b"").decode() for row in chars]


def test_numbers_have_no_trailing_zeros_and_round_to_the_decimals():
    assert _text([0, -0.0, 12.5, 12, -0.25, 1234567.89, 0.1 + 0.2, 7e-9, -3.0001], 2) == [
        "0", "0", "12.5", "12", "-0.25", "1234567.89", "0.3", "0", "-3",
    ]  # fmt: skip
    assert _text([3, 17, -250], 0) == ["3", "17", "-250"]
    rng = np.random.default_rng(0)
    for decimals in (0, 2, 4, 6):
        values = rng.normal(0, 10.0 ** rng.integers(0, 6, 500), 500)
        got = _text(values, decimals)
        np.testing.assert_allclose([float(t) for t in got], np.round(values, decimals), atol=1e-9)
        assert all(t == t.rstrip("0") or "." not in t for t in got)
        assert not any(t.endswith(".") for t in got)
    with pytest.raises(ValueError, match="too large"):
        format_fixed(np.array([1e15]), 2)
    with pytest.raises(ValueError, match="not finite"):
        format_fixed(np.array([np.nan]), 2)


def test_records_are_their_fields_in_order():
    rng = np.random.default_rng(1)
    n = 200
    points = rng.integers(0, 4, n)  # per record, any number of items, zero included
    x = np.round(rng.uniform(-1e5, 1e5, points.sum()), 2)
    value = rng.normal(size=n)
    value[rng.random(n) < 0.3] = np.nan  # left out where missing
    names = ['a "quoted" name', "b" * (3 * WIDTH + 5), "%s µ"]  # longer than a row, non-ASCII
    pick = rng.integers(0, 3, n)
    rows = Rows(n)
    rows.literal('{"name":')
    rows.pick([json.dumps(s) for s in names], pick)
    rows.literal(',"xs":[')
    sep = np.ones(points.sum(), np.int64)
    sep[np.cumsum(points)[points > 0] - 1] = 0
    rows.items(points, ["[", (x, 2), "]", (["", ","], sep)])
    rows.literal("]")
    rows.number(value, 3, ',"v":', present=np.isfinite(value))
    rows.literal("}\n")
    lines = rows.to_bytes().decode().splitlines()
    assert len(lines) == n
    starts = np.cumsum(points) - points
    for i, line in enumerate(lines):
        record = json.loads(line)
        assert record["name"] == names[pick[i]]
        assert record["xs"] == [[v] for v in x[starts[i] : starts[i] + points[i]]]
        if np.isfinite(value[i]):
            assert record["v"] == pytest.approx(value[i], abs=5e-4)
        else:
            assert "v" not in record
    with pytest.raises(ValueError, match="longer than"):
        Rows(1).items(np.ones(1, np.int64), ["x" * (WIDTH + 1)])
