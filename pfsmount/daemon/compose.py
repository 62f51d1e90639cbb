"""The composition root: one daemon built from a ``DaemonConfig``, and run.

The one place that knows every part and how they fit: it opens the store and the model
(``Pfs``, its packs where ``config.storage_url`` says), makes the scheduler and, unless the
config has no mount point, the mount, and serves the API over them, each part handed what
it needs when it is made. Nothing else constructs these; nothing here serves a request,
mounts, or runs a datum itself.
"""

from __future__ import annotations

from pfsmount.api.pipelines import routes as pipeline_routes
from pfsmount.api.server import build_app
from pfsmount.config import DaemonConfig
from pfsmount.daemon.main import Daemon, Service
from pfsmount.errors import InvalidArgument
from pfsmount.fuse.mount import mount_service
from pfsmount.pfs import Pfs
from scheduler.engine import Scheduler

EXECUTORS = ("local",)  # the names a config may give for what runs datums


def run(config: DaemonConfig) -> None:
    """Serve ``config`` in this process until the daemon is stopped."""
    if config.executor not in EXECUTORS:
        raise InvalidArgument(f"unknown executor {config.executor!r}: pick one of "
                              f"{', '.join(EXECUTORS)}")
    lay, mount = config.layout, config.mountpoint
    daemon = Daemon(lay, {"mount": str(mount)} if mount else {})
    with daemon.locked():  # the store is this daemon's alone from here on
        pfs = Pfs.open(lay.store, config.storage_url)
        try:
            # "local" is the scheduler's own executor (None); another is made here by name.
            scheduler = Scheduler(pfs, lay.root, mount, executor=None)
            services: list[Service] = []
            if mount is not None:
                services.append(mount_service(pfs, mount, lay.mount_staging,
                                              config.allow_other))
            services.append(scheduler.service)
            app = build_app(pfs, daemon.status, daemon.stop, pipeline_routes(scheduler))
            daemon.serve(app, services)
        finally:
            pfs.close()
