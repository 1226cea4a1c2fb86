"""PKD's feature loss against the Pearson correlation it stands for, and its registered module."""

import pytest
import torch
from mmdet.registry import MODELS

import bckd.losses  # noqa: F401  (registers the modules)
from bckd.losses import PKDLoss, pearson_feature_distillation_loss

DTYPE = torch.float64


def _feats(shape=(2, 3, 5, 4), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Student features correlated with the teacher's, on different scales and offsets."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(*shape, dtype=DTYPE, generator=g) * 7 + 3
    student = 0.2 * teacher + torch.randn(*shape, dtype=DTYPE, generator=g) - 1
    return student.requires_grad_(True), teacher


def _one_minus_pcc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rows of ``a`` and ``b`` (K, M) -> (K,) ``1 - r``, with torch's own correlation."""
    pairs = zip(a, b, strict=True)
    return torch.stack([1 - torch.corrcoef(torch.stack([x, y]))[0, 1] for x, y in pairs])


def test_batch_statistics_give_one_minus_the_pearson_correlation_per_channel():
    student, teacher = _feats()
    channels = student.shape[1]
    per_channel = _one_minus_pcc(student.transpose(0, 1).reshape(channels, -1),
                                 teacher.transpose(0, 1).reshape(channels, -1))  # (C,)
    loss = pearson_feature_distillation_loss(student, teacher, eps=0.0)
    torch.testing.assert_close(loss, per_channel.mean())
    assert 0.0 < loss.item() < 2.0


def test_per_image_statistics_average_images_and_channels():
    student, teacher = _feats()
    b, c = student.shape[:2]
    per_map = _one_minus_pcc(student.reshape(b * c, -1), teacher.reshape(b * c, -1))  # (B*C,)
    loss = pearson_feature_distillation_loss(student, teacher, per_image=True, eps=0.0)
    torch.testing.assert_close(loss, per_map.mean())
    batch_stats = pearson_feature_distillation_loss(student, teacher, eps=0.0)
    assert not torch.allclose(loss, batch_stats)


def test_matches_the_mse_of_standardized_maps_with_eps():
    student, teacher = _feats(seed=1)
    dims = (0, 2, 3)

    def norm(x):
        centered = x - x.mean(dims, keepdim=True)
        return centered / ((centered**2).mean(dims, keepdim=True).sqrt() + 1e-6)

    expected = ((norm(student) - norm(teacher)) ** 2).mean() / 2
    torch.testing.assert_close(pearson_feature_distillation_loss(student, teacher), expected)


def test_ignores_each_channels_scale_and_offset():
    student, teacher = _feats(seed=2)
    scale = torch.tensor([0.1, 5.0, 30.0], dtype=DTYPE)[None, :, None, None]
    shifted = student.detach() * scale + torch.tensor([4.0, -2.0, 0.5], dtype=DTYPE)[
        None, :, None, None]
    torch.testing.assert_close(pearson_feature_distillation_loss(shifted, teacher, eps=0.0),
                               pearson_feature_distillation_loss(student, teacher, eps=0.0))
    assert pearson_feature_distillation_loss(teacher * 3 + 1, teacher).item() < 1e-10


def test_student_gets_gradient_teacher_none():
    student, teacher = _feats()
    teacher.requires_grad_(True)
    pearson_feature_distillation_loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_single_value_level_is_finite():
    # A 1x1 map of a one-image batch: the unbiased std would be NaN.
    student, teacher = torch.randn(1, 4, 1, 1), torch.randn(1, 4, 1, 1)
    assert pearson_feature_distillation_loss(student, teacher).item() == 0.0


def test_shapes_must_match():
    with pytest.raises(ValueError, match="one shape"):
        pearson_feature_distillation_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))


def test_module_sums_levels_times_loss_weight():
    assert MODELS.get("PKDLoss") is PKDLoss
    loss = MODELS.build(dict(type="PKDLoss", loss_weight=6.0))
    levels = [_feats((2, 3, 8, 8), seed=0), _feats((2, 3, 4, 4), seed=1)]
    students, teachers = [s for s, _ in levels], [t for _, t in levels]
    expected = 6.0 * sum(pearson_feature_distillation_loss(s, t) for s, t in levels)
    torch.testing.assert_close(loss(students, teachers), expected)
    torch.testing.assert_close(loss(students[0], teachers[0]),
                               6.0 * pearson_feature_distillation_loss(*levels[0]))
    per_image = MODELS.build(dict(type="PKDLoss", per_image=True))
    torch.testing.assert_close(per_image(students[1], teachers[1]),
                               pearson_feature_distillation_loss(*levels[1], per_image=True))


def test_module_needs_one_teacher_level_per_student_level():
    s, t = _feats()
    with pytest.raises(ValueError, match="one teacher map per student map"):
        PKDLoss()([s, s], [t])
