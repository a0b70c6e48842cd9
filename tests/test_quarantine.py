"""Rules at commit time: every write refuses the candles that break an error rule and keeps them
in the quarantine (rule, source, values); the stored report (`quality` view, `coverage --png
--quality`); `check` month by month equals the rules over the whole history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from cryptolake import Lake
from cryptolake.coverage_plot import draw_coverage
from cryptolake.lake.append import Appender
from cryptolake.quality import QualityRules, check_lake, find_problems
from cryptolake.rules import screen
from cryptolake.schema import KLINE_COLUMNS
from cryptolake.testing import FakeExchange
from cryptolake.timeutils import to_ms
from tests.helpers import collect, invoke, one_line_error, store_as_another_tool
from tests.test_quality import CORRUPTIONS, NOW, _set, sound, walks

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _rows(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    """The candles as sortable tuples, times as integers (a µs time is no Python datetime)."""
    times = [pl.col(c).dt.epoch("ms") for c in ("open_time", "close_time")]
    return sorted(frame.select(KLINE_COLUMNS).with_columns(times).rows(), key=repr)


@PROPS
@given(walks.filter(lambda s: len(s) >= 5), st.data())
def test_screen_refuses_exactly_the_corrupted_row_and_keeps_the_rest(
    steps: list[float], data: st.DataObject
) -> None:
    frame = sound(steps)
    assert screen(frame.to_arrow(), "1h", NOW).refused.is_empty()
    rule = data.draw(st.sampled_from(sorted(CORRUPTIONS)))
    i = data.draw(st.integers(1, frame.height - 2))
    broken = CORRUPTIONS[rule](frame, i)
    out = screen(broken.to_arrow(), "1h", NOW)
    kept = pl.from_arrow(out.kept)
    assert isinstance(kept, pl.DataFrame)
    # The oracle is the corruption itself: row i (or, for a duplicate, one copy of it) is out.
    expected_kept = frame if rule == "duplicate_key" else broken.filter(pl.int_range(pl.len()) != i)
    assert _rows(kept) == _rows(expected_kept)
    assert kept["open_time"].is_sorted() and kept["open_time"].is_unique().all()
    assert out.refused.height == 1
    assert _rows(out.refused) == _rows(broken[i])
    refused_rule = out.refused["rule"][0]
    # The rule named is the first one broken, and the report's rules agree with it.
    flagged = set(find_problems(broken, "BTCUSDT", "1h", NOW).filter(pl.col("severity") == "error")["rule"])
    assert rule in flagged and refused_rule in flagged


def test_write_klines_quarantines_refused_rows_with_rule_and_source(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    frame = sound([0.001] * 48)
    bad = _set(frame, 3, high=frame["low"][3] * 0.5)
    bad = _set(bad, 7, volume=-2.0)
    result = lake.write_klines("1h", "BTCUSDT", bad, source="my-import", now_ms=NOW)
    assert (result.rows_added, result.rows_refused) == (46, 2)
    stored = lake.scan("1h", ["BTCUSDT"]).collect().drop("symbol")
    assert_frame_equal(stored, frame.filter(~pl.int_range(pl.len()).is_in([3, 7])))
    held = lake.quarantined("1h")
    assert held.select("exchange", "symbol", "source", "rule").rows() == [
        ("binance", "BTCUSDT", "my-import", "ohlc_order"),
        ("binance", "BTCUSDT", "my-import", "negative_volume"),
    ]
    assert held["open_time"].to_list() == [frame["open_time"][3], frame["open_time"][7]]
    assert held["volume"][1] == -2.0 and "volume=-2.0" in held["detail"][1]
    # The same bad rows sent again are not stored twice; nothing else is touched.
    again = lake.write_klines("1h", "BTCUSDT", bad, source="my-import", now_ms=NOW)
    assert (again.rows_refused, again.files_written) == (2, 0)
    assert lake.quarantined("1h").height == 2
    assert lake.quarantined("1h", ["ETHUSDT"]).is_empty() and lake.quarantined("1d").is_empty()


def test_a_candle_not_closed_by_the_clock_given_is_refused(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    frame = sound([0.001] * 5)
    last_close = int(frame["close_time"].dt.epoch("ms")[-1])
    assert lake.write_klines("1h", "BTCUSDT", frame, now_ms=last_close).rows_refused == 1
    assert lake.quarantined()["rule"].to_list() == ["not_closed"]
    assert lake.write_klines("1h", "BTCUSDT", frame, now_ms=last_close + 1).rows_added == 1


def test_the_stream_appender_quarantines_too(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    rows = sound([0.001] * 10, "1m")
    rows = _set(rows, 4, low=rows["high"][4] * 2)
    assert Appender(lake, "1m").append("BTCUSDT", rows.to_arrow(), now_ms=NOW) == 9
    assert lake.quarantined("1m").select("source", "rule").rows() == [("websocket", "ohlc_order")]


def test_a_lake_in_a_bucket_quarantines_the_same_way(s3_lake: str) -> None:
    lake = Lake(s3_lake)
    frame = sound([0.001] * 24)
    assert lake.write_klines("1h", "BTCUSDT", _set(frame, 2, open=0.0), now_ms=NOW).rows_refused == 1
    assert lake.quarantined("1h")["rule"].to_list() == ["non_positive_price"]
    assert lake.storage.list("_meta/quarantine/exchange=binance/interval=1h/symbol=BTCUSDT/")


# -- check, month by month --------------------------------------------------------------------


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(24 * 40, 24 * 75)),
    st.lists(st.tuples(st.integers(0, 24 * 75), st.integers(1, 60)), max_size=4),
    st.lists(st.integers(1, 24 * 75), max_size=4),
    st.sampled_from([None, "2025-03-20", "2025-04-01T13:00:00Z"]),
)
def test_check_month_by_month_equals_the_rules_over_the_whole_history(
    tmp_path_factory: pytest.TempPathFactory,
    walk: tuple[int, int],
    quiet: list[tuple[int, int]],
    spikes: list[int],
    since: str | None,
) -> None:
    """Zero-volume runs and spikes across month ends, anywhere: the same findings as
    find_problems over every candle at once (the oracle holds the whole history)."""
    seed, hours = walk
    frame = sound(list(np.random.default_rng(seed).uniform(-0.01, 0.01, hours)))
    n = frame.height
    index = pl.int_range(pl.len())
    for first, length in quiet:
        stretch = index.is_between(first, first + length - 1)
        frame = frame.with_columns(
            pl.when(stretch).then(0.0).otherwise(pl.col(c)).alias(c)
            for c in ("volume", "taker_buy_base_volume")
        )
    for at in spikes:
        if 1 <= at < n - 1:
            frame = _set(frame, at, close=frame["close"][at] * 1.5, high=frame["close"][at] * 1.51)
    rules = QualityRules(spike_mads=8, spike_window=24, zero_volume_hours=12)
    lake = Lake(tmp_path_factory.mktemp("lake"))
    lake.write_klines("1h", "BTCUSDT", frame, now_ms=NOW)
    since_ms = None if since is None else to_ms(since)
    whole = find_problems(frame, "BTCUSDT", "1h", NOW, rules)
    if since_ms is not None:
        # From a date on: each candle judged as in the whole history (a spike right after the date
        # has its neighbours before it), and the zero-volume runs counted from the date.
        after = pl.col("open_time").dt.epoch("ms") >= since_ms
        runs = find_problems(frame.filter(after), "BTCUSDT", "1h", NOW, rules).filter(
            pl.col("rule") == "zero_volume_run"
        )
        whole = pl.concat([whole.filter(after & (pl.col("rule") != "zero_volume_run")), runs]).sort(
            "open_time", "rule", maintain_order=True
        )
    report = check_lake(lake, "1h", NOW, since_ms=since_ms, rules=rules)
    assert_frame_equal(report.findings.drop("exchange"), whole)
    assert report.candles == (
        n if since_ms is None else int((frame["open_time"].dt.epoch("ms") >= since_ms).sum())
    )


# -- the stored report -------------------------------------------------------------------------


def test_the_quality_view_holds_the_latest_report_and_coverage_marks_its_months(cli_env: Path) -> None:
    lake = cli_env / "lake"
    with FakeExchange(now=to_ms("2026-01-01T00:30:00Z")) as fx:
        fx.bad_candle("spike", "BTCUSDT", "1h", to_ms("2025-12-10T05:00:00Z"))
        assert collect(lake, fx, "--symbols", "BTC,ETH", "--since", "2025-11-01", "--quiet").exit_code == 0
    empty = invoke("sql", "SELECT count(*) AS n FROM quality", "--lake", lake, "--format", "json")
    assert json.loads(empty.output) == [{"n": 0}]
    assert invoke("check", "--lake", lake).exit_code == 0
    query = "SELECT exchange, symbol, interval, rule, severity, strftime(open_time, '%Y-%m-%d %H') AS t FROM quality"
    view = json.loads(invoke("sql", query, "--lake", lake, "--format", "json").output)
    assert view == [
        {"exchange": "binance", "symbol": "BTCUSDT", "interval": "1h", "rule": "price_spike",
         "severity": "warning", "t": "2025-12-10 05"}
    ]  # fmt: skip
    # Checking ETH alone keeps BTC's finding; the views file has the view too.
    assert invoke("check", "--lake", lake, "--symbols", "ETH").exit_code == 0
    assert len(json.loads(invoke("sql", query, "--lake", lake, "--format", "json").output)) == 1
    import duckdb

    with duckdb.connect(str(lake / "cryptolake.duckdb"), read_only=True) as con:
        assert con.execute("SELECT rule FROM quality").fetchall() == [("price_spike",)]
    pytest.importorskip("matplotlib")
    out = cli_env / "coverage.png"
    drawn = invoke("coverage", "--lake", lake, "--offline", "--png", out, "--quality")
    assert drawn.exit_code == 0, drawn.output
    assert "--png" in one_line_error(invoke("coverage", "--lake", lake, "--offline", "--quality"))
    # Forgetting a symbol forgets its findings too.
    assert invoke("forget", "BTC", "--lake", lake).exit_code == 0
    assert json.loads(
        invoke("sql", "SELECT count(*) AS n FROM quality", "--lake", lake, "--format", "json").output
    ) == [{"n": 0}]


def test_coverage_png_marks_months_with_errors_and_warnings(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [
        {"symbol": s, "month": m, "expected": 744, "present": 744, "completeness_percent": 100.0}
        for s in ("BTCUSDT", "ETHUSDT")
        for m in ("2024-01", "2024-02")
    ]
    plain = draw_coverage(rows, tmp_path / "plain.png").read_bytes()
    error = draw_coverage(rows, tmp_path / "e.png", marks={("BTCUSDT", "2024-01"): "error"}).read_bytes()
    warning = draw_coverage(rows, tmp_path / "w.png", marks={("BTCUSDT", "2024-01"): "warning"}).read_bytes()
    moved = draw_coverage(rows, tmp_path / "m.png", marks={("ETHUSDT", "2024-02"): "error"}).read_bytes()
    assert len({plain, error, warning, moved}) == 4


@pytest.mark.parametrize("kind", ["swapped_high_low", "us_time"])
def test_a_refused_candle_in_the_first_page_is_asked_again_not_taken_for_an_outage(
    kind: str, cli_env: Path
) -> None:
    """The first page (1,000 candles from --since) loses a row to the rules: the collection
    still goes to the end, the hole is a failed window (not an exchange outage), and once the
    exchange serves a sound candle fill-gaps fills it."""
    lake = cli_env / "lake"
    bad = to_ms("2025-11-10T05:00:00Z")
    with FakeExchange(now=to_ms("2026-01-01T00:30:00Z")) as fx:
        fx.bad_candle(kind, "BTCUSDT", "1h", bad)
        assert collect(lake, fx, "--symbols", "BTC", "--since", "2025-11-01", "--quiet").exit_code == 0
        stored = Lake(lake).scan("1h", ["BTCUSDT"]).collect()
        assert stored.height == (30 + 31) * 24 - 1
        assert bad not in stored["open_time"].dt.epoch("ms").to_list()
        gaps = json.loads(invoke("gaps", "--lake", lake, "--offline", "--json").output)
        assert [(g["kind"], g["start_time"], g["count"]) for g in gaps if g["position"] == "internal"] == [
            ("failed", "2025-11-10T05:00:00Z", 1)
        ]
        assert "refused by the data-quality rules" in gaps[0]["error"]
        fx.reset()  # the exchange now serves that hour soundly
        filled = invoke(
            "fill-gaps", "--symbols", "BTC", "--since", "2025-11-01", "--lake", lake,
            "--base-url", fx.base_url, "--archive-url", fx.base_url,
        )  # fmt: skip
        assert filled.exit_code == 0, filled.output
        assert Lake(lake).scan("1h", ["BTCUSDT"]).collect().height == (30 + 31) * 24


def test_infinite_prices_are_refused_and_the_quarantine_lists_as_valid_json(cli_env: Path) -> None:
    lake = cli_env / "lake"
    frame = sound([0.001] * 24)
    bad = _set(_set(frame, 2, high=float("inf")), 5, open=float("nan"))
    assert Lake(lake).write_klines("1h", "BTCUSDT", bad, now_ms=NOW).rows_refused == 2
    listed = invoke("check", "--lake", lake, "--quarantine", "--json")
    rows = json.loads(listed.output)  # strict JSON: no bare NaN or Infinity
    assert {r["rule"] for r in rows} == {"non_positive_price"}
    assert rows[0]["high"] == "inf" and rows[1]["open"] == "nan"
    assert rows[0]["close_time"].endswith(":59.999Z") and rows[0]["close_time_ms"] % 1000 == 999


def test_a_report_that_cannot_be_kept_is_still_printed(cli_env: Path) -> None:
    lake = cli_env / "lake"
    frame = sound([0.001] * 24)
    store_as_another_tool(lake, "1h", "BTCUSDT", _set(frame, 3, high=frame["low"][3] * 0.5))
    (lake / "_meta" / "quality.parquet").mkdir(parents=True)  # cannot be written
    result = invoke("check", "--lake", lake, "--json")
    assert result.exit_code == 1
    assert "the report is not kept" in result.stderr
    assert [f["rule"] for f in json.loads(result.stdout)] == ["ohlc_order"]


def test_verify_repair_does_not_count_a_refused_candle_as_repaired(cli_env: Path) -> None:
    lake = cli_env / "lake"
    bad = to_ms("2025-12-10T05:00:00Z")
    with FakeExchange(now=to_ms("2026-01-01T00:30:00Z")) as fx:
        assert collect(lake, fx, "--symbols", "BTC", "--since", "2025-12-01", "--quiet").exit_code == 0
        fx.bad_candle("swapped_high_low", "BTCUSDT", "1h", bad)  # the exchange now serves it broken
        before = Lake(lake).scan("1h", ["BTCUSDT"]).collect()
        args = ("--lake", lake, "--base-url", fx.base_url, "--archive-url", fx.base_url, "--against", "rest")
        fixed = invoke("verify", *args, "--repair", "--json")
        assert fixed.exit_code == 1  # it differs
        assert json.loads(fixed.stdout)["repaired"] == 0
        assert_frame_equal(Lake(lake).scan("1h", ["BTCUSDT"]).collect(), before)  # the good candle stays
        held = Lake(lake).quarantined("1h")
        assert held.select("source", "rule").rows() == [("verify", "ohlc_order")]
