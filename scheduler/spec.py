"""Pipeline specs: Pachyderm's JSON or YAML (1.x and 2.x forms) read into one checked shape.

Accepts several specs per file (JSON objects back to back, or YAML documents), field names in
snake_case or camelCase, ``atom`` for ``pfs``, and the 1.3 ``inputs`` list (each input glob
``/*``, or ``/`` for ``method: reduce``; several inputs are crossed). A wrong spec is refused
with one line naming the field. Checks that need the store (unknown repos, cycles) are the
scheduler's; nothing here touches storage.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import msgspec
import yaml

from pfsmount.errors import InvalidArgument
from pfsmount.pfs.refs import check_name, normalize_path


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

    @property
    def digest(self) -> str:
        """What a datum's result depends on besides its inputs."""
        t = self.transform
        blob = json.dumps([t.cmd, t.stdin, t.image, sorted(t.env.items()), t.working_dir,
                           t.accept_return_code, self.legacy], sort_keys=True)
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
    """Every spec in a file's text, checked; raises ``InvalidArgument`` naming the field."""
    docs = _documents(text)
    if not docs:
        raise InvalidArgument("the spec file holds no pipeline")
    return [parse_spec(doc) for doc in docs]


def _field(raw: dict[str, Any], name: str, kind: type, where: str, default: Any = ...) -> Any:
    value = raw.get(name, default)
    if value is ...:
        raise InvalidArgument(f"spec field {where}{name} is missing")
    if kind is float and isinstance(value, int):
        value = float(value)
    if kind is int and isinstance(value, str) and value.isdigit():
        value = int(value)  # Pachyderm's JSON often quotes numbers ("constant": "1")
    if value is not None and not isinstance(value, kind):
        raise InvalidArgument(f"spec field {where}{name} must be {kind.__name__}")
    return value


def _glob(raw: dict[str, Any], where: str, default: str = "/*") -> str:
    glob: str = _field(raw, "glob", str, where, default)
    parts = [p for p in glob.split("/") if p]
    if not glob.startswith("/") or ".." in parts or any(p in ("", ".") for p in parts):
        raise InvalidArgument(f"spec field {where}glob {glob!r} must be like / or /* or /*/*")
    try:
        re.compile("|".join(re.escape(p).replace(r"\*", ".*") for p in parts) or ".")
    except re.error:
        raise InvalidArgument(f"spec field {where}glob {glob!r} is not a valid glob") from None
    if glob.count("[") != glob.count("]"):
        raise InvalidArgument(f"spec field {where}glob {glob!r} has an unclosed '['")
    return glob


def _pfs(raw: Any, where: str) -> PfsInput:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"spec field {where} must be an object")
    repo = _field(raw, "repo", str, where)
    check_name("repo", repo)
    name = _field(raw, "name", str, where, "") or repo
    check_name("input name", name)
    branch = _field(raw, "branch", str, where, "master")
    check_name("branch", branch)
    return PfsInput(repo=repo, branch=branch, glob=_glob(raw, where), name=name)


def _input(raw: Any, where: str) -> Input:
    if not isinstance(raw, dict) or len([k for k in raw if raw[k] is not None]) != 1:
        raise InvalidArgument(
            f"spec field {where.rstrip('.')} must have exactly one of pfs, atom, cross, union")
    kind, value = next((k, v) for k, v in raw.items() if v is not None)
    if kind in ("pfs", "atom"):
        return Input(pfs=_pfs(value, f"{where}{kind}."))
    if kind in ("cross", "union"):
        if not isinstance(value, list) or not value:
            raise InvalidArgument(f"spec field {where}{kind} must be a non-empty list")
        children = [_input(v, f"{where}{kind}[{i}].") for i, v in enumerate(value)]
        return Input(cross=children) if kind == "cross" else Input(union=children)
    raise InvalidArgument(f"spec field {where}{kind} is not supported "
                          "(use pfs, atom, cross or union)")


def _legacy_inputs(raw: Any) -> Input:
    """The 1.3 form: ``inputs: [{repo: {name}, glob|method}]``, several crossed."""
    if not isinstance(raw, list) or not raw:
        raise InvalidArgument("spec field inputs must be a non-empty list")
    leaves = []
    for i, item in enumerate(raw):
        where = f"inputs[{i}]."
        if not isinstance(item, dict) or not isinstance(item.get("repo"), dict):
            raise InvalidArgument(f"spec field {where}repo.name is missing")
        repo = _field(item["repo"], "name", str, f"{where}repo.")
        check_name("repo", repo)
        method = item.get("method")
        default = "/" if method == "reduce" or (isinstance(method, dict) and
                                                method.get("partition_unit") == "repo") else "/*"
        leaves.append(Input(pfs=PfsInput(repo=repo, branch=item.get("branch") or "master",
                                         glob=_glob(item, where, default),
                                         name=item.get("name") or repo)))
    return leaves[0] if len(leaves) == 1 else Input(cross=leaves)


def parse_spec(raw: Any) -> Spec:
    if not isinstance(raw, dict):
        raise InvalidArgument("a pipeline spec must be an object")
    raw = _norm(raw)
    pipeline = raw.get("pipeline")
    if not isinstance(pipeline, dict) or not pipeline.get("name"):
        raise InvalidArgument("spec field pipeline.name is missing")
    name = _field(pipeline, "name", str, "pipeline.")
    check_name("pipeline", name)
    t = raw.get("transform")
    if not isinstance(t, dict):
        raise InvalidArgument("spec field transform is missing")
    cmd = _field(t, "cmd", list, "transform.")
    if not cmd or not all(isinstance(c, str) for c in cmd):
        raise InvalidArgument("spec field transform.cmd must be a non-empty list of strings")
    stdin = _field(t, "stdin", list, "transform.", []) or []
    env = _field(t, "env", dict, "transform.", {}) or {}
    transform = Transform(
        cmd=cmd,
        stdin=[str(s) for s in stdin],
        image=_field(t, "image", str, "transform.", "") or "",
        env={str(k): str(v) for k, v in env.items()},
        working_dir=_field(t, "working_dir", str, "transform.", "") or "",
        accept_return_code=[int(c) for c in
                            (_field(t, "accept_return_code", list, "transform.", []) or [])],
    )
    legacy = "inputs" in raw and "input" not in raw
    if legacy:
        inp = _legacy_inputs(raw["inputs"])
    elif "input" in raw:
        inp = _input(raw["input"], "input.")
    else:
        raise InvalidArgument("spec field input is missing")
    names = [leaf.name for leaf in inp.leaves()]
    if len(set(names)) != len(names) and inp.union is None:
        raise InvalidArgument(f"spec inputs share a name ({', '.join(names)}): set input names")
    if any(leaf.repo == name for leaf in inp.leaves()):
        raise InvalidArgument(f"spec input repo {name} is the pipeline's own output")
    if "out" in names:
        raise InvalidArgument("spec input name 'out' is reserved for /pfs/out")
    par = raw.get("parallelism_spec") or {}
    parallelism = _field(par, "constant", int, "parallelism_spec.", 1) if isinstance(
        par, dict) else 1
    if parallelism < 1:
        raise InvalidArgument("spec field parallelism_spec.constant must be at least 1")
    tries = _field(raw, "datum_tries", int, "", 3)
    if tries < 1:
        raise InvalidArgument("spec field datum_tries must be at least 1")
    timeout = raw.get("datum_timeout")
    output_branch = _field(raw, "output_branch", str, "", "master")
    check_name("branch", output_branch)
    return Spec(
        name=name,
        transform=transform,
        input=inp,
        description=_field(raw, "description", str, "", "") or "",
        parallelism=parallelism,
        datum_tries=tries,
        datum_timeout=_duration(timeout) if timeout is not None else None,
        output_branch=output_branch,
        legacy=legacy,
    )


def _duration(value: Any) -> float:
    """``30``, ``"30s"``, ``"5m"``, ``"1h"``."""
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
    if not m:
        raise InvalidArgument(f"spec field datum_timeout {value!r} is not a duration like 30s")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m[2]]
    return float(m[1]) * scale


__all__ = ["Input", "PfsInput", "Spec", "Transform", "normalize_path", "parse_specs"]
