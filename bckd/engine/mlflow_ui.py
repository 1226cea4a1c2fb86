"""Where MLflow's UI opens the experiments the jobs create: on the runs table, with the COCO
metrics people compare as its columns, best mAP first.

MLflow 3.17 opens an experiment that has no kind on its GenAI overview (traces, latency
charts, an assistant); the experiment tag ``mlflow.experimentKind = custom_model_development``
("Machine learning" in its settings) makes the runs table ("Training runs") its page.

The runs table's columns cannot be named in its URL, whose query holds only the search facets
(``searchFilter``, ``orderByKey``, ``orderByAsc``, ...). A view saved by the table's "Share"
button can: the experiment tag ``mlflow.sharedViewState.<key>`` holds the table's state as
JSON, and ``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens it. Jobs save one such view,
:data:`VIEW_KEY`, in every experiment they create (:func:`tag_experiment`), and the service's
links open it (:func:`runs_link`).
"""

from __future__ import annotations

import json

__all__ = ["COLUMNS", "EXPERIMENT_TAGS", "VIEW_KEY", "column", "runs_link", "tag_experiment"]

KIND_TAG = "mlflow.experimentKind"
VIEW_KEY = "bckd-runs"
# The metrics of the view, as CocoMetric logs them (0-1; docs/JOBS.md, "Metrics"), then the
# teacher's mAP in a distillation run
COLUMNS = ("coco/bbox_mAP", "coco/bbox_mAP_50", "coco/bbox_mAP_75", "coco/bbox_mAP_s",
           "coco/bbox_mAP_m", "coco/bbox_mAP_l", "teacher/coco/bbox_mAP")


def column(kind: str, key: str) -> str:
    """The UI's id of a runs-table column: ``metrics.`coco/bbox_mAP``` (its canonical sort
    key; ``kind`` is ``metrics``, ``params``, ``tags`` or ``attributes``)."""
    return f"{kind}.`{key}`"


RUNS_VIEW = {
    "selectedColumns": [column("tags", "method"), column("params", "randomness.seed"),
                        *(column("metrics", key) for key in COLUMNS)],
    "orderByKey": column("metrics", COLUMNS[0]),
    "orderByAsc": False,
}
EXPERIMENT_TAGS = {KIND_TAG: "custom_model_development",
                   f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(RUNS_VIEW)}


def runs_link(base_url: str, experiment_id: str) -> str:
    """The experiment's runs table in the view of :data:`RUNS_VIEW`."""
    return (f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?viewStateShareKey={VIEW_KEY}")


def tag_experiment(client, experiment) -> None:
    """Give ``experiment`` (an ``mlflow.entities.Experiment`` read by ``client``) the tags of
    :data:`EXPERIMENT_TAGS` it lacks: an experiment made before them gets them at its next
    run, and a kind or view someone set in the UI stays theirs."""
    for key, value in EXPERIMENT_TAGS.items():
        if key not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, key, value)
