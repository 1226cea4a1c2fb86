"""Request and response models: the ``JobCreate`` / ``JobPublic`` families and friends."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, computed_field

from bckd.config.kinds import JobKind
from bckd.runtime.cluster import GPUS_PER_WORKER
from service.core.states import JobStatus

__all__ = [
    "CompareMethod", "ComparePair", "CompareRow", "ComparePublic", "ConfigPublic",
    "ConfigUpload", "ConfigsPublic", "DataSetCreate", "DataSetPublic", "DataSetSharing",
    "DataSetSummaryPublic", "DataSetsPublic", "Health", "JobCreate", "JobLinks", "JobPublic",
    "JobsPublic", "LogsPublic", "Readiness", "Resources",
]

# A name of a run, an experiment, an owner or a data set: a plain path component (it names
# directories), letters, digits, '_', '-' or '.', starting with a letter or digit, 64 at most.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
Name = Annotated[str, Field(pattern=f"^{NAME_PATTERN}$")]
OverrideValue = JsonValue  # any JSON: the config policy judges the merged config


DataSetRef = Annotated[str, Field(pattern=f"^({NAME_PATTERN}/)?{NAME_PATTERN}$")]  # [owner/]name


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(1, ge=1, le=256)  # Ray Train workers (DDP ranks)
    cpus_per_worker: float = Field(1.0, gt=0, le=1024)
    # 0 or 1: a worker is one training process on one GPU; more GPUs are more workers
    gpus_per_worker: int = Field(0, ge=min(GPUS_PER_WORKER), le=max(GPUS_PER_WORKER))


class ConfigUpload(BaseModel):
    """A config as data, never as Python: it is parsed, checked and stored as JSON."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["yaml", "json"]
    content: str = Field(max_length=500_000)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "kind": "train", "config": "synth/gfl_teacher", "overrides": {"train_cfg.max_epochs": 2},
        "resources": {"num_workers": 1, "cpus_per_worker": 1}}]})

    kind: JobKind
    config: str | None = Field(None, max_length=256,
                               description="a name from GET /v1/configs, e.g. synth/gfl_teacher")
    config_upload: ConfigUpload | None = None
    overrides: dict[Annotated[str, Field(max_length=200)], OverrideValue] = Field(
        default_factory=dict, max_length=200, description="dotted config key -> value")
    data_root: str | None = Field(None, max_length=1024,
                                  description="COCO-layout data set dir, under a data root")
    dataset: DataSetRef | None = Field(
        None, description="a registered data set (GET /v1/datasets): your own name, or "
        "owner/name of one shared with you; instead of data_root")
    teacher_ckpt: str | None = Field(
        None, max_length=1024, description="distill: checkpoint path or runs:/<run_id>/<path>")
    resources: Resources = Field(default_factory=Resources)
    num_samples: int = Field(1, ge=1, le=1000, description="sweep: number of trials")
    max_failures: int = Field(0, ge=0, le=100, description="worker failures inside the run "
                              "(a sweep: inside each trial's run) that Ray Train recovers from "
                              "by restarting the workers from the last checkpoint")
    max_restarts: int = Field(0, ge=0, le=100, description="times the service resubmits the "
                              "job, under its own name so that it resumes from its last "
                              "checkpoint, after it was LOST or FAILED for an infrastructure "
                              "reason; a failure the job reports as its own (config, data, "
                              "training) is never retried")
    name: Name | None = Field(None, description="the run's name, unique per owner: its "
                              "directory and its MLflow run name; the same name with the same "
                              "config resumes the run")
    experiment: Name = "bckd"


class JobLinks(BaseModel):
    ray_dashboard: str
    mlflow_run: str | None = None


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    owner: str
    kind: JobKind
    name: str
    experiment: str
    config: str
    status: JobStatus
    message: str | None
    attempts: int  # submissions to Ray tried, over all restarts
    restarts: int  # times the job was resubmitted after LOST or an infrastructure FAILED
    max_restarts: int
    mlflow_run_id: str | None
    entrypoint: str
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    links: JobLinks | None = None
    # the run's latest MLflow metrics as the reconciler last read them (None: not yet)
    metrics: dict[str, float] | None = None
    # RUNNING without progress past its stall timeout since this time (None: not stalled);
    # progress_at: when the service last saw the job's progress lines grow (service.core.stalls)
    stalled_at: datetime | None = None
    progress_at: datetime | None = None
    # QUEUED: its place in the fair order (1: admitted next) and what it waits for, as the last
    # admission pass saw them (service.core.queue); None once admitted
    queue_position: int | None = None
    queue_reason: str | None = None

    @computed_field
    @property
    def stalled(self) -> bool:
        """RUNNING, with no progress past its stall timeout (``stalled_at`` says since when)."""
        return self.stalled_at is not None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int  # all matches, not just this page
    limit: int
    offset: int


class LogsPublic(BaseModel):
    job_id: str
    source: Literal["ray", "archive", "none"]  # archive: the service's durable copy
    text: str
    truncated: bool


class ConfigPublic(BaseModel):
    name: str  # what JobCreate.config takes
    path: str
    distill: bool  # model.type is BCKDDetector: submit as kind distill


class ConfigsPublic(BaseModel):
    data: list[ConfigPublic]
    count: int


class CompareRow(BaseModel):
    run_id: str
    run_name: str | None
    status: str
    job_id: str | None
    params: dict[str, str]  # the run tags method/student/teacher/dataset, model, epochs, seed...
    metrics: dict[str, float]  # as logged: COCO AP in [0, 1], -1 where COCO finds it undefined
    link: str
    seed: int | None = None  # cfg.randomness.seed; None: no fixed seed
    # What the statistics did with the run (bckd.evaluation.stats): paired and unpaired runs
    # count in their method's mean, only paired ones in a difference, excluded ones in nothing.
    use: Literal["paired", "unpaired", "excluded"] = "excluded"
    note: str | None = None  # why unpaired or excluded


class CompareMethod(BaseModel):
    """One method over its counted runs (one per seed), in the unit of ``ComparePublic.unit``."""

    method: str
    n: int  # runs counted: the latest FINISHED run of each seed, plus unseeded FINISHED runs
    mean: float
    std: float | None  # sample standard deviation (n - 1); None with one run
    seeds: list[int]
    run_ids: list[str]


class ComparePair(BaseModel):
    """``a - b`` paired by seed: the mean of the per-seed differences and its Student-t
    interval at ``ComparePublic.confidence`` (t quantile with n - 1 degrees of freedom)."""

    a: str
    b: str
    n: int  # shared seeds
    seeds: list[int]
    mean_diff: float
    std_diff: float | None  # sample std of the per-seed differences; None with one seed
    ci_low: float | None  # None with fewer than 2 shared seeds: the interval is undefined
    ci_high: float | None
    separated: bool | None  # the interval excludes 0; None when it is undefined


class ComparePublic(BaseModel):
    experiment: str
    experiment_id: str
    link: str | None = None  # MLflow's runs table of the experiment, COCO metrics as columns
    metric_keys: list[str]
    runs: list[CompareRow]  # newest first
    metric: str = "coco/bbox_mAP"  # the metric of methods and pairs
    unit: str = "COCO points (x100)"
    confidence: float = 0.95
    methods: list[CompareMethod] = []  # highest mean first
    pairs: list[ComparePair] = []  # every two methods sharing a seed, a before b in methods


class ExperimentPublic(BaseModel):
    """An experiment the caller's jobs named (``JobCreate.experiment``)."""

    name: str
    jobs: int  # the caller's jobs in it (an admin: everyone's)
    last_submitted: datetime
    link: str | None  # MLflow's runs table; None until a run of it exists


class ExperimentsPublic(BaseModel):
    data: list[ExperimentPublic]  # the latest submission first
    count: int


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]  # component -> "ok" or the error


class DataSetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "synth", "path": "data/synth", "description": "8 shapes x textures"}]})

    name: Name
    path: str = Field(max_length=1024, description="the set's directory, under a shared data "
                      "root: annotations/instances_{train,val}.json and {train,val}/ images")
    description: str | None = Field(None, max_length=2000)


class SplitSummaryPublic(BaseModel):
    ann_file: str
    image_dir: str
    images: int
    boxes: int
    boxes_per_class: dict[str, int]  # class name -> boxes, in the file's category order
    sizes: dict[str, int]  # COCO's small / medium / large, by box side sqrt(w * h) in px
    size_bins: dict[str, int]  # "0-8", "8-16", ..., "256+" px


class DataSetSummaryPublic(BaseModel):
    """What ``bckd data check`` found (bckd.data.check.DataSetSummary)."""

    root: str
    classes: list[str]  # names in the file's order (mmdet's labels): metainfo.classes
    category_ids: list[int]
    splits: dict[str, SplitSummaryPublic]


class DataSetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    owner: str
    path: str
    description: str | None
    shared: bool
    created_at: datetime
    summary: DataSetSummaryPublic


class DataSetsPublic(BaseModel):
    data: list[DataSetPublic]
    count: int


class DataSetSharing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shared: bool
