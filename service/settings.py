"""Service configuration, read from ``BCKD_*`` environment variables (pydantic-settings).

Read it through :func:`get_settings` (cached), never through an import-time singleton, so tests
and ``bckd serve`` can set the environment before the first request.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bckd.runtime.cluster import NodeGroup

__all__ = ["PROJECT_ROOT", "Settings", "WorkerGroup", "get_settings"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class WorkerGroup(BaseModel):
    """A group of Ray nodes the cluster's autoscaler adds on demand (a KubeRay worker group):
    what one node has, and how many the group can grow to."""

    model_config = ConfigDict(extra="forbid")

    name: str
    cpus: float = Field(ge=0)
    gpus: float = Field(0.0, ge=0)
    max_replicas: int = Field(ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BCKD_", extra="ignore")

    data_dir: Path = Path(".bckd")  # service state: uploaded configs, durable job logs
    database_url: str = ""  # empty: sqlite:///<data_dir>/service.db
    ray_address: str = "http://127.0.0.1:8265"  # the Ray dashboard (Jobs API) URL
    ray_dashboard_url: str = ""  # public link to the dashboard; empty: ray_address
    mlflow_uri: str = "http://127.0.0.1:5000"  # tracking server the jobs log to
    mlflow_public_url: str = ""  # public link to the MLflow UI; empty: mlflow_uri
    # The MLflow admin login the service sends, in MLflow's own variables (every MLflow client
    # of the API's process reads them): with it, each owner gets a login of their own
    # (service.adapters.mlflow_users); without it, a tracking store that checks no login.
    mlflow_admin_username: str = Field("", validation_alias="MLFLOW_TRACKING_USERNAME")
    mlflow_admin_password: str = Field("", validation_alias="MLFLOW_TRACKING_PASSWORD",
                                       repr=False)
    # The key of the owners' MLflow passwords and of the seals on experiments and shared runs
    # (service.adapters.mlflow_users); empty: the admin password, which then cannot be rotated
    # without unsealing every experiment.
    mlflow_secret: str = Field("", repr=False)
    configs_dir: Path = PROJECT_ROOT / "configs"  # trusted configs shipped with the product
    # Shared paths every request may read (data sets, checkpoints), besides its owner's own
    # directory under data_dir/owners; the rest of data_dir (tokens, database) never.
    data_roots: list[Path] = Field(default_factory=lambda: [PROJECT_ROOT / "data",
                                                            PROJECT_ROOT / "work_dirs"])
    # Checkpoint URL prefixes a request may name besides the model zoo's (mmengine's zoo
    # schemes and https://download.openmmlab.com/): a mirror, or a test's loopback server.
    # Empty by default; each entry should end with "/" so that it names one server.
    checkpoint_url_prefixes: list[str] = Field(default_factory=list)
    tokens_file: Path | None = None  # lines "<sha256-hex> <name> <role>"
    tokens: str = ""  # same lines, ';'-separated, for deployments without a file
    job_python: str = "python"  # interpreter on the cluster's nodes that runs `-m jobs.train`
    job_module: str = ""  # replaces jobs.train / jobs.sweep (tests use a stand-in job)
    max_body_bytes: int = 1_000_000  # larger request bodies are refused with 413
    # A data set's archive (POST /v1/datasets/{name}/archive): the body, and what it unpacks
    # to, each at most this; larger is 413.
    max_upload_bytes: int = Field(2 * 1024**3, ge=1)
    pending_timeout_s: float = 600.0  # a job PENDING this long is stopped and FAILED
    reconcile_interval_s: float = 2.0  # reconciler period; also the log sync period
    stop_wait_s: int = 90  # SIGINT -> SIGKILL grace on cancel; jobs.train checkpoints for <= 60 s
    resubmit_after_s: float = 10.0  # an unconfirmed submission older than this is retried
    lost_grace_s: float = 30.0  # a row Ray has not known this long (since it last did) is LOST
    # A RUNNING job silent this long at least is stalled, and stopped as long again after
    # (service.core.stalls: the timeout grows with the job's own step time); before its first
    # progress line, stall_startup_s.
    stall_floor_s: float = Field(240.0, gt=0)
    stall_startup_s: float = Field(900.0, gt=0)
    run_reconciler: bool = True  # off for an API replica that only serves reads
    # Threads that serve the sync routes (anyio's thread pool, 40 by default in FastAPI).
    request_threads: int = Field(40, ge=1)
    # Threads that hand a new job to Ray right after its POST answered; 0: none, the job waits
    # for the reconciler's next pass (a replica that should never call Ray's submit itself).
    submit_threads: int = Field(4, ge=0)
    # Log streams (GET /v1/jobs/{id}/logs/stream) one owner may hold open at once; one more is
    # 429. A stream holds no thread while it waits, but each polls Ray once a second.
    max_log_streams: int = Field(8, ge=1)
    # POST /v1/jobs one owner may have worked on at once; more wait their turn (service.core.
    # slots), so one owner's burst does not hold up another's submission.
    max_submitting: int = Field(2, ge=1)
    # Per-owner quotas, the defaults of every owner without its own (admins change one owner's
    # with PUT /v1/quotas/{owner}; service.core.queue): admitted (PENDING or RUNNING) jobs,
    # their CPUs, GPUs and reserved memory (empty: no limit but the cluster's), and QUEUED jobs;
    # one more queued job is 429.
    quota_max_running: int = Field(8, ge=0)  # a handful each: no owner holds a small cluster
    quota_max_queued: int = Field(30, ge=1)  # the M: the 31st queued job is refused
    quota_cpus: float | None = Field(None, ge=0)
    quota_gpus: float | None = Field(None, ge=0)
    quota_memory_gb: float | None = Field(None, ge=0)
    # What a job's driver reserves on Ray (submit_job's entrypoint_num_cpus/_memory): Ray starts
    # no driver before that is free. Memory is what a driver costs (about 750 MB measured, issue
    # 31); no CPU by default, so a job's workers may take every CPU of a node (a driver waits
    # on them) and the KubeRay head (num-cpus 0) still runs drivers.
    driver_cpus: float = Field(0.0, ge=0)
    driver_memory_gb: float = Field(1.0, ge=0)
    # Node groups an autoscaler can add (JSON, e.g. the KubeRay manifest's worker groups): a
    # request that fits only on nodes of these is accepted and waits for them, never refused.
    worker_groups: list[WorkerGroup] = Field(default_factory=list)

    def node_groups(self) -> tuple[NodeGroup, ...]:
        return tuple(NodeGroup({"CPU": g.cpus, "GPU": g.gpus}, g.max_replicas, g.name)
                     for g in self.worker_groups)

    # The directories resolved once per Settings (they are read on every request; a resolve is
    # a system call per path component). Settings are never changed after they are read.
    @cached_property
    def state_dir(self) -> Path:
        """``data_dir``, absolute, symlinks resolved."""
        return self.data_dir.resolve()

    @cached_property
    def shared_roots(self) -> tuple[Path, ...]:
        """``data_roots``, absolute, symlinks resolved."""
        return tuple(p.resolve() for p in self.data_roots)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'service.db'}"

    @property
    def db_connections(self) -> int:
        """Connections the database pool keeps: one for each thread that may hold a session
        at once (request threads, submitters, the reconciler), so none waits for one under load
        and none is opened and closed per request."""
        return self.request_threads + self.submit_threads + 1

    @property
    def owners_dir(self) -> Path:
        return self.state_dir / "owners"

    def read_roots(self, owner: str) -> list[Path]:
        """What a request of ``owner`` may read: the shared data roots and its own directory."""
        return [*self.shared_roots, self.owners_dir / owner]

    @model_validator(mode="after")
    def _data_roots_apart_from_state(self) -> Settings:
        # A data root that holds the data dir would expose tokens, the database and every
        # owner's runs to every request; one inside it would mix shared and private files.
        state = self.state_dir
        for root in self.shared_roots:
            if state.is_relative_to(root) or root.is_relative_to(state):
                raise ValueError(f"BCKD_DATA_ROOTS: {root} overlaps the service's data dir "
                                 f"{state}; keep data roots apart from it")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
