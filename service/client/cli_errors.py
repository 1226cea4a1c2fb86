"""The API's errors in the words of ``bckd jobs``: request fields become the flags that set them,
REST routes the commands that call them.

The API answers every client in REST terms: a refused field by its name in the request
(``detail[].loc``), a hint as the JSON to send (``"teacher_ckpt": "runs:/..."``), a list to
look in as its route (``GET /v1/configs``); ``service.core.hints`` writes them so. A CLI user types
flags and commands, so ``bckd jobs`` rewrites the words it knows before it prints the error:

    HTTP 422: config.model.teacher_ckpt: ... does not exist; give the teacher's weights:
    --teacher-ckpt runs:/<teacher run id>/checkpoints/final.pth (...: `bckd jobs show JOB_ID`)

Each command has its own words (``name`` is ``--name`` to ``submit``, ``NAME`` to ``datasets
register``); a field a command has no flag for keeps its request name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from service.client.api_client import ApiError

__all__ = ["COMPARE", "JOBS", "REGISTER", "ROUTES", "SUBMIT", "cli_error", "cli_field",
           "cli_message"]

# Request field -> the flag (or positional argument) of `bckd jobs submit` that sets it
SUBMIT = {"kind": "KIND", "config": "CONFIG", "config_upload": "--upload",
          "data_root": "--data-root", "dataset": "--dataset", "teacher_ckpt": "--teacher-ckpt",
          "resources.num_workers": "--workers", "resources.cpus_per_worker": "--cpus",
          "resources.gpus_per_worker": "--gpus", "num_samples": "--num-samples",
          "max_failures": "--max-failures", "max_restarts": "--max-restarts",
          "name": "--name", "experiment": "--experiment",
          "Idempotency-Key": "--idempotency-key",
          # a key under one of these: the flag, then the key
          "overrides.": "--set", "config_upload.content.": "--upload"}
REGISTER = {"name": "NAME", "path": "PATH", "description": "--description"}
COMPARE = {"experiment": "EXPERIMENT", "metric": "--metric"}
JOBS = {"status": "--status", "kind": "--kind", "limit": "--limit", "offset": "--offset",
        "job_id": "JOB_ID", "tail": "--tail"}

# A route named in a message -> the command that calls it
ROUTES = {"GET /v1/configs": "bckd jobs configs",
          "GET /v1/datasets": "bckd jobs datasets list",
          "POST /v1/datasets": "bckd jobs datasets register NAME PATH",
          "GET /v1/experiments": "bckd jobs experiments",
          "GET /v1/jobs/{job_id}": "bckd jobs show JOB_ID"}

_SEND = re.compile(r'"([\w.-]+)": "([^"]*)"')  # a hint's JSON: "field": "VALUE"
_PLACES = ("body", "query", "header", "path")  # loc's first part in FastAPI's detail


def cli_field(field: str, words: Mapping[str, str]) -> str:
    """A request field as the command's flag: ``words[field]``, or for a key under a prefix
    of ``words`` (``"overrides."``) its flag and the key (``--set train_cfg.max_epochs``)."""
    if field in words:
        return words[field]
    for prefix, flag in words.items():
        if prefix.endswith(".") and field.startswith(prefix):
            return f"{flag} {field.removeprefix(prefix)}"
    return field


def cli_message(text: str, words: Mapping[str, str]) -> str:
    """``text`` with its routes as commands and its ``"field": "VALUE"`` hints as flags."""
    for route, command in ROUTES.items():
        text = text.replace(route, f"`{command}`")

    def flag(m: re.Match) -> str:
        return f"{words[m[1]]} {m[2]}" if m[1] in words else m[0]

    return _SEND.sub(flag, text)


def cli_error(err: ApiError, words: Mapping[str, str]) -> str:
    """The one line ``bckd`` prints for a refused request: each refused field by its flag."""
    if not isinstance(err.detail, list):
        return f"HTTP {err.status}: {cli_message(str(err.detail), words)}"
    parts = []
    for d in err.detail:
        if not isinstance(d, dict):
            parts.append(cli_message(str(d), words))
            continue
        loc = [str(p) for p in d.get("loc", ())]
        field = ".".join(loc[1:] if loc and loc[0] in _PLACES else loc)
        # the API's own refusals start with their field; pydantic's name none
        msg = str(d.get("msg", "")).removeprefix(f"{field}: ")
        parts.append(f"{cli_field(field, words)}: {cli_message(msg, words)}" if field
                     else cli_message(msg, words))
    return f"HTTP {err.status}: " + "; ".join(parts)
