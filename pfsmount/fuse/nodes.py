"""Inode numbers for the mount: which repo, view and path each kernel inode stands for.

``/pfs`` is inode 1; ``/pfs/<repo>`` and ``/pfs/<repo>/<view>/<path>`` get numbers on first
lookup and keep them while the kernel holds a reference (its lookup count). A view is a branch
name (read-write for input repos) or a commit id (read-only). Paths are ``a/b`` strings, ``""``
for the view's root. Renames re-key a node and everything below it, so the kernel's inode
keeps naming the same file. Nothing here reads the store.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT_INODE = 1


@dataclass(eq=False)
class Node:
    ino: int
    repo: str = ""  # "" for the root
    view: str | None = None  # None for a repo directory
    path: str = ""
    lookups: int = 0
    handles: int = 0
    unlinked: bool = False

    @property
    def key(self) -> tuple[str, str | None, str]:
        return (self.repo, self.view, self.path)

    @property
    def name(self) -> str:
        if self.view is None:
            return self.repo
        if not self.path:
            return self.view
        return self.path.rsplit("/", 1)[-1]

    def child_key(self, name: str) -> tuple[str, str | None, str]:
        if not self.repo:
            return (name, None, "")
        if self.view is None:
            return (self.repo, name, "")
        return (self.repo, self.view, f"{self.path}/{name}" if self.path else name)


class Nodes:
    """The inode table; owned by the trio thread, so it needs no lock."""

    def __init__(self) -> None:
        self.root = Node(ROOT_INODE, lookups=1)
        self._by_ino: dict[int, Node] = {ROOT_INODE: self.root}
        self._by_key: dict[tuple[str, str | None, str], Node] = {self.root.key: self.root}
        self._next = ROOT_INODE + 1

    def get(self, ino: int) -> Node | None:
        return self._by_ino.get(ino)

    def find(self, key: tuple[str, str | None, str]) -> Node | None:
        return self._by_key.get(key)

    def child(self, parent: Node, name: str) -> Node:
        """The node for ``name`` under ``parent``, made if new (without a lookup count)."""
        key = parent.child_key(name)
        node = self._by_key.get(key)
        if node is None:
            node = Node(self._next, key[0], key[1], key[2])
            self._next += 1
            self._by_ino[node.ino] = node
            self._by_key[key] = node
        return node

    def forget(self, ino: int, count: int) -> None:
        node = self._by_ino.get(ino)
        if node is None or node is self.root:
            return
        node.lookups -= count
        self.maybe_drop(node)

    def maybe_drop(self, node: Node) -> None:
        if node.lookups <= 0 and node.handles <= 0 and node is not self.root:
            self._by_ino.pop(node.ino, None)
            if self._by_key.get(node.key) is node:
                del self._by_key[node.key]

    def detach(self, key: tuple[str, str | None, str]) -> Node | None:
        """Unlink: the name no longer reaches this node, though the kernel may still hold it."""
        node = self._by_key.pop(key, None)
        if node is not None:
            node.unlinked = True
        return node

    def rename(self, old: tuple[str, str | None, str], new: tuple[str, str | None, str]) -> None:
        """Re-key the node at ``old`` and every node below it to ``new``."""
        self.detach(new)
        repo, view, path = old
        prefix = path + "/"
        moved = [
            n for k, n in self._by_key.items()
            if k[0] == repo and k[1] == view and (k[2] == path or k[2].startswith(prefix))
        ]
        for node in moved:
            del self._by_key[node.key]
        for node in moved:
            node.path = new[2] + node.path[len(path):]
            self._by_key[node.key] = node

    def __len__(self) -> int:
        return len(self._by_ino)
