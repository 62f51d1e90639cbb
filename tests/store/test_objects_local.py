"""The local backend (``file://``) against the object store contract, and the URL registry
that picks a backend: a store on another directory, an unknown scheme, a registered one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfsmount.errors import PfsError
from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from pfsmount.pfs.fsck import fsck
from pfsmount.store import objects
from pfsmount.store.objects import LocalObjectStore, ObjectStore, open_objects, register
from tests.store.objects_contract import ObjectStoreContract


class TestLocalObjects(ObjectStoreContract):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return (tmp_path / "objects dir").as_uri()  # a space: the URL is unquoted

    def truncate(self, store: ObjectStore, name: str, size: int) -> None:
        assert isinstance(store, LocalObjectStore)
        os.truncate(store.directory / name, size)


def test_a_store_keeps_its_packs_where_its_url_says(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    pfs = Pfs(tmp_path / "root", open_objects(f"file://{elsewhere}"))
    try:
        pfs.repos.create("data")
        pfs.files.put("data@master", Data(b"kept elsewhere\n" * 1000), path="f")
        pfs.store.packs.seal()
        assert [p.suffix for p in elsewhere.iterdir()] == [".pack"]
        assert not (tmp_path / "root" / "packs").exists()
        _, entry = pfs.files.open("data@master:/f")
        assert b"".join(pfs.files.read(entry)) == b"kept elsewhere\n" * 1000
        assert fsck(pfs, verify_data=True).errors == []
    finally:
        pfs.close()


@pytest.mark.parametrize("url", ["ftp://host/packs", "/var/packs", "file://host/packs",
                                 "file:packs"])
def test_a_url_no_backend_serves_is_one_clear_line(url: str) -> None:
    with pytest.raises(PfsError) as caught:
        open_objects(url)
    message = str(caught.value)
    assert "\n" not in message and url in message and "file:///" in message


@pytest.fixture
def registry() -> Iterator[None]:
    saved = dict(objects._factories)
    yield
    objects._factories.clear()
    objects._factories.update(saved)


def test_a_registered_scheme_gets_the_whole_url(registry: None, tmp_path: Path) -> None:
    asked: list[str] = []

    def factory(url: str) -> ObjectStore:
        asked.append(url)
        return LocalObjectStore(tmp_path / "mem")

    register("MEM", factory)
    store = open_objects("mem://bucket/prefix?x=1")
    assert isinstance(store, LocalObjectStore) and asked == ["mem://bucket/prefix?x=1"]
    store.close()
