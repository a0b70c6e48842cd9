"""What every fake exchange shares as a server: bind, serve in a daemon thread, stop (closing
every open connection), and its address."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, Self


class Served:
    """Serving on ``(_host, _port)`` (port 0: the OS picks one) through the fake's ``_dispatch``;
    the subclass sets ``_host``, ``_port``, ``_lock``, ``_connections`` (the handler keeps it),
    ``_server = None`` and ``_thread = None``, and names its thread (:attr:`thread_prefix`)."""

    thread_prefix = "fake-exchange"
    _host: str
    _port: int
    _lock: threading.Lock
    _connections: set[socket.socket]
    _server: Any
    _thread: threading.Thread | None

    def start(self) -> Self:
        """Bind and serve in a daemon thread."""
        if self._server is not None:
            return self
        from cryptolake.testing.server import _Handler, _Server  # the HTTP layer sits above the fakes

        server = _Server((self._host, self._port), _Handler)
        server.exchange = self
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"{self.thread_prefix}-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._port}"
