"""A wrong spec is refused whole, before anything is stored; a stored record that cannot be
read never keeps the daemon from starting.

``parse_specs`` is checked directly for every field's type; the rest goes through the real
``pfsmount`` command against a daemon that does not mount (pipelines are created and
listed there; none needs to run).
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

from pfsmount.errors import InvalidArgument
from pfsmount.pfs import Pfs
from scheduler.records import Records
from scheduler.spec import parse_specs
from tests.conftest import Pfsmount

BASE: dict[str, Any] = {"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
                        "input": {"pfs": {"repo": "data"}}}
ISSUE_SPEC = {"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
              "inputs": [{"repo": {"name": "data"}, "name": 5}]}


def with_(**fields: Any) -> str:
    spec = json.loads(json.dumps(BASE))
    for dotted, value in fields.items():
        *path, last = dotted.split("__")
        node = spec
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return json.dumps(spec)


def deep(levels: int) -> dict[str, Any]:
    """An input of crosses nested ``levels`` deep."""
    node: dict[str, Any] = {"pfs": {"repo": "data"}}
    for _ in range(levels):
        node = {"cross": [node]}
    return node


@pytest.mark.parametrize(("text", "field"), [
    (json.dumps(ISSUE_SPEC), r"inputs\[0\]\.name"),
    (json.dumps({**ISSUE_SPEC, "inputs": [{"repo": {"name": "data"}, "name": "../usr"}]}),
     r"\.\./usr"),
    (json.dumps({**ISSUE_SPEC, "inputs": [{"repo": {"name": "data"}, "branch": ["x"]}]}),
     r"inputs\[0\]\.branch"),
    (with_(input__pfs__name="../usr"), r"\.\./usr"),
    (with_(input__pfs__name=5), r"input\.pfs\.name"),
    (with_(input__pfs__repo=None), r"input\.pfs\.repo"),
    (with_(pipeline__name=None), r"pipeline\.name"),
    (with_(pipeline__name=["p"]), r"pipeline\.name"),
    (with_(transform__accept_return_code=["x"]), r"transform\.accept_return_code\[0\]"),
    (with_(transform__cmd=["true", 5]), r"transform\.cmd\[1\]"),
    (with_(transform__stdin="echo"), r"transform\.stdin"),
    (with_(transform__env={"A": ["x"]}), r"transform\.env"),
    (with_(transform__image=5), r"transform\.image"),
    (with_(description=5), r"\bdescription\b"),
    (with_(datum_tries="many"), r"datum_tries"),
    (with_(datum_tries=10**12), r"datum_tries"),
    (with_(datum_timeout="abc"), r"datum_timeout"),
    (with_(datum_timeout=-1), r"datum_timeout"),
    (with_(parallelism_spec={"constant": 0}), r"parallelism_spec\.constant"),
    (with_(parallelism_spec={"constant": 10**9}), r"parallelism_spec\.constant"),
    (with_(parallelism_spec=4), r"parallelism_spec"),
    (with_(output_branch=5), r"output_branch"),
    (with_(input="data"), r"\binput\b"),
    (json.dumps({**BASE, "input": deep(40)}), r"\binput\b"),
    ("[" * 100_000, r"nested too deeply"),
])
def test_every_field_is_checked_for_its_type(text: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_specs(text)
    message = info.value.message
    assert "\n" not in message
    assert re.search(field, message), (field, message)


def test_quoted_numbers_and_env_scalars_are_still_read() -> None:
    spec = parse_specs(with_(parallelism_spec={"constant": "4"}, datum_tries="2",
                             transform__env={"N": 1, "ON": True}))[0]
    assert (spec.parallelism, spec.datum_tries) == (4, 2)
    assert spec.transform.env == {"N": "1", "ON": "true"}


def test_the_issue_spec_is_refused_and_the_daemon_serves_on(fresh_pfsd: Pfsmount) -> None:
    fresh_pfsd.ok("repo", "create", "data")
    pid = fresh_pfsd.pid()
    fresh_pfsd.fails("pipeline", "create", "-f", "-", input=json.dumps(ISSUE_SPEC), code=2,
                     match=r"inputs\[0\]\.name")
    assert fresh_pfsd.json("pipeline", "list") == []
    assert [r["name"] for r in fresh_pfsd.json("repo", "list")] == ["data"]
    fresh_pfsd.down()
    fresh_pfsd.up()
    assert fresh_pfsd.pid() != pid


def test_a_failed_create_leaves_nothing_behind(fresh_pfsd: Pfsmount) -> None:
    fresh_pfsd.ok("repo", "create", "data")
    good = {"pipeline": {"name": "first"}, "transform": {"cmd": ["true"]},
            "input": {"pfs": {"repo": "data"}}}
    reads_first = {"pipeline": {"name": "second"}, "transform": {"cmd": ["true"]},
                   "input": {"pfs": {"repo": "first"}}}
    missing = {"pipeline": {"name": "third"}, "transform": {"cmd": ["true"]},
               "input": {"pfs": {"repo": "nowhere"}}}
    fresh_pfsd.fails("pipeline", "create", "-f", "-",
                     input=json.dumps(good) + json.dumps(reads_first) + json.dumps(missing),
                     match="nowhere")
    fresh_pfsd.fails("pipeline", "create", "-f", "-",
                     input=json.dumps(good) + json.dumps(good), match="first")
    assert fresh_pfsd.json("pipeline", "list") == []
    assert [r["name"] for r in fresh_pfsd.json("repo", "list")] == ["data"]
    # A later spec may still read an earlier one's output.
    fresh_pfsd.ok("pipeline", "create", "-f", "-",
                  input=json.dumps(good) + json.dumps(reads_first))
    assert sorted(p["name"] for p in fresh_pfsd.json("pipeline", "list")) == [
        "first", "second"]


def test_a_stored_pipeline_that_cannot_be_read_is_named_and_left_out(
        fresh_pfsd: Pfsmount) -> None:
    fresh_pfsd.ok("repo", "create", "data")
    fresh_pfsd.ok("pipeline", "create", "-f", "-", input=json.dumps(
        {"pipeline": {"name": "good"}, "transform": {"cmd": ["true"]},
         "input": {"pfs": {"repo": "data"}}}))
    fresh_pfsd.down()
    # What the daemon stored for the issue's spec before specs were checked whole.
    bad = {"name": "bad", "created": 0.0, "updated": 0.0,
           "spec": {"name": "bad", "transform": {"cmd": ["true"]},
                    "input": {"pfs": {"repo": "data", "name": 5}}}}
    pfs = Pfs(fresh_pfsd.root / "store")
    try:
        records = Records(pfs.state)
        with pfs.state.write() as scope:
            records.pipelines_table.put(scope, b"bad", msgspec.msgpack.encode(bad))
    finally:
        pfs.close()
    fresh_pfsd.up()
    assert [p["name"] for p in fresh_pfsd.json("pipeline", "list")] == ["good"]
    fresh_pfsd.fails("pipeline", "inspect", "bad", match="bad.*cannot be read")
    assert "stored pipeline bad cannot be read" in fresh_pfsd.log_text()
    fresh_pfsd.ok("pipeline", "delete", "bad")
    fresh_pfsd.fails("pipeline", "inspect", "bad", code=3)
    fresh_pfsd.ok("pipeline", "create", "-f", "-", input=json.dumps(
        {"pipeline": {"name": "other"}, "transform": {"cmd": ["true"]},
         "input": {"pfs": {"repo": "data"}}}))
