"""Helpers shared by the benchmarks: a fake exchange in its own process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx

from cryptolake.testing.s3server import seaweedfs  # noqa: F401  (the benchmarks' S3 server)

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


@contextmanager
def counting_proxy(target_port: int) -> Iterator[tuple[int, list[int]]]:
    """A TCP proxy on a free loopback port to ``target_port``: yields its port and a one-item
    list holding the bytes sent back to clients so far (what a reader downloaded)."""
    import threading

    received = [0]
    lock = threading.Lock()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]

    def pump(src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if count:
                    with lock:
                        received[0] += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, True), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield port, received
    finally:
        listener.close()
