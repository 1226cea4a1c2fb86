"""The end of a sweep: per-trial rows, the best trial, and the parent run's tags, metrics,
artifacts and end status; the table printed on the driver's console."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bckd.tune.spec import SweepResult, SweepSpec

__all__ = ["summarize"]


def _best_value(values, mode: str) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    return max(finite) if mode == "max" else min(finite)


def _trial_best(client, run_id: str | None, frame, metric: str, mode: str) -> float | None:
    """A trial's best metric at any epoch, from its child run's history (what the MLflow UI
    shows; it can hold one evaluation more than Tune saw, when the trial finished an epoch while
    the scheduler was stopping it), else from what the trial reported to Tune."""
    if run_id is not None:
        best = _best_value([m.value for m in client.get_metric_history(run_id, metric)], mode)
        if best is not None:
            return best
    return _best_value(frame[metric] if frame is not None and metric in frame else [], mode)


def summarize(grid, spec: SweepSpec, params: tuple, max_epochs: int, name: str,
              sweep_dir: Path, parent_id: str, tracking_uri: str, writer) -> SweepResult:
    """Per-trial rows, best trial, the parent's tags/metrics/artifacts and its end status."""
    from mlflow.tracking import MlflowClient

    from bckd.config.loader import load_config, write_config_json
    from bckd.tune.plot import plot_weights
    from bckd.tune.progress import format_table
    from bckd.tune.tracking import child_runs, reconcile_children
    from bckd.tune.trial import TRIAL_TAG, outcome

    keys = [p.key for p in params]
    client = MlflowClient(tracking_uri)
    runs = {r.data.tags.get(TRIAL_TAG): r.info.run_id for r in child_runs(client, parent_id)}
    trials = []
    for trial_result in grid:
        metrics = trial_result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(trial_result.path).name
        trials.append({
            "trial_id": trial_id,
            "outcome": outcome(metrics, max_epochs, error=trial_result.error is not None),
            "config": {k: trial_result.config.get(k) for k in keys},
            "best": _trial_best(client, runs.get(trial_id), trial_result.metrics_dataframe,
                                spec.metric, spec.mode),
            "epochs": metrics.get("epoch", 0),
            "run_id": runs.get(trial_id),
            "error": None if trial_result.error is None else str(trial_result.error)[:500],
        })
    trials.sort(key=lambda t: t["trial_id"])
    unfinished = [t for t in trials if t["outcome"] == "UNFINISHED"]
    reconcile_children(tracking_uri, parent_id, {t["trial_id"]: t["outcome"] for t in trials})

    scored = [t for t in trials if t["best"] is not None]
    best = (max if spec.mode == "max" else min)(scored, key=lambda t: t["best"]) \
        if scored else None
    status = "KILLED" if unfinished else (
        "FAILED" if all(t["outcome"] == "ERROR" for t in trials) else "FINISHED")
    result = SweepResult(name, str(sweep_dir), parent_id, status, trials=trials)
    if best is not None:
        result.best_trial_id, result.best_run_id = best["trial_id"], best["run_id"]
        result.best_value, result.best_config = best["best"], best["config"]
        writer.log_metrics({f"best/{spec.metric}": best["best"]}, step=len(trials))
        writer.set_tags({"best_trial_id": best["trial_id"], "best_run_id": best["run_id"] or "",
                         **{f"best.{k}": v for k, v in best["config"].items()}})
        best_json = sweep_dir / "best_config.json"
        best_json.write_text(json.dumps(
            {"trial_id": best["trial_id"], "run_id": best["run_id"], spec.metric: best["best"],
             "cfg_options": best["config"]}, indent=2) + "\n")
        writer.log_artifact(best_json)
        best_cfg = load_config(spec.config, {**spec.cfg_options, **best["config"]}, spec.policy)
        # JSON, not Config.dump's Python text: a key holding a quote would be code there
        writer.log_artifact(write_config_json(best_cfg, sweep_dir / "best_trial_config.json"))
    plot = plot_weights(trials, params, spec.metric, sweep_dir / "weights_vs_metric.png",
                        best_trial_id=result.best_trial_id)
    writer.log_artifact(plot, "plots")
    table = sweep_dir / "trials.json"
    table.write_text(json.dumps(trials, indent=2, default=str) + "\n")
    writer.log_artifact(table)
    counts = {o: sum(t["outcome"] == o for t in trials)
              for o in ("COMPLETED", "STOPPED", "ERROR", "UNFINISHED")}
    writer.log_metrics({f"trials/{o.lower()}": n for o, n in counts.items()}, step=len(trials))
    writer.terminate(status)

    columns = ["trial_id", "outcome", *keys, "epochs", "best", "run_id"]
    rows = [{**t, **t["config"]} for t in trials]
    print(f"bckd: sweep {name} {status}: {counts}\n{format_table(rows, columns)}", flush=True)
    if best is not None:
        print(f"bckd: best trial {best['trial_id']} {spec.metric}={best['best']:.4f} "
              f"run={best['run_id']} cfg_options={best['config']}", flush=True)
    return result
