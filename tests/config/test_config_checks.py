"""Driver-side checks: override keys, data set, cluster resources, MLflow step dedup."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

from bckd.config.loader import check_dataset, load_config, resolve_paths
from bckd.config.overrides import check_override_keys
from bckd.tracking.runs import RunWriter, open_run, read_run_json, write_run_json

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "configs/synth/gfl_teacher.py"


def test_override_keys_must_exist():
    cfg = Config(dict(model=dict(backbone=dict(depth=18)), pipeline=[dict(type="A")]))
    assert check_override_keys(cfg, {"model.backbone.depth": 50, "pipeline.0.type": "B"})
    with pytest.raises(ValueError, match="'model.backbone.dept' does not exist.*depth"):
        check_override_keys(cfg, {"model.backbone.dept": 50})
    with pytest.raises(ValueError, match="'pipeline.3.type' does not exist"):
        check_override_keys(cfg, {"pipeline.3.type": "B"})
    assert check_override_keys(cfg, {"+model.backbone.with_cp": True}) == {
        "model.backbone.with_cp": True}


def test_missing_config_and_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.py")
    cfg = resolve_paths(load_config(TEACHER), base=tmp_path)
    assert cfg.train_dataloader.dataset.data_root == f"{tmp_path}/data/synth/"
    with pytest.raises(FileNotFoundError, match="dataset not found: train_dataloader"):
        check_dataset(cfg)


def test_run_writer_logs_each_step_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = open_run(uri, "exp", "run", tags={"method": "plain"})
    first = RunWriter(uri, run_id)
    assert first.log_metrics({"loss": 1.0}, step=1) == 1
    assert first.log_metrics({"loss": 0.9}, step=2) == 1
    # a restarted worker replays step 2, then continues
    again = RunWriter(uri, open_run(uri, "exp", "run", tags={}, run_id=run_id))
    assert again.log_metrics({"loss": 0.8}, step=2) == 0
    assert again.log_metrics({"loss": 0.7}, step=3) == 1
    steps = [m.step for m in again.client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == [1, 2, 3]
    again.terminate("KILLED")
    assert again.client.get_run(run_id).info.status == "KILLED"
    write_run_json(tmp_path, mlflow_run_id=run_id, status="RUNNING")
    write_run_json(tmp_path, status="KILLED")
    assert read_run_json(tmp_path) == {"mlflow_run_id": run_id, "status": "KILLED"}
