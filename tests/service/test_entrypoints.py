"""Kind -> the job's command line (the contract with jobs.train and jobs.sweep)."""

import shlex

from service.entrypoints import JobCommand, build_entrypoint


def test_train_and_distill_run_jobs_train_with_overrides_quoted():
    cmd = JobCommand(kind="distill", config="configs/synth/bckd_gfl.py", name="s", experiment="e",
                     num_workers=2, cpus_per_worker=1.0,
                     cfg_options={"model.teacher_ckpt": "/d/a b.pth", "train_cfg.max_epochs": "2"})
    argv = shlex.split(build_entrypoint(cmd))
    assert argv[:4] == ["python", "-m", "jobs.train", "configs/synth/bckd_gfl.py"]
    assert argv[argv.index("--num-workers") + 1] == "2"
    assert argv[argv.index("--cpus-per-worker") + 1] == "1"
    assert argv[-2:] == ["model.teacher_ckpt=/d/a b.pth", "train_cfg.max_epochs=2"]
    assert "--use-gpu" not in argv and "--num-samples" not in argv


def test_sweep_runs_jobs_sweep_with_samples_and_gpus():
    cmd = JobCommand(kind="sweep", config="c.py", name="s", experiment="e", num_samples=4,
                     gpus_per_worker=1, cpus_per_worker=0.5)
    argv = shlex.split(build_entrypoint(cmd, python="/venv/bin/python"))
    assert argv[:3] == ["/venv/bin/python", "-m", "jobs.sweep"]
    assert argv[argv.index("--num-samples") + 1] == "4" and "--use-gpu" in argv
    assert argv[argv.index("--cpus-per-worker") + 1] == "0.5"


def test_a_script_path_replaces_the_module():
    cmd = JobCommand(kind="train", config="c.py", name="s", experiment="e")
    assert build_entrypoint(cmd, module="tests/x.py").startswith("python tests/x.py c.py ")
