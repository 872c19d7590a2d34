"""The stand-in as a listening HTTP/1.1 server: a ``ThreadingHTTPServer`` in a daemon thread.

It is a real TCP server, so a bot in another process (``mleg serve``) can be pointed at it,
and ``restart`` takes "Telegram" down and up again on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from tests.servers.botapi.dispatch import dispatch
from tests.servers.botapi.state import StandInState


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: Serving


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds
    # ~40 ms to every answer, which real Telegram does not (it would dominate benchmarks).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.standin._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.standin._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        try:
            body = self._read_body()
            status, payload, content_type = dispatch(
                self.server.standin, self.command, self.path, self.headers.get("Content-Type") or "", body
            )
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            if status == 200 and "/send" in self.path:
                self.server.standin._answer_lost()


class Serving(StandInState):
    """Start, stop and restart the server; the URLs a client is given."""

    _server: _Server | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        self._stopping = False
        server = _Server((self.host, self._port), _Handler)
        server.standin = self
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"botapi-standin:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Wake long polls, stop serving, close every open connection."""
        server = self._server
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._delivery_thread is not None:
            self._delivery_thread.join(timeout=5)
        self._server = None
        self._thread = None
        self._delivery_thread = None

    def restart(self, down_seconds: float = 0.0) -> Self:
        """"Telegram down": stop, stay down `down_seconds`, serve again on the SAME port.

        Chats, queued updates and records survive (as at Telegram, only the connection is
        gone); clients see refused connections while it is down.
        """
        port = self.port
        self.stop()
        time.sleep(down_seconds)
        self._port = port
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _answer_lost(self) -> None:
        with self._cond:
            self._answers_lost += 1

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("BotApiStandIn is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For PTB's ``base_url`` / MLEG_TELEGRAM__API_BASE_URL: the token is appended."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """For PTB's ``base_file_url``: the token is appended."""
        return f"{self.url}/file/bot"
