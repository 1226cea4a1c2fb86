"""What to send next, appended to a refused request's message in REST terms.

A hint names a request field as the JSON to send (``"teacher_ckpt": "runs:/..."``) and a list
to look in as its route (``GET /v1/configs``), always in these forms: ``bckd jobs`` rewrites
exactly them as its flags and commands (``service.client.cli_errors``), so one message serves both.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from service.core.schemas import JobCreate

__all__ = ["DATA", "TEACHER", "did_you_mean", "policy_hint"]

TEACHER = ("give the teacher's weights: "
           '"teacher_ckpt": "runs:/<teacher run id>/checkpoints/final.pth" (the run id is the '
           "mlflow_run_id of the teacher's finished job: GET /v1/jobs/{job_id})")
DATA = ('name the data: "data_root": "DIR" (a COCO directory under a data root) or '
        '"dataset": "NAME" (GET /v1/datasets); a synthetic set is written on the API\'s '
        "machine by `bckd data synth --out data/synth`")


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``" (did you mean 'a' or 'b'?)"`` for the known words close to ``word``, the closest
    first; else ``""``."""
    close = difflib.get_close_matches(word, list(known), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def policy_hint(key: str, req: JobCreate) -> str:
    """The field that fixes a config policy error at ``key`` when the request left it out: the
    teacher checkpoint of a distillation, or the data set of a config whose default data is
    missing. ``""`` when the request set it (the error is then about what it set)."""
    parts = key.split(".")
    if parts[-1] == "teacher_ckpt" and req.teacher_ckpt is None:
        return "; " + TEACHER
    # only a key that names the data (not, say, a batch size under a dataloader)
    if (parts[0].endswith(("_dataloader", "_evaluator")) and req.data_root is None
            and req.dataset is None
            and (parts[-1] in ("data_root", "ann_file") or "data_prefix" in parts)):
        return "; " + DATA
    return ""
