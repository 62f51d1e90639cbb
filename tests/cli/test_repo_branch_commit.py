"""``pfsmount repo|branch|commit`` and their 1.x spellings, run as a user runs them.

Every test talks to the module's real daemon through the real command in a subprocess and
checks what the user sees: printed tables and fields, ``--json`` documents, exit codes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

ID = r"[0-9a-f]{32}"
AGO = r"(?:just now|\d+ (?:second|minute|hour|day)s? ago)"


def rows(out: str) -> list[list[str]]:
    """The data rows of a printed table (header dropped), split on whitespace."""
    lines = [line.split() for line in out.splitlines() if line.strip()]
    return lines[1:]


def commit_ids(out: str) -> list[str]:
    """The COMMIT column of ``commit list`` output, in printed order."""
    return [r[2] for r in rows(out)]


def put_text(client, ref: str, text: str) -> str:
    """Setup through the Python client (fast): put ``text`` at ``ref``; the commit id."""
    return client.put_file(ref, text.encode()).id


def test_repo_create_list_inspect_delete(pfsd) -> None:
    assert pfsd.ok("repo", "create", "sales", "-d", "Daily sales") == ""

    out = pfsd.ok("repo", "list")
    assert out.splitlines()[0].split() == ["NAME", "CREATED", "SIZE", "DESCRIPTION"]
    assert re.search(rf"^sales\s+{AGO}\s+0 B\s+Daily sales\s*$", out, re.M), out

    out = pfsd.ok("repo", "inspect", "sales")
    assert re.search(r"^Name:\s+sales$", out, re.M), out
    assert re.search(rf"^Created:\s+{AGO}$", out, re.M), out
    assert re.search(r"^Size:\s+0 B$", out, re.M), out
    assert re.search(r"^Kind:\s+input$", out, re.M), out
    assert re.search(r"^Description:\s+Daily sales$", out, re.M), out

    doc = pfsd.json("repo", "inspect", "sales")
    assert doc["name"] == "sales" and doc["description"] == "Daily sales"
    assert doc["kind"] == "input" and doc["size"] == 0
    assert abs(doc["created"] - time.time()) < 120

    listed = {r["name"]: r for r in pfsd.json("repo", "list")}
    assert listed["sales"] == doc

    assert pfsd.ok("repo", "delete", "sales") == ""
    assert not re.search(r"^sales\s", pfsd.ok("repo", "list"), re.M)
    pfsd.fails("repo", "inspect", "sales", code=3, match="repo sales not found")


def test_create_repo_and_list_repo_aliases_show_human_size_and_age(pfsd, examples) -> None:
    created = time.monotonic()
    pfsd.ok("create-repo", "fruit", "--description", "fruit stand")
    out = pfsd.ok("put-file", "fruit", "master", "sales", "-c", "-f",
                  examples / "set1.txt")
    assert re.fullmatch(rf"fruit@{ID}\n", out), out
    time.sleep(max(0.0, 1.2 - (time.monotonic() - created)))  # so CREATED reads "... ago"

    out = pfsd.ok("list-repo")
    assert re.search(r"^fruit\s+\d+ seconds? ago\s+1\.691 KiB\s+fruit stand\s*$", out,
                     re.M), out
    doc = {r["name"]: r for r in pfsd.json("list-repo")}["fruit"]
    assert doc["size"] == (examples / "set1.txt").stat().st_size == 1732
    assert doc["description"] == "fruit stand"

    pfsd.ok("delete-repo", "fruit")
    assert "fruit" not in {r["name"] for r in pfsd.json("list-repo")}


def test_branch_create_list_delete_and_head_at_an_older_commit(pfsd, client, repo) -> None:
    first = put_text(client, f"{repo}@master:/a", "one\n")
    second = put_text(client, f"{repo}@master:/b", "two\n")

    pfsd.ok("branch", "create", f"{repo}@empty")
    pfsd.ok("branch", "create", f"{repo}@old", "--head", first)
    pfsd.ok("branch", "create", f"{repo}/prev", "--head", "master^")

    out = pfsd.ok("branch", "list", repo)
    assert out.splitlines()[0].split() == ["BRANCH", "HEAD", "OPEN"]
    assert sorted(rows(out)) == [["empty", "-", "-"], ["master", second, "-"],
                                 ["old", first, "-"], ["prev", first, "-"]]
    doc = {b["name"]: b for b in pfsd.json("branch", "list", repo)}
    assert doc["old"]["head"] == first and doc["old"]["open"] is None
    assert doc["old"]["repo"] == repo and doc["empty"]["head"] is None

    # The old branch shows the older snapshot.
    assert [r[0] for r in rows(pfsd.ok("file", "list", f"{repo}@old"))] == ["/a"]

    pfsd.ok("branch", "delete", f"{repo}@old")
    pfsd.ok("branch", "delete", f"{repo}/prev")
    assert sorted(b["name"] for b in pfsd.json("branch", "list", repo)) == ["empty", "master"]
    # Deleting a branch drops the name, not the commits.
    assert [c.id for c in client.list_commits(repo)] == [second, first]
    pfsd.fails("branch", "delete", f"{repo}@old", code=3, match="branch old not found")


def test_commit_start_put_finish_inspect(pfsd, client, repo) -> None:
    base = put_text(client, f"{repo}@master:/base", "base\n")
    opened = pfsd.ok("commit", "start", f"{repo}@master", "-m", "by hand").strip()
    assert re.fullmatch(ID, opened)
    assert rows(pfsd.ok("branch", "list", repo)) == [["master", base, opened]]

    # Puts to a branch with an open commit land in it, and do not finish it.
    assert pfsd.ok("file", "put", f"{repo}@master:/x", "-", input="xx\n") == f"{repo}@{opened}\n"
    assert put_text(client, f"{repo}/master:/y", "yyy\n") == opened
    out = pfsd.ok("commit", "inspect", f"{repo}@{opened}")
    assert re.search(rf"^Commit:\s+{repo}@{opened}$", out, re.M), out
    assert re.search(rf"^Parent:\s+{base}$", out, re.M), out
    assert re.search(r"^Finished:\s+open$", out, re.M), out
    assert re.search(r"^Description:\s+by hand$", out, re.M), out
    # The branch reads as its open commit; the finished parent does not change.
    assert client.read_file(f"{repo}@master:/x") == b"xx\n"
    pfsd.fails("file", "get", f"{repo}@{base}:/x", code=3)

    assert pfsd.ok("commit", "finish", f"{repo}@master").strip() == opened
    doc = pfsd.json("commit", "inspect", f"{repo}@master")
    assert doc["id"] == opened and doc["parent"] == base and doc["branch"] == "master"
    assert doc["repo"] == repo and doc["description"] == "by hand"
    assert doc["finished"] >= doc["started"] and doc["size"] == len("base\nxx\nyyy\n")
    assert re.search(rf"^Finished:\s+{AGO}$",
                     pfsd.ok("commit", "inspect", f"{repo}@master^"), re.M)
    assert [(b.head, b.open) for b in client.list_branches(repo)] == [(opened, None)]


def test_commit_list_newest_first_per_repo_and_per_branch(pfsd, client, repo) -> None:
    c1 = put_text(client, f"{repo}@master:/a", "1")
    c2 = put_text(client, f"{repo}@master:/b", "2")
    client.create_branch(repo, "dev", c1)
    d1 = put_text(client, f"{repo}@dev:/d", "dev")
    c3 = put_text(client, f"{repo}@master:/c", "3")

    out = pfsd.ok("commit", "list", repo)
    assert out.splitlines()[0].split() == ["REPO", "BRANCH", "COMMIT", "PARENT", "STARTED",
                                           "FINISHED", "SIZE"]
    assert commit_ids(out) == [c3, d1, c2, c1]
    parents = {r[2]: r[3] for r in rows(out)}
    assert parents == {c3: c2, d1: c1, c2: c1, c1: "<none>"}
    assert all(re.search(rf"{AGO}\s+{AGO}\s+\d+ B\s*$", line)
               for line in out.splitlines()[1:]), out

    assert commit_ids(pfsd.ok("commit", "list", f"{repo}@master")) == [c3, c2, c1]
    assert commit_ids(pfsd.ok("commit", "list", repo, "-n", "2")) == [c3, d1]
    doc = pfsd.json("commit", "list", f"{repo}/dev")
    assert [c["id"] for c in doc] == [d1, c1]
    assert [c["branch"] for c in doc] == ["dev", "master"]
    assert doc[0]["size"] == 4 and doc[1]["size"] == 1


def test_commit_delete_moves_the_branch_back(pfsd, client, repo) -> None:
    c1 = put_text(client, f"{repo}@master:/keep", "keep")
    c2 = put_text(client, f"{repo}@master:/drop", "drop")
    pfsd.ok("commit", "delete", f"{repo}@master")
    assert rows(pfsd.ok("branch", "list", repo)) == [["master", c1, "-"]]
    assert commit_ids(pfsd.ok("commit", "list", repo)) == [c1]
    pfsd.fails("commit", "inspect", f"{repo}@{c2}", code=3)
    assert [f.path for f in client.list_files(f"{repo}@master")] == ["/keep"]

    # An open commit can be deleted too: the branch loses it, its head stays.
    opened = client.start_commit(repo, "master").id
    put_text(client, f"{repo}@master:/tmp", "t")
    pfsd.ok("commit", "delete", f"{repo}@{opened}")
    assert [(b.head, b.open) for b in client.list_branches(repo)] == [(c1, None)]
    assert [f.path for f in client.list_files(f"{repo}@master")] == ["/keep"]


def test_commit_squash_folds_a_commit_into_its_child(pfsd, client, repo) -> None:
    c1 = put_text(client, f"{repo}@master:/a", "a")
    c2 = put_text(client, f"{repo}@master:/b", "b")
    c3 = put_text(client, f"{repo}@master:/c", "c")
    pfsd.ok("commit", "squash", f"{repo}@{c2}")
    out = pfsd.ok("commit", "list", repo)
    assert commit_ids(out) == [c3, c1]
    assert {r[2]: r[3] for r in rows(out)} == {c3: c1, c1: "<none>"}
    # The child keeps everything it had, including what the squashed commit added.
    assert [f.path for f in client.list_files(f"{repo}@master")] == ["/a", "/b", "/c"]
    assert sorted((d.change, d.path) for d in client.diff_files(f"{repo}@master")) == [
        ("added", "/b"), ("added", "/c")]
    # A branch head has no child to fold into.
    pfsd.fails("commit", "squash", f"{repo}@master", code=5)


def test_commit_wait_on_a_finished_commit_returns_at_once(pfsd, client, repo) -> None:
    c1 = put_text(client, f"{repo}@master:/a", "a")
    start = time.monotonic()
    out = pfsd.ok("commit", "wait", f"{repo}@master", timeout=30)
    assert time.monotonic() - start < 10
    # It prints the output commits downstream: none, since no pipeline reads this repo.
    assert out.split() == ["REPO", "BRANCH", "COMMIT", "PARENT", "STARTED", "FINISHED",
                           "SIZE"]
    assert pfsd.json("flush-commit", f"{repo}/{c1}") == []


def test_1x_commit_aliases(pfsd, client, repo, examples: Path) -> None:
    opened = pfsd.ok("start-commit", repo, "master").strip()
    assert re.fullmatch(ID, opened)
    # put-file into the open commit lands there (1.x: several puts, one commit).
    assert pfsd.ok("put-file", repo, "master", "sales", "-f",
                   examples / "set1.txt").strip() == f"{repo}@{opened}"
    assert pfsd.ok("put-file", repo, "master", "more", "-f",
                   examples / "set2.txt").strip() == f"{repo}@{opened}"
    assert pfsd.ok("finish-commit", repo, "master").strip() == opened

    # list-commit names commits as 1.x did (BRANCH/N), and every 1.x alias takes that back
    assert [r[:3] for r in rows(pfsd.ok("list-commit", repo))] == [
        ["master", f"{repo}/master/0", "<none>"]]
    assert pfsd.json("inspect-commit", repo, "master/0")["id"] == opened
    assert [c["id"] for c in pfsd.json("list-commit", repo, "master", "-n", "1")] == [opened]

    out = pfsd.ok("inspect-commit", repo, opened)
    assert re.search(rf"^Commit:\s+{repo}@{opened}$", out, re.M), out
    assert re.search(r"^Size:\s+3\.390 KiB$", out, re.M), out
    assert pfsd.json("inspect-commit", repo, "master")["size"] == 1732 + 1739
    # finishing again is a one-line error, not a second commit
    pfsd.fails("finish-commit", repo, "master", code=5, match="no open commit")
    assert [c.id for c in client.list_commits(repo)] == [opened]
