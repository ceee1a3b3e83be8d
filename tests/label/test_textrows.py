import json

import numpy as np
import pytest

from wsi_ccrl.label.textrows import WIDTH, Rows, format_fixed


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


def test_point_rows_match_json_positions():
    from wsi_ccrl.label.textrows import point_rows

    rng = np.random.default_rng(2)
    x = np.round(rng.uniform(-1e6, 1e6, 300), 2)
    y = np.round(rng.uniform(0, 1e5, 300) * 2) / 2
    x[:3] = [0, -0.5, 120]
    opens, closes = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    comma = rng.integers(0, 2, 300)
    data, lengths = point_rows(x, y, opens, closes, comma)
    ends = np.cumsum(lengths)
    text = [data[e - k : e].tobytes().decode() for e, k in zip(ends, lengths, strict=True)]
    assert len(text) == 300 and ends[-1] == data.size
    for i, t in enumerate(text):
        inner = t[opens[i] : len(t) - closes[i] - comma[i]]
        assert t.startswith("[" * opens[i] + "[") and t.endswith("]" * closes[i] + "," * comma[i])
        assert json.loads(inner) == [x[i], y[i]]
        assert not any(v.endswith("0") and "." in v for v in inner[1:-1].split(","))
    for i, head in enumerate(["[0,", "[-0.5,", "[120,"]):
        assert text[i][opens[i] :].startswith(head)
    with pytest.raises(ValueError, match="too large"):
        point_rows(np.array([1e10]), np.array([0.0]), *np.zeros((3, 1), int))
