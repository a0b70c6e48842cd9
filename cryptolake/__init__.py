"""cryptolake: a complete, trustworthy history of crypto market candles in a Parquet lake."""

from cryptolake._version import __version__
from cryptolake.errors import (
    ConfigError,
    CryptolakeError,
    ExchangeUnavailable,
    InvalidSymbol,
    IPBanned,
    LoaderError,
    RateLimited,
    RequestRejected,
    RestrictedLocation,
    SchedulerError,
    SourceError,
)
from cryptolake.collector import CollectionReport, CryptoCollector, ProgressEvent, SymbolResult
from cryptolake.gaps import DataGapDetector, Gap
from cryptolake.lake import Lake
from cryptolake.loader import PostgresLoader, SyncReport
from cryptolake.scheduler import CollectorScheduler
from cryptolake.sources.binance import BinanceClient, PriceData, TopCrypto

__all__ = [
    "BinanceClient",
    "CollectionReport",
    "CollectorScheduler",
    "ConfigError",
    "CryptoCollector",
    "CryptolakeError",
    "DataGapDetector",
    "ExchangeUnavailable",
    "Gap",
    "IPBanned",
    "InvalidSymbol",
    "Lake",
    "LoaderError",
    "PostgresLoader",
    "PriceData",
    "ProgressEvent",
    "RateLimited",
    "RequestRejected",
    "RestrictedLocation",
    "SchedulerError",
    "SourceError",
    "SymbolResult",
    "SyncReport",
    "TopCrypto",
    "__version__",
]
