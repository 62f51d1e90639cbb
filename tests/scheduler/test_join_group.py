"""Join and group inputs through a live daemon and the real bubblewrap runner, on the shapes of
Pachyderm's own docs ("Join Input", "Group Input"), with the datum counts and outputs those
pages give: an inner join makes a datum only where every input has the key, an outer input
adds its unmatched files, a group makes one datum per key with every file of that key. Specs in
camelCase mean what snake_case ones do; a join nests in a cross; a glob that matches nothing
makes a job of 0 datums that says so; a join_on that names no capture group is refused. The
datums of multiway outer joins and of a join inside a group are checked over a real store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pfsmount.api.pipeline_client import PipelineClient
from pfsmount.errors import InvalidArgument
from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from scheduler.datums import datums
from scheduler.spec import parse_specs
from tests.scheduler.conftest import IMAGE, Pfsd

# Pachyderm's join example: readings/ID1234/file1..5.txt and parameters/file1..8.txt
READINGS = {f"ID1234/file{i}.txt": f"r{i}\n" for i in range(1, 6)}
PARAMETERS = {f"file{i}.txt": f"p{i}\n" for i in range(1, 9)}
# What a datum writes: its key's file, holding what it read from each input present.
JOINED = ("k=$PACH_DATUM_parameters_JOIN_ON; "
          "{ cat /pfs/readings/*/* 2>/dev/null; cat /pfs/parameters/*; } > /pfs/out/$k")


def join(outer: bool = False, camel: bool = False) -> dict[str, Any]:
    on, out = ("joinOn", "outerJoin") if camel else ("join_on", "outer_join")
    return {"join": [
        Pfsd.pin("readings", "/*/(*).txt", **{on: "$1"}),
        Pfsd.pin("parameters", "/(*).txt", **{on: "$1", **({out: True} if outer else {})}),
    ]}


def test_inner_and_outer_join(pfsd: Pfsd) -> None:
    pfsd.repos("readings", "parameters")
    pfsd.put("readings", READINGS)
    pfsd.put("parameters", PARAMETERS)
    pfsd.create(pfsd.spec("inner", JOINED, join()),
                pfsd.spec("outer", JOINED, join(outer=True)),
                pfsd.spec("camel", JOINED, join(camel=True)))
    pfsd.wait("parameters@master")

    # Inner: files 1-5 match, 6-8 do not: five datums, each a reading and its parameters.
    inner = pfsd.quick_job("inner")
    assert (inner["state"], inner["datums"]) == ("success", 5)
    assert pfsd.tree("inner") == {f"file{i}": f"r{i}\np{i}\n".encode() for i in range(1, 6)}

    # Outer on parameters: those five, and one more for each unmatched parameter file,
    # which sees no /pfs/readings at all.
    outer = pfsd.quick_job("outer")
    assert (outer["state"], outer["datums"]) == ("success", 8)
    assert pfsd.tree("outer") == {
        **{f"file{i}": f"r{i}\np{i}\n".encode() for i in range(1, 6)},
        **{f"file{i}": f"p{i}\n".encode() for i in range(6, 9)}}

    # joinOn, outerJoin in camelCase: the same input, the same datums.
    with pfsd.api() as c:
        specs = {p.name: p.spec for p in PipelineClient(c).list()}
    assert specs["camel"].input == specs["inner"].input
    assert pfsd.quick_job("camel")["datums"] == 5
    assert pfsd.tree("camel") == pfsd.tree("inner")


def test_group_by_a_capture_group(pfsd: Pfsd) -> None:
    # Pachyderm's group example: lab results grouped by patient, three datums.
    pfsd.repos("labresults")
    pfsd.put("labresults", {f"LIPID-patientID{p}-labID{lab}.txt": f"{p}{lab}\n"
                            for p, lab in ((1, 1), (2, 1), (1, 2), (3, 3), (1, 3), (2, 3))})
    pfsd.create(pfsd.spec(
        "group", "ls /pfs/labresults | tr '\\n' ' ' > /pfs/out/$PACH_DATUM_labresults_GROUP_BY",
        {"group": [pfsd.pin("labresults", "/*-(*)-lab*.txt", group_by="$1")]}))
    pfsd.wait("labresults@master")
    job = pfsd.quick_job("group")
    assert (job["state"], job["datums"]) == ("success", 3)
    assert pfsd.tree("group") == {
        "patientID1": b"LIPID-patientID1-labID1.txt LIPID-patientID1-labID2.txt "
                      b"LIPID-patientID1-labID3.txt ",
        "patientID2": b"LIPID-patientID2-labID1.txt LIPID-patientID2-labID3.txt ",
        "patientID3": b"LIPID-patientID3-labID3.txt "}


def test_a_group_in_docker_sees_every_file_of_its_key(pfsd: Pfsd, docker_ready: None) -> None:
    # Several files of one input in one datum, in a container: each at its own path.
    pfsd.repos("lab")
    pfsd.put("lab", {"a-p1-x.txt": "1", "b-p1-y.txt": "2", "c-p2-z.txt": "3"})
    pfsd.create(pfsd.spec(
        "grp", ["sh", "-c", "ls /pfs/lab > /pfs/out/$PACH_DATUM_lab_GROUP_BY"],
        {"group": [pfsd.pin("lab", "/*-(*)-*.txt", group_by="$1")]}, image=IMAGE))
    pfsd.wait("lab@master")
    assert pfsd.quick_job("grp")["datums"] == 2
    assert pfsd.tree("grp") == {"p1": b"a-p1-x.txt\nb-p1-y.txt\n", "p2": b"c-p2-z.txt\n"}


def test_a_join_inside_a_cross(pfsd: Pfsd) -> None:
    # Each joined pair, crossed with each of two models: 3 keys x 2 = 6 datums.
    pfsd.repos("left", "right", "models")
    pfsd.put("left", {f"{k}.csv": k for k in ("a", "b", "c", "d")})
    pfsd.put("right", {f"{k}.json": k.upper() for k in ("a", "b", "c", "x")})
    pfsd.put("models", {"m1": "1", "m2": "2"})
    pfsd.create(pfsd.spec(
        "nested",
        "echo $(cat $left $right $models) > /pfs/out/$PACH_DATUM_left_JOIN_ON-$(basename $models)",
        {"cross": [{"join": [pfsd.pin("left", "/(*).csv", join_on="$1"),
                             pfsd.pin("right", "/(*).json", join_on="$1")]},
                   pfsd.pin("models", "/*")]}))
    pfsd.wait("models@master")
    job = pfsd.quick_job("nested")
    assert (job["state"], job["datums"]) == ("success", 6)
    assert pfsd.tree("nested") == {f"{k}-m{m}": f"{k}{k.upper()}{m}\n".encode()
                                   for k in "abc" for m in (1, 2)}


def test_a_glob_matching_nothing_makes_a_job_of_no_datums(pfsd: Pfsd) -> None:
    pfsd.repos("csvs", "jsons")
    pfsd.put("csvs", {"a.csv": "1"})
    pfsd.put("jsons", {"a.json": "2"})
    pfsd.create(pfsd.spec("nothing", "touch /pfs/out/x", {"join": [
        pfsd.pin("csvs", "/(*).txt", join_on="$1"), pfsd.pin("jsons", "/(*).json", join_on="$1")]}))
    pfsd.wait("jsons@master")
    job = pfsd.quick_job("nothing")
    assert (job["state"], job["datums"], job["processed"]) == ("success", 0, 0)
    assert pfsd.tree("nothing") == {}
    shown = pfsd.ok("job", "inspect", job["id"])
    assert "0 run, 0 skipped, 0 failed / 0" in shown
    assert "note: no datums: glob /(*).txt of input csvs matches nothing in csvs@" in shown


def test_a_join_on_that_is_no_capture_group_is_refused(pfsd: Pfsd) -> None:
    pfsd.repos("plain")
    for pin, field in ((pfsd.pin("plain", "/*", join_on="$1"), "input.join[0].pfs.join_on"),
                       (pfsd.pin("plain", "/(*)"), "input.join[0].pfs.join_on"),
                       (pfsd.pin("plain", "/(*)", joinOn="x"), "input.join[0].pfs.join_on")):
        spec = pfsd.spec("refused", "true", {"join": [pin, pfsd.pin("plain", "/(*)",
                                                                     name="p2", join_on="$1")]})
        line = pfsd.fails("pipeline", "create", "-f", pfsd.spec_file(spec))
        assert field in line, line
    assert "refused" not in json.dumps(pfsd.json("pipeline", "list"))


def test_empty_files_shows_names_without_content(pfsd: Pfsd) -> None:
    # A join of a full input with an empty one, and a whole commit shown empty.
    pfsd.repos("full", "names")
    pfsd.put("full", {"a.txt": "full a", "b.txt": "full b"})
    pfsd.put("names", {"a.csv": "12345", "b.csv": "678", "deep/er/c.csv": "9"})
    sizes = ("for f in $(find /pfs/full /pfs/names -type f | sort); do "
             "echo $f $(wc -c < $f); done > /pfs/out/")
    pfsd.create(
        pfsd.spec("emptyjoin", sizes + "$PACH_DATUM_names_JOIN_ON", {"join": [
            pfsd.pin("full", "/(*).txt", join_on="$1"),
            pfsd.pin("names", "/(*).csv", join_on="$1", emptyFiles=True)]}),
        pfsd.spec("emptyall", sizes + "all", pfsd.pin("names", "/", empty_files=True)))
    pfsd.wait("names@master")
    assert pfsd.tree("emptyjoin") == {
        "a": b"/pfs/full/a.txt 6\n/pfs/names/a.csv 0\n",
        "b": b"/pfs/full/b.txt 6\n/pfs/names/b.csv 0\n"}
    assert pfsd.tree("emptyall") == {
        "all": b"/pfs/names/a.csv 0\n/pfs/names/b.csv 0\n/pfs/names/deep/er/c.csv 0\n"}


# -- the datums themselves, over a real store (no daemon) ---------------------------------------


def spec_datums(pfs: Pfs, inp: dict[str, Any]) -> list[list[str]]:
    """The datums ``inp`` makes over the heads of its repos: each as "input:/path" in order."""
    spec = parse_specs(json.dumps(Pfsd.spec("p", "true", inp)))[0]
    heads = {b: pfs.commits.inspect(b).id for b in spec.tree.branches()}
    return [[f"{f.input}:{f.path}" for f in d.files] for d in datums(pfs, spec.tree, heads)]


def test_multiway_outer_join_and_nesting_in_a_group(pfs: Pfs) -> None:
    for repo, paths in (("a", ["1.x", "2.x"]), ("b", ["2.y", "3.y"]), ("c", ["3.z", "4.z"])):
        pfs.repos.create(repo)
        for path in paths:
            pfs.files.put(f"{repo}@master", Data(b"."), path=f"/{path}")
    a, b = Pfsd.pin("a", "/(*).x", join_on="$1"), Pfsd.pin("b", "/(*).y", join_on="$1")
    # Inner, two ways: only 2 is in both.
    assert spec_datums(pfs, {"join": [a, b]}) == [["a:/2.x", "b:/2.y"]]
    # b outer: its unmatched 3 too (a right join); a's unmatched 1 is not.
    b_outer = Pfsd.pin("b", "/(*).y", join_on="$1", outer_join=True)
    assert spec_datums(pfs, {"join": [a, b_outer]}) == [["a:/2.x", "b:/2.y"], ["b:/3.y"]]
    # Three ways, c outer: 3 is in b and c (c is outer: kept, without a), 4 in c alone.
    c_outer = Pfsd.pin("c", "/(*).z", join_on="$1", outer_join=True)
    assert spec_datums(pfs, {"join": [a, b, c_outer]}) == [["b:/3.y", "c:/3.z"], ["c:/4.z"]]
    # A group over a union: every file of each key, from whichever input has it.
    assert spec_datums(pfs, {"group": [{"union": [
        Pfsd.pin("a", "/(*).x", group_by="$1"), Pfsd.pin("b", "/(*).y", group_by="$1")]}]}) == [
        ["a:/1.x"], ["a:/2.x", "b:/2.y"], ["b:/3.y"]]
    # A join inside a group: the files of the joined pairs (only 2), grouped by their key.
    assert spec_datums(pfs, {"group": [{"join": [
        Pfsd.pin("a", "/(*).x", join_on="$1", group_by="$1"),
        Pfsd.pin("b", "/(*).y", join_on="$1", group_by="$1")]}]}) == [["a:/2.x", "b:/2.y"]]


def test_fields_refused_accepted_and_misplaced() -> None:
    def refusal(**extra: Any) -> str:
        spec = Pfsd.spec("p", "true", extra.pop("input", Pfsd.pin("a")), **extra)
        with pytest.raises(InvalidArgument) as info:
            parse_specs(json.dumps(spec))
        return info.value.message

    assert refusal(s3_out=True) == "spec field s3_out is not supported by pfsmount"
    assert refusal(input=Pfsd.pin("a", s3=True)).startswith(
        "spec field input.pfs.s3 is not supported by pfsmount")
    assert refusal(input={"cross": [Pfsd.pin("a", "/(*)", join_on="$1"), Pfsd.pin("b")]}) == (
        "spec field join_on of input a has a meaning only under input.join, and a is not in one")
    lazy = parse_specs(json.dumps(Pfsd.spec("p", "true", Pfsd.pin("a", lazy=True))))[0]
    assert lazy.input["pfs"]["lazy"] is True
