"""A deterministic, offline stand-in for Binance's spot REST market-data API.

:class:`FakeExchange` serves ``/api/v3/{ping,time,exchangeInfo,ticker/24hr,klines,uiKlines}``
over real HTTP/1.1 (keep-alive) on 127.0.0.1 with Binance's JSON shapes, error codes, request
weights, ``X-MBX-USED-WEIGHT-*`` headers, 429 -> 418 escalation and 451 geo-blocking, plus
injectable faults, a seeded random fault mode (:meth:`FakeExchange.set_chaos`) and 429 storms
(:meth:`FakeExchange.rate_limit_storm`). It is used by tests, benchmarks and by users without
network (``cryptolake fake-exchange``).

The same port serves Binance's bulk archive (data.binance.vision): the spot kline zips
``/data/spot/{monthly,daily}/klines/<SYMBOL>/<iv>/<SYMBOL>-<iv>-<period>.zip``, their
``.CHECKSUM`` files and the S3 bucket listing at ``/?prefix=...&delimiter=/&marker=...``, from
the same candles as the REST API (µs times from 2025), published on the exchange's clock some
delay after each day / month, with their own faults (:meth:`FakeExchange.archive_fault`:
missing, corrupt, wrong checksum, late, header row, empty, off-grid times, re-uploads). They
cost no weight and escape bans, 429s and chaos.

Candles are a pure function of ``(symbol, interval, open_time)`` (and of the exchange's "now"
for the still-open candle): the price is ``base_price * exp(smooth waves + small hashed noise)``
sampled at grid points, so a candle's close is exactly the next candle's open, and the same
request always gives the same bytes. Nothing is cached that grows with traffic, except the
bounded request log, the optional ``cache_rows`` and the archive's built files (bounded by
``archive_cache_bytes``).

Only the standard library and ``cryptolake.schema`` / ``cryptolake.timeutils`` are used, so the
package runs anywhere (``http.server.ThreadingHTTPServer``). One module per concern, so that other
venues, the bulk archive and streams can be served beside the Binance REST API from the same
market, clock and faults:

- :mod:`~cryptolake.testing.symbols`: the symbols and the default universe;
- :mod:`~cryptolake.testing.market`: prices, candles, tickers (pure functions of time);
- :mod:`~cryptolake.testing.wire`: Binance's messages, parameter checks, error bodies, replies;
- :mod:`~cryptolake.testing.weights`: request weights and ban lengths;
- :mod:`~cryptolake.testing.faults`: injected faults, chaos, 429 storms;
- :mod:`~cryptolake.testing.stats`: the request log and statistics;
- :mod:`~cryptolake.testing.binance_rest`: Binance's spot REST endpoints (the first venue);
- :mod:`~cryptolake.testing.binance_archive`: Binance's bulk archive (zips, checksums, listing);
- :mod:`~cryptolake.testing.control`: the ``/fake/*`` control API;
- :mod:`~cryptolake.testing.exchange`: :class:`FakeExchange` (clock, knobs, request admission:
  weights, bans, faults; statistics);
- :mod:`~cryptolake.testing.server`: the HTTP server and :func:`serve`.

Deviations from Binance worth knowing:

* ``timeZone`` accepts only offsets equal to zero (``0``, ``+00:00``, ...); others get -1130.
* A symbol whose ``listed_ms`` is after the exchange's "now" does not exist yet (-1121).
* Real time drives the weight windows and bans (as on Binance); the fake "now" drives candles.
"""

from __future__ import annotations

from cryptolake.testing.binance_archive import ARCHIVE_FAULT_KINDS
from cryptolake.testing.exchange import FakeExchange
from cryptolake.testing.faults import CHAOS_KINDS, DEFAULT_CHAOS_KINDS, RATE_LIMIT_STORM, Fault
from cryptolake.testing.market import DEFAULT_NOW_MS, DEFAULT_OUTAGES
from cryptolake.testing.server import serve
from cryptolake.testing.stats import FakeStats, RequestRecord
from cryptolake.testing.symbols import FakeSymbol, default_symbols
from cryptolake.testing.weights import MAX_BAN_S, request_weight

__all__ = [
    "ARCHIVE_FAULT_KINDS",
    "CHAOS_KINDS",
    "DEFAULT_CHAOS_KINDS",
    "DEFAULT_NOW_MS",
    "DEFAULT_OUTAGES",
    "MAX_BAN_S",
    "RATE_LIMIT_STORM",
    "FakeExchange",
    "FakeStats",
    "FakeSymbol",
    "Fault",
    "RequestRecord",
    "default_symbols",
    "request_weight",
    "serve",
]
