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
    index of the last unit that needs page ``p`` (after which its candles can be dropped).
    """

    pages: tuple[tuple[int, int], ...]
    units: tuple[tuple[int, int], ...]
    unit_pages: tuple[tuple[int, ...], ...]
    last_use: tuple[int, ...] = field(repr=False)


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
) -> WindowPlan:
    """Pages and units of the window ``[lo, hi)`` and which pages each unit needs.

    ``prefetched``: ``[lo, x)``, already fetched (the first page of a window whose start had to
    be found): it is page 0 whatever the order, and the other pages cover ``[x, hi)``.
    """
    units = unit_ranges(grid, lo, hi, batch_candles, descending)
    pages = page_ranges(grid, lo, hi, descending)
    if prefetched is not None:
        if prefetched[0] != lo:
            raise ValueError("a prefetched range starts the window")
        pages = [prefetched, *page_ranges(grid, prefetched[1], hi, descending)]
    unit_pages = tuple(
        tuple(i for i, (a, b) in enumerate(pages) if a < u_hi and u_lo < b) for u_lo, u_hi in units
    )
    last_use = [-1] * len(pages)
    for k, needed in enumerate(unit_pages):
        for i in needed:
            last_use[i] = k
    return WindowPlan(tuple(pages), tuple(units), unit_pages, tuple(last_use))


def minimum_requests(grid: Interval, windows: Sequence[tuple[int, int]]) -> int:
    """The fewest klines requests that fetch these windows: one per 1,000 candles of each."""
    total = 0
    for lo, hi in windows:
        slots = grid.index(grid.ceil(hi)) - grid.index(grid.ceil(lo))
        total += -(-max(0, slots) // PAGE_CANDLES)
    return total
