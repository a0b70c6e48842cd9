"""``cryptolake stream``: Binance's live candles into the lake, a thin layer over
:class:`cryptolake.streaming.StreamCollector`; and the stream's lines in ``cryptolake status``."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import click

from cryptolake.cli.app import cli
from cryptolake.cli.failures import UsageProblem
from cryptolake.cli.options import (
    _pairs,
    base_url_option,
    creatable_lake,
    lake_option,
    make_client,
    make_collector,
    settings_from,
    symbols_option,
)
from cryptolake.cli.signals import StopSignals
from cryptolake.config import Settings
from cryptolake.errors import CryptolakeError

log = logging.getLogger("cryptolake.streaming")


@cli.command("stream")
@symbols_option("default: the collection's symbols (collection.symbols), else the top N (--top)")
@click.option("--top", type=int, default=None, help="Stream the top N pairs by 24h quote volume.")
@click.option("--interval", default=None, help="Candle interval, 1s ... 1M (setting stream.interval, 1m).")
@lake_option
@base_url_option
@click.option("--stream-url", default=None, help="Binance WebSocket host (setting binance.stream_url).")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, max=10 * 365 * 86400, min_open=True),
    default=None,
    help="Stop after this many seconds (default: run until Ctrl-C or SIGTERM).",
)
@click.pass_context
def stream_command(
    ctx: click.Context,
    symbols: str | None,
    top: int | None,
    interval: str | None,
    lake: str | None,
    base_url: str | None,
    stream_url: str | None,
    duration: float | None,
) -> None:
    """Store Binance's candles as they close, seconds later, until stopped.

    Only closed candles are stored. Whatever the stream missed (a reconnect, a skipped final
    update) is fetched over REST; what still fails is a gap the next `collect` or `run` fills.
    Candles are written every stream.flush_s seconds as small files beside each month's
    data.parquet and compacted into it in the background and at exit. SIGTERM or Ctrl-C writes
    what is buffered, compacts and exits 143 or 130. `cryptolake status` shows the stream.

    Example:

        cryptolake stream --symbols BTC,ETH --interval 1m
    """
    if symbols is not None and top is not None:
        raise UsageProblem("give --symbols or --top, not both")
    settings = settings_from(
        ctx, lake=lake, base_url=base_url, top=top, symbols=symbols, stream_interval=interval,
        stream_url=stream_url,
    )  # fmt: skip
    if settings.collection.exchange != "binance":
        raise UsageProblem(
            f"streams are Binance's; collection.exchange is {settings.collection.exchange} "
            f"(from {settings.sources['collection.exchange']})"
        )
    wanted = None if top is not None else (list(settings.collection.symbols) or None)
    if wanted is not None:
        _pairs(settings, wanted)  # refuse a bad name before the lake is created
    creatable_lake(settings)
    if duration is not None and not math.isfinite(duration):
        raise UsageProblem("--duration must be a number of seconds")
    stop = threading.Event()
    with make_client(settings) as client:
        streamer = make_stream_collector(settings, client, wanted)

        def started() -> None:
            click.echo(
                f"streaming {len(streamer.symbols)} symbols ({streamer.grid.name}) from "
                f"{settings.binance.stream_url} into {settings.lake.root}; Ctrl-C to stop",
                err=True,
            )

        with StopSignals(
            stop.set,
            announce=lambda text: click.echo(text, err=True),
            what_finishes="what is buffered is written and compacted first",
        ) as signals:
            report = streamer.run(stop, duration_s=duration, on_started=started)
    click.echo(
        f"stored {report.candles_stored} {report.interval} candles of {report.symbols} symbols "
        f"({report.candles_streamed} streamed, {report.candles_repaired} repaired over REST in "
        f"{report.repairs} requests); {report.reconnects} reconnects, {report.compactions} compactions"
        + (
            f"; {report.repairs_failed} repairs failed (the next run fills them)"
            if report.repairs_failed
            else ""
        )
    )
    if signals.exit_code is not None:
        raise SystemExit(signals.exit_code)
    if not report.connected:
        raise CryptolakeError(
            f"never connected to {settings.binance.stream_url}: {report.last_connection_error or 'no answer'}"
        )


def make_stream_collector(settings: Settings, client: Any, wanted: list[str] | None) -> Any:
    """The StreamCollector of the settings' Binance symbols (``wanted``, else the top N)."""
    from cryptolake.lake import Lake
    from cryptolake.streaming import StreamCollector

    collector = make_collector(settings, client)
    pairs = collector.resolve_symbols(_pairs(settings, wanted) if wanted is not None else None)
    return StreamCollector(
        client,
        Lake(settings.lake.root),
        pairs,
        settings.stream.interval,
        stream_url=settings.binance.stream_url,
        flush_s=settings.stream.flush_s,
        compact_files=settings.stream.compact_files,
    )


def stream_lines(document: dict[str, Any] | None) -> list[str]:
    """What ``cryptolake status`` says about the lake's stream."""
    if document is None:
        return ["stream: never ran on this lake (start one with `cryptolake stream`)"]
    symbols = document.get("symbols") or {}
    delays = [e["delay_s"] for e in symbols.values() if e.get("delay_s") is not None]
    lasts = [e["last_open_time"] for e in symbols.values() if e.get("last_open_time")]
    state = "running" if document.get("running") else "stopped"
    lines = [
        f"stream: {state} (pid {document.get('pid')}, {document.get('interval')}, since "
        f"{document.get('started_at')}, updated {document.get('updated_at')}); "
        f"{document.get('connections')} of {document.get('connections_wanted')} connections open, "
        f"{len(symbols)} symbols, "
        f"{document.get('reconnects')} reconnects, {document.get('rest_repairs')} REST repairs "
        f"({document.get('candles_repaired')} candles), {document.get('candles_streamed')} candles streamed"
    ]
    if lasts:
        lines.append(
            f"stream: last candle {min(lasts)} (oldest symbol) .. {max(lasts)}; delay after close "
            + (f"max {max(delays):.1f} s" if delays else "unknown")
        )
    if document.get("last_error"):
        lines.append(f"stream: last error: {document['last_error']}")
    if document.get("last_connection_error") and document.get("last_connection_error") != document.get(
        "last_error"
    ):
        lines.append(f"stream: last connection error: {document['last_connection_error']}")
    return lines
