"""Jobs that cannot be right say so. A pipeline downstream of a failed job is not run: its
job is ``unrunnable`` and names the upstream job, and ``commit wait`` (and 1.x's
``flush-commit``) exit non-zero with a line for it. (The issue's repro: a cross over a failed
pipeline's output once reported success with 0 datums.) A pipeline reading both a repo and a
pipeline over that repo runs once per commit, on inputs that belong together.
"""

from __future__ import annotations

import re

from tests.scheduler.conftest import Pfsd

HEX32 = r"[0-9a-f]{32}"


def test_downstream_of_a_failed_job_is_unrunnable(pfsd: Pfsd) -> None:
    pfsd.repos("un_data")
    pfsd.put("un_data", {"a": "1\n", "b": "2\n"})
    failing = pfsd.spec("un_a", "echo broken >&2; exit 2", pfsd.pin("un_data"), datum_tries=1)
    pfsd.create(
        failing,
        pfsd.spec("un_b", "cat /pfs/un_data/* /pfs/un_a/* > "
                  "/pfs/out/$(ls /pfs/un_data)-$(ls /pfs/un_a)",
                  {"cross": [pfsd.pin("un_data"), pfsd.pin("un_a")]}),
        pfsd.spec("un_c", "cp /pfs/un_b/* /pfs/out/", pfsd.pin("un_b")))
    line = pfsd.fails("commit", "wait", "un_data@master", "--timeout", "60")
    a, b, c = (pfsd.quick_job(p) for p in ("un_a", "un_b", "un_c"))
    assert a["state"] == "failure", a
    assert (b["state"], b["error"]) == ("unrunnable", f"upstream job {a['id']} of pipeline "
                                                      "un_a failed"), b
    assert (c["state"], c["error"]) == ("unrunnable", f"upstream job {b['id']} of pipeline "
                                                      "un_b is unrunnable"), c
    assert f"pipeline un_a job {a['id']} failure" in line, line
    assert f"pipeline un_b job {b['id']} unrunnable: upstream job {a['id']} of pipeline " \
           "un_a failed" in line, line
    assert f"pipeline un_c job {c['id']} unrunnable: upstream job {b['id']}" in line, line
    for name in ("un_b", "un_c"):  # no job of theirs ran, none "succeeded" with 0 datums
        assert [j["state"] for j in pfsd.jobs(name)] == ["unrunnable"], pfsd.jobs(name)
        assert pfsd.head(name) is None
    assert re.search(rf"{b['id'][:8]}\w*\s.*unrunnable", pfsd.ok("job", "list", "-p", "un_b"))

    # a new commit: the upstream fails again, the downstream is unrunnable again
    pfsd.put("un_data", {"c": "3\n"})
    flushed = pfsd.fails("flush-commit", "un_data/master/1", "--timeout", "60")
    assert re.search(rf"pipeline un_b job {HEX32} unrunnable: upstream job {HEX32} of "
                     "pipeline un_a failed", flushed), flushed
    assert [j["state"] for j in pfsd.jobs("un_b")] == ["unrunnable"] * 2

    # fixed upstream: everything runs, each downstream job once, on matching inputs
    pfsd.ok("pipeline", "update", "-f", pfsd.spec_file(
        {**failing, "transform": {"cmd": ["sh"], "stdin": ["cp /pfs/un_data/* /pfs/out/"]}}))
    out = pfsd.cli_wait("un_data@master")
    assert set(out) == {"un_a", "un_b", "un_c"}, out
    b = pfsd.quick_job("un_b")
    assert b["state"] == "success" and b["processed"] == 9, b  # 3 x 3 datums
    assert b["inputs"] == {"un_data@master": pfsd.head("un_data"), "un_a@master": out["un_a"]}
    assert pfsd.get("un_c@master:/a-c") == b"1\n3\n"
    assert len(pfsd.tree("un_c")) == 9


def test_a_commit_reaches_a_pipeline_over_its_upstream_once(pfsd: Pfsd) -> None:
    """A pipeline reading ``data`` and a pipeline over ``data`` gets one job per commit,
    once the upstream's output for it exists (never the new data with the old output)."""
    pfsd.repos("once_data")
    pfsd.put("once_data", {"a": "1\n"})
    pfsd.create(
        pfsd.spec("once_up", "sleep 1; cp /pfs/once_data/* /pfs/out/", pfsd.pin("once_data")),
        pfsd.spec("once_down", "cat /pfs/once_data/* /pfs/once_up/* > "
                  "/pfs/out/$(ls /pfs/once_data)-$(ls /pfs/once_up)",
                  {"cross": [pfsd.pin("once_data"), pfsd.pin("once_up")]}))
    pfsd.wait("once_data@master")
    assert len(pfsd.jobs("once_down")) == 1
    second = pfsd.put("once_data", {"b": "2\n"})
    out = pfsd.cli_wait("once_data@master")
    jobs = pfsd.jobs("once_down")
    assert len(jobs) == 2 and jobs[0]["state"] == "success", jobs
    assert jobs[0]["inputs"] == {"once_data@master": second, "once_up@master": out["once_up"]}
    assert set(pfsd.tree("once_down")) == {"a-a", "a-b", "b-a", "b-b"}


def test_an_upstream_on_another_branch_is_not_waited_for(pfsd: Pfsd) -> None:
    """Only a pipeline whose output depends on the very branch committed to holds a job
    back: one reading ``dev`` does not, for a commit on ``master``."""
    pfsd.repos("br_data")
    pfsd.put("br_data", {"x": "dev\n"}, branch="dev")
    pfsd.put("br_data", {"a": "1\n"})
    pfsd.create(
        pfsd.spec("br_up", "cp /pfs/br_data/* /pfs/out/", pfsd.pin("br_data", branch="dev")),
        pfsd.spec("br_down", "cat /pfs/br_data/* /pfs/br_up/* > /pfs/out/$(ls /pfs/br_data)",
                  {"cross": [pfsd.pin("br_data"), pfsd.pin("br_up")]}))
    pfsd.wait("br_data@dev")
    second = pfsd.put("br_data", {"b": "2\n"})
    out = pfsd.cli_wait("br_data@master")
    assert set(out) == {"br_down"}, out
    job = pfsd.quick_job("br_down")
    assert job["state"] == "success" and job["inputs"]["br_data@master"] == second, job
    assert pfsd.tree("br_down") == {"a": b"1\ndev\n", "b": b"2\ndev\n"}
