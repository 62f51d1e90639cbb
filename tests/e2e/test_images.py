"""examples/images on the real Docker engine: thumbnails per image, then a montage.

The pipelines (``examples/images/pipelines.json``) run Python with Pillow in
``pfsmount-examples/python3-pil:latest``, the image ``packaging/images.sh`` builds with
debootstrap and ``docker import`` (no registry). The scripts come from an ``images_code``
repo. A user sees: one thumbnail per image, at most 128 pixels a side with its aspect kept; a
second commit that adds one image runs exactly one thumbnail datum (the others are skipped);
the montage is a PNG whose cells hold each image's colour.

Missing parts (FUSE, the engine, the image, Pillow) skip the test on a developer's machine and
fail it under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from pfsmount import Client
from pfsmount.api.pipeline_client import PipelineClient
from tests.conftest import PROJECT, Commands, Mounted, require_fuse, running, unusable

IMAGE = "pfsmount-examples/python3-pil:latest"
CI_NOTE = "CI must run examples/images (packaging/test.sh builds the image)"
EXAMPLE = PROJECT / "examples" / "images"
# name -> (size, colour): a wide JPEG, a tall PNG, a small PNG with alpha.
IMAGES: dict[str, tuple[tuple[int, int], tuple[int, int, int]]] = {
    "a.jpg": ((400, 300), (220, 30, 30)),
    "b.png": ((100, 500), (30, 200, 30)),
    "c.png": ((50, 50), (30, 30, 220)),
}
NEW = ("d.png", ((256, 256), (240, 200, 20)))

pytestmark = pytest.mark.timeout(240, method="thread")  # a hung mount read ignores signals


class Stand(Commands, Mounted):
    """A daemon with its mount at ROOT/mnt, driven by the ``pfsmount`` command."""


@pytest.fixture
def stand() -> Iterator[Stand]:
    require_fuse(CI_NOTE, "pyfuse3")
    if importlib.util.find_spec("PIL") is None:
        unusable("Pillow is not installed: pip install -e '.[test]'", CI_NOTE)
    try:
        p = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        unusable(f"no Docker engine answers: {e}", CI_NOTE)
    if p.returncode != 0:
        unusable(f"no {IMAGE} (run packaging/dockerd.sh, then packaging/images.sh)", CI_NOTE)
    with running(Stand("pfsi")) as d:
        yield d


def encode(name: str, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    mode = "RGBA" if name == "c.png" else "RGB"
    Image.new(mode, size, colour).save(buf, "JPEG" if name.endswith(".jpg") else "PNG")
    return buf.getvalue()


def last_job(c: Client, pipeline: str) -> dict[str, Any]:
    jobs = PipelineClient(c).jobs(pipeline)
    assert jobs, f"{pipeline} has no job"
    job: dict[str, Any] = msgspec.to_builtins(jobs[0])
    return job


def check_montage(d: Stand, images: dict[str, tuple[tuple[int, int], tuple[int, int, int]]]
                  ) -> None:
    """montage.png is a PNG grid of 128-pixel cells, in name order, each cell's centre the
    colour of its image (JPEG may shift a colour a little)."""
    from PIL import Image

    with Image.open(d.mnt / "montage" / "master" / "montage.png") as sheet:
        assert sheet.format == "PNG"
        sheet.load()
    columns = {3: 2, 4: 2}[len(images)]
    assert sheet.size == (columns * 128, 2 * 128), sheet.size
    for i, (_, colour) in enumerate(images[n] for n in sorted(images)):
        centre = ((i % columns) * 128 + 64, (i // columns) * 128 + 64)
        pixel = sheet.getpixel(centre)
        assert isinstance(pixel, tuple)
        assert all(abs(a - b) <= 8 for a, b in zip(pixel[:3], colour, strict=True)), (
            i, pixel, colour)


def test_thumbnails_then_montage_in_docker(stand: Stand) -> None:
    from PIL import Image

    d = stand
    with Client(d.root, timeout=60) as c:
        for repo in ("images", "images_code"):
            c.create_repo(repo)
        c.start_commit("images_code", "master")
        for script in ("thumbnail.py", "montage.py"):
            c.put_file(f"images_code@master:/{script}", (EXAMPLE / script).read_bytes())
        c.finish_commit("images_code@master")
        c.start_commit("images", "master")
        for name, (size, colour) in IMAGES.items():
            c.put_file(f"images@master:/{name}", encode(name, size, colour))
        first = c.finish_commit("images@master").id
    assert d.ok("pipeline", "create", "-f", EXAMPLE / "pipelines.json").split() == [
        "thumbnails", "montage"]
    d.ok("commit", "wait", f"images@{first}", "--timeout", "120", timeout=150)

    with Client(d.root, timeout=60) as c:
        job = last_job(c, "thumbnails")
        assert (job["state"], job["datums"], job["processed"]) == ("success", 3, 3), job
    thumbs = d.mnt / "thumbnails" / "master"
    assert sorted(p.name for p in thumbs.iterdir()) == ["a.png", "b.png", "c.png"]
    for name, ((w, h), _) in IMAGES.items():
        with Image.open(thumbs / name.replace(".jpg", ".png")) as thumb:
            assert thumb.format == "PNG"
            scale = min(1.0, 128 / max(w, h))
            assert thumb.size == (round(w * scale), round(h * scale)), (name, thumb.size)
    check_montage(d, IMAGES)

    # A second commit adds one image: one thumbnail datum runs, the other three are reused.
    name, (size, colour) = NEW
    with Client(d.root, timeout=60) as c:
        second = c.put_file(f"images@master:/{name}", encode(name, size, colour)).id
    d.ok("commit", "wait", f"images@{second}", "--timeout", "120", timeout=150)
    with Client(d.root, timeout=60) as c:
        job = last_job(c, "thumbnails")
        assert (job["state"], job["datums"], job["processed"], job["skipped"]) == (
            "success", 4, 1, 3), job
        assert last_job(c, "montage")["state"] == "success"
    assert sorted(p.name for p in thumbs.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    check_montage(d, {**IMAGES, name: (size, colour)})
