"""Pipeline specs: Pachyderm's JSON or YAML (1.x and 2.x forms) read into one checked shape.

Accepts several specs per file (JSON objects back to back, or YAML documents), field names in
snake_case or camelCase, and every input kind of ``scheduler.inputs`` (``pfs`` or ``atom``,
``cross``, ``union``, and both 1.x ``inputs`` lists: the 1.3 form keeps 1.x meaning in
``Spec.v1``, see ``scheduler.legacy``; the 1.4 form is read as glob datums whose colliding
outputs are concatenated). A field pfsmount does not implement, or a 1.x field in a spec of
another form, is refused: a wrong spec is refused with one line naming the field. Checks that
need the store (unknown repos, cycles) are the scheduler's; nothing here touches storage, and
nothing here asks which kind an input is.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any

import msgspec
import yaml

from pfsmount.errors import InvalidArgument
from pfsmount.pfs.refs import check_name
from scheduler import cron as _cron  # noqa: F401 (registers input.cron)
from scheduler.egress import read_egress
from scheduler.fields import Name as _Name
from scheduler.fields import typed as _typed
from scheduler.fields import without_nulls as _without_nulls
from scheduler.inputs import (
    V1,
    InputKind,
    Method,
    PfsInput,
    RawV1Input,
    Union,
    V1Input,
    V1Inputs,
    check_project,
    load,
    read_input,
)


class Transform(msgspec.Struct, kw_only=True, frozen=True):
    cmd: list[str]
    stdin: list[str] = []
    image: str = ""
    env: dict[str, str] = {}
    working_dir: str = ""
    accept_return_code: list[int] = []
    err_cmd: list[str] = []  # run on a datum whose tries all failed: exit 0 recovers it
    err_stdin: list[str] = []


REPROCESS = ("until_success", "every_job")  # Pachyderm's reprocess_spec values


class Spout(msgspec.Struct, kw_only=True, frozen=True):
    """A spout: no input, one long-running process making commits (``scheduler.spout``)."""

    overwrite: bool = False  # each commit holds only its own files


NO_INPUT = Union(())  # a spout's input: no leaf, no datum, no trigger


class Spec(msgspec.Struct, kw_only=True, frozen=True, dict=True):
    name: str
    transform: Transform
    input: dict[str, Any]  # as a spec writes it, checked, defaults filled in: ``tree`` reads it
    description: str = ""
    parallelism: int = 1
    datum_tries: int = 3
    datum_timeout: float | None = None
    job_timeout: float | None = None
    reprocess_spec: str = "until_success"  # every_job: no datum is reused
    salt: str = ""  # part of every datum's identity: a new salt reprocesses everything
    output_branch: str = "master"
    legacy: bool = False  # a 1.x spec: colliding outputs are concatenated, as 1.x did
    v1: V1 | None = None  # a 1.3-form spec: run as 1.x jobs (scheduler.legacy)
    egress: str = ""  # where each successful job's output is copied (scheduler.egress)
    spout: Spout | None = None  # a spout, whose ``input`` is {}

    @property
    def digest(self) -> str:
        """What a datum's result depends on besides its inputs."""
        t = self.transform
        parts: list[Any] = [t.cmd, t.stdin, t.image, sorted(t.env.items()), t.working_dir,
                            t.accept_return_code, self.legacy]
        if self.v1 is not None:
            parts.append(msgspec.to_builtins(self.v1))
        if self.salt:  # only when given: specs stored before salt keep their datums
            parts.append(["salt", self.salt])
        blob = json.dumps(parts, sort_keys=True)
        return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()

    def __post_init__(self) -> None:
        """Reads ``input`` into ``tree`` once per spec. msgspec calls this on decoding too, so
        a stored or received spec whose input its kinds refuse is unreadable as a whole (a
        ``ValidationError``), not a failure in some later job."""
        try:
            self.tree  # noqa: B018 (read for its check)
        except InvalidArgument as e:
            raise ValueError(e.message) from None

    @property
    def tree(self) -> InputKind:
        """The input, each node an input kind: what the engine and datums ask about it."""
        tree: InputKind | None = self.__dict__.get("tree")
        if tree is None:  # a copy (copy.copy) skips __post_init__
            tree = self.__dict__["tree"] = load(self.input) if self.input else NO_INPUT
        return tree


def _snake(key: str) -> str:
    if key.isupper():  # ``URL`` (egress)
        return key.lower()
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
# nothing of the wrong type can reach a stored record. ``input`` is read by its kinds.


class _RawProject(msgspec.Struct, forbid_unknown_fields=True):
    name: str = ""


class _RawPipeline(msgspec.Struct, forbid_unknown_fields=True):
    name: _Name
    project: _RawProject | None = None  # 2.5's form: only "default" (inputs.check_project)


class _RawTransform(msgspec.Struct, forbid_unknown_fields=True):
    cmd: Annotated[list[str], msgspec.Meta(min_length=1)]
    stdin: list[str] = []
    image: str = ""
    env: dict[str, str | int | float | bool] = {}
    working_dir: str = ""
    accept_return_code: list[int] = []
    err_cmd: list[str] = []
    err_stdin: list[str] = []
    overwrite: bool | None = None  # 1.3 only
    # Taken and ignored, as the README's table says: nothing here for them to change.
    image_pull_secrets: list[str] = []  # images come from this machine's engine
    debug: bool = False  # every datum's log is kept anyway


_Workers = Annotated[int, msgspec.Meta(ge=1, le=1024)]


class _RawParallelism(msgspec.Struct, forbid_unknown_fields=True):
    strategy: str | None = None
    constant: _Workers | None = None
    coefficient: Annotated[float, msgspec.Meta(gt=0, le=1024)] | None = None


class _RawSpout(msgspec.Struct, forbid_unknown_fields=True):
    overwrite: bool = False


class _RawSpec(msgspec.Struct, forbid_unknown_fields=True):
    pipeline: _RawPipeline
    transform: _RawTransform
    input: dict[str, Any] | None = None
    inputs: Annotated[list[RawV1Input], msgspec.Meta(min_length=1)] | None = None  # 1.x
    description: str = ""
    parallelism_spec: _RawParallelism | None = None
    parallelism: _Workers | None = None  # 1.3's top-level form
    datum_tries: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    datum_timeout: str | float | None = None
    job_timeout: str | float | None = None
    reprocess_spec: str = "until_success"
    salt: str = ""
    output_branch: _Name = "master"
    egress: dict[str, Any] | None = None  # scheduler.egress reads it
    spout: _RawSpout | None = None
    # Taken and ignored, as the README's table says: Kubernetes scheduling and sizing hints
    # (one machine has nothing to place or scale) and pod metadata.
    autoscaling: bool = False
    resource_requests: dict[str, Any] | None = None
    sidecar_resource_requests: dict[str, Any] | None = None
    sidecar_resource_limits: dict[str, Any] | None = None  # pfsmount runs no sidecar
    scheduling_spec: dict[str, Any] | None = None
    tolerations: list[Any] | None = None
    metadata: dict[str, Any] | None = None


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


def _transform(t: _RawTransform) -> Transform:
    """A checked transform; ``env`` values as the strings a process gets (``true``)."""
    return Transform(
        cmd=t.cmd, stdin=t.stdin, image=t.image,
        env={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in t.env.items()},
        working_dir=t.working_dir, accept_return_code=t.accept_return_code,
        err_cmd=t.err_cmd, err_stdin=t.err_stdin)


def parse_spec(raw: Any) -> Spec:
    if not isinstance(raw, dict):
        raise InvalidArgument("a pipeline spec must be an object")
    raw = _without_nulls(_norm(raw))
    if not isinstance(raw.get("pipeline"), dict) or not raw["pipeline"].get("name"):
        raise InvalidArgument("spec field pipeline.name is missing")
    spec = _typed(raw, _RawSpec, "")
    name = check_name("pipeline", spec.pipeline.name)
    if spec.pipeline.project is not None:
        check_project(spec.pipeline.project.name, "pipeline.project.name")
    t = spec.transform
    transform = _transform(t)
    legacy = spec.inputs is not None and spec.input is None
    v1: V1 | None = None
    tree: InputKind
    if spec.spout is not None and (spec.input is not None or spec.inputs is not None):
        raise InvalidArgument("spec field input: a spout takes no input (it makes its own "
                              "commits)")
    if spec.spout is not None and spec.egress is not None:
        raise InvalidArgument("spec field egress: a spout runs no jobs to egress")
    if spec.inputs is not None and spec.input is not None:
        raise InvalidArgument("spec fields input and inputs are both set: give one")
    if spec.inputs is not None:
        old = V1Inputs.read(spec.inputs, "inputs", read_input)
        tree, v1 = old.tree, old.v1
    elif spec.input is not None:
        tree = read_input(spec.input).for_pipeline(name)
    elif spec.spout is not None:
        tree = NO_INPUT
    else:
        raise InvalidArgument("spec field input is missing")
    names = [leaf.name for leaf in tree.leaves()]
    if len(set(names)) != len(names) and not tree.names_may_repeat:
        raise InvalidArgument(f"spec inputs share a name ({', '.join(names)}): set input names")
    if name in tree.repos():
        raise InvalidArgument(f"spec input repo {name} is the pipeline's own output")
    if "out" in names:
        raise InvalidArgument("spec input name 'out' is reserved for /pfs/out")
    if v1 is not None and "prev" in names:
        raise InvalidArgument("spec input name 'prev' is reserved for /pfs/prev in a 1.3 spec")
    if t.overwrite is not None and v1 is None:
        raise InvalidArgument("spec field transform.overwrite has a meaning only in the 1.3 "
                              "form (an inputs list with method): this spec is not in it")
    check_name("branch", spec.output_branch)
    if spec.reprocess_spec not in REPROCESS:
        raise InvalidArgument(f"spec field reprocess_spec {spec.reprocess_spec!r} must be "
                              f"{' or '.join(REPROCESS)}")
    if t.err_stdin and not t.err_cmd:
        raise InvalidArgument("spec field transform.err_stdin needs transform.err_cmd")
    if t.err_cmd and v1 is not None:
        raise InvalidArgument("spec field transform.err_cmd is for datums (the input form); "
                              "this spec is in the 1.3 form")
    return Spec(
        name=name,
        transform=transform,
        input=tree.stored() if spec.spout is None else {},
        description=spec.description,
        parallelism=_parallelism(spec),
        datum_tries=spec.datum_tries,
        datum_timeout=_duration(spec.datum_timeout, "datum_timeout"),
        job_timeout=_duration(spec.job_timeout, "job_timeout"),
        reprocess_spec=spec.reprocess_spec,
        salt=spec.salt,
        output_branch=spec.output_branch,
        legacy=legacy,
        v1=None if v1 is None else V1(inputs=v1.inputs, overwrite=bool(t.overwrite)),
        egress=read_egress(spec.egress),
        spout=None if spec.spout is None else Spout(overwrite=spec.spout.overwrite),
    )


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}


def _duration(value: str | float | None, field: str) -> float | None:
    """``30``, ``"30s"``, ``"5m"``, ``"1h30m"`` (Go's form, as Pachyderm writes them): a
    finite number of seconds above zero."""
    if value is None:
        return None
    seconds = float(value) if isinstance(value, int | float) else -1.0
    text = str(value).strip()
    if not isinstance(value, int | float) and re.fullmatch(r"(\d+(\.\d+)?(ms|s|m|h))+|\d+(\.\d+)?",
                                                          text):
        seconds = sum(float(n) * _UNITS[u]
                      for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|)", text))
    if not 0 < seconds < 1e9:
        raise InvalidArgument(f"spec field {field} {value!r} is not a duration like 30s")
    return seconds


__all__ = ["V1", "InputKind", "Method", "PfsInput", "Spec", "Transform", "V1Input", "parse_specs"]
