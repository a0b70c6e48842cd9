"""cryptolake: a complete, trustworthy history of crypto market candles in a Parquet lake."""

from __future__ import annotations

from importlib import import_module as _import_module
from typing import TYPE_CHECKING, Any

from cryptolake._version import __version__

if TYPE_CHECKING:  # the names below, for type checkers and IDEs; at run time see __getattr__
    from cryptolake.collector import CollectionReport, CryptoCollector, ProgressEvent, SymbolResult
    from cryptolake.errors import (
        ArchiveFileError,
        BadPayload,
        ConfigError,
        CryptolakeError,
        ExchangeUnavailable,
        Interrupted,
        InvalidSymbol,
        InvalidSymbolName,
        IPBanned,
        LakeError,
        LakeLocked,
        LoaderError,
        LoaderRejected,
        LoaderUnavailable,
        MissingDependency,
        QueryError,
        RateLimited,
        RequestRejected,
        RestrictedLocation,
        SchedulerError,
        SchemaMismatch,
        SourceError,
        Transient,
        VersionConflict,
    )
    from cryptolake.gaps import DataGapDetector, Gap
    from cryptolake.lake import Lake
    from cryptolake.loader import PostgresLoader, SyncReport
    from cryptolake.scheduler import CollectorScheduler
    from cryptolake.sources.archive import ArchiveSource, BinanceArchive
    from cryptolake.sources.base import Market
    from cryptolake.sources.binance import BinanceClient, PriceData, TopCrypto
    from cryptolake.sources.bybit import BybitClient
    from cryptolake.sources.coinbase import CoinbaseClient
    from cryptolake.sources.kraken import KrakenClient
    from cryptolake.status import collection_status
    from cryptolake.streaming import StreamCollector, StreamReport
    from cryptolake.verify import verify

__all__ = [
    "ArchiveFileError",
    "ArchiveSource",
    "BadPayload",
    "BinanceArchive",
    "BinanceClient",
    "BybitClient",
    "CoinbaseClient",
    "CollectionReport",
    "CollectorScheduler",
    "ConfigError",
    "CryptoCollector",
    "CryptolakeError",
    "DataGapDetector",
    "ExchangeUnavailable",
    "Gap",
    "IPBanned",
    "Interrupted",
    "InvalidSymbol",
    "InvalidSymbolName",
    "KrakenClient",
    "Lake",
    "LakeError",
    "LakeLocked",
    "LoaderError",
    "LoaderRejected",
    "LoaderUnavailable",
    "Market",
    "MissingDependency",
    "PostgresLoader",
    "PriceData",
    "ProgressEvent",
    "QueryError",
    "RateLimited",
    "RequestRejected",
    "RestrictedLocation",
    "SchedulerError",
    "SchemaMismatch",
    "SourceError",
    "StreamCollector",
    "StreamReport",
    "SymbolResult",
    "SyncReport",
    "TopCrypto",
    "Transient",
    "VersionConflict",
    "__version__",
    "collection_status",
    "verify",
]

# Where each public name lives. They are imported on first use (PEP 562), so that `import
# cryptolake` (and with it the `cryptolake` command) does not pay for polars, duckdb, httpx, ...
_LAZY: dict[str, str] = {
    "ArchiveFileError": "cryptolake.errors",
    "ArchiveSource": "cryptolake.sources.archive",
    "BadPayload": "cryptolake.errors",
    "BinanceArchive": "cryptolake.sources.archive",
    "BinanceClient": "cryptolake.sources.binance",
    "BybitClient": "cryptolake.sources.bybit",
    "CoinbaseClient": "cryptolake.sources.coinbase",
    "KrakenClient": "cryptolake.sources.kraken",
    "Market": "cryptolake.sources.base",
    "CollectionReport": "cryptolake.collector",
    "CollectorScheduler": "cryptolake.scheduler",
    "ConfigError": "cryptolake.errors",
    "CryptoCollector": "cryptolake.collector",
    "CryptolakeError": "cryptolake.errors",
    "DataGapDetector": "cryptolake.gaps",
    "ExchangeUnavailable": "cryptolake.errors",
    "Gap": "cryptolake.gaps",
    "IPBanned": "cryptolake.errors",
    "Interrupted": "cryptolake.errors",
    "InvalidSymbol": "cryptolake.errors",
    "InvalidSymbolName": "cryptolake.errors",
    "Lake": "cryptolake.lake",
    "LakeError": "cryptolake.errors",
    "LakeLocked": "cryptolake.errors",
    "LoaderError": "cryptolake.errors",
    "LoaderRejected": "cryptolake.errors",
    "LoaderUnavailable": "cryptolake.errors",
    "MissingDependency": "cryptolake.errors",
    "PostgresLoader": "cryptolake.loader",
    "PriceData": "cryptolake.sources.binance",
    "ProgressEvent": "cryptolake.collector",
    "QueryError": "cryptolake.errors",
    "RateLimited": "cryptolake.errors",
    "RequestRejected": "cryptolake.errors",
    "RestrictedLocation": "cryptolake.errors",
    "SchedulerError": "cryptolake.errors",
    "SchemaMismatch": "cryptolake.errors",
    "SourceError": "cryptolake.errors",
    "StreamCollector": "cryptolake.streaming",
    "StreamReport": "cryptolake.streaming",
    "SymbolResult": "cryptolake.collector",
    "SyncReport": "cryptolake.loader",
    "TopCrypto": "cryptolake.sources.binance",
    "Transient": "cryptolake.errors",
    "VersionConflict": "cryptolake.errors",
    "collection_status": "cryptolake.status",
    "verify": "cryptolake.verify",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The public names and the module's dunders (not the helpers this file imports)."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
