"""The loader's PostgreSQL tables: their shape, their DDL, the check of an existing table, and the
per-partition statements (composed once per sync, with ``%s`` for the per-partition values).

Everything here builds SQL with :mod:`psycopg.sql` (identifiers quoted by psycopg); the caller
passes the psycopg module so that importing this file never needs psycopg.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptolake.errors import LoaderError, LoaderRejected
from cryptolake.schema import KLINE_COLUMNS

#: The table that records what was synced; one per schema, shared by the tables in it.
STATE_TABLE = "cryptolake_sync_state"
#: Columns the loader adds in front of the lake's columns (values from the partition's path).
KEY_COLUMNS = ("exchange", "interval", "symbol")
#: Columns of the candle table, in order.
TABLE_COLUMNS = (*KEY_COLUMNS, *KLINE_COLUMNS)
#: The candle table's primary key (the ``ON CONFLICT`` target).
PRIMARY_KEY = ("exchange", "symbol", "interval", "open_time")
#: The state table's primary key.
STATE_KEY = ("target_table", "exchange", "interval", "symbol", "month")
#: Per-connection temporary table that a changed partition is copied into before the upsert.
STAGE_TABLE = "cryptolake_stage"

TEXT, TIMESTAMPTZ, DOUBLE, BIGINT = "text", "timestamp with time zone", "double precision", "bigint"
#: ``format_type`` of each candle-table column.
COLUMN_TYPES: dict[str, str] = {
    **dict.fromkeys(KEY_COLUMNS, TEXT),
    **dict.fromkeys(KLINE_COLUMNS, DOUBLE),
    "open_time": TIMESTAMPTZ,
    "close_time": TIMESTAMPTZ,
    "trades": BIGINT,
}
#: ``format_type`` of each state-table column.
STATE_TYPES: dict[str, str] = {
    **dict.fromkeys(STATE_KEY, TEXT),
    "rows": BIGINT,
    "first_open_time": TIMESTAMPTZ,
    "last_open_time": TIMESTAMPTZ,
    "size_bytes": BIGINT,
    "sha256": "bytea",
    "synced_at": TIMESTAMPTZ,
}
_STATE_NULLABLE = ("first_open_time", "last_open_time")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_name(what: str, name: str) -> str:
    """Return ``name`` if it is a plain identifier (letters, digits, ``_``; up to 63)."""
    if not isinstance(name, str) or _NAME_RE.match(name) is None:
        raise LoaderError(
            f"invalid PostgreSQL {what} name {name!r}: use 1 to 63 letters, digits or '_', "
            "not starting with a digit"
        )
    return name


def create_table(
    q: Any, schema: str, name: str, types: dict[str, str], key: Sequence[str], nullable: Sequence[str]
) -> Any:
    """``CREATE TABLE IF NOT EXISTS``; text columns use the "C" collation (byte order: fast keys)."""
    columns = [
        q.SQL("{} {}{}{}").format(
            q.Identifier(column),
            q.SQL(kind),
            q.SQL(' COLLATE "C"') if kind == TEXT else q.SQL(""),
            q.SQL("") if column in nullable else q.SQL(" NOT NULL"),
        )
        for column, kind in types.items()
    ]
    return q.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
        q.Identifier(schema, name), q.SQL(", ").join(columns), _names(q, key)
    )


def create_candle_table(q: Any, schema: str, table: str) -> Any:
    return create_table(q, schema, table, COLUMN_TYPES, PRIMARY_KEY, nullable=KLINE_COLUMNS[1:])


def create_state_table(q: Any, schema: str) -> Any:
    return create_table(q, schema, STATE_TABLE, STATE_TYPES, STATE_KEY, nullable=_STATE_NULLABLE)


def create_stage_table(q: Any) -> Any:
    columns = q.SQL(", ").join(
        q.SQL("{} {}").format(q.Identifier(c), q.SQL(COLUMN_TYPES[c])) for c in KLINE_COLUMNS
    )
    return q.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
        q.Identifier(STAGE_TABLE), columns
    )


def check_shape(conn: Any, schema: str, name: str, types: dict[str, str], key: Sequence[str]) -> bool:
    """True if ``schema.name`` exists, False if not; LoaderRejected if it cannot take our rows.

    Compatible means: a table (or partitioned table) with every column at the exact type, a
    unique index on exactly ``key``, and no other NOT NULL column without a default.
    """
    row = conn.execute(
        "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    if row is None:
        return False
    oid, kind = row
    shown = f"{schema}.{name}"
    if kind not in ("r", "p"):
        raise LoaderRejected(f"{shown} exists but is not a table; nothing was changed")
    found = {
        column: (kind, required)
        for column, kind, required in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), "
            "attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = '' "
            "FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
            (oid,),
        )
    }
    problems = [f"missing column {c} ({t})" for c, t in types.items() if c not in found]
    problems += [
        f"column {c} is {found[c][0]}, expected {t}"
        for c, t in types.items()
        if c in found and found[c][0] != t
    ]
    problems += [
        f"extra column {c} is NOT NULL without a default"
        for c, (_, required) in found.items()
        if c not in types and required
    ]
    unique = conn.execute(
        "SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL "
        "AND i.indnkeyatts = i.indnatts GROUP BY i.indexrelid",
        (oid,),
    ).fetchall()
    if sorted(key) not in [list(columns) for (columns,) in unique]:
        problems.append(f"no primary key or unique index on ({', '.join(key)})")
    if problems:
        raise LoaderRejected(
            f"{shown} exists but does not have the shape the loader needs: {'; '.join(problems)}. "
            "Nothing was changed; choose another --schema/--table, or migrate or drop that table"
        )
    return True


@dataclass(frozen=True)
class Statements:
    """The per-partition statements for one target, as text with ``%s`` placeholders.

    Values, in order:
        ``replace``: exchange, interval, symbol, low, high, then the record (see ``RECORD``).
        ``upsert``: exchange, interval, symbol, low, high, exchange, interval, symbol, then the record.
        ``remove``: exchange, interval, symbol, low, high, then the state key.
        :meth:`new_batch`: exchange, interval, symbol, low, high per range, then each record.
    """

    #: A partition PostgreSQL has no record of: clear its month, write its record (then COPY).
    replace: str
    #: COPY straight into the candle table.
    copy_table: str
    #: COPY into the staging table.
    copy_stage: str
    #: A changed partition, after the COPY into staging: delete what the lake lost, upsert rows
    #: whose values differ, write the record.
    upsert: str
    #: A partition gone from the lake: delete its rows and its record.
    remove: str
    #: Touch one record with a synchronous commit (flushes every asynchronous commit before it).
    flush: str
    #: Pieces of :meth:`new_batch`: one month range's ``DELETE``, and the record ``INSERT``'s
    #: head, one row of ``VALUES`` and its ``ON CONFLICT`` tail.
    delete_range: str
    record_head: str
    record_row: str
    record_tail: str

    #: The record's values, in order.
    RECORD = (*STATE_KEY, "rows", "first_open_time", "last_open_time", "size_bytes", "sha256")

    @classmethod
    def build(cls, q: Any, conn: Any, schema: str, table: str) -> Statements:
        target, state, stage = (
            q.Identifier(schema, table),
            q.Identifier(schema, STATE_TABLE),
            q.Identifier(STAGE_TABLE),
        )
        in_month = q.SQL(
            "exchange = %s AND interval = %s AND symbol = %s AND open_time >= %s AND open_time < %s"
        )
        values = KLINE_COLUMNS[1:]
        record_head = q.SQL("INSERT INTO {} ({}, synced_at) VALUES ").format(state, _names(q, cls.RECORD))
        record_row = q.SQL("({}, now())").format(q.SQL(", ").join([q.Placeholder()] * len(cls.RECORD)))
        record_tail = q.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
            _names(q, STATE_KEY), _assign(q, [c for c in cls.RECORD if c not in STATE_KEY] + ["synced_at"])
        )
        record = q.Composed([record_head, record_row, record_tail])
        upsert = q.SQL(
            "DELETE FROM {target} AS t WHERE {in_month} AND NOT EXISTS "
            "(SELECT 1 FROM {stage} AS s WHERE s.open_time = t.open_time); "
            "INSERT INTO {target} AS t ({columns}) SELECT %s, %s, %s, {kline} FROM {stage} "
            "ON CONFLICT ({pk}) DO UPDATE SET {assign} WHERE ({old}) IS DISTINCT FROM ({new}); {record}"
        ).format(
            target=target, in_month=in_month, stage=stage, columns=_names(q, TABLE_COLUMNS),
            kline=_names(q, KLINE_COLUMNS), pk=_names(q, PRIMARY_KEY), assign=_assign(q, values),
            old=q.SQL(", ").join(q.SQL("t.{}").format(q.Identifier(c)) for c in values),
            new=q.SQL(", ").join(q.SQL("excluded.{}").format(q.Identifier(c)) for c in values),
            record=record,
        )  # fmt: skip
        state_key = q.SQL(" AND ").join(q.SQL("{} = %s").format(q.Identifier(c)) for c in STATE_KEY)
        parts = {
            "replace": q.SQL("BEGIN; DELETE FROM {} WHERE {}; {}").format(target, in_month, record),
            "copy_table": q.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                target, _names(q, TABLE_COLUMNS)
            ),
            "copy_stage": q.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(stage),
            "upsert": upsert,
            # Rare, and synchronous: a removal is durable when the sync returns.
            "remove": q.SQL(
                "BEGIN; SET LOCAL synchronous_commit = on; DELETE FROM {} WHERE {}; DELETE FROM {} WHERE {}"
            ).format(target, in_month, state, state_key),
            "flush": q.SQL(
                "BEGIN; SET LOCAL synchronous_commit = on; UPDATE {} SET synced_at = synced_at WHERE {}"
            ).format(state, state_key),
            "delete_range": q.SQL("DELETE FROM {} WHERE {}").format(target, in_month),
            "record_head": record_head,
            "record_row": record_row,
            "record_tail": record_tail,
        }
        return cls(**{name: part.as_string(conn) for name, part in parts.items()})

    def new_batch(self, ranges: int, records: int) -> str:
        """Open the transaction of a batch of never-synced partitions (the COPY follows): one
        ``DELETE`` per month range, then one ``INSERT`` of all the batch's records."""
        deletes = "; ".join([self.delete_range] * ranges)
        rows = ", ".join([self.record_row] * records)
        return f"BEGIN; {deletes}; {self.record_head}{rows}{self.record_tail}"


def _names(q: Any, names: Sequence[str]) -> Any:
    return q.SQL(", ").join(q.Identifier(n) for n in names)


def _assign(q: Any, names: Sequence[str]) -> Any:
    return q.SQL(", ").join(q.SQL("{0} = excluded.{0}").format(q.Identifier(c)) for c in names)
