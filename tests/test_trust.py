"""What makes the lake trustworthy (issue 10): SQL that cannot write and renders every type, one
story about completeness, signals, patience under faults, bans and forgetting, and secrets.

Arrange with the library, act with the CLI (in-process, or a real process where signals or
logs matter), assert on the lake against the fake exchange."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from cryptolake import CryptoCollector
from cryptolake.config import load_settings
from cryptolake.errors import ConfigError
from cryptolake.lake import Lake
from cryptolake.lake.meta import LakeMeta, Window
from cryptolake.query import DATABASE_FILE
from cryptolake.sources.binance import BinanceClient
from cryptolake.sources.ratelimit import MAX_BAN_S, BanBook
from cryptolake.testing import FakeExchange
from cryptolake.timeutils import to_ms

from .helpers import VirtualClock, check_files, clean_env, collect, invoke, one_line_error, oracle, stored


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in set(os.environ) - set(clean_env()):
        monkeypatch.delenv(name)
    return tmp_path / "lake"


@pytest.fixture
def small_lake(fake_exchange: FakeExchange, lake: Path) -> Path:
    assert (
        collect(lake, fake_exchange, "--symbols", "BTC,ETH", "--since", "2025-12-30", "--quiet").exit_code
        == 0
    )
    return lake


# -- sql: every type, strict JSON, big results, outputs -----------------------------------------

EVERY_TYPE = """SELECT INTERVAL '1 year 2 months 3 days 04:05:06.5' AS iv, [1.5, 'nan'::DOUBLE] AS list,
    {'a': 1, 'b': 'x', 'c': 'inf'::DOUBLE} AS struct, MAP {'k': 1} AS map, 1.25::DECIMAL(10, 2) AS dec,
    170141183460469231731687303715884105727::HUGEINT AS huge, 'abc'::BLOB AS blob,
    '00000000-0000-0000-0000-000000000001'::UUID AS uuid, TIME '12:34:56' AS t, TIMETZ '12:34:56+02' AS ttz,
    DATE '2024-01-01' AS d, TIMESTAMP '2024-01-01 01:02:03' AS ts, TIMESTAMPTZ '2024-01-01 00:00:00+00' AS tstz,
    TIMESTAMP_NS '2024-01-01 00:00:00.123456789' AS tns, 'nan'::DOUBLE AS nan, '-inf'::FLOAT AS neg_inf,
    '101'::BIT AS bit, union_value(num := 2) AS un, 12::UTINYINT AS small, NULL AS nothing,
    [1, 2]::INTEGER[2] AS arr, 1 AS dup, 2 AS dup"""


def test_every_duckdb_type_renders_in_every_format(small_lake: Path, tmp_path: Path) -> None:
    table = invoke("sql", EVERY_TYPE, "--lake", small_lake)
    assert table.exit_code == 0, table.output
    assert "1 year 2 months 3 days 04:05:06.5" in table.stdout and "[1.5,NaN]" in table.stdout

    as_json = invoke("sql", EVERY_TYPE, "--format", "json", "--lake", small_lake)
    assert as_json.exit_code == 0, as_json.output
    (row,) = json.loads(as_json.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert row["iv"] == "1 year 2 months 3 days 04:05:06.5"
    assert (
        row["list"] == [1.5, None]
        and row["struct"] == {"a": 1, "b": "x", "c": None}
        and row["map"] == {"k": 1}
    )
    assert row["dec"] == 1.25 and row["huge"] == 2**127 - 1 and row["nan"] is None and row["neg_inf"] is None
    assert row["tstz"] == "2024-01-01T00:00:00.000Z" and row["ttz"] == "12:34:56+02" and row["bit"] == "101"
    assert row["tns"] == "2024-01-01 00:00:00.123456789" and row["arr"] == [1, 2] and row["nothing"] is None
    assert (row["dup"], row["dup_2"]) == (1, 2)

    csv = invoke("sql", EVERY_TYPE, "--format", "csv", "--lake", small_lake)
    assert csv.exit_code == 0, csv.output
    header, line = csv.stdout.splitlines()
    assert (
        header.startswith("iv,list,struct,map,dec")
        and '"[1.5,NaN]"' in line
        and "2024-01-01T00:00:00.000Z" in line
    )

    out = tmp_path / "every.parquet"
    assert (
        invoke("sql", EVERY_TYPE, "--format", "parquet", "--output", out, "--lake", small_lake).exit_code == 0
    )
    back = pq.read_table(out)
    assert back.column("iv").to_pylist() == ["1 year 2 months 3 days 04:05:06.5"]
    assert back.column("list").to_pylist()[0][0] == 1.5 and math.isnan(back.column("nan").to_pylist()[0])


def test_a_big_table_is_capped_with_a_note_and_csv_json_give_everything(small_lake: Path) -> None:
    query = "SELECT range AS n, range * 1.5 AS x FROM range(35000)"
    started = time.monotonic()
    table = invoke("sql", query, "--lake", small_lake)
    assert table.exit_code == 0
    assert time.monotonic() - started < 30  # printed in seconds, not a minute (a loose bound: no timing test)
    assert len([line for line in table.stdout.splitlines() if line.strip()]) == 1000 + 2  # header and rule
    assert "showing the first 1,000 rows" in table.stderr
    assert len(invoke("sql", query, "--limit", "0", "--lake", small_lake).stdout.splitlines()) == 35000 + 2
    assert len(invoke("sql", query, "--limit", "10", "--lake", small_lake).stdout.splitlines()) == 10 + 2
    csv = invoke("sql", query, "--format", "csv", "--lake", small_lake)
    assert len(csv.stdout.splitlines()) == 35001 and "showing" not in csv.stderr
    assert len(json.loads(invoke("sql", query, "--format", "json", "--lake", small_lake).stdout)) == 35000


def test_sql_output_files_are_written_whole_and_never_into_the_lake(small_lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "candles.csv"
    result = invoke(
        "sql",
        "SELECT symbol, open_time, close FROM klines ORDER BY symbol, open_time",
        "--format",
        "csv",
        "--output",
        out,
        "--lake",
        small_lake,
    )
    assert result.exit_code == 0 and result.stdout == ""
    assert len(out.read_text().splitlines()) == 1 + 96
    link = tmp_path / "sneaky.csv"
    link.symlink_to(small_lake / "klines")
    refused = invoke("sql", "SELECT 1", "--output", link / "x.csv", "--lake", small_lake)
    assert refused.exit_code == 2 and "inside the lake" in one_line_error(refused)
    assert not list(small_lake.rglob("x.csv"))


def test_an_unreadable_metadata_file_empties_its_view_with_a_warning(small_lake: Path) -> None:
    (small_lake / "_meta" / "windows.parquet").write_bytes(b"PAR1 not really")
    result = invoke("sql", "SELECT count(*) AS n FROM klines", "--lake", small_lake)
    assert result.exit_code == 0 and "96" in result.stdout
    assert (
        "warning: the exchange_windows view is empty" in result.stderr and "windows.parquet" in result.stderr
    )
    assert invoke("sql", "SELECT count(*) AS n FROM exchange_windows", "--lake", small_lake).exit_code == 0


def test_the_views_file_opens_in_the_duckdb_1_x_cli(fake_exchange: FakeExchange, small_lake: Path) -> None:
    cli = shutil.which("duckdb", path=str(Path(sys.executable).parent)) or shutil.which("duckdb")
    if cli is None:
        pytest.skip("the duckdb CLI is not installed (it comes with the test extra: duckdb-cli)")
    version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v1."), version  # the reader the README names
    assert (
        invoke("gaps", "--lake", small_lake, "--base-url", fake_exchange.base_url).exit_code == 0
    )  # writes it
    for query, expected in (("SELECT count(*) FROM klines", "96"), ("SELECT count(*) FROM coverage", "2")):
        result = subprocess.run(
            [cli, "-csv", "-noheader", str(small_lake / DATABASE_FILE), "-c", query],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected
    with duckdb.connect(str(small_lake / DATABASE_FILE), read_only=True) as con:  # and in this DuckDB
        assert con.sql("SELECT count(*) FROM klines").fetchall() == [(96,)]


# -- one story about completeness -----------------------------------------------------------------


def test_gaps_fill_gaps_and_coverage_judge_each_symbol_from_its_own_start(
    fake_exchange: FakeExchange, lake: Path
) -> None:
    url = ["--lake", lake, "--base-url", fake_exchange.base_url]
    assert collect(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-01", "--quiet").exit_code == 0
    # The global default start (2024-01-01) plays no part: the symbol was collected from December.
    assert json.loads(invoke("gaps", "--json", *url).stdout) == []
    months = {r["month"] for r in json.loads(invoke("coverage", "--json", *url).stdout)}
    assert months == {"2025-12"}
    # An explicit earlier start widens the range for that question only.
    wider = json.loads(invoke("gaps", "--since", "2025-11-01", "--json", *url).stdout)
    assert [(g["kind"], g["position"], g["count"]) for g in wider] == [("missing", "backward", 30 * 24)]

    # A failed backward window (before the first stored candle) is what both commands see and fill.
    meta, now = LakeMeta(lake), fake_exchange.now_ms()
    meta.record_start("1h", "BTCUSDT", to_ms("2025-11-20"), now)
    meta.record_window(
        Window(
            "1h",
            "BTCUSDT",
            "failed",
            to_ms("2025-11-20"),
            to_ms("2025-11-30T23:00Z"),
            now,
            now,
            error="HTTP 502",
        )
    )
    listed = json.loads(invoke("gaps", "--json", *url).stdout)
    assert [(g["kind"], g["position"], g["count"]) for g in listed] == [("failed", "backward", 11 * 24)]
    filled = invoke("fill-gaps", *url)
    assert filled.exit_code == 0, filled.output
    assert f"filled {11 * 24} 1h candles for 1 symbols; remaining: none" in filled.stdout
    assert json.loads(invoke("gaps", "--json", *url).stdout) == []
    assert_frame_equal(stored(lake, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2025-11-20"))


# -- signals ----------------------------------------------------------------------------------


def _start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_collect_stops_on_the_first_signal_records_the_run_and_exits_128_plus_n(
    fake_exchange: FakeExchange, lake: Path, signum: int
) -> None:
    fake_exchange.set_latency(0.03)  # long enough to be interrupted
    process = _start(
        [
            sys.executable,
            "-m",
            "cryptolake",
            "collect",
            "--symbols",
            "BTC,ETH,SOL",
            "--since",
            "2021-01-01",
            "--lake",
            str(lake),
            "--base-url",
            fake_exchange.base_url,
        ],
        lake.parent,
    )
    deadline = time.monotonic() + 30
    while not list(lake.rglob("data.parquet")) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signum)
    started = time.monotonic()
    out, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signum, err
    assert time.monotonic() - started < 10, err  # the batches in flight, not the whole job
    assert f"stopping ({signal.Signals(signum).name})" in err and "Traceback" not in err
    assert "the run is recorded and the next one resumes where this one stopped" in err
    assert check_files(lake) > 0
    state = json.loads((lake / "_meta" / "collection_state.json").read_text())["1h"]
    assert {entry["last_outcome"] for entry in state.values()} <= {"stopped", "succeeded"}
    assert "stopped" in {entry["last_outcome"] for entry in state.values()}
    # The next run completes the job.
    fake_exchange.set_latency(0)
    assert (
        collect(lake, fake_exchange, "--symbols", "BTC,ETH,SOL", "--since", "2021-01-01", "--quiet").exit_code
        == 0
    )
    assert_frame_equal(stored(lake, "ETHUSDT"), oracle(fake_exchange, "ETHUSDT", "2021-01-01"))


@pytest.mark.slow
def test_a_second_signal_aborts_at_once_and_leaves_every_file_whole(
    fake_exchange: FakeExchange, lake: Path
) -> None:
    from cryptolake.testing import Fault

    fake_exchange.set_latency(0.02)
    process = _start(
        [
            sys.executable,
            "-m",
            "cryptolake",
            "collect",
            "--symbols",
            "BTC,ETH",
            "--since",
            "2019-01-01",
            "--lake",
            str(lake),
            "--base-url",
            fake_exchange.base_url,
        ],
        lake.parent,
    )
    deadline = time.monotonic() + 30
    while not list(lake.rglob("data.parquet")) and time.monotonic() < deadline:
        time.sleep(0.01)
    fake_exchange.inject(Fault.slow(8.0, path="/api/v3/klines", times=1000))  # what is in flight hangs
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and "aborted by a second SIGINT" in err, err
    assert time.monotonic() - started < 3, err  # at once, not after the slow answers
    check_files(lake)


@pytest.mark.slow
def test_fill_gaps_treats_sigterm_like_collect(fake_exchange: FakeExchange, lake: Path) -> None:
    assert collect(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-31", "--quiet").exit_code == 0
    fake_exchange.set_latency(0.05)
    process = _start(
        [
            sys.executable,
            "-m",
            "cryptolake",
            "fill-gaps",
            "--since",
            "2021-01-01",
            "--lake",
            str(lake),
            "--base-url",
            fake_exchange.base_url,
        ],
        lake.parent,
    )
    before = len(list(lake.rglob("data.parquet")))
    deadline = time.monotonic() + 30
    while len(list(lake.rglob("data.parquet"))) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143 and "stopping (SIGTERM)" in err, err
    check_files(lake)


# -- patience under faults --------------------------------------------------------------------


@pytest.mark.slow
def test_a_backfill_under_20_percent_faults_completes_without_a_ban(
    fake_exchange: FakeExchange, lake: Path
) -> None:
    fake_exchange.set_chaos(0.2, seed=11)
    symbols = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE"]
    # One retry per request: a window's attempt then fails 4% of the time, so some windows fail
    # an attempt and must be tried again later in the run.
    env = {"CRYPTOLAKE_BINANCE_RETRY_DELAY_S": "0.01", "CRYPTOLAKE_BINANCE_MAX_RETRIES": "1"}
    result = invoke_env(
        env,
        "collect",
        "--symbols",
        ",".join(symbols),
        "--since",
        "2023-01-01",
        "--quiet",
        "--lake",
        lake,
        "--base-url",
        fake_exchange.base_url,
    )
    assert result.exit_code == 0, result.output
    stats = fake_exchange.stats()
    assert sum(stats.chaos_faults.values()) > 30 and stats.by_status.get(418, 0) == 0
    for base in symbols:
        assert_frame_equal(stored(lake, f"{base}USDT"), oracle(fake_exchange, f"{base}USDT", "2023-01-01"))
    assert check_files(lake) == sum(oracle(fake_exchange, f"{b}USDT", "2023-01-01").height for b in symbols)


def invoke_env(env: dict[str, str], *args: Any) -> Any:
    from click.testing import CliRunner

    from cryptolake.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def test_a_window_whose_retries_are_spent_is_tried_again_later_in_the_run(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path
) -> None:
    from cryptolake.testing import Fault

    collector = CryptoCollector(client, lake=lake)
    fake_exchange.inject(Fault.http(502, path="/api/v3/klines", times=client.max_retries + 1))
    report = collector.collect_backward("2025-12-30", ["BTC"])
    assert report.ok, report.failed
    assert_frame_equal(stored(lake, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2025-12-30"))
    assert LakeMeta(lake).windows("1h", ["BTCUSDT"]) == []  # the failed window was forgotten once fetched


def test_a_window_that_keeps_failing_fails_its_symbol_after_its_attempts(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path
) -> None:
    from cryptolake.testing import Fault

    collector = CryptoCollector(client, lake=lake, window_attempts=3)
    fake_exchange.inject(Fault.http(502, path="/api/v3/klines", times=1000))
    report = collector.collect_backward("2025-12-30", ["BTC"])
    assert list(report.failed) == ["BTCUSDT"] and "502" in report.failed["BTCUSDT"]
    requests = fake_exchange.stats().by_path.get("/api/v3/klines", 0)
    assert requests == 3 * (client.max_retries + 1)  # three attempts of the window, each with its retries
    assert [w.kind for w in LakeMeta(lake).windows("1h", ["BTCUSDT"])] == ["failed"]


# -- bans and forgetting ----------------------------------------------------------------------


def test_a_ban_file_claiming_years_is_believed_for_three_days_at_most(tmp_path: Path) -> None:
    path = tmp_path / "bans.json"
    path.write_text(json.dumps({"data-api.binance.vision": 99_999_999_999}))
    written = path.stat().st_mtime
    book = BanBook(path, clock=lambda: written + 10)
    assert book.banned_until("data-api.binance.vision") == pytest.approx(written + MAX_BAN_S)
    assert BanBook(path, clock=lambda: written + MAX_BAN_S + 1).banned_until("data-api.binance.vision") == 0
    assert book.record("api.binance.com", 10 * 365 * 86400) == pytest.approx(written + 10 + MAX_BAN_S)


def test_bans_shows_and_clears_recorded_bans(small_lake: Path) -> None:
    path = small_lake / "_meta" / "binance-bans.json"
    path.write_text(json.dumps({"127.0.0.1:1": time.time() + 600}))
    shown = invoke("bans", "--json", "--lake", small_lake)
    assert [b["host"] for b in json.loads(shown.stdout)["bans"]] == ["127.0.0.1:1"]
    assert "cleared: 127.0.0.1:1" in invoke("bans", "--clear", "--lake", small_lake).stdout
    assert json.loads(path.read_text()) == {}
    assert "no ban recorded" in invoke("bans", "--lake", small_lake).stdout


def test_forget_removes_a_symbols_records_and_with_data_its_candles(
    fake_exchange: FakeExchange, lake: Path
) -> None:
    assert (
        collect(lake, fake_exchange, "--symbols", "BTC,ETH", "--since", "2025-12-30", "--quiet").exit_code
        == 0
    )
    assert invoke("gaps", "--lake", lake, "--base-url", fake_exchange.base_url).exit_code == 0
    result = invoke("forget", "ETH", "--lake", lake)
    assert result.exit_code == 0 and "forgot ETHUSDT (1h): state removed" in result.stdout
    assert "ETHUSDT" not in LakeMeta(lake).symbols("1h")
    assert "ETHUSDT" not in json.loads((lake / "_meta" / "collection_state.json").read_text())["1h"]
    assert Lake(lake).symbols("1h") == ["BTCUSDT", "ETHUSDT"]  # the candles stay
    gone = invoke("forget", "ETH", "--data", "--yes", "--json", "--lake", lake)
    assert json.loads(gone.stdout)["ETHUSDT"]["partitions"] == 1 and Lake(lake).symbols("1h") == ["BTCUSDT"]
    assert not (lake / "_meta" / "trash").exists() or not list((lake / "_meta" / "trash").iterdir())
    assert pl.read_parquet(lake / "_meta" / "coverage.parquet")["symbol"].to_list() == ["BTCUSDT"]


# -- configuration --------------------------------------------------------------------------


def test_a_cron_expression_that_never_fires_is_refused() -> None:
    for never in ("0 0 31 2 *", "0 0 30 2 *", "0 0 31 4 *"):
        with pytest.raises(ConfigError, match="never does"):
            load_settings(None, {"COLLECTION_SCHEDULE": never}, dotenv_file=None)
    assert load_settings(None, {"COLLECTION_SCHEDULE": "0 0 29 2 *"}, dotenv_file=None).scheduler.schedule


def test_an_unknown_cryptolake_variable_is_a_warning_naming_the_closest_setting(lake: Path) -> None:
    result = invoke_env({"CRYPTOLAKE_BINANCE_TIMEOUTS": "5"}, "config", "--json")
    assert result.exit_code == 0
    assert (
        "warning: environment variable CRYPTOLAKE_BINANCE_TIMEOUTS is not a cryptolake setting and is "
        "ignored; did you mean CRYPTOLAKE_BINANCE_TIMEOUT_S?"
    ) in result.stderr


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_scheduler_log_never_shows_the_dsn_password(fake_exchange: FakeExchange, lake: Path) -> None:
    env = {**clean_env(), "CRYPTOLAKE_POSTGRES_DSN": "postgresql://u:Hunter2-S3cret@127.0.0.1:1/market"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cryptolake",
            "--debug",
            "run",
            "--symbols",
            "BTC",
            "--since",
            "2025-12-31",
            "--run-now",
            "--schedule",
            "0 0 1 1 *",
            "--lake",
            str(lake),
            "--base-url",
            fake_exchange.base_url,
        ],
        cwd=lake.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = lake / "_meta" / "scheduler.json"
        if state.exists() and (json.loads(state.read_text()).get("last_run") or {}).get("result"):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert "after run: cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:1/market" in err, err
    for text in (
        out,
        err,
        *(
            p.read_text(errors="replace")
            for p in lake.rglob("*")
            if p.is_file() and p.suffix in (".json", ".lock", "")
        ),
    ):
        assert "Hunter2-S3cret" not in text


@pytest.mark.slow
def test_a_429_storm_mid_backfill_is_waited_out_without_a_ban(ban_file: Path, lake: Path) -> None:
    import threading

    # The fake forgives the requests already in flight when a 429 goes out (at most the client's
    # concurrency); a client that sent anything after seeing the 429 would be banned. Both sides
    # share a virtual clock: the storm and every Retry-After pass without wall time.
    clock = VirtualClock()
    with FakeExchange(
        now=to_ms("2026-01-01T00:30:00Z"), ban_grace_requests=16, latency_s=0.01, clock=clock.now
    ) as fx:
        with BinanceClient(
            base_url=fx.base_url, retry_delay=0.01, ban_file=ban_file, clock=clock.now, sleep=clock.sleep
        ) as client:
            collector = CryptoCollector(client, lake=lake)

            def storm_when_the_first_partition_lands() -> None:
                deadline = time.monotonic() + 30
                while not list(lake.rglob("data.parquet")) and time.monotonic() < deadline:
                    time.sleep(0.005)
                fx.rate_limit_storm(1.5, retry_after_s=1)

            watcher = threading.Thread(target=storm_when_the_first_partition_lands)
            watcher.start()
            report = collector.collect_backward("2024-01-01", ["BTC", "ETH", "SOL"])
            watcher.join()
        stats = fx.stats()
        assert report.ok, report.failed
        assert stats.storm_rate_limited > 0 and stats.by_status.get(418, 0) == 0
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            assert_frame_equal(stored(lake, symbol), oracle(fx, symbol, "2024-01-01"))


# -- from a hostile review ------------------------------------------------------------------------


def test_json_and_parquet_keep_every_digit_of_huge_integers_and_decimals(
    small_lake: Path, tmp_path: Path
) -> None:
    query = (
        "SELECT 340282366920938463463374607431768211455::UHUGEINT AS uh, "
        "(-170141183460469231731687303715884105727)::HUGEINT AS h, "
        "12345678901234567890.1234567890::DECIMAL(38, 10) AS d, [0.1::DECIMAL(3, 1), 2.5::DECIMAL(3, 1)] AS ld"
    )
    text = invoke("sql", query, "--format", "json", "--lake", small_lake).stdout
    (row,) = json.loads(text, parse_float=str, parse_int=str)  # the digits exactly as written
    assert row == {
        "uh": str(2**128 - 1),
        "h": str(-(2**127) + 1),
        "d": "12345678901234567890.1234567890",
        "ld": ["0.1", "2.5"],
    }
    out = tmp_path / "huge.parquet"
    assert invoke("sql", query, "--format", "parquet", "-o", out, "--lake", small_lake).exit_code == 0
    assert pq.read_table(out).column("uh").to_pylist() == [str(2**128 - 1)]  # as text: Parquet has no UINT128


def test_completeness_is_cut_never_rounded_up_to_100(fake_exchange: FakeExchange, lake: Path) -> None:
    from cryptolake.gaps import percent

    assert (
        percent(43_199, 43_200, 2) == 99.99 and percent(743, 744, 2) == 99.86 and percent(744, 744, 2) == 100
    )
    url = ["--lake", lake, "--base-url", fake_exchange.base_url]
    assert (
        collect(
            lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-01", "--interval", "1m", "--quiet"
        ).exit_code
        == 0
    )
    path = next(lake.rglob("month=2025-12/data.parquet"))
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)  # one minute of December's 44,640 gone (another tool)
    rows = json.loads(invoke("coverage", "--interval", "1m", "--json", *url).stdout)
    december = [
        (r["present"], r["expected"], r["completeness_percent"]) for r in rows if r["month"] == "2025-12"
    ]
    assert december == [(44_639, 44_640, 99.99)]
    incomplete = invoke(
        "sql",
        "SELECT month FROM coverage WHERE completeness_percent < 100",
        "--format",
        "csv",
        "--lake",
        lake,
    ).stdout.splitlines()
    assert incomplete == ["month", "2025-12"]


def test_rows_in_another_months_folder_are_misplaced_and_never_merged(
    fake_exchange: FakeExchange, lake: Path
) -> None:
    url = ["--lake", lake, "--base-url", fake_exchange.base_url]
    assert collect(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-01", "--quiet").exit_code == 0
    december = next(lake.rglob("month=2025-12/data.parquet"))
    november = december.parent.parent / "month=2025-11" / "data.parquet"
    november.parent.mkdir()
    november.write_bytes(december.read_bytes())  # another tool put December's rows under November
    gaps = json.loads(invoke("gaps", "--since", "2025-12-01", "--json", *url).stdout)
    assert [(g["kind"], g["start_time"], g["end_time"], g["count"]) for g in gaps] == [
        ("misplaced", "2025-12-01T00:00:00Z", "2025-12-31T23:00:00Z", 744)
    ]
    coverage = json.loads(invoke("coverage", "--since", "2025-12-01", "--json", *url).stdout)
    assert all(r["present"] <= r["expected"] for r in coverage)
    before = november.read_bytes()
    result = collect(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-11-01", "--quiet")
    assert result.exit_code == 1 and "holds candles outside 2025-11" in result.stderr
    assert november.read_bytes() == before  # nothing merged into it, nothing lost


def test_sql_output_never_replaces_a_device_a_pipe_or_a_symlink(small_lake: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target in (fifo, Path("/dev/null")):
        refused = invoke("sql", "SELECT 1 AS x", "--format", "csv", "-o", target, "--lake", small_lake)
        assert refused.exit_code == 2 and "not a regular file" in one_line_error(refused)
    assert fifo.is_fifo() and Path("/dev/null").is_char_device()
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    real.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert invoke("sql", "SELECT 1 AS x", "--format", "csv", "-o", link, "--lake", small_lake).exit_code == 0
    assert link.is_symlink() and real.read_text() == "x\n1\n"  # the file it points at was replaced
    assert oct(real.stat().st_mode & 0o777) == oct(0o640)  # with its mode kept
    fresh = tmp_path / "fresh.csv"
    assert invoke("sql", "SELECT 1 AS x", "--format", "csv", "-o", fresh, "--lake", small_lake).exit_code == 0
    assert fresh.stat().st_mode & 0o044  # readable by others as any new file (umask), not 0600


@pytest.mark.slow
def test_ctrl_c_while_waiting_for_another_writer_stops_at_once(
    fake_exchange: FakeExchange, lake: Path
) -> None:
    from cryptolake.lake import Lake as LakeStore

    assert collect(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-30", "--quiet").exit_code == 0
    with LakeStore(lake).writer_lock():  # another writer holds the lake
        process = _start(
            [
                sys.executable,
                "-m",
                "cryptolake",
                "collect",
                "--symbols",
                "ETH",
                "--lake",
                str(lake),
                "--base-url",
                fake_exchange.base_url,
            ],
            lake.parent,
        )
        deadline = time.monotonic() + 30
        # It is waiting for the lock once its marker is there (a loaded machine starts slowly).
        while time.monotonic() < deadline and not list((lake / "_meta").glob("writer.lock.wait-*")):
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert time.monotonic() - started < 5 and "waiting: another cryptolake process" in err, err


@pytest.mark.slow
def test_a_stop_does_not_wait_out_a_rate_limit_window(lake: Path) -> None:
    # A weight budget of 40 a minute: after a few pages the collector waits for the next window.
    with FakeExchange(now=to_ms("2026-01-01T00:30:00Z"), weight_limit=40, ban_grace_requests=16) as fx:
        process = _start(
            [
                sys.executable,
                "-m",
                "cryptolake",
                "collect",
                "--symbols",
                "BTC,ETH",
                "--since",
                "2023-01-01",
                "--lake",
                str(lake),
                "--base-url",
                fx.base_url,
            ],
            lake.parent,
        )
        deadline = time.monotonic() + 30
        while fx.stats().requests < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # now waiting for weight
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert time.monotonic() - started < 5, err  # not the rest of the minute
    check_files(lake)


def test_a_failing_listing_lookup_is_tried_again_and_if_it_keeps_failing_is_recorded(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path
) -> None:
    from cryptolake.testing import Fault

    # The plan's first request (the listing) fails with every retry once: planned again, then fine.
    fake_exchange.inject(Fault.http(502, path="/api/v3/klines", times=client.max_retries + 1))
    assert CryptoCollector(client, lake=lake).collect_backward("2025-10-01", ["BTC"]).ok
    assert_frame_equal(stored(lake, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2025-10-01"))

    # It keeps failing: the symbol fails, and the whole range is a `failed` window that gaps lists
    # and fill-gaps retries (found by a hostile review: nothing was recorded).
    fake_exchange.inject(Fault.http(502, path="/api/v3/klines", times=10_000))
    report = CryptoCollector(client, lake=lake, window_attempts=2).collect_backward("2025-06-01", ["ETH"])
    assert list(report.failed) == ["ETHUSDT"]
    (window,) = LakeMeta(lake).windows("1h", ["ETHUSDT"])
    assert (window.kind, window.start_ms) == ("failed", to_ms("2025-06-01"))
    fake_exchange.reset()
    url = ["--lake", lake, "--base-url", fake_exchange.base_url]
    listed = json.loads(invoke("gaps", "--symbols", "ETH", "--json", *url).stdout)
    assert [(g["kind"], g["position"]) for g in listed] == [("failed", "backward")]
    assert invoke("fill-gaps", "--symbols", "ETH", *url).exit_code == 0
    assert_frame_equal(stored(lake, "ETHUSDT"), oracle(fake_exchange, "ETHUSDT", "2025-06-01"))


# -- from a second hostile review ---------------------------------------------------------------


def test_an_api_key_that_cannot_be_a_header_is_refused_without_showing_it(lake: Path) -> None:
    for key in ("KEY\nsekrit99", "KEYsek\u000brit", "KEYsekü99"):
        result = invoke_env({"BINANCE_API_KEY": key}, "config")
        assert result.exit_code == 2 and key not in result.output, result.output
        assert not any(part in result.output for part in ("sekrit", "rit99", "KEYsek")), result.output
        assert "binance.api_key = *** " in result.output


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        ("host=127.0.0.1 password=PWF\\ sekrit1 dbname=x", "sekrit1"),
        ("host=127.0.0.1 password=PWN'sekrit2 dbname=x", "sekrit2"),
        ("postgresql://u:PWCx@sekrit3@127.0.0.1:1/x", "sekrit3"),
        ("postgresql://h/x?password=sekrit4&sslmode=disable", "sekrit4"),
        ("password='a b\\' sekrit5' host=x", "sekrit5"),
    ],
)
def test_every_shape_of_dsn_password_is_hidden_whole(small_lake: Path, dsn: str, secret: str) -> None:
    from cryptolake.redact import redact_dsn

    assert secret not in redact_dsn(dsn)
    result = invoke("load", "postgres", "--dsn", dsn, "--lake", small_lake)
    assert result.exit_code in (1, 2) and secret not in result.output, result.output


def test_parquet_keeps_nested_128_bit_integers_exact(small_lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "nested.parquet"
    query = (
        "SELECT [340282366920938463463374607431768211455::UHUGEINT] AS lu, "
        "{'x': (-170141183460469231731687303715884105727)::HUGEINT} AS sh, [1, 2] AS plain"
    )
    assert invoke("sql", query, "--format", "parquet", "-o", out, "--lake", small_lake).exit_code == 0
    table = pq.read_table(out)
    assert json.loads(table.column("lu")[0].as_py(), parse_int=str) == [str(2**128 - 1)]
    assert json.loads(table.column("sh")[0].as_py(), parse_int=str) == {"x": str(-(2**127) + 1)}
    assert table.column("plain").to_pylist() == [[1, 2]]  # nothing to lose: stays a list


def test_repeated_column_names_never_take_a_name_the_query_chose(small_lake: Path) -> None:
    (row,) = json.loads(
        invoke("sql", "SELECT 1 AS h, 2 AS h, 3 AS h_2", "--format", "json", "--lake", small_lake).stdout
    )
    assert row == {"h": 1, "h_3": 2, "h_2": 3}


def test_coverage_png_goes_exactly_where_it_is_told(
    fake_exchange: FakeExchange, small_lake: Path, tmp_path: Path
) -> None:
    url = ["--lake", small_lake, "--base-url", fake_exchange.base_url]
    plain = tmp_path / "cov"  # no .png: still a PNG at exactly that path
    assert invoke("coverage", "--png", plain, *url).exit_code == 0
    assert plain.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "cov.png").exists()
    link = tmp_path / "sneaky"
    link.symlink_to(small_lake / "_meta" / "evil.png")
    refused = invoke("coverage", "--png", link, *url)
    assert refused.exit_code == 2 and "inside the lake" in one_line_error(refused)
    assert not (small_lake / "_meta" / "evil.png").exists()


def test_gaps_never_falls_back_to_the_local_clock_without_saying_so(small_lake: Path) -> None:
    env = {"CRYPTOLAKE_BINANCE_MAX_RETRIES": "0"}
    result = invoke_env(env, "gaps", "--lake", small_lake, "--base-url", "http://127.0.0.1:1")
    assert result.exit_code == 1 and "--offline" in one_line_error(result)
    assert invoke("gaps", "--offline", "--lake", small_lake).exit_code == 0


def test_a_ban_file_dated_in_the_future_is_believed_three_days_from_its_change_time(tmp_path: Path) -> None:
    path = tmp_path / "bans.json"
    path.write_text(json.dumps({"h": 32_503_680_000}))  # the year 3000
    os.utime(path, (32_503_680_000, 32_503_680_000))  # and a modification time to match
    changed = path.stat().st_ctime
    assert BanBook(path, clock=lambda: changed + 10).banned_until("h") == pytest.approx(changed + MAX_BAN_S)
    assert BanBook(path, clock=lambda: changed + MAX_BAN_S + 1).banned_until("h") == 0


def test_a_start_date_and_time_is_a_utc_time_and_a_malformed_one_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "odd.toml"
    config.write_text("[collection]\nstart_date = 2024-01-01T05:00:00+02:00\n")
    result = invoke("--config", config, "config", "--json")
    assert result.exit_code == 0
    rows = {row["key"]: row["value"] for row in json.loads(result.stdout)}
    assert rows["collection.start_date"] == "2024-01-01T03:00:00Z"
    config.write_text('[collection]\nstart_date = "2024-01-01T25:00:00Z"\n')
    result = invoke("--config", config, "config")
    assert result.exit_code == 2 and "a date YYYY-MM-DD or a UTC date and time" in one_line_error(result)


def test_sql_sees_the_lake_as_status_and_gaps_do(small_lake: Path) -> None:
    november = next(small_lake.rglob("data.parquet")).parent.parent / "month=garbage" / "data.parquet"
    november.parent.mkdir()
    november.write_bytes(next(small_lake.rglob("data.parquet")).read_bytes())
    count = invoke("sql", "SELECT count(*) AS n FROM klines", "--format", "csv", "--lake", small_lake).stdout
    assert count.splitlines() == ["n", "96"]  # the folder the layout does not allow is not read
    foreign = next(small_lake.rglob("month=2025-12/data.parquet"))
    table = pq.read_table(foreign)
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("trades"), "trades", table.column("trades").cast("double")
        ),
        foreign,
    )
    for args in (["sql", "SELECT count(*) FROM klines"], ["status"]):
        refused = invoke(*args, "--lake", small_lake)
        assert refused.exit_code == 1 and "does not match the candle schema" in one_line_error(refused)


def test_status_lists_a_symbol_known_only_by_its_recorded_start(small_lake: Path) -> None:
    LakeMeta(small_lake).record_start("1h", "SOLUSDT", to_ms("2025-12-01"), to_ms("2025-12-01"))
    symbols = json.loads(invoke("status", "--json", "--lake", small_lake).stdout)["symbols"]
    assert symbols["SOLUSDT"]["rows"] == 0


@pytest.mark.slow
def test_sql_stops_at_once_on_sigterm_with_143(small_lake: Path) -> None:
    process = _start(
        [
            sys.executable,
            "-m",
            "cryptolake",
            "sql",
            "SELECT sum(hash(range)) FROM range(10000000000)",
            "--lake",
            str(small_lake),
        ],
        small_lake.parent,
    )
    time.sleep(2.5)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143 and time.monotonic() - started < 5, err
    assert err.strip() == "error: interrupted: the query was stopped (SIGTERM)"
