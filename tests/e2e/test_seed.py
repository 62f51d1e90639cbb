"""The seed walkthrough (reference/pachyderm-data-science-workflow.txt), command by command,
with ``pfsmount`` in place of ``pachctl``: the same words, the same 1.x commit ids
(``data/master/0``, ``sum/master/1``), and every printed value checked.

As in the seed, the first day's sales come from a URL (an HTTP server this test starts on
127.0.0.1) and the second day's from a local file; the pipelines are the seed's in 1.3 form
(``inputs`` with ``repo.name``, ``parallelism_spec`` CONSTANT "1"), so they run with 1.x
meaning: ``filter`` (map) sees only the appended sales and appends to its previous output,
``sum`` (reduce) totals all of ``filter``. The seed's Jupyter job (``create-job -f
jupyter.json`` on the output commit ``flush-commit`` printed) runs a short command in the
seed's form, in Docker since it names an image; a long-running job (what Jupyter is) runs in
the sandbox, is listed, logs as it goes, and stops. Every expected number is recomputed here
from the raw sales.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path

from tests.conftest import Pfsmount, error_line
from tests.scheduler.conftest import IMAGE, require_bwrap, require_docker

ID = r"[0-9a-f]{32}"
AGO = r"(?:just now|\d+ seconds? ago)"

# The seed's pipelines in 1.3 form, the R script replaced by sh (the filter, then the sums).
PIPELINES = """
{
  "pipeline": {"name": "filter"},
  "transform": {
    "cmd": ["sh"],
    "stdin": [
      "for fruit in apple banana orange; do",
      "  grep \\"^$fruit \\" /pfs/data/sales | awk '{print $2}' >/pfs/out/$fruit",
      "done"
    ]
  },
  "parallelism_spec": {"strategy": "CONSTANT", "constant": "1"},
  "inputs": [{"repo": {"name": "data"}}]
}
{
  "pipeline": {"name": "sum"},
  "transform": {
    "cmd": ["sh"],
    "stdin": [
      "for fruit in apple banana orange; do",
      "  awk '{s+=$1} END {print s}' /pfs/filter/$fruit >/pfs/out/$fruit",
      "done"
    ]
  },
  "parallelism_spec": {"strategy": "CONSTANT", "constant": "1"},
  "inputs": [{"repo": {"name": "filter"}, "method": "reduce"}]
}
"""


def totals(*days: bytes) -> dict[str, int]:
    out: Counter[str] = Counter()
    for day in days:
        for line in day.decode().splitlines():
            fruit, amount = line.split()
            out[fruit] += int(amount)
    return dict(out)


def table(out: str) -> list[list[str]]:
    """A printed table's rows (header first), split on two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if line.strip()]


def jupyter_json(sum_id: str, data_id: str, image: str, script: list[str]) -> str:
    """The seed's jupyter.json: transform with an image and stdin, inputs by commit."""
    return json.dumps({
        "transform": {"image": image, "cmd": ["sh"], "stdin": script} if image else
                     {"cmd": ["sh"], "stdin": script},
        "parallelism_spec": {"strategy": "CONSTANT", "constant": 1},
        "inputs": [
            {"commit": {"repo": {"name": "sum"}, "id": sum_id}},
            {"commit": {"repo": {"name": "data"}, "id": data_id}},
        ],
    }, indent=2)


def test_the_seed_walkthrough(no_daemon: Pfsmount, web: tuple[str, Path], examples: Path,
                              tmp_path: Path) -> None:
    require_bwrap()
    require_docker()
    pfs = no_daemon
    url, served = web
    shutil.copy(examples / "set1.txt", served / "set1.txt")
    shutil.copy(examples / "set2.txt", tmp_path / "set2.txt")
    set1, set2 = (examples / "set1.txt").read_bytes(), (examples / "set2.txt").read_bytes()
    day1, both = totals(set1), totals(set1, set2)

    def run(*args: str) -> str:
        r = pfs.run(*args, cwd=tmp_path)
        assert r.code == 0, f"pfsmount {' '.join(args)} exited {r.code}: {r.err}\n" \
                            f"{pfs.log_tail()}"
        assert "Traceback" not in r.err, r.err
        return r.out

    def jobs() -> list[list[str]]:
        rows = table(run("list-job"))
        assert rows[0] == ["ID", "PIPELINE", "OUTPUT", "STARTED", "DURATION", "STATE"]
        return rows[1:]

    def wait_jobs(n: int) -> list[list[str]]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = jobs()
            if len(rows) >= n and all(r[-1] in ("success", "failure", "killed") for r in rows):
                return rows
            time.sleep(0.2)
        raise AssertionError(f"jobs did not end: {rows}")

    # "pachctl deploy local"
    run("up", "--no-mount")
    try:
        # step 1: create repo to store data
        assert run("create-repo", "data") == ""
        rows = table(run("list-repo"))
        assert rows[0][:3] == ["NAME", "CREATED", "SIZE"]
        assert rows[1][0] == "data" and re.fullmatch(AGO, rows[1][1]) and rows[1][2] == "0 B"

        # step 2: commit data to repo, from a URL
        assert re.fullmatch(rf"data@{ID}\n",
                            run("put-file", "data", "master", "sales", "-c", "-f",
                                f"{url}/set1.txt"))
        assert table(run("list-repo"))[1][:3:2] == ["data", "1.691 KiB"]
        rows = table(run("list-commit", "data"))
        assert rows[0] == ["BRANCH", "REPO/ID", "PARENT", "STARTED", "FINISHED", "SIZE"]
        assert len(rows) == 2
        assert rows[1][:3] == ["master", "data/master/0", "<none>"]
        assert re.fullmatch(AGO, rows[1][3]) and re.fullmatch(AGO, rows[1][4])
        assert rows[1][5] == "1.691 KiB"
        assert pfs.get("get-file", "data", "master", "sales") == set1

        # step 3: create pipeline (the 1.3 form) and view the jobs
        (tmp_path / "pipelines.json").write_text(PIPELINES)
        assert run("create-pipeline", "-f", "pipelines.json").split() == ["filter", "sum"]
        rows = wait_jobs(2)
        assert sorted((r[1], r[2], r[-1]) for r in rows) == [
            ("filter", "filter/master/0", "success"), ("sum", "sum/master/0", "success")]
        assert all(re.fullmatch(ID, r[0]) for r in rows)
        for fruit, total in day1.items():  # results are a repo too
            assert pfs.get("get-file", "sum", "master/0", fruit) == f"{total}\n".encode()

        # add more data as it streams in
        run("put-file", "data", "master", "sales", "-c", "-f", "set2.txt")
        rows = table(run("list-commit", "data"))
        assert [r[:3] for r in rows[1:]] == [["master", "data/master/1", "master/0"],
                                             ["master", "data/master/0", "<none>"]]
        assert rows[1][5] == "3.390 KiB"

        # flush-commit waits for the pipelines; it prints their output commits (1.x ids)
        rows = table(run("flush-commit", "data/master/1"))
        assert rows[0] == ["BRANCH", "REPO/ID", "PARENT", "STARTED", "FINISHED", "SIZE"]
        assert [r[:3] for r in rows[1:]] == [["master", "filter/master/1", "master/0"],
                                             ["master", "sum/master/1", "master/0"]]

        # "pipeline runs automatically": get-file sum <commit>/1 apple
        for fruit, total in both.items():
            assert pfs.get("get-file", "sum", "master/1", fruit) == f"{total}\n".encode()
            assert pfs.get("get-file", "sum", "master/0", fruit) == \
                f"{day1[fruit]}\n".encode()
        # map appended only the new sales to filter's previous output: every amount once
        apples = [line.split()[1] for line in (set1 + set2).decode().splitlines()
                  if line.startswith("apple ")]
        assert pfs.get("get-file", "filter", "master/1", "apple").decode().split() == apples
        out = run("inspect-commit", "data", "master/1")
        assert re.search(r"^Parent:\s+" + ID + "$", out, re.M), out
        assert re.search(r"^1\.x id:\s+data/master/1$", out, re.M), out
        rows = wait_jobs(4)
        assert sorted((r[1], r[2], r[-1]) for r in rows) == [
            ("filter", "filter/master/0", "success"), ("filter", "filter/master/1", "success"),
            ("sum", "sum/master/0", "success"), ("sum", "sum/master/1", "success")]

        # hook up to a notebook: the seed's jupyter.json on the output commit, create-job
        sum_id = next(r[1] for r in table(run("flush-commit", "data/master/1"))[1:]
                      if r[1].startswith("sum/")).split("/", 1)[1]
        assert sum_id == "master/1"
        (tmp_path / "jupyter.json").write_text(jupyter_json(sum_id, "master/1", IMAGE, [
            "ls /pfs", "cat /pfs/sum/apple", "cp /pfs/sum/apple /pfs/out/apple_seen"]))
        job = run("create-job", "-f", "jupyter.json").strip()
        assert re.fullmatch(ID, job), job
        rows = wait_jobs(5)
        assert rows[0][:3] == [job, f"job-{job[:12]}", f"job-{job[:12]}/master/0"]
        assert rows[0][-1] == "success"
        logs = run("get-logs", "--job", job).splitlines()
        assert [line for line in logs if not line.startswith("[pfsmount]")] == [
            "data", "out", "sum", str(both["apple"])]
        assert pfs.get("get-file", f"job-{job[:12]}", "master/0", "apple_seen") == \
            f"{both['apple']}\n".encode()

        # a job that serves (as Jupyter does) runs until stopped; it logs as it goes
        (tmp_path / "serve.json").write_text(jupyter_json("master/0", "master/0", "", [
            "echo serving $(cat /pfs/sum/apple)", "exec sleep 300"]))
        serving = run("create-job", "-f", "serve.json").strip()
        deadline = time.monotonic() + 30
        while "serving" not in (printed := run("get-logs", "--job", serving)):
            assert time.monotonic() < deadline, printed
            time.sleep(0.2)
        assert f"serving {day1['apple']}\n" in printed
        assert jobs()[0][0] == serving and jobs()[0][-1] == "running"
        started = time.monotonic()
        assert re.search(rf"^{serving}\s.*\skilled\s", run("job", "stop", serving), re.M)
        assert time.monotonic() - started < 15
        assert jobs()[0][0] == serving and jobs()[0][-1] == "killed"

        # bad input: one line, a non-zero exit, nothing changed
        def state() -> list[list[str]]:
            return [r[:3:2] for r in table(run("list-repo"))] + [r[:1] + r[-1:] for r in jobs()]

        before = state()
        line = error_line(pfs.run("get-file", "sum", "master/99", "apple"), code=3)
        assert "sum/master/99 not found: branch master has 2 commits (master/0 to master/1)" \
            in line
        (tmp_path / "bad.json").write_text(jupyter_json("master/1", "master/5", "", ["true"]))
        line = error_line(pfs.run("create-job", "-f", str(tmp_path / "bad.json")), code=3)
        assert "data/master/5 not found" in line
        error_line(pfs.run("inspect-commit", "data", f"{'e4060e15' * 4}/1"), code=2,
                   match="must be a branch, not a commit id")
        error_line(pfs.run("flush-commit", "data/master/7"), code=3, match="data/master/7")
        assert state() == before

        # `down` stops a serving job at once (it would run for ever); after `up` it is killed
        serving = run("create-job", "-f", "serve.json").strip()
        deadline = time.monotonic() + 30
        while "serving" not in run("get-logs", "--job", serving):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        started = time.monotonic()
        assert re.fullmatch(r"pfsmount stopped \(pid \d+\)\n", run("down"))
        assert time.monotonic() - started < 10
        run("up", "--no-mount")
        assert jobs()[0][0] == serving and jobs()[0][-1] == "killed"
    finally:
        pfs.run("down")
