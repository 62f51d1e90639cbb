"""``fsck``: check every invariant that ``store.meta`` documents, and report, never repair
(``repair`` acts on the ``Damage`` found here).

Owns the consistency check of one store: repos, commits and their ``commit_log`` rows,
branches, every tree page reachable from any commit (open or finished), every ``contents``
row and every ``chunks`` location, and optionally the bytes of every referenced chunk. It
reads inside one LMDB read transaction, so it sees one consistent snapshot while writers go
on, and it must never write, delete or repair anything: repairing is ``pfs.repair``'s,
run only when a human asks (``fsck --repair``).

Work is shared: tree pages are content-addressed, so a page checked once is never read
again, and a thousand commits of a million-file repo cost the pages they differ by, not a
thousand walks. Each error is one line naming the repo, commit and path where that applies
(for a page or content shared by several commits, the first one that reached it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, TypeVar

import lmdb
import msgspec

from pfsmount.pfs import Pfs
from pfsmount.pfs.model import Branch, Commit, FsckReport, Repo
from pfsmount.pfs.records import Records
from pfsmount.pfs.refs import is_commit_id
from pfsmount.store.check import StoreCheck

MAX_ERRORS = 1000  # past this, errors are counted, not listed

_T = TypeVar("_T")
_repo_dec = msgspec.msgpack.Decoder(Repo)
_branch_dec = msgspec.msgpack.Decoder(Branch)
_commit_dec = msgspec.msgpack.Decoder(Commit)


class Damage(NamedTuple):
    """What reads cannot be served from: chunk index rows (missing, malformed, pointing
    outside or into a missing pack, or bytes that fail their name) and ``contents`` rows
    (missing, malformed, or naming a chunk the index lacks). ``repair`` drops these."""

    chunks: set[bytes]
    contents: set[bytes]


def fsck(pfs: Pfs, verify_data: bool = False) -> FsckReport:
    """Check the store under ``pfs``; with ``verify_data`` also re-hash referenced chunks."""
    pfs.barrier()  # files the mount staged are checked as stored, as every operation sees them
    return check(pfs, verify_data)[0]


def check(pfs: Pfs, verify_data: bool = False) -> tuple[FsckReport, Damage]:
    """``fsck``, and the damage it found in a form ``repair`` can act on.

    A pack that cannot be read for a reason that is not damage (out of descriptors, an I/O
    error) fails the whole check with that reason: it must never be reported as damage.
    """
    report = FsckReport()
    with pfs.store.meta.read() as txn:
        checker = _Checker(pfs, txn, report)
        try:
            checker.run(verify_data)
        except (lmdb.Error, msgspec.ValidationError, msgspec.DecodeError) as e:
            # The database's own structure (or a record the checks rely on) is damaged:
            # the check cannot go on, and nothing may be repaired from what it saw.
            report.errors.append(f"the metadata database is damaged, the check stopped: {e}")
            return report, Damage(set(), set())
    return report, Damage(checker.store.bad_chunks, checker.store.bad_contents)


class _Checker:
    def __init__(self, pfs: Pfs, txn: lmdb.Transaction, report: FsckReport) -> None:
        self.pfs = pfs
        self.txn = txn
        self.report = report
        self.db = pfs.store.meta.db
        self.suppressed = 0
        self.repos: set[str] = set()
        self.commits: dict[str, Commit] = {}
        # Trees, contents, chunks and packs: the store checks its own structures.
        self.store = StoreCheck(pfs.store, txn, self.error)

    def error(self, message: str) -> None:
        if len(self.report.errors) < MAX_ERRORS:
            self.report.errors.append(message)
        else:
            self.suppressed += 1

    def rows(self, name: str) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.txn.cursor(db=self.db[name]):
            yield bytes(key), bytes(value)

    def run(self, verify_data: bool) -> None:
        self.check_repos()
        self.check_commits()
        self.check_commit_log()
        self.check_branches()
        self.check_trees()
        self.store.check_contents()
        self.store.check_chunks()
        if verify_data:
            self.store.verify_chunks()
        for problem in self.pfs.state.check(self.txn):  # the layers above: their own tables
            self.error(problem)
        self.report.pages = len(self.store.pages)
        self.report.files = self.store.files
        self.report.chunks = self.store.chunks
        if self.suppressed:
            self.report.errors.append(f"... and {self.suppressed} more errors")

    # -- repos, commits, branches (invariants 4 and 5) ---------------------------------------

    def decoded(self, name: str, what: str, decoder: msgspec.msgpack.Decoder[_T]
                ) -> Iterator[tuple[bytes, str, _T]]:
        """Each row of sub-database ``name``: its key, the key as text and its record; a
        record that does not decode is an error (``what`` names its kind) and is skipped."""
        for key, raw in self.rows(name):
            label = key.decode(errors="replace").replace("\0", "@")
            try:
                record = decoder.decode(raw)
            except msgspec.DecodeError as e:
                self.error(f"{what} {label}: record does not decode: {e}")
                continue
            yield key, label, record

    def check_repos(self) -> None:
        self.report.repos = self.txn.stat(self.db["repos"])["entries"]
        for _, name, repo in self.decoded("repos", "repo", _repo_dec):
            if repo.name != name:
                self.error(f"repo {name}: record is stored under the name of repo {repo.name}")
            self.repos.add(name)

    def check_commits(self) -> None:
        self.report.commits = self.txn.stat(self.db["commits"])["entries"]
        for _, cid, commit in self.decoded("commits", "commit", _commit_dec):
            if commit.id != cid or not is_commit_id(cid):
                self.error(f"commit {cid}: record is stored under another id ({commit.id})")
                continue
            self.commits[cid] = commit
        for commit in self.commits.values():
            where = f"commit {commit.repo}@{commit.id}"
            if commit.repo not in self.repos:
                self.error(f"{where}: its repo {commit.repo} does not exist")
            if commit.parent is not None:
                self.commit_in(commit.repo, commit.parent, f"{where}: its parent")
        self.check_ancestry()

    def commit_in(self, repo: str, cid: str, named: str) -> Commit | None:
        """The commit ``cid`` if it exists in ``repo``; else an error line, starting with
        ``named`` (who names it, and as what), and None."""
        commit = self.commits.get(cid)
        if commit is None:
            self.error(f"{named} {cid} does not exist")
        elif commit.repo != repo:
            self.error(f"{named} {cid} is in repo {commit.repo}")
        else:
            return commit
        return None

    def check_ancestry(self) -> None:
        """A loop of parents would hang every history walk."""
        acyclic: set[str] = set()
        for start in self.commits:
            path: list[str] = []
            on_path: set[str] = set()
            cid: str | None = start
            while cid is not None and cid in self.commits and cid not in acyclic:
                if cid in on_path:
                    commit = self.commits[cid]
                    self.error(f"commit {commit.repo}@{cid}: its ancestry loops back to itself")
                    break
                path.append(cid)
                on_path.add(cid)
                cid = self.commits[cid].parent
            acyclic.update(path)

    def check_commit_log(self) -> None:
        seen: dict[str, int] = {}
        for key, _ in self.rows("commit_log"):
            parsed = Records.parse_log_key(key)
            if parsed is None:
                self.error(f"commit_log: malformed row {key!r}")
                continue
            repo, started, cid = parsed
            commit = self.commits.get(cid)
            if commit is None:
                self.error(f"commit_log: row in repo {repo} names missing commit {cid}")
                continue
            if commit.repo != repo or started != int(commit.started * 1e9):
                self.error(f"commit {commit.repo}@{cid}: commit_log row does not match it")
                continue
            seen[cid] = seen.get(cid, 0) + 1
        for cid, commit in self.commits.items():
            count = seen.get(cid, 0)
            if count != 1:
                self.error(f"commit {commit.repo}@{cid}: has {count} commit_log rows, not 1")

    def check_branches(self) -> None:
        for key, label, branch in self.decoded("branches", "branch", _branch_dec):
            where = f"branch {branch.repo}@{branch.name}"
            if key != f"{branch.repo}\0{branch.name}".encode():
                self.error(f"branch {label}: record is stored under another key ({where})")
            if branch.repo not in self.repos:
                self.error(f"{where}: its repo {branch.repo} does not exist")
            if branch.head is not None:
                head = self.commit_in(branch.repo, branch.head, f"{where}: head")
                if head is not None and head.is_open:
                    self.error(f"{where}: head {branch.head} is not finished")
            if branch.open is not None:
                open_ = self.commits.get(branch.open)
                if open_ is None:
                    self.error(f"{where}: open commit {branch.open} does not exist")
                elif not open_.is_open:
                    self.error(f"{where}: open commit {branch.open} is already finished")
                elif open_.repo != branch.repo or open_.branch != branch.name:
                    self.error(
                        f"{where}: open commit {branch.open} belongs to "
                        f"{open_.repo}@{open_.branch}"
                    )

    # -- trees (invariant 4; the store checks the pages, invariant 3) ----------------------

    def check_trees(self) -> None:
        for commit in sorted(self.commits.values(), key=lambda c: (c.repo, c.started, c.id)):
            where = f"{commit.repo}@{commit.id}"
            try:
                root = bytes.fromhex(commit.root)
            except ValueError:
                root = b""
            if len(root) != 32:
                self.error(f"commit {where}: root {commit.root!r} is not a page digest")
                continue
            summary = self.store.walk(root, f"{where}:/")
            if summary is not None and not commit.is_open and summary.size != commit.size:
                self.error(
                    f"commit {where}: size {commit.size} but its tree holds {summary.size} bytes"
                )
