"""Make a PostgreSQL table match the lake: incrementally and idempotently.

The lake stays the source of truth. :class:`PostgresLoader` keeps ``<schema>.<table>`` equal to
the lake's partitions of one interval, and sends only the partitions that changed since the
last sync.

**What was synced** is recorded in PostgreSQL itself, in ``<schema>.cryptolake_sync_state``:
one row per (table, exchange, interval, symbol, month) with the partition file's size and the
SHA-256 of its bytes (plus rows and first/last open time, for people). A partition is sent when
its fingerprint differs from the recorded one. Content hashes, not modification times, so a lake
that is copied or restored elsewhere syncs nothing it does not need to, and never misses a change.

**Transactions.** A partition's rows and its state row are always written by the same
transaction, so the record never claims rows that are not there:

- never synced (PostgreSQL has no record of it): up to :data:`BATCH_PARTITIONS` such partitions
  (or :data:`BATCH_ROWS` rows) share one transaction. One round trip deletes their month ranges
  (rows without a record, normally none; contiguous months of a symbol in one ``DELETE``) and
  inserts all their records, then one ``COPY`` sends all their rows straight into the table.
  PostgreSQL pays per COPY command, so this is what makes a first sync fast. If the server
  refuses the batch, it is rolled back and its partitions are sent one per transaction, so that
  only the partition at fault fails;
- changed: one transaction each: ``COPY`` into a temporary staging table, ``DELETE`` rows the
  lake no longer has, and one ``INSERT ... ON CONFLICT DO UPDATE`` that rewrites only rows whose
  values differ;
- gone from the lake: ``DELETE`` its rows and its record.

``COMMIT`` travels alone, so a loader killed at any instant leaves the partition or batch in
flight rolled back. Commits are asynchronous (``synchronous_commit = off``): a crash of the
server can lose the last few transactions, but always rows together with their records, so the
next sync sends them again. Before :meth:`PostgresLoader.sync` returns, one synchronous commit
flushes all of them.

The calling thread reads, decodes and encodes partitions (binary COPY, see
:mod:`cryptolake.loader.pgcopy`) a little ahead of ``workers`` sender threads, one per connection,
so that the loader's CPU work overlaps PostgreSQL's. A session advisory lock keeps two syncs into
the same table from interleaving. psycopg is imported lazily (``pip install 'cryptolake[postgres]'``),
and its errors are translated here, once, into :class:`~cryptolake.errors.LoaderError` classes.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptolake.config import redact_dsn
from cryptolake.errors import LakeError, LoaderError, LoaderRejected, LoaderUnavailable, MissingDependency
from cryptolake.lake import ARROW_SCHEMA, Lake, layout
from cryptolake.lake.storage import Storage
from cryptolake.loader import pgtables
from cryptolake.loader.pgtables import STATE_TABLE, Statements

if TYPE_CHECKING:
    import psycopg
    import pyarrow as pa

_LOCK_NAMESPACE = "cryptolake.loader:"
_APPLICATION_NAME = "cryptolake"
#: A batch of never-synced partitions (one transaction, one COPY) closes when it holds this many
#: partitions or this many rows, whichever comes first. Measured in ``bench/README.md``.
BATCH_PARTITIONS = 64
BATCH_ROWS = 50_000


@dataclass(frozen=True)
class PartitionFailure:
    """A partition that could not be synced this time (its previous state in PostgreSQL stays)."""

    symbol: str
    month: str
    error: str


@dataclass(frozen=True)
class SyncReport:
    """What :meth:`PostgresLoader.sync` did.

    Attributes:
        table: The target, ``schema.table``.
        interval: The kline interval synced.
        partitions_examined: Lake partitions in scope whose fingerprint was compared.
        partitions_sent: Partitions whose rows were sent (new or changed).
        partitions_skipped: Partitions unchanged since the last sync.
        partitions_removed: Partitions gone from the lake whose rows were deleted.
        rows_sent: Rows sent with COPY.
        rows_deleted: Rows deleted because the lake no longer has them.
        seconds: Wall time of the sync.
        failures: Partitions that failed; each was rolled back and is retried next time.
    """

    table: str
    interval: str
    partitions_examined: int
    partitions_sent: int
    partitions_skipped: int
    partitions_removed: int
    rows_sent: int
    rows_deleted: int
    seconds: float
    failures: tuple[PartitionFailure, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every partition in scope was synced."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "seconds": round(self.seconds, 3), "ok": self.ok}


@dataclass(frozen=True)
class _Partition:
    """One lake file; ``synced``: PostgreSQL has a record of it; ``changed``: it must be sent."""

    symbol: str
    month: str
    #: ``data.parquet`` and the partition's stream files, as lake storage paths.
    path: tuple[str, ...]
    synced: bool
    changed: bool


@dataclass
class _Outcome:
    partitions_sent: int = 0
    rows_sent: int = 0
    rows_deleted: int = 0
    failures: list[PartitionFailure] = field(default_factory=list)
    last_key: tuple[str, str] | None = None


@dataclass(frozen=True)
class _Job:
    """A partition ready to send: its binary COPY tuples (no header or trailer), its month range
    (exchange, interval, symbol, low, high) and its record values."""

    partition: _Partition
    rows: int
    tuples: bytes
    in_month: tuple[Any, ...]
    record: tuple[Any, ...]


class _ConnectionLost(Exception):
    def __init__(self, jobs: Sequence[_Job], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.partitions = [job.partition for job in jobs]
        self.cause = cause

    def in_flight(self) -> tuple[str, str]:
        """``while syncing ...`` and what was rolled back, for the message."""
        first, last = self.partitions[0], self.partitions[-1]
        if len(self.partitions) == 1:
            return f"{first.symbol} {first.month}", "that partition was"
        return (
            f"{len(self.partitions)} new partitions in one transaction, {first.symbol} {first.month} "
            f"to {last.symbol} {last.month}",
            "they were",
        )


class PostgresLoader:
    """Syncs a lake into one PostgreSQL table. Connects on creation; use as a context manager.

    Example::

        with PostgresLoader("data/lake", "postgresql://me@localhost/market") as loader:
            report = loader.sync("1h")

    Args:
        lake: The lake, or its root directory.
        dsn: A libpq connection string or URL; its password is never shown in messages.
        schema: Schema of the candle table (created if missing).
        table: The candle table (created if missing; an existing one must have a compatible shape).
        timescale: Make the table a TimescaleDB hypertable on ``open_time``. The server must
            offer the extension.
        workers: Connections that load partitions in parallel.
        connect_timeout_s: Give up connecting after this many seconds (unless the DSN says).

    Raises:
        MissingDependency: psycopg (the ``postgres`` extra) is not installed.
        LoaderUnavailable: The server cannot be reached or refused the login.
        LoaderError: The DSN is malformed.
    """

    def __init__(
        self,
        lake: Lake | str | Path,
        dsn: str,
        *,
        schema: str = "cryptolake",
        table: str = "klines",
        timescale: bool = False,
        workers: int = 2,
        connect_timeout_s: float = 10.0,
    ) -> None:
        pgtables.check_name("schema", schema)
        pgtables.check_name("table", table)
        if table == STATE_TABLE:
            raise LoaderError(f"table name {table!r} is reserved for the loader's own records")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.lake = lake if isinstance(lake, Lake) else Lake(lake)
        self.schema = schema
        self.table = table
        self.timescale = timescale
        self.workers = workers
        self._dsn = dsn
        self._connect_timeout_s = connect_timeout_s
        self._pg = _import_psycopg()
        self._staged: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._conn = self._connect()

    def __repr__(self) -> str:
        return f"PostgresLoader({self.lake!r}, {redact_dsn(self._dsn)!r}, target={self.target!r})"

    def __enter__(self) -> PostgresLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def target(self) -> str:
        """``schema.table``, as people read it."""
        return f"{self.schema}.{self.table}"

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    # -- the sync ------------------------------------------------------------------------

    def sync(
        self, interval: str = "1h", symbols: Sequence[str] | None = None, *, full: bool = False
    ) -> SyncReport:
        """Make the table match the lake's ``interval`` partitions (of ``symbols``, or all).

        Creates the schema, table and state table when missing. Sends new and changed
        partitions, deletes partitions gone from the lake, skips the rest.

        Args:
            interval: Kline interval, e.g. ``"1h"``.
            symbols: Lake symbols (``BTCUSDT``) to sync; None means every symbol in the lake.
            full: Send every partition, even those recorded as synced.

        Returns:
            Counts, timing and per-partition failures (a failed partition is rolled back).

        Raises:
            LoaderUnavailable: The connection was lost; the partitions in flight were rolled
                back and the next sync completes the work.
            LoaderRejected: The table exists with an incompatible shape (nothing is changed),
                TimescaleDB was asked for but is not available, or a statement failed.
            LoaderError: Another sync into the same table is running, or the lake has nothing
                in scope while the table does (a wrong ``--lake`` must not empty the table).
        """
        began = time.perf_counter()
        layout.interval_dir(interval)  # ValueError for an unknown interval
        wanted = None if symbols is None else sorted({layout.validate_symbol(s) for s in symbols})
        if not self.lake.exists():
            raise LoaderError(f"lake {self.lake.location} does not exist")
        conn = self._ensure_connection()
        with self._guard("sync"), self._sync_lock(conn):
            sql = self._prepare(conn)
            records = self._records(conn, interval, wanted)
            partitions = self._partitions(interval, wanted, records, full)
            if not partitions and records:
                raise LoaderError(
                    f"the lake at {self.lake.location} has no {self.lake.exchange} {interval} partitions"
                    f"{' for ' + ','.join(wanted) if wanted else ''}, but {self.target} holds "
                    f"{len(records)} synced ones; refusing to delete them all (check --lake)"
                )
            todo = [p for p in partitions if p.changed]
            gone = sorted(set(records) - {(p.symbol, p.month) for p in partitions})
            outcome = self._send_all(conn, sql, interval, todo)
            outcome.rows_deleted += sum(self._remove(conn, sql, interval, s, m) for s, m in gone)
            if outcome.last_key is not None:
                self._flush(conn, sql, interval, outcome.last_key)
        return SyncReport(
            table=self.target,
            interval=interval,
            partitions_examined=len(partitions),
            partitions_sent=outcome.partitions_sent,
            partitions_skipped=len(partitions) - len(todo),
            partitions_removed=len(gone),
            rows_sent=outcome.rows_sent,
            rows_deleted=outcome.rows_deleted,
            seconds=time.perf_counter() - began,
            failures=tuple(outcome.failures),
        )

    def _partitions(
        self,
        interval: str,
        wanted: list[str] | None,
        records: dict[tuple[str, str], tuple[int, bytes]],
        full: bool,
    ) -> list[_Partition]:
        """The lake partitions in scope that must be sent: new, or changed since their record.

        A partition is unchanged when its size and the SHA-256 of its bytes match the record.
        Partitions without a record (or with a different size) are sent without being hashed
        here; the worker that sends one hashes the bytes it sends.
        """
        symbols = self.lake.symbols(interval) if wanted is None else wanted
        found = []
        for symbol in symbols:
            for month in self.lake.months(interval, symbol):
                # Streamed candles not yet compacted live beside data.parquet: sent with it.
                path = self.lake.partition_objects(interval, symbol, month)
                record = records.get((symbol, month))
                found.append(
                    _Partition(
                        symbol,
                        month,
                        path,
                        synced=record is not None,
                        changed=full or record is None or _changed(self.lake.storage, path, record),
                    )
                )
        return found

    def _send_all(
        self, conn: psycopg.Connection[Any], sql: Statements, interval: str, todo: list[_Partition]
    ) -> _Outcome:
        """Send partitions over up to ``workers`` connections; stop at the first lost connection.

        This thread reads, decodes and encodes partitions ahead (CPU); one thread per connection
        sends them (waiting on PostgreSQL), so the two overlap. What goes to a sender is a batch:
        one changed partition, or up to :data:`BATCH_PARTITIONS` never-synced ones.
        """
        outcome = _Outcome()
        if not todo:
            return outcome
        connections = [conn] + [self._connect() for _ in range(min(self.workers, len(todo)) - 1)]
        batches: queue.Queue[list[_Job] | None] = queue.Queue(maxsize=len(connections))
        stop = threading.Event()
        lock = threading.Lock()
        errors: list[BaseException] = []

        def fail(partition: _Partition, exc: Exception) -> None:
            with lock:
                outcome.failures.append(PartitionFailure(partition.symbol, partition.month, str(exc)))

        def done(jobs: list[_Job], deleted: int) -> None:
            with lock:
                outcome.partitions_sent += len(jobs)
                outcome.rows_sent += sum(job.rows for job in jobs)
                outcome.rows_deleted += deleted
                outcome.last_key = (jobs[-1].partition.symbol, jobs[-1].partition.month)

        def load(worker: psycopg.Connection[Any], batch: list[_Job]) -> None:
            if len(batch) > 1:
                try:
                    done(batch, self._load_new(worker, sql, batch))
                    return
                except LoaderRejected:
                    pass  # rolled back; one at a time, so that only the refused partition fails
            for job in batch:
                try:
                    done([job], self._load(worker, sql, job))
                except LoaderRejected as exc:
                    fail(job.partition, exc)

        def send(worker: psycopg.Connection[Any]) -> None:
            while (batch := batches.get()) is not None:
                if stop.is_set():
                    continue  # drain, so that the producer never blocks
                try:
                    load(worker, batch)
                except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                    errors.append(exc)
                    stop.set()

        senders = [
            threading.Thread(target=send, args=(c,), name=f"cryptolake-pg-{i}", daemon=True)
            for i, c in enumerate(connections)
        ]
        for thread in senders:
            thread.start()
        try:
            new: list[_Job] = []
            for partition in todo:
                if stop.is_set():
                    break
                try:
                    job = self._job(interval, partition)
                except LakeError as exc:
                    fail(partition, exc)
                    continue
                if partition.synced:
                    batches.put([job])
                    continue
                new.append(job)
                if len(new) >= BATCH_PARTITIONS or sum(j.rows for j in new) >= BATCH_ROWS:
                    batches.put(new)
                    new = []
            if new and not stop.is_set():
                batches.put(new)
        finally:
            stop.set() if errors else None
            for _ in senders:
                batches.put(None)
            for thread in senders:
                thread.join()
            for other in connections[1:]:
                other.close()
        lost = next((e for e in errors if isinstance(e, _ConnectionLost)), None)
        if lost is not None:
            what, rolled_back = lost.in_flight()
            raise LoaderUnavailable(
                f"lost the connection to PostgreSQL at {redact_dsn(self._dsn)} while syncing "
                f"{what} ({_one_line(lost.cause, self._dsn)}); "
                f"{rolled_back} rolled back, {outcome.partitions_sent} of {len(todo)} were synced; "
                "run the sync again to finish"
            ) from lost.cause
        if errors:
            raise errors[0]
        outcome.failures.sort(key=lambda f: (f.symbol, f.month))
        return outcome

    def _job(self, interval: str, partition: _Partition) -> _Job:
        """Read, check and encode one partition (no database work)."""
        from cryptolake.loader.pgcopy import encode_rows

        data, table = _read_partition(self.lake.storage, partition.path)
        where = _folder(self.lake.storage, partition.path)
        first, last = _open_time_range(table)
        low, high = layout.month_bounds(partition.month)
        if first is not None and last is not None and (first < low or last >= high):
            raise LakeError(f"partition {where} holds candles outside {partition.month}")
        if table.num_rows and _has_repeated_open_times(table):
            raise LakeError(
                f"partition {where} holds an open time more than once (written by another "
                "tool?): `cryptolake gaps` lists them; the next collection of that month rewrites it "
                "with one candle per open time"
            )
        keys = (self.lake.exchange, interval, partition.symbol)
        record = (
            self.table,
            *keys,
            partition.month,
            table.num_rows,
            _utc_or_none(first),
            _utc_or_none(last),
            len(data),
            hashlib.sha256(data).digest(),
        )
        # A changed partition goes to the staging table (lake columns only); a new one straight
        # into the table, with the key columns in front.
        rows = encode_rows(table) if partition.synced else encode_rows(table, keys)
        return _Job(partition, table.num_rows, rows, (*keys, _utc(low), _utc(high)), record)

    def _load(self, conn: psycopg.Connection[Any], sql: Statements, job: _Job) -> int:
        """One partition in one transaction; returns the rows deleted."""
        from cryptolake.loader.pgcopy import HEADER, TRAILER

        keys = job.in_month[:3]
        with self._partition_errors(conn, [job]), conn.cursor() as cur:
            if job.partition.synced:  # changed: staging, then the upsert
                self._ensure_stage(conn)
                cur.execute("BEGIN")
                with cur.copy(sql.copy_stage) as pipe:
                    pipe.write(HEADER + job.tuples + TRAILER)
                cur.execute(sql.upsert, (*job.in_month, *keys, *job.record))
                deleted = cur.rowcount  # the first result: the DELETE's
            else:  # never synced: clear the month, COPY straight into the table
                cur.execute(sql.replace, (*job.in_month, *job.record))
                cur.nextset()
                deleted = cur.rowcount
                with cur.copy(sql.copy_table) as pipe:
                    pipe.write(HEADER + job.tuples + TRAILER)
            # COMMIT goes alone: a loader that dies before sending it leaves nothing behind.
            cur.execute("COMMIT")
        return deleted

    def _load_new(self, conn: psycopg.Connection[Any], sql: Statements, batch: list[_Job]) -> int:
        """Never-synced partitions in one transaction; returns the rows deleted.

        One round trip clears their month ranges (contiguous months of a symbol in one
        ``DELETE``) and inserts all their records; one COPY sends all their rows; COMMIT goes
        alone. Each record commits with its rows, or neither does.
        """
        from cryptolake.loader.pgcopy import HEADER, TRAILER

        ranges = _month_ranges(batch)
        params = [value for month_range in ranges for value in month_range]
        params += [value for job in batch for value in job.record]
        with self._partition_errors(conn, batch), conn.cursor() as cur:
            cur.execute(sql.new_batch(len(ranges), len(batch)), params)
            deleted = 0
            for _ in ranges:
                cur.nextset()
                deleted += cur.rowcount
            with cur.copy(sql.copy_table) as pipe:
                pipe.write(HEADER)
                for job in batch:
                    pipe.write(job.tuples)
                pipe.write(TRAILER)
            cur.execute("COMMIT")
        return deleted

    @contextmanager
    def _partition_errors(self, conn: psycopg.Connection[Any], jobs: list[_Job]) -> Iterator[None]:
        """A lost connection becomes _ConnectionLost; any other error rolls back and becomes
        LoaderRejected (naming the partition, or the batch)."""
        try:
            yield
        except self._pg.Error as exc:
            if conn.broken or conn.closed:
                raise _ConnectionLost(jobs, exc) from exc
            conn.rollback()
            first = jobs[0].partition
            what = (
                f"partition {first.symbol} {first.month}"
                if len(jobs) == 1
                else f"a batch of {len(jobs)} partitions from {first.symbol} {first.month}"
            )
            raise LoaderRejected(f"PostgreSQL refused {what}: {_one_line(exc, self._dsn)}") from exc

    def _remove(
        self, conn: psycopg.Connection[Any], sql: Statements, interval: str, symbol: str, month: str
    ) -> int:
        """Delete a partition that is gone from the lake, and its record; returns rows deleted."""
        keys = (self.lake.exchange, interval, symbol)
        low, high = layout.month_bounds(month)
        with conn.cursor() as cur:
            cur.execute(sql.remove, (*keys, _utc(low), _utc(high), self.table, *keys, month))
            cur.nextset()
            cur.nextset()
            deleted = max(cur.rowcount, 0)
            cur.execute("COMMIT")
        return deleted

    def _flush(
        self, conn: psycopg.Connection[Any], sql: Statements, interval: str, key: tuple[str, str]
    ) -> None:
        """One synchronous commit: it makes every asynchronous commit before it durable."""
        conn.execute(sql.flush, (self.table, self.lake.exchange, interval, *key))
        conn.execute("COMMIT")

    # -- setup ---------------------------------------------------------------------------

    def _prepare(self, conn: psycopg.Connection[Any]) -> Statements:
        """Check existing tables, create missing ones, in one transaction (nothing on error)."""
        q = self._pg.sql
        with conn.transaction():
            table_exists = pgtables.check_shape(
                conn, self.schema, self.table, pgtables.COLUMN_TYPES, pgtables.PRIMARY_KEY
            )
            state_exists = pgtables.check_shape(
                conn, self.schema, STATE_TABLE, pgtables.STATE_TYPES, pgtables.STATE_KEY
            )
            # Only what is missing is created: a role without CREATE rights can sync into
            # tables that someone else created.
            if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone():
                conn.execute(q.SQL("CREATE SCHEMA {}").format(q.Identifier(self.schema)))
            if not state_exists:
                conn.execute(pgtables.create_state_table(q, self.schema))
            if not table_exists:
                conn.execute(pgtables.create_candle_table(q, self.schema, self.table))
                # Records of an earlier table of that name (dropped since) describe nothing.
                conn.execute(
                    q.SQL("DELETE FROM {} WHERE target_table = %s").format(
                        q.Identifier(self.schema, STATE_TABLE)
                    ),
                    (self.table,),
                )
            if self.timescale:
                self._make_hypertable(conn)
        return Statements.build(q, conn, self.schema, self.table)

    def _make_hypertable(self, conn: psycopg.Connection[Any]) -> None:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        if available is None:
            raise LoaderRejected(
                "TimescaleDB was asked for (--timescale, setting postgres.timescale) but this PostgreSQL "
                "server does not offer the timescaledb extension; install it, or sync without it"
            )
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        target = self._pg.sql.Identifier(self.schema, self.table).as_string(conn)
        conn.execute(
            "SELECT create_hypertable(%s::regclass, 'open_time', if_not_exists => TRUE, "
            "migrate_data => TRUE)",
            (target,),
        )

    def _records(
        self, conn: psycopg.Connection[Any], interval: str, wanted: list[str] | None
    ) -> dict[tuple[str, str], tuple[int, bytes]]:
        """``{(symbol, month): (size_bytes, sha256)}`` recorded for this table and interval."""
        q = self._pg.sql
        query = q.SQL(
            "SELECT symbol, month, size_bytes, sha256 FROM {} WHERE target_table = %s "
            "AND exchange = %s AND interval = %s"
        ).format(q.Identifier(self.schema, STATE_TABLE))
        params: list[Any] = [self.table, self.lake.exchange, interval]
        if wanted is not None:
            query += q.SQL(" AND symbol = ANY(%s)")
            params.append(wanted)
        rows = conn.execute(query, params).fetchall()
        return {(symbol, month): (size, bytes(digest)) for symbol, month, size, digest in rows}

    # -- connections ---------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        pg = self._pg
        try:
            given = pg.conninfo.conninfo_to_dict(self._dsn)
        except pg.ProgrammingError as exc:
            raise LoaderError(
                f"invalid PostgreSQL DSN {redact_dsn(self._dsn)}: {_one_line(exc, self._dsn)}"
            ) from None
        options: dict[str, Any] = {}
        if "connect_timeout" not in given:
            options["connect_timeout"] = max(1, round(self._connect_timeout_s))
        if "application_name" not in given:
            options["application_name"] = _APPLICATION_NAME
        try:
            # Client-side binding: several statements go in one round trip, with their values.
            conn = pg.connect(self._dsn, autocommit=True, cursor_factory=pg.ClientCursor, **options)
            # Each partition commits atomically with its record; see the module docstring for
            # why asynchronous commits are safe here and how the end of a sync makes them durable.
            conn.execute("SET synchronous_commit = off")
        except pg.Error as exc:
            raise LoaderUnavailable(
                f"cannot connect to PostgreSQL at {redact_dsn(self._dsn)}: {_one_line(exc, self._dsn)}"
            ) from None
        return conn

    def _ensure_connection(self) -> psycopg.Connection[Any]:
        if self._conn.closed or self._conn.broken:
            self._conn.close()
            self._conn = self._connect()
        return self._conn

    def _ensure_stage(self, conn: psycopg.Connection[Any]) -> None:
        """Create the session's temporary staging table once per connection."""
        if conn not in self._staged:
            conn.execute(pgtables.create_stage_table(self._pg.sql))
            self._staged.add(conn)

    @contextmanager
    def _sync_lock(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Session advisory lock on the target, so two syncs into one table never interleave."""
        key = f"{_LOCK_NAMESPACE}{self.schema}.{self.table}"
        row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
        assert row is not None  # SELECT of a function returns one row
        (locked,) = row
        if not locked:
            raise LoaderError(
                f"another cryptolake sync into {self.target} is running; try again when it has finished"
            )
        try:
            yield
        finally:
            if not (conn.closed or conn.broken):
                conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Translate psycopg errors that escape a step into LoaderError classes."""
        pg = self._pg
        try:
            yield
        except pg.Error as exc:
            if self._conn.broken or self._conn.closed:
                raise LoaderUnavailable(
                    f"lost the connection to PostgreSQL at {redact_dsn(self._dsn)}: "
                    f"{_one_line(exc, self._dsn)}; run the sync again"
                ) from None
            raise LoaderRejected(
                f"PostgreSQL refused to {doing} {self.target}: {_one_line(exc, self._dsn)}"
            ) from None


def sync_postgres(
    lake: Lake | str | Path,
    dsn: str,
    interval: str = "1h",
    symbols: Sequence[str] | None = None,
    *,
    schema: str = "cryptolake",
    table: str = "klines",
    timescale: bool = False,
    workers: int = 2,
    full: bool = False,
) -> SyncReport:
    """Connect, sync once, disconnect: :class:`PostgresLoader` for one call (the scheduler's use).

    Args and Raises: as :class:`PostgresLoader` and :meth:`PostgresLoader.sync`.
    """
    with PostgresLoader(
        lake, dsn, schema=schema, table=table, timescale=timescale, workers=workers
    ) as loader:
        return loader.sync(interval, symbols, full=full)


# -- helpers -------------------------------------------------------------------------------


def _import_psycopg() -> Any:
    try:
        import numpy  # noqa: F401  (the COPY encoder needs it; part of the same extra)
        import psycopg
        import psycopg.conninfo
        import psycopg.sql
    except ImportError:
        raise MissingDependency("loading into PostgreSQL", "postgres") from None
    return psycopg


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _changed(storage: Storage, paths: tuple[str, ...], record: tuple[int, bytes]) -> bool:
    """Whether a partition's files differ from its record (size first: most changes change it)."""
    size, digest = record
    try:
        if sum(info.size for info in map(storage.head, paths) if info is not None) != size:
            return True
        return hashlib.sha256(b"".join(_bytes_of(storage, paths))).digest() != digest
    except FileNotFoundError:  # removed since the listing: the next sync sees it gone
        return False


def _bytes_of(storage: Storage, paths: tuple[str, ...]) -> list[bytes]:
    """Each file's bytes (a data.parquet that does not exist yet, beside stream files: none)."""
    found = []
    for path in paths:
        read = storage.read(path)
        if read is not None:
            found.append(read[0])
        elif not path.endswith("/" + layout.DATA_FILE):
            raise FileNotFoundError(path)
    return found


def _folder(storage: Storage, paths: tuple[str, ...]) -> str:
    """The partition's folder, as messages name it."""
    return f"{storage.url}/{paths[0].rpartition('/')[0]}"


def _month_ranges(batch: Sequence[_Job]) -> list[tuple[Any, ...]]:
    """The batch's month ranges (exchange, interval, symbol, low, high), contiguous months of a
    symbol merged into one range. A month between two of the batch's is never covered."""
    ranges: list[tuple[Any, ...]] = []
    for job in batch:
        previous = ranges[-1] if ranges else None
        if previous is not None and previous[:3] == job.in_month[:3] and previous[4] == job.in_month[3]:
            ranges[-1] = (*previous[:4], job.in_month[4])
        else:
            ranges.append(job.in_month)
    return ranges


def _utc_or_none(ms: int | None) -> datetime | None:
    return None if ms is None else _utc(ms)


def _read_partition(storage: Storage, paths: tuple[str, ...]) -> tuple[bytes, pa.Table]:
    """A partition's bytes (its files' one after the other) and its candles, decoded from those
    very bytes (what is recorded is what was sent, even if a file is replaced meanwhile)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        blobs = _bytes_of(storage, paths)
        tables = []
        for data in blobs:
            parquet = pq.ParquetFile(pa.BufferReader(data))
            if not parquet.schema_arrow.equals(ARROW_SCHEMA):
                where = _folder(storage, paths)
                raise LakeError(f"partition {where} does not match the candle schema: {parquet.schema_arrow}")
            tables.append(parquet.read(use_threads=False))  # the workers are the parallelism
    except (OSError, pa.ArrowException) as exc:
        raise LakeError(f"cannot read Parquet partition {_folder(storage, paths)}: {exc}") from exc
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).sort_by("open_time")
    return b"".join(blobs), table


def _has_repeated_open_times(table: pa.Table) -> bool:
    import pyarrow.compute as pc

    return bool(pc.count_distinct(table.column("open_time")).as_py() != table.num_rows)


def _open_time_range(table: pa.Table) -> tuple[int | None, int | None]:
    if table.num_rows == 0:
        return None, None
    millis = table.column("open_time").to_numpy().view("int64")
    return int(millis.min()), int(millis.max())


def _one_line(exc: BaseException, dsn: str) -> str:
    """An error message on one line, with the DSN's password (if any) masked."""
    text = re.sub(r"\s+", " ", str(exc)).strip()
    password = _password(dsn)
    if password:
        text = text.replace(password, "***")
    return text.replace(dsn, redact_dsn(dsn)) if dsn else text


def _password(dsn: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(dsn).get("password")  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - a DSN libpq cannot parse has no password we can find
        match = re.search(r"://[^:/@]*:([^@]*)@", dsn) or re.search(r"password\s*=\s*(\S+)", dsn)
        return match.group(1) if match else None
