"""The daemon fixtures of ``tests/cli/conftest.py`` (real daemon, real command), shared here.

That file is loaded by path under a name of its own, so that the two ``conftest`` modules
never shadow each other; its fixtures are re-exported for pytest to find.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "pfsmount_cli_fixtures"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).resolve().parents[1] / "cli" / "conftest.py")
    assert _spec is not None and _spec.loader is not None
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])
_cli = sys.modules[_NAME]

examples = _cli.examples
no_daemon = _cli.no_daemon
fresh_pfsd = _cli.fresh_pfsd
