"""Build-time checks that a teacher and a student head can be distilled prior by prior."""

from __future__ import annotations

from torch import nn

__all__ = ["check_distillable"]


def _strides(head: nn.Module) -> list[tuple[int, int]]:
    return [tuple(s) if isinstance(s, tuple) else (s, s) for s in head.prior_generator.strides]


def _check_dense(role: str, head: nn.Module) -> None:
    if not hasattr(head, "prior_generator"):
        raise ValueError(f"{role} head {type(head).__name__} has no prior_generator: "
                         "only dense (one-stage) heads can be distilled")
    if not getattr(head, "use_sigmoid_cls", False):
        raise ValueError(f"{role} head {type(head).__name__} does not classify with a sigmoid "
                         "per class (loss_cls.use_sigmoid=False); BCKD needs sigmoid classifiers")


def check_distillable(student: nn.Module, teacher: nn.Module, needs_distribution: bool) -> None:
    """Raise ``ValueError`` naming the first mismatch between ``student`` and ``teacher`` heads."""
    _check_dense("student", student)
    _check_dense("teacher", teacher)
    pairs = {
        "num_classes": (student.num_classes, teacher.num_classes),
        "FPN strides": (_strides(student), _strides(teacher)),
        "priors per location": (student.prior_generator.num_base_priors,
                                teacher.prior_generator.num_base_priors),
    }
    if needs_distribution:
        for role, head in (("student", student), ("teacher", teacher)):
            if not hasattr(head, "reg_max"):
                raise ValueError(f"loss_distill_ld needs GFL-style heads; the {role} head is "
                                 f"{type(head).__name__}")
        pairs["reg_max"] = (student.reg_max, teacher.reg_max)
    for name, (s, t) in pairs.items():
        if s != t:
            raise ValueError(f"teacher and student differ in {name}: student {s}, teacher {t}")
