"""The model's HTTP routes (one per operation), and the app that serves them with those of
the layers above.

Each handler runs its model call in a worker thread (LMDB, hashing and file I/O must never
block the trio loop that also serves the mount) and returns the model's answer, which the
route table converts to its wire type (``pfsmount.api.endpoint``). The scheduler's routes come
from ``pfsmount.api.pipelines`` through ``build_app``'s ``extra``. Nothing here decides what a
request may do: that is the model's.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from pfsmount.errors import InvalidArgument, PfsError
from pfsmount.pfs import Counts, Pfs
from pfsmount.pfs.export import export
from pfsmount.pfs.files import LocalPath, Source, Stream, Url
from pfsmount.pfs.fsck import fsck
from pfsmount.pfs.garbage import collect
from pfsmount.pfs.refs import parse_ref
from pfsmount.pfs.repair import repair

from . import wire as w
from .endpoint import BYTES, JSON, NDJSON, Call, Endpoint, as_route
from .openapi import document
from .wire import encode_line, error_body

log = logging.getLogger("pfsmount.api")


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


def build_app(
    pfs: Pfs,
    status: Callable[[], dict[str, Any]],
    shutdown: Callable[[], None],
    extra: list[Endpoint] | None = None,
    local: bool = True,
) -> Starlette:
    """The ASGI application serving ``pfs``; ``status`` and ``shutdown`` come from the daemon,
    ``extra`` from the layers above (it may replace a route of the model's: the scheduler's
    ``/commits/wait`` waits for downstream jobs too). ``GET /openapi.json`` describes them all.
    ``local=False`` leaves out the routes that reach the daemon's host, for a server that
    answers other machines.

    The store's reader processes start in the background now, so that the first big put
    does not wait for them.
    """
    threading.Thread(target=_start_readers, args=(pfs,), name="pfsmount-readers",
                     daemon=True).start()
    return Starlette(routes=[as_route(ep) for ep in served(pfs, status, shutdown, extra,
                                                           local)])


def served(pfs: Pfs, status: Callable[[], dict[str, Any]], shutdown: Callable[[], None],
           extra: list[Endpoint] | None = None, local: bool = True) -> list[Endpoint]:
    """Every route ``build_app`` serves, ``GET /openapi.json`` last."""
    table = {ep.key: ep for ep in endpoints(pfs, status, shutdown)}
    table.update((ep.key, ep) for ep in extra or [])
    routes = [ep for ep in table.values() if local or not ep.local_only]
    routes.append(_openapi(routes))
    return routes


def _openapi(routes: list[Endpoint]) -> Endpoint:
    """The route serving the document of ``routes`` (itself among them), made once."""

    @functools.cache
    def raw() -> bytes:
        return w.encode(document(routes))

    async def openapi(call: Call) -> Response:
        return Response(raw(), media_type=JSON)

    return Endpoint("GET", "/openapi.json", openapi, "This document: every route, its "
                    "arguments and its answers.", answer=dict[str, Any])


def endpoints(pfs: Pfs, status: Callable[[], dict[str, Any]],
              shutdown: Callable[[], None]) -> list[Endpoint]:
    """The model's routes, and the daemon's own (status, shutdown)."""

    def run(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return anyio.to_thread.run_sync(fn, *args)  # the model sees staged files itself

    async def get_status(call: Call) -> Any:
        return status()

    async def post_shutdown(call: Call) -> Any:
        shutdown()
        return w.Stopping(stopping=True)

    # -- repos and branches ------------------------------------------------------------------

    async def repo_list(call: Call) -> Any:
        return await run(pfs.repos.list)

    async def repo_create(call: Call) -> Any:
        a: w.RepoCreateArgs = call.args
        return await run(pfs.repos.create, a.name, a.description)

    async def repo_inspect(call: Call) -> Any:
        return await run(pfs.repos.inspect, call.path["name"])

    async def repo_delete(call: Call) -> Any:
        await run(lambda: pfs.repos.delete(call.path["name"], force=call.args.force))
        return w.Deleted(deleted=call.path["name"])

    async def branch_list(call: Call) -> Any:
        return await run(pfs.repos.list_branches, call.path["name"])

    async def branch_create(call: Call) -> Any:
        a: w.BranchCreateArgs = call.args
        return await run(pfs.repos.create_branch, call.path["name"], a.branch, a.head,
                         a.provenance)

    async def branch_delete(call: Call) -> Any:
        await run(pfs.repos.delete_branch, call.path["name"], call.path["branch"])
        return w.Deleted(deleted=call.path["branch"])

    # -- commits -----------------------------------------------------------------------------

    async def commit_list(call: Call) -> Any:
        a: w.CommitListArgs = call.args
        return await run(pfs.commits.list, call.path["name"], a.branch, a.limit)

    async def commit_start(call: Call) -> Any:
        a: w.CommitStartArgs = call.args
        return await run(pfs.commits.start, a.repo, a.branch, a.parent, a.description)

    async def commit_finish(call: Call) -> Any:
        return await run(pfs.commits.finish, call.args.ref, call.args.description)

    async def commit_inspect(call: Call) -> Any:
        return await run(pfs.commits.inspect, call.args.ref)

    async def commit_delete(call: Call) -> Any:
        return await run(pfs.commits.delete, call.args.ref)

    async def commit_squash(call: Call) -> Any:
        return await run(pfs.commits.squash, call.args.ref)

    async def commit_wait(call: Call) -> Any:
        return [await run(pfs.commits.wait, call.args.ref, call.args.timeout)]

    # -- files -------------------------------------------------------------------------------

    async def file_put(call: Call) -> Response:
        a: w.PutArgs = call.args
        if a.url is not None:
            return _put_streamed(a.ref, Url(a.url), a.path, a.append)
        # The body is read while the put runs, so the answer cannot stream alongside (a
        # streaming response would compete for the body's messages): one final line.
        source = Stream(_BodyReader(call.request.stream().__aiter__()))
        commit = await run(lambda: pfs.files.put(a.ref, source, path=a.path, append=a.append))
        return Response(encode_line(w.PutLine(commit=w.to_wire(commit, w.Commit))),
                        media_type=NDJSON)

    async def file_import(call: Call) -> Response:
        a: w.ImportArgs = call.args
        local = Path(a.local)
        if not local.is_absolute():
            raise InvalidArgument("local source paths must be absolute")
        return _put_streamed(a.ref, LocalPath(local), a.path, a.append)

    def _put_streamed(ref: str, source: Source, path: str | None, append: bool) -> Response:
        """A put whose answer streams its progress while it runs, then its commit."""
        send, receive = anyio.create_memory_object_stream[bytes](64)

        def progress(counts: Counts) -> None:
            line = w.PutLine(progress=w.to_wire(counts, w.Counts))
            anyio.from_thread.run(send.send, encode_line(line))

        async def worker() -> None:
            async with send:
                try:
                    commit = await run(lambda: pfs.files.put(
                        ref, source, path=path, append=append, progress=progress))
                    await send.send(encode_line(w.PutLine(commit=w.to_wire(commit, w.Commit))))
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

        return StreamingResponse(lines(), media_type=NDJSON)

    async def file_get(call: Call) -> Response:
        a: w.GetArgs = call.args
        if a.offset < 0 or (a.size is not None and a.size < 0):
            raise InvalidArgument("offset and size must not be negative")
        commit, entry = await run(pfs.files.open, a.ref, a.path)
        if a.offset > entry.size:
            raise InvalidArgument(f"offset {a.offset} is past the end of the file "
                                  f"({entry.size} bytes)")
        length = entry.size - a.offset if a.size is None else min(a.size, entry.size - a.offset)
        where = pfs.files.describe(commit, parse_ref(a.ref, a.path).path)
        pieces = pfs.files.read(entry, a.offset, length, where)
        # Damage in the first chunk is an ordinary error answer; later damage breaks the
        # body off (see ``_FileBody``).
        first = await anyio.to_thread.run_sync(next, pieces, b"")
        return _FileBody(itertools.chain([first], pieces), media_type=BYTES,
                         headers={"x-pfs-commit": commit.id, "content-length": str(length)})

    async def file_export(call: Call) -> Any:
        a: w.ExportArgs = call.args
        dest = Path(a.dest)
        if not dest.is_absolute():
            raise InvalidArgument("export destinations must be absolute")
        return await run(export, pfs, a.ref, dest, a.recursive)

    async def file_list(call: Call) -> Any:
        a: w.ListArgs = call.args
        items = pfs.files.list(a.ref, a.path, a.after, a.limit)
        await run(pfs.files.inspect, a.ref, a.path)  # a missing path fails before any line
        return items

    async def file_walk(call: Call) -> Any:
        a: w.FileArgs = call.args
        await run(pfs.files.inspect, a.ref, a.path)
        return pfs.files.walk(a.ref, a.path)

    async def file_glob(call: Call) -> Any:
        a: w.GlobArgs = call.args
        await run(pfs.commits.inspect, a.ref)
        return pfs.files.glob(a.ref, a.pattern)

    async def file_inspect(call: Call) -> Any:
        return await run(pfs.files.inspect, call.args.ref, call.args.path)

    async def file_diff(call: Call) -> Any:
        return await run(pfs.files.diff, call.args.new, call.args.old)

    async def file_delete(call: Call) -> Any:
        a: w.FileDeleteArgs = call.args
        return await run(pfs.files.delete, a.ref, a.path, a.recursive)

    async def file_copy(call: Call) -> Any:
        return await run(pfs.files.copy, call.args.src, call.args.dst)

    async def get_fsck(call: Call) -> Any:
        return await run(lambda: fsck(pfs, verify_data=call.args.verify))

    async def post_fsck_repair(call: Call) -> Any:
        return await run(lambda: repair(pfs, wait=call.args.wait))

    async def post_gc(call: Call) -> Any:
        a: w.GcArgs = call.args
        return await run(lambda: collect(pfs, dry_run=a.dry_run, wait=a.wait))

    E = Endpoint
    return [
        E("GET", "/status", get_status, "The daemon: pid, root, socket, start time, mount.",
          answer=dict[str, Any]),
        E("POST", "/shutdown", post_shutdown, "Stop the daemon.", answer=w.Stopping),
        E("GET", "/fsck", get_fsck, "Check every stored structure (with verify: every "
          "chunk's bytes).", w.FsckArgs, w.FsckReport),
        E("POST", "/fsck/repair", post_fsck_repair, "Drop files whose data is damaged from "
          "every commit that holds them, then check again.", w.RepairArgs, w.FsckReport),
        E("POST", "/gc", post_gc, "Remove what no commit reaches.", w.GcArgs, w.GcReport),
        E("GET", "/repos", repo_list, "Every repo.", answer=list[w.Repo]),
        E("POST", "/repos", repo_create, "Create an input repo.", w.RepoCreateArgs, w.Repo,
          status=201),
        E("GET", "/repos/{name}", repo_inspect, "One repo.", answer=w.Repo),
        E("DELETE", "/repos/{name}", repo_delete, "Delete a repo and its commits.",
          w.RepoDeleteArgs, w.Deleted),
        E("GET", "/repos/{name}/branches", branch_list, "A repo's branches.",
          answer=list[w.Branch]),
        E("POST", "/repos/{name}/branches", branch_create, "Create or move a branch.",
          w.BranchCreateArgs, w.Branch, status=201),
        E("DELETE", "/repos/{name}/branches/{branch}", branch_delete, "Delete a branch (its "
          "commits stay).", answer=w.Deleted),
        E("GET", "/repos/{name}/commits", commit_list, "A repo's commits, newest first.",
          w.CommitListArgs, list[w.Commit]),
        E("POST", "/commits/start", commit_start, "Open a commit on a branch.",
          w.CommitStartArgs, w.Commit, status=201),
        E("POST", "/commits/finish", commit_finish, "Seal a branch's open commit.",
          w.CommitFinishArgs, w.Commit),
        E("GET", "/commits/inspect", commit_inspect, "One commit.", w.RefArgs, w.Commit),
        E("POST", "/commits/delete", commit_delete, "Delete a branch's newest commit.",
          w.RefArgs, w.Commit),
        E("POST", "/commits/squash", commit_squash, "Fold a commit into its child.",
          w.RefArgs, w.Commit),
        E("POST", "/commits/wait", commit_wait, "Wait until a commit is finished.",
          w.WaitArgs, list[w.Commit]),
        E("POST", "/files/put", file_put, "Put the request body (a file's bytes), or a URL, "
          "at a path.", w.PutArgs, w.PutLine, NDJSON, upload=True,
          moved={"local": "use POST /v1/files/import for a path of the daemon's host"}),
        E("POST", "/files/import", file_import, "Put a file or directory of the daemon's "
          "host.", w.ImportArgs, w.PutLine, NDJSON, local_only=True),
        E("GET", "/files/get", file_get, "A file's bytes, or a range of them.", w.GetArgs,
          media=BYTES),
        E("POST", "/files/export", file_export, "Write a file or directory tree to a path "
          "of the daemon's host.", w.ExportArgs, w.Counts, local_only=True),
        E("GET", "/files/list", file_list, "A directory's entries, in name order.",
          w.ListArgs, w.FileInfo, NDJSON),
        E("GET", "/files/walk", file_walk, "Every entry under a path.", w.FileArgs,
          w.FileInfo, NDJSON),
        E("GET", "/files/glob", file_glob, "The entries a glob pattern matches.", w.GlobArgs,
          w.FileInfo, NDJSON),
        E("GET", "/files/inspect", file_inspect, "One file or directory.", w.FileArgs,
          w.FileInfo),
        E("GET", "/files/diff", file_diff, "What changed between two commits (or since the "
          "parent).", w.DiffArgs, list[w.FileDiff]),
        E("POST", "/files/delete", file_delete, "Delete a file (a directory: recursive).",
          w.FileDeleteArgs, w.Commit),
        E("POST", "/files/copy", file_copy, "Copy a file or directory, sharing its content.",
          w.CopyArgs, w.Commit),
    ]

def _start_readers(pfs: Pfs) -> None:
    try:
        pfs.store.readers.start()
    except Exception:  # a put starts them again, or reports why it cannot
        log.exception("reader processes did not start")
