"""``bckd jobs ...``: a client of the REST API (submit, list, show, logs, cancel, compare).

    bckd jobs submit train synth/gfl_teacher --set train_cfg.max_epochs=2 --follow
    bckd jobs list --status RUNNING
    bckd jobs logs JOB_ID --follow
    bckd jobs compare bckd

The API's URL and token come from ``--url``/``BCKD_URL`` and ``--token``/``BCKD_TOKEN``, else
the token file ``bckd serve`` writes (``.bckd/admin_token``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["add_parser", "compare_report", "compare_table"]


def _client(args: argparse.Namespace):
    from service.client import Client

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
    print(f"\njob {job_id}: {job['status']} {job.get('message') or ''}".rstrip())
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
    for key in ("data_root", "teacher_ckpt", "name"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.num_samples is not None:
        body["num_samples"] = args.num_samples
    job = client.submit(body, args.idempotency_key)
    print(f"job {job['id']}: {job['status']}  ({job['links']['ray_dashboard']})", flush=True)
    return _follow(client, job["id"]) if args.follow else 0


def _list(args: argparse.Namespace) -> int:
    page = _client(args).list(status=args.status, kind=args.kind, limit=args.limit,
                              offset=args.offset)
    print(f"{'ID':24} {'KIND':8} {'STATUS':10} {'NAME':28} CREATED")
    for j in page["data"]:
        print(f"{j['id']:24} {j['kind']:8} {j['status']:10} {j['name'][:28]:28} "
              f"{j['created_at'][:19]}")
    print(f"({len(page['data'])} of {page['count']})")
    return 0


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


# Columns of the comparison table: (metric key, header); COCO AP in points, as papers print it.
COMPARE_COLUMNS = (
    ("coco/bbox_mAP", "mAP"), ("coco/bbox_mAP_50", "AP50"), ("coco/bbox_mAP_75", "AP75"),
    ("coco/bbox_mAP_s", "APs"), ("coco/bbox_mAP_m", "APm"), ("coco/bbox_mAP_l", "APl"),
    ("teacher/coco/bbox_mAP", "teacher"),
)


def compare_table(cmp: dict) -> str:
    """The runs of an experiment as a text table: method, seed, status, COCO AP (x100), what the
    statistics did with the run (paired, unpaired, excluded: see :func:`run_notes`), MLflow link."""
    def cell(metrics: dict, key: str) -> str:
        value = metrics.get(key)
        return f"{'-':>7}" if value is None or value < 0 else f"{100 * value:7.1f}"

    head = (f"{'RUN':24} {'METHOD':9} {'SEED':>5} {'STATUS':9}"
            + "".join(f"{h:>8}" for _, h in COMPARE_COLUMNS) + f"  {'USE':9} LINK")
    rows = [head]
    for r in cmp["runs"]:
        cells = "".join(" " + cell(r["metrics"], key) for key, _ in COMPARE_COLUMNS)
        name, method = (r["run_name"] or r["run_id"])[:24], r["params"].get("method", "")[:9]
        seed = "-" if r.get("seed") is None else str(r["seed"])
        rows.append(f"{name:24} {method:9} {seed:>5} {r['status'][:9]:9}{cells}  "
                    f"{r.get('use', ''):9} {r['link']}")
    return "\n".join(rows)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def method_table(cmp: dict) -> str:
    """Per method: the runs counted, mean ± sample std of the metric (COCO points), the seeds."""
    lines = [f"Per method: {cmp['metric']} in {cmp['unit']}, mean ± sample std over N runs",
             "(the latest FINISHED run of each seed, and each FINISHED run without a seed)"]
    if not cmp["methods"]:
        return "\n".join([*lines, f"  no FINISHED run with {cmp['metric']}"])
    lines.append(f"{'METHOD':12} {'N':>3} {'MEAN':>8} {'STD':>8}  SEEDS")
    for m in cmp["methods"]:
        std = "-" if m["std"] is None else f"{m['std']:.2f}"
        seeds = ",".join(map(str, m["seeds"])) or "-"
        unseeded = m["n"] - len(m["seeds"])  # runs without a fixed seed count, unpaired
        seeds += f" (+{unseeded} without a seed)" if unseeded else ""
        lines.append(f"{m['method'][:12]:12} {m['n']:>3} {m['mean']:8.2f} {std:>8}  {seeds}")
    return "\n".join(lines)


def pair_table(cmp: dict) -> str:
    """Per pair of methods sharing seeds: the mean of the per-seed differences A - B (COCO
    points) and its Student-t interval; separated only when the interval excludes 0."""
    pct = f"{100 * cmp['confidence']:g}%"
    lines = [f"Paired differences A - B in {cmp['unit']} over the N seeds both have:",
             f"the mean difference and its {pct} Student-t interval (N - 1 degrees of freedom);",
             "separated only when the interval excludes 0"]
    if not cmp["pairs"]:
        return "\n".join([*lines, "  no two methods share a seed"])
    lines.append(f"{'A':12} {'B':12} {'N':>3} {'DIFF':>8}  {pct + ' CI':18}  VERDICT")
    for p in cmp["pairs"]:
        if p["separated"] is None:
            ci, verdict = "-", f"undefined: {p['n']} shared seed (needs 2)"
        else:
            ci = f"[{_signed(p['ci_low'])}, {_signed(p['ci_high'])}]"
            verdict = "separated" if p["separated"] else "not separated"
        lines.append(f"{p['a'][:12]:12} {p['b'][:12]:12} {p['n']:>3} {_signed(p['mean_diff']):>8}"
                     f"  {ci:18}  {verdict}")
    return "\n".join(lines)


def run_notes(cmp: dict) -> str:
    """One line per run the paired differences leave out (unpaired or excluded), with why."""
    out = [f"  {(r['run_name'] or r['run_id'])[:24]:24} {r['run_id'][:8]}  {r['use']}: {r['note']}"
           for r in cmp["runs"] if r.get("use") in ("unpaired", "excluded")]
    return "\n".join(["Runs not in any paired difference:", *out]) if out else ""


def compare_report(cmp: dict) -> str:
    """What ``bckd jobs compare`` prints: the method and pair statistics, then the runs."""
    parts = [method_table(cmp), pair_table(cmp),
             f"Runs of {cmp['experiment']} (newest first; AP in COCO points)\n"
             + compare_table(cmp)]
    notes = run_notes(cmp)
    return "\n\n".join([*parts, notes] if notes else parts)


def _compare(args: argparse.Namespace) -> int:
    cmp = _client(args).compare(args.experiment, metric=args.metric)
    if args.json:
        _print(cmp)
    else:
        print(compare_report(cmp))
    return 0


def _reachable(fn):
    """Turn a connection failure into one line naming the URL (bckd prints ValueErrors)."""

    def run(args: argparse.Namespace) -> int:
        import httpx

        try:
            return fn(args)
        except httpx.TransportError as err:
            raise ValueError(f"cannot reach the API at {args.url}: {err}") from err

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
    p.add_argument("kind", choices=["train", "distill", "sweep"])
    p.add_argument("config", nargs="?", help="a name from the configs list")
    p.add_argument("--upload", type=Path, default=None, help="a YAML/JSON config file instead")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (value parsed as JSON when it is JSON)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--teacher-ckpt", default=None, help="path or runs:/<run_id>/<path>")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs per worker")
    p.add_argument("--gpus", type=float, default=0.0, help="GPUs per worker")
    p.add_argument("--num-samples", type=int, default=None, help="sweep trials")
    p.add_argument("--name", default=None)
    p.add_argument("--experiment", default="bckd")
    p.add_argument("--idempotency-key", default=None)
    p.add_argument("--follow", action="store_true", help="stream the log until the job ends")
    p.set_defaults(handler=_reachable(_submit))

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
    p.add_argument("experiment", nargs="?", default="bckd")
    p.add_argument("--metric", default=None,
                   help="the metric of the statistics (default coco/bbox_mAP)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_reachable(_compare))
