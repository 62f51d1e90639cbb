"""Pipeline specs in the shape of Pachyderm 2.x's own examples (pachyderm/pachyderm,
``examples/``), created as a new user would (``pfsmount pipeline create -f`` on the spec file,
``datum list -f`` first as a dry run) and run on small data through a live daemon and real
bubblewrap, checked against the results those examples document. Each spec keeps its example's
fields and spelling (``pipeline: {name:}``, JSON or multi-document YAML, camelCase where the
example has it); only the image goes (the datums run in the sandbox), and a program the image
held is replaced by a few lines of shell doing the same. ``lab_group_by_hospital`` names no
image and runs verbatim. Specs pfsmount refuses are checked to be refused by name: those are
``REFUSED`` below.
"""

from __future__ import annotations

import json
from typing import Any

from tests.scheduler.conftest import Pfsd

# examples/opencv/edges.pipeline.json and montage.pipeline.json, as one YAML file of two
# documents. edges.py writes /pfs/out/<name> for each image; montage joins them all in one.
OPENCV_YAML = """\
pipeline:
  name: edges
description: A pipeline that performs image edge detection by using the OpenCV library.
input:
  pfs:
    glob: "/*"
    repo: images
autoscaling: true
transform:
  cmd: [sh]
  stdin:
  - for f in /pfs/images/*; do tr a-z A-Z < $f > /pfs/out/$(basename $f); done
---
pipeline:
  name: montage
description: A pipeline that combines images from the `images` and `edges` repositories.
input:
  cross:
  - pfs:
      glob: "/"
      repo: images
  - pfs:
      glob: "/"
      repo: edges
transform:
  cmd: [sh]
  stdin:
  - cat $(find -L /pfs/images /pfs/edges -type f | sort) > /pfs/out/montage.png
"""


def dry_run(pfsd: Pfsd, path: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = pfsd.json("datum", "list", "-f", path)
    return items


def test_opencv_edges_and_montage(pfsd: Pfsd) -> None:
    pfsd.repos("images")
    pfsd.put("images", {"liberty.png": "liberty\n", "kitten.png": "kitten\n"})
    spec = pfsd.spec_file(yaml_text=OPENCV_YAML)
    # The dry run: one datum per image for edges (glob /*); montage reads edges, not made yet.
    assert sorted(d["files"][0].rsplit(":", 1)[1] for d in dry_run(pfsd, spec)) == [
        "/kitten.png", "/liberty.png"]
    assert pfsd.ok("pipeline", "create", "-f", spec).split() == ["edges", "montage"]
    pfsd.wait("images@master")
    assert pfsd.quick_job("edges")["datums"] == 2
    assert pfsd.tree("edges") == {"kitten.png": b"KITTEN\n", "liberty.png": b"LIBERTY\n"}
    assert pfsd.quick_job("montage")["datums"] == 1  # glob / : the whole of both inputs
    assert pfsd.tree("montage") == {"montage.png": b"KITTEN\nLIBERTY\nkitten\nliberty\n"}

    # The example's second step: one more image, and edges processes only it.
    pfsd.put("images", {"at-at.png": "at-at\n"})
    pfsd.wait("images@master")
    job = pfsd.quick_job("edges")
    assert (job["state"], job["datums"], job["skipped"]) == ("success", 3, 2), job
    assert pfsd.tree("montage")["montage.png"].startswith(b"AT-AT\nKITTEN\nLIBERTY\n")


# examples/joins: stores/STOREID<n>.txt, purchases/<P>_STOREID<n>.txt, returns likewise.
STORES = {f"STOREID{n}.txt": f"zip{n}\n" for n in (1, 2, 3)}
PURCHASES = {"P1_STOREID1.txt": "p1\n", "P2_STOREID1.txt": "p2\n", "P3_STOREID2.txt": "p3\n",
             "P4_STOREID4.txt": "p4\n"}
RETURNS = {"R1_STOREID2.txt": "r1\n", "R2_STOREID5.txt": "r2\n"}


def join_spec(name: str, other: str, outer: bool) -> dict[str, Any]:
    """inner_join.pipeline.json / outer_join.pipeline.json, main.py as shell: each datum writes
    its store's zip and the other file to /pfs/out/<store key>/<the other file's name> (the
    store's own name when alone). Each datum writes paths of its own: two datums writing one
    path fail the job, Pachyderm 2's "single datum provenance rule"."""
    extra = {"outer_join": True} if outer else {}
    return {
        "pipeline": {"name": name},
        "description": f"A pipeline that lists all {other} by zipcode.",
        "input": {"join": [
            {"pfs": {"repo": "stores", "branch": "master", "glob": "/STOREID(*).txt",
                     "join_on": "$1", **extra}},
            {"pfs": {"repo": other, "branch": "master", "glob": "/*_STOREID(*).txt",
                     "join_on": "$1", **extra}}]},
        "transform": {"cmd": ["sh"], "stdin": [
            f"k=${{PACH_DATUM_stores_JOIN_ON:-$PACH_DATUM_{other}_JOIN_ON}}",
            "mkdir -p /pfs/out/$k",
            f"name=$(ls /pfs/{other} 2>/dev/null || ls /pfs/stores)",
            f"cat /pfs/stores/* /pfs/{other}/* > /pfs/out/$k/$name 2>/dev/null; true"]},
    }


def test_inner_and_outer_joins(pfsd: Pfsd) -> None:
    pfsd.repos("stores", "purchases", "returns")
    pfsd.put("stores", STORES)
    pfsd.put("purchases", PURCHASES)
    pfsd.put("returns", RETURNS)
    inner = pfsd.spec_file(join_spec("inner_join", "purchases", outer=False))
    outer = pfsd.spec_file(join_spec("outer_join", "returns", outer=True))
    # Inner: a datum per store and purchase of that store (1x2, 2x1); store 3 has none and
    # purchase 4 no store. Outer on both: 2 matched, store 1 and 3 alone, return 5 alone.
    assert len(dry_run(pfsd, inner)) == 3
    assert len(dry_run(pfsd, outer)) == 4
    pfsd.ok("pipeline", "create", "-f", inner)
    pfsd.ok("pipeline", "create", "-f", outer)
    pfsd.wait("returns@master")
    pfsd.wait("purchases@master")
    assert pfsd.quick_job("inner_join")["datums"] == 3
    assert pfsd.tree("inner_join") == {"1/P1_STOREID1.txt": b"zip1\np1\n",
                                       "1/P2_STOREID1.txt": b"zip1\np2\n",
                                       "2/P3_STOREID2.txt": b"zip2\np3\n"}
    assert pfsd.quick_job("outer_join")["datums"] == 4
    assert pfsd.tree("outer_join") == {"1/STOREID1.txt": b"zip1\n",
                                       "2/R1_STOREID2.txt": b"zip2\nr1\n",
                                       "3/STOREID3.txt": b"zip3\n",
                                       "5/R2_STOREID5.txt": b"r2\n"}


# examples/group/pipelines/lab/lab_group_by_hospital.pipeline.json, verbatim: it names no
# image and its bash stdin runs as it is.
LAB_GROUP_BY_HOSPITAL = """{
  "pipeline": {
    "name": "group_by_hospital"
  },
  "description": "A pipeline that groups lab test results files by hospital using the files naming pattern.",
  "input": {
    "group": [
      {
        "pfs": {
          "repo": "labresults",
          "branch": "master",
          "glob": "/*-CLIA(*).txt",
          "group_by": "$1"
        }
      }
    ]
  },
  "transform": {
    "cmd": ["bash"],
    "stdin": [
      "mkdir -p /pfs/out/${PACH_DATUM_labresults_GROUP_BY}/",
      "cp /pfs/labresults/* /pfs/out/${PACH_DATUM_labresults_GROUP_BY}/"
    ]
  }
}
"""  # noqa: E501 (the example's description line, verbatim)


def test_group_by_hospital_and_store(pfsd: Pfsd) -> None:
    pfsd.repos("labresults", "gstores", "gpurchases", "greturns")
    pfsd.put("labresults", {"T1-CLIA01.txt": "a\n", "T2-CLIA01.txt": "b\n",
                            "T3-CLIA02.txt": "c\n"})
    lab = pfsd.spec_file(yaml_text=LAB_GROUP_BY_HOSPITAL)
    assert len(dry_run(pfsd, lab)) == 2  # one datum per hospital
    pfsd.ok("pipeline", "create", "-f", lab)
    pfsd.wait("labresults@master")
    assert pfsd.quick_job("group_by_hospital")["datums"] == 2
    assert pfsd.tree("group_by_hospital") == {"01/T1-CLIA01.txt": b"a\n",
                                              "01/T2-CLIA01.txt": b"b\n",
                                              "02/T3-CLIA02.txt": b"c\n"}

    # retail_group.pipeline.json: three inputs grouped by store; a store's datum holds its
    # store file, purchases and returns (main.py: revenue = purchases - returns).
    pfsd.put("gstores", {"STOREID1.txt": "", "STOREID2.txt": ""})
    pfsd.put("gpurchases", {"A_STOREID1.txt": "10\n", "B_STOREID1.txt": "5\n",
                            "C_STOREID2.txt": "7\n"})
    pfsd.put("greturns", {"R_STOREID1.txt": "3\n"})
    pfsd.create({
        "pipeline": {"name": "group_store_revenue"},
        "input": {"group": [
            {"pfs": {"repo": "gstores", "branch": "master", "glob": "/STOREID(*).txt",
                     "group_by": "$1"}},
            {"pfs": {"repo": "gpurchases", "branch": "master", "glob": "/*_STOREID(*).txt",
                     "group_by": "$1"}},
            {"pfs": {"repo": "greturns", "branch": "master", "glob": "/*_STOREID(*).txt",
                     "group_by": "$1"}}]},
        "transform": {"cmd": ["sh"], "stdin": [
            "p=$(cat /pfs/gpurchases/* 2>/dev/null | awk '{s+=$1} END {print s+0}')",
            "r=$(cat /pfs/greturns/* 2>/dev/null | awk '{s+=$1} END {print s+0}')",
            "echo $((p - r)) > /pfs/out/$PACH_DATUM_gstores_GROUP_BY.txt"]}})
    pfsd.wait("greturns@master")
    assert pfsd.quick_job("group_store_revenue")["datums"] == 2
    assert pfsd.tree("group_store_revenue") == {"1.txt": b"12\n", "2.txt": b"7\n"}


# examples/word_count/pipelines: map over /*/* (camelCase acceptReturnCode from scraper), and
# reduce.pipeline.json's stdin verbatim over glob /.
REDUCE_STDIN = [
    "mkdir /tmp/out",
    "set -x",
    "FILES=/pfs/map/*/*",
    "for f in $FILES",
    "do",
    "out=`basename $f`",
    "cat $f >> /tmp/out/${out}",
    "done",
    "find /tmp/out/ -name '*' | while read count; do cat $count | awk '{ sum+=$1} END {print sum}' >/tmp/count; mv /tmp/count /pfs/out/`basename $count`; echo `basename $count`; done",  # noqa: E501
]


def test_word_count(pfsd: Pfsd) -> None:
    pfsd.repos("scraper")
    pfsd.put("scraper", {"Wikipedia/page": "data pipelines data\n", "Github/page": "data\n"})
    pfsd.create({
        "pipeline": {"name": "map"},
        "description": "A pipeline that tokenizes scraped pages.",
        "transform": {"cmd": ["sh"], "stdin": [
            "for f in /pfs/scraper/*/*; do d=/pfs/out/$(basename $(dirname $f)); mkdir -p $d",
            "  for w in $(cat $f); do echo 1 >> $d/$w; done; done",
            "exit 4"],  # tolerated, as scraper.pipeline.json tolerates wget's 4..8
            "acceptReturnCode": [4, 5, 6, 7, 8]},
        "input": {"pfs": {"repo": "scraper", "glob": "/*/*"}},
    }, {
        "pipeline": {"name": "reduce"},
        "description": "A pipeline that aggregates the total counts for each word.",
        "transform": {"cmd": ["sh"], "stdin": REDUCE_STDIN},
        "input": {"pfs": {"repo": "map", "glob": "/"}},
    })
    pfsd.wait("scraper@master")
    job = pfsd.quick_job("map")
    assert (job["state"], job["datums"]) == ("success", 2)
    assert pfsd.quick_job("reduce")["datums"] == 1
    tree = pfsd.tree("reduce")
    assert {k: int(v) for k, v in tree.items() if k != "out"} == {"data": 3, "pipelines": 1}


# Specs from the examples that pfsmount refuses, each by the field that makes it so.
REFUSED = {
    # examples/kubeflow/mnist/pipeline.yaml: an S3 gateway for the output and the input
    "s3_out": "pipeline:\n  name: mnist\ntransform:\n  image: x\n  cmd: [ /app/pipeline.py ]\n"
              "s3_out: true\ninput:\n  pfs:\n    name: input\n    repo: images\n"
              "    glob: /*\n",
    # the same input alone
    "input.pfs.s3": "pipeline:\n  name: mnist\ntransform:\n  cmd: [ /app/pipeline.py ]\n"
                    "input:\n  pfs:\n    repo: images\n    glob: /*\n    s3: true\n",
    # examples/spouts/go-rabbitmq-spout/pipelines/spout.pipeline.json: Kubernetes secrets
    "transform.secrets": json.dumps({
        "pipeline": {"name": "rabbitmq-spout"}, "spout": {},
        "transform": {"cmd": ["/bin/app"], "env": {"PREFETCH": "2000"},
                      "secrets": [{"name": "p", "key": "p", "env_var": "P"}]}}),
    # examples/opencv/edges-union.pipeline.json: a second project
    "input.union[1].pfs.project": json.dumps({
        "pipeline": {"name": "edges"},
        "input": {"union": [{"pfs": {"glob": "/*", "repo": "images"}},
                            {"pfs": {"glob": "/*", "repo": "images", "project": "staging"}}]},
        "transform": {"cmd": ["sh"]}}),
}


def test_refused_by_name_and_project_default_taken(pfsd: Pfsd) -> None:
    for field, text in REFUSED.items():
        path = pfsd.spec_file(yaml_text=text)
        line = pfsd.fails("pipeline", "create", "-f", path)
        assert f"spec field {field} " in line, (field, line)
        assert pfsd.fails("datum", "list", "-f", path) == line
    # A 2.5 spec naming the default project (as `pachctl` writes them) is taken.
    pfsd.repos("proj_in")
    pfsd.put("proj_in", {"a": "1\n"})
    pfsd.create({"pipeline": {"name": "proj", "project": {"name": "default"}},
                 "input": {"pfs": {"repo": "proj_in", "glob": "/*", "project": "default"}},
                 "transform": {"cmd": ["sh"], "stdin": ["cp /pfs/proj_in/a /pfs/out/"]}})
    pfsd.wait("proj_in@master")
    assert pfsd.tree("proj") == {"a": b"1\n"}
    assert "spout" not in pfsd.ok("pipeline", "list")  # nothing refused was created
