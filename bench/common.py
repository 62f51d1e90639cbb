"""Shared plumbing for the benchmarks in bench/: options, work dir, cache drops, timing,
medians, a pfsmount daemon per store root, an optional py-spy profile, and the result table.

Benchmarks are not tests: they print a table of medians and ratios against a baseline that
was measured in the same run, on the same disk. Nothing here imports pfsmount at module
level, so a broken product import shows up as a clear failure in the benchmark itself.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
CLI = REPO / "cli.py"
PEERS = Path(os.environ.get("PFSBENCH_PEERS", "/tmp/peers"))  # venv with dvc and oxenai
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
notes: list[str] = []  # printed under the table: cache-drop failures, skipped tools ...


def cpu_busy(seconds: float = 1.0) -> float:
    """Percent of all CPUs busy over a short sample (others' work, when we are idle)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 100.0 * (1 - (i1 - i0) / max(t1 - t0, 1))


BUSY_AT_START = cpu_busy()


# -- options and work dir --------------------------------------------------------------------


def default_workdir() -> Path:
    """/tmp/pfsbench when /tmp is on the repo's filesystem, else bench/.work in the repo."""
    if os.stat("/tmp").st_dev == os.stat(REPO).st_dev:
        return Path("/tmp/pfsbench")
    return REPO / "bench" / ".work"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="small data and one run: a smoke run")
    p.add_argument("--runs", type=int, default=None, help="timed runs per row (default 3)")
    p.add_argument("--workdir", type=Path, default=None,
                   help=f"where data and stores go (default {default_workdir()}); must be "
                        "on the disk you want to measure")
    p.add_argument("--profile", action="store_true",
                   help="attach py-spy to the daemon during the pfsmount rows and print its "
                        "top functions")
    p.add_argument("--keep", action="store_true", help="keep generated stores afterwards")
    return p


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    args.workdir = (args.workdir or default_workdir()).absolute()
    args.workdir.mkdir(parents=True, exist_ok=True)
    # Commands we time should start as they do for a user, from cached bytecode. With
    # PYTHONDONTWRITEBYTECODE set (as in some dev shells) every CLI run would compile
    # pfsmount from source (~0.3 s); the cache goes to the work dir, not the source tree.
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        notes.append("PYTHONDONTWRITEBYTECODE was set: unset for the timed commands, "
                     "bytecode cached under WORKDIR/pycache")
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(args.workdir / "pycache"))
    run([*pfs_cmd(), "--version"], check=False)  # warm the bytecode cache
    return args


def same_disk_note(workdir: Path) -> None:
    out = subprocess.run(["df", "-h", "--output=source,fstype,size,avail,target", str(workdir)],
                         capture_output=True, text=True).stdout.strip().splitlines()
    if len(out) > 1:
        notes.append(f"workdir {workdir} on {' '.join(out[1].split())}")


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


# -- caches and timing -----------------------------------------------------------------------

_drop_warned = False


def drop_caches() -> bool:
    """``sync; echo 3 > /proc/sys/vm/drop_caches``; records a note once if it is not allowed."""
    global _drop_warned
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        if not _drop_warned:
            notes.append(f"[red]could not drop caches ({e.strerror}): 'cold' rows ran warm[/]")
            _drop_warned = True
        return False


def run(cmd: Sequence[str] | str, *, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    shell = isinstance(cmd, str)
    proc = subprocess.run(cmd, shell=shell, cwd=cwd, env=env, text=True,
                          capture_output=quiet, executable="/bin/bash" if shell else None)
    if check and proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {cmd}\n"
                           f"{(proc.stderr or '')[-2000:]}")
    return proc


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def timed_cmd(cmd: Sequence[str] | str, **kw: Any) -> float:
    seconds, _ = timed(lambda: run(cmd, **kw))
    return seconds


# -- pfsmount --------------------------------------------------------------------------------


def pfs_cmd() -> list[str]:
    """How to run the CLI: the installed entry point if there is one, else cli.py."""
    entry = Path(sys.executable).parent / "pfsmount"
    if entry.exists():
        return [str(entry)]
    return [sys.executable, str(CLI)]


_no_mount: bool | None = None


def _has_no_mount() -> bool:
    global _no_mount
    if _no_mount is None:
        _no_mount = "--no-mount" in run([*pfs_cmd(), "up", "--help"]).stdout
    return _no_mount


class Daemon:
    """A pfsmount daemon serving one store root, started and stopped through the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pid: int | None = None

    def cli(self, *args: str) -> list[str]:
        return [*pfs_cmd(), "--root", str(self.root), *args]

    def pfs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(self.cli(*args), check=check)

    def up(self) -> Daemon:
        # The benchmarks measure the store, API and CLI, not FUSE: no mount, so that they
        # neither need /pfs nor collide with another daemon's mount.
        self.pfs("up", *(["--no-mount"] if _has_no_mount() else []))
        self.pid = int((self.root / "daemon.pid").read_text().strip())
        return self

    def down(self) -> None:
        if self.pid is not None:
            self.pfs("down", check=False)
            self.pid = None

    def restart(self) -> None:
        self.down()
        self.up()

    def client(self) -> Any:
        from pfsmount import Client

        return Client(self.root)

    def __enter__(self) -> Daemon:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def fresh_daemon(root: Path) -> Daemon:
    """A daemon over an empty store at ``root`` (any earlier store there is removed)."""
    d = Daemon(root)
    if (root / "daemon.pid").exists():
        run([*pfs_cmd(), "--root", str(root), "down"], check=False)
    if root.exists():
        shutil.rmtree(root)
    return d.up()


def store_bytes(root: Path) -> tuple[int, int]:
    """(pack bytes: packs/ + staging/, metadata bytes: meta/) of a store root."""
    store = root / "store"
    packs = dir_bytes(store / "packs") + dir_bytes(store / "staging")
    return packs, dir_bytes(store / "meta")


# -- profiling -------------------------------------------------------------------------------


@dataclass
class Profile:
    """Collapsed stacks from ``py-spy record --format raw``, reduced to top functions."""

    label: str
    stacks: collections.Counter[str] = field(default_factory=collections.Counter)

    def load(self, path: Path) -> None:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                self.stacks[stack] += int(count)

    def top(self, n: int = 15) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
        own: collections.Counter[str] = collections.Counter()
        total: collections.Counter[str] = collections.Counter()
        for stack, count in self.stacks.items():
            frames = [_short(f) for f in stack.split(";")]
            if frames:
                own[frames[-1]] += count
            for f in set(frames):
                total[f] += count
        return own.most_common(n), total.most_common(n), sum(self.stacks.values())

    def print(self, n: int = 15) -> None:
        own, total, samples = self.top(n)
        if not samples:
            console.print(f"[yellow]profile {self.label}: no samples[/]")
            return
        t = Table(title=f"py-spy: {self.label} ({samples} samples, all threads)",
                  title_justify="left")
        t.add_column("self %", justify="right")
        t.add_column("function (self time)")
        t.add_column("total %", justify="right")
        t.add_column("function (incl. callees)")
        for i in range(max(len(own), len(total))):
            a = own[i] if i < len(own) else ("", 0)
            b = total[i] if i < len(total) else ("", 0)
            t.add_row(f"{100 * a[1] / samples:.1f}" if a[0] else "", a[0],
                      f"{100 * b[1] / samples:.1f}" if b[0] else "", b[0])
        console.print(t)


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py:123)"; line numbers dropped for totals
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    tail = "/".join(Path(path).parts[-2:]) if path else where
    return f"{name} ({tail})"


def py_spy() -> Path | None:
    exe = Path(sys.executable).parent / "py-spy"
    if exe.exists():
        return exe
    found = shutil.which("py-spy")
    return Path(found) if found else None


@contextmanager
def profiled(pid: int | None, label: str, enabled: bool, rate: int = 250
             ) -> Iterator[Profile | None]:
    """Sample ``pid`` with py-spy (all threads, idle excluded) while the block runs."""
    exe = py_spy()
    if not enabled or pid is None:
        yield None
        return
    if exe is None:
        notes.append("--profile: py-spy not found (.venv/bin/pip install py-spy)")
        yield None
        return
    out = Path(f"/tmp/pfsbench-pyspy-{os.getpid()}-{time.monotonic_ns()}.txt")
    proc = subprocess.Popen([str(exe), "record", "-p", str(pid), "-r", str(rate), "-f", "raw",
                             "-o", str(out),
                             # native frames need the target paused at each sample
                             *(["--native"] if os.environ.get("PFSBENCH_NATIVE")
                               else ["--nonblocking"])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # let py-spy attach before the measured work starts
    prof = Profile(label)
    try:
        yield prof
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if out.exists():
            prof.load(out)
            out.unlink()
        else:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            notes.append(f"py-spy wrote nothing for {label}: {err.strip()[-300:]}")
        profiles.append(prof)


profiles: list[Profile] = []


# -- results ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured thing: its samples, and what it is compared against."""

    name: str
    samples: list[float]
    unit: str = "s"  # "s" (lower is better), "MB/s" or "x" (a plain value)
    baseline: str | None = None  # name of the row this one is compared with
    target: str = ""  # e.g. "<= 1.5x tar"
    check: Callable[[float], bool] | None = None  # judges the ratio (or the value: absolute)
    absolute: bool = False  # the target is on the value itself, not on the ratio
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")


class Results:
    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[Row] = []
        self.verdicts: list[tuple[str, bool]] = []

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def get(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)

    def ratio(self, row: Row) -> float | None:
        base = self.get(row.baseline) if row.baseline else None
        if base is None or not base.samples or not row.samples:
            return None
        if row.unit == "MB/s":  # throughput: how much of the baseline's speed
            return row.median / base.median
        return row.median / base.median if base.median else None

    def print(self, info: dict[str, str] | None = None) -> bool:
        notes.append(f"CPU busy (all {os.cpu_count()} CPUs, 1 s sample) before the benchmark "
                     f"{BUSY_AT_START:.0f}%, after it {cpu_busy():.0f}%: other work on the "
                     "machine skews the times")
        t = Table(title=self.title, title_justify="left")
        t.add_column("what")
        t.add_column("median", justify="right")
        t.add_column("runs", justify="right", style="dim")
        t.add_column("vs", style="dim")
        t.add_column("ratio", justify="right")
        t.add_column("target")
        t.add_column("met")
        t.add_column("note", style="dim")
        ok_all = True
        for r in self.rows:
            ratio = self.ratio(r)
            judged = ratio if r.baseline and not r.absolute else r.median
            met = ""
            if r.check is not None and judged is not None and r.samples:
                ok = r.check(judged)
                ok_all &= ok
                self.verdicts.append((f"{r.name}: {r.target}", ok))
                met = "[green]yes[/]" if ok else "[red]NO[/]"
            t.add_row(r.name, fmt(r.median, r.unit) if r.samples else "skipped",
                      " ".join(fmt(s, r.unit, short=True) for s in r.samples),
                      r.baseline or "", f"{ratio:.2f}x" if ratio is not None else "",
                      r.target, met, r.note)
        console.print(t)
        for key, value in (info or {}).items():
            console.print(f"  {key}: {value}")
        for n in notes:
            console.print(f"  note: {n}")
        for p in profiles:
            p.print()
        return ok_all


def fmt(value: float, unit: str, short: bool = False) -> str:
    if unit == "s":
        if value < 1:
            return f"{value * 1000:.1f} ms" if not short else f"{value * 1000:.0f}ms"
        return f"{value:.2f} s" if not short else f"{value:.1f}s"
    if unit == "MB/s":
        return f"{value:,.0f} MB/s" if not short else f"{value:,.0f}"
    if unit == "x":
        return f"{value:.3f}x" if not short else f"{value:.2f}"
    return f"{value:g} {unit}"


def peer_python() -> Path | None:
    """The python of the peers venv (dvc, oxenai), or None with a note on how to make it."""
    exe = PEERS / "bin" / "python"
    if exe.exists():
        return exe
    notes.append(f"peers venv {PEERS} missing: python3 -m venv {PEERS} && "
                 f"{PEERS}/bin/pip install dvc oxenai  (or set PFSBENCH_PEERS)")
    return None


def mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"
