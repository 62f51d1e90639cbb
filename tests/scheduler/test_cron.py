"""Cron inputs, as Pachyderm defines them: a tick repo of the pipeline's own, one commit per
tick holding a file named by its time (or only that file, with ``overwrite``), each tick a
job. Ticks come from ``pfsmount pipeline run-cron`` or a short ``@every``; no long sleeps.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pfsmount.errors import InvalidArgument
from pfsmount.pfs import Pfs
from scheduler.cron import CronInput, Schedule, Ticker
from scheduler.spec import parse_specs
from tests.scheduler.conftest import Pfsd

TICK = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
# Each tick file is a datum: the program sees one at /pfs/tick and names its output by it.
SEEN = "for f in /pfs/tick/*; do echo seen > /pfs/out/$(basename $f); done"


def cron(**fields: object) -> dict[str, object]:
    return {"cron": {"name": "tick", **fields}}


def test_schedules_tick_when_robfig_cron_would() -> None:
    t = datetime(2024, 1, 1, 0, 3, 7, 500_000, tzinfo=UTC)
    assert Schedule("@every 10s").next(t) == datetime(2024, 1, 1, 0, 3, 17, tzinfo=UTC)
    assert Schedule("@every 1h30m").next(t) == datetime(2024, 1, 1, 1, 33, 7, tzinfo=UTC)
    assert Schedule("*/10 * * * *").next(t) == datetime(2024, 1, 1, 0, 10, tzinfo=UTC)
    assert Schedule("@daily").next(t) == datetime(2024, 1, 2, tzinfo=UTC)
    for wrong in ("@every", "@every ten", "* * * *", "0 0 * * * *", "@sometimes", "61 * * * *"):
        with pytest.raises(InvalidArgument, match=r"input\.cron\.spec"):
            Schedule(wrong)


def test_the_ticker_follows_its_clock_and_catches_up_once(tmp_path: Path) -> None:
    """A fake clock: ``step(now)`` is what the daemon's service calls every half second."""
    pfs = Pfs(tmp_path / "root")
    try:
        pfs.repos.create("p_tick")
        start = datetime(2024, 1, 1, tzinfo=UTC)
        tick = CronInput(name="tick", spec="@every 10s", repo="p_tick", start=start)
        ticker = Ticker(pfs, lambda: [tick])
        now = start + timedelta(days=400, seconds=25)  # down for 400 days: one tick, not 3M
        assert [c.description for c in ticker.step(now)] == \
            ["cron tick 2025-02-04T00:00:20Z"]
        assert ticker.step(now + timedelta(seconds=4)) == []  # not due yet
        ticker.step(now + timedelta(seconds=5))
        files = [f.path for f in pfs.files.list("p_tick@master", "/")]
        assert files == ["/2025-02-04T00:00:20Z", "/2025-02-04T00:00:30Z"]
        # A new ticker (a restarted daemon) goes on from the latest tick file.
        again = Ticker(pfs, lambda: [tick])
        assert again.step(now + timedelta(seconds=9)) == []
        assert len(again.step(now + timedelta(seconds=15))) == 1
        # A tick that cannot land (a commit left open on the tick repo) does not stop the
        # others, and lands once it can.
        other = CronInput(name="other", spec="@every 10s", repo="q_tick", start=start)
        pfs.repos.create("q_tick")
        pfs.commits.start("p_tick", "master")
        both = Ticker(pfs, lambda: [tick, other])
        assert [c.repo for c in both.step(now + timedelta(seconds=25))] == ["q_tick"]
        pfs.commits.finish("p_tick@master")
        assert [c.repo for c in both.step(now + timedelta(seconds=26))] == ["p_tick"]
    finally:
        pfs.close()


def test_a_cron_spec_reads_its_tick_repo_and_refuses_what_it_does_not_know() -> None:
    base = {"pipeline": {"name": "scrape"}, "transform": {"cmd": ["true"]}}
    spec = parse_specs(json.dumps({**base, "input": cron(spec="@every 10s")}))[0]
    assert spec.tree.branches() == ["scrape_tick@master"]  # Pachyderm's default repo
    assert spec.tree.made_repos() == ["scrape_tick"]
    named = parse_specs(json.dumps({**base, "input": cron(spec="@hourly", repo="ticks")}))[0]
    assert named.tree.repos() == ["ticks"]
    with pytest.raises(InvalidArgument, match=r"input\.cron\.spec"):
        parse_specs(json.dumps({**base, "input": cron(spec="every minute")}))
    with pytest.raises(InvalidArgument, match=r"input\.cron\.timezone is not supported"):
        parse_specs(json.dumps({**base, "input": cron(spec="@daily", timezone="UTC")}))


def test_run_cron_ticks_into_the_tick_repo_and_each_tick_is_a_job(pfsd: Pfsd) -> None:
    pfsd.create(pfsd.spec("clock", SEEN, cron(spec="@every 1h")))
    assert "clock_tick" in pfsd.ok("repo", "list")
    assert pfsd.head("clock_tick") is None  # nothing until the first tick

    first = pfsd.json("pipeline", "run-cron", "clock")
    assert [c["repo"] for c in first] == ["clock_tick"]
    out = pfsd.wait(f"clock_tick@{first[0]['id']}")
    names = list(pfsd.tree("clock", out["clock"]))
    assert len(names) == 1 and TICK.fullmatch(names[0]), names

    time.sleep(1.0)  # the next tick is named by a later second
    second = pfsd.json("pipeline", "run-cron", "clock")
    out = pfsd.wait(f"clock_tick@{second[0]['id']}")
    ticks = pfsd.tree("clock_tick", second[0]["id"])
    assert len(ticks) == 2 and all(v == b"" for v in ticks.values())  # empty, as Pachyderm's
    assert set(pfsd.tree("clock", out["clock"])) == set(ticks)  # each tick a datum
    job = pfsd.quick_job("clock")
    assert (job["state"], job["processed"], job["skipped"]) == ("success", 1, 1)

    pfsd.fails("pipeline", "run-cron", "nosuch", match="nosuch")
    pfsd.ok("pipeline", "delete", "clock")
    assert "clock_tick" not in pfsd.ok("repo", "list")  # deleted with its pipeline


def test_overwrite_keeps_only_the_latest_tick(pfsd: Pfsd) -> None:
    pfsd.create(pfsd.spec("latest", SEEN, cron(spec="@every 1h", overwrite=True)))
    pfsd.ok("pipeline", "run-cron", "latest")
    time.sleep(1.0)
    tick = pfsd.json("pipeline", "run-cron", "latest")[0]["id"]
    out = pfsd.wait(f"latest_tick@{tick}")
    (only,) = pfsd.tree("latest_tick", tick)
    assert list(pfsd.tree("latest", out["latest"])) == [only]


def test_the_daemon_ticks_on_time_until_the_pipeline_stops(pfsd: Pfsd) -> None:
    pfsd.create(pfsd.spec("every", SEEN, cron(spec="@every 1s")))
    deadline = time.monotonic() + 20
    while len(pfsd.tree("every_tick")) < 2:
        assert time.monotonic() < deadline, "no two ticks in 20 s of @every 1s"
        time.sleep(0.3)
    pfsd.ok("pipeline", "stop", "every")
    time.sleep(1.0)  # a tick under way lands
    stopped = pfsd.head("every_tick")
    time.sleep(2.5)
    assert pfsd.head("every_tick") == stopped  # no tick while stopped
    pfsd.ok("pipeline", "delete", "every")
