"""``bckd jobs`` as a newcomer meets it: a refused request says what to type next, in the
words of the interface used (the CLI's flags and commands; REST's fields and routes), and the
commands that list what a request may name (configs, experiments).

The API is the real app and database in this process (``tests/service/inprocess.py``, Ray a
stand-in that is never reached by a refused request). The CLI is ``cli.main`` itself; only its
HTTP client is pointed at the in-process app instead of a URL (``InProcess``).
"""

from __future__ import annotations

import pytest

from bckd.data.synth import SynthConfig, ensure
from bckd.tracking.runs import open_run
from cli import main
from service.adapters.tracking import Tracking
from service.api.deps import get_tracking_client
from service.client.api_client import Client
from service.core.hints import policy_hint
from service.core.schemas import JobCreate
from tests.service.inprocess import HeldRay, body, inprocess_api
from tests.service.servicetools import TOKENS, toy_dataset

TEACHER_HINT = "runs:/<teacher run id>/checkpoints/final.pth"


class InProcess(Client):
    """The CLI's client, sending through a ``TestClient`` of the in-process app."""

    def __init__(self, http):
        self.http = http


@pytest.fixture
def api(tmp_path, monkeypatch):
    """(alice's TestClient, settings, toy data set, ``bckd jobs`` as alice: argv -> exit
    code; its output in ``capsys``)."""
    toy = toy_dataset(tmp_path)
    with inprocess_api(monkeypatch, tmp_path, HeldRay(), [toy.parent],
                       BCKD_MLFLOW_URI=f"sqlite:///{tmp_path / 'mlflow.db'}") as (c, settings):
        monkeypatch.setattr("service.client.jobs_cli._client", lambda args: InProcess(c))

        def cli(*argv: str) -> int:
            return main(["jobs", *argv])

        yield c, settings, toy, cli


def detail(r) -> dict:
    assert r.status_code == 422, r.text
    (d,) = r.json()["detail"]
    return d


def test_a_distill_without_a_teacher_names_the_flag_to_cli_users_and_the_field_to_rest(
        api, capsys):
    c, _, toy, cli = api
    d = detail(c.post("/v1/jobs", json=body(toy, kind="distill", config="toy_bckd")))
    assert d["loc"] == ["body", "config", "model", "teacher_ckpt"]
    assert f'"teacher_ckpt": "{TEACHER_HINT}"' in d["msg"] and "GET /v1/jobs/{job_id}" in d["msg"]

    assert cli("submit", "distill", "toy_bckd", "--data-root", str(toy)) == 2
    err = capsys.readouterr().err
    assert f"--teacher-ckpt {TEACHER_HINT}" in err and "`bckd jobs show JOB_ID`" in err, err
    assert '"teacher_ckpt"' not in err and "/v1/" not in err


def test_a_request_without_data_points_at_the_data_flags_and_bckd_data_synth(api, capsys):
    c, _, toy, cli = api
    d = detail(c.post("/v1/jobs", json={"kind": "train", "config": "toy_teacher"}))
    assert d["loc"][:2] == ["body", "config"], d  # a path of the config's own data set
    assert d["loc"][2].endswith(("_dataloader", "_evaluator")), d
    assert '"data_root": "DIR"' in d["msg"] and '"dataset": "NAME"' in d["msg"]
    assert "GET /v1/datasets" in d["msg"] and "bckd data synth" in d["msg"]

    assert cli("submit", "train", "toy_teacher") == 2
    err = capsys.readouterr().err
    for said in ("--data-root DIR", "--dataset NAME", "`bckd jobs datasets list`",
                 "bckd data synth"):
        assert said in err, (said, err)
    # a request that names its data is refused for what it named, without the hint
    missing = toy.parent / "elsewhere"
    missing.mkdir()
    d = detail(c.post("/v1/jobs", json=body(missing)))
    assert '"data_root"' not in d["msg"], d


def test_the_data_hint_is_given_for_the_datas_own_keys_only():
    bare = JobCreate(kind="train", config="toy_teacher")
    for key in ("train_dataloader.dataset.data_root", "val_evaluator.ann_file",
                "val_dataloader.dataset.data_prefix.img"):
        assert '"data_root": "DIR"' in policy_hint(key, bare), key
    for key in ("train_dataloader.batch_size", "val_dataloader.num_workers"):
        assert policy_hint(key, bare) == "", key
    assert policy_hint("val_evaluator.ann_file", JobCreate(
        kind="train", config="toy_teacher", data_root="data/x")) == ""


def test_a_config_typo_suggests_the_name_and_the_command_that_lists_them(api, capsys):
    c, _, toy, cli = api
    d = detail(c.post("/v1/jobs", json=body(toy, config="toy_teachr")))
    assert d["loc"] == ["body", "config"]
    assert "(did you mean 'toy_teacher'" in d["msg"] and "GET /v1/configs" in d["msg"]

    assert cli("submit", "train", "toy_teachr", "--data-root", str(toy)) == 2
    err = capsys.readouterr().err
    assert "bckd: error: HTTP 422: CONFIG: unknown config 'toy_teachr'" in err, err
    assert "(did you mean 'toy_teacher'" in err and "`bckd jobs configs`" in err

    assert cli("configs") == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in out[1:-1]}
    assert rows["toy_teacher"] == "train" and rows["toy_bckd"] == "distill", out
    assert "toy_teachr" not in rows


def test_an_unknown_data_set_suggests_the_registered_one_and_how_to_list_them(api, capsys):
    c, _, toy, cli = api
    shapes = toy.parent / "shapes"  # a set a registration checks: images and both splits
    ensure(SynthConfig(out=shapes, num_train=2, num_val=1, image_size=64, workers=1),
           progress=False)
    r = c.post("/v1/datasets", json={"name": "shapes", "path": str(shapes)})
    assert r.status_code == 201, r.text
    d = detail(c.post("/v1/jobs", json={"kind": "train", "config": "toy_teacher",
                                        "dataset": "shapez"}))
    assert d["loc"] == ["body", "dataset"]
    assert "(did you mean 'shapes'?)" in d["msg"] and "GET /v1/datasets" in d["msg"]

    assert cli("submit", "train", "toy_teacher", "--dataset", "shapez") == 2
    err = capsys.readouterr().err
    assert "--dataset: no data set 'shapez' (did you mean 'shapes'?)" in err, err
    assert "`bckd jobs datasets list`" in err and "`bckd jobs datasets register NAME PATH`" in err


def test_pydantic_refusals_name_the_flag_too(api, capsys):
    _, _, toy, cli = api
    assert cli("submit", "train", "toy_teacher", "--data-root", str(toy), "--cpus", "0") == 2
    err = capsys.readouterr().err
    assert "HTTP 422: --cpus: " in err, err


def test_experiments_are_the_callers_own_with_their_runs_table(api, capsys):
    c, settings, toy, cli = api
    tracking = Tracking(settings.mlflow_uri, "http://mlflow.example")
    c.app.dependency_overrides[get_tracking_client] = lambda: tracking  # its public URL
    # "shapes" has an MLflow run (the experiment exists); "later" has none yet
    open_run(settings.mlflow_uri, "alice/shapes", "r0", {"bckd.owner": "alice"})
    exp_id = tracking.client.get_experiment_by_name("alice/shapes").experiment_id
    for experiment in ("shapes", "shapes", "later"):
        r = c.post("/v1/jobs", json=body(toy, experiment=experiment))
        assert r.status_code == 201, r.text
    bob = {"Authorization": f"Bearer {TOKENS['bob']}"}
    assert c.post("/v1/jobs", json=body(toy, experiment="bobs"), headers=bob).status_code == 201

    page = c.get("/v1/experiments").json()
    assert [(e["name"], e["jobs"]) for e in page["data"]] == [("later", 1), ("shapes", 2)]
    links = {e["name"]: e["link"] for e in page["data"]}
    assert links["shapes"] == tracking.experiment_link("alice", "shapes")
    assert links["shapes"] == (f"http://mlflow.example/#/experiments/{exp_id}/runs"
                               "?workflowType=machine_learning&viewStateShareKey=bckd-runs")

    # compare without a name: a usage error that says where names come from, and lists them
    assert cli("compare") == 2
    err = capsys.readouterr().err
    assert "--experiment NAME" in err and "(default 'bckd';" in err, err
    assert "later" in err and "shapes" in err and "bobs" not in err
    assert cli("experiments") == 0
    out = capsys.readouterr().out
    assert links["shapes"] in out and "bobs" not in out
    assert cli("compare", "nope") == 2
    assert "`bckd jobs experiments`" in capsys.readouterr().err
    # the compare report opens the same runs table
    assert c.get("/v1/experiments/shapes/compare").json()["link"] == links["shapes"]
    assert cli("compare", "shapes") == 0
    assert f"in MLflow: {links['shapes']}" in capsys.readouterr().out
