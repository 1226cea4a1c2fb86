"""Request and response models: the ``JobCreate`` / ``JobPublic`` families and friends."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.models import JobKind, JobStatus

__all__ = [
    "CompareRow", "ComparePublic", "ConfigPublic", "ConfigUpload", "ConfigsPublic", "Health",
    "JobCreate", "JobLinks", "JobPublic", "JobsPublic", "LogsPublic", "Readiness", "Resources",
]

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
OverrideValue = str | int | float | bool | None | list[str | int | float | bool]


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(1, ge=1, le=256)  # Ray Train workers (DDP ranks)
    cpus_per_worker: float = Field(1.0, gt=0, le=1024)
    gpus_per_worker: float = Field(0.0, ge=0, le=16)


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
    teacher_ckpt: str | None = Field(
        None, max_length=1024, description="distill: checkpoint path or runs:/<run_id>/<path>")
    resources: Resources = Field(default_factory=Resources)
    num_samples: int = Field(1, ge=1, le=1000, description="sweep: number of trials")
    name: Name | None = Field(None, description="work_dirs/<name> and MLflow run name")
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
    attempts: int
    mlflow_run_id: str | None
    entrypoint: str
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    links: JobLinks | None = None
    metrics: dict[str, float] | None = None  # latest MLflow metrics (GET of one job only)


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
    params: dict[str, str]
    metrics: dict[str, float]
    link: str


class ComparePublic(BaseModel):
    experiment: str
    experiment_id: str
    metric_keys: list[str]
    runs: list[CompareRow]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]  # component -> "ok" or the error
