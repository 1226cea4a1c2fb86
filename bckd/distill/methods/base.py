"""The contract of a distillation method, the batch it reads, and the registry of methods.

A method is one class in one module of this package: it declares the loss terms it adds and
what it reads of student and teacher, checks the pair and builds its losses and channel
adapters when the detector is built, and computes its terms from a :class:`DistillBatch`.
:class:`~bckd.distill.detector.BCKDDetector` runs the methods of its list and gives the teacher
only the work they ask for (its head, its FPN features, the taps inside its head).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from mmdet.registry import MODELS
from torch import Tensor, nn

from bckd.distill.dense_outputs import DenseOutputs, flatten_dense_outputs
from bckd.distill.positives import PositiveRecorder
from bckd.losses.rows import level_rows

__all__ = ["HEAD_READS", "METHODS", "READS", "DistillBatch", "DistillMethod", "LogitsMethod",
           "Pair", "Side", "build_methods", "register_method"]

# What a method may read of the two detectors. The student's head outputs and FPN features are
# computed for its own loss anyway; of the teacher, "logits" and "boxes" need its head's
# forward, "features" its FPN features, "towers" what the method's tap records inside both
# heads while they run.
READS = frozenset({"logits", "boxes", "features", "towers"})
HEAD_READS = frozenset({"logits", "boxes", "towers"})  # the reads that run the teacher's head


@dataclass(frozen=True)
class Pair:
    """What a method is built against: the two dense heads (checked, never kept: the teacher
    stays outside the student's module tree) and the detector's ``channel_adapters`` switch."""

    student: nn.Module
    teacher: nn.Module
    channel_adapters: bool


@dataclass
class Side:
    """One detector's part of a training step.

    head: its dense head.
    feats: FPN features, (B, C, H_l, W_l) per level; the teacher's are None unless read.
    outs: the head's outputs (per-level logits (B, A*C, H_l, W_l), regression, ...); the
        teacher's are None unless read.
    taps: per method name, what that method's tap recorded while the head ran.
    """

    head: nn.Module
    feats: tuple[Tensor, ...] | None
    outs: tuple | None
    taps: dict[str, Any]


class DistillBatch:
    """What the methods of one training step read. The views several methods share (the
    student's flattened outputs, the logits as rows, N) are computed once, on first use."""

    def __init__(self, student: Side, teacher: Side, img_metas: list[dict],
                 positives: PositiveRecorder) -> None:
        self.student, self.teacher = student, teacher
        self.img_metas = img_metas
        self.positives = positives

    @cached_property
    def num_pos(self) -> float:
        """N, the student's positives averaged over ranks, at least 1 (the papers' normalizer)."""
        return self.positives.num_positives()

    @cached_property
    def dense(self) -> DenseOutputs:
        """The student's outputs flattened over levels, boxes left encoded (:func:`box_rows`
        decodes the rows a loss weighs)."""
        outs = self.student.outs
        return flatten_dense_outputs(self.student.head, outs[0], outs[1], self.img_metas,
                                     decode_boxes=False)

    @cached_property
    def logit_rows(self) -> tuple[Tensor, Tensor, Tensor]:
        """Student logits (B*P, C), teacher logits (B*P, C), weight (B*P,): 1 on the valid
        priors, 0 on batch padding. The valid priors are the student's: the pair has the same
        strides and priors per location (:func:`~bckd.distill.compat.check_distillable`)."""
        s_logits = self.dense.logits
        s_logits = s_logits.reshape(-1, s_logits.shape[-1])
        t_logits = level_rows(self.teacher.outs[0], self.teacher.head.cls_out_channels)
        return s_logits, t_logits, self.dense.valid.reshape(-1).to(s_logits.dtype)


class DistillMethod(nn.Module):
    """One distillation method. A registered subclass gives:

    - ``name``: the method as the papers' tables (and a run's ``method``) call it;
    - ``terms``: the keys of the loss terms ``forward`` returns (they contain "loss", so mmengine
      sums them into the total);
    - ``reads``: what it reads, a subset of :data:`READS`;
    - ``__init__(pair, **config)``: the arguments of its config dict; it checks the pair (a
      ``ValueError`` naming the misfit) and builds its losses and its channel adapters (trained
      with the student, dropped from checkpoints with the rest of ``distill_methods``). It runs
      under :func:`~bckd.distill.randomness.preserved_rng`;
    - ``forward(batch) -> {term: scalar tensor}``;
    - ``tap(head, role)`` if it reads "towers": a context manager that records inside ``head``'s
      forward (``role`` is "student" or "teacher") and yields what it records.
    """

    name: ClassVar[str]
    terms: ClassVar[tuple[str, ...]]
    reads: ClassVar[frozenset[str]]

    def tap(self, head: nn.Module, role: str) -> AbstractContextManager[Any]:
        return nullcontext({})

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        raise NotImplementedError


class LogitsMethod(DistillMethod):
    """A term on every valid prior's class logits, ``loss(s_logits, t_logits, weight,
    avg_factor=N)`` with ``s_logits``, ``t_logits`` (B*P, C) and ``weight`` (B*P,) from
    :attr:`DistillBatch.logit_rows`; subclasses give ``name`` and ``default_loss``."""

    terms = ("loss_distill_cls",)
    reads = frozenset({"logits"})
    default_loss: ClassVar[dict]

    def __init__(self, pair: Pair, loss: dict | None = None) -> None:
        super().__init__()
        self.loss = MODELS.build(loss or self.default_loss)

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        s_logits, t_logits, weight = batch.logit_rows
        return {self.terms[0]: self.loss(s_logits, t_logits, weight=weight,
                                         avg_factor=batch.num_pos)}


# Config type (the class name) -> method class.
METHODS: dict[str, type[DistillMethod]] = {}


def register_method(cls: type[DistillMethod]) -> type[DistillMethod]:
    """Register a method under its class name, the ``type`` a config writes. It goes into
    mmdet's ``MODELS`` too: the config policy lets a request build registered types only."""
    if not cls.reads <= READS:
        raise TypeError(f"{cls.__name__}.reads has {sorted(cls.reads - READS)}; one of "
                        f"{sorted(READS)}")
    METHODS[cls.__name__] = cls
    MODELS.register_module(module=cls)
    return cls


def build_methods(configs: list[dict], pair: Pair) -> nn.ModuleDict:
    """The methods of ``configs`` (dicts with a ``type`` of :data:`METHODS`), by name, in order.

    Raises ``ValueError`` for an unknown type, a method listed twice, or two methods that add
    the same term.
    """
    methods = nn.ModuleDict()
    added: dict[str, str] = {}  # term -> the method that adds it
    for config in configs:
        args = dict(config)
        kind = args.pop("type", None)
        if kind not in METHODS:
            raise ValueError(f"methods: {kind!r} is not a distillation method; the methods are "
                             f"{', '.join(sorted(METHODS))}")
        method = METHODS[kind](pair, **args)
        if method.name in methods:
            raise ValueError(f"methods: {kind} is listed twice")
        for term in method.terms:
            if term in added:
                raise ValueError(f"methods {added[term]} and {method.name} both add {term}; "
                                 "list one of them")
            added[term] = method.name
        methods[method.name] = method
    return methods
