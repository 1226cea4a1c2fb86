"""What a job's answer says, with the real app, database and MLflow store in the test's process
(a Ray stand-in): a bad request is refused for what it is even while Ray is down, and a job's
MLflow link opens the run's own page."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.service.inprocess import HeldRay, body, inprocess_api
from tests.service.servicetools import toy_dataset


class DownRay(HeldRay):
    """Ray whose cluster cannot be read (its dashboard does not answer)."""

    def capacity(self, groups=(), max_age_s: float = 30.0):
        self.calls.append("capacity")
        raise ConnectionError("dashboard at 127.0.0.1:8265 refused the connection")


@pytest.fixture
def toy(tmp_path):
    return toy_dataset(tmp_path)


def test_a_bad_request_is_a_422_while_ray_is_down_and_a_good_one_a_503(tmp_path, monkeypatch,
                                                                      toy):
    ray = DownRay()
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent]) as (c, _):
        bad = c.post("/v1/jobs", json=body(toy, config="no_such_config"))
        assert bad.status_code == 422, bad.text
        assert bad.json()["detail"][0]["loc"] == ["body", "config"]
        assert ray.calls == []  # refused before the cluster was asked
        good = c.post("/v1/jobs", json=body(toy))
        assert good.status_code == 503, good.text
        assert good.json()["detail"].startswith("Ray cluster unreachable: ")
        assert ray.calls == ["capacity"] and c.get("/v1/jobs").json()["count"] == 0


def test_the_mlflow_link_opens_the_runs_page_in_its_experiment(tmp_path, monkeypatch, toy):
    with inprocess_api(monkeypatch, tmp_path, HeldRay(), [toy.parent]) as (c, settings):
        job = c.post("/v1/jobs", json=body(toy, experiment="links")).json()
        run = MlflowClient(settings.mlflow_uri).get_run(job["mlflow_run_id"])
        page = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?"
        assert run.info.experiment_id != "0"  # the experiment "links", not MLflow's default
        # every answer that shows the job: the submission, a read, the list and a cancel
        shown = [job, c.get(f"/v1/jobs/{job['id']}").json(), c.get("/v1/jobs").json()["data"][0],
                 c.post(f"/v1/jobs/{job['id']}/cancel").json()]
        for answer in shown:
            link = answer["links"]["mlflow_run"]
            assert link.startswith(settings.mlflow_uri.rstrip("/") + "/") and page in link, link
