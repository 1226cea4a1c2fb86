"""Smoke tests of the benchmark scripts: each runs end to end at a tiny size and writes valid
JSON. They check behaviour (the files, the keys, the resume logic), never timing.

The fast ones (~40 s on 2 cores) run by default; the ones that start Ray or the service stack
are marked slow (minutes on 2 cores): ``pytest tests/benchmarks -m slow``. Those three smoke runs
(``bench_ray.py``, ``bench_service.py``, ``reproduce.py --tiny``) are also marked ``bench``:
``make bench`` and ``make reproduce`` run them before the scripts, and ``make test`` leaves them
out (its 30-minute budget).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import repro_records  # noqa: E402
import repro_report  # noqa: E402
import reproduce  # noqa: E402
import tables  # noqa: E402
from common import percentile, print_table  # noqa: E402


def run_script(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_percentile_is_an_observed_value_by_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_print_table_aligns_columns(capsys):
    text = print_table(["a", "bb"], [["x", 1.234], ["longer", math.nan]], fmt=".2f")
    assert text.splitlines()[2].endswith("1.23") and text.splitlines()[3].endswith("-")
    assert len({len(line) for line in text.splitlines()}) == 1


def test_bench_step_writes_ratios_for_a_tiny_batch(tmp_path):
    out = tmp_path / "step.json"
    run_script("bench_step.py", "--families", "gfl", "--batch", "1", "--size", "64",
               "--repeats", "1", "--warmup", "0", "--json", str(out))
    report = json.loads(out.read_text())
    (r,) = report["results"]
    assert r["family"] == "gfl"
    for way in ("distill", "student", "teacher_fwd"):
        assert r[way]["wall_ms"] > 0 and r[way]["cpu_ms"] > 0
    assert r["ratio_cpu_ms"] > 0 and isinstance(report["goal_met"], bool)
    low, high = r["ratio_cpu_ms_range"]  # one paired ratio per round: the median is among them
    assert low <= r["ratio_cpu_ms"] <= high
    assert {"load_avg_1min_start", "load_avg_1min_end", "busy"} <= report["machine"].keys()


def test_bench_step_refuses_a_family_outside_its_setting():
    proc = subprocess.run([sys.executable, str(BENCH / "bench_step.py"), "--setting", "coco",
                           "--families", "atss"], cwd=ROOT, text=True, capture_output=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "--families atss: not in --setting coco (gfl, rtmdet)" in proc.stderr


REGISTERED = reproduce.Schedule(seed_counts=(("gfl", 5), ("atss", 3), ("retinanet", 3),
                                            ("fcos", 3), ("rtmdet", 4)))


def test_reproduce_plan_lists_the_runs_without_running_anything(tmp_path, monkeypatch,
                                                                 capsys):
    # a fresh start (no records, no registration; the repository's own are not read): phase 1
    # alone, teachers and the students alone on 3 seeds
    monkeypatch.setattr(reproduce, "PROTOCOL", tmp_path / "protocol.json")
    assert reproduce.main(["--plan", "--records", str(tmp_path / "records")]) == 0
    out = capsys.readouterr().out
    setting = reproduce.plan(reproduce.Schedule(), "repro")
    assert [r.method for r in setting] == (["teacher"] + ["student"] * 3) * 5
    assert all(r.name in out for r in setting)
    assert "phase 2 waits for its registered protocol" in out
    total_h = sum(reproduce.estimate_s(r, reproduce.Schedule()) for r in setting) / 3600
    assert f"estimated job time: {total_h:.2f} h; about {total_h / 2:.2f} h of wall time" in out
    # the committed state: the script runs as a user runs it, and its plan names every run
    proc = run_script("reproduce.py", "--plan", timeout=60)
    assert proc.returncode == 0 and all(r.name in proc.stdout for r in setting), proc.stdout
    # registered: every method of a family runs every seed of the family, so differences pair
    runs = reproduce.plan(REGISTERED, "repro")
    assert len(runs) == 5 + 5 * 10 + 3 * 3 * 2 + 4 * 2  # teachers, GFL 5 x 10, 3 x 3 x 2, 4 x 2
    assert len({r.name for r in runs}) == len(runs)  # the setting's students are not run twice
    for family, seeds in (("gfl", {0, 1, 2, 3, 4}), ("rtmdet", {0, 1, 2, 3})):
        by_method: dict[str, set[int]] = {}
        for r in runs:
            if r.family == family and r.method != "teacher":
                by_method.setdefault(r.method, set()).add(r.seed)
        assert by_method and all(s == seeds for s in by_method.values())
    assert {r.method for r in runs if r.family == "gfl"} >= {"crosskd", "pkd", "bckd_pkd", "cwd"}
    assert all(reproduce.overrides(r)["train_cfg.val_interval"] == r.epochs for r in runs)
    tiny = reproduce.plan(reproduce.TINY, "t")
    assert [r.method for r in tiny] == ["teacher", "student", "bckd"]
    assert tiny[2].teacher_key == tiny[0].name


def _record(records, run, machine: str, mAP: float) -> None:
    records.write(dict(name=run.name, family=run.family, method=run.method, seed=run.seed,
                       protocol=records.protocol, machine_key=machine,
                       mlflow_run_id=f"id-{run.name}", job_minutes=1.0,
                       started_at="2026-01-01T00:00:00", ended_at="2026-01-01T00:01:00",
                       metrics={m: mAP for m in repro_report.METRICS.values()}))


def test_reproduce_resumes_from_records_and_pairs_within_one_machine(tmp_path):
    from repro_records import Records

    s = reproduce.Schedule(setting_seeds=(0,), seed_counts=(("gfl", 2),), families=("gfl",),
                           gfl_methods=("student", "bckd"))
    runs = {r.name: r for r in reproduce.plan(s, "p")}
    records = Records(tmp_path / "records", reproduce.protocol_hash(s))
    assert reproduce.needed(list(runs.values()), records, "A") == list(runs.values())
    _record(records, runs["p-gfl_teacher-s0"], "A", 0.40)
    _record(records, runs["p-gfl_student-s0"], "A", 0.20)
    _record(records, runs["p-bckd_gfl-s0"], "A", 0.30)
    _record(records, runs["p-gfl_student-s1"], "A", 0.22)
    # machine B: the teacher serves it; seed 0's block is whole on A; seed 1's block is not,
    # so B runs all of it, its student alone too
    todo = reproduce.needed(list(runs.values()), records, "B")
    assert [r.name for r in todo] == ["p-gfl_student-s1", "p-bckd_gfl-s1"]
    assert [r.name for r in reproduce.needed(list(runs.values()), records, "A")] == [
        "p-bckd_gfl-s1"]
    _record(records, runs["p-gfl_student-s1"], "B", 0.21)
    _record(records, runs["p-bckd_gfl-s1"], "B", 0.27)
    again = Records(tmp_path / "records", reproduce.protocol_hash(s))  # read back from disk
    assert len(again.all) == 6 and not reproduce.needed(list(runs.values()), again, "B")
    rows = {r["name"]: r for r in reproduce.per_run(list(runs.values()), again)}
    # seed 1 reads B's block whole (B holds 2 of its runs, A one): no pair mixes machines
    assert rows["p-gfl_student-s1"]["machine"] == "B" and rows["p-gfl_student-s1"]["mAP"] == 21
    fam = repro_report.collect(list(rows.values()), again.all)["families"]["gfl"]
    assert fam["methods"]["bckd"]["mAP_values"] == pytest.approx([30.0, 27.0])
    # a record of another setting (other epochs) never counts
    other = Records(tmp_path / "records", reproduce.protocol_hash(
        reproduce.Schedule(student_epochs=7)))
    assert other.all == []


class FakeClient:
    """The two reads ``reproduce.Runs`` makes of the API."""

    def __init__(self, jobs, mlflow_rows):
        self.jobs, self.rows = jobs, mlflow_rows

    def list(self, limit, offset):
        return {"data": self.jobs[offset:offset + limit], "count": len(self.jobs)}

    def compare(self, experiment):
        return {"runs": self.rows}


def _job(name, status, created, run_id=None):
    return {"name": name, "experiment": "e", "status": status, "created_at": created,
            "mlflow_run_id": run_id}


def test_reproduce_resume_logic_skips_finished_waits_running_resubmits_failed():
    jobs = [_job("a", "FAILED", "1"), _job("a", "SUCCEEDED", "2", "ra"),
            _job("b", "RUNNING", "1"), _job("c", "LOST", "1"), _job("x", "FAILED", "1")]
    jobs[-1]["experiment"] = "other"
    rows = [{"run_name": "d", "status": "FINISHED", "run_id": "rd", "metrics": {}}]
    runs = reproduce.Runs(FakeClient(jobs, rows), "e")
    runs.refresh()
    assert [runs.state(n) for n in "abcdx"] == ["done", "running", "failed", "done", "new"]
    assert runs.attempts("a") == 2 and runs.attempts("c") == 1
    assert runs.run_id("a") == "ra" and runs.run_id("d") == "rd"


def test_reproduce_results_table_gap_and_plot(tmp_path):
    from repro_records import Records

    s = reproduce.Schedule(setting_seeds=(0, 1), seed_counts=(("gfl", 2),), families=("gfl",),
                           gfl_methods=("student", "bckd"))
    runs_plan = reproduce.plan(s, "p")
    maps = {"p-gfl_teacher-s0": 0.40, "p-gfl_student-s0": 0.20, "p-gfl_student-s1": 0.22,
            "p-bckd_gfl-s0": 0.30, "p-bckd_gfl-s1": 0.28}
    records = Records(tmp_path / "records", reproduce.protocol_hash(s))
    for r in runs_plan:
        _record(records, r, "A", maps[r.name])
    result = repro_report.collect(reproduce.per_run(runs_plan, records), records.all)
    fam = result["families"]["gfl"]
    assert fam["teacher_mAP"] == pytest.approx(40.0)
    assert fam["methods"]["bckd"]["mAP_mean"] == pytest.approx(29.0)
    assert fam["methods"]["bckd"]["gap_closed"] == pytest.approx((29 - 21) / (40 - 21))
    assert fam["methods"]["bckd"]["run_ids"] == ["id-p-bckd_gfl-s0", "id-p-bckd_gfl-s1"]
    said = repro_report.notes(result["families"])
    assert any("measured order bckd 29.0 > student 21.0" in line for line in said)
    # the registered comparison, paired over the 2 seeds: +10 and +6 points
    assert any(line.startswith("gfl: bckd - student = +8.00 mAP, paired over 2 seeds")
               for line in said)
    # a teacher below its student leaves no gap: the share closed is undefined, and said so
    records.all[0]["metrics"] = {m: 0.15 for m in repro_report.METRICS.values()}
    weak = repro_report.collect(reproduce.per_run(runs_plan, records), [])["families"]
    assert math.isnan(weak["gfl"]["methods"]["bckd"]["gap_closed"])
    assert any("no gap to close" in line for line in repro_report.notes(weak))
    png = repro_report.plot(result["families"], tmp_path / "r.png", "t")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_reproduce_registers_each_method_against_the_student_and_bckd_against_each_other():
    pairs = repro_report.registered_pairs(["student", "kd", "bckd", "pkd"])
    assert pairs == [("kd", "student"), ("bckd", "student"), ("pkd", "student"),
                     ("bckd", "kd"), ("bckd", "pkd")]
    assert repro_report.registered_pairs(["student", "kd"]) == [("kd", "student")]


def _step_report(table: str) -> dict:
    machine = {"started": "2026-01-01 00:00", "cpu_count": 2, "device": "cpu",
               "load_avg_1min_start": 0.5, "load_avg_1min_end": 0.7, "busy": False,
               "command": "python benchmarks/bench_step.py --repeats 3"}
    return {"machine": machine, "table": table, "verdict": "goal: met"}


def test_tables_fill_a_doc_block_from_its_json_and_check_finds_drift(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "step.json").write_text(json.dumps(_step_report("gfl 1.04")))
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- bench:step -->\nold numbers\n<!-- /bench:step -->\noutro\n")

    assert tables.sync(doc, results, check=True) == ["step"]
    assert "old numbers" in doc.read_text()  # a check changes nothing
    assert tables.sync(doc, results) == ["step"]
    text = doc.read_text()
    assert "gfl 1.04" in text and "old numbers" not in text
    assert text.startswith("intro\n") and text.endswith("<!-- /bench:step -->\noutro\n")
    assert "`python benchmarks/bench_step.py --repeats 3` (2026-01-01 00:00" in text
    assert tables.sync(doc, results, check=True) == []

    (results / "step.json").write_text(json.dumps(_step_report("gfl 1.20")))
    assert tables.main(["--check", "--results", str(results), str(doc)]) == 1
    assert tables.main(["--results", str(results), str(doc)]) == 0
    assert "gfl 1.20" in doc.read_text()


def test_the_docs_tables_match_the_json_they_came_from():
    """README.md and benchmarks/README.md hold exactly what benchmarks/results/*.json say."""
    text = "".join(doc.read_text() for doc in tables.DOCS)
    for name in [*tables.BLOCKS, "goals"]:
        assert f"<!-- bench:{name} -->" in text, f"no block bench:{name} in the docs"
    assert tables.main(["--check"]) == 0


# --- slow: Ray, the service stack, real training ---------------------------------------------


@pytest.mark.slow
@pytest.mark.bench
def test_bench_ray_pairs_plain_and_one_ray_worker(tmp_path):
    out = tmp_path / "ray.json"
    run_script("bench_ray.py", "--num-train", "16", "--epochs", "1", "--skip", "1",
               "--cases", "plain", "ray_1xN", "--rounds", "2", "--json", str(out))
    report = json.loads(out.read_text())
    for case in ("plain", "ray_1xN"):
        r = report["results"][case]
        assert r["iterations"] == 2 and r["steady_images_per_s"] > 0 and r["startup_s"] > 0
        assert len(r["runs"]) == 2  # the goal's pair runs once per round
    low, high = report["ratios"]["ray_1xN/plain_range"]
    assert low <= report["ratios"]["ray_1xN/plain"] <= high


@pytest.mark.slow
@pytest.mark.bench
def test_bench_service_a_few_clients(tmp_path):
    out = tmp_path / "service.json"
    run_script("bench_service.py", "--clients", "3", "--submits", "1", "--statuses", "2",
               "--timeout", "500", "--json", str(out))
    report = json.loads(out.read_text())
    for key in ("api_only_submit", "api_only_status", "api_floor", "raw_submit", "service_submit",
                "raw_status", "service_status"):
        assert report["results"][key]["errors"] == 0
        assert report["results"][key]["n"] == (3 if "submit" in key else 6)
        assert report["results"][key]["p99_ms"] > 0
    for op in ("submit", "status"):
        assert {"api_only_met", "met"} <= report["goals"][op].keys()
    assert report["verdict"].startswith("the API alone answers in p99")


@pytest.mark.slow
@pytest.mark.bench
def test_reproduce_tiny_end_to_end_through_the_service(tmp_path):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    try:
        proc = run_script("reproduce.py", "--tiny", "--data-dir", str(tmp_path / "state"),
                          "--prefix", prefix, "--results", str(tmp_path / "results"),
                          timeout=1200)
        report = json.loads((tmp_path / "results" / "reproduction_tiny.json").read_text())
        assert report["runs_done"] == report["runs_planned"] == 3
        assert {r["state"] for r in report["runs"]} == {"done"}
        assert all(r["run_id"] for r in report["runs"])
        assert (tmp_path / "results" / "reproduction_tiny.png").is_file()
        assert "logged the table and plot to MLflow run" in proc.stdout
        # each run left a record, the teacher its fp16 weights with their sha256
        records = [json.loads(f.read_text())
                   for f in (tmp_path / "state" / "records").glob("*.json")]
        assert sorted(r["method"] for r in records) == ["bckd", "student", "teacher"]
        teacher = next(r for r in records if r["method"] == "teacher")
        weights = tmp_path / "state" / teacher["teacher_weights"]["file"]
        assert repro_records.sha256(weights) == teacher["teacher_weights"]["sha256"]
        state = torch.load(weights, weights_only=True)
        assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
        assert all(isinstance(r["metrics"], dict) and r["git_commit"] for r in records)
        # a second invocation, with the stack's state gone, renders the report from the
        # records alone: no stack, nothing submitted
        shutil.rmtree(tmp_path / "state" / "mlflow", ignore_errors=True)
        again = run_script("reproduce.py", "--tiny", "--data-dir", str(tmp_path / "state"),
                           "--prefix", prefix, "--results", str(tmp_path / "results"),
                           timeout=600)
        assert "submitted" not in again.stdout and "starting Ray" not in again.stdout
        # the docs' block of this result: every run id, the job time the service measured
        (tmp_path / "results" / "reproduction.json").write_text(
            (tmp_path / "results" / "reproduction_tiny.json").read_text())
        block = tables.render("reproduction", tmp_path / "results")
        assert "3/3 runs" in block and report["job_hours"] > 0
        assert all(r["run_id"][:8] in block for r in report["runs"])
    finally:  # the runs' directories are the service's, under --data-dir: nothing in the tree
        assert not list((ROOT / "work_dirs").glob(f"{prefix}-*"))
