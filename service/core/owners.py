"""Each owner's files live under their own directory, ``<data_dir>/owners/<owner>/``:

    runs/<name>/        a run's work dir: checkpoints, config, final.pth (the job's work_dir)
    jobs/<job id>.json  the job file the job reads (``python -m jobs.train --spec``)
    teachers/<hash>/    teacher checkpoints downloaded from MLflow for this owner's jobs
    logs/<job id>.log   the durable copy of a job's log

A request reads only under the shared data roots and its owner's directory, and writes only
under its run's directory, so one owner's names, files and checkpoints are never another's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from service.settings import Settings

__all__ = ["OwnerDirs"]


@dataclass(frozen=True)
class OwnerDirs:
    root: Path

    @classmethod
    def of(cls, settings: Settings, owner: str) -> OwnerDirs:
        # owner names are checked as plain path components when tokens are loaded
        return cls(settings.owners_dir / owner)

    def run_dir(self, name: str) -> Path:
        return self.root / "runs" / name

    def job_file(self, job_id: str) -> Path:
        return self.root / "jobs" / f"{job_id}.json"

    def teacher_dir(self, uri: str) -> Path:
        """Where ``runs:/...`` is downloaded: one folder per URI, so a resubmission reuses it
        (and its path, so the run's config hash does not change)."""
        return self.root / "teachers" / hashlib.sha256(uri.encode()).hexdigest()[:16]

    def log_file(self, job_id: str) -> Path:
        return self.root / "logs" / f"{job_id}.log"
