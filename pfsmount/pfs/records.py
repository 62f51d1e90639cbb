"""Typed access to the repo, branch and commit rows inside one LMDB transaction.

Owns the key layout of ``repos``, ``branches``, ``commits`` and ``commit_log`` (documented in
``store.meta``) and the resolution of a ``Ref`` to a commit. It never opens transactions;
callers pass theirs, so every multi-row change stays atomic.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import lmdb
import msgspec

from pfsmount.errors import InvalidArgument, NotFound
from pfsmount.pfs.events import Events
from pfsmount.pfs.model import Branch, Commit, Repo
from pfsmount.pfs.refs import Ref, is_commit_id, numbered
from pfsmount.store import Store
from pfsmount.store.meta import Meta

_enc = msgspec.msgpack.Encoder()
_repo_dec = msgspec.msgpack.Decoder(Repo)
_branch_dec = msgspec.msgpack.Decoder(Branch)
_commit_dec = msgspec.msgpack.Decoder(Commit)
_NS = struct.Struct(">Q")


class Records:
    def __init__(self, meta: Meta) -> None:
        self.repos_db = meta.db["repos"]
        self.branches_db = meta.db["branches"]
        self.commits_db = meta.db["commits"]
        self.log_db = meta.db["commit_log"]

    # -- repos -------------------------------------------------------------------------------

    def repo(self, txn: lmdb.Transaction, name: str) -> Repo:
        raw = txn.get(name.encode(), db=self.repos_db)
        if raw is None:
            raise NotFound(f"repo {name} not found")
        return _repo_dec.decode(raw)

    def has_repo(self, txn: lmdb.Transaction, name: str) -> bool:
        return txn.get(name.encode(), db=self.repos_db) is not None

    def put_repo(self, txn: lmdb.Transaction, repo: Repo) -> None:
        txn.put(repo.name.encode(), _enc.encode(repo), db=self.repos_db)

    def repos(self, txn: lmdb.Transaction) -> Iterator[Repo]:
        for _, raw in txn.cursor(db=self.repos_db):
            yield _repo_dec.decode(raw)

    def delete_repo_row(self, txn: lmdb.Transaction, name: str) -> None:
        txn.delete(name.encode(), db=self.repos_db)

    # -- branches ----------------------------------------------------------------------------

    @staticmethod
    def _bkey(repo: str, branch: str) -> bytes:
        return f"{repo}\0{branch}".encode()

    def branch(self, txn: lmdb.Transaction, repo: str, name: str) -> Branch:
        raw = txn.get(self._bkey(repo, name), db=self.branches_db)
        if raw is None:
            self.repo(txn, repo)
            raise NotFound(f"branch {name} not found in repo {repo}")
        return _branch_dec.decode(raw)

    def find_branch(self, txn: lmdb.Transaction, repo: str, name: str) -> Branch | None:
        raw = txn.get(self._bkey(repo, name), db=self.branches_db)
        return None if raw is None else _branch_dec.decode(raw)

    def put_branch(self, txn: lmdb.Transaction, branch: Branch) -> None:
        txn.put(self._bkey(branch.repo, branch.name), _enc.encode(branch), db=self.branches_db)

    def delete_branch_row(self, txn: lmdb.Transaction, repo: str, name: str) -> None:
        txn.delete(self._bkey(repo, name), db=self.branches_db)

    def branches(self, txn: lmdb.Transaction, repo: str) -> Iterator[Branch]:
        prefix = f"{repo}\0".encode()
        cur = txn.cursor(db=self.branches_db)
        if cur.set_range(prefix):
            for key, raw in cur:
                if not bytes(key).startswith(prefix):
                    break
                yield _branch_dec.decode(raw)

    # -- commits -----------------------------------------------------------------------------

    def commit(self, txn: lmdb.Transaction, commit_id: str) -> Commit:
        raw = txn.get(commit_id.encode(), db=self.commits_db)
        if raw is None:
            raise NotFound(f"commit {commit_id} not found")
        return _commit_dec.decode(raw)

    def put_commit(self, txn: lmdb.Transaction, commit: Commit, new: bool = False) -> None:
        txn.put(commit.id.encode(), _enc.encode(commit), db=self.commits_db)
        if new:
            txn.put(self._log_key(commit), b"", db=self.log_db)

    def delete_commit_row(self, txn: lmdb.Transaction, commit: Commit) -> None:
        txn.delete(commit.id.encode(), db=self.commits_db)
        txn.delete(self._log_key(commit), db=self.log_db)

    @staticmethod
    def _log_key(commit: Commit) -> bytes:
        return (
            commit.repo.encode()
            + b"\0"
            + _NS.pack(int(commit.started * 1e9))
            + commit.id.encode()
        )

    @staticmethod
    def parse_log_key(key: bytes) -> tuple[str, int, str] | None:
        """A ``commit_log`` key's repo, start time (ns) and commit id; None if malformed."""
        repo, sep, rest = key.partition(b"\0")
        if not sep or len(rest) != _NS.size + 32:
            return None
        started: int = _NS.unpack(rest[: _NS.size])[0]
        return repo.decode(errors="replace"), started, rest[_NS.size :].decode(errors="replace")

    def log(self, txn: lmdb.Transaction, repo: str) -> Iterator[Commit]:
        """Every commit of a repo, newest first."""
        prefix = repo.encode() + b"\0"
        cur = txn.cursor(db=self.log_db)
        ok = cur.prev() if cur.set_range(prefix + b"\xff" * 9) else cur.last()
        while ok and (key := bytes(cur.key())).startswith(prefix):
            yield self.commit(txn, key[len(prefix) + 8 :].decode())
            ok = cur.prev()

    def commits(self, txn: lmdb.Transaction) -> Iterator[Commit]:
        for _, raw in txn.cursor(db=self.commits_db):
            yield _commit_dec.decode(raw)

    # -- resolution --------------------------------------------------------------------------

    def resolve(self, txn: lmdb.Transaction, ref: Ref) -> Commit:
        """The commit a reference names: a branch's open commit, else its head; with
        ``branch/N``, the N-th commit of the branch's history (``pfs.refs`` says which wins)."""
        self.repo(txn, ref.repo)
        at = ref.branch_or_id
        nth = numbered(at)
        branch = None if nth else self.find_branch(txn, ref.repo, at)
        if nth is not None:
            commit = self.nth(txn, ref.repo, *nth)
        elif branch is not None:
            commit_id = branch.open or branch.head
            if commit_id is None:
                raise NotFound(f"branch {ref.repo}@{at} has no commits")
            commit = self.commit(txn, commit_id)
        else:
            commit = self._by_id(txn, ref.repo, at)
        for _ in range(ref.ancestry):
            if commit.parent is None:
                raise NotFound(f"{ref.repo}@{commit.id} has no parent")
            commit = self.commit(txn, commit.parent)
        return commit

    def history(self, txn: lmdb.Transaction, repo: str, name: str) -> list[str]:
        """The commit ids of a branch's history, oldest first: 1.x's ``branch/N`` is the
        N-th (from 0). It ends with the open commit when there is one, as 1.x numbered it."""
        branch = self.branch(txn, repo, name)
        chain = []
        cursor = branch.open or branch.head
        while cursor is not None:
            chain.append(cursor)
            cursor = self.commit(txn, cursor).parent
        chain.reverse()
        return chain

    def nth(self, txn: lmdb.Transaction, repo: str, name: str, n: int) -> Commit:
        chain = self.history(txn, repo, name)
        if n >= len(chain):
            held = f"{name}/0 to {name}/{len(chain) - 1}" if chain else "none"
            raise NotFound(f"commit {repo}/{name}/{n} not found: branch {name} has "
                           f"{len(chain)} commit{'' if len(chain) == 1 else 's'} ({held})")
        return self.commit(txn, chain[n])

    def _by_id(self, txn: lmdb.Transaction, repo: str, text: str) -> Commit:
        if is_commit_id(text):
            commit = self.commit(txn, text)
            if commit.repo != repo:
                raise NotFound(f"commit {text} not found in repo {repo}")
            return commit
        if len(text) >= 4 and all(c in "0123456789abcdef" for c in text):
            matches = []
            cur = txn.cursor(db=self.commits_db)
            if cur.set_range(text.encode()):
                for key, raw in cur:
                    if not bytes(key).startswith(text.encode()):
                        break
                    commit = _commit_dec.decode(raw)
                    if commit.repo == repo:
                        matches.append(commit)
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidArgument(f"commit prefix {text} is ambiguous in repo {repo}")
        raise NotFound(f"branch or commit {text} not found in repo {repo}")


class OverRecords:
    """A part of the model that keeps its rows through ``Records`` and tells ``Events``
    what it changed (``Repos``, ``Commits``): the parts ``Pfs`` builds over one store."""

    def __init__(self, store: Store, records: Records, events: Events) -> None:
        self.store = store
        self.meta = store.meta
        self.records = records
        self.events = events
