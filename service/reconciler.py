"""The API's background work: the loop that keeps each unfinished job row in step with Ray (a
daemon thread), and the pool that hands new jobs to Ray so that their POST need not wait."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from service.db import session_scope
from service.orchestrator import reconcile_once, submit_new
from service.ray_jobs import RayJobs, get_ray_jobs
from service.settings import Settings
from service.tracking import get_tracking

__all__ = ["Reconciler", "Submitter"]

log = logging.getLogger("bckd.service")


class Reconciler:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bckd-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        s = self.settings
        ray = get_ray_jobs(s.ray_address)
        while not self._stop.is_set():
            try:
                tracking = get_tracking(s.mlflow_uri, s.mlflow_public_url)
            except Exception as err:
                log.warning("MLflow client: %s", err)
                tracking = None
            try:
                for session in session_scope(s.db_url):
                    reconcile_once(session, ray, tracking, s)
            except Exception as err:
                log.warning("reconcile pass failed: %s", err)
            self._stop.wait(s.reconcile_interval_s)


class Submitter:
    """A few threads of its own that give new jobs to Ray (``orchestrator.submit_new``).

    Not FastAPI's ``BackgroundTasks``: those run in the request thread pool, so 50 submissions
    blocked on Ray (about a second each on a loaded 2-core head) held the threads the next POSTs
    needed. A submission lost with the process is picked up by the reconciler.
    """

    def __init__(self, settings: Settings, workers: int = 4):
        self.settings = settings
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bckd-submit")

    def submit(self, job_id: str, ray: RayJobs) -> None:
        self._pool.submit(submit_new, job_id, ray, self.settings).add_done_callback(_log_error)

    def stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _log_error(future: Future) -> None:
    if (err := future.exception()) is not None:  # e.g. the database was locked too long
        log.warning("submission left to the reconciler: %s", err)
