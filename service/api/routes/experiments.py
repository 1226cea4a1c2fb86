"""The caller's experiments, and the runs of one compared: key params and COCO metrics, with run
links, and the seed statistics of the methods (``bckd.evaluation.stats``)."""

from fastapi import APIRouter, Path, Query

from bckd.evaluation.stats import parse_seed
from service.api.deps import CurrentUser, SessionDep, TrackingDep
from service.core import compare as comparing
from service.core.compare import DEFAULT_METRIC
from service.core.schemas import (
    CompareMethod,
    ComparePair,
    ComparePublic,
    CompareRow,
    ExperimentPublic,
    ExperimentsPublic,
)

router = APIRouter(prefix="/experiments", tags=["experiments"])


@router.get("", response_model=ExperimentsPublic)
def read_experiments(user: CurrentUser, session: SessionDep, tracking: TrackingDep
                     ) -> ExperimentsPublic:
    """The experiments the caller's jobs named (an admin: everyone's): the names that
    ``/{experiment}/compare`` takes, each with its MLflow runs table."""
    data = [ExperimentPublic(name=e.name, jobs=e.jobs, last_submitted=e.last_submitted,
                             link=e.link) for e in comparing.experiments(session, tracking, user)]
    return ExperimentsPublic(data=data, count=len(data))


@router.get("/{experiment}/compare", response_model=ComparePublic)
def compare(experiment: str = Path(max_length=128), *, user: CurrentUser, tracking: TrackingDep,
            metric: str = Query(DEFAULT_METRIC, max_length=250,
                                description="the metric of the method statistics")
            ) -> ComparePublic:
    found = comparing.compare(tracking, user, experiment, metric)
    stats = found.stats
    runs = [CompareRow(**r, seed=parse_seed(r["params"].get("seed")), use=u.role, note=u.note)
            for r, u in zip(found.rows, stats.runs, strict=True)]
    return ComparePublic(
        experiment=experiment, experiment_id=found.experiment_id, link=found.link,
        metric_keys=found.metric_keys, runs=runs, metric=metric,
        confidence=stats.confidence,
        methods=[CompareMethod(method=m.method, n=m.n, mean=m.mean, std=m.std,
                               seeds=list(m.seeds), run_ids=list(m.run_ids))
                 for m in stats.methods],
        pairs=[ComparePair(a=p.a, b=p.b, n=p.n, seeds=list(p.seeds), mean_diff=p.mean_diff,
                           std_diff=p.std_diff, ci_low=p.ci_low, ci_high=p.ci_high,
                           separated=p.separated) for p in stats.pairs])
