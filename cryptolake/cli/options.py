"""What the commands share: their options (``--lake``, ``--symbols`` checked once, ...), settings
resolution, the lake-path checks and the objects a command builds (client, collector)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cryptolake.cli.failures import UsageProblem
from cryptolake.config import EXCHANGES, Settings, load_settings
from cryptolake.errors import InvalidSymbolName
from cryptolake.redact import register_secret

if TYPE_CHECKING:
    from cryptolake.collector import CryptoCollector
    from cryptolake.sources.base import KlineSource

F = Callable[..., Any]


def lake_option(func: F) -> F:
    return click.option(
        "--lake",
        "lake",
        type=click.Path(file_okay=False),
        default=None,
        help="Lake folder, or s3://bucket/prefix (setting lake.root, default data/lake).",
    )(func)


def base_url_option(func: F) -> F:
    return click.option(
        "--base-url",
        "base_url",
        default=None,
        help="REST host of the exchange (setting <exchange>.base_url, e.g. binance.base_url).",
    )(func)


def _remember_exchange(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta["cryptolake.exchange"] = value.lower()


def exchange_option(func: F) -> F:
    """``--exchange``: whose candles the command reads or writes (setting collection.exchange)."""
    return click.option(
        "--exchange",
        type=click.Choice(EXCHANGES, case_sensitive=False),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_remember_exchange,
        help="Exchange whose candles to read or write (setting collection.exchange, default binance).",
    )(func)


def source_options(func: F) -> F:
    """``--source`` and ``--archive-url``: where candles come from."""
    func = click.option(
        "--archive-url",
        "archive_url",
        default=None,
        help="Binance's bulk archive (setting binance.archive_url, default https://data.binance.vision).",
    )(func)
    return click.option(
        "--source",
        "source",
        type=click.Choice(["auto", "rest", "archive"], case_sensitive=False),
        default=None,
        help="auto: archive files where they save requests, REST for the rest; rest; archive: files only "
        "(setting collection.source).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


_FLAG_OF = {"stream_interval": "--interval"}


def settings_from(ctx: click.Context, **flags: Any) -> Settings:
    """Resolve settings with the given flag values on top (None = flag not given)."""
    names = {
        "lake": "lake.root", "base_url": "binance.base_url", "interval": "collection.interval",
        "since": "collection.start_date", "top": "collection.top_n", "symbols": "collection.symbols",
        "schedule": "scheduler.schedule", "dsn": "postgres.dsn", "source": "collection.source",
        "archive_url": "binance.archive_url", "stream_interval": "stream.interval",
        "stream_url": "binance.stream_url",
    }  # fmt: skip
    exchange = ctx.meta.get("cryptolake.exchange")  # resolve_settings applies it
    base_url = flags.pop("base_url", None)
    overrides = {
        names[name]: (value, _FLAG_OF.get(name, f"--{name.replace('_', '-')}"))
        for name, value in flags.items()
        if value is not None
    }
    if base_url is not None:  # the chosen exchange's host
        chosen = exchange or load_settings(ctx.obj.get("config_file"), os.environ).collection.exchange
        overrides[f"{chosen}.base_url"] = (base_url, "--base-url")
    return resolve_settings(ctx, overrides)


def resolve_settings(ctx: click.Context, overrides: dict[str, tuple[Any, str]]) -> Settings:
    """Load the settings once per command: register their secrets for redaction and print each
    warning (an unknown ``CRYPTOLAKE_`` variable) on stderr."""
    exchange = ctx.meta.get("cryptolake.exchange")
    if exchange is not None:  # --exchange, on every command that has it
        overrides = {**overrides, "collection.exchange": (exchange, "--exchange")}
    settings = load_settings(ctx.obj.get("config_file"), os.environ, overrides=overrides)
    for secret in settings.secrets():
        register_secret(secret)
    for warning in settings.warnings:
        click.echo(f"warning: {warning}", err=True)
    return settings


def make_client(settings: Settings, ban_file: Path | None = None) -> Any:
    """The REST client of ``collection.exchange`` configured from settings: a BinanceClient, or
    the client of another exchange from its section."""
    from cryptolake.sources.binance import BinanceClient

    exchange = settings.collection.exchange
    if exchange != "binance":
        from cryptolake.sources.registry import venue_client_class

        v = getattr(settings, exchange)
        cls = venue_client_class(exchange)
        if settings.collection.interval not in cls.intervals:
            raise UsageProblem(
                f"{exchange} has no {settings.collection.interval} candles "
                f"(from {settings.sources['collection.interval']}); it serves {', '.join(cls.intervals)}"
            )
        return cls(
            base_url=v.base_url,
            quote_asset=v.quote_asset,
            timeout_s=v.timeout_s,
            max_retries=v.max_retries,
            concurrency=v.concurrency,
            requests_per_s=v.requests_per_s or None,
            excluded_bases=settings.collection.excluded_bases,
        )

    b = settings.binance
    return BinanceClient(
        api_key=b.api_key or None,
        api_secret=b.api_secret or None,
        max_retries=b.max_retries,
        retry_delay=b.retry_delay_s,
        base_url=b.base_url,
        timeout_s=b.timeout_s,
        concurrency=b.concurrency,
        weight_share=b.weight_share,
        quote_asset=settings.collection.quote_asset,
        excluded_bases=settings.collection.excluded_bases,
        ban_file=ban_file if ban_file is not None else ban_book_path(settings.lake.root),
        source_address=b.source_address or None,
    )


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table on stdout: rich on a terminal, plain aligned text (nothing cut) otherwise."""
    from cryptolake.cli.output import plain_table, rich_table

    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    if sys.stdout.isatty():
        click.echo(rich_table(title, columns, cells), nl=False)
    else:
        click.echo((f"{title}\n" if title else "") + plain_table(columns, cells), nl=False)


def ban_book_path(root: Path | str) -> Path:
    """Where a client remembers Binance's bans of this host's IP: in a local lake's ``_meta``;
    for a lake on object storage, which hosts with other IPs share, in this host's state folder
    (``$XDG_STATE_HOME/cryptolake``, default ``~/.local/state/cryptolake``)."""
    if isinstance(root, Path):
        return root / "_meta" / "binance-bans.json"
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "cryptolake" / "binance-bans.json"


def existing_lake(settings: Settings) -> Path | str:
    """The lake root, which must already be a lake (a folder with ``klines/`` or ``_meta/``, or
    an object-storage prefix holding such objects): commands that only read or repair never
    create one from a mistyped path.

    Raises:
        UsageProblem: the path is a file, missing, or a folder that holds no lake.
    """
    from cryptolake.lake import Lake, is_lake

    root = settings.lake.root
    where = f"{root} (from {settings.sources['lake.root']})"
    if not isinstance(root, Path):
        if not Lake(root).exists():
            raise UsageProblem(
                f"lake {where} holds no lake (no klines/ or _meta/ objects); check --lake / lake.root "
                f"and AWS_ENDPOINT_URL, or collect into it first with `cryptolake collect --lake {root}`"
            )
        return root
    check_lake_path(settings)
    if not is_lake(root):
        missing = "does not exist" if not root.exists() else "holds no lake (no klines/ or _meta/ folder)"
        raise UsageProblem(
            f"lake {where} {missing}; check --lake / lake.root, or collect into it first "
            f"with `cryptolake collect --lake {root}`"
        )
    return root


def check_lake_path(settings: Settings) -> Path | str:
    """The lake root, refused when it names a file (a lake is a folder)."""
    root = settings.lake.root
    if isinstance(root, Path) and root.exists() and not root.is_dir():
        raise UsageProblem(
            f"lake {root} (from {settings.sources['lake.root']}) is a file, not a folder; "
            "point --lake / lake.root at a folder"
        )
    return root


def creatable_lake(settings: Settings) -> Path | str:
    """The lake root for a command that creates the lake (collect, run): made now if missing,
    so a path that cannot hold a lake is refused before anything else happens. On object
    storage, the bucket must answer (a missing bucket or bad credentials fail here)."""
    from cryptolake.cli.failures import describe_os_error
    from cryptolake.lake import Lake

    root = check_lake_path(settings)
    if not isinstance(root, Path):
        Lake(root).exists()  # one listing: the bucket is there and the credentials work
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageProblem(
            f"cannot create the lake {root} (from {settings.sources['lake.root']}): {describe_os_error(exc)}"
        ) from None
    return root


def _named_symbols(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--symbols``, checked once for every command: given but naming nothing (``""``, ``" , "``)
    is refused at once, so it never silently means "the top N" or "all"."""
    if value is not None and any(not name.strip() for name in value.split(",")):
        raise UsageProblem(
            f"invalid --symbols {value!r}: give base assets or pairs such as BTC,ETHUSDT, with no empty name"
        )
    return value


def symbols_option(default_text: str) -> Callable[[F], F]:
    """``--symbols`` (comma-separated base assets or pairs); ``default_text`` says what none means."""
    return click.option(
        "--symbols",
        default=None,
        callback=_named_symbols,
        help=f"Comma-separated base assets or pairs (BTC,ETHUSDT); {default_text}.",
    )


def _shard(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from cryptolake.sharding import Shard

    try:
        return Shard.parse(value)
    except ValueError as exc:
        raise UsageProblem(f"invalid --shard: {exc}") from None


def _shard_flag(help_text: str) -> Callable[[F], F]:
    return click.option("--shard", default=None, callback=_shard, metavar="K/N", help=help_text)


#: ``--shard K/N``: this process's stable share of the symbols.
shard_option = _shard_flag(
    "Only this process's share of the symbols (by a hash of exchange and symbol): run "
    "K/N for K = 1..N on N hosts to split the universe. Example: --shard 2/4"
)
#: ``--shard K/N`` of the `scheduler` commands: which of this host's schedulers to steer.
scheduler_shard_option = _shard_flag(
    "The scheduler of shard K/N on this host (a `run --shard K/N` on an s3:// lake keeps "
    "its state on its host, one per shard). Example: --shard 2/4"
)


def interval_option(func: F) -> F:
    return click.option(
        "--interval", default=None, help="Candle interval, 1s ... 1M (setting collection.interval)."
    )(func)


def make_source(settings: Settings, client: KlineSource) -> KlineSource:
    """The client itself (``collection.source = rest``, or an exchange without a bulk archive),
    or Binance's archive in front of it."""
    if client.exchange != "binance" and settings.collection.source == "archive":
        raise UsageProblem(
            f"source archive (from {settings.sources['collection.source']}): only Binance has a bulk "
            f"archive; {client.exchange}'s candles come over REST (use --source auto or rest)"
        )
    if settings.collection.source == "rest" or client.exchange != "binance":
        return client
    from cryptolake.sources.archive import ArchiveSource, BinanceArchive

    b = settings.binance
    if b.archive_cache_dir:
        from cryptolake.errors import ConfigError

        try:
            Path(b.archive_cache_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"binance.archive_cache_dir = {b.archive_cache_dir!r} (from "
                f"{settings.sources['binance.archive_cache_dir']}) is not a folder cryptolake can "
                f"write: {exc.strerror or exc}"
            ) from None
    archive = BinanceArchive(
        b.archive_url,
        listing_url=b.archive_listing_url or None,
        timeout_s=b.timeout_s,
        max_retries=b.max_retries,
        retry_delay=b.retry_delay_s,
        concurrency=b.concurrency,
        cache_dir=b.archive_cache_dir or None,
    )
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(archive.close)  # its connections go with the command
    return ArchiveSource(client, archive, "archive" if settings.collection.source == "archive" else "auto")


def make_collector(
    settings: Settings,
    client: KlineSource,
    *,
    wait: bool = True,
    progress: Any = None,
    siblings: bool = False,
    shard: Any = None,
) -> CryptoCollector:
    """A CryptoCollector over the configured lake. ``siblings``: other exchanges' collectors
    of this process commit to the same lake, so a wait for the writer lock is no news."""
    from cryptolake.collector import CryptoCollector

    return CryptoCollector(
        make_source(settings, client),
        top_n_cryptos=settings.collection.top_n,
        batch_size_hours=settings.collection.batch_size_hours,
        lake=settings.lake.root,
        interval=settings.collection.interval,
        wait_for_lock=wait,
        on_progress=progress,
        on_lock_wait=(lambda: None)
        if siblings
        else lambda: click.echo(
            f"waiting: another cryptolake process is writing to {settings.lake.root}", err=True
        ),
        exchange_gap_recheck_days=settings.collection.exchange_gap_recheck_days,
        shard=shard,
    )


def _detector(settings: Settings, client: KlineSource | None) -> Any:
    from cryptolake.gaps import DataGapDetector
    from cryptolake.lake import Lake

    return DataGapDetector(
        Lake(settings.lake.root, settings.collection.exchange), settings.collection.interval, client=client,
        exchange_gap_recheck_days=settings.collection.exchange_gap_recheck_days,
    )  # fmt: skip


def _scan(settings: Settings, symbols: str | None, since: str | None, offline: bool) -> Any:
    """Detect gaps as the gaps/coverage commands do, and store the report for the DuckDB views
    (unless the lake is read-only: then the report is only printed)."""
    from contextlib import nullcontext

    existing_lake(settings)
    start = checked_since(settings) if since is not None else None
    with nullcontext(None) if offline else make_client(settings) as client:
        detector = _detector(settings, client)
        wanted = known_pairs(settings, symbols, detector.known_symbols())
        return detector.report(wanted, start)


def known_pairs(settings: Settings, symbols: str | None, known: list[str]) -> list[str] | None:
    """The pairs ``--symbols`` names (None without it), each of which the lake must hold.

    Raises:
        UsageProblem: a malformed name, or a symbol the lake has no record of.
    """
    if symbols is None:
        return None
    wanted = _pairs(settings, settings.collection.symbols)  # --symbols names something: its callback says so
    unknown = [s for s in wanted if s not in known]
    if unknown:
        held = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "") or "nothing"
        from cryptolake.lake import Lake

        exchange = settings.collection.exchange
        elsewhere = [
            e
            for e in Lake(settings.lake.root).exchanges()
            if e != exchange
            and set(unknown) & set(Lake(settings.lake.root, e).symbols(settings.collection.interval))
        ]
        hint = f"; {elsewhere[0]} has them: add --exchange {elsewhere[0]}" if elsewhere else ""
        raise UsageProblem(
            f"the lake {settings.lake.root} holds no {exchange} {settings.collection.interval} candles of "
            f"{', '.join(unknown)} (it holds {held}){hint}; collect them first, or check --symbols, "
            "--exchange and --interval"
        )
    return wanted


def checked_since(settings: Settings) -> Any:
    """The start date, refused when it lies in the future (nothing could be collected)."""
    from datetime import date, datetime

    start: date = settings.collection.start_date
    now = datetime.now(UTC)
    if start > (now if isinstance(start, datetime) else now.date()):
        shown = start.isoformat().replace("+00:00", "Z")
        raise UsageProblem(
            f"start {shown} (from {settings.sources['collection.start_date']}) is in the "
            f"future (today is {now.date()} UTC): no candle before it can be collected"
        )
    return start


def checked_until(until: str | None, start: Any) -> Any:
    """``--until``: a date (that whole day) or an ISO time, UTC, not before the start."""
    from datetime import UTC, date, datetime

    if until is None:
        return None
    text = until.strip()
    try:
        end: date = date.fromisoformat(text)
        last: datetime = datetime(end.year, end.month, end.day, 23, 59, 59, tzinfo=UTC)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise UsageProblem(
                f"invalid --until {until!r}: give a date YYYY-MM-DD or a UTC time such as "
                "2024-06-30T12:00:00Z"
            ) from None
        end = last = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    first = start if isinstance(start, datetime) else datetime(start.year, start.month, start.day, tzinfo=UTC)
    if last < first:
        raise UsageProblem(
            f"--until {until} is before the start {first.isoformat().replace('+00:00', 'Z')}: "
            "nothing to collect"
        )
    return end


#: Quote assets a name may end with to be taken as a pair rather than a base asset.
_COMMON_QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "BTC", "ETH", "FDUSD", "TUSD", "BUSD")


def pairs_named(settings: Settings) -> list[str]:
    """The pairs ``--symbols`` named, resolved as :func:`known_pairs` does, whether or not the
    lake holds them."""
    return _pairs(settings, settings.collection.symbols)


def _pairs(settings: Settings, names: Any) -> list[str]:
    """The pairs ``names`` mean on the chosen exchange, without asking it: Binance's
    ``BTC`` -> ``BTCUSDT``; elsewhere a base asset becomes the pair in the exchange's quote asset
    (the lake's record of its markets first, else the exchange's naming: ``BTC-USD``,
    ``XBTUSD``), and the exchange's own symbols stay as they are."""
    from cryptolake.collector import pair_symbols
    from cryptolake.lake import validate_symbol

    exchange = settings.collection.exchange
    try:
        if exchange == "binance":
            # Another exchange's pair (BTC-USD) stays as given: the lake or Binance refuse it.
            pairs = [n for n in names if "-" not in n]
            kept = [validate_symbol(n.strip().upper()) for n in names if "-" in n]
            return list(dict.fromkeys([*pair_symbols(pairs, settings.collection.quote_asset), *kept]))
        from cryptolake.lake import Lake
        from cryptolake.lake.meta import LakeMeta
        from cryptolake.sources.base import normalize_asset
        from cryptolake.sources.registry import pair_name

        quote = getattr(settings, exchange).quote_asset
        known = Lake(settings.lake.root, exchange)
        markets = LakeMeta(known.storage, exchange).markets() if known.exists() else None
        by_base = {}
        own = set()
        if markets is not None:
            own = set(markets["symbol"].to_list())
            for symbol, base, q in markets.select("symbol", "base", "quote").iter_rows():
                if q == normalize_asset(quote):
                    by_base[base] = symbol
        out = []
        for name in names:
            text = name.strip()
            upper = text.upper() if text.isascii() else text
            if (
                upper in own
                or "-" in upper
                or any(upper.endswith(q) and len(upper) > len(q) for q in {quote, *_COMMON_QUOTES})
            ):
                out.append(validate_symbol(upper))  # a pair: the exchange's own name, as given
            else:
                base = normalize_asset(upper)
                out.append(validate_symbol(by_base.get(base) or pair_name(exchange, base, quote)))
        return list(dict.fromkeys(out))
    except InvalidSymbolName as exc:
        raise UsageProblem(str(exc)) from None


def offline_option(func: F) -> F:
    return click.option(
        "--offline",
        is_flag=True,
        help="Do not ask the exchange (judge forward gaps by this machine's clock).",
    )(func)


def scan_options(func: F) -> F:
    """The options of the commands that judge the lake's completeness (gaps, coverage)."""
    for option in reversed((
        symbols_option("default: all stored"),
        click.option("--since", default=None, help="Expected start YYYY-MM-DD (setting collection.start_date)."),
        interval_option, lake_option, exchange_option, base_url_option, offline_option,
    )):  # fmt: skip
        func = option(func)
    return func
