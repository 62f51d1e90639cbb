"""Wire types are the API's contract, apart from the stored records: a record that changes
shape still answers in the wire shape, and one that agrees with it is sent without a copy."""

from __future__ import annotations

import msgspec

from pfsmount.api import wire as w
from pfsmount.pfs import model


class StoredCommit(msgspec.Struct, kw_only=True):
    """A commit row as a later storage format might keep it: fields reordered, one added,
    a list kept as a tuple."""

    repo: str
    id: str
    branch: str
    started: float
    parent: str | None = None
    packed_root: bytes = b""
    provenance: tuple[str, ...] = ()
    finished: float | None = None
    root: str = ""
    size: int = 0
    description: str = ""


def test_a_record_of_another_shape_answers_in_the_wire_shape() -> None:
    row = StoredCommit(repo="r", id="c" * 32, branch="master", started=1.0,
                       packed_root=b"\x00\xff", provenance=("a@b",))
    assert not w.same_encoding(StoredCommit, w.Commit)
    sent = msgspec.json.encode(w.to_wire(row, w.Commit))
    assert list(msgspec.json.decode(sent)) == [f.encode_name for f in
                                               msgspec.structs.fields(w.Commit)]
    assert msgspec.json.decode(sent, type=w.Commit) == w.Commit(
        id="c" * 32, repo="r", branch="master", parent=None, started=1.0,
        provenance=["a@b"])


def test_records_that_agree_with_the_wire_go_as_they_are() -> None:
    info = model.FileInfo(path="/a", type="file", size=1, hash="ab", mode=0o644, mtime=1.0)
    assert w.to_wire(info, w.FileInfo) is info  # no copy on a listing's hot path
    assert msgspec.json.encode(info) == msgspec.json.encode(
        msgspec.convert(info, w.FileInfo, from_attributes=True))
    assert w.same_encoding(model.FileDiff, w.FileDiff)  # nested structs compared alike
    assert not w.same_encoding(model.Counts, w.FileInfo)


def test_the_gc_report_keeps_its_json_order_whatever_the_model_does() -> None:
    report = model.GcReport(dry_run=True, pages=2, seconds=0.5)
    sent = msgspec.json.decode(msgspec.json.encode(w.to_wire(report, w.GcReport)))
    assert next(iter(sent)) == "dry_run" and sent["pages"] == 2 and sent["seconds"] == 0.5
