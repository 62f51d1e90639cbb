"""Reference and name parsing: every form users type, and the input that must be refused."""

from __future__ import annotations

import pytest

from pfsmount.errors import InvalidArgument
from pfsmount.pfs.refs import Ref, check_name, normalize_path, parse_ref

CID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data", Ref("data", None, 0, "")),
        ("data/master", Ref("data", "master", 0, "")),
        ("data@master", Ref("data", "master", 0, "")),
        ("data@dev-2.x_y", Ref("data", "dev-2.x_y", 0, "")),
        (f"data@{CID}", Ref("data", CID, 0, "")),
        (f"data/{CID}", Ref("data", CID, 0, "")),
        ("data@master^", Ref("data", "master", 1, "")),
        ("data@master^^", Ref("data", "master", 2, "")),
        ("data@master~2", Ref("data", "master", 2, "")),
        ("data@master~0", Ref("data", "master", 0, "")),
        ("data@master^~3^", Ref("data", "master", 5, "")),
        (f"data@{CID}^", Ref("data", CID, 1, "")),
        ("data^", Ref("data", None, 1, "")),
        ("data@master:/sales", Ref("data", "master", 0, "sales")),
        ("data/master:/a/b/c.txt", Ref("data", "master", 0, "a/b/c.txt")),
        ("data@master^:/a", Ref("data", "master", 1, "a")),
        ("data@master~2:/a/", Ref("data", "master", 2, "a")),
        ("data:/sales", Ref("data", None, 0, "sales")),
        ("data@master:/", Ref("data", "master", 0, "")),
        ("data@master:", Ref("data", "master", 0, "")),
        ("data@master://a//./b/", Ref("data", "master", 0, "a/b")),
        ("data@master:/with space/and:colon", Ref("data", "master", 0, "with space/and:colon")),
    ],
)
def test_reference_forms(text: str, expected: Ref) -> None:
    assert parse_ref(text) == expected


def test_defaults_and_display() -> None:
    ref = parse_ref("data")
    assert ref.branch_or_id == "master"
    assert str(parse_ref("data/dev^^:/a/b")) == "data@dev^^:/a/b"
    assert str(parse_ref("data")) == "data@master"


def test_explicit_path_wins_over_ref_path() -> None:
    assert parse_ref("data@master:/a", path="/b/c").path == "b/c"
    assert parse_ref("data@master", path="x").path == "x"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "@master",
        "/master",
        "data@",
        "data/",
        "data@master@x",
        "data@a/b",
        "data/a/b",
        "da ta@master",
        "data@mas ter",
        ".data@master",
        "data@.hidden",
        "-data",
        "data@-x",
        "data@master~",
        "data@master~x",
        "data@master^x",
        "data@master:relative/path",
        "data@master:/../etc/passwd",
        "data@master:/a/../../b",
        "data@master:/a\0b",
        "da\0ta@master",
        "data@mas\0ter",
        "x" * 129,
    ],
)
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_ref(text)


@pytest.mark.parametrize(
    "name",
    ["a/b", "a@b", "a:b", "a b", ".hidden", "-dash", "", "a^", "a~1", "a\0", "é", "x" * 129],
)
@pytest.mark.parametrize("kind", ["repo", "branch"])
def test_bad_names_are_refused(kind: str, name: str) -> None:
    with pytest.raises(InvalidArgument, match=kind):
        check_name(kind, name)


@pytest.mark.parametrize("name", ["a", "data", "A_1", "v1.2-rc", "_x", "9", "x" * 128])
def test_good_names_pass(name: str) -> None:
    assert check_name("repo", name) == name
    assert check_name("branch", name) == name


def test_branch_name_that_reads_as_a_commit_id_is_refused() -> None:
    assert check_name("repo", CID) == CID
    with pytest.raises(InvalidArgument, match="commit id"):
        check_name("branch", CID)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("", ""), ("/", ""), ("a", "a"), ("/a/b/", "a/b"), ("a//b/./c", "a/b/c"), ("...", "...")],
)
def test_paths_are_normalized(path: str, expected: str) -> None:
    assert normalize_path(path) == expected


@pytest.mark.parametrize("path", ["..", "/..", "a/../b", "a/b/..", "a\0", "\0"])
def test_paths_that_leave_the_repo_or_hold_nul_are_refused(path: str) -> None:
    with pytest.raises(InvalidArgument):
        normalize_path(path)
