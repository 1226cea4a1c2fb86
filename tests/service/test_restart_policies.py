"""Restart policies from the request to the job: ``max_failures`` and ``max_restarts`` in the REST
body, the CLI's flags, the job file and the job's own spec.

The API is the real app and database in this process; Ray stands in (``HeldRay``, never held
here): what these tests check ends before Ray runs anything. A real Ray's restart of a killed
driver is ``test_api.py``'s; the reconciler's rule is ``test_reconciler.py``'s.
"""

from __future__ import annotations

import argparse
import json

import pytest

from bckd.config.jobfile import read_job_file
from tests.service.inprocess import HeldRay, body, inprocess_api, row
from tests.service.servicetools import TOKENS, toy_dataset


@pytest.fixture
def api(tmp_path, monkeypatch):
    toy = toy_dataset(tmp_path)
    with inprocess_api(monkeypatch, tmp_path, HeldRay(), [toy.parent]) as (c, settings):
        yield c, settings, toy


def job_file_of(settings, job: dict):
    return settings.owners_dir / job["owner"] / "jobs" / f"{job['id']}.json"


def test_the_two_policies_travel_from_the_body_to_the_row_and_the_job_file(api):
    c, settings, toy = api
    r = c.post("/v1/jobs", json=body(toy, max_failures=2, max_restarts=3))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["max_restarts"] == 3 and job["restarts"] == 0
    assert row(settings, job["id"]).max_restarts == 3
    assert read_job_file(job_file_of(settings, job)).max_failures == 2
    default = c.post("/v1/jobs", json=body(toy)).json()  # both 0 unless asked
    assert default["max_restarts"] == 0
    assert read_job_file(job_file_of(settings, default)).max_failures == 0


@pytest.mark.parametrize("field,value", [("max_failures", -1), ("max_restarts", -1),
                                         ("max_restarts", 101), ("max_failures", "two")])
def test_a_bad_policy_is_refused_naming_its_field(api, field, value):
    c, _, toy = api
    r = c.post("/v1/jobs", json=body(toy, **{field: value}))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], r.text


def test_jobs_train_and_jobs_sweep_take_max_failures_from_the_job_file(api):
    from jobs import sweep, train

    c, settings, toy = api
    for kind, module in (("train", train), ("sweep", sweep)):
        job = c.post("/v1/jobs", json=body(toy, kind=kind, max_failures=4)).json()
        parser = argparse.ArgumentParser()
        module._arguments(parser)
        spec = module._spec(parser.parse_args(["--spec", str(job_file_of(settings, job))]))
        assert spec.max_failures == 4, kind


@pytest.mark.parametrize("value", [True, -1, 1.5])
def test_a_job_file_with_a_bad_max_failures_is_refused_naming_it(api, tmp_path, value):
    c, settings, toy = api
    path = job_file_of(settings, c.post("/v1/jobs", json=body(toy)).json())
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "max_failures": value}))
    with pytest.raises(ValueError, match="max_failures"):
        read_job_file(path)


def test_the_cli_sends_both_flags(api, monkeypatch, capsys):
    import service.client.api_client
    from cli import main

    c, settings, toy = api
    # the in-process app
    monkeypatch.setattr(service.client.api_client.httpx, "Client", lambda **kw: c)
    rc = main(["jobs", "--url", "http://testserver", "--token", TOKENS["alice"], "submit",
               "train", "toy_teacher", "--data-root", str(toy), "--max-failures", "2",
               "--max-restarts", "1"])
    assert rc == 0
    job_id = capsys.readouterr().out.split()[1].rstrip(":")
    job = row(settings, job_id)
    assert job.max_restarts == 1 and job.request["max_failures"] == 2
