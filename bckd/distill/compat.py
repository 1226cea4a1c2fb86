"""Build-time checks that a teacher and a student head can be distilled prior by prior."""

from __future__ import annotations

from torch import nn

__all__ = ["check_distillable", "check_equal"]


def _strides(head: nn.Module) -> list[tuple[int, int]]:
    return [tuple(s) if isinstance(s, tuple) else (s, s) for s in head.prior_generator.strides]


def _check_dense(role: str, head: nn.Module) -> None:
    if not hasattr(head, "prior_generator"):
        raise ValueError(f"{role} head {type(head).__name__} has no prior_generator: "
                         "only dense (one-stage) heads can be distilled")
    if not getattr(head, "use_sigmoid_cls", False):
        raise ValueError(f"{role} head {type(head).__name__} does not classify with a sigmoid "
                         "per class (loss_cls.use_sigmoid=False); BCKD needs sigmoid classifiers")


def check_distillable(student: nn.Module, teacher: nn.Module) -> None:
    """Raise ``ValueError`` naming the first mismatch between ``student`` and ``teacher`` heads
    (what every method needs; a method checks what it needs besides, e.g. LD's ``reg_max``)."""
    _check_dense("student", student)
    _check_dense("teacher", teacher)
    pairs = {
        "num_classes": (student.num_classes, teacher.num_classes),
        "FPN strides": (_strides(student), _strides(teacher)),
        "priors per location": (student.prior_generator.num_base_priors,
                                teacher.prior_generator.num_base_priors),
    }
    check_equal(pairs)


def check_equal(pairs: dict[str, tuple]) -> None:
    """``ValueError`` naming the first of ``{what: (student's, teacher's)}`` that differ."""
    for name, (s, t) in pairs.items():
        if s != t:
            raise ValueError(f"teacher and student differ in {name}: student {s}, teacher {t}")
