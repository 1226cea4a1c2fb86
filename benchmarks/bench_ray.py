"""Benchmark of our Ray Train job against a plain mmengine Runner, and of 1 against 2 workers.

    python benchmarks/bench_ray.py                           # ~7 min on 2 quiet cores
    python benchmarks/bench_ray.py --num-train 64 --epochs 1 --skip 2   # a quick look
    python benchmarks/bench_ray.py --config configs/synth/gfl_student.py --cases plain ray_1xN

Writes a small synthetic data set (``bckd.data.synth``, ``--size`` px) into a temporary
directory, then trains the same config (``configs/synth/gfl_student.py``, batch 8 per worker,
``--epochs`` epochs, evaluated once at the end on 8 images; evaluation is outside iterations)
in these cases, one after the other:

* ``plain``:   ``mmengine.runner.Runner`` in a fresh process, ``OMP_NUM_THREADS`` = cores (what
  Ray sets for a worker of that many CPUs);
* ``ray_1xN``: ``bckd.runtime.launch.run_job``, 1 worker with ``--cpus-per-worker N`` = cores,
  a fresh local Ray cluster of the cores (the job's MLflow, progress and checkpoint hooks on);
* ``ray_1x1``, ``ray_2x1``: 1 and 2 workers with 1 CPU each (data parallel, batch 8 per worker).

``plain`` and ``ray_1xN``, the goal's pair, run ``--rounds`` times, alternating (the others
once): the goal's ratio is the median of the rounds' ratios, with their range, and "not
separated" from the goal when the range holds it. Each case's row gives the median of its runs.

Steady-state images/s comes from each iteration's own time as mmengine's ``IterTimerHook``
measures it (from the end of one iteration to the end of the next: data loading, step, and
every hook in between, checkpoints at epoch ends included), the same quantity in all cases:
``images_per_s`` = batch x world size / iteration time, logged to MLflow by the Ray job
(``bckd.runtime.hooks.images_per_second``) and recorded by a hook in the plain run. The first
``--skip`` iterations (loader start, lazy initialization) are left out; steady images/s is
``n x batch x world / sum(iteration times)`` over the rest. Start-up is reported separately:
from the launch (process start, or the ``run_job`` call with its new Ray cluster) to the start
of the first iteration; ``outside_s`` is everything outside iterations (start-up, shutdown,
the final export). Goals: ray_1xN / plain >= 0.95; ray_2x1 / ray_1x1 is reported as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, finish_machine, machine_info, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.95  # ray_1xN / plain, steady images/s
BATCH = 8  # the synthetic configs' batch per worker


def cfg_options(data: Path, epochs: int, batch: int) -> dict:
    """Overrides shared by all cases: the temporary data set, the schedule, and evaluation only
    after the last epoch (mmengine's loop always evaluates then), on 8 images."""
    root = f"{data}/"
    return {
        "train_dataloader.dataset.data_root": root,
        "val_dataloader.dataset.data_root": root,
        "val_evaluator.ann_file": f"{root}annotations/instances_val.json",
        "train_dataloader.batch_size": batch,
        "train_cfg.max_epochs": epochs,
        "train_cfg.val_interval": epochs,
    }


def steady(speeds: list[float], skip: int) -> dict:
    """Steady images/s from per-iteration images/s (constant batch x world), first ``skip`` out."""
    rest = speeds[skip:]
    if not rest:
        raise ValueError(f"only {len(speeds)} iterations, fewer than --skip {skip} + 1")
    return {"iterations": len(speeds), "steady_iterations": len(rest),
            "steady_images_per_s": len(rest) / sum(1.0 / s for s in rest),
            "median_images_per_s": sorted(rest)[len(rest) // 2]}


# --- plain mmengine Runner (run in a child process: python bench_ray.py --plain-child ...) ---


def plain_child(spec: dict) -> None:
    from mmengine.hooks import Hook
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from bckd.config.loader import load_config, resolve_paths
    from bckd.runtime.hooks import images_per_second

    cfg = load_config(spec["config"], spec["options"])
    cfg.work_dir = spec["work_dir"]
    resolve_paths(cfg)
    init_default_scope(cfg.get("default_scope", "mmdet"))

    class Record(Hook):
        priority = "LOW"  # after IterTimerHook, like the job's MLflow hook

        def __init__(self) -> None:
            self.speeds: list[float] = []
            self.first_iter_start: float | None = None

        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            if self.first_iter_start is None:
                self.first_iter_start = time.time()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            self.speeds.append(images_per_second(runner, data_batch))

    runner = Runner.from_cfg(cfg)
    record = Record()
    runner.register_hook(record)
    runner.train()
    Path(spec["out"]).write_text(json.dumps({"speeds": record.speeds,
                                             "first_iter_start": record.first_iter_start}))


def run_plain(config: str, options: dict, work: Path, cpus: int) -> dict:
    out = work / "plain.json"
    spec = {"config": config, "options": options, "work_dir": str(work / "plain"),
            "out": str(out)}
    log = work / "plain.log"
    t0 = time.time()
    with open(log, "wb") as fh:
        # the thread count Ray gives a worker of `cpus` CPUs (OMP_NUM_THREADS = its CPUs)
        env = dict(os.environ, OMP_NUM_THREADS=str(cpus))
        proc = subprocess.run([sys.executable, __file__, "--plain-child", json.dumps(spec)],
                              cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
    wall = time.time() - t0
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"the plain mmengine run failed ({proc.returncode}):\n{tail}")
    rec = json.loads(out.read_text())
    return {"speeds": rec["speeds"], "wall_s": wall, "world_size": 1,
            "startup_s": rec["first_iter_start"] - t0}


# --- our Ray Train job -------------------------------------------------------------------


def run_ray(config: str, options: dict, work: Path, name: str, workers: int, cpus: float,
            local_cpus: int) -> dict:
    from mlflow.tracking import MlflowClient

    from bckd.config.spec import JobSpec
    from bckd.runtime.launch import run_job

    spec = JobSpec(config=config, num_workers=workers, cpus_per_worker=cpus,
                   cfg_options=dict(options), experiment="bench_ray", name=name,
                   work_dir=str(work / name), local_num_cpus=local_cpus)
    t0 = time.time()
    result = run_job(spec)
    wall = time.time() - t0
    if result.status != "FINISHED":
        raise RuntimeError(f"{name}: the Ray job ended {result.status}: {result.error}")
    uri = f"sqlite:///{work / 'mlflow.db'}"  # default_tracking_uri(work_dir.parent)
    history = MlflowClient(uri).get_metric_history(result.mlflow_run_id, "images_per_s")
    history = sorted(history, key=lambda m: m.step)
    speeds = [m.value for m in history]
    # Metrics are written in batches (every progress_interval iterations) stamped at the write:
    # the first write's stamp minus the iterations before it is when the first one started.
    first = history[0].timestamp
    batch = [m for m in history if m.timestamp == first]
    per_iter = BATCH * workers
    first_iter_start = first / 1e3 - sum(per_iter / m.value for m in batch)
    return {"speeds": speeds, "wall_s": wall, "world_size": workers,
            "startup_s": first_iter_start - t0, "mlflow_run_id": result.mlflow_run_id}


def summarize_runs(runs: list[dict]) -> dict:
    """A case's runs: the median of each reported quantity, and every run under ``runs``."""
    keys = ("steady_images_per_s", "median_images_per_s", "startup_s", "outside_s", "wall_s")
    summary = {k: statistics.median(r[k] for r in runs) for k in keys}
    summary.update({k: runs[0][k] for k in ("case", "workers", "cpus", "iterations")})
    return summary | {"runs": runs}


CASES = {  # name: (kind, workers, cpus per worker; None = all cores)
    "plain": ("plain", 1, None),
    "ray_1xN": ("ray", 1, None),
    "ray_1x1": ("ray", 1, 1),
    "ray_2x1": ("ray", 2, 1),
}
PAIR = ("plain", "ray_1xN")  # the goal's ratio


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs/synth/gfl_student.py"))
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--num-train", type=int, default=240)  # 30 iterations of 8 per epoch
    p.add_argument("--size", type=int, default=128)  # px; small so 4 runs fit in ~8 min
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)  # runs of plain and ray_1xN, alternating
    p.add_argument("--skip", type=int, default=5)  # warm-up iterations left out
    p.add_argument("--cpus", type=int, default=os.cpu_count())  # the cores of every case
    p.add_argument("--json", type=Path, default=RESULTS / "ray.json")
    p.add_argument("--plain-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.plain_child:
        plain_child(json.loads(args.plain_child))
        return 0

    from bckd.data.synth import SynthConfig, generate

    machine = machine_info("cpu")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        data = work / "data"
        generate(SynthConfig(out=data, num_train=args.num_train, num_val=8,
                             image_size=args.size, workers=args.cpus), progress=False)
        options = cfg_options(data, args.epochs, BATCH)
        # The goal's pair runs --rounds times, alternating, the others once: one run per case
        # moved the plain case's images/s by a third between runs on this machine.
        order = [c for k in range(args.rounds) for c in args.cases if k == 0 or c in PAIR]
        runs: dict[str, list[dict]] = {c: [] for c in args.cases}
        for case in order:
            kind, workers, cpus = CASES[case]
            cpus = cpus or args.cpus
            print(f"{case} (run {len(runs[case]) + 1}): {kind}, {workers} worker(s) x {cpus} "
                  "CPU(s) ...", flush=True)
            if kind == "plain":
                r = run_plain(args.config, options, work, cpus)
            else:
                name = f"{case}_{len(runs[case]) + 1}"
                r = run_ray(args.config, options, work, name, workers, cpus, args.cpus)
            r.update(steady(r["speeds"], args.skip), case=case, workers=workers, cpus=cpus)
            r["iter_time_s"] = sum(BATCH * workers / s for s in r["speeds"])
            r["outside_s"] = r["wall_s"] - r["iter_time_s"]
            runs[case].append(r)
            print(f"  {r['steady_images_per_s']:.1f} images/s steady, start-up "
                  f"{r['startup_s']:.1f} s, wall {r['wall_s']:.1f} s", flush=True)
    results = {c: summarize_runs(rs) for c, rs in runs.items()}

    print()
    table = print_table(
        ["case", "workers x cpus", "runs", "steady img/s", "median img/s", "start-up s",
         "outside s", "wall s"],
        [[c, f"{r['workers']} x {r['cpus']}", len(r["runs"]), r["steady_images_per_s"],
          r["median_images_per_s"], r["startup_s"], r["outside_s"], r["wall_s"]]
         for c, r in results.items()])
    ratios, verdicts = {}, []
    if set(PAIR) <= results.keys():
        # paired by round: a round's plain and Ray runs ran back to back
        rounds = [ray["steady_images_per_s"] / plain["steady_images_per_s"]
                  for plain, ray in zip(runs["plain"], runs["ray_1xN"], strict=True)]
        ratios["ray_1xN/plain"] = statistics.median(rounds)
        ratios["ray_1xN/plain_range"] = [min(rounds), max(rounds)]
        low, high = ratios["ray_1xN/plain_range"]
        state = ("met" if low >= GOAL else "NOT met" if high < GOAL
                 else "not separated from the goal")
        verdicts.append(f"ray_1xN/plain = {ratios['ray_1xN/plain']:.3f} (median of "
                        f"{len(rounds)} paired rounds, range {low:.2f}-{high:.2f}; goal >= "
                        f"{GOAL}: {state})")
    if {"ray_1x1", "ray_2x1"} <= results.keys():
        ratios["ray_2x1/ray_1x1"] = (results["ray_2x1"]["steady_images_per_s"]
                                     / results["ray_1x1"]["steady_images_per_s"])
        verdicts.append(f"ray_2x1/ray_1x1 = {ratios['ray_2x1/ray_1x1']:.3f} (2 workers of 1 "
                        "CPU against 1)")
    verdict = "; ".join(verdicts)
    print(verdict)
    finish_machine(machine)
    write_json(args.json, dict(
        machine=machine,
        config=dict(config=args.config, num_train=args.num_train, size=args.size,
                    epochs=args.epochs, batch_per_worker=BATCH, skip=args.skip, cpus=args.cpus,
                    rounds=args.rounds,
                    goal=f"ray_1xN/plain >= {GOAL}"),
        results=results, ratios=ratios, table=table, verdict=verdict))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
