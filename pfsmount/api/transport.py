"""HTTP/1.1 over the daemon's Unix socket with the standard library, for ``Client``.

Owns connections (a small keep-alive pool, safe to share between threads), how a request's
arguments become a URL and a body, and which failures mean "no daemon here". It knows
nothing of routes or of the model. It exists so that a CLI command pays for ``http.client``
(about 15 ms to import) and not for an HTTP library (httpx is over 50 ms, and brings rich,
click and pygments along for its own command line).
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import msgspec

from pfsmount.errors import InvalidArgument

# The daemon is not there (no socket, nobody listening), or went away mid-request (killed,
# crashed, closed the connection without an answer), or is not ours to talk to (a socket of
# another user: EACCES, or a connection it refused and closed).
GONE: tuple[type[BaseException], ...] = (ConnectionError, FileNotFoundError, PermissionError,
                                          http.client.HTTPException)

# The daemon's server closes a connection idle for 5 s (hypercorn's keep-alive timeout). A
# kept connection is reused only well before that, so that a request never races the close.
IDLE_REUSE = 2.0
# Requests safe to send again on a new connection when a kept one was dropped unanswered.
IDEMPOTENT = frozenset({"GET", "HEAD"})


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("pfsmount", timeout=timeout)
        self.socket_path = path
        self.idle_since = 0.0  # when it was last given back to the pool

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def stale(self) -> bool:
        """An idle kept-alive connection the daemon has closed (it reads as readable)."""
        if self.sock is None:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class Response:
    """One answer: its status, and its body read whole (``content``) or as it arrives."""

    def __init__(self, raw: http.client.HTTPResponse) -> None:
        self.raw = raw
        self.status_code = raw.status
        self._content: bytes | None = None

    @property
    def content(self) -> bytes:
        if self._content is None:
            self._content = self.raw.read()
        return self._content

    def read(self) -> bytes:
        return self.content

    def iter_bytes(self, size: int = 1 << 20) -> Iterator[bytes]:
        while piece := self.raw.read(size):
            yield piece

    def iter_lines(self) -> Iterator[bytes]:
        while line := self.raw.readline():
            yield line.rstrip(b"\r\n")


class Transport:
    """Requests to ``/v1/...`` of the daemon listening on ``socket_path``."""

    def __init__(self, socket_path: str, prefix: str, timeout: float | None) -> None:
        self.socket_path = socket_path
        self.prefix = prefix
        self.timeout = timeout
        self._idle: list[_UnixConnection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self, fresh: bool) -> _UnixConnection:
        conn = None
        if not fresh:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
        if conn is None:
            return _UnixConnection(self.socket_path, self.timeout)
        if time.monotonic() - conn.idle_since > IDLE_REUSE or conn.stale():
            conn.close()  # it reconnects by itself on the next request
        return conn

    def _give_back(self, conn: _UnixConnection, response: http.client.HTTPResponse) -> None:
        if response.isclosed() and conn.sock is not None:
            conn.idle_since = time.monotonic()
            with self._lock:
                self._idle.append(conn)
        else:  # not read to its end, or the daemon said it closes: not reusable
            conn.close()

    @contextmanager
    def stream(self, method: str, path: str, *, params: dict[str, Any] | None = None,
               json: Any = None, content: bytes | Iterable[bytes] | None = None,
               fresh: bool = False) -> Iterator[Response]:
        """Send a request and yield its answer while the body is still unread.

        ``fresh`` uses a new connection, for a request that must not be sent twice over
        one the daemon may be closing.
        """
        url = self.prefix + path
        headers = {}
        body: bytes | Iterable[bytes] | None = content
        try:
            url.encode()
            if params:
                url += "?" + urlencode({k: "" if v is None else v for k, v in params.items()})
            if json is not None:
                body = msgspec.json.encode(json)
                headers["Content-Type"] = "application/json"
        except UnicodeEncodeError as e:  # a name from the file system that is not UTF-8
            text = e.object if isinstance(e.object, str) else str(e.object)
            shown = repr(text.encode(errors="surrogateescape"))[1:]
            raise InvalidArgument(f"{shown} is not valid UTF-8") from None
        if json is None and content is None and method in ("POST", "PUT"):
            body = b""
        conn = self._take(fresh)
        reused = conn.sock is not None
        try:
            raw = self._send(conn, method, url, body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            conn.close()
            if not (reused and method in IDEMPOTENT):
                raise
            # A kept connection the daemon closed as we sent: nothing was done; ask anew.
            conn = self._take(fresh=True)
            try:
                raw = self._send(conn, method, url, body, headers)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        try:
            yield Response(raw)
        except BaseException:
            conn.close()
            raise
        self._give_back(conn, raw)

    @staticmethod
    def _send(conn: _UnixConnection, method: str, url: str,
              body: bytes | Iterable[bytes] | None, headers: dict[str, str]
              ) -> http.client.HTTPResponse:
        try:
            conn.request(method, url, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            # The daemon may refuse a request (an unknown repo) before it reads the whole
            # body and then close: its answer is in the socket already.
            if conn.sock is None:
                raise
        return conn.getresponse()

    def request(self, method: str, path: str, **kw: Any) -> Response:
        """Send a request and read its whole answer."""
        with self.stream(method, path, **kw) as response:
            response.read()
            return response
