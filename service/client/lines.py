"""What ``bckd jobs`` prints of the API's answers, as lines: experiments, data sets and the
caller's MLflow login (the compare report is ``service.client.compare_text``'s)."""

from __future__ import annotations

import shlex

__all__ = ["NAMING", "dataset_lines", "datasets_table", "experiment_lines", "mlflow_login_lines"]

# Where experiment names come from, for people who have not named one yet
NAMING = ("An experiment is named by the jobs in it: `bckd jobs submit ... --experiment NAME` "
          "(default 'bckd'; the demo's is 'demo').")


def experiment_lines(page: dict) -> list[str]:
    """The caller's experiments, one line each, the latest submission first."""
    if not page["data"]:
        return ["  none yet: you have submitted no job"]
    w = max(10, *(len(e["name"]) for e in page["data"]))
    return [f"  {'EXPERIMENT':{w}} {'JOBS':>4}  {'LAST JOB':16}  MLFLOW", *(
        f"  {e['name']:{w}} {e['jobs']:>4}  {e['last_submitted'][:16].replace('T', ' ')}  "
        f"{e['link'] or '(no MLflow run yet)'}" for e in page["data"])]


def dataset_lines(row: dict) -> list[str]:
    """A data set just registered: its name, classes in label order, and split counts."""
    summary = row["summary"]
    return [f"registered {row['owner']}/{row['name']}: {row['path']}",
            f"  {len(summary['classes'])} classes: " + ", ".join(
                f"{name} (id {cid})" for name, cid in zip(summary["classes"],
                                                         summary["category_ids"], strict=True)),
            *(f"  {split}: {s['images']} images, {s['boxes']} boxes"
              for split, s in summary["splits"].items())]


def datasets_table(page: dict) -> list[str]:
    lines = [f"{'OWNER/NAME':32} {'CLASSES':>7} {'IMAGES':>7} PATH"]
    for d in page["data"]:
        images = sum(s["images"] for s in d["summary"]["splits"].values())
        lines.append(f"{d['owner'] + '/' + d['name']:32} {len(d['summary']['classes']):>7} "
                     f"{images:>7} {d['path']}")
    return [*lines, f"({page['count']} data sets)"]


def mlflow_login_lines(login: dict, env: bool) -> list[str]:
    """``GET /v1/me/mlflow``'s answer for a person, or (``env``) as ``export`` lines of MLflow's
    own variables, which its clients read, for a shell's ``eval``."""
    if env:
        values = {"MLFLOW_TRACKING_URI": login["url"],
                  "MLFLOW_TRACKING_USERNAME": login["username"],
                  "MLFLOW_TRACKING_PASSWORD": login["password"]}
        return [f"export {k}={shlex.quote(v)}" for k, v in values.items() if v]
    if login["username"] is None:
        return [f"MLflow: {login['url']} (it asks for no login)"]
    return [f"MLflow: {login['url']}", f"  username: {login['username']}",
            f"  password: {login['password']}",
            "It opens your experiments, named <you>/<experiment>. Elsewhere (bckd export, "
            "Python): eval \"$(bckd jobs mlflow-login --env)\""]
