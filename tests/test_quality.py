"""Data-quality rules (cryptolake.quality): sound candles are never flagged, every corrupted
field always is, and `cryptolake check` reports a stored lake's findings with the right exit."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from cryptolake import Lake
from cryptolake.quality import ERROR_RULES, QualityRules, find_problems
from cryptolake.schema import KLINE_SCHEMA, Interval
from cryptolake.testing import FakeExchange
from cryptolake.timeutils import to_ms
from tests.helpers import collect, expected_klines, invoke, one_line_error, store_as_another_tool

START = to_ms("2025-03-01")
NOW = to_ms("2026-01-01")


def sound(steps: list[float], interval: str = "1h") -> pl.DataFrame:
    """Candles on the grid from a random walk of closes (each step within +-1%), all closed
    before NOW: valid by every rule, warnings included."""
    grid = Interval(interval)
    start = min(START, NOW - (len(steps) + 2) * grid.nominal_ms)
    rows, close, t = [], 100.0, grid.ceil(start)
    for step in steps:
        open_, close = close, close * (1 + step)
        high, low = max(open_, close) * 1.001, min(open_, close) * 0.999
        volume = 10.0 + abs(step) * 100
        rows.append(
            (
                t,
                open_,
                high,
                low,
                close,
                volume,
                grid.close_time(t),
                volume * close,
                50,
                volume / 2,
                volume * close / 2,
            )
        )
        t = grid.next_open(t)
    frame = pl.DataFrame(rows, schema=list(KLINE_SCHEMA), orient="row")
    return frame.with_columns(
        pl.from_epoch(c, time_unit="ms").dt.replace_time_zone("UTC") for c in ("open_time", "close_time")
    ).cast(KLINE_SCHEMA)  # type: ignore[arg-type]


walks = st.lists(st.floats(-0.01, 0.01, allow_nan=False), min_size=3, max_size=300)


@given(walks, st.sampled_from(["1m", "1h", "1d", "1w", "1M"]))
def test_sound_candles_are_never_flagged(steps: list[float], interval: str) -> None:
    assert find_problems(sound(steps, interval), "BTCUSDT", interval, NOW).is_empty()


CORRUPTIONS = {
    "ohlc_order": lambda f, i: _set(f, i, high=f["low"][i] * 0.5),  # swapped high and low, in effect
    "non_positive_price": lambda f, i: _set(f, i, open=0.0),
    "negative_volume": lambda f, i: _set(f, i, volume=-1.0),
    "time_unit": lambda f, i: _set_time(f, i, f["open_time"].dt.epoch("ms")[i] * 1000),  # µs in a ms field
    "off_grid": lambda f, i: _set_time(f, i, f["open_time"].dt.epoch("ms")[i] + 1),
    "close_time": lambda f, i: _set(f, i, close_time=f["close_time"][i] + pl.duration(milliseconds=1)),
    "duplicate_key": lambda f, i: pl.concat([f, f[i]]),
    "not_closed": lambda f, i: _set_time(f, i, NOW - 1000),
}


def _set(frame: pl.DataFrame, i: int, **values: object) -> pl.DataFrame:
    hit = pl.int_range(pl.len()) == i
    return frame.with_columns(
        pl.when(hit)
        .then(v if isinstance(v, pl.Expr) else pl.lit(v))
        .otherwise(pl.col(k))
        .cast(frame.schema[k])
        .alias(k)
        for k, v in values.items()
    )


def _set_time(frame: pl.DataFrame, i: int, open_ms: int) -> pl.DataFrame:
    """Move candle ``i`` to ``open_ms`` (its close time follows, one hour on)."""
    opened = pl.lit(open_ms).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    return _set(frame, i, open_time=opened, close_time=opened + pl.duration(milliseconds=3_600_000 - 1))


@given(walks.filter(lambda s: len(s) >= 5), st.data())
def test_every_corrupted_field_is_flagged_with_its_rule(steps: list[float], data: st.DataObject) -> None:
    frame = sound(steps)
    rule = data.draw(st.sampled_from(sorted(CORRUPTIONS)))
    i = data.draw(st.integers(1, frame.height - 2))
    broken = CORRUPTIONS[rule](frame, i)
    found = find_problems(broken, "BTCUSDT", "1h", NOW)
    assert rule in found["rule"].to_list(), (rule, found)
    assert set(found.filter(pl.col("rule") == rule)["severity"]) == {"error"}
    assert set(ERROR_RULES) >= set(found.filter(pl.col("severity") == "error")["rule"])


def test_warnings_taker_volume_zero_volume_spike_and_quiet_run() -> None:
    frame = sound([0.001] * 400)
    frame = _set(frame, 10, taker_buy_base_volume=frame["volume"][10] * 2)
    frame = _set(frame, 20, volume=0.0, taker_buy_base_volume=0.0)  # trades, moving prices, no volume
    frame = _set(frame, 200, close=frame["close"][200] * 3, high=frame["close"][200] * 3.01)  # a lone spike
    quiet = pl.int_range(pl.len()).is_between(300, 330)
    frame = frame.with_columns(
        pl.when(quiet).then(0.0).otherwise(pl.col(c)).alias(c) for c in ("volume", "taker_buy_base_volume")
    ).with_columns(pl.when(quiet).then(0).otherwise(pl.col("trades")).alias("trades"))
    frame = frame.with_columns(
        pl.when(quiet).then(pl.col("close")).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low")
    )
    found = find_problems(frame, "ETHUSDT", "1h", NOW, QualityRules(zero_volume_hours=24))
    by_rule = {
        r: found.filter(pl.col("rule") == r)["open_time"].dt.epoch("ms").to_list() for r in set(found["rule"])
    }
    times = frame["open_time"].dt.epoch("ms").to_list()
    assert by_rule["taker_exceeds_volume"] == [times[10]]
    assert by_rule["zero_volume_mismatch"] == [times[20]]
    assert times[200] in by_rule["price_spike"]
    assert by_rule["zero_volume_run"] == [times[300]]
    assert set(found["severity"]) == {"warning"}
    assert "candles=31" in found.filter(pl.col("rule") == "zero_volume_run")["detail"][0]


def test_check_reports_a_stored_lake_and_exits_1_on_errors(
    fake_exchange: FakeExchange, cli_env: Path
) -> None:
    lake = cli_env / "lake"
    assert collect(lake, fake_exchange, "--symbols", "BTC,ETH", "--since", "2025-11-01").exit_code == 0
    clean = invoke("check", "--lake", lake)
    assert clean.exit_code == 0, clean.output
    assert "0 errors, 0 warnings in 2,928 1h candles of 2 symbols" in clean.output
    store = Lake(lake)
    december = store.read_partition("1h", "ETHUSDT", "2025-12")
    store_as_another_tool(lake, "1h", "ETHUSDT", _set(december, 5, high=december["low"][5] * 0.5))
    result = invoke("check", "--lake", lake, "--json")
    assert result.exit_code == 1
    (finding,) = json.loads(result.output)
    assert (
        finding["symbol"] == "ETHUSDT" and finding["rule"] == "ohlc_order" and finding["severity"] == "error"
    )
    assert finding["open_time"] == "2025-12-01T05:00:00Z" and finding["exchange"] == "binance"
    assert invoke("check", "--lake", lake, "--symbols", "BTC").exit_code == 0
    assert invoke("check", "--lake", lake, "--since", "2025-12-02").exit_code == 0
    assert "invalid --since" in one_line_error(invoke("check", "--lake", lake, "--since", "soon"))
    assert "holds no binance 1h candles of NOPEUSDT" in one_line_error(
        invoke("check", "--lake", lake, "--symbols", "NOPE")
    )


@pytest.mark.parametrize("value", ["0", "abc"])
def test_quality_settings_are_checked(value: str, cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOLAKE_QUALITY_SPIKE_MADS", value)
    assert "quality.spike_mads" in one_line_error(invoke("config"))


@pytest.mark.parametrize(
    ("kind", "quarantined", "found", "exit_code"),
    [
        ("swapped_high_low", ["ohlc_order"], [], 0),
        ("us_time", ["time_unit"], [], 0),
        ("duplicate", ["duplicate_key"], [], 0),  # the lake keeps one copy, the other is recorded
        ("spike", [], ["price_spike"], 0),  # a warning: kept, and reported
        ("open_as_closed", ["close_time"], [], 0),  # an open candle whose close time was cut to now
    ],
)
def test_the_fakes_bad_candles_are_quarantined_or_reported_end_to_end(
    kind: str, quarantined: list[str], found: list[str], exit_code: int, cli_env: Path
) -> None:
    with FakeExchange(now=to_ms("2026-01-01T00:30:00Z")) as fx:
        bad = to_ms("2026-01-01T00:00:00Z") if kind == "open_as_closed" else to_ms("2025-12-10T05:00:00Z")
        fx.bad_candle(kind, "BTCUSDT", "1h", bad)
        lake = cli_env / "lake"
        assert collect(lake, fx, "--symbols", "BTC", "--since", "2025-12-01", "--quiet").exit_code == 0
        result = invoke("check", "--lake", lake, "--json")
        assert result.exit_code == exit_code, result.output
        findings = json.loads(result.output)
        assert [f["rule"] for f in findings] == found
        assert all(f["open_time"] == "2025-12-10T05:00:00Z" for f in findings)
        listed = invoke("check", "--lake", lake, "--quarantine", "--json")
        assert listed.exit_code == 0, listed.output
        refused = json.loads(listed.output)
        assert [(r["rule"], r["source"], r["symbol"]) for r in refused] == [
            (q, "rest", "BTCUSDT") for q in quarantined
        ]
        # Nothing the exchange sent is lost: the refused row is the one the fake spoiled.
        spoiled = {"us_time": bad * 1000}.get(kind, bad)
        assert [r["open_time_ms"] for r in refused] == [spoiled] * len(quarantined)
        # The lake is otherwise exact: every other December hour, once, as the exchange has it.
        stored = Lake(lake).scan("1h", ["BTCUSDT"]).collect().drop("symbol")
        expected = expected_klines(fx.klines("BTCUSDT", "1h", to_ms("2025-12-01"), to_ms("2026-01-01")))
        held_out = [bad] if kind in ("swapped_high_low", "us_time") else []
        if kind != "spike":
            assert_frame_equal(
                stored.filter(~pl.col("open_time").dt.epoch("ms").is_in(held_out)),
                expected.filter(~pl.col("open_time").dt.epoch("ms").is_in(held_out)),
            )
        assert stored["open_time"].is_unique().all()
        assert stored.height == 31 * 24 - len(held_out)
        # A second run asks again for the hour it lacks and records nothing twice.
        assert collect(lake, fx, "--symbols", "BTC", "--quiet").exit_code == 0
        again = json.loads(invoke("check", "--lake", lake, "--quarantine", "--json").output)
        assert len(again) == len(refused)


def test_an_unknown_bad_candle_is_refused() -> None:
    with FakeExchange(now=NOW) as fx, pytest.raises(ValueError, match="unknown bad candle"):
        fx.bad_candle("upside_down", "BTCUSDT", "1h", START)
