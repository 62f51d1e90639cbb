"""``pfsmount pipeline draw``: the repos, the pipelines that read them and the state of each
pipeline's last job, as a tree in a terminal, as Mermaid and as Graphviz DOT (real daemon,
real bubblewrap; the DOT output must be a graph Graphviz's own ``dot`` draws).

The graph: repos ``dg_a`` and ``dg_b``; ``dg_up`` reads ``dg_a``; ``dg_bad`` (fails) reads
``dg_a``; ``dg_both`` reads ``dg_up`` and ``dg_b`` (a cross); ``dg_lone`` is a repo nobody
reads.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import unusable
from tests.scheduler.conftest import Pfsd


@pytest.fixture(scope="module")
def drawn(pfsd: Pfsd) -> Pfsd:
    pfsd.repos("dg_a", "dg_b", "dg_lone")
    pfsd.put("dg_a", {"x": "1"})
    pfsd.put("dg_b", {"y": "2"})
    pfsd.create(
        pfsd.spec("dg_up", "cp /pfs/dg_a/* /pfs/out/", pfsd.pin("dg_a")),
        pfsd.spec("dg_bad", "exit 4", pfsd.pin("dg_a", "/"), datum_tries=1),
        pfsd.spec("dg_both", "cat /pfs/dg_up/* /pfs/dg_b/* > /pfs/out/both",
                  {"cross": [pfsd.pin("dg_up", "/"), pfsd.pin("dg_b", "/", branch="master")]}))
    pfsd.run("commit", "wait", "dg_a@master", "--timeout", "90", timeout=120)
    pfsd.wait("dg_b@master")
    assert pfsd.quick_job("dg_bad")["state"] == "failure"
    assert pfsd.quick_job("dg_both")["state"] == "success"
    return pfsd


def test_text_is_a_tree_with_job_states(drawn: Pfsd) -> None:
    lines = drawn.ok("pipeline", "draw").splitlines()
    jobs = {p: drawn.quick_job(p)["id"][:12] for p in ("dg_up", "dg_bad", "dg_both")}
    at = {line.strip("│├└─ ").split(" ")[0]: line for line in lines}
    assert at["dg_a"] == "dg_a (repo)"  # a root: no indent
    assert at["dg_lone"] == "dg_lone (repo)"
    assert re.fullmatch(r"[├└]── dg_up \[/\*\] \(pipeline: job \w+ success\)", at["dg_up"])
    assert jobs["dg_up"] in at["dg_up"] and jobs["dg_bad"] in at["dg_bad"]
    assert re.fullmatch(r"[├└]── dg_bad \[/\] \(pipeline: job \w+ failure, datum \w+ "
                        r"failed after 1 tries \(exit code 4\).*\)", at["dg_bad"])
    # dg_both is drawn under dg_up (one level deeper) and named again under dg_b.
    below_up = lines[lines.index(at["dg_up"]) + 1]
    assert re.fullmatch(r"[│ ]   └── dg_both \[/\] \(pipeline: job \w+ success\)", below_up)
    b = lines.index("dg_b (repo)")
    assert lines[b + 1] == "└── dg_both [/] (above)"


def test_mermaid_and_dot_name_every_node_and_edge(drawn: Pfsd) -> None:
    mermaid = drawn.ok("pipeline", "draw", "--format", "mermaid").splitlines()
    assert mermaid[0] == "flowchart TD"
    ids = {}
    repo, pipeline = r'\[\("([^"]+)"\)\]', r'\["([^"<]+)<br/>[^"]+"\]'  # a cylinder, a box
    for line in mermaid[1:]:
        if m := re.fullmatch(rf"    (n\d+)(?:{repo}|{pipeline})", line):
            ids[m[2] or m[3]] = m[1]
    assert {"dg_a", "dg_b", "dg_lone", "dg_up", "dg_bad", "dg_both"} <= set(ids)
    edges = {(a, b) for a, b in re.findall(r"^    (n\d+) -->(?:\|\"[^\"]*\"\|)? (n\d+)$",
                                           "\n".join(mermaid), re.M)}
    for source, target in [("dg_a", "dg_up"), ("dg_a", "dg_bad"), ("dg_up", "dg_both"),
                           ("dg_b", "dg_both")]:
        assert (ids[source], ids[target]) in edges
    assert any(line.startswith("    class ") and line.endswith(" failure")
               and ids["dg_bad"] in line.split()[1].split(",") for line in mermaid)

    dot = drawn.ok("pipeline", "draw", "--format", "dot")
    if shutil.which("dot") is None:
        unusable("Graphviz (dot) is not installed (packaging/install.sh installs it)",
                 "CI must check the DOT output with it")
    svg = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True,
                         timeout=60)
    assert svg.returncode == 0, svg.stderr.decode()
    assert svg.stderr == b"", svg.stderr.decode()  # no warning either
    drawn_svg = svg.stdout.decode()
    for name in ("dg_a", "dg_b", "dg_lone", "dg_up", "dg_bad", "dg_both"):
        assert f">{name}<" in drawn_svg
    # Graphviz's own reading of the graph: its nodes and edges, by label.
    plain = subprocess.run(["dot", "-Tplain"], input=dot.encode(), capture_output=True,
                           timeout=60, check=True).stdout.decode().splitlines()
    label = {w[1]: w[6].strip('"').split("\\n")[0] for w in (line.split() for line in plain)
             if w[0] == "node"}
    edges_dot = {(label[w[1]], label[w[2]]) for w in (line.split() for line in plain)
                 if w[0] == "edge"}
    assert {("dg_a", "dg_up"), ("dg_a", "dg_bad"), ("dg_up", "dg_both"),
            ("dg_b", "dg_both")} <= edges_dot


def test_names_and_labels_any_language_takes() -> None:
    """Names with ``-`` and ``.``, a glob with quotes and a backslash, and no graph at all:
    each format stays valid (Graphviz reads the DOT; Mermaid gets entities, not quotes)."""
    from scheduler.dag import draw
    from scheduler.wire import Dag, DagEdge, DagNode

    assert draw(Dag(nodes=[], edges=[]), "text") == ""
    dag = Dag(nodes=[DagNode(name="raw-data.v2", kind="repo"),
                     DagNode(name="clean-up", kind="pipeline", job="f" * 32, state="running")],
              edges=[DagEdge(source="raw-data.v2", target="clean-up", label='dev /"a\\b"*')])
    assert draw(dag, "text").splitlines() == [
        "raw-data.v2 (repo)", '└── clean-up [dev /"a\\b"*] (pipeline: job ffffffffffff running)']
    assert '    n0 -->|"dev /#quot;a\\b#quot;*"| n1' in draw(dag, "mermaid").splitlines()
    if shutil.which("dot") is None:
        unusable("Graphviz (dot) is not installed (packaging/install.sh installs it)",
                 "CI must check the DOT output with it")
    for graph in (dag, Dag(nodes=[], edges=[])):
        plain = subprocess.run(["dot", "-Tplain"], input=draw(graph, "dot").encode(),
                               capture_output=True, timeout=60)
        assert plain.returncode == 0 and not plain.stderr, plain.stderr.decode()
    assert "clean-up\\nrunning" in subprocess.run(
        ["dot", "-Tplain"], input=draw(dag, "dot").encode(), capture_output=True,
        timeout=60).stdout.decode()
