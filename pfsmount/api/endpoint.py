"""The route table's rows (``Endpoint``) and the HTTP plumbing every row shares.

A route is declared once, as an ``Endpoint``: its method and path, its arguments (a
``wire.*Args`` struct), the wire type of its answer, and whether it touches the daemon's
host. The server is built from the rows (``as_route``) and so is the OpenAPI document
(``pfsmount.api.openapi``), so neither can describe a route the other lacks.

Where arguments go, for every route:

- A name that is one path segment (repo, branch, pipeline, job id, reproduction token) is
  in the path. A reference (``repo@branch:/path``) never is: it holds ``/``.
- GET and DELETE take every other argument in the query string.
- POST takes them in a JSON object body, except where the body is a file's bytes
  (``upload``: ``/files/put``), whose arguments are in the query string.

Arguments are checked here, before the model sees them: a name the route does not declare
is refused (400), not ignored; ``None`` (JSON null) means "not given"; a required one must
be given; numbers must be finite; text must be valid UTF-8 and at most ``MAX_TEXT`` bytes.
Every ``PfsError`` becomes ``{"error", "message"}`` with its status; anything else a 500
logged with its traceback. Handlers return a value that is converted to
the route's wire type and encoded here, or a ``Response`` of their own (bytes, streams).
This module knows no route and no model operation.
"""

from __future__ import annotations

import functools
import logging
import math
import types
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin
from urllib.parse import unquote_to_bytes

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pfsmount.errors import InvalidArgument, PfsError, TooLarge

from .wire import API_PREFIX, NoArgs, encode, encode_line, error_body, same_encoding, to_wire

log = logging.getLogger("pfsmount.api")
MAX_BODY = 16 << 20  # bytes of a JSON request body (a pipeline spec file is far smaller)
MAX_TEXT = 1 << 20  # bytes of one text argument: a description, a reference, a path
JSON, NDJSON = "application/json", "application/x-ndjson"
BYTES, TEXT = "application/octet-stream", "text/plain"


@dataclass(frozen=True)
class Call:
    """What a handler gets: the request, its path segments, and its decoded arguments."""

    request: Request
    path: dict[str, str]
    args: Any


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """One route: what it takes, what it answers, and whether it reaches the daemon's host.

    ``answer`` is the wire type of a JSON answer, or of each line of an NDJSON one (``media``);
    ``None`` for bytes and text. ``local_only`` routes read or write paths on the daemon's
    host (``/files/import``, ``/files/export``, datum reproduction): they are served on the
    local socket only, and a server for other machines leaves them out by this mark.
    """

    method: str
    path: str  # under API_PREFIX; "{name}" is a path segment
    handler: Handler
    summary: str
    args: type[msgspec.Struct] = NoArgs
    answer: Any = None
    media: str = JSON
    status: int = 200
    upload: bool = False  # the request body is a file's bytes
    local_only: bool = False
    # what to say of an argument this route does not take but a caller may still send
    # (a form the API had before): "use ... instead"
    moved: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def args_in(self) -> str:
        """``"query"`` or ``"body"``: where this route's arguments go (the module's rule)."""
        return "query" if self.method in ("GET", "DELETE") or self.upload else "body"

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


def as_route(ep: Endpoint) -> Route:
    """The Starlette route serving ``ep``: arguments decoded, the answer encoded."""
    decode = decoder(ep.args)
    in_body = ep.args_in == "body"

    async def handle(request: Request) -> Response:
        query = dict(request.query_params)
        if in_body:  # arguments in the query string of a POST would be dropped unseen
            _refuse_unknown(ep, query, ())
            params = await body(request)
        else:
            params = query
        _refuse_unknown(ep, params, arg_names(ep.args))
        result = await ep.handler(Call(request, request.path_params, decode(params)))
        if isinstance(result, Response):
            return result
        if ep.media == NDJSON:
            return ndjson(result, ep.answer)
        return json_response(to_wire(result, ep.answer), ep.status)

    return Route(API_PREFIX + ep.path, guarded(handle), methods=[ep.method])


def _refuse_unknown(ep: Endpoint, params: dict[str, Any], known: Iterable[str]) -> None:
    """An argument the route does not declare is refused, not ignored: it is a caller's
    mistake (a misspelling, a form the API no longer has) that would otherwise do something
    else than what was asked, silently."""
    for name in sorted(params.keys() - set(known)):
        hint = ep.moved.get(name)
        raise InvalidArgument(f"{ep.method} {API_PREFIX}{ep.path} takes no argument "
                              f"{name[:80]!r}" + (f"; {hint}" if hint else ""))


def json_response(value: Any, status: int = 200) -> Response:
    return Response(encode(value), status_code=status, media_type=JSON)


def error_response(err: PfsError) -> Response:
    return json_response(error_body(err), err.status)


def guarded(handler: Callable[[Request], Awaitable[Response]]
            ) -> Callable[[Request], Awaitable[Response]]:
    """Map errors to responses so that no exception reaches the server."""

    async def wrapper(request: Request) -> Response:
        try:
            _check_utf8(request)
            return await handler(request)
        except PfsError as e:
            return error_response(e)
        except ClientDisconnect:  # nobody is left to answer; not the daemon's fault
            log.info("client went away during %s %s", request.method, request.url.path)
            return Response(status_code=400)
        except Exception:
            log.exception("internal error in %s %s", request.method, request.url.path)
            return json_response({"error": "internal", "message": "internal error; see the "
                                  "daemon log"}, 500)

    return wrapper


def _check_utf8(request: Request) -> None:
    """Percent-escapes in the path and query must decode as UTF-8: the server would read
    ``x%FF`` as ``x\ufffd``, and a file would be stored under a name nobody gave."""
    raw = request.scope.get("raw_path") or b""
    query = request.scope.get("query_string") or b""
    for part in (raw, *query.split(b"&")):
        if b"%" in part or not part.isascii():
            try:
                unquote_to_bytes(part.replace(b"+", b" ")).decode()
            except UnicodeDecodeError:
                shown = part.decode("latin-1")[:80]
                raise InvalidArgument(f"{shown!r} is not valid UTF-8 once decoded") from None


async def body(request: Request) -> dict[str, Any]:
    """The JSON object a request carries, at most ``MAX_BODY`` bytes (uploads stream
    elsewhere and have no limit)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge(f"request body is {int(declared)} bytes; at most {MAX_BODY} are taken")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_BODY:
            raise TooLarge(f"request body is over {MAX_BODY} bytes")
        parts.append(part)
    raw = b"".join(parts)
    if not raw:
        return {}
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise InvalidArgument("request body is not valid JSON") from None
    except RecursionError:
        raise InvalidArgument("request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidArgument("request body must be a JSON object")
    return value


@functools.cache
def decoder(kind: type[msgspec.Struct]) -> Callable[[dict[str, Any]], Any]:
    """Decode a struct of arguments from a JSON body or a query string, field by field,
    with ``arg``'s checks and messages. Names it does not know are the route's to refuse
    (``arg_names``)."""
    fields = []
    for f in msgspec.structs.fields(kind):
        base = f.type
        if get_origin(base) is Annotated:  # a description, for the document
            base = get_args(base)[0]
        if isinstance(base, types.UnionType):  # "T | None": None is "not given"
            base = next(t for t in get_args(base) if t is not type(None))
        if f.default_factory is not msgspec.NODEFAULT:
            raise TypeError(f"{kind.__name__}.{f.name}: arguments take plain defaults")
        fields.append((f.name, f.encode_name, base, ... if f.required else f.default))

    def decode(params: dict[str, Any]) -> Any:
        return kind(**{name: arg(params, key, base, default)
                       for name, key, base, default in fields})

    return decode


@functools.cache
def arg_names(kind: type[msgspec.Struct]) -> frozenset[str]:
    """The argument names a struct of arguments declares, as callers spell them."""
    return frozenset(f.encode_name for f in msgspec.structs.fields(kind))


_KINDS: dict[Any, str] = {str: "a string", int: "an integer", float: "a number",
                          bool: "a boolean", list[str]: "a list of strings"}
_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


def arg(params: dict[str, Any], name: str, kind: Any = str, default: Any = ...) -> Any:
    """One typed argument from a JSON body or a query string (where every value is text)."""
    value = params.get(name)
    if value is None:
        if default is ...:
            raise InvalidArgument(f"missing argument {name!r}")
        return default
    if kind is bool and isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    try:
        value = msgspec.convert(value, kind, strict=not isinstance(value, str))
    except msgspec.ValidationError:
        raise InvalidArgument(f"argument {name!r} must be "
                              f"{_KINDS.get(kind, getattr(kind, '__name__', kind))}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"argument {name!r} must be a finite number")
    for text in value if isinstance(value, list) else [value]:
        if isinstance(text, str):
            _check_text(name, text)
    return value


def _check_text(name: str, text: str) -> None:
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(f"argument {name!r} is not valid UTF-8") from None
    if size > MAX_TEXT:
        raise TooLarge(f"argument {name!r} is {size} bytes; at most {MAX_TEXT} are taken")


def ndjson(items: Iterable[Any], kind: Any) -> StreamingResponse:
    """Stream items in the wire shape ``kind`` as NDJSON; the first lines go out at once,
    the rest in batches. A failure after the first line is the last line."""

    def lines() -> Iterator[bytes]:
        batch: list[bytes] = []
        size = 16
        plain: Any = None  # items of this type encode as ``kind`` does: no copy (to_wire)
        try:
            for item in items:
                if type(item) is not plain:
                    record: Any = type(item)
                    if isinstance(kind, type) and same_encoding(record, kind):
                        plain = record
                    else:
                        item = to_wire(item, kind)
                batch.append(encode_line(item))
                if len(batch) >= size:
                    yield b"".join(batch)
                    batch.clear()
                    size = 1024
        except PfsError as e:
            batch.append(encode_line(error_body(e)))
        except Exception:
            log.exception("internal error while streaming")
            batch.append(encode_line({"error": "internal", "message": "internal error"}))
        if batch:
            yield b"".join(batch)

    return StreamingResponse(lines(), media_type=NDJSON)
