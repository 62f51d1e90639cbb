"""Input kinds: each kind of pipeline input is one class, registered in ``KINDS``.

A kind knows three things, and nothing outside its class asks which kind an input is:
- how to read its fragment of a spec (``read``: ``input.pfs``, ``input.cross``...), refusing
  a wrong one with one line naming the field, and how to write it back (``fragment``);
- the ``pfs`` leaves under it (``leaves``): the names at ``/pfs/<name>``, and through them the
  repos it reads (``repos``) and the branches whose commits it depends on (``branches``: a
  pipeline's provenance, what triggers its jobs, the commits a job pins);
- its datums, from a ``Snapshot`` of a job's input commits (``datums``).

Built in: ``pfs`` (also spelled ``atom``, as 1.x did), ``cross``, ``union``, ``join`` and
``group`` as Pachyderm defines them (``Combined`` kinds; ``join``/``group`` match the files of
their ``pfs`` leaves by the key each leaf's ``join_on``/``group_by`` makes of its glob's
capture groups, see ``pfsmount.pfs.glob``), and 1.x's ``inputs`` list (``V1Inputs``), which is
read from a field of the spec's own rather than under ``input``, and means its inputs crossed.
A new kind is a class and a ``register`` call; the spec parser, datum listing and the engine
pick it up. So would Pachyderm's ``cron``, as a leaf naming its tick repo as a ``PfsInput``.

An input is stored, and shown by the API, as a spec writes it: ``{kind: fragment}``, checked
and with defaults filled in; ``load`` reads that back. Nothing here touches storage or runs
anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import product
from typing import Any, ClassVar, Literal

import msgspec

from pfsmount.errors import InvalidArgument
from pfsmount.pfs.glob import check_template, compile_glob, expand
from pfsmount.pfs.refs import check_name
from scheduler.datums import DatumFile, Snapshot
from scheduler.fields import Name, typed, without_nulls

Files = tuple[DatumFile, ...]  # one datum's files, before it is named
Reader = Callable[[Any, str], "InputKind"]  # reads a nested input at a path: ``input.cross[0]``


class InputKind(ABC):
    """One node of a pipeline's input tree. Subclasses are frozen dataclasses, so that two
    inputs read from the same text are equal."""

    key: ClassVar[str]  # the field that holds it: ``input.<key>``
    spellings: ClassVar[tuple[str, ...]] = ()  # other names it is read under
    in_input: ClassVar[bool] = True  # False: a field of the spec's own (1.x ``inputs``)
    names_may_repeat: ClassVar[bool] = False  # at the top: its leaves may share a name

    @classmethod
    @abstractmethod
    def read(cls, value: Any, where: str, child: Reader) -> InputKind:
        """This kind's node from its ``value`` in a spec (keys already snake_case, nulls
        dropped); ``where`` is its path (``input.cross[1].pfs``) for errors; ``child`` reads
        an input nested in it."""

    @classmethod
    def load(cls, value: Any, where: str, child: Reader) -> InputKind:
        """This kind's node from its stored ``fragment``: as ``read``, but trusting what
        pfsmount wrote (a 1.x job's input names a commit where a branch would be); types
        are still checked. ``child`` loads nested inputs."""
        return cls.read(value, where, child)

    @abstractmethod
    def fragment(self) -> Any:
        """Its value as stored and shown, which ``read`` reads back to an equal node."""

    def stored(self) -> dict[str, Any]:
        return {self.key: self.fragment()}

    def children(self) -> Sequence[InputKind]:
        return ()

    def leaves(self) -> list[PfsInput]:
        """The ``pfs`` inputs under this one, in the spec's order."""
        return [leaf for child in self.children() for leaf in child.leaves()]

    def repos(self) -> list[str]:
        """The repos it reads, each once."""
        return list(dict.fromkeys(leaf.repo for leaf in self.leaves()))

    def branches(self) -> list[str]:
        """``repo@branch`` of each branch whose commits it reads, each once."""
        return list(dict.fromkeys(f"{leaf.repo}@{leaf.branch}" for leaf in self.leaves()))

    def made_repos(self) -> list[str]:
        """Repos this input makes for its pipeline (a cron's tick repo): created with the
        pipeline, deleted with it, and not required to exist before it."""
        return [repo for child in self.children() for repo in child.made_repos()]

    def for_pipeline(self, pipeline: str) -> InputKind:
        """This input as pipeline ``pipeline`` reads it: defaults that derive from the
        pipeline's name filled in (a cron's tick repo, ``<pipeline>_<name>``)."""
        return self

    @abstractmethod
    def datums(self, snapshot: Snapshot) -> list[Files]:
        """Its datums over one job's input commits, in a stable order."""


KINDS: dict[str, type[InputKind]] = {}


def register(kind: type[InputKind]) -> type[InputKind]:
    """Make ``kind`` readable in specs (a class decorator)."""
    for name in (kind.key, *kind.spellings):
        if name in KINDS or any(name in k.spellings for k in KINDS.values()):
            raise ValueError(f"input kind {name} is registered twice")
    KINDS[kind.key] = kind
    return kind


def _spellings() -> dict[str, type[InputKind]]:
    return {name: kind for kind in KINDS.values() if kind.in_input
            for name in (kind.key, *kind.spellings)}


_MAX_DEPTH = 32  # levels of nesting
DEFAULT_PROJECT = "default"  # Pachyderm's project when none is named: pfsmount's only one


def read_input(raw: Any, where: str = "input", depth: int = 0, stored: bool = False
               ) -> InputKind:
    """The input tree of a spec's ``input`` (or a nested one at ``where``), every node read
    by its kind (``stored``: loaded, see ``InputKind.load``)."""
    if depth > _MAX_DEPTH:
        raise InvalidArgument(f"spec field {where} nests deeper than {_MAX_DEPTH} levels")
    kinds = _spellings()
    if not isinstance(raw, dict) or len(raw) != 1:
        raise InvalidArgument(f"spec field {where} must have exactly one of {', '.join(kinds)}")
    key, value = next(iter(raw.items()))
    kind = kinds.get(key)
    if kind is None:
        *most, last = kinds
        raise InvalidArgument(f"spec field {where}.{key} is not supported "
                              f"(use {', '.join(most)} or {last})")
    how = kind.load if stored else kind.read
    node = how(value, f"{where}.{key}", lambda v, at: read_input(v, at, depth + 1, stored))
    if where == "input" and not stored:  # a spec's whole input
        _check_keys(node, where)
    return node


def _check_keys(node: InputKind, where: str, under: frozenset[str] = frozenset()) -> None:
    """A ``join_on``/``outer_join`` only under a ``join``, a ``group_by`` only under a
    ``group``: anywhere else Pachyderm would ignore it, and a field is never ignored here."""
    if isinstance(node, PfsInput):
        for field, kind in (("join_on", "join"), ("outer_join", "join"), ("group_by", "group")):
            if getattr(node, field) and kind not in under:
                raise InvalidArgument(f"spec field {field} of input {node.name} has a meaning "
                                      f"only under input.{kind}, and {node.name} is not in one")
        return
    for child in node.children():
        _check_keys(child, where, under | {node.key})


def check_project(project: str, field: str) -> None:
    """Pachyderm 2.5's ``project``: its repos and pipelines live in one, ``default`` unless
    named; pfsmount has that one only, so naming it is taken and naming another refused."""
    if project not in ("", DEFAULT_PROJECT):
        raise InvalidArgument(f"spec field {field} {project!r} is not supported: pfsmount has "
                              f"one project, {DEFAULT_PROJECT}")


def load(stored: dict[str, Any]) -> InputKind:
    """The input tree of a stored or received spec (``Spec.input``). A row written before
    kinds were stored alone holds a null for every other kind, at every level: those go."""
    return read_input(without_nulls(stored), stored=True)


# -- pfs -----------------------------------------------------------------------------------------


class _RawPfs(msgspec.Struct, forbid_unknown_fields=True):
    repo: Name
    branch: Name = "master"
    glob: str = "/*"
    name: str = ""
    join_on: str = ""
    outer_join: bool = False
    group_by: str = ""
    empty_files: bool = False
    lazy: bool = False
    s3: bool = False
    project: str = ""  # Pachyderm 2.5's projects: pfsmount's repos are all in "default"


_KEYS = ("join_on", "outer_join", "group_by", "empty_files", "lazy")  # shown only when set


@register
@dataclass(frozen=True, kw_only=True)
class PfsInput(InputKind):
    """A branch of a repo, split into datums by a glob (``pfsmount.pfs.glob``): each match is a
    datum. Under a ``join`` or ``group`` its ``join_on``/``group_by`` makes each match's key
    from the glob's capture groups. ``empty_files`` shows the datum its files empty (names,
    modes, links; no content). ``lazy`` is accepted and changes nothing: a datum reads its
    inputs through the mount, which fetches bytes only when they are read, so every input is
    lazy already. ``s3`` (an input served over an S3 gateway) is refused by name."""

    key = "pfs"
    spellings = ("atom",)
    repo: str
    branch: str = "master"
    glob: str = "/*"
    name: str = ""  # defaults to the repo
    join_on: str = ""
    outer_join: bool = False
    group_by: str = ""
    empty_files: bool = False
    lazy: bool = False

    @classmethod
    def checked(cls, repo: str, branch: str, glob: str, name: str, where: str,
                **keys: Any) -> PfsInput:
        """A pfs input whose names are names (an input name is a directory under /pfs) and
        whose glob, ``join_on`` and ``group_by`` mean something; ``where`` prefixes the
        fields in errors (``input.pfs.``)."""
        check_name("repo", repo)
        check_name("branch", branch)
        check_name("input", name or repo)
        pattern = compile_glob(glob, f"spec field {where}glob")
        for field in ("join_on", "group_by"):
            if keys.get(field):
                check_template(keys[field], pattern, f"spec field {where}{field}")
        return cls(repo=repo, branch=branch, glob=glob, name=name or repo, **keys)

    @classmethod
    def read(cls, value: Any, where: str, child: Reader) -> PfsInput:
        raw = typed(value, _RawPfs, f"{where}.")
        if raw.s3:
            raise InvalidArgument(f"spec field {where}.s3 is not supported by pfsmount (an "
                                  "S3 gateway per input): read the input at /pfs/<name>")
        check_project(raw.project, f"{where}.project")
        return cls.checked(raw.repo, raw.branch, raw.glob, raw.name, f"{where}.",
                           **{k: getattr(raw, k) for k in _KEYS})

    @classmethod
    def load(cls, value: Any, where: str, child: Reader) -> PfsInput:
        raw = typed(value, _RawPfs, f"{where}.")
        return cls(repo=raw.repo, branch=raw.branch, glob=raw.glob, name=raw.name or raw.repo,
                   **{k: getattr(raw, k) for k in _KEYS})

    def fragment(self) -> dict[str, Any]:
        return {"repo": self.repo, "branch": self.branch, "glob": self.glob,
                "name": self.name, **{k: getattr(self, k) for k in _KEYS if getattr(self, k)}}

    def leaves(self) -> list[PfsInput]:
        return [self]

    def datums(self, snapshot: Snapshot) -> list[Files]:
        commit = snapshot.commit(self.repo, self.branch)
        if commit is None:
            return []
        return [(DatumFile(self.name, self.repo, commit, info.path, info.hash, info.type,
                           join_on=expand(self.join_on, captures) if self.join_on else "",
                           group_by=expand(self.group_by, captures) if self.group_by else "",
                           empty=self.empty_files),)
                for info, captures in snapshot.glob(self.repo, commit,
                                                    compile_glob(self.glob))]


# -- inputs of inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Combined(InputKind):
    """A kind made of a non-empty list of inputs (``cross``, ``union``)."""

    inputs: tuple[InputKind, ...]

    @classmethod
    def read(cls, value: Any, where: str, child: Reader) -> InputKind:
        if not isinstance(value, list) or not value:
            raise InvalidArgument(f"spec field {where} must be a non-empty list")
        return cls(tuple(child(v, f"{where}[{i}]") for i, v in enumerate(value)))

    def fragment(self) -> list[dict[str, Any]]:
        return [inp.stored() for inp in self.inputs]

    def children(self) -> Sequence[InputKind]:
        return self.inputs

    def for_pipeline(self, pipeline: str) -> InputKind:
        return replace(self, inputs=tuple(i.for_pipeline(pipeline) for i in self.inputs))


@register
@dataclass(frozen=True)
class Cross(Combined):
    """Every combination of one datum of each input."""

    key = "cross"

    def datums(self, snapshot: Snapshot) -> list[Files]:
        parts = [inp.datums(snapshot) for inp in self.inputs]
        return [tuple(f for part in combo for f in part) for combo in product(*parts)]


@register
@dataclass(frozen=True)
class Union(Combined):
    """The datums of each input in turn; the inputs may share a name (one /pfs/<name>)."""

    key = "union"
    names_may_repeat = True

    def datums(self, snapshot: Snapshot) -> list[Files]:
        return [files for inp in self.inputs for files in inp.datums(snapshot)]


class _Keyed(Combined):
    """``join`` and ``group``: inputs whose every ``pfs`` leaf keys its files by a template
    over its glob's capture groups (``field``)."""

    field: ClassVar[str]

    @classmethod
    def read(cls, value: Any, where: str, child: Reader) -> InputKind:
        node = super().read(value, where, child)
        for i, inp in enumerate(node.children()):
            for leaf in inp.leaves():
                if not getattr(leaf, cls.field):
                    field = f"{where}[{i}].pfs.{cls.field}" if inp is leaf else \
                        f"{cls.field} of input {leaf.name} in {where}[{i}]"
                    raise InvalidArgument(
                        f"spec field {field} is missing: a {cls.key} matches files by a "
                        f"capture group of their glob (like glob /(*).txt with "
                        f"{cls.field} $1)")
        return node


@register
@dataclass(frozen=True)
class Join(_Keyed):
    """Files of its inputs whose ``join_on`` keys are equal, every combination of one file
    of each input per key (a cross per key), keys in order. A key some input lacks makes
    datums only when an input that has it sets ``outer_join``, of the inputs that have it."""

    key = "join"
    field = "join_on"

    def datums(self, snapshot: Snapshot) -> list[Files]:
        keyed: dict[str, list[list[DatumFile]]] = {}
        for i, inp in enumerate(self.inputs):
            for files in inp.datums(snapshot):
                for f in files:
                    keyed.setdefault(f.join_on, [[] for _ in self.inputs])[i].append(f)
        outer = [all(leaf.outer_join for leaf in inp.leaves()) for inp in self.inputs]
        out: list[Files] = []
        for key in sorted(keyed):
            have = [i for i, files in enumerate(keyed[key]) if files]
            if len(have) < len(self.inputs) and not any(outer[i] for i in have):
                continue
            out += [tuple(combo) for combo in product(*(keyed[key][i] for i in have))]
        return out


@register
@dataclass(frozen=True)
class Group(_Keyed):
    """One datum per ``group_by`` key, holding every file of every input with that key,
    keys in order."""

    key = "group"
    field = "group_by"

    def datums(self, snapshot: Snapshot) -> list[Files]:
        groups: dict[str, list[DatumFile]] = {}
        for inp in self.inputs:
            for files in inp.datums(snapshot):
                for f in files:
                    groups.setdefault(f.group_by, []).append(f)
        return [tuple(groups[key]) for key in sorted(groups)]


def crossed(leaves: Sequence[PfsInput]) -> InputKind:
    """Several inputs crossed, as 1.x's ``inputs`` lists and jobs meant; one alone is itself."""
    return leaves[0] if len(leaves) == 1 else Cross(tuple(leaves))


# -- 1.x: the ``inputs`` list --------------------------------------------------------------------


Partition = Literal["BLOCK", "FILE", "REPO"]
Incremental = Literal["NONE", "DIFF", "FULL"]


class Method(msgspec.Struct, kw_only=True, frozen=True):
    """A 1.x input method: how its data splits across containers, and what each job sees."""

    partition: Partition = "BLOCK"
    incremental: Incremental = "DIFF"


class V1Input(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    repo: str
    branch: str
    method: Method
    run_empty: bool = False


class V1(msgspec.Struct, kw_only=True, frozen=True):
    """What a 1.3-form spec means besides its inputs' leaves: 1.x jobs, not datums."""

    inputs: list[V1Input]  # in the order of the spec (and of ``Spec.tree.leaves()``)
    overwrite: bool = False


class RawRepo(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class RawMethod(msgspec.Struct, forbid_unknown_fields=True):
    partition: str = "BLOCK"
    incremental: str | bool | None = None  # NONE by default; 1.2 wrote a boolean
    incrementality: bool | None = None  # 1.1's docs' spelling of the boolean


class RawV1Input(msgspec.Struct, forbid_unknown_fields=True):
    repo: RawRepo
    branch: Name = "master"
    glob: str | None = None  # 1.4
    name: str = ""
    method: str | RawMethod | None = None  # 1.3
    run_empty: bool | None = None  # 1.3


_METHODS: dict[str, Method] = {  # 1.3's aliases
    "map": Method(partition="BLOCK", incremental="DIFF"),
    "reduce": Method(partition="FILE", incremental="NONE"),
    "incremental_reduce": Method(partition="FILE", incremental="DIFF"),
    "global": Method(partition="REPO", incremental="NONE"),
}
_INCREMENTAL: dict[str, Incremental] = {"NONE": "NONE", "DIFF": "DIFF", "FULL": "FULL",
                                        "FILE": "FULL"}  # the docs' "FILE" is the proto's FULL


def method(raw: str | RawMethod | None, where: str) -> Method:
    """A 1.3 ``method``: an alias, or ``{partition, incremental}``; none is ``map``."""
    if raw is None:
        return _METHODS["map"]
    if isinstance(raw, str):
        if raw.lower() not in _METHODS:
            raise InvalidArgument(f"spec field {where}method {raw!r} must be map, reduce, "
                                  "incremental_reduce, global or {partition, incremental}")
        return _METHODS[raw.lower()]
    partition = raw.partition.upper()
    if partition not in ("BLOCK", "FILE", "REPO"):
        raise InvalidArgument(f"spec field {where}method.partition {raw.partition!r} must be "
                              "BLOCK, FILE or REPO")
    given = raw.incremental if raw.incrementality is None else raw.incrementality
    if raw.incremental is not None and raw.incrementality is not None:
        raise InvalidArgument(f"spec fields {where}method.incremental and .incrementality: "
                              "give one")
    if given is None:
        incremental: Incremental = "NONE"
    elif isinstance(given, bool):
        incremental = "DIFF" if given else "NONE"
    elif given.upper() in _INCREMENTAL:
        incremental = _INCREMENTAL[given.upper()]
    else:
        raise InvalidArgument(f"spec field {where}method.incremental {given!r} must "
                              "be NONE, DIFF or FULL (FILE)")
    return Method(partition=partition, incremental=incremental)  # type: ignore[arg-type]


@register
@dataclass(frozen=True)
class V1Inputs(InputKind):
    """1.x's ``inputs`` list, several inputs crossed. With a ``glob`` on any input, the 1.4
    form: glob datums (``v1`` is None). Without, the 1.3 form: ``method``s, run as 1.x jobs
    (``v1``; see ``scheduler.legacy``). One spec never mixes them: it would have no meaning
    any Pachyderm gave it. Stored as the input it means (``stored``), with ``v1`` beside it
    in the spec."""

    key = "inputs"
    in_input = False
    tree: InputKind  # the inputs crossed
    v1: V1 | None

    @classmethod
    def read(cls, value: Any, where: str, child: Reader) -> V1Inputs:
        if not isinstance(value, list) or not value:
            raise InvalidArgument(f"spec field {where} must be a non-empty list")
        raw = [typed(item, RawV1Input, f"{where}[{i}].") for i, item in enumerate(value)]
        globbed = [i for i, item in enumerate(raw) if item.glob is not None]
        leaves, v1 = [], []
        for i, item in enumerate(raw):
            at = f"{where}[{i}]."
            if globbed and (item.method is not None or item.run_empty is not None):
                field = "method" if item.method is not None else "runEmpty"
                raise InvalidArgument(f"spec field {at}{field} is 1.3's and "
                                      f"{where}[{globbed[0]}].glob is 1.4's: use one form")
            if globbed and item.glob is None:
                raise InvalidArgument(f"spec field {at}glob is missing (the 1.4 form: every "
                                      "input has a glob)")
            how = method(item.method, at)
            glob = item.glob if item.glob is not None else \
                "/*" if how.partition == "BLOCK" else "/"
            leaf = PfsInput.checked(item.repo.name, item.branch, glob, item.name, at)
            leaves.append(leaf)
            v1.append(V1Input(name=leaf.name, repo=leaf.repo, branch=leaf.branch,
                              method=how, run_empty=bool(item.run_empty)))
        return cls(crossed(leaves), None if globbed else V1(inputs=v1))

    def fragment(self) -> list[dict[str, Any]]:
        if self.v1 is None:
            return [{"repo": {"name": x.repo}, "branch": x.branch, "glob": x.glob,
                     "name": x.name} for x in self.leaves()]
        return [{"repo": {"name": x.repo}, "branch": x.branch, "name": x.name,
                 "method": msgspec.to_builtins(x.method), "run_empty": x.run_empty}
                for x in self.v1.inputs]

    def stored(self) -> dict[str, Any]:
        return self.tree.stored()

    def children(self) -> Sequence[InputKind]:
        return (self.tree,)

    def datums(self, snapshot: Snapshot) -> list[Files]:
        return self.tree.datums(snapshot)


__all__ = ["KINDS", "V1", "Cross", "Group", "InputKind", "Join", "Method", "PfsInput",
           "Snapshot", "Union", "V1Input", "V1Inputs", "crossed", "load", "read_input",
           "register"]
