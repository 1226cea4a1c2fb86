"""The teacher's forward: under ``torch.inference_mode()``, in reduced precision where the device
computes it natively, with fp32 outputs for the losses.

The teacher only supplies targets, so its forward needs no autograd record at all; inference
mode also skips the version counters that ``no_grad`` keeps. Its outputs are inference tensors,
which autograd refuses to save for backward (a BCE against them would raise), so
:func:`teacher_forward` hands back fp32 *copies* made outside inference mode: one copy per
output map, also in ``'fp32'``, where the values are then exactly the plain forward's.

CrossKD's cross-head path runs the teacher's layers on the student's features *with*
gradients; it is not part of this forward and stays in fp32 outside inference mode
(:mod:`bckd.distill.crosskd`).

``teacher_precision`` (a ``BCKDDetector`` argument):

* ``'fp32'``: no autocast.
* ``'bf16'`` / ``'fp16'``: ``torch.autocast`` with that dtype on the inputs' device.
* ``'auto'``: bf16 where it was measured to keep the teacher's and the student's mAP
  (docs/ARCHITECTURE.md, "The teacher's precision"): CPUs with AVX512-BF16 or AMX-BF16. fp32
  everywhere else, CUDA included, until a GPU run measures the same two numbers.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PRECISIONS", "check_precision", "cpu_has_native_bf16", "resolve_precision",
           "teacher_forward", "to_fp32"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic; without them oneDNN emulates bf16
# on AVX512 and a bf16 forward is slower than fp32.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def check_precision(value: Any, key: str = "teacher_precision") -> str:
    """``value`` if it is one of :data:`PRECISIONS`, else ``ValueError`` naming key and value."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ValueError(f"{key}={value!r} is not one of {', '.join(map(repr, PRECISIONS))}")
    return value


@functools.cache
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16); False off Linux."""
    if platform.system() != "Linux" or not cpuinfo.is_file():
        return False
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return bool(NATIVE_BF16_FLAGS & set(line.split(":", 1)[1].split()))
    return False


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision ``requested`` means on ``device``: itself, or for ``'auto'`` ``'bf16'`` on
    a CPU with native bf16 and ``'fp32'`` elsewhere (see the module docstring)."""
    check_precision(requested)
    if requested != "auto":
        return requested
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def to_fp32(outputs: Any) -> Any:
    """Fresh fp32 copies of every floating tensor in nested tuples/lists/dicts, made outside
    inference mode so autograd may save them; other values are returned as they are."""
    if isinstance(outputs, Tensor):
        if not outputs.is_floating_point():
            return outputs.clone()
        return outputs.to(torch.float32, copy=True)
    if isinstance(outputs, list | tuple):
        return type(outputs)(to_fp32(o) for o in outputs)
    if isinstance(outputs, dict):
        return {k: to_fp32(v) for k, v in outputs.items()}
    return outputs


def teacher_forward(
    teacher: nn.Module,
    inputs: Tensor,
    precision: str,
    with_feats: bool = False,
    with_head: bool = True,
) -> tuple[tuple[Tensor, ...] | None, Any]:
    """``(feats, head_outputs)`` of the frozen teacher on ``inputs`` (B, 3, H, W).

    Runs ``teacher.bbox_head(teacher.extract_feat(inputs))`` under inference mode and, for
    ``'bf16'``/``'fp16'`` (resolve ``'auto'`` first), autocast on ``inputs.device``. The head's
    outputs come back as fp32 copies usable in autograd (None without ``with_head``: the head
    does not run), and the FPN features too when ``with_feats`` (feature terms' targets), else
    None: copying them costs a pass over every level.
    Forward hooks that the head triggers (CrossKD's taps) record inference tensors, which
    callers convert with :func:`to_fp32`.
    """
    check_precision(precision)
    if precision == "auto":
        raise ValueError("teacher_forward takes a resolved precision; call resolve_precision")
    dtype = DTYPES.get(precision, torch.float32)
    with torch.inference_mode(), torch.autocast(inputs.device.type, dtype=dtype,
                                                enabled=precision in DTYPES):
        feats = teacher.extract_feat(inputs)
        outs = teacher.bbox_head(feats) if with_head else None
    return (to_fp32(feats) if with_feats else None), to_fp32(outs)
