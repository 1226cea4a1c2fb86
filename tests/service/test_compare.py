"""The compare statistics end to end: MLflow runs written directly into a real stack's tracking
server (Ray + MLflow + uvicorn API, no jobs), read back by the route and by ``bckd jobs compare``
run as a subprocess, checked against numbers computed by hand below."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.client.compare_text import pair_table
from service.core.auth import hash_token
from service.core.compare import _groups
from service.stack.embedded import Stack, StackConfig, free_port
from tests.service.servicetools import service_tracking

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "alice-token-0123456789"
EXPERIMENT = "cmp-stats"

pytestmark = pytest.mark.slow

# COCO mAP of each (method, seed) in [0, 1], as jobs log it; the statistics are in points (x100).
PLAIN = {0: 0.300, 1: 0.310, 2: 0.320}
BCKD = {0: 0.330, 1: 0.350, 2: 0.340}
# By hand, bckd - plain per seed in points: 3, 4, 2. Mean 3; sample std 1 (squares 0 + 1 + 1
# over n - 1 = 2); standard error 1 / sqrt(3) = 0.577350; t(0.975, df 2) = 4.302653 (the printed
# tables: 4.303); half width 4.302653 * 0.577350 = 2.484138; interval [0.515862, 5.484138]: it
# excludes 0, so the two are separated.
DIFF, HALF = 3.0, 4.302653 / math.sqrt(3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    st = Stack(StackConfig(
        data_dir=root / "state", api_port=free_port(), dashboard_port=free_port(),
        mlflow_port=free_port(), num_cpus=2,
        extra_env={"BCKD_TOKENS": f"{hash_token(TOKEN)} alice user"}))
    st.start()
    yield st
    st.stop()


def _run(client, exp_id: str, name: str, method: str, seed: int | None, value: float | None,
         start: int, status: str = "FINISHED") -> str:
    """One run as a job leaves it: the method tag, the owner tag, the flattened seed param."""
    run = client.create_run(exp_id, run_name=name, start_time=start,
                            tags={"method": method, "bckd.owner": "alice"})
    run_id = run.info.run_id
    client.log_param(run_id, "randomness.seed", str(seed))  # "None" when unset
    if value is not None:
        client.log_metric(run_id, "coco/bbox_mAP", value, step=1)
        client.log_metric(run_id, "coco/bbox_mAP_50", min(1.0, 2 * value), step=1)
    if status != "RUNNING":
        client.set_terminated(run_id, status=status)
    return run_id


@pytest.fixture(scope="module")
def runs(stack) -> dict[str, str]:
    tracking = service_tracking(stack)  # alice's experiment, as her first job's makes it
    client = tracking.client
    exp_id = tracking.own_experiment("alice", EXPERIMENT).experiment_id
    t0 = int(time.time() * 1000)
    ids = {"plain-s0-old": _run(client, exp_id, "plain-s0-old", "plain", 0, 0.100, t0)}
    for i, seed in enumerate(PLAIN):  # newer than plain-s0-old: these count
        ids[f"plain-s{seed}"] = _run(client, exp_id, f"plain-s{seed}", "plain", seed,
                                     PLAIN[seed], t0 + 1000 + i)
        ids[f"bckd-s{seed}"] = _run(client, exp_id, f"bckd-s{seed}", "bckd", seed, BCKD[seed],
                                    t0 + 2000 + i)
    ids["bckd-noseed"] = _run(client, exp_id, "bckd-noseed", "bckd", None, 0.340, t0 + 3000)
    ids["kd-running"] = _run(client, exp_id, "kd-running", "kd", 0, None, t0 + 4000,
                             status="RUNNING")
    return ids


def test_route_returns_method_means_and_the_paired_interval(stack, runs):
    r = httpx.get(f"{stack.api_url}/v1/experiments/{EXPERIMENT}/compare",
                  headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert r.status_code == 200, r.text
    cmp = r.json()
    assert (cmp["metric"], cmp["confidence"]) == ("coco/bbox_mAP", 0.95)
    assert len(cmp["runs"]) == len(runs)

    bckd, plain = cmp["methods"]  # highest mean first
    # bckd: 33, 35, 34 and the unseeded 34: mean 34, std sqrt((1 + 1 + 0 + 0) / 3)
    assert (bckd["method"], bckd["n"], bckd["seeds"]) == ("bckd", 4, [0, 1, 2])
    assert bckd["mean"] == pytest.approx(34.0) and bckd["std"] == pytest.approx(math.sqrt(2 / 3))
    # plain: 30, 31, 32 (the older seed-0 run is a duplicate): mean 31, std 1
    assert (plain["method"], plain["n"], plain["seeds"]) == ("plain", 3, [0, 1, 2])
    assert plain["mean"] == pytest.approx(31.0) and plain["std"] == pytest.approx(1.0)
    assert runs["plain-s0-old"] not in plain["run_ids"]

    (pair,) = cmp["pairs"]
    assert (pair["a"], pair["b"], pair["n"], pair["seeds"]) == ("bckd", "plain", 3, [0, 1, 2])
    assert pair["mean_diff"] == pytest.approx(DIFF)
    assert pair["std_diff"] == pytest.approx(1.0)
    assert pair["ci_low"] == pytest.approx(DIFF - HALF, abs=1e-6)
    assert pair["ci_high"] == pytest.approx(DIFF + HALF, abs=1e-6)
    assert pair["separated"] is True

    use = {row["run_name"]: (row["use"], row["seed"]) for row in cmp["runs"]}
    assert use["bckd-s1"] == ("paired", 1) and use["plain-s2"] == ("paired", 2)
    assert use["bckd-noseed"] == ("unpaired", None)
    assert use["plain-s0-old"] == ("excluded", 0) and use["kd-running"] == ("excluded", 0)

    by_50 = httpx.get(f"{stack.api_url}/v1/experiments/{EXPERIMENT}/compare",
                      params={"metric": "coco/bbox_mAP_50"},
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).json()
    assert by_50["pairs"][0]["mean_diff"] == pytest.approx(2 * DIFF)  # logged as 2 x mAP
    bad = httpx.get(f"{stack.api_url}/v1/experiments/{EXPERIMENT}/compare",
                    params={"metric": "coco/typo"},
                    headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert bad.status_code == 422 and "coco/bbox_mAP_50" in bad.text


def test_cli_prints_the_method_table_the_paired_interval_and_the_unpaired_run(stack, runs):
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "jobs", "--url", stack.api_url, "--token", TOKEN,
         "compare", EXPERIMENT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    print(out)  # shown with pytest -s
    lines = out.splitlines()
    assert out.index("Per method") < out.index("Paired differences") < out.index("Runs of")
    assert "COCO points" in out

    bckd = next(line for line in lines if line.startswith("bckd ") and "SEEDS" not in line)
    assert bckd.split()[:4] == ["bckd", "4", "34.00", "0.82"]  # sqrt(2/3) = 0.816
    plain = next(line for line in lines if line.startswith("plain "))
    assert plain.split()[:4] == ["plain", "3", "31.00", "1.00"]

    # the pair line: bckd - plain over 3 seeds, +3.00, [3 - 2.48, 3 + 2.48], separated
    pair = next(line for line in lines if line.startswith("bckd") and "plain" in line)
    assert f"{DIFF:+.2f}" == "+3.00" and "+3.00" in pair
    assert f"[{DIFF - HALF:+.2f}, {DIFF + HALF:+.2f}]" == "[+0.52, +5.48]"
    assert "[+0.52, +5.48]" in pair and pair.rstrip().endswith(" separated")
    assert pair.split()[2] == "3"  # shared seeds

    # every run in the runs table, the unpaired and excluded ones with the reason
    runs_part = out[out.index("Runs of"):]
    for name in runs:
        assert name in runs_part
    noseed = next(line for line in lines if "bckd-noseed" in line and "unpaired:" in line)
    assert "no seed" in noseed
    old = next(line for line in lines if "plain-s0-old" in line and "excluded:" in line)
    assert "duplicate" in old and runs["plain-s0"][:8] in old
    assert any("kd-running" in line and "RUNNING" in line and "excluded:" in line
               for line in lines)


def test_runs_of_one_method_but_other_models_are_separate_groups():
    def row(run_id, method, student):
        return {"run_id": run_id, "params": {"method": method, "student": student}}

    gfl, atss = "GFL/GFLHead/ResNet18", "ATSS/ATSSHead/ResNet18"
    rows = [row("t", "plain", f"{gfl}-w32"), row("s", "plain", f"{gfl}-w16"),
            row("b", "bckd", f"{gfl}-w16"), row("x", None, None),
            row("a", "kd", f"{atss}-w16"), row("g", "kd", f"{gfl}-w16")]
    # named by what tells the method's models apart, not by the whole model string
    assert _groups(rows) == {"t": "plain (ResNet18-w32)", "s": "plain (ResNet18-w16)",
                             "b": "bckd", "x": None, "a": "kd (ATSS/ATSSHead)",
                             "g": "kd (GFL/GFLHead)"}


def test_a_pair_with_one_shared_seed_is_named_under_the_table_not_a_row():
    pair = {"a": "bckd", "b": "plain", "n": 3, "mean_diff": 0.5, "ci_low": -2.5, "ci_high": 3.5,
            "separated": False}
    lone = {"a": "plain (ResNet18-w32)", "b": "bckd", "n": 1, "mean_diff": 7.1, "ci_low": None,
            "ci_high": None, "separated": None}
    text = pair_table({"unit": "COCO points (x100)", "confidence": 0.95, "pairs": [pair, lone]})
    rows = [line for line in text.splitlines() if line.startswith(("bckd", "plain"))]
    assert len(rows) == 1 and rows[0].rstrip().endswith("not separated")
    assert text.splitlines()[-1] == "(one shared seed, no interval: plain (ResNet18-w32) - bckd)"
    assert "undefined" not in text
    only = pair_table({"unit": "x", "confidence": 0.95, "pairs": [lone]})
    assert "no two methods share 2 seeds" in only and "plain (ResNet18-w32) - bckd" in only
