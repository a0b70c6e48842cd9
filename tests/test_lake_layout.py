"""Lake layout: partition paths, month arithmetic, symbol validation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptolake.errors import CryptolakeError, InvalidSymbolName, LakeError
from cryptolake.lake import layout
from cryptolake.lake.layout import (
    interval_dir,
    klines_glob,
    meta_dir,
    month_bounds,
    month_of,
    partition_dir,
    partition_path,
    validate_symbol,
)
from cryptolake.schema import INTERVALS


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_partition_path_follows_the_contract(tmp_path: Path) -> None:
    path = partition_path(tmp_path, "1h", "BTCUSDT", "2024-01")
    expected = (
        tmp_path
        / "klines"
        / "exchange=binance"
        / "interval=1h"
        / "symbol=BTCUSDT"
        / "month=2024-01"
        / "data.parquet"
    )
    assert path == expected
    assert partition_dir(tmp_path, "1h", "BTCUSDT", "2024-01") == expected.parent


def test_partition_path_accepts_a_string_root() -> None:
    path = partition_path("/lake", "1d", "ETHUSDT", "2023-12")
    assert path.as_posix() == (
        "/lake/klines/exchange=binance/interval=1d/symbol=ETHUSDT/month=2023-12/data.parquet"
    )


def test_monthly_interval_is_stored_as_1mo(tmp_path: Path) -> None:
    assert interval_dir("1M") == "1mo"
    assert interval_dir("1m") == "1m"
    assert "interval=1mo" in partition_path(tmp_path, "1M", "BTCUSDT", "2024-01").parts


def test_interval_dirs_are_distinct_case_insensitively() -> None:
    dirs = [interval_dir(i).lower() for i in INTERVALS]
    assert len(set(dirs)) == len(INTERVALS)


@pytest.mark.parametrize("interval", ["", "1H", "2d", "1mo", "60m"])
def test_unknown_interval_is_refused(interval: str) -> None:
    with pytest.raises(ValueError, match="unknown interval"):
        interval_dir(interval)


@pytest.mark.parametrize("month", ["2024-1", "2024-13", "2024-00", "24-01", "2024/01", "", "2024-01-01"])
def test_malformed_month_is_refused(tmp_path: Path, month: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        partition_path(tmp_path, "1h", "BTCUSDT", month)


def test_glob_and_meta_dir(tmp_path: Path) -> None:
    assert klines_glob(tmp_path) == f"{tmp_path.as_posix()}/klines/**/*.parquet"
    assert meta_dir(tmp_path) == tmp_path / "_meta"
    assert layout.lock_path(tmp_path) == tmp_path / "_meta" / "writer.lock"


@pytest.mark.parametrize(
    ("moment", "month"),
    [
        ((2024, 1, 1), "2024-01"),
        ((2024, 1, 31, 23, 59, 59), "2024-01"),
        ((2024, 2, 1), "2024-02"),
        ((2024, 2, 29, 23), "2024-02"),
        ((2023, 12, 31, 23, 59, 59), "2023-12"),
        ((1970, 1, 1), "1970-01"),
    ],
)
def test_month_of(moment: tuple[int, ...], month: str) -> None:
    assert month_of(_ms(*moment)) == month


def test_month_of_is_utc_at_the_last_millisecond() -> None:
    assert month_of(_ms(2024, 1, 1) - 1) == "2023-12"
    assert month_of(_ms(2024, 1, 1)) == "2024-01"


@pytest.mark.parametrize(
    ("month", "start", "end"),
    [
        ("2024-01", (2024, 1, 1), (2024, 2, 1)),
        ("2024-02", (2024, 2, 1), (2024, 3, 1)),
        ("2023-02", (2023, 2, 1), (2023, 3, 1)),
        ("2023-12", (2023, 12, 1), (2024, 1, 1)),
    ],
)
def test_month_bounds(month: str, start: tuple[int, ...], end: tuple[int, ...]) -> None:
    assert month_bounds(month) == (_ms(*start), _ms(*end))


@settings(deadline=None, max_examples=200)
@given(st.integers(min_value=0, max_value=_ms(2100, 1, 1)))
def test_month_bounds_contain_month_of(t_ms: int) -> None:
    start, end = month_bounds(month_of(t_ms))
    assert start <= t_ms < end
    assert month_of(start) == month_of(end - 1) == month_of(t_ms)
    assert month_of(end) != month_of(t_ms)


@pytest.mark.parametrize(
    "symbol", ["BTCUSDT", "1000SATSUSDT", "币安人生USDT", "ETHBTC", "BTCUSDT_240329", "A", "X" * 40]
)
def test_real_symbols_are_accepted(symbol: str) -> None:
    assert validate_symbol(symbol) is symbol


HOSTILE = [
    "",
    ".",
    "..",
    "../etc",
    "a/b",
    "BTC/USDT",
    "BTC\\USDT",
    "BTC\x00",
    "BTC USDT",
    "BTC\tUSDT",
    "BTC\nUSDT",
    "btcusdt",
    "BTCusdt",
    "symbol=X",
    "BTC=X",
    "BTC:USDT",
    "BTC*",
    "BTC?",
    "BTC%2F",
    "BTC'",
    'BTC"',
    "ＢＴＣ",  # noqa: RUF001 (fullwidth on purpose)
    "\u202eBTC",
    "BTC\u200b",
    "BTC\u3000USDT",
    "-BTC",
    ".BTC",
    "BTC.",
    "BTC..USDT",
    "B" * 41,
]


@pytest.mark.parametrize("symbol", HOSTILE)
def test_hostile_symbols_are_refused(symbol: str) -> None:
    with pytest.raises(InvalidSymbolName) as info:
        validate_symbol(symbol)
    message = str(info.value)
    assert repr(symbol) in message
    assert "uppercase ASCII letter" in message
    assert info.value.symbol == symbol
    assert isinstance(info.value, LakeError)
    assert isinstance(info.value, CryptolakeError)


def test_non_string_symbol_is_refused() -> None:
    with pytest.raises(InvalidSymbolName, match="expected a string"):
        validate_symbol(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("symbol", HOSTILE)
def test_partition_path_refuses_hostile_symbols(tmp_path: Path, symbol: str) -> None:
    with pytest.raises(InvalidSymbolName):
        partition_path(tmp_path, "1h", symbol, "2024-01")


@settings(deadline=None, max_examples=300)
@given(st.text(min_size=1, max_size=45))
def test_accepted_symbols_stay_inside_one_folder(symbol: str) -> None:
    if not layout.is_valid_symbol(symbol):
        return
    root = Path("/lake")
    path = partition_dir(root, "1h", symbol, "2024-01")
    assert path.parent.name == f"symbol={symbol}"
    assert path.parent.parent == root / "klines" / "exchange=binance" / "interval=1h"
    assert "/" not in symbol
    assert "\\" not in symbol
    assert ".." not in symbol
    assert symbol.isprintable()


def test_temp_names() -> None:
    name = layout.temp_name(1234, "ab12")
    assert name == ".data.parquet.1234.ab12.tmp"
    assert layout.is_temp_name(name)
    assert not layout.is_temp_name("data.parquet")
    assert not layout.is_temp_name("notes.tmp")
    assert not layout.is_temp_name(".data.parquet.x.ab12.tmp")
