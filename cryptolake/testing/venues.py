"""The fake of every exchange but Binance, by name (``cryptolake fake-exchange --exchange``)."""

from __future__ import annotations

import importlib
from typing import Any

from cryptolake.testing.venue import FakeVenue

#: ``exchange -> (module, class)`` of its fake.
FAKE_VENUES: dict[str, tuple[str, str]] = {
    "coinbase": ("cryptolake.testing.coinbase", "FakeCoinbase"),
    "kraken": ("cryptolake.testing.kraken", "FakeKraken"),
    "bybit": ("cryptolake.testing.bybit", "FakeBybit"),
}


def fake_venue(exchange: str, extra_symbols: int = 0, **options: Any) -> FakeVenue:
    """A fake ``exchange`` (not started) with its default markets and ``extra_symbols``
    synthetic ones (``S0001`` ... in its quote asset, listed 2017-09-01, for load tests);
    ``options`` go to its class."""
    from cryptolake.sources.registry import pair_name
    from cryptolake.testing.symbols import FakeSymbol
    from cryptolake.timeutils import to_ms

    module, name = FAKE_VENUES[exchange]
    cls = getattr(importlib.import_module(module), name)
    fake: FakeVenue = cls(**options)
    if extra_symbols:
        quote = fake.symbols[0].quote_asset
        listed = to_ms("2017-09-01")
        extra = [
            FakeSymbol(
                pair_name(exchange, f"S{i:04d}", quote), f"S{i:04d}", quote, listed, base_price=10.0 + i
            )
            for i in range(1, extra_symbols + 1)
        ]
        fake = cls(symbols=fake.symbols + extra, **options)
    return fake
