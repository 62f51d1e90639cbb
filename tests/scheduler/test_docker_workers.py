"""Docker datums of a job run one after another in a long-lived container (``Worker``):
what one datum sees must be its own all the same, and no container may outlive its job or
its daemon. Against the real engine and the offline test image (``packaging/dockerd.sh``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors
import pytest

from scheduler.containers import DockerRunner, Execs, Worker
from scheduler.runners import Task
from tests.scheduler.conftest import IMAGE, Pfsd

LABEL = "io.pfsmount.root"  # scheduler.containers.LABEL: the daemon root a container serves

# Each datum reports what it finds, then leaves what it can behind for the next one: files
# in /tmp, /dev/shm and /pfs/out, and a process running in the background.
REPORT = r"""
n=$(ls /pfs/wk_in)
out=$(ls -A /pfs/out | tr '\n' ' ')
{
  echo "host: $(hostname)"
  echo "pfs: $(ls -A /pfs | tr '\n' ' ')"
  echo "in: $(ls -A /pfs/wk_in | tr '\n' ' ')"
  echo "out: $out"
  echo "tmp: $(ls -A /tmp | tr '\n' ' ')"
  echo "shm: $(ls -A /dev/shm | tr '\n' ' ')"
  echo "sleeping: $(cat /proc/[0-9]*/comm | grep -c '^sleep$')"
  echo "datum: $PACH_DATUM_ID"
} > "/pfs/out/$n"
echo left > "/tmp/$n"; echo left > "/dev/shm/$n"; echo kept > "/pfs/out/extra-$n"
chmod 000 /pfs/out /tmp
sleep 300 >/dev/null 2>&1 &
"""


def containers(pfsd: Pfsd) -> dict[str, str]:
    """This daemon's containers, running or not: id -> status."""
    p = subprocess.run(["docker", "ps", "-a", "--no-trunc", "--filter",
                        f"label={LABEL}={pfsd.root}", "--format", "{{.ID}} {{.Status}}"],
                       capture_output=True, text=True, timeout=60, check=True)
    return dict(line.split(" ", 1) for line in p.stdout.splitlines())


def until(what: str, ok: object, timeout: float = 20) -> None:
    """Wait for ``ok()`` to hold."""
    deadline = time.monotonic() + timeout
    while not ok():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout:.0f} s")
        time.sleep(0.2)


def test_datums_in_one_container_see_only_their_own(pfsd: Pfsd, docker_ready: None) -> None:
    pfsd.repos("wk_in")
    pfsd.put("wk_in", {"a": "1\n", "b": "2\n", "c": "3\n"})
    pfsd.create(pfsd.spec("wk", ["sh", "-c", REPORT], pfsd.pin("wk_in"), image=IMAGE,
                          parallelism_spec={"constant": 1}, datum_tries=1))
    assert pfsd.wait("wk_in@master").keys() == {"wk"}
    job = pfsd.last_job("wk")
    assert (job["state"], job["processed"]) == ("success", 3), job
    tree = {k: v.decode() for k, v in pfsd.tree("wk").items()}
    assert {k: tree.pop(f"extra-{k}") for k in "abc"} == {k: "kept\n" for k in "abc"}
    assert tree.keys() == {"a", "b", "c"}
    hosts, datums = set(), set()
    for name, report in tree.items():
        lines = dict(line.split(": ", 1) for line in report.splitlines())
        hosts.add(lines["host"])
        datums.add(lines["datum"])
        assert lines["pfs"] == "out wk_in ", report  # its input and /pfs/out, nothing else
        assert lines["in"] == f"{name} ", report  # its own file only
        # nothing of the datum before: /pfs/out, /tmp and /dev/shm empty, no process left
        assert (lines["out"], lines["tmp"], lines["shm"], lines["sleeping"]) == (
            "", "", "", "0"), report
    assert len(hosts) == 1, f"the datums ran in {len(hosts)} containers, not one: {hosts}"
    assert len(datums) == 3
    until("every container of the job removed", lambda: not containers(pfsd))


def test_no_container_outlives_its_daemon(own_pfsd: Pfsd, docker_ready: None) -> None:
    """``pfsmount down`` removes the containers of the job it lets finish; a daemon that was
    killed leaves its container, which the next ``up`` removes."""
    d = own_pfsd
    d.repos("wd_in")
    d.create(d.spec("wd", ["sh", "-c", "sleep 3; cp /pfs/wd_in/* /pfs/out/"],
                    d.pin("wd_in"), image=IMAGE, datum_tries=1))
    d.put("wd_in", {"a": "1\n"})
    until("a container running the datum", lambda: containers(d))
    d.down()
    assert containers(d) == {}, "pfsmount down left containers behind"
    d.up()
    d.put("wd_in", {"b": "2\n"})
    until("a container running the datum", lambda: containers(d))
    left = set(containers(d))
    d.kill9()
    assert set(containers(d)) == left, "the killed daemon's container is gone already"
    d.up()
    until("the killed daemon's container removed",
          lambda: not left & set(containers(d)))
    assert d.wait("wd_in@master").keys() == {"wd"}
    assert d.tree("wd").keys() == {"a", "b"}
    until("every container of the job removed", lambda: not containers(d))


PIL = "pfsmount-examples/python3-pil:latest"  # an image with python3

# Every datum forks a process that execs itself under the idle program's name and, for
# seconds after its datum ended, copies whatever else shows up in /pfs/in to /pfs/out.
THIEF = r"""
import os, sys, time
mine, end = sys.argv[1], time.monotonic() + 6
while time.monotonic() < end:
    for v in os.listdir("/pfs/in"):
        if v != mine:
            open(f"/pfs/out/stolen-{mine}-{v}", "wb").write(open(f"/pfs/in/{v}", "rb").read())
    time.sleep(0.1)
"""
MASQUERADE = r"""
import os, sys, time
mine = os.listdir("/pfs/in")[0]
me = str(os.getpid())
others = [p for p in os.listdir("/proc") if p.isdigit() and p != me]
open(f"/pfs/out/{mine}", "w").write(" ".join(sorted(others)))
if os.fork() == 0:
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):  # else the exec's output stays open until it ends
        os.dup2(null, fd)
    os.execv(sys.executable, ["/.pfsmount/idle", "-c", sys.argv[1], mine])
time.sleep(1.5)
"""


def test_a_process_named_as_the_idle_program_dies_with_its_datum(
        pfsd: Pfsd, docker_ready: None) -> None:
    """The container's own processes are known by pid, not by a command line a datum
    chooses: what execs itself as ``/.pfsmount/idle`` is killed like any other."""
    pfsd.repos("in")
    pfsd.put("in", {"a": "1\n", "b": "2\n", "c": "3\n"})
    pfsd.create(pfsd.spec("wm", ["python3", "-c", MASQUERADE, THIEF], pfsd.pin("in"),
                          image=PIL, parallelism_spec={"constant": 1}, datum_tries=1))
    assert pfsd.wait("in@master").keys() == {"wm"}
    job = pfsd.last_job("wm")
    assert (job["state"], job["processed"]) == ("success", 3), job
    tree = pfsd.tree("wm")
    assert tree.keys() == {"a", "b", "c"}, "a datum's process outlived it: " + str(tree)
    # each datum saw the container's init and idle program (the same two: one container),
    # and nothing of the one before
    assert len(set(tree.values())) == 1 and len(tree["a"].split()) == 2, tree


SHM = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
mine = os.listdir("/pfs/ipc_in")[0]
shm = libc.shmget(4242, 4096, 0o1666)  # IPC_CREAT | 0666
assert shm >= 0, os.strerror(ctypes.get_errno())
at = libc.shmat(shm, None, 0)
found = ctypes.string_at(at, 8).rstrip(b"\0")
open(f"/pfs/out/{mine}", "wb").write(b"found:" + found)
ctypes.memmove(at, mine.encode(), len(mine))
"""


def test_sysv_ipc_does_not_outlive_its_datum(pfsd: Pfsd, docker_ready: None) -> None:
    """A datum's SysV shared memory is gone for the next datum (its container retired)."""
    pfsd.repos("ipc_in")
    pfsd.put("ipc_in", {"a": "1\n", "b": "2\n"})
    pfsd.create(pfsd.spec("wi", ["python3", "-c", SHM], pfsd.pin("ipc_in"), image=PIL,
                          parallelism_spec={"constant": 1}, datum_tries=1))
    assert pfsd.wait("ipc_in@master").keys() == {"wi"}
    assert pfsd.last_job("wi")["state"] == "success"
    assert pfsd.tree("wi") == {"a": b"found:", "b": b"found:"}


def test_an_output_that_cannot_be_moved_fails_the_datum(
        tmp_path: Path, docker_ready: None) -> None:
    """Each entry of /pfs/out is moved on its own: one that cannot be fails the datum with
    a line in its log, the others still move, and the container is not used again."""
    (tmp_path / "work").mkdir()
    runner = DockerRunner(tmp_path / "work", label=f"test-{tmp_path.name}")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "f").write_text("x")
    out = tmp_path / "out"
    (out / "a" / "taken").mkdir(parents=True)  # /pfs/out/a cannot replace it (ENOTEMPTY)
    log = tmp_path / "log"
    task = Task(cmd=["sh", "-c", "mkdir /pfs/out/a; echo 1 > /pfs/out/a/x; "
                     "echo 2 > /pfs/out/b; echo 3 > /pfs/out/c"], stdin="", env={},
                binds=[(tmp_path / "in", "/pfs/in")], out=out, log=log, image=IMAGE,
                pool="p")
    try:
        assert runner.movable(task)
        worker = runner._lease("p", IMAGE)
        assert worker.run(task) == -1
        assert worker.broken
        assert "output could not be stored: /pfs/out/a:" in log.read_text()
        assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c"]
        runner._give_back("p", worker)
    finally:
        runner.close()


def test_a_worker_that_cannot_be_created_leaves_no_directory(
        tmp_path: Path, docker_ready: None) -> None:
    client = docker.from_env()
    home = tmp_path / "home"
    with pytest.raises(docker.errors.ImageNotFound):
        Worker(client, Execs(client), "pfsmount-test/no-such-image:latest", home, {})
    assert not home.exists()


NO_WORKERS = r"""
import sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from scheduler.containers import DockerRunner
from scheduler.runners import Task
work = Path(tempfile.mkdtemp())
(work / "in").mkdir()
task = Task(cmd=["true"], stdin="", env={}, binds=[(work / "in", "/pfs/in")],
            out=work / "out", log=work / "log", image="i", pool="p")
print(DockerRunner(work).movable(task))
"""


def test_a_daemon_that_cannot_look_into_a_container_runs_no_workers() -> None:
    """Without CAP_SYS_ADMIN (a daemon of an ordinary user) SysV IPC a datum left could not
    be seen, so even inputs a worker could take run in a container each; as root, in one."""
    root = str(Path(__file__).parents[2])
    as_root = subprocess.run([sys.executable, "-c", NO_WORKERS, root], capture_output=True,
                             text=True, check=True, timeout=60)
    assert as_root.stdout == "True\n"
    ordinary = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534",
                               "--clear-groups", sys.executable, "-c", NO_WORKERS, root],
                              capture_output=True, text=True, timeout=60)
    assert ordinary.stdout == "False\n", ordinary.stderr


SIGNAL = r"""
for p in /proc/[0-9]*; do
  n=${p#/proc/}; [ "$n" = $$ ] || { kill -0 "$n" 2>/dev/null && echo "$n"; }
done > "/pfs/out/$(ls /pfs/ws_in)"
exit 0
"""


def test_a_datum_cannot_signal_the_containers_own_processes(
        pfsd: Pfsd, docker_ready: None) -> None:
    """docker-init and the idle program run as another uid than datums: a datum can neither
    signal nor ptrace them (take the idle program over, or end the container under the
    next datum)."""
    pfsd.repos("ws_in")
    pfsd.put("ws_in", {"a": "1\n", "b": "2\n"})
    pfsd.create(pfsd.spec("ws", ["sh", "-c", SIGNAL], pfsd.pin("ws_in"), image=IMAGE,
                          parallelism_spec={"constant": 1}, datum_tries=1))
    assert pfsd.wait("ws_in@master").keys() == {"ws"}
    assert pfsd.tree("ws") == {"a": b"", "b": b""}
