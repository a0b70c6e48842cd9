"""Partition commits without a lock: read, merge, conditional put, and on a lost race again.

On object storage there is no lock file every writer can see; the store's conditional put is
the coordination. :func:`commit_partition` reads a partition's object and the version it read,
merges the incoming candles into it (incoming rows replace stored ones with the same open time,
as :meth:`cryptolake.lake.Lake.write_partition` does), and puts the result only if the object is
still that version (``If-Match``; ``If-None-Match: *`` for a new partition). When another writer
got there first, it reads the new version and merges again, so two writers of one partition
never lose each other's candles. A writer killed at any moment leaves the old object or the new
one (a ``PUT`` is all or nothing), and nothing to clean up.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from cryptolake.errors import LakeError
from cryptolake.lake.layout import month_bounds
from cryptolake.lake.storage import Storage, VersionConflict
from cryptolake.lake.store import (
    ARROW_SCHEMA,
    _first_open,
    _footer_sha256,
    _last_open,
    _merge_into,
    _off_grid_rows,
    _tidy,
    _unique_sorted,
    footer_metadata,
)
from cryptolake.schema import Interval

#: The user-metadata key of a partition object's commit stamp (:func:`commit_stamp`).
COMMIT_METADATA = "cryptolake-commit"
#: How many lost races one commit survives before it gives up (each retry re-reads and re-merges).
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class CommitResult:
    """What a commit did: candles added and changed, and how many races it lost on the way."""

    added: int
    changed: int
    written: bool
    conflicts: int


def commit_partition(
    storage: Storage, key: str, month: str, candles: pa.Table, interval: str | None = None
) -> CommitResult:
    """Merge ``candles`` (all of ``month``) into the partition object ``key``. With ``interval``,
    the footer records it, the off-grid rows and the row count (what gap detection trusts).

    Raises:
        ValueError: a candle is not of ``month``.
        LakeError: the stored object is not a candle partition, or the store failed, or
            :data:`MAX_ATTEMPTS` races were lost in a row.
    """
    fresh = _unique_sorted(candles.select(ARROW_SCHEMA.names).cast(ARROW_SCHEMA))
    low, high = month_bounds(month)
    if fresh.num_rows and not (low <= _first_open(fresh) and _last_open(fresh) < high):
        raise ValueError(f"candles outside {month} given for {key}")
    conflicts = 0
    for attempt in range(MAX_ATTEMPTS):
        read = storage.read(key)
        stored, version = (None, None) if read is None else (_decode(key, read[0], month), read[1])
        merged, added, changed = _merge_into(stored, fresh)
        if stored is not None and not added and not changed:
            return CommitResult(0, 0, False, conflicts)
        try:
            data = _encode(merged, interval)
            storage.put_if(key, data, version, {COMMIT_METADATA: commit_stamp(key, data)})
            return CommitResult(added, changed, True, conflicts)
        except VersionConflict:
            conflicts += 1
            time.sleep(min(0.5, 0.005 * 2**attempt) * random.random())  # let the winner finish
    raise LakeError(f"gave up committing {key} after {MAX_ATTEMPTS} lost races with other writers")


def commit_stamp(key: str, data: bytes) -> str:
    """What a commit records in the object's user metadata: the SHA-256 of its key and its
    Parquet footer. Only the object cryptolake committed at that key matches: another tool's
    rewrite (a new footer, and no such metadata unless copied) or a copy to another partition
    (another key) does not, and is then read in full rather than trusted from its footer."""
    return hashlib.sha256(f"{key}\n{_footer_sha256(data)}".encode()).hexdigest()


def _decode(key: str, data: bytes, month: str) -> pa.Table:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise LakeError(f"cannot read Parquet partition {key}: {exc}") from None
    if not table.schema.remove_metadata().equals(ARROW_SCHEMA):
        raise LakeError(f"partition {key} does not match the candle schema")
    return _tidy(table.replace_schema_metadata(None), key, month)  # type: ignore[arg-type]


def _encode(table: pa.Table, interval: str | None) -> bytes:
    if interval is not None:
        off_grid = _off_grid_rows(table, Interval(interval))
        table = table.replace_schema_metadata(footer_metadata(interval, off_grid, table.num_rows))
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd", write_statistics=True, use_dictionary=False)
    return bytes(buffer.getvalue().to_pybytes())
