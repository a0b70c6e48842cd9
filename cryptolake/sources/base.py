"""What the rest of cryptolake needs of a source of candles: the :class:`KlineSource` protocol.

The collector, its pipeline, the gap detector and the scheduler are typed on this protocol, not
on one client, so that another source (Binance's bulk archive, another exchange) plugs in where
:class:`~cryptolake.sources.binance.BinanceClient` does. Times are epoch milliseconds (UTC); a
symbol is the exchange's own (``BTCUSDT``); an interval is one of Binance's names (``1h``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class KlineSource(Protocol):
    """A source of closed candles, with the exchange's clock, its symbols and its bans."""

    #: The exchange the candles come from (the lake's ``exchange=`` key), e.g. ``"binance"``.
    exchange: str
    #: Quote asset of the default universe and of bare base assets (``BTC`` -> ``BTCUSDT``).
    quote_asset: str
    #: Requests the source allows in flight at once.
    concurrency: int
    #: The first pause, in seconds, before a failed request is retried (grows with each failure).
    retry_delay: float
    #: Only :meth:`blocks` serve: nothing between them is fetched (the archive without REST).
    blocks_only: bool
    #: Intervals the source serves (the lake's names).
    intervals: tuple[str, ...]
    #: Candles one request returns at most.
    page_candles: int
    #: A page from a start time skips slots without candles (Binance's ``startTime`` finds the
    #: next candle), so a first page shorter than :attr:`page_candles` means nothing follows.
    #: False where a page covers a fixed span of slots (the pipeline then plans the rest).
    pages_skip_empty: bool
    #: Whether the exchange sends a zero-volume candle for a period without trades. When it
    #: does not, slots without a candle inside a traded range are ``no_trades`` windows.
    empty_candles: bool

    def get_server_time_ms(self) -> int:
        """The exchange's clock now (one request)."""
        ...

    def sync_clock(self) -> int:
        """Ask the exchange's clock once and keep its offset; returns the exchange's time."""
        ...

    def symbol_statuses(self) -> dict[str, str]:
        """``{symbol: status}`` of every symbol the exchange lists (``TRADING`` for a live one)."""
        ...

    def get_top_by_market_cap(self, limit: int = 50) -> Sequence[Any]:
        """The ``limit`` largest symbols by 24 h quote volume (each with a ``symbol``)."""
        ...

    def markets(self) -> list[Market]:
        """Every spot market the exchange lists, with normalised asset names."""
        ...

    def resolve_symbol(self, name: str) -> str:
        """The exchange's symbol for ``name`` (its own symbol, or a base asset in
        :attr:`quote_asset`); an unknown name comes back unchanged."""
        ...

    def first_open_time(self, symbol: str, interval: str) -> int | None:
        """The open time of the symbol's first candle; None if it has none."""
        ...

    def last_open_time(self, symbol: str, interval: str) -> int | None:
        """The open time of the symbol's latest candle (the open one, for a live market)."""
        ...

    def get_klines_page(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int | None = None,
        limit: int = 1000,
        *,
        as_arrow: bool = False,
    ) -> Any:
        """One request: up to ``limit`` candles opening at or after ``start_ms`` (and before
        ``end_ms``), open or closed, sorted by unique open time, in the lake's schema."""
        ...

    def get_klines_range(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, as_arrow: bool = False
    ) -> Any:
        """Every candle opening in ``[start_ms, end_ms)``, in as few requests as it takes."""
        ...

    def prepare(self, interval: str, spans: dict[str, tuple[int, int]], max_block_candles: int) -> None:
        """Learn, before a run, what :meth:`blocks` needs to know about each symbol's span
        ``[lo, hi)`` (the archive lists its files); a REST client has nothing to learn."""
        ...

    def blocks(
        self,
        symbol: str,
        interval: str,
        lo: int,
        hi: int,
        max_block_candles: int,
        skip: frozenset[str] = frozenset(),
    ) -> Sequence[Block]:
        """The parts of ``[lo, hi)`` the source fetches whole (:meth:`get_block`), each at most
        ``max_block_candles`` slots, sorted and disjoint; keys in ``skip`` are left out. The
        rest of the range is fetched by pages (:meth:`get_klines_range`) unless
        :attr:`blocks_only`. A REST client has none."""
        ...

    def get_block(self, symbol: str, interval: str, block: Block) -> BlockRows:
        """The candles of one of :meth:`blocks`, with where they came from."""
        ...

    def listing_error(self, symbol: str, interval: str) -> str | None:
        """Why :meth:`prepare` could not learn about a symbol, if it could not."""
        ...

    def banned_until(self) -> float:
        """Epoch seconds until which the exchange has banned this IP; 0 when it has not."""
        ...

    def cancel_pending(self) -> None:
        """Make requests waiting for weight or a retry give up at once (a stop was asked)."""
        ...

    def resume(self) -> None:
        """Undo :meth:`cancel_pending` for the next run."""
        ...


@dataclass(frozen=True, order=True)
class Block:
    """Candles ``[lo, hi)`` (open times) a source fetches whole, in one go: an archive file's.
    ``period`` names the file's period (``YYYY-MM`` or ``YYYY-MM-DD``), ``key`` the file."""

    lo: int
    hi: int
    period: str
    key: str


@dataclass
class SourceRecord:
    """Where some of a partition's candles came from: ``source`` is ``archive`` (a verified
    file: its ``key`` and ``sha256``), ``rest`` (klines requests) or ``archive_rejected`` (a file
    that could not be used: ``note`` says why). ``rows``: the candles it gave; ``off_grid``: the
    file's candles left out because they do not open on the interval's grid."""

    source: str
    key: str = ""
    sha256: str = ""
    rows: int = 0
    off_grid: int = 0
    note: str = ""


@dataclass
class BlockRows:
    """A block's candles (the lake's schema, sorted, inside the block), where they came from,
    and the ranges ``[lo, hi)`` of it the source could not serve (left for a later run)."""

    table: Any
    records: list[SourceRecord] = field(default_factory=list)
    unserved: list[tuple[int, int]] = field(default_factory=list)


#: Asset names some exchanges use for what everyone else calls otherwise.
ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}


def normalize_asset(name: str) -> str:
    """The common name of an asset (``XBT`` -> ``BTC``, ``XDG`` -> ``DOGE``), upper case."""
    upper = name.upper()
    return ASSET_ALIASES.get(upper, upper)


@dataclass(frozen=True)
class Market:
    """One spot market of an exchange: its own ``symbol`` (the lake's ``symbol=`` key), its base
    and quote assets by their common names (``BTC``, not ``XBT``), its status (``TRADING`` when
    it trades) and, where the exchange says, when it was listed and delisted (epoch ms)."""

    exchange: str
    symbol: str
    base: str
    quote: str
    status: str = "TRADING"
    listed_ms: int | None = None
    delisted_ms: int | None = None


@dataclass(frozen=True)
class TopSymbol:
    """A market of the top-N universe of an exchange that publishes less than Binance's 24 h
    ticker: its rank (1 = largest), symbol, assets (common names) and 24 h volume in the quote
    asset; the same names as :class:`~cryptolake.sources.binance.TopCrypto` has for them."""

    rank: int
    symbol: str
    base_asset: str
    quote_asset: str
    quote_volume_24h: float


class WholeRangeFetch:
    """The :class:`KlineSource` block methods of a source that fetches every candle by pages
    (a REST client): nothing to learn before a run, no blocks, and a block asked for anyway
    fetched by :meth:`get_klines_range`."""

    def get_klines_range(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, as_arrow: bool = False
    ) -> Any:
        raise NotImplementedError

    def prepare(self, interval: str, spans: dict[str, tuple[int, int]], max_block_candles: int) -> None:
        """Nothing to learn before a run (see :class:`~cryptolake.sources.archive.ArchiveSource`)."""

    def blocks(
        self,
        symbol: str,
        interval: str,
        lo: int,
        hi: int,
        max_block_candles: int,
        skip: frozenset[str] = frozenset(),
    ) -> list[Block]:
        """None: every candle is fetched by pages."""
        return []

    def get_block(self, symbol: str, interval: str, block: Block) -> BlockRows:
        """The block's candles by pages (a REST client has no blocks of its own)."""
        table = self.get_klines_range(symbol, interval, block.lo, block.hi, as_arrow=True)
        return BlockRows(table, [SourceRecord("rest", rows=table.num_rows)])

    def listing_error(self, symbol: str, interval: str) -> str | None:
        """None: nothing is learnt before a run, so nothing can fail to be."""
        return None
