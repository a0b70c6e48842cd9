"""Where things live in the lake. Pure: builds paths and names, touches no file.

The layout is a public contract::

    <root>/klines/exchange=<exchange>/interval=<interval>/symbol=<SYMBOL>/month=<YYYY-MM>/data.parquet
    <root>/klines/.../month=<YYYY-MM>/stream-<first open ms>-<hex>.parquet   streamed candles
                                        not yet compacted into data.parquet (see :mod:`cryptolake.lake.store`)
    <root>/klines/.../month=<YYYY-MM>/.cryptolake-commit.json   what cryptolake committed there
    <root>/_meta/                       lake metadata (the writer lock, ...)

The calendar-month interval ``1M`` is stored as ``interval=1mo`` (as Binance's own archive does),
because ``1m`` and ``1M`` collide on case-insensitive filesystems.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from pathlib import Path

from cryptolake.errors import InvalidSymbolName
from cryptolake.schema import Interval
from cryptolake.timeutils import from_ms

#: The exchange of a lake written before there were others (and of ``Lake(root)``).
DEFAULT_EXCHANGE = "binance"
#: Exchanges cryptolake collects from (the ``exchange=`` key of the layout).
EXCHANGES: tuple[str, ...] = ("binance", "coinbase", "kraken", "bybit")
KLINES_DIR = "klines"
META_DIR = "_meta"
DATA_FILE = "data.parquet"
#: Beside each data file cryptolake committed: its size and modification time at commit.
COMMIT_FILE = ".cryptolake-commit.json"
LOCK_FILE = "writer.lock"
MAX_SYMBOL_LEN = 40

_DIR_OF_INTERVAL = {"1M": "1mo"}
_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_ASCII_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
#: Temp files written next to data.parquet while a partition is replaced.
TEMP_PREFIX = f".{DATA_FILE}."
TEMP_SUFFIX = ".tmp"
_TEMP_RE = re.compile(r"^\.data\.parquet\.[0-9]+\.[0-9a-f]+\.tmp$")
#: Small files of streamed candles beside ``data.parquet``, named so that they sort after it.
STREAM_PREFIX = "stream-"
_STREAM_RE = re.compile(r"^stream-[0-9]{13}-[0-9a-f]{8,32}\.parquet$")
#: A hidden second name a compaction gives each stream file it absorbs, until the compacted
#: ``data.parquet`` is in place (a compaction killed in between is finished from it).
ABSORBING_SUFFIX = ".absorbing"

_SYMBOL_RULE = (
    f"1 to {MAX_SYMBOL_LEN} characters, each an uppercase ASCII letter, a digit, '-', '_', '.' "
    "or a non-ASCII letter/digit in NFKC normal form; not starting with '.' or '-', "
    "not ending with '.', and without '..'"
)


def validate_symbol(symbol: str) -> str:
    """Check that ``symbol`` is safe to use as a path segment and return it unchanged.

    Args:
        symbol: An exchange symbol such as ``BTCUSDT`` or ``币安人生USDT``.

    Returns:
        The same string.

    Raises:
        InvalidSymbolName: The symbol is empty, too long, contains a character that is not
            allowed (lowercase ASCII, whitespace, control or format characters, path
            separators, ``=``, ``%``, quotes, ...), contains ``..``, starts with ``.``/``-``,
            or is not in NFKC normal form (e.g. fullwidth letters).
    """
    problem = _symbol_problem(symbol)
    if problem is not None:
        raise InvalidSymbolName(
            f"invalid symbol {symbol!r}: {problem}; a symbol is {_SYMBOL_RULE}", symbol=symbol
        )
    return symbol


def is_valid_symbol(symbol: str) -> bool:
    """True if :func:`validate_symbol` would accept ``symbol``."""
    return _symbol_problem(symbol) is None


def _symbol_problem(symbol: object) -> str | None:
    if not isinstance(symbol, str):
        return f"expected a string, got {type(symbol).__name__}"
    if not 1 <= len(symbol) <= MAX_SYMBOL_LEN:
        return f"length {len(symbol)} is outside 1..{MAX_SYMBOL_LEN}"
    bad = [c for c in symbol if not _char_ok(c)]
    if bad:
        return f"character {bad[0]!r} is not allowed"
    if symbol[0] in ".-":
        return f"it starts with {symbol[0]!r}"
    if symbol.endswith("."):
        return "it ends with '.'"
    if ".." in symbol:
        return "it contains '..'"
    if unicodedata.normalize("NFKC", symbol) != symbol:
        return "it is not in Unicode NFKC normal form"
    return None


def _char_ok(char: str) -> bool:
    if char in _ASCII_OK:
        return True
    return not char.isascii() and (char.isalpha() or char.isdigit())


def validate_exchange(exchange: str) -> str:
    """Return ``exchange`` if it is one cryptolake knows (see :data:`EXCHANGES`), else raise
    ValueError."""
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}; cryptolake knows {', '.join(EXCHANGES)}")
    return exchange


def interval_dir(interval: str) -> str:
    """The path value for an interval: its Binance name, except ``1M`` -> ``1mo``.

    Raises:
        ValueError: ``interval`` is not a Binance kline interval.
    """
    name = Interval(interval).name
    return _DIR_OF_INTERVAL.get(name, name)


def validate_month(month: str) -> str:
    """Return ``month`` if it is ``YYYY-MM`` (01..12), else raise ValueError."""
    if not isinstance(month, str) or _MONTH_RE.match(month) is None:
        raise ValueError(f"invalid month {month!r}; expected YYYY-MM, e.g. '2024-01'")
    return month


def is_valid_month(month: str) -> bool:
    """True if ``month`` is ``YYYY-MM``."""
    return _MONTH_RE.match(month) is not None


def klines_dir(root: str | Path) -> Path:
    """``<root>/klines``."""
    return Path(root) / KLINES_DIR


def exchange_dir(root: str | Path, exchange: str = DEFAULT_EXCHANGE) -> Path:
    """``<root>/klines/exchange=<exchange>``."""
    return klines_dir(root) / f"exchange={validate_exchange(exchange)}"


def interval_root(root: str | Path, interval: str, exchange: str = DEFAULT_EXCHANGE) -> Path:
    """``<root>/klines/exchange=<exchange>/interval=<interval>``."""
    return exchange_dir(root, exchange) / f"interval={interval_dir(interval)}"


def symbol_dir(root: str | Path, interval: str, symbol: str, exchange: str = DEFAULT_EXCHANGE) -> Path:
    """``.../interval=<interval>/symbol=<SYMBOL>``."""
    return interval_root(root, interval, exchange) / f"symbol={validate_symbol(symbol)}"


def partition_dir(
    root: str | Path, interval: str, symbol: str, month: str, exchange: str = DEFAULT_EXCHANGE
) -> Path:
    """The folder of one partition: ``.../symbol=<SYMBOL>/month=<YYYY-MM>``.

    Raises:
        InvalidSymbolName: ``symbol`` is not safe as a path segment.
        ValueError: Unknown interval or malformed month.
    """
    return symbol_dir(root, interval, symbol, exchange) / f"month={validate_month(month)}"


def partition_path(
    root: str | Path, interval: str, symbol: str, month: str, exchange: str = DEFAULT_EXCHANGE
) -> Path:
    """The Parquet file of one partition: ``<partition_dir>/data.parquet``."""
    return partition_dir(root, interval, symbol, month, exchange) / DATA_FILE


def month_of(open_time_ms: int) -> str:
    """The ``YYYY-MM`` (UTC) month that contains ``open_time_ms``."""
    moment = from_ms(open_time_ms)
    return f"{moment.year:04d}-{moment.month:02d}"


def month_bounds(month: str) -> tuple[int, int]:
    """``[start_ms, next_month_start_ms)`` of a ``YYYY-MM`` month in UTC.

    Raises:
        ValueError: ``month`` is not ``YYYY-MM``.
    """
    year, mon = (int(part) for part in validate_month(month).split("-"))
    next_year, next_mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return _month_start_ms(year, mon), _month_start_ms(next_year, next_mon)


def _month_start_ms(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def klines_glob(root: str | Path) -> str:
    """Glob of every candle file, for DuckDB's ``read_parquet(..., hive_partitioning = true)``."""
    return f"{klines_dir(root).as_posix()}/**/*.parquet"


def meta_dir(root: str | Path) -> Path:
    """``<root>/_meta``: lake metadata such as the writer lock."""
    return Path(root) / META_DIR


def commit_path(partition_file: str | Path) -> Path:
    """The commit record beside a partition file (``.../month=<YYYY-MM>/.cryptolake-commit.json``).

    Its leading dot keeps it out of ``*.parquet`` globs, Spark and pyarrow datasets."""
    return Path(partition_file).parent / COMMIT_FILE


def lock_path(root: str | Path) -> Path:
    """``<root>/_meta/writer.lock``."""
    return meta_dir(root) / LOCK_FILE


def temp_name(pid: int, token: str) -> str:
    """Name of the temp file a writer uses beside ``data.parquet`` (``token`` is lowercase hex)."""
    return f"{TEMP_PREFIX}{pid}.{token}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """True if ``name`` is a partition temp file (see :func:`temp_name`)."""
    return _TEMP_RE.match(name) is not None


def stream_file_name(first_open_ms: int, token: str) -> str:
    """Name of a file of streamed candles whose first open time is ``first_open_ms``."""
    return f"{STREAM_PREFIX}{first_open_ms:013d}-{token}.parquet"


def is_stream_name(name: str) -> bool:
    """True if ``name`` is a file of streamed candles (see :func:`stream_file_name`)."""
    return _STREAM_RE.match(name) is not None


def absorbing_name(stream_name: str) -> str:
    """The hidden name a compaction links a stream file to while it absorbs it."""
    return f".{stream_name}{ABSORBING_SUFFIX}"


def absorbed_stream_name(name: str) -> str | None:
    """The stream file an absorbing link stands for, or None if ``name`` is not one."""
    if name.startswith(".") and name.endswith(ABSORBING_SUFFIX):
        inner = name[1 : -len(ABSORBING_SUFFIX)]
        return inner if is_stream_name(inner) else None
    return None


def is_lake(root: str | Path) -> bool:
    """True if ``root`` is a folder that holds a lake (``klines/`` or ``_meta/``)."""
    base = Path(root)
    return (base / KLINES_DIR).is_dir() or (base / META_DIR).is_dir()
