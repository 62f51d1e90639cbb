"""The scheduler's HTTP routes, added to the daemon's API: one per ``Scheduler`` method.

``scheduler.client.PipelineClient`` is their client side.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from pfsmount.api.server import arg, body, json_response, route
from pfsmount.pfs.refs import check_name
from scheduler import reproduce
from scheduler.engine import Scheduler
from scheduler.jobspec import parse_job_spec
from scheduler.records import TERMINAL, Pipeline
from scheduler.spec import parse_specs


def routes(scheduler: Scheduler) -> list[BaseRoute]:
    s = scheduler

    def run(fn: Any, *args: Any) -> Any:
        return anyio.to_thread.run_sync(fn, *args)

    async def create(request: Request) -> Response:
        p = await body(request)
        update, reprocess = arg(p, "update", bool, False), arg(p, "reprocess", bool, False)

        def go() -> list[Pipeline]:
            return s.create_pipelines(parse_specs(arg(p, "spec")), update, reprocess)

        return json_response(await run(go), 201)

    async def listing(request: Request) -> Response:
        return json_response(await run(s.list_pipelines))

    async def inspect(request: Request) -> Response:
        return json_response(await run(s.inspect_pipeline, request.path_params["name"]))

    async def delete(request: Request) -> Response:
        await run(s.delete_pipeline, request.path_params["name"])
        return json_response({"deleted": request.path_params["name"]})

    async def stop(request: Request) -> Response:
        return json_response(await run(s.set_stopped, request.path_params["name"], True))

    async def start(request: Request) -> Response:
        return json_response(await run(s.set_stopped, request.path_params["name"], False))

    async def jobs(request: Request) -> Response:
        return json_response(await run(s.list_jobs, request.query_params.get("pipeline")))

    async def job_create(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(lambda: s.create_job(parse_job_spec(arg(p, "spec")))),
                             201)

    async def job(request: Request) -> Response:
        return json_response(await run(s.inspect_job, request.path_params["id"]))

    async def job_stop(request: Request) -> Response:
        return json_response(await run(s.stop_job, request.path_params["id"]))

    async def job_wait(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(lambda: s.wait_job(request.path_params["id"],
                                                          arg(p, "timeout", float, None))))

    async def commit_wait(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(lambda: s.wait_commit(arg(p, "ref"),
                                                             arg(p, "timeout", float, None))))

    async def logs(request: Request) -> Response:
        q = dict(request.query_params)
        job_id, datum = arg(q, "job", str, None), arg(q, "datum", str, None)
        if job_id is not None and q.get("pipeline") is None:  # 1.x get-logs --job
            pipeline = (await run(s.inspect_job, job_id)).pipeline
        else:
            pipeline = check_name("pipeline", arg(q, "pipeline"))
        follow = arg(q, "follow", bool, False)
        files = await run(s.logs_for, pipeline, job_id, datum)
        return StreamingResponse(_tail(s, pipeline, job_id, datum, files, follow),
                                 media_type="text/plain")

    async def datum_list(request: Request) -> Response:
        job_id = arg(dict(request.query_params), "job", str, None)
        return json_response(await run(reproduce.list_datums, s, request.path_params["name"],
                                       job_id))

    async def datum_task(request: Request) -> Response:
        p = await body(request)
        return json_response(await run(reproduce.reproduce, s, request.path_params["name"],
                                       arg(p, "datum", str, None), arg(p, "job", str, None)))

    async def datum_forget(request: Request) -> Response:
        await run(reproduce.forget, s, request.path_params["token"])
        return json_response({"deleted": request.path_params["token"]})

    return [
        route("/pipelines", create, "POST"),
        route("/pipelines/{name}/datums", datum_list, "GET"),
        route("/pipelines/{name}/datums/reproduce", datum_task, "POST"),
        route("/reproductions/{token}", datum_forget, "DELETE"),
        route("/pipelines", listing, "GET"),
        route("/pipelines/{name}", inspect, "GET"),
        route("/pipelines/{name}", delete, "DELETE"),
        route("/pipelines/{name}/stop", stop, "POST"),
        route("/pipelines/{name}/start", start, "POST"),
        route("/jobs", jobs, "GET"),
        route("/jobs", job_create, "POST"),
        route("/jobs/{id}", job, "GET"),
        route("/jobs/{id}/stop", job_stop, "POST"),
        route("/jobs/{id}/wait", job_wait, "POST"),
        route("/commits/wait", commit_wait, "POST"),
        route("/logs", logs, "GET"),
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
