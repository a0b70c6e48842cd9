"""``config``, ``symbols`` and ``fake-exchange``."""

from __future__ import annotations

import json
from datetime import UTC
from typing import TYPE_CHECKING, Any

import click

from cryptolake.cli.app import cli
from cryptolake.cli.failures import UsageProblem
from cryptolake.cli.options import (
    base_url_option,
    exchange_option,
    json_option,
    lake_option,
    make_client,
    print_table,
    settings_from,
)
from cryptolake.config import EXCHANGES

if TYPE_CHECKING:
    pass


@cli.command("config")
@lake_option
@base_url_option
@json_option
@click.pass_context
def config_command(ctx: click.Context, lake: str | None, base_url: str | None, as_json: bool) -> None:
    """Print the effective configuration and where each value comes from (secrets redacted).

    Example:

        CRYPTOLAKE_BINANCE_TIMEOUT_S=30 cryptolake config
    """
    settings = settings_from(ctx, lake=lake, base_url=base_url)
    rows = settings.describe()
    if as_json:
        click.echo(
            json.dumps(
                [dict(zip(("key", "value", "source", "env"), row, strict=True)) for row in rows], indent=2
            )
        )
        return
    print_table(
        "cryptolake configuration", ["key", "value", "source", "environment name"], [list(r) for r in rows]
    )


@cli.command("symbols")
@lake_option
@exchange_option
@base_url_option
@click.option("--top", type=int, default=None, help="Size of the universe (setting collection.top_n).")
@json_option
@click.pass_context
def symbols_command(
    ctx: click.Context, lake: str | None, base_url: str | None, top: int | None, as_json: bool
) -> None:
    """List the current top-N universe: TRADING spot pairs ranked by 24 h quote volume.

    Example:

        cryptolake symbols --top 10
    """
    settings = settings_from(ctx, lake=lake, base_url=base_url, top=top)
    with make_client(settings) as client:
        top_pairs = client.get_top_by_market_cap(settings.collection.top_n)
    if as_json:
        click.echo(json.dumps([vars(p) for p in top_pairs], indent=2))
        return
    exchange = settings.collection.exchange
    quote = (
        settings.collection.quote_asset if exchange == "binance" else getattr(settings, exchange).quote_asset
    )
    print_table(
        f"top {settings.collection.top_n} {quote} pairs on {exchange} by 24h quote volume",
        ["rank", "symbol", "base", "price", "24h quote volume"],
        [
            [
                p.rank,
                p.symbol,
                p.base_asset,
                f"{p.current_price:g}" if hasattr(p, "current_price") else "",  # Binance's ticker only
                f"{p.quote_volume_24h:,.0f}",
            ]
            for p in top_pairs
        ],
    )


@cli.command("fake-exchange")
@click.option(
    "--exchange",
    "venue",
    type=click.Choice(EXCHANGES, case_sensitive=False),
    default="binance",
    show_default=True,
    help="Which exchange's API to serve. Example: --exchange coinbase",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free port)."
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(0, 60_000),
    default=0.0,
    show_default=True,
    help="Added to every response.",
)
@click.option(
    "--weight-limit",
    type=click.IntRange(1),
    default=6000,
    show_default=True,
    help="Request weight per window.",
)
@click.option(
    "--weight-window-s", type=click.IntRange(1), default=60, show_default=True, help="Weight window, seconds."
)
@click.option("--now", "now", default=None, help="The exchange's clock (ISO 8601 UTC); default: real time.")
@click.option("--frozen", is_flag=True, help="Keep the exchange's clock still instead of ticking.")
@click.option(
    "--clock-speed",
    type=click.FloatRange(0, 10_000, min_open=True),
    default=1.0,
    show_default=True,
    help="Exchange seconds per real second, for REST and streams alike (60: a 1m candle closes "
    "every second). Example: --clock-speed 60",
)
@click.option(
    "--extra-symbols",
    type=click.IntRange(0, 10_000),
    default=0,
    show_default=True,
    help="Add N synthetic USDT pairs (S0001USDT ...), listed 2017-09-01, for load tests.",
)
@click.option(
    "--chaos",
    "chaos_rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of klines requests that fail at random (5xx, -1007/-1008, dropped, malformed).",
)
@click.option("--chaos-seed", type=int, default=0, show_default=True, help="Seed of the random failures.")
@click.option(
    "--ban-grace",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Requests arriving inside a 429's Retry-After that still get a 429 (in flight) before a 418.",
)
@click.option(
    "--cache-rows",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Serve up to N closed candles again from memory instead of recomputing them (load tests).",
)
@click.option(
    "--archive-daily-delay-h",
    type=click.FloatRange(0),
    default=8.0,
    show_default=True,
    help="Hours after a day ends before its bulk-archive daily files are published. "
    "Example: --archive-daily-delay-h 0.5",
)
@click.option(
    "--archive-monthly-delay-d",
    type=click.FloatRange(0),
    default=3.0,
    show_default=True,
    help="Days after a month ends before its bulk-archive monthly files are published. "
    "Example: --archive-monthly-delay-d 0",
)
def fake_exchange_command(
    venue: str,
    host: str,
    port: int,
    latency_ms: float,
    weight_limit: int,
    weight_window_s: int,
    now: str | None,
    frozen: bool,
    clock_speed: float,
    extra_symbols: int,
    chaos_rate: float,
    chaos_seed: int,
    ban_grace: int,
    cache_rows: int,
    archive_daily_delay_h: float,
    archive_monthly_delay_d: float,
) -> None:
    """Serve a Binance-compatible fake exchange (deterministic candles) for offline use.

    Point cryptolake at it with --base-url http://127.0.0.1:PORT. The same port serves the
    bulk archive (data.binance.vision): /data/spot/... zips and the S3 listing at /, and the
    WebSocket kline streams (/ws/..., /stream?streams=...; --stream-url ws://127.0.0.1:PORT). With
    --exchange coinbase|kraken|bybit it serves that exchange's REST API instead, at its documented
    limits (the weight, chaos and archive options are the Binance fake's only).

    Example:

        cryptolake fake-exchange --port 8080 --latency-ms 50

        cryptolake fake-exchange --port 0 --archive-daily-delay-h 1 --archive-monthly-delay-d 0
    """
    from cryptolake.testing import FakeSymbol, default_symbols, serve
    from cryptolake.timeutils import parse_datetime, to_ms

    try:
        start = to_ms(parse_datetime(now)) if now else to_ms(_utcnow())
    except ValueError:
        raise click.BadParameter(f"{now!r} is not an ISO 8601 time", param_hint="--now") from None
    if venue.lower() != "binance":
        ctx = click.get_current_context()
        binance_only = [
            f"--{name.replace('_', '-')}"
            for name in ("weight_limit", "weight_window_s", "chaos_rate", "chaos_seed", "ban_grace", "cache_rows",
                         "archive_daily_delay_h", "archive_monthly_delay_d", "clock_speed")
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]  # fmt: skip
        if binance_only:
            raise UsageProblem(
                f"{', '.join(binance_only).replace('--chaos-rate', '--chaos')} shape the Binance fake only "
                f"(weights, chaos, the bulk archive); the {venue.lower()} fake keeps that exchange's own "
                "documented limits"
            )
        _serve_venue(venue.lower(), host, port, start, not frozen, latency_ms / 1000, extra_symbols)
        return
    listed = to_ms("2017-09-01")
    symbols = default_symbols() + [
        FakeSymbol(
            f"S{i:04d}USDT", f"S{i:04d}", "USDT", listed_ms=listed, base_price=10.0 + i, volume_scale=0.001
        )
        for i in range(1, extra_symbols + 1)
    ]
    try:
        serve(
            host=host,
            port=port,
            now=start,
            follow_wall_clock=not frozen,
            clock_speed=clock_speed,
            latency_s=latency_ms / 1000,
            weight_limit=weight_limit,
            weight_window_s=weight_window_s,
            symbols=symbols,
            chaos_rate=chaos_rate,
            chaos_seed=chaos_seed,
            ban_grace_requests=ban_grace,
            cache_rows=cache_rows,
            archive_daily_delay_s=archive_daily_delay_h * 3600,
            archive_monthly_delay_s=archive_monthly_delay_d * 86400,
        )
    except OSError as exc:
        raise UsageProblem(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (pick another --port, "
            "or --port 0 for any free one; --host must be an address of this machine)"
        ) from None


def _serve_venue(
    venue: str, host: str, port: int, now_ms: int, follow: bool, latency_s: float, extra_symbols: int
) -> None:
    """Serve the fake of another exchange (its own API, the same market model)."""
    from cryptolake.testing.venue import serve_venue
    from cryptolake.testing.venues import fake_venue

    fake = fake_venue(
        venue, extra_symbols, now=now_ms, follow_wall_clock=follow, latency_s=latency_s, host=host, port=port
    )
    try:
        serve_venue(fake)
    except OSError as exc:
        raise UsageProblem(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (pick another --port, "
            "or --port 0 for any free one; --host must be an address of this machine)"
        ) from None


def _utcnow() -> Any:
    from datetime import datetime

    return datetime.now(UTC)
