"""CWD (Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021) on
every FPN level: each channel's map becomes a distribution over its ``H*W`` locations,
``softmax(x / tau)``, and the student's mimics the teacher's, ``tau^2 KL(teacher || student)``,
averaged over images and channels, summed over levels. The student's features pass through a
1x1 adapter where the widths differ."""

from __future__ import annotations

from torch import Tensor

from bckd.distill.adapters import adapt_features, feature_adapters
from bckd.distill.methods.base import DistillBatch, DistillMethod, Pair, register_method

__all__ = ["CWD", "channel_wise_divergence"]


def channel_wise_divergence(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """``tau^2 / (B*C) * sum_{b,c} KL(softmax(t_bc / tau) || softmax(s_bc / tau))``.

    Args:
        student: ``Tensor[B, C, H, W]`` student features (after any channel adapter).
        teacher: ``Tensor[B, C, H, W]``, same shape; detached here.
        tau: the temperature, ``> 0``; ``tau^2`` keeps the gradient's scale as ``tau`` grows.

    Returns:
        Scalar tensor; each softmax runs over the ``H*W`` locations of one image's channel.
    """
    if student.ndim != 4 or teacher.shape != student.shape:
        raise ValueError("CWD needs feature maps of one shape (B, C, H, W): "
                         f"{student.shape=} {teacher.shape=}")
    s = student.flatten(2) / tau  # (B, C, H*W)
    t = teacher.detach().flatten(2) / tau
    log_p_t = t.log_softmax(dim=-1)
    kl = (log_p_t.exp() * (log_p_t - s.log_softmax(dim=-1))).sum(dim=-1)  # (B, C)
    return tau**2 * kl.mean()


@register_method
class CWD(DistillMethod):
    """``tau``: the temperature; ``loss_weight``: each level's weight (mmrazor's configs: 1, 10)."""

    name = "cwd"
    terms = ("loss_distill_cwd",)
    reads = frozenset({"features"})

    def __init__(self, pair: Pair, tau: float = 1.0, loss_weight: float = 10.0) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f"CWD's tau={tau!r} must be > 0")
        self.tau, self.loss_weight = tau, loss_weight
        self.adapters = feature_adapters(pair, "CWD")

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        feats = adapt_features(self.adapters, batch.student.feats)
        total = sum(channel_wise_divergence(s, t, self.tau)
                    for s, t in zip(feats, batch.teacher.feats, strict=True))
        return {"loss_distill_cwd": self.loss_weight * total}

    def extra_repr(self) -> str:
        return f"tau={self.tau}, loss_weight={self.loss_weight}"
