"""Ray Tune's search algorithm and trial scheduler for a sweep, built from its spec."""

from __future__ import annotations

from bckd.tune.spec import SweepSpec

__all__ = ["check_search", "scheduler", "searcher"]


def check_search(spec: SweepSpec, params: tuple) -> None:
    """Refuse what the chosen search cannot do before any trial starts."""
    if spec.search != "optuna":
        return
    if any(p.kind == "grid" for p in params):
        raise ValueError("--search optuna cannot sweep a grid entry; use choice, or --search "
                         "random")
    try:
        import optuna  # noqa: F401
    except ImportError as err:
        raise ValueError(f"--search optuna needs the optuna package ({err})") from None


def searcher(spec: SweepSpec, max_concurrent: int):
    """Random or Optuna search, limited to ``max_concurrent`` trials at once (Tune ignores
    ``max_concurrent_trials`` for a BasicVariantGenerator passed in, so it is set here)."""
    if spec.search == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=spec.seed, max_concurrent=max_concurrent)
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    return ConcurrencyLimiter(OptunaSearch(seed=spec.seed), max_concurrent=max_concurrent)


def scheduler(spec: SweepSpec, max_epochs: int):
    """FIFO, or ASHA over the epochs the job reports (``ValueError`` if its grace period is
    past the last epoch)."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    if spec.scheduler == "fifo":
        return FIFOScheduler()
    if spec.grace_period > max_epochs:
        raise ValueError(f"--grace-period {spec.grace_period} is past the config's last epoch "
                         f"(train_cfg.max_epochs={max_epochs})")
    # Time is the epoch the job reports (it continues across a resume, unlike Tune's
    # training_iteration). stop_last_trials=False: a trial that reaches the last epoch ends
    # by itself, so its job finishes (exports its checkpoints, ends its run FINISHED) instead
    # of being killed by the scheduler at the same moment.
    return AsyncHyperBandScheduler(time_attr="epoch", max_t=max_epochs,
                                   grace_period=spec.grace_period,
                                   reduction_factor=spec.reduction_factor,
                                   stop_last_trials=False)
