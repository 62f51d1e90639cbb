"""Limits and policies of a 2.x spec, as a user meets them: ``datum_timeout`` and
``job_timeout`` kill a datum's whole process tree (in the sandbox and in Docker) and fail as
Pachyderm documents; ``reprocess_spec``, ``salt``, ``transform.err_cmd``/``err_stdin``;
fields taken as no-ops, and fields refused by name.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.scheduler.conftest import IMAGE, Pfsd


def survivors(marker: str) -> list[str]:
    """Processes on this machine whose command line holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(proc.name + ": " + cmdline.replace(b"\0", b" ").decode())
    return found


def no_survivors(marker: str) -> None:
    """Within a few seconds (a container is torn down by its engine), none is left."""
    deadline = time.monotonic() + 10
    while (left := survivors(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left


def transformed(spec: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``spec`` with more ``transform`` fields."""
    return {**spec, "transform": {**spec["transform"], **fields}}


def tree_of_sleepers(marker: str) -> str:
    """A shell that starts two background shells, each sleeping, then sleeps itself: a
    process tree whose every member names ``marker``."""
    return (f"sh -c 'sleep 1000; : {marker}' &\n"
            f"sh -c 'sleep 1000; : {marker}' &\n"
            f"echo started; sh -c 'sleep 1000; : {marker}'")


@pytest.mark.parametrize("runner", ["sandbox", "docker"])
def test_datum_timeout_kills_the_process_tree_and_retries(pfsd: Pfsd, runner: str,
                                                          request: pytest.FixtureRequest
                                                          ) -> None:
    extra = {}
    if runner == "docker":
        request.getfixturevalue("docker_ready")
        extra["image"] = IMAGE
    repo, name = f"dto_in_{runner}", f"dto_{runner}"
    marker = f"pfsmark{uuid.uuid4().hex[:12]}"
    pfsd.repos(repo)
    pfsd.put(repo, {"a": "1\n"})
    start = time.monotonic()
    pfsd.create(pfsd.spec(name, tree_of_sleepers(marker), pfsd.pin(repo), datum_tries=2,
                          datum_timeout="1s", **extra))
    line = pfsd.fails("commit", "wait", f"{repo}@master", "--timeout", "60")
    assert f"pipeline {name} job" in line and "failed after 2 tries (timed out)" in line, line
    assert time.monotonic() - start >= 2  # both tries ran their full second
    no_survivors(marker)
    job = pfsd.quick_job(name)
    assert job["state"] == "failure" and job["failed"] == 1, job
    log = pfsd.ok("logs", "-p", name, "--job", job["id"])
    assert log.count("started") == 2 and log.count("[pfsmount] datum timed out") == 2, log


def test_job_timeout_kills_the_job(pfsd: Pfsd) -> None:
    marker = f"pfsmark{uuid.uuid4().hex[:12]}"
    pfsd.repos("jto_in")
    pfsd.put("jto_in", {"fast": "", "slow1": "", "slow2": ""})
    start = time.monotonic()  # the job may start before create returns
    pfsd.create(pfsd.spec(
        "jto", f'case "$(ls /pfs/jto_in)" in slow*) {tree_of_sleepers(marker)};; esac\n'
               "ls /pfs/jto_in > /pfs/out/$(ls /pfs/jto_in)", pfsd.pin("jto_in"),
        job_timeout="3s", datum_tries=1))
    line = pfsd.fails("commit", "wait", "jto_in@master", "--timeout", "60")
    took = time.monotonic() - start
    assert "job timed out: it ran past its job_timeout of 3s with 1 of 3 datums done" \
        in line, line
    assert 3 <= took < 30, took
    no_survivors(marker)
    job = pfsd.quick_job("jto")
    assert job["state"] == "failure" and job["output"] is None, job
    assert pfsd.head("jto") is None  # the output branch did not move


def test_reprocess_spec_every_job_and_until_success(pfsd: Pfsd) -> None:
    pfsd.repos("rps_in")
    pfsd.put("rps_in", {"a": "1\n"})
    pfsd.create(
        pfsd.spec("rps_until", "cp -r /pfs/rps_in/* /pfs/out/", pfsd.pin("rps_in")),
        pfsd.spec("rps_every", "cp -r /pfs/rps_in/* /pfs/out/", pfsd.pin("rps_in"),
                  reprocess_spec="every_job"))
    pfsd.wait("rps_in@master")
    pfsd.put("rps_in", {"b": "2\n"})
    pfsd.wait("rps_in@master")
    until, every = pfsd.quick_job("rps_until"), pfsd.quick_job("rps_every")
    assert (until["processed"], until["skipped"]) == (1, 1), until
    assert (every["processed"], every["skipped"]) == (2, 0), every
    assert pfsd.tree("rps_every") == pfsd.tree("rps_until") == {"a": b"1\n", "b": b"2\n"}
    assert pfsd.json("pipeline", "inspect", "rps_every")["spec"]["reprocess_spec"] == \
        "every_job"
    pfsd.fails("pipeline", "create", "-f", pfsd.spec_file(pfsd.spec(
        "rps_bad", "true", pfsd.pin("rps_in"), reprocess_spec="sometimes")),
        match="spec field reprocess_spec 'sometimes' must be until_success or every_job")


def test_a_new_salt_reprocesses_every_datum(pfsd: Pfsd) -> None:
    pfsd.repos("salt_in")
    pfsd.put("salt_in", {"a": "1\n", "b": "2\n"})
    spec = pfsd.spec("salty", "cp -r /pfs/salt_in/* /pfs/out/", pfsd.pin("salt_in"),
                     salt="one")
    pfsd.create(spec)
    pfsd.wait("salt_in@master")
    assert pfsd.quick_job("salty")["processed"] == 2

    def update(**changes: str) -> dict[str, int]:
        pfsd.ok("pipeline", "update", "-f", pfsd.spec_file({**spec, **changes}))
        pfsd.wait("salt_in@master")
        job = pfsd.quick_job("salty")
        assert job["state"] == "success", job
        return {k: job[k] for k in ("processed", "skipped")}

    assert update(description="same salt") == {"processed": 0, "skipped": 2}
    assert update(salt="two") == {"processed": 2, "skipped": 0}
    assert pfsd.tree("salty") == {"a": b"1\n", "b": b"2\n"}


def test_err_cmd_recovers_failed_datums(pfsd: Pfsd) -> None:
    """Pachyderm: "If the err_cmd is successful and returns 0 error code, it does not
    prevent the job from succeeding": the failed datum writes nothing, the rest do."""
    pfsd.repos("err_in")
    pfsd.put("err_in", {"good": "ok\n", "bad": "no\n"})
    work = ("f=$(ls /pfs/err_in); cp /pfs/err_in/$f /pfs/out/; "
            '[ "$f" != bad ] || { echo "cannot read $f"; exit 3; }')
    pfsd.create(
        transformed(pfsd.spec("err_ok", work, pfsd.pin("err_in"), datum_tries=2),
                    err_cmd=["sh"], err_stdin=['echo "handled $(ls /pfs/err_in)"']),
        transformed(pfsd.spec("err_no", work, pfsd.pin("err_in"), datum_tries=1),
                    err_cmd=["sh", "-c", "exit 1"]))
    line = pfsd.fails("commit", "wait", "err_in@master", "--timeout", "60")
    assert "pipeline err_no job" in line and "err_ok" not in line, line
    ok = pfsd.quick_job("err_ok")
    assert (ok["state"], ok["processed"], ok["failed"], ok["recovered"]) == \
        ("success", 1, 0, 1), ok
    assert pfsd.tree("err_ok") == {"good": b"ok\n"}  # a recovered datum has no output
    assert "1 run, 0 skipped, 0 failed, 1 recovered / 2" in pfsd.ok("job", "list", "-p",
                                                                    "err_ok")
    log = pfsd.ok("logs", "-p", "err_ok", "--job", ok["id"])
    assert log.count("cannot read bad") == 2 and "handled bad" in log, log
    assert "err_cmd exit code 0: datum recovered" in log, log
    no = pfsd.quick_job("err_no")
    assert (no["state"], no["failed"], no["recovered"]) == ("failure", 1, 0), no
    pfsd.fails("pipeline", "create", "-f", pfsd.spec_file(transformed(pfsd.spec(
        "err_bad", "true", pfsd.pin("err_in")), err_stdin=["x"])),
        match="spec field transform.err_stdin needs transform.err_cmd")


def test_no_op_fields_are_taken_and_unknown_ones_refused_by_name(pfsd: Pfsd) -> None:
    pfsd.repos("noop_in")
    pfsd.put("noop_in", {"a": "1\n"})
    pfsd.create(pfsd.spec(
        "noop", "cp /pfs/noop_in/* /pfs/out/", pfsd.pin("noop_in"), autoscaling=True,
        resource_requests={"cpu": 1, "memory": "1G"}, sidecarResourceLimits={"cpu": 1},
        metadata={"labels": {"team": "a"}}))
    pfsd.wait("noop_in@master")
    assert pfsd.tree("noop") == {"a": b"1\n"}
    for field, value, named in (("pod_patch", "[]", "pod_patch"),
                                ("resource_limits", {"memory": "1G"}, "resource_limits"),
                                ("s3_out", True, "s3_out"),
                                ("made_up_field", 1, "made_up_field")):
        pfsd.fails("pipeline", "create", "-f", pfsd.spec_file(pfsd.spec(
            "refused", "true", pfsd.pin("noop_in"), **{field: value})),
            match=f"spec field {named} is not supported by pfsmount")
    pfsd.fails("pipeline", "create", "-f", pfsd.spec_file(transformed(pfsd.spec(
        "refused", "true", pfsd.pin("noop_in")), secrets=[])),
        match="spec field transform.secrets is not supported by pfsmount")
    assert "refused" not in pfsd.ok("pipeline", "list")
