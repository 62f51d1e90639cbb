"""The S3 backend (``s3://``) against the object store contract on a real SeaweedFS server
(``tests/s3.py``), and what a user meets around it: settings read the way AWS tools read
them, one clear error for a server that is down, a wrong key or a missing bucket, and
retries that ride out a short outage. (The contract's last test runs a whole pfsmount store
on S3.)

Each test gets a prefix of its own in one bucket, so they share the session's server and
never see each other's objects.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store

from pfsmount.errors import InvalidArgument, StorageUnavailable
from pfsmount.store.objects import ObjectStore, open_objects
from pfsmount.store.s3 import S3ObjectStore, S3Settings
from tests.s3 import SeaweedS3
from tests.store.objects_contract import ObjectStoreContract

BUCKET = "pfsmount-tests"
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
            "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_MAX_ATTEMPTS")


@pytest.fixture(scope="session")
def bucket(s3_server: SeaweedS3) -> str:
    s3_server.make_bucket(BUCKET)
    return BUCKET


@pytest.fixture
def aws_env(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch,
            tmp_path: Path) -> SeaweedS3:
    """The environment an operator sets for the test server, and nothing from the host's
    own AWS settings (HOME is a scratch directory without ~/.aws)."""
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var, value in s3_server.env().items():
        monkeypatch.setenv(var, value)
    return s3_server


def fresh_url(bucket: str) -> str:
    return f"s3://{bucket}/t-{uuid.uuid4().hex[:12]}"


def raw(server: SeaweedS3, url: str) -> S3Store:
    """A client beside the backend, for what the backend must not do itself."""
    prefix = url.split("/", 3)[3]
    return S3Store(BUCKET, prefix=prefix, endpoint=server.endpoint, region=server.region,
                   access_key_id=server.access_key, secret_access_key=server.secret_key,
                   client_options={"allow_http": True})


class TestS3Objects(ObjectStoreContract):
    @pytest.fixture
    def url(self, aws_env: SeaweedS3, bucket: str) -> str:
        return fresh_url(bucket)

    @pytest.fixture(autouse=True)
    def _server(self, aws_env: SeaweedS3) -> None:
        self.s3 = aws_env

    def truncate(self, store: ObjectStore, name: str, size: int) -> None:
        """S3 objects cannot be cut: put a shorter one in its place behind the backend."""
        assert isinstance(store, S3ObjectStore)
        direct = raw(self.s3, store.settings.url)
        head = bytes(obstore.get_range(direct, name, start=0, length=size))
        obstore.put(direct, name, head)


# -- settings, as AWS tools read them ----------------------------------------------------------


def test_settings_come_from_the_environment_first(tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text(
        "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n")
    (tmp_path / "config").write_text("[default]\nregion = eu-west-1\n"
                                     "endpoint_url = http://file.example:9000\n")
    env = {"HOME": str(tmp_path), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
           "AWS_CONFIG_FILE": str(tmp_path / "config")}
    from_files = S3Settings("s3://b/p/q", env)
    assert (from_files.bucket, from_files.prefix) == ("b", "p/q")
    assert (from_files.access_key, from_files.secret_key) == ("FILEKEY", "FILESECRET")
    assert (from_files.region, from_files.endpoint) == ("eu-west-1", "http://file.example:9000")

    env |= {"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "ENVSECRET",
            "AWS_SESSION_TOKEN": "TOKEN", "AWS_REGION": "us-west-2",
            "AWS_ENDPOINT_URL": "http://env.example:1", "AWS_ENDPOINT_URL_S3": "http://s3.x:2"}
    from_env = S3Settings("s3://b", env)
    assert (from_env.access_key, from_env.secret_key, from_env.session_token) == (
        "ENVKEY", "ENVSECRET", "TOKEN")
    assert (from_env.region, from_env.endpoint, from_env.prefix) == (
        "us-west-2", "http://s3.x:2", "")
    in_url = S3Settings("s3://b/p?endpoint=http://url.example:3&region=ap-south-1", env)
    assert (in_url.endpoint, in_url.region) == ("http://url.example:3", "ap-south-1")


def test_a_named_profile_is_read_from_the_config_and_credentials_files(tmp_path: Path) -> None:
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text("[default]\naws_access_key_id = D\naws_secret_access_key = "
                                     "DS\n[work]\naws_access_key_id = W\n"
                                     "aws_secret_access_key = WS\n")
    (aws / "config").write_text("[default]\nregion = eu-west-1\n[profile work]\n"
                                "region = eu-north-1\n")
    work = S3Settings("s3://b", {"HOME": str(tmp_path), "AWS_PROFILE": "work"})
    assert (work.access_key, work.secret_key, work.session_token) == ("W", "WS", None)
    assert work.region == "eu-north-1"
    with pytest.raises(InvalidArgument, match="AWS profile 'nosuch'"):
        S3Settings("s3://b", {"HOME": str(tmp_path), "AWS_PROFILE": "nosuch"})


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://b/p?colour=red"])
def test_a_malformed_s3_url_is_one_clear_line(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        S3Settings(url, {})
    assert "\n" not in str(caught.value) and url in str(caught.value)


def test_a_profile_in_aws_files_reaches_the_real_server(aws_env: SeaweedS3, bucket: str,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """No AWS_* variable but AWS_PROFILE: endpoint, region and keys all from ~/.aws."""
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    aws = tmp_path / "home" / ".aws"
    aws.mkdir(parents=True)
    (aws / "credentials").write_text(f"[seaweed]\naws_access_key_id = {aws_env.access_key}\n"
                                     f"aws_secret_access_key = {aws_env.secret_key}\n")
    (aws / "config").write_text(f"[profile seaweed]\nregion = {aws_env.region}\n"
                                f"endpoint_url = {aws_env.endpoint}\n")
    monkeypatch.setenv("AWS_PROFILE", "seaweed")
    store = open_objects(fresh_url(bucket))
    src = tmp_path / "p"
    src.write_bytes(b"via the profile")
    store.put_file("p.pack", src)
    assert store.get_range("p.pack", 4, 3) == b"the"
    assert not src.exists()  # put_file consumed the local file


# -- one clear error ---------------------------------------------------------------------------


def one_line(caught: pytest.ExceptionInfo[StorageUnavailable], *words: str) -> str:
    message = str(caught.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def test_a_server_that_is_down_is_one_clear_error(aws_env: SeaweedS3, bucket: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.s3 import free_ports

    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        open_objects(f"s3://{bucket}/x")
    one_line(caught, endpoint, bucket, "does not answer")
    assert time.monotonic() - t0 < 10  # opening retries twice, not for minutes


def test_a_missing_bucket_is_one_clear_error(aws_env: SeaweedS3) -> None:
    with pytest.raises(StorageUnavailable) as caught:
        open_objects("s3://no-such-bucket/packs")
    one_line(caught, "no bucket 'no-such-bucket'", aws_env.endpoint)


def test_wrong_credentials_are_one_clear_error(aws_env: SeaweedS3, bucket: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StorageUnavailable) as caught:
        open_objects(f"s3://{bucket}/x")
    one_line(caught, "refused the credentials")


class Outage:
    """A TCP forwarder to the real server that can be taken away: while ``down``, its port
    refuses connections and the open ones are cut, as while a server restarts."""

    def __init__(self, upstream: int) -> None:
        from tests.s3 import free_ports

        self.port = free_ports(1)[0]
        self.upstream = upstream
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        self.up()

    def up(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.thread = threading.Thread(target=self.serve, args=(self.listener,), daemon=True)
        self.thread.start()

    def serve(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # shut down by down()
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def down(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() (Linux)
        self.listener.close()
        self.thread.join()
        with self.lock:
            cut, self.open = self.open, []
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_reads_ride_out_a_server_that_is_briefly_away(aws_env: SeaweedS3, bucket: str,
                                                      tmp_path: Path) -> None:
    """Retries with backoff: a read made while the server refuses connections succeeds once
    it takes them again, and returns the bytes put before."""
    outage = Outage(aws_env.s3_port)
    store = open_objects(fresh_url(bucket) + f"?endpoint=http://127.0.0.1:{outage.port}")
    src = tmp_path / "r"
    src.write_bytes(b"survives an outage")
    store.put_file("r.pack", src)
    outage.down()
    back = threading.Timer(1.5, outage.up)
    back.start()
    t0 = time.monotonic()
    try:
        assert store.get_range("r.pack", 0, 8) == b"survives"
    finally:
        back.join()
        outage.down()
    assert time.monotonic() - t0 >= 1.4  # it did wait for the server
