"""``cryptolake collect`` / ``status`` / ``symbols`` end to end against the fake exchange.

In-process (click's CliRunner) where that is enough; a real ``python -m cryptolake`` process
where one is needed (SIGKILL, the writer lock held by another process). Every run uses its own
``--lake`` under tmp_path, ``--base-url`` of the fake, and tmp_path as working directory so the
repository's config.toml and .env play no part.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cryptolake.lake import Lake
from cryptolake.lake.layout import temp_name
from cryptolake.schema import HOUR_MS, KLINE_COLUMNS
from cryptolake.testing import FakeExchange
from cryptolake.timeutils import to_ms

from .helpers import (
    check_files,
    clean_env,
    collect,
    collect_argv,
    data_files,
    duck,
    invoke,
    one_line_error,
    oracle,
    sigkill_when,
    snapshot,
    stored,
)


@pytest.fixture
def lake(cli_env: Path) -> Path:
    return cli_env / "lake"


# -- collect: content, idempotence -----------------------------------------------------------


def test_collect_stores_the_oracle_and_a_rerun_changes_nothing(
    fake_exchange: FakeExchange, lake: Path
) -> None:
    fake_exchange.set_now(to_ms("2024-03-13T00:30:00Z"))  # the outage (2024-03-12 04:00-09:00) inside

    first = collect(lake, fake_exchange, "--symbols", "BTC,ETHUSDT", "--since", "2024-02-25")

    assert first.exit_code == 0, first.stderr
    want = {s: oracle(fake_exchange, s, "2024-02-25") for s in ("BTCUSDT", "ETHUSDT")}
    assert all(w.height == 17 * 24 - 5 for w in want.values())
    added = sum(w.height for w in want.values())
    assert f"collected {added} new 1h candles for 2/2 symbols into {lake}" in first.stdout
    lake_table = duck(lake)
    for symbol, expected in want.items():
        assert_frame_equal(lake_table.filter(pl.col("symbol") == symbol).select(KLINE_COLUMNS), expected)
    assert check_files(lake) == added
    before = snapshot(lake)

    again = collect(lake, fake_exchange, "--symbols", "BTC,ETHUSDT", "--since", "2024-02-25", "--json")

    assert again.exit_code == 0, again.stderr
    reports = json.loads(again.stdout)
    assert [r["direction"] for r in reports] == ["backward", "forward"]
    assert all(r["total_rows_added"] == 0 and r["failed"] == {} for r in reports)
    assert all(
        s["rows_added"] == 0 and s["files_written"] == 0 for r in reports for s in r["symbols"].values()
    )
    assert snapshot(lake) == before
    assert_frame_equal(duck(lake), lake_table)


def test_an_invalid_symbol_fails_alone_with_exit_1(fake_exchange: FakeExchange, lake: Path) -> None:
    result = collect(lake, fake_exchange, "--symbols", "BTC,NOPE,ETH", "--since", "2025-12-30")

    assert result.exit_code == 1
    assert "for 2/3 symbols" in result.stdout
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failures) == 1 and "NOPEUSDT" in failures[0]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_frame_equal(stored(lake, symbol), oracle(fake_exchange, symbol, "2025-12-30"))
    assert Lake(lake).symbols("1h") == ["BTCUSDT", "ETHUSDT"]

    status = invoke("status", "--json", "--lake", lake)
    assert status.exit_code == 0, status.stderr
    symbols = json.loads(status.stdout)["symbols"]
    assert "NOPEUSDT" not in symbols  # the exchange does not know it: nothing of it stays in the lake
    assert symbols["BTCUSDT"]["last_error"] is None and symbols["BTCUSDT"]["rows"] == 48


def test_top_n_without_symbols(fake_exchange: FakeExchange, lake: Path) -> None:
    result = collect(lake, fake_exchange, "--top", "2", "--since", "2025-12-31")
    assert result.exit_code == 0, result.stderr
    assert Lake(lake).symbols("1h") == ["BTCUSDT", "ETHUSDT"]
    assert "collected 48 new 1h candles for 2/2 symbols" in result.stdout


# -- crash safety ----------------------------------------------------------------------------


def test_sigkill_mid_collection_leaves_readable_files_and_a_rerun_completes_the_lake(
    fake_exchange: FakeExchange, cli_env: Path
) -> None:
    killed_lake, clean_lake = cli_env / "killed", cli_env / "clean"
    args = ("--symbols", "BTC,ETH,SOL", "--since", "2021-01-01")
    fake_exchange.set_latency(0.02)  # ~180 batches of ~40 ms: the run lasts a few seconds
    was_running, code = sigkill_when(
        collect_argv(killed_lake, fake_exchange, *args, "--quiet"),
        cli_env,
        lambda: len(data_files(killed_lake)) >= 6,
    )
    if was_running:
        assert code == -signal.SIGKILL
    else:  # finished before the kill (a very slow machine): the checks below still hold
        assert code == 0, (cli_env / "child.err").read_text()
    fake_exchange.set_latency(0.0)

    # Every file is whole; a stray temp file (as a kill mid-write leaves) is not a *.parquet.
    rows = check_files(killed_lake)
    assert rows > 0
    stray = data_files(killed_lake)[0].parent / temp_name(4242, "deadbeef")
    stray.write_bytes(b"PAR1 half a file")
    assert duck(killed_lake).height == rows

    rerun = collect(killed_lake, fake_exchange, *args)
    assert rerun.exit_code == 0, rerun.stderr
    assert not stray.exists() and not list((killed_lake / "klines").rglob("*.tmp"))
    uninterrupted = collect(clean_lake, fake_exchange, *args)
    assert uninterrupted.exit_code == 0, uninterrupted.stderr

    resumed, reference = duck(killed_lake), duck(clean_lake)
    assert_frame_equal(resumed, reference)
    assert [p.relative_to(killed_lake) for p in data_files(killed_lake)] == [
        p.relative_to(clean_lake) for p in data_files(clean_lake)
    ]
    assert_frame_equal(stored(killed_lake, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2021-01-01"))
    assert check_files(killed_lake) == resumed.height


# -- symbols ---------------------------------------------------------------------------------


@pytest.mark.parametrize("symbols", ["../etc", "a/b", "BTC USDT", "x=y", "", " , ", "BTC,../etc", "ＢＴＣ"])
def test_hostile_symbols_are_refused_with_exit_2_and_nothing_written(
    fake_exchange: FakeExchange, lake: Path, symbols: str
) -> None:
    result = collect(lake, fake_exchange, "--symbols", symbols, "--since", "2025-12-31")

    assert result.exit_code == 2, (result.stdout, result.stderr)
    line = one_line_error(result)
    assert "symbol" in line
    assert not lake.exists() or not any(p.is_file() for p in lake.rglob("*"))
    assert fake_exchange.stats().requests == 0


def test_lowercase_and_non_ascii_symbols(fake_exchange: FakeExchange, lake: Path) -> None:
    result = collect(lake, fake_exchange, "--symbols", "btc,币安人生", "--since", "2025-12-31")

    assert result.exit_code == 0, result.stderr
    folders = sorted(p.name for p in (lake / "klines" / "exchange=binance" / "interval=1h").iterdir())
    assert folders == ["symbol=BTCUSDT", "symbol=币安人生USDT"]
    table = duck(lake)
    assert sorted(set(table["symbol"])) == ["BTCUSDT", "币安人生USDT"]
    for symbol in ("BTCUSDT", "币安人生USDT"):
        mine = table.filter(pl.col("symbol") == symbol).select(KLINE_COLUMNS)
        assert_frame_equal(mine, oracle(fake_exchange, symbol, "2025-12-31"))
        assert mine.height == 24
    status = json.loads(invoke("status", "--json", "--lake", lake).stdout)
    assert status["symbols"]["币安人生USDT"]["rows"] == 24


# -- one writer per lake ---------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from cryptolake.lake import Lake

    with Lake(sys.argv[1]).writer_lock():
        print("locked", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
    """
)


def test_a_second_writer_fails_with_no_wait_or_waits_for_the_lock(
    fake_exchange: FakeExchange, lake: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lake)],
        cwd=lake.parent,
        env=clean_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    waiter: subprocess.Popen[str] | None = None
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "locked"

        started = time.monotonic()
        refused = collect(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-31", "--no-wait")
        assert time.monotonic() - started < 10
        assert refused.exit_code == 1
        assert "another cryptolake process is writing" in one_line_error(refused)
        assert not data_files(lake)

        waiter = subprocess.Popen(
            collect_argv(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-31"),
            cwd=lake.parent,
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        stream = waiter.stderr
        assert stream is not None
        threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while not any("waiting" in line for line in seen):
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        assert any("another cryptolake process is writing" in line for line in seen), seen
        time.sleep(0.3)
        assert waiter.poll() is None and not data_files(lake)  # still waiting, nothing written

        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert waiter.wait(timeout=60) == 0
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if holder.stdin is not None:
            holder.stdin.close()
        if holder.stdout is not None:
            holder.stdout.close()
        if waiter is not None and waiter.stderr is not None:
            waiter.stderr.close()
    assert_frame_equal(stored(lake, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2025-12-31"))


# -- directions and usage --------------------------------------------------------------------


def test_backward_only_and_forward_only(fake_exchange: FakeExchange, lake: Path) -> None:
    def bounds() -> tuple[str, str, int]:
        frame = stored(lake, "BTCUSDT")
        return (frame["open_time"][0].isoformat(), frame["open_time"][-1].isoformat(), frame.height)

    first = collect(
        lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-30", "--backward-only", "--json"
    )
    assert first.exit_code == 0, first.stderr
    assert [r["direction"] for r in json.loads(first.stdout)] == ["backward"]
    assert bounds() == ("2025-12-30T00:00:00+00:00", "2025-12-31T23:00:00+00:00", 48)

    fake_exchange.advance(3 * HOUR_MS)  # three more closed candles, and a new open one
    older = collect(
        lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-28", "--backward-only", "--json"
    )
    assert older.exit_code == 0, older.stderr
    (report,) = json.loads(older.stdout)
    assert report["direction"] == "backward" and report["total_rows_added"] == 48
    assert bounds() == ("2025-12-28T00:00:00+00:00", "2025-12-31T23:00:00+00:00", 96)  # nothing newer

    newer = collect(
        lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-01", "--forward-only", "--json"
    )
    assert newer.exit_code == 0, newer.stderr
    (report,) = json.loads(newer.stdout)
    assert report["direction"] == "forward" and report["total_rows_added"] == 3
    assert bounds() == ("2025-12-28T00:00:00+00:00", "2026-01-01T02:00:00+00:00", 99)  # nothing older
    assert_frame_equal(stored(lake, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2025-12-28"))

    # Forward only with nothing stored has nothing to extend.
    nothing = collect(lake, fake_exchange, "--symbols", "ETH", "--forward-only")
    assert nothing.exit_code == 0, nothing.stderr
    assert Lake(lake).symbols("1h") == ["BTCUSDT"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--backward-only", "--forward-only"], "exclude each other"),
        (["--symbols", "BTC", "--top", "3"], "not both"),
        (["--interval", "7m"], "collection.interval"),
        (["--since", "yesterday-ish"], "collection.start_date"),
    ],
)
def test_bad_usage_exits_2_and_changes_nothing(
    fake_exchange: FakeExchange, lake: Path, flags: list[str], message: str
) -> None:
    result = collect(lake, fake_exchange, *flags)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert not lake.exists()
    assert fake_exchange.stats().requests == 0


def test_a_recorded_ban_stops_collect_before_any_request(fake_exchange: FakeExchange, lake: Path) -> None:
    ban_file = lake / "_meta" / "binance-bans.json"
    ban_file.parent.mkdir(parents=True)
    ban_file.write_text(json.dumps({f"127.0.0.1:{fake_exchange.port}": time.time() + 60}))

    result = collect(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-31")

    assert result.exit_code == 1
    assert "banned" in one_line_error(result)
    assert fake_exchange.stats().requests == 0 and not data_files(lake)


# -- status and symbols ----------------------------------------------------------------------


def test_status_json_table_and_symbols(fake_exchange: FakeExchange, lake: Path) -> None:
    missing = invoke("status", "--json", "--lake", lake)
    assert missing.exit_code == 2 and "does not exist" in one_line_error(missing)
    assert not lake.exists()  # a read-only command never creates a lake

    assert collect(lake, fake_exchange, "--symbols", "BTC,SOL,NOPE", "--since", "2025-12-31").exit_code == 1

    result = invoke("status", "--json", "--lake", lake)
    assert result.exit_code == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["interval"] == "1h" and status["lake"] == str(lake)
    assert status["total_records_collected"] == 48 == duck(lake).height
    assert set(status["symbols"]) == {"BTCUSDT", "SOLUSDT"}  # NOPEUSDT: unknown to the exchange
    for symbol in ("BTCUSDT", "SOLUSDT"):
        entry = status["symbols"][symbol]
        assert {"rows", "first_open_time", "last_open_time", "last_run_at", "last_error"} <= set(entry)
        assert entry["rows"] == 24 and entry["last_error"] is None
        assert (entry["first_open_time"], entry["last_open_time"]) == (
            "2025-12-31T00:00:00Z",
            "2025-12-31T23:00:00Z",
        )
        assert entry["last_run_at"].endswith("Z")

    table = invoke("status", "--lake", lake)
    assert table.exit_code == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "symbol" in line)
    for column in ("symbol", "rows", "first", "last", "last run", "last error"):
        assert column in header
    assert "48 candles" in table.stdout
    btc = next(line for line in table.stdout.splitlines() if "BTCUSDT" in line)
    assert "24" in btc and "2025-12-31T00:00:00Z" in btc

    top = invoke("symbols", "--top", "3", "--json", "--lake", lake, "--base-url", fake_exchange.base_url)
    assert top.exit_code == 0, top.stderr
    pairs = json.loads(top.stdout)
    assert [p["symbol"] for p in pairs] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]  # USDC, FDUSD left out
    assert [p["rank"] for p in pairs] == [1, 2, 3]
    plain = invoke("symbols", "--top", "3", "--lake", lake, "--base-url", fake_exchange.base_url)
    assert plain.exit_code == 0 and "BTCUSDT" in plain.stdout and "USDC" not in plain.stdout


# -- intervals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "since", "folder"), [("1d", "2024-02-20", "1d"), ("1M", "2024-01-01", "1mo")]
)
def test_daily_and_monthly_intervals(
    fake_exchange: FakeExchange, lake: Path, interval: str, since: str, folder: str
) -> None:
    result = collect(lake, fake_exchange, "--symbols", "BTC", "--since", since, "--interval", interval)

    assert result.exit_code == 0, result.stderr
    want = oracle(fake_exchange, "BTCUSDT", since, interval)
    assert f"collected {want.height} new {interval} candles for 1/1 symbols" in result.stdout
    assert {p.parents[2].name for p in data_files(lake)} == {f"interval={folder}"}
    table = duck(lake)
    assert set(table["interval"]) == {folder}
    assert_frame_equal(table.select(KLINE_COLUMNS), want)
    if interval == "1M":
        assert want.height == 24 and len(data_files(lake)) == 24
    status = json.loads(invoke("status", "--json", "--interval", interval, "--lake", lake).stdout)
    assert status["total_records_collected"] == want.height
    # Another interval of the same lake is separate.
    assert json.loads(invoke("status", "--json", "--lake", lake).stdout)["total_records_collected"] == 0


@pytest.mark.parametrize(
    "command",
    [
        ["collect"],
        ["fill-gaps"],
        ["gaps"],
        ["coverage"],
        ["run"],
        ["scheduler", "trigger"],
        ["load", "postgres", "--dsn", "postgresql://nobody@127.0.0.1:1/x"],
    ],
)
@pytest.mark.parametrize("names", ["", " , ", ",", "BTC,,ETH", "BTC,"])
def test_symbols_naming_nothing_is_refused_the_same_way_by_every_command(
    command: list[str], names: str, lake: Path
) -> None:
    result = invoke(*command, "--symbols", names, "--lake", lake)
    assert result.exit_code == 2
    assert (
        one_line_error(result)
        == f"error: invalid --symbols {names!r}: give base assets or pairs such as BTC,ETHUSDT, with no empty name"
    )
    assert not lake.exists()


@pytest.mark.parametrize("names", [",", "BTC,,ETH", "BTC,"])
def test_symbols_setting_with_an_empty_name_is_refused_not_taken_for_the_top_n(
    names: str, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRYPTOLAKE_COLLECTION_SYMBOLS", names)
    result = invoke("collect", "--lake", lake, "--base-url", "http://127.0.0.1:9")
    assert result.exit_code == 2 and "with no empty name" in one_line_error(result)
    assert not lake.exists()
