"""Pairs that cannot be distilled prior by prior fail when the model is built."""

from __future__ import annotations

import pytest
from distilltools import build, model_cfg

from bckd.distill import method_name


def _pair(student: str, teacher: str, **loss_overrides: object) -> dict:
    cfg = model_cfg("bckd_gfl")
    cfg.student = model_cfg(student)
    cfg.teacher = model_cfg(teacher)
    cfg.teacher_ckpt = None
    cfg.update(loss_overrides)
    return cfg


def test_different_classes() -> None:
    cfg = _pair("gfl_student", "gfl_teacher")
    cfg.teacher.bbox_head.num_classes = 5
    with pytest.raises(ValueError, match="num_classes: student 8, teacher 5"):
        build(cfg)


def test_different_strides() -> None:
    with pytest.raises(ValueError, match="FPN strides"):
        build(_pair("gfl_student", "rtmdet_teacher"))


def test_different_priors_per_location() -> None:
    with pytest.raises(ValueError, match="priors per location: student \\[1"):
        build(_pair("atss_student", "retinanet_teacher"))


def test_softmax_classifier() -> None:
    cfg = _pair("retinanet_student", "retinanet_teacher")
    cfg.teacher.bbox_head.loss_cls = dict(type="CrossEntropyLoss", use_sigmoid=False)
    with pytest.raises(ValueError, match="teacher head RetinaHead does not classify with a sigm"):
        build(cfg)


def test_ld_needs_distribution_heads() -> None:
    cfg = _pair("atss_student", "atss_teacher",
                loss_distill_ld=dict(type="KnowledgeDistillationKLDivLoss", T=10))
    with pytest.raises(ValueError, match=r"LD \(loss_distill_ld\) needs GFL-style heads"):
        build(cfg)


def test_two_stage_student_is_refused() -> None:
    cfg = _pair("gfl_student", "gfl_teacher")
    cfg.student.type = "FasterRCNN"
    with pytest.raises(ValueError, match="student.type='FasterRCNN' is not a one-stage"):
        build(cfg)


@pytest.mark.parametrize("name,method", [("gfl_student", "plain"), ("bckd_gfl", "bckd"),
                                         ("kd_gfl", "kd"), ("ld_gfl", "ld"),
                                         ("bcdl_gfl", "bcdl"), ("ildl_gfl", "ildl"),
                                         ("cwd_gfl", "cwd")])
def test_method_names_follow_the_paper(name: str, method: str) -> None:
    assert method_name(model_cfg(name)) == method
