"""What the rest of cryptolake needs of a source of candles: the :class:`KlineSource` protocol.

The collector, its pipeline, the gap detector and the scheduler are typed on this protocol, not
on one client, so that another source (Binance's bulk archive, another exchange) plugs in where
:class:`~cryptolake.sources.binance.BinanceClient` does. Times are epoch milliseconds (UTC); a
symbol is the exchange's own (``BTCUSDT``); an interval is one of Binance's names (``1h``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class KlineSource(Protocol):
    """A source of closed candles, with the exchange's clock, its symbols and its bans."""

    #: The exchange the candles come from (the lake's ``exchange=`` key), e.g. ``"binance"``.
    exchange: str
    #: Quote asset of the default universe and of bare base assets (``BTC`` -> ``BTCUSDT``).
    quote_asset: str
    #: Requests the source allows in flight at once.
    concurrency: int
    #: The first pause, in seconds, before a failed request is retried (grows with each failure).
    retry_delay: float

    def get_server_time_ms(self) -> int:
        """The exchange's clock now (one request)."""
        ...

    def sync_clock(self) -> int:
        """Ask the exchange's clock once and keep its offset; returns the exchange's time."""
        ...

    def symbol_statuses(self) -> dict[str, str]:
        """``{symbol: status}`` of every symbol the exchange lists (``TRADING`` for a live one)."""
        ...

    def get_top_by_market_cap(self, limit: int = 50) -> Sequence[Any]:
        """The ``limit`` largest symbols by 24 h quote volume (each with a ``symbol``)."""
        ...

    def first_open_time(self, symbol: str, interval: str) -> int | None:
        """The open time of the symbol's first candle; None if it has none."""
        ...

    def last_open_time(self, symbol: str, interval: str) -> int | None:
        """The open time of the symbol's latest candle (the open one, for a live market)."""
        ...

    def get_klines_page(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int | None = None,
        limit: int = 1000,
        *,
        as_arrow: bool = False,
    ) -> Any:
        """One request: up to ``limit`` candles opening at or after ``start_ms`` (and before
        ``end_ms``), open or closed, sorted by unique open time, in the lake's schema."""
        ...

    def get_klines_range(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, as_arrow: bool = False
    ) -> Any:
        """Every candle opening in ``[start_ms, end_ms)``, in as few requests as it takes."""
        ...

    def banned_until(self) -> float:
        """Epoch seconds until which the exchange has banned this IP; 0 when it has not."""
        ...

    def cancel_pending(self) -> None:
        """Make requests waiting for weight or a retry give up at once (a stop was asked)."""
        ...

    def resume(self) -> None:
        """Undo :meth:`cancel_pending` for the next run."""
        ...
