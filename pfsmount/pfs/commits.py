"""Commits: start, finish, list, inspect, delete, squash and wait.

A commit is open while it is written and immutable once finished. Opening a commit and
moving a branch head happen inside one LMDB write transaction, which is the compare-and-swap
DESIGN asks for: two writers can never both move a head from the same value.
"""

from __future__ import annotations

import builtins
import time
import uuid

import lmdb

from pfsmount.errors import Conflict, NotFound, ReadOnly
from pfsmount.pfs.events import Event
from pfsmount.pfs.model import Branch, Commit
from pfsmount.pfs.records import OverRecords
from pfsmount.pfs.refs import Ref, check_name, is_commit_id, numbered, parse_ref


class Commits(OverRecords):
    """Commits and the branch heads they move, over the store's rows."""

    # -- opening and finishing (inside a caller's transaction) -------------------------------

    def open_locked(
        self,
        txn: lmdb.Transaction,
        repo: str,
        branch_name: str,
        *,
        parent: str | None = None,
        description: str = "",
        provenance: list[str] | None = None,
        system: bool = False,
    ) -> Commit:
        """Open a new commit on a branch (created if missing) whose parent is its head."""
        check_name("branch", branch_name)
        repo_row = self.records.repo(txn, repo)
        if repo_row.kind == "pipeline" and not system:
            raise ReadOnly(f"repo {repo} is the output of a pipeline and is read-only")
        branch = self.records.find_branch(txn, repo, branch_name)
        if branch is None:
            branch = Branch(repo=repo, name=branch_name, created=time.time())
        if branch.open is not None:
            raise Conflict(
                f"{repo}@{branch_name} already has an open commit {branch.open}; finish it first"
            )
        parent_commit: Commit | None
        if parent is not None:
            parent_commit = self.records.resolve(txn, parse_ref(f"{repo}@{parent}"))
            if parent_commit.is_open:
                raise Conflict(f"parent commit {parent_commit.id} is still open")
        else:
            parent_commit = self.records.commit(txn, branch.head) if branch.head else None
        commit = Commit(
            id=uuid.uuid4().hex,
            repo=repo,
            branch=branch_name,
            parent=parent_commit.id if parent_commit else None,
            started=time.time(),
            root=parent_commit.root if parent_commit else self.store.trees.empty.hex(),
            size=parent_commit.size if parent_commit else 0,
            provenance=list(provenance or []),
            description=description,
        )
        branch.open = commit.id
        self.records.put_commit(txn, commit, new=True)
        self.records.put_branch(txn, branch)
        return commit

    def finish_locked(self, txn: lmdb.Transaction, commit: Commit) -> Commit:
        """Seal an open commit and make it its branch's head."""
        if not commit.is_open:
            raise Conflict(f"commit {commit.repo}@{commit.id} is already finished")
        commit.finished = time.time()
        self.records.put_commit(txn, commit)
        branch = self.records.branch(txn, commit.repo, commit.branch)
        if branch.open == commit.id:
            branch.open = None
        branch.head = commit.id
        self.records.put_branch(txn, branch)
        return commit

    def writable_locked(
        self, txn: lmdb.Transaction, ref: Ref, system: bool = False
    ) -> tuple[Commit, bool]:
        """The open commit a write to ``ref`` lands in, and whether this write opened it."""
        if ref.ancestry:
            raise ReadOnly(f"{ref} names a finished ancestor commit, which is read-only")
        repo = self.records.repo(txn, ref.repo)
        if repo.kind == "pipeline" and not system:
            raise ReadOnly(f"repo {ref.repo} is the output of a pipeline and is read-only")
        at = ref.branch_or_id
        branch = self.records.find_branch(txn, ref.repo, at)
        if branch is None and (is_commit_id(at) or numbered(at) or
                               self._looks_like_id(txn, ref)):
            commit = self.records.resolve(txn, ref)
            if not commit.is_open:
                raise ReadOnly(f"commit {ref.repo}@{commit.id} is finished and read-only")
            return commit, False
        if branch is not None and branch.open is not None:
            return self.records.commit(txn, branch.open), False
        return self.open_locked(txn, ref.repo, at, system=system), True

    def _looks_like_id(self, txn: lmdb.Transaction, ref: Ref) -> bool:
        try:
            self.records.resolve(txn, ref)
        except NotFound:
            return False
        return True

    # -- commands ----------------------------------------------------------------------------

    def start(
        self,
        repo: str,
        branch: str = "master",
        parent: str | None = None,
        description: str = "",
        provenance: list[str] | None = None,
        system: bool = False,
    ) -> Commit:
        check_name("repo", repo)  # before LMDB sees it as a key (an empty one is an error)
        with self.meta.write() as txn:
            commit = self.open_locked(
                txn, repo, branch, parent=parent, description=description,
                provenance=provenance, system=system,
            )
        self.events.emit(
            Event("commit_started", repo, branch, commit.id),
            Event("branch_changed", repo, branch, commit.id),
        )
        return commit

    def finish(self, ref: str, description: str | None = None, system: bool = False) -> Commit:
        """Finish the open commit of a branch (``repo@branch``) or an open commit by id."""
        parsed = parse_ref(ref)
        self.store.packs.sync()  # the open commit's data reaches the disk before it is sealed
        with self.meta.write() as txn:
            repo = self.records.repo(txn, parsed.repo)
            if repo.kind == "pipeline" and not system:
                raise ReadOnly(f"repo {parsed.repo} is the output of a pipeline and is read-only")
            branch = self.records.find_branch(txn, parsed.repo, parsed.branch_or_id)
            if branch is not None:
                if branch.open is None:
                    raise Conflict(f"{parsed.repo}@{branch.name} has no open commit")
                commit = self.records.commit(txn, branch.open)
            else:
                commit = self.records.resolve(txn, parsed)
            if description is not None:
                commit.description = description
            self.finish_locked(txn, commit)
        self.events.emit(
            Event("commit_finished", commit.repo, commit.branch, commit.id),
            Event("branch_changed", commit.repo, commit.branch, commit.id),
        )
        return commit

    def inspect(self, ref: str) -> Commit:
        with self.meta.read() as txn:
            return self.records.resolve(txn, parse_ref(ref))

    def list(self, repo: str, branch: str | None = None, limit: int | None = None) -> list[Commit]:
        """Commits newest first: all of a repo, or the ancestry of one branch."""
        check_name("repo", repo)
        out: builtins.list[Commit] = []
        with self.meta.read() as txn:
            self.records.repo(txn, repo)
            if branch is None:
                for commit in self.records.log(txn, repo):
                    if limit is not None and len(out) >= limit:
                        break
                    out.append(commit)
                return out
            b = self.records.branch(txn, repo, branch)
            cursor = b.open or b.head
            while cursor is not None and (limit is None or len(out) < limit):
                commit = self.records.commit(txn, cursor)
                out.append(commit)
                cursor = commit.parent
        return out

    def _children(self, txn: lmdb.Transaction, commit: Commit) -> builtins.list[Commit]:
        return [c for c in self.records.log(txn, commit.repo) if c.parent == commit.id]

    def _heads_at(self, txn: lmdb.Transaction, commit: Commit) -> builtins.list[str]:
        return [
            b.name for b in self.records.branches(txn, commit.repo)
            if commit.id in (b.head, b.open)
        ]

    def delete(self, ref: str) -> Commit:
        """Delete a branch's newest commit (open or finished); its branch moves back."""
        with self.meta.write() as txn:
            commit = self.records.resolve(txn, parse_ref(ref))
            if self.records.repo(txn, commit.repo).kind == "pipeline":
                raise ReadOnly(f"repo {commit.repo} is the output of a pipeline and is read-only")
            if self._children(txn, commit):
                raise Conflict(
                    f"commit {commit.id} has children; only a branch's newest commit "
                    "can be deleted (squash it instead)"
                )
            branches = self._heads_at(txn, commit)
            for name in branches:
                branch = self.records.branch(txn, commit.repo, name)
                if branch.open == commit.id:
                    branch.open = None
                if branch.head == commit.id:
                    branch.head = commit.parent
                self.records.put_branch(txn, branch)
            self.records.delete_commit_row(txn, commit)
        self.events.emit(
            Event("commit_deleted", commit.repo, commit.branch, commit.id),
            *(Event("branch_changed", commit.repo, name) for name in branches),
        )
        return commit

    def squash(self, ref: str) -> Commit:
        """Remove a finished commit, folding it into its child: the child keeps its content
        and takes the commit's parent. Returns the child."""
        with self.meta.write() as txn:
            commit = self.records.resolve(txn, parse_ref(ref))
            if commit.is_open:
                raise Conflict(f"commit {commit.id} is open; finish it first")
            if self._heads_at(txn, commit):
                raise Conflict(f"commit {commit.id} is a branch head: no child to squash into")
            children = self._children(txn, commit)
            if not children:
                raise Conflict(f"commit {commit.id} has no child to squash into")
            for child in children:
                child.parent = commit.parent
                self.records.put_commit(txn, child)
            self.records.delete_commit_row(txn, commit)
        self.events.emit(Event("commit_deleted", commit.repo, commit.branch, commit.id))
        return children[0]

    def wait(self, ref: str, timeout: float | None = None) -> Commit:
        """Block until the named commit is finished; returns it."""
        parsed = parse_ref(ref)
        with self.meta.read() as txn:
            target = self.records.resolve(txn, parsed)
        def done() -> bool:
            with self.meta.read() as txn:
                return not self.records.commit(txn, target.id).is_open

        if not self.events.wait_for(done, timeout):
            raise Conflict(f"timed out waiting for commit {target.repo}@{target.id}: it is "
                           f"still open; `pfsmount commit finish {target.repo}@"
                           f"{target.branch}` finishes it")
        return self.inspect(f"{target.repo}@{target.id}")
