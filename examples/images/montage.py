"""Montage: every PNG under IN (the thumbnails), in name order, on one contact sheet: a grid
of SIZE x SIZE cells, as square as it goes, each thumbnail centred in its cell.

    python3 montage.py IN OUT.png [SIZE]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from PIL import Image


def montage(sources: list[Path], size: int) -> Image.Image:
    columns = max(1, math.ceil(math.sqrt(len(sources))))
    rows = max(1, math.ceil(len(sources) / columns))
    sheet = Image.new("RGB", (columns * size, rows * size), "white")
    for i, source in enumerate(sources):
        with Image.open(source) as thumb:
            thumb = thumb.convert("RGBA")
            x = (i % columns) * size + (size - thumb.width) // 2
            y = (i // columns) * size + (size - thumb.height) // 2
            sheet.paste(thumb, (x, y), thumb)
    return sheet


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print("usage: python3 montage.py IN OUT.png [SIZE]", file=sys.stderr)
        return 2
    sources = sorted(p for p in Path(argv[1]).rglob("*.png") if p.is_file())
    size = int(argv[3]) if len(argv) == 4 else 128
    montage(sources, size).save(argv[2], "PNG")
    print(f"{len(sources)} thumbnails -> {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
