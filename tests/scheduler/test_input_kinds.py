"""The input-kind seam: every kind is one class in ``scheduler.inputs.KINDS``.

A kind registered there is read in specs, stored, read back and split into datums with no
other change: a toy kind shows it on a real store. Every registered kind must round-trip (a
kind added without an example here fails ``test_every_kind_has_an_example``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from pfsmount.errors import InvalidArgument
from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from scheduler.datums import DatumFile, Snapshot, datum_id, datums
from scheduler.inputs import (
    KINDS,
    Combined,
    InputKind,
    PfsInput,
    crossed,
    read_input,
    register,
)
from scheduler.records import Pipeline
from scheduler.spec import Spec, Transform, parse_specs

BASE: dict[str, Any] = {"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}}

# One input of each registered kind, as a spec writes it (under ``input``, or for a kind
# read from a field of the spec's own, that field), keys in snake_case as kinds read them.
EXAMPLES: dict[str, Any] = {
    "pfs": {"repo": "data", "branch": "dev", "glob": "/*/*", "name": "d"},
    "cross": [{"pfs": {"repo": "a"}}, {"atom": {"repo": "b", "glob": "/"}}],
    "union": [{"pfs": {"repo": "a", "name": "x"}},
              {"cross": [{"pfs": {"repo": "b", "name": "x"}}, {"pfs": {"repo": "c"}}]}],
    "join": [{"pfs": {"repo": "a", "glob": "/(*).txt", "join_on": "$1"}},
             {"pfs": {"repo": "b", "glob": "/*/(*).txt", "join_on": "$1", "outer_join": True}}],
    "group": [{"pfs": {"repo": "a", "glob": "/*-(*)-*.txt", "group_by": "$1"}},
              {"pfs": {"repo": "b", "glob": "/(*)/*", "group_by": "$1", "lazy": True}}],
    "cron": {"name": "tick", "spec": "@every 10s", "repo": "ticks", "overwrite": True,
             "start": "2024-01-01T00:00:00Z"},
    "inputs": [{"repo": {"name": "a"}, "method": "reduce"},
               {"repo": {"name": "b"}, "method": {"partition": "FILE", "incremental": True},
                "run_empty": True}],
}


def spec_with(kind: type[InputKind], value: Any) -> dict[str, Any]:
    return {**BASE, **({"input": {kind.key: value}} if kind.in_input else {kind.key: value})}


def node_of(kind: type[InputKind], value: Any) -> InputKind:
    return read_input({kind.key: value}) if kind.in_input else \
        kind.read(value, kind.key, read_input)


def test_every_kind_has_an_example() -> None:
    assert set(EXAMPLES) == set(KINDS)


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_a_spec_of_each_kind_round_trips(key: str) -> None:
    kind = KINDS[key]
    node = node_of(kind, EXAMPLES[key])
    assert type(node) is kind
    # What a kind writes, it reads back the same.
    assert kind.read(node.fragment(), kind.key, read_input) == node

    spec = parse_specs(json.dumps(spec_with(kind, EXAMPLES[key])))[0]
    assert spec.tree.leaves() == node.leaves()
    # Stored (msgpack, as the scheduler's rows) and sent (JSON, as the API), it is the same
    # spec with the same input tree; as text again (a user's `inspect --json` saved and
    # created anew), the same too.
    row = msgspec.msgpack.encode(Pipeline(name="p", spec=spec, created=0.0, updated=0.0))
    stored = msgspec.msgpack.decode(row, type=Pipeline).spec
    sent = msgspec.json.decode(msgspec.json.encode(spec), type=Spec)
    again = parse_specs(json.dumps({**BASE, "input": spec.input}))[0]
    for other in (stored, sent):
        assert other == spec and other.tree == spec.tree and other.digest == spec.digest
    assert again.tree == spec.tree


def test_a_row_stored_before_kinds_were_stored_alone_still_reads() -> None:
    # Rows written before this seam held every kind's field, the others null.
    old = {**BASE, "name": "p", "transform": {"cmd": ["true"]},
           "input": {"pfs": None, "union": None, "cross": [
               {"pfs": {"repo": "a", "branch": "master", "glob": "/*", "name": "a"},
                "cross": None, "union": None},
               {"pfs": {"repo": "b", "branch": "master", "glob": "/", "name": "b"},
                "cross": None, "union": None}]}}
    del old["pipeline"]
    spec = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=Spec)
    assert spec.tree.branches() == ["a@master", "b@master"]
    assert [leaf.glob for leaf in spec.tree.leaves()] == ["/*", "/"]


def test_what_pfsmount_stores_it_reads_back_where_a_user_may_not_write_it() -> None:
    # A one-off job (create-job) pins each input to a commit id where a branch would be.
    commit = "40603e533660430dafdfae71c6d0cec7"
    spec = Spec(name="job-1", transform=Transform(cmd=["true"]), input=crossed(
        [PfsInput(repo="a", branch=commit, glob="/", name="a")]).stored())
    stored = msgspec.msgpack.decode(msgspec.msgpack.encode(spec), type=Spec)
    assert stored.tree.branches() == [f"a@{commit}"]
    with pytest.raises(InvalidArgument, match="would read as a commit id"):
        parse_specs(json.dumps({**BASE, "input": spec.input}))


# -- a toy kind, registered by a test ----------------------------------------------------------


@dataclass(frozen=True)
class Zip(Combined):
    """The i-th datum of each input together, as Python's ``zip``: not one of Pachyderm's."""

    key = "zip"

    def datums(self, snapshot: Snapshot) -> list[tuple[DatumFile, ...]]:
        parts: Sequence[list[tuple[DatumFile, ...]]] = [i.datums(snapshot) for i in self.inputs]
        return [tuple(f for files in row for f in files) for row in zip(*parts, strict=False)]


@pytest.fixture
def zip_kind() -> Iterator[type[InputKind]]:
    register(Zip)
    try:
        yield Zip
    finally:
        del KINDS[Zip.key]


ZIPPED = {**BASE, "input": {"zip": [{"pfs": {"repo": "letters"}},
                                    {"pfs": {"repo": "numbers", "name": "n"}}]}}


def test_a_kind_not_registered_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_specs(json.dumps(ZIPPED))
    # The kinds it names are those registered, each with its other spellings.
    names = [n for kind in KINDS.values() if kind.in_input for n in (kind.key, *kind.spellings)]
    assert names[:6] == ["pfs", "atom", "cross", "union", "join", "group"]
    assert info.value.message == (f"spec field input.zip is not supported "
                                  f"(use {', '.join(names[:-1])} or {names[-1]})")


def test_a_registered_kind_is_read_stored_and_split_into_datums(
        zip_kind: type[InputKind], pfs: Pfs) -> None:
    spec = parse_specs(json.dumps(ZIPPED))[0]
    assert spec.tree == Zip((PfsInput(repo="letters", name="letters"),
                             PfsInput(repo="numbers", name="n")))
    assert spec.input == {"zip": [
        {"pfs": {"repo": "letters", "branch": "master", "glob": "/*", "name": "letters"}},
        {"pfs": {"repo": "numbers", "branch": "master", "glob": "/*", "name": "n"}}]}
    assert spec.tree.branches() == ["letters@master", "numbers@master"]
    assert spec.tree.repos() == ["letters", "numbers"]
    stored = msgspec.msgpack.decode(msgspec.msgpack.encode(spec), type=Spec)
    assert stored.tree == spec.tree
    # Its children are checked as any input is, and the refusals list it.
    with pytest.raises(InvalidArgument) as info:
        parse_specs(json.dumps({**BASE, "input": {"zip": [{"pfs": {"repo": "a", "glob": "x"}}]}}))
    assert info.value.message.startswith("spec field input.zip[0].pfs.glob 'x'")
    with pytest.raises(InvalidArgument) as info:
        parse_specs(json.dumps({**BASE, "input": {}}))
    message = info.value.message
    assert message.endswith(", zip") and "exactly one of pfs, atom," in message

    for repo, files in (("letters", ["a", "b", "c"]), ("numbers", ["1", "2"])):
        pfs.repos.create(repo)
        for name in files:
            pfs.files.put(f"{repo}@master", Data(name.encode()), path=f"/{name}")
    heads = {f"{r}@master": pfs.commits.inspect(f"{r}@master").id
             for r in ("letters", "numbers")}
    found = datums(pfs, stored.tree, heads)
    assert [[(f.input, f.path) for f in d.files] for d in found] == [
        [("letters", "/a"), ("n", "/1")], [("letters", "/b"), ("n", "/2")]]
    assert [d.id for d in found] == [datum_id(d.files) for d in found]
    assert found[0].files[0].commit == heads["letters@master"]
