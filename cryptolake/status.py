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
from cryptolake.lake import Lake, meta_dir
from cryptolake.lake.layout import DEFAULT_EXCHANGE
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
    if not store.root.is_dir():
        raise LakeError(f"no lake at {store.root}: collect into it first, or check the path")
    state = dict(_state_document(store.root).get(state_section(store.exchange, interval), {}))
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
        *LakeMeta(store.root, store.exchange).starts(interval),
    ]:  # known without candles yet, too
        symbols.setdefault(symbol, {"rows": 0, "months": 0, "first": None, "last": None})
    return {
        "lake": str(store.root),
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


def _state_document(root: Path) -> dict[str, Any]:
    """The whole collection state (every interval); empty if there is none or it is torn."""
    try:
        document = json.loads((meta_dir(root) / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


#: ``<lake>/_meta/stream.json``: what a running stream reports (see :func:`stream_status`).
STREAM_STATUS_FILE = "stream.json"


def stream_status(lake: str | Path | Lake, clock: Callable[[], float] = time.time) -> dict[str, Any] | None:
    """The last status a stream wrote to the lake, with ``running`` true only while its process
    is alive and writing; None if no stream ever ran there."""
    root = lake.root if isinstance(lake, Lake) else Path(lake)
    try:
        document = json.loads((meta_dir(root) / STREAM_STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
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
