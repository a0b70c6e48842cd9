"""The public API: the original design's names are importable from the package root."""

from __future__ import annotations

import inspect
from pathlib import Path

import cryptolake


def test_all_is_sorted_and_complete() -> None:
    names = [n for n in cryptolake.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in cryptolake.__all__:
        assert hasattr(cryptolake, name)


def test_original_design_signatures() -> None:
    client = inspect.signature(cryptolake.BinanceClient)
    assert list(client.parameters)[:4] == ["api_key", "api_secret", "max_retries", "retry_delay"]
    assert client.parameters["max_retries"].default == 3
    assert client.parameters["retry_delay"].default == 1.0
    for method in ("test_connectivity", "get_top_by_market_cap", "get_hourly_prices", "get_klines"):
        assert callable(getattr(cryptolake.BinanceClient, method))
    collector = inspect.signature(cryptolake.CryptoCollector)
    assert list(collector.parameters)[:3] == ["binance_client", "top_n_cryptos", "batch_size_hours"]
    assert collector.parameters["top_n_cryptos"].default == 50
    assert collector.parameters["batch_size_hours"].default == 720
    for method in ("collect_backward", "collect_forward", "get_collection_status"):
        assert callable(getattr(cryptolake.CryptoCollector, method))
    backward = inspect.signature(cryptolake.CryptoCollector.collect_backward)
    assert list(backward.parameters)[1:] == ["start_date", "crypto_symbols"]


def test_every_public_name_is_in_all_and_every_exception_is_public() -> None:
    import cryptolake.errors

    public = {name for name in dir(cryptolake) if not name.startswith("_")}
    assert public == set(cryptolake.__all__) - {"__version__"}
    exceptions = {
        name
        for name, value in vars(cryptolake.errors).items()
        if isinstance(value, type) and issubclass(value, BaseException) and not name.startswith("_")
    }
    assert exceptions <= set(cryptolake.__all__)
    for name in exceptions:
        assert getattr(cryptolake, name) is getattr(cryptolake.errors, name)


def test_every_exception_class_of_the_package_lives_in_errors() -> None:
    import importlib
    import pkgutil

    stray = []
    for info in pkgutil.walk_packages(cryptolake.__path__, "cryptolake."):
        if info.name in (
            "cryptolake.errors",
            "cryptolake.fake_exchange",
            "cryptolake.testing.wire",
            "cryptolake.coverage_plot",
        ) or info.name.startswith("cryptolake.cli"):
            continue  # the fake's wire errors, the plot's optional import, the CLI's usage errors are not the library's
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
            ):
                stray.append(f"{info.name}.{name}")
    assert stray == []


def test_collection_status_needs_no_exchange_client(tmp_path: Path) -> None:
    import subprocess
    import sys

    from cryptolake import BinanceClient, CryptoCollector, collection_status
    from cryptolake.testing import FakeExchange

    from .conftest import FAKE_NOW_MS

    lake = tmp_path / "lake"
    with FakeExchange(now=FAKE_NOW_MS) as fx, BinanceClient(base_url=fx.base_url) as client:
        collector = CryptoCollector(client, lake=lake)
        collector.collect("2025-12-30", ["BTC"])
        assert collection_status(lake, "1h") == collector.get_collection_status()
    assert collection_status(lake)["symbols"]["BTCUSDT"]["rows"] == 48  # Dec 30 and 31; Jan 1 00:00 is open
    code = (
        "import sys\nfrom cryptolake.cli import main\n"
        f"sys.argv = ['cryptolake', 'status', '--lake', {str(lake)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HTTPX' if 'httpx' in sys.modules else 'NO-HTTPX', file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert "BTCUSDT" in done.stdout and done.stderr.strip().endswith("NO-HTTPX"), done.stderr


def test_the_library_reports_a_missing_lake_and_creates_nothing(tmp_path: Path) -> None:
    import pytest

    from cryptolake import DataGapDetector, LakeError, collection_status

    typo = tmp_path / "no-such-lake"
    with pytest.raises(LakeError, match="no lake at"):
        collection_status(typo)
    with pytest.raises(LakeError, match="no lake at"):
        DataGapDetector(typo, "1h").report()
    assert not typo.exists()


def test_the_binance_client_is_a_kline_source_and_the_collector_needs_nothing_else() -> None:
    import typing

    from cryptolake import BinanceClient, CryptoCollector, DataGapDetector
    from cryptolake.sources import KlineSource

    with BinanceClient(base_url="http://127.0.0.1:9") as client:
        assert isinstance(client, KlineSource) and client.exchange == "binance"
    assert typing.get_type_hints(CryptoCollector.__init__)["binance_client"] is KlineSource
    assert typing.get_type_hints(DataGapDetector.__init__)["client"] == KlineSource | None
