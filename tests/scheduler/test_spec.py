"""Reading pipeline specs: every form DESIGN promises, and one line naming the field when wrong.

No daemon: ``parse_specs`` is what ``pipeline create -f`` runs on the file's text, so what it
returns is what a user's pipeline becomes. The checks that need the store (unknown repos,
cycles) are in ``test_pipelines.py``, through the command.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pfsmount.errors import InvalidArgument
from scheduler.inputs import Cross, PfsInput, Union
from scheduler.spec import parse_specs

FILTER: dict[str, Any] = {
    "pipeline": {"name": "filter"},
    "transform": {"cmd": ["sh"], "stdin": ["grep apple /pfs/data/sales > /pfs/out/apple"]},
    "input": {"pfs": {"repo": "data", "glob": "/"}},
}
SUM: dict[str, Any] = {
    "pipeline": {"name": "sum"},
    "transform": {"cmd": ["sh", "-c", "cat /pfs/filter/* > /pfs/out/total"]},
    "input": {"pfs": {"repo": "filter", "glob": "/*"}},
}


def refused(text: str) -> str:
    """The one-line message ``parse_specs`` refuses ``text`` with."""
    with pytest.raises(InvalidArgument) as info:
        parse_specs(text)
    message = info.value.message
    assert "\n" not in message, f"the refusal is not one line: {message!r}"
    return message


def test_json_objects_back_to_back() -> None:
    # As Pachyderm's examples ship them: no separator at all, or only whitespace.
    for text in (json.dumps(FILTER) + json.dumps(SUM),
                 json.dumps(FILTER, indent=2) + "\n\n" + json.dumps(SUM, indent=2) + "\n"):
        specs = parse_specs(text)
        assert [s.name for s in specs] == ["filter", "sum"]
        assert specs[0].transform.stdin == FILTER["transform"]["stdin"]
        assert specs[1].transform.cmd == ["sh", "-c", "cat /pfs/filter/* > /pfs/out/total"]
        assert specs[0].tree == PfsInput(repo="data", glob="/", name="data")


def test_json_list_of_specs() -> None:
    assert [s.name for s in parse_specs(json.dumps([FILTER, SUM]))] == ["filter", "sum"]


def test_yaml_multi_document() -> None:
    text = """\
pipeline:
  name: filter
transform:
  cmd: [sh]
  stdin:
    - grep apple /pfs/data/sales > /pfs/out/apple
input:
  pfs: {repo: data, glob: /}
---
pipeline: {name: sum}
transform:
  cmd: [sh, -c, "cat /pfs/filter/* > /pfs/out/total"]
input:
  pfs:
    repo: filter
    glob: "/*"
"""
    yaml_specs = parse_specs(text)
    json_specs = parse_specs(json.dumps(FILTER) + json.dumps(SUM))
    assert yaml_specs == json_specs


def test_camel_case_and_snake_case_read_the_same() -> None:
    snake = {
        "pipeline": {"name": "edges"},
        "transform": {"cmd": ["sh"], "stdin": ["true"], "working_dir": "/pfs",
                      "accept_return_code": [1, 2], "env": {"MY_Var": "x", "camelKey": "y"}},
        "input": {"pfs": {"repo": "images", "branch": "dev", "glob": "/*/*", "name": "img"}},
        "parallelism_spec": {"constant": 4},
        "datum_tries": 5,
        "datum_timeout": "2m",
        "output_branch": "out",
        "description": "d",
    }
    camel = {
        "pipeline": {"name": "edges"},
        "transform": {"cmd": ["sh"], "stdin": ["true"], "workingDir": "/pfs",
                      "acceptReturnCode": [1, 2], "env": {"MY_Var": "x", "camelKey": "y"}},
        "input": {"pfs": {"repo": "images", "branch": "dev", "glob": "/*/*", "name": "img"}},
        "parallelismSpec": {"constant": "4"},
        "datumTries": 5,
        "datumTimeout": "2m",
        "outputBranch": "out",
        "description": "d",
    }
    a, b = parse_specs(json.dumps(snake))[0], parse_specs(json.dumps(camel))[0]
    assert a == b
    assert a.transform.working_dir == "/pfs"
    assert a.transform.accept_return_code == [1, 2]
    assert a.transform.env == {"MY_Var": "x", "camelKey": "y"}  # env names keep their case
    assert (a.parallelism, a.datum_tries, a.datum_timeout) == (4, 5, 120.0)
    assert a.output_branch == "out"
    assert a.tree == PfsInput(repo="images", branch="dev", glob="/*/*", name="img")


def test_defaults() -> None:
    s = parse_specs(json.dumps({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
                                "input": {"pfs": {"repo": "data"}}}))[0]
    assert s.tree == PfsInput(repo="data", branch="master", glob="/*", name="data")
    assert s.datum_tries == 3
    assert s.parallelism == 1
    assert s.output_branch == "master"
    assert s.datum_timeout is None
    assert not s.legacy


def test_1x_atom_input() -> None:
    text = json.dumps({
        "pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
        "input": {"cross": [{"atom": {"repo": "a", "glob": "/*"}},
                            {"atom": {"repo": "b", "glob": "/"}}]},
    })
    s = parse_specs(text)[0]
    assert s.tree == Cross((PfsInput(repo="a", glob="/*", name="a"),
                            PfsInput(repo="b", glob="/", name="b")))
    assert not s.legacy  # `atom` is only a spelling; the 2.x collision rule holds


def test_1_3_inputs_list() -> None:
    one = parse_specs("""
pipeline: {name: wordcount}
transform: {cmd: [sh]}
inputs:
  - repo: {name: docs}
""")[0]
    assert one.tree == PfsInput(repo="docs", glob="/*", name="docs")
    assert one.legacy

    reduce = parse_specs(json.dumps({
        "pipeline": {"name": "total"}, "transform": {"cmd": ["sh"]},
        "inputs": [{"repo": {"name": "counts"}, "method": "reduce"}],
    }))[0]
    assert reduce.tree == PfsInput(repo="counts", glob="/", name="counts")

    crossed = parse_specs(json.dumps({
        "pipeline": {"name": "join"}, "transform": {"cmd": ["sh"]},
        "inputs": [{"repo": {"name": "left"}, "method": "map"},
                   {"repo": {"name": "right"}, "method": "reduce"},
                   {"repo": {"name": "third"}, "method": "global"}],
    }))[0]
    assert crossed.tree == Cross((
        PfsInput(repo="left", glob="/*", name="left"),
        PfsInput(repo="right", glob="/", name="right"),
        PfsInput(repo="third", glob="/", name="third"),
    ))
    assert crossed.legacy and crossed.v1 is not None


def test_union_and_cross_nest() -> None:
    s = parse_specs(json.dumps({
        "pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
        "input": {"union": [{"pfs": {"repo": "a"}},
                            {"cross": [{"pfs": {"repo": "b"}}, {"pfs": {"repo": "c"}}]}]},
    }))[0]
    assert [leaf.repo for leaf in s.tree.leaves()] == ["a", "b", "c"]
    assert isinstance(s.tree, Union) and isinstance(s.tree.inputs[1], Cross)


@pytest.mark.parametrize(("spec", "field"), [
    ({"transform": {"cmd": ["true"]}, "input": {"pfs": {"repo": "d"}}}, r"pipeline\.name"),
    ({"pipeline": {}, "transform": {"cmd": ["true"]}, "input": {"pfs": {"repo": "d"}}},
     r"pipeline\.name"),
    ({"pipeline": {"name": "p"}, "input": {"pfs": {"repo": "d"}}}, r"\btransform\b"),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": []}, "input": {"pfs": {"repo": "d"}}},
     r"transform\.cmd"),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}}, r"\binput\b"),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "input": {"pfs": {}}},
     r"input\.pfs\.repo"),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
      "input": {"pfs": {"repo": "d", "glob": "*"}}}, r"input\.pfs\.glob"),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
      "input": {"pfs": {"repo": "d", "glob": "/a/../b"}}}, r"input\.pfs\.glob"),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
      "input": {"pfs": {"repo": "d", "glob": "/[ab"}}}, r"input\.pfs\.glob"),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
      "input": {"cross": [{"pfs": {"repo": "a"}}, {"pfs": {"repo": "b", "glob": "*/x"}}]}},
     r"input\.cross\[1\]\.pfs\.glob"),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
      "inputs": [{"repo": {"name": "a"}, "glob": "x"}]}, r"inputs\[0\]\.glob"),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
      "input": {"pfs": {"repo": "d"}}, "datum_tries": 0}, r"datum_tries"),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
      "input": {"pfs": {"repo": "d"}, "cross": []}}, r"\binput\b"),
])
def test_bad_spec_is_refused_naming_the_field(spec: dict[str, object], field: str) -> None:
    message = refused(json.dumps(spec))
    assert message.startswith("spec field "), message
    assert re.search(field, message), f"{message!r} does not name {field!r}"


def test_input_is_own_output_is_refused() -> None:
    message = refused(json.dumps({
        "pipeline": {"name": "loop"}, "transform": {"cmd": ["true"]},
        "input": {"cross": [{"pfs": {"repo": "data"}}, {"pfs": {"repo": "loop"}}]}}))
    assert "input" in message and "loop" in message and "own output" in message, message


def test_not_a_spec_at_all() -> None:
    assert "JSON" in refused('{"pipeline": {"name": "p"},')
    assert "no pipeline" in refused("   \n")
    assert "object" in refused("- a\n- b\n")
