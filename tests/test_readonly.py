"""A read-only lake: the commands that only read work on it and change nothing; the commands that
write refuse in one line. The lake is made read-only for real: a read-only bind mount in a
private mount namespace when the tests run as root (root ignores file modes), file modes
otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cryptolake import CryptoCollector
from cryptolake.sources.binance import BinanceClient
from cryptolake.testing import FakeExchange

from .helpers import clean_env, lake_bytes


def _can_mount_read_only(probe: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount --bind "{probe}" "{probe}" && mount -o remount,bind,ro "{probe}" '
            f'&& ! touch "{probe}/x" 2>/dev/null',
        ],
        capture_output=True,
    )
    return result.returncode == 0


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Any]:
    """``run(lake, *args)``: the CLI in a child process that sees ``lake`` read-only."""
    if os.geteuid() != 0:
        touched: list[Path] = []

        def run_with_modes(lake: Path, *args: str) -> subprocess.CompletedProcess[str]:
            for path in [lake, *lake.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)
                touched.append(path)
            return subprocess.run(
                [sys.executable, "-m", "cryptolake", *args],
                capture_output=True,
                text=True,
                env=clean_env(),
                cwd=tmp_path,
                timeout=120,
            )

        yield run_with_modes
        for path in touched:
            path.chmod(path.stat().st_mode | 0o200)
        return
    probe = tmp_path / "probe"
    probe.mkdir()
    if not _can_mount_read_only(probe):
        pytest.skip("running as root without the right to make a private read-only mount (unshare -m)")

    def run_with_mount(lake: Path, *args: str) -> subprocess.CompletedProcess[str]:
        script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        return subprocess.run(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                str(lake),
                sys.executable,
                "-m",
                "cryptolake",
                *args,
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
            cwd=tmp_path,
            timeout=120,
        )

    yield run_with_mount


@pytest.mark.slow
def test_reading_commands_work_on_a_read_only_lake_and_writing_ones_refuse(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path, read_only: Any
) -> None:
    lake = tmp_path / "lake"
    assert CryptoCollector(client, lake=lake).collect_backward("2025-12-30", ["BTC", "ETH"]).ok
    before = lake_bytes(lake)
    net = ["--lake", str(lake), "--base-url", fake_exchange.base_url]

    for args in (
        ["gaps", *net],
        ["gaps", "--json", "--offline", "--lake", str(lake)],
        ["coverage", *net],
        ["status", "--lake", str(lake)],
        ["sql", "SELECT count(*) AS n FROM klines", "--lake", str(lake)],
        ["bans", "--lake", str(lake)],
    ):
        result = read_only(lake, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert "96" in read_only(lake, "sql", "SELECT count(*) AS n FROM klines", "--lake", str(lake)).stdout

    for args in (
        ["collect", "--symbols", "BTC", "--since", "2025-12-01", *net],
        ["fill-gaps", *net],
        ["run", "--symbols", "BTC", "--since", "2025-12-30", "--run-now", *net],
        ["forget", "BTC", "--lake", str(lake)],
    ):
        result = read_only(lake, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "read-only" in lines[0].lower(), (
            args,
            lines,
        )
    assert lake_bytes(lake) == before


@pytest.mark.slow
def test_output_through_a_bind_mount_of_a_folder_inside_the_lake_is_refused(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path
) -> None:
    if os.geteuid() != 0 or not _can_mount_read_only(tmp_path):
        pytest.skip("needs root and a private mount namespace (unshare -m) to make a bind mount")
    lake = tmp_path / "lake"
    assert CryptoCollector(client, lake=lake).collect_backward("2025-12-30", ["BTC"]).ok
    alias = tmp_path / "alias"
    alias.mkdir()
    script = (
        'mount --bind "$0/_meta" "$1" && exec "$2" -m cryptolake sql "SELECT 1 AS x" --format csv '
        '--output "$1/x.csv" --lake "$0"'
    )
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            str(lake),
            str(alias),
            sys.executable,
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2 and "inside the lake" in result.stderr, result.stderr
    assert not (lake / "_meta" / "x.csv").exists()
