"""CrossKD, PKD, BCKD+PKD and CWD through the REST service: the real API, a real local Ray cluster
running the real ``jobs.train`` on a tiny synthetic set, and MLflow.

Each method distills for one epoch from an initialized (untrained) GFL teacher's checkpoint in
the data root, and must log its own terms, and its method name, to MLflow and the compare
table. The terms need a teacher that fits the config, not a good one; a teacher from an MLflow
run (``runs:/...``) is tested in test_api.py.
"""

from __future__ import annotations

import json

import httpx
import pytest
from mlflow.tracking import MlflowClient

from service.core.auth import hash_token
from service.stack.embedded import Stack, StackConfig, free_port
from tests.distill.distilltools import save_teacher
from tests.jobs.jobtools import make_synth
from tests.service.servicetools import wait_all

TOKEN = "carol-token-0123456789"
# method config -> (the method name in MLflow, the terms it must log)
METHODS = {
    "synth/crosskd_gfl": ("crosskd", ("loss_distill_crosskd_cls", "loss_distill_crosskd_box")),
    "synth/pkd_gfl": ("pkd", ("loss_distill_feat",)),
    "synth/bckd_pkd_gfl": ("bckd+pkd", ("loss_distill_cls", "loss_distill_loc",
                                        "loss_distill_feat")),
    "synth/cwd_gfl": ("cwd", ("loss_distill_cwd",)),
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    data = make_synth(root / "datasets" / "synth")
    teacher = save_teacher("gfl", data)
    st = Stack(StackConfig(
        data_dir=root / "state", api_port=free_port(), dashboard_port=free_port(),
        mlflow_port=free_port(), num_cpus=2,
        extra_env={"BCKD_DATA_ROOTS": json.dumps([str(root / "datasets")]),
                   "BCKD_TOKENS": f"{hash_token(TOKEN)} carol user",
                   "BCKD_RECONCILE_INTERVAL_S": "0.5"}))
    st.start()
    st.data, st.teacher = data, teacher
    yield st
    st.stop()


def body(stack: Stack, kind: str, config: str, **extra) -> dict:
    overrides = {"train_cfg.max_epochs": 1, "train_dataloader.batch_size": 4,
                 "val_dataloader.batch_size": 4, "train_dataloader.num_workers": 0,
                 "val_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
                 "val_dataloader.persistent_workers": False}
    return {"kind": kind, "config": config, "data_root": str(stack.data), "experiment": "methods",
            "overrides": overrides, **extra}


def test_crosskd_pkd_bckd_pkd_and_cwd_train_through_the_service(stack):
    c = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {TOKEN}"},
                     timeout=60)
    ckpt = str(stack.teacher)
    ids = {}
    for config in METHODS:
        r = c.post("/v1/jobs", json=body(stack, "distill", config, teacher_ckpt=ckpt,
                                         name=config.split("/")[1]))
        assert r.status_code == 201, r.text
        ids[config] = r.json()["id"]
    jobs = dict(zip(ids, wait_all(c, list(ids.values())), strict=True))
    mlflow = MlflowClient(tracking_uri=stack.mlflow_admin_uri)
    for config, (method, terms) in METHODS.items():
        job = jobs[config]
        assert job["status"] == "SUCCEEDED", (config, job)
        run = mlflow.get_run(job["mlflow_run_id"])
        assert run.data.tags["method"] == method and run.data.params["method"] == method
        for term in terms:
            values = [m.value for m in mlflow.get_metric_history(run.info.run_id, term)]
            assert values and all(v == v and v >= 0 for v in values), (config, term, values)
    # the compare table names each run's method
    runs = c.get("/v1/experiments/methods/compare").json()["runs"]
    assert {r["params"].get("method") for r in runs} == {m for m, _ in METHODS.values()}
