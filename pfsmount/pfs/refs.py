"""Names and references as users spell them, parsed and checked before anything is touched.

References: ``repo/branch``, ``repo@branch``, ``repo@<commit-id>``, ``repo/<commit-id>``,
``repo@branch^`` (each ``^`` one parent further; ``~N`` N parents), each optionally
followed by ``:/path``. Paths are normalized to ``a/b/c`` and may never leave the repo.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pfsmount.errors import InvalidArgument

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_COMMIT_ID = re.compile(r"[0-9a-f]{32}")
_REF = re.compile(r"(?P<repo>[^/@:^~]+)(?:[/@](?P<at>[^:^~]+))?(?P<ancestry>(?:\^+|~\d+)*)")


def is_commit_id(text: str) -> bool:
    return _COMMIT_ID.fullmatch(text) is not None


def check_name(kind: str, name: str) -> str:
    """A repo or branch name: letters, digits, ``_``, ``-``, ``.``; no leading dot or dash."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid {kind} name {name!r}: use letters, digits, '_', '-' and '.', "
            "not starting with '.' or '-' (at most 128 characters)"
        )
    if kind == "branch" and is_commit_id(name):
        raise InvalidArgument(f"invalid branch name {name!r}: it would read as a commit id")
    return name


def normalize_path(path: str) -> str:
    """``/a//b/`` -> ``a/b``; the repo root is ``""``. Refuses ``..`` and NUL."""
    if "\0" in path:
        raise InvalidArgument("invalid path: it contains a NUL byte")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"invalid path {path!r}: '..' would leave the repo")
    return "/".join(parts)


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
            "repo@<commit-id> or repo@branch^, optionally followed by :/path"
        )
    repo = check_name("repo", m["repo"])
    at = m["at"]
    if at is not None and not is_commit_id(at):
        check_name("branch", at)
    ancestry = 0
    for step in re.findall(r"\^+|~\d+", m["ancestry"]):
        ancestry += len(step) if step.startswith("^") else int(step[1:])
    return Ref(repo, at, ancestry, normalize_path(path if path is not None else ref_path))
