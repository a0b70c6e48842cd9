"""Gap detection, classification and filling: DuckDB over real lakes, checked against a plain
Python oracle, and end to end with the fake exchange's outage and injected failures."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptolake import CryptoCollector, DataGapDetector
from cryptolake.cli import cli
from cryptolake.gaps import missing_runs, split_by_windows
from cryptolake.lake import ARROW_SCHEMA, Lake, partition_path
from cryptolake.lake.meta import LakeMeta
from cryptolake.schema import KLINE_COLUMNS, Interval
from cryptolake.sources.binance import BinanceClient
from cryptolake.testing import FakeExchange, Fault
from cryptolake.timeutils import iso, to_ms
from tests.helpers import store_as_another_tool

from .helpers import expected_klines

OUTAGE_FIRST, OUTAGE_LAST = "2024-03-12T04:00:00Z", "2024-03-12T08:00:00Z"
APRIL = to_ms("2024-04-01T00:30:00Z")


def synthetic(grid: Interval, open_times: list[int]) -> pl.DataFrame:
    """Candles at the given open times (values irrelevant to gap finding)."""
    rows = [
        [t, "1", "2", "0.5", "1.5", "10", grid.close_time(grid.floor(t)), "15", 3, "4", "6", "0"]
        for t in open_times
    ]
    return expected_klines(rows)


def oracle_gaps(
    grid: Interval, present: set[int], start_ms: int, end_ms: int
) -> list[tuple[str, str, int, str]]:
    """Plain Python: walk every expected open time, from the start or the first stored candle,
    whichever is earlier; consecutive absent ones form a gap."""
    expected = list(grid.open_times(min([start_ms, *present]), end_ms))
    stored = sorted(present)
    runs: list[list[int]] = []
    for position, t in enumerate(expected):
        if t in present:
            continue
        if runs and expected.index(runs[-1][-1]) == position - 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    out = []
    for run in runs:
        where = (
            "backward"
            if not stored or run[-1] < stored[0]
            else "forward"
            if run[0] > stored[-1]
            else "internal"
        )
        out.append((iso(run[0]), iso(run[-1]), len(run), where))
    return out


# -- pure logic ----------------------------------------------------------------------------


@given(st.sets(st.integers(0, 60)), st.integers(0, 30), st.integers(0, 60))
def test_missing_runs_match_a_set_difference(present: set[int], first: int, last: int) -> None:
    runs = missing_runs(present, first, last)
    covered = [i for lo, hi in runs for i in range(lo, hi + 1)]
    assert covered == [i for i in range(first, last + 1) if i not in present]
    assert all(b[0] > a[1] + 1 for a, b in zip(runs, runs[1:], strict=False))  # maximal runs


@given(
    st.integers(0, 40),
    st.integers(0, 40),
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.sampled_from("ab")), max_size=4),
)
def test_split_by_windows_labels_every_slot_by_the_last_covering_window(
    lo: int, span: int, raw: list[tuple[int, int, str]]
) -> None:
    hi = lo + span
    windows = [(min(a, b), max(a, b), label) for a, b, label in raw]
    pieces = split_by_windows(lo, hi, windows)
    assert [i for a, b, _ in pieces for i in range(a, b + 1)] == list(range(lo, hi + 1))
    for a, b, label in pieces:
        for i in range(a, b + 1):
            covering = [w for w in windows if w[0] <= i <= w[1]]
            assert label == (covering[-1][2] if covering else None)


# -- the DuckDB detector against the oracle, every kind of grid --------------------------------

GRIDS = {  # interval: (anchor near a month and year boundary, slots)
    "1m": ("2023-12-31T23:00:00Z", 150),
    "1h": ("2024-02-27T00:00:00Z", 120),
    "1d": ("2023-12-01T00:00:00Z", 70),
    "1w": ("2023-11-06T00:00:00Z", 20),
    "1M": ("2023-06-01T00:00:00Z", 14),
}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("interval", list(GRIDS))
def test_detector_matches_the_python_oracle(
    interval: str, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    grid = Interval(interval)
    anchor, slots = GRIDS[interval]
    expected = list(grid.open_times(to_ms(anchor), grid.add(to_ms(anchor), slots)))
    present = data.draw(st.sets(st.sampled_from(expected), min_size=1))
    start = data.draw(st.integers(0, 5))  # the expected range may start before the data, or after it
    root = tmp_path_factory.mktemp("lake")
    Lake(root).write_klines(interval, "BTCUSDT", synthetic(grid, sorted(present)))
    end_ms = grid.next_open(expected[-1])
    start_ms = expected[start]
    detector = DataGapDetector(root, interval, start_date=start_ms)
    found = [
        (iso(g.start_ms), iso(g.end_ms), g.count, g.position)
        for g in detector.find_all_gaps("BTCUSDT", end_date=end_ms)
    ]
    assert found == oracle_gaps(grid, present, start_ms, end_ms)
    summary = detector.get_collection_summary("BTCUSDT", end_date=end_ms)
    expected_count = grid.count(min(start_ms, *present), end_ms)
    assert summary["expected_candles"] == expected_count
    missing = sum(g[2] for g in oracle_gaps(grid, present, start_ms, end_ms))
    # Cut, never rounded up: only a complete range is 100%.
    assert summary["completeness_percent"] == int(
        1e6 * (expected_count - missing) / expected_count
    ) / 1e4 or (
        abs(summary["completeness_percent"] - 100 * (expected_count - missing) / expected_count) < 1e-4
    )
    assert (summary["completeness_percent"] == 100) == (missing == 0)


def test_off_grid_and_duplicate_rows_are_reported_and_not_counted_as_present(tmp_path: Path) -> None:
    grid = Interval("1h")
    times = [to_ms("2024-01-01T00:00Z") + i * 3_600_000 for i in range(6)]
    on_grid = [t for t in times if t != times[3]]
    rows = synthetic(grid, [*on_grid, times[3] - 1_800_000 + 1_000])  # an off-grid row
    rows = pl.concat([rows, rows.slice(1, 1)])  # and a duplicate
    path = partition_path(tmp_path, "1h", "BTCUSDT", "2024-01")
    path.parent.mkdir(parents=True)
    pq.write_table(
        rows.to_arrow().cast(ARROW_SCHEMA), path
    )  # written by "another tool": no cryptolake footer
    gaps = DataGapDetector(tmp_path, "1h").find_all_gaps("BTCUSDT", end_date=times[-1] + 3_600_000)
    kinds = {(g.kind, iso(g.start_ms), g.count) for g in gaps}
    assert ("duplicate", iso(times[1]), 1) in kinds
    assert ("off_grid", iso(times[3] - 1_800_000 + 1_000), 1) in kinds
    assert ("missing", iso(times[3]), 1) in kinds  # the off-grid row fills no slot
    assert len(gaps) == 3


def test_footer_proven_partitions_are_not_scanned(tmp_path: Path) -> None:
    grid = Interval("1h")
    full = [to_ms("2024-01-01") + i * 3_600_000 for i in range(24 * 60)]
    holey = [t for t in full if not (to_ms("2024-02-10") <= t < to_ms("2024-02-10T03:00Z"))]
    Lake(tmp_path).write_klines("1h", "BTCUSDT", synthetic(grid, holey))
    scan = DataGapDetector(tmp_path, "1h").scan(end_date=full[-1] + 3_600_000)
    assert (scan.scanned_partitions, scan.skipped_partitions) == (1, 1)
    assert [(g.kind, iso(g.start_ms), g.count) for g in scan.gaps] == [("missing", "2024-02-10T00:00:00Z", 3)]


# -- end to end with the fake exchange -----------------------------------------------------


@pytest.fixture
def april_exchange() -> FakeExchange:
    with FakeExchange(now=APRIL) as exchange:
        yield exchange


@pytest.fixture
def april_client(april_exchange: FakeExchange, tmp_path: Path) -> BinanceClient:
    with BinanceClient(
        base_url=april_exchange.base_url, retry_delay=0.01, max_retries=1, ban_file=tmp_path / "bans.json"
    ) as client:
        yield client


def klines_requests(exchange: FakeExchange, first: str, last: str) -> int:
    """Klines requests that asked for any slot in ``[first, last]``."""
    lo, hi = to_ms(first), to_ms(last)
    return sum(
        1
        for r in exchange.stats().log
        if r.path == "/api/v3/klines"
        and int(r.params.get("startTime", 0)) <= hi
        and int(r.params.get("endTime", 1 << 62)) >= lo
    )


def test_an_outage_is_an_exchange_gap_confirmed_once_and_not_refetched(
    april_exchange: FakeExchange, april_client: BinanceClient, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    clock = {"now": APRIL / 1000}
    # 24 h batches ending 06:00 split the outage (04:00-08:00) across two batches.
    collector = CryptoCollector(april_client, lake=lake, batch_size_hours=24, clock=lambda: clock["now"])
    assert collector.collect_backward("2024-03-10", ["BTC"]).ok
    gaps = collector.detector().find_all_gaps("BTCUSDT", "2024-03-10")
    assert {g.kind for g in gaps} <= {"missing", "exchange_gap"} and sum(g.count for g in gaps) == 5
    assert all(to_ms(OUTAGE_FIRST) <= g.start_ms <= g.end_ms <= to_ms(OUTAGE_LAST) for g in gaps)

    report = collector.detect_and_fill_gaps(["BTC"])
    assert report.ok and report.total_rows_added == 0
    assert report.remaining == {"exchange_gap": 5}
    gaps = collector.detector().find_all_gaps("BTCUSDT", "2024-03-10")
    assert [(g.kind, g.start_time.isoformat(), g.count) for g in gaps] == [
        ("exchange_gap", "2024-03-12T04:00:00+00:00", 5)
    ]
    summary = collector.detector().get_collection_summary("BTCUSDT", "2024-03-10")
    assert summary["gaps_by_kind"] == {"exchange_gap": {"gaps": 1, "candles": 5}}

    # Confirmed: the next run does not ask for it again...
    april_exchange.reset()
    assert collector.detect_and_fill_gaps(["BTC"]).ok
    assert klines_requests(april_exchange, OUTAGE_FIRST, OUTAGE_LAST) == 0
    # ...until the re-check policy says so (30 days by default).
    clock["now"] += 31 * 86400
    assert collector.detect_and_fill_gaps(["BTC"]).ok
    assert klines_requests(april_exchange, OUTAGE_FIRST, OUTAGE_LAST) == 1
    (window,) = LakeMeta(lake).windows("1h", kind="exchange_gap")
    assert window.checked_ms == int(clock["now"] * 1000) and window.attempts == 2


def test_a_failed_window_is_recorded_listed_and_filled_by_the_next_run(
    april_exchange: FakeExchange, april_client: BinanceClient, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    collector = CryptoCollector(april_client, lake=lake, batch_size_hours=240)
    assert collector.collect_backward("2024-03-20", ["ETH"]).ok
    april_exchange.advance(48 * 3_600_000)
    april_exchange.inject(Fault.http(500, path="/api/v3/klines", times=10))
    report = collector.collect_forward(["ETH"])
    assert "500" in report.failed["ETHUSDT"]
    gaps = collector.detector().find_all_gaps("ETHUSDT", "2024-03-20")
    assert {g.kind for g in gaps} == {"failed"} and sum(g.count for g in gaps) == 48
    summary = collector.detector().get_collection_summary("ETHUSDT", "2024-03-20")
    assert summary["failed_windows"] and "500" in summary["failed_windows"][0]["error"]

    april_exchange.reset()  # the exchange is healthy again
    filled = collector.detect_and_fill_gaps(["ETH"])
    assert filled.ok and filled.total_rows_added == 48 and filled.remaining == {}
    assert LakeMeta(lake).windows("1h", kind="failed") == []


def test_a_symbol_listed_after_the_start_date_expects_nothing_before_its_listing(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    collector = CryptoCollector(client, lake=lake)
    assert collector.collect_backward("2025-06-01", ["NEW"]).ok
    # With the listing recorded by the collector, even an offline detector knows.
    offline = DataGapDetector(
        lake, "1h", start_date="2025-06-01", clock=lambda: fake_exchange.now_ms() / 1000
    )
    assert offline.find_backward_gaps("NEWUSDT") == []
    summary = offline.get_collection_summary("NEWUSDT")
    assert summary["first_candle"] == "2025-06-15T10:00:00Z" and summary["completeness_percent"] == 100.0


def test_cli_gaps_json_fill_gaps_and_coverage(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    collector = CryptoCollector(client, lake=lake)
    assert collector.collect_backward("2025-12-20", ["BTC", "ETH"]).ok
    # Punch a hole: drop 3 hours from BTC's December partition.
    path = partition_path(lake, "1h", "BTCUSDT", "2025-12")
    table = pq.read_table(path)
    keep = pl.from_arrow(table).filter(
        ~pl.col("open_time").dt.hour().is_in([1, 2, 3]) | (pl.col("open_time").dt.day() != 24)
    )
    pq.write_table(keep.to_arrow().cast(ARROW_SCHEMA), path)
    runner = CliRunner()
    args = ["--lake", str(lake), "--base-url", fake_exchange.base_url, "--since", "2025-12-20"]
    result = runner.invoke(cli, ["gaps", *args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "interval": "1h",
            "kind": "missing",
            "position": "internal",
            "start_time": "2025-12-24T01:00:00Z",
            "end_time": "2025-12-24T03:00:00Z",
            "count": 3,
        }
    ]

    result = runner.invoke(
        cli, ["fill-gaps", "--lake", str(lake), "--base-url", fake_exchange.base_url, "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "filled 3 1h candles for 2 symbols; remaining: none" in result.output
    assert json.loads(runner.invoke(cli, ["gaps", *args, "--json"]).output) == []

    png = tmp_path / "coverage.png"
    result = runner.invoke(cli, ["coverage", *args, "--png", str(png)])
    assert result.exit_code == 0, result.output
    btc = next(line for line in result.output.splitlines() if line.startswith("BTCUSDT"))
    assert btc.split()[1] == "2025" and btc.split()[-1] == "100"  # Dec 2025 complete; months before: "-"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(runner.invoke(cli, ["coverage", *args, "--json"]).output)
    assert {(r["symbol"], r["month"], r["completeness_percent"]) for r in rows} == {
        ("BTCUSDT", "2025-12", 100.0),
        ("ETHUSDT", "2025-12", 100.0),
    }

    # The DuckDB database file in the lake has the views, from any working directory.
    con = duckdb.connect(str(lake / "cryptolake.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM klines WHERE symbol = 'BTCUSDT'").fetchall() == [(12 * 24,)]
        assert con.execute("SELECT count(*) FROM coverage").fetchall() == [(2,)]
        assert con.execute("SELECT count(*) FROM gaps").fetchall() == [(0,)]
    finally:
        con.close()


def test_sql_formats_and_bad_sql(fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    assert CryptoCollector(client, lake=lake).collect_backward("2025-12-31", ["BTC"]).ok
    runner = CliRunner()
    query = "SELECT symbol, open_time, close FROM klines ORDER BY open_time LIMIT 2"
    table = runner.invoke(cli, ["sql", query, "--lake", str(lake)])
    assert table.exit_code == 0 and "BTCUSDT" in table.output and "2025-12-31T00:00:00Z" in table.output
    as_json = json.loads(runner.invoke(cli, ["sql", query, "--lake", str(lake), "--format", "json"]).output)
    assert [r["open_time"] for r in as_json] == ["2025-12-31T00:00:00.000Z", "2025-12-31T01:00:00.000Z"]
    csv = runner.invoke(cli, ["sql", query, "--lake", str(lake), "--format", "csv"]).output.splitlines()
    assert csv[0] == "symbol,open_time,close" and csv[1].startswith("BTCUSDT,2025-12-31T00:00:00.000Z,")
    out = tmp_path / "out.parquet"
    assert (
        runner.invoke(
            cli, ["sql", query, "--lake", str(lake), "--format", "parquet", "-o", str(out)]
        ).exit_code
        == 0
    )
    assert pq.read_table(out).num_rows == 2

    before = {p: p.stat().st_mtime_ns for p in lake.rglob("*.parquet")}
    for bad in ("SELEC nonsense", "SELECT nope FROM klines", "DELETE FROM klines", "COPY klines TO 'x.csv'"):
        result = runner.invoke(cli, ["sql", bad, "--lake", str(lake)])
        assert result.exit_code == 2, (bad, result.output)
        assert result.output.startswith("error: SQL error:") and len(result.output.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in lake.rglob("*.parquet")} == before
    assert not (Path.cwd() / "x.csv").exists()
    assert set(KLINE_COLUMNS) <= set(
        json.loads(
            runner.invoke(
                cli, ["sql", "SELECT * FROM klines LIMIT 1", "--lake", str(lake), "--format", "json"]
            ).output
        )[0]
    )


def test_an_off_grid_row_is_quarantined_by_the_writer_and_found_by_the_scan_in_a_foreign_file(
    tmp_path: Path,
) -> None:
    grid = Interval("1h")
    times = [to_ms("2024-01-01") + i * 3_600_000 for i in range(5)]
    times[2] += 60_000  # 02:01: off the hourly grid; 02:00 is missing
    lake = Lake(tmp_path)
    assert lake.write_klines("1h", "BTCUSDT", synthetic(grid, times)).rows_refused == 1
    assert lake.quarantined("1h")["rule"].to_list() == ["off_grid"]
    (stats,) = lake.partition_stats("1h", "BTCUSDT")
    assert stats.off_grid_rows == 0 and stats.rows == 4 and not stats.is_contiguous(grid)
    end = times[-1] + 3_600_000
    scan = DataGapDetector(tmp_path, "1h").scan(end_date=end)
    assert [(g.kind, iso(g.start_ms)) for g in scan.gaps] == [("missing", "2024-01-01T02:00:00Z")]
    # Another tool's file with that row: not trusted from its footer, read, and the row found.
    store_as_another_tool(tmp_path, "1h", "BTCUSDT", synthetic(grid, times))
    scan = DataGapDetector(tmp_path, "1h").scan(end_date=end)
    assert scan.scanned_partitions == 1
    assert [(g.kind, iso(g.start_ms)) for g in scan.gaps] == [
        ("missing", "2024-01-01T02:00:00Z"),
        ("off_grid", "2024-01-01T02:01:00Z"),
    ]


def test_a_delisted_symbol_expects_nothing_after_its_last_candle(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    collector = CryptoCollector(client, lake=lake)
    assert collector.collect_backward("2022-05-01", ["LUNA"]).ok
    online = DataGapDetector(lake, "1h", client=client, start_date="2022-05-01")
    assert [g for g in online.find_all_gaps("LUNAUSDT") if g.kind == "missing"] == []
    assert collector.detect_and_fill_gaps(["LUNA"]).remaining.get("missing", 0) == 0
    # Offline, nobody can tell a delisting from a download we did not make.
    offline = DataGapDetector(
        lake, "1h", start_date="2022-05-01", clock=lambda: fake_exchange.now_ms() / 1000
    )
    assert [g.position for g in offline.find_all_gaps("LUNAUSDT")] == ["forward"]


@pytest.mark.parametrize("edge", ["2024-03-12T06:00:00Z", "2024-03-12T04:00:00Z", "2024-03-12T09:00:00Z"])
def test_an_outage_cut_by_a_batch_edge_is_one_exchange_gap(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path, edge: str
) -> None:
    # Batches run forward from the start in steps of batch_size_hours: choose the size so that
    # one batch edge falls on `edge`, inside or at either end of the outage (04:00-08:00).
    start = "2024-03-01T00:00:00Z"
    hours = (to_ms(edge) - to_ms(start)) // 3_600_000
    collector = CryptoCollector(client, lake=tmp_path / "lake", batch_size_hours=hours)
    assert collector.collect_backward(start, ["BTC"]).ok
    gaps = DataGapDetector(tmp_path / "lake", "1h", client=client).find_all_gaps("BTCUSDT", start)
    assert [(g.kind, iso(g.start_ms), iso(g.end_ms), g.count) for g in gaps] == [
        ("exchange_gap", OUTAGE_FIRST, OUTAGE_LAST, 5)
    ]


def test_report_scans_stores_the_report_and_refreshes_the_views(tmp_path: Path) -> None:
    import duckdb

    grid = Interval("1h")
    opens = [to_ms("2024-01-01") + i * 3_600_000 for i in range(48) if i not in (5, 6, 30)]
    Lake(tmp_path).write_klines("1h", "BTCUSDT", synthetic(grid, opens))
    scan = DataGapDetector(tmp_path, "1h").report(end_date=to_ms("2024-01-03"))
    assert [(g.kind, g.count) for g in scan.gaps] == [("missing", 2), ("missing", 1)]
    assert (tmp_path / "_meta" / "gaps.parquet").is_file()
    with duckdb.connect(str(tmp_path / "cryptolake.duckdb"), read_only=True) as con:
        assert con.sql("SELECT sum(count) FROM gaps").fetchall() == [(3,)]
