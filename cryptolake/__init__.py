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
from cryptolake.collector import CollectionReport, CryptoCollector, ProgressEvent, SymbolResult
from cryptolake.lake import Lake
from cryptolake.sources.binance import BinanceClient, PriceData, TopCrypto

__all__ = [
    "BinanceClient",
    "CollectionReport",
    "ConfigError",
    "CryptoCollector",
    "CryptolakeError",
    "ExchangeUnavailable",
    "IPBanned",
    "InvalidSymbol",
    "Lake",
    "PriceData",
    "ProgressEvent",
    "RateLimited",
    "RequestRejected",
    "RestrictedLocation",
    "SourceError",
    "SymbolResult",
    "TopCrypto",
    "__version__",
]
