"""What the lake holds, read without an exchange client: rows, months, first and last candle per
symbol and interval, and each symbol's last collection run (from ``_meta/collection_state.json``,
which the collector writes).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptolake.errors import LakeError
from cryptolake.lake import Lake
from cryptolake.lake.layout import DEFAULT_EXCHANGE, META_DIR
from cryptolake.lake.meta import LakeMeta
from cryptolake.timeutils import iso, to_ms

#: The collector's record of each symbol's last run, by interval (in ``<lake>/_meta``).
STATE_FILE = "collection_state.json"


def state_section(exchange: str, interval: str) -> str:
    """The collection state's key for an exchange and interval: the interval for Binance (as
    before other exchanges), ``<exchange>/<interval>`` for the others."""
    return interval if exchange == DEFAULT_EXCHANGE else f"{exchange}/{interval}"


def collection_status(lake: Lake | str | Path, interval: str = "1h") -> dict[str, Any]:
    """What the lake holds for ``interval`` (of the lake's exchange), without an exchange client or a request: rows,
    months, first and last candle per symbol (from commit records and Parquet footers), each
    symbol's last run and last error, and ``total_records_collected``. Every symbol the lake
    knows is listed: with candles, a collection state or a recorded start.

    Raises:
        LakeError: there is no lake at that path (nothing is created).
    """
    store = lake if isinstance(lake, Lake) else Lake(lake)
    if not store.exists():
        raise LakeError(f"no lake at {store.location}: collect into it first, or check the path")
    state = dict(state_document(store).get(state_section(store.exchange, interval), {}))
    symbols: dict[str, dict[str, Any]] = {}
    months: set[tuple[str, str]] = set()
    for part in store.partition_stats(interval):
        entry = symbols.setdefault(part.symbol, {"rows": 0, "months": 0, "first": None, "last": None})
        entry["rows"] += part.rows
        entry["months"] += (part.symbol, part.month) not in months  # data.parquet and stream files
        months.add((part.symbol, part.month))
        if part.first_open_ms is not None:
            entry["first"] = min(filter(None, (entry["first"], part.first_open_ms)))
            entry["last"] = max(filter(None, (entry["last"], part.last_open_ms)))
    for symbol in [
        *state,
        *LakeMeta(store.storage, store.exchange).starts(interval),
    ]:  # known without candles yet, too
        symbols.setdefault(symbol, {"rows": 0, "months": 0, "first": None, "last": None})
    return {
        "lake": store.location,
        "exchange": store.exchange,
        "exchanges_in_lake": store.exchanges(),
        "interval": interval,
        "total_records_collected": sum(e["rows"] for e in symbols.values()),
        "symbols": {
            symbol: {
                "rows": e["rows"],
                "months": e["months"],
                "first_open_time": iso(e["first"]) if e["first"] is not None else None,
                "last_open_time": iso(e["last"]) if e["last"] is not None else None,
                **state.get(symbol, {}),
            }
            for symbol, e in sorted(symbols.items())
        },
    }


#: ``_meta/collection_state.json`` as a storage path.
STATE_PATH = f"{META_DIR}/{STATE_FILE}"


def state_document(lake: Lake) -> dict[str, Any]:
    """The whole collection state (every interval); empty if there is none or it is torn."""
    return parse_state(lake.storage.read(STATE_PATH))


def parse_state(read: tuple[bytes, str] | bytes | None) -> dict[str, Any]:
    """A state document's bytes (as :meth:`Storage.read` returns them) as a dict; empty if
    there are none or they are torn."""
    data = read[0] if isinstance(read, tuple) else read
    try:
        document = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


#: ``<lake>/_meta/stream.json``: what a running stream reports (see :func:`stream_status`).
STREAM_STATUS_FILE = "stream.json"


def stream_status(lake: str | Path | Lake, clock: Callable[[], float] = time.time) -> dict[str, Any] | None:
    """The last status a stream wrote to the lake, with ``running`` true only while its process
    is alive and writing; None if no stream ever ran there."""
    store = lake if isinstance(lake, Lake) else Lake(lake)
    try:
        read = store.storage.read(f"{META_DIR}/{STREAM_STATUS_FILE}")
        document = json.loads(read[0]) if read is not None else None
    except (LakeError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    if document.get("running"):
        updated = to_ms(document.get("updated_at") or 0) / 1000
        stale = clock() - updated > max(30.0, 3 * float(document.get("flush_s") or 5))
        alive = document.get("host") != socket.gethostname() or _alive(int(document.get("pid") or 0))
        document["running"] = alive and not stale
    return document


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
