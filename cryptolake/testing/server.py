"""The fake exchange's HTTP server (``http.server``) and the ``cryptolake fake-exchange`` entry point."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptolake.testing.exchange import FakeExchange
from cryptolake.testing.faults import DEFAULT_CHAOS_KINDS

# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    exchange: Any  # a fake (FakeExchange, FakeVenue): its _dispatch, _lock and _connections

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up early (timeouts, tests) are normal here: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP/1.1 keep-alive adapter around :meth:`FakeExchange._dispatch`."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeBinance/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300
    server: _Server

    def setup(self) -> None:
        super().setup()
        exchange = self.server.exchange
        with exchange._lock:
            exchange._connections.add(self.connection)

    def finish(self) -> None:
        exchange = self.server.exchange
        with exchange._lock:
            exchange._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve("HEAD")

    def _serve(self, method: str) -> None:
        if method == "GET" and self.headers.get("Upgrade", "").lower() == "websocket":
            self._serve_stream()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        exchange = self.server.exchange
        if hasattr(exchange, "client_ip"):
            exchange.client_ip.value = self.client_address[0]  # Binance keys weight by IP
        reply = exchange._dispatch(method, self.path, self.headers, body)
        if reply.drop:
            self.close_connection = True
            return
        if reply.delay_s > 0:
            time.sleep(reply.delay_s)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(reply.body)  # one sendall, whatever the size (archive zips: MBs)
        except OSError:  # the client went away (e.g. it timed out during latency)
            self.close_connection = True

    def _serve_stream(self) -> None:
        """A WebSocket upgrade: Binance's kline streams (:mod:`~cryptolake.testing.binance_stream`)."""
        from urllib.parse import parse_qsl, urlsplit

        from cryptolake.testing import binance_stream

        split = urlsplit(self.path)
        hub = getattr(self.server.exchange, "streams", None)
        key = self.headers.get("Sec-WebSocket-Key")
        self.close_connection = True
        if hub is None or key is None or not binance_stream.is_stream_path(split.path):
            self.send_error(404)
            return
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", binance_stream.accept_key(key))
        self.end_headers()
        self.wfile.flush()
        binance_stream.run_session(hub, self.connection, split.path, dict(parse_qsl(split.query)))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence the per-request stderr log."""


def serve(*, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Run a :class:`FakeExchange` in the foreground until SIGINT/SIGTERM.

    ``options`` go to :class:`FakeExchange`, except ``chaos_rate``, ``chaos_seed`` and
    ``chaos_kinds``, which go to :meth:`FakeExchange.set_chaos` (rate 0 or None: no chaos);
    ``follow_wall_clock`` defaults to True here so the exchange's time advances like a real
    one. Prints one line with the base URL (and, with chaos, a second one describing it).
    """
    chaos_rate = float(options.pop("chaos_rate", None) or 0.0)
    chaos_seed = int(options.pop("chaos_seed", None) or 0)
    chaos_kinds = options.pop("chaos_kinds", None) or DEFAULT_CHAOS_KINDS
    if isinstance(chaos_kinds, str):
        chaos_kinds = [kind.strip() for kind in chaos_kinds.split(",") if kind.strip()]
    chaos_kinds = tuple(dict.fromkeys(chaos_kinds))
    options.setdefault("follow_wall_clock", True)
    exchange = FakeExchange(host=host, port=port, **options)
    exchange.set_chaos(chaos_rate, kinds=chaos_kinds, seed=chaos_seed)  # bad values raise here
    lines = ["Fake Binance exchange listening on {url}"]
    if chaos_rate > 0:
        lines.append(
            f"Chaos: {chaos_rate * 100:g}% of /api/v3/klines requests fail "
            f"({', '.join(chaos_kinds)}; seed {chaos_seed})"
        )
    serve_until_stopped(exchange, lines)


def serve_until_stopped(fake: Any, lines: list[str]) -> None:
    """Serve ``fake`` (a started-on-enter fake exchange) in the foreground until SIGINT or
    SIGTERM, printing ``lines`` once it listens (``{url}`` in them is its base URL)."""
    stopping = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stopping.set())
    try:
        with fake:
            for line in lines:
                print(line.replace("{url}", fake.base_url), flush=True)
            while not stopping.wait(0.2):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
