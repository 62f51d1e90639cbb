"""``Client``'s connections to the daemon: kept alive between calls, shared by threads,
and telling "no daemon" apart from a daemon that answered."""

from __future__ import annotations

import threading
import time

import pytest

from pfsmount import Client
from pfsmount.errors import DaemonNotRunning, PfsError


def test_a_client_idle_longer_than_the_daemon_keeps_connections_still_works(
        client: Client) -> None:
    client.create_repo("idle")
    time.sleep(6)  # the daemon closes a kept-alive connection after 5 idle seconds
    assert [r.name for r in client.list_repos() if r.name == "idle"] == ["idle"]
    commit = client.put_file("idle@master:/f", b"after a pause")
    time.sleep(6)
    assert client.read_file(f"idle@{commit.id}:/f") == b"after a pause"


def test_one_client_serves_many_threads(client: Client) -> None:
    client.create_repo("threads")
    for i in range(8):
        client.put_file(f"threads@master:/f{i}", b"%d" % i * 1000)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(20):
                assert client.read_file(f"threads@master:/f{i}") == b"%d" % i * 1000
                assert [f.path for f in client.list_files("threads@master")][i] == f"/f{i}"
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []


def test_a_stream_left_unread_does_not_spoil_the_next_call(client: Client) -> None:
    client.create_repo("unread")
    client.put_file("unread@master:/big", bytes(8 << 20))
    pieces = client.get_file("unread@master:/big")
    assert len(next(pieces)) > 0
    pieces.close()  # the rest of the body is never read
    assert client.read_file("unread@master:/big") == bytes(8 << 20)
    assert client.inspect_file("unread@master:/big").size == 8 << 20


def test_a_daemon_that_goes_away_reads_as_not_running(fresh_pfsd) -> None:
    with Client(fresh_pfsd.root) as c:
        c.create_repo("gone")
        fresh_pfsd.down()
        with pytest.raises(DaemonNotRunning, match="pfsmount up"):
            c.list_repos()
        with pytest.raises(DaemonNotRunning):
            c.shutdown()
        fresh_pfsd.up()  # a new daemon on the same root: the same client talks to it
        assert [r.name for r in c.list_repos()] == ["gone"]


def test_a_timeout_is_one_error_not_a_hang(client: Client) -> None:
    client.create_repo("slow")
    client.start_commit("slow", "master")
    with Client(client.layout.root, timeout=0.5) as impatient:
        started = time.monotonic()
        with pytest.raises(PfsError, match=r"did not answer within 0\.5 s"):
            impatient.wait_commit("slow@master", timeout=30)
        assert time.monotonic() - started < 10
    client.finish_commit("slow@master")
