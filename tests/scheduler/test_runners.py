"""The two runners, bubblewrap (no image) and Docker (``transform.image``), seen from inside.

The same command runs in both over the same input and writes what it finds into /pfs/out: the
/pfs layout, whether /pfs/out started empty, what a write into an input does, the datum's
content and its environment. The two output repos must then hold the same bytes, and those
bytes must say what DESIGN promises. Docker runs against the real engine with the offline test
image ``pfsmount-test/busybox:latest`` (``packaging/dockerd.sh`` makes both).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from pfsmount import Client
from tests.confine import confined
from tests.conftest import PROJECT, Pfsmount, require_fuse, running, short_root
from tests.scheduler.conftest import Pfsd, missing

IMAGE = "pfsmount-test/busybox:latest"
HEX32 = r"[0-9a-f]{32}"

# Each datum is one top-level entry of lay_in (glob /*): a file or a directory.
PROBE = r"""
n=$(ls /pfs/lay_in)
[ -z "$(ls -A /pfs/out)" ] && start=empty || start="not empty: $(ls -A /pfs/out)"
r=/pfs/out/$n.report
{
  echo "pfs: $(ls /pfs | tr '\n' ' ')"
  echo "out at start: $start"
  echo "tree:"; (cd /pfs && find lay_in | sort)
  echo "content:"; find /pfs/lay_in -type f | sort | while read -r f; do cat "$f"; done
  f=$(find /pfs/lay_in -type f | sort | head -n 1)
  try() { if (eval "$2") 2>/dev/null; then echo "$1: done"; else echo "$1: refused"; fi; }
  try "append to $f" 'echo x >> "$f"'
  try "overwrite $f" 'echo x > "$f"'
  try "rm $f" 'rm "$f"'
  try "create beside the datum" 'echo x > /pfs/lay_in/new'
  try "create in /pfs" 'echo x > /pfs/stray'
  [ -d /pfs/lay_in/dir ] && try "create in dir" 'echo x > /pfs/lay_in/dir/new'
  echo "datum: $PACH_DATUM_ID"
  echo "out var: $PFS_OUT"
} > "$r"
mkdir -p /pfs/out/jobs/deep
echo "$PACH_JOB_ID" > "/pfs/out/jobs/deep/$n"
"""


def probe(pfsd: Pfsd, name: str, **extra: object) -> None:
    pfsd.create(pfsd.spec(name, PROBE, pfsd.pin("lay_in"), **extra))


def test_both_runners_see_the_same_pfs(pfsd: Pfsd, docker_ready: None) -> None:
    pfsd.repos("lay_in")
    pfsd.put("lay_in", {"top.txt": "top\n", "dir/sub.txt": "sub\n", "dir/deep/x.txt": "x\n"})
    probe(pfsd, "lay_bwrap")
    probe(pfsd, "lay_docker", image=IMAGE)
    out = pfsd.wait("lay_in@master")
    assert set(out) == {"lay_bwrap", "lay_docker"}

    trees = {}
    for name in ("lay_bwrap", "lay_docker"):
        job = pfsd.last_job(name)
        assert (job["state"], job["datums"], job["processed"]) == ("success", 2, 2), job
        tree = pfsd.tree(name)
        # PACH_JOB_ID is the job's id; nested output directories are kept
        assert tree.pop("jobs/deep/top.txt") == tree.pop("jobs/deep/dir") == (
            job["id"] + "\n").encode()
        trees[name] = {k: v.decode() for k, v in tree.items()}
    assert trees["lay_bwrap"] == trees["lay_docker"], "the runners disagree"

    top, folder = trees["lay_bwrap"]["top.txt.report"], trees["lay_bwrap"]["dir.report"]
    for report in (top, folder):
        assert "pfs: lay_in out \n" in report, report
        assert "out at start: empty\n" in report, report
        assert "out var: /pfs/out\n" in report, report
    assert "tree:\nlay_in\nlay_in/top.txt\ncontent:\ntop\n" in top, top
    assert ("tree:\nlay_in\nlay_in/dir\nlay_in/dir/deep\nlay_in/dir/deep/x.txt\n"
            "lay_in/dir/sub.txt\ncontent:\nx\nsub\n") in folder, folder
    # the inputs are read-only, whole files and directories alike
    assert "append to /pfs/lay_in/top.txt: refused" in top, top
    assert "overwrite /pfs/lay_in/top.txt: refused" in top, top
    assert "rm /pfs/lay_in/top.txt: refused" in top, top
    assert "append to /pfs/lay_in/dir/deep/x.txt: refused" in folder, folder
    assert "rm /pfs/lay_in/dir/deep/x.txt: refused" in folder, folder
    assert "create in dir: refused" in folder, folder
    for report in (top, folder):  # nothing can land in /pfs but in /pfs/out
        assert "create beside the datum: refused" in report, report
        assert "create in /pfs: refused" in report, report
        assert ": done" not in report, report
    # one id per datum, the same in both runners (it hashes the datum's inputs only)
    datums = {re.search(rf"^datum: ({HEX32})$", r, re.M)[1] for r in (top, folder)}  # type: ignore[index]
    assert len(datums) == 2
    # the input stayed as it was
    with pfsd.api() as c:
        assert c.read_file("lay_in@master:/top.txt") == b"top\n"


def test_docker_runs_datums_and_skips_like_the_sandbox(pfsd: Pfsd, docker_ready: None) -> None:
    pfsd.repos("dk_in")
    pfsd.put("dk_in", {"a": "3 4\n", "b": "10 20\n"})
    pfsd.create(pfsd.spec(
        "dk_sum", ["sh", "-c", 'for f in /pfs/dk_in/*; do awk \'{print $1+$2}\' "$f" > '
                  '/pfs/out/$(basename "$f"); echo "summed $(basename "$f")"; done'],
        pfsd.pin("dk_in"), image=IMAGE))
    pfsd.wait("dk_in@master")
    assert pfsd.tree("dk_sum") == {"a": b"7\n", "b": b"30\n"}
    pfsd.put("dk_in", {"c": "1 1\n"})
    pfsd.wait("dk_in@master")
    job = pfsd.last_job("dk_sum")
    assert (job["state"], job["datums"], job["processed"], job["skipped"]) == (
        "success", 3, 1, 2)
    assert pfsd.tree("dk_sum") == {"a": b"7\n", "b": b"30\n", "c": b"2\n"}
    log = pfsd.ok("logs", "-p", "dk_sum")
    assert all(f"summed {n}" in log for n in "abc"), log


def test_missing_docker_image_fails_the_job_with_one_line(pfsd: Pfsd,
                                                          docker_ready: None) -> None:
    image = "pfsmount-test/no-such-image:1.0"
    pfsd.repos("noimg_in")
    pfsd.put("noimg_in", {"a": "1\n"})
    pfsd.create(pfsd.spec("noimg", "cp /pfs/noimg_in/* /pfs/out/", pfsd.pin("noimg_in"),
                          image=image))
    line = pfsd.fails("commit", "wait", "noimg_in@master", "--timeout", "60",
                      match=re.escape(image))
    assert "noimg" in line, line
    job = pfsd.last_job("noimg")
    assert job["state"] == "failure" and job["output"] is None
    assert image in job["error"] and "\n" not in job["error"], job["error"]
    assert pfsd.head("noimg") is None
    shown = pfsd.ok("job", "inspect", job["id"])
    assert re.search(rf"^error: .*{re.escape(image)}", shown, re.M), shown


@pytest.mark.parametrize("image", ["", IMAGE], ids=["bwrap", "docker"])
def test_whole_commit_glob_is_read_only(pfsd: Pfsd, image: str, request: pytest.FixtureRequest
                                        ) -> None:
    """With glob / the whole commit sits at /pfs/<input>: nothing can be added there."""
    if image:
        request.getfixturevalue("docker_ready")
    repo, name = f"whole_in_{request.node.callspec.id}", f"whole_{request.node.callspec.id}"
    pfsd.repos(repo)
    pfsd.put(repo, {"a": "1\n", "d/b": "2\n"})
    cmd = ("(echo x > /pfs/in/new) 2>/dev/null && echo new: done || echo new: refused; "
           "(mkdir /pfs/in/d2) 2>/dev/null && echo mkdir: done || echo mkdir: refused; "
           "ls -R /pfs/in > /pfs/out/listing")
    extra = {"image": image} if image else {}
    pfsd.create(pfsd.spec(name, cmd, {"pfs": {"repo": repo, "glob": "/", "name": "in"}},
                          **extra))
    pfsd.wait(f"{repo}@master")
    job = pfsd.last_job(name)
    assert (job["state"], job["datums"]) == ("success", 1), job
    log = pfsd.ok("logs", "-p", name)
    assert "new: refused" in log and "mkdir: refused" in log, log
    listing = pfsd.get(f"{name}@master:/listing").decode()
    assert "a" in listing.split() and "b" in listing.split() and "new" not in listing


def test_datums_that_never_read_stdin_at_parallelism_4(pfsd: Pfsd) -> None:
    """The sandbox once wrote each datum's stdin into a pipe and closed it: a command that
    exited without reading it broke the whole job ("internal error: [Errno 32] Broken
    pipe"). A stdin just over a pipe's 64 KiB makes that certain, not a matter of timing."""
    pfsd.repos("nostdin_in")
    names = [f"f{i:03}" for i in range(100)]
    pfsd.put("nostdin_in", {n: f"{n}\n" for n in names})
    spec = pfsd.spec("nostdin", ["sh", "-c", "cp /pfs/nostdin_in/* /pfs/out/"],
                     pfsd.pin("nostdin_in"), parallelism_spec={"constant": 4})
    spec["transform"]["stdin"] = ["# not read " + "x" * 65_988]  # 66,000 bytes with "\n"
    pfsd.create(spec)
    out = pfsd.wait("nostdin_in@master")
    job = pfsd.quick_job("nostdin")
    assert (job["state"], job["processed"], job["failed"]) == ("success", 100, 0), job
    with pfsd.api() as c:
        files = {f.path for f in c.walk_files(f"nostdin@{out['nostdin']}:/")}
        assert files == {f"/{n}" for n in names}
        assert c.read_file("nostdin@master:/f042") == b"f042\n"


def test_an_image_without_a_shell_runs_a_transform_without_stdin(
        pfsd: Pfsd, docker_ready: None) -> None:
    """An image that holds only its program (no /bin/sh, as a ``FROM scratch`` build) runs a
    transform that gives no stdin: the runner once wrapped every command in ``sh -c``."""
    busybox = Path("/bin/busybox")  # busybox-static, which the test image is made of
    if not busybox.is_file():
        missing("busybox-static is not installed (/bin/busybox)")
    tag = f"pfsmount-test/nosh-{os.getpid()}:latest"
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        t.add(busybox, arcname="busybox")
    subprocess.run(["docker", "import", "-", tag], input=tar.getvalue(), check=True,
                   capture_output=True, timeout=120)
    try:
        pfsd.repos("nosh_in")
        pfsd.put("nosh_in", {"a": "1\n"})
        pfsd.create(pfsd.spec("nosh", ["/busybox", "cp", "/pfs/nosh_in/a", "/pfs/out/a"],
                              pfsd.pin("nosh_in"), image=tag, datum_tries=1))
        assert pfsd.wait("nosh_in@master").keys() == {"nosh"}
        assert pfsd.get("nosh@master:/a") == b"1\n"
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120)


class Hostless(Pfsmount):
    """A root daemon on a machine without /pfs: every command runs in a mount namespace whose
    root is rebuilt without it (tests/confine.py), the mount (if any) at ROOT/mnt."""

    def __init__(self, mount: bool) -> None:
        super().__init__(short_root("psnp"))
        self.scratch = self.root / ".newroot"
        self.scratch.mkdir()
        self.mount = mount

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return confined(super().argv(*args), self.scratch, PROJECT)

    def up(self) -> int:
        if not self.mount:
            return super().up()
        (self.root / "mnt").mkdir()
        return self.start("--mount", self.root / "mnt")[0]


@pytest.mark.parametrize("mount", [False, True], ids=["no-mount", "mount-elsewhere"])
def test_runners_on_a_machine_without_pfs(mount: bool, docker_ready: None) -> None:
    """No /pfs on the host (the old sandbox failed with "bwrap: Can't mkdir /pfs"), the
    mount elsewhere or none: both runners give every datum the same /pfs."""
    require_fuse("CI must run the scheduler tests with it")
    with running(Hostless(mount)) as d:
        r = subprocess.run(confined(["test", "-e", "/pfs"], d.scratch, PROJECT), timeout=60)
        assert r.returncode == 1, "the namespace has a /pfs"
        cmd = 'cp -r /pfs/np_in/* /pfs/out/; ls /pfs > /pfs/out/pfs.txt; id -u > /pfs/out/uid'
        with Client(d.root, timeout=120) as c:
            c.create_repo("np_in")
            c.start_commit("np_in", "master")
            c.put_file("np_in@master:/a", b"1\n")
            c.put_file("np_in@master:/d/b", b"2\n")
            c.finish_commit("np_in@master")
            for name, extra in (("np_bwrap", {}), ("np_docker", {"image": IMAGE})):
                spec = Pfsd.spec(name, cmd, Pfsd.pin("np_in", "/"), **extra)
                d.ok("pipeline", "create", "-f", "-", input=json.dumps(spec))
            assert {o.repo for o in c.wait_commit("np_in@master", 90)} == {"np_bwrap",
                                                                          "np_docker"}
            for name in ("np_bwrap", "np_docker"):
                assert c.read_file(f"{name}@master:/a") == b"1\n"
                assert c.read_file(f"{name}@master:/d/b") == b"2\n"
                assert c.read_file(f"{name}@master:/pfs.txt") == b"np_in\nout\n"
                assert c.read_file(f"{name}@master:/uid") == b"65534\n"
