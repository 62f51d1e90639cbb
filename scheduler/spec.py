"""Pipeline specs: Pachyderm's JSON or YAML (1.x and 2.x forms) read into one checked shape.

Accepts several specs per file (JSON objects back to back, or YAML documents), field names in
snake_case or camelCase, ``atom`` for ``pfs``, and both 1.x ``inputs`` lists: the 1.3 form
(``repo.name`` with a ``method``, or none: ``map``) keeps 1.x meaning (``Spec.v1``: methods,
``/pfs/prev``, ``overwrite``, ``runEmpty``; see ``scheduler.legacy``), the 1.4 form (each input
with a ``glob``) is read as glob datums whose colliding outputs are concatenated. A field
pfsmount does not implement, or a 1.x field in a spec of another form, is refused: a wrong
spec is refused with one line naming the field. Checks that need the store (unknown repos,
cycles) are the scheduler's; nothing here touches storage.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import yaml

from pfsmount.errors import InvalidArgument
from pfsmount.pfs.refs import check_name

_T = TypeVar("_T")


class PfsInput(msgspec.Struct, kw_only=True, frozen=True):
    repo: str
    branch: str = "master"
    glob: str = "/*"
    name: str = ""  # defaults to the repo


class Input(msgspec.Struct, kw_only=True, frozen=True):
    """Exactly one of the fields is set."""

    pfs: PfsInput | None = None
    cross: list[Input] | None = None
    union: list[Input] | None = None

    def leaves(self) -> list[PfsInput]:
        if self.pfs is not None:
            return [self.pfs]
        return [leaf for child in (self.cross or self.union or []) for leaf in child.leaves()]


class Transform(msgspec.Struct, kw_only=True, frozen=True):
    cmd: list[str]
    stdin: list[str] = []
    image: str = ""
    env: dict[str, str] = {}
    working_dir: str = ""
    accept_return_code: list[int] = []


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

    inputs: list[V1Input]  # in the order of the spec (and of ``Spec.input.leaves()``)
    overwrite: bool = False


class Spec(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    transform: Transform
    input: Input
    description: str = ""
    parallelism: int = 1
    datum_tries: int = 3
    datum_timeout: float | None = None
    output_branch: str = "master"
    legacy: bool = False  # a 1.x spec: colliding outputs are concatenated, as 1.x did
    v1: V1 | None = None  # a 1.3-form spec: run as 1.x jobs (scheduler.legacy)

    @property
    def digest(self) -> str:
        """What a datum's result depends on besides its inputs."""
        t = self.transform
        parts: list[Any] = [t.cmd, t.stdin, t.image, sorted(t.env.items()), t.working_dir,
                            t.accept_return_code, self.legacy]
        if self.v1 is not None:
            parts.append(msgspec.to_builtins(self.v1))
        blob = json.dumps(parts, sort_keys=True)
        return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _norm(value: Any) -> Any:
    """Keys to snake_case, recursively (values are left alone: env names keep their case)."""
    if isinstance(value, dict):
        return {_snake(k) if isinstance(k, str) else k: (v if k == "env" else _norm(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _documents(text: str) -> list[Any]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        decoder = json.JSONDecoder()
        docs: list[Any] = []
        pos = 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                return docs
            try:
                doc, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise InvalidArgument(
                    f"spec is not valid JSON: {e.msg} at line {e.lineno}") from None
            docs.extend(doc if isinstance(doc, list) else [doc])
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise InvalidArgument(f"spec is not valid JSON or YAML: {e}".splitlines()[0]) from None


def parse_specs(text: str) -> list[Spec]:
    """Every spec in a file's text, checked whole before any is used; raises
    ``InvalidArgument`` naming the field."""
    try:
        docs = _documents(text)
        if not docs:
            raise InvalidArgument("the spec file holds no pipeline")
        return [parse_spec(doc) for doc in docs]
    except RecursionError:
        raise InvalidArgument("spec is nested too deeply") from None


# The raw shape of a spec (after ``_norm``), checked by msgspec: every field's type, so that
# nothing of the wrong type can reach a stored record. ``strict=False`` reads the quoted
# numbers Pachyderm's JSON often has ("constant": "1").
_Name = Annotated[str, msgspec.Meta(min_length=1)]


class _RawPipeline(msgspec.Struct, forbid_unknown_fields=True):
    name: _Name


class _RawTransform(msgspec.Struct, forbid_unknown_fields=True):
    cmd: Annotated[list[str], msgspec.Meta(min_length=1)]
    stdin: list[str] = []
    image: str = ""
    env: dict[str, str | int | float | bool] = {}
    working_dir: str = ""
    accept_return_code: list[int] = []
    overwrite: bool | None = None  # 1.3 only


class _RawPfs(msgspec.Struct, forbid_unknown_fields=True):
    repo: _Name
    branch: _Name = "master"
    glob: str = "/*"
    name: str = ""


class _RawRepo(msgspec.Struct, forbid_unknown_fields=True):
    name: _Name


class _RawMethod(msgspec.Struct, forbid_unknown_fields=True):
    partition: str = "BLOCK"
    incremental: str | bool | None = None  # NONE by default; 1.2 wrote a boolean
    incrementality: bool | None = None  # 1.1's docs' spelling of the boolean


class _RawLegacyInput(msgspec.Struct, forbid_unknown_fields=True):
    repo: _RawRepo
    branch: _Name = "master"
    glob: str | None = None  # 1.4
    name: str = ""
    method: str | _RawMethod | None = None  # 1.3
    run_empty: bool | None = None  # 1.3


_Workers = Annotated[int, msgspec.Meta(ge=1, le=1024)]


class _RawParallelism(msgspec.Struct, forbid_unknown_fields=True):
    strategy: str | None = None
    constant: _Workers | None = None
    coefficient: Annotated[float, msgspec.Meta(gt=0, le=1024)] | None = None


class _RawSpec(msgspec.Struct, forbid_unknown_fields=True):
    pipeline: _RawPipeline
    transform: _RawTransform
    input: dict[str, Any] | None = None
    inputs: Annotated[list[_RawLegacyInput], msgspec.Meta(min_length=1)] | None = None
    description: str = ""
    parallelism_spec: _RawParallelism | None = None
    parallelism: _Workers | None = None  # 1.3's top-level form
    datum_tries: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    datum_timeout: str | float | None = None
    output_branch: _Name = "master"


_MAX_DEPTH = 32  # levels of cross/union nesting


def _typed(raw: Any, kind: type[_T], where: str) -> _T:
    """``raw`` as ``kind``, or the first wrong field as one line: ``spec field a.b ...``."""
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as e:
        text, _, at = str(e).partition(" - at `$")
        at = (where + at.rstrip("`").lstrip(".")).rstrip(".")
        unknown = re.fullmatch(r"Object contains unknown field `(.+)`", text)
        if unknown:
            field = f"{at}.{unknown[1]}" if at else unknown[1]
            raise InvalidArgument(f"spec field {field} is not supported by pfsmount") from None
        missing = re.fullmatch(r"Object missing required field `(.+)`", text)
        if missing:
            field = f"{at}.{missing[1]}" if at else missing[1]
            raise InvalidArgument(f"spec field {field} is missing") from None
        raise InvalidArgument(f"spec field {at or '(the spec)'}: "
                              f"{text[:1].lower()}{text[1:]}") from None


def _glob(glob: str, where: str) -> str:
    parts = [p for p in glob.split("/") if p]
    if not glob.startswith("/") or ".." in parts or any(p in ("", ".") for p in parts):
        raise InvalidArgument(f"spec field {where}glob {glob!r} must be like / or /* or /*/*")
    if glob.count("[") != glob.count("]"):
        raise InvalidArgument(f"spec field {where}glob {glob!r} has an unclosed '['")
    return glob


def _leaf(repo: str, branch: str, glob: str, name: str, where: str) -> Input:
    """A pfs input whose names are names (an input name is a directory under /pfs)."""
    check_name("repo", repo)
    check_name("branch", branch)
    check_name("input", name or repo)
    return Input(pfs=PfsInput(repo=repo, branch=branch, glob=_glob(glob, where),
                              name=name or repo))


def _input(raw: Any, where: str, depth: int = 0) -> Input:
    if depth > _MAX_DEPTH:
        raise InvalidArgument(f"spec field {where.rstrip('.')} nests deeper than "
                              f"{_MAX_DEPTH} levels")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise InvalidArgument(
            f"spec field {where.rstrip('.')} must have exactly one of pfs, atom, cross, union")
    kind, value = next(iter(raw.items()))
    if kind in ("pfs", "atom"):
        leaf = _typed(value, _RawPfs, f"{where}{kind}.")
        return _leaf(leaf.repo, leaf.branch, leaf.glob, leaf.name, f"{where}{kind}.")
    if kind in ("cross", "union"):
        if not isinstance(value, list) or not value:
            raise InvalidArgument(f"spec field {where}{kind} must be a non-empty list")
        children = [_input(v, f"{where}{kind}[{i}].", depth + 1) for i, v in enumerate(value)]
        return Input(cross=children) if kind == "cross" else Input(union=children)
    raise InvalidArgument(f"spec field {where}{kind} is not supported "
                          "(use pfs, atom, cross or union)")


_METHODS: dict[str, Method] = {  # 1.3's aliases
    "map": Method(partition="BLOCK", incremental="DIFF"),
    "reduce": Method(partition="FILE", incremental="NONE"),
    "incremental_reduce": Method(partition="FILE", incremental="DIFF"),
    "global": Method(partition="REPO", incremental="NONE"),
}
_INCREMENTAL: dict[str, Incremental] = {"NONE": "NONE", "DIFF": "DIFF", "FULL": "FULL",
                                        "FILE": "FULL"}  # the docs' "FILE" is the proto's FULL


def _method(raw: str | _RawMethod | None, where: str) -> Method:
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


def _legacy_inputs(raw: list[_RawLegacyInput]) -> tuple[Input, V1 | None]:
    """Both 1.x ``inputs`` lists, several inputs crossed: with a ``glob`` on any input, the
    1.4 form (glob datums, ``v1`` is None); without, the 1.3 form (``method``s). One spec
    never mixes them: it would have no meaning any Pachyderm gave it."""
    globbed = [i for i, item in enumerate(raw) if item.glob is not None]
    leaves, v1 = [], []
    for i, item in enumerate(raw):
        where = f"inputs[{i}]."
        if globbed and (item.method is not None or item.run_empty is not None):
            field = "method" if item.method is not None else "runEmpty"
            raise InvalidArgument(f"spec field {where}{field} is 1.3's and inputs[{globbed[0]}]"
                                  ".glob is 1.4's: use one form")
        if globbed and item.glob is None:
            raise InvalidArgument(f"spec field {where}glob is missing (the 1.4 form: every "
                                  "input has a glob)")
        method = _method(item.method, where)
        glob = item.glob if item.glob is not None else \
            "/*" if method.partition == "BLOCK" else "/"
        leaf = _leaf(item.repo.name, item.branch, glob, item.name, where)
        assert leaf.pfs is not None
        leaves.append(leaf)
        v1.append(V1Input(name=leaf.pfs.name, repo=leaf.pfs.repo, branch=leaf.pfs.branch,
                          method=method, run_empty=bool(item.run_empty)))
    inp = leaves[0] if len(leaves) == 1 else Input(cross=leaves)
    return inp, (None if globbed else V1(inputs=v1))


# Workers per node for ``parallelism_spec.coefficient``: this machine is the one node.
NODES = 1


def _parallelism(spec: _RawSpec) -> int:
    """Containers (workers) a job may use: ``parallelism`` (1.3), or ``parallelism_spec``
    with ``constant`` or ``coefficient`` (times the nodes, at least 1), as ``strategy`` says
    when given."""
    ps = spec.parallelism_spec
    if spec.parallelism is not None:
        if ps is not None:
            raise InvalidArgument("spec fields parallelism and parallelism_spec both set the "
                                  "workers: give one")
        return spec.parallelism
    if ps is None:
        return 1
    strategy = (ps.strategy or "").upper()
    if strategy not in ("", "CONSTANT", "COEFFICIENT"):
        raise InvalidArgument(f"spec field parallelism_spec.strategy {ps.strategy!r} must be "
                              "CONSTANT or COEFFICIENT")
    if ps.constant is not None and ps.coefficient is not None:
        raise InvalidArgument("spec fields parallelism_spec.constant and .coefficient: "
                              "give one")
    if strategy == "COEFFICIENT" or (not strategy and ps.coefficient is not None):
        if ps.coefficient is None:
            raise InvalidArgument("spec field parallelism_spec.coefficient is missing "
                                  "(strategy COEFFICIENT)")
        return max(1, math.floor(ps.coefficient * NODES))
    if ps.coefficient is not None:
        raise InvalidArgument("spec field parallelism_spec.coefficient does not go with "
                              "strategy CONSTANT")
    return ps.constant if ps.constant is not None else 1


def _without_nulls(value: Any) -> Any:
    """A null field reads as an absent one, as in Pachyderm's own JSON."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _transform(t: _RawTransform) -> Transform:
    """A checked transform; ``env`` values as the strings a process gets (``true``)."""
    return Transform(
        cmd=t.cmd, stdin=t.stdin, image=t.image,
        env={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in t.env.items()},
        working_dir=t.working_dir, accept_return_code=t.accept_return_code)


def parse_spec(raw: Any) -> Spec:
    if not isinstance(raw, dict):
        raise InvalidArgument("a pipeline spec must be an object")
    raw = _without_nulls(_norm(raw))
    if not isinstance(raw.get("pipeline"), dict) or not raw["pipeline"].get("name"):
        raise InvalidArgument("spec field pipeline.name is missing")
    spec = _typed(raw, _RawSpec, "")
    name = check_name("pipeline", spec.pipeline.name)
    t = spec.transform
    transform = _transform(t)
    legacy = spec.inputs is not None and spec.input is None
    v1: V1 | None = None
    if spec.inputs is not None and spec.input is not None:
        raise InvalidArgument("spec fields input and inputs are both set: give one")
    if spec.inputs is not None:
        inp, v1 = _legacy_inputs(spec.inputs)
    elif spec.input is not None:
        inp = _input(spec.input, "input.")
    else:
        raise InvalidArgument("spec field input is missing")
    names = [leaf.name for leaf in inp.leaves()]
    if len(set(names)) != len(names) and inp.union is None:
        raise InvalidArgument(f"spec inputs share a name ({', '.join(names)}): set input names")
    if any(leaf.repo == name for leaf in inp.leaves()):
        raise InvalidArgument(f"spec input repo {name} is the pipeline's own output")
    if "out" in names:
        raise InvalidArgument("spec input name 'out' is reserved for /pfs/out")
    if v1 is not None and "prev" in names:
        raise InvalidArgument("spec input name 'prev' is reserved for /pfs/prev in a 1.3 spec")
    if t.overwrite is not None and v1 is None:
        raise InvalidArgument("spec field transform.overwrite has a meaning only in the 1.3 "
                              "form (an inputs list with method): this spec is not in it")
    check_name("branch", spec.output_branch)
    timeout = spec.datum_timeout
    return Spec(
        name=name,
        transform=transform,
        input=inp,
        description=spec.description,
        parallelism=_parallelism(spec),
        datum_tries=spec.datum_tries,
        datum_timeout=_duration(timeout) if timeout is not None else None,
        output_branch=spec.output_branch,
        legacy=legacy,
        v1=None if v1 is None else V1(inputs=v1.inputs, overwrite=bool(t.overwrite)),
    )


def _duration(value: str | float) -> float:
    """``30``, ``"30s"``, ``"5m"``, ``"1h"``: a finite number of seconds above zero."""
    seconds = float(value) if isinstance(value, int | float) else -1.0
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
    if m and not isinstance(value, int | float):
        seconds = float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m[2]]
    if not 0 < seconds < 1e9:
        raise InvalidArgument(f"spec field datum_timeout {value!r} is not a duration like 30s")
    return seconds


__all__ = ["V1", "Input", "Method", "PfsInput", "Spec", "Transform", "V1Input", "parse_specs"]
