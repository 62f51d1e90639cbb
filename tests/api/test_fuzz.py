"""Fuzzing the API of a real daemon over its socket: never a 500, never a hang, never a crash.

Hypothesis draws requests for every route: JSON bodies and query strings made of the
arguments the routes read (with values of every JSON type, names, references and paths both
plausible and hostile) and of random keys, path parameters of any text (bytes that are not
UTF-8 included), then bytes that are not HTTP at all, bodies shorter or longer than their
Content-Length, clients that send one byte at a time, and clients that go away early. After
every answer: its status is below 500; after a 4xx, what a user could see is unchanged.
Every request has a deadline (a hang fails), and the daemon must serve the same pid at the
end, and have logged no traceback (checked when the module's daemon goes down).

Left out, on purpose: ``/shutdown`` (it stops the daemon, as it should), ``local=`` and
``url=`` sources (they read the host's files and the network: ``local=/dev/zero`` is a put
that never ends, by request), and exports (they write to the host). Waits get short
timeouts. In CI this runs in under a minute; ``PFSMOUNT_LONG_FUZZ=1`` runs 25 times as many
cases.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfsmount import Client
from tests.conftest import Pfsmount

SCALE = 25 if os.environ.get("PFSMOUNT_LONG_FUZZ") == "1" else 1
DEADLINE = 30.0  # seconds any one request may take before it counts as a hang
CASES = {"count": 0}
pytestmark = pytest.mark.timeout(300 * SCALE)

# (method, path template) of every route fuzzed ({x} is a path parameter), and the
# arguments it reads.
ROUTES: dict[tuple[str, str], list[str]] = {
    ("GET", "/status"): [], ("GET", "/fsck"): ["verify"], ("POST", "/gc"): ["dry_run", "wait"],
    ("POST", "/fsck/repair"): ["wait"], ("GET", "/repos"): [],
    ("POST", "/repos"): ["name", "description"], ("GET", "/repos/{name}"): [],
    ("DELETE", "/repos/{name}"): ["force"], ("GET", "/repos/{name}/branches"): [],
    ("POST", "/repos/{name}/branches"): ["branch", "head", "provenance"],
    ("DELETE", "/repos/{name}/branches/{branch}"): [],
    ("GET", "/repos/{name}/commits"): ["branch", "limit"],
    ("POST", "/commits/start"): ["repo", "branch", "parent", "description"],
    ("POST", "/commits/finish"): ["ref", "description"], ("GET", "/commits/inspect"): ["ref"],
    ("POST", "/commits/delete"): ["ref"], ("POST", "/commits/squash"): ["ref"],
    ("POST", "/commits/wait"): ["ref", "timeout"],
    ("POST", "/files/put"): ["ref", "path", "append"],
    ("GET", "/files/get"): ["ref", "path", "offset", "size"],
    ("GET", "/files/list"): ["ref", "path", "after", "limit"],
    ("GET", "/files/walk"): ["ref", "path"], ("GET", "/files/glob"): ["ref", "pattern"],
    ("GET", "/files/inspect"): ["ref", "path"], ("GET", "/files/diff"): ["new", "old"],
    ("POST", "/files/delete"): ["ref", "path", "recursive"],
    ("POST", "/files/copy"): ["src", "dst"],
    ("POST", "/pipelines"): ["spec", "update", "reprocess"], ("GET", "/pipelines"): [],
    ("GET", "/pipelines/{name}"): [], ("DELETE", "/pipelines/{name}"): [],
    ("POST", "/pipelines/{name}/stop"): [], ("POST", "/pipelines/{name}/start"): [],
    ("GET", "/jobs"): ["pipeline"], ("POST", "/jobs"): ["spec"], ("GET", "/jobs/{id}"): [],
    ("POST", "/jobs/{id}/stop"): [], ("POST", "/jobs/{id}/wait"): ["timeout"],
    ("GET", "/logs"): ["pipeline", "job", "datum", "follow"],
}
NEVER = {"local", "url", "dest"}  # host files, the network (see the docstring)
WAITS = {"timeout", "wait"}

REPO = "fz"
plausible = st.sampled_from([
    REPO, "fz@master", "fz/master", "fz@dev", "fz@master:/a", "fz@master:/d/b", "fz@master^",
    "fz@master~3", "fz/master/1", "fz@master/99:/a", "fz@dev/0^",
    "fz@master:/../x", "/a", "d", "d/b", "*", "/*", "master", "dev", "nope",
    "x" * 300, "é" * 200, "a/" * 300, "", " ", "..", "\0", "fz@" + "0" * 32, "-1", "1e999",
    "NaN", "true", '{"pipeline": {"name": "p"}}', "[" * 2000,
])
hostile = st.sampled_from([None, "", "abc", -1, 0, 2**64, float("nan"), float("inf"), True,
                           [], [5], ["x"], {}, {"a": None}, "0" * 32, "fz", "fz@master"])
scalars = st.one_of(hostile, st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    plausible)
values = st.one_of(hostile, plausible, st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12))
param_text = st.one_of(plausible, st.text(max_size=30),
                       st.binary(max_size=20).map(lambda b: b.decode("latin-1")))


def send(sock_path: Path, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
    """One request on a new connection; its status and body. The daemon may answer before
    it reads the body and close (an unknown repo): the answer is read all the same."""
    head = f"{method} {url} HTTP/1.1\r\nHost: pfsmount\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(DEADLINE)
        s.connect(str(sock_path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
        response = http.client.HTTPResponse(s, method=method)
        response.begin()
        return response.status, response.read()


def state(client: Client) -> object:
    """What a refused request must leave as it was."""
    repos = client.list_repos()
    return ([(r.name, r.description) for r in repos],
            {r.name: ([(b.name, b.head) for b in client.list_branches(r.name)],
                      [c.id for c in client.list_commits(r.name)]) for r in repos})


@pytest.fixture(scope="module")
def seeded(pfsd: Pfsmount, client: Client) -> Pfsmount:
    seed(client)
    return pfsd


def seed(client: Client) -> None:
    """A repo with files in directories, two commits and a second branch; made again if a
    fuzzed request deleted it (which a 2xx may do)."""
    if REPO in [r.name for r in client.list_repos()]:
        return
    client.create_repo(REPO)
    client.put_file(f"{REPO}@master:/a", b"alpha\n")
    first = client.put_file(f"{REPO}@master:/d/b", b"beta\n")
    client.create_branch(REPO, "dev", first.id)


def check(pfsd: Pfsmount, client: Client, method: str, url: str, body: bytes | None) -> None:
    """One request: under 500, within the deadline, and nothing changed by a 4xx."""
    CASES["count"] += 1
    before = state(client)
    started = time.monotonic()
    status, answer = send(pfsd.root / "pfsmount.sock", method, url, body)
    assert time.monotonic() - started < DEADLINE
    assert status < 500, f"{method} {url} {body!r:.300} -> {status} {answer!r:.300}"
    if 400 <= status < 500:
        assert state(client) == before, f"{method} {url} {body!r:.300} -> {status} changed"
    seed(client)


def fill(template: str, params: list[str]) -> str:
    for i, name in enumerate(("{name}", "{branch}", "{id}")):
        if name in template:
            raw = params[i].encode("utf-8", "surrogatepass")
            template = template.replace(name, quote(raw, safe="") or "x")
    return "/v1" + template


def tame(args: dict[str, Any]) -> dict[str, Any]:
    """No host sources, and waits that end."""
    args = {k: v for k, v in args.items() if k not in NEVER}
    for k in WAITS:
        if isinstance(args.get(k), int | float) or k not in args:
            args[k] = 0.2
    return args


FUZZ = settings(max_examples=250 * SCALE, deadline=None, derandomize=SCALE == 1,
                database=None, suppress_health_check=list(HealthCheck))
FEWER = settings(FUZZ, max_examples=120 * SCALE)


@FUZZ
@given(route=st.sampled_from(sorted(ROUTES)), params=st.lists(param_text, min_size=3,
                                                              max_size=3),
       as_query=st.booleans(), data=st.data())
def test_json_bodies_and_query_strings(seeded: Pfsmount, client: Client,
                                       route: tuple[str, str], params: list[str],
                                       as_query: bool, data: st.DataObject) -> None:
    method, template = route
    own = ROUTES[route]
    keys = st.one_of(*[st.sampled_from(own)] * 4, st.text(max_size=12)) if own else st.text(
        max_size=12)
    args = tame(data.draw(st.dictionaries(keys, values, min_size=bool(own), max_size=5),
                          label="args"))
    url = fill(template, params)
    body: bytes | None = None
    if method in ("GET", "DELETE") or (as_query and not own):
        text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in args.items()}
        url += "?" + urlencode({k.encode("utf-8", "surrogatepass"):
                                v.encode("utf-8", "surrogatepass") for k, v in text.items()})
    else:
        body = json.dumps(args).encode()  # ensure_ascii: lone surrogates go as \udXXX
    if template == "/files/put" and body is not None:
        url += "?" + urlencode({"ref": "fz@master", "path": "/up"})  # the body is the file
    check(seeded, client, method, url, body)


@FEWER
@given(route=st.sampled_from([r for r in sorted(ROUTES) if r[0] == "POST" and "{" not in r[1]]),
       body=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(
           lambda t: t.encode("utf-8", "surrogatepass")),
           st.sampled_from([b"[" * 50_000, b'{"a":' * 20_000, b"null", b"[]", b'""',
                            b'{"ref": "fz@master", "ref": 5}', b"\xef\xbb\xbf{}"])))
def test_bodies_that_are_not_json_objects(seeded: Pfsmount, client: Client,
                                          route: tuple[str, str], body: bytes) -> None:
    method, template = route
    url = "/v1" + template + ("?ref=fz@master&path=/up" if template == "/files/put" else "")
    check(seeded, client, method, url, body)


def exchange(sock_path: Path, data: bytes, *, pause: float = 0.0, close_early: bool = False,
             read: bool = True) -> bytes:
    """Send raw bytes (one at a time with ``pause``), maybe go away early, read the rest."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(DEADLINE)
        s.connect(str(sock_path))
        try:
            if pause:
                for i in range(len(data)):
                    s.send(data[i:i + 1])
                    time.sleep(pause)
            else:
                s.sendall(data)
            if close_early:
                return b""
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon refused early and closed: fine
        out = b""
        if read:
            try:
                while chunk := s.recv(65536):
                    out += chunk
            except ConnectionResetError:
                pass
        return out


def status_line_ok(answer: bytes) -> bool:
    """A 4xx, or 501 for a transfer coding HTTP/1.1 does not know (as RFC 9112 says)."""
    if not answer:
        return True  # closed without an answer: allowed for bytes that are not HTTP
    parts = answer.split(b" ", 2)
    return (len(parts) > 1 and parts[0].startswith(b"HTTP/")
            and (int(parts[1]) < 500 or int(parts[1]) == 501))


FRAMES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda m, p, h, b: m + b" " + p + b" HTTP/1.1\r\n" + h + b"\r\n" + b,
              st.sampled_from([b"GET", b"POST", b"DELETE", b"PUT", b"BREW", b"", b"G\x00T"]),
              st.sampled_from([b"/v1/status", b"/v1/repos", b"/v1/files/put?ref=fz@master"
                               b"&path=/f", b"/v1/%ff%fe", b"*", b"", b"/" * 3000]),
              st.lists(st.sampled_from([
                  b"Host: x\r\n", b"Content-Length: 10\r\n", b"Content-Length: -1\r\n",
                  b"Content-Length: 99999999999999999999\r\n", b"Content-Length: abc\r\n",
                  b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n",
                  b"Expect: 100-continue\r\n", b"Connection: close\r\n",
                  b"Content-Type: application/json\r\n", b"X: \xff\xfe\r\n", b"bad header\r\n",
                  b"X-Long: " + b"a" * 20_000 + b"\r\n"]), max_size=5).map(b"".join),
              st.binary(max_size=100)),
)


@FEWER
@given(data=FRAMES, close_early=st.booleans())
def test_malformed_framing(seeded: Pfsmount, client: Client, data: bytes,
                           close_early: bool) -> None:
    CASES["count"] += 1
    before = state(client)
    answer = exchange(seeded.root / "pfsmount.sock", data, close_early=close_early)
    assert status_line_ok(answer), (data[:200], answer[:300])
    if answer and b" 4" in answer[:13]:
        assert state(client) == before


def test_slow_clients_and_early_disconnects(seeded: Pfsmount, client: Client) -> None:
    """Several at once: a byte every 10 ms, bodies cut short, answers never read."""
    import threading

    sock_path = seeded.root / "pfsmount.sock"
    pid = seeded.pid()
    body = json.dumps({"name": "slowrepo"}).encode()
    request = (b"POST /v1/repos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
    errors: list[BaseException] = []

    def one(kind: int) -> None:
        try:
            if kind == 0:  # slow, whole: the repo is made
                answer = exchange(sock_path, request, pause=0.01)
                assert status_line_ok(answer), answer[:200]
            elif kind == 1:  # slow, then gone halfway through the body
                exchange(sock_path, request[: len(request) - 5], pause=0.005,
                         close_early=True)
            elif kind == 2:  # asks for a large file and never reads it
                exchange(sock_path, b"GET /v1/files/get?ref=fz@master&path=/big HTTP/1.1"
                         b"\r\nHost: x\r\n\r\n", read=False)
            else:  # headers never finished
                exchange(sock_path, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n",
                         close_early=True)
        except BaseException as e:
            errors.append(e)

    client.put_file(f"{REPO}@master:/big", bytes(8 << 20))  # far more than a socket holds
    rounds = 2 * SCALE
    for _ in range(rounds):
        threads = [threading.Thread(target=one, args=(i % 4,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE * 2)
        CASES["count"] += len(threads)
        assert not errors, errors
        assert seeded.pid() == pid
    started = time.monotonic()
    assert "slowrepo" in [r.name for r in client.list_repos()]
    assert time.monotonic() - started < 5  # the slow ones hold nobody else up


def test_the_daemon_is_the_same_after_all_cases(seeded: Pfsmount, client: Client) -> None:
    """Runs last in the module: every case above left the daemon serving, and how many
    cases ran (``-s`` shows it)."""
    seeded.check_fsck()
    assert client.inspect_file(f"{REPO}@master:/a").size == 6
    print(f"\nfuzz cases run: {CASES['count']}")
    assert CASES["count"] > 0
