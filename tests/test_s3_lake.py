"""The lake on S3-compatible object storage: every command on ``--lake s3://bucket/prefix``
against a real S3 server on 127.0.0.1 (moto's for behaviour, SeaweedFS for races), and the
same tests on a local folder, so the two keep one contract."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pyarrow.parquet as pq
import pytest

from cryptolake import CryptoCollector, Lake
from cryptolake.errors import LakeError
from cryptolake.lake.object_lake import ObjectLake
from cryptolake.lake.storage import ObjectStorage, open_storage
from cryptolake.sources.binance import BinanceClient
from cryptolake.testing import FakeExchange
from tests.conftest import FAKE_NOW_MS, PG_DSN, s3_env
from tests.helpers import clean_env, expected_klines, invoke, one_line_error, oracle

SINCE = "2025-10-01"
SYMBOLS = "BTC,ETH,SOL"
PAIRS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


@pytest.fixture(params=["local", "s3"])
def lake_root(
    request: pytest.FixtureRequest, tmp_path: Path, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A lake root: a local folder, or ``s3://<new bucket>/lake`` on moto's server."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # per-host state of S3 lakes
    if request.param == "local":
        return str(tmp_path / "lake")
    return str(request.getfixturevalue("s3_lake"))


def _collect(root: str, fx: FakeExchange, *args: Any) -> Any:
    return invoke("collect", *args, "--lake", root, "--base-url", fx.base_url, "--archive-url", fx.base_url)


def _versions(root: str) -> dict[str, str]:
    """Every candle object's version (local: inode, size, times; S3: its ETag)."""
    return {o.path: o.version for o in open_storage(root).list("klines/") if o.path.endswith("/data.parquet")}


def _all_candles(root: str) -> pl.DataFrame:
    return Lake(root).scan("1h").collect().sort("symbol", "open_time")


def _oracle(fx: FakeExchange, pairs: list[str] = PAIRS, since: str = SINCE) -> pl.DataFrame:
    frames = [oracle(fx, p, since).with_columns(pl.lit(p).alias("symbol")) for p in pairs]
    return pl.concat(frames).select("symbol", *frames[0].columns[:-1]).sort("symbol", "open_time")


def test_collect_then_a_rerun_rewrites_nothing(lake_root: str, fake_exchange: FakeExchange) -> None:
    result = _collect(lake_root, fake_exchange, "--symbols", SYMBOLS, "--since", SINCE)
    assert result.exit_code == 0, result.output
    assert _all_candles(lake_root).equals(_oracle(fake_exchange))
    before = _versions(lake_root)
    assert len(before) == 3 * 3  # 3 symbols x Oct, Nov, Dec 2025 (the fake's clock: 2026-01-01T00:30Z)
    again = _collect(lake_root, fake_exchange, "--symbols", SYMBOLS, "--since", SINCE)
    assert again.exit_code == 0, again.output
    assert "collected 0 new" in again.output
    assert _versions(lake_root) == before  # not one object rewritten
    assert isinstance(Lake(lake_root), ObjectLake) == lake_root.startswith("s3://")


def test_gaps_and_fill_gaps_find_and_refill_a_lost_month(lake_root: str, fake_exchange: FakeExchange) -> None:
    assert _collect(lake_root, fake_exchange, "--symbols", SYMBOLS, "--since", SINCE).exit_code == 0
    storage = open_storage(lake_root)
    lost = "klines/exchange=binance/interval=1h/symbol=ETHUSDT/month=2025-11/data.parquet"
    storage.delete(lost)
    gaps = invoke("gaps", "--lake", lake_root, "--base-url", fake_exchange.base_url, "--json")
    assert gaps.exit_code == 0, gaps.output
    found = json.loads(gaps.output)
    (gap,) = [g for g in found if g["symbol"] == "ETHUSDT"]
    assert (gap["start_time"], gap["end_time"], gap["count"]) == (
        "2025-11-01T00:00:00Z",
        "2025-11-30T23:00:00Z",
        720,
    )
    assert not [g for g in found if g["symbol"] != "ETHUSDT"]
    filled = invoke(
        "fill-gaps",
        "--lake",
        lake_root,
        "--base-url",
        fake_exchange.base_url,
        "--archive-url",
        fake_exchange.base_url,
    )
    assert filled.exit_code == 0, filled.output
    assert storage.head(lost) is not None
    assert _all_candles(lake_root).equals(_oracle(fake_exchange))
    # The report the views read says so too.
    sql = invoke(
        "sql",
        "--lake",
        lake_root,
        "--format",
        "json",
        "SELECT count(*) AS n FROM gaps WHERE symbol = 'ETHUSDT'",
    )
    assert sql.exit_code == 0, sql.output
    assert json.loads(sql.output) == [{"n": 0}]


def test_status_and_sql_see_the_whole_lake(lake_root: str, fake_exchange: FakeExchange) -> None:
    assert _collect(lake_root, fake_exchange, "--symbols", SYMBOLS, "--since", SINCE).exit_code == 0
    status = invoke("status", "--lake", lake_root, "--json")
    assert status.exit_code == 0, status.output
    document = json.loads(status.output)
    expected = _oracle(fake_exchange)
    assert document["lake"] == lake_root
    assert document["total_records_collected"] == expected.height
    assert sorted(document["symbols"]) == PAIRS
    assert document["symbols"]["BTCUSDT"]["last_outcome"] == "succeeded"
    sql = invoke(
        "sql", "--lake", lake_root, "--format", "json",
        "SELECT symbol, count(*) AS n, max(month) AS last_month FROM klines GROUP BY symbol ORDER BY symbol",
    )  # fmt: skip
    assert sql.exit_code == 0, sql.output
    counts = expected.group_by("symbol").len().sort("symbol")
    assert json.loads(sql.output) == [
        {"symbol": s, "n": n, "last_month": "2025-12"} for s, n in counts.iter_rows()
    ]
    coverage = invoke("coverage", "--lake", lake_root, "--base-url", fake_exchange.base_url, "--json")
    assert coverage.exit_code == 0, coverage.output
    months = {(r["symbol"], r["month"]): r["completeness_percent"] for r in json.loads(coverage.output)}
    assert months == {(s, m): 100.0 for s in PAIRS for m in ("2025-10", "2025-11", "2025-12")}
    # The sql connection cannot write, on S3 too (DuckDB's external access is off).
    refused = invoke("sql", "--lake", lake_root, f"COPY klines TO '{lake_root}/klines/x.parquet'")
    assert refused.exit_code != 0
    assert not [o for o in open_storage(lake_root).list("klines/") if o.path.endswith("x.parquet")]


def test_a_missing_bucket_or_an_empty_prefix_is_one_line(
    s3_lake: str, cli_env: Path, fake_exchange: FakeExchange
) -> None:
    bucket = s3_lake.split("/")[2]
    for args in (
        ["status", "--lake", "s3://no-such-bucket-here/lake"],
        [
            "collect",
            "--lake",
            "s3://no-such-bucket-here/lake",
            "--symbols",
            "BTC",
            "--base-url",
            fake_exchange.base_url,
        ],
        ["gaps", "--lake", f"s3://{bucket}/empty", "--base-url", fake_exchange.base_url],
        ["sql", "--lake", "gs://bucket/lake", "SELECT 1"],
        ["status", "--lake", "s3://A_Bad_Bucket/lake"],
    ):
        result = invoke(*args)
        assert result.exit_code != 0, args
        line = one_line_error(result)
        assert "Traceback" not in result.output
        assert (
            ("no-such-bucket-here" in line and "does not exist" in line)
            or "holds no lake" in line
            or "s3://bucket/prefix" in line
        ), line
    assert open_storage(s3_lake).list() == []  # nothing was created by a refused command


def test_credentials_never_appear_in_output_logs_or_meta(
    s3_lake: str,
    fake_exchange: FakeExchange,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    outputs = [_collect(s3_lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-01").output]
    outputs += [invoke("status", "--lake", s3_lake, "--json").output]
    outputs += [invoke("gaps", "--lake", s3_lake, "--base-url", fake_exchange.base_url).output]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-wrong-" + secret)  # a refused request, echoed back?
    outputs += [invoke("status", "--lake", s3_lake).output]
    assert "SignatureDoesNotMatch" in outputs[-1] or "error" in outputs[-1]
    storage = open_storage(s3_lake, s3_env(os.environ["AWS_ENDPOINT_URL"], secret))
    stored = b"".join(storage.read(o.path)[0] for o in storage.list())  # type: ignore[index]
    for text in [*outputs, caplog.text]:
        assert secret not in text
    assert secret.encode() not in stored


def test_load_postgres_from_an_s3_lake(
    s3_lake: str, fake_exchange: FakeExchange, cli_env: Path, pg_schema: tuple[Any, str]
) -> None:
    server, schema = pg_schema
    assert _collect(s3_lake, fake_exchange, "--symbols", "BTC,ETH", "--since", "2025-11-01").exit_code == 0
    args = ["load", "postgres", "--lake", s3_lake, "--dsn", PG_DSN, "--schema", schema]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    rows = server.execute(f"SELECT symbol, count(*) FROM {schema}.klines GROUP BY 1 ORDER BY 1").fetchall()
    expected = (
        _oracle(fake_exchange, ["BTCUSDT", "ETHUSDT"], "2025-11-01").group_by("symbol").len().sort("symbol")
    )
    assert rows == list(expected.iter_rows())
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert ": 0 partitions sent (0 rows)" in again.output, again.output  # incremental: nothing changed


# -- readers: the README's recipes ----------------------------------------------------------------


def test_readme_recipes_polars_and_duckdb_read_the_s3_lake(
    moto_endpoint: str, fake_exchange: FakeExchange, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's two reader recipes, run as written, on s3://candles/lake."""
    for name, value in s3_env(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    assert httpx.put(f"{moto_endpoint}/candles").status_code == 200
    assert _collect("s3://candles/lake", fake_exchange, "--symbols", SYMBOLS, "--since", SINCE).exit_code == 0
    expected = _oracle(fake_exchange).group_by("symbol").len().sort("symbol").rows()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("Readers on other machines read the bucket directly:", 1)[1]
    polars_recipe, duckdb_recipe = (block.split("```", 1)[0] for block in section.split("```python\n")[1:3])
    scope: dict[str, Any] = {}
    exec(polars_recipe, scope)  # noqa: S102 - the README's own code
    assert scope["klines"].group_by("symbol").len().sort("symbol").collect().rows() == expected
    exec(duckdb_recipe, scope)  # noqa: S102
    assert scope["by_symbol"] == expected
    scope["con"].close()


# -- several writers, several hosts ----------------------------------------------------------------


_SHARD = """
import sys
from cryptolake.cli import main
sys.argv = ["cryptolake", "collect", "--lake", {lake!r}, "--base-url", {base!r}, "--symbols", {symbols!r},
            "--since", {since!r}, "--shard", {shard!r}, "--quiet"]
main()
"""


def _seaweed_lake(endpoint: str, name: str) -> tuple[str, dict[str, str]]:
    env = {**clean_env(), **s3_env(endpoint)}
    return f"s3://race/{name}", env


def test_four_shards_writing_one_s3_lake_at_once_build_what_one_process_builds(
    seaweed_endpoint: str, fake_exchange: FakeExchange, tmp_path: Path
) -> None:
    """Four collectors (one per shard) write one lake on SeaweedFS at the same time, sharing its
    _meta records and collection state through conditional puts: the lake, the records and the
    state hold every symbol, exactly as one process writing a lake of its own."""
    symbols = "BTC,ETH,SOL,BNB,XRP,ADA,DOGE,FDUSD"  # every shard of 4 gets one or more
    shared, env = _seaweed_lake(seaweed_endpoint, "shards")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _SHARD.format(
                    lake=shared, base=fake_exchange.base_url, symbols=symbols, since=SINCE, shard=f"{k}/4"
                ),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for k in range(1, 5)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    single, _ = _seaweed_lake(seaweed_endpoint, "single")
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    try:
        one = subprocess.run(
            [sys.executable, "-c", _SHARD.format(lake=single, base=fake_exchange.base_url, symbols=symbols,
                                                 since=SINCE, shard="1/1")],
            env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert one.returncode == 0, one.stdout + one.stderr
        sharded, whole = Lake(shared), Lake(single)
        pairs = whole.symbols("1h")
        assert len(pairs) == 8 and sharded.symbols("1h") == pairs
        assert _all_candles(shared).equals(_all_candles(single))
        from cryptolake.lake.meta import LakeMeta
        from cryptolake.status import state_document

        assert LakeMeta(shared).starts("1h") == LakeMeta(single).starts("1h")  # no shard's record lost
        assert sorted(state_document(sharded)["1h"]) == sorted(state_document(whole)["1h"]) == pairs
    finally:
        for name in s3_env(seaweed_endpoint):
            os.environ.pop(name, None)


def test_a_killed_writer_leaves_no_partial_object(
    seaweed_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL a collection into S3 at random moments: every object left is whole Parquet, and
    the next run completes the lake exactly (nothing to clean up, no lock left behind)."""
    lake, env = _seaweed_lake(seaweed_endpoint, "killed")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    for name, value in s3_env(seaweed_endpoint).items():
        monkeypatch.setenv(name, value)
    with FakeExchange(now=FAKE_NOW_MS, latency_s=0.02) as fx:
        argv = [sys.executable, "-c", _SHARD.format(lake=lake, base=fx.base_url, symbols="BTC,ETH,SOL",
                                                    since="2025-01-01", shard="1/1")]  # fmt: skip
        storage = open_storage(lake)
        for delay in (1.5, 2.5, 3.5):
            process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait()
            for info in storage.list("klines/"):
                data = storage.read(info.path)
                assert data is not None
                pq.read_table(io.BytesIO(data[0]))  # whole Parquet, never a part
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
        expected = _oracle(fx, PAIRS, "2025-01-01")
    assert _all_candles(lake).equals(expected)


def test_python_api_on_an_s3_lake(s3_lake: str, fake_exchange: FakeExchange, tmp_path: Path) -> None:
    """What the README shows: CryptoCollector(lake="s3://...") and DataGapDetector on it."""
    with BinanceClient(
        base_url=fake_exchange.base_url, retry_delay=0.01, ban_file=tmp_path / "bans.json"
    ) as client:
        collector = CryptoCollector(client, lake=s3_lake)
        collector.collect("2025-12-01", ["BTC", "ETH"])
        Lake(s3_lake).storage.delete(
            "klines/exchange=binance/interval=1h/symbol=ETHUSDT/month=2025-12/data.parquet"
        )
        report = collector.detect_and_fill_gaps(["BTC", "ETH"])
    assert report.results["ETHUSDT"].rows_added == 744
    assert report.remaining == {}
    lake = Lake(s3_lake)
    assert isinstance(lake.storage, ObjectStorage)
    assert lake.symbols("1h") == ["BTCUSDT", "ETHUSDT"]
    stored = lake.read_partition("1h", "BTCUSDT", "2025-12")
    assert stored.equals(expected_klines(fake_exchange.klines("BTCUSDT", "1h", *_month("2025-12"))))
    stats = lake.partition_stats("1h", "BTCUSDT")
    assert [s.month for s in stats] == ["2025-12"] and all(s.off_grid_rows == 0 for s in stats)


def _month(month: str) -> tuple[int, int]:
    from cryptolake.lake.layout import month_bounds

    return month_bounds(month)


def test_an_object_another_tool_rewrote_or_copied_is_read_in_full(
    s3_lake: str, fake_exchange: FakeExchange
) -> None:
    """A rewrite that keeps cryptolake's footer metadata (two rows duplicated over two others),
    and a copy of a partition into another month: neither is trusted from its footer, so gaps
    finds the missing hours, the duplicates and the misplaced candles, as on a folder."""
    assert _collect(s3_lake, fake_exchange, "--symbols", "BTC,ETH", "--since", "2025-10-01").exit_code == 0
    storage = open_storage(s3_lake)
    base = "klines/exchange=binance/interval=1h/symbol="
    read = storage.read(f"{base}ETHUSDT/month=2025-11/data.parquet")
    assert read is not None
    table = pq.read_table(io.BytesIO(read[0]))
    rows = list(range(table.num_rows))
    rows[10], rows[11] = 9, 9  # hours 10 and 11 replaced by hour 9, twice: same row count
    rewritten = table.take(rows)
    assert rewritten.schema.metadata == table.schema.metadata  # cryptolake's footer keys kept
    buffer = io.BytesIO()
    pq.write_table(rewritten, buffer)
    storage.put(f"{base}ETHUSDT/month=2025-11/data.parquet", buffer.getvalue())  # as boto3 would
    october = storage.read(f"{base}BTCUSDT/month=2025-10/data.parquet")
    assert october is not None
    storage.put(f"{base}BTCUSDT/month=2025-08/data.parquet", october[0])
    result = invoke("gaps", "--lake", s3_lake, "--base-url", fake_exchange.base_url, "--json")
    assert result.exit_code == 0, result.output
    found = {(g["symbol"], g["kind"]): g["count"] for g in json.loads(result.output)}
    assert found[("ETHUSDT", "missing")] == 2
    assert found[("ETHUSDT", "duplicate")] == 2
    assert found[("BTCUSDT", "misplaced")] == 744


def test_a_foreign_object_is_refused_in_one_line(s3_lake: str, fake_exchange: FakeExchange) -> None:
    assert _collect(s3_lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-01").exit_code == 0
    storage = open_storage(s3_lake)
    buffer = io.BytesIO()
    pl.DataFrame({"open_time": [1, 2], "price": [1.0, 2.0]}).write_parquet(buffer)
    storage.put(
        "klines/exchange=binance/interval=1h/symbol=ETHUSDT/month=2025-12/data.parquet", buffer.getvalue()
    )
    result = invoke("status", "--lake", s3_lake)
    assert result.exit_code != 0
    assert "does not match the candle schema" in one_line_error(result)


def test_sharded_schedulers_on_two_hosts_share_one_s3_lake(
    seaweed_endpoint: str, fake_exchange: FakeExchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cryptolake run --shard K/2` twice at once on one bucket: each keeps its lock and state on
    its own host (here: its own state folder), both collect their share, `status` sees the whole
    lake, and a second `run` of the same shard on the same host is refused in one line."""
    from cryptolake.scheduler import SchedulerControl
    from tests.test_scheduler import NEVER_IN_A_TEST

    lake, env = _seaweed_lake(seaweed_endpoint, "scheduled")
    for name, value in s3_env(seaweed_endpoint).items():
        monkeypatch.setenv(name, value)
    hosts = [tmp_path / "host-1", tmp_path / "host-2"]
    argv = [sys.executable, "-m", "cryptolake", "run", "--lake", lake, "--base-url", fake_exchange.base_url,
            "--schedule", NEVER_IN_A_TEST, "--symbols", "BTC,ETH,SOL,BNB", "--since", "2025-12-01", "--run-now"]  # fmt: skip
    logs = [open(host.with_suffix(".err"), "w+") for host in hosts]  # noqa: SIM115 - closed below
    processes = [
        subprocess.Popen(
            [*argv, "--shard", f"{k}/2"],
            env={**env, "XDG_STATE_HOME": str(host)},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        for k, (host, log) in enumerate(zip(hosts, logs, strict=True), start=1)
    ]
    try:
        for k, host in enumerate(hosts, start=1):
            monkeypatch.setenv("XDG_STATE_HOME", str(host))
            control = SchedulerControl(lake, shard=f"{k}/2")
            deadline = time.monotonic() + 90
            while not (control.state().get("last_run") or {}).get("result"):
                assert time.monotonic() < deadline, "no first run"
                assert all(p.poll() is None for p in processes), [
                    h.with_suffix(".err").read_text() for h in hosts
                ]
                time.sleep(0.1)
            assert control.state()["last_run"]["result"] == "succeeded"
        # This host (host 2) sees and steers its shard's scheduler.
        table = invoke("status", "--lake", lake)
        assert table.exit_code == 0 and "shard 2/2 scheduler: idle" in table.output, table.output
        assert "paused" in invoke("scheduler", "pause", "--lake", lake, "--shard", "2/2").output
        assert invoke("scheduler", "pause", "--lake", lake, "--shard", "1/2").exit_code != 0  # not here
        unsharded = one_line_error(invoke("scheduler", "pause", "--lake", lake))
        assert "shard schedulers 2/2 do: pass --shard K/N" in unsharded, unsharded
        twin = subprocess.run([*argv, "--shard", "2/2"], env={**env, "XDG_STATE_HOME": str(hosts[1])},
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert twin.returncode == 1 and len(twin.stderr.strip().splitlines()) == 1, twin.stderr
        assert "another scheduler is already running" in twin.stderr
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in processes]
        for log in logs:
            log.close()
    assert codes == [143, 143]
    pairs = ["BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert _all_candles(lake).equals(_oracle(fake_exchange, pairs, "2025-12-01"))
    status = invoke("status", "--lake", lake, "--json")
    assert status.exit_code == 0 and sorted(json.loads(status.output)["symbols"]) == pairs


def test_bad_lake_urls_and_endpoints_are_one_line(
    s3_lake: str, cli_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket = s3_lake.split("/")[2]
    for url in (f"s3://{bucket}/lake//x", f"s3://{bucket}/lake?x=1", f"s3://{bucket}/./lake"):
        result = invoke("status", "--lake", url)
        assert result.exit_code == 2, url
        assert "prefix of plain names" in one_line_error(result)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.removeprefix("http://"))
    assert "must be http(s)://host[:port]" in one_line_error(invoke("status", "--lake", s3_lake))
    for bad in ("http://127.0.0.1:99999", "", "http://", "http://:9000", "http://[::1", f"{endpoint}?x"):
        monkeypatch.setenv("AWS_ENDPOINT_URL", bad)  # obstore panics on some of these
        assert "AWS_ENDPOINT_URL" in one_line_error(invoke("status", "--lake", s3_lake)), bad
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in one_line_error(
        invoke("status", "--lake", s3_lake)
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 12)
    for url in ("s3://192.168.1.1/x", "s3://a..b/x", "s3://user:pw123@candles/x"):
        line = one_line_error(invoke("status", "--lake", url))
        assert "pw123" not in line and ("bucket" in line or "credentials" in line), line
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    assert "set AWS_ALLOW_HTTP=true" in one_line_error(invoke("status", "--lake", s3_lake))
    for root in ("gs://bucket/x", "S3://bucket/x", "s3a://bucket/x"):  # the API does not make folders of them
        with pytest.raises(LakeError, match="a local folder or s3://bucket/prefix"):
            Lake(root)
    monkeypatch.chdir(tmp_path)
    assert not list(tmp_path.iterdir())


def test_forget_data_removes_a_symbol_whose_partition_is_unreadable(
    lake_root: str, fake_exchange: FakeExchange
) -> None:
    """The usual reason to delete a symbol's candles is a broken partition: forget --data does it
    (on a folder and on S3), where every reading command refuses the partition."""
    assert _collect(lake_root, fake_exchange, "--symbols", "BTC,ETH", "--since", "2025-11-01").exit_code == 0
    open_storage(lake_root).put(
        "klines/exchange=binance/interval=1h/symbol=ETHUSDT/month=2025-12/data.parquet", b"not parquet at all"
    )
    assert invoke("status", "--lake", lake_root).exit_code == 1  # refused, in one line
    gone = invoke("forget", "ETH", "--data", "--yes", "--json", "--lake", lake_root)
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.stdout)["ETHUSDT"]["partitions"] == 2
    assert json.loads(gone.stdout)["ETHUSDT"]["rows"] == 720  # November's, read; December's uncounted
    assert Lake(lake_root).symbols("1h") == ["BTCUSDT"]
    assert invoke("status", "--lake", lake_root).exit_code == 0
