"""A datum is a prisoner: every way out that a pipeline's code could try must fail.

One datum per runner (real bubblewrap, and the real Docker engine with the offline test image)
tries each escape of issue 10: talk to the daemon's own socket (export a repo to a host path,
read a host file into a repo), read the store's packs and LMDB, another repo and /etc/shadow,
reach the Docker socket, write outside /pfs/out, and reach the network. It writes what it
managed to read into /pfs/out, so the output commit is its loot. The verdict is taken on the
host side, never on the datum's word: the export target, the stolen file, the container and
the written paths do not exist, a TCP listener saw no connection, and no output holds a byte
of the secret repo or of /etc/shadow.

The daemon's root is under /var/tmp, like the default root under $HOME a place the old
sandbox (``--ro-bind / /``, which kept only /tmp private) let a datum see.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.runners import SandboxRunner, Task
from tests.scheduler.conftest import IMAGE, Pfsd, require_bwrap, serving

PROBE = r"""
out=/pfs/out; r=$out/report; mkdir -p "$out/loot"
say() { echo "$1: $2" >> "$r"; }
try() { if (eval "$2") >/dev/null 2>&1; then say "$1" done; else say "$1" refused; fi; }
grab() { n=$1; shift; for f in "$@"; do
  if cat "$f" >> "$out/loot/$n" 2>/dev/null; then say "read $f" done; else say "read $f" refused; fi
done; }
{ echo "id: $(id)"; grep -E '^(Cap(Prm|Eff|Bnd|Amb)|NoNewPrivs)' /proc/self/status
  echo "root: $(ls / | tr '\n' ' ')"; echo "pfs: $(ls /pfs | tr '\n' ' ')"; } > "$out/whoami"
grab shadow /etc/shadow /etc/gshadow
grab repo "$ROOT/mnt/secret/master/s.txt" /pfs/secret/s.txt
for f in $(find "$ROOT" -type f 2>/dev/null | grep -v /work/); do grab store "$f"; done
for d in "$ROOT" "$ROOT/store" /root /home /run /var/run; do
  try "list $d" "ls -A $d | grep -q ."
done
for p in "$ROOT/ESCAPED-$ESC" "/var/tmp/ESCAPED-$ESC" "/ESCAPED-$ESC" "/pfs/ESCAPED-$ESC" \
         "/usr/local/ESCAPED-$ESC" "/etc/ESCAPED-$ESC" "/pfs/sb_in/ESCAPED-$ESC"; do
  try "write $p" "echo x > $p"
done
if command -v python3 >/dev/null; then python3 - >> "$r" 2>&1 <<'PY'
import json, os, socket
root, esc, port, hostip = (os.environ[k] for k in ("ROOT", "ESC", "PORT", "HOSTIP"))
def post(sock, path, body):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    return s.recv(100)
def attempt(what, f):
    try:
        print(f"{what}: done {f()!r}")
    except OSError as e:
        print(f"{what}: refused ({e.strerror})")
export = json.dumps({"ref": "secret@master:/s.txt", "dest": f"/tmp/ESCAPED-{esc}-export",
                     "recursive": False}).encode()
for sock in (f"{root}/pfsmount.sock", "/root/.local/share/pfsmount/pfsmount.sock"):
    attempt(f"export via {sock}", lambda: post(sock, "/v1/files/export", export))
    attempt(f"put local via {sock}", lambda: post(
        sock, "/v1/files/put?ref=secret@master:/stolen&local=/etc/shadow", b""))
create = json.dumps({"Image": "pfsmount-test/busybox:latest", "Cmd": ["true"]}).encode()
for sock in ("/run/docker.sock", "/var/run/docker.sock"):
    attempt(f"docker via {sock}",
            lambda: post(sock, f"/containers/create?name=ESCAPED-{esc}", create))
for host in ("127.0.0.1", hostip):
    attempt(f"connect {host}:{port}",
            lambda: socket.create_connection((host, int(port)), timeout=3).close())
PY
else
  for s in "$ROOT/pfsmount.sock" /run/docker.sock /var/run/docker.sock; do
    try "socket $s" "test -S $s"
  done
  for h in 127.0.0.1 "$HOSTIP"; do try "connect $h:$PORT" "nc -w 3 $h $PORT </dev/null"; done
fi
true
"""


class Listener:
    """A TCP server on every host address that counts who connects."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("0.0.0.0", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


def host_ip() -> str:
    """An address of this machine other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


@pytest.fixture(scope="module")
def jail() -> Iterator[Pfsd]:
    """A daemon whose root is outside /tmp, with a secret repo and the datums' input."""
    with serving("psbx", parent="/var/tmp") as d:
        d.repos("secret")
        d.put("secret", {"s.txt": f"TOPSECRET-{uuid.uuid4().hex}\n"})
        yield d


def escape(jail: Pfsd, name: str, image: str = "") -> None:
    """Run the probe as pipeline ``name`` and check on the host that nothing escaped."""
    esc, listener, repo = uuid.uuid4().hex[:12], Listener(), f"{name}_in"
    jail.repos(repo)
    jail.put(repo, {"a": "1\n"})
    spec = jail.spec(name, PROBE, jail.pin(repo, name="sb_in"),
                     **({"image": image} if image else {}))
    spec["transform"]["env"] = {"ROOT": str(jail.root), "ESC": esc,
                                "PORT": str(listener.port), "HOSTIP": host_ip()}
    jail.create(spec)
    try:
        jail.wait(f"{repo}@master")
    finally:
        listener.sock.close()
    job = jail.last_job(name)
    assert job["state"] == "success", job
    with jail.api() as c:
        outputs = {f.path: c.read_file(f"{name}@master:{f.path}")
                   for f in c.walk_files(f"{name}@master:/") if f.type == "file"}
        secret = c.read_file("secret@master:/s.txt")
        assert [f.path for f in c.walk_files("secret@master:/")] == ["/s.txt"], "a file was put"
        assert [f.path for f in c.walk_files(f"{repo}@master:/")] == ["/a"]
    report = outputs["/report"].decode()
    whoami = outputs["/whoami"].decode()

    # nothing was read: no byte of another repo (its file, the store's packs) or of shadow
    shadow = [line for line in Path("/etc/shadow").read_text().splitlines() if line]
    for path, data in outputs.items():
        assert secret.strip() not in data, f"the datum read the secret repo into {path}"
        for line in shadow:
            assert line.encode() not in data, f"the datum read /etc/shadow into {path}"
    assert not outputs.get("/loot/store"), "the datum read the daemon's store"
    # nothing was written: not by the daemon on the datum's behalf, not by the datum
    for path in (Path(f"/tmp/ESCAPED-{esc}-export"), jail.root / f"ESCAPED-{esc}",
                 Path(f"/var/tmp/ESCAPED-{esc}"), Path(f"/ESCAPED-{esc}"),
                 Path(f"/tmp/ESCAPED-{esc}"), Path(f"/usr/local/ESCAPED-{esc}"),
                 Path(f"/etc/ESCAPED-{esc}"), Path(f"/pfs/ESCAPED-{esc}")):
        assert not path.exists(), f"{path} was written from inside a datum"
    # no container was made through a Docker socket, no connection reached the host
    made = subprocess.run(["docker", "container", "inspect", f"ESCAPED-{esc}"],
                          capture_output=True, timeout=30)
    assert made.returncode != 0, "a datum created a container through the Docker socket"
    assert listener.connections == 0, "a datum reached the network"

    # and what the datum says of itself agrees
    assert re.search(r"^id: uid=65534\b.* gid=65534\b", whoami, re.M), whoami
    for cap in ("CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert re.search(rf"^{cap}:\s+0+$", whoami, re.M), whoami
    assert re.search(r"^NoNewPrivs:\s+1$", whoami, re.M), whoami
    assert re.search(r"^pfs: out sb_in $", whoami, re.M), whoami
    done = [line for line in report.splitlines() if ": done" in line]
    assert done == [], f"the datum got through:\n{report}"
    assert report.count(": refused") >= 20, report


def test_a_sandboxed_datum_cannot_get_out(jail: Pfsd) -> None:
    escape(jail, "sb_bwrap")
    seen = jail.get("sb_bwrap@master:/whoami").decode()
    # a root of its own: the host's programs, a minimal /etc, /pfs, nothing else
    top = set(re.search(r"^root: (.*)$", seen, re.M)[1].split())  # type: ignore[index]
    assert top <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "pfs", "proc",
                   "sbin", "tmp", "usr"}, top
    report = jail.get("sb_bwrap@master:/report").decode()
    assert "export via" in report and "docker via" in report, \
        f"the host's python3 did not run in the sandbox:\n{report}"


def test_a_docker_datum_cannot_get_out(jail: Pfsd, docker_ready: None) -> None:
    escape(jail, "sb_docker", image=IMAGE)


def test_the_daemons_places_stay_hidden_under_a_shown_directory(tmp_path: Path) -> None:
    """A root (or mount) under a directory a datum sees, like /usr/local/..., is covered
    with an empty tmpfs; the rest of that directory stays as it is. (/usr/share/doc stands
    in for it: it exists and is not empty on any machine with bwrap.)"""
    require_bwrap()
    hidden = Path("/usr/share/doc")
    assert any(hidden.iterdir())
    out, log = tmp_path / "out", tmp_path / "log"
    out.mkdir()
    code = SandboxRunner(hidden=(hidden,)).run(Task(
        cmd=["sh", "-c", f"ls -A {hidden} | wc -l; ls /usr/share | wc -l"], stdin="", env={},
        binds=[], out=out, log=log))
    assert code == 0, log.read_text()
    inside, beside = log.read_text().split()
    assert inside == "0" and int(beside) > 1, log.read_text()
