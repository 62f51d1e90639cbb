"""Fixtures for the store's tests: the real S3 server (``tests/s3.py``) that S3 backend tests
run against, and its start-up time in the run's summary."""

from __future__ import annotations

import pytest

from tests.s3 import report_startup, s3_server

__all__ = ["s3_server"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    report_startup(terminalreporter)
