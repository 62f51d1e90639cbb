"""Shared fixtures. Every test that uses ``pfs`` ends with a full ``fsck``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pfsmount.pfs import Pfs
from pfsmount.pfs.fsck import fsck

# -- pfs: a real store (LMDB + pack files) under tmp_path, checked by fsck at teardown -------


@pytest.fixture
def pfs(tmp_path: Path) -> Iterator[Pfs]:
    store = Pfs(tmp_path / "root")
    try:
        yield store
        report = fsck(store, verify_data=True)
        if not report.ok:
            pytest.fail("fsck after the test found:\n" + "\n".join(report.errors))
    finally:
        store.close()
