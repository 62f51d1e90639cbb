"""Progress of a long put reaches the caller while it runs, not only at the end."""

from __future__ import annotations

import os
from pathlib import Path

from pfsmount import Client
from pfsmount.api.wire import Counts


def test_a_big_single_file_put_reports_progress_as_it_goes(client: Client,
                                                           tmp_path: Path) -> None:
    size = 384 << 20
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    seen: list[Counts] = []
    client.create_repo("progress")
    commit = client.put_file("progress@master:/big.bin", big, progress=seen.append)
    assert commit.size == size
    during = [c.bytes for c in seen if c.files == 0]
    assert len(during) >= 2, seen  # reported while the file was being stored
    assert during == sorted(during) and 0 < during[0] < size
    assert seen[-1] == Counts(files=1, bytes=size)  # and once more when it is done
