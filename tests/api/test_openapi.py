"""The OpenAPI document the daemon serves describes exactly the routes it serves.

Checked against a live daemon (every documented operation reaches its handler; a method the
document does not give a path is refused by the router), against the route table the app is
built from (both ways), against the server's own argument decoders, and against real answers
(validated with ``jsonschema``). Routes that reach the daemon's host are marked local-only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from pfsmount import Client
from pfsmount.api.endpoint import Endpoint, decoder
from pfsmount.api.openapi import LOCAL_ONLY, document
from pfsmount.api.pipelines import routes
from pfsmount.api.server import served
from pfsmount.errors import InvalidArgument, TooLarge
from pfsmount.pfs import Pfs
from scheduler.engine import Scheduler
from tests.api.test_fuzz import ROUTES as FUZZED
from tests.conftest import Pfsmount

METHODS = ("get", "post", "delete", "put", "patch")
HOST_ARGS = {"local", "dest"}  # arguments that name a path on the daemon's host


@pytest.fixture
def table(pfs: Pfs, tmp_path: Path) -> Iterator[list[Endpoint]]:
    """The route table ``build_app`` serves, made over a real store and scheduler."""
    yield served(pfs, dict, lambda: None, routes(Scheduler(pfs, tmp_path, None)))


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def argument_names(doc: dict[str, Any], op: dict[str, Any]) -> set[str]:
    names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
    for media in op.get("requestBody", {}).get("content", {}).values():
        ref = media["schema"].get("$ref")
        if ref:
            names |= set(component(doc, ref).get("properties", {}))
    return names


def component(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


def validate(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    """``value`` against ``schema``, whose ``$ref``s point into the document."""
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(value)


def test_the_document_lists_exactly_the_routes_of_the_table(
        fresh_pfsd: Pfsmount, table: list[Endpoint]) -> None:
    with Client(fresh_pfsd.root, timeout=60) as c:
        doc = c.openapi()
    assert doc["openapi"] == "3.1.0"
    documented = {(m, p) for m, p, _ in operations(doc)}
    assert documented == {(ep.method, "/v1" + ep.path) for ep in table}
    assert ("GET", "/v1/openapi.json") in documented
    assert len(documented) == len(table)  # one operation per route: none shadows another


def test_every_documented_operation_is_served_and_nothing_else(fresh_pfsd: Pfsmount) -> None:
    """Each operation reaches its handler (an answer of its own, never the router's plain
    404/405); each other method on a documented path is the router's 405. Requests carry
    arguments that fail before anything is done, or names that do not exist; shutdown goes
    last and stops the daemon."""
    with Client(fresh_pfsd.root, timeout=60) as c:
        doc = c.openapi()
        ops = sorted(operations(doc), key=lambda o: o[1] == "/v1/shutdown")
        assert ops[-1][:2] == ("POST", "/v1/shutdown")
        for method, path, op in ops:
            url = re.sub(r"{\w+}", "no-such-thing", path).removeprefix("/v1")
            if path == "/v1/shutdown":  # the answer may not get out: Client knows
                c.shutdown()
                continue
            body = b"[]" if "requestBody" in op and "application/json" in op[
                "requestBody"]["content"] else None
            r = c.transport.request(method, url, content=body, fresh=True)
            assert r.status_code != 405, (method, path)
            if r.status_code == 404:  # the handler's own: a thing of that name is missing
                assert json.loads(r.content)["error"] == "not_found", (method, path, r.content)
            for other in METHODS:
                if other not in doc["paths"][path]:
                    answer = c.transport.request(other.upper(), url, fresh=True)
                    assert answer.status_code == 405, (other, path, answer.content[:200])
    deadline = time.monotonic() + 30
    while fresh_pfsd.root.joinpath("pfsmount.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not fresh_pfsd.root.joinpath("pfsmount.sock").exists(), "shutdown did not stop it"
    fresh_pfsd.up()  # for the fixture's own checks and down


def sample(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A value of ``schema`` (the first alternative of each choice)."""
    if "$ref" in schema:
        return sample(doc, component(doc, schema["$ref"]))
    if "anyOf" in schema:
        return sample(doc, next(s for s in schema["anyOf"] if s.get("type") != "null"))
    kind = schema.get("type")
    if kind == "object":
        return {k: sample(doc, v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [sample(doc, schema.get("items", {"type": "string"}))]
    scalars: dict[str, Any] = {"string": "x", "integer": 3, "number": 1.5, "boolean": True}
    return scalars[str(kind)]


def test_documented_arguments_decode_with_the_servers_decoders(
        pfs: Pfs, table: list[Endpoint]) -> None:
    """A body or query the document describes decodes, every required argument is required
    by the decoder too, and what the decoder makes is again what the document says."""
    doc = json.loads(msgspec.json.encode(document(table)))
    by_key = {(ep.method, "/v1" + ep.path): ep for ep in table}
    checked = 0
    for method, path, op in operations(doc):
        ep = by_key[(method, path)]
        query = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            schema = body["schema"]
            required = set(component(doc, schema["$ref"]).get("required", []))
        elif query:
            schema = {"type": "object", "properties": {k: p["schema"] for k, p in
                                                       query.items()}}
            required = {k for k, p in query.items() if p["required"]}
        else:
            continue
        value = sample(doc, schema)
        validate(doc, schema, value)
        if not body:  # a query string carries text
            value = {k: str(v).lower() if isinstance(v, bool) else str(v)
                     for k, v in value.items()}
        decoded = decoder(ep.args)(value)
        validate(doc, schema, msgspec.to_builtins(decoded))
        for name in schema.get("properties", {}) or component(doc, schema["$ref"])[
                "properties"]:
            fewer = {k: v for k, v in value.items() if k != name}
            if name in required:
                with pytest.raises(InvalidArgument, match=f"missing argument '{name}'"):
                    decoder(ep.args)(fewer)
            else:
                decoder(ep.args)(fewer)
        checked += 1
    assert checked >= 30
    with pytest.raises(TooLarge):  # and the decoders' own checks still hold
        decoder(by_key[("POST", "/v1/repos")].args)({"name": "x" * (2 << 20)})


def test_host_routes_are_marked_local_only(table: list[Endpoint]) -> None:
    doc = json.loads(msgspec.json.encode(document(table)))
    marked = {(m, p) for m, p, op in operations(doc) if op.get(LOCAL_ONLY)}
    assert marked == {(ep.method, "/v1" + ep.path) for ep in table if ep.local_only}
    assert {("POST", "/v1/files/import"), ("POST", "/v1/files/export")} <= marked
    for method, path, op in operations(doc):
        if argument_names(doc, op) & HOST_ARGS:
            assert (method, path) in marked, (method, path)
    assert ("POST", "/v1/files/put") not in marked  # uploads and URLs stay for everyone


def test_a_server_for_other_machines_leaves_the_host_routes_out(
        pfs: Pfs, tmp_path: Path, table: list[Endpoint]) -> None:
    remote = served(pfs, dict, lambda: None, routes(Scheduler(pfs, tmp_path, None)),
                    local=False)
    assert {ep.key for ep in remote} == {ep.key for ep in table if not ep.local_only}
    doc = json.loads(msgspec.json.encode(document(remote)))
    assert not [op for _, _, op in operations(doc) if op.get(LOCAL_ONLY)]
    assert "/v1/files/import" not in doc["paths"] and "/v1/files/put" in doc["paths"]


def test_the_fuzz_test_knows_each_routes_arguments(table: list[Endpoint]) -> None:
    """test_fuzz lists the routes it fuzzes with their arguments by hand: each must still
    exist with exactly those arguments (less the host and network ones it never sends)."""
    doc = json.loads(msgspec.json.encode(document(table)))
    ops = {(m, p): op for m, p, op in operations(doc)}
    for (method, path), names in FUZZED.items():
        op = ops.get((method, "/v1" + path))
        assert op is not None, f"test_fuzz fuzzes {method} {path}, which is not served"
        assert set(names) == argument_names(doc, op) - {"local", "url", "dest"}, path


def test_real_answers_validate_against_their_schemas(pfsd: Pfsmount, client: Client) -> None:
    doc = client.openapi()
    ops = {(m, p): op for m, p, op in operations(doc)}

    def check(method: str, route: str, url: str, **kw: Any) -> None:
        r = client.transport.request(method, url, **kw)
        assert r.status_code < 300, (url, r.content[:300])
        answer = ops[(method, "/v1" + route)]["responses"][str(r.status_code)]
        media, shape = next(iter(answer["content"].items()))
        values = ([json.loads(line) for line in r.content.splitlines()]
                  if media == "application/x-ndjson" else [json.loads(r.content)])
        assert values
        for value in values:
            validate(doc, shape["schema"], value)

    check("POST", "/repos", "/repos", json={"name": "oa", "description": "d"})
    client.put_file("oa@master:/d/a", b"alpha\n")
    client.put_file("oa@master:/d/b", b"beta\n")
    check("POST", "/repos", "/repos", json={"name": "oa_in"})
    check("GET", "/repos", "/repos")
    check("GET", "/repos/{name}/branches", "/repos/oa/branches")
    check("GET", "/repos/{name}/commits", "/repos/oa/commits")
    check("GET", "/commits/inspect", "/commits/inspect", params={"ref": "oa@master"})
    check("GET", "/files/list", "/files/list", params={"ref": "oa@master:/d"})
    check("GET", "/files/diff", "/files/diff", params={"new": "oa@master"})
    check("POST", "/files/put", "/files/put", params={"ref": "oa@master", "path": "/c"},
          content=b"gamma\n")
    check("GET", "/fsck", "/fsck")
    check("POST", "/pipelines", "/pipelines", json={"spec": json.dumps({
        "pipeline": {"name": "oa_copy"}, "transform": {"cmd": ["cp", "-r", "/pfs/oa_in",
                                                               "/pfs/out"]},
        "input": {"pfs": {"repo": "oa_in", "glob": "/*"}}})})
    check("GET", "/pipelines/{name}", "/pipelines/oa_copy")
    check("GET", "/status", "/status")
