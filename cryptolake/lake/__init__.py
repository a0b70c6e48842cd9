"""The Parquet lake: layout (pure paths), merge (pure polars) and the on-disk store.

The lake layer knows nothing about any exchange client; it imports only ``cryptolake.schema``,
``cryptolake.timeutils`` and ``cryptolake.errors``.
"""

from __future__ import annotations

from cryptolake.lake.layout import (
    interval_dir,
    is_lake,
    klines_glob,
    meta_dir,
    month_bounds,
    month_of,
    partition_dir,
    partition_path,
    validate_symbol,
)
from cryptolake.lake.merge import dedupe_klines, merge_klines, normalize_klines, split_by_month
from cryptolake.lake.store import (
    ARROW_SCHEMA,
    Lake,
    PartitionStats,
    WriteResult,
    stream_files,
    write_stream_file,
)

__all__ = [
    "ARROW_SCHEMA",
    "Lake",
    "PartitionStats",
    "WriteResult",
    "dedupe_klines",
    "interval_dir",
    "is_lake",
    "klines_glob",
    "merge_klines",
    "meta_dir",
    "month_bounds",
    "month_of",
    "normalize_klines",
    "partition_dir",
    "partition_path",
    "split_by_month",
    "stream_files",
    "validate_symbol",
    "write_stream_file",
]
