"""What the teacher forward's precision does to mAP: the teacher's own, and a distilled student's.

    python benchmarks/bench_teacher_precision.py \
        --data /tmp/demo1/data/synth-demo \
        --teacher-ckpt /tmp/demo1/.bckd/owners/admin/runs/demo-teacher/final.pth
    python benchmarks/bench_teacher_precision.py ... --student-epochs 0   # the teacher only

The demo's setting (service/client/demo.py): its trained GFL teacher
(``configs/synth/gfl_teacher.py``) and its 128 px synthetic set. Everything runs in this process
through mmengine's ``Runner``:

* teacher: COCO bbox mAP on the val split (mmdet's ``CocoMetric``, over the test loop's
  dataloader and evaluator), once through the detector's own ``test_step`` and once per
  precision through the forward the distiller runs (``bckd.distill.precision.teacher_forward``:
  inference mode, autocast, fp32 outputs), then the head's ``predict_by_feat`` in fp32;
* student: one ``configs/synth/bckd_gfl.py`` run per precision from that teacher, with the
  demo's student schedule (``schedule_overrides(epochs, seed)``: same seed, so the same
  initialization and batches), and its val mAP at the end.

Each evaluation and run is its own process, ``--parallel`` at a time with one torch thread
each (the two students side by side, as the demo runs them, the evaluations beside them); the
numbers do not depend on that schedule, only the wall time does.

mAP is also recomputed unrounded from the dumped detections (``CocoMetric`` rounds to 3
decimals, which is the 0.1-point resolution the criterion needs). Criteria: the teacher's mAP
within 0.1 points (0.001) of fp32's; the student's within the demo's seed-to-seed spread of
fp32's (``STUDENT_TOLERANCE``: one seed pair measures no more than that).
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from common import RESULTS, finish_machine, machine_info, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.001  # 0.1 mAP points on CocoMetric's 0..1 scale
# Any numerical change makes a different training run, as another seed does: the student pair
# is held to the seed-to-seed spread of the demo's BCKD students, 0.76 points (sample std over
# seeds 0-2, docs/REPRODUCTION.md, "The demo"), stated before the runs.
STUDENT_TOLERANCE = 0.0076


def load_cfg(name: str, data_root: Path, work_dir: Path, label: str):
    """``configs/synth/<name>.py`` on ``data_root``, writing under ``work_dir/label``, its
    evaluators dumping their detections to ``work_dir/label.bbox.json``."""
    from mmengine.config import Config

    from bckd.config.dataset import dataset_options

    cfg = Config.fromfile(str(ROOT / "configs" / "synth" / f"{name}.py"))
    cfg.merge_from_dict(dataset_options(cfg, str(data_root), None))
    cfg.work_dir = str(work_dir / label)
    for ev in ("val_evaluator", "test_evaluator"):
        cfg[ev].outfile_prefix = str(work_dir / label)
    cfg.default_hooks.visualization = dict(type="DetVisualizationHook", draw=False)
    return cfg


def unrounded_map(ann_file: str, dets_json: Path) -> float:
    """COCO bbox mAP@[.5:.95] of ``dets_json`` as ``CocoMetric`` computes it, not rounded."""
    from mmdet.datasets.api_wrappers import COCO, COCOeval

    gt = COCO(ann_file)
    dets = gt.loadRes(str(dets_json))
    ev = COCOeval(gt, dets, "bbox")
    ev.params.catIds = gt.get_cat_ids()
    ev.params.imgIds = gt.get_img_ids()
    ev.params.maxDets = [100, 300, 1000]  # CocoMetric's proposal_nums
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0])


def evaluate_teacher(cfg, ckpt: str, precision: str | None) -> dict:
    """The teacher's val metrics; ``precision=None``: its own ``test_step`` (fp32, no_grad)."""
    from mmengine.runner import Runner

    from bckd.checkpoint import load_state_dict
    from bckd.distill.precision import teacher_forward

    runner = Runner.from_cfg(cfg)
    model = runner.model
    model.load_state_dict(load_state_dict(ckpt), strict=True)
    model.eval()
    loop = runner.test_loop  # builds the dataloader and CocoMetric with the dataset's meta
    t0 = time.perf_counter()
    for data_batch in loop.dataloader:
        if precision is None:
            with torch.no_grad():
                outputs = model.test_step(data_batch)
        else:
            data = model.data_preprocessor(copy.deepcopy(data_batch), False)
            _, outs = teacher_forward(model, data["inputs"], precision)
            samples = data["data_samples"]
            preds = model.bbox_head.predict_by_feat(
                *outs, batch_img_metas=[s.metainfo for s in samples], rescale=True)
            outputs = model.add_pred_to_datasample(samples, preds)
        loop.evaluator.process(data_samples=outputs, data_batch=data_batch)
    metrics = loop.evaluator.evaluate(len(loop.dataloader.dataset))
    seconds = time.perf_counter() - t0
    mAP = unrounded_map(cfg.test_evaluator.ann_file, Path(cfg.test_evaluator.outfile_prefix
                                                           + ".bbox.json"))
    return dict(precision=precision or "test_step", mAP=mAP, seconds=round(seconds, 1),
                coco={k: v for k, v in metrics.items() if k.startswith("coco/")})


def train_student(cfg, ckpt: str, precision: str, epochs: int, seed: int) -> dict:
    """One BCKD run of ``epochs`` on ``seed`` from the teacher ``ckpt``; its final val mAP."""
    from mmengine.runner import Runner

    from service.client.demo import schedule_overrides

    cfg.merge_from_dict(schedule_overrides(epochs, seed))
    cfg.model.teacher_ckpt = ckpt
    cfg.model.teacher_precision = precision
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=epochs)
    runner = Runner.from_cfg(cfg)
    assert runner.model.resolved_teacher_precision() == precision, precision
    t0 = time.perf_counter()
    runner.train()  # validates once, after the last epoch (the demo's val_interval)
    seconds = time.perf_counter() - t0
    hub = runner.message_hub
    coco = {k.removeprefix("val/"): v.current() for k, v in hub.log_scalars.items()
            if k.startswith("val/coco/")}
    mAP = unrounded_map(cfg.val_evaluator.ann_file, Path(cfg.val_evaluator.outfile_prefix
                                                          + ".bbox.json"))
    return dict(precision=precision, seed=seed, epochs=epochs, mAP=mAP, coco=coco,
                seconds=round(seconds, 1))


def _job(kind: str, precision: str | None, args: argparse.Namespace, work: Path) -> dict:
    """One evaluation (``kind='teacher'``) or student run, in a worker process."""
    import bckd.distill  # noqa: F401 - registers BCKDDetector
    import bckd.losses  # noqa: F401 - registers the distillation losses

    torch.set_num_threads(1)
    if kind == "teacher":
        label = f"teacher-{precision or 'test_step'}"
        return evaluate_teacher(load_cfg("gfl_teacher", args.data, work, label),
                                args.teacher_ckpt, precision)
    cfg = load_cfg("bckd_gfl", args.data, work, f"student-{precision}")
    return train_student(cfg, args.teacher_ckpt, precision, args.student_epochs, args.seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the demo's synthetic set")
    p.add_argument("--teacher-ckpt", required=True, help="a trained configs/synth/gfl_teacher")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                   choices=["fp32", "bf16", "fp16"])  # fp16 on a CPU: emulated, slow
    p.add_argument("--student-epochs", type=int, default=4)  # the demo's; 0: teacher only
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parallel", type=int, default=3)  # processes at a time, 1 thread each
    p.add_argument("--json", type=Path, default=RESULTS / "teacher_precision.json")
    args = p.parse_args(argv)
    from mmengine.registry import init_default_scope

    from bckd.distill.precision import cpu_has_native_bf16, resolve_precision

    init_default_scope("mmdet")
    machine = machine_info("cpu")
    machine["cpu_native_bf16"] = cpu_has_native_bf16()
    print(f"teacher {args.teacher_ckpt} on {args.data} (val); students: bckd_gfl, "
          f"{args.student_epochs} epochs, seed {args.seed}; precisions {args.precisions}",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench_teacher_precision_"))
    # the students first: they are the long runs, the evaluations fill the remaining slot
    jobs = [("student", prec) for prec in args.precisions] if args.student_epochs > 0 else []
    jobs += [("teacher", None)] + [("teacher", prec) for prec in args.precisions]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")
                             ) as pool:
        futures = [pool.submit(_job, kind, prec, args, work) for kind, prec in jobs]
        done = [f.result() for f in futures]
    teacher = [r for (kind, _), r in zip(jobs, done, strict=True) if kind == "teacher"]
    students = [r for (kind, _), r in zip(jobs, done, strict=True) if kind == "student"]
    for r in teacher + students:
        print(f"  {'student' if 'seed' in r else 'teacher'} {r['precision']}: mAP "
              f"{r['mAP']:.4f}", flush=True)
    ref_t = next(t["mAP"] for t in teacher if t["precision"] == "fp32")
    ref_s = next((s["mAP"] for s in students if s["precision"] == "fp32"), None)
    rows = [[f"teacher ({t['precision']})", 100 * t["mAP"], 100 * (t["mAP"] - ref_t),
             t["seconds"]] for t in teacher]
    rows += [[f"student, {s['precision']} teacher", 100 * s["mAP"], 100 * (s["mAP"] - ref_s),
              s["seconds"]] for s in students]
    table = print_table(["model", "mAP (points)", "vs fp32", "seconds"], rows, fmt=".2f")
    within = {t["precision"]: abs(t["mAP"] - ref_t) <= TOLERANCE for t in teacher
              if t["precision"] not in ("fp32", "test_step")}
    keeps = {s["precision"]: abs(s["mAP"] - ref_s) <= STUDENT_TOLERANCE for s in students
             if s["precision"] != "fp32"}
    auto = resolve_precision("auto", torch.device("cpu"))
    verdict = ("teacher mAP within 0.1 points of fp32: "
               + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in within.items())
               + f"; student (one seed) within {100 * STUDENT_TOLERANCE:.2f} points of fp32's: "
               + (", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in keeps.items()) or "-")
               + f"; 'auto' on this CPU resolves to {auto}")
    print(verdict)
    finish_machine(machine)
    total_s = round(time.perf_counter() - t0, 1)
    write_json(args.json, dict(
        machine=machine,
        config=dict(data=str(args.data), teacher_ckpt=args.teacher_ckpt, split="val",
                    teacher_config="configs/synth/gfl_teacher.py",
                    student_config="configs/synth/bckd_gfl.py",
                    student_epochs=args.student_epochs, seed=args.seed,
                    parallel=args.parallel, threads_per_process=1, total_seconds=total_s,
                    tolerance_points=100 * TOLERANCE,
                    student_tolerance_points=100 * STUDENT_TOLERANCE),
        teacher=teacher, students=students, table=table, within=within, student_keeps=keeps,
        auto_on_this_cpu=auto, verdict=verdict))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
