"""Cron inputs: Pachyderm's ``input.cron``, a pipeline triggered by time.

A cron input (``name``, ``spec``, ``repo``, ``overwrite``, ``start``) reads an input repo of
its own, ``<pipeline>_<name>`` unless ``repo`` names another, made when the pipeline is
created and deleted with it (``made_repos``). Each tick is a finished commit on its
``master`` holding an empty file named by the tick's time (RFC 3339, UTC:
``2024-01-01T00:00:10Z``), added beside the earlier ones, or alone with ``overwrite``: as
Pachyderm does, the tick commit then triggers the pipeline as any commit does, its datums
split by ``/*`` (one per tick file) and shown at ``/pfs/<name>``.

``spec`` takes what Pachyderm takes (robfig/cron's standard parser): five cron fields
(``*/10 * * * *``, read by croniter), a descriptor (``@hourly``, ``@daily``...) or
``@every <duration>`` (``@every 1h30m10s``). The next tick follows the latest tick file in
the repo, else ``start``, else the moment the daemon first sees the pipeline; a daemon that
was down ticks once for all the ticks it missed, not once each.

Owns the kind (registered with ``scheduler.inputs``), the schedule, making a tick commit
(``tick``) and the daemon's ``Ticker`` service. Knows nothing of jobs: the commit is the
trigger. Reaches the model only through ``Pfs``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from croniter import croniter

from pfsmount.errors import InvalidArgument, NotFound, PfsError
from pfsmount.pfs.refs import check_name
from pfsmount.pfs.state import Staged
from scheduler.datums import Snapshot
from scheduler.fields import Name, typed
from scheduler.inputs import Files, InputKind, PfsInput, Reader, check_project, register

if TYPE_CHECKING:
    from pfsmount.pfs import Commit, Pfs

log = logging.getLogger("pfsmount.scheduler")

# robfig/cron's descriptors, as croniter reads them.
_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                "@hourly": "0 * * * *"}
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class Schedule:
    """When a cron spec ticks: ``next(after)`` is its first tick after ``after``."""

    def __init__(self, text: str, where: str = "input.cron.spec") -> None:
        self.text = text.strip()
        self.every: timedelta | None = None
        self.fields = ""
        if self.text.startswith("@every"):
            self.every = _every(self.text.removeprefix("@every").strip(), text, where)
        elif self.text in _DESCRIPTORS:
            self.fields = _DESCRIPTORS[self.text]
        elif len(self.text.split()) == 5 and croniter.is_valid(self.text):
            self.fields = self.text
        else:
            raise InvalidArgument(f"spec field {where} {text!r} must be 5 cron fields "
                                  "(*/10 * * * *), @hourly, @daily... or @every 30s")

    def next(self, after: datetime) -> datetime:
        if self.every is not None:  # as robfig/cron: from ``after``'s whole second
            return after.replace(microsecond=0) + self.every
        found = croniter(self.fields, after).get_next(datetime)
        assert isinstance(found, datetime)
        return found

    def latest(self, due: datetime, now: datetime) -> datetime:
        """The last tick at or before ``now``, given a tick ``due`` at or before it (in one
        step, however long ago ``due`` was)."""
        if self.every is not None:
            return due + self.every * ((now - due) // self.every)
        before = croniter(self.fields, now).get_prev(datetime)
        assert isinstance(before, datetime)
        return max(due, before)


def _every(duration: str, text: str, where: str) -> timedelta:
    """A Go duration (``1h30m``, ``10s``, ``500ms``); robfig/cron ticks at most once a
    second."""
    parts = _PART.findall(duration)
    if not duration or "".join(n + u for n, u in parts) != duration:
        raise InvalidArgument(f"spec field {where} {text!r}: @every takes a duration "
                              "like 10s, 5m or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    return timedelta(seconds=max(1, int(seconds)))


def tick_name(when: datetime) -> str:
    """A tick file's name: its time in RFC 3339 at UTC, as Pachyderm names it."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _RawCron(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    spec: Name
    repo: str = ""
    overwrite: bool = False
    start: datetime | None = None
    project: str = ""  # 2.5's: only "default" (inputs.check_project)


@register
@dataclass(frozen=True, kw_only=True)
class CronInput(InputKind):
    """Ticks of a schedule, as commits to a repo of its own (``repo``: "" until the
    pipeline's name is known, see ``for_pipeline``)."""

    key = "cron"
    name: str
    spec: str
    repo: str = ""
    overwrite: bool = False
    start: datetime | None = None

    @classmethod
    def read(cls, value: Any, where: str, child: Reader) -> CronInput:
        raw = typed(value, _RawCron, f"{where}.")
        check_project(raw.project, f"{where}.project")
        check_name("input", raw.name)
        if raw.repo:
            check_name("repo", raw.repo)
        Schedule(raw.spec, f"{where}.spec")
        start = raw.start
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        return cls(name=raw.name, spec=raw.spec.strip(), repo=raw.repo,
                   overwrite=raw.overwrite, start=start)

    def fragment(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "spec": self.spec, "repo": self.repo,
                               "overwrite": self.overwrite}
        if self.start is not None:
            out["start"] = self.start.isoformat()
        return out

    def for_pipeline(self, pipeline: str) -> CronInput:
        if self.repo:
            return self
        return replace(self, repo=check_name("repo", f"{pipeline}_{self.name}"))

    @property
    def leaf(self) -> PfsInput:
        return PfsInput(repo=self.repo, branch="master", glob="/*", name=self.name)

    def leaves(self) -> list[PfsInput]:
        return [self.leaf]

    def made_repos(self) -> list[str]:
        return [self.repo]

    def datums(self, snapshot: Snapshot) -> list[Files]:
        return self.leaf.datums(snapshot)

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.spec)


def crons(tree: InputKind) -> list[CronInput]:
    """The cron inputs in an input tree."""
    if isinstance(tree, CronInput):
        return [tree]
    return [c for child in tree.children() for c in crons(child)]


_TICKING = threading.Lock()  # a tick reads the head it builds on: one at a time


def tick(pfs: Pfs, cron: CronInput, when: datetime | None = None) -> Commit:
    """Make one tick commit of ``cron`` (at ``when``, by default now)."""
    when = when or datetime.now(UTC)
    staged = Staged()
    empty = pfs.state.stage_bytes(staged, b"", 0o644)
    pfs.state.land([staged])
    with _TICKING:
        head = pfs.repos.inspect_branch(cron.repo, "master").head
        base = None if cron.overwrite else head
        return pfs.files.write_snapshot(cron.repo, "master", {tick_name(when): empty},
                                        description=f"cron tick {tick_name(when)}",
                                        base=base)


def last_tick(pfs: Pfs, cron: CronInput) -> datetime | None:
    """The latest tick in ``cron``'s repo (its newest file named by a time), if any."""
    latest: datetime | None = None
    with contextlib.suppress(NotFound):
        for info in pfs.files.list(f"{cron.repo}@master", "/"):
            with contextlib.suppress(ValueError):
                name = info.path.rsplit("/", 1)[-1]
                when = datetime.strptime(name, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                latest = when if latest is None else max(latest, when)
    return latest


class Ticker:
    """The daemon's cron service: ticks every cron input that ``active`` lists (those of
    pipelines not stopped) when its schedule says."""

    PERIOD = 0.5  # seconds between looks: a tick is at most this late

    def __init__(self, pfs: Pfs, active: Callable[[], Sequence[CronInput]]) -> None:
        self.pfs = pfs
        self.active = active
        self._base: dict[CronInput, datetime] = {}  # the tick the next one follows
        self._failing: set[CronInput] = set()  # told once in the log, until it ticks again

    async def run(self) -> None:
        while True:
            try:
                await trio.to_thread.run_sync(self.step, datetime.now(UTC))
            except Exception:  # a service must not end the daemon: try again next time
                log.exception("cron ticks failed; trying again")
            await trio.sleep(self.PERIOD)

    def step(self, now: datetime) -> list[Commit]:
        """Tick what is due at ``now``: at most once per cron input, however many ticks it
        missed (the latest of them)."""
        made = []
        active = set(self.active())
        for gone in set(self._base) - active:
            del self._base[gone]
        for cron in active:
            if cron not in self._base:
                self._base[cron] = last_tick(self.pfs, cron) or cron.start or now
            schedule = cron.schedule
            due = schedule.next(self._base[cron])
            if due > now:
                continue
            due = schedule.latest(due, now)
            try:
                made.append(tick(self.pfs, cron, due))
            except PfsError as e:  # its repo deleted, an open commit on it: said once
                if cron not in self._failing:
                    log.warning("cron input %s cannot tick into %s: %s", cron.name, cron.repo, e)
                self._failing.add(cron)
                continue
            self._failing.discard(cron)
            self._base[cron] = due
        return made

    def ticked(self, cron: CronInput, when: datetime) -> None:
        """A tick made elsewhere (``run-cron``): the schedule goes on from it."""
        self._base[cron] = when
