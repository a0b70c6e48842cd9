"""The collection plan: pages (what is requested) and units (what is written), against set
oracles, on every kind of grid."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from cryptolake.plan import PAGE_CANDLES, minimum_requests, page_ranges, plan_window, unit_ranges
from cryptolake.schema import Interval
from cryptolake.timeutils import iso, to_ms

GRIDS = {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000, "1w": None, "1M": None}
#: Window lengths drawn per grid: long enough for several pages or months, short enough to check slot by slot.
MAX_SLOTS = {"1m": 5000, "1h": 5000, "1d": 3000, "1w": 600, "1M": 150}
BASE = to_ms("2023-11-27T00:00:00Z")  # a Monday, near a month and a year boundary


def slots(grid: Interval, lo: int, hi: int) -> list[int]:
    return list(grid.open_times(lo, hi))


windows = st.tuples(
    st.sampled_from(sorted(GRIDS)),
    st.integers(0, 5000),
    st.integers(0, 5000),
    st.booleans(),
    st.integers(1, 3000),
)


@settings(max_examples=150, deadline=None)
@given(windows)
def test_pages_cover_the_window_exactly_in_the_fewest_requests(case: tuple[str, int, int, bool, int]) -> None:
    interval, a, n, descending, _ = case
    grid = Interval(interval)
    lo = grid.add(grid.ceil(BASE), a % 200)
    hi = grid.add(lo, n % 2500)
    pages = page_ranges(grid, lo, hi, descending)
    covered = [t for p_lo, p_hi in pages for t in slots(grid, p_lo, p_hi)]
    assert sorted(covered) == slots(grid, lo, hi)  # every slot once
    assert all(len(slots(grid, p_lo, p_hi)) <= PAGE_CANDLES for p_lo, p_hi in pages)
    assert len(pages) == -(-len(slots(grid, lo, hi)) // PAGE_CANDLES) == minimum_requests(grid, [(lo, hi)])
    starts = [p_lo for p_lo, _ in pages]
    assert starts == sorted(starts, reverse=descending)
    if pages:  # the page fetched first is a full one
        assert len(slots(grid, *pages[0])) == min(PAGE_CANDLES, len(slots(grid, lo, hi)))


@settings(max_examples=150, deadline=None)
@given(windows)
def test_units_lie_in_one_month_cover_the_window_and_keep_the_commit_order(
    case: tuple[str, int, int, bool, int],
) -> None:
    interval, a, n, descending, batch = case
    grid = Interval(interval)
    lo = grid.add(grid.ceil(BASE), a % 200)
    hi = grid.add(lo, n % MAX_SLOTS[interval])
    units = unit_ranges(grid, lo, hi, batch, descending)
    wanted = slots(grid, lo, hi)
    covered = [t for u_lo, u_hi in units for t in slots(grid, u_lo, u_hi)]
    assert sorted(covered) == wanted
    month_slots = Counter(iso(t)[:7] for t in wanted)
    per_month: Counter[str] = Counter()
    for u_lo, u_hi in units:
        unit = slots(grid, u_lo, u_hi)
        assert {iso(unit[0])[:7], iso(unit[-1])[:7]} == {iso(u_lo)[:7]}  # one partition per unit
        per_month[iso(u_lo)[:7]] += 1
        # a unit is about batch-sized, or a whole month of at most 1.5 batches
        assert len(unit) <= 1.5 * batch or len(unit) == month_slots[iso(u_lo)[:7]] or len(unit) <= batch + 1
    starts = [u_lo for u_lo, _ in units]
    assert starts == sorted(starts, reverse=descending)
    for month, count in per_month.items():  # a month is one unit unless it is big
        assert count == 1 or month_slots[month] > 1.5 * batch


@settings(max_examples=100, deadline=None)
@given(windows, st.integers(1, 1000))
def test_each_unit_needs_exactly_the_pages_that_overlap_it(
    case: tuple[str, int, int, bool, int], first: int
) -> None:
    interval, a, n, descending, batch = case
    grid = Interval(interval)
    lo = grid.add(grid.ceil(BASE), a % 200)
    hi = grid.add(lo, n % MAX_SLOTS[interval])
    plan = plan_window(grid, lo, hi, batch, descending)
    for (u_lo, u_hi), needed in zip(plan.units, plan.unit_pages, strict=True):
        want = set(slots(grid, u_lo, u_hi))
        have = {t for i in needed for t in slots(grid, *plan.pages[i])}
        assert want <= have
        assert all(set(slots(grid, *plan.pages[i])) & want for i in needed)
    for i, last in enumerate(plan.last_use):
        users = [k for k, needed in enumerate(plan.unit_pages) if i in needed]
        assert last == (max(users) if users else -1)
    if hi > lo:  # a first page already fetched (a looked-up start) takes the place of its slots
        done_hi = grid.add(lo, min(first, len(slots(grid, lo, hi))))
        prefetched = plan_window(grid, lo, hi, batch, descending, prefetched=(lo, done_hi))
        assert prefetched.pages[0] == (lo, done_hi)
        covered = sorted(t for p in prefetched.pages for t in slots(grid, *p))
        assert covered == slots(grid, lo, hi)


# -- blocks: parts of a window a source serves whole (Binance's archive files) ----------------


def _files(
    grid_name: str,
    symbol: str,
    first_day: int,
    days: int,
    months_published: set[int],
    days_published: set[int],
):
    """Archive files over ``days`` days from BASE's month: monthly files for the month indexes
    in ``months_published``, daily files for the day indexes in ``days_published``."""
    from cryptolake.sources.archive import ArchiveFile

    month = Interval("1M")
    start = month.floor(BASE)
    files = []
    for m in sorted(months_published):
        t = month.add(start, m)
        files.append(ArchiveFile.of(symbol, grid_name, iso(t)[:7]))
    for d in sorted(days_published):
        t = start + d * 86_400_000
        files.append(ArchiveFile.of(symbol, grid_name, iso(t)[:10]))
    return files


blocked_windows = st.tuples(
    st.sampled_from(["1m", "1h", "1d"]),
    st.integers(0, 40),  # window start, in days from the month before BASE's
    st.integers(0, 120),  # window length, in days
    st.frozensets(st.integers(0, 4), max_size=5),  # months with a monthly file
    st.frozensets(st.integers(0, 120), max_size=40),  # days with a daily file
    st.booleans(),  # descending
    st.booleans(),  # blocks only
    st.integers(0, 1500),  # min candles
)


@settings(max_examples=150, deadline=None)
@given(blocked_windows)
def test_every_slot_is_planned_once_from_one_source_and_nothing_after_the_window(case: tuple) -> None:
    from cryptolake.sources.archive import choose_blocks

    interval, a, n, months, days, descending, only, min_candles = case
    grid = Interval(interval)
    origin = Interval("1M").floor(BASE)
    lo = grid.ceil(origin + a * 3_600_000 * 7)
    hi = grid.ceil(lo + n * 86_400_000 + (a % 5) * 3_600_000)  # the run's end: past it, nothing is closed
    files = _files(interval, "BTCUSDT", 0, 120, set(months), set(days))
    blocks = choose_blocks(grid, files, lo, hi, max_block_candles=50_000, min_candles=min_candles)
    # Blocks: sorted, disjoint, inside the window, each inside one file of its period.
    for (_x, y), (u, _) in zip(
        [(b.lo, b.hi) for b in blocks], [(b.lo, b.hi) for b in blocks][1:], strict=False
    ):
        assert y <= u
    by_key = {f.key: f for f in files}
    for b in blocks:
        f = by_key[b.key]
        assert lo <= b.lo < b.hi <= hi and f.lo <= b.lo and b.hi <= grid.ceil(f.hi)
        assert grid.count(b.lo, b.hi) >= max(1, min_candles)
    plan = plan_window(
        grid, lo, hi, 720, descending, blocks=[(b.lo, b.hi) for b in blocks], between_blocks=not only
    )
    owners: Counter[int] = Counter()
    for p, (x, y) in enumerate(plan.pages):
        for t in grid.open_times(x, y):
            owners[t] += 1
        assert lo <= x and y <= hi  # nothing planned past the last closed candle
        if plan.block_of[p] >= 0:
            assert (x, y) == (blocks[plan.block_of[p]].lo, blocks[plan.block_of[p]].hi)
    in_blocks = {t for b in blocks for t in grid.open_times(b.lo, b.hi)}
    expected = set(grid.open_times(lo, hi)) if not only else in_blocks
    assert set(owners) == expected and all(count == 1 for count in owners.values())
    # Units cover exactly what is fetched, in commit order, and each needs the pages over it.
    unit_slots = Counter(t for u_lo, u_hi in plan.units for t in grid.open_times(u_lo, u_hi))
    assert set(unit_slots) == expected and all(c == 1 for c in unit_slots.values())
    starts = [u[0] for u in plan.units]
    assert starts == sorted(starts, reverse=descending)
    for k, (u_lo, u_hi) in enumerate(plan.units):
        needed = {p for p, (x, y) in enumerate(plan.pages) if x < u_hi and u_lo < y}
        assert set(plan.unit_pages[k]) == needed
