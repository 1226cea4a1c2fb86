"""What a job's driver keeps off its workers: the variables its Ray submission gave the driver and
Ray's job supervisor (``bckd.runtime.cluster.DRIVER_ENV``), on a real Ray job submitted to a real
local cluster. A worker started with a runtime_env costs a second interpreter; see
``bckd.runtime.cluster._keep_driver_env_off_workers``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from bckd.runtime.cluster import DRIVER_ENV
from service.adapters.mlflow_users import Login
from service.core.jobs import driver_env
from service.settings import Settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DRIVER = f"""\
import json, os, sys
sys.path.insert(0, {str(ROOT)!r})
import ray
from bckd.runtime.cluster import connect
connect()

@ray.remote(num_cpus=0)
def environ():
    return dict(os.environ)

keys = json.loads(sys.argv[1])
worker = ray.get(environ.remote())
print("RESULT " + json.dumps({{"driver": {{k: os.environ.get(k) for k in keys}},
                              "worker": {{k: worker.get(k) for k in keys}},
                              "runtime_env": ray.get_runtime_context().runtime_env}}))
"""


def test_the_services_driver_env_is_all_driver_env():
    login = Login("alice", "secret")
    env = driver_env(Settings(), "job-1", login)
    assert set(env) <= DRIVER_ENV
    assert env["MLFLOW_TRACKING_USERNAME"] == "alice"  # the owner's login, not the service's
    assert "MLFLOW_TRACKING_USERNAME" not in driver_env(Settings(), "job-1", None)


def test_a_submitted_driver_keeps_its_own_variables_off_its_workers(cluster, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    given = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "BCKD_JOB_ID": "j-1",
             "RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": "7",
             "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "secret",
             "USER_SETTING": "for the workers"}  # a user's own variable: it stays
    client = JobSubmissionClient(cluster)
    job = client.submit_job(entrypoint=f"{sys.executable} {script} '{json.dumps(list(given))}'",
                            runtime_env={"env_vars": given})
    deadline = time.monotonic() + 120
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                             JobStatus.STOPPED):
        assert time.monotonic() < deadline, client.get_job_logs(job)[-2000:]
        time.sleep(0.5)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-2000:]
    (line,) = [x for x in logs.splitlines() if x.startswith("RESULT ")]
    seen = json.loads(line.removeprefix("RESULT "))
    assert seen["driver"] == given  # the driver (and the supervisor) still have every one
    assert seen["worker"] == {k: (None if k in DRIVER_ENV else v) for k, v in given.items()}
    assert seen["runtime_env"] == {"env_vars": {"USER_SETTING": "for the workers"}}
