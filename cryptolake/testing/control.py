"""The fake exchange's control API (``/fake/*``): drive it from another process (its clock,
faults, chaos, storms, latency, weight limit) and read its statistics."""

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
    else:
        return None
    return {"ok": True, "now": exchange.now_ms()}


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
