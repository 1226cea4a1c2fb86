"""``BCKDDetector``: a dense student detector trained against a frozen dense teacher.

The teacher is built by :mod:`bckd.distill.teacher`; :mod:`bckd.distill.methods` names the
method a config's distillation slots make.
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext

import torch
from mmdet.models.detectors import SingleStageDetector
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from torch import Tensor, nn

from bckd.distill.adapters import channel_adapter, keep_adapters_out_of_checkpoints
from bckd.distill.compat import check_distillable
from bckd.distill.crosskd import CrossKD
from bckd.distill.dense_outputs import DenseOutputs, box_rows, flatten_dense_outputs
from bckd.distill.methods import SLOTS
from bckd.distill.positives import PositiveRecorder, record_positives
from bckd.distill.precision import check_precision, resolve_precision, teacher_forward, to_fp32
from bckd.distill.randomness import preserved_rng
from bckd.distill.teacher import build_teacher
from bckd.distill.towers import TOWERS
from bckd.losses.rows import flatten_level_maps

__all__ = ["BCKDDetector"]

@MODELS.register_module()
class BCKDDetector(SingleStageDetector):
    """The student detector, plus a frozen teacher and distillation losses.

    The student's parts (``backbone``, ``neck``, ``bbox_head``, ``data_preprocessor``) are this
    module's own, so ``state_dict()`` and saved checkpoints are exactly a plain student's and load
    into the student config for inference. The teacher is held outside the module tree (in a
    tuple, which ``nn.Module`` does not register): it is absent from ``parameters()``,
    ``state_dict()``, the optimizer and DDP, and ``_apply``/``train`` below are the one place that
    moves it with the student and keeps it in eval mode. Channel adapters (``distill_adapters``,
    PKD and CrossKD between different widths) train with the student, but ``state_dict()`` drops
    their keys (:mod:`bckd.distill.adapters`).

    Args:
        student: model config of a one-stage detector whose logic lives in its dense head
            (GFL, ATSS, RetinaNet, FCOS, RTMDet, ...).
        teacher: model config of the teacher, or the path of a config file holding ``model``.
        teacher_ckpt: teacher weights (an mmengine checkpoint or a state dict file).
        loss_distill_cls: classification term, called as ``loss(student_logits, teacher_logits,
            weight, avg_factor)``: BCDL, or mmdet's ``KnowledgeDistillationKLDivLoss`` for KD.
        loss_distill_loc: localization term, called as ``loss(student_boxes, teacher_boxes,
            student_logits, teacher_logits, weight, avg_factor)`` with the boxes as
            :class:`~bckd.losses.fused.BoxRows` (decoded where ``weight`` is non-zero): ILDL.
        loss_distill_ld: GFL only, LD on the box distributions of the student's positives,
            mmdet's ``KnowledgeDistillationKLDivLoss`` as in its ``LDHead``.
        loss_distill_feat: feature term on every FPN level, ``loss(student_feats,
            teacher_feats)``: PKD (``PKDLoss``).
        loss_distill_crosskd_cls: CrossKD's classification term on the cross-head outputs
            (BCDL); see :mod:`bckd.distill.crosskd`.
        loss_distill_crosskd_box: CrossKD's box term: ``KnowledgeDistillationKLDivLoss`` over
            GFL's box distributions, or ``GIoULoss`` over decoded boxes.
        crosskd_depth: where CrossKD cuts the heads' towers (``None``: before the teacher's last
            tower conv).
        crosskd_align: give the student's features the teacher's per-channel statistics
            before the teacher's layers, as the official CrossKD code does.
        channel_adapters: where student and teacher widths differ (FPN for PKD, the towers at
            the cut for CrossKD), bridge them with trained 1x1 convs that are kept out of
            ``state_dict()``; without it such pairs are refused.
        teacher_precision: the teacher forward's precision, one of ``'auto'``, ``'fp32'``,
            ``'bf16'``, ``'fp16'`` (:mod:`bckd.distill.precision`; ``'auto'``: bf16 on CPUs with
            native bf16, else fp32). The forward always runs under inference mode and its
            outputs reach the losses in fp32.
        data_preprocessor: replaces the student's, when given.
    """

    def __init__(
        self,
        student: dict,
        teacher: dict | str,
        teacher_ckpt: str | None = None,
        loss_distill_cls: dict | None = None,
        loss_distill_loc: dict | None = None,
        loss_distill_ld: dict | None = None,
        loss_distill_feat: dict | None = None,
        loss_distill_crosskd_cls: dict | None = None,
        loss_distill_crosskd_box: dict | None = None,
        crosskd_depth: int | None = None,
        crosskd_align: bool = True,
        channel_adapters: bool = False,
        teacher_precision: str = "auto",
        data_preprocessor: dict | None = None,
    ) -> None:
        check_precision(teacher_precision)  # refuse a typo before building two detectors
        student = copy.deepcopy(dict(student))
        if data_preprocessor is not None:
            # mmengine's Runner passes a config's top-level `data_preprocessor` to the model.
            student["data_preprocessor"] = data_preprocessor
        student_type = student.pop("type")
        # A student read from a package's config (`{{_base_.model}}` of an `mmdet::` file)
        # carries `_scope_`; mmengine's build would consume it, here the student is built by
        # this constructor, so it switches to that scope itself (the config policy has
        # already limited `_scope_` to the allowed ones).
        scope = student.pop("_scope_", None)
        use_syncbn = student.pop("use_syncbn", False)  # RTMDet's option
        with MODELS.switch_scope_and_registry(scope) as registry:
            student_cls = registry.get(student_type)
            if student_cls is None or not issubclass(student_cls, SingleStageDetector):
                raise ValueError(f"student.type={student_type!r} is not a one-stage (dense) "
                                 "detector registered in mmdet")
            super().__init__(**student)
        if use_syncbn and get_world_size() > 1:
            nn.SyncBatchNorm.convert_sync_batchnorm(self)

        crosskd_terms = (loss_distill_crosskd_cls, loss_distill_crosskd_box)
        if not any((loss_distill_cls, loss_distill_loc, loss_distill_ld, loss_distill_feat,
                    *crosskd_terms)):
            raise ValueError("BCKDDetector has no distillation loss: set one of "
                             f"{', '.join(SLOTS)} (train the plain student config for the "
                             "no-distillation baseline)")
        # Everything the student alone does not build draws from a preserved random state, so
        # the Runner's init_weights() and data loader then read the stream a plain student's
        # would: at one seed, every method starts from the student alone's exact weights.
        with preserved_rng():
            self._teacher = (build_teacher(teacher, teacher_ckpt),)
            self.teacher_precision = teacher_precision
            self._logged_precision: str | None = None
            check_distillable(self.bbox_head, self.teacher.bbox_head,
                              needs_distribution=loss_distill_ld is not None)
            self.loss_distill_cls = MODELS.build(loss_distill_cls) if loss_distill_cls else None
            self.loss_distill_loc = MODELS.build(loss_distill_loc) if loss_distill_loc else None
            self.loss_distill_ld = MODELS.build(loss_distill_ld) if loss_distill_ld else None
            self.loss_distill_feat = MODELS.build(loss_distill_feat) if loss_distill_feat else None
            self.crosskd = (CrossKD(self.bbox_head, self.teacher.bbox_head, crosskd_depth,
                                    crosskd_align, *crosskd_terms, adapters=channel_adapters)
                            if any(crosskd_terms) else None)
            self.distill_adapters = self._build_adapters(channel_adapters)
            keep_adapters_out_of_checkpoints(self)

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def _build_adapters(self, enabled: bool) -> nn.ModuleDict:
        """1x1 convs where the student's width differs from the teacher's: ``feat`` (one per FPN
        level, for PKD) and ``crosskd_cls``/``crosskd_reg`` (shared by the levels, as the head's
        convs are). Empty when the widths match."""
        adapters = nn.ModuleDict()
        if self.loss_distill_feat is not None:
            have, want = self.bbox_head.in_channels, self.teacher.bbox_head.in_channels
            if have != want and not enabled:
                raise ValueError(f"loss_distill_feat compares FPN features of one shape: the "
                                 f"student's have {have} channels, the teacher's {want}; set "
                                 "channel_adapters=True to map the student's with trained 1x1 "
                                 "convs (kept out of checkpoints)")
            if have != want:
                levels = len(self.bbox_head.prior_generator.strides)
                adapters["feat"] = nn.ModuleList(
                    channel_adapter(have, want) for _ in range(levels))
        if self.crosskd is not None:  # CrossKD refused a mismatch without adapters
            for tower, (have, want) in self.crosskd.widths.items():
                if have != want:
                    adapters[f"crosskd_{tower}"] = channel_adapter(have, want)
        return adapters

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        super()._apply(fn, recurse)
        self.teacher._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> BCKDDetector:
        super().train(mode)
        self.teacher.train(False)
        return self

    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> dict[str, Tensor]:
        """The student's own detection losses plus the distillation terms."""
        feats = self.extract_feat(batch_inputs)
        with self._tap(self.bbox_head, "student") as student_taps:
            outs = self.bbox_head(feats)
        gt_instances, gt_ignore, img_metas = unpack_gt_instances(batch_data_samples)
        with record_positives(self.bbox_head) as positives:
            losses = self.bbox_head.loss_by_feat(*outs, gt_instances, img_metas, gt_ignore)
        with self._tap(self.teacher.bbox_head, "teacher") as teacher_taps:
            teacher_feats, teacher_outs = teacher_forward(
                self.teacher, batch_inputs, self.resolved_teacher_precision(batch_inputs.device),
                with_feats=self.loss_distill_feat is not None)
        teacher_taps = to_fp32(teacher_taps)  # recorded under inference mode
        losses.update(self.distill_losses(outs, teacher_outs, img_metas, positives))
        if self.loss_distill_feat is not None:
            losses["loss_distill_feat"] = self.feature_loss(feats, teacher_feats)
        if self.crosskd is not None:
            adapters = {tower: self.distill_adapters[f"crosskd_{tower}"] for tower in TOWERS
                        if f"crosskd_{tower}" in self.distill_adapters}
            losses.update(self.crosskd(self.teacher.bbox_head, student_taps, teacher_taps,
                                       teacher_outs, img_metas, positives.num_positives(),
                                       adapters))
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

    def _tap(self, head: nn.Module, role: str) -> AbstractContextManager[dict]:
        """CrossKD's capture of the tower inputs at its cut while ``head`` runs, if configured."""
        return self.crosskd.tap(head, role) if self.crosskd is not None else nullcontext({})

    def feature_loss(self, feats: tuple[Tensor, ...], teacher_feats: tuple[Tensor, ...]) -> Tensor:
        """``loss_distill_feat`` over every FPN level, (B, C, H_l, W_l) each; the student's
        features pass through their channel adapters first, when there are any."""
        if "feat" in self.distill_adapters:
            feats = [adapt(f) for adapt, f in zip(self.distill_adapters["feat"], feats,
                                                  strict=True)]
        return self.loss_distill_feat(list(feats), list(teacher_feats))

    def distill_losses(
        self,
        student_outs: tuple,
        teacher_outs: tuple,
        img_metas: list[dict],
        positives: PositiveRecorder,
    ) -> dict[str, Tensor]:
        """Distillation terms over all valid priors, normalized by the student's positives."""
        num_pos = positives.num_positives()
        if all(term is None for term in
               (self.loss_distill_cls, self.loss_distill_loc, self.loss_distill_ld)):
            # Only feature or cross-head terms: no per-prior outputs to flatten.
            return {"distill_num_pos": student_outs[0][0].new_tensor(num_pos)}
        # Boxes stay encoded: ILDL decodes only the rows it weighs (box_rows), and no other term
        # reads them. Of the teacher only the logits are read: the valid priors are the
        # student's (check_distillable: same strides and priors per location).
        student = flatten_dense_outputs(self.bbox_head, student_outs[0], student_outs[1],
                                        img_metas, decode_boxes=False)
        t_logits = flatten_level_maps(teacher_outs[0], self.teacher.bbox_head.cls_out_channels)
        s_logits, t_logits = _rows(student.logits), _rows(t_logits)  # (B*P, C)
        weight = student.valid.reshape(-1).to(s_logits.dtype)  # (B*P,)

        losses: dict[str, Tensor] = {}
        if self.loss_distill_cls is not None:
            losses["loss_distill_cls"] = self.loss_distill_cls(
                s_logits, t_logits, weight=weight, avg_factor=num_pos)
        if self.loss_distill_loc is not None:
            losses["loss_distill_loc"] = self.loss_distill_loc(
                box_rows(self.bbox_head, student_outs[1]),
                box_rows(self.teacher.bbox_head, teacher_outs[1]), s_logits, t_logits,
                weight=weight, avg_factor=num_pos)
        if self.loss_distill_ld is not None:
            losses["loss_distill_ld"] = self._ld_loss(student, student_outs[1], teacher_outs[1],
                                                      positives)
        # Diagnostics: keys without "loss" are logged but not summed by mmengine.
        losses["distill_num_pos"] = s_logits.new_tensor(num_pos)
        return losses

    def _ld_loss(self, student: DenseOutputs, s_preds: list[Tensor], t_preds: list[Tensor],
                 positives: PositiveRecorder) -> Tensor:
        """LD (Zheng et al. 2022) on the student's positive priors, weighted like mmdet's LDHead."""
        bins = self.bbox_head.reg_max + 1
        pos = positives.positive_mask(student.logits.shape[0], student.level_sizes)  # (B, P)
        s_dist = flatten_level_maps(s_preds, 4 * bins)[pos].reshape(-1, bins)  # (n_pos*4, bins)
        t_dist = flatten_level_maps(t_preds, 4 * bins)[pos].reshape(-1, bins)
        score = student.logits.detach().sigmoid().amax(dim=-1)[pos]  # (n_pos,)
        weight = score[:, None].expand(-1, 4).reshape(-1)
        return self.loss_distill_ld(s_dist, t_dist, weight=weight, avg_factor=4.0)


def _rows(x: Tensor) -> Tensor:
    """(B, P, K) -> (B*P, K)."""
    return x.reshape(-1, x.shape[-1])
