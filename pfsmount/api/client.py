"""``Client``: the Python API of a running daemon, one method per operation.

Results come back as the model's structs (``Repo``, ``Commit``, ``FileInfo`` ...); failures
as the same ``PfsError`` subclasses the daemon raised. A missing daemon is
``DaemonNotRunning`` with the hint to run ``pfsmount up``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from pfsmount.config import layout
from pfsmount.errors import DaemonNotRunning, InvalidArgument, PfsError, from_code
from pfsmount.pfs.model import Branch, Commit, Counts, FileDiff, FileInfo, FsckReport, Repo

from .wire import API_PREFIX

T = TypeVar("T")
# No daemon to connect to, or it went away mid-request (killed, crashed): both read as
# "not running" rather than a transport traceback.
_GONE = (httpx.NetworkError, httpx.RemoteProtocolError, FileNotFoundError)


class Client:
    def __init__(self, root: Path | str | None = None, timeout: float | None = None) -> None:
        self.layout = layout(root)
        self.http = httpx.Client(
            # A Unix socket: no TLS, so no certificate store to load (30 ms a command).
            transport=httpx.HTTPTransport(uds=str(self.layout.socket), verify=False),
            base_url="http://pfsmount" + API_PREFIX,
            timeout=httpx.Timeout(timeout),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _not_running(self) -> DaemonNotRunning:
        return DaemonNotRunning(
            f"no pfsmount daemon is serving {self.layout.root}; start one with `pfsmount up`"
        )

    @staticmethod
    def raise_for(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        response.read()
        try:
            body = msgspec.json.decode(response.content)
            raise from_code(body["error"], body["message"])
        except (msgspec.DecodeError, KeyError, TypeError):
            raise PfsError(f"daemon answered HTTP {response.status_code}") from None

    def call(self, method: str, path: str, type_: type[T] | Any = Any, **kw: Any) -> T:
        try:
            response = self.http.request(method, path, **kw)
        except _GONE:
            raise self._not_running() from None
        self.raise_for(response)
        return msgspec.json.decode(response.content, type=type_)  # type: ignore[no-any-return]

    def lines(self, method: str, path: str, type_: type[T], **kw: Any) -> Iterator[T]:
        """Decode an NDJSON stream; an error line raises."""
        try:
            with self.http.stream(method, path, **kw) as response:
                self.raise_for(response)
                for line in response.iter_lines():
                    if not line:
                        continue
                    raw = msgspec.json.decode(line)
                    if isinstance(raw, dict) and "error" in raw and "message" in raw:
                        raise from_code(raw["error"], raw["message"])
                    yield msgspec.convert(raw, type_)
        except _GONE:
            raise self._not_running() from None

    # -- daemon ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/status", dict[str, Any])

    def shutdown(self) -> None:
        """Ask the daemon to stop. It may close the connection before its answer is out;
        that is the shutdown happening, not an error."""
        try:
            response = self.http.request("POST", "/shutdown")
        except (httpx.ConnectError, FileNotFoundError):
            raise self._not_running() from None
        except (httpx.RemoteProtocolError, httpx.ReadError):
            return
        self.raise_for(response)

    def fsck(self, verify: bool = False) -> FsckReport:
        return self.call("GET", "/fsck", FsckReport, params={"verify": int(verify)})

    # -- repos and branches ------------------------------------------------------------------

    def create_repo(self, name: str, description: str = "") -> Repo:
        return self.call("POST", "/repos", Repo, json={"name": name,
                                                        "description": description})

    def list_repos(self) -> list[Repo]:
        return self.call("GET", "/repos", list[Repo])

    def inspect_repo(self, name: str) -> Repo:
        return self.call("GET", f"/repos/{_seg(name)}", Repo)

    def delete_repo(self, name: str, force: bool = False) -> None:
        self.call("DELETE", f"/repos/{_seg(name)}", params={"force": int(force)})

    def create_branch(self, repo: str, branch: str, head: str | None = None,
                      provenance: list[str] | None = None) -> Branch:
        return self.call("POST", f"/repos/{_seg(repo)}/branches", Branch,
                          json={"branch": branch, "head": head, "provenance": provenance})

    def list_branches(self, repo: str) -> list[Branch]:
        return self.call("GET", f"/repos/{_seg(repo)}/branches", list[Branch])

    def delete_branch(self, repo: str, branch: str) -> None:
        self.call("DELETE", f"/repos/{_seg(repo)}/branches/{_seg(branch)}")

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
        params: dict[str, Any] = {}
        if branch is not None:
            params["branch"] = branch
        if limit is not None:
            params["limit"] = limit
        return self.call("GET", f"/repos/{_seg(repo)}/commits", list[Commit], params=params)

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
        """Put a local file or directory (read by the daemon), a URL, bytes or a byte stream."""
        params: dict[str, Any] = {"ref": ref, "append": int(append)}
        if path is not None:
            params["path"] = path
        content: Any = None
        if isinstance(source, Path):
            if not source.exists():
                raise InvalidArgument(f"{source}: no such file or directory")
            params["local"] = str(source.absolute())
        elif isinstance(source, str):
            params["url"] = source
        else:
            content = source
        commit: Commit | None = None
        for line in self.lines("POST", "/files/put", _PutLine, params=params, content=content):
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
        params: dict[str, Any] = {"ref": ref}
        if offset is not None:
            params["offset"] = offset
        if size is not None:
            params["size"] = size
        try:
            with self.http.stream("GET", "/files/get", params=params) as response:
                self.raise_for(response)
                yield from response.iter_bytes(1 << 20)
        except _GONE:
            raise self._not_running() from None

    def read_file(self, ref: str) -> bytes:
        return b"".join(self.get_file(ref))

    def export(self, ref: str, dest: Path, recursive: bool = True) -> Counts:
        """Have the daemon write a file or a directory tree to local ``dest``; with
        ``recursive=False`` a directory is refused (``InvalidArgument``), in the same request."""
        return self.call("POST", "/files/export", Counts, json={
            "ref": ref, "dest": str(dest.absolute()), "recursive": recursive})

    def list_files(self, ref: str, after: str | None = None,
                   limit: int | None = None) -> Iterator[FileInfo]:
        params: dict[str, Any] = {"ref": ref}
        if after is not None:
            params["after"] = after
        if limit is not None:
            params["limit"] = limit
        return self.lines("GET", "/files/list", FileInfo, params=params)

    def walk_files(self, ref: str) -> Iterator[FileInfo]:
        return self.lines("GET", "/files/walk", FileInfo, params={"ref": ref})

    def glob_files(self, ref: str, pattern: str) -> Iterator[FileInfo]:
        return self.lines("GET", "/files/glob", FileInfo,
                           params={"ref": ref, "pattern": pattern})

    def inspect_file(self, ref: str) -> FileInfo:
        return self.call("GET", "/files/inspect", FileInfo, params={"ref": ref})

    def diff_files(self, new: str, old: str | None = None) -> list[FileDiff]:
        params = {"new": new} | ({"old": old} if old else {})
        return self.call("GET", "/files/diff", list[FileDiff], params=params)

    def delete_file(self, ref: str, recursive: bool = False) -> Commit:
        return self.call("POST", "/files/delete", Commit,
                          json={"ref": ref, "recursive": recursive})

    def copy_file(self, src: str, dst: str) -> Commit:
        return self.call("POST", "/files/copy", Commit, json={"src": src, "dst": dst})


class _PutLine(msgspec.Struct):
    progress: Counts | None = None
    commit: Commit | None = None


def _seg(name: str) -> str:
    """A path segment; names are validated by the daemon, this only keeps the URL intact."""
    return quote(name, safe="")
