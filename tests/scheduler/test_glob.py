"""Pachyderm's glob patterns (``pfsmount.pfs.glob``): what a pattern matches and captures, as
Pachyderm's docs show it, and the datums a ``pfs`` input makes with it over a real store."""

from __future__ import annotations

import json

import pytest

from pfsmount.errors import InvalidArgument
from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from pfsmount.pfs.glob import compile_glob, expand
from scheduler.datums import datums
from scheduler.spec import parse_specs


@pytest.mark.parametrize(("pattern", "captures"), [
    # The table of Pachyderm's "Join Input" and "Group Input" pages, for /foo/bar-123/ABC.txt
    ("/(*)", None),  # one level: the file is two levels below
    ("/*/bar-(*)/*.txt", ("123",)),
    ("/(*)/*/(??)*.txt", ("foo", "AB")),
    ("/*/(bar-(123))/*", ("bar-123", "123")),
    # the rest of the syntax
    ("/**/(*).txt", ("ABC",)),
    ("/{foo,baz}/*/[A-C]*", ()),
    ("/[!f]*/*/*", None),
    ("/foo/bar-1?3/ABC.txt", ()),
    ("/*", None),
])
def test_what_a_pattern_matches_and_captures(pattern: str, captures: tuple[str, ...] | None
                                             ) -> None:
    assert compile_glob(pattern).match("/foo/bar-123/ABC.txt") == captures


def test_group_example_captures_the_patient() -> None:
    g = compile_glob("/*-(*)-lab*.txt")
    assert g.match("/LIPID-patientID1-labID2.txt") == ("patientID1",)
    assert expand("$1", ("p1",)) == "p1" and expand("${2}-$1", ("a", "b")) == "b-a"


def test_root_and_trailing_slash() -> None:
    assert compile_glob("/").match("/") == ()
    assert compile_glob("/*/").pattern == "/*"


@pytest.mark.parametrize(("glob", "why"), [
    ("*", "must start with /"), ("/a/../b", "'..'"), ("/(*", "unclosed '('"),
    ("/*)", "unmatched ')'"), ("/[ab", "unclosed '['"), ("/{a,b", "unclosed '{'"),
])
def test_a_wrong_pattern_is_refused_naming_the_field(glob: str, why: str) -> None:
    spec = {"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
            "input": {"pfs": {"repo": "data", "glob": glob}}}
    with pytest.raises(InvalidArgument) as info:
        parse_specs(json.dumps(spec))
    assert info.value.message.startswith(f"spec field input.pfs.glob {glob!r}")
    assert why in info.value.message


def test_a_pfs_input_makes_a_datum_per_match(pfs: Pfs) -> None:
    pfs.repos.create("data")
    for path in ("/a/1.txt", "/a/2.csv", "/b/3.txt", "/top.txt", "/(x).txt"):
        pfs.files.put("data@master", Data(path.encode()), path=path)
    head = {"data@master": pfs.commits.inspect("data@master").id}

    def paths(glob: str) -> list[str]:
        spec = parse_specs(json.dumps({
            "pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
            "input": {"pfs": {"repo": "data", "glob": glob}}}))[0]
        return [f.path for d in datums(pfs, spec.tree, head) for f in d.files]

    assert paths("/*/(*).txt") == ["/a/1.txt", "/b/3.txt"]  # captures match as * would
    assert paths("/*") == ["/(x).txt", "/a", "/b", "/top.txt"]
    assert paths("/") == ["/"]
    assert paths("/**.csv") == ["/a/2.csv"]
    assert paths(r"/\(x\).txt") == ["/(x).txt"]  # escaped: the parentheses themselves
    assert paths("/(*).json") == []
