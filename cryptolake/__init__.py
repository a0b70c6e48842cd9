"""cryptolake: a complete, trustworthy history of crypto market candles in a Parquet lake."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from cryptolake._version import __version__

if TYPE_CHECKING:  # the names below, for type checkers and IDEs; at run time see __getattr__
    from cryptolake.collector import CollectionReport, CryptoCollector, ProgressEvent, SymbolResult
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

# Where each public name lives. They are imported on first use (PEP 562), so that `import
# cryptolake` (and with it the `cryptolake` command) does not pay for polars, duckdb, httpx, ...
_LAZY: dict[str, str] = {
    "BinanceClient": "cryptolake.sources.binance",
    "CollectionReport": "cryptolake.collector",
    "CollectorScheduler": "cryptolake.scheduler",
    "ConfigError": "cryptolake.errors",
    "CryptoCollector": "cryptolake.collector",
    "CryptolakeError": "cryptolake.errors",
    "DataGapDetector": "cryptolake.gaps",
    "ExchangeUnavailable": "cryptolake.errors",
    "Gap": "cryptolake.gaps",
    "IPBanned": "cryptolake.errors",
    "InvalidSymbol": "cryptolake.errors",
    "Lake": "cryptolake.lake",
    "LoaderError": "cryptolake.errors",
    "PostgresLoader": "cryptolake.loader",
    "PriceData": "cryptolake.sources.binance",
    "ProgressEvent": "cryptolake.collector",
    "RateLimited": "cryptolake.errors",
    "RequestRejected": "cryptolake.errors",
    "RestrictedLocation": "cryptolake.errors",
    "SchedulerError": "cryptolake.errors",
    "SourceError": "cryptolake.errors",
    "SymbolResult": "cryptolake.collector",
    "SyncReport": "cryptolake.loader",
    "TopCrypto": "cryptolake.sources.binance",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
