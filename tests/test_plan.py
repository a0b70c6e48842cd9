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
