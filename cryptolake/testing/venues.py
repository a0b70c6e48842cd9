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


def fake_venue(exchange: str, **options: Any) -> FakeVenue:
    """A fake ``exchange`` (not started) with its default markets; ``options`` go to its class."""
    module, name = FAKE_VENUES[exchange]
    fake: FakeVenue = getattr(importlib.import_module(module), name)(**options)
    return fake
