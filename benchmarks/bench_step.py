"""Benchmark of one training step: distillation against the student alone plus the teacher.

    python benchmarks/bench_step.py                         # 5 families, 256 px, batch 8: ~5 min
    python benchmarks/bench_step.py --families gfl --batch 2 --size 128 --repeats 3
    python benchmarks/bench_step.py --setting coco --device cuda \
        --json benchmarks/results/step_cuda.json            # the COCO configs (a GPU's work)

Two settings of configs, each a distillation config whose ``model.student`` is the student:

* ``synth`` (default): ``configs/synth/bckd_{family}.py`` for five head families (their teacher
  is ``{family}_teacher.py``), 8 classes, 256 px images, batch 8 (the synthetic configs').
* ``coco``: the paper's settings in ``configs/coco/``: GFL ResNet-101 -> ResNet-50 at the 1x
  schedule's 1333x800 with 2 images per GPU, and RTMDet-l -> RTMDet-tiny at 640x640 with 32
  images per GPU; 80 classes. Their teachers are built from mmdet's own configs.

For each, on the same batch:

* distill: ``BCKDDetector.train_step``: data preprocessor, student forward and head loss, the
  teacher's forward (below), the BCDL + ILDL terms, backward, SGD step (the config's
  ``optim_wrapper``, gradient clipping included);
* student: the same config with ``model.student`` as its model: its ``train_step``, same
  optimizer;
* teacher_fwd: the teacher's forward to its head outputs as the distiller calls it:
  ``bckd.distill.precision.teacher_forward`` (``bbox_head(extract_feat(x))`` under inference
  mode, in the precision the distiller resolves, ``--teacher-precision`` or the config's
  ``'auto'``, with its outputs copied to fp32).

The batch is ``mmdet.testing.demo_mm_inputs``: random images with 7 random boxes of the
config's classes each. Teacher and student keep their random weights (no checkpoint is needed
to time them); SyncBN layers (RTMDet's) become BatchNorm, as mmengine's Runner does outside a
distributed run. Each way is timed in wall time and in this process's CPU time (all threads);
rounds interleave the ways so that load from other processes falls on all of them alike; the
median of ``--repeats`` rounds after ``--warmup`` is reported for each way. The ratio is paired:
one per round (that round's distill over its student + teacher_fwd), reported as their median
and range; a family whose range holds the goal is "not separated" from it.

Goal: distill <= 1.05 x (student + teacher_fwd), i.e. the distillation terms and the extra
bookkeeping cost at most 5 % beyond the two networks; judged on CPU time on a CPU (the clock
that other processes inflate least), on wall time on CUDA.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import torch
from common import (
    RESULTS,
    finish_machine,
    machine_info,
    print_table,
    summarize,
    timed,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("gfl", "atss", "retinanet", "fcos", "rtmdet")
# setting -> family -> (distillation config under configs/, image (h, w), images per batch)
SETTINGS = {
    "synth": {f: (f"synth/bckd_{f}.py", (256, 256), 8) for f in FAMILIES},
    "coco": {
        "gfl": ("coco/bckd_gfl_r101_r50_1x_coco.py", (800, 1333), 2),
        "rtmdet": ("coco/bckd_rtmdet_l_tiny_coco.py", (640, 640), 32),
    },
}
WAYS = ("distill", "student", "teacher_fwd")
GOAL = 1.05  # distill / (student + teacher_fwd)
GT_PER_IMAGE = 7  # about the synthetic data's mean (6.5 objects) and COCO's (7.3) per image


def load_cfg(path: str):
    from mmengine.config import Config

    return Config.fromfile(str(ROOT / "configs" / path))


def student_cfg(distill_cfg):
    """``distill_cfg`` with its ``model.student`` as the model: the student trained alone."""
    cfg = copy.deepcopy(distill_cfg)
    cfg.model = cfg.model.student
    return cfg


def build(cfg, device: torch.device):
    """The config's model and optimizer wrapper, on ``device``, in train mode."""
    from mmdet.registry import MODELS
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper

    # SyncBN needs a process group; mmengine's Runner reverts it the same way when there is none
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).to(device).train()
    return model, build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))


def make_batch(batch: int, hw: tuple[int, int], num_classes: int, seed: int = 0) -> dict:
    from mmdet.testing import demo_mm_inputs

    torch.manual_seed(seed)
    return demo_mm_inputs(batch_size=batch, image_shapes=[(3, *hw)] * batch,
                          num_items=[GT_PER_IMAGE] * batch, num_classes=num_classes)


def run_family(family: str, args, device: torch.device) -> dict:
    from mmengine.registry import init_default_scope

    from bckd.distill.precision import teacher_forward

    init_default_scope("mmdet")
    config, hw, batch = SETTINGS[args.setting][family]
    hw = (args.size, args.size) if args.size else hw
    batch = args.batch or batch
    distill_cfg = load_cfg(config)
    distill_cfg.model.teacher_ckpt = None  # random teacher weights: same cost
    if args.teacher_precision is not None:
        distill_cfg.model.teacher_precision = args.teacher_precision
    distiller, distill_optim = build(distill_cfg, device)
    student, student_optim = build(student_cfg(distill_cfg), device)
    teacher = distiller.teacher  # frozen, eval mode: the module the distiller runs
    data = make_batch(batch, hw, distill_cfg.model.student.bbox_head.num_classes)
    with torch.no_grad():  # the teacher sees the preprocessed batch, as inside the distiller
        inputs = distiller.data_preprocessor(copy.deepcopy(data), True)["inputs"]

    precision = distiller.resolved_teacher_precision(device)
    with_feats = "features" in distiller.reads  # what the distiller's methods read

    def teacher_fwd():
        teacher_forward(teacher, inputs, precision, with_feats=with_feats)

    ways = {
        "distill": lambda: distiller.train_step(copy.deepcopy(data), distill_optim),
        "student": lambda: student.train_step(copy.deepcopy(data), student_optim),
        "teacher_fwd": teacher_fwd,
    }
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for fn in ways.values():
        for _ in range(args.warmup):
            timed(fn, sync)
    samples: dict[str, list] = {w: [] for w in WAYS}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            samples[name].append(timed(fn, sync))
    result: dict = dict(family=family, config=f"configs/{config}", batch=batch, image_hw=hw,
                        teacher_precision=precision)
    result.update({name: summarize(s) for name, s in samples.items()})
    for k, clock in enumerate(("wall_ms", "cpu_ms")):
        # paired by round: a round's three ways ran back to back, under the same load
        rounds = [d[k] / (s[k] + t[k]) for d, s, t in zip(*samples.values(), strict=True)]
        result[f"ratio_{clock}"] = statistics.median(rounds)
        result[f"ratio_{clock}_range"] = [min(rounds), max(rounds)]
        d, s, t = (result[w][clock] for w in WAYS)
        result[f"overhead_{clock}"] = d - s - t  # distillation beyond the two networks
    result["params_student_M"] = sum(p.numel() for p in student.parameters()) / 1e6
    result["params_teacher_M"] = sum(p.numel() for p in teacher.parameters()) / 1e6
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="synth", choices=list(SETTINGS))
    p.add_argument("--families", nargs="+", default=None, help="default: all of the setting's: "
                   + "; ".join(f"{k}: {', '.join(v)}" for k, v in SETTINGS.items()))
    p.add_argument("--batch", type=int, default=None, help="default: the setting's")
    p.add_argument("--size", type=int, default=None, help="square images of this size; "
                   "default: the setting's")
    p.add_argument("--repeats", type=int, default=5)  # median of 5: ~1 min per family on 2 cores
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)  # default: torch's (= cores)
    p.add_argument("--teacher-precision", default=None,  # default: the configs' ('auto')
                   choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--json", type=Path, default=RESULTS / "step.json")
    args = p.parse_args(argv)
    families = args.families or list(SETTINGS[args.setting])
    unknown = [f for f in families if f not in SETTINGS[args.setting]]
    if unknown:
        p.error(f"--families {' '.join(unknown)}: not in --setting {args.setting} "
                f"({', '.join(SETTINGS[args.setting])})")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    import bckd.distill  # noqa: F401 - registers BCKDDetector
    import bckd.losses  # noqa: F401 - registers the distillation losses

    machine = machine_info(str(device))
    print(f"step: setting {args.setting}, {GT_PER_IMAGE} boxes per image; median of "
          f"{args.repeats} after {args.warmup} warmup", flush=True)
    clock = "wall_ms" if device.type == "cuda" else "cpu_ms"
    results = []
    for family in families:
        results.append(run_family(family, args, device))
        r = results[-1]
        print(f"  {family} ({r['batch']} x {r['image_hw'][0]}x{r['image_hw'][1]}): "
              + ", ".join(f"{w} {r[w][clock]:.1f} ms" for w in WAYS)
              + f" ({clock[:-3]} time; teacher in {r['teacher_precision']})", flush=True)

    print()
    rows = []
    for r in results:
        for c, label in (("wall_ms", "wall"), ("cpu_ms", "cpu")):
            rows.append([f"{r['family']} ({label} ms)", *(r[w][c] for w in WAYS),
                         r[f"overhead_{c}"], r[f"ratio_{c}"]])
    table = print_table(["family", *WAYS, "overhead", "ratio"], rows, fmt=".2f")
    met = all(r[f"ratio_{clock}"] <= GOAL for r in results)
    unsure = [r["family"] for r in results
              if r[f"ratio_{clock}_range"][0] <= GOAL < r[f"ratio_{clock}_range"][1]]
    verdict = (f"goal distill <= {GOAL} x (student + teacher_fwd) on {clock}: "
               f"{'met' if met else 'NOT met'} (median of {args.repeats} paired rounds [range]: "
               + ", ".join(f"{r['family']} {r[f'ratio_{clock}']:.3f} "
                           f"[{r[f'ratio_{clock}_range'][0]:.2f}-"
                           f"{r[f'ratio_{clock}_range'][1]:.2f}]" for r in results) + ")"
               + (f"; not separated from the goal: {', '.join(unsure)}" if unsure else ""))
    print(verdict)
    finish_machine(machine)
    write_json(args.json, dict(
        machine=machine,
        config=dict(setting=args.setting, repeats=args.repeats, warmup=args.warmup,
                    teacher_precision=args.teacher_precision or "config ('auto')",
                    gt_per_image=GT_PER_IMAGE, goal=f"ratio <= {GOAL}", judged_on=clock),
        results=results, table=table, goal_met=met, verdict=verdict))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
