"""Tests of the fake exchange's bulk archive (data.binance.vision), over real HTTP (httpx)."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cryptolake.schema import DAY_MS, HOUR_MS, Interval
from cryptolake.testing import ARCHIVE_FAULT_KINDS, FakeExchange, FakeStats, FakeSymbol, Fault
from cryptolake.testing.binance_archive import CSV_HEADER, OFF_GRID_SHIFT_MS
from cryptolake.timeutils import to_ms

NOW = to_ms("2025-03-10T12:00:00Z")
NS = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
CHECKSUM_LINE = re.compile(r"^([0-9a-f]{64})  (\S+\.zip)\n$")
NO_SUCH_KEY = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code>'
    "<Message>The specified key does not exist.</Message><Key>{}</Key></Error>"
)


# -- helpers -----------------------------------------------------------------------------------


def piv(interval: str) -> str:
    return "1mo" if interval == "1M" else interval


def url(symbol: str, interval: str, period: str) -> str:
    """The archive path of a monthly (``YYYY-MM``) or daily (``YYYY-MM-DD``) file."""
    kind = "monthly" if len(period) == 7 else "daily"
    iv = piv(interval)
    return f"/data/spot/{kind}/klines/{symbol}/{iv}/{symbol}-{iv}-{period}.zip"


def period_bounds(period: str) -> tuple[int, int]:
    if len(period) == 7:
        start = to_ms(f"{period}-01T00:00:00Z")
        return start, Interval("1M").next_open(start)
    start = to_ms(f"{period}T00:00:00Z")
    return start, start + DAY_MS


def csv_text(body: bytes, zip_name: str) -> str:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.namelist() == [zip_name[: -len(".zip")] + ".csv"]
        info = zf.infolist()[0]
        assert info.compress_type == zipfile.ZIP_DEFLATED
        return zf.read(info).decode()


def csv_rows(body: bytes, zip_name: str) -> list[list[str]]:
    return [line.split(",") for line in csv_text(body, zip_name).splitlines()]


def as_rest(fields: list[str], micro: bool) -> list[Any]:
    """A CSV row as the REST API's decoded array (times back to ms)."""
    assert len(fields) == 12
    open_t, close_t = int(fields[0]), int(fields[6])
    if micro:
        assert fields[0].endswith("000") and fields[6].endswith("999")
        open_t, close_t = open_t // 1000, close_t // 1000
    return [open_t, *fields[1:6], close_t, fields[7], int(fields[8]), fields[9], fields[10], fields[11]]


def fetch_rows(c: httpx.Client, symbol: str, interval: str, period: str) -> list[list[Any]]:
    r = c.get(url(symbol, interval, period))
    assert r.status_code == 200, r.text
    micro = period_bounds(period)[0] >= to_ms("2025-01-01")
    return [as_rest(f, micro) for f in csv_rows(r.content, url(symbol, interval, period).rsplit("/", 1)[1])]


def listing(c: httpx.Client, **params: Any) -> ET.Element:
    r = c.get("/", params={k.replace("_", "-"): v for k, v in params.items()})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/xml"
    assert r.text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns=')
    return ET.fromstring(r.content)


def keys(root: ET.Element) -> list[str]:
    return [e.text or "" for e in root.findall("s3:Contents/s3:Key", NS)]


def common(root: ET.Element) -> list[str]:
    return [e.text or "" for e in root.findall("s3:CommonPrefixes/s3:Prefix", NS)]


def field(root: ET.Element, name: str) -> str | None:
    e = root.find(f"s3:{name}", NS)
    return None if e is None else (e.text or "")


def contents(root: ET.Element) -> dict[str, dict[str, str]]:
    out = {}
    for e in root.findall("s3:Contents", NS):
        out[e.findtext("s3:Key", "", NS)] = {
            child.tag.split("}")[1]: child.text or "" for child in e if child.tag.split("}")[1] != "Key"
        }
    return out


def everything(c: httpx.Client, **params: Any) -> tuple[list[str], list[str], int]:
    """Page through a listing by NextMarker: (keys, common prefixes, pages)."""
    all_keys: list[str] = []
    all_prefixes: list[str] = []
    marker, pages = "", 0
    while True:
        root = listing(c, marker=marker, **params)
        pages += 1
        all_keys += keys(root)
        all_prefixes += common(root)
        if field(root, "IsTruncated") == "false":
            assert field(root, "NextMarker") is None
            return all_keys, all_prefixes, pages
        next_marker = field(root, "NextMarker")
        assert next_marker is not None and next_marker == max(keys(root) + common(root))
        marker = next_marker


@pytest.fixture
def fx() -> Iterator[FakeExchange]:
    with FakeExchange(now=NOW) as exchange:
        yield exchange


@pytest.fixture
def c(fx: FakeExchange) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fx.base_url, timeout=30) as client:
        yield client


# -- paths, contents, units -------------------------------------------------------------------


def test_paths_monthly_daily_and_1mo(c: httpx.Client) -> None:
    r = c.get(url("BTCUSDT", "1h", "2025-01"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert len(csv_rows(r.content, "BTCUSDT-1h-2025-01.zip")) == 31 * 24
    r = c.get(url("BTCUSDT", "1h", "2025-01-15"))
    assert len(csv_rows(r.content, "BTCUSDT-1h-2025-01-15.zip")) == 24
    r = c.get("/data/spot/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-2024-12.zip")
    assert len(csv_rows(r.content, "BTCUSDT-1mo-2024-12.zip")) == 1
    for interval in ("3d", "1w", "1M"):  # monthly only
        assert c.get(url("BTCUSDT", interval, "2024-12")).status_code == 200
        assert c.get(url("BTCUSDT", interval, "2024-12-02")).status_code == 404
    missing = [
        "/data/spot/monthly/klines/BTCUSDT/1M/BTCUSDT-1M-2024-12.zip",  # 1M is written 1mo
        "/data/spot/monthly/klines/NOPEUSDT/1h/NOPEUSDT-1h-2024-12.zip",
        "/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2025-02-30.zip",
        "/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2025-02.zip",  # a monthly name in daily/
        "/data/spot/monthly/klines/BTCUSDT/1h/ETHUSDT-1h-2024-12.zip",
        "/data/spot/monthly/klines/BTCUSDT/1h/",
        "/data/futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-12.zip",
    ]
    for path in missing:
        r = c.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/xml"
        assert r.text == NO_SUCH_KEY.format(path[1:])


@pytest.mark.parametrize(
    ("symbol", "interval", "period"),
    [
        ("BTCUSDT", "1h", "2024-12"),
        ("BTCUSDT", "1h", "2025-01"),
        ("ETHUSDT", "15m", "2025-02-03"),
        ("BTCUSDT", "1d", "2024-11"),
        ("SOLUSDT", "1w", "2025-01"),
        ("BTCUSDT", "1M", "2024-12"),
        ("BTCUSDT", "3d", "2025-01"),
        ("XRPUSDT", "1m", "2024-12-31"),
        ("BTCUSDT", "1h", "2024-03-12"),  # the default outage (04:00-09:00) is absent, as on REST
        ("LUNAUSDT", "4h", "2022-05"),  # delisted 2022-05-13
    ],
)
def test_rows_equal_the_rest_candles(
    fx: FakeExchange, c: httpx.Client, symbol: str, interval: str, period: str
) -> None:
    start, end = period_bounds(period)
    rows = fetch_rows(c, symbol, interval, period)
    assert rows and rows == fx.klines(symbol, interval, start, end)
    assert rows == fx.archive_klines(symbol, interval, period)
    if period == "2024-03-12":
        assert len(rows) == 24 - 5
    if symbol == "LUNAUSDT":
        assert rows[-1][0] < to_ms("2022-05-13")


def test_rows_equal_the_rest_answer_over_http(c: httpx.Client) -> None:
    start, end = period_bounds("2025-01")
    rest = c.get(
        "/api/v3/klines",
        params={"symbol": "BTCUSDT", "interval": "1h", "startTime": start, "endTime": end - 1, "limit": 1000},
    ).json()
    assert fetch_rows(c, "BTCUSDT", "1h", "2025-01") == rest


def test_microseconds_from_2025_milliseconds_before(c: httpx.Client) -> None:
    before = csv_rows(c.get(url("BTCUSDT", "1h", "2024-12-31")).content, "BTCUSDT-1h-2024-12-31.zip")
    after = csv_rows(c.get(url("BTCUSDT", "1h", "2025-01-01")).content, "BTCUSDT-1h-2025-01-01.zip")
    assert before[0][0] == str(to_ms("2024-12-31")) and before[0][6] == str(to_ms("2024-12-31") + HOUR_MS - 1)
    assert after[0][0] == str(to_ms("2025-01-01") * 1000)
    assert after[0][6] == str((to_ms("2025-01-01") + HOUR_MS) * 1000 - 1)
    assert all(row[6].endswith("999999") and len(row[0]) == 16 for row in after)
    assert all(len(row[0]) == 13 for row in before)
    monthly = csv_rows(c.get(url("BTCUSDT", "1d", "2024-12")).content, "BTCUSDT-1d-2024-12.zip")
    assert all(len(row[0]) == 13 for row in monthly)
    monthly = csv_rows(c.get(url("BTCUSDT", "1d", "2025-01")).content, "BTCUSDT-1d-2025-01.zip")
    assert all(len(row[0]) == 16 for row in monthly)


def test_checksum_matches_and_bytes_are_deterministic(c: httpx.Client) -> None:
    path = url("BTCUSDT", "1h", "2025-02")
    body = c.get(path).content
    r = c.get(path + ".CHECKSUM")
    assert r.status_code == 200
    match = CHECKSUM_LINE.match(r.text)
    assert match and match[1] == hashlib.sha256(body).hexdigest() and match[2] == "BTCUSDT-1h-2025-02.zip"
    with FakeExchange(now=NOW + 40 * DAY_MS) as other, httpx.Client(base_url=other.base_url) as c2:
        assert c2.get(path).content == body  # same bytes in another exchange (and later)
        assert c2.get(path + ".CHECKSUM").text == r.text


def test_a_file_holds_candles_closed_at_publication() -> None:
    """The 1w candle opening Monday 2024-12-30 closes 2025-01-05: not in December's file
    published 2025-01-04, in the one published on 2025-01-06."""
    start, end = period_bounds("2024-12")
    for delay_days, count in ((3, 4), (6, 5)):
        with (
            FakeExchange(now=NOW, archive_monthly_delay_s=delay_days * 86400) as fx,
            httpx.Client(base_url=fx.base_url) as c,
        ):
            rows = fetch_rows(c, "BTCUSDT", "1w", "2024-12")
            assert rows == fx.klines("BTCUSDT", "1w", start, end)[:count]
            assert len(rows) == count


def test_files_exist_only_where_the_symbol_has_candles() -> None:
    symbols = [
        FakeSymbol("AAAUSDT", "AAA", "USDT", to_ms("2024-12-15T10:30Z"), delisted_ms=to_ms("2025-02-10")),
        FakeSymbol("BBBUSDT", "BBB", "USDT", to_ms("2025-04-01")),  # not listed yet
    ]
    with FakeExchange(now=NOW, symbols=symbols) as fx, httpx.Client(base_url=fx.base_url) as c:
        assert c.get(url("AAAUSDT", "1h", "2024-11")).status_code == 404
        first = fetch_rows(c, "AAAUSDT", "1h", "2024-12")
        assert first[0][0] == to_ms("2024-12-15T10:00Z")
        assert first == fx.klines("AAAUSDT", "1h", *period_bounds("2024-12"))
        last = fetch_rows(c, "AAAUSDT", "1h", "2025-02")
        assert len(last) == 9 * 24 and last[-1][0] == to_ms("2025-02-09T23:00Z")
        assert c.get(url("AAAUSDT", "1h", "2025-02-09")).status_code == 200
        assert c.get(url("AAAUSDT", "1h", "2025-02-10")).status_code == 404
        assert c.get(url("BBBUSDT", "1d", "2025-02")).status_code == 404
        root = listing(c, prefix="data/spot/monthly/klines/AAAUSDT/1h/")
        assert keys(root) == [
            f"data/spot/monthly/klines/AAAUSDT/1h/AAAUSDT-1h-{p}.zip{ext}"
            for p in ("2024-12", "2025-01", "2025-02")
            for ext in ("", ".CHECKSUM")
        ]
        root = listing(c, prefix="data/spot/daily/klines/", delimiter="/")
        assert common(root) == ["data/spot/daily/klines/AAAUSDT/"]


def test_non_ascii_symbol() -> None:
    with FakeExchange(now=to_ms("2025-11-10")) as fx, httpx.Client(base_url=fx.base_url) as c:
        rows = fetch_rows(c, "币安人生USDT", "1d", "2025-10")
        assert rows == fx.klines("币安人生USDT", "1d", *period_bounds("2025-10"))
        root = listing(c, prefix="data/spot/monthly/klines/币安人生USDT/1d/")
        assert keys(root)[0] == "data/spot/monthly/klines/币安人生USDT/1d/币安人生USDT-1d-2025-10.zip"


# -- publication ------------------------------------------------------------------------------


def test_daily_and_monthly_publication_delays() -> None:
    with FakeExchange(now=to_ms("2025-02-04T07:59:59.999Z")) as fx, httpx.Client(base_url=fx.base_url) as c:
        daily = url("BTCUSDT", "1h", "2025-02-03")
        day_prefix = "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2025-02-0"
        assert c.get(daily).status_code == 404 and c.get(daily + ".CHECKSUM").status_code == 404
        assert keys(listing(c, prefix=day_prefix))[-1].startswith(day_prefix + "2.zip")
        fx.advance(1)
        r = c.get(daily)
        assert r.status_code == 200 and r.headers["last-modified"] == "Tue, 04 Feb 2025 08:00:00 GMT"
        assert contents(listing(c, prefix=day_prefix + "3"))[daily[1:]]["LastModified"] == (
            "2025-02-04T08:00:00.000Z"
        )
        monthly = url("BTCUSDT", "1h", "2025-01")  # published 3 days after the month
        fx.set_now(to_ms("2025-02-03T23:59:59.999Z"))
        assert c.get(monthly).status_code == 404
        assert "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2025-01.zip" not in keys(
            listing(c, prefix="data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2025")
        )
        fx.set_now(to_ms("2025-02-04T00:00:00Z"))
        assert c.get(monthly).status_code == 200
        entry = contents(listing(c, prefix=monthly[1:]))[monthly[1:]]
        assert entry["LastModified"] == "2025-02-04T00:00:00.000Z"


def test_publication_delay_knobs() -> None:
    with (
        FakeExchange(
            now=to_ms("2025-02-01T01:00Z"), archive_daily_delay_s=3600, archive_monthly_delay_s=0
        ) as fx,
        httpx.Client(base_url=fx.base_url) as c,
    ):
        assert c.get(url("BTCUSDT", "1h", "2025-01-31")).status_code == 200
        assert c.get(url("BTCUSDT", "1h", "2025-01")).status_code == 200
        fx.set_archive_delays(daily_s=7200)
        assert c.get(url("BTCUSDT", "1h", "2025-01-31")).status_code == 404


# -- listing ----------------------------------------------------------------------------------


def test_listing_prefix_and_delimiter_rollup(fx: FakeExchange, c: httpx.Client) -> None:
    root = listing(c, prefix="", delimiter="/")
    assert common(root) == ["data/"] and keys(root) == []
    assert field(root, "Name") == "data.binance.vision" and field(root, "Delimiter") == "/"
    assert field(root, "Prefix") == "" and field(root, "Marker") == "" and field(root, "MaxKeys") == "1000"
    assert common(listing(c, prefix="data/spot/", delimiter="/")) == [
        "data/spot/daily/",
        "data/spot/monthly/",
    ]
    listed = sorted(s.symbol for s in fx.symbols if s.listed_ms < to_ms("2025-02-01"))
    assert common(listing(c, prefix="data/spot/monthly/klines/", delimiter="/")) == [
        f"data/spot/monthly/klines/{name}/" for name in listed
    ]
    monthly = common(listing(c, prefix="data/spot/monthly/klines/BTCUSDT/", delimiter="/"))
    assert monthly == sorted(f"data/spot/monthly/klines/BTCUSDT/{i}/" for i in (*DAILY, "3d", "1w", "1mo"))
    daily = common(listing(c, prefix="data/spot/daily/klines/BTCUSDT/", delimiter="/"))
    assert daily == sorted(f"data/spot/daily/klines/BTCUSDT/{i}/" for i in DAILY)
    # without a delimiter: every key, .zip then .zip.CHECKSUM, in order
    root = listing(c, prefix="data/spot/monthly/klines/BTCUSDT/1d/")
    assert field(root, "Delimiter") is None and field(root, "IsTruncated") == "false"
    months = (2025 - 2017) * 12 + (2 - 8) + 1  # 2017-08 .. 2025-02
    got = keys(root)
    assert len(got) == 2 * months and got == sorted(got)
    assert got[:2] == [
        "data/spot/monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2017-08.zip",
        "data/spot/monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2017-08.zip.CHECKSUM",
    ]
    assert got[-1] == "data/spot/monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2025-02.zip.CHECKSUM"
    # a prefix ending mid-name, and only published files (day 9 is out at 08:00 on the 10th)
    feb = keys(listing(c, prefix="data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-02-"))
    assert len(feb) == 2 * 28
    march = keys(listing(c, prefix="data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-03-"))
    assert march[-1] == "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-03-09.zip.CHECKSUM"
    assert len(march) == 2 * 9
    assert keys(listing(c, prefix="data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-03-10")) == []
    # a mid-name prefix with a delimiter that does not occur: plain keys
    root = listing(c, prefix="data/spot/monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2024-1", delimiter="/")
    assert len(keys(root)) == 6 and common(root) == []


def test_listing_sizes_and_etags(c: httpx.Client) -> None:
    prefix = "data/spot/monthly/klines/ETHUSDT/1d/ETHUSDT-1d-2024-0"
    entries = contents(listing(c, prefix=prefix))
    assert len(entries) == 18
    for key, entry in list(entries.items())[:4]:
        r = c.get("/" + key)
        assert entry["Size"] == str(len(r.content)) == r.headers["content-length"]
        assert entry["ETag"] == r.headers["etag"] == f'"{hashlib.md5(r.content).hexdigest()}"'
        assert entry["StorageClass"] == "STANDARD"
        assert r.headers["last-modified"].endswith("GMT")
    # large files (here daily 1m, 1440 candles) are listed without being built: estimated Size
    # and a multipart-style ETag, the same as GET sends; the CHECKSUM's size is exact
    day = "data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2025-02-03.zip"
    entries = contents(listing(c, prefix=day))
    assert re.fullmatch(r'"[0-9a-f]{32}-1"', entries[day]["ETag"])
    assert int(entries[day]["Size"]) > 50_000
    r = c.get("/" + day)
    assert r.headers["etag"] == entries[day]["ETag"]
    assert entries[day + ".CHECKSUM"]["Size"] == str(len(c.get("/" + day + ".CHECKSUM").content))


def test_listing_pages_by_marker() -> None:
    with (
        FakeExchange(now=NOW, archive_max_keys=7) as fx,
        FakeExchange(now=NOW) as whole,
        httpx.Client(base_url=fx.base_url) as c,
        httpx.Client(base_url=whole.base_url) as cw,
    ):
        prefix = "data/spot/monthly/klines/BTCUSDT/1w/"
        expected = keys(listing(cw, prefix=prefix))
        root = listing(c, prefix=prefix)
        assert field(root, "MaxKeys") == "7" and field(root, "IsTruncated") == "true"
        assert field(root, "NextMarker") == keys(root)[-1] and len(keys(root)) == 7
        got, _, pages = everything(c, prefix=prefix)
        assert got == expected and pages == -(-len(expected) // 7)
        # common prefixes page too (NextMarker is the last prefix; the marker skips its keys)
        expected_prefixes = common(listing(cw, prefix="data/spot/daily/klines/", delimiter="/"))
        got, prefixes, pages = everything(c, prefix="data/spot/daily/klines/", delimiter="/")
        assert got == [] and prefixes == expected_prefixes and pages == 2
        # across symbols and intervals without a delimiter
        marker = "data/spot/monthly/klines/LUNAUSDT/1m/LUNAUSDT-1m-2022-05.zip.CHECKSUM"  # its last
        expected = keys(listing(cw, prefix="data/spot/monthly/klines/", marker=marker))
        got = keys(listing(c, prefix="data/spot/monthly/klines/", marker=marker))
        assert (
            got == expected[:7] and got[0] == "data/spot/monthly/klines/LUNAUSDT/1mo/LUNAUSDT-1mo-2020-08.zip"
        )
        # max-keys: below the cap it is obeyed, above it capped
        assert len(keys(listing(cw, prefix=prefix, max_keys=3))) == 3
        assert field(listing(cw, prefix=prefix, max_keys=5000), "MaxKeys") == "1000"
        assert cw.get("/", params={"max-keys": "x"}).status_code == 400


def test_listing_v2_continuation(fx: FakeExchange) -> None:
    with (
        FakeExchange(now=NOW, archive_max_keys=10) as small,
        httpx.Client(base_url=small.base_url) as c,
        httpx.Client(base_url=fx.base_url) as cw,
    ):
        prefix = "data/spot/monthly/klines/ETHUSDT/1mo/"
        expected = keys(listing(cw, prefix=prefix))
        got: list[str] = []
        params: dict[str, str] = {"list-type": "2", "prefix": prefix}
        while True:
            root = ET.fromstring(c.get("/", params=params).content)
            got += keys(root)
            assert field(root, "KeyCount") == str(len(keys(root)))
            if field(root, "IsTruncated") == "false":
                break
            params["continuation-token"] = field(root, "NextContinuationToken") or ""
        assert got == expected and len(got) > 10


# -- faults -----------------------------------------------------------------------------------

FILE = ("BTCUSDT", "1h", "2025-02-03")
PATH = url(*FILE)
NAME = PATH.rsplit("/", 1)[1]


def test_missing(fx: FakeExchange, c: httpx.Client) -> None:
    fx.archive_fault("missing", *FILE)
    for _ in range(2):
        assert c.get(PATH).status_code == 404 and c.get(PATH + ".CHECKSUM").status_code == 404
    assert PATH[1:] not in keys(listing(c, prefix=PATH[1:-6]))
    fx.archive_clear_faults()
    assert c.get(PATH).status_code == 200
    fx.archive_fault("missing", *FILE, times=1)
    assert c.get(PATH + ".CHECKSUM").status_code == 404  # a CHECKSUM GET does not count
    assert c.head(PATH).status_code == 404  # nor does a HEAD
    assert c.get(PATH).status_code == 404
    assert c.get(PATH).status_code == 200 and c.get(PATH + ".CHECKSUM").status_code == 200
    assert PATH[1:] in keys(listing(c, prefix=PATH[1:-6]))


def test_corrupt_zip(fx: FakeExchange, c: httpx.Client) -> None:
    good = c.get(PATH).content
    fx.archive_fault("corrupt_zip", *FILE, times=1)
    checksum = c.get(PATH + ".CHECKSUM").text
    body = c.get(PATH).content
    assert checksum == f"{hashlib.sha256(body).hexdigest()}  {NAME}\n"  # the check passes...
    assert 0 < len(body) < len(good)
    with pytest.raises(zipfile.BadZipFile):  # ...but the zip cannot be read
        zipfile.ZipFile(io.BytesIO(body))
    assert c.get(PATH + ".CHECKSUM").text == f"{hashlib.sha256(good).hexdigest()}  {NAME}\n"
    assert c.get(PATH).content == good


def test_wrong_checksum(fx: FakeExchange, c: httpx.Client) -> None:
    def pair() -> bool:
        checksum = c.get(PATH + ".CHECKSUM").text
        body = c.get(PATH).content
        return CHECKSUM_LINE.match(checksum)[1] == hashlib.sha256(body).hexdigest()  # type: ignore[index]

    fx.archive_fault("wrong_checksum", *FILE, times=1)
    assert [pair(), pair()] == [False, True]  # the client's retry of both passes
    fx.archive_fault("wrong_checksum", *FILE, times=2)
    assert [pair(), pair(), pair()] == [False, False, True]
    fx.archive_fault("wrong_checksum", *FILE)
    assert [pair(), pair(), pair()] == [False, False, False]
    fx.archive_clear_faults()
    assert pair()


def test_late() -> None:
    with FakeExchange(now=to_ms("2025-02-04T08:00Z")) as fx, httpx.Client(base_url=fx.base_url) as c:
        fx.archive_fault("late", *FILE, delay_s=3600)
        assert c.get(PATH).status_code == 404
        assert PATH[1:] not in keys(listing(c, prefix=PATH[1:-6]))
        fx.advance(HOUR_MS)
        r = c.get(PATH)
        assert r.status_code == 200 and r.headers["last-modified"] == "Tue, 04 Feb 2025 09:00:00 GMT"
        # a monthly file not out yet 10 days into the month
        fx.set_now(to_ms("2025-02-10T12:00Z"))
        fx.archive_fault("late", "BTCUSDT", "1d", "2025-01", delay_s=10 * 86400)
        assert c.get(url("BTCUSDT", "1d", "2025-01")).status_code == 404
        fx.set_now(to_ms("2025-02-14T00:00Z"))
        assert c.get(url("BTCUSDT", "1d", "2025-01")).status_code == 200


def test_header(fx: FakeExchange, c: httpx.Client) -> None:
    fx.archive_fault("header", *FILE)
    r = c.get(PATH)
    lines = csv_text(r.content, NAME).splitlines()
    assert lines[0] == CSV_HEADER
    assert c.get(PATH + ".CHECKSUM").text.startswith(hashlib.sha256(r.content).hexdigest())
    start, end = period_bounds(FILE[2])
    assert [as_rest(line.split(","), True) for line in lines[1:]] == fx.klines("BTCUSDT", "1h", start, end)
    with (
        FakeExchange(now=NOW, archive_header_from_ms=to_ms("2025-02-01")) as fx2,
        httpx.Client(base_url=fx2.base_url) as c2,
    ):
        assert csv_text(c2.get(PATH).content, NAME).startswith(CSV_HEADER + "\n")
        body = c2.get(url("BTCUSDT", "1h", "2025-01-31")).content
        assert csv_text(body, "BTCUSDT-1h-2025-01-31.zip").startswith(str(to_ms("2025-01-31") * 1000))


def test_empty(fx: FakeExchange, c: httpx.Client) -> None:
    fx.archive_fault("empty", *FILE)
    r = c.get(PATH)
    assert r.status_code == 200 and csv_text(r.content, NAME) == ""
    assert c.get(PATH + ".CHECKSUM").text.startswith(hashlib.sha256(r.content).hexdigest())
    assert PATH[1:] in keys(listing(c, prefix=PATH[1:-6]))


def test_off_grid(fx: FakeExchange, c: httpx.Client) -> None:
    start, end = period_bounds("2024-12")
    rest = fx.klines("BTCUSDT", "1h", start, end)
    lo, hi = to_ms("2024-12-10"), to_ms("2024-12-11")
    fx.archive_fault("off_grid", "BTCUSDT", "1h", "2024-12", start_ms=lo, end_ms=hi)
    rows = fetch_rows(c, "BTCUSDT", "1h", "2024-12")
    assert len(rows) == len(rest)
    shifted = 0
    for got, want in zip(rows, rest, strict=True):
        if lo <= want[0] < hi:
            shifted += 1
            assert got == [want[0] + OFF_GRID_SHIFT_MS, *want[1:6], want[6] + OFF_GRID_SHIFT_MS, *want[7:]]
        else:
            assert got == want
    assert shifted == 24
    assert fx.klines("BTCUSDT", "1h", start, end) == rest  # REST keeps them on the grid
    # the whole period by default; in µs files too
    fx.archive_fault("off_grid", *FILE)
    rows = fetch_rows(c, *FILE)
    assert [r[0] for r in rows] == [t + OFF_GRID_SHIFT_MS for t in range(*period_bounds(FILE[2]), HOUR_MS)]


def test_reupload(fx: FakeExchange, c: httpx.Client) -> None:
    first = c.get(PATH)
    original = fetch_rows(c, *FILE)
    fx.advance(HOUR_MS)
    fx.archive_fault("reupload", *FILE)
    second = c.get(PATH)
    assert second.content != first.content
    assert second.headers["last-modified"] == "Mon, 10 Mar 2025 13:00:00 GMT"
    assert second.headers["etag"] != first.headers["etag"]
    assert c.get(PATH + ".CHECKSUM").text.startswith(hashlib.sha256(second.content).hexdigest())
    assert contents(listing(c, prefix=PATH[1:]))[PATH[1:]]["LastModified"] == "2025-03-10T13:00:00.000Z"

    def changes() -> list[tuple[list[Any], list[Any]]]:
        return [(a, b) for a, b in zip(original, fetch_rows(c, *FILE), strict=True) if a != b]

    diff = changes()
    assert len(diff) == 3
    for old, new in diff:
        assert [i for i in range(12) if old[i] != new[i]] in ([4], [2, 4])
        assert float(new[4]) == pytest.approx(float(old[4]) * 1.001, rel=1e-6)
        assert new[2] == max(old[2], new[4], key=float)
    fx.archive_fault("reupload", *FILE, changed=5)  # a new version again
    third = c.get(PATH).content
    assert third not in (first.content, second.content) and len(changes()) == 5
    assert fx.klines("BTCUSDT", "1h", *period_bounds(FILE[2])) == original  # REST unchanged
    fx.archive_clear_faults()
    assert c.get(PATH).content == first.content


def test_fault_validation(fx: FakeExchange) -> None:
    assert set(ARCHIVE_FAULT_KINDS) == {
        "missing",
        "corrupt_zip",
        "wrong_checksum",
        "late",
        "header",
        "empty",
        "off_grid",
        "reupload",
    }
    with pytest.raises(ValueError, match="unknown archive fault"):
        fx.archive_fault("bogus", *FILE)
    with pytest.raises(ValueError, match="times"):
        fx.archive_fault("header", *FILE, times=1)
    with pytest.raises(ValueError, match="times"):
        fx.archive_fault("missing", *FILE, times=0)
    with pytest.raises(ValueError, match="delay_s"):
        fx.archive_fault("late", *FILE)
    with pytest.raises(TypeError):
        fx.archive_fault("missing", *FILE, delay_s=3)
    with pytest.raises(KeyError):
        fx.archive_fault("missing", "NOPE", "1h", "2025-01")
    with pytest.raises(ValueError, match="daily"):
        fx.archive_fault("missing", "BTCUSDT", "1w", "2025-01-06")
    with pytest.raises(ValueError, match="period"):
        fx.archive_fault("missing", "BTCUSDT", "1h", "2025/01")


def test_faults_over_the_control_api(fx: FakeExchange, c: httpx.Client) -> None:
    base = {"symbol": FILE[0], "interval": FILE[1], "period": FILE[2]}
    r = c.post("/fake/archive/fault", params={"kind": "missing", "times": "1", **base})
    assert r.status_code == 200 and r.json()["ok"] is True
    assert [c.get(PATH).status_code, c.get(PATH).status_code] == [404, 200]
    assert (
        c.post("/fake/archive/fault", params={"kind": "late", "delay_s": str(40 * 86400), **base}).status_code
        == 200
    )
    assert c.get(PATH).status_code == 404
    assert c.post("/fake/archive/clear").status_code == 200
    assert c.get(PATH).status_code == 200
    assert c.post("/fake/archive/fault", params={"kind": "bogus", **base}).status_code == 400
    assert c.post("/fake/archive/fault", params={"kind": "missing"}).status_code == 400
    assert c.post("/fake/archive/nothing").status_code == 404
    assert c.get(url("BTCUSDT", "1h", "2025-03-09")).status_code == 200  # out at 08:00 on the 10th
    assert c.post("/fake/archive/delays", params={"daily_s": str(13 * 3600)}).status_code == 200
    assert c.get(url("BTCUSDT", "1h", "2025-03-09")).status_code == 404
    assert c.post("/fake/archive/delays", params={"daily_s": str(8 * 3600)}).status_code == 200
    r = c.post(
        "/fake/archive/prebuild",
        params={
            "symbols": "BTCUSDT,ETHUSDT",
            "interval": "1d",
            "start_ms": to_ms("2025-01-01"),
            "end_ms": NOW,
        },
    )
    assert r.status_code == 200 and r.json()["files"] == 2 * (2 + 31 + 28 + 9)
    fx.archive_fault("missing", *FILE)
    fx.reset()  # clears archive faults too
    assert c.get(PATH).status_code == 200


# -- stats, weight, admission, HTTP -----------------------------------------------------------


def test_stats_count_archive_requests_without_weight(fx: FakeExchange, c: httpx.Client) -> None:
    before = c.get("/api/v3/ping")
    assert before.headers["x-mbx-used-weight-1m"] == "1"
    answers = [
        c.get("/", params={"prefix": "data/spot/monthly/klines/", "delimiter": "/"}),
        c.get(url("BTCUSDT", "1d", "2025-01")),
        c.get(PATH),
        c.get(PATH + ".CHECKSUM"),
        c.get(url("BTCUSDT", "1d", "2030-01")),
        c.get(PATH.replace("BTCUSDT", "NOPEUSDT")),
    ]
    sent = sum(len(r.content) for r in answers)
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 404, 404]
    assert all("x-mbx-used-weight-1m" not in r.headers for r in answers)
    assert c.head(PATH).status_code == 200  # a HEAD sends no body bytes
    after = c.get("/api/v3/ping")
    assert after.headers["x-mbx-used-weight-1m"] == "2"
    stats = fx.stats()
    assert stats.archive_requests == 7 and stats.archive_bytes == sent
    assert stats.archive_by_kind == {"listing": 1, "monthly": 1, "daily": 2, "checksum": 1, "not_found": 2}
    assert stats.by_path == {
        "/api/v3/ping": 2,
        "/ (listing)": 1,
        "/data/spot/monthly/klines": 2,
        "/data/spot/daily/klines": 4,
    }
    assert stats.requests == 9 and stats.by_status == {200: 7, 404: 2}
    assert stats.max_window_weight == 2
    archive_log = [r for r in stats.log if not r.path.startswith("/api/")]
    assert [r.path for r in archive_log][1:3] == [url("BTCUSDT", "1d", "2025-01"), PATH]
    assert all(r.weight == 0 for r in archive_log)
    assert FakeStats.from_json(stats.to_json(include_log=True)) == stats
    over_http = FakeStats.from_json(c.get("/fake/stats").json())
    assert over_http.archive_by_kind == stats.archive_by_kind and over_http.archive_bytes == sent
    fx.reset()
    assert fx.stats() == FakeStats()


def test_archive_escapes_bans_limits_faults_and_chaos(fx: FakeExchange, c: httpx.Client) -> None:
    fx.set_restricted(True)
    assert c.get("/api/v3/ping").status_code == 451
    assert c.get(PATH).status_code == 200
    fx.set_restricted(False)
    fx.set_chaos(1.0, paths=None)
    assert all(c.get(PATH).status_code == 200 for _ in range(5))
    fx.set_chaos(0)
    fx.inject(Fault.http(500))
    assert c.get(PATH).status_code == 200  # the injected fault waits for an API request
    assert c.get("/api/v3/ping").status_code == 500
    fx.rate_limit_storm(30)
    assert c.get(PATH).status_code == 200
    fx.rate_limit_storm(0)
    fx.inject(Fault.ban(retry_after_s=30))
    assert c.get("/api/v3/ping").status_code == 418
    assert c.get(PATH).status_code == 200 and c.get("/").status_code == 200
    fx.set_weight_limit(1)
    assert all(c.get(PATH + ".CHECKSUM").status_code == 200 for _ in range(3))


def test_latency_applies_to_archive_requests() -> None:
    with FakeExchange(now=NOW, latency_s=0.2) as fx, httpx.Client(base_url=fx.base_url) as c:
        c.get(PATH)  # build it first
        t = time.perf_counter()
        assert c.get(PATH).status_code == 200
        assert time.perf_counter() - t >= 0.2


def test_head_and_methods(c: httpx.Client) -> None:
    body = c.get(PATH).content
    r = c.head(PATH)
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == str(len(body))
    assert c.head(url("BTCUSDT", "1h", "2030-01-01")).status_code == 404
    assert c.post(PATH).status_code == 405
    assert c.get("/api/v3/ping").status_code == 200  # keep-alive still fine after a HEAD


def test_large_file_prebuild_cache_and_concurrency() -> None:
    with FakeExchange(now=NOW) as fx, httpx.Client(base_url=fx.base_url, timeout=60) as c:
        assert (
            fx.prebuild_archive("BTCUSDT", "1m", to_ms("2024-12-01"), to_ms("2025-01-01"), kinds=["monthly"])
            == 1
        )
        assert fx.archive_cache_info()["files"] == 1
        path = url("BTCUSDT", "1m", "2024-12")
        t = time.perf_counter()
        r = c.get(path)
        assert time.perf_counter() - t < 0.2  # served from the cache
        assert len(r.content) > 2_000_000 and r.headers["content-length"] == str(len(r.content))
        assert len(csv_rows(r.content, "BTCUSDT-1m-2024-12.zip")) == 31 * 1440
        results: list[bytes] = []

        def get() -> None:
            with httpx.Client(base_url=fx.base_url, timeout=60) as client:
                results.append(client.get(url("ETHUSDT", "1h", "2025-02")).content)

        threads = [threading.Thread(target=get) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 6 and len(set(results)) == 1
    with (
        FakeExchange(now=NOW, archive_cache_bytes=100_000) as small,
        httpx.Client(base_url=small.base_url) as c,
    ):
        for day in range(1, 10):
            assert c.get(url("BTCUSDT", "5m", f"2025-02-0{day}")).status_code == 200
        info = small.archive_cache_info()
        assert 0 < info["bytes"] <= 100_000 and info["files"] < 9
        with pytest.warns(RuntimeWarning, match="too small"):
            small.prebuild_archive("ETHUSDT", "5m", to_ms("2025-02-01"), to_ms("2025-02-10"), kinds=["daily"])


def test_cli_archive_delay_options() -> None:
    root = Path(__file__).resolve().parents[1]
    command = [
        sys.executable,
        "-m",
        "cryptolake",
        "fake-exchange",
        "--port",
        "0",
        "--frozen",
        "--now",
        "2025-03-01T07:30:00Z",
        "--archive-daily-delay-h",
        "1",
        "--archive-monthly-delay-d",
        "0",
    ]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, line
        with httpx.Client(base_url=found.group(0)) as c:
            assert c.get(url("BTCUSDT", "1h", "2025-02-28")).status_code == 200  # 8 h default: 404
            assert c.get(url("BTCUSDT", "1h", "2025-02")).status_code == 200  # 3 d default: 404
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


DAILY = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
