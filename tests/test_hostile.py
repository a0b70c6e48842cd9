"""Every command under hostile and careless input: refused in one `error: ...` line, no
traceback, no secret, and the lake unchanged byte for byte.

One small lake is collected once; then each case runs the real CLI (in-process, click's runner)
with a PostgreSQL DSN and an API key in the environment whose secret parts must never show.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cryptolake.cli import cli
from cryptolake.redact import forget_secrets
from cryptolake.testing import FakeExchange
from cryptolake.timeutils import to_ms

from .helpers import lake_bytes

SECRET_PASSWORD = "S3CRET-PASSWORD-x9"
SECRET_KEY = "APIKEY-S3CRET-77"
SECRETS = (SECRET_PASSWORD, SECRET_KEY, "S3CRET")
DSN = f"postgresql://cl:{SECRET_PASSWORD}@127.0.0.1:1/market"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("hostile")
    lake = base / "lake"
    with FakeExchange(now=to_ms("2026-01-01T00:30:00Z")) as fx:
        runner = CliRunner()
        env = {"CRYPTOLAKE_POSTGRES_DSN": DSN, "BINANCE_API_KEY": SECRET_KEY}
        cwd = os.getcwd()
        os.chdir(base)
        try:
            result = runner.invoke(
                cli,
                [
                    "collect",
                    "--symbols",
                    "BTC,ETH",
                    "--since",
                    "2025-12-28",
                    "--lake",
                    str(lake),
                    "--base-url",
                    fx.base_url,
                    "--quiet",
                ],
                env=env,
            )
            assert result.exit_code == 0, result.output
            assert runner.invoke(cli, ["gaps", "--lake", str(lake), "--base-url", fx.base_url]).exit_code == 0
        finally:
            os.chdir(cwd)
        a_file = base / "a-file"
        a_file.write_text("not a lake")
        (base / "not-a-lake").mkdir()
        outside = base / "outside-link.csv"
        outside.symlink_to(lake / "_meta" / "collection_state.json")
        os.mkfifo(base / "a-fifo")
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield {
            "base": base,
            "lake": lake,
            "fx": fx,
            "env": env,
            "file": a_file,
            "busy_port": busy.getsockname()[1],
            "fifo": base / "a-fifo",
            "bad_toml": _write(base / "bad.toml", "[lake\nroot = 1"),
            "unknown_key": _write(base / "unknown.toml", "[binance]\ntimeouts = 5\n"),
        }
        busy.close()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cases(w: dict[str, Any]) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, extra environment) of each hostile invocation."""
    lake, url, base = str(w["lake"]), w["fx"].base_url, w["base"]
    at = ["--lake", lake]
    net = [*at, "--base-url", url]
    partition = next(w["lake"].rglob("data.parquet"))
    missing = str(base / "no-such-lake")
    return [
        # collect
        (["collect", "--symbols", "../x", *net], {}),
        (["collect", "--symbols", "a/b", *net], {}),
        (["collect", "--symbols", "BTC USDT", *net], {}),
        (["collect", "--symbols", "", *net], {}),
        (["collect", "--symbols", ",,,", *net], {}),
        (["collect", "--symbols", "BTC", "--top", "3", *net], {}),
        (["collect", "--since", "2099-01-01", "--symbols", "BTC", *net], {}),
        (["collect", "--since", "yesterday", "--symbols", "BTC", *net], {}),
        (["collect", "--interval", "7m", "--symbols", "BTC", *net], {}),
        (["collect", "--interval", "1H", "--symbols", "BTC", *net], {}),
        (["collect", "--backward-only", "--forward-only", "--symbols", "BTC", *net], {}),
        (["collect", "--symbols", "BTC", "--base-url", "ftp://example.com", *at], {}),
        (["collect", "--symbols", "BTC", "--base-url", "https://api.binance.us", *at], {}),
        (["collect", "--symbols", "BTC", "--lake", str(w["file"]), "--base-url", url], {}),
        (["collect", "--symbols", "BTC", "--lake", "/proc/x/lake", "--base-url", url], {}),
        (["collect", "--symbols", "BTC", *net], {"CRYPTOLAKE_BINANCE_TIMEOUT_S": "abc"}),
        (["collect", "--symbols", "BTC", *net], {"CRYPTOLAKE_BINANCE_CONCURRENCY": "0"}),
        (["collect", "--top", "0", *net], {}),
        (["collect", "--bogus-option", *net], {}),
        (["collect", "--symbols", "BTC", *net], {"CRYPTOLAKE_BINANCE_TIMEOUT_S": "nan"}),
        (["collect", "--symbols", "BTC", *net], {"CRYPTOLAKE_COLLECTION_EXCHANGE_GAP_RECHECK_DAYS": "inf"}),
        (["collect", "--symbols", "BTC", "--base-url", url], {"CRYPTOLAKE_LAKE_ROOT": str(w["file"])}),
        # status, gaps, coverage, fill-gaps
        (["status", "--lake", missing], {}),
        (["status", "--lake", str(base / "not-a-lake")], {}),
        (["status", "--interval", "5x", *at], {}),
        (["gaps", "--symbols", "NOPE", *net], {}),
        (["gaps", "--symbols", "BTC,NOPE", *net], {}),
        (["gaps", "--lake", missing, "--offline"], {}),
        (["gaps", "--since", "2099-01-01", *net], {}),
        (["gaps", "--since", "01/01/2024", *net], {}),
        (["gaps", "--symbols", "", *net], {}),
        (["gaps", "--interval", "1h", "--symbols", "BTC", "--lake", str(w["file"]), "--offline"], {}),
        (["coverage", "--symbols", "NOPE", *net], {}),
        (["coverage", "--lake", missing, "--offline"], {}),
        (["coverage", "--png", str(w["lake"] / "coverage.png"), *net], {}),
        (["coverage", "--since", "2099-01-01", *net], {}),
        (["fill-gaps", "--symbols", "NOPE", *net], {}),
        (["fill-gaps", "--lake", missing, "--base-url", url], {}),
        (["fill-gaps", "--since", "2099-01-01", *net], {}),
        (["fill-gaps", "--symbols", "../../etc", *net], {}),
        # sql
        (["sql", "DELETE FROM klines", *at], {}),
        (
            [
                "sql",
                f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{lake}/klines' (FORMAT parquet, PARTITION_BY (x), "
                "OVERWRITE)",
                *at,
            ],
            {},
        ),
        (["sql", f"COPY (SELECT 1 AS x) TO '{partition}' (FORMAT parquet)", *at], {}),
        (["sql", f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{partition}' (FORMAT parquet)", *at], {}),
        (["sql", "SELECT 1", "--output", f"{lake}/_meta/collection_state.json", *at], {}),
        (["sql", "SELECT 1", "--output", str(w["base"] / "outside-link.csv"), *at], {}),
        (["sql", "SELECT 1", "--output", f"{base}/no-such-folder/x.csv", *at], {}),
        (["sql", "SELECT 1", "--output", str(base), *at], {}),
        (["sql", "SELECT 1", "--format", "parquet", *at], {}),
        (["sql", f"ATTACH '{lake}/x.duckdb' AS x", *at], {}),
        (["sql", "INSTALL httpfs", *at], {}),
        (["sql", "LOAD httpfs", *at], {}),
        (["sql", "SET enable_external_access = true", *at], {}),
        (["sql", "SELECT * FROM read_csv('/etc/passwd')", *at], {}),
        (["sql", f"SELECT * FROM read_parquet('{partition}')", *at], {}),
        (["sql", "SELECT 1; SELECT 2", *at], {}),
        (["sql", "SELEC nonsense", *at], {}),
        (["sql", "CREATE TABLE t AS SELECT 1", *at], {}),
        (["sql", "SELECT 1", "--lake", missing], {}),
        (["sql", "SELECT 1", "--format", "xml", *at], {}),
        (["sql", "SELECT 1", "--limit", "-1", *at], {}),
        (["sql", "SELECT 1", "--format", "csv", "--output", "/dev/null", *at], {}),
        (["sql", "SELECT 1", "--format", "csv", "--output", str(w["fifo"]), *at], {}),
        (["sql", "PRAGMA enable_profiling", *at], {}),
        (["sql", "CALL pragma_version()", *at], {}),
        (["sql", "CHECKPOINT", *at], {}),
        (["sql", f"EXPORT DATABASE '{base}/export'", *at], {}),
        (["sql", "SELECT error('boom')", *at], {}),
        # run and the scheduler
        (["run", "--schedule", "0 0 31 2 *", "--symbols", "BTC", *net], {}),
        (["run", "--schedule", "every hour", "--symbols", "BTC", *net], {}),
        (["run", "--symbols", "BTC", *net], {"COLLECTION_SCHEDULE": "61 * * * *"}),
        (["run", "--since", "2099-01-01", "--symbols", "BTC", *net], {}),
        (["run", "--symbols", "../x", *net], {}),
        (["run", "--symbols", "BTC", "--lake", str(w["file"]), "--base-url", url], {}),
        (["scheduler", "trigger", "--symbols", "../x", *at], {}),
        (["scheduler", "trigger", "--type", "sideways", *at], {}),
        (["scheduler", "trigger", *at], {}),
        (["scheduler", "pause", "--lake", missing], {}),
        (["scheduler", "resume", *at], {}),
        # PostgreSQL (the environment's DSN points at a closed port and carries a password)
        (["load", "postgres", *at], {}),
        (["load", "postgres", "--dsn", f"postgresql://u:{SECRET_PASSWORD}@[bad", *at], {}),
        (["load", "postgres", "--dsn", f"postgresql://u:{SECRET_PASSWORD}@host:port/db", *at], {}),
        (
            ["load", "postgres", "--dsn", f"host=127.0.0.1 port=1 password={SECRET_PASSWORD} dbname=x", *at],
            {},
        ),
        (["load", "postgres", "--dsn", "mysql://root@localhost/x", *at], {}),
        (["load", "postgres", "--lake", missing], {}),
        (["load", "postgres", "--symbols", "../x", *at], {}),
        (["load", "postgres", "--schema", "drop table;", *at], {}),
        (["load", "postgres", *at], {"CRYPTOLAKE_POSTGRES_DSN": ""}),
        # the fake exchange
        (["fake-exchange", "--port", "99999"], {}),
        (["fake-exchange", "--port", str(w["busy_port"])], {}),
        (["fake-exchange", "--host", "nope.invalid", "--port", "0"], {}),
        (["fake-exchange", "--now", "not-a-time", "--port", "0"], {}),
        (["fake-exchange", "--chaos", "2", "--port", "0"], {}),
        # forget, bans, config
        (["forget", "NOPE", *at], {}),
        (["forget", "BTC", "--data", *at], {}),
        (["forget", "../x", *at], {}),
        (["forget", "BTC", "--lake", missing], {}),
        (["bans", "--lake", missing], {}),
        (["config"], {"CRYPTOLAKE_POSTGRES_DSN": f"postgresql://u:{SECRET_PASSWORD}@[bad"}),
        (["config"], {"CRYPTOLAKE_COLLECTION_TOP_N": "many"}),
        (["--config", str(base / "missing.toml"), "status", *at], {}),
        (["--config", str(w["bad_toml"]), "status", *at], {}),
        (["--config", str(w["unknown_key"]), "status", *at], {}),
        (["symbols", "--top", "0", "--base-url", url], {}),
        (["nonsense-command"], {}),
    ]


def test_at_least_sixty_hostile_inputs_are_each_refused_in_one_line(world: dict[str, Any]) -> None:
    before = lake_bytes(world["lake"])
    runner = CliRunner()
    all_cases = cases(world)
    assert len(all_cases) >= 60
    cwd = os.getcwd()
    os.chdir(world["base"])
    problems = []
    try:
        for argv, extra in all_cases:
            forget_secrets()
            result = runner.invoke(cli, argv, env={**world["env"], **extra})
            output = result.output
            lines = [line for line in output.splitlines() if line.strip()]
            if result.exit_code == 0:
                problems.append(f"{argv}: exit 0: {output!r}")
            if not isinstance(result.exception, SystemExit):
                problems.append(f"{argv}: raised {result.exception!r}")
            if len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in output:
                problems.append(f"{argv}: not one `error:` line: {output!r}")
            if any(secret in output for secret in SECRETS):
                problems.append(f"{argv}: shows a secret: {output!r}")
            if lake_bytes(world["lake"]) != before:
                problems.append(f"{argv}: changed the lake")
                before = lake_bytes(world["lake"])
    finally:
        os.chdir(cwd)
    assert not problems, "\n".join(problems)
    assert not (world["base"] / "no-such-lake").exists()  # no command created a lake from a typo
