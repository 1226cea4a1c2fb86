"""End-to-end jobs on a local 2-CPU Ray cluster: teacher, 2-worker distillation, its rerun
resuming (with a worker killed on the way), SIGTERM, and each bad input failing early with its
message."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from jobtools import BCKD_CONFIG, ROOT, TEACHER_CONFIG, make_synth, tiny
from mlflow.tracking import MlflowClient

from bckd.checkpoint import load_state_dict
from bckd.config.spec import JobSpec
from bckd.runtime.launch import run_job
from bckd.runtime.signals import NOTHING_TO_SAVE
from bckd.tracking.runs import read_run_json
from cli import main as cli_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def work_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work_dirs")


@pytest.fixture(scope="module")
def teacher(cluster, synth_data, work_root) -> Path:
    """A plain GFL teacher trained for two tiny epochs: its final.pth feeds the distillation.
    At the students' lr 0.02, not its config's 0.01, so it may already detect something; a
    teacher that detects nothing is logged at mAP 0 (``evaluation_numbers``)."""
    options = tiny(synth_data, max_epochs=2, **{"optim_wrapper.optimizer.lr": 0.02})
    result = run_job(JobSpec(TEACHER_CONFIG, cfg_options=options,
                             name="gfl_teacher", work_dir=str(work_root / "gfl_teacher"),
                             progress_interval=2))
    assert result.status == "FINISHED", result.error
    # one worker trains the bare model: no DDP wrapper's bucket copies (ARCHITECTURE.md)
    assert [r["ddp"] for r in result.ranks] == [False]
    return Path(result.final_checkpoint)


def _client(work_root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{work_root / 'mlflow.db'}")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for item in client.list_artifacts(run_id, path):
        files += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return files


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _bckd(synth_data, work_root, teacher, name, max_epochs=2, **kw) -> JobSpec:
    # score_thr=0: the barely trained student always has detections, hence COCO metrics.
    options = tiny(synth_data, max_epochs=max_epochs, **{"model.teacher_ckpt": str(teacher),
                                                         "model.student.test_cfg.score_thr": 0.0})
    return JobSpec(BCKD_CONFIG, num_workers=2, cfg_options=options, name=name,
                   work_dir=str(work_root / name), progress_interval=1, **kw)


def test_teacher_run_writes_final_checkpoint(teacher, work_root):
    state = load_state_dict(str(teacher))
    assert any(k.startswith("bbox_head.") for k in state)
    assert not any(k.startswith("module.") for k in state)  # saved without a wrapper's prefix
    info = read_run_json(teacher.parent)
    assert info["status"] == "FINISHED" and info["experiment"] == "bckd"
    run = _client(work_root).get_run(info["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["method"] == "plain"


def test_two_worker_distillation_is_tracked(synth_data, work_root, teacher):
    result = run_job(_bckd(synth_data, work_root, teacher, "bckd_gfl"))
    assert result.status == "FINISHED", result.error
    client = _client(work_root)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    # params: every config leaf under its own key (the override's name), method,
    # teacher/student, world size; no second name for a setting
    params = run.data.params
    assert params["world_size"] == "2" and params["randomness.seed"] == "0"
    assert params["model.loss_distill_loc.loss_weight"] == "4.0"
    assert params["model.type"] == "BCKDDetector"
    assert not [k for k in params if k.startswith(("cfg.", "loss_weight.")) or k == "seed"]
    assert run.data.tags["method"] == "bckd"
    from bckd.distill.precision import resolve_precision  # 'auto' as the worker resolved it

    auto = resolve_precision("auto", torch.device("cpu"))
    assert run.data.tags["model.teacher_precision"] == auto
    assert {"teacher", "student", "dataset"} <= set(run.data.tags)
    # per-step losses: 16 images / (2 workers x 4) = 2 iterations per epoch, 2 epochs
    for key in ("loss", "loss_cls", "loss_distill_cls", "loss_distill_loc", "lr", "images_per_s"):
        assert _steps(client, run.info.run_id, key) == [1, 2, 3, 4], key
    # per-epoch COCO metrics of the student; the teacher's once, at step 0
    assert _steps(client, run.info.run_id, "coco/bbox_mAP") == [2, 4]
    assert _steps(client, run.info.run_id, "teacher/coco/bbox_mAP") == [0]
    files = _artifacts(client, run.info.run_id)
    assert {"config.json", "checkpoints/final.pth", "checkpoints/best.pth",
            "eval/epoch_002/coco.bbox.json", "eval/epoch_002/figure3_epoch_002.png",
            "eval/teacher/coco.bbox.json"} <= set(files)
    # the student's weights only (no teacher) in final.pth
    state = load_state_dict(result.final_checkpoint)
    assert not any("teacher" in k for k in state)
    # data parallel: disjoint shards per epoch, identical parameters at the end
    first, second = result.ranks
    assert first["ddp"] and second["ddp"]  # several workers train inside DDP
    for epoch in (1, 2):
        assert first["seen"][epoch] and not set(first["seen"][epoch]) & set(second["seen"][epoch])
    assert first["params_sha256"] == second["params_sha256"]
    assert read_run_json(result.work_dir)["mlflow_run_id"] == result.mlflow_run_id


def _resumed_iterations(work_dir: Path) -> list[int]:
    """The iteration each attempt's Runner resumed at, in order: mmengine's own line in the log
    it writes per Runner under ``<work_dir>/<timestamp>/`` (a Runner that starts afresh writes
    none)."""
    return [int(i) for log in sorted(work_dir.glob("*/*.log"))
            for i in re.findall(r"resumed epoch: \d+, iter: (\d+)", log.read_text())]


def test_rerun_resumes_and_a_killed_worker_resumes_from_checkpoint(cluster, synth_data,
                                                                   work_root, teacher):
    """One job tells two stories: a rerun under the finished run's name trains on from its last
    checkpoint in the same MLflow run, and a worker killed mid-run restarts from the newest
    checkpoint without logging a step twice."""
    before = read_run_json(work_root / "bckd_gfl")["mlflow_run_id"]
    spec = _bckd(synth_data, work_root, teacher, "bckd_gfl", max_epochs=4, max_failures=1)
    # validation at the last epoch only, as the reproduction runs: epoch 3's checkpoint has no
    # score, and the restarted run must still rank it (Ray reads it back from JSON)
    spec.cfg_options["train_cfg.val_interval"] = 4
    holder = {}
    job = threading.Thread(target=lambda: holder.setdefault("result", run_job(spec)))
    job.start()
    # Wait until Ray has registered epoch 3's checkpoint (not just written its files): the rerun
    # has trained an epoch of its own.
    snapshot = Path(spec.work_dir) / "ray_train" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and "checkpoint_iter_0000006" not in snapshot.read_text():
        time.sleep(0.2)
    assert "checkpoint_iter_0000006" in snapshot.read_text(), "no checkpoint after epoch 3"
    from ray.util.state import list_actors

    # address: other Ray clusters may run on the same machine
    workers = list_actors(address=cluster, filters=[("class_name", "=", "RayTrainWorker"),
                                                    ("state", "=", "ALIVE")])
    os.kill(int(workers[-1].pid), signal.SIGKILL)
    job.join(timeout=300)
    result = holder["result"]
    assert result.status == "FINISHED", result.error
    assert result.mlflow_run_id == before
    client = _client(work_root)
    assert client.get_run(before).data.tags["bckd.resumed_from_checkpoint"] == "true"
    # the rerun's first attempt resumed where the finished run ended (iteration 4, epoch 2), the
    # restarted one from epoch 3's checkpoint, and it trained epoch 4 alone
    assert _resumed_iterations(Path(spec.work_dir)) == [4, 6]
    assert all("checkpoint_iter_0000006" in r["resumed_from"] for r in result.ranks)
    assert all(list(r["seen"]) == [4] for r in result.ranks)
    for key in ("loss", "loss_distill_cls", "coco/bbox_mAP"):
        steps = _steps(client, before, key)
        assert len(steps) == len(set(steps)), f"{key} logged a step twice: {steps}"
    assert _steps(client, before, "loss") == list(range(1, 9))
    assert _steps(client, before, "coco/bbox_mAP") == [2, 4, 8]


def test_sigterm_ends_the_run_killed(cluster, synth_data, work_root):
    work_dir = work_root / "stopped"
    options = [f"{k}={v}" for k, v in tiny(synth_data, max_epochs=50).items()
               if k != "param_scheduler"]
    env = {**os.environ, "RAY_ADDRESS": cluster,
           "MLFLOW_TRACKING_URI": f"sqlite:///{work_root / 'mlflow.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.train", TEACHER_CONFIG, "--name", "stopped",
         "--work-dir", str(work_dir), "--progress-interval", "1", "--cfg-options", *options],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_id = None
    for line in proc.stdout:
        if line.startswith("bckd: mlflow_run_id="):
            run_id = line.strip().split("=", 1)[1]
        if "bckd: progress" in line:
            break
    assert run_id is not None
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    assert read_run_json(work_dir)["status"] == "KILLED"
    assert _client(work_root).get_run(run_id).info.status == "KILLED"
    # the workers checkpointed before leaving, so a rerun would resume from there
    assert list((work_dir / "ray_train").glob("checkpoint_iter_*"))


# A stop while the driver sets up (after the run is named), and while Ray starts the controller
# and the worker (once the controller speaks): seconds before any step on any machine.
@pytest.mark.parametrize(("name", "when", "said"), [
    ("setting-up", "bckd: mlflow_run_id=", f"received SIGINT {NOTHING_TO_SAVE}"),
    ("starting-workers", "(TrainController", f"stopped {NOTHING_TO_SAVE}"),
], ids=["setting-up", "starting-workers"])
def test_a_stop_before_training_began_ends_at_once_with_nothing_to_save(
        cluster, synth_data, work_root, name, when, said):
    # Before, the driver waited for a stop checkpoint that only came after the first steps
    # (or for the whole grace), or died of a KeyboardInterrupt with its run left RUNNING.
    work_dir = work_root / name
    options = [f"{k}={v}" for k, v in tiny(synth_data, max_epochs=50).items()
               if k != "param_scheduler"]
    env = {**os.environ, "RAY_ADDRESS": cluster,
           "MLFLOW_TRACKING_URI": f"sqlite:///{work_root / 'mlflow.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.train", TEACHER_CONFIG, "--name", name,
         "--work-dir", str(work_dir), "--progress-interval", "1", "--cfg-options", *options],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if when in line:
            break
    proc.send_signal(signal.SIGINT)
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-2000:]
    assert said in out and "bckd: progress" not in out, out[-2000:]  # and no step ran
    (run_id,) = re.findall(r"^bckd: mlflow_run_id=(\w+)$", out, re.MULTILINE)
    info = read_run_json(work_dir)
    assert (info["mlflow_run_id"], info["status"]) == (run_id, "KILLED")
    run = _client(work_root).get_run(run_id)
    assert run.info.status == "KILLED" and "loss" not in run.data.metrics
    assert not list((work_dir / "ray_train").glob("checkpoint_iter_*"))


def _cli_error(capsys, argv: list[str]) -> str:
    assert cli_main(["train", *argv]) == 2
    return capsys.readouterr().err


def test_bad_inputs_fail_early(cluster, synth_data, work_root, teacher, capsys, tmp_path):
    base = ["--work-dir", str(tmp_path / "w"), "--cfg-options",
            f"train_dataloader.dataset.data_root={synth_data}/",
            f"val_dataloader.dataset.data_root={synth_data}/",
            f"val_evaluator.ann_file={synth_data}/annotations/instances_val.json"]
    err = _cli_error(capsys, [str(tmp_path / "nope.py")])
    assert "config file not found" in err and "nope.py" in err
    err = _cli_error(capsys, [TEACHER_CONFIG, "--work-dir", str(tmp_path / "w"), "--cfg-options",
                              f"train_dataloader.dataset.data_root={tmp_path}/missing/"])
    assert "dataset not found" in err and "missing" in err
    err = _cli_error(capsys, [TEACHER_CONFIG, *base, "optim_wraper.optimizer.lr=0.1"])
    assert "'optim_wraper.optimizer.lr' does not exist" in err
    # a teacher checkpoint of another architecture (the GFL teacher's weights into ATSS)
    err = _cli_error(capsys, [BCKD_CONFIG, *base, f"model.teacher_ckpt={teacher}",
                              f"model.teacher={ROOT}/configs/synth/atss_teacher.py"])
    assert "does not match the teacher config" in err
    err = _cli_error(capsys, [BCKD_CONFIG, *base, f"model.teacher_ckpt={tmp_path}/t.pth"])
    assert "teacher checkpoint not found" in err
    err = _cli_error(capsys, [TEACHER_CONFIG, *base, "--num-workers", "3"])
    assert "num_workers: 3 workers" in err and "never fit" in err
    err = _cli_error(capsys, [TEACHER_CONFIG, *base, "--gpus-per-worker", "1"])
    assert "gpus_per_worker: 1 GPUs per worker, but the largest node has 0" in err
    assert not (tmp_path / "w" / "run.json").exists()  # nothing started
