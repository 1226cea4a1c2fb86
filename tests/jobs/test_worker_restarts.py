"""Restarts from any point: one MLflow run per job, and no metric step logged twice.

The workers are real Ray Train workers of a real ``python -m jobs.train`` on its own local Ray
cluster, writing to a real SQLite MLflow store. They die by SIGKILL at chosen points through the
``BCKD_FAULT`` test seam (:mod:`bckd.runtime.faults`), which stands in for a real crash that a
test could not time: rank 0 kills itself there, once.

To keep the suite short on 2 cores (each restart costs a worker start, tens of seconds), one
job takes the four kill points in turn instead of one job per point: each attempt still
restarts from its own state (checked), and the assertions cover every key of the run. A job
run again after it failed before its first checkpoint (a restart policy's resubmission) would
cost a second driver and cluster; the rule that it reopens its run is tested without Ray
(:func:`~bckd.tracking.runs.run_to_reopen`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from jobtools import ROOT, make_synth, tiny
from mlflow.tracking import MlflowClient

from bckd.runtime.faults import ENV as FAULT_ENV
from bckd.tracking.runs import RunWriter, open_run, read_run_json, run_to_reopen

STUDENT_CONFIG = str(ROOT / "configs/synth/gfl_student.py")  # the smallest detector
ITERS_PER_EPOCH = 4  # 16 train images / batch 4, one worker
PER_STEP_KEYS = ("loss", "loss_cls", "loss_bbox", "loss_dfl", "lr", "images_per_s", "epoch")


def test_a_new_writer_skips_the_steps_an_earlier_attempt_logged(tmp_path):
    # The cause of the duplicates: a worker restarted before the first checkpoint resumes from
    # nothing, so nothing told its writer that the run already had steps.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = open_run(uri, "exp", "run", tags={})
    first = RunWriter(uri, run_id)
    assert [first.log_metrics({"loss": 1.0 / s}, step=s) for s in (1, 2, 3)] == [1, 1, 1]
    again = RunWriter(uri, run_id)  # the restarted attempt, from step 1
    assert [again.log_metrics({"loss": 2.0, "lr": 0.1}, step=s) for s in (1, 2, 3, 4)] == \
        [1, 1, 1, 2]  # only lr (new) until step 4
    history = again.client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 0.5), (3, 1 / 3),
                                                          (4, 2.0)]


def test_an_unfinished_attempt_is_reopened():
    for status in ("RUNNING", "FAILED", "KILLED"):
        assert run_to_reopen({"mlflow_run_id": "r", "status": status}, resuming=False) == "r"
    assert run_to_reopen({"mlflow_run_id": "r", "status": "FINISHED"}, resuming=True) == "r"
    # finished and its checkpoints gone: it trains from scratch, as a new run
    assert run_to_reopen({"mlflow_run_id": "r", "status": "FINISHED"}, resuming=False) is None
    assert run_to_reopen({}, resuming=True) is None


def _train(work_root: Path, data: Path, name: str, epochs: int, max_failures: int,
           faults: str) -> subprocess.CompletedProcess:
    """``python -m jobs.train`` on its own local Ray cluster (no RAY_ADDRESS), whose workers
    inherit ``BCKD_FAULT`` from this environment."""
    # score_thr 0: the barely trained model has detections, hence COCO metrics, every epoch
    # (the config's own schedule: a list is not a --cfg-options value)
    options = {k: v for k, v in tiny(data, max_epochs=epochs, **{"model.test_cfg.score_thr": 0.0})
               .items() if k != "param_scheduler"}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({FAULT_ENV: faults, "MLFLOW_TRACKING_URI": f"sqlite:///{work_root / 'mlflow.db'}"})
    env["RAY_DEDUP_LOGS"] = "0"  # every attempt's progress lines, for the restart points
    return subprocess.run(
        [sys.executable, "-m", "jobs.train", STUDENT_CONFIG, "--name", name,
         "--work-dir", str(work_root / name), "--experiment", "restarts",
         "--max-failures", str(max_failures), "--progress-interval", "1",
         "--cfg-options", *(f"{k}={v}" for k, v in options.items())],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=900)


def _the_one_run(work_root: Path, name: str):
    client = MlflowClient(f"sqlite:///{work_root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("restarts")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def _assert_each_step_once(client: MlflowClient, run, epochs: int) -> None:
    """Every key: no step twice; per-step keys: each trained step once; COCO: once an epoch."""
    run_id = run.info.run_id
    steps = {key: sorted(m.step for m in client.get_metric_history(run_id, key))
             for key in run.data.metrics}
    for key, logged in steps.items():
        assert len(logged) == len(set(logged)), f"{key} logged a step twice: {logged}"
    trained = list(range(1, epochs * ITERS_PER_EPOCH + 1))
    evaluated = [e * ITERS_PER_EPOCH for e in range(1, epochs + 1)]
    assert set(PER_STEP_KEYS) <= set(steps) and "coco/bbox_mAP" in steps
    for key, logged in steps.items():
        assert logged == (evaluated if key.startswith("coco/") else trained), key


def _first_iteration_of_each_attempt(stdout: str) -> list[int]:
    """The iteration each worker process (one per attempt) started training at, in order."""
    first: dict[str, int] = {}
    for match in re.finditer(r"RayTrainWorker pid=(\d+).*bckd: progress .*? iter=(\d+)/", stdout):
        first.setdefault(match.group(1), int(match.group(2)))
    return list(first.values())


@pytest.mark.slow
def test_worker_killed_at_every_point_logs_each_step_once(tmp_path):
    data = make_synth(tmp_path / "synth")
    work_root = tmp_path / "work_dirs"
    # Five attempts, rank 0 killed by the first point that is due: iteration 3 (epoch 1, before
    # any checkpoint: the restart trains from scratch, the 50 steps logged twice);
    # iteration 6 (mid-epoch 2: from the epoch-1 checkpoint); epoch 2's evaluation (its metrics
    # not logged yet: from epoch 1's again); the epoch-3 checkpoint, written but not reported
    # (epoch 3's metrics already logged: from epoch 2's, replaying them); then done.
    faults = ("iter:3", "iter:6", "val:2", "checkpoint:3")
    proc = _train(work_root, data, "killed", epochs=3, max_failures=len(faults),
                  faults=",".join(faults))
    assert proc.returncode == 0, proc.stdout[-4000:]
    fired = sorted(p.stem for p in (work_root / "killed" / "faults").glob("*.fired"))
    assert fired == sorted(f.replace(":", "-") for f in faults)
    # each attempt started where its point says: from scratch twice, then from each checkpoint
    assert _first_iteration_of_each_attempt(proc.stdout) == [1, 1, 5, 5, 9]
    info = read_run_json(work_root / "killed")
    assert info["status"] == "FINISHED"
    client, run = _the_one_run(work_root, "killed")
    assert run.info.run_id == info["mlflow_run_id"] and run.info.status == "FINISHED"
    _assert_each_step_once(client, run, epochs=3)
