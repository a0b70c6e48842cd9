"""Which client serves which exchange, and how each exchange names a pair.

The CLI and the scheduler build a source by the exchange's name (``--exchange``,
``collection.exchange``); the client modules are imported only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

#: ``exchange -> (module, class)`` of the REST client of every exchange but Binance.
VENUE_CLIENTS: dict[str, tuple[str, str]] = {
    "coinbase": ("cryptolake.sources.coinbase", "CoinbaseClient"),
    "kraken": ("cryptolake.sources.kraken", "KrakenClient"),
    "bybit": ("cryptolake.sources.bybit", "BybitClient"),
}

#: Asset names an exchange uses in its own pair names, where they differ from the common ones.
_OWN_ASSET_NAMES: dict[str, dict[str, str]] = {"kraken": {"BTC": "XBT", "DOGE": "XDG"}}


def venue_client_class(exchange: str) -> Any:
    """The client class of ``exchange`` (not Binance: :class:`~cryptolake.sources.binance.BinanceClient`)."""
    module, name = VENUE_CLIENTS[exchange]
    return getattr(importlib.import_module(module), name)


def pair_name(exchange: str, base: str, quote: str) -> str:
    """The exchange's own name of the pair ``base``/``quote`` (common asset names):
    ``BTC-USD`` on Coinbase, ``XBTUSD`` on Kraken, ``BTCUSDT`` on Binance and Bybit."""
    own = _OWN_ASSET_NAMES.get(exchange, {})
    base, quote = own.get(base, base), own.get(quote, quote)
    return f"{base}-{quote}" if exchange == "coinbase" else f"{base}{quote}"
