"""``bckd jobs ...``: a client of the REST API (submit, list, show, logs, cancel, configs,
experiments, compare, mlflow-login, datasets).

    bckd jobs configs
    bckd jobs datasets register shapes data/shapes
    bckd jobs submit train synth/gfl_teacher --dataset shapes --set train_cfg.max_epochs=2 --follow
    bckd jobs list --status RUNNING
    bckd jobs logs JOB_ID --follow
    bckd jobs experiments
    bckd jobs compare bckd

The API's URL and token come from ``--url``/``BCKD_URL`` and ``--token``/``BCKD_TOKEN``, else
the token file ``bckd serve`` writes (``.bckd/admin_token``). A refused request is printed in
this command's words: its fields as the flags that set them (``service.client.cli_errors``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bckd.config.kinds import JobKind
from bckd.runtime.cluster import GPUS_PER_WORKER
from service.client.cli_errors import COMPARE, JOBS, REGISTER, SUBMIT, cli_error
from service.client.compare_text import compare_report, compare_table
from service.client.lines import (
    NAMING,
    dataset_lines,
    datasets_table,
    experiment_lines,
    mlflow_login_lines,
)

__all__ = ["add_parser", "compare_report", "compare_table"]


def _client(args: argparse.Namespace):
    from service.client.api_client import Client

    token = args.token or os.environ.get("BCKD_TOKEN")
    if not token:
        path = Path(args.token_file)
        if not path.exists():
            raise ValueError(f"no token: pass --token, set BCKD_TOKEN or create {path}")
        token = path.read_text().strip()
    return Client(args.url, token)


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _print(obj) -> None:
    print(json.dumps(obj, indent=2))


def _follow(client, job_id: str) -> int:
    """Stream the job's log until it ends, then its status line; 0 only when it SUCCEEDED."""
    for chunk in client.follow(job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    # the stream ends with the job; a stream cut short (proxy, restart) waits here instead
    job = client.wait([job_id], poll_s=2.0)[job_id]
    run = f"(MLflow run {job['mlflow_run_id']})" if job.get("mlflow_run_id") else ""
    print(f"\njob {job_id}: {job['status']} {run} {job.get('message') or ''}".rstrip())
    return 0 if job["status"] == "SUCCEEDED" else 1


def _submit(args: argparse.Namespace) -> int:
    client = _client(args)
    body: dict = {"kind": args.kind, "experiment": args.experiment,
                  "resources": {"num_workers": args.workers, "cpus_per_worker": args.cpus,
                                "gpus_per_worker": args.gpus}}
    if args.upload is not None:
        fmt = "json" if args.upload.suffix == ".json" else "yaml"
        body["config_upload"] = {"format": fmt, "content": args.upload.read_text()}
    else:
        body["config"] = args.config
    overrides = {}
    for item in args.set:
        key, sep, val = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = _value(val)
    body["overrides"] = overrides
    for key in ("data_root", "dataset", "teacher_ckpt", "name"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    for key in ("num_samples", "max_failures", "max_restarts"):  # unset: the API's defaults
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    job = client.submit(body, args.idempotency_key)
    waits = f"; waits for: {job['queue_reason']}" if job.get("queue_reason") else ""
    print(f"job {job['id']}: {_status(job)}{waits}  ({client.job_page(job['id'])})", flush=True)
    return _follow(client, job["id"]) if args.follow else 0


def _list(args: argparse.Namespace) -> int:
    page = _client(args).list(status=args.status, kind=args.kind, limit=args.limit,
                              offset=args.offset)
    print(f"{'ID':24} {'KIND':8} {'STATUS':10} {'NAME':28} CREATED")
    for j in page["data"]:
        print(f"{j['id']:24} {j['kind']:8} {_status(j):10} {j['name'][:28]:28} "
              f"{j['created_at'][:19]}")
    print(f"({len(page['data'])} of {page['count']})")
    if any(j.get("stalled") for j in page["data"]):
        print("* stalled: no progress past its stall timeout (bckd jobs show ID: since when)")
    return 0


def _status(job: dict) -> str:
    """``RUNNING``, ``RUNNING*`` (stalled), ``QUEUED#3`` (third to be admitted)."""
    place = f"#{job['queue_position']}" if job.get("queue_position") else ""
    return job["status"] + place + ("*" if job.get("stalled") else "")


def _show(args: argparse.Namespace) -> int:
    _print(_client(args).get(args.job_id))
    return 0


def _logs(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.follow:
        return _follow(client, args.job_id)
    print(client.logs(args.job_id, args.tail)["text"])
    return 0


def _cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job_id)
    print(f"job {job['id']}: {job['status']} (cancel requested)")
    return 0


def _configs(args: argparse.Namespace) -> int:
    page = _client(args).configs()
    print(f"{'NAME':28} {'KIND':8} PATH")
    for c in page["data"]:
        print(f"{c['name']:28} {'distill' if c['distill'] else 'train':8} {c['path']}")
    print(f"({page['count']} configs: `bckd jobs submit KIND NAME`)")
    return 0


def _experiments(args: argparse.Namespace) -> int:
    print("\n".join([*experiment_lines(_client(args).experiments()), NAMING]))
    return 0


def _compare(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.experiment is None:
        raise ValueError("\n".join(["which experiment? `bckd jobs compare EXPERIMENT`, one "
                                     "of yours:", *experiment_lines(client.experiments()),
                                     NAMING]))
    cmp = client.compare(args.experiment, metric=args.metric)
    if args.json:
        _print(cmp)
    else:
        print(compare_report(cmp))
    return 0


def _mlflow_login(args: argparse.Namespace) -> int:
    print("\n".join(mlflow_login_lines(_client(args).mlflow_login(), args.env)))
    return 0


def _register_dataset(args: argparse.Namespace) -> int:
    body = {"name": args.name, "path": args.path, "description": args.description}
    row = _client(args).register_dataset({k: v for k, v in body.items() if v is not None})
    print("\n".join(dataset_lines(row)))
    return 0


def _list_datasets(args: argparse.Namespace) -> int:
    print("\n".join(datasets_table(_client(args).datasets())))
    return 0


def _reachable(fn, words: dict[str, str] = JOBS):
    """Turn a connection failure into one line naming the URL, and a refusal into one line in
    the command's ``words`` (``service.client.cli_errors``); ``bckd`` prints ValueErrors."""

    def run(args: argparse.Namespace) -> int:
        import httpx

        from service.client.api_client import ApiError

        try:
            return fn(args)
        except httpx.TransportError as err:
            raise ValueError(f"cannot reach the API at {args.url}: {err}") from err
        except ApiError as err:
            raise ValueError(cli_error(err, words)) from None

    return run


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``jobs`` and its commands on the ``bckd`` parser's subcommands."""
    jobs = sub.add_parser("jobs", help="submit and follow jobs through the REST API")
    jobs.add_argument("--url", default=os.environ.get("BCKD_URL", "http://127.0.0.1:8000"),
                      help="API URL (env BCKD_URL)")
    jobs.add_argument("--token", default=None, help="API token (env BCKD_TOKEN)")
    jobs.add_argument("--token-file", default=".bckd/admin_token",
                      help="read the token here when neither is given")
    js = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")

    p = js.add_parser("submit", help="submit a job")
    p.add_argument("kind", choices=[str(k) for k in JobKind])
    p.add_argument("config", nargs="?", help="a name from the configs list")
    p.add_argument("--upload", type=Path, default=None, help="a YAML/JSON config file instead")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (value parsed as JSON when it is JSON)")
    p.add_argument("--data-root", default=None, help="a COCO set's directory (unregistered)")
    p.add_argument("--dataset", default=None,
                   help="a registered data set: NAME, or OWNER/NAME of one shared with you")
    p.add_argument("--teacher-ckpt", default=None, help="path or runs:/<run_id>/<path>")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs per worker")
    p.add_argument("--gpus", type=int, default=0, choices=GPUS_PER_WORKER,
                   help="GPUs per worker: 0, or 1 (more GPUs: more --workers)")
    p.add_argument("--num-samples", type=int, default=None, help="sweep trials")
    p.add_argument("--max-failures", type=int, default=None, metavar="N",
                   help="worker failures inside the run to recover from (0)")
    p.add_argument("--max-restarts", type=int, default=None, metavar="N",
                   help="resubmissions after the job is LOST or FAILED for an infrastructure "
                   "reason; it resumes from its last checkpoint (0)")
    p.add_argument("--name", default=None)
    p.add_argument("--experiment", default="bckd",
                   help="the MLflow experiment the run goes in, the name `compare` takes")
    p.add_argument("--idempotency-key", default=None)
    p.add_argument("--follow", action="store_true", help="stream the log until the job ends")
    p.set_defaults(handler=_reachable(_submit, SUBMIT))

    p = js.add_parser("list", help="list jobs")
    p.add_argument("--status", default=None)
    p.add_argument("--kind", default=None)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(handler=_reachable(_list))

    for name, fn, text in (("show", _show, "one job as JSON"), ("cancel", _cancel, "stop a job")):
        p = js.add_parser(name, help=text)
        p.add_argument("job_id")
        p.set_defaults(handler=_reachable(fn))

    p = js.add_parser("logs", help="a job's log")
    p.add_argument("job_id")
    p.add_argument("--tail", type=int, default=200)
    p.add_argument("--follow", action="store_true")
    p.set_defaults(handler=_reachable(_logs))

    p = js.add_parser("compare", help="the MLflow runs of an experiment, side by side, with "
                      "per method mean ± std and paired differences by seed")
    p.add_argument("experiment", nargs="?", default=None,
                   help="a name from `bckd jobs experiments` (a job's --experiment)")
    p.add_argument("--metric", default=None,
                   help="the metric of the statistics (default coco/bbox_mAP)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_reachable(_compare, COMPARE))

    p = js.add_parser("configs", help="the config names `submit` takes")
    p.set_defaults(handler=_reachable(_configs))
    p = js.add_parser("experiments", help="your experiments: the names `compare` takes")
    p.set_defaults(handler=_reachable(_experiments))

    p = js.add_parser("mlflow-login", help="your own MLflow login: it opens your experiments")
    p.add_argument("--env", action="store_true", help="as `export` lines of MLflow's variables: "
                   'eval "$(bckd jobs mlflow-login --env)"')
    p.set_defaults(handler=_reachable(_mlflow_login))

    p = js.add_parser("datasets", help="register and list data sets")
    ds = p.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")
    p = ds.add_parser("register", help="check a COCO set on the API's machine and name it")
    p.add_argument("name")
    p.add_argument("path", help="the set's directory under a data root of the API "
                   "(annotations/instances_{train,val}.json, {train,val}/); a relative one "
                   "is taken from the API's checkout")
    p.add_argument("--description", default=None)
    p.set_defaults(handler=_reachable(_register_dataset, REGISTER))
    p = ds.add_parser("list", help="your data sets and those shared with you")
    p.set_defaults(handler=_reachable(_list_datasets))
