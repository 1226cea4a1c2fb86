"""A small httpx client of the REST API, used by ``bckd jobs ...``, the demo and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from service.core.states import TERMINAL

__all__ = ["ApiError", "Client"]


class ApiError(ValueError):  # a ValueError: `bckd` prints it as one line, no traceback
    def __init__(self, status: int, detail: Any):
        self.status, self.detail = status, detail
        if isinstance(detail, list):  # FastAPI validation shape: name each field
            detail = "; ".join(d.get("msg", str(d)) if isinstance(d, dict) else str(d)
                               for d in detail)
        super().__init__(f"HTTP {status}: {detail}")


class Client:
    def __init__(self, url: str, token: str, timeout: float = 120.0):
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"})

    def _json(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ApiError(r.status_code, detail)
        return r.json()

    def job_page(self, job_id: str) -> str:
        """The job's page in a browser (``/watch``: log in with the API token)."""
        return f"{str(self.http.base_url).rstrip('/')}/watch#job={job_id}"

    def mlflow_login(self) -> dict:
        return self._json(self.http.get("/v1/me/mlflow"))

    def health(self) -> dict:
        return self._json(self.http.get("/v1/health"))

    def submit(self, body: dict, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json(self.http.post("/v1/jobs", json=body, headers=headers))

    def list(self, **params: Any) -> dict:
        params = {k: v for k, v in params.items() if v is not None}
        return self._json(self.http.get("/v1/jobs", params=params))

    def get(self, job_id: str) -> dict:
        return self._json(self.http.get(f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> dict:
        return self._json(self.http.post(f"/v1/jobs/{job_id}/cancel"))

    def logs(self, job_id: str, tail: int = 200) -> dict:
        return self._json(self.http.get(f"/v1/jobs/{job_id}/logs", params={"tail": tail}))

    def follow(self, job_id: str) -> Iterator[str]:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/logs/stream", timeout=None) as r:
            if r.status_code >= 400:
                r.read()
                self._json(r)
            yield from r.iter_text()

    def wait(self, job_ids: Iterable[str], poll_s: float = 10.0,
             on_poll: Callable[[dict[str, dict]], None] | None = None) -> dict[str, dict]:
        """Poll the jobs every ``poll_s`` seconds until each has a terminal status
        (``service.core.states.TERMINAL``); return ``{job id: job}``, each job as last read.

        ``on_poll(states)`` runs after every look, with the same mapping (jobs that already
        ended keep their last reading and are not fetched again): to print progress.
        """
        states: dict[str, dict] = {job_id: {"status": None} for job_id in job_ids}
        while True:
            for job_id, job in states.items():
                if job["status"] not in TERMINAL:
                    states[job_id] = self.get(job_id)
            if on_poll is not None:
                on_poll(states)
            if all(job["status"] in TERMINAL for job in states.values()):
                return states
            time.sleep(poll_s)

    def register_dataset(self, body: dict) -> dict:
        return self._json(self.http.post("/v1/datasets", json=body))

    def datasets(self) -> dict:
        return self._json(self.http.get("/v1/datasets"))

    def configs(self) -> dict:
        return self._json(self.http.get("/v1/configs"))

    def experiments(self) -> dict:
        return self._json(self.http.get("/v1/experiments"))

    def compare(self, experiment: str, metric: str | None = None) -> dict:
        params = {"metric": metric} if metric else {}
        return self._json(self.http.get(f"/v1/experiments/{experiment}/compare", params=params))
