"""BCDL and ILDL against hand computation, an independent float64 implementation, and the
properties a user relies on: zero at agreement, descent direction, masking, normalisation."""

import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.structures.bbox import bbox_overlaps

from bckd.losses.functional import (
    binary_classification_distillation_loss as bcdl,
)
from bckd.losses.functional import (
    iou_localization_distillation_loss as ildl,
)

DTYPE = torch.float64


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _random_logits(n: int, c: int, seed: int, min_gap: float = 0.0):
    """Student and teacher logits ``(n, c)``; ``|z_s - z_t| >= min_gap`` elementwise."""
    g = torch.Generator().manual_seed(seed)
    student = torch.empty(n, c, dtype=DTYPE).uniform_(-3, 3, generator=g)
    sign = torch.randint(0, 2, (n, c), generator=g).to(DTYPE) * 2 - 1
    offset = torch.empty(n, c, dtype=DTYPE).uniform_(min_gap, 2.5, generator=g)
    return student, student + sign * offset


def _random_boxes(n: int, seed: int):
    """Valid x1y1x2y2 student boxes ``(n, 4)`` in pixels and teachers that overlap most of them."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, dtype=DTYPE, generator=g) * 500
    wh = torch.rand(n, 2, dtype=DTYPE, generator=g) * 100 + 2
    student = torch.cat([xy, xy + wh], dim=1)
    txy = xy + (torch.rand(n, 2, dtype=DTYPE, generator=g) - 0.5) * wh * 1.5
    twh = wh * (0.5 + torch.rand(n, 2, dtype=DTYPE, generator=g))
    return student, torch.cat([txy, txy + twh], dim=1)


def _random_weight(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    weight = torch.rand(n, dtype=DTYPE, generator=g) + 0.5
    weight[torch.rand(n, generator=g) < 0.3] = 0.0  # about 30% of priors excluded
    return weight


# ----------------------------------------------------------------------------- hand-computed


def test_bcdl_matches_hand_computation():
    zs = [[0.0, 2.0], [-1.0, 0.5]]
    zt = [[1.0, -1.0], [0.0, 3.0]]
    weight, beta, avg_factor = [1.0, 0.5], 2.0, 3.0
    expected = 0.0
    for i in range(2):
        for c in range(2):
            ps, pt = _sigmoid(zs[i][c]), _sigmoid(zt[i][c])
            bce = -(pt * math.log(ps) + (1 - pt) * math.log(1 - ps))
            expected += weight[i] * bce * abs(pt - ps) ** beta
    expected /= avg_factor

    loss = bcdl(
        torch.tensor(zs, dtype=DTYPE),
        torch.tensor(zt, dtype=DTYPE),
        torch.tensor(weight, dtype=DTYPE),
        beta=beta,
        avg_factor=avg_factor,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("iou_mode", ["giou", "iou"])
def test_ildl_matches_hand_computation(iou_mode):
    # prior 0: 2x2 boxes overlapping in a 1x1 square; union 7, enclosing box 3x3 = 9.
    # prior 1: disjoint 1x1 boxes one apart; union 2, enclosing box 3x1 = 3.
    student_boxes = [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]]
    teacher_boxes = [[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]]
    iou = [1 / 7, 0.0]
    giou = [1 / 7 - (9 - 7) / 9, 0.0 - (3 - 2) / 3]
    zs = [[0.0, 2.0], [-1.0, 0.5]]
    zt = [[1.0, -1.0], [0.0, 3.0]]
    weight = [1.0, 0.5]
    overlap = giou if iou_mode == "giou" else iou
    expected = 0.0
    for i in range(2):
        u = max(abs(_sigmoid(zt[i][c]) - _sigmoid(zs[i][c])) for c in range(2))
        expected += weight[i] * u * (1 - overlap[i])
    expected /= 2  # avg_factor None: N = 2 rows

    loss = ildl(
        torch.tensor(student_boxes, dtype=DTYPE),
        torch.tensor(teacher_boxes, dtype=DTYPE),
        torch.tensor(zs, dtype=DTYPE),
        torch.tensor(zt, dtype=DTYPE),
        torch.tensor(weight, dtype=DTYPE),
        iou_mode=iou_mode,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------- independent reference, float64


def _reference_bcdl(zs, zt, weight, beta, avg_factor):
    """Per-class loop over -(p_t log p_s + (1 - p_t) log(1 - p_s)) with log-sigmoids."""
    pt = torch.sigmoid(zt.detach())
    total = zs.new_zeros(())
    for c in range(zs.shape[1]):
        z, t = zs[:, c], pt[:, c]
        cross_entropy = -(t * F.logsigmoid(z) + (1 - t) * F.logsigmoid(-z))
        factor = (t - torch.sigmoid(z)).abs() ** beta
        total = total + (weight * cross_entropy * factor).sum()
    return total / avg_factor


def _reference_ildl(bs, bt, zs, zt, weight, avg_factor, iou_mode):
    """mmdet's bbox_overlaps for (G)IoU; u from a max over per-class columns."""
    gaps = [(torch.sigmoid(zt[:, c]) - torch.sigmoid(zs[:, c])).abs() for c in range(zs.shape[1])]
    u = torch.stack(gaps, dim=1).max(dim=1).values.detach()
    overlap = bbox_overlaps(bs, bt.detach(), mode=iou_mode, is_aligned=True)
    return (weight * u * (1 - overlap)).sum() / avg_factor


@pytest.mark.parametrize("num_classes", [1, 7, 80])
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_bcdl_agrees_with_reference_in_value_and_gradient(beta, num_classes):
    n, avg_factor = 500, 37.5
    zs, zt = _random_logits(n, num_classes, seed=num_classes)
    weight = _random_weight(n, seed=1)
    zs.requires_grad_(True)

    loss = bcdl(zs, zt, weight, beta=beta, avg_factor=avg_factor)
    (grad,) = torch.autograd.grad(loss, zs)
    ref = _reference_bcdl(zs, zt, weight, beta, avg_factor)
    (ref_grad,) = torch.autograd.grad(ref, zs)

    assert loss.item() > 0
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("num_classes", [1, 7, 80])
@pytest.mark.parametrize("iou_mode", ["giou", "iou"])
def test_ildl_agrees_with_mmdet_bbox_overlaps_in_value_and_gradient(iou_mode, num_classes):
    n, avg_factor = 500, 37.5
    zs, zt = _random_logits(n, num_classes, seed=num_classes)
    bs, bt = _random_boxes(n, seed=2)
    weight = _random_weight(n, seed=3)
    bs.requires_grad_(True)

    loss = ildl(bs, bt, zs, zt, weight, avg_factor, iou_mode=iou_mode)
    (grad,) = torch.autograd.grad(loss, bs)
    ref = _reference_ildl(bs, bt, zs, zt, weight, avg_factor, iou_mode)
    (ref_grad,) = torch.autograd.grad(ref, bs)

    assert loss.item() > 0
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-12)


def test_ildl_does_not_backpropagate_into_student_logits():
    zs, zt = _random_logits(50, 7, seed=4)
    bs, bt = _random_boxes(50, seed=4)
    zs.requires_grad_(True)
    bs.requires_grad_(True)
    ildl(bs, bt, zs, zt).backward()
    assert zs.grad is None
    assert bs.grad.abs().sum() > 0


# ------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_zero_loss_and_gradient_when_student_equals_teacher(beta):
    zt, _ = _random_logits(64, 7, seed=5)
    bt, _ = _random_boxes(64, seed=5)
    zs, bs = zt.clone().requires_grad_(True), bt.clone().requires_grad_(True)

    cls_loss = bcdl(zs, zt, beta=beta)
    cls_loss.backward()
    assert cls_loss.item() == 0.0
    assert torch.equal(zs.grad, torch.zeros_like(zs))

    loc_loss = ildl(bs, bt, zs, zt)
    loc_loss.backward()
    assert loc_loss.item() == 0.0
    assert torch.equal(bs.grad, torch.zeros_like(bs))


def test_ildl_zero_with_zero_box_gradient_when_boxes_agree_and_scores_differ():
    zs, zt = _random_logits(64, 7, seed=6, min_gap=0.5)
    bt, _ = _random_boxes(64, seed=6)
    bs = bt.clone().requires_grad_(True)
    loss = ildl(bs, bt, zs, zt)
    loss.backward()
    assert loss.item() == 0.0
    torch.testing.assert_close(bs.grad, torch.zeros_like(bs), rtol=0, atol=1e-15)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_gradient_step_on_student_logits_moves_scores_towards_teacher(beta):
    zs, zt = _random_logits(300, 7, seed=7, min_gap=0.2)
    weight = _random_weight(300, seed=7)
    zs.requires_grad_(True)
    (grad,) = torch.autograd.grad(bcdl(zs, zt, weight, beta=beta, avg_factor=10.0), zs)
    lr = 0.05 / grad.abs().max()  # largest logit step 0.05, below the smallest gap 0.2
    stepped = zs.detach() - lr * grad

    before = (zs.detach().sigmoid() - zt.sigmoid()).abs()
    after = (stepped.sigmoid() - zt.sigmoid()).abs()
    kept = weight > 0
    assert (after[kept] < before[kept]).all()
    assert torch.equal(after[~kept], before[~kept])


@pytest.mark.parametrize("iou_mode", ["giou", "iou"])
def test_gradient_step_on_student_boxes_increases_overlap(iou_mode):
    zs, zt = _random_logits(300, 7, seed=8, min_gap=0.5)
    bs, bt = _random_boxes(300, seed=8)
    if iou_mode == "iou":  # IoU has no gradient for disjoint boxes; keep the overlapping ones
        keep = bbox_overlaps(bs, bt, is_aligned=True) > 0
        bs, bt, zs, zt = bs[keep], bt[keep], zs[keep], zt[keep]
    bs.requires_grad_(True)
    (grad,) = torch.autograd.grad(ildl(bs, bt, zs, zt, iou_mode=iou_mode), bs)
    stepped = bs.detach() - (0.01 / grad.abs().max()) * grad  # at most 0.01 px per coordinate

    before = bbox_overlaps(bs.detach(), bt, mode=iou_mode, is_aligned=True)
    after = bbox_overlaps(stepped, bt, mode=iou_mode, is_aligned=True)
    assert len(before) > 100
    assert (after > before).all()


@pytest.mark.parametrize("scale", [0.125, 8.0, 100.0])
def test_ildl_invariant_to_common_box_scale(scale):
    zs, zt = _random_logits(200, 7, seed=9)
    bs, bt = _random_boxes(200, seed=9)
    weight = _random_weight(200, seed=9)
    loss = ildl(bs, bt, zs, zt, weight, avg_factor=5.0)
    scaled = ildl(bs * scale, bt * scale, zs, zt, weight, avg_factor=5.0)
    torch.testing.assert_close(scaled, loss, rtol=1e-10, atol=0)


def test_weight_zero_excludes_priors_from_value_and_gradient():
    n = 200
    zs, zt = _random_logits(n, 7, seed=10)
    bs, bt = _random_boxes(n, seed=10)
    weight = _random_weight(n, seed=10)
    masked = weight == 0
    assert 0 < masked.sum() < n

    def losses_and_grads(zs, zt, bs, bt):
        zs, bs = zs.clone().requires_grad_(True), bs.clone().requires_grad_(True)
        cls = bcdl(zs, zt, weight, beta=2.0, avg_factor=20.0)
        loc = ildl(bs, bt, zs, zt, weight, avg_factor=20.0)
        return cls, loc, *torch.autograd.grad(cls + loc, [zs, bs])

    other_zs, other_zt = _random_logits(n, 7, seed=11)
    other_bs, other_bt = _random_boxes(n, seed=11)
    m = masked[:, None]
    changed = losses_and_grads(
        torch.where(m, other_zs, zs),
        torch.where(m, other_zt, zt),
        torch.where(m, other_bs, bs),
        torch.where(m, other_bt, bt),
    )
    original = losses_and_grads(zs, zt, bs, bt)
    for a, b in zip(original, changed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    assert torch.equal(original[2][masked], torch.zeros_like(original[2][masked]))
    assert torch.equal(original[3][masked], torch.zeros_like(original[3][masked]))


def test_avg_factor_is_the_normaliser():
    zs, zt = _random_logits(100, 7, seed=12)
    bs, bt = _random_boxes(100, seed=12)
    weight = _random_weight(100, seed=12)
    for loss_fn in (
        lambda avg: bcdl(zs, zt, weight, avg_factor=avg),
        lambda avg: ildl(bs, bt, zs, zt, weight, avg_factor=avg),
    ):
        torch.testing.assert_close(loss_fn(16.0), loss_fn(8.0) / 2, rtol=1e-12, atol=0)
        torch.testing.assert_close(loss_fn(torch.tensor(8.0, dtype=DTYPE)), loss_fn(8.0))
        torch.testing.assert_close(loss_fn(None), loss_fn(100.0))  # None: number of rows


def test_teacher_inputs_receive_no_gradient():
    zs, zt = _random_logits(50, 7, seed=13)
    bs, bt = _random_boxes(50, seed=13)
    zs.requires_grad_(True)
    bs.requires_grad_(True)
    zt.requires_grad_(True)
    bt.requires_grad_(True)
    (bcdl(zs, zt) + ildl(bs, bt, zs, zt)).backward()
    assert zt.grad is None and bt.grad is None
    assert zs.grad is not None and bs.grad is not None


def test_empty_input_gives_zero_that_keeps_the_graph():
    zs = torch.zeros(0, 80, requires_grad=True)
    bs = torch.zeros(0, 4, requires_grad=True)
    zt, bt = torch.zeros(0, 80), torch.zeros(0, 4)
    for loss in (bcdl(zs, zt), ildl(bs, bt, zs, zt, avg_factor=1.0)):
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
    assert zs.grad.shape == (0, 80) and bs.grad.shape == (0, 4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bcdl(torch.zeros(3, 4), torch.zeros(3, 5)), "teacher.shape"),
        (lambda: bcdl(torch.zeros(3, 4), torch.zeros(3, 4), torch.ones(2)), "weight.shape"),
        (lambda: bcdl(torch.zeros(3, 4), torch.zeros(3, 4), beta=0.0), "beta"),
        (lambda: bcdl(torch.zeros(3, 4), torch.zeros(3, 4), avg_factor=0), "avg_factor"),
        (
            lambda: ildl(
                torch.zeros(3, 4), torch.zeros(2, 4), torch.zeros(3, 1), torch.zeros(3, 1)
            ),
            "teacher_boxes.shape",
        ),
        (
            lambda: ildl(
                torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(3, 1), torch.zeros(3, 1)
            ),
            "student_boxes.shape",
        ),
        (
            lambda: ildl(
                torch.zeros(3, 4),
                torch.zeros(3, 4),
                torch.zeros(3, 1),
                torch.zeros(3, 1),
                iou_mode="diou",
            ),
            "iou_mode",
        ),
    ],
)
def test_invalid_arguments_raise_with_their_values(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("iou_mode", ["iou", "giou"])
def test_inverted_student_boxes_count_as_empty(iou_mode):
    # An untrained point head can predict negative distances, i.e. x2 < x1: the loss per prior
    # must stay in [0, 2] and keep a finite gradient that grows the box back.
    teacher = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 25.0]])
    student = torch.tensor([[6.0, 6.0, 4.0, 4.0], [30.0, 5.0, 10.0, 25.0]], requires_grad=True)
    logits_s = torch.zeros(2, 3)
    logits_t = torch.full((2, 3), 4.0)  # u_i = sigmoid(4) - 0.5 for both priors
    loss = ildl(student, teacher, logits_s, logits_t, iou_mode=iou_mode)
    u = torch.sigmoid(torch.tensor(4.0)) - 0.5
    assert 0.0 <= loss.item() <= 2.0 * u.item()
    loss.backward()
    assert torch.isfinite(student.grad).all()
