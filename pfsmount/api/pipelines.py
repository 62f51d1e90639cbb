"""The scheduler's HTTP routes: one per ``Scheduler`` operation, added to the daemon's API.

The composition root builds them with ``routes(scheduler)`` and hands them to ``build_app``;
``pfsmount.api.pipeline_client.PipelineClient`` is their client side. Handlers run the
scheduler's calls in worker threads and return its records, which the route table converts
to ``wire_pipelines``' shapes. Arguments follow ``pfsmount.api.endpoint``'s rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.responses import Response, StreamingResponse

from pfsmount.errors import InvalidArgument
from pfsmount.pfs.refs import check_name
from scheduler import dag, reproduce, restart
from scheduler.engine import Scheduler
from scheduler.jobspec import parse_job_spec
from scheduler.records import TERMINAL
from scheduler.spec import parse_specs
from scheduler.wire import DatumTask

from . import wire as w
from . import wire_pipelines as wp
from .endpoint import TEXT, Call, Endpoint


def routes(scheduler: Scheduler) -> list[Endpoint]:
    s = scheduler

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        return anyio.to_thread.run_sync(fn, *args)

    async def create(call: Call) -> Any:
        a: wp.PipelineCreateArgs = call.args
        return await run(lambda: s.create_pipelines(parse_specs(a.spec), a.update, a.reprocess))

    async def listing(call: Call) -> Any:
        return await run(s.list_pipelines)

    async def inspect(call: Call) -> Any:
        return await run(s.inspect_pipeline, call.path["name"])

    async def delete(call: Call) -> Any:
        await run(s.delete_pipeline, call.path["name"])
        return w.Deleted(deleted=call.path["name"])

    async def stop(call: Call) -> Any:
        return await run(s.set_stopped, call.path["name"], True)

    async def start(call: Call) -> Any:
        return await run(s.set_stopped, call.path["name"], False)

    async def run_cron(call: Call) -> Any:
        return await run(s.run_cron, call.path["name"])

    async def jobs(call: Call) -> Any:
        return await run(s.list_jobs, call.args.pipeline)

    async def job_create(call: Call) -> Any:
        return await run(lambda: s.create_job(parse_job_spec(call.args.spec)))

    async def job(call: Call) -> Any:
        return await run(s.inspect_job, call.path["id"])

    async def job_stop(call: Call) -> Any:
        return await run(s.stop_job, call.path["id"])

    async def job_wait(call: Call) -> Any:
        return await run(s.wait_job, call.path["id"], call.args.timeout)

    async def commit_wait(call: Call) -> Any:
        return await run(s.wait_commit, call.args.ref, call.args.timeout)

    async def logs(call: Call) -> Response:
        a: wp.LogArgs = call.args
        if a.job is not None and a.pipeline is None:  # 1.x get-logs --job
            pipeline = (await run(s.inspect_job, a.job)).pipeline
        elif a.pipeline is None:
            raise InvalidArgument("missing argument 'pipeline'")
        else:
            pipeline = check_name("pipeline", a.pipeline)
        files = await run(s.logs_for, pipeline, a.job, a.datum)
        return StreamingResponse(_tail(s, pipeline, a.job, a.datum, files, a.follow),
                                 media_type=TEXT)

    async def datum_list(call: Call) -> Any:
        return await run(reproduce.list_datums, s, call.path["name"], call.args.job)

    async def job_datums(call: Call) -> Any:
        return await run(reproduce.list_datums, s, None, call.path["id"])

    async def datum_inspect(call: Call) -> Any:
        return await run(reproduce.inspect_datum, s, call.path["id"], call.path["datum"])

    async def datum_restart(call: Call) -> Any:
        return await run(restart.restart, s, call.path["id"], call.path["datum"])

    async def datum_plan(call: Call) -> Any:
        return await run(reproduce.plan, s, call.args.spec)

    async def draw(call: Call) -> Any:
        return await run(dag.graph, s)

    async def datum_task(call: Call) -> Any:
        a: wp.ReproduceArgs = call.args
        return await run(reproduce.reproduce, s, call.path["name"], a.datum, a.job)

    async def datum_forget(call: Call) -> Any:
        await run(reproduce.forget, s, call.path["token"])
        return w.Deleted(deleted=call.path["token"])

    E = Endpoint
    return [
        E("POST", "/pipelines", create, "Create (or update) the pipelines of a spec file.",
          wp.PipelineCreateArgs, list[wp.Pipeline], status=201),
        E("GET", "/pipelines", listing, "Every pipeline.", answer=list[wp.Pipeline]),
        E("GET", "/pipelines/{name}", inspect, "One pipeline.", answer=wp.Pipeline),
        E("DELETE", "/pipelines/{name}", delete, "Delete a pipeline (its output repo stays).",
          answer=w.Deleted),
        E("POST", "/pipelines/{name}/stop", stop, "Make no new jobs.", answer=wp.Pipeline),
        E("POST", "/pipelines/{name}/start", start, "Make jobs again.", answer=wp.Pipeline),
        E("POST", "/pipelines/{name}/cron", run_cron, "Tick every cron input of a pipeline "
          "now; the tick commits.", answer=list[w.Commit]),
        E("GET", "/pipelines/{name}/datums", datum_list, "The datums of a finished job (the "
          "last by default) and how each ended.", wp.DatumListArgs, list[wp.DatumInfo]),
        E("POST", "/pipelines/{name}/datums/reproduce", datum_task, "One datum's task, with "
          "its inputs at paths of the daemon's host.", wp.ReproduceArgs, DatumTask,
          local_only=True),
        E("GET", "/jobs/{id}/datums", job_datums, "The datums of a job and how each ended "
          "(so far).", answer=list[wp.DatumInfo]),
        E("GET", "/jobs/{id}/datums/{datum}", datum_inspect, "One datum of a job (an id or a "
          "unique prefix of one): its state, inputs, time, outputs and log.",
          answer=wp.DatumDetail),
        E("POST", "/jobs/{id}/datums/{datum}/restart", datum_restart, "Rerun a failed datum "
          "of a pipeline's last job, which failed; once none is left failed, the job makes "
          "its output commit.", answer=wp.Job),
        E("POST", "/datums/plan", datum_plan, "A dry run: the datums the pipelines of a spec "
          "file would make against their inputs' heads; nothing is created.", wp.SpecArgs,
          list[wp.DatumInfo]),
        E("GET", "/dag", draw, "Every repo and pipeline, what each pipeline reads, and its "
          "last job.", answer=wp.Dag),
        E("DELETE", "/reproductions/{token}", datum_forget, "Remove the input copies of a "
          "reproduction.", answer=w.Deleted, local_only=True),
        E("GET", "/jobs", jobs, "Every job, or a pipeline's.", wp.JobListArgs, list[wp.Job]),
        E("POST", "/jobs", job_create, "A 1.x one-off job on the commits its spec names.",
          wp.SpecArgs, wp.Job, status=201),
        E("GET", "/jobs/{id}", job, "One job.", answer=wp.Job),
        E("POST", "/jobs/{id}/stop", job_stop, "Kill a job.", answer=wp.Job),
        E("POST", "/jobs/{id}/wait", job_wait, "Wait until a job ends.", wp.TimeoutArgs,
          wp.Job),
        E("POST", "/commits/wait", commit_wait, "Wait until a commit and every job "
          "downstream of it are done; their output commits.", w.WaitArgs, list[w.Commit]),
        E("GET", "/logs", logs, "Datum logs of a pipeline, a job or a datum (follow: until "
          "the jobs end).", wp.LogArgs, media=TEXT),
    ]


def _tail(s: Scheduler, pipeline: str, job: str | None, datum: str | None,
          files: list[Path], follow: bool) -> Iterator[bytes]:
    """The logs' bytes; with ``follow``, keep going until the job(s) end."""
    offsets: dict[Path, int] = {}
    while True:
        for path in files:
            with open(path, "rb") as f:
                f.seek(offsets.get(path, 0))
                data = f.read()
            offsets[path] = offsets.get(path, 0) + len(data)
            if data:
                yield data
        if not follow:
            return
        running = [j for j in s.list_jobs(pipeline)
                   if (job is None or j.id == job) and j.state not in TERMINAL]
        if not running:
            follow = False  # one last pass picks up what was written meanwhile
        time.sleep(0.2)
        files = s.logs_for(pipeline, job, datum)
