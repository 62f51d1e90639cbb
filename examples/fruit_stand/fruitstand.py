"""The seed's fruit-stand pipeline in Python with pandas: filter the sales by fruit, then sum
each group.

    python3 fruitstand.py SALES [OUT]

SALES holds "fruit amount" lines: /pfs/data/sales inside a pipeline, or
/pfs/data/master/sales (any commit: /pfs/data/<commit-id>/sales) straight from the mount.
With OUT (a pipeline's /pfs/out), each fruit gets a file there holding its total, as the shell
pipelines' ``sum`` writes it; without OUT, the totals are printed as "fruit total" lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def totals(sales: Path) -> pd.Series:
    """Total amount per fruit, by fruit name."""
    if sales.stat().st_size == 0:
        return pd.Series(dtype="int64")
    table = pd.read_csv(sales, sep=r"\s+", header=None, names=["fruit", "amount"])
    return table.groupby("fruit")["amount"].sum().sort_index()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python3 fruitstand.py SALES [OUT]", file=sys.stderr)
        return 2
    for fruit, total in totals(Path(argv[1])).items():
        if len(argv) == 3:
            (Path(argv[2]) / str(fruit)).write_text(f"{total}\n")
        else:
            print(fruit, total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
