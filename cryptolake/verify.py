"""Is the lake what the exchange says? ``verify`` compares stored candles with a source.

- **Against the archive**: every Binance archive file merged into the lake (recorded in
  ``_meta/sources.parquet``) is checked against the checksum Binance publishes now (one small
  request per file). A file re-uploaded since it was merged is downloaded again and compared
  candle for candle; with ``repair``, its candles replace the differing ones and its record
  takes the new checksum. Files whose off-grid candles were left out are listed.
- **Against REST**: the stored range (or ``sample`` pages of 1,000 candles per symbol) is
  fetched over REST and compared candle for candle; with ``repair`` the exchange's candles are
  written where they differ or are missing.

A difference is a candle the two sides disagree on: ``changed`` (some field differs),
``missing`` (the source has it, the lake has not) or ``extra`` (the lake has it, the source has
not). Nothing is written without ``repair``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from cryptolake.errors import CryptolakeError, ExchangeUnavailable, LakeError
from cryptolake.lake import Lake, month_bounds
from cryptolake.lake.meta import LakeMeta
from cryptolake.schema import KLINE_COLUMNS, Interval
from cryptolake.sources.archive import ArchiveFile, ArchiveFileError, BinanceArchive
from cryptolake.sources.base import KlineSource, SourceRecord
from cryptolake.sources.klines import table_to_frame
from cryptolake.timeutils import iso, to_ms

Against = Literal["archive", "rest"]
_VALUES = [c for c in KLINE_COLUMNS if c != "open_time"]


@dataclass(frozen=True)
class Difference:
    """One candle the lake and the source disagree on."""

    symbol: str
    open_time: str  # ISO UTC
    kind: str  # "changed", "missing" (not in the lake) or "extra" (only in the lake)
    fields: tuple[str, ...] = ()
    lake: dict[str, Any] | None = None
    source: dict[str, Any] | None = None
    file: str = ""


@dataclass
class FileCheck:
    """One archive file merged into the lake, checked against the archive's checksum now."""

    symbol: str
    month: str
    file: str
    merged_sha256: str
    current_sha256: str = ""
    status: str = "unchanged"  # unchanged, reuploaded, missing (no longer published), error
    differences: int = 0
    repaired: int = 0
    off_grid: int = 0
    note: str = ""


@dataclass
class VerifyReport:
    """What :func:`verify` found."""

    against: str
    interval: str
    symbols: list[str] = field(default_factory=list)
    candles_compared: int = 0
    files: list[FileCheck] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    repaired: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no candle differs and nothing failed (repaired differences still count; a
        re-uploaded file whose candles are all the same is no difference)."""
        return not self.differences and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "against": self.against,
            "interval": self.interval,
            "symbols": self.symbols,
            "ok": self.ok,
            "candles_compared": self.candles_compared,
            "files_checked": len(self.files),
            "files_reuploaded": sum(f.status == "reuploaded" for f in self.files),
            "differences": [asdict(d) for d in self.differences],
            "files": [asdict(f) for f in self.files],
            "repaired": self.repaired,
            "errors": self.errors,
        }


def verify(
    lake: Lake | str | Path,
    interval: str,
    symbols: Sequence[str] | None = None,
    *,
    against: Against = "archive",
    since_ms: int | None = None,
    until_ms: int | None = None,
    archive: BinanceArchive | None = None,
    client: KlineSource | None = None,
    sample: int | None = None,
    repair: bool = False,
    seed: int = 0,
    now_ms: int | None = None,
) -> VerifyReport:
    """Compare the stored candles of ``symbols`` (default: all stored) opening in
    ``[since_ms, until_ms)`` with the archive (``archive`` needed) or REST (``client``
    needed; ``sample``: that many random 1,000-candle pages per symbol instead of the whole
    range). ``repair`` writes the source's candles where they differ, under the writer lock.

    Raises:
        LakeError: the lake does not exist.
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    if not lake.exists():
        raise LakeError(f"no lake at {lake.location}")
    grid = Interval(interval)
    stored = lake.symbols(interval)
    chosen = [s for s in (symbols if symbols is not None else stored) if s in stored]
    report = VerifyReport(against, interval, chosen)
    meta = LakeMeta(lake.storage)
    if against == "archive":
        if archive is None:
            raise ValueError("verifying against the archive needs an archive client")
        for symbol in chosen:
            _verify_archive(lake, meta, grid, symbol, since_ms, until_ms, archive, repair, report, now_ms)
    else:
        if client is None:
            raise ValueError("verifying against REST needs a client")
        end = grid.floor(client.sync_clock())  # only closed candles
        if until_ms is not None:
            end = min(end, until_ms)
        rng = random.Random(seed)
        for symbol in chosen:
            _verify_rest(lake, grid, symbol, since_ms, end, client, sample, rng, repair, report)
    return report


def _verify_archive(
    lake: Lake,
    meta: LakeMeta,
    grid: Interval,
    symbol: str,
    since_ms: int | None,
    until_ms: int | None,
    archive: BinanceArchive,
    repair: bool,
    report: VerifyReport,
    now_ms: int | None,
) -> None:
    records = meta.sources(grid.name, [symbol]).filter(pl.col("source") == "archive")
    todo = []
    for row in records.iter_rows(named=True):
        lo, hi = month_bounds(row["month"])
        if (since_ms is not None and hi <= since_ms) or (until_ms is not None and lo >= until_ms):
            continue
        file = ArchiveFile.from_key(row["file"], grid.name)
        check = FileCheck(
            symbol, row["month"], row["file"], row["sha256"], off_grid=row["off_grid"], note=row["note"]
        )
        report.files.append(check)
        todo.append((row, file, check))

    unreachable: list[str] = []  # once the archive cannot be reached, the other files are not asked

    def current(item: tuple[dict[str, Any], ArchiveFile, FileCheck]) -> None:
        _, file, check = item
        if unreachable:
            check.status, check.note = "error", "not checked: the archive cannot be reached"
            return
        try:
            check.current_sha256 = archive.checksum(file)
        except ArchiveFileError as exc:
            check.status = "missing" if exc.reason == "missing" else "error"
            check.note = str(exc)
        except ExchangeUnavailable as exc:
            check.status, check.note = "error", "not checked: the archive cannot be reached"
            if not unreachable:
                unreachable.append(str(exc))
        except CryptolakeError as exc:
            check.status = "error"
            check.note = f"{file.key}: {exc}"

    if todo:  # one small request per file, concurrently
        with ThreadPoolExecutor(min(len(todo), archive.concurrency)) as pool:
            list(pool.map(current, todo))
    if unreachable:
        skipped = sum(check.status == "error" for _, _, check in todo)
        report.errors.append(f"{unreachable[0]}: {skipped} archive files of {symbol} not checked")
    for row, file, check in todo:
        if check.status == "error" and not unreachable:
            report.errors.append(check.note)
        if check.status != "unchanged":
            continue
        if check.current_sha256 == check.merged_sha256:
            continue
        check.status = "reuploaded"
        try:
            rows = archive.read(file)
        except ArchiveFileError as exc:
            check.note = str(exc)
            report.errors.append(str(exc))
            continue
        fresh = table_to_frame(rows.table)
        a, b = max(file.lo, since_ms or file.lo), min(file.hi, until_ms or file.hi)
        stored = _stored(lake, grid, symbol, a, b)
        fresh = fresh.filter(
            (pl.col("open_time").dt.epoch("ms") >= a) & (pl.col("open_time").dt.epoch("ms") < b)
        )
        diffs = _compare(symbol, stored, fresh, file.key)
        # An archive file does not hold the candles after its publication, nor off-grid ones:
        # only the candles it has are compared with the lake's.
        diffs = [d for d in diffs if d.kind != "extra"]
        check.differences = len(diffs)
        report.candles_compared += fresh.height
        report.differences.extend(diffs)
        if repair:
            keys = {d.open_time for d in diffs}
            patch = _only(fresh, keys)
            with lake.writer_lock():
                refused = (
                    lake.write_klines(grid.name, symbol, patch, source="verify").rows_refused
                    if patch.height
                    else 0
                )
                meta.record_sources(
                    grid.name,
                    symbol,
                    row["month"],
                    [
                        SourceRecord(
                            "archive",
                            file.key,
                            rows.sha256,
                            fresh.height,
                            rows.off_grid,
                            "re-uploaded; repaired",
                        )
                    ],
                    now_ms if now_ms is not None else _now(),
                )
            check.repaired = patch.height - refused  # a candle the rules refuse is not a repair
            report.repaired += check.repaired


def _verify_rest(
    lake: Lake,
    grid: Interval,
    symbol: str,
    since_ms: int | None,
    end_ms: int,
    client: KlineSource,
    sample: int | None,
    rng: random.Random,
    repair: bool,
    report: VerifyReport,
) -> None:
    bounds = lake.bounds(grid.name, symbol)
    if bounds is None:
        return
    lo = max(bounds[0], grid.ceil(since_ms)) if since_ms is not None else bounds[0]
    hi = min(grid.next_open(bounds[1]), end_ms)
    if lo >= hi:
        return
    month = Interval("1M")  # the whole range, a month at a time (bounded memory)
    edges = [lo, *(t for t in month.open_times(month.next_open(month.floor(lo)), hi)), hi]
    ranges = [(a, b) for a, b in zip(edges, edges[1:], strict=False) if a < b]
    if sample is not None:
        pages = [
            (grid.add(lo, i * 1000), min(hi, grid.add(lo, (i + 1) * 1000)))
            for i in range(-(-grid.count(lo, hi) // 1000))
        ]
        ranges = sorted(rng.sample(pages, min(sample, len(pages))))
    for a, b in ranges:
        fresh = table_to_frame(client.get_klines_range(symbol, grid.name, a, b, as_arrow=True))
        stored = _stored(lake, grid, symbol, a, b)
        diffs = _compare(symbol, stored, fresh, "")
        report.candles_compared += max(fresh.height, stored.height)
        report.differences.extend(diffs)
        if repair:
            keys = {d.open_time for d in diffs if d.kind != "extra"}
            patch = _only(fresh, keys)
            if patch.height:
                with lake.writer_lock():
                    written = lake.write_klines(grid.name, symbol, patch, source="verify")
                report.repaired += patch.height - written.rows_refused  # refused: quarantined, not a repair


def _stored(lake: Lake, grid: Interval, symbol: str, lo: int, hi: int) -> pl.DataFrame:
    frame = lake.scan(grid.name, [symbol], lo, hi).collect()
    return frame.drop([c for c in frame.columns if c not in KLINE_COLUMNS]).sort("open_time")


def _compare(symbol: str, stored: pl.DataFrame, fresh: pl.DataFrame, file: str) -> list[Difference]:
    """The candles the two frames (the lake's, the source's) disagree on, by open time."""
    joined = stored.select(KLINE_COLUMNS).join(
        fresh.select(KLINE_COLUMNS), on="open_time", how="full", suffix="_src", coalesce=True
    )
    # Only the rows that differ (a side missing, or a field not equal) are looked at one by one.
    differs = pl.any_horizontal(pl.col(c).ne_missing(pl.col(c + "_src")) for c in _VALUES)
    out: list[Difference] = []
    for row in joined.filter(differs).sort("open_time").iter_rows(named=True):
        lake_row = {c: row[c] for c in _VALUES}
        src_row = {c: row[c + "_src"] for c in _VALUES}
        t = iso(_ms(row["open_time"]))
        if all(v is None for v in src_row.values()):
            out.append(Difference(symbol, t, "extra", lake=_plain(lake_row), file=file))
        elif all(v is None for v in lake_row.values()):
            out.append(Difference(symbol, t, "missing", source=_plain(src_row), file=file))
        else:
            fields = tuple(c for c in _VALUES if lake_row[c] != src_row[c])
            if fields:
                out.append(
                    Difference(
                        symbol, t, "changed", fields,
                        {c: _plain_value(lake_row[c]) for c in fields},
                        {c: _plain_value(src_row[c]) for c in fields}, file,
                    )
                )  # fmt: skip
    return out


def _only(frame: pl.DataFrame, open_times: set[str]) -> pl.DataFrame:
    """The rows of ``frame`` whose open time (as ISO text) is in ``open_times``."""
    wanted = [_ms(t) for t in open_times]
    return frame.filter(pl.col("open_time").dt.epoch("ms").is_in(wanted))


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain_value(v) for k, v in row.items()}


def _plain_value(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    return value


def _ms(value: Any) -> int:
    return to_ms(value)


def _now() -> int:
    return int(time.time() * 1000)


__all__ = ["Difference", "FileCheck", "VerifyReport", "verify"]
