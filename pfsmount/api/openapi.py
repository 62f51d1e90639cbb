"""The OpenAPI 3.1 document of the routes a server serves, made from the route table.

Schemas come from the wire structs (``msgspec.json.schema_components``), so the document
says what the decoders take and the encoders give; it is never written by hand. Routes that
reach the daemon's host carry ``x-pfsmount-local-only: true``. Nothing here serves anything.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from .endpoint import BYTES, JSON, NDJSON, Endpoint
from .wire import API_PREFIX, Error, NoArgs

LOCAL_ONLY = "x-pfsmount-local-only"
_REF = "#/components/schemas/{name}"


def document(endpoints: list[Endpoint]) -> dict[str, Any]:
    """The document of ``endpoints``: one operation per route."""
    types: list[Any] = [Error]
    for ep in endpoints:
        if ep.args is not NoArgs:
            types.append(ep.args)
        if ep.answer is not None:
            types.append(ep.answer)
    found, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema = dict(zip(map(_key, types), found, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(API_PREFIX + ep.path, {})[ep.method.lower()] = _operation(
            ep, schema, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "pfsmount daemon API", "version": API_PREFIX.lstrip("/"),
                 "description": "HTTP+JSON over the daemon's Unix socket. Names that are one "
                 "path segment go in the path; GET and DELETE take their other arguments in "
                 "the query string, POST in a JSON object body (an upload: in the query). "
                 "Failures answer an Error with a 4xx or 5xx status."},
        "paths": paths,
        "components": {"schemas": components},
    }


def _key(kind: Any) -> str:
    return repr(kind)


def _operation(ep: Endpoint, schema: dict[str, Any],
               components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": ep.method.lower() + re.sub(r"[^a-z]+", "_", ep.path.lower()).rstrip("_"),
        "summary": ep.summary,
    }
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in re.findall(r"{(\w+)}", ep.path)]
    if ep.args is not NoArgs:
        args = schema[_key(ep.args)]
        if ep.args_in == "query":
            body = components[args["$ref"].rsplit("/", 1)[1]]
            params += [{"name": name, "in": "query", "required": name in body.get("required", []),
                        "schema": prop} for name, prop in body["properties"].items()]
        else:
            op["requestBody"] = {"required": True, "content": {JSON: {"schema": args}}}
    if ep.upload:
        op["requestBody"] = {"required": False, "description": "the file's bytes (none "
                             "with url)", "content": {BYTES: {"schema": _bytes(BYTES)}}}
    if params:
        op["parameters"] = params
    op["responses"] = {
        str(ep.status): _answer(ep, schema),
        "default": {"description": "a failure", "content": {JSON: {"schema":
                                                                    schema[_key(Error)]}}},
    }
    if ep.local_only:
        op[LOCAL_ONLY] = True
    return op


def _answer(ep: Endpoint, schema: dict[str, Any]) -> dict[str, Any]:
    if ep.answer is None:
        return {"description": "the bytes", "content": {ep.media: {"schema": _bytes(ep.media)}}}
    shape = schema[_key(ep.answer)]
    if ep.media == NDJSON:
        return {"description": "one JSON value per line, each of this schema; a failure "
                "after the first line ends the stream with an Error line",
                "content": {NDJSON: {"schema": shape}}}
    return {"description": "the answer", "content": {JSON: {"schema": shape}}}


def _bytes(media: str) -> dict[str, Any]:
    return {"type": "string", "contentMediaType": media}
