"""The local backend (``file://``) against the object store contract (a store whose packs
live in another directory among it), and the URL registry that picks a backend: an unknown
scheme, a malformed URL, a registered scheme."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfsmount.errors import PfsError
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
