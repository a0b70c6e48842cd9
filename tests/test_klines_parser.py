"""The one kline parser every source shares (cryptolake.sources.klines), against an oracle built
field by field: any shape Binance sends (ms or µs times, numbers as strings, a 12th field or not)
gives the lake's table, and anything else is refused as a bad payload."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from cryptolake.errors import BadPayload
from cryptolake.sources.klines import ARROW_SCHEMA, parse_klines_body, table_to_frame

from .helpers import expected_klines

HOUR = 3_600_000
START = 1_704_067_200_000  # 2024-01-01T00:00Z

prices = st.decimals(min_value="0.00000001", max_value="99999999", places=8, allow_nan=False).map(
    lambda d: f"{d:.8f}"
)


@st.composite
def pages(draw: st.DrawFn) -> list[list[object]]:
    slots = sorted(draw(st.sets(st.integers(0, 2000), min_size=0, max_size=60)))
    rows = []
    for slot in slots:
        t = START + slot * HOUR
        row: list[object] = [
            t,
            draw(prices),
            draw(prices),
            draw(prices),
            draw(prices),
            draw(prices),
            t + HOUR - 1,
            draw(prices),
            draw(st.integers(0, 10**9)),
            draw(prices),
            draw(prices),
            "0",
        ]
        rows.append(row)
    return rows


@given(pages(), st.booleans())
def test_a_body_in_ms_or_in_microseconds_parses_to_the_oracle(rows: list[list[object]], micro: bool) -> None:
    sent = [[r[0] * 1000, *r[1:6], r[6] * 1000 + 999, *r[7:]] for r in rows] if micro else rows  # type: ignore[operator]
    body = json.dumps(sent, separators=(",", ":")).encode()
    table = parse_klines_body(body)
    assert table.schema.equals(ARROW_SCHEMA)
    assert_frame_equal(table_to_frame(table), expected_klines(rows))


@pytest.mark.parametrize(
    "body",
    [
        b"[[1,2",
        b'{"code":-1121}',
        b'[[1,"2"]]',
        b"[1,2,3]",
        b'[["x","1","1","1","1","1",2,"1",3,"1","1","0"]]',
    ],
)
def test_a_body_that_is_not_klines_is_a_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        parse_klines_body(body)
