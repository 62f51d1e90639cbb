"""Pachyderm's glob patterns: syntax, matching, capture groups; the one glob language of
``file glob`` and of the datums a pipeline's input makes.

A pattern matches a whole path from the repo's root (``/``: the root itself, one datum).
Syntax, as Pachyderm's glob library has it: ``*`` any run of characters within one level,
``**`` any run across levels (``**/`` also none: ``/**/*.csv`` matches ``/b.csv``), ``?`` one
character within a level, ``[abc]``/``[a-z]`` a set (``[!a]`` or ``[^a]`` not in it),
``{a,b}`` either alternative, ``\\x`` the character ``x``. ``( )`` capture what they match,
numbered by their opening parenthesis from the left, nested too (``/*/(bar-(*))/*``); a
join's ``join_on`` and a group's ``group_by`` name them as ``$1``, ``${2}``, ``$1$2``
(``expand``). Owns only the language: which entries of a commit exist is ``files``'s
(``Glob.scan`` is the coarser pattern it walks, level by level); nothing here reads storage.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from pfsmount.errors import InvalidArgument

_SPECIAL = set("*?[]{}(),\\")
_TEMPLATE = re.compile(r"\$(?:(\d+)|\{(\d+)\})")


@dataclass(frozen=True)
class Glob:
    pattern: str
    regex: re.Pattern[str]
    groups: int  # capture groups, numbered 1..groups
    scan: str  # a pattern of the store's (``*`` per level, or ``**``) that finds every match

    def match(self, path: str) -> tuple[str, ...] | None:
        """The capture groups of ``path`` ("/a/b") if the pattern matches it, else None."""
        m = self.regex.fullmatch(path)
        return None if m is None else tuple(g or "" for g in m.groups())


def _bad(pattern: str, field: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"{field} {pattern!r} {why}")


def _translate(pattern: str, field: str) -> tuple[str, bool]:
    """The regex of ``pattern``, and whether a ``/`` sits inside ``{}`` or ``()`` (so that
    levels cannot be walked one by one)."""
    out: list[str] = []
    nest: list[str] = []  # open "{" and "("
    slash_inside = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 == len(pattern):
                raise _bad(pattern, field, "ends with a lone '\\'")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            if pattern.startswith("**/", i):  # any levels, or none
                out.append("(?:.*/)?")
                i += 3
                continue
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^") else i + 1)
            if end < 0:
                raise _bad(pattern, field, "has an unclosed '['")
            body = pattern[i + 1:end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            if "/" in body:
                raise _bad(pattern, field, "has a '/' inside '[...]'")
            body = body.replace("\\", "\\\\").replace("[", "\\[")
            out.append(f"[^/{body}]" if negate else f"[{body}]")
            i = end
        elif c in "{(":
            nest.append(c)
            out.append("(?:" if c == "{" else "(")
        elif c in "})":
            if not nest or nest.pop() != "{("[c == ")"]:
                raise _bad(pattern, field, f"has an unmatched '{c}'")
            out.append(")")
        elif c == "," and nest and nest[-1] == "{":
            out.append("|")
        elif c == "]":
            raise _bad(pattern, field, "has an unmatched ']'")
        else:
            slash_inside |= c == "/" and bool(nest)
            out.append(re.escape(c))
        i += 1
    if nest:
        raise _bad(pattern, field, f"has an unclosed '{nest[-1]}'")
    return "".join(out), slash_inside


def _levels(pattern: str) -> list[str]:
    return [p for p in pattern.split("/") if p]


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> Glob:
    body, slash_inside = _translate(pattern, "glob")
    regex = re.compile(body)
    if slash_inside or "**" in pattern:
        scan = "/**"
    else:  # a level with no special character is looked up; any other is listed
        scan = "/" + "/".join(p if not _SPECIAL & set(p) else "*" for p in _levels(pattern))
    return Glob(pattern, regex, regex.groups, scan)


def compile_glob(pattern: str, field: str = "glob") -> Glob:
    """``pattern`` read, or refused with one line that names it as ``field`` (``spec field
    input.pfs.glob``): it starts at ``/`` and never leaves the repo (no ``.`` or ``..``
    level). A trailing ``/`` is dropped (``/*/`` is ``/*``)."""
    if not pattern.startswith("/"):
        raise _bad(pattern, field, "must start with / (like / or /* or /*/*)")
    if any(p in (".", "..") for p in _levels(pattern)):
        raise _bad(pattern, field, "must not hold a '.' or '..' level")
    if "//" in pattern:
        raise _bad(pattern, field, "has an empty level ('//')")
    trimmed = pattern.rstrip("/") or "/"
    _translate(trimmed, field)  # refuses with the field's name; the cache keeps no errors
    return _compiled(trimmed)


def check_template(template: str, glob: Glob, field: str) -> str:
    """A template (a join's ``join_on``, a group's ``group_by``) that names capture groups of
    ``glob`` (``$1``, ``${2}``) and only those, or refused naming it as ``field``."""
    named = [int(a or b) for a, b in _TEMPLATE.findall(template)]
    if not named:
        raise InvalidArgument(
            f"{field} {template!r} names no capture group (like $1) of glob "
            f"{glob.pattern!r}" + ("" if glob.groups else ", which has none: put ( ) "
                                   "around the part of the path to match on"))
    beyond = [n for n in named if not 1 <= n <= glob.groups]
    if beyond:
        raise InvalidArgument(
            f"{field} {template!r} names capture group {beyond[0]}, but glob "
            f"{glob.pattern!r} has {glob.groups}")
    return template


def expand(template: str, groups: tuple[str, ...]) -> str:
    """``template`` with each ``$n`` replaced by capture group ``n`` of a match."""
    return _TEMPLATE.sub(lambda m: groups[int(m[1] or m[2]) - 1], template)
