"""The ``pfsmount`` command: click commands that each make one client call and print it.

Noun-verb commands (``repo``, ``branch``, ``commit``, ``file``) plus ``up``, ``down``,
``status``, ``fsck`` and ``gc``, and the Pachyderm 1.x spellings as aliases with 1.x meaning.
Every listing takes ``--json``. Errors print one line to stderr and exit non-zero.
"""

from __future__ import annotations

import os
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from pfsmount import humanize
from pfsmount.config import DaemonConfig, default_mount, layout
from pfsmount.errors import InvalidArgument, PfsError

# Start-up is paid by every command: what only some commands need (rich for progress bars,
# the client and its transport, the model's structs, the scheduler) is imported where used.
if TYPE_CHECKING:
    from pfsmount.api.client import Client
    from pfsmount.api.pipeline_client import PipelineClient
    from pfsmount.api.wire import Branch, Commit, Counts, FileDiff, FileInfo, Repo
    from pfsmount.api.wire_pipelines import DatumInfo, Job, Pipeline

# -- plumbing --------------------------------------------------------------------------------


def say(text: str) -> None:
    """One line to stdout, exactly as given (no markup, no wrapping: file names are data)."""
    sys.stdout.write(text + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(code)


def client(ctx: click.Context) -> Client:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "client" not in obj:
        from pfsmount.api.client import Client

        obj["client"] = ctx.with_resource(Client(obj.get("root")))
    c: Client = obj["client"]
    return c


def print_json(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value)).decode() + "\n")


def _width(text: str) -> int:
    """Terminal cells of ``text``: wide East Asian characters take two, combining ones none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Aligned columns two spaces apart under a header (bold on a terminal). Cells are
    printed as they are, so that scripts can split lines on whitespace."""
    cells = [list(columns), *(list(row) for row in rows)]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell + " " * (widths[i] - _width(cell))
                       for i, cell in enumerate(row)).rstrip() for row in cells]
    if sys.stdout.isatty():
        lines[0] = f"\x1b[1m{lines[0]}\x1b[0m"
    sys.stdout.write("".join(line + "\n" for line in lines))


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def show_repos(repos: list[Repo], as_json: bool) -> None:
    if as_json:
        return print_json(repos)
    table(["NAME", "CREATED", "SIZE", "DESCRIPTION"],
          [(r.name, humanize.ago(r.created), humanize.size(r.size), r.description)
           for r in repos])


def show_commits(commits: list[Commit], as_json: bool) -> None:
    if as_json:
        return print_json(commits)
    table(
        ["REPO", "BRANCH", "COMMIT", "PARENT", "STARTED", "FINISHED", "SIZE"],
        [(c.repo, c.branch, c.id, c.parent or "<none>", humanize.ago(c.started),
          humanize.ago(c.finished) if c.finished else "open", humanize.size(c.size))
         for c in commits],
    )


def show_commit(c: Commit, as_json: bool) -> None:
    if as_json:
        return print_json(c)
    rows = [
        ("Commit", f"{c.repo}@{c.id}"),
        ("Branch", c.branch),
        ("Parent", c.parent or "<none>"),
        ("Started", humanize.ago(c.started)),
        ("Finished", humanize.ago(c.finished) if c.finished else "open"),
        ("Size", humanize.size(c.size)),
        ("Provenance", ", ".join(c.provenance) or "<none>"),
    ]
    if c.description:
        rows.append(("Description", c.description))
    for key, value in rows:
        say(f"{key + ':':<12} {value}")


def show_files(files: Iterable[FileInfo], as_json: bool) -> None:
    if as_json:
        return print_json(list(files))
    table(["NAME", "TYPE", "SIZE"],
          [(f.path + ("/" if f.type == "dir" else ""), f.type, humanize.size(f.size))
           for f in files])


def show_file(f: FileInfo, as_json: bool) -> None:
    if as_json:
        return print_json(f)
    for key, value in (("Path", f.path), ("Type", f.type), ("Size", humanize.size(f.size)),
                       ("Hash", f.hash or "-"), ("Mode", oct(f.mode)),
                       ("Commit", f.commit)):
        say(f"{key + ':':<8} {value}")
    if f.target is not None:
        say(f"Target:  {f.target}")


def show_diff(changes: list[FileDiff], as_json: bool) -> None:
    if as_json:
        return print_json(changes)
    mark = {"added": "+", "removed": "-", "modified": "~"}
    for c in changes:
        size = (c.new or c.old)
        say(f"{mark[c.change]} {c.path}  ({humanize.size(size.size) if size else ''})")


def local_totals(path: Path) -> Counts:
    from pfsmount.api.wire import Counts

    if path.is_file():
        return Counts(files=1, bytes=path.stat().st_size)
    counts = Counts()
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                counts.bytes += os.lstat(os.path.join(dirpath, name)).st_size
                counts.files += 1
            except OSError:
                pass
    return counts


def do_put(ctx: click.Context, ref: str, source: str, append: bool,
           path: str | None = None) -> Commit:
    """One put from a local path, a URL or ``-`` (stdin), with a bar for big local puts."""
    c = client(ctx)
    if source == "-":
        return c.put_file(ref, iter(lambda: sys.stdin.buffer.read(1 << 20), b""), path=path,
                          append=append)
    if source.startswith(("http://", "https://")):
        return c.put_file(ref, source, path=path, append=append)
    local = Path(source)
    if not local.exists():
        raise InvalidArgument(f"{source}: no such file or directory")
    if not sys.stderr.isatty():
        return c.put_file(ref, local, path=path, append=append)
    totals = local_totals(local)
    if totals.files < 100 and totals.bytes < 64 << 20:
        return c.put_file(ref, local, path=path, append=append)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    err = Console(stderr=True)
    with Progress(TextColumn("[bold]put"), BarColumn(), DownloadColumn(binary_units=True),
                  TransferSpeedColumn(), TextColumn("{task.fields[files]} files"),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task("put", total=totals.bytes, files=0)

        def progress(counts: Counts) -> None:
            bar.update(task, completed=counts.bytes, files=counts.files)

        return c.put_file(ref, local, path=path, append=append, progress=progress)


def branch_ref(text: str) -> tuple[str, str]:
    repo, sep, branch = text.replace("/", "@", 1).partition("@")
    return repo, branch if sep else "master"


class Main(click.Group):
    """Turns every ``PfsError`` and every usage mistake into one line and an exit code."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        kwargs.setdefault("prog_name", "pfsmount")
        for text in (args[0] if args and args[0] is not None else sys.argv[1:]):
            if isinstance(text, str) and not text.isascii():
                try:  # names, references and paths cross the API as UTF-8 text
                    text.encode()
                except UnicodeEncodeError:
                    shown = repr(text.encode(errors="surrogateescape"))[1:]
                    fail(f"argument {shown} is not valid UTF-8 (pfsmount takes names and "
                         "paths in UTF-8 only)", 2)
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
            fail(e.format_message() + hint, 2)
        except click.ClickException as e:
            fail(e.format_message(), e.exit_code)
        except click.exceptions.Abort:
            fail("aborted", 1)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return result
        except PfsError as e:
            fail(e.message, e.exit_code)
        except BrokenPipeError:  # the reader went away (`| head`): quietly, as 128 + SIGPIPE
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except KeyboardInterrupt:
            fail("interrupted", 130)


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(path_type=Path), envvar="PFSMOUNT_ROOT",
              help="Data and socket directory [env PFSMOUNT_ROOT; default "
                   "~/.local/share/pfsmount].")
@click.version_option("0.1.0", prog_name="pfsmount")
@click.pass_context
def main(ctx: click.Context, root: Path | None) -> None:
    """pfsmount: versioned data repos, commits, branches and pipelines on one machine."""
    ctx.ensure_object(dict)["root"] = root


# -- daemon ----------------------------------------------------------------------------------


@main.command()
@click.option("--foreground", is_flag=True, help="Stay attached; log to stderr.")
@click.option("--mount", "mountpoint", type=click.Path(path_type=Path),
              help="Where to mount the repos [default: /pfs for root, else ~/pfs].")
@click.option("--no-mount", is_flag=True, help="Serve the API only, without a mount.")
@click.option("--allow-other", is_flag=True,
              help="Let other users use the mount, as its mode bits allow (default: only you).")
@click.pass_context
def up(ctx: click.Context, foreground: bool, mountpoint: Path | None, no_mount: bool,
       allow_other: bool) -> None:
    """Start the daemon (store, mount and API); returns once it serves."""
    from pfsmount.daemon import launch, preflight

    mount = None if no_mount else (mountpoint or default_mount()).absolute()
    config = DaemonConfig(layout(ctx.obj.get("root")).root, mount, allow_other and not no_mount)
    problem = preflight.problem(config)
    if problem:
        raise PfsError(problem)
    if foreground:
        from pfsmount.daemon.command import serve

        return serve(config)
    status = launch.start(config)
    where = f", mounted at {status['mount']}" if "mount" in status else ""
    say(f"pfsmount serving {status['root']} (pid {status['pid']}){where}")


@main.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the daemon cleanly."""
    from pfsmount.daemon import launch

    pid = launch.stop(layout(ctx.obj.get("root")))
    say(f"pfsmount stopped (pid {pid})")


@main.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """What the daemon serves and where."""
    s = client(ctx).status()
    if as_json:
        return print_json(s)
    for key in ("root", "socket", "pid", "mount"):
        if key in s:
            say(f"{key + ':':<8} {s[key]}")
    say(f"{'up:':<8} {humanize.ago(s['started']).replace(' ago', '')}")


@main.command()
@click.option("--verify", is_flag=True, help="Also read every chunk and check its hash.")
@click.option("--repair", is_flag=True,
              help="Drop files whose data is damaged from every commit that holds them "
                   "(each is named), keep the rest readable; implies --verify.")
@json_option
@click.pass_context
def fsck(ctx: click.Context, verify: bool, repair: bool, as_json: bool) -> None:
    """Check every metadata invariant (and with --verify, all data)."""
    result = client(ctx).repair() if repair else client(ctx).fsck(verify)
    if as_json:
        print_json(result)
    else:
        for line in result.lost:
            say(f"lost: {line}")
        for line in result.errors:
            say(f"error: {line}")
        say(f"checked {result.repos} repos, {result.commits} commits, {result.pages} "
            f"tree pages, {result.files} files, {result.chunks} chunks: "
            f"{len(result.errors)} errors"
            + (f"; repair dropped {len(result.lost)} files" if repair else ""))
    if result.errors:
        sys.exit(1)


@main.command()
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@click.option("--wait", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for writes in progress before giving up.")
@json_option
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, wait: float, as_json: bool) -> None:
    """Free the space of deleted repos and commits.

    Removes the chunks, file contents and tree pages that no commit reaches any more, and
    deletes the pack files left with nothing live in them. A pack that is mostly garbage has
    its live data moved out and goes at the next gc. Writes pause while it runs.
    """
    r = client(ctx).gc(dry_run, wait)
    if as_json:
        print_json(r)
        return
    verb = "would free" if r.dry_run else "freed"
    say(f"{verb} {humanize.size(r.freed)} in {r.packs} packs; "
        f"{'would remove' if r.dry_run else 'removed'} {r.chunks} chunks, {r.contents} "
        f"file contents and {r.pages} tree pages in {humanize.duration(r.seconds)}")
    if r.compacted:
        say(f"{'would empty' if r.dry_run else 'emptied'} {r.compacted} packs that were mostly "
            f"garbage (moving {humanize.size(r.moved)} of live data): "
            f"{humanize.size(r.freed_next)} more comes back at the next gc")
    if r.garbage_kept:
        say(f"{humanize.size(r.garbage_kept)} of garbage stays in {r.packs_kept} packs that "
            "still hold mostly live data")


# -- repo ------------------------------------------------------------------------------------


@main.group()
def repo() -> None:
    """Create, list, inspect and delete repos."""


@repo.command("create")
@click.argument("name")
@click.option("-d", "--description", default="")
@click.pass_context
def repo_create(ctx: click.Context, name: str, description: str) -> None:
    """Create a repo (it starts with an empty master branch)."""
    client(ctx).create_repo(name, description)


@repo.command("list")
@json_option
@click.pass_context
def repo_list(ctx: click.Context, as_json: bool) -> None:
    """List repos with their creation time and size."""
    show_repos(client(ctx).list_repos(), as_json)


@repo.command("inspect")
@click.argument("name")
@json_option
@click.pass_context
def repo_inspect(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one repo."""
    r = client(ctx).inspect_repo(name)
    if as_json:
        return print_json(r)
    for key, value in (("Name", r.name), ("Created", humanize.ago(r.created)),
                       ("Size", humanize.size(r.size)), ("Kind", r.kind),
                       ("Description", r.description or "-")):
        say(f"{key + ':':<13} {value}")


@repo.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete even if a pipeline reads it.")
@click.pass_context
def repo_delete(ctx: click.Context, name: str, force: bool) -> None:
    """Delete a repo with its branches and commits."""
    client(ctx).delete_repo(name, force)


# -- branch ----------------------------------------------------------------------------------


@main.group()
def branch() -> None:
    """Create, list and delete branches."""


@branch.command("create")
@click.argument("ref", metavar="REPO@BRANCH")
@click.option("--head", help="Commit (id, branch or ref) the branch points at.")
@click.pass_context
def branch_create(ctx: click.Context, ref: str, head: str | None) -> None:
    """Create a branch, or point it at a commit with --head."""
    repo_name, name = branch_ref(ref)
    client(ctx).create_branch(repo_name, name, head)


@branch.command("list")
@click.argument("repo_name", metavar="REPO")
@json_option
@click.pass_context
def branch_list(ctx: click.Context, repo_name: str, as_json: bool) -> None:
    """List a repo's branches with their head and open commits."""
    branches: list[Branch] = client(ctx).list_branches(repo_name)
    if as_json:
        return print_json(branches)
    table(["BRANCH", "HEAD", "OPEN"], [(b.name, b.head or "-", b.open or "-") for b in branches])


@branch.command("delete")
@click.argument("ref", metavar="REPO@BRANCH")
@click.pass_context
def branch_delete(ctx: click.Context, ref: str) -> None:
    """Delete a branch (its commits stay readable by id)."""
    repo_name, name = branch_ref(ref)
    client(ctx).delete_branch(repo_name, name)


# -- commit ----------------------------------------------------------------------------------


@main.group()
def commit() -> None:
    """Start, finish, list, inspect, delete, squash and wait for commits."""


@commit.command("start")
@click.argument("ref", metavar="REPO@BRANCH")
@click.option("-p", "--parent", help="Parent commit (default: the branch head).")
@click.option("-m", "--message", "description", default="", help="Commit description.")
@click.pass_context
def commit_start(ctx: click.Context, ref: str, parent: str | None, description: str) -> None:
    """Open a commit on a branch; prints its id."""
    repo_name, name = branch_ref(ref)
    c = client(ctx).start_commit(repo_name, name, parent, description)
    say(c.id)


@commit.command("finish")
@click.argument("ref", metavar="REPO@BRANCH|REPO@ID")
@click.option("-m", "--message", "description", default=None, help="Commit description.")
@click.pass_context
def commit_finish(ctx: click.Context, ref: str, description: str | None) -> None:
    """Seal a branch's open commit; pipelines reading the branch start."""
    c = client(ctx).finish_commit(ref, description)
    say(c.id)


@commit.command("list")
@click.argument("ref", metavar="REPO[@BRANCH]")
@click.option("-n", "--limit", type=int, help="At most this many commits.")
@json_option
@click.pass_context
def commit_list(ctx: click.Context, ref: str, limit: int | None, as_json: bool) -> None:
    """List commits, newest first."""
    repo_name, sep, name = ref.replace("/", "@", 1).partition("@")
    show_commits(client(ctx).list_commits(repo_name, name if sep else None, limit), as_json)


@commit.command("inspect")
@click.argument("ref")
@json_option
@click.pass_context
def commit_inspect(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show a commit with its provenance."""
    show_commit(client(ctx).inspect_commit(ref), as_json)


@commit.command("delete")
@click.argument("ref")
@click.pass_context
def commit_delete(ctx: click.Context, ref: str) -> None:
    """Delete a branch's newest commit; the branch moves back."""
    client(ctx).delete_commit(ref)


@commit.command("squash")
@click.argument("ref")
@click.pass_context
def commit_squash(ctx: click.Context, ref: str) -> None:
    """Fold a commit into its child."""
    client(ctx).squash_commit(ref)


@commit.command("wait")
@click.argument("ref")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@json_option
@click.pass_context
def commit_wait(ctx: click.Context, ref: str, timeout: float | None, as_json: bool) -> None:
    """Wait until a commit and everything downstream of it is finished."""
    show_commits(downstream(ctx, ref, timeout), as_json)


def downstream(ctx: click.Context, ref: str, timeout: float | None) -> list[Commit]:
    c = client(ctx)
    commit = c.inspect_commit(ref)
    if commit.finished is None:  # as `pachctl wait commit` does, wait for it, but say so
        sys.stderr.write(f"commit {commit.repo}@{commit.id} is open: waiting until it is "
                         f"finished (`pfsmount commit finish {commit.repo}@{commit.branch}`)\n")
        sys.stderr.flush()
    return c.wait_commit(ref, timeout)


# -- file ------------------------------------------------------------------------------------


@main.group()
def file() -> None:
    """Put, get, list, glob, inspect, diff, delete and copy files."""


@file.command("put")
@click.argument("ref", metavar="REPO@BRANCH:/PATH")
@click.argument("source", required=False)
@click.option("-f", "--file", "source_opt", help="Local file or directory, URL, or - (stdin).")
@click.option("-r", "--recursive", is_flag=True, help="Put a directory and all below it.")
@click.option("-a", "--append", is_flag=True, help="Append to the file instead of replacing.")
@click.pass_context
def file_put(ctx: click.Context, ref: str, source: str | None, source_opt: str | None,
             recursive: bool, append: bool) -> None:
    """Put SOURCE (a file, a directory with -r, a URL or - for stdin) at REF.

    With no open commit on the branch, the put opens one and finishes it.
    """
    src = source or source_opt
    if src is None:
        raise InvalidArgument("put needs a source: a file, a directory (-r), a URL or -")
    if Path(src).is_dir() and not recursive:
        raise InvalidArgument(f"{src} is a directory (use -r)")
    c = do_put(ctx, ref, src, append)
    say(f"{c.repo}@{c.id}")


@file.command("get")
@click.argument("ref", metavar="REF:/PATH")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this path.")
@click.option("-r", "--recursive", is_flag=True, help="Get a directory into --output.")
@click.pass_context
def file_get(ctx: click.Context, ref: str, output: Path | None, recursive: bool) -> None:
    """Print a file, write it with -o, or a directory tree with -r -o DIR."""
    if output is not None:  # one request: the daemon refuses a directory without -r
        client(ctx).export(ref, output, recursive=recursive)
        return
    if recursive:
        raise InvalidArgument("-r needs -o DIR")
    for piece in client(ctx).get_file(ref):
        sys.stdout.buffer.write(piece)
    sys.stdout.buffer.flush()


@file.command("list")
@click.argument("ref", metavar="REF[:/PATH]")
@json_option
@click.pass_context
def file_list(ctx: click.Context, ref: str, as_json: bool) -> None:
    """List a directory's entries (or one file)."""
    show_files(client(ctx).list_files(ref), as_json)


@file.command("glob")
@click.argument("ref", metavar="REF")
@click.argument("pattern")
@json_option
@click.pass_context
def file_glob(ctx: click.Context, ref: str, pattern: str, as_json: bool) -> None:
    """List the entries matching a glob, as a pipeline's glob would (*, ?, [...], {a,b} per
    level, ** any depth, ( ) capture groups)."""
    show_files(client(ctx).glob_files(ref, pattern), as_json)


@file.command("inspect")
@click.argument("ref", metavar="REF:/PATH")
@json_option
@click.pass_context
def file_inspect(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show a file's type, size, mode and content hash."""
    show_file(client(ctx).inspect_file(ref), as_json)


@file.command("diff")
@click.argument("new", metavar="NEW_REF")
@click.argument("old", metavar="[OLD_REF]", required=False)
@json_option
@click.pass_context
def file_diff(ctx: click.Context, new: str, old: str | None, as_json: bool) -> None:
    """What changed from OLD_REF (default: NEW_REF's parent) to NEW_REF."""
    show_diff(client(ctx).diff_files(new, old), as_json)


@file.command("delete")
@click.argument("ref", metavar="REF:/PATH")
@click.option("-r", "--recursive", is_flag=True)
@click.pass_context
def file_delete(ctx: click.Context, ref: str, recursive: bool) -> None:
    """Delete a file, or a directory with -r."""
    client(ctx).delete_file(ref, recursive)


@file.command("copy")
@click.argument("src", metavar="SRC_REF:/PATH")
@click.argument("dst", metavar="DST_REF:/PATH")
@click.pass_context
def file_copy(ctx: click.Context, src: str, dst: str) -> None:
    """Copy a file or directory (no data is copied)."""
    client(ctx).copy_file(src, dst)


# -- Pachyderm 1.x aliases -------------------------------------------------------------------


def _ref(repo_name: str, at: str, path: str = "") -> str:
    return f"{repo_name}@{at}" + (f":/{path.lstrip('/')}" if path else "")


class V1Ids:
    """Commits named as 1.x printed them, ``repo/branch/N`` (the N-th commit of the branch's
    history, from 0), which every command takes back; a commit on no branch's history keeps
    its id (``repo/<id>``, taken back as well). Reads each repo's branches once."""

    def __init__(self, c: Client) -> None:
        self.c = c
        self.repos: dict[str, dict[str, str]] = {}

    def of(self, repo_name: str, commit_id: str) -> str:
        """``branch/N`` (or the id) of a commit, without its repo."""
        if repo_name not in self.repos:
            own: dict[str, str] = {}
            other: dict[str, str] = {}
            try:
                for b in self.c.list_branches(repo_name):
                    chain = reversed(self.c.list_commits(repo_name, b.name))
                    for n, x in enumerate(chain):
                        (own if x.branch == b.name else other).setdefault(x.id, f"{b.name}/{n}")
            except PfsError:  # deleted meanwhile: ids it is
                pass
            self.repos[repo_name] = {**other, **own}
        return self.repos[repo_name].get(commit_id, commit_id)

    def __call__(self, repo_name: str, commit_id: str) -> str:
        return f"{repo_name}/{self.of(repo_name, commit_id)}"


def show_v1_commits(c: Client, commits: list[Commit], as_json: bool) -> None:
    """Commits as 1.x's ``list-commit`` and ``flush-commit`` printed them."""
    if as_json:
        return print_json(commits)
    ids = V1Ids(c)
    table(["BRANCH", "REPO/ID", "PARENT", "STARTED", "FINISHED", "SIZE"],
          [(x.branch, ids(x.repo, x.id), ids.of(x.repo, x.parent) if x.parent else "<none>",
            humanize.ago(x.started), humanize.ago(x.finished) if x.finished else "open",
            humanize.size(x.size)) for x in commits])


@main.command("put-file")
@click.argument("repo_name", metavar="REPO")
@click.argument("branch_name", metavar="BRANCH")
@click.argument("path", required=False, default="")
@click.option("-c", "--commit", "_commit", is_flag=True, help="Accepted for 1.x; puts commit.")
@click.option("-f", "--file", "source", default="-",
              help="Local file or dir, URL, or - [default: - (stdin), as in 1.x].")
@click.option("-r", "--recursive", is_flag=True)
@click.option("-o", "--overwrite", is_flag=True, help="Replace instead of appending.")
@click.pass_context
def put_file(ctx: click.Context, repo_name: str, branch_name: str, path: str, _commit: bool,
             source: str, recursive: bool, overwrite: bool) -> None:
    """1.x: append SOURCE (default: stdin) to PATH (as 1.x did), in one commit unless one is
    open."""
    if source == "-" and not path:
        raise InvalidArgument("put-file needs a PATH to store stdin at "
                              "(put-file REPO BRANCH PATH -c), or -f SOURCE")
    if Path(source).is_dir() and not recursive:
        raise InvalidArgument(f"{source} is a directory (use -r)")
    if not path and not Path(source).is_dir():
        path = Path(source).name if "://" not in source else source.rstrip("/").rsplit("/")[-1]
    c = do_put(ctx, _ref(repo_name, branch_name, path), source,
               append=not overwrite and not Path(source).is_dir())
    say(f"{c.repo}@{c.id}")


@main.command("get-file")
@click.argument("repo_name", metavar="REPO")
@click.argument("at", metavar="BRANCH-OR-COMMIT")
@click.argument("path")
@click.option("-o", "--output", type=click.Path(path_type=Path))
@click.option("-r", "--recursive", is_flag=True)
@click.pass_context
def get_file(ctx: click.Context, repo_name: str, at: str, path: str, output: Path | None,
             recursive: bool) -> None:
    """1.x: print a file (or write it with -o)."""
    ctx.invoke(file_get, ref=_ref(repo_name, at, path), output=output, recursive=recursive)


@main.command("list-file")
@click.argument("repo_name", metavar="REPO")
@click.argument("at", metavar="BRANCH-OR-COMMIT")
@click.argument("path", required=False, default="")
@json_option
@click.pass_context
def list_file(ctx: click.Context, repo_name: str, at: str, path: str, as_json: bool) -> None:
    """1.x: list a directory."""
    show_files(client(ctx).list_files(_ref(repo_name, at, path)), as_json)


@main.command("list-commit")
@click.argument("repo_name", metavar="REPO")
@click.argument("branch_name", metavar="[BRANCH]", required=False)
@click.option("-n", "--number", "limit", type=int)
@json_option
@click.pass_context
def list_commit(ctx: click.Context, repo_name: str, branch_name: str | None, limit: int | None,
                as_json: bool) -> None:
    """1.x: list commits, newest first, named BRANCH/N as 1.x did (N from 0)."""
    c = client(ctx)
    show_v1_commits(c, c.list_commits(repo_name, branch_name, limit), as_json)


@main.command("inspect-commit")
@click.argument("repo_name", metavar="REPO")
@click.argument("at", metavar="COMMIT")
@json_option
@click.pass_context
def inspect_commit(ctx: click.Context, repo_name: str, at: str, as_json: bool) -> None:
    """1.x: show a commit (AT: BRANCH/N, a commit id, or a branch's head)."""
    c = client(ctx)
    found = c.inspect_commit(_ref(repo_name, at))
    show_commit(found, as_json)
    if not as_json:
        say(f"{'1.x id:':<12} {V1Ids(c)(found.repo, found.id)}")


@main.command("flush-commit")
@click.argument("ref", metavar="REPO/BRANCH[/N]")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@json_option
@click.pass_context
def flush_commit(ctx: click.Context, ref: str, timeout: float | None, as_json: bool) -> None:
    """1.x: wait for every job downstream of a commit; print their output commits."""
    show_v1_commits(client(ctx), downstream(ctx, ref, timeout), as_json)


@main.command("start-commit")
@click.argument("repo_name", metavar="REPO")
@click.argument("branch_name", metavar="BRANCH", default="master")
@click.option("-p", "--parent")
@click.option("-m", "--message", "description", default="")
@click.pass_context
def start_commit(ctx: click.Context, repo_name: str, branch_name: str, parent: str | None,
                 description: str) -> None:
    """1.x: open a commit on a branch."""
    say(client(ctx).start_commit(repo_name, branch_name, parent, description).id)


@main.command("finish-commit")
@click.argument("repo_name", metavar="REPO")
@click.argument("at", metavar="BRANCH-OR-COMMIT", default="master")
@click.option("-m", "--message", "description", default=None)
@click.pass_context
def finish_commit(ctx: click.Context, repo_name: str, at: str, description: str | None) -> None:
    """1.x: finish the open commit of a branch."""
    say(client(ctx).finish_commit(_ref(repo_name, at), description).id)


# -- pipelines, jobs and logs ----------------------------------------------------------------


def pipelines(ctx: click.Context) -> PipelineClient:
    from pfsmount.api.pipeline_client import PipelineClient  # only pipeline commands pay

    return PipelineClient(client(ctx))


def read_spec(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as e:
        raise InvalidArgument(f"cannot read spec {path}: {e.strerror}") from None


def show_pipelines(items: list[Pipeline], as_json: bool) -> None:
    if as_json:
        return print_json(items)
    table(["NAME", "INPUT", "CREATED", "STATE", "DESCRIPTION"],
          [(p.name, ", ".join(f"{x.repo}@{x.branch}:{x.glob}" for x in p.spec.tree.leaves()),
            humanize.ago(p.created), "stopped" if p.stopped else "running",
            p.spec.description) for p in items])


def show_jobs(items: list[Job], as_json: bool) -> None:
    if as_json:
        return print_json(items)
    table(["ID", "PIPELINE", "STARTED", "DURATION", "DATUMS", "STATE", "OUTPUT"],
          [(j.id, j.pipeline, humanize.ago(j.started or j.created),
            humanize.duration((j.finished or time.time()) - (j.started or j.created)),
            f"{j.processed} run, {j.skipped} skipped, {j.failed} failed"
            f"{f', {j.recovered} recovered' if j.recovered else ''} / {j.datums}",
            j.state, j.output or "-") for j in items])


def show_job(j: Job, as_json: bool) -> None:
    if as_json:
        return print_json(j)
    show_jobs([j], False)
    say("inputs: " + ", ".join(f"{k.split('@')[0]}@{v}" for k, v in j.inputs.items()))
    if j.error:  # a successful 1.x job that ran nothing says why here
        say(f"{'note' if j.state == 'success' else 'error'}: {j.error}")


@main.group()
def pipeline() -> None:
    """Create, update, list, inspect, delete, start and stop pipelines."""


@pipeline.command("create")
@click.option("-f", "--file", "spec", required=True, help="Spec file (JSON or YAML), or -.")
@click.pass_context
def pipeline_create(ctx: click.Context, spec: str) -> None:
    """Create the pipelines of a spec file (JSON or YAML, several per file)."""
    for p in pipelines(ctx).create(read_spec(spec)):
        say(p.name)


@pipeline.command("update")
@click.option("-f", "--file", "spec", required=True, help="Spec file (JSON or YAML), or -.")
@click.option("--reprocess", is_flag=True, help="Rerun every datum, not only new ones.")
@click.pass_context
def pipeline_update(ctx: click.Context, spec: str, reprocess: bool) -> None:
    """Update pipelines; new datums run, unchanged ones are reused."""
    for p in pipelines(ctx).create(read_spec(spec), update=True, reprocess=reprocess):
        say(p.name)


@pipeline.command("list")
@json_option
@click.pass_context
def pipeline_list(ctx: click.Context, as_json: bool) -> None:
    """List pipelines."""
    show_pipelines(pipelines(ctx).list(), as_json)


@pipeline.command("inspect")
@click.argument("name")
@json_option
@click.pass_context
def pipeline_inspect(ctx: click.Context, name: str, as_json: bool) -> None:
    p = pipelines(ctx).inspect(name)
    if as_json:
        return print_json(p)
    show_pipelines([p], False)
    say(f"cmd: {' '.join(p.spec.transform.cmd)}")
    if p.spec.transform.image:
        say(f"image: {p.spec.transform.image}")


@pipeline.command("delete")
@click.argument("name")
@click.pass_context
def pipeline_delete(ctx: click.Context, name: str) -> None:
    """Delete a pipeline and its output repo."""
    pipelines(ctx).delete(name)


@pipeline.command("stop")
@click.argument("name")
@click.pass_context
def pipeline_stop(ctx: click.Context, name: str) -> None:
    """Stop starting jobs for a pipeline."""
    pipelines(ctx).stop(name)


@pipeline.command("start")
@click.argument("name")
@click.pass_context
def pipeline_start(ctx: click.Context, name: str) -> None:
    """Start a stopped pipeline; it catches up with its inputs."""
    pipelines(ctx).start(name)


@pipeline.command("run-cron")
@click.argument("name")
@json_option
@click.pass_context
def pipeline_run_cron(ctx: click.Context, name: str, as_json: bool) -> None:
    """Tick a pipeline's cron inputs now (each a commit to its tick repo)."""
    show_commits(pipelines(ctx).run_cron(name), as_json)


@pipeline.command("draw")
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]),
              default="text", show_default=True,
              help="An indented tree, a Mermaid flowchart or a Graphviz digraph.")
@click.pass_context
def pipeline_draw(ctx: click.Context, fmt: str) -> None:
    """Draw the repos, the pipelines that read them and how each pipeline's last job went.
    `--format dot | dot -Tsvg > dag.svg` makes a picture."""
    from scheduler.dag import draw

    sys.stdout.write(draw(pipelines(ctx).dag(), fmt))


@main.group()
def job() -> None:
    """List, inspect, wait for and stop jobs."""


@job.command("list")
@click.option("-p", "--pipeline", "name", help="Only this pipeline's jobs.")
@json_option
@click.pass_context
def job_list(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List jobs, newest first."""
    show_jobs(pipelines(ctx).jobs(name), as_json)


@job.command("inspect")
@click.argument("job_id", metavar="JOB")
@json_option
@click.pass_context
def job_inspect(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show a job: its inputs, datum counts and any error."""
    show_job(pipelines(ctx).job(job_id), as_json)


@job.command("wait")
@click.argument("job_id", metavar="JOB")
@click.option("--timeout", type=float)
@json_option
@click.pass_context
def job_wait(ctx: click.Context, job_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait until a job ends; exit 1 unless it succeeded."""
    j = pipelines(ctx).wait_job(job_id, timeout)
    show_job(j, as_json)
    if j.state != "success":
        sys.exit(1)


@job.command("stop")
@click.argument("job_id", metavar="JOB")
@click.pass_context
def job_stop(ctx: click.Context, job_id: str) -> None:
    """Stop a job; its output branch does not move."""
    show_job(pipelines(ctx).stop_job(job_id), False)


@main.command()
@click.option("-p", "--pipeline", "name", required=True)
@click.option("--job", "job_id", help="Only this job (default: all, oldest first).")
@click.option("--datum", help="Only this datum.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.pass_context
def logs(ctx: click.Context, name: str, job_id: str | None, datum: str | None,
         follow: bool) -> None:
    """Print the stdout and stderr that datums wrote."""
    for piece in pipelines(ctx).logs(name, job_id, datum, follow):
        sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()


@main.command("get-logs")
@click.option("-p", "--pipeline", "name")
@click.option("--job", "job_id")
@click.pass_context
def get_logs(ctx: click.Context, name: str | None, job_id: str | None) -> None:
    """1.x: print the logs of a pipeline's jobs or of one job (a create-job job too)."""
    if name is None and job_id is None:
        raise InvalidArgument("get-logs needs --pipeline NAME or --job ID")
    for piece in pipelines(ctx).logs(name, job_id):
        sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()


@main.command("list-job")
@click.option("-p", "--pipeline", "name", help="Only this pipeline's jobs.")
@json_option
@click.pass_context
def list_job(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """1.x: list jobs, newest first, with their output commits as 1.x ids."""
    jobs = pipelines(ctx).jobs(name)
    if as_json:
        return print_json(jobs)
    ids = V1Ids(client(ctx))
    table(["ID", "PIPELINE", "OUTPUT", "STARTED", "DURATION", "STATE"],
          [(j.id, j.pipeline, ids(*j.output.split("@", 1)) if j.output else "-",
            humanize.ago(j.started or j.created),
            humanize.duration((j.finished or time.time()) - (j.started or j.created)),
            j.state) for j in jobs])


@main.command("create-job")
@click.option("-f", "--file", "spec", required=True, help="Job spec (JSON or YAML), or -.")
@click.pass_context
def create_job(ctx: click.Context, spec: str) -> None:
    """1.x: run one job on the input commits a spec names; prints the job's id.

    The spec is 1.3's: transform, inputs (each {commit: {repo: {name}, id}}, id being
    BRANCH/N, a commit id or a branch) and parallelism_spec. The job sees each commit whole
    at /pfs/<name>, read-only, and writes /pfs/out into repo job-<id>; without an image it
    runs in the sandbox, with one in Docker, without network. `list-job` lists it,
    `get-logs --job ID` prints its output, `pfsmount job stop ID` stops it.
    """
    say(pipelines(ctx).create_job(read_spec(spec)).id)


@main.command()
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@click.option("--out", "out", metavar="REPO@BRANCH",
              help="Show this branch at /pfs/out, through the mount (default: a new temp dir).")
@click.option("--no-mount", is_flag=True, help="Export the commits instead of using the mount.")
@click.option("--notebooks", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=".", show_default=True,
              help="Where the lab keeps notebooks (writable in it, at the same path).")
@click.pass_context
def notebook(ctx: click.Context, refs: tuple[str, ...], out: str | None, no_mount: bool,
             notebooks: Path) -> None:
    """JupyterLab where /pfs/<repo> is each commit named and every commit in its
    provenance, read-only, and /pfs/out is writable. Ctrl-C stops it."""
    from pfsmount.workbench.notebook import serve

    serve(client(ctx), list(refs), out, no_mount, notebooks, say)


@main.group()
def datum() -> None:
    """List a finished job's datums; rerun one by hand, exactly as its runner did."""


def _job_ref(ref: str) -> tuple[str | None, str | None]:
    """(pipeline, job) of ``PIPELINE``, ``JOB`` (32 hex digits) or ``PIPELINE@JOB``."""
    pipeline, at, job = ref.partition("@")
    if at:
        return pipeline or None, job
    if len(ref) == 32 and all(c in "0123456789abcdef" for c in ref):
        return None, ref
    return ref, None


def _datum_rows(items: list[DatumInfo], dry: bool = False) -> None:
    def took(d: DatumInfo) -> str:
        return "-" if d.seconds is None else humanize.duration(d.seconds)

    def wrote(d: DatumInfo) -> str:
        return "-" if d.output_bytes is None else humanize.size(d.output_bytes)

    if dry:
        table(["DATUM", "PIPELINE", "STATE", "INPUTS"],
              [(d.id, d.pipeline, d.state, " ".join(d.files)) for d in items])
        return
    table(["DATUM", "STATE", "TIME", "OUTPUT", "INPUTS"],
          [(d.id, d.state, took(d), wrote(d), " ".join(d.files)) for d in items])


@datum.command("list")
@click.argument("ref", metavar="[JOB|PIPELINE[@JOB]]", required=False)
@click.option("-f", "--file", "spec", help="A dry run: the datums this spec file (or -) "
              "would make against its inputs' current heads; nothing is created.")
@click.option("--job", "job_id", help="This job (default: the pipeline's last finished one).")
@json_option
@click.pass_context
def datum_list(ctx: click.Context, ref: str | None, spec: str | None, job_id: str | None,
               as_json: bool) -> None:
    """The datums of a job: how each ended, how long it took, what it wrote and its inputs.
    With a pipeline, its last finished job's."""
    pc = pipelines(ctx)
    if spec is not None:
        if ref is not None or job_id is not None:
            raise InvalidArgument("datum list -f takes no job or pipeline")
        items = pc.plan_datums(read_spec(spec))
    elif ref is None:
        raise InvalidArgument("datum list needs a JOB, a PIPELINE or -f SPEC")
    else:
        name, at = _job_ref(ref)
        items = pc.datums(name, job_id or at)
    if as_json:
        return print_json(items)
    _datum_rows(items, dry=spec is not None)


@datum.command("inspect")
@click.argument("ref", metavar="JOB|PIPELINE@JOB")
@click.argument("datum_id", metavar="DATUM")
@json_option
@click.pass_context
def datum_inspect(ctx: click.Context, ref: str, datum_id: str, as_json: bool) -> None:
    """One datum of a job (its id, or a unique prefix): state, inputs, time, the files it
    wrote and the end of its log."""
    d = pipelines(ctx).datum(_job_id(ref), datum_id)
    if as_json:
        return print_json(d)
    rows = [("Datum", d.id), ("Pipeline", d.pipeline), ("Job", d.job), ("State", d.state),
            ("Inputs", " ".join(d.files)),
            ("Started", humanize.ago(d.started)),
            ("Time", "-" if d.seconds is None else humanize.duration(d.seconds)),
            ("Output", "-" if d.output_bytes is None else
             f"{humanize.size(d.output_bytes)} in {len(d.outputs)} files")]
    if d.ran_in and d.ran_in != d.job:
        rows.append(("Reused from", f"job {d.ran_in}"))
    for key, value in rows:
        say(f"{key + ':':<12} {value}")
    for path, size in d.outputs:
        say(f"  /{path}  {humanize.size(size)}")
    if d.log:
        say("Log (its end):")
        sys.stdout.write(d.log if d.log.endswith("\n") else d.log + "\n")


def _job_id(ref: str) -> str:
    """The job of ``JOB`` or ``PIPELINE@JOB``."""
    _, job_id = _job_ref(ref)  # PIPELINE@ as Pachyderm writes it; the job names its own
    if job_id is None:
        raise InvalidArgument(f"{ref} is not a job: give JOB or PIPELINE@JOB (`pfsmount "
                              "job list` shows them)")
    return job_id


@datum.command("restart")
@click.argument("ref", metavar="JOB|PIPELINE@JOB")
@click.argument("datum_id", metavar="DATUM")
@json_option
@click.pass_context
def datum_restart(ctx: click.Context, ref: str, datum_id: str, as_json: bool) -> None:
    """Rerun a failed datum of a pipeline's last job, which failed (once its cause is
    fixed). When no datum of the job is left failed, the job makes its output commit and
    succeeds. Exit 1 unless it did. (Pachyderm's `restart datum` restarts a stuck datum
    of a running job instead: here `datum_timeout` or `job stop` end those.)"""
    j = pipelines(ctx).restart_datum(_job_id(ref), datum_id)
    show_job(j, as_json)
    if j.state != "success":
        sys.exit(1)


def _reproduce(ctx: click.Context, name: str, datum_id: str | None, job_id: str | None,
               program: str | None) -> NoReturn:
    """Rebuild one datum's task from the daemon and run it here: the transform, or
    ``program`` in its place. Exits with its exit code."""
    from pfsmount.workbench import replay

    pc = pipelines(ctx)
    t = pc.reproduce(name, datum_id, job_id)
    try:
        task, home = replay.prepare(t)
        where = f"image {t.image}" if t.image else "the sandbox"
        sys.stderr.write(f"datum {t.datum} of job {t.job} ({' '.join(t.files)}) in {where}; "
                         f"/pfs/out is {home / 'out'}\n")
        sys.stderr.flush()
        code = replay.shell(t, task, program) if program else replay.run(t, task)
    finally:
        if t.scratch:
            pc.forget(t.scratch)
    if program is None:
        sys.stderr.write(f"exit code {code}\n")
    sys.exit(code if code >= 0 else 128 - code)


@datum.command("run")
@click.argument("name", metavar="PIPELINE")
@click.argument("datum_id", metavar="[DATUM]", required=False)
@click.option("--job", "job_id", help="The datum of this job (default: the newest with it).")
@click.pass_context
def datum_run(ctx: click.Context, name: str, datum_id: str | None, job_id: str | None
              ) -> None:
    """Rerun a datum's transform as its runner did; exit with its exit code. DATUM
    defaults to the failed datum of the last failed job, else the last job's first."""
    _reproduce(ctx, name, datum_id, job_id, None)


@datum.command("shell")
@click.argument("name", metavar="PIPELINE")
@click.argument("datum_id", metavar="[DATUM]", required=False)
@click.option("--job", "job_id", help="The datum of this job (default: the newest with it).")
@click.option("--shell", "program", default="/bin/sh", show_default=True,
              help="The program to run in the datum's place.")
@click.pass_context
def datum_shell(ctx: click.Context, name: str, datum_id: str | None, job_id: str | None,
                program: str) -> None:
    """A shell where a datum ran: its inputs at /pfs/<input> (read-only), its env and
    working directory, an empty /pfs/out. DATUM defaults as for `datum run`."""
    _reproduce(ctx, name, datum_id, job_id, program)


# Pachyderm 1.x spellings whose meaning is exactly a noun-verb command's.
for _alias, _command in {
    "create-repo": repo_create,
    "list-repo": repo_list,
    "delete-repo": repo_delete,
    "create-pipeline": pipeline_create,
    "update-pipeline": pipeline_update,
    "list-pipeline": pipeline_list,
    "inspect-job": job_inspect,
}.items():
    main.add_command(_command, _alias)


if __name__ == "__main__":
    main()
