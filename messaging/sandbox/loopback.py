"""What the HTTP fakes (Hive, RockBLOCK, Twilio) share: a threaded HTTP/1.1 server on loopback with keep-alive,
started, stopped and restarted on the same port the same way, and every open connection cut on stop (so a
client with a pooled connection sees the service as gone, as it would a real outage)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackServer(ThreadingHTTPServer):
    """A thread per connection; a listen backlog that takes the connections of many pooled client threads at once
    (the standard 5 resets some of them when a sender and its acks all connect together)."""

    request_queue_size = 128
    daemon_threads = True


class KeepAliveHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, as the real services answer; ``fake`` is the service the request is for."""

    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # headers and body leave in one segment (no Nagle/delayed-ACK stalls)
    timeout = 60  # idle keep-alive connections are closed after this

    @property
    def fake(self) -> Any:
        return self.server.fake  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        self.fake._connected(self.connection)

    def finish(self) -> None:
        self.fake._disconnected(self.connection)
        super().finish()


class LoopbackService:
    """``start``/``stop``/``with``/``port`` for a fake HTTP service. A subclass names its ``_handler``, calls
    ``_init_service`` in its ``__init__`` (after making ``self._cond``, which also guards its own state), and may
    run loops beside the server (``_background``) and wake them on stop (``_on_stop``)."""

    _cond: threading.Condition

    def _handler(self) -> type[KeepAliveHandler]:
        """The request handler class (a method: it is usually defined below the service in its module)."""
        raise NotImplementedError

    def _init_service(self, host: str, port: int) -> None:
        self._host, self._requested_port = host, port
        self._server: LoopbackServer | None = None
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()  # connections open now (cut on stop)
        self.connections_opened = 0  # connections clients made (a pooled client makes one per thread)

    def _background(self) -> list[Callable[[], None]]:
        """Loops to run in threads of their own while the service is up (e.g. pushing to a webhook)."""
        return []

    def _on_stop(self) -> None:
        """Called first on stop: end what waits inside requests or background loops."""

    def start(self) -> Self:
        server = LoopbackServer((self._host, self._requested_port), self._handler())
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._requested_port = server.server_address[1]  # a restart comes back on the same port
        self._threads = [
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True),
            *(threading.Thread(target=loop, daemon=True) for loop in self._background()),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection, so clients see the service as gone."""
        if self._server is None:
            return
        self._on_stop()
        self._server.shutdown()
        self._server.server_close()
        with self._cond:
            for conn in list(self._open):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The listening port (kept across stop/start, so a restarted fake is found again)."""
        if not self._requested_port:
            raise RuntimeError(f"{type(self).__name__} has never been started")
        return self._requested_port

    def _connected(self, conn: socket.socket) -> None:
        with self._cond:
            self._open.add(conn)
            self.connections_opened += 1

    def _disconnected(self, conn: socket.socket) -> None:
        with self._cond:
            self._open.discard(conn)
