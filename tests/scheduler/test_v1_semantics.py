"""Specs in Pachyderm's 1.3 form run with 1.x meaning, as Pachyderm 1.3's docs define it
("Pipeline Input Methods", "Incrementality"), on a real daemon with real bubblewrap (and the
real Docker engine for /pfs/prev in a container).

- ``map`` (BLOCK + DIFF) shows each job only what is new: for a file grown by ``put-file``
  (which appends, as 1.x did), only the appended bytes; its outputs are appended to the
  previous output.
- ``FILE + DIFF`` with ``/pfs/prev`` and ``overwrite`` keeps a running total: the docs' sum.
- ``reduce`` (FILE + NONE) and ``global`` (REPO + NONE) see all the data every job, split
  across ``parallelism`` containers by top-level file (reduce) or not at all (global); the
  results are the same with 1 and 3 containers.
- ``runEmpty`` false: a commit with nothing new runs nothing and moves no output.
- A field pfsmount does not implement is refused at create, by name, and nothing is created.

Every expected number is recomputed here from the raw data the test wrote.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pfsmount.errors import InvalidArgument
from scheduler.jobspec import parse_job_spec
from scheduler.spec import parse_specs
from tests.scheduler.conftest import IMAGE

if TYPE_CHECKING:
    from tests.scheduler.conftest import Pfsd

FRUITS = ("apple", "banana", "orange")


def sales(rng: random.Random, lines: int) -> str:
    return "".join(f"{rng.choice(FRUITS)} {rng.randrange(1, 500)}\n" for _ in range(lines))


def amounts(text: str, fruit: str) -> list[int]:
    return [int(b) for a, b in (line.split() for line in text.splitlines()) if a == fruit]


def v1(name: str, script: str, inputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A 1.3-form spec running ``script`` with sh."""
    transform = {"cmd": ["sh"], "stdin": [script], **extra.pop("transform", {})}
    return {"pipeline": {"name": name}, "transform": transform, "inputs": inputs, **extra}


FILTER = (  # the seed's filter, and how many lines of sales this job saw
    'for f in apple banana orange; do grep "^$f " /pfs/v1data/sales | '
    "awk '{print $2}' > /pfs/out/$f; done; wc -l < /pfs/v1data/sales > /pfs/out/seen")
SUM = (  # the docs' incremental sum: the new values plus the previous total
    "for f in /pfs/v1filter/apple /pfs/v1filter/banana /pfs/v1filter/orange; do "
    '[ -e "$f" ] || continue; n=$(basename $f); '
    "p=$(cat /pfs/prev/$n 2>/dev/null || echo 0); "
    "awk -v p=$p '{s+=$1} END {print s+p}' $f > /pfs/out/$n; done")


def put_file(pfsd: Pfsd, repo: str, path: str, text: str) -> None:
    """``pfsmount put-file REPO master PATH -c -f FILE``: appends, as 1.x did."""
    src = pfsd.root / f"upload-{repo}"
    src.write_text(text)
    pfsd.ok("put-file", repo, "master", path, "-c", "-f", src)


def test_map_then_incremental_sum_over_two_appends(pfsd: Pfsd) -> None:
    pfsd.repos("v1data")
    rng = random.Random(1313)
    first, second = sales(rng, 120), sales(rng, 90)
    put_file(pfsd, "v1data", "sales", first)
    pfsd.create(
        v1("v1filter", FILTER, [{"repo": {"name": "v1data"}, "method": "map"}],
           parallelism_spec={"strategy": "CONSTANT", "constant": "1"}),
        v1("v1sum", SUM, [{"repo": {"name": "v1filter"},
                           "method": {"partition": "FILE", "incremental": "DIFF"}}],
           transform={"overwrite": True}, parallelism="1"))
    pfsd.wait("v1data@master")
    raw = first
    for fruit in FRUITS:
        assert pfsd.get(f"v1sum@master:/{fruit}") == f"{sum(amounts(raw, fruit))}\n".encode()
    assert pfsd.get("v1filter@master:/seen").split() == [b"120"]

    put_file(pfsd, "v1data", "sales", second)  # grows sales by appending
    assert pfsd.get("v1data@master:/sales") == (first + second).encode()
    out = pfsd.wait("v1data@master")
    raw = first + second
    # map saw only the 90 appended lines; its outputs were appended to the previous ones
    assert pfsd.get("v1filter@master:/seen").split() == [b"120", b"90"]
    for fruit in FRUITS:
        got = pfsd.get(f"v1filter@master:/{fruit}").split()
        assert [int(x) for x in got] == amounts(raw, fruit)
    # the sum saw only the new values of each file and added /pfs/prev's total (overwrite)
    totals = {f: pfsd.get(f"v1sum@master:/{f}") for f in FRUITS}
    assert totals == {f: f"{sum(amounts(raw, f))}\n".encode() for f in FRUITS}
    assert sum(int(v) for v in totals.values()) == sum(int(x) for x in raw.split()[1::2])
    # what the previous job wrote is still there at master^
    assert pfsd.get("v1sum@master^:/apple") == f"{sum(amounts(first, 'apple'))}\n".encode()

    # runEmpty false: a commit with nothing new runs nothing, and nothing moves
    pfsd.put("v1data", {})
    assert pfsd.cli_wait("v1data@master") == {}
    job = pfsd.quick_job("v1filter")
    assert (job["state"], job["output"], job["datums"]) == ("success", None, 0), job
    assert "runEmpty" in job["error"]
    shown = pfsd.ok("job", "inspect", job["id"])
    assert "note: nothing to run" in shown and "error:" not in shown, shown
    assert pfsd.head("v1filter") == out["v1filter"]


RED = ('for f in /pfs/v1multi/*; do n=$(basename $f); '
       "awk '{s+=$1} END {print s}' $f > /pfs/out/$n; "
       "echo \"$n $(awk '{s+=$1} END {print s}' $f)\" >> /pfs/out/sums; done")
GLOB = ("ls /pfs/v1multi | wc -l > /pfs/out/files; "
        "cat /pfs/v1multi/* | awk '{s+=$1} END {print s}' > /pfs/out/total")


def test_reduce_and_global_with_one_and_three_containers(pfsd: Pfsd) -> None:
    pfsd.repos("v1multi")
    rng = random.Random(7)
    files = {f"part{i}": "".join(f"{rng.randrange(1000)}\n" for _ in range(rng.randrange(5, 40)))
             for i in range(5)}
    pfsd.put("v1multi", files)
    specs = []
    for p in (1, 3):
        specs.append(v1(f"v1red{p}", RED, [{"repo": {"name": "v1multi"}, "method": "reduce"}],
                        parallelism=p))
        specs.append(v1(f"v1glob{p}", GLOB, [{"repo": {"name": "v1multi"},
                                              "method": "global"}],
                        parallelism_spec={"constant": p}))
    pfsd.create(*specs)

    def check(files: dict[str, str]) -> None:
        pfsd.wait("v1multi@master")
        want = {n: sum(int(x) for x in t.split()) for n, t in files.items()}
        for p in (1, 3):
            red = pfsd.tree(f"v1red{p}")
            lines = red.pop("sums").decode().splitlines()
            assert sorted(lines) == sorted(f"{n} {s}" for n, s in want.items())
            assert red == {n: f"{s}\n".encode() for n, s in want.items()}
            glob = pfsd.tree(f"v1glob{p}")
            assert glob == {"files": f"{len(files)}\n".encode(),
                            "total": f"{sum(want.values())}\n".encode()}
        # reduce split the files across 3 containers (one with parallelism 1); global,
        # which every container must see whole, ran in one container either way
        assert [pfsd.quick_job(f"v1red{p}")["datums"] for p in (1, 3)] == [1, 3]
        assert [pfsd.quick_job(f"v1glob{p}")["datums"] for p in (1, 3)] == [1, 1]

    check(files)
    # a new commit: NONE inputs see all the data again and the output starts over
    files["part5"] = "".join(f"{rng.randrange(1000)}\n" for _ in range(12))
    pfsd.put("v1multi", {"part5": files["part5"]})
    check(files)


def test_prev_in_a_docker_container(pfsd: Pfsd, docker_ready: None) -> None:
    pfsd.repos("v1dk")
    pfsd.put("v1dk", {"n": "5\n"})
    script = ("j=$(cat /pfs/prev/jobs 2>/dev/null || echo 0); echo $((j + 1)) > /pfs/out/jobs; "
              "p=$(cat /pfs/prev/total 2>/dev/null || echo 0); "
              "awk -v p=$p '{s+=$1} END {print s+p}' /pfs/v1dk/n > /pfs/out/total; "
              "wc -l < /pfs/v1dk/n > /pfs/out/seen")
    pfsd.create(v1("v1dksum", script, [{"repo": {"name": "v1dk"}}],
                   transform={"image": IMAGE, "overwrite": True}))
    pfsd.wait("v1dk@master")
    assert pfsd.tree("v1dksum") == {"jobs": b"1\n", "seen": b"1\n", "total": b"5\n"}
    put_file(pfsd, "v1dk", "n", "7\n")
    pfsd.wait("v1dk@master")
    # the container saw the appended line only, and the previous output at /pfs/prev
    assert pfsd.tree("v1dksum") == {"jobs": b"2\n", "seen": b"1\n", "total": b"12\n"}


def test_incremental_input_crossed_with_a_reduce_one(pfsd: Pfsd) -> None:
    """The docs' "Multiple Inputs" example: foo is incremental (FILE + DIFF), bar is a
    reduce; only the input that changed since the last job shows its diff."""
    pfsd.repos("v1foo", "v1bar")
    seen = ("echo \"foo: $(ls /pfs/v1foo | tr '\\n' ' ')bar: $(ls /pfs/v1bar | tr '\\n' ' ')\" "
            "> /pfs/out/seen")
    pfsd.create(v1("v1cross", seen, [
        {"repo": {"name": "v1foo"}, "method": {"partition": "FILE", "incremental": "DIFF"}},
        {"repo": {"name": "v1bar"}, "method": "reduce"}], transform={"overwrite": True}))
    pfsd.put("v1foo", {"file-1": "1\n"})
    assert pfsd.wait("v1foo@master") == {}  # no data in bar yet: no job runs
    pfsd.put("v1bar", {"file-a": "a\n"})
    pfsd.wait("v1bar@master")
    assert pfsd.get("v1cross@master:/seen") == b"foo: file-1 bar: file-a \n"
    pfsd.put("v1foo", {"file-2": "2\n"})
    pfsd.wait("v1foo@master")
    assert pfsd.get("v1cross@master:/seen") == b"foo: file-2 bar: file-a \n"
    pfsd.put("v1bar", {"file-b": "b\n"})
    pfsd.wait("v1bar@master")
    assert pfsd.get("v1cross@master:/seen") == b"foo: file-1 file-2 bar: file-a file-b \n"


def test_full_incrementality_shows_changed_top_level_objects_whole(pfsd: Pfsd) -> None:
    """FULL ("FILE" in the docs): a change anywhere in a top-level directory shows all of
    it; the others are not shown."""
    pfsd.repos("v1states")
    pfsd.put("v1states", {"CA/v1": "1\n", "CA/v2": "2\n", "CO/v3": "3\n"})
    pfsd.create(v1("v1vendors", "cd /pfs/v1states && find . -type f | sort > /pfs/out/seen",
                   [{"repo": {"name": "v1states"},
                     "method": {"partition": "FILE", "incremental": "FULL"}}],
                   transform={"overwrite": True}))
    pfsd.wait("v1states@master")
    assert pfsd.get("v1vendors@master:/seen") == b"./CA/v1\n./CA/v2\n./CO/v3\n"
    pfsd.put("v1states", {"CA/v2": "2\n22\n"})
    pfsd.wait("v1states@master")
    assert pfsd.get("v1vendors@master:/seen") == b"./CA/v1\n./CA/v2\n"


def test_map_splits_a_big_file_into_line_blocks_across_containers(pfsd: Pfsd) -> None:
    """BLOCK partition: a 20 MiB file is three blocks of whole lines (at most 8 MiB), one
    per container with parallelism 3; a container's lines never split."""
    pfsd.repos("v1big")
    line = b"x" * 99 + b"\n"
    data = line * (20 * 1024 * 1024 // len(line))
    pfsd.put("v1big", {"big": data})
    pfsd.create(v1("v1blocks", "wc -c < /pfs/v1big/big > /pfs/out/bytes; "
                               "tail -c 1 /pfs/v1big/big | od -An -c | tr -d ' ' > /pfs/out/last",
                   [{"repo": {"name": "v1big"}, "method": "map"}], parallelism=3))
    pfsd.wait("v1big@master")
    assert pfsd.quick_job("v1blocks")["datums"] == 3
    sizes = [int(x) for x in pfsd.get("v1blocks@master:/bytes").split()]
    assert sum(sizes) == len(data) and max(sizes) <= 8 << 20 and len(sizes) == 3, sizes
    assert all(size % len(line) == 0 for size in sizes), sizes
    assert pfsd.get("v1blocks@master:/last") == b"\\n\n" * 3


@pytest.mark.parametrize(("spec", "field"), [
    (v1("v1bad", "true", [{"repo": {"name": "v1data"}}],
        transform={"secrets": [{"name": "s", "mountPath": "/s"}]}), "transform.secrets"),
    (v1("v1bad", "true", [{"repo": {"name": "v1data"}}], gc_policy={"success": "1h"}),
     "gc_policy"),
    (v1("v1bad", "true", [{"repo": {"name": "v1data"}, "lazy": True}]), r"inputs[0].lazy"),
    ({"pipeline": {"name": "v1bad"}, "transform": {"cmd": ["true"], "overwrite": True},
      "input": {"pfs": {"repo": "v1data"}}}, "transform.overwrite"),
])
def test_unsupported_field_is_refused_by_name(pfsd: Pfsd, spec: dict[str, Any], field: str
                                              ) -> None:
    with pfsd.api() as c:
        if "v1data" not in {r.name for r in c.list_repos()}:
            c.create_repo("v1data")
    line = pfsd.fails("pipeline", "create", "-f", pfsd.spec_file(spec))
    assert field in line, line
    assert "v1bad" not in pfsd.ok("pipeline", "list")


def spec_of(**fields: Any) -> Any:
    """A 1.3-form spec with ``fields`` set (or replaced), as ``pipeline create`` reads it."""
    return parse_specs(json.dumps({**v1("p", "true", [{"repo": {"name": "d"}}]), **fields}))[0]


def test_methods_and_parallelism_read_as_1x_wrote_them() -> None:
    def method(m: Any) -> tuple[str, str]:
        s = parse_specs(json.dumps(v1("p", "true", [{"repo": {"name": "d"}, "method": m}])))[0]
        assert s.v1 is not None
        return s.v1.inputs[0].method.partition, s.v1.inputs[0].method.incremental

    assert method("map") == ("BLOCK", "DIFF") and method(None) == ("BLOCK", "DIFF")
    assert method("reduce") == ("FILE", "NONE") and method("global") == ("REPO", "NONE")
    assert method({"partition": "FILE", "incremental": "FILE"}) == ("FILE", "FULL")
    assert method({"partition": "REPO", "incremental": "FULL"}) == ("REPO", "FULL")
    assert method({"partition": "BLOCK", "incremental": True}) == ("BLOCK", "DIFF")
    assert method({"partition": "FILE", "incremental": False}) == ("FILE", "NONE")
    assert method({"partition": "file", "incrementality": True}) == ("FILE", "DIFF")
    assert method({"partition": "FILE"}) == ("FILE", "NONE")  # the proto's default
    assert method("incremental_reduce") == ("FILE", "DIFF")
    assert spec_of(parallelism=4).parallelism == 4
    assert spec_of(parallelism_spec={"strategy": "COEFFICIENT", "coefficient": 2.5}
                   ).parallelism == 2
    assert spec_of(parallelism_spec={"strategy": "CONSTANT", "constant": "3"}).parallelism == 3
    s = parse_specs(json.dumps(v1("p", "true", [{"repo": {"name": "d"}, "runEmpty": True}],
                                  transform={"overwrite": True})))[0]
    assert s.v1 is not None and s.v1.inputs[0].run_empty and s.v1.overwrite
    # the 1.4 form (globs) keeps glob datums
    assert parse_specs(json.dumps(v1("p", "true", [{"repo": {"name": "d"}, "glob": "/*"}]))
                       )[0].v1 is None


@pytest.mark.parametrize(("fields", "field"), [
    ({"inputs": [{"repo": {"name": "d"}, "method": "sort"}]}, r"inputs\[0\]\.method"),
    ({"inputs": [{"repo": {"name": "d"}, "method": {"partition": "LINE"}}]},
     r"inputs\[0\]\.method\.partition"),
    ({"inputs": [{"repo": {"name": "d"}, "method": {"incremental": "SOME"}}]},
     r"inputs\[0\]\.method\.incremental"),
    ({"inputs": [{"repo": {"name": "d"}, "method": {"partition_unit": "FILE"}}]},
     r"inputs\[0\]\.method\.partition_unit"),
    ({"inputs": [{"repo": {"name": "d"}, "method": "map"},
                 {"repo": {"name": "e"}, "glob": "/*"}]}, r"inputs\[0\]\.method"),
    ({"parallelism": 2, "parallelism_spec": {"constant": 2}}, r"parallelism"),
    ({"parallelism_spec": {"strategy": "SOMETIMES"}}, r"parallelism_spec\.strategy"),
    ({"parallelism_spec": {"strategy": "COEFFICIENT"}}, r"parallelism_spec\.coefficient"),
    ({"inputs": [{"repo": {"name": "prev"}}]}, r"prev"),
])
def test_bad_1x_fields_are_refused_by_name(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        spec_of(**fields)
    assert "\n" not in info.value.message
    assert re.search(field, info.value.message), info.value.message


def test_examples_parse_with_the_meaning_their_form_gives() -> None:
    """The shipped examples: the seed's 1.3-form pipelines get 1.x meaning, the others keep
    2.x meaning, and the one-off job spec reads as a 1.x job."""
    here = Path(__file__).resolve().parents[2] / "examples" / "fruit_stand"
    jobs = {"compare_days.json"}
    for path in sorted(here.glob("*.json")):
        if path.name in jobs:
            assert parse_job_spec(path.read_text()).inputs, path.name
            continue
        specs = parse_specs(path.read_text())
        legacy = path.name.endswith("_1x.json")
        assert specs and all((s.v1 is not None) == legacy for s in specs), path.name
