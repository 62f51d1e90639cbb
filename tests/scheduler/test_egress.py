"""Egress: after each successful job its output commit is copied to the spec's ``egress``
directory (``file://``), links below it never followed; other destinations are refused when
the pipeline is created, ``s3://`` saying why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pfsmount.errors import InvalidArgument
from scheduler.spec import parse_specs
from tests.scheduler.conftest import Pfsd

BASE = {"pipeline": {"name": "out"}, "transform": {"cmd": ["true"]},
        "input": {"pfs": {"repo": "data"}}}


def test_egress_destinations_are_read_as_pachyderm_writes_them() -> None:
    for egress in ({"URL": "file:///srv/results"},
                   {"objectStorage": {"url": "file:///srv/results"}}):
        assert parse_specs(json.dumps({**BASE, "egress": egress}))[0].egress == \
            "file:///srv/results"
    wrong = {"s3://bucket/dir": r"s3:// egress is not yet supported by pfsmount \(it needs "
                                r"the S3 backend\)",
             "file://host/dir": "must be file:///absolute/dir",
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
