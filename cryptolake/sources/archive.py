"""Binance's bulk archive (``data.binance.vision``): kline files that cost no request weight.

Binance publishes every symbol's candles as zipped CSV files: one per closed **month**
(``data/spot/monthly/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-<YYYY>-<MM>.zip``, some days
into the next month) and one per closed **day** (``.../daily/...-<YYYY>-<MM>-<DD>.zip``, some
hours after the day; only for ``1s`` to ``1d``). Each has a ``.CHECKSUM`` file beside it with its
SHA-256. The bucket is listed with S3's ListObjects (``?prefix=...&delimiter=/&marker=...``).

:class:`BinanceArchive` lists, downloads (streamed, hashed as the bytes arrive) and reads those
files; a file is used only when its bytes match its checksum. :class:`ArchiveSource` is a
:class:`~cryptolake.sources.base.KlineSource` that serves candles from the files wherever one
exists and from the REST client everywhere else (or, in ``archive`` mode, from files only).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import mmap
import os
import re
import struct
import tempfile
import threading
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import pyarrow as pa
import tenacity

from cryptolake._version import __version__
from cryptolake.atomic import write_bytes_atomic
from cryptolake.errors import (
    ArchiveFileError,
    BadPayload,
    ExchangeUnavailable,
    Interrupted,
    SourceError,
    Transient,
)
from cryptolake.schema import Interval
from cryptolake.sources.base import Block, BlockRows, KlineSource, Market, SourceRecord
from cryptolake.sources.klines import EMPTY_TABLE, parse_klines_csv, rows_between, table_to_frame
from cryptolake.timeutils import iso, to_ms

_inflater: Any
try:  # Intel's ISA-L inflates these files twice as fast as zlib, with the same results
    from isal import isal_zlib as _inflater
except ImportError:  # pragma: no cover - a platform without its wheels
    _inflater = zlib

log = logging.getLogger("cryptolake.archive")

DEFAULT_ARCHIVE_URL = "https://data.binance.vision"
#: Where Binance's bucket is listed: data.binance.vision itself answers a listing with a page of
#: HTML for browsers; the bucket's S3 endpoint answers the ListObjects XML.
DEFAULT_LISTING_URL = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"
#: Intervals with daily files (every interval has monthly ones).
DAILY_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
#: How :class:`ArchiveSource` serves (``rest``, the third choice of ``--source``, is the REST
#: client alone).
SourceMode = Literal["auto", "archive"]
#: In ``auto`` mode a file is used only where it replaces at least this many REST candles (one
#: full klines request): a month of ``1h`` candles (744) is one request over REST, cheaper than a
#: checksum and a zip.
AUTO_MIN_CANDLES = 1000
_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_KEY = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<interval>\w+)-(?P<period>\d{4}-\d{2}(?:-\d{2})?)\.zip$")
_CHUNK = 1 << 20
_SPOOL_BYTES = 16 << 20  # a zip up to this size stays in memory while it is read
#: Files unzipped and parsed at once. Parsing is CPU work (a few cores are all it can use) and
#: each one in progress holds its CSV, its columns and its table (~30 MB for a month of 1m):
#: downloads overlap freely, parses take turns.
PARSE_SLOTS = max(1, min(4, os.cpu_count() or 1))


def path_interval(interval: str) -> str:
    """The interval as the archive's paths spell it (``1M`` is ``1mo``)."""
    return "1mo" if interval == "1M" else interval


@dataclass(frozen=True, order=True)
class ArchiveFile:
    """One archive file: the candles of ``symbol`` and ``interval`` opening in ``[lo, hi)``."""

    lo: int
    hi: int
    symbol: str
    interval: str
    period: str  # "YYYY-MM" (a monthly file) or "YYYY-MM-DD" (a daily one)

    @property
    def daily(self) -> bool:
        return len(self.period) == 10

    @property
    def name(self) -> str:
        return f"{self.symbol}-{path_interval(self.interval)}-{self.period}.zip"

    @property
    def key(self) -> str:
        kind = "daily" if self.daily else "monthly"
        return f"data/spot/{kind}/klines/{self.symbol}/{path_interval(self.interval)}/{self.name}"

    @staticmethod
    def from_key(key: str, interval: str) -> ArchiveFile:
        """The file at an archive path (``data/spot/.../BTCUSDT-1m-2024-01.zip``)."""
        match = _KEY.match(key.rsplit("/", 1)[-1])
        if match is None or match["interval"] != path_interval(interval):
            raise ValueError(f"not an archive kline file of {interval}: {key!r}")
        return ArchiveFile.of(match["symbol"], interval, match["period"])

    @staticmethod
    def of(symbol: str, interval: str, period: str) -> ArchiveFile:
        """The file of a period (``YYYY-MM`` or ``YYYY-MM-DD``)."""
        if len(period) == 7:
            month = Interval("1M")
            lo = month.floor(_period_ms(period + "-01"))
            hi = month.next_open(lo)
        else:
            lo = _period_ms(period)
            hi = lo + 86_400_000
        return ArchiveFile(lo, hi, symbol, interval, period)


def _period_ms(day: str) -> int:
    return to_ms(day + "T00:00:00Z")


@dataclass
class ArchiveRows:
    """A verified archive file, read: its on-grid candles and what was left out."""

    file: ArchiveFile
    table: pa.Table  # the lake's schema, ms, sorted, unique, on the grid, inside [file.lo, file.hi)
    sha256: str
    size: int
    header: bool
    micro: bool
    off_grid: int = 0  # rows not on the interval's grid, left out
    holes: list[tuple[int, int]] = field(default_factory=list)  # slots [lo, hi) left empty, if off_grid


class _Mismatch(Exception):
    pass


class BinanceArchive:
    """Lists, downloads, verifies and reads Binance's bulk-archive kline files.

    Args:
        base_url: the archive (``https://data.binance.vision``).
        listing_url: where its S3 listing (``?prefix=...&marker=...``) is read; default: the
            bucket's S3 endpoint for Binance's own archive, the same URL for any other (a
            mirror, the fake exchange).
        timeout_s: per-request timeout.
        max_retries: retries of a request after timeouts, connection errors and 5xx.
        retry_delay: first pause before a retry, doubled each time.
        concurrency: downloads in flight at once.
        cache_dir: keep downloaded zips here (by their archive path) and use them again while
            their checksum is unchanged; None: a file is gone once its rows are read.
        transport: an httpx transport (a seam for proxies).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_ARCHIVE_URL,
        *,
        listing_url: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        concurrency: int = 8,
        cache_dir: str | Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_retries < 0 or concurrency < 1 or timeout_s <= 0 or retry_delay < 0:
            raise ValueError("max_retries >= 0, concurrency >= 1, timeout_s > 0, retry_delay >= 0")
        self.base_url = base_url.rstrip("/")
        if not listing_url:
            listing_url = DEFAULT_LISTING_URL if self.base_url == DEFAULT_ARCHIVE_URL else self.base_url
        self.listing_url = listing_url.rstrip("/")
        self._shown = _without_credentials(self.base_url)
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.concurrency = concurrency
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._parsing = threading.BoundedSemaphore(PARSE_SLOTS)
        self._side: ThreadPoolExecutor | None = None
        self.bytes_downloaded = 0
        self.files_downloaded = 0
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"User-Agent": f"cryptolake/{__version__}"},
            timeout=timeout_s,
            transport=transport,
            follow_redirects=True,
            limits=httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4),
        )

    def __repr__(self) -> str:
        return f"BinanceArchive(base_url={self._shown!r})"

    def close(self) -> None:
        if self._side is not None:
            self._side.shutdown(wait=True)
            self._side = None
        self._http.close()

    def __enter__(self) -> BinanceArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cancel_pending(self) -> None:
        """Make downloads and retries give up at once (a stop was asked)."""
        self._cancel.set()

    def resume(self) -> None:
        self._cancel.clear()

    # -- listing -----------------------------------------------------------------------------

    def list_keys(self, prefix: str, delimiter: str | None = None) -> list[str]:
        """Every key under ``prefix`` (S3 ListObjects, followed page by page by ``marker``);
        with a ``delimiter``, the common prefixes too (each ending in it)."""
        keys: list[str] = []
        marker = ""
        while True:
            params = {"prefix": prefix, "marker": marker}
            if delimiter:
                params["delimiter"] = delimiter
            body = self._request(self.listing_url + "/", params).content
            try:
                root = ET.fromstring(body)
            except ET.ParseError as exc:
                raise BadPayload(f"the archive's listing is not S3 XML: {body[:100]!r}") from exc
            page = [e.text or "" for e in root.iter(f"{_S3}Key")] + [
                e.text or "" for p in root.iter(f"{_S3}CommonPrefixes") for e in p.iter(f"{_S3}Prefix")
            ]
            keys.extend(page)
            truncated = (root.findtext(f"{_S3}IsTruncated") or "false").strip() == "true"
            if not truncated:
                return keys
            next_marker = root.findtext(f"{_S3}NextMarker") or (max(page) if page else "")
            if not next_marker or next_marker <= marker:
                raise BadPayload("the archive's listing is truncated without a next marker")
            marker = next_marker

    def files(self, symbol: str, interval: str, *, daily_months: Iterable[str] = ()) -> list[ArchiveFile]:
        """The published files of a symbol and interval: every monthly file, and the daily files
        of ``daily_months`` (``YYYY-MM``), sorted. A file counts only with its ``.CHECKSUM``."""
        piv = path_interval(interval)
        prefixes = [f"data/spot/monthly/klines/{symbol}/{piv}/"]
        if interval in DAILY_INTERVALS:
            prefixes += [f"data/spot/daily/klines/{symbol}/{piv}/{symbol}-{piv}-{m}-" for m in daily_months]
        found: set[str] = set()
        for prefix in prefixes:
            found.update(self.list_keys(prefix, delimiter="/"))
        out = []
        for key in found:
            if not key.endswith(".zip") or key + ".CHECKSUM" not in found:
                continue
            match = _KEY.match(key.rsplit("/", 1)[-1])
            if match and match["symbol"] == symbol and match["interval"] == piv:
                out.append(ArchiveFile.of(symbol, interval, match["period"]))
        return sorted(out)

    # -- one file ----------------------------------------------------------------------------

    def read(self, file: ArchiveFile) -> ArchiveRows:
        """Download a file, check it against its ``.CHECKSUM`` and read its candles. A mismatch or
        an unreadable zip is downloaded once more before the file is given up.

        Raises:
            ArchiveFileError: the file cannot be used (see its ``reason``).
        """
        try:
            return self._read(file)
        except Interrupted:
            raise
        except ArchiveFileError:
            raise
        except (SourceError, OSError) as exc:
            raise ArchiveFileError(f"{file.key}: {exc}", reason="unavailable", key=file.key) from None

    def _read(self, file: ArchiveFile) -> ArchiveRows:
        grid = Interval(file.interval)
        for attempt in (1, 2):
            if self.cache_dir is None:  # the checksum comes while the zip downloads
                expected_of: Callable[[], str] = self._side_pool().submit(self._checksum, file).result
            else:  # a kept copy is used if it has the checksum: ask it first
                expected_of = _given(self._checksum(file))
            try:
                with _ZipDownload(self, file, expected_of) as (handle, digest, size, expected):
                    if digest != expected:
                        raise _Mismatch(f"SHA-256 {digest[:12]}... but .CHECKSUM says {expected[:12]}...")
                    with self._parsing:
                        table, header, micro = _read_zip(handle, file)
                        rows = _on_grid(table, grid, file)
                        del table
                        # Arrow's allocator keeps what a parse freed in the parsing thread's heap;
                        # give it back, or every pool thread holds a file's worth for good.
                        pa.default_memory_pool().release_unused()
            except _Mismatch as exc:
                if attempt == 2:
                    raise ArchiveFileError(
                        f"{file.key}: {exc} (twice)", reason="checksum", key=file.key
                    ) from None
                log.info("%s: %s; downloading it again", file.key, exc)
                continue
            except (zipfile.BadZipFile, BadPayload, OSError, EOFError, ValueError) as exc:
                if isinstance(exc, ArchiveFileError):
                    raise
                if attempt == 2:
                    raise ArchiveFileError(
                        f"{file.key}: unreadable ({type(exc).__name__}: {exc})",
                        reason="corrupt",
                        key=file.key,
                    ) from None
                log.info("%s: unreadable (%s); downloading it again", file.key, exc)
                continue
            if rows.table.num_rows == 0 and rows.off_grid == 0:
                raise ArchiveFileError(f"{file.key}: no candles in the file", reason="empty", key=file.key)
            rows.sha256, rows.size, rows.header, rows.micro = expected, size, header, micro
            return rows
        raise AssertionError("unreachable")  # pragma: no cover

    def checksum(self, file: ArchiveFile) -> str:
        """The SHA-256 the archive publishes for a file now (one small request)."""
        return self._checksum(file)

    def _checksum(self, file: ArchiveFile) -> str:
        text = self._request("/" + file.key + ".CHECKSUM", {}, key=file.key).text.strip()
        digest = text.split()[0].lower() if text else ""
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ArchiveFileError(
                f"{file.key}.CHECKSUM is not a SHA-256: {text[:80]!r}", reason="checksum", key=file.key
            )
        return digest

    def _side_pool(self) -> ThreadPoolExecutor:
        """Threads for the small requests that go beside a download (its checksum)."""
        with self._lock:
            if self._side is None:
                self._side = ThreadPoolExecutor(self.concurrency, thread_name_prefix="archive-checksum")
            return self._side

    def _download(self, file: ArchiveFile, sink: Any) -> tuple[str, int]:
        """Stream the zip into ``sink``, hashing as the bytes arrive; returns (sha256, size)."""

        def attempt() -> tuple[str, int]:
            sink.seek(0)
            sink.truncate()
            digest, size = hashlib.sha256(), 0
            with self._transport_errors(file.key), self._http.stream("GET", "/" + file.key) as response:
                self._check_status(response, file.key)
                for chunk in response.iter_bytes(_CHUNK):
                    if self._cancel.is_set():
                        raise Interrupted(f"stopped while downloading {file.key}")
                    digest.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
            return digest.hexdigest(), size

        result = self._retrying(attempt)
        with self._lock:
            self.bytes_downloaded += result[1]
            self.files_downloaded += 1
        return result

    # -- HTTP --------------------------------------------------------------------------------

    def _request(self, path: str, params: dict[str, str], key: str | None = None) -> httpx.Response:
        def attempt() -> httpx.Response:
            if self._cancel.is_set():
                raise Interrupted(f"stopped before asking the archive for {path}")
            with self._transport_errors(path):
                response = self._http.get(path, params=params or None)
            self._check_status(response, key or path)
            with self._lock:
                self.bytes_downloaded += len(response.content)
            return response

        return self._retrying(attempt)

    @contextlib.contextmanager
    def _transport_errors(self, what: str) -> Iterator[None]:
        """httpx's timeouts and connection errors as :class:`ExchangeUnavailable` (retried),
        naming the archive without its credentials."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise ExchangeUnavailable(f"the archive timed out on {_without_credentials(what)}") from exc
        except httpx.TransportError as exc:
            raise ExchangeUnavailable(
                f"cannot reach the archive at {self._shown} ({type(exc).__name__})"
            ) from exc

    def _check_status(self, response: httpx.Response, key: str) -> None:
        status = response.status_code
        if status == 200:
            return
        if status in (403, 404):  # S3 answers 403 for a missing key when listing is not allowed
            raise ArchiveFileError(f"{key}: not in the archive (HTTP {status})", reason="missing", key=key)
        if status >= 500 or status == 429:
            raise ExchangeUnavailable(f"the archive answered HTTP {status} for {key}")
        raise ArchiveFileError(f"{key}: the archive answered HTTP {status}", reason="unavailable", key=key)

    def _pause(self, seconds: float) -> None:
        self._cancel.wait(seconds)

    def _retrying(self, attempt: Callable[[], Any]) -> Any:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Transient),
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self.retry_delay, max=30, jitter=self.retry_delay
            ),
            sleep=self._pause,
            reraise=True,
        )
        return retrying(attempt)


def _without_credentials(url: str) -> str:
    """The URL without a user or password (for messages: they are secrets)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _given(value: str) -> Callable[[], str]:
    return lambda: value


class _ZipDownload:
    """``with`` it: ``(seekable file of the zip, its sha256, its size, the published sha256)``,
    from the cache folder when a copy with the published checksum is there, else downloaded
    (spooled to a temp file past a few MB) and, with a cache folder, kept there. ``expected``
    gives the published checksum (it may be on its way while the zip downloads)."""

    def __init__(self, archive: BinanceArchive, file: ArchiveFile, expected: Callable[[], str]) -> None:
        self.archive, self.file, self.expected = archive, file, expected
        self._handle: Any = None

    def __enter__(self) -> tuple[Any, str, int, str]:
        cache = self.archive.cache_dir
        cached = cache / self.file.key if cache else None
        if cached is not None and _is_file(cached):
            data = cached.read_bytes()
            if hashlib.sha256(data).hexdigest() == self.expected():
                self._handle = io.BytesIO(data)
                return self._handle, self.expected(), len(data), self.expected()
        self._handle = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - closed in __exit__
        digest, size = self.archive._download(self.file, self._handle)
        expected = self.expected()
        self._handle.seek(0)
        if cached is not None and digest == expected:
            try:
                write_bytes_atomic(cached, self._handle.read())
            except OSError as exc:  # the file is good; only keeping it failed
                log.warning("cannot keep %s in the cache folder: %s", self.file.key, exc)
            self._handle.seek(0)
        return self._handle, digest, size, expected

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()


def _read_zip(handle: Any, file: ArchiveFile) -> tuple[pa.Table, bool, bool]:
    """The CSV inside a verified zip, parsed. Its bytes passed the SHA-256 check, so the member
    is inflated in one call, without zipfile's chunked reads and CRC (several times faster),
    and parsed from memory, where Arrow needs no Python call and releases the GIL."""
    with zipfile.ZipFile(handle) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) != 1:
            raise BadPayload(f"{file.key} holds {len(members)} files, not one CSV")
        member = members[0]
        if member.compress_type not in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED) or member.flag_bits & 0x1:
            with archive.open(member) as stream:  # another method: zipfile's way
                return parse_klines_csv(stream.read())
    handle.seek(member.header_offset)
    local = handle.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"{file.key}: no local file header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    handle.seek(member.header_offset + 30 + name_len + extra_len)
    raw = handle.read(member.compress_size)
    if len(raw) != member.compress_size:
        raise zipfile.BadZipFile(f"{file.key}: truncated")
    if member.compress_type == zipfile.ZIP_STORED or member.file_size == 0:
        return parse_klines_csv(raw if member.compress_type == zipfile.ZIP_STORED else b"")
    # Inflated into memory mapped for it alone, and unmapped after the parse: a C heap block of
    # this size would stay with the process after it is freed.
    text = mmap.mmap(-1, max(1, member.file_size))
    try:
        inflater, done = _inflater.decompressobj(-15), 0
        view = memoryview(raw)
        for at in range(0, len(view), _CHUNK):
            chunk = inflater.decompress(view[at : at + _CHUNK])
            if done + len(chunk) > member.file_size:
                raise zipfile.BadZipFile(f"{file.key}: inflates past its size")
            text[done : done + len(chunk)] = chunk
            done += len(chunk)
        tail = inflater.flush()
        text[done : done + len(tail)] = tail
        done += len(tail)
        if done != member.file_size:
            raise zipfile.BadZipFile(f"{file.key}: {done} bytes inflated, {member.file_size} expected")
        del view, raw
        buffer = pa.py_buffer(text)
        try:
            return parse_klines_csv(buffer)
        finally:
            del buffer
    except (_inflater.error, zlib.error) as exc:
        raise zipfile.BadZipFile(f"{file.key}: {exc}") from None
    finally:
        with contextlib.suppress(BufferError):  # still exported by an error's traceback: GC unmaps it
            text.close()


def _on_grid(table: pa.Table, grid: Interval, file: ArchiveFile) -> ArchiveRows:
    """The file's candles on the grid and inside its period. When some are off the grid, the
    period's slots left empty are listed as holes, for another source to fill."""
    opens = table.column("open_time").cast(pa.int64()).to_numpy()
    if grid.fixed_ms:
        on = (opens - grid.origin_ms) % grid.fixed_ms == 0
    else:
        on = np.array([grid.is_on_grid(int(t)) for t in opens], dtype=bool)
    inside = (opens >= file.lo) & (opens < file.hi)
    keep = on & inside
    off = ~on
    kept = table if keep.all() else table.filter(pa.array(keep))
    rows = ArchiveRows(file, kept, "", 0, False, False, int(off.sum()))
    if rows.off_grid:
        # Shifted candles leave slots empty anywhere in the period (its first ones, when they
        # move later; its last ones, when they move past its end): look at all of it.
        first = grid.index(grid.ceil(file.lo))
        last = grid.index(grid.floor(file.hi - 1))
        present = np.array([grid.index(int(t)) for t in opens[keep]], dtype=np.int64)
        missing = np.setdiff1d(np.arange(first, last + 1, dtype=np.int64), present)
        if len(missing):
            breaks = np.flatnonzero(np.diff(missing) != 1) + 1
            for run in np.split(missing, breaks):
                rows.holes.append((grid.at(int(run[0])), grid.at(int(run[-1]) + 1)))
    return rows


# --------------------------------------------------------------------------------------------
# The source: files where they serve, REST for the rest
# --------------------------------------------------------------------------------------------


@dataclass
class _Index:
    files: dict[str, ArchiveFile] = field(default_factory=dict)  # by period
    error: str | None = None


class ArchiveSource:
    """Candles from Binance's bulk archive where a file serves, from REST for the rest.

    A :class:`~cryptolake.sources.base.KlineSource`: the exchange's clock, symbols, bans and
    single-page requests are the REST client's. The pipeline asks :meth:`blocks` which parts of a
    window a file serves and fetches each with :meth:`get_block`.

    Args:
        rest: the REST client (clock, symbols, and every candle no file serves).
        archive: the archive client.
        mode: ``auto`` (files where one replaces at least a full klines request, REST for the
            rest) or ``archive`` (every file that exists, and nothing over REST: what no file
            holds is left for a later run).
    """

    def __init__(self, rest: KlineSource, archive: BinanceArchive, mode: SourceMode = "auto") -> None:
        if mode not in ("auto", "archive"):
            raise ValueError("mode is 'auto' or 'archive' (use the REST client itself for 'rest')")
        self.rest = rest
        self.archive = archive
        self.mode = mode
        self.exchange = rest.exchange
        self.quote_asset = rest.quote_asset
        self.intervals = rest.intervals
        self.page_candles = rest.page_candles
        self.pages_skip_empty = rest.pages_skip_empty
        self.empty_candles = rest.empty_candles
        self.concurrency = max(rest.concurrency, archive.concurrency)
        self.retry_delay = rest.retry_delay
        self.blocks_only = mode == "archive"
        self._index: dict[tuple[str, str], _Index] = {}
        self._index_lock = threading.Lock()

    def close(self) -> None:
        """Close the archive client's connections (the REST client is its owner's to close)."""
        self.archive.close()

    def __enter__(self) -> ArchiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArchiveSource(mode={self.mode!r}, archive={self.archive.base_url!r}, rest={self.rest!r})"

    # -- what the REST client answers --------------------------------------------------------

    def get_server_time_ms(self) -> int:
        return self.rest.get_server_time_ms()

    def sync_clock(self) -> int:
        return self.rest.sync_clock()

    def markets(self) -> list[Market]:
        return self.rest.markets()

    def resolve_symbol(self, name: str) -> str:
        return self.rest.resolve_symbol(name)

    def symbol_statuses(self) -> dict[str, str]:
        return self.rest.symbol_statuses()

    def get_top_by_market_cap(self, limit: int = 50) -> Sequence[Any]:
        return self.rest.get_top_by_market_cap(limit)

    def first_open_time(self, symbol: str, interval: str) -> int | None:
        return self.rest.first_open_time(symbol, interval)

    def last_open_time(self, symbol: str, interval: str) -> int | None:
        return self.rest.last_open_time(symbol, interval)

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
        return self.rest.get_klines_page(symbol, interval, start_ms, end_ms, limit, as_arrow=as_arrow)

    def banned_until(self) -> float:
        return self.rest.banned_until()

    def cancel_pending(self) -> None:
        self.archive.cancel_pending()
        self.rest.cancel_pending()

    def resume(self) -> None:
        self.archive.resume()
        self.rest.resume()

    # -- files -------------------------------------------------------------------------------

    def prepare(self, interval: str, spans: dict[str, tuple[int, int]], max_block_candles: int) -> None:
        """List the files of each symbol that may serve its span ``[lo, hi)`` (concurrently, one
        listing of the monthly files per symbol and one per month whose daily files may serve)."""
        grid = Interval(interval)
        if not self.could_serve(interval, max_block_candles):
            return
        todo = [(s, lo, hi) for s, (lo, hi) in spans.items() if lo < hi and (s, interval) not in self._index]
        if not todo:
            return

        unreachable: list[str] = []  # once the archive cannot be reached, nobody waits for it again

        def list_one(item: tuple[str, int, int]) -> None:
            symbol, lo, hi = item
            index = _Index()
            try:
                if unreachable:
                    raise ExchangeUnavailable(unreachable[0])
                monthly = self.archive.files(symbol, interval)
                months = _daily_months(grid, lo, hi, monthly, max_block_candles)
                daily = self.archive.files(symbol, interval, daily_months=months) if months else []
                index.files = {f.period: f for f in [*monthly, *daily]}
            except (SourceError, OSError) as exc:
                if isinstance(exc, Interrupted):
                    raise
                index.error = f"cannot list the archive's files of {symbol} {interval}: {exc}"
                if isinstance(exc, ExchangeUnavailable) and not unreachable:
                    unreachable.append(str(exc))
                    log.warning(
                        "the archive cannot be reached (%s): %s", exc,
                        "its files are left for a later run" if self.mode == "archive" else "every candle over REST",
                    )  # fmt: skip
                elif not isinstance(exc, ExchangeUnavailable):
                    log.warning("%s", index.error)
            with self._index_lock:
                self._index[(symbol, interval)] = index

        with ThreadPoolExecutor(
            min(self.archive.concurrency, len(todo)), thread_name_prefix="archive-list"
        ) as pool:
            list(pool.map(list_one, todo))

    def could_serve(self, interval: str, max_block_candles: int) -> bool:
        """Whether any file of this interval can serve: in ``auto`` mode, only files that
        replace a full klines request (monthly files of 30m and shorter, daily ones of 1m
        and 1s) are used, so nothing is listed for longer intervals."""
        if self.mode == "archive":
            return True
        grid = Interval(interval)
        month = grid.count(0, Interval("1M").next_open(0))  # January: 31 days
        day = grid.count(0, 86_400_000) if interval in DAILY_INTERVALS else 0
        return max(month if month <= max_block_candles else 0, day) >= AUTO_MIN_CANDLES

    def listing_error(self, symbol: str, interval: str) -> str | None:
        """Why the symbol's files could not be listed, if they could not."""
        index = self._index.get((symbol, interval))
        return index.error if index else None

    def blocks(
        self,
        symbol: str,
        interval: str,
        lo: int,
        hi: int,
        max_block_candles: int,
        skip: frozenset[str] = frozenset(),
    ) -> list[Block]:
        """The parts of ``[lo, hi)`` a file serves, as blocks (sorted, not overlapping): a month's
        file where the month is written whole (at most ``max_block_candles``), else its daily
        files; in ``auto`` mode only files that replace a full klines request. Files whose key
        is in ``skip`` (already merged) are left out."""
        grid = Interval(interval)
        if not self.could_serve(interval, max_block_candles):
            return []
        if lo >= hi:
            return []
        index = self._index.get((symbol, interval))
        if index is None:
            self.prepare(interval, {symbol: (lo, hi)}, max_block_candles)
            index = self._index[(symbol, interval)]
        minimum = AUTO_MIN_CANDLES if self.mode == "auto" else 1
        return choose_blocks(grid, list(index.files.values()), lo, hi, max_block_candles, minimum, skip)

    def get_block(self, symbol: str, interval: str, block: Block) -> BlockRows:
        """The candles of one block: its file's, verified; what the file cannot serve (missing,
        a checksum that does not match twice, corrupt, empty, off-grid candles) comes from REST,
        or in ``archive`` mode is returned as ``unserved``."""
        file = ArchiveFile.of(symbol, interval, block.period)
        try:
            rows = self.archive.read(file)
        except ArchiveFileError as exc:
            record = SourceRecord("archive_rejected", file.key, rows=0, note=f"{exc.reason}: {exc}")
            log.warning("%s; %s", exc, "from REST instead" if self.mode == "auto" else "left for a later run")
            if self.mode == "archive":
                return BlockRows(EMPTY_TABLE, [record], [(block.lo, block.hi)])
            table = self.rest.get_klines_range(symbol, interval, block.lo, block.hi, as_arrow=True)
            return BlockRows(table, [record, SourceRecord("rest", "", rows=table.num_rows)], [])
        table = rows_between(rows.table, block.lo, block.hi)
        records = [
            SourceRecord("archive", file.key, sha256=rows.sha256, rows=table.num_rows, off_grid=rows.off_grid)
        ]
        unserved: list[tuple[int, int]] = []
        if rows.off_grid:
            # The file's off-grid candles are not stored; the slots left empty come from REST,
            # which serves those candles on the grid.
            records[0].note = f"{rows.off_grid} off-grid candles left out"
            for hole_lo, hole_hi in rows.holes:
                a, b = max(block.lo, hole_lo), min(block.hi, hole_hi)
                if a >= b:
                    continue
                if self.mode == "archive":
                    unserved.append((a, b))
                else:
                    fill = self.rest.get_klines_range(symbol, interval, a, b, as_arrow=True)
                    table = _merge(table, fill)
                    records.append(SourceRecord("rest", "", rows=fill.num_rows))
        return BlockRows(table, records, unserved)

    def get_klines_range(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, as_arrow: bool = False
    ) -> Any:
        """Every candle opening in ``[start_ms, end_ms)``: from files where they serve, from REST
        for the rest (in ``archive`` mode, files only)."""
        blocks = self.blocks(symbol, interval, start_ms, end_ms, 1 << 62)
        parts: list[pa.Table] = []
        cursor = start_ms
        for block in blocks:
            if cursor < block.lo and not self.blocks_only:
                parts.append(self.rest.get_klines_range(symbol, interval, cursor, block.lo, as_arrow=True))
            parts.append(self.get_block(symbol, interval, block).table)
            cursor = block.hi
        if cursor < end_ms and not self.blocks_only:
            parts.append(self.rest.get_klines_range(symbol, interval, cursor, end_ms, as_arrow=True))
        table = EMPTY_TABLE
        for part in parts:
            table = _merge(table, part)
        return table if as_arrow else table_to_frame(table)


def choose_blocks(
    grid: Interval,
    files: Sequence[ArchiveFile],
    lo: int,
    hi: int,
    max_block_candles: int,
    min_candles: int = 1,
    skip: frozenset[str] = frozenset(),
) -> list[Block]:
    """Which files serve ``[lo, hi)`` (pure): per month, its monthly file when the month holds
    at most ``max_block_candles`` slots, else (or without one) its daily files; each clipped to
    ``[lo, hi)`` and kept only if it serves at least ``min_candles`` slots. Sorted, disjoint."""
    monthly = {f.period: f for f in files if not f.daily}
    daily: dict[str, list[ArchiveFile]] = {}
    for f in files:
        if f.daily:
            daily.setdefault(f.period[:7], []).append(f)
    chosen: list[ArchiveFile] = []
    months = sorted({f.period[:7] for f in files})
    for month in months:
        m = monthly.get(month)
        if m is not None and m.hi > lo and m.lo < hi and grid.count(m.lo, m.hi) <= max_block_candles:
            chosen.append(m)
        else:
            chosen.extend(d for d in daily.get(month, []) if d.hi > lo and d.lo < hi)
    out = []
    for f in sorted(chosen):
        a, b = max(lo, f.lo), min(hi, f.hi)
        if f.key in skip or a >= b or grid.count(a, b) < max(1, min_candles):
            continue
        out.append(Block(grid.ceil(a), grid.ceil(b), f.period, f.key))
    return [b for b in out if b.lo < b.hi]


def _daily_months(
    grid: Interval, lo: int, hi: int, monthly: Sequence[ArchiveFile], max_block_candles: int
) -> list[str]:
    """The months of ``[lo, hi)`` whose daily files may serve: those without a monthly file
    (from the first monthly file on, and always the last two, not published yet), and those too
    big to write whole."""
    if grid.name not in DAILY_INTERVALS or lo >= hi:
        return []
    month = Interval("1M")
    have = {f.period for f in monthly}
    first = min((f.lo for f in monthly), default=None)
    last_two = {month.floor(hi - 1), month.floor(month.floor(hi - 1) - 1)}
    out = []
    t = month.floor(lo)
    while t < hi:
        name = iso(t)[:7]
        too_big = grid.count(t, month.next_open(t)) > max_block_candles
        if too_big or (name not in have and ((first is not None and t >= first) or t in last_two)):
            out.append(name)
        t = month.next_open(t)
    return out


def _merge(a: pa.Table, b: pa.Table) -> pa.Table:
    """Two sorted candle tables as one, sorted, one candle per open time (``b`` wins)."""
    if a.num_rows == 0:
        return b
    if b.num_rows == 0:
        return a
    import polars as pl

    frame = pl.from_arrow(pa.concat_tables([a, b]))
    assert isinstance(frame, pl.DataFrame)
    return frame.unique("open_time", keep="last").sort("open_time").to_arrow().cast(a.schema)
