"""Pipelines on a real daemon (bubblewrap runner), checked by what a user sees.

One daemon with its mount serves the module; every test keeps to repos and pipelines of its
own names. Data goes in through the Python client (fast: a ``pfsmount`` command costs about a
second of Python start-up here); what is asserted comes out of the ``pfsmount`` command (``job
list/inspect --json``, ``commit wait``, ``logs``, ``file get``, the 1.x aliases) or the mount.
"""

from __future__ import annotations

import errno
import json
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.scheduler.conftest import Pfsd

PROJECT = Path(__file__).resolve().parents[2]
HEX32 = r"[0-9a-f]{32}"


def fruit_specs(data: str, filter_: str, sum_: str) -> list[dict[str, Any]]:
    """examples/fruit_stand/pipelines.json, renamed so that it runs beside other tests: the
    inputs keep the names its commands use (/pfs/data, /pfs/filter)."""
    text = (PROJECT / "examples" / "fruit_stand" / "pipelines.json").read_text()
    decoder, pos, specs = json.JSONDecoder(), 0, []
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        doc, pos = decoder.raw_decode(text, pos)
        specs.append(doc)
    assert [s["pipeline"]["name"] for s in specs] == ["filter", "sum"]
    specs[0]["pipeline"]["name"] = filter_
    specs[0]["input"]["pfs"].update(repo=data, name="data")
    specs[1]["pipeline"]["name"] = sum_
    specs[1]["input"]["pfs"].update(repo=filter_, name="filter")
    return specs


def sales(rng: random.Random, lines: int) -> tuple[str, Counter[str]]:
    text, totals = [], Counter[str]()
    for _ in range(lines):
        fruit, amount = rng.choice(["apple", "banana", "orange"]), rng.randrange(1, 500)
        text.append(f"{fruit}\t{amount}\n")
        totals[fruit] += amount
    return "".join(text), totals


def counts(job: dict[str, Any]) -> tuple[str, int, int, int, int]:
    return job["state"], job["datums"], job["processed"], job["skipped"], job["failed"]


# -- the walkthrough's two stages ---------------------------------------------------------------


def test_fruit_stand_sums_after_each_commit(pfsd: Pfsd) -> None:
    rng = random.Random(7)
    pfsd.repos("fruit")
    set1, totals = sales(rng, 40)
    first = pfsd.put("fruit", {"sales": set1})
    created = pfsd.ok("create-pipeline", "-f",
                      pfsd.spec_file(*fruit_specs("fruit", "ffilter", "fsum")))
    assert created.split() == ["ffilter", "fsum"]

    out = pfsd.cli_wait(f"fruit@{first}")
    assert set(out) == {"ffilter", "fsum"}
    assert pfsd.get("fsum@master:/apple") == f"{totals['apple']}\n".encode()
    assert pfsd.tree("fsum") == {f: f"{totals[f]}\n".encode() for f in totals}

    # provenance: the sum commit names the filter commit and the data commit it came from
    info = pfsd.json("commit", "inspect", "fsum@master")
    assert info["id"] == out["fsum"]
    assert set(info["provenance"]) == {f"ffilter@{out['ffilter']}", f"fruit@{first}"}

    set2, more = sales(rng, 25)
    with pfsd.api() as c:  # the second set is appended, as 1.x put-file did
        c.start_commit("fruit")
        c.put_file("fruit@master:/sales", set2.encode(), append=True)
        second = c.finish_commit("fruit@master").id
    totals += more
    # 1.x flush-commit REPO/COMMIT: every output commit downstream of it
    out2 = pfsd.cli_wait("flush-commit", f"fruit/{second}")
    assert set(out2) == {"ffilter", "fsum"}
    assert not set(out2.values()) & set(out.values())
    assert pfsd.tree("fsum") == {f: f"{totals[f]}\n".encode() for f in totals}
    # the first output stays readable as it was, at its commit id
    assert pfsd.tree("fsum", out["fsum"]) == {f: f"{totals[f] - more[f]}\n".encode()
                                              for f in totals}
    got = pfsd.run("get-file", "fsum", "master", "banana")
    assert (got.code, got.out) == (0, f"{totals['banana']}\n"), got
    info = pfsd.json("inspect-commit", "fsum", out2["fsum"])
    assert set(info["provenance"]) == {f"ffilter@{out2['ffilter']}", f"fruit@{second}"}
    assert info["parent"] == out["fsum"]

    jobs = pfsd.json("list-job", "-p", "fsum")
    assert [counts(j) for j in jobs] == [("success", 3, 3, 0, 0)] * 2
    assert jobs[0]["output"] == f"fsum@{out2['fsum']}"
    listing = pfsd.ok("list-pipeline")
    assert re.search(r"^ffilter\s+fruit@master:/\s", listing, re.M), listing
    assert re.search(r"^fsum\s+ffilter@master:/\*\s", listing, re.M), listing


# -- incremental processing ---------------------------------------------------------------------


def test_only_new_datums_run(pfsd: Pfsd) -> None:
    n = 6
    pfsd.repos("inc_in")
    files = {f"f{i}": f"line {i}\n" for i in range(n)}
    pfsd.put("inc_in", files)
    s = pfsd.spec("inc_up", 'for f in /pfs/inc_in/*; do tr a-z A-Z < "$f" > '
                  '/pfs/out/$(basename "$f"); done', pfsd.pin("inc_in"))
    pfsd.create(s)
    pfsd.wait("inc_in@master")
    assert counts(pfsd.quick_job("inc_up")) == ("success", n, n, 0, 0)

    files["g"] = "a new one\n"
    pfsd.put("inc_in", {"g": files["g"]})
    pfsd.wait("inc_in@master")
    job = pfsd.quick_job("inc_up")
    assert counts(pfsd.json("job", "inspect", job["id"])) == ("success", n + 1, 1, n, 0)
    assert pfsd.tree("inc_up") == {k: v.upper().encode() for k, v in files.items()}

    # a changed file is a new datum; the others are reused
    files["f0"] = "changed\n"
    pfsd.put("inc_in", {"f0": files["f0"]})
    pfsd.wait("inc_in@master")
    assert counts(pfsd.quick_job("inc_up")) == ("success", n + 1, 1, n, 0)
    assert pfsd.tree("inc_up") == {k: v.upper().encode() for k, v in files.items()}

    # update --reprocess (the 1.x spelling here) reruns every datum
    before = pfsd.quick_job("inc_up")["id"]
    assert pfsd.ok("update-pipeline", "-f", pfsd.spec_file(s), "--reprocess").split() == [
        "inc_up"]
    pfsd.wait("inc_in@master")
    job = pfsd.quick_job("inc_up")
    assert job["id"] != before
    assert counts(pfsd.json("inspect-job", job["id"])) == ("success", n + 1, n + 1, 0, 0)
    assert pfsd.tree("inc_up") == {k: v.upper().encode() for k, v in files.items()}


def test_deleting_an_input_file_removes_its_output(pfsd: Pfsd) -> None:
    pfsd.repos("del_in")
    pfsd.put("del_in", {"a": "1\n", "b": "2\n", "sub/c": "3\n"})
    pfsd.create(pfsd.spec("del_copy", "cp -r /pfs/del_in/* /pfs/out/", pfsd.pin("del_in")))
    pfsd.wait("del_in@master")
    assert pfsd.tree("del_copy") == {"a": b"1\n", "b": b"2\n", "sub/c": b"3\n"}

    pfsd.put("del_in", delete=("b",))
    pfsd.wait("del_in@master")
    assert pfsd.tree("del_copy") == {"a": b"1\n", "sub/c": b"3\n"}
    pfsd.fails("file", "get", "del_copy@master:/b", match=r"\bb\b.*del_copy")
    assert counts(pfsd.last_job("del_copy")) == ("success", 2, 0, 2, 0)

    pfsd.put("del_in", delete=("sub",))
    pfsd.wait("del_in@master")
    assert pfsd.tree("del_copy") == {"a": b"1\n"}
    assert not (pfsd.mnt / "del_copy" / "master" / "sub").exists()


# -- outputs that collide -----------------------------------------------------------------------


def test_two_datums_writing_one_path_fail_the_job(pfsd: Pfsd) -> None:
    pfsd.repos("col_in")
    pfsd.put("col_in", {"x": "from x\n", "y": "from y\n"})
    pfsd.create(pfsd.spec("col2", 'echo "datum $PACH_DATUM_ID"; cat /pfs/col_in/* > '
                          "/pfs/out/total", pfsd.pin("col_in")))
    line = pfsd.fails("commit", "wait", "col_in@master", "--timeout", "60",
                      match=r"pipeline col2 job \w+ failure")
    assert "/total" in line, line
    job = pfsd.last_job("col2")
    assert counts(job) == ("failure", 2, 2, 0, 0) and job["output"] is None
    datums = re.findall(rf"^datum ({HEX32})$", pfsd.ok("logs", "-p", "col2"), re.M)
    assert len(set(datums)) == 2, datums
    assert "\n" not in job["error"]
    m = re.fullmatch(rf"datums ({HEX32}) and ({HEX32}) both wrote /total", job["error"])
    assert m and {m[1], m[2]} == set(datums), job["error"]
    assert pfsd.head("col2") is None  # the output branch never moved


def test_1x_spec_concatenates_colliding_outputs(pfsd: Pfsd) -> None:
    pfsd.repos("cat_in")
    pfsd.put("cat_in", {"x": "from x\n", "y": "from y\n", "z": "from z\n"})
    pfsd.create({
        "pipeline": {"name": "cat1"},
        "transform": {"cmd": ["sh"], "stdin": ["cat /pfs/cat_in/* > /pfs/out/total"]},
        "parallelism": 3,  # 1.x: three containers, each with one file's block
        "inputs": [{"repo": {"name": "cat_in"}, "method": "map"}],
    })
    pfsd.wait("cat_in@master")
    assert counts(pfsd.last_job("cat1")) == ("success", 3, 3, 0, 0)
    assert pfsd.get("cat1@master:/total") == b"from x\nfrom y\nfrom z\n"


# -- failures -------------------------------------------------------------------------------------


def test_failing_datum_is_retried_then_fails_the_job(pfsd: Pfsd) -> None:
    pfsd.repos("try_in")
    pfsd.put("try_in", {"good": "ok\n"})
    pfsd.create(
        pfsd.spec("try_fail", 'if [ -e /pfs/try_in/bad ]; then echo "boom $PACH_DATUM_ID" >&2;'
                  " exit 3; fi; cp /pfs/try_in/* /pfs/out/", pfsd.pin("try_in", "/")),
        pfsd.spec("try_down", "cp /pfs/try_fail/* /pfs/out/", pfsd.pin("try_fail", "/")))
    out = pfsd.wait("try_in@master")
    assert set(out) == {"try_fail", "try_down"}

    pfsd.put("try_in", {"bad": "no\n"})
    line = pfsd.fails("commit", "wait", "try_in@master", "--timeout", "60",
                      match=rf"pipeline try_fail job {HEX32} failure")
    assert "3 tries" in line, line
    job = pfsd.json("job", "inspect", pfsd.quick_job("try_fail")["id"])
    assert counts(job) == ("failure", 1, 0, 0, 1) and job["output"] is None
    assert "failed after 3 tries" in job["error"]
    assert "boom" in job["error"]  # the log tail is kept in the job
    shown = pfsd.ok("job", "inspect", job["id"])
    assert re.search(r"\bfailure\b", shown) and "error: datum" in shown, shown
    assert "boom" in shown, shown  # the log tail, as the user reads it
    assert pfsd.run("job", "wait", job["id"]).code != 0

    log = pfsd.ok("logs", "-p", "try_fail", "--job", job["id"])
    assert re.findall(r"try (\d) of 3", log) == ["1", "2", "3"], log
    assert log.count("boom") == 3 and log.count("exit code 3") == 3, log

    # the output branch did not move and nothing downstream ran
    assert pfsd.head("try_fail") == out["try_fail"]
    assert pfsd.tree("try_fail") == {"good": b"ok\n"}
    assert pfsd.quick_job("try_down")["inputs"] == {"try_fail@master": out["try_fail"]}
    assert pfsd.head("try_down") == out["try_down"]


def test_datum_tries_and_accept_return_code(pfsd: Pfsd) -> None:
    pfsd.repos("rc_in")
    pfsd.put("rc_in", {"a": "1\n"})
    pfsd.create(
        pfsd.spec("rc_ok", "cp /pfs/rc_in/* /pfs/out/; echo partial; exit 7", pfsd.pin("rc_in"),
                  accept_return_code=[7]),
        pfsd.spec("rc_once", "echo nope; exit 7", pfsd.pin("rc_in"), datum_tries=1))
    line = pfsd.fails("commit", "wait", "rc_in@master", "--timeout", "60")
    assert "rc_once" in line and "rc_ok" not in line, line
    assert counts(pfsd.quick_job("rc_ok")) == ("success", 1, 1, 0, 0)
    assert pfsd.get("rc_ok@master:/a") == b"1\n"
    once = pfsd.last_job("rc_once")
    assert once["state"] == "failure" and "after 1 tries" in once["error"]
    assert re.findall(r"try \d of \d", pfsd.ok("logs", "-p", "rc_once")) == ["try 1 of 1"]


# -- cross and union ------------------------------------------------------------------------------


def test_cross_and_union(pfsd: Pfsd) -> None:
    pfsd.repos("xa", "xb")
    a = {"a1": "A1\n", "a2": "A2\n", "a3": "A3\n"}
    b = {"b1": "B1\n", "b2": "B2\n"}
    xa, xb = pfsd.put("xa", a), pfsd.put("xb", b)
    pfsd.create(
        pfsd.spec("xcross", 'for x in /pfs/xa/*; do for y in /pfs/xb/*; do cat "$x" "$y" > '
                  '/pfs/out/$(basename "$x")_$(basename "$y"); done; done',
                  {"cross": [pfsd.pin("xa"), pfsd.pin("xb")]}),
        pfsd.spec("xunion", 'for f in /pfs/xa/* /pfs/xb/*; do [ -e "$f" ] && cp "$f" /pfs/out/;'
                  " done; true", {"union": [pfsd.pin("xa"), pfsd.pin("xb")]}))
    out = pfsd.wait("xb@master")
    assert set(out) == {"xcross", "xunion"}
    assert counts(pfsd.last_job("xcross")) == ("success", 6, 6, 0, 0)
    assert pfsd.tree("xcross") == {f"{i}_{j}": (a[i] + b[j]).encode() for i in a for j in b}
    assert counts(pfsd.quick_job("xunion")) == ("success", 5, 5, 0, 0)
    assert pfsd.tree("xunion") == {k: v.encode() for k, v in (a | b).items()}
    assert set(pfsd.json("commit", "inspect", "xcross@master")["provenance"]) == {
        f"xa@{xa}", f"xb@{xb}"}

    # one more file in xb: the cross runs only the 3 new pairs, the union the 1 new file
    b["b3"] = "B3\n"
    pfsd.put("xb", {"b3": b["b3"]})
    pfsd.wait("xb@master")
    assert counts(pfsd.quick_job("xcross")) == ("success", 9, 3, 6, 0)
    assert pfsd.tree("xcross") == {f"{i}_{j}": (a[i] + b[j]).encode() for i in a for j in b}
    assert counts(pfsd.last_job("xunion")) == ("success", 6, 1, 5, 0)
    assert pfsd.tree("xunion") == {k: v.encode() for k, v in (a | b).items()}


# -- logs -----------------------------------------------------------------------------------------


def test_logs_show_datum_output_filtered_by_job_and_datum(pfsd: Pfsd) -> None:
    pfsd.repos("log_in")
    pfsd.put("log_in", {"one": "1\n", "two": "2\n"})
    pfsd.create(pfsd.spec("logp", 'n=$(basename /pfs/log_in/*); echo "stdout:$n:$PACH_JOB_ID:'
                          '$PACH_DATUM_ID"; echo "stderr:$n" >&2; cp /pfs/log_in/* /pfs/out/',
                          pfsd.pin("log_in")))
    pfsd.wait("log_in@master")
    pfsd.put("log_in", {"three": "3\n"})
    pfsd.wait("log_in@master")

    everything = pfsd.ok("logs", "-p", "logp")
    seen = {n: (j, d) for n, j, d in re.findall(rf"^stdout:(\w+):({HEX32}):({HEX32})$",
                                                 everything, re.M)}
    assert set(seen) == {"one", "two", "three"}, everything
    for n in seen:
        assert re.search(rf"^stderr:{n}$", everything, re.M), everything
    first, second = seen["one"][0], seen["three"][0]
    assert seen["two"][0] == first != second
    assert [j["id"] for j in pfsd.jobs("logp")] == [second, first]  # PACH_JOB_ID is the job
    assert everything.index("stdout:one") < everything.index("stdout:three")  # oldest first

    only_first = pfsd.ok("logs", "-p", "logp", "--job", first)
    assert "stdout:one" in only_first and "stdout:two" in only_first
    assert "three" not in only_first
    only_second = pfsd.ok("get-logs", "-p", "logp", "--job", second)
    assert "stdout:three" in only_second and "one" not in only_second  # skipped datums: no log

    one = pfsd.ok("logs", "-p", "logp", "--datum", seen["one"][1])
    assert "stdout:one" in one and "stderr:one" in one
    assert "two" not in one and "three" not in one
    assert f"datum {seen['one'][1]} try 1 of 3" in one

    pfsd.fails("logs", "-p", "no_such_pipeline", match="no_such_pipeline")


# -- the life of a pipeline -----------------------------------------------------------------------


def test_list_inspect_stop_start_delete(pfsd: Pfsd) -> None:
    pfsd.repos("life_in")
    pfsd.put("life_in", {"a": "1\n"})
    pfsd.create(pfsd.spec("life", ["sh", "-c", "cp /pfs/life_in/* /pfs/out/"],
                          pfsd.pin("life_in"), description="copies life_in"),
                pfsd.spec("life_after", "cp /pfs/life/* /pfs/out/", pfsd.pin("life")))
    out = pfsd.wait("life_in@master")

    listed = {p["name"]: p for p in pfsd.json("pipeline", "list")}
    assert {"life", "life_after"} <= set(listed)
    assert listed["life"]["spec"]["input"]["pfs"]["repo"] == "life_in"
    assert listed["life"]["stopped"] is False
    shown = pfsd.ok("pipeline", "inspect", "life")
    assert "cmd: sh -c cp /pfs/life_in/* /pfs/out/" in shown and "copies life_in" in shown
    assert re.search(r"^life\s.*\brunning\b", shown, re.M), shown

    pfsd.ok("pipeline", "stop", "life")
    assert re.search(r"^life\s.*\bstopped\b", pfsd.ok("pipeline", "list"), re.M)
    pfsd.put("life_in", {"b": "2\n"})
    time.sleep(1)  # a running pipeline would have made its job by now
    assert len(pfsd.jobs("life")) == 1  # no job while stopped
    assert pfsd.head("life") == out["life"]
    started = time.monotonic()  # waiting on a stopped pipeline says so at once
    pfsd.fails("commit", "wait", "life_in@master", "--timeout", "60",
               match="pipeline life is stopped")
    assert time.monotonic() - started < 30

    pfsd.ok("pipeline", "start", "life")
    assert set(pfsd.wait("life_in@master")) == {"life", "life_after"}
    assert pfsd.tree("life_after") == {"a": b"1\n", "b": b"2\n"}

    pfsd.fails("pipeline", "delete", "life", match="life_after")  # life_after still reads it
    pfsd.ok("pipeline", "delete", "life_after")
    pfsd.ok("pipeline", "delete", "life")
    assert not {"life", "life_after"} & {p["name"] for p in pfsd.json("pipeline", "list")}
    pfsd.fails("pipeline", "inspect", "life", match="life")
    with pfsd.api() as c:  # the output repos went with them
        assert not {"life", "life_after"} & {r.name for r in c.list_repos()}
    assert not (pfsd.mnt / "life").exists()
    pfsd.put("life_in", {"c": "3\n"})  # nothing reads life_in now: nothing to wait for
    assert pfsd.wait("life_in@master") == {}


def test_output_repo_is_read_only(pfsd: Pfsd, tmp_path: Path) -> None:
    pfsd.repos("ro_in")
    pfsd.put("ro_in", {"a": "1\n"})
    pfsd.create(pfsd.spec("ro_out", "cp /pfs/ro_in/* /pfs/out/", pfsd.pin("ro_in")))
    head = pfsd.wait("ro_in@master")["ro_out"]
    local = tmp_path / "x"
    local.write_text("sneaky\n")

    pfsd.fails("put-file", "ro_out", "master", "x", "-f", local, match="ro_out")
    pfsd.fails("file", "put", "ro_out@master:/x", local, match="ro_out")
    for name in ("x", "a"):
        with pytest.raises(OSError) as info:
            (pfsd.mnt / "ro_out" / "master" / name).write_text("sneaky\n")
        assert info.value.errno == errno.EROFS, info.value
    with pytest.raises(OSError) as info:
        (pfsd.mnt / "ro_out" / "master" / "a").unlink()
    assert info.value.errno == errno.EROFS, info.value
    assert pfsd.head("ro_out") == head
    assert pfsd.tree("ro_out") == {"a": b"1\n"}


# -- refusals -------------------------------------------------------------------------------------


def test_unknown_input_repo_cycle_and_bad_spec_are_refused(pfsd: Pfsd) -> None:
    pfsd.fails("pipeline", "create", "-f",
               pfsd.spec_file(pfsd.spec("ghost", "true", pfsd.pin("no_such_repo"))),
               match="no_such_repo")

    pfsd.repos("cyc_in")
    pfsd.ok("pipeline", "create", "-f", pfsd.spec_file(yaml_text="""\
pipeline: {name: cyc_a}
transform: {cmd: [sh, -c, "cp /pfs/cyc_in/* /pfs/out/"]}
input: {pfs: {repo: cyc_in, glob: "/*"}}
---
pipeline: {name: cyc_b}
transform: {cmd: [sh, -c, "cp /pfs/cyc_a/* /pfs/out/"]}
input: {pfs: {repo: cyc_a, glob: "/*"}}
"""))
    line = pfsd.fails("update-pipeline", "-f",
                      pfsd.spec_file(pfsd.spec("cyc_a", "true", pfsd.pin("cyc_b"))),
                      match="cyc_a")
    assert "cycle" in line, line
    assert pfsd.json("pipeline", "inspect", "cyc_a")["spec"]["input"]["pfs"]["repo"] == "cyc_in"

    # a bad spec through the command: exit 2 (invalid argument), one line naming the field
    r = pfsd.run("pipeline", "create", "-f", pfsd.spec_file(
        {"transform": {"cmd": ["true"]}, "input": pfsd.pin("cyc_in")}))
    assert r.code == 2 and r.err == "error: spec field pipeline.name is missing\n", r
    pfsd.fails("pipeline", "create", "-f", pfsd.spec_file(
        pfsd.spec("badglob", "true", pfsd.pin("cyc_in", "nope"))), match=r"input\.pfs\.glob")
    pfsd.fails("pipeline", "create", "-f", pfsd.spec_file(
        pfsd.spec("selfish", "true", pfsd.pin("selfish"))), match="selfish")
    pfsd.fails("pipeline", "create", "-f", pfsd.spec_file(  # create never replaces
        pfsd.spec("cyc_b", "true", pfsd.pin("cyc_in"))), match="already exists")
    assert {p["name"] for p in pfsd.json("pipeline", "list")} & {
        "ghost", "badglob", "selfish", "cyc_a", "cyc_b"} == {"cyc_a", "cyc_b"}
    with pfsd.api() as c:
        assert not {"ghost", "badglob", "selfish"} & {r.name for r in c.list_repos()}
