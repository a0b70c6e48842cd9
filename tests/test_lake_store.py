"""Lake on disk: atomic writes, skip-unchanged, schema checks, footer stats, DuckDB, lock."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from cryptolake.errors import InvalidSymbolName, LakeError, LakeLocked, SchemaMismatch
from cryptolake.lake import ARROW_SCHEMA, Lake, klines_glob, merge_klines, partition_path, store
from cryptolake.schema import HOUR_MS, KLINE_COLUMNS, KLINE_SCHEMA
from cryptolake.timeutils import to_ms
from tests.helpers import store_as_another_tool

JAN_31_22H = to_ms("2024-01-31T22:00:00Z")
FLOAT_COLUMNS = [c for c, t in KLINE_SCHEMA.items() if t == pl.Float64()]


def candles(hours: range | list[int], start_ms: int = JAN_31_22H, value: float = 1.0) -> pl.DataFrame:
    """Hourly candles at ``start_ms + h`` hours; every float column holds ``value + h``."""
    opens = [start_ms + h * HOUR_MS for h in hours]
    data: dict[str, Any] = {c: [value + h for h in hours] for c in FLOAT_COLUMNS}
    data |= {
        "open_time": opens,
        "close_time": [t + HOUR_MS - 1 for t in opens],
        "trades": [10 + h for h in hours],
    }
    frame = pl.DataFrame(data).select(KLINE_COLUMNS)
    return frame.with_columns(
        pl.col("open_time", "close_time").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    )


def signature(path: Path) -> tuple[bytes, int, int]:
    stat = path.stat()
    return path.read_bytes(), stat.st_mtime_ns, stat.st_ino


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


@pytest.fixture
def filled(lake: Lake) -> Lake:
    """BTCUSDT 1h: 2 candles in 2024-01, 3 in 2024-02."""
    lake.write_klines("1h", "BTCUSDT", candles(range(5)))
    return lake


# -- writing ---------------------------------------------------------------------------------


def test_lake_creates_nothing_until_the_first_write(lake: Lake) -> None:
    assert lake.symbols("1h") == []
    assert lake.months("1h", "BTCUSDT") == []
    assert lake.partition_stats("1h") == []
    assert lake.bounds("1h", "BTCUSDT") is None
    assert lake.read_partition("1h", "BTCUSDT", "2024-01").is_empty()
    assert lake.scan("1h").collect().is_empty()
    assert lake.write_klines("1h", "BTCUSDT", candles([])) == store.WriteResult()
    assert not lake.root.exists()


def test_first_write_splits_by_month(lake: Lake) -> None:
    result = lake.write_klines("1h", "BTCUSDT", candles(range(5)))
    assert result == store.WriteResult(
        rows_added=5,
        rows_changed=0,
        files_written=2,
        files_unchanged=0,
        months=("2024-01", "2024-02"),
    )
    assert lake.months("1h", "BTCUSDT") == ["2024-01", "2024-02"]
    assert_frame_equal(lake.read_partition("1h", "BTCUSDT", "2024-01"), candles(range(2)))
    assert_frame_equal(lake.read_partition("1h", "BTCUSDT", "2024-02"), candles(range(2, 5)))


def test_written_file_follows_the_contract(filled: Lake) -> None:
    path = partition_path(filled.root, "1h", "BTCUSDT", "2024-02")
    meta = pq.read_metadata(path)
    schema = pq.read_schema(path)
    assert schema.names == list(KLINE_COLUMNS)
    assert schema.field("open_time").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("close_time").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("trades").type == pa.int64()
    assert all(schema.field(c).type == pa.float64() for c in FLOAT_COLUMNS)
    assert ARROW_SCHEMA.equals(schema.remove_metadata())
    column = meta.row_group(0).column(0)
    assert column.compression == "ZSTD"
    assert column.is_stats_set
    assert column.statistics.has_min_max
    table = pq.ParquetFile(path).read()
    assert table.column("open_time").to_pylist() == sorted(table.column("open_time").to_pylist())


def test_second_identical_write_rewrites_nothing(filled: Lake) -> None:
    paths = [partition_path(filled.root, "1h", "BTCUSDT", m) for m in ("2024-01", "2024-02")]
    before = [signature(p) for p in paths]
    result = filled.write_klines("1h", "BTCUSDT", candles(range(5)))
    assert result == store.WriteResult(
        rows_added=0,
        rows_changed=0,
        files_written=0,
        files_unchanged=2,
        months=("2024-01", "2024-02"),
    )
    assert [signature(p) for p in paths] == before


def test_subset_of_stored_rows_rewrites_nothing(filled: Lake) -> None:
    result = filled.write_klines("1h", "BTCUSDT", candles([3]))
    assert (result.files_written, result.files_unchanged) == (0, 1)


def test_changed_values_rewrite_only_their_month(filled: Lake) -> None:
    jan = partition_path(filled.root, "1h", "BTCUSDT", "2024-01")
    feb = partition_path(filled.root, "1h", "BTCUSDT", "2024-02")
    jan_before, feb_before = signature(jan), signature(feb)
    changed = candles([1], value=100.0)  # 2024-01-31 23:00, new values
    incoming = pl.concat([changed, candles([2, 3])])  # Feb rows identical to the stored ones
    result = filled.write_klines("1h", "BTCUSDT", incoming)
    assert result == store.WriteResult(
        rows_added=0,
        rows_changed=1,
        files_written=1,
        files_unchanged=1,
        months=("2024-01", "2024-02"),
    )
    assert signature(feb) == feb_before
    assert signature(jan) != jan_before
    assert_frame_equal(filled.read_partition("1h", "BTCUSDT", "2024-01"), pl.concat([candles([0]), changed]))


def test_added_and_changed_are_counted_together(filled: Lake) -> None:
    result = filled.write_klines("1h", "BTCUSDT", pl.concat([candles([4], value=7.0), candles([5, 6])]))
    assert (result.rows_added, result.rows_changed, result.files_written) == (2, 1, 1)
    assert filled.bounds("1h", "BTCUSDT") == (JAN_31_22H, JAN_31_22H + 6 * HOUR_MS, 7)


def test_a_nan_value_that_did_not_change_is_not_a_change(lake: Lake) -> None:
    frame = candles(range(3)).with_columns(
        pl.lit(float("nan")).alias("quote_volume"), pl.lit(None, pl.Float64).alias("taker_buy_base_volume")
    )
    assert lake.write_klines("1h", "BTCUSDT", frame).rows_added == 3
    assert lake.write_klines("1h", "BTCUSDT", frame).files_written == 0


def test_close_time_change_is_a_change(filled: Lake) -> None:
    wrong = candles([0, 1]).with_columns(pl.col("close_time") - pl.duration(milliseconds=1))
    store_as_another_tool(filled.root, "1h", "BTCUSDT", wrong)  # cryptolake would refuse these
    assert filled.write_klines("1h", "BTCUSDT", candles([0])).rows_changed == 1


def test_invalid_symbol_writes_nothing(lake: Lake) -> None:
    with pytest.raises(InvalidSymbolName):
        lake.write_klines("1h", "../evil", candles(range(2)))
    assert not lake.root.exists()


def test_failed_replace_leaves_old_file_and_no_temp(filled: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    path = partition_path(filled.root, "1h", "BTCUSDT", "2024-02")
    before = path.read_bytes()

    def refuse(src: Any, dst: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(store.os, "replace", refuse)
    with pytest.raises(OSError, match="disk on fire"):
        filled.write_klines("1h", "BTCUSDT", candles([3], value=50.0))
    assert path.read_bytes() == before
    assert temp_files(filled.root) == []


def test_crash_while_writing_parquet_leaves_old_file(filled: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    path = partition_path(filled.root, "1h", "BTCUSDT", "2024-02")
    before = path.read_bytes()
    written: list[str] = []
    real_fsync = os.fsync

    def crash_after_the_bytes_are_in_the_temp_file(fd: int) -> None:
        where = os.readlink(f"/proc/self/fd/{fd}")
        if not os.path.isdir(where):
            written.append(Path(where).name)
            raise KeyboardInterrupt  # even a BaseException cleans up
        real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", crash_after_the_bytes_are_in_the_temp_file)
    with pytest.raises(KeyboardInterrupt):
        filled.write_klines("1h", "BTCUSDT", candles([4], value=50.0))
    assert path.read_bytes() == before
    assert temp_files(filled.root) == []
    assert written and written[0].startswith(".data.parquet.") and written[0].endswith(".tmp")
    assert store.is_committed(path)  # the old file and its record, untouched


def test_write_fsyncs_file_and_folder(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", spy)
    lake.write_klines("1h", "BTCUSDT", candles([0]))
    # new folders are made durable first, then the temp file, then the rename in its folder
    assert synced.count("file") == 1
    assert synced.count("dir") >= 2
    assert synced[-2:] == ["file", "dir"]


# -- schema checks ---------------------------------------------------------------------------


def _plant(lake: Lake, table: pa.Table, month: str = "2024-03") -> Path:
    path = partition_path(lake.root, "1h", "BTCUSDT", month)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.drop_columns(["trades"]), "missing column trades"),
        (
            lambda t: t.append_column("symbol", pa.array(["X"] * t.num_rows)),
            "unexpected column symbol",
        ),
        (
            lambda t: t.set_column(0, "open_time", t.column(0).cast(pa.int64())),
            "column open_time is int64",
        ),
        (
            lambda t: t.set_column(0, "open_time", t.column(0).cast(pa.timestamp("us", tz="UTC"))),
            "open_time is timestamp[us",
        ),
        (lambda t: t.select(list(reversed(t.column_names))), "in order"),
    ],
)
def test_foreign_partition_is_a_schema_mismatch(lake: Lake, change: Any, expected: str) -> None:
    path = _plant(lake, change(candles(range(2), start_ms=1_709_251_200_000).to_arrow()))
    before = path.read_bytes()
    with pytest.raises(SchemaMismatch, match="does not match the candle schema") as info:
        lake.read_partition("1h", "BTCUSDT", "2024-03")
    assert info.value.path == str(path)
    assert any(expected in d for d in info.value.diff)
    with pytest.raises(SchemaMismatch):
        lake.partition_stats("1h", "BTCUSDT")
    with pytest.raises(SchemaMismatch):
        lake.write_klines("1h", "BTCUSDT", candles(range(2), start_ms=1_709_251_200_000, value=9.0))
    assert path.read_bytes() == before


def test_unreadable_partition_is_a_lake_error(lake: Lake) -> None:
    path = partition_path(lake.root, "1h", "BTCUSDT", "2024-03")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet at all")
    with pytest.raises(LakeError, match="cannot read Parquet"):
        lake.read_partition("1h", "BTCUSDT", "2024-03")


# -- listings, stats, scan -------------------------------------------------------------------


def test_listings_ignore_anything_off_layout(filled: Lake) -> None:
    base = filled.root / "klines" / "exchange=binance" / "interval=1h"
    (base / "symbol=btcusdt" / "month=2024-01").mkdir(parents=True)
    (base / "symbol=btcusdt" / "month=2024-01" / "data.parquet").write_bytes(b"")
    (base / "notes").mkdir()
    (base / "symbol=ETHUSDT" / "month=2024-03").mkdir(parents=True)  # no data file yet
    sym = base / "symbol=BTCUSDT"
    (sym / "month=2024-13").mkdir()
    (sym / "month=2024-13" / "data.parquet").write_bytes(b"")
    (sym / "month=2024-04").mkdir()
    (sym / "month=2024-04" / ".data.parquet.1.ab.tmp").write_bytes(b"")
    (sym / "README.txt").write_text("hi")
    assert filled.symbols("1h") == ["BTCUSDT"]
    assert filled.months("1h", "BTCUSDT") == ["2024-01", "2024-02"]
    assert filled.symbols("1d") == []


def test_partition_stats_come_from_commit_records_without_opening_a_parquet_reader(
    filled: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    filled.write_klines("1h", "ETHUSDT", candles([0]))

    def no_parquet_reader(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("partition_stats opened a Parquet reader")

    for name in ("ParquetFile", "read_table", "read_metadata", "read_schema"):
        monkeypatch.setattr(store.pq, name, no_parquet_reader)
    for name in ("read_parquet", "scan_parquet"):
        monkeypatch.setattr(store.pl, name, no_parquet_reader)
    stats = filled.partition_stats("1h")
    assert [(s.symbol, s.month, s.rows) for s in stats] == [
        ("BTCUSDT", "2024-01", 2),
        ("BTCUSDT", "2024-02", 3),
        ("ETHUSDT", "2024-01", 1),
    ]
    feb = stats[1]
    assert (feb.first_open_ms, feb.last_open_ms) == (
        JAN_31_22H + 2 * HOUR_MS,
        JAN_31_22H + 4 * HOUR_MS,
    )
    assert feb.path == partition_path(filled.root, "1h", "BTCUSDT", "2024-02")
    assert feb.size_bytes == feb.path.stat().st_size > 0
    assert filled.partition_stats("1h", "ETHUSDT") == stats[2:]
    assert filled.bounds("1h", "BTCUSDT") == (JAN_31_22H, JAN_31_22H + 4 * HOUR_MS, 5)
    assert filled.bounds("1h", "SOLUSDT") is None


def test_scan_adds_symbol_and_filters_half_open(filled: Lake) -> None:
    filled.write_klines("1h", "币安人生USDT", candles(range(3), value=5.0))
    everything = filled.scan("1h").collect()
    assert everything.columns == ["symbol", *KLINE_COLUMNS]
    assert everything.schema["symbol"] == pl.String
    assert everything.group_by("symbol").len().sort("symbol").rows() == [
        ("BTCUSDT", 5),
        ("币安人生USDT", 3),
    ]
    window = filled.scan(
        "1h",
        symbols=["币安人生USDT"],
        start_ms=JAN_31_22H + HOUR_MS,
        end_ms=JAN_31_22H + 2 * HOUR_MS,
    )
    frame = window.collect()
    assert frame["symbol"].to_list() == ["币安人生USDT"]
    assert frame["open_time"].dt.epoch("ms").to_list() == [JAN_31_22H + HOUR_MS]
    assert_frame_equal(frame.drop("symbol"), candles([1], value=5.0))


def test_scan_opens_only_months_in_range(filled: Lake) -> None:
    junk = partition_path(filled.root, "1h", "BTCUSDT", "2023-06")
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"would fail to parse")
    frame = filled.scan("1h", ["BTCUSDT"], start_ms=JAN_31_22H).collect()
    assert frame.height == 5


def test_scan_of_unknown_symbols_is_empty_with_schema(filled: Lake) -> None:
    frame = filled.scan("1h", ["NOPEUSDT"]).collect()
    assert frame.is_empty()
    assert frame.schema == pl.Schema({"symbol": pl.String(), **KLINE_SCHEMA})
    with pytest.raises(InvalidSymbolName):
        filled.scan("1h", ["bad/one"])


def test_plain_duckdb_reads_the_lake(filled: Lake) -> None:
    month = candles([0], start_ms=to_ms("2024-01-01")).with_columns(
        pl.lit(to_ms("2024-02-01") - 1).cast(pl.Datetime("ms", "UTC")).alias("close_time")
    )
    assert filled.write_klines("1M", "币安人生USDT", month).rows_added == 1
    con = duckdb.connect()
    rel = f"read_parquet('{klines_glob(filled.root)}', hive_partitioning = true)"
    types = dict(
        con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {rel})").fetchall()
    )
    # DuckDB autodetects hive values: '2024-01' and '1h'/'1mo' stay VARCHAR (not DATE/INTERVAL).
    assert {types[c] for c in ("exchange", "interval", "symbol", "month")} == {"VARCHAR"}
    assert types["open_time"] == "TIMESTAMP WITH TIME ZONE"
    rows = con.execute(
        f"SELECT exchange, interval, symbol, month, count(*), min(epoch_ms(open_time)) FROM {rel} "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == [
        ("binance", "1h", "BTCUSDT", "2024-01", 2, JAN_31_22H),
        ("binance", "1h", "BTCUSDT", "2024-02", 3, JAN_31_22H + 2 * HOUR_MS),
        ("binance", "1mo", "币安人生USDT", "2024-01", 1, to_ms("2024-01-01")),
    ]


def test_duckdb_ignores_temp_files(filled: Lake) -> None:
    stray = partition_path(filled.root, "1h", "BTCUSDT", "2024-01").with_name(".data.parquet.1.ab.tmp")
    stray.write_bytes(b"garbage")
    rel = f"read_parquet('{klines_glob(filled.root)}', hive_partitioning = true)"
    assert duckdb.connect().execute(f"SELECT count(*) FROM {rel}").fetchone() == (5,)


# -- writer lock -----------------------------------------------------------------------------


def take_lock(lake: Lake, **kwargs: Any) -> None:
    """Acquire and release the writer lock of ``lake``."""
    with lake.writer_lock(**kwargs):
        pass


def test_second_writer_without_wait_is_refused(lake: Lake) -> None:
    with lake.writer_lock():
        assert (lake.root / "_meta" / "writer.lock").exists()
        with pytest.raises(LakeLocked, match="another cryptolake process is writing to") as info:
            take_lock(Lake(lake.root), wait=False)
        assert str(lake.root) in str(info.value)
        assert info.value.root == str(lake.root)
    take_lock(Lake(lake.root), wait=False)


def test_waiting_writer_calls_on_wait_then_times_out(lake: Lake) -> None:
    calls: list[int] = []
    with lake.writer_lock(), pytest.raises(LakeLocked, match=r"gave up after waiting 0\.2 s"):
        take_lock(Lake(lake.root), timeout_s=0.2, on_wait=lambda: calls.append(1))
    assert calls == [1]


def test_free_lock_does_not_call_on_wait(lake: Lake) -> None:
    calls: list[int] = []
    with lake.writer_lock(on_wait=lambda: calls.append(1)):
        pass
    assert calls == []


def test_lock_held_by_another_process(lake: Lake) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from cryptolake.lake import Lake
        with Lake({str(lake.root)!r}).writer_lock():
            print("locked", flush=True)
            sys.stdin.read()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    argv = [sys.executable, "-c", code]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            assert child.stdout.readline().strip() == "locked"
            with pytest.raises(LakeLocked):
                take_lock(lake, wait=False)
        finally:
            child.stdin.close()
            child.wait(timeout=30)
    take_lock(lake, timeout_s=5)


def test_lock_removes_stale_temp_files_only(filled: Lake) -> None:
    folder = partition_path(filled.root, "1h", "BTCUSDT", "2024-01").parent
    stale = [
        folder / ".data.parquet.4242.deadbeef.tmp",
        folder.parent / "month=2024-02" / ".data.parquet.7.ab.tmp",
    ]
    keep = [folder / "notes.tmp", folder / "data.parquet", folder / ".data.parquet.tmp"]
    for path in stale + keep[:1] + keep[2:]:
        path.write_bytes(b"x")
    with filled.writer_lock() as removed:
        assert removed == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)


# -- the on-disk merge against the pure one ----------------------------------------------------

_writes = st.lists(
    st.tuples(st.lists(st.integers(0, 80), max_size=40), st.sampled_from([1.0, 2.0, float("nan")])),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=_writes)
def test_successive_writes_equal_the_pure_merge_and_count_exactly(
    tmp_path_factory: pytest.TempPathFactory, writes: list[tuple[list[int], float]]
) -> None:
    """Random batches over two month boundaries (disjoint, overlapping, repeated, with NaN):
    the stored lake equals folding ``merge_klines``, and added/changed/written are exact."""
    lake = Lake(tmp_path_factory.mktemp("lake"))
    expected = candles([])
    for hours, value in writes:
        batch = candles(
            hours, start_ms=to_ms("2024-01-31T00:00:00Z"), value=1.0 if math.isnan(value) else value
        )
        if math.isnan(value):  # NaN where the rules allow it: an amount, not a price
            batch = batch.with_columns(pl.lit(value).alias("quote_volume"))
        before = {t: row for t, row in zip(expected["open_time"].to_list(), expected.rows(), strict=True)}
        incoming = merge_klines(candles([]), batch)  # last duplicate wins, as in the lake
        added = sum(1 for t in incoming["open_time"].to_list() if t not in before)
        changed = sum(
            1
            for t, row in zip(incoming["open_time"].to_list(), incoming.rows(), strict=True)
            if t in before and not _same_row(before[t], row)
        )
        result = lake.write_klines("1h", "BTCUSDT", batch)
        expected = merge_klines(expected, batch)
        assert (result.rows_added, result.rows_changed) == (added, changed)
        if not (added or changed):
            assert result.files_written == 0
        stored = lake.scan("1h", ["BTCUSDT"]).collect().drop("symbol")
        assert_frame_equal(stored, expected)


def _same_row(a: tuple, b: tuple) -> bool:
    return all(
        x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)
        for x, y in zip(a, b, strict=True)
    )


# -- trusting footers only for files cryptolake committed ------------------------------------


def rewrite_with_duplicates(path: Path) -> None:
    """What another tool might do: rewrite the file with repeated rows, keeping cryptolake's
    footer metadata (interval, off-grid count) as it found them."""
    table = pq.read_table(path)
    doubled = pa.concat_tables([table, table.slice(0, 2)]).replace_schema_metadata(table.schema.metadata)
    pq.write_table(doubled, path)


def test_a_committed_file_is_trusted_until_anything_else_rewrites_it(filled: Lake) -> None:
    jan = partition_path(filled.root, "1h", "BTCUSDT", "2024-01")
    assert store.is_committed(jan)
    assert {s.month: s.off_grid_rows for s in filled.partition_stats("1h")} == {"2024-01": 0, "2024-02": 0}

    rewrite_with_duplicates(jan)
    assert pq.read_metadata(jan).metadata[b"cryptolake.off_grid_rows"] == b"0"  # the footer still claims it
    assert not store.is_committed(jan)
    stats = {s.month: s for s in filled.partition_stats("1h")}
    assert stats["2024-01"].off_grid_rows is None and stats["2024-01"].rows == 4  # now read in full
    assert stats["2024-02"].off_grid_rows == 0

    # A lost or torn commit record only makes the file untrusted, never trusted.
    feb = partition_path(filled.root, "1h", "BTCUSDT", "2024-02")
    (feb.parent / ".cryptolake-commit.json").write_text("{not json")
    assert not store.is_committed(feb)
    (feb.parent / ".cryptolake-commit.json").unlink()
    assert not store.is_committed(feb)


def test_merging_into_a_foreign_file_with_duplicates_tidies_it(filled: Lake) -> None:
    jan = partition_path(filled.root, "1h", "BTCUSDT", "2024-01")
    rewrite_with_duplicates(jan)
    earlier = candles([-1], value=5.0)  # one hour before the stored ones
    result = filled.write_klines("1h", "BTCUSDT", earlier)
    assert result.rows_added == 1 and result.files_written == 1
    stored = filled.read_partition("1h", "BTCUSDT", "2024-01")
    assert stored["open_time"].is_unique().all() and stored["open_time"].is_sorted()
    assert_frame_equal(stored, pl.concat([earlier, candles(range(2))]))
    assert store.is_committed(jan)  # cryptolake's own file again


def test_commit_records_stay_out_of_every_reader(filled: Lake) -> None:
    assert len(list(filled.root.rglob(".cryptolake-commit.json"))) == 2
    con = duckdb.connect()
    try:
        assert con.sql(f"SELECT count(*) FROM read_parquet('{klines_glob(filled.root)}')").fetchall() == [
            (5,)
        ]
    finally:
        con.close()
    import pyarrow.dataset as ds

    assert ds.dataset(str(filled.root / "klines"), format="parquet", partitioning="hive").count_rows() == 5
    assert pl.scan_parquet(klines_glob(filled.root), hive_partitioning=True).collect().height == 5


def test_a_rewrite_that_matches_size_and_time_is_still_untrusted(lake: Lake) -> None:
    import json

    lake.write_klines("1h", "BTCUSDT", candles(range(40), start_ms=to_ms("2024-03-01")))
    path = partition_path(lake.root, "1h", "BTCUSDT", "2024-03")
    record_path = path.parent / ".cryptolake-commit.json"
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[5] = dict(rows[4])  # an hour replaced by a copy of the one before: same row count
    kept = {k: v for k, v in table.schema.metadata.items() if k.startswith(b"cryptolake.")}
    pq.write_table(
        pa.Table.from_pylist(rows, schema=table.schema).replace_schema_metadata(kept),
        path,
        compression="zstd",
        write_statistics=True,
    )
    # A forger who also matched the size and the modification time: the record says exactly
    # what the file's stat says now; only the footer's hash still tells the files apart.
    record = json.loads(record_path.read_text())
    record.update(size=path.stat().st_size, mtime_ns=path.stat().st_mtime_ns)
    record_path.write_text(json.dumps(record))
    assert not store.is_committed(path)
    (stats,) = lake.partition_stats("1h", "BTCUSDT")
    assert stats.off_grid_rows is None  # so gap detection reads it in full and finds the duplicate
    del record["footer_sha256"]  # and a record without the hash (an older one) proves nothing
    record_path.write_text(json.dumps(record))
    assert not store.is_committed(path)


def test_a_rewrite_with_the_same_bytes_and_the_old_time_is_untrusted_by_its_change_time(lake: Lake) -> None:
    # A tool can rewrite a file and set its modification time back (os.utime); it cannot set
    # back the change time. (A hostile review rewrote a row in place with a byte-identical footer.)
    lake.write_klines("1h", "BTCUSDT", candles(range(40), start_ms=to_ms("2024-03-01")))
    path = partition_path(lake.root, "1h", "BTCUSDT", "2024-03")
    original = path.stat()
    assert store.is_committed(path)
    path.write_bytes(path.read_bytes())  # same bytes, same size, same footer
    os.utime(path, ns=(original.st_atime_ns, original.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (original.st_size, original.st_mtime_ns)
    assert not store.is_committed(path)


def test_partition_stats_of_a_file_another_tool_wrote_read_its_footer_and_no_data_page(lake: Lake) -> None:
    path = partition_path(lake.root, "1h", "SOLUSDT", "2024-02")
    path.parent.mkdir(parents=True)
    pq.write_table(candles([2, 3, 4]).to_arrow().cast(ARROW_SCHEMA), path)  # no commit record: foreign
    # Zero everything between the leading magic and the footer: any read of a data page fails,
    # while the footer (schema, row count, statistics) stays whole.
    data = bytearray(path.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[4:footer_start] = bytes(footer_start - 4)
    path.write_bytes(bytes(data))
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises: the pages are unreadable
        pq.read_table(path)

    (stats,) = lake.partition_stats("1h", "SOLUSDT")
    assert (stats.month, stats.rows) == ("2024-02", 3)
    assert (stats.first_open_ms, stats.last_open_ms) == (JAN_31_22H + 2 * HOUR_MS, JAN_31_22H + 4 * HOUR_MS)
