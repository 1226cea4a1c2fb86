"""A real 3-trial ASHA sweep on a local 2-CPU Ray cluster, the tiny synthetic data: nesting,
statuses, early stopping, the best-trial summary, restore, and infeasible resources refused
before a trial starts.

MLflow is a real tracking server that checks logins, as the service's does (its basic-auth app,
``service.stack.mlflow_server``), and the sweep's driver holds an owner's login granted on its
experiment only, as a service job's does, set after the cluster started: its trials, in Ray
actors that never saw that environment, log only with the login the driver hands them.

The early stop is built in, not left to chance: the space grids the student's score threshold
over [0, 0, 1.1], one trial at a time in that order. A student that keeps no box above 1.1
detects nothing, so its mAP is the worst possible (-inf), and ASHA (grace 1 epoch, reduction
factor 2) must cut it at the first rung against the trials before it, which always detect
something (threshold 0). The two other trials sample the loss weights and beta as usual.
"""

from __future__ import annotations

import math
import os
import subprocess
import time

import httpx
import pytest
from jobtools import BCKD_CONFIG  # tests/jobs, on the path from conftest.py
from mlflow.tracking import MlflowClient

from bckd.tune import SweepSpec, run_sweep
from bckd.tune.tracking import child_runs
from service.stack.embedded import free_port, wait_http
from service.stack.mlflow_server import admin_uri, mlflow_server

pytestmark = pytest.mark.slow

SPACE = """\
model.loss_distill_cls.loss_weight: {type: loguniform, low: 0.25, high: 4}
model.loss_distill_loc.loss_weight: {type: loguniform, low: 0.5, high: 8}
model.loss_distill_cls.beta: {type: choice, values: [0.5, 1, 2]}
model.student.test_cfg.score_thr: {type: grid, values: [0.0, 0.0, 1.1]}
"""
METRIC = "coco/bbox_mAP"


@pytest.fixture(scope="module")
def sweep_spec(tmp_path_factory, synth_data, teacher_ckpt) -> SweepSpec:
    from jobtools import tiny

    root = tmp_path_factory.mktemp("sweep")
    space = root / "space.yaml"
    space.write_text(SPACE)
    options = tiny(synth_data, max_epochs=3, **{"model.teacher_ckpt": str(teacher_ckpt)})
    return SweepSpec(BCKD_CONFIG, num_samples=1, search_space=str(space), scheduler="asha",
                     grace_period=1, reduction_factor=2, max_concurrent=1, cfg_options=options,
                     name="sweep_tiny", work_dir=str(root / "work_dirs" / "sweep_tiny"), seed=0,
                     progress_interval=2)


@pytest.fixture(scope="module")
def tracking(cluster, tmp_path_factory):
    """An MLflow server with logins; the driver (this process) logs as owner ``alice``, EDIT on
    the sweep's experiment (``bckd``) alone. Yields the server's URL and an admin's URI."""
    from mlflow.server.auth.client import AuthServiceClient

    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    argv, env, admin = mlflow_server(root, "127.0.0.1", port)
    with open(root / "mlflow.log", "wb") as log:
        proc = subprocess.Popen(argv, env={**os.environ, **env},
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 120, proc)
        uri = admin_uri(url, admin)
        AuthServiceClient(uri).create_user("alice", "alice-password-0123")
        experiment = MlflowClient(uri).create_experiment("bckd")
        AuthServiceClient(uri).grant_user_permission("alice", "experiment", experiment, "EDIT")
        with pytest.MonkeyPatch.context() as mp:  # after the cluster's start: Ray has none
            mp.setenv("MLFLOW_TRACKING_URI", url)
            mp.setenv("MLFLOW_TRACKING_USERNAME", "alice")
            mp.setenv("MLFLOW_TRACKING_PASSWORD", "alice-password-0123")
            yield url, uri
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def sweep(cluster, tracking, sweep_spec):
    start = time.monotonic()
    result = run_sweep(sweep_spec)
    print(f"sweep wall time: {time.monotonic() - start:.0f} s")
    return result


@pytest.fixture(scope="module")
def client(sweep, tracking) -> MlflowClient:
    return MlflowClient(tracking[1])  # the admin's: reads what alice's login wrote


def _history_best(client: MlflowClient, run_id: str) -> float | None:
    values = [m.value for m in client.get_metric_history(run_id, METRIC) if math.isfinite(m.value)]
    return max(values) if values else None


def test_one_parent_with_three_nested_children(sweep, client, tracking):
    assert sweep.status == "FINISHED"
    parent = client.get_run(sweep.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["scheduler"] == "asha" and parent.data.params["num_samples"] == "1"
    assert parent.data.params["space.model.loss_distill_cls.loss_weight"].startswith(
        "loguniform[0.25, 4]")
    children = child_runs(client, sweep.parent_run_id)
    assert len(children) == 3
    assert {c.data.tags["bckd.sweep.trial_id"] for c in children} == \
        {t["trial_id"] for t in sweep.trials}
    experiment = parent.info.experiment_id
    assert len(client.search_runs([experiment])) == 4  # nothing outside the sweep's tree
    # the trials logged with alice's login, which the driver handed them; without a login
    # the server answers nothing
    assert httpx.post(f"{tracking[0]}/api/2.0/mlflow/runs/search",
                      json={"experiment_ids": [experiment]}).status_code == 401
    # each child is a full job run: params of the job, the swept value applied
    for child in children:
        trial = next(t for t in sweep.trials if t["trial_id"] == child.data.tags[
            "bckd.sweep.trial_id"])
        value = trial["config"]["model.loss_distill_cls.loss_weight"]
        assert child.data.params["model.loss_distill_cls.loss_weight"] == str(float(value))
        assert child.data.tags["method"] == "bckd"


def test_no_run_left_running_and_the_weak_trial_stopped_early(sweep, client):
    runs = client.search_runs([client.get_run(sweep.parent_run_id).info.experiment_id])
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    by_trial = {t["trial_id"]: t for t in sweep.trials}
    children = {c.data.tags["bckd.sweep.trial_id"]: c for c in child_runs(
        client, sweep.parent_run_id)}
    blind = [t for t in sweep.trials if t["config"]["model.student.test_cfg.score_thr"] > 1]
    assert len(blind) == 1
    assert blind[0]["outcome"] == "STOPPED" and blind[0]["epochs"] == 1
    stopped = children[blind[0]["trial_id"]]
    assert stopped.info.status == "KILLED"
    assert stopped.data.tags["bckd.sweep.outcome"] == "STOPPED"
    # the first trial has no rival at any rung: it runs all 3 epochs and its job finishes
    first = sorted(by_trial)[0]
    assert by_trial[first]["outcome"] == "COMPLETED"
    assert children[first].info.status == "FINISHED"
    for trial_id, child in children.items():
        expected = {"COMPLETED": "FINISHED", "STOPPED": "KILLED"}[by_trial[trial_id]["outcome"]]
        assert child.info.status == expected, trial_id


def test_best_trial_summary_matches_the_children(sweep, client):
    children = child_runs(client, sweep.parent_run_id)
    bests = {c.info.run_id: _history_best(client, c.info.run_id) for c in children}
    best_run = max((r for r in bests if bests[r] is not None), key=lambda r: bests[r])
    assert sweep.best_run_id == best_run
    assert sweep.best_value == pytest.approx(bests[best_run])
    parent = client.get_run(sweep.parent_run_id)
    assert parent.data.metrics[f"best/{METRIC}"] == pytest.approx(bests[best_run])
    assert parent.data.tags["best_run_id"] == best_run
    best_child = client.get_run(best_run)
    assert parent.data.tags["best_trial_id"] == best_child.data.tags["bckd.sweep.trial_id"]
    assert parent.data.tags["best.model.loss_distill_loc.loss_weight"] == str(sweep.best_config[
        "model.loss_distill_loc.loss_weight"])
    assert best_child.data.params["model.loss_distill_loc.loss_weight"] == str(float(
        sweep.best_config["model.loss_distill_loc.loss_weight"]))
    artifacts = {a.path for a in client.list_artifacts(sweep.parent_run_id)}
    assert {"search_space.json", "best_config.json", "best_trial_config.json", "trials.json",
            "plots"} <= artifacts
    assert [a.path for a in client.list_artifacts(sweep.parent_run_id, "plots")] == \
        ["plots/weights_vs_metric.png"]


def test_rerun_restores_instead_of_starting_over(sweep, sweep_spec, client):
    again = run_sweep(sweep_spec)
    assert again.restored and again.status == "FINISHED"
    assert again.parent_run_id == sweep.parent_run_id
    assert len(child_runs(client, sweep.parent_run_id)) == 3
    assert [(t["trial_id"], t["outcome"]) for t in again.trials] == \
        [(t["trial_id"], t["outcome"]) for t in sweep.trials]
    assert again.best_run_id == sweep.best_run_id


def test_resources_that_can_never_be_met_fail_before_any_trial(cluster, sweep_spec, tmp_path):
    from dataclasses import replace

    work = tmp_path / "work_dirs" / "too_big"
    with pytest.raises(ValueError, match=r"num_workers: 3 workers .* never fit"):
        run_sweep(replace(sweep_spec, num_workers=3, name="too_big", work_dir=str(work)))
    assert not (work / "tune").exists() and not (tmp_path / "work_dirs" / "mlflow.db").exists()
