"""``BCKDDetector``: a dense student detector trained against a frozen dense teacher."""

from __future__ import annotations

import copy
import logging

import torch
from mmdet.models.detectors import SingleStageDetector
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.config import Config
from mmengine.dist import get_world_size
from mmengine.hub import get_config
from mmengine.logging import print_log
from torch import Tensor, nn

from bckd.checkpoint import load_state_dict
from bckd.distill.compat import check_distillable
from bckd.distill.dense_outputs import DenseOutputs, flatten_dense_outputs, flatten_level_maps
from bckd.distill.positives import PositiveRecorder, record_positives

__all__ = ["BCKDDetector", "build_teacher", "method_name", "teacher_model_config"]

# (slot, loss type) -> the method's name in the paper's tables.
_TERM_NAMES = {
    ("loss_distill_cls", "BinaryClassificationDistillationLoss"): "bcdl",
    ("loss_distill_loc", "IoULocalizationDistillationLoss"): "ildl",
    ("loss_distill_cls", "KnowledgeDistillationKLDivLoss"): "kd",
    ("loss_distill_ld", "KnowledgeDistillationKLDivLoss"): "ld",
}


def method_name(model: dict) -> str:
    """A model config's method: ``plain``, ``kd``, ``ld``, ``bcdl``, ``ildl`` or ``bckd``
    (other combinations joined by ``+``, unknown terms by their loss type)."""
    if model.get("type") != "BCKDDetector":
        return "plain"
    names = [_TERM_NAMES.get((slot, model[slot]["type"]), model[slot]["type"])
             for slot in ("loss_distill_cls", "loss_distill_loc", "loss_distill_ld")
             if model.get(slot)]
    return "bckd" if names == ["bcdl", "ildl"] else "+".join(names)


def teacher_model_config(teacher: dict | str) -> dict:
    """The teacher's model config: given inline, or the ``model`` of a config file
    (``"mmdet::gfl/..."`` names a config shipped inside the mmdet package)."""
    if not isinstance(teacher, str):
        return copy.deepcopy(teacher)
    return (get_config(teacher) if "::" in teacher else Config.fromfile(teacher)).model


def build_teacher(teacher: dict | str, checkpoint: str | None) -> nn.Module:
    """Build a detector from a model config (or a config file's ``model``), load its weights and
    freeze it: eval mode, no gradients.

    Raises:
        FileNotFoundError: the config or checkpoint file does not exist.
        ValueError: the checkpoint's weights do not fit the config (keys or shapes named).
    """
    model = MODELS.build(teacher_model_config(teacher))
    if checkpoint is None:
        print_log("teacher_ckpt is None: the teacher keeps its random initialization",
                  logger="current", level=logging.WARNING)
    else:
        state = load_state_dict(checkpoint)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"teacher_ckpt {checkpoint!r} does not match the teacher config: "
                             f"{err}") from None
    model.requires_grad_(False)
    return model.eval()


@MODELS.register_module()
class BCKDDetector(SingleStageDetector):
    """The student detector, plus a frozen teacher and distillation losses.

    The student's parts (``backbone``, ``neck``, ``bbox_head``, ``data_preprocessor``) are this
    module's own, so ``state_dict()`` and saved checkpoints are exactly a plain student's and load
    into the student config for inference. The teacher is held outside the module tree (in a
    tuple, which ``nn.Module`` does not register): it is absent from ``parameters()``,
    ``state_dict()``, the optimizer and DDP, and ``_apply``/``train`` below are the one place that
    moves it with the student and keeps it in eval mode.

    Args:
        student: model config of a one-stage detector whose logic lives in its dense head
            (GFL, ATSS, RetinaNet, FCOS, RTMDet, ...).
        teacher: model config of the teacher, or the path of a config file holding ``model``.
        teacher_ckpt: teacher weights (an mmengine checkpoint or a state dict file).
        loss_distill_cls: classification term, called as ``loss(student_logits, teacher_logits,
            weight, avg_factor)``: BCDL, or mmdet's ``KnowledgeDistillationKLDivLoss`` for KD.
        loss_distill_loc: localization term, called as ``loss(student_boxes, teacher_boxes,
            student_logits, teacher_logits, weight, avg_factor)``: ILDL.
        loss_distill_ld: GFL only, LD on the box distributions of the student's positives,
            mmdet's ``KnowledgeDistillationKLDivLoss`` as in its ``LDHead``.
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
        data_preprocessor: dict | None = None,
    ) -> None:
        student = copy.deepcopy(dict(student))
        if data_preprocessor is not None:
            # mmengine's Runner passes a config's top-level `data_preprocessor` to the model.
            student["data_preprocessor"] = data_preprocessor
        student_type = student.pop("type")
        student_cls = MODELS.get(student_type)
        if student_cls is None or not issubclass(student_cls, SingleStageDetector):
            raise ValueError(f"student.type={student_type!r} is not a one-stage (dense) detector "
                             "registered in mmdet")
        use_syncbn = student.pop("use_syncbn", False)  # RTMDet's option
        super().__init__(**student)
        if use_syncbn and get_world_size() > 1:
            nn.SyncBatchNorm.convert_sync_batchnorm(self)

        if not any((loss_distill_cls, loss_distill_loc, loss_distill_ld)):
            raise ValueError("BCKDDetector has no distillation loss: set loss_distill_cls, "
                             "loss_distill_loc or loss_distill_ld (train the plain student config "
                             "for the no-distillation baseline)")
        self._teacher = (build_teacher(teacher, teacher_ckpt),)
        check_distillable(self.bbox_head, self.teacher.bbox_head,
                          needs_distribution=loss_distill_ld is not None)
        self.loss_distill_cls = MODELS.build(loss_distill_cls) if loss_distill_cls else None
        self.loss_distill_loc = MODELS.build(loss_distill_loc) if loss_distill_loc else None
        self.loss_distill_ld = MODELS.build(loss_distill_ld) if loss_distill_ld else None

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
        """The student's own detection losses plus the distillation terms."""
        outs = self.bbox_head(self.extract_feat(batch_inputs))
        gt_instances, gt_ignore, img_metas = unpack_gt_instances(batch_data_samples)
        with record_positives(self.bbox_head) as positives:
            losses = self.bbox_head.loss_by_feat(*outs, gt_instances, img_metas, gt_ignore)
        with torch.no_grad():
            teacher_outs = self.teacher.bbox_head(self.teacher.extract_feat(batch_inputs))
        losses.update(self.distill_losses(outs, teacher_outs, img_metas, positives))
        return losses

    def distill_losses(
        self,
        student_outs: tuple,
        teacher_outs: tuple,
        img_metas: list[dict],
        positives: PositiveRecorder,
    ) -> dict[str, Tensor]:
        """Distillation terms over all valid priors, normalized by the student's positives."""
        student = flatten_dense_outputs(self.bbox_head, student_outs[0], student_outs[1], img_metas)
        teacher = flatten_dense_outputs(
            self.teacher.bbox_head, teacher_outs[0], teacher_outs[1], img_metas)
        num_pos = positives.num_positives()
        s_logits, t_logits = _rows(student.logits), _rows(teacher.logits)  # (B*P, C)
        weight = student.valid.reshape(-1).to(s_logits.dtype)  # (B*P,)

        losses: dict[str, Tensor] = {}
        if self.loss_distill_cls is not None:
            losses["loss_distill_cls"] = self.loss_distill_cls(
                s_logits, t_logits, weight=weight, avg_factor=num_pos)
        if self.loss_distill_loc is not None:
            losses["loss_distill_loc"] = self.loss_distill_loc(
                _rows(student.boxes), _rows(teacher.boxes), s_logits, t_logits,
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
