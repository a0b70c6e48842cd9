"""Settings: defaults < config.toml < .env < environment < CLI flags, resolved once at the edge.

Every setting has a TOML key (``[section] name``) and an environment name: ``CRYPTOLAKE_`` +
section + name in upper case (``CRYPTOLAKE_BINANCE_TIMEOUT_S``), plus the original design's names
where it had one (``COLLECTION_START_DATE``, ``TOP_N_CRYPTOS``, ``COLLECTION_SCHEDULE``,
``BINANCE_API_KEY``, ``BINANCE_API_SECRET``). :func:`load_settings` takes the file, the ``.env``
file and the environment as arguments, so nothing below the CLI reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptolake.errors import ConfigError
from cryptolake.intervals import INTERVALS
from cryptolake.redact import redact_dsn

DEFAULT_CONFIG_FILE = "config.toml"

#: Base assets left out of the top-N universe: stablecoins, fiat and leveraged tokens (globs).
DEFAULT_EXCLUDED_BASES: tuple[str, ...] = (
    "USDT", "USDC", "BUSD", "TUSD", "FDUSD", "USDP", "PAX", "DAI", "UST", "USTC", "USDD",
    "PYUSD", "USD1", "USDE", "RLUSD", "XUSD", "BFUSD", "AEUR", "EURI", "EUR", "GBP", "AUD",
    "BRL", "TRY", "*DOWN", "*BULL", "*BEAR",
    "BTCUP", "ETHUP", "BNBUP", "ADAUP", "XRPUP", "DOTUP", "LINKUP", "TRXUP", "XTZUP", "EOSUP",
    "LTCUP", "UNIUP", "SXPUP", "FILUP", "YFIUP", "BCHUP", "AAVEUP", "SUSHIUP", "XLMUP", "1INCHUP",
)  # fmt: skip


class _Invalid(ValueError):
    """A value that does not have the accepted form; the message is the accepted form."""


# -- parsers: text (or a TOML value) -> typed value; raise _Invalid(accepted form) ----------


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("a string")
    return value


#: An S3 bucket name as S3 allows it: 3-63 lowercase letters, digits, dots and hyphens, starting
#: and ending with a letter or digit, no ``..``, not an IP address, no ``xn--`` prefix.
_BUCKET = re.compile(r"^(?!xn--)(?!\d+\.\d+\.\d+\.\d+$)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_bucket_name(name: str) -> bool:
    """Whether ``name`` is a valid S3 bucket name."""
    return bool(_BUCKET.match(name))


def _path(value: Any) -> str:
    text = _text(value).strip()
    if not text:
        raise _Invalid("a folder path (empty is not one)")
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if "@" in bucket:
            raise _Invalid(
                "s3://bucket/prefix without credentials (use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        if not is_bucket_name(bucket):
            raise _Invalid(
                "s3://bucket/prefix with a valid bucket name (3-63 lowercase letters, digits, . or -)"
            )
        prefix = prefix.strip("/")
        if "?" in prefix or "#" in prefix or any(p in ("", ".", "..") for p in prefix.split("/") if prefix):
            raise _Invalid(
                "s3://bucket/prefix with a prefix of plain names (no //, ., .., ?query or #fragment)"
            )
        return "s3://" + bucket + ("/" + prefix if prefix else "")
    if "://" in text or re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", text):
        # Not a folder named "gs:": the other object stores are not supported.
        raise _Invalid("a local folder path or s3://bucket/prefix (other URL schemes are not supported)")
    return text


def _source_address(value: Any) -> str:
    text = _text(value).strip()
    if not text:
        return text
    wanted = _Invalid("an IP address of this host, such as 10.0.0.12 (or empty)")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise wanted from None
    if address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255":
        raise wanted
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:  # an address this host does not have fails here, not as a connection error later
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((text, 0))
    except OSError as exc:
        raise _Invalid(f"an IP address of this host ({text}: {exc.strerror or exc})") from None
    return text


def _optional_path(value: Any) -> str:
    return _text(value).strip()


def _archive_url(value: Any) -> str:
    try:
        return _base_url(value)
    except _Invalid:
        raise _Invalid("an http(s) URL such as https://data.binance.vision") from None


def _optional_url(value: Any) -> str:
    return _base_url(value) if _text(value).strip() else ""


def _source(value: Any) -> str:
    text = _text(value).strip().lower()
    if text not in ("auto", "rest", "archive"):
        raise _Invalid("auto, rest or archive")
    return text


#: Exchanges cryptolake collects from (as ``cryptolake.lake.layout.EXCHANGES``, which the lake
#: layer keeps without importing the settings).
EXCHANGES: tuple[str, ...] = ("binance", "coinbase", "kraken", "bybit")


def _exchange(value: Any) -> str:
    text = _text(value).strip().lower()
    if text not in EXCHANGES:
        raise _Invalid(", ".join(EXCHANGES))
    return text


def _exchanges(value: Any) -> tuple[str, ...]:
    try:
        names = tuple(_exchange(name) for name in _list(value))
    except _Invalid:
        raise _Invalid(f"a list of exchanges among {', '.join(EXCHANGES)}") from None
    return tuple(dict.fromkeys(names))


def _key(value: Any) -> str:
    """An API key or secret: sent in an HTTP header, so printable ASCII without spaces."""
    text = _text(value).strip()
    if text and not all(33 <= ord(ch) <= 126 for ch in text):
        raise _Invalid("printable ASCII without spaces or control characters (as Binance issues keys)")
    return text


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            number = int(value) if not isinstance(value, (bool, float)) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not low <= number <= high:
            raise _Invalid(f"a whole number from {low} to {high}")
        return number

    return parse


def _float_between(low: float, high: float, *, low_open: bool = False) -> Callable[[Any], float]:
    form = f"a number {'>' if low_open else '>='} {low:g} and <= {high:g}"

    def parse(value: Any) -> float:
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if (
            number is None
            or not math.isfinite(number)
            or number > high
            or number < low
            or (low_open and number == low)
        ):
            raise _Invalid(form)
        return number

    return parse


def _date(value: Any) -> date:
    """A UTC date, or a UTC date and time (ISO 8601; naive means UTC; ``Z`` or an offset)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid("a date YYYY-MM-DD or a UTC date and time such as 2023-01-01T00:00:00Z") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _interval(value: Any) -> str:
    if value not in INTERVALS:
        raise _Invalid(f"one of {' '.join(INTERVALS)} (case-sensitive)")
    return str(value)


def _asset(value: Any) -> str:
    text = _text(value).strip().upper()
    if not re.fullmatch(r"[A-Z0-9]{2,12}", text):
        raise _Invalid("an asset code such as USDT")
    return text


def _list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                raise _Invalid("a comma-separated list or a TOML array of strings") from None
        else:
            value = [item for item in (part.strip() for part in text.split(",")) if item]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Invalid("a comma-separated list or a TOML array of strings")
    return tuple(item.strip() for item in value)


def _symbols(value: Any) -> tuple[str, ...]:
    """Symbols or base assets; an empty value means "the top N", but a list with an empty name in
    it (``","``, ``"BTC,,ETH"``, ``"BTC,"``) is a mistake, not a request for the top N."""
    listed = isinstance(value, str) and value.strip() and not value.strip().startswith("[")
    if listed and any(not part.strip() for part in value.split(",")):
        raise _Invalid("comma-separated base assets or pairs such as BTC,ETHUSDT, with no empty name")
    names = _list(value)
    if any(not name for name in names):
        raise _Invalid("comma-separated base assets or pairs such as BTC,ETHUSDT, with no empty name")
    return tuple(name.upper() for name in names)


def _base_url(value: Any) -> str:
    text = _text(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise _Invalid("an http(s) URL such as https://data-api.binance.vision")
    if parts.hostname.endswith("binance.us"):
        raise _Invalid(
            "a binance.com host: api.binance.us is a different exchange and its candles must not "
            "share the binance namespace"
        )
    return text


def _stream_url(value: Any) -> str:
    text = _text(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.query or parts.fragment:
        raise _Invalid("a ws(s) URL such as wss://data-stream.binance.vision")
    if parts.path not in ("", "/"):
        raise _Invalid(
            "the stream host alone, such as wss://stream.binance.com:9443: cryptolake adds "
            f"/stream?streams=... itself (drop {parts.path!r})"
        )
    if parts.hostname.endswith("binance.us"):
        raise _Invalid("a binance.com stream host: binance.us is a different exchange")
    return text


#: The default schedule, checked by the tests: settings that keep it need not load APScheduler
#: to parse it (which would cost `cryptolake config` and `--help` a third of their time).
DEFAULT_SCHEDULE = "0 */6 * * *"


def _cron(value: Any) -> str:
    text = _text(value).strip()
    if " ".join(text.split()) == DEFAULT_SCHEDULE:
        return DEFAULT_SCHEDULE
    try:
        from cryptolake.cron import cron_trigger

        cron_trigger(text)  # weekdays as cron numbers them (0 or 7 = Sunday)
    except ImportError:  # pragma: no cover - apscheduler is a core dependency
        if len(text.split()) != 5:
            raise _Invalid("a 5-field cron expression such as '0 */6 * * *'") from None
    except ValueError:
        raise _Invalid(
            "a 5-field cron expression such as '0 */6 * * *' (minute hour day month weekday)"
        ) from None
    if not cron_can_fire(text):
        raise _Invalid(
            f"a cron expression that fires at some time; {text!r} never does (a day that no "
            "month has, such as the 30th of February)"
        )
    return text


def cron_can_fire(expression: str) -> bool:
    """False for a valid cron expression with no fire time at all (the 30th of February)."""
    from datetime import datetime

    from cryptolake.cron import cron_trigger

    return cron_trigger(expression).get_next_fire_time(None, datetime(2024, 1, 1, tzinfo=UTC)) is not None


def _dsn(value: Any) -> str:
    text = _text(value).strip()
    form = "a PostgreSQL URL (postgresql://user@host:5432/db) or key=value DSN"
    if not text:
        return text
    if text.startswith(("postgresql://", "postgres://")):
        try:
            urlsplit(text).port  # noqa: B018 - parses host and port, raises on '[bad' or 'host:x'
        except ValueError:
            raise _Invalid(
                f"{form}; this URL is malformed (check the brackets around the host and the port)"
            ) from None
    elif "=" not in text:
        raise _Invalid(form)
    return text


def _pg_name(value: Any) -> str:
    text = _text(value).strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", text):
        raise _Invalid("a PostgreSQL name: 1 to 63 letters, digits or '_', not starting with a digit")
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise _Invalid("true or false")


# -- the settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingSpec:
    """One setting: where it lives, how it parses, its default and documentation."""

    section: str
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    legacy_env: str | None = None
    secret: bool = False

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return f"CRYPTOLAKE_{self.section}_{self.name}".upper()


def _venue_specs(
    section: str, title: str, url: str, quote: str, limit: str, concurrency: int, concurrency_help: str
) -> tuple[SettingSpec, ...]:
    """The settings of a REST exchange other than Binance (its ``[section]``)."""
    return (
        SettingSpec(section, "base_url", _base_url, url, f"{title} REST host."),
        SettingSpec(section, "quote_asset", _asset, quote, f"Quote asset of {title}'s pairs (BTC means BTC/{quote} there)."),
        SettingSpec(section, "timeout_s", _float_between(0, 600, low_open=True), 10.0,
                    f"Timeout of one request to {title}, seconds."),
        SettingSpec(section, "max_retries", _int_between(0, 20), 3,
                    f"Retries of a {title} request after timeouts, connection errors, 5xx and 429."),
        SettingSpec(section, "concurrency", _int_between(1, 64), concurrency, concurrency_help),
        SettingSpec(section, "requests_per_s", _float_between(0, 10_000), 0.0,
                    f"Requests per second to {title} (0: its documented public limit, {limit})."),
    )  # fmt: skip


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "lake", "root", _path, "data/lake", "Folder of the Parquet lake, or s3://bucket/prefix (AWS_* variables)."
    ),
    SettingSpec("binance", "base_url", _base_url, "https://data-api.binance.vision",
                "Binance REST host: the market-data host, https://api.binance.com or a mirror."),
    SettingSpec("binance", "api_key", _key, "", "Optional API key (public data needs none).",
                legacy_env="BINANCE_API_KEY", secret=True),
    SettingSpec("binance", "api_secret", _key, "", "Optional API secret (unused by market data).",
                legacy_env="BINANCE_API_SECRET", secret=True),
    SettingSpec("binance", "timeout_s", _float_between(0, 600, low_open=True), 10.0,
                "Timeout of one request, seconds."),
    SettingSpec("binance", "max_retries", _int_between(0, 20), 3,
                "Retries of a request after timeouts, connection errors, 5xx and 429."),
    SettingSpec("binance", "retry_delay_s", _float_between(0, 300), 1.0,
                "First retry delay, seconds; doubles per retry, with jitter."),
    SettingSpec("binance", "concurrency", _int_between(1, 64), 16, "Requests in flight at once."),
    SettingSpec("binance", "weight_share", _float_between(0, 1, low_open=True), 0.9,
                "Share of Binance's request-weight limit (6000/minute) this process may use."),
    SettingSpec("binance", "archive_url", _archive_url, "https://data.binance.vision",
                "Binance's bulk archive of kline files (and its S3 listing)."),
    SettingSpec("binance", "archive_listing_url", _optional_url, "",
                "Where the archive's S3 listing is read (empty: Binance's bucket endpoint for data.binance.vision, else the archive URL)."),
    SettingSpec("binance", "archive_cache_dir", _optional_path, "",
                "Keep downloaded archive files in this folder (empty: not kept after their rows are merged)."),
    SettingSpec("binance", "stream_url", _stream_url, "wss://data-stream.binance.vision",
                "Binance WebSocket host of `cryptolake stream` (market-data streams, or wss://stream.binance.com:9443)."),
    SettingSpec("binance", "source_address", _source_address, "",
                "Local IP address Binance requests leave from (a host with several: one per shard); empty: any."),
    *_venue_specs("coinbase", "Coinbase Exchange", "https://api.exchange.coinbase.com", "USD", "10/s", 8,
                  "Requests to Coinbase Exchange in flight at once."),
    *_venue_specs("kraken", "Kraken", "https://api.kraken.com", "USD", "about 1/s per pair", 64,
                  "Pages of Kraken candles in flight at once (each pair keeps its own pace, so more pages than pairs keeps every pair busy)."),
    *_venue_specs("bybit", "Bybit", "https://api.bybit.com", "USDT", "600 per 5 s", 16,
                  "Requests to Bybit in flight at once."),
    SettingSpec("collection", "exchange", _exchange, "binance",
                "Exchange a command reads and writes when --exchange is not given: binance, coinbase, kraken or bybit."),
    SettingSpec("collection", "exchanges", _exchanges, (),
                "Exchanges `cryptolake run` keeps complete, in parallel (empty: collection.exchange)."),
    SettingSpec("collection", "quote_asset", _asset, "USDT", "Quote asset of the collected Binance pairs."),
    SettingSpec("collection", "interval", _interval, "1h", "Candle interval (1s ... 1M)."),
    SettingSpec("collection", "start_date", _date, date(2024, 1, 1),
                "Collect history from this UTC date or ISO time (or the listing, if later).",
                legacy_env="COLLECTION_START_DATE"),
    SettingSpec("collection", "top_n", _int_between(1, 1000), 50,
                "Size of the universe: top N pairs by 24 h quote volume.", legacy_env="TOP_N_CRYPTOS"),
    SettingSpec("collection", "symbols", _symbols, (),
                "Explicit symbols or base assets (BTC, ETHUSDT); empty = the top N."),
    SettingSpec("collection", "excluded_bases", _list, DEFAULT_EXCLUDED_BASES,
                "Base assets (glob patterns) left out of the top N: stablecoins, leveraged tokens."),
    SettingSpec("collection", "source", _source, "auto",
                "Where candles come from: auto (archive files where they save requests, REST for the rest), rest or archive."),
    SettingSpec("collection", "batch_size_hours", _int_between(1, 100_000), 720,
                "Hours of candles fetched and written per batch (bounds memory)."),
    SettingSpec("collection", "exchange_gap_recheck_days", _float_between(0, 100_000), 30.0,
                "Fetch a confirmed exchange outage or no-trade period again after this many days (0 = never)."),
    SettingSpec("scheduler", "schedule", _cron, DEFAULT_SCHEDULE,
                "Cron expression (UTC) of scheduled collection runs.", legacy_env="COLLECTION_SCHEDULE"),
    SettingSpec("stream", "enabled", _bool, False,
                "Make `cryptolake run` keep a live stream of the collection's Binance symbols going beside its scheduled runs."),
    SettingSpec("stream", "interval", _interval, "1m", "Candle interval of the live stream (`cryptolake stream`, `run`)."),
    SettingSpec("stream", "flush_s", _float_between(0.1, 60), 5.0,
                "Streamed candles are written to the lake this often, seconds."),
    SettingSpec("stream", "compact_files", _int_between(1, 10_000), 60,
                "A partition's stream files are compacted into its data.parquet once it has this many."),
    SettingSpec("quality", "spike_mads", _float_between(1, 1000), 15.0,
                "A close this many robust deviations (MAD of log returns) from both neighbours is a spike."),
    SettingSpec("quality", "spike_window", _int_between(5, 100_000), 240,
                "Candles around each one whose returns set the spike threshold."),
    SettingSpec("quality", "zero_volume_hours", _float_between(0, 100_000, low_open=True), 24.0,
                "Hours in a row without volume that make a zero_volume_run warning."),
    SettingSpec("postgres", "dsn", _dsn, "", "PostgreSQL DSN for `cryptolake load postgres`.",
                secret=True),
    SettingSpec("postgres", "schema", _pg_name, "cryptolake", "Schema of the PostgreSQL candle table."),
    SettingSpec("postgres", "table", _pg_name, "klines", "PostgreSQL table the lake is synced into."),
    SettingSpec("postgres", "timescale", _bool, False,
                "Make the table a TimescaleDB hypertable (the server must offer the extension)."),
)  # fmt: skip

SPECS_BY_KEY = {spec.key: spec for spec in SPECS}


@dataclass(frozen=True)
class LakeSettings:
    #: A folder, or an ``s3://bucket/prefix`` URL (object storage).
    root: Path | str


@dataclass(frozen=True)
class BinanceSettings:
    base_url: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    timeout_s: float
    max_retries: int
    retry_delay_s: float
    concurrency: int
    weight_share: float
    archive_url: str
    archive_listing_url: str
    archive_cache_dir: str
    stream_url: str
    source_address: str


@dataclass(frozen=True)
class VenueSettings:
    """A REST exchange other than Binance: host, quote asset, timeout, retries, pace."""

    base_url: str
    quote_asset: str
    timeout_s: float
    max_retries: int
    concurrency: int
    requests_per_s: float


@dataclass(frozen=True)
class CollectionSettings:
    exchange: str
    exchanges: tuple[str, ...]
    quote_asset: str
    interval: str
    start_date: date
    top_n: int
    symbols: tuple[str, ...]
    excluded_bases: tuple[str, ...]
    source: str
    batch_size_hours: int
    exchange_gap_recheck_days: float


@dataclass(frozen=True)
class SchedulerSettings:
    schedule: str


@dataclass(frozen=True)
class StreamSettings:
    enabled: bool = False
    interval: str = "1m"
    flush_s: float = 5.0
    compact_files: int = 60


@dataclass(frozen=True)
class QualitySettings:
    spike_mads: float = 15.0
    spike_window: int = 240
    zero_volume_hours: float = 24.0


@dataclass(frozen=True)
class PostgresSettings:
    dsn: str = field(repr=False)
    schema: str = "cryptolake"
    table: str = "klines"
    timescale: bool = False


@dataclass(frozen=True)
class Settings:
    """The effective configuration, and where each value came from."""

    lake: LakeSettings
    binance: BinanceSettings
    coinbase: VenueSettings
    kraken: VenueSettings
    bybit: VenueSettings
    collection: CollectionSettings
    scheduler: SchedulerSettings
    stream: StreamSettings
    quality: QualitySettings
    postgres: PostgresSettings
    sources: Mapping[str, str] = field(repr=False, compare=False)
    #: Things worth telling the user that do not stop the command (an unknown variable).
    warnings: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value set (API key and secret, the PostgreSQL DSN); never print these."""
        values = [getattr(getattr(self, spec.section), spec.name) for spec in SPECS if spec.secret]
        return tuple(str(v) for v in values if v)

    def describe(self) -> list[tuple[str, str, str, str]]:
        """``(key, shown value, source, env name)`` per setting, secrets redacted."""
        rows = []
        for spec in SPECS:
            value = getattr(getattr(self, spec.section), spec.name)
            rows.append((spec.key, display_value(spec, value), self.sources[spec.key], spec.env))
        return rows


_SECTIONS = {
    "lake": LakeSettings,
    "binance": BinanceSettings,
    "coinbase": VenueSettings,
    "kraken": VenueSettings,
    "bybit": VenueSettings,
    "collection": CollectionSettings,
    "scheduler": SchedulerSettings,
    "stream": StreamSettings,
    "quality": QualitySettings,
    "postgres": PostgresSettings,
}


def display_value(spec: SettingSpec, value: Any) -> str:
    """How a value is shown to people: secrets redacted, lists comma-joined."""
    if spec.key == "postgres.dsn":
        return redact_dsn(str(value))
    if spec.secret:
        return "***" if value else ""
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return redact_dsn(str(value))  # a password inside a URL (binance.base_url) is a secret too


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    dotenv_file: str | Path | None = ".env",
    overrides: Mapping[str, tuple[Any, str]] | None = None,
) -> Settings:
    """Resolve the effective settings.

    Args:
        config_file: a TOML file; None means ``config.toml`` if it exists. A named file that
            does not exist is an error.
        environ: the environment (pass ``os.environ`` at the edge, a dict in tests).
        dotenv_file: a ``.env`` file read below the environment; None to skip.
        overrides: ``{key: (value, source)}`` from CLI flags, e.g.
            ``{"lake.root": ("data/x", "--lake")}``.

    Raises:
        ConfigError: one line naming the key, where the value came from and the accepted form.
    """
    values: dict[str, Any] = {spec.key: spec.default for spec in SPECS}
    sources = {spec.key: "default" for spec in SPECS}
    for key, (raw, source) in _file_values(config_file).items():
        values[key], sources[key] = _parse(SPECS_BY_KEY[key], raw, source), source
    for layer, label in ((_dotenv(dotenv_file), ".env"), (dict(environ or {}), "environment")):
        for spec in SPECS:
            for name in (spec.legacy_env, spec.env):  # the CRYPTOLAKE_ name wins over the legacy one
                if name and name in layer:
                    source = f"{label} {name}"
                    values[spec.key], sources[spec.key] = _parse(spec, layer[name], source), source
    for key, (raw, source) in (overrides or {}).items():
        if raw is None:
            continue
        if key not in SPECS_BY_KEY:
            raise ConfigError(f"unknown setting {key!r} from {source}")
        values[key], sources[key] = _parse(SPECS_BY_KEY[key], raw, source), source
    if not str(values["lake.root"]).startswith("s3://"):
        values["lake.root"] = Path(values["lake.root"])
    sections = {
        section: cls(**{spec.name: values[spec.key] for spec in SPECS if spec.section == section})
        for section, cls in _SECTIONS.items()
    }
    layers = {**_dotenv(dotenv_file), **dict(environ or {})}
    return Settings(**sections, sources=sources, warnings=unknown_variables(layers))


#: ``CRYPTOLAKE_`` variables that are not settings but are read by something else.
OTHER_VARIABLES = frozenset({"CRYPTOLAKE_CONFIG", "CRYPTOLAKE_TEST_PG_DSN"})


def unknown_variables(environ: Mapping[str, str]) -> tuple[str, ...]:
    """A warning for each ``CRYPTOLAKE_*`` variable that names no setting, with the closest one.

    Such a variable is a typo (``CRYPTOLAKE_BINANCE_TIMEOUTS``) that would otherwise be ignored
    without a word, while the same typo in ``config.toml`` is refused.
    """
    import difflib

    known = {spec.env for spec in SPECS} | OTHER_VARIABLES
    out = []
    for name in sorted(environ):
        if not name.startswith("CRYPTOLAKE_") or name in known:
            continue
        tails = {k.removeprefix("CRYPTOLAKE_"): k for k in known}
        close = difflib.get_close_matches(name.removeprefix("CRYPTOLAKE_"), sorted(tails), n=1, cutoff=0.6)
        hint = f"; did you mean {tails[close[0]]}?" if close else "; `cryptolake config` lists the settings"
        out.append(f"environment variable {name} is not a cryptolake setting and is ignored{hint}")
    return tuple(out)


def _parse(spec: SettingSpec, raw: Any, source: str) -> Any:
    try:
        return spec.parse(raw)
    except _Invalid as exc:
        shown = "***" if spec.secret else repr(redact_dsn(raw) if isinstance(raw, str) else raw)
        raise ConfigError(f"{spec.key} = {shown} (from {source}) is invalid: expected {exc}") from None


def _file_values(config_file: str | Path | None) -> dict[str, tuple[Any, str]]:
    path = Path(config_file) if config_file is not None else Path(DEFAULT_CONFIG_FILE)
    if not path.is_file():
        if config_file is not None:
            raise ConfigError(f"config file {str(path)!r} does not exist")
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    found: dict[str, tuple[Any, str]] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section!r} must be a [section]; sections: {', '.join(_SECTIONS)}")
        for name, raw in table.items():
            key = f"{section}.{name}"
            if key not in SPECS_BY_KEY:
                raise ConfigError(f"{path}: unknown setting {key!r}; see `cryptolake config` for the list")
            found[key] = (raw, str(path))
    return found


def _dotenv(dotenv_file: str | Path | None) -> dict[str, str]:
    if dotenv_file is None or not Path(dotenv_file).is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(dotenv_file).items() if v is not None}
