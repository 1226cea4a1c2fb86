"""MLflow per owner (issue 31, item 3): each owner's own MLflow login, against a real stack (Ray,
MLflow with its basic-auth app, the API under uvicorn; the jobs are the stand-in
``fake_job.py``, which logs into its run with the login its submission gave it).

Checked as a user and as an attacker would: the login from ``GET /v1/me/mlflow`` opens the
owner's experiments in MLflow's REST API and UI (a real Chromium) and nothing of anyone else's;
no login reads anything; an experiment a login made under another owner's name, and tags a login
wrote itself (``bckd.owner``, ``bckd.shared``), prove nothing to the service.
"""

from __future__ import annotations

import httpx
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cli import main
from service.stack.mlflow_server import admin_uri
from tests.service.browser import Browser
from tests.service.servicetools import (
    TOKENS,
    client,
    finished,
    service_tracking,
    stand_in_stack,
    toy_dataset,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-logins")
    st = stand_in_stack(root, [toy_dataset(root).parent])
    st.start()
    yield st
    st.stop()


@pytest.fixture(scope="module")
def done(stack, alice, bob) -> dict[str, dict]:
    """One finished stand-in job of alice's and one of bob's, in experiment ``study``."""
    toy = stack.data_dir.parent / "datasets" / "toy"
    jobs = {}
    for user, c in (("alice", alice), ("bob", bob)):
        r = c.post("/v1/jobs", json={"kind": "train", "config": "toy_teacher",
                                     "data_root": str(toy), "experiment": "study",
                                     "name": f"{user}-run",
                                     "overrides": {"train_cfg.max_epochs": 1}})
        assert r.status_code == 201, r.text
        jobs[user] = r.json()
    for user, c in (("alice", alice), ("bob", bob)):
        jobs[user] = wait_for(c, jobs[user]["id"], finished, timeout=180)
        assert jobs[user]["status"] == "SUCCEEDED", jobs[user]
    return jobs


def _login(c: httpx.Client) -> dict:
    r = c.get("/v1/me/mlflow")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


def _as(stack, login: dict) -> MlflowClient:
    from service.adapters.mlflow_users import Login

    return MlflowClient(admin_uri(stack.mlflow_url, Login(login["username"], login["password"])))


def _denied(fn) -> str:
    with pytest.raises(MlflowException) as err:
        fn()
    return err.value.error_code


def test_each_owner_reads_and_writes_only_their_own_runs(stack, alice, bob, done):
    a, b = _login(alice), _login(bob)
    assert (a["username"], b["username"]) == ("alice", "bob") and a["password"] != b["password"]
    assert a["url"] == stack.mlflow_url
    as_alice, as_bob = _as(stack, a), _as(stack, b)
    alice_run, bob_run = done["alice"]["mlflow_run_id"], done["bob"]["mlflow_run_id"]

    assert [e.name for e in as_alice.search_experiments()] == ["alice/study"]
    assert [e.name for e in as_bob.search_experiments()] == ["bob/study"]
    run = as_alice.get_run(alice_run)  # what her job logged with the login it was given
    assert run.data.metrics["coco/bbox_mAP"] == 0.5 and run.info.status == "FINISHED"
    assert [f.path for f in as_alice.list_artifacts(alice_run)] == ["final.pth"]
    assert _denied(lambda: as_alice.get_run(bob_run)) == "PERMISSION_DENIED"
    assert _denied(lambda: as_alice.log_metric(bob_run, "forged", 1.0)) == "PERMISSION_DENIED"
    assert _denied(lambda: as_alice.set_tag(bob_run, "bckd.shared", "true")) \
        == "PERMISSION_DENIED"
    assert as_bob.search_runs([run.info.experiment_id]) == []  # filtered out, not refused
    assert _denied(lambda: as_bob.download_artifacts(alice_run, "final.pth")) \
        == "PERMISSION_DENIED"
    # and the artifact proxy's own route, asked directly: it checks the experiment too
    path = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    url = f"{stack.mlflow_url}/api/2.0/mlflow-artifacts/artifacts/{path}/final.pth"
    assert httpx.get(url, auth=(b["username"], b["password"])).status_code == 403
    assert httpx.get(url, auth=(a["username"], a["password"])).text == "a stand-in checkpoint"
    # no login: nothing; a wrong password: nothing
    search = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search"
    assert httpx.post(search, json={"max_results": 10}).status_code == 401
    assert httpx.post(search, json={"max_results": 10},
                      auth=("alice", b["password"])).status_code == 401
    # a user login is no admin: it makes no user and grants nothing
    made = httpx.post(f"{stack.mlflow_url}/api/2.0/mlflow/users/create",
                      json={"username": "mallory", "password": "x" * 12},
                      auth=(a["username"], a["password"]))
    assert made.status_code == 403, made.text


def test_a_login_cannot_take_another_owners_experiment_name(stack, alice, bob, done):
    """Alice's login makes ``bob/squat`` before bob's first job there: the service moves it
    aside and bob's run lands in an experiment alice cannot read."""
    as_alice = _as(stack, _login(alice))
    squat = as_alice.create_experiment("bob/squat")  # any login may make an experiment
    toy = stack.data_dir.parent / "datasets" / "toy"
    r = bob.post("/v1/jobs", json={"kind": "train", "config": "toy_teacher",
                                   "data_root": str(toy), "experiment": "squat",
                                   "overrides": {"train_cfg.max_epochs": 1}})
    assert r.status_code == 201, r.text
    job = wait_for(bob, r.json()["id"], finished, timeout=180)
    assert job["status"] == "SUCCEEDED", job
    admin = MlflowClient(stack.mlflow_admin_uri)
    run = admin.get_run(job["mlflow_run_id"])
    assert run.info.experiment_id != squat
    assert admin.get_experiment(run.info.experiment_id).name == "bob/squat"
    assert admin.get_experiment(squat).name == f"bob/squat (not made by bckd, id {squat})"
    assert _denied(lambda: as_alice.get_run(job["mlflow_run_id"])) == "PERMISSION_DENIED"


def test_an_owner_deletes_nothing_and_a_deleted_experiment_comes_back(stack, alice):
    tracking = service_tracking(stack)
    made = tracking.own_experiment("alice", "gone").experiment_id
    as_alice = _as(stack, _login(alice))
    run = as_alice.create_run(made).info.run_id  # EDIT: runs in it, but no deletion
    assert _denied(lambda: as_alice.delete_run(run)) == "PERMISSION_DENIED"
    assert _denied(lambda: as_alice.delete_experiment(made)) == "PERMISSION_DENIED"
    tracking.client.delete_experiment(made)  # an admin in MLflow's UI
    assert tracking.own_experiment("alice", "gone").experiment_id == made  # the next job's
    assert as_alice.get_experiment(made).lifecycle_stage == "active"


def test_tags_a_login_writes_prove_nothing_to_the_service(stack, alice, bob, admin, done):
    """In her own experiment alice's login makes a run tagged as bob's and as shared: bob's
    compare does not list it and his job cannot take it as a teacher. A run an admin shared
    through the service is listed for him."""
    as_alice = _as(stack, _login(alice))
    exp = as_alice.get_experiment_by_name("alice/study").experiment_id
    forged = as_alice.create_run(exp, run_name="forged", tags={
        "bckd.owner": "bob", "bckd.shared": "true", "method": "forged"}).info.run_id
    as_alice.log_text(forged, "not a checkpoint", "final.pth")
    as_alice.set_terminated(forged)
    listed = bob.get("/v1/experiments/study/compare").json()
    names = {row["run_name"] for row in listed["runs"]}
    assert names == {"bob-run"}, listed
    toy = stack.data_dir.parent / "datasets" / "toy"
    r = bob.post("/v1/jobs", json={"kind": "distill", "config": "toy_student",
                                   "data_root": str(toy),
                                   "teacher_ckpt": f"runs:/{forged}/final.pth"})
    assert r.status_code == 422 and "teacher_ckpt" in r.text, r.text

    shared = admin.put(f"/v1/runs/{done['alice']['mlflow_run_id']}/shared",
                       json={"shared": True})
    assert shared.status_code == 200, shared.text
    listed = bob.get("/v1/experiments/study/compare").json()
    assert {row["run_name"] for row in listed["runs"]} == {"bob-run", "alice-run"}, listed
    # still not in MLflow for bob: its permissions stop at experiments (docs/SERVICE.md)
    assert _denied(lambda: _as(stack, _login(bob)).get_run(
        done["alice"]["mlflow_run_id"])) == "PERMISSION_DENIED"


def test_each_owner_sees_only_their_own_runs_in_mlflows_ui(stack, alice, bob, done, tmp_path):
    """Two people in a real browser, each logged into MLflow with their own login, open the
    MLflow link of their job: each sees their run and not the other's."""
    for user, c, other in (("alice", alice, "bob"), ("bob", bob, "alice")):
        login = _login(c)
        job = c.get(f"/v1/jobs/{done[user]['id']}").json()
        with Browser(tmp_path / user) as browser:
            browser.login_basic(login["username"], login["password"])
            browser.goto(job["links"]["mlflow_run"])
            browser.wait(f"document.body.innerText.includes('{user}-run')")
            browser.goto(f"{stack.mlflow_url}/#/experiments")
            text = browser.wait("document.body.innerText.includes('/study') && "
                                "document.body.innerText")
            assert f"{user}/study" in text and f"{other}/study" not in text, text[-2000:]
            browser.goto(f"{stack.mlflow_url}/#/experiments/"
                         f"{other_experiment(stack, other)}/runs/{done[other]['mlflow_run_id']}")
            page = browser.wait("document.body.innerText.length > 200 && "
                                "document.body.innerText")
            assert f"{other}-run" not in page, page[-2000:]


def other_experiment(stack, owner: str) -> str:
    return MlflowClient(stack.mlflow_admin_uri).get_experiment_by_name(
        f"{owner}/study").experiment_id


def test_the_cli_prints_the_callers_login(stack, alice, capsys):
    assert main(["jobs", "--url", stack.api_url, "--token", TOKENS["alice"],
                 "mlflow-login"]) == 0
    out = capsys.readouterr().out
    assert "username: alice" in out and f"password: {_login(alice)['password']}" in out
    assert main(["jobs", "--url", stack.api_url, "--token", TOKENS["alice"],
                 "mlflow-login", "--env"]) == 0  # for a shell's eval, before `bckd export`
    exports = dict(line.removeprefix("export ").split("=", 1)
                   for line in capsys.readouterr().out.splitlines())
    assert exports == {"MLFLOW_TRACKING_URI": stack.mlflow_url,
                       "MLFLOW_TRACKING_USERNAME": "alice",
                       "MLFLOW_TRACKING_PASSWORD": _login(alice)["password"]}
    assert client(stack, None).get("/v1/me/mlflow").status_code == 401
