"""Pachyderm 1.x jobs, for specs in the 1.3 form (``Spec.v1``): what each container of a job
sees, as Pachyderm 1.3's docs ("Pipeline Input Methods", "Incrementality") and its job server
define it. Plans input views (the local executor writes their pieces out); runs nothing and
writes nothing to the store.

- The *parent job* is the pipeline's latest successful job (same pipeline version) if it saw
  the same commit of every non-incremental (``NONE``) input; the engine finds it. Its output
  is ``/pfs/prev`` and the base the new output builds on; without one, the job starts from
  nothing.
- Each input shows a *view*: ``NONE``, no parent job, or the commit the parent job saw (only
  the input that changed is incremental) -> the whole commit; ``DIFF`` -> what is new since
  the parent's commit: new files whole, a file that grew by appending only its appended bytes,
  any other changed file whole; ``FULL`` -> every top-level object (a file or directory under
  ``/``) holding anything new, whole. Removals are not shown (1.x processed additions only).
- Partitioning splits each view into indivisible units: ``BLOCK`` -> blocks (lines, at most
  8 MiB, never split within a line; a ``.json`` or ``.bin`` file is one block, since pfsmount
  keeps neither JSON object nor write boundaries), ``FILE`` -> top-level objects, ``REPO`` ->
  the view whole. As 1.x's ``shardModuli`` did, each input starts with one shard, and the
  largest per shard is split further while no shard would be empty and the product stays
  within ``parallelism``; each container sees one combination of its inputs' shards (the
  cross product), unit ``k`` of an input falling in its shard ``k % modulus``. So a ``REPO``
  input, or data too small to split, runs in fewer containers than ``parallelism``.
- ``runEmpty`` false (the default): when an input shows nothing, the job runs nothing.
"""

from __future__ import annotations

import hashlib
import math
from itertools import groupby
from typing import NamedTuple

from pfsmount.pfs import Pfs
from pfsmount.pfs.model import FileInfo
from pfsmount.pfs.state import KIND_FILE, KIND_LINK, Entry
from scheduler.spec import V1, V1Input

BLOCK = 8 << 20  # 1.x's block: at most this many bytes of whole lines


class Piece(NamedTuple):
    """Bytes ``start:end`` of one file of an input commit."""

    path: str  # "/a/b"
    entry: Entry
    start: int
    end: int


class View(NamedTuple):
    input: V1Input
    commit: str
    pieces: tuple[Piece, ...]
    whole: bool  # the commit as it is, every file whole


class Shard(NamedTuple):
    """What one container sees: a view per input (a part of it when partitioned)."""

    id: str
    views: tuple[View, ...]


class Plan(NamedTuple):
    shards: list[Shard]
    idle: str  # why nothing runs ("" when the shards run)


def entry_of(info: FileInfo) -> Entry:
    """The stored entry a file listing names (files and links)."""
    if info.type == "symlink":
        return Entry(KIND_LINK, info.size, info.mode, int(info.mtime * 1e9),
                     (info.target or "").encode(errors="surrogateescape"))
    return Entry(KIND_FILE, info.size, info.mode, int(info.mtime * 1e9),
                 bytes.fromhex(info.hash))


def _whole(pfs: Pfs, ref: str, path: str | None = None) -> list[Piece]:
    return [Piece(f.path, entry_of(f), 0, f.size) for f in pfs.files.walk(ref, path)
            if f.type != "dir"]


def _appended(pfs: Pfs, old: Entry, new: Entry, where: str) -> bool:
    """Whether ``new`` is ``old`` with bytes appended (1.x ``put-file`` adds to a file)."""
    if not 0 < old.size <= new.size:
        return False
    a, b = pfs.files.read(old, where=where), pfs.files.read(new, 0, old.size, where=where)
    left, right = b"", b""
    while True:
        if not left:
            left = next(a, b"")
        if not right:
            right = next(b, b"")
        if not left or not right:
            return not left and not right
        n = min(len(left), len(right))
        if left[:n] != right[:n]:
            return False
        left, right = left[n:], right[n:]


def view(pfs: Pfs, inp: V1Input, commit: str, since: str | None) -> View:
    """What ``inp`` shows of ``commit`` when the parent job saw ``since`` (None: no parent)."""
    ref = f"{inp.repo}@{commit}"
    if inp.method.incremental == "NONE" or since is None or since == commit:
        return View(inp, commit, tuple(_whole(pfs, ref)), True)
    changed = [d for d in pfs.files.diff(ref, f"{inp.repo}@{since}") if d.new is not None]
    pieces: list[Piece] = []
    if inp.method.incremental == "FULL":
        for top in sorted({d.path.split("/")[1] for d in changed}):
            pieces += _whole(pfs, ref, top)
        return View(inp, commit, tuple(pieces), False)
    for d in changed:
        assert d.new is not None
        new = entry_of(d.new)
        if d.old is not None and d.old.type == "file" and d.new.type == "file":
            old = entry_of(d.old)
            if _appended(pfs, old, new, f"{d.path} in {ref}"):
                pieces.append(Piece(d.path, new, old.size, new.size))
                continue
        pieces.append(Piece(d.path, new, 0, new.size))
    return View(inp, commit, tuple(pieces), False)


def _blocks(pfs: Pfs, piece: Piece, repo: str, commit: str) -> list[Piece]:
    """A piece as 1.x blocks: whole lines, at most ``BLOCK`` bytes (a longer line alone)."""
    if piece.entry.kind != KIND_FILE or piece.path.endswith((".json", ".bin")) or \
            piece.end - piece.start <= BLOCK:
        return [piece]
    data = b"".join(pfs.files.read(piece.entry, piece.start, piece.end - piece.start,
                                   where=f"{piece.path} in {repo}@{commit}"))
    out, pos = [], 0
    while pos < len(data):
        cut = len(data) if len(data) - pos <= BLOCK else data.rfind(b"\n", pos, pos + BLOCK) + 1
        if cut <= pos:  # one line longer than a block
            cut = data.find(b"\n", pos + BLOCK) + 1 or len(data)
        out.append(piece._replace(start=piece.start + pos, end=piece.start + cut))
        pos = cut
    return out


def _units(pfs: Pfs, v: View, split: bool) -> list[tuple[Piece, ...]]:
    """A view's indivisible parts, in order; ``split`` False: one part (no need to read)."""
    if not v.pieces:
        return []
    if not split or v.input.method.partition == "REPO":
        return [v.pieces]
    if v.input.method.partition == "FILE":
        return [tuple(g) for _, g in groupby(v.pieces, key=lambda p: p.path.split("/")[1])]
    return [(b,) for p in v.pieces for b in _blocks(pfs, p, v.input.repo, v.commit)]


def _moduli(views: list[View], units: list[list[tuple[Piece, ...]]], parallelism: int
            ) -> list[int]:
    """Shards per input, as 1.x's ``shardModuli``: double the input with the most bytes per
    shard while every shard keeps data and the product stays within ``parallelism``."""
    sizes = [sum(p.end - p.start for p in v.pieces) for v in views]
    moduli = [1] * len(views)
    done = {i for i, v in enumerate(views)
            if v.input.method.partition == "REPO" or not units[i]}
    while math.prod(moduli) < parallelism and len(done) < len(views):
        i = max((j for j in range(len(views)) if j not in done),
                key=lambda j: sizes[j] / moduli[j])
        rest = math.prod(moduli) // moduli[i]
        m = min(moduli[i] * 2, parallelism // rest)
        if m <= moduli[i] or len(units[i]) < m:
            done.add(i)
        else:
            moduli[i] = m
    return moduli


def _shard_id(views: tuple[View, ...], prev: str | None, v1: V1) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"prev={prev}\0overwrite={v1.overwrite}\n".encode())
    for v in views:
        h.update(f"{v.input.name}\0{v.commit if v.whole else ''}\n".encode())
        for p in v.pieces:
            h.update(f"{p.path}\0{p.entry.ref.hex()}\0{p.start}\0{p.end}\n".encode())
    return h.hexdigest()


def plan(pfs: Pfs, v1: V1, commits: dict[str, str], parent: dict[str, str] | None,
         parallelism: int, prev: str | None) -> Plan:
    """The containers of a job over ``commits`` (``repo@branch`` -> commit id), given the
    parent job's ``commits`` (None: no parent job) and its output commit ``prev``."""
    views = []
    for inp in v1.inputs:
        key = f"{inp.repo}@{inp.branch}"
        if key not in commits:
            return Plan([], f"input {inp.name} ({key}) has no commit yet")
        v = view(pfs, inp, commits[key], None if parent is None else parent.get(key))
        if not v.pieces and not inp.run_empty:
            return Plan([], f"input {inp.name} shows no new data and runEmpty is false")
        views.append(v)
    units = [_units(pfs, v, parallelism > 1) for v in views]
    moduli = _moduli(views, units, parallelism)
    shards = []
    for n in range(math.prod(moduli)):
        digits = []
        for m in reversed(moduli):  # 1.x's filterNumber: n in the moduli's mixed radix
            digits.append(n % m)
            n //= m
        digits.reverse()
        part = tuple(
            v if moduli[i] == 1 else v._replace(
                pieces=tuple(p for k, u in enumerate(units[i]) if k % moduli[i] == digits[i]
                             for p in u),
                whole=False)
            for i, v in enumerate(views))
        shards.append(Shard(_shard_id(part, prev, v1), part))
    return Plan(shards, "")
