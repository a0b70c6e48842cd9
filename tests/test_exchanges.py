"""Several exchanges in one lake: each one's candles, metadata, gap reports, status, views and
PostgreSQL rows kept apart by the ``exchange`` key; and a lake written before there were other
exchanges opening and syncing unchanged (its metadata reads as Binance's)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from cryptolake.lake import Lake
from cryptolake.lake.layout import EXCHANGES, exchange_dir, validate_exchange
from cryptolake.lake.meta import LakeMeta
from cryptolake.testing import FakeExchange
from cryptolake.timeutils import to_ms
from tests.conftest import FAKE_NOW_MS, PG_DSN
from tests.helpers import collect, invoke, lake_bytes, oracle, stored

START = "2025-12-29"


def _strip_exchange_from_meta(root: Path) -> list[str]:
    """Rewrite every ``_meta/*.parquet`` as an older cryptolake wrote it: without ``exchange``."""
    stripped = []
    for path in sorted((root / "_meta").glob("*.parquet")):
        frame = pl.read_parquet(io.BytesIO(path.read_bytes()))
        if "exchange" in frame.columns:
            frame.drop("exchange").write_parquet(path)
            stripped.append(path.name)
    return stripped


def test_an_old_single_exchange_lake_opens_and_syncs_unchanged(tmp_path: Path, cli_env: Path) -> None:
    lake = tmp_path / "lake"
    with FakeExchange(now=FAKE_NOW_MS) as fx:
        assert collect(lake, fx, "--symbols", "BTC,ETH", "--since", START, "--source", "rest").exit_code == 0
        assert invoke("gaps", "--lake", lake, "--base-url", fx.base_url).exit_code == 0
        stripped = _strip_exchange_from_meta(lake)
        assert {"starts.parquet", "gaps.parquet", "coverage.parquet", "markets.parquet"} <= set(stripped)
        legacy_candles = lake_bytes(lake / "klines")

        # Read as Binance's, by the Python API and by the CLI, without writing anything.
        meta = LakeMeta(lake)
        assert set(meta.starts("1h")) == {"BTCUSDT", "ETHUSDT"}
        assert LakeMeta(lake, "bybit").starts("1h") == {}
        status = json.loads(invoke("status", "--lake", lake, "--json").output)
        assert status["exchange"] == "binance"
        assert set(status["symbols"]) == {"BTCUSDT", "ETHUSDT"}
        views = invoke(
            "sql",
            "--lake",
            lake,
            "--format",
            "json",
            "SELECT DISTINCT exchange FROM gaps UNION SELECT DISTINCT exchange FROM coverage",
        )
        assert views.exit_code == 0, views.output
        assert {row["exchange"] for row in json.loads(views.output)} == {"binance"}

        # A plain-DuckDB reader of the views file sees the legacy metadata as Binance's too.
        from cryptolake.query import write_database

        con = duckdb.connect(str(write_database(lake)), read_only=True)
        assert {r[0] for r in con.execute("SELECT DISTINCT exchange FROM coverage").fetchall()} == {"binance"}
        con.close()

        # The next collection syncs it: nothing refetched, nothing rewritten, records upgraded.
        fx.reset()
        again = collect(lake, fx, "--symbols", "BTC,ETH", "--since", START, "--source", "rest")
        assert again.exit_code == 0, again.output
        assert lake_bytes(lake / "klines") == legacy_candles
        markets = pq.read_table(lake / "_meta" / "markets.parquet")  # rewritten by every run
        assert markets.column_names[0] == "exchange"
        assert set(markets.column("exchange").to_pylist()) == {"binance"}
        assert set(LakeMeta(lake).starts("1h")) == {"BTCUSDT", "ETHUSDT"}  # legacy file, read as before
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert stored(lake, symbol).equals(
                oracle(fx, symbol, START).filter(
                    pl.col("open_time") < pl.datetime(2026, 1, 1, time_zone="UTC")
                )
            )


def test_exchange_names_are_checked_and_kept_in_the_path(tmp_path: Path) -> None:
    from cryptolake.config import EXCHANGES as SETTING_EXCHANGES
    from cryptolake.sources.registry import VENUE_CLIENTS
    from cryptolake.testing.venues import FAKE_VENUES

    assert EXCHANGES == SETTING_EXCHANGES == ("binance", "coinbase", "kraken", "bybit")
    assert set(VENUE_CLIENTS) == set(FAKE_VENUES) == set(EXCHANGES) - {"binance"}
    assert validate_exchange("kraken") == "kraken"
    for bad in ("Binance", "ftx", "", "../x"):
        try:
            validate_exchange(bad)
        except ValueError as exc:
            assert "unknown exchange" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")
    assert exchange_dir(tmp_path, "coinbase") == tmp_path / "klines" / "exchange=coinbase"
    lake = Lake(tmp_path)
    assert lake.exchange == "binance" and lake.for_exchange("bybit").exchange == "bybit"
    assert repr(lake.for_exchange("kraken")).endswith("exchange='kraken')")


# -- two exchanges in one lake ----------------------------------------------------------------


def _in_both(tmp_path: Path, fx: FakeExchange, bybit: Any) -> Path:
    """BTC and ETH from Binance and from Bybit into one lake, by the CLI."""
    lake = tmp_path / "lake"
    assert collect(lake, fx, "--symbols", "BTC,ETH", "--since", START, "--source", "rest").exit_code == 0
    result = invoke(
        "collect", "--exchange", "bybit", "--symbols", "BTC,ETH", "--since", START,
        "--lake", lake, "--base-url", bybit.base_url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return lake


def test_two_exchanges_in_one_lake_are_kept_apart(tmp_path: Path, cli_env: Path) -> None:
    from cryptolake.testing.bybit import FakeBybit

    with FakeExchange(now=FAKE_NOW_MS) as fx, FakeBybit(now=FAKE_NOW_MS) as bybit:
        lake = _in_both(tmp_path, fx, bybit)
        # The layout: one folder per exchange, the same symbol name in both.
        assert sorted(p.name for p in (lake / "klines").iterdir()) == ["exchange=binance", "exchange=bybit"]
        assert Lake(lake).symbols("1h") == Lake(lake, "bybit").symbols("1h") == ["BTCUSDT", "ETHUSDT"]
        # Each exchange's candles are its own (the two fakes' prices differ: one market model,
        # two venues' symbols with their own series).
        end = FAKE_NOW_MS - FAKE_NOW_MS % 3_600_000
        binance_btc = Lake(lake).scan("1h", ["BTCUSDT"]).collect()
        bybit_btc = Lake(lake, "bybit").scan("1h", ["BTCUSDT"]).collect()
        expected = (end - to_ms(START)) // 3_600_000
        assert binance_btc.height == bybit_btc.height == expected
        assert bybit_btc["quote_volume"].null_count() == 0 and bybit_btc["trades"].null_count() == expected

        # Metadata per exchange: starts, markets, collection state.
        assert set(LakeMeta(lake, "bybit").starts("1h")) == {"BTCUSDT", "ETHUSDT"}
        markets = LakeMeta(lake, "bybit").markets()
        assert set(markets["exchange"].to_list()) == {"bybit"} and "BTCUSDT" in markets["symbol"].to_list()

        # Gaps: punch a hole in Bybit's BTC only; Binance's report stays clean.
        month = Lake(lake, "bybit").months("1h", "BTCUSDT")[-1]
        path = (
            lake
            / "klines"
            / "exchange=bybit"
            / "interval=1h"
            / "symbol=BTCUSDT"
            / f"month={month}"
            / "data.parquet"
        )
        table = pq.read_table(path)
        pq.write_table(table.slice(3), path)  # the month's first three hours gone
        bybit_gaps = json.loads(
            invoke(
                "gaps", "--exchange", "bybit", "--lake", lake, "--base-url", bybit.base_url, "--json"
            ).output
        )
        binance_gaps = json.loads(invoke("gaps", "--lake", lake, "--base-url", fx.base_url, "--json").output)
        assert [(g["exchange"], g["symbol"], g["count"]) for g in bybit_gaps if g["kind"] == "missing"] == [
            ("bybit", "BTCUSDT", 3)
        ]
        assert all(g["exchange"] == "binance" and g["kind"] != "missing" for g in binance_gaps)

        # Status and coverage name their exchange.
        status = json.loads(invoke("status", "--exchange", "bybit", "--lake", lake, "--json").output)
        assert status["exchange"] == "bybit" and set(status["symbols"]) == {"BTCUSDT", "ETHUSDT"}
        assert status["exchanges_in_lake"] == ["binance", "bybit"]
        assert (
            "also in this lake: bybit (see them with --exchange)" in invoke("status", "--lake", lake).output
        )
        assert status["symbols"]["BTCUSDT"]["rows"] == expected - 3
        coverage = json.loads(
            invoke(
                "coverage", "--exchange", "bybit", "--lake", lake, "--base-url", bybit.base_url, "--json"
            ).output
        )
        assert coverage and {row["exchange"] for row in coverage} == {"bybit"}

        # SQL: both in the views, told apart by the exchange column.
        counts = invoke(
            "sql", "--lake", lake, "--format", "json",
            "SELECT exchange, symbol, count(*) AS n FROM klines GROUP BY ALL ORDER BY ALL",
        )  # fmt: skip
        assert json.loads(counts.output) == [
            {"exchange": "binance", "symbol": "BTCUSDT", "n": expected},
            {"exchange": "binance", "symbol": "ETHUSDT", "n": expected},
            {"exchange": "bybit", "symbol": "BTCUSDT", "n": expected - 3},
            {"exchange": "bybit", "symbol": "ETHUSDT", "n": expected},
        ]
        reports = invoke(
            "sql", "--lake", lake, "--format", "json",
            "SELECT exchange, count(*) AS n FROM gaps WHERE kind = 'missing' GROUP BY ALL",
        )  # fmt: skip
        assert json.loads(reports.output) == [{"exchange": "bybit", "n": 1}]

        # Filling Bybit's hole asks Bybit, not Binance.
        fx.reset()
        filled = invoke(
            "fill-gaps", "--exchange", "bybit", "--lake", lake, "--base-url", bybit.base_url, "--json"
        )
        assert filled.exit_code == 0, filled.output
        assert fx.stats().requests == 0
        assert Lake(lake, "bybit").scan("1h", ["BTCUSDT"]).collect().height == expected


@pytest.mark.postgres
def test_postgres_table_keeps_exchanges_apart(
    tmp_path: Path, cli_env: Path, pg_schema: tuple[Any, str]
) -> None:
    from cryptolake.testing.bybit import FakeBybit

    server, schema = pg_schema
    dsn = PG_DSN
    with FakeExchange(now=FAKE_NOW_MS) as fx, FakeBybit(now=FAKE_NOW_MS) as bybit:
        lake = _in_both(tmp_path, fx, bybit)
    for exchange in ("binance", "bybit", "binance"):  # the second binance sync moves nothing
        result = invoke(
            "load", "postgres", "--exchange", exchange, "--lake", lake, "--dsn", dsn,
            "--schema", schema, "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows_sent"] == 0
    rows = server.execute(
        f"SELECT exchange, symbol, count(*), sum(close) FROM {schema}.klines GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    lake_rows = duckdb.sql(
        f"SELECT exchange, symbol, count(*), sum(close) FROM read_parquet('{lake}/klines/**/*.parquet', "
        "hive_partitioning = true) GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    assert [r[:3] for r in rows] == [r[:3] for r in lake_rows]
    assert [r[0] for r in rows] == ["binance", "binance", "bybit", "bybit"]
    assert all(abs(a[3] - b[3]) < 1e-6 * abs(b[3]) for a, b in zip(rows, lake_rows, strict=True))


# -- periods without trades -------------------------------------------------------------------


def test_coinbase_quiet_minutes_are_no_trades_gaps_never_refetched(tmp_path: Path, cli_env: Path) -> None:
    from cryptolake.testing.coinbase import FakeCoinbase

    lake = tmp_path / "lake"
    since = "2025-12-31T18:00:00Z"
    with FakeCoinbase(now=FAKE_NOW_MS) as cb:
        args = ("--exchange", "coinbase", "--lake", lake, "--base-url", cb.base_url, "--interval", "1m")
        result = invoke("collect", "--symbols", "QUIET,BTC", "--since", since, *args)
        assert result.exit_code == 0, result.output
        end = FAKE_NOW_MS - FAKE_NOW_MS % 60_000  # the open minute is not stored
        # The lake holds exactly the minutes that traded (the fake's own record of them).
        traded = cb.candles("QUIET-USD", "1m", to_ms(since), end)
        opens = (
            Lake(lake, "coinbase").scan("1m", ["QUIET-USD"]).collect()["open_time"].dt.epoch("ms").to_list()
        )
        assert opens == [row[0] for row in traded]
        quiet = (end - to_ms(since)) // 60_000 - len(traded)
        assert quiet > 50  # one minute in three
        # gaps: the quiet minutes between candles are no_trades, nothing is missing.
        gaps = json.loads(invoke("gaps", *args, "--json").output)
        kinds: dict[tuple[str, str], int] = {}
        for g in gaps:
            kinds[(g["symbol"], g["kind"])] = kinds.get((g["symbol"], g["kind"]), 0) + g["count"]
        # Quiet minutes before the first traded one of the range count too (the pair was listed
        # long before); the ones after the last traded minute are not proven yet (a forward gap).
        trailing = (end - traded[-1][0]) // 60_000 - 1
        inside = quiet - trailing
        assert kinds.get(("QUIET-USD", "no_trades")) == inside
        assert kinds.get(("QUIET-USD", "missing"), 0) == trailing
        assert all(g["recheck_due"] is False for g in gaps if g["kind"] == "no_trades")  # checked just now
        # Coverage counts the no-trade minutes as accounted for, not as holes.
        coverage = json.loads(invoke("coverage", *args, "--symbols", "QUIET", "--json").output)
        assert sum(row["no_trades"] for row in coverage) == inside
        assert sum(row["present"] for row in coverage) == len(traded)
        assert ("BTC-USD", "missing") not in kinds
        windows = json.loads(
            invoke("sql", "--lake", lake, "--format", "json",
                   "SELECT exchange, kind, count(*) AS n FROM exchange_windows GROUP BY ALL").output
        )  # fmt: skip
        assert [(w["exchange"], w["kind"]) for w in windows] == [("coinbase", "no_trades")]
        # fill-gaps leaves them alone: no candle request for a no-trade minute.
        cb.reset()
        filled = invoke("fill-gaps", *args, "--json")
        assert filled.exit_code == 0, filled.output
        assert json.loads(filled.output)["remaining"].get("no_trades") == inside
        candle_requests = sum(n for path, n in cb.stats().by_path.items() if path.endswith("/candles"))
        assert candle_requests <= 1  # at most the tail after the last traded minute


def test_the_readme_cross_exchange_query_runs(tmp_path: Path, cli_env: Path) -> None:
    from cryptolake.testing.bybit import FakeBybit
    from cryptolake.testing.coinbase import FakeCoinbase

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    after = readme.split("compares a pair across exchanges", 1)[1]
    query = after.split("```sql\n", 1)[1].split("```", 1)[0]
    with (
        FakeExchange(now=FAKE_NOW_MS) as fx,
        FakeBybit(now=FAKE_NOW_MS) as bybit,
        FakeCoinbase(now=FAKE_NOW_MS) as cb,
    ):
        lake = _in_both(tmp_path, fx, bybit)
        result = invoke(
            "collect", "--exchange", "coinbase", "--symbols", "BTC", "--since", START,
            "--lake", lake, "--base-url", cb.base_url,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    answer = invoke("sql", "--lake", lake, "--format", "json", query)
    assert answer.exit_code == 0, answer.output
    rows = json.loads(answer.output)
    days = {row["day"][:10] for row in rows}
    assert days == {"2025-12-29", "2025-12-30", "2025-12-31"}
    assert {(row["exchange"], row["quote"]) for row in rows} == {
        ("binance", "USDT"), ("bybit", "USDT"), ("coinbase", "USD"),
    }  # fmt: skip
    assert len(rows) == 9 and all(row["close"] > 0 for row in rows)


def test_kraken_history_older_than_its_ohlc_window_comes_from_trades(
    tmp_path: Path, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptolake.testing.kraken import FakeKraken

    monkeypatch.setenv("CRYPTOLAKE_KRAKEN_REQUESTS_PER_S", "50")  # the fake allows it: a quick test

    lake = tmp_path / "lake"
    since = "2025-11-01"  # 1,464 hours before the fake's now: twice Kraken's 720-candle OHLC window
    with FakeKraken(now=FAKE_NOW_MS, pair_rate_per_s=50, pair_burst=50, rate_per_s=50, burst=50) as kr:
        args = ("--exchange", "kraken", "--lake", lake, "--base-url", kr.base_url)
        result = invoke("collect", "--symbols", "BTC", "--since", since, *args)
        assert result.exit_code == 0, result.output
        assert kr.stats().by_path.get("/0/public/Trades", 0) > 0  # history rebuilt from trades
        end = FAKE_NOW_MS - FAKE_NOW_MS % 3_600_000
        expected = kr.candles("XBTUSD", "1h", to_ms(since), end)
        stored_btc = Lake(lake, "kraken").scan("1h", ["XBTUSD"]).collect()
        assert stored_btc["open_time"].dt.epoch("ms").to_list() == [c.open_ms for c in expected]
        assert stored_btc["close"].to_list() == pytest.approx([c.close for c in expected], rel=1e-12)
        assert stored_btc["volume"].to_list() == pytest.approx([c.volume for c in expected], rel=1e-9)
        assert stored_btc["trades"].to_list() == [c.count for c in expected]
        assert stored_btc["taker_buy_base_volume"].null_count() == stored_btc.height
        # The markets view has Kraken's pair under common names.
        markets = LakeMeta(lake, "kraken").markets()
        row = markets.filter(pl.col("symbol") == "XBTUSD").row(0, named=True)
        assert (row["base"], row["quote"], row["status"]) == ("BTC", "USD", "TRADING")


# -- one scheduler, several exchanges -----------------------------------------------------------


def test_one_scheduler_keeps_two_exchanges_complete_side_by_side(tmp_path: Path) -> None:
    from cryptolake.collector import CryptoCollector
    from cryptolake.scheduler import CollectorScheduler
    from cryptolake.sources.binance import BinanceClient
    from cryptolake.sources.bybit import BybitClient
    from cryptolake.testing.bybit import FakeBybit

    lake = tmp_path / "lake"

    def clock() -> float:  # the exchanges' time: the last closed hour is 2025-12-31 23:00
        return FAKE_NOW_MS / 1000

    with (
        FakeExchange(now=FAKE_NOW_MS) as fx,
        FakeBybit(now=FAKE_NOW_MS) as by,
        BinanceClient(base_url=fx.base_url, retry_delay=0.01, clock=clock) as binance,
        BybitClient(base_url=by.base_url, retry_delay=0.01, clock=clock) as bybit,
    ):
        main = CryptoCollector(binance, lake=lake, clock=clock)
        other = CryptoCollector(bybit, lake=lake, clock=clock)
        scheduler = CollectorScheduler(
            binance, main, "0 0 1 1 *", START, crypto_symbols=["BTCUSDT", "ETHUSDT"],
            clock=clock, other_exchanges=[(other, ["BTCUSDT", "SOLUSDT"])],
        )  # fmt: skip
        scheduler.start()
        try:
            run = scheduler.trigger_manual_collection("full")
        finally:
            scheduler.stop()
        assert run.ok, run.error
        assert {"forward", "bybit:forward", "gaps", "bybit:gaps"} <= set(run.reports)
        assert set(run.reports["bybit:forward"].results) == {"BTCUSDT", "SOLUSDT"}
        assert set(run.reports["forward"].results) == {"BTCUSDT", "ETHUSDT"}
        assert fx.stats().requests > 0 and by.stats().requests > 0
    expected = (FAKE_NOW_MS - FAKE_NOW_MS % 3_600_000 - to_ms(START)) // 3_600_000
    assert Lake(lake).symbols("1h") == ["BTCUSDT", "ETHUSDT"]
    assert Lake(lake, "bybit").symbols("1h") == ["BTCUSDT", "SOLUSDT"]
    for exchange, symbol in (("binance", "ETHUSDT"), ("bybit", "SOLUSDT")):
        assert Lake(lake, exchange).scan("1h", [symbol]).collect().height == expected


def test_an_invalid_symbol_fails_alone_on_another_exchange(tmp_path: Path, cli_env: Path) -> None:
    from cryptolake.testing.bybit import FakeBybit

    lake = tmp_path / "lake"
    with FakeBybit(now=FAKE_NOW_MS) as by:
        result = invoke(
            "collect", "--exchange", "bybit", "--symbols", "BTC,NOPEUSDT", "--since", START,
            "--lake", lake, "--base-url", by.base_url, "--json",
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    reports = json.loads(result.stdout)
    failed = {s: e for r in reports for s, e in r["failed"].items()}
    assert list(failed) == ["NOPEUSDT"] and "Bybit does not know symbol 'NOPEUSDT'" in failed["NOPEUSDT"]
    assert Lake(lake, "bybit").symbols("1h") == ["BTCUSDT"]


def test_top_n_and_the_fake_of_each_exchange_from_the_cli(tmp_path: Path, cli_env: Path) -> None:
    import subprocess
    import sys

    for exchange, expected in (("coinbase", "BTC-USD"), ("kraken", "XBTUSD"), ("bybit", "BTCUSDT")):
        process = subprocess.Popen(
            [sys.executable, "-m", "cryptolake", "fake-exchange", "--exchange", exchange, "--port", "0",
             "--frozen", "--now", "2026-01-01T00:30:00Z"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith(f"Fake {exchange.capitalize()} exchange listening on http://127.0.0.1:"), (
                line
            )
            url = line.rsplit(" ", 1)[1].strip()
            top = invoke("symbols", "--exchange", exchange, "--top", "3", "--base-url", url, "--json")
            assert top.exit_code == 0, top.output
            ranked = [row["symbol"] for row in json.loads(top.output)]
            table = invoke("symbols", "--exchange", exchange, "--top", "3", "--base-url", url)
            assert table.exit_code == 0 and expected in table.output, table.output
            assert len(ranked) == 3 and expected in ranked, ranked
        finally:
            process.terminate()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()


def test_no_trades_windows_are_checked_again_once_due(tmp_path: Path) -> None:
    from cryptolake.collector import CryptoCollector
    from cryptolake.gaps import DataGapDetector
    from cryptolake.sources.coinbase import CoinbaseClient
    from cryptolake.testing.coinbase import FakeCoinbase

    lake = tmp_path / "lake"
    now = [FAKE_NOW_MS / 1000]
    with (
        FakeCoinbase(now=FAKE_NOW_MS) as cb,
        CoinbaseClient(base_url=cb.base_url, retry_delay=0.01) as client,
    ):
        collector = CryptoCollector(
            client, lake=lake, interval="1m", clock=lambda: now[0], exchange_gap_recheck_days=1
        )
        assert collector.collect("2025-12-31T22:00:00Z", ["QUIET-USD"])[0].ok
        quiet = [g for g in collector.detector().scan(["QUIET-USD"]).gaps if g.kind == "no_trades"]
        assert quiet and not any(g.recheck_due for g in quiet)
        now[0] += 2 * 86_400  # two days on: due for a re-check
        detector = DataGapDetector(
            lake, "1m", client=client, exchange_gap_recheck_days=1, clock=lambda: now[0]
        )
        due = [g for g in detector.scan(["QUIET-USD"], end_date=FAKE_NOW_MS).gaps if g.kind == "no_trades"]
        assert due and all(g.recheck_due for g in due)
        cb.reset()
        report = collector.detect_and_fill_gaps(["QUIET-USD"])
        assert report.ok
        assert sum(n for p, n in cb.stats().by_path.items() if p.endswith("/candles")) >= 1  # asked again
        windows = LakeMeta(lake, "coinbase").windows("1m", ["QUIET-USD"], "no_trades")
        assert windows and all(w.attempts >= 2 for w in windows)  # still empty: checked twice


def test_the_readme_query_recipes_keep_exchanges_apart(tmp_path: Path, cli_env: Path) -> None:
    import shlex

    from cryptolake.testing.bybit import FakeBybit

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Querying the lake", 1)[1]
    duck_sql = section.split("```sql\n", 1)[1].split("```", 1)[0]
    polars_code = section.split("```python\n", 1)[1].split("```", 1)[0]
    commands = section.split("```bash\n", 1)[1].split("```", 1)[0]
    with FakeExchange(now=FAKE_NOW_MS) as fx, FakeBybit(now=FAKE_NOW_MS) as bybit:
        lake = _in_both(tmp_path, fx, bybit)
    expected = (FAKE_NOW_MS - FAKE_NOW_MS % 3_600_000 - to_ms(START)) // 3_600_000
    here = lake.as_posix()
    rows = duckdb.sql(duck_sql.replace("data/lake", here)).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("binance", "BTCUSDT", expected), ("binance", "ETHUSDT", expected),
        ("bybit", "BTCUSDT", expected), ("bybit", "ETHUSDT", expected),
    ]  # fmt: skip
    scope: dict[str, Any] = {}
    exec(polars_code.replace("data/lake", here), scope)  # noqa: S102 - the README's own recipe
    assert scope["btc"].height == expected and set(scope["btc"]["exchange"]) == {"binance"}
    assert scope["returns"].height == expected
    tokens = shlex.split(commands, comments=True)
    starts = [i for i, t in enumerate(tokens) if t == "cryptolake"] + [len(tokens)]
    for a, b in zip(starts, starts[1:], strict=False):
        argv = tokens[a + 1 : b]
        result = invoke(*argv[:1], "--lake", lake, *argv[1:])
        assert result.exit_code == 0, (argv, result.output)
        if "lag(close)" in argv[1]:  # no return across exchanges: none is exactly 0 (same close)
            assert " 0.0\n" not in result.output and "bybit" in result.output


def test_binance_only_commands_refuse_another_exchange(tmp_path: Path, cli_env: Path) -> None:
    from cryptolake.testing.coinbase import FakeCoinbase

    lake = tmp_path / "lake"
    with FakeCoinbase(now=FAKE_NOW_MS) as cb:
        args = ("--exchange", "coinbase", "--lake", lake, "--base-url", cb.base_url)
        assert invoke("collect", "--symbols", "BTC", "--since", START, *args).exit_code == 0
        archive = invoke("collect", "--symbols", "BTC", "--since", START, "--source", "archive", *args)
        assert archive.exit_code == 2 and "only Binance has a bulk archive" in archive.output
        before = lake_bytes(lake / "klines")
    verify = verify_on_coinbase(lake)
    assert verify.exit_code == 2 and "verify compares the lake with Binance" in verify.output
    assert lake_bytes(lake / "klines") == before


def verify_on_coinbase(lake: Path) -> Any:
    """``verify`` with collection.exchange set to coinbase in the environment."""
    from click.testing import CliRunner

    from cryptolake.cli import cli

    return CliRunner().invoke(
        cli, ["verify", "--lake", str(lake)], env={"CRYPTOLAKE_COLLECTION_EXCHANGE": "coinbase"}
    )


def test_the_readme_python_recipe_for_other_exchanges(tmp_path: Path) -> None:
    from cryptolake.testing.coinbase import FakeCoinbase
    from cryptolake.testing.kraken import FakeKraken

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Other exchanges: Coinbase, Kraken, Bybit", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    with FakeCoinbase(now=FAKE_NOW_MS) as cb, FakeKraken(now=FAKE_NOW_MS) as kr:
        runnable = (
            code.replace("CoinbaseClient()", f"CoinbaseClient(base_url={cb.base_url!r})")
            .replace("KrakenClient()", f"KrakenClient(base_url={kr.base_url!r})")
            .replace('"data/lake"', repr(str(tmp_path / "lake")))
            .replace('"2025-01-01"', '"2025-12-30"')  # two days, not a year: a quick test
        )
        scope: dict[str, Any] = {}
        exec(runnable, scope)  # noqa: S102 - the README's own recipe
    assert Lake(tmp_path / "lake", "coinbase").symbols("1h") == ["BTC-USD", "ETH-USD"]
    assert Lake(tmp_path / "lake", "kraken").symbols("1h") == ["ETHUSD", "XBTUSD"]
    assert all(g.kind != "missing" for g in scope["gaps"])
    assert {m.symbol for m in scope["markets"]} >= {"BTC-USD", "ETH-USD"}
