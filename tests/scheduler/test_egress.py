"""Egress: after each successful job its output commit is copied to the spec's ``egress``:
a directory (``file://``, links below it never followed) or a bucket (``s3://``, against a
real SeaweedFS server); the job is ``egressing`` until the copy is done, so ``commit wait``
returns after it, a copy that fails fails the job, and a daemon killed mid-copy copies again
when it restarts, without running the job again. Other destinations are refused when
the pipeline is created.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pfsmount.api.pipeline_client import PipelineClient
from pfsmount.errors import InvalidArgument
from pfsmount.store.s3 import S3ObjectStore
from scheduler.spec import parse_specs
from tests.s3 import SeaweedS3, free_ports
from tests.scheduler.conftest import Pfsd, serving

BASE = {"pipeline": {"name": "out"}, "transform": {"cmd": ["true"]},
        "input": {"pfs": {"repo": "data"}}}


@pytest.fixture(scope="module")
def pfsd(s3_server: SeaweedS3) -> Iterator[Pfsd]:
    """The module's daemon, started with the test S3 server's endpoint and keys in its
    environment, as an operator exports ``AWS_*`` for it."""
    with pytest.MonkeyPatch.context() as mp:
        for var, value in s3_server.env().items():
            mp.setenv(var, value)
        with serving() as d:
            yield d


def objects(server: SeaweedS3, url: str) -> dict[str, bytes]:
    """Every object under ``url``'s prefix: key -> content, read back with the S3 backend."""
    store = S3ObjectStore(url, server.env())
    return {name: store.get_range(name, 0, store.size(name) or 0) for name in store.list()}


def test_egress_destinations_are_read_as_pachyderm_writes_them() -> None:
    for url in ("file:///srv/results", "s3://bucket/out", "s3://bucket?region=eu-west-1"):
        for egress in ({"URL": url}, {"objectStorage": {"url": url}}):
            assert parse_specs(json.dumps({**BASE, "egress": egress}))[0].egress == url
    wrong = {"s3:///dir": "an S3 URL names a bucket",
             "s3://bucket/dir?profile=x": "unknown setting 'profile'",
             "file://host/dir": "must be file:///absolute/dir or s3://BUCKET/PREFIX",
             "file:relative": "must be file:///absolute/dir",
             "gs://bucket": "must be file:///absolute/dir"}
    for url, message in wrong.items():
        with pytest.raises(InvalidArgument, match=message):
            parse_specs(json.dumps({**BASE, "egress": {"URL": url}}))
    with pytest.raises(InvalidArgument, match=r"egress\.sql_database is not supported"):
        parse_specs(json.dumps({**BASE, "egress": {"sqlDatabase": {"url": "x"}}}))


def test_each_successful_job_is_egressed_and_the_directory_shows_the_latest(
        pfsd: Pfsd, tmp_path: Path) -> None:
    target = tmp_path / "results"
    pfsd.repos("eg_in")
    pfsd.create(pfsd.spec("eg", "cp -r /pfs/eg_in/* /pfs/out/", pfsd.pin("eg_in"),
                          egress={"URL": f"file://{target}"}))
    pfsd.wait(f"eg_in@{pfsd.put('eg_in', {'a': 'one', 'sub/b': 'bee'})}")
    assert (target / "a").read_text() == "one" and (target / "sub/b").read_text() == "bee"

    pfsd.wait(f"eg_in@{pfsd.put('eg_in', {'a': 'two', 'c': 'sea'})}")
    assert (target / "a").read_text() == "two" and (target / "c").read_text() == "sea"
    assert pfsd.quick_job("eg")["state"] == "success"


def test_an_egress_that_cannot_write_fails_its_job_and_follows_no_link(
        pfsd: Pfsd, tmp_path: Path) -> None:
    target, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    target.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, target / "sub")  # a link planted where the output has a directory
    pfsd.repos("eg2_in")
    pfsd.create(pfsd.spec("eg2", "cp -r /pfs/eg2_in/* /pfs/out/", pfsd.pin("eg2_in"),
                          egress={"URL": f"file://{target}"}))
    commit = pfsd.put("eg2_in", {"sub/b": "bee"})
    err = pfsd.fails("commit", "wait", f"eg2_in@{commit}", "--timeout", "60")
    assert "egress" in err and "symbolic link" in err, err
    assert list(elsewhere.iterdir()) == []
    job = pfsd.quick_job("eg2")
    assert job["state"] == "failure" and job["error"].startswith("egress of eg2@"), job


def test_a_failed_egress_leaves_downstream_to_run_on_the_output_it_made(
        pfsd: Pfsd, tmp_path: Path) -> None:
    """Downstream does not wait for egress: it runs on the output commit, and the egress
    failing afterwards does not also make it ``unrunnable`` on the same inputs."""
    target = tmp_path / "t"
    target.write_text("a file where the directory would be")
    pfsd.repos("egd_in")
    pfsd.create(pfsd.spec("egd_up", "cp -r /pfs/egd_in/* /pfs/out/", pfsd.pin("egd_in"),
                          egress={"URL": f"file://{target}"}),
                pfsd.spec("egd_down", "cp -r /pfs/egd_up/* /pfs/out/", pfsd.pin("egd_up")))
    commit = pfsd.put("egd_in", {"a": "one"})
    err = pfsd.fails("commit", "wait", f"egd_in@{commit}", "--timeout", "60")
    up = pfsd.quick_job("egd_up")
    assert up["state"] == "failure" and up["error"].startswith("egress of egd_up@"), up
    assert f"pipeline egd_up job {up['id']} failure" in err and "egd_down" not in err, err
    assert [j["state"] for j in pfsd.jobs("egd_down")] == ["success"]
    assert pfsd.tree("egd_down") == {"a": b"one"}


def test_each_successful_job_is_egressed_to_s3_and_the_bucket_shows_the_latest(
        pfsd: Pfsd, s3_server: SeaweedS3) -> None:
    s3_server.make_bucket("egress-latest")
    url = "s3://egress-latest/results/run"
    pfsd.repos("s3_in")
    pfsd.create(pfsd.spec("s3eg", "cp -r /pfs/s3_in/* /pfs/out/", pfsd.pin("s3_in"),
                          egress={"URL": url}))
    pfsd.wait(f"s3_in@{pfsd.put('s3_in', {'a': 'one', 'sub/b': 'bee'})}")
    assert objects(s3_server, url) == {"a": b"one", "sub/b": b"bee"}

    pfsd.wait(f"s3_in@{pfsd.put('s3_in', {'a': 'two', 'c': 'sea'}, delete=('sub/b',))}")
    # The latest output, and what it no longer has left in place, as Pachyderm leaves it.
    assert objects(s3_server, url) == {"a": b"two", "c": b"sea", "sub/b": b"bee"}
    assert pfsd.tree("s3eg") == {"a": b"two", "c": b"sea"}
    assert pfsd.quick_job("s3eg")["state"] == "success"


def test_commit_wait_returns_once_the_objects_are_there(
        pfsd: Pfsd, s3_server: SeaweedS3) -> None:
    """A file above one part (5 MiB) goes as a multipart upload, streamed: it is whole in
    the bucket the moment ``commit wait`` returns, and the job says ``success`` by then."""
    s3_server.make_bucket("egress-wait")
    url = "s3://egress-wait/out"
    big = random.Random(13).randbytes(12 * 1024 * 1024 + 7)
    pfsd.repos("s3w_in")
    pfsd.create(pfsd.spec("s3w", "cp -r /pfs/s3w_in/* /pfs/out/", pfsd.pin("s3w_in"),
                          egress={"objectStorage": {"url": url}}))
    commit = pfsd.put("s3w_in", {"big.bin": big, "small": "s"})
    outputs = pfsd.cli_wait(f"s3w_in@{commit}")
    found = objects(s3_server, url)  # at once: nothing may still be on its way
    assert found.keys() == {"big.bin", "small"}
    assert found["big.bin"] == big and found["small"] == b"s"
    job = pfsd.quick_job("s3w")
    assert job["state"] == "success" and job["output"] == f"s3w@{outputs['s3w']}", job


def test_an_s3_server_that_is_down_fails_the_job_naming_it(pfsd: Pfsd) -> None:
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    url = f"s3://nowhere/out?endpoint={endpoint}"
    pfsd.repos("s3d_in")
    pfsd.create(pfsd.spec("s3d", "cp -r /pfs/s3d_in/* /pfs/out/", pfsd.pin("s3d_in"),
                          egress={"URL": url}))
    commit = pfsd.put("s3d_in", {"a": "one"})
    err = pfsd.fails("commit", "wait", f"s3d_in@{commit}", "--timeout", "60")
    job = pfsd.quick_job("s3d")
    assert job["state"] == "failure", job
    line = job["error"]
    assert "\n" not in line and line.startswith(f"egress of {job['output']} to {url} failed: "
                                                 f"cannot list objects in s3://nowhere/out at "
                                                 f"{endpoint}: the server does not answer"), line
    assert line in err, err
    # The output commit stays, as Pachyderm's does: only the copy failed.
    assert pfsd.head("s3d") == job["output"].split("@", 1)[1]
    assert pfsd.tree("s3d") == {"a": b"one"}


class Gate:
    """A TCP address in front of the S3 server that holds every connection unanswered until
    ``open`` is set, then forwards them: a server that hangs, then one that works, at one
    endpoint. ``delay``: each answer is held that long (a slow server)."""

    def __init__(self, target: int, delay: float = 0.0) -> None:
        self.target = target
        self.delay = delay
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.open = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            if not self.open.is_set():
                self.held.append(conn)
                continue
            up = socket.create_connection(("127.0.0.1", self.target))
            for a, b, delay in ((conn, up, 0.0), (up, conn, self.delay)):
                threading.Thread(target=self._pipe, args=(a, b, delay), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                time.sleep(delay)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def until_egressing(d: Pfsd, pipeline: str) -> dict[str, Any]:
    """The pipeline's job once it is ``egressing`` (it may not exist yet at first)."""
    deadline = time.monotonic() + 60
    while True:
        with d.api() as c:
            jobs = PipelineClient(c).jobs(pipeline)
        job: dict[str, Any] = msgspec.to_builtins(jobs[0]) if jobs else {"state": "none"}
        if job["state"] == "egressing":
            return job
        assert job["state"] in ("none", "created", "running"), job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_a_daemon_killed_while_egressing_copies_again_without_rerunning_the_job(
        s3_server: SeaweedS3) -> None:
    s3_server.make_bucket("egress-restart")
    gate = Gate(s3_server.s3_port)
    url = f"s3://egress-restart/out?endpoint=http://127.0.0.1:{gate.port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            for var, value in s3_server.env().items():
                mp.setenv(var, value)
            with serving("psrs") as d:
                d.repos("s3r_in")
                d.create(d.spec("s3r", "cp -r /pfs/s3r_in/* /pfs/out/", d.pin("s3r_in"),
                                egress={"URL": url}))
                commit = d.put("s3r_in", {"a": "one"})
                job = until_egressing(d, "s3r")
                output = job["output"].split("@", 1)[1]
                assert d.head("s3r") == output  # the output commit is there already
                d.kill9()
                gate.open.set()
                d.up()
                d.wait(f"s3r_in@{commit}")
                after = d.quick_job("s3r")
                assert (after["id"], after["state"]) == (job["id"], "success"), after
                assert (after["processed"], after["skipped"]) == (1, 0), after  # not rerun
                assert d.head("s3r") == output and len(d.jobs("s3r")) == 1
                assert objects(s3_server, "s3://egress-restart/out") == {"a": b"one"}
    finally:
        gate.close()


def test_job_stop_ends_an_egress_at_the_next_file(pfsd: Pfsd, s3_server: SeaweedS3) -> None:
    """A slow server: ``job stop`` does not wait for the rest of the copy. The job is
    ``killed`` with one line; its output commit stays."""
    s3_server.make_bucket("egress-stop")
    gate = Gate(s3_server.s3_port, delay=0.5)
    gate.open.set()
    url = f"s3://egress-stop/out?endpoint=http://127.0.0.1:{gate.port}"
    try:
        pfsd.repos("s3s_in")
        pfsd.create(pfsd.spec("s3s", "cp -r /pfs/s3s_in/* /pfs/out/", pfsd.pin("s3s_in", "/"),
                              egress={"URL": url}))
        pfsd.put("s3s_in", {f"f{i:02}": str(i) for i in range(40)})
        job = until_egressing(pfsd, "s3s")
        began = time.monotonic()
        pfsd.ok("job", "stop", job["id"])
        assert time.monotonic() - began < 10
        after = pfsd.quick_job("s3s")
        assert after["state"] == "killed", after
        assert after["error"] == f"stopped while egressing {job['output']} to {url}", after
        assert pfsd.head("s3s") == job["output"].split("@", 1)[1]
        assert len(objects(s3_server, "s3://egress-stop/out")) < 40
    finally:
        gate.close()
