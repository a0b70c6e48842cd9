"""The public API: the original design's names are importable from the package root."""

from __future__ import annotations

import inspect

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
