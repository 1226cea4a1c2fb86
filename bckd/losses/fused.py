"""BCDL and ILDL in one pass, compiled with ``torch.compile`` where it pays, eager otherwise.

The pass calls the functional losses of :mod:`bckd.losses.functional`, the one statement of each
equation; what it adds is around them. Its inputs may still be per-level head maps
(:class:`~bckd.losses.rows.Levels`) and raw box regression (:class:`~bckd.losses.rows.BoxRows`),
so that the flattening and the box decoding sit inside the compiled graph too (inductor then
reads the ``(B, C, H, W)`` maps in place instead of materializing ``(N, C)`` copies). Boxes are
decoded only for priors with a non-zero weight (gathered first): batch padding costs no decoding.

``compile`` is one switch with three settings: ``True`` (compile; on any compile error, or a
backend this machine lacks, fall back to eager and log it once), ``False`` (eager), ``"auto"``
(compile once a call's logits hold at least :data:`AUTO_MIN_ELEMENTS` values: compiling costs
a minute or more on a CPU, which a unit test or a smoke run on small images never pays back).
Eager and compiled agree to float rounding (tests: 1e-5, values and gradients).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable

import torch
from torch import Tensor

from bckd.losses.functional import (
    binary_classification_distillation_loss,
    check_avg_factor,
    check_beta,
    check_boxes,
    check_iou_mode,
    check_logits,
    iou_localization_distillation_loss,
)
from bckd.losses.rows import BoxRows, Rows, rows_of, rows_shape

__all__ = [
    "AUTO_MIN_ELEMENTS",
    "COMPILE_MODES",
    "check_compile_mode",
    "distillation_sums",
    "fused_distillation_losses",
]

log = logging.getLogger(__name__)

COMPILE_MODES = (True, False, "auto")
AUTO_MIN_ELEMENTS = 2**22  # ~4M logits: COCO batch 1 (~22k priors x 80) and above compiles


def fused_distillation_losses(
    student_logits: Rows,
    teacher_logits: Rows,
    student_boxes: Tensor | BoxRows | None = None,
    teacher_boxes: Tensor | BoxRows | None = None,
    weight: Tensor | None = None,
    avg_factor: float | Tensor | None = None,
    beta: float = 1.0,
    iou_mode: str = "giou",
    eps: float = 1e-6,
    with_cls: bool = True,
    compile: bool | str = "auto",  # the config's name for the switch, as the modules take it
) -> tuple[Tensor | None, Tensor | None]:
    """``(BCDL, ILDL)``, each as :mod:`bckd.losses.functional` defines it (no ``loss_weight``).

    Args:
        student_logits: ``Tensor[N, C]``, or the head's per-level maps as :class:`Levels`.
        teacher_logits: same layout as the student's; detached.
        student_boxes: ``Tensor[N, 4]`` decoded boxes, or :class:`BoxRows` to decode from;
            ``None`` skips ILDL (returned as ``None``).
        teacher_boxes: the teacher's, same kind; detached.
        weight: optional ``Tensor[N]``. When it needs no gradient (a validity mask), ILDL boxes
            are decoded and compared only where it is non-zero.
        avg_factor, beta, iou_mode, eps: as in the functional losses (``None``: divide by N).
        with_cls: compute BCDL; ``False`` returns ``None`` in its place.
        compile: ``True``, ``False`` or ``"auto"`` (module docstring).
    """
    shape = rows_shape(student_logits)  # (N, C), without flattening maps outside the pass
    _check(shape, rows_shape(teacher_logits), weight, beta, iou_mode, avg_factor, student_boxes,
           teacher_boxes)
    with_loc = student_boxes is not None
    if shape[0] == 0:  # zeros that keep the graph, as the functional losses give
        zero = 0.0 * rows_of(student_logits).sum()
        zero_loc = 0.0 * student_boxes.sum() if isinstance(student_boxes, Tensor) else zero
        return (zero if with_cls else None), (zero_loc if with_loc else None)
    rows = None  # (n,) rows ILDL needs; None: all of them
    if with_loc and weight is not None and not weight.requires_grad:
        keep = weight != 0
        if not bool(keep.all()):  # one host sync; the ILDL work saved is n/N
            rows = keep.nonzero().squeeze(1)
    fn = _pick(compile, shape[0] * shape[1])
    cls, loc = fn(student_logits, teacher_logits, student_boxes, teacher_boxes, weight, rows,
                  beta, iou_mode, eps, with_cls)
    avg = shape[0] if avg_factor is None else avg_factor
    return (cls / avg if with_cls else None), (loc / avg if with_loc else None)


def distillation_sums(
    student_logits: Rows,
    teacher_logits: Rows,
    student_boxes: Tensor | BoxRows | None,
    teacher_boxes: Tensor | BoxRows | None,
    weight: Tensor | None,
    rows: Tensor | None,
    beta: float,
    iou_mode: str,
    eps: float,
    with_cls: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """The pass itself, eager or compiled: ``sum_i w_i BCDL_i`` and ``sum_i w_i ILDL_i``, the
    functional losses with ``avg_factor=1``; ILDL over ``rows`` only (all if ``None``)."""
    zs, zt = rows_of(student_logits), rows_of(teacher_logits)  # (N, C)
    cls = loc = None
    if with_cls:
        cls = binary_classification_distillation_loss(zs, zt, weight, beta, avg_factor=1.0)
    if student_boxes is not None:
        if rows is not None:
            zs, zt, weight = zs[rows], zt[rows], weight[rows]  # (n, C), (n, C), (n,)
        loc = iou_localization_distillation_loss(
            _boxes(student_boxes, rows), _boxes(teacher_boxes, rows), zs, zt, weight,
            avg_factor=1.0, iou_mode=iou_mode, eps=eps)
    return cls, loc


def _boxes(src: Tensor | BoxRows, rows: Tensor | None) -> Tensor:
    """``(n, 4)`` boxes of ``rows`` (all ``N`` if ``None``), decoded here if ``src`` is raw."""
    if isinstance(src, BoxRows):
        return src.boxes(rows)
    return src if rows is None else src[rows]


def _check(zs, zt, weight, beta, iou_mode, avg_factor, b_s, b_t) -> None:
    """Arguments of :func:`fused_distillation_losses`, by the functional losses' rules, before
    any map is flattened; ``zs``, ``zt`` the logits' shapes."""
    check_logits(zs, zt, None if weight is None else weight.shape)
    check_beta(beta)
    check_iou_mode(iou_mode)
    check_avg_factor(avg_factor)
    if (b_s is None) != (b_t is None):
        raise ValueError("ILDL needs both student and teacher boxes, or neither")
    for name, boxes in (("student_boxes", b_s), ("teacher_boxes", b_t)):
        if isinstance(boxes, Tensor):
            check_boxes(name, boxes.shape, zs)
        elif isinstance(boxes, BoxRows) and boxes.priors.shape[0] != zs[0]:
            raise ValueError(f"one prior per row: {boxes.priors.shape=}, logits {zs}")


# ----------------------------------------------------------------------------- compilation

_compiled: Callable | None = None
_broken: str | None = None  # why compiling is off for this process, once it failed


def _pick(mode: bool | str, numel: int) -> Callable:
    """The compiled pass if ``mode`` asks for it and compiling works here, else the eager one."""
    check_compile_mode(mode)
    if mode is False or (mode == "auto" and numel < AUTO_MIN_ELEMENTS) or _broken:
        return distillation_sums
    return _compiled_or_eager


def check_compile_mode(mode: bool | str) -> bool | str:
    """``mode`` if it is one of :data:`COMPILE_MODES` (``1`` is not ``True`` here)."""
    if mode not in COMPILE_MODES or isinstance(mode, int) and not isinstance(mode, bool):
        raise ValueError(f"compile={mode!r} must be one of {COMPILE_MODES}")
    return mode


def _compiled_or_eager(*args):
    global _compiled
    if _compiled is None:
        missing = _missing_backend(args[0])
        if missing:
            return _fall_back(missing, args)
        # dynamic: N changes with every batch's padded image size; one graph serves them all.
        _compiled = torch.compile(distillation_sums, dynamic=True)
    try:
        return _compiled(*args)
    except Exception as err:  # a compiler error of any kind: the eager pass is still right
        return _fall_back(f"{type(err).__name__}: {str(err)[:300]}", args)


def _fall_back(reason: str, args: tuple) -> tuple[Tensor | None, Tensor | None]:
    global _broken
    if _broken is None:
        log.warning("bckd fused losses: torch.compile unavailable (%s); running eager", reason)
    _broken = reason
    return distillation_sums(*args)


def _missing_backend(logits: Rows) -> str | None:
    """Why inductor cannot compile here (no C++ compiler for CPU, no Triton for CUDA), or None."""
    device = (logits if isinstance(logits, Tensor) else logits.maps[0]).device
    if device.type == "cpu":
        from torch._inductor import config

        if not any(shutil.which(c) for c in (*filter(None, config.cpp.cxx), "g++", "clang++")):
            return "no C++ compiler on PATH for inductor's CPU backend"
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "Triton is not installed"
    else:
        return f"inductor does not target {device.type}"
    return None


def reset_compilation() -> None:
    """Forget the compiled pass and any earlier failure (tests; a changed environment)."""
    global _compiled, _broken
    _compiled, _broken = None, None
