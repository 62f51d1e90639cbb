"""Repos and branches: create, list, inspect, delete, and the provenance between branches.

A repo is a name with branches; a branch names a head commit (finished) and at most one open
commit. Branch provenance (``repo@branch`` entries) records which branches a pipeline's
output branch is computed from; a repo that another branch derives from cannot be deleted.
"""

from __future__ import annotations

import builtins
import time

import lmdb

from pfsmount.errors import AlreadyExists, Conflict, InvalidArgument
from pfsmount.pfs.events import Event
from pfsmount.pfs.model import Branch, Repo, RepoKind
from pfsmount.pfs.records import OverRecords
from pfsmount.pfs.refs import check_name, parse_ref


class Repos(OverRecords):
    """Repos and their branches, over the store's rows."""

    def _with_size(self, txn: lmdb.Transaction, repo: Repo) -> Repo:
        heads = {b.head for b in self.records.branches(txn, repo.name) if b.head}
        repo.size = sum(self.records.commit(txn, h).size for h in heads)
        return repo

    def create(
        self,
        name: str,
        description: str = "",
        kind: RepoKind = "input",
        exist_ok: bool = False,
    ) -> Repo:
        check_name("repo", name)
        with self.meta.write() as txn:
            if self.records.has_repo(txn, name):
                existing = self.records.repo(txn, name)
                if exist_ok and existing.kind == kind:
                    return existing
                raise AlreadyExists(f"repo {name} already exists")
            repo = Repo(name=name, created=time.time(), description=description, kind=kind)
            self.records.put_repo(txn, repo)
            # Every repo starts with an empty master, so /pfs/<repo>/master exists at once.
            self.records.put_branch(txn, Branch(repo=name, name="master", created=repo.created))
        self.events.emit(Event("repo_created", name))
        return repo

    def list(self) -> list[Repo]:
        with self.meta.read() as txn:
            return [self._with_size(txn, r) for r in self.records.repos(txn)]

    def inspect(self, name: str) -> Repo:
        check_name("repo", name)
        with self.meta.read() as txn:
            return self._with_size(txn, self.records.repo(txn, name))

    def readers(self, txn: lmdb.Transaction, name: str) -> builtins.list[str]:
        """Other repos with a branch whose provenance names a branch of ``name``."""
        found = []
        for repo in self.records.repos(txn):
            if repo.name == name:
                continue
            for branch in self.records.branches(txn, repo.name):
                if any(p.split("@", 1)[0] == name for p in branch.provenance):
                    found.append(repo.name)
                    break
        return found

    def delete(self, name: str, force: bool = False) -> None:
        """Delete a repo with all its branches and commits (their data becomes garbage)."""
        check_name("repo", name)
        with self.meta.write() as txn:
            self.records.repo(txn, name)
            readers = self.readers(txn, name)
            if readers and not force:
                raise Conflict(
                    f"repo {name} is read by pipeline {', '.join(readers)}; "
                    "delete the pipeline first"
                )
            for branch in list(self.records.branches(txn, name)):
                self.records.delete_branch_row(txn, name, branch.name)
            for commit in list(self.records.log(txn, name)):
                self.records.delete_commit_row(txn, commit)
            self.records.delete_repo_row(txn, name)
        self.events.emit(Event("repo_deleted", name))

    # -- branches ----------------------------------------------------------------------------

    def create_branch(
        self,
        repo: str,
        name: str,
        head: str | None = None,
        provenance: builtins.list[str] | None = None,
    ) -> Branch:
        """Create a branch, or point an existing one at ``head`` (a ref such as ``repo@id``)."""
        check_name("branch", name)
        for p in provenance or []:
            parsed = parse_ref(p)
            if parsed.at is None or parsed.path or parsed.ancestry:
                raise InvalidArgument(f"invalid provenance {p!r}: expected repo@branch")
        with self.meta.write() as txn:
            self.records.repo(txn, repo)
            branch = self.records.find_branch(txn, repo, name) or Branch(
                repo=repo, name=name, created=time.time()
            )
            if head is not None:
                if branch.open is not None:
                    raise Conflict(f"{repo}@{name} has an open commit; finish it first")
                target = self.records.resolve(txn, parse_ref(head if "@" in head or "/" in head
                                                             else f"{repo}@{head}"))
                if target.repo != repo:
                    raise InvalidArgument(f"commit {target.id} is not in repo {repo}")
                if target.is_open:
                    raise Conflict(f"commit {target.id} is still open")
                branch.head = target.id
            if provenance is not None:
                branch.provenance = sorted(set(provenance))
            self.records.put_branch(txn, branch)
        self.events.emit(Event("branch_changed", repo, name, branch.head))
        return branch

    def list_branches(self, repo: str) -> builtins.list[Branch]:
        check_name("repo", repo)
        with self.meta.read() as txn:
            self.records.repo(txn, repo)
            return list(self.records.branches(txn, repo))

    def inspect_branch(self, repo: str, name: str) -> Branch:
        with self.meta.read() as txn:
            return self.records.branch(txn, repo, name)

    def delete_branch(self, repo: str, name: str) -> None:
        with self.meta.write() as txn:
            branch = self.records.branch(txn, repo, name)
            key = f"{repo}@{name}"
            for other in self.records.repos(txn):
                for b in self.records.branches(txn, other.name):
                    if key in b.provenance:
                        raise Conflict(
                            f"branch {key} is read by {b.repo}@{b.name}; delete that first"
                        )
            if branch.open is not None:
                self.records.delete_commit_row(txn, self.records.commit(txn, branch.open))
            self.records.delete_branch_row(txn, repo, name)
        self.events.emit(Event("branch_changed", repo, name))
