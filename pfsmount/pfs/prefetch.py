"""Reading a large directory's pages ahead of a listing, several at a time.

A directory of many entries is a tree of pages in LMDB, named by hash, so they lie
scattered through the file. After a restart and a cold page cache, ``readdir`` faulted them
in one at a time, one random read after another: most of the time of a cold ``ls -l`` of
100,000 files. When a listing opens a directory made of several pages, a few threads read
its pages into the tree cache at once, level by level, while the listing starts.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from pfsmount.store.meta import Meta
from pfsmount.store.tree import Inner, Node, Trees

THREADS = 4  # concurrent random reads; the disk serves them in parallel
PAGES = 2048  # at most this many pages per directory (the tree cache holds 8192)


class Prefetcher:
    def __init__(self, meta: Meta, trees: Trees) -> None:
        self.meta = meta
        self.trees = trees
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="pfsmount-prefetch")

    def directory(self, top: Node) -> None:
        """Read the pages below ``top`` (a directory's first page, already read), in the
        background; a directory of one page has nothing more to read."""
        if isinstance(top, Inner):
            threading.Thread(target=self._walk, args=(list(top.children),),
                             name="pfsmount-prefetch-walk", daemon=True).start()

    def _page(self, digest: bytes) -> Node:
        with self.meta.read() as txn:
            return self.trees.node(txn, digest)

    def _walk(self, level: list[bytes]) -> None:
        budget = PAGES
        try:
            while level and budget > 0:
                level = level[:budget]
                budget -= len(level)
                pages = list(self._pool.map(self._page, level))
                level = [c for p in pages if isinstance(p, Inner) for c in p.children]
        except Exception:  # only a hint: the listing reads what it needs itself
            return

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
