"""Exchange clients: where candles come from."""

from cryptolake.sources.binance import BinanceClient, PriceData, TopCrypto

__all__ = ["BinanceClient", "PriceData", "TopCrypto"]
