"""`--shard K/N`: N processes share the universe, each symbol in exactly one shard, stable across
processes; together they build exactly the lake one process builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptolake import CryptoCollector
from cryptolake.sharding import Shard
from cryptolake.sources.binance import BinanceClient
from cryptolake.testing import FakeExchange
from tests.helpers import collect, duck, invoke, one_line_error

SYMBOLS = "BTC,ETH,SOL,XRP,DOGE,BNB,ADA"
symbols = st.lists(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12), max_size=60)


@given(names=symbols, count=st.integers(1, 16), exchange=st.sampled_from(["binance", "kraken"]))
def test_every_symbol_is_in_exactly_one_shard(names: list[str], count: int, exchange: str) -> None:
    shards = [Shard(k, count) for k in range(1, count + 1)]
    picked = [s for shard in shards for s in shard.select(exchange, names)]
    assert sorted(picked) == sorted(names)  # each name once (repeats kept as given)


def test_a_symbols_shard_is_the_same_in_every_process() -> None:
    names = [f"S{i:04d}USDT" for i in range(200)]
    code = (
        "import sys; from cryptolake.sharding import Shard; "
        "print(','.join(Shard(3, 7).select('binance', sys.argv[1].split(','))))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, ",".join(names)], capture_output=True, text=True, check=True
    )
    mine = Shard(3, 7).select("binance", names)
    assert other.stdout.strip().split(",") == mine
    assert 10 < len(mine) < 50  # a share, not all or nothing
    assert Shard(1, 2).select("binance", names) != Shard(1, 2).select("kraken", names)  # keyed by exchange


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "a/b", "1", "1/2/3", "", "1/2000"])
def test_a_bad_shard_is_refused_in_one_line(text: str, cli_env: Path) -> None:
    result = invoke("collect", "--shard", text, "--symbols", "BTC")
    assert result.exit_code == 2
    assert "--shard" in one_line_error(result)
    with pytest.raises(ValueError):
        Shard.parse(text)


def test_four_shards_build_exactly_the_lake_one_process_builds(
    fake_exchange: FakeExchange, tmp_path: Path
) -> None:
    whole, shared = tmp_path / "whole", tmp_path / "shared"
    result = collect(whole, fake_exchange, "--symbols", SYMBOLS, "--since", "2025-10-01")
    assert result.exit_code == 0, result.output
    for k in range(1, 5):
        result = collect(
            shared, fake_exchange, "--symbols", SYMBOLS, "--since", "2025-10-01", "--shard", f"{k}/4"
        )
        assert result.exit_code == 0, result.output
    assert duck(shared).equals(duck(whole))
    assert duck(whole).select("symbol").n_unique() == 7


def test_a_sharded_collector_fills_only_its_own_gaps(fake_exchange: FakeExchange, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    assert collect(lake, fake_exchange, "--symbols", SYMBOLS, "--since", "2025-12-01").exit_code == 0
    # Two symbols lose a day each; shard 1/2 fills only the one it owns.
    pairs = [f"{s}USDT" for s in SYMBOLS.split(",")]
    mine = Shard(1, 2).select("binance", pairs)
    theirs = [p for p in pairs if p not in mine]
    assert mine and theirs
    for symbol in (mine[0], theirs[0]):
        path = lake / f"klines/exchange=binance/interval=1h/symbol={symbol}/month=2025-12/data.parquet"
        frame = pl.read_parquet(path)
        frame.filter(pl.col("open_time").dt.day() != 10).write_parquet(path)
    with BinanceClient(base_url=fake_exchange.base_url, ban_file=tmp_path / "bans.json") as client:
        report = CryptoCollector(client, lake=lake, shard="1/2").detect_and_fill_gaps()
    assert set(report.results) == set(mine)
    counts = dict(duck(lake).group_by("symbol").len().iter_rows())
    assert counts[mine[0]] == counts[mine[-1]] and counts[theirs[0]] == counts[mine[0]] - 24


def test_collect_says_what_its_shard_owns(fake_exchange: FakeExchange, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    pairs = [f"{s}USDT" for s in SYMBOLS.split(",")]
    mine = Shard(2, 3).select("binance", pairs)
    result = collect(lake, fake_exchange, "--symbols", SYMBOLS, "--since", "2025-12-20", "--shard", "2/3")
    assert result.exit_code == 0, result.output
    assert f"shard 2/3: {len(mine)} of the 7 symbols" in result.stderr
    assert f"for {len(mine)}/{len(mine)} symbols" in result.output
    assert sorted(duck(lake).get_column("symbol").unique().to_list()) == sorted(mine)
    assert invoke("collect", "--shard", "１/2", "--symbols", "BTC").exit_code == 2  # full-width digit


# -- one host, several addresses: a weight budget per IP -----------------------------------------


def test_the_fake_keys_weight_by_client_address_as_binance_keys_it_by_ip() -> None:
    """Two clients from 127.0.0.2 and 127.0.0.3: each sees only its own weight in
    X-MBX-USED-WEIGHT-1M, and one at the limit is refused (429) while the other is served."""
    import httpx

    from cryptolake.testing import FakeExchange
    from tests.conftest import FAKE_NOW_MS

    with FakeExchange(now=FAKE_NOW_MS, weight_limit=10) as fx:
        clients = {
            ip: httpx.Client(base_url=fx.base_url, transport=httpx.HTTPTransport(local_address=ip))
            for ip in ("127.0.0.2", "127.0.0.3")
        }
        try:
            params = {"symbol": "BTCUSDT", "interval": "1h", "limit": "1000"}  # weight 2
            used = [clients["127.0.0.2"].get("/api/v3/klines", params=params) for _ in range(5)]
            assert [r.headers["X-MBX-USED-WEIGHT-1M"] for r in used] == ["2", "4", "6", "8", "10"]
            assert clients["127.0.0.2"].get("/api/v3/klines", params=params).status_code == 429
            other = clients["127.0.0.3"].get("/api/v3/klines", params=params)
            assert other.status_code == 200 and other.headers["X-MBX-USED-WEIGHT-1M"] == "2"
            stats = fx.stats()
            assert stats.max_window_weight == 10  # the most one IP used
            assert sum(w for _, w in stats.window_weights) == 12  # both IPs' weight
        finally:
            for client in clients.values():
                client.close()


def test_a_client_with_a_source_address_has_a_budget_of_its_own(tmp_path: Path) -> None:
    from cryptolake.sources.binance import BinanceClient
    from cryptolake.testing import FakeExchange
    from tests.conftest import FAKE_NOW_MS

    with FakeExchange(now=FAKE_NOW_MS) as fx:
        for k, ip in enumerate(("127.0.0.2", "127.0.0.3"), start=1):
            with BinanceClient(
                base_url=fx.base_url, source_address=ip, ban_file=tmp_path / "bans.json"
            ) as client:
                client.get_klines("BTCUSDT", "1h", "2025-12-01", "2025-12-20")
            stats = fx.stats()
            per_client = stats.max_window_weight
            assert sum(w for _, w in stats.window_weights) == k * per_client  # two budgets, not one
    assert (
        BinanceClient(base_url="http://127.0.0.1:9", source_address="127.0.0.2").source_address == "127.0.0.2"
    )


def test_a_ban_of_one_source_address_leaves_the_others_alone(tmp_path: Path) -> None:
    """Binance bans an IP: a 418 for 127.0.0.1 is recorded for that address only (one ban book,
    shared by the processes of a host), and a client on 127.0.0.2 goes on."""
    from cryptolake.errors import IPBanned
    from cryptolake.testing import Fault
    from tests.conftest import FAKE_NOW_MS

    bans = tmp_path / "bans.json"
    with FakeExchange(now=FAKE_NOW_MS) as fx:
        fx.inject(Fault.ban(retry_after_s=600))
        with BinanceClient(base_url=fx.base_url, ban_file=bans, retry_delay=0.01) as banned:
            with pytest.raises(IPBanned):
                banned.get_klines("BTCUSDT", "1h", "2025-12-01", "2025-12-02")
            with pytest.raises(IPBanned):  # remembered: nothing is sent
                banned.get_klines("BTCUSDT", "1h", "2025-12-01", "2025-12-02")
        with BinanceClient(base_url=fx.base_url, ban_file=bans, source_address="127.0.0.2") as other:
            assert other.get_klines("BTCUSDT", "1h", "2025-12-01", "2025-12-02").height == 24


def test_a_source_address_this_host_lacks_is_a_configuration_error() -> None:
    from cryptolake.config import load_settings
    from cryptolake.errors import ConfigError

    with pytest.raises(ConfigError, match="an IP address of this host"):
        load_settings(None, {"CRYPTOLAKE_BINANCE_SOURCE_ADDRESS": "10.9.9.9"}, dotenv_file=None)
    assert (
        load_settings(
            None, {"CRYPTOLAKE_BINANCE_SOURCE_ADDRESS": "127.0.0.2"}, dotenv_file=None
        ).binance.source_address
        == "127.0.0.2"
    )
