"""The daemon stays up, and answers 4xx, whatever a client sends or however it goes away.

Requests go over the daemon's real Unix socket as raw bytes, so that framing a well-behaved
client would never produce (a body shorter than its Content-Length, a half-closed socket)
reaches the server. After each, the daemon must still answer, and its state be unchanged.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from pfsmount import Client
from tests.conftest import Pfsmount


def raw(sock_path: Path, data: bytes, *, read: bool = True, timeout: float = 30) -> bytes:
    """Send ``data`` on a new connection, half-close it, and read the answer whole."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        if not read:
            return b""
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: pfsmount\r\nConnection: close\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    head += "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def call(sock_path: Path, method: str, path: str, value: object) -> tuple[int, dict]:
    answer = raw(sock_path, request(method, path, json.dumps(value).encode(),
                                    content_type="application/json"))
    return status_of(answer), json.loads(answer.partition(b"\r\n\r\n")[2] or b"{}")


def truncated_then_gone(sock_path: Path, path: str) -> None:
    """Headers promising 1000 bytes, 8 of them, then a disconnect."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  "Content-Length: 1000\r\n\r\n".encode() + b'{"name":')
        time.sleep(0.05)


def test_bodies_shorter_than_their_length_then_a_disconnect_never_stop_the_daemon(
        pfsd: Pfsmount, client: Client) -> None:
    client.create_repo("short")
    sock_path = pfsd.root / "pfsmount.sock"
    pid = pfsd.pid()
    for _ in range(6):  # ten at once killed the daemon about 3 runs in 5
        threads = [threading.Thread(target=truncated_then_gone, args=(sock_path, path))
                   for path in ["/v1/repos", "/v1/files/put?ref=short@master&path=/f"] * 5]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        time.sleep(0.1)
        assert pfsd.pid() == pid, pfsd.log_tail()
    time.sleep(0.5)
    assert pfsd.pid() == pid, pfsd.log_tail()
    assert [r.name for r in client.list_repos()] == ["short"]
    assert client.list_commits("short") == []


def test_malformed_framing_is_refused_and_the_daemon_serves_on(
        pfsd: Pfsmount, client: Client) -> None:
    sock_path = pfsd.root / "pfsmount.sock"
    pid = pfsd.pid()
    garbage = [
        b"\x00\xff\xfe garbage \r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/repos HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/repos HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /v1/repos HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /v1/status HTTP/1.1\r\n" + b"X-Long: " + b"a" * 100_000 + b"\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nHost: x\r\n",  # headers never end, then EOF
        b"",
    ]
    for data in garbage:
        answer = raw(sock_path, data)
        assert answer == b"" or 400 <= status_of(answer) < 500, (data[:40], answer[:200])
    assert pfsd.pid() == pid
    assert client.list_repos() is not None
