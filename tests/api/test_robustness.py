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

import pytest

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
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            # The server may close with our bytes unread (a refused 100 kB header), which a
            # Unix socket reports as a reset: a refusal, kept with whatever answer arrived.
            pass
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


def state(client: Client) -> object:
    """What a refused request must leave as it was."""
    return ([(r.name, r.description) for r in client.list_repos()],
            [c.id for r in client.list_repos() for c in client.list_commits(r.name)])


def refused(pfsd: Pfsmount, client: Client, method: str, path: str, body: bytes) -> str:
    """Send one request to a daemon holding a repo; it must be a 400 that changes nothing.
    Returns the error's message."""
    if "held" not in [r.name for r in client.list_repos()]:
        client.create_repo("held")
        client.put_file("held@master:/f", b"kept")
    before = state(client)
    answer = raw(pfsd.root / "pfsmount.sock", request(method, path, body,
                                                      content_type="application/json"))
    assert status_of(answer) == 400, answer[:300]
    assert state(client) == before
    message: str = json.loads(answer.partition(b"\r\n\r\n")[2])["message"]
    return message


def put(sock_path: Path, ref: str, path: str, data: bytes) -> bytes:
    from urllib.parse import urlencode
    return raw(sock_path, request("POST", "/v1/files/put?" + urlencode({"ref": ref,
                                                                          "path": path}), data))


BAD_REQUESTS: list[tuple[str, str, bytes]] = [
    ("POST", "/v1/repos", b'{"name": null}'),
    ("POST", "/v1/repos", b'{"name": 5}'),
    ("POST", "/v1/repos", b'{"name": "ok", "description": ["x"]}'),
    ("POST", "/v1/repos", json.dumps({"name": "x" * 300}).encode()),
    ("POST", "/v1/repos", b"[" * 100_000 + b"]" * 100_000),
    ("POST", "/v1/repos", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
    ("POST", "/v1/repos", b"not json"),
    ("POST", "/v1/commits/wait", b'{"ref": "held@master", "timeout": "abc"}'),
    ("POST", "/v1/commits/wait", b'{"ref": "held@master", "timeout": NaN}'),
    ("POST", "/v1/commits/start", b'{"repo": "held", "branch": "master", "description": 5}'),
    ("POST", "/v1/repos/held/branches", b'{"branch": "b", "provenance": [5]}'),
    ("GET", "/v1/logs?pipeline=", b""),
    ("GET", "/v1/files/inspect?ref=held@master&path=" + "/a" * 1000, b""),
    ("GET", "/v1/files/inspect?ref=held@master&path=/" + "n" * 256, b""),
    ("GET", "/v1/repos/held/commits?limit=many", b""),
    ("POST", "/v1/files/put?ref=held@master&path=/x%FF", b"not stored as x-replacement-char"),
    ("GET", "/v1/repos/held%FF", b""),
    ("POST", "/v1/pipelines", json.dumps({"spec": json.dumps({
        "pipeline": {"name": "q"}, "transform": {"cmd": ["true"], "accept_return_code": ["x"]},
        "input": {"pfs": {"repo": "held"}}})}).encode()),
]


UNDECLARED: list[tuple[str, str, bytes, str]] = [
    ("GET", "/v1/files/inspect?ref=held@master:/f&recursive=1", b"", "recursive"),
    ("DELETE", "/v1/repos/held?forse=1", b"", "forse"),
    ("POST", "/v1/repos", b'{"name": "n", "descripton": "typo"}', "descripton"),
    ("POST", "/v1/commits/start?repo=held", b'{"repo": "held"}', "repo"),  # not the query
    ("POST", "/v1/pipelines/none/stop", b'{"force": true}', "force"),  # a route of no args
    ("GET", "/v1/repos?all=1", b"", "all"),
]


@pytest.mark.parametrize(("method", "path", "body", "name"), UNDECLARED,
                         ids=[f"{m} {p[:40]} {b[:30]!r}" for m, p, b, _ in UNDECLARED])
def test_an_argument_a_route_does_not_declare_is_refused_by_name(
        pfsd: Pfsmount, client: Client, method: str, path: str, body: bytes,
        name: str) -> None:
    """Ignored, a misspelled or retired argument would do something else than was asked."""
    assert f"takes no argument {name!r}" in refused(pfsd, client, method, path, body)


def test_the_old_host_import_form_of_put_is_refused_pointing_to_import(
        pfsd: Pfsmount, client: Client, tmp_path: Path) -> None:
    """``/files/put?local=`` once read a path of the daemon's host; now it is
    ``/files/import``. Accepted, its empty body was stored as a 0-byte file."""
    client.create_repo("old")
    (tmp_path / "f").write_bytes(b"host bytes")
    answer = raw(pfsd.root / "pfsmount.sock", request(
        "POST", f"/v1/files/put?ref=old@master:/f&local={tmp_path / 'f'}"))
    assert status_of(answer) == 400, answer[:300]
    message = json.loads(answer.partition(b"\r\n\r\n")[2])["message"]
    assert "'local'" in message and "POST /v1/files/import" in message
    assert client.list_commits("old") == []


@pytest.mark.parametrize(("method", "path", "body"), BAD_REQUESTS,
                         ids=[f"{m} {p[:40]} {b[:30]!r}" for m, p, b in BAD_REQUESTS])
def test_malformed_arguments_are_a_400_and_change_nothing(
        pfsd: Pfsmount, client: Client, method: str, path: str, body: bytes) -> None:
    message = refused(pfsd, client, method, path, body)
    assert "internal" not in message and "\n" not in message


def test_names_longer_than_a_file_system_takes_are_refused_by_name(
        pfsd: Pfsmount, client: Client) -> None:
    client.create_repo("long")
    sock_path = pfsd.root / "pfsmount.sock"
    answer = put(sock_path, "long@master", "/" + "é" * 128, b"x")  # 256 bytes
    assert status_of(answer) == 400
    assert b"name_too_long" in answer and b"256 bytes long, at most 255" in answer
    answer = put(sock_path, "long@master", "/" + "é" * 127, b"x")  # 254 bytes: taken
    assert status_of(answer) == 200
    assert status_of(put(sock_path, "long@master", "/a" * 257, b"x")) == 400
    assert [f.path for f in client.walk_files("long@master")] == ["/" + "é" * 127]
    for what in ("repo", "branch"):
        r = pfsd.fails(*(("repo", "create", "r" * 300) if what == "repo" else
                         ("branch", "create", "long@" + "b" * 300)), code=2)
        assert "at most 128" in r.err


def test_bodies_and_descriptions_are_bounded_but_uploads_are_not(
        pfsd: Pfsmount, client: Client) -> None:
    sock_path = pfsd.root / "pfsmount.sock"
    before = state(client)
    huge = json.dumps({"name": "huge", "description": "x" * (32 << 20)}).encode()
    head = request("POST", "/v1/repos", b"", content_type="application/json")
    head = head.replace(b"Content-Length: 0", f"Content-Length: {len(huge)}".encode())
    with socket.socket(socket.AF_UNIX) as s:  # refused from its headers, unread
        s.settimeout(30)
        s.connect(str(sock_path))
        s.sendall(head)
        answer = b""
        while (chunk := s.recv(65536)) and b"at most" not in answer + chunk:
            answer += chunk  # the answer may come in pieces: headers, then body
        answer += chunk
    assert status_of(answer) == 413 and b"at most" in answer
    status, reply = call(sock_path, "POST", "/v1/repos",
                         {"name": "huge", "description": "x" * (2 << 20)})
    assert status == 413 and "description" in reply["message"]
    assert state(client) == before
    # An upload streams: far above the JSON limit, and stored whole.
    client.create_repo("upload")
    data = bytes(range(256)) * (80 << 12)  # 80 MiB
    client.put_file("upload@master:/big", data)
    assert client.inspect_file("upload@master:/big").size == len(data)


def test_put_r_of_a_name_that_is_not_utf8_is_refused_naming_it(
        pfsd: Pfsmount, client: Client, tmp_path: Path) -> None:
    client.create_repo("names")
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_bytes(b"fine")
    (src / "x\udcff").write_bytes(b"latin-1 name")  # the file system holds b"x\xff"
    r = pfsd.fails("file", "put", "-r", "names@master:/dir", "-f", src, code=2)
    assert r"x\xff" in r.err and "not valid UTF-8" in r.err
    assert client.list_commits("names") == []


def test_a_client_that_never_reads_its_answer_holds_up_neither_others_nor_down(
        fresh_pfsd: Pfsmount) -> None:
    with Client(fresh_pfsd.root) as c:
        c.create_repo("unread")
        c.put_file("unread@master:/big", bytes(16 << 20))  # far more than a socket holds
    sock_path = fresh_pfsd.root / "pfsmount.sock"
    stuck = socket.socket(socket.AF_UNIX)
    try:
        stuck.connect(str(sock_path))
        stuck.sendall(request("GET", "/v1/files/get?ref=unread@master&path=/big"))
        assert stuck.recv(100).startswith(b"HTTP/1.1 200")  # then reads no more
        time.sleep(1)
        started = time.monotonic()
        with Client(fresh_pfsd.root) as c:
            assert c.read_file("unread@master:/big") == bytes(16 << 20)
        assert time.monotonic() - started < 10
        fresh_pfsd.down()  # fails unless the daemon is gone within 15 s
    finally:
        stuck.close()
    fresh_pfsd.up()
