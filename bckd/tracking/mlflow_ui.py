"""Where MLflow's UI opens the experiments the jobs create: on the runs table, with the COCO
metrics people compare as its columns, best mAP first.

MLflow 3.17's UI has two modes, "GenAI" (its default, remembered per browser) and "Model
training". In GenAI mode an experiment opens on an overview of traces, latency and token
charts, and its runs are "Evaluation runs". The query parameter
``workflowType=machine_learning`` opens a page in "Model training" mode, and the UI keeps it
while one navigates, so every link here carries it. The experiment tag
``mlflow.experimentKind = custom_model_development`` says the same of the experiment itself
(its settings show "Machine learning"; the UI reads it where the mode switch is off).

The runs table's columns cannot be named in its URL, whose query holds only the search facets
(``searchFilter``, ``orderByKey``, ...). A view saved by the table's "Share" button can: the
experiment tag ``mlflow.sharedViewState.<key>`` holds the table's state as JSON, and
``?viewStateShareKey=<key>`` opens it (an experiment without that tag would answer with an
error and the GenAI overview, so a link names the view only where the tag is). Jobs save one
such view, :data:`VIEW_KEY`, in every experiment they create or log to
(:func:`tag_experiment`).
"""

from __future__ import annotations

import json

__all__ = ["COLUMNS", "EXPERIMENT_TAGS", "KIND_TAG", "VIEW_KEY", "VIEW_TAG", "column",
           "run_link", "runs_link", "tag_experiment"]

KIND_TAG = "mlflow.experimentKind"
VIEW_KEY = "bckd-runs"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
MODE = "workflowType=machine_learning"
# The metrics of the view, as CocoMetric logs them (0-1; docs/JOBS.md, "MLflow"), then the
# teacher's mAP in a distillation run
COLUMNS = ("coco/bbox_mAP", "coco/bbox_mAP_50", "coco/bbox_mAP_75", "coco/bbox_mAP_s",
           "coco/bbox_mAP_m", "coco/bbox_mAP_l", "teacher/coco/bbox_mAP")


def column(kind: str, key: str) -> str:
    """The UI's id of a runs-table column: ``metrics.`coco/bbox_mAP``` (its canonical sort
    key; ``kind`` is ``metrics``, ``params``, ``tags`` or ``attributes``)."""
    return f"{kind}.`{key}`"


RUNS_VIEW = {"selectedColumns": [column("metrics", key) for key in COLUMNS],
             "orderByKey": column("metrics", COLUMNS[0]), "orderByAsc": False}
EXPERIMENT_TAGS = {KIND_TAG: "custom_model_development", VIEW_TAG: json.dumps(RUNS_VIEW)}


def runs_link(base_url: str, experiment_id: str, view: bool = True) -> str:
    """The experiment's runs table, in the view of :data:`RUNS_VIEW` when ``view`` (the
    experiment has :data:`VIEW_TAG`)."""
    shared = f"&viewStateShareKey={VIEW_KEY}" if view else ""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODE}{shared}"


def run_link(base_url: str, experiment_id: str, run_id: str) -> str:
    """One run's page, its way back leading to the runs table."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODE}"


def tag_experiment(client, experiment) -> None:
    """Give ``experiment`` (an ``mlflow.entities.Experiment`` read by ``client``) the tags of
    :data:`EXPERIMENT_TAGS` it lacks: an experiment made before them gets them at its next
    run, and a kind or view someone set in the UI stays theirs."""
    for key, value in EXPERIMENT_TAGS.items():
        if key not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, key, value)
