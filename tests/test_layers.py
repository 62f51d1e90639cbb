"""The layers of DESIGN.md hold in the code: each layer imports only those below it.

Every import counts, at module level or inside a function, and under ``TYPE_CHECKING`` too:
a lazy import upward is still a dependency upward. The check reads the source (no imports
run), so it is fast and sees modules that tests never load.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Highest first. A module may import its own layer and any layer below it.
LAYERS = [
    "cli",
    "pfsmount.workbench",
    "pfsmount.daemon",
    "pfsmount.api",
    "pfsmount.fuse",
    "scheduler",
    "pfsmount.pfs",
    "pfsmount.store",
    "pfsmount",  # the shared base: errors, config, humanize
]
# Parts only some layers may touch: the store is the model's private business.
OWNED = {
    "lmdb": {"pfsmount.store", "pfsmount.pfs"},
    "pfsmount.store": {"pfsmount.store", "pfsmount.pfs"},
    "pyfuse3": {"pfsmount.fuse"},
}


def owners(imported: str) -> set[str] | None:
    for part, layers in OWNED.items():
        if imported == part or imported.startswith(part + "."):
            return layers
    return None


def layer_of(module: str) -> str:
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    raise AssertionError(f"{module} is in no layer of DESIGN.md")


def project_modules() -> dict[str, Path]:
    paths = [REPO / "cli.py", *(REPO / "pfsmount").rglob("*.py"),
             *(REPO / "scheduler").rglob("*.py")]
    modules = {}
    for path in paths:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path) -> set[str]:
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
    return found


def bad_imports(module: str, path: Path) -> list[str]:
    """What ``module`` (its source at ``path``) imports against the layers, one line each."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    mine = layer_of(module)
    found = []
    for imported in sorted(imports_of(module, path)):
        top = imported.split(".")[0]
        allowed = owners(imported)
        if allowed is not None and mine not in allowed:
            found.append(f"{module} imports {imported}, which only "
                         f"{' and '.join(sorted(allowed))} may use")
        elif top in ("pfsmount", "scheduler", "cli") and rank[layer_of(imported)] < rank[mine]:
            found.append(f"{module} ({mine}) imports {imported}, a layer above")
    return found


def test_every_module_imports_only_its_own_layer_and_those_below() -> None:
    found = [line for module, path in sorted(project_modules().items())
             if module != "pfsmount"  # the package face: re-exports the client on first use
             for line in bad_imports(module, path)]
    assert found == []


@pytest.mark.parametrize("module,source", [
    ("scheduler.x", "from pfsmount.api.client import Client"),
    ("pfsmount.fuse.x", "import lmdb"),
    ("pfsmount.pfs.x", "def f():\n    from pfsmount.fuse import ops"),
    ("pfsmount.store.sub.x", "from ...pfs import Pfs"),
    ("pfsmount.daemon.x", "from pfsmount.store.meta import Meta"),
])
def test_the_check_sees_an_upward_import(module: str, source: str, tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text(source)
    assert bad_imports(module, path)


def test_a_downward_import_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text("import lmdb\nfrom pfsmount.store import Store\nfrom . import model\n")
    assert bad_imports("pfsmount.pfs.x", path) == []
