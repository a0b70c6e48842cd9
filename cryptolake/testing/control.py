"""The fake exchange's control API (``/fake/*``): drive it from another process (its clock,
faults, chaos, storms, latency, weight limit, the bulk archive's faults) and read its statistics.

Calls (query parameters; every answer is JSON, ``{"ok": true, "now": ms}`` for a POST; 400 with
``{"error": ...}`` for bad values):

- ``GET /fake/stats[?log=1]``: :meth:`FakeExchange.stats` as JSON (``FakeStats.from_json``);
- ``POST /fake/now?ms=``, ``POST /fake/advance?ms=``: the exchange's clock;
- ``POST /fake/reset``; ``POST /fake/faults`` (body: a JSON list of :class:`Fault` fields);
- ``POST /fake/chaos?rate=&kinds=&seed=&paths=&slow_s=``; ``POST /fake/storm?seconds=&retry_after=``;
- ``POST /fake/restricted?on=1|0``; ``POST /fake/latency?s=``; ``POST /fake/weight?limit=&window_s=``;
- ``POST /fake/archive/fault?kind=&symbol=&interval=&period=[&times=][&delay_s=][&start_ms=&end_ms=][&changed=]``:
  :meth:`FakeExchange.archive_fault` (e.g. ``kind=missing&symbol=BTCUSDT&interval=1m&period=2024-01&times=1``);
- ``POST /fake/archive/clear``: :meth:`FakeExchange.archive_clear_faults`;
- ``POST /fake/archive/delays?daily_s=&monthly_s=``: :meth:`FakeExchange.set_archive_delays`;
- ``POST /fake/archive/prebuild?symbols=A,B&interval=&start_ms=&end_ms=[&kinds=monthly,daily]``:
  :meth:`FakeExchange.prebuild_archive` (answers ``"files"`` too; it can take a while).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cryptolake.testing.faults import Fault
from cryptolake.testing.wire import CONTROL_PREFIX, JSON_CONTENT_TYPE, _json_bytes, _Reply

if TYPE_CHECKING:
    from cryptolake.testing.exchange import FakeExchange


def answer(exchange: FakeExchange, method: str, path: str, params: dict[str, str], body: bytes) -> _Reply:
    """``/fake/*``: drive the fake from another process (no weight, not in stats)."""
    try:
        data = _control_action(exchange, method, path, params, body)
    except (KeyError, ValueError, TypeError) as exc:
        return _Reply(
            400,
            _json_bytes({"error": f"{type(exc).__name__}: {exc}"}),
            [("Content-Type", JSON_CONTENT_TYPE)],
        )
    if data is None:
        return _Reply(
            404,
            _json_bytes({"error": f"unknown control call {method} {path}"}),
            [("Content-Type", JSON_CONTENT_TYPE)],
        )
    return _Reply(200, _json_bytes(data), [("Content-Type", JSON_CONTENT_TYPE)])


def _control_action(
    exchange: FakeExchange, method: str, path: str, params: dict[str, str], body: bytes
) -> dict[str, Any] | None:
    action = path[len(CONTROL_PREFIX) :]
    if method == "GET" and action == "stats":
        return exchange.stats().to_json(include_log=params.get("log") in ("1", "true"))
    if method != "POST":
        return None
    if action == "now":
        exchange.set_now(int(params["ms"]))
    elif action == "advance":
        exchange.advance(int(params["ms"]))
    elif action == "reset":
        exchange.reset()
    elif action == "faults":
        items = json.loads(body or b"[]")
        if not isinstance(items, list):
            raise ValueError("expected a JSON list of faults")
        exchange.inject(*(Fault(**item) for item in items))
    elif action == "chaos":
        exchange.set_chaos(float(params["rate"]), **_chaos_options(params))
    elif action == "storm":
        exchange.rate_limit_storm(float(params["seconds"]), int(params.get("retry_after", "1")))
    elif action == "restricted":
        exchange.set_restricted(params.get("on", "1") in ("1", "true"))
    elif action == "latency":
        exchange.set_latency(float(params["s"]))
    elif action == "weight":
        window = params.get("window_s")
        exchange.set_weight_limit(int(params["limit"]), None if window is None else int(window))
    elif action.startswith("archive/"):
        return _archive_action(exchange, action[len("archive/") :], params)
    else:
        return None
    return {"ok": True, "now": exchange.now_ms()}


_ARCHIVE_FAULT_OPTIONS: dict[str, Any] = {"delay_s": float, "start_ms": int, "end_ms": int, "changed": int}


def _archive_action(exchange: FakeExchange, action: str, params: dict[str, str]) -> dict[str, Any] | None:
    """``/fake/archive/*``."""
    data: dict[str, Any] = {"ok": True}
    if action == "fault":
        times = params.get("times")
        options = {
            name: kind(params[name]) for name, kind in _ARCHIVE_FAULT_OPTIONS.items() if name in params
        }
        exchange.archive_fault(
            params["kind"],
            params["symbol"],
            params["interval"],
            params["period"],
            times=None if times in (None, "") else int(times),
            **options,
        )
    elif action == "clear":
        exchange.archive_clear_faults()
    elif action == "delays":
        daily, monthly = params.get("daily_s"), params.get("monthly_s")
        exchange.set_archive_delays(
            None if daily is None else float(daily), None if monthly is None else float(monthly)
        )
    elif action == "prebuild":
        names = [name.strip() for name in params["symbols"].split(",") if name.strip()]
        kinds = [kind.strip() for kind in params.get("kinds", "monthly,daily").split(",") if kind.strip()]
        data["files"] = exchange.prebuild_archive(
            names, params["interval"], int(params["start_ms"]), int(params["end_ms"]), kinds=kinds
        )
    else:
        return None
    data["now"] = exchange.now_ms()
    return data


def _chaos_options(params: dict[str, str]) -> dict[str, Any]:
    """``set_chaos`` keywords from ``/fake/chaos`` query parameters (``kinds`` and ``paths``
    comma-separated; ``paths=*`` means every API path)."""
    options: dict[str, Any] = {}
    if params.get("kinds"):
        options["kinds"] = [kind.strip() for kind in params["kinds"].split(",") if kind.strip()]
    if "seed" in params:
        options["seed"] = int(params["seed"])
    if "paths" in params:
        raw = params["paths"].strip()
        options["paths"] = None if raw in ("", "*") else [p.strip() for p in raw.split(",")]
    if "slow_s" in params:
        options["slow_s"] = float(params["slow_s"])
    return options
