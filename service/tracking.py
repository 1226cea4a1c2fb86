"""MLflow reads and the few writes the service does (tagging, terminating a lost job's run)."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

__all__ = ["Tracking", "get_tracking"]

# What a comparison shows of each run: run tags set by jobs.train, then a few flat params.
KEY_TAGS = ("method", "student", "teacher", "dataset")
KEY_PARAMS = {"model": "cfg.model.type", "epochs": "cfg.train_cfg.max_epochs",
              "lr": "cfg.optim_wrapper.optimizer.lr", "config": "config"}


class Tracking:
    def __init__(self, uri: str, public_url: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.public_url = (public_url or uri).rstrip("/")
        self.client = MlflowClient(tracking_uri=uri)

    def run_link(self, experiment_id: str, run_id: str) -> str:
        return f"{self.public_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def run(self, run_id: str):
        return self.client.get_run(run_id)

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        return {k: v for k, v in self.client.get_run(run_id).data.metrics.items()
                if math.isfinite(v)}

    def tag_job(self, run_id: str, job_id: str) -> None:
        self.client.set_tag(run_id, "bckd.job_id", job_id)

    def terminate(self, run_id: str, status: str = "KILLED") -> None:
        run = self.client.get_run(run_id)
        if run.info.status in ("RUNNING", "SCHEDULED"):
            self.client.set_terminated(run_id, status=status)

    def download(self, uri: str, dst: Path) -> Path:
        import mlflow.artifacts

        dst.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst),
                                                        tracking_uri=self.uri))

    def compare(self, experiment: str) -> tuple[str, list[dict]] | None:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        runs = self.client.search_runs([exp.experiment_id], max_results=500,
                                       order_by=["attributes.start_time DESC"])
        rows = []
        for r in runs:
            metrics = {k: v for k, v in r.data.metrics.items()
                       if ("mAP" in k or k.startswith("coco/")) and math.isfinite(v)}
            params = {k: r.data.tags[k] for k in KEY_TAGS if k in r.data.tags}
            params |= {k: r.data.params[p] for k, p in KEY_PARAMS.items() if p in r.data.params}
            rows.append(dict(run_id=r.info.run_id, run_name=r.info.run_name,
                             status=r.info.status, job_id=r.data.tags.get("bckd.job_id"),
                             params=params, metrics=metrics,
                             link=self.run_link(exp.experiment_id, r.info.run_id)))
        return exp.experiment_id, rows

    def ping(self) -> None:
        self.client.search_experiments(max_results=1)


@lru_cache
def get_tracking(uri: str, public_url: str) -> Tracking:
    return Tracking(uri, public_url)
