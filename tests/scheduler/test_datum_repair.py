"""``fsck --repair`` of a datum whose output's bytes are damaged: the datum is run again.

A datum result remembers what a datum wrote, so a later job reuses it instead of running
the datum. When the bytes of that output are damaged on disk, ``fsck --repair`` drops the
file from every commit; it must drop the datum result too (``State.repairs``), or ``fsck``
would name it forever and the next job would commit a file nobody can read.
"""

from __future__ import annotations

from pfsmount.pfs import Pfs
from tests.reliability.test_corruption import _flip, _pack
from tests.scheduler.conftest import Pfsd


def test_a_repaired_datum_output_is_forgotten_and_the_next_job_runs_it_again(
        own_pfsd: Pfsd) -> None:
    d = own_pfsd
    d.repos("src")
    # Output bytes of their own (not the input's): one small chunk only the output holds.
    d.create(d.spec("rep", "for f in /pfs/src/*; do echo \"out of ${f##*/}\" "
                    "> /pfs/out/${f##*/}; done", d.pin("src")))
    d.wait(f"src@{d.put('src', {'a': '1'})}")
    first = d.head("rep")
    d.down()
    pfs = Pfs(d.root / "store")
    try:
        with pfs.store.meta.read() as txn:
            _, entry = pfs.files.open("rep@master:/a")
            (digest,) = pfs.store.contents.table(txn, entry.ref).digests
            loc = pfs.store.packs.location(txn, digest)
    finally:
        pfs.close()
    _flip(_pack(d.root, loc), loc.offset + loc.stored // 2, "datum output byte flip")
    d.up()

    with d.api() as c:
        before = c.fsck(verify=True)
        assert any("/a" in e for e in before.errors), before.errors
        report = c.repair()
        assert f"/a in rep@{first}" in report.lost, report.lost
        assert any(line.startswith("datum rep ") and "/a" in line for line in report.lost), \
            report.lost
        assert report.errors == []
        assert c.fsck(verify=True).errors == []

    d.wait(f"src@{d.put('src', {'b': '2'})}")
    job = d.quick_job("rep")
    assert (job["state"], job["processed"], job["skipped"]) == ("success", 2, 0), job
    assert d.tree("rep") == {"a": b"out of a\n", "b": b"out of b\n"}
    with d.api() as c:
        assert c.fsck(verify=True).errors == []
