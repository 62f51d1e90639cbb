"""A big repo: one-file commits, listing a huge directory, and diff, at 1,000,000 files.

The repo holds 1,000,000 tiny unique files (--quick: 100,000): a quarter of them in one
directory ``big/`` and the rest in directories of 1,000 (``dNNN/``). It is built once per
invocation with one ``file put -r`` (build time shown for information; with --reuse and
--keep an earlier build is used again). Then, median of --runs, the daemon restarted and
the page cache dropped before each run:

- list ``big/`` through the API (``Client.list_files``): time to the first entry (cold,
  then warm) and to the last. Target: first entry < 100 ms.
  Baseline: ``os.scandir`` of the same directory on disk (cold, then warm).
- a commit that changes one file in ``big/``: ``Client.put_file`` in this process (target
  < 100 ms) and the ``pfsmount file put`` command (wall time, CLI start-up included).
  Baselines: the same put into a repo holding one file (same daemon), and
  ``git add FILE && git commit`` in a git repo of the same files: the first git command
  after the cache drop (git refreshes its 1M-entry index), then once more, warm.
- ``file diff`` of that commit against its parent: ``Client.diff_files`` and the CLI.
  Baseline: ``git diff --name-status HEAD~1 HEAD``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@example.com",
           # no background "git gc --auto" after the commit: it would run on into the next rows
           "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "gc.auto", "GIT_CONFIG_VALUE_0": "0"}


def make_data(src: Path, total: int) -> tuple[Path, int]:
    """``src/files/big/`` with total/4 files, the rest in dirs of 1,000; tiny unique files."""
    files = src / "files"
    big_count = total // 4
    marker = src / f".complete-{total}"
    if marker.exists():
        return files, big_count
    c.console.print(f"generating {total:,} tiny files under {files} "
                    f"({big_count:,} in one directory)")
    c.fresh_dir(src)
    big = files / "big"
    big.mkdir(parents=True)
    n = 0
    for i in range(big_count):
        with open(big / f"f{i:07d}.txt", "w") as f:
            f.write(f"big {i}\n")
        n += 1
    d = 0
    while n < total:
        sub = files / f"d{d:03d}"
        sub.mkdir()
        for i in range(min(1000, total - n)):
            with open(sub / f"f{i:04d}.txt", "w") as f:
                f.write(f"d{d} {i}\n")
            n += 1
        d += 1
    marker.touch()
    return files, big_count


def first_and_all(items: Any) -> tuple[float, float, int]:
    """Seconds to the first item, seconds to the last, and the count."""
    t0 = time.perf_counter()
    it = iter(items)
    first = next(it, None)
    t1 = time.perf_counter()
    count = (first is not None) + sum(1 for _ in it)
    return t1 - t0, time.perf_counter() - t0, count


def scandir_list(path: Path) -> tuple[float, float, int]:
    with os.scandir(path) as it:
        return first_and_all(e.name for e in it)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=None, help="total files (default 1000000)")
    p.add_argument("--no-git", action="store_true", help="skip the git baselines")
    p.add_argument("--reuse", action="store_true",
                   help="reuse a store (and git repo) left by an earlier --keep run")
    args = c.finish_args(p.parse_args())
    total = args.files or (100_000 if args.quick else 1_000_000)
    base = args.workdir / "bigrepo"
    src = base / f"src-{total}"
    files, big_count = make_data(src, total)
    big_dir = files / "big"
    c.same_disk_note(args.workdir)
    root = base / f"pfsroot-{total}"
    built = root / ".built"
    git_env = dict(os.environ, **GIT_ENV)
    use_git = not args.no_git
    info: dict[str, str] = {}
    res = c.Results(f"repo of {total:,} files ({big_count:,} in big/), median of {args.runs}; "
                    "daemon restarted and page cache dropped before each run")

    # -- build (once) -----------------------------------------------------------------------
    if args.reuse and built.exists():
        daemon = c.Daemon(root).up()
        info["build"] = "reused an earlier store"
    else:
        daemon = c.fresh_daemon(root)
        daemon.pfs("create-repo", "data")
        daemon.pfs("create-repo", "tiny")
        daemon.pfs("file", "put", "tiny@master:/one.txt", str(big_dir / "f0000000.txt"))
        c.drop_caches()
        c.console.print(f"building: file put -r of {total:,} files")
        with c.profiled(daemon.pid, f"daemon during the build (put -r of {total:,} files)",
                        args.profile):
            seconds = c.timed_cmd(daemon.cli("file", "put", "data@master:/", "-r", str(files)))
        info["build: pfsmount put -r (1 commit), cold"] = c.fmt(seconds, "s")
        built.touch()
    git_built = (src / ".git").exists() and args.reuse
    if use_git and not git_built:
        shutil.rmtree(src / ".git", ignore_errors=True)
        c.drop_caches()
        c.console.print(f"building: git add -A + commit of {total:,} files")
        seconds = c.timed_cmd("git init -q && git add -A && git commit -q -m base",
                              cwd=src, env=git_env)
        info["build: git init+add -A+commit, cold"] = c.fmt(seconds, "s")
    packs, lmdb_bytes = c.store_bytes(root)
    info["store after build"] = f"packs {c.mib(packs)}, LMDB {c.mib(lmdb_bytes)}"

    one = c.fresh_dir(base / "one")
    m: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        m.setdefault(key, []).append(value)

    listed = 0
    try:
        for n in range(args.runs):
            c.console.print(f"run {n + 1}/{args.runs}")
            daemon.restart()
            c.drop_caches()
            with daemon.client() as api:
                first, full, listed = first_and_all(api.list_files("data@master:/big"))
                add("list first cold", first)
                add("list all cold", full)
                first, full, _ = first_and_all(api.list_files("data@master:/big"))
                add("list first warm", first)
                add("list all warm", full)

                f = one / f"new-{n}.txt"
                f.write_text(f"new file {n} {os.urandom(8).hex()}\n")
                add("put api", c.timed(
                    lambda f=f: api.put_file(f"data@master:/big/{f.name}", f))[0])
                add("put api tiny", c.timed(
                    lambda f=f: api.put_file(f"tiny@master:/{f.name}", f))[0])

                g = one / f"cli-{n}.txt"
                g.write_text(f"cli file {n} {os.urandom(8).hex()}\n")
                seconds, out = c.timed(lambda g=g: daemon.pfs(
                    "file", "put", f"data@master:/big/{g.name}", str(g)))
                add("put cli", seconds)
                commit = out.stdout.strip()
                add("put cli tiny", c.timed_cmd(daemon.cli(
                    "file", "put", f"tiny@master:/{g.name}", str(g))))

                seconds, diff = c.timed(lambda commit=commit: api.diff_files(commit))
                add("diff api", seconds)
                assert [d.path for d in diff] == [f"/big/{g.name}"], diff
                seconds, out = c.timed(lambda commit=commit: daemon.pfs("file", "diff", commit))
                add("diff cli", seconds)
                assert g.name in out.stdout, out.stdout

            c.drop_caches()
            first, full, _ = scandir_list(big_dir)
            add("scandir first cold", first)
            add("scandir all cold", full)
            first, full, _ = scandir_list(big_dir)
            add("scandir first warm", first)
            add("scandir all warm", full)

            if use_git:
                h = big_dir / f"git-{n}.txt"
                h.write_text(f"git file {n} {os.urandom(8).hex()}\n")
                add("git commit", c.timed_cmd(
                    f"git add 'files/big/{h.name}' && git commit -q -m one", cwd=src,
                    env=git_env))
                add("git diff", c.timed_cmd("git diff --name-status HEAD~1 HEAD", cwd=src,
                                            env=git_env))
                h2 = big_dir / f"git-{n}-warm.txt"
                h2.write_text(f"git file {n} {os.urandom(8).hex()}\n")
                add("git commit warm", c.timed_cmd(
                    f"git add 'files/big/{h2.name}' && git commit -q -m two", cwd=src,
                    env=git_env))

        if listed < big_count:
            raise RuntimeError(f"listed {listed:,} entries in big/, built with {big_count:,}")

        if args.profile:
            with daemon.client() as api:
                with c.profiled(daemon.pid, "daemon during 20 one-file API puts into big/",
                                True):
                    for i in range(20):
                        f = one / f"prof-{i}.txt"
                        f.write_text(f"prof {i} {os.urandom(8).hex()}\n")
                        api.put_file(f"data@master:/big/{f.name}", f)
                with c.profiled(daemon.pid, "daemon during 20 list(big/) first entries", True):
                    for _ in range(20):
                        first_and_all(api.list_files("data@master:/big", limit=1))
    finally:
        daemon.down()
        if use_git:
            for h in big_dir.glob("git-*.txt"):
                h.unlink()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(src / ".git", ignore_errors=True)

    def ms100(v: float) -> bool:
        return v < 0.1

    ms = {"target": "< 100 ms", "check": ms100, "absolute": True}
    res.add(c.Row("scandir big/ first, cold", m["scandir first cold"], note="baseline"))
    res.add(c.Row("API list big/ first, cold", m["list first cold"],
                  baseline="scandir big/ first, cold", **ms))
    res.add(c.Row("scandir big/ first, warm", m["scandir first warm"], note="baseline"))
    res.add(c.Row("API list big/ first, warm", m["list first warm"],
                  baseline="scandir big/ first, warm", **ms))
    res.add(c.Row("scandir big/ all, cold", m["scandir all cold"], note="baseline"))
    res.add(c.Row("API list big/ all, cold", m["list all cold"],
                  baseline="scandir big/ all, cold", note=f"info: {listed:,} entries"))
    res.add(c.Row("scandir big/ all, warm", m["scandir all warm"], note="baseline"))
    res.add(c.Row("API list big/ all, warm", m["list all warm"],
                  baseline="scandir big/ all, warm", note="info"))
    res.add(c.Row("API put 1 file, 1-file repo", m["put api tiny"], note="baseline"))
    res.add(c.Row("API put 1 file into big/", m["put api"],
                  baseline="API put 1 file, 1-file repo", **ms,
                  note="Client.put_file, 1 commit"))
    res.add(c.Row("CLI put 1 file, 1-file repo", m["put cli tiny"], note="baseline"))
    if use_git:
        res.add(c.Row("git add+commit 1 file", m["git commit"],
                      note="baseline; first git command after the cache drop"))
        res.add(c.Row("git add+commit 1 file, again", m["git commit warm"],
                      note="baseline; right after the first (warm)"))
    res.add(c.Row("CLI put 1 file into big/", m["put cli"],
                  baseline="git add+commit 1 file, again" if use_git else
                  "CLI put 1 file, 1-file repo",
                  note="wall time incl. CLI start-up"))
    res.add(c.Row("API diff vs parent", m["diff api"],
                  baseline="git diff HEAD~1 HEAD" if use_git else None, note="1 file changed"))
    if use_git:
        res.add(c.Row("git diff HEAD~1 HEAD", m["git diff"], note="baseline"))
    res.add(c.Row("CLI file diff vs parent", m["diff cli"],
                  baseline="git diff HEAD~1 HEAD" if use_git else None,
                  note="wall time incl. CLI start-up"))
    startup = statistics.median(c.timed_cmd([*c.pfs_cmd(), "--version"]) for _ in range(3))
    info["pfsmount CLI start-up (--version)"] = c.fmt(startup, "s")
    res.print(info)


if __name__ == "__main__":
    main()
