"""Join and group inputs through a live daemon and the real bubblewrap runner, on the shapes of
Pachyderm's own docs ("Join Input", "Group Input"), with the datum counts and outputs those
pages give: an inner join makes a datum only where every input has the key, an outer input
adds its unmatched files, a group makes one datum per key with every file of that key. Specs in
camelCase mean what snake_case ones do; a join nests in a cross; a glob that matches nothing
makes a job of 0 datums that says so; a join_on that names no capture group is refused."""

from __future__ import annotations

import json
from typing import Any

from pfsmount.api.pipeline_client import PipelineClient
from tests.scheduler.conftest import Pfsd

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
