"""Teacher-student distillation for any mmdet 3.x dense head."""

from bckd.distill.compat import check_distillable
from bckd.distill.dense_outputs import BOX_DECODERS, DenseOutputs, flatten_dense_outputs
from bckd.distill.detector import BCKDDetector
from bckd.distill.methods import METHODS, DistillMethod, method_name, register_method
from bckd.distill.teacher import build_teacher, teacher_model_config

__all__ = [
    "BCKDDetector",
    "BOX_DECODERS",
    "DenseOutputs",
    "DistillMethod",
    "METHODS",
    "build_teacher",
    "check_distillable",
    "flatten_dense_outputs",
    "method_name",
    "register_method",
    "teacher_model_config",
]
