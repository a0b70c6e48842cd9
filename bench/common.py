"""Helpers shared by the benchmarks: a fake exchange in its own process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

NOW = "2026-01-01T00:30:00Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def fake_exchange(
    latency_ms: float,
    weight_limit: int = 6000,
    window_s: int = 60,
    extra_symbols: int = 0,
    chaos: float = 0.0,
    chaos_seed: int = 0,
    ban_grace: int = 0,
    cache_rows: int = 0,
    now: str = NOW,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    """Run `cryptolake fake-exchange` in a subprocess (frozen at ``now``); yield its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cryptolake",
            "fake-exchange",
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
            "--weight-limit",
            str(weight_limit),
            "--weight-window-s",
            str(window_s),
            "--now",
            now,
            "--frozen",
            "--extra-symbols",
            str(extra_symbols),
            "--chaos",
            str(chaos),
            "--chaos-seed",
            str(chaos_seed),
            "--ban-grace",
            str(ban_grace),
            "--cache-rows",
            str(cache_rows),
            *extra_args,
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                httpx.get(f"{url}/fake/stats")  # not /fake/reset: it would clear the chaos
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait()


def fake_stats(url: str) -> dict:
    return httpx.get(f"{url}/fake/stats").json()
