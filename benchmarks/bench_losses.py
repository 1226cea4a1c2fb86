"""Benchmark of the BCKD losses (BCDL + ILDL, forward + backward) at COCO scale.

    python benchmarks/bench_losses.py            # batch 2 and 8, CPU: ~3 min on 2 cores
    python benchmarks/bench_losses.py --batch 2 --repeats 5
    python benchmarks/bench_losses.py --device cuda --json benchmarks/results/losses_cuda.json

Inputs are the five FPN levels of an 800x1333 image (strides 8..128, ceil(800/s) x ceil(1333/s)),
80 classes, GFL heads with reg_max 16, student and teacher outputs random. Six ways are timed:

* fused:      bckd.losses.fused in one torch.compile'd pass around the functional losses:
              flattening of both heads' maps, box decoding (of the priors with non-zero
              weight: here all), then BCDL and ILDL as bckd.losses.functional states them;
              its compile time is reported apart;
* fused_eager: the same pass with compile=False (the fallback);
* vectorized: flatten the levels once, decode all boxes once, one call of each functional loss
              (the path before the fused one);
* loop:       the official BCKD code's way (its GFL head loss): per level permute/reshape,
              decode, BCE * |diff| ** beta and GIoU of that level, accumulated per level;
* losses only: the two functional losses on already flattened, decoded inputs;
* head loss:  the student's own detection loss, mmdet GFLHead.loss_by_feat with 7 random
              boxes per image (ATSS assignment + QFL + GIoU + DFL), from head outputs.

Each is timed as forward + backward from leaf tensors (warmup, then the median of repeats, the
ways interleaved), in wall time and in this process's CPU time. Goal: fused >= 3x faster than
the per-level loop, and <= 0.5x the head's own loss time; judged on CPU time on a CPU (other
processes on a shared machine inflate it least), on wall time on CUDA. Compiling starts from an
empty inductor cache (a fresh TORCHINDUCTOR_CACHE_DIR), as a first training run would.

Over 300 lines on purpose: the ways it times (vectorized, loop, losses only, head loss) sit
side by side, so that each reads against the others.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS, finish_machine, machine_info, write_json
from mmdet.structures.bbox import bbox_overlaps
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from bckd.distill.dense_outputs import box_rows
from bckd.losses import (
    binary_classification_distillation_loss,
    iou_localization_distillation_loss,
)
from bckd.losses.fused import fused_distillation_losses
from bckd.losses.rows import Levels

IMAGE_HW = (800, 1333)  # COCO 1x training scale
STRIDES = (8, 16, 32, 64, 128)  # GFL / RetinaNet FPN P3-P7
NUM_CLASSES = 80
REG_MAX = 16  # GFL default: 17 bins per side
GT_PER_IMAGE = 7  # COCO average is ~7.3 objects per image
BETA = 1.0  # BCKD default
WAYS = ("fused", "fused_eager", "vectorized", "loop", "losses_only", "head_loss")
RATIOS = {  # name: (numerator, denominator)
    "loop/fused": ("loop", "fused"),
    "fused/head": ("fused", "head_loss"),
    "loop/vec": ("loop", "vectorized"),
    "vec/head": ("vectorized", "head_loss"),
    "only/head": ("losses_only", "head_loss"),
}
GOALS = {"loop/fused": (">=", 3.0), "fused/head": ("<=", 0.5)}

# GFL head as in mmdet configs/gfl/gfl_r50_fpn_1x_coco.py
GFL_HEAD = dict(
    type="GFLHead",
    num_classes=NUM_CLASSES,
    in_channels=256,
    stacked_convs=4,
    feat_channels=256,
    anchor_generator=dict(
        type="AnchorGenerator",
        ratios=[1.0],
        octave_base_scale=8,
        scales_per_octave=1,
        strides=list(STRIDES),
    ),
    loss_cls=dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0),
    loss_dfl=dict(type="DistributionFocalLoss", loss_weight=0.25),
    reg_max=REG_MAX,
    loss_bbox=dict(type="GIoULoss", loss_weight=2.0),
    train_cfg=dict(assigner=dict(type="ATSSAssigner", topk=9), allowed_border=-1, pos_weight=-1),
)


def build_head(device: torch.device):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cfg = dict(GFL_HEAD, train_cfg=ConfigDict(GFL_HEAD["train_cfg"]))
    return MODELS.build(cfg).to(device)


def make_inputs(batch: int, device: torch.device, seed: int = 0) -> dict:
    """Per-level head outputs ``(B, ch, H, W)``, prior centres in stride units, ground truth."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(math.ceil(IMAGE_HW[0] / s), math.ceil(IMAGE_HW[1] / s)) for s in STRIDES]

    def levels(channels: int, mean: float, std: float) -> list[torch.Tensor]:
        return [
            (torch.randn(batch, channels, h, w, generator=g) * std + mean).to(device)
            for h, w in sizes
        ]

    # classification logits near the head's prior bias log(0.01 / 0.99) = -4.6
    inputs = dict(
        cls_s=levels(NUM_CLASSES, -4.6, 1.5),
        cls_t=levels(NUM_CLASSES, -4.6, 1.5),
        reg_s=levels(4 * (REG_MAX + 1), 0.0, 1.0),
        reg_t=levels(4 * (REG_MAX + 1), 0.0, 1.0),
    )
    # centres as the head sees them: anchor centre / stride, image-major within a level
    centers = []
    for h, w in sizes:
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        grid = torch.stack([xs, ys], dim=-1).reshape(-1, 2).float()  # (H*W, 2)
        centers.append(grid.repeat(batch, 1).to(device))  # (B*H*W, 2)
    inputs["centers"] = centers
    inputs["num_priors"] = batch * sum(h * w for h, w in sizes)
    inputs["avg_factor"] = float(batch * GT_PER_IMAGE * 9)  # ~ATSS positives, topk 9 per gt

    gts = []
    for _ in range(batch):
        wh = torch.rand(GT_PER_IMAGE, 2, generator=g) * 360 + 32
        xy = torch.rand(GT_PER_IMAGE, 2, generator=g) * (torch.tensor(IMAGE_HW[::-1]) - wh)
        labels = torch.randint(0, NUM_CLASSES, (GT_PER_IMAGE,), generator=g)
        gts.append(
            InstanceData(bboxes=torch.cat([xy, xy + wh], 1).to(device), labels=labels.to(device))
        )
    inputs["gt"] = gts
    inputs["metas"] = [dict(img_shape=IMAGE_HW, pad_shape=IMAGE_HW)] * batch
    return inputs


def flatten_levels(levels: list[torch.Tensor]) -> torch.Tensor:
    """``(B, ch, H_l, W_l)`` per level -> ``(sum_l B*H_l*W_l, ch)``, level-major like the loop."""
    return torch.cat([x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) for x in levels])


def vectorized(inp: dict, head) -> torch.Tensor:
    z_s, z_t = flatten_levels(inp["cls_s"]), flatten_levels(inp["cls_t"])  # (N, 80)
    centers = inp["flat_centers"]  # (N, 2), precomputed once like the head's anchors
    boxes_s = head.bbox_coder.decode(centers, head.integral(flatten_levels(inp["reg_s"])))
    boxes_t = head.bbox_coder.decode(centers, head.integral(flatten_levels(inp["reg_t"])))
    avg = inp["avg_factor"]
    cls = binary_classification_distillation_loss(z_s, z_t, beta=BETA, avg_factor=avg)
    loc = iou_localization_distillation_loss(boxes_s, boxes_t, z_s, z_t, avg_factor=avg)
    return cls + loc


def fused(inp: dict, head, compile: bool) -> torch.Tensor:
    cls, loc = fused_distillation_losses(
        Levels(inp["cls_s"], NUM_CLASSES), Levels(inp["cls_t"], NUM_CLASSES),
        box_rows(head, inp["reg_s"]), box_rows(head, inp["reg_t"]),
        avg_factor=inp["avg_factor"], beta=BETA, compile=compile)
    return cls + loc


def losses_only(inp: dict) -> torch.Tensor:
    z_s, z_t, b_s, b_t = inp["flat"]
    avg = inp["avg_factor"]
    cls = binary_classification_distillation_loss(z_s, z_t, beta=BETA, avg_factor=avg)
    loc = iou_localization_distillation_loss(b_s, b_t, z_s, z_t, avg_factor=avg)
    return cls + loc


def per_level_loop(inp: dict, head) -> torch.Tensor:
    """The official BCKD code's computation, inside the head's per-level loss (unvectorized)."""
    cls_total, loc_total = 0.0, 0.0
    avg = inp["avg_factor"]
    for cls_s, cls_t, reg_s, reg_t, centers in zip(
        inp["cls_s"], inp["cls_t"], inp["reg_s"], inp["reg_t"], inp["centers"], strict=True
    ):
        cls_score = cls_s.permute(0, 2, 3, 1).reshape(-1, NUM_CLASSES)
        soft_label = cls_t.permute(0, 2, 3, 1).reshape(-1, NUM_CLASSES)
        bbox_pred = reg_s.permute(0, 2, 3, 1).reshape(-1, 4 * (REG_MAX + 1))
        soft_targets = reg_t.permute(0, 2, 3, 1).reshape(-1, 4 * (REG_MAX + 1))
        label_weights = cls_score.new_ones(cls_score.shape[0])

        target, score = soft_label.sigmoid().detach(), cls_score.sigmoid()
        kd = F.binary_cross_entropy_with_logits(cls_score, target, reduction="none")
        kd = kd * (target - score).abs().pow(BETA)
        cls_total = cls_total + (kd.sum(dim=1) * label_weights).sum() / avg

        box_s = head.bbox_coder.decode(centers, head.integral(bbox_pred))
        box_t = head.bbox_coder.decode(centers, head.integral(soft_targets))
        gap = soft_label.detach().sigmoid() - cls_score.detach().sigmoid()
        weight = gap.abs().pow(1.0).max(dim=1)[0] * label_weights
        giou = bbox_overlaps(box_s, box_t.detach(), mode="giou", is_aligned=True)
        loc_total = loc_total + (weight * (1 - giou)).sum() / avg
    return cls_total + loc_total


def head_loss(inp: dict, head) -> torch.Tensor:
    losses = head.loss_by_feat(inp["cls_s"], inp["reg_s"], inp["gt"], inp["metas"])
    return sum(sum(v) if isinstance(v, list) else v for v in losses.values())


def _leaves(inp: dict) -> list[torch.Tensor]:
    return [*inp["cls_s"], *inp["reg_s"], *inp["flat"][0::2]]


def time_fwd_bwd(
    ways: dict, inp: dict, device: torch.device, warmup: int, repeats: int
) -> dict[str, list[tuple[float, float]]]:
    """(wall, process CPU) seconds of ``fn(inp).backward()`` per way. Rounds interleave the ways,
    so that load from other processes on a shared machine falls on all of them alike; the CPU
    time of this process (all its threads) is what load from others inflates least."""

    def once(fn) -> tuple[float, float]:
        for x in _leaves(inp):
            x.grad = None
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn(inp).backward()
        _sync(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    for fn in ways.values():
        for _ in range(warmup):
            once(fn)
    times = {name: [] for name in ways}
    for _ in range(repeats):
        for name, fn in ways.items():
            times[name].append(once(fn))
    return times


def peak_memory(fn, inp: dict, device: torch.device) -> int:
    """Peak bytes of tensors allocated during fwd+bwd above what was allocated before it.

    CUDA: torch.cuda.max_memory_allocated. CPU: the allocation/free events of torch's CPU
    allocator recorded by torch.profiler(profile_memory=True), summed in time order (tensor
    memory only; not RSS, which glibc's allocator blurs).
    """
    for x in _leaves(inp):
        x.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(inp).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(inp).backward()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's C++ start/stop lines, which would interleave with the table."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_batch(batch: int, head, device: torch.device, warmup: int, repeats: int) -> dict:
    inp = make_inputs(batch, device)
    for x in (*inp["cls_s"], *inp["reg_s"]):
        x.requires_grad_(True)
    inp["flat_centers"] = torch.cat(inp["centers"])
    with torch.no_grad():
        flat_boxes = [
            head.bbox_coder.decode(inp["flat_centers"], head.integral(flatten_levels(inp[k])))
            for k in ("reg_s", "reg_t")
        ]
    inp["flat"] = [
        flatten_levels(inp["cls_s"]).detach().requires_grad_(True),
        flatten_levels(inp["cls_t"]).detach(),
        flat_boxes[0].requires_grad_(True),
        flat_boxes[1],
    ]
    with torch.no_grad():  # the ways compute the same losses
        a, b = vectorized(inp, head), per_level_loop(inp, head)
        c = fused(inp, head, compile=False)
    for name, other in (("per-level loop", b), ("fused eager", c)):
        if not torch.allclose(a, other, rtol=1e-4):
            raise AssertionError(f"vectorized {a.item()} != {name} {other.item()}")

    # The first call compiles (forward and backward; once per process, as dynamic=True serves
    # every batch size): timed alone, so that the rounds below time the steady state.
    start = time.perf_counter()
    fused(inp, head, compile=True).backward()
    _sync(device)
    compile_s = time.perf_counter() - start
    ways = {
        "fused": lambda i: fused(i, head, compile=True),
        "fused_eager": lambda i: fused(i, head, compile=False),
        "vectorized": lambda i: vectorized(i, head),
        "loop": lambda i: per_level_loop(i, head),
        "losses_only": losses_only,
        "head_loss": lambda i: head_loss(i, head),
    }
    result = dict(batch=batch, num_priors=inp["num_priors"], loss_value=a.item(),
                  first_fused_call_s=compile_s)
    times = time_fwd_bwd(ways, inp, device, warmup, repeats)
    for name, fn in ways.items():
        wall, cpu = zip(*times[name], strict=True)
        result[name] = dict(
            wall_ms=1e3 * statistics.median(wall),
            cpu_ms=1e3 * statistics.median(cpu),
            wall_ms_all=[1e3 * t for t in wall],
            cpu_ms_all=[1e3 * t for t in cpu],
            peak_mib=peak_memory(fn, inp, device) / 2**20,
        )
    for clock in ("wall_ms", "cpu_ms"):
        result[f"ratios_{clock}"] = {
            name: result[a][clock] / result[b][clock] for name, (a, b) in RATIOS.items()
        }
    return result


def format_table(r: dict) -> str:
    """One batch size's times, ratios and peak memory as text lines."""
    header = f"batch {r['batch']}, {r['num_priors']} priors"
    lines = [f"{header:<26}" + "".join(f"{w:>12}" for w in WAYS) + " |"
             + "".join(f"{n:>11}" for n in RATIOS)]
    for clock, label in (("wall_ms", "wall ms"), ("cpu_ms", "cpu ms (process)")):
        cells = "".join(f"{r[w][clock]:>12.1f}" for w in WAYS)
        ratios = "".join(f"{v:>10.2f}x" for v in r[f"ratios_{clock}"].values())
        lines.append(f"  {label:<24}{cells} |{ratios}")
    lines.append(f"  {'peak MiB':<24}" + "".join(f"{r[w]['peak_mib']:>12.0f}" for w in WAYS)
                 + " |")
    lines.append(f"  first fused call (compile + fwd + bwd): {r['first_fused_call_s']:.1f} s wall")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--repeats", type=int, default=3)  # median of 3 keeps CPU runs < 3 min
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=RESULTS / "losses.json")
    parser.add_argument("--threads", type=int, default=None)  # default: torch's (= cores)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    # A cold compile, as a first training run on a fresh machine pays it.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_losses_inductor_")
    torch.manual_seed(0)

    machine = machine_info(str(device))
    print(
        f"inputs: {len(STRIDES)} FPN levels of {IMAGE_HW[0]}x{IMAGE_HW[1]}, {NUM_CLASSES} classes, "
        f"reg_max {REG_MAX}, beta {BETA}; fwd+bwd, median of {args.repeats} after {args.warmup} "
        "warmup"
    )
    print(
        "memory: "
        + (
            "torch.cuda.max_memory_allocated above the inputs"
            if device.type == "cuda"
            else "peak of torch CPU tensor allocations during fwd+bwd (torch.profiler memory "
            "events), above the inputs"
        )
    )

    head = build_head(device)
    results = [run_batch(b, head, device, args.warmup, args.repeats) for b in args.batch]

    table = "\n".join(format_table(r) for r in results)
    print("\n" + table)
    clock = "wall_ms" if device.type == "cuda" else "cpu_ms"
    verdicts = []
    for name, (op, goal) in GOALS.items():
        values = [r[f"ratios_{clock}"][name] for r in results]
        met = all(v >= goal if op == ">=" else v <= goal for v in values)
        verdicts.append(f"{name} {op} {goal}x: {'met' if met else 'NOT met'}")
    verdict = f"goal ({clock}): " + "; ".join(verdicts)
    print("\n" + verdict)
    finish_machine(machine)
    write_json(args.json, dict(
        machine=machine,
        config=dict(
            image_hw=IMAGE_HW,
            strides=STRIDES,
            num_classes=NUM_CLASSES,
            reg_max=REG_MAX,
            beta=BETA,
            repeats=args.repeats,
            warmup=args.warmup,
            goals={name: f"{op} {goal}" for name, (op, goal) in GOALS.items()},
        ),
        results=results,
        table=table,
        verdict=verdict,
    ))


if __name__ == "__main__":
    main()
