"""The example notebook, executed by a real Jupyter kernel against a real mount.

``examples/fruit_stand/explore.ipynb`` reads ``$PFS_MOUNT/data/master/sales`` (the test points
``PFS_MOUNT`` at its daemon's mount) after the walkthrough's two 1.x ``put-file -c``; nbclient
runs every cell in an ipykernel. What a user reads must be right: the totals per fruit it
prints equal a recomputation from the raw sales, and its plot is a PNG image.

nbclient, ipykernel, pandas, matplotlib (the ``notebook`` extra, pulled in by ``test``) and
FUSE are real parts: missing, they skip the test on a developer's machine and fail it under
``CI=true``.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pfsmount import Client
from tests.conftest import EXAMPLES, Commands, Mounted, require_fuse, running, unusable

CI_NOTE = "CI must run the example notebook (the notebook extra, pulled in by test)"

pytestmark = pytest.mark.timeout(240, method="thread")  # a hung mount read ignores signals


class Stand(Commands, Mounted):
    """A daemon with its mount at ROOT/mnt, driven by the ``pfsmount`` command."""


@pytest.fixture
def stand() -> Iterator[Stand]:
    require_fuse(CI_NOTE, "pyfuse3")
    missing = [m for m in ("nbclient", "nbformat", "ipykernel", "pandas", "matplotlib", "PIL")
               if importlib.util.find_spec(m) is None]
    if missing:
        unusable("the notebook extra is not installed: missing " + ", ".join(missing), CI_NOTE)
    with running(Stand("pfsn")) as d:
        yield d


def test_explore_notebook_prints_the_totals_from_the_mount(stand: Stand,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import nbformat
    from nbclient import NotebookClient
    from PIL import Image

    d = stand
    days = [(EXAMPLES / day).read_bytes() for day in ("set1.txt", "set2.txt")]
    with Client(d.root, timeout=60) as c:  # the walkthrough's two appends, quickly
        c.create_repo("data")
        for day in days:
            c.put_file("data@master:/sales", day, append=True)
    expected = Counter[str]()
    for line in b"".join(days).decode().splitlines():
        fruit, amount = line.split()
        expected[fruit] += int(amount)

    notebook = nbformat.read(EXAMPLES / "explore.ipynb",  # type: ignore[no-untyped-call]
                             as_version=4)
    monkeypatch.setenv("PFS_MOUNT", str(d.mnt))  # the kernel inherits the environment
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(d.root)}}).execute()

    outputs: list[Any] = [o for cell in notebook.cells if cell.cell_type == "code"
                          for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"], outputs
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    totals = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+): (\d+)$", printed, re.M)}
    assert totals == dict(expected), printed
    # The mount point it read: the one PFS_MOUNT named, not /pfs.
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert f"{d.mnt}/data/master/sales" in shown, shown

    pngs = [base64.b64decode(o.data["image/png"]) for o in outputs
            if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pngs) == 1, outputs
    with Image.open(io.BytesIO(pngs[0])) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
