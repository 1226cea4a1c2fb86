"""Kind -> the job's command line: the job file is its only argument (the contract with
jobs.train and jobs.sweep), and the job file reads back with its JSON types."""

import json
import shlex

import pytest

from bckd.config.jobfile import JobFile, read_job_file
from service.adapters.entrypoints import build_entrypoint


def test_train_distill_and_sweep_pass_only_the_job_file(tmp_path):
    spec = tmp_path / "a b" / "job.json"
    assert shlex.split(build_entrypoint("distill", spec)) == [
        "python", "-m", "jobs.train", "--spec", str(spec)]
    assert shlex.split(build_entrypoint("sweep", spec, python="/venv/bin/python"))[:3] == [
        "/venv/bin/python", "-m", "jobs.sweep"]
    assert build_entrypoint("train", spec, module="tests/x.py").startswith("python tests/x.py ")


def job_file(tmp_path, **extra) -> JobFile:
    return JobFile(kind="train", name="n", experiment="e", owner="alice",
                   run_dir=str(tmp_path / "run"), configs_dir=str(tmp_path),
                   read_roots=[str(tmp_path)], base_dir=str(tmp_path), config_data={"model": {}},
                   mlflow_run_id="a" * 32,
                   **extra)


def test_values_keep_their_json_types_through_the_job_file(tmp_path):
    overrides = {"a.b": "None", "c": "True", "d": "a,b", "e": None, "f": [1, 2.5], "g": False}
    job_file(tmp_path, overrides=overrides).write(tmp_path / "job.json")
    assert read_job_file(tmp_path / "job.json").overrides == overrides


@pytest.mark.parametrize("change,needle", [
    ({"version": 1}, "version 2"),
    ({"kind": "shell"}, "kind"),
    ({"run_dir": "relative/dir"}, "absolute"),
    ({"read_roots": ["/ok", "rel"]}, "absolute"),
    ({"num_workers": "2"}, "num_workers"),
    ({"config_file": "/x.py"}, "unknown fields"),  # a job loads no config file
    ({"config_data": None}, "config_data"),
    ({"mlflow_run_id": None}, "mlflow_run_id"),  # the job trains only in the service's run
    ({"mlflow_run_id": "a" * 31 + "\n"}, "mlflow_run_id"),
    ({"entrypoint": "rm -rf /"}, "unknown fields"),
])
def test_a_bad_job_file_names_its_field(tmp_path, change, needle):
    job_file(tmp_path).write(tmp_path / "job.json")
    data = json.loads((tmp_path / "job.json").read_text())
    (tmp_path / "job.json").write_text(json.dumps({**data, **change}))
    with pytest.raises(ValueError, match=needle):
        read_job_file(tmp_path / "job.json")
