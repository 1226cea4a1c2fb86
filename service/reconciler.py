"""Background loop that keeps each unfinished job row in step with Ray (a daemon thread)."""

from __future__ import annotations

import logging
import threading

from service.db import session_scope
from service.orchestrator import reconcile_once
from service.ray_jobs import get_ray_jobs
from service.settings import Settings
from service.tracking import get_tracking

__all__ = ["Reconciler"]

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
