"""``bckd.replayed_steps``: a resumed attempt says on its run which steps it trained again,
while the run keeps each step once (real SQLite MLflow store, the writer the workers use)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from bckd.runtime.hooks.replay import REPLAY_TAG, record_replay
from bckd.tracking.runs import RunWriter


def attempt(uri: str, run_id: str, steps: range) -> RunWriter:
    writer = RunWriter(uri, run_id)
    writer.log_steps([(s, {"loss": 1.0 / s, "epoch": 1.0}) for s in steps])
    return writer


def test_each_resume_before_the_last_logged_step_adds_its_window(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("exp")).info.run_id
    attempt(uri, run_id, range(1, 21))  # killed before its first checkpoint
    second = RunWriter(uri, run_id)  # so the next starts from scratch
    assert record_replay(second, 0) == "1-20"
    second.log_steps([(s, {"loss": 1.0 / s, "epoch": 1.0}) for s in range(1, 157)])
    third = RunWriter(uri, run_id)  # killed after step 156, resumed from iteration 144
    assert record_replay(third, 144) == "145-156"
    third.log_steps([(s, {"loss": 5.0, "epoch": 2.0}) for s in range(145, 301)])
    assert record_replay(RunWriter(uri, run_id), 300) is None  # resumed at its last step
    assert third.client.get_run(run_id).data.tags[REPLAY_TAG] == "1-20,145-156"
    losses = third.client.get_metric_history(run_id, "loss")
    steps = [m.step for m in losses]
    assert sorted(steps) == list(range(1, 301))  # each step once
    # the replayed window keeps the first attempt's values, which the tag points out
    assert {m.value for m in losses if 145 <= m.step <= 156} == {1.0 / s for s in
                                                                 range(145, 157)}
