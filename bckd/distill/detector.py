"""``BCKDDetector``: a dense student detector trained against a frozen dense teacher by a list
of distillation methods.

The teacher is built by :mod:`bckd.distill.teacher`; the methods, one module each, are
:mod:`bckd.distill.methods`; the published per-term keys of the first configs translate to
methods in :mod:`bckd.distill.methods.published`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from mmdet.models.detectors import SingleStageDetector
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from torch import Tensor, nn

from bckd.distill.adapters import keep_adapters_out_of_checkpoints
from bckd.distill.compat import check_distillable
from bckd.distill.methods import (
    HEAD_READS,
    SLOTS,
    DistillBatch,
    Pair,
    Side,
    build_methods,
    published_methods,
)
from bckd.distill.positives import record_positives
from bckd.distill.precision import check_precision, resolve_precision, teacher_forward, to_fp32
from bckd.distill.randomness import preserved_rng
from bckd.distill.teacher import build_teacher

__all__ = ["BCKDDetector"]


@MODELS.register_module()
class BCKDDetector(SingleStageDetector):
    """The student detector, plus a frozen teacher and the distillation methods.

    The student's parts (``backbone``, ``neck``, ``bbox_head``, ``data_preprocessor``) are this
    module's own, so ``state_dict()`` and saved checkpoints are exactly a plain student's and load
    into the student config for inference. The teacher is held outside the module tree (in a
    tuple, which ``nn.Module`` does not register): it is absent from ``parameters()``,
    ``state_dict()``, the optimizer and DDP, and ``_apply``/``train`` below are the one place that
    moves it with the student and keeps it in eval mode. The methods (``distill_methods``, by
    name) and their channel adapters train with the student, but ``state_dict()`` drops their
    keys (:mod:`bckd.distill.adapters`).

    Args:
        student: model config of a one-stage detector whose logic lives in its dense head
            (GFL, ATSS, RetinaNet, FCOS, RTMDet, ...).
        teacher: model config of the teacher, or the path of a config file holding ``model``.
        teacher_ckpt: teacher weights (an mmengine checkpoint or a state dict file).
        methods: the distillation methods, each a dict with the ``type`` of a registered method
            (``KD``, ``LD``, ``BCDL``, ``ILDL``, ``BCKD``, ``PKD``, ``CrossKD``, ...) and its
            arguments; they run after the published keys' methods.
        channel_adapters: where student and teacher widths differ (FPN for PKD, the towers at
            the cut for CrossKD), bridge them with trained 1x1 convs that are kept out of
            ``state_dict()``; without it such pairs are refused.
        teacher_precision: the teacher forward's precision, one of ``'auto'``, ``'fp32'``,
            ``'bf16'``, ``'fp16'`` (:mod:`bckd.distill.precision`; ``'auto'``: bf16 on CPUs with
            native bf16, else fp32). The forward always runs under inference mode and its
            outputs reach the losses in fp32.
        data_preprocessor: replaces the student's, when given.
        **published: the keys of the first configs, one per term (``loss_distill_cls``,
            ``loss_distill_loc``, ``loss_distill_ld``, ``loss_distill_feat``,
            ``loss_distill_crosskd_cls``, ``loss_distill_crosskd_box``, ``crosskd_depth``,
            ``crosskd_align``), read as methods by
            :func:`~bckd.distill.methods.published_methods`.
    """

    def __init__(
        self,
        student: dict,
        teacher: dict | str,
        teacher_ckpt: str | None = None,
        methods: Sequence[dict] = (),
        channel_adapters: bool = False,
        teacher_precision: str = "auto",
        data_preprocessor: dict | None = None,
        **published: dict | int | bool | None,
    ) -> None:
        # Refuse a typo or an empty list before building two detectors.
        check_precision(teacher_precision)
        configs = [*published_methods(published), *methods]
        if not configs:
            raise ValueError("BCKDDetector has no distillation loss: list methods=[dict(type="
                             f"...)] or set one of {', '.join(SLOTS)} (train the plain student "
                             "config for the no-distillation baseline)")
        student_type, scope, use_syncbn, student = _student_args(student, data_preprocessor)
        with MODELS.switch_scope_and_registry(scope) as registry:
            student_cls = registry.get(student_type)
            if student_cls is None or not issubclass(student_cls, SingleStageDetector):
                raise ValueError(f"student.type={student_type!r} is not a one-stage (dense) "
                                 "detector registered in mmdet")
            super().__init__(**student)
        if use_syncbn and get_world_size() > 1:
            nn.SyncBatchNorm.convert_sync_batchnorm(self)

        # Everything the student alone does not build draws from a preserved random state, so
        # the Runner's init_weights() and data loader then read the stream a plain student's
        # would: at one seed, every method starts from the student alone's exact weights.
        with preserved_rng():
            self._teacher = (build_teacher(teacher, teacher_ckpt),)
            self.teacher_precision = teacher_precision
            self._logged_precision: str | None = None
            check_distillable(self.bbox_head, self.teacher.bbox_head)
            pair = Pair(self.bbox_head, self.teacher.bbox_head, channel_adapters)
            self.distill_methods = build_methods(configs, pair)
            keep_adapters_out_of_checkpoints(self)
        self.reads = frozenset().union(*(m.reads for m in self.distill_methods.values()))

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        super()._apply(fn, recurse)
        self.teacher._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> BCKDDetector:
        super().train(mode)
        self.teacher.train(False)
        return self

    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> dict[str, Tensor]:
        """The student's own detection losses plus every method's terms."""
        feats = self.extract_feat(batch_inputs)
        with self._taps(self.bbox_head, "student") as student_taps:
            outs = self.bbox_head(feats)
        gt_instances, gt_ignore, img_metas = unpack_gt_instances(batch_data_samples)
        with record_positives(self.bbox_head) as positives:
            losses = self.bbox_head.loss_by_feat(*outs, gt_instances, img_metas, gt_ignore)
        # The teacher runs only what the methods read: its head for logits, boxes and towers,
        # a copy of its FPN features for feature terms.
        with self._taps(self.teacher.bbox_head, "teacher") as teacher_taps:
            teacher_feats, teacher_outs = teacher_forward(
                self.teacher, batch_inputs, self.resolved_teacher_precision(batch_inputs.device),
                with_feats="features" in self.reads, with_head=bool(self.reads & HEAD_READS))
        batch = DistillBatch(
            Side(self.bbox_head, feats, outs, student_taps),
            Side(self.teacher.bbox_head, teacher_feats, teacher_outs,
                 to_fp32(teacher_taps)),  # recorded under inference mode
            img_metas, positives)
        for method in self.distill_methods.values():
            losses.update(method(batch))
        # Diagnostics: keys without "loss" are logged but not summed by mmengine.
        losses["distill_num_pos"] = outs[0][0].new_tensor(batch.num_pos)
        return losses

    def resolved_teacher_precision(self, device: torch.device | None = None) -> str:
        """``teacher_precision`` with ``'auto'`` resolved for ``device`` (default: where the
        student's parameters are), what the teacher's forward runs in."""
        if device is None:
            device = next(self.parameters()).device
        precision = resolve_precision(self.teacher_precision, device)
        if precision != self._logged_precision:  # once: the run's log says what 'auto' chose
            print_log(f"teacher forward: {precision} under inference mode (teacher_precision="
                      f"{self.teacher_precision!r} on {device.type})", logger="current")
            self._logged_precision = precision
        return precision

    @contextmanager
    def _taps(self, head: nn.Module, role: str) -> Iterator[dict[str, object]]:
        """While ``head`` runs inside the block: per method that reads towers, what its tap
        records."""
        with ExitStack() as stack:
            yield {name: stack.enter_context(method.tap(head, role))
                   for name, method in self.distill_methods.items() if "towers" in method.reads}


def _student_args(student: dict, data_preprocessor: dict | None) -> tuple[str, str | None, bool,
                                                                         dict]:
    """``(type, scope, use_syncbn, arguments)`` of a student model config.

    mmengine's Runner passes a config's top-level ``data_preprocessor`` to the model; it
    replaces the student's. A student read from a package's config (``{{_base_.model}}`` of an
    ``mmdet::`` file) carries ``_scope_``; mmengine's build would consume it, here the student
    is built by the detector, which switches to that scope itself (the config policy has already
    limited ``_scope_`` to the allowed ones). ``use_syncbn`` is RTMDet's option.
    """
    student = copy.deepcopy(dict(student))
    if data_preprocessor is not None:
        student["data_preprocessor"] = data_preprocessor
    student_type = student.pop("type")
    scope = student.pop("_scope_", None)
    use_syncbn = student.pop("use_syncbn", False)
    return student_type, scope, use_syncbn, student
