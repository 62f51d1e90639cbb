"""Thumbnails: each image under IN becomes a PNG of at most SIZE x SIZE pixels (aspect kept)
under OUT, named after it: ``photos/cat.jpg`` -> ``OUT/photos/cat.png``.

    python3 thumbnail.py IN OUT [SIZE]

As a pipeline with glob ``/*`` each datum holds one image, so a commit that adds one image
makes one thumbnail; the others are reused from the job before.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError


def thumbnail(source: Path, target: Path, size: int) -> None:
    with Image.open(source) as image:
        image.thumbnail((size, size))
        target.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGBA" if "A" in image.getbands() else "RGB").save(target, "PNG")


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print("usage: python3 thumbnail.py IN OUT [SIZE]", file=sys.stderr)
        return 2
    inputs, out = Path(argv[1]), Path(argv[2])
    size = int(argv[3]) if len(argv) == 4 else 128
    sources = [inputs] if inputs.is_file() else sorted(p for p in inputs.rglob("*") if p.is_file())
    for source in sources:
        name = source.relative_to(inputs.parent if inputs.is_file() else inputs)
        try:
            thumbnail(source, (out / name).with_suffix(".png"), size)
        except UnidentifiedImageError:
            print(f"thumbnail.py: {source} is not an image Pillow can read", file=sys.stderr)
            return 1
        print(f"{source} -> {(out / name).with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
