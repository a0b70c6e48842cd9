"""Exchange clients: where candles come from."""

from cryptolake.sources.base import KlineSource
from cryptolake.sources.binance import BinanceClient, PriceData, TopCrypto

__all__ = ["BinanceClient", "KlineSource", "PriceData", "TopCrypto"]
