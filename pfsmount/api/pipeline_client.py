"""``PipelineClient``: pipeline, job, datum and log calls over a daemon ``Client``.

The client side of ``pfsmount.api.pipelines``; answers are ``wire_pipelines``' shapes. Apart
from ``Client`` so that commands on repos and files do not import the spec parser.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator

from scheduler.wire import DatumTask

from .client import Client, given, segment
from .wire import Commit
from .wire_pipelines import Dag, DatumDetail, DatumInfo, Job, Pipeline


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
        return self.client.call("GET", f"/pipelines/{segment(name)}", Pipeline)

    def delete(self, name: str) -> None:
        self.client.call("DELETE", f"/pipelines/{segment(name)}")

    def stop(self, name: str) -> Pipeline:
        return self.client.call("POST", f"/pipelines/{segment(name)}/stop", Pipeline)

    def start(self, name: str) -> Pipeline:
        return self.client.call("POST", f"/pipelines/{segment(name)}/start", Pipeline)

    def run_cron(self, name: str) -> builtins.list[Commit]:
        """Tick every cron input of pipeline ``name`` now; the tick commits."""
        return self.client.call("POST", f"/pipelines/{segment(name)}/cron",
                                builtins.list[Commit])

    def jobs(self, pipeline: str | None = None) -> builtins.list[Job]:
        return self.client.call("GET", "/jobs", builtins.list[Job],
                                params=given(pipeline=pipeline or None))

    def create_job(self, spec_text: str) -> Job:
        """A 1.x one-off job (``create-job -f``) on the commits its spec names."""
        return self.client.call("POST", "/jobs", Job, json={"spec": spec_text})

    def job(self, job_id: str) -> Job:
        return self.client.call("GET", f"/jobs/{segment(job_id)}", Job)

    def stop_job(self, job_id: str) -> Job:
        return self.client.call("POST", f"/jobs/{segment(job_id)}/stop", Job)

    def wait_job(self, job_id: str, timeout: float | None = None) -> Job:
        return self.client.call("POST", f"/jobs/{segment(job_id)}/wait", Job,
                                json={"timeout": timeout})

    def wait_commit(self, ref: str, timeout: float | None = None) -> builtins.list[Commit]:
        return self.client.wait_commit(ref, timeout)

    def datums(self, pipeline: str | None, job: str | None = None
               ) -> builtins.list[DatumInfo]:
        """The datums of a job (``pipeline`` None: the job's own pipeline), or of a
        pipeline's last finished job."""
        if pipeline is None:
            assert job is not None
            return self.client.call("GET", f"/jobs/{segment(job)}/datums",
                                    builtins.list[DatumInfo])
        return self.client.call("GET", f"/pipelines/{segment(pipeline)}/datums",
                                builtins.list[DatumInfo], params=given(job=job or None))

    def datum(self, job: str, datum: str) -> DatumDetail:
        return self.client.call("GET", f"/jobs/{segment(job)}/datums/{segment(datum)}",
                                DatumDetail)

    def restart_datum(self, job: str, datum: str) -> Job:
        """Rerun a failed datum of a failed job; the job afterwards."""
        return self.client.call(
            "POST", f"/jobs/{segment(job)}/datums/{segment(datum)}/restart", Job)

    def plan_datums(self, spec_text: str) -> builtins.list[DatumInfo]:
        """The datums the pipelines of a spec would make now (nothing is created)."""
        return self.client.call("POST", "/datums/plan", builtins.list[DatumInfo],
                                json={"spec": spec_text})

    def dag(self) -> Dag:
        return self.client.call("GET", "/dag", Dag)

    def reproduce(self, pipeline: str, datum: str | None = None,
                  job: str | None = None) -> DatumTask:
        return self.client.call("POST", f"/pipelines/{segment(pipeline)}/datums/reproduce",
                                DatumTask, json={"datum": datum, "job": job})

    def forget(self, token: str) -> None:
        self.client.call("DELETE", f"/reproductions/{segment(token)}")

    def logs(self, pipeline: str | None, job: str | None = None, datum: str | None = None,
             follow: bool = False) -> Iterator[bytes]:
        """Datum logs of a pipeline, or of one job (``pipeline`` None: the job's own)."""
        params = given(follow=int(follow), pipeline=pipeline or None, job=job or None,
                       datum=datum or None)
        yield from self.client.stream_bytes("GET", "/logs", params=params)

