"""Binance's bulk archive as a source: archive-only, REST-only and mixed plans exact candle for
candle against the fake exchange (which serves the archive on its own port), across the 2025
switch to microseconds, with its faults (a missing month, a late month, a header row, a corrupt
zip, a wrong checksum, off-grid candles, a re-upload) and ``verify``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from click.testing import Result
from polars.testing import assert_frame_equal

from cryptolake.collector import CryptoCollector
from cryptolake.lake import Lake
from cryptolake.lake.meta import LakeMeta
from cryptolake.sources.archive import ArchiveSource, BinanceArchive
from cryptolake.sources.binance import BinanceClient
from cryptolake.testing import FakeExchange
from cryptolake.timeutils import to_ms
from tests.helpers import (
    check_files,
    collect,
    collect_argv,
    data_files,
    expected_klines,
    invoke,
    lake_bytes,
    one_line_error,
    sigkill_when,
    stored,
)

NOW = to_ms("2025-03-10T05:00:00Z")  # daily files up to 03-08 are out; 03-09's is not yet
SINCE = "2024-12-20"


_OPEN: list[ArchiveSource] = []


@pytest.fixture
def fx() -> Iterator[FakeExchange]:
    with FakeExchange(now=NOW) as exchange:
        yield exchange
    while _OPEN:
        opened = _OPEN.pop()
        opened.close()
        opened.rest.close()  # type: ignore[attr-defined]


def source(fx: FakeExchange, mode: str = "auto") -> ArchiveSource:
    rest = BinanceClient(base_url=fx.base_url, retry_delay=0.01, timeout_s=5)
    made = ArchiveSource(rest, BinanceArchive(fx.base_url, retry_delay=0.01), mode)  # type: ignore[arg-type]
    _OPEN.append(made)
    return made


def run(
    fx: FakeExchange,
    lake: Path,
    mode: str = "auto",
    symbols: tuple[str, ...] = ("BTCUSDT",),
    since: str = SINCE,
) -> list:
    collector = CryptoCollector(source(fx, mode), lake=lake, interval="1m")
    return collector.collect(since, list(symbols))


def oracle(fx: FakeExchange, symbol: str = "BTCUSDT", since: str = SINCE, until: int = NOW) -> pl.DataFrame:
    return expected_klines(fx.klines(symbol, "1m", to_ms(since), until))


def klines_requests(fx: FakeExchange) -> int:
    return fx.stats().by_path.get("/api/v3/klines", 0)


def verify_cli(lake: Path, fx: FakeExchange, *args: object) -> Result:
    """``cryptolake verify`` of the 1m candles against the fake (its archive and its REST API)."""
    return invoke(
        "verify",
        "--lake",
        lake,
        "--interval",
        "1m",
        "--archive-url",
        fx.base_url,
        "--base-url",
        fx.base_url,
        *args,
    )


def sources(lake: Path) -> pl.DataFrame:
    return LakeMeta(lake).sources("1m")


def test_auto_is_exact_across_the_microsecond_switch_and_spends_weight_only_on_the_unpublished(
    fx: FakeExchange, tmp_path: Path
) -> None:
    reports = run(fx, tmp_path)
    assert not any(r.failed for r in reports)
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx))
    # REST: the first candles after --since (finding the start) and the two days not yet in a
    # daily file (03-09 publishes at 08:00, today is open) - about 3,000 candles, not 113,000.
    assert klines_requests(fx) <= 4
    stats = fx.stats()
    assert (
        stats.archive_by_kind["monthly"] == 3 and stats.archive_by_kind["daily"] == 8
    )  # Dec..Feb; 03-01..08
    record = sources(tmp_path)
    archive = record.filter(pl.col("source") == "archive")
    assert set(archive["month"]) == {"2024-12", "2025-01", "2025-02", "2025-03"}
    assert archive["sha256"].str.len_chars().to_list() == [64] * archive.height
    assert archive.filter(pl.col("month") == "2025-01")["rows"].to_list() == [31 * 1440]
    # Analysts see the same in the `sources` view.
    result = invoke(
        "sql", "SELECT source, sum(rows) AS n FROM sources GROUP BY source ORDER BY source", "--lake", tmp_path,
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    by_source = {row["source"]: row["n"] for row in json.loads(result.stdout)}
    assert sum(by_source.values()) == oracle(fx).height and by_source["rest"] < 4000


def test_a_rerun_downloads_nothing_and_sends_no_klines_request(fx: FakeExchange, tmp_path: Path) -> None:
    run(fx, tmp_path)
    before = fx.stats()
    reports = run(fx, tmp_path)
    after = fx.stats()
    assert sum(r.total_rows_added for r in reports) == 0
    assert after.archive_requests == before.archive_requests
    assert klines_requests(fx) == before.by_path["/api/v3/klines"]


def test_a_day_later_only_the_new_daily_files_and_the_open_day_are_fetched(
    fx: FakeExchange, tmp_path: Path
) -> None:
    run(fx, tmp_path)
    fx.advance(24 * 3_600_000)
    before = fx.stats().archive_by_kind
    reports = run(fx, tmp_path)
    assert not any(r.failed for r in reports)
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx, until=fx.now_ms()))
    after = fx.stats().archive_by_kind
    assert after.get("monthly", 0) == before.get("monthly", 0)  # nothing merged is downloaded again


def test_rest_only_downloads_no_file_and_equals_the_archive_plan(fx: FakeExchange, tmp_path: Path) -> None:
    rest_lake, mixed_lake = tmp_path / "rest", tmp_path / "mixed"
    with BinanceClient(base_url=fx.base_url, retry_delay=0.01) as client:
        CryptoCollector(client, lake=rest_lake, interval="1m").collect(SINCE, ["BTCUSDT"])
    assert fx.stats().archive_requests == 0
    run(fx, mixed_lake)
    assert_frame_equal(stored(rest_lake, "BTCUSDT", "1m"), stored(mixed_lake, "BTCUSDT", "1m"))
    assert sources(rest_lake)["source"].unique().to_list() == ["rest"]


def test_archive_only_takes_what_files_hold_and_leaves_the_rest_missing(
    fx: FakeExchange, tmp_path: Path
) -> None:
    run(fx, tmp_path, mode="archive", since="2025-01-01")
    # One request finds the symbol's first candle at --since; no other klines request.
    assert klines_requests(fx) == 1
    end_of_files = to_ms("2025-03-09")
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx, since="2025-01-01", until=end_of_files))
    assert sources(tmp_path).filter(pl.col("source") == "rest").height <= 1
    # The rest comes with the next run that may use REST.
    run(fx, tmp_path, mode="auto", since="2025-01-01")
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx, since="2025-01-01"))


def test_missing_and_late_files_come_from_daily_files_and_rest(fx: FakeExchange, tmp_path: Path) -> None:
    fx.archive_fault("missing", "BTCUSDT", "1m", "2025-01")
    fx.archive_fault("late", "BTCUSDT", "1m", "2025-02", delay_s=30 * 86_400)
    fx.archive_fault("missing", "BTCUSDT", "1m", "2025-03-05")
    run(fx, tmp_path)
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx))
    files = sources(tmp_path).filter(pl.col("source") == "archive")["file"].to_list()
    # January's and February's daily files stand in for their monthly files.
    assert any("/daily/" in f and "2025-01-" in f for f in files)
    assert any("/daily/" in f and "2025-02-" in f for f in files)
    assert not any("2025-03-05" in f for f in files)
    # REST: the start, 03-05 (1,440 candles: 2 requests), 03-09 and today.
    assert 4 <= klines_requests(fx) <= 6


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("wrong_checksum", "checksum"), ("corrupt_zip", "corrupt"), ("empty", "empty")],
)
def test_a_file_that_fails_its_check_falls_back_to_rest_and_is_recorded(
    fx: FakeExchange, tmp_path: Path, fault: str, reason: str
) -> None:
    fx.archive_fault(fault, "BTCUSDT", "1m", "2025-01")
    reports = run(fx, tmp_path, since="2025-01-01")
    assert not any(r.failed for r in reports)
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx, since="2025-01-01"))
    rejected = sources(tmp_path).filter(pl.col("source") == "archive_rejected")
    assert rejected["month"].to_list() == ["2025-01"]
    assert rejected["note"][0].startswith(reason)
    if fault != "empty":
        assert fx.stats().archive_by_kind["monthly"] >= 2 + 1  # downloaded twice, then Feb's


def test_a_checksum_that_mismatches_once_is_downloaded_again_and_used(
    fx: FakeExchange, tmp_path: Path
) -> None:
    fx.archive_fault("wrong_checksum", "BTCUSDT", "1m", "2025-01", times=1)
    run(fx, tmp_path, since="2025-01-01")
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx, since="2025-01-01"))
    record = sources(tmp_path)
    assert record.filter(pl.col("source") == "archive_rejected").height == 0
    assert "2025-01" in record.filter(pl.col("source") == "archive")["month"].to_list()


def test_files_with_a_header_row_and_in_milliseconds_before_2025(fx: FakeExchange, tmp_path: Path) -> None:
    fx.archive_fault("header", "BTCUSDT", "1m", "2024-11")
    run(fx, tmp_path, since="2024-11-01")
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx, since="2024-11-01"))
    assert "2024-11" in sources(tmp_path).filter(pl.col("source") == "archive")["month"].to_list()


def test_off_grid_candles_are_left_out_their_slots_come_from_rest_and_verify_reports_the_file(
    fx: FakeExchange, tmp_path: Path
) -> None:
    start, end = to_ms("2025-01-10T00:00:00Z"), to_ms("2025-01-10T06:00:00Z")
    fx.archive_fault("off_grid", "BTCUSDT", "1m", "2025-01", start_ms=start, end_ms=end)
    run(fx, tmp_path, since="2025-01-01")
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx, since="2025-01-01"))
    jan = sources(tmp_path).filter((pl.col("month") == "2025-01") & (pl.col("source") == "archive"))
    assert jan["off_grid"].to_list() == [360]
    result = verify_cli(tmp_path, fx)
    assert result.exit_code == 0, result.output
    assert "360 off-grid candles left out" in result.stdout


def test_verify_finds_a_reupload_names_the_candles_and_repairs_them(fx: FakeExchange, tmp_path: Path) -> None:
    run(fx, tmp_path, since="2025-01-01")
    clean = verify_cli(tmp_path, fx, "--json")
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["files_checked"] >= 2

    fx.archive_fault("reupload", "BTCUSDT", "1m", "2025-01", changed=3)
    found = verify_cli(tmp_path, fx, "--json")
    assert found.exit_code == 1, found.output
    report = json.loads(found.stdout)
    assert report["files_reuploaded"] == 1
    changed = [d for d in report["differences"] if d["kind"] == "changed"]
    assert len(changed) == 3 and all("close" in d["fields"] for d in changed)
    before = stored(tmp_path, "BTCUSDT", "1m")

    repaired = verify_cli(tmp_path, fx, "--repair")
    assert repaired.exit_code == 1 and "repaired 3 candles" in repaired.stdout
    after = stored(tmp_path, "BTCUSDT", "1m")
    assert after.height == before.height
    file_rows = expected_klines(fx.archive_klines("BTCUSDT", "1m", "2025-01"))
    jan = after.filter(pl.col("open_time").dt.month() == 1)
    assert jan.height == file_rows.height
    again = verify_cli(tmp_path, fx)
    assert again.exit_code == 0, again.output


def test_verify_against_rest_names_a_tampered_candle_and_repairs_it(fx: FakeExchange, tmp_path: Path) -> None:
    run(fx, tmp_path, since="2025-02-20")
    assert verify_cli(tmp_path, fx, "--against", "rest").exit_code == 0
    frame = stored(tmp_path, "BTCUSDT", "1m")
    Lake(tmp_path).write_klines("1m", "BTCUSDT", frame.slice(100, 1).with_columns(pl.col("volume") * 2))
    found = verify_cli(tmp_path, fx, "--against", "rest", "--json")
    assert found.exit_code == 1
    diffs = json.loads(found.stdout)["differences"]
    assert [(d["kind"], d["fields"]) for d in diffs] == [("changed", ["volume"])]
    fixed = verify_cli(tmp_path, fx, "--against", "rest", "--repair")
    assert fixed.exit_code == 1 and "repaired 1 candles" in fixed.stdout
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), frame)
    sampled = verify_cli(tmp_path, fx, "--against", "rest", "--sample", "2", "--json")
    assert sampled.exit_code == 0 and json.loads(sampled.stdout)["candles_compared"] == 2000


def test_cli_source_flag_and_setting(fx: FakeExchange, cli_env: Path) -> None:
    lake = cli_env / "lake"
    result = collect(
        lake, fx, "--symbols", "BTC", "--since", "2025-02-01", "--interval", "1m", "--source", "archive"
    )
    assert result.exit_code == 0, result.output
    assert klines_requests(fx) == 1 and fx.stats().archive_by_kind.get("monthly") == 1
    daily = fx.stats().archive_by_kind["daily"]
    bad = invoke("collect", "--lake", lake, "--source", "ftp", "--symbols", "BTC")
    assert bad.exit_code == 2 and "ftp" in bad.output
    os.environ["CRYPTOLAKE_COLLECTION_SOURCE"] = "rest"
    try:
        result = collect(lake, fx, "--symbols", "BTC", "--since", "2025-02-01", "--interval", "1m")
    finally:
        del os.environ["CRYPTOLAKE_COLLECTION_SOURCE"]
    assert result.exit_code == 0, result.output
    assert fx.stats().archive_by_kind["daily"] == daily  # the rest over REST, not daily files


def test_sigkill_during_an_archive_backfill_leaves_a_readable_lake_and_the_rerun_completes_it(
    fx: FakeExchange, cli_env: Path
) -> None:
    lake = cli_env / "lake"
    args = ("--symbols", "BTC,ETH", "--since", "2024-07-01", "--interval", "1m", "--quiet")
    fx.set_latency(0.05)
    sigkill_when(collect_argv(lake, fx, *args), cli_env, lambda: len(data_files(lake)) >= 3)
    fx.set_latency(0.0)
    assert check_files(lake) > 0
    rerun = collect(lake, fx, *args)
    assert rerun.exit_code == 0, rerun.stderr
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_frame_equal(stored(lake, symbol, "1m"), oracle(fx, symbol, since="2024-07-01"))


def test_an_unreachable_archive_costs_one_warning_and_auto_takes_everything_from_rest(
    fx: FakeExchange, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rest = BinanceClient(base_url=fx.base_url, retry_delay=0.01, timeout_s=5)
    dead = BinanceArchive("http://127.0.0.1:9", retry_delay=0.01, max_retries=1)  # nothing listens there
    made = ArchiveSource(rest, dead, "auto")
    _OPEN.append(made)
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="cryptolake.archive"):
        reports = CryptoCollector(made, lake=tmp_path, interval="1m").collect(
            "2025-02-20", ["BTCUSDT", "ETHUSDT"]
        )
    assert not any(r.failed for r in reports)
    assert time.monotonic() - began < 10
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_frame_equal(stored(tmp_path, symbol, "1m"), oracle(fx, symbol, since="2025-02-20"))
    warnings = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1 and "every candle over REST" in warnings[0]


def test_a_cache_folder_keeps_the_files_and_serves_them_again_while_their_checksum_holds(
    fx: FakeExchange, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    rest = BinanceClient(base_url=fx.base_url, retry_delay=0.01, timeout_s=5)
    made = ArchiveSource(rest, BinanceArchive(fx.base_url, retry_delay=0.01, cache_dir=cache), "archive")
    _OPEN.append(made)
    CryptoCollector(made, lake=tmp_path / "one", interval="1m").collect("2025-01-01", ["BTCUSDT"])
    kept = sorted(p.name for p in cache.rglob("*.zip"))
    assert "BTCUSDT-1m-2025-01.zip" in kept and "BTCUSDT-1m-2025-03-01.zip" in kept
    zips = fx.stats().archive_by_kind["monthly"] + fx.stats().archive_by_kind["daily"]
    CryptoCollector(made, lake=tmp_path / "two", interval="1m").collect("2025-01-01", ["BTCUSDT"])
    assert (
        fx.stats().archive_by_kind["monthly"] + fx.stats().archive_by_kind["daily"] == zips
    )  # only checksums asked
    assert_frame_equal(stored(tmp_path / "one", "BTCUSDT", "1m"), stored(tmp_path / "two", "BTCUSDT", "1m"))
    fx.archive_fault("reupload", "BTCUSDT", "1m", "2025-02")
    CryptoCollector(made, lake=tmp_path / "three", interval="1m").collect("2025-01-01", ["BTCUSDT"])
    assert fx.stats().archive_by_kind["monthly"] == 2 + 1  # the re-uploaded file, downloaded anew


def test_a_deleted_partition_is_taken_from_its_file_again(fx: FakeExchange, tmp_path: Path) -> None:
    import shutil

    run(fx, tmp_path, since="2025-01-01")
    months, requests = fx.stats().archive_by_kind["monthly"], klines_requests(fx)
    january = next(p for p in data_files(tmp_path) if "month=2025-01" in str(p)).parent
    shutil.rmtree(january)
    run(fx, tmp_path, since="2025-01-01")
    assert fx.stats().archive_by_kind["monthly"] == months + 1
    assert klines_requests(fx) == requests + 1  # the look-up of the start, not January's 45 pages
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx, since="2025-01-01"))


def test_a_month_of_1s_comes_day_by_day_even_when_its_unit_outgrows_the_block_budget(tmp_path: Path) -> None:
    # Six daily files of 86,400 candles (more than the 450,000 the pipeline holds at once) make
    # one unit: its blocks must all be let in, or the unit would wait for them forever.
    with FakeExchange(now=to_ms("2025-03-07T00:20:00Z")) as exchange:
        exchange.set_archive_delays(daily_s=0)
        rest = BinanceClient(base_url=exchange.base_url, retry_delay=0.01, timeout_s=5)
        with rest, ArchiveSource(rest, BinanceArchive(exchange.base_url, retry_delay=0.01)) as made:
            reports = CryptoCollector(made, lake=tmp_path, interval="1s").collect("2025-03-01", ["BTCUSDT"])
        assert not any(r.failed for r in reports)
        stats = exchange.stats()
        assert stats.archive_by_kind.get("monthly", 0) == 0 and stats.archive_by_kind["daily"] == 6
        assert stats.by_path["/api/v3/klines"] <= 3  # the start, and the 20 minutes of today
        want = expected_klines(exchange.klines("BTCUSDT", "1s", to_ms("2025-03-01"), exchange.now_ms()))
        assert_frame_equal(stored(tmp_path, "BTCUSDT", "1s"), want)


def test_the_listing_is_read_where_binance_answers_it(fx: FakeExchange) -> None:
    # data.binance.vision answers a listing with a page for browsers; its bucket's S3 endpoint
    # answers the XML. Any other archive (a mirror, this fake) is listed at its own URL.
    with BinanceArchive() as binance, BinanceArchive(fx.base_url) as mirror:
        assert binance.listing_url == "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"
        assert mirror.listing_url == fx.base_url
    with BinanceArchive("http://127.0.0.1:9", listing_url=fx.base_url, max_retries=0) as split:
        files = split.files("BTCUSDT", "1m", daily_months=["2025-03"])
    assert [f.period for f in files][-3:] == ["2025-03-06", "2025-03-07", "2025-03-08"]
    assert "2025-02" in [f.period for f in files]


def test_a_file_shifted_off_the_grid_from_its_first_candle_is_filled_from_rest(
    fx: FakeExchange, tmp_path: Path
) -> None:
    fx.archive_fault("off_grid", "BTCUSDT", "1m", "2025-02")  # the whole month: its first 28 slots empty
    run(fx, tmp_path, since="2025-01-01")
    assert_frame_equal(stored(tmp_path, "BTCUSDT", "1m"), oracle(fx, since="2025-01-01"))
    assert LakeMeta(tmp_path).windows("1m") == []  # no outage recorded for what REST serves


def test_a_password_in_the_archive_url_is_never_shown_and_an_unreachable_archive_is_one_error(
    fx: FakeExchange, tmp_path: Path
) -> None:
    run(fx, tmp_path, since="2025-02-01")
    dead = "http://bob:s3cr3tPW@127.0.0.1:9"
    result = invoke("verify", "--lake", tmp_path, "--interval", "1m", "--archive-url", dead)
    assert result.exit_code == 1
    assert "s3cr3tPW" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach the archive" in errors[0]
    lake = tmp_path / "second"
    collected = collect(
        lake, fx, "--symbols", "ETH", "--since", "2025-02-01", "--interval", "1m", "--source", "archive"
    )
    assert collected.exit_code == 0
    failed = invoke("collect", "--lake", lake, "--symbols", "ETH", "--since", "2025-01-01", "--interval", "1m",
                    "--source", "archive", "--base-url", fx.base_url, "--archive-url", dead)  # fmt: skip
    assert failed.exit_code == 1 and "s3cr3tPW" not in failed.output
    state = (
        (lake / "_meta").read_bytes()
        if False
        else b"".join(p.read_bytes() for p in (lake / "_meta").rglob("*") if p.is_file())
    )
    assert b"s3cr3tPW" not in state


def test_verify_refuses_a_future_start_and_an_interval_without_candles_and_bounds_by_dates(
    fx: FakeExchange, tmp_path: Path
) -> None:
    run(fx, tmp_path, since="2025-02-20")
    before = lake_bytes(tmp_path)
    future = verify_cli(tmp_path, fx, "--since", "2099-01-01")
    assert future.exit_code == 2 and one_line_error(future).startswith("error: start 2099-01-01")
    hourly = invoke("verify", "--lake", tmp_path, "--interval", "1h", "--archive-url", fx.base_url)
    assert hourly.exit_code == 2 and "holds no 1h candles" in one_line_error(hourly)
    assert lake_bytes(tmp_path) == before
    # The whole stored range over REST, across a month boundary, and then two days of it.
    whole = verify_cli(tmp_path, fx, "--against", "rest", "--json")
    assert json.loads(whole.stdout)["candles_compared"] == stored(tmp_path, "BTCUSDT", "1m").height
    days = verify_cli(
        tmp_path, fx, "--against", "rest", "--since", "2025-02-28", "--until", "2025-03-01", "--json"
    )
    assert days.exit_code == 0 and json.loads(days.stdout)["candles_compared"] == 2 * 1440


def test_an_empty_range_from_the_archive_source_is_empty(fx: FakeExchange) -> None:
    t = to_ms("2025-01-01")
    assert source(fx).get_klines_range("BTCUSDT", "1m", t, t, as_arrow=True).num_rows == 0
