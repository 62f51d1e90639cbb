"""The FUSE mount: what ``cat``, ``dd``, ``cp -r``, ``ls -l`` and ``find`` cost through it.

Each pfsmount row uses a daemon started with ``pfsmount up --mount M`` (not timed) and the
same command run against the same data on the local disk as its baseline, measured in the
same run. Sizes are for the default run; --quick in brackets.

1. Sequential read of one 1 GiB [256 MiB] random file from a finished commit
   (``/M/data/<commit-id>/big.bin``) with ``cat FILE >/dev/null``: cold (daemon restarted,
   page cache dropped) and warm (the file read once before). Baseline: ``cat`` of the source
   file on disk, cold and warm. Targets: >= 0.5x cold, >= 0.6x warm (throughput).
2. Sequential write of the same file into a branch: ``dd bs=1M of=/M/w/master/big.bin``
   plus ``pfsmount commit finish w/master`` (CLI), into a fresh store each run (a second
   write of the same bytes would only be deduplicated). The source is in the page cache.
   Baseline: ``dd bs=1M conv=fsync`` to the disk. Target: >= 0.35x.
3. ``cp -r`` of 10,000 random 4 KiB files in 100 dirs into a branch plus ``commit finish``
   (fresh store each run, source in the page cache); baseline ``cp -r`` to the disk. Target
   <= 3x native time. Then ``cat`` of all of them (``cat DIR/*/* >/dev/null``) from the
   branch after a daemon restart and a cache drop, vs the same on the source dir, cold.
   Target >= 0.6x (throughput). The same cp and cat against ``bench/floorfs.py``, a
   do-nothing in-memory pyfuse3 filesystem, show the floor that pyfuse3's round trips set.
4. One directory of 100,000 [20,000] one-line files, put with one ``file put -r``:
   ``ls -l /M/many/<commit-id>/flat >/dev/null`` cold (restart + drop) and warm, target
   < 2 s; ``find /M/many/master -type f | wc -l`` (the repo holds just those files) cold and
   warm, target < 5 s. Baselines: the same commands on the generated dir, for context.
5. Concurrent readers, cold: 4 ``cat`` processes in parallel, each reading a *different*
   256 MiB [64 MiB] random file of one commit, vs 1 ``cat`` of one of them. Aggregate
   throughput (bytes read / wall time). Target: 4 readers >= 1.0x of 1 reader. The same on
   the disk for context.

Every "cold" pfsmount row restarts the daemon (its caches empty too) and then drops the
page cache; the restart is not timed. After each workload the mount and the daemon must
still be alive, or the benchmark fails.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c

BLOCK = 1 << 20
SMALL_FILES, SMALL_DIRS, SMALL_SIZE = 10_000, 100, 4096
READERS = 4
readahead_seen: set[str] = set()  # read_ahead_kb of the mount after each ``up``


# -- a daemon with a mount -------------------------------------------------------------------


def _mountinfo(mountpoint: Path) -> list[str] | None:
    """Our line of /proc/self/mountinfo, split; also finds a dead FUSE mount, which
    ``os.path.ismount`` cannot see (stat fails with ENOTCONN)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        if len(parts) > 4 and parts[4] == str(mountpoint):
            return parts
    return None


def is_mounted(mountpoint: Path) -> bool:
    return _mountinfo(mountpoint) is not None


def unmount(mountpoint: Path) -> None:
    if is_mounted(mountpoint):
        c.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def readahead_kb(mountpoint: Path) -> str:
    """The mount's read_ahead_kb (pfsmount raises it to 1024 just after mounting)."""
    parts = _mountinfo(mountpoint)
    if parts is None:
        return "not mounted"
    try:
        return Path(f"/sys/class/bdi/{parts[2]}/read_ahead_kb").read_text().strip()
    except OSError:
        return "?"


class MountedDaemon(c.Daemon):
    """``common.Daemon`` with a FUSE mount at ``mountpoint`` (``up --mount``)."""

    def __init__(self, root: Path, mountpoint: Path) -> None:
        super().__init__(root)
        self.mountpoint = mountpoint

    def up(self) -> MountedDaemon:
        self.pfs("up", "--mount", str(self.mountpoint))
        self.pid = int((self.root / "daemon.pid").read_text().strip())
        # The daemon raises the readahead ~0.5 s after the kernel's INIT; wait for it, so
        # the first cold read of a run does not go out with 128 KiB requests.
        deadline = time.monotonic() + 3
        while readahead_kb(self.mountpoint) != "1024" and time.monotonic() < deadline:
            time.sleep(0.1)
        readahead_seen.add(readahead_kb(self.mountpoint))
        return self

    def down(self) -> None:
        super().down()  # `pfsmount down` SIGKILLs a daemon that will not stop in 30 s
        if is_mounted(self.mountpoint):
            c.notes.append(f"[red]{self.mountpoint} still mounted after down: "
                           "fusermount3 -u -z[/]")
            unmount(self.mountpoint)

    def check(self, what: str) -> None:
        """The mount and the daemon survived ``what`` (pyfuse3 dies on a stray exception)."""
        alive = self.pid is not None and os.path.exists(f"/proc/{self.pid}")
        if not alive or not os.path.ismount(self.mountpoint):
            raise RuntimeError(f"after {what}: daemon alive={alive}, "
                               f"mounted={os.path.ismount(self.mountpoint)}; see "
                               f"{self.root}/daemon.log")

    def cold(self) -> None:
        """Restart the daemon and drop the page cache: nothing of the data is cached."""
        self.restart()
        c.drop_caches()


def fresh_mounted(root: Path, mountpoint: Path) -> MountedDaemon:
    if (root / "daemon.pid").exists():
        c.run([*c.pfs_cmd(), "--root", str(root), "down"], check=False)
    unmount(mountpoint)
    if root.exists():
        shutil.rmtree(root)
    mountpoint.mkdir(parents=True, exist_ok=True)
    return MountedDaemon(root, mountpoint).up()


@contextlib.contextmanager
def floor_mounted(mountpoint: Path) -> Iterator[Path]:
    """``floorfs.py`` (a do-nothing in-memory pyfuse3 filesystem) mounted at ``mountpoint``."""
    unmount(mountpoint)
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("floorfs.py")),
                             str(mountpoint)])
    try:
        deadline = time.monotonic() + 10
        while not is_mounted(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"floorfs did not mount at {mountpoint}")
            time.sleep(0.05)
        yield mountpoint
    finally:
        unmount(mountpoint)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def commit_of(daemon: MountedDaemon, ref: str) -> str:
    import json

    return str(json.loads(daemon.pfs("commit", "inspect", ref, "--json").stdout)["id"])


# -- data ------------------------------------------------------------------------------------


def make_random(path: Path, size: int) -> Path:
    if path.exists() and path.stat().st_size == size:
        return path
    c.console.print(f"generating {c.mib(size)} of random bytes at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for _ in range(size // BLOCK):
            f.write(os.urandom(BLOCK))
    return path


def make_small(src: Path) -> Path:
    marker = src / f".complete-{SMALL_FILES}"
    if marker.exists():
        return src / "files"
    c.console.print(f"generating {SMALL_FILES:,} random files of {SMALL_SIZE} B in "
                    f"{SMALL_DIRS} dirs under {src}")
    c.fresh_dir(src)
    for d in range(SMALL_DIRS):
        sub = src / "files" / f"d{d:02d}"
        sub.mkdir(parents=True)
        for i in range(SMALL_FILES // SMALL_DIRS):
            (sub / f"f{i:03d}.bin").write_bytes(os.urandom(SMALL_SIZE))
    marker.touch()
    return src / "files"


def make_flat(src: Path, count: int) -> Path:
    marker = src / f".complete-{count}"
    if marker.exists():
        return src / "flat"
    c.console.print(f"generating {count:,} one-line files in one directory under {src}")
    c.fresh_dir(src)
    flat = src / "flat"
    flat.mkdir()
    for i in range(count):
        with open(flat / f"f{i:06d}.txt", "w") as f:
            f.write(f"line {i}\n")
    marker.touch()
    return flat


def sh(cmd: str) -> float:
    """Wall time of a shell command (output to /dev/null inside ``cmd``)."""
    return c.timed_cmd(cmd)


def q(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--only", default="read,write,small,list,readers",
                   help="comma-separated sections to run (default all)")
    args = c.finish_args(p.parse_args())
    only = set(args.only.split(","))
    big_size = (256 if args.quick else 1024) << 20
    par_size = (64 if args.quick else 256) << 20
    flat_count = 20_000 if args.quick else 100_000
    base = args.workdir / "mount"
    base.mkdir(parents=True, exist_ok=True)
    mnt = base / "m"
    c.same_disk_note(args.workdir)
    prof = args.profile

    big = make_random(base / "data" / f"big-{big_size >> 20}M.bin", big_size)
    pars = [make_random(base / "data" / f"par-{par_size >> 20}M-{i}.bin", par_size)
            for i in range(READERS)] if "readers" in only else []
    small = make_small(base / "data" / "small") if "small" in only else None
    flat = make_flat(base / "data" / f"flat-{flat_count}", flat_count) if "list" in only else None
    scratch = base / "scratch"

    samples: dict[str, list[float]] = {}
    info: dict[str, str] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    def mbs(size: int, seconds: float) -> float:
        return size / seconds / 1e6

    # ---- read store: big file, readers' files, the flat dir, built once -------------------
    read_root = base / "root-read"
    daemon: MountedDaemon | None = None
    try:
        if only & {"read", "list", "readers"}:
            daemon = fresh_mounted(read_root, mnt)
            daemon.pfs("create-repo", "data")
            t, _ = c.timed(functools.partial(daemon.pfs, "file", "put", "data@master:/big.bin",
                                             str(big)))
            info["build: file put big.bin"] = f"{t:.1f} s"
            big_commit = commit_of(daemon, "data@master")
            if pars:
                staging = c.fresh_dir(scratch / "par")
                for i, f in enumerate(pars):
                    os.link(f, staging / f"r{i}.bin")
                daemon.pfs("file", "put", "-r", "data@master:/par", str(staging))
                shutil.rmtree(staging)
            if flat is not None:
                daemon.pfs("create-repo", "many")
                t, _ = c.timed(functools.partial(daemon.pfs, "file", "put", "-r",
                                                 "many@master:/flat", str(flat)))
                info[f"build: file put -r of {flat_count:,} files"] = f"{t:.1f} s"
            many_commit = commit_of(daemon, "many@master") if flat is not None else ""
            data_commit = commit_of(daemon, "data@master")
            mbig = mnt / "data" / big_commit / "big.bin"
            mpars = [mnt / "data" / data_commit / "par" / f"r{i}.bin" for i in range(READERS)]

            for n in range(args.runs):
                c.console.print(f"run {n + 1}/{args.runs}: reads")
                first = n == 0 and prof
                if "read" in only:
                    c.drop_caches()
                    add("cat native cold", mbs(big_size, sh(f"cat {q(big)} >/dev/null")))
                    add("cat native warm", mbs(big_size, sh(f"cat {q(big)} >/dev/null")))
                    daemon.cold()
                    with c.profiled(daemon.pid, "daemon: cold cat of the big file", first):
                        add("cat pfs cold", mbs(big_size, sh(f"cat {q(mbig)} >/dev/null")))
                    sh(f"cat {q(mbig)} >/dev/null")
                    with c.profiled(daemon.pid, "daemon: warm cat of the big file", first):
                        add("cat pfs warm", mbs(big_size, sh(f"cat {q(mbig)} >/dev/null")))
                    daemon.check("cat of the big file")
                    if n == 0:
                        c.run(["cmp", str(big), str(mbig)])
                if "readers" in only:
                    total = READERS * par_size
                    c.drop_caches()
                    add("1 reader native", mbs(par_size, sh(f"cat {q(pars[0])} >/dev/null")))
                    c.drop_caches()
                    add("4 readers native", mbs(total, sh(
                        " ".join(f"cat {q(f)} >/dev/null &" for f in pars) + " wait")))
                    daemon.cold()
                    with c.profiled(daemon.pid, "daemon: 1 cold reader", first):
                        add("1 reader pfs", mbs(par_size, sh(f"cat {q(mpars[0])} >/dev/null")))
                    daemon.cold()
                    with c.profiled(daemon.pid, "daemon: 4 cold readers", first):
                        add("4 readers pfs", mbs(total, sh(
                            " ".join(f"cat {q(f)} >/dev/null &" for f in mpars) + " wait")))
                    daemon.check("concurrent readers")
                    if n == 0:
                        for m in mpars:
                            if m.stat().st_size != par_size:
                                raise RuntimeError(f"{m} has {m.stat().st_size} bytes")
                if flat is not None:
                    mflat = mnt / "many" / many_commit / "flat"
                    c.drop_caches()
                    add("ls -l native cold", sh(f"ls -l {q(flat)} >/dev/null"))
                    add("ls -l native warm", sh(f"ls -l {q(flat)} >/dev/null"))
                    c.drop_caches()
                    add("find native cold", sh(f"find {q(flat)} -type f | wc -l >/dev/null"))
                    add("find native warm", sh(f"find {q(flat)} -type f | wc -l >/dev/null"))
                    daemon.cold()
                    with c.profiled(daemon.pid, "daemon: cold ls -l", first):
                        add("ls -l pfs cold", sh(f"ls -l {q(mflat)} >/dev/null"))
                    with c.profiled(daemon.pid, "daemon: warm ls -l", first):
                        add("ls -l pfs warm", sh(f"ls -l {q(mflat)} >/dev/null"))
                    daemon.check("ls -l")
                    if n == 0:
                        listed = c.run(f"ls -l {q(mflat)} | wc -l").stdout.strip()
                        if int(listed) != flat_count + 1:  # + the "total" line
                            raise RuntimeError(f"ls -l listed {listed} lines, not "
                                               f"{flat_count + 1}")
                    daemon.cold()
                    mmaster = mnt / "many" / "master"
                    with c.profiled(daemon.pid, "daemon: cold find", first):
                        t, out = c.timed(functools.partial(
                            c.run, f"find {q(mmaster)} -type f | wc -l"))
                    add("find pfs cold", t)
                    add("find pfs warm", sh(f"find {q(mmaster)} -type f | wc -l >/dev/null"))
                    if int(out.stdout.strip()) != flat_count:
                        raise RuntimeError(f"find counted {out.stdout.strip()} files, not "
                                           f"{flat_count}")
                    daemon.check("find")
            daemon.down()
            daemon = None
            if not args.keep:
                shutil.rmtree(read_root, ignore_errors=True)

        # ---- write store: fresh per run ---------------------------------------------------
        write_root = base / "root-write"
        for n in range(args.runs if only & {"write", "small"} else 0):
            c.console.print(f"run {n + 1}/{args.runs}: writes")
            first = n == 0 and prof
            if "write" in only:
                dst = c.fresh_dir(scratch / "w") / "big.bin"
                sh(f"cat {q(big)} >/dev/null")  # the source in the page cache, both sides
                os.sync()
                add("dd native", mbs(big_size, sh(
                    f"dd if={q(big)} of={q(dst)} bs=1M conv=fsync status=none")))
                dst.unlink()
                daemon = fresh_mounted(write_root, mnt)
                daemon.pfs("create-repo", "w")
                sh(f"cat {q(big)} >/dev/null")
                os.sync()
                with c.profiled(daemon.pid, "daemon: dd into the branch + commit finish", first):
                    t_dd = sh(f"dd if={q(big)} of={q(mnt / 'w' / 'master' / 'big.bin')} "
                              "bs=1M status=none")
                    t_fin, fin = c.timed(functools.partial(daemon.pfs, "commit", "finish",
                                                            "w/master"))
                daemon.check("dd into the branch")
                add("dd pfs", mbs(big_size, t_dd + t_fin))
                add("dd pfs (dd only)", mbs(big_size, t_dd))
                add("dd pfs (finish only)", t_fin)
                if n == 0:
                    cid = fin.stdout.strip().split()[-1]
                    c.run(["cmp", str(big), str(mnt / "w" / cid / "big.bin")])
                daemon.down()
                daemon = None
            if small is not None:
                dst = c.fresh_dir(scratch / "cp")
                sh(f"tar cf - -C {q(small)} . | cat >/dev/null")
                os.sync()
                add("cp -r native", sh(f"cp -r {q(small)} {q(dst / 'small')}"))
                shutil.rmtree(dst)
                dst = c.fresh_dir(scratch / "cp")
                os.sync()
                add("cp -r native + sync", sh(f"cp -r {q(small)} {q(dst / 'small')} && sync"))
                shutil.rmtree(dst)
                with floor_mounted(base / "floor") as floor:
                    t_floor = sh(f"cp -r {q(small)} {q(floor / 'small')}")
                    add("cp -r floor", t_floor)
                    c.drop_caches()
                    add("cat small floor cold",
                        mbs(SMALL_FILES * SMALL_SIZE, sh(f"cat {q(floor)}/small/*/* >/dev/null")))
                daemon = fresh_mounted(write_root, mnt)
                daemon.pfs("create-repo", "w")
                sh(f"tar cf - -C {q(small)} . | cat >/dev/null")
                os.sync()
                msmall = mnt / "w" / "master" / "small"
                with c.profiled(daemon.pid, "daemon: cp -r of small files + commit finish",
                                first):
                    t_cp = sh(f"cp -r {q(small)} {q(msmall)}")
                    t_fin, _ = c.timed(functools.partial(daemon.pfs, "commit", "finish",
                                                          "w/master"))
                daemon.check("cp -r into the branch")
                add("cp -r pfs", t_cp + t_fin)
                add("cp -r pfs (cp only)", t_cp)
                add("cp -r pfs (cp only) vs floor", t_cp)
                add("cp -r pfs (finish only)", t_fin)
                total = SMALL_FILES * SMALL_SIZE
                c.drop_caches()
                add("cat small native cold", mbs(total, sh(f"cat {q(small)}/*/* >/dev/null")))
                daemon.cold()
                with c.profiled(daemon.pid, "daemon: cold cat of the small files", first):
                    cold = mbs(total, sh(f"cat {q(msmall)}/*/* >/dev/null"))
                    add("cat small pfs cold", cold)
                    add("cat small pfs cold vs floor", cold)
                daemon.check("cat of the small files")
                if n == 0:
                    a = c.run(f"cat {q(small)}/*/* | md5sum").stdout
                    b = c.run(f"cat {q(msmall)}/*/* | md5sum").stdout
                    if a != b:
                        raise RuntimeError("the small files read back differ from the source")
                daemon.down()
                daemon = None
        if not args.keep:
            shutil.rmtree(write_root, ignore_errors=True)
    finally:
        if daemon is not None:
            daemon.down()
        shutil.rmtree(scratch, ignore_errors=True)

    # ---- the table ------------------------------------------------------------------------
    res = c.Results(f"the mount: medians of {args.runs} run(s); MB/s = 10^6 bytes/s, "
                    "ratios are of throughput (MB/s rows) or of time (s rows)")

    def row(key: str, unit: str = "s", **kw: object) -> None:
        if key in samples:
            res.add(c.Row(key, samples[key], unit=unit, **kw))  # type: ignore[arg-type]

    big_label = c.mib(big_size)
    row("cat native cold", "MB/s", note=f"baseline: cat of a {big_label} file on disk")
    row("cat pfs cold", "MB/s", baseline="cat native cold", target=">= 0.5x",
        check=lambda r: r >= 0.5, note="/M/data/<commit>/big.bin, daemon restarted")
    row("cat native warm", "MB/s", note="baseline")
    row("cat pfs warm", "MB/s", baseline="cat native warm", target=">= 0.6x",
        check=lambda r: r >= 0.6, note="second read, kernel page cache")
    row("dd native", "MB/s", note=f"baseline: dd bs=1M conv=fsync, {big_label}")
    row("dd pfs", "MB/s", baseline="dd native", target=">= 0.35x", check=lambda r: r >= 0.35,
        note="dd bs=1M into /M/w/master + commit finish (CLI)")
    row("dd pfs (dd only)", "MB/s", baseline="dd native", note="info: the dd alone")
    row("dd pfs (finish only)", note="info: commit finish (CLI, incl. ~0.3 s start-up)")
    row("cp -r native", note=f"baseline: {SMALL_FILES:,} x 4 KiB in {SMALL_DIRS} dirs")
    row("cp -r native + sync", baseline="cp -r native", note="info")
    row("cp -r pfs", baseline="cp -r native", target="<= 3x", check=lambda r: r <= 3,
        note="cp -r into /M/w/master + commit finish (CLI)")
    row("cp -r pfs (cp only)", baseline="cp -r native", note="info: the cp alone")
    row("cp -r pfs (finish only)", note="info: commit finish (CLI)")
    row("cp -r floor", baseline="cp -r native",
        note="info: the same cp into bench/floorfs.py, a do-nothing in-memory pyfuse3 fs")
    row("cp -r pfs (cp only) vs floor", baseline="cp -r floor",
        note="info: what pfsmount adds to pyfuse3's own cost")
    row("cat small native cold", "MB/s", note="baseline: cat DIR/*/* of the source")
    row("cat small pfs cold", "MB/s", baseline="cat small native cold", target=">= 0.6x",
        check=lambda r: r >= 0.6, note="from /M/w/master, daemon restarted")
    row("cat small floor cold", "MB/s", baseline="cat small native cold",
        note="info: from bench/floorfs.py (its data in memory), kernel cache dropped")
    row("cat small pfs cold vs floor", "MB/s", baseline="cat small floor cold", note="info")
    row("ls -l native cold", note=f"baseline: {flat_count:,} files in one dir")
    row("ls -l native warm", note="baseline")
    row("ls -l pfs cold", baseline="ls -l native cold", target="< 2 s", absolute=True,
        check=lambda v: v < 2, note="/M/many/<commit>/flat, daemon restarted")
    row("ls -l pfs warm", baseline="ls -l native warm", target="< 2 s", absolute=True,
        check=lambda v: v < 2)
    row("find native cold", note="baseline: find -type f | wc -l")
    row("find native warm", note="baseline")
    row("find pfs cold", baseline="find native cold", target="< 5 s", absolute=True,
        check=lambda v: v < 5, note="/M/many/master, daemon restarted")
    row("find pfs warm", baseline="find native warm", target="< 5 s", absolute=True,
        check=lambda v: v < 5)
    par_label = c.mib(par_size)
    row("1 reader native", "MB/s", note=f"baseline: cat of one {par_label} file, cold")
    row("4 readers native", "MB/s", baseline="1 reader native",
        note="info: 4 different files in parallel, aggregate")
    row("1 reader pfs", "MB/s", baseline="1 reader native", note="info: cold")
    row("4 readers pfs", "MB/s", baseline="1 reader pfs", target=">= 1.0x of 1 reader",
        check=lambda r: r >= 1.0, note="4 different files of one commit, aggregate, cold")
    info["mount read_ahead_kb after up"] = (", ".join(sorted(readahead_seen)) +
                                            " (pfsmount raises it to 1024; kernel default 128)")
    res.print(info)


if __name__ == "__main__":
    main()
