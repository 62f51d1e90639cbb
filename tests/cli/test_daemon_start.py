"""What `up` says when the daemon dies while starting: the error, not the traceback's frame."""

from __future__ import annotations

import subprocess
import sys

from pfsmount.daemon.launch import _last_message


def test_a_daemon_that_dies_in_an_exception_group_is_reported_by_its_error() -> None:
    # A real traceback of an exception group, as a trio nursery prints one: its last lines
    # are box drawing, which is what `up` used to report.
    code = ("raise ExceptionGroup('nursery', "
            "[ValueError('the mount point /x is not a directory')])")
    tail = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    assert tail.splitlines()[-1].strip().startswith("+--")
    assert _last_message(tail) == "ValueError: the mount point /x is not a directory"


def test_an_empty_log_says_nothing() -> None:
    assert _last_message("") == ""
    assert _last_message("  +------\n  |\n") == ""
