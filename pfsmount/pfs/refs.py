"""Names and references as users spell them, parsed and checked before anything is touched.

References: ``repo/branch``, ``repo@branch``, ``repo@<commit-id>``, ``repo/<commit-id>``,
``repo@branch^`` (each ``^`` one parent further; ``~N`` N parents), and Pachyderm 1.x's
``repo/branch/N`` or ``repo@branch/N`` (the N-th commit of a branch's history, from 0), each
optionally followed by ``:/path``. Paths are normalized to ``a/b/c`` and may never leave the
repo.

Precedence, for a name ``X`` after the repo: a branch named ``X`` wins; else ``X`` is a commit
id or a unique prefix of one (at least 4 hex digits; an ambiguous prefix is refused). In
``X/N``, ``X`` must be a branch: ``<commit-id>/N`` is refused (no branch name can be a commit
id, so the forms never overlap).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pfsmount.errors import InvalidArgument, NameTooLong
from pfsmount.store.tree import DEPTH_MAX

NAME_MAX = 255  # bytes in one file name, as on POSIX file systems
PATH_MAX = 4096  # bytes in a whole path
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_COMMIT_ID = re.compile(r"[0-9a-f]{32}")
_NUMBERED = re.compile(r"(?P<branch>[^/]+)/(?P<n>\d+)")
_REF = re.compile(r"(?P<repo>[^/@:^~]+)(?:[/@](?P<at>[^:^~]+))?(?P<ancestry>(?:\^+|~\d+)*)")


def is_commit_id(text: str) -> bool:
    return _COMMIT_ID.fullmatch(text) is not None


def numbered(at: str) -> tuple[str, int] | None:
    """``branch/N`` (1.x: the N-th commit of the branch, from 0) as (branch, N), else None."""
    m = _NUMBERED.fullmatch(at)
    return (m["branch"], int(m["n"])) if m else None


def check_name(kind: str, name: str) -> str:
    """A repo or branch name: letters, digits, ``_``, ``-``, ``.``; no leading dot or dash."""
    if not isinstance(name, str):
        raise InvalidArgument(f"invalid {kind} name {name!r}: it must be a string")
    if len(name) > 128:
        raise NameTooLong(f"invalid {kind} name {shown(name[:40])}...: it is {len(name)} "
                          "characters long, at most 128")
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid {kind} name {name!r}: use letters, digits, '_', '-' and '.', "
            "not starting with '.' or '-' (at most 128 characters)"
        )
    if kind == "branch" and is_commit_id(name):
        raise InvalidArgument(f"invalid branch name {name!r}: it would read as a commit id")
    return name


def shown(name: str) -> str:
    """A name quoted for a message, bytes that are not UTF-8 shown as ``\\xff``."""
    try:
        return repr(name.encode("utf-8", "surrogateescape"))[1:]
    except UnicodeEncodeError:  # a lone surrogate that no byte stands for
        return repr(name.encode("utf-8", "backslashreplace"))[1:]


def check_component(name: str) -> str:
    """One file name (a path component) as the store keeps it: valid UTF-8, no NUL, at most
    ``NAME_MAX`` bytes. The API, ``put -r`` and the mount (as EINVAL / ENAMETOOLONG) share
    it, so a name is refused the same way wherever it comes from, never stored mangled."""
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(f"invalid file name {shown(name)}: it is not valid UTF-8"
                              ) from None
    if "\0" in name or "/" in name:
        raise InvalidArgument(f"invalid file name {shown(name)}: it contains NUL or '/'")
    if size > NAME_MAX:
        raise NameTooLong(f"invalid file name {shown(name[:40])}...: it is {size} bytes "
                          f"long, at most {NAME_MAX}")
    return name


def normalize_path(path: str) -> str:
    """``/a//b/`` -> ``a/b``; the repo root is ``""``. Refuses ``..``, NUL, names that are not
    UTF-8, and names or paths longer than a file system takes."""
    if "\0" in path:
        raise InvalidArgument("invalid path: it contains a NUL byte")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"invalid path {shown(path[:200])}: '..' would leave the repo")
    for part in parts:
        check_component(part)
    normal = "/".join(parts)
    if len(parts) > DEPTH_MAX:
        raise NameTooLong(f"invalid path {shown(normal[:40])}...: it is {len(parts)} levels "
                          f"deep, at most {DEPTH_MAX}")
    if len(normal.encode()) > PATH_MAX:
        raise NameTooLong(f"invalid path {shown(normal[:40])}...: it is "
                          f"{len(normal.encode())} bytes long, at most {PATH_MAX}")
    return normal


class Ref(NamedTuple):
    """A parsed reference. ``at`` is a branch name or commit id; None means ``master``."""

    repo: str
    at: str | None
    ancestry: int
    path: str

    @property
    def branch_or_id(self) -> str:
        return self.at or "master"

    def __str__(self) -> str:
        text = f"{self.repo}@{self.branch_or_id}" + "^" * self.ancestry
        return f"{text}:/{self.path}" if self.path else text


def parse_ref(text: str, path: str | None = None) -> Ref:
    """Parse ``repo[@|/]at[^...][:/path]``; an explicit ``path`` argument wins over ``:/``."""
    body, sep, ref_path = text.partition(":")
    m = _REF.fullmatch(body)
    if not m or (sep and not ref_path.startswith("/") and ref_path):
        raise InvalidArgument(
            f"invalid reference {text!r}: expected repo/branch, repo@branch, "
            "repo@<commit-id>, repo@branch^ or repo/branch/N, optionally followed by :/path"
        )
    repo = check_name("repo", m["repo"])
    at = m["at"]
    nth = None if at is None else numbered(at)
    if nth is not None and is_commit_id(nth[0]):
        raise InvalidArgument(f"invalid reference {text!r}: in BRANCH/N (the N-th commit of a "
                              f"branch), {nth[0]} must be a branch, not a commit id")
    if at is not None and not is_commit_id(at):
        check_name("branch", nth[0] if nth else at)
    ancestry = 0
    for step in re.findall(r"\^+|~\d+", m["ancestry"]):
        ancestry += len(step) if step.startswith("^") else int(step[1:])
    return Ref(repo, at, ancestry, normalize_path(path if path is not None else ref_path))
