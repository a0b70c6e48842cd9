"""Every exception cryptolake raises, under one root.

::

    CryptolakeError                      catch this to catch everything below
    ├── ConfigError                      a setting is invalid: names the key, its source, the form
    ├── MissingDependency (ImportError)  an optional extra is not installed
    ├── SourceError                      the exchange did not give us what we asked for
    │   ├── ExchangeUnavailable  [T]     timeouts, connection errors, 5xx, 403, -1001/-1007/-1008
    │   ├── RateLimited          [T]     429: too much weight; .retry_after_s
    │   ├── IPBanned                     418: the IP is banned until .banned_until; never retried
    │   ├── RestrictedLocation           451: Binance refuses this location
    │   ├── RequestRejected              other 4xx; .status, .code, .msg
    │   │   └── InvalidSymbol            -1121; .symbol
    │   ├── BadPayload           [T]     a response that is not what Binance documents
    │   └── ArchiveFileError             a bulk-archive file that cannot be used; .reason, .key
    ├── LakeError                        the Parquet lake
    │   ├── SchemaMismatch               a frame or partition differs from KLINE_SCHEMA; .path, .diff
    │   ├── LakeLocked                   another process holds the writer lock; .root
    │   └── InvalidSymbolName            a symbol unsafe as a path segment; .symbol
    ├── QueryError                       a SQL statement over the lake failed (syntax, a refused write)
    ├── SchedulerError                   one scheduler per lake; none running to take a request
    ├── Interrupted                      a stop was asked for (Ctrl-C, SIGTERM): the work was cut short
    └── LoaderError                      a destination database
        ├── LoaderUnavailable    [T]     cannot connect, or the connection was lost
        └── LoaderRejected               the database refused: incompatible table, SQL error

``[T]`` marks :class:`Transient` errors: retrying the same request later may succeed. Retry
policies retry those and nothing else.
"""

from __future__ import annotations


class CryptolakeError(Exception):
    """Root of every error cryptolake raises."""


class Transient(Exception):
    """Mixin: the same request may succeed if retried later."""


class ConfigError(CryptolakeError):
    """A setting is invalid. The message names the key, where it came from and the form."""


class MissingDependency(CryptolakeError, ImportError):
    """An optional dependency is missing; ``extra`` is what to install."""

    def __init__(self, feature: str, extra: str) -> None:
        self.extra = extra
        super().__init__(f"{feature} needs an optional dependency: pip install 'cryptolake[{extra}]'")


class SourceError(CryptolakeError):
    """The exchange did not give us what we asked for."""


class ExchangeUnavailable(SourceError, Transient):
    """Timeout, connection failure, 5xx or a transient Binance error code."""


class RateLimited(SourceError, Transient):
    """HTTP 429: request weight exceeded. No request may be sent for ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float, used_weight: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.used_weight = used_weight


class IPBanned(SourceError):
    """HTTP 418: the IP is banned. Nothing is sent until ``banned_until`` (epoch seconds)."""

    def __init__(self, message: str, *, banned_until: float, retry_after_s: float) -> None:
        super().__init__(message)
        self.banned_until = banned_until
        self.retry_after_s = retry_after_s


class RestrictedLocation(SourceError):
    """HTTP 451: Binance does not serve this location from this host."""


class RequestRejected(SourceError):
    """A 4xx response for a request that will not succeed if repeated."""

    def __init__(self, message: str, *, status: int, code: int | None = None, msg: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.msg = msg


class InvalidSymbol(RequestRejected):
    """The exchange does not know the symbol (Binance: code -1121)."""

    def __init__(
        self,
        symbol: str,
        *,
        status: int = 400,
        msg: str = "Invalid symbol.",
        exchange: str = "Binance",
        code: int | None = -1121,
    ) -> None:
        detail = f"code {code}: {msg}" if code is not None else msg
        super().__init__(
            f"{exchange} does not know symbol {symbol!r} ({detail})",
            status=status,
            code=code,
            msg=msg,
        )
        self.symbol = symbol


class BadPayload(SourceError, Transient):
    """A response that is not shaped as Binance documents (e.g. malformed JSON)."""


class ArchiveFileError(SourceError):
    """A Binance archive file that cannot be used; ``reason``: ``missing`` (404), ``checksum`` (its
    bytes do not match its .CHECKSUM, twice), ``corrupt`` (not a readable zip of a klines CSV,
    twice), ``empty`` (no candle), ``unavailable`` (the archive did not answer)."""

    def __init__(self, message: str, *, reason: str, key: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.key = key


class LakeError(CryptolakeError):
    """A problem with the Parquet lake."""


class LoaderError(CryptolakeError):
    """A problem loading the lake into a destination database."""


class LoaderUnavailable(LoaderError, Transient):
    """The database cannot be reached, refused the login, or the connection was lost."""


class LoaderRejected(LoaderError):
    """The database refused what the loader asked: an incompatible table, a failed statement."""


class SchemaMismatch(LakeError):
    """A frame or a partition on disk does not match the candle schema (``KLINE_SCHEMA``).

    ``path`` is the offending file (None for an in-memory frame); ``diff`` lists each difference.
    """

    def __init__(self, message: str, *, path: str | None = None, diff: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.path = path
        self.diff = diff


class LakeLocked(LakeError):
    """Another process holds the lake's writer lock; ``root`` is the lake."""

    def __init__(self, message: str, *, root: str) -> None:
        super().__init__(message)
        self.root = root
        #: True when the wait was given up because the caller asked to stop.
        self.cancelled = False


class VersionConflict(LakeError):
    """A conditional put lost: the object changed (or appeared) since it was read
    (:mod:`cryptolake.lake.storage`); read it again, merge again and retry."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} changed while it was being written; read it again and retry")
        self.path = path


class InvalidSymbolName(LakeError):
    """A symbol that is not safe to use as a lake path segment; ``symbol`` is what was given."""

    def __init__(self, message: str, *, symbol: object) -> None:
        super().__init__(message)
        self.symbol = symbol


class Interrupted(CryptolakeError):
    """A stop was asked for (``request_stop``, Ctrl-C, SIGTERM): waiting and sending were cut
    short. Not a failure: nothing is recorded as failed because of it. ``signum``: the signal,
    when one did it."""

    def __init__(self, message: str, *, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


class QueryError(CryptolakeError):
    """A SQL statement over the lake failed (syntax, unknown column, a refused write, ...)."""


class SchedulerError(CryptolakeError):
    """The scheduler cannot do what was asked: another one already runs on the lake, or none
    runs there to take a request from another process, or it did not answer in time."""
