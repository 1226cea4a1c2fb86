"""What a job is and what its config builds: the job kinds, and whether a config distills.

The one copy of each rule: the REST API's ``kind``, the job file, the command line of a job
(``service.adapters.entrypoints``) and the ``bckd jobs submit`` choices all read
:class:`JobKind`; every "is this a distillation config" asks :func:`is_distillation`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

__all__ = ["DISTILLER", "JobKind", "is_distillation"]

DISTILLER = "BCKDDetector"  # the registered type of every distillation model (bckd.distill)


class JobKind(enum.StrEnum):
    train = "train"  # one detector, on its own
    distill = "distill"  # a student from a teacher: a DISTILLER config
    sweep = "sweep"  # Ray Tune over a config's values (jobs.sweep)


def is_distillation(model: Any) -> bool:
    """Whether a config's ``model`` (a mapping, or whatever a config holds there) is a
    distillation model, a student with its teacher."""
    return isinstance(model, Mapping) and model.get("type") == DISTILLER
