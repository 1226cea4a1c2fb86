"""The job state machine under races, each driven to its bad moment deterministically.

The API is the real app and database in this process (``tests/service/inprocess.py``). Ray is
a stand-in (``HeldRay``) only because a real Ray cannot be paused in the middle of a call: the
stand-in holds ``capacity`` or ``submit`` on a ``threading.Event`` until the test lets it go,
and records what it was asked. ``test_api.py`` runs the cancel race against a real Ray too.
MLflow is real (a SQLite store); only its download is held, at the same kind of seam.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from service.adapters.db import Job, KeyClaim, session_scope, utcnow
from service.adapters.ray_jobs import RayJobs
from service.adapters.tracking import Tracking, get_tracking
from service.api.deps import get_ray, get_submitter
from service.core.auth import Principal
from service.core.creation import create_job
from service.core.jobs import submit_new
from service.core.reconciler import reconcile_once
from service.core.schemas import JobCreate
from service.stack.embedded import free_port
from tests.service.inprocess import WAIT_S, HeldRay, body, inprocess_api, row, until
from tests.service.servicetools import toy_dataset


@pytest.fixture
def toy(tmp_path):
    return toy_dataset(tmp_path)


# --- idempotency keys ---------------------------------------------------------------------------


def test_a_known_key_is_answered_while_ray_is_down(tmp_path, monkeypatch, toy):
    ray = HeldRay()
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent]) as (c, _):
        first = c.post("/v1/jobs", json=body(toy), headers={"Idempotency-Key": "k"})
        assert first.status_code == 201, first.text
        # Ray goes down: a real client of a dashboard port where nothing listens
        c.app.dependency_overrides[get_ray] = lambda: RayJobs(f"http://127.0.0.1:{free_port()}")
        again = c.post("/v1/jobs", json=body(toy), headers={"Idempotency-Key": "k"})
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        fresh = c.post("/v1/jobs", json=body(toy), headers={"Idempotency-Key": "k2"})
        assert fresh.status_code == 503 and "Ray cluster unreachable" in fresh.text


def test_a_duplicate_of_a_request_in_flight_waits_for_its_job_and_never_asks_ray(
        tmp_path, monkeypatch, toy):
    ray = HeldRay(hold="capacity")  # the first request is held while it asks Ray
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent]) as (c, _):
        answers = {}
        first = threading.Thread(target=lambda: answers.update(first=c.post(
            "/v1/jobs", json=body(toy), headers={"Idempotency-Key": "k"})))
        first.start()
        assert ray.entered.wait(WAIT_S)
        waiting = _seen_waiting(monkeypatch)
        second = threading.Thread(target=lambda: answers.update(second=c.post(
            "/v1/jobs", json=body(toy), headers={"Idempotency-Key": "k"})))
        second.start()
        assert waiting.wait(WAIT_S)  # the duplicate waits on the key's claim
        other = c.post("/v1/jobs", json=body(toy, name="other"), headers={"Idempotency-Key": "k"})
        assert other.status_code == 409 and other.json()["detail"][0]["loc"] == \
            ["header", "Idempotency-Key"]  # another body under a key in flight: refused at once
        ray.release.set()
        first.join(WAIT_S), second.join(WAIT_S)
    assert answers["first"].status_code == 201 and answers["second"].status_code == 200
    assert answers["first"].json()["id"] == answers["second"].json()["id"]
    assert ray.calls.count("capacity") == 1  # only the first request asked Ray


def test_a_duplicate_never_downloads_the_runs_checkpoint(tmp_path, monkeypatch, toy):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = MlflowClient(tracking_uri=uri)
    exp = mlflow.create_experiment("teachers", artifact_location=str(tmp_path / "artifacts"))
    run = mlflow.create_run(exp, tags={"bckd.owner": "alice"})
    mlflow.log_text(run.info.run_id, "a stand-in checkpoint", "final.pth")
    downloads, entered, release = [], threading.Event(), threading.Event()
    real_download = Tracking.download

    def held_download(self, source, dst):  # the seam: MLflow's download, held once entered
        downloads.append(source)
        entered.set()
        assert release.wait(WAIT_S)
        return real_download(self, source, dst)

    monkeypatch.setattr(Tracking, "download", held_download)
    req = body(toy, kind="distill", config="toy_bckd",
               teacher_ckpt=f"runs:/{run.info.run_id}/final.pth")
    ray = HeldRay()
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent], BCKD_MLFLOW_URI=uri) as (c, _):
        answers = {}
        first = threading.Thread(target=lambda: answers.update(first=c.post(
            "/v1/jobs", json=req, headers={"Idempotency-Key": "k"})))
        first.start()
        assert entered.wait(WAIT_S)
        waiting = _seen_waiting(monkeypatch)
        second = threading.Thread(target=lambda: answers.update(second=c.post(
            "/v1/jobs", json=req, headers={"Idempotency-Key": "k"})))
        second.start()
        assert waiting.wait(WAIT_S)
        release.set()
        first.join(WAIT_S), second.join(WAIT_S)
    assert answers["first"].status_code == 201, answers["first"].text
    assert answers["second"].status_code == 200
    assert answers["second"].json()["id"] == answers["first"].json()["id"]
    assert len(downloads) == 1 and ray.calls.count("capacity") == 1


def test_a_request_whose_job_loses_the_key_to_an_earlier_job_answers_that_job(
        tmp_path, monkeypatch, toy):
    # The interleaving (seen as a 500 under 6 concurrent duplicates): B reads "no job holds the
    # key", A commits its job and drops its claim, B reads "no claim" and claims the key, and
    # B's job then loses the INSERT to A's on the unique key. Driven here from that moment: B
    # holds a claim of the key that A's job already holds, and creates its job.
    with inprocess_api(monkeypatch, tmp_path, HeldRay(), [toy.parent]) as (c, settings):
        first = c.post("/v1/jobs", json=body(toy), headers={"Idempotency-Key": "k"})
        assert first.status_code == 201, first.text
        req = JobCreate(**body(toy))
        for s in session_scope(settings):
            s.add(KeyClaim(owner="alice", idempotency_key="k", request=req.model_dump(
                mode="json"), created_at=utcnow()))
            s.commit()
            tracking = get_tracking(settings)
            job, new = create_job(s, Principal("alice", admin=False), req, "k", settings,
                                  tracking=tracking, capacity=None)
            assert (job.id, new) == (first.json()["id"], False)
            assert s.get(KeyClaim, ("alice", "k")) is None  # B's claim is gone with its job
            assert len(s.scalars(select(Job)).all()) == 1


def test_a_refused_request_releases_its_key_and_a_retry_is_judged_again(
        tmp_path, monkeypatch, toy):
    ray = HeldRay()
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent]) as (c, _):
        bad = body(toy, overrides={"model.type": "os.system"})
        t0 = time.monotonic()
        for _ in range(2):  # the second is not held up by a claim of the first
            r = c.post("/v1/jobs", json=bad, headers={"Idempotency-Key": "k"})
            assert r.status_code == 422 and "model" in str(r.json()["detail"][0]["loc"])
        assert time.monotonic() - t0 < 20
        good = c.post("/v1/jobs", json=body(toy), headers={"Idempotency-Key": "k"})
        assert good.status_code == 201, good.text


def _seen_waiting(monkeypatch) -> threading.Event:
    """Set when a request first sleeps in the key's wait loop: only a duplicate does."""
    import service.core.idempotency as idem

    seen, real_sleep = threading.Event(), time.sleep
    monkeypatch.setattr(idem.time, "sleep", lambda s: (seen.set(), real_sleep(s)))
    return seen


# --- a cancel during the submission ---------------------------------------------------------------


def test_a_cancel_while_the_submission_is_in_flight_stops_the_job_when_it_lands(
        tmp_path, monkeypatch, toy):
    ray = HeldRay(hold="submit")
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent]) as (c, settings):
        job_id = c.post("/v1/jobs", json=body(toy)).json()["id"]
        assert ray.entered.wait(WAIT_S)  # the submitter thread is inside submit_job
        r = c.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "PENDING"  # not STOPPED yet
        ray.release.set()  # the submission reaches Ray after the cancel
        until(lambda: ray.stopped == [job_id], "the landed job is stopped on Ray")
        job = until(lambda: (j := row(settings, job_id)).submitted_at and j, "confirmed")
        assert job.cancel_requested and "cancelled while it was being submitted" in job.message
        for s in session_scope(settings):
            reconcile_once(s, ray, None, settings)
        job = row(settings, job_id)
    assert job.status == "STOPPED" and "cancelled by user" in job.message


def test_a_slow_submission_retried_by_the_reconciler_is_not_stopped_when_it_lands(
        tmp_path, monkeypatch, toy):
    ray = HeldRay(hold="submit")
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent]) as (c, settings):
        job_id = c.post("/v1/jobs", json=body(toy)).json()["id"]
        assert ray.entered.wait(WAIT_S)  # the POST's submission hangs in Ray
        for s in session_scope(settings):  # resubmit_after_s went by: the retry
            job = s.get(Job, job_id)
            job.last_attempt_at -= timedelta(seconds=settings.resubmit_after_s + 1)
            s.commit()
            reconcile_once(s, ray, None, settings)
        assert row(settings, job_id).submitted_at is not None  # the retry confirmed it
        ray.release.set()  # the first submission's answer comes back late
        c.app.state.submitter.stop()  # waits for the late submission's thread to end
        for s in session_scope(settings):
            reconcile_once(s, ray, None, settings)
        job = row(settings, job_id)
    assert ray.stopped == [] and job.status == "RUNNING" and job.attempts == 2


def test_a_submission_that_starts_after_a_cancel_never_reaches_ray(tmp_path, monkeypatch, toy):
    ray = HeldRay()
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent]) as (c, settings):
        # no submitter: the row stays as an API that died right after its commit leaves it
        c.app.dependency_overrides[get_submitter] = lambda: SimpleNamespace(
            submit=lambda job_id, ray: None)
        job_id = c.post("/v1/jobs", json=body(toy)).json()["id"]
        r = c.post(f"/v1/jobs/{job_id}/cancel")
        assert r.json()["status"] == "STOPPED" and "before it reached Ray" in r.json()["message"]
        submit_new(job_id, ray, settings)  # a submission that starts only now
        for s in session_scope(settings):
            reconcile_once(s, ray, None, settings)
    assert "submit" not in ray.calls and row(settings, job_id).status == "STOPPED"
