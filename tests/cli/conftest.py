"""The ``pfsmount`` command against a real daemon: the daemon fixtures (``pfsd``,
``fresh_pfsd``, ``no_daemon``, ``client``, ``web``, ``examples``) are tests/conftest.py's,
shared with tests/api and tests/e2e; this directory adds ``repo``."""

from __future__ import annotations

import re

import pytest

from pfsmount import Client


@pytest.fixture
def repo(request: pytest.FixtureRequest, client: Client) -> str:
    """A new, empty repo in the module's daemon, named after the test (made through the
    client: setup need not pay for a command)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:100]
    client.create_repo(name)
    return name
