"""The caller's experiments, and the runs of one compared: key params and COCO metrics, with run
links, and the seed statistics of the methods (``bckd.evaluation.stats``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bckd.evaluation.stats import Comparison, RunPoint, compare_methods, parse_seed
from service.adapters.db import Job
from service.adapters.tracking import Tracking
from service.core.auth import Principal
from service.core.errors import Invalid, NotFound, Unavailable

__all__ = ["DEFAULT_METRIC", "Compared", "Experiment", "compare", "experiments"]

DEFAULT_METRIC = "coco/bbox_mAP"
POINTS = 100.0  # COCO AP in [0, 1] is reported in points, as papers print it


@dataclass(frozen=True)
class Experiment:
    name: str
    jobs: int
    last_submitted: datetime
    link: str | None  # its MLflow runs table


@dataclass(frozen=True)
class Compared:
    """An experiment's runs (``Tracking.compare``'s rows, latest first) and their statistics;
    ``stats.runs[i]`` says how ``rows[i]`` counts."""

    experiment_id: str
    link: str | None
    rows: list[dict]
    metric_keys: list[str]
    stats: Comparison


def experiments(session: Session, tracking: Tracking, user: Principal) -> list[Experiment]:
    """The experiments the caller's jobs named (an admin: everyone's), the latest first; each
    links to the caller's own experiment of that name in MLflow (an admin's: the one owner's,
    where one owner has it)."""
    latest = func.max(Job.created_at)
    owners = func.count(func.distinct(Job.owner))
    query = select(Job.experiment, func.count(), latest, func.min(Job.owner), owners
                   ).group_by(Job.experiment)
    if not user.admin:
        query = query.where(Job.owner == user.name)
    rows = session.execute(query.order_by(latest.desc())).all()
    try:
        links = {name: tracking.experiment_link(owner, name)
                 for name, _, _, owner, n_owners in rows if n_owners == 1}
    except Exception as err:
        raise Unavailable(f"MLflow: {err}", 502) from err
    return [Experiment(name, n, last, links.get(name)) for name, n, last, _, _ in rows]


def compare(tracking: Tracking, user: Principal, experiment: str, metric: str) -> Compared:
    """The caller's runs of ``experiment`` (an admin: all) and the statistics of ``metric``;
    :class:`NotFound` for an unknown experiment, :class:`Invalid` for a metric no run has."""
    try:
        found = tracking.compare(experiment, None if user.admin else user.name)
        link = tracking.experiment_link(user.name, experiment)
    except Exception as err:
        raise Unavailable(f"MLflow: {err}", 502) from err
    if found is None:
        raise NotFound(f"experiment {experiment!r} not found; yours are listed by "
                       "GET /v1/experiments")
    exp_id, rows = found
    keys = sorted({k for r in rows for k in r["metrics"]})
    if metric != DEFAULT_METRIC and metric not in keys:  # a typo would give empty statistics
        raise Invalid("metric", f"no run of {experiment!r} has the metric {metric!r}; "
                      f"known: {', '.join(keys) or 'none'}", where="query")
    return Compared(exp_id, link, rows, keys, _statistics(rows, metric))


def _points(value: float | None) -> float | None:
    """A COCO metric in points; ``None`` for a missing one or COCO's -1 (undefined: e.g. APs of a
    set without small objects)."""
    return None if value is None or value < 0 else POINTS * value


def _groups(rows: list[dict]) -> dict[str, str | None]:
    """Run id -> the group its value counts in: its method, or ``method (model)`` when runs of
    one method trained different models (a teacher trained plain is no seed of the plain
    student). The model is named by what tells the method's models apart: of
    ``GFL/GFLHead/ResNet18-w32`` and ``GFL/GFLHead/ResNet18-w16``, ``ResNet18-w32``."""
    models: dict[str | None, set] = {}
    for row in rows:
        models.setdefault(row["params"].get("method"), set()).add(row["params"].get("student"))
    def name(method: str | None, model: str | None) -> str | None:
        if method is None or len(models[method]) <= 1:
            return method
        return f"{method} ({_distinct(model, models[method])})"

    return {row["run_id"]: name(row["params"].get("method"), row["params"].get("student"))
            for row in rows}


def _distinct(model: str | None, models: set) -> str | None:
    """The parts of ``model`` (``/``-separated) that not every one of ``models`` shares."""
    if model is None:
        return None
    split = [str(m).split("/") for m in models if m is not None]
    parts = [part for i, part in enumerate(model.split("/"))
             if not all(len(other) > i and other[i] == part for other in split)]
    return "/".join(parts) or model


def _statistics(rows: list[dict], metric: str) -> Comparison:
    # Tracking.compare lists the runs start_time DESC: the first of a (method, seed) is the latest
    groups = _groups(rows)
    return compare_methods([
        RunPoint(run_id=r["run_id"], method=groups[r["run_id"]],
                 seed=parse_seed(r["params"].get("seed")),
                 value=_points(r["metrics"].get(metric)), status=r["status"]) for r in rows])
