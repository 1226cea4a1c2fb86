"""Quotas and the fair queue (``service.core.queue``, ``service.core.quotas``).

The order of the queue under a full cluster is driven with the real app and database in this
process and the Ray stand-in ``HeldRay`` (a 4-CPU node: one job of 4 CPUs fills it), so no job
runs; what a user sees of quotas, the queue and a driver's reservation is checked through the
real API under uvicorn with a real Ray, where the jobs are the stand-in ``fake_job.py``.
"""

from __future__ import annotations

import httpx
import pytest
from mlflow.tracking import MlflowClient

from cli import main
from service.adapters.db import session_scope
from service.client.api_client import Client
from service.core.queue import _missing
from service.core.quotas import Demand
from service.core.reconciler import reconcile_once
from service.settings import Settings
from tests.service.browser import Browser
from tests.service.inprocess import HeldRay, body, inprocess_api, row, until
from tests.service.servicetools import TOKENS, stand_in_stack, toy_dataset, wait_for

BOB = {"Authorization": f"Bearer {TOKENS['bob']}"}
FULL = {"resources": {"cpus_per_worker": 4}}  # the stand-in's whole node


@pytest.fixture
def toy(tmp_path):
    return toy_dataset(tmp_path)


def _job(c, job_id: str, headers: dict | None = None) -> dict:
    return c.get(f"/v1/jobs/{job_id}", headers=headers or {}).json()


def test_owners_take_turns_so_one_owners_queue_never_delays_anothers_first_job(
        tmp_path, monkeypatch, toy):
    ray = HeldRay()
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent],
                       BCKD_QUOTA_MAX_QUEUED="2") as (c, settings):
        posted = [c.post("/v1/jobs", json=body(toy, **FULL)).json() for _ in range(3)]
        a1, a2, a3 = (j["id"] for j in posted)
        assert [j["status"] for j in posted] == ["PENDING", "QUEUED", "QUEUED"], posted
        assert posted[1]["queue_position"] == 1
        assert posted[1]["queue_reason"] == "cluster: waiting for 4 CPUs (4 of 4 in use)"
        b1 = c.post("/v1/jobs", json=body(toy, **FULL), headers=BOB).json()
        # bob holds nothing, alice the whole cluster: bob's first job goes before her second
        assert (b1["status"], b1["queue_position"]) == ("QUEUED", 1), b1
        assert _job(c, a2)["queue_position"] == 2
        assert _job(c, a2)["queue_reason"] == (f"cluster: behind job {b1['id']}, which waits for "
                                               "4 CPUs (4 of 4 in use)")
        assert _job(c, a3)["queue_position"] == 3
        assert _job(c, a3)["queue_reason"].startswith(f"behind your job {a2} (cluster: ")

        # a third queued job of alice's is one more than max_queued (the default is 30)
        refused = c.post("/v1/jobs", json=body(toy, **FULL))
        assert refused.status_code == 429 and refused.headers["Retry-After"], refused.text
        detail = refused.json()["detail"]
        assert "2 queued jobs" in detail and "max_queued 2" in detail
        assert "bckd jobs cancel JOB_ID" in detail

        until(lambda: row(settings, a1).submitted_at, "alice's first job reached Ray")
        ray.jobs[a1] = "SUCCEEDED"
        for s in session_scope(settings):  # a1 ends; the pass's admission takes bob's job
            reconcile_once(s, ray, None, settings)
        assert row(settings, a1).status == "SUCCEEDED"
        assert row(settings, b1["id"]).status == "PENDING" and b1["id"] in ray.jobs
        assert (_job(c, a2)["status"], _job(c, a2)["queue_position"]) == ("QUEUED", 1)
        assert a2 not in ray.jobs and a3 not in ray.jobs
    assert Settings.model_fields["quota_max_queued"].default == 30  # the M


class InProcess(Client):
    """``bckd jobs``'s client, sending through a ``TestClient`` of the in-process app."""

    def __init__(self, http):
        self.http = http


def test_a_cancelled_queued_job_stops_without_ray_and_frees_its_place(tmp_path, monkeypatch,
                                                                       toy, capsys):
    ray = HeldRay()
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent],
                       BCKD_QUOTA_MAX_QUEUED="1") as (c, settings):
        running = c.post("/v1/jobs", json=body(toy, **FULL)).json()
        queued = c.post("/v1/jobs", json=body(toy, **FULL)).json()
        assert (running["status"], queued["status"]) == ("PENDING", "QUEUED")
        assert c.post("/v1/jobs", json=body(toy, **FULL)).status_code == 429
        monkeypatch.setattr("service.client.jobs_cli._client", lambda args: InProcess(c))
        assert main(["jobs", "list", "--status", "QUEUED"]) == 0
        assert f"{queued['id']:24} train    QUEUED#1" in capsys.readouterr().out
        assert main(["jobs", "show", queued["id"]]) == 0
        assert '"queue_reason": "cluster: waiting for 4 CPUs (4 of 4 in use)"' in \
            capsys.readouterr().out
        stopped = c.post(f"/v1/jobs/{queued['id']}/cancel")
        assert stopped.status_code == 202 and stopped.json()["status"] == "STOPPED"
        assert stopped.json()["message"] == "cancelled while queued"
        assert stopped.json()["queue_position"] is None and queued["id"] not in ray.jobs
        run = MlflowClient(settings.mlflow_uri).get_run(queued["mlflow_run_id"])
        assert run.info.status == "KILLED"  # made with the job, ended with it
        again = c.post("/v1/jobs", json=body(toy, **FULL))  # its place in the queue is free
        assert again.status_code == 201 and again.json()["queue_position"] == 1, again.text


def test_a_job_larger_than_its_owners_quota_is_refused_naming_its_resources(
        tmp_path, monkeypatch, toy):
    with inprocess_api(monkeypatch, tmp_path, HeldRay(), [toy.parent],
                       BCKD_QUOTA_CPUS="2") as (c, _):
        r = c.post("/v1/jobs", json=body(toy, resources={"num_workers": 3}))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "resources"]
        assert "3 CPUs" in r.text and "quota of 2" in r.text and "/v1/quotas/alice" in r.text


# --- through the API under uvicorn, with a real Ray ---------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("queue")
    data = toy_dataset(root)
    st = stand_in_stack(root, [root / "datasets"], BCKD_STOP_WAIT_S="5",
                        BCKD_DRIVER_CPUS="0.25", BCKD_DRIVER_MEMORY_GB="0.5")
    st.start()
    st.toy = data
    yield st
    st.stop()


def test_admins_see_and_change_quotas_and_users_only_read_their_own(admin, alice, bob):
    mine = alice.get("/v1/quotas/alice")
    assert mine.status_code == 200, mine.text
    assert mine.json()["limits"] == {"max_running": 8, "max_queued": 30, "cpus": None,
                                     "gpus": None, "memory_gb": None}
    assert mine.json()["own"] == [] and mine.json()["queued"] == 0
    assert alice.get("/v1/quotas/bob").status_code == 403
    assert alice.put("/v1/quotas/alice", json={"max_running": 100}).status_code == 403
    assert alice.get("/v1/quotas").status_code == 403

    bad = admin.put("/v1/quotas/alice", json={"max_queued": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "max_queued"]
    named = admin.put("/v1/quotas/-x", json={})  # not an owner's name
    assert named.status_code == 422 and named.json()["detail"][0]["loc"] == ["path", "owner"]
    set_ = admin.put("/v1/quotas/bob", json={"max_running": 3, "gpus": 2})
    assert set_.status_code == 200, set_.text
    assert set_.json()["limits"]["max_running"] == 3 and set_.json()["limits"]["gpus"] == 2
    assert sorted(set_.json()["own"]) == ["gpus", "max_running"]
    assert set_.json()["updated_by"] == "admin"
    assert bob.get("/v1/quotas/bob").json()["limits"]["max_running"] == 3
    listed = admin.get("/v1/quotas").json()
    assert listed["defaults"]["max_queued"] == 30
    assert [q["owner"] for q in listed["data"]] == ["bob"]
    assert admin.put("/v1/quotas/bob", json={}).json()["own"] == []  # back to the defaults


def test_a_job_beyond_its_owners_running_quota_waits_while_another_owners_is_admitted(
        stack, admin, alice, bob, tmp_path):
    assert admin.put("/v1/quotas/alice", json={"max_running": 1}).status_code == 200
    job = {"kind": "train", "config": "toy_teacher", "data_root": str(stack.toy),
           "resources": {"cpus_per_worker": 0.5}, "overrides": {"train_cfg.max_epochs": 100}}
    ids = []
    try:
        first = alice.post("/v1/jobs", json=job).json()
        ids.append(first["id"])
        assert first["status"] == "PENDING", first
        waits = [alice.post("/v1/jobs", json=job).json() for _ in range(2)]
        ids += [j["id"] for j in waits]
        assert [(j["status"], j["queue_position"], j["queue_reason"]) for j in waits] == [
            ("QUEUED", 1, "owner quota: 1 of 1 running jobs"),
            ("QUEUED", 2, "owner quota: 1 of 1 running jobs")]
        other = bob.post("/v1/jobs", json={**job, "overrides": {}}).json()
        ids.append(other["id"])
        assert other["status"] == "PENDING" and other["queue_position"] is None, other
        wait_for(bob, other["id"], lambda j: j["status"] == "RUNNING")
        # the driver runs in Ray's job supervisor actor, which holds the driver's reservation
        # (BCKD_DRIVER_CPUS, BCKD_DRIVER_MEMORY_GB); Ray's JobDetails does not show it
        token = stack.ray_token_file.read_text().strip()
        actors = httpx.get(f"{stack.ray_url}/api/v0/actors", headers={
            "Authorization": f"Bearer {token}"}, params={
            "detail": "true", "filter_keys": "name", "filter_predicates": "=",
            "filter_values": f"_ray_internal_job_actor_{other['id']}"}, timeout=30).json()
        (supervisor,) = actors["data"]["result"]["result"]
        assert supervisor["required_resources"] == {"CPU": 0.25, "memory": 2**29}, supervisor
        # the operator's dashboard names the job by its owner and name
        info = httpx.get(f"{stack.ray_url}/api/jobs/{other['id']}", headers={
            "Authorization": f"Bearer {token}"}, timeout=30).json()
        assert info["metadata"]["job_name"] == f"bob/{other['name']}", info["metadata"]
        assert wait_for(alice, waits[0]["id"], lambda j: j["queue_position"] == 1)["status"] \
            == "QUEUED"
        # the job page says where a queued job stands and what it waits for
        with Browser(tmp_path) as b:
            b.goto(f"{stack.api_url}/watch")
            b.wait("!document.getElementById('login').hidden")
            b.eval(f"document.getElementById('token').value = {TOKENS['alice']!r};"
                   "document.getElementById('login').requestSubmit()")
            b.wait(f"!!document.querySelector('tr[data-job-id=\"{waits[0]['id']}\"]')")
            b.eval(f"location.hash = 'job={waits[0]['id']}'")
            b.wait("document.getElementById('job-facts').textContent.includes('waits for')")
            facts = b.eval("document.getElementById('job-facts').textContent")
            assert "QUEUED #1, waits for: owner quota: 1 of 1 running jobs" in facts, facts
        listed = alice.get("/v1/jobs", params={"status": "QUEUED"}).json()
        assert listed["count"] == 2
    finally:
        for job_id in ids:
            alice.post(f"/v1/jobs/{job_id}/cancel")
            bob.post(f"/v1/jobs/{job_id}/cancel")
        admin.put("/v1/quotas/alice", json={})


def test_a_reason_counts_in_words():
    assert _missing(Demand(cpus=1), Demand(cpus=2), Demand(cpus=2)) == "1 CPU (2 of 2 in use)"
    assert _missing(Demand(cpus=1.5, gpus=2), Demand(cpus=2, gpus=2), Demand(cpus=2, gpus=2)) \
        == "1.5 CPUs (2 of 2 in use) and 2 GPUs (2 of 2 in use)"


class ShrinkingRay(HeldRay):
    """Ray whose one node is replaced by a smaller one (``cpus``) while jobs wait."""

    cpus = 4.0

    def capacity(self, groups=(), max_age_s: float = 30.0):
        from bckd.runtime.cluster import Capacity

        return Capacity(nodes=({"CPU": self.cpus, "GPU": 0.0, "memory": 8e9},))


def test_a_job_larger_than_the_cluster_left_waits_without_holding_smaller_ones(
        tmp_path, monkeypatch, toy):
    ray = ShrinkingRay()
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent]) as (c, settings):
        first = c.post("/v1/jobs", json=body(toy, **FULL)).json()
        big = c.post("/v1/jobs", json=body(toy, **FULL)).json()
        assert (first["status"], big["status"]) == ("PENDING", "QUEUED")
        until(lambda: row(settings, first["id"]).submitted_at, "the first job reached Ray")
        ray.jobs[first["id"]], ray.cpus = "SUCCEEDED", 2.0  # it ends; its node is now 2 CPUs
        for s in session_scope(settings):
            reconcile_once(s, ray, None, settings)
        assert _job(c, big["id"])["queue_reason"] == "cluster: needs 4 CPUs, it has 2 CPUs in all"
        small = c.post("/v1/jobs", json=body(toy, resources={"cpus_per_worker": 1}),
                       headers=BOB).json()
        assert small["status"] == "PENDING", small  # not held behind the job that cannot fit
        assert _job(c, big["id"])["status"] == "QUEUED"
