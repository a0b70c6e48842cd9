"""Quarantine: the candles the lake refused to store (:func:`cryptolake.rules.screen`), kept
with the rule each broke and the source it came from, so nothing an exchange sent is lost.

Layout: ``_meta/quarantine/exchange=E/interval=I/symbol=S/<digest>.parquet``, one file per batch
that had refused rows. The file's name is a digest of its candles, rules and source: the same
bad candles sent again (each run asks again for what is missing) are not stored twice. Written
through the lake's storage (an atomic put, on a folder or in a bucket); nothing is read back
while collecting.
"""

from __future__ import annotations

import hashlib
import io

import polars as pl
import pyarrow.parquet as pq

from cryptolake.lake import layout
from cryptolake.lake.storage import Storage
from cryptolake.rules import DETAIL, RULE
from cryptolake.schema import KLINE_COLUMNS, KLINE_SCHEMA

QUARANTINE_DIR = f"{layout.META_DIR}/quarantine"
#: The columns of a quarantined candle, in file order: where and why, then the candle as sent.
QUARANTINE_COLUMNS = (
    "exchange",
    "interval",
    "symbol",
    "source",
    RULE,
    DETAIL,
    "quarantined_at",
    *KLINE_COLUMNS,
)


def quarantine_prefix(exchange: str, interval: str | None = None, symbol: str | None = None) -> str:
    prefix = f"{QUARANTINE_DIR}/exchange={exchange}/"
    if interval is not None:
        prefix += f"interval={interval}/"
        if symbol is not None:
            prefix += f"symbol={symbol}/"
    return prefix


def quarantine(
    storage: Storage,
    exchange: str,
    interval: str,
    symbol: str,
    refused: pl.DataFrame,
    source: str,
    now_ms: int,
) -> str | None:
    """Store ``refused`` (candles with ``rule`` and ``detail``) for ``symbol``; returns the
    object's path, or None if there was nothing to store or it is stored already."""
    if refused.is_empty():
        return None
    rows = refused.select(
        pl.lit(exchange).alias("exchange"),
        pl.lit(interval).alias("interval"),
        pl.lit(symbol).alias("symbol"),
        pl.lit(source).alias("source"),
        RULE,
        DETAIL,
        pl.lit(now_ms).cast(pl.Datetime("ms", "UTC")).alias("quarantined_at"),
        *KLINE_COLUMNS,
    )
    digest = hashlib.sha256(rows.drop("quarantined_at").write_ipc(None).getvalue()).hexdigest()[:24]
    path = f"{quarantine_prefix(exchange, interval, symbol)}{digest}.parquet"
    if storage.head(path) is not None:
        return None
    buffer = io.BytesIO()
    pq.write_table(rows.to_arrow(), buffer, compression="zstd")
    storage.put(path, buffer.getvalue())
    return path


def read_quarantine(
    storage: Storage,
    exchange: str,
    interval: str | None = None,
    symbols: list[str] | None = None,
) -> pl.DataFrame:
    """Every quarantined candle of ``exchange`` (optionally of one interval and some symbols),
    sorted by interval, symbol, open time and rule; a candle refused in several batches once."""
    frames = []
    wanted = None if symbols is None else set(symbols)
    for info in storage.list(quarantine_prefix(exchange, interval)):
        if not info.path.endswith(".parquet"):
            continue
        symbol = next((p[7:] for p in info.path.split("/") if p.startswith("symbol=")), None)
        if wanted is not None and symbol not in wanted:
            continue
        read = storage.read(info.path)
        if read is not None:
            frames.append(pl.read_parquet(io.BytesIO(read[0])))
    if not frames:
        return empty_quarantine()
    rows = pl.concat(frames, how="vertical_relaxed")
    key = [c for c in QUARANTINE_COLUMNS if c != "quarantined_at"]
    return (
        rows.sort("quarantined_at")
        .unique(subset=key, keep="first", maintain_order=True)
        .sort("interval", "symbol", "open_time", RULE)
        .select(QUARANTINE_COLUMNS)
    )


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "exchange": pl.String(),
            "interval": pl.String(),
            "symbol": pl.String(),
            "source": pl.String(),
            RULE: pl.String(),
            DETAIL: pl.String(),
            "quarantined_at": pl.Datetime("ms", "UTC"),
            **KLINE_SCHEMA,
        }
    )
