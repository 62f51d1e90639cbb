"""SIGKILL loops: hundreds of crashes of a real daemon at random instants, and what survives.

DESIGN's promise: a finished commit is never lost or corrupted by a crash at any instant, a
file closed inside an open commit survives a crash, and the daemon starts again every time.
Each cycle runs one operation on a real daemon (in a thread of the test, through the Python
client or the mount), SIGKILLs the daemon at a uniformly random instant inside the
operation's window (measured on the lane's first run of that kind, then kept up to date),
starts it again and checks what a user would see:

- ``put``: a new file, an append, a local directory, a stream, a delete (each its own
  commit); ``finish``: an open commit filled by puts, then ``commit finish``; ``gc`` after
  making garbage; ``mount``: files written and closed through the FUSE mount, sometimes then
  ``commit finish``; ``job``: a pipeline (no image: the bubblewrap sandbox) running on a new
  input commit, killed while it runs or captures its output;
- the branch is in a state the operation allows: every step that returned is there, the
  step in flight is either all there or not at all, nothing else changed, and no commit
  made by a put is left open; an open commit is finished then, and must hold the same;
- every commit finished since the last check lists exactly its files with their BLAKE3
  hashes, and its new files read back byte for byte; every commit of every repo is
  re-checked every ``FULL_EVERY`` kills and at the end (every stored content read once);
- ``fsck --verify`` (through the API) reports no error; a job's output commit appears
  after the restart (the job is persisted and reruns) holding the right bytes, once.

The daemon always runs with its mount (as ``pfsmount up`` does by default; it starts no
slower), started directly as ``up --foreground`` and every tenth time by ``pfsmount up``.
Two lanes (each its own daemon and store) run side by side: the daemon's start-up is the
main cost, and the two cores would otherwise take turns. The summary line gives the kills
survived, how many landed inside an operation, and where the seconds went.
``PFSMOUNT_LONG_KILLS=1`` runs 2000 kills, ``PFSMOUNT_LONG_KILLS=N`` runs N;
``PFSMOUNT_KILL_SEED`` replays a seed (the seed is printed with every failure).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import blake3
import pytest

from pfsmount import Client
from pfsmount.api.pipeline_client import PipelineClient
from tests.conftest import require_fuse
from tests.reliability.crashing import Crashable, Tree, descendants, hashes, listing

_LONG = os.environ.get("PFSMOUNT_LONG_KILLS", "")
KILLS = 2000 if _LONG == "1" else int(_LONG) if _LONG.isdigit() and _LONG != "0" else 200
SEED = int(os.environ.get("PFSMOUNT_KILL_SEED") or random.SystemRandom().randrange(1 << 32))
LANES = 2
FULL_EVERY = 25  # kills between full re-checks of every commit
MIX = {"put": 30, "finish": 20, "gc": 15, "mount": 20, "job": 15}  # weights of the kinds
JOB_WAIT = 90.0
KEEP_FILES = 40  # a branch with more files gets deletes, so checks stay cheap

# One datum per input file; each output is its input twice.
SPEC = """{"pipeline": {"name": "jout"}, "input": {"pfs": {"repo": "jin", "glob": "/*"}},
 "transform": {"cmd": ["sh"], "stdin": [
   "for f in /pfs/jin/*; do cat \\"$f\\" \\"$f\\" > /pfs/out/$(basename \\"$f\\"); done"]}}"""

State = tuple[str, Tree]  # ("none" | "open" | "finished", what the branch holds then)


def blob(rng: random.Random, most: int) -> bytes:
    """Random bytes, or (half the time) bytes zstd compresses well: both store paths."""
    size = rng.randrange(most + 1)
    if rng.random() < 0.5:
        return rng.randbytes(size)
    return (rng.randbytes(rng.randrange(1, 200)) * (size // 2 + 1))[:size]


@dataclass
class History:
    """What the test knows a repo's master holds: every finished commit and its tree."""

    name: str
    trees: dict[str, Tree] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    unread: list[tuple[str, Tree]] = field(default_factory=list)  # (commit, changed files)

    @property
    def head(self) -> str | None:
        return self.order[-1] if self.order else None

    @property
    def tree(self) -> Tree:
        return self.trees[self.order[-1]] if self.order else {}

    def add(self, cid: str, tree: Tree) -> None:
        old = self.tree
        self.trees[cid] = tree
        self.order.append(cid)
        self.unread.append((cid, {p: d for p, d in tree.items() if old.get(p) is not d}))


class Op(threading.Thread):
    """The steps of one operation, run in order until one fails (the daemon died)."""

    def __init__(self, steps: list[Callable[[], Any]]) -> None:
        super().__init__(daemon=True)
        self.steps = steps
        self.done = 0
        self.error: BaseException | None = None
        self.elapsed: float | None = None  # set when every step returned
        self.started = time.monotonic()
        self.start()

    def run(self) -> None:
        try:
            for step in self.steps:
                step()
                self.done += 1
            self.elapsed = time.monotonic() - self.started
        except BaseException as e:  # the daemon died under it: any client error will do
            self.error = e


class Lane:
    """One daemon, its store, and ``kills`` cycles of operation, kill, restart, check."""

    def __init__(self, number: int, seed: int, kills: int, scratch: Path,
                 stop: threading.Event) -> None:
        self.number, self.seed = number, seed
        self.stop = stop  # set when any lane fails: the others end at once
        self.rng = random.Random(seed)
        self.kills = kills
        self.scratch = scratch
        self.d = Crashable(f"pfk{number}")
        self.k, self.m = History("k"), History("m")  # API writes, mount writes
        self.jin, self.jout = History("jin"), History("jout")
        self.m_open: Tree | None = None  # the open commit on m@master, if there is one
        self.window: dict[str, float] = {}
        self.kinds: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.spent: dict[str, float] = defaultdict(float)  # seconds, by what they went to
        self.n = 0

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> Counter[str]:
        d = self.d
        try:
            d.up(mount=True)
            with d.client() as c:
                for repo in ("k", "m", "jin"):
                    c.create_repo(repo)
                PipelineClient(c).create(SPEC)
            kinds = list(MIX)
            for n in range(self.kills):
                if self.stop.is_set():
                    return self.kinds
                self.n = n
                kind = self.rng.choices(kinds, [MIX[k] for k in kinds])[0]
                self.cycle(kind)
                if (n + 1) % FULL_EVERY == 0:
                    self.full_check()
            self.full_check()
            d.down()  # it checks the log
        except BaseException:
            self.stop.set()
            raise
        finally:
            d.cleanup()
        return self.kinds

    def where(self) -> str:
        return f"lane {self.number} (seed {self.seed}) kill {self.n}"

    def cycle(self, kind: str) -> None:
        t = time.monotonic()
        getattr(self, f"cycle_{kind}")()
        self.kinds[kind] += 1
        self.spent[kind] += time.monotonic() - t

    def restart(self) -> None:
        """The daemon mounts, always (as ``pfsmount up`` does by default): it costs no more
        to start, and the mount's staging and the scheduler's reads through it are hit too."""
        t = time.monotonic()
        if self.n % 10 == 9:
            self.d.up(mount=True)  # now and then the user's own command
        else:
            self.d.restart(mount=True)
        self.spent["restarts"] += time.monotonic() - t

    def crash_during(self, kind: str, steps: list[Callable[[], Any]], late: bool = False
                     ) -> Op:
        """Run ``steps``, SIGKILL the daemon at a random instant of their window, start it
        again. The first run of a kind measures its window (the kill comes after it)."""
        window = self.window.get(kind)
        known = descendants(self.d.pid or 0)
        t = time.monotonic()
        op = Op(steps)
        if window is None:
            op.join(timeout=JOB_WAIT + 30)
        else:
            low = 0.5 * window if late and self.rng.random() < 0.5 else 0.0
            time.sleep(self.rng.uniform(low, window))
        self.d.crash(known)
        self.spent["ops"] += time.monotonic() - t
        op.join(timeout=60)
        assert not op.is_alive(), f"{self.where()}: a {kind} call hangs after the crash"
        if op.elapsed is not None:
            self.window[kind] = op.elapsed if window is None else 0.7 * window + 0.3 * op.elapsed
            self.outcomes["after"] += 1
        else:
            self.outcomes["in flight"] += 1
        self.restart()
        return op

    # -- the kinds ----------------------------------------------------------------------------

    def cycle_put(self) -> None:
        """One put (its own commit): landed whole with its commit, or not at all."""
        h, rng, n = self.k, self.rng, self.n
        base = h.tree
        c = self.d.client()
        variant = rng.choice(["new", "new", "append", "dir", "stream", "delete"])
        if base and (variant == "delete" or (len(base) > KEEP_FILES and variant != "dir")):
            victim = rng.choice(sorted(base))
            after = {p: v for p, v in base.items() if p != victim}
            step: Callable[[], Any] = partial(c.delete_file, f"k@master:{victim}")
        elif variant == "append" and base:
            path = rng.choice(sorted(base))
            extra = blob(rng, 300 << 10)
            after = {**base, path: base[path] + extra}
            step = partial(c.put_file, f"k@master:{path}", extra, append=True)
        elif variant == "dir":
            src = self.scratch / f"dir{n}"
            files = {f"/d{n}/{i % 3}/f{i}": blob(rng, 40 << 10)
                     for i in range(rng.randrange(3, 30))}
            for rel, data in files.items():
                (src / rel[len(f"/d{n}/"):]).parent.mkdir(parents=True, exist_ok=True)
                (src / rel[len(f"/d{n}/"):]).write_bytes(data)
            after = {**base, **files}
            step = partial(c.put_file, f"k@master:/d{n}", src)
        elif variant == "stream":
            data = blob(rng, 2 << 20)
            after = {**base, f"/s{n}": data}
            pieces = (data[i:i + (64 << 10)] for i in range(0, len(data), 64 << 10))
            step = partial(c.put_file, f"k@master:/s{n}", pieces)
        else:
            data = blob(rng, 1536 << 10)
            after = {**base, f"/p{n}": data}
            step = partial(c.put_file, f"k@master:/p{n}", data)
        try:
            op = self.crash_during("put", [step])
        finally:
            c.close()
        self.settle(h, [("none", base), ("finished", after)], op)

    def cycle_finish(self) -> None:
        """An open commit filled by puts and a delete, then finished."""
        h, rng, n = self.k, self.rng, self.n
        base = h.tree
        c = self.d.client()
        states: list[State] = [("none", base), ("open", base)]
        steps: list[Callable[[], Any]] = [lambda: c.start_commit("k", "master")]
        tree = dict(base)
        for i in range(rng.randrange(1, 4)):
            data = blob(rng, 512 << 10)
            steps.append(partial(c.put_file, f"k@master:/c{n}/{i}", data))
            tree = {**tree, f"/c{n}/{i}": data}
            states.append(("open", tree))
        if base and rng.random() < 0.5:
            victim = rng.choice(sorted(base))
            steps.append(lambda: c.delete_file(f"k@master:{victim}"))
            tree = {p: v for p, v in tree.items() if p != victim}
            states.append(("open", tree))
        steps.append(lambda: c.finish_commit("k@master"))
        states.append(("finished", tree))
        try:
            op = self.crash_during("finish", steps)
        finally:
            c.close()
        self.settle(h, states, op)

    def cycle_gc(self) -> None:
        """gc with garbage to free: a deleted repo, and whatever interrupted writes left."""
        with self.d.client() as c:
            c.create_repo("junk")
            c.put_file("junk@master:/x", blob(self.rng, 1 << 20))
            c.delete_repo("junk", force=True)
        c = self.d.client()
        try:
            op = self.crash_during("gc", [lambda: c.gc()])
        finally:
            c.close()
        self.outcomes["gc done" if op.done else "gc cut"] += 1
        self.settle(self.k, [("none", self.k.tree)], op)
        self.sample_check()

    def cycle_mount(self) -> None:
        """Files written and closed through the mount, sometimes then ``commit finish``: each
        file whose close() returned is in the open commit after the crash."""
        h, rng, n = self.m, self.rng, self.n
        dest = self.d.mnt / "m" / "master"
        start = self.m_open if self.m_open is not None else h.tree
        states: list[State] = [("open" if self.m_open is not None else "none", start)]
        steps: list[Callable[[], Any]] = []
        tree = dict(start)
        if len(tree) > KEEP_FILES:
            victim = rng.choice(sorted(tree))
            steps.append(lambda: (dest / victim.lstrip("/")).unlink())
            tree = {p: v for p, v in tree.items() if p != victim}
            states.append(("open", tree))
        for i in range(rng.randrange(3, 12)):
            # Now and then an overwrite: old or new content after the crash, never torn.
            path = rng.choice(sorted(tree)) if tree and rng.random() < 0.2 else f"/w{n}_{i}"
            data = blob(rng, 256 << 10)
            steps.append(partial((dest / path.lstrip("/")).write_bytes, data))
            tree = {**tree, path: data}
            states.append(("open", tree))
        finish = len(tree) > KEEP_FILES or rng.random() < 0.3
        c = self.d.client()
        if finish:
            steps.append(lambda: c.finish_commit("m@master"))
            states.append(("finished", tree))
        try:
            op = self.crash_during("mount", steps)
        finally:
            c.close()
        self.m_open = self.settle(h, states, op, keep_open=True)
        now = self.m_open if self.m_open is not None else h.tree
        if now:  # and through the new mount, as programs see the branch
            path = rng.choice(sorted(now))
            assert (dest / path.lstrip("/")).read_bytes() == now[path], (
                f"{self.where()}: {dest}{path} reads other bytes through the mount")

    def cycle_job(self) -> None:
        """A new input commit, and the kill while its job runs or captures its output; after
        the restart the job runs again and its output commit appears, right, once."""
        rng, n = self.rng, self.n
        data = blob(rng, 1 << 20)
        with self.d.client() as c:
            cid = c.put_file(f"jin@master:/i{n}", data).id
        self.jin.add(cid, {**self.jin.tree, f"/i{n}": data})
        c = self.d.client(timeout=JOB_WAIT + 30)
        pc = PipelineClient(c)
        try:
            op = self.crash_during("job", [lambda: pc.wait_commit(f"jin@{cid}", JOB_WAIT)],
                                   late=True)
        finally:
            c.close()
        self.outcomes["job done" if op.done else "job cut"] += 1
        with self.d.client(timeout=JOB_WAIT + 30) as c:
            outs = PipelineClient(c).wait_commit(f"jin@{cid}", JOB_WAIT)
            assert [o.repo for o in outs] == ["jout"], f"{self.where()}: outputs {outs}"
            out = outs[0]
            assert f"jin@{cid}" in out.provenance, f"{self.where()}: {out.provenance}"
            expected = {p: d + d for p, d in self.jin.tree.items()}
            assert listing(c, f"jout@{out.id}") == hashes(expected), (
                f"{self.where()}: the job's output commit holds other bytes")
            commits = [x.id for x in c.list_commits("jout")]
            assert len(commits) == len(self.jin.order), (
                f"{self.where()}: {len(commits)} output commits for "
                f"{len(self.jin.order)} input commits")
            self.jout.add(out.id, expected)
            self.read_new(c, self.jin)
            self.read_new(c, self.jout)
            self.fsck(c)

    # -- checks -------------------------------------------------------------------------------

    def settle(self, h: History, states: list[State], op: Op, keep_open: bool = False
               ) -> Tree | None:
        """The branch after the crash is in one of the states the steps allow: the one after
        the last step that returned, or the one after the step in flight. An open commit
        (other than the mount's, with ``keep_open``) is finished here. The open tree left."""
        allowed = [states[-1]] if op.elapsed is not None else states[op.done:op.done + 2]
        if keep_open and op.elapsed is None:  # the first write opened a commit, then died
            allowed.append(("open", states[op.done][1]))
        where = f"{self.where()} ({len(states) - 1} steps, {op.done} returned)"
        t = time.monotonic()
        with self.d.client() as c:
            branch = next(b for b in c.list_branches(h.name) if b.name == "master")
            commits = [x.id for x in c.list_commits(h.name) if x.finished is not None]
            moved = branch.head != h.head
            assert not (moved and branch.open), f"{where}: a new head and an open commit"
            kind = "finished" if moved else "open" if branch.open else "none"
            seen = listing(c, f"{h.name}@{branch.head if moved else branch.open}") \
                if kind != "none" else {}
            match = [t for k, t in allowed if k == kind and (k == "none" or hashes(t) == seen)]
            assert match, (f"{where}: {h.name}@master is {kind} holding {sorted(seen)}; "
                           f"allowed: {[(k, sorted(t)) for k, t in allowed]}")
            assert len(commits) == len(h.order) + moved, f"{where}: {len(commits)} commits"
            opened: Tree | None = None
            if moved:
                assert branch.head is not None
                assert c.inspect_commit(f"{h.name}@{branch.head}").parent == h.head, where
                h.add(branch.head, match[0])
                self.outcomes["landed"] += 1
            else:
                self.outcomes["kept"] += 1
            if kind == "open":
                opened = match[0]
                if not keep_open:
                    h.add(c.finish_commit(f"{h.name}@master").id, opened)
                    opened = None
            if opened is not None:  # closed files read back whole from the open commit
                for path, data in opened.items():
                    if (self.m_open or {}).get(path) is not data:
                        assert c.read_file(f"{h.name}@{branch.open}:{path}") == data, (
                            f"{where}: {path} in the open commit")
            self.read_new(c, h)
            self.fsck(c)
        self.spent["settle"] += time.monotonic() - t
        return opened

    def read_new(self, c: Client, h: History) -> None:
        """Every commit finished since the last check: its listing, its new files' bytes."""
        for cid, changed in h.unread:
            assert listing(c, f"{h.name}@{cid}") == hashes(h.trees[cid]), (
                f"{self.where()}: commit {h.name}@{cid} lists other files")
            for path, data in changed.items():
                assert c.read_file(f"{h.name}@{cid}:{path}") == data, (
                    f"{self.where()}: {h.name}@{cid}:{path} reads other bytes")
        h.unread.clear()

    def fsck(self, c: Client) -> None:
        t = time.monotonic()
        report = c.fsck(verify=True)
        self.spent["fsck"] += time.monotonic() - t
        assert report.errors == [], f"{self.where()}: fsck --verify: {report.errors}"

    def histories(self) -> list[History]:
        return [self.k, self.m, self.jin, self.jout]

    def sample_check(self) -> None:
        """After a gc: the heads and three older commits, listings and every byte."""
        with self.d.client() as c:
            for h in self.histories():
                older = h.order[:-1]
                picks = h.order[-1:] + self.rng.sample(older, min(3, len(older)))
                for cid in picks:
                    tree = h.trees[cid]
                    assert listing(c, f"{h.name}@{cid}") == hashes(tree), (
                        f"{self.where()}: {h.name}@{cid} lists other files after gc")
                    path = self.rng.choice(sorted(tree)) if tree else None
                    if path is not None:
                        assert c.read_file(f"{h.name}@{cid}:{path}") == tree[path], (
                            f"{self.where()}: {h.name}@{cid}:{path} after gc")

    def full_check(self) -> None:
        """Every finished commit of every repo lists exactly its files, and every distinct
        content stored is read back once, byte for byte."""
        seen: set[bytes] = set()
        t = time.monotonic()
        with self.d.client(timeout=120) as c:
            for h in self.histories():
                for cid in h.order:
                    tree = h.trees[cid]
                    assert listing(c, f"{h.name}@{cid}") == hashes(tree), (
                        f"{self.where()}: {h.name}@{cid} lists other files")
                    for path, data in tree.items():
                        digest = blake3.blake3(data).digest()
                        if digest not in seen:
                            seen.add(digest)
                            assert c.read_file(f"{h.name}@{cid}:{path}") == data, (
                                f"{self.where()}: {h.name}@{cid}:{path} reads other bytes")
            self.fsck(c)
        self.spent["full checks"] += time.monotonic() - t


@pytest.mark.timeout(max(300, KILLS * 4))
def test_sigkill_loops_lose_no_finished_commit(tmp_path: Path) -> None:
    require_fuse("CI must run the kill loops with a mount", "pyfuse3")
    print(f"\nkill loops: seed {SEED} (PFSMOUNT_KILL_SEED={SEED} replays it), {KILLS} kills")
    started = time.monotonic()
    stop = threading.Event()
    lanes = [Lane(i, SEED + i, KILLS // LANES + (i < KILLS % LANES), tmp_path / f"lane{i}",
                  stop) for i in range(LANES)]
    for lane in lanes:
        lane.scratch.mkdir()
    with ThreadPoolExecutor(LANES) as pool:
        done = [f.result() for f in [pool.submit(lane.run) for lane in lanes]]
    kinds = sum(done, Counter[str]())
    outcomes = sum((lane.outcomes for lane in lanes), Counter[str]())
    elapsed = time.monotonic() - started
    spent: dict[str, float] = defaultdict(float)
    for lane in lanes:
        for what, seconds in lane.spent.items():
            spent[what] += seconds
    print(f"{sum(kinds.values())} SIGKILLs survived in {elapsed:.0f} s: {dict(kinds)} "
          f"{dict(outcomes)}")
    print(f"seconds over {LANES} lanes: " + ", ".join(f"{k} {v:.0f}" for k, v in spent.items()))
    print("windows (s): " + ", ".join(f"{k} {v:.3f}" for k, v in lanes[0].window.items()))
    assert sum(kinds.values()) == KILLS
    # The kills must land inside operations, not only after them, or this tests nothing.
    assert outcomes["in flight"] > KILLS // 2, outcomes
    assert outcomes["landed"] and outcomes["kept"], outcomes


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-x", "-q", "-s"])
