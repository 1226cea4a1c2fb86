"""``RunWriter.log_steps``: a buffer of steps is one MLflow write, each (key, step) still once."""

from __future__ import annotations

import pytest

from bckd.tracking.runs import RunWriter, open_run


def test_log_steps_is_one_write_and_skips_logged_steps(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = open_run(uri, "exp", "run", tags={"method": "plain"})
    first = RunWriter(uri, run_id)
    assert first.log_metrics({"loss": 1.0}, step=1) == 1
    again = RunWriter(uri, run_id)  # a restarted worker: its high-water marks come from MLflow
    writes = []
    log_batch = again.client.log_batch
    monkeypatch.setattr(again.client, "log_batch",
                        lambda *a, **k: (writes.append(k["metrics"]), log_batch(*a, **k)))
    rows = [(step, {"loss": 1.0 / step, "lr": 0.1}) for step in (1, 2, 3)]
    assert again.log_steps(rows) == 5  # loss at 1 was there already
    assert len(writes) == 1
    history = again.client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert again.log_steps(rows) == 0 and len(writes) == 1  # nothing new, no write


def test_failed_write_leaves_steps_to_retry(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = RunWriter(uri, open_run(uri, "exp", "run", tags={}))
    log_batch = writer.client.log_batch

    def fail(*args, **kwargs):
        raise ConnectionError("tracking server away")

    monkeypatch.setattr(writer.client, "log_batch", fail)
    with pytest.raises(ConnectionError):
        writer.log_steps([(1, {"loss": 1.0})])
    monkeypatch.setattr(writer.client, "log_batch", log_batch)
    assert writer.log_steps([(1, {"loss": 1.0})]) == 1
