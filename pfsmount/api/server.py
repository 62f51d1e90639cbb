"""The HTTP+JSON API over a Unix socket: one route per model operation, nothing more.

Each handler parses its arguments, runs the model call in a worker thread (LMDB, hashing and
file I/O must never block the trio loop that also serves the mount), and encodes the result.
Every ``PfsError`` becomes ``{"error", "message"}`` with its status; anything else becomes a
500 that is logged with its traceback. Layers above (the scheduler) add routes of their own
through ``extra_routes``.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import anyio
import anyio.to_thread
import msgspec
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Send

from pfsmount.errors import InvalidArgument, PfsError, StoreFull, TooLarge
from pfsmount.pfs import Counts, Pfs
from pfsmount.pfs.export import export
from pfsmount.pfs.files import LocalPath, Source, Stream, Url
from pfsmount.pfs.fsck import fsck
from pfsmount.pfs.garbage import collect
from pfsmount.pfs.refs import parse_ref
from pfsmount.pfs.repair import repair

from .wire import API_PREFIX, encode, encode_line, error_body

log = logging.getLogger("pfsmount.api")
MAX_BODY = 16 << 20  # bytes of a JSON request body (a pipeline spec file is far smaller)
MAX_TEXT = 1 << 20  # bytes of one text argument: a description, a reference, a path
Handler = Callable[[Request], Awaitable[Response]]


def json_response(value: Any, status: int = 200) -> Response:
    return Response(encode(value), status_code=status, media_type="application/json")


def error_response(err: PfsError) -> Response:
    return json_response(error_body(err), err.status)


def guarded(handler: Handler) -> Handler:
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


_KINDS: dict[Any, str] = {str: "a string", int: "an integer", float: "a number",
                          bool: "a boolean", list[str]: "a list of strings"}
_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


def arg(params: dict[str, Any], name: str, kind: Any = str, default: Any = ...) -> Any:
    """One typed argument from a JSON body or a query string (where every value is text).

    ``None`` (JSON null) stands for "not given"; a required argument must be given. Numbers
    must be finite, and text must be valid UTF-8 and at most ``MAX_TEXT`` bytes.
    """
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


def ndjson(items: Iterable[Any]) -> StreamingResponse:
    """Stream items as NDJSON; the first lines go out at once, the rest in batches."""

    def lines() -> Iterator[bytes]:
        batch: list[bytes] = []
        size = 16
        try:
            for item in items:
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

    return StreamingResponse(lines(), media_type="application/x-ndjson")


class _BodyReader:
    """A blocking ``readinto`` over the request body, for model code in a worker thread."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self.stream = stream
        self.buf = memoryview(b"")
        self.done = False

    async def _next(self) -> bytes | None:
        try:
            return await self.stream.__anext__()
        except StopAsyncIteration:
            return None

    def readinto(self, out: memoryview) -> int:
        while not self.buf and not self.done:
            part = anyio.from_thread.run(self._next)
            if part is None:
                self.done = True
            else:
                self.buf = memoryview(part)
        n = min(len(out), len(self.buf))
        out[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


class _FileBody(StreamingResponse):
    """A file's bytes. Once they flow the status cannot change: damage found later breaks
    the body off (no end of message; the connection closes), so the client sees fewer
    bytes than ``content-length`` and fails, and the daemon logs one line."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except PfsError as e:
            log.warning("a file read broke off: %s", e.message)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def route(path: str, handler: Handler, method: str) -> Route:
    return Route(API_PREFIX + path, guarded(handler), methods=[method])


def build_app(
    pfs: Pfs,
    status: Callable[[], dict[str, Any]],
    shutdown: Callable[[], None],
    extra_routes: list[BaseRoute] | None = None,
) -> Starlette:
    """The ASGI application serving ``pfs``; ``status`` and ``shutdown`` come from the daemon.

    The store's reader processes start in the background now, so that the first big put
    does not wait for them.
    """
    threading.Thread(target=_start_readers, args=(pfs,), name="pfsmount-readers",
                     daemon=True).start()

    def run(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        def call() -> Any:
            try:
                pfs.journal.flush()  # files the mount staged are visible to every request
            except StoreFull as e:  # they wait for space; reads and deletes go on
                log.warning("staged files wait: %s", e)
            return fn(*args)

        return anyio.to_thread.run_sync(call)

    async def get_status(request: Request) -> Response:
        return json_response(status())

    async def post_shutdown(request: Request) -> Response:
        shutdown()
        return json_response({"stopping": True})

    # -- repos and branches ------------------------------------------------------------------

    async def repo_list(request: Request) -> Response:
        return json_response(await run(pfs.repos.list))

    async def repo_create(request: Request) -> Response:
        p = await body(request)
        repo = await run(lambda: pfs.repos.create(
            arg(p, "name"), arg(p, "description", str, "")))
        return json_response(repo, 201)

    async def repo_inspect(request: Request) -> Response:
        return json_response(await run(pfs.repos.inspect, request.path_params["name"]))

    async def repo_delete(request: Request) -> Response:
        force = arg(dict(request.query_params), "force", bool, False)
        await run(lambda: pfs.repos.delete(request.path_params["name"], force=force))
        return json_response({"deleted": request.path_params["name"]})

    async def branch_list(request: Request) -> Response:
        return json_response(await run(pfs.repos.list_branches, request.path_params["name"]))

    async def branch_create(request: Request) -> Response:
        p = await body(request)
        branch = await run(lambda: pfs.repos.create_branch(
            request.path_params["name"], arg(p, "branch"), arg(p, "head", str, None),
            arg(p, "provenance", list[str], None)))
        return json_response(branch, 201)

    async def branch_delete(request: Request) -> Response:
        await run(pfs.repos.delete_branch, request.path_params["name"],
                  request.path_params["branch"])
        return json_response({"deleted": request.path_params["branch"]})

    # -- commits -----------------------------------------------------------------------------

    async def commit_list(request: Request) -> Response:
        q = dict(request.query_params)
        return json_response(await run(lambda: pfs.commits.list(
            request.path_params["name"], arg(q, "branch", str, None),
            arg(q, "limit", int, None))))

    async def commit_start(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(lambda: pfs.commits.start(
            arg(p, "repo"), arg(p, "branch", str, "master"), arg(p, "parent", str, None),
            arg(p, "description", str, ""))), 201)

    async def commit_finish(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(lambda: pfs.commits.finish(
            arg(p, "ref"), arg(p, "description", str, None))))

    async def commit_inspect(request: Request) -> Response:
        return json_response(await run(pfs.commits.inspect, arg(dict(request.query_params),
                                                                 "ref")))

    async def commit_delete(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(pfs.commits.delete, arg(p, "ref")))

    async def commit_squash(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(pfs.commits.squash, arg(p, "ref")))

    async def commit_wait(request: Request) -> Response:
        p = await body(request)
        commit = await run(lambda: pfs.commits.wait(arg(p, "ref"), arg(p, "timeout", float,
                                                                         None)))
        return json_response([commit])

    # -- files -------------------------------------------------------------------------------

    async def file_put(request: Request) -> Response:
        q = dict(request.query_params)
        ref, path = arg(q, "ref"), arg(q, "path", str, None)
        append = arg(q, "append", bool, False)
        source: Source
        if "local" in q:
            local = Path(q["local"])
            if not local.is_absolute():
                raise InvalidArgument("local source paths must be absolute")
            source = LocalPath(local)
        elif "url" in q:
            source = Url(q["url"])
        else:
            # The body is read while the put runs, so the answer cannot stream alongside
            # (a streaming response would compete for the body's messages): one final line.
            source = Stream(_BodyReader(request.stream().__aiter__()))
            commit = await run(lambda: pfs.files.put(ref, source, path=path, append=append))
            return Response(encode_line({"commit": commit}), media_type="application/x-ndjson")
        send, receive = anyio.create_memory_object_stream[bytes](64)

        def progress(counts: Counts) -> None:
            anyio.from_thread.run(send.send, encode_line({"progress": counts}))

        async def worker() -> None:
            async with send:
                try:
                    commit = await run(lambda: pfs.files.put(
                        ref, source, path=path, append=append, progress=progress))
                    await send.send(encode_line({"commit": commit}))
                except PfsError as e:
                    await send.send(encode_line(error_body(e)))
                except Exception:
                    log.exception("internal error in put")
                    await send.send(encode_line({"error": "internal",
                                                 "message": "internal error"}))

        async def lines() -> AsyncIterator[bytes]:
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker)
                async with receive:
                    async for line in receive:
                        yield line

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def file_get(request: Request) -> Response:
        q = dict(request.query_params)
        ref, path = arg(q, "ref"), arg(q, "path", str, None)
        offset, size = arg(q, "offset", int, 0), arg(q, "size", int, None)
        if offset < 0 or (size is not None and size < 0):
            raise InvalidArgument("offset and size must not be negative")
        commit, entry = await run(pfs.files.open, ref, path)
        if offset > entry.size:
            raise InvalidArgument(f"offset {offset} is past the end of the file "
                                  f"({entry.size} bytes)")
        length = entry.size - offset if size is None else min(size, entry.size - offset)
        where = pfs.files.describe(commit, parse_ref(ref, path).path)
        pieces = pfs.files.read(entry, offset, length, where)
        # Damage in the first chunk is an ordinary error answer; later damage breaks the
        # body off (see ``_FileBody``).
        first = await anyio.to_thread.run_sync(next, pieces, b"")
        return _FileBody(itertools.chain([first], pieces), media_type="application/octet-stream",
                         headers={"x-pfs-commit": commit.id, "content-length": str(length)})

    async def file_export(request: Request) -> Response:
        p = await body(request)
        dest = Path(arg(p, "dest"))
        if not dest.is_absolute():
            raise InvalidArgument("export destinations must be absolute")
        recursive = arg(p, "recursive", bool, True)
        return json_response(await run(lambda: export(pfs, arg(p, "ref"), dest, recursive)))

    async def file_list(request: Request) -> Response:
        q = dict(request.query_params)
        items = pfs.files.list(arg(q, "ref"), arg(q, "path", str, None),
                               arg(q, "after", str, None), arg(q, "limit", int, None))
        await run(lambda: pfs.files.inspect(arg(q, "ref"), arg(q, "path", str, None)))
        return ndjson(items)

    async def file_walk(request: Request) -> Response:
        q = dict(request.query_params)
        await run(lambda: pfs.files.inspect(arg(q, "ref"), arg(q, "path", str, None)))
        return ndjson(pfs.files.walk(arg(q, "ref"), arg(q, "path", str, None)))

    async def file_glob(request: Request) -> Response:
        q = dict(request.query_params)
        await run(lambda: pfs.commits.inspect(arg(q, "ref")))
        return ndjson(pfs.files.glob(arg(q, "ref"), arg(q, "pattern")))

    async def file_inspect(request: Request) -> Response:
        q = dict(request.query_params)
        return json_response(await run(pfs.files.inspect, arg(q, "ref"),
                                       arg(q, "path", str, None)))

    async def file_diff(request: Request) -> Response:
        q = dict(request.query_params)
        return json_response(await run(pfs.files.diff, arg(q, "new"), arg(q, "old", str, None)))

    async def file_delete(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(lambda: pfs.files.delete(
            arg(p, "ref"), arg(p, "path", str, None), arg(p, "recursive", bool, False))))

    async def file_copy(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(pfs.files.copy, arg(p, "src"), arg(p, "dst")))

    async def get_fsck(request: Request) -> Response:
        verify = arg(dict(request.query_params), "verify", bool, False)
        return json_response(await run(lambda: fsck(pfs, verify_data=verify)))

    async def post_fsck_repair(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(lambda: repair(pfs, wait=arg(p, "wait", float, 30.0))))

    async def post_gc(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(lambda: collect(
            pfs, dry_run=arg(p, "dry_run", bool, False), wait=arg(p, "wait", float, 30.0))))

    # Routes from layers above come first, so they may also replace one of these (the
    # scheduler's /commits/wait waits for downstream jobs too).
    routes: list[BaseRoute] = [
        *(extra_routes or []),
        route("/status", get_status, "GET"),
        route("/shutdown", post_shutdown, "POST"),
        route("/fsck", get_fsck, "GET"),
        route("/fsck/repair", post_fsck_repair, "POST"),
        route("/gc", post_gc, "POST"),
        route("/repos", repo_list, "GET"),
        route("/repos", repo_create, "POST"),
        route("/repos/{name}", repo_inspect, "GET"),
        route("/repos/{name}", repo_delete, "DELETE"),
        route("/repos/{name}/branches", branch_list, "GET"),
        route("/repos/{name}/branches", branch_create, "POST"),
        route("/repos/{name}/branches/{branch}", branch_delete, "DELETE"),
        route("/repos/{name}/commits", commit_list, "GET"),
        route("/commits/start", commit_start, "POST"),
        route("/commits/finish", commit_finish, "POST"),
        route("/commits/inspect", commit_inspect, "GET"),
        route("/commits/delete", commit_delete, "POST"),
        route("/commits/squash", commit_squash, "POST"),
        route("/commits/wait", commit_wait, "POST"),
        route("/files/put", file_put, "POST"),
        route("/files/get", file_get, "GET"),
        route("/files/export", file_export, "POST"),
        route("/files/list", file_list, "GET"),
        route("/files/walk", file_walk, "GET"),
        route("/files/glob", file_glob, "GET"),
        route("/files/inspect", file_inspect, "GET"),
        route("/files/diff", file_diff, "GET"),
        route("/files/delete", file_delete, "POST"),
        route("/files/copy", file_copy, "POST"),
    ]
    return Starlette(routes=routes)


def _start_readers(pfs: Pfs) -> None:
    try:
        pfs.store.readers.start()
    except Exception:  # a put starts them again, or reports why it cannot
        log.exception("reader processes did not start")
