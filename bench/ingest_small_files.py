"""Ingest many small files: ``pfsmount file put -r`` vs reading them (tar), git, DVC and Oxen.

100,000 files of 4 KiB random bytes in 100 directories (--quick: 10,000). Every row starts
from a cold page cache. Baselines, all on the same disk:

- ``tar cf - files | cat >/dev/null``: the time just to read the files. (Piped through cat:
  GNU tar writing straight to /dev/null skips reading file data.)
- ``git init && git add -A && git commit -q -m x``
- ``dvc add files`` (after untimed ``git init`` + ``dvc init``)
- Oxen (PyPI ``oxenai`` has no CLI, only a Python API): ``Repo.add`` + ``Repo.commit``,
  timed inside its own process after an untimed ``Repo.init``.

pfsmount: one ``file put -r`` through the CLI, one commit, against a fresh store and an
already running daemon (startup not timed; CLI process start is included).
Targets: pfsmount <= 1.5x tar, and >= 2x faster than git.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c

FILE_SIZE = 4096
DIRS = 100

OXEN_INIT = """
import os, sys, oxen, oxen.user
oxen.user.config_user("bench", "bench@example.com")
oxen.Repo(sys.argv[1]).init()
"""
OXEN_TIMED = """
import sys, time, oxen
repo = oxen.Repo(sys.argv[1])
t = time.perf_counter()
repo.add(sys.argv[2])
repo.commit("x")
print(time.perf_counter() - t)
"""
TAR = "tar | cat (read)"
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@example.com",
           # no background "git gc --auto" after the commit: it would run on into the next rows
           "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "gc.auto", "GIT_CONFIG_VALUE_0": "0"}


def make_data(src: Path, count: int) -> Path:
    files = src / "files"
    marker = src / f".complete-{count}"
    if marker.exists():
        return files
    c.console.print(f"generating {count:,} files of {FILE_SIZE} B in {DIRS} dirs under {files}")
    c.fresh_dir(src)
    per_dir = count // DIRS
    for d in range(DIRS):
        sub = files / f"d{d:03d}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            with open(sub / f"f{i:05d}.bin", "wb") as f:
                f.write(os.urandom(FILE_SIZE))
    marker.touch()
    return files


def clean_peers(src: Path) -> None:
    for name in (".git", ".dvc", ".oxen"):
        shutil.rmtree(src / name, ignore_errors=True)
    for name in ("files.dvc", ".gitignore", ".dvcignore"):
        (src / name).unlink(missing_ok=True)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=None, help="number of files (default 100000)")
    p.add_argument("--pfs-only", action="store_true",
                   help="only tar and pfsmount (e.g. with --profile)")
    args = c.finish_args(p.parse_args())
    count = args.files or (10_000 if args.quick else 100_000)
    base = args.workdir / "ingest"
    src = base / "src"
    files = make_data(src, count)
    clean_peers(src)
    c.same_disk_note(args.workdir)
    peers = c.peer_python()
    peer_env = dict(os.environ, DVC_NO_ANALYTICS="1", HOME=str(base / "peer-home"))
    (base / "peer-home").mkdir(exist_ok=True)
    if peers is not None:
        peer_env["PATH"] = f"{peers.parent}:{peer_env['PATH']}"

    times: dict[str, list[float]] = {k: [] for k in ("tar", "pfs", "git", "dvc", "oxen")}
    for n in range(args.runs):
        c.console.print(f"run {n + 1}/{args.runs}")
        c.drop_caches()
        times["tar"].append(c.timed_cmd("tar cf - files | cat > /dev/null", cwd=src))

        daemon = c.fresh_daemon(base / "pfsroot")
        try:
            daemon.pfs("create-repo", "data")
            c.drop_caches()
            with c.profiled(daemon.pid, f"daemon during put -r of {count:,} files",
                            args.profile and n == 0):
                times["pfs"].append(c.timed_cmd(
                    daemon.cli("file", "put", "data@master:/files", "-r", str(files))))
            listed = daemon.pfs("file", "list", "data@master:/files/d000").stdout
            assert listed.count(".bin") == count // DIRS, "put did not store every file"
        finally:
            daemon.down()

        if args.pfs_only:
            continue
        clean_peers(src)
        c.drop_caches()
        times["git"].append(c.timed_cmd(
            "git init -q && git add -A && git commit -q -m x", cwd=src,
            env=dict(os.environ, **GIT_ENV)))
        clean_peers(src)

        if peers is not None:
            c.run("git init -q && dvc init -q", cwd=src, env=peer_env)
            c.drop_caches()
            times["dvc"].append(c.timed_cmd("dvc add -q files", cwd=src, env=peer_env))
            clean_peers(src)

            c.run([str(peers), "-c", OXEN_INIT, str(src)], env=peer_env)
            c.drop_caches()
            out = c.run([str(peers), "-c", OXEN_TIMED, str(src), str(files)], env=peer_env)
            times["oxen"].append(float(out.stdout.strip().splitlines()[-1]))
            clean_peers(src)

    res = c.Results(f"ingest {count:,} files x {FILE_SIZE} B in {DIRS} dirs "
                    f"({c.mib(count * FILE_SIZE)}), cold cache, median of {args.runs}")
    res.add(c.Row(TAR, times["tar"], note="baseline"))
    res.add(c.Row("pfsmount put -r", times["pfs"], baseline=TAR, target="<= 1.5x tar",
                  check=lambda r: r <= 1.5,
                  note="CLI wall time, 1 commit"))
    res.add(c.Row("git init+add+commit", times["git"], baseline=TAR,
                  note="" if times["git"] else "skipped"))
    res.add(c.Row("dvc add", times["dvc"], baseline=TAR,
                  note="" if times["dvc"] else "skipped"))
    res.add(c.Row("oxen add+commit", times["oxen"],
                  baseline=TAR,
                  note="Python API, in-process" if times["oxen"] else "skipped"))
    pfs = statistics.median(times["pfs"])
    for peer, label in (("git", "git"), ("dvc", "dvc"), ("oxen", "oxen")):
        if times[peer]:
            speedup = statistics.median(times[peer]) / pfs
            res.add(c.Row(f"pfsmount speed-up vs {label}", [speedup], unit="x",
                          target=">= 2x" if peer == "git" else "",
                          check=(lambda r: r >= 2) if peer == "git" else None,
                          note=f"{label} median / pfsmount median"))
    startup = statistics.median(
        [c.timed_cmd([*c.pfs_cmd(), "--version"]) for _ in range(3)])
    res.print({"pfsmount CLI start-up (--version), included in the put row":
                    c.fmt(startup, "s")})
    if not args.keep:
        shutil.rmtree(base / "pfsroot", ignore_errors=True)


if __name__ == "__main__":
    main()
