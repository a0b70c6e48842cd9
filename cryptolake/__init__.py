"""cryptolake: a complete, trustworthy history of crypto market candles in a Parquet lake."""

from cryptolake._version import __version__
from cryptolake.errors import (
    ConfigError,
    CryptolakeError,
    ExchangeUnavailable,
    InvalidSymbol,
    IPBanned,
    RateLimited,
    RequestRejected,
    RestrictedLocation,
    SourceError,
)
from cryptolake.sources.binance import BinanceClient, PriceData, TopCrypto

__all__ = [
    "BinanceClient",
    "ConfigError",
    "CryptolakeError",
    "ExchangeUnavailable",
    "IPBanned",
    "InvalidSymbol",
    "PriceData",
    "RateLimited",
    "RequestRejected",
    "RestrictedLocation",
    "SourceError",
    "TopCrypto",
    "__version__",
]
