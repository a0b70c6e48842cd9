"""Which requests a collection sends and in which pieces it writes: pure arithmetic on the grid.

A collection fetches *windows*: for one symbol, the open times ``[lo, hi)`` it lacks, in the
order they must be committed (backward collection extends the stored range into the past, so its
newest month goes first; everything else goes oldest first). Two plans cut each window:

- **pages**: what is requested. Full pages of :data:`PAGE_CANDLES` candles (Binance's maximum),
  so a window of ``n`` candles costs ``ceil(n / 1000)`` requests, the fewest possible. Pages run
  across month boundaries.
- **units**: what is written. A unit lies in one month partition, so each partition is rewritten
  once per window; a month holding more than 1.5 times ``batch_candles`` is split into about
  ``batch_candles``-sized units, which bounds the memory a unit needs (1s candles: 2.6 million a
  month).

A unit can be written once every page overlapping it has arrived.

A source may serve parts of a window whole (**blocks**: Binance's archive files, a month or a day
each). A block is one page of its own; the pages around it are cut as above. When the source
serves only blocks (the archive without REST), the units cover the blocks and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptolake.schema import Interval

#: Binance's largest klines page.
PAGE_CANDLES = 1000


@dataclass(frozen=True)
class WindowPlan:
    """The pages and units of one window, both in commit order, as open times ``[lo, hi)``.

    ``unit_pages[k]`` lists the indexes of the pages that unit ``k`` needs; ``last_use[p]`` is the
    index of the last unit that needs page ``p`` (after which its candles can be dropped);
    ``block_of[p]`` is the index of the block page ``p`` fetches, or -1 for a klines page.
    """

    pages: tuple[tuple[int, int], ...]
    units: tuple[tuple[int, int], ...]
    unit_pages: tuple[tuple[int, ...], ...]
    last_use: tuple[int, ...] = field(repr=False)
    block_of: tuple[int, ...] = field(default=(), repr=False)


def page_ranges(
    grid: Interval, lo: int, hi: int, descending: bool = False, size: int = PAGE_CANDLES
) -> list[tuple[int, int]]:
    """``[lo, hi)`` cut into ranges of ``size`` grid slots, in commit order.

    Descending, the cuts are counted from ``hi``, so the ranges fetched first are full.
    """
    first, last = grid.index(grid.ceil(lo)), grid.index(grid.ceil(hi))
    if first >= last:
        return []
    if descending:
        edges = list(range(last, first, -size)) + [first]
        return [(grid.at(a), grid.at(b)) for b, a in zip(edges, edges[1:], strict=False)]
    edges = list(range(first, last, size)) + [last]
    return [(grid.at(a), grid.at(b)) for a, b in zip(edges, edges[1:], strict=False)]


def unit_ranges(
    grid: Interval, lo: int, hi: int, batch_candles: int, descending: bool = False
) -> list[tuple[int, int]]:
    """``[lo, hi)`` cut at month boundaries, and a month with more than 1.5 times
    ``batch_candles`` slots into about equal parts of about ``batch_candles``, in commit order."""
    first, last = grid.index(grid.ceil(lo)), grid.index(grid.ceil(hi))
    units: list[tuple[int, int]] = []
    month = Interval("1M")
    cursor = first
    while cursor < last:
        month_end = min(last, grid.index(grid.ceil(month.next_open(month.floor(grid.at(cursor))))))
        month_end = max(month_end, cursor + 1)
        slots = month_end - cursor
        parts = max(1, round(slots / max(1, batch_candles))) if slots > 1.5 * batch_candles else 1
        bounds = [cursor + (slots * i) // parts for i in range(parts)] + [month_end]
        units.extend(zip(bounds, bounds[1:], strict=False))
        cursor = month_end
    ranges = [(grid.at(a), grid.at(b)) for a, b in units]
    return list(reversed(ranges)) if descending else ranges


def plan_window(
    grid: Interval,
    lo: int,
    hi: int,
    batch_candles: int,
    descending: bool = False,
    prefetched: tuple[int, int] | None = None,
    blocks: Sequence[tuple[int, int]] = (),
    between_blocks: bool = True,
) -> WindowPlan:
    """Pages and units of the window ``[lo, hi)`` and which pages each unit needs.

    ``prefetched``: ``[lo, x)``, already fetched (the first page of a window whose start had to
    be found): it is page 0 whatever the order, and the other pages cover ``[x, hi)``.
    ``blocks``: sorted, disjoint ranges fetched whole, one page each (clipped to what is left
    after ``prefetched``). ``between_blocks``: False when nothing but the blocks (and the
    prefetched page) is fetched; the units then cover only those.
    """
    start = prefetched[1] if prefetched is not None else lo
    if prefetched is not None and prefetched[0] != lo:
        raise ValueError("a prefetched range starts the window")
    clipped = [(max(a, start), min(b, hi)) for a, b in blocks]
    clipped = [(a, b) for a, b in clipped if a < b]
    for (_, b), (a, _) in zip(clipped, clipped[1:], strict=False):
        if a < b:
            raise ValueError("blocks overlap or are not sorted")
    pieces: list[tuple[tuple[int, int], int]] = [(r, k) for k, r in enumerate(clipped)]
    if between_blocks:
        cursor = start
        for a, b in [*clipped, (hi, hi)]:
            if cursor < a:
                pieces.extend((page, -1) for page in page_ranges(grid, cursor, a, descending))
            cursor = max(cursor, b)
    pieces.sort(key=lambda piece: piece[0][0], reverse=descending)
    pages = [page for page, _ in pieces]
    block_of = [k for _, k in pieces]
    if prefetched is not None:
        pages, block_of = [prefetched, *pages], [-1, *block_of]
    if between_blocks:
        units = unit_ranges(grid, lo, hi, batch_candles, descending)
    else:
        covered = _merged(sorted(page for page in pages if page[0] < page[1]))
        units = [u for a, b in covered for u in unit_ranges(grid, a, b, batch_candles)]
        units.sort(reverse=descending)
    unit_pages = tuple(
        tuple(i for i, (a, b) in enumerate(pages) if a < u_hi and u_lo < b) for u_lo, u_hi in units
    )
    last_use = [-1] * len(pages)
    for k, needed in enumerate(unit_pages):
        for i in needed:
            last_use[i] = k
    return WindowPlan(tuple(pages), tuple(units), unit_pages, tuple(last_use), tuple(block_of))


def _merged(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges with touching or overlapping ones joined."""
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def minimum_requests(grid: Interval, windows: Sequence[tuple[int, int]]) -> int:
    """The fewest klines requests that fetch these windows: one per 1,000 candles of each."""
    total = 0
    for lo, hi in windows:
        slots = grid.index(grid.ceil(hi)) - grid.index(grid.ceil(lo))
        total += -(-max(0, slots) // PAGE_CANDLES)
    return total
