"""``PipelineClient``: pipeline, job and log calls over a daemon ``Client``.

Kept apart from the routes so that the CLI can talk to the scheduler without importing it.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Any

from pfsmount.api.client import Client
from pfsmount.pfs.model import Commit
from scheduler.records import Job, Pipeline
from scheduler.wire import DatumInfo, DatumTask


class PipelineClient:
    """Pipeline, job and log calls over a daemon ``Client``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, spec_text: str, update: bool = False,
               reprocess: bool = False) -> list[Pipeline]:
        return self.client.call("POST", "/pipelines", list[Pipeline], json={
            "spec": spec_text, "update": update, "reprocess": reprocess})

    def list(self) -> builtins.list[Pipeline]:
        return self.client.call("GET", "/pipelines", builtins.list[Pipeline])

    def inspect(self, name: str) -> Pipeline:
        return self.client.call("GET", f"/pipelines/{name}", Pipeline)

    def delete(self, name: str) -> None:
        self.client.call("DELETE", f"/pipelines/{name}")

    def stop(self, name: str) -> Pipeline:
        return self.client.call("POST", f"/pipelines/{name}/stop", Pipeline)

    def start(self, name: str) -> Pipeline:
        return self.client.call("POST", f"/pipelines/{name}/start", Pipeline)

    def jobs(self, pipeline: str | None = None) -> builtins.list[Job]:
        params = {"pipeline": pipeline} if pipeline else {}
        return self.client.call("GET", "/jobs", builtins.list[Job], params=params)

    def create_job(self, spec_text: str) -> Job:
        """A 1.x one-off job (``create-job -f``) on the commits its spec names."""
        return self.client.call("POST", "/jobs", Job, json={"spec": spec_text})

    def job(self, job_id: str) -> Job:
        return self.client.call("GET", f"/jobs/{job_id}", Job)

    def stop_job(self, job_id: str) -> Job:
        return self.client.call("POST", f"/jobs/{job_id}/stop", Job)

    def wait_job(self, job_id: str, timeout: float | None = None) -> Job:
        return self.client.call("POST", f"/jobs/{job_id}/wait", Job, json={"timeout": timeout})

    def wait_commit(self, ref: str, timeout: float | None = None) -> builtins.list[Commit]:
        return self.client.wait_commit(ref, timeout)

    def datums(self, pipeline: str, job: str | None = None) -> builtins.list[DatumInfo]:
        params = {"job": job} if job else {}
        return self.client.call("GET", f"/pipelines/{pipeline}/datums",
                                builtins.list[DatumInfo], params=params)

    def reproduce(self, pipeline: str, datum: str | None = None,
                  job: str | None = None) -> DatumTask:
        return self.client.call("POST", f"/pipelines/{pipeline}/datums/reproduce", DatumTask,
                                json={"datum": datum, "job": job})

    def forget(self, token: str) -> None:
        self.client.call("DELETE", f"/reproductions/{token}")

    def logs(self, pipeline: str | None, job: str | None = None, datum: str | None = None,
             follow: bool = False) -> Iterator[bytes]:
        """Datum logs of a pipeline, or of one job (``pipeline`` None: the job's own)."""
        params: dict[str, Any] = {"follow": int(follow)}
        if pipeline:
            params["pipeline"] = pipeline
        if job:
            params["job"] = job
        if datum:
            params["datum"] = datum
        yield from self.client.stream_bytes("GET", "/logs", params=params)

