"""Egress: after each successful job its output commit is copied to the spec's ``egress``:
a directory (``file://``, links below it never followed) or a bucket (``s3://``, against a
real SeaweedFS server); the job is ``egressing`` until the copy is done, so ``commit wait``
returns after it, and a copy that fails fails the job. Other destinations are refused when
the pipeline is created.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

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
