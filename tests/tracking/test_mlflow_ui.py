"""MLflow as a newcomer meets it: the experiments jobs create open on the runs table with the
COCO metrics as columns, and a metric COCO could not define is no point in the run.

A real MLflow store throughout (SQLite); the page test serves it with MLflow's own server and
looks at it in headless Chromium, as the API's docs test does (tests/service/test_docs_offline.py).
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
from mlflow.tracking import MlflowClient

from bckd.tracking.mlflow_ui import EXPERIMENT_TAGS, KIND_TAG, VIEW_TAG, column, runs_link
from bckd.tracking.runs import RunWriter, open_run
from service.stack.ports import free_port
from tests.service.test_docs_offline import chromium


def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_jobs_experiment_is_a_machine_learning_one_with_the_coco_view(tmp_path):
    uri = store(tmp_path)
    open_run(uri, "demo", "teacher", {"method": "plain"})
    tags = MlflowClient(uri).get_experiment_by_name("demo").tags
    assert tags[KIND_TAG] == "custom_model_development"
    view = json.loads(tags[VIEW_TAG])
    assert view["selectedColumns"][0] == "metrics.`coco/bbox_mAP`" == view["orderByKey"]
    assert column("metrics", "coco/bbox_mAP_l") in view["selectedColumns"]
    assert view["orderByAsc"] is False


def test_an_older_experiment_gets_the_tags_at_its_next_run_and_keeps_a_kind_set_by_hand(
        tmp_path):
    uri = store(tmp_path)
    client = MlflowClient(uri)
    exp_id = client.create_experiment("older", tags={KIND_TAG: "genai_development"})
    open_run(uri, "older", "next", {})
    tags = client.get_experiment(exp_id).tags
    assert tags[KIND_TAG] == "genai_development"  # someone's choice, kept
    assert tags[VIEW_TAG] == EXPERIMENT_TAGS[VIEW_TAG]


def test_cocos_minus_one_is_not_logged_and_other_values_are(tmp_path):
    uri = store(tmp_path)
    run_id = open_run(uri, "e", "r", {})
    writer = RunWriter(uri, run_id)
    new = writer.log_metrics({"coco/bbox_mAP": 0.31, "coco/bbox_mAP_l": -1.0,
                              "teacher/coco/bbox_mAP_s": -1.0, "coco/bbox_mAP_s": 0.0,
                              "delta": -0.5}, step=10)
    assert new == 3
    client = MlflowClient(uri)
    assert client.get_metric_history(run_id, "coco/bbox_mAP_l") == []
    assert client.get_metric_history(run_id, "teacher/coco/bbox_mAP_s") == []
    assert [m.value for m in client.get_metric_history(run_id, "coco/bbox_mAP_s")] == [0.0]
    assert [m.value for m in client.get_metric_history(run_id, "delta")] == [-0.5]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {proc.returncode}")
            time.sleep(0.5)
        else:
            raise AssertionError("mlflow server never answered")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def page_text(url: str, work) -> str:
    """The visible text of ``url`` once MLflow's app rendered it (15 s of virtual time)."""
    r = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={work}", "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    text = re.sub(r"<script.*?</script>|<style.*?</style>", "", r.stdout, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def test_the_link_opens_the_runs_table_with_the_coco_columns(mlflow_server, tmp_path):
    run_id = open_run(mlflow_server, "newcomer", "demo-bckd-s0", {"method": "bckd"})
    RunWriter(mlflow_server, run_id).log_metrics(
        {"coco/bbox_mAP": 0.075, "coco/bbox_mAP_50": 0.14, "coco/bbox_mAP_l": -1.0,
         "loss_cls": 0.5}, step=100)
    exp_id = MlflowClient(mlflow_server).get_experiment_by_name("newcomer").experiment_id

    page = page_text(runs_link(mlflow_server, exp_id), tmp_path / "a")
    assert "Sort: coco/bbox_mAP" in page, page[:3000]
    assert re.search(r"coco/bbox_mAP coco/bbox_mAP_50 .*demo-bckd-s0 .* 0\.075 0\.14", page), \
        page[:3000]
    assert "Latency" not in page and "Detect Issues" not in page  # no GenAI overview
    # what the experiment's bare link shows instead: the GenAI overview of the issue
    bare = page_text(f"{mlflow_server}/#/experiments/{exp_id}", tmp_path / "b")
    assert "Latency" in bare and "coco/bbox_mAP" not in bare, bare[:3000]
