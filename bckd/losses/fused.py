"""BCDL and ILDL in one pass, compiled with ``torch.compile`` where it pays, eager otherwise.

:mod:`bckd.losses.functional` states each loss on its own, as the paper does; this module computes
the same values with less memory traffic. One pass over the ``(N, C)`` logits gives both the
BCDL row sums and ILDL's per-prior factor ``u_i = max_c |p_t - p_s|`` (the sigmoids are shared).
The inputs may still be per-level head maps and raw box regression, so that the flattening and
the box decoding sit inside the compiled graph too (inductor then reads the ``(B, C, H, W)``
maps in place instead of materializing ``(N, C)`` copies). Boxes are decoded only for priors
with a non-zero weight (gathered first): batch padding costs no decoding.

``compile`` is one switch with three settings: ``True`` (compile; on any compile error, or a
backend this machine lacks, fall back to eager and log it once), ``False`` (eager), ``"auto"``
(compile once a call's logits hold at least :data:`AUTO_MIN_ELEMENTS` values: compiling costs
a minute or more on a CPU, which a unit test or a smoke run on small images never pays back).
Eager and compiled agree to float rounding (tests: 1e-5, values and gradients).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bckd.losses.functional import IOU_MODES, _aligned_box_iou

__all__ = [
    "AUTO_MIN_ELEMENTS",
    "COMPILE_MODES",
    "BoxRows",
    "Levels",
    "distillation_sums",
    "fused_distillation_losses",
    "level_rows",
]

log = logging.getLogger(__name__)

COMPILE_MODES = (True, False, "auto")
AUTO_MIN_ELEMENTS = 2**22  # ~4M logits: COCO batch 1 (~22k priors x 80) and above compiles

# Box decoder: (priors (n, K), regression (n, R), strides (n, 1)) -> boxes (n, 4), x1 y1 x2 y2.
RowDecoder = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class Levels:
    """A head's per-level maps ``(B, A*K, H_l, W_l)``, read as ``(N, K)`` rows by :func:`level_rows`
    (``K`` = ``channels`` per prior, ``A`` priors per location)."""

    maps: Sequence[Tensor]
    channels: int


Rows = Tensor | Levels  # (N, K) rows, or the maps they come from


@dataclass
class BoxRows:
    """What decodes the box of any prior row, so that only the rows a loss needs are decoded.

    regression: ``(N, R)`` raw regression, or its :class:`Levels` (rows then image-major,
        ``b * P + p``, each level's priors in ``grid_priors`` order).
    priors: ``(N, K)`` prior of each row (anchor x1 y1 x2 y2, or point).
    strides: ``(N, 1)`` stride of each row's level.
    decode: ``(priors (n, K), regression (n, R), strides (n, 1)) -> (n, 4)``.
    """

    regression: Rows
    priors: Tensor
    strides: Tensor
    decode: RowDecoder


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
    shape = _shape(student_logits)  # (N, C), without flattening maps outside the pass
    _check(shape, _shape(teacher_logits), weight, beta, iou_mode, avg_factor, student_boxes,
           teacher_boxes)
    with_loc = student_boxes is not None
    if shape[0] == 0:  # zeros that keep the graph, as the functional losses give
        zero = 0.0 * _flat(student_logits).sum()
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
    """The pass itself, eager or compiled: ``sum_i w_i BCDL_i`` and ``sum_i w_i ILDL_i``."""
    zs, zt = _flat(student_logits), _flat(teacher_logits)  # (N, C)
    target = zt.detach().sigmoid()  # (N, C), p_t
    gap = (zs.sigmoid() - target).abs()  # (N, C), |p_s - p_t|, shared by both losses
    cls = loc = None
    if with_cls:
        bce = F.binary_cross_entropy_with_logits(zs, target, reduction="none")  # (N, C)
        per_prior = (bce * _modulator(gap, beta)).sum(dim=1)  # (N,)
        cls = (per_prior if weight is None else per_prior * weight).sum()
    if student_boxes is not None:
        uncertainty = gap.detach().amax(dim=1)  # (N,), u_i, no gradient as in ILDL
        w = weight
        if rows is not None:
            uncertainty, w = uncertainty[rows], w[rows]  # (n,)
        b_s = _boxes(student_boxes, rows)  # (n, 4)
        b_t = _boxes(teacher_boxes, rows).detach()
        per_prior = uncertainty * (1.0 - _aligned_box_iou(b_s, b_t, mode=iou_mode, eps=eps))
        loc = (per_prior if w is None else per_prior * w).sum()
    return cls, loc


def _modulator(gap: Tensor, beta: float) -> Tensor:
    """``|p_s - p_t| ** beta`` with the functional loss's gradient rule at 0 for ``beta < 1``."""
    if beta == 1.0:
        return gap
    if beta > 1.0:
        return gap.pow(beta)
    nonzero = gap > 0
    return torch.where(nonzero, torch.where(nonzero, gap, 1.0).pow(beta), 0.0)


def _flat(x: Rows) -> Tensor:
    """``(N, K)`` rows as they are; :class:`Levels` flattened by :func:`level_rows`."""
    return x if isinstance(x, Tensor) else level_rows(x.maps, x.channels)


def level_rows(maps: Sequence[Tensor], channels: int) -> Tensor:
    """Per-level ``(B, A*K, H_l, W_l)`` -> ``(B*sum_l H_l*W_l*A, K)``, image-major rows in
    ``grid_priors`` order (what ``bckd.distill.flatten_level_maps`` gives, reshaped; copied here
    because this package does not import mmdet). Inside a compiled pass it is fused away."""
    batch = maps[0].shape[0]
    flat = [m.permute(0, 2, 3, 1).reshape(batch, -1, channels) for m in maps]  # (B, P_l, K)
    return torch.cat(flat, dim=1).reshape(-1, channels)


def _boxes(src: Tensor | BoxRows, rows: Tensor | None) -> Tensor:
    """``(n, 4)`` boxes of ``rows`` (all ``N`` if ``None``), decoded here if ``src`` is raw."""
    if isinstance(src, Tensor):
        return src if rows is None else src[rows]
    priors, strides = src.priors, src.strides
    if rows is not None:
        regression, priors, strides = _flat(src.regression)[rows], priors[rows], strides[rows]
    else:
        regression = _flat(src.regression)
    return src.decode(priors, regression, strides)


def _shape(x: Rows) -> tuple[int, ...]:
    """The ``(N, K)`` shape of rows, or of the rows that :class:`Levels` flatten to."""
    if isinstance(x, Tensor):
        return tuple(x.shape)
    rows = sum(m.shape[0] * m.shape[2] * m.shape[3] * (m.shape[1] // x.channels) for m in x.maps)
    return rows, x.channels


def _check(zs, zt, weight, beta, iou_mode, avg_factor, b_s, b_t) -> None:
    """Arguments of :func:`fused_distillation_losses`; ``zs``, ``zt`` the logits' shapes."""
    if len(zs) != 2 or zt != zs:
        raise ValueError(f"logits must both be (N, C): student {zs}, teacher {zt}")
    if weight is not None and tuple(weight.shape) != zs[:1]:
        raise ValueError(f"weight must be (N,): {weight.shape=}, logits {zs}")
    if not beta > 0:
        raise ValueError(f"{beta=} must be > 0")
    if iou_mode not in IOU_MODES:
        raise ValueError(f"{iou_mode=} must be one of {IOU_MODES}")
    if avg_factor is not None and not isinstance(avg_factor, Tensor) and not avg_factor > 0:
        raise ValueError(f"{avg_factor=} must be > 0")
    if (b_s is None) != (b_t is None):
        raise ValueError("ILDL needs both student and teacher boxes, or neither")
    for boxes in (b_s, b_t):
        if isinstance(boxes, Tensor) and tuple(boxes.shape) != (zs[0], 4):
            raise ValueError(f"boxes must be (N, 4): {boxes.shape=}, logits {zs}")
        if isinstance(boxes, BoxRows) and boxes.priors.shape[0] != zs[0]:
            raise ValueError(f"one prior per row: {boxes.priors.shape=}, logits {zs}")


# ----------------------------------------------------------------------------- compilation

_compiled: Callable | None = None
_broken: str | None = None  # why compiling is off for this process, once it failed


def _pick(mode: bool | str, numel: int) -> Callable:
    """The compiled pass if ``mode`` asks for it and compiling works here, else the eager one."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile={mode!r} must be one of {COMPILE_MODES}")
    if mode is False or (mode == "auto" and numel < AUTO_MIN_ELEMENTS) or _broken:
        return distillation_sums
    return _compiled_or_eager


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
