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

import os
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import lmdb
import msgspec

from pfsmount.errors import Corrupt
from pfsmount.pfs import Pfs
from pfsmount.pfs.model import Branch, Commit, FsckReport, Repo
from pfsmount.pfs.refs import is_commit_id
from pfsmount.store import KIND_DIR, KIND_FILE, KIND_LINK
from pfsmount.store.content import parse_table
from pfsmount.store.packs import Location, checked_location, pack_name, runs
from pfsmount.store.tree import Inner, Leaf, Node

MAX_ERRORS = 1000  # past this, errors are counted, not listed

_LOC_SIZE = len(Location(0, 0, 0, 0, 0).encode())
_NS = struct.Struct(">Q")
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
    return report, Damage(checker.bad_chunks, checker.bad_contents)


class _Summary(NamedTuple):
    """A checked page as its parent needs it: first and last name below it, total size."""

    first: str | None
    last: str | None
    size: int


class _Checker:
    def __init__(self, pfs: Pfs, txn: lmdb.Transaction, report: FsckReport) -> None:
        self.pfs = pfs
        self.txn = txn
        self.report = report
        self.db = pfs.store.meta.db
        self.suppressed = 0
        self.repos: set[str] = set()
        self.commits: dict[str, Commit] = {}
        # Tree pages already checked (None: broken, already reported) and pages being checked.
        self.pages: dict[bytes, _Summary | None] = {}
        self.in_progress: set[bytes] = set()
        # Referenced file contents: digest -> {size an entry claims: where it was claimed}.
        self.contents: dict[bytes, dict[int, str]] = {}
        # Referenced chunks -> where first referenced (for verify_data's messages).
        self.chunk_refs: dict[bytes, str] = {}
        self.bad_chunks: set[bytes] = set()
        self.bad_contents: set[bytes] = set()
        self.named: set[str] = set()  # files already named by a damage line

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
        self.check_contents()
        self.check_chunks()
        if verify_data:
            self.verify_chunks()
        self.report.pages = len(self.pages)
        if self.suppressed:
            self.report.errors.append(f"... and {self.suppressed} more errors")

    # -- repos, commits, branches (invariants 4 and 5) ---------------------------------------

    def check_repos(self) -> None:
        for key, raw in self.rows("repos"):
            self.report.repos += 1
            name = key.decode(errors="replace")
            try:
                repo = _repo_dec.decode(raw)
            except msgspec.DecodeError as e:
                self.error(f"repo {name}: record does not decode: {e}")
                continue
            if repo.name != name:
                self.error(f"repo {name}: record is stored under the name of repo {repo.name}")
            self.repos.add(name)

    def check_commits(self) -> None:
        for key, raw in self.rows("commits"):
            self.report.commits += 1
            cid = key.decode(errors="replace")
            try:
                commit = _commit_dec.decode(raw)
            except msgspec.DecodeError as e:
                self.error(f"commit {cid}: record does not decode: {e}")
                continue
            if commit.id != cid or not is_commit_id(cid):
                self.error(f"commit {cid}: record is stored under another id ({commit.id})")
                continue
            self.commits[cid] = commit
        for commit in self.commits.values():
            where = f"commit {commit.repo}@{commit.id}"
            if commit.repo not in self.repos:
                self.error(f"{where}: its repo {commit.repo} does not exist")
            if commit.parent is not None:
                parent = self.commits.get(commit.parent)
                if parent is None:
                    self.error(f"{where}: its parent {commit.parent} does not exist")
                elif parent.repo != commit.repo:
                    self.error(f"{where}: its parent {commit.parent} is in repo {parent.repo}")
        self.check_ancestry()

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
            repo_b, sep, rest = key.partition(b"\0")
            if not sep or len(rest) != _NS.size + 32:
                self.error(f"commit_log: malformed row {key!r}")
                continue
            repo = repo_b.decode(errors="replace")
            cid = rest[_NS.size :].decode(errors="replace")
            commit = self.commits.get(cid)
            if commit is None:
                self.error(f"commit_log: row in repo {repo} names missing commit {cid}")
                continue
            started = _NS.unpack(rest[: _NS.size])[0]
            if commit.repo != repo or started != int(commit.started * 1e9):
                self.error(f"commit {commit.repo}@{cid}: commit_log row does not match it")
                continue
            seen[cid] = seen.get(cid, 0) + 1
        for cid, commit in self.commits.items():
            count = seen.get(cid, 0)
            if count != 1:
                self.error(f"commit {commit.repo}@{cid}: has {count} commit_log rows, not 1")

    def check_branches(self) -> None:
        for key, raw in self.rows("branches"):
            label = key.decode(errors="replace").replace("\0", "@")
            try:
                branch = _branch_dec.decode(raw)
            except msgspec.DecodeError as e:
                self.error(f"branch {label}: record does not decode: {e}")
                continue
            where = f"branch {branch.repo}@{branch.name}"
            if key != f"{branch.repo}\0{branch.name}".encode():
                self.error(f"branch {label}: record is stored under another key ({where})")
            if branch.repo not in self.repos:
                self.error(f"{where}: its repo {branch.repo} does not exist")
            if branch.head is not None:
                head = self.commits.get(branch.head)
                if head is None:
                    self.error(f"{where}: head {branch.head} does not exist")
                elif head.repo != branch.repo:
                    self.error(f"{where}: head {branch.head} is in repo {head.repo}")
                elif head.is_open:
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

    # -- trees (invariants 3 and 4) ----------------------------------------------------------

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
            summary = self.walk(root, f"{where}:/")
            if summary is not None and not commit.is_open and summary.size != commit.size:
                self.error(
                    f"commit {where}: size {commit.size} but its tree holds {summary.size} bytes"
                )

    def walk(self, root: bytes, where: str) -> _Summary | None:
        """Check every page below ``root`` not checked before, children before parents."""
        trees = self.pfs.store.trees
        stack: list[tuple[bytes, str, Node | None]] = [(root, where, None)]
        while stack:
            digest, at, node = stack.pop()
            if node is not None:
                self.pages[digest] = self.summarize(node, at)
                self.in_progress.discard(digest)
                continue
            if digest in self.pages:
                continue
            if digest in self.in_progress:
                self.error(f"{at}: tree page {digest.hex()} contains itself")
                self.pages[digest] = None
                continue
            try:
                node = trees.verify_page(self.txn, digest)
            except Corrupt as e:
                self.error(f"{at}: {e}")
                self.pages[digest] = None
                continue
            self.in_progress.add(digest)
            stack.append((digest, at, node))
            for child, child_at in _children(node, at):
                if child not in self.pages:
                    stack.append((child, child_at, None))
        return self.pages.get(root)

    def summarize(self, node: Node, at: str) -> _Summary | None:
        if isinstance(node, Leaf):
            return self.summarize_leaf(node, at)
        return self.summarize_inner(node, at)

    def summarize_leaf(self, node: Leaf, at: str) -> _Summary | None:
        if len(node.names) != len(node.entries):
            self.error(f"{at}: a directory page has {len(node.names)} names for "
                       f"{len(node.entries)} entries")
            return None
        base = at.rstrip("/") + "/"
        previous: str | None = None
        for name, entry in zip(node.names, node.entries, strict=True):
            path = base + name
            if previous is not None and name <= previous:
                self.error(f"{path}: out of order after {previous!r} in its directory page")
            previous = name
            if not name or "/" in name or "\0" in name or name in (".", ".."):
                self.error(f"{at}: invalid entry name {name!r}")
            if entry.kind == KIND_FILE:
                self.report.files += 1
                if len(entry.ref) != 32:
                    self.error(f"{path}: file content name {entry.ref.hex()} is not a digest")
                else:
                    self.contents.setdefault(entry.ref, {}).setdefault(entry.size, path)
            elif entry.kind == KIND_DIR:
                child = self.pages.get(entry.ref)
                if child is not None and child.size != entry.size:
                    self.error(f"{path}: directory size {entry.size} but its entries hold "
                               f"{child.size} bytes")
            elif entry.kind == KIND_LINK:
                self.report.files += 1
            else:
                self.error(f"{path}: unknown entry kind {entry.kind}")
        size = sum(e.size for e in node.entries)
        if not node.names:
            return _Summary(None, None, size)
        return _Summary(node.names[0], node.names[-1], size)

    def summarize_inner(self, node: Inner, at: str) -> _Summary | None:
        n = len(node.children)
        if not n or len(node.keys) != n or len(node.sizes) != n:
            self.error(f"{at}: a directory index page has {len(node.keys)} keys, {n} "
                       f"children and {len(node.sizes)} sizes")
            return None
        ok = True
        for i, (key, child, size) in enumerate(
            zip(node.keys, node.children, node.sizes, strict=True)
        ):
            below = self.pages.get(child)
            if below is None:
                ok = False
                continue
            if below.first is None:
                self.error(f"{at}: directory page {child.hex()} is empty but indexed")
                ok = False
                continue
            if below.first != key:
                self.error(f"{at}: index key {key!r} but page {child.hex()} starts at "
                           f"{below.first!r}")
            if i + 1 < n and below.last is not None and below.last >= node.keys[i + 1]:
                self.error(f"{at}: page {child.hex()} holds {below.last!r}, which belongs "
                           f"after index key {node.keys[i + 1]!r}")
            if below.size != size:
                self.error(f"{at}: index says page {child.hex()} holds {size} bytes, "
                           f"its entries hold {below.size}")
        if any(a >= b for a, b in zip(node.keys, node.keys[1:], strict=False)):
            self.error(f"{at}: directory index keys are out of order")
        last = self.pages.get(node.children[-1])
        if not ok or last is None:
            return _Summary(node.keys[0], None, sum(node.sizes))
        return _Summary(node.keys[0], last.last, sum(node.sizes))

    # -- contents and chunks (invariants 1, 2 and 3) -----------------------------------------

    def check_contents(self) -> None:
        chunks_db = self.db["chunks"]
        unseen = set(self.contents)
        for key, raw in self.rows("contents"):
            claims = self.contents.get(key)
            label = f"content {key.hex()}"
            if claims:
                label += f" (of {next(iter(claims.values()))})"
            unseen.discard(key)
            if len(key) != 32:
                self.error(f"{label}: malformed contents key")
                continue
            try:  # the checks every read makes (increasing ends, its name)
                table = parse_table(key, raw, label)
            except Corrupt as e:
                self.error(str(e))
                self.bad_contents.add(key)
                continue
            start = 0
            for digest, end in zip(table.digests, table.ends, strict=True):
                loc = self.txn.get(digest, db=chunks_db)
                if loc is None:
                    self.error(f"{label}: chunk {digest.hex()} is not in the chunk index")
                    self.bad_chunks.add(digest)
                    self.bad_contents.add(key)
                elif len(loc) == _LOC_SIZE and (held := Location.decode(bytes(loc)).raw) != (
                        end - start):
                    self.error(f"{label}: chunk {digest.hex()} holds {held} bytes, its table "
                               f"says {end - start}")
                    self.bad_contents.add(key)
                start = end
            if claims is None:
                continue
            for size, path in claims.items():
                if size != table.size:
                    self.error(f"{path}: file size {size} but its content holds {table.size} "
                               "bytes")
                    self.bad_contents.add(key)
            first = next(iter(claims.values()))
            for digest in table.digests:
                self.chunk_refs.setdefault(digest, first)
        for digest in sorted(unseen):
            path = next(iter(self.contents[digest].values()))
            self.error(f"{path}: file content {digest.hex()} is missing")
            self.bad_contents.add(digest)

    def damaged(self, digest: bytes, why: str, alone: bool = True) -> None:
        """A chunk reads cannot be served from: one line per file that uses it (the first
        damage found in it), or, for a chunk no file uses, ``why`` itself when ``alone``."""
        self.bad_chunks.add(digest)
        path = self.chunk_refs.get(digest)
        if path is None:
            if alone:
                self.error(why)
        elif path not in self.named:
            self.named.add(path)
            self.error(f"{path}: {why}")

    def check_chunks(self) -> None:
        packs = self.pfs.store.packs
        sizes: dict[int, int | None] = {}
        missing: dict[int, int] = {}
        for key, raw in self.rows("chunks"):
            self.report.chunks += 1
            label = f"chunk {key.hex()}"
            if len(key) != 32:
                self.error(f"{label}: malformed chunk index key")
                continue
            try:
                loc = checked_location(key, raw)
            except Corrupt as e:
                self.damaged(key, str(e))
                continue
            if loc.pack not in sizes:
                sizes[loc.pack] = packs.pack_size(loc.pack)
            size = sizes[loc.pack]
            if size is None:
                missing[loc.pack] = missing.get(loc.pack, 0) + 1
                self.damaged(key, f"{label} is in pack {pack_name(loc.pack)}, which is missing",
                             alone=False)
            elif loc.offset + loc.stored > size:
                why = (f"{label}: bytes {loc.offset}..{loc.offset + loc.stored} lie outside "
                       f"pack {pack_name(loc.pack)} of {size} bytes")
                self.damaged(key, why)
        for pack, count in sorted(missing.items()):
            self.error(f"pack {pack_name(pack)} is missing; {count} chunks point into it")

    def verify_chunks(self) -> None:
        """Read every referenced chunk from its pack and check its name: chunks that lie
        back to back are read with one call, by a few threads (hashing releases the GIL)."""
        chunks_db = self.db["chunks"]
        todo: list[tuple[Location, bytes]] = []
        for digest in self.chunk_refs:
            raw = self.txn.get(digest, db=chunks_db)
            if raw is not None and digest not in self.bad_chunks:
                todo.append((checked_location(digest, bytes(raw)), digest))
        todo.sort()
        with ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="pfsmount-fsck") as pool:
            for bad in pool.map(self.verify_run, runs(todo)):
                for digest, err in bad:
                    self.damaged(digest, str(err))

    def verify_run(self, run: list[tuple[Location, bytes]]) -> list[tuple[bytes, Corrupt]]:
        """The damaged chunks of one run (each chunk alone once the run fails)."""
        packs = self.pfs.store.packs
        try:
            packs.read_run(run)
            return []
        except Corrupt:
            pass
        bad: list[tuple[bytes, Corrupt]] = []
        for item in run:
            try:
                packs.read_run([item])
            except Corrupt as e:
                bad.append((item[1], e))
        return bad


def _children(node: Node, at: str) -> Iterator[tuple[bytes, str]]:
    """The pages a page points at: directory roots of its entries, or its index children."""
    if isinstance(node, Inner):
        for child in node.children:
            yield child, at
        return
    base = at.rstrip("/") + "/"
    for name, entry in zip(node.names, node.entries, strict=False):
        if entry.kind == KIND_DIR:
            yield entry.ref, base + name
