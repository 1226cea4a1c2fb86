"""What keeps the API's own cost low under many concurrent clients (benchmarks/bench_service.py
measures it): a job read asks MLflow nothing, the database pool holds a connection for every
thread that may need one and gets each back, SQLite commits without waiting for fsync, the
thread pools are the sizes the settings say, and the API imports what a request's check needs
as it starts, then freezes those objects out of the collector's walks.

The API is the real app and database in this process (``tests/service/inprocess.py``), Ray the
recording stand-in ``HeldRay`` (no call is held here)."""

from __future__ import annotations

import gc
import sys
import threading
from contextlib import ExitStack

import pytest
from anyio import to_thread
from sqlalchemy import event, text

from service.adapters.db import Job, get_engine, migrate, session_scope
from service.adapters.tracking import Tracking
from service.core.reconciler import reconcile_once
from service.settings import Settings
from tests.service.inprocess import HeldRay, body, inprocess_api, row
from tests.service.servicetools import toy_dataset


@pytest.fixture
def toy(tmp_path):
    return toy_dataset(tmp_path)


def test_a_job_read_answers_from_the_row_and_asks_mlflow_nothing(tmp_path, monkeypatch, toy):
    asked: list[str] = []

    def latest_metrics(self, run_id):
        asked.append(run_id)
        raise AssertionError("a job read asked MLflow")

    monkeypatch.setattr(Tracking, "latest_metrics", latest_metrics)
    with inprocess_api(monkeypatch, tmp_path, HeldRay(), [toy.parent]) as (c, settings):
        job_id = c.post("/v1/jobs", json=body(toy)).json()["id"]
        for s in session_scope(settings):  # what the reconciler's last pass read from MLflow
            job = s.get(Job, job_id)
            job.mlflow_run_id, job.metrics = "c" * 32, {"loss": 0.25}
            s.commit()
        for _ in range(3):
            r = c.get(f"/v1/jobs/{job_id}")
            assert r.status_code == 200 and r.json()["metrics"] == {"loss": 0.25}, r.text
    assert asked == []


def test_with_no_submit_threads_a_new_job_waits_for_the_reconcilers_pass(
        tmp_path, monkeypatch, toy):
    ray = HeldRay()
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent],
                       BCKD_SUBMIT_THREADS="0") as (c, settings):
        r = c.post("/v1/jobs", json=body(toy))
        assert r.status_code == 201 and r.json()["status"] == "PENDING", r.text
        job_id = r.json()["id"]
        c.app.state.submitter.stop()  # waits for any hand-over in flight
        assert "submit" not in ray.calls and row(settings, job_id).attempts == 0
        for s in session_scope(settings):
            reconcile_once(s, ray, None, settings)
    assert ray.calls.count("submit") == 1 and row(settings, job_id).submitted_at is not None


def test_the_request_thread_pool_is_the_settings_size(tmp_path, monkeypatch, toy):
    with inprocess_api(monkeypatch, tmp_path, HeldRay(), [toy.parent],
                       BCKD_REQUEST_THREADS="7") as (c, _):
        assert c.portal.call(lambda: to_thread.current_default_thread_limiter().total_tokens) == 7


def test_the_pool_keeps_a_connection_for_each_thread_that_may_hold_one(tmp_path):
    settings = Settings(data_dir=tmp_path, request_threads=8, submit_threads=1)
    assert settings.db_connections == 10  # 8 request threads, 1 submitter, the reconciler
    migrate(settings.db_url)
    opened: list[object] = []
    event.listen(get_engine(settings.db_url, settings.db_connections), "connect",
                 lambda conn, record: opened.append(conn))
    for _ in range(3):  # every thread holds a session at once, three times over
        with ExitStack() as held:
            for _ in range(settings.db_connections):
                scope = session_scope(settings)
                held.callback(scope.close)  # closes the session: its connection goes back
                next(scope).execute(text("SELECT 1"))
    # opened once each and kept: SQLAlchemy's default pool (5) opened and closed the others
    # on every use
    assert len(opened) == settings.db_connections


def test_every_request_gives_its_connection_back(tmp_path, monkeypatch, toy):
    with inprocess_api(monkeypatch, tmp_path, HeldRay(), [toy.parent]) as (c, settings):
        pool = get_engine(settings.db_url, settings.db_connections).pool
        job_id = c.post("/v1/jobs", json=body(toy)).json()["id"]
        assert c.get(f"/v1/jobs/{job_id}").status_code == 200
        assert c.get("/v1/jobs/no-such-job").status_code == 404  # a route that raised
        bad = c.post("/v1/jobs", json={**body(toy), "config": "no/such/config"})
        assert bad.status_code == 422, bad.text
        assert pool.checkedout() == 0


def test_sqlite_commits_in_wal_mode_without_waiting_for_fsync(tmp_path):
    settings = Settings(data_dir=tmp_path)
    migrate(settings.db_url)
    for s in session_scope(settings):
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL (FULL is 2)


def test_the_api_warms_up_and_freezes_beside_its_first_requests(tmp_path, monkeypatch, toy):
    def join_warm_ups() -> None:
        for thread in threading.enumerate():
            if thread.name == "bckd-warm-up":
                thread.join(timeout=300)

    join_warm_ups()
    gc.unfreeze()  # an earlier test's app may have frozen this process's objects
    assert gc.get_freeze_count() == 0
    with inprocess_api(monkeypatch, tmp_path, HeldRay(), [toy.parent]) as (c, _):
        join_warm_ups()  # done already if an earlier test imported mmdet
        # (in a full run an earlier test has imported mmdet already; alone, this shows the
        # warm-up did it)
        assert "mmdet.models" in sys.modules
        assert gc.get_freeze_count() > 100_000  # what the warm-up thread froze
        assert c.post("/v1/jobs", json=body(toy)).status_code == 201
