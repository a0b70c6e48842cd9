"""Data quality: the rules every candle is checked against, and the report over a stored lake.

:func:`find_problems` applies every rule to one symbol's candles of one interval (a polars
frame in the lake's schema, sorted or not) and returns one row per finding: ``symbol``,
``interval``, ``open_time``, ``rule``, ``severity`` and ``detail`` (the values that broke it).

Errors (a candle that cannot be trusted at all):

- ``duplicate_key``: an open time stored more than once;
- ``off_grid``: an open time off the interval's grid;
- ``close_time``: a close time that is not the next open time minus 1 ms;
- ``time_unit``: an open or close time not plausible in milliseconds (before 2009, or later than
  the clock allows: a microsecond or second value in a millisecond field);
- ``non_positive_price``: a price that is zero, negative, infinite or not a number;
- ``ohlc_order``: ``low <= min(open, close)`` or ``max(open, close) <= high`` broken;
- ``negative_volume``: a negative volume, quote volume, taker volume or trade count;
- ``not_closed``: a candle whose close time has not passed yet.

Warnings (kept, and reported):

- ``taker_exceeds_volume``: ``taker_buy_base_volume > volume``;
- ``zero_volume_mismatch``: no volume but trades, or prices that differ;
- ``price_spike``: a close whose log return from both neighbours is beyond ``spike_mads``
  robust deviations (median absolute deviation over ``spike_window`` candles): a jump that
  neither neighbouring candle confirms;
- ``zero_volume_run``: ``zero_volume_hours`` or more of candles in a row without volume.

:func:`check_lake` runs them over what a lake stores, one partition at a time (bounded memory).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import polars as pl

from cryptolake.errors import LakeError
from cryptolake.gaps import drop_report_rows
from cryptolake.lake import Lake
from cryptolake.lake.layout import META_DIR
from cryptolake.lake.storage import update_object
from cryptolake.rules import ERROR_RULES as ERROR_RULES  # the report's errors are the commit's
from cryptolake.rules import PRICES, Condition, row_conditions, with_times
from cryptolake.schema import HOUR_MS, KLINE_SCHEMA, Interval

Severity = Literal["error", "warning"]
WARNING_RULES = ("taker_exceeds_volume", "zero_volume_mismatch", "price_spike", "zero_volume_run")
#: Marks the rows being checked (the others are context around them).
_CORE = pl.lit(True).alias("_core")
FINDING_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "interval": pl.String(),
        "open_time": pl.Datetime("ms", "UTC"),
        "rule": pl.String(),
        "severity": pl.String(),
        "detail": pl.String(),
    }
)
#: The least median absolute log return a spike is measured against (0.1%): over a flat stretch
#: the median is zero, and any move would otherwise be "infinitely many" deviations.
MAD_FLOOR = 1e-3


@dataclass(frozen=True)
class QualityRules:
    """The thresholds of the warning rules (setting section ``[quality]``)."""

    spike_mads: float = 15.0
    spike_window: int = 240
    zero_volume_hours: float = 24.0


def find_problems(
    candles: pl.DataFrame,
    symbol: str,
    interval: str,
    now_ms: int,
    rules: QualityRules = QualityRules(),
) -> pl.DataFrame:
    """Every finding of every rule in one symbol's candles of ``interval`` (see the module
    docstring), sorted by open time and rule; empty if the candles are sound."""
    return _problems(candles, symbol, Interval(interval), now_ms, rules, runs=True)


def _problems(
    candles: pl.DataFrame, symbol: str, grid: Interval, now_ms: int, rules: QualityRules, *, runs: bool
) -> pl.DataFrame:
    """:func:`find_problems`; with a boolean ``_core`` column, only the findings of its rows
    (the others are context: the neighbours a spike is judged against); ``runs``: with the
    ``zero_volume_run`` rule."""
    if candles.is_empty():
        return pl.DataFrame(schema=FINDING_SCHEMA)
    frame = with_times(candles).sort("_open")
    if "_core" not in frame.columns:
        frame = frame.with_columns(_CORE)
    found = [
        _flag(frame, "duplicate_key", "error", pl.col("_open").is_duplicated(), ["_open"]),
        *(_flag(frame, c.rule, "error", c.broken, list(c.shown)) for c in row_conditions(grid, now_ms)),
        _flag(
            frame,
            "taker_exceeds_volume",
            "warning",
            pl.col("taker_buy_base_volume") > pl.col("volume") * (1 + 1e-9) + 1e-12,
            ["taker_buy_base_volume", "volume"],
        ),
        _flag(
            frame,
            "zero_volume_mismatch",
            "warning",
            (pl.col("volume") == 0)
            & ((pl.col("trades") > 0) | (pl.min_horizontal(*PRICES) != pl.max_horizontal(*PRICES))),
            ["volume", "trades", *PRICES],
        ),
        _spikes(frame, rules),
    ]
    if runs:
        quiet = _ZeroVolumeRuns(grid, rules)
        found += [quiet.over(frame), quiet.finish()]
    return _labelled(pl.concat(found).filter(pl.col("_core")).drop("_core"), symbol, grid)


def _labelled(findings: pl.DataFrame, symbol: str, grid: Interval) -> pl.DataFrame:
    """Findings with their symbol and interval, in the report's columns and order."""
    return (
        findings.with_columns(pl.lit(symbol).alias("symbol"), pl.lit(grid.name).alias("interval"))
        .select(FINDING_SCHEMA.names())
        .cast({"open_time": FINDING_SCHEMA["open_time"]})
        .sort("open_time", "rule")
    )


def _flag(
    frame: pl.DataFrame, rule: str, severity: Severity, broken: pl.Expr, shown: list[str]
) -> pl.DataFrame:
    """The rows where ``broken`` holds, as findings whose detail names the ``shown`` values."""
    detail = Condition(rule, broken, tuple(shown)).detail()
    return _findings(frame.filter(broken.fill_null(False)), rule, severity, detail)


def _findings(hits: pl.DataFrame, rule: str, severity: Severity, detail: pl.Expr) -> pl.DataFrame:
    """``hits`` (with ``_open``, and ``_core`` if it has one) as findings of ``rule``; symbol
    and interval are filled in later."""
    return hits.select(
        pl.lit("").alias("symbol"),
        pl.lit("").alias("interval"),
        pl.from_epoch("_open", time_unit="ms").dt.replace_time_zone("UTC").alias("open_time"),
        pl.lit(rule).alias("rule"),
        pl.lit(severity).alias("severity"),
        detail.alias("detail"),
        *([pl.col("_core")] if "_core" in hits.columns else []),
    )


def _spikes(frame: pl.DataFrame, rules: QualityRules) -> pl.DataFrame:
    """Closes that jump away from both neighbours by more than ``spike_mads`` robust deviations
    of the recent log returns (median absolute deviation, scaled to a standard deviation)."""
    window = max(5, rules.spike_window)
    returns = frame.select(
        "_open",
        "_core",
        "close",
        pl.col("close").log().diff().alias("_back"),
        (pl.col("close").log() - pl.col("close").log().shift(-1)).alias("_ahead"),
    )

    def beyond(scale: pl.Expr) -> pl.Expr:
        return (
            (pl.col("_back").abs() > rules.spike_mads * scale)
            & (pl.col("_ahead").abs() > rules.spike_mads * scale)
            & (pl.col("_back").sign() == pl.col("_ahead").sign())  # up then down, or down then up
        ).fill_null(False)

    # A flat stretch has no deviation at all: a floor of 0.1% keeps a tick from being a spike. The
    # floor alone already rules out almost every candle, so the rolling median (most of the
    # rule's cost) is only computed where some candle could be a spike.
    if not returns.select(beyond(pl.lit(1.4826 * MAD_FLOOR)).any()).item():
        return _findings(returns.clear(), "price_spike", "warning", pl.lit(""))
    returns = returns.with_columns(
        pl.col("_back").abs().rolling_median(window, min_samples=5, center=True).alias("_mad"),
    )
    hits = returns.filter(beyond(1.4826 * pl.col("_mad").clip(lower_bound=MAD_FLOOR)))
    detail = pl.concat_str(
        [
            pl.lit("close="),
            pl.col("close").cast(pl.String),
            pl.lit(" return="),
            pl.col("_back").round(6).cast(pl.String),
            pl.lit(" then="),
            (-pl.col("_ahead")).round(6).cast(pl.String),
        ]
    )
    return _findings(hits, "price_spike", "warning", detail)


# -- over a stored lake ------------------------------------------------------------------------


@dataclass
class QualityReport:
    """The findings of :func:`check_lake` and what was checked."""

    interval: str
    findings: pl.DataFrame
    symbols: int
    candles: int

    @property
    def errors(self) -> int:
        return int((self.findings["severity"] == "error").sum())

    @property
    def warnings(self) -> int:
        return int((self.findings["severity"] == "warning").sum())

    def to_dicts(self) -> list[dict[str, Any]]:
        """One dict per finding, the open time as text (whole seconds) and as ``open_time_ms``."""
        rows = self.findings.with_columns(
            pl.col("open_time").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            pl.col("open_time").dt.epoch("ms").alias("open_time_ms"),
        )
        return list(rows.iter_rows(named=True))


def check_lake(
    lake: Lake,
    interval: str,
    now_ms: int,
    symbols: Iterable[str] | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    rules: QualityRules = QualityRules(),
    *,
    workers: int = 2,
) -> QualityReport:
    """Every rule over what ``lake`` stores for ``interval``, optionally for some symbols and
    ``[since, until)``.

    The partitions to read come from their footers (months outside the range are never
    opened). Each symbol is read a month at a time, with the ``spike_window`` candles around
    the month for the spike rule and the run of zero volume carried over from the months
    before, so memory holds about two months of ``workers`` symbols, however long the history.

    Raises:
        LakeError: there is no lake there, or a partition cannot be read.
    """
    if not lake.exists():
        raise LakeError(f"no lake at {lake.location}: collect into it first, or check the path")
    grid = Interval(interval)
    wanted = lake.symbols(interval) if symbols is None else list(dict.fromkeys(symbols))
    check = partial(_check_symbol, lake, grid, now_ms, since_ms, until_ms, rules)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(check, wanted))
    findings = pl.concat([found for found, _ in results]) if results else pl.DataFrame(schema=FINDING_SCHEMA)
    return QualityReport(
        interval,
        findings.with_columns(pl.lit(lake.exchange).alias("exchange")).select(
            "exchange", *FINDING_SCHEMA.names()
        ),
        len(wanted),
        sum(count for _, count in results),
    )


def _check_symbol(
    lake: Lake,
    grid: Interval,
    now_ms: int,
    since_ms: int | None,
    until_ms: int | None,
    rules: QualityRules,
    symbol: str,
) -> tuple[pl.DataFrame, int]:
    """One symbol's findings and how many candles were checked (see :func:`check_lake`)."""
    stats = [s for s in lake.partition_stats(grid.name, symbol) if s.rows]
    months = sorted({s.month for s in stats})
    checked_months = {
        s.month for s in stats if _overlaps(s.first_open_ms, s.last_open_ms, since_ms, until_ms)
    }
    context = max(5, rules.spike_window) + 2
    runs = _ZeroVolumeRuns(grid, rules)
    found: list[pl.DataFrame] = []
    checked = 0
    read: dict[int, pl.DataFrame] = {}  # the months around the one checked, each read once

    def month(i: int) -> pl.DataFrame:
        if not 0 <= i < len(months):
            return pl.DataFrame(schema=KLINE_SCHEMA)
        if i not in read:
            read[i] = lake.read_partition(grid.name, symbol, months[i])
        return read[i]

    in_range = _in_range(since_ms, until_ms)
    for i, name in enumerate(months):
        if name not in checked_months:
            continue
        for old in [k for k in read if k < i - 1]:
            del read[old]
        # The candles around the range count for the spike rule's window, not as findings.
        current = month(i).with_columns(in_range.alias("_core"))
        core = current.filter("_core")
        checked += core.height
        parts = [month(i - 1).tail(context).with_columns(pl.lit(False).alias("_core")), current]
        parts.append(month(i + 1).head(context).with_columns(pl.lit(False).alias("_core")))
        found.append(_problems(pl.concat(parts), symbol, grid, now_ms, rules, runs=False))
        found.append(_labelled(runs.over(with_times(core.drop("_core")).sort("_open")), symbol, grid))
    found.append(_labelled(runs.finish(), symbol, grid))
    return pl.concat(found).sort("open_time", "rule", maintain_order=True), checked


def _in_range(since_ms: int | None, until_ms: int | None) -> pl.Expr:
    opened = pl.col("open_time").dt.epoch("ms")
    keep = pl.lit(True)
    if since_ms is not None:
        keep = keep & (opened >= since_ms)
    if until_ms is not None:
        keep = keep & (opened < until_ms)
    return keep


def _overlaps(first: int | None, last: int | None, since_ms: int | None, until_ms: int | None) -> bool:
    if first is None or last is None:
        return True  # no footer range: read it
    return (since_ms is None or last >= since_ms) and (until_ms is None or first < until_ms)


class _ZeroVolumeRuns:
    """The ``zero_volume_run`` rule: the first candle of each run of ``zero_volume_hours`` or
    more of candles in a row without volume. Given months in order, a run that goes on past a
    month's end is carried into the next, and reported once."""

    def __init__(self, grid: Interval, rules: QualityRules) -> None:
        self.needed = max(1, int(rules.zero_volume_hours * HOUR_MS // grid.nominal_ms))
        self.start: int | None = None  # open time of the carried run's first candle
        self.length = 0

    def over(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The runs that ended in ``frame`` (sorted, with ``_open``); one still going is carried."""
        runs = (
            frame.select("_open", (pl.col("volume") == 0).fill_null(False).alias("_zero"))
            .with_columns(
                (pl.col("_zero") != pl.col("_zero").shift(1)).fill_null(True).cum_sum().alias("_run")
            )
            .group_by("_run", maintain_order=True)
            .agg(pl.col("_zero").first(), pl.col("_open").min(), pl.len().alias("_candles"))
        )
        done: list[tuple[int, int]] = []
        for position, (zero, first_open, candles) in enumerate(
            runs.select("_zero", "_open", "_candles").iter_rows()
        ):
            if not zero:
                self._close(done)
            elif position == 0 and self.start is not None:
                self.length += candles  # the carried run goes on
            else:
                self._close(done)
                self.start, self.length = first_open, candles
        return self._as_findings(done)

    def finish(self) -> pl.DataFrame:
        """The carried run, if it is long enough: nothing follows."""
        done: list[tuple[int, int]] = []
        self._close(done)
        return self._as_findings(done)

    def _close(self, done: list[tuple[int, int]]) -> None:
        if self.start is not None and self.length >= self.needed:
            done.append((self.start, self.length))
        self.start, self.length = None, 0

    @staticmethod
    def _as_findings(done: list[tuple[int, int]]) -> pl.DataFrame:
        hits = pl.DataFrame(done, schema={"_open": pl.Int64, "_candles": pl.Int64}, orient="row")
        detail = pl.lit("candles=") + pl.col("_candles").cast(pl.String)
        return _findings(hits.with_columns(_CORE), "zero_volume_run", "warning", detail)


# -- the latest report, for the ``quality`` view ----------------------------------------------

#: ``<lake>/_meta/quality.parquet``: the findings of the latest check of each symbol (the
#: ``quality`` view of :mod:`cryptolake.query`, which names the file too).
QUALITY_FILE = "quality.parquet"


def save_report(
    lake: Lake,
    report: QualityReport,
    symbols: list[str],
    since_ms: int | None,
    until_ms: int | None,
    checked_at_ms: int,
) -> None:
    """Store ``report`` as ``<lake>/_meta/quality.parquet`` (the DuckDB view ``quality``): the
    findings of the checked symbols in the checked range replace the ones stored for them."""
    fresh = report.findings.with_columns(
        pl.lit(checked_at_ms).cast(pl.Datetime("ms", "UTC")).alias("checked_at")
    )
    opened = pl.col("open_time").dt.epoch("ms")
    replaced = (
        (pl.col("exchange") == lake.exchange)
        & (pl.col("interval") == report.interval)
        & pl.col("symbol").is_in(symbols)
        & (opened >= since_ms if since_ms is not None else pl.lit(True))
        & (opened < until_ms if until_ms is not None else pl.lit(True))
    )

    def replace(data: bytes | None) -> bytes:
        frame = fresh
        if data is not None:
            try:
                old = pl.read_parquet(io.BytesIO(data))
                if old.schema == fresh.schema:
                    frame = pl.concat([old.filter(~replaced), fresh])
            except pl.exceptions.PolarsError:
                pass  # a torn or foreign report: the new one replaces it
        buffer = io.BytesIO()
        frame.sort("exchange", "interval", "symbol", "open_time", "rule").write_parquet(
            buffer, compression="zstd"
        )
        return buffer.getvalue()

    update_object(lake.storage, f"{META_DIR}/{QUALITY_FILE}", replace)


def marked_months(lake: Lake, interval: str) -> dict[tuple[str, str], str]:
    """``{(symbol, month): "error" | "warning"}`` from the stored report (the worst finding of
    each month), for ``coverage --png``; empty before the first ``cryptolake check``."""
    read = lake.storage.read(f"{META_DIR}/{QUALITY_FILE}")
    if read is None:
        return {}
    try:
        frame = pl.read_parquet(io.BytesIO(read[0]))
    except pl.exceptions.PolarsError as exc:
        raise LakeError(
            f"cannot read the quality report {lake.storage.url}/{META_DIR}/{QUALITY_FILE} ({exc}); move it aside"
        ) from exc
    worst = (
        frame.filter((pl.col("exchange") == lake.exchange) & (pl.col("interval") == interval))
        .group_by("symbol", pl.col("open_time").dt.strftime("%Y-%m").alias("month"))
        .agg((pl.col("severity") == "error").any().alias("errors"))
    )
    return {(sym, month): "error" if errors else "warning" for sym, month, errors in worst.iter_rows()}


def forget_findings(lake: Lake, interval: str, symbol: str) -> int:
    """Drop one symbol's findings from the stored report; returns how many went."""
    return drop_report_rows(lake, QUALITY_FILE, interval, symbol)
