"""Docker datums of a job run one after another in a long-lived container (``Worker``):
what one datum sees must be its own all the same, and no container may outlive its job or
its daemon. Against the real engine and the offline test image (``packaging/dockerd.sh``).
"""

from __future__ import annotations

import subprocess
import time

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
