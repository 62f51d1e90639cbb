"""``Client``: the Python API of a running daemon, one method per operation.

Results come back as the API's wire structs (``pfsmount.api.wire``: ``Repo``, ``Commit``,
``FileInfo`` ...), never the daemon's stored records; failures as the same ``PfsError``
subclasses the daemon raised. Pipelines, jobs and datums: ``pipeline_client``. A missing daemon is
``DaemonNotRunning`` with the hint to run ``pfsmount up``.

Importing this module stays cheap (a CLI command pays for it on every run): the transport is
the standard library's, and the wire structs need only msgspec.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec

from pfsmount.config import layout
from pfsmount.errors import Corrupt, DaemonNotRunning, InvalidArgument, PfsError, from_code

from .transport import GONE, Transport
from .wire import (
    API_PREFIX,
    Branch,
    Commit,
    Counts,
    FileDiff,
    FileInfo,
    FsckReport,
    GcReport,
    PutLine,
    Repo,
)

T = TypeVar("T")


class Client:
    def __init__(self, root: Path | str | None = None, timeout: float | None = None) -> None:
        self.layout = layout(root)
        self.timeout = timeout
        self.transport = Transport(str(self.layout.socket), API_PREFIX, timeout)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _not_running(self) -> PfsError:
        try:
            owner = os.stat(self.layout.socket).st_uid
        except OSError:
            owner = None
        if owner is not None and os.geteuid() not in (0, owner):  # it refuses us: say why
            return PfsError(f"the pfsmount daemon serving {self.layout.root} belongs to uid "
                            f"{owner}; only that user and root may use it")
        return DaemonNotRunning(
            f"no pfsmount daemon is serving {self.layout.root}; start one with `pfsmount up`"
        )

    def _timed_out(self) -> PfsError:
        return PfsError(f"the daemon did not answer within {self.timeout:g} s")

    @staticmethod
    def raise_for(response: Any) -> None:
        """Raise the daemon's error for an answer of status 400 or more (anything with
        ``status_code``, ``read`` and ``content``, as ``Transport``'s answers have)."""
        if response.status_code < 400:
            return
        response.read()
        try:
            body = msgspec.json.decode(response.content)
            raise from_code(body["error"], body["message"])
        except (msgspec.DecodeError, KeyError, TypeError):
            raise PfsError(f"daemon answered HTTP {response.status_code}") from None

    def call(self, method: str, path: str, type_: type[T] | Any = Any, **kw: Any) -> T:
        """One request; its JSON answer decoded as ``type_``. ``kw``: ``params`` (query),
        ``json`` (body) or ``content`` (bytes or an iterable of bytes)."""
        try:
            response = self.transport.request(method, path, **kw)
        except GONE:
            raise self._not_running() from None
        except TimeoutError:
            raise self._timed_out() from None
        self.raise_for(response)
        return msgspec.json.decode(response.content, type=type_)  # type: ignore[no-any-return]

    def lines(self, method: str, path: str, type_: type[T] | Any, **kw: Any) -> Iterator[T]:
        """Decode an NDJSON stream; an error line raises."""
        try:
            with self.transport.stream(method, path, **kw) as response:
                self.raise_for(response)
                for line in response.iter_lines():
                    if not line:
                        continue
                    raw = msgspec.json.decode(line)
                    if isinstance(raw, dict) and "error" in raw and "message" in raw:
                        raise from_code(raw["error"], raw["message"])
                    yield msgspec.convert(raw, type_)
        except GONE:
            raise self._not_running() from None
        except TimeoutError:
            raise self._timed_out() from None

    def stream_bytes(self, method: str, path: str, **kw: Any) -> Iterator[bytes]:
        """A raw answer body, in pieces as they arrive."""
        try:
            with self.transport.stream(method, path, **kw) as response:
                self.raise_for(response)
                yield from response.iter_bytes()
        except GONE:
            raise self._not_running() from None
        except TimeoutError:
            raise self._timed_out() from None

    # -- daemon ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/status", dict[str, Any])

    def shutdown(self) -> None:
        """Ask the daemon to stop. It may close the connection before its answer is out;
        that is the shutdown happening, not an error."""
        try:
            response = self.transport.request("POST", "/shutdown", fresh=True)
        except (ConnectionRefusedError, FileNotFoundError):
            raise self._not_running() from None
        except GONE:
            return
        self.raise_for(response)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of every route this daemon serves."""
        return self.call("GET", "/openapi.json", dict[str, Any])

    def fsck(self, verify: bool = False) -> FsckReport:
        return self.call("GET", "/fsck", FsckReport, params={"verify": int(verify)})

    def repair(self, wait: float = 30.0) -> FsckReport:
        """``fsck --repair``: drop the files whose data is damaged from every commit that
        holds them (``lost`` names each), then check again; writes pause meanwhile."""
        return self.call("POST", "/fsck/repair", FsckReport, json={"wait": wait})

    def gc(self, dry_run: bool = False, wait: float = 30.0) -> GcReport:
        """Remove what no commit reaches; writes pause meanwhile (up to ``wait`` seconds
        for those in progress to finish)."""
        return self.call("POST", "/gc", GcReport, json={"dry_run": dry_run, "wait": wait})

    # -- repos and branches ------------------------------------------------------------------

    def create_repo(self, name: str, description: str = "") -> Repo:
        return self.call("POST", "/repos", Repo, json={"name": name,
                                                        "description": description})

    def list_repos(self) -> list[Repo]:
        return self.call("GET", "/repos", list[Repo])

    def inspect_repo(self, name: str) -> Repo:
        return self.call("GET", f"/repos/{segment(name)}", Repo)

    def delete_repo(self, name: str, force: bool = False) -> None:
        self.call("DELETE", f"/repos/{segment(name)}", params={"force": int(force)})

    def create_branch(self, repo: str, branch: str, head: str | None = None,
                      provenance: list[str] | None = None) -> Branch:
        return self.call("POST", f"/repos/{segment(repo)}/branches", Branch,
                          json={"branch": branch, "head": head, "provenance": provenance})

    def list_branches(self, repo: str) -> list[Branch]:
        return self.call("GET", f"/repos/{segment(repo)}/branches", list[Branch])

    def delete_branch(self, repo: str, branch: str) -> None:
        self.call("DELETE", f"/repos/{segment(repo)}/branches/{segment(branch)}")

    # -- commits -----------------------------------------------------------------------------

    def start_commit(self, repo: str, branch: str = "master", parent: str | None = None,
                     description: str = "") -> Commit:
        return self.call("POST", "/commits/start", Commit, json={
            "repo": repo, "branch": branch, "parent": parent, "description": description})

    def finish_commit(self, ref: str, description: str | None = None) -> Commit:
        return self.call("POST", "/commits/finish", Commit,
                          json={"ref": ref, "description": description})

    def inspect_commit(self, ref: str) -> Commit:
        return self.call("GET", "/commits/inspect", Commit, params={"ref": ref})

    def list_commits(self, repo: str, branch: str | None = None,
                     limit: int | None = None) -> list[Commit]:
        return self.call("GET", f"/repos/{segment(repo)}/commits", list[Commit],
                         params=given(branch=branch, limit=limit))

    def delete_commit(self, ref: str) -> Commit:
        return self.call("POST", "/commits/delete", Commit, json={"ref": ref})

    def squash_commit(self, ref: str) -> Commit:
        return self.call("POST", "/commits/squash", Commit, json={"ref": ref})

    def wait_commit(self, ref: str, timeout: float | None = None) -> list[Commit]:
        return self.call("POST", "/commits/wait", list[Commit],
                          json={"ref": ref, "timeout": timeout})

    # -- files -------------------------------------------------------------------------------

    def put_file(
        self,
        ref: str,
        source: Path | str | bytes | Iterable[bytes],
        path: str | None = None,
        append: bool = False,
        progress: Callable[[Counts], None] | None = None,
    ) -> Commit:
        """Put a local file or directory (read by the daemon: ``/files/import``), a URL, bytes
        or a byte stream (``/files/put``)."""
        lines: Iterator[PutLine]
        if isinstance(source, Path):
            if not source.exists():
                raise InvalidArgument(f"{source}: no such file or directory")
            lines = self.lines("POST", "/files/import", PutLine, json={
                "ref": ref, "local": str(source.absolute()), "path": path, "append": append})
        else:
            url = source if isinstance(source, str) else None
            lines = self.lines("POST", "/files/put", PutLine, params=given(
                ref=ref, path=path, append=int(append), url=url),
                content=None if url is not None else source)
        commit: Commit | None = None
        for line in lines:  # progress ... then the commit
            if line.progress is not None and progress is not None:
                progress(line.progress)
            if line.commit is not None:
                commit = line.commit
        if commit is None:
            raise PfsError("the daemon ended the put without an answer; see its log")
        return commit

    def get_file(self, ref: str, offset: int | None = None,
                 size: int | None = None) -> Iterator[bytes]:
        """A file's bytes, streamed."""
        return self._file_bytes(given(ref=ref, offset=offset, size=size))

    def _file_bytes(self, params: dict[str, Any]) -> Iterator[bytes]:
        """The body of ``/files/get``, which must hold ``content-length`` bytes. The daemon
        breaks the body off when it finds damage after the first bytes went out; then the
        same read from where it broke off fails at once, with the daemon's reason."""
        got = 0
        try:
            with self.transport.stream("GET", "/files/get", params=params) as response:
                self.raise_for(response)
                length = int(response.raw.getheader("content-length") or -1)
                try:
                    for piece in response.iter_bytes():
                        got += len(piece)
                        yield piece
                except (http.client.IncompleteRead, ConnectionResetError):  # broken off
                    pass
                if got == length:
                    return
        except GONE:
            raise self._not_running() from None
        except TimeoutError:
            raise self._timed_out() from None
        # The daemon breaks off at the first chunk of the run it could not read; a read
        # from there fails before its first byte, with the reason.
        rest = {**params, "offset": int(params.get("offset") or 0) + got}
        if params.get("size") is not None:
            rest["size"] = max(0, int(params["size"]) - got)
        try:
            with self.transport.stream("GET", "/files/get", params=rest) as retry:
                self.raise_for(retry)
        except GONE:
            raise self._not_running() from None
        raise Corrupt(f"reading {params['ref']} broke off after {got} bytes; see the daemon log")

    def read_file(self, ref: str) -> bytes:
        return b"".join(self.get_file(ref))

    def export(self, ref: str, dest: Path, recursive: bool = True) -> Counts:
        """Have the daemon write a file or a directory tree to local ``dest``; with
        ``recursive=False`` a directory is refused (``InvalidArgument``), in the same request."""
        return self.call("POST", "/files/export", Counts, json={
            "ref": ref, "dest": str(dest.absolute()), "recursive": recursive})

    def list_files(self, ref: str, after: str | None = None,
                   limit: int | None = None) -> Iterator[FileInfo]:
        return self.lines("GET", "/files/list", FileInfo,
                          params=given(ref=ref, after=after, limit=limit))

    def walk_files(self, ref: str) -> Iterator[FileInfo]:
        return self.lines("GET", "/files/walk", FileInfo, params={"ref": ref})

    def glob_files(self, ref: str, pattern: str) -> Iterator[FileInfo]:
        return self.lines("GET", "/files/glob", FileInfo,
                           params={"ref": ref, "pattern": pattern})

    def inspect_file(self, ref: str) -> FileInfo:
        return self.call("GET", "/files/inspect", FileInfo, params={"ref": ref})

    def diff_files(self, new: str, old: str | None = None) -> list[FileDiff]:
        return self.call("GET", "/files/diff", list[FileDiff],
                         params=given(new=new, old=old or None))

    def delete_file(self, ref: str, recursive: bool = False) -> Commit:
        return self.call("POST", "/files/delete", Commit,
                          json={"ref": ref, "recursive": recursive})

    def copy_file(self, src: str, dst: str) -> Commit:
        return self.call("POST", "/files/copy", Commit, json={"src": src, "dst": dst})


def given(**params: Any) -> dict[str, Any]:
    """Query arguments, less those not given (``None``): in a query an empty value is a
    value."""
    return {k: v for k, v in params.items() if v is not None}


def segment(name: str) -> str:
    """A path segment; names are validated by the daemon, this only keeps the URL intact."""
    return quote(name, safe="")
