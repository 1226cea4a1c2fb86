"""Export and predict from an MLflow run id: a real one-epoch BCKD distillation job (local Ray,
SQLite MLflow store) whose student goes to ONNX, logged back to the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from exporttools import ROOT, config, save_checkpoint
from mlflow.tracking import MlflowClient

from bckd.data.synth import SynthConfig, generate
from bckd.runtime.launch import JobSpec, run_job
from cli import main as cli_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """(run id, tracking uri, data dir) of a finished one-epoch distillation job."""
    from mmdet.registry import MODELS

    data = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(out=data, num_train=8, num_val=4, image_size=128, workers=1),
             progress=False)
    work = tmp_path_factory.mktemp("work_dirs")
    torch.manual_seed(0)
    teacher = MODELS.build(config("gfl_teacher", data).model)
    teacher.init_weights()
    teacher_ckpt = save_checkpoint(config("gfl_teacher", data), teacher.state_dict(),
                                   work / "teacher.pth")
    root = f"{data}/"
    options = {
        "model.teacher_ckpt": str(teacher_ckpt), "model.student.test_cfg.score_thr": 0.0,
        "train_dataloader.dataset.data_root": root, "val_dataloader.dataset.data_root": root,
        "val_evaluator.ann_file": f"{root}annotations/instances_val.json",
        "train_dataloader.batch_size": 4, "val_dataloader.batch_size": 4,
        "train_dataloader.num_workers": 0, "val_dataloader.num_workers": 0,
        "train_dataloader.persistent_workers": False, "val_dataloader.persistent_workers": False,
        "train_cfg.max_epochs": 1,
        "param_scheduler": [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0,
                                 end=2)],
    }
    result = run_job(JobSpec(str(ROOT / "configs/synth/bckd_gfl.py"), cfg_options=options,
                             name="bckd_gfl", work_dir=str(work / "bckd_gfl"),
                             local_num_cpus=2, progress_interval=1))
    assert result.status == "FINISHED", result.error
    return result.mlflow_run_id, f"sqlite:///{work / 'mlflow.db'}", data


def test_export_from_run_id_logs_the_onnx_file(job, tmp_path, capsys):
    run_id, uri, _ = job
    out = tmp_path / "student.onnx"
    assert cli_main(["export", run_id, "--tracking-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "detections after NMS match" in printed and run_id in printed
    client = MlflowClient(uri)
    names = {a.path for a in client.list_artifacts(run_id, "export")}
    assert names == {"export/student.onnx", "export/check.json"}
    check = json.loads(Path(client.download_artifacts(run_id, "export/check.json",
                                                      str(tmp_path))).read_text())
    assert check["detections_match"] and check["images"] == 4  # the config's val images
    assert max(check["max_abs_diff"].values()) < 1e-3


def test_predict_from_runs_uri_and_unknown_run(job, tmp_path, capsys):
    run_id, uri, data = job
    images = [str(p) for p in sorted((data / "val").glob("*.jpg"))]
    argv = ["predict", f"runs:/{run_id}/checkpoints/final.pth", *images, "--tracking-uri", uri,
            "--out", str(tmp_path / "pred"), "--no-draw"]
    assert cli_main(argv) == 0
    results = json.loads((tmp_path / "pred/detections.json").read_text())
    assert results and {r["file_name"] for r in results} <= {Path(p).name for p in images}
    capsys.readouterr()
    unknown = "0" * 32
    assert cli_main(["export", unknown, "--tracking-uri", uri]) == 2
    assert repr(unknown) in capsys.readouterr().err
