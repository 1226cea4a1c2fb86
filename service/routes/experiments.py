"""The caller's experiments, and the runs of one compared: key params and COCO metrics, with run
links, and the seed statistics of the methods (``bckd.evaluation.stats``)."""

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlalchemy import func, select

from bckd.evaluation.stats import Comparison, RunPoint, compare_methods, parse_seed
from service.deps import CurrentUser, SessionDep, SettingsDep
from service.models import Job
from service.schemas import (
    CompareMethod,
    ComparePair,
    ComparePublic,
    CompareRow,
    ExperimentPublic,
    ExperimentsPublic,
)
from service.tracking import get_tracking

router = APIRouter(prefix="/experiments", tags=["experiments"])

DEFAULT_METRIC = "coco/bbox_mAP"
POINTS = 100.0  # COCO AP in [0, 1] is reported in points, as papers print it


def _points(value: float | None) -> float | None:
    """A COCO metric in points; ``None`` for a missing one or COCO's -1 (undefined: e.g. APs of a
    set without small objects)."""
    return None if value is None or value < 0 else POINTS * value


def _groups(rows: list[dict]) -> dict[str, str | None]:
    """Run id -> the group its value counts in: its method, or ``method (model)`` when runs of
    one method trained different models (a teacher trained plain is no seed of the plain
    student)."""
    models: dict[str | None, set] = {}
    for row in rows:
        models.setdefault(row["params"].get("method"), set()).add(row["params"].get("student"))
    return {row["run_id"]: (method if len(models[method]) <= 1 or method is None
                            else f"{method} ({row['params'].get('student')})")
            for row in rows for method in [row["params"].get("method")]}


def _statistics(rows: list[dict], metric: str) -> Comparison:
    # Tracking.compare lists the runs start_time DESC: the first of a (method, seed) is the latest
    groups = _groups(rows)
    return compare_methods([
        RunPoint(run_id=r["run_id"], method=groups[r["run_id"]],
                 seed=parse_seed(r["params"].get("seed")),
                 value=_points(r["metrics"].get(metric)), status=r["status"]) for r in rows])


@router.get("", response_model=ExperimentsPublic)
def read_experiments(user: CurrentUser, session: SessionDep, settings: SettingsDep
                     ) -> ExperimentsPublic:
    """The experiments the caller's jobs named (an admin: everyone's): the names that
    ``/{experiment}/compare`` takes, each with its MLflow runs table."""
    latest = func.max(Job.created_at)
    query = select(Job.experiment, func.count(), latest).group_by(Job.experiment)
    if not user.admin:
        query = query.where(Job.owner == user.name)
    rows = session.execute(query.order_by(latest.desc())).all()
    tracking = get_tracking(settings.mlflow_uri, settings.mlflow_public_url)
    try:
        links = tracking.experiment_links(name for name, _, _ in rows)
    except Exception as err:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"MLflow: {err}") from err
    data = [ExperimentPublic(name=name, jobs=n, last_submitted=last, link=links.get(name))
            for name, n, last in rows]
    return ExperimentsPublic(data=data, count=len(data))


@router.get("/{experiment}/compare", response_model=ComparePublic)
def compare(experiment: str = Path(max_length=128), *, user: CurrentUser, settings: SettingsDep,
            metric: str = Query(DEFAULT_METRIC, max_length=250,
                                description="the metric of the method statistics")
            ) -> ComparePublic:
    tracking = get_tracking(settings.mlflow_uri, settings.mlflow_public_url)
    try:
        found = tracking.compare(experiment, None if user.admin else user.name)
        link = tracking.experiment_links([experiment]).get(experiment)
    except Exception as err:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"MLflow: {err}") from err
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"experiment {experiment!r} not found; "
                            "yours are listed by GET /v1/experiments")
    exp_id, rows = found
    keys = sorted({k for r in rows for k in r["metrics"]})
    if metric != DEFAULT_METRIC and metric not in keys:  # a typo would give empty statistics
        msg = (f"no run of {experiment!r} has the metric {metric!r}; "
               f"known: {', '.join(keys) or 'none'}")
        # FastAPI's own validation shape, as every other 422 of the API
        raise HTTPException(422, [{"loc": ["query", "metric"], "msg": msg, "type": "value_error"}])
    stats = _statistics(rows, metric)
    runs = [CompareRow(**r, seed=parse_seed(r["params"].get("seed")), use=u.role, note=u.note)
            for r, u in zip(rows, stats.runs, strict=True)]
    return ComparePublic(
        experiment=experiment, experiment_id=exp_id, link=link,
        metric_keys=keys, runs=runs, metric=metric,
        confidence=stats.confidence,
        methods=[CompareMethod(method=m.method, n=m.n, mean=m.mean, std=m.std,
                               seeds=list(m.seeds), run_ids=list(m.run_ids))
                 for m in stats.methods],
        pairs=[ComparePair(a=p.a, b=p.b, n=p.n, seeds=list(p.seeds), mean_diff=p.mean_diff,
                           std_diff=p.std_diff, ci_low=p.ci_low, ci_high=p.ci_high,
                           separated=p.separated) for p in stats.pairs])
