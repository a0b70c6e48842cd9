"""Binance's bulk archive (data.binance.vision) over the shared market: the spot kline zips, their
``.CHECKSUM`` files and the S3 bucket listing, served on the fake exchange's port.

Paths, as on the real archive (``1M`` is written ``1mo`` in paths)::

    /data/spot/monthly/klines/<SYMBOL>/<iv>/<SYMBOL>-<iv>-<YYYY>-<MM>.zip[.CHECKSUM]
    /data/spot/daily/klines/<SYMBOL>/<iv>/<SYMBOL>-<iv>-<YYYY>-<MM>-<DD>.zip[.CHECKSUM]   (1s..1d)
    /?prefix=...&delimiter=/&marker=...&max-keys=...      (S3 ListObjects v1; list-type=2: v2)

Each zip holds one CSV (``<zip name minus .zip>.csv``) of the REST klines' 12 columns in the
REST answer's string forms, without a header row; files of periods from 2025-01-01 on write
open/close times in microseconds. A file holds the candles of its period that are closed at its
publication (the period's end plus ``daily_delay_ms`` / ``monthly_delay_ms``), exists only if it
holds at least one, and is invisible (unlisted, 404) before its publication.

Zip bytes are deterministic (fixed member date, ``ZIP_DEFLATED`` at level 1), so a file's
SHA-256 is the same in every process. Built files are kept in an LRU bounded by bytes.

Listing sizes and ETags: a listing never builds a large file. A file of at most
``list_exact_rows`` candle slots on the interval grid (default 1000: every daily file but ``1s``
and ``1m``, monthly files of ``1h`` and longer) is built (and cached) for the listing, which then
shows its exact ``Size`` and its MD5 as ``ETag``, as S3 does for single-part uploads. A larger
file is listed with a cheap deterministic *estimate* as ``Size`` (61 bytes per candle slot) and
a multipart-style ``ETag`` (``"<32 hex>-1"``: a hash of the key, the file's version and its
faults, not the MD5 of the bytes; S3 multipart ETags are not MD5s either), whatever is cached.
Each is stable for a given version of a file and changes with it (re-upload, faults). GET sends
the same ETag; trust ``Content-Length`` and the ``.CHECKSUM`` for the bytes. ``.CHECKSUM`` sizes
are always exact.
"""

from __future__ import annotations

import base64
import bisect
import calendar
import dataclasses
import hashlib
import io
import re
import threading
import time
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

from cryptolake.schema import INTERVALS, Interval
from cryptolake.testing.market import _Market
from cryptolake.testing.symbols import FakeSymbol
from cryptolake.testing.wire import _Reply
from cryptolake.timeutils import to_ms

#: The bucket's name in listings.
BUCKET = "data.binance.vision"
#: Intervals that have daily files (monthly files exist for every interval).
DAILY_INTERVALS: tuple[str, ...] = tuple(i for i in INTERVALS if i not in ("3d", "1w", "1M"))
#: Files of periods starting at or after this write open/close times in microseconds.
MICROS_FROM_MS: int = to_ms("2025-01-01T00:00:00Z")
#: How far the ``off_grid`` fault shifts candles (as in the real 2018-02 files): 28m14.789s.
OFF_GRID_SHIFT_MS = 1_694_789
#: The header row of the ``header`` fault / ``header_from_ms``.
CSV_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
#: ``FakeStats.archive_by_kind`` keys.
ARCHIVE_REQUEST_KINDS: tuple[str, ...] = ("listing", "monthly", "daily", "checksum", "not_found")
#: Fault kinds of :meth:`FakeExchange.archive_fault`.
ARCHIVE_FAULT_KINDS: tuple[str, ...] = (
    "missing",
    "corrupt_zip",
    "wrong_checksum",
    "late",
    "header",
    "empty",
    "off_grid",
    "reupload",
)
#: Kinds that ``times`` applies to (counted in GETs of the zip); the others hold until cleared.
COUNTED_FAULT_KINDS: frozenset[str] = frozenset({"missing", "corrupt_zip", "wrong_checksum"})

LISTING_LABEL = "/ (listing)"
_MONTHLY_LABEL = "/data/spot/monthly/klines"
_DAILY_LABEL = "/data/spot/daily/klines"
_OTHER_LABEL = "/data (other)"
_XML = "application/xml"
_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
_ROOTS = ("data/spot/daily/klines/", "data/spot/monthly/klines/")
_MAX_KEYS = 1000
_AFTER_ALL = "\U0010ffff"  # appended to a prefix: sorts after every key under it
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ZIP_LEVEL = 1  # deflate level: 4x faster than 6 for ~15 % more bytes
_CSV_MS = "%d,%.8f,%.8f,%.8f,%.8f,%.8f,%d,%.8f,%d,%.8f,%.8f,0\n"
_CSV_US = "%d000,%.8f,%.8f,%.8f,%.8f,%.8f,%d999,%.8f,%d,%.8f,%.8f,0\n"  # t*1000, t*1000+999
_EST_ROW_BYTES = 61  # deflated bytes per 1m row, for the size estimate of large files
_DAY = Interval("1d")
_MONTH = Interval("1M")
_LABEL_RE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")


def path_interval(interval: str) -> str:
    """The interval as written in archive paths (``1M`` -> ``1mo``)."""
    return "1mo" if interval == "1M" else interval


def _from_path_interval(text: str) -> str | None:
    """The interval named ``text`` in a path (``1mo`` -> ``1M``; ``1M`` itself is not a path name)."""
    if text == "1M":
        return None
    name = "1M" if text == "1mo" else text
    return name if name in INTERVALS else None


def _label(kind: str, start_ms: int) -> str:
    tm = time.gmtime(start_ms // 1000)
    if kind == "monthly":
        return f"{tm.tm_year:04d}-{tm.tm_mon:02d}"
    return f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}"


def parse_period(period: str) -> tuple[str, int, int]:
    """``"YYYY-MM"`` (a monthly file) or ``"YYYY-MM-DD"`` (a daily one) -> (kind, start, end)."""
    match = _LABEL_RE.match(period)
    if match is None:
        raise ValueError(f"period must be 'YYYY-MM' or 'YYYY-MM-DD', got {period!r}")
    year, month = int(match[1]), int(match[2])
    day = 1 if match[3] is None else int(match[3])
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise ValueError(f"no such date: {period!r}")
    start = calendar.timegm((year, month, day, 0, 0, 0)) * 1000
    if match[3] is None:
        return "monthly", start, _MONTH.next_open(start)
    return "daily", start, _DAY.next_open(start)


def _http_date(ms: int) -> str:
    return formatdate(ms / 1000, usegmt=True)


def _iso(ms: int) -> str:
    tm = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", tm) + f".{ms % 1000:03d}Z"


@dataclass(frozen=True)
class ArchiveFile:
    """One archive file (a zip; its ``.CHECKSUM`` is ``key + ".CHECKSUM"``)."""

    kind: str  # "daily" | "monthly"
    symbol: str
    interval: str  # Binance's name ("1M", not "1mo")
    label: str  # "YYYY-MM" or "YYYY-MM-DD"
    start_ms: int
    end_ms: int

    @property
    def name(self) -> str:
        iv = path_interval(self.interval)
        return f"{self.symbol}-{iv}-{self.label}.zip"

    @property
    def key(self) -> str:
        iv = path_interval(self.interval)
        return f"data/spot/{self.kind}/klines/{self.symbol}/{iv}/{self.name}"

    @property
    def csv_name(self) -> str:
        return self.name[: -len(".zip")] + ".csv"

    @property
    def micro(self) -> bool:
        return self.start_ms >= MICROS_FROM_MS


@dataclass
class _Fault:
    kind: str
    remaining: int | None  # None: until cleared
    delay_ms: int = 0
    start_ms: int = 0
    end_ms: int = 0
    changed: int = 3
    version: int = 0
    at_ms: int = 0


@dataclass(frozen=True)
class _State:
    """A file as it stands now (given its faults)."""

    pub_ms: int
    last_modified_ms: int
    content: tuple  # what the bytes depend on (part of the cache key)
    corrupt: bool
    wrong_checksum: bool
    missing: bool


@dataclass(frozen=True)
class _Built:
    body: bytes
    sha256: str
    md5: str
    rows: int


def _cost(built: _Built) -> int:
    """Bytes a cached file counts for: its zip plus an allowance for the entry itself."""
    return len(built.body) + 512


@dataclass
class _Cache:
    """Built files, least recently used evicted first, bounded by total bytes."""

    max_bytes: int
    entries: OrderedDict[tuple, _Built] = field(default_factory=OrderedDict)
    size: int = 0
    evicted: int = 0
    building: dict[tuple, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Archive:
    """The archive's state (knobs, faults, versions, the built-file cache) and its HTTP answers.

    ``list_exact_rows``: files of at most this many candle slots are built for a listing that
    shows them (exact ``Size``, MD5 ``ETag``); larger ones are listed with an estimated size and
    a multipart-style ETag (see the module docstring).
    """

    def __init__(
        self,
        market: _Market,
        *,
        daily_delay_ms: int,
        monthly_delay_ms: int,
        max_keys: int = _MAX_KEYS,
        cache_bytes: int = 512 * 2**20,
        header_from_ms: int | None = None,
        list_exact_rows: int = 1000,
    ) -> None:
        if max_keys < 1:
            raise ValueError("archive_max_keys must be >= 1")
        self._market = market
        self.daily_delay_ms = int(daily_delay_ms)
        self.monthly_delay_ms = int(monthly_delay_ms)
        self.max_keys = min(int(max_keys), _MAX_KEYS)
        self.header_from_ms = header_from_ms
        self.list_exact_rows = int(list_exact_rows)
        self._lock = threading.Lock()
        self._faults: dict[tuple[str, str, str], dict[str, _Fault]] = {}
        self._cache = _Cache(max(0, int(cache_bytes)))
        self._symbol_dirs = sorted(f"{name}/" for name in market.symbols)
        self._interval_dirs = {
            "daily": sorted(f"{path_interval(i)}/" for i in DAILY_INTERVALS),
            "monthly": sorted(f"{path_interval(i)}/" for i in INTERVALS),
        }

    # -- files, faults and publication -------------------------------------------------------

    def file(self, symbol: str, interval: str, period: str) -> ArchiveFile:
        """The file of ``symbol``/``interval`` for ``period`` (``YYYY-MM`` or ``YYYY-MM-DD``)."""
        if symbol not in self._market.symbols:
            raise KeyError(f"unknown symbol {symbol!r}")
        if interval not in INTERVALS:
            raise ValueError(f"unknown interval {interval!r}; expected one of {', '.join(INTERVALS)}")
        kind, start, end = parse_period(period)
        if kind == "daily" and interval not in DAILY_INTERVALS:
            raise ValueError(
                f"there are no daily {interval} files (daily files: {', '.join(DAILY_INTERVALS)})"
            )
        return ArchiveFile(kind, symbol, interval, period, start, end)

    def add_fault(self, kind: str, f: ArchiveFile, times: int | None, now: int, **kw: Any) -> None:
        """See :meth:`FakeExchange.archive_fault`."""
        if kind not in ARCHIVE_FAULT_KINDS:
            raise ValueError(f"unknown archive fault {kind!r}; expected one of {ARCHIVE_FAULT_KINDS}")
        if times is not None:
            if kind not in COUNTED_FAULT_KINDS:
                raise ValueError(f"'times' applies to {sorted(COUNTED_FAULT_KINDS)} only, not {kind!r}")
            if isinstance(times, bool) or int(times) < 1:
                raise ValueError("times must be None (until cleared) or >= 1")
            times = int(times)
        allowed = {"late": {"delay_s"}, "off_grid": {"start_ms", "end_ms"}, "reupload": {"changed"}}
        unknown = set(kw) - allowed.get(kind, set())
        if unknown:
            raise TypeError(f"unexpected options for a {kind!r} fault: {sorted(unknown)}")
        fault = _Fault(kind, times)
        if kind == "late":
            if "delay_s" not in kw or float(kw["delay_s"]) <= 0:
                raise ValueError("a 'late' fault needs delay_s > 0")
            fault.delay_ms = round(float(kw["delay_s"]) * 1000)
        elif kind == "off_grid":
            fault.start_ms = int(kw.get("start_ms", f.start_ms))
            fault.end_ms = int(kw.get("end_ms", f.end_ms))
        elif kind == "reupload":
            fault.changed = int(kw.get("changed", 3))
            if fault.changed < 1:
                raise ValueError("changed must be >= 1")
            fault.at_ms = now
        key = (f.symbol, f.interval, f.label)
        with self._lock:
            faults = self._faults.setdefault(key, {})
            if kind == "reupload":
                previous = faults.get("reupload")
                fault.version = 1 if previous is None else previous.version + 1
            faults[kind] = fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _base_pub(self, f: ArchiveFile) -> int:
        return f.end_ms + (self.daily_delay_ms if f.kind == "daily" else self.monthly_delay_ms)

    def _state_locked(self, f: ArchiveFile) -> _State:
        faults = self._faults.get((f.symbol, f.interval, f.label), {})
        pub = self._base_pub(f)
        late = faults.get("late")
        if late is not None:
            pub += late.delay_ms
        modified = pub
        version = changed = 0
        reupload = faults.get("reupload")
        if reupload is not None:
            version, changed = reupload.version, reupload.changed
            modified = max(pub, reupload.at_ms)
        header = "header" in faults or (self.header_from_ms is not None and f.start_ms >= self.header_from_ms)
        off = faults.get("off_grid")
        content = (
            pub,
            version,
            changed,
            header,
            "empty" in faults,
            None if off is None else (off.start_ms, off.end_ms),
        )
        return _State(
            pub_ms=pub,
            last_modified_ms=modified,
            content=content,
            corrupt="corrupt_zip" in faults,
            wrong_checksum="wrong_checksum" in faults,
            missing="missing" in faults,
        )

    def _consume_locked(self, f: ArchiveFile) -> None:
        """One GET of the zip was served (or 404'd by ``missing``): count it against faults."""
        key = (f.symbol, f.interval, f.label)
        faults = self._faults.get(key)
        if not faults:
            return
        for kind in [k for k in faults if k in COUNTED_FAULT_KINDS]:
            fault = faults[kind]
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del faults[kind]
        if not faults:
            del self._faults[key]

    def _opens(self, f: ArchiveFile, pub: int, limit: int | None) -> tuple[FakeSymbol, Interval, list[int]]:
        """The open times of ``f``'s candles that exist at ``pub`` (closed or not)."""
        sym = self._market.symbols[f.symbol]
        iv = Interval(f.interval)
        bounds = self._market.bounds(sym, iv, pub)
        if bounds is None:
            return sym, iv, []
        first, last = bounds
        lo, hi = max(first, iv.ceil(f.start_ms)), min(last, f.end_ms - 1)
        if lo > hi:
            return sym, iv, []
        return sym, iv, self._market.forward(iv, lo, hi, limit)

    def _exists(self, f: ArchiveFile, pub: int) -> bool:
        """True if ``f`` holds at least one candle closed at ``pub`` (cheap: one candle)."""
        _, iv, opens = self._opens(f, pub, 1)
        return bool(opens) and iv.next_open(opens[0]) - 1 < pub

    def _visible_locked(self, f: ArchiveFile, now: int) -> _State | None:
        """``f``'s state if it is published, present and not hidden by ``missing``."""
        state = self._state_locked(f)
        if state.missing or now < state.pub_ms or not self._exists(f, state.pub_ms):
            return None
        return state

    # -- building ----------------------------------------------------------------------------

    def expected_rows(self, f: ArchiveFile) -> list[tuple]:
        """Raw candles of ``f`` as published without faults (whether or not it is published yet)."""
        return self.rows(f, self._base_pub(f))

    def rows(self, f: ArchiveFile, pub: int) -> list[tuple]:
        """Raw candle tuples of ``f`` closed at ``pub`` (no faults applied)."""
        sym, iv, opens = self._opens(f, pub, None)
        rows = self._market.rows(sym, iv, opens, pub)
        while rows and rows[-1][6] >= pub:
            rows.pop()
        return rows

    def _csv(self, f: ArchiveFile, content: tuple) -> tuple[bytes, int]:
        pub, version, changed, header, empty, off_grid = content
        rows = [] if empty else self.rows(f, pub)
        if rows and version:
            rows = self._reuploaded(f, rows, version, changed)
        if rows and off_grid is not None:
            lo, hi = off_grid
            shift = OFF_GRID_SHIFT_MS
            rows = [(r[0] + shift, *r[1:6], r[6] + shift, *r[7:]) if lo <= r[0] < hi else r for r in rows]
        fmt = _CSV_US if f.micro else _CSV_MS
        text = "".join([fmt % row for row in rows])
        if header:
            text = CSV_HEADER + "\n" + text
        return text.encode(), len(rows)

    def _reuploaded(self, f: ArchiveFile, rows: list[tuple], version: int, changed: int) -> list[tuple]:
        """``changed`` evenly spread candles get close * (1 + version/1000) and high >= close."""
        tick = self._market._series[f.symbol].tick
        n = len(rows)
        count = min(changed, n)
        picked = {(2 * j + 1) * n // (2 * count) for j in range(count)}
        out = list(rows)
        factor = 1.0 + 0.001 * version
        for i in picked:
            r = out[i]
            close = round(r[4] * factor / tick) * tick
            if f"{close:.8f}" == f"{r[4]:.8f}":
                close = r[4] + tick
            out[i] = (*r[:2], max(r[2], close), r[3], close, *r[5:])
        return out

    def _zip(self, f: ArchiveFile, data: bytes) -> bytes:
        info = zipfile.ZipInfo(f.csv_name, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.create_system = 3
        info.external_attr = 0o644 << 16
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(info, data, compresslevel=_ZIP_LEVEL)
        return buf.getvalue()

    def built(self, f: ArchiveFile, state: _State) -> _Built:
        """The zip of ``f`` in ``state`` (from the cache, or built and cached)."""
        return self._cached((f.kind, f.symbol, f.interval, f.label, state.content, state.corrupt), f, state)

    def _cached(self, key: tuple, f: ArchiveFile, state: _State) -> _Built:
        cache = self._cache
        while True:
            with cache.lock:
                hit = cache.entries.get(key)
                if hit is not None:
                    cache.entries.move_to_end(key)
                    return hit
                pending = cache.building.get(key)
                if pending is None:
                    cache.building[key] = threading.Event()
                    break
            pending.wait()  # another thread builds the same file: take its result
        try:
            if state.corrupt:  # cut in the middle: the checksum (of these bytes) passes, unzip fails
                whole = self.built(f, dataclasses.replace(state, corrupt=False)).body
                body, rows = whole[: len(whole) // 2], -1
            else:
                data, rows = self._csv(f, state.content)
                body = self._zip(f, data)
            result = _Built(body, hashlib.sha256(body).hexdigest(), hashlib.md5(body).hexdigest(), rows)
            with cache.lock:
                if _cost(result) <= cache.max_bytes:
                    cache.entries[key] = result
                    cache.size += _cost(result)
                    while cache.size > cache.max_bytes:
                        _, old = cache.entries.popitem(last=False)
                        cache.size -= _cost(old)
                        cache.evicted += 1
            return result
        finally:
            with cache.lock:
                cache.building.pop(key).set()

    def cache_info(self) -> dict[str, int]:
        """``{"files": n, "bytes": total}`` of the built-file cache (zips + 512 per entry)."""
        with self._cache.lock:
            return {"files": len(self._cache.entries), "bytes": self._cache.size}

    def prebuild(
        self,
        symbols: Iterable[str],
        interval: str,
        start_ms: int,
        end_ms: int,
        now: int,
        kinds: Iterable[str],
    ) -> int:
        """Build and cache every published file overlapping ``[start_ms, end_ms)``; returns the count."""
        kinds = tuple(kinds)
        for kind in kinds:
            if kind not in ("daily", "monthly"):
                raise ValueError(f"kinds must be 'daily' and/or 'monthly', got {kind!r}")
        iv = Interval(interval)
        count = 0
        with self._cache.lock:
            evicted = self._cache.evicted
        for name in symbols:
            sym = self._market.symbols.get(name)
            if sym is None:
                raise KeyError(f"unknown symbol {name!r}")
            for kind in kinds:
                if kind == "daily" and interval not in DAILY_INTERVALS:
                    continue
                for start, end in self._periods(kind, sym, iv, now):
                    if end <= start_ms or start >= end_ms:
                        continue
                    f = ArchiveFile(kind, name, interval, _label(kind, start), start, end)
                    with self._lock:
                        state = self._visible_locked(f, now)
                    if state is not None:
                        self.built(f, state)
                        count += 1
        with self._cache.lock:
            evicted = self._cache.evicted - evicted
        if evicted:
            warnings.warn(
                f"archive_cache_bytes ({self._cache.max_bytes}) is too small: {evicted} built files were "
                "evicted while prebuilding; they will be built again when requested",
                RuntimeWarning,
                stacklevel=3,
            )
        return count

    # -- enumeration (listing) ---------------------------------------------------------------

    def _periods(self, kind: str, sym: FakeSymbol, iv: Interval, now: int) -> Iterator[tuple[int, int]]:
        """Candidate periods of ``sym``/``iv`` (oldest first) up to the last one published by
        ``now`` at the usual delay; whether a file exists is checked by the caller."""
        grid = _DAY if kind == "daily" else _MONTH
        delay = self.daily_delay_ms if kind == "daily" else self.monthly_delay_ms
        t = grid.floor(iv.floor(sym.listed_ms))
        delisted = sym.delisted_ms
        while delisted is None or t < delisted:
            end = grid.next_open(t)
            if end + delay > now:
                return
            yield t, end
            t = end

    def _walk(self, prefix: str, after: str, now: int) -> Iterator[tuple[str, ArchiveFile, _State, bool]]:
        """Visible keys starting with ``prefix`` and sorting after ``after``, in order, lazily:
        (key, file, state, is_checksum)."""
        for root in _children("", _ROOTS, prefix, after):
            kind = "daily" if root.startswith("data/spot/daily/") else "monthly"
            for sym_dir in _children(root, self._symbol_dirs, prefix, after):
                sym = self._market.symbols[sym_dir[:-1]]
                for iv_dir in _children(root + sym_dir, self._interval_dirs[kind], prefix, after):
                    base = root + sym_dir + iv_dir
                    interval = _from_path_interval(iv_dir[:-1])
                    assert interval is not None
                    yield from self._leaves(kind, sym, Interval(interval), base, prefix, after, now)

    def _leaves(
        self, kind: str, sym: FakeSymbol, iv: Interval, base: str, prefix: str, after: str, now: int
    ) -> Iterator[tuple[str, ArchiveFile, _State, bool]]:
        stem = f"{base}{sym.symbol}-{path_interval(iv.name)}-"
        if (after >= base and not after.startswith(base)) or not (
            base.startswith(prefix) or prefix.startswith(base)
        ):
            return
        for start, end in self._periods(kind, sym, iv, now):
            label = _label(kind, start)
            zip_key = f"{stem}{label}.zip"
            f: ArchiveFile | None = None
            state: _State | None = None
            for key, checksum in ((zip_key, False), (zip_key + ".CHECKSUM", True)):
                if key <= after:
                    continue
                if not key.startswith(prefix):
                    if key > prefix:
                        return  # every later key sorts after the prefix's range
                    continue
                if f is None:
                    f = ArchiveFile(kind, sym.symbol, iv.name, label, start, end)
                    with self._lock:
                        state = self._visible_locked(f, now)
                if state is None:
                    break
                yield key, f, state, checksum

    def _list(
        self, prefix: str, marker: str, delimiter: str, max_keys: int, now: int
    ) -> tuple[list[tuple[str, ArchiveFile, _State, bool]], list[str], bool, str]:
        """(contents, common prefixes, truncated, next marker) of one ListObjects page."""
        contents: list[tuple[str, ArchiveFile, _State, bool]] = []
        prefixes: list[str] = []
        after, last, truncated = marker, "", False
        while True:
            restart = False
            for key, f, state, checksum in self._walk(prefix, after, now):
                rolled = None
                if delimiter:
                    i = key.find(delimiter, len(prefix))
                    if i >= 0:
                        rolled = key[: i + len(delimiter)]
                if rolled is not None and rolled <= marker:  # the marker is inside this prefix
                    after, restart = rolled + _AFTER_ALL, True
                    break
                if len(contents) + len(prefixes) >= max_keys:
                    truncated = True
                    break
                if rolled is None:
                    contents.append((key, f, state, checksum))
                    last = key
                    continue
                prefixes.append(rolled)
                last = rolled
                after, restart = rolled + _AFTER_ALL, True  # skip the rest of this prefix
                break
            if not restart:
                return contents, prefixes, truncated, last

    # -- HTTP ------------------------------------------------------------------------------------

    def answer(self, method: str, path: str, params: dict[str, str], now: int) -> tuple[_Reply, str, str]:
        """Answer one archive request: (reply, stats kind, by_path label)."""
        path = unquote(path)
        if path == "/":
            if method not in ("GET", "HEAD"):
                return _not_allowed(), "listing", LISTING_LABEL
            return self._listing(params, now), "listing", LISTING_LABEL
        if path.startswith("/" + _ROOTS[1]):
            label = _MONTHLY_LABEL
        elif path.startswith("/" + _ROOTS[0]):
            label = _DAILY_LABEL
        else:
            label = _OTHER_LABEL
        key = path[1:]
        if method not in ("GET", "HEAD"):
            return _not_allowed(), "not_found", label
        checksum = key.endswith(".zip.CHECKSUM")
        f = self._parse_key(key[: -len(".CHECKSUM")] if checksum else key)
        if f is None:
            return _no_such_key(key), "not_found", label
        counts = method == "GET" and not checksum  # a zip GET: counted against faults' times
        with self._lock:
            state = self._visible_locked(f, now)
            if counts and state is None:
                hidden = self._state_locked(f)  # a GET that only the 'missing' fault turns away
                counts = hidden.missing and now >= hidden.pub_ms and self._exists(f, hidden.pub_ms)
            if counts:
                self._consume_locked(f)
        if state is None:
            return _no_such_key(key), "not_found", label
        built = self.built(f, state)
        if checksum:
            body = _checksum_text(f, state, built)
            etag = self._etag(f, state, True, body)
            content_type, kind = "text/plain", "checksum"
        else:
            body = built.body
            etag = self._etag(f, state, False, body, built.md5)
            content_type, kind = "application/zip", f.kind
        headers = [
            ("Content-Type", content_type),
            ("ETag", f'"{etag}"'),
            ("Last-Modified", _http_date(state.last_modified_ms)),
        ]
        return _Reply(200, body, headers), kind, label

    def _parse_key(self, key: str) -> ArchiveFile | None:
        parts = key.split("/")
        if len(parts) != 7 or parts[0:2] != ["data", "spot"] or parts[3] != "klines":
            return None
        _, _, kind, _, symbol, iv_text, name = parts
        interval = _from_path_interval(iv_text)
        if kind not in ("daily", "monthly") or interval is None or symbol not in self._market.symbols:
            return None
        stem = f"{symbol}-{iv_text}-"
        if not (name.startswith(stem) and name.endswith(".zip")):
            return None
        label = name[len(stem) : -len(".zip")]
        try:
            period_kind, start, end = parse_period(label)
        except ValueError:
            return None
        if period_kind != kind or (kind == "daily" and interval not in DAILY_INTERVALS):
            return None
        return ArchiveFile(kind, symbol, interval, label, start, end)

    def _large(self, f: ArchiveFile) -> bool:
        return Interval(f.interval).count(f.start_ms, f.end_ms) > self.list_exact_rows

    def _etag(
        self, f: ArchiveFile, state: _State, checksum: bool, body: bytes, md5: str | None = None
    ) -> str:
        if self._large(f):
            token = repr((f.key, checksum, state.content, state.corrupt, state.wrong_checksum))
            return hashlib.md5(token.encode()).hexdigest() + "-1"
        return md5 if md5 is not None else hashlib.md5(body).hexdigest()

    def _listed(self, f: ArchiveFile, state: _State, checksum: bool) -> tuple[int, str]:
        """(Size, ETag) of a listed key."""
        if self._large(f):
            if checksum:
                size = 64 + 2 + len(f.name.encode()) + 1
            else:
                slots = Interval(f.interval).count(f.start_ms, f.end_ms)
                size = 150 + slots * _EST_ROW_BYTES
            return size, self._etag(f, state, checksum, b"")
        built = self.built(f, state)
        if not checksum:
            return len(built.body), built.md5
        text = _checksum_text(f, state, built)
        return len(text), hashlib.md5(text).hexdigest()

    def _listing(self, params: dict[str, str], now: int) -> _Reply:
        v2 = params.get("list-type") == "2"
        prefix = params.get("prefix", "")
        delimiter = params.get("delimiter", "")
        raw_max = params.get("max-keys", "")
        try:
            requested = _MAX_KEYS if raw_max == "" else int(raw_max)
            if requested < 0:
                raise ValueError
        except ValueError:
            return _s3_error(
                400, "InvalidArgument", "Provided max-keys not an integer or within integer range"
            )
        max_keys = min(requested, self.max_keys)
        if v2:
            token = params.get("continuation-token")
            if token is not None:
                try:
                    marker = base64.urlsafe_b64decode(token.encode()).decode()
                except (ValueError, UnicodeDecodeError):
                    return _s3_error(400, "InvalidArgument", "The continuation token provided is incorrect")
            else:
                marker = params.get("start-after", "")
        else:
            marker = params.get("marker", "")
        contents, prefixes, truncated, last = self._list(prefix, marker, delimiter, max_keys, now)
        out = [_XML_HEAD, f'<ListBucketResult xmlns="{_S3_NS}"><Name>{BUCKET}</Name>']
        out.append(f"<Prefix>{escape(prefix)}</Prefix>")
        if v2:
            if "continuation-token" in params:
                out.append(f"<ContinuationToken>{escape(params['continuation-token'])}</ContinuationToken>")
            if "start-after" in params:
                out.append(f"<StartAfter>{escape(params['start-after'])}</StartAfter>")
            out.append(f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
        else:
            out.append(f"<Marker>{escape(marker)}</Marker>")
        out.append(f"<MaxKeys>{max_keys}</MaxKeys>")
        if delimiter:
            out.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if truncated:
            if v2:
                token = base64.urlsafe_b64encode(last.encode()).decode()
                out.append(f"<NextContinuationToken>{token}</NextContinuationToken>")
            else:
                out.append(f"<NextMarker>{escape(last)}</NextMarker>")
        for key, f, state, checksum in contents:
            size, etag = self._listed(f, state, checksum)
            out.append(
                f"<Contents><Key>{escape(key)}</Key><LastModified>{_iso(state.last_modified_ms)}"
                f"</LastModified><ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        for common in prefixes:
            out.append(f"<CommonPrefixes><Prefix>{escape(common)}</Prefix></CommonPrefixes>")
        out.append("</ListBucketResult>")
        return _Reply(200, "".join(out).encode(), [("Content-Type", _XML)])


def _children(node: str, segments: list[str] | tuple[str, ...], prefix: str, after: str) -> Iterator[str]:
    """The sorted child ``segments`` of ``node`` whose keys may start with ``prefix`` and sort
    after ``after`` (a superset: the leaves check exactly). No segment is a prefix of another."""
    lo = 0
    if after >= node:
        if not after.startswith(node):
            return  # after sorts after every key under node
        lo = max(0, bisect.bisect_left(segments, after[len(node) :]) - 1)
    rest: str | None = None
    if prefix.startswith(node):
        rest = prefix[len(node) :]
        lo = max(lo, bisect.bisect_left(segments, rest) - 1)
    elif not node.startswith(prefix):
        return
    for i in range(lo, len(segments)):
        seg = segments[i]
        if rest is not None and seg > rest and not seg.startswith(rest):
            return
        yield seg


def _checksum_text(f: ArchiveFile, state: _State, built: _Built) -> bytes:
    """The ``.CHECKSUM`` file: ``<sha256 hex>  <zip name>\n`` (another hash if ``wrong_checksum``)."""
    digest = built.sha256
    if state.wrong_checksum:
        digest = hashlib.sha256(b"not the zip" + built.body).hexdigest()
    return f"{digest}  {f.name}\n".encode()


def _not_allowed() -> _Reply:
    return _s3_error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")


def _s3_error(status: int, code: str, message: str, key: str | None = None) -> _Reply:
    key_xml = "" if key is None else f"<Key>{escape(key)}</Key>"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>{key_xml}</Error>"
    )
    return _Reply(status, body.encode(), [("Content-Type", _XML)])


def _no_such_key(key: str) -> _Reply:
    return _s3_error(404, "NoSuchKey", "The specified key does not exist.", key)
