"""The pipeline graph (``pfsmount pipeline draw``): which repos and pipelines there are, which
reads which, and how each pipeline's last job went; drawn as an indented tree for a terminal,
as Mermaid or as Graphviz DOT.

``graph`` reads the scheduler's records (daemon side); the drawing functions take the
``scheduler.wire.Dag`` the API answers with, so the CLI draws without the scheduler (it
imports this module only for them). A pipeline stands for its output repo too, as in
Pachyderm's DAG. Nothing here changes anything.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from scheduler.wire import Dag, DagEdge, DagNode

if TYPE_CHECKING:
    from scheduler.engine import Scheduler

FORMATS = ("text", "mermaid", "dot")


def graph(s: Scheduler) -> Dag:
    """Every repo and pipeline, the edges from what each pipeline reads to it, and each
    pipeline's last job."""
    pipelines = sorted(s.list_pipelines(), key=lambda p: p.name)
    names = {p.name for p in pipelines}
    last: dict[str, tuple[str, str, str]] = {}
    for job in s.list_jobs():  # newest first
        if job.pipeline in names and job.pipeline not in last:
            last[job.pipeline] = (job.id, job.state, (job.error.splitlines() or [""])[0])
    nodes = [DagNode(name=r.name, kind="repo") for r in sorted(s.pfs.repos.list(),
                                                                   key=lambda r: r.name)
             if r.name not in names]
    edges = []
    for p in pipelines:
        job_id, state, error = last.get(p.name, ("", "", ""))
        nodes.append(DagNode(name=p.name, kind="pipeline", job=job_id, state=state,
                             stopped=p.stopped, error=error))
        for leaf in p.spec.tree.leaves():
            label = " ".join(x for x in (leaf.branch if leaf.branch != "master" else "",
                                         leaf.glob) if x)
            edges.append(DagEdge(source=leaf.repo, target=p.name, label=label))
    return Dag(nodes=nodes, edges=edges)


def _status(n: DagNode) -> str:
    """What a node's line says about it: a pipeline's last job, and whether it is stopped."""
    if n.kind == "repo":
        return "repo"
    parts = [f"job {n.job[:12]} {n.state}" if n.job else "no job yet"]
    if n.stopped:
        parts.append("stopped")
    if n.error and n.state != "success":
        parts.append(n.error if len(n.error) <= 80 else n.error[:77] + "...")
    return "pipeline: " + ", ".join(parts)


def text(dag: Dag) -> str:
    """An indented tree: each repo no pipeline writes at the top, what reads it below it. A
    pipeline that reads several inputs is drawn in full under the first and named again
    (``(above)``) under the others."""
    by_name = {n.name: n for n in dag.nodes}
    readers: dict[str, list[DagEdge]] = {}
    for e in dag.edges:
        readers.setdefault(e.source, []).append(e)
    drawn: set[str] = set()
    lines: list[str] = []

    def walk(name: str, prefix: str, edge: DagEdge | None, last: bool, top: bool) -> None:
        node = by_name.get(name) or DagNode(name=name, kind="repo")
        via = f" [{edge.label}]" if edge is not None and edge.label else ""
        branch = "" if top else ("└── " if last else "├── ")
        if name in drawn:
            lines.append(f"{prefix}{branch}{name}{via} (above)")
            return
        drawn.add(name)
        lines.append(f"{prefix}{branch}{name}{via} ({_status(node)})")
        below = readers.get(name, [])
        inner = prefix if top else prefix + ("    " if last else "│   ")
        for i, e in enumerate(below):
            walk(e.target, inner, e, i == len(below) - 1, False)

    targets = {e.target for e in dag.edges}
    for n in dag.nodes:
        if n.name not in targets:
            walk(n.name, "", None, True, True)
    for n in dag.nodes:  # a cycle has no root; there is none, but nothing is left out
        if n.name not in drawn:
            walk(n.name, "", None, True, True)
    return "".join(f"{line}\n" for line in lines)  # nothing at all: no repo yet


def _ids(dag: Dag) -> dict[str, str]:
    """Node ids both languages take whatever the names hold (``-``, ``.``)."""
    return {n.name: f"n{i}" for i, n in enumerate(dag.nodes)}


_MERMAID_CLASSES = {
    "success": "fill:#d4f7d4,stroke:#2e7d32",
    "failure": "fill:#ffd6d6,stroke:#c62828",
    "running": "fill:#fff3c4,stroke:#f9a825",
    "egressing": "fill:#fff3c4,stroke:#f9a825",
    "created": "fill:#fff3c4,stroke:#f9a825",
    "killed": "fill:#e0e0e0,stroke:#616161",
    "unrunnable": "fill:#e0e0e0,stroke:#c62828",
}


def _label(n: DagNode) -> str:
    return n.name if n.kind == "repo" else f"{n.name}\n{n.state or 'no job yet'}" + (
        " (stopped)" if n.stopped else "")


def _mermaid_text(s: str) -> str:
    """Text inside a quoted Mermaid label: quotes as entities, newlines as breaks."""
    return s.replace('"', "#quot;").replace("\n", "<br/>")


def mermaid(dag: Dag) -> str:
    """A Mermaid flowchart: repos as cylinders, pipelines as boxes coloured by their last
    job's state."""
    ids = _ids(dag)
    lines = ["flowchart TD"]
    for n in dag.nodes:
        text = _mermaid_text(_label(n))
        shape = f'[("{text}")]' if n.kind == "repo" else f'["{text}"]'
        lines.append(f"    {ids[n.name]}{shape}")
    for e in dag.edges:
        source = ids.get(e.source)
        if source is None:  # an input repo that is gone: draw it all the same
            source = ids[e.source] = f"n{len(ids)}"
            lines.append(f'    {source}[("{e.source} (missing)")]')
        label = f'|"{_mermaid_text(e.label)}"|' if e.label else ""
        lines.append(f"    {source} -->{label} {ids[e.target]}")
    for state, style in _MERMAID_CLASSES.items():
        members = [ids[n.name] for n in dag.nodes if n.kind == "pipeline" and n.state == state]
        if members:
            lines.append(f"    classDef {state} {style}")
            lines.append(f"    class {','.join(members)} {state}")
    return "\n".join(lines) + "\n"


_DOT_COLOURS = {"success": "#d4f7d4", "failure": "#ffd6d6", "running": "#fff3c4",
                "egressing": "#fff3c4", "created": "#fff3c4", "killed": "#e0e0e0",
                "unrunnable": "#e0e0e0"}


def _quote(s: str) -> str:
    """A DOT string: JSON's escapes are DOT's (``\\"``, ``\\\\``); a newline is ``\\n``."""
    return json.dumps(s, ensure_ascii=False)


def dot(dag: Dag) -> str:
    """A Graphviz digraph: repos as cylinders, pipelines as boxes filled by their last
    job's state."""
    ids = _ids(dag)
    lines = ["digraph pfsmount {", "    rankdir=TB;", "    node [fontname=\"Helvetica\"];"]
    for n in dag.nodes:
        if n.kind == "repo":
            attrs = f"shape=cylinder, label={_quote(n.name)}"
        else:
            fill = _DOT_COLOURS.get(n.state, "#ffffff")
            attrs = (f"shape=box, style=\"rounded,filled\", fillcolor={_quote(fill)}, "
                     f"label={_quote(_label(n))}")
        lines.append(f"    {ids[n.name]} [{attrs}];")
    for e in dag.edges:
        source = ids.get(e.source)
        if source is None:
            source = ids[e.source] = f"n{len(ids)}"
            lines.append(f"    {source} [shape=cylinder, style=dashed, "
                         f"label={_quote(e.source + ' (missing)')}];")
        label = f" [label={_quote(e.label)}]" if e.label else ""
        lines.append(f"    {source} -> {ids[e.target]}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(dag: Dag, fmt: str) -> str:
    return {"text": text, "mermaid": mermaid, "dot": dot}[fmt](dag)
