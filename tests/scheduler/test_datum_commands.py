"""``pfsmount datum list|inspect|restart`` and ``datum list -f`` (a dry run), through the
real command against a real daemon, mount and bubblewrap.

A pipeline fails on one of three datums because of something outside the datum (a file on
the host that the sandbox shows read-only: a "fixed program"); its downstream pipeline does
not run. ``datum list JOB`` must show each datum's state, time and output size; ``datum
inspect`` the failed one's log; ``datum restart`` must fail the same way until the cause is
fixed, then succeed, make the job's output commit (the branch moves, downstream runs) and
leave the job ``success``. A dry run lists the datums a spec would make and which an earlier
job already ran (Pachyderm skips unchanged datums), creating nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.scheduler.conftest import Pfsd


@pytest.fixture
def marker() -> Iterator[Path]:
    """A path on the host that datums see (the sandbox shows /usr read-only); absent."""
    path = Path(f"/usr/local/share/pfsmount-restart-{uuid.uuid4().hex[:8]}")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _failed_job(pfsd: Pfsd, marker: Path) -> str:
    """Pipeline dc (3 datums; boom fails until ``marker`` exists) and dc_down (reads dc
    whole), after dc's failed job: that job's id."""
    pfsd.repos("dc_in")
    pfsd.put("dc_in", {"a": "apple\n", "b": "banana!\n", "boom": "boom\n"})
    script = (f"for f in /pfs/in/*; do if grep -q boom $f && ! test -e {marker}; then "
              "echo not yet >&2; exit 3; fi; cp $f /pfs/out/; done")
    pfsd.create(pfsd.spec("dc", script, {"pfs": {"repo": "dc_in", "glob": "/*", "name": "in"}},
                          datum_tries=1),
                pfsd.spec("dc_down", "cat /pfs/dc/* > /pfs/out/all", pfsd.pin("dc", "/")))
    pfsd.fails("commit", "wait", "dc_in@master", "--timeout", "90", match="dc")
    job = pfsd.quick_job("dc")
    assert job["state"] == "failure", job
    return str(job["id"])


def test_list_inspect_and_restart_a_failed_datum(pfsd: Pfsd, marker: Path) -> None:
    job = _failed_job(pfsd, marker)
    rows = pfsd.json("datum", "list", job)
    assert pfsd.json("datum", "list", f"dc@{job}") == rows  # Pachyderm's spelling
    assert [r["id"] for r in pfsd.json("datum", "list", "dc")] == [r["id"] for r in rows]
    by_input = {r["files"][0].rsplit(":", 1)[1]: r for r in rows}
    assert sorted(by_input) == ["/a", "/b", "/boom"]
    assert {k: r["state"] for k, r in by_input.items()} == {
        "/a": "success", "/b": "success", "/boom": "failed"}
    assert by_input["/a"]["output_bytes"] == 6 and by_input["/b"]["output_bytes"] == 8
    assert by_input["/boom"]["output_bytes"] is None  # it wrote nothing that counts
    for r in rows:
        assert r["job"] == job and r["pipeline"] == "dc"
        assert r["started"] > 0 and 0 <= r["seconds"] < 60, r
    text = pfsd.ok("datum", "list", job).splitlines()
    assert text[0].split() == ["DATUM", "STATE", "TIME", "OUTPUT", "INPUTS"]
    assert any("6 B" in line and "success" in line and ":/a" in line for line in text)

    failed = by_input["/boom"]["id"]
    detail = pfsd.json("datum", "inspect", job, failed[:8])  # a unique prefix will do
    assert detail["id"] == failed and detail["state"] == "failed"
    assert "not yet" in detail["log"] and detail["outputs"] == []
    shown = pfsd.ok("datum", "inspect", job, by_input["/a"]["id"])
    assert "State:" in shown and "success" in shown and "/a  6 B" in shown

    # Not fixed yet: it fails again, the job stays failed, nothing downstream ran.
    r = pfsd.run("datum", "restart", job, failed, "--json")
    assert r.code == 1, r
    again = json.loads(r.out)
    assert again["state"] == "failure" and f"datum {failed} failed" in again["error"]
    assert pfsd.head("dc") is None and pfsd.head("dc_down") is None

    marker.write_text("fixed\n")
    done = pfsd.json("datum", "restart", f"dc@{job}", failed)
    assert done["state"] == "success" and done["output"].startswith("dc@"), done
    assert done["failed"] == 0 and done["processed"] == 3 and not done["error"]
    assert {r["state"] for r in pfsd.json("datum", "list", job)} == {"success"}
    assert pfsd.tree("dc") == {"a": b"apple\n", "b": b"banana!\n", "boom": b"boom\n"}
    assert pfsd.wait("dc@master")["dc_down"]  # the output commit set downstream going
    assert pfsd.get("dc_down@master:/all") == b"apple\nbanana!\nboom\n"
    assert pfsd.last_job("dc")["id"] == job  # no new job of dc: its own job made whole
    pfsd.fails("datum", "restart", job, failed, match=f"job {job} is success")


def test_dry_run_lists_datums_and_creates_nothing(pfsd: Pfsd) -> None:
    pfsd.repos("dr_in")
    pfsd.put("dr_in", {"x": "1", "y": "2", "sub/z": "3"})
    spec = pfsd.spec_file(pfsd.spec("dr", "cp -r /pfs/dr_in/* /pfs/out/",
                                    pfsd.pin("dr_in", "/*")))
    rows = pfsd.json("datum", "list", "-f", spec)
    assert sorted(r["files"][0].rsplit(":", 1)[1] for r in rows) == ["/sub", "/x", "/y"]
    assert {(r["pipeline"], r["job"], r["state"]) for r in rows} == {("dr", "", "would run")}
    text = pfsd.ok("datum", "list", "-f", spec).splitlines()
    assert text[0].split() == ["DATUM", "PIPELINE", "STATE", "INPUTS"] and len(text) == 4
    assert "dr" not in [p["name"] for p in pfsd.json("pipeline", "list")]
    assert "dr" not in [r["name"] for r in pfsd.json("repo", "list")]

    pfsd.ok("pipeline", "create", "-f", spec)
    pfsd.wait("dr_in@master")
    pfsd.ok("pipeline", "stop", "dr")  # no job runs the new commit before the dry run
    pfsd.put("dr_in", {"w": "4", "x": "1 changed"})
    after = pfsd.json("datum", "list", "-f", spec)
    states = {r["files"][0].rsplit(":", 1)[1]: r["state"] for r in after}
    assert states == {"/sub": "would skip", "/y": "would skip", "/w": "would run",
                      "/x": "would run"}
    pfsd.ok("pipeline", "start", "dr")
    pfsd.wait("dr_in@master")
    # The ids the dry run gave are the ids the job has.
    job = pfsd.last_job("dr")["id"]
    assert {r["id"] for r in after} == {r["id"] for r in pfsd.json("datum", "list", job)}


def test_bad_input_is_one_line(pfsd: Pfsd) -> None:
    pfsd.fails("datum", "list", "0" * 32, match=f"job {'0' * 32} not found")
    pfsd.fails("datum", "list", match="needs a JOB")
    pfsd.fails("datum", "inspect", "nojob", "abc", match="nojob is not a job")
    pfsd.fails("datum", "restart", "0" * 32, "abc", match="not found")
    pfsd.fails("datum", "list", "-f", pfsd.specs / "missing.json", match="cannot read spec")
    bad = pfsd.spec_file(pfsd.spec("bd", "true", pfsd.pin("bd_missing")))
    pfsd.fails("datum", "list", "-f", bad, match="input repo bd_missing does not exist")
    pfsd.repos("bd_in")
    pfsd.put("bd_in", {"f": "x"})
    pfsd.create(pfsd.spec("bd", "cp /pfs/bd_in/* /pfs/out/", pfsd.pin("bd_in")))
    pfsd.wait("bd_in@master")
    job = pfsd.last_job("bd")["id"]
    pfsd.fails("datum", "inspect", job, "xyz", match="xyz is not a datum id")
    pfsd.fails("datum", "inspect", job, "0000", match=f"datum 0000 not found in job {job}")
    datum = pfsd.json("datum", "list", job)[0]["id"]
    pfsd.fails("datum", "restart", job, datum, match="is success")
    pfsd.fails("datum", "list", f"other@{job}", match=f"job {job} is not a job of pipeline "
               "other")


def test_a_datum_err_cmd_let_through_is_recovered(pfsd: Pfsd) -> None:
    pfsd.repos("rc_in")
    pfsd.put("rc_in", {"good": "g\n", "bad": "b\n"})
    spec = pfsd.spec("rc", "grep -q g /pfs/rc_in/* && cp /pfs/rc_in/* /pfs/out/",
                     pfsd.pin("rc_in"), datum_tries=1)
    spec["transform"]["err_cmd"] = ["true"]  # Pachyderm's way to let a datum through
    pfsd.create(spec)
    pfsd.wait("rc_in@master")
    job = pfsd.last_job("rc")
    assert job["state"] == "success" and job["recovered"] == 1, job
    states = {r["files"][0].rsplit(":", 1)[1]: r["state"]
              for r in pfsd.json("datum", "list", job["id"])}
    assert states == {"/good": "success", "/bad": "recovered"}
    bad = next(r["id"] for r in pfsd.json("datum", "list", "rc") if r["state"] == "recovered")
    pfsd.fails("datum", "restart", job["id"], bad, match="is success")


def test_restart_only_of_the_last_job(pfsd: Pfsd, marker: Path) -> None:
    """An older job made whole would move the output branch back in time: refused."""
    pfsd.repos("nl_in")
    pfsd.put("nl_in", {"boom": "boom\n"})
    script = f"test -e {marker} || exit 5; cp /pfs/nl_in/* /pfs/out/"
    pfsd.create(pfsd.spec("nl", script, pfsd.pin("nl_in"), datum_tries=1))
    pfsd.run("commit", "wait", "nl_in@master", "--timeout", "90", timeout=120)
    first = pfsd.last_job("nl")
    pfsd.put("nl_in", {"more": "more\n"})
    pfsd.run("commit", "wait", "nl_in@master", "--timeout", "90", timeout=120)
    second = pfsd.last_job("nl")
    assert first["state"] == second["state"] == "failure" and first["id"] != second["id"]
    marker.write_text("fixed\n")
    boom = next(r["id"] for r in pfsd.json("datum", "list", first["id"])
                if r["files"][0].endswith(":/boom"))
    pfsd.fails("datum", "restart", first["id"], boom,
               match=f"job {first['id']} is not pipeline nl's last job")
    assert pfsd.head("nl") is None


def test_two_restarts_at_once_leave_the_job_whole(pfsd: Pfsd, marker: Path) -> None:
    """Restarts of two datums of one job, at the same time: each waits for the other (and
    for any job of the pipeline), so the last one sees both succeeded and the job ends
    ``success`` with the counts of both."""
    pfsd.repos("cr_in")
    pfsd.put("cr_in", {"x": "ex\n", "y": "why\n"})
    script = f"test -e {marker} || exit 3; sleep 1; cp /pfs/cr_in/* /pfs/out/"
    pfsd.create(pfsd.spec("cr", script, pfsd.pin("cr_in"), datum_tries=1))
    pfsd.fails("commit", "wait", "cr_in@master", "--timeout", "90", match="cr")
    job = pfsd.quick_job("cr")
    assert job["state"] == "failure" and job["failed"] == 2, job
    marker.write_text("fixed\n")
    ids = [r["id"] for r in pfsd.json("datum", "list", job["id"])]
    with ThreadPoolExecutor(2) as pool:
        ran = list(pool.map(lambda d: pfsd.run("datum", "restart", job["id"], d, "--json"),
                            ids))
    assert sorted(r.code for r in ran) == [0, 1], ran  # the first leaves one still failed
    after = pfsd.quick_job("cr")
    assert (after["state"], after["failed"], after["processed"]) == ("success", 0, 2), after
    assert pfsd.tree("cr") == {"x": b"ex\n", "y": b"why\n"}
    assert {r["state"] for r in pfsd.json("datum", "list", job["id"])} == {"success"}


def test_datums_a_job_timeout_stopped_are_stopped_and_restart_makes_them(
        pfsd: Pfsd, marker: Path) -> None:
    """A datum stopped mid-run has a log but did not end: it is ``stopped`` (never
    ``recovered`` because another datum's err_cmd let that one through), and the job made
    whole by restarts holds its output."""
    pfsd.repos("ts_in")
    pfsd.put("ts_in", {"r": "r\n", "s": "s\n"})
    script = ("case $(ls /pfs/in) in r) exit 1;; s) test -e " + str(marker)
              + " || sleep 60;; esac; cp /pfs/in/* /pfs/out/")
    spec = pfsd.spec("ts", script, {"pfs": {"repo": "ts_in", "glob": "/*", "name": "in"}},
                     datum_tries=1, job_timeout="3s", parallelism_spec={"constant": 2})
    spec["transform"]["err_cmd"] = ["true"]
    pfsd.create(spec)
    pfsd.fails("commit", "wait", "ts_in@master", "--timeout", "90", match="job timed out")
    job = pfsd.quick_job("ts")
    states = {r["files"][0].rsplit(":", 1)[1]: (r["state"], r["id"])
              for r in pfsd.json("datum", "list", job["id"])}
    assert {k: v[0] for k, v in states.items()} == {"/r": "recovered", "/s": "stopped"}
    marker.write_text("fixed\n")
    done = pfsd.json("datum", "restart", job["id"], states["/s"][1])
    assert done["state"] == "success", done
    assert pfsd.tree("ts") == {"s": b"s\n"}
